"""The per-data-set entry points (`scripts_*/main.py`, `scripts_*/inference.py`) call these.

Relative paths in a config (`../data`, `../models`, ...) are taken from the script's folder,
as in the paper code, wherever the command is started from.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import yaml

from pea.config import Config, load_config, make_config, merge
from pea.errors import PEAInputError

PATH_KEYS = (("DATA", "data_dir"), ("TRAIN", "model_dir"), ("TEST", "trained_dir"), ("TEST", "out_dir"),
             ("MODEL", "pretrained"))


def _config(script_dir: Path, name: str, overrides: Sequence[str]) -> Config:
    path = Path(name) if name.endswith((".yaml", ".yml")) else script_dir / "config" / f"{name}.yaml"
    cfg = load_config(path)
    if overrides:
        cfg = make_config(merge(cfg.to_dict(), _parse_overrides(overrides), "--set"))
    for section, key in PATH_KEYS:
        value = cfg[section][key]
        if value and not Path(value).is_absolute():
            cfg[section][key] = str((script_dir / value).resolve())
    return cfg


def _parse_overrides(items: Sequence[str]) -> dict:
    """`SECTION.key=value` strings (values parsed as YAML) -> nested dict."""
    out: dict = {}
    for item in items:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise PEAInputError(f"--set {item!r}: expected SECTION.key=value")
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        out.setdefault(section, {})[name] = yaml.safe_load(value)
    return out


def _run(fn, argv) -> int:
    try:
        return int(fn(argv) or 0)
    except PEAInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


# -- training ------------------------------------------------------------------------------
def train_main(script_dir: str | Path, argv: Sequence[str] | None = None) -> int:
    """`main.py -c=NAME [--resume [CKPT]] [--run NAME] [--device DEV] [--set KEY=VALUE ...]`."""
    return _run(lambda a: _train(Path(script_dir), a), argv)


def _train(script_dir: Path, argv) -> int:
    p = argparse.ArgumentParser(description="Train a PEA network (config/NAME.yaml).")
    p.add_argument("-c", "--cfg", required=True, help="config name in config/ (or a .yaml path)")
    p.add_argument("--run", default=None, help="run folder name under TRAIN.model_dir (default: NAME)")
    p.add_argument("--resume", nargs="?", const="last", default=None,
                   help="continue from the run's last.ckpt, or from the checkpoint given")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (overrides TRAIN.device)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.key=VALUE")
    args = p.parse_args(argv)
    cfg = _config(script_dir, args.cfg, args.overrides)
    if args.device:
        cfg.TRAIN.device = args.device
    run_dir = Path(cfg.TRAIN.model_dir) / (args.run or cfg.NAME)
    from pea.train import Trainer

    if args.resume is None and any(run_dir.glob("*.ckpt")):
        raise PEAInputError(f"{run_dir} already holds checkpoints: pass --resume to continue, "
                            f"or --run NAME for a new run")
    trainer = Trainer(cfg, run_dir)
    if args.resume:
        trainer.resume(run_dir / "last.ckpt" if args.resume == "last" else args.resume)
        print(f"resuming at iteration {trainer.iteration}")
    print(f"run folder: {run_dir}")
    best = trainer.run()
    print(f"best {cfg.TRAIN.select_metric} = {best['score']} at iteration {best['iteration']}; "
          f"checkpoints in {run_dir}")
    return 0


def untrained_main(script_dir: str | Path, argv: Sequence[str] | None = None) -> int:
    """`untrained.py -c=NAME [--run RUN]`: save the network a training run starts from (the
    config's seeded initial weights) as RUN/init.ckpt, to score it beside a trained one."""
    return _run(lambda a: _untrained(Path(script_dir), a), argv)


def _untrained(script_dir: Path, argv) -> int:
    p = argparse.ArgumentParser(description="Save the initial (untrained) network as init.ckpt.")
    p.add_argument("-c", "--cfg", required=True, help="config name in config/ (or a .yaml path)")
    p.add_argument("--run", default=None, help="run folder under TRAIN.model_dir (default: NAME_untrained)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.key=VALUE")
    args = p.parse_args(argv)
    cfg = _config(script_dir, args.cfg, args.overrides)
    from pea.train import Trainer, save_checkpoint

    run_dir = Path(cfg.TRAIN.model_dir) / (args.run or f"{cfg.NAME}_untrained")
    trainer = Trainer(cfg, run_dir)  # seeds torch exactly as a training run does
    save_checkpoint(run_dir / "init.ckpt", trainer.state())
    print(f"initial network: {run_dir / 'init.ckpt'}")
    return 0


# -- inference -----------------------------------------------------------------------------
def inference_main(script_dir: str | Path, argv: Sequence[str] | None = None) -> int:
    """`inference.py -c=NAME -mn=MODEL -id=CKPT -m=MODE [-s] [--waterz] [--lmc] [--mutex]`."""
    return _run(lambda a: _inference(Path(script_dir), a), argv)


def find_checkpoint(cfg: Config, model_name: str, ckpt_id: str) -> Path:
    """`-id` as a path, else TEST.trained_dir/MODEL/CKPT.ckpt, else TRAIN.model_dir/MODEL/CKPT.ckpt."""
    tried = [Path(ckpt_id)]
    for root in (cfg.TEST.trained_dir, cfg.TRAIN.model_dir):
        tried.append(Path(root) / model_name / (ckpt_id if ckpt_id.endswith(".ckpt") else f"{ckpt_id}.ckpt"))
    for path in tried:
        if path.is_file():
            return path
    raise PEAInputError("checkpoint not found; tried " + ", ".join(str(t) for t in tried))


def _inference(script_dir: Path, argv) -> int:
    p = argparse.ArgumentParser(description="Segment a split with a trained PEA network.")
    p.add_argument("-c", "--cfg", required=True, help="config name in config/ (or a .yaml path)")
    p.add_argument("-mn", "--model_name", required=True, help="folder under ../trained_models (or ../models)")
    p.add_argument("-id", "--model_id", required=True, help="checkpoint name without .ckpt, or a path")
    p.add_argument("-m", "--mode", required=True, help="validation | test (CVPPP, BBBC039V1) or ac3 (AC3/AC4)")
    p.add_argument("-s", "--save_affs", action="store_true", help="also write affs.hdf")
    p.add_argument("--waterz", action="store_true", help="3D: waterz agglomeration")
    p.add_argument("--lmc", action="store_true", help="3D: multicut on the fragment graph")
    p.add_argument("--mutex", action="store_true", help="3D: Mutex Watershed")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")
    p.add_argument("--max-images", type=int, default=None, help="segment only the first N images")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.key=VALUE")
    args = p.parse_args(argv)
    cfg = _config(script_dir, args.cfg, args.overrides)
    from pea.affinity import resolve_offsets
    from pea.data import get_reader
    from pea.inference import segment_sample, select_device
    from pea.metrics import evaluate
    from pea.train import load_checkpoint, model_from_checkpoint
    from pea.visualize import save_panel

    device = select_device(args.device or cfg.TRAIN.device)
    path = find_checkpoint(cfg, args.model_name, args.model_id)
    model, ckpt_cfg = model_from_checkpoint(load_checkpoint(path), device, str(path))
    cfg.MODEL = ckpt_cfg.MODEL  # the network is the checkpoint's
    offsets, _ = resolve_offsets(cfg.DATA)
    reader = get_reader(cfg.DATA.dataset)
    samples = reader.load_split(cfg.DATA, args.mode)
    if args.max_images:
        samples = samples[: args.max_images]
    methods = [m for m in ("waterz", "lmc", "mutex") if getattr(args, m)] or ["mutex"]
    out_dir = Path(cfg.TEST.out_dir) / args.model_name / args.mode
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"checkpoint: {path}\nwriting to: {out_dir}")
    rows: dict[str, list[dict]] = {m: [] for m in methods}
    segs: dict[str, dict[str, np.ndarray]] = {m: {} for m in methods}
    with_affs = h5py.File(out_dir / "affs.hdf", "w") if args.save_affs else None
    from tqdm import tqdm

    for sample in tqdm(samples, desc=args.mode):
        result = segment_sample(model, sample, cfg, offsets, device, methods=methods)
        if with_affs is not None:
            with_affs.create_dataset(sample.name, data=result["affs"], compression="gzip")
        for method, seg in result["seg"].items():
            segs[method][sample.name] = seg
            if sample.gt is not None:
                rows[method].append({"name": sample.name, **evaluate(seg, sample.gt, metrics=list(reader.METRICS))})
        first = next(iter(result["seg"].values()))
        image = sample.image if sample.image.ndim == 3 else sample.image[sample.image.shape[0] // 2]
        affs = result["affs"] if first.ndim == 2 else result["affs"][:, first.shape[0] // 2]
        gt = sample.gt if first.ndim == 2 or sample.gt is None else sample.gt[first.shape[0] // 2]
        save_panel(out_dir / "panels" / f"{sample.name}.png", image, affs,
                   first if first.ndim == 2 else first[first.shape[0] // 2], gt)
    if with_affs is not None:
        with_affs.close()
    for method in methods:
        suffix = "" if len(methods) == 1 else f"_{method}"
        with h5py.File(out_dir / f"seg{suffix}.hdf", "w") as f:
            for name, seg in segs[method].items():
                f.create_dataset(name, data=seg.astype(np.uint32), compression="gzip")
        if hasattr(reader, "write_submission") and args.mode == "test":
            print(f"submission: {reader.write_submission(out_dir, segs[method])}")
    summary = []
    for method in methods:
        if not rows[method]:
            continue
        suffix = "" if len(methods) == 1 else f"_{method}"
        summary.append(_write_scores(out_dir / f"score{suffix}.txt", rows[method], method))
    print(f"panels: {out_dir / 'panels'}")
    for line in summary:
        print(line)
    return 0


def _write_scores(path: Path, rows: list[dict], method: str) -> str:
    """score.txt: one line per image, then mean and std; returns the one-line summary."""
    keys = [k for k in rows[0] if k != "name"]
    lines = ["name " + " ".join(keys)]
    lines += [r["name"] + " " + " ".join(f"{r[k]:.4f}" for k in keys) for r in rows]
    means = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    stds = {k: float(np.std([r[k] for r in rows])) for k in keys}
    lines.append("mean " + " ".join(f"{means[k]:.4f}" for k in keys))
    lines.append("std " + " ".join(f"{stds[k]:.4f}" for k in keys))
    path.write_text("\n".join(lines) + "\n")
    return f"{method}: " + " ".join(f"{_label(k)}={means[k]:.4f}" for k in keys)


def _label(key: str) -> str:
    return {"sbd": "SBD", "abs_dic": "|DiC|", "dic": "DiC", "aji": "AJI", "dice": "Dice", "pq": "PQ", "dq": "F1",
            "sq": "SQ", "voi_split": "VOI_split", "voi_merge": "VOI_merge", "voi": "VOI", "arand": "ARAND"}.get(key, key)
