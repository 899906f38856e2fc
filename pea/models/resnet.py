"""ResNet-50 / ResNet-101 encoders with the ResUNet embedding-pyramid decoder.

The encoder is torchvision's ResNet (v1.5: stride on the 3x3 conv) up to layer3, i.e.
output stride 16, which is the 1/16 level of the pyramid; module names follow torchvision
(conv1, bn1, layer1.0.conv1, layer1.0.downsample.0, ...) so `load_pretrained` can copy an
ImageNet state dict into `model.encoder` (layer4 and fc have no counterpart here).
Skips: the stem (1/2, 64 ch), layer1 (1/4, 256), layer2 (1/8, 512); bottom: layer3 (1/16,
1024). The paper's ResNet decoder is not public: its widths are `filters` = [full, 1/2,
1/4, 1/8] = [32, 64, 128, 216] by default, chosen so the totals match the paper's counts
(15.36M vs 15.3M for ResNet-50, 34.35M vs 34.3M for ResNet-101).
Strided convs halve with ceil; the decoder fits every upsampled map to its skip's exact
size and the pyramid is cropped to (H >> k, W >> k) like the other backbones. Any H, W >= 16.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from pea.models.blocks import PyramidDecoder2d, check_input, crop_pyramid
from pea.models.registry import check_filters, register

DECODER_FILTERS = (32, 64, 128, 216)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck: 1x1 -> 3x3 (stride) -> 1x1 (x4), projection shortcut when needed."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + identity)


class ResNetEncoder(nn.Module):
    """torchvision ResNet stem + layer1..layer3; returns features at 1/2, 1/4, 1/8, 1/16."""

    def __init__(self, in_channels: int, blocks: Sequence[int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = 64
        for i, (n, width) in enumerate(zip(blocks, (64, 128, 256))):
            stride = 1 if i == 0 else 2
            layer = []
            for b in range(n):
                layer.append(Bottleneck(cin, width, stride if b == 0 else 1))
                cin = width * Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> list[Tensor]:
        stem = self.relu(self.bn1(self.conv1(x)))
        c1 = self.layer1(self.maxpool(stem))
        c2 = self.layer2(c1)
        return [stem, c1, c2, self.layer3(c2)]


class ResNetUNet(nn.Module):
    """ResNet encoder + embedding-pyramid decoder + optional foreground head."""

    spatial_dims = 2
    min_size = (16, 16)

    def __init__(
        self, in_channels: int, blocks: Sequence[int], emb_dim: int, widths: Sequence[int], fg_head: bool
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.encoder = ResNetEncoder(in_channels, blocks)
        self.decoder = PyramidDecoder2d(1024, (64, 256, 512), widths, emb_dim, fg_head)

    def forward(self, x: Tensor) -> dict[str, list[Tensor] | Tensor | None]:
        check_input(x, self.in_channels, self.min_size)
        f = self.encoder(x)
        embeddings, foreground = self.decoder(f[3], f[:3], x.shape[-2:])
        return {"embeddings": crop_pyramid(embeddings, x.shape), "foreground": foreground}


@register("resnet50")
def build_resnet50(in_channels: int, emb_dim: int, filters: Sequence[int] | None, fg_head: bool) -> ResNetUNet:
    """ResNet-50 encoder (3, 4, 6 bottlenecks); `filters`: 4 decoder widths, full to 1/8."""
    return ResNetUNet(in_channels, (3, 4, 6), emb_dim, check_filters(filters, DECODER_FILTERS, "resnet50"), fg_head)


@register("resnet101")
def build_resnet101(in_channels: int, emb_dim: int, filters: Sequence[int] | None, fg_head: bool) -> ResNetUNet:
    """ResNet-101 encoder (3, 4, 23 bottlenecks); `filters`: 4 decoder widths, full to 1/8."""
    return ResNetUNet(in_channels, (3, 4, 23), emb_dim, check_filters(filters, DECODER_FILTERS, "resnet101"), fg_head)
