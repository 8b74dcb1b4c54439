"""keras-team/keras ``examples/demo_functional.py`` with the gpulayers imports: what it exercises.

``keras.config.disable_traceback_filtering()``; a functional MLP with
residual connections written ``x += residual`` on symbolic tensors (Keras's
KerasTensor operators dispatch to ``keras.ops``, here ``ops.add``); Adam and
MeanSquaredError with the metrics CategoricalAccuracy(name="acc") and
MeanSquaredError(name="mse"); ``fit`` with ``validation_split``;
``evaluate(return_dict=True)``; ``predict``.
"""

import numpy as np

import gpulayers as keras
from gpulayers import Model, layers, losses, metrics, optimizers, ops
from programs.program_support import keras_or_skip


def residual_mlp(k, width=32):
    """The program's model (narrower), its residual sums as ``ops.add`` (what ``x += residual`` means)."""
    inputs = k.layers.Input((100,))
    x = k.layers.Dense(width, activation="relu")(inputs)
    residual = x
    x = k.layers.Dense(width, activation="relu")(x)
    x = k.layers.Dense(width, activation="relu")(x)
    x = k.ops.add(x, residual)
    residual = x
    x = k.layers.Dense(width, activation="relu")(x)
    x = k.layers.Dense(width, activation="relu")(x)
    x = k.ops.add(x, residual)
    return k.Model(inputs, k.layers.Dense(16)(x))


def compile_(k, model):
    model.compile(optimizer=k.optimizers.Adam(learning_rate=0.001), loss=k.losses.MeanSquaredError(),
                  metrics=[k.metrics.CategoricalAccuracy(name="acc"), k.metrics.MeanSquaredError(name="mse")])


def data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 100))
    return x, np.tanh(x[:, :16] - x[:, 16:32])  # learnable targets in the program's shapes


def test_traceback_filtering_switches():
    assert keras.config.is_traceback_filtering_enabled()
    keras.config.disable_traceback_filtering()
    assert not keras.config.is_traceback_filtering_enabled()
    keras.config.enable_traceback_filtering()
    assert keras.config.is_traceback_filtering_enabled()


def test_the_residual_mlp_trains_evaluates_and_predicts():
    keras.utils.set_random_seed(0)
    model = residual_mlp(keras)
    # The sums are ops in the graph (in its config and summary), not layers: model.layers has none, as in Keras.
    assert [entry["class_name"] for entry in model.get_config()["layers"]].count("Add") == 2
    assert "Add" not in [type(layer).__name__ for layer in model.layers]
    compile_(keras, model)
    x, y = data()
    history = model.fit(x, y, batch_size=32, epochs=3, validation_split=0.2, verbose=0).history
    assert sorted(history) == ["acc", "loss", "mse", "val_acc", "val_loss", "val_mse"]
    assert history["loss"][-1] < history["loss"][0]
    np.testing.assert_allclose(history["mse"], history["loss"], rtol=1e-5)  # no regularization: loss is the MSE
    scores = model.evaluate(x, y, return_dict=True, verbose=0)
    assert sorted(scores) == ["acc", "loss", "mse"]
    assert model.predict(x, verbose=0).shape == (400, 16)


def test_the_training_trajectory_matches_keras():
    k = keras_or_skip()
    ours, theirs = residual_mlp(keras), residual_mlp(k)
    ours.set_weights(theirs.get_weights())
    compile_(keras, ours)
    compile_(k, theirs)
    x, y = data(192, 1)
    h_ours = ours.fit(x, y, batch_size=32, epochs=2, validation_split=0.25, shuffle=False, verbose=0).history
    h_theirs = theirs.fit(x, y, batch_size=32, epochs=2, validation_split=0.25, shuffle=False, verbose=0).history
    for key in ("loss", "val_loss", "mse", "acc", "val_acc"):
        np.testing.assert_allclose(h_ours[key], h_theirs[key], rtol=2e-4, err_msg=key)
    mine, reference = ours.evaluate(x, y, return_dict=True, verbose=0), theirs.evaluate(x, y, return_dict=True, verbose=0)
    for key in reference:
        np.testing.assert_allclose(mine[key], reference[key], rtol=2e-4, err_msg=key)


def test_plus_equals_on_symbolic_tensors():
    inputs = layers.Input((8,))
    x = layers.Dense(4)(inputs)
    residual = x
    x = layers.Dense(4)(x)
    x += residual
    model = Model(inputs, x)
    last = model.get_config()["layers"][-1]
    assert (last["class_name"], last["module"]) == ("Add", "keras.src.ops.numpy")
    data = np.ones((2, 8), "float32")
    dense, second = model.layers[1], model.layers[2]
    h = data @ dense.get_weights()[0] + dense.get_weights()[1]
    want = h + (h @ second.get_weights()[0] + second.get_weights()[1])
    np.testing.assert_allclose(model.predict(data, verbose=0), want, rtol=1e-5)


def test_the_names_the_program_imports():
    # `from keras import Model, layers, losses, metrics, optimizers` and `import keras`, as gpulayers.
    assert Model is keras.Model and layers is keras.layers and losses is keras.losses
    assert metrics is keras.metrics and optimizers is keras.optimizers and ops is keras.ops
