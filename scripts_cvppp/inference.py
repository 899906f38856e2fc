"""Segment with a trained PEA network, with the authors' flags:
python inference.py -c=CONFIG -mn=MODEL -id=CKPT -m=validation|test [-s] [-sw] [-se] [-ne] [-sn N] [-sd N] [-nb 4|8] [-sf SHIFTS] [-sbd]."""
import sys
from pathlib import Path

from pea.inference_cli import image_inference_main

if __name__ == "__main__":
    sys.exit(image_inference_main(Path(__file__).resolve().parent))
