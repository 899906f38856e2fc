"""Straightforward full-map references of the loss (docs/method.md section 4), written in
NumPy from the definitions, independent of `pea.affinity`'s valid-pair implementation."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def targets(labels: np.ndarray, offsets: Sequence[Sequence[int]], background: str = "same"):
    """Full-size targets and masks (B, C, *spatial): target 1 where label(p) == label(p + o)
    (and, with background 'none', label(p) != 0); mask 1 where p + o lies inside."""
    spatial = labels.shape[1:]
    index = np.indices(spatial)
    size = np.array(spatial).reshape((-1,) + (1,) * len(spatial))
    target = np.zeros((labels.shape[0], len(offsets)) + spatial)
    mask = np.zeros_like(target)
    for c, off in enumerate(offsets):
        partner = index + np.array(off).reshape((-1,) + (1,) * len(spatial))
        inside = ((partner >= 0) & (partner < size)).all(axis=0)
        other = labels[(slice(None),) + tuple(np.where(inside, partner, 0))]
        same = labels == other
        if background == "none":
            same &= labels != 0
        target[:, c] = same & inside
        mask[:, c] = inside
    return target, mask


def balanced_weights(target: np.ndarray, mask: np.ndarray, clip=(0.05, 0.99), outside=None,
                     labels: np.ndarray | None = None) -> np.ndarray:
    """Per sample and channel: f = fraction of ones among the masked pixels, or, with `outside`
    (0, 1 or "foreground"), among all pixels of the channel, those whose partner is outside
    holding that value, or with "foreground" label != 0 there (the authors' maps; replicate
    padding in 3D); clipped; if f > 0.5 ones weigh 1 and zeros f/(1-f), else ones (1-f)/f and
    zeros 1."""
    axes = tuple(range(2, target.ndim))
    if outside is None:
        f = (target * mask).sum(axes) / np.maximum(mask.sum(axes), 1)
    else:
        fill = (labels != 0)[:, None] if outside == "foreground" else outside
        f = np.where(mask > 0, target, fill).mean(axes)
    f = np.clip(f, *clip)
    w_one = np.where(f > 0.5, 1.0, (1 - f) / f)
    w_zero = np.where(f > 0.5, f / (1 - f), 1.0)
    view = f.shape + (1,) * len(axes)
    return np.where(target > 0.5, w_one.reshape(view), w_zero.reshape(view))


def affinities(emb: np.ndarray, offsets, other: np.ndarray | None = None) -> np.ndarray:
    """Cosine similarity of emb at p and other (or emb) at p + o; 0 where p + o is outside."""
    a = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    b = a if other is None else other / np.linalg.norm(other, axis=1, keepdims=True)
    spatial = emb.shape[2:]
    index = np.indices(spatial)
    size = np.array(spatial).reshape((-1,) + (1,) * len(spatial))
    out = np.zeros((emb.shape[0], len(offsets)) + spatial)
    for c, off in enumerate(offsets):
        partner = index + np.array(off).reshape((-1,) + (1,) * len(spatial))
        inside = ((partner >= 0) & (partner < size)).all(axis=0)
        moved = b[(slice(None), slice(None)) + tuple(np.where(inside, partner, 0))]
        out[:, c] = np.where(inside, (a * moved).sum(1), 0.0)
    return out


def weighted_mse(aff, target, mask, weight, normalize="mean") -> float:
    """sum(w * (aff * mask - target * mask)^2) / (batch * pixels), or with normalize 'width'
    / (batch * width): the authors' WeightedMSE on one (B, H, W) channel divides by B * W; with
    'pairs' each channel's sum / (batch * its pairs inside), channels summed (the authors' 3D)."""
    sq = weight * (aff * mask - target * mask) ** 2
    if normalize == "pairs":
        channels = sq.sum(axis=tuple(k for k in range(sq.ndim) if k != 1))
        pairs = mask.sum(axis=tuple(k for k in range(mask.ndim) if k != 1))
        return float((channels[pairs > 0] / pairs[pairs > 0]).sum())
    norm = target.shape[0] * (target.shape[-1] if normalize == "width" else np.prod(target.shape[2:]))
    return float(sq.sum() / norm)


def level_loss(emb, labels, offsets, other=None, background="same", clip=(0.05, 0.99), normalize="mean",
               outside=None) -> float:
    """The affinity loss of one embedding against its labels."""
    t, m = targets(labels, offsets, background)
    w = balanced_weights(t, m, clip, outside, labels)
    return weighted_mse(affinities(emb, offsets, other), t, m, w, normalize)


def nearest(labels: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resampling: output index i takes input index floor(i * n / m)."""
    grids = [np.arange(m) * n // m for n, m in zip(labels.shape[1:], shape)]
    return labels[(slice(None),) + np.ix_(*grids)]
