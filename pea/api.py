"""The Python interface in four calls (README "Python"):

    import pea
    model = pea.load_model("models/cvppp_demo/best.ckpt")      # the authors': config="cvppp"
    affs = pea.affinities(model, image)                        # (C, H, W) or (C, Z, Y, X) float32
    labels = pea.segment(affs, model.offsets, method="mutex", strides=[5, 5], mask=None)
    scores = pea.evaluate(labels, gt, metrics=["sbd", "aji", "voi"])

`load_model` reads the checkpoint's config (or the one named) once and keeps what prediction
needs on the network: `model.offsets`, `model.predict_options` (normalisation, padding,
sliding windows: `pea.inference.PredictOptions`), `model.segment_options` (the config's
partitioners, strides, merging: `pea.inference.SegmentOptions`), `model.in_channels`,
`model.percentiles` and `model.scale`. The other three take arrays and keyword arguments.
"""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from pea.affinity import Offset
from pea.errors import PEAInputError


def load_model(path: str | Path, config: str | Path | None = None,
               device: torch.device | str = "cpu") -> torch.nn.Module:
    """The network of a checkpoint (the project's, or the authors' with `config` naming a
    shipped config such as "cvppp", "bbbc039v1", "ac3ac4", or a .yaml path), in eval mode on
    `device`, carrying its offsets and prediction settings (see the module docstring).

    It maps (N, C, H, W) or (N, C, Z, Y, X) to {"embeddings": [full, 1/2, 1/4, 1/8, 1/16],
    "foreground": logits or None}. An authors' checkpoint loaded without `config` (or a
    checkpoint whose config states no offsets) is the bare network: `model.offsets` is None
    until a config says them."""
    from pea import settings
    from pea.checkpoint import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(path)
    model, model_cfg = model_from_checkpoint(ckpt, device, str(path))
    model.offsets = model.predict_options = model.segment_options = model.percentiles = None
    model.in_channels, model.scale = int(model_cfg.MODEL.in_channels), 1.0
    if config is None and not isinstance(ckpt.get("config"), dict):
        return model
    cfg = settings.checkpoint_config(ckpt, str(config) if config is not None else None, str(path))
    if not (cfg.DATA.shifts or cfg.DATA.offsets):  # a stored config of the network alone
        return model
    model.offsets = settings.offsets(cfg.DATA)[0]
    model.predict_options = settings.predict_options(cfg)
    model.segment_options = settings.segment_options(cfg.TEST)
    model.percentiles, model.scale = cfg.DATA.get("percentiles"), float(cfg.DATA.scale)
    return model


def network_input(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """An image (H, W), (H, W, C) for a 2D network, a volume (Z, Y, X) for a 3D one, as the
    network's (*spatial, in_channels) float32 input in [0, 1] (integers over their type's
    maximum, the config's percentiles applied)."""
    from pea.blockwise import UnitChannels
    from pea.predict import unit_image

    if model.spatial_dims == 2:
        return unit_image(image, model.in_channels, model.percentiles)
    volume = np.asarray(image)
    if volume.ndim != 3:
        raise PEAInputError(f"a 3D network takes a (Z, Y, X) volume; got an array of shape {volume.shape}")
    return UnitChannels(volume, model.in_channels, "volume")[(slice(None),) * 3]


def affinities(model: torch.nn.Module, image: np.ndarray, *, scale: float = 1.0,
               device: torch.device | str | None = None, **options) -> np.ndarray:
    """Affinities (C, *spatial) float32 of an image or volume (`network_input`), channel c
    holding the affinity of each pixel to the pixel `model.offsets[c]` away.

    scale: the image is resized by this factor first (2D; the affinities then have the resized
        shape): a network trained on resized images (DATA.scale, e.g. the CPU demos' 0.5)
        works best at that scale, `model.scale`; bring labels back with
        `segment(..., shape=image.shape[:2])`.
    options: override the checkpoint's `pea.inference.PredictOptions` (window, overlap, blend,
        batch, amp, normalize, padded_size, pad_mode).
    """
    from pea.data.common import rescale
    from pea.inference import PredictOptions, predict

    if model.offsets is None:
        raise PEAInputError("the network has no offsets: load the authors' checkpoint with "
                            "pea.load_model(path, config=NAME)")
    x = network_input(model, image)
    if scale != 1.0:
        x = rescale(x, float(scale), nearest=False)
    kwargs = asdict(replace(model.predict_options or PredictOptions(), **options))
    return predict(model, x, model.offsets, device=device, progress=False, **kwargs)[0]


def segment(affs: np.ndarray, offsets: Sequence[Offset], method: str = "mutex", *,
            strides: Sequence[int] | None = None, mask: np.ndarray | None = None, fragments: str = "project",
            waterz_threshold: float = 0.5, waterz_scoring: str = "mean", mutex_numbering: str = "sorted",
            small_objects: Sequence = (), merge_rule: str = "contact",
            shape: Sequence[int] | None = None) -> np.ndarray:
    """Instance labels (*spatial) from affinities (C, *spatial) and their offsets.

    method: ``mutex`` (Mutex Watershed; `strides`: long-range edges kept at this stride per
        axis, None every edge; segments numbered by elf's ids or, `mutex_numbering` fortran, by
        first appearance in Fortran order as the authors'), ``waterz`` (agglomeration of
        fragments to `waterz_threshold`, merges scored by the mean or, `waterz_scoring` median,
        the median affinity) or ``lmc`` (lifted multicut), the last two on the `fragments`
        graph (project | official); 3D and 2D alike.
    mask: pixels outside it get 0 (e.g. a foreground mask).
    small_objects, merge_rule: merging passes of `pea.postprocess.merge_small_objects` (sizes
        for ``contact``, [threshold, window] pairs for ``window``), after `shape` (labels
        resized to it, nearest neighbour).
    """
    from pea.inference import segment as segment_all

    return segment_all(affs, offsets, [method], strides=strides, mask=mask, fragments=fragments,
                       waterz_threshold=waterz_threshold, waterz_scoring=waterz_scoring,
                       mutex_numbering=mutex_numbering, small_objects=small_objects, merge_rule=merge_rule,
                       shape=shape)[method]


def evaluate(labels: np.ndarray, gt: np.ndarray, metrics: str | Iterable[str] | None = None, *,
             aji_ids: str = "present") -> dict[str, float]:
    """Scores of instance labels against ground truth (0 = background in both): selector names
    such as sbd, dic, aji, dice, pq, ap, voi, arand (`pea.metrics.evaluate`), default all; the
    AJI over the gt ids present or, `aji_ids` range, every id 1..max(gt) as the authors' code."""
    from pea.metrics import evaluate as evaluate_all

    return evaluate_all(labels, gt, metrics=metrics, aji_ids=aji_ids)
