"""The per-data-set entry points `scripts_*/main.py` call these (`scripts_*/inference.py`:
`pea.inference_cli`).

Relative paths in a config (`../data`, `../models`, ...) are taken from the script's folder,
as in the paper code, wherever the command is started from.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence


from pea.config import Config, find_config, load_config, make_config, merge, yaml_load
from pea.config_checks import check_metrics
from pea.errors import PEAInputError, PEARunError
from pea import distributed
from pea.threads import configure_threads

PATH_KEYS = (("DATA", "data_dir"), ("TRAIN", "model_dir"), ("TEST", "trained_dir"), ("TEST", "out_dir"),
             ("MODEL", "pretrained"))


def script_config(script_dir: Path, name: str, overrides: Sequence[str]) -> Config:
    path = find_config(name, script_dir / "config")
    cfg = load_config(path)
    if overrides:
        cfg = make_config(merge(cfg.to_dict(), parse_overrides(overrides), "--set"))
    for section, key in PATH_KEYS:
        value = cfg[section][key]
        if value and not Path(value).is_absolute():
            cfg[section][key] = str((script_dir / value).resolve())
    return check_metrics(cfg, str(path))


def parse_overrides(items: Sequence[str]) -> dict:
    """`SECTION.key=value` strings (values parsed as YAML) -> nested dict."""
    out: dict = {}
    for item in items:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise PEAInputError(f"--set {item!r}: expected SECTION.key=value")
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        out.setdefault(section, {})[name] = yaml_load(value)
    return out


def check_threads(value: int | None) -> int | None:
    if value is not None and value < 1:
        raise PEAInputError(f"--threads {value}: expected a positive number")
    return value


def run_command(fn, argv) -> int:
    """Run a command: bad input and unusable paths are one line and exit 2, a run that cannot
    go on one line and exit 1."""
    try:
        return int(fn(argv) or 0)
    except PEAInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a read-only, missing or full place to write
        print(f"error: {err.filename or ''}{': ' if err.filename else ''}{err.strerror or err}", file=sys.stderr)
        return 2
    except PEARunError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


# -- training ------------------------------------------------------------------------------
def train_main(script_dir: str | Path, argv: Sequence[str] | None = None) -> int:
    """`main.py -c=NAME [--resume [CKPT]] [--run NAME] [--device DEV] [--set KEY=VALUE ...]`."""
    return run_command(lambda a: _train(Path(script_dir), a), argv)


def _train(script_dir: Path, argv) -> int:
    p = argparse.ArgumentParser(description="Train a PEA network (config/NAME.yaml).", allow_abbrev=False)
    p.add_argument("-c", "--cfg", required=True, help="config name in config/ (or a .yaml path)")
    p.add_argument("-m", "--mode", default="train", choices=["train"], help="train (the authors' flag)")
    p.add_argument("--run", default=None, help="run folder name under TRAIN.model_dir (default: NAME)")
    p.add_argument("--resume", nargs="?", const="last", default=None,
                   help="continue from the run's last.ckpt, or from the checkpoint given")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (overrides TRAIN.device)")
    p.add_argument("--threads", type=int, default=None,
                   help="PyTorch threads of the main process (default: every core, or OMP_NUM_THREADS)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.key=VALUE")
    args = p.parse_args(argv)
    cfg = script_config(script_dir, args.cfg, args.overrides)
    if args.device:
        cfg.TRAIN.device = args.device
    world = distributed.world()
    threads = configure_threads(check_threads(args.threads), cfg.DATA.num_workers)
    run_dir = Path(cfg.TRAIN.model_dir) / (args.run or cfg.NAME)
    if args.resume is None and any(run_dir.glob("*.ckpt")):
        raise PEAInputError(f"{run_dir} already holds checkpoints: pass --resume to continue, "
                            f"or --run NAME for a new run")
    from pea import settings

    trainer = settings.trainer(cfg, run_dir)
    if args.resume:
        trainer.resume(run_dir / "last.ckpt" if args.resume == "last" else args.resume)
    trainer.say(f"training {cfg.NAME} on {trainer.device} with {world.size} process(es); {threads}")
    trainer.say(f"run folder: {run_dir}" + (f"; resuming at iteration {trainer.iteration}" if args.resume else ""))
    try:
        best = trainer.run()
    finally:
        distributed.stop(trainer.world)
    trainer.say(f"best {cfg.TRAIN.select_metric} = {best['score']} at iteration {best['iteration']}; "
                f"checkpoints in {run_dir}")
    return 0


def untrained_main(script_dir: str | Path, argv: Sequence[str] | None = None) -> int:
    """`untrained.py -c=NAME [--run RUN]`: save the network a training run starts from (the
    config's seeded initial weights) as RUN/init.ckpt, to score it beside a trained one."""
    return run_command(lambda a: _untrained(Path(script_dir), a), argv)


def _untrained(script_dir: Path, argv) -> int:
    p = argparse.ArgumentParser(description="Save the initial (untrained) network as init.ckpt.")
    p.add_argument("-c", "--cfg", required=True, help="config name in config/ (or a .yaml path)")
    p.add_argument("--run", default=None, help="run folder under TRAIN.model_dir (default: NAME_untrained)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.key=VALUE")
    args = p.parse_args(argv)
    cfg = script_config(script_dir, args.cfg, args.overrides)
    from pea import settings
    from pea.checkpoint import save_checkpoint

    run_dir = Path(cfg.TRAIN.model_dir) / (args.run or f"{cfg.NAME}_untrained")
    model = settings.seeded_model(cfg.MODEL, cfg.TRAIN.seed)  # the weights a training run starts from
    save_checkpoint(run_dir / "init.ckpt", {"model_weights": model.state_dict(), "iteration": 0,
                                            "config": cfg.to_dict()})
    print(f"initial network: {run_dir / 'init.ckpt'}")
    return 0


# -- inference ---------------------------------------------------------------------------
def find_checkpoint(cfg: Config, model_name: str, ckpt_id: str) -> Path:
    """`-id` as a path, else TEST.trained_dir/MODEL/CKPT.ckpt, else TRAIN.model_dir/MODEL/CKPT.ckpt."""
    tried = [Path(ckpt_id)]
    for root in (cfg.TEST.trained_dir, cfg.TRAIN.model_dir):
        tried.append(Path(root) / model_name / (ckpt_id if ckpt_id.endswith(".ckpt") else f"{ckpt_id}.ckpt"))
    for path in tried:
        if path.is_file():
            return path
    raise PEAInputError("checkpoint not found; tried " + ", ".join(str(t) for t in tried))
