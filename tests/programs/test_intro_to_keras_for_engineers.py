"""keras-io ``guides/intro_to_keras_for_engineers.py`` with ``import gpulayers as keras``: what it exercises.

A Sequential convnet ending in GlobalAveragePooling2D, Dropout and a softmax
Dense, compiled with SparseCategoricalAccuracy(name="acc"); ``fit`` with
``validation_split`` and the ModelCheckpoint and EarlyStopping callbacks;
``model.save`` and ``keras.saving.load_model``; custom layers written on
``keras.ops``, ``keras.initializers``, ``keras.activations.get`` and
``keras.random`` (a SeedGenerator and ``random.dropout``); a subclassed
``keras.Model`` holding a Sequential; training from a torch DataLoader.
"""

import os

import numpy as np
import pytest

import gpulayers as keras
from programs.program_support import digits


def convnet():
    return keras.Sequential([
        keras.layers.Input(shape=(28, 28, 1)),
        keras.layers.Conv2D(8, kernel_size=(3, 3), activation="relu"),
        keras.layers.Conv2D(8, kernel_size=(3, 3), activation="relu"),
        keras.layers.MaxPooling2D(pool_size=(2, 2)),
        keras.layers.Conv2D(16, kernel_size=(3, 3), activation="relu"),
        keras.layers.Conv2D(16, kernel_size=(3, 3), activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(10, activation="softmax"),
    ])


def data(n, seed):
    x, y = digits(n, seed)
    return np.expand_dims(x.astype("float32") / 255, -1), y


def compile_(model):
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(), optimizer=keras.optimizers.Adam(learning_rate=3e-3),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="acc")])


def test_fit_with_checkpoints_and_early_stopping_then_save_and_load(tmp_path):
    keras.utils.set_random_seed(0)
    x, y = data(400, 0)
    model = convnet()
    assert model.output_shape == (None, 10)
    compile_(model)
    callbacks = [
        keras.callbacks.ModelCheckpoint(filepath=str(tmp_path / "model_at_epoch_{epoch}.keras")),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=2),
    ]
    history = model.fit(x, y, batch_size=64, epochs=3, validation_split=0.15, callbacks=callbacks, verbose=0).history
    assert sorted(history) == ["acc", "loss", "val_acc", "val_loss"]
    assert history["loss"][-1] < history["loss"][0]
    assert sorted(os.listdir(tmp_path)) == [f"model_at_epoch_{e}.keras" for e in range(1, len(history["loss"]) + 1)]
    score = model.evaluate(x[:64], y[:64], verbose=0)
    model.save(str(tmp_path / "final_model.keras"))
    restored = keras.saving.load_model(str(tmp_path / "final_model.keras"))
    np.testing.assert_allclose(restored.predict(x[:64], verbose=0), model.predict(x[:64], verbose=0), rtol=1e-6)
    np.testing.assert_allclose(restored.evaluate(x[:64], y[:64], verbose=0), score, rtol=1e-6)


class MyDense(keras.layers.Layer):
    def __init__(self, units, activation=None, name=None):
        super().__init__(name=name)
        self.units = units
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units), initializer=keras.initializers.GlorotNormal(),
                                 name="kernel", trainable=True)
        self.b = self.add_weight(shape=(self.units,), initializer=keras.initializers.Zeros(), name="bias",
                                 trainable=True)

    def call(self, inputs):
        return self.activation(keras.ops.matmul(inputs, self.w) + self.b)


class MyDropout(keras.layers.Layer):
    def __init__(self, rate, name=None):
        super().__init__(name=name)
        self.rate = rate
        self.seed_generator = keras.random.SeedGenerator(1337)

    def call(self, inputs):
        return keras.random.dropout(inputs, self.rate, seed=self.seed_generator)


class MyModel(keras.Model):
    def __init__(self, num_classes):
        super().__init__()
        self.conv_base = keras.Sequential([
            keras.layers.Conv2D(8, kernel_size=(3, 3), activation="relu"),
            keras.layers.MaxPooling2D(pool_size=(2, 2)),
            keras.layers.Conv2D(16, kernel_size=(3, 3), activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
        ])
        self.dp = MyDropout(0.5)
        self.dense = MyDense(num_classes, activation="softmax")

    def call(self, x):
        return self.dense(self.dp(self.conv_base(x)))


def test_the_custom_layers():
    dense = MyDense(3, activation="relu")
    x = np.random.default_rng(1).standard_normal((4, 5)).astype("float32")
    y = np.asarray(dense(x))
    np.testing.assert_allclose(y, np.maximum(x @ dense.w.numpy(), 0), rtol=1e-6)
    np.testing.assert_array_equal(dense.b.numpy(), 0)
    dropout = MyDropout(0.5)
    a, b = np.asarray(dropout(np.ones((64, 64)))), np.asarray(dropout(np.ones((64, 64))))
    assert set(np.unique(a)) <= {0.0, 2.0} and 0.4 < (a == 0).mean() < 0.6
    assert not np.array_equal(a, b)  # the generator advances
    again = MyDropout(0.5)
    np.testing.assert_array_equal(np.asarray(again(np.ones((64, 64)))), a)  # the same seed, the same masks


def test_a_subclassed_model_trains():
    keras.utils.set_random_seed(2)
    x, y = data(256, 1)
    model = MyModel(num_classes=10)
    compile_(model)
    history = model.fit(x, y, batch_size=64, epochs=3, validation_split=0.15, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    assert len(model.trainable_weights) == 6


def test_a_subclassed_model_trains_from_a_torch_dataloader():
    torch = pytest.importorskip("torch")
    x, y = data(128, 2)
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                                        batch_size=32, shuffle=True)
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x[:64]), torch.from_numpy(y[:64])),
                                      batch_size=32, shuffle=False)
    model = MyModel(num_classes=10)
    compile_(model)
    history = model.fit(train, epochs=2, validation_data=val, verbose=0).history
    assert sorted(history) == ["acc", "loss", "val_acc", "val_loss"]
