"""Speed of pea.metrics against the per-label-pair CVPPP SBD and skimage's VOI / adapted Rand.

    python benchmarks/bench_metrics.py            # 530x500 SBD, 100x1024x1024 VOI+ARAND (~1 GB RAM)
    python benchmarks/bench_metrics.py --quick    # small sizes, a few seconds

(a) SBD on a leaf-like 2D image pair, against BestDice as the CVPPP reference code computes it
(for each label of a, for each label of b: build both masks, Dice); goal >= 100x at the same value.
(b) VOI (split, merge) + ARAND on an EM-like 3D volume pair, against
skimage.metrics.variation_of_information(gt, pred, ignore_labels=[0]) and
adapted_rand_error(gt, pred, ignore_labels=[0]); goal >= 3x at the same value.
Times are the best of --repeats runs (the references run once when slower than 5 s).
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np
from scipy import ndimage

from pea import metrics


def best_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
        if best > 5.0:
            break
    return best, out


# ---- data ------------------------------------------------------------------------------------


def leaves(shape: tuple[int, int], n: int, rng: np.random.Generator, jitter: float = 0.0) -> np.ndarray:
    """A rosette: a disc cut into `n` angular, radius-dependent sectors (ids 1..n)."""
    yy, xx = np.indices(shape, dtype=np.float64)
    cy, cx = shape[0] / 2, shape[1] / 2
    r = np.hypot(yy - cy, xx - cx)
    theta = np.arctan2(yy - cy, xx - cx) + 0.004 * r * (1 + jitter)
    edges = np.sort(rng.uniform(-np.pi, np.pi, n))
    ids = np.searchsorted(edges, theta) % n + 1
    radius = 0.45 * min(shape) * (1 + 0.15 * np.sin(3 * theta + jitter))
    return np.where(r < radius, ids, 0).astype(np.uint16)


def sbd_pair(shape: tuple[int, int], n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Leaves (gt) and a slightly twisted copy with two leaves merged (pred)."""
    gt = leaves(shape, n, np.random.default_rng(seed))
    pred = leaves(shape, n, np.random.default_rng(seed), jitter=0.02)
    pred[pred == 2] = 1
    return pred, gt


def em_pair(shape: tuple[int, int, int], n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Voronoi cells with 0-valued membranes (gt) and a shifted, partly merged Voronoi (pred)."""
    rng = np.random.default_rng(seed)
    factor = (4, 8, 8)
    coarse = tuple(-(-s // f) for s, f in zip(shape, factor))

    def voronoi(seeds: np.ndarray) -> np.ndarray:
        marker = np.zeros(coarse, np.uint32)
        marker[tuple(seeds.T)] = np.arange(1, len(seeds) + 1)
        idx = ndimage.distance_transform_edt(marker == 0, return_distances=False, return_indices=True)
        cells = marker[tuple(idx)]
        for ax, f in enumerate(factor):
            cells = np.repeat(cells, f, axis=ax)
        return np.ascontiguousarray(cells[tuple(slice(0, s) for s in shape)])

    seeds = np.stack([rng.integers(0, c, n) for c in coarse], axis=1)
    gt = voronoi(seeds)
    gt[:, 1:, :][gt[:, 1:, :] != gt[:, :-1, :]] = 0
    gt[:, :, 1:][gt[:, :, 1:] != gt[:, :, :-1]] = 0
    moved = np.clip(seeds + rng.integers(-1, 2, seeds.shape), 0, np.array(coarse) - 1)
    pred = voronoi(moved)
    merge = rng.random(n + 1) < 0.1
    lut = np.arange(n + 1, dtype=np.uint32)
    lut[merge] = lut[np.maximum(np.flatnonzero(merge) - 1, 1)]
    pred = np.roll(lut[pred], (1, 3, 5), axis=(0, 1, 2))
    return np.ascontiguousarray(pred), gt


# ---- references ------------------------------------------------------------------------------


def cvppp_dice(in_label: np.ndarray, gt_label: np.ndarray, i: int, j: int) -> float:
    """Dice of label i in in_label and label j in gt_label, as the CVPPP evaluation code computes it."""
    one = np.ones(in_label.shape)
    in_mask = in_label == i * one
    gt_mask = gt_label == j * one
    in_size = np.sum(in_mask * one)
    gt_size = np.sum(gt_mask * one)
    overlap = np.sum(in_mask * gt_mask * one)
    return 2 * overlap / (in_size + gt_size) if in_size + gt_size > 1e-8 else 0.0


def cvppp_best_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over labels of a of the best Dice with a label of b, one pair of masks at a time."""
    labels_a = [i for i in np.unique(a) if i != 0]
    labels_b = [j for j in np.unique(b) if j != 0]
    score = 0.0
    for i in labels_a:
        s_max = 0.0
        for j in labels_b:
            s_max = max(s_max, cvppp_dice(a, b, i, j))
        score += s_max
    return score / len(labels_a)


def cvppp_sbd(pred: np.ndarray, gt: np.ndarray) -> float:
    return min(cvppp_best_dice(pred, gt), cvppp_best_dice(gt, pred))


def skimage_voi_arand(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float, float]:
    from skimage.metrics import adapted_rand_error, variation_of_information

    split, merge = variation_of_information(gt, pred, ignore_labels=[0])
    return float(split), float(merge), float(adapted_rand_error(gt, pred, ignore_labels=[0])[0])


def pea_voi_arand(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float, float]:
    split, merge = metrics.variation_of_information(pred, gt)
    return split, merge, metrics.adapted_rand_error(pred, gt)


# ---- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: 265x250 SBD, 16x256x256 volume")
    parser.add_argument("--sbd-shape", type=int, nargs=2, metavar=("H", "W"), help="default 530 500")
    parser.add_argument("--sbd-labels", type=int, default=26, help="leaves drawn (empty ones vanish); default 26")
    parser.add_argument("--vol-shape", type=int, nargs=3, metavar=("Z", "Y", "X"), help="default 100 1024 1024")
    parser.add_argument("--vol-cells", type=int, help="Voronoi cells in the volume; default 4000 (400 quick)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs, best kept; default 5")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sbd_shape = tuple(args.sbd_shape or ((265, 250) if args.quick else (530, 500)))
    vol_shape = tuple(args.vol_shape or ((16, 256, 256) if args.quick else (100, 1024, 1024)))
    cells = args.vol_cells or (400 if args.quick else 4000)

    pred, gt = sbd_pair(sbd_shape, args.sbd_labels, args.seed)
    ours_t, ours = best_time(lambda: metrics.symmetric_best_dice(pred, gt), max(args.repeats, 20))
    ref_t, ref = best_time(lambda: cvppp_sbd(pred, gt), args.repeats)
    n_pred, n_gt = len(np.unique(pred)) - 1, len(np.unique(gt)) - 1
    rows = [("SBD vs CVPPP per-pair", f"{sbd_shape[0]}x{sbd_shape[1]}, {n_pred}/{n_gt} labels",
             ours_t, ref_t, 100.0, abs(ours - ref), 1e-12, f"SBD {ours:.6f} / {ref:.6f}")]

    t0 = time.perf_counter()
    vpred, vgt = em_pair(vol_shape, cells, args.seed)
    print(f"built the {vol_shape} volumes in {time.perf_counter() - t0:.1f} s "
          f"({len(np.unique(vpred)) - 1} pred / {len(np.unique(vgt)) - 1} gt labels)")
    table_t, _ = best_time(lambda: metrics.overlap(vpred, vgt), args.repeats)
    ours_t, ours = best_time(lambda: pea_voi_arand(vpred, vgt), args.repeats)
    eval_t, _ = best_time(lambda: metrics.evaluate(vpred, vgt, "voi,arand"), args.repeats)
    ref_t, ref = best_time(lambda: skimage_voi_arand(vpred, vgt), args.repeats)
    size = "x".join(map(str, vol_shape))
    diff = float(np.max(np.abs(np.subtract(ours, ref))))
    rows.append(("VOI+ARAND vs skimage", size, ours_t, ref_t, 3.0, diff, 1e-9,
                 "split/merge/arand " + "/".join(f"{v:.6f}" for v in ours)))

    print(f"\n{'benchmark':<23} {'size':<28} {'pea (s)':>9} {'ref (s)':>9} {'speed-up':>9} {'goal':>6} "
          f"{'max|diff|':>10}  {'met':<4} values (pea / ref)")
    for name, size, ours_t, ref_t, goal, diff, tol, values in rows:
        met = ref_t / ours_t >= goal and diff <= tol
        print(f"{name:<23} {size:<28} {ours_t:>9.4f} {ref_t:>9.3f} {ref_t / ours_t:>8.0f}x {goal:>5.0f}x "
              f"{diff:>10.1e}  {'yes' if met else 'NO':<4} {values}")
    print(f"\nvolume detail: overlap table {table_t:.3f} s; evaluate(metrics='voi,arand') with one table "
          f"{eval_t:.3f} s ({ref_t / eval_t:.0f}x); the two pea calls above build the table twice, as skimage does.")
    print("Timings are wall-clock on shared CPUs and may be noisy.")


if __name__ == "__main__":
    main()
