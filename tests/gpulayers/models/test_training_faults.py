"""Faults during training: Ctrl-C between steps, NaN checks naming the layer."""

import os
import signal

import numpy as np
import pytest

import gpulayers
from gpulayers import autodiff, callbacks, config, optimizers
from gpulayers.layers import Activation, Dense, Input
from gpulayers.models import Sequential


def model_and_data():
    gpulayers.set_random_seed(0)
    model = Sequential([Input((4,)), Dense(8, activation="relu"), Dense(2, activation="softmax")])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype("float32")
    y = rng.integers(0, 2, 64)
    return model, x, y


class InterruptAt(callbacks.Callback):
    """Sends this process a SIGINT as the given training step begins."""

    def __init__(self, step):
        super().__init__()
        self.step, self.seen = step, 0

    def on_train_batch_begin(self, batch, logs=None):
        if self.seen == self.step:
            os.kill(os.getpid(), signal.SIGINT)
        self.seen += 1


def test_ctrl_c_leaves_the_model_at_the_last_completed_step():
    model, x, y = model_and_data()
    reference = Sequential([Input((4,)), Dense(8, activation="relu"), Dense(2, activation="softmax")])
    reference.set_weights(model.get_weights())
    for m in (model, reference):
        m.compile(optimizer=optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    with pytest.raises(KeyboardInterrupt) as info:
        # 8 steps an epoch: the signal arrives as step 11 (epoch 2, step 3) begins.
        model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0, callbacks=[InterruptAt(11)])
    # The step that was running when Ctrl-C came completed: 12 steps in all.
    assert model.optimizer.iterations == 12
    for step in range(12):
        s = slice((step % 8) * 8, (step % 8) * 8 + 8)
        reference.train_on_batch(x[s], y[s])
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    history = info.value.history
    assert history.epoch == [0] and len(history.history["loss"]) == 1  # the epochs completed so far
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_nan_loss_is_reported_and_terminate_on_nan_says_so(capsys):
    model, x, y = model_and_data()
    model.compile(optimizer=optimizers.SGD(1e30), loss="sparse_categorical_crossentropy")
    history = model.fit(x, y, batch_size=8, epochs=5, verbose=0, callbacks=[callbacks.TerminateOnNaN()])
    assert len(history.history["loss"]) == 1
    assert not np.isfinite(history.history["loss"][0])
    assert "invalid loss nan" in capsys.readouterr().out.lower()


@pytest.fixture
def numerics_on():
    config.set_check_numerics(True)
    yield
    config.set_check_numerics(False)


def test_check_numerics_names_the_first_layer(numerics_on):
    model = Sequential([Input((2,)), Dense(3, name="big"), Activation("exponential", name="exp"), Dense(1, name="out")])
    model.set_weights([np.full((2, 3), 100.0), np.zeros(3), np.ones((3, 1)), np.zeros(1)])
    with np.errstate(over="ignore"), pytest.raises(FloatingPointError, match="Layer 'exp' \\(Activation\\).*forward"):
        model(np.ones((4, 2)))
    with pytest.raises(FloatingPointError, match="Layer 'input_layer.*received 8 non-finite.*the data"):
        model(np.full((4, 2), np.nan))


def test_check_numerics_in_the_backward_pass(numerics_on):
    layer = Dense(2, name="d")
    y = layer(np.ones((3, 4)), training=True)
    with pytest.raises(FloatingPointError, match="Layer 'd'.*received 3 non-finite.*backward"):
        autodiff.gradient(y, layer.trainable_weights, output_gradient=np.array([[np.inf, 0.0]] * 3, np.float32))
    y = layer(np.full((3, 4), 1e30), training=True)
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(FloatingPointError, match="Layer 'd'.*produced.*backward"):
        autodiff.gradient(y, layer.trainable_weights, output_gradient=np.full((3, 2), 1e30, np.float32))


def test_check_numerics_is_off_by_default_and_validated():
    assert config.check_numerics() is False
    with pytest.raises(TypeError, match="enabled"):
        config.set_check_numerics("yes")


def test_out_of_memory_names_the_layer_and_undoes_the_step(monkeypatch):
    from gpulayers.layers import BatchNormalization
    from gpulayers.layers.arrays import LayerOutOfMemoryError

    gpulayers.set_random_seed(0)
    model = Sequential([Input((4,)), Dense(8, name="d1"), BatchNormalization(name="bn"), Dense(2, activation="softmax", name="d2")])
    model.compile(optimizer=optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    _, x, y = model_and_data()
    model.train_on_batch(x[:8], y[:8])
    before = model.get_weights()
    d2 = model.get_layer("d2")

    def no_memory(x, kernel):
        def backward(dz, needs):
            raise MemoryError("cudaErrorMemoryAllocation (simulated)")

        return backward

    monkeypatch.setattr(d2, "_dense_backward", no_memory)  # BN's moving statistics have moved by then
    with pytest.raises(LayerOutOfMemoryError, match=r"backward pass of layer 'd2' \(Dense\) on an input of shape \(8, 2\)"):
        model.train_on_batch(x[8:16], y[8:16])
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.optimizer.iterations == 1


def test_out_of_memory_in_the_optimizer_changes_nothing(monkeypatch):
    gpulayers.set_random_seed(0)
    model, x, y = model_and_data()
    model.compile(optimizer=optimizers.Adam(0.01, amsgrad=True), loss="sparse_categorical_crossentropy")
    model.train_on_batch(x[:8], y[:8])
    opt = model.optimizer
    weights = model.get_weights()
    state = {k: [np.array(a) for a in s.values()] for k, (_, s) in opt._state.items()}
    update = type(opt)._update_step
    calls = []

    def no_memory_on_the_third(self, g, w, lr, st):
        calls.append(1)
        if len(calls) == 3:  # two variables are already updated (in Adam's old in-place form, at least)
            raise MemoryError("cudaErrorMemoryAllocation (simulated)")
        return update(self, g, w, lr, st)

    monkeypatch.setattr(type(opt), "_update_step", no_memory_on_the_third)
    with pytest.raises(MemoryError, match=r"optimizer 'adam(_\d+)?' updating variable 'dense_\d+/kernel' of shape \(8, 2\)"):
        model.train_on_batch(x[8:16], y[8:16])
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert opt.iterations == 1
    for k, (_, s) in opt._state.items():
        for a, b in zip(state[k], s.values()):
            np.testing.assert_array_equal(a, b)
    # The retried step is exactly the step that would have run.
    monkeypatch.undo()
    model.train_on_batch(x[8:16], y[8:16])
    gpulayers.set_random_seed(0)
    twin, _, _ = model_and_data()
    twin.compile(optimizer=optimizers.Adam(0.01, amsgrad=True), loss="sparse_categorical_crossentropy")
    twin.train_on_batch(x[:8], y[:8])
    twin.train_on_batch(x[8:16], y[8:16])
    for a, b in zip(twin.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
