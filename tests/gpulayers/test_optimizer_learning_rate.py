"""``optimizer.learning_rate``, ``optimizer.iterations`` and ``optimizer.variables`` as Keras 3 programs use them.

Keras 3.15 (keras/src/optimizers/base_optimizer.py): a float learning rate is a
floatx Variable named ``learning_rate`` (``assign``, ``numpy()``, ``float()``);
with a schedule, ``learning_rate`` is the schedule's value at the current step
and setting a float raises TypeError; ``iterations`` is an integer Variable;
``variables`` lists ``iteration``, ``learning_rate`` (a float rate only), then
the slots. The expected numbers are written out here (floatx rounding of the
rates, hand-computed steps) and, when Keras is importable, compared with Keras.
"""

import math
import zipfile

import h5py
import numpy as np
import pytest

from gpulayers import callbacks, ops
from gpulayers import optimizers as O
from gpulayers.layers import Dense, Input
from gpulayers.models import Sequential, load_model
from gpulayers.optimizers import schedules as S
from gpulayers.variables import Variable
from helpers import keras_or_skip


def var(values, name="kernel", dtype=np.float64):
    return Variable(np.array(values, dtype=dtype), name=name)


def f32(x):
    """The floatx (float32) rounding of a rate, as a Python float: what Keras's Variable reads back."""
    return float(np.float32(x))


# ---------------------------------------------------------------- a float rate: Keras's Variable


def test_a_float_rate_reads_as_keras_learning_rate_variable():
    opt = O.Adam(learning_rate=0.01, name="my_adam")
    lr = opt.learning_rate
    assert isinstance(lr, Variable) and opt.learning_rate is lr  # one Variable, as Keras keeps
    assert (lr.name, lr.path, lr.dtype, lr.shape, lr.trainable) == ("learning_rate", "my_adam/learning_rate",
                                                                    "float32", (), False)
    assert float(lr) == f32(0.01) and float(lr) != 0.01
    value = lr.numpy()
    assert isinstance(value, np.ndarray) and value.dtype == np.float32 and value == np.float32(0.01)
    assert ops.convert_to_numpy(lr) == np.float32(0.01) and np.asarray(lr) == np.float32(0.01)
    assert repr(lr) == "<Variable path=my_adam/learning_rate, shape=(), dtype=float32, value=0.009999999776482582>"


def test_the_variable_works_as_a_number():
    lr = O.SGD(learning_rate=0.5).learning_rate
    assert f"{lr:.3f}" == "0.500" and "%.2f" % lr == "0.50" and format(lr, "g") == "0.5"
    assert round(lr, 1) == 0.5 and math.isclose(lr, 0.5) and bool(lr)
    assert float(lr * 2) == 1.0 and float(2 * lr) == 1.0 and float(lr / 4) == 0.125 and float(lr + 0.25) == 0.75
    assert (lr * 2).dtype == np.float32  # arithmetic gives floatx tensors, as Keras's Variable gives
    assert lr == 0.5 and lr > 0.1 and not lr < 0.1
    assert max(float(lr), 0.1) == 0.5


def test_assign_changes_the_rate_of_the_next_update():
    opt = O.SGD(learning_rate=1.0)
    v = var([0.0])
    lr = opt.learning_rate
    opt.apply([np.array([1.0])], [v])
    lr.assign(0.25)
    opt.apply([np.array([1.0])], [v])
    assert v.numpy()[0] == -1.25  # the exact float: the float64 variable moved by exactly 0.25
    assert float(opt.learning_rate) == 0.25 and opt.get_config()["learning_rate"] == 0.25
    lr.assign(np.float32(0.1))  # a NumPy scalar keeps its own precision
    assert opt._learning_rate == f32(0.1)
    lr.assign_add(0.15)  # floatx arithmetic, as Keras's assign_add
    assert float(lr) == float(np.float32(np.float32(0.1) + np.float32(0.15)))
    lr.assign_sub(lr)
    assert float(lr) == 0.0
    lr.assign(ops.convert_to_tensor(np.float64(0.5)))
    assert float(lr) == 0.5


def test_setting_the_attribute_assigns_the_same_variable():
    opt = O.RMSprop(learning_rate=0.01)
    held = opt.learning_rate
    opt.learning_rate = 0.002  # what callbacks and programs do
    assert held is opt.learning_rate and float(held) == f32(0.002)
    opt.learning_rate = held * 0.5  # a tensor of the old rate
    assert float(held) == f32(np.float32(0.002) * np.float32(0.5))
    opt.learning_rate = np.float32(0.25)
    assert float(held) == 0.25


@pytest.mark.parametrize("bad, error", [
    (-0.1, ValueError), (float("nan"), ValueError), (np.array([0.1, 0.2]), ValueError), ("fast", ValueError),
    (None, ValueError),
])
def test_bad_assignments_name_the_argument_and_change_nothing(bad, error):
    opt = O.Adam(learning_rate=0.01)
    lr = opt.learning_rate
    with pytest.raises(error, match="learning_rate"):
        lr.assign(bad)
    with pytest.raises(error, match="learning_rate"):
        opt.learning_rate = bad
    assert opt._learning_rate == 0.01 and float(lr) == f32(0.01)


def test_a_variable_from_a_schedule_is_refused_as_value():
    opt = O.SGD(0.1)
    with pytest.raises(TypeError, match="holds a float"):
        opt.learning_rate.assign(S.ExponentialDecay(0.1, 10, 0.5))
    assert opt._learning_rate == 0.1


# ---------------------------------------------------------------- schedules and callables


def test_a_schedule_rate_reads_as_its_value_at_the_current_step():
    opt = O.SGD(learning_rate=S.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5))
    v = var([0.0])
    for step in range(3):
        lr = opt.learning_rate
        assert not isinstance(lr, Variable) and lr.shape == () and lr.dtype == np.float32
        assert float(lr) == f32(0.1 * 0.5 ** (step / 2)) and lr.numpy() == np.float32(0.1 * 0.5 ** (step / 2))
        assert f"{lr:.2f}" == f"{0.1 * 0.5 ** (step / 2):.2f}"
        opt.apply([np.array([1.0])], [v])
    assert v.numpy()[0] == pytest.approx(-(0.1 + 0.1 * 0.5**0.5 + 0.05), rel=1e-15)  # exact rates in the steps


def test_a_schedule_rate_cannot_be_set_to_a_float():
    opt = O.Adam(learning_rate=S.ExponentialDecay(0.1, 10, 0.9))
    with pytest.raises(TypeError, match="LearningRateSchedule.*not settable"):
        opt.learning_rate = 0.01
    with pytest.raises(AttributeError):  # the value is a tensor, not a Variable (as Keras's)
        opt.learning_rate.assign(0.01)
    assert isinstance(opt._learning_rate, S.ExponentialDecay)
    opt.learning_rate = S.ExponentialDecay(0.2, 10, 0.9)  # another schedule may replace it
    assert float(opt.learning_rate) == f32(0.2)


def test_callable_rates():
    assert float(O.SGD(learning_rate=lambda: 0.25).learning_rate) == 0.25
    opt = O.SGD(learning_rate=lambda step: 0.1 / (step + 1))
    opt.apply([np.array([1.0])], [var([0.0])])
    assert float(opt.learning_rate) == f32(0.05)
    with pytest.raises(TypeError, match="not settable"):
        opt.learning_rate = 0.1


def test_setting_a_schedule_detaches_the_variable():
    opt = O.Adam(learning_rate=0.01)
    lr = opt.learning_rate
    opt.learning_rate = S.ExponentialDecay(0.1, 10, 0.9)
    assert float(lr) == f32(0.01)  # keeps its last value, as Keras's untracked variable
    assert [v.name for v in opt.variables] == ["iteration"]
    lr.assign(0.5)  # no longer the optimizer's
    assert float(lr) == 0.5 and float(opt.learning_rate) == f32(0.1)


# ---------------------------------------------------------------- iterations


def test_iterations_reads_as_keras_iteration_variable():
    opt = O.SGD(learning_rate=0.1, name="plain")
    it = opt.iterations
    assert isinstance(it, Variable) and opt.iterations is it
    assert (it.name, it.path, it.dtype, it.shape, it.trainable) == ("iteration", "plain/iteration", "int64", (),
                                                                    False)
    v = var([0.0])
    returned = opt.apply_gradients([(np.array([1.0]), v)])
    opt.apply([np.array([1.0])], [v])
    assert int(it) == 2 and it.numpy() == 2 and it.numpy().dtype == np.int64 and it == 2
    assert returned is it and int(returned) == 2  # apply_gradients returns the Variable, as Keras
    assert list(range(it)) == [0, 1] and f"{it:03d}" == "002" and bool(it) and not bool(O.SGD().iterations)


def test_iterations_assign_moves_the_schedule_and_bad_values_change_nothing():
    opt = O.SGD(learning_rate=S.PiecewiseConstantDecay([2], [1.0, 0.5]))
    opt.iterations.assign(5)
    assert int(opt.iterations) == 5 and float(opt.learning_rate) == 0.5
    v = var([0.0])
    opt.apply([np.array([1.0])], [v])
    assert v.numpy()[0] == -0.5 and int(opt.iterations) == 6
    with pytest.raises(ValueError, match="iterations"):
        opt.iterations.assign(-1)
    with pytest.raises(ValueError, match="iterations"):
        opt.iterations = -3
    assert int(opt.iterations) == 6
    opt.iterations = np.int64(1)  # the setter gpulayers keeps takes an int or an integer array
    assert int(opt.iterations) == 1


# ---------------------------------------------------------------- variables


def test_variables_in_keras_order_and_assignable():
    opt = O.SGD(learning_rate=0.1, momentum=0.5, name="sgd_m")
    assert [v.path for v in opt.variables] == ["sgd_m/iteration", "sgd_m/learning_rate"]
    a, b = var([1.0, 2.0], "a"), var([3.0], "b")
    a.path, b.path = "net/d/kernel", "net/d/bias"
    opt.apply([np.array([1.0, 1.0]), np.array([1.0])], [a, b])
    assert [v.path for v in opt.variables] == ["sgd_m/iteration", "sgd_m/learning_rate",
                                               "sgd_m/net_d_kernel_momentum", "sgd_m/net_d_bias_momentum"]
    momentum = opt.variables[2]
    assert momentum.numpy().tolist() == [-0.1, -0.1] and opt.variables[2] is momentum
    momentum.assign(np.array([1.0, -1.0]))  # the next update starts from it
    opt.apply([np.array([0.0, 0.0]), np.array([0.0])], [a, b])
    assert momentum.numpy().tolist() == [0.5, -0.5] and a.numpy().tolist() == [0.9 + 0.5, 1.9 - 0.5]
    with pytest.raises(ValueError, match="shape"):
        momentum.assign(np.zeros(3))
    assert momentum.numpy().tolist() == [0.5, -0.5]
    schedule = O.Adam(learning_rate=S.ExponentialDecay(0.1, 10, 0.9))
    schedule.build([a])
    assert [v.name for v in schedule.variables] == ["iteration", "net_d_kernel_momentum", "net_d_kernel_velocity"]


def test_loss_scale_optimizer_variables_and_rate():
    inner = O.SGD(learning_rate=0.1, momentum=0.9, name="inner_sgd")
    opt = O.LossScaleOptimizer(inner, initial_scale=8.0, name="lso")
    assert opt.learning_rate is inner.learning_rate and opt.iterations is inner.iterations
    assert [v.path for v in opt.variables] == ["lso/iteration", "lso/learning_rate", "inner_sgd/iteration",
                                               "inner_sgd/learning_rate"]
    v = var([1.0], "w", np.float32)
    opt.apply([np.array([8.0], np.float32)], [v])
    assert [v.path for v in opt.variables] == ["lso/iteration", "lso/learning_rate", "lso/step_counter",
                                               "lso/dynamic_scale", "inner_sgd/iteration", "inner_sgd/learning_rate",
                                               "inner_sgd/w_momentum"]
    values = [x.numpy() for x in opt.variables]
    assert [int(values[0]), float(values[1]), int(values[2]), float(values[3]), int(values[4])] == [0, 0.0, 1, 8.0, 1]
    opt.learning_rate = 0.05
    assert float(inner.learning_rate) == f32(0.05)
    opt.variables[3].assign(4.0)  # the scale, as Keras's dynamic_scale variable
    assert float(opt.dynamic_scale) == 4.0
    with pytest.raises(ValueError, match="dynamic_scale"):
        opt.variables[3].assign(0.0)
    assert float(opt.dynamic_scale) == 4.0


KERAS_OPTIMIZERS = {  # id -> (arguments, with the schedule made by the module given)
    "sgd": lambda m: m.optimizers.SGD(0.1),
    "sgd_momentum": lambda m: m.optimizers.SGD(0.1, momentum=0.9),
    "adam_amsgrad": lambda m: m.optimizers.Adam(0.01, amsgrad=True),
    "rmsprop_centered": lambda m: m.optimizers.RMSprop(0.01, momentum=0.5, centered=True),
    "adagrad_schedule": lambda m: m.optimizers.Adagrad(m.optimizers.schedules.ExponentialDecay(0.1, 2, 0.5)),
}


def _gpulayers_as_module():
    import gpulayers

    return gpulayers


@pytest.mark.parametrize("case", sorted(KERAS_OPTIMIZERS))
def test_variables_and_rate_match_keras(case):
    keras = keras_or_skip()
    theirs, mine = KERAS_OPTIMIZERS[case](keras), KERAS_OPTIMIZERS[case](_gpulayers_as_module())
    kmodel = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")], name="net")
    model = Sequential([Input((3,)), Dense(2, name="d")], name="net")
    model.set_weights([np.asarray(w) for w in kmodel.get_weights()])
    rng = np.random.default_rng(0)
    for _ in range(3):
        grads = [rng.standard_normal(tuple(w.shape)).astype(np.float32) for w in model.trainable_weights]
        theirs.apply_gradients(zip([keras.ops.convert_to_tensor(g) for g in grads], kmodel.trainable_variables))
        mine.apply(grads, model.trainable_weights)
        assert float(mine.learning_rate) == float(theirs.learning_rate)
        np.testing.assert_array_equal(mine.learning_rate.numpy(), np.asarray(keras.ops.convert_to_numpy(
            theirs.learning_rate)))
        assert int(mine.iterations) == int(theirs.iterations)
    # the paths without the optimizer's name; Keras's slots also carry the Sequential's name ("net_")
    assert [v.path.split("/", 1)[-1] for v in mine.variables] == \
        [v.path.split("/", 1)[-1].replace("net_", "", 1) for v in theirs.variables]
    for m, k in zip(mine.variables[1:], theirs.variables[1:]):  # Keras's iteration is int32 on JAX and torch
        assert m.dtype == str(k.dtype) and m.shape == tuple(k.shape)
        np.testing.assert_allclose(m.numpy(), np.asarray(k.numpy()), rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- callbacks and files


def _model(optimizer):
    model = Sequential([Input((3,)), Dense(2, activation="softmax")])
    model.set_weights([np.full((3, 2), 0.1, np.float32), np.zeros(2, np.float32)])
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    return model


def _data():
    rng = np.random.default_rng(2)
    return rng.standard_normal((16, 3)).astype(np.float32), rng.integers(0, 2, 16)


def test_learning_rate_scheduler_reads_and_writes_the_variable_as_keras():
    model = _model(O.SGD(learning_rate=0.1))
    x, y = _data()
    history = model.fit(x, y, epochs=3, batch_size=8, verbose=0,
                        callbacks=[callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5)])
    # Keras: lr = float(learning_rate) (float32 value) at each epoch's start; the log reads it back at the end
    want, rate = [], 0.1
    for _ in range(3):
        rate = f32(rate) * 0.5
        want.append(f32(rate))
    assert history.history["learning_rate"] == want
    assert float(model.optimizer.learning_rate) == want[-1]


def test_reduce_lr_on_plateau_reduces_the_variable():
    model = _model(O.Adam(learning_rate=0.01))
    x, y = _data()
    held = model.optimizer.learning_rate
    reduce = callbacks.ReduceLROnPlateau(monitor="loss", mode="max", factor=0.5, patience=0)  # loss falls: no gain
    history = model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[reduce])
    # each epoch logs the rate it trained with; from the second on, the rate is then halved (float32 reads)
    half, quarter = f32(f32(0.01) * 0.5), f32(f32(f32(0.01) * 0.5) * 0.5)
    assert history.history["learning_rate"] == [f32(0.01), f32(0.01), half]
    assert float(held) == quarter and float(model.optimizer.learning_rate) == quarter


def test_callbacks_match_keras():
    keras = keras_or_skip()
    x, y = _data()
    results = []
    for module, model in ((keras, None), (_gpulayers_as_module(), None)):
        model = module.Sequential([module.Input((3,)), module.layers.Dense(2, activation="softmax")])
        model.set_weights([np.full((3, 2), 0.1, np.float32), np.zeros(2, np.float32)])
        model.compile(optimizer=module.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
        history = model.fit(x, y, epochs=4, batch_size=8, verbose=0, shuffle=False, callbacks=[
            module.callbacks.LearningRateScheduler(lambda epoch, lr: lr if epoch < 1 else lr * 0.7),
            module.callbacks.ReduceLROnPlateau(monitor="loss", mode="max", factor=0.5, patience=0),
        ])
        results.append((history.history["learning_rate"], float(model.optimizer.learning_rate)))
    assert results[1] == results[0]


def test_tensorboard_steps_per_second_reads_the_iterations(tmp_path):
    model = _model(O.SGD(learning_rate=0.1))
    x, y = _data()
    model.fit(x, y, epochs=2, batch_size=8, verbose=0,
              callbacks=[callbacks.TensorBoard(log_dir=str(tmp_path), write_steps_per_second=True)])
    assert int(model.optimizer.iterations) == 4


def test_an_assigned_rate_is_saved_and_loaded(tmp_path):
    model = _model(O.Adam(learning_rate=0.01))
    x, y = _data()
    model.train_on_batch(x, y)
    model.optimizer.learning_rate.assign(0.02)
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as z, h5py.File(z.open("model.weights.h5"), "r") as h5:
        saved = np.array(h5["optimizer/vars/1"])
        assert int(np.array(h5["optimizer/vars/0"])) == 1
    assert saved.dtype == np.float32 and saved == np.float32(0.02)
    loaded = load_model(tmp_path / "m.keras")
    assert float(loaded.optimizer.learning_rate) == f32(0.02) and int(loaded.optimizer.iterations) == 1
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables, strict=True):
        assert a.path.split("/", 1)[-1] == b.path.split("/", 1)[-1]
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_set_weights_takes_the_variables_of_another_optimizer():
    # Keras's optimizer.set_weights: every optimizer variable (iterations, learning rate, slots), in order.
    from gpulayers.variables import Variable

    def stepped(opt, steps):
        w = Variable(np.array([1.0, -2.0], np.float32), name="w")
        opt.build([w])
        for i in range(steps):
            opt.apply([np.array([0.5, 0.25 * (i + 1)], np.float32)], [w])
        return w

    a = O.Adam(learning_rate=0.01)
    wa = stepped(a, 3)
    b = O.Adam(learning_rate=0.5)
    wb = stepped(b, 0)
    wb.assign(wa.numpy())
    b.set_weights([v.numpy() for v in a.variables])
    assert int(b.iterations) == 3 and float(b.learning_rate) == pytest.approx(0.01)
    for opt, w in ((a, wa), (b, wb)):
        opt.apply([np.array([0.1, 0.2], np.float32)], [w])
    np.testing.assert_array_equal(wa.numpy(), wb.numpy())
    with pytest.raises(ValueError, match="not compatible with provided weight shape"):
        b.set_weights([v.numpy() for v in a.variables][:-1] + [np.zeros(3, np.float32)])
    with pytest.raises(ValueError, match="has 4 variables"):
        b.set_weights([np.int64(1)])
    with pytest.raises(ValueError, match="has not yet been built"):
        O.SGD().set_weights([])
