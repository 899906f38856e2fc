"""2D augmentation keeps image and labels aligned."""
import numpy as np

from pea.augment import Augment2D, normalize
from pea.config import make_config


def _image_of(labels: np.ndarray) -> np.ndarray:
    """An image that is a fixed function of the labels (one grey value per id)."""
    return np.repeat(((labels * 37) % 251 / 255.0).astype(np.float32)[..., None], 3, -1)


def test_geometry_keeps_alignment():
    rng = np.random.default_rng(0)
    labels = np.kron(rng.integers(0, 30, size=(12, 10)), np.ones((16, 16), np.int32)).astype(np.int32)
    cfg = make_config({"DATA": {"dataset": "cvppp", "crop_size": [96, 80], "affine_prob": 1.0, "intensity_prob": 0.0}}).DATA
    aug = Augment2D(cfg)
    for seed in range(10):
        image, lab = aug(_image_of(labels), labels, np.random.default_rng(seed))
        assert image.shape == (96, 80, 3) and lab.shape == (96, 80)
        assert set(np.unique(lab)) <= set(np.unique(labels))
        # away from label edges, linear interpolation gives exactly the label's grey value
        inner = np.ones_like(lab, bool)
        for axis in (0, 1):
            d = np.diff(lab, axis=axis) != 0
            pad = [(0, 0), (0, 0)]
            pad[axis] = (1, 0)
            inner &= ~np.pad(d, pad)
            pad[axis] = (0, 1)
            inner &= ~np.pad(d, pad)
        expected = _image_of(lab)[..., 0]
        agree = np.isclose(image[..., 0], expected, atol=1e-4)[inner].mean()
        assert agree > 0.98, (seed, agree)


def test_identity_when_everything_is_off():
    labels = np.arange(48 * 40, dtype=np.int32).reshape(48, 40)
    cfg = make_config({"DATA": {"dataset": "cvppp", "crop_size": [48, 40], "crop_scale": [1.0, 1.0], "flip": False,
                                "affine_prob": 0.0, "intensity_prob": 0.0}}).DATA
    image, lab = Augment2D(cfg)(_image_of(labels), labels, np.random.default_rng(3))
    np.testing.assert_array_equal(lab, labels)
    np.testing.assert_allclose(image, _image_of(labels), atol=1e-6)


def test_normalize_imagenet():
    img = np.full((2, 2, 3), 0.485, np.float32)
    assert abs(normalize(img, "imagenet")[..., 0]).max() < 1e-6
