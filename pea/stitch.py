"""Blockwise Mutex Watershed: each block segmented with a halo, segments stitched by overlap.

The Mutex Watershed's decisions near a block face depend on the affinities on both sides of
it. So each block is segmented as the block grown by a halo (`mutex_box`, by default the
offsets' reach, its start moved down to a multiple of TEST.strides so that the long-range
edges kept are those of the whole volume's grid) and keeps the segments' part inside the
block as its fragments (`block_mutex`). The grown part, where the block saw its neighbours'
voxels, says how its segments continue across the faces: `overlaps` counts, on the voxels
outside the block, how many of each segment u of this block fall on each fragment v of the
neighbours. `stitch` joins two fragments a and b of different blocks when their overlaps,
counted from both sides, hold more than `threshold` of what each side's segment extends into
the other's block:

    (o(a -> b) + o(b -> a)) > threshold * (h(a, block of b) + h(b, block of a))

with h(u, B) the voxels of u's extension into block B. Joined fragments are one segment
(connected components). Segments far from every face are the grown block's own Mutex
Watershed segments; near faces both sides saw the same affinities, so they mostly agree.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from pea.affinity import Offset
from pea.regiongraph import pack, unpack

Box = tuple[slice, ...]


def reach(offsets: Sequence[Offset]) -> tuple[int, ...]:
    """The largest |offset| along each axis."""
    return tuple(int(np.abs(np.asarray(offsets))[:, d].max()) for d in range(len(offsets[0])))


def mutex_box(box: Box, shape: Sequence[int], halo: Sequence[int],
              strides: Sequence[int] | None = None) -> tuple[Box, Box]:
    """The block `box` grown by `halo` (its start rounded down to a multiple of `strides`),
    cut at the volume's border, and the block inside it."""
    strides = strides or [1] * len(box)
    lo = [max(0, b.start - h) // s * s for b, h, s in zip(box, halo, strides)]
    hi = [min(n, b.stop + h) for b, h, n in zip(box, halo, shape)]
    return (tuple(slice(a, z) for a, z in zip(lo, hi)),
            tuple(slice(b.start - a, b.stop - a) for b, a in zip(box, lo)))


def block_mutex(affs: np.ndarray, inner: Box, offsets: Sequence[Offset],
                strides: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mutex Watershed of a grown block's affinities (C, *grown): the block's fragments 1..n
    (the segments' part in `inner`), and the grown block labelled with those ids (0 where a
    segment does not reach into the block)."""
    from pea.postprocess import mutex_watershed

    seg = mutex_watershed(affs, offsets, strides)
    core = seg[inner]
    table = np.zeros(int(seg.max()) + 1, dtype=np.uint64)
    present = np.unique(core)
    table[present] = np.arange(1, present.size + 1, dtype=np.uint64)
    return table[core], table[seg]


def overlaps(mine: np.ndarray, theirs: np.ndarray, inner: Box) -> tuple[np.ndarray, np.ndarray]:
    """Packed directed keys (u, v) and voxel counts of this block's segments `mine` (global
    ids over the grown box) on the neighbours' fragments `theirs` (global ids, same box),
    counted outside `inner`."""
    outside = np.ones(mine.shape, dtype=bool)
    outside[inner] = False
    u, v = mine[outside], theirs[outside]
    keep = (u > 0) & (v > 0)
    keys, counts = np.unique(pack(u[keep], v[keep]), return_counts=True)
    return keys, counts.astype(np.float64)


def block_of(ids: np.ndarray, first_ids: np.ndarray) -> np.ndarray:
    """The block of each global fragment id (block b holds first_ids[b] + 1 ...)."""
    return np.searchsorted(first_ids, ids, side="left") - 1


def stitch(n_nodes: int, keys: np.ndarray, counts: np.ndarray, first_ids: np.ndarray,
           threshold: float = 0.5) -> np.ndarray:
    """Each node's segment (1..N; 0 for node 0) after joining the fragments whose two-sided
    overlap passes `threshold` (module docstring); `keys`/`counts` are the summed directed
    overlaps of every block."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from skimage.segmentation import relabel_sequential

    uv = unpack(keys).astype(np.int64)
    u, v = uv[:, 0], uv[:, 1]
    groups, inverse = np.unique(pack(u, block_of(v, first_ids)), return_inverse=True)
    extent = np.bincount(inverse, weights=counts, minlength=groups.size)[inverse]
    pairs, inverse = np.unique(pack(np.minimum(u, v), np.maximum(u, v)), return_inverse=True)
    joined = np.bincount(inverse, weights=counts) > threshold * np.bincount(inverse, weights=extent)
    edges = unpack(pairs[joined]).astype(np.int64)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n_nodes, n_nodes))
    labels = connected_components(graph, directed=False)[1].astype(np.int64) + 1
    labels[0] = 0
    return relabel_sequential(labels)[0]
