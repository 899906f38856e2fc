import numpy as np
import pytest
from scipy import ndimage

from pea import augment_em as A
from pea.errors import PEAInputError



def _labels(shape, block, dtype, seed=0):
    """Blocky random labels: `block` x `block` squares per section with sparse random ids."""
    rng = np.random.default_rng(seed)
    z, h, w = shape
    coarse = rng.choice(np.arange(1, 10**6, 7919), size=(z, -(-h // block), -(-w // block)))
    return np.repeat(np.repeat(coarse, block, 1), block, 2)[:, :h, :w].astype(dtype)


def _paint(labels):
    """Image as a deterministic function of the labels."""
    return ((labels.astype(np.int64) * 37 % 251) / 255.0).astype(np.float32)


SHAPES = [(6, 48, 48), (5, 40, 56)]


def _check_pair(image, labels, image_in, labels_in):
    assert image.shape == image_in.shape and labels.shape == labels_in.shape
    assert image.dtype == np.float32 and labels.dtype == labels_in.dtype
    assert set(np.unique(labels)) <= set(np.unique(labels_in))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ["flip", "transpose", "rotate90"])
def test_dihedral_transforms_are_exact_and_aligned(name, shape):
    labels = _labels(shape, 4, np.uint64)
    image = _paint(labels)
    square = shape[1] == shape[2]
    candidates = {
        "flip": [np.flip(labels, axes) for axes in [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]],
        "transpose": [labels.transpose(0, 2, 1) if square else labels],
        "rotate90": [np.rot90(labels, k, axes=(1, 2)) for k in ((1, 2, 3) if square else (2,))],
    }[name]
    for seed in range(6):
        out_image, out_labels = A.TRANSFORMS[name](image, labels, np.random.default_rng(seed))
        _check_pair(out_image, out_labels, image, labels)
        np.testing.assert_array_equal(out_image, _paint(out_labels))
        assert any(np.array_equal(out_labels, c) for c in candidates)


@pytest.mark.parametrize("shape", SHAPES)
def test_misalign_shifts_image_and_labels_together(shape):
    labels = _labels(shape, 4, np.int32)
    image = _paint(labels)
    kinds = set()
    for seed in range(12):
        out_image, out_labels = A.misalign(image, labels, np.random.default_rng(seed), max_shift=5)
        _check_pair(out_image, out_labels, image, labels)
        np.testing.assert_array_equal(out_image, _paint(out_labels))
        changed = [z for z in range(shape[0]) if not np.array_equal(out_labels[z], labels[z])]
        assert changed and changed == list(range(changed[0], changed[-1] + 1))
        assert changed[0] >= 1 and (len(changed) == 1 or changed[-1] == shape[0] - 1)
        kinds.add(len(changed) == 1)
        m = 5  # interior: shifted content must equal the original moved by one common (dy, dx)
        found = set()
        for z in changed:
            for dy in range(-m, m + 1):
                for dx in range(-m, m + 1):
                    src = labels[z, m - dy:shape[1] - m - dy, m - dx:shape[2] - m - dx]
                    if np.array_equal(out_labels[z, m:-m, m:-m], src):
                        found.add((z, dy, dx))
        assert len({(dy, dx) for _, dy, dx in found}) == 1 and {z for z, _, _ in found} == set(changed)
    assert kinds == {True, False}  # both the one-section slip and the translation of the rest occur


@pytest.mark.parametrize("per_section", [False, True])
def test_elastic_warps_image_and_labels_with_the_same_field(per_section):
    shape = (4, 64, 72)
    labels = _labels(shape, 8, np.uint32)
    z, h, w = shape
    # warp coordinate ramps with an identically seeded rng to read back the displacement field
    ramp_y = np.broadcast_to(np.arange(h, dtype=np.float32)[None, :, None] / h, shape).copy()
    ramp_x = np.broadcast_to(np.arange(w, dtype=np.float32)[None, None, :] / w, shape).copy()
    kwargs = dict(alpha=3.0, sigma=6.0, per_section=per_section)
    ys = A.elastic(ramp_y, labels, np.random.default_rng(3), **kwargs)[0] * h
    xs = A.elastic(ramp_x, labels, np.random.default_rng(3), **kwargs)[0] * w
    out_image, out_labels = A.elastic(_paint(labels), labels, np.random.default_rng(3), **kwargs)
    _check_pair(out_image, out_labels, labels.astype(np.float32), labels)

    moved = np.hypot(ys - np.arange(h)[:, None], xs - np.arange(w))
    assert 1.0 < moved.mean() < 8.0
    if per_section:
        assert not np.allclose(ys[0], ys[1], atol=0.1)
    else:
        np.testing.assert_allclose(ys, np.broadcast_to(ys[:1], shape), atol=0.05)
    # labels are the nearest-neighbour sample at the recovered positions (ties at .5 excluded)
    sure = (np.abs(ys - np.floor(ys) - 0.5) > 0.1) & (np.abs(xs - np.floor(xs) - 0.5) > 0.1)
    sure &= (ys > 0) & (ys < h - 1) & (xs > 0) & (xs < w - 1)
    zi = np.broadcast_to(np.arange(z)[:, None, None], shape)
    expected = labels[zi, np.clip(np.rint(ys), 0, h - 1).astype(int), np.clip(np.rint(xs), 0, w - 1).astype(int)]
    assert sure.mean() > 0.5
    np.testing.assert_array_equal(out_labels[sure], expected[sure])
    # the image agrees with the labels except where bilinear sampling straddles a block border
    agree = np.isclose(out_image, _paint(out_labels), atol=1e-4)
    assert agree.mean() > 0.7
    assert (out_labels != labels).mean() > 0.05


def test_elastic_with_zero_amplitude_is_identity():
    labels = _labels((3, 32, 32), 4, np.int64)
    image = _paint(labels)
    out_image, out_labels = A.elastic(image, labels, np.random.default_rng(0), alpha=0.0)
    np.testing.assert_array_equal(out_labels, labels)
    np.testing.assert_allclose(out_image, image, atol=1e-6)


@pytest.mark.parametrize("name", ["intensity", "missing_section", "missing_parts", "motion_blur"])
def test_image_only_transforms_keep_labels(name):
    labels = _labels((6, 40, 40), 5, np.uint32)
    image = np.random.default_rng(1).random(labels.shape, dtype=np.float32)
    for seed in range(5):
        out_image, out_labels = A.TRANSFORMS[name](image, labels, np.random.default_rng(seed))
        assert out_labels is labels or np.array_equal(out_labels, labels)
        assert out_labels.dtype == labels.dtype and out_image.shape == image.shape
        assert out_image.dtype == np.float32 and not np.array_equal(out_image, image)
        assert out_image.min() >= 0.0 and out_image.max() <= 1.0


def test_missing_section_and_parts_touch_only_what_they_claim():
    image = np.random.default_rng(2).uniform(0.2, 0.9, (7, 32, 32)).astype(np.float32)
    labels = np.ones(image.shape, np.int32)
    for seed in range(8):
        out, _ = A.missing_section(image, labels, np.random.default_rng(seed), max_sections=2)
        changed = [z for z in range(7) if not np.array_equal(out[z], image[z])]
        assert 1 <= len(changed) <= 2
        for z in changed:  # zeros, or fresh uniform noise that reaches below the input range
            assert np.all(out[z] == 0) or (out[z].min() < 0.2 and out[z].max() > 0.9)
        out, _ = A.missing_parts(image, labels, np.random.default_rng(seed), size=(0.2, 0.3))
        changed = [z for z in range(7) if not np.array_equal(out[z], image[z])]
        assert len(changed) == 1
        hole = out[changed[0]] != image[changed[0]]
        assert np.all(out[changed[0]][hole] == 0) and 0 < hole.mean() < 0.35


def test_motion_blur_smooths_selected_sections_only():
    image = np.random.default_rng(3).random((5, 40, 40), dtype=np.float32)
    out, _ = A.motion_blur(image, np.zeros(image.shape, np.int32), np.random.default_rng(0),
                           max_sections=2, kernel_size=9)
    changed = [z for z in range(5) if not np.array_equal(out[z], image[z])]
    assert 1 <= len(changed) <= 2
    for z in changed:  # averaging 9 pixels cuts the noise std by about 3, keeps the mean
        assert out[z].std() < 0.6 * image[z].std()
        assert abs(out[z].mean() - image[z].mean()) < 0.02


@pytest.mark.parametrize("mode", ["volume", "section"])
def test_intensity_is_monotone_per_draw(mode):
    image = np.random.default_rng(4).random((4, 24, 24), dtype=np.float32)
    out, _ = A.intensity(image, np.zeros(image.shape, np.int32), np.random.default_rng(1),
                         contrast=0.5, brightness=0.3, mode=mode)
    groups = [slice(None)] if mode == "volume" else [slice(z, z + 1) for z in range(4)]
    for g in groups:
        order = np.argsort(image[g].ravel())
        assert np.all(np.diff(out[g].ravel()[order]) >= -1e-6)
    if mode == "section":  # different sections get different mappings
        probe = np.full(image.shape, 0.5, np.float32)
        mapped, _ = A.intensity(probe, np.zeros(image.shape, np.int32), np.random.default_rng(1),
                                contrast=0.5, brightness=0.3, mode=mode)
        assert np.unique(mapped[:, 0, 0]).size == 4
    with pytest.raises(PEAInputError):
        A.intensity(image, image.astype(np.int32), np.random.default_rng(0), mode="bogus")


def test_zero_probabilities_give_identity():
    labels = _labels((5, 32, 32), 4, np.uint32)
    image = _paint(labels)
    aug = A.EMAugmenter({name: 0.0 for name in A.TRANSFORMS})
    out_image, out_labels = aug(image, labels, np.random.default_rng(0))
    np.testing.assert_array_equal(out_image, image)
    np.testing.assert_array_equal(out_labels, labels)
    assert out_labels.dtype == labels.dtype


def test_augmenter_all_on_keeps_shapes_ids_and_is_deterministic():
    labels = _labels((8, 48, 48), 6, np.uint64)
    image = _paint(labels)
    aug = A.EMAugmenter({name: 1.0 for name in A.TRANSFORMS}, elastic={"alpha": 2.0})
    a = aug(image, labels, np.random.default_rng(7))
    b = aug(image, labels, np.random.default_rng(7))
    _check_pair(a[0], a[1], image, labels)
    assert a[0].flags.c_contiguous and a[1].flags.c_contiguous
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], labels)
    assert A.EMAugmenter().probs == A.DEFAULT_EM_AUGMENT
    assert A.EMAugmenter({"elastic": 0}).probs["elastic"] == 0 and A.EMAugmenter({}).probs["flip"] == 0.5


@pytest.mark.parametrize("probs, params", [
    ({"flipp": 0.5}, {}),
    ({"flip": 1.5}, {}),
    ({"flip": "often"}, {}),
    (None, {"elastc": {"alpha": 1.0}}),
    (None, {"elastic": {"strength": 1.0}}),
    (None, {"flip": {"axes": (0,)}}),
])
def test_unknown_names_raise(probs, params):
    with pytest.raises(PEAInputError):
        A.EMAugmenter(probs, **params)


def test_bad_arrays_raise():
    aug = A.EMAugmenter()
    image = np.zeros((2, 8, 8), np.float32)
    with pytest.raises(PEAInputError, match="shape|same"):
        aug(image, np.zeros((2, 8, 9), np.int32), np.random.default_rng(0))
    with pytest.raises(PEAInputError, match="integer"):
        aug(image, image.copy(), np.random.default_rng(0))


# -- the authors' chain: flips with transpose, any-angle rotation, rescale, gate, 2D crops ----
def test_flip_each_with_swap_reaches_all_16_orientations_exactly():
    labels = _labels((4, 24, 24), 4, np.int32)
    image = _paint(labels)
    seen = set()
    for seed in range(120):
        out_image, out_labels = A.flip(image, labels, np.random.default_rng(seed), each=True, swap=True)
        _check_pair(out_image, out_labels, image, labels)
        np.testing.assert_array_equal(out_image, _paint(out_labels))
        seen.add(out_labels.tobytes())
    assert len(seen) == 16  # z, y, x flips and the y/x swap: 4 bits, none of them forced


def _source_coordinates(transform, shape, seed, **kwargs):
    """Where each output pixel was read: the transform applied to coordinate ramps."""
    z, h, w = shape
    labels = np.zeros(shape, np.int32)
    ys = np.broadcast_to(np.arange(h, dtype=np.float32)[None, :, None] / h, shape).copy()
    xs = np.broadcast_to(np.arange(w, dtype=np.float32)[None, None, :] / w, shape).copy()
    src_y = transform(ys, labels, np.random.default_rng(seed), **kwargs)[0][0] * h
    src_x = transform(xs, labels, np.random.default_rng(seed), **kwargs)[0][0] * w
    return src_y, src_x


def _labels_follow_the_image(transform, labels, seed):
    """Every section's labels are the nearest sample of the input at the positions the image's
    first section was read from (ties at .5 and the mirrored borders left out)."""
    src_y, src_x = _source_coordinates(transform, labels.shape, seed)
    out_image, out_labels = transform(_paint(labels), labels, np.random.default_rng(seed))
    h, w = labels.shape[1:]
    sure = (np.abs(src_y - np.floor(src_y) - 0.5) > 0.1) & (np.abs(src_x - np.floor(src_x) - 0.5) > 0.1)
    sure &= (src_y > 0) & (src_y < h - 1) & (src_x > 0) & (src_x < w - 1)
    assert sure.mean() > 0.3
    expected = labels[:, np.rint(src_y).astype(int), np.rint(src_x).astype(int)]
    np.testing.assert_array_equal(out_labels[:, sure], expected[:, sure])
    return out_image, out_labels


def test_rotate_by_any_angle_keeps_image_and_labels_aligned():
    angles = []
    for seed in range(40):
        src_y, src_x = _source_coordinates(A.rotate, (1, 33, 33), seed)
        # near the centre no mirrored border: the read position is the pixel rotated about it
        dy, dx = src_y[16, 20] - 16, src_x[16, 20] - 16  # the pixel 4 px right of the centre
        angles.append(np.degrees(np.arctan2(dy, dx)))
        assert np.hypot(dy, dx) == pytest.approx(4.0, abs=0.05)
    angles = np.array(angles)
    assert angles.min() < -135 and angles.max() > 135 and (np.abs(angles) < 45).any()  # any angle
    labels = _labels((3, 48, 48), 8, np.int32)
    # one rotation for all sections, the labels where the image was read (a 1-px shift of the
    # labels still gave 0.755 agreement below)
    out_image, out_labels = _labels_follow_the_image(A.rotate, labels, 5)
    _check_pair(out_image, out_labels, labels.astype(np.float32), labels)
    assert np.isclose(out_image, _paint(out_labels), atol=1e-4).mean() > 0.7
    assert (out_labels != labels).mean() > 0.3


def test_rescale_factors_are_within_0_8_and_1_2_per_axis():
    factors = []
    for seed in range(40):
        src_y, src_x = _source_coordinates(A.rescale, (1, 40, 40), seed)
        fy = np.median(np.diff(src_y[:, 20]))
        fx = np.median(np.diff(src_x[20, :]))
        factors.append((fy, fx))
    factors = np.array(factors)
    assert factors.min() >= 0.8 - 1e-3 and factors.max() <= 1.2 + 1e-3
    assert factors.min() < 0.85 and factors.max() > 1.15
    assert np.abs(factors[:, 0] - factors[:, 1]).max() > 0.05  # y and x drawn apart (no fixed aspect)
    labels = _labels((2, 48, 48), 8, np.int32)
    out_image, out_labels = _labels_follow_the_image(A.rescale, labels, 1)
    _check_pair(out_image, out_labels, labels.astype(np.float32), labels)
    assert np.isclose(out_image, _paint(out_labels), atol=1e-4).mean() > 0.7


def test_gate_is_the_chance_that_the_chain_runs():
    labels = _labels((2, 16, 16), 4, np.int32)
    image = _paint(labels)
    never = A.EMAugmenter({"flip": 1.0}, gate=0.0)
    assert np.array_equal(never(image, labels, np.random.default_rng(0))[1], labels)
    half = A.EMAugmenter({name: 0.0 for name in A.TRANSFORMS} | {"flip": 1.0}, gate=0.5)
    ran = [not np.array_equal(half(image, labels, np.random.default_rng(s))[1], labels) for s in range(200)]
    assert 0.4 < np.mean(ran) < 0.6
    with pytest.raises(PEAInputError, match="gate"):
        A.EMAugmenter(gate=1.5)


@pytest.mark.parametrize("name, kwargs", [("rotate", {}), ("rescale", {"low": 1.5, "high": 1.5}),
                                          ("elastic", {"alpha": 6.0, "sigma": 4.0})])
def test_zero_border_reads_zeros_beyond_the_section(name, kwargs):
    """border zero (the authors' 2D augmentation): what comes from outside the section is 0 in
    the labels and dark in the image; border reflect (the project's) brings no new value."""
    transform = A.TRANSFORMS[name]
    image, labels = np.ones((1, 40, 40), np.float32), np.full((1, 40, 40), 5, np.int32)
    zeros = 0
    for seed in range(6):
        out_image, out_labels = transform(image, labels, np.random.default_rng(seed), border="zero", **kwargs)
        assert set(np.unique(out_labels)) <= {0, 5} and out_labels.dtype == labels.dtype
        zeros += (out_labels == 0).any()
        assert (out_image[out_labels == 0] <= 0.5 + 1e-6).all() and out_image.min() == 0.0
        out_image, out_labels = transform(image, labels, np.random.default_rng(seed), **kwargs)
        assert (out_labels == 5).all() and np.allclose(out_image, 1.0)
    assert zeros == 6
    if name == "rescale":  # a zoom out by 1.5: a ring of zeros all round
        assert (out_labels[0, [0, -1]] == 5).all()
        zoomed = transform(image, labels, np.random.default_rng(0), border="zero", **kwargs)[1][0]
        assert (zoomed[[0, -1]] == 0).all() and (zoomed[:, [0, -1]] == 0).all() and zoomed[20, 20] == 5
    with pytest.raises(PEAInputError, match="border"):
        transform(image, labels, np.random.default_rng(0), border="wrap", **kwargs)


def test_chain_crop_of_a_grey_2d_image_keeps_it_aligned():
    """The BBBC039V1 paper chain on a 3-channel grey image: crops of the crop size, channels
    alike, image and labels aligned away from label edges (rotation, rescale and elastic warp
    read zeros beyond the region, which this crop's margin keeps out)."""
    from pea.config import load_config, shipped_config

    data = load_config(shipped_config("bbbc039v1")).DATA
    data.update(crop_size=[48, 48], augment_margin=[10, 10])
    crop = A.ChainCrop(data)
    labels = _labels((1, 64, 80), 8, np.int32)[0]
    image = np.repeat(_paint(labels)[..., None], 3, -1)
    changed = 0
    for seed in range(12):
        out_image, out_labels = crop(image, labels, np.random.default_rng(seed))
        assert out_image.shape == (48, 48, 3) and out_labels.shape == (48, 48)
        assert (out_image == out_image[..., :1]).all()
        assert set(np.unique(out_labels)) <= set(np.unique(labels))
        same = ndimage.minimum_filter(out_labels, 5) == ndimage.maximum_filter(out_labels, 5)  # off label edges ...
        same[:2] = same[-2:] = same[:, :2] = same[:, -2:] = False  # ... and off the crop's, which hide some
        inner, painted = out_image[..., 0][same], _paint(out_labels)[same]
        # each grey value maps to one value (the grey-value change moves them, monotonically),
        # but for a few pixels where the interpolations of several warps mix two objects
        values = np.unique(painted)
        mapped = np.array([np.median(inner[painted == v]) for v in values])
        assert np.all(np.diff(mapped) >= -1e-4)
        assert np.isclose(inner, np.interp(painted, values, mapped), atol=1e-3).mean() > 0.98
        changed += not np.allclose(mapped, values, atol=1e-4)
    assert 0 < changed < 12


def test_grey_value_change_of_the_paper_configs_is_within_15_percent_and_gamma_2():
    """intensity(contrast=0.3, brightness=0.3, gamma=1): x (1 + c) + d, |c|, |d| <= 0.15,
    clipped, then x ** 2^g, |g| <= 1."""
    x = np.linspace(0.25, 0.75, 64, dtype=np.float32).reshape(1, 8, 8) * np.ones((3, 1, 1), np.float32)
    gammas = []
    for seed in range(60):
        out, _ = A.intensity(x, np.zeros(x.shape, np.int32), np.random.default_rng(seed), contrast=0.3,
                             brightness=0.3, gamma=1.0, mode="volume")
        low = np.clip(0.85 * x - 0.15, 0, 1) ** 2
        high = np.clip(1.15 * x + 0.15, 0, 1) ** 0.5
        assert (out >= low - 1e-6).all() and (out <= high + 1e-6).all()
        gammas.append(np.log(out[0, 4, 4]) / np.log(x[0, 4, 4]))
    assert min(gammas) < 0.7 and max(gammas) > 1.5  # the gamma range is used
