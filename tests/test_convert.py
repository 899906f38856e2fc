"""BBBC039 colour masks -> instance labels (`pea convert bbbc039`)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from scipy import ndimage

import pea.cli
from pea.cli import main
from pea.data.convert import convert_bbbc039, masks_to_instances, read_colour_mask
from pea.errors import PEAInputError

RED, GREEN, BLUE = (200, 0, 0), (0, 200, 0), (0, 0, 200)


def _rgb(shape: tuple[int, int]) -> np.ndarray:
    return np.zeros(shape + (3,), dtype=np.uint8)


def _reference(mask: np.ndarray, min_size: int) -> list[frozenset]:
    """Objects as pixel sets: per colour, 8-connected components, small ones dropped."""
    flat = mask.reshape(-1, mask.shape[-1]) if mask.ndim == 3 else mask.reshape(-1, 1)
    colours = np.unique(flat[:, :3], axis=0)
    objects = []
    for colour in colours:
        if not colour.any():
            continue
        same = np.all(flat[:, :3] == colour, axis=1).reshape(mask.shape[:2])
        comp, n = ndimage.label(same, structure=np.ones((3, 3)))
        for i in range(1, n + 1):
            pixels = np.flatnonzero(comp == i)
            if pixels.size >= min_size:
                objects.append(frozenset(pixels.tolist()))
    return objects


def _objects(labels: np.ndarray) -> list[frozenset]:
    flat = labels.ravel()
    return [frozenset(np.flatnonzero(flat == i).tolist()) for i in range(1, int(labels.max()) + 1)]


def test_touching_objects_of_different_colours_are_separate():
    mask = _rgb((20, 20))
    mask[2:12, 2:8] = RED
    mask[2:12, 8:14] = GREEN  # shares an edge with the red object
    labels = masks_to_instances(mask)
    assert labels.dtype == np.uint16
    assert sorted(np.unique(labels)) == [0, 1, 2]
    assert len(np.unique(labels[2:12, 2:8])) == 1 and len(np.unique(labels[2:12, 8:14])) == 1
    assert labels[5, 5] != labels[5, 10]


def test_one_colour_in_two_parts_gives_two_objects():
    mask = _rgb((20, 30))
    mask[2:10, 2:10] = BLUE
    mask[2:10, 15:25] = BLUE
    labels = masks_to_instances(mask)
    assert labels.max() == 2 and labels[5, 5] != labels[5, 20]


def test_diagonal_contact_joins_one_colour():
    mask = _rgb((20, 20))
    mask[2:8, 2:8] = RED
    mask[8:14, 8:14] = RED  # touches only at a corner: 8-neighbourhood joins them
    assert masks_to_instances(mask, min_size=1).max() == 1


def test_min_size_removes_24_keeps_25():
    mask = _rgb((20, 30))
    mask[1:5, 1:7] = RED  # 24 px
    mask[10:15, 10:15] = GREEN  # 25 px
    mask[1:7, 20:25] = BLUE  # 30 px
    labels = masks_to_instances(mask)
    assert labels[2, 2] == 0
    assert np.count_nonzero(labels) == 55
    assert sorted(np.unique(labels)) == [0, 1, 2]
    assert masks_to_instances(mask, min_size=24).max() == 3


@pytest.mark.parametrize("seed", range(4))
def test_matches_per_colour_reference(seed):
    rng = np.random.default_rng(seed)
    palette = np.array([[0, 0, 0], RED, GREEN, BLUE, [200, 0, 200]], dtype=np.uint8)
    blocks = rng.integers(0, len(palette), size=(12, 16))
    index = np.kron(blocks, np.ones((5, 5), dtype=np.int64))
    index[rng.random(index.shape) < 0.03] = rng.integers(0, len(palette))  # specks
    mask = palette[index]
    for min_size in (1, 25):
        labels = masks_to_instances(mask, min_size=min_size)
        n = int(labels.max())
        assert set(np.unique(labels)) == set(range(n + 1))  # consecutive ids
        assert sorted(_objects(labels), key=min) == sorted(_reference(mask, min_size), key=min)


def test_alpha_ignored_and_grayscale_accepted():
    mask = _rgb((16, 16))
    mask[2:9, 2:9] = RED
    mask[2:9, 9:15] = GREEN
    rgba = np.concatenate([mask, np.full((16, 16, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(masks_to_instances(rgba), masks_to_instances(mask))
    gray = mask.max(axis=2)
    assert masks_to_instances(gray).max() == 1  # both objects have value 200 in one channel


@pytest.mark.parametrize("bad", [np.zeros((8, 8, 3), np.uint16), np.zeros((8, 8), np.float32),
                                 np.zeros((8, 8, 2), np.uint8)])
def test_bad_masks_rejected(bad):
    with pytest.raises(PEAInputError, match="mask"):
        masks_to_instances(bad)


def test_more_ids_than_uint16_rejected():
    mask = np.zeros((514, 512), np.uint8)
    mask[::2, ::2] = 1  # 257 * 256 isolated pixels
    with pytest.raises(PEAInputError, match="65535"):
        masks_to_instances(mask, min_size=1)


def _write_set(root: Path, masks: dict[str, np.ndarray], shape=None) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for name, mask in masks.items():
        tifffile.imwrite(root / "images" / f"{name}.tif",
                         np.zeros(shape or mask.shape[:2], np.uint16))
        cv2.imwrite(str(root / "masks" / f"{name}.png"), mask[..., ::-1])


def test_convert_folder_writes_uint16_pngs(tmp_path):
    rng = np.random.default_rng(0)
    many = np.kron(rng.integers(1, 3, size=(20, 20)), np.ones((3, 5), np.int64))
    many[::3, :] = 0
    many[:, ::5] = 0  # 400 separate 2x4 rectangles: more ids than 8 bits hold
    masks = {"a": np.stack([many.astype(np.uint8) * 90] * 3, axis=2), "b": _rgb((60, 100))}
    masks["b"][10:30, 10:30] = RED
    _write_set(tmp_path, masks)
    assert convert_bbbc039(tmp_path, min_size=8) == 2
    written = {name: cv2.imread(str(tmp_path / "label_instance" / f"{name}.png"),
                                cv2.IMREAD_UNCHANGED) for name in masks}
    for name, labels in written.items():
        assert labels.dtype == np.uint16
        mask = read_colour_mask(tmp_path / "masks" / f"{name}.png")
        expected = masks_to_instances(mask, min_size=8)
        np.testing.assert_array_equal(labels, expected)
    assert written["a"].max() == 400 and written["b"].max() == 1


def test_read_colour_mask_is_rgb(tmp_path):
    mask = _rgb((10, 10))
    mask[2:5, 2:5] = (10, 20, 30)
    cv2.imwrite(str(tmp_path / "m.png"), mask[..., ::-1])
    np.testing.assert_array_equal(read_colour_mask(tmp_path / "m.png"), mask)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(PEAInputError, match="masks"):
        convert_bbbc039(tmp_path)
    (tmp_path / "masks").mkdir()
    with pytest.raises(PEAInputError, match="no .png"):
        convert_bbbc039(tmp_path)

    good = _rgb((30, 40))
    good[5:15, 5:15] = GREEN
    root = tmp_path / "shape"
    _write_set(root, {"img1": good}, shape=(31, 40))
    with pytest.raises(PEAInputError, match=r"img1\.png.*\(30, 40\).*\(31, 40\)"):
        convert_bbbc039(root)

    root = tmp_path / "notpng"
    _write_set(root, {"img2": good})
    (root / "masks" / "img2.png").write_text("not an image")
    with pytest.raises(PEAInputError, match=r"img2\.png: not a PNG"):
        convert_bbbc039(root)

    root = tmp_path / "deep"
    _write_set(root, {"img3": good})
    cv2.imwrite(str(root / "masks" / "img3.png"), good.astype(np.uint16) * 256)
    with pytest.raises(PEAInputError, match=r"img3\.png.*uint16"):
        convert_bbbc039(root)

    root = tmp_path / "noimage"
    _write_set(root, {"img4": good})
    (root / "images" / "img4.tif").unlink()
    with pytest.raises(PEAInputError, match=r"img4\.tif"):
        convert_bbbc039(root)


def test_cli(tmp_path, capsys, monkeypatch):
    # only this sub-command, so the test does not depend on the other sub-command modules
    monkeypatch.setattr(pea.cli, "COMMANDS", {"convert": pea.cli.COMMANDS["convert"]})
    mask = _rgb((30, 40))
    mask[5:15, 5:15] = GREEN
    mask[5:15, 15:25] = RED
    _write_set(tmp_path, {"x": mask})
    assert main(["convert", "bbbc039", "--data", str(tmp_path)]) == 0
    labels = cv2.imread(str(tmp_path / "label_instance" / "x.png"), cv2.IMREAD_UNCHANGED)
    assert labels.max() == 2
    (tmp_path / "masks" / "y.png").write_bytes(b"junk")
    assert main(["convert", "bbbc039", "--data", str(tmp_path)]) == 2
    assert "y.png" in capsys.readouterr().err
