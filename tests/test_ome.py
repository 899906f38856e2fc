"""`pea.ome.to_ngff`: containers as `pea predict` and `pea.blockwise` leave them (zarr v2 or v3,
arrays at the root, chunked) become OME-Zarr 0.5 in place: read back by `ome_zarr.reader` with
the same data, scale and label images, and valid for `ome_zarr_models`."""
import json

import numpy as np
import pytest
import zarr

from pea.ome import to_ngff

reader = pytest.importorskip("ome_zarr.reader", reason="ome-zarr is not installed (pip install 'pea[test]')")
from ome_zarr.io import parse_url  # noqa: E402


def container(path, zarr_format, affs, labels):
    group = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    group.create_array("affinities", data=affs, chunks=(affs.shape[0],) + tuple(max(1, n // 2) for n in affs.shape[1:]))
    for name, array in labels.items():
        group.create_array(name, data=array, chunks=tuple(max(1, n // 3) for n in array.shape))
    group.attrs["arrays"] = {"waterz": "segmentation"}
    return group


def read(path) -> dict:
    """Node path (relative to the container) -> (specs, data, the first dataset's transforms)."""
    nodes = {}
    for node in reader.Reader(parse_url(str(path)))():
        key = str(node.zarr.path).rstrip("/").removeprefix(str(path)).lstrip("/")
        transforms = node.metadata.get("coordinateTransformations", [[]])[0]
        nodes[key] = ([type(s).__name__ for s in node.specs], [np.asarray(d) for d in node.data], transforms)
    return nodes


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_volume_container_becomes_ome_zarr_without_changing_data(tmp_path, zarr_format):
    rng = np.random.default_rng(0)
    affs = rng.random((3, 5, 12, 14), dtype=np.float32)
    labels = {"segmentation": rng.integers(1, 9, (5, 12, 14)).astype(np.uint32),
              "fragments": rng.integers(1, 99, (5, 12, 14)).astype(np.uint64)}
    path = tmp_path / "out.zarr"
    container(path, zarr_format, affs, labels)
    to_ngff(path, ["segmentation", "fragments"], [30.0, 6.0, 4.0])
    to_ngff(path, ["segmentation", "fragments"], [30.0, 6.0, 4.0])  # again (a conversion cut short is completed)

    nodes = read(path)
    specs, data, transforms = nodes[""]
    assert specs == ["Multiscales"] and transforms == [{"type": "scale", "scale": [1.0, 30.0, 6.0, 4.0]}]
    np.testing.assert_array_equal(data[0], affs)
    for name, array in labels.items():
        specs, data, transforms = nodes[f"labels/{name}"]
        assert specs == ["Label", "Multiscales"] and transforms[0]["scale"] == [30.0, 6.0, 4.0]
        np.testing.assert_array_equal(data[0], array)
    labels_meta = json.loads((path / "labels" / "zarr.json").read_text())["attributes"]["ome"]
    assert labels_meta == {"version": "0.5", "labels": ["segmentation", "fragments"]}
    label_meta = json.loads((path / "labels" / "fragments" / "zarr.json").read_text())["attributes"]["ome"]
    assert label_meta["image-label"]["source"] == {"image": "../../"}
    assert zarr.open_group(path, mode="r").attrs["arrays"] == {"waterz": "segmentation"}  # pea's attributes kept
    assert not list(path.rglob(".zarray")) and not list(path.rglob(".zattrs"))
    models = pytest.importorskip("ome_zarr_models")
    assert type(models.open_ome_zarr(str(path))).__name__ == "Image"
    assert type(models.open_ome_zarr(str(path / "labels"))).__name__ == "Labels"


def test_affinities_at_another_resolution_are_placed_on_the_label_grid(tmp_path):
    affs = np.zeros((2, 16, 20), np.float32)  # computed at half the labels' resolution
    path = tmp_path / "image.ome.zarr"
    container(path, 3, affs, {"segmentation": np.ones((32, 40), np.uint16)})
    to_ngff(path, ["segmentation"], [0.5, 0.5], image_factor=[2.0, 2.0])
    _, _, transforms = read(path)[""]
    # affinity pixel j covers label pixels 2j, 2j + 1: its centre lies at 2j + 0.5 label pixels
    assert transforms == [{"type": "scale", "scale": [1.0, 1.0, 1.0]},
                          {"type": "translation", "translation": [0.0, 0.25, 0.25]}]
