"""MALA 3D U-Net (Funke et al. 2018), a modest same-padded variant.

As MALA: two 3x3x3 convs + LeakyReLU(0.005) per level, no normalisation, three in-plane
max-pool downsamplings, upsampling by a depthwise transposed conv followed by a 1x1 conv,
skip concatenation. Changed to fit the pyramid: same padding (any Z >= 1, Y, X >= 16),
(1,2,2) pooling instead of (1,3,3), and widths grown x3 per level, filters =
[12, 36, 108, 324] (MALA grows x5 to 1500, ~20x more parameters). Its natural levels are
full, 1/2, 1/4 (decoder) and 1/8 (bottom); the 1/16 embedding is a 1x1 conv of the
(1,2,2)-max-pooled bottom features. Levels are (Z, Y >> k, X >> k).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pea.models.blocks import check_input, fit_inplane, foreground_head
from pea.models.registry import check_filters, register

FILTERS = (12, 36, 108, 324)
SLOPE = 0.005


class _Leaky(nn.LeakyReLU):
    def __init__(self) -> None:
        super().__init__(SLOPE, inplace=True)


def double_conv(cin: int, cout: int) -> nn.Sequential:
    """Two same-padded 3x3x3 convs, each followed by LeakyReLU(0.005)."""
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), _Leaky(), nn.Conv3d(cout, cout, 3, padding=1), _Leaky())


class MalaUp(nn.Module):
    """Depthwise (1,2,2) transposed conv, 1x1 conv to the skip's width, fit, concat, double conv."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose3d(cin, cin, (1, 2, 2), stride=(1, 2, 2), groups=cin, bias=False)
        self.reduce = nn.Conv3d(cin, cout, 1)
        self.conv = double_conv(2 * cout, cout)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        y = fit_inplane(self.reduce(self.up(x)), skip.shape[-2:])
        return self.conv(torch.cat([y, skip], dim=1))


class MalaUNet(nn.Module):
    """MALA-style 3D U-Net with the embedding pyramid and an optional foreground head."""

    spatial_dims = 3
    min_size = (1, 16, 16)

    def __init__(self, in_channels: int, emb_dim: int, filters: Sequence[int], fg_head: bool) -> None:
        super().__init__()
        f = list(filters)
        self.in_channels = in_channels
        self.down = nn.ModuleList(double_conv(a, b) for a, b in zip([in_channels] + f[:3], f))
        self.up = nn.ModuleList(MalaUp(f[i + 1], f[i]) for i in (2, 1, 0))
        self.heads = nn.ModuleList(nn.Conv3d(c, emb_dim, 1) for c in (*f, f[3]))
        self.foreground = foreground_head(f[0], 3, _Leaky, norm=False) if fg_head else None
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(m.weight, a=SLOPE, nonlinearity="leaky_relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> dict[str, list[Tensor] | Tensor | None]:
        check_input(x, self.in_channels, self.min_size)
        skips = []
        y = x
        for i, block in enumerate(self.down):
            y = block(y if i == 0 else F.max_pool3d(y, (1, 2, 2)))
            skips.append(y)
        features = [y, F.max_pool3d(y, (1, 2, 2))]
        for up, skip in zip(self.up, skips[2::-1]):
            y = up(y, skip)
            features.insert(0, y)
        embeddings = [head(feat) for head, feat in zip(self.heads, features)]
        foreground = self.foreground(y) if self.foreground is not None else None
        return {"embeddings": embeddings, "foreground": foreground}


@register("mala")
def build_mala(in_channels: int, emb_dim: int, filters: Sequence[int] | None, fg_head: bool) -> MalaUNet:
    """MALA 3D U-Net; `filters`: 4 widths at full, 1/2, 1/4, 1/8 in-plane resolution."""
    return MalaUNet(in_channels, emb_dim, check_filters(filters, FILTERS, "mala"), fg_head)
