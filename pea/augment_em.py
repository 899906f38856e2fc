"""EM augmentations of (z, y, x) training crops, as in pytorch_connectomics.

Every transform has the signature `f(image, labels, rng, **params) -> (image, labels)`: image
float32 in [0, 1], labels integer, both (z, y, x); outputs keep the input shapes and the labels
keep their dtype and take only ids present in the input (and 0 with zero borders). Geometric
transforms (flip, transpose, rotate90, rotate, rescale, elastic, misalign) move image and labels
together; the others change the image only. Out-of-volume samples are read by mirror reflection
(no new values at borders); rotate, rescale and elastic read zeros instead with border ``zero``
(the authors' 2D augmentation: cv2.BORDER_CONSTANT and constant np.pad).
`EMAugmenter` applies each transform with its probability, in the order of `TRANSFORMS`.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping

import cv2
import numpy as np

from pea import schema as S
from pea.errors import PEAInputError
from pea.noise import smooth_noise
from pea.schema import Key

Pair = tuple[np.ndarray, np.ndarray]


def _reflect(index: np.ndarray, size: int) -> np.ndarray:
    """Map integer indices into [0, size) by mirror reflection without repeating the edge."""
    if size == 1:
        return np.zeros_like(index)
    low, high = int(index.min()), int(index.max())
    if low >= 0 and high < size:
        return index
    period = 2 * (size - 1)
    if low <= -size or high >= period + 1:
        index = np.mod(index, period)
    index = np.abs(index)
    return np.where(index >= size, period - index, index)


def _square(image: np.ndarray) -> bool:
    return image.shape[1] == image.shape[2]


def flip(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, each: bool = False,
         swap: bool = False) -> Pair:
    """Flip along a random non-empty subset of the axes z, y, x; with `each`, flip each axis
    with chance 1/2 (possibly none) and with `swap` also swap y and x with chance 1/2 (square
    sections), the authors' flip (4 bits)."""
    if not each:
        mask = int(rng.integers(1, 8))
        axes = tuple(a for a in range(3) if (mask >> a) & 1)
        return np.flip(image, axes), np.flip(labels, axes)
    bits = rng.random(4) < 0.5
    axes = tuple(int(a) for a in np.flatnonzero(bits[:3]))
    image, labels = np.flip(image, axes), np.flip(labels, axes)
    if swap and bits[3] and _square(image):
        return image.transpose(0, 2, 1), labels.transpose(0, 2, 1)
    return image, labels


def transpose(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> Pair:
    """Swap y and x (square sections only; non-square crops are returned unchanged)."""
    if not _square(image):
        return image, labels
    return image.transpose(0, 2, 1), labels.transpose(0, 2, 1)


def rotate90(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> Pair:
    """Rotate in-plane by 90, 180 or 270 degrees (only 180 for non-square sections)."""
    k = int(rng.integers(1, 4)) if _square(image) else 2
    return np.rot90(image, k, axes=(1, 2)), np.rot90(labels, k, axes=(1, 2))


def intensity(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, contrast: float = 0.1,
              brightness: float = 0.1, gamma: float = 1.0, mode: str = "mix") -> Pair:
    """Contrast, brightness and gamma, drawn per section ('section'), once ('volume') or either ('mix').

    image * (1 + u1 * contrast) + u2 * brightness with u1, u2 uniform in [-0.5, 0.5], clipped to
    [0, 1], then raised to 2 ** u3 with u3 uniform in [-gamma, gamma].
    """
    if mode not in ("section", "volume", "mix"):
        raise PEAInputError(f"intensity mode '{mode}': use 'section', 'volume' or 'mix'")
    if mode == "mix":
        mode = "section" if rng.random() < 0.5 else "volume"
    shape = (image.shape[0], 1, 1) if mode == "section" else (1, 1, 1)
    u = rng.random((3,) + shape).astype(np.float32)
    out = image * (1.0 + (u[0] - 0.5) * contrast) + (u[1] - 0.5) * brightness
    out = np.clip(out, 0.0, 1.0) ** (2.0 ** ((2.0 * u[2] - 1.0) * gamma))
    return out.astype(np.float32), labels


BORDERS = {"reflect": cv2.BORDER_REFLECT_101, "zero": cv2.BORDER_CONSTANT}


def _remap(image: np.ndarray, labels: np.ndarray, ys: np.ndarray, xs: np.ndarray, border: str = "reflect") -> Pair:
    """Sample image (bilinear) and labels (nearest) at float coordinates ys, xs of shape (z|1, y, x);
    outside the section by mirror reflection (`border` reflect) or as 0 (zero)."""
    if border not in BORDERS:
        raise PEAInputError(f"EM augmentation border {border!r}: use {' or '.join(BORDERS)}")
    mode = BORDERS[border]
    out = np.empty_like(image)
    if len(ys) == 1:
        for start in range(0, len(image), 256):  # OpenCV handles up to 512 channels per call
            chunk = np.ascontiguousarray(image[start:start + 256].transpose(1, 2, 0))
            warped = cv2.remap(chunk, xs[0], ys[0], cv2.INTER_LINEAR, borderMode=mode)
            out[start:start + 256] = warped.reshape(chunk.shape).transpose(2, 0, 1)
    else:
        for z in range(len(image)):
            out[z] = cv2.remap(np.ascontiguousarray(image[z]), xs[z], ys[z], cv2.INTER_LINEAR, borderMode=mode)
    z, h, w = image.shape
    iy, ix = np.rint(ys).astype(np.int32), np.rint(xs).astype(np.int32)
    flat = (_reflect(iy, h) * w + _reflect(ix, w)).reshape(len(ys), -1)
    picked = np.take_along_axis(labels.reshape(z, h * w), np.broadcast_to(flat, (z, h * w)), axis=1)
    if border == "zero":
        inside = ((iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)).reshape(len(ys), -1)
        picked = np.where(inside, picked, 0).astype(labels.dtype)
    return out, picked.reshape(labels.shape)


def _grid(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape[-2:]
    ys, xs = np.mgrid[:h, :w].astype(np.float32)
    return ys, xs


def rotate(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, max_angle: float = 180.0,
           border: str = "reflect") -> Pair:
    """Rotate in-plane about the section centre by an angle uniform in +- `max_angle` degrees
    (180: any angle); image bilinear, labels nearest, borders mirrored (or zeros: `border`)."""
    ys, xs = _grid(image.shape)
    angle = np.deg2rad(rng.uniform(-max_angle, max_angle))
    cy, cx = (image.shape[1] - 1) / 2, (image.shape[2] - 1) / 2
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    src_y = cy + cos * (ys - cy) - sin * (xs - cx)
    src_x = cx + sin * (ys - cy) + cos * (xs - cx)
    return _remap(image, labels, src_y[None], src_x[None], border)


def rescale(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, low: float = 0.8,
            high: float = 1.2, fix_aspect: bool = False, border: str = "reflect") -> Pair:
    """Resample in-plane with a factor f in [low, high] per axis (one for both with
    `fix_aspect`): a window of f times the size, at a random place when f < 1 (a zoom in),
    centred when f > 1 (a zoom out, mirrored borders or zeros: `border`), resized to the
    section's size."""
    h, w = image.shape[1:]
    f = rng.uniform(low, high, 1 if fix_aspect else 2) * np.ones(2)
    size = np.array([h, w]) * f
    start = np.where(f <= 1, rng.random(2) * (np.array([h, w]) - size), (np.array([h, w]) - size) / 2)
    ys, xs = _grid(image.shape)
    src = [np.float32(s) + (g + 0.5) * np.float32(k) - 0.5 for s, g, k in zip(start, (ys, xs), f)]
    return _remap(image, labels, src[0][None], src[1][None], border)


def elastic(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, alpha: float = 2.0,
            sigma: float = 10.0, per_section: bool = False, border: str = "reflect") -> Pair:
    """In-plane elastic warp: smooth displacement (root-mean-square `alpha` px, smoothness `sigma` px).

    One field for all sections, or a new one per section with `per_section`; outside the
    section mirrored or zeros (`border`). Image bilinear,
    labels nearest neighbour; where the image interpolates across a label boundary it mixes
    the two sides, so image and labels agree exactly only away from boundaries.
    """
    z, h, w = image.shape
    dy, dx = smooth_noise(rng, (2, z if per_section else 1, h, w), (0, 0, sigma, sigma)) * alpha
    grid_y, grid_x = np.mgrid[:h, :w].astype(np.float32)
    return _remap(image, labels, grid_y + dy, grid_x + dx, border)


def misalign(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, max_shift: int = 8,
             slip_prob: float = 0.5) -> Pair:
    """Shift in-plane by up to `max_shift` px one section ('slip', chance `slip_prob`) or all from a section on.

    Image and labels move together; the uncovered border is filled by mirror reflection.
    """
    z, h, w = image.shape
    if z < 2 or max_shift < 1:
        return image, labels
    start = int(rng.integers(1, z))
    shift = np.zeros(2, np.int64)
    while not shift.any():
        shift = rng.integers(-max_shift, max_shift + 1, 2)
    stop = start + 1 if rng.random() < slip_prob else z
    yi = _reflect(np.arange(h) - shift[0], h)[:, None]
    xi = _reflect(np.arange(w) - shift[1], w)[None, :]
    image, labels = image.copy(), labels.copy()
    image[start:stop] = image[start:stop][:, yi, xi]
    labels[start:stop] = labels[start:stop][:, yi, xi]
    return image, labels


def missing_section(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                    max_sections: int = 2) -> Pair:
    """Replace 1..`max_sections` random sections (never all, unless z == 1) by zeros or uniform noise."""
    z = image.shape[0]
    count = min(int(rng.integers(1, max_sections + 1)), max(z - 1, 1))
    picked = rng.choice(z, count, replace=False)
    image = image.copy()
    for s in picked:
        image[s] = rng.random(image.shape[1:], dtype=np.float32) if rng.random() < 0.5 else 0.0
    return image, labels


def missing_parts(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                  size: tuple[float, float] = (0.1, 0.3)) -> Pair:
    """Blank (set to 0) a random rotated ellipse in one section; semi-axes are `size` fractions of the section."""
    z, h, w = image.shape
    s = int(rng.integers(z))
    centre = rng.uniform((0, 0), (h, w))
    semi = rng.uniform(size[0], size[1], 2) * (h, w)
    angle = rng.uniform(0, np.pi)
    yy, xx = np.ogrid[:h, :w]
    u = (yy - centre[0]) * np.cos(angle) + (xx - centre[1]) * np.sin(angle)
    v = -(yy - centre[0]) * np.sin(angle) + (xx - centre[1]) * np.cos(angle)
    image = image.copy()
    image[s][(u / semi[0]) ** 2 + (v / semi[1]) ** 2 <= 1.0] = 0.0
    return image, labels


def motion_blur(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, max_sections: int = 2,
                kernel_size: int = 11) -> Pair:
    """Blur 1..`max_sections` sections along a random direction with a line kernel of `kernel_size` px."""
    z = image.shape[0]
    picked = rng.choice(z, min(int(rng.integers(1, max_sections + 1)), z), replace=False)
    image = image.copy()
    for s in picked:
        angle = rng.uniform(0, np.pi)
        half = (kernel_size - 1) / 2.0
        t = np.linspace(-half, half, 4 * kernel_size)
        kernel = np.zeros((kernel_size, kernel_size), np.float32)
        np.add.at(kernel, (np.rint(half + t * np.sin(angle)).astype(int),
                           np.rint(half + t * np.cos(angle)).astype(int)), 1.0)
        image[s] = cv2.filter2D(image[s], -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT_101)
    return image, labels


TRANSFORMS: dict[str, Callable[..., Pair]] = {
    "flip": flip, "transpose": transpose, "rotate90": rotate90, "rotate": rotate, "rescale": rescale,
    "elastic": elastic, "misalign": misalign, "intensity": intensity, "missing_section": missing_section,
    "missing_parts": missing_parts, "motion_blur": motion_blur,
}

DEFAULT_EM_AUGMENT: dict[str, float] = {
    "flip": 0.5, "transpose": 0.5, "rotate90": 0.5, "rotate": 0.0, "rescale": 0.0, "intensity": 0.5,
    "elastic": 0.3, "missing_section": 0.1, "missing_parts": 0.1, "misalign": 0.1, "motion_blur": 0.1,
}


class EMAugmenter:
    """Apply each EM transform with its probability (names of `TRANSFORMS`).

    `probs` overrides `DEFAULT_EM_AUGMENT` name by name (0 switches a transform off);
    `params` maps a transform name to keyword arguments of its function, e.g.
    `EMAugmenter({"elastic": 0.5}, elastic={"alpha": 4.0})`. Unknown names raise PEAInputError.
    `gate` is the chance that the chain runs at all (the authors': 0.8 in 2D, 0.5 in 3D).
    """

    def __init__(self, probs: Mapping[str, float] | None = None, gate: float = 1.0, **params: Mapping) -> None:
        known = ", ".join(TRANSFORMS)
        merged = dict(DEFAULT_EM_AUGMENT)
        for name, p in (probs or {}).items():
            if name not in TRANSFORMS:
                raise PEAInputError(f"EM augmentation '{name}' is unknown (known: {known})")
            if not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
                raise PEAInputError(f"EM augmentation '{name}': probability {p!r} is not in [0, 1]")
            merged[name] = float(p)
        for name, kwargs in params.items():
            if name not in TRANSFORMS:
                raise PEAInputError(f"EM augmentation parameters for '{name}': unknown name (known: {known})")
            accepted = list(inspect.signature(TRANSFORMS[name]).parameters)[3:]
            if not isinstance(kwargs, Mapping) or set(kwargs) - set(accepted):
                bad = sorted(set(kwargs) - set(accepted)) if isinstance(kwargs, Mapping) else kwargs
                raise PEAInputError(f"EM augmentation '{name}': unknown parameters {bad} "
                                    f"(accepted: {', '.join(accepted) or 'none'})")
        if not 0.0 <= float(gate) <= 1.0:
            raise PEAInputError(f"EM augmentation gate {gate!r} is not in [0, 1]")
        self.gate = float(gate)
        self.probs = merged
        self.params = {name: dict(params.get(name, {})) for name in TRANSFORMS}

    def __call__(self, image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> Pair:
        if image.ndim != 3 or image.shape != labels.shape:
            raise PEAInputError(f"EM augmentation: image {image.shape} and labels {labels.shape} "
                                "must both be (z, y, x) of the same shape")
        if not np.issubdtype(labels.dtype, np.integer):
            raise PEAInputError(f"EM augmentation: labels dtype {labels.dtype} is not an integer type")
        image = image.astype(np.float32, copy=False)
        if self.gate < 1.0 and rng.random() >= self.gate:
            return np.ascontiguousarray(image), np.ascontiguousarray(labels)
        for name, transform in TRANSFORMS.items():
            if self.probs[name] > 0 and rng.random() < self.probs[name]:
                image, labels = transform(image, labels, rng, **self.params[name])
        return np.ascontiguousarray(image), np.ascontiguousarray(labels)


# The DATA keys `ChainCrop` reads; the readers that offer it add them (with their own margin).
CHAIN_KEYS: dict[str, Key] = {
    "em_augment": Key({}, S.mapping, "probabilities of the transforms above, by name (empty: DEFAULT_EM_AUGMENT)"),
    "em_augment_params": Key({}, S.mapping, "keyword arguments per transform, e.g. {elastic: {alpha: 0.65}}"),
    "em_augment_gate": Key(1.0, S.number(0, 1), "chance that the transforms run at all"),
    "augment_pad": Key(False, S.boolean, "mirror the image beyond its borders by the margin, so crops reach them"),
}


class ChainCrop:
    """A training crop of DATA.crop_size, read with DATA.augment_margin around it (mirrored
    beyond the image with DATA.augment_pad), augmented by an `EMAugmenter` (DATA.em_augment,
    em_augment_params, em_augment_gate), centre-cropped, its labels passed to `finish`.

    Called with a grey image (*spatial, C), channels alike, and its labels (*spatial), 2D or 3D,
    as `pea.data.common.TrainDataset` does: channel 0 is transformed (a 2D image as one
    section) and repeated to C channels."""

    def __init__(self, data_cfg: Mapping, finish: Callable[[np.ndarray], np.ndarray] | None = None):
        self.crop = np.array([int(c) for c in data_cfg["crop_size"]])
        self.margin = np.array([int(m) for m in data_cfg["augment_margin"]])
        if len(self.crop) != len(self.margin) or min(self.crop) < 1 or min(self.margin) < 0:
            raise PEAInputError(f"DATA.crop_size {data_cfg['crop_size']} and DATA.augment_margin "
                                f"{data_cfg['augment_margin']}: need one positive size and margin per axis")
        self.pad = bool(data_cfg["augment_pad"])
        self.finish = finish
        self.augment = EMAugmenter(dict(data_cfg["em_augment"] or {}), float(data_cfg["em_augment_gate"]),
                                   **dict(data_cfg["em_augment_params"] or {}))

    def __call__(self, image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> Pair:
        if labels.ndim != len(self.crop):
            raise PEAInputError(f"DATA.crop_size {self.crop.tolist()} does not fit labels of shape {labels.shape}")
        volume = image[..., 0]
        if self.pad:
            pads = [(int(m), int(m)) for m in self.margin]
            volume, labels = np.pad(volume, pads, mode="reflect"), np.pad(labels, pads, mode="reflect")
        shape = np.array(labels.shape)
        if (self.crop > shape).any():
            raise PEAInputError(f"DATA.crop_size {self.crop.tolist()} is larger than the training image "
                                f"{tuple(shape)}")
        margin = np.minimum(self.margin, (shape - self.crop) // 2)
        size = self.crop + 2 * margin
        start = (rng.random(len(shape)) * (shape - size + 1)).astype(int)
        region = tuple(slice(s, s + n) for s, n in zip(start, size))
        sections = (1,) * (3 - labels.ndim) + tuple(size)
        img, lab = self.augment(volume[region].reshape(sections), labels[region].reshape(sections), rng)
        inner = tuple(slice(m, m + c) for m, c in zip(margin, self.crop))
        img, lab = img.reshape(size)[inner], lab.reshape(size)[inner]
        if self.finish is not None:
            lab = self.finish(lab)
        return np.repeat(img[..., None], image.shape[-1], -1), np.ascontiguousarray(lab)
