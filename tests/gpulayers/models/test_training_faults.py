"""Faults during training: Ctrl-C between steps, NaN checks naming the layer."""

import os
import signal

import numpy as np
import pytest

import gpulayers
from gpulayers import autodiff, callbacks, config, constraints, metrics, optimizers
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


# ---------------------------------------------------------------- a failed step is undone whole

class _Switch:
    """What a test turns on to make one step fail."""

    on = False


class _RaisingConstraint(constraints.Constraint):
    def __call__(self, w):
        if _Switch.on:
            raise ValueError("constraint refused (simulated)")
        return w


class _FailingSchedule(optimizers.schedules.LearningRateSchedule):
    def __call__(self, step):
        if _Switch.on:
            return 0.01 * 2.0 ** (10000.0 * step)  # Python's ** raises OverflowError
        return 0.01

    def get_config(self):
        return {}


class _FailingMetric(metrics.Mean):
    def update_state(self, y_true, y_pred, sample_weight=None):
        super().update_state(y_pred)
        if _Switch.on:
            raise MemoryError("cudaErrorMemoryAllocation (simulated)")


def _bn_dropout_model(optimizer, metric):
    from gpulayers.layers import BatchNormalization, Dropout

    gpulayers.set_random_seed(0)
    model = Sequential([Input((4,)), Dense(8), BatchNormalization(), Dropout(0.5),
                        Dense(2, activation="softmax", kernel_constraint=_RaisingConstraint())])
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=[metric])
    return model


def _state(model):
    opt = model.optimizer
    inner = getattr(opt, "inner_optimizer", opt)
    scale = (int(opt.step_counter), float(opt.dynamic_scale)) if inner is not opt else None
    return ([w.numpy() for w in model.weights], [np.array(v.numpy()) for v in inner.variables], scale,
            [(m.name, m.result()) for m in model.metrics])


def _assert_same(a, b):
    weights_a, opt_a, scale_a, metrics_a = a
    weights_b, opt_b, scale_b, metrics_b = b
    assert len(weights_a) == len(weights_b) and len(opt_a) == len(opt_b)
    for u, v in zip(weights_a + opt_a, weights_b + opt_b):
        np.testing.assert_array_equal(u, v)
    assert scale_a == scale_b and metrics_a == metrics_b


@pytest.mark.parametrize("fault", ["out_of_memory", "constraint", "schedule", "metric"])
@pytest.mark.parametrize("loss_scale", [False, True])
def test_a_step_failing_after_the_forward_pass_is_undone_whole(monkeypatch, fault, loss_scale):
    def optimizer():
        opt = optimizers.Adam(_FailingSchedule()) if fault == "schedule" else optimizers.Adam(0.01)
        return optimizers.LossScaleOptimizer(opt, initial_scale=4.0, dynamic_growth_steps=2) if loss_scale else opt

    _, x, y = model_and_data()
    model = _bn_dropout_model(optimizer(), _FailingMetric(name="m"))
    model.train_on_batch(x[:8], y[:8])
    model.reset_metrics()
    before = _state(model)
    inner = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    if fault == "out_of_memory":
        update = type(inner)._update_step
        calls = []

        def no_memory_on_the_third(self, g, w, lr, st):
            calls.append(1)
            if len(calls) == 3:
                raise MemoryError("cudaErrorMemoryAllocation (simulated)")
            return update(self, g, w, lr, st)

        monkeypatch.setattr(type(inner), "_update_step", no_memory_on_the_third)
    else:
        monkeypatch.setattr(_Switch, "on", True)
    with pytest.raises((MemoryError, ValueError, OverflowError)):
        model.fit(x[8:16], y[8:16], batch_size=8, epochs=1, shuffle=False, verbose=0)
    _assert_same(_state(model), before)  # moving statistics, dropout's stream, optimizer, metric totals
    monkeypatch.undo()
    model.train_on_batch(x[8:16], y[8:16])  # the retried step
    model.train_on_batch(x[16:24], y[16:24])

    _, x, y = model_and_data()
    twin = _bn_dropout_model(optimizer(), _FailingMetric(name="m"))
    for s in (slice(0, 8), slice(8, 16), slice(16, 24)):
        twin.train_on_batch(x[s], y[s])
    _assert_same(_state(model), _state(twin))


# ---------------------------------------------------------------- refused fit calls change nothing

class _Subclassed(gpulayers.Model):
    def __init__(self):
        super().__init__()
        self.hidden, self.out = Dense(8), Dense(2, activation="softmax")

    def call(self, x):
        return self.out(self.hidden(x))


def _gen(x, y):
    while True:
        yield x, y


@pytest.mark.parametrize("make", [
    lambda: Sequential([Dense(8), Dense(2, activation="softmax")]),
    _Subclassed,
])
@pytest.mark.parametrize("bad", [
    dict(y=np.full(16, 7)),  # labels out of range
    dict(y=np.zeros((16, 3))),  # labels of the wrong shape
    dict(class_weight={0: "x"}),
    dict(validation_data=(np.zeros((4, 4), "float32"), np.full(4, 5))),
    dict(validation_data=(np.zeros((4, 5), "float32"), np.zeros(4, int))),
    dict(generator=True, y=np.full(16, 7)),
])
def test_a_refused_fit_on_an_unbuilt_model_builds_nothing(make, bad):
    model = make()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    host_state = gpulayers.utils.host_rng().bit_generator.state
    x, y = np.zeros((16, 4), "float32"), np.zeros(16, int)
    args = dict(x=x, y=bad.get("y", y), class_weight=bad.get("class_weight"), validation_data=bad.get("validation_data"))
    if bad.get("generator"):
        args = dict(x=_gen(args["x"], args["y"]), steps_per_epoch=2)
    with pytest.raises((ValueError, TypeError)):
        model.fit(**args, verbose=0)
    assert not model.built and model.weights == [] and not model.optimizer.built
    assert all(not layer.built for layer in model._flatten_layers())
    assert gpulayers.utils.host_rng().bit_generator.state == host_state  # no initializer drew
    model.fit(x, y, verbose=0)  # and it trains as a fresh one
    assert model.built and model.optimizer.iterations == 1


@pytest.mark.parametrize("class_weight, match", [
    ({"a": 1}, r"`class_weight`: its keys must be class indices.*'a'"),
    ({0.5: 1}, r"`class_weight`: its keys.*0\.5"),
    ({True: 1}, r"`class_weight`: its keys.*True"),
    ({0: "x"}, r"`class_weight`: its values must be numbers.*class_weight\[0\]='x'"),
    ({0: None}, r"`class_weight`: its values must be numbers.*class_weight\[0\]=None"),
    ([1.0, 2.0], r"`class_weight`: expected a dict"),
])
@pytest.mark.parametrize("how", ["fit", "generator", "train_on_batch"])
def test_bad_class_weight_names_the_argument_and_the_value(class_weight, match, how):
    model, x, y = model_and_data()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    before = model.get_weights()
    with pytest.raises(TypeError, match=match):
        if how == "fit":
            model.fit(x, y, class_weight=class_weight, verbose=0)
        elif how == "generator":
            model.fit(_gen(x[:8], y[:8]), steps_per_epoch=2, class_weight=class_weight, verbose=0)
        else:
            model.train_on_batch(x, y, class_weight=class_weight)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.optimizer.iterations == 0


def test_class_weight_with_numpy_keys_and_values_weighs_as_ints_and_floats():
    model, x, y = model_and_data()
    model.compile(optimizer=optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    twin, _, _ = model_and_data()
    twin.compile(optimizer=optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    model.fit(x, y, class_weight={np.int64(0): np.float32(2.0), 1: 1}, shuffle=False, verbose=0)
    twin.fit(x, y, class_weight={0: 2.0, 1: 1.0}, shuffle=False, verbose=0)
    for a, b in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_validation_data_of_the_wrong_width_names_validation_data():
    model, x, y = model_and_data()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"Invalid value for `validation_data`: validation_data\[0\] does not fit "
                                         r"the model's input:.*\(None, 5\)"):
        model.fit(x, y, validation_data=(np.zeros((4, 5), "float32"), np.zeros(4, int)), verbose=0)
    assert model.optimizer.iterations == 0


@pytest.mark.parametrize("call", ["evaluate", "train_on_batch", "test_on_batch"])
def test_other_refused_calls_on_an_unbuilt_model_build_nothing(call):
    for make in (lambda: Sequential([Dense(8), Dense(2, activation="softmax")]), _Subclassed):
        model = make()
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        with pytest.raises(ValueError, match="sparse labels"):
            getattr(model, call)(np.zeros((16, 4), "float32"), np.full(16, 7), **({"verbose": 0} if call == "evaluate" else {}))
        assert not model.built and model.weights == []
