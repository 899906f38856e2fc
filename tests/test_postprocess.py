"""Post-processing on ground-truth affinities, and small-object merging."""
import numpy as np
import torch
from skimage.measure import label as connected

from pea.affinity import affinity_targets, offsets_from_shifts
from pea.metrics import symmetric_best_dice
from pea.postprocess import merge_small_objects, mutex_watershed


def _gt_affs(labels, offsets):
    target, _ = affinity_targets(torch.from_numpy(labels.astype(np.int64))[None], offsets)
    return target[0].numpy()


def _same_partition(a, b):
    """True when a and b are equal up to renaming the ids."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def test_mutex_watershed_recovers_connected_instances():
    rng = np.random.default_rng(0)
    offsets = offsets_from_shifts([1, 3, 5, 9, 27])
    for _ in range(5):
        coarse = rng.integers(0, 6, size=(8, 8))
        labels = np.kron(coarse, np.ones((12, 12), int))
        labels = connected(labels, background=0, connectivity=1)  # instances are connected
        fg = labels > 0
        seg = mutex_watershed(_gt_affs(labels, offsets), offsets, [1, 1], mask=fg)
        assert (seg[~fg] == 0).all()
        assert _same_partition(seg[fg], labels[fg])


def test_mutex_watershed_with_strides_on_blobs():
    rng = np.random.default_rng(1)
    offsets = offsets_from_shifts([1, 3, 5, 9, 27])
    yy, xx = np.mgrid[:120, :120]
    labels = np.zeros((120, 120), int)
    for i in range(1, 9):
        cy, cx, r = rng.integers(15, 105), rng.integers(15, 105), rng.integers(8, 18)
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = i
    labels = connected(labels, background=0, connectivity=1)
    seg = mutex_watershed(_gt_affs(labels, offsets), offsets, [5, 5], mask=labels > 0)
    assert symmetric_best_dice(seg, labels) > 0.99


def test_merge_small_objects():
    seg = np.zeros((10, 12), int)
    seg[:, :6] = 1
    seg[:, 6:] = 2
    seg[0:2, 0:2] = 3  # 4 px inside 1
    seg[4:6, 5:7] = 4  # 4 px on the 1|2 border, touching 1 on 3 sides... and 2
    seg[9, 11] = 5  # 1 px in 2
    out = merge_small_objects(seg, [5])
    assert len(np.unique(out)) == 2
    assert (out[0:2, 0:2] == out[5, 0]).all()
    assert out[9, 11] == out[0, 11]
    # an isolated small object (background all around) is kept
    iso = np.zeros((8, 8), int)
    iso[3:5, 3:5] = 7
    np.testing.assert_array_equal(merge_small_objects(iso, [10]) > 0, iso > 0)


def test_merge_small_objects_dominant_neighbour():
    seg = np.zeros((9, 9), int)
    seg[:, :4] = 1
    seg[:, 5:] = 2
    seg[3:6, 4] = 3  # touches 1 and 2 equally on the sides...
    seg[6, 4] = 2  # ... and 2 once more below
    out = merge_small_objects(seg, [4])
    assert out[4, 4] == out[0, 8]
