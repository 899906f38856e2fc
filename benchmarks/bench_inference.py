"""Inference speed: 2D images per second and 3D voxels per second with the paper networks, in
float32, bf16 and fp16 (autocast) and with several sliding windows per forward pass; peak
memory of each case (each runs in a fresh process: its peak RSS on the CPU, the CUDA
allocator's peak on a GPU). Ratios are against the float32 case of the same kind.

    python benchmarks/bench_inference.py [--quick] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CASES = {
    "2d-fp32": {"kind": "2d", "amp": "off"},
    "2d-bf16": {"kind": "2d", "amp": "bf16"},
    "2d-fp16": {"kind": "2d", "amp": "fp16"},
    "2d-fp32-channels_last": {"kind": "2d", "amp": "off", "channels_last": True},
    "3d-fp32": {"kind": "3d", "amp": "off", "batch": 1},
    "3d-fp32-batch4": {"kind": "3d", "amp": "off", "batch": 4},
    "3d-bf16-batch4": {"kind": "3d", "amp": "bf16", "batch": 4},
}


def run_case(name: str, quick: bool, device: str) -> dict:
    """Time one case in this process and report its speed and peak memory."""
    import numpy as np
    import torch

    from pea.affinity import EM_OFFSETS, offsets_from_shifts
    from pea.inference import predict_image, predict_windows
    from pea.models import build_model

    case = CASES[name]
    dev = torch.device(device)
    rng = np.random.default_rng(0)
    if case["kind"] == "2d":
        model = build_model({"backbone": "resunet_official", "in_channels": 3, "fg_head": True}).to(dev).eval()
        if case.get("channels_last"):
            model = model.to(memory_format=torch.channels_last)
        size = 272 if quick else 544
        images = [rng.random((size, size, 3), dtype=np.float32) for _ in range(2 if quick else 4)]
        options = {"padded_size": [size, size], "pad_mode": "reflect", "normalize": "imagenet", "amp": case["amp"],
                   "device": dev}
        offsets = offsets_from_shifts([1, 3, 5, 9, 27])
        predict_image(model, images[0], offsets, **options)  # warm-up
        start = time.perf_counter()
        for image in images:
            predict_image(model, image, offsets, **options)
        _sync(dev)
        rate, unit = len(images) / (time.perf_counter() - start), "images/s"
    else:
        model = build_model({"backbone": "superhuman_official", "in_channels": 1}).to(dev).eval()
        shape = (26, 240, 240) if quick else (50, 480, 480)
        volume = rng.random(shape + (1,), dtype=np.float32)
        start = time.perf_counter()
        predict_windows(model, volume, EM_OFFSETS, [18, 160, 160], overlap=[8, 80, 80], blend="gaussian",
                        context=[4, 48, 48], device=dev, normalize="unit", progress=False, batch=case["batch"],
                        amp=case["amp"])
        _sync(dev)
        rate, unit = volume[..., 0].size / (time.perf_counter() - start), "voxels/s"
    peak = (torch.cuda.max_memory_allocated() if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"case": name, "rate": rate, "unit": unit, "peak_mb": peak / 2**20}


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller images and volume")
    p.add_argument("--device", default="cpu")
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.quick, args.device)))
        return
    from hardware import describe, emulated

    rows, skipped = [], []
    for name in CASES:
        why = emulated(CASES[name]["amp"], args.device)
        if why:
            skipped.append(f"{name}: skipped, {why}")
            continue
        cmd = [sys.executable, __file__, "--case", name, "--device", args.device] + (["--quick"] if args.quick else [])
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{name}: failed ({done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'no output'})")
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    base = {r["unit"]: r["rate"] for r in rows if r["case"].endswith("fp32")}
    print(f"device {args.device} ({describe(args.device)}); {'quick' if args.quick else 'full'} sizes")
    print(f"{'case':22s} {'rate':>14s} {'unit':9s} {'vs fp32':>8s} {'peak MB':>9s}")
    for r in rows:
        print(f"{r['case']:22s} {r['rate']:14.2f} {r['unit']:9s} {r['rate'] / base[r['unit']]:8.2f} {r['peak_mb']:9.0f}")
    for line in skipped:
        print(line)


if __name__ == "__main__":
    main()
