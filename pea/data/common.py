"""What the readers share: the `Sample` record, padding, rescaling and the training dataset."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
from PIL import Image

from pea.errors import PEAInputError


@dataclass
class Sample:
    """One image (2D: (H, W, C) float32 in [0, 1]; 3D: (Z, Y, X, 1)) and what belongs to it.

    `labels`/`fg` are at the working resolution (after `scale`); `shape` is the original
    spatial shape, to which predictions are brought back for scoring and writing against
    `gt`, the labels at the original resolution.
    """

    name: str
    image: np.ndarray
    labels: np.ndarray | None = None
    fg: np.ndarray | None = None
    shape: tuple[int, ...] = field(default=())
    gt: np.ndarray | None = None


def read_rgb(path: Path) -> np.ndarray:
    """An 8-bit RGB image as float32 in [0, 1]."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, ValueError) as err:
        raise PEAInputError(f"{path}: cannot read image ({err})") from None


def read_mask(path: Path) -> np.ndarray:
    """A binary mask image: any non-zero pixel is foreground."""
    try:
        with Image.open(path) as img:
            arr = np.asarray(img)
    except (OSError, ValueError) as err:
        raise PEAInputError(f"{path}: cannot read mask ({err})") from None
    return (arr.reshape(arr.shape[:2] + (-1,)) > 0).any(-1)


def rescale(array: np.ndarray, scale: float, nearest: bool) -> np.ndarray:
    """Resize the two leading axes by `scale` (area for images, nearest for labels and masks)."""
    if scale == 1.0:
        return array
    h, w = array.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return resize(array, size[::-1], nearest=nearest, shrink=scale < 1)


def resize(array: np.ndarray, shape: Sequence[int], nearest: bool, shrink: bool = False) -> np.ndarray:
    """Resize the two leading axes to `shape` (h, w); labels keep their dtype."""
    size = (int(shape[1]), int(shape[0]))
    if nearest:
        dtype = array.dtype
        out = cv2.resize(array.astype(np.float32), size, interpolation=cv2.INTER_NEAREST)
        return out.astype(dtype)
    out = cv2.resize(array, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out.reshape(out.shape[:2] + array.shape[2:])


def crop_slices(shape: Sequence[int], padded: Sequence[int]) -> tuple[slice, ...]:
    """The slices of an image of `shape` inside its `pad_to` padding to `padded`."""
    if any(m < n for n, m in zip(shape, padded)):
        raise PEAInputError(f"cannot pad an image of shape {tuple(shape)} to {tuple(padded)}")
    return tuple(slice((m - n) // 2, (m - n) // 2 + n) for n, m in zip(shape, padded))


def pad_to(array: np.ndarray, shape: Sequence[int], mode: str = "reflect") -> tuple[np.ndarray, tuple[slice, ...]]:
    """Pad the leading axes to `shape` by reflection or with zeros (`mode` reflect | zero),
    split evenly (530x500 -> 544x544 pads 7 rows top and bottom, 22 columns left and right).
    Returns the padded array and the slices that crop it back (`crop_slices`)."""
    crop = crop_slices(array.shape[:len(shape)], shape)
    pads = [(c.start, m - c.stop) for c, m in zip(crop, shape)] + [(0, 0)] * (array.ndim - len(shape))
    return np.pad(array, pads, mode="reflect" if mode == "reflect" else "constant"), crop


def padded_shape(shape: Sequence[int], padded: Sequence[int] | None, multiple: int = 16) -> tuple[int, ...]:
    """The configured padded size where the image fits in it, else the next multiple of `multiple`."""
    padded = padded or [0] * len(shape)
    return tuple(int(p) if int(p) >= int(n) else -(-int(n) // multiple) * multiple for p, n in zip(padded, shape))


def read_list(path: Path) -> list[str]:
    """Non-empty lines of a text file."""
    if not path.is_file():
        raise PEAInputError(f"{path}: list file not found")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


class TrainDataset(torch.utils.data.Dataset):
    """Augmented random crops from in-memory samples. Item `index` is drawn from a random
    generator seeded with (seed, index), so a run resumed at iteration i sees the same data
    as an uninterrupted one (the trainer asks for indices i * batch, i * batch + 1, ...)."""

    def __init__(self, samples: Sequence[Sample], augment: Callable, normalize: Callable, seed: int):
        if not samples:
            raise PEAInputError("no training samples were found")
        self.samples, self.augment, self.normalize, self.seed = list(samples), augment, normalize, seed

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, index])
        sample = self.samples[rng.integers(len(self.samples))]
        image, labels = self.augment(sample.image, sample.labels, rng)
        image = self.normalize(image)
        x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, -1, 0)))
        return x, torch.from_numpy(np.ascontiguousarray(labels).astype(np.int64))


def build_train_dataset(cfg, samples: Sequence[Sample], augment: Callable) -> TrainDataset:
    """Random crops of the samples by `augment`, normalised as DATA.normalize says and drawn
    from TRAIN.seed."""
    from functools import partial

    from pea.augment import normalize

    return TrainDataset(samples, augment, partial(normalize, mode=cfg.DATA.normalize), cfg.TRAIN.seed)


def train_dataset_2d(cfg, samples: Sequence[Sample]) -> TrainDataset:
    """Random augmented crops of 2D training images (docs/method.md section 6)."""
    from pea.augment import Augment2D

    return build_train_dataset(cfg, samples, Augment2D(cfg.DATA))
