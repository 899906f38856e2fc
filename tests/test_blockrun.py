"""Blockwise runs that fail part-way: a block failing once is retried, a block failing always
ends the run with one line and keeps the finished blocks, a run killed with SIGKILL resumes;
each time the result is identical to that of an uninterrupted run. A changed model, config or
input is refused unless --overwrite."""
import itertools
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr
from checkpoints import EM_OVERRIDE, project_checkpoint
from scipy import ndimage

import pea.blockwise as blockwise
from pea import settings
from pea.blockrun import Executor, RunState, cluster_shape, dask_client
from pea.affinity import EM_OFFSETS
from pea.cli import main
from pea.stitch import mutex_blockwise

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
SHAPE, BLOCK = (6, 32, 40), (3, 16, 20)


def _boxes():
    """The blocks in the order the run numbers them (z slowest), written out independently."""
    starts = itertools.product(*[range(0, n, b) for n, b in zip(SHAPE, BLOCK)])
    return [tuple((a, min(a + b, n)) for a, b, n in zip(s, BLOCK, SHAPE)) for s in starts]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("blockrun")
    raw = ndimage.gaussian_filter(np.random.default_rng(4).random(SHAPE), (0.5, 2, 2))
    with h5py.File(tmp / "raw.h5", "w") as f:
        f.create_dataset("raw", data=((raw - raw.min()) / np.ptp(raw) * 255).astype(np.uint8))
    cfg = project_checkpoint(tmp / "em.ckpt", "ac3ac4_demo", EM_OVERRIDE)
    assert main(_argv(tmp, tmp / "reference.zarr")) == 0
    return tmp, zarr.open_group(tmp / "reference.zarr", mode="r"), cfg


def _argv(tmp, out, *extra):
    return ["predict", "--model", str(tmp / "em.ckpt"), "--input", f"{tmp}/raw.h5:raw", "--output", str(out),
            "--device", "cpu", "--workers", "0", "--threads", "1", "--block", *map(str, BLOCK),
            "--partitioner", "waterz", *extra]


# where the arrays of a blockwise run are once `pea predict` has made its output OME-Zarr
PREDICTED = {"affinities": "affinities", "fragments": "labels/fragments/0", "segmentation": "labels/segmentation/0"}


def _assert_identical(out, reference):
    group = zarr.open_group(out, mode="r")
    assert list(group.array_keys()) == ["affinities"] and sorted(group["labels"].group_keys()) == [
        "fragments", "segmentation"]
    for name in PREDICTED.values():
        np.testing.assert_array_equal(group[name][:], reference[name][:], err_msg=name)
    assert group.attrs.asdict() == reference.attrs.asdict()
    assert not (Path(out) / "pea_work").exists()


def test_the_reference_run_is_complete(setup):
    tmp, reference, _ = setup
    assert reference.attrs["pea_run"]["complete"] is True
    assert reference["labels/segmentation/0"][:].min() >= 1


def test_a_block_failing_once_is_retried_to_the_same_result(setup, tmp_path, monkeypatch, capsys):
    tmp, reference, _ = setup
    calls = []
    original = blockwise.fragment_block

    def fails_once(job, index):
        calls.append(index)
        if index == 3 and calls.count(3) == 1:
            raise RuntimeError("planted failure")
        return original(job, index)

    monkeypatch.setattr(blockwise, "fragment_block", fails_once)
    assert main(_argv(tmp, tmp_path / "out.zarr")) == 0
    assert calls.count(3) == 2 and sorted(set(calls)) == list(range(8))
    assert "fragments: block 3 failed (RuntimeError: planted failure), retrying" in capsys.readouterr().err
    _assert_identical(tmp_path / "out.zarr", reference)


def test_dask_retries_a_block_failing_once(setup, tmp_path, monkeypatch):
    tmp, reference, cfg = setup
    tries = tmp_path / "tries"  # a task may run on a copy of the function: count in files
    tries.mkdir()
    original = blockwise.mutex_block

    def fails_once(job, index):
        if index == 6:
            (tries / str(len(list(tries.iterdir())))).touch()
            if len(list(tries.iterdir())) == 1:
                raise RuntimeError("planted failure")
        return original(job, index)

    monkeypatch.setattr(blockwise, "mutex_block", fails_once)
    job = settings.blockwise_job(cfg, input=f"{tmp}/raw.h5:raw", output=str(tmp_path / "out.zarr"),
                                 checkpoint=str(tmp / "em.ckpt"), shape=SHAPE, block=BLOCK, device="cpu", threads=1)
    with dask_client(2, processes=False) as client:  # worker threads: they see the planted fault
        blockwise.segment_blockwise(job, ["waterz", "mutex"], Executor(client, progress=False),
                                    waterz_threshold=cfg["TEST"]["waterz_threshold"],
                                    small_objects=cfg["TEST"]["small_objects"])
    assert len(list(tries.iterdir())) == 2
    out = zarr.open_group(tmp_path / "out.zarr", mode="r")
    for name, predicted in PREDICTED.items():  # segment_blockwise's own layout, the arrays at the root
        np.testing.assert_array_equal(out[name][:], reference[predicted][:])
    expected = mutex_blockwise(out["affinities"][:], EM_OFFSETS, BLOCK, strides=job.strides)
    np.testing.assert_array_equal(out["segmentation_mutex"][:], expected)


def test_a_block_failing_always_stops_the_run_and_a_resume_completes_it(setup, tmp_path, monkeypatch, capsys):
    tmp, reference, _ = setup
    out = tmp_path / "out.zarr"
    original = blockwise.graph_block
    tries = []

    def fails_on_5(job, index, **shared):
        if index == 5:
            tries.append(index)
            raise ValueError("planted fault")
        return original(job, index, **shared)

    monkeypatch.setattr(blockwise, "graph_block", fails_on_5)
    assert main(_argv(tmp, out, "--retries", "1")) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    (z0, z1), (y0, y1), (x0, x1) = _boxes()[5]
    assert line.startswith(f"pea predict: error: block 5 (z {z0}:{z1}, y {y0}:{y1}, x {x0}:{x1}) failed in stage graph")
    assert "ValueError: planted fault" in line and len(tries) == 2
    state = RunState(str(out))
    assert state.done("affinities") == set(range(8)) and state.done("graph") == set(range(8)) - {5}
    assert "segmentation" not in zarr.open_group(out, mode="r")  # nothing of the labels stage yet

    monkeypatch.setattr(blockwise, "graph_block", original)  # the fault removed
    predicted = []
    monkeypatch.setattr(blockwise, "predict_block", lambda job, index: predicted.append(index))
    assert main(_argv(tmp, out)) == 0
    err = capsys.readouterr().err
    assert predicted == [] and "affinities: 8 of 8 block(s) finished before" in err
    assert "graph: 7 of 8 block(s) finished before" in err
    _assert_identical(out, reference)


HOOK = """
import sys, time
import numpy as np
import zarr
import pea.blockwise as blockwise
from pea.cli import main

stage_function, index, flag, array = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
original = getattr(blockwise, stage_function)

def hooked(job, i, **shared):
    result = original(job, i, **shared)
    if i == index:  # written, not yet marked done: garble the block, say so, wait for the kill
        group = zarr.open_group(job.output, mode="r+")
        box = (slice(None),) * (group[array].ndim - 3) + job.boxes[i]
        group[array][box] = np.full(group[array][box].shape, 7, group[array].dtype)
        open(flag, "w").close()
        time.sleep(600)
    return result

setattr(blockwise, stage_function, hooked)
sys.exit(main(sys.argv[5:]))
"""


@pytest.mark.parametrize("stage_function, array", [
    pytest.param("predict_block", "affinities", marks=pytest.mark.slow), ("write_labels", "segmentation")])
def test_a_run_killed_part_way_resumes_to_the_same_result(setup, tmp_path, stage_function, array, capsys):
    tmp, reference, _ = setup
    out, flag = tmp_path / "out.zarr", tmp_path / "killed-here"
    script = tmp_path / "hooked.py"
    script.write_text(HOOK)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(script), stage_function, "4", str(flag), array, *_argv(tmp, out)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not flag.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert flag.exists() and proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    stage = "affinities" if stage_function == "predict_block" else "labels"
    assert RunState(str(out)).done(stage) == {0, 1, 2, 3}  # block 4 written (garbled), not marked
    assert main(_argv(tmp, out)) == 0
    assert re.search(rf"{stage}: 4 of 8 block\(s\) finished before", capsys.readouterr().err)
    _assert_identical(out, reference)


@pytest.mark.parametrize("change, named", [
    (["--set", "TEST.waterz_threshold=0.3"], "config"),
    (["--block", "5", "20", "48"], "block"),
    (["--model", "{tmp}/other.ckpt"], "model"),
    (["--input", "{tmp}/other.h5:raw"], "input"),
])
def test_a_changed_run_is_refused_unless_overwritten(setup, tmp_path, change, named, capsys):
    import shutil

    tmp, reference, _ = setup
    project_checkpoint(tmp / "other.ckpt", "ac3ac4_demo", EM_OVERRIDE, seed=1)
    with h5py.File(tmp / "raw.h5", "r") as f, h5py.File(tmp / "other.h5", "w") as g:
        g.create_dataset("raw", data=255 - f["raw"][:])
    out = tmp_path / "out.zarr"
    shutil.copytree(tmp / "reference.zarr", out)
    argv = _argv(tmp, out) + [c.format(tmp=tmp) for c in change]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert f"holds a run of another {named};" in err[-1] and "--overwrite" in err[-1]
    _assert_identical(out, reference)  # untouched
    if named == "config":
        assert main(argv + ["--overwrite"]) == 0
        assert not np.array_equal(zarr.open_group(out, mode="r")["labels/segmentation/0"][:],
                                  reference["labels/segmentation/0"][:])


def test_workers_times_threads_is_the_cores():
    assert cluster_shape(None, None, cores=16) == (16, 1)
    assert cluster_shape(4, None, cores=16) == (4, 4)
    assert cluster_shape(None, 4, cores=16) == (4, 4)
    assert cluster_shape(None, None, gpus=2, cores=16) == (2, 8)
    assert cluster_shape(0, None, cores=16) == (0, 0) and cluster_shape(0, 3, cores=16) == (0, 3)
