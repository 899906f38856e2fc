"""Time to build every affinity target, class-balanced weight and pyramid target
for one training sample (CVPPP: 544x544, shifts [1,3,5,9,27], pyramid 1/2..1/16).

Compares pea's vectorised slicing with a reference written the way the paper code builds
targets (one scipy.ndimage.shift of the label image per offset, per-channel weight maps, a
separate downsampled label image per pyramid level). Goal: pea under 15 ms.

    python benchmarks/bench_targets.py [--size 544] [--repeats 20]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy import ndimage

from pea.affinity import class_weights, fraction_of_ones, nearest_downsample, offsets_from_shifts, pair_target
from pea.synth.cvppp import make_plant

SHIFTS = [1, 3, 5, 9, 27]
GROUPS = [4, 3, 2, 1]


def levels(labels: torch.Tensor) -> list:
    """(labels, offsets) at full resolution and at 1/2 .. 1/16 with the shortest shifts."""
    offsets = offsets_from_shifts(SHIFTS)
    out = [(labels, offsets)]
    for k, groups in enumerate(GROUPS, start=1):
        shape = [n >> k for n in labels.shape[1:]]
        out.append((nearest_downsample(labels, shape), offsets[: 2 * groups]))
    return out


def pea_training_pairs(labels: torch.Tensor) -> list:
    """What the training loss builds: per offset, the boolean valid-pair targets and the two
    class weights (the weight of a pair is the one of its target's class)."""
    out = []
    for lab, offs in levels(labels):
        for off in offs:
            _, _, t = pair_target(lab, off)
            out.append((t, class_weights(fraction_of_ones(t))))
    return out


def reference(labels: np.ndarray) -> list:
    """Per-offset scipy shifts, as the paper code's data provider does."""
    offsets = offsets_from_shifts(SHIFTS)
    out = []
    levels = [(labels, offsets)]
    for k, groups in enumerate(GROUPS, start=1):
        levels.append((labels[:: 2**k, :: 2**k], offsets[: 2 * groups]))
    for lab, offs in levels:
        lab = lab.astype(np.float32)
        targets, masks, weights = [], [], []
        for off in offs:
            shifted = ndimage.shift(lab, [-o for o in off], order=0, mode="constant", cval=-1)
            target = (shifted == lab).astype(np.float32)
            mask = (shifted != -1).astype(np.float32)
            f = np.clip((target * mask).sum() / max(mask.sum(), 1), 0.05, 0.99)
            w = np.where(target > 0.5, 1.0 if f > 0.5 else (1 - f) / f, f / (1 - f) if f > 0.5 else 1.0)
            targets.append(target)
            masks.append(mask)
            weights.append(w.astype(np.float32))
        out.append((np.stack(targets), np.stack(masks), np.stack(weights)))
    return out


def timeit(fn, arg, repeats: int) -> float:
    fn(arg)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=544)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    torch.set_num_threads(1)
    _, labels = make_plant(np.random.default_rng(0), args.size, args.size, 15)
    lab_t = torch.from_numpy(labels.astype(np.int64))[None]
    # identical values: pea's valid-pair targets and weights against the reference's maps
    pairs_out = iter(pea_training_pairs(lab_t))
    for (lab, offs), (rt, rm, rw) in zip(levels(lab_t), reference(labels)):
        for c, off in enumerate(offs):
            p, _, _ = pair_target(lab, off)
            t, (w_one, w_zero) = next(pairs_out)
            assert rm[c][p].all() and rm[c].sum() == t.numel()
            assert np.array_equal(rt[c][p], t[0].numpy())
            np.testing.assert_allclose(rw[c][p], np.where(t[0].numpy(), float(w_one), float(w_zero)), rtol=1e-5)
    ref = timeit(reference, labels, max(3, args.repeats // 4))
    pairs = timeit(pea_training_pairs, lab_t, args.repeats)
    print(f"targets + masks + weights + pyramid for one {args.size}x{args.size} sample (1 thread, median)")
    print(f"{'method':38s} {'ms':>8s} {'speed-up':>9s}")
    print(f"{'reference (per-offset scipy shift)':38s} {ref * 1e3:8.2f} {1.0:9.1f}")
    print(f"{'pea training (valid pairs only)':38s} {pairs * 1e3:8.2f} {ref / pairs:9.1f}")
    goal = pairs * 1e3
    print(f"goal < 15 ms: {'met' if goal < 15 else 'NOT met'} ({goal:.2f} ms)")


if __name__ == "__main__":
    main()
