"""Configuration: one schema of keys, each reader's own DATA keys, and YAML files over them.

Every key is stated once, as a `pea.schema.Key` (default, check, one-line description):
`SCHEMA` holds the keys every data set uses; a reader adds the DATA keys only it reads with
`register_reader(name, keys)` when its module is imported (importing `pea.data` registers
them all). A YAML file may set any subset of the keys of the reader named by `DATA.dataset`
and may extend another file with `_base_: other.yaml` (the file beside it, else the shipped
config of that name), stating only what differs. A key in neither schema (a typo, a key of
another version) is an error naming it, and so is a value of the wrong type or outside its
range (checked when the config is read). Numbers may be written as 1e-4 (`yaml_load`).

The shipped configs live in the package (`pea/configs/NAME.yaml`, `shipped_config(NAME)`);
`find_config` looks for a name in given folders first (the entry points' own `config/`).
Configs stored in checkpoints by earlier versions are brought to this schema by
`migrate_stored` (keys renamed or retired since, in `RENAMED`, `RETIRED` and `IMPLIED`).

The pipeline is stated here, never guessed from a data set's name or an array's shape:
`TEST.partitioners` (mutex, waterz, lmc), `TEST.strides`, `TEST.mask`, `TEST.small_objects` and
`TEST.merge_rule`, `TEST.fragments` (the waterz/lmc graph), `TEST.metrics`, `TEST.window`
(sliding windows or the whole image), `LOSS.background` (the target rule for
background pixels), the loss terms and `TRAIN.valid_partitioner`.
"""
from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Mapping

import yaml

from pea import schema as S
from pea.errors import PEAInputError
from pea.schema import Key

PARTITIONERS = ("waterz", "lmc", "mutex")  # the order of the printed scores
CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # the shipped configs (package data)

_readers: dict[str, dict[str, Key]] = {}  # data set name -> its reader's own DATA keys
_reader_loaders: list[Callable[[], None]] = []  # run once, before the registry is first read


def set_reader_loader(load: Callable[[], None]) -> None:
    """`load()` imports the modules that register readers; it runs the first time the registry
    is read (pea/__init__.py passes the import of `pea.data`, so this module needs no upper layer)."""
    _reader_loaders.append(load)


def register_reader(name: str, keys: Mapping[str, Key]) -> None:
    """Add the DATA keys only the reader of data set `name` reads (called by its module)."""
    clash = sorted(set(keys) & set(SCHEMA["DATA"]))
    if clash:
        raise ValueError(f"reader {name!r}: DATA keys {clash} are shared keys already")
    if not all(isinstance(k, Key) for k in keys.values()):
        raise ValueError(f"reader {name!r}: every DATA key must be a pea.schema.Key")
    _readers[name] = dict(keys)


def readers() -> dict[str, dict[str, Key]]:
    """The registered readers' DATA keys by data set name."""
    while _reader_loaders:
        _reader_loaders.pop()()
    return _readers


def _known_dataset(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and value in readers()):
        return None
    return "null or one of " + ", ".join(sorted(readers()))


def _device(value: Any) -> str | None:
    ok = isinstance(value, str) and (value in ("auto", "cpu", "cuda") or (value.startswith("cuda:")
                                                                           and value[5:].isdigit()))
    return None if ok else "auto, cpu, cuda or cuda:N"


_SIZE = S.sequence(S.number(1, integer=True), none=True, empty=False)
_POSITIVE_INT = S.number(1, integer=True)
_COUNT = S.number(0, integer=True)
_OFF_BF16_FP16 = S.choice("off", "bf16", "fp16")

SCHEMA: dict[str, Any] = {
    "NAME": Key(None, S.text(none=True), "the run's name (folders under TRAIN.model_dir and TEST.out_dir)"),
    "DATA": {
        "dataset": Key(None, _known_dataset, "the data set whose reader reads the files; it adds its own DATA keys"),
        "data_dir": Key(None, S.text(none=True), "the data set's folder"),
        "scale": Key(1.0, S.number(0, 16, above=True), "resize factor applied when images are read (CPU demos: 0.5)"),
        "padded_size": Key(None, _SIZE, "whole-image inference: padded size (null: the next multiple of 16)"),
        "pad_mode": Key("reflect", S.choice("reflect", "zero"), "... padded by reflection or with zeros"),
        "crop_size": Key(None, _SIZE, "training crop size per axis"),
        "shifts": Key(None, S.sequence(_POSITIVE_INT, none=True, empty=False),
                      "2D: offsets from these shifts and DATA.neighbor ..."),
        "neighbor": Key(4, S.choice(4, 8), "... 4 or 8 offsets per shift"),
        "offsets": Key(None, S.sequence(S.sequence(S.number(integer=True), empty=False), none=True, empty=False),
                       "... or an explicit list of offsets (any dimension)"),
        "group_size": Key(None, S.number(1, integer=True, none=True),
                          "offsets per shift group with explicit offsets (EPM levels)"),
        "normalize": Key(None, S.choice(None, "imagenet", "unit", "percentile", "none"),
                         "input: imagenet (RGB) | unit ((x - 0.5) / 0.25) | percentile | none (the [0, 1] image)"),
        "num_workers": Key(2, _COUNT, "data loader worker processes"),
    },
    "MODEL": {
        "backbone": Key("resunet", S.text(), "the network (pea.models.MODELS)"),
        "in_channels": Key(3, _POSITIVE_INT, "input channels"),
        "emb_dim": Key(16, _POSITIVE_INT, "embedding channels"),
        "filters": Key(None, S.sequence(_POSITIVE_INT, none=True, empty=False),
                       "widths per level (null: the backbone's own)"),
        "fg_head": Key(False, S.boolean, "build the foreground head"),
        "pretrained": Key(None, S.text(none=True), "torchvision-format state dict initialising the encoder"),
    },
    "LOSS": {
        # The defaults are the project's own choices; the paper configs state the authors'
        # (README "Configs"; docs/method.md sections 2 and 4).
        "scm": Key(True, S.boolean, "train the single-view (SCM) affinity term"),
        "ccm": Key(True, S.boolean, "train the cross-view consistency (CCM) term"),
        "epm": Key(True, S.boolean, "train the coarse levels (EPM)"),
        "scm_weight": Key(1.0, S.number(0), "weight of the SCM term"),
        "ccm_weight": Key(1.0, S.number(0), "weight of the CCM term"),
        "epm_weight": Key(1.0, S.number(0), "weight of the EPM terms"),
        "epm_groups": Key([4, 3, 2, 1], S.sequence(_COUNT), "shift groups used at 1/2, 1/4, 1/8, 1/16"),
        "background": Key("same", S.choice("same", "none"),
                          "target rule: same (two background pixels are one object) | none (affine to nothing)"),
        "normalize": Key("mean", S.choice("mean", "width", "pairs"),
                         "a level's loss / (batch x pixels): mean | / (batch x width): width (authors' 2D) | "
                         "each offset's / (batch x its pairs inside the crop): pairs (authors' 3D)"),
        "outside_pairs": Key("ignore", S.choice("ignore", "one", "zero", "foreground"),
                             "class-weight fraction: pairs leaving the image ignored | counted as one | zero | "
                             "as one where their own pixel is foreground (authors' 3D pyramid targets)"),
        "epm_outside_pairs": Key(None, S.choice(None, "ignore", "one", "zero", "foreground"),
                                 "outside_pairs of the EPM levels (null: LOSS.outside_pairs)"),
        "weight_clip": Key([0.05, 0.99], S.sequence(S.number(0, 1, above=True), length=2),
                           "class-weight fraction clipped to this range"),
        "mask_weight": Key(0.0, S.number(0), "foreground head loss weight (0: not trained)"),
        "fg_weighting": Key("fixed", S.choice("fixed", "batch"),
                            "head class weights: fixed [1, fg_class_weight] | batch (pixel counts)"),
        "fg_class_weight": Key(10.0, S.number(0, above=True), "foreground class weight of the head (fixed)"),
        # CCM (pea/ccm.py): the second view, and how it meets the network
        "ccm_view": Key("project", S.choice("project", "official"),
                        "second view: project (second_view) | official (official_view, the ccm_ keys below)"),
        "ccm_pass": Key("joint", S.choice("joint", "separate"),
                        "both views in one forward pass | separate passes (BatchNorm per view)"),
        "ccm_detach": Key(False, S.boolean, "the second view's embedding is a constant (stop-gradient target)"),
        "ccm_intensity": Key(0.2, S.number(0, 1), "contrast and brightness change of up to +- this"),
        "ccm_mask_prob": Key(0.5, S.number(0, 1), "project view: chance to blank blocks ..."),
        "ccm_blank": Key("foreground", S.choice("foreground", "anywhere"),
                         "... of the foreground, or anywhere (official view: where boxes go)"),
        "ccm_flip": Key(True, S.boolean, "random flip of each spatial axis"),
        "ccm_transpose": Key(False, S.boolean, "official view: random swap of the last two axes (square crops)"),
        "ccm_intensity_prob": Key(1.0, S.number(0, 1), "official view: chance of the intensity change ..."),
        "ccm_intensity_draw": Key("image", S.choice("image", "section"),
                                  "... one draw per image, or per section (first spatial axis)"),
        "ccm_gamma": Key(0.0, S.number(0), "... then x ** 2^u, |u| <= ccm_gamma"),
        "ccm_boxes": Key([0, 20], S.sequence(_COUNT, length=2), "official view: number of boxes (inclusive range) ..."),
        "ccm_box_min": Key([0, 0], S.sequence(_COUNT, empty=False), "... their smallest size per spatial axis ..."),
        "ccm_box_max": Key([20, 20], S.sequence(_COUNT, empty=False),
                           "... and largest (the last two axes share one draw: square in-plane)"),
        "ccm_fill": Key("mean", S.choice("mean", "zero"), "boxes filled with the foreground mean per channel | zero"),
        "ccm_min_foreground": Key(0, _COUNT, "with fewer foreground pixels, boxes go anywhere"),
    },
    "TRAIN": {
        "iterations": Key(200000, _POSITIVE_INT, "training iterations"),
        "batch_size": Key(2, _POSITIVE_INT, "crops per iteration"),
        "lr": Key(1e-4, S.number(0, above=True), "Adam learning rate"),
        "lr_schedule": Key("constant", S.choice("constant", "cosine", "poly"),
                           "learning rate after the warm-up: constant (the authors') | cosine | poly"),
        "warmup": Key(0, _COUNT, "iterations of linear warm-up to TRAIN.lr at the start"),
        "lr_power": Key(0.9, S.number(0, above=True), "poly: the exponent of the decay"),
        "lr_final": Key(0.0, S.number(0, 1), "cosine and poly: the learning rate at the end, as a fraction of TRAIN.lr"),
        "betas": Key([0.9, 0.999], S.sequence(S.number(0, 1), length=2), "Adam betas"),
        "eps": Key(0.01, S.number(0, above=True), "Adam epsilon"),
        "weight_decay": Key(1e-6, S.number(0), "Adam weight decay"),
        "amsgrad": Key(True, S.boolean, "Adam's AMSGrad variant"),
        "seed": Key(555, _COUNT, "random seed"),
        "valid_every": Key(1000, _POSITIVE_INT, "iterations between validations"),
        "save_every": Key(1000, _POSITIVE_INT, "writes model-%06d.ckpt (the authors' names) and last.ckpt"),
        "keep_checkpoints": Key(None, S.number(1, integer=True, none=True),
                                "null: every model-%06d.ckpt is kept; N: the newest N"),
        "log_every": Key(10, _POSITIVE_INT, "iterations between log lines"),
        "max_valid_images": Key(None, S.number(1, integer=True, none=True), "images validated (null: all)"),
        "valid_partitioner": Key("mutex", S.choice(*PARTITIONERS),
                                 "the partitioner whose segmentation is scored in validation"),
        "valid_extra_partitioners": Key([], S.sequence(S.choice(*PARTITIONERS)),
                                        "validation: partitioners also scored (keys prefixed: lmc_voi)"),
        "valid_waterz_scoring": Key("mean", S.choice("mean", "median"),
                                    "validation waterz merge score: mean affinity (as TEST) | median "
                                    "(histogram quantile 50, the authors' AC3/AC4 validation)"),
        "select_rule": Key("auto", S.choice("best", "smoothed", "last", "auto"),
                           "how best.ckpt is picked: best (the authors': the single best score) | smoothed "
                           "(the mean of the last select_window scores) | last | auto (smoothed; last under "
                           "min_valid_pixels validation pixels)"),
        "select_window": Key(3, _POSITIVE_INT, "smoothed: validation scores averaged"),
        "min_valid_pixels": Key(1048576, S.number(0, integer=True),
                                "auto: with fewer validation pixels (voxels) the last checkpoint is kept"),
        "select_metric": Key(None, S.text(none=True),
                             "the validation score that picks best.ckpt (voi, arand: lower is better)"),
        "model_dir": Key("../models", S.text(), "training runs are written to MODEL_DIR/NAME"),
        "device": Key("auto", _device, "auto | cpu | cuda | cuda:N"),
        "amp": Key("off", _OFF_BF16_FP16,
                   "network in bf16 | fp16 (autocast; fp16 with a gradient scaler); loss in float32"),
        "channels_last": Key(False, S.boolean, "channels-last memory format for the network"),
        "cudnn_benchmark": Key(True, S.boolean, "CUDA: let cuDNN pick the fastest convolution algorithms"),
        "compile": Key(False, S.boolean, "torch.compile the network (a notice and plain eager mode where it cannot)"),
        "batch_scope": Key("global", S.choice("global", "per_process"),
                           "torchrun: batch_size is the global batch | per process"),
        "sync_bn": Key(False, S.boolean, "torchrun on CUDA: SyncBatchNorm across the processes"),
    },
    "TEST": {
        "partitioners": Key(["mutex"], S.sequence(S.choice(*PARTITIONERS), empty=False),
                            "any of mutex, waterz, lmc (inference flags choose among them)"),
        "strides": Key(None, S.sequence(_POSITIVE_INT, none=True, empty=False),
                       "Mutex Watershed long-range stride per axis (null: every edge)"),
        "small_objects": Key([], S.sequence(S.any_of(_COUNT, S.sequence(_COUNT, length=2))),
                             "merge passes in original pixels: sizes (contact) or [threshold, window] (window)"),
        "merge_rule": Key("contact", S.choice("contact", "window"),
                          "contact: join the most-touched neighbour | window: the paper code's rule"),
        "fragments": Key("project", S.choice("project", "official"),
                         "waterz/lmc graph: project (fragments_3d, every offset) | official (paper code)"),
        "crop_padding": Key("first", S.choice("first", "last"),
                            "whole-image inference: padding cropped off the affinities before partitioning "
                            "(first) | off the merged segmentation (last, at DATA.scale 1; the authors' CVPPP)"),
        "mutex_numbering": Key("sorted", S.choice("sorted", "fortran"),
                               "Mutex Watershed ids: elf's, made sequential | by first appearance in Fortran "
                               "order (vigra's, as the authors' stack)"),
        "aji_ids": Key("present", S.choice("present", "range"),
                       "AJI over the gt ids present | range: every id 1..max(gt), gaps included (the authors')"),
        "metrics": Key(None, S.sequence(S.text(), none=True),
                       "metric selectors scored at inference and validation (null: the reader's)"),
        "mask": Key("none", S.choice("gt", "pred", "none"),
                    "gt: given foreground mask | pred: predicted foreground | none"),
        "fg_min_size": Key(0, _COUNT, "predicted foreground: specks under this size removed ..."),
        "fg_connectivity": Key(1, _POSITIVE_INT, "... as connected by faces (1) or also by corners (2 in 2D)"),
        "window": Key(None, _SIZE, "sliding-window size (null: the whole image at DATA.padded_size)"),
        "overlap": Key(None, S.sequence(_COUNT, none=True, empty=False), "sliding-window overlap per axis"),
        "window_blend": Key("ramp", S.choice("ramp", "gaussian"),
                            "ramp (partners inside the window only) | gaussian (the authors')"),
        "context": Key(None, S.sequence(_COUNT, none=True, empty=False),
                       "gaussian: reflect-padding of the volume per axis before the windows"),
        "window_batch": Key(1, _POSITIVE_INT, "sliding windows per forward pass"),
        "amp": Key("off", _OFF_BF16_FP16, "network in bf16 | fp16 (autocast) at inference; affinities in float32"),
        "waterz_threshold": Key(0.5, S.number(0, 1), "waterz merge threshold"),
        "trained_dir": Key("../trained_models", S.text(), "inference -id: checkpoints are looked for in TRAINED_DIR/MODEL, then TRAIN.model_dir/MODEL"),
        "out_dir": Key("../inference", S.text(), "inference outputs go under this folder"),
    },
}

DEFAULTS: dict[str, Any] = S.defaults(SCHEMA)  # the shared defaults (pea.models takes its MODEL section)


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
    """Return `base` updated by `override`; keys missing from `base` are errors naming them.
    Sections (the top level) merge key by key; a key's value, a mapping included (such as
    DATA.em_augment), is replaced whole."""
    out = copy.deepcopy(dict(base))
    for key, value in (override or {}).items():
        where = path + (key,)
        if key not in out:
            hint = ", ".join(sorted(map(str, base)))
            raise PEAInputError(f"{source}: unknown key '{'.'.join(where)}' (known here: {hint})")
        if not path and isinstance(out[key], Mapping):
            if not isinstance(value, Mapping):
                raise PEAInputError(f"{source}: key '{'.'.join(where)}' must be a mapping")
            out[key] = merge(out[key], value, source, where)
        else:
            out[key] = copy.deepcopy(value)
    return out


def schema(dataset: str | None, source: str = "config") -> dict:
    """The Keys of the shared schema plus the DATA keys of the reader of `dataset` (None:
    shared only); an unknown data set is an error naming the known ones."""
    expected = _known_dataset(dataset)
    if expected:
        raise PEAInputError(f"{source}: DATA.dataset = {dataset!r}: expected {expected}")
    return {**SCHEMA, "DATA": {**SCHEMA["DATA"], **readers().get(dataset, {})}}


def check_values(cfg: Mapping, source: str = "config") -> None:
    """Every key's value has its type and lies in its range (the Keys of `schema`); the first
    that does not is a one-line error naming the key, the value and what is expected."""
    for path, key in S.flatten(schema(cfg["DATA"]["dataset"], source)).items():
        value = cfg[path[0]] if len(path) == 1 else cfg[path[0]][path[1]]
        expected = key.check(value)
        if expected:
            raise PEAInputError(f"{source}: {'.'.join(path)} = {value!r}: expected {expected}")
    _check_small_objects(cfg["TEST"], source)


def reported_metrics(cfg: Mapping, reader) -> list[str]:
    """The metric selectors scored at inference and validation: TEST.metrics, else the reader's."""
    return list(cfg["TEST"]["metrics"] or reader.METRICS)


def _check_small_objects(test: Mapping, source: str) -> None:
    """TEST.small_objects holds sizes for the contact rule, [threshold, window] pairs for the window rule."""
    passes = test["small_objects"]
    pairs = test["merge_rule"] == "window"
    if not all(isinstance(p, (list, tuple)) == pairs for p in passes):
        want = "[threshold, window] pairs" if pairs else "sizes (integers)"
        raise PEAInputError(f"{source}: TEST.small_objects = {passes!r}; with TEST.merge_rule "
                            f"{test['merge_rule']!r} give a list of {want}")


def make_config(override: Mapping | None = None, source: str = "config") -> Config:
    """The schema of the data set named in `override` (DATA.dataset), updated by `override`."""
    override = override or {}
    data = override.get("DATA") or {}
    dataset = data.get("dataset") if isinstance(data, Mapping) else None
    cfg = merge(S.defaults(schema(dataset, source)), override, source)
    check_values(cfg, source)
    return _wrap(cfg)


# -- configs stored in checkpoints by earlier versions ----------------------------------------
KeyPath = tuple[str, ...]


def _volume_offsets(stored: Mapping) -> bool:
    offsets = (stored.get("DATA") or {}).get("offsets")
    return bool(offsets) and len(offsets[0]) == 3


def _offsets_dimension(stored: Mapping) -> int | None:
    offsets = (stored.get("DATA") or {}).get("offsets")
    return len(offsets[0]) if offsets else None


# old path -> (new path, whether the old value is the one the old code used)
RENAMED: dict[KeyPath, tuple[KeyPath, Callable[[Mapping], bool]]] = {
    # until c4a94a5 the Mutex Watershed read TEST.mws_strides for volumes (explicit 3D offsets)
    # and TEST.strides for images; since then TEST.strides for both
    ("TEST", "mws_strides"): (("TEST", "strides"), _volume_offsets),
}

# path -> which stored values are the retired key's where the name lives on (None: none). A
# retired key is dropped from a stored config where this schema (with its reader) lacks it.
RETIRED: dict[KeyPath, Callable[[Any], bool] | None] = {
    ("DATA", "min_instance_size"): None,  # 920f86a (never read)
    ("TEST", "batch_size"): None,  # 920f86a (never read)
    ("TRAIN", "amp"): lambda v: isinstance(v, bool),  # 920f86a (never read); back as off|bf16|fp16 in 4ead643
    # c4a94a5: DATA keys every config had until then, now the own keys of the readers that read them
    **{("DATA", k): None for k in ("valid_list", "percentiles", "train_sections", "widen_border", "em_augment",
                                   "crop_scale", "flip", "affine_prob", "rotation", "translation", "shear",
                                   "zoom", "intensity_prob", "brightness", "contrast", "gamma")},
}

# path -> the value the old code implied, for stored configs written before the key existed
IMPLIED: dict[KeyPath, Callable[[Mapping], Any]] = {
    ("DATA", "group_size"): _offsets_dimension,  # until c4a94a5 explicit offsets were grouped by their dimension
}


def migrate_stored(stored: Mapping) -> dict:
    """A config stored by an earlier version (a checkpoint's), brought to this schema: renamed
    keys moved (`RENAMED`), implied values stated (`IMPLIED`), retired keys dropped (`RETIRED`).
    Only stored configs are migrated: in a YAML file or --set an old key is an error."""
    out = copy.deepcopy(dict(stored))
    if not all(isinstance(out.get(s), Mapping) for s in ("DATA", "TEST", "TRAIN")):
        return out  # not a config of this project: make_config says what is wrong
    for (section, key), ((new_section, new_key), applies) in RENAMED.items():
        if key in out[section]:
            value = out[section].pop(key)
            if applies(stored):
                out[new_section][new_key] = value
    for (section, key), implied in IMPLIED.items():
        value = implied(out)
        if key not in out[section] and value is not None:
            out[section][key] = value
    dataset = out["DATA"].get("dataset")
    known = S.flatten(schema(None if _known_dataset(dataset) else dataset))  # unknown: make_config says so
    for (section, key), is_old in RETIRED.items():
        if key in out.get(section, {}) and ((section, key) not in known or (is_old and is_old(out[section][key]))):
            del out[section][key]
    return out


# -- YAML files and shipped configs ----------------------------------------------------------
def _overlay(base: Mapping, over: Mapping, top: bool = True) -> dict:
    """`base` with `over` laid on top: sections merge key by key, values replace."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if top and isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _overlay(out[key], value, top=False)
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


def shipped_configs() -> list[str]:
    """The names of the configs shipped with the package."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def shipped_config(name: str) -> Path:
    """The file of the shipped config `name` (pea/configs/NAME.yaml)."""
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        raise PEAInputError(f"config {name!r}: no such shipped config "
                            f"(shipped: {', '.join(shipped_configs())}; or give a .yaml path)")
    return path


def find_config(name: str, *folders: str | Path) -> Path:
    """A .yaml/.yml path as given; a name: NAME.yaml in the first of `folders` that holds it
    (users' own configs), else the shipped config NAME."""
    if name.endswith((".yaml", ".yml")):
        return Path(name)
    tried = [Path(folder) / f"{name}.yaml" for folder in folders]
    for path in tried:
        if path.is_file():
            return path
    try:
        return shipped_config(name)
    except PEAInputError as err:
        raise PEAInputError("".join(f"{path} not found; " for path in tried) + str(err)) from None


def _base_path(path: Path, base: str) -> Path:
    """`_base_` of `path`: the file beside it, else (a bare file name) the shipped config."""
    beside, shipped = (path.parent / base).resolve(), CONFIG_DIR / base
    if beside.is_file() or Path(base).name != base or not shipped.is_file():
        return beside
    return shipped.resolve()


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
    base_path = _base_path(path, str(base))
    if base_path in _seen or base_path == path.resolve():
        raise PEAInputError(f"{path}: _base_ {base} extends itself")
    return _overlay(read_yaml(base_path, _seen + (path.resolve(),)), data)


def load_config(path: str | Path) -> Config:
    """Read a YAML file (and its `_base_` files) and merge it into the schema."""
    return make_config(read_yaml(path), str(path))
