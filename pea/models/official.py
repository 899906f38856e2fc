"""The authors' networks in their released layout, so their checkpoints load unchanged.

`resunet_official` is the paper's 2D ResUNet (`ResidualUNet2D_deep`: CVPPP, BBBC039V1) and
`superhuman_official` its 3D superhuman U-Net (`UNet_PNI_embedding_deep` with the AC3/AC4
settings: bilinear upsampling, summed skips, zero padding, ELU). Module names, parameter
shapes and the forward pass are those of the authors' code: convolutions with biases in the
2D blocks, 2x upsampling with align_corners=True, BatchNorm momentum 0.001 in 3D, the 3D
decoder upsampling before its 1x1 conv. Where the released code only runs for in-plane sizes
divisible by 16, these nets agree with it exactly; other sizes, where it fails, are served
by replicate-padding each upsampled map at its end to the skip's size, and every pyramid
level has the project's shape (`pea.models.blocks`).

`official_model_config(state_dict)` recognises such a state dict by its key names and reads
the backbone and every width from the tensors' shapes.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pea.errors import PEAInputError
from pea.models.blocks import check_input, fit_inplane, foreground_head
from pea.models.registry import check_filters, register

RESUNET_FILTERS = (16, 32, 64, 128, 256)
SUPERHUMAN_FILTERS = (28, 36, 48, 64, 80)
BN_MOMENTUM_3D = 0.001
POOL_3D = (1, 2, 2)


def upsample2x(x: Tensor) -> Tensor:
    """Bilinear 2x upsampling of (N, C, H, W) with align_corners=True, as the authors' 2D Up."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class Slot(nn.Module):
    """Holds one module under the attribute `name`, reproducing a key prefix such as
    `down1.block.` or `outconv1.conv.` of the authors' wrappers."""

    def __init__(self, name: str, module: nn.Module) -> None:
        super().__init__()
        self.slot = name
        self.add_module(name, module)

    def forward(self, x: Tensor) -> Tensor:
        return self._modules[self.slot](x)


# ------------------------------------------------------------------------------- 2D ResUNet


class OfficialResBlock2d(nn.Module):
    """relu(BN(conv(relu(BN(conv x)))) + BN(conv x)): 3x3 convs with biases, keys
    `conv.{0,1,3,4}` and `project.{0,1}`."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout),
        )
        self.project = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv(x) + self.project(x))


class OfficialResUNet(nn.Module):
    """The authors' ResidualUNet2D_deep; `filters` are their `nfeatures` (full ... 1/16).

    Encoder: inconv (full resolution), down1..down4 (block, then 2x2 max-pool). Decoder:
    up1_emb..up4_emb (upsample, then block), concatenated with the 1/8, 1/4, 1/2 encoder
    maps. Embeddings: outconv1 on the 1/16 bottom, outconv2..4 on the up1..up3 outputs,
    outconv_emb on the full-resolution up4 output, which the foreground head also reads.
    """

    spatial_dims = 2
    min_size = (16, 16)

    def __init__(self, in_channels: int, emb_dim: int, filters: Sequence[int], fg_head: bool) -> None:
        super().__init__()
        f = list(filters)
        self.in_channels = in_channels
        self.inconv = Slot("conv", OfficialResBlock2d(in_channels, f[0]))
        for i in range(1, 5):
            self.add_module(f"down{i}", Slot("block", OfficialResBlock2d(f[i - 1], f[i])))
        ups = [(f[4], f[4]), (f[4] + f[3], f[3]), (f[3] + f[2], f[2]), (f[2] + f[1], f[1])]
        for i, (cin, cout) in enumerate(ups, start=1):
            self.add_module(f"up{i}_emb", Slot("block", OfficialResBlock2d(cin, cout)))
        for i, c in enumerate((f[4], f[4], f[3], f[2]), start=1):
            self.add_module(f"outconv{i}", Slot("conv", nn.Conv2d(c, emb_dim, 1)))
        self.outconv_emb = Slot("conv", nn.Conv2d(f[1], emb_dim, 1))
        self.binary_seg = foreground_head(f[1], 2) if fg_head else None

    def encode(self, x: Tensor) -> list[Tensor]:
        """The encoder maps at 1/2, 1/4, 1/8, 1/16."""
        y = self.inconv(x)
        maps = []
        for i in range(1, 5):
            y = F.max_pool2d(getattr(self, f"down{i}")(y), 2)
            maps.append(y)
        return maps

    def forward(self, x: Tensor) -> dict[str, list[Tensor] | Tensor | None]:
        check_input(x, self.in_channels, self.min_size)
        *skips, y = self.encode(x)
        coarse_first = [self.outconv1(y)]
        targets = skips[::-1] + [x]  # decoder level i takes the shape of targets[i - 1]
        heads = [self.outconv2, self.outconv3, self.outconv4, self.outconv_emb]
        for i, (target, head) in enumerate(zip(targets, heads), start=1):
            y = fit_inplane(getattr(self, f"up{i}_emb")(upsample2x(y)), target.shape[-2:])
            coarse_first.append(head(y))
            if i < 4:
                y = torch.cat([y, target], dim=1)
        foreground = self.binary_seg(y) if self.binary_seg is not None else None
        return {"embeddings": coarse_first[::-1], "foreground": foreground}


# --------------------------------------------------------------------------- 3D superhuman


def _bn3d(channels: int) -> nn.BatchNorm3d:
    return nn.BatchNorm3d(channels, momentum=BN_MOMENTUM_3D)


def _conv3d(cin: int, cout: int, kernel: tuple[int, int, int], bias: bool) -> nn.Conv3d:
    """Zero-padded ('same') 3D conv."""
    return nn.Conv3d(cin, cout, kernel, padding=tuple(k // 2 for k in kernel), bias=bias)


class PNIBlock(nn.Module):
    """The authors' resBlock_pni: r = elu(BN(conv_(1,3,3) x)), out = elu(BN(r + conv(elu(BN(conv r)))))
    with bias-free (3,3,3) inner convs; keys `block1.{0,1}`, `block2.{0,1,3}`, `block3`."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.block1 = nn.Sequential(_conv3d(cin, cout, (1, 3, 3), False), _bn3d(cout), nn.ELU(inplace=True))
        self.block2 = nn.Sequential(
            _conv3d(cout, cout, (3, 3, 3), False), _bn3d(cout), nn.ELU(inplace=True),
            _conv3d(cout, cout, (3, 3, 3), False),
        )
        self.block3 = _bn3d(cout)

    def forward(self, x: Tensor) -> Tensor:
        r = self.block1(x)
        return F.elu(self.block3(r + self.block2(r)), inplace=True)


class OfficialSuperhuman(nn.Module):
    """The authors' UNet_PNI_embedding_deep (bilinear, add); `filters`: full ... 1/16.

    embed_in ((1,5,5) conv + ELU), conv0..conv3 (blocks, (1,2,2) max-pool between), center;
    decoder level i: up{i} (upsample, 1x1 conv), cat{i} (BN + ELU of the sum with the skip),
    conv{4+i}; embed_out ((1,5,5) conv + ELU). Embeddings: out_put on embed_out (full),
    out_put4..out_put1 on conv6, conv5, conv4, center (1/2 ... 1/16). No foreground head.
    """

    spatial_dims = 3
    min_size = (1, 16, 16)

    def __init__(self, in_channels: int, emb_dim: int, filters: Sequence[int]) -> None:
        super().__init__()
        f = list(filters)
        self.in_channels = in_channels
        self.embed_in = nn.Sequential(_conv3d(in_channels, f[0], (1, 5, 5), True), nn.ELU(inplace=True))
        for i, (cin, cout) in enumerate(zip(f[:1] + f[:3], f[:4])):
            self.add_module(f"conv{i}", PNIBlock(cin, cout))
        self.center = PNIBlock(f[3], f[4])
        for i, level in enumerate((3, 2, 1, 0)):
            up = nn.Upsample(scale_factor=POOL_3D, mode="trilinear", align_corners=True)
            self.add_module(f"up{i}", nn.Sequential(up, nn.Conv3d(f[level + 1], f[level], 1)))
            self.add_module(f"cat{i}", nn.Sequential(_bn3d(f[level]), nn.ELU(inplace=True)))
            self.add_module(f"conv{4 + i}", PNIBlock(f[level], f[level]))
        self.embed_out = nn.Sequential(_conv3d(f[0], f[0], (1, 5, 5), True), nn.ELU(inplace=True))
        for i, c in enumerate((f[0], f[4], f[3], f[2], f[1])):
            self.add_module(f"out_put{i or ''}", nn.Sequential(nn.Conv3d(c, emb_dim, 1)))
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> dict[str, list[Tensor] | Tensor | None]:
        check_input(x, self.in_channels, self.min_size)
        y = self.embed_in(x)
        skips = []
        for i in range(4):
            y = getattr(self, f"conv{i}")(y if i == 0 else F.max_pool3d(y, POOL_3D))
            skips.append(y)
        y = self.center(F.max_pool3d(y, POOL_3D))
        coarse_first = [self.out_put1(y)]
        for i, skip in enumerate(skips[::-1]):
            up = fit_inplane(getattr(self, f"up{i}")(y), skip.shape[-2:])
            y = getattr(self, f"conv{4 + i}")(getattr(self, f"cat{i}")(up + skip))
            if i < 3:
                coarse_first.append(getattr(self, f"out_put{i + 2}")(y))
        coarse_first.append(self.out_put(self.embed_out(y)))
        return {"embeddings": coarse_first[::-1], "foreground": None}


@register("resunet_official")
def build_resunet_official(
    in_channels: int, emb_dim: int, filters: Sequence[int] | None, fg_head: bool
) -> OfficialResUNet:
    """The authors' 2D ResUNet; `filters`: their nfeatures, 5 widths (full ... 1/16)."""
    return OfficialResUNet(in_channels, emb_dim, check_filters(filters, RESUNET_FILTERS, "resunet_official"), fg_head)


@register("superhuman_official")
def build_superhuman_official(
    in_channels: int, emb_dim: int, filters: Sequence[int] | None, fg_head: bool
) -> OfficialSuperhuman:
    """The authors' 3D superhuman U-Net; `filters`: 5 widths (full ... 1/16); no foreground head."""
    if fg_head:
        raise PEAInputError("model config key 'fg_head': backbone 'superhuman_official' has no foreground head")
    return OfficialSuperhuman(in_channels, emb_dim, check_filters(filters, SUPERHUMAN_FILTERS, "superhuman_official"))


# ------------------------------------------------------------------ reading official weights


def _width(state: Mapping[str, Tensor], key: str, axis: int = 0) -> int:
    """Size of `axis` of the tensor `key`; PEAInputError when the key is missing."""
    if key not in state or not isinstance(state[key], Tensor):
        raise PEAInputError(f"official checkpoint: tensor {key!r} is missing")
    return int(state[key].shape[axis])


def _resunet_config(state: Mapping[str, Tensor]) -> dict[str, Any]:
    first = "inconv.conv.conv.0.weight"
    filters = [_width(state, first)] + [_width(state, f"down{i}.block.conv.0.weight") for i in range(1, 5)]
    fg_head = "binary_seg.3.weight" in state
    if fg_head and _width(state, "binary_seg.3.weight") != 2:
        raise PEAInputError("official checkpoint: 'binary_seg.3.weight' must have 2 outputs (background, foreground)")
    return {"backbone": "resunet_official", "in_channels": _width(state, first, 1),
            "emb_dim": _width(state, "outconv_emb.conv.weight"), "filters": filters, "fg_head": fg_head}


def _superhuman_config(state: Mapping[str, Tensor]) -> dict[str, Any]:
    filters = [_width(state, f"conv{i}.block1.0.weight") for i in range(4)] + [_width(state, "center.block1.0.weight")]
    return {"backbone": "superhuman_official", "in_channels": _width(state, "embed_in.0.weight", 1),
            "emb_dim": _width(state, "out_put.0.weight"), "filters": filters, "fg_head": False}


def strip_module_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    """The state dict without the `module.` prefix that nn.DataParallel adds to every key."""
    prefix = "module."
    if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


def official_model_config(state: Mapping[str, Any]) -> dict[str, Any] | None:
    """The MODEL config of the official network whose weights `state` holds, or None when
    its key names are not the authors' (`inconv.conv.conv.0.weight` for the 2D ResUNet,
    `embed_in.0.weight` with `center.block1.0.weight` for the 3D superhuman). Every width
    comes from the tensors' shapes; the foreground head is there when `binary_seg` is."""
    state = strip_module_prefix(state)
    if "inconv.conv.conv.0.weight" in state:
        return _resunet_config(state)
    if "embed_in.0.weight" in state and "center.block1.0.weight" in state:
        return _superhuman_config(state)
    return None
