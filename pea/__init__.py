"""Pixel-Embedded Affinity (PEA, AAAI 2022) for homogeneous instance segmentation.

`pea.load_model(path, device="cpu")`: the network of a checkpoint file, the project's own or
one the authors released, loaded and in eval mode (see `pea.checkpoint`).
"""
from pea.config import set_reader_loader as _set_reader_loader  # light: no torch

__version__ = "0.1.0"
__all__ = ["__version__", "load_model"]


def _import_readers() -> None:
    """The reader modules of `pea.data` register their DATA keys with `pea.config` on import."""
    import pea.data  # noqa: F401


_set_reader_loader(_import_readers)


def __getattr__(name: str):
    """`load_model` is imported on first use, so that `import pea` stays light."""
    if name == "load_model":
        from pea.checkpoint import load_model

        return load_model
    raise AttributeError(f"module 'pea' has no attribute {name!r}")
