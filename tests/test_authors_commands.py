"""The authors' command lines, with authors'-format checkpoints of any width placed under
trained_models/, on generated data: validation and test modes in 2D, every 3D method."""
from pathlib import Path

import h5py
from checkpoints import authors_checkpoint

from pea.inference_cli import image_inference_main, volume_inference_main
from pea.scripts import train_main
from pea.synth.bbbc039 import generate_bbbc039
from pea.synth.cvppp import generate_cvppp
from pea.synth.em import generate_em

ROOT = Path(__file__).resolve().parents[1]


def _sets(**keys) -> list[str]:
    return sum((["--set", f"{k.replace('__', '.')}={v}"] for k, v in keys.items()), [])


def test_cvppp_validation_and_test(tmp_path):
    data = tmp_path / "CVPPP"
    generate_cvppp(data, seed=1, n_train=3, n_test=2, n_valid=2, height=80, width=72, min_leaves=3, max_leaves=5)
    trained = tmp_path / "trained_models"
    for name in ("cvppp-validation", "cvppp-test"):
        authors_checkpoint(trained / "cvppp" / f"{name}.ckpt", "resunet_official", 3, [4, 8, 8, 16, 16], True)
    sets = _sets(DATA__data_dir=data, DATA__padded_size="[80, 80]", TEST__trained_dir=trained,
                 TEST__out_dir=tmp_path / "inference", TRAIN__device="cpu")
    scripts = ROOT / "scripts_cvppp"
    assert image_inference_main(scripts, ["-c=cvppp", "-mn=cvppp", "-id=cvppp-validation", "-m=validation"] + sets) == 0
    assert image_inference_main(scripts, ["-c=cvppp", "-mn=cvppp", "-id=cvppp-test", "-m=test"] + sets) == 0
    out = tmp_path / "inference" / "cvppp"
    assert (out / "validation" / "affs_cvppp-validation" / "score.txt").is_file()
    with h5py.File(out / "test" / "affs_cvppp-test" / "submission.h5") as f:
        assert len(f["A1"]) == 2


def test_bbbc039v1_test(tmp_path):
    data = tmp_path / "BBBC039V1"
    generate_bbbc039(data, seed=2, n_train=1, n_valid=1, n_test=2, height=96, width=112)
    trained = tmp_path / "trained_models"
    authors_checkpoint(trained / "bbbc039v1" / "bbbc039v1-test.ckpt", "resunet_official", 3, [4, 4, 8, 8, 16], True)
    sets = _sets(DATA__data_dir=data, DATA__padded_size="[128, 128]", TEST__trained_dir=trained,
                 TEST__out_dir=tmp_path / "inference", TRAIN__device="cpu")
    argv = ["-c=bbbc039v1", "-mn=bbbc039v1", "-id=bbbc039v1-test", "-m=test", "-s"] + sets
    assert image_inference_main(ROOT / "scripts_bbbc039v1", argv) == 0
    folder = tmp_path / "inference" / "bbbc039v1" / "test" / "affs_bbbc039v1-test"
    with h5py.File(folder / "affs.hdf") as f:
        assert f["main"].shape == (2, 10, 96, 112) and f["mask"].shape == (2, 96, 112)
    assert (folder / "score.txt").read_text().split("\n")[0].split()[:2] == ["name", "aji"]


def test_ac3ac4_every_method(tmp_path):
    data = tmp_path / "AC3-AC4"
    generate_em(data, seed=3, depth=12, size=48, test_depth=6, object_size=16)
    trained = tmp_path / "trained_models"
    authors_checkpoint(trained / "ac3ac4" / "ac3ac4-test.ckpt", "superhuman_official", 1, [4, 4, 6, 6, 8], False)
    sets = _sets(DATA__data_dir=data, TEST__trained_dir=trained, TEST__out_dir=tmp_path / "inference",
                 TEST__context="[2, 8, 8]", TRAIN__device="cpu")
    base = ["-c=ac3ac4", "-mn=ac3ac4", "-id=ac3ac4-test"]
    scripts = ROOT / "scripts_ac3ac4"
    assert volume_inference_main(scripts, base + ["-m=ac3"] + sets) == 0  # multicut alone
    assert volume_inference_main(scripts, base + ["-m=ac3", "-waterz", "-mutex"] + sets) == 0
    assert volume_inference_main(scripts, base + ["-m=ac4", "-ts=4", "-lmc", "-waterz"] + sets) == 0
    folder = tmp_path / "inference" / "ac3ac4" / "ac3" / "affs_ac3ac4-test"
    for method in ("lmc", "waterz", "mutex"):
        with h5py.File(folder / f"seg_{method}.hdf") as f:
            assert f["main"].shape == (6, 48, 48)
    assert [line.split(":")[0] for line in (folder / "scores.txt").read_text().splitlines()] == [
        "waterz", "lmc", "mutex"]


def test_main_py_takes_the_authors_mode_flag(tmp_path):
    data = tmp_path / "CVPPP"
    generate_cvppp(data, seed=1, n_train=4, n_test=1, n_valid=1, height=64, width=64, min_leaves=3, max_leaves=5)
    sets = _sets(DATA__data_dir=data, DATA__padded_size="[64, 64]", DATA__crop_size="[64, 64]", DATA__num_workers=0,
                 MODEL__filters="[4, 4, 8, 8, 16]", TRAIN__iterations=2, TRAIN__valid_every=2, TRAIN__save_every=2,
                 TRAIN__model_dir=tmp_path / "models", TRAIN__device="cpu")
    assert train_main(ROOT / "scripts_cvppp", ["-c=cvppp", "-m=train"] + sets) == 0
    assert (tmp_path / "models" / "cvppp" / "last.ckpt").is_file()
