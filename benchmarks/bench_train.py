"""Training speed: iterations per second of a paper config and where each step's time goes
(waiting for data, the network's forward and backward passes, the loss), in float32, bf16,
channels_last and (with --compile) torch.compile; then 1 against 2 DDP processes (torchrun,
gloo on the CPU). Ratios are against float32 in one process, measured in one run.

    python benchmarks/bench_train.py [--config cvppp] [--quick] [--iterations 6] [--compile] [--device cpu]
"""
from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"cvppp": "scripts_cvppp", "bbbc039v1": "scripts_bbbc039v1", "ac3ac4": "scripts_ac3ac4"}


def synth(config: str, folder: Path) -> Path:
    """Look-alike data in the layout of the config's data set."""
    from pea.synth.bbbc039 import generate_bbbc039
    from pea.synth.cvppp import generate_cvppp
    from pea.synth.em import generate_em

    if config.startswith("cvppp"):
        generate_cvppp(folder, seed=1, n_train=6, n_test=1, n_valid=2)
    elif config.startswith("bbbc"):
        generate_bbbc039(folder, seed=1, n_train=6, n_valid=1, n_test=1)
    else:
        generate_em(folder, seed=1, depth=40, size=320, test_depth=20)
    return folder


def overrides(config: str, data: Path, quick: bool) -> dict:
    out = {"DATA": {"data_dir": str(data), "num_workers": 1}, "TRAIN": {"device": "cpu"}}
    if quick:
        out["DATA"]["crop_size"] = [8, 96, 96] if config.startswith("ac3") else [128, 128]
        out["MODEL"] = {"filters": [8, 8, 16, 16, 32] if config.startswith("ac3") else [8, 16, 32, 64, 128]}
    return out


def time_steps(cfg, run: Path, iterations: int) -> dict:
    """Seconds per iteration of the trainer's own step (`Trainer.step`, which leaves the device
    running: the loss is read back once per log interval), and the share of each part of a step
    (data, network, loss) from steps timed part by part, the device synchronised after each."""
    import torch

    from pea.settings import trainer as build_trainer

    trainer = build_trainer(cfg, run)
    batches = list(itertools.islice(iter(trainer.train_loader(0)), iterations + 1))
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    trainer.step(*batches[0])  # warm-up
    sync()
    t0 = time.perf_counter()
    for x, labels in batches[1:]:
        trainer.step(x, labels)
    sync()
    step = (time.perf_counter() - t0) / iterations
    parts = {"data": 0.0, "network": 0.0, "loss": 0.0}
    loader = iter(trainer.train_loader(0))
    for i in range(iterations + 1):
        t0 = time.perf_counter()
        x, labels = next(loader)
        x, labels = x.to(trainer.device), labels.to(trainer.device)
        sync()
        t1 = time.perf_counter()
        out, out2 = (trainer._forward(x), None) if trainer.cross_view is None else \
            trainer.cross_view(trainer._forward, x, labels, i)
        sync()
        t2 = time.perf_counter()
        loss, _ = trainer.loss(out, labels, out2)
        sync()
        t3 = time.perf_counter()
        trainer.optimizer.zero_grad()
        trainer.scaler.scale(loss).backward()
        trainer.scaler.step(trainer.optimizer)
        trainer.scaler.update()
        sync()
        t4 = time.perf_counter()
        if i:  # the first step warms up
            parts["data"] += t1 - t0
            parts["network"] += (t2 - t1) + (t4 - t3)
            parts["loss"] += t3 - t2
    total = sum(parts.values())
    return {"s_per_it": step, **{k: v / total for k, v in parts.items()}}


def ddp_seconds(config: str, data: Path, quick: bool, iterations: int, n: int, run: Path) -> float:
    """Wall seconds per iteration of `main.py` under torchrun with n processes (same global batch)."""
    sets = [f"DATA.data_dir={data}", "DATA.num_workers=0", f"TRAIN.iterations={iterations}",
            f"TRAIN.valid_every={10 * iterations}", f"TRAIN.save_every={10 * iterations}",
            f"TRAIN.model_dir={run / str(n)}", "TRAIN.device=cpu", "TRAIN.batch_size=2"]
    if quick:
        q = overrides(config, data, True)
        sets += [f"DATA.crop_size={q['DATA']['crop_size']}", f"MODEL.filters={q['MODEL']['filters']}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}", "--master_addr=127.0.0.1",
           "--master_port=29533", "main.py", f"-c={config}"] + sum((["--set", s] for s in sets), [])
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT / SCRIPTS[config.split("_")[0]], env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr[-1500:])
    return (time.perf_counter() - start) / iterations


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="cvppp")
    p.add_argument("--quick", action="store_true", help="small crops and a half-width network")
    p.add_argument("--iterations", type=int, default=6)
    p.add_argument("--compile", action="store_true", help="also time torch.compile")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    from pea.config import merge
    from pea.scripts import script_config

    tmp = Path(tempfile.mkdtemp())
    data = synth(args.config, tmp / "data")
    base = script_config(ROOT / SCRIPTS[args.config.split("_")[0]], args.config, [])
    variants = {"fp32": {}, "bf16": {"amp": "bf16"}, "channels_last": {"channels_last": True}}
    if args.compile:
        variants["compile"] = {"compile": True}
    from hardware import describe, emulated

    rows, skipped = {}, []
    for name, train in variants.items():
        why = emulated(train.get("amp", "off"), args.device)
        if why:
            skipped.append(f"{name}: skipped, {why}")
            continue
        over = overrides(args.config, data, args.quick)
        over["TRAIN"] = {**over["TRAIN"], "device": args.device, **train}
        from pea.config import make_config

        cfg = make_config(merge(base.to_dict(), over))
        rows[name] = time_steps(cfg, tmp / name, args.iterations)
    print(f"{args.config} on {args.device} ({describe(args.device)}), {'quick' if args.quick else 'paper'} sizes, "
          f"{args.iterations} steps; s/it: Trainer.step; data/network/loss: shares of a step timed part by part")
    print(f"{'variant':14s} {'s/it':>8s} {'it/s':>8s} {'vs fp32':>8s} {'data':>6s} {'network':>8s} {'loss':>6s}")
    for name, r in rows.items():
        print(f"{name:14s} {r['s_per_it']:8.3f} {1 / r['s_per_it']:8.3f} {rows['fp32']['s_per_it'] / r['s_per_it']:8.2f} "
              f"{r['data']:6.1%} {r['network']:8.1%} {r['loss']:6.1%}")
    for line in skipped:
        print(line)
    import torch

    if args.device.startswith("cuda") and torch.cuda.device_count() < 2:
        print("torchrun 1 against 2 processes: skipped, one GPU here")
    elif args.device == "cpu":
        one = ddp_seconds(args.config, data, args.quick, args.iterations, 1, tmp / "ddp")
        two = ddp_seconds(args.config, data, args.quick, args.iterations, 2, tmp / "ddp")
        print(f"torchrun, gloo, global batch 2: 1 process {one:.3f} s/it, 2 processes {two:.3f} s/it "
              f"({one / two:.2f}x; whole runs, start-up included)")


if __name__ == "__main__":
    main()
