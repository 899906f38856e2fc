"""Pixel-Embedded Affinity (PEA, AAAI 2022) for homogeneous instance segmentation.

    model = pea.load_model(path)                 # the authors' checkpoints: config="cvppp", ...
    affs = pea.affinities(model, image)
    labels = pea.segment(affs, model.offsets, method="mutex", strides=[5, 5])
    scores = pea.evaluate(labels, gt, metrics=["sbd", "aji", "voi"])

(`pea.api`); the four are imported on first use, so that `import pea` stays light.
"""
from pea.config import set_reader_loader as _set_reader_loader  # light: no torch

__version__ = "0.1.0"
__all__ = ["__version__", "load_model", "affinities", "segment", "evaluate"]


def _import_readers() -> None:
    """The reader modules of `pea.data` register their DATA keys with `pea.config` on import."""
    import pea.data  # noqa: F401


_set_reader_loader(_import_readers)


def __getattr__(name: str):
    if name in __all__[1:]:
        from pea import api

        return getattr(api, name)
    raise AttributeError(f"module 'pea' has no attribute {name!r}")
