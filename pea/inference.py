"""Prediction: affinities = ReLU(SCM of the full-resolution embedding), for the whole image
(padded to DATA.padded_size) or by overlapping sliding windows (TEST.window); then instances
by the partitioners TEST.partitioners names (docs/method.md section 7)."""
from __future__ import annotations

import sys
from functools import partial
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
from pea.windows import WindowGrid, fill_first_plane, gaussian_weight  # noqa: F401 (re-exported)
from pea.windows import starts as _starts  # noqa: F401 (re-exported)


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


@torch.no_grad()
def predict_volume(model: torch.nn.Module, volume: np.ndarray, offsets: Sequence[Offset], window: Sequence[int],
                   overlap: Sequence[int], data_cfg: Mapping, device: torch.device,
                   progress: bool = True, batch: int = 1, amp: str = "off") -> np.ndarray:
    """Affinities (C, *spatial) of a volume (*spatial, C_in) by overlapping sliding windows,
    `batch` windows per forward pass (TEST.window_batch), blended on the device.

    Each window's affinities count only where the partner voxel lies inside the window, and
    are blended with separable ramp weights (`pea.windows.WindowGrid`, blend `ramp`): memory
    is the input, the output and one batch of windows.
    """
    grid = WindowGrid.create(volume.shape[:-1], offsets, window, overlap, "ramp")
    return _blend_whole(grid, model, volume, data_cfg, device, progress, batch, amp)


@torch.no_grad()
def predict_volume_gaussian(model: torch.nn.Module, volume: np.ndarray, offsets: Sequence[Offset],
                            window: Sequence[int], overlap: Sequence[int], context: Sequence[int] | None,
                            data_cfg: Mapping, device: torch.device, progress: bool = True, batch: int = 1,
                            amp: str = "off") -> np.ndarray:
    """The authors' sliding windows: the volume reflect-padded by `context`, windows at
    stride window - overlap (the last one flush with the end), the unit-step channels' first
    plane filled, ReLU, and a Gaussian-weighted mean of all windows; cropped back."""
    grid = WindowGrid.create(volume.shape[:-1], offsets, window, overlap, "gaussian", context)
    return _blend_whole(grid, model, volume, data_cfg, device, progress, batch, amp)


def _blend_whole(grid: WindowGrid, model: torch.nn.Module, volume: np.ndarray, data_cfg: Mapping,
                 device: torch.device, progress: bool, batch: int = 1, amp: str = "off") -> np.ndarray:
    whole = tuple(slice(0, n) for n in grid.shape)
    bar = partial(tqdm, desc="sliding windows", disable=not progress, leave=False)
    return grid.blend(partial(run_model, model, amp=amp), volume, whole,
                      partial(to_input, mode=data_cfg["normalize"], device=device), bar, batch)


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
