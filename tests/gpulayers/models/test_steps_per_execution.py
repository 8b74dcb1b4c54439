"""compile(steps_per_execution=N): N batches per read of the logs, callbacks once per execution (Keras 3's rule)."""

import numpy as np
import pytest

import gpulayers as keras


class Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.events = []

    def on_train_batch_begin(self, batch, logs=None):
        self.events.append(("train_begin", batch))

    def on_train_batch_end(self, batch, logs=None):
        self.events.append(("train_end", batch, sorted(logs)))

    def on_test_batch_begin(self, batch, logs=None):
        self.events.append(("test_begin", batch))

    def on_test_batch_end(self, batch, logs=None):
        self.events.append(("test_end", batch))

    def on_predict_batch_end(self, batch, logs=None):
        self.events.append(("predict_end", batch, logs["outputs"].shape))


def _data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((14, 3)).astype("float32")
    return x, (x @ np.array([[1.0], [-2.0], [0.5]], dtype="float32") + 0.3)


def _model(steps_per_execution):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.05), "mse", metrics=["mae"], steps_per_execution=steps_per_execution)
    return model


def test_callbacks_fire_once_per_execution_with_keras_steps():
    # What Keras 3.15.1 (jax backend) records for the same calls: 7 training batches in executions of
    # 3 (the last one short, its end step still begin + 2), 3 validation batches, 4 and 4 test /
    # predict batches; predict hands the outputs of the whole execution to the callback.
    x, y = _data()
    model, rec = _model(3), Recorder()
    model.fit(x, y, batch_size=2, epochs=1, verbose=0, callbacks=[rec], validation_data=(x[:6], y[:6]))
    model.evaluate(x, y, batch_size=4, verbose=0, callbacks=[rec])
    model.predict(x, batch_size=4, verbose=0, callbacks=[rec])
    logs = ["loss", "mae"]
    assert rec.events == [
        ("train_begin", 0), ("train_end", 2, logs), ("train_begin", 3), ("train_end", 5, logs),
        ("train_begin", 6), ("train_end", 8, logs),
        ("test_begin", 0), ("test_end", 2),  # validation inside fit: 3 batches, one execution
        ("test_begin", 0), ("test_end", 2), ("test_begin", 3), ("test_end", 5),
        ("predict_end", 2, (12, 1)), ("predict_end", 5, (2, 1)),
    ]


def test_training_is_the_same_for_any_steps_per_execution():
    x, y = _data()
    runs = {}
    for n in (1, 3, 7, 100):
        model = _model(n)
        history = model.fit(x, y, batch_size=2, epochs=2, verbose=0, shuffle=False)
        runs[n] = ([w.numpy() for w in model.weights], history.history,
                   model.evaluate(x, y, batch_size=5, verbose=0), model.predict(x, batch_size=4, verbose=0))
    for n in (3, 7, 100):
        for got, want in zip(runs[n][0], runs[1][0]):
            np.testing.assert_array_equal(got, want)
        assert runs[n][1] == runs[1][1]
        assert runs[n][2] == runs[1][2]
        np.testing.assert_array_equal(runs[n][3], runs[1][3])


@pytest.mark.parametrize("value", [0, -2, 1.5, True, "3", None])
def test_bad_steps_per_execution_is_refused_before_anything_changes(value):
    model = _model(1)
    optimizer = model.optimizer
    with pytest.raises(ValueError, match=r"steps_per_execution") as info:
        model.compile("adam", "mae", steps_per_execution=value)
    assert repr(value) in str(info.value)
    assert model.optimizer is optimizer and model.steps_per_execution == 1


def test_steps_per_execution_is_saved_in_the_compile_config(tmp_path):
    x, y = _data()
    model = _model(4)
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert model.get_compile_config()["steps_per_execution"] == 4
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.steps_per_execution == 4
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
