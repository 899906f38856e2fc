"""Configuration: a shared schema, each reader's own DATA keys, and YAML files that override them.

The shared schema (`DEFAULTS`) holds the keys every data set uses; the reader named by
`DATA.dataset` adds the DATA keys only it reads (`DATA_DEFAULTS` of its module in
`pea.data`). A YAML file may set any subset of these keys and may extend another file with
`_base_: other.yaml` (a path relative to the file), stating only what differs. A key that is
in neither schema (a typo, a key of another version) is an error naming it, and so is a value
outside a key's allowed choices (`CHOICES`).

The pipeline is stated here, never guessed from a data set's name or an array's shape:
`TEST.partitioners` (mutex, waterz, lmc), `TEST.strides`, `TEST.mask`, `TEST.small_objects`,
`TEST.window` (sliding windows or the whole image), `LOSS.background` (the target rule for
background pixels), the loss terms and `TRAIN.valid_partitioner`.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

import yaml

from pea.errors import PEAInputError
from pea.models.registry import DEFAULTS as MODEL_DEFAULTS

# Keys whose value is a free-form mapping (its inner keys are not checked here).
_FREE_FORM = {("DATA", "em_augment"), ("DATA", "em_augment_params")}
PARTITIONERS = ("waterz", "lmc", "mutex")  # the order of the printed scores

DEFAULTS: dict[str, Any] = {
    "NAME": None,  # the run's name (folders under TRAIN.model_dir and TEST.out_dir)
    "DATA": {
        "dataset": None,  # a reader of pea.data.READERS; it adds its own DATA keys
        "data_dir": None,
        "scale": 1.0,  # resize factor applied when images are read (CPU demos use 0.5)
        "padded_size": None,  # whole-image inference: padded size (None: next multiple of 16)
        "pad_mode": "reflect",  # ... padded by reflection or with zeros (zero)
        "crop_size": None,  # training crop
        "shifts": None,  # 2D: offsets from shifts and DATA.neighbor ...
        "neighbor": 4,  # 4 or 8
        "offsets": None,  # ... or an explicit list of offsets (any dimension)
        "group_size": None,  # offsets per shift group with explicit offsets (EPM levels)
        "normalize": None,  # imagenet (RGB) | unit ((x - 0.5) / 0.25) | none (the [0, 1] image as it is)
        "num_workers": 2,
    },
    "MODEL": dict(MODEL_DEFAULTS),
    "LOSS": {
        # The defaults are the project's own choices; the paper configs state the authors'
        # (README "Configs"; docs/method.md sections 2 and 4).
        "scm": True,
        "ccm": True,
        "epm": True,
        "scm_weight": 1.0,
        "ccm_weight": 1.0,
        "epm_weight": 1.0,
        "epm_groups": [4, 3, 2, 1],  # shift groups used at 1/2, 1/4, 1/8, 1/16
        "background": "same",  # target rule: same (two background pixels are one object) | none
        "normalize": "mean",  # a level's loss / (batch x pixels): mean | / (batch x width): width (authors' 2D)
        "outside_pairs": "ignore",  # class-weight fraction: pairs leaving the image ignored | counted as one | zero
        "weight_clip": [0.05, 0.99],
        "mask_weight": 0.0,  # foreground head loss weight (0: not trained)
        "fg_weighting": "fixed",  # head class weights: fixed [1, fg_class_weight] | batch (pixel counts)
        "fg_class_weight": 10.0,
        # CCM (pea/ccm.py): the second view, and how it meets the network
        "ccm_view": "project",  # project (second_view) | official (official_view, the keys below)
        "ccm_pass": "joint",  # both views in one forward pass | separate passes (BatchNorm per view)
        "ccm_detach": False,  # the second view's embedding is a constant (stop-gradient target)
        "ccm_intensity": 0.2,  # contrast and brightness change of up to +- this
        "ccm_mask_prob": 0.5,  # project view: chance to blank blocks ...
        "ccm_blank": "foreground",  # ... of the foreground, or anywhere (official view: where boxes go)
        "ccm_flip": True,  # random flip of each spatial axis
        "ccm_transpose": False,  # official view: random swap of the last two axes (square crops)
        "ccm_intensity_prob": 1.0,  # official view: chance of the intensity change ...
        "ccm_intensity_draw": "image",  # ... one draw per image, or per section (first spatial axis)
        "ccm_gamma": 0.0,  # ... then x ** 2^u, |u| <= ccm_gamma
        "ccm_boxes": [0, 20],  # official view: number of boxes (inclusive range) ...
        "ccm_box_min": [0, 0],  # ... their smallest and largest size per spatial axis
        "ccm_box_max": [20, 20],  # (the last two axes share one draw: square in-plane)
        "ccm_fill": "mean",  # boxes filled with the foreground mean per channel | zero
        "ccm_min_foreground": 0,  # with fewer foreground pixels, boxes go anywhere
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
        "save_every": 1000,  # writes model-%06d.ckpt (the authors' names) and last.ckpt
        "keep_checkpoints": None,  # None: every model-%06d.ckpt is kept; N: the newest N
        "log_every": 10,
        "max_valid_images": None,  # None: all
        "valid_partitioner": "mutex",  # the partitioner whose segmentation is scored in validation
        "select_metric": None,  # the validation score that picks best.ckpt (voi, arand: lower is better)
        "model_dir": "../models",
        "device": "auto",  # auto | cpu | cuda | cuda:1 ...
    },
    "TEST": {
        "partitioners": ["mutex"],  # any of mutex, waterz, lmc (inference flags choose among them)
        "strides": None,  # Mutex Watershed long-range stride per axis (None: every edge)
        "small_objects": [],  # merge passes: objects under each size, in original pixels
        "mask": "none",  # gt: given foreground mask | pred: predicted foreground | none
        "fg_min_size": 0,  # predicted foreground: specks under this size removed ...
        "fg_connectivity": 1,  # ... as connected by faces (1) or also by corners (2 in 2D: 8-connected)
        "window": None,  # sliding-window size (None: the whole image at DATA.padded_size)
        "overlap": None,  # sliding-window overlap per axis
        "window_blend": "ramp",  # ramp (partners inside the window only) | gaussian (the authors')
        "context": None,  # gaussian: reflect-padding of the volume per axis before the windows
        "waterz_threshold": 0.5,
        "trained_dir": "../trained_models",
        "out_dir": "../inference",
    },
}

CHOICES: dict[tuple[str, str], tuple] = {
    ("LOSS", "background"): ("same", "none"),
    ("LOSS", "ccm_blank"): ("foreground", "anywhere"),
    ("LOSS", "normalize"): ("mean", "width"),
    ("LOSS", "outside_pairs"): ("ignore", "one", "zero"),
    ("LOSS", "fg_weighting"): ("fixed", "batch"),
    ("LOSS", "ccm_view"): ("project", "official"),
    ("LOSS", "ccm_pass"): ("joint", "separate"),
    ("LOSS", "ccm_intensity_draw"): ("image", "section"),
    ("LOSS", "ccm_fill"): ("mean", "zero"),
    ("DATA", "pad_mode"): ("reflect", "zero"),
    ("TEST", "mask"): ("gt", "pred", "none"),
    ("TEST", "window_blend"): ("ramp", "gaussian"),
    ("TRAIN", "valid_partitioner"): PARTITIONERS,
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
        if where in _FREE_FORM:
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


def schema(dataset: str | None) -> dict:
    """The shared defaults plus the DATA keys of the reader of `dataset` (None: shared only)."""
    out = copy.deepcopy(DEFAULTS)
    if dataset is not None:
        from pea.data import get_reader

        out["DATA"].update(copy.deepcopy(get_reader(dataset).DATA_DEFAULTS))
    return out


def check_choices(cfg: Mapping, source: str = "config") -> None:
    """Every key with a fixed set of values holds one of them."""
    for (section, key), allowed in CHOICES.items():
        if cfg[section][key] not in allowed:
            raise PEAInputError(f"{source}: {section}.{key} = {cfg[section][key]!r}; "
                                f"use one of {', '.join(allowed)}")
    unknown = [p for p in cfg["TEST"]["partitioners"] or [] if p not in PARTITIONERS]
    if unknown or not cfg["TEST"]["partitioners"]:
        raise PEAInputError(f"{source}: TEST.partitioners = {cfg['TEST']['partitioners']!r}; "
                            f"use a non-empty list of {', '.join(PARTITIONERS)}")


def make_config(override: Mapping | None = None, source: str = "config") -> Config:
    """The schema of the data set named in `override` (DATA.dataset), updated by `override`."""
    override = override or {}
    data = override.get("DATA") or {}
    dataset = data.get("dataset") if isinstance(data, Mapping) else None
    cfg = merge(schema(dataset), override, source)
    check_choices(cfg, source)
    return _wrap(cfg)


def _overlay(base: Mapping, over: Mapping, path: tuple = ()) -> dict:
    """`base` with `over` laid on top: nested mappings merge, other values replace."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and path + (key,) not in _FREE_FORM:
            out[key] = _overlay(out[key], value, path + (key,))
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A YAML config as a nested dict, with the file named by its `_base_` key underneath."""
    path = Path(path)
    if not path.is_file():
        raise PEAInputError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise PEAInputError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, Mapping):
        raise PEAInputError(f"{path}: the top level must be a mapping of sections")
    data = dict(data)
    base = data.pop("_base_", None)
    if base is None:
        return data
    base_path = (path.parent / str(base)).resolve()
    if base_path in _seen or base_path == path.resolve():
        raise PEAInputError(f"{path}: _base_ {base} extends itself")
    return _overlay(read_yaml(base_path, _seen + (path.resolve(),)), data)


def load_config(path: str | Path) -> Config:
    """Read a YAML file (and its `_base_` files) and merge it into the schema."""
    return make_config(read_yaml(path), str(path))
