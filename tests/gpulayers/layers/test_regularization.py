"""Dropout: inverted scaling, training switch, noise_shape, seeds, gradients, argument checks."""

import numpy as np
import pytest

from gpulayers.layers import Dropout
from helpers import forward, check_layer_gradients, to_np


def test_inactive_when_not_training():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    layer = Dropout(0.5, seed=1)
    np.testing.assert_array_equal(to_np(layer(x)), x)
    y, backward = forward(layer, x, training=False)
    np.testing.assert_array_equal(y, x)
    dy = rng.standard_normal((4, 5)).astype(np.float32)
    np.testing.assert_array_equal(to_np(backward(dy)), dy)


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5, 0.8])
def test_inverted_scaling_and_drop_fraction(rate):
    rng = np.random.default_rng(1)
    x = rng.uniform(1.0, 2.0, size=(200, 500))
    layer = Dropout(rate, seed=7, dtype="float64")
    y, backward = forward(layer, x, training=True)
    kept = y != 0
    # Each entry is 0 or x / (1 - rate).
    np.testing.assert_allclose(y[kept], x[kept] / (1 - rate), rtol=1e-12)
    assert abs(1 - kept.mean() - rate) < 0.01
    # The expectation is preserved.
    assert abs(y.mean() / x.mean() - 1) < 0.02
    # Backward multiplies by the same mask.
    dx = to_np(backward(np.ones_like(x)))
    np.testing.assert_allclose(dx, np.where(kept, 1 / (1 - rate), 0.0), rtol=1e-12)


def test_float32_scale():
    x = np.ones((50, 50), np.float32)
    y = to_np(Dropout(0.25, seed=2)(x, training=True))
    assert y.dtype == np.float32
    assert set(np.unique(y).tolist()) == {0.0, np.float32(1 / 0.75)}


def test_rate_zero_is_identity_and_rate_one_gives_zeros():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 5))
    y = to_np(Dropout(0.0, seed=0, dtype="float64")(x, training=True))
    np.testing.assert_array_equal(y, x)
    layer = Dropout(1.0, seed=0, dtype="float64")
    y, backward = forward(layer, x, training=True)
    assert np.isfinite(y).all()
    np.testing.assert_array_equal(y, np.zeros_like(x))
    dx = to_np(backward(np.ones_like(x)))
    assert np.isfinite(dx).all()
    np.testing.assert_array_equal(dx, np.zeros_like(x))
    # Rate 1 leaves inference untouched.
    np.testing.assert_array_equal(to_np(layer(x, training=False)), x)


@pytest.mark.parametrize(
    "shape,noise_shape,shared_axes",
    [
        ((6, 4, 5, 8), (None, 1, 1, None), (1, 2)),  # whole channels of NHWC
        ((6, 8, 4, 5), (None, None, 1, 1), (2, 3)),  # whole channels of NCHW
        ((6, 4, 5, 8), (1, 4, 5, 8), (0,)),  # the same mask for the whole batch
        ((10, 7), (None, 1), (1,)),
        ((10, 7), (10, 7), ()),
    ],
)
def test_noise_shape_broadcasts_the_mask(shape, noise_shape, shared_axes):
    rng = np.random.default_rng(3)
    x = rng.uniform(1.0, 2.0, size=shape)
    layer = Dropout(0.5, noise_shape=noise_shape, seed=5, dtype="float64")
    y = to_np(layer(x, training=True))
    mask = y / x  # 0 or 2 everywhere
    assert set(np.unique(mask.round(12)).tolist()) <= {0.0, 2.0}
    for axis in shared_axes:
        first = np.take(mask, [0], axis=axis)
        np.testing.assert_array_equal(mask, np.broadcast_to(first, mask.shape))
    # Both outcomes happen.
    assert (mask == 0).any() and (mask != 0).any()
    # Gradient check on a smaller input that the noise_shape still fits.
    small = tuple(n if d not in (None, 1) else min(n, 3) for d, n in zip(noise_shape, shape))
    x_small = x[tuple(slice(0, n) for n in small)]
    check_layer_gradients(Dropout(0.5, noise_shape=noise_shape, seed=5, dtype="float64"), x_small, training=True)


def test_noise_shape_none_entry_takes_the_input_size():
    layer = Dropout(0.5, noise_shape=(None, 1, 1, None), seed=0)
    assert layer.noise_shape == (None, 1, 1, None)
    for batch in (2, 5):
        x = np.ones((batch, 3, 3, 4), np.float32)
        assert to_np(layer(x, training=True)).shape == x.shape


@pytest.mark.parametrize(
    "noise_shape,pattern",
    [
        ((None, 1), r"noise_shape.*rank"),
        ((None, 2, 1, None), r"noise_shape.*\(None, 2, 1, None\)"),
    ],
)
def test_noise_shape_that_does_not_fit_the_input(noise_shape, pattern):
    layer = Dropout(0.5, noise_shape=noise_shape, seed=0)
    x = np.ones((2, 3, 3, 4), np.float32)
    with pytest.raises(ValueError, match=pattern):
        layer(x, training=True)
    with pytest.raises(ValueError, match=pattern):
        layer.compute_output_shape(x.shape)


def test_seeded_reproducibility():
    rng = np.random.default_rng(4)
    x = rng.uniform(1.0, 2.0, size=(20, 30)).astype(np.float32)
    a, b = Dropout(0.4, seed=11), Dropout(0.4, seed=11)
    ya1, yb1 = to_np(a(x, training=True)), to_np(b(x, training=True))
    np.testing.assert_array_equal(ya1, yb1)
    ya2, yb2 = to_np(a(x, training=True)), to_np(b(x, training=True))
    np.testing.assert_array_equal(ya2, yb2)
    assert not np.array_equal(ya1, ya2)  # a new mask at each call
    assert not np.array_equal(to_np(Dropout(0.4, seed=12)(x, training=True)), ya1)


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 2, 2)])
def test_gradient_matches_finite_differences(shape):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape)
    check_layer_gradients(Dropout(0.3, seed=3, dtype="float64"), x, training=True)
    check_layer_gradients(Dropout(0.3, seed=3, dtype="float64"), x, training=False)


@pytest.mark.parametrize(
    "kwargs,error,pattern",
    [
        (dict(rate=-0.1), ValueError, r"rate.*-0\.1"),
        (dict(rate=1.5), ValueError, r"rate.*1\.5"),
        (dict(rate=float("nan")), ValueError, r"rate.*nan"),
        (dict(rate="0.5"), (ValueError, TypeError), r"rate.*'0\.5'"),
        (dict(rate=None), (ValueError, TypeError), r"rate.*None"),
        (dict(rate=0.5, noise_shape=(None, 0)), ValueError, r"noise_shape.*\(None, 0\)"),
        (dict(rate=0.5, noise_shape=(None, -1)), ValueError, r"noise_shape.*\(None, -1\)"),
        (dict(rate=0.5, noise_shape=(None, 1.5)), ValueError, r"noise_shape.*1\.5"),
        (dict(rate=0.5, noise_shape=5), ValueError, r"noise_shape.*5"),
        (dict(rate=0.5, noise_shape="Invalid"), ValueError, r"noise_shape.*tuple or list"),
        (dict(rate=0.5, seed=-3), ValueError, r"seed.*-3"),
        (dict(rate=0.5, seed=1.5), ValueError, r"seed.*1\.5"),
        (dict(rate=0.5, training=True), TypeError, r"training"),
    ],
)
def test_bad_arguments_are_refused(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        Dropout(**kwargs)


def test_rate_is_required():
    with pytest.raises(TypeError, match="rate"):
        Dropout()


def test_set_random_seed_makes_unseeded_dropout_reproducible(monkeypatch):
    from gpulayers import utils

    monkeypatch.setattr(utils, "_rng", utils.host_rng())  # restored afterwards
    x = np.ones((30, 40), np.float32)
    utils.set_random_seed(123)
    first = to_np(Dropout(0.5)(x, training=True))
    utils.set_random_seed(123)
    second = to_np(Dropout(0.5)(x, training=True))
    np.testing.assert_array_equal(first, second)
    third = to_np(Dropout(0.5)(x, training=True))
    assert not np.array_equal(first, third)
