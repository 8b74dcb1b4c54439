"""Sequential: building, naming rules, weights, predict, backward, summary, config."""

import numpy as np
import pytest

from backends import get_ops
from gpulayers import utils
from gpulayers import autodiff
from gpulayers import ops as gops
from gpulayers.layers import (
    BatchNormalization,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    Input,
    InputLayer,
    Layer,
    MaxPooling2D,
)
from gpulayers.models import Sequential
from helpers import numeric_grad, to_np


def small_cnn(dtype="float32"):
    return Sequential(
        [
            Input(shape=(8, 8, 3), dtype=dtype),
            Conv2D(4, 3, padding="same", activation="relu", dtype=dtype),
            BatchNormalization(dtype=dtype),
            MaxPooling2D(dtype=dtype),
            Flatten(dtype=dtype),
            Dense(5, activation="softmax", dtype=dtype),
        ]
    )


def test_shapes_from_input_shape_on_first_layer():
    model = Sequential()
    model.add(Conv2D(64, (3, 3), input_shape=(32, 32, 3), padding="same"))
    assert model.output_shape == (None, 32, 32, 64)
    model.add(Flatten())
    assert model.output_shape == (None, 65536)
    assert len(model.layers) == 2  # the automatic InputLayer is not listed, as in Keras


def test_output_shape_unknown_until_built():
    model = Sequential([Dense(3)])
    with pytest.raises(AttributeError):
        model.output_shape
    model(np.zeros((2, 4)))
    assert model.output_shape == (None, 3)
    assert model.layers[0].kernel.shape == (4, 3)


def test_rejects_non_layers_duplicates_and_second_input():
    model = Sequential([Input((4,))])
    with pytest.raises(ValueError, match="layer="):  # Keras 3.15.1 raises ValueError
        model.add("dense")
    with pytest.raises(ValueError, match=r"layer=\{\}"):
        model.add({})
    with pytest.raises(ValueError):
        Sequential([lambda x: x])
    model.add(Dense(2, name="d"))
    with pytest.raises(ValueError, match="unique names.*'d'"):
        model.add(Dense(3, name="d"))
    with pytest.raises(ValueError, match="InputLayer"):
        model.add(InputLayer(shape=(4,)))
    assert [l.name for l in model.layers] == ["d"]


def test_incompatible_layer_is_refused_and_model_unchanged():
    model = Sequential([Input((4,)), Dense(3)])
    before = model.output_shape
    with pytest.raises(ValueError, match="ndim=4"):
        model.add(Conv2D(2, 3))
    assert model.output_shape == before and len(model.layers) == 1


def test_unique_default_names():
    utils.clear_session()
    names = [Dense(1).name, Dense(1).name, Conv2D(1, 1).name, BatchNormalization().name, Sequential().name]
    assert names == ["dense", "dense_1", "conv2d", "batch_normalization", "sequential"]


def test_get_set_weights_is_the_concatenation_and_validates_first():
    model = small_cnn()
    weights = model.get_weights()
    expected = [w for layer in model.layers for w in layer.get_weights()]
    assert len(weights) == len(expected) == 2 + 4 + 2
    for a, b in zip(weights, expected):
        np.testing.assert_array_equal(a, b)
    new = [np.full(w.shape, 0.5, dtype=w.dtype) for w in weights]
    model.set_weights(new)
    assert all(np.all(w == 0.5) for w in model.get_weights())
    bad = list(new)
    bad[-1] = np.zeros((7,))
    with pytest.raises(ValueError, match=r"weights\[7\]"):
        model.set_weights([np.ones_like(w) for w in new[:-1]] + [np.zeros((7,))])
    assert all(np.all(w == 0.5) for w in model.get_weights())  # nothing assigned
    with pytest.raises(ValueError, match="list of 8"):
        model.set_weights(new[:3])


def test_predict_returns_numpy_in_batches_and_matches_call():
    model = small_cnn()
    x = np.random.default_rng(0).standard_normal((10, 8, 8, 3)).astype("float32")
    out = model.predict(x, batch_size=3, verbose=0)
    assert isinstance(out, np.ndarray) and out.shape == (10, 5)
    np.testing.assert_allclose(out, to_np(model(x)), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="batch_size"):
        model.predict(x, batch_size=0)
    assert model.predict(x[:0], verbose=0).shape == (0, 5)


def test_predict_accepts_array_likes():
    model = Sequential([Input((3,)), Dense(2)])

    class ArrayLike:
        def __array__(self, dtype=None, copy=None):
            return np.ones((4, 3))

    assert model.predict(ArrayLike(), verbose=0).shape == (4, 2)
    assert model.predict([[1.0, 2.0, 3.0]], verbose=0).shape == (1, 2)


def test_model_backward_matches_finite_differences():
    model = Sequential(
        [
            Input((6, 6, 2), dtype="float64"),
            Conv2D(3, 3, padding="same", activation="tanh", dtype="float64", kernel_regularizer="l2"),
            BatchNormalization(dtype="float64"),
            MaxPooling2D(dtype="float64"),
            Flatten(dtype="float64"),
            Dense(4, activation="softmax", dtype="float64"),
        ]
    )
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 6, 6, 2))
    r = rng.standard_normal((3, 4))
    ops = get_ops()

    def total():
        y = to_np(model(x, training=True))
        return float(np.sum(r * y) + sum(float(to_np(l)) for l in model.losses))

    conv = model.layers[0]
    inputs = gops.convert_to_tensor(x)
    with autodiff.GradientTape() as tape:
        tape.watch(inputs)
        scalar = gops.sum(model(inputs, training=True) * r) + sum(model.losses)
    dx, grad = (to_np(g) for g in tape.gradient(scalar, [inputs, conv.kernel]))
    np.testing.assert_allclose(dx, numeric_grad(total, x), rtol=1e-5, atol=1e-7)
    kernel = to_np(conv.kernel.value).copy()

    def with_kernel():
        conv.kernel.value = ops.asarray(kernel.copy())
        return total()

    np.testing.assert_allclose(grad, numeric_grad(with_kernel, kernel), rtol=1e-5, atol=1e-7)


def test_the_input_gradient_is_computed_only_when_asked_for(monkeypatch):
    model = Sequential([Input((3,)), Dense(2)])
    calls = []
    matmul = get_ops().matmul
    monkeypatch.setattr(get_ops(), "matmul", lambda a, b: calls.append(b.shape) or matmul(a, b))
    y = model(np.ones((2, 3)), training=True)
    (grad,) = autodiff.gradient(gops.sum(y), [model.layers[0].kernel])
    assert grad.shape == (3, 2)
    assert calls == [(3, 2), (2, 2)]  # forward x @ kernel, then x.T @ dy: no dy @ kernel.T for the data


def test_trainable_flags_and_losses():
    model = small_cnn()
    assert len(model.trainable_weights) == 6 and len(model.non_trainable_weights) == 2
    model.layers[1].trainable = False
    assert len(model.trainable_weights) == 4 and len(model.non_trainable_weights) == 4
    model.trainable = False
    assert model.trainable_weights == [] and len(model.non_trainable_weights) == 8
    reg = Sequential([Input((3,)), Dense(2, kernel_regularizer="l2", activity_regularizer="l1")])
    reg(np.ones((2, 3)))
    assert len(reg.losses) == 2


def test_summary_lists_layers_and_totals():
    model = small_cnn()
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert 'Model: "' in text
    assert "(Conv2D)" in text and "(None, 8, 8, 4)" in text and "(None, 5)" in text
    total = model.count_params()
    assert total == 3 * 3 * 3 * 4 + 4 + 4 * 4 + 64 * 5 + 5
    assert f"Total params: {total:,}" in text
    assert "Trainable params: " + f"{total - 8:,}" in text
    assert "Non-trainable params: 8" in text


def test_config_round_trip_rebuilds_the_same_model():
    model = small_cnn()
    config = model.get_config()
    assert config["layers"][0]["class_name"] == "InputLayer"
    assert [e["class_name"] for e in config["layers"][1:]] == [
        "Conv2D",
        "BatchNormalization",
        "MaxPooling2D",
        "Flatten",
        "Dense",
    ]
    clone = Sequential.from_config(config)
    clone.set_weights(model.get_weights())
    x = np.random.default_rng(3).standard_normal((2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(to_np(clone(x)), to_np(model(x)), rtol=1e-6, atol=1e-6)


def test_from_config_refuses_unknown_classes():
    config = {"name": "m", "layers": [{"class_name": "NoSuchLayer", "config": {}}]}
    with pytest.raises(ValueError, match="Unknown layer class 'NoSuchLayer'"):
        Sequential.from_config(config)
    # Lambda is known, but a function named in a config is only looked up among the program's objects.
    config = {"name": "m", "layers": [{"class_name": "Lambda", "config": {"function": "os.system"}}]}
    with pytest.raises(ValueError, match="Could not locate function 'os.system'.*No module named in a config"):
        Sequential.from_config(config)


def test_float64_model_keeps_float64():
    model = Sequential([Input((3,), dtype="float64"), Dense(2, dtype="float64")])
    x = np.array([[1.0 + 1e-12, 2.0, 3.0]])
    assert to_np(model(x)).dtype == np.float64


def test_dropout_is_only_active_in_training():
    model = Sequential([Input((100,)), Dropout(0.5, seed=1)])
    x = np.ones((4, 100), dtype="float32")
    np.testing.assert_array_equal(model.predict(x, verbose=0), x)
    y = to_np(model(x, training=True))
    assert set(np.unique(y)) <= {0.0, 2.0} and 0 < (y == 0).mean() < 1


def test_a_built_model_as_the_first_layer_builds_the_stack():
    # Keras 3.15.1: Sequential([inner, Dense(1)]) with a built inner model is built at once.
    import gpulayers

    inner = gpulayers.Sequential([gpulayers.layers.Input((3,)), gpulayers.layers.Dense(2)])
    outer = gpulayers.Sequential([inner, gpulayers.layers.Dense(1)])
    assert outer.built and outer.output_shape == (None, 1) and [layer.name for layer in outer.layers] == [inner.name, outer.layers[1].name]
    assert len(outer.get_weights()) == 4
    again = gpulayers.Sequential.from_config(outer.get_config())
    assert again.built
    again.set_weights(outer.get_weights())
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(np.asarray(again(x)), np.asarray(outer(x)))
    unbuilt = gpulayers.Sequential([gpulayers.layers.Dense(2)])
    assert not gpulayers.Sequential([unbuilt, gpulayers.layers.Dense(1)]).built


# ---------------------------------------------------------------- Keras 3.15's sequential_test cases


def test_structured_inputs_run_the_stack_eagerly():
    # A dict or a list of tensors is no graph input (as Keras): each layer builds at its first call.
    class Passes(Layer):
        def call(self, inputs):
            return inputs

    x = {"a": np.ones((3, 2), np.float32), "b": np.zeros((3, 2), np.float32)}
    out = Sequential([Passes()])(x)
    assert type(out) is dict and sorted(out) == ["a", "b"]
    np.testing.assert_array_equal(out["a"], x["a"])
    out = Sequential([Passes()])([x["a"], x["b"]])
    assert type(out) is list and len(out) == 2


def test_a_stack_of_an_input_alone_nests_and_passes_its_input_through():
    inner = Sequential()
    inner.add(Input(shape=(16,)))
    outer = Sequential([inner])
    x = np.arange(32, dtype=np.float32).reshape(2, 16)
    np.testing.assert_array_equal(outer(x), x)
    with pytest.raises(ValueError, match="no layers"):
        Sequential()(x)


def test_a_layer_that_cannot_be_traced_symbolically_runs_eagerly():
    class Dynamic(Layer):
        def call(self, inputs):
            return inputs + 1.0

        def compute_output_spec(self, *args, **kwargs):
            raise NotImplementedError

    model = Sequential([Dynamic()])
    x = np.random.default_rng(0).random((3, 2)).astype(np.float32)
    np.testing.assert_allclose(model(x), x + 1)


def test_a_layer_needing_two_positional_arguments_is_refused_at_build():
    class TwoInputs(Layer):
        def call(self, inputs, training):
            return inputs

    model = Sequential([TwoInputs(name="two")])
    with pytest.raises(ValueError, match=r"single positional argument.*'two'.*\['inputs', 'training'\]"):
        model.build((None, 2))
    assert not model.built
    with pytest.raises(AttributeError, match=r"Use `add\(\)` and `pop\(\)`"):
        model.layers = []
