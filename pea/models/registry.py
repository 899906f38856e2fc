"""Backbone registry and `build_model`: one config mapping in, one network out."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from pea import config
from pea.errors import PEAInputError

Builder = Callable[..., nn.Module]

# backbone name -> builder(in_channels=, emb_dim=, filters=, fg_head=) -> nn.Module
MODELS: dict[str, Builder] = {}

DEFAULTS: dict[str, Any] = config.DEFAULTS["MODEL"]  # the MODEL keys of the config schema


def register(name: str) -> Callable[[Builder], Builder]:
    """Decorator adding a builder to `MODELS` under `name`."""

    def wrap(builder: Builder) -> Builder:
        if name in MODELS:
            raise ValueError(f"backbone {name!r} is registered twice")
        MODELS[name] = builder
        return builder

    return wrap


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PEAInputError(f"model config key {key!r}: expected a positive integer, got {value!r}")
    return value


def check_filters(filters: Sequence[int] | None, default: Sequence[int], backbone: str) -> list[int]:
    """`filters`, or `default` when None; the length must equal `default`'s."""
    if filters is None:
        return list(default)
    if isinstance(filters, (str, bytes)) or not isinstance(filters, Sequence) or len(filters) != len(default):
        raise PEAInputError(
            f"model config key 'filters': backbone {backbone!r} takes {len(default)} integers "
            f"(default {list(default)}), got {filters!r}"
        )
    return [_positive_int("filters", f) for f in filters]


def build_model(cfg: Mapping[str, Any]) -> nn.Module:
    """Build the network described by `cfg` (keys and defaults in `DEFAULTS`).

    `pretrained` (a torchvision-format state dict file) is loaded into the encoder with
    `load_pretrained`; an unknown key or a bad value raises PEAInputError naming the key.
    """
    if not isinstance(cfg, Mapping):
        raise PEAInputError(f"model config: expected a mapping, got {type(cfg).__name__}")
    for key in cfg:
        if key not in DEFAULTS:
            raise PEAInputError(f"model config: unknown key {key!r} (known keys: {', '.join(DEFAULTS)})")
    opts = {**DEFAULTS, **cfg}
    backbone = opts["backbone"]
    if backbone not in MODELS:
        available = ", ".join(sorted(MODELS))
        raise PEAInputError(f"model config key 'backbone': unknown {backbone!r} (available: {available})")
    if not isinstance(opts["fg_head"], bool):
        raise PEAInputError(f"model config key 'fg_head': expected true or false, got {opts['fg_head']!r}")
    pretrained = opts["pretrained"]
    if pretrained is not None and not isinstance(pretrained, str):
        raise PEAInputError(f"model config key 'pretrained': expected a file path or null, got {pretrained!r}")
    model = MODELS[backbone](
        in_channels=_positive_int("in_channels", opts["in_channels"]),
        emb_dim=_positive_int("emb_dim", opts["emb_dim"]),
        filters=opts["filters"],
        fg_head=opts["fg_head"],
    )
    if pretrained:
        from pea.models.weights import load_pretrained

        load_pretrained(model, pretrained)
    return model
