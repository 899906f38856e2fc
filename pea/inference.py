"""Prediction: affinities = ReLU(SCM of the full-resolution embedding), for the whole image
(padded) or by overlapping sliding windows; then instances by the partitioners named
(docs/method.md section 7).

Every function takes arrays and keyword arguments with documented defaults;
`PredictOptions` and `SegmentOptions` gather those arguments for the pipelines that pass them
along (training validation, the inference scripts). `pea.settings` turns a config into them.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from functools import partial
from typing import Callable, Sequence

import numpy as np
import torch
from skimage.morphology import remove_small_objects
from skimage.segmentation import relabel_sequential
from tqdm import tqdm

from pea.affinity import Offset, embedding_affinity
from pea.augment import normalize
from pea.config import PARTITIONERS
from pea.errors import PEAInputError
from pea.data.common import Sample, crop_slices, pad_to, padded_shape, resize
from pea.postprocess import merge_small_objects, mutex_watershed
from pea.windows import WindowGrid


def select_device(name: str = "auto", quiet: bool = False) -> torch.device:
    """CUDA when available (or asked for), else the CPU with a one-line notice (unless `quiet`:
    the other ranks of a torchrun job)."""
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
    if not quiet:
        print("notice: CUDA is not available, running on the CPU", file=sys.stderr)
    return torch.device("cpu")


def to_input(image: np.ndarray, mode: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """(*spatial, C) image in [0, 1] -> normalised (1, C, *spatial) tensor."""
    x = normalize(image, mode)
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 0)))[None].to(device)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a network's first parameter (the CPU for a network without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


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


@dataclass(frozen=True)
class PredictOptions:
    """How affinities are computed (the keyword arguments of `predict`).

    normalize: input normalisation of the [0, 1] image (none, unit, imagenet, percentile:
        `pea.augment.normalize`); padded_size, pad_mode: whole-image inference pads to this
        size (None: the next multiple of 16) by reflection or with zeros; window, overlap:
        sliding windows (None: the whole image at once); blend: ramp (the project's) or gaussian
        (the authors'), context: the gaussian windows' reflect-padding per axis; batch: windows
        per forward pass; amp: off, bf16 or fp16 autocast of the network.
    """

    normalize: str = "none"
    padded_size: Sequence[int] | None = None
    pad_mode: str = "reflect"
    window: Sequence[int] | None = None
    overlap: Sequence[int] | None = None
    blend: str = "ramp"
    context: Sequence[int] | None = None
    batch: int = 1
    amp: str = "off"


@dataclass(frozen=True)
class SegmentOptions:
    """How instances are made from affinities (the keyword arguments of `segment`), which
    mask the partitioners get (`foreground_mask`: mask none, gt or pred; fg_min_size and
    fg_connectivity clean the predicted one) and, for whole-image prediction, whether the
    padding is cropped off the affinities before partitioning (crop_padding ``first``) or off
    the merged segmentation (``last``, the authors' CVPPP pipeline; see `segment_sample`)."""

    methods: Sequence[str] = ("mutex",)
    strides: Sequence[int] | None = None
    fragments: str = "project"
    waterz_threshold: float = 0.5
    waterz_scoring: str = "mean"
    mutex_numbering: str = "sorted"
    small_objects: Sequence = ()
    merge_rule: str = "contact"
    mask: str = "none"
    fg_min_size: int = 0
    fg_connectivity: int = 1
    crop_padding: str = "first"

    def partition_args(self) -> dict:
        """The keyword arguments of `segment` (all but the mask's and crop_padding)."""
        skip = ("methods", "mask", "fg_min_size", "fg_connectivity", "crop_padding")
        return {k: v for k, v in asdict(self).items() if k not in skip}


@torch.no_grad()
def predict_image(model: torch.nn.Module, image: np.ndarray, offsets: Sequence[Offset], *,
                  device: torch.device | str | None = None, normalize: str = "none",
                  padded_size: Sequence[int] | None = None, pad_mode: str = "reflect",
                  amp: str = "off", crop: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Affinities (C, *spatial) and foreground probability (*spatial) or None for one whole
    image (*spatial, C) in [0, 1], padded to `padded_size` (default: the next multiple of 16)
    by `pad_mode` (reflect | zero) and cropped back (with `crop` False: left padded, to be
    cropped by `pea.data.common.crop_slices`)."""
    device = device or model_device(model)
    padded, window = pad_to(image, padded_shape(image.shape[:-1], padded_size), pad_mode)
    window = window if crop else tuple(slice(None) for _ in window)
    out = run_model(model, to_input(padded, normalize, device), amp)
    affs = torch.relu(embedding_affinity(out["embeddings"][0], offsets))[0]
    affs = affs[(slice(None),) + window].float().cpu().numpy()
    fg = out.get("foreground")
    if fg is not None:
        fg = torch.softmax(fg.float(), dim=1)[0, 1][window].cpu().numpy()
    return affs, fg


@torch.no_grad()
def predict_windows(model: torch.nn.Module, volume: np.ndarray, offsets: Sequence[Offset], window: Sequence[int], *,
                    overlap: Sequence[int] | None = None, blend: str = "ramp", context: Sequence[int] | None = None,
                    device: torch.device | str | None = None, normalize: str = "none", batch: int = 1,
                    amp: str = "off", progress: bool | Callable = True) -> np.ndarray:
    """Affinities (C, *spatial) of an image or volume (*spatial, C_in) by overlapping sliding
    windows, `batch` windows per forward pass, blended on the device (`pea.windows.WindowGrid`);
    `progress`: a tqdm bar (True), none (False), or a callable wrapping the iterable of window
    batches (e.g. napari's progress bar).

    blend ``ramp`` (the project's): an affinity counts only from windows holding both of its
    voxels, blended with separable linear ramps; ``gaussian`` (the authors'): the volume
    reflect-padded by `context`, the unit-step channels' first plane filled, Gaussian weights.
    Memory is the input, the output and one batch of windows.
    """
    device = device or model_device(model)
    grid = WindowGrid.create(volume.shape[:-1], offsets, window, overlap or [0] * len(window), blend, context)
    whole = tuple(slice(0, n) for n in grid.shape)
    bar = progress if callable(progress) else partial(tqdm, desc="sliding windows", disable=not progress, leave=False)
    return grid.blend(partial(run_model, model, amp=amp), volume, whole,
                      partial(to_input, mode=normalize, device=device), bar, batch)


def predict(model: torch.nn.Module, image: np.ndarray, offsets: Sequence[Offset], *,
            device: torch.device | str | None = None, normalize: str = "none",
            padded_size: Sequence[int] | None = None, pad_mode: str = "reflect",
            window: Sequence[int] | None = None, overlap: Sequence[int] | None = None, blend: str = "ramp",
            context: Sequence[int] | None = None, batch: int = 1, amp: str = "off",
            progress: bool | Callable = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Affinities and foreground probability (or None) of one image or volume (*spatial, C):
    by sliding windows when `window` is given (`predict_windows`), else of the whole image
    at once (`predict_image`). The arguments are those of `PredictOptions`."""
    if window:
        return predict_windows(model, image, offsets, window, overlap=overlap, blend=blend, context=context,
                               device=device, normalize=normalize, batch=batch, amp=amp, progress=progress), None
    return predict_image(model, image, offsets, device=device, normalize=normalize, padded_size=padded_size,
                         pad_mode=pad_mode, amp=amp)


def foreground_mask(fg_prob: np.ndarray | None = None, *, mode: str = "none", given: np.ndarray | None = None,
                    min_size: int = 0, connectivity: int = 1, name: str = "image") -> np.ndarray | None:
    """The mask for the partitioners: the `given` foreground (mode ``gt``), the predicted one
    (``pred``: `fg_prob` > 0.5, specks under `min_size` pixels connected by faces (1) or also
    by corners (2) removed) or none (``none``). `name` names the image in errors."""
    if mode == "gt":
        if given is None:
            raise PEAInputError(f"{name}: TEST.mask 'gt' needs the sample's foreground mask, which it lacks "
                                f"(TEST.mask pred or none)")
        return given.astype(bool)
    if mode == "pred":
        if fg_prob is None:
            raise PEAInputError(f"{name}: TEST.mask 'pred' needs the network's foreground head, which it lacks "
                                f"(MODEL.fg_head false; TEST.mask gt or none)")
        mask = fg_prob > 0.5
        if min_size > 0:
            mask = remove_small_objects(mask, max_size=int(min_size) - 1, connectivity=int(connectivity))
        return mask
    return None


def _graph_partition(affs: np.ndarray, offsets: Sequence[Offset], methods: Sequence[str], fragments: str,
                     threshold: float, scoring: str) -> dict[str, np.ndarray]:
    """waterz and lmc on the `fragments` graph: ``project`` (one `fragments_3d` for both, lmc
    costs from every offset) or ``official`` (the paper code's per-section fragments of each);
    waterz scores merges by `scoring` (`pea.postprocess.WATERZ_SCORES`)."""
    from pea.postprocess import (WATERZ_SCORES, fragments_3d, maxima_fragments, multicut_segment,
                                 official_multicut, waterz_segment)

    wanted = [m for m in ("waterz", "lmc") if m in methods]
    if not wanted:
        return {}
    if scoring not in WATERZ_SCORES:
        raise ValueError(f"unknown waterz scoring {scoring!r} ({', '.join(WATERZ_SCORES)})")
    score = WATERZ_SCORES[scoring]
    if fragments == "official":
        run = {"waterz": lambda: waterz_segment(affs, threshold, score, fragments=maxima_fragments(affs)),
               "lmc": lambda: official_multicut(affs, offsets)}
    else:
        frags = fragments_3d(affs)
        run = {"waterz": lambda: waterz_segment(affs, threshold, score, fragments=frags),
               "lmc": lambda: multicut_segment(affs, offsets, fragments=frags)}
    return {m: run[m]() for m in wanted}


def partition(affs: np.ndarray, offsets: Sequence[Offset], methods: Sequence[str] = ("mutex",), *,
              strides: Sequence[int] | None = None, mask: np.ndarray | None = None, fragments: str = "project",
              waterz_threshold: float = 0.5, waterz_scoring: str = "mean",
              mutex_numbering: str = "sorted") -> dict[str, np.ndarray]:
    """Instances from affinities (C, *spatial) by each partitioner in `methods`: ``mutex``
    (Mutex Watershed, long-range edges at `strides`, None: every edge; segments numbered as
    `mutex_numbering` says, `pea.postprocess.mutex_watershed`), ``waterz`` (agglomeration to
    `waterz_threshold`, merges scored by `waterz_scoring`: mean | median affinity) and ``lmc``
    (lifted multicut), the last two on the `fragments` graph (project | official). Pixels
    outside `mask` get 0."""
    unknown = [m for m in methods if m not in PARTITIONERS]
    if unknown:
        raise ValueError(f"unknown partitioner '{unknown[0]}' ({', '.join(PARTITIONERS)})")
    segs = _graph_partition(affs, offsets, methods, fragments, waterz_threshold, waterz_scoring)
    if mask is not None:
        for seg in segs.values():
            seg[~mask] = 0
    if "mutex" in methods:
        segs["mutex"] = mutex_watershed(affs, offsets, strides, mask, mutex_numbering)
    return {method: segs[method] for method in methods}


def finish(seg: np.ndarray, shape: Sequence[int] | None = None, *, small_objects: Sequence = (),
           merge_rule: str = "contact") -> np.ndarray:
    """A partition brought to `shape` (the original image size, when working at another scale;
    None: as it is), then small objects merged (`small_objects` in original pixels: sizes for
    the ``contact`` rule, [threshold, window] pairs for ``window``, see
    `pea.postprocess.merge_small_objects`) and ids made 1..N in the order of the merged ids."""
    if shape is not None and tuple(shape) != seg.shape:
        seg = resize(seg.astype(np.int64), shape, nearest=True)
    if small_objects:
        merged = merge_small_objects(seg, small_objects, merge_rule)
        seg = relabel_sequential(merged)[0]
    return seg


def segment(affs: np.ndarray, offsets: Sequence[Offset], methods: Sequence[str] = ("mutex",), *,
            strides: Sequence[int] | None = None, mask: np.ndarray | None = None, fragments: str = "project",
            waterz_threshold: float = 0.5, waterz_scoring: str = "mean", mutex_numbering: str = "sorted",
            small_objects: Sequence = (), merge_rule: str = "contact",
            shape: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """{method: labels}: `partition` by each of `methods`, then `finish` (brought to `shape`,
    small objects merged)."""
    segs = partition(affs, offsets, methods, strides=strides, mask=mask, fragments=fragments,
                     waterz_threshold=waterz_threshold, waterz_scoring=waterz_scoring,
                     mutex_numbering=mutex_numbering)
    return {m: finish(seg, shape, small_objects=small_objects, merge_rule=merge_rule) for m, seg in segs.items()}


def _segment_padded(model: torch.nn.Module, sample: Sample, offsets: Sequence[Offset], methods: Sequence[str],
                    device, predict_options: PredictOptions, opts: SegmentOptions) -> dict:
    """`segment_sample` with crop_padding ``last``: the partitioners and the merging run on the
    padded image (its mask zero-padded), the results are cropped to the image last."""
    if tuple(sample.image.shape[:-1]) != tuple(sample.shape):
        raise PEAInputError(f"{sample.name}: TEST.crop_padding 'last' partitions the padded image at the "
                            f"image's own resolution; the image is read at {sample.image.shape[:-1]}, not "
                            f"{tuple(sample.shape)} (DATA.scale 1, or TEST.crop_padding first)")
    po = predict_options
    affs, fg = predict_image(model, sample.image, offsets, device=device, normalize=po.normalize,
                             padded_size=po.padded_size, pad_mode=po.pad_mode, amp=po.amp, crop=False)
    crop = crop_slices(sample.shape, affs.shape[1:])
    given = None if sample.fg is None else pad_to(sample.fg, affs.shape[1:], "zero")[0]
    padded = segment_predicted(affs, fg, offsets, opts, methods=methods, given=given, name=sample.name)
    mask = padded["mask"]
    return {"affs": affs[(slice(None),) + crop], "fg": None if fg is None else fg[crop],
            "mask": None if mask is None else mask[crop], "seg": {m: seg[crop] for m, seg in padded["seg"].items()}}


def segment_sample(model: torch.nn.Module, sample: Sample, offsets: Sequence[Offset], *,
                   device: torch.device | str | None = None, predict_options: PredictOptions = PredictOptions(),
                   segment_options: SegmentOptions = SegmentOptions(),
                   methods: Sequence[str] | None = None) -> dict:
    """Predict and partition one sample; segmentations come back at the original shape.

    Whole-image prediction pads the image (`predict_image`); with the options' crop_padding
    ``first`` the affinities are cropped back before partitioning, with ``last`` the padded
    image is partitioned and merged and the segmentation cropped last (`_segment_padded`;
    sliding windows have no padding to crop).

    Returns {"affs": (C, *spatial) at the working resolution, "fg": probability or None,
    "mask": the partitioners' mask or None, "seg": {method: labels}}; `methods` defaults to
    the options' methods.
    """
    opts = segment_options
    if opts.crop_padding == "last" and not predict_options.window:
        return _segment_padded(model, sample, offsets, methods or opts.methods, device, predict_options, opts)
    affs, fg = predict(model, sample.image, offsets, device=device, **asdict(predict_options))
    return segment_predicted(affs, fg, offsets, opts, methods=methods, given=sample.fg, shape=sample.shape,
                             name=sample.name)


def segment_predicted(affs: np.ndarray, fg: np.ndarray | None, offsets: Sequence[Offset], options: SegmentOptions,
                      *, methods: Sequence[str] | None = None, given: np.ndarray | None = None,
                      shape: Sequence[int] | None = None, name: str = "") -> dict:
    """The second half of `segment_sample`, for affinities predicted by any means: the mask
    (`foreground_mask` of `fg` or the `given` one, as options.mask says), then `segment` by
    `methods` (default: the options') brought to `shape`. Returns the dict `segment_sample` does."""
    mask = foreground_mask(fg, mode=options.mask, given=given, min_size=options.fg_min_size,
                           connectivity=options.fg_connectivity, name=name)
    segs = segment(affs, offsets, methods or options.methods, mask=mask, shape=shape, **options.partition_args())
    return {"affs": affs, "fg": fg, "mask": mask, "seg": segs}
