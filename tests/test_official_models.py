"""The authors' networks: their released checkpoints load and compute what the authors' code
computes. Expected values are outputs of the authors' code (tests/data/official/README.md)."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import pea
from pea.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from pea.config import make_config
from pea.errors import PEAInputError
from pea.models import build_model, official_model_config
from pea.models.official import OfficialResUNet, OfficialSuperhuman
from pea.inference_cli import image_inference_main as inference_main
from pea.synth.cvppp import generate_cvppp
from pea.settings import trainer as build_trainer

DATA = Path(__file__).resolve().parent / "data" / "official"
SCRIPTS_CVPPP = Path(__file__).resolve().parents[1] / "scripts_cvppp"
NETS = ["resunet2d", "superhuman3d"]
CLASSES = {"resunet2d": OfficialResUNet, "superhuman3d": OfficialSuperhuman}
ATOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")


def paper_config(net: str) -> dict:
    """The MODEL config of the paper's network, from the arguments stored with its key list."""
    args = json.loads((DATA / f"{net}_paper_keys.json").read_text())["args"]
    if net == "resunet2d":
        return {"backbone": "resunet_official", "in_channels": args["in_channels"], "emb_dim": args["emd"],
                "filters": args["nfeatures"], "fg_head": True}
    return {"backbone": "superhuman_official", "in_channels": args["in_planes"], "emb_dim": args["emd"],
            "filters": args["filters"], "fg_head": False}


def run(model: torch.nn.Module, x: np.ndarray) -> dict:
    with torch.no_grad():
        return model(torch.from_numpy(x))


def assert_official_outputs(out: dict, expected: np.lib.npyio.NpzFile) -> None:
    """Level k of the pyramid (full first) is the authors' emb{5-k} (emb1 is 1/16)."""
    for k, emb in enumerate(out["embeddings"]):
        ref = expected[f"emb{5 - k}"]
        assert tuple(emb.shape) == ref.shape
        np.testing.assert_allclose(emb.numpy(), ref, rtol=0, atol=ATOL)
    if "foreground" in expected:
        assert tuple(out["foreground"].shape) == expected["foreground"].shape
        np.testing.assert_allclose(out["foreground"].numpy(), expected["foreground"], rtol=0, atol=ATOL)
    else:
        assert out["foreground"] is None


@pytest.mark.parametrize("net", NETS)
def test_paper_layout_equals_the_official_keys(net):
    ref = json.loads((DATA / f"{net}_paper_keys.json").read_text())
    model = build_model(paper_config(net))
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == ref["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == ref["parameters"]
    assert official_model_config(model.state_dict()) == paper_config(net)


@pytest.mark.parametrize("net", NETS)
def test_small_checkpoint_reproduces_the_official_outputs(net):
    model = pea.load_model(DATA / f"{net}_small.ckpt")
    assert type(model) is CLASSES[net] and not model.training
    expected = np.load(DATA / f"{net}_small_io.npz")
    assert_official_outputs(run(model, expected["input"]), expected)


@pytest.mark.parametrize("net", NETS)
def test_widths_are_read_from_the_checkpoint(net):
    path = DATA / f"{net}_small.ckpt"
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert "config" not in raw
    model, cfg = model_from_checkpoint(load_checkpoint(path), "cpu", str(path))
    inferred = official_model_config(raw["model_weights"])
    assert {k: cfg.MODEL[k] for k in inferred} == inferred
    rebuilt = build_model(inferred).state_dict()
    assert {k: v.shape for k, v in rebuilt.items()} == {k: v.shape for k, v in raw["model_weights"].items()}


def test_prefixed_and_zip_copies_load(tmp_path):
    path = DATA / "resunet2d_small.ckpt"
    assert not zipfile.is_zipfile(path)  # the authors' legacy format
    raw = torch.load(path, map_location="cpu", weights_only=True)
    prefixed = {**raw, "model_weights": {f"module.{k}": v for k, v in raw["model_weights"].items()}}
    copies = {"zip.ckpt": (raw, True), "module_zip.ckpt": (prefixed, True), "module_legacy.ckpt": (prefixed, False)}
    expected = np.load(DATA / "resunet2d_small_io.npz")
    for name, (ckpt, use_zip) in copies.items():
        torch.save(ckpt, tmp_path / name, _use_new_zipfile_serialization=use_zip)
        assert zipfile.is_zipfile(tmp_path / name) == use_zip
        assert_official_outputs(run(pea.load_model(tmp_path / name), expected["input"]), expected)


def test_missing_official_tensor_is_named(tmp_path):
    raw = torch.load(DATA / "resunet2d_small.ckpt", map_location="cpu", weights_only=True)
    for key in ["outconv_emb.conv.weight", "outconv3.conv.bias"]:
        weights = {k: v for k, v in raw["model_weights"].items() if k != key}
        torch.save({**raw, "model_weights": weights}, tmp_path / "cut.ckpt")
        with pytest.raises(PEAInputError, match=key.replace(".", r"\.")):
            pea.load_model(tmp_path / "cut.ckpt")


@pytest.mark.parametrize("backbone, shape", [("resunet", (3, 40, 37)), ("superhuman", (1, 2, 33, 20)),
                                             ("mala", (1, 2, 33, 20))])
def test_project_checkpoint_still_loads(tmp_path, backbone, shape):
    cfg = make_config({"MODEL": {"backbone": backbone, "in_channels": shape[0], "filters": None, "fg_head": True}})
    torch.manual_seed(0)
    model = build_model(cfg.MODEL).eval()
    assert official_model_config(model.state_dict()) is None
    save_checkpoint(tmp_path / "last.ckpt", {"model_weights": model.state_dict(), "config": cfg.to_dict()})
    loaded = pea.load_model(tmp_path / "last.ckpt")
    assert type(loaded) is type(model) and not loaded.training
    x = torch.randn(1, *shape)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    for u, v in zip(a["embeddings"] + [a["foreground"]], b["embeddings"] + [b["foreground"]]):
        torch.testing.assert_close(u, v, rtol=0, atol=0)


@pytest.mark.parametrize("net, shapes", [("resunet2d", [(3, 37, 50), (3, 16, 17)]),
                                         ("superhuman3d", [(1, 3, 35, 18), (1, 1, 16, 21)])])
def test_any_size_gives_the_project_pyramid(net, shapes):
    """Sizes the authors' code cannot take (not multiples of 16) still give level k at the
    floor-halved size; gradients reach every parameter."""
    model = pea.load_model(DATA / f"{net}_small.ckpt").train()
    for shape in shapes:
        out = model(torch.randn(2, *shape))
        *z, h, w = shape[1:]
        assert [tuple(e.shape[2:]) for e in out["embeddings"]] == [(*z, h >> k, w >> k) for k in range(5)]
        if out["foreground"] is not None:
            assert tuple(out["foreground"].shape) == (2, 2, *shape[1:])
    gen = torch.Generator().manual_seed(0)
    tensors = [t for t in out["embeddings"] + [out["foreground"]] if t is not None]
    sum((t * torch.rand(t.shape, generator=gen)).sum() for t in tensors).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_superhuman_official_has_no_foreground_head():
    with pytest.raises(PEAInputError, match="fg_head"):
        build_model({**paper_config("superhuman3d"), "fg_head": True})


def test_resume_from_an_official_checkpoint(tmp_path):
    """Training continues from the authors' weights and iteration, with a fresh optimizer."""
    path = DATA / "resunet2d_small.ckpt"
    raw = torch.load(path, map_location="cpu", weights_only=True)
    cfg = make_config({
        "DATA": {"dataset": "cvppp", "data_dir": str(tmp_path), "shifts": [1, 3], "num_workers": 0},
        "MODEL": official_model_config(raw["model_weights"]),
        "TRAIN": {"device": "cpu", "select_metric": "sbd"},
    })
    trainer = build_trainer(cfg, tmp_path / "run")
    trainer.resume(path)
    assert trainer.iteration == raw["current_iter"]
    for k, v in trainer.model.state_dict().items():
        torch.testing.assert_close(v, raw["model_weights"][k], rtol=0, atol=0)


def test_inference_script_takes_an_official_checkpoint(tmp_path):
    """The network comes from the checkpoint, whatever MODEL the config names."""
    data, out = tmp_path / "cvppp", tmp_path / "inference"
    generate_cvppp(data, seed=3, n_train=2, n_test=1, n_valid=1, height=80, width=72, min_leaves=4, max_leaves=6)
    sets = [f"DATA.data_dir={data}", "DATA.padded_size=[80, 80]", "DATA.num_workers=0", f"TEST.out_dir={out}",
            "TEST.trained_dir=/nonexistent", "TRAIN.device=cpu"]
    args = ["-c=cvppp_demo", "-mn=official", f"-id={DATA / 'resunet2d_small.ckpt'}", "-m=validation"]
    assert inference_main(SCRIPTS_CVPPP, args + sum((["--set", s] for s in sets), [])) == 0
    with h5py.File(out / "official" / "validation" / "affs_resunet2d_small" / "seg.hdf", "r") as f:
        assert f["main"].shape == (1, 80, 72)
