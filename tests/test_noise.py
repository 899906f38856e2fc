import numpy as np
import pytest

from pea.noise import smooth_noise


def _lag_corr(field, lag, axis):
    """Correlation of the (zero-mean, unit-std) field with itself shifted by `lag` along `axis`."""
    n = field.shape[axis]
    a = np.take(field, np.arange(n - lag), axis).astype(np.float64)
    b = np.take(field, np.arange(lag, n), axis).astype(np.float64)
    return float((a * b).mean())


@pytest.mark.parametrize("shape, sigma", [((7,), 0.0), ((50, 33), 1.0), ((64, 70), 10.0),
                                          ((5, 40, 41), (1.0, 3.0, 8.0)), ((2, 1, 30, 31), (0, 0, 6, 6))])
def test_shape_dtype_zero_mean_unit_std(shape, sigma):
    field = smooth_noise(np.random.default_rng(0), shape, sigma)
    assert field.shape == shape and field.dtype == np.float32
    assert abs(float(field.mean())) < 1e-5 and abs(float(field.std()) - 1.0) < 1e-4


def test_larger_sigma_is_smoother():
    steps = [np.abs(np.diff(smooth_noise(np.random.default_rng(1), (128, 128), s), axis=1)).mean()
             for s in (0, 1, 2.5, 5, 12)]
    assert all(a > b for a, b in zip(steps, steps[1:]))


@pytest.mark.parametrize("sigma", [1.0, 2.0, 5.0, 12.0])
def test_correlation_matches_the_gaussian_filter(sigma):
    # white noise filtered with a Gaussian of std s has correlation exp(-d^2 / (4 s^2)) at lag d;
    # sigma 5 and 12 take the coarse-grid path
    field = smooth_noise(np.random.default_rng(2), (400, 2000), (0, sigma))
    lag = int(round(sigma))
    assert abs(_lag_corr(field, lag, 1) - np.exp(-lag ** 2 / (4 * sigma ** 2))) < 0.03


def test_zero_sigma_leaves_an_axis_unsmoothed():
    field = smooth_noise(np.random.default_rng(3), (200, 48, 48), (0, 1, 3))
    assert abs(_lag_corr(field, 1, 0)) < 0.05
    assert _lag_corr(field, 1, 1) > 0.7 and _lag_corr(field, 1, 2) > 0.95


def test_same_seed_same_field():
    a, b, c = (smooth_noise(np.random.default_rng(seed), (3, 40, 50), (1, 4, 4)) for seed in (4, 4, 5))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
