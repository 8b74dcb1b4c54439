"""Custom losses, metrics and training steps, freezing, and the per-batch Keras 3 conventions."""

import numpy as np
import pytest

import gpulayers
from gpulayers import autodiff, losses, metrics, ops, optimizers
from gpulayers.layers import BatchNormalization, Dense, Input
from gpulayers.models import Sequential
from helpers import to_np


def regression_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3)).astype(np.float32)
    y = (x @ np.array([[1.5], [-2.0], [0.5]], np.float32) + 0.25).astype(np.float32)
    return x, y


def model(seed=0, dtype="float32"):
    gpulayers.set_random_seed(seed)
    return Sequential([Input((3,), dtype=dtype), Dense(8, activation="tanh", dtype=dtype), Dense(1, dtype=dtype)])


# ---------------------------------------------------------------- custom losses


def my_mse(y_true, y_pred):
    return ops.mean(ops.square(y_true - y_pred), axis=-1)


class HalfMSE(losses.Loss):
    def call(self, y_true, y_pred):
        return 0.5 * ops.mean(ops.square(y_true - y_pred), axis=-1)


def test_a_custom_loss_function_trains_like_the_builtin():
    x, y = regression_data()
    a, b = model(), model()
    b.set_weights(a.get_weights())
    a.compile(optimizer=optimizers.SGD(0.05), loss="mse")
    b.compile(optimizer=optimizers.SGD(0.05), loss=my_mse)
    ha = a.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0)
    hb = b.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0)
    np.testing.assert_allclose(hb.history["loss"], ha.history["loss"], rtol=1e-5)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)


def test_a_loss_subclass_with_call_trains():
    x, y = regression_data()
    a, b = model(1), model(1)
    b.set_weights(a.get_weights())
    a.compile(optimizer=optimizers.SGD(0.1), loss="mse")
    b.compile(optimizer=optimizers.SGD(0.2), loss=HalfMSE())  # half the loss at twice the rate: the same steps
    a.fit(x, y, epochs=2, batch_size=32, shuffle=False, verbose=0)
    b.fit(x, y, epochs=2, batch_size=32, shuffle=False, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)
    value = HalfMSE(reduction="sum")(np.ones((2, 1)), np.zeros((2, 1)))
    assert float(value) == pytest.approx(1.0)


# ---------------------------------------------------------------- custom metrics


class BinaryTruePositives(metrics.Metric):
    def __init__(self, name="binary_true_positives", **kwargs):
        super().__init__(name=name, **kwargs)
        self.true_positives = self.add_variable(shape=(), initializer="zeros", name="true_positives")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "bool")
        y_pred = ops.cast(y_pred > 0.5, "bool")
        values = ops.cast(ops.logical_and(ops.equal(y_true, True), ops.equal(y_pred, True)), self.dtype)
        if sample_weight is not None:
            values = ops.multiply(values, ops.broadcast_to(ops.cast(sample_weight, self.dtype), ops.shape(values)))
        self.true_positives.assign(self.true_positives + ops.sum(values))

    def result(self):
        return self.true_positives


def test_a_custom_metric_with_variables():
    m = BinaryTruePositives()
    m.update_state(np.array([1, 1, 0, 1]), np.array([0.9, 0.2, 0.8, 0.7]))
    assert float(m.result()) == 2.0
    assert [v.name for v in m.variables] == ["true_positives"]
    m.reset_state()
    assert float(m.result()) == 0.0
    x = np.random.default_rng(0).standard_normal((40, 3)).astype(np.float32)
    y = (x[:, :1] > 0).astype(np.float32)
    net = Sequential([Input((3,)), Dense(1, activation="sigmoid")])
    net.compile(optimizer="adam", loss="binary_crossentropy", metrics=[BinaryTruePositives()])
    history = net.fit(x, y, epochs=2, batch_size=10, verbose=0)
    counted = history.history["binary_true_positives"]
    assert all(float(c).is_integer() and 0 <= c <= 20 for c in counted)
    logs = net.evaluate(x, y, verbose=0, return_dict=True)
    assert set(logs) == {"loss", "binary_true_positives"}


# ---------------------------------------------------------------- train_on_batch, validation_steps


def test_train_and_test_on_batch_return_that_batchs_values():
    x, y = regression_data()
    net = model()
    net.compile(optimizer=optimizers.SGD(0.0), loss="mse", metrics=["mae"])
    first = net.train_on_batch(x[:32], y[:32])
    second = net.train_on_batch(x[32:], y[32:])
    alone = net.test_on_batch(x[32:], y[32:])
    np.testing.assert_allclose(second, alone, rtol=1e-6)  # not the mean over both batches
    assert first != pytest.approx(second)


def test_validation_steps_limits_the_validation_batches(monkeypatch):
    x, y = regression_data(64)
    net = model()
    net.compile(optimizer="sgd", loss="mse")
    seen = []
    original = type(net).test_step
    monkeypatch.setattr(type(net), "test_step", lambda self, data: seen.append(len(data[0])) or original(self, data))
    net.fit(x, y, epochs=1, batch_size=8, validation_data=(x, y), validation_steps=3, verbose=0)
    assert seen == [8, 8, 8]
    with pytest.raises(ValueError, match="validation_steps"):
        net.fit(x, y, validation_data=(x, y), validation_steps=0, verbose=0)


# ---------------------------------------------------------------- overriding train_step


class TapeModel(Sequential):
    """The "Customizing what happens in fit" pattern, with gpulayers.GradientTape."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_tracker = metrics.Mean(name="loss")
        self.mae_metric = metrics.MeanAbsoluteError(name="mae")
        self.loss_fn = losses.MeanSquaredError()

    def train_step(self, data):
        x, y = data
        with gpulayers.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.loss_fn(y, y_pred)
        gradients = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply(gradients, self.trainable_weights)
        self.loss_tracker.update_state(loss)
        self.mae_metric.update_state(y, y_pred)
        return {"loss": self.loss_tracker.result(), "mae": self.mae_metric.result()}

    @property
    def metrics(self):
        return [self.loss_tracker, self.mae_metric]


def test_an_overridden_train_step_trains_with_fit():
    x, y = regression_data()
    gpulayers.set_random_seed(0)
    net = TapeModel([Input((3,)), Dense(8, activation="tanh"), Dense(1)])
    net.compile(optimizer=optimizers.Adam(0.05))
    history = net.fit(x, y, epochs=20, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < 0.2 * history.history["loss"][0]
    assert set(history.history) == {"loss", "mae"}
    assert net.metrics_names == ["loss", "mae"]


# ---------------------------------------------------------------- freezing


def test_freezing_the_backbone_trains_only_the_head_and_freezes_batch_norm():
    gpulayers.set_random_seed(2)
    backbone = Sequential([Input((3,)), Dense(6), BatchNormalization()], name="backbone")
    head = Dense(1, name="head")
    net = Sequential([backbone, head])
    x, y = regression_data()
    net.compile(optimizer="sgd", loss="mse")
    net.fit(x, y, epochs=1, batch_size=16, verbose=0)  # BN statistics move while trainable
    backbone.trainable = False
    assert not backbone.layers[1].trainable and all(not v.trainable for v in backbone.weights)
    assert [v.path for v in net.trainable_weights] == ["head/kernel", "head/bias"]
    frozen = backbone.get_weights()
    head_before = head.get_weights()
    net.compile(optimizer="sgd", loss="mse")
    net.fit(x, y, epochs=2, batch_size=16, verbose=0)
    for before, after in zip(frozen, backbone.get_weights()):
        np.testing.assert_array_equal(before, after)  # moving statistics too: BN ran in inference mode
    assert any(not np.array_equal(a, b) for a, b in zip(head_before, head.get_weights()))
    net.trainable = False
    assert net.trainable_weights == [] and not head.trainable
    net.trainable = True
    assert len(net.trainable_weights) == 6


def test_a_frozen_batch_norm_uses_its_moving_statistics_in_training_mode():
    bn = BatchNormalization()
    x = np.random.default_rng(0).standard_normal((16, 3)).astype(np.float32) * 3 + 5
    bn(x, training=True)
    bn.trainable = False
    stats = [w.copy() for w in bn.get_weights()]
    y = to_np(bn(x, training=True))
    gamma, beta, mean, var = stats
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-3) * gamma + beta, rtol=1e-5, atol=1e-5)
    for a, b in zip(stats, bn.get_weights()):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- the activity-regularizer defect


def test_activity_regularizer_on_a_softmax_output_gets_the_true_gradient():
    """The old engine added the activity term's gradient wrt the softmax output to the fused loss gradient
    wrt the logits, skipping the softmax's Jacobian (off by about 0.19 where the true gradient is 0.33)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 4))
    labels = rng.integers(0, 3, 6)
    layer = Dense(3, activation="softmax", activity_regularizer="l2", dtype="float64")
    layer(x)
    weights = layer.trainable_weights

    def total():
        with autodiff.no_backward():
            probs = layer(x)
            return float(losses.SparseCategoricalCrossentropy()(labels, probs)) + float(sum(layer.losses))

    with autodiff.GradientTape() as tape:
        probs = layer(x)
        loss = losses.SparseCategoricalCrossentropy()(labels, probs) + sum(layer.losses)
    grads = [to_np(g) for g in tape.gradient(loss, weights)]
    from helpers import numeric_grad

    for v, g in zip(weights, grads):
        host = to_np(v).copy()

        def with_weight():
            v.assign(host)
            return total()

        np.testing.assert_allclose(g, numeric_grad(with_weight, host), rtol=1e-6, atol=1e-8)
