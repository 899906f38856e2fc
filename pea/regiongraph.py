"""The region graph of fragments, built block by block and agglomerated globally.

An edge joins two fragments that touch (face-adjacent voxels, as the RAGs of waterz and elf).
Its statistics come from every voxel pair (p, p + offset) of every offset that joins the two
fragments: the affinity sum and pair count over the nearest-neighbour offsets (one unit step,
waterz's graph) and over all offsets (elf's `compute_affinity_features` with every offset).
Because these are sums, a pair counted in the block holding p gives, summed over blocks, the
statistics of the whole volume (`edge_statistics`, `merge_edges`). On the merged graph:
- `mean_affinity_agglomeration`: waterz's mean-affinity region merging (the paper's scoring
  function 1 - mean affinity of the nearest-neighbour pairs), with an exact queue;
- `multicut_labels`: elf's Kernighan-Lin multicut with `multicut_segment`'s costs;
- `merge_small_segments`: the contact rule of `pea.postprocess.merge_small_objects`.
Fragment ids must be below 2**32.
"""
from __future__ import annotations

import heapq
from array import array
from collections import deque
from typing import Sequence

import numpy as np

from pea.affinity import Offset
from pea.postprocess import contact_targets

# columns of the edge statistics
NN_SUM, NN_COUNT, ALL_SUM, ALL_COUNT = range(4)
MAX_ID = 2 ** 32 - 1


def nearest(offsets: Sequence[Offset]) -> np.ndarray:
    """Whether each offset is a unit step along one axis."""
    return np.array([sum(abs(v) for v in o) == 1 for o in offsets])


def pack(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Edge keys of node pairs: `lo` in the high 32 bits, `hi` in the low ones."""
    return (lo.astype(np.uint64) << np.uint64(32)) | hi.astype(np.uint64)


def unpack(keys: np.ndarray) -> np.ndarray:
    """(E, 2) node pairs of packed edge keys."""
    return np.stack([keys >> np.uint64(32), keys & np.uint64(MAX_ID)], axis=1)


def merge_edges(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Sum the statistics (E, 4) of equal edge keys over `parts` of (keys, statistics)."""
    parts = [p for p in parts if p[0].size]
    if not parts:
        return np.zeros(0, np.uint64), np.zeros((0, 4))
    keys, inverse = np.unique(np.concatenate([k for k, _ in parts]), return_inverse=True)
    stats = np.concatenate([s for _, s in parts])
    return keys, np.stack([np.bincount(inverse, weights=col, minlength=keys.size) for col in stats.T], axis=1)


def edge_statistics(frags: np.ndarray, affs: np.ndarray, offsets: Sequence[Offset],
                    inner: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Edge keys and statistics of the pairs (p, p + offset) with p in the box `inner` of the
    fragments `frags` and p + offset inside `frags` (the box plus a halo covering the offsets,
    cut at the volume's border). `affs` (C, *inner) are the box's affinities. Fragment 0 is
    no fragment. Fragments must lie inside their block (as the blockwise run makes them):
    only pairs of fragments that touch inside `frags` are kept."""
    if frags.size and frags.max() > MAX_ID:
        raise ValueError(f"fragment ids must be below 2**32, got {frags.max()}")
    is_nn = nearest(offsets)
    parts = []
    for c, off in enumerate(offsets):
        lo = [max(b.start, -o) for b, o in zip(inner, off)]
        hi = [min(b.stop, n - o) for b, o, n in zip(inner, off, frags.shape)]
        if any(a >= z for a, z in zip(lo, hi)):
            continue
        u = frags[tuple(slice(a, z) for a, z in zip(lo, hi))]
        v = frags[tuple(slice(a + o, z + o) for a, z, o in zip(lo, hi, off))]
        a = affs[c][tuple(slice(a - b.start, z - b.start) for a, z, b in zip(lo, hi, inner))]
        keep = (u != v) & (u > 0) & (v > 0)
        u, v, a = u[keep], v[keep], a[keep].astype(np.float64)
        keys, inverse = np.unique(pack(np.minimum(u, v), np.maximum(u, v)), return_inverse=True)
        sums, counts = np.bincount(inverse, weights=a), np.bincount(inverse).astype(np.float64)
        pair = np.stack([sums, counts], 1)
        parts.append((keys, np.concatenate([pair if is_nn[c] else np.zeros_like(pair), pair], axis=1)))
    keys, stats = merge_edges(parts)
    keep = np.isin(keys, _touching(frags))
    return keys[keep], stats[keep]


def _touching(frags: np.ndarray) -> np.ndarray:
    """Packed keys of the fragment pairs with face-adjacent voxels in `frags`.

    Fragments lie inside their block, so two that a pair counted in a block joins touch, if
    at all, inside that block's halo box: dropping the rest here (pairs of long offsets
    between fragments that never touch) keeps every block's edge list short."""
    keys = []
    for axis in range(frags.ndim):
        a = np.moveaxis(frags, axis, 0)
        u, v = a[:-1].ravel(), a[1:].ravel()
        keep = (u != v) & (u > 0) & (v > 0)
        keys.append(np.unique(pack(np.minimum(u[keep], v[keep]), np.maximum(u[keep], v[keep]))))
    return np.unique(np.concatenate(keys))


def face_edges(keys: np.ndarray, stats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The region graph's edges (touching fragments, with a nearest-neighbour pair) as (E, 2)
    node pairs, and their statistics."""
    keep = stats[:, NN_COUNT] > 0
    return unpack(keys[keep]), stats[keep]


def _roots(parent: np.ndarray) -> np.ndarray:
    while True:
        up = parent[parent]
        if np.array_equal(up, parent):
            return parent
        parent = up


class _BinQueue:
    """waterz's BinQueue: scores in [0, 1] quantised into `bins` bins, first in first out within a bin."""

    def __init__(self, bins: int):
        self.bins, self.queues, self.low = bins, [deque() for _ in range(bins)], bins

    def push(self, e: int, score: float) -> None:
        i = 0 if not score > 0 else min(int(score * self.bins), self.bins - 1)
        self.queues[i].append(e)
        self.low = min(self.low, i)

    def top(self) -> int | None:
        while self.low < self.bins and not self.queues[self.low]:
            self.low += 1
        return self.queues[self.low][0] if self.low < self.bins else None

    def pop(self) -> None:
        self.queues[self.low].popleft()


class _HeapQueue:
    """An exact priority queue (ties: first pushed first)."""

    def __init__(self):
        self.heap: list = []
        self.count = 0

    def push(self, e: int, score: float) -> None:
        heapq.heappush(self.heap, (score, self.count, e))
        self.count += 1

    def top(self) -> int | None:
        return self.heap[0][2] if self.heap else None

    def pop(self) -> None:
        heapq.heappop(self.heap)


def _compact(code: str, values: np.ndarray) -> array:
    return array(code, np.asarray(values, dtype=np.int64 if code == "q" else np.float64).tobytes())


def mean_affinity_agglomeration(n_nodes: int, uv: np.ndarray, aff_sum: np.ndarray, count: np.ndarray,
                                threshold: float, bins: int = 256) -> np.ndarray:
    """waterz's region merging (`IterativeRegionMerging`) with the score 1 - mean affinity, on
    a graph: edges (u < v, sorted) are queued in order; the cheapest merges its two regions
    (into the smaller id) while its score is below `threshold`; parallel edges then merge
    into the one with the lower queued score, which turns stale and is re-scored when it
    comes up. `bins`: waterz's quantised queue (its `discretize_queue`, 256 in the paper's
    code) or 0 for an exact queue. Sums are float64 (waterz: running float32 means), so a score
    on a bin border may fall on the other side. Returns each node's root."""
    # compact per-edge storage (array, bytearray): the graph grows with the volume
    eu, ev = _compact("q", uv[:, 0]), _compact("q", uv[:, 1])
    sums, counts = _compact("d", aff_sum), _compact("d", count)
    score = _compact("d", 1.0 - np.asarray(aff_sum, np.float64) / np.asarray(count, np.float64))
    stale, deleted = bytearray(len(eu)), bytearray(len(eu))
    inc: dict[int, dict[int, int]] = {}
    queue = _BinQueue(bins) if bins else _HeapQueue()
    for e, (u, v) in enumerate(zip(eu, ev)):
        inc.setdefault(u, {})[v] = e
        inc.setdefault(v, {})[u] = e
        queue.push(e, score[e])
    parent = np.arange(n_nodes)
    while (e := queue.top()) is not None and score[e] < threshold:
        queue.pop()
        if deleted[e]:
            continue
        if stale[e]:
            score[e], stale[e] = 1.0 - sums[e] / counts[e], 0
            queue.push(e, score[e])
            continue
        a, b = eu[e], ev[e]
        parent[b] = a
        del inc[a][b]
        moved = inc.pop(b)
        del moved[a]
        for n, nb in moved.items():
            del inc[n][b]
            ea = inc[a].get(n)
            if ea is not None and score[nb] > score[ea]:  # keep a's edge
                keep, drop = ea, nb
            else:
                keep, drop = nb, ea
                inc[a][n] = inc[n][a] = nb
                eu[nb], ev[nb] = min(a, n), max(a, n)
            if drop is not None:
                sums[keep] += sums[drop]
                counts[keep] += counts[drop]
                deleted[drop], stale[keep] = 1, 1
    return _roots(parent)


def multicut_labels(n_nodes: int, uv: np.ndarray, prob: np.ndarray, sizes: np.ndarray,
                    beta: float = 0.5) -> np.ndarray:
    """elf's Kernighan-Lin multicut (greedy additive warm start) with `multicut_segment`'s
    costs: log-odds of the boundary probability `prob` (bias `beta`) weighted by `sizes`."""
    import bioimage_cpp as bic
    from elf.segmentation import multicut as mc

    graph = bic.graph.UndirectedGraph.from_edges(int(n_nodes), np.ascontiguousarray(uv, dtype=np.uint64))
    costs = mc.transform_probabilities_to_costs(prob, beta=beta, edge_sizes=sizes)
    return np.asarray(mc.multicut_kernighan_lin(graph, costs))


def merge_small_segments(labels: np.ndarray, node_sizes: np.ndarray, uv: np.ndarray, contacts: np.ndarray,
                         passes: Sequence[int]) -> np.ndarray:
    """The contact rule of `merge_small_objects` on a graph: node i (a fragment of
    `node_sizes[i]` voxels) is in segment `labels[i]`; two fragments touch over `contacts`
    voxel faces. Returns each node's segment, 1..N in the order of the segment ids."""
    from skimage.segmentation import relabel_sequential

    labels = relabel_sequential(np.asarray(labels, dtype=np.int64))[0]
    for min_size in passes:
        su, sv = labels[uv[:, 0]], labels[uv[:, 1]]
        cross = su != sv
        keys, inverse = np.unique(pack(np.r_[su[cross], sv[cross]], np.r_[sv[cross], su[cross]]),
                                  return_inverse=True)
        contact = np.bincount(inverse, weights=np.r_[contacts[cross], contacts[cross]]).astype(np.int64)
        pairs = unpack(keys).astype(np.int64)
        counts = np.bincount(labels, weights=node_sizes, minlength=labels.max() + 1).astype(np.int64)
        target = contact_targets(counts, pairs[:, 0], pairs[:, 1], contact, min_size)
        if target is not None:
            labels = target[labels]
    return relabel_sequential(labels)[0]
