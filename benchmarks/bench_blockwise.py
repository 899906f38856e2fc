"""Blockwise 3D segmentation (`pea predict`, `pea.blockwise`): voxels per second and peak
memory for volumes of 1x, 4x and 8x a base size (y and x doubled, then z too), each run in a
fresh process in which the blocks run one after another (`--workers 0`), so its peak resident
memory is the run's. Memory is set by the block: the 8x run must stay within 1.5x of the 1x
run's peak (the script exits 1 otherwise). With --compare, the 1x volume is also segmented
whole, in memory (`--whole`), and the affinities and segmentations are compared.

The network is a random-weight superhuman (MODEL.filters --filters) saved with the
`ac3ac4_demo` config, or --model CKPT; the volume an EM look-alike (pea.synth.em) tiled by
mirroring to the larger sizes, written to zarr chunk by chunk.
Example: python benchmarks/bench_blockwise.py --compare
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SCALES = {1: (1, 1, 1), 4: (1, 2, 2), 8: (2, 2, 2)}


def make_checkpoint(path: Path, filters: list[int], window: list[int], overlap: list[int]) -> None:
    import torch

    from pea.checkpoint import save_checkpoint
    from pea.config import load_config, make_config, merge, shipped_config
    from pea.models import build_model

    base = load_config(shipped_config("ac3ac4_demo")).to_dict()
    cfg = make_config(merge(base, {"MODEL": {"filters": filters},
                                   "TEST": {"window": window, "overlap": overlap, "context": overlap}}))
    torch.manual_seed(0)
    save_checkpoint(path, {"model_weights": build_model(cfg.MODEL).state_dict(), "config": cfg.to_dict()})


def make_volume(path: Path, base: np.ndarray, reps: tuple[int, ...], chunk: tuple[int, ...]) -> tuple[int, ...]:
    """`base` tiled `reps` times per axis (every other tile mirrored), written chunk by chunk."""
    import zarr

    shape = tuple(n * r for n, r in zip(base.shape, reps))
    array = zarr.open_group(path.parent, mode="a").create_array(path.name, shape=shape, chunks=chunk, dtype="uint8")
    for tile in np.ndindex(*reps):
        data = base[tuple(slice(None, None, -1 if t % 2 else 1) for t in tile)]
        array[tuple(slice(t * n, (t + 1) * n) for t, n in zip(tile, base.shape))] = data
    return shape


def run_once(argv: list[str]) -> None:
    """One `pea predict` in this process; prints its seconds and peak memory as JSON."""
    from pea.cli import main

    start = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - start
    print(json.dumps({"code": code, "seconds": seconds,
                      "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure(argv: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--run", json.dumps(argv)], capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines or json.loads(lines[-1])["code"]:
        sys.exit(f"pea predict failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def compare(folder: Path) -> str:
    import zarr
    from skimage.metrics import variation_of_information

    block = zarr.open_group(folder / "x1.zarr", mode="r")
    whole = zarr.open_group(folder / "whole.zarr", mode="r")
    diff = float(np.abs(block["affinities"][:] - whole["affinities"][:]).max())
    lines = [f"1x blockwise vs whole volume: max |affinity difference| = {diff:.2e}"]
    for method, name in block.attrs["arrays"].items():
        split, merge = variation_of_information(whole[whole.attrs["arrays"][method]][:], block[name][:])
        lines.append(f"  {method}: VOI split {split:.4f}, merge {merge:.4f} (blockwise against whole-volume; "
                     f"fragments differ at block faces)")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", type=int, nargs=3, default=[16, 128, 128], help="1x volume (z, y, x)")
    p.add_argument("--block", type=int, nargs=3, default=[16, 64, 64])
    p.add_argument("--window", type=int, nargs=3, default=[8, 64, 64])
    p.add_argument("--overlap", type=int, nargs=3, default=[2, 16, 16])
    p.add_argument("--filters", type=int, nargs=5, default=[4, 4, 6, 6, 8])
    p.add_argument("--model", default=None, help="a 3D checkpoint instead of the random-weight network")
    p.add_argument("--methods", default="waterz,lmc")
    p.add_argument("--factors", type=int, nargs="+", default=[1, 4, 8], choices=sorted(SCALES))
    p.add_argument("--compare", action="store_true", help="also segment the 1x volume whole and compare")
    p.add_argument("--device", default="cpu")
    p.add_argument("--run", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run:
        return run_once(json.loads(args.run))
    from pea.synth.em import make_em_volume

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = args.model or str(folder / "net.ckpt")
        if args.model is None:
            make_checkpoint(Path(model), args.filters, args.window, args.overlap)
        base = make_em_volume(np.random.default_rng(0), tuple(args.base), object_size=16.0)[0]
        flags = sum([[f"--{m}"] for m in args.methods.split(",")], [])
        rows = []
        for factor in args.factors:
            shape = make_volume(folder / "raw.zarr" / f"x{factor}", base, SCALES[factor], tuple(args.block))
            argv = ["predict", "--model", model, "--input", str(folder / "raw.zarr" / f"x{factor}"),
                    "--output", str(folder / f"x{factor}.zarr"), "--device", args.device, "--workers", "0",
                    "--block", *map(str, args.block)] + flags
            result = measure(argv)
            rows.append((factor, shape, int(np.prod(shape)), result["seconds"], result["peak_mib"]))
        if args.compare:
            measure(["predict", "--model", model, "--input", str(folder / "raw.zarr" / "x1"), "--output",
                     str(folder / "whole.zarr"), "--device", args.device, "--whole"] + flags)
        print(f"blockwise segmentation, block {tuple(args.block)}, window {tuple(args.window)}, "
              f"methods {args.methods}, device {args.device}, blocks in one process")
        print(f"{'volume':>7} {'shape':>16} {'voxels':>10} {'seconds':>8} {'voxels/s':>9} {'peak MiB':>9} {'vs 1x':>6}")
        for factor, shape, voxels, seconds, peak in rows:
            print(f"{str(factor) + 'x':>7} {'x'.join(map(str, shape)):>16} {voxels:>10} {seconds:>8.1f} "
                  f"{voxels / seconds:>9.0f} {peak:>9.0f} {peak / rows[0][4]:>6.2f}")
        if args.compare:
            print(compare(folder))
        worst = max(r[4] for r in rows) / rows[0][4]
        print(f"peak memory of the largest run / 1x: {worst:.2f} (goal: at most 1.5)")
        if worst > 1.5:
            sys.exit(1)


if __name__ == "__main__":
    main()
