"""Configuration: a shared schema, each reader's own DATA keys, and YAML files that override them.

The shared schema (`DEFAULTS`) holds the keys every data set uses; the reader named by
`DATA.dataset` adds the DATA keys only it reads (`DATA_DEFAULTS` of its module in
`pea.data`). A YAML file may set any subset of these keys and may extend another file with
`_base_: other.yaml` (a path relative to the file), stating only what differs. A key that is
in neither schema (a typo, a key of another version) is an error naming it, and so is a value
of the wrong type or outside its range (`SPEC`, checked when the config is read). Numbers
may be written as 1e-4 (`yaml_load`).

The pipeline is stated here, never guessed from a data set's name or an array's shape:
`TEST.partitioners` (mutex, waterz, lmc), `TEST.strides`, `TEST.mask`, `TEST.small_objects` and
`TEST.merge_rule`, `TEST.fragments` (the waterz/lmc graph), `TEST.metrics`, `TEST.window`
(sliding windows or the whole image), `LOSS.background` (the target rule for
background pixels), the loss terms and `TRAIN.valid_partitioner`.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from pea import schema as S
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
        "lr_schedule": "constant",  # constant (the authors') | cosine | poly, after a linear warm-up
        "warmup": 0,  # warm-up iterations (0: none)
        "lr_power": 0.9,  # poly: (1 - t) ** lr_power
        "lr_final": 0.0,  # cosine and poly end at this fraction of TRAIN.lr
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
        # how it picks: best (the authors': the single best score) | smoothed (the mean of the last
        # select_window scores) | last | auto (smoothed; last under min_valid_pixels validation pixels)
        "select_rule": "auto",
        "select_window": 3,
        "min_valid_pixels": 1048576,
        "model_dir": "../models",
        "device": "auto",  # auto | cpu | cuda | cuda:N
        "amp": "off",  # network in bf16 | fp16 (autocast; fp16 with a gradient scaler); loss in float32
        "channels_last": False,  # channels-last memory format for the network
        "cudnn_benchmark": True,  # CUDA: let cuDNN pick the fastest convolution algorithms
        "compile": False,  # torch.compile the network (a notice and plain eager mode where it cannot)
        "batch_scope": "global",  # torchrun: batch_size is the global batch | per_process
        "sync_bn": False,  # torchrun on CUDA: SyncBatchNorm across the processes
    },
    "TEST": {
        "partitioners": ["mutex"],  # any of mutex, waterz, lmc (inference flags choose among them)
        "strides": None,  # Mutex Watershed long-range stride per axis (None: every edge)
        "small_objects": [],  # merge passes in original pixels: sizes (contact) or [threshold, window] (window)
        "merge_rule": "contact",  # contact: join the most-touched neighbour | window: the paper code's rule
        "fragments": "project",  # waterz/lmc graph: project (fragments_3d, every offset) | official (paper code)
        "metrics": None,  # metric selectors scored at inference and validation (None: the reader's)
        "mask": "none",  # gt: given foreground mask | pred: predicted foreground | none
        "fg_min_size": 0,  # predicted foreground: specks under this size removed ...
        "fg_connectivity": 1,  # ... as connected by faces (1) or also by corners (2 in 2D: 8-connected)
        "window": None,  # sliding-window size (None: the whole image at DATA.padded_size)
        "overlap": None,  # sliding-window overlap per axis
        "window_blend": "ramp",  # ramp (partners inside the window only) | gaussian (the authors')
        "context": None,  # gaussian: reflect-padding of the volume per axis before the windows
        "window_batch": 1,  # sliding windows per forward pass
        "amp": "off",  # network in bf16 | fp16 (autocast) at inference; affinity arithmetic in float32
        "waterz_threshold": 0.5,
        "trained_dir": "../trained_models",
        "out_dir": "../inference",
    },
}



_SIZE = S.sequence(S.number(1, integer=True), none=True, empty=False)
_POSITIVE_INT = S.number(1, integer=True)

# The type and range of every shared key (readers add theirs: DATA_SPEC of their module).
SPEC: dict[tuple[str, ...], S.Check] = {
    ("NAME",): S.text(none=True),
    ("DATA", "dataset"): S.text(none=True),
    ("DATA", "data_dir"): S.text(none=True),
    ("DATA", "scale"): S.number(0, 16, above=True),
    ("DATA", "padded_size"): _SIZE,
    ("DATA", "pad_mode"): S.choice("reflect", "zero"),
    ("DATA", "crop_size"): _SIZE,
    ("DATA", "shifts"): S.sequence(_POSITIVE_INT, none=True, empty=False),
    ("DATA", "neighbor"): S.choice(4, 8),
    ("DATA", "offsets"): S.sequence(S.sequence(S.number(integer=True), empty=False), none=True, empty=False),
    ("DATA", "group_size"): S.number(1, integer=True, none=True),
    ("DATA", "normalize"): S.choice(None, "imagenet", "unit", "percentile", "none"),
    ("DATA", "num_workers"): S.number(0, integer=True),
    ("MODEL", "backbone"): S.text(),
    ("MODEL", "in_channels"): _POSITIVE_INT,
    ("MODEL", "emb_dim"): _POSITIVE_INT,
    ("MODEL", "filters"): S.sequence(_POSITIVE_INT, none=True, empty=False),
    ("MODEL", "fg_head"): S.boolean,
    ("MODEL", "pretrained"): S.text(none=True),
    ("LOSS", "scm"): S.boolean,
    ("LOSS", "ccm"): S.boolean,
    ("LOSS", "epm"): S.boolean,
    ("LOSS", "scm_weight"): S.number(0),
    ("LOSS", "ccm_weight"): S.number(0),
    ("LOSS", "epm_weight"): S.number(0),
    ("LOSS", "epm_groups"): S.sequence(S.number(0, integer=True)),
    ("LOSS", "background"): S.choice("same", "none"),
    ("LOSS", "weight_clip"): S.sequence(S.number(0, 1, above=True), length=2),
    ("LOSS", "mask_weight"): S.number(0),
    ("LOSS", "fg_class_weight"): S.number(0, above=True),
    ("LOSS", "normalize"): S.choice("mean", "width"),
    ("LOSS", "outside_pairs"): S.choice("ignore", "one", "zero"),
    ("LOSS", "fg_weighting"): S.choice("fixed", "batch"),
    ("LOSS", "ccm_view"): S.choice("project", "official"),
    ("LOSS", "ccm_pass"): S.choice("joint", "separate"),
    ("LOSS", "ccm_detach"): S.boolean,
    ("LOSS", "ccm_intensity"): S.number(0, 1),
    ("LOSS", "ccm_mask_prob"): S.number(0, 1),
    ("LOSS", "ccm_blank"): S.choice("foreground", "anywhere"),
    ("LOSS", "ccm_flip"): S.boolean,
    ("LOSS", "ccm_transpose"): S.boolean,
    ("LOSS", "ccm_intensity_prob"): S.number(0, 1),
    ("LOSS", "ccm_intensity_draw"): S.choice("image", "section"),
    ("LOSS", "ccm_gamma"): S.number(0),
    ("LOSS", "ccm_boxes"): S.sequence(S.number(0, integer=True), length=2),
    ("LOSS", "ccm_box_min"): S.sequence(S.number(0, integer=True), empty=False),
    ("LOSS", "ccm_box_max"): S.sequence(S.number(0, integer=True), empty=False),
    ("LOSS", "ccm_fill"): S.choice("mean", "zero"),
    ("LOSS", "ccm_min_foreground"): S.number(0, integer=True),
    ("TRAIN", "iterations"): _POSITIVE_INT,
    ("TRAIN", "batch_size"): _POSITIVE_INT,
    ("TRAIN", "lr"): S.number(0, above=True),
    ("TRAIN", "lr_schedule"): S.choice("constant", "cosine", "poly"),
    ("TRAIN", "warmup"): S.number(0, integer=True),
    ("TRAIN", "lr_power"): S.number(0, above=True),
    ("TRAIN", "lr_final"): S.number(0, 1),
    ("TRAIN", "betas"): S.sequence(S.number(0, 1), length=2),
    ("TRAIN", "eps"): S.number(0, above=True),
    ("TRAIN", "weight_decay"): S.number(0),
    ("TRAIN", "amsgrad"): S.boolean,
    ("TRAIN", "seed"): S.number(0, integer=True),
    ("TRAIN", "valid_every"): _POSITIVE_INT,
    ("TRAIN", "save_every"): _POSITIVE_INT,
    ("TRAIN", "keep_checkpoints"): S.number(1, integer=True, none=True),
    ("TRAIN", "log_every"): _POSITIVE_INT,
    ("TRAIN", "max_valid_images"): S.number(1, integer=True, none=True),
    ("TRAIN", "valid_partitioner"): S.choice(*PARTITIONERS),
    ("TRAIN", "select_metric"): S.text(none=True),
    ("TRAIN", "select_rule"): S.choice("best", "smoothed", "last", "auto"),
    ("TRAIN", "select_window"): _POSITIVE_INT,
    ("TRAIN", "min_valid_pixels"): S.number(0, integer=True),
    ("TRAIN", "model_dir"): S.text(),
    ("TRAIN", "amp"): S.choice("off", "bf16", "fp16"),
    ("TRAIN", "channels_last"): S.boolean,
    ("TRAIN", "cudnn_benchmark"): S.boolean,
    ("TRAIN", "compile"): S.boolean,
    ("TRAIN", "batch_scope"): S.choice("global", "per_process"),
    ("TRAIN", "sync_bn"): S.boolean,
    ("TRAIN", "device"): lambda v: None if isinstance(v, str) and (
        v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit())) else "auto, cpu, cuda or cuda:N",
    ("TEST", "partitioners"): S.sequence(S.choice(*PARTITIONERS), empty=False),
    ("TEST", "strides"): S.sequence(_POSITIVE_INT, none=True, empty=False),
    ("TEST", "small_objects"): S.anything,  # checked with TEST.merge_rule
    ("TEST", "merge_rule"): S.choice("contact", "window"),
    ("TEST", "fragments"): S.choice("project", "official"),
    ("TEST", "metrics"): S.anything,  # checked against pea.metrics' selectors
    ("TEST", "mask"): S.choice("gt", "pred", "none"),
    ("TEST", "fg_min_size"): S.number(0, integer=True),
    ("TEST", "fg_connectivity"): S.number(1, integer=True),
    ("TEST", "window"): _SIZE,
    ("TEST", "overlap"): S.sequence(S.number(0, integer=True), none=True, empty=False),
    ("TEST", "window_blend"): S.choice("ramp", "gaussian"),
    ("TEST", "context"): S.sequence(S.number(0, integer=True), none=True, empty=False),
    ("TEST", "waterz_threshold"): S.number(0, 1),
    ("TEST", "window_batch"): _POSITIVE_INT,
    ("TEST", "amp"): S.choice("off", "bf16", "fp16"),
    ("TEST", "trained_dir"): S.text(),
    ("TEST", "out_dir"): S.text(),
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


def check_values(cfg: Mapping, source: str = "config") -> None:
    """Every key's value has its type and lies in its range (SPEC, and the reader's DATA_SPEC);
    the first that does not is a one-line error naming the key, the value and what is expected."""
    spec = dict(SPEC)
    if cfg["DATA"]["dataset"] is not None:
        from pea.data import get_reader

        spec.update({("DATA", k): c for k, c in get_reader(cfg["DATA"]["dataset"]).DATA_SPEC.items()})
    for path, check in spec.items():
        value = cfg[path[0]] if len(path) == 1 else cfg[path[0]][path[1]]
        expected = check(value)
        if expected:
            raise PEAInputError(f"{source}: {'.'.join(path)} = {value!r}: expected {expected}")
    _check_small_objects(cfg["TEST"], source)
    _check_metrics(cfg, source)


def reported_metrics(cfg: Mapping, reader) -> list[str]:
    """The metric selectors scored at inference and validation: TEST.metrics, else the reader's."""
    return list(cfg["TEST"]["metrics"] or reader.METRICS)


def _check_metrics(cfg: Mapping, source: str) -> None:
    """TEST.metrics are known selectors; TRAIN.select_metric is one of the scores reported."""
    from pea.metrics import select_metrics

    try:
        select_metrics(cfg["TEST"]["metrics"] or [])
    except PEAInputError as err:
        raise PEAInputError(f"{source}: TEST.metrics: {err}") from None
    metric, dataset = cfg["TRAIN"]["select_metric"], cfg["DATA"]["dataset"]
    if metric is None or dataset is None:
        return
    from pea.data import get_reader

    reported = select_metrics(reported_metrics(cfg, get_reader(dataset)))
    if metric not in reported:
        raise PEAInputError(f"{source}: TRAIN.select_metric = {metric!r}: expected one of {', '.join(reported)}")


def _check_small_objects(test: Mapping, source: str) -> None:
    """TEST.small_objects holds sizes for the contact rule, [threshold, window] pairs for the window rule."""
    passes = test["small_objects"] or []
    pairs = test["merge_rule"] == "window"
    ok = isinstance(passes, (list, tuple)) and all(
        (isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(v, int) for v in p)) if pairs
        else isinstance(p, int) for p in passes)
    if not ok:
        want = "[threshold, window] pairs" if pairs else "sizes (integers)"
        raise PEAInputError(f"{source}: TEST.small_objects = {passes!r}; with TEST.merge_rule "
                            f"{test['merge_rule']!r} give a list of {want}")


def make_config(override: Mapping | None = None, source: str = "config") -> Config:
    """The schema of the data set named in `override` (DATA.dataset), updated by `override`."""
    override = override or {}
    data = override.get("DATA") or {}
    dataset = data.get("dataset") if isinstance(data, Mapping) else None
    cfg = merge(schema(dataset), override, source)
    check_values(cfg, source)
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


class _Loader(yaml.SafeLoader):
    """YAML 1.1 with floats also in the form users write them: 1e-4, 5E3 (no dot needed)."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
                              list("-+0123456789."))


def yaml_load(text: str):
    """Parse YAML text (a file or one --set value) with `_Loader`."""
    return yaml.load(text, Loader=_Loader)


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A YAML config as a nested dict, with the file named by its `_base_` key underneath."""
    path = Path(path)
    if not path.is_file():
        raise PEAInputError(f"{path}: config file not found")
    try:
        data = yaml_load(path.read_text()) or {}
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
