"""Same model, same weights, same batches: gpulayers and Keras 3 follow the same trajectory.

Runs only where Keras 3 imports (with any backend; torch is tried when
KERAS_BACKEND is unset). Keras's numpy backend cannot train, so a trainable
backend is needed for the training checks.
"""

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
try:
    import keras
except Exception as exc:  # not installed, or its backend is missing
    pytest.skip(f"Keras 3 is not importable here ({type(exc).__name__}: {exc})", allow_module_level=True)

from gpulayers import layers as gl, optimizers as gopt
from gpulayers.models import Sequential

pytestmark = pytest.mark.skipif(keras.backend.backend() == "numpy", reason="Keras's numpy backend cannot train")


def build(ns, data_format="channels_last"):
    """The same CNN from either library (`ns` is keras.layers or gpulayers.layers)."""
    shape = (8, 8, 3) if data_format == "channels_last" else (3, 8, 8)
    axis = -1 if data_format == "channels_last" else 1
    layers = [
        ns.Input(shape=shape),
        ns.Conv2D(4, 3, padding="same", activation="relu", data_format=data_format),
        ns.BatchNormalization(axis=axis),
        ns.MaxPooling2D(data_format=data_format),
        ns.Conv2D(6, (2, 3), padding="same", data_format=data_format, kernel_regularizer="l2"),
        # Symmetric 'same' padding here: for asymmetric padding Keras's torch
        # backend pads by replicating edge values, so its average differs from
        # Keras's numpy/TF/JAX backends (and ours), which count real cells only.
        ns.AveragePooling2D(3, strides=1, padding="same", data_format=data_format),
        ns.Flatten(data_format=data_format),
        ns.Dense(8, activation="tanh"),
        ns.Dropout(0.0),
        ns.Dense(3, activation="softmax"),
    ]
    return keras.Sequential(layers) if ns is keras.layers else Sequential(layers)


def data(data_format="channels_last", n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8, 8, 3)).astype("float32")
    if data_format == "channels_first":
        x = x.transpose(0, 3, 1, 2).copy()
    return x, rng.integers(0, 3, n)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_predictions_match_keras(data_format):
    x, _ = data(data_format)
    ours, theirs = build(gl, data_format), build(keras.layers, data_format)
    ours.set_weights(theirs.get_weights())
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


OPTIMIZERS = [
    ("SGD", dict(learning_rate=0.05, momentum=0.9, nesterov=True)),
    ("Adam", dict(learning_rate=0.01, amsgrad=True)),
    ("AdamW", dict(learning_rate=0.01, weight_decay=0.05)),
    ("RMSprop", dict(learning_rate=0.01, momentum=0.5, centered=True)),
    ("Adagrad", dict(learning_rate=0.05)),
    ("SGD", dict(learning_rate=0.1, clipnorm=0.5)),
    ("Adam", dict(learning_rate=0.01, global_clipnorm=0.3)),
]


@pytest.mark.parametrize("name, kwargs", OPTIMIZERS, ids=[f"{n}-{'-'.join(k)}" for n, k in OPTIMIZERS])
def test_training_trajectory_matches_keras(name, kwargs):
    x, y = data()
    ours, theirs = build(gl), build(keras.layers)
    ours.set_weights(theirs.get_weights())
    ours.compile(optimizer=getattr(gopt, name)(**kwargs), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    theirs.compile(optimizer=getattr(keras.optimizers, name)(**kwargs), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    h_ours = ours.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0).history
    h_theirs = theirs.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0).history
    np.testing.assert_allclose(h_ours["loss"], h_theirs["loss"], rtol=2e-4)
    np.testing.assert_allclose(h_ours["accuracy"], h_theirs["accuracy"], rtol=1e-6)
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(ours.evaluate(x, y, verbose=0), theirs.evaluate(x, y, verbose=0), rtol=2e-4)


# ---------------------------------------------------------------- custom layers and losses, written once


def custom_pieces(base, ops):
    """A custom layer and a custom loss, the same source for Keras (``keras.layers.Layer``, ``keras.ops``)
    and for gpulayers: gradients come from each library's own autodiff."""

    class Gated(base):
        def __init__(self, units, **kwargs):
            super().__init__(**kwargs)
            self.units = units

        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1], self.units), initializer="glorot_uniform", name="w")
            self.g = self.add_weight(shape=(self.units,), initializer="zeros", name="g")

        def call(self, inputs):
            h = ops.matmul(inputs, self.w)
            gate = ops.sigmoid(self.g)
            self.add_loss(1e-3 * ops.sum(ops.square(h)))
            return h * gate + ops.tanh(h) * (1.0 - gate)

    def loss(y_true, y_pred):
        return ops.mean(ops.square(y_true - y_pred) + 0.1 * ops.abs(y_pred), axis=-1)

    return Gated, loss


def test_a_custom_layer_and_loss_train_alike():
    import gpulayers

    rng = np.random.default_rng(5)
    x = rng.standard_normal((24, 5)).astype("float32")
    y = rng.standard_normal((24, 2)).astype("float32")
    models = []
    for lib, ns, ops in ((keras, keras.layers, keras.ops), (gpulayers, gl, gpulayers.ops)):
        Gated, loss = custom_pieces(ns.Layer, ops)
        layers = [ns.Input(shape=(5,)), Gated(4), ns.Dense(2, activity_regularizer="l2")]
        model = keras.Sequential(layers) if lib is keras else Sequential(layers)
        optimizer = (keras.optimizers if lib is keras else gopt).Adam(0.02)
        model.compile(optimizer=optimizer, loss=loss)
        models.append(model)
    theirs, ours = models
    ours.set_weights(theirs.get_weights())
    h_theirs = theirs.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0).history
    h_ours = ours.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0).history
    np.testing.assert_allclose(h_ours["loss"], h_theirs["loss"], rtol=2e-4)
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4)
