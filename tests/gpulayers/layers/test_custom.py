"""Custom layers written the Keras 3 way (the "Making new layers and models via subclassing" guide),
with only the imports changed: weights in __init__ or build, nested layers, non-trainable state,
add_loss, the training argument, configs, and their gradients through the tape."""

import numpy as np
import pytest

import gpulayers
from gpulayers import activations, autodiff, ops, optimizers, regularizers
from gpulayers import layers
from gpulayers.layers import Dense, Input, Layer
from gpulayers.models import Sequential
from helpers import check_layer_gradients, to_np

# ---------------------------------------------------------------- the guide's layers, imports changed


class LinearInInit(layers.Layer):
    def __init__(self, units=32, input_dim=32):
        super().__init__()
        self.w = self.add_weight(shape=(input_dim, units), initializer="random_normal", trainable=True)
        self.b = self.add_weight(shape=(units,), initializer="zeros", trainable=True)

    def call(self, inputs):
        return ops.matmul(inputs, self.w) + self.b


class ComputeSum(layers.Layer):
    def __init__(self, input_dim):
        super().__init__()
        self.total = self.add_weight(initializer="zeros", shape=(input_dim,), trainable=False)

    def call(self, inputs):
        self.total.assign_add(ops.sum(inputs, axis=0))
        return self.total


class Linear(layers.Layer):
    def __init__(self, units=32, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units), initializer="random_normal", trainable=True)
        self.b = self.add_weight(shape=(self.units,), initializer="random_normal", trainable=True)

    def call(self, inputs):
        return ops.matmul(inputs, self.w) + self.b

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units})
        return config


class MLPBlock(layers.Layer):
    def __init__(self):
        super().__init__()
        self.linear_1 = Linear(32)
        self.linear_2 = Linear(32)
        self.linear_3 = Linear(1)

    def call(self, inputs):
        x = self.linear_1(inputs)
        x = activations.relu(x)
        x = self.linear_2(x)
        x = activations.relu(x)
        return self.linear_3(x)


class ActivityRegularizationLayer(layers.Layer):
    def __init__(self, rate=1e-2):
        super().__init__()
        self.rate = rate

    def call(self, inputs):
        self.add_loss(self.rate * ops.mean(inputs))
        return inputs


class OuterLayer(layers.Layer):
    def __init__(self):
        super().__init__()
        self.activity_reg = ActivityRegularizationLayer(1e-2)

    def call(self, inputs):
        return self.activity_reg(inputs)


class OuterLayerWithKernelRegularizer(layers.Layer):
    def __init__(self):
        super().__init__()
        self.dense = layers.Dense(32, kernel_regularizer=regularizers.l2(1e-3))

    def call(self, inputs):
        return self.dense(inputs)


class CustomDropout(layers.Layer):
    def __init__(self, rate, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate
        self.seed_generator = gpulayers.random.SeedGenerator(1337)

    def call(self, inputs, training=None):
        if training:
            return gpulayers.random.dropout(inputs, rate=self.rate, seed=self.seed_generator)
        return inputs


# ---------------------------------------------------------------- the guide's assertions


def test_weights_created_in_init_are_tracked_and_used():
    x = ops.ones((2, 2))
    linear_layer = LinearInInit(4, 2)
    y = linear_layer(x)
    assert y.shape == (2, 4)
    assert linear_layer.weights == [linear_layer.w, linear_layer.b]
    np.testing.assert_allclose(to_np(y), to_np(linear_layer.w).sum(axis=0, keepdims=True).repeat(2, 0), rtol=1e-6)


def test_non_trainable_state_accumulates_and_gets_no_gradient():
    x = ops.ones((2, 2))
    my_sum = ComputeSum(2)
    np.testing.assert_array_equal(my_sum(x).numpy(), [2.0, 2.0])
    np.testing.assert_array_equal(my_sum(x).numpy(), [4.0, 4.0])
    assert len(my_sum.weights) == 1 and len(my_sum.non_trainable_weights) == 1
    assert my_sum.trainable_weights == []


def test_deferred_build_and_nesting():
    linear_layer = Linear(32)
    assert not linear_layer.built
    y = linear_layer(ops.ones((2, 2)))
    assert y.shape == (2, 32) and linear_layer.built
    mlp = MLPBlock()
    y = mlp(ops.ones(shape=(3, 64)))
    assert y.shape == (3, 1)
    assert len(mlp.weights) == 6 and len(mlp.trainable_weights) == 6
    assert mlp.weights[0] is mlp.linear_1.w


def test_losses_are_reset_at_each_top_level_call():
    layer = OuterLayer()
    assert len(layer.losses) == 0
    _ = layer(ops.zeros((1, 1)))
    assert len(layer.losses) == 1
    _ = layer(ops.zeros((1, 1)))
    assert len(layer.losses) == 1
    inner = OuterLayerWithKernelRegularizer()
    _ = inner(ops.zeros((1, 1)))
    (penalty,) = inner.losses
    np.testing.assert_allclose(float(penalty), 1e-3 * (to_np(inner.dense.kernel) ** 2).sum(), rtol=1e-6)


def test_config_round_trip():
    layer = Linear(64, name="lin")
    config = layer.get_config()
    assert config["units"] == 64 and config["name"] == "lin"
    new_layer = Linear.from_config(config)
    assert new_layer.units == 64 and new_layer.name == "lin"


def test_the_training_argument_reaches_the_call():
    layer = CustomDropout(0.5)
    x = np.ones((4, 100), np.float32)
    np.testing.assert_array_equal(to_np(layer(x)), x)  # training=None: inference
    y = to_np(layer(x, training=True))
    assert set(np.unique(y)) <= {0.0, 2.0} and 0 < (y == 0).mean() < 1
    model = Sequential([Input((100,)), CustomDropout(0.5)])
    assert (to_np(model(x, training=True)) == 0).any()  # the model's training reaches the inner layer
    np.testing.assert_array_equal(to_np(model(x)), x)


# ---------------------------------------------------------------- gradients through custom layers


def test_gradients_of_custom_layers_match_finite_differences():
    class Block64(layers.Layer):  # MLPBlock in float64, for finite differences
        def __init__(self):
            super().__init__(dtype="float64")
            self.linear_1 = Linear(4, dtype="float64")
            self.linear_2 = Linear(2, dtype="float64")

        def call(self, inputs):
            return self.linear_2(activations.tanh(self.linear_1(inputs)))

    rng = np.random.default_rng(0)
    block = Block64()
    block(rng.standard_normal((3, 5)))
    check_layer_gradients(block, rng.standard_normal((3, 5)))
    check_layer_gradients(ActivityRegularizationLayer(0.3), rng.standard_normal((4, 3)).astype(np.float32),
                          rtol=1e-3, atol=1e-4, eps=1e-3)


def test_a_shared_layer_gets_the_sum_of_its_calls_gradients():
    class Siamese(Layer):
        def __init__(self):
            super().__init__()
            self.tower = Dense(3, activation="tanh", dtype="float64")

        def call(self, inputs):
            a, b = inputs
            return ops.sum(ops.square(self.tower(a) - self.tower(b)), axis=-1)

    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    model = Siamese()
    out = model([a, b])
    assert out.shape == (4,)
    kernel = model.tower.kernel
    host = to_np(kernel).copy()

    def value():
        with autodiff.no_backward():
            return float(to_np(ops.sum(model([a, b]))))

    with autodiff.GradientTape() as tape:
        total = ops.sum(model([a, b]))
    (grad,) = tape.gradient(total, [kernel])
    from helpers import numeric_grad

    def with_kernel():
        kernel.assign(host_copy)
        return value()

    host_copy = host.copy()
    num = numeric_grad(with_kernel, host_copy)
    kernel.assign(host)
    np.testing.assert_allclose(to_np(grad), num, rtol=1e-6, atol=1e-8)


def test_a_layer_refuses_a_list_it_cannot_take():
    # The old engine stacked the list into one array.
    with pytest.raises(ValueError, match=r"expects 1 input\(s\), but it received 2"):
        Dense(2)([np.ones((1, 3)), np.ones((1, 3))])


def test_compute_output_shape_is_traced_when_absent():
    class Halve(Layer):
        def call(self, inputs):
            return inputs[:, : inputs.shape[1] // 2] * 2.0

    layer = Halve()
    assert layer.compute_output_shape((None, 8)) == (None, 4)
    model = Sequential([Input((8,)), Halve(), Linear(3)])
    assert model.output_shape == (None, 3)
    state = ComputeSum(2)
    assert state.compute_output_shape((None, 2)) == (2,)
    np.testing.assert_array_equal(state.total.numpy(), [0.0, 0.0])  # tracing changed no state


def test_add_weight_follows_keras():
    class Weights(Layer):
        def build(self, input_shape):
            self.a = self.add_weight(shape=(2,), name="a")
            self.b = self.add_weight((3,), "ones")  # Keras's positional form (shape, initializer)
            self.c = self.add_weight(shape=(), initializer="zeros", dtype="float64", trainable=False)

    layer = Weights(name="w")
    layer(np.ones((1, 1)))
    assert [v.path for v in layer.weights[:1]] == ["w/a"]
    assert layer.c.dtype == "float64" and layer.c.shape == () and not layer.c.trainable
    np.testing.assert_array_equal(layer.b.numpy(), [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="keyword"):
        Layer().add_weight("kernel", (2,))

    class Forgot(Layer):
        def __init__(self):
            self.w = 1  # no super().__init__()

    with pytest.raises(RuntimeError, match=r"super\(\).__init__\(\)"):
        Forgot()(np.ones(2))


def test_trainable_false_reaches_every_layer_inside():
    block = MLPBlock()
    block(np.ones((2, 4)))
    block.trainable = False
    assert block.trainable_weights == [] and all(not v.trainable for v in block.weights)
    assert not block.linear_2.trainable
    block.trainable = True
    assert len(block.trainable_weights) == 6


# ---------------------------------------------------------------- training custom layers with fit


def test_fit_trains_custom_layers_and_add_loss():
    gpulayers.set_random_seed(3)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0], np.float32))[:, None]
    model = Sequential([Input((4,)), Linear(8), ActivityRegularizationLayer(1e-3), Linear(1)])
    model.compile(optimizer=optimizers.Adam(0.05), loss="mse")
    first = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=30, batch_size=16, verbose=0)
    assert model.evaluate(x, y, verbose=0) < 0.1 * first
    # Only the model's own losses: compile without a loss, as in the guide.
    reg = Sequential([Input((3,)), ActivityRegularizationLayer()])
    reg.compile(optimizer="adam")
    history = reg.fit(np.random.random((2, 3)), np.random.random((2, 3)), verbose=0)
    assert np.isfinite(history.history["loss"][0])
    plain = Sequential([Input((3,)), Dense(1)])
    plain.compile(optimizer="adam")
    with pytest.raises(ValueError, match="No loss to compute"):
        plain.fit(np.ones((2, 3)), np.ones((2, 1)), verbose=0)


class Bilinear(gpulayers.layers.Layer):
    """A user's layer whose build takes a shape per call argument (Keras matches x_shape to x, y_shape to y)."""

    def build(self, x_shape, y_shape):
        self.w = self.add_weight(shape=(x_shape[-1], y_shape[-1]), name="w")

    def call(self, x, y):
        return gpulayers.ops.sum(gpulayers.ops.matmul(x, self.w) * y, axis=-1, keepdims=True)


def test_a_build_with_one_shape_per_call_argument():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    layer = Bilinear(dtype="float64")
    out = to_np(layer(x, y))
    assert layer.w.shape == (3, 2)
    np.testing.assert_allclose(out, ((x @ to_np(layer.w.data)) * y).sum(axis=-1, keepdims=True), rtol=1e-12)
    a, b = gpulayers.Input((3,)), gpulayers.Input((2,))
    symbolic = Bilinear()(a, b)
    assert symbolic.shape == (None, 1)
    model = gpulayers.Model([a, b], symbolic)
    assert model.predict([x, y], verbose=0).shape == (4, 1)
