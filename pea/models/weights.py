"""Loading weights: strict checkpoint loading and ImageNet (torchvision-format) encoders."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from pea.errors import PEAInputError


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def load_state_dict_checked(model: nn.Module, state_dict: Mapping[str, Tensor], source: str = "checkpoint") -> None:
    """Load `state_dict` (a checkpoint's `model_weights`) into `model` strictly.

    On any mismatch raise PEAInputError naming the first mismatched entry: the first of the
    model's entries (in its state-dict order) that is missing or has another shape, else
    the first of `state_dict`'s entries that the model does not have. `source` (e.g. the
    checkpoint's path) starts the message.
    """
    if not isinstance(state_dict, Mapping):
        raise PEAInputError(
            f"{source}: model weights must be a mapping of names to tensors, got {type(state_dict).__name__}"
        )
    own = model.state_dict()
    for name, tensor in own.items():
        if name not in state_dict:
            raise PEAInputError(f"{source}: parameter {name!r} is missing (the model expects shape {_shape(tensor)})")
        value = state_dict[name]
        if not isinstance(value, Tensor):
            raise PEAInputError(f"{source}: parameter {name!r} is a {type(value).__name__}, not a tensor")
        if value.shape != tensor.shape:
            raise PEAInputError(
                f"{source}: parameter {name!r} has shape {_shape(value)} in the checkpoint "
                f"but {_shape(tensor)} in the model"
            )
    for name in state_dict:
        if name not in own:
            raise PEAInputError(f"{source}: unexpected parameter {name!r} (not in the model)")
    model.load_state_dict(state_dict, strict=True)


def _groups(names: list[str]) -> str:
    """'fc.* (2), layer4.* (30)': names grouped by their first component."""
    counts: dict[str, int] = {}
    for name in names:
        key = name.split(".", 1)[0]
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k}.* ({n})" for k, n in counts.items()) or "none"


@dataclass
class PretrainedReport:
    """What `load_pretrained` copied from a file into `model.encoder` and what it left."""

    path: str
    loaded: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the encoder
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # name, file, model
    missing: list[str] = field(default_factory=list)  # in the encoder, not in the file: left as initialised

    def __str__(self) -> str:
        lines = [
            f"pretrained {self.path}: loaded {len(self.loaded)} tensors into the encoder",
            f"  not loaded, not in the model: {_groups(self.unexpected)}",
        ]
        lines += [f"  not loaded, shape {f} in the file but {m} in the model: {n}" for n, f, m in self.mismatched]
        kept = self.missing + [name for name, _, _ in self.mismatched]
        lines.append(f"  encoder entries left as initialised: {_groups(kept)}")
        return "\n".join(lines)


def load_pretrained(model: nn.Module, path: str | Path, verbose: bool = True) -> PretrainedReport:
    """Copy a torchvision-format state dict file into `model.encoder`, matched by name and shape.

    Entries the encoder lacks (fc.*, layer4.*) or whose shape differs (conv1.weight when
    in_channels != 3) are skipped and reported; nothing is downloaded. Raises
    PEAInputError if the file cannot be read, is not a state dict, or matches nothing.
    The report is printed when `verbose`.
    """
    path = str(path)
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, nn.Module):
        raise PEAInputError(f"pretrained {path}: {type(model).__name__} has no `encoder` to load into")
    if not Path(path).is_file():
        raise PEAInputError(f"pretrained {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable or unsafe file is a user error here
        raise PEAInputError(f"pretrained {path}: not a readable torch state dict ({err})") from err
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise PEAInputError(f"pretrained {path}: expected a mapping of parameter names to tensors")
    own = encoder.state_dict()
    report = PretrainedReport(path)
    with torch.no_grad():
        for name, value in state.items():
            if name not in own:
                report.unexpected.append(name)
            elif value.shape != own[name].shape:
                report.mismatched.append((name, _shape(value), _shape(own[name])))
            else:
                own[name].copy_(value)
                report.loaded.append(name)
    report.missing = [name for name in own if name not in state]
    if not report.loaded:
        raise PEAInputError(
            f"pretrained {path}: no entry matches the encoder of {type(model).__name__} by name and shape "
            f"(expected torchvision ResNet names such as conv1.weight, layer1.0.conv1.weight)"
        )
    if verbose:
        print(report)
    return report
