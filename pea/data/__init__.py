"""Readers of the real data sets' on-disk layouts.

Each reader module exposes `load_split(data_cfg, split) -> list[Sample]`, `VALID_SPLIT` (the
split used for validation during training), `METRICS` (what its scores report) and
`train_dataset(cfg, samples) -> torch Dataset` (random augmented crops).
"""
from __future__ import annotations

import importlib
from types import ModuleType

from pea.errors import PEAInputError

READERS = {
    "cvppp": "pea.data.cvppp",
    "bbbc039v1": "pea.data.bbbc039",
    "ac3ac4": "pea.data.ac3ac4",
}


def get_reader(name: str) -> ModuleType:
    """The reader module of a data set name (DATA.dataset)."""
    if name not in READERS:
        raise PEAInputError(f"DATA.dataset: unknown data set '{name}' (known: {', '.join(READERS)})")
    return importlib.import_module(READERS[name])
