"""Configuration: one schema of every key with its default; YAML files override it.

A YAML file may set any subset of the keys below; a key that is not in the schema (a typo,
a key of another version) is an error naming it. `load_config` returns nested `Config`
objects readable as attributes (`cfg.TRAIN.lr`) or items (`cfg["TRAIN"]["lr"]`).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

import yaml

from pea.errors import PEAInputError

# Keys whose value is a free-form mapping (its inner keys are not checked here).
_FREE_FORM = {("DATA", "em_augment")}

DEFAULTS: dict[str, Any] = {
    "NAME": "cvppp",
    "DATA": {
        "dataset": "cvppp",  # cvppp | bbbc039v1 | ac3ac4
        "data_dir": "../data/CVPPP",
        "valid_list": "valid_set/local_20_1.txt",  # CVPPP: held-out training plants
        "scale": 1.0,  # resize factor applied when images are read (CPU demos use 0.5)
        "padded_size": [544, 544],  # reflect-padded size at inference (None: next multiple of 16)
        "crop_size": [544, 544],  # training crop
        "crop_scale": [0.7, 1.0],  # random resized crop: region area / crop area
        "shifts": [1, 3, 5, 9, 27],
        "neighbor": 4,  # 4 or 8 (2D)
        "offsets": None,  # explicit offsets (3D); overrides shifts/neighbor
        "flip": True,
        "affine_prob": 0.3,  # occasional random affine
        "rotation": 10.0,  # degrees
        "translation": 0.1,  # fraction of the size
        "shear": 0.1,
        "zoom": [0.7, 1.0],
        "intensity_prob": 0.8,
        "brightness": 0.1,
        "contrast": 0.2,
        "gamma": 0.2,
        "normalize": "imagenet",  # imagenet (RGB) | percentile (16-bit microscopy) | unit (8-bit EM)
        "percentiles": [1.0, 99.8],
        "train_sections": 80,  # AC4: first sections train, the rest validate
        "widen_border": False,  # EM: in-plane 3x3 border widening of labels
        "em_augment": {},  # EM augmentation probabilities (pea.augment_em)
        "num_workers": 2,
    },
    "MODEL": {
        "backbone": "resunet",
        "in_channels": 3,
        "emb_dim": 16,
        "filters": None,
        "fg_head": True,
        "pretrained": None,
    },
    "LOSS": {
        "scm": True,
        "ccm": True,
        "epm": True,
        "scm_weight": 1.0,
        "ccm_weight": 1.0,
        "epm_weight": 1.0,
        "epm_groups": [4, 3, 2, 1],  # shift groups used at 1/2, 1/4, 1/8, 1/16
        "weight_clip": [0.05, 0.99],
        "mask_weight": 0.0,  # foreground head loss weight (CVPPP 0, BBBC039 1000)
        "fg_class_weight": 10.0,
        "ccm_mask_prob": 0.5,  # second view: chance to blank parts of the foreground
        "ccm_flip": True,
        "ccm_intensity": 0.2,
    },
    "TRAIN": {
        "iterations": 200000,
        "batch_size": 2,
        "lr": 1e-4,
        "betas": [0.9, 0.999],
        "eps": 0.01,
        "weight_decay": 1e-6,
        "amsgrad": True,
        "seed": 555,
        "valid_every": 1000,
        "save_every": 1000,
        "log_every": 10,
        "max_valid_images": None,  # None: all
        "select_metric": "sbd",  # sbd (CVPPP) | aji (BBBC039) | voi (EM, lower is better)
        "model_dir": "../models",
        "device": "auto",  # auto | cpu | cuda | cuda:1 ...
    },
    "TEST": {
        "strides": [5, 5],  # Mutex Watershed long-range stride
        "small_objects": [5, 20, 50, 300],  # merge passes: objects under each size
        "mask": "gt",  # gt: given foreground mask | pred: predicted foreground | none
        "fg_min_size": 0,  # predicted foreground: specks under this size removed
        "trained_dir": "../trained_models",
        "out_dir": "../inference",
        "window": [18, 160, 160],  # 3D sliding window
        "overlap": [4, 32, 32],
        "waterz_threshold": 0.5,
        "mws_strides": [1, 10, 10],
    },
}


class Config(dict):
    """A dict whose keys are also attributes; nested mappings are Configs too."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def to_dict(self) -> dict:
        return {k: v.to_dict() if isinstance(v, Config) else copy.deepcopy(v) for k, v in self.items()}


def _wrap(value: Any) -> Any:
    if isinstance(value, Mapping):
        return Config({k: _wrap(v) for k, v in value.items()})
    return value


def merge(base: Mapping, override: Mapping, source: str = "config", path: tuple = ()) -> dict:
    """Return `base` updated by `override`; keys missing from `base` are errors naming them."""
    out = copy.deepcopy(dict(base))
    for key, value in (override or {}).items():
        where = path + (key,)
        if path + (key,) in _FREE_FORM:
            out[key] = copy.deepcopy(value)
            continue
        if key not in out:
            hint = ", ".join(sorted(map(str, base)))
            raise PEAInputError(f"{source}: unknown key '{'.'.join(where)}' (known here: {hint})")
        if isinstance(out[key], Mapping):
            if not isinstance(value, Mapping):
                raise PEAInputError(f"{source}: key '{'.'.join(where)}' must be a mapping")
            out[key] = merge(out[key], value, source, where)
        else:
            out[key] = copy.deepcopy(value)
    return out


def make_config(override: Mapping | None = None, source: str = "config") -> Config:
    """The defaults updated by `override` (a nested mapping)."""
    return _wrap(merge(DEFAULTS, override or {}, source))


def load_config(path: str | Path) -> Config:
    """Read a YAML file and merge it into the defaults."""
    path = Path(path)
    if not path.is_file():
        raise PEAInputError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise PEAInputError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, Mapping):
        raise PEAInputError(f"{path}: the top level must be a mapping of sections")
    return make_config(data, str(path))
