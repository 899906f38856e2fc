"""AC3/AC4 reader (docs/method.md section 9): AC4_inputs.h5 / AC4_labels.h5 (the first
DATA.train_sections sections train, the rest validate) and AC3_inputs.h5 / AC3_labels.h5
(test, split 'ac3'); each file holds one dataset 'main' (z, y, x).

Samples are whole volumes: `image` (Z, Y, X, 1) float32 in [0, 1], `labels` and `gt` the
stored ids (Z, Y, X). Border widening (DATA.widen_border) touches the training targets only:
it is applied to each augmented training crop (DATA.widen_on crop) or, as the authors', to the
whole training label volume before cropping and augmenting (volume); never to `gt`. That background
(membrane) is affine to nothing is the target rule LOSS.background 'none' (pea.affinity),
which the AC3/AC4 configs select.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from pea import schema as S
from pea.affinity import widen_border
from pea.augment_em import CHAIN_KEYS, ChainCrop
from pea.config import register_reader
from pea.data.common import Sample
from pea.errors import PEAInputError
from pea.io import read_h5
from pea.metrics import check_labels
from pea.schema import Key

DATASET_NAME = "ac3ac4"
SPLITS = {"train": "AC4", "validation": "AC4", "ac3": "AC3", "ac4": "AC4"}
DATASET = "main"
VALID_SPLIT = "validation"
METRICS = ("voi", "arand")
SUBMISSIONS: dict = {}  # no challenge file
DATA_KEYS = {
    "train_sections": Key(80, S.number(1, integer=True), "AC4: the first sections train, the rest validate"),
    "test_split": Key(20, S.number(1, integer=True), "split 'ac4': AC4's last sections (the authors' inference -ts)"),
    "widen_border": Key(False, S.boolean, "in-plane 3x3 border widening of the training labels ..."),
    "widen_on": Key("crop", S.choice("crop", "volume"),
                    "... of each augmented crop | of the whole volume, before cropping (the authors')"),
    **CHAIN_KEYS,  # em_augment (probabilities of the pea.augment_em transforms), ...
    "augment_margin": Key([0, 16, 16], S.sequence(S.number(0, integer=True), length=3),
                          "(z, y, x) context read around a training crop, so that warps and shifts (almost) "
                          "never bring mirrored borders into it; cut off again after augmentation"),
}
register_reader(DATASET_NAME, DATA_KEYS)


def read_volume(path: Path, key: str = DATASET) -> np.ndarray:
    """The (z, y, x) dataset `key` of an HDF5 file."""
    data = read_h5(path, key)
    if data.ndim != 3:
        raise PEAInputError(f"{path}: dataset '{key}' has shape {data.shape}, expected (z, y, x)")
    return data


def to_unit(image: np.ndarray, path: Path) -> np.ndarray:
    """uint8 sections as float32 in [0, 1] (/ 255); float data must already lie in [0, 1]."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype.kind == "f" and image.size and np.isfinite(image).all() and 0 <= image.min() <= image.max() <= 1:
        return image.astype(np.float32)
    raise PEAInputError(f"{path}: dataset '{DATASET}' of dtype {image.dtype} is neither uint8 nor float in [0, 1]")


def check_ids(labels: np.ndarray, path: Path) -> np.ndarray:
    """Non-negative integer ids, as uint32 where they fit (a 1024^2 x 100 volume: 400 MB), else int64."""
    if labels.dtype.kind not in "iu":
        raise PEAInputError(f"{path}: dataset '{DATASET}' has dtype {labels.dtype}: labels must be integers")
    labels = check_labels(labels, f"{path}: dataset '{DATASET}'")
    if labels.dtype == np.uint64 and labels.size and labels.max() >= 2**63:
        raise PEAInputError(f"{path}: dataset '{DATASET}' has ids beyond int64 (max {labels.max()})")
    if labels.size == 0 or labels.max() < 2**32:
        return labels.astype(np.uint32, copy=False)
    return labels.astype(np.int64, copy=False)


def section_range(split: str, depth: int, data_cfg: Mapping, path: Path) -> slice:
    """The sections of a split: AC4's first DATA.train_sections (train) or the rest
    (validation); AC4's last DATA.test_split (ac4); all of AC3."""
    if split == "ac3":
        return slice(0, depth)
    if split == "ac4":
        last = int(data_cfg["test_split"])
        if not 0 < last <= depth:
            raise PEAInputError(f"DATA.test_split (-ts) = {last}: {path} has {depth} sections")
        return slice(depth - last, depth)
    train_sections = int(data_cfg["train_sections"])
    if not 0 < train_sections < depth:
        raise PEAInputError(f"DATA.train_sections = {train_sections}: {path} has {depth} sections, "
                            f"need 0 < train_sections < {depth} to leave some for validation")
    return slice(0, train_sections) if split == "train" else slice(train_sections, depth)


def load_split(data_cfg: Mapping, split: str) -> list[Sample]:
    """The one volume of a split ('train', 'validation', 'ac3' or 'ac4')."""
    if split not in SPLITS:
        raise PEAInputError(f"unknown AC3/AC4 split '{split}' (use one of {', '.join(SPLITS)})")
    folder = Path(data_cfg["data_dir"])
    image_path = folder / f"{SPLITS[split]}_inputs.h5"
    label_path = folder / f"{SPLITS[split]}_labels.h5"
    image = read_volume(image_path)
    labels = read_volume(label_path)
    if labels.shape != image.shape:
        raise PEAInputError(f"{label_path}: dataset '{DATASET}' has shape {labels.shape}, "
                            f"but {image_path} has {image.shape}")
    sections = section_range(split, image.shape[0], data_cfg, image_path)
    image = to_unit(image[sections], image_path)[..., None]
    labels = check_ids(labels[sections], label_path)
    name = {"ac3": "AC3", "ac4": "AC4"}.get(split, f"AC4_{split}")
    return [Sample(name, image, labels, None, labels.shape, labels)]


class EMCrop(ChainCrop):
    """A training crop of `crop_size` (z, y, x) as `pea.augment_em.ChainCrop` makes it, its
    borders widened afterwards (DATA.widen_border with DATA.widen_on crop). Called with a
    volume (Z, Y, X, 1) in [0, 1] and its labels (Z, Y, X); returns the crop (z, y, x, 1) and
    its labels."""

    def __init__(self, data_cfg: Mapping):
        crop = [int(c) for c in data_cfg["crop_size"]]
        if len(crop) != 3 or min(crop) < 1:
            raise PEAInputError(f"DATA.crop_size {data_cfg['crop_size']}: need three positive sizes (z, y, x)")
        on_crop = data_cfg["widen_border"] and data_cfg["widen_on"] == "crop"
        super().__init__(data_cfg, widen_border if on_crop else None)


def train_dataset(cfg, samples: Sequence[Sample]):
    """Random augmented crops of the training volume (docs/method.md sections 4 and 6), its
    labels widened first with DATA.widen_border and DATA.widen_on volume."""
    from pea.data.common import build_train_dataset

    if cfg.DATA.widen_border and cfg.DATA.widen_on == "volume":
        samples = [replace(s, labels=widen_border(s.labels)) for s in samples]
    return build_train_dataset(cfg, samples, EMCrop(cfg.DATA))
