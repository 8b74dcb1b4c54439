"""Ctrl-C during fit: raised once the running step has finished, at every moment of the loop, never lost."""

import os
import signal

import numpy as np
import pytest

import gpulayers
from gpulayers import callbacks, optimizers
from gpulayers.layers import Dense, Input
from gpulayers.models import Sequential

EPOCHS, STEPS = 2, 4  # 8 samples a step


def _model():
    gpulayers.set_random_seed(0)
    model = Sequential([Input((4,)), Dense(8, activation="relu"), Dense(2, activation="softmax")])
    model.compile(optimizer=optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    return model


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((8 * STEPS, 4)).astype("float32"), rng.integers(0, 2, 8 * STEPS)


class _InterruptAt(callbacks.Callback):
    """Sends this process a SIGINT at the given hook's ``at``-th call, noting the weights then."""

    def __init__(self, hook, at):
        super().__init__()
        self.hook, self.at, self.calls, self.weights = hook, at, 0, None
        setattr(self, hook, self._maybe_interrupt)

    def _maybe_interrupt(self, *args, **kwargs):
        if self.calls == self.at:
            self.weights = self.model.get_weights()
            self.iterations = int(self.model.optimizer.iterations)
            os.kill(os.getpid(), signal.SIGINT)
        self.calls += 1


# (hook, its call that interrupts, the epochs completed then, and whether the interrupted step completes)
MOMENTS = {
    "last_step": ("on_train_batch_begin", EPOCHS * STEPS - 1, EPOCHS - 1, True),
    "last_step_callbacks": ("on_train_batch_end", EPOCHS * STEPS - 1, EPOCHS - 1, False),
    "final_validation": ("on_test_batch_begin", EPOCHS * 2 - 1, EPOCHS - 1, False),
    "last_epoch_callbacks": ("on_epoch_end", EPOCHS - 1, EPOCHS, False),
    "earlier_validation": ("on_test_batch_begin", 0, 0, False),
}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_ctrl_c_at_every_moment_of_fit_is_raised_at_the_last_completed_step(moment):
    hook, at, epochs_done, step_completes = MOMENTS[moment]
    model, (x, y) = _model(), _data()
    handler = signal.getsignal(signal.SIGINT)
    interrupt = _InterruptAt(hook, at)
    with pytest.raises(KeyboardInterrupt) as info:
        model.fit(x, y, batch_size=8, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=[interrupt],
                  validation_data=(x[:16], y[:16]), validation_batch_size=8)
    assert info.value.history.epoch == list(range(epochs_done))  # the epochs completed
    steps = interrupt.iterations + (1 if step_completes else 0)
    assert model.optimizer.iterations == steps  # no step after the interrupt
    twin = _model()
    for step in range(steps):
        s = slice((step % STEPS) * 8, (step % STEPS) * 8 + 8)
        twin.train_on_batch(x[s], y[s])
    for a, b in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert signal.getsignal(signal.SIGINT) is handler


def test_the_handler_before_fit_is_back_after_it_and_a_users_handler_is_left_alone():
    model, (x, y) = _model(), _data()
    seen = []

    def mine(signum, frame):
        seen.append(signum)

    previous = signal.signal(signal.SIGINT, mine)
    try:
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[_InterruptAt("on_train_batch_begin", 1)])
        assert signal.getsignal(signal.SIGINT) is mine and seen == [signal.SIGINT]  # the user's handler ran
        assert model.optimizer.iterations == STEPS
    finally:
        signal.signal(signal.SIGINT, previous)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert signal.getsignal(signal.SIGINT) is previous
    with pytest.raises(ValueError):
        model.fit(x, y[:3], verbose=0)
    assert signal.getsignal(signal.SIGINT) is previous


def test_a_second_ctrl_c_stops_inside_the_step_and_the_step_is_undone(monkeypatch):
    model, (x, y) = _model(), _data()
    model.train_on_batch(x[:8], y[:8])
    before = model.get_weights()
    opt = model.optimizer
    update = type(opt)._update_step

    def interrupted_twice(self, g, w, lr, st):
        os.kill(os.getpid(), signal.SIGINT)  # held
        os.kill(os.getpid(), signal.SIGINT)  # raises here, in the middle of the update
        return update(self, g, w, lr, st)

    monkeypatch.setattr(type(opt), "_update_step", interrupted_twice)
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert opt.iterations == 1 and signal.getsignal(signal.SIGINT) is signal.default_int_handler
