"""`pea train`: train a network on one's own data with a preset.

    pea train --data DATA --preset PRESET --out RUN [--iterations N] [--set SECTION.key=VALUE ...]
              [--resume] [--device DEV] [--val-fraction F] [--val-sections N] [--labels LABELS]

DATA is a folder of 2D images (images/, labels/, optional masks/ and val/; `pea.data.folder`),
a YAML list of volumes (`train:` and `val:` items `{raw: PATH[:KEY], labels: PATH[:KEY]}`,
paths relative to the list's folder; `pea.data.volume_list`), or one volume RAW with
`--labels LABELS`. PRESET is a preset (`pea.presets`), a shipped config name or a YAML path;
the network's input channels come from the images.

The data is checked first (`pea.datacheck`): problems are listed one per line and nothing is
written (exit 2). RUN then gets config.yaml, split.yaml (2D: the images of each split),
data.png (a few images with their labels outlined), log.txt, tensorboard/, panels/ (validation
panels), model-%06d.ckpt, last.ckpt and best.ckpt (each with its config: `pea predict --model
RUN/best.ckpt` needs nothing else). Under torchrun, rank 0 alone prints and writes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pea.errors import PEAInputError

LIST_SUFFIXES = (".yaml", ".yml")


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """The flags `pea train` and `pea check-data` share."""
    p.add_argument("--data", required=True, help="a folder of 2D images (images/, labels/), a YAML list of "
                                                 "volumes, or one volume (with --labels)")
    p.add_argument("--labels", default=None, help="the labels of the one volume --data names (PATH[:KEY])")
    p.add_argument("--preset", "--config", dest="preset", default=None,
                   help="nuclei, leaves, em, nuclei-small, leaves-small, em-small, a config name or a .yaml path")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="2D without val/: the share of the images that validates (default 0.1, at least one)")
    p.add_argument("--val-sections", type=int, default=None,
                   help="3D without a val: list: the last sections of each volume that validate (default 10%%)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.key=VALUE")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_arguments(p)
    p.add_argument("--out", required=True, help="the run folder (checkpoints, log, panels)")
    p.add_argument("--iterations", type=int, default=None, help="training iterations (TRAIN.iterations)")
    p.add_argument("--resume", action="store_true", help="continue from RUN/last.ckpt")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default: TRAIN.device)")


# -- the config ------------------------------------------------------------------------------
def _absolute(spec: str, folder: Path) -> str:
    """PATH[:KEY] with PATH taken from `folder` when relative."""
    from pea.io import H5_SUFFIXES
    from pea.volumes import CONTAINERS

    file, sep, key = str(spec).rpartition(":")
    path, key = (file, key) if sep and file.lower().endswith(H5_SUFFIXES + CONTAINERS) else (str(spec), "")
    return str((folder / path).resolve()) + (f":{key}" if key else "")


def volume_list(path: Path) -> dict:
    """DATA.train and DATA.val of a YAML list of volumes, paths made absolute."""
    from pea.config import yaml_load

    try:
        listed = yaml_load(path.read_text())
    except OSError as err:
        raise PEAInputError(f"{path}: cannot read ({err.strerror})") from None
    except Exception as err:  # YAML syntax
        raise PEAInputError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(listed, dict) or not listed.get("train") or set(listed) - {"train", "val"}:
        raise PEAInputError(f"{path}: expected 'train:' (and optionally 'val:'), each a list of "
                            f"{{raw: PATH[:KEY], labels: PATH[:KEY]}}")
    out = {}
    for split in ("train", "val"):
        items = listed.get(split) or []
        if not isinstance(items, list):
            raise PEAInputError(f"{path}: '{split}:' must be a list of {{raw: PATH[:KEY], labels: PATH[:KEY]}}")
        for i, item in enumerate(items):
            if not isinstance(item, dict) or set(item) != {"raw", "labels"}:
                raise PEAInputError(f"{path}: {split}[{i}] = {item!r}: expected "
                                    f"{{raw: PATH[:KEY], labels: PATH[:KEY]}}")
        out[split] = [{k: _absolute(str(v), path.parent) for k, v in item.items()} for item in items]
    return out


def data_section(args: argparse.Namespace) -> tuple[str, dict]:
    """The reader (folder | volumes) and the DATA values --data, --labels and the split flags give."""
    data = Path(args.data)
    if args.labels is not None:
        dataset, values = "volumes", {"train": [{"raw": _absolute(args.data, Path.cwd()),
                                                 "labels": _absolute(args.labels, Path.cwd())}], "val": []}
    elif data.suffix.lower() in LIST_SUFFIXES:
        if not data.is_file():
            raise PEAInputError(f"--data {data}: no such file")
        dataset, values = "volumes", volume_list(data)
    elif data.is_dir():
        dataset, values = "folder", {"data_dir": str(data.resolve())}
    else:
        raise PEAInputError(f"--data {args.data}: neither a folder of images (images/, labels/), a YAML list of "
                            f"volumes, nor a volume with --labels")
    if args.val_fraction is not None:
        values["val_fraction"] = args.val_fraction
    if args.val_sections is not None:
        values["val_sections"] = args.val_sections
    if dataset == "folder" and args.val_sections is not None or dataset == "volumes" and args.val_fraction is not None:
        raise PEAInputError(f"--val-{'sections' if dataset == 'folder' else 'fraction'}: "
                            f"for {'volumes' if dataset == 'folder' else 'folders of 2D images'} only")
    return dataset, values


def notice(line: str) -> None:
    """A notice on stderr (rank 0 alone under torchrun)."""
    from pea import distributed

    if distributed.world().main:
        print(f"notice: {line}", file=sys.stderr)


def run_config(args: argparse.Namespace):
    """The config of a run: the preset moved onto the data's reader, the data, the flags, --set
    (without a preset, `pea check-data`: the reader's defaults)."""
    from pea import settings
    from pea.config import make_config, merge
    from pea.config_checks import check_metrics
    from pea.presets import NAMES, for_reader, preset_dict
    from pea.scripts import parse_overrides

    dataset, data = data_section(args)
    preset = preset_dict(args.preset) if args.preset else {}
    dims = len(settings.offsets(preset.get("DATA") or {})[0][0]) if args.preset else None
    if dims not in (None, 3 if dataset == "volumes" else 2):
        raise PEAInputError(f"--preset {args.preset} trains {dims}D networks, but --data {args.data} holds "
                            f"{'volumes' if dataset == 'volumes' else '2D images'} "
                            f"(presets: nuclei, leaves: 2D; em: 3D)")
    cfg, dropped = for_reader(preset, dataset)
    if dropped and args.preset not in NAMES:
        notice(f"--preset {args.preset}: DATA keys a {dataset} reader does not read are left out: {', '.join(dropped)}")
    over = {"DATA": data, "TRAIN": {}}
    if getattr(args, "iterations", None) is not None:
        over["TRAIN"]["iterations"] = args.iterations
    if getattr(args, "device", None):
        over["TRAIN"]["device"] = args.device
    if getattr(args, "out", None):
        over["NAME"] = Path(args.out).name
    cfg = make_config(merge(make_config(cfg, f"--preset {args.preset}").to_dict(), over, "--data"), "--data")
    return check_metrics(make_config(merge(cfg.to_dict(), parse_overrides(args.overrides), "--set"), "--set"), "--set")


def with_channels(cfg, channels: int, overrides) -> None:
    """The images' channels (or the --set DATA.channels) as DATA.channels and MODEL.in_channels;
    ImageNet normalisation only for three channels (else unit)."""
    if cfg.DATA.dataset != "folder":
        return
    if any(o.startswith("DATA.channels=") for o in overrides):
        channels = cfg.DATA.channels
    cfg.DATA.channels = cfg.MODEL.in_channels = channels
    if cfg.DATA.normalize == "imagenet" and channels != 3:
        notice(f"DATA.normalize imagenet takes 3 channels, the images have {channels}: normalising as 'unit' "
               f"((x - 0.5) / 0.25)")
        cfg.DATA.normalize = "unit"


# -- the run ---------------------------------------------------------------------------------
def _check_run_dir(run_dir: Path, resume: bool, split: dict) -> None:
    """A new run needs a folder without checkpoints; a resumed one its last.ckpt and the same split."""
    import yaml

    if not resume and any(run_dir.glob("*.ckpt")):
        raise PEAInputError(f"--out {run_dir} already holds checkpoints: pass --resume to continue, or another --out")
    if resume and not (run_dir / "last.ckpt").is_file():
        raise PEAInputError(f"--resume: {run_dir / 'last.ckpt'} not found")
    record = run_dir / "split.yaml"
    if resume and split and record.is_file() and yaml.safe_load(record.read_text()) != split:
        raise PEAInputError(f"{record}: the images of each split have changed since the run started; "
                            f"start a new run (another --out)")


def _write_records(run_dir: Path, cfg, split: dict, report) -> None:
    import yaml

    from pea.datacheck import write_sheet
    from pea.io import atomic_write

    run_dir.mkdir(parents=True, exist_ok=True)
    for name, value in (("config.yaml", cfg.to_dict()), ("split.yaml", split)):
        if value:
            with atomic_write(run_dir / name) as tmp:
                tmp.write_text(yaml.safe_dump(value, sort_keys=False))
    write_sheet(run_dir / "data.png", report.previews)


def run(args: argparse.Namespace) -> int:
    from pea import distributed, settings
    from pea.datacheck import check, show
    from pea.threads import configure_threads

    world = distributed.world()
    if not args.preset:
        raise PEAInputError("--preset: name one (nuclei, leaves, em, nuclei-small, leaves-small, em-small), a config "
                            "name or a .yaml path")
    if args.iterations is not None and args.iterations < 1:
        raise PEAInputError(f"--iterations {args.iterations}: expected a positive number")
    cfg = run_config(args)
    report = check(cfg)
    if world.main:
        show(report)
    if report.problems:
        raise PEAInputError(f"{len(report.problems)} problem(s) in {args.data} (listed above); nothing was written")
    with_channels(cfg, report.channels, args.overrides)
    run_dir = Path(args.out)
    split = report.names if cfg.DATA.dataset == "folder" else {}
    _check_run_dir(run_dir, args.resume, split)
    threads = configure_threads(None, cfg.DATA.num_workers)
    trainer = settings.trainer(cfg, run_dir)
    if world.main:
        _write_records(run_dir, cfg, split, report)
    if args.resume:
        trainer.resume(run_dir / "last.ckpt")
    trainer.say(f"training {cfg.NAME} ({args.preset}) on {trainer.device}, {world.size} "
                f"process(es), {cfg.TRAIN.iterations} iterations; {threads}")
    trainer.say(f"run folder: {run_dir}" + (f"; resuming at iteration {trainer.iteration}" if args.resume else ""))
    try:
        best = trainer.run()
    finally:
        distributed.stop(trainer.world)
    if best.get("why"):
        trainer.say(f"best.ckpt: iteration {best['iteration']}, {best['why']}; its scores: "
                    + " ".join(f"{k}={v:.4f}" for k, v in best["scores"].items()))
    trainer.say(f"segment new data with: pea predict --model {run_dir / 'best.ckpt'} --input IN --output OUT")
    return 0
