"""Bad values, diverging runs, killed writes and missing devices: one clear line, the right
exit code, and nothing good lost (the cases of the reliability issue, numbered as there)."""
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import torch

from pea import io as pea_io
from pea.cli import main as pea_cli
from pea.config import load_config, make_config
from pea.errors import PEAInputError, PEARunError
from pea.inference_cli import image_inference_main, write_stack
from pea.scripts import train_main
from pea.synth.bbbc039 import generate_bbbc039
from pea.synth.cvppp import generate_cvppp

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts_cvppp"


@pytest.fixture(scope="module")
def data(tiny_cvppp):
    return tiny_cvppp


def tiny(data, tmp_path, **extra):
    items = {"DATA.data_dir": data, "DATA.padded_size": "[80, 80]", "DATA.crop_size": "[64, 64]",
             "DATA.num_workers": 0, "MODEL.filters": "[4, 4, 8, 8, 16]", "TRAIN.iterations": 4,
             "TRAIN.batch_size": 2, "TRAIN.valid_every": 2, "TRAIN.save_every": 2, "TRAIN.log_every": 1,
             "TRAIN.model_dir": tmp_path / "models", "TEST.out_dir": tmp_path / "inference",
             "TEST.trained_dir": "/nonexistent", "TRAIN.device": "cpu", **extra}
    return sum((["--set", f"{k}={v}"] for k, v in items.items()), [])


def one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(lines) == 1, lines
    return lines[0]


# lr 1e30: iteration 1 is finite (weights ~1e30, saved), iteration 2 is NaN. Logged every
# iteration, the loss check stops the run; logged every 4, the weights check of the save does.
@pytest.mark.parametrize("log_every, message", [(1, "not finite"), (4, "no longer finite")])
def test_1_diverging_training_stops_and_keeps_finite_checkpoints(data, tmp_path, capsys, log_every, message):
    diverging = {"TRAIN.lr": "1.0e+30", "TRAIN.save_every": 1, "TRAIN.log_every": log_every, "TRAIN.valid_every": 100}
    assert train_main(SCRIPTS, ["-c=cvppp_demo"] + tiny(data, tmp_path, **diverging)) == 1
    line = one_error_line(capsys)
    assert "iteration" in line and message in line
    saved = sorted((tmp_path / "models" / "cvppp_demo").glob("*.ckpt"))
    assert [p.name for p in saved] == ["last.ckpt", "model-000001.ckpt"]  # iteration 1's, none after
    for ckpt in saved:
        weights = torch.load(ckpt, weights_only=True)["model_weights"]
        assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_2_outputs_are_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "seg.hdf"
    write_stack(path, {"a": np.ones((4, 4))}, np.uint32)

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(h5py.File, "create_dataset", broken)
    with pytest.raises(OSError):
        write_stack(path, {"a": np.zeros((4, 4))}, np.uint32)
    monkeypatch.undo()
    with h5py.File(path) as f:  # the old complete file
        assert (f["main"][()] == 1).all()
    assert [p.name for p in tmp_path.iterdir()] == ["seg.hdf"]  # no temporary file left
    (tmp_path / f".score{pea_io.TEMP_MARK}999.txt").write_text("half")
    pea_io.remove_stale(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["seg.hdf"]


def test_3_exponent_notation_is_a_number(tmp_path):
    (tmp_path / "c.yaml").write_text("DATA:\n  dataset: cvppp\nTRAIN:\n  lr: 1e-4\n  eps: 5E-3\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.TRAIN.lr == 1e-4 and cfg.TRAIN.eps == 5e-3


@pytest.mark.parametrize("item, key", [("TRAIN.lr=abc", "TRAIN.lr"), ("TRAIN.iterations=abc", "TRAIN.iterations"),
                                       ("TRAIN.batch_size=0", "TRAIN.batch_size"), ("DATA.crop_size=64", "DATA.crop_size"),
                                       ("TRAIN.save_every=0", "TRAIN.save_every"), ("DATA.shifts=[]", "DATA.shifts"),
                                       ("TRAIN.lr=-1", "TRAIN.lr"), ("TRAIN.device=tpu", "TRAIN.device"),
                                       ("TRAIN.select_metric=aji", "TRAIN.select_metric")])
def test_4_5_bad_values_are_one_line_before_any_work(data, tmp_path, capsys, item, key):
    assert train_main(SCRIPTS, ["-c=cvppp_demo"] + tiny(data, tmp_path) + ["--set", item]) == 2
    line = one_error_line(capsys)
    assert key in line and "expected" in line
    assert not (tmp_path / "models").exists()  # nothing started


def test_6_resume_applies_the_new_learning_rate(data, tmp_path, capsys):
    args = ["-c=cvppp_demo", "--run", "r"] + tiny(data, tmp_path, **{"TRAIN.iterations": 2})
    assert train_main(SCRIPTS, args) == 0
    more = ["-c=cvppp_demo", "--run", "r", "--resume"] + tiny(data, tmp_path, **{"TRAIN.lr": 0.5})
    assert train_main(SCRIPTS, more) == 0
    assert "from the checkpoint replaced by 0.5 (TRAIN.lr)" in capsys.readouterr().out
    last = torch.load(tmp_path / "models" / "r" / "last.ckpt", weights_only=True)
    assert last["iteration"] == 4 and last["optimizer"]["param_groups"][0]["lr"] == 0.5


def test_7_non_finite_pixels_and_weights_are_refused(tmp_path, capsys):
    generate_bbbc039(tmp_path, seed=1, n_train=1, n_valid=1, n_test=1, height=32, width=32)
    image = next((tmp_path / "images").glob("*.tif"))
    tifffile.imwrite(image, np.full((32, 32), np.nan, np.float32))
    cfg = make_config({"DATA": {"dataset": "bbbc039v1", "data_dir": str(tmp_path), "normalize": "none"}})
    from pea.data import bbbc039

    with pytest.raises(PEAInputError, match=f"{image.name}: the image holds NaN"):
        for split in ("train", "validation", "test"):
            bbbc039.load_split(cfg.DATA, split)
    from pea.checkpoint import model_from_checkpoint
    from pea.models import build_model

    weights = build_model({"filters": [4, 4, 4, 4, 4]}).state_dict()
    weights["encoder.blocks.0.conv1.weight"][0] = float("nan")
    ckpt = {"model_weights": weights, "config": {"MODEL": {"filters": [4, 4, 4, 4, 4]}}}
    with pytest.raises(PEAInputError, match="'encoder.blocks.0.conv1.weight' holds NaN"):
        model_from_checkpoint(ckpt, "cpu", "x.ckpt")


def test_8_devices_and_unwritable_places(data, tmp_path, capsys, monkeypatch):
    if not torch.cuda.is_available():
        assert train_main(SCRIPTS, ["-c=cvppp_demo", "--device", "cuda"] + tiny(data, tmp_path)) == 2
        assert "CUDA is not available" in one_error_line(capsys)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert train_main(SCRIPTS, ["-c=cvppp_demo"] + tiny(data, tmp_path, **{"TRAIN.model_dir": blocker / "x"})) == 2
    assert str(blocker) in one_error_line(capsys)
    from pea import checkpoint

    def full(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"partial")
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(checkpoint.torch, "save", full)
    with pytest.raises(PEARunError, match="cannot write the checkpoint"):
        checkpoint.save_checkpoint(tmp_path / "ck" / "last.ckpt", {"model_weights": {}})
    assert list((tmp_path / "ck").iterdir()) == []  # no temporary file left behind


def test_9_a_plant_without_its_image_is_an_error(tmp_path):
    generate_cvppp(tmp_path, seed=1, n_train=3, n_test=1, n_valid=1, height=48, width=48, min_leaves=3, max_leaves=4)
    victim = sorted((tmp_path / "train").glob("*_rgb.png"))[0]
    victim.unlink()
    from pea.data import cvppp

    with pytest.raises(PEAInputError, match=f"{victim.name}: image not found"):
        cvppp.load_split(make_config({"DATA": {"dataset": "cvppp", "data_dir": str(tmp_path)}}).DATA, "train")


def test_10_smaller_cases(data, tmp_path, capsys):
    assert pea_cli(["evaluate", str(tmp_path / "nope"), str(tmp_path / "nada")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    bad = tmp_path / "bad.ckpt"
    torch.save({"model_weights": {}, "x": Path("p")}, bad)
    inf = ["-c=cvppp_demo", "-mn=m", f"-id={bad}", "-m=validation"] + tiny(data, tmp_path)
    assert image_inference_main(SCRIPTS, inf) == 2
    line = one_error_line(capsys)
    assert "not a readable checkpoint" in line and "weights_only" not in line
    assert image_inference_main(SCRIPTS, inf + ["--max-images", "0"]) == 2
    assert "--max-images" in one_error_line(capsys)
    assert not (tmp_path / "inference").exists()  # nothing created before the errors
    from pea.metrics import evaluate

    same = np.arange(16).reshape(4, 4)
    assert evaluate(same, same, ["voi"])["voi_split"] == 0.0 and f"{evaluate(same, same, ['voi'])['voi']:.4f}" == "0.0000"


def test_2_a_killed_writer_leaves_the_old_or_the_new_file(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "affs.hdf"
    write_stack(path, {"a": np.zeros((8, 8), np.float32)}, np.float32)
    code = ("import numpy as np, sys; from pea.inference_cli import write_stack\n"
            "big = {str(i): np.random.default_rng(i).random((64, 256, 256), dtype=np.float32) for i in range(6)}\n"
            "print('ready', flush=True)\n"
            "while True: write_stack(sys.argv[1], big, np.float32)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(1.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with h5py.File(path) as f:  # readable: the old complete file or a new complete one
        assert f["main"].shape in {(1, 8, 8), (6, 64, 256, 256)}
        assert len(f["names"]) in (1, 6)
    pea_io.remove_stale(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["affs.hdf"]


def test_10_an_empty_validation_split_warns(data, tmp_path, capsys):
    (tmp_path / "none.txt").write_text("")
    args = ["-c=cvppp_demo"] + tiny(data, tmp_path, **{"DATA.valid_list": tmp_path / "none.txt"})
    assert train_main(SCRIPTS, args) == 0
    assert "warning: no validation samples" in capsys.readouterr().err
    run = tmp_path / "models" / "cvppp_demo"
    assert (run / "last.ckpt").is_file() and not (run / "best.ckpt").exists()
