"""The Python interface: the README's example runs as written on a project (demo-style)
checkpoint and on an authors'-format checkpoint; affinities equal a direct forward pass;
segment and evaluate take plain arrays."""
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoints import EM_OVERRIDE, project_checkpoint
from readme_example import readme_example

import pea
from pea.affinity import affinity_targets, embedding_affinity, offsets_from_shifts
from pea.errors import PEAInputError
from pea.inference import predict_windows
from pea.synth.cvppp import make_plant

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = ROOT / "tests" / "data" / "official"
IMAGENET = (np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32))


@pytest.fixture(scope="module")
def plant():
    image, labels = make_plant(np.random.default_rng(2), 70, 64, 6)
    return image, labels


def _run_example(path: Path, plant, config: str | None) -> dict:
    code = readme_example()
    code = code.replace('"models/cvppp_demo/best.ckpt"', repr(str(path)))
    if config:  # the example's comment names the authors' form: pea.load_model(path, config="cvppp")
        code = code.replace(f"pea.load_model({str(path)!r})", f"pea.load_model({str(path)!r}, config={config!r})")
    namespace = {"image": plant[0], "gt": plant[1]}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace


def _direct_affinities(model, image, offsets):
    """Reflect-pad to a multiple of 16, ImageNet normalisation, one forward pass, ReLU."""
    h, w = image.shape[:2]
    ph, pw = -(-h // 16) * 16, -(-w // 16) * 16
    top, left = (ph - h) // 2, (pw - w) // 2
    x = np.pad(image.astype(np.float32) / 255, ((top, ph - h - top), (left, pw - w - left), (0, 0)), mode="reflect")
    x = torch.from_numpy(((x - IMAGENET[0]) / IMAGENET[1]).transpose(2, 0, 1).copy())[None]
    with torch.no_grad():
        affs = torch.relu(embedding_affinity(model(x)["embeddings"][0], offsets))[0].numpy()
    return affs[:, top:top + h, left:left + w]


def test_readme_example_on_a_project_checkpoint(tmp_path, plant):
    path = tmp_path / "best.ckpt"
    project_checkpoint(path, "cvppp_demo", {"MODEL": {"filters": [4, 4, 8, 8, 16]}, "DATA": {"padded_size": None}})
    ns = _run_example(path, plant, None)
    model, affs, labels, scores = ns["model"], ns["affs"], ns["labels"], ns["scores"]
    assert model.offsets == offsets_from_shifts([1, 3, 5, 9, 27]) and not model.training
    assert affs.dtype == np.float32 and affs.shape == (10, 70, 64)
    np.testing.assert_allclose(affs, _direct_affinities(model, plant[0], model.offsets), atol=1e-5)
    assert labels.shape == (70, 64) and labels.min() >= 1  # no mask: every pixel in a segment
    assert set(scores) >= {"sbd", "aji", "voi"} and 0 <= scores["sbd"] <= 1


def test_readme_example_on_an_authors_checkpoint(plant):
    ns = _run_example(OFFICIAL / "resunet2d_small.ckpt", plant, "cvppp")
    assert ns["model"].offsets == offsets_from_shifts([1, 3, 5, 9, 27])
    assert ns["affs"].shape == (10, 70, 64) and ns["labels"].shape == (70, 64)
    # without a config the authors' checkpoint is the bare network, and affinities say so
    bare = pea.load_model(OFFICIAL / "resunet2d_small.ckpt")
    assert bare.offsets is None
    with pytest.raises(PEAInputError, match="config="):
        pea.affinities(bare, plant[0])


def test_segment_and_evaluate_take_plain_arrays(plant):
    """Ground-truth affinities through pea.segment recover the labels (evaluated by pea.evaluate)."""
    labels = plant[1]
    offsets = offsets_from_shifts([1, 3, 5, 9, 27])
    target, _ = affinity_targets(torch.from_numpy(labels.astype(np.int64))[None], offsets)
    seg = pea.segment(target[0].numpy(), offsets, method="mutex", strides=[5, 5], mask=labels > 0)
    scores = pea.evaluate(seg, labels, metrics=["sbd", "dic"])
    assert scores["sbd"] >= 0.99 and scores["dic"] == 0
    with pytest.raises(ValueError, match="unknown partitioner"):
        pea.segment(target[0].numpy(), offsets, method="watershed")


def test_volumes_and_their_partitioners(tmp_path):
    """A 3D network: (Z, Y, X) volumes in, 12 affinity channels out, by sliding windows; all three
    partitioners; a 2D image given to a 3D network is one clear error."""
    path = tmp_path / "em.ckpt"
    project_checkpoint(path, "ac3ac4_demo", EM_OVERRIDE)
    model = pea.load_model(path)
    volume = (np.random.default_rng(0).random((8, 40, 36)) * 255).astype(np.uint8)
    affs = pea.affinities(model, volume)
    assert affs.shape == (12, 8, 40, 36)
    # the checkpoint's windows (EM_OVERRIDE, blend ramp) on the volume over 255, 'unit' normalised
    windows = predict_windows(model, volume[..., None] / np.float32(255), model.offsets, [6, 32, 32],
                              overlap=[2, 8, 8], normalize="unit", progress=False)
    np.testing.assert_allclose(affs, windows, rtol=0, atol=1e-6)
    for method in ("mutex", "waterz", "lmc"):
        assert pea.segment(affs, model.offsets, method=method, strides=[1, 10, 10]).shape == volume.shape
    with pytest.raises(PEAInputError, match=r"\(Z, Y, X\) volume"):
        pea.affinities(model, volume[0])
