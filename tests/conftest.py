"""Lets the tests import the full-map references of tests/reference.py."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
