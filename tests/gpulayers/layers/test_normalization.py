"""BatchNormalization: batch and moving statistics, weights, gradients and argument checks."""

import numpy as np
import pytest

import gpulayers.layers
from gpulayers import regularizers
from gpulayers.layers import BatchNormalization
from gpulayers.layers.normalization import BatchNormalization as BatchNormalizationFromModule
from helpers import forward, check_layer_gradients, to_np

# ---------------------------------------------------------------- reference


def ref_batch_stats(x, axis):
    """Per-feature mean and BIASED variance, with explicit loops over the feature axis."""
    x = np.asarray(x, dtype=np.float64)
    axis = axis % x.ndim
    moved = np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis])
    mean = np.zeros(x.shape[axis])
    var = np.zeros(x.shape[axis])
    for f in range(x.shape[axis]):
        column = moved[:, f]
        mean[f] = sum(column) / len(column)
        var[f] = sum((v - mean[f]) ** 2 for v in column) / len(column)
    return mean, var


def ref_normalize(x, mean, var, gamma, beta, axis, epsilon):
    x = np.asarray(x, dtype=np.float64)
    shape = [1] * x.ndim
    shape[axis % x.ndim] = -1
    gamma = np.ones_like(mean) if gamma is None else np.asarray(gamma, np.float64)
    beta = np.zeros_like(mean) if beta is None else np.asarray(beta, np.float64)
    inv = gamma / np.sqrt(var + epsilon)
    return x * inv.reshape(shape) + (beta - mean * inv).reshape(shape)


def randomize(layer, rng):
    """Random gamma/beta and moving statistics (variance positive)."""
    values = []
    for v in layer.weights:
        if v.name == "moving_variance":
            values.append(rng.uniform(0.5, 2.0, v.shape))
        else:
            values.append(rng.standard_normal(v.shape))
    layer.set_weights(values)
    return {v.name: w for v, w in zip(layer.weights, layer.get_weights())}


def assert_weights_equal(before, after):
    assert len(before) == len(after)
    for b, a in zip(before, after):
        np.testing.assert_array_equal(b, a)


# ---------------------------------------------------------------- training


@pytest.mark.parametrize(
    "shape,axis",
    [((6, 3, 4, 5), -1), ((6, 3, 4, 5), 3), ((6, 3, 4, 5), 1), ((6, 3, 4, 5), -3), ((8, 4), -1), ((8, 4), 1), ((5, 4, 3), 0)],
)
def test_training_uses_batch_statistics_and_updates_moving_ones(shape, axis):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    layer = BatchNormalization(axis=axis, momentum=0.9, epsilon=1e-3)
    layer.build_from_shape(x.shape)
    w = randomize(layer, rng)
    y = to_np(layer(x, training=True))
    mean, var = ref_batch_stats(x, axis)
    ref = ref_normalize(x, mean, var, w["gamma"], w["beta"], axis, 1e-3)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_np(layer.moving_mean.value), w["moving_mean"] * 0.9 + mean * 0.1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        to_np(layer.moving_variance.value), w["moving_variance"] * 0.9 + var * 0.1, rtol=1e-5, atol=1e-6
    )
    # A second call updates from the new moving values.
    x2 = rng.standard_normal(shape).astype(np.float32)
    mm, mv = to_np(layer.moving_mean.value).astype(np.float64), to_np(layer.moving_variance.value).astype(np.float64)
    layer(x2, training=True)
    mean2, var2 = ref_batch_stats(x2, axis)
    np.testing.assert_allclose(to_np(layer.moving_mean.value), mm * 0.9 + mean2 * 0.1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_np(layer.moving_variance.value), mv * 0.9 + var2 * 0.1, rtol=1e-5, atol=1e-6)


def test_batch_variance_is_biased():
    # Feature values 0 and 2 over a batch of 2: biased variance 1, unbiased 2.
    x = np.array([[0.0], [2.0]])
    layer = BatchNormalization(momentum=0.0, epsilon=1e-3, dtype="float64")
    y = to_np(layer(x, training=True))
    np.testing.assert_allclose(y[:, 0], [-1 / np.sqrt(1.001), 1 / np.sqrt(1.001)], rtol=1e-12)
    np.testing.assert_allclose(to_np(layer.moving_variance.value), [1.0], rtol=1e-12)
    np.testing.assert_allclose(to_np(layer.moving_mean.value), [1.0], rtol=1e-12)


def test_defaults_like_keras():
    layer = BatchNormalization()
    assert layer.axis == -1 and layer.momentum == 0.99 and layer.epsilon == 1e-3
    assert layer.center is True and layer.scale is True
    layer(np.ones((2, 3), np.float32))
    w = layer.get_weights()
    np.testing.assert_array_equal(w[0], np.ones(3))
    np.testing.assert_array_equal(w[1], np.zeros(3))
    np.testing.assert_array_equal(w[2], np.zeros(3))
    np.testing.assert_array_equal(w[3], np.ones(3))


@pytest.mark.parametrize("momentum", [0.0, 1.0])
def test_momentum_bounds_are_accepted(momentum):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 2))
    layer = BatchNormalization(momentum=momentum, dtype="float64")
    layer(x, training=True)
    mean, var = ref_batch_stats(x, -1)
    if momentum == 1.0:
        np.testing.assert_array_equal(to_np(layer.moving_mean.value), np.zeros(2))
        np.testing.assert_array_equal(to_np(layer.moving_variance.value), np.ones(2))
    else:
        np.testing.assert_allclose(to_np(layer.moving_mean.value), mean, rtol=1e-12)
        np.testing.assert_allclose(to_np(layer.moving_variance.value), var, rtol=1e-12)


# ---------------------------------------------------------------- inference


@pytest.mark.parametrize("axis", [-1, 1, 3])
def test_inference_uses_moving_statistics(axis):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3, 5, 2)).astype(np.float32)
    layer = BatchNormalization(axis=axis, epsilon=0.01)
    layer.build_from_shape(x.shape)
    w = randomize(layer, rng)
    before = layer.get_weights()
    ref = ref_normalize(x, w["moving_mean"], w["moving_variance"], w["gamma"], w["beta"], axis, 0.01)
    np.testing.assert_allclose(to_np(layer(x, training=False)), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_np(layer(x)), ref, rtol=1e-5, atol=1e-5)  # training defaults to False
    assert_weights_equal(before, layer.get_weights())


def test_trainable_false_uses_moving_statistics_even_when_training():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    layer = BatchNormalization()
    layer.build_from_shape(x.shape)
    w = randomize(layer, rng)
    layer.trainable = False
    before = layer.get_weights()
    y = to_np(layer(x, training=True))
    ref = ref_normalize(x, w["moving_mean"], w["moving_variance"], w["gamma"], w["beta"], -1, 1e-3)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    assert_weights_equal(before, layer.get_weights())
    assert layer.trainable_weights == []
    assert [v.name for v in layer.non_trainable_weights] == ["gamma", "beta", "moving_mean", "moving_variance"]
    layer.trainable = True
    y = to_np(layer(x, training=True))
    mean, var = ref_batch_stats(x, -1)
    np.testing.assert_allclose(y, ref_normalize(x, mean, var, w["gamma"], w["beta"], -1, 1e-3), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- center / scale and weights


@pytest.mark.parametrize(
    "center,scale,names",
    [
        (True, True, ["gamma", "beta", "moving_mean", "moving_variance"]),
        (False, True, ["gamma", "moving_mean", "moving_variance"]),
        (True, False, ["beta", "moving_mean", "moving_variance"]),
        (False, False, ["moving_mean", "moving_variance"]),
    ],
)
@pytest.mark.parametrize("training", [True, False])
def test_center_and_scale_shrink_the_weights(center, scale, names, training):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 3, 3, 2)).astype(np.float32)
    layer = BatchNormalization(axis=1, center=center, scale=scale)
    layer.build_from_shape(x.shape)
    assert [v.name for v in layer.weights] == names
    assert [v.name for v in layer.trainable_weights] == [n for n in names if n in ("gamma", "beta")]
    assert [v.name for v in layer.non_trainable_weights] == ["moving_mean", "moving_variance"]
    assert all(w.shape == (3,) for w in layer.get_weights())
    assert layer.count_params() == 3 * len(names)
    w = randomize(layer, rng)
    y = to_np(layer(x, training=training))
    if training:
        mean, var = ref_batch_stats(x, 1)
    else:
        mean, var = w["moving_mean"], w["moving_variance"]
    ref = ref_normalize(x, mean, var, w.get("gamma"), w.get("beta"), 1, 1e-3)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"weights"):
        layer.set_weights(layer.get_weights() + [np.zeros(3)])


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize(
    "shape,kwargs,training",
    [
        ((4, 3), dict(), True),
        ((3, 2, 2, 3), dict(axis=-1), True),
        ((3, 2, 2, 3), dict(axis=3), True),
        ((3, 3, 2, 2), dict(axis=1), True),
        ((3, 2, 2, 3), dict(axis=-1), False),
        ((3, 3, 2, 2), dict(axis=1), False),
        ((4, 3), dict(center=False), True),
        ((4, 3), dict(scale=False), True),
        ((4, 3), dict(center=False, scale=False), True),
        ((4, 3), dict(center=False), False),
        ((4, 3), dict(scale=False), False),
        ((4, 3), dict(center=False, scale=False), False),
        ((4, 3), dict(gamma_regularizer=regularizers.L2(0.1), beta_regularizer=regularizers.L1(0.05)), True),
        ((4, 3), dict(activity_regularizer=regularizers.L2(0.02)), False),
    ],
)
def test_gradients_match_finite_differences(shape, kwargs, training):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape) * 2 + 0.5
    layer = BatchNormalization(dtype="float64", momentum=0.5, **kwargs)
    layer.build_from_shape(x.shape)
    randomize(layer, rng)
    _, grads = check_layer_gradients(layer, x, training=training)
    expected = {n for n, on in (("gamma", layer.scale), ("beta", layer.center)) if on}
    assert set(grads) == expected


@pytest.mark.parametrize("training", [True, False])
def test_gradients_with_trainable_false(training):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 2, 2, 3))
    layer = BatchNormalization(dtype="float64")
    layer.build_from_shape(x.shape)
    randomize(layer, rng)
    layer.trainable = False
    before = layer.get_weights()
    dx, grads = check_layer_gradients(layer, x, training=training)
    assert grads == {}
    assert not layer.gamma.trainable and not layer.beta.trainable
    assert_weights_equal(before, layer.get_weights())
    # With frozen statistics the input gradient is dy * gamma / sqrt(var + eps).
    w = dict(zip(["gamma", "beta", "moving_mean", "moving_variance"], before))
    _, backward = forward(layer, x, training=training)
    dx = to_np(backward(np.ones_like(x)))
    np.testing.assert_allclose(dx, np.broadcast_to(w["gamma"] / np.sqrt(w["moving_variance"] + 1e-3), x.shape), rtol=1e-12)


# ---------------------------------------------------------------- bad arguments and inputs


@pytest.mark.parametrize(
    "kwargs,error,pattern",
    [
        (dict(momentum=1.5), ValueError, r"momentum.*1\.5"),
        (dict(momentum=-0.1), ValueError, r"momentum.*-0\.1"),
        (dict(momentum=float("nan")), ValueError, r"momentum.*nan"),
        (dict(momentum="0.9"), TypeError, r"momentum.*'0\.9'"),
        (dict(epsilon=0), ValueError, r"epsilon.*0"),
        (dict(epsilon=-1e-3), ValueError, r"epsilon.*-0\.001"),
        (dict(axis=1.0), TypeError, r"axis.*1\.0"),
        (dict(axis=(1, 2)), TypeError, r"axis.*\(1, 2\)"),
        (dict(axis="channels"), TypeError, r"axis.*'channels'"),
        (dict(center="no"), TypeError, r"center.*'no'"),
        (dict(scale=2), TypeError, r"scale.*2"),
        (dict(gamma_initializer="onez"), ValueError, r"gamma_initializer.*'onez'"),
        (dict(moving_variance_initializer="nope"), ValueError, r"moving_variance_initializer.*'nope'"),
        (dict(beta_regularizer="l9"), ValueError, r"beta_regularizer.*'l9'"),
        (dict(renorm=True), ValueError, r"Invalid value for `renorm`: renorm is not supported.*renorm=True"),
        (dict(renorm=1), ValueError, r"renorm is not supported.*renorm=1"),
        (dict(renorm=True, renorm_clipping={"rmax": 3.0}, renorm_momentum=0.9), ValueError, r"renorm is not supported"),
        (dict(renorm="no"), TypeError, r"renorm.*'no'"),
        (dict(renorm_momentum=1.5), ValueError, r"renorm_momentum.*1\.5"),
        (dict(renorm_momentum="0.99"), TypeError, r"renorm_momentum.*'0\.99'"),
        (dict(renorm_clipping="rmax"), TypeError, r"renorm_clipping.*'rmax'"),
        (dict(renorm_clipping={"rmaxx": 3.0}), ValueError, r"renorm_clipping.*'rmaxx'"),
        (dict(renorm_clipping={"rmax": "3"}), TypeError, r"renorm_clipping.*'rmax'"),
    ],
)
def test_bad_arguments_are_refused(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        BatchNormalization(**kwargs)


# Keras 3.15's config for keras.layers.BatchNormalization() (written by Keras 3.15.1).
KERAS_BN_CONFIG = {
    "name": "batch_normalization", "trainable": True,
    "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None},
    "axis": -1, "momentum": 0.99, "epsilon": 0.001, "center": True, "scale": True,
    "beta_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": None},
    "gamma_initializer": {"module": "keras.initializers", "class_name": "Ones", "config": {}, "registered_name": None},
    "moving_mean_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {},
                                "registered_name": None},
    "moving_variance_initializer": {"module": "keras.initializers", "class_name": "Ones", "config": {},
                                    "registered_name": None},
    "beta_regularizer": None, "gamma_regularizer": None, "beta_constraint": None, "gamma_constraint": None,
    "synchronized": False, "renorm": False, "renorm_clipping": None, "renorm_momentum": 0.99,
}


def test_takes_keras_3_renorm_arguments_with_their_defaults():
    layer = BatchNormalization(renorm=False, renorm_clipping=None, renorm_momentum=0.99)
    assert layer.renorm is False and layer.renorm_clipping is None and layer.renorm_momentum == 0.99
    config = layer.get_config()
    assert (config["renorm"], config["renorm_clipping"], config["renorm_momentum"]) == (False, None, 0.99)


def test_config_is_keras_3_config():
    layer = BatchNormalization.from_config(dict(KERAS_BN_CONFIG))
    assert layer.get_config() == KERAS_BN_CONFIG
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_array_equal(to_np(layer(x, training=True)), to_np(BatchNormalization()(x, training=True)))


def test_renorm_clipping_and_momentum_without_renorm_are_kept_and_change_nothing():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 2, 3)).astype(np.float32)
    clipping = {"rmax": 3.0, "rmin": None, "dmax": 5}
    layer = BatchNormalization(renorm_clipping=clipping, renorm_momentum=0.5)
    plain = BatchNormalization()
    np.testing.assert_array_equal(to_np(layer(x, training=True)), to_np(plain(x, training=True)))
    for a, b in zip(layer.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(a, b)
    config = layer.get_config()
    assert config["renorm_clipping"] == clipping and config["renorm_momentum"] == 0.5
    clipping["rmax"] = 9.0  # the layer keeps a copy
    config["renorm_clipping"]["rmin"] = 1.0  # and hands out a copy
    assert layer.renorm_clipping == {"rmax": 3.0, "rmin": None, "dmax": 5}
    assert BatchNormalization.from_config(layer.get_config()).get_config() == layer.get_config()


@pytest.mark.parametrize("axis", [5, 4, -5])
def test_axis_out_of_range_is_refused_at_build(axis):
    layer = BatchNormalization(axis=axis)
    with pytest.raises(ValueError, match=rf"axis.*{axis}"):
        layer(np.ones((2, 3, 3, 2), np.float32), training=True)
    assert not layer.built and layer.weights == []
    with pytest.raises(ValueError, match=rf"axis.*{axis}"):
        layer.compute_output_shape((2, 3, 3, 2))


def test_wrong_inputs_after_build_leave_statistics_unchanged():
    rng = np.random.default_rng(7)
    layer = BatchNormalization(axis=-1)
    layer(rng.standard_normal((4, 3, 3, 2)), training=True)
    randomize(layer, rng)
    before = layer.get_weights()
    with pytest.raises(ValueError, match=r"inputs\.shape=\(4, 3, 3, 5\)"):
        layer(rng.standard_normal((4, 3, 3, 5)), training=True)
    with pytest.raises(ValueError, match=r"ndim"):
        layer(rng.standard_normal((4, 2)), training=True)
    with pytest.raises(TypeError, match=r"inputs"):
        layer(np.ones((4, 3, 3, 2), dtype=complex), training=True)
    assert_weights_equal(before, layer.get_weights())


def test_rank_one_input_is_refused():
    layer = BatchNormalization()
    with pytest.raises(ValueError, match=r"rank"):
        layer(np.ones((3,), np.float32))
    assert not layer.built


def test_importable_from_normalization_module():
    assert BatchNormalizationFromModule is BatchNormalization
    assert gpulayers.layers.normalization.BatchNormalization is BatchNormalization


# ---------------------------------------------------------------- rank 3 and rank 5 inputs (Conv1D, Conv3D)


@pytest.mark.parametrize(
    "shape,axis", [((4, 5, 3), -1), ((4, 3, 5), 1), ((3, 2, 3, 2, 4), -1), ((3, 4, 2, 3, 2), 1), ((3, 2, 4, 2, 2), 2)]
)
def test_rank_3_and_5_training_inference_and_gradients(shape, axis):
    rng = np.random.default_rng(11)
    x = rng.standard_normal(shape) * 2 + 1
    layer = BatchNormalization(axis=axis, momentum=0.8)
    layer.build_from_shape(shape)
    w = randomize(layer, rng)
    y = to_np(layer(x.astype(np.float32), training=True))
    mean, var = ref_batch_stats(x, axis)
    np.testing.assert_allclose(y, ref_normalize(x, mean, var, w["gamma"], w["beta"], axis, 1e-3), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_np(layer.moving_mean.value), w["moving_mean"] * 0.8 + mean * 0.2, rtol=1e-5, atol=1e-6)
    moving = {n: to_np(v.value) for n, v in (("mean", layer.moving_mean), ("var", layer.moving_variance))}
    y = to_np(layer(x.astype(np.float32), training=False))
    ref = ref_normalize(x, moving["mean"], moving["var"], w["gamma"], w["beta"], axis, 1e-3)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    layer64 = BatchNormalization(axis=axis, dtype="float64")
    layer64.build_from_shape(shape)
    randomize(layer64, rng)
    for training in (True, False):
        check_layer_gradients(layer64, x[:2], training=training)


def test_rank_3_and_5_equal_keras():
    from helpers import keras_or_skip

    keras = keras_or_skip()
    rng = np.random.default_rng(12)
    for shape, axis in (((4, 5, 3), -1), ((4, 3, 5), 1), ((3, 2, 3, 2, 4), -1), ((3, 4, 2, 3, 2), 1)):
        x = (rng.standard_normal(shape) * 3 - 1).astype(np.float32)
        ours, theirs = BatchNormalization(axis=axis, momentum=0.7), keras.layers.BatchNormalization(axis=axis, momentum=0.7)
        ours.build_from_shape(shape)
        theirs.build(shape)
        weights = [rng.uniform(0.5, 2.0, w.shape).astype(np.float32) for w in ours.get_weights()]
        ours.set_weights(weights)
        theirs.set_weights(weights)
        for training in (True, False, True):
            np.testing.assert_allclose(to_np(ours(x, training=training)),
                                       keras.ops.convert_to_numpy(theirs(x, training=training)), rtol=1e-5, atol=1e-5)
        for a, b in zip(ours.get_weights(), theirs.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- masks (Keras's masked moments)


def test_masked_training_statistics_ignore_masked_steps():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((3, 4, 2)).astype(np.float32)
    mask = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]], np.float32)
    layer = BatchNormalization(momentum=0.0)
    y = to_np(layer(x, training=True, mask=mask))
    kept = x[mask.astype(bool)]  # (6, 2): the unmasked steps
    count = len(kept) + 1e-7  # Keras divides by the count plus backend epsilon
    mean = kept.astype(np.float64).sum(axis=0) / count
    var = ((kept - mean) ** 2).sum(axis=0) / count
    np.testing.assert_allclose(to_np(layer.moving_mean.value), mean, rtol=1e-5)
    np.testing.assert_allclose(to_np(layer.moving_variance.value), var, rtol=1e-5)
    np.testing.assert_allclose(y, ref_normalize(x, mean, var, None, None, -1, 1e-3), rtol=1e-5, atol=1e-5)
    # In inference the mask changes nothing; a mask of the wrong rank is refused.
    np.testing.assert_array_equal(to_np(layer(x, mask=mask)), to_np(layer(x)))
    before = layer.get_weights()
    with pytest.raises(ValueError, match=r"one dimension less.*mask\.shape=\(3, 4, 2\)"):
        layer(x, training=True, mask=np.ones_like(x))
    assert_weights_equal(before, layer.get_weights())
    full = BatchNormalization(scale=False, center=False)
    np.testing.assert_array_equal(to_np(full(np.zeros((4, 5)), training=True, mask=np.zeros(4))), 0.0)


def test_masked_training_gradients():
    from backends import get_ops
    from gpulayers import autodiff, ops as gops

    rng = np.random.default_rng(14)
    x = rng.standard_normal((3, 4, 2))
    mask = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 1, 0]])
    layer = BatchNormalization(dtype="float64", momentum=0.5)
    layer.build_from_shape(x.shape)
    randomize(layer, rng)
    r = rng.standard_normal(x.shape)
    moving = [v.value for v in layer.non_trainable_weights]

    def total(inputs, gamma=None):
        if gamma is not None:
            layer.gamma.value = get_ops().asarray(gamma)
        with autodiff.no_backward():
            out = float(np.sum(r * to_np(layer(inputs, training=True, mask=mask))))
        for v, value in zip(layer.non_trainable_weights, moving):
            v.value = value
        return out

    t = gops.convert_to_tensor(x)
    with autodiff.GradientTape() as tape:
        tape.watch(t)
        scalar = gops.sum(layer(t, training=True, mask=mask) * r)
    dx, dgamma = (to_np(g) for g in tape.gradient(scalar, [t, layer.gamma]))
    eps, num = 1e-6, np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += eps
        down[i] -= eps
        num[i] = (total(up) - total(down)) / (2 * eps)
    np.testing.assert_allclose(dx, num, rtol=1e-5, atol=1e-7)
    gamma = to_np(layer.gamma.value).copy()
    for k in range(2):
        up, down = gamma.copy(), gamma.copy()
        up[k] += eps
        down[k] -= eps
        assert abs(dgamma[k] - (total(x, up) - total(x, down)) / (2 * eps)) < 1e-6
