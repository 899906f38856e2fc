"""The cross-correlation module (CCM, docs/method.md section 2): the second view of a batch,
the network run on it, and its embeddings brought back into the first view's frame.

`CrossView` is the one owner of this: the trainer calls it and gets the outputs of both
views; `PEALoss` then correlates the first view's embedding with the second's.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

Output = Mapping[str, object]


def second_view(x: torch.Tensor, labels: torch.Tensor, loss_cfg: Mapping,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[int]]:
    """The CCM view of a batch (B, C, *spatial): intensity change, random blanking of blocks
    (of the foreground, or anywhere: LOSS.ccm_blank), random flip. Returns the view and the
    flipped dims (to undo)."""
    b, ndim = x.shape[0], x.ndim - 2
    dev = x.device

    def rand(*shape):
        return torch.rand(shape, generator=generator).to(dev)

    amount = loss_cfg["ccm_intensity"]
    scale = 1 + amount * (2 * rand(b, x.shape[1], *([1] * ndim)) - 1)
    shift = amount * (2 * rand(b, x.shape[1], *([1] * ndim)) - 1)
    view = x * scale + shift
    if loss_cfg["ccm_mask_prob"] > 0:
        # blank a random coarse grid of blocks (1/8 of each spatial size)
        coarse = [max(1, s // max(1, s // 8)) for s in x.shape[2:]]
        blocks = (rand(b, 1, *coarse) < 0.25).float()
        blocks *= (rand(b, 1, *([1] * ndim)) < loss_cfg["ccm_mask_prob"]).float()
        blank = F.interpolate(blocks, size=x.shape[2:], mode="nearest")
        if loss_cfg["ccm_blank"] == "foreground":
            blank = blank * (labels > 0).unsqueeze(1).float()
        view = view * (1 - blank)
    dims: list[int] = []
    if loss_cfg["ccm_flip"]:
        dims = [d + 2 for d in range(ndim) if float(rand(1)) < 0.5 and x.shape[d + 2] > 1]
        if dims:
            view = torch.flip(view, dims)
    return view, dims


def undo_flip(tensor: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """Flip back the dims flipped by `second_view`."""
    return torch.flip(tensor, list(dims)) if dims else tensor


def _half(value, b: int, half: int):
    """Half of a batched output (a tensor, a list of tensors or None)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [v[half * b:(half + 1) * b] for v in value]
    return value[half * b:(half + 1) * b]


class CrossView:
    """Runs a batch and its CCM view through the network in one forward pass and returns the
    outputs of both, the second with its flips undone. The view of iteration i is drawn from
    a generator seeded with (seed, i), so a resumed run draws the same views."""

    def __init__(self, loss_cfg: Mapping, seed: int):
        self.cfg = loss_cfg
        self.seed = int(seed)

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor,
                 iteration: int) -> tuple[dict, dict]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + iteration)
        view, dims = second_view(x, labels, self.cfg, gen)
        both = model(torch.cat([x, view]))
        b = x.shape[0]
        out = {k: _half(v, b, 0) for k, v in both.items()}
        out2 = {k: _half(v, b, 1) for k, v in both.items()}
        out2["embeddings"] = [undo_flip(e, dims) for e in out2["embeddings"]]
        return out, out2
