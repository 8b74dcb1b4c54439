"""GaussianNoise, GaussianDropout, AlphaDropout: loop references on fixed draws, statistics, gradients, seeds."""

import math

import numpy as np
import pytest

from backends import get_ops
from gpulayers import utils
from gpulayers.layers import AlphaDropout, GaussianDropout, GaussianNoise
from helpers import check_layer_gradients, forward, reset_randomness, to_np

SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


def uniforms(shape, dtype, seed=1234):
    """The uniforms a layer draws after ``reset_randomness(layer, seed)``."""
    ops = get_ops()
    return to_np(ops.uniform(ops.rng(seed), shape, dtype)).astype(np.float64)


def box_muller(shape, dtype):
    """Loop reference of the normal draws after ``reset_randomness``: Box-Muller on two uniform draws."""
    u = uniforms((2,) + shape, dtype).reshape(2, -1)
    z = np.empty(u.shape[1])
    for i in range(z.size):
        z[i] = math.sqrt(-2.0 * math.log(1.0 - u[0, i])) * math.cos(2.0 * math.pi * u[1, i])
    return z.reshape(shape)


def alpha_reference(x, rate, kept):
    """Loop reference of Keras's alpha dropout for a kept mask broadcast over x."""
    alpha_p = -SELU_ALPHA * SELU_SCALE
    a = ((1 - rate) * (1 + rate * alpha_p**2)) ** -0.5
    b = -a * alpha_p * rate
    kept = np.broadcast_to(kept, x.shape)
    y = np.empty_like(x)
    for index in np.ndindex(x.shape):
        y[index] = a * (x[index] if kept[index] else alpha_p) + b
    return y, a


def test_gaussian_noise_adds_stddev_times_the_draws():
    x = np.random.default_rng(0).standard_normal((3, 4, 5))
    layer = GaussianNoise(0.3, seed=1, dtype="float64")
    reset_randomness(layer)
    y, backward = forward(layer, x, training=True)
    np.testing.assert_allclose(y, x + 0.3 * box_muller(x.shape, np.float64), rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(to_np(backward(np.full(x.shape, 2.0))), np.full(x.shape, 2.0))
    np.testing.assert_array_equal(to_np(layer(x, training=False)), x)
    np.testing.assert_array_equal(to_np(layer(x)), x)  # inference by default
    check_layer_gradients(GaussianNoise(0.3, seed=1, dtype="float64"), x, training=True)


def test_gaussian_dropout_multiplies_by_one_plus_the_scaled_draws():
    x = np.random.default_rng(1).standard_normal((4, 6))
    rate = 0.2
    layer = GaussianDropout(rate, seed=2, dtype="float64")
    reset_randomness(layer)
    y, backward = forward(layer, x, training=True)
    noise = 1.0 + math.sqrt(rate / (1 - rate)) * box_muller(x.shape, np.float64)
    np.testing.assert_allclose(y, x * noise, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(to_np(backward(np.ones(x.shape))), noise, rtol=1e-12)
    np.testing.assert_array_equal(to_np(layer(x, training=False)), x)
    check_layer_gradients(GaussianDropout(rate, seed=2, dtype="float64"), x, training=True)


@pytest.mark.parametrize("rate,noise_shape", [(0.3, None), (0.5, (None, 1, 4)), (0.1, (1, 3, 1))])
def test_alpha_dropout_is_keras_formula_on_the_mask(rate, noise_shape):
    x = np.random.default_rng(2).standard_normal((5, 3, 4))
    layer = AlphaDropout(rate, noise_shape=noise_shape, seed=3, dtype="float64")
    reset_randomness(layer)
    y, backward = forward(layer, x, training=True)
    mask_shape = x.shape if noise_shape is None else tuple(n if d is None else d for d, n in zip(noise_shape, x.shape))
    kept = uniforms(mask_shape, np.float64) >= rate  # Keras keeps u >= rate
    want, a = alpha_reference(x, rate, kept)
    np.testing.assert_allclose(y, want, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(to_np(backward(np.ones(x.shape))), np.where(np.broadcast_to(kept, x.shape), a, 0.0))
    np.testing.assert_array_equal(to_np(layer(x, training=False)), x)
    check_layer_gradients(AlphaDropout(rate, noise_shape=noise_shape, seed=3, dtype="float64"), x, training=True)


def test_noise_statistics():
    ones = np.ones((200, 500), np.float32)
    zeros = np.zeros((200, 500), np.float32)
    noise = to_np(GaussianNoise(0.3, seed=1337)(zeros, training=True)).astype(np.float64)
    assert abs(noise.mean()) < 0.003 and abs(noise.std() - 0.3) < 0.003  # 1e5 samples: > 4 standard errors
    # Normal: its third and fourth moments too (not just the spread of some other law).
    z = noise / 0.3
    assert abs(np.mean(z**3)) < 0.04 and abs(np.mean(z**4) - 3.0) < 0.1
    m = to_np(GaussianDropout(0.5, seed=1337)(ones, training=True)).astype(np.float64)
    assert abs(m.mean() - 1.0) < 0.01 and abs(m.std() - 1.0) < 0.01  # sqrt(0.5 / 0.5) = 1
    # AlphaDropout keeps zero mean and unit variance, and sets the rate of units to one value.
    x = np.random.default_rng(3).standard_normal((200, 500)).astype(np.float32)
    y = to_np(AlphaDropout(0.2, seed=1337)(x, training=True)).astype(np.float64)
    assert abs(y.mean()) < 0.01 and abs(y.var() - 1.0) < 0.02
    dropped_value = alpha_reference(np.zeros((1,)), 0.2, np.zeros((1,), bool))[0][0]
    assert abs(np.isclose(y, dropped_value, rtol=1e-6, atol=0).mean() - 0.2) < 0.005


def test_float16_and_float32_draws():
    for dtype in ("float16", "float32"):
        y = to_np(GaussianNoise(0.5, seed=0, dtype=dtype)(np.zeros((100, 100)), training=True))
        assert y.dtype == np.dtype(dtype) and np.isfinite(y).all() and abs(y.std() - 0.5) < 0.02
        y = to_np(GaussianDropout(0.5, seed=0, dtype=dtype)(np.ones((100, 100)), training=True))
        assert y.dtype == np.dtype(dtype) and abs(y.mean() - 1.0) < 0.05
        y = to_np(AlphaDropout(0.3, seed=0, dtype=dtype)(np.ones((100, 100)), training=True))
        assert y.dtype == np.dtype(dtype) and len(np.unique(y)) == 2


@pytest.mark.parametrize("make", [lambda s: GaussianNoise(0.2, seed=s), lambda s: GaussianDropout(0.4, seed=s),
                                  lambda s: AlphaDropout(0.4, seed=s)])
def test_same_seed_same_draws_and_new_draws_each_call(make, monkeypatch):
    x = np.random.default_rng(4).standard_normal((20, 30)).astype(np.float32)
    a, b = make(9), make(9)
    first = to_np(a(x, training=True))
    np.testing.assert_array_equal(first, to_np(b(x, training=True)))
    second = to_np(a(x, training=True))
    np.testing.assert_array_equal(second, to_np(b(x, training=True)))
    assert not np.array_equal(first, second)
    assert not np.array_equal(first, to_np(make(10)(x, training=True)))
    monkeypatch.setattr(utils, "_rng", utils.host_rng())  # restored afterwards
    utils.set_random_seed(5)
    unseeded = to_np(make(None)(x, training=True))
    utils.set_random_seed(5)
    np.testing.assert_array_equal(unseeded, to_np(make(None)(x, training=True)))


def test_rate_and_stddev_edges():
    x = np.random.default_rng(5).standard_normal((3, 4))
    for layer in (GaussianNoise(0.0, dtype="float64"), GaussianDropout(0.0, dtype="float64"),
                  AlphaDropout(0.0, dtype="float64")):
        np.testing.assert_array_equal(to_np(layer(x, training=True)), x)
    # AlphaDropout(1): every unit at the formula's limit, 0 (Keras's a = inf gives NaN there).
    y, backward = forward(AlphaDropout(1.0, seed=0, dtype="float64"), x, training=True)
    np.testing.assert_array_equal(y, np.zeros_like(x))
    np.testing.assert_array_equal(to_np(backward(np.ones_like(x))), np.zeros_like(x))
    # GaussianDropout(1): infinite noise is refused in training, before the layer draws; inference is fine.
    layer = GaussianDropout(1.0, seed=0)
    with pytest.raises(ValueError, match=r"rate=1"):
        layer(x, training=True)
    assert layer._rng is None
    np.testing.assert_array_equal(to_np(layer(x)), x.astype(np.float32))
    np.testing.assert_array_equal(to_np(GaussianNoise(1.0, seed=0)(x)), x.astype(np.float32))


@pytest.mark.parametrize("shape", [(), (0, 3), (2, 0)])
def test_scalar_and_empty_inputs(shape):
    x = np.full(shape, 1.5)
    for layer in (GaussianNoise(0.3, seed=1, dtype="float64"), GaussianDropout(0.3, seed=1, dtype="float64"),
                  AlphaDropout(0.3, seed=1, dtype="float64")):
        y = layer(x, training=True)
        assert not isinstance(y.data, np.generic)  # an array, not a scalar
        assert y.shape == shape and np.isfinite(to_np(y)).all()
        if x.size:
            check_layer_gradients(layer, x, training=True)


def test_alpha_dropout_noise_shape_must_fit_the_input():
    layer = AlphaDropout(0.5, noise_shape=(None, 2), seed=0)
    with pytest.raises(ValueError, match=r"noise_shape"):
        layer(np.ones((3, 4), np.float32), training=True)
    with pytest.raises(ValueError, match=r"noise_shape.*rank"):
        AlphaDropout(0.5, noise_shape=(None,))(np.ones((3, 4), np.float32), training=True)
    y = to_np(AlphaDropout(0.5, noise_shape=(None, 1, None), seed=1)(np.ones((20, 5, 10)), training=True))
    np.testing.assert_array_equal(y[:, 0, :], y[:, 1, :])  # Keras's own check


@pytest.mark.parametrize(
    "cls,kwargs,error,pattern",
    [
        (GaussianNoise, dict(stddev=-0.1), ValueError, r"stddev.*-0\.1"),
        (GaussianNoise, dict(stddev=1.5), ValueError, r"stddev.*between 0 and 1.*1\.5"),
        (GaussianNoise, dict(stddev="0.1"), ValueError, r"stddev.*'0\.1'"),
        (GaussianNoise, dict(stddev=float("nan")), ValueError, r"stddev.*nan"),
        (GaussianNoise, dict(stddev=0.1, seed=1.5), ValueError, r"seed.*1\.5"),
        (GaussianDropout, dict(rate=1.5), ValueError, r"Invalid value received for argument `rate`.*1\.5"),
        (GaussianDropout, dict(rate=None), ValueError, r"rate.*None"),
        (GaussianDropout, dict(rate=0.5, seed=-2), ValueError, r"seed.*-2"),
        (AlphaDropout, dict(rate=-0.5), ValueError, r"Invalid value received for argument `rate`.*-0\.5"),
        (AlphaDropout, dict(rate=0.5, noise_shape=(None, 0)), ValueError, r"noise_shape.*positive"),
        (AlphaDropout, dict(rate=0.5, noise_shape=(1.5,)), ValueError, r"noise_shape.*integers or None"),
        (AlphaDropout, dict(rate=0.5, noise_shape=3), ValueError, r"noise_shape.*3"),
        (AlphaDropout, dict(rate=0.5, training=True), TypeError, r"training"),
    ],
)
def test_bad_arguments_are_refused(cls, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        cls(**kwargs)


def test_configs():
    cases = [
        (GaussianNoise(0.25, seed=3, name="n"), {"stddev": 0.25, "seed": 3}),
        (GaussianDropout(0.5, name="n"), {"rate": 0.5, "seed": None}),
        (AlphaDropout(0.1, noise_shape=[None, 1], seed=4, name="n"), {"rate": 0.1, "seed": 4, "noise_shape": (None, 1)}),
    ]
    for layer, extra in cases:
        cfg = layer.get_config()
        assert cfg == {"name": "n", "trainable": True, "dtype": cfg["dtype"], **extra}
        clone = type(layer).from_config(cfg)
        assert clone.get_config() == cfg and clone.built and clone.weights == []
