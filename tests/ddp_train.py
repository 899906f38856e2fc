"""Run by tests/test_distributed.py under torchrun: train a network without batch statistics
(so that its gradients do not depend on how the batch is split) on a tiny CVPPP look-alike."""
import sys

import torch
import torch.nn.functional as F
from torch import nn

from pea.config import make_config
from pea.models import register
from pea.settings import trainer as build_trainer


class PixelNet(nn.Module):
    """Per-pixel embeddings, average-pooled for the pyramid levels: no BatchNorm."""

    spatial_dims = 2

    def __init__(self, in_channels: int, emb_dim: int, filters, fg_head: bool) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, emb_dim, 1))

    def forward(self, x):
        e = self.net(x)
        return {"embeddings": [e] + [F.avg_pool2d(e, 2 ** k) for k in range(1, 5)], "foreground": None}


register("pixelnet")(lambda in_channels, emb_dim, filters, fg_head: PixelNet(in_channels, emb_dim, filters, fg_head))

if __name__ == "__main__":
    data, run = sys.argv[1], sys.argv[2]
    cfg = make_config({
        "NAME": "ddp",
        "DATA": {"dataset": "cvppp", "data_dir": data, "padded_size": [80, 80], "crop_size": [64, 64],
                 "shifts": [1, 3, 5, 9, 27], "normalize": "imagenet", "num_workers": 0},
        "MODEL": {"backbone": "pixelnet", "emb_dim": 6},
        "LOSS": {"ccm": False},
        "TRAIN": {"iterations": 3, "batch_size": 4, "lr": 0.01, "valid_every": 1000, "save_every": 1000,
                  "select_metric": "sbd", "device": "cpu", "model_dir": run},
        "TEST": {"strides": [5, 5], "mask": "gt"},
    })
    torch.set_num_threads(1)
    build_trainer(cfg, run).run()
