"""The inference entry points `scripts_*/inference.py`, with the authors' command lines
(docs/method.md section 11): `image_inference_main` for the 2D scripts, `volume_inference_main`
for the 3D one. Outputs go to TEST.out_dir/<model_name>/<mode>/affs_<model_id>/.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import h5py
import numpy as np

from pea.config import PARTITIONERS
from pea.errors import PEAInputError
from pea.io import atomic_write, remove_stale

LABELS = {"sbd": "SBD", "abs_dic": "|DiC|", "dic": "DiC", "aji": "AJI", "aji_kumar": "AJI_Kumar", "dice": "Dice",
          "pq": "PQ", "dq": "F1", "sq": "SQ", "pq_official": "PQ_official", "sq_official": "SQ_official",
          "voi_split": "VOI_split", "voi_merge": "VOI_merge", "voi": "VOI", "arand": "ARAND"}


def partitioner_list(text: str) -> list[str]:
    """`--partitioner mutex,waterz,lmc`: names separated by commas, each known, none twice."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in PARTITIONERS]
    if not names or unknown or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{text!r}: expected one or more of {', '.join(PARTITIONERS)}, "
                                         f"separated by commas, each once")
    return names


def add_partitioner_flag(p: argparse.ArgumentParser, default: str = "TEST.partitioners") -> None:
    """The project's one flag for choosing partitioners (`pea predict` and the 2D scripts)."""
    p.add_argument("--partitioner", type=partitioner_list, default=None, metavar="NAMES",
                   help=f"partitioners, comma-separated: mutex (Mutex Watershed), waterz, lmc (lifted "
                        f"multicut) (default: {default})")


def _parser(description: str) -> argparse.ArgumentParser:
    """The arguments every inference script takes (the authors' short forms first)."""
    p = argparse.ArgumentParser(description=description, allow_abbrev=False)
    p.add_argument("-c", "--cfg", required=True, help="config name in config/ (or a .yaml path)")
    p.add_argument("-mn", "--model_name", required=True, help="folder under ../trained_models (or ../models)")
    p.add_argument("-id", "--model_id", required=True, help="checkpoint name without .ckpt, or a path")
    p.add_argument("-m", "--mode", required=True, help="the split to segment")
    p.add_argument("-s", "--save", action="store_true", help="also write affs.hdf")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=None, help="PyTorch threads (default: every core)")
    p.add_argument("--max-images", type=int, default=None, help="segment only the first N images")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.key=VALUE")
    return p


def image_parser() -> argparse.ArgumentParser:
    """scripts_cvppp / scripts_bbbc039v1: `-s -sw -se -ne -sn -sd -nb -sf -sbd` as the authors'."""
    p = _parser("Segment a split of 2D images with a trained PEA network.")
    p.add_argument("-sw", "--show", action="store_false", help="do NOT write the panels (written by default)")
    p.add_argument("-se", "--show_embedding", action="store_true", help="panels show the embedding (3 PCA axes)")
    p.add_argument("-ne", "--norm_embedding", action="store_true", help="L2-normalise the embedding shown")
    p.add_argument("-sn", "--show_num", type=int, default=4, help="panels show affinity channel -N (default 4)")
    p.add_argument("-sd", "--stride", type=int, default=None, help="Mutex Watershed stride N (both axes)")
    p.add_argument("-nb", "--neighbor", type=int, default=None, help="4 or 8 (overrides DATA.neighbor)")
    p.add_argument("-sf", "--shifts", type=str, default=None, help='e.g. "1,3,5,9,27" (overrides DATA.shifts)')
    p.add_argument("-sbd", "--if_sbd", action="store_false", help="do NOT compute SBD")
    add_partitioner_flag(p)
    return p


def volume_parser() -> argparse.ArgumentParser:
    """scripts_ac3ac4: `-ts -pm -sw -mutex -waterz -lmc` as the authors' script has them (there the
    multicut runs unless -lmc is given, and -waterz and -mutex add those)."""
    p = _parser("Segment a volume with a trained PEA network.")
    p.add_argument("-ts", "--test_split", type=int, default=20, help="mode ac4: segment its last N sections")
    p.add_argument("-pm", "--pixel_metric", action="store_true", help="also score the nearest affinities (MSE, BCE, F1)")
    p.add_argument("-sw", "--show", action="store_true",
                   help="(this script) write the nearest affinities of every section as PNG")
    p.add_argument("-mutex", "--mutex", action="store_true", help="(this script) also run the Mutex Watershed")
    p.add_argument("-waterz", "--waterz", action="store_true", help="(this script) also run waterz")
    p.add_argument("-lmc", "--lmc", action="store_false",
                   help="(this script, as the authors') do NOT run the multicut, which runs by default")
    return p


def _apply_image_flags(cfg, args) -> None:
    if args.stride is not None:
        cfg.TEST.strides = [args.stride, args.stride]
    if args.neighbor is not None:
        cfg.DATA.neighbor = args.neighbor
    if args.shifts is not None:
        try:
            cfg.DATA.shifts = [int(v) for v in args.shifts.split(",")]
        except ValueError:
            raise PEAInputError(f"-sf/--shifts {args.shifts!r}: expected integers separated by commas") from None


@dataclass
class Loaded:
    """What an inference run works with."""

    cfg: object
    reader: object
    model: object
    device: object
    samples: list
    out_dir: Path


@dataclass
class Outputs:
    """Segmentations and score rows per method; affinities (when kept) and masks per image."""

    segs: dict
    rows: dict
    affs: dict
    masks: dict


def _segment_split(run: Loaded, methods: Sequence[str], metrics: Sequence[str], keep_affs: bool,
                   on_sample: Callable) -> Outputs:
    """Segment and score every sample, calling `on_sample(sample, result)` after each."""
    from tqdm import tqdm

    from pea import settings
    from pea.inference import segment_sample
    from pea.metrics import evaluate

    offsets, _ = settings.offsets(run.cfg.DATA)
    options = {"predict_options": settings.predict_options(run.cfg),
               "segment_options": settings.segment_options(run.cfg.TEST, methods)}
    scoring = settings.metric_options(run.cfg.TEST)
    out = Outputs({m: {} for m in methods}, {m: [] for m in methods}, {}, {})
    for sample in tqdm(run.samples, desc="segmenting"):
        result = segment_sample(run.model, sample, offsets, device=run.device, **options)
        if keep_affs:
            out.affs[sample.name] = result["affs"]
        if result["mask"] is not None:
            out.masks[sample.name] = result["mask"]
        for method, seg in result["seg"].items():
            out.segs[method][sample.name] = seg
            if sample.gt is not None:
                scores = evaluate(seg, sample.gt, metrics=list(metrics), **scoring)
                out.rows[method].append({"name": sample.name, **scores})
        on_sample(sample, result)
    return out


def _load(script_dir: Path, args, apply_flags: Callable) -> Loaded:
    """Config (with the flags applied), network, device, reader and samples; the output folder."""
    from pea.data import get_reader
    from pea.inference import select_device
    from pea.scripts import check_threads, find_checkpoint, script_config
    from pea.threads import configure_threads
    from pea.checkpoint import load_checkpoint, model_from_checkpoint

    if args.max_images is not None and args.max_images < 1:
        raise PEAInputError(f"--max-images {args.max_images}: expected a positive number")
    cfg = script_config(script_dir, args.cfg, args.overrides)
    apply_flags(cfg, args)
    print(configure_threads(check_threads(args.threads)))
    device = select_device(args.device or cfg.TRAIN.device)
    path = find_checkpoint(cfg, args.model_name, args.model_id)
    model, ckpt_cfg = model_from_checkpoint(load_checkpoint(path), device, str(path))
    cfg.MODEL = ckpt_cfg.MODEL  # the network is the checkpoint's
    reader = get_reader(cfg.DATA.dataset)
    samples = reader.load_split(cfg.DATA, args.mode)
    if args.max_images is not None:
        samples = samples[: args.max_images]
    out_dir = Path(cfg.TEST.out_dir) / args.model_name / args.mode / f"affs_{Path(args.model_id).stem}"
    out_dir.mkdir(parents=True, exist_ok=True)
    for folder in (out_dir, out_dir / "panels", out_dir / "affs_img"):
        remove_stale(folder)
    print(f"checkpoint: {path}\nwriting to: {out_dir}")
    return Loaded(cfg, reader, model, device, samples, out_dir)


def write_stack(path: Path, arrays: dict[str, np.ndarray], dtype, extra: dict | None = None,
                single: bool = False) -> None:
    """HDF5 with dataset 'main': the arrays stacked in order (with `single`, one array is
    written as itself), or, when their shapes differ, one dataset per name; 'names' lists the
    names in order."""
    names = list(arrays)
    values = [np.asarray(arrays[n]).astype(dtype) for n in names]
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as f:
        if single and len(values) == 1:
            f.create_dataset("main", data=values[0], compression="gzip")
        elif len({v.shape for v in values}) == 1:
            f.create_dataset("main", data=np.stack(values), compression="gzip")
        else:
            for name, value in zip(names, values):
                f.create_dataset(name, data=value, compression="gzip")
        f.create_dataset("names", data=np.array(names, dtype=h5py.string_dtype()))
        for key, value in (extra or {}).items():
            f.create_dataset(key, data=value, compression="gzip")


def write_text(path: Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def write_scores(path: Path, rows: list[dict], method: str) -> str:
    """A score table: one line per image, then mean and std; returns the one-line summary."""
    from pea.metrics import summarize

    means, stds = summarize(rows)
    keys = list(means)
    lines = ["name " + " ".join(keys)]
    lines += [r["name"] + " " + " ".join(f"{r[k]:.4f}" for k in keys) for r in rows]
    lines.append("mean " + " ".join(f"{means[k]:.4f}" for k in keys))
    lines.append("std " + " ".join(f"{stds[k]:.4f}" for k in keys))
    write_text(path, "\n".join(lines) + "\n")
    return f"{method}: " + " ".join(f"{LABELS.get(k, k)}={means[k]:.4f}" for k in keys)


# -- 2D ------------------------------------------------------------------------------------
def image_inference_main(script_dir: str | Path, argv: Sequence[str] | None = None) -> int:
    """`inference.py -c=NAME -mn=MODEL -id=CKPT -m=validation|test [-s] [-sw] [-se] [-ne]
    [-sn N] [-sd N] [-nb 4|8] [-sf SHIFTS] [-sbd]`."""
    from pea.scripts import run_command

    return run_command(lambda a: _image_inference(Path(script_dir), image_parser().parse_args(a)), argv)


def _image_inference(script_dir: Path, args) -> int:
    from pea import settings
    from pea.config import reported_metrics
    from pea.metrics import select_metrics

    run = _load(script_dir, args, _apply_image_flags)
    channels = len(settings.offsets(run.cfg.DATA)[0])
    if args.show and not args.show_embedding and not 1 <= args.show_num <= channels:
        raise PEAInputError(f"-sn/--show_num {args.show_num}: the affinities have {channels} channels (1..{channels})")
    methods = args.partitioner or list(run.cfg.TEST.partitioners)
    metrics = [k for k in select_metrics(reported_metrics(run.cfg, run.reader)) if args.if_sbd or k != "sbd"]
    panels = run.out_dir / "panels"
    out = _segment_split(run, methods, metrics, args.save,
                         _panel_writer(panels, args, run) if args.show else (lambda s, r: None))
    for method in methods:
        suffix = "" if len(methods) == 1 else f"_{method}"
        write_stack(run.out_dir / f"seg{suffix}.hdf", out.segs[method], np.uint32)
    if args.save:
        masks = [out.masks.get(n) for n in out.affs]
        extra = {"mask": np.stack(masks).astype(np.float32)} if masks and all(m is not None for m in masks) else None
        write_stack(run.out_dir / "affs.hdf", out.affs, np.float32, extra)
    writer = run.reader.SUBMISSIONS.get(args.mode)
    if writer is not None:
        print(f"submission: {writer(run.out_dir, out.segs[methods[0]], run.cfg.DATA)}")
    summary = [write_scores(run.out_dir / f"score{'' if len(methods) == 1 else '_' + m}.txt", out.rows[m], m)
               for m in methods if out.rows[m]]
    if args.show:
        print(f"panels: {panels}")
    for line in summary:
        print(line)
    return 0


def _panel_writer(folder: Path, args, run: Loaded):
    """A callback writing each sample's panel (affinity channel -N, or the embedding)."""
    from pea.visualize import save_panel

    def write(sample, result) -> None:
        seg = next(iter(result["seg"].values()))
        if args.show_embedding:
            middle = _embedding_rgb(run.model, sample, run.cfg, run.device, args.norm_embedding)
        else:
            middle = result["affs"][-args.show_num]
        save_panel(folder / f"{sample.name}.png", sample.image, middle, seg, sample.gt)

    return write


def _embedding_rgb(model, sample, cfg, device, normalise: bool) -> np.ndarray:
    """The full-resolution embedding of a sample as (H, W, 3): its first three principal axes."""
    import torch

    from pea.data.common import pad_to, padded_shape
    from pea.inference import to_input

    image = sample.image
    padded, crop = pad_to(image, padded_shape(image.shape[:-1], cfg.DATA.padded_size), cfg.DATA.pad_mode)
    with torch.no_grad():
        emb = model(to_input(padded, cfg.DATA.normalize, device))["embeddings"][0][0]
    if normalise:
        emb = torch.nn.functional.normalize(emb, dim=0)
    emb = emb[(slice(None),) + crop].float().cpu().numpy()
    flat = emb.reshape(emb.shape[0], -1).T
    flat = flat - flat.mean(0)
    axes = np.linalg.svd(flat, full_matrices=False)[2][:3]
    return (flat @ axes.T).reshape(emb.shape[1:] + (-1,))


# -- 3D ------------------------------------------------------------------------------------
def volume_inference_main(script_dir: str | Path, argv: Sequence[str] | None = None) -> int:
    """`inference.py -c=NAME -mn=MODEL -id=CKPT -m=ac3|ac4 [-ts N] [-pm] [-sw] [-mutex] [-waterz] [-lmc]`."""
    from pea.scripts import run_command

    return run_command(lambda a: _volume_inference(Path(script_dir), volume_parser().parse_args(a)), argv)


def _apply_volume_flags(cfg, args) -> None:
    if "test_split" in cfg.DATA:
        cfg.DATA.test_split = args.test_split


def _volume_inference(script_dir: Path, args) -> int:
    from pea import settings
    from pea.config import reported_metrics

    methods = [m for m, on in (("waterz", args.waterz), ("lmc", args.lmc), ("mutex", args.mutex)) if on]
    if not methods:
        raise PEAInputError("-lmc switches the multicut off and neither -waterz nor -mutex is given: nothing to do")
    run = _load(script_dir, args, _apply_volume_flags)
    offsets, _ = settings.offsets(run.cfg.DATA)
    show = (lambda s, r: _section_images(run.out_dir / "affs_img", r["affs"])) if args.show else (lambda s, r: None)
    out = _segment_split(run, methods, reported_metrics(run.cfg, run.reader), args.save or args.pixel_metric, show)
    for method in methods:
        write_stack(run.out_dir / f"seg_{method}.hdf", out.segs[method], np.uint64, single=True)
    if args.save:
        write_stack(run.out_dir / "affs.hdf", out.affs, np.float32, single=True)
    summary = [write_scores(run.out_dir / f"score_{m}.txt", out.rows[m], m) for m in methods if out.rows[m]]
    if args.pixel_metric:
        summary += [_pixel_line(s, out.affs[s.name], run.cfg.LOSS.background, offsets)
                    for s in run.samples if s.gt is not None]
    write_text(run.out_dir / "scores.txt", "".join(line + "\n" for line in summary))
    for line in summary:
        print(line)
    return 0


def _pixel_line(sample, affs: np.ndarray, background: str, offsets) -> str:
    """MSE, BCE and F1 of the nearest affinities (the first channel per axis, thresholded at
    0.5) against the targets of the labels, and F1 of the boundaries (1 - affinity)."""
    import torch

    from pea.affinity import affinity_targets

    nearest = list(range(len(offsets[0])))
    target, mask = affinity_targets(torch.from_numpy(sample.gt.astype(np.int64))[None],
                                    [offsets[c] for c in nearest], background)
    target, mask = target[0].numpy() > 0.5, mask[0].numpy() > 0.5
    pred = affs[nearest][mask]
    truth = target[mask]
    mse = float(np.mean((pred - truth) ** 2))
    p = np.clip(pred, 1e-6, 1 - 1e-6)
    bce = float(-np.mean(truth * np.log(p) + (1 - truth) * np.log(1 - p)))
    return (f"pixel {sample.name}: MSE={mse:.6f} BCE={bce:.6f} F1={_f1(pred > 0.5, truth):.6f} "
            f"F1_boundary={_f1(pred <= 0.5, ~truth):.6f}")


def _f1(pred: np.ndarray, truth: np.ndarray) -> float:
    tp = float(np.sum(pred & truth))
    return 2 * tp / max(float(pred.sum() + truth.sum()), 1.0)


def _section_images(folder: Path, affs: np.ndarray) -> None:
    """PNG per section: the three nearest-neighbour affinity channels side by side."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    images = (np.clip(affs[:3], 0, 1) * 255).astype(np.uint8)
    for z in range(images.shape[1]):
        with atomic_write(folder / f"{z:04d}.png") as tmp:
            Image.fromarray(np.concatenate(list(images[:, z]), axis=1)).save(tmp)
