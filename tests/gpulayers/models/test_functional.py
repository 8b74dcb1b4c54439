"""The functional model: symbolic calls, the graph, calling and training it, nesting, subclassing."""

import numpy as np
import pytest

import gpulayers
from backends import get_ops
from gpulayers import autodiff, layers, ops
from gpulayers.models import Functional, Model, Sequential
from gpulayers.symbolic import KerasTensor
from helpers import numeric_grad, to_np


def rng(seed=0):
    return np.random.default_rng(seed)


def test_input_gives_a_keras_tensor_with_history():
    x = gpulayers.Input((4, 3), name="pixels", dtype="float64")
    assert isinstance(x, KerasTensor) and x.shape == (None, 4, 3) and x.dtype == "float64" and x.name == "pixels"
    layer, node_index, tensor_index = x._keras_history
    assert isinstance(layer, layers.InputLayer) and (node_index, tensor_index) == (0, 0)
    assert layer.output is x
    with pytest.raises(TypeError, match="no value"):
        bool(x)
    with pytest.raises(TypeError, match="no values"):
        np.asarray(x)


def test_a_symbolic_call_builds_the_layer_and_records_a_node_without_computing():
    x = gpulayers.Input((5,))
    dense = layers.Dense(3)
    y = dense(x)
    assert isinstance(y, KerasTensor) and y.shape == (None, 3) and y.dtype == "float32"
    assert dense.built and dense.kernel.shape == (5, 3)
    assert dense.input is x and dense.output is y and y._keras_history == (dense, 0, 0)
    z = dense(x)  # a second call: a second node, the same weights
    assert len(dense._inbound_nodes) == 2 and z._keras_history[1] == 1
    assert dense.output is y  # Keras 3: the first node's


def test_a_refused_symbolic_call_leaves_the_layer_unbuilt():
    dense = layers.Dense(3)
    with pytest.raises(ValueError):
        dense(gpulayers.Input(()))  # rank 1: Dense needs a feature axis
    assert not dense.built and not dense.weights and not dense.__dict__.get("_inbound_nodes")


def test_mixing_keras_tensors_and_arrays_is_refused():
    class Pair(layers.Layer):
        def call(self, inputs):
            return inputs[0] + inputs[1]

    with pytest.raises(ValueError, match="mix of symbolic"):
        Pair()([gpulayers.Input((2,)), np.ones((1, 2))])


def test_a_users_layer_without_compute_output_shape_is_traced():
    class Halve(layers.Layer):
        def call(self, x):
            return ops.mean(ops.reshape(x, (-1, x.shape[1] // 2, 2)), axis=-1)

    y = Halve()(gpulayers.Input((6,)))
    assert y.shape == (None, 3)


def two_branch_model():
    inputs = gpulayers.Input((3,), name="x")
    shared = layers.Dense(3, activation="tanh", name="shared")
    a = shared(inputs)
    b = layers.Dense(3, name="side")(inputs)
    s = layers.Dense(3, name="mix")(a)
    outputs = layers.Dense(2, name="head")(shared(s))
    return Model(inputs, [outputs, b], name="two"), shared


def test_model_structure_inputs_outputs_layers_in_keras_order():
    model, shared = two_branch_model()
    assert isinstance(model, Functional) and model.name == "two"
    assert [l.name for l in model.layers] == ["x", "shared", "mix", "head", "side"]  # Keras 3.15's order
    assert model.output_names == ["head", "side"]
    assert len(model.inputs) == 1 and len(model.outputs) == 2
    assert model.get_layer("mix").name == "mix" and model.get_layer(index=1) is shared
    with pytest.raises(ValueError, match="No such layer"):
        model.get_layer("nope")
    assert model.output_shape == [(None, 2), (None, 3)] and model.input_shape == (None, 3)


def test_calling_the_model_replays_the_graph():
    model, _ = two_branch_model()
    x = rng().standard_normal((5, 3)).astype("float32")
    out, side = model(x)
    w = {l.name: [to_np(v.data) for v in l.weights] for l in model.layers}
    a = np.tanh(x @ w["shared"][0] + w["shared"][1])
    s = a @ w["mix"][0] + w["mix"][1]
    want = np.tanh(s @ w["shared"][0] + w["shared"][1]) @ w["head"][0] + w["head"][1]
    np.testing.assert_allclose(to_np(out.data), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_np(side.data), x @ w["side"][0] + w["side"][1], rtol=1e-5, atol=1e-6)
    predicted = model.predict(x, verbose=0)
    assert isinstance(predicted, list) and predicted[0].shape == (5, 2) and predicted[1].shape == (5, 3)


def test_a_shared_layers_gradient_is_the_sum_over_its_calls():
    gpulayers.utils.set_random_seed(3)
    inputs = gpulayers.Input((3,), dtype="float64")
    shared = layers.Dense(3, activation="tanh", dtype="float64")
    y = layers.Dense(1, dtype="float64")(shared(shared(inputs)))
    model = Model(inputs, y)
    x = rng(1).standard_normal((4, 3))

    def loss():
        return float(to_np(model(x).data).sum())

    with autodiff.GradientTape() as tape:
        total = ops.sum(model(x))
    grads = tape.gradient(total, model.trainable_weights)
    for v, g in zip(model.trainable_weights, grads):
        host = to_np(v.data).copy()

        def f(host=host, v=v):
            v.data = get_ops().asarray(host)
            return loss()

        want = numeric_grad(f, host)
        v.data = get_ops().asarray(host)
        np.testing.assert_allclose(to_np(g), want, rtol=1e-6, atol=1e-8)


def test_an_output_not_connected_to_the_inputs_is_refused():
    a, b = gpulayers.Input((4,), name="a"), gpulayers.Input((4,), name="b")
    out = layers.Dense(2)(b)
    with pytest.raises(ValueError, match="not connected to `inputs`"):
        Model(a, out)
    with pytest.raises(ValueError, match="not connected"):
        Model(gpulayers.Input((4,)), out)


def test_names_used_twice_and_non_tensors_are_refused():
    x = gpulayers.Input((4,))
    y = layers.Dense(2, name="same")(layers.Dense(4, name="same")(x))
    with pytest.raises(ValueError, match='The name "same" is used 2 times'):
        Model(x, y)
    with pytest.raises(ValueError, match="must be KerasTensors"):
        Model(x, np.ones((2, 2)))
    with pytest.raises(ValueError, match="cannot be empty"):
        Model([], y)


def test_an_unused_input_still_belongs_to_the_model():
    a, b = gpulayers.Input((4,), name="a"), gpulayers.Input((2,), name="b")
    model = Model([a, b], layers.Dense(1)(a))
    assert [l.name for l in model.layers][:2] == ["a", "b"]
    assert model([np.ones((2, 4)), np.ones((2, 2))]).shape == (2, 1)


def test_dict_inputs_and_outputs():
    a, b = gpulayers.Input((3,), name="a"), gpulayers.Input((2,), name="b")
    za, zb = layers.Dense(2)(a), layers.Dense(2)(b)
    model = Model({"a": a, "b": b}, {"sa": za, "sb": zb})
    out = model({"b": np.ones((5, 2)), "a": np.ones((5, 3))})
    assert sorted(out) == ["sa", "sb"] and out["sa"].shape == (5, 2)
    with pytest.raises(ValueError, match="Missing data"):
        model({"a": np.ones((5, 3))})


def test_inputs_are_cast_to_the_inputs_dtype_and_their_shape_checked():
    x = gpulayers.Input((3,), dtype="float32")
    model = Model(x, layers.Dense(2)(x))
    assert model(np.ones((2, 3), dtype="int64")).dtype == "float32"
    assert model(np.ones((2, 3, 1))).shape == (2, 2)  # Keras drops a trailing axis of 1
    with pytest.raises(ValueError, match="incompatible"):
        model(np.ones((2, 4)))


def test_a_model_is_a_layer_nested_in_another_model():
    x = gpulayers.Input((4,), name="x")
    inner = Model(x, layers.Dense(3, name="d")(x), name="inner")
    y = gpulayers.Input((4,), name="y")
    h = inner(y)
    assert h.shape == (None, 3) and h._keras_history[0] is inner
    outer = Model(y, layers.Dense(1, name="o")(h))
    assert [l.name for l in outer.layers] == ["y", "inner", "o"]
    assert len(outer.weights) == 4
    data = rng().standard_normal((6, 4)).astype("float32")
    np.testing.assert_allclose(
        to_np(outer(data).data), to_np(outer.get_layer("o")(inner(data)).data), rtol=1e-6
    )


def test_a_functional_model_trains_with_fit():
    gpulayers.utils.set_random_seed(0)
    x = gpulayers.Input((4,))
    h = layers.Dense(8, activation="relu")(x)
    model = Model(x, layers.Dense(1)(h))
    model.compile(optimizer=gpulayers.optimizers.Adam(0.01), loss="mse")
    data = rng().standard_normal((64, 4)).astype("float32")
    target = data.sum(axis=1, keepdims=True)
    history = model.fit(data, target, epochs=20, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]


def test_sequential_is_a_graph_too():
    model = Sequential([gpulayers.Input((4,)), layers.Dense(3, name="a"), layers.Dense(2, name="b")])
    assert len(model.inputs) == 1 and model.outputs[0].shape == (None, 2)
    assert model.layers[0].output.shape == (None, 3)
    features = Model(model.inputs, [l.output for l in model.layers])
    outs = features(np.ones((2, 4)))
    assert [o.shape for o in outs] == [(2, 3), (2, 2)]
    np.testing.assert_allclose(to_np(outs[1].data), to_np(model(np.ones((2, 4))).data), rtol=1e-6)
    deferred = Sequential([layers.Dense(3)])
    with pytest.raises(AttributeError):
        deferred.inputs
    deferred.build((None, 5))
    assert deferred.inputs[0].shape == (None, 5)


class TwoLayers(Model):
    def __init__(self, units=3, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [layers.Dense(units, activation="relu"), layers.Dense(1)]

    def call(self, inputs, training=None):
        x = inputs
        for block in self.blocks:
            x = block(x)
        return x


def test_a_subclassed_model_tracks_its_layers_builds_and_trains():
    gpulayers.utils.set_random_seed(1)
    model = TwoLayers(units=4)
    assert model.name.startswith("two_layers") and len(model.layers) == 2 and not model.built
    model.build((None, 3))
    assert model.built and [tuple(w.shape) for w in model.weights] == [(3, 4), (4,), (4, 1), (1,)]
    lines = []
    model.summary(print_fn=lines.append)
    assert "Total params: 21" in "\n".join(lines)
    model.compile("sgd", "mse")
    data = rng().standard_normal((32, 3)).astype("float32")
    history = model.fit(data, data[:, :1], epochs=3, verbose=0)
    assert len(history.history["loss"]) == 3
    y = model(gpulayers.Input((3,)))
    assert y.shape == (None, 1) and model.output is y


class CustomStep(Model):
    """The simple form of Keras's "Customizing what happens in fit" guide."""

    def train_step(self, data):
        x, y = data
        with gpulayers.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(y=y, y_pred=y_pred)
        grads = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply(grads, self.trainable_weights)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            else:
                metric.update_state(y, y_pred)
        return {m.name: m.result() for m in self.metrics}


def test_a_functional_subclass_overrides_train_step():
    gpulayers.utils.set_random_seed(2)
    x = gpulayers.Input((3,))
    model = CustomStep(x, layers.Dense(1)(x))
    assert isinstance(model, CustomStep) and isinstance(model, Functional)
    assert type(model).__name__ == "CustomStep"
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    data = rng().standard_normal((32, 3)).astype("float32")
    history = model.fit(data, data[:, :1], epochs=4, verbose=0)
    assert sorted(history.history) == ["loss", "mae"]
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_functional_arguments_inside_a_subclass_init():
    class Built(Model):
        def __init__(self):
            x = gpulayers.Input((2,))
            super().__init__(x, layers.Dense(1)(x), name="built")

    model = Built()
    assert isinstance(model, Functional) and isinstance(model, Built) and model.name == "built"
    assert model(np.ones((3, 2))).shape == (3, 1)


def test_summary_of_a_graph_has_the_connected_to_column():
    model, _ = two_branch_model()
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "Connected to" in text and "x[0][0]" in text and "mix[0][0]" in text
    assert "shared (Dense)" in text


def test_operators_on_keras_tensors_build_ops_of_the_graph():
    x = gpulayers.Input((3,))
    h = layers.Dense(3)(x)
    out = -(abs(h * 2.0 - 1.0) / 4.0) + h ** 2 + h[:, :1]
    model = Model(x, out)
    assert len(model.layers) == 2  # ops are graph nodes, not layers (Keras's model.layers)
    data = np.random.default_rng(0).standard_normal((4, 3)).astype("float32")
    k, b = model.layers[1].get_weights()
    hh = data @ k + b
    want = -(np.abs(hh * 2 - 1) / 4) + hh ** 2 + hh[:, :1]
    np.testing.assert_allclose(model.predict(data, verbose=0), want, rtol=1e-5, atol=1e-6)
    residual = h
    h += residual  # Keras's `x += residual`
    assert isinstance(h, KerasTensor) and h is not residual


def test_dict_outputs_flatten_in_keras_order():
    x = gpulayers.Input((2,))
    model = Model(x, {"zeta": layers.Dense(1, name="z")(x), "alpha": layers.Dense(2, name="a")(x)})
    assert model.output_names == ["a", "z"]  # sorted by key, as keras.tree flattens a dict
    assert [t.shape for t in model.outputs] == [(None, 2), (None, 1)]


def test_a_sequential_built_by_fit_takes_other_sizes_and_a_list_builds_one_graph():
    model = Sequential([layers.Conv2D(2, 3), layers.GlobalAveragePooling2D(), layers.Dense(1)])
    model.compile("sgd", "mse")
    model.fit(np.random.default_rng(0).random((4, 8, 8, 1)).astype("float32"), np.ones((4, 1)), verbose=0)
    assert model.predict(np.zeros((2, 12, 12, 1), "float32"), verbose=0).shape == (2, 1)  # fully convolutional
    with pytest.raises(ValueError, match="incompatible"):
        model.predict(np.zeros((2, 12, 12), "float32"), verbose=0)  # the rank is still checked
    stack = Sequential([gpulayers.Input((4,)), layers.Dense(3), layers.Dense(2), layers.Dense(1)])
    assert [len(l._inbound_nodes) for l in stack.layers] == [1, 1, 1]
