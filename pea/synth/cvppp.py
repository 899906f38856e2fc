"""CVPPP A1 look-alike: top-view leaf rosettes on soil in the real train/test/valid_set layout.

Every plant is a rosette of similar leaves that share one green hue; leaves are told apart by
shape, shading, a faint midrib, a darker margin and the soft shadow a leaf casts on the leaves
below it, as in the real data, not by colour. Each image comes from its own rng seeded with
(seed, plant number), so an image does not depend on how many others are written.
"""
from __future__ import annotations

import argparse
import colorsys
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from skimage.measure import label as connected_components
from PIL import Image

from pea.errors import PEAInputError
from pea.noise import smooth_noise

GOLDEN_ANGLE = np.deg2rad(137.508)
MIN_VISIBLE_AREA = 300  # px at 530 x 500 (scaled with the image area); smaller leaves are dropped


class _Leaf(NamedTuple):
    """One rendered leaf on the window [y0:y0+h, x0:x0+w] of the image."""

    y0: int
    x0: int
    alpha: np.ndarray  # (h, w) float32 coverage, >= 0.5 inside the leaf
    shade: np.ndarray  # (h, w) float32 brightness factor
    shadow: np.ndarray  # (h, w) float32 soft shadow the leaf casts
    colour: np.ndarray  # (3,) float32 RGB in [0, 1]


def _hsv(h_deg: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h_deg / 360.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1))),
                    dtype=np.float32)


def _soil(rng: np.random.Generator, height: int, width: int, centre: tuple[float, float],
          scale: float) -> np.ndarray:
    """Soil with clods and perlite specks, optionally inside a pot with a rim and a dark tray."""
    if rng.random() < 0.6:  # brown potting soil
        base = _hsv(rng.uniform(18, 36), rng.uniform(0.3, 0.55), rng.uniform(0.22, 0.42))
    else:  # dark, nearly black soil
        base = _hsv(rng.uniform(15, 40), rng.uniform(0.15, 0.4), rng.uniform(0.10, 0.22))
    shape = (height, width)
    value = (1.0 + 0.22 * smooth_noise(rng, shape, 0.7 * scale)
             + 0.14 * smooth_noise(rng, shape, 2.5 * scale) + 0.12 * smooth_noise(rng, shape, 12 * scale))
    clods = smooth_noise(rng, shape, 6 * scale)
    value *= 1.0 - 0.35 * np.clip(clods - 0.8, 0, 1.2)
    soil = base[None, None, :] * np.clip(value, 0.2, 2.5)[..., None]
    grains = rng.random(shape) < rng.uniform(0.0002, 0.0012)
    speck_mask = np.where(grains, rng.uniform(0.3, 1.0, shape), 0).astype(np.float32)
    sigma = rng.uniform(0.9, 1.5) * scale
    specks = np.clip(cv2.GaussianBlur(speck_mask, (0, 0), sigma) * 8.0 * sigma ** 2, 0, 1)
    speck_colour = _hsv(rng.uniform(35, 55), rng.uniform(0.05, 0.25), rng.uniform(0.6, 0.85))
    soil = soil * (1 - specks[..., None]) + speck_colour * specks[..., None]
    if rng.random() < 0.7:  # pot edge: rounded square around the plant, dark tray outside
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        half = np.array([height, width]) / 2 * rng.uniform(0.8, 1.05, size=2)
        p = rng.uniform(4, 8)
        r = ((np.abs(xx - centre[1]) / half[1]) ** p + (np.abs(yy - centre[0]) / half[0]) ** p) ** (1 / p)
        dist = (r - 1.0) * float(half.min())  # ~px outside the pot wall
        rim_w = rng.uniform(5, 12) * scale
        tray = _hsv(rng.uniform(0, 360), rng.uniform(0, 0.15), rng.uniform(0.06, 0.18))
        tray = tray[None, None, :] * (1 + 0.08 * smooth_noise(rng, shape, 1.0))[..., None]
        rim_v = rng.uniform(0.25, 0.5)
        rim = np.clip(1 - np.abs(dist - rim_w / 2) / (rim_w / 2), 0, 1) ** 0.5
        outside = np.clip(dist / 1.5, 0, 1)[..., None]
        soil = soil * (1 - outside) + tray * outside
        soil = soil * (1 - rim[..., None]) + rim_v * rim[..., None] * (0.9 + 0.2 * (dist / rim_w))[..., None]
    return soil.astype(np.float32)


def _leaf(rng: np.random.Generator, shape: tuple[int, int], base: tuple[float, float], theta: float,
          length: float, rank: float, colour: np.ndarray, light: np.ndarray, scale: float) -> _Leaf | None:
    """Render one leaf: petiole from `base` outwards along `theta`, then a spatulate blade.

    `rank` in [0, 1] is 1 for the oldest (largest) leaf and 0 for the youngest.
    Returns None where the leaf lies outside the image.
    """
    height, width = shape
    petiole = length * rng.uniform(0.18, 0.35) * (0.5 + 0.5 * rank)
    blade_start = 0.85 * petiole
    blade_len = length - blade_start
    half_w = blade_len * rng.uniform(0.28, 0.40)
    gamma = rng.uniform(0.6, 0.9)  # < 1: widest towards the tip (spatulate)
    bend = rng.uniform(-0.12, 0.12)
    wobble_a, wobble_f, wobble_p = rng.uniform(0, 0.04), rng.uniform(2, 5), rng.uniform(0, 2 * np.pi)
    pet_w = max(1.0 * scale, half_w * rng.uniform(0.10, 0.16))
    c, s = np.cos(theta), np.sin(theta)
    pad = 6 * scale + 3
    tip = (base[0] + length * s, base[1] + length * c)
    reach = half_w * 1.1 + abs(bend) * length + pad
    y0 = int(max(0, np.floor(min(base[0], tip[0]) - reach)))
    y1 = int(min(height, np.ceil(max(base[0], tip[0]) + reach)))
    x0 = int(max(0, np.floor(min(base[1], tip[1]) - reach)))
    x1 = int(min(width, np.ceil(max(base[1], tip[1]) + reach)))
    if y1 - y0 < 2 or x1 - x0 < 2:
        return None
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dy, dx = yy - base[0], xx - base[1]
    u = dx * c + dy * s
    v = -dx * s + dy * c - bend * u * u / length
    t = (u - blade_start) / blade_len
    xb = 2 * np.sign(t) * np.abs(t) ** gamma - 1
    asym = rng.uniform(-0.08, 0.08)  # one side of the blade slightly wider
    b = half_w * (1 + wobble_a * np.sin(wobble_f * np.pi * np.clip(t, 0, 1) + wobble_p) + asym * np.sign(v))
    rho = np.sqrt(xb * xb + (v / b) ** 2)
    sd_blade = (1 - rho) * half_w
    pet_half = pet_w * (1 + 0.6 * np.clip(u / max(petiole, 1e-3), 0, 1))
    sd_pet = np.minimum(np.minimum(pet_half - np.abs(v), u + 1.0), blade_start + 0.3 * blade_len - u)
    sd = np.maximum(sd_blade, sd_pet)
    alpha = np.clip(sd + 0.5, 0, 1).astype(np.float32)
    if not (alpha >= 0.5).any():
        return None
    tc = np.clip(t, 0, 1)
    across = np.clip(v / b, -1, 1)
    normal = np.array([c, -s])  # image (y, x) direction of +v
    shade = (1 - rng.uniform(0.22, 0.35) * np.clip(rho, 0, 1) ** 2)  # dome: darker towards margin
    shade *= 1 + rng.uniform(0.08, 0.18) * across * float(normal @ light)  # side facing the light
    shade *= 1 + rng.uniform(0.0, 0.22) * (tc - 0.5)  # lighter towards the tip
    vein_w = max(0.6, 0.8 * scale)
    vein_len = np.clip((0.85 - tc) / 0.15, 0, 1) * (t > -0.05)
    shade *= 1 + rng.uniform(0.07, 0.12) * np.exp(-(v / vein_w) ** 2) * vein_len  # midrib
    shade *= 1 - rng.uniform(0.25, 0.4) * np.exp(-np.maximum(sd, 0) / (1.3 * scale + 0.3))  # margin
    shade *= rng.uniform(0.93, 1.07)
    blur = cv2.GaussianBlur(alpha, (0, 0), rng.uniform(1.5, 2.5) * scale)
    off = np.rint(-light * rng.uniform(1.5, 3.0) * scale).astype(int)  # shadow falls away from the light
    shadow = np.zeros_like(blur)
    hh, ww = blur.shape
    oy, ox = int(off[0]), int(off[1])
    shadow[max(oy, 0):hh + min(oy, 0), max(ox, 0):ww + min(ox, 0)] = \
        blur[max(-oy, 0):hh + min(-oy, 0), max(-ox, 0):ww + min(-ox, 0)]
    return _Leaf(y0, x0, alpha, shade.astype(np.float32), shadow, colour)


def _paint_labels(leaves: list[_Leaf], shape: tuple[int, int]) -> np.ndarray:
    """Label of the top-most leaf per pixel, ids 1..len(leaves) in draw order."""
    labels = np.zeros(shape, dtype=np.int32)
    for i, leaf in enumerate(leaves, start=1):
        h, w = leaf.alpha.shape
        window = labels[leaf.y0:leaf.y0 + h, leaf.x0:leaf.x0 + w]
        window[leaf.alpha >= 0.5] = i
    return labels


def min_visible_area(height: int, width: int) -> int:
    """The smallest visible leaf area for an image size (MIN_VISIBLE_AREA at 530 x 500)."""
    return max(8, round(MIN_VISIBLE_AREA * height * width / (530 * 500)))


def _visible_leaves(leaves: list[_Leaf], shape: tuple[int, int], min_area: int) -> list[_Leaf]:
    """Make every leaf's visible part one connected region of at least `min_area` pixels.

    A leaf cut into pieces by younger leaves keeps its largest piece: the other pieces are
    removed from its mask, so image and labels agree. Leaves left too small are dropped.
    Removing pixels can expose leaves below, hence the loop.
    """
    while True:
        labels = _paint_labels(leaves, shape)
        pieces = connected_components(labels, background=0, connectivity=1)
        size = np.bincount(pieces.ravel())
        owner = np.zeros(size.size, dtype=np.int64)
        owner[pieces.ravel()] = labels.ravel()
        largest = np.zeros(len(leaves) + 1, dtype=np.int64)
        order = np.lexsort((size[1:], owner[1:])) + 1  # by leaf, then by size
        largest[owner[order]] = order  # the last (largest) piece of each leaf wins
        stray = (pieces > 0) & (largest[labels] != pieces)
        area = np.bincount(labels[~stray].ravel(), minlength=len(leaves) + 1)[1:]
        keep = area >= min_area
        if not stray.any() and keep.all():
            return leaves
        for i, leaf in enumerate(leaves, start=1):
            h, w = leaf.alpha.shape
            cut = stray[leaf.y0:leaf.y0 + h, leaf.x0:leaf.x0 + w] & (labels[leaf.y0:leaf.y0 + h, leaf.x0:leaf.x0 + w] == i)
            leaf.alpha[cut] = 0.0
        leaves = [leaf for leaf, k in zip(leaves, keep) if k]


def make_plant(rng: np.random.Generator, height: int, width: int,
               n_leaves: int) -> tuple[np.ndarray, np.ndarray]:
    """One top-view rosette of `n_leaves` leaves (fewer where some end up hidden).

    Returns the RGB image (uint8, (H, W, 3)) and the visible leaf ids (int32, (H, W),
    0 = background, leaves 1..N consecutive, later-drawn leaves on top).
    """
    if height < 16 or width < 16:
        raise PEAInputError(f"image shape ({height}, {width}) is too small: need at least 16 x 16")
    if n_leaves < 1:
        raise PEAInputError(f"n_leaves must be >= 1, got {n_leaves}")
    shape = (height, width)
    scale = float(np.clip(min(height, width) / 500.0, 0.4, 2.0))
    half = min(height, width) / 2
    radius = half * float(np.clip(0.5 + 0.022 * n_leaves + rng.uniform(-0.1, 0.1), 0.35, 0.9))
    centre = (height / 2 + rng.normal(0, 0.05) * half, width / 2 + rng.normal(0, 0.05) * half)
    light_angle = rng.uniform(0, 2 * np.pi)
    light = np.array([np.sin(light_angle), np.cos(light_angle)])  # (y, x)
    soil = _soil(rng, height, width, centre, scale)

    hue, sat, val = rng.uniform(78, 118), rng.uniform(0.45, 0.8), rng.uniform(0.38, 0.68)
    theta0 = rng.uniform(0, 2 * np.pi)
    leaves = []
    for i in range(n_leaves):  # oldest first: drawn first, lies below the younger ones
        rank = 1.0 - i / max(n_leaves - 1, 1)
        length = radius * (0.22 + 0.78 * rank ** 0.7) * rng.uniform(0.88, 1.1)
        theta = theta0 + i * GOLDEN_ANGLE + rng.normal(0, 0.12)
        offset = radius * rng.uniform(0.0, 0.05)
        base = (centre[0] + offset * np.sin(theta), centre[1] + offset * np.cos(theta))
        colour = _hsv(hue + rng.normal(0, 1.5), sat + rng.normal(0, 0.02), val * rng.uniform(0.96, 1.04))
        leaf = _leaf(rng, shape, base, theta, length, rank, colour, light, scale)
        if leaf is not None:
            leaves.append(leaf)

    leaves = _visible_leaves(leaves, shape, min_visible_area(height, width))
    labels = _paint_labels(leaves, shape)

    canvas = soil
    shadow_k = rng.uniform(0.35, 0.5)
    for leaf in leaves:
        h, w = leaf.alpha.shape
        window = canvas[leaf.y0:leaf.y0 + h, leaf.x0:leaf.x0 + w]
        a = leaf.alpha[..., None]
        window *= 1 - shadow_k * (leaf.shadow * (1 - leaf.alpha))[..., None]
        window[:] = window * (1 - a) + (leaf.colour * leaf.shade[..., None]) * a
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    gradient = rng.normal(0, 0.08) * (yy / height - 0.5) + rng.normal(0, 0.08) * (xx / width - 0.5)
    canvas = canvas * (rng.uniform(0.85, 1.2) * (1 + gradient))[..., None]
    canvas = cv2.GaussianBlur(canvas, (0, 0), 0.6 * scale)
    canvas = canvas + rng.normal(0, rng.uniform(0.006, 0.016), canvas.shape).astype(np.float32)
    rgb = np.clip(np.rint(canvas * 255), 0, 255).astype(np.uint8)
    return rgb, labels


def label_palette() -> list[int]:
    """Flat 256-entry RGB palette: black background, distinct bright colours for the leaf ids."""
    hues = (np.arange(256) * 0.618034) % 1.0
    colours = [colorsys.hsv_to_rgb(h, 0.75, 0.95 - 0.25 * (i % 2)) for i, h in enumerate(hues)]
    palette = np.rint(np.array(colours) * 255).astype(np.uint8)
    palette[0] = 0
    return palette.ravel().tolist()


def _save_label(path: Path, labels: np.ndarray) -> None:
    image = Image.frombytes("P", (labels.shape[1], labels.shape[0]), labels.astype(np.uint8).tobytes())
    image.putpalette(label_palette())
    image.save(path)


def _check(name: str, value: int, low: int, high: int | None = None) -> None:
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise PEAInputError(f"{name} must be {bound}, got {value}")


def generate_cvppp(out_dir: str | Path, seed: int = 0, n_train: int = 128, n_test: int = 33,
                   n_valid: int = 20, height: int = 530, width: int = 500, min_leaves: int = 5,
                   max_leaves: int = 20) -> dict:
    """Write a CVPPP A1 look-alike data set to `out_dir` (train/, test/, valid_set/local_20_1.txt).

    Training plants are plant001..plantNNN, test plants continue the numbering. Returns a
    summary: out_dir, train / test / valid ids, the valid list path and leaves per plant.
    """
    _check("n_train", n_train, 1)
    _check("n_test", n_test, 0)
    _check("n_valid", n_valid, 0, n_train)
    _check("height", height, 16)
    _check("width", width, 16)
    _check("min_leaves", min_leaves, 1, 255)
    _check("max_leaves", max_leaves, min_leaves, 255)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PEAInputError(f"output path {out} exists and is not a directory")
    ids = [f"plant{i:03d}" for i in range(1, n_train + n_test + 1)]
    train_ids, test_ids = ids[:n_train], ids[n_train:]
    for sub in ("train", "test", "valid_set"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    n_leaves = {}
    for number, plant in enumerate(ids, start=1):
        rng = np.random.default_rng([seed, number])
        rgb, labels = make_plant(rng, height, width, int(rng.integers(min_leaves, max_leaves + 1)))
        n_leaves[plant] = int(labels.max())
        folder = out / ("train" if number <= n_train else "test")
        Image.fromarray(rgb, mode="RGB").save(folder / f"{plant}_rgb.png")
        Image.fromarray(np.where(labels > 0, 255, 0).astype(np.uint8), mode="L").save(folder / f"{plant}_fg.png")
        if number <= n_train:
            _save_label(folder / f"{plant}_label.png", labels)
    pick = np.random.default_rng([seed, 0]).choice(n_train, size=n_valid, replace=False)
    valid_ids = [train_ids[i] for i in sorted(pick)]
    valid_list = out / "valid_set" / "local_20_1.txt"
    valid_list.write_text("".join(f"{p}\n" for p in valid_ids))
    return {"out_dir": str(out), "train": train_ids, "test": test_ids, "valid": valid_ids,
            "valid_list": str(valid_list), "n_leaves": n_leaves}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output directory (gets train/, test/, valid_set/)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    parser.add_argument("--n-train", type=int, default=128, help="training plants, validation ones included")
    parser.add_argument("--n-test", type=int, default=33, help="test plants (no labels)")
    parser.add_argument("--n-valid", type=int, default=20, help="training plants listed for validation")
    parser.add_argument("--height", type=int, default=530, help="image rows")
    parser.add_argument("--width", type=int, default=500, help="image columns")
    parser.add_argument("--min-leaves", type=int, default=5, help="fewest leaves drawn per plant")
    parser.add_argument("--max-leaves", type=int, default=20, help="most leaves drawn per plant")


def run(args: argparse.Namespace) -> int:
    summary = generate_cvppp(args.out, seed=args.seed, n_train=args.n_train, n_test=args.n_test,
                             n_valid=args.n_valid, height=args.height, width=args.width,
                             min_leaves=args.min_leaves, max_leaves=args.max_leaves)
    print(f"wrote {len(summary['train'])} train ({len(summary['valid'])} listed for validation) and "
          f"{len(summary['test'])} test plants to {summary['out_dir']}")
    return 0
