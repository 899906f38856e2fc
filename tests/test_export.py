"""`pea export`: bioimage.io packages of project and authors' checkpoints, 2D and 3D, that
`bioimageio.core` tests as passing with the network unreachable, and whose outputs on a new
input equal `pea.load_model` + `pea.affinities` (and the foreground head) to 1e-5."""
import socket
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from checkpoints import EM_OVERRIDE, project_checkpoint

import pea
from pea.affinity import embedding_affinity
from pea.api import network_input
from pea.augment import normalize
from pea.cli import main
from pea.inference import predict
from pea.synth.samples import em_volume, nuclei, plant

core = pytest.importorskip("bioimageio.core",
                           reason="the bioimageio extra is not installed (pip install 'pea[bioimageio]')")
pytestmark = pytest.mark.usefixtures("one_thread")
OFFICIAL = Path(__file__).resolve().parent / "data" / "official"


@pytest.fixture
def offline(monkeypatch):
    """Every attempt to open a network connection fails, and is counted."""
    attempts = []

    def refuse(self, address, *args):
        attempts.append(address)
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


def export(tmp_path, ckpt, *extra) -> Path:
    out = tmp_path / "model.zip"
    assert main(["export", "--model", str(ckpt), "--output", str(out), *extra]) == 0
    return out


def rdf(package: Path) -> dict:
    with zipfile.ZipFile(package) as z:
        return yaml.safe_load(z.read("rdf.yaml"))


def package_outputs(package: Path, x: np.ndarray, weight_format: str) -> dict:
    """The package's outputs for input `x` (1, C, *spatial), preprocessing included."""
    descr = core.load_model_description(package, perform_io_checks=False)
    with core.create_prediction_pipeline(descr, weight_format=weight_format, devices=["cpu"]) as pipeline:
        sample = core.Sample(members={"input": core.Tensor.from_numpy(x, dims=tuple(
            str(a.id) for a in descr.inputs[0].axes))}, stat={}, id="x")
        out = pipeline.predict_sample_without_blocking(sample)
    return {str(k): v.data.values for k, v in out.members.items()}


def assert_matches_pea(package, ckpt, config, image, x):
    """Both weight formats give what `pea` computes for the same image (whole, not padded)."""
    model = pea.load_model(ckpt, config=config)
    shape = image.shape[:model.spatial_dims]
    want = pea.affinities(model, image, padded_size=shape, window=None)
    fg = predict(model, network_input(model, image), model.offsets, padded_size=shape, window=None,
                 normalize=model.predict_options.normalize, progress=False)[1]
    for weight_format in ("torchscript", "pytorch_state_dict"):
        got = package_outputs(package, x, weight_format)
        np.testing.assert_allclose(got["affinities"][0], want, rtol=0, atol=1e-5)
        if fg is not None:
            np.testing.assert_allclose(got["foreground"][0, 0], fg, rtol=0, atol=1e-5)
    assert [o["id"] for o in rdf(package)["outputs"]] == ["affinities"] + ["foreground"] * (fg is not None)


def assert_passes_offline(package, offline):
    summary = core.test_model(package, devices=["cpu"])
    assert summary.status == "passed", summary.format()
    assert not offline  # no URL in the package: nothing called out


def test_authors_2d_checkpoint_with_percentiles_and_foreground(tmp_path, offline):
    ckpt = OFFICIAL / "resunet2d_small.ckpt"  # 3 channels, foreground head
    package = export(tmp_path, ckpt, "--config", "bbbc039v1_project", "--test-shape", "48", "64")
    descr = rdf(package)
    assert descr["format_version"] == "0.5.12" and descr["inputs"][0]["test_tensor"]["source"] == "test_input.npy"
    assert [s["id"] for s in descr["inputs"][0]["preprocessing"]][:4] == [
        "ensure_dtype", "scale_range", "clip", "scale_linear"]
    assert descr["config"]["pea"]["offsets"] == [list(o) for o in pea.load_model(ckpt, "bbbc039v1").offsets]
    assert_passes_offline(package, offline)
    grey = nuclei((80, 96), seed=5)[0]  # a new input, uint16: pea reads it as / 65535
    image = np.repeat((grey / 65535.0).astype(np.float32)[..., None], 3, axis=-1)
    assert_matches_pea(package, ckpt, "bbbc039v1_project", image, np.moveaxis(image, -1, 0)[None])


def test_authors_3d_checkpoint(tmp_path, offline):
    ckpt = OFFICIAL / "superhuman3d_small.ckpt"
    package = export(tmp_path, ckpt, "--config", "ac3ac4", "--test-shape", "3", "32", "32")
    assert [a.get("id", a["type"]) for a in rdf(package)["outputs"][0]["axes"]] == ["batch", "channel", "z", "y", "x"]
    assert_passes_offline(package, offline)
    volume = (em_volume((5, 48, 32), seed=2)[0] / 255.0).astype(np.float32)
    assert_matches_pea(package, ckpt, "ac3ac4", volume, volume[None, None])


@pytest.mark.slow
@pytest.mark.parametrize("config, override, spatial", [
    ("cvppp_demo", {"MODEL": {"filters": [4, 8, 8, 16, 16]}}, (64, 80)),  # imagenet, per channel
    ("ac3ac4_demo", EM_OVERRIDE, (4, 48, 64)),  # the project's 3D network, unit normalisation
])
def test_project_checkpoints(tmp_path, offline, config, override, spatial):
    ckpt = tmp_path / "run.ckpt"
    project_checkpoint(ckpt, config, override)
    package = export(tmp_path, ckpt, "--test-shape", *[str(s) for s in spatial])
    assert_passes_offline(package, offline)
    if len(spatial) == 2:
        image = (plant((96, 112), seed=4)[0] / 255.0).astype(np.float32)
        x = np.moveaxis(image, -1, 0)[None]
    else:
        image = (em_volume((6, 64, 48), seed=4)[0] / 255.0).astype(np.float32)
        x = image[None, None]
    assert_matches_pea(package, ckpt, None, image, x)


def test_the_traceable_affinities_equal_the_project_ones():
    from pea.models.affinity_net import AffinityNet

    offsets = [(-1, 0, 0), (0, -3, 0), (0, 0, -9), (2, 5, -4)]
    net = AffinityNet({"backbone": "superhuman_official", "in_channels": 1, "filters": [4, 4, 6, 6, 8]}, offsets).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on the network's shape checks
        script = torch.jit.trace(net, torch.rand(1, 1, 2, 32, 32), check_trace=False)
    x = torch.rand(1, 1, 3, 48, 64)  # another size than the trace's
    with torch.no_grad():
        want = torch.relu(embedding_affinity(net.net(x)["embeddings"][0], offsets))
        torch.testing.assert_close(script(x), want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["imagenet", "unit", "none"])
def test_the_linear_preprocessing_is_the_project_normalisation(mode):
    from pea.export import affine_normalization

    image = np.random.default_rng(0).random((5, 7, 3)).astype(np.float32)
    affine = affine_normalization(mode, 3)
    got = image if affine is None else image * np.float32(affine[0]) + np.float32(affine[1])
    np.testing.assert_allclose(got, normalize(image, mode), rtol=0, atol=1e-6)


def test_bad_exports_are_one_line_errors(tmp_path, capsys):
    ckpt = OFFICIAL / "resunet2d_small.ckpt"
    out = tmp_path / "m.zip"
    cases = [(["--output", str(out)], "--config"),  # the authors' checkpoint carries no offsets
             (["--config", "cvppp", "--output", str(tmp_path / "m.tar")], ".zip"),
             (["--config", "cvppp", "--output", str(out), "--test-shape", "40", "64"], "multiples of 16"),
             (["--config", "ac3ac4", "--output", str(out)], "2D")]
    for extra, message in cases:
        assert main(["export", "--model", str(ckpt), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
    assert list(tmp_path.iterdir()) == []
