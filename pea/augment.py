"""2D training augmentation, input normalisation and the CCM second view.

The geometric part (random resized crop, flips, occasional random affine) is composed into one
affine map and applied once with OpenCV: linear interpolation for the image, nearest for the
labels, reflected borders for both, so image and labels stay aligned.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import cv2
import numpy as np
import torch

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def normalize(image: np.ndarray, mode: str) -> np.ndarray:
    """Network input from an image in [0, 1] (..., H, W, C): ImageNet mean/std for RGB,
    zero-centred for grey images."""
    if mode == "imagenet":
        return ((image - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)
    return ((image - 0.5) / 0.25).astype(np.float32)


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
    """Random resized crop, flips, occasional affine and intensity jitter (METHOD.md section 6).

    Called with an image (H, W, C) float32 in [0, 1] and labels (H, W); returns both at
    `crop_size`. The crop region has `crop_scale` times the crop's area (capped by the image).
    """

    def __init__(self, data_cfg: Mapping):
        self.cfg = data_cfg
        self.crop = np.array(data_cfg["crop_size"][::-1], dtype=np.float64)  # (w, h)

    def geometry(self, rng: np.random.Generator, shape: Sequence[int]) -> np.ndarray:
        """The 2x3 map from output (x, y) to input (x, y) coordinates."""
        cfg = self.cfg
        img = np.array(shape[1::-1], dtype=np.float64)  # (w, h)
        region = np.minimum(img, self.crop * np.sqrt(rng.uniform(*cfg["crop_scale"])))
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
        m = self.geometry(rng, image.shape[:2])
        size = (int(self.crop[0]), int(self.crop[1]))
        flags = cv2.WARP_INVERSE_MAP
        out = cv2.warpAffine(image, m, size, flags=flags | cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        lab = cv2.warpAffine(labels.astype(np.float32), m, size, flags=flags | cv2.INTER_NEAREST,
                             borderMode=cv2.BORDER_REFLECT_101)
        if out.ndim == 2:
            out = out[..., None]
        return self.intensity(rng, out), lab.astype(labels.dtype)


def second_view(x: torch.Tensor, labels: torch.Tensor, loss_cfg: Mapping,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[int]]:
    """The CCM view of a batch (B, C, *spatial): intensity change, random blanking of
    foreground blocks, random flip. Returns the view and the flipped dims (to undo)."""
    b, ndim = x.shape[0], x.ndim - 2
    dev = x.device

    def rand(*shape):
        return torch.rand(shape, generator=generator).to(dev)

    amount = loss_cfg["ccm_intensity"]
    scale = 1 + amount * (2 * rand(b, x.shape[1], *([1] * ndim)) - 1)
    shift = amount * (2 * rand(b, x.shape[1], *([1] * ndim)) - 1)
    view = x * scale + shift
    if loss_cfg["ccm_mask_prob"] > 0:
        # blank a random coarse grid of blocks (1/8 of each spatial size) inside the foreground
        coarse = [max(1, s // max(1, s // 8)) for s in x.shape[2:]]
        blocks = (rand(b, 1, *coarse) < 0.25).float()
        blocks *= (rand(b, 1, *([1] * ndim)) < loss_cfg["ccm_mask_prob"]).float()
        blocks = torch.nn.functional.interpolate(blocks, size=x.shape[2:], mode="nearest")
        blank = blocks * (labels > 0).unsqueeze(1).float()
        view = view * (1 - blank)
    dims: list[int] = []
    if loss_cfg["ccm_flip"]:
        dims = [d + 2 for d in range(ndim) if float(rand(1)) < 0.5 and x.shape[d + 2] > 1]
        if dims:
            view = torch.flip(view, dims)
    return view, dims


def undo_flip(tensor: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """Flip back the dims flipped by `second_view`."""
    return torch.flip(tensor, list(dims)) if dims else tensor
