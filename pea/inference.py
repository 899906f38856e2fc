"""Prediction: affinities = ReLU(SCM of the full-resolution embedding), for the whole image
(padded to DATA.padded_size) or by overlapping sliding windows (TEST.window); then instances
by the partitioners TEST.partitioners names (docs/method.md section 7)."""
from __future__ import annotations

import sys
from typing import Mapping, Sequence

import numpy as np
import torch
from skimage.morphology import remove_small_objects
from skimage.segmentation import relabel_sequential
from tqdm import tqdm

from pea.affinity import Offset, embedding_affinity
from pea.augment import normalize
from pea.config import PARTITIONERS
from pea.errors import PEAInputError
from pea.data.common import Sample, pad_to, padded_shape, resize
from pea.postprocess import merge_small_objects, mutex_watershed


def select_device(name: str = "auto") -> torch.device:
    """CUDA when available (or asked for), else the CPU with a one-line notice."""
    if name != "auto":
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise PEAInputError(f"device '{name}' was asked for but CUDA is not available here")
        if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
            raise PEAInputError(f"device '{name}': only {torch.cuda.device_count()} CUDA device(s) here")
        try:
            return torch.device(name)
        except RuntimeError:
            raise PEAInputError(f"device '{name}': use auto, cpu, cuda or cuda:N") from None
    if torch.cuda.is_available():
        return torch.device("cuda")
    print("notice: CUDA is not available, running on the CPU", file=sys.stderr)
    return torch.device("cpu")


def to_input(image: np.ndarray, mode: str, device: torch.device) -> torch.Tensor:
    """(*spatial, C) image in [0, 1] -> normalised (1, C, *spatial) tensor."""
    x = normalize(image, mode)
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 0)))[None].to(device)


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def run_model(model: torch.nn.Module, x: torch.Tensor, amp: str = "off") -> dict:
    """The network's output for `x`, computed under autocast in bf16 or fp16 when `amp` asks;
    embeddings and foreground come back in float32 (the affinity arithmetic stays float32)."""
    if amp == "off":
        out = model(x)
    else:
        with torch.autocast(x.device.type, dtype=AMP_DTYPES[amp]):
            out = model(x)
    fg = out.get("foreground")
    return {"embeddings": [e.float() for e in out["embeddings"]], "foreground": None if fg is None else fg.float()}


@torch.no_grad()
def predict_image(model: torch.nn.Module, image: np.ndarray, offsets: Sequence[Offset], data_cfg: Mapping,
                  device: torch.device, amp: str = "off") -> tuple[np.ndarray, np.ndarray | None]:
    """Affinities (C, *spatial) and foreground probability (*spatial) or None for one whole
    image (*spatial, C) in [0, 1], padded to DATA.padded_size (DATA.pad_mode) and cropped back."""
    padded, crop = pad_to(image, padded_shape(image.shape[:-1], data_cfg["padded_size"]), data_cfg["pad_mode"])
    out = run_model(model, to_input(padded, data_cfg["normalize"], device), amp)
    affs = torch.relu(embedding_affinity(out["embeddings"][0], offsets))[0]
    affs = affs[(slice(None),) + crop].float().cpu().numpy()
    fg = out.get("foreground")
    if fg is not None:
        fg = torch.softmax(fg.float(), dim=1)[0, 1][crop].cpu().numpy()
    return affs, fg


def _profile(n: int, overlap: int) -> np.ndarray:
    """Blending weights along one window axis: a linear ramp over the overlap, never 0."""
    i = np.arange(n, dtype=np.float64)
    ramp = max(1, overlap)
    return np.clip(np.minimum(i + 1, n - i) / (ramp + 1), 1.0 / (ramp + 1), 1.0)


def _starts(n: int, window: int, overlap: int) -> list[int]:
    """Window starts covering [0, n) with at least `overlap` between neighbours."""
    if window >= n:
        return [0]
    step = max(1, window - overlap)
    starts = list(range(0, n - window, step)) + [n - window]
    return sorted(set(starts))


def _windows(model: torch.nn.Module, volume: np.ndarray, offsets: Sequence[Offset], window: Sequence[int],
             starts: Sequence[Sequence[int]], data_cfg: Mapping, device: torch.device, progress: bool,
             batch: int = 1, amp: str = "off"):
    """(slices, affinities (C, *window) on the device) of every window whose starts the grid
    names, `batch` windows per forward pass."""
    grid = np.stack(np.meshgrid(*starts, indexing="ij"), -1).reshape(-1, len(window))
    bar = tqdm(total=len(grid), desc="sliding windows", disable=not progress, leave=False)
    for first in range(0, len(grid), batch):
        slices = [tuple(slice(s, s + w) for s, w in zip(start, window)) for start in grid[first:first + batch]]
        x = torch.cat([to_input(volume[sl], data_cfg["normalize"], device) for sl in slices])
        affs = embedding_affinity(run_model(model, x, amp)["embeddings"][0], offsets)
        yield from zip(slices, affs)
        bar.update(len(slices))
    bar.close()


@torch.no_grad()
def predict_volume(model: torch.nn.Module, volume: np.ndarray, offsets: Sequence[Offset], window: Sequence[int],
                   overlap: Sequence[int], data_cfg: Mapping, device: torch.device,
                   progress: bool = True, batch: int = 1, amp: str = "off") -> np.ndarray:
    """Affinities (C, *spatial) of a volume (*spatial, C_in) by overlapping sliding windows,
    `batch` windows per forward pass, blended on the device.

    Each window's affinities count only where the partner voxel lies inside the window, and
    are blended with separable ramp weights. Because both the weights and the validity are
    products over the axes, the normaliser is an outer product of 1D sums: memory is the
    input, the output and one batch of windows.
    """
    spatial = volume.shape[:-1]
    window = [min(int(w), int(n)) for w, n in zip(window, spatial)]
    starts = [_starts(n, w, o) for n, w, o in zip(spatial, window, overlap)]
    profiles = [_profile(w, o) for w, o in zip(window, overlap)]
    weight = np.ones(window, dtype=np.float32)
    for d, p in enumerate(profiles):
        weight *= p.reshape([-1 if k == d else 1 for k in range(len(spatial))]).astype(np.float32)
    weight = torch.from_numpy(_validity(offsets, window) * weight).to(device)
    out = torch.zeros((len(offsets),) + tuple(spatial), device=device)
    for sl, affs in _windows(model, volume, offsets, window, starts, data_cfg, device, progress, batch, amp):
        out[(slice(None),) + sl] += torch.relu(affs) * weight
    for c, off in enumerate(offsets):
        norm = np.ones((), dtype=np.float64)
        for d, (n, w, o, st) in enumerate(zip(spatial, window, off, starts)):
            axis_sum = np.zeros(n)
            ok = profiles[d] * _axis_valid(o, w)
            for s in st:
                axis_sum[s : s + w] += ok
            norm = np.multiply.outer(norm, axis_sum)
        out[c] /= torch.from_numpy(np.where(norm > 0, norm, 1.0).astype(np.float32)).to(device)
    return out.cpu().numpy()


def gaussian_weight(window: Sequence[int], sigma: float = 0.2) -> np.ndarray:
    """The authors' window weight: 1e-6 + exp(-d^2 / (2 sigma^2)), d the distance from the
    centre on a grid running from -1 to 1 along every axis (docs/method.md section 7)."""
    grids = np.meshgrid(*[np.linspace(-1, 1, int(w), dtype=np.float32) for w in window], indexing="ij")
    dist = np.sqrt(sum(g * g for g in grids))
    return (1e-6 + np.exp(-(dist ** 2) / np.float32(2.0 * sigma ** 2))).astype(np.float32)


def fill_first_plane(affs: torch.Tensor, offsets: Sequence[Offset]) -> torch.Tensor:
    """For each unit-step offset (-1 along one axis), its first plane along that axis, where
    the partner lies outside, takes the values of the second plane (the authors' windows)."""
    for c, off in enumerate(offsets):
        axes = [a for a, o in enumerate(off) if o]
        if len(axes) == 1 and off[axes[0]] == -1 and affs.shape[axes[0] + 1] > 1:
            affs[c].narrow(axes[0], 0, 1).copy_(affs[c].narrow(axes[0], 1, 1))
    return affs


@torch.no_grad()
def predict_volume_gaussian(model: torch.nn.Module, volume: np.ndarray, offsets: Sequence[Offset],
                            window: Sequence[int], overlap: Sequence[int], context: Sequence[int] | None,
                            data_cfg: Mapping, device: torch.device, progress: bool = True, batch: int = 1,
                            amp: str = "off") -> np.ndarray:
    """The authors' sliding windows: the volume reflect-padded by `context`, windows at
    stride window - overlap (the last one flush with the end), the unit-step channels' first
    plane filled, ReLU, and a Gaussian-weighted mean of all windows; cropped back."""
    context = [int(c) for c in (context or [0] * (volume.ndim - 1))]
    padded = np.pad(volume, [(c, c) for c in context] + [(0, 0)], mode="reflect")
    spatial = padded.shape[:-1]
    window = [min(int(w), int(n)) for w, n in zip(window, spatial)]
    starts = [_starts(n, w, o) for n, w, o in zip(spatial, window, overlap)]
    weight = torch.from_numpy(gaussian_weight(window)).to(device)
    out = torch.zeros((len(offsets),) + tuple(spatial), device=device)
    total = torch.zeros(spatial, device=device)
    for sl, affs in _windows(model, padded, offsets, window, starts, data_cfg, device, progress, batch, amp):
        out[(slice(None),) + sl] += torch.relu(fill_first_plane(affs, offsets)) * weight
        total[sl] += weight
    out /= total
    return out[(slice(None),) + tuple(slice(c, n - c) for c, n in zip(context, spatial))].cpu().numpy()


def _axis_valid(o: int, w: int) -> np.ndarray:
    i = np.arange(w)
    return ((i + o >= 0) & (i + o < w)).astype(np.float64)


def _validity(offsets: Sequence[Offset], window: Sequence[int]) -> np.ndarray:
    """(C, *window) 1 where the partner voxel lies inside the window."""
    out = np.ones((len(offsets),) + tuple(window), dtype=np.float32)
    for c, off in enumerate(offsets):
        for d, (o, w) in enumerate(zip(off, window)):
            out[c] *= _axis_valid(o, w).reshape([-1 if k == d else 1 for k in range(len(window))]).astype(np.float32)
    return out


def predict(model: torch.nn.Module, image: np.ndarray, offsets: Sequence[Offset], cfg: Mapping,
            device: torch.device) -> tuple[np.ndarray, np.ndarray | None]:
    """Affinities and foreground probability (or None) of one image (*spatial, C): by sliding
    windows when TEST.window is set, else of the whole image at once."""
    test = cfg["TEST"]
    speed = {"batch": test["window_batch"], "amp": test["amp"]}
    if test["window"] and test["window_blend"] == "gaussian":
        affs = predict_volume_gaussian(model, image, offsets, test["window"], test["overlap"], test["context"],
                                       cfg["DATA"], device, **speed)
        return affs, None
    if test["window"]:
        affs = predict_volume(model, image, offsets, test["window"], test["overlap"], cfg["DATA"], device, **speed)
        return affs, None
    return predict_image(model, image, offsets, cfg["DATA"], device, test["amp"])


def foreground_mask(sample: Sample, fg_prob: np.ndarray | None, test_cfg: Mapping) -> np.ndarray | None:
    """The mask for the partitioner: the given foreground ('gt'), the predicted one ('pred',
    specks under `fg_min_size` removed) or none."""
    mode = test_cfg["mask"]
    if mode == "gt":
        if sample.fg is None:
            raise ValueError(f"{sample.name}: TEST.mask is 'gt' but the sample has no foreground mask")
        return sample.fg.astype(bool)
    if mode == "pred":
        if fg_prob is None:
            raise ValueError("TEST.mask is 'pred' but the network has no foreground head (MODEL.fg_head)")
        mask = fg_prob > 0.5
        if test_cfg["fg_min_size"] > 0:
            mask = remove_small_objects(mask, max_size=int(test_cfg["fg_min_size"]) - 1,
                                        connectivity=int(test_cfg["fg_connectivity"]))
        return mask
    return None


def _graph_partition(affs: np.ndarray, offsets: Sequence[Offset], test_cfg: Mapping,
                     methods: Sequence[str]) -> dict[str, np.ndarray]:
    """waterz and lmc as TEST.fragments says: `project` (one `fragments_3d` for both, lmc
    costs from every offset) or `official` (the paper code's per-section fragments of each)."""
    from pea.postprocess import (fragments_3d, maxima_fragments, multicut_segment, official_multicut,
                                 waterz_segment)

    wanted = [m for m in ("waterz", "lmc") if m in methods]
    if not wanted:
        return {}
    if test_cfg["fragments"] == "official":
        threshold = test_cfg["waterz_threshold"]
        run = {"waterz": lambda: waterz_segment(affs, threshold, fragments=maxima_fragments(affs)),
               "lmc": lambda: official_multicut(affs, offsets)}
    else:
        frags = fragments_3d(affs)
        run = {"waterz": lambda: waterz_segment(affs, test_cfg["waterz_threshold"], fragments=frags),
               "lmc": lambda: multicut_segment(affs, offsets, fragments=frags)}
    return {m: run[m]() for m in wanted}


def partition(affs: np.ndarray, offsets: Sequence[Offset], test_cfg: Mapping, methods: Sequence[str],
              mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Instances from affinities by each partitioner in `methods` (mutex, waterz, lmc); waterz
    and lmc build their graph as TEST.fragments says. Pixels outside `mask` get 0."""
    unknown = [m for m in methods if m not in PARTITIONERS]
    if unknown:
        raise ValueError(f"unknown post-processing method '{unknown[0]}' ({', '.join(PARTITIONERS)})")
    segs = _graph_partition(affs, offsets, test_cfg, methods)
    if mask is not None:
        for seg in segs.values():
            seg[~mask] = 0
    if "mutex" in methods:
        segs["mutex"] = mutex_watershed(affs, offsets, test_cfg["strides"], mask)
    return {method: segs[method] for method in methods}


def finish(seg: np.ndarray, shape: Sequence[int], test_cfg: Mapping) -> np.ndarray:
    """A partition brought to `shape` (the original image size, when working at another
    scale), then small-object merging (TEST.small_objects, in original pixels, by
    TEST.merge_rule) and ids 1..N in the order of the merged ids."""
    if tuple(shape) != seg.shape:
        seg = resize(seg.astype(np.int64), shape, nearest=True)
    if test_cfg["small_objects"]:
        merged = merge_small_objects(seg, test_cfg["small_objects"], test_cfg["merge_rule"])
        seg = relabel_sequential(merged)[0]
    return seg


def segment(affs: np.ndarray, offsets: Sequence[Offset], test_cfg: Mapping, mask: np.ndarray | None = None,
            shape: Sequence[int] | None = None, methods: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Instances from affinities: each partitioner of `methods` (default TEST.partitioners),
    brought to `shape` (default the affinities' own) and small objects merged."""
    shape = affs.shape[1:] if shape is None else shape
    segs = partition(affs, offsets, test_cfg, methods or test_cfg["partitioners"], mask)
    return {method: finish(seg, shape, test_cfg) for method, seg in segs.items()}


def segment_sample(model: torch.nn.Module, sample: Sample, cfg: Mapping, offsets: Sequence[Offset],
                   device: torch.device, methods: Sequence[str] | None = None) -> dict:
    """Predict and partition one sample; segmentations come back at the original shape.

    Returns {"affs": (C, *spatial) at the working resolution, "fg": probability or None,
    "mask": the partitioner's mask or None, "seg": {method: labels}}; `methods` defaults to
    TEST.partitioners.
    """
    test = cfg["TEST"]
    affs, fg = predict(model, sample.image, offsets, cfg, device)
    mask = foreground_mask(sample, fg, test)
    segs = segment(affs, offsets, test, mask, sample.shape, methods)
    return {"affs": affs, "fg": fg, "mask": mask, "seg": segs}
