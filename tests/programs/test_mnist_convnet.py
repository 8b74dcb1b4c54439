"""keras-io ``examples/vision/mnist_convnet.py`` with ``import gpulayers as keras``: what it exercises.

A Sequential convnet from ``keras.Input``, Conv2D, MaxPooling2D, Flatten,
Dropout and a softmax Dense; ``keras.utils.to_categorical``; ``compile`` with
the string names ``"categorical_crossentropy"``, ``"adam"`` and
``"accuracy"``; ``fit`` with ``validation_split``; ``evaluate`` giving
``[loss, accuracy]``.
"""

import numpy as np

import gpulayers as keras
from programs.program_support import digits, keras_or_skip


def convnet(k, dropout=0.5):
    """The program's model, from gpulayers (``k`` = gpulayers) or from Keras."""
    return k.Sequential([
        k.Input(shape=(28, 28, 1)),
        k.layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        k.layers.MaxPooling2D(pool_size=(2, 2)),
        k.layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
        k.layers.MaxPooling2D(pool_size=(2, 2)),
        k.layers.Flatten(),
        k.layers.Dropout(dropout),
        k.layers.Dense(10, activation="softmax"),
    ])


def prepared(n, seed):
    x, y = digits(n, seed)
    return np.expand_dims(x.astype("float32") / 255, -1), keras.utils.to_categorical(y, 10)


def test_structure_and_summary(capsys):
    model = convnet(keras)
    assert [layer.output.shape for layer in model.layers] == [
        (None, 26, 26, 32), (None, 13, 13, 32), (None, 11, 11, 64), (None, 5, 5, 64), (None, 1600), (None, 1600),
        (None, 10),
    ]
    assert model.count_params() == 34826
    model.summary()
    assert "Total params: 34,826" in capsys.readouterr().out


def test_to_categorical():
    onehot = keras.utils.to_categorical(np.array([3, 0, 9], dtype=np.uint8), 10)
    assert onehot.shape == (3, 10)
    np.testing.assert_array_equal(onehot.argmax(axis=1), [3, 0, 9])
    assert onehot.sum() == 3


def test_fit_learns_and_evaluate_gives_loss_and_accuracy():
    keras.utils.set_random_seed(0)
    x, y = prepared(1024, 0)
    x_test, y_test = prepared(200, 1)
    model = convnet(keras)
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    history = model.fit(x, y, batch_size=128, epochs=3, validation_split=0.1, verbose=0)
    assert sorted(history.history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    losses = history.history["loss"]
    assert losses[2] < losses[1] < losses[0]
    score = model.evaluate(x_test, y_test, verbose=0)
    assert len(score) == 2 and all(isinstance(v, float) for v in score)
    assert score[0] < 1.0 and score[1] > 0.8


def test_same_predictions_and_scores_as_keras():
    k = keras_or_skip()
    x, y = prepared(96, 2)
    ours, theirs = convnet(keras), convnet(k)
    ours.set_weights(theirs.get_weights())
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(keras.utils.to_categorical([1, 4], 10), k.utils.to_categorical([1, 4], 10))
    ours.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    theirs.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    np.testing.assert_allclose(ours.evaluate(x, y, verbose=0), theirs.evaluate(x, y, verbose=0), rtol=1e-5)
