"""Activation layers: ReLU, LeakyReLU, ELU, Softmax against float64 references, gradients, Keras."""

import importlib.util
import os

import numpy as np
import pytest

import gpulayers
from gpulayers.layers import ELU, LeakyReLU, ReLU, Softmax
from helpers import check_layer_gradients, to_np


def sample(shape=(3, 7), seed=0):
    # Away from the kinks (0, the threshold, the cap) so finite differences are exact there.
    x = np.random.default_rng(seed).uniform(-3, 3, shape)
    return np.where(np.abs(x) < 0.05, 0.3, x)


def relu_reference(x, max_value, negative_slope, threshold):
    out = np.where(x >= threshold, x, negative_slope * (x - threshold))
    return np.minimum(out, max_value) if max_value is not None else out


@pytest.mark.parametrize("kwargs", [{}, {"max_value": 1.5}, {"negative_slope": 0.1, "threshold": 0.5},
                                    {"max_value": 2.0, "negative_slope": 0.2, "threshold": 1.0}])
def test_relu_values_and_gradients(kwargs):
    x = sample()
    layer = ReLU(dtype="float64", **kwargs)
    want = relu_reference(x, kwargs.get("max_value"), kwargs.get("negative_slope", 0.0), kwargs.get("threshold", 0.0))
    np.testing.assert_allclose(to_np(layer(x)), want, rtol=1e-12)
    check_layer_gradients(layer, np.where(np.abs(x - kwargs.get("threshold", 0.0)) < 0.05, 0.7, x))


def test_leaky_relu_elu_softmax_values_and_gradients():
    x = sample()
    np.testing.assert_allclose(to_np(LeakyReLU(dtype="float64")(x)), np.where(x >= 0, x, 0.3 * x), rtol=1e-12)
    np.testing.assert_allclose(to_np(LeakyReLU(alpha=0.1, dtype="float64")(x)), np.where(x >= 0, x, 0.1 * x))
    np.testing.assert_allclose(to_np(ELU(alpha=0.5, dtype="float64")(x)), np.where(x > 0, x, 0.5 * (np.exp(x) - 1)),
                               rtol=1e-12)
    e = np.exp(x - x.max(axis=0, keepdims=True))
    np.testing.assert_allclose(to_np(Softmax(axis=0, dtype="float64")(x)), e / e.sum(axis=0, keepdims=True), rtol=1e-12)
    for layer in (LeakyReLU(dtype="float64"), ELU(dtype="float64"), Softmax(dtype="float64"), Softmax(axis=(0, 1), dtype="float64")):
        check_layer_gradients(layer, x)


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="max_value"):
        ReLU(max_value=-1)
    with pytest.raises(ValueError, match="negative_slope"):
        LeakyReLU(negative_slope=-0.1)
    with pytest.raises(TypeError, match="threshold"):
        ReLU(threshold="0")
    with pytest.raises(TypeError, match="axis"):
        Softmax(axis=1.5)


def test_in_a_functional_model_and_a_file(tmp_path):
    x = gpulayers.Input((5,))
    h = ReLU(max_value=6.0)(gpulayers.layers.Dense(4)(x))
    out = Softmax()(gpulayers.layers.Dense(3)(LeakyReLU()(h)))
    model = gpulayers.Model(x, out)
    model.save(tmp_path / "a.keras")
    loaded = gpulayers.saving.load_model(tmp_path / "a.keras")
    data = sample((2, 5))
    np.testing.assert_array_equal(loaded.predict(data, verbose=0), model.predict(data, verbose=0))


def _keras():
    if "KERAS_BACKEND" not in os.environ and importlib.util.find_spec("torch") is not None:
        os.environ["KERAS_BACKEND"] = "torch"
    return pytest.importorskip("keras", reason="Keras 3 is not installed")


@pytest.mark.parametrize("name, kwargs", [("ReLU", {"max_value": 2.0, "negative_slope": 0.1, "threshold": 0.5}),
                                          ("LeakyReLU", {"negative_slope": 0.2}), ("ELU", {"alpha": 0.7}),
                                          ("Softmax", {"axis": 1})])
def test_same_as_keras(name, kwargs):
    keras = _keras()
    ours, theirs = getattr(gpulayers.layers, name)(**kwargs), getattr(keras.layers, name)(**kwargs)
    x = sample((4, 6)).astype("float32")
    np.testing.assert_allclose(to_np(ours(x)), keras.ops.convert_to_numpy(theirs(x)), rtol=1e-6, atol=1e-7)
    mine, reference = ours.get_config(), theirs.get_config()
    mine.pop("name"), reference.pop("name")
    reference["dtype"] = mine["dtype"]  # both Keras's DTypePolicy form, checked elsewhere
    assert mine == reference
    assert type(getattr(gpulayers.layers, name).from_config(theirs.get_config())) is type(ours)


# ---------------------------------------------------------------- PReLU


def prelu_reference(x, alpha):
    """Loop reference: x where x > 0, alpha * x elsewhere, alpha broadcast over the batch and shared axes."""
    alpha = np.broadcast_to(alpha, x.shape[1:])
    y = np.empty_like(x)
    for index in np.ndindex(x.shape):
        y[index] = x[index] if x[index] > 0 else alpha[index[1:]] * x[index]
    return y


@pytest.mark.parametrize("shape, shared_axes, alpha_shape", [
    ((6,), None, ()),  # rank 1: one slope, as Keras
    ((3, 5), None, (5,)),
    ((2, 3, 4), 1, (1, 4)),
    ((2, 3, 3, 4), [1, 2], (1, 1, 4)),
    ((2, 4, 3, 3), (2, 3), (4, 1, 1)),
    ((2, 2, 3, 2, 3), [1, 2, 3, 4], (1, 1, 1, 1)),
])
def test_prelu_values_weight_layout_and_gradients(shape, shared_axes, alpha_shape):
    from gpulayers.layers import PReLU

    x = sample(shape, seed=len(shape))
    layer = PReLU(alpha_initializer="glorot_uniform", shared_axes=shared_axes, dtype="float64")
    y = to_np(layer(x))
    assert [w.shape for w in layer.get_weights()] == [alpha_shape] and layer.alpha.name == "alpha"
    alpha = layer.get_weights()[0]
    np.testing.assert_allclose(y, prelu_reference(x, alpha), rtol=1e-15)
    _, grads = check_layer_gradients(layer, x)
    assert grads["alpha"].shape == alpha_shape


def test_prelu_defaults_input_spec_regularizer_and_constraint():
    from gpulayers import constraints
    from gpulayers.layers import PReLU

    layer = PReLU()
    x = sample((2, 3, 4)).astype("float32")
    np.testing.assert_array_equal(to_np(layer(x)), np.maximum(x, 0))  # alpha starts at 0: a ReLU
    assert layer.get_weights()[0].shape == (3, 4) and layer.name.startswith("p_re_lu")
    with pytest.raises(ValueError, match="expected axis 2"):
        layer(np.ones((2, 3, 5), "float32"))
    with pytest.raises(ValueError, match="expected ndim=3"):
        layer(np.ones((2, 3), "float32"))
    shared = PReLU(shared_axes=[1])
    shared(x)
    shared(np.ones((5, 7, 4), "float32"))  # the shared axis may change size
    reg = PReLU(alpha_initializer=gpulayers.initializers.Constant(0.5), alpha_regularizer="l2",
                alpha_constraint="non_neg", dtype="float64")
    reg(x)
    np.testing.assert_allclose(float(to_np(reg.losses[0])), 0.01 * 0.25 * 12, rtol=1e-12)
    assert isinstance(reg.alpha.constraint, constraints.NonNeg)
    check_layer_gradients(reg, x)


def test_prelu_gradient_at_zero_and_mixed_precision():
    from helpers import forward
    from gpulayers.layers import PReLU

    layer = PReLU(alpha_initializer=gpulayers.initializers.Constant(0.3), dtype="float64")
    x = np.array([[-2.0, 0.0, 1.5]])
    y, backward = forward(layer, x)
    np.testing.assert_array_equal(to_np(backward(np.ones_like(x))), [[0.3, 0.0, 1.0]])  # 0 at the kink, as Keras
    np.testing.assert_allclose(backward.grads["alpha"], [-2.0, 0.0, 0.0])
    half = PReLU(alpha_initializer=gpulayers.initializers.Constant(0.3), dtype="mixed_float16")
    out = half(x)
    assert out.dtype == np.float16 and half.alpha.dtype == "float32"
    np.testing.assert_allclose(to_np(out).astype(np.float64), [[-0.6, 0.0, 1.5]], rtol=1e-3)


@pytest.mark.parametrize("kwargs, error, pattern", [
    ({"shared_axes": 0}, ValueError, r"shared_axes.*0"),
    ({"shared_axes": [-1]}, ValueError, r"shared_axes.*-1"),
    ({"shared_axes": [1.5]}, ValueError, r"shared_axes.*1\.5"),
    ({"shared_axes": "1"}, ValueError, r"shared_axes.*'1'"),
    ({"alpha_initializer": "nope"}, ValueError, r"alpha_initializer"),
    ({"alpha_regularizer": 3}, (ValueError, TypeError), r"alpha_regularizer"),
    ({"alpha_constraint": "nope"}, ValueError, r"alpha_constraint"),
])
def test_prelu_bad_arguments(kwargs, error, pattern):
    from gpulayers.layers import PReLU

    with pytest.raises(error, match=pattern):
        PReLU(**kwargs)


def test_prelu_shared_axis_beyond_the_input_leaves_the_layer_unbuilt():
    from gpulayers.layers import PReLU

    layer = PReLU(shared_axes=[3])
    with pytest.raises(ValueError, match=r"shared_axes"):
        layer(np.ones((2, 3, 4), "float32"))
    assert not layer.built and layer.weights == []
    assert layer(np.ones((2, 3, 4, 5), "float32")).shape == (2, 3, 4, 5)


@pytest.mark.parametrize("full", [False, True])
def test_prelu_same_as_keras(full):
    from helpers import keras_or_skip
    from gpulayers.layers import PReLU

    keras = keras_or_skip()
    x = sample((2, 5, 3, 4)).astype("float32")

    def arguments(library):  # L1(0.25): Keras keeps a regularizer's factor in float32, 0.25 is exact there
        return dict(alpha_initializer="glorot_uniform", alpha_regularizer=library.regularizers.L1(0.25),
                    alpha_constraint="max_norm", shared_axes=[1, 2]) if full else {}

    ours, theirs = PReLU(**arguments(gpulayers)), keras.layers.PReLU(**arguments(keras))
    ours.build(x.shape), theirs.build(x.shape)
    assert [tuple(w.shape) for w in theirs.weights] == [tuple(w.shape) for w in ours.weights]
    alpha = np.random.default_rng(0).uniform(0.1, 0.9, tuple(ours.alpha.shape)).astype("float32")
    ours.set_weights([alpha]), theirs.set_weights([alpha])
    np.testing.assert_array_equal(to_np(ours(x)), keras.ops.convert_to_numpy(theirs(x)))
    mine, reference = ours.get_config(), theirs.get_config()
    mine.pop("name"), reference.pop("name")
    reference["dtype"] = mine["dtype"]
    assert mine == reference
    rebuilt = PReLU.from_config(theirs.get_config())
    assert rebuilt.get_config()["shared_axes"] == reference["shared_axes"]
    assert keras.layers.PReLU.from_config(ours.get_config()).get_config()["alpha_constraint"] == reference["alpha_constraint"]
