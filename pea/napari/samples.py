"""Sample data of the napari plugin: one look-alike image or stack (`pea.synth.samples`) and
its ground truth (hidden), so the widget can be tried without data."""
from __future__ import annotations

from pea.synth import samples


def plant() -> list[tuple]:
    image, labels = samples.plant((256, 256), seed=1)
    return [(image, {"name": "plant", "rgb": True}, "image"),
            (labels, {"name": "plant ground truth", "visible": False}, "labels")]


def nuclei() -> list[tuple]:
    image, labels = samples.nuclei((256, 256), seed=1)
    return [(image, {"name": "nuclei"}, "image"),
            (labels, {"name": "nuclei ground truth", "visible": False}, "labels")]


def em_volume() -> list[tuple]:
    image, labels = samples.em_volume((16, 128, 128), seed=1)
    return [(image, {"name": "EM stack"}, "image"),
            (labels, {"name": "EM ground truth", "visible": False}, "labels")]
