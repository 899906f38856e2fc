"""Volumes of one's own (`pea train --data LIST.yaml`, or `--data RAW --labels LABELS`):
DATA.train and DATA.val list items `{raw: PATH[:KEY], labels: PATH[:KEY]}` (h5, zarr, n5 or a
TIFF stack, as `pea.volumes.open_volume` reads them; any sizes). Without DATA.val, the last
DATA.val_sections sections of each training volume (default 10%, at least one) validate.

Raw volumes become float32 in [0, 1] as `pea predict` reads them (`pea.volumes.to_unit`:
integers over their type's maximum, floats as they are, which must lie in [0, 1]); labels are
integer instance ids, 0 = background, numbered 1..N when read. Training crops are made as the
AC3/AC4 reader makes them (`pea.data.ac3ac4.train_dataset`: the chain of `pea.augment_em`,
borders widened with DATA.widen_border).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from pea import schema as S
from pea.schema import Key
from pea.augment_em import CHAIN_KEYS
from pea.config import register_reader
from pea.data.ac3ac4 import train_dataset  # noqa: F401 (reader interface)
from pea.data.common import Sample
from pea.errors import PEAInputError
from pea.volumes import CONTAINERS

VALID_SPLIT = "validation"
METRICS = ("voi", "arand")
SUBMISSIONS: dict = {}
DATASET_NAME = "volumes"
DATA_KEYS = {
    "train": Key([], S.sequence(S.mapping), "training volumes: [{raw: PATH[:KEY], labels: PATH[:KEY]}, ...]"),
    "val": Key([], S.sequence(S.mapping), "validation volumes (empty: the last val_sections of each training volume)"),
    "val_sections": Key(None, S.number(1, integer=True, none=True),
                        "null: 10% of each volume's sections, at least one"),
    "widen_border": Key(False, S.boolean, "in-plane 3x3 border widening of the training labels ..."),
    "widen_on": Key("crop", S.choice("crop", "volume"),
                    "... of each augmented crop | of the whole volume, before cropping"),
    **CHAIN_KEYS,
    "augment_margin": Key([0, 16, 16], S.sequence(S.number(0, integer=True), length=3),
                          "(z, y, x) context read around a training crop"),
}
register_reader(DATASET_NAME, DATA_KEYS)
ITEM_KEYS = ("raw", "labels")


def volume_spec(path: str) -> str:
    """PATH[:KEY] as `open_volume` takes it: a zarr or n5 KEY joined by '/', an h5 KEY kept."""
    file, sep, key = str(path).rpartition(":")
    return f"{file}/{key}" if sep and file.lower().endswith(CONTAINERS) else str(path)


def check_items(data_cfg: Mapping) -> None:
    """Each item of DATA.train and DATA.val has the keys raw and labels."""
    for where in ("train", "val"):
        for i, item in enumerate(data_cfg[where]):
            if set(item) != set(ITEM_KEYS):
                raise PEAInputError(f"DATA.{where}[{i}] = {dict(item)!r}: expected the keys raw and labels")


def items(data_cfg: Mapping, split: str) -> list[tuple[Mapping, str | None]]:
    """The (item, part) of a split: DATA.val items whole (part None), or each DATA.train item
    with part 'train' (its first sections) or 'validation' (its last DATA.val_sections)."""
    check_items(data_cfg)
    if data_cfg["val"]:
        return [(item, None) for item in data_cfg["train" if split == "train" else "val"]]
    return [(item, split) for item in data_cfg["train"]]


def held_sections(depth: int, val_sections: int | None, name: str) -> int:
    """How many of a volume's `depth` sections validate; at least one must be left to train."""
    n = int(val_sections) if val_sections else max(1, round(0.1 * depth))
    if n >= depth:
        raise PEAInputError(f"{name}: {depth} sections, {n} of them would validate and none train "
                            f"(--val-sections, or a val: list)")
    return n


def read_item(item: Mapping, part: str | None, val_sections: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The raw (Z, Y, X) float32 in [0, 1] and labels (Z, Y, X) of an item: the whole volume
    (part None), or its first ('train') or last held_sections ('validation') sections."""
    from skimage.segmentation import relabel_sequential

    from pea.metrics import check_labels
    from pea.volumes import open_volume, to_unit

    raw_spec, label_spec = volume_spec(item["raw"]), volume_spec(item["labels"])
    with open_volume(raw_spec) as raw, open_volume(label_spec) as labels:
        if tuple(raw.shape) != tuple(labels.shape):
            raise PEAInputError(f"{label_spec}: shape {tuple(labels.shape)} differs from the raw {raw_spec} "
                                f"{tuple(raw.shape)}")
        depth = int(raw.shape[0])
        cut = depth - held_sections(depth, val_sections, raw_spec) if part else 0
        box = (slice(None),) if part is None else (slice(0, cut),) if part == "train" else (slice(cut, depth),)
        image, ids = to_unit(raw[box], raw_spec), check_labels(np.asarray(labels[box]), label_spec)
    if image.size and not 0 <= image.min() <= image.max() <= 1:
        raise PEAInputError(f"{raw_spec}: float values in [{image.min():g}, {image.max():g}]; store integers "
                            f"(uint8, uint16) or floats in [0, 1]")
    return image, relabel_sequential(ids)[0]


def name(item: Mapping) -> str:
    """The stem of an item's raw file or container."""
    from pea.io import split_h5_path
    from pea.volumes import split_container

    spec = volume_spec(item["raw"])
    return Path(split_container(spec)[0] or split_h5_path(spec)[0]).stem


def load_split(data_cfg: Mapping, split: str) -> list[Sample]:
    """The volumes of a split ('train' or 'validation')."""
    if split not in ("train", VALID_SPLIT):
        raise PEAInputError(f"unknown split '{split}' of a volume list (use train or {VALID_SPLIT})")
    samples = []
    for item, part in items(data_cfg, split):
        image, labels = read_item(item, part, data_cfg["val_sections"])
        samples.append(Sample(name(item), image[..., None], labels, None, labels.shape, labels))
    return samples
