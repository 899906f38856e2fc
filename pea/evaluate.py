"""`pea evaluate PRED GT`: score predicted label images against ground truth.

PRED and GT are two label files (png, tif, npy, or h5 as FILE.h5:DATASET; see `pea.io`) or two
folders, matched by file name without extension (one row per ground-truth file, then the mean
and the population std over files). Metrics come from `pea.metrics.evaluate`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys


from pea.errors import PEAInputError
from pea.io import LABEL_SUFFIXES, read_labels, split_h5_path
from pea.metrics import METRIC_KEYS, evaluate, select_metrics, summarize

METRICS_HELP = (
    "comma-separated metrics (default: all). Families: sbd (symmetric best Dice), "
    "best_dice (BestDice(pred, gt)), fg_bg_dice (foreground Dice), dic (dic, abs_dic), "
    "aji (as the paper's code: each prediction taken once), aji_kumar (Kumar et al.: "
    "predictions may be taken again), dice (foreground pixel F1), pq (pq, dq, sq), "
    "pq_official (pq_official, sq_official: SQ over TP + 1e-6, as the paper's code), "
    "ap (ap50, ap75: TP/(TP+FP+FN) at IoU 0.5, 0.75), voi (voi_split, voi_merge, voi), "
    "arand (adapted Rand error). Any output key alone (e.g. abs_dic, voi_merge), f1 (object "
    "F1 at IoU 0.5, the key dq) or 'all' also work. VOI and ARAND ignore gt label 0."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Two folders are matched by file name without extension (e.g. pred/plant001.tif with "
        "gt/plant001.png); every gt file needs a prediction. Label files: palette PNGs give their "
        "indices, RGB PNGs one id per colour (black = 0); an h5 file with one dataset needs no "
        ":DATASET. Label 0 is background. Bad input: a one-line error and exit code 2."
    )
    parser.add_argument("pred", metavar="PRED",
                        help="predicted labels: a file (png, tif, npy, FILE.h5:DATASET) or a folder")
    parser.add_argument("gt", metavar="GT", help="ground-truth labels: a file of the same shape, or a folder")
    parser.add_argument("--metrics", default="all", help=METRICS_HELP)
    parser.add_argument("--aji-ids", dest="aji_ids", choices=("present", "range"), default="present",
                        help="AJI over the ground-truth ids present (default) or every id 1..max as the "
                             "paper's code (range: a missing id 1 costs prediction 1)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (for folders: {'files': [rows], 'mean': ..., 'std': ...})")


def _score(pred_path: str, gt_path: str, metrics: str, aji_ids: str = "present") -> dict[str, float]:
    pred, gt = read_labels(pred_path), read_labels(gt_path)
    if pred.shape != gt.shape:
        raise PEAInputError(f"{pred_path}: shape {pred.shape} differs from {gt_path}: shape {gt.shape}")
    return evaluate(pred, gt, metrics, aji_ids=aji_ids)


def _label_files(folder: str) -> dict[str, str]:
    """Label files of `folder` by name without extension."""
    files: dict[str, str] = {}
    for name in sorted(os.listdir(folder)):
        stem, suffix = os.path.splitext(name)
        if suffix.lower() in LABEL_SUFFIXES and os.path.isfile(os.path.join(folder, name)):
            if stem in files:
                raise PEAInputError(f"{folder}: {os.path.basename(files[stem])} and {name} have the same name")
            files[stem] = os.path.join(folder, name)
    return files


def _pairs(pred_dir: str, gt_dir: str) -> list[tuple[str, str, str]]:
    preds, gts = _label_files(pred_dir), _label_files(gt_dir)
    if not gts:
        raise PEAInputError(f"{gt_dir}: no label files ({', '.join(LABEL_SUFFIXES)})")
    missing = [name for name in gts if name not in preds]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise PEAInputError(f"{pred_dir}: no prediction for {len(missing)} ground-truth file(s): {shown}")
    extra = sorted(set(preds) - set(gts))
    if extra:
        print(f"pea evaluate: note: {len(extra)} file(s) in {pred_dir} have no ground truth and are skipped",
              file=sys.stderr)
    return [(name, preds[name], gts[name]) for name in gts]


def _fmt(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def _print_table(rows: list[tuple[str, dict[str, float]]]) -> None:
    keys = [k for k in METRIC_KEYS if k in rows[0][1]]
    width = max(len(name) for name, _ in rows)
    cells = [[_fmt(vals[k]) for k in keys] for _, vals in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    print("  ".join([" " * width] + [k.rjust(w) for k, w in zip(keys, widths)]))
    for (name, _), c in zip(rows, cells):
        print("  ".join([name.ljust(width)] + [v.rjust(w) for v, w in zip(c, widths)]))


def run(args: argparse.Namespace) -> int:
    for path in (args.pred, args.gt):
        if not os.path.exists(split_h5_path(path)[0]):
            raise PEAInputError(f"{path}: no such file or folder")
    pred_is_dir = os.path.isdir(split_h5_path(args.pred)[0])
    gt_is_dir = os.path.isdir(split_h5_path(args.gt)[0])
    if pred_is_dir != gt_is_dir:
        folder, other = (args.pred, args.gt) if pred_is_dir else (args.gt, args.pred)
        raise PEAInputError(f"{folder} is a folder but {other} is not: give two files or two folders")
    select_metrics(args.metrics)
    if not pred_is_dir:
        values = _score(args.pred, args.gt, args.metrics, args.aji_ids)
        if args.json:
            print(json.dumps(values))
        else:
            width = max(len(k) for k in values)
            for key, value in values.items():
                print(f"{key.ljust(width)}  {_fmt(value)}")
        return 0
    rows = [(name, _score(p, g, args.metrics, args.aji_ids)) for name, p, g in _pairs(args.pred, args.gt)]
    mean, std = summarize([vals for _, vals in rows])
    if args.json:
        print(json.dumps({"files": [{"name": name, **vals} for name, vals in rows], "mean": mean, "std": std}))
    else:
        _print_table(rows + [("mean", mean), ("std", std)])
    return 0

