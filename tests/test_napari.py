"""The napari plugin: its manifest, its reader on `pea predict` outputs (and not on other
files), its sample data, and the widget segmenting 2D and 3D image layers in a background
thread as `pea predict` and the Python API do. The viewer tests need an X server: `make test`
runs pytest under `xvfb-run -a` (Qt's offscreen platform has no OpenGL for napari's canvas)."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from checkpoints import EM_OVERRIDE, project_checkpoint
from PIL import Image

import pea
from pea.cli import main
from pea.ome import to_ngff
from pea.synth.samples import em_volume, plant

napari = pytest.importorskip("napari", reason="napari is not installed (pip install 'pea[napari]')")
from npe2 import PluginManifest  # noqa: E402

from pea.napari.reader import get_reader  # noqa: E402
from pea.napari.widget import SegmentWidget  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
MANIFEST = Path(__file__).resolve().parents[1] / "pea" / "napari" / "napari.yaml"
needs_display = pytest.mark.skipif(sys.platform.startswith("linux") and not os.environ.get("DISPLAY"),
                                   reason="no X display: run under `xvfb-run -a` (make test does)")


@pytest.fixture
def pea_plugin(npe2pm):
    """napari's plugin manager holding this checkout's manifest (whatever is installed)."""
    npe2pm.register(PluginManifest.from_file(MANIFEST))
    return npe2pm


def test_the_manifest_is_valid_and_its_commands_import():
    manifest = PluginManifest.from_file(MANIFEST)
    manifest.validate_imports()  # npe2 validate --imports
    assert {c.id for c in manifest.contributions.commands} == {
        "pea.segment", "pea.read", "pea.sample_plant", "pea.sample_nuclei", "pea.sample_em"}


def predict_like_container(path: Path, rng) -> tuple[np.ndarray, np.ndarray]:
    """A container as `pea predict` leaves a volume: zarr v2 arrays, pea's attributes, then NGFF."""
    affs = rng.random((3, 4, 16, 20), dtype=np.float32)
    seg = rng.integers(1, 7, (4, 16, 20)).astype(np.uint32)
    group = zarr.open_group(path, mode="w", zarr_format=2)
    group.create_array("affinities", data=affs, chunks=(3, 2, 8, 10))
    group.create_array("segmentation", data=seg, chunks=(2, 8, 10))
    group.attrs.update({"offsets": [[-1, 0, 0], [0, -1, 0], [0, 0, -1]], "arrays": {"waterz": "segmentation"}})
    to_ngff(path, ["segmentation"], [30.0, 6.0, 6.0])
    return affs, seg


def test_the_reader_reads_pea_outputs_and_leaves_other_files(tmp_path):
    affs, seg = predict_like_container(tmp_path / "seg.zarr", np.random.default_rng(1))
    layers = get_reader(str(tmp_path / "seg.zarr"))(str(tmp_path / "seg.zarr"))
    assert [(kw["name"], kind) for _, kw, kind in layers] == [("affinities", "image"), ("segmentation", "labels")]
    (a, a_kw, _), (s, s_kw, _) = layers
    np.testing.assert_array_equal(a[:], affs)
    np.testing.assert_array_equal(s[:], seg)
    assert a_kw["scale"] == [1.0, 30.0, 6.0, 6.0] and s_kw["scale"] == [30.0, 6.0, 6.0]
    assert a_kw["metadata"]["offsets"] == [[-1, 0, 0], [0, -1, 0], [0, 0, -1]]

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(plant((48, 40), seed=2)[0]).save(images / "p.png")
    tifffile.imwrite(images / "other.tif", seg[0].astype(np.uint16))  # a tif of someone else's
    ckpt = tmp_path / "c.ckpt"
    project_checkpoint(ckpt, "cvppp_demo", {"MODEL": {"filters": [4, 8, 8, 16, 16]}})
    assert main(["predict", "--model", str(ckpt), "--input", str(images / "p.png"), "--output", str(tmp_path / "out"),
                 "--device", "cpu", "--save-affinities"]) == 0
    (labels, kw, kind), = get_reader(str(tmp_path / "out" / "p.tif"))(str(tmp_path / "out" / "p.tif"))
    assert kind == "labels" and labels.shape == (48, 40)
    (_, _, kind), = get_reader(str(tmp_path / "out" / "p_affinities.tif"))(str(tmp_path / "out" / "p_affinities.tif"))
    assert kind == "image"
    assert get_reader(str(images / "other.tif")) is None and get_reader(str(images / "p.png")) is None
    plain = tmp_path / "plain.zarr"
    zarr.open_group(plain, mode="w").create_array("raw", data=seg)
    assert get_reader(str(plain)) is None


@needs_display
def test_sample_data_and_the_reader_through_napari(make_napari_viewer, pea_plugin, tmp_path):
    viewer = make_napari_viewer()
    viewer.open_sample("pea", "plant")
    assert [(layer.name, type(layer).__name__) for layer in viewer.layers] == [("plant", "Image"),
                                                                                ("plant ground truth", "Labels")]
    assert viewer.layers["plant"].rgb
    viewer.layers.clear()
    predict_like_container(tmp_path / "seg.zarr", np.random.default_rng(2))
    viewer.open(str(tmp_path / "seg.zarr"), plugin="pea")
    assert [type(layer).__name__ for layer in viewer.layers] == ["Image", "Labels"]
    assert tuple(viewer.layers["segmentation"].scale) == (30.0, 6.0, 6.0)


def run_widget(viewer, qtbot, widget, expected_layers: int):
    worker = widget.run()
    assert worker is not None, widget.status.value
    with qtbot.waitSignal(worker.finished, timeout=300_000):
        pass
    qtbot.waitUntil(lambda: len(viewer.layers) == expected_layers, timeout=10_000)


@needs_display
def test_the_widget_segments_a_2d_image_as_pea_predict(make_napari_viewer, qtbot, tmp_path):
    ckpt = tmp_path / "c.ckpt"
    project_checkpoint(ckpt, "cvppp_demo", {"MODEL": {"filters": [4, 8, 8, 16, 16]}})  # DATA.scale 0.5
    image = plant((96, 112), seed=3)[0]
    Image.fromarray(image).save(tmp_path / "plant.png")
    assert main(["predict", "--model", str(ckpt), "--input", str(tmp_path / "plant.png"),
                 "--output", str(tmp_path / "out"), "--device", "cpu"]) == 0

    viewer = make_napari_viewer()
    viewer.add_image(image, rgb=True, name="plant", scale=(0.5, 0.5))
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.checkpoint.value = ckpt
    widget.device.value = "cpu"
    widget.with_affinities.value = True
    run_widget(viewer, qtbot, widget, 3)
    labels, affs = viewer.layers["plant mutex"], viewer.layers["plant affinities"]
    np.testing.assert_array_equal(labels.data, tifffile.imread(tmp_path / "out" / "plant.tif"))
    assert tuple(labels.scale) == (0.5, 0.5) and affs.data.shape == (10, 48, 56)
    assert tuple(affs.scale) == (1.0, 1.0, 1.0) and tuple(affs.translate) == (0.0, 0.25, 0.25)
    assert widget.status.value.startswith("plant:")

    widget.partitioner.value = "waterz"  # 2D images take the Mutex Watershed: a message, no layer
    viewer.layers.selection.active = viewer.layers["plant"]
    run_widget(viewer, qtbot, widget, 3)
    assert widget.status.value.startswith("failed:") and "mutex" in widget.status.value
    viewer.layers.selection.active = viewer.layers["plant mutex"]
    assert widget.run() is None and "image layer" in widget.status.value


@needs_display
def test_the_widget_segments_a_3d_stack_as_the_python_api(make_napari_viewer, qtbot, tmp_path):
    ckpt = tmp_path / "em.ckpt"
    project_checkpoint(ckpt, "ac3ac4_demo", EM_OVERRIDE)
    volume = em_volume((8, 40, 48), seed=4)[0]
    model = pea.load_model(ckpt)
    options = model.segment_options
    want = pea.segment(pea.affinities(model, volume), model.offsets, "waterz", fragments=options.fragments,
                       waterz_threshold=options.waterz_threshold, small_objects=options.small_objects,
                       merge_rule=options.merge_rule)

    viewer = make_napari_viewer()
    viewer.add_image(volume, name="em")
    widget = SegmentWidget(viewer)
    widget.checkpoint.value = ckpt
    widget.device.value = "cpu"
    widget.partitioner.value = "waterz"
    run_widget(viewer, qtbot, widget, 2)
    np.testing.assert_array_equal(viewer.layers["em waterz"].data, want)
