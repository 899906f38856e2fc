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

from pea.config import PARTITIONERS, Config, load_config, make_config, merge
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


def _inference_args(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Segment a split with a trained PEA network.")
    p.add_argument("-c", "--cfg", required=True, help="config name in config/ (or a .yaml path)")
    p.add_argument("-mn", "--model_name", required=True, help="folder under ../trained_models (or ../models)")
    p.add_argument("-id", "--model_id", required=True, help="checkpoint name without .ckpt, or a path")
    p.add_argument("-m", "--mode", required=True, help="the split to segment, e.g. validation | test | ac3")
    p.add_argument("-s", "--save_affs", action="store_true", help="also write affs.hdf")
    for name in PARTITIONERS:
        p.add_argument(f"--{name}", action="store_true", help=f"partition with {name} (default: TEST.partitioners)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")
    p.add_argument("--max-images", type=int, default=None, help="segment only the first N images")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.key=VALUE")
    return p.parse_args(argv)


def load_inference(script_dir: Path, args: argparse.Namespace):
    """The config, the network of the checkpoint, the device, the reader and the samples."""
    from pea.data import get_reader
    from pea.inference import select_device
    from pea.train import load_checkpoint, model_from_checkpoint

    cfg = _config(script_dir, args.cfg, args.overrides)
    device = select_device(args.device or cfg.TRAIN.device)
    path = find_checkpoint(cfg, args.model_name, args.model_id)
    model, ckpt_cfg = model_from_checkpoint(load_checkpoint(path), device, str(path))
    cfg.MODEL = ckpt_cfg.MODEL  # the network is the checkpoint's
    reader = get_reader(cfg.DATA.dataset)
    samples = reader.load_split(cfg.DATA, args.mode)
    if args.max_images:
        samples = samples[: args.max_images]
    print(f"checkpoint: {path}")
    return cfg, model, device, reader, samples


def _middle_plane(array: np.ndarray, spatial: int, lead: int = 0) -> np.ndarray:
    """The middle 2D plane of an array with `lead` axes before `spatial` spatial axes."""
    index = tuple(n // 2 for n in array.shape[lead:lead + spatial - 2])
    return array[(slice(None),) * lead + index] if index else array


def _panel(path: Path, sample, result: dict) -> None:
    """An overview image: input, affinities, the first segmentation and the ground truth."""
    from pea.visualize import save_panel

    seg = next(iter(result["seg"].values()))
    n = seg.ndim
    gt = None if sample.gt is None else _middle_plane(sample.gt, n)
    save_panel(path, _middle_plane(sample.image, n), _middle_plane(result["affs"], n, lead=1),
               _middle_plane(seg, n), gt)


def _write_segmentations(out_dir: Path, segs: dict[str, dict[str, np.ndarray]]) -> None:
    """seg.hdf (one partitioner) or seg_<method>.hdf: one dataset per image."""
    for method, by_name in segs.items():
        suffix = "" if len(segs) == 1 else f"_{method}"
        with h5py.File(out_dir / f"seg{suffix}.hdf", "w") as f:
            for name, seg in by_name.items():
                f.create_dataset(name, data=seg.astype(np.uint32), compression="gzip")


def _inference(script_dir: Path, argv) -> int:
    from contextlib import ExitStack

    from tqdm import tqdm

    from pea.affinity import resolve_offsets
    from pea.inference import segment_sample
    from pea.metrics import evaluate
    from pea.train import reported_metrics

    args = _inference_args(argv)
    cfg, model, device, reader, samples = load_inference(script_dir, args)
    offsets, _ = resolve_offsets(cfg.DATA)
    methods = [m for m in PARTITIONERS if getattr(args, m)] or list(cfg.TEST.partitioners)
    out_dir = Path(cfg.TEST.out_dir) / args.model_name / args.mode
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"writing to: {out_dir}")
    metrics = reported_metrics(cfg, reader)
    rows: dict[str, list[dict]] = {m: [] for m in methods}
    segs: dict[str, dict[str, np.ndarray]] = {m: {} for m in methods}
    with ExitStack() as stack:
        affs_file = stack.enter_context(h5py.File(out_dir / "affs.hdf", "w")) if args.save_affs else None
        for sample in tqdm(samples, desc=args.mode):
            result = segment_sample(model, sample, cfg, offsets, device, methods=methods)
            if affs_file is not None:
                affs_file.create_dataset(sample.name, data=result["affs"], compression="gzip")
            for method, seg in result["seg"].items():
                segs[method][sample.name] = seg
                if sample.gt is not None:
                    rows[method].append({"name": sample.name,
                                         **evaluate(seg, sample.gt, metrics=metrics)})
            _panel(out_dir / "panels" / f"{sample.name}.png", sample, result)
    _write_segmentations(out_dir, segs)
    writer = reader.SUBMISSIONS.get(args.mode)
    if writer is not None:
        for method in methods:
            print(f"submission: {writer(out_dir, segs[method])}")
    summary = [_write_scores(out_dir / f"score{'' if len(methods) == 1 else '_' + m}.txt", rows[m], m)
               for m in methods if rows[m]]
    print(f"panels: {out_dir / 'panels'}")
    for line in summary:
        print(line)
    return 0


def _write_scores(path: Path, rows: list[dict], method: str) -> str:
    """score.txt: one line per image, then mean and std; returns the one-line summary."""
    from pea.metrics import summarize

    means, stds = summarize(rows)
    keys = list(means)
    lines = ["name " + " ".join(keys)]
    lines += [r["name"] + " " + " ".join(f"{r[k]:.4f}" for k in keys) for r in rows]
    lines.append("mean " + " ".join(f"{means[k]:.4f}" for k in keys))
    lines.append("std " + " ".join(f"{stds[k]:.4f}" for k in keys))
    path.write_text("\n".join(lines) + "\n")
    return f"{method}: " + " ".join(f"{_label(k)}={means[k]:.4f}" for k in keys)


def _label(key: str) -> str:
    return {"sbd": "SBD", "abs_dic": "|DiC|", "dic": "DiC", "aji": "AJI", "aji_kumar": "AJI_Kumar", "dice": "Dice",
            "pq": "PQ", "dq": "F1", "sq": "SQ", "pq_official": "PQ_official", "sq_official": "SQ_official",
            "voi_split": "VOI_split", "voi_merge": "VOI_merge", "voi": "VOI", "arand": "ARAND"}.get(key, key)
