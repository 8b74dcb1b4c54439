"""SpatialDropout1D/2D/3D and ActivityRegularization: loop references, masks, gradients, configs, arguments."""

import itertools

import numpy as np
import pytest

from backends import get_ops
from gpulayers import config, utils
from gpulayers.layers import ActivityRegularization, Dropout, SpatialDropout1D, SpatialDropout2D, SpatialDropout3D
from helpers import check_layer_gradients, forward, reset_randomness, to_np

SPATIAL = {1: SpatialDropout1D, 2: SpatialDropout2D, 3: SpatialDropout3D}


def uniforms(shape, dtype, seed=1234):
    """The uniforms a layer draws after ``reset_randomness(layer, seed)``."""
    ops = get_ops()
    return to_np(ops.uniform(ops.rng(seed), shape, dtype)).astype(np.float64)


def spatial_reference(x, rate, u, channels_first):
    """Loop reference: whole (sample, channel) maps kept (u < 1 - rate) and scaled by 1 / (1 - rate), or zeroed."""
    keep = 1.0 - rate
    y = np.zeros_like(x, dtype=np.float64)
    for index in itertools.product(*map(range, x.shape)):
        n, c = index[0], index[1] if channels_first else index[-1]
        if u[n, c] < keep:
            y[index] = x[index] / keep
    return y


CASES = [  # (rank, data_format, input shape)
    (1, None, (4, 5, 3)),
    (2, "channels_last", (3, 4, 5, 6)),
    (2, "channels_first", (3, 6, 4, 5)),
    (3, "channels_last", (2, 3, 2, 4, 5)),
    (3, "channels_first", (2, 5, 3, 2, 4)),
]


@pytest.mark.parametrize("rank,data_format,shape", CASES)
def test_matches_the_loop_reference_and_its_gradient(rank, data_format, shape):
    rng = np.random.default_rng(rank)
    x = rng.standard_normal(shape)
    kwargs = {} if data_format is None else {"data_format": data_format}
    layer = SPATIAL[rank](0.4, seed=3, dtype="float64", **kwargs)
    first = data_format == "channels_first"
    reset_randomness(layer)
    y, backward = forward(layer, x, training=True)
    u = uniforms((shape[0], shape[1] if first else shape[-1]), np.float64)
    want = spatial_reference(x, 0.4, u, first)
    np.testing.assert_allclose(y, want, rtol=1e-15, atol=0)
    # The gradient is the same mask and scale: the reference's own map of ones.
    np.testing.assert_allclose(to_np(backward(np.ones(shape))), spatial_reference(np.ones(shape), 0.4, u, first),
                               rtol=1e-15)
    np.testing.assert_array_equal(to_np(layer(x, training=False)), x)
    check_layer_gradients(SPATIAL[rank](0.4, seed=3, dtype="float64", **kwargs), x, training=True)


@pytest.mark.parametrize("rank,data_format,shape", CASES)
def test_drops_whole_channels_at_the_rate(rank, data_format, shape):
    batch, channels = 400, 25
    spatial = shape[2:] if data_format == "channels_first" else shape[1:-1]
    big = (batch, channels) + spatial if data_format == "channels_first" else (batch,) + spatial + (channels,)
    x = np.ones(big, np.float32)
    kwargs = {} if data_format is None else {"data_format": data_format}
    y = to_np(SPATIAL[rank](0.3, seed=11, **kwargs)(x, training=True))
    channel_axis = 1 if data_format == "channels_first" else -1
    maps = np.moveaxis(y, channel_axis, 1).reshape(batch, channels, -1)
    assert set(np.unique(maps).tolist()) == {0.0, np.float32(1 / 0.7)}
    np.testing.assert_array_equal(maps, np.broadcast_to(maps[:, :, :1], maps.shape))  # one draw per map
    dropped = (maps[:, :, 0] == 0).mean()
    assert abs(dropped - 0.3) < 0.02  # 10000 maps: 4.6 standard deviations
    assert abs(y.mean() - 1.0) < 0.03


def test_default_data_format_follows_the_config(monkeypatch):
    monkeypatch.setattr(config, "_image_data_format", "channels_first")
    assert SpatialDropout2D(0.5).data_format == SpatialDropout3D(0.5).data_format == "channels_first"


def test_same_seed_same_masks_and_a_new_mask_each_call():
    x = np.ones((8, 3, 3, 16), np.float32)
    a, b = SpatialDropout2D(0.5, seed=5), SpatialDropout2D(0.5, seed=5)
    first = to_np(a(x, training=True))
    np.testing.assert_array_equal(first, to_np(b(x, training=True)))
    second = to_np(a(x, training=True))
    np.testing.assert_array_equal(second, to_np(b(x, training=True)))
    assert not np.array_equal(first, second)
    assert not np.array_equal(first, to_np(SpatialDropout2D(0.5, seed=6)(x, training=True)))


def test_unseeded_masks_follow_set_random_seed(monkeypatch):
    monkeypatch.setattr(utils, "_rng", utils.host_rng())  # restored afterwards
    x = np.ones((16, 4, 8), np.float32)
    utils.set_random_seed(7)
    first = to_np(SpatialDropout1D(0.5)(x, training=True))
    utils.set_random_seed(7)
    np.testing.assert_array_equal(first, to_np(SpatialDropout1D(0.5)(x, training=True)))


def test_rate_edges_and_dtypes():
    x = np.random.default_rng(0).standard_normal((3, 4, 5))
    np.testing.assert_array_equal(to_np(SpatialDropout1D(0.0, dtype="float64")(x, training=True)), x)
    layer = SpatialDropout1D(1.0, seed=0, dtype="float64")
    y, backward = forward(layer, x, training=True)
    np.testing.assert_array_equal(y, np.zeros_like(x))
    np.testing.assert_array_equal(to_np(backward(np.ones_like(x))), np.zeros_like(x))
    half = to_np(SpatialDropout1D(0.5, seed=0, dtype="float16")(x, training=True))
    assert half.dtype == np.float16 and set(np.unique(half / x.astype(np.float16)).round(3).tolist()) <= {0.0, 2.0}


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_input_rank_is_checked_and_configs_are_keras(rank):
    layer = SPATIAL[rank](0.25, seed=2, name=f"sd{rank}")
    with pytest.raises(ValueError, match=f"expected ndim={rank + 2}"):
        layer(np.ones((2,) * (rank + 1), np.float32), training=True)
    assert layer.built and isinstance(layer, Dropout)
    cfg = layer.get_config()
    want = {"rate": 0.25, "seed": 2, "name": f"sd{rank}", "dtype": cfg["dtype"]}
    if rank > 1:
        want["data_format"] = "channels_last"
    assert cfg == want  # Keras's keys: no trainable, no noise_shape
    clone = SPATIAL[rank].from_config(cfg)
    assert clone.get_config() == cfg


@pytest.mark.parametrize(
    "cls,kwargs,error,pattern",
    [
        (SpatialDropout1D, dict(rate=1.5), ValueError, r"rate.*1\.5"),
        (SpatialDropout2D, dict(rate=-0.1), ValueError, r"rate.*-0\.1"),
        (SpatialDropout3D, dict(rate="0.5"), ValueError, r"rate.*'0\.5'"),
        (SpatialDropout2D, dict(rate=0.5, data_format="nhwc"), ValueError, r"data_format.*nhwc"),
        (SpatialDropout3D, dict(rate=0.5, seed=-1), ValueError, r"seed.*-1"),
        (SpatialDropout1D, dict(rate=0.5, data_format="channels_first"), TypeError, r"data_format"),
        (SpatialDropout2D, dict(rate=0.5, noise_shape=(None, 1, 1, None)), TypeError, r"noise_shape"),
    ],
)
def test_spatial_bad_arguments(cls, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        cls(**kwargs)


# ---------------------------------------------------------------- ActivityRegularization


def test_activity_regularization_adds_the_penalty_per_sample():
    x = np.random.default_rng(1).standard_normal((4, 3, 2))
    layer = ActivityRegularization(l1=0.2, l2=0.3, dtype="float64")
    y = to_np(layer(x))
    np.testing.assert_array_equal(y, x)
    want = sum(0.2 * abs(v) + 0.3 * v * v for v in x.reshape(-1)) / x.shape[0]
    (loss,) = layer.losses
    np.testing.assert_allclose(float(to_np(loss)), want, rtol=1e-13)
    layer(x[:1])  # each outermost call replaces the last one's loss
    assert len(layer.losses) == 1
    # Keras's own check: 2 * ones((1,)) gives 0.2 * 2 + 0.3 * 4.
    layer(2 * np.ones((1,)))
    np.testing.assert_allclose(float(to_np(layer.losses[0])), 1.6, rtol=1e-13)


def test_activity_regularization_gradient_and_config():
    x = np.random.default_rng(2).uniform(0.1, 1.0, (3, 4)) * np.array([1, -1, 1, -1])  # away from |x|'s kink
    check_layer_gradients(ActivityRegularization(l1=0.05, l2=0.1, dtype="float64"), x)
    layer = ActivityRegularization(l1=0.01, name="reg")
    cfg = layer.get_config()
    assert cfg == {"name": "reg", "trainable": True, "dtype": cfg["dtype"], "l1": 0.01, "l2": 0.0}
    assert ActivityRegularization.from_config(cfg).get_config() == cfg
    assert ActivityRegularization().losses == []


@pytest.mark.parametrize(
    "kwargs,error,pattern",
    [
        (dict(l1=-0.1), ValueError, r"l1.*-0\.1"),
        (dict(l2=float("nan")), ValueError, r"l2.*nan"),
        (dict(l1="0.1"), ValueError, r"l1.*'0\.1'"),
        (dict(activity_regularizer="l2"), TypeError, r"activity_regularizer"),
    ],
)
def test_activity_regularization_bad_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        ActivityRegularization(**kwargs)
