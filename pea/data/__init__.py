"""Readers of the real data sets' on-disk layouts, and of one's own images and volumes.

A reader owns its data set's files, keys and layout, and nothing of the method. Each reader
module exposes:
- `DATASET_NAME`: the data set's name (the value of DATA.dataset that selects the reader);
- `DATA_KEYS`: the DATA keys only this reader reads (`pea.schema.Key`: default, check,
  description), registered with `pea.config.register_reader` when the module is imported (they
  join the config schema when DATA.dataset names the reader);
- `load_split(data_cfg, split) -> list[Sample]` and `VALID_SPLIT` (the split validated on
  during training);
- `METRICS`: the metric families its scores report (`pea.metrics.evaluate` selectors);
- `train_dataset(cfg, samples) -> torch Dataset`: random augmented crops;
- `SUBMISSIONS`: split -> `writer(out_dir, segs) -> Path` of a challenge file (may be empty).

Importing this package imports the readers, so all of them are registered.
"""
from __future__ import annotations

from types import ModuleType

from pea.data import ac3ac4, bbbc039, cvppp, folder, volume_list
from pea.errors import PEAInputError

READERS: dict[str, ModuleType] = {m.DATASET_NAME: m for m in (cvppp, bbbc039, ac3ac4, folder, volume_list)}


def get_reader(name: str) -> ModuleType:
    """The reader module of a data set name (DATA.dataset)."""
    if name not in READERS:
        raise PEAInputError(f"DATA.dataset: unknown data set '{name}' (known: {', '.join(READERS)})")
    return READERS[name]
