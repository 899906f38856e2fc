"""Training switches for speed: bf16/fp16 autocast, channels_last and torch.compile (with its
fallback) train the same network as the float32 default, within a stated tolerance."""
import pytest
import torch

from pea.config import make_config
from pea.train import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def _trainer(data, tmp_path, name, **train):
    cfg = make_config({
        "DATA": {"dataset": "cvppp", "data_dir": str(data), "padded_size": [80, 80], "crop_size": [64, 64],
                 "shifts": [1, 3, 5, 9, 27], "normalize": "imagenet", "num_workers": 0},
        "MODEL": {"filters": [4, 4, 8, 8, 16]},
        "TRAIN": {"iterations": 2, "batch_size": 2, "lr": 0.001, "select_metric": "sbd", "device": "cpu", **train},
        "TEST": {"strides": [5, 5], "mask": "gt"},
    })
    return Trainer(cfg, tmp_path / name)


def _one_step(trainer):
    x, labels = next(iter(trainer._loader()))
    return trainer.step(x, labels)[0]


# (switch, relative tolerance of the loss, absolute tolerance of the weights after one Adam
# step of lr 1e-3: an update is at most ~lr, and near-zero gradients may flip its sign)
@pytest.mark.parametrize("switch, loss_tol, weight_tol", [({"amp": "bf16"}, 0.02, 2e-3), ({"amp": "fp16"}, 0.02, 2e-3),
                                                          ({"channels_last": True}, 1e-5, 2e-3)])
def test_switches_agree_with_float32(tiny_cvppp, tmp_path, switch, loss_tol, weight_tol):
    base = _trainer(tiny_cvppp, tmp_path, "fp32")
    other = _trainer(tiny_cvppp, tmp_path, "other", **switch)
    loss, loss_other = _one_step(base), _one_step(other)
    assert loss_other == pytest.approx(loss, rel=loss_tol)
    for (name, a), b in zip(base.model.state_dict().items(), other.model.state_dict().values()):
        if a.is_floating_point():
            assert (b.float() - a).abs().max() <= weight_tol, name


def test_compile_falls_back_with_a_notice(tiny_cvppp, tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(torch, "compile", broken)
    trainer = _trainer(tiny_cvppp, tmp_path, "compiled", compile=True)
    assert "TRAIN.compile: torch.compile is not available here" in capsys.readouterr().err
    assert trainer.net is trainer.model and _one_step(trainer) > 0


@pytest.mark.slow
def test_compiled_training_agrees_with_eager(tiny_cvppp, tmp_path):
    """torch.compile (about a minute to compile on 2 CPU cores): the same loss within 1e-4."""
    eager = _trainer(tiny_cvppp, tmp_path, "eager")
    compiled = _trainer(tiny_cvppp, tmp_path, "compiled", compile=True)
    assert compiled.net is not compiled.model  # compiled, not the fallback
    assert _one_step(compiled) == pytest.approx(_one_step(eager), rel=1e-4)
    for a, b in zip(eager.model.state_dict().values(), compiled.model.state_dict().values()):
        if a.is_floating_point():
            assert (b - a).abs().max() <= 2e-3
