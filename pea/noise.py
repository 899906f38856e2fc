"""Smooth random fields for the look-alike data generators and the EM augmentations."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def _upsample(field: np.ndarray, axis: int, step: int, size: int) -> np.ndarray:
    """Linear interpolation along `axis` onto a grid `step` times finer, first `size` samples."""
    pos = np.arange(size) / step
    low = pos.astype(np.intp)
    frac = (pos - low).astype(np.float32).reshape((-1,) + (1,) * (field.ndim - axis - 1))
    below = np.take(field, low, axis)
    return below + (np.take(field, low + 1, axis) - below) * frac


def smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma: float | Sequence[float]) -> np.ndarray:
    """Gaussian-filtered white noise (float32, `shape`) rescaled to zero mean and unit standard deviation.

    `sigma` in pixels, one value or one per axis (0: no smoothing along that axis); the filter
    reflects at the borders. An axis with sigma >= 3 is filtered on a grid `sigma // 1.5` times
    coarser and linearly upsampled (far cheaper, hardly different).
    """
    sigma = np.broadcast_to(np.asarray(sigma, np.float64), (len(shape),))
    step = np.maximum(1, sigma // 1.5).astype(int)
    coarse = tuple(-(-np.asarray(shape) // step) + (step > 1))
    field = ndimage.gaussian_filter(rng.standard_normal(coarse, dtype=np.float32), sigma / step,
                                    mode="reflect", truncate=3.0)
    for axis in np.flatnonzero(step > 1):
        field = _upsample(field, int(axis), int(step[axis]), int(shape[axis]))
    field -= field.mean()
    return field / max(float(field.std()), 1e-6)
