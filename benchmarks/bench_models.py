"""Parameters, forward and forward+backward time of every backbone, with the ratio to ResUNet.

2D nets take (batch, C, size, size); 3D nets take (batch, 1, depth, size, size). Forward is
timed in eval mode without autograd, forward+backward in train mode on a squared-output
loss. Example: python benchmarks/bench_models.py --size 128 --depth 8 --iters 2 --device cpu
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from pea.models import MODELS, build_model


def _timed(fn: Callable[[], None], iters: int, warmup: int, device: torch.device) -> float:
    """Mean seconds per call of `fn` after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / iters


def bench(backbone: str, args: argparse.Namespace, device: torch.device) -> dict[str, object]:
    """One table row: parameters, input shape, forward / forward+backward seconds, peak memory."""
    in_channels = 1 if backbone in ("superhuman", "mala") else 3
    model = build_model({"backbone": backbone, "in_channels": in_channels, "fg_head": True}).to(device)
    shape = (args.size, args.size) if model.spatial_dims == 2 else (args.depth, args.size, args.size)
    x = torch.randn(args.batch, model.in_channels, *shape, device=device)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def forward_backward() -> None:
        out = model(x)
        loss = sum(e.float().square().mean() for e in out["embeddings"]) + out["foreground"].float().square().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    model.eval()
    t_fwd = _timed(forward, args.iters, args.warmup, device)
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t_fb = _timed(forward_backward, args.iters, args.warmup, device)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return {
        "backbone": backbone,
        "params": sum(p.numel() for p in model.parameters()),
        "input": "x".join(map(str, (args.batch, model.in_channels, *shape))),
        "fwd": t_fwd,
        "fwdbwd": t_fb,
        "peak": peak,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--backbones", nargs="+", default=["resunet", "resnet50", "resnet101", "superhuman", "mala"], choices=sorted(MODELS)
    )
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=544, help="in-plane size (default 544, the CVPPP crop)")
    parser.add_argument("--depth", type=int, default=18, help="z size of the 3D nets' input (default 18)")
    parser.add_argument("--iters", type=int, default=10, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--threads", type=int, default=None, help="CPU intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device {name}, torch {torch.__version__}, {args.iters} timed iterations after {args.warmup} warm-up")

    rows = [bench(b, args, device) for b in args.backbones]
    ref = next((r for r in rows if r["backbone"] == "resunet"), None)
    header = f"{'backbone':<11} {'params':>11} {'input':>18} {'fwd ms':>9} {'fwd+bwd ms':>11} {'peak MiB':>9}"
    if ref is not None:
        header += f" {'params/ResUNet':>15} {'fwd/ResUNet':>12} {'fwd+bwd/ResUNet':>16}"
    print(header)
    for r in rows:
        line = (
            f"{r['backbone']:<11} {r['params']:>11,} {r['input']:>18} {1e3 * r['fwd']:>9.1f} "
            f"{1e3 * r['fwdbwd']:>11.1f} {r['peak']:>9.0f}"
        )
        if ref is not None:
            line += (
                f" {r['params'] / ref['params']:>15.2f} {r['fwd'] / ref['fwd']:>12.2f}"
                f" {r['fwdbwd'] / ref['fwdbwd']:>16.2f}"
            )
        print(line)


if __name__ == "__main__":
    main()
