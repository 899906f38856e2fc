"""AC3/AC4 look-alike: anisotropic EM stacks of densely packed neurites (AC4 train, AC3 test).

Neurites are simulated as tubes: smooth random walks in (y, x) over the sections, with
drifting radius and elliptic cross-section, mutual repulsion, branching, and a few tubes that
start or end inside the stack. Each section is partitioned by a watershed on the distance to
the tube markers plus a z-correlated noise field, so every voxel belongs to an object (no id 0)
and boundaries are irregular. The image draws thin dark membranes on all boundaries,
mitochondria and vesicles inside some objects, texture, blur, noise, and defect sections
(a blank one, a strongly blurred one, a shifted one; the shifted one moves with its labels).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import h5py
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.segmentation import watershed

from pea.errors import PEAInputError
from pea.noise import smooth_noise

_MARGIN = 24  # simulated border around the field of view (tubes leave and enter through it)


def _log_radius(rng: np.random.Generator, n: int, r_mean: float) -> np.ndarray:
    """Log radii: many thin axons, some thick dendrites (about 1 in 10, twice as wide)."""
    return np.log(r_mean * 0.75) + 0.3 * rng.standard_normal(n) + 0.75 * (rng.random(n) < 0.1)


def _simulate_tubes(rng: np.random.Generator, depth: int, extent: tuple[int, int],
                    object_size: float, branch_rate: float, end_rate: float) -> list[dict]:
    """Random-walk tube centres over `depth` sections; returns per-section tube states."""
    h, w = extent
    r_mean = object_size / 2.0
    n = max(2, int(round(h * w / (np.pi * r_mean ** 2))))
    pos = rng.uniform((0, 0), (h, w), size=(n, 2))
    base = _log_radius(rng, n, r_mean)
    state = {
        "pos": pos, "vel": rng.normal(0.0, 1.0, (n, 2)), "base": base, "logr": base.copy(),
        "angle": rng.uniform(0, np.pi, n), "elong": rng.uniform(1.0, 1.8, n),
        "obj": np.arange(1, n + 1), "alive": np.ones(n, bool),
    }
    next_obj = n + 1

    def add(new: dict) -> None:
        for key, value in new.items():
            state[key] = np.concatenate([state[key], value])

    def new_tubes(k: int, obj: np.ndarray) -> dict:
        b = _log_radius(rng, k, r_mean)
        return {"pos": rng.uniform((0, 0), (h, w), size=(k, 2)), "vel": rng.normal(0.0, 1.0, (k, 2)),
                "base": b, "logr": b.copy(), "angle": rng.uniform(0, np.pi, k),
                "elong": rng.uniform(1.0, 1.8, k), "obj": obj, "alive": np.ones(k, bool)}

    def repel(steps: int, strength: float) -> None:
        idx = np.flatnonzero(state["alive"])
        p, r = state["pos"][idx], np.exp(state["logr"][idx])
        for _ in range(steps):
            i, j = cKDTree(p).query_pairs(1.9 * r.max(), output_type="ndarray").T
            diff = p[i] - p[j]
            dist = np.maximum(np.sqrt((diff ** 2).sum(1)), 1e-3)
            push = (strength * np.clip(0.95 * (r[i] + r[j]) - dist, 0, None) / dist)[:, None] * diff
            force = np.zeros_like(p)
            np.add.at(force, i, push)
            np.add.at(force, j, -push)
            p = p + force
        state["pos"][idx] = p

    def reflect() -> None:
        for axis, size in enumerate((h, w)):
            low, high = state["pos"][:, axis] < 0, state["pos"][:, axis] > size
            state["pos"][low, axis] *= -1
            state["pos"][high, axis] = 2 * size - state["pos"][high, axis]
            state["vel"][low | high, axis] *= -1

    repel(10, 0.25)
    reflect()
    sections = []
    for z in range(depth):
        if z > 0:
            alive = state["alive"]
            m = len(alive)
            state["vel"] = 0.85 * state["vel"] + rng.normal(0.0, 0.75, (m, 2))
            state["pos"] = state["pos"] + state["vel"]
            state["logr"] = state["base"] + 0.9 * (state["logr"] - state["base"]) + rng.normal(0, 0.06, m)
            state["angle"] = state["angle"] + rng.normal(0.0, 0.12, m)
            state["elong"] = np.clip(state["elong"] + rng.normal(0.0, 0.08, m), 1.0, 2.2)
            ended = alive & (rng.random(m) < end_rate)
            state["alive"] = alive & ~ended
            born = rng.poisson(ended.sum())
            if born:
                add(new_tubes(born, np.arange(next_obj, next_obj + born)))
                next_obj += born
            parents = np.flatnonzero(state["alive"][:m] & (rng.random(m) < branch_rate))
            if len(parents):
                child = {key: state[key][parents].copy() for key in state}
                speed = np.linalg.norm(child["vel"], axis=1, keepdims=True) + 1e-6
                perp = np.stack([-child["vel"][:, 1], child["vel"][:, 0]], 1) / speed
                state["vel"][parents] -= 0.8 * perp
                child["vel"] += 0.8 * perp
                child["pos"] += perp * np.exp(child["logr"])[:, None] * 0.3
                child["base"] -= 0.3
                child["logr"] -= 0.3
                add(child)
            repel(2, 0.25)
            reflect()
        keep = state["alive"]
        sections.append({key: state[key][keep].copy() for key in ("pos", "logr", "angle", "elong", "obj")})
    return sections


def _draw_markers(tubes: dict, extent: tuple[int, int], fraction: float = 0.45) -> np.ndarray:
    """Rasterise one section's tube cross-sections (shrunken ellipses) as watershed markers."""
    radius = np.exp(tubes["logr"]) * fraction
    semi_a, semi_b = radius * np.sqrt(tubes["elong"]), radius / np.sqrt(tubes["elong"])
    reach = int(np.ceil(semi_a.max())) + 1
    dy, dx = np.mgrid[-reach:reach + 1, -reach:reach + 1].reshape(2, -1).astype(np.float32)
    centre = np.round(tubes["pos"]).astype(np.int64)
    cos, sin = np.cos(tubes["angle"])[:, None], np.sin(tubes["angle"])[:, None]
    u, v = cos * dy + sin * dx, -sin * dy + cos * dx
    inside = (u / semi_a[:, None]) ** 2 + (v / semi_b[:, None]) ** 2 <= 1.0
    inside[:, (dy == 0) & (dx == 0)] = True
    tube, k = np.nonzero(inside)
    ys, xs = centre[tube, 0] + dy[k].astype(np.int64), centre[tube, 1] + dx[k].astype(np.int64)
    ok = (ys >= 0) & (ys < extent[0]) & (xs >= 0) & (xs < extent[1])
    markers = np.zeros(extent, np.int32)
    order = np.argsort(-radius[tube[ok]], kind="stable")  # small tubes drawn last stay visible
    markers[ys[ok][order], xs[ok][order]] = tubes["obj"][tube[ok]][order]
    return markers


def _partition(rng: np.random.Generator, sections: list[dict], extent: tuple[int, int],
               irregularity: float) -> np.ndarray:
    """Every voxel to one tube: per-section watershed on marker distance + correlated noise."""
    shape = (len(sections),) + extent
    noise = irregularity * (0.5 * smooth_noise(rng, shape, (1.5, 2.5, 2.5))
                            + smooth_noise(rng, shape, (1.5, 7.0, 7.0)))
    labels = np.empty((len(sections),) + extent, np.int32)
    for z, tubes in enumerate(sections):
        markers = _draw_markers(tubes, extent)
        elevation = ndimage.distance_transform_edt(markers == 0).astype(np.float32) + noise[z]
        labels[z] = watershed(elevation, markers)
    return labels


def _render(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """Float image in about [0, 1]: cytoplasm, membranes, mitochondria, vesicles, blur, noise."""
    shape = labels.shape
    n_ids = int(labels.max()) + 1
    grow = ndimage.grey_dilation(labels, size=(1, 3, 3))
    shrink = ndimage.grey_erosion(labels, size=(1, 3, 3))
    boundary = grow != shrink
    membrane = (labels < grow) | (boundary & (smooth_noise(rng, shape, (1, 4, 4)) > 0.3))
    interior = ~ndimage.binary_dilation(boundary, np.ones((1, 7, 7), bool))

    tone = rng.normal(0.70, 0.05, n_ids).astype(np.float32)
    image = tone[labels] + 0.03 * smooth_noise(rng, shape, (0, 1.0, 1.0)) \
        + 0.03 * smooth_noise(rng, shape, (0.5, 3.0, 3.0))
    has_mito = rng.random(n_ids) < 0.3
    mito = (smooth_noise(rng, shape, (1.2, 2.5, 2.5)) > 1.1) & has_mito[labels] & interior
    mito_edge = mito & ~ndimage.binary_erosion(mito, np.ones((1, 3, 3), bool))
    image[mito] = 0.42 + 0.06 * smooth_noise(rng, shape, (0, 0.7, 0.7))[mito]
    image[mito_edge] = 0.30
    has_vesicles = rng.random(n_ids) < 0.12
    spots = (rng.random(shape) < 0.03) & has_vesicles[labels] & interior & ~mito
    vesicles = ndimage.binary_dilation(spots, np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], bool))
    image[vesicles & ~mito] -= 0.22

    dark = ndimage.gaussian_filter(membrane.astype(np.float32), (0, 0.6, 0.6))
    image = image * (1.0 - 0.75 * np.clip(dark * 1.6, 0, 1))
    image *= 1.0 + 0.06 * smooth_noise(rng, shape, (2, 40, 40))
    image = ndimage.gaussian_filter(image, (0, 0.7, 0.7))
    return image + rng.normal(0.0, 0.045, shape).astype(np.float32)


def make_em_volume(rng: np.random.Generator, shape: tuple[int, int, int], object_size: float = 24.0,
                   irregularity: float = 3.0, branch_rate: float = 0.004, end_rate: float = 0.006,
                   defects: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One EM look-alike stack: (image uint8, labels uint32 with ids 1..N, every voxel labelled).

    `object_size` is the mean neurite diameter in pixels, `irregularity` the boundary noise
    amplitude in pixels; with `defects` one section is blank, one strongly blurred and one
    shifted by a few pixels (image and labels together).
    """
    depth, height, width = (int(s) for s in shape)
    if depth < 1 or height < 16 or width < 16:
        raise PEAInputError(f"EM volume shape {tuple(shape)}: need depth >= 1 and height, width >= 16")
    if object_size < 4:
        raise PEAInputError(f"object_size {object_size}: need at least 4 pixels")
    extent = (height + 2 * _MARGIN, width + 2 * _MARGIN)
    sections = _simulate_tubes(rng, depth, extent, object_size, branch_rate, end_rate)
    labels = _partition(rng, sections, extent, irregularity)
    image = _render(rng, labels)

    offsets = np.zeros((depth, 2), np.int64)
    if defects and depth >= 4:
        blank, blurred, shifted = rng.choice(np.arange(1, depth - 1), 3, replace=depth - 2 < 3)
        image[blurred] = ndimage.gaussian_filter(image[blurred], 3.0)
        image[blank] = 0.0
        offsets[shifted] = rng.integers(3, 9, 2) * rng.choice([-1, 1], 2)
    m = _MARGIN
    rows = m + offsets[:, :1, None] + np.arange(height)[None, :, None]
    cols = m + offsets[:, None, 1:] + np.arange(width)[None, None, :]
    zs = np.arange(depth)[:, None, None]
    image, labels = image[zs, rows, cols], labels[zs, rows, cols]

    present = np.zeros(int(labels.max()) + 1, bool)
    present[labels] = True
    labels = np.cumsum(present).astype(np.uint32)[labels]
    image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    return image, labels


def _write(path: Path, data: np.ndarray) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("main", data=data, compression="gzip", compression_opts=4)


def generate_em(out_dir: str | Path, seed: int = 0, depth: int = 40, size: int = 256, test_depth: int = 40,
                object_size: float = 24.0, defects: bool = True) -> dict:
    """Write AC4_{inputs,labels}.h5 (train, `depth` sections) and AC3_{inputs,labels}.h5 (test).

    Each file holds one dataset 'main' (z, y, x): inputs uint8, labels uint32. Returns the
    written paths and, per volume, its shape and number of objects.
    """
    if depth < 1 or test_depth < 1:
        raise PEAInputError(f"--depth {depth} / --test-depth {test_depth}: need at least 1 section")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PEAInputError(f"--out {out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    train_seq, test_seq = np.random.SeedSequence(seed).spawn(2)
    summary: dict = {}
    for name, seq, d in (("AC4", train_seq, depth), ("AC3", test_seq, test_depth)):
        image, labels = make_em_volume(np.random.default_rng(seq), (d, size, size),
                                       object_size=object_size, defects=defects)
        paths = (out / f"{name}_inputs.h5", out / f"{name}_labels.h5")
        _write(paths[0], image)
        _write(paths[1], labels)
        summary[name] = {"inputs": str(paths[0]), "labels": str(paths[1]), "shape": image.shape,
                         "objects": int(labels.max())}
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output directory (e.g. data/AC3-AC4)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--depth", type=int, default=40, help="sections of the AC4 (train) volume")
    parser.add_argument("--size", type=int, default=256, help="section height and width in pixels")
    parser.add_argument("--test-depth", type=int, default=40, help="sections of the AC3 (test) volume")
    parser.add_argument("--object-size", type=float, default=24.0, help="mean neurite diameter in pixels")
    parser.add_argument("--no-defects", action="store_true", help="no blank, blurred or shifted sections")


def run(args: argparse.Namespace) -> int:
    summary = generate_em(args.out, seed=args.seed, depth=args.depth, size=args.size,
                          test_depth=args.test_depth, object_size=args.object_size,
                          defects=not args.no_defects)
    for name, info in summary.items():
        print(f"{name}: {info['inputs']}, {info['labels']}: shape {info['shape']}, {info['objects']} objects")
    return 0
