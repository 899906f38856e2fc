"""The blockwise Mutex Watershed (pea.stitch) against the whole-volume one: equal for one block
and for ideal affinities cut into many blocks; close on noisy affinities, and much closer than
the block segments left unstitched."""
import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.metrics import variation_of_information

from pea.affinity import EM_OFFSETS, affinity_targets
from pea.postprocess import mutex_watershed
from pea.stitch import block_boxes, block_of, mutex_blockwise, mutex_box, overlaps, stitch
from pea.synth.em import make_em_volume

STRIDES = [1, 10, 10]


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1).shape[1]
    return pairs == np.unique(a).size == np.unique(b).size


@pytest.fixture(scope="module")
def objects():
    """EM look-alike objects filling the volume (membranes given to the nearest object)."""
    labels = make_em_volume(np.random.default_rng(2), (12, 96, 96), object_size=14.0)[1]
    nearest = ndimage.distance_transform_edt(labels == 0, return_distances=False, return_indices=True)
    return labels[tuple(nearest)]


def _affinities(labels, noise, seed=0):
    ideal = affinity_targets(torch.from_numpy(labels.astype(np.int64))[None], EM_OFFSETS)[0][0].numpy()
    if not noise:
        return ideal
    rng = np.random.default_rng(seed)
    noisy = ndimage.gaussian_filter(ideal, (0, 0.7, 2, 2)) + noise * rng.standard_normal(ideal.shape)
    return np.clip(noisy, 0, 1).astype(np.float32)


def test_one_block_is_the_whole_volume_mutex_watershed(objects):
    affs = _affinities(objects, 0.15)
    whole = mutex_watershed(affs.copy(), EM_OFFSETS, STRIDES)
    assert same_partition(mutex_blockwise(affs, EM_OFFSETS, objects.shape, strides=STRIDES), whole)


def test_ideal_affinities_cut_into_blocks_are_stitched_back(objects):
    affs = _affinities(objects, 0)
    whole = mutex_watershed(affs.copy(), EM_OFFSETS, STRIDES)
    blocks = mutex_blockwise(affs, EM_OFFSETS, (4, 32, 32), strides=STRIDES)
    cut = [np.unique(objects[box]).size for box in block_boxes(objects.shape, (4, 32, 32))]
    assert sum(cut) > 2 * np.unique(objects).size  # the blocks cut most objects
    assert same_partition(blocks, whole)


def test_noisy_affinities_blockwise_is_close_to_the_whole_volume(objects):
    affs = _affinities(objects, 0.15)
    whole = mutex_watershed(affs.copy(), EM_OFFSETS, STRIDES)
    stitched = sum(variation_of_information(whole, mutex_blockwise(affs, EM_OFFSETS, (6, 48, 48), strides=STRIDES)))
    unstitched = sum(variation_of_information(whole, mutex_blockwise(affs, EM_OFFSETS, (6, 48, 48), strides=STRIDES,
                                                                     threshold=2.0)))  # nothing joins
    assert stitched < 0.1 and stitched < unstitched / 10


def test_overlaps_count_near_the_block_and_stitch_needs_both_sides():
    mine = np.zeros((1, 1, 10), np.uint64)
    mine[..., 4:10] = 1  # the block is x 4:6 of the grown box; segment 1 runs out to x 10
    theirs = np.array([[[5, 5, 5, 5, 0, 0, 6, 6, 7, 7]]], np.uint64)
    inner = (slice(0, 1), slice(0, 1), slice(4, 6))
    keys, counts = overlaps(mine, theirs, inner, (0, 0, 2))  # within 2 voxels: x 2:4 and 6:8
    assert dict(zip(keys.tolist(), counts.tolist())) == {(1 << 32) + 6: 2.0}
    first_ids = np.array([0, 1, 5])  # block 0: id 1; block 1: ids 2..5; block 2: 6, 7
    assert block_of(np.array([1, 2, 5, 6, 7]), first_ids).tolist() == [0, 1, 1, 2, 2]
    one_way = stitch(8, keys, counts, first_ids)
    assert one_way[1] != one_way[6]  # only block 0 asked
    both = stitch(8, np.r_[keys, np.uint64((6 << 32) + 1)], np.r_[counts, 3.0], first_ids)
    assert both[1] == both[6] and len(set(both[[1, 2, 3, 4, 5, 7]].tolist())) == 6 and both[0] == 0


def test_grown_boxes_start_on_the_stride_grid():
    for box in block_boxes((20, 100, 90), (7, 33, 40)):
        grown, inner = mutex_box(box, (20, 100, 90), (8, 54, 54), STRIDES)
        assert all(g.start % s == 0 and g.start <= b.start and g.stop >= b.stop for g, b, s in zip(grown, box, STRIDES))
        assert all(i.stop - i.start == b.stop - b.start and g.start + i.start == b.start
                   for g, i, b in zip(grown, inner, box))
