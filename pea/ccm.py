"""The cross-correlation module (CCM, docs/method.md section 2): the second view of a batch,
the network run on it, and its embeddings brought back into the first view's frame.

`CrossView` is the one owner of this: the trainer calls it and gets the outputs of both
views; `PEALoss` then correlates the first view's embedding with the second's. Two views are
offered (LOSS.ccm_view):
- ``official`` (`official_view`, the authors'): on the [0, 1] image, an intensity change, boxes
  filled with the foreground mean or with 0, then flips of every axis and a swap of the last
  two; sizes, counts and probabilities from the LOSS.ccm_* keys;
- ``project`` (`second_view`): intensity change per channel on the network input, a coarse
  grid of blanked blocks, and flips shared by the batch.
How it meets the network is stated too: both views in one forward pass or each in its own
(BatchNorm then sees each view alone), and the second view's embedding as a constant target
or not. `pea.settings.cross_view` builds it from the LOSS.ccm_* keys.
"""
from __future__ import annotations

import contextlib
import string
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from pea.augment import normalize_tensor
from pea.errors import PEAInputError

Output = Mapping[str, object]


def _rand(gen: torch.Generator | None, *shape: int) -> torch.Tensor:
    return torch.rand(shape, generator=gen)


def orient(x: torch.Tensor, rules: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """Flip and transpose each sample of a (B, C, *spatial) tensor by its rule, a row of
    `rules` (B, ndim + 1): a flip bit per spatial axis, then a swap of the last two axes.
    `inverse` undoes it (swap first, then flips)."""
    ndim = x.ndim - 2
    out = []
    for sample, rule in zip(x, rules.tolist()):
        dims = [d + 1 for d in range(ndim) if rule[d]]
        swap = bool(rule[ndim])
        if inverse and swap:
            sample = sample.transpose(-1, -2)
        if dims:
            sample = torch.flip(sample, dims)
        if not inverse and swap:
            sample = sample.transpose(-1, -2)
        out.append(sample)
    return torch.stack(out)


def second_view(x: torch.Tensor, labels: torch.Tensor, *, intensity: float = 0.2, mask_prob: float = 0.5,
                blank: str = "foreground", flip: bool = True,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The project's CCM view of a network input (B, C, *spatial): contrast and brightness change
    of up to +- `intensity` per channel, with chance `mask_prob` a random quarter of coarse
    blocks (1/8 of each size) blanked (of the ``foreground``, or ``anywhere``), random flips
    shared by the batch (`flip`). Returns the view and its rules (see `orient`)."""
    b, ndim = x.shape[0], x.ndim - 2
    dev = x.device

    def rand(*shape):
        return _rand(generator, *shape).to(dev)

    amount = intensity
    scale = 1 + amount * (2 * rand(b, x.shape[1], *([1] * ndim)) - 1)
    shift = amount * (2 * rand(b, x.shape[1], *([1] * ndim)) - 1)
    view = x * scale + shift
    if mask_prob > 0:
        # blank a random coarse grid of blocks (1/8 of each spatial size)
        coarse = [max(1, s // max(1, s // 8)) for s in x.shape[2:]]
        blocks = (rand(b, 1, *coarse) < 0.25).float()
        blocks *= (rand(b, 1, *([1] * ndim)) < mask_prob).float()
        blanked = F.interpolate(blocks, size=x.shape[2:], mode="nearest")
        if blank == "foreground":
            blanked = blanked * (labels > 0).unsqueeze(1).float()
        view = view * (1 - blanked)
    rules = torch.zeros(b, ndim + 1, dtype=torch.bool)
    if flip:
        rules[:, :ndim] = torch.tensor([float(_rand(generator, 1)) < 0.5 and x.shape[d + 2] > 1
                                        for d in range(ndim)])
    return orient(view, rules), rules


def _intensity(x: torch.Tensor, amount: float, prob: float, draw: str, gamma: float,
               gen: torch.Generator | None) -> torch.Tensor:
    """With chance `prob`: x (1 + c) + d, clipped to [0, 1], then x ** 2^g, with c, d uniform
    within +- `amount` and g within +- `gamma`, one draw for all channels, per ``image`` or per
    ``section`` (index of the first spatial axis)."""
    b, spatial = x.shape[0], x.shape[2:]
    ones = (1,) * (len(spatial) - 1)
    shape = (b, 1, spatial[0]) + ones if draw == "section" else (b, 1, 1) + ones
    u = (2 * _rand(gen, 3, *shape) - 1).to(x.device)
    on = (_rand(gen, b) < prob).to(x.device).view(b, 1, 1, *ones)
    out = (x * (1 + amount * u[0]) + amount * u[1]).clamp(0, 1) ** (2.0 ** (gamma * u[2]))
    return torch.where(on, out, x)


def _box_region(labels: torch.Tensor, sizes: torch.Tensor, blank: str,
                min_foreground: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample and axis, the first and last index where boxes may start and end: the
    foreground's bounding box (`blank` foreground) or the whole image; the whole image too
    without foreground, with fewer than `min_foreground` pixels or when the box does not fit."""
    spatial = labels.shape[1:]
    b, ndim = labels.shape[0], len(spatial)
    first = torch.zeros(b, ndim, dtype=torch.long)
    last = torch.tensor(spatial).repeat(b, 1) - 1
    if blank != "foreground":
        return first, last
    fg = (labels > 0).cpu()
    lo, hi = first.clone(), last.clone()
    for axis in range(ndim):
        seen = fg.movedim(axis + 1, 1).flatten(2).any(2)  # (B, size of this axis)
        lo[:, axis] = seen.float().argmax(1)
        hi[:, axis] = spatial[axis] - 1 - seen.flip(1).float().argmax(1)
    count = fg.flatten(1).sum(1)
    inside = (count > 0) & (count >= min_foreground) & ((hi - lo) > sizes).all(1)
    keep = inside.view(b, 1)
    return torch.where(keep, lo, first), torch.where(keep, hi, last)


def box_mask(labels: torch.Tensor, *, boxes: Sequence[int] = (0, 20), box_min: Sequence[int] = (0, 0),
             box_max: Sequence[int] = (20, 20), blank: str = "foreground", min_foreground: int = 0,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """The boxes of the official view, (B, *spatial) bool: per sample a count in `boxes`
    (inclusive) and one size per axis in [box_min, box_max] shared by its boxes (the last two
    axes share one draw), each box starting uniformly at [first, last - size] of the region
    `blank` names (the foreground's bounding box, or anywhere)."""
    gen = generator
    spatial = labels.shape[1:]
    b, ndim = labels.shape[0], len(spatial)
    low, high = (torch.tensor(list(v), dtype=torch.long) for v in (box_min, box_max))
    if len(low) != ndim or len(high) != ndim:
        raise PEAInputError(f"LOSS.ccm_box_min / ccm_box_max need {ndim} sizes (one per spatial axis), "
                            f"got {list(box_min)} and {list(box_max)}")
    n_min, n_max = (int(v) for v in boxes)
    counts = torch.randint(n_min, n_max + 1, (b,), generator=gen)
    u = _rand(gen, b, ndim)
    if ndim >= 2:
        u[:, -1] = u[:, -2]
    sizes = torch.minimum(low + (u * (high - low + 1)).long(), high)
    first, last = _box_region(labels, sizes, blank, min_foreground)
    span = (last - sizes - first + 1).clamp(min=1)
    starts = first[:, None] + (_rand(gen, b, n_max, ndim) * span[:, None]).long()
    used = torch.arange(n_max)[None] < counts[:, None]
    letters = string.ascii_lowercase[2:2 + ndim]
    factors = []
    for axis, n in enumerate(spatial):
        index = torch.arange(n)
        start = starts[..., axis, None]
        inside = (index >= start) & (index < start + sizes[:, None, axis, None]) & used[..., None]
        factors.append(inside.float())
    equation = ",".join(f"bk{c}" for c in letters) + f"->b{letters}"
    return torch.einsum(equation, *factors).to(labels.device) > 0


def official_view(image: torch.Tensor, labels: torch.Tensor, *, intensity: float = 0.2, intensity_prob: float = 1.0,
                  intensity_draw: str = "image", gamma: float = 0.0, boxes: Sequence[int] = (0, 20),
                  box_min: Sequence[int] = (0, 0), box_max: Sequence[int] = (20, 20), blank: str = "foreground",
                  fill: str = "mean", min_foreground: int = 0, flip: bool = True, transpose: bool = False,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' CCM view of a [0, 1] image (B, C, *spatial): intensity change (`_intensity`:
    `intensity`, `intensity_prob`, `intensity_draw`, `gamma`), boxes (`box_mask`) filled with each
    channel's foreground mean (`fill` mean; 0 without foreground) or with 0 (``zero``), then a
    random flip of every spatial axis (`flip`) and swap of the last two (`transpose`, square
    crops). Returns the view and its rules (see `orient`)."""
    b, ndim = image.shape[0], image.ndim - 2
    view = _intensity(image, intensity, intensity_prob, intensity_draw, gamma, generator)
    if int(boxes[1]) > 0:
        inside = box_mask(labels, boxes=boxes, box_min=box_min, box_max=box_max, blank=blank,
                          min_foreground=min_foreground, generator=generator).unsqueeze(1)
        value = torch.zeros_like(view[:, :, :1])
        if fill == "mean":
            fg = (labels > 0).unsqueeze(1).to(view.dtype)
            axes = tuple(range(2, view.ndim))
            value = ((view * fg).sum(axes, keepdim=True) / fg.sum(axes, keepdim=True).clamp(min=1))
        view = torch.where(inside, value, view)
    bits = _rand(generator, b, ndim + 1) < 0.5
    bits[:, :ndim] &= bool(flip)
    bits[:, ndim] &= bool(transpose) and image.shape[-1] == image.shape[-2]
    return orient(view, bits), bits


def _half(value, b: int, half: int):
    """Half of a batched output (a tensor, a list of tensors or None)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [v[half * b:(half + 1) * b] for v in value]
    return value[half * b:(half + 1) * b]


View = Callable[..., "tuple[torch.Tensor, torch.Tensor]"]


class CrossView:
    """Runs a batch and its CCM view through the network and returns the outputs of both, the
    second brought back into the first one's frame.

    view: `view(x, labels, generator=...) -> (view, rules)`, e.g. `second_view` or
        `official_view` with their keyword arguments bound (functools.partial);
    seed: the view of iteration i is drawn from a generator seeded with (seed, i), so a
        resumed run draws the same views;
    normalize: None when `view` works on the network input; else the input normalisation
        (`pea.augment.normalize`) undone before `view` and redone after (the official view
        works on the [0, 1] image);
    separate: each view in its own forward pass (BatchNorm then sees each alone), else both in
        one; detach: the second view's embedding is a constant (stop-gradient) target.
    """

    def __init__(self, view: View, seed: int, *, normalize: str | None = None, separate: bool = False,
                 detach: bool = False):
        self.make_view = view
        self.seed = int(seed)
        self.normalize = normalize
        self.separate = bool(separate)
        self.detach = bool(detach)

    def view(self, x: torch.Tensor, labels: torch.Tensor, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The second view of a network input and its rules (see `orient`)."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + iteration)
        if self.normalize is None:
            return self.make_view(x, labels, generator=gen)
        view, rules = self.make_view(normalize_tensor(x, self.normalize, inverse=True), labels, generator=gen)
        return normalize_tensor(view, self.normalize), rules

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor,
                 iteration: int) -> tuple[dict, dict]:
        view, rules = self.view(x, labels, iteration)
        if self.separate:
            out = dict(model(x))
            with torch.no_grad() if self.detach else contextlib.nullcontext():
                out2 = dict(model(view))
        else:
            both = model(torch.cat([x, view]))
            b = x.shape[0]
            out = {k: _half(v, b, 0) for k, v in both.items()}
            out2 = {k: _half(v, b, 1) for k, v in both.items()}
        back = [orient(e, rules, inverse=True) for e in out2["embeddings"]]
        out2["embeddings"] = [e.detach() for e in back] if self.detach else back
        return out, out2
