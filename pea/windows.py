"""Sliding-window affinities of any box of a volume, equal to those of the whole volume.

Whole-volume inference (docs/method.md section 7) evaluates a fixed grid of windows and blends
their outputs: `gaussian` (the authors': the volume reflect-padded by TEST.context, Gaussian
weights, the unit-step channels' first plane filled) or `ramp` (the project's: separable linear
ramps, an affinity counts only from windows that hold both of its voxels). `WindowGrid` is
that grid. The affinities of a box (`WindowGrid.blend`) come from exactly the windows of the
grid that touch the box, evaluated on the same input and accumulated in the same order, so a
box's affinities equal the whole volume's there bit for bit (`pea.inference.predict_windows`
is the box that is the whole volume). The price is that a window straddling two boxes is
evaluated for each of them: with boxes of B voxels along an axis and windows at stride S, about
(B + W - S) / B windows per owned window per axis (`WindowGrid.cost`).

The input is read once per box, as the bounding box of its windows, from any array that
slices (numpy, h5py, zarr): reflect padding is an index map into the volume, not a copy of it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from pea.affinity import Offset, embedding_affinity

Box = tuple[slice, ...]


def starts(n: int, window: int, overlap: int) -> list[int]:
    """Window starts covering [0, n) with at least `overlap` between neighbours."""
    if window >= n:
        return [0]
    step = max(1, window - overlap)
    return sorted(set(list(range(0, n - window, step)) + [n - window]))


def ramp_profile(n: int, overlap: int) -> np.ndarray:
    """Blending weights along one window axis: a linear ramp over the overlap, never 0."""
    i = np.arange(n, dtype=np.float64)
    ramp = max(1, overlap)
    return np.clip(np.minimum(i + 1, n - i) / (ramp + 1), 1.0 / (ramp + 1), 1.0)


def axis_valid(o: int, w: int) -> np.ndarray:
    """1 where the partner i + o of window position i lies inside the window."""
    i = np.arange(w)
    return ((i + o >= 0) & (i + o < w)).astype(np.float64)


def gaussian_weight(window: Sequence[int], sigma: float = 0.2) -> np.ndarray:
    """The authors' window weight: 1e-6 + exp(-d^2 / (2 sigma^2)), d the distance from the
    centre on a grid running from -1 to 1 along every axis (docs/method.md section 7)."""
    grids = np.meshgrid(*[np.linspace(-1, 1, int(w), dtype=np.float32) for w in window], indexing="ij")
    dist = np.sqrt(sum(g * g for g in grids))
    return (1e-6 + np.exp(-(dist ** 2) / np.float32(2.0 * sigma ** 2))).astype(np.float32)


def fill_first_plane(affs: torch.Tensor, offsets: Sequence[Offset]) -> torch.Tensor:
    """For each unit-step offset (-1 along one axis), its first plane along that axis, where
    the partner lies outside, takes the values of the second plane (the authors' windows)."""
    for c, off in enumerate(offsets):
        axes = [a for a, o in enumerate(off) if o]
        if len(axes) == 1 and off[axes[0]] == -1 and affs.shape[axes[0] + 1] > 1:
            affs[c].narrow(axes[0], 0, 1).copy_(affs[c].narrow(axes[0], 1, 1))
    return affs


def _along(vector: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    return vector.reshape([-1 if k == axis else 1 for k in range(ndim)])


def reflect_index(index: np.ndarray, n: int) -> np.ndarray:
    """Volume indices of positions of a reflect-padded axis (numpy's `reflect`, any depth)."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    index = np.mod(index, period)
    return np.where(index >= n, period - index, index)


def read_reflected(volume, box: Sequence[tuple[int, int]]) -> np.ndarray:
    """volume[box] for a box that may reach past the volume (reflected back into it), read
    as one bounding slab of `volume` (any sliceable array) and re-indexed."""
    shape = volume.shape[: len(box)]
    index = [reflect_index(np.arange(a, b), n) for (a, b), n in zip(box, shape)]
    slab = np.asarray(volume[tuple(slice(int(i.min()), int(i.max()) + 1) for i in index)])
    return slab[np.ix_(*[i - i.min() for i in index])]


@dataclass(frozen=True)
class WindowGrid:
    """The sliding windows of whole-volume inference over a volume of spatial `shape`.

    Window starts are in padded coordinates: volume coordinates + `context` (0 for `ramp`).
    """

    shape: tuple[int, ...]
    offsets: tuple[Offset, ...]
    window: tuple[int, ...]
    overlap: tuple[int, ...]
    context: tuple[int, ...]
    mode: str
    starts: tuple[tuple[int, ...], ...]

    @classmethod
    def create(cls, shape: Sequence[int], offsets: Sequence[Offset], window: Sequence[int],
               overlap: Sequence[int], blend: str = "ramp", context: Sequence[int] | None = None) -> "WindowGrid":
        if blend not in ("ramp", "gaussian"):
            raise ValueError(f"unknown window blending {blend!r} (ramp, gaussian)")
        shape = tuple(int(n) for n in shape)
        context = tuple(int(c) for c in (context or [0] * len(shape))) if blend == "gaussian" else (0,) * len(shape)
        padded = [n + 2 * c for n, c in zip(shape, context)]
        window = tuple(min(int(w), n) for w, n in zip(window, padded))
        overlap = tuple(int(o) for o in overlap)
        grid = tuple(tuple(starts(n, w, o)) for n, w, o in zip(padded, window, overlap))
        return cls(shape, tuple(tuple(o) for o in offsets), window, overlap, context, blend, grid)

    def touching(self, box: Box) -> list[list[int]]:
        """Per axis, the window starts whose window overlaps `box` (volume coordinates)."""
        return [[s for s in st if s < b.stop + c and s + w > b.start + c]
                for st, b, w, c in zip(self.starts, box, self.window, self.context)]

    def cost(self, block: Sequence[int]) -> float:
        """Windows evaluated by boxes of shape `block` tiling the volume, per window of the grid."""
        ratio = 1.0
        for n, b, st, w, c in zip(self.shape, block, self.starts, self.window, self.context):
            evaluated = sum(sum(1 for s in st if s < min(a + b, n) + c and s + w > a + c) for a in range(0, n, b))
            ratio *= evaluated / len(st)
        return ratio

    def _ramp_weight(self) -> tuple[np.ndarray, list[np.ndarray]]:
        profiles = [ramp_profile(w, o) for w, o in zip(self.window, self.overlap)]
        weight = np.ones(self.window, dtype=np.float32)
        for d, p in enumerate(profiles):
            weight *= _along(p, d, len(self.window)).astype(np.float32)
        valid = np.ones((len(self.offsets),) + self.window, dtype=np.float32)
        for c, off in enumerate(self.offsets):
            for d, (o, w) in enumerate(zip(off, self.window)):
                valid[c] *= _along(axis_valid(o, w), d, len(self.window)).astype(np.float32)
        return valid * weight, profiles

    def _ramp_norm(self, box: Box, profiles: list[np.ndarray]) -> np.ndarray:
        """(C, *box) summed ramp weights of the windows holding both voxels of each pair."""
        out = []
        for off in self.offsets:
            norm = np.ones((), dtype=np.float64)
            for d, (n, w, o, st, b) in enumerate(zip(self.shape, self.window, off, self.starts, box)):
                axis_sum = np.zeros(n)
                ok = profiles[d] * axis_valid(o, w)
                for s in st:
                    axis_sum[s: s + w] += ok
                norm = np.multiply.outer(norm, axis_sum[b])
            out.append(np.where(norm > 0, norm, 1.0).astype(np.float32))
        return np.stack(out)

    @torch.no_grad()
    def blend(self, forward: Callable[[torch.Tensor], dict], volume, box: Box,
              to_input: Callable[[np.ndarray], torch.Tensor], progress: Callable = lambda it: it,
              batch: int = 1) -> np.ndarray:
        """Affinities (C, *box) of `box` of `volume` ((*shape, C_in), any sliceable array), blended
        on the device `to_input` puts windows on; `forward` is the network (or a wrapper of it
        returning its output dict), run on `batch` windows at once; `to_input` turns a window's
        input (*window, C_in) into the network's (1, C_in, *window)."""
        box = tuple(slice(*b.indices(n)[:2]) for b, n in zip(box, self.shape))
        near = self.touching(box)
        read = [(st[0], st[-1] + w) for st, w in zip(near, self.window)]
        data = read_reflected(volume, [(a - c, b - c) for (a, b), c in zip(read, self.context)])
        grid = np.stack(np.meshgrid(*near, indexing="ij"), -1).reshape(-1, len(self.window))
        gaussian = self.mode == "gaussian"
        out = total = weight = None
        for first in progress(range(0, len(grid), batch)):
            starts_ = grid[first:first + batch]
            windows = [tuple(slice(s - r[0], s - r[0] + w) for s, r, w in zip(start, read, self.window))
                       for start in starts_]
            x = torch.cat([to_input(data[window]) for window in windows])
            if out is None:  # on the windows' device
                out = torch.zeros((len(self.offsets),) + tuple(b.stop - b.start for b in box), device=x.device)
                weight = torch.from_numpy(gaussian_weight(self.window) if gaussian else self._ramp_weight()[0])
                weight = weight.to(x.device)
                total = torch.zeros(out.shape[1:], device=x.device) if gaussian else None
            for start, affs in zip(starts_, embedding_affinity(forward(x)["embeddings"][0], self.offsets)):
                affs = torch.relu(fill_first_plane(affs, self.offsets) if gaussian else affs) * weight
                # the part of the window inside the box, in window and in box coordinates
                lo = [max(s, b.start + c) for s, b, c in zip(start, box, self.context)]
                hi = [min(s + w, b.stop + c) for s, w, b, c in zip(start, self.window, box, self.context)]
                src = tuple(slice(a - s, z - s) for a, z, s in zip(lo, hi, start))
                dst = tuple(slice(a - b.start - c, z - b.start - c) for a, z, b, c in zip(lo, hi, box, self.context))
                out[(slice(None),) + dst] += affs[(slice(None),) + src]
                if gaussian:
                    total[dst] += weight[src]
        if gaussian:
            return (out / total).cpu().numpy()
        return (out / torch.from_numpy(self._ramp_norm(box, self._ramp_weight()[1])).to(out.device)).cpu().numpy()

