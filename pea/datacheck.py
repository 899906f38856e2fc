"""`pea check-data`: what a folder of 2D images or a list of volumes holds, and every problem
that would stop or spoil training, one line each; a PNG sheet of a few images with their
labels outlined. `pea train` runs the same checks first and refuses bad data.

    pea check-data --data DATA [--labels LABELS] [--preset PRESET] [--sheet PNG]

Problems: an image without labels or labels (or a mask) without an image, named; two files of
one stem; unreadable files; shape mismatches (image and labels, raw and labels); labels that
are not integer ids; binary masks in place of instance labels; labels without objects; float
intensities outside [0, 1]; images of different channel counts; a 3D volume (or its training
part) smaller than the training crop.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from pea.errors import PEAInputError

SHEET_TILES = 6  # images drawn on the sheet
TILE = 256  # each fitted into TILE x TILE pixels


@dataclass
class Report:
    """What `check` found: summary lines, problems (one line each), the input channels of the
    images, the sample names per split, and a few (name, image, labels) to draw."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    channels: int = 1
    names: dict[str, list[str]] = field(default_factory=dict)
    previews: list[tuple[str, np.ndarray, np.ndarray]] = field(default_factory=list)


# -- labels ----------------------------------------------------------------------------------
def label_problems(labels: np.ndarray, name: str) -> list[str]:
    """Labels without objects, or one id for several separate blobs (a binary mask)."""
    from scipy import ndimage

    ids = np.unique(labels)
    ids = ids[ids != 0]
    if not ids.size:
        return [f"{name}: no objects (every pixel is 0); instance labels give each object its own id > 0"]
    if ids.size == 1:
        blobs = ndimage.label(labels > 0)[1]
        if blobs > 1:
            return [f"{name}: one id for {blobs} separate blobs: a binary mask, not instance labels; "
                    f"give each object its own id (where objects do not touch: skimage.measure.label(mask > 0))"]
    return []


def touching(labels: np.ndarray) -> np.ndarray:
    """The ids of objects that touch another object (face neighbours along any axis)."""
    found = []
    for axis in range(labels.ndim):
        a = np.moveaxis(labels, axis, 0)
        lo, hi = a[:-1], a[1:]
        meet = (lo != hi) & (lo > 0) & (hi > 0)
        found += [lo[meet], hi[meet]]
    return np.unique(np.concatenate(found)) if found else np.zeros(0, labels.dtype)


@dataclass
class Stats:
    """Per image or volume: object count and sizes, background pixels, touching objects."""

    shapes: list[tuple[int, ...]] = field(default_factory=list)
    objects: list[int] = field(default_factory=list)
    sizes: list[np.ndarray] = field(default_factory=list)
    background: list[int] = field(default_factory=list)
    touching: list[int] = field(default_factory=list)

    def add(self, labels: np.ndarray) -> None:
        ids, counts = np.unique(labels, return_counts=True)
        self.shapes.append(labels.shape)
        self.objects.append(int((ids != 0).sum()))
        self.sizes.append(counts[ids != 0])
        self.background.append(int(counts[ids == 0].sum()))
        self.touching.append(len(touching(labels)))

    def lines(self, unit: str) -> list[str]:
        if not self.shapes:
            return []
        sizes = np.concatenate(self.sizes)
        shapes = sorted(self.shapes, key=lambda s: int(np.prod(s)))
        total = sum(int(np.prod(s)) for s in self.shapes)
        return [f"sizes: {_x(shapes[0])} .. {_x(shapes[-1])}",
                f"objects per {unit}: {_range(self.objects)}; object sizes: {_range(sizes)} px",
                f"background: {100 * sum(self.background) / max(total, 1):.1f}% of the pixels; touching objects: "
                f"{100 * sum(self.touching) / max(1, sizes.size):.0f}% of the objects touch another "
                f"(in {sum(t > 0 for t in self.touching)} of {len(self.shapes)} {unit}s)"]


def _x(shape: Sequence[int]) -> str:
    return "x".join(str(int(n)) for n in shape)


def _range(values) -> str:
    v = np.asarray(values)
    return f"{v.min()} .. {v.max()} (median {np.median(v):g})" if v.size else "-"


def _preview(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An image (H, W, C) in [0, 1] and its labels as an RGB uint8 tile within TILE x TILE."""
    from pea.data.common import resize

    scale = TILE / max(labels.shape)
    shape = (max(1, round(labels.shape[0] * scale)), max(1, round(labels.shape[1] * scale)))
    rgb = image if image.shape[-1] == 3 else np.repeat(image.mean(axis=-1, keepdims=True), 3, axis=-1)
    lo, hi = np.percentile(rgb, [0.5, 99.5])  # shown stretched, as the panels
    rgb = resize(((rgb - lo) / max(hi - lo, 1e-6)).astype(np.float32), shape, nearest=False, shrink=scale < 1)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8), resize(labels, shape, nearest=True)


# -- 2D --------------------------------------------------------------------------------------
def check_images(data: Mapping, crop_size: Sequence[int] | None = None) -> Report:
    """A folder of 2D images (`pea.data.folder`): DATA.data_dir, val_fraction, split_seed, percentiles."""
    from pea.data import folder

    found, problems = folder.splits(data)
    report, stats, channels = Report(problems=problems), Stats(), {}
    for split, pairs in found.items():
        report.names[split] = [p.stem for p in pairs]
        for pair in pairs:
            try:
                image, labels, _ = folder.read_pair(pair, data, None)
            except PEAInputError as err:
                report.problems.append(str(err))
                continue
            channels[pair.image] = image.shape[-1]
            if data["percentiles"] is None and image.size and not 0 <= image.min() <= image.max() <= 1:
                report.problems.append(f"{pair.image}: float values in [{image.min():g}, {image.max():g}]; store "
                                       f"integers, floats in [0, 1], or set DATA.percentiles (e.g. [1, 99.8])")
            report.problems += label_problems(labels, str(pair.labels))
            stats.add(labels)
            if len(report.previews) < SHEET_TILES:
                report.previews.append((pair.stem, *_preview(image, labels)))
    report.channels = _channels(channels, report.problems)
    val = "val/" if (Path(str(data["data_dir"])) / "val").exists() else \
        f"drawn: val_fraction {data['val_fraction']}, split_seed {data['split_seed']}"
    report.lines = [f"{data['data_dir']}: 2D images, {len(found['train'])} train, "
                    f"{len(found[folder.VALID_SPLIT])} validate ({val})",
                    *stats.lines("image"), f"channels: {_channel_line(channels)}"]
    small = sum(s[0] < crop_size[0] or s[1] < crop_size[1] for s in stats.shapes) if crop_size else 0
    if small:
        report.lines.append(f"note: {small} image(s) smaller than the training crop DATA.crop_size {list(crop_size)}: "
                            f"their crops are enlarged (--set DATA.crop_size=[H, W] for smaller crops)")
    return report


def _channels(found: Mapping[Path, int], problems: list[str]) -> int:
    """The network's input channels: the images' (grey ones are repeated to match)."""
    counts = sorted(set(found.values()) - {1})
    if len(counts) > 1:
        first = {c: next(p for p, n in found.items() if n == c) for c in counts}
        problems.append(f"{first[counts[-1]]}: {counts[-1]} channels, but {first[counts[0]]}: {counts[0]}; "
                        f"grey images may mix with one other channel count, no more")
    return counts[-1] if counts else 1


def _channel_line(found: Mapping[Path, int]) -> str:
    counts = {c: sum(n == c for n in found.values()) for c in sorted(set(found.values()))}
    names = {1: "grey", 3: "RGB"}
    return ", ".join(f"{n} image(s) {names.get(c, f'{c} channels')}" for c, n in counts.items()) or "-"


# -- 3D --------------------------------------------------------------------------------------
def check_volumes(data: Mapping, crop_size: Sequence[int] | None = None) -> Report:
    """A list of volumes (`pea.data.volume_list`): DATA.train, val, val_sections. Each volume
    is checked whole; without DATA.val, its first sections train and its last validate."""
    from pea.data import volume_list as vl

    report, stats = Report(names={"train": [], vl.VALID_SPLIT: []}), Stats()
    listed = [("train", item) for item in data["train"]] + [(vl.VALID_SPLIT, item) for item in data["val"]]
    vl.check_items(data)
    for split, item in listed:
        raw, labels = vl.volume_spec(item["raw"]), vl.volume_spec(item["labels"])
        try:
            image, ids = vl.read_item(item, None, None)
            held = 0 if data["val"] else vl.held_sections(ids.shape[0], data["val_sections"], raw)
        except PEAInputError as err:
            report.problems.append(str(err))
            continue
        train_shape = (ids.shape[0] - held, *ids.shape[1:])
        report.names[split].append(raw + (f" (sections 0-{train_shape[0] - 1})" if held else ""))
        if held:
            report.names[vl.VALID_SPLIT].append(f"{raw} (sections {train_shape[0]}-{ids.shape[0] - 1})")
        if split == "train" and crop_size and any(n < c for n, c in zip(train_shape, crop_size)):
            report.problems.append(f"{raw}: {'training sections' if held else 'volume'} of {_x(train_shape)}, "
                                   f"smaller than the training crop DATA.crop_size {list(crop_size)} "
                                   f"(--set DATA.crop_size=[Z, Y, X])")
        report.problems += label_problems(ids, labels)
        stats.add(ids)
        if len(report.previews) < SHEET_TILES:
            z = ids.shape[0] // 2
            report.previews.append((f"{vl.name(item)} z={z}", *_preview(image[z, ..., None], ids[z])))
    val = "val: list" if data["val"] else f"the last {data['val_sections'] or '10% of the'} sections of each"
    report.lines = [f"3D volumes: {len(report.names['train'])} train, {len(report.names[vl.VALID_SPLIT])} "
                    f"validate ({val})", *stats.lines("volume")]
    return report


def check(cfg: Mapping) -> Report:
    """The checks of the data a config's DATA section names (a folder or a list of volumes)."""
    data = cfg["DATA"]
    if data["dataset"] == "folder":
        return check_images(data, data["crop_size"])
    if data["dataset"] == "volumes":
        return check_volumes(data, data["crop_size"])
    raise PEAInputError(f"DATA.dataset {data['dataset']}: pea check-data reads folders of images and lists of volumes")


def write_sheet(path: str | Path, previews: Sequence[tuple[str, np.ndarray, np.ndarray]], columns: int = 3) -> None:
    """A PNG of the previews, each image with its objects outlined in their colours and its name."""
    import cv2
    from PIL import Image
    from skimage.segmentation import find_boundaries

    from pea.io import atomic_write
    from pea.visualize import color_labels

    tiles = []
    for name, rgb, labels in previews:
        tile = np.zeros((TILE, TILE, 3), np.uint8)
        edge = find_boundaries(labels, mode="inner") & (labels > 0)
        drawn = rgb.copy()
        drawn[edge] = color_labels(labels)[edge]
        tile[: drawn.shape[0], : drawn.shape[1]] = drawn
        cv2.putText(tile, name[:36], (4, TILE - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1, cv2.LINE_AA)
        tiles.append(tile)
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % columns) if tiles else [np.zeros((TILE, TILE, 3), np.uint8)]
    rows = [np.concatenate(tiles[i: i + columns], axis=1) for i in range(0, len(tiles), columns)]
    with atomic_write(path) as tmp:
        Image.fromarray(np.concatenate(rows, axis=0)).save(tmp, format="PNG")


def show(report: Report) -> None:
    """Print the summary (stdout), then each problem on its own line (stderr)."""
    for line in report.lines:
        print(line)
    for problem in report.problems:
        print(f"problem: {problem}", file=sys.stderr)


# -- the command -----------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    from pea.train_cli import add_data_arguments

    add_data_arguments(p)
    p.add_argument("--sheet", default="check-data.png", help="PNG of a few images with their labels outlined "
                                                             "(default: check-data.png)")


def run(args: argparse.Namespace) -> int:
    from pea.train_cli import run_config

    report = check(run_config(args))
    show(report)
    write_sheet(args.sheet, report.previews)
    print(f"sheet: {args.sheet}")
    if report.problems:
        raise PEAInputError(f"{len(report.problems)} problem(s) in {args.data}; pea train refuses this data")
    print("no problems found")
    return 0
