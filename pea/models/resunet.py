"""ResUNet 2D, the paper's best CVPPP network (4.71M parameters with the default filters).

Encoder: a residual block at full resolution, then four (residual block, 2x2 max-pool)
stages giving 1/2 ... 1/16 (filters [16, 32, 64, 128, 256]); as in the paper's code each
stage's block runs before its pool and the full-resolution block feeds only the encoder.
Decoder: `PyramidDecoder2d` with widths filters[1:] (concatenating the 1/2, 1/4, 1/8
encoder outputs). Any H, W >= 16 works; levels are (H >> k, W >> k).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from pea.models.blocks import PyramidDecoder2d, ResBlock2d, check_input
from pea.models.registry import check_filters, register

FILTERS = (16, 32, 64, 128, 256)


class ResUNetEncoder(nn.Module):
    """Residual encoder; returns the features at 1/2, 1/4, 1/8, 1/16."""

    def __init__(self, in_channels: int, filters: Sequence[int]) -> None:
        super().__init__()
        chans = [in_channels, *filters]
        self.blocks = nn.ModuleList(ResBlock2d(a, b) for a, b in zip(chans[:-1], chans[1:]))

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.blocks[0](x)
        features = []
        for block in self.blocks[1:]:
            x = F.max_pool2d(block(x), 2)
            features.append(x)
        return features


class ResUNet(nn.Module):
    """ResUNet with the embedding pyramid and an optional foreground head."""

    spatial_dims = 2
    min_size = (16, 16)

    def __init__(self, in_channels: int, emb_dim: int, filters: Sequence[int], fg_head: bool) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.encoder = ResUNetEncoder(in_channels, filters)
        self.decoder = PyramidDecoder2d(filters[4], filters[1:4], filters[1:5], emb_dim, fg_head)

    def forward(self, x: Tensor) -> dict[str, list[Tensor] | Tensor | None]:
        check_input(x, self.in_channels, self.min_size)
        f = self.encoder(x)
        embeddings, foreground = self.decoder(f[3], f[:3], x.shape[-2:])
        return {"embeddings": embeddings, "foreground": foreground}


@register("resunet")
def build_resunet(in_channels: int, emb_dim: int, filters: Sequence[int] | None, fg_head: bool) -> ResUNet:
    """ResUNet; `filters`: 5 widths at full, 1/2, 1/4, 1/8, 1/16 resolution."""
    return ResUNet(in_channels, emb_dim, check_filters(filters, FILTERS, "resunet"), fg_head)
