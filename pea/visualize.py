"""PNG panels for a person to look at: image | affinity | segmentation | ground truth."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pea.data.common import resize
from pea.io import atomic_write


def color_labels(labels: np.ndarray, seed: int = 7) -> np.ndarray:
    """(H, W) ids -> (H, W, 3) uint8, background black, a fixed random colour per id."""
    labels = np.asarray(labels, dtype=np.int64)
    ids, inverse = np.unique(labels, return_inverse=True)
    rng = np.random.default_rng(seed)
    palette = rng.integers(60, 256, size=(ids.size, 3), dtype=np.uint8)
    palette[ids == 0] = 0
    return palette[inverse.reshape(labels.shape)]


def _gray(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    lo, hi = np.percentile(image, [0.5, 99.5])
    image = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)
    image = (image * 255).astype(np.uint8)
    return np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image


def save_panel(path: str | Path, image: np.ndarray, middle: np.ndarray, seg: np.ndarray,
               gt: np.ndarray | None = None) -> None:
    """Write a side-by-side panel image | middle | segmentation | ground truth; `middle` is a
    map (H, W), e.g. one affinity channel, or a colour image (H, W, 3); everything is brought
    to the segmentation's size."""
    shape = seg.shape
    tiles = [_gray(resize(image, shape, nearest=False)), _gray(resize(middle, shape, nearest=False)),
             color_labels(seg)]
    if gt is not None:
        tiles.append(color_labels(gt))
    gap = np.full((shape[0], 4, 3), 255, np.uint8)
    row = [tiles[0]]
    for tile in tiles[1:]:
        row += [gap, tile]
    with atomic_write(path) as tmp:
        Image.fromarray(np.concatenate(row, axis=1)).save(tmp)
