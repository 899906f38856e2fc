"""pea.metrics against brute-force implementations written here from the definitions (per-label masks)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from skimage.metrics import adapted_rand_error as sk_arand
from skimage.metrics import variation_of_information as sk_voi
from skimage.segmentation import relabel_sequential

from pea import _overlap
from pea import metrics as M
from pea.errors import PEAInputError

DTYPES = [np.uint8, np.uint16, np.int32, np.int64, np.uint64]


# ---- brute force from the definitions ---------------------------------------------------------


def compact(x):
    """Ids 1..n in sorted order, 0 kept (skimage builds a table as large as the largest id)."""
    inverse = np.unique(x, return_inverse=True)[1].reshape(x.shape)
    return np.where(x == 0, 0, inverse + 1)


def labels(x):
    return [v for v in np.unique(x).tolist() if v != 0]


def masks(x):
    return [x == v for v in labels(x)]


def bf_best_dice(a, b):
    ma, mb = masks(a), masks(b)
    if not ma:
        return 1.0 if not mb else 0.0
    total = 0.0
    for m in ma:
        best = 0.0
        for n in mb:
            best = max(best, 2 * np.logical_and(m, n).sum() / (m.sum() + n.sum()))
        total += best
    return total / len(ma)


def bf_fg_dice(pred, gt):
    p, g = pred != 0, gt != 0
    den = p.sum() + g.sum()
    return 1.0 if den == 0 else 2 * np.logical_and(p, g).sum() / den


def bf_iou(pred, gt):
    mp, mg = masks(pred), masks(gt)
    iou = np.zeros((len(mp), len(mg)))
    for i, m in enumerate(mp):
        for j, n in enumerate(mg):
            iou[i, j] = np.logical_and(m, n).sum() / np.logical_or(m, n).sum()
    return iou


def bf_aji_kumar(pred, gt):
    mp, mg = masks(pred), masks(gt)
    if not mp and not mg:
        return 1.0
    inter = union = 0
    used = set()
    for g in mg:
        ious = [np.logical_and(g, p).sum() / np.logical_or(g, p).sum() for p in mp]
        if not ious or max(ious) == 0:
            union += g.sum()
            continue
        j = int(np.argmax(ious))  # first maximum = smallest pred id
        used.add(j)
        inter += np.logical_and(g, mp[j]).sum()
        union += np.logical_or(g, mp[j]).sum()
    union += sum(p.sum() for j, p in enumerate(mp) if j not in used)
    return inter / union


def bf_pq(pred, gt):
    iou = bf_iou(pred, gt)
    n_pred, n_gt = iou.shape
    if n_pred == 0 and n_gt == 0:
        return 1.0, 1.0, 1.0
    matched = iou > 0.5
    assert (matched.sum(0) <= 1).all() and (matched.sum(1) <= 1).all()  # IoU > 0.5 is unique
    tp = matched.sum()
    dq = tp / (tp + 0.5 * (n_pred - tp) + 0.5 * (n_gt - tp))
    sq = iou[matched].sum() / tp if tp else 0.0
    return dq, sq, dq * sq


def bf_ap(pred, gt, thresholds):
    """StarDist / Cellpose style: optimal assignment with cost -(iou >= t) - iou / (2 n)."""
    iou = bf_iou(pred, gt)
    n_pred, n_gt = iou.shape
    out = []
    for th in thresholds:
        if n_pred == 0 and n_gt == 0:
            out.append(1.0)
            continue
        tp = 0
        if min(iou.shape) > 0:
            costs = -(iou >= th).astype(float) - iou / (2 * min(iou.shape))
            rows, cols = linear_sum_assignment(costs)
            tp = int((iou[rows, cols] >= th).sum())
        out.append(tp / (n_pred + n_gt - tp))
    return np.array(out)


# ---- random label images ---------------------------------------------------------------------


def random_pair(seed: int, shape: tuple[int, ...]):
    """Blocky gt with touching objects and a pred derived from it (shifts, noise, merges, splits)."""
    rng = np.random.default_rng(seed)
    block = [int(rng.integers(2, 6)) for _ in shape]
    coarse = [-(-s // b) for s, b in zip(shape, block)]
    n = int(rng.integers(1, 12))
    gt = rng.integers(0, n + 1, coarse)
    for ax, b in enumerate(block):
        gt = np.repeat(gt, b, axis=ax)
    gt = gt[tuple(slice(0, s) for s in shape)]
    pred = np.roll(gt, int(rng.integers(-2, 3)), axis=int(rng.integers(len(shape))))
    noise = rng.random(shape) < rng.choice([0.0, 0.02, 0.1])
    pred[noise] = rng.integers(0, n + 3, noise.sum())
    if rng.random() < 0.5:  # merge two labels
        pred[pred == 2] = 1
    if rng.random() < 0.5:  # split a label in halves along the first axis
        sel = pred == 3
        pred[sel & (np.indices(shape)[0] < shape[0] // 2)] = n + 5
    # non-consecutive ids in a small, medium or huge range (the kernel's dense, lookup-table and
    # hash-map paths), random dtype
    dtype = DTYPES[seed % len(DTYPES)]
    top = [4 * (n + 6), 300_000, 2**50][seed % 3]
    top = min(int(np.iinfo(dtype).max), top)
    ids = rng.choice(top, n + 6, replace=False) if top < 10**7 else rng.integers(1, top, n + 6)
    lut = np.concatenate([[0], np.sort(np.unique(ids[ids > 0]))])
    lut = np.concatenate([lut, np.arange(n + 7 - lut.size) + lut[-1] + 1])  # keep n + 7 distinct ids
    return lut[pred].astype(dtype), lut[gt].astype(dtype)


def kernel_path(pred, gt):
    """Which path of pea._overlap.pair_counts the pair takes (the rule in its docstring)."""
    n = pred.size
    ra, rb = (int(x.max()) - int(x.min()) + 1 for x in (pred, gt))
    if ra * rb <= min(max(1 << 16, n), _overlap.DENSE_MAX_CELLS):
        return "dense"
    return "lut" if max(ra, rb) <= max(_overlap.LUT_MIN, n // 2) else "hash"


CASES = [(s, (int(h), int(w))) for s, (h, w) in
         zip(range(40), np.random.default_rng(0).integers(12, 40, (40, 2)))]
CASES += [(100 + s, (6, 9, 11)) for s in range(20)]


@pytest.mark.parametrize("seed,shape", CASES)
def test_metrics_match_brute_force(seed, shape):
    pred, gt = random_pair(seed, shape)
    assert M.best_dice(pred, gt) == pytest.approx(bf_best_dice(pred, gt), abs=1e-12)
    sbd = min(bf_best_dice(pred, gt), bf_best_dice(gt, pred))
    assert M.symmetric_best_dice(pred, gt) == pytest.approx(sbd, abs=1e-12)
    assert M.fg_bg_dice(pred, gt) == pytest.approx(bf_fg_dice(pred, gt), abs=1e-12)
    assert M.pixel_dice(pred, gt) == pytest.approx(bf_fg_dice(pred, gt), abs=1e-12)
    assert M.diff_fg_labels(pred, gt) == len(labels(pred)) - len(labels(gt))
    assert M.abs_diff_fg_labels(pred, gt) == abs(len(labels(pred)) - len(labels(gt)))
    assert M.kumar_aggregated_jaccard_index(pred, gt) == pytest.approx(bf_aji_kumar(pred, gt), abs=1e-12)
    np.testing.assert_allclose(M.panoptic_quality(pred, gt), bf_pq(pred, gt), atol=1e-12)
    np.testing.assert_allclose(M.average_precision(pred, gt), bf_ap(pred, gt, M.AP_THRESHOLDS), atol=1e-12)
    if (gt != 0).any():
        cp, cg = compact(pred), compact(gt)
        np.testing.assert_allclose(M.variation_of_information(pred, gt),
                                   sk_voi(cg, cp, ignore_labels=[0]), rtol=0, atol=1e-9)
        assert M.adapted_rand_error(pred, gt) == pytest.approx(
            sk_arand(cg, cp, ignore_labels=[0])[0], rel=0, abs=1e-9)


def test_cases_cover_every_kernel_path():
    paths = {kernel_path(*random_pair(seed, shape)) for seed, shape in CASES}
    assert paths == {"dense", "lut", "hash"}


@pytest.mark.parametrize("seed,shape", CASES[::3])
def test_overlap_table_matches_unique_pairs(seed, shape):
    pred, gt = random_pair(seed, shape)
    t = M.overlap(pred, gt)
    pairs, counts = np.unique(np.stack([pred.ravel(), gt.ravel()]), axis=1, return_counts=True)
    np.testing.assert_array_equal(t.pred_ids[t.p], pairs[0])
    np.testing.assert_array_equal(t.gt_ids[t.g], pairs[1])
    np.testing.assert_array_equal(t.counts, counts)
    ids, sizes = np.unique(pred, return_counts=True)
    np.testing.assert_array_equal(t.pred_ids, ids)
    np.testing.assert_array_equal(t.pred_sizes, sizes)
    ids, sizes = np.unique(gt, return_counts=True)
    np.testing.assert_array_equal(t.gt_ids, ids)
    np.testing.assert_array_equal(t.gt_sizes, sizes)


@pytest.mark.parametrize("seed,shape", CASES[::5])
def test_evaluate_equals_the_functions(seed, shape):
    pred, gt = random_pair(seed, shape)
    out = M.evaluate(pred, gt)
    assert list(out) == list(M.METRIC_KEYS)
    dq, sq, pq = M.panoptic_quality(pred, gt)
    sq_official, pq_official = M.official_panoptic_quality(pred, gt)
    split, merge = M.variation_of_information(pred, gt)
    ap = M.average_precision(pred, gt)
    expected = {
        "sbd": M.symmetric_best_dice(pred, gt), "best_dice": M.best_dice(pred, gt),
        "fg_bg_dice": M.fg_bg_dice(pred, gt), "dic": M.diff_fg_labels(pred, gt),
        "abs_dic": M.abs_diff_fg_labels(pred, gt), "aji": M.aggregated_jaccard_index(pred, gt),
        "aji_kumar": M.kumar_aggregated_jaccard_index(pred, gt),
        "dice": M.pixel_dice(pred, gt), "pq": pq, "dq": dq, "sq": sq, "pq_official": pq_official,
        "sq_official": sq_official, "ap50": ap[0], "ap75": ap[5],
        "voi_split": split, "voi_merge": merge, "voi": split + merge, "arand": M.adapted_rand_error(pred, gt),
    }
    assert out == pytest.approx(expected, abs=1e-12)
    assert isinstance(out["dic"], int) and all(isinstance(v, (int, float)) for v in out.values())


def test_metric_selection():
    pred, gt = random_pair(3, (20, 20))
    assert list(M.evaluate(pred, gt, ["sbd", "dic"])) == ["sbd", "dic", "abs_dic"]
    assert list(M.evaluate(pred, gt, "voi,pq")) == ["pq", "dq", "sq", "voi_split", "voi_merge", "voi"]
    assert list(M.evaluate(pred, gt, "ap,abs_dic")) == ["abs_dic", "ap50", "ap75"]
    assert list(M.evaluate(pred, gt, "best_dice,fg_bg_dice,dice,arand,aji")) == [
        "best_dice", "fg_bg_dice", "aji", "dice", "arand"]
    assert list(M.evaluate(pred, gt, "f1,aji_kumar")) == ["aji_kumar", "dq"]
    assert list(M.evaluate(pred, gt, "pq_official")) == ["pq_official", "sq_official"]
    with pytest.raises(PEAInputError, match="sdb"):
        M.evaluate(pred, gt, "sbd,sdb")


def test_ap_exact_half_iou_is_matched_once():
    gt = np.zeros((6, 8), np.uint8)
    gt[1:5, 1:5] = 1
    pred = np.zeros_like(gt)
    pred[1:3, 1:5] = 4  # each half has IoU exactly 0.5 with the gt object
    pred[3:5, 1:5] = 9
    ap = M.average_precision(pred, gt, (0.5, 0.55))
    np.testing.assert_allclose(ap, bf_ap(pred, gt, (0.5, 0.55)))
    np.testing.assert_allclose(ap, [1 / 2, 0.0])  # TP 1, FP 1, FN 0 at 0.5
    assert M.panoptic_quality(pred, gt) == (0.0, 0.0, 0.0)  # PQ needs IoU > 0.5


def test_cvppp_reference_agrees_on_consecutive_ids():
    """The CVPPP code loops ids min+1..max and counts max-min; equal to ours for ids 0..n."""
    pred, gt = random_pair(7, (30, 30))
    pred = np.unique(pred, return_inverse=True)[1].reshape(pred.shape)
    gt = np.unique(gt, return_inverse=True)[1].reshape(gt.shape)
    assert pred.min() == 0 and gt.min() == 0

    def cvppp_best_dice(a, b):
        total = 0.0
        for i in range(a.min() + 1, a.max() + 1):
            total += max(2 * ((a == i) & (b == j)).sum() / ((a == i).sum() + (b == j).sum())
                         for j in range(b.min() + 1, b.max() + 1))
        return total / (a.max() - a.min())

    assert M.best_dice(pred, gt) == pytest.approx(cvppp_best_dice(pred, gt), abs=1e-12)
    assert M.diff_fg_labels(pred, gt) == (pred.max() - pred.min()) - (gt.max() - gt.min())


# ---- empty images and small cases ------------------------------------------------------------


def _objects(shape=(10, 12), ids=(3, 70)):
    x = np.zeros(shape, np.int32)
    x[1:4, 1:5] = ids[0]
    x[5:9, 6:11] = ids[1]
    return x


def test_both_empty():
    z = np.zeros((7, 9), np.uint16)
    out = M.evaluate(z, z)
    assert out == {
        "sbd": 1.0, "best_dice": 1.0, "fg_bg_dice": 1.0, "dic": 0, "abs_dic": 0, "aji": 1.0, "aji_kumar": 1.0,
        "dice": 1.0, "pq": 1.0, "dq": 1.0, "sq": 1.0, "pq_official": 1.0, "sq_official": 1.0, "ap50": 1.0, "ap75": 1.0,
        "voi_split": 0.0, "voi_merge": 0.0, "voi": 0.0, "arand": 0.0,
    }
    assert M.evaluate(z[:0], z[:0]) == out


def test_empty_prediction():
    gt, pred = _objects(), np.zeros((10, 12), np.int32)
    out = M.evaluate(pred, gt)
    assert out["sbd"] == 0.0 and out["best_dice"] == 0.0 and bf_best_dice(gt, pred) == 0.0
    assert out["fg_bg_dice"] == out["dice"] == 0.0 == bf_fg_dice(pred, gt)
    assert out["dic"] == -2 and out["abs_dic"] == 2
    assert out["aji"] == out["aji_kumar"] == 0.0 == bf_aji_kumar(pred, gt) == bf_aji_official(pred, gt)
    assert (out["dq"], out["sq"], out["pq"]) == (0.0, 0.0, 0.0)
    assert out["ap50"] == out["ap75"] == 0.0
    assert [out["voi_split"], out["voi_merge"]] == pytest.approx(sk_voi(gt, pred, ignore_labels=[0]), abs=1e-12)
    assert out["arand"] == pytest.approx(sk_arand(gt, pred, ignore_labels=[0])[0], abs=1e-12)


def test_empty_ground_truth():
    pred, gt = _objects(), np.zeros((10, 12), np.uint8)
    out = M.evaluate(pred, gt)
    assert out["sbd"] == 0.0 and out["best_dice"] == 0.0
    assert out["fg_bg_dice"] == 0.0 and out["aji"] == 0.0 and out["pq"] == 0.0 and out["ap50"] == 0.0
    assert out["dic"] == 2
    # every voxel has gt 0, so VOI and ARAND have nothing to score (skimage divides by zero)
    assert (out["voi_split"], out["voi_merge"], out["arand"]) == (0.0, 0.0, 0.0)


def test_one_label_each():
    gt = np.zeros((8, 8), np.uint8)
    gt[2:6, 2:6] = 5
    pred = np.zeros((8, 8), np.int64)
    pred[2:6, 3:7] = 1000
    inter, union = 12, 20
    out = M.evaluate(pred, gt)
    assert out["sbd"] == pytest.approx(2 * inter / 32)
    assert out["aji"] == pytest.approx(inter / union)
    assert (out["dq"], out["sq"]) == pytest.approx((1.0, inter / union))
    assert out["ap50"] == 1.0 and out["ap75"] == 0.0
    assert out["dic"] == 0


def test_identical_images_are_perfect():
    pred, gt = random_pair(11, (25, 31))
    out = M.evaluate(gt, gt)
    for key in ("sbd", "best_dice", "fg_bg_dice", "aji", "aji_kumar", "dice", "pq", "dq", "sq", "ap50", "ap75"):
        assert out[key] == pytest.approx(1.0)
    assert out["dic"] == 0 and out["voi"] == pytest.approx(0.0, abs=1e-12) and out["arand"] == pytest.approx(0.0)


def test_arand_single_voxel_segments_is_zero():
    gt = np.arange(1, 13).reshape(3, 4)
    assert M.adapted_rand_error(gt * 7, gt) == 0.0


# ---- dtypes and bad input --------------------------------------------------------------------


def test_dtypes_give_the_same_values():
    pred, gt = random_pair(5, (24, 26))
    pred = np.unique(pred, return_inverse=True)[1].reshape(pred.shape)
    gt = np.unique(gt, return_inverse=True)[1].reshape(gt.shape)
    ref = M.evaluate(pred.astype(np.int64), gt.astype(np.int64))
    for p_dtype, g_dtype in [(np.uint8, np.uint8), (np.int8, np.int16), (np.uint16, np.int64),
                             (np.int64, np.uint64), (np.float32, np.float64), (np.uint32, np.float32)]:
        out = M.evaluate(pred.astype(p_dtype), gt.astype(g_dtype))
        assert out == pytest.approx(ref, abs=1e-12), (p_dtype, g_dtype)
    big = M.evaluate(pred.astype(np.uint64) * np.uint64(2**40) + (pred > 0) * np.uint64(2**64 - 2**48),
                     gt.astype(np.uint64))
    assert big == pytest.approx(ref, abs=1e-12)
    swapped = np.asarray(gt, dtype=">u4")  # non-native byte order
    assert M.evaluate(pred.astype(np.uint32), swapped) == pytest.approx(ref, abs=1e-12)
    mask = gt > 0
    assert M.fg_bg_dice(mask, mask) == 1.0


def test_largest_uint64_id():
    gt = np.zeros((4, 4), np.uint64)
    gt[:2] = 2**64 - 1
    gt[2:, :2] = 1
    t = M.overlap(gt, gt)
    np.testing.assert_array_equal(t.pred_ids, np.array([0, 1, 2**64 - 1], np.uint64))
    np.testing.assert_array_equal(t.pred_sizes, [4, 4, 8])
    assert M.symmetric_best_dice(gt, gt) == 1.0


def test_different_shapes_name_both():
    with pytest.raises(PEAInputError, match=r"\(4, 5\).*\(5, 4\)"):
        M.symmetric_best_dice(np.zeros((4, 5), np.uint8), np.zeros((5, 4), np.uint8))
    with pytest.raises(PEAInputError, match=r"\(2, 4, 5\)"):
        M.evaluate(np.zeros((2, 4, 5), np.uint8), np.zeros((4, 5), np.uint8))


@pytest.mark.parametrize("bad,which,msg", [
    (np.array([[0, 1.5], [2, 3]]), "pred", "fractional"),
    (np.array([[0, -1], [2, 3]], np.int16), "gt", "negative"),
    (np.array([[0, -4.0], [2, 3]]), "pred", "negative"),
    (np.array([[0, np.nan], [2, 3]]), "gt", "non-finite"),
    (np.array([[0, -7], [2, 3]], np.int64), "pred", "negative"),
    (np.array([["a", "b"], ["c", "d"]]), "gt", "dtype"),
])
def test_bad_labels(bad, which, msg):
    good = np.zeros((2, 2), np.uint64)
    args = (bad, good) if which == "pred" else (good, bad)
    with pytest.raises(PEAInputError, match=f"{which} has {msg}.*\\(2, 2\\)"):
        M.evaluate(*args)


# ---- the paper code's AJI and PQ -------------------------------------------------------------

OFFICIAL = Path(__file__).resolve().parent / "data" / "official"


def bf_aji_official(pred, gt):
    """The reference loop on consecutive ids: gt ids 1..max, prediction ids 1..max, a taken
    prediction scores intersection 0 and union |gt|, the first highest I / (U + 1e-4) wins."""
    pred, gt = relabel_sequential(pred)[0], relabel_sequential(gt)[0]
    if pred.max() == 0 and gt.max() == 0:
        return 1.0
    n_pred = int(pred.max())
    taken = np.zeros(n_pred + 1, bool)
    inter = union = 0
    for g in range(1, int(gt.max()) + 1):
        m = gt == g
        if n_pred == 0:
            union += m.sum()
            continue
        cand = []
        for p in range(1, n_pred + 1):
            if taken[p]:
                cand.append((0, m.sum()))
            else:
                i = np.logical_and(m, pred == p).sum()
                cand.append((i, m.sum() + (pred == p).sum() - i))
        hit = int(np.argmax([i / (u + 1e-4) for i, u in cand]))
        inter, union = inter + cand[hit][0], union + cand[hit][1]
        taken[hit + 1] = True
    union += sum((pred == p).sum() for p in range(1, n_pred + 1) if not taken[p])
    return inter / union


@pytest.mark.parametrize("seed,shape", CASES[::3])
def test_official_aji_matches_the_reference_loop(seed, shape):
    pred, gt = random_pair(seed, shape)
    assert M.aggregated_jaccard_index(pred, gt) == pytest.approx(bf_aji_official(pred, gt), abs=1e-12)


def test_official_aji_takes_each_prediction_once():
    gt = np.zeros((6, 12), np.uint8)
    gt[:, :6], gt[:, 6:] = 1, 2
    pred = np.zeros_like(gt)
    pred[:, :10] = 1  # one prediction covers both gt objects
    # Kumar: both gt objects take prediction 1; official: object 2 finds it taken
    assert M.kumar_aggregated_jaccard_index(pred, gt) == pytest.approx((36 + 24) / (60 + 72))
    assert M.aggregated_jaccard_index(pred, gt) == pytest.approx(36 / (60 + 36))


def test_official_aji_missed_object_takes_the_first_prediction():
    """A gt object overlapping no free prediction takes the first prediction if it is free
    (the reference's argmax over zeros), so that prediction is lost to later gt objects."""
    gt = np.zeros((4, 12), np.uint8)
    gt[:, :2], gt[:, 8:] = 1, 2
    pred = np.zeros_like(gt)
    pred[:, 8:] = 5
    assert M.aggregated_jaccard_index(pred, gt) == pytest.approx(0 / (8 + 16 + 16))
    assert M.aggregated_jaccard_index(pred, gt) == pytest.approx(bf_aji_official(pred, gt))
    assert M.kumar_aggregated_jaccard_index(pred, gt) == pytest.approx(16 / 24)


def test_fixture_metrics_of_the_paper_code():
    """AJI, DQ, SQ, PQ and Dice of the authors' code on six cases, through `evaluate`."""
    data = np.load(OFFICIAL / "bbbc039v1_metrics.npz")
    for case, (aji, dq, sq, pq, dice) in enumerate(data["table"]):
        out = M.evaluate(data[f"case{case}_pred"], data[f"case{case}_gt"], "aji,f1,pq_official,dice")
        assert list(out) == ["aji", "dice", "dq", "pq_official", "sq_official"]
        got = [out["aji"], out["dq"], out["sq_official"], out["pq_official"], out["dice"]]
        np.testing.assert_allclose(got, [aji, dq, sq, pq, dice], rtol=0, atol=1e-9, err_msg=f"case {case}")


def bf_aji_range(pred, gt):
    """The paper code's loop as its outputs show it (tests/data/official/round2/README.md):
    literal gt ids 1..max(gt) and prediction ids 1..max(pred), missing ones empty; a taken
    prediction scores (0, |gt object|); IoU = I / U, 0/0 = nan; np.argmax takes the first nan,
    else the first maximum; predictions never taken add their areas."""
    n_pred = int(pred.max())
    taken = np.zeros(n_pred + 1, bool)
    inter = union = 0
    for g in range(1, int(gt.max()) + 1):
        m = gt == g
        cand = [(0, m.sum()) if taken[p] else ((m & (pred == p)).sum(), (m | (pred == p)).sum())
                for p in range(1, n_pred + 1)]
        with np.errstate(invalid="ignore"):
            iou = np.array([i for i, _ in cand], float) / np.array([u for _, u in cand], float)
        hit = int(np.argmax(iou))
        inter, union = inter + cand[hit][0], union + cand[hit][1]
        taken[hit + 1] = True
    union += sum((pred == p).sum() for p in range(1, n_pred + 1) if not taken[p])
    return inter / union


def gapped(rng, x):
    """`x` (ids 0..n) with its ids spread over 1..2n + 2 in order, id 1 kept or not at random."""
    n = int(x.max())
    ids = np.sort(rng.choice(np.arange(2, 2 * n + 3), n, replace=False))
    if rng.random() < 0.5:
        ids[0] = 1
    return np.concatenate([[0], ids])[x]


@pytest.mark.parametrize("seed", range(24))
def test_aji_over_the_id_range_matches_the_reference_loop(seed):
    rng = np.random.default_rng(seed)
    pred, gt = (compact(x) for x in random_pair(seed, (int(rng.integers(12, 30)), int(rng.integers(12, 30)))))
    if gt.max() == 0 or pred.max() == 0:
        return
    if seed % 3:
        gt = gapped(rng, gt)
    if seed % 2:
        pred = gapped(rng, pred)
    assert M.aggregated_jaccard_index(pred, gt, ids="range") == pytest.approx(bf_aji_range(pred, gt), abs=1e-12)
    assert M.evaluate(pred, gt, "aji", aji_ids="range")["aji"] == M.aggregated_jaccard_index(pred, gt, ids="range")


def test_aji_over_the_id_range_by_hand():
    """gt ids 2 and 3 (1 missing), predictions 1 (on gt 2) and 2 (elsewhere). The empty gt 1
    takes prediction 1 (IoU 0 with every free prediction, no nan yet), so gt 2 finds no free
    overlapping prediction and takes the first, already taken: (0, |gt 2|)."""
    gt = np.zeros((4, 12), np.uint8)
    gt[:, :3], gt[:, 3:6] = 2, 3
    pred = np.zeros_like(gt)
    pred[:, :3], pred[:, 8:] = 1, 2
    # range: I 0; U |p1| 12 + |g2| 12 + |g3| 12 (fallback, p1 taken) + |p2| 16 never taken
    assert M.aggregated_jaccard_index(pred, gt, ids="range") == pytest.approx(0 / (12 + 12 + 12 + 16))
    # present: gt 2 takes p1 (I 12, U 12); gt 3 overlaps nothing free: U 12 (p1 taken); p2 16
    assert M.aggregated_jaccard_index(pred, gt) == pytest.approx(12 / (12 + 12 + 16))
    with pytest.raises(ValueError, match="aji_ids"):
        M.aggregated_jaccard_index(pred, gt, ids="all")


def test_aji_over_the_id_range_without_prediction_1():
    """gt 1 overlaps no prediction and the prediction ids are 2 and 3: its fallback is the
    missing prediction 1 (adds |gt 1| only), so prediction 2 stays free for gt 2; counting the
    ids present, the fallback takes prediction 2 (the smallest) and gt 2 finds it taken."""
    gt = np.zeros((4, 12), np.uint8)
    gt[:, :3], gt[:, 6:9] = 1, 2
    pred = np.zeros_like(gt)
    pred[:, 6:9], pred[:, 10:] = 2, 3
    assert M.aggregated_jaccard_index(pred, gt, ids="range") == pytest.approx(12 / (12 + 12 + 8))
    assert bf_aji_range(pred, gt) == pytest.approx(12 / (12 + 12 + 8))
    assert M.aggregated_jaccard_index(pred, gt) == pytest.approx(0 / (24 + 12 + 8))
