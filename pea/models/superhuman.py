"""Residual symmetric U-Net of Lee et al. 2017 ("superhuman") for anisotropic EM volumes.

(1,5,5) conv in, then residual blocks (a (1,3,3) conv, two (3,3,3) convs, BN, ELU) at
widths filters = [28, 36, 48, 64, 80] for full, 1/2, 1/4, 1/8, 1/16 in-plane resolution
((1,2,2) max-pool; z is never downsampled). Decoder: 1x1 conv to the skip's width,
bilinear in-plane upsampling to the skip's exact size (the conv is applied first, which
is equivalent and 4x cheaper), summed skip, BN + ELU, residual block; a (1,5,5) conv out.
Embeddings (1x1 convs) read the (1,5,5) output, the three finer decoder blocks and the
centre block, as in the paper's code. BN momentum is PyTorch's 0.1 (the paper's code used
0.001). Input (N, C, Z, Y, X) with Z >= 1 and Y, X >= 16; levels are (Z, Y >> k, X >> k).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from pea.models.blocks import check_input, foreground_head, upsample_to
from pea.models.registry import check_filters, register

FILTERS = (28, 36, 48, 64, 80)


class ResBlock3d(nn.Module):
    """elu(BN(r + conv(elu(BN(conv r))))), r = elu(BN(conv_(1,3,3) x)); inner convs (3,3,3)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv3d(cin, cout, (1, 3, 3), padding=(0, 1, 1), bias=False)
        self.bn_in = nn.BatchNorm3d(cout)
        self.conv1 = nn.Conv3d(cout, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(cout)
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=1, bias=False)
        self.bn_out = nn.BatchNorm3d(cout)

    def forward(self, x: Tensor) -> Tensor:
        r = F.elu(self.bn_in(self.conv_in(x)), inplace=True)
        y = self.conv2(F.elu(self.bn1(self.conv1(r)), inplace=True))
        return F.elu(self.bn_out(r + y), inplace=True)


class SuperhumanUNet(nn.Module):
    """Residual symmetric U-Net with the embedding pyramid and an optional foreground head."""

    spatial_dims = 3
    min_size = (1, 16, 16)

    def __init__(self, in_channels: int, emb_dim: int, filters: Sequence[int], fg_head: bool) -> None:
        super().__init__()
        f = list(filters)
        self.in_channels = in_channels
        self.embed_in = nn.Conv3d(in_channels, f[0], (1, 5, 5), padding=(0, 2, 2))
        self.down = nn.ModuleList(ResBlock3d(a, b) for a, b in zip(f[:1] + f[:3], f[:4]))
        self.center = ResBlock3d(f[3], f[4])
        self.up = nn.ModuleList(nn.Conv3d(f[i + 1], f[i], 1) for i in (3, 2, 1, 0))
        self.merge_bn = nn.ModuleList(nn.BatchNorm3d(f[i]) for i in (3, 2, 1, 0))
        self.dec = nn.ModuleList(ResBlock3d(f[i], f[i]) for i in (3, 2, 1, 0))
        self.embed_out = nn.Conv3d(f[0], f[0], (1, 5, 5), padding=(0, 2, 2))
        self.heads = nn.ModuleList(nn.Conv3d(c, emb_dim, 1) for c in f)
        self.foreground = foreground_head(f[0], 3, nn.ELU) if fg_head else None
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> dict[str, list[Tensor] | Tensor | None]:
        check_input(x, self.in_channels, self.min_size)
        y = F.elu(self.embed_in(x), inplace=True)
        skips = []
        for i, block in enumerate(self.down):
            y = block(y if i == 0 else F.max_pool3d(y, (1, 2, 2)))
            skips.append(y)
        y = self.center(F.max_pool3d(y, (1, 2, 2)))
        coarse = [y]
        for up, bn, dec, skip in zip(self.up, self.merge_bn, self.dec, skips[::-1]):
            y = dec(F.elu(bn(upsample_to(up(y), skip.shape[-2:]) + skip), inplace=True))
            coarse.append(y)
        y = F.elu(self.embed_out(y), inplace=True)
        features = [y, coarse[3], coarse[2], coarse[1], coarse[0]]
        embeddings = [head(feat) for head, feat in zip(self.heads, features)]
        foreground = self.foreground(y) if self.foreground is not None else None
        return {"embeddings": embeddings, "foreground": foreground}


@register("superhuman")
def build_superhuman(in_channels: int, emb_dim: int, filters: Sequence[int] | None, fg_head: bool) -> SuperhumanUNet:
    """Superhuman 3D U-Net; `filters`: 5 widths at full, 1/2, 1/4, 1/8, 1/16 in-plane resolution."""
    return SuperhumanUNet(in_channels, emb_dim, check_filters(filters, FILTERS, "superhuman"), fg_head)
