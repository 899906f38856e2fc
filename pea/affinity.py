"""The N-dimensional core of PEA: offsets, affinity targets, class-balanced weights,
embedding-to-affinity, the affinity loss, pyramid labels and EM border widening
(docs/method.md sections 3 and 4).

Convention (as elf and waterz): channel c of an affinity map holds, at pixel p, the affinity
between p and p + offsets[c]. Where p + offsets[c] lies outside the image the loss mask is 0.
Everything works for any number of spatial dimensions and for batches: labels are
(B, *spatial) integer tensors, affinities (B, C, *spatial).

Background (label 0) follows one of two target rules, chosen by the config (LOSS.background):
- ``same``: two background pixels count as one object (target 1), a background pixel and an
  object pixel as different (0). Leaves and nuclei on a background (CVPPP, BBBC039V1).
- ``none``: background is affine to nothing, not even to other background (target 0 for every
  pair that touches it). EM membranes (AC3/AC4), as the authors' 3D seg_to_aff, which
  multiplies the equality by seg > 0; otherwise the whole membrane network would be taught
  to be one object.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from pea.errors import PEAInputError

Offset = tuple[int, ...]

# The 12 offsets of AC3/AC4 (z, y, x): per group the z, y and x neighbours at growing range.
EM_OFFSETS: list[Offset] = [
    (-1, 0, 0), (0, -1, 0), (0, 0, -1),
    (-2, 0, 0), (0, -3, 0), (0, 0, -3),
    (-3, 0, 0), (0, -9, 0), (0, 0, -9),
    (-4, 0, 0), (0, -27, 0), (0, 0, -27),
]


def offsets_from_shifts(shifts: Sequence[int], neighbor: int = 4) -> list[Offset]:
    """2D offsets grouped by shift, shortest first: (-s,0), (0,-s) [, (-s,-s), (-s,s) for 8]."""
    if neighbor not in (4, 8):
        raise PEAInputError(f"DATA.neighbor must be 4 or 8, got {neighbor}")
    offsets: list[Offset] = []
    for s in shifts:
        offsets += [(-s, 0), (0, -s)]
        if neighbor == 8:
            offsets += [(-s, -s), (-s, s)]
    return offsets


def _pair_slices(offset: Offset, shape: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices selecting the pixels p (first) and p + offset (second) that both lie inside."""
    src, dst = [], []
    for o, n in zip(offset, shape):
        if o >= 0:
            src.append(slice(0, max(n - o, 0)))
            dst.append(slice(min(o, n), n))
        else:
            src.append(slice(min(-o, n), n))
            dst.append(slice(0, max(n + o, 0)))
    return tuple(src), tuple(dst)


def pair_target(labels: torch.Tensor, offset: Offset,
                background: str = "same") -> tuple[tuple[slice, ...], tuple[slice, ...], torch.Tensor]:
    """For one offset: the slices of p and p + o inside the image and the boolean target on
    them, shape (B, *valid): True where label(p) == label(p+o); with background ``none``
    also label(p) != 0 (see the module docstring)."""
    shape = labels.shape[1:]
    if len(offset) != len(shape):
        raise PEAInputError(f"offset {offset} does not fit labels of spatial shape {tuple(shape)}")
    p, q = _pair_slices(offset, shape)
    every = (slice(None),)
    first = labels[every + p]
    same = first == labels[every + q]
    return p, q, same if background == "same" else same & (first != 0)


def affinity_targets(labels: torch.Tensor, offsets: Sequence[Offset],
                     background: str = "same") -> tuple[torch.Tensor, torch.Tensor]:
    """Full-size targets and loss masks (0 where p + o lies outside): the ideal affinities of
    a label image. labels: (B, *spatial) integer tensor. Returns two float tensors
    (B, C, *spatial)."""
    shape = labels.shape[1:]
    target = labels.new_zeros((labels.shape[0], len(offsets), *shape), dtype=torch.float32)
    mask = torch.zeros_like(target)
    for c, off in enumerate(offsets):
        p, _, t = pair_target(labels, off, background)
        target[(slice(None), c) + p] = t.float()
        mask[(slice(None), c) + p] = 1.0
    return target, mask


def fraction_of_ones(t: torch.Tensor, total: int | None = None, outside: str = "ignore",
                     foreground: torch.Tensor | None = None) -> torch.Tensor:
    """Per sample, the fraction of True in a boolean (B, ...) target of the valid pairs.

    `outside` says how the `total - valid` pairs whose partner lies outside count (docs/method.md
    section 4): ``ignore`` leaves them out (the fraction of the valid pairs), ``one`` / ``zero``
    count them as ones / zeros among `total` pairs (the authors' 2D / 3D weights), and
    ``foreground`` counts as ones those whose own pixel is foreground, `foreground` of them per
    sample (the authors' 3D pyramid targets, whose first section, row or column holds label > 0)."""
    ones = t.flatten(1).sum(1).float()
    valid = t[0].numel()
    if outside == "ignore" or total is None:
        return ones / max(1, valid)
    if outside == "one":
        ones = ones + (total - valid)
    elif outside == "foreground":
        ones = ones + foreground
    return ones / max(1, total)


def class_weights(f: torch.Tensor, clip: Sequence[float] = (0.05, 0.99)) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights of ones and of zeros from the fraction of ones f (docs/method.md section 4):
    f is clipped; if f > 0.5 ones weigh 1 and zeros f/(1-f), otherwise ones (1-f)/f, zeros 1."""
    f = f.clamp(clip[0], clip[1])
    one = torch.ones_like(f)
    return torch.where(f > 0.5, one, (1 - f) / f), torch.where(f > 0.5, f / (1 - f), one)


def embedding_affinity(emb: torch.Tensor, offsets: Sequence[Offset], other: torch.Tensor | None = None) -> torch.Tensor:
    """Affinity_o(p) = <e(p), e'(p+o)> of L2-normalised embeddings (cosine similarity).

    emb: (B, D, *spatial). `other` is the second view's embedding for cross-correlation
    (self-correlation when None). Pixels whose partner lies outside get 0.
    """
    e1 = F.normalize(emb, p=2, dim=1)
    e2 = e1 if other is None else F.normalize(other, p=2, dim=1)
    shape = emb.shape[2:]
    out = emb.new_zeros((emb.shape[0], len(offsets), *shape))
    for c, off in enumerate(offsets):
        p, q = _pair_slices(off, shape)
        out[(slice(None), c) + p] = (e1[(slice(None), slice(None)) + p] * e2[(slice(None), slice(None)) + q]).sum(1)
    return out


def loss_normalizer(labels: torch.Tensor, normalize: str = "mean", target: torch.Tensor | None = None) -> int:
    """What a level's summed squared error is divided by (docs/method.md section 4): batch x
    pixels (``mean``, a per-pixel mean) or batch x the last axis (``width``, the authors' 2D
    WeightedMSE on (B, H, W): H times the per-pixel mean); with ``pairs`` each offset's sum is
    divided by batch x its pairs inside the image, the size of its `target` (the authors' 3D
    WeightedMSE per channel)."""
    if normalize == "pairs":
        return target.numel()
    if normalize == "width":
        return labels.shape[0] * labels.shape[-1]
    return labels.numel()


def _foreground(labels: torch.Tensor, where: tuple[slice, ...] = ()) -> torch.Tensor:
    """Per sample, the foreground (non-zero) pixels of labels[:, where]."""
    return (labels[(slice(None),) + where] != 0).flatten(1).sum(1).float()


def affinity_loss(emb: torch.Tensor, labels: torch.Tensor, offsets: Sequence[Offset],
                  clip: Sequence[float] = (0.05, 0.99), other: torch.Tensor | None = None,
                  background: str = "same", normalize: str = "mean", outside: str = "ignore") -> torch.Tensor:
    """The weighted MSE between embedding affinities and targets, summed over offsets:
    sum(w * mask * (aff - target)^2) / `loss_normalizer` (``pairs``: each offset's sum by its
    own). Class weights from the fraction of ones with out-of-image pairs counted as `outside`
    says (`fraction_of_ones`). Computed on the valid pairs of each offset only, so no
    full-size target, mask or affinity maps are built."""
    e1 = F.normalize(emb, p=2, dim=1)
    e2 = e1 if other is None else F.normalize(other, p=2, dim=1)
    total = emb.new_zeros(())
    every = (slice(None), slice(None))
    pixels = labels[0].numel()
    per_offset = normalize == "pairs"
    foreground = _foreground(labels) if outside == "foreground" else None
    for off in offsets:
        p, q, t = pair_target(labels, off, background)
        if t.numel() == 0:
            continue
        leaving = None if foreground is None else foreground - _foreground(labels, p)
        w_one, w_zero = class_weights(fraction_of_ones(t, pixels, outside, leaving), clip)
        view = (-1,) + (1,) * (t.ndim - 1)
        aff = (e1[every + p] * e2[every + q]).sum(1)
        err = torch.where(t, aff - 1, aff)
        term = (torch.where(t, w_one.view(view), w_zero.view(view)) * err * err).sum()
        total = total + (term / loss_normalizer(labels, normalize, t) if per_offset else term)
    return total if per_offset else total / loss_normalizer(labels, normalize)


def nearest_downsample(labels: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resampling of (B, *spatial) labels to `shape` (index floor(i * n / m))."""
    out = labels
    for d, (n, m) in enumerate(zip(labels.shape[1:], shape)):
        if n != m:
            idx = torch.div(torch.arange(m, device=labels.device) * n, m, rounding_mode="floor")
            out = out.index_select(d + 1, idx)
    return out


def widen_border(labels: np.ndarray) -> np.ndarray:
    """EM border widening (Lee et al. 2017): a voxel whose in-plane 3x3 window holds more
    than one non-zero id becomes background. labels: (z, y, x) or (y, x)."""
    size = (1,) * (labels.ndim - 2) + (3, 3)
    big = np.iinfo(labels.dtype).max if np.issubdtype(labels.dtype, np.integer) else np.inf
    hi = ndimage.maximum_filter(labels, size=size, mode="nearest")
    lo = ndimage.minimum_filter(np.where(labels == 0, big, labels), size=size, mode="nearest")
    out = labels.copy()
    out[(hi != lo) & (hi > 0) & (lo != big)] = 0
    return out
