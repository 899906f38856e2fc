"""Blockwise 3D against the whole volume: block affinities equal the whole-volume ones (both
blendings), the region graph merged from blocks is elf's RAG of the whole volume with the same
edge statistics, and the global agglomeration equals waterz, multicut_segment and the contact
rule on the whole volume for the same fragments."""
from dataclasses import asdict

import h5py
import numpy as np
import pytest
import torch
import zarr
from checkpoints import EM_OVERRIDE, project_checkpoint
from scipy import ndimage

from pea import settings
from pea.affinity import EM_OFFSETS
from pea.blockrun import Executor, dask_client
from pea.blockwise import halo_box, segment_blockwise
from pea.checkpoint import load_checkpoint, model_from_checkpoint
from pea.config import make_config
from pea.inference import predict
from pea.models import build_model
from pea.postprocess import WATERZ_SCORE, fragments_3d, merge_small_objects, multicut_segment, waterz_segment
from pea.regiongraph import (ALL_COUNT, ALL_SUM, NN_COUNT, NN_SUM, edge_statistics, face_edges,
                             mean_affinity_agglomeration, merge_edges, merge_small_segments, multicut_labels)
from pea.settings import predict_options
from pea.stitch import mutex_blockwise
from pea.windows import WindowGrid, read_reflected

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1).shape[1]
    return pairs == np.unique(a).size == np.unique(b).size


def _tiles(shape, block):
    return [tuple(slice(a, min(a + b, n)) for a, b, n in zip(start, block, shape))
            for start in np.ndindex(*[-(-n // b) for n, b in zip(shape, block)])
            for start in [tuple(i * b for i, b in zip(start, block))]]


def _affinities(shape=(10, 40, 48), seed=0) -> np.ndarray:
    """Smooth random affinities in [0, 1] for the 12 EM offsets."""
    raw = ndimage.gaussian_filter(np.random.default_rng(seed).random((12,) + shape), (0, 1, 2, 2))
    return ((raw - raw.min()) / (raw.max() - raw.min())).astype(np.float32)


def _to_input(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis((x - 0.5) / 0.25, -1, 0)))[None].float()


def test_reflected_reads_match_numpy_padding():
    volume = np.arange(5 * 6 * 7).reshape(5, 6, 7)
    padded = np.pad(volume, [(7, 7), (3, 3), (9, 9)], mode="reflect")  # deeper than the axis too
    for box in [[(-7, 12), (-3, 9), (-9, 16)], [(-2, 3), (4, 9), (0, 7)], [(3, 8), (-1, 2), (5, 13)]]:
        expected = padded[tuple(slice(a + p, b + p) for (a, b), p in zip(box, (7, 3, 9)))]
        np.testing.assert_array_equal(read_reflected(volume, box), expected)


@pytest.mark.parametrize("blend", ["ramp", "gaussian"])
def test_block_affinities_equal_the_whole_volume(blend):
    torch.manual_seed(0)
    model = build_model({"backbone": "superhuman_official", "in_channels": 1, "filters": [4, 4, 6, 6, 8]}).eval()
    shape = (10, 40, 48)
    volume = np.random.default_rng(1).random(shape + (1,), dtype=np.float32)
    grid = WindowGrid.create(shape, EM_OFFSETS, (6, 32, 32), (2, 8, 8), blend, (2, 8, 8))
    whole = grid.blend(model, volume, tuple(slice(0, n) for n in shape), _to_input)
    for box in _tiles(shape, (5, 20, 24)):
        got = grid.blend(model, volume, box, _to_input)
        np.testing.assert_allclose(got, whole[(slice(None),) + box], rtol=0, atol=1e-5)
    assert grid.cost((5, 20, 24)) > 1


def _block_fragments(affs, block):
    """Fragments of each block on its own (as the blockwise run makes them), ids 1..N overall."""
    frags = np.zeros(affs.shape[1:], np.uint64)
    for box in _tiles(frags.shape, block):
        local = fragments_3d(affs[(slice(None),) + box])
        frags[box] = local + np.uint64(frags.max())
    return frags


def _blockwise_graph(frags, affs, block):
    parts = []
    for box in _tiles(frags.shape, block):
        read, inner = halo_box(box, EM_OFFSETS, frags.shape)
        parts.append(edge_statistics(frags[read], affs[(slice(None),) + box], EM_OFFSETS, inner))
    return face_edges(*merge_edges(parts))


def test_merged_block_graphs_are_the_whole_volume_rag():
    from elf.segmentation import features as feats

    affs = _affinities()
    frags = _block_fragments(affs, (4, 16, 20))
    uv, stats = _blockwise_graph(frags, affs, (4, 16, 20))
    rag = feats.compute_rag(frags)
    np.testing.assert_array_equal(uv, np.asarray(rag.uv_ids()))
    every = feats.compute_affinity_features(rag, frags, 1.0 - affs, [list(o) for o in EM_OFFSETS])
    np.testing.assert_allclose(1.0 - stats[:, ALL_SUM] / stats[:, ALL_COUNT], every[:, 0], atol=1e-6)
    np.testing.assert_array_equal(stats[:, ALL_COUNT], every[:, -1])
    nearest = feats.compute_affinity_features(rag, frags, 1.0 - affs[:3], [list(o) for o in EM_OFFSETS[:3]])
    np.testing.assert_allclose(1.0 - stats[:, NN_SUM] / stats[:, NN_COUNT], nearest[:, 0], atol=1e-6)
    lengths = feats.compute_boundary_mean_and_length(rag, frags, 1.0 - affs[0])[:, 1]
    np.testing.assert_array_equal(stats[:, NN_COUNT], lengths)


@pytest.mark.parametrize("bins", [0, 256])
@pytest.mark.parametrize("threshold", [0.3, 0.5])
def test_mean_affinity_agglomeration_is_waterz(bins, threshold):
    import waterz

    affs = _affinities(seed=2)
    frags = _block_fragments(affs, (5, 20, 24))
    uv, stats = _blockwise_graph(frags, affs, (5, 20, 24))
    roots = mean_affinity_agglomeration(int(frags.max()) + 1, uv, stats[:, NN_SUM], stats[:, NN_COUNT], threshold, bins)
    expected = next(iter(waterz.agglomerate(np.ascontiguousarray(affs[:3]), [threshold], fragments=frags.copy(),
                                            scoring_function=WATERZ_SCORE, discretize_queue=bins)))
    assert 1 < np.unique(expected).size < frags.max()
    assert same_partition(roots[frags], expected)


def test_multicut_and_small_objects_on_the_merged_graph():
    affs = _affinities(seed=3)
    frags = _block_fragments(affs, (5, 20, 24))
    uv, stats = _blockwise_graph(frags, affs, (5, 20, 24))
    n = int(frags.max()) + 1
    labels = multicut_labels(n, uv, 1.0 - stats[:, ALL_SUM] / stats[:, ALL_COUNT], stats[:, ALL_COUNT])
    assert same_partition(labels[frags], multicut_segment(affs, EM_OFFSETS, fragments=frags))
    roots = mean_affinity_agglomeration(n, uv, stats[:, NN_SUM], stats[:, NN_COUNT], 0.5)
    sizes = np.bincount(frags.ravel(), minlength=n).astype(float)
    merged = merge_small_segments(roots, sizes, uv.astype(np.int64), stats[:, NN_COUNT], [20, 60])
    expected = merge_small_objects(roots[frags], [20, 60], "contact")
    assert np.bincount(roots[frags].ravel()).min() < 20 and same_partition(merged[frags], expected)


def _em_volume(path, shape=(10, 40, 48)):
    raw = ndimage.gaussian_filter(np.random.default_rng(4).random(shape), (0.5, 2, 2))
    raw = ((raw - raw.min()) / (raw.max() - raw.min()) * 255).astype(np.uint8)
    with h5py.File(path, "w") as f:
        f.create_dataset("raw", data=raw)
    return raw


@pytest.fixture(scope="module")
def em_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("blockwise")
    cfg = project_checkpoint(tmp / "em.ckpt", "ac3ac4_demo", EM_OVERRIDE)
    raw = _em_volume(tmp / "raw.h5")
    model = model_from_checkpoint(load_checkpoint(tmp / "em.ckpt"), CPU)[0]
    options = asdict(predict_options(make_config(cfg)))
    affs = predict(model, raw[..., None].astype(np.float32) / 255, EM_OFFSETS, device=CPU, **options)[0]
    return tmp, cfg, raw, affs


def _job(tmp, cfg, name, **test):
    cfg = {**cfg, "TEST": {**cfg["TEST"], **test}}
    return settings.blockwise_job(cfg, input=str(tmp / "raw.h5") + ":raw", output=str(tmp / name),
                                  checkpoint=str(tmp / "em.ckpt"), shape=(10, 40, 48), block=(5, 20, 24), device="cpu")


@pytest.mark.parametrize("fragments", ["official", "project"])
def test_blockwise_segmentation_equals_the_whole_volume_for_the_same_fragments(em_run, fragments):
    tmp, cfg, raw, affs = em_run
    job = _job(tmp, cfg, f"{fragments}.zarr", fragments=fragments)
    found = segment_blockwise(job, ["waterz", "lmc"], Executor(progress=False), small_objects=[30])
    out = zarr.open_group(job.output, mode="r")
    np.testing.assert_allclose(out["affinities"][:], affs, rtol=0, atol=1e-5)
    frags = out["fragments"][:]
    assert frags.min() == 1 and frags.max() == out.attrs["fragments"] == np.unique(frags).size
    whole = merge_small_objects(waterz_segment(affs, 0.5, fragments=frags), [30], "contact")
    assert same_partition(out["segmentation"][:], whole) and found["waterz"] == np.unique(whole).size
    if fragments == "official":  # the paper code's costs: nearest offsets, boundary lengths
        mc = multicut_segment(affs[:3], EM_OFFSETS[:3], fragments=frags, edge_sizes="boundary")
    else:
        mc = multicut_segment(affs, EM_OFFSETS, fragments=frags)
    assert same_partition(out["segmentation_lmc"][:], merge_small_objects(mc, [30], "contact"))


def test_blockwise_mutex_watershed_is_the_stitched_block_segmentation(em_run):
    tmp, cfg, raw, affs = em_run
    job = _job(tmp, cfg, "mutex.zarr")
    found = segment_blockwise(job, ["mutex", "waterz"], Executor(progress=False))
    out = zarr.open_group(job.output, mode="r")
    assert out.attrs["arrays"] == {"mutex": "segmentation", "waterz": "segmentation_waterz"}
    expected = mutex_blockwise(out["affinities"][:], EM_OFFSETS, job.block, strides=job.strides)
    np.testing.assert_array_equal(out["segmentation"][:], expected)
    assert found["mutex"] == expected.max() and job.strides == tuple(cfg["TEST"]["strides"])


def _on_cluster(em_run, workers: int, processes: bool):
    tmp, cfg, raw, affs = em_run
    local = _job(tmp, cfg, "local.zarr")
    segment_blockwise(local, ["waterz"], Executor(progress=False))
    cluster = _job(tmp, cfg, f"cluster{int(processes)}.zarr")
    with dask_client(workers, processes=processes) as client:
        segment_blockwise(cluster, ["waterz"], Executor(client, progress=False))
    a, b = zarr.open_group(local.output, mode="r"), zarr.open_group(cluster.output, mode="r")
    np.testing.assert_array_equal(a["affinities"][:], b["affinities"][:])
    np.testing.assert_array_equal(a["segmentation"][:], b["segmentation"][:])


def test_blockwise_on_dask_equals_in_process(em_run):
    _on_cluster(em_run, 2, processes=False)  # the dask.distributed path, worker threads


@pytest.mark.slow
def test_blockwise_on_a_local_cluster_of_processes_equals_in_process(em_run):
    _on_cluster(em_run, 2, processes=True)
