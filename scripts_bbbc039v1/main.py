"""Train PEA: python main.py -c=CONFIG [--resume] [--device cpu|cuda] [--set SECTION.key=VALUE]."""
import sys
from pathlib import Path

from pea.scripts import train_main

if __name__ == "__main__":
    sys.exit(train_main(Path(__file__).resolve().parent))
