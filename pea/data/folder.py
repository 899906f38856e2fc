"""A plain folder of 2D images (`pea train --data FOLDER`): images/ and labels/ matched by
file stem (tif, png, jpg), optional masks/ (foreground), and optional val/images + val/labels
(+ val/masks). Without val/, DATA.val_fraction of the images (at least one) validate, drawn
with DATA.split_seed from the sorted stems.

Images are grey, RGB or multi-channel, read as `pea predict` reads them
(`pea.predict.read_image`: integers over their type's maximum or DATA.percentiles mapped to
0 and 1, grey repeated to DATA.channels); labels are integer instance images, 0 = background
(`pea.io.read_labels`), numbered 1..N when read.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from pea import schema as S
from pea.schema import Key
from pea.augment import AUGMENT_2D_KEYS
from pea.config import register_reader
from pea.data.common import Sample, read_mask, rescale
from pea.data.common import train_dataset_2d as train_dataset  # noqa: F401 (reader interface)
from pea.errors import PEAInputError

SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
FOLDERS = ("images", "labels", "masks")
VALID_SPLIT = "validation"
METRICS = ("aji", "pq", "sbd", "dic")
SUBMISSIONS: dict = {}
DATASET_NAME = "folder"
DATA_KEYS = {
    "val_fraction": Key(0.1, S.number(0, 1, above=True),
                        "without val/: this share of the images (at least one) validates ..."),
    "split_seed": Key(0, S.number(0, integer=True), "... drawn with this seed"),
    "channels": Key(1, S.number(1, integer=True),
                    "network input channels (pea train: the data's); grey repeated, RGB averaged for 1"),
    "percentiles": Key(None, S.sequence(S.number(0, 100), length=2, none=True),
                       "per image, these percentiles map to 0 and 1 (null: integers / their type's maximum)"),
    **AUGMENT_2D_KEYS,
}
register_reader(DATASET_NAME, DATA_KEYS)


@dataclass(frozen=True)
class Pair:
    """One image of the folder: its stem and files (mask None when masks/ has none)."""

    stem: str
    image: Path
    labels: Path
    mask: Path | None = None


def _by_stem(folder: Path, problems: list[str]) -> dict[str, Path]:
    """The image files of `folder` by stem; two files of one stem are a problem."""
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.suffix.lower() in SUFFIXES and not f.name.startswith("."):
            if f.stem in found:
                problems.append(f"{f} and {found[f.stem].name}: two files of one stem")
            found.setdefault(f.stem, f)
    return found


def find_pairs(folder: Path) -> tuple[list[Pair], list[str]]:
    """The images of `folder` (images/, labels/, masks/) matched by stem, and the problems:
    a missing images/ or labels/ folder, an image without labels, labels or a mask without
    an image."""
    problems: list[str] = []
    for sub in FOLDERS[:2]:
        if not (folder / sub).is_dir():
            problems.append(f"{folder / sub}: folder not found (a folder of 2D images holds images/ and labels/)")
    images, labels, masks = (_by_stem(folder / sub, problems) for sub in FOLDERS)
    problems += [f"{images[s]}: no labels (no {folder / 'labels' / s}.*)" for s in sorted(set(images) - set(labels))]
    problems += [f"{files[s]}: no image (no {folder / 'images' / s}.*)"
                 for files in (labels, masks) for s in sorted(set(files) - set(images))]
    pairs = [Pair(s, images[s], labels[s], masks.get(s)) for s in sorted(set(images) & set(labels))]
    if not pairs and (folder / "images").is_dir() and (folder / "labels").is_dir():
        problems.append(f"{folder}: no image with labels in images/ and labels/ ({', '.join(SUFFIXES)})")
    return pairs, problems


def drawn_validation(stems: list[str], fraction: float, seed: int) -> set[str]:
    """The stems that validate: round(fraction x N) of them, at least one, drawn with `seed`."""
    n = min(len(stems), max(1, round(fraction * len(stems))))
    return set(np.random.default_rng(seed).choice(sorted(stems), n, replace=False).tolist()) if stems else set()


def splits(data_cfg: Mapping) -> tuple[dict[str, list[Pair]], list[str]]:
    """{"train": pairs, "validation": pairs} of DATA.data_dir, and the problems found."""
    root = Path(str(data_cfg["data_dir"]))
    if not root.is_dir():
        return {"train": [], VALID_SPLIT: []}, [f"{root}: no such folder"]
    pairs, problems = find_pairs(root)
    if (root / "val").exists():
        valid, more = find_pairs(root / "val")
        return {"train": pairs, VALID_SPLIT: valid}, problems + more
    held = drawn_validation([p.stem for p in pairs], float(data_cfg["val_fraction"]), int(data_cfg["split_seed"]))
    if len(pairs) == 1:
        problems.append(f"{pairs[0].image}: the only image; one validates, so nothing would be left to train on "
                        f"(add images, or validation images in {root / 'val'}/images and labels)")
    train = [p for p in pairs if p.stem not in held]
    return {"train": train, VALID_SPLIT: [p for p in pairs if p.stem in held]}, problems


def read_labels(path: Path) -> np.ndarray:
    """Instance labels numbered 1..N (0 stays background), 2D."""
    from skimage.segmentation import relabel_sequential

    from pea.io import read_labels as read

    labels = read(str(path))
    if labels.ndim != 2:
        raise PEAInputError(f"{path}: expected a 2D label image, got shape {labels.shape}")
    return relabel_sequential(labels)[0]


def read_pair(pair: Pair, data_cfg: Mapping, channels: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The image (H, W, channels; None: its own) in [0, 1], its labels and mask, shapes checked."""
    from pea.predict import read_image

    image = read_image(pair.image, channels, data_cfg["percentiles"])
    labels = read_labels(pair.labels)
    if labels.shape != image.shape[:2]:
        raise PEAInputError(f"{pair.labels}: shape {labels.shape} differs from the image {pair.image} "
                            f"{image.shape[:2]}")
    mask = read_mask(pair.mask) if pair.mask is not None else None
    if mask is not None and mask.shape != labels.shape:
        raise PEAInputError(f"{pair.mask}: shape {mask.shape} differs from the image {pair.image} {image.shape[:2]}")
    return image, labels, mask


def load_split(data_cfg: Mapping, split: str) -> list[Sample]:
    """Every image of a split ('train' or 'validation') at DATA.scale, DATA.channels channels."""
    if split not in ("train", VALID_SPLIT):
        raise PEAInputError(f"unknown split '{split}' of a folder of images (use train or {VALID_SPLIT})")
    found, problems = splits(data_cfg)
    if problems:
        raise PEAInputError(problems[0])
    scale, samples = float(data_cfg["scale"]), []
    for pair in found[split]:
        image, labels, mask = read_pair(pair, data_cfg, int(data_cfg["channels"]))
        small = rescale(labels, scale, nearest=True)
        fg = rescale(mask.astype(np.uint8), scale, nearest=True).astype(bool) if mask is not None else small > 0
        samples.append(Sample(pair.stem, rescale(image, scale, nearest=False), small, fg, labels.shape, labels))
    return samples
