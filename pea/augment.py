"""2D training augmentation and input normalisation.

The geometric part (random resized crop, flips, occasional random affine) is composed into one
affine map and applied once with OpenCV: linear interpolation for the image, nearest for the
labels, reflected borders for both, so image and labels stay aligned. With DATA.train_pad the
image (mirrored) and labels (zeros) are first padded to DATA.padded_size, as the authors' CVPPP
training does.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import cv2
import numpy as np
import torch

from pea import schema as S
from pea.schema import Key

# The DATA keys `Augment2D` reads; the 2D readers add them to theirs.
_UNIT, _PAIR = S.number(0, 1), S.sequence(S.number(0, 1, above=True), length=2)
AUGMENT_2D_KEYS: dict[str, Key] = {
    "train_pad": Key(False, S.boolean,
                     "pad image (reflection) and labels (zeros) to DATA.padded_size before cropping"),
    "crop_scale": Key([0.7, 1.0], _PAIR, "random resized crop: region area / crop area ..."),
    "crop_ratio": Key([1.0, 1.0], S.sequence(S.number(0, above=True), length=2),
                      "... and its aspect (width / height), log-uniform in this range"),
    "flip": Key(True, S.boolean, "random flips"),
    "affine_prob": Key(0.3, _UNIT, "chance of a random affine warp ..."),
    "rotation": Key(10.0, S.number(0, 180), "... rotating by up to this many degrees,"),
    "translation": Key(0.1, _UNIT, "... shifting by up to this fraction of the size,"),
    "shear": Key(0.1, S.number(0, 1), "... shearing by up to this,"),
    "zoom": Key([0.7, 1.0], S.sequence(S.number(0, above=True), length=2), "... and zooming within this range"),
    "intensity_prob": Key(0.8, _UNIT, "chance of an intensity change ..."),
    "brightness": Key(0.1, _UNIT, "... brightness shifted by up to +- this,"),
    "contrast": Key(0.2, _UNIT, "... contrast factor 1 +- up to this,"),
    "gamma": Key(0.2, _UNIT, "... and gamma 1 +- up to this"),
}

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _mean_std(mode: str) -> tuple[np.ndarray, np.ndarray]:
    """The (per-channel) mean and std that `normalize` maps to 0 and 1."""
    if mode == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    if mode == "none":
        return np.float32(0.0), np.float32(1.0)
    return np.float32(0.5), np.float32(0.25)


def normalize(image: np.ndarray, mode: str) -> np.ndarray:
    """Network input from an image in [0, 1] (..., H, W, C): ImageNet mean/std for RGB
    ('imagenet'), the image as it is ('none'), else zero-centred ((x - 0.5) / 0.25)."""
    mean, std = _mean_std(mode)
    return ((image - mean) / std).astype(np.float32)


def normalize_tensor(x: torch.Tensor, mode: str, inverse: bool = False) -> torch.Tensor:
    """`normalize` of a (B, C, *spatial) tensor, or with `inverse` the [0, 1] image of a network input."""
    mean, std = (torch.as_tensor(np.atleast_1d(v), device=x.device, dtype=x.dtype).view(1, -1, *([1] * (x.ndim - 2)))
                 for v in _mean_std(mode))
    return x * std + mean if inverse else (x - mean) / std


def _affine(rng: np.random.Generator, cfg: Mapping, center: np.ndarray, size: np.ndarray) -> np.ndarray:
    """A 3x3 random affine (rotation, shear, zoom, translation) about `center`, (x, y) order."""
    angle = np.deg2rad(rng.uniform(-cfg["rotation"], cfg["rotation"]))
    shear = rng.uniform(-cfg["shear"], cfg["shear"])
    zoom = rng.uniform(*cfg["zoom"])
    shift = rng.uniform(-cfg["translation"], cfg["translation"], size=2) * size
    cos, sin = np.cos(angle), np.sin(angle)
    linear = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, shear], [0.0, 1.0]]) / zoom
    m = np.eye(3)
    m[:2, :2] = linear
    m[:2, 2] = center - linear @ center + shift
    return m


class Augment2D:
    """Random resized crop, flips, occasional affine and intensity jitter (docs/method.md section 6).

    Called with an image (H, W, C) float32 in [0, 1] and labels (H, W); returns both at
    `crop_size`. The crop region has `crop_scale` times the crop's area (capped by the image).
    """

    def __init__(self, data_cfg: Mapping):
        self.cfg = data_cfg
        self.crop = np.array(data_cfg["crop_size"][::-1], dtype=np.float64)  # (w, h)

    def region(self, rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
        """The (w, h) of the random resized crop's region: area crop_scale times the crop's,
        aspect in crop_ratio; drawn again (up to 10 times, as torchvision's RandomResizedCrop)
        until it fits the image, else capped by it."""
        ratio = np.log(np.asarray(self.cfg["crop_ratio"], dtype=np.float64))
        for _ in range(10):
            region = self.crop * np.sqrt(rng.uniform(*self.cfg["crop_scale"]))
            if ratio[1] > ratio[0]:
                region *= np.exp(rng.uniform(*ratio) * np.array([0.5, -0.5]))
            if (region <= img).all():
                return region
        return np.minimum(img, region)

    def geometry(self, rng: np.random.Generator, shape: Sequence[int]) -> np.ndarray:
        """The 2x3 map from output (x, y) to input (x, y) coordinates."""
        cfg = self.cfg
        img = np.array(shape[1::-1], dtype=np.float64)  # (w, h)
        region = self.region(rng, img)
        origin = rng.uniform(0, 1, size=2) * (img - region)
        m = np.diag([*(region / self.crop), 1.0])
        m[:2, 2] = origin + 0.5 * (region / self.crop) - 0.5
        if cfg["flip"]:
            flip = np.eye(3)
            for axis in range(2):
                if rng.random() < 0.5:
                    flip[axis, axis] = -1
                    flip[axis, 2] = self.crop[axis] - 1
            m = m @ flip
        if rng.random() < cfg["affine_prob"]:
            m = m @ _affine(rng, cfg, (self.crop - 1) / 2, self.crop)
        return m[:2]

    def intensity(self, rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
        cfg = self.cfg
        if rng.random() >= cfg["intensity_prob"]:
            return image
        gamma = 1.0 + rng.uniform(-cfg["gamma"], cfg["gamma"])
        contrast = 1.0 + rng.uniform(-cfg["contrast"], cfg["contrast"])
        bright = rng.uniform(-cfg["brightness"], cfg["brightness"])
        return np.clip(np.power(np.clip(image, 0, 1), gamma) * contrast + bright, 0, 1).astype(np.float32)

    def __call__(self, image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if self.cfg["train_pad"]:
            from pea.data.common import pad_to, padded_shape  # pea.data imports this module (its keys)

            size = padded_shape(image.shape[:2], self.cfg["padded_size"])
            image, labels = pad_to(image, size, "reflect")[0], pad_to(labels, size, "zero")[0]
        m = self.geometry(rng, image.shape[:2])
        size = (int(self.crop[0]), int(self.crop[1]))
        flags = cv2.WARP_INVERSE_MAP
        out = cv2.warpAffine(image, m, size, flags=flags | cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        lab = cv2.warpAffine(labels.astype(np.float32), m, size, flags=flags | cv2.INTER_NEAREST,
                             borderMode=cv2.BORDER_REFLECT_101)
        if out.ndim == 2:
            out = out[..., None]
        return self.intensity(rng, out), lab.astype(labels.dtype)
