"""Every 2D backbone trains through the same engine; checkpoints rebuild the right network."""
import numpy as np
import pytest
import torch

from pea.config import make_config
from pea.errors import PEAInputError
from pea.models import build_model, load_state_dict_checked
from pea.synth.cvppp import generate_cvppp
from pea.checkpoint import load_checkpoint, model_from_checkpoint
from pea.settings import trainer as build_trainer


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cvppp")
    generate_cvppp(root, seed=4, n_train=5, n_test=1, n_valid=1, height=72, width=64, min_leaves=4, max_leaves=6)
    return root


def tiny_config(data_dir, backbone, **model):
    return make_config({
        "DATA": {"dataset": "cvppp", "data_dir": str(data_dir), "padded_size": [80, 64], "crop_size": [64, 64],
                 "shifts": [1, 3, 5, 9, 27], "normalize": "imagenet", "num_workers": 0},
        "MODEL": {"backbone": backbone, **model},
        "TRAIN": {"iterations": 3, "batch_size": 2, "lr": 0.001, "valid_every": 3, "save_every": 3,
                  "log_every": 1, "device": "cpu", "select_metric": "sbd"},
        "TEST": {"strides": [5, 5], "mask": "gt", "small_objects": [5, 20, 50, 300]},
    })


@pytest.mark.parametrize("backbone,filters", [("resunet", [4, 8, 8, 16, 16]),
                                              pytest.param("resnet50", None, marks=pytest.mark.slow),
                                              pytest.param("resnet101", None, marks=pytest.mark.slow)])
def test_short_training_per_backbone(tiny_data, tmp_path, backbone, filters):
    cfg = tiny_config(tiny_data, backbone, filters=filters)
    trainer = build_trainer(cfg, tmp_path / backbone)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    best = trainer.run()
    assert best["iteration"] == 3 and 0.0 <= best["score"] <= 1.0
    losses = [float(l.split()[3]) for l in (tmp_path / backbone / "log.txt").read_text().splitlines()
              if l.startswith("iter ")]
    assert len(losses) == 3 and all(np.isfinite(losses))
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if after[k].is_floating_point())
    # the checkpoint rebuilds the same network from its stored config
    model, ckpt_cfg = model_from_checkpoint(load_checkpoint(tmp_path / backbone / "last.ckpt"), torch.device("cpu"))
    assert ckpt_cfg.MODEL.backbone == backbone and type(model) is type(trainer.model)
    x = torch.randn(1, 3, 48, 40)
    trainer.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x)["embeddings"][0], trainer.model(x)["embeddings"][0])


def test_mismatched_checkpoint_names_the_first_parameter(tiny_data, tmp_path):
    small = build_model(tiny_config(tiny_data, "resunet", filters=[4, 8, 8, 16, 16]).MODEL)
    other = build_model(tiny_config(tiny_data, "resunet", filters=[4, 8, 8, 16, 32]).MODEL)
    with pytest.raises(PEAInputError, match=r"ckpt-x: parameter '[^']+' has shape"):
        load_state_dict_checked(small, other.state_dict(), "ckpt-x")


def test_pretrained_from_config(tiny_data, tmp_path):
    """MODEL.pretrained loads a torchvision-format file into the encoder, by name."""
    reference = build_model(tiny_config(tiny_data, "resnet50").MODEL)
    weights = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in reference.encoder.state_dict().items()}
    weights["fc.weight"] = torch.zeros(1000, 2048)
    path = tmp_path / "resnet50.pth"
    torch.save(weights, path)
    cfg = tiny_config(tiny_data, "resnet50", pretrained=str(path))
    trainer = build_trainer(cfg, tmp_path / "run")
    for k, v in trainer.model.encoder.state_dict().items():
        torch.testing.assert_close(v, weights[k])


def test_checkpoint_with_retired_keys_still_loads(tiny_data):
    """Only the MODEL section rebuilds the network: keys retired elsewhere do not matter,
    an unknown MODEL key still does."""
    cfg = tiny_config(tiny_data, "resunet", filters=[4, 8, 8, 16, 16])
    model = build_model(cfg.MODEL)
    stored = cfg.to_dict()
    stored["DATA"]["a_retired_key"] = 1
    ckpt = {"model_weights": model.state_dict(), "config": stored}
    rebuilt, _ = model_from_checkpoint(ckpt, torch.device("cpu"))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(rebuilt.state_dict()[k], v)
    stored["MODEL"]["filterz"] = [1]
    with pytest.raises(PEAInputError, match="MODEL.filterz"):
        model_from_checkpoint(ckpt, torch.device("cpu"), "old.ckpt")
