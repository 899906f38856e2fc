"""Segmentation metrics from one sparse overlap table of two label images.

Every function takes ``(pred, gt)``: two integer label images of the same shape (2D, 3D or any
ndim; any integer or bool dtype; floats with integral values; ids need not be consecutive).
Label 0 is background. Each call builds one `Overlap` table with the compiled kernel
`pea._overlap` in O(pixels + overlapping pairs) and derives the metric from the table alone;
`evaluate` builds the table once for any number of metrics.

Definitions (docs/method.md section 8; "labels" are the distinct non-zero ids):

- ``best_dice(pred, gt)``: mean over labels of `pred` of the best Dice with any label of `gt`.
- ``symmetric_best_dice`` (SBD): ``min(best_dice(pred, gt), best_dice(gt, pred))``.
- ``fg_bg_dice``: Dice of the two foreground masks; ``pixel_dice`` (foreground F1) is the same
  number under the 0-is-background convention and is kept as the BBBC039V1 name.
- ``diff_fg_labels`` (DiC): #labels(pred) - #labels(gt); ``abs_diff_fg_labels``: its absolute value.
  Labels are counted as distinct foreground ids. The CVPPP reference code counts
  ``max - min`` of each image, i.e. assumes consecutive ids 0..n with background present; the
  two counts agree on such images.
- ``aggregated_jaccard_index`` (AJI, key ``aji``), as the paper's code (`agg_jc_index`) computes
  it: gt labels in increasing id order each take the prediction of highest IoU among those not
  yet taken (IoU computed as I / (U + 1e-4), ties: the smallest pred id) and add its
  intersection to I and union to U; a gt label overlapping no free prediction adds its area to
  U, and takes the first prediction (smallest id) if that is still free, adding its area too
  (the reference's argmax over all-zero IoUs lands there); each prediction never taken adds its
  area to U; AJI = I / U. Which ids are counted is `aji_ids`:
  ``present`` (the project's): the gt labels present, and "the first prediction" is the one of
  smallest id; ``range`` (the paper's code, `agg_jc_index` looping over 1..max(gt)): literal
  ids, IoU = I / U. A missing gt id is then an empty object: its IoU is 0/0 (nan) with a taken
  or absent prediction id and 0 with the others, and the first nan wins, else prediction 1; so
  only a missing id 1 counts (prediction ids then exactly 1..P): it adds |prediction 1| to U
  and takes it. The fallback takes prediction id 1 itself (nothing when id 1 is absent). The
  two agree when the gt has id 1 and the prediction ids are 1..P.
- ``kumar_aggregated_jaccard_index`` (key ``aji_kumar``, Kumar et al. 2017): the same, except
  that a prediction may be taken again (ties: the smallest pred id) and a gt label overlapping
  no prediction adds only its area.
- ``panoptic_quality`` -> (DQ, SQ, PQ): unique matching of labels at IoU > 0.5; DQ = TP /
  (TP + FP/2 + FN/2) (key ``dq``, selected by ``f1`` too: object F1 at IoU 0.5), SQ = mean IoU
  of the matches, PQ = DQ * SQ. ``official_panoptic_quality`` -> (SQ, PQ) as the paper's code
  (`get_fast_pq`) computes them (keys ``sq_official``, ``pq_official``): SQ = sum of the matched
  IoUs / (TP + 1e-6), so 1 - 1e-6 / (TP + 1e-6) below the exact SQ.
- ``average_precision``: per IoU threshold t, TP / (TP + FP + FN) with TP the size of a
  maximum one-to-one matching of pairs with IoU >= t (as StarDist's ``matching`` "accuracy" and
  Cellpose's ``average_precision`` report it).
- ``variation_of_information`` -> (split, merge) and ``adapted_rand_error``: as
  ``skimage.metrics.variation_of_information(gt, pred, ignore_labels=[0])`` (split = H(pred|gt),
  merge = H(gt|pred), in bits) and ``skimage.metrics.adapted_rand_error(gt, pred,
  ignore_labels=[0])[0]``: voxels with gt 0 are ignored, pred 0 is an ordinary segment.

Empty images (no non-zero label), where a definition divides by zero:

- best_dice(a, b) with no label in `a`: 1.0 if `b` has no label either, else 0.0 (so SBD is
  1.0 when both are empty and 0.0 when exactly one is).
- fg_bg_dice / pixel_dice, both AJIs, DQ, SQ, PQ (official too), AP: 1.0 when both are empty; 0.0 when exactly one
  is (no match: SQ is 0.0 whenever TP = 0).
- VOI: (0.0, 0.0) and ARAND: 0.0 when gt is empty (every voxel is ignored); ARAND is also 0.0
  when every segment is a single voxel (no pair of voxels to disagree on; skimage gives nan).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
from scipy.sparse import csr_array
from scipy.sparse.csgraph import maximum_bipartite_matching

from pea import _overlap
from pea.errors import PEAInputError

__all__ = [
    "AP_THRESHOLDS",
    "METRIC_KEYS",
    "FAMILIES",
    "ALIASES",
    "SELECTORS",
    "Overlap",
    "overlap",
    "check_labels",
    "summarize",
    "best_dice",
    "symmetric_best_dice",
    "fg_bg_dice",
    "diff_fg_labels",
    "abs_diff_fg_labels",
    "aggregated_jaccard_index",
    "kumar_aggregated_jaccard_index",
    "pixel_dice",
    "panoptic_quality",
    "official_panoptic_quality",
    "average_precision",
    "variation_of_information",
    "adapted_rand_error",
    "select_metrics",
    "evaluate",
]

AP_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))

# every key `evaluate` can return, in output order
METRIC_KEYS: tuple[str, ...] = (
    "sbd", "best_dice", "fg_bg_dice", "dic", "abs_dic", "aji", "aji_kumar", "dice", "pq", "dq", "sq",
    "pq_official", "sq_official", "ap50", "ap75", "voi_split", "voi_merge", "voi", "arand",
)

# selector name -> the keys it selects (a family name selects its family)
FAMILIES: dict[str, tuple[str, ...]] = {
    "sbd": ("sbd",),
    "best_dice": ("best_dice",),
    "fg_bg_dice": ("fg_bg_dice",),
    "dic": ("dic", "abs_dic"),
    "aji": ("aji",),
    "aji_kumar": ("aji_kumar",),
    "dice": ("dice",),
    "pq": ("pq", "dq", "sq"),
    "pq_official": ("pq_official", "sq_official"),
    "ap": ("ap50", "ap75"),
    "voi": ("voi_split", "voi_merge", "voi"),
    "arand": ("arand",),
}
# every selector `evaluate` accepts: the families, each key alone, aliases and "all"
ALIASES: dict[str, tuple[str, ...]] = {"f1": ("dq",)}  # object F1 at IoU 0.5 is PQ's DQ
SELECTORS: dict[str, tuple[str, ...]] = {**{k: (k,) for k in METRIC_KEYS}, **FAMILIES, **ALIASES,
                                         "all": METRIC_KEYS}


def check_labels(x: np.ndarray, name: str) -> np.ndarray:
    """`x` as a non-negative integer label array (bool as uint8, integral floats as int64);
    PEAInputError naming `name` for other dtypes and for fractional, non-finite or negative values."""
    x = np.asarray(x)
    if x.dtype.kind == "b":
        return x.view(np.uint8)
    if x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise PEAInputError(f"{name} has non-finite values (dtype {x.dtype}, shape {x.shape})")
        if (np.floor(x) != x).any():
            raise PEAInputError(f"{name} has fractional values (dtype {x.dtype}, shape {x.shape}): "
                                "labels must be integers")
        if x.size and x.max() >= 2.0**63:
            raise PEAInputError(f"{name} has labels beyond int64 (max {x.max()}, shape {x.shape})")
    elif x.dtype.kind not in "iu":
        raise PEAInputError(f"{name} has dtype {x.dtype}, shape {x.shape}: labels must be integers")
    if x.dtype.kind in "if" and x.size and x.min() < 0:
        raise PEAInputError(f"{name} has negative labels (min {x.min()}, shape {x.shape})")
    return x.astype(np.int64) if x.dtype.kind == "f" else x


def _common_dtype(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays in one native-byte-order integer dtype (the kernel takes one dtype)."""
    if pred.dtype != gt.dtype:
        common = np.promote_types(pred.dtype, gt.dtype)
        if common.kind == "f":  # int64 with uint64: go unsigned (`check_labels` rejected negatives)
            common = np.dtype(np.uint64)
        pred, gt = pred.astype(common, copy=False), gt.astype(common, copy=False)
    native = pred.dtype.newbyteorder("=")
    return (np.ascontiguousarray(pred, dtype=native).reshape(-1),
            np.ascontiguousarray(gt, dtype=native).reshape(-1))


def _rank(values: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted `values` and `index` re-pointed into them."""
    order = np.argsort(values, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return values[order], rank[index]


@dataclass(frozen=True)
class Overlap:
    """Sparse overlap table: ``counts[k]`` voxels have pred ``pred_ids[p[k]]`` and gt ``gt_ids[g[k]]``.

    `pred_ids`, `gt_ids`: sorted distinct values (0 included when present); `pred_sizes`,
    `gt_sizes`: voxels per id; pairs sorted by (p, g). Properties restrict to foreground.
    """

    pred_ids: np.ndarray
    gt_ids: np.ndarray
    pred_sizes: np.ndarray
    gt_sizes: np.ndarray
    p: np.ndarray
    g: np.ndarray
    counts: np.ndarray

    @cached_property
    def pred_fg(self) -> np.ndarray:
        """Sizes of the pred labels (non-zero ids, sorted by id)."""
        return self.pred_sizes[self.pred_ids != 0]

    @cached_property
    def gt_fg(self) -> np.ndarray:
        """Sizes of the gt labels (non-zero ids, sorted by id)."""
        return self.gt_sizes[self.gt_ids != 0]

    @cached_property
    def fg_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(pred label index, gt label index, count) of label pairs that overlap; indices into pred_fg/gt_fg."""
        p_off = int(self.pred_ids.size > 0 and self.pred_ids[0] == 0)
        g_off = int(self.gt_ids.size > 0 and self.gt_ids[0] == 0)
        keep = (self.p >= p_off) & (self.g >= g_off)
        return self.p[keep] - p_off, self.g[keep] - g_off, self.counts[keep]

    @cached_property
    def fg_iou(self) -> np.ndarray:
        """IoU of each pair of `fg_pairs`."""
        p, g, c = self.fg_pairs
        return c / (self.pred_fg[p] + self.gt_fg[g] - c)


def overlap(pred: np.ndarray, gt: np.ndarray) -> Overlap:
    """The overlap table of two label images (PEAInputError on bad shapes, dtypes or values)."""
    pred, gt = check_labels(pred, "pred"), check_labels(gt, "gt")
    if pred.shape != gt.shape:
        raise PEAInputError(f"pred and gt have different shapes: pred {pred.shape}, gt {gt.shape}")
    flat_pred, flat_gt = _common_dtype(pred, gt)
    pred_vals, gt_vals, p, g, counts = _overlap.pair_counts(flat_pred, flat_gt)
    pred_ids, p = _rank(pred_vals, p)
    gt_ids, g = _rank(gt_vals, g)
    order = np.lexsort((g, p))
    p, g, counts = p[order], g[order], counts[order]
    return Overlap(
        pred_ids=pred_ids,
        gt_ids=gt_ids,
        pred_sizes=np.bincount(p, weights=counts, minlength=pred_ids.size).astype(np.int64),
        gt_sizes=np.bincount(g, weights=counts, minlength=gt_ids.size).astype(np.int64),
        p=p,
        g=g,
        counts=counts,
    )


def _ratio(num: float, den: float) -> float:
    """num / den, 1.0 when den is 0 (both images empty)."""
    return float(num / den) if den > 0 else 1.0


# ---- metrics of a table -------------------------------------------------------------------


def _best_dice(t: Overlap, pred_side: bool = True) -> float:
    p, g, c = t.fg_pairs
    src, other = (t.pred_fg, t.gt_fg) if pred_side else (t.gt_fg, t.pred_fg)
    if src.size == 0:
        return 1.0 if other.size == 0 else 0.0
    idx = p if pred_side else g
    best = np.zeros(src.size)
    np.maximum.at(best, idx, 2.0 * c / (t.pred_fg[p] + t.gt_fg[g]))
    return float(best.mean())


def _sbd(t: Overlap) -> float:
    return min(_best_dice(t, True), _best_dice(t, False))


def _fg_bg_dice(t: Overlap) -> float:
    return _ratio(2.0 * t.fg_pairs[2].sum(), t.pred_fg.sum() + t.gt_fg.sum())


def _dic(t: Overlap) -> int:
    return int(t.pred_fg.size - t.gt_fg.size)


def _aji_kumar(t: Overlap) -> float:
    p, g, c = t.fg_pairs
    if t.pred_fg.size == 0 and t.gt_fg.size == 0:
        return 1.0
    iou = t.fg_iou
    # per gt label, the pair of highest IoU, smallest pred index among ties
    order = np.lexsort((p, -iou, g))
    first = np.ones(order.size, dtype=bool)
    first[1:] = g[order][1:] != g[order][:-1]
    best = order[first]
    inter = c[best].sum()
    union = (t.pred_fg[p[best]] + t.gt_fg[g[best]] - c[best]).sum()
    unmatched_gt = np.ones(t.gt_fg.size, dtype=bool)
    unmatched_gt[g[best]] = False
    unused_pred = np.ones(t.pred_fg.size, dtype=bool)
    unused_pred[p[best]] = False
    union += t.gt_fg[unmatched_gt].sum() + t.pred_fg[unused_pred].sum()
    return float(inter / union)


AJI_IDS = ("present", "range")


def _first_prediction(t: Overlap, ids: str) -> int | None:
    """The index (into pred_fg) of the prediction the AJI's fallback takes: the smallest
    present id (``present``), or id 1 itself, None when id 1 is absent (``range``)."""
    if t.pred_fg.size == 0:
        return None
    if ids == "present":
        return 0
    return 0 if t.pred_ids[t.pred_ids != 0][0] == 1 else None


def _leading_gap_takes_first(t: Overlap) -> bool:
    """``range``: gt id 1 is missing and the prediction ids are exactly 1..P, so the empty gt
    object 1 (IoU 0 with every prediction, no 0/0) takes prediction 1 (module docstring)."""
    gt, pred = t.gt_ids[t.gt_ids != 0], t.pred_ids[t.pred_ids != 0]
    return bool(gt.size and gt[0] > 1 and pred.size and pred[-1] == pred.size)


def _aji(t: Overlap, ids: str = "present") -> float:
    """The one-to-one greedy AJI (module docstring): a loop over gt labels on the sorted pairs,
    over the ids present (``present``) or over every id 1..max(gt) (``range``)."""
    if ids not in AJI_IDS:
        raise ValueError(f"unknown aji_ids {ids!r} ({', '.join(AJI_IDS)})")
    if t.pred_fg.size == 0 and t.gt_fg.size == 0:
        return 1.0
    p, g, c = t.fg_pairs
    pair_union = t.pred_fg[p] + t.gt_fg[g] - c
    iou = c / (pair_union + 1e-4) if ids == "present" else c / pair_union
    order = np.lexsort((p, -iou, g))  # per gt label: best first
    p, c, pair_union = p[order], c[order], pair_union[order]
    bounds = np.searchsorted(g[order], np.arange(t.gt_fg.size + 1))
    taken = np.zeros(t.pred_fg.size, dtype=bool)
    first = _first_prediction(t, ids)
    inter, union = 0, 0
    if ids == "range" and _leading_gap_takes_first(t):
        union, taken[0] = t.pred_fg[0], True
    for k in range(t.gt_fg.size):
        free = np.flatnonzero(~taken[p[bounds[k]:bounds[k + 1]]])
        if free.size:
            j = bounds[k] + free[0]
            inter, union = inter + c[j], union + pair_union[j]
            taken[p[j]] = True
            continue
        union += t.gt_fg[k]
        if first is not None and not taken[first]:
            union += t.pred_fg[first]
            taken[first] = True
    return float(inter / (union + t.pred_fg[~taken].sum()))


def _pq_parts(t: Overlap) -> tuple[int, float, float]:
    """(TP, sum of the matched IoUs, DQ) of the unique matching at IoU > 0.5."""
    iou = t.fg_iou[t.fg_iou > 0.5]
    tp = iou.size
    dq = tp / (tp + 0.5 * (t.pred_fg.size - tp) + 0.5 * (t.gt_fg.size - tp))
    return tp, float(iou.sum()), float(dq)


def _pq(t: Overlap) -> tuple[float, float, float]:
    if t.pred_fg.size == 0 and t.gt_fg.size == 0:
        return 1.0, 1.0, 1.0
    tp, iou_sum, dq = _pq_parts(t)
    sq = iou_sum / tp if tp else 0.0
    return dq, sq, dq * sq


def _pq_official(t: Overlap) -> tuple[float, float]:
    if t.pred_fg.size == 0 and t.gt_fg.size == 0:
        return 1.0, 1.0
    tp, iou_sum, dq = _pq_parts(t)
    sq = iou_sum / (tp + 1e-6)
    return sq, dq * sq


def _matches(t: Overlap, threshold: float) -> int:
    """Size of a maximum one-to-one matching among label pairs with IoU >= threshold."""
    p, g, _ = t.fg_pairs
    keep = t.fg_iou >= threshold
    p, g = p[keep], g[keep]
    if np.unique(p).size == p.size and np.unique(g).size == g.size:
        return int(p.size)
    graph = csr_array((np.ones(p.size), (p, g)), shape=(t.pred_fg.size, t.gt_fg.size))
    return int((maximum_bipartite_matching(graph, perm_type="column") >= 0).sum())


def _ap(t: Overlap, thresholds: Sequence[float] = AP_THRESHOLDS) -> np.ndarray:
    n_pred, n_gt = t.pred_fg.size, t.gt_fg.size
    if n_pred == 0 and n_gt == 0:
        return np.ones(len(thresholds))
    tp = np.array([_matches(t, th) for th in thresholds], dtype=float)
    return tp / (n_pred + n_gt - tp)


def _gt_fg_table(t: Overlap) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(pair counts, gt size of each pair, pred size of each pair, total) over voxels with gt != 0.

    Sizes are counted over those voxels only; pred 0 stays an ordinary segment.
    """
    keep = t.gt_ids[t.g] != 0
    p, g, c = t.p[keep], t.g[keep], t.counts[keep].astype(np.float64)
    gt_sizes = np.bincount(g, weights=c, minlength=t.gt_ids.size)
    pred_sizes = np.bincount(p, weights=c, minlength=t.pred_ids.size)
    return c, gt_sizes[g], pred_sizes[p], float(c.sum())


def _voi(t: Overlap) -> tuple[float, float]:
    c, gt_of_pair, pred_of_pair, n = _gt_fg_table(t)
    if n == 0:
        return 0.0, 0.0
    split = -(c / n * np.log2(c / gt_of_pair)).sum()
    merge = -(c / n * np.log2(c / pred_of_pair)).sum()
    return max(float(split), 0.0) + 0.0, max(float(merge), 0.0) + 0.0  # never -0.0 (printed -0.0000)


def _arand(t: Overlap) -> float:
    c, gt_of_pair, pred_of_pair, n = _gt_fg_table(t)
    # sum over segments of size^2 = sum over pairs of count * size of the pair's segment
    sum_pairs = c @ c - n
    den = 0.5 * (c @ gt_of_pair - n) + 0.5 * (c @ pred_of_pair - n)
    return float(1.0 - sum_pairs / den) if den > 0 else 0.0


# ---- public API -----------------------------------------------------------------------------


def best_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean over the labels of `pred` of the best Dice with any label of `gt` (CVPPP BestDice)."""
    return _best_dice(overlap(pred, gt))


def symmetric_best_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """SBD = min(best_dice(pred, gt), best_dice(gt, pred))."""
    return _sbd(overlap(pred, gt))


def fg_bg_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of the foreground masks (CVPPP FgBgDice)."""
    return _fg_bg_dice(overlap(pred, gt))


def diff_fg_labels(pred: np.ndarray, gt: np.ndarray) -> int:
    """DiC = number of distinct non-zero ids in `pred` minus that in `gt`."""
    return _dic(overlap(pred, gt))


def abs_diff_fg_labels(pred: np.ndarray, gt: np.ndarray) -> int:
    """|DiC|."""
    return abs(diff_fg_labels(pred, gt))


def aggregated_jaccard_index(pred: np.ndarray, gt: np.ndarray, ids: str = "present") -> float:
    """AJI as the paper's code computes it: each prediction is taken at most once; over the
    gt ids present (``present``) or, as the paper's code, every id 1..max(gt) (``range``)."""
    return _aji(overlap(pred, gt), ids)


def kumar_aggregated_jaccard_index(pred: np.ndarray, gt: np.ndarray) -> float:
    """AJI of Kumar et al. 2017: a prediction may be taken by several gt labels."""
    return _aji_kumar(overlap(pred, gt))


def pixel_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Foreground pixel F1 (= Dice of the foreground masks)."""
    return _fg_bg_dice(overlap(pred, gt))


def panoptic_quality(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float, float]:
    """(DQ, SQ, PQ) with unique matching at IoU > 0.5 (Kirillov et al. 2019)."""
    return _pq(overlap(pred, gt))


def official_panoptic_quality(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """(SQ, PQ) as the paper's code computes them: SQ divides by TP + 1e-6."""
    return _pq_official(overlap(pred, gt))


def average_precision(pred: np.ndarray, gt: np.ndarray,
                      thresholds: Sequence[float] = AP_THRESHOLDS) -> np.ndarray:
    """TP / (TP + FP + FN) at each IoU threshold (matched at IoU >= threshold), as StarDist/Cellpose."""
    return _ap(overlap(pred, gt), thresholds)


def variation_of_information(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """(split, merge) = (H(pred|gt), H(gt|pred)) in bits over voxels with gt != 0."""
    return _voi(overlap(pred, gt))


def adapted_rand_error(pred: np.ndarray, gt: np.ndarray) -> float:
    """Adapted Rand error (SNEMI3D, alpha 0.5) over voxels with gt != 0."""
    return _arand(overlap(pred, gt))


def select_metrics(metrics: str | Iterable[str] | None) -> list[str]:
    """Keys selected by selector names (list or comma-separated string), in `METRIC_KEYS` order.

    None selects all; an unknown name raises PEAInputError listing the valid ones.
    """
    if metrics is None:
        return list(METRIC_KEYS)
    names = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    keys: set[str] = set()
    for name in (n.strip().lower() for n in names):
        if name not in SELECTORS:
            raise PEAInputError(f"unknown metric {name!r}; choose from {', '.join(SELECTORS)}")
        keys.update(SELECTORS[name])
    return [k for k in METRIC_KEYS if k in keys]


def _voi_family(t: Overlap) -> dict[str, float]:
    split, merge = _voi(t)
    return {"voi_split": split, "voi_merge": merge, "voi": split + merge}


def _dic_family(t: Overlap) -> dict[str, float]:
    dic = _dic(t)
    return {"dic": dic, "abs_dic": abs(dic)}


# family -> function of the table giving the values of the family's keys
_COMPUTE: dict[str, Callable[[Overlap], dict[str, float]]] = {
    "sbd": lambda t: {"sbd": _sbd(t)},
    "best_dice": lambda t: {"best_dice": _best_dice(t)},
    "fg_bg_dice": lambda t: {"fg_bg_dice": _fg_bg_dice(t)},
    "dic": _dic_family,
    "aji": lambda t: {"aji": _aji(t)},
    "aji_kumar": lambda t: {"aji_kumar": _aji_kumar(t)},
    "dice": lambda t: {"dice": _fg_bg_dice(t)},
    "pq": lambda t: dict(zip(("dq", "sq", "pq"), _pq(t))),
    "pq_official": lambda t: dict(zip(("sq_official", "pq_official"), _pq_official(t))),
    "ap": lambda t: dict(zip(("ap50", "ap75"), map(float, _ap(t, (0.5, 0.75))))),
    "voi": _voi_family,
    "arand": lambda t: {"arand": _arand(t)},
}
_FAMILY_OF = {key: fam for fam, keys in FAMILIES.items() for key in keys}


def evaluate(pred: np.ndarray, gt: np.ndarray, metrics: str | Iterable[str] | None = None, *,
             aji_ids: str = "present") -> dict[str, float]:
    """Selected metrics of one image pair from one overlap table.

    `metrics`: selector names (list or comma-separated string; see `SELECTORS`), default all:
    ``sbd``, ``best_dice`` (best_dice(pred, gt)), ``fg_bg_dice``, ``dic`` (dic, abs_dic),
    ``aji`` (the paper's, one-to-one), ``aji_kumar``, ``dice`` (foreground pixel F1), ``pq`` (pq,
    dq, sq), ``pq_official`` (pq_official, sq_official), ``ap`` (ap50, ap75), ``voi`` (voi_split,
    voi_merge, voi), ``arand``; each key also selects itself alone, and ``f1`` selects dq.
    `aji_ids`: the gt ids the AJI iterates over, ``present`` or ``range`` (1..max(gt), the
    paper code's treatment of missing ids; module docstring).
    Returns {key: value} in `METRIC_KEYS` order (dic and abs_dic are ints, the rest floats).
    """
    keys = select_metrics(metrics)
    table = overlap(pred, gt)
    compute = {**_COMPUTE, "aji": lambda t: {"aji": _aji(t, aji_ids)}}
    values: dict[str, float] = {}
    for fam in dict.fromkeys(_FAMILY_OF[k] for k in keys):
        values.update(compute[fam](table))
    return {k: values[k] for k in keys}


def summarize(rows: Sequence[Mapping[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and standard deviation of each metric over rows of scores (a "name" key is skipped)."""
    keys = [k for k in rows[0] if k != "name"] if rows else []
    table = np.array([[r[k] for k in keys] for r in rows], dtype=np.float64).reshape(len(rows), len(keys))
    return dict(zip(keys, table.mean(axis=0).tolist())), dict(zip(keys, table.std(axis=0).tolist()))
