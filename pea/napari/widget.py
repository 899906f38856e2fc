"""The Segment widget: a checkpoint (and, for the authors' checkpoints, a config), the device
and the partitioner; it segments the selected image layer (2D grey or RGB, or a 3D stack) in
a background thread (napari's `thread_worker`, progress in the activity dock) and adds the
labels, and on request the affinities (channel c: offset c, in the layer's metadata)."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, PushButton

from pea.config import shipped_configs
from pea.napari.segment import Segmentation, load, segment_data

PARTITIONERS = ("mutex", "waterz", "lmc")
STORED = "(stored in the checkpoint)"


def devices() -> list[str]:
    import torch

    return ["auto", "cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]


class SegmentWidget(Container):
    """The widget (module docstring); `run` starts a segmentation and returns its worker."""

    def __init__(self, viewer) -> None:
        self.viewer = viewer
        self.checkpoint = FileEdit(label="checkpoint", mode="r", filter="*.ckpt *.pth *.pt")
        self.config = ComboBox(label="config", choices=[STORED, *shipped_configs()], value=STORED)
        self.device = ComboBox(label="device", choices=devices(), value="auto")
        self.partitioner = ComboBox(label="partitioner", choices=list(PARTITIONERS), value="mutex")
        self.with_affinities = CheckBox(text="also add the affinities", value=False)
        self.run_button = PushButton(text="Segment the selected image")
        self.status = Label(value="select an image layer and a checkpoint")
        super().__init__(widgets=[self.checkpoint, self.config, self.device, self.partitioner,
                                  self.with_affinities, self.run_button, self.status])
        self.run_button.changed.connect(self.run)
        self.worker = None

    def run(self):
        from napari.layers import Image

        layer = self.viewer.layers.selection.active
        checkpoint = Path(str(self.checkpoint.value))
        if not isinstance(layer, Image) or layer.multiscale:
            self.status.value = "select an image layer (single scale)"
            return None
        if not checkpoint.is_file():
            self.status.value = f"{checkpoint}: choose a checkpoint file"
            return None
        config = None if self.config.value == STORED else self.config.value
        options = {"partitioner": self.partitioner.value, "affinities": self.with_affinities.value}
        worker = segment_worker(np.asarray(layer.data), checkpoint, config, self.device.value,
                                options["partitioner"], layer.name)
        worker.returned.connect(partial(self.add_layers, layer, options))
        worker.errored.connect(self.failed)
        worker.finished.connect(partial(setattr, self.run_button, "enabled", True))
        self.run_button.enabled = False
        self.status.value = f"segmenting {layer.name} ..."
        self.worker = worker
        worker.start()
        return worker

    def add_layers(self, layer, options: dict, result: Segmentation) -> None:
        scale, translate = np.asarray(layer.scale, float), np.asarray(layer.translate, float)
        self.viewer.add_labels(result.labels, name=f"{layer.name} {options['partitioner']}", scale=scale,
                               translate=translate)
        if options["affinities"]:
            factor = np.asarray(result.factor)
            self.viewer.add_image(result.affinities, name=f"{layer.name} affinities", colormap="magma",
                                  scale=[1.0, *(scale * factor)],
                                  translate=[0.0, *(translate + scale * (factor - 1) / 2)],
                                  metadata={"offsets": result.offsets}, visible=False)
        self.status.value = f"{layer.name}: {int(result.labels.max())} objects ({options['partitioner']})"

    def failed(self, error: Exception) -> None:
        self.status.value = f"failed: {error}"


def segment_worker(data: np.ndarray, checkpoint: Path, config: str | None, device: str, partitioner: str, name: str):
    """A napari thread worker (not started) returning the `Segmentation` of `data`."""
    from napari.qt.threading import thread_worker
    from napari.utils import progress

    @thread_worker(progress={"total": 2, "desc": f"PEA {name}"}, ignore_errors=True)  # the widget shows them
    def work():
        model, fg_head = load(checkpoint, config, device)
        yield
        result = segment_data(model, data, partitioner, fg_head=fg_head, name=name,
                              progress=partial(progress, desc="sliding windows"))
        yield
        return result

    return work()
