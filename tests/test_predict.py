"""`pea predict` on generated data: folders of 2D images of any size, type and channel count,
volumes in h5, zarr, n5 and TIFF, with project checkpoints (config inside) and the authors'
(config by --config); OME-Zarr outputs read by `ome_zarr.reader` and valid for
`ome_zarr_models`; one-line errors; outputs written atomically."""
import gzip
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import zarr
from checkpoints import EM_OVERRIDE, project_checkpoint
from PIL import Image
from scipy import ndimage

import pea
from pea.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")
OFFICIAL = Path(__file__).resolve().parent / "data" / "official"
SMALL_2D = {"MODEL": {"filters": [4, 8, 8, 16, 16]}, "DATA": {"padded_size": None}}


def _blobs(shape, seed):
    raw = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 2)
    return (raw - raw.min()) / (raw.max() - raw.min())


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    Image.fromarray((np.stack([_blobs((70, 90), k) for k in range(3)], -1) * 255).astype(np.uint8)).save(
        folder / "rgb.png")
    Image.fromarray((np.stack([_blobs((48, 40), 5)] * 3 + [np.ones((48, 40))], -1) * 255).astype(np.uint8)).save(
        folder / "rgba.png")
    tifffile.imwrite(folder / "grey16.tif", (_blobs((64, 50), 6) * 4000).astype(np.uint16))
    Image.fromarray((_blobs((33, 47), 7) * 255).astype(np.uint8)).convert("RGB").save(folder / "photo.jpg")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def ckpt_2d(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "cvppp.ckpt"
    project_checkpoint(path, "cvppp_demo", SMALL_2D)
    return path


SIZES = {"rgb": (70, 90), "rgba": (48, 40), "grey16": (64, 50), "photo": (33, 47)}


def _unit_rgb(path: Path) -> np.ndarray:
    """The file as the network's RGB input in [0, 1], read here: 8 bits over 255, alpha dropped,
    16-bit grey over 65535 and repeated to 3 channels."""
    if path.suffix == ".tif":
        return np.repeat(tifffile.imread(path)[..., None].astype(np.float32) / 65535, 3, -1)
    return np.asarray(Image.open(path))[..., :3].astype(np.float32) / 255


def test_a_folder_of_images_with_a_project_checkpoint(images, ckpt_2d, tmp_path, capsys):
    out = tmp_path / "labels"
    argv = ["predict", "--model", str(ckpt_2d), "--input", str(images), "--output", str(out), "--device", "cpu"]
    assert main(argv + ["--save-affinities"]) == 0
    assert "without a mask" in capsys.readouterr().err  # cvppp's TEST.mask gt: no ground truth here
    model = pea.load_model(ckpt_2d)
    files = sorted(p for p in images.iterdir() if p.stem in SIZES)
    assert len(files) == len(SIZES)
    for path in files:
        stem, shape = path.stem, SIZES[path.stem]
        seg = tifffile.imread(out / f"{stem}.tif")
        assert seg.shape == shape and seg.dtype == np.uint16 and seg.max() >= 1
        affs = tifffile.imread(out / f"{stem}_affinities.tif")  # at DATA.scale 0.5, 10 channels
        assert affs.shape == (10, round(shape[0] / 2), round(shape[1] / 2)) and affs.dtype == np.float32
        # the pixels reached the network as they are in the file
        np.testing.assert_allclose(affs, pea.affinities(model, _unit_rgb(path), scale=model.scale), rtol=0, atol=1e-5)
    assert not list(out.glob(".*"))
    glob_out = tmp_path / "png"
    assert main(argv + ["--partitioner", "mutex", "--input", str(images / "*.png"), "--output", str(glob_out)]) == 0
    assert sorted(p.name for p in glob_out.iterdir()) == ["rgb.tif", "rgba.tif"]


def test_the_authors_checkpoint_takes_its_config_by_name(images, tmp_path, capsys):
    ckpt = str(OFFICIAL / "resunet2d_small.ckpt")  # 3 input channels, foreground head
    argv = ["predict", "--model", ckpt, "--input", str(images / "grey16.tif"), "--output", str(tmp_path)]
    assert main(argv) == 2
    assert "--config" in capsys.readouterr().err
    assert main(argv + ["--config", "bbbc039v1", "--device", "cpu", "--small-objects", "[[5, 5]]"]) == 0
    assert tifffile.imread(tmp_path / "grey16.tif").shape == (64, 50)


def _volume(shape=(10, 40, 48)) -> np.ndarray:
    raw = ndimage.gaussian_filter(np.random.default_rng(4).random(shape), (0.5, 2, 2))
    return ((raw - raw.min()) / (raw.max() - raw.min()) * 255).astype(np.uint8)


def write_n5(path: Path, data: np.ndarray, block=(4, 16, 16)) -> None:
    """An N5 dataset with gzip blocks (big-endian, axes reversed), as n5 writers store it."""
    path.mkdir(parents=True)
    (path / "attributes.json").write_text(json.dumps({"dimensions": list(data.shape[::-1]), "blockSize": list(
        block[::-1]), "dataType": data.dtype.name, "compression": {"type": "gzip"}}))
    for index in np.ndindex(*[-(-n // b) for n, b in zip(data.shape, block)]):
        chunk = data[tuple(slice(i * b, (i + 1) * b) for i, b in zip(index, block))]
        header = np.array([0, 3], ">u2").tobytes() + np.array(chunk.shape[::-1], ">u4").tobytes()
        file = path.joinpath(*[str(i) for i in index[::-1]])
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(header + gzip.compress(chunk.astype(chunk.dtype.newbyteorder(">")).tobytes()))


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("volumes")
    raw = _volume()
    with h5py.File(tmp / "raw.h5", "w") as f:
        f.create_dataset("em/raw", data=raw)
        f.create_dataset("em/labels", data=raw > 128)
    zarr.open_group(tmp / "raw.zarr", mode="w").create_array("raw", data=raw, chunks=(5, 16, 16))
    write_n5(tmp / "raw.n5" / "raw", raw)
    tifffile.imwrite(tmp / "raw.tif", raw)
    project_checkpoint(tmp / "em.ckpt", "ac3ac4_demo", EM_OVERRIDE)
    return tmp, raw


def _predict_volume(volumes, spec, out, *extra):
    tmp, _ = volumes
    return main(["predict", "--model", str(tmp / "em.ckpt"), "--input", spec, "--output", str(out),
                 "--device", "cpu", "--workers", "0", "--block", "5", "20", "24", *extra])


def test_volumes_in_every_format_give_one_segmentation(volumes, tmp_path):
    tmp, raw = volumes
    specs = [f"{tmp}/raw.h5:em/raw", f"{tmp}/raw.zarr/raw", f"{tmp}/raw.n5/raw", f"{tmp}/raw.tif"]
    outputs = []
    for k, spec in enumerate(specs):
        assert _predict_volume(volumes, spec, tmp_path / f"out{k}.zarr", "--partitioner", "waterz,lmc",
                               "--voxel-size", "30", "6", "6") == 0
        outputs.append(zarr.open_group(tmp_path / f"out{k}.zarr", mode="r"))
    first = outputs[0]
    assert first["affinities"].shape == (12,) + raw.shape and first["affinities"].chunks == (12, 5, 20, 24)
    assert first["labels/segmentation/0"].shape == raw.shape and first["labels/segmentation/0"][:].min() >= 1
    assert first.attrs["arrays"] == {"waterz": "segmentation", "lmc": "segmentation_lmc"}
    for other in outputs[1:]:
        np.testing.assert_array_equal(other["affinities"][:], first["affinities"][:])
        np.testing.assert_array_equal(other["labels/segmentation_lmc/0"][:], first["labels/segmentation_lmc/0"][:])
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"out{k}.zarr" for k in range(4)]  # no temporaries
    nodes = ome_nodes(tmp_path / "out0.zarr")  # OME-Zarr: the affinities an image, the segmentations its labels
    assert nodes[""][:2] == (["Multiscales"], (12,) + raw.shape) and nodes[""][2] == [1.0, 30.0, 6.0, 6.0]
    for name in ("segmentation", "segmentation_lmc", "fragments"):
        assert nodes[f"labels/{name}"] == (["Label", "Multiscales"], raw.shape, [30.0, 6.0, 6.0])


def ome_nodes(path: Path) -> dict:
    """What `ome_zarr.reader` finds: node path -> (specs, shape, scale)."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    nodes = {}
    for node in Reader(parse_url(str(path)))():
        key = str(node.zarr.path).rstrip("/").removeprefix(str(path)).lstrip("/")
        scale = node.metadata.get("coordinateTransformations", [[{}]])[0][0].get("scale")
        nodes[key] = ([type(s).__name__ for s in node.specs], tuple(node.data[0].shape) if node.data else (), scale)
    return nodes


def test_images_as_ome_zarr(images, ckpt_2d, tmp_path):
    argv = ["predict", "--model", str(ckpt_2d), "--input", str(images / "grey16.tif"), "--device", "cpu"]
    assert main(argv + ["--output", str(tmp_path / "tif")]) == 0
    assert main(argv + ["--output", str(tmp_path / "ome"), "--format", "ome-zarr", "--voxel-size", "0.5", "0.5"]) == 0
    out = tmp_path / "ome" / "grey16.ome.zarr"
    assert [p.name for p in (tmp_path / "ome").iterdir()] == ["grey16.ome.zarr"]
    nodes = ome_nodes(out)  # affinities at DATA.scale 0.5: pixels twice the labels' size
    assert nodes[""] == (["Multiscales"], (10, 32, 25), [1.0, 1.0, 1.0])
    assert nodes["labels/segmentation"] == (["Label", "Multiscales"], (64, 50), [0.5, 0.5])
    labels = zarr.open_group(out, mode="r")["labels/segmentation/0"][:]
    np.testing.assert_array_equal(labels, tifffile.imread(tmp_path / "tif" / "grey16.tif"))


def test_whole_volume_and_the_authors_3d_checkpoint(volumes, tmp_path):
    tmp, raw = volumes
    out = tmp_path / "whole.zarr"
    assert _predict_volume(volumes, f"{tmp}/raw.h5:em/raw", out, "--whole", "--partitioner", "waterz,mutex") == 0
    whole = zarr.open_group(out, mode="r")
    assert whole["labels/segmentation_mutex/0"].shape == raw.shape
    blockwise = tmp_path / "blockwise.zarr"
    assert _predict_volume(volumes, f"{tmp}/raw.h5:em/raw", blockwise, "--partitioner", "waterz") == 0
    np.testing.assert_allclose(zarr.open_group(blockwise, mode="r")["affinities"][:], whole["affinities"][:],
                               rtol=0, atol=1e-5)
    authors = ["predict", "--model", str(OFFICIAL / "superhuman3d_small.ckpt"), "--input", f"{tmp}/raw.zarr/raw",
               "--output", str(tmp_path / "authors.zarr"), "--config", "ac3ac4", "--device", "cpu", "--workers", "0",
               "--set", "TEST.window=[6,32,32]", "--set", "TEST.overlap=[2,8,8]", "--set", "TEST.context=[2,8,8]"]
    assert main(authors) == 0
    assert zarr.open_group(tmp_path / "authors.zarr", mode="r")["labels/segmentation/0"].shape == raw.shape


@pytest.mark.parametrize("spec, message", [
    ("{tmp}/missing.h5:raw", "no such file"),
    ("{tmp}/raw.h5", "name one dataset"),
    ("{tmp}/raw.h5:em/nothing", "name one dataset"),
    ("{tmp}/raw.zarr/nothing", "cannot read the volume"),
    ("{tmp}/raw.n5/nothing", "attributes.json"),
    ("{tmp}/em.ckpt", "not a volume"),
])
def test_unreadable_volumes_are_one_line_errors(volumes, tmp_path, capsys, spec, message):
    tmp, _ = volumes
    assert _predict_volume(volumes, spec.format(tmp=tmp), tmp_path / "out.zarr") == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not list(tmp_path.iterdir())


def test_bad_images_and_options_are_one_line_errors(images, ckpt_2d, volumes, tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    base = ["predict", "--model", str(ckpt_2d), "--output", str(tmp_path / "out"), "--device", "cpu"]
    assert main(base + ["--input", str(tmp_path / "broken.png")]) == 2
    assert main(base + ["--input", str(tmp_path / "nothing")]) == 2
    tmp, _ = volumes
    assert main(base + ["--input", str(images), "--partitioner", "waterz"]) == 2
    assert _predict_volume(volumes, f"{tmp}/raw.h5:em/raw", tmp_path / "o.zarr", "--small-objects", "[[5, 5]]",
                           "--merge-rule", "window") == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("pea predict: error:")]
    assert ["cannot read image" in lines[0], "no such folder" in lines[1], "2D images take mutex" in lines[2],
            "--whole" in lines[3]] == [True] * 4
    assert _predict_volume(volumes, f"{tmp}/raw.h5:em/raw", tmp_path / "o.zarr", "--format", "tif") == 2
    assert _predict_volume(volumes, f"{tmp}/raw.h5:em/raw", tmp_path / "o.zarr", "--voxel-size", "6", "6") == 2
    assert main(base + ["--input", str(images), "--voxel-size", "0", "1"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("pea predict: error:")]
    assert ["OME-Zarr" in lines[0], "give 3 positive sizes" in lines[1], "give 2 positive" in lines[2]] == [True] * 3
    assert not (tmp_path / "o.zarr").exists()


def test_an_existing_output_is_resumed_refused_or_overwritten(volumes, tmp_path, capsys):
    tmp, _ = volumes
    out = tmp_path / "seg.zarr"
    assert _predict_volume(volumes, f"{tmp}/raw.h5:em/raw", out, "--partitioner", "waterz,lmc") == 0
    first = zarr.open_group(out, mode="r")["labels/segmentation_lmc/0"][:]
    assert _predict_volume(volumes, f"{tmp}/raw.h5:em/raw", out, "--partitioner", "waterz,lmc") == 0  # the same run: done
    assert "complete already" in capsys.readouterr().err
    assert _predict_volume(volumes, f"{tmp}/raw.h5:em/raw", out, "--partitioner", "waterz") == 2  # another run: refused
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "another partitioners" in err and "--overwrite" in err
    np.testing.assert_array_equal(zarr.open_group(out, mode="r")["labels/segmentation_lmc/0"][:], first)  # untouched
    assert _predict_volume(volumes, f"{tmp}/raw.h5:em/raw", out, "--partitioner", "waterz", "--overwrite") == 0
    assert "segmentation_lmc" not in zarr.open_group(out, mode="r")["labels"]
    assert [p.name for p in tmp_path.iterdir()] == ["seg.zarr"]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    assert _predict_volume(volumes, f"{tmp}/raw.h5:em/raw", tmp_path / "notes", "--overwrite") == 2  # not a container
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
