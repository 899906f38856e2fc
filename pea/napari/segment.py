"""What the widget runs, without Qt: a checkpoint's network on an image layer's data."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from pea.errors import PEAInputError


@dataclass
class Segmentation:
    """Labels at the layer's size; affinities (C, *spatial) at the working resolution, which is
    `factor` label pixels per affinity pixel along each spatial axis."""

    labels: np.ndarray
    affinities: np.ndarray
    factor: tuple[float, ...]
    offsets: list


def load(checkpoint: str | Path, config: str | None = None, device: str = "auto"):
    """The network of `checkpoint` (`pea.load_model`; `config` names one for the authors'
    checkpoints) on `device`, and whether it has a foreground head."""
    import pea
    from pea.checkpoint import checkpoint_model_config, load_checkpoint
    from pea.inference import select_device

    model = pea.load_model(checkpoint, config=config or None, device=select_device(device))
    if model.offsets is None:
        raise PEAInputError(f"{checkpoint}: no offsets (the authors' checkpoints carry no config); choose a config")
    return model, bool(checkpoint_model_config(load_checkpoint(checkpoint)).get("fg_head"))


def segment_data(model, data, partitioner: str = "mutex", *, fg_head: bool = False, device=None,
                 progress=True, name: str = "image") -> Segmentation:
    """Labels of a layer's data by `partitioner` as `pea predict` makes them: a grey or RGB
    image (H, W[, C]) for a 2D network (Mutex Watershed; the config's scale, mask and
    small-object merging), a stack (Z, Y, X) for a 3D network (in memory, as `--whole`;
    `progress` as `pea.inference.predict_windows`'s)."""
    from pea.api import network_input
    from pea.data.common import Sample, rescale
    from pea.inference import predict, segment, segment_sample
    from pea.predict import image_segment_options

    data = np.asarray(data)
    options = replace(model.segment_options, methods=(partitioner,))
    if model.spatial_dims == 2:
        if data.ndim == 3 and data.shape[-1] not in (3, 4):
            raise PEAInputError(f"{name}: a 2D network takes a grey or RGB image; the layer has shape {data.shape}")
        image = network_input(model, data)
        sample = Sample(name, rescale(image, model.scale, nearest=False), shape=image.shape[:2])
        result = segment_sample(model, sample, model.offsets, device=device, predict_options=model.predict_options,
                                segment_options=image_segment_options(options, fg_head, name))
        labels, affs = result["seg"][partitioner], result["affs"]
    else:
        affs, _ = predict(model, network_input(model, data), model.offsets, device=device, progress=progress,
                          **asdict(model.predict_options))
        labels = segment(affs, model.offsets, [partitioner], **options.partition_args())[partitioner]
    factor = tuple(n / m for n, m in zip(labels.shape, affs.shape[1:]))
    return Segmentation(labels, affs, factor, [list(o) for o in model.offsets])
