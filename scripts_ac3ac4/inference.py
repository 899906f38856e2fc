"""Segment a volume with a trained PEA network, with the authors' flags:
python inference.py -c=CONFIG -mn=MODEL -id=CKPT -m=ac3|ac4 [-ts N] [-pm] [-sw] [-mutex] [-waterz] [-lmc]
(multicut runs unless -lmc is given; -waterz and -mutex add those)."""
import sys
from pathlib import Path

from pea.inference_cli import volume_inference_main

if __name__ == "__main__":
    sys.exit(volume_inference_main(Path(__file__).resolve().parent))
