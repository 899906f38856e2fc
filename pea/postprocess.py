"""From affinities to instances: Mutex Watershed, waterz, multicut, small-object merging.

Affinities follow pea.affinity's convention (channel c links p and p + offsets[c]; 1 = same
object); 2D and 3D alike. Beside the project's own choices (`fragments_3d`, the contact rule of
`merge_small_objects`), the paper code's variants reproduce its outputs: `maxima_fragments`,
`dt_watershed_fragments` with `official_multicut`, and the window rule of `merge_small_objects`.
"""
from __future__ import annotations

import ctypes
import os
import sys
from contextlib import contextmanager
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage
from skimage.segmentation import relabel_sequential

from pea.affinity import Offset
from pea.extras import require


MUTEX_NUMBERINGS = ("sorted", "fortran")


def fortran_numbering(seg: np.ndarray) -> np.ndarray:
    """Segments numbered 1..n in the order they first appear when the array is scanned with
    its first axis fastest (Fortran order), 0 kept: what vigra's relabelConsecutive gives on a
    C-ordered array, as the authors' Mutex Watershed stack returned it (docs/method.md section 7)."""
    flat = np.asarray(seg).ravel(order="F")
    ids, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
    fg = ids != 0
    rank = np.zeros(ids.size, dtype=np.uint64)
    rank[fg] = np.argsort(np.argsort(first[fg], kind="stable"), kind="stable") + 1
    return rank[inverse].reshape(seg.shape, order="F")


def mutex_watershed(affs: np.ndarray, offsets: Sequence[Offset], strides: Sequence[int] | None,
                    mask: np.ndarray | None = None, numbering: str = "sorted") -> np.ndarray:
    """Mutex Watershed (elf) on affinities in [0, 1]; long-range edges subsampled by
    `strides` (None: every edge); pixels outside `mask` get 0. Segments are numbered 1..n in
    the order of elf's ids (``sorted``) or of their first appearance in Fortran order
    (``fortran``, `fortran_numbering`: the authors' numbering, on which the window rule of
    `merge_small_objects` depends)."""
    from elf.segmentation.mutex_watershed import mutex_watershed as mws

    if numbering not in MUTEX_NUMBERINGS:
        raise ValueError(f"unknown Mutex Watershed numbering {numbering!r} ({', '.join(MUTEX_NUMBERINGS)})")
    boundaries = np.ascontiguousarray(1.0 - affs, dtype=np.float32)  # elf wants boundary maps
    strides = list(strides) if strides else [1] * (affs.ndim - 1)
    seg = mws(boundaries, [list(o) for o in offsets], strides, mask=mask)
    if mask is not None:
        seg[~mask] = 0
    if numbering == "fortran":
        return fortran_numbering(seg)
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


def _merge_by_contact(seg: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """In passes of growing size, give each object under the size the foreground label it
    touches most. Objects touching only background are kept. Ids are relabelled 1..N."""
    seg = relabel_sequential(np.asarray(seg).astype(np.int64))[0]
    for min_size in sizes:
        target = contact_targets(np.bincount(seg.ravel()), *_contacts(seg), min_size)
        if target is not None:
            seg = target[seg]
    return relabel_sequential(seg)[0]


def contact_targets(counts: np.ndarray, first: np.ndarray, second: np.ndarray, contact: np.ndarray,
                    min_size: int) -> np.ndarray | None:
    """One pass of the contact rule on a graph of ids 0..N (0: background): the id each id
    becomes, or None when nothing merges. `counts`: the sizes of the ids; `first`, `second`,
    `contact`: the touching pairs (both orders, sorted by first then second) and their contact
    sizes. Each id under `min_size` that touches a foreground id joins the one it touches
    most (ties: the larger id); two small ids pointing at each other: the smaller keeps its id."""
    small = counts < min_size
    small[0] = False
    if not small.any():
        return None
    keep = small[first] & (second != 0)
    first, second, contact = first[keep], second[keep], contact[keep]
    if first.size == 0:
        return None
    # the most-touched neighbour of each small object: sort by (object, contact)
    order = np.lexsort((contact, first))
    first, second = first[order], second[order]
    last = np.r_[first[1:] != first[:-1], True]
    target = np.arange(counts.size)
    target[first[last]] = second[last]
    ids = np.arange(target.size)
    mutual = (target[target] == ids) & (target > ids)
    target[mutual] = ids[mutual]
    for _ in range(int(np.ceil(np.log2(max(2, target.size)))) + 1):
        target = target[target]
    return target


def _window_pass(seg: np.ndarray, threshold: int, window: int) -> np.ndarray:
    """One pass of the window rule (see `merge_small_objects`).

    The image at any moment is `lut[index]`, `index` the rank of each pixel's id at the start
    of the pass: a merge only rewrites `lut`, and running coordinate sums give the centroids.
    """
    ids, index, counts = np.unique(seg, return_inverse=True, return_counts=True)
    index = index.reshape(seg.shape)
    lut = np.arange(ids.size)
    members: dict[int, list[int]] = {}  # start ranks now under each merged label
    size = counts.copy()
    coords = np.unravel_index(np.arange(seg.size), seg.shape)
    sums = np.stack([np.bincount(index.ravel(), weights=c, minlength=ids.size) for c in coords]).astype(np.int64)
    background = 0 if ids.size and ids[0] == 0 else -1  # the rank of id 0
    for i in np.flatnonzero(counts <= threshold):  # sizes from the start of the pass
        if size[i] == 0:  # merged away earlier in the pass
            continue
        starts = sums[:, i] // size[i] - window // 2  # a negative start wraps: an empty crop
        crop = lut[index[tuple(slice(int(a), int(a) + window) for a in starts)]]
        values, freq = np.unique(crop, return_counts=True)
        if values.size <= 2:
            continue
        ranked = values[np.lexsort((values, -freq))]  # most frequent first, ties: smaller id
        if ranked[0] != background:
            target = ranked[0]
        else:
            target = ranked[2] if ranked[1] == i else ranked[1]
        if target == i:
            continue
        group = members.pop(i, [i])
        lut[group] = target
        members.setdefault(target, [target]).extend(group)
        sums[:, target] += sums[:, i]
        size[target] += size[i]
        size[i] = 0
    return ids[lut][index]


def _merge_by_window(seg: np.ndarray, passes: Sequence[Sequence[int]]) -> np.ndarray:
    """The paper code's rule, in passes of (threshold, window); ids are kept."""
    seg = np.asarray(seg)
    for threshold, window in passes:
        seg = _window_pass(seg, int(threshold), int(window))
    return seg


MERGE_RULES = {"contact": _merge_by_contact, "window": _merge_by_window}


def merge_small_objects(seg: np.ndarray, passes: Sequence = (5, 20, 50, 300), rule: str = "contact") -> np.ndarray:
    """Merge small objects into a neighbour, in passes.

    - ``contact`` (passes: sizes): each object under the size joins the foreground label it
      touches most (objects touching only background are kept); ids relabelled 1..N.
    - ``window`` (passes: (threshold, window) pairs), the paper code's rule: each id of at most
      `threshold` pixels at the start of the pass, in increasing id order, looks at the
      window x window crop starting at its centroid (floor of the mean coordinates) minus
      window // 2, not clipped (Python slicing: a negative start gives an empty crop). With
      more than 2 distinct values there, it takes the most frequent one (ties: the smaller id),
      or when that is background the next one, or the third when the next is itself. Merges
      take effect at once; ids are kept.
    """
    if rule not in MERGE_RULES:
        raise ValueError(f"unknown merge rule {rule!r}; use one of {', '.join(MERGE_RULES)}")
    return MERGE_RULES[rule](seg, passes)


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


def _mean_boundary(nn: np.ndarray) -> np.ndarray:
    """In-plane boundary map 1 - (aff_y + aff_x) / 2 of the (z, y, x) nearest affinities."""
    return 1.0 - 0.5 * (nn[1] + nn[2])


def _stack_sections(boundary: np.ndarray, fragment: Callable[[np.ndarray], tuple[np.ndarray, int]]) -> np.ndarray:
    """Fragments of each section (first axis): `fragment(section)` gives ids in 1..n and n;
    each section's ids are shifted past the previous sections' n."""
    out = np.zeros(boundary.shape, dtype=np.uint64)
    offset = 0
    for z, section in enumerate(boundary):
        frags, n = fragment(section)
        out[z] = np.where(frags > 0, frags.astype(np.uint64) + np.uint64(offset), 0)
        offset += int(n)
    return out


def _distance_maxima_watershed(boundary: np.ndarray) -> tuple[np.ndarray, int]:
    mahotas = require("mahotas")

    seeds, n = mahotas.label(mahotas.regmax(mahotas.distance(boundary < 0.5)))
    return mahotas.cwatershed(boundary, seeds), n


def maxima_fragments(affs: np.ndarray) -> np.ndarray:
    """The paper code's waterz fragments, section by section: seeds = the labelled regional
    maxima of the (squared) distance transform of boundary < 0.5, grown by mahotas' watershed
    on the boundary 1 - (aff_y + aff_x) / 2. affs: (C >= 3, Z, Y, X), z, y, x nearest first.
    Ids 1..N, in section order (the reference starts at 2)."""
    return _stack_sections(_mean_boundary(np.asarray(affs[:3], dtype=np.float32)), _distance_maxima_watershed)


def dt_watershed_fragments(affs: np.ndarray) -> np.ndarray:
    """The paper code's multicut fragments, section by section: elf's distance-transform
    watershed (threshold 0.25, sigma_seeds 2) of the boundary max(1 - aff_y, 1 - aff_x).
    affs: (C >= 3, Z, Y, X), z, y, x nearest first."""
    from elf.segmentation.watershed import distance_transform_watershed

    boundary = np.maximum(1.0 - affs[1], 1.0 - affs[2])
    return _stack_sections(boundary, lambda b: distance_transform_watershed(b, threshold=0.25, sigma_seeds=2.0))


def fragments_3d(affs: np.ndarray) -> np.ndarray:
    """Over-segmentation of a volume into fragments (ids 1..N) that cover every voxel.

    waterz's watershed on the three nearest-neighbour affinities (z, y, x first) leaves
    out voxels whose affinities are all below 0.0001 (membranes, when background is affine
    to nothing); these are grown into the fragments beside them in their section by a
    watershed on the in-plane boundary map 1 - mean(y, x affinity). What no fragment
    reaches in its section becomes fragments of its in-plane connected components.
    """
    waterz = require("waterz")
    from skimage.segmentation import watershed

    nn = np.ascontiguousarray(affs[:3], dtype=np.float32)
    with _quiet_stdout():
        frags = np.asarray(next(iter(waterz.agglomerate(nn, thresholds=[0.0]))), dtype=np.int64)
    if (frags == 0).any():
        foot = _in_plane(frags.ndim)
        frags = watershed(_mean_boundary(nn), frags, connectivity=foot)
        rest, _ = ndimage.label(frags == 0, structure=foot)
        frags = np.where(frags == 0, rest + frags.max(), frags)
    return relabel_sequential(frags.astype(np.uint64))[0]


# The paper's scoring function. waterz 0.10 treats EdgeStatisticValue<..., MeanAffinityProvider<...>>
# as an alias of MeanAffinity<RegionGraphType, ScoreValue> and ships it compiled, with queues of
# 0 and 256 bins: 1 - the mean affinity over all voxel pairs along a contact.
WATERZ_SCORE = "OneMinus<EdgeStatisticValue<RegionGraphType, MeanAffinityProvider<RegionGraphType, ScoreValue>>>"
# The scoring functions by name: ``mean`` (the paper's inference) and ``median``, 1 - the median
# affinity of a 256-bin histogram (the authors' AC3/AC4 validation, scripts_ac3ac4/main.py);
# waterz 0.10 ships both compiled.
WATERZ_SCORES = {"mean": WATERZ_SCORE,
                 "median": "OneMinus<HistogramQuantileAffinity<RegionGraphType, 50, ScoreValue, 256>>"}


def waterz_segment(affs: np.ndarray, threshold: float = 0.5, scoring_function: str = WATERZ_SCORE,
                   fragments: np.ndarray | None = None) -> np.ndarray:
    """waterz: `fragments_3d` (or the given fragments) agglomerated in order of mean
    affinity until the score 1 - mean affinity reaches `threshold` (a 256-bin queue, as in
    the paper's code). affs: (C >= 3, Z, Y, X) with the z, y, x nearest neighbours first."""
    waterz = require("waterz")

    nn = np.ascontiguousarray(affs[:3], dtype=np.float32)
    frags = fragments_3d(affs) if fragments is None else np.array(fragments, dtype=np.uint64)
    with _quiet_stdout():
        seg = next(iter(waterz.agglomerate(nn, thresholds=[threshold], fragments=frags,
                                           scoring_function=scoring_function, discretize_queue=256)))
    return relabel_sequential(np.asarray(seg, dtype=np.uint64))[0]


def multicut_segment(affs: np.ndarray, offsets: Sequence[Offset], beta: float = 0.5,
                     fragments: np.ndarray | None = None, edge_sizes: str = "pairs") -> np.ndarray:
    """Multicut (elf, Kernighan-Lin) on the region graph of `fragments_3d` (or the given
    fragments). Edge costs: the mean boundary evidence 1 - affinity over every offset's voxel
    pairs that join the two fragments, as log-odds with boundary bias `beta`, weighted by the
    edge size: the number of those voxel pairs (``pairs``) or the length of the fragments'
    shared boundary (``boundary``, as the paper code)."""
    from elf.segmentation import features as feats
    from elf.segmentation import multicut as mc

    frags = fragments_3d(affs) if fragments is None else np.asarray(fragments, dtype=np.uint64)
    rag = feats.compute_rag(frags)
    boundaries = np.ascontiguousarray(1.0 - affs, dtype=np.float32)
    edge = feats.compute_affinity_features(rag, frags, boundaries, [list(o) for o in offsets])
    if edge_sizes == "pairs":
        sizes = edge[:, -1]
    elif edge_sizes == "boundary":
        sizes = feats.compute_boundary_mean_and_length(rag, frags, boundaries[0])[:, 1]  # any map: lengths
    else:
        raise ValueError(f"unknown edge_sizes {edge_sizes!r} (pairs, boundary)")
    costs = mc.transform_probabilities_to_costs(edge[:, 0], beta=beta, edge_sizes=sizes)
    nodes = mc.multicut_kernighan_lin(rag, costs)
    seg = feats.project_node_labels_to_pixels(rag, frags, nodes)
    return relabel_sequential(np.asarray(seg, dtype=np.uint64))[0]


def official_multicut(affs: np.ndarray, offsets: Sequence[Offset]) -> np.ndarray:
    """The paper code's multicut (`mc_baseline`): `dt_watershed_fragments`, edge probabilities
    from the 3 nearest offsets (the first three of `offsets` and `affs`), edge sizes = the
    boundary lengths, beta 0.5."""
    nn = np.asarray(affs[:3], dtype=np.float32)
    return multicut_segment(nn, offsets[:3], fragments=dt_watershed_fragments(nn), edge_sizes="boundary")
