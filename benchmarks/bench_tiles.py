"""Tiled 2D prediction (`pea predict --tile`, `pea.tiles`) against the whole image: the largest
affinity difference (the border included) and the seconds, per tile size, for a random-weight
ResUNet (the project's, --filters) on a random image; on CUDA with TF32 convolutions on (the
PyTorch default for cuDNN) and off.
Example: python benchmarks/bench_tiles.py --size 1024 1024 --tiles 256 512 --device cuda
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def _timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> None:
    from pea.affinity import offsets_from_shifts
    from pea.inference import predict_image
    from pea.models import build_model
    from pea.tiles import predict_image_tiled, tile_layout

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, nargs=2, default=[1024, 1024])
    p.add_argument("--tiles", type=int, nargs="+", default=[256, 512])
    p.add_argument("--filters", type=int, nargs=5, default=[16, 32, 64, 128, 256])
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    offsets = offsets_from_shifts([1, 3, 9, 27, 81])
    torch.manual_seed(0)
    model = build_model({"backbone": "resunet", "in_channels": 3, "filters": args.filters, "fg_head": True,
                         "emb_dim": 16}).eval().to(device)
    (layout, seconds) = _timed(lambda: tile_layout(model, offsets, 3, device), device)
    image = np.random.default_rng(0).random(tuple(args.size) + (3,)).astype(np.float32)
    data = {"padded_size": None, "pad_mode": "reflect", "normalize": "unit"}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device {name}, torch {torch.__version__}; ResUNet filters {args.filters}, image {args.size[0]}x"
          f"{args.size[1]}, 10 offsets up to 81; halo {layout.halo}, alignment {layout.align} "
          f"(found and checked in {seconds:.1f} s)")
    print(f"{'tf32':>5} {'tile':>9} {'seconds':>8} {'max |tiled - whole|':>20}")
    for tf32 in ([True, False] if device.type == "cuda" else [False]):
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
        predict_image(model, image, offsets, device=device, **data)  # warm-up
        (whole, _), seconds = _timed(lambda: predict_image(model, image, offsets, device=device, **data), device)
        print(f"{str(tf32):>5} {'whole':>9} {seconds:>8.2f} {'':>20}")
        for tile in args.tiles:
            (tiled, _), seconds = _timed(lambda: predict_image_tiled(model, image, offsets, tile=(tile, tile),
                                                                     layout=layout, device=device, **data), device)
            print(f"{str(tf32):>5} {f'{tile}x{tile}':>9} {seconds:>8.2f} {np.abs(tiled - whole).max():>20.2e}")


if __name__ == "__main__":
    main()
