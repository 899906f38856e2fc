"""Tiled 2D prediction that equals the whole image's (`pea predict --tile Y X`).

The whole-image path (`pea.inference.predict_image`) pads the image to DATA.padded_size (or
the next multiple of 16; DATA.pad_mode, split evenly) and runs the network once on the padded
image P. A CNN's output pixel depends on the input within its receptive-field radius R only,
and, where the network pools, on where its pooling grid lies. So the tiled path keeps P and
its border convention, and cuts P into tiles:

- tile cores of Y x X pixels (rounded up to a multiple of the network's total downsampling
  factor A: 16 for the project's networks), origins on multiples of A in P's coordinates,
  so every tile's pooling grid is the whole pass's;
- each core read with a halo H >= R + the longest offset (the affinity of p needs the
  embedding of p + offset too), rounded up to a multiple of A, and cut at P's border. Where a
  tile reaches P's border it sees the same border (the network's own zero padding) as the
  whole pass; everywhere else its core is at least H from its edge.

Each core then equals the whole pass's output there, up to float rounding (the tiles' halos
overlap; a core's pixels are taken from its own tile alone, the halos being where a tile is
not exact). R and A come from following one forward pass (`receptive_field`: convolutions,
pooling, upsampling and padding, summed along the deepest path, an upper bound), and
`tile_layout` checks them in float64 on two random strips, each tiled along one axis: a
network whose tiles differ from its whole pass (global pooling, or upsampling that is not
translation-equivariant, as align_corners=True) is refused. The pixels in P's padding that `pad_mode` adds are read
from the image through an index map, never materialised.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from pea.affinity import Offset, embedding_affinity
from pea.data.common import padded_shape
from pea.errors import PEAInputError
from pea.inference import run_model, to_input
from pea.windows import reflect_index

PROBE = 256  # side of the image the receptive field is followed on


def _arg(args: tuple, kwargs: dict, index: int, name: str, default=None):
    return args[index] if len(args) > index else kwargs.get(name, default)


def _first(value) -> int:
    return int(value[-1] if isinstance(value, (tuple, list)) else value)


class _Reach(TorchFunctionMode):
    """Follows a forward pass from the input `x`: for each tensor computed from it, how far
    beyond the input pixels each of its pixels covers its values may depend on the input
    (`radius`, in input pixels), and the coarsest pixel size met (`align`)."""

    def __init__(self, x: torch.Tensor):
        super().__init__()
        self.size, self.align = x.shape[-1], 1
        self.radius = {id(x): (0.0, x)}  # keeps each tensor alive: ids stay unique

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = [self.radius[id(t)][0] for t in _tensors((args, kwargs)) if id(t) in self.radius]
        if not inputs:
            return out
        radius = max(inputs) + self._growth(getattr(func, "__name__", ""), args, kwargs)
        for t in _tensors(out):
            self.radius[id(t)] = (radius, t)
            if t.dim() >= 3 and t.shape[-1]:
                self.align = max(self.align, 2 ** round(math.log2(max(1.0, self.size / t.shape[-1]))))
        return out

    def _growth(self, name: str, args: tuple, kwargs: dict) -> float:
        x = args[0] if args else None
        if not isinstance(x, torch.Tensor) or x.dim() < 3 or not x.shape[-1]:
            return 0.0
        pixel = self.size / x.shape[-1]  # input pixels per pixel of x
        if name in ("conv2d", "conv1d", "conv3d", "max_pool2d", "avg_pool2d", "max_pool2d_with_indices"):
            conv = name.startswith("conv")
            kernel = _arg(args, kwargs, 1, "weight").shape[-1] if conv else _first(_arg(args, kwargs, 1, "kernel_size"))
            stride = _first(_arg(args, kwargs, 3 if conv else 2, "stride") or (1 if conv else kernel))
            padding = _arg(args, kwargs, 4 if conv else 3, "padding", 0)
            dilation = _first(_arg(args, kwargs, 5 if conv else 4, "dilation", 1)) if name != "avg_pool2d" else 1
            extent = (kernel - 1) * dilation
            padding = {"same": extent // 2 + extent % 2, "valid": 0}.get(padding, padding)
            padding = _first(padding)
            return pixel * max(padding, extent + 1 - padding - stride, 0)
        if name.startswith("conv_transpose"):
            weight, stride = _arg(args, kwargs, 1, "weight"), _first(_arg(args, kwargs, 3, "stride", 1))
            extent = (weight.shape[-1] - 1) * _first(_arg(args, kwargs, 7, "dilation", 1))
            padding = _first(_arg(args, kwargs, 4, "padding", 0))
            return pixel / stride * max(extent - padding, padding) + pixel
        if name == "interpolate":
            return pixel
        if name == "pad":
            return pixel * max([abs(int(p)) for p in _arg(args, kwargs, 1, "pad")] or [0])
        return 0.0


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


@torch.no_grad()
def receptive_field(model: torch.nn.Module, in_channels: int, device: torch.device | str = "cpu") -> tuple[int, int]:
    """(R, A): an upper bound of the receptive-field radius of the network's full-resolution
    embedding, in pixels, and its total downsampling factor."""
    x = torch.zeros((1, in_channels, PROBE, PROBE), device=device)
    reach = _Reach(x)
    with reach:
        out = model(x)
    radius = reach.radius.get(id(out["embeddings"][0]), (None,))[0]
    if radius is None:
        raise PEAInputError("--tile: the network's embedding could not be followed back to its input")
    return int(math.ceil(radius)), int(reach.align)


@dataclass(frozen=True)
class TileLayout:
    """Tile cores are multiples of `align`; each is read with `halo` pixels around it."""

    halo: int
    align: int


def _round_up(n: int, multiple: int) -> int:
    return -(-int(n) // multiple) * multiple


def tile_layout(model: torch.nn.Module, offsets: Sequence[Offset], in_channels: int,
                device: torch.device | str = "cpu", check: bool = True) -> TileLayout:
    """The halo and alignment tiles need to equal the whole image (module docstring); with
    `check`, verified in float64 on random strips two tiles long (PEAInputError where tiles
    differ from the whole pass)."""
    radius, align = receptive_field(model, in_channels, device)
    reach = max(abs(int(v)) for o in offsets for v in o)
    layout = TileLayout(_round_up(radius + reach, align), align)
    if check:
        exact = copy.deepcopy(model).to(dtype=torch.float64)
        long, rng = 2 * (layout.halo + align), np.random.default_rng(0)
        for shape in ((long, 2 * align), (2 * align, long)):  # tiled along one axis, then the other
            image = rng.random(shape + (in_channels,))
            whole = _forward(exact, image, offsets, "none", torch.device(device), "off")[0]
            tiled = predict_image_tiled(exact, image, offsets, tile=(long // 2, long // 2), normalize="none",
                                        device=torch.device(device), layout=layout)[0]
            difference = float(np.abs(tiled - whole).max())
            if difference > 1e-6:  # the embeddings come back as float32
                raise PEAInputError(f"--tile: this network's tiles differ from its whole-image output by up to "
                                    f"{difference:.1e} even with a halo of {layout.halo} pixels (global operations, "
                                    f"or upsampling that is not translation-equivariant); predict whole images instead")
    return layout


@torch.no_grad()
def _forward(model, image: np.ndarray, offsets, normalize, device, amp) -> tuple[np.ndarray, np.ndarray | None]:
    """The network on one (H, W, C) image: affinities (C, H, W) and foreground probability."""
    x = to_input(image, normalize, device).to(next(model.parameters()).dtype)
    out = run_model(model, x, amp)
    affs = torch.relu(embedding_affinity(out["embeddings"][0].to(x.dtype), offsets))[0].cpu().numpy()
    fg = out.get("foreground")
    return affs, None if fg is None else torch.softmax(fg.to(x.dtype), dim=1)[0, 1].cpu().numpy()


def _read(image: np.ndarray, window: Sequence[tuple[int, int]], before: Sequence[int], mode: str) -> np.ndarray:
    """The padded image's `window` ((start, stop) per axis, padded coordinates) read from
    `image` through an index map: reflected, or zero outside (`mode` zero)."""
    index = [np.arange(a, b) - p for (a, b), p in zip(window, before)]
    if mode == "reflect":
        return image[np.ix_(*[reflect_index(i, n) for i, n in zip(index, image.shape)])]
    inside = [(i >= 0) & (i < n) for i, n in zip(index, image.shape)]
    data = image[np.ix_(*[np.clip(i, 0, n - 1) for i, n in zip(index, image.shape)])]
    return data * np.multiply.outer(*inside)[..., None]


@torch.no_grad()
def predict_image_tiled(model: torch.nn.Module, image: np.ndarray, offsets: Sequence[Offset], *,
                        tile: Sequence[int], layout: TileLayout, padded_size: Sequence[int] | None = None,
                        pad_mode: str = "reflect", normalize: str = "none",
                        device: torch.device = torch.device("cpu"), amp: str = "off"
                        ) -> tuple[np.ndarray, np.ndarray | None]:
    """Affinities (C, H, W) and foreground probability (H, W) or None of one image (H, W, C)
    in [0, 1], by tiles of `tile` pixels (rounded up to the layout's alignment) read with the
    layout's halo: those of `pea.inference.predict_image` with the same `padded_size` (None:
    the next multiple of 16) and `pad_mode`, up to float rounding."""
    shape = image.shape[:2]
    padded = padded_shape(shape, padded_size)
    before = [(m - n) // 2 for m, n in zip(padded, shape)]
    tile = [_round_up(t, layout.align) for t in tile]
    affs, fg = np.zeros((len(offsets),) + shape, dtype=np.float32), None
    origins = [range(b // layout.align * layout.align, b + n, t) for b, n, t in zip(before, shape, tile)]
    for origin in np.stack(np.meshgrid(*origins, indexing="ij"), -1).reshape(-1, 2):
        window = [(max(0, o - layout.halo), min(m, o + t + layout.halo)) for o, t, m in zip(origin, tile, padded)]
        core = [(max(o, b), min(o + t, b + n)) for o, t, b, n in zip(origin, tile, before, shape)]
        out_affs, out_fg = _forward(model, _read(image, window, before, pad_mode), offsets, normalize, device, amp)
        src = tuple(slice(a - w, z - w) for (a, z), (w, _) in zip(core, window))
        dst = tuple(slice(a - b, z - b) for (a, z), b in zip(core, before))
        affs[(slice(None),) + dst] = out_affs[(slice(None),) + src]
        if out_fg is not None:
            fg = np.zeros(shape, dtype=np.float32) if fg is None else fg
            fg[dst] = out_fg[src]
    return affs, fg
