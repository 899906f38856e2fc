"""Pieces shared by the networks: exact-size in-plane upsampling, the 2D residual block,
the 2D embedding-pyramid decoder, the foreground head and the input check.

Pyramid convention (every backbone): embeddings[k] has the input's spatial shape with each
in-plane axis floor-halved k times, i.e. (H >> k, W >> k) in 2D and (Z, Y >> k, X >> k) in 3D;
embeddings[0] has exactly the input's shape. In the max-pool encoders (resunet, superhuman,
mala) pixel i of level k covers input pixels [i * 2**k, (i + 1) * 2**k); ResNet's strided
convs are centred on input pixel 2**k * i instead and its pyramid is cropped to these shapes.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pea.errors import PEAInputError

def fit_inplane(x: Tensor, size: Sequence[int]) -> Tensor:
    """Crop or replicate-pad the last two axes of `x` at their end to `size`."""
    h, w = x.shape[-2:]
    dh, dw = int(size[0]) - h, int(size[1]) - w
    if dh > 0 or dw > 0:
        lead = x.shape[:-2]
        x = F.pad(x.reshape(lead[0], -1, h, w), (0, max(dw, 0), 0, max(dh, 0)), mode="replicate")
        x = x.reshape(*lead, *x.shape[-2:])
    return x[..., : size[0], : size[1]]


def upsample_to(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinearly double the last two (in-plane) axes, then fit them to `size`.

    With align_corners=False and a factor of exactly 2, output pixel j samples input
    coordinate j/2 - 1/4, which is the geometry of a floor-halving 2x2 max-pool; the odd
    extra row/column (size = 2n + 1) repeats the last one. Works on (N, C, H, W) and on
    (N, C, Z, H, W) (z untouched).
    """
    lead, (h, w) = x.shape[:-2], x.shape[-2:]
    y = F.interpolate(x.reshape(lead[0], -1, h, w), scale_factor=2.0, mode="bilinear", align_corners=False)
    return fit_inplane(y.reshape(*lead, 2 * h, 2 * w), size)


def crop_pyramid(embeddings: Sequence[Tensor], shape: Sequence[int]) -> list[Tensor]:
    """Crop level k of a full-resolution-first pyramid to the floor-halved in-plane `shape`."""
    h, w = shape[-2:]
    return [e[..., : h >> k, : w >> k] for k, e in enumerate(embeddings)]


def check_input(x: Tensor, in_channels: int, min_size: Sequence[int]) -> None:
    """Raise PEAInputError unless `x` is (N, in_channels, *spatial) with spatial >= min_size."""
    ndim = len(min_size)
    if x.dim() != ndim + 2 or x.shape[1] != in_channels or any(s < m for s, m in zip(x.shape[2:], min_size)):
        axes = "(N, C, H, W)" if ndim == 2 else "(N, C, Z, Y, X)"
        raise PEAInputError(
            f"network input: shape {tuple(x.shape)} is not {axes} with C={in_channels} "
            f"and spatial size >= {tuple(min_size)}"
        )


class ResBlock2d(nn.Module):
    """Residual block of the paper's ResUNet: relu(BN(conv(relu(BN(conv x)))) + BN(conv x)), 3x3 convs."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.proj = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn_proj = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.bn_proj(self.proj(x)), inplace=True)


def foreground_head(channels: int, ndim: int, act: type[nn.Module] = nn.ReLU, norm: bool = True) -> nn.Sequential:
    """1x1 conv (+BN) + activation + 1x1 conv to 2 logits (background, foreground)."""
    conv = nn.Conv2d if ndim == 2 else nn.Conv3d
    bn = nn.BatchNorm2d if ndim == 2 else nn.BatchNorm3d
    layers: list[nn.Module] = [conv(channels, channels, 1)]
    if norm:
        layers.append(bn(channels))
    layers += [act(), conv(channels, 2, 1)]
    return nn.Sequential(*layers)


class PyramidDecoder2d(nn.Module):
    """The ResUNet decoder: bilinear upsampling, residual blocks, skip concatenation, and a
    1x1 conv emitting an embedding at every scale.

    Inputs: `bottom` at 1/16 (`bottom_channels`) and `skips` at 1/2, 1/4, 1/8
    (`skip_channels`). `widths` are the block widths at full, 1/2, 1/4, 1/8 resolution.
    Level 1/16 is a 1x1 conv of `bottom`; level 1/8 is block(up(bottom)); every finer level
    is block(up(cat(previous, skip))). The foreground head reads the full-resolution features.
    """

    def __init__(
        self,
        bottom_channels: int,
        skip_channels: Sequence[int],
        widths: Sequence[int],
        emb_dim: int,
        fg_head: bool,
    ) -> None:
        super().__init__()
        w0, w1, w2, w3 = widths
        s1, s2, s3 = skip_channels
        self.blocks = nn.ModuleList(
            [ResBlock2d(bottom_channels, w3), ResBlock2d(w3 + s3, w2), ResBlock2d(w2 + s2, w1), ResBlock2d(w1 + s1, w0)]
        )
        self.heads = nn.ModuleList(nn.Conv2d(c, emb_dim, 1) for c in (bottom_channels, w3, w2, w1, w0))
        self.foreground = foreground_head(w0, 2) if fg_head else None

    def forward(
        self, bottom: Tensor, skips: Sequence[Tensor], size: Sequence[int]
    ) -> tuple[list[Tensor], Tensor | None]:
        """Embeddings full resolution first (level k at the encoder's shape), foreground logits or None."""
        sizes = [s.shape[-2:] for s in skips[::-1]] + [tuple(size)]
        embeddings = [self.heads[0](bottom)]
        y = bottom
        for i, (block, head) in enumerate(zip(self.blocks, self.heads[1:])):
            y = block(upsample_to(y, sizes[i]))
            embeddings.append(head(y))
            if i < 3:
                y = torch.cat([y, skips[2 - i]], dim=1)
        foreground = self.foreground(y) if self.foreground is not None else None
        return embeddings[::-1], foreground
