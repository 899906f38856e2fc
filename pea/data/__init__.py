"""Readers of the real data sets' on-disk layouts, and of one's own images and volumes.

A reader owns its data set's files, keys and layout, and nothing of the method. Each reader
module exposes:
- `DATA_DEFAULTS`: the DATA keys only this reader reads, with their defaults (they join the
  config schema when DATA.dataset names the reader), and `DATA_SPEC`: their types and ranges
  (`pea.schema` checkers);
- `load_split(data_cfg, split) -> list[Sample]` and `VALID_SPLIT` (the split validated on
  during training);
- `METRICS`: the metric families its scores report (`pea.metrics.evaluate` selectors);
- `train_dataset(cfg, samples) -> torch Dataset`: random augmented crops;
- `SUBMISSIONS`: split -> `writer(out_dir, segs) -> Path` of a challenge file (may be empty).
"""
from __future__ import annotations

import importlib
from types import ModuleType

from pea.errors import PEAInputError

READERS = {
    "cvppp": "pea.data.cvppp",
    "bbbc039v1": "pea.data.bbbc039",
    "ac3ac4": "pea.data.ac3ac4",
    "folder": "pea.data.folder",  # one's own 2D images (pea train)
    "volumes": "pea.data.volume_list",  # one's own volumes (pea train)
}


def get_reader(name: str) -> ModuleType:
    """The reader module of a data set name (DATA.dataset)."""
    if name not in READERS:
        raise PEAInputError(f"DATA.dataset: unknown data set '{name}' (known: {', '.join(READERS)})")
    return importlib.import_module(READERS[name])
