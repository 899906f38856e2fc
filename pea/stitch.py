"""Blockwise Mutex Watershed: each block segmented with a halo, segments stitched by overlap.

The Mutex Watershed's decisions near a block face depend on the affinities on both sides of
it. So each block is segmented as the block grown by a halo (`mutex_box`; by default twice
the offsets' reach, its start moved down to a multiple of TEST.strides so that the long-range
edges kept are those of the whole volume's grid) and keeps the segments' part inside the
block as its fragments (`block_mutex`). The grown part says how the block's segments continue
across its faces; it is trusted near the faces only (far out, the grown block's own border
is near): `overlaps` counts, on the voxels outside the block but within `depth` (by default
half the halo) of it, how many of each of its segments u fall on each fragment v of the
neighbouring blocks. `stitch` joins two fragments a and b of different blocks when each side
agrees: most of a's extension into b's block lies on b, and most of b's extension into a's
block lies on a,

    o(a -> b) > threshold * h(a, block of b)   and   o(b -> a) > threshold * h(b, block of a)

with o the overlaps and h(u, B) the voxels of u's extension into block B (threshold 0.5: a
strict majority). Joined fragments are one segment (connected components). Segments away
from the faces are the grown blocks' own Mutex Watershed segments.
"""
from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

from pea.affinity import Offset
from pea.regiongraph import merge_edges, pack, unpack

Box = tuple[slice, ...]


def reach(offsets: Sequence[Offset]) -> tuple[int, ...]:
    """The largest |offset| along each axis."""
    return tuple(int(np.abs(np.asarray(offsets))[:, d].max()) for d in range(len(offsets[0])))


def default_halo(offsets: Sequence[Offset]) -> tuple[int, ...]:
    """Twice the offsets' reach along each axis."""
    return tuple(2 * r for r in reach(offsets))


def block_boxes(shape: Sequence[int], block: Sequence[int]) -> list[Box]:
    """The blocks tiling a volume of `shape`, the last axis fastest."""
    starts = itertools.product(*[range(0, n, b) for n, b in zip(shape, block)])
    return [tuple(slice(a, min(a + b, n)) for a, b, n in zip(s, block, shape)) for s in starts]


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


def overlaps(mine: np.ndarray, theirs: np.ndarray, inner: Box,
             depth: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Packed directed keys (u, v) and voxel counts of this block's segments `mine` (global
    ids over the grown box) on the neighbours' fragments `theirs` (global ids, same box),
    counted outside the block `inner` but within `depth` voxels of it along each axis."""
    near = tuple(slice(max(0, b.start - d), b.stop + d) for b, d in zip(inner, depth))
    outside = np.zeros(mine.shape, dtype=bool)
    outside[near] = True
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
    """Each node's segment (1..N; 0 for node 0) after joining the fragments that both agree
    to join (module docstring); `keys`/`counts` are the summed directed overlaps of every
    block, `first_ids[b]` the id before block b's first fragment."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from skimage.segmentation import relabel_sequential

    uv = unpack(keys).astype(np.int64)
    u, v = uv[:, 0], uv[:, 1]
    groups, inverse = np.unique(pack(u, block_of(v, first_ids)), return_inverse=True)
    extent = np.bincount(inverse, weights=counts, minlength=groups.size)[inverse]
    pairs, inverse = np.unique(pack(np.minimum(u, v), np.maximum(u, v)), return_inverse=True)
    joined = np.bincount(inverse, weights=counts > threshold * extent) == 2  # both directions agree
    edges = unpack(pairs[joined]).astype(np.int64)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n_nodes, n_nodes))
    labels = connected_components(graph, directed=False)[1].astype(np.int64) + 1
    labels[0] = 0
    return relabel_sequential(labels)[0]


def mutex_blockwise(affs: np.ndarray, offsets: Sequence[Offset], block: Sequence[int], *,
                    strides: Sequence[int] | None = None, halo: Sequence[int] | None = None,
                    threshold: float = 0.5) -> np.ndarray:
    """The blockwise Mutex Watershed of affinities (C, *shape) held in memory, as the
    blockwise run computes it (blocks of `block`, `halo` default `default_halo`, overlaps
    within half the halo): segments 1..N."""
    shape = affs.shape[1:]
    halo = halo or default_halo(offsets)
    frags = np.zeros(shape, dtype=np.uint64)
    grown_labels, first_ids = [], [0]
    for box in block_boxes(shape, block):
        grown, inner = mutex_box(box, shape, halo, strides)
        local, labels = block_mutex(affs[(slice(None),) + grown], inner, offsets, strides)
        base = np.uint64(first_ids[-1])
        frags[box] = np.where(local > 0, local + base, 0)
        grown_labels.append((grown, inner, np.where(labels > 0, labels + base, 0)))
        first_ids.append(first_ids[-1] + int(local.max()))
    depth = [h // 2 for h in halo]
    parts = [overlaps(labels, frags[grown], inner, depth) for grown, inner, labels in grown_labels]
    keys, counts = merge_edges([(k, c[:, None]) for k, c in parts])
    table = stitch(first_ids[-1] + 1, keys, counts[:, 0], np.array(first_ids[:-1]), threshold)
    return table[frags.astype(np.int64)]
