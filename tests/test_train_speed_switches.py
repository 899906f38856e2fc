"""Training switches for speed: bf16/fp16 autocast, channels_last and torch.compile (with its
fallback) train the same network as the float32 default, within a stated tolerance."""
import pytest
import torch

from pea.config import make_config
from pea.settings import trainer as build_trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def _trainer(data, tmp_path, name, **train):
    cfg = make_config({
        "DATA": {"dataset": "cvppp", "data_dir": str(data), "padded_size": [80, 80], "crop_size": [64, 64],
                 "shifts": [1, 3, 5, 9, 27], "normalize": "imagenet", "num_workers": 0},
        "MODEL": {"filters": [8, 8, 16, 16, 32]},
        "TRAIN": {"iterations": 2, "batch_size": 4, "lr": 0.001, "select_metric": "sbd", "device": "cpu", **train},
        "TEST": {"strides": [5, 5], "mask": "gt"},
    })
    return build_trainer(cfg, tmp_path / name)


def _one_step(trainer):
    """The loss of the first batch; fp16 repeats the step while the gradient scaler finds an
    overflow (it then skips the update and lowers its scale), so the gradient is finite."""
    x, labels = next(iter(trainer.train_loader(0)))
    for _ in range(30):
        loss = float(trainer.step(x, labels)[0])
        if torch.isfinite(_gradient(trainer)).all():
            return loss
    raise AssertionError("no finite gradient in 30 steps")


def _gradient(trainer) -> torch.Tensor:
    """Every parameter's gradient of the last step, as one float32 vector."""
    return torch.cat([p.grad.float().flatten() for p in trainer.model.parameters() if p.grad is not None])


# (switch, relative tolerance of the loss, largest relative L2 error of the whole gradient;
# the gradient, not the weights: one Adam step moves every weight by about lr whatever its
# gradient, so weights after a step cannot tell a wrong gradient from a right one. This tiny
# network's gradient is ill-conditioned (BatchNorm on batches of 4): float32 in channels_last
# moves it by 0.001-0.1 depending on the data, bf16 by 0.36-0.50 (0.496 for this batch; bound
# 0.7), fp16 by 0.15; the gradient of another batch lies 1.1-1.6 away, and the test
# checks that it fails the bound.)
@pytest.mark.parametrize("switch, loss_tol, grad_tol", [({"amp": "bf16"}, 0.02, 0.7), ({"amp": "fp16"}, 0.02, 0.3),
                                                        ({"channels_last": True}, 1e-5, 0.2)])
def test_switches_agree_with_float32(tiny_cvppp, tmp_path, switch, loss_tol, grad_tol):
    base = _trainer(tiny_cvppp, tmp_path, "fp32")
    other = _trainer(tiny_cvppp, tmp_path, "other", **switch)
    loss, loss_other = _one_step(base), _one_step(other)
    assert loss_other == pytest.approx(loss, rel=loss_tol)
    g, g_other = _gradient(base), _gradient(other)
    error = float((g_other - g).norm() / g.norm())
    assert g.norm() > 0 and error <= grad_tol
    # and half precision did run (measured 0.496 bf16, 0.152 fp16): an ignored amp passed the bound
    assert error > 0.01 or "amp" not in switch
    # a wrong gradient of the same size fails the same bound: the step of another batch
    x, labels = list(base.train_loader(0))[1]
    base.step(x, labels)
    assert float((_gradient(base) - g).norm() / g.norm()) > grad_tol


def test_compile_falls_back_with_a_notice(tiny_cvppp, tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(torch, "compile", broken)
    trainer = _trainer(tiny_cvppp, tmp_path, "compiled", compile=True)
    assert "TRAIN.compile: torch.compile is not available here" in capsys.readouterr().err
    assert trainer.net is trainer.model and _one_step(trainer) > 0


@pytest.mark.slow
def test_compiled_training_agrees_with_eager(tiny_cvppp, tmp_path):
    """torch.compile (about a minute to compile on 2 CPU cores): the same loss within 1e-4 and
    the same gradient within a relative L2 error of 1e-3."""
    eager = _trainer(tiny_cvppp, tmp_path, "eager")
    compiled = _trainer(tiny_cvppp, tmp_path, "compiled", compile=True)
    assert compiled.net is not compiled.model  # compiled, not the fallback
    assert _one_step(compiled) == pytest.approx(_one_step(eager), rel=1e-4)
    g = _gradient(eager)
    assert float((_gradient(compiled) - g).norm() / g.norm()) <= 1e-3
