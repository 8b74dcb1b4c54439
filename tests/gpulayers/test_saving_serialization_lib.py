"""keras.saving.serialize_keras_object / deserialize_keras_object for every family, both ways with Keras."""

import numpy as np
import pytest
from helpers import keras_or_skip

from gpulayers import activations, constraints, initializers, layers, losses, metrics, optimizers, regularizers
from gpulayers import saving
from gpulayers.autodiff import Tensor
from gpulayers.optimizers import schedules


def objects():
    return [
        optimizers.SGD(0.1, momentum=0.5, nesterov=True),
        optimizers.Adam(learning_rate=schedules.ExponentialDecay(0.1, 10, 0.9)),
        schedules.CosineDecayRestarts(0.1, 7, t_mul=3.0),
        losses.MeanSquaredError(reduction="sum"),
        losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
        metrics.AUC(num_thresholds=50),
        metrics.SparseCategoricalAccuracy(),
        initializers.Orthogonal(gain=2.0, seed=3),
        initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="uniform", seed=1),
        regularizers.L1L2(l1=0.1, l2=0.2),
        constraints.MaxNorm(2.0, axis=[0, 1]),
        layers.Dense(3, activation="relu", kernel_regularizer=regularizers.L2(0.01)),
    ]


@pytest.mark.parametrize("index", range(len(objects())))
def test_every_family_round_trips(index):
    obj = objects()[index]
    config = saving.serialize_keras_object(obj)
    assert config["module"].startswith("keras") and config["class_name"] == type(obj).__name__
    back = saving.deserialize_keras_object(config)
    assert type(back) is type(obj) and back.get_config() == obj.get_config()


def test_functions_containers_arrays_and_plain_values():
    assert saving.serialize_keras_object(activations.relu) == {
        "module": "keras.activations", "class_name": "function", "config": "relu", "registered_name": "relu"}
    assert saving.deserialize_keras_object(saving.serialize_keras_object(activations.gelu)) is activations.gelu
    mse = saving.serialize_keras_object(losses.mean_squared_error)
    assert mse["module"] == "keras.losses" and saving.deserialize_keras_object(mse) is losses.mean_squared_error
    value = {"a": (1, [2.5, "x"]), "b": None, "c": np.arange(3, dtype=np.int64), "d": b"raw", "e": np.float32(2.5)}
    config = saving.serialize_keras_object(value)
    assert config["c"] == {"class_name": "__numpy__", "config": {"value": [0, 1, 2], "dtype": "int64"}}
    assert config["e"] == 2.5 and isinstance(config["e"], float)
    back = saving.deserialize_keras_object(config)
    assert back["a"] == (1, [2.5, "x"]) and back["b"] is None and back["d"] == b"raw"
    np.testing.assert_array_equal(back["c"], [0, 1, 2]) and back["c"].dtype == np.int64
    tensor = saving.deserialize_keras_object(saving.serialize_keras_object(Tensor(np.ones((2, 2), np.float32))))
    assert isinstance(tensor, Tensor) and tensor.dtype == np.float32


def test_only_known_objects_are_built():
    class Custom(regularizers.Regularizer):
        def __init__(self, factor=1.0):
            self.factor = factor

        def __call__(self, x):
            return self.factor

        def get_config(self):
            return {"factor": self.factor}

    config = saving.serialize_keras_object(Custom(3.0))
    with pytest.raises(ValueError):
        saving.deserialize_keras_object(config)  # not made known: refused
    back = saving.deserialize_keras_object(config, custom_objects={"Custom": Custom})
    assert isinstance(back, Custom) and back.factor == 3.0
    with pytest.raises(ValueError):
        saving.deserialize_keras_object({"module": "os", "class_name": "system", "config": {"command": "true"}})
    with pytest.raises(TypeError, match="custom_objects"):
        saving.deserialize_keras_object(config, custom_objects=[Custom])


def assert_close(a, b, where="config"):
    """Equal, floats to float32's precision (Keras keeps some of them as float32)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_close(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-6), where
    else:
        assert a == b, where


def test_both_ways_with_keras():
    keras = keras_or_skip()
    for obj in objects():
        theirs = keras.saving.deserialize_keras_object(saving.serialize_keras_object(obj))
        assert type(theirs).__name__ == type(obj).__name__
        ours = saving.deserialize_keras_object(keras.saving.serialize_keras_object(theirs))
        assert type(ours) is type(obj)
        assert_close(ours.get_config(), obj.get_config())
    assert saving.deserialize_keras_object(keras.saving.serialize_keras_object(keras.activations.silu)) is (
        activations.silu)
