"""Checkpoints for tests: random-weight networks saved as the project saves (with a config)
and as the authors save (legacy serialisation, no config)."""
from pathlib import Path

import torch

from pea.checkpoint import save_checkpoint
from pea.config import load_config, make_config, merge, shipped_config
from pea.models import build_model



def authors_checkpoint(path: Path, backbone: str, in_channels: int, filters, fg_head: bool) -> None:
    """A random-weight network saved as the authors save (legacy serialisation, no config)."""
    torch.manual_seed(0)
    model = build_model({"backbone": backbone, "in_channels": in_channels, "filters": filters, "fg_head": fg_head})
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"current_iter": 1000, "valid_result": None, "model_weights": model.state_dict()}, path,
               _use_new_zipfile_serialization=False)


def project_checkpoint(path: Path, config: str, override: dict, seed: int = 0) -> dict:
    """A random-weight network of the shipped config `config` (pea/configs/NAME.yaml)
    with `override` laid over it, saved with its config as training saves; returns the config."""
    cfg = make_config(merge(load_config(shipped_config(config)).to_dict(), override), config)
    torch.manual_seed(seed)
    model = build_model(cfg.MODEL)
    save_checkpoint(path, {"model_weights": model.state_dict(), "config": cfg.to_dict(), "iteration": 1})
    return cfg.to_dict()


# a small 3D network and windows that make a test volume several blocks wide
EM_OVERRIDE = {"MODEL": {"filters": [4, 4, 6, 6, 8]},
               "TEST": {"window": [6, 32, 32], "overlap": [2, 8, 8], "context": [2, 8, 8]}}
