"""From affinities to instances: Mutex Watershed, waterz, multicut, small-object merging.

Affinities follow pea.affinity's convention (channel c links p and p + offsets[c]; 1 = same
object); 2D and 3D alike.
"""
from __future__ import annotations

import ctypes
import os
import sys
from contextlib import contextmanager
from typing import Sequence

import numpy as np
from scipy import ndimage
from skimage.segmentation import relabel_sequential

from pea.affinity import Offset


def mutex_watershed(affs: np.ndarray, offsets: Sequence[Offset], strides: Sequence[int] | None,
                    mask: np.ndarray | None = None) -> np.ndarray:
    """Mutex Watershed (elf) on affinities in [0, 1]; long-range edges subsampled by
    `strides` (None: every edge); pixels outside `mask` get 0."""
    from elf.segmentation.mutex_watershed import mutex_watershed as mws

    boundaries = np.ascontiguousarray(1.0 - affs, dtype=np.float32)  # elf wants boundary maps
    strides = list(strides) if strides else [1] * (affs.ndim - 1)
    seg = mws(boundaries, [list(o) for o in offsets], strides, mask=mask)
    if mask is not None:
        seg[~mask] = 0
    return relabel_sequential(seg.astype(np.uint64))[0]


def _contacts(seg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of different, touching ids (both orders) and their contact counts."""
    firsts, seconds = [], []
    for axis in range(seg.ndim):
        a = np.moveaxis(seg, axis, 0)
        lo, hi = a[:-1].ravel(), a[1:].ravel()
        diff = lo != hi
        firsts += [lo[diff], hi[diff]]
        seconds += [hi[diff], lo[diff]]
    first, second = np.concatenate(firsts), np.concatenate(seconds)
    pairs, counts = np.unique(np.stack([first, second], axis=1), axis=0, return_counts=True)
    return pairs[:, 0], pairs[:, 1], counts


def merge_small_objects(seg: np.ndarray, sizes: Sequence[int] = (5, 20, 50, 300)) -> np.ndarray:
    """In passes of growing size, give each object under the size the foreground label it
    touches most. Objects touching only background are kept. Ids are relabelled 1..N."""
    seg = relabel_sequential(np.asarray(seg).astype(np.int64))[0]
    for min_size in sizes:
        counts = np.bincount(seg.ravel())
        small = counts < min_size
        small[0] = False
        if not small.any():
            continue
        first, second, contact = _contacts(seg)
        keep = small[first] & (second != 0)
        first, second, contact = first[keep], second[keep], contact[keep]
        if first.size == 0:
            continue
        # the most-touched neighbour of each small object: sort by (object, contact)
        order = np.lexsort((contact, first))
        first, second = first[order], second[order]
        last = np.r_[first[1:] != first[:-1], True]
        target = np.arange(counts.size)
        target[first[last]] = second[last]
        # two small objects pointing at each other: the smaller id keeps its label
        ids = np.arange(target.size)
        mutual = (target[target] == ids) & (target > ids)
        target[mutual] = ids[mutual]
        for _ in range(int(np.ceil(np.log2(max(2, target.size)))) + 1):
            target = target[target]
        seg = target[seg]
    return relabel_sequential(seg)[0]


def _in_plane(ndim: int) -> np.ndarray:
    """Connectivity footprint linking only within a section (first axis z)."""
    foot = np.zeros((3,) * ndim, bool)
    foot[1] = ndimage.generate_binary_structure(ndim - 1, 1)
    return foot


@contextmanager
def _quiet_stdout():
    """waterz's C++ core prints its progress to the process's stdout: hide it meanwhile
    (C's stdio buffer is flushed before the stream is given back)."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            try:
                yield
            finally:
                libc.fflush(None)
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def fragments_3d(affs: np.ndarray) -> np.ndarray:
    """Over-segmentation of a volume into fragments (ids 1..N) that cover every voxel.

    waterz's watershed on the three nearest-neighbour affinities (z, y, x first) leaves
    out voxels whose affinities are all below 0.0001 (membranes, when background is affine
    to nothing); these are grown into the fragments beside them in their section by a
    watershed on the in-plane boundary map 1 - mean(y, x affinity). What no fragment
    reaches in its section becomes fragments of its in-plane connected components.
    """
    import waterz
    from skimage.segmentation import watershed

    nn = np.ascontiguousarray(affs[:3], dtype=np.float32)
    with _quiet_stdout():
        frags = np.asarray(next(iter(waterz.agglomerate(nn, thresholds=[0.0]))), dtype=np.int64)
    if (frags == 0).any():
        foot = _in_plane(frags.ndim)
        frags = watershed(1.0 - 0.5 * (nn[1] + nn[2]), frags, connectivity=foot)
        rest, _ = ndimage.label(frags == 0, structure=foot)
        frags = np.where(frags == 0, rest + frags.max(), frags)
    return relabel_sequential(frags.astype(np.uint64))[0]


# The paper's scoring function. waterz 0.10 treats EdgeStatisticValue<..., MeanAffinityProvider<...>>
# as an alias of MeanAffinity<RegionGraphType, ScoreValue> and ships it compiled, with queues of
# 0 and 256 bins: 1 - the mean affinity over all voxel pairs along a contact.
WATERZ_SCORE = "OneMinus<EdgeStatisticValue<RegionGraphType, MeanAffinityProvider<RegionGraphType, ScoreValue>>>"


def waterz_segment(affs: np.ndarray, threshold: float = 0.5, scoring_function: str = WATERZ_SCORE,
                   fragments: np.ndarray | None = None) -> np.ndarray:
    """waterz: `fragments_3d` (or the given fragments) agglomerated in order of mean
    affinity until the score 1 - mean affinity reaches `threshold` (a 256-bin queue, as in
    the paper's code). affs: (C >= 3, Z, Y, X) with the z, y, x nearest neighbours first."""
    import waterz

    nn = np.ascontiguousarray(affs[:3], dtype=np.float32)
    frags = fragments_3d(affs) if fragments is None else np.array(fragments, dtype=np.uint64)
    with _quiet_stdout():
        seg = next(iter(waterz.agglomerate(nn, thresholds=[threshold], fragments=frags,
                                           scoring_function=scoring_function, discretize_queue=256)))
    return relabel_sequential(np.asarray(seg, dtype=np.uint64))[0]


def multicut_segment(affs: np.ndarray, offsets: Sequence[Offset], beta: float = 0.5,
                     fragments: np.ndarray | None = None) -> np.ndarray:
    """Multicut (elf, Kernighan-Lin) on the region graph of `fragments_3d`. Edge costs: the
    mean boundary evidence 1 - affinity over every offset's voxel pairs that join the two
    fragments, as log-odds with boundary bias `beta`, weighted by the contact size."""
    from elf.segmentation import features as feats
    from elf.segmentation import multicut as mc

    frags = fragments_3d(affs) if fragments is None else np.asarray(fragments, dtype=np.uint64)
    rag = feats.compute_rag(frags)
    boundaries = np.ascontiguousarray(1.0 - affs, dtype=np.float32)
    edge = feats.compute_affinity_features(rag, frags, boundaries, [list(o) for o in offsets])
    costs = mc.transform_probabilities_to_costs(edge[:, 0], beta=beta, edge_sizes=edge[:, -1])
    nodes = mc.multicut_kernighan_lin(rag, costs)
    seg = feats.project_node_labels_to_pixels(rag, frags, nodes)
    return relabel_sequential(np.asarray(seg, dtype=np.uint64))[0]
