"""Pixel-Embedded Affinity (PEA, AAAI 2022) for homogeneous instance segmentation."""

__version__ = "0.1.0"
