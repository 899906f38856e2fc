"""Checkpoints: writing them atomically, reading them (weights only, no pickled code), and
rebuilding their network, for the project's own checkpoints and the authors' released ones.

A project checkpoint holds `model_weights` and the run's `config`, whose MODEL section
rebuilds the network. An official checkpoint (`{'current_iter', 'valid_result',
'model_weights'}`, often PyTorch's legacy non-zip format, keys possibly prefixed `module.`)
has no config: it is recognised by its key names and its network (`resunet_official` or
`superhuman_official`) and every width are read from the tensors' shapes
(`pea.models.official_model_config`).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pea.config import Config, make_config, migrate_stored
from pea.errors import PEAInputError, PEARunError
from pea.io import one_line, atomic_write
from pea.models import build_model, load_state_dict_checked, official_model_config, strip_module_prefix


def save_checkpoint(path: Path, state: Mapping) -> None:
    """Write to a temporary file in the same folder and rename: never a broken checkpoint, and
    no temporary file left behind when writing fails (a full disk)."""
    try:
        with atomic_write(path) as tmp:
            torch.save(dict(state), tmp)
    except (OSError, RuntimeError) as err:  # torch reports a full disk as a RuntimeError
        raise PEARunError(f"{path}: cannot write the checkpoint ({one_line(err)})") from None


def load_checkpoint(path: str | Path) -> dict:
    """Read a project or official checkpoint (weights only, no pickled code); a `module.`
    prefix on every weight name (nn.DataParallel) is removed, and a config stored by an earlier
    version is brought to the current schema (`pea.config.migrate_stored`)."""
    path = Path(path)
    if not path.is_file():
        raise PEAInputError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt files
        raise PEAInputError(f"{path}: not a readable checkpoint ({_load_failure(err)})") from None
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("model_weights"), Mapping):
        raise PEAInputError(f"{path}: no 'model_weights' mapping in the checkpoint")
    stored = ckpt.get("config")
    config = {"config": migrate_stored(stored)} if isinstance(stored, Mapping) else {}
    return {**ckpt, "model_weights": strip_module_prefix(ckpt["model_weights"]), **config}


def _load_failure(err: Exception) -> str:
    """torch.load's reason in one line, without its advice to load with weights_only=False
    (which would run code from the file)."""
    text = one_line(err)
    if "Weights only load failed" in text:
        found = re.search(r"(Unsupported global: GLOBAL \S+|Unsupported operand \S+)", text)
        return "it holds objects other than tensors and plain values" + (f": {found.group(1)}" if found else "")
    return f"{type(err).__name__}: {text}"


def check_finite(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse weights holding NaN or infinity, naming the first such parameter."""
    for name, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            raise PEAInputError(f"{source}: parameter {name!r} holds NaN or infinite values; "
                                f"the checkpoint comes from a diverged run")


def checkpoint_model_config(ckpt: Mapping) -> Any:
    """The MODEL section that rebuilds the checkpoint's network: its stored config's, or for
    an official checkpoint (no config, the authors' key names) the one read from its shapes."""
    stored = ckpt.get("config")
    if isinstance(stored, Mapping):
        return stored.get("MODEL", {})
    if stored is None and isinstance(ckpt.get("model_weights"), Mapping):
        official = official_model_config(ckpt["model_weights"])
        if official is not None:
            return official
    return {}


def model_from_checkpoint(ckpt: Mapping, device: torch.device | str,
                          source: str = "checkpoint") -> tuple[torch.nn.Module, Config]:
    """Rebuild the checkpoint's network (`checkpoint_model_config`) in eval mode on `device`
    and load its weights strictly (the ImageNet initialisation named in MODEL.pretrained is
    not read again). Only the MODEL section of the returned config comes from the
    checkpoint, so retired data or test keys in an old checkpoint do not matter."""
    cfg = make_config({"MODEL": checkpoint_model_config(ckpt)}, f"{source} config")
    cfg.MODEL.pretrained = None
    model = build_model(cfg.MODEL)
    weights = strip_module_prefix(ckpt["model_weights"])
    check_finite(weights, source)
    load_state_dict_checked(model, weights, source)
    return model.to(device).eval(), cfg

