"""BBBC039V1 reader (docs/method.md section 9): images/NAME.tif (16-bit grayscale),
label_instance/NAME.png (instance ids) and metadata/{training,validation,test}.txt naming the
images of each split (one NAME.png per line)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import tifffile

from pea import schema as S
from pea.augment import AUGMENT_2D_KEYS
from pea.augment_em import CHAIN_KEYS, ChainCrop
from pea.config import register_reader
from pea.data.common import Sample, read_list, rescale
from pea.data.common import build_train_dataset, train_dataset_2d
from pea.errors import PEAInputError
from pea.io import read_labels
from pea.schema import Key

DATASET_NAME = "bbbc039v1"
SPLIT_FILES = {"train": "training.txt", "validation": "validation.txt", "test": "test.txt"}
NAME_SUFFIXES = (".png", ".tif", ".tiff")
VALID_SPLIT = "validation"
METRICS = ("aji", "dice", "pq")  # pq also gives dq (object F1 at IoU 0.5, shown as F1) and sq
SUBMISSIONS: dict = {}  # no challenge file
AUGMENTS = ("resized_crop", "chain")
DATA_KEYS = {
    "percentiles": Key([1.0, 99.8], S.sequence(S.number(0, 100), length=2),
                       "per image, these percentiles map to 0 and 1 ([0, 100]: min-max)"),
    "channels": Key(1, S.number(1, integer=True),
                    "the grey image repeated to this many input channels (the authors' network: 3)"),
    "augment": Key("resized_crop", S.choice(*AUGMENTS),
                   "training crops: resized_crop (pea.augment.Augment2D and its keys) | chain (the authors': "
                   "pea.augment_em.ChainCrop, the em_augment* keys, augment_margin, augment_pad)"),
    **AUGMENT_2D_KEYS,
    **CHAIN_KEYS,
    "augment_margin": Key([30, 30], S.sequence(S.number(0, integer=True), length=2),
                          "chain: context around the crop (the authors' pad 30, crop 316)"),
}
register_reader(DATASET_NAME, DATA_KEYS)


def split_names(data_dir: str | Path, split: str) -> list[str]:
    """Image names of a split, from metadata/<split>.txt with the file extension stripped."""
    if split not in SPLIT_FILES:
        raise PEAInputError(f"unknown BBBC039V1 split '{split}' (use one of {', '.join(SPLIT_FILES)})")
    return [_strip_suffix(n) for n in read_list(Path(data_dir) / "metadata" / SPLIT_FILES[split])]


def _strip_suffix(name: str) -> str:
    suffix = Path(name).suffix
    return name[: -len(suffix)] if suffix.lower() in NAME_SUFFIXES else name


def percentile_normalize(image: np.ndarray, percentiles: Sequence[float]) -> np.ndarray:
    """Map the low/high percentiles of an image to 0 and 1 (clipped): float32 in [0, 1]."""
    lo, hi = np.percentile(image, [float(p) for p in percentiles])
    out = (image.astype(np.float32) - np.float32(lo)) / np.float32(max(hi - lo, 1e-6))
    return np.clip(out, 0.0, 1.0)


def read_image(path: Path, percentiles: Sequence[float]) -> np.ndarray:
    """A grayscale TIFF as (H, W, 1) float32 in [0, 1], percentile-normalised."""
    if not path.is_file():
        raise PEAInputError(f"{path}: image not found")
    try:
        image = tifffile.imread(path)
    except (tifffile.TiffFileError, OSError, ValueError) as err:
        raise PEAInputError(f"{path}: cannot read TIFF image ({err})") from None
    image = np.squeeze(image)
    if image.ndim != 2:
        raise PEAInputError(f"{path}: expected one grayscale channel, got shape {image.shape}")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise PEAInputError(f"{path}: the image holds NaN or infinite pixels")
    return percentile_normalize(image, percentiles)[..., None]


def _check_percentiles(data_cfg) -> tuple[float, float]:
    if data_cfg["normalize"] not in ("percentile", "none"):
        raise PEAInputError(f"DATA.normalize: '{data_cfg['normalize']}' does not fit BBBC039V1's 16-bit grayscale "
                            f"images, which DATA.percentiles scales to [0, 1]; use 'percentile' (then "
                            f"(x - 0.5) / 0.25) or 'none' (the scaled image as it is)")
    p = data_cfg["percentiles"]
    if not (isinstance(p, (list, tuple)) and len(p) == 2 and 0 <= float(p[0]) < float(p[1]) <= 100):
        raise PEAInputError(f"DATA.percentiles: expected [low, high] with 0 <= low < high <= 100, got {p!r}")
    return float(p[0]), float(p[1])


def load_split(data_cfg, split: str) -> list[Sample]:
    """Read every image of a split (with its labels) at the configured scale.

    Training and validation images need labels; test images are scored when label_instance/
    holds all of their labels and only segmented when it holds none of them.
    """
    data_dir = Path(data_cfg["data_dir"])
    percentiles = _check_percentiles(data_cfg)
    scale = float(data_cfg["scale"])
    if not scale > 0:
        raise PEAInputError(f"DATA.scale: expected a positive factor, got {data_cfg['scale']!r}")
    names = split_names(data_dir, split)
    label_paths = [data_dir / "label_instance" / f"{n}.png" for n in names]
    present = [p.is_file() for p in label_paths]
    if split == "test" and not any(present):
        label_paths = [None] * len(names)
    elif not all(present):
        raise PEAInputError(f"{label_paths[present.index(False)]}: label image not found")
    samples = []
    for name, label_path in zip(names, label_paths):
        image_path = data_dir / "images" / f"{name}.tif"
        image = np.repeat(read_image(image_path, percentiles), int(data_cfg["channels"]), axis=-1)
        shape = image.shape[:2]
        gt = labels = fg = None
        if label_path is not None:
            gt = read_labels(str(label_path))
            if gt.ndim != 2:
                raise PEAInputError(f"{label_path}: expected a grayscale image of ids, got shape {gt.shape}")
            if gt.shape != shape:
                raise PEAInputError(f"{label_path}: shape {gt.shape} differs from the image {image_path} {shape}")
            gt = gt.astype(np.int32)
            labels = rescale(gt, scale, nearest=True)
            fg = labels > 0
        samples.append(Sample(name, rescale(image, scale, nearest=False), labels, fg, shape, gt))
    return samples


def train_dataset(cfg, samples: Sequence[Sample]):
    """Random augmented training crops, made as DATA.augment says (docs/method.md section 6;
    its value is checked with the config, DATA_KEYS)."""
    if cfg.DATA.augment == "chain":
        return build_train_dataset(cfg, samples, ChainCrop(cfg.DATA))
    return train_dataset_2d(cfg, samples)
