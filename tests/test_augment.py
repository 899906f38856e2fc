"""2D augmentation keeps image and labels aligned."""
import numpy as np
from scipy import ndimage

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
    """Every channel's ImageNet mean and std (torchvision's figures), the image as it is ('none'),
    else (x - 0.5) / 0.25 (only channel 0's mean was checked before: a wrong std passed)."""
    img = np.random.default_rng(0).random((4, 5, 3), dtype=np.float32)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(normalize(img, "imagenet"), (img - mean) / std, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(normalize(img, "none"), img)
    np.testing.assert_allclose(normalize(img, "unit"), (img - 0.5) / 0.25, rtol=1e-6, atol=1e-6)


def _paper_cvppp(**data):
    from pea.config import load_config, shipped_config

    cfg = load_config(shipped_config("cvppp")).DATA
    cfg.update(data)
    return cfg


def test_paper_crop_area_and_aspect_are_in_range():
    """The authors' RandomResizedCrop: area 0.7-1 of the (padded) image, aspect 3/4-4/3."""
    aug = Augment2D(_paper_cvppp())
    rng = np.random.default_rng(0)
    regions = np.array([aug.region(rng, np.array([544.0, 544.0])) for _ in range(2000)])
    area = regions.prod(1) / 544.0**2
    aspect = regions[:, 0] / regions[:, 1]
    assert (regions <= 544 + 1e-9).all()
    assert area.min() >= 0.7 - 1e-9 and area.max() <= 1.0 + 1e-9
    assert aspect.min() >= 0.75 - 1e-9 and aspect.max() <= 4 / 3 + 1e-6
    assert aspect.min() < 0.8 and aspect.max() > 1.25 and area.min() < 0.72  # the ranges are used
    assert abs(np.log(aspect).mean()) < 0.02  # log-uniform: as wide as tall on average


def test_paper_training_crops_pad_first_and_stay_aligned():
    """Image reflect-padded, labels zero-padded to padded_size; flips and the resized crop move
    both together; no intensity change."""
    rng = np.random.default_rng(1)
    labels = np.kron(rng.integers(1, 30, size=(6, 5)), np.ones((8, 8), np.int32)).astype(np.int32)  # 48 x 40
    cfg = _paper_cvppp(padded_size=[64, 64], crop_size=[64, 64], crop_scale=[1.0, 1.0], crop_ratio=[1.0, 1.0],
                       flip=False)
    image, lab = Augment2D(cfg)(_image_of(labels), labels, np.random.default_rng(0))
    assert lab.shape == (64, 64) and (lab[:8] == 0).all() and (lab[:, :12] == 0).all()
    np.testing.assert_array_equal(lab[8:56, 12:52], labels)
    np.testing.assert_allclose(image[8:56, 12:52], _image_of(labels), atol=1e-5)
    np.testing.assert_allclose(image[7, 12:52], _image_of(labels)[1], atol=1e-5)  # mirrored, edge not repeated
    cfg = _paper_cvppp(padded_size=[48, 40], crop_size=[48, 40])
    for seed in range(10):
        image, lab = Augment2D(cfg)(_image_of(labels), labels, np.random.default_rng(seed))
        inner = ndimage.minimum_filter(lab, 3) == ndimage.maximum_filter(lab, 3)  # off label edges ...
        inner[[0, -1]] = inner[:, [0, -1]] = False  # ... and off the crop's, which hide some
        np.testing.assert_allclose(image[inner], _image_of(lab)[inner], atol=1e-4)
