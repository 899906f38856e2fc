"""Presets of `pea train`: the settings for a kind of data, as a shipped config to start from
(found by `pea.config.find_config`) and what differs for one's own data.

- `nuclei`: BBBC039V1's project settings (percentile input, ResUNet, foreground head masking
  the Mutex Watershed, contact merging), which beat the paper's on the demo;
- `leaves`: CVPPP's project settings, with the foreground head trained and masking the Mutex
  Watershed, so that new images need no foreground mask;
- `em`: AC3/AC4's project settings (3D);
- `nuclei-small`, `leaves-small`, `em-small`: the same, with the CPU demos' crop, network
  width, batch, learning rate and length (`*_demo` configs).

Every preset picks best.ckpt by the project's rule (TRAIN.select_rule auto). A preset may also
be a shipped config name or a YAML path (with `_base_` as in any config).
"""
from __future__ import annotations

import copy
from typing import Mapping

from pea.config import find_config, read_yaml, schema
from pea.errors import PEAInputError

USER = {"DATA.padded_size": None,  # whole images of any size: padded to the next multiple of 16
        "TRAIN.select_rule": "auto"}
PRESETS: dict[str, tuple[str, dict]] = {  # name -> (shipped config, overrides)
    "nuclei": ("bbbc039v1_project", USER),
    "leaves": ("cvppp_project", {**USER, "MODEL.fg_head": True, "LOSS.mask_weight": 10.0, "TEST.mask": "pred"}),
    "em": ("ac3ac4_project", USER),
}
SIZE_KEYS = ("DATA.crop_size", "DATA.num_workers", "MODEL.filters", "TRAIN.batch_size", "TRAIN.lr",
             "TRAIN.iterations", "TRAIN.valid_every", "TRAIN.save_every")
SMALL: dict[str, tuple[str, str, tuple[str, ...]]] = {  # name -> (preset, CPU demo config, the demo's keys)
    "nuclei-small": ("nuclei", "bbbc039v1_demo", SIZE_KEYS + ("LOSS.mask_weight",)),
    "leaves-small": ("leaves", "cvppp_demo", SIZE_KEYS),
    "em-small": ("em", "ac3ac4_demo", SIZE_KEYS + ("TEST.window", "TEST.overlap")),
}
NAMES = (*PRESETS, *SMALL)


def _shipped(name: str) -> dict:
    return read_yaml(find_config(name))


def _set(cfg: dict, values: Mapping[str, object]) -> dict:
    """`cfg` with each "SECTION.key" of `values` set."""
    for key, value in values.items():
        section, item = key.split(".")
        cfg.setdefault(section, {})[item] = copy.deepcopy(value)
    return cfg


def preset_dict(name: str) -> dict:
    """The config (a nested dict, not yet checked) of a preset name, a shipped config name or
    a YAML path."""
    if name in SMALL:
        preset, demo, keys = SMALL[name]
        small = _shipped(demo)
        return _set(preset_dict(preset), {k: small[k.split(".")[0]][k.split(".")[1]] for k in keys})
    if name in PRESETS:
        base, overrides = PRESETS[name]
        return _set(_shipped(base), overrides)
    try:
        return _shipped(name)
    except PEAInputError as err:
        raise PEAInputError(f"--preset {name}: neither a preset ({', '.join(NAMES)}) nor a config ({err})") from None


def for_reader(cfg: Mapping, dataset: str) -> tuple[dict, list[str]]:
    """`cfg` moved onto the reader `dataset`: DATA.dataset set, the DATA keys that reader does
    not read left out; returns the config and the keys left out."""
    known = schema(dataset)["DATA"]
    data = dict(cfg.get("DATA") or {})
    dropped = sorted(k for k in data if k not in known)
    out = dict(cfg)
    out["DATA"] = {**{k: v for k, v in data.items() if k in known}, "dataset": dataset}
    return out, dropped
