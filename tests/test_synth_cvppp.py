"""The CVPPP A1 look-alike generator: layout, file formats, determinism, realism checks, CLI."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from skimage.measure import label as connected_components
import pytest
from PIL import Image

from pea.errors import PEAInputError
from pea.synth.cvppp import generate_cvppp, make_plant, min_visible_area

SMALL = dict(n_train=4, n_test=2, n_valid=2, height=160, width=150)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("cvppp") / "data"
    return out, generate_cvppp(out, seed=3, **SMALL)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_layout(dataset):
    out, summary = dataset
    train = [f"plant{i:03d}" for i in range(1, 5)]
    test = ["plant005", "plant006"]
    assert summary["train"] == train and summary["test"] == test
    expected = {f"train/{p}_{k}.png" for p in train for k in ("rgb", "label", "fg")}
    expected |= {f"test/{p}_{k}.png" for p in test for k in ("rgb", "fg")}
    expected.add("valid_set/local_20_1.txt")
    assert set(_files(out)) == expected


def test_file_formats(dataset):
    out, summary = dataset
    for plant in summary["train"]:
        rgb = Image.open(out / "train" / f"{plant}_rgb.png")
        label = Image.open(out / "train" / f"{plant}_label.png")
        fg = Image.open(out / "train" / f"{plant}_fg.png")
        assert (rgb.mode, label.mode, fg.mode) == ("RGB", "P", "L")
        rgb, label, fg = np.asarray(rgb), np.asarray(label), np.asarray(fg)
        assert rgb.shape == (160, 150, 3) and rgb.dtype == np.uint8
        assert label.shape == fg.shape == (160, 150)
        n = int(label.max())
        assert 3 <= n <= 20 and summary["n_leaves"][plant] == n
        np.testing.assert_array_equal(np.unique(label), np.arange(n + 1))
        assert set(np.unique(fg)) == {0, 255}
        np.testing.assert_array_equal(fg == 255, label > 0)
    for plant in summary["test"]:
        rgb = np.asarray(Image.open(out / "test" / f"{plant}_rgb.png"))
        fg = np.asarray(Image.open(out / "test" / f"{plant}_fg.png"))
        assert rgb.shape == (160, 150, 3) and fg.shape == (160, 150)
        assert set(np.unique(fg)) == {0, 255}


def test_valid_list_holds_train_ids(dataset):
    out, summary = dataset
    ids = (out / "valid_set" / "local_20_1.txt").read_text().split()
    assert ids == summary["valid"]
    assert len(ids) == len(set(ids)) == 2
    assert set(ids) <= set(summary["train"])
    assert all((out / "train" / f"{p}_label.png").exists() for p in ids)


def test_deterministic_per_seed(dataset, tmp_path):
    out, _ = dataset
    generate_cvppp(tmp_path / "same", seed=3, **SMALL)
    assert _files(tmp_path / "same") == _files(out)
    generate_cvppp(tmp_path / "other", seed=4, **SMALL)
    other = _files(tmp_path / "other")
    for name, data in _files(out).items():
        if name.endswith("_rgb.png"):
            assert other[name] != data, name


def test_plant_does_not_depend_on_set_size(dataset, tmp_path):
    out, _ = dataset
    generate_cvppp(tmp_path / "fewer", seed=3, n_train=2, n_test=0, n_valid=1, height=160, width=150)
    for name in ("plant001_rgb.png", "plant002_label.png"):
        assert (tmp_path / "fewer" / "train" / name).read_bytes() == (out / "train" / name).read_bytes()


def _leaf_stats(rgb: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-label mean RGB and mean chromaticity (rows 0 = background), and pixel counts."""
    x = rgb.reshape(-1, 3).astype(np.float64)
    ids = labels.ravel()
    counts = np.bincount(ids)
    chroma = x / np.maximum(x.sum(1, keepdims=True), 1)
    mean = np.stack([np.bincount(ids, weights=x[:, c]) for c in range(3)], 1) / counts[:, None]
    mean_chroma = np.stack([np.bincount(ids, weights=chroma[:, c]) for c in range(3)], 1) / counts[:, None]
    return mean, mean_chroma, counts


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_make_plant(seed):
    rng = np.random.default_rng(seed)
    n_leaves = 5 + 3 * seed
    rgb, labels = make_plant(rng, 200, 180, n_leaves)
    assert rgb.shape == (200, 180, 3) and rgb.dtype == np.uint8
    assert labels.shape == (200, 180) and labels.dtype == np.int32
    n = int(labels.max())
    assert n_leaves - 2 <= n <= n_leaves
    np.testing.assert_array_equal(np.unique(labels), np.arange(n + 1))
    mean, chroma, counts = _leaf_stats(rgb, labels)
    assert counts[1:].min() >= min_visible_area(200, 180)
    # every leaf's visible part is one connected region
    assert connected_components(labels, background=0, connectivity=1).max() == n
    # leaves are green: the green channel dominates every leaf's mean colour
    assert (mean[1:, 1] > mean[1:, 0]).all() and (mean[1:, 1] > mean[1:, 2]).all()
    # leaves share one colour: leaf chromaticities lie close together compared with the background
    leaf_chroma = chroma[1:]
    plant_chroma = leaf_chroma.mean(0)
    spread = np.linalg.norm(leaf_chroma - plant_chroma, axis=1).max()
    assert spread < 0.35 * np.linalg.norm(plant_chroma - chroma[0])
    # colour alone does not tell the leaves apart: nearest-mean-colour assignment mostly fails
    fg = labels > 0
    pixels = rgb[fg].astype(np.float64)
    nearest = ((pixels[:, None, :] - mean[None, 1:]) ** 2).sum(-1).argmin(1) + 1
    assert (nearest == labels[fg]).mean() < 0.5


def test_boundaries_between_leaves_are_darker():
    rgb, labels = make_plant(np.random.default_rng(11), 265, 250, 14)
    grey = rgb.astype(np.float64).mean(2)
    lab8 = labels.astype(np.uint8)
    k3, k7 = np.ones((3, 3), np.uint8), np.ones((7, 7), np.uint8)
    between = (cv2.dilate(lab8, k3) != cv2.erode(lab8, k3)) & (cv2.erode(lab8, k3) > 0)
    interior = (cv2.dilate(lab8, k7) == lab8) & (cv2.erode(lab8, k7) == lab8) & (labels > 0)
    assert between.sum() > 100 and interior.sum() > 1000
    assert grey[between].mean() < 0.9 * grey[interior].mean()


@pytest.mark.parametrize("kwargs, name", [
    (dict(n_train=2, n_valid=3), "n_valid"),
    (dict(min_leaves=6, max_leaves=5), "max_leaves"),
    (dict(height=8), "height"),
    (dict(n_test=-1), "n_test"),
])
def test_bad_arguments(tmp_path, kwargs, name):
    with pytest.raises(PEAInputError, match=name):
        generate_cvppp(tmp_path / "x", **kwargs)


def test_output_path_is_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("")
    with pytest.raises(PEAInputError, match="not a directory"):
        generate_cvppp(target, n_train=1, n_test=0, n_valid=0, height=32, width=32)


def test_cli_writes_files(tmp_path, capsys):
    from pea.cli import main

    out = tmp_path / "cli"
    code = main(["synth", "cvppp", "--out", str(out), "--seed", "1", "--n-train", "3", "--n-test", "1",
                 "--n-valid", "1", "--height", "96", "--width", "80", "--min-leaves", "5",
                 "--max-leaves", "7"])
    assert code == 0
    assert "3 train" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "test").iterdir()) == ["plant004_fg.png", "plant004_rgb.png"]
    label = np.asarray(Image.open(out / "train" / "plant003_label.png"))
    assert label.shape == (96, 80) and 1 <= label.max() <= 7
    assert len((out / "valid_set" / "local_20_1.txt").read_text().split()) == 1
    assert main(["synth", "cvppp", "--out", str(out), "--n-train", "1", "--n-valid", "2"]) == 2
