"""Blockwise 3D segmentation (`pea predict`, `pea.blockwise`), each run in a fresh process.
Sections (--sections, all by default):

- memory: voxels per second and peak memory for volumes of 1x, 4x and 8x a base size (y and x
  doubled, then z too), the blocks one after another in the process (`--workers 0`), so its
  peak resident memory is the run's. Memory is set by the block: the 8x run must stay within
  1.5x of the 1x run's peak (the script exits 1 otherwise).
- cores: voxels per second on one volume (--cores-factor times the base) with one core (the
  process pinned to one CPU, `--workers 0 --threads 1`), with every core (the default local
  cluster: workers x threads = cores) and with the whole-volume path (`--whole`, every core),
  as ratios, and the hardware.
- compare: the 1x volume segmented whole, in memory (`--whole`), against blockwise: the
  largest affinity difference and the VOI of each partitioner.
- resume: the 1x volume segmented on every core uninterrupted, then once more killed with
  SIGKILL half-way through and rerun: the times, the blocks skipped, and whether the result
  is identical.
- stitch: the Mutex Watershed on affinities made from the look-alike's own labels (ideal
  affinities blurred, plus Gaussian noise --noise), whole against blockwise
  (`pea.stitch.mutex_blockwise`, --block): VOI, independent of any network.

The network is a random-weight superhuman (MODEL.filters --filters) saved with the
`ac3ac4_demo` config, or --model CKPT; the volume an EM look-alike (pea.synth.em) tiled by
mirroring to the larger sizes, written to zarr chunk by chunk.
Example: python benchmarks/bench_blockwise.py --sections cores compare
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCALES = {1: (1, 1, 1), 2: (1, 1, 2), 4: (1, 2, 2), 8: (2, 2, 2)}
SECTIONS = ("memory", "cores", "compare", "resume", "stitch")


def make_checkpoint(path: Path, filters: list[int], window: list[int], overlap: list[int]) -> None:
    import torch

    from pea.checkpoint import save_checkpoint
    from pea.config import load_config, make_config, merge
    from pea.models import build_model

    base = load_config(ROOT / "scripts_ac3ac4" / "config" / "ac3ac4_demo.yaml").to_dict()
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


def run_once(argv: list[str], cores: int) -> None:
    """One `pea predict` in this process (pinned to `cores` CPUs if > 0); prints its seconds
    and peak memory as JSON."""
    if cores:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cores])
    from pea.cli import main

    start = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - start
    print(json.dumps({"code": code, "seconds": seconds,
                      "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def _command(argv: list[str], cores: int = 0) -> list[str]:
    return [sys.executable, __file__, "--run", json.dumps(argv), "--run-cores", str(cores)]


def measure(argv: list[str], cores: int = 0) -> dict:
    out = subprocess.run(_command(argv, cores), capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines or json.loads(lines[-1])["code"]:
        sys.exit(f"pea predict failed:\n{out.stderr[-3000:]}")
    return {**json.loads(lines[-1]), "stderr": out.stderr}


def hardware() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"hardware: {cpu}, {len(os.sched_getaffinity(0))} cores available to this process "
            f"({os.cpu_count()} in the machine), {gpu}, torch {torch.__version__}")


def predict_argv(model: str, volume: Path, out: Path, args, *extra: str) -> list[str]:
    flags = [f"--{m}" for m in args.methods.split(",")]
    return ["predict", "--model", model, "--input", str(volume), "--output", str(out), "--device", args.device,
            "--block", *map(str, args.block), *flags, *extra]


def section_memory(folder: Path, model: str, base: np.ndarray, args) -> bool:
    rows = []
    for factor in args.factors:
        shape = make_volume(folder / "raw.zarr" / f"m{factor}", base, SCALES[factor], tuple(args.block))
        result = measure(predict_argv(model, folder / "raw.zarr" / f"m{factor}", folder / f"mem{factor}.zarr", args,
                                      "--workers", "0"))
        rows.append((factor, shape, int(np.prod(shape)), result["seconds"], result["peak_mib"]))
    print(f"\n[memory] block {tuple(args.block)}, window {tuple(args.window)}, methods {args.methods}, "
          f"device {args.device}, blocks one after another in one process")
    print(f"{'volume':>7} {'shape':>16} {'voxels':>10} {'seconds':>8} {'voxels/s':>9} {'peak MiB':>9} {'vs 1x':>6}")
    for factor, shape, voxels, seconds, peak in rows:
        print(f"{str(factor) + 'x':>7} {'x'.join(map(str, shape)):>16} {voxels:>10} {seconds:>8.1f} "
              f"{voxels / seconds:>9.0f} {peak:>9.0f} {peak / rows[0][4]:>6.2f}")
    worst = max(r[4] for r in rows) / rows[0][4]
    print(f"peak memory of the largest run / 1x: {worst:.2f} (goal: at most 1.5)")
    return worst <= 1.5


def section_cores(folder: Path, model: str, base: np.ndarray, args) -> None:
    from pea.blockrun import cluster_shape

    volume = folder / "raw.zarr" / f"cores{args.cores_factor}"
    shape = make_volume(volume, base, SCALES[args.cores_factor], tuple(args.block))
    voxels = int(np.prod(shape))
    workers, threads = cluster_shape(None, None)
    runs = [("one core (--workers 0 --threads 1, pinned)", ["--workers", "0", "--threads", "1"], 1),
            (f"every core ({workers} workers x {threads} threads)", [], 0),
            ("whole volume in memory (--whole)", ["--whole"], 0)]
    print(f"\n[cores] volume {'x'.join(map(str, shape))} ({voxels} voxels), block {tuple(args.block)}, "
          f"window {tuple(args.window)}, methods {args.methods}, device {args.device}")
    print(hardware())
    print(f"{'run':<48} {'seconds':>8} {'voxels/s':>9} {'vs one core':>11}", flush=True)
    seconds, parts = [], []
    for k, (name, extra, cores) in enumerate(runs):
        result = measure(predict_argv(model, volume, folder / f"cores_{k}.zarr", args, *extra), cores)
        seconds.append(result["seconds"])
        parts.append(re.findall(r"^(\w+)(?: \([^)]*\))?: (?:\d+ block\(s\) in )?([\d.]+) s$", result["stderr"], re.M))
        print(f"{name:<48} {seconds[-1]:>8.1f} {voxels / seconds[-1]:>9.0f} {seconds[0] / seconds[-1]:>11.2f}",
              flush=True)
    print(f"every core / whole volume: {seconds[2] / seconds[1]:.2f}x the voxels/s")
    for (name, _, _), stages in zip(runs[:2], parts):
        print(f"  {name.split(' (')[0]}: " + ", ".join(f"{stage} {float(s):.1f} s" for stage, s in stages)
              + " (the rest: start-up, the cluster's included)")


def section_compare(folder: Path, model: str, args) -> None:
    import zarr
    from skimage.metrics import variation_of_information

    volume = folder / "raw.zarr" / "x1"
    measure(predict_argv(model, volume, folder / "block.zarr", args))
    measure(predict_argv(model, volume, folder / "whole.zarr", args, "--whole"))
    block = zarr.open_group(folder / "block.zarr", mode="r")
    whole = zarr.open_group(folder / "whole.zarr", mode="r")
    diff = float(np.abs(block["affinities"][:] - whole["affinities"][:]).max())
    print(f"\n[compare] 1x blockwise against the whole volume: max |affinity difference| = {diff:.2e}")
    for method, name in block.attrs["arrays"].items():
        split, merge = variation_of_information(whole[f"labels/{whole.attrs['arrays'][method]}/0"][:],
                                                block[f"labels/{name}/0"][:])  # OME-Zarr label images
        why = "the grown blocks decide differently near faces" if method == "mutex" else "fragments differ at block faces"
        print(f"  {method}: VOI split {split:.4f}, merge {merge:.4f} (blockwise against whole-volume; {why})")


def section_resume(folder: Path, model: str, args) -> None:
    import zarr

    volume = folder / "raw.zarr" / "x1"
    full = measure(predict_argv(model, volume, folder / "full.zarr", args))["seconds"]
    argv = predict_argv(model, volume, folder / "killed.zarr", args)
    start = time.perf_counter()
    proc = subprocess.Popen(_command(argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # its dask workers too: the whole session is killed
    time.sleep(full / 2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = time.perf_counter() - start
    result = measure(argv)
    skipped = [line for line in result["stderr"].splitlines() if "finished before" in line]
    a, b = zarr.open_group(folder / "full.zarr", mode="r"), zarr.open_group(folder / "killed.zarr", mode="r")
    arrays = ["affinities"] + [f"labels/{name}/0" for name in a["labels"].group_keys()]  # OME-Zarr
    identical = all(np.array_equal(a[name][:], b[name][:]) for name in arrays)
    print(f"\n[resume] 1x volume on every core: uninterrupted {full:.1f} s; killed (SIGKILL) after {killed:.1f} s; "
          f"rerun {result['seconds']:.1f} s (killed + rerun {killed + result['seconds']:.1f} s); "
          f"identical to the uninterrupted run: {'yes' if identical else 'NO'}")
    for line in skipped:
        print(f"  {line.strip()}")


def section_stitch(labels: np.ndarray, args) -> None:
    import torch
    from scipy import ndimage
    from skimage.metrics import variation_of_information

    from pea.affinity import EM_OFFSETS, affinity_targets
    from pea.postprocess import mutex_watershed
    from pea.stitch import mutex_blockwise

    nearest = ndimage.distance_transform_edt(labels == 0, return_distances=False, return_indices=True)
    objects = labels[tuple(nearest)]
    ideal = affinity_targets(torch.from_numpy(objects.astype(np.int64))[None], EM_OFFSETS)[0][0].numpy()
    noisy = ndimage.gaussian_filter(ideal, (0, 0.7, 2, 2)) + args.noise * np.random.default_rng(1).standard_normal(
        ideal.shape)
    affs = np.clip(noisy, 0, 1).astype(np.float32)
    strides = [1, 10, 10]
    start = time.perf_counter()
    whole = mutex_watershed(affs.copy(), EM_OFFSETS, strides)
    whole_s = time.perf_counter() - start
    start = time.perf_counter()
    blocks = mutex_blockwise(affs, EM_OFFSETS, args.block, strides=strides)
    block_s = time.perf_counter() - start
    split, merge = variation_of_information(whole, blocks)
    gt_whole, gt_block = (sum(variation_of_information(objects, s)) for s in (whole, blocks))
    print(f"\n[stitch] Mutex Watershed (strides {strides}) on the labels' affinities, blurred, noise {args.noise}, "
          f"volume {'x'.join(map(str, objects.shape))}, block {tuple(args.block)}")
    print(f"  whole {whole.max()} segments ({whole_s:.1f} s), blockwise {blocks.max()} segments ({block_s:.1f} s, "
          f"one process); blockwise against whole: VOI split {split:.4f}, merge {merge:.4f}; "
          f"VOI to the labels: whole {gt_whole:.3f}, blockwise {gt_block:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    p.add_argument("--base", type=int, nargs=3, default=[16, 128, 128], help="1x volume (z, y, x)")
    p.add_argument("--block", type=int, nargs=3, default=[16, 64, 64])
    p.add_argument("--window", type=int, nargs=3, default=[8, 64, 64])
    p.add_argument("--overlap", type=int, nargs=3, default=[2, 16, 16])
    p.add_argument("--filters", type=int, nargs=5, default=[4, 4, 6, 6, 8])
    p.add_argument("--model", default=None, help="a 3D checkpoint instead of the random-weight network")
    p.add_argument("--methods", default="waterz,lmc,mutex")
    p.add_argument("--factors", type=int, nargs="+", default=[1, 4, 8], choices=[1, 4, 8])
    p.add_argument("--cores-factor", type=int, default=4, choices=sorted(SCALES), help="cores: volume / base")
    p.add_argument("--noise", type=float, default=0.15, help="stitch: noise added to the affinities")
    p.add_argument("--device", default="cpu")
    p.add_argument("--run", default=None, help=argparse.SUPPRESS)
    p.add_argument("--run-cores", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run:
        return run_once(json.loads(args.run), args.run_cores)
    from pea.synth.em import make_em_volume

    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = args.model or str(folder / "net.ckpt")
        if args.model is None:
            make_checkpoint(Path(model), args.filters, args.window, args.overlap)
        base, labels = make_em_volume(np.random.default_rng(0), tuple(args.base), object_size=16.0)
        make_volume(folder / "raw.zarr" / "x1", base, (1, 1, 1), tuple(args.block))
        if "memory" in args.sections:
            ok = section_memory(folder, model, base, args)
        if "cores" in args.sections:
            section_cores(folder, model, base, args)
        if "compare" in args.sections:
            section_compare(folder, model, args)
        if "resume" in args.sections:
            section_resume(folder, model, args)
        if "stitch" in args.sections:
            section_stitch(labels, args)
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
