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
