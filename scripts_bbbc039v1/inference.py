"""Segment with a trained PEA network: python inference.py -c=CONFIG -mn=MODEL -id=CKPT -m=MODE."""
import sys
from pathlib import Path

from pea.scripts import inference_main

if __name__ == "__main__":
    sys.exit(inference_main(Path(__file__).resolve().parent))
