"""BBBC039V1 look-alike generator (`pea synth bbbc039`)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile
from skimage.measure import label as connected_components

import pea.cli
import pea.synth.cli
from pea.cli import main
from pea.data.convert import masks_to_instances, read_colour_mask
from pea.synth.bbbc039 import colour_mask, generate_bbbc039, make_nuclei_image


@pytest.fixture(scope="module")
def full_field():
    return make_nuclei_image(np.random.default_rng(7))


def _adjacent_pairs(labels: np.ndarray) -> np.ndarray:
    """Pairs of different non-zero ids that touch in the 8-neighbourhood."""
    pairs = np.concatenate([
        np.stack([labels[:-1].ravel(), labels[1:].ravel()], 1),
        np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], 1),
        np.stack([labels[:-1, :-1].ravel(), labels[1:, 1:].ravel()], 1),
        np.stack([labels[:-1, 1:].ravel(), labels[1:, :-1].ravel()], 1)])
    return pairs[(pairs[:, 0] != pairs[:, 1]) & (pairs.min(axis=1) > 0)]


def test_full_size_field(full_field):
    image, labels = full_field
    assert image.shape == (520, 696) and image.dtype == np.uint16
    assert labels.shape == (520, 696) and labels.dtype == np.int32
    instances = masks_to_instances(colour_mask(labels))
    sizes = np.bincount(instances.ravel())[1:]
    assert 15 <= sizes.size <= 90
    radius = np.sqrt(np.median(sizes) / np.pi)
    assert 9 <= radius <= 25
    fg = instances > 0
    assert np.median(image[fg]) > 2 * np.median(image[~fg])
    assert image.max() <= 4095
    assert len(_adjacent_pairs(labels)) > 0  # some nuclei touch
    border = np.concatenate([instances[0], instances[-1], instances[:, 0], instances[:, -1]])
    assert np.count_nonzero(border) > 0  # some nuclei are cut by the border


def test_touching_nuclei_differ_in_colour_and_stay_apart(full_field):
    _, labels = full_field
    mask = colour_mask(labels)
    assert mask.dtype == np.uint8 and mask.shape == labels.shape + (3,)
    assert not mask[labels == 0].any() and mask[labels > 0].any(axis=1).all()
    pairs = _adjacent_pairs(labels)
    flat = mask.reshape(-1, 3)
    first, second = np.unique(pairs, axis=0).T
    colour_of = {i: flat[np.flatnonzero(labels.ravel() == i)[0]] for i in np.unique(labels)[1:]}
    for i, j in zip(first, second):
        assert (colour_of[i] != colour_of[j]).any()
    assert len(np.unique(flat[labels.ravel() > 0], axis=0)) < labels.max()  # colours reused
    # the conversion recovers exactly the painted objects (connected, >= 25 px)
    instances = masks_to_instances(mask)
    reference = connected_components(labels, background=0, connectivity=2)
    big = np.bincount(reference.ravel()) >= 25
    big[0] = False
    reference = np.where(big[reference], reference, 0)
    pairs = np.unique(np.stack([instances.ravel(), reference.ravel()], 1), axis=0)
    assert len(pairs) == len(np.unique(pairs[:, 0])) == len(np.unique(pairs[:, 1]))
    assert ((pairs[:, 0] == 0) == (pairs[:, 1] == 0)).all()


def test_layout_dtypes_and_conversion(tmp_path):
    info = generate_bbbc039(tmp_path, seed=3, n_train=3, n_valid=2, n_test=1,
                            height=96, width=128)
    assert [len(info[k]) for k in ("training", "validation", "test")] == [3, 2, 1]
    names = info["training"] + info["validation"] + info["test"]
    assert len(set(names)) == 6
    for split in ("training", "validation", "test"):
        lines = (tmp_path / "metadata" / f"{split}.txt").read_text().splitlines()
        assert lines == [f"{n}.png" for n in info[split]]
    n_objects = 0
    for name in names:
        image = tifffile.imread(tmp_path / "images" / f"{name}.tif")
        assert image.dtype == np.uint16 and image.shape == (96, 128)
        mask = read_colour_mask(tmp_path / "masks" / f"{name}.png")
        assert mask.dtype == np.uint8 and mask.shape == (96, 128, 3)
        labels = cv2.imread(str(tmp_path / "label_instance" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert labels.dtype == np.uint16
        np.testing.assert_array_equal(labels, masks_to_instances(mask))
        n_objects += int(labels.max())
    assert n_objects == info["nuclei"] > 0


def test_deterministic_for_a_seed():
    a = make_nuclei_image(np.random.default_rng(11), 80, 100)
    b = make_nuclei_image(np.random.default_rng(11), 80, 100)
    c = make_nuclei_image(np.random.default_rng(12), 80, 100)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_generate_deterministic(tmp_path):
    kw = dict(n_train=1, n_valid=1, n_test=0, height=64, width=80)
    first = generate_bbbc039(tmp_path / "a", seed=5, **kw)
    second = generate_bbbc039(tmp_path / "b", seed=5, **kw)
    other = generate_bbbc039(tmp_path / "c", seed=6, **kw)
    assert first["training"] == second["training"] != other["training"]
    for name in first["training"] + first["validation"]:
        for sub, ext in (("images", "tif"), ("masks", "png"), ("label_instance", "png")):
            assert ((tmp_path / "a" / sub / f"{name}.{ext}").read_bytes()
                    == (tmp_path / "b" / sub / f"{name}.{ext}").read_bytes())


def test_cli(tmp_path, capsys, monkeypatch):
    # only this generator, so the test does not depend on the other generator modules
    monkeypatch.setattr(pea.cli, "COMMANDS", {"synth": pea.cli.COMMANDS["synth"]})
    monkeypatch.setattr(pea.synth.cli, "GENERATORS", {"bbbc039": "pea.synth.bbbc039"})
    out = tmp_path / "data"
    args = ["synth", "bbbc039", "--out", str(out), "--seed", "1", "--n-train", "2",
            "--n-valid", "1", "--n-test", "1", "--height", "64", "--width", "80"]
    assert main(args) == 0
    assert len(list((out / "images").glob("*.tif"))) == 4
    assert len((out / "metadata" / "training.txt").read_text().splitlines()) == 2
    assert main(args + ["--n-train", "-1"]) == 2
    assert "n_train=-1" in capsys.readouterr().err


def test_many_small_fields_are_valid():
    for seed in range(40):
        image, labels = make_nuclei_image(np.random.default_rng(seed), 48, 64)
        assert image.shape == labels.shape == (48, 64) and image.dtype == np.uint16
        instances = masks_to_instances(colour_mask(labels))
        pairs = np.unique(np.stack([instances.ravel(), labels.ravel()], 1), axis=0)
        pairs = pairs[pairs[:, 0] > 0]
        assert len(np.unique(pairs[:, 0])) == len(pairs)  # no instance spans two nuclei
