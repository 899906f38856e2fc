import h5py
import numpy as np
import pytest
from scipy import ndimage

from pea.cli import main
from pea.errors import PEAInputError
from pea.synth.em import generate_em, make_em_volume


def _read(path):
    with h5py.File(path, "r") as f:
        assert list(f.keys()) == ["main"]
        return f["main"][...]


@pytest.fixture(scope="module")
def volume():
    return make_em_volume(np.random.default_rng(11), (16, 128, 128), defects=False)


def test_layout_shapes_dtypes_and_determinism(tmp_path):
    info = generate_em(tmp_path / "a", seed=5, depth=10, size=96, test_depth=6)
    again = generate_em(tmp_path / "b", seed=5, depth=10, size=96, test_depth=6)
    other = generate_em(tmp_path / "c", seed=6, depth=10, size=96, test_depth=6)
    for name, depth in (("AC4", 10), ("AC3", 6)):
        image, labels = _read(tmp_path / "a" / f"{name}_inputs.h5"), _read(tmp_path / "a" / f"{name}_labels.h5")
        assert image.shape == labels.shape == (depth, 96, 96) == info[name]["shape"]
        assert image.dtype == np.uint8 and labels.dtype == np.uint32
        assert labels.min() >= 1  # every voxel belongs to an object
        assert np.array_equal(np.unique(labels), np.arange(1, labels.max() + 1))
        assert info[name]["objects"] == labels.max()
        for key in ("inputs", "labels"):
            np.testing.assert_array_equal(_read(info[name][key]), _read(again[name][key]))
            assert not np.array_equal(_read(info[name][key]), _read(other[name][key]))
    # train and test volumes are different draws
    assert not np.array_equal(_read(info["AC4"]["labels"])[:6], _read(info["AC3"]["labels"]))


def test_objects_are_dense_and_run_through_the_stack(volume):
    _, labels = volume
    depth = labels.shape[0]
    per_section = np.array([np.bincount(np.unique(s), minlength=labels.max() + 1) for s in labels])
    spans = per_section[:, 1:].sum(0)
    assert np.median(spans) >= depth // 2
    assert np.mean([len(np.unique(s)) for s in labels]) > 20  # densely packed
    # sections are thick: an object's centroid moves a few pixels, not tens, per section
    moves = []
    for z in range(depth - 1):
        present = np.flatnonzero(per_section[z, 1:] & per_section[z + 1, 1:]) + 1
        a = np.array(ndimage.center_of_mass(np.ones_like(labels[z]), labels[z], present))
        b = np.array(ndimage.center_of_mass(np.ones_like(labels[z]), labels[z + 1], present))
        moves.append(np.hypot(*(a - b).T))
    moves = np.concatenate(moves)
    assert 0.3 < np.median(moves) < 6.0


def test_membranes_are_darker_than_cytoplasm(volume):
    image, labels = volume
    grow = ndimage.grey_dilation(labels, size=(1, 3, 3))
    shrink = ndimage.grey_erosion(labels, size=(1, 3, 3))
    boundary = grow != shrink
    interior = ~ndimage.binary_dilation(boundary, np.ones((1, 5, 5), bool))
    assert 0.05 < boundary.mean() < 0.5
    assert image[boundary].mean() + 40 < np.median(image[interior])
    assert image.std() > 20


def test_defect_sections():
    image, labels = make_em_volume(np.random.default_rng(2), (12, 96, 96), defects=True)
    blank = [z for z in range(12) if not image[z].any()]
    assert len(blank) == 1 and labels[blank[0]].min() >= 1
    sharp = [np.abs(ndimage.laplace(image[z].astype(np.float32))).mean() for z in range(12) if z not in blank]
    assert min(sharp) < 0.5 * np.median(sharp)  # one strongly blurred section
    clean, _ = make_em_volume(np.random.default_rng(2), (12, 96, 96), defects=False)
    assert all(clean[z].any() for z in range(12))


def test_cli_writes_files_and_rejects_bad_sizes(tmp_path, capsys):
    assert main(["synth", "ac3ac4", "--out", str(tmp_path), "--seed", "1", "--depth", "4", "--size", "48",
                 "--test-depth", "3"]) == 0
    assert _read(tmp_path / "AC4_inputs.h5").shape == (4, 48, 48)
    assert _read(tmp_path / "AC3_labels.h5").shape == (3, 48, 48)
    assert "AC4" in capsys.readouterr().out
    assert main(["synth", "ac3ac4", "--out", str(tmp_path / "x"), "--size", "8"]) == 2
    assert "(40, 8, 8)" in capsys.readouterr().err
    with pytest.raises(PEAInputError, match="object_size"):
        make_em_volume(np.random.default_rng(0), (4, 32, 32), object_size=1)
