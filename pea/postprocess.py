"""From affinities to instances: Mutex Watershed, waterz, multicut, small-object merging.

Affinities follow pea.affinity's convention (channel c links p and p + offsets[c]; 1 = same
object); 2D and 3D alike.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from skimage.segmentation import relabel_sequential

from pea.affinity import Offset


def mutex_watershed(affs: np.ndarray, offsets: Sequence[Offset], strides: Sequence[int],
                    mask: np.ndarray | None = None) -> np.ndarray:
    """Mutex Watershed (elf) on affinities in [0, 1]; pixels outside `mask` get 0."""
    from elf.segmentation.mutex_watershed import mutex_watershed as mws

    boundaries = np.ascontiguousarray(1.0 - affs, dtype=np.float32)  # elf wants boundary maps
    seg = mws(boundaries, [list(o) for o in offsets], list(strides), mask=mask)
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


def fragments_3d(affs: np.ndarray) -> np.ndarray:
    """Watershed fragments of a volume from its three nearest-neighbour affinities (waterz)."""
    import waterz

    nn = np.ascontiguousarray(affs[:3], dtype=np.float32)
    seg = next(iter(waterz.agglomerate(nn, thresholds=[0.0])))
    return np.asarray(seg, dtype=np.uint64).copy()


WATERZ_SCORE = "OneMinus<EdgeStatisticValue<RegionGraphType, MeanAffinityProvider<RegionGraphType, ScoreValue>>>"


def waterz_segment(affs: np.ndarray, threshold: float = 0.5, scoring_function: str = WATERZ_SCORE) -> np.ndarray:
    """waterz: fragments from the nearest-neighbour affinities, mean-affinity agglomeration
    up to `threshold`."""
    import waterz

    nn = np.ascontiguousarray(affs[:3], dtype=np.float32)
    seg = next(iter(waterz.agglomerate(nn, thresholds=[threshold], scoring_function=scoring_function)))
    return relabel_sequential(np.asarray(seg, dtype=np.uint64))[0]


def multicut_segment(affs: np.ndarray, offsets: Sequence[Offset], beta: float = 0.5) -> np.ndarray:
    """Multicut (elf, Kernighan-Lin) on the fragment graph, edge costs from the mean
    boundary evidence (1 - affinity) of all offsets along each fragment contact."""
    from elf.segmentation import features as feats
    from elf.segmentation import multicut as mc

    frags = fragments_3d(affs)
    rag = feats.compute_rag(frags)
    boundaries = np.ascontiguousarray(1.0 - affs, dtype=np.float32)
    edge = feats.compute_affinity_features(rag, frags, boundaries, [list(o) for o in offsets])
    costs = mc.compute_edge_costs(edge[:, 0], edge_sizes=edge[:, -1], beta=beta)
    nodes = mc.multicut_kernighan_lin(rag, costs)
    seg = feats.project_node_labels_to_pixels(rag, frags, nodes)
    return relabel_sequential(np.asarray(seg, dtype=np.uint64))[0]
