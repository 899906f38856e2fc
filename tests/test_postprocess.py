"""Post-processing on ground-truth affinities, small-object merging (both rules), and the
paper code's 3D fragments and multicut against its outputs (tests/data/official)."""
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.measure import label as connected

from pea.affinity import EM_OFFSETS, affinity_targets, offsets_from_shifts
from pea.config import make_config
from pea.inference import finish, partition
from pea.settings import segment_options
from pea.metrics import symmetric_best_dice
from pea.postprocess import (dt_watershed_fragments, fortran_numbering, maxima_fragments, merge_small_objects,
                             mutex_watershed, official_multicut, waterz_segment)

OFFICIAL = Path(__file__).resolve().parent / "data" / "official"
WINDOW_PASSES = {"cvppp": [(5, 5), (20, 11), (50, 11), (300, 21)],
                 "bbbc039v1": [(5, 5), (25, 11), (50, 11), (100, 21)]}


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


def test_fortran_numbering_by_hand():
    """Ids 1..n in order of first appearance scanning the first axis fastest (column by column
    in 2D), 0 kept; in 3D the first axis is the fastest too."""
    seg = np.array([[0, 50, 50, 9], [70, 0, 9, 9], [70, 30, 30, 0]])
    np.testing.assert_array_equal(fortran_numbering(seg), [[0, 2, 2, 4], [1, 0, 4, 4], [1, 3, 3, 0]])
    vol = np.zeros((2, 2, 2), int)
    vol[1, 0, 0], vol[0, 1, 0], vol[0, 0, 1] = 8, 6, 7  # met in the order (1,0,0), (0,1,0), (0,0,1)
    assert [fortran_numbering(vol)[i] for i in [(1, 0, 0), (0, 1, 0), (0, 0, 1)]] == [1, 2, 3]


def test_mutex_watershed_numbering():
    labels = np.zeros((20, 20), np.int64)
    labels[2:9, 12:18], labels[11:18, 2:9], labels[11:18, 12:18] = 1, 2, 3
    offsets = offsets_from_shifts([1, 3])
    fortran = mutex_watershed(_gt_affs(labels, offsets), offsets, [1, 1], mask=labels > 0, numbering="fortran")
    # column by column: object 2 (from column 2), then 1 and 3 (column 12, rows 2 and 11)
    np.testing.assert_array_equal(fortran, np.array([0, 2, 1, 3])[labels])
    assert _same_partition(mutex_watershed(_gt_affs(labels, offsets), offsets, [1, 1], mask=labels > 0), labels)
    with pytest.raises(ValueError, match="numbering"):
        mutex_watershed(_gt_affs(labels, offsets), offsets, [1, 1], numbering="c")


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


# -- the window rule (the paper code's) ------------------------------------------------------
@pytest.mark.parametrize("passes", list(WINDOW_PASSES))
@pytest.mark.parametrize("case", range(4))
def test_window_rule_reproduces_the_paper_code(passes, case):
    data = np.load(OFFICIAL / "merge_small_objects.npz")
    seg = data[f"{passes}_{case}_input"]
    before = seg.copy()
    out = merge_small_objects(seg, WINDOW_PASSES[passes], rule="window")
    np.testing.assert_array_equal(out, data[f"{passes}_{case}_output"])  # same ids, not renumbered
    np.testing.assert_array_equal(seg, before)  # the input is left alone


def test_window_rule_hand_cases():
    seg = np.full((12, 12), 2, np.uint16)
    seg[:, :5] = 1
    seg[6] = 0
    seg[4:6, 5:7] = 7  # 4 px, centroid (4, 5): its 5x5 window is rows 2..6, cols 3..7
    out = merge_small_objects(seg, [(4, 5)], rule="window")
    # 1 and 2 have 8 px each there, 0 has 5, 7 has 4: ties go to the smaller id
    assert (out[4:6, 5:7] == 1).all() and (out[seg != 7] == seg[seg != 7]).all()
    # near the top-left corner the window start is negative: the crop is empty, nothing happens
    # (a clipped window would hold 9, 1 and 2)
    corner = np.full((12, 12), 2, np.uint16)
    corner[:, :2] = 1
    corner[0, 0] = 9
    np.testing.assert_array_equal(merge_small_objects(corner, [(1, 5)], rule="window"), corner)
    # only two values in the window (the object and its surrounding): it stays
    alone = np.zeros((12, 12), np.uint16)
    alone[5:7, 5:7] = 3
    np.testing.assert_array_equal(merge_small_objects(alone, [(4, 5)], rule="window"), alone)


def test_window_rule_background_first_takes_the_next_value():
    seg = np.zeros((11, 11), np.uint16)
    seg[0:2, :] = 4  # 22 px, partly inside the window
    seg[4:7, 4:7] = 5  # 9 px at the centre; background dominates its window
    # 7x7 window rows 2..8: only 0 and 5, so it stays
    np.testing.assert_array_equal(merge_small_objects(seg, [(9, 7)], rule="window"), seg)
    # 9x9 window rows 1..9, cols 1..9: 0 has 63, 4 and 5 have 9 each (tie: the smaller id) -> 4
    assert (merge_small_objects(seg, [(9, 9)], rule="window")[4:7, 4:7] == 4).all()
    # with 3 px of 4 left in that window, background comes first and the object itself second:
    # it takes the third value
    seg[1, :] = 0
    seg[1, 1:4] = 4
    assert (merge_small_objects(seg, [(9, 9)], rule="window")[4:7, 4:7] == 4).all()
    # an object that comes first in its window keeps its id
    seg[4:7, 4:7] = 0
    seg[2:9, 2:9] = 5
    np.testing.assert_array_equal(merge_small_objects(seg, [(49, 9)], rule="window"), seg)


def test_unknown_merge_rule():
    with pytest.raises(ValueError, match="contact, window"):
        merge_small_objects(np.zeros((4, 4), int), [3], rule="nearest")


# -- the paper code's 3D fragments, waterz and multicut ---------------------------------------
@pytest.fixture(scope="module")
def official_3d():
    return dict(np.load(OFFICIAL / "ac3ac4_postprocess.npz"))


def _one_to_one(a, b):
    """a and b are the same partition (ids renamed one to one)."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return pairs.shape[1] == np.unique(a).size == np.unique(b).size


def test_maxima_fragments_reproduce_the_paper_code(official_3d):
    frags = maxima_fragments(official_3d["affs"])
    np.testing.assert_array_equal(frags + 1, official_3d["fragments"])  # the reference counts from 2
    assert all(np.intersect1d(np.unique(frags[z]), np.unique(frags[z + 1])).size == 0 for z in range(9))


def test_waterz_on_maxima_fragments_reproduces_the_paper_code(official_3d):
    affs = official_3d["affs"]
    seg = waterz_segment(affs, 0.5, fragments=maxima_fragments(affs))
    assert _one_to_one(seg, official_3d["waterz"])


def test_official_multicut_reproduces_the_paper_code(official_3d):
    affs = official_3d["affs"]
    np.testing.assert_array_equal(dt_watershed_fragments(affs), official_3d["lmc_fragments"])
    assert _one_to_one(official_multicut(affs, EM_OFFSETS), official_3d["lmc"])


def test_median_scoring_is_the_authors_validation_waterz(official_3d):
    """waterz_scoring median: the scoring function of the authors' AC3/AC4 validation
    (scripts_ac3ac4/main.py), on the same fragments; it merges otherwise than the mean."""
    import waterz

    affs = official_3d["affs"]
    frags = maxima_fragments(affs)
    expected = next(iter(waterz.agglomerate(
        np.ascontiguousarray(affs[:3]), [0.5], fragments=frags.astype(np.uint64), discretize_queue=256,
        scoring_function="OneMinus<HistogramQuantileAffinity<RegionGraphType, 50, ScoreValue, 256>>")))
    median = partition(affs, EM_OFFSETS[:3], ["waterz"], fragments="official", waterz_scoring="median")["waterz"]
    assert _one_to_one(median, expected)
    assert not _one_to_one(median, official_3d["waterz"])  # the mean scoring's result
    with pytest.raises(ValueError, match="waterz scoring"):
        partition(affs, EM_OFFSETS[:3], ["waterz"], waterz_scoring="max")


# -- the config keys select the variants ------------------------------------------------------
def test_fragments_key_selects_the_graph(official_3d):
    affs = official_3d["affs"]
    for mode in ("project", "official"):
        test = segment_options(make_config({"TEST": {"fragments": mode}}).TEST)
        segs = partition(affs, EM_OFFSETS[:3], ["waterz", "lmc"], fragments=test.fragments)
        if mode == "official":
            assert _one_to_one(segs["waterz"], official_3d["waterz"])
            assert _one_to_one(segs["lmc"], official_3d["lmc"])
        else:
            assert not _one_to_one(segs["waterz"], official_3d["waterz"])
            assert not _one_to_one(segs["lmc"], official_3d["lmc"])


def test_merge_rule_key_selects_the_rule():
    data = np.load(OFFICIAL / "merge_small_objects.npz")
    seg, ref = data["cvppp_0_input"], data["cvppp_0_output"]
    window = segment_options(make_config({"TEST": {"merge_rule": "window", "small_objects": WINDOW_PASSES["cvppp"]}}).TEST)
    out = finish(seg, seg.shape, small_objects=window.small_objects, merge_rule=window.merge_rule)
    assert _one_to_one(out, ref) and out.max() == np.unique(ref).size - 1  # ids 1..N
    contact = segment_options(make_config({"TEST": {"small_objects": [5, 20, 50, 300]}}).TEST)
    merged = finish(seg, seg.shape, small_objects=contact.small_objects, merge_rule=contact.merge_rule)
    np.testing.assert_array_equal(merged, merge_small_objects(seg, [5, 20, 50, 300]))
