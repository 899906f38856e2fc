"""Save the untrained network a run starts from: python untrained.py -c=CONFIG [--run NAME];
then python inference.py -c=CONFIG -mn=NAME_untrained -id=init -m=ac3 -waterz -mutex (the multicut
runs unless -lmc is given, as in the authors' script) scores it with all three partitioners."""
import sys
from pathlib import Path

from pea.scripts import untrained_main

if __name__ == "__main__":
    sys.exit(untrained_main(Path(__file__).resolve().parent))
