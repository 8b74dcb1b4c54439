"""keras-io ``guides/training_with_built_in_methods.py`` (its sections without tf.data): what it exercises.

``compile`` with objects or string names; ``fit`` with ``validation_data``
or ``validation_split``; ``evaluate`` and ``predict``; a loss function and a
``Loss`` subclass of ``keras.ops``; a ``Metric`` subclass with
``add_variable`` / ``assign_add``; ``add_loss`` from a layer, and a model
trained on ``add_loss`` alone; PyDataset (with workers) and torch
DataLoaders; ``class_weight`` and ``sample_weight``; a model with an image
and a time-series input (Conv1D, GlobalMaxPooling1D) and two outputs, with
per-output losses, metrics and loss weights in lists and dicts; EarlyStopping,
a custom callback, learning-rate schedules and the TensorBoard callback.
"""

import glob
import os

import numpy as np
import pytest

import gpulayers as keras
from gpulayers import layers, ops
from programs.program_support import digits, keras_or_skip


def mnist_vectors(n, seed):
    x, y = digits(n, seed)
    return x.reshape(n, 784).astype("float32") / 255, y.astype("float32")


def uncompiled_model(k=keras):
    inputs = k.Input(shape=(784,), name="digits")
    x = k.layers.Dense(64, activation="relu", name="dense_1")(inputs)
    x = k.layers.Dense(64, activation="relu", name="dense_2")(x)
    outputs = k.layers.Dense(10, activation="softmax", name="predictions")(x)
    return k.Model(inputs=inputs, outputs=outputs)


def test_compile_with_objects_or_names_trains_alike_and_as_keras():
    k = keras_or_skip()
    x, y = mnist_vectors(320, 0)
    x_val, y_val = mnist_vectors(64, 1)
    theirs = uncompiled_model(k)
    histories = []
    for names in (False, True):
        model = uncompiled_model()
        model.set_weights(theirs.get_weights())
        if names:
            model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy",
                          metrics=["sparse_categorical_accuracy"])
        else:
            model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=1e-3),
                          loss=keras.losses.SparseCategoricalCrossentropy(),
                          metrics=[keras.metrics.SparseCategoricalAccuracy()])
        histories.append(model.fit(x, y, batch_size=64, epochs=2, validation_data=(x_val, y_val), shuffle=False,
                                   verbose=0).history)
    assert histories[0] == histories[1]
    theirs.compile(optimizer=k.optimizers.RMSprop(learning_rate=1e-3), loss=k.losses.SparseCategoricalCrossentropy(),
                   metrics=[k.metrics.SparseCategoricalAccuracy()])
    reference = theirs.fit(x, y, batch_size=64, epochs=2, validation_data=(x_val, y_val), shuffle=False,
                           verbose=0).history
    assert sorted(reference) == sorted(histories[0])
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(histories[0][key], reference[key], rtol=2e-4)
    assert model.predict(x_val[:3], verbose=0).shape == (3, 10)
    assert len(model.evaluate(x_val, y_val, batch_size=128, verbose=0)) == 2


def test_a_loss_function_and_a_loss_subclass_on_the_ops():
    x, y = mnist_vectors(128, 2)
    y_one_hot = ops.one_hot(y, num_classes=10)  # a Tensor as the targets

    def custom_mean_squared_error(y_true, y_pred):
        return ops.mean(ops.square(y_true - y_pred), axis=-1)

    class CustomMSE(keras.losses.Loss):
        def __init__(self, regularization_factor=0.1, name="custom_mse"):
            super().__init__(name=name)
            self.regularization_factor = regularization_factor

        def call(self, y_true, y_pred):
            mse = ops.mean(ops.square(y_true - y_pred), axis=-1)
            reg = ops.mean(ops.square(0.5 - y_pred), axis=-1)
            return mse + reg * self.regularization_factor

    keras.utils.set_random_seed(3)
    model = uncompiled_model()
    start = model.get_weights()
    model.compile(optimizer=keras.optimizers.Adam(), loss=custom_mean_squared_error)
    custom = model.fit(x, y_one_hot, batch_size=64, epochs=2, shuffle=False, verbose=0).history["loss"]
    model.set_weights(start)
    model.compile(optimizer=keras.optimizers.Adam(), loss="mse")
    builtin = model.fit(x, y_one_hot, batch_size=64, epochs=2, shuffle=False, verbose=0).history["loss"]
    np.testing.assert_allclose(custom, builtin, rtol=1e-6)
    assert custom[1] < custom[0]

    model.compile(optimizer=keras.optimizers.Adam(), loss=CustomMSE())
    p = model.predict(x, verbose=0)
    t = np.asarray(y_one_hot)
    expected = np.mean(np.mean((t - p) ** 2, -1) + 0.1 * np.mean((0.5 - p) ** 2, -1))
    np.testing.assert_allclose(model.evaluate(x, y_one_hot, batch_size=128, verbose=0), expected, rtol=1e-5)


class CategoricalTruePositives(keras.metrics.Metric):
    def __init__(self, name="categorical_true_positives", **kwargs):
        super().__init__(name=name, **kwargs)
        self.true_positives = self.add_variable(shape=(), name="ctp", initializer="zeros")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.reshape(ops.argmax(y_pred, axis=1), (-1, 1))
        values = ops.cast(ops.cast(y_true, "int32") == ops.cast(y_pred, "int32"), "float32")
        if sample_weight is not None:
            values = ops.multiply(values, ops.cast(sample_weight, "float32"))
        self.true_positives.assign_add(ops.sum(values))

    def result(self):
        return self.true_positives

    def reset_state(self):
        self.true_positives.assign(0)


def test_a_stateful_metric_subclass():
    x, y = mnist_vectors(96, 4)
    model = uncompiled_model()
    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(), metrics=[CategoricalTruePositives()])
    history = model.fit(x, y, batch_size=32, epochs=2, verbose=0).history
    assert sorted(history) == ["categorical_true_positives", "loss"]
    scores = model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    predicted = model.predict(x, verbose=0).argmax(axis=1)
    # As in Keras: y_true (32,) against the reshaped y_pred (32, 1) broadcasts to (32, 32) in each batch, so
    # the metric counts, batch by batch, the pairs (label, prediction) that are equal.
    expected = float(sum((predicted[i:i + 32, None] == y[None, i:i + 32].astype(int)).sum() for i in range(0, 96, 32)))
    assert scores["categorical_true_positives"] == expected


def test_add_loss_from_a_layer_joins_the_training_loss():
    class ActivityRegularizationLayer(layers.Layer):
        def call(self, inputs):
            self.add_loss(ops.sum(inputs) * 0.1)
            return inputs

    inputs = keras.Input(shape=(784,), name="digits")
    hidden = layers.Dense(64, activation="relu", name="dense_1")(inputs)
    x = ActivityRegularizationLayer()(hidden)
    x = layers.Dense(64, activation="relu", name="dense_2")(x)
    model = keras.Model(inputs=inputs, outputs=layers.Dense(10, name="predictions")(x))
    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x_data, y_data = mnist_vectors(64, 5)
    crossentropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y_data, model(x_data))
    activations = keras.Model(inputs, hidden)(x_data)
    expected = float(np.asarray(crossentropy)) + 0.1 * float(np.sum(np.asarray(activations)))
    np.testing.assert_allclose(model.evaluate(x_data, y_data, batch_size=64, verbose=0), expected, rtol=1e-5)
    assert model.fit(x_data, y_data, batch_size=64, epochs=1, verbose=0).history["loss"][0] > 1.0


def test_a_model_trained_on_add_loss_alone():
    class LogisticEndpoint(keras.layers.Layer):
        def __init__(self, name=None):
            super().__init__(name=name)
            self.loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)

        def call(self, targets, logits, sample_weights=None):
            self.add_loss(self.loss_fn(targets, logits, sample_weights))
            return ops.softmax(logits)

    inputs = keras.Input(shape=(3,), name="inputs")
    targets = keras.Input(shape=(10,), name="targets")
    logits = keras.layers.Dense(10)(inputs)
    model = keras.Model(inputs=[inputs, targets], outputs=LogisticEndpoint(name="predictions")(targets, logits))
    model.compile(optimizer=keras.optimizers.Adam(0.05))  # no loss
    rng = np.random.default_rng(6)
    data = {"inputs": rng.random((16, 3)), "targets": (rng.random((16, 10)) > 0.5).astype("float64")}
    losses = model.fit(data, epochs=5, batch_size=16, verbose=0).history["loss"]
    assert losses[-1] < losses[0]
    assert np.allclose(model.predict(data, verbose=0).sum(axis=1), 1.0, atol=1e-5)


class ExamplePyDataset(keras.utils.PyDataset):
    def __init__(self, x, y, batch_size, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return int(np.ceil(len(self.x) / float(self.batch_size)))

    def __getitem__(self, idx):
        part = slice(idx * self.batch_size, (idx + 1) * self.batch_size)
        return self.x[part], self.y[part]


def compiled_model():
    model = uncompiled_model()
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["sparse_categorical_accuracy"])
    return model


@pytest.mark.parametrize("workers", [1, 4])
def test_pydatasets_train_as_the_arrays_they_hold(workers):
    x, y = mnist_vectors(100, 7)
    ours = compiled_model()
    start = ours.get_weights()
    train = ExamplePyDataset(x[:80], y[:80], batch_size=32, workers=workers)
    val = ExamplePyDataset(x[80:], y[80:], batch_size=32, workers=workers)
    from_dataset = ours.fit(train, batch_size=64, validation_data=val, epochs=1, shuffle=False, verbose=0).history
    evaluated = ours.evaluate(val, verbose=0)
    ours.set_weights(start)
    ours.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["sparse_categorical_accuracy"])
    from_arrays = ours.fit(x[:80], y[:80], batch_size=32, validation_data=(x[80:], y[80:]), epochs=1, shuffle=False,
                           verbose=0).history
    for key in from_arrays:
        np.testing.assert_allclose(from_dataset[key], from_arrays[key], rtol=1e-6)
    np.testing.assert_allclose(evaluated, [from_arrays["val_loss"][0], from_arrays["val_sparse_categorical_accuracy"][0]],
                               rtol=1e-6)


def test_a_torch_dataloader():
    torch = pytest.importorskip("torch")

    class ExampleTorchDataset(torch.utils.data.Dataset):
        def __init__(self, x, y):
            self.x, self.y = x, y

        def __len__(self):
            return len(self.x)

        def __getitem__(self, idx):
            return self.x[idx], self.y[idx]

    x, y = mnist_vectors(96, 8)
    loader = torch.utils.data.DataLoader(ExampleTorchDataset(x, y), batch_size=32, shuffle=True)
    model = compiled_model()
    history = model.fit(loader, batch_size=64, validation_data=loader, epochs=2, verbose=0).history
    assert len(history["val_loss"]) == 2
    assert len(model.evaluate(loader, verbose=0)) == 2


def test_class_weight_is_a_sample_weight_per_class():
    x, y = mnist_vectors(128, 9)
    class_weight = {i: 1.0 for i in range(10)}
    class_weight[5] = 2.0
    sample_weight = np.ones(shape=(len(y),))
    sample_weight[y == 5] = 2.0
    model = compiled_model()
    start = model.get_weights()
    by_class = model.fit(x, y, class_weight=class_weight, batch_size=64, epochs=2, shuffle=False, verbose=0).history
    model.set_weights(start)
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["sparse_categorical_accuracy"])
    by_sample = model.fit(x, y, sample_weight=sample_weight, batch_size=64, epochs=2, shuffle=False, verbose=0).history
    np.testing.assert_allclose(by_class["loss"], by_sample["loss"], rtol=1e-6)


def two_output_model():
    image_input = keras.Input(shape=(32, 32, 3), name="img_input")
    timeseries_input = keras.Input(shape=(None, 10), name="ts_input")
    x1 = layers.GlobalMaxPooling2D()(layers.Conv2D(3, 3)(image_input))
    x2 = layers.GlobalMaxPooling1D()(layers.Conv1D(3, 3)(timeseries_input))
    x = layers.concatenate([x1, x2])
    score_output = layers.Dense(1, name="score_output")(x)
    class_output = layers.Dense(5, name="class_output")(x)
    return keras.Model(inputs=[image_input, timeseries_input], outputs=[score_output, class_output])


def two_output_data(n=40, seed=10):
    rng = np.random.default_rng(seed)
    return (rng.random((n, 32, 32, 3)), rng.random((n, 20, 10))), (rng.random((n, 1)), rng.random((n, 5)))


def test_two_outputs_with_lists_and_dicts():
    (img, ts), (score, classes) = two_output_data()
    model = two_output_model()
    start = model.get_weights()
    model.compile(optimizer=keras.optimizers.RMSprop(1e-3),
                  loss=[keras.losses.MeanSquaredError(), keras.losses.CategoricalCrossentropy()],
                  metrics=[[keras.metrics.MeanAbsolutePercentageError(), keras.metrics.MeanAbsoluteError()],
                           [keras.metrics.CategoricalAccuracy()]])
    as_lists = model.fit([img, ts], [score, classes], batch_size=32, epochs=1, shuffle=False, verbose=0).history
    assert sorted(as_lists) == [
        "class_output_categorical_accuracy", "class_output_loss", "loss", "score_output_loss",
        "score_output_mean_absolute_error", "score_output_mean_absolute_percentage_error",
    ]
    model.set_weights(start)
    model.compile(optimizer=keras.optimizers.RMSprop(1e-3),
                  loss={"score_output": keras.losses.MeanSquaredError(),
                        "class_output": keras.losses.CategoricalCrossentropy()},
                  metrics={"score_output": [keras.metrics.MeanAbsolutePercentageError(),
                                            keras.metrics.MeanAbsoluteError()],
                           "class_output": [keras.metrics.CategoricalAccuracy()]})
    as_dicts = model.fit({"img_input": img, "ts_input": ts}, {"score_output": score, "class_output": classes},
                         batch_size=32, epochs=1, shuffle=False, verbose=0).history
    for key in ("score_output_loss", "class_output_loss", "score_output_mean_absolute_error"):
        np.testing.assert_allclose(as_dicts[key], as_lists[key], rtol=1e-5)
    # Loss weights weigh each output's loss in the total (checked without training: a different weighting
    # trains differently).
    model.compile(optimizer=keras.optimizers.RMSprop(1e-3),
                  loss={"score_output": keras.losses.MeanSquaredError(),
                        "class_output": keras.losses.CategoricalCrossentropy()},
                  loss_weights={"score_output": 2.0, "class_output": 1.0})
    scores = model.evaluate([img, ts], [score, classes], batch_size=64, verbose=0, return_dict=True)
    np.testing.assert_allclose(scores["loss"], 2 * scores["score_output_loss"] + scores["class_output_loss"], rtol=1e-5)


def test_an_output_without_a_loss():
    (img, ts), (score, classes) = two_output_data()
    model = two_output_model()
    model.compile(optimizer=keras.optimizers.RMSprop(1e-3), loss=[None, keras.losses.CategoricalCrossentropy()])
    history = model.fit([img, ts], [score, classes], batch_size=40, epochs=1, verbose=0).history
    assert sorted(history) == ["loss"]  # as Keras 3.15: no per-output entry when only one output has a loss
    expected = keras.losses.CategoricalCrossentropy()(classes, model.predict([img, ts], verbose=0)[1])
    np.testing.assert_allclose(model.evaluate([img, ts], [score, classes], batch_size=40, verbose=0),
                               float(np.asarray(expected)), rtol=1e-5)


def test_compiling_again_without_metrics_drops_the_old_metrics():
    # A deliberate difference: Keras 3.15 keeps the first compile's metric objects in the logs after a
    # compile without metrics (they stay tracked on the model); gpulayers logs what the last compile asked.
    (img, ts), (score, classes) = two_output_data()
    model = two_output_model()
    model.compile(optimizer="rmsprop", loss=["mse", "categorical_crossentropy"],
                  metrics=[[keras.metrics.MeanAbsoluteError()], [keras.metrics.CategoricalAccuracy()]])
    model.fit([img, ts], [score, classes], batch_size=40, epochs=1, verbose=0)
    model.compile(optimizer="rmsprop", loss=[None, keras.losses.CategoricalCrossentropy()])
    history = model.fit([img, ts], [score, classes], batch_size=40, epochs=1, verbose=0).history
    assert sorted(history) == ["loss"]
    assert history["loss"][0] > 0


def test_mape_matches_keras():
    k = keras_or_skip()
    rng = np.random.default_rng(11)
    y_true, y_pred = rng.random((6, 3)).astype("float32") + 0.5, rng.random((6, 3)).astype("float32")
    ours, theirs = keras.metrics.MeanAbsolutePercentageError(), k.metrics.MeanAbsolutePercentageError()
    ours.update_state(y_true, y_pred)
    theirs.update_state(y_true, y_pred)
    np.testing.assert_allclose(float(ours.result()), float(theirs.result()), rtol=1e-6)
    np.testing.assert_allclose(float(keras.losses.MeanAbsolutePercentageError()(y_true, y_pred)),
                               float(k.losses.MeanAbsolutePercentageError()(y_true, y_pred)), rtol=1e-6)
    assert ours.get_config() == theirs.get_config()


def test_early_stopping_and_a_batch_callback():
    class LossHistory(keras.callbacks.Callback):
        def on_train_begin(self, logs):
            self.per_batch_losses = []

        def on_batch_end(self, batch, logs):
            self.per_batch_losses.append(logs.get("loss"))

    x, y = mnist_vectors(100, 12)
    model = uncompiled_model()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="sparse_categorical_crossentropy")
    history_cb = LossHistory()
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", min_delta=1e-2, patience=2, verbose=0)
    history = model.fit(x, y, epochs=20, batch_size=64, callbacks=[stop, history_cb], validation_split=0.2, verbose=0)
    assert len(history.history["loss"]) == 3  # nothing improves by 1e-2: stop after patience=2 more epochs
    assert len(history_cb.per_batch_losses) == 3 * 2


def test_exponential_decay_with_rmsprop():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=100000, decay_rate=0.96, staircase=True)
    optimizer = keras.optimizers.RMSprop(learning_rate=schedule)
    assert float(optimizer.learning_rate) == pytest.approx(0.1)
    assert float(schedule(100000)) == pytest.approx(0.096)
    assert float(schedule(150000)) == pytest.approx(0.096)


def _tags(path):
    from gpulayers.event_writer import read_events

    return [payload for payload in read_events(path)]


def test_tensorboard_writes_the_curves(tmp_path):
    x, y = mnist_vectors(64, 13)
    model = compiled_model()
    board = keras.callbacks.TensorBoard(log_dir=str(tmp_path / "logs"), histogram_freq=1, update_freq="epoch")
    model.fit(x, y, epochs=2, batch_size=32, validation_split=0.25, callbacks=[board], verbose=0)
    train = glob.glob(os.path.join(tmp_path, "logs", "train", "events.out.tfevents.*"))
    val = glob.glob(os.path.join(tmp_path, "logs", "validation", "events.out.tfevents.*"))
    assert len(train) == 1 and len(val) == 1
    train_records, val_records = b"".join(_tags(train[0])), b"".join(_tags(val[0]))
    assert b"brain.Event:2" in train_records
    for tag in (b"epoch_loss", b"epoch_sparse_categorical_accuracy", b"epoch_learning_rate", b"kernel/histogram"):
        assert tag in train_records
    assert b"epoch_loss" in val_records and b"val_loss" not in val_records
    with pytest.raises(ValueError, match="Profiling"):
        keras.callbacks.TensorBoard(profile_batch=2)
    keras.callbacks.TensorBoard(log_dir="/full_path_to_your_logs", histogram_freq=0, embeddings_freq=0,
                                update_freq="epoch")  # constructing it creates nothing


def test_tensorboard_files_read_back_in_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    x, y = mnist_vectors(64, 14)
    model = compiled_model()
    model.fit(x, y, epochs=3, batch_size=32, validation_split=0.25, verbose=0,
              callbacks=[keras.callbacks.TensorBoard(log_dir=str(tmp_path), update_freq=1)])
    board = EventAccumulator(str(tmp_path / "train"))
    board.Reload()
    losses = [event.value for event in board.Scalars("epoch_loss")]
    assert [event.step for event in board.Scalars("epoch_loss")] == [0, 1, 2] and len(losses) == 3
    assert len(board.Scalars("batch_loss")) == 3 * 2
