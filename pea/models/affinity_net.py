"""A backbone and its offsets as one network from image to affinities: what `pea export`
packages for bioimage.io (its `pytorch_state_dict` architecture, `pea.models.affinity_net.
AffinityNet`, and the module traced to TorchScript).

    AffinityNet(model={MODEL section}, offsets=[[dz, dy, dx], ...])
    (N, C, *spatial) network input -> (N, len(offsets), *spatial) affinities in [0, 1]
                                      [, (N, 1, *spatial) foreground probability]

The affinities are those of `pea.inference.predict_image`: ReLU of the cosine similarity of
the full-resolution embedding at p and at p + offset, 0 where p + offset lies outside. They
are computed here by zero-padding and slicing relative to the ends (`shifted`), so a trace
holds no input size and serves every size the backbone takes (in-plane multiples of 16).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pea.models.registry import build_model


def shifted(x: Tensor, offset: Sequence[int]) -> Tensor:
    """`x` (N, C, *spatial) read at p + offset (0 where that lies outside), same shape."""
    for axis, o in enumerate(offset, start=2):
        if o == 0:
            continue
        pad = [0, 0] * (x.dim() - axis - 1) + ([0, o] if o > 0 else [-o, 0])
        index = [slice(None)] * x.dim()
        index[axis] = slice(o, None) if o > 0 else slice(None, o)
        x = F.pad(x, pad)[tuple(index)]
    return x


class AffinityNet(nn.Module):
    """The network of MODEL section `model` (its weights under `net.`) followed by the
    affinities of `offsets`; with a foreground head, also the foreground probability."""

    def __init__(self, model: Mapping, offsets: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.net = build_model({**model, "pretrained": None})
        self.offsets = [tuple(int(v) for v in o) for o in offsets]

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        out = self.net(x)
        e = F.normalize(out["embeddings"][0], p=2, dim=1)
        affs = torch.relu(torch.cat([(e * shifted(e, o)).sum(1, keepdim=True) for o in self.offsets], 1))
        if out["foreground"] is None:
            return affs
        return affs, torch.softmax(out["foreground"], dim=1)[:, 1:2]
