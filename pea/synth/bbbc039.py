"""BBBC039V1 look-alike: 16-bit Hoechst U2OS nuclei, official-style colour masks, labels, splits.

Writes ``OUT/images/NAME.tif`` (uint16, 12-bit camera range), ``OUT/masks/NAME.png``
(8-bit RGB, black background, each nucleus one colour, touching nuclei different colours,
colours reused elsewhere), ``OUT/label_instance/NAME.png`` (uint16 ids made from the masks
by :func:`pea.data.convert.masks_to_instances`, the conversion used for the real data) and
``OUT/metadata/{training,validation,test}.txt`` (one ``NAME.png`` per line, as the real
metadata); with ``--layout plain`` the folder `pea train` reads (images/ and labels/, val/ and
test/ holding the same of their splits).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import tifffile
from scipy.ndimage import gaussian_filter

from pea.data.convert import masks_to_instances, write_label
from pea.errors import PEAInputError
from pea.noise import smooth_noise

FULL_SHAPE = (520, 696)
CAMERA_MAX = 4095  # the real images hold 12-bit camera values in 16-bit TIFFs
# distinct colours with distinct, non-zero red values (the official decoders read red only)
PALETTE = np.stack([40 + (137 * np.arange(64)) % 216, (97 * np.arange(64) + 60) % 256,
                    (53 * np.arange(64) + 150) % 256], axis=1).astype(np.uint8)


def _radius_towards(a: np.ndarray, b: np.ndarray, angle: np.ndarray,
                    direction: np.ndarray) -> np.ndarray:
    """Radius of ellipses (semi-axes a, b, orientation angle) in a given direction."""
    t = direction - angle
    return a * b / np.hypot(b * np.cos(t), a * np.sin(t))


def _place_nuclei(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Centres, semi-axes and orientations (rows: cy, cx, a, b, angle) of touching clusters."""
    scale = height * width / (FULL_SHAPE[0] * FULL_SHAPE[1])
    n_target = max(1, int(round(rng.integers(20, 81) * scale)))
    mean_radius = rng.uniform(12.0, 17.0)
    p_touch = rng.uniform(0.35, 0.65)
    nuclei = np.zeros((0, 5))
    for _ in range(40 * n_target):
        if len(nuclei) == n_target:
            break
        r = np.clip(mean_radius * rng.lognormal(0.0, 0.17), 9.0, 25.0)
        elong = np.sqrt(rng.uniform(1.0, 1.6))
        a, b, angle = r * elong, r / elong, rng.uniform(0, np.pi)
        if len(nuclei) and rng.random() < p_touch:
            j = rng.integers(len(nuclei))
            phi = rng.uniform(0, 2 * np.pi)
            contact = (_radius_towards(a, b, angle, phi)
                       + _radius_towards(*nuclei[j, 2:], phi))
            d = contact * rng.uniform(0.9, 1.0)
            cy, cx = nuclei[j, 0] + d * np.sin(phi), nuclei[j, 1] + d * np.cos(phi)
        else:
            cy = rng.uniform(-0.4 * r, height + 0.4 * r)
            cx = rng.uniform(-0.4 * r, width + 0.4 * r)
        if not (-0.5 * r < cy < height + 0.5 * r and -0.5 * r < cx < width + 0.5 * r):
            continue
        if len(nuclei):
            dy, dx = cy - nuclei[:, 0], cx - nuclei[:, 1]
            phi = np.arctan2(dy, dx)
            contact = (_radius_towards(a, b, angle, phi)
                       + _radius_towards(nuclei[:, 2], nuclei[:, 3], nuclei[:, 4], phi))
            if np.any(np.hypot(dy, dx) < 0.88 * contact):
                continue
        nuclei = np.vstack([nuclei, [cy, cx, a, b, angle]])
    return nuclei


def _paint(rng: np.random.Generator, nuclei: np.ndarray, height: int,
           width: int) -> tuple[np.ndarray, np.ndarray]:
    """Label image (later nuclei on top) and the normalised radius (0 centre, 1 edge)."""
    labels = np.zeros((height, width), dtype=np.int32)
    radius = np.ones((height, width), dtype=np.float32)
    k = np.arange(2, 6)
    for i, (cy, cx, a, b, angle) in enumerate(nuclei, start=1):
        amp = rng.uniform(0.0, 0.07, size=k.size) / np.sqrt(k - 1)
        phase = rng.uniform(0, 2 * np.pi, size=k.size)
        ext = 1.3 * max(a, b) + 2
        y0, y1 = max(0, int(cy - ext)), min(height, int(cy + ext) + 1)
        x0, x1 = max(0, int(cx - ext)), min(width, int(cx + ext) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        dy, dx = np.arange(y0, y1)[:, None] - cy, np.arange(x0, x1)[None, :] - cx
        u = (dx * np.cos(angle) + dy * np.sin(angle)) / a
        v = (-dx * np.sin(angle) + dy * np.cos(angle)) / b
        theta = np.arctan2(v, u)[..., None]
        boundary = 1.0 + np.sum(amp * np.cos(k * theta + phase), axis=-1)
        rho = np.hypot(u, v) / boundary
        inside = rho < 1.0
        labels[y0:y1, x0:x1][inside] = i
        radius[y0:y1, x0:x1][inside] = rho[inside]
    return labels, radius


def _add_micronuclei(rng: np.random.Generator, labels: np.ndarray, first_id: int) -> int:
    """Paint a few objects under 25 px on background (the conversion removes them); count."""
    height, width = labels.shape
    scale = height * width / (FULL_SHAPE[0] * FULL_SHAPE[1])
    yy, xx = np.ogrid[:height, :width]
    n = int(rng.poisson(1.5 * scale))
    for i in range(first_id, first_id + n):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(1.4, 2.6)
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 < r * r) & (labels == 0)] = i
    return n


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Uneven background: offset, linear gradient, vignetting and low-frequency haze."""
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    yy = (yy - 0.5 * height) / FULL_SHAPE[0]
    xx = (xx - 0.5 * width) / FULL_SHAPE[1]
    direction = rng.uniform(0, 2 * np.pi)
    gradient = 1.0 + rng.uniform(0.0, 0.35) * (np.cos(direction) * xx + np.sin(direction) * yy)
    oy, ox = rng.uniform(-0.15, 0.15, size=2)
    vignette = 1.0 - rng.uniform(0.1, 0.45) * ((yy - oy) ** 2 + (xx - ox) ** 2)
    haze = 1.0 + rng.uniform(0.02, 0.08) * smooth_noise(rng, (height, width), width / 12)  # ~6 bumps across
    return rng.uniform(120.0, 450.0) * gradient * vignette * haze


def make_nuclei_image(rng: np.random.Generator, height: int = FULL_SHAPE[0],
                      width: int = FULL_SHAPE[1]) -> tuple[np.ndarray, np.ndarray]:
    """One Hoechst-like field of view: (image uint16, labels int32, one id per painted object).

    Labels include micronuclei under 25 px; a nucleus partly covered by a later one keeps
    one id even when its visible part falls apart.
    """
    nuclei = _place_nuclei(rng, height, width)
    labels, radius = _paint(rng, nuclei, height, width)
    n_nuclei = len(nuclei)
    n_objects = n_nuclei + _add_micronuclei(rng, labels, n_nuclei + 1)

    level = rng.uniform(600.0, 1800.0)
    brightness = level * rng.uniform(0.8, 1.2, size=n_objects + 1)
    bright = rng.random(n_objects + 1) < 0.05  # a few condensed (mitotic-like) nuclei
    brightness[bright] *= rng.uniform(1.3, 1.7, size=int(bright.sum()))
    brightness[n_nuclei + 1:] *= rng.uniform(0.6, 1.4, size=n_objects - n_nuclei)
    brightness[0] = 0.0
    fg = labels > 0
    # thickness-like fall-off towards the rim: dims edges and the seams of touching nuclei
    profile = 0.2 + 0.8 * (1.0 - radius ** 2) ** rng.uniform(0.25, 0.4)

    fine = smooth_noise(rng, (height, width), 1.3)  # grain of about 3 px
    coarse = smooth_noise(rng, (height, width), 4.3)  # blotches of about 10 px
    texture = 1.0 + rng.uniform(0.06, 0.14) * fine + rng.uniform(0.04, 0.1) * coarse

    spots = np.zeros((height, width), dtype=np.float32)
    candidates = np.flatnonzero(fg & (radius < 0.7))
    if candidates.size:
        n_spots = rng.poisson(2.0 * max(n_nuclei, 1))
        spots.flat[rng.choice(candidates, size=n_spots)] = 1.0
        sigma = rng.uniform(1.6, 2.6)
        spots = gaussian_filter(spots, sigma) * (2 * np.pi * sigma ** 2)
    nucleoli = 1.0 - np.clip(rng.uniform(0.2, 0.4) * spots, 0.0, 0.6)

    signal = brightness[labels] * profile * texture * nucleoli * fg
    signal = gaussian_filter(signal.astype(np.float32), rng.uniform(0.9, 1.5))
    signal += _background(rng, height, width)

    gain = rng.uniform(1.5, 3.0)
    image = rng.poisson(np.maximum(signal, 0.0) / gain) * gain
    image += rng.normal(0.0, rng.uniform(3.0, 10.0), size=image.shape)
    return np.clip(np.round(image), 0, CAMERA_MAX).astype(np.uint16), labels


def colour_mask(labels: np.ndarray) -> np.ndarray:
    """Official-style RGB mask: touching objects (8-neighbourhood) get different colours."""
    n = int(labels.max())
    pairs = [np.stack([labels[:-1, :].ravel(), labels[1:, :].ravel()], 1),
             np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], 1),
             np.stack([labels[:-1, :-1].ravel(), labels[1:, 1:].ravel()], 1),
             np.stack([labels[:-1, 1:].ravel(), labels[1:, :-1].ravel()], 1)]
    pairs = np.concatenate(pairs)
    pairs = pairs[(pairs[:, 0] != pairs[:, 1]) & (pairs.min(axis=1) > 0)]
    pairs = np.unique(np.sort(pairs, axis=1), axis=0)
    neighbours = [[] for _ in range(n + 1)]
    for i, j in pairs:
        neighbours[i].append(j)
        neighbours[j].append(i)
    colour = np.full(n + 1, -1, dtype=np.int64)
    for i in range(1, n + 1):  # greedy graph colouring, one step per object
        used = colour[neighbours[i]]
        colour[i] = np.flatnonzero(~np.isin(np.arange(len(PALETTE)), used))[0]
    rgb = np.zeros(labels.shape + (3,), dtype=np.uint8)
    fg = labels > 0
    rgb[fg] = PALETTE[colour[labels[fg]]]
    return rgb


def _names(rng: np.random.Generator, n: int) -> list[str]:
    """Plate-style names like the real ones: IXM..._<well>_s<site>_w1<GUID>."""
    wells = rng.choice(16 * 24 * 9, size=n, replace=n > 16 * 24 * 9)
    guids = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    names = []
    for w, g in zip(wells, guids):
        h = g.tobytes().hex().upper()
        guid = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        well = f"{'ABCDEFGHIJKLMNOP'[w // 216]}{(w // 9) % 24 + 1:02d}"
        names.append(f"IXMsynth_{well}_s{w % 9 + 1}_w1{guid}")
    return names


PLAIN = {"training": "", "validation": "val", "test": "test"}  # the plain layout: split -> folder


def generate_bbbc039(out_dir: str | Path, seed: int = 0, n_train: int = 100, n_valid: int = 50,
                     n_test: int = 50, height: int = FULL_SHAPE[0],
                     width: int = FULL_SHAPE[1], layout: str = "bbbc039") -> dict:
    """Write a look-alike BBBC039V1 folder; return its splits and the number of nuclei.

    `layout` plain writes the same images as a folder `pea train` reads: images/NAME.tif and
    labels/NAME.png for training, under val/ for validation and test/ for test."""
    for key, value in (("n_train", n_train), ("n_valid", n_valid), ("n_test", n_test)):
        if value < 0:
            raise PEAInputError(f"{key}={value}: must be >= 0")
    if n_train + n_valid + n_test == 0:
        raise PEAInputError("n_train + n_valid + n_test = 0: nothing to generate")
    if height < 32 or width < 32:
        raise PEAInputError(f"image shape ({height}, {width}): both sides must be >= 32")
    if layout not in ("bbbc039", "plain"):
        raise PEAInputError(f"--layout {layout}: bbbc039 or plain")
    out_dir = Path(out_dir)
    total = n_train + n_valid + n_test
    names = _names(np.random.default_rng([seed, 1]), total)
    splits = {"training": names[:n_train], "validation": names[n_train:n_train + n_valid],
              "test": names[n_train + n_valid:]}
    folders = {n: out_dir / PLAIN[split] if layout == "plain" else out_dir for split, m in splits.items() for n in m}
    label_dir = "labels" if layout == "plain" else "label_instance"
    subs = ("images", label_dir) if layout == "plain" else ("images", "masks", label_dir, "metadata")
    for folder in set(folders.values()):
        for sub in subs:
            (folder / sub).mkdir(parents=True, exist_ok=True)
    n_objects = 0
    for name, child in zip(names, np.random.SeedSequence(seed).spawn(total)):
        image, labels = make_nuclei_image(np.random.default_rng(child), height, width)
        mask = colour_mask(labels)
        instances = masks_to_instances(mask)
        n_objects += int(instances.max())
        tifffile.imwrite(folders[name] / "images" / f"{name}.tif", image)
        write_label(folders[name] / label_dir / f"{name}.png", instances)
        if layout == "bbbc039":
            cv2.imwrite(str(out_dir / "masks" / f"{name}.png"), mask[..., ::-1])
    for split, members in splits.items() if layout == "bbbc039" else ():
        (out_dir / "metadata" / f"{split}.txt").write_text("".join(f"{m}.png\n" for m in members))
    return {"out_dir": str(out_dir), **splits, "nuclei": n_objects}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (BBBC039V1 layout)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=100)
    parser.add_argument("--n-valid", type=int, default=50)
    parser.add_argument("--n-test", type=int, default=50)
    parser.add_argument("--height", type=int, default=FULL_SHAPE[0])
    parser.add_argument("--width", type=int, default=FULL_SHAPE[1])
    parser.add_argument("--layout", choices=["bbbc039", "plain"], default="bbbc039",
                        help="plain: images/ + labels/, val/ and test/ (the folder pea train reads)")


def run(args: argparse.Namespace) -> int:
    info = generate_bbbc039(args.out, seed=args.seed, n_train=args.n_train,
                            n_valid=args.n_valid, n_test=args.n_test,
                            height=args.height, width=args.width, layout=args.layout)
    print(f"wrote {len(info['training'])}/{len(info['validation'])}/{len(info['test'])} "
          f"train/validation/test images with {info['nuclei']} nuclei to {info['out_dir']}")
    return 0
