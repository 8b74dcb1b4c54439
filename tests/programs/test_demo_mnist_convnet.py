"""keras-team/keras ``examples/demo_mnist_convnet.py`` with the gpulayers imports: what it exercises.

The same convnet as keras-io's MNIST example but opened with ``layers.Input``
and ``to_categorical`` imported from ``keras.utils``; ``fit`` with
``validation_split=0.1`` (the last tenth of the data, unshuffled), then
``evaluate(verbose=0)``.
"""

import numpy as np

from gpulayers import layers
from gpulayers.utils import to_categorical
import gpulayers as keras
from programs.program_support import digits, keras_or_skip


def model_of(k, dropout):
    return k.Sequential([
        k.layers.Input(shape=(28, 28, 1)),
        k.layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        k.layers.MaxPooling2D(pool_size=(2, 2)),
        k.layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
        k.layers.MaxPooling2D(pool_size=(2, 2)),
        k.layers.Flatten(),
        k.layers.Dropout(dropout),
        k.layers.Dense(10, activation="softmax"),
    ])


def data(n, seed):
    x, y = digits(n, seed)
    return np.expand_dims(x.astype("float32") / 255, -1), to_categorical(y, 10)


def test_layers_input_is_keras_input():
    x = layers.Input(shape=(28, 28, 1))
    assert x.shape == (None, 28, 28, 1) and x.dtype == "float32"
    assert layers.Input is keras.Input


def test_validation_split_holds_out_the_last_tenth():
    keras.utils.set_random_seed(1)
    x, y = data(300, 3)
    model = model_of(keras, 0.5)
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    seen = []

    class Count(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(batch)

    history = model.fit(x, y, batch_size=128, epochs=2, validation_split=0.1, verbose=0, callbacks=[Count()])
    assert seen == [0, 1, 2] * 2  # 270 training samples in batches of 128
    val = model.evaluate(x[270:], y[270:], verbose=0)
    assert len(val) == 2
    np.testing.assert_allclose(history.history["val_loss"][-1], val[0], rtol=1e-6)


def test_training_trajectory_matches_keras():
    # The program's model and compile; dropout at 0 so that both libraries draw nothing at random.
    k = keras_or_skip()
    x, y = data(160, 4)
    ours, theirs = model_of(keras, 0.0), model_of(k, 0.0)
    ours.set_weights(theirs.get_weights())
    for model in (ours, theirs):
        model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    h_ours = ours.fit(x, y, batch_size=32, epochs=2, validation_split=0.1, shuffle=False, verbose=0).history
    h_theirs = theirs.fit(x, y, batch_size=32, epochs=2, validation_split=0.1, shuffle=False, verbose=0).history
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(h_ours[key], h_theirs[key], rtol=2e-4)
    np.testing.assert_allclose(h_ours["accuracy"], h_theirs["accuracy"], atol=1e-6)
    np.testing.assert_allclose(ours.evaluate(x, y, verbose=0), theirs.evaluate(x, y, verbose=0), rtol=5e-4)
