"""compile / fit / evaluate / predict / *_on_batch, checked against hand computations."""

import numpy as np
import pytest

import gpulayers
from backends import get_ops
from gpulayers import callbacks, losses, optimizers
from gpulayers.layers import BatchNormalization, Conv2D, Dense, Dropout, Flatten, Input, MaxPooling2D
from gpulayers.models import Sequential
from helpers import to_np


def blobs(n=200, seed=0):
    """Two well-separated Gaussian blobs in 4-D; labels 0/1."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.standard_normal((n, 4)).astype("float32") + (y[:, None] * 2.0 - 1.0) * 1.5
    return x, y


def dense_model(units=2, activation="softmax", **kwargs):
    gpulayers.set_random_seed(0)
    return Sequential([Input((4,)), Dense(8, activation="relu"), Dense(units, activation=activation, **kwargs)])


# ---------------------------------------------------------------- learning


def test_training_learns_a_separable_task():
    x, y = blobs()
    model = dense_model()
    model.compile(optimizer=optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, batch_size=16, epochs=8, verbose=0)
    losses = history.history["loss"]
    assert len(losses) == 8 and losses[-1] < losses[0] * 0.5
    assert history.history["accuracy"][-1] > history.history["accuracy"][0]
    loss, accuracy = model.evaluate(x, y, verbose=0)
    assert accuracy > 0.95 and loss < losses[0]


def test_a_small_cnn_learns_bright_squares():
    rng = np.random.default_rng(1)
    n = 96
    y = rng.integers(0, 2, n)
    x = rng.uniform(0, 0.3, (n, 8, 8, 1)).astype("float32")
    for i in np.flatnonzero(y):
        r, c = rng.integers(0, 5, 2)
        x[i, r : r + 3, c : c + 3, 0] += 0.7
    gpulayers.set_random_seed(0)
    model = Sequential(
        [
            Input((8, 8, 1)),
            Conv2D(4, 3, padding="same", activation="relu"),
            BatchNormalization(momentum=0.9),  # moving statistics settle within the 90 steps
            MaxPooling2D(),
            Flatten(),
            Dropout(0.2, seed=1),
            Dense(2, activation="softmax"),
        ]
    )
    model.compile(optimizer=optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, batch_size=16, epochs=15, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert model.evaluate(x, y, verbose=0)[1] > 0.9


# ---------------------------------------------------------------- exact steps


def test_one_sgd_step_matches_hand_computation():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 3))
    y = rng.standard_normal((5, 2))
    model = Sequential([Input((3,), dtype="float64"), Dense(2, dtype="float64", kernel_regularizer=gpulayers.regularizers.L2(0.1))])
    w = rng.standard_normal((3, 2))
    b = rng.standard_normal(2)
    model.set_weights([w, b])
    model.compile(optimizer=optimizers.SGD(learning_rate=0.05), loss="mse")
    loss = model.train_on_batch(x, y)
    err = x @ w + b - y
    expected_loss = np.mean(err**2) + 0.1 * np.sum(w**2)
    assert loss == pytest.approx(expected_loss, rel=1e-10)
    grad_w = 2 * x.T @ err / err.size + 2 * 0.1 * w
    grad_b = 2 * err.sum(axis=0) / err.size
    new_w, new_b = model.get_weights()
    np.testing.assert_allclose(new_w, w - 0.05 * grad_w, rtol=1e-10)
    np.testing.assert_allclose(new_b, b - 0.05 * grad_b, rtol=1e-10)


def test_fused_softmax_gradient_equals_the_chain_rule():
    x, y = blobs(12)
    x = x.astype("float64")
    make = lambda: Sequential([Input((4,), dtype="float64"), Dense(3, activation="softmax", dtype="float64")])
    a, b = make(), make()
    b.set_weights(a.get_weights())
    a.compile(optimizer=optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")

    class Unfused(losses.Loss):
        def call(self, y_true, y_pred):  # y_pred * 1.0 is no softmax node: the tape goes through the softmax
            return losses.sparse_categorical_crossentropy(y_true, y_pred * 1.0)

    b.compile(optimizer=optimizers.SGD(0.5), loss=Unfused(dtype="float64"))
    la, lb = a.train_on_batch(x, y), b.train_on_batch(x, y)
    assert la == pytest.approx(lb, rel=1e-12)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-9, atol=1e-12)


def test_epoch_loss_is_the_sample_mean_over_batches():
    x, y = blobs(50)
    model = dense_model()
    model.compile(optimizer=optimizers.SGD(learning_rate=0.0), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    loss, accuracy = model.evaluate(x, y, batch_size=50, verbose=0)
    assert history.history["loss"][0] == pytest.approx(loss, rel=1e-5)
    assert history.history["accuracy"][1] == pytest.approx(accuracy, rel=1e-6)


# ---------------------------------------------------------------- API conventions


def test_return_conventions_and_history_keys():
    x, y = blobs(40)
    model = dense_model()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    assert isinstance(model.evaluate(x, y, verbose=0), float)
    assert isinstance(model.train_on_batch(x, y), float)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    out = model.evaluate(x, y, verbose=0)
    assert isinstance(out, list) and len(out) == 2
    assert set(model.evaluate(x, y, verbose=0, return_dict=True)) == {"loss", "accuracy"}
    assert len(model.test_on_batch(x, y)) == 2
    history = model.fit(x, y, epochs=2, validation_split=0.25, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert model.history is history and history.epoch == [0, 1]
    pred = model.predict(x, verbose=0)
    assert isinstance(pred, np.ndarray) and pred.shape == (40, 2)
    np.testing.assert_allclose(model.predict_on_batch(x), pred, rtol=1e-6)


def test_validation_split_takes_the_last_samples():
    x, y = blobs(40)
    model = dense_model()
    model.compile(optimizer=optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=1, validation_split=0.25, verbose=0)
    assert history.history["val_loss"][0] == pytest.approx(model.evaluate(x[30:], y[30:], verbose=0), rel=1e-5)


def test_sample_and_class_weights():
    x, y = blobs(32)
    model = dense_model()
    model.compile(optimizer=optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    base = model.evaluate(x, y, verbose=0)
    weighted = model.evaluate(x, y, sample_weight=np.where(y == 1, 1.0, 0.0), verbose=0)
    only_ones = model.evaluate(x[y == 1], y[y == 1], verbose=0)
    # sum_over_batch_size divides by all samples, zero weights included (Keras's reduction).
    assert weighted == pytest.approx(only_ones * (y == 1).mean(), rel=1e-5)
    assert weighted != pytest.approx(base)
    h = model.fit(x, y, class_weight={0: 0.0, 1: 1.0}, batch_size=32, epochs=1, verbose=0, shuffle=False)
    assert h.history["loss"][0] == pytest.approx(weighted, rel=1e-5)


def test_regularization_and_activity_losses_are_reported():
    x, y = blobs(20)
    model = dense_model(activity_regularizer="l1")
    model.compile(optimizer=optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    plain = model._loss_obj(get_ops().asarray(y), model(x)).item()
    extra = sum(float(to_np(l)) for l in model.losses)
    assert extra > 0
    assert model.evaluate(x, y, batch_size=20, verbose=0) == pytest.approx(plain + extra, rel=1e-5)


# ---------------------------------------------------------------- bad input


def assert_unchanged(model, before):
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_fit_before_compile():
    x, y = blobs(10)
    with pytest.raises(ValueError, match="compile"):
        dense_model().fit(x, y, verbose=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"optimizer": "adamax_plus"}, "optimizer"),
        ({"loss": "cross_entropy_of_doom"}, "loss"),
        ({"metrics": ["acuracy"]}, "metrics"),
    ],
)
def test_unknown_names_in_compile(kwargs, match):
    args = {"optimizer": "sgd", "loss": "mse", **kwargs}
    with pytest.raises(ValueError, match=match):
        dense_model().compile(**args)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda x, y: dict(x=x, y=y[:-1]), "samples"),
        (lambda x, y: dict(x=x[:0], y=y[:0]), "empty"),
        (lambda x, y: dict(x=x, y=y, validation_split=1.0), "validation_split"),
        (lambda x, y: dict(x=x, y=y, validation_split=-0.1), "validation_split"),
        (lambda x, y: dict(x=x, y=y + 5), "label"),
        (lambda x, y: dict(x=x, y=y - 1), "label"),
        (lambda x, y: dict(x=x, y=y + 0.5), "label"),
        (lambda x, y: dict(x=x[:, :3], y=y), "incompatible"),
    ],
)
def test_bad_fit_input_is_refused_before_any_change(make, match):
    x, y = blobs(20)
    model = dense_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    before = model.get_weights()
    with pytest.raises(ValueError, match=match):
        model.fit(**make(x, y), verbose=0)
    assert_unchanged(model, before)
    assert model.optimizer.iterations == 0


def test_categorical_targets_must_match_the_output():
    x, y = blobs(20)
    model = dense_model()
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    with pytest.raises(ValueError, match="shape"):
        model.fit(x, np.eye(3)[y], verbose=0)


# ---------------------------------------------------------------- callbacks and output


def test_early_stopping_stops_and_restores():
    x, y = blobs(40)
    model = dense_model()
    model.compile(optimizer=optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    stop = callbacks.EarlyStopping(monitor="loss", patience=1, restore_best_weights=True)
    history = model.fit(x, y, epochs=10, callbacks=[stop], verbose=0)
    assert len(history.history["loss"]) == 2  # no improvement at all with lr 0


def test_terminate_on_nan():
    x, y = blobs(32)
    x[5, 0] = np.inf
    model = dense_model()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=3, batch_size=8, shuffle=False, callbacks=[callbacks.TerminateOnNaN()], verbose=0)
    assert len(history.history["loss"]) == 1
    assert np.isnan(history.history["loss"][0])  # a NaN loss is reported as NaN


def test_progress_output_is_one_line_per_epoch_off_a_terminal(capsys):
    x, y = blobs(64)
    model = dense_model()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=8, epochs=3, verbose=1)
    out = capsys.readouterr().out
    lines = [l for l in out.splitlines() if "loss" in l]
    assert len(lines) == 3, out
    assert all("accuracy" in l and "8/8" in l for l in lines)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert capsys.readouterr().out == ""


def test_save_and_load_round_trip(tmp_path):
    x, y = blobs(16)
    model = dense_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = gpulayers.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    weights = tmp_path / "m.weights.h5"
    model.save_weights(weights)
    fresh = dense_model()
    fresh.load_weights(weights)
    np.testing.assert_allclose(fresh.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def test_jit_compile_on_the_cpu_trains_as_the_eager_step():
    # No graphs on the CPU: jit_compile=True is accepted, kept in the config, and changes nothing.
    import warnings

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((48, 5)).astype("float32"), rng.integers(0, 3, 48)
    results = []
    for jit in (False, True):
        gpulayers.set_random_seed(0)
        model = Sequential([Input((5,)), Dense(8, activation="relu"), Dropout(0.2), Dense(3, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=jit)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
        assert model.get_compile_config()["jit_compile"] is jit and model._step_graphs is None
        results.append((history.history["loss"], model.get_weights()))
    assert results[0][0] == results[1][0]
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_array_equal(a, b)
