"""Tests for gpulayers.callbacks against Keras 3's hooks, arguments and behaviour.

A small fake model stands in for a trained model (weights, optimizer,
stop_training, save / save_weights), and ``run_fit`` drives a CallbackList the
way the training loop does, so nothing here depends on the real ``fit``.
"""

import io
import math
import os
import warnings

import numpy as np
import pytest

from gpulayers import callbacks as C
from gpulayers import progbar as P


class FakeOptimizer:
    def __init__(self, learning_rate=0.1):
        self.learning_rate = learning_rate


class FakeModel:
    """The attributes callbacks use: weights, optimizer, stop_training, history, save."""

    def __init__(self, learning_rate=0.1, metrics_names=("loss",)):
        self.weights = [np.zeros(2), np.zeros(1)]
        self.optimizer = FakeOptimizer(learning_rate)
        self.stop_training = False
        self.history = None
        self.metrics_names = list(metrics_names)
        self.saved = []  # (kind, path)

    def get_weights(self):
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        self.weights = [np.array(w) for w in weights]

    def mark(self, epoch):
        """Give the weights a value that identifies ``epoch``."""
        self.weights = [np.full(2, float(epoch)), np.full(1, float(epoch))]

    def marked_epoch(self):
        return int(self.weights[0][0])

    def save(self, filepath):
        self.saved.append(("model", filepath))
        with open(filepath, "w") as f:
            f.write("model")

    def save_weights(self, filepath):
        self.saved.append(("weights", filepath))
        with open(filepath, "w") as f:
            f.write("weights")


def run_fit(callbacks, model, epoch_logs, steps=2, batch_logs=None, add_history=True, verbose=0, validation=False):
    """Drive a CallbackList like ``fit``; returns the number of epochs run.

    ``epoch_logs[i]`` are epoch i's logs; the model's weights are marked with
    the epoch number before its end-of-epoch hooks run.
    """
    epochs = len(epoch_logs)
    cbs = C.CallbackList(
        callbacks, add_history=add_history, add_progbar=verbose != 0, model=model, verbose=verbose, epochs=epochs, steps=steps
    )
    model.stop_training = False
    cbs.on_train_begin()
    logs = {}
    run = 0
    for epoch in range(epochs):
        cbs.on_epoch_begin(epoch)
        for step in range(steps):
            cbs.on_train_batch_begin(step)
            logs = dict(batch_logs(epoch, step)) if batch_logs else {"loss": 1.0}
            cbs.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        if validation:
            cbs.on_test_begin()
            for step in range(steps):
                cbs.on_test_batch_begin(step)
                cbs.on_test_batch_end(step, {"loss": 0.5})
            cbs.on_test_end({"loss": 0.5})
        model.mark(epoch)
        run += 1
        cbs.on_epoch_end(epoch, dict(epoch_logs[epoch]))
        if model.stop_training:
            break
    cbs.on_train_end(logs)
    return run


def loss_logs(values, key="val_loss"):
    return [{key: v} for v in values]


class Recorder(C.Callback):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __getattribute__(self, name):
        attr = object.__getattribute__(self, name)
        if name.startswith("on_") and callable(attr):
            calls = object.__getattribute__(self, "calls")

            def record(*args, **kwargs):
                calls.append((name, *args))
                return attr(*args, **kwargs)

            return record
        return attr


# ---------------------------------------------------------------- Callback / CallbackList


def test_hook_order_through_callbacklist():
    rec = Recorder()
    model = FakeModel()
    cbs = C.CallbackList([rec], model=model, verbose=0, epochs=1, steps=1)
    cbs.on_train_begin()
    cbs.on_epoch_begin(0)
    cbs.on_train_batch_begin(0)
    cbs.on_train_batch_end(0, {"loss": 1.0})
    cbs.on_test_begin()
    cbs.on_test_batch_begin(0)
    cbs.on_test_batch_end(0, {"loss": 2.0})
    cbs.on_test_end({"loss": 2.0})
    cbs.on_epoch_end(0, {"loss": 1.0, "val_loss": 2.0})
    cbs.on_train_end({"loss": 1.0})
    cbs.on_predict_begin()
    cbs.on_predict_batch_begin(0)
    cbs.on_predict_batch_end(0, {"outputs": None})
    cbs.on_predict_end()
    names = [call[0] for call in rec.calls]
    assert names == [
        "on_train_begin",
        "on_epoch_begin",
        "on_train_batch_begin",
        "on_batch_begin",  # Keras's backwards-compatible alias, called by the base hook
        "on_train_batch_end",
        "on_batch_end",
        "on_test_begin",
        "on_test_batch_begin",
        "on_test_batch_end",
        "on_test_end",
        "on_epoch_end",
        "on_train_end",
        "on_predict_begin",
        "on_predict_batch_begin",
        "on_predict_batch_end",
        "on_predict_end",
    ]
    assert rec.calls[0] == ("on_train_begin", {})
    assert rec.calls[2] == ("on_train_batch_begin", 0)
    assert rec.calls[10] == ("on_epoch_end", 0, {"loss": 1.0, "val_loss": 2.0})


def test_callbacklist_sets_model_and_params():
    rec = C.Callback()
    model = FakeModel()
    cbs = C.CallbackList([rec], model=model, verbose=1, epochs=3, steps=7)
    assert rec.model is model and cbs.model is model
    assert rec.params == {"verbose": 1, "epochs": 3, "steps": 7}
    bare = C.Callback()
    C.CallbackList([bare])
    assert bare.model is None and bare.params is None


def test_callbacklist_adds_history_and_progbar_once():
    model = FakeModel()
    cbs = C.CallbackList(None, add_history=True, add_progbar=True, model=model, verbose=1, epochs=1, steps=1)
    assert [type(cb) for cb in cbs.callbacks] == [C.History, C.ProgbarLogger]
    assert model.history is cbs.callbacks[0]
    mine = C.History()
    cbs = C.CallbackList([mine], add_history=True, model=model)
    assert cbs.callbacks == [mine] and model.history is mine
    assert C.CallbackList([], add_history=False).callbacks == []


def test_callbacklist_flattens_and_appends():
    a, b, c, d = (C.Callback() for _ in range(4))
    model = FakeModel()
    cbs = C.CallbackList([a, [b, (c,)]], model=model, verbose=0, epochs=1, steps=1)
    assert cbs.callbacks == [a, b, c]
    cbs.append(d)
    assert cbs.callbacks[-1] is d and d.model is model and d.params["epochs"] == 1
    assert C.CallbackList(a).callbacks == [a]


@pytest.mark.parametrize("bad", ["history", [C.Callback(), 3], 5])
def test_callbacklist_rejects_non_callbacks(bad):
    with pytest.raises(TypeError, match="callbacks"):
        C.CallbackList(bad)


def test_batch_logs_become_sorted_python_floats():
    seen = []
    cb = C.LambdaCallback(on_train_batch_end=lambda batch, logs: seen.append(logs))
    cbs = C.CallbackList([cb])
    cbs.on_train_batch_end(0, {"loss": np.float32(0.5), "b": {"inner": np.array(2.0)}, "acc": 1, "name": "x"})
    (logs,) = seen
    assert list(logs) == ["acc", "inner", "loss", "name"]
    assert logs == {"acc": 1.0, "inner": 2.0, "loss": 0.5, "name": "x"}
    assert all(type(logs[k]) is float for k in ("acc", "inner", "loss"))


def test_epoch_logs_are_shared_and_zero_d_values_become_floats():
    seen = []
    first = C.LambdaCallback(on_epoch_end=lambda epoch, logs: logs.update(extra=1.0))
    second = C.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(dict(logs)))
    logs = {"loss": np.float64(0.25), "val_loss": np.array(0.5, dtype=np.float32)}
    C.CallbackList([first, second]).on_epoch_end(0, logs)
    assert seen == [{"loss": 0.25, "val_loss": 0.5, "extra": 1.0}]
    assert type(logs["val_loss"]) is float  # in place, so the caller sees floats too


def test_logs_none_becomes_empty_dict():
    rec = Recorder()
    cbs = C.CallbackList([rec])
    cbs.on_epoch_begin(0)
    cbs.on_test_end()
    assert rec.calls == [("on_epoch_begin", 0, {}), ("on_test_end", {})]


def test_old_batch_hook_names_still_work():
    calls = []

    class Old(C.Callback):
        def on_batch_end(self, batch, logs=None):
            calls.append((batch, logs["loss"]))

    C.CallbackList([Old()]).on_train_batch_end(4, {"loss": 2})
    assert calls == [(4, 2.0)]


# ---------------------------------------------------------------- History


def test_history_records_every_epoch():
    model = FakeModel()
    logs = [{"loss": 1.0, "val_loss": 2.0}, {"loss": 0.5, "val_loss": 1.5}, {"loss": 0.25, "val_loss": 1.0}]
    run_fit([], model, logs)
    history = model.history
    assert isinstance(history, C.History)
    assert history.epoch == [0, 1, 2]
    assert history.history == {"loss": [1.0, 0.5, 0.25], "val_loss": [2.0, 1.5, 1.0]}
    assert history.params == {"verbose": 0, "epochs": 3, "steps": 2}


def test_history_reused_keeps_growing_like_keras():
    model = FakeModel()
    history = C.History()
    run_fit([history], model, loss_logs([1.0, 2.0], "loss"))
    run_fit([history], model, loss_logs([3.0], "loss"))
    assert history.epoch == [0]
    assert history.history == {"loss": [1.0, 2.0, 3.0]}


# ---------------------------------------------------------------- EarlyStopping


@pytest.mark.parametrize("patience", [0, 1, 2, 3])
def test_early_stopping_patience(patience):
    # Keras 3's own case: stops at epoch max(patience, 1) + 2.
    losses = [10.0, 9.0, 8.0, 9.0, 8.9, 8.8, 8.7, 8.6, 8.5]
    stopper = C.EarlyStopping(monitor="loss", patience=patience)
    model = FakeModel()
    run = run_fit([stopper], model, loss_logs(losses, "loss"))
    assert stopper.stopped_epoch == max(patience, 1) + 2
    assert run == stopper.stopped_epoch + 1
    assert stopper.best == 8.0 and stopper.best_epoch == 2


def test_early_stopping_never_stops_at_epoch_zero():
    stopper = C.EarlyStopping(monitor="loss", patience=0, baseline=0.1)
    assert run_fit([stopper], FakeModel(), loss_logs([1.0, 1.0], "loss")) == 2
    assert stopper.stopped_epoch == 1


def test_early_stopping_restores_best_weights_when_stopping():
    stopper = C.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    model = FakeModel()
    run = run_fit([stopper], model, loss_logs([0.2, 0.15, 0.1, 0.11, 0.12, 0.05]))
    assert run == 5 and model.stop_training
    assert model.marked_epoch() == 2


def test_early_stopping_restores_best_weights_without_stopping():
    # Keras 3 restores at the end of training whether or not it stopped early.
    stopper = C.EarlyStopping(monitor="val_loss", patience=10, restore_best_weights=True)
    model = FakeModel()
    assert run_fit([stopper], model, loss_logs([0.5, 0.2, 0.3, 0.4])) == 4
    assert not model.stop_training and stopper.stopped_epoch == 0
    assert model.marked_epoch() == 1


def test_early_stopping_restores_when_another_callback_stops():
    stopper = C.EarlyStopping(monitor="val_loss", patience=5, baseline=0.5, restore_best_weights=True)
    other = C.LambdaCallback(on_epoch_end=lambda epoch, logs: setattr(model, "stop_training", epoch == 3))
    model = FakeModel()
    assert run_fit([stopper, other], model, loss_logs([0.9, 0.8, 0.7, 0.71, 0.72, 0.73])) == 4
    assert model.marked_epoch() == 2


def test_early_stopping_without_restore_keeps_last_weights():
    stopper = C.EarlyStopping(monitor="val_loss", patience=1)
    model = FakeModel()
    assert run_fit([stopper], model, loss_logs([0.1, 0.2, 0.3])) == 2
    assert model.marked_epoch() == 1


def test_early_stopping_baseline():
    # No epoch beats the baseline: the wait is never reset, training stops after
    # `patience` epochs and the best epoch (even above the baseline) is restored.
    stopper = C.EarlyStopping(monitor="val_loss", patience=5, baseline=0.5, restore_best_weights=True)
    model = FakeModel()
    assert run_fit([stopper], model, loss_logs([0.9, 0.8, 0.7, 0.71, 0.72, 0.73])) == 5
    assert model.marked_epoch() == 2 and stopper.best == 0.7
    # Beating the baseline resets the wait as usual.
    stopper = C.EarlyStopping(monitor="val_loss", patience=2, baseline=0.5)
    assert run_fit([stopper], FakeModel(), loss_logs([0.9, 0.4, 0.3, 0.35, 0.36, 0.2])) == 5


def test_early_stopping_start_from_epoch():
    losses = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]  # gets worse from the start
    stopper = C.EarlyStopping(monitor="loss", patience=2, start_from_epoch=3)
    run = run_fit([stopper], FakeModel(), loss_logs(losses, "loss"))
    # Epochs 0-2 are ignored; epoch 3 sets the best, 4 and 5 do not improve.
    assert run == 6 and stopper.stopped_epoch == 5 and stopper.best == 4.0
    stopper = C.EarlyStopping(monitor="loss", patience=0, start_from_epoch=2, restore_best_weights=True)
    model = FakeModel()
    assert run_fit([stopper], model, loss_logs(losses, "loss")) == 4
    assert model.marked_epoch() == 2


def test_early_stopping_min_delta():
    losses = [1.0, 0.95, 0.92, 0.9, 0.89]
    strict = C.EarlyStopping(monitor="loss", patience=1, min_delta=0.1)
    assert run_fit([strict], FakeModel(), loss_logs(losses, "loss")) == 2  # 0.95 is not 0.1 better
    assert strict.best == 1.0
    sign = C.EarlyStopping(monitor="loss", patience=1, min_delta=-0.1)  # |min_delta|, as Keras
    assert sign.min_delta == 0.1
    loose = C.EarlyStopping(monitor="loss", patience=1, min_delta=0.01)
    assert run_fit([loose], FakeModel(), loss_logs(losses, "loss")) == 5
    rising = C.EarlyStopping(monitor="acc", patience=1, min_delta=0.05)
    assert run_fit([rising], FakeModel(), loss_logs([0.5, 0.6, 0.62, 0.9], "acc")) == 3


class FakeMetric:
    def __init__(self, name, direction):
        self.name = name
        self._direction = direction


@pytest.mark.parametrize(
    "monitor, mode, expected",
    [
        ("val_loss", "auto", "min"),
        ("loss", "auto", "min"),
        ("val_loss", "max", "max"),
        ("accuracy", "min", "min"),
        ("acc", "auto", "max"),
        ("val_accuracy", "auto", "max"),
        ("auc", "auto", "max"),
        ("val_auc", "auto", "max"),
        ("f1_score", "auto", "max"),
        ("val_mse", "auto", "min"),
        ("hinge", "auto", "min"),
        ("mean_absolute_error", "auto", "min"),
        ("dense_1_accuracy", "auto", "max"),
        ("output_loss", "auto", "min"),
        ("score", "auto", "max"),  # from the model's metric object, as Keras 3
        ("val_error_rate", "auto", "min"),
    ],
)
def test_mode_inference(monitor, mode, expected):
    model = FakeModel()
    model.metrics = [FakeMetric("score", "up"), type("Container", (), {"metrics": [FakeMetric("error_rate", "down")]})()]
    stopper = C.EarlyStopping(monitor=monitor, mode=mode)
    stopper.set_model(model)
    stopper.on_train_begin()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stopper.on_epoch_end(0, {})
    assert stopper._direction == expected


def test_mode_auto_unknown_metric_raises():
    stopper = C.EarlyStopping(monitor="wobble")
    with pytest.raises(ValueError, match="monitor='wobble'.*mode='max'"):
        run_fit([stopper], FakeModel(), loss_logs([1.0], "wobble"))
    assert run_fit([C.EarlyStopping(monitor="wobble", mode="max")], FakeModel(), loss_logs([1.0], "wobble")) == 1


def test_early_stopping_missing_monitor_warns():
    stopper = C.EarlyStopping(monitor="val_loss", patience=0)
    with pytest.warns(UserWarning, match="`val_loss`.*Available metrics are: loss,acc"):
        run = run_fit([stopper], FakeModel(), [{"loss": 1.0, "acc": 0.5}] * 3)
    assert run == 3


def test_early_stopping_is_reusable():
    stopper = C.EarlyStopping(monitor="loss", patience=1)
    assert run_fit([stopper], FakeModel(), loss_logs([0.1, 0.2, 0.3], "loss")) == 2
    # A second run must not compare against the first run's best (0.1).
    assert run_fit([stopper], FakeModel(), loss_logs([5.0, 4.0, 3.0], "loss")) == 3
    assert stopper.stopped_epoch == 0 and stopper.best == 3.0


def test_early_stopping_verbose_messages(capsys):
    stopper = C.EarlyStopping(monitor="loss", patience=1, verbose=1, restore_best_weights=True)
    run_fit([stopper], FakeModel(), loss_logs([0.1, 0.2, 0.3], "loss"))
    out = capsys.readouterr().out
    assert "Epoch 2: early stopping" in out
    assert "Restoring model weights from the end of the best epoch: 1." in out


@pytest.mark.parametrize(
    "kwargs, exc, text",
    [
        ({"patience": -1}, ValueError, "patience=-1"),
        ({"patience": 1.5}, ValueError, "patience=1.5"),
        ({"monitor": None}, TypeError, "monitor=None"),
        ({"min_delta": "0.1"}, ValueError, "min_delta='0.1'"),
        ({"baseline": "low"}, ValueError, "baseline='low'"),
        ({"start_from_epoch": -2}, ValueError, "start_from_epoch=-2"),
        ({"verbose": -1}, ValueError, "verbose=-1"),
    ],
)
def test_early_stopping_argument_errors(kwargs, exc, text):
    with pytest.raises(exc, match=text.replace(".", r"\.")):
        C.EarlyStopping(**kwargs)


# ---------------------------------------------------------------- ModelCheckpoint


def test_checkpoint_writes_every_epoch(tmp_path):
    model = FakeModel()
    cb = C.ModelCheckpoint(str(tmp_path / "ckpt-{epoch:02d}.keras"))
    run_fit([cb], model, loss_logs([0.3, 0.2, 0.4]))
    assert sorted(os.listdir(tmp_path)) == ["ckpt-01.keras", "ckpt-02.keras", "ckpt-03.keras"]
    assert [kind for kind, _ in model.saved] == ["model"] * 3


def test_checkpoint_save_best_only(tmp_path):
    model = FakeModel()
    cb = C.ModelCheckpoint(str(tmp_path / "best-{epoch}.keras"), save_best_only=True)
    run_fit([cb], model, loss_logs([0.3, 0.2, 0.4, 0.25, 0.1]))
    assert sorted(os.listdir(tmp_path)) == ["best-1.keras", "best-2.keras", "best-5.keras"]
    assert cb.best == 0.1


def test_checkpoint_save_best_only_max_mode_and_threshold(tmp_path):
    model = FakeModel()
    cb = C.ModelCheckpoint(
        str(tmp_path / "m{epoch}.keras"), monitor="val_accuracy", save_best_only=True, initial_value_threshold=0.5
    )
    run_fit([cb], model, loss_logs([0.4, 0.6, 0.55, 0.7], "val_accuracy"))
    assert sorted(os.listdir(tmp_path)) == ["m2.keras", "m4.keras"]


def test_checkpoint_best_overwrites_one_file(tmp_path):
    model = FakeModel()
    path = tmp_path / "best.keras"
    cb = C.ModelCheckpoint(path, save_best_only=True)  # a PathLike works too
    run_fit([cb], model, loss_logs([0.3, 0.2, 0.4]))
    assert os.listdir(tmp_path) == ["best.keras"]
    assert model.saved == [("model", str(path))] * 2


def test_checkpoint_filename_from_logs(tmp_path):
    model = FakeModel()
    cb = C.ModelCheckpoint(str(tmp_path / "sub" / "{epoch:02d}-{val_loss:.2f}-{acc:.1%}.keras"))
    run_fit([cb], model, [{"val_loss": 0.12345, "acc": 0.5}, {"val_loss": 0.1, "acc": 0.75}])
    assert sorted(os.listdir(tmp_path / "sub")) == ["01-0.12-50.0%.keras", "02-0.10-75.0%.keras"]


def test_checkpoint_weights_only(tmp_path):
    model = FakeModel()
    cb = C.ModelCheckpoint(str(tmp_path / "w{epoch}.weights.h5"), save_weights_only=True)
    run_fit([cb], model, loss_logs([0.3, 0.2]))
    assert model.saved == [("weights", str(tmp_path / "w1.weights.h5")), ("weights", str(tmp_path / "w2.weights.h5"))]


@pytest.mark.parametrize(
    "filepath, weights_only, text",
    [
        ("model.h5", False, r"must end in `\.keras`"),
        ("model.weights.h5", False, r"must end in `\.keras`"),
        ("model", False, r"must end in `\.keras`"),
        ("model.keras", True, r"must end in `\.weights\.h5`"),
        ("model.h5", True, r"must end in `\.weights\.h5`"),
    ],
)
def test_checkpoint_extension_errors(filepath, weights_only, text):
    with pytest.raises(ValueError, match=text + ".*filepath='" + filepath.replace(".", r"\.")):
        C.ModelCheckpoint(filepath, save_weights_only=weights_only)


def test_checkpoint_missing_format_key(tmp_path):
    cb = C.ModelCheckpoint(str(tmp_path / "{epoch}-{val_acc:.2f}.keras"))
    with pytest.raises(ValueError, match="'val_acc'.*val_loss.*filepath="):
        run_fit([cb], FakeModel(), loss_logs([0.3]))


def test_checkpoint_save_best_only_without_monitor_warns_and_saves(tmp_path):
    model = FakeModel()
    cb = C.ModelCheckpoint(str(tmp_path / "m.keras"), save_best_only=True)
    with pytest.warns(UserWarning, match="val_loss"):
        run_fit([cb], model, loss_logs([0.3], "loss"))
    assert len(model.saved) == 1


def test_checkpoint_save_freq_batches(tmp_path):
    model = FakeModel()
    cb = C.ModelCheckpoint(str(tmp_path / "e{epoch}-b{batch}.keras"), save_freq=3)
    run_fit([cb], model, loss_logs([0.3, 0.2]), steps=4)  # 8 batches: saves after the 3rd and 6th
    assert sorted(os.listdir(tmp_path)) == ["e1-b3.keras", "e2-b2.keras"]


def test_checkpoint_verbose_messages(tmp_path, capsys):
    cb = C.ModelCheckpoint(str(tmp_path / "m.keras"), save_best_only=True, verbose=1)
    run_fit([cb], FakeModel(), loss_logs([0.3, 0.4]))
    out = capsys.readouterr().out
    assert "Epoch 1: val_loss improved from inf to 0.30000, saving model to" in out
    assert "Epoch 2: val_loss did not improve from 0.30000" in out


def test_checkpoint_directory_path_is_an_error(tmp_path):
    (tmp_path / "d.keras").mkdir()
    cb = C.ModelCheckpoint(str(tmp_path / "d.keras"))
    with pytest.raises(IsADirectoryError, match="directory"):
        run_fit([cb], FakeModel(), loss_logs([0.3]))


@pytest.mark.parametrize(
    "kwargs, exc, text",
    [
        ({"save_freq": "batch"}, ValueError, "save_freq='batch'"),
        ({"save_freq": 0}, ValueError, "save_freq=0"),
        ({"filepath": 3}, TypeError, "filepath=3"),
        ({"filepath": "m{epoch.keras"}, ValueError, "filepath="),
        ({"initial_value_threshold": "x"}, ValueError, "initial_value_threshold='x'"),
    ],
)
def test_checkpoint_argument_errors(kwargs, exc, text):
    kwargs = {"filepath": "m.keras", **kwargs}
    with pytest.raises(exc, match=text):
        C.ModelCheckpoint(**kwargs)


# ---------------------------------------------------------------- ReduceLROnPlateau


def test_reduce_lr_factor():
    model = FakeModel(learning_rate=0.1)
    cb = C.ReduceLROnPlateau(monitor="val_loss", patience=1, factor=0.1, min_delta=100)
    run_fit([cb], model, loss_logs([1.0, 1.0]))
    assert model.optimizer.learning_rate == pytest.approx(0.01)
    assert isinstance(model.optimizer.learning_rate, float)
    # "learning_rate" (before the change) is in the epoch logs, so History has it.
    assert model.history.history["learning_rate"] == [0.1, 0.1]


def test_reduce_lr_waits_for_patience():
    model = FakeModel(learning_rate=1.0)
    cb = C.ReduceLROnPlateau(monitor="loss", patience=2, factor=0.5)
    run_fit([cb], model, loss_logs([1.0, 0.5, 0.6, 0.4, 0.45, 0.46, 0.47], "loss"))
    # epoch 3 improves; 4 and 5 do not -> reduce at 5; 6 is the first of a new wait.
    assert model.history.history["learning_rate"] == [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5]
    assert model.optimizer.learning_rate == 0.5


def test_reduce_lr_cooldown():
    model = FakeModel(learning_rate=0.1)
    cb = C.ReduceLROnPlateau(monitor="val_loss", patience=1, factor=0.1, min_delta=100, cooldown=2)
    run_fit([cb], model, loss_logs([1.0, 1.0, 1.0, 1.0]))
    assert model.optimizer.learning_rate == pytest.approx(0.001)  # reduced at epochs 1 and 3
    assert model.history.history["learning_rate"] == pytest.approx([0.1, 0.1, 0.01, 0.01])


def test_reduce_lr_min_lr():
    model = FakeModel(learning_rate=0.1)
    cb = C.ReduceLROnPlateau(monitor="val_loss", patience=1, factor=0.1, min_delta=10, min_lr=0.005)
    run_fit([cb], model, loss_logs([1.0] * 4))
    assert model.optimizer.learning_rate == 0.005


def test_reduce_lr_max_mode():
    model = FakeModel(learning_rate=1.0)
    cb = C.ReduceLROnPlateau(monitor="val_acc", patience=1, factor=0.5, min_delta=0.0)
    run_fit([cb], model, loss_logs([0.5, 0.6, 0.7, 0.65], "val_acc"))
    assert model.optimizer.learning_rate == 0.5


def test_reduce_lr_unknown_metric_counts_as_min():
    model = FakeModel(learning_rate=1.0)
    cb = C.ReduceLROnPlateau(monitor="wobble", patience=1, factor=0.5, min_delta=0.0)
    run_fit([cb], model, loss_logs([3.0, 2.0, 2.5], "wobble"))
    assert cb._direction == "min" and model.optimizer.learning_rate == 0.5


def test_reduce_lr_resets_per_run_and_warns_on_missing_monitor():
    cb = C.ReduceLROnPlateau(monitor="loss", patience=1, cooldown=2)
    cb.best, cb.wait, cb.cooldown_counter = 0.5, 3, 2
    cb.on_train_begin()
    assert (cb.best, cb.wait, cb.cooldown_counter) == (None, 0, 0)
    model = FakeModel()
    with pytest.warns(UserWarning, match="`val_loss`.*Available metrics are: loss,learning_rate"):
        run_fit([C.ReduceLROnPlateau(patience=0)], model, loss_logs([1.0, 1.0], "loss"))
    assert model.optimizer.learning_rate == 0.1


def test_reduce_lr_verbose(capsys):
    cb = C.ReduceLROnPlateau(monitor="loss", patience=0, factor=0.5, verbose=1)
    run_fit([cb], FakeModel(learning_rate=1.0), loss_logs([1.0, 1.0], "loss"))
    assert "Epoch 2: ReduceLROnPlateau reducing learning rate to 0.5." in capsys.readouterr().out


def test_reduce_lr_needs_an_optimizer():
    model = FakeModel()
    model.optimizer = None
    with pytest.raises(ValueError, match="optimizer"):
        run_fit([C.ReduceLROnPlateau(monitor="loss")], model, loss_logs([1.0], "loss"))


@pytest.mark.parametrize(
    "kwargs, exc, text",
    [
        ({"factor": 1.0}, ValueError, "factor=1.0"),
        ({"factor": 2}, ValueError, "factor=2"),
        ({"factor": -0.5}, ValueError, "factor=-0.5"),
        ({"min_lr": -1}, ValueError, "min_lr=-1"),
        ({"cooldown": -1}, ValueError, "cooldown=-1"),
        ({"patience": None}, ValueError, "patience=None"),
    ],
)
def test_reduce_lr_argument_errors(kwargs, exc, text):
    with pytest.raises(exc, match=text.replace(".", r"\.")):
        C.ReduceLROnPlateau(**kwargs)


# ---------------------------------------------------------------- LearningRateScheduler


def test_scheduler_sets_learning_rate_each_epoch():
    seen = []

    def schedule(epoch, lr):
        seen.append((epoch, lr))
        return lr if epoch < 2 else lr * 0.5

    model = FakeModel(learning_rate=0.4)
    run_fit([C.LearningRateScheduler(schedule)], model, loss_logs([1.0] * 4, "loss"))
    assert seen == [(0, 0.4), (1, 0.4), (2, 0.4), (3, 0.2)]
    assert model.optimizer.learning_rate == 0.1
    assert model.history.history["learning_rate"] == [0.4, 0.4, 0.2, 0.1]


def test_scheduler_one_argument_form_and_numpy_results():
    model = FakeModel()
    run_fit([C.LearningRateScheduler(lambda epoch: np.float32(0.5) ** epoch)], model, loss_logs([1.0] * 3, "loss"))
    assert model.optimizer.learning_rate == 0.25 and type(model.optimizer.learning_rate) is float


def test_scheduler_verbose(capsys):
    run_fit([C.LearningRateScheduler(lambda e, lr: 0.01, verbose=1)], FakeModel(), loss_logs([1.0], "loss"))
    assert "Epoch 1: LearningRateScheduler setting learning rate to 0.01." in capsys.readouterr().out


@pytest.mark.parametrize("result", ["0.1", None, float("nan"), np.array([0.1, 0.2])])
def test_scheduler_bad_result(result):
    cb = C.LearningRateScheduler(lambda epoch, lr: result)
    with pytest.raises(ValueError, match="schedule"):
        run_fit([cb], FakeModel(), loss_logs([1.0], "loss"))


def test_scheduler_errors():
    with pytest.raises(TypeError, match="schedule=0.1"):
        C.LearningRateScheduler(0.1)
    with pytest.raises(ValueError, match="verbose='yes'"):
        C.LearningRateScheduler(lambda e, lr: lr, verbose="yes")


# ---------------------------------------------------------------- TerminateOnNaN


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), np.float32("-inf")])
def test_terminate_on_nan(bad, capsys):
    model = FakeModel()
    run = run_fit(
        [C.TerminateOnNaN()],
        model,
        loss_logs([1.0] * 3, "loss"),
        steps=5,
        batch_logs=lambda epoch, step: {"loss": bad if step == 3 else 1.0},
    )
    assert run == 1 and model.stop_training
    out = capsys.readouterr().out
    assert out.startswith("Batch 3: Invalid loss") and "terminating training" in out


def test_terminate_on_nan_keeps_going_on_finite_loss():
    model = FakeModel()
    assert run_fit([C.TerminateOnNaN()], model, loss_logs([1.0] * 3, "loss")) == 3
    assert not model.stop_training


def test_terminate_on_nan_raise_error():
    cbs = C.CallbackList([C.TerminateOnNaN(raise_error=True)], model=FakeModel())
    with pytest.raises(RuntimeError, match="Invalid loss nan at batch 7"):  # Keras names "batch 7" too
        cbs.on_train_batch_end(7, {"loss": math.nan})
    with pytest.raises(TypeError, match="raise_error"):
        C.TerminateOnNaN(raise_error="yes")


# ---------------------------------------------------------------- CSVLogger


def test_csv_logger_contents(tmp_path):
    path = tmp_path / "log.csv"
    model = FakeModel(metrics_names=["loss", "acc", "val_loss", "val_acc"])
    logs = [{"loss": 1.5, "acc": 0.25}, {"loss": 0.5, "acc": 0.75, "val_loss": 0.8}]
    run_fit([C.CSVLogger(path)], model, logs)
    with open(path, newline="") as f:
        text = f.read()
    # Keras 3.15.1: no val_* in the first epoch's logs (validation_freq > 1), so a val_ column per key, NA until then.
    assert text == "epoch,acc,loss,val_acc,val_loss\r\n0,0.25,1.5,NA,NA\r\n1,0.75,0.5,NA,0.8\r\n"
    path2 = tmp_path / "with_val.csv"
    run_fit([C.CSVLogger(path2)], model, [{"loss": 1.5, "val_loss": 2.0}, {"loss": 0.5}])
    assert path2.read_bytes() == b"epoch,loss,val_loss\r\n0,1.5,2.0\r\n1,0.5,NA\r\n"


def test_csv_logger_append_and_overwrite(tmp_path):
    path = str(tmp_path / "log.tsv")
    run_fit([C.CSVLogger(path, separator="\t")], FakeModel(), loss_logs([1.0, 0.5], "loss"))
    run_fit([C.CSVLogger(path, separator="\t", append=True)], FakeModel(), loss_logs([0.25], "loss"))
    with open(path, newline="") as f:
        assert f.read() == "epoch\tloss\tval_loss\r\n0\t1.0\tNA\r\n1\t0.5\tNA\r\n0\t0.25\tNA\r\n"
    run_fit([C.CSVLogger(path, separator="\t")], FakeModel(), loss_logs([2.0], "loss"))
    with open(path, newline="") as f:
        assert f.read() == "epoch\tloss\tval_loss\r\n0\t2.0\tNA\r\n"


def test_csv_logger_append_to_new_file_writes_header(tmp_path):
    path = tmp_path / "new.csv"
    run_fit([C.CSVLogger(path, append=True)], FakeModel(), loss_logs([1.0], "loss"))
    assert path.read_bytes() == b"epoch,loss,val_loss\r\n0,1.0,NA\r\n"


def test_csv_logger_list_values_and_errors(tmp_path):
    path = tmp_path / "l.csv"
    run_fit([C.CSVLogger(path)], FakeModel(), [{"loss": 1.0, "per_class": np.array([0.5, 0.25])}])
    assert path.read_text().splitlines()[1] == '0,1.0,"[0.5, 0.25]",NA,NA'
    with pytest.raises(ValueError, match="separator=';;'"):
        C.CSVLogger(path, separator=";;")
    with pytest.raises(TypeError, match="filename=None"):
        C.CSVLogger(None)


# ---------------------------------------------------------------- LambdaCallback


def test_lambda_callback():
    calls = []
    cb = C.LambdaCallback(
        on_train_begin=lambda logs: calls.append("train_begin"),
        on_epoch_end=lambda epoch, logs: calls.append(("epoch_end", epoch, logs["loss"])),
        on_train_batch_end=lambda batch, logs: calls.append(("batch", batch)),
        on_train_end=lambda logs: calls.append("train_end"),
        on_test_begin=lambda logs: calls.append("test_begin"),
    )
    run_fit([cb], FakeModel(), loss_logs([0.5], "loss"), steps=2, validation=True)
    assert calls == ["train_begin", ("batch", 0), ("batch", 1), "test_begin", ("epoch_end", 0, 0.5), "train_end"]


def test_lambda_callback_other_keywords_become_attributes_and_hooks_must_be_functions():
    def custom(logs):
        pass

    cb = C.LambdaCallback(custom_method=custom, tag="a")  # as Keras 3.15: attributes, not hooks
    assert cb.custom_method is custom and cb.tag == "a"
    with pytest.raises(TypeError, match="on_epoch_end=3"):
        C.LambdaCallback(on_epoch_end=3)


# ---------------------------------------------------------------- ProgbarLogger


def test_progbar_logger_non_tty_one_line_per_epoch(capsys):
    logs = [{"loss": 0.5, "val_loss": 0.7}, {"loss": 0.25, "val_loss": 0.6}]
    run_fit([], FakeModel(), logs, steps=20, verbose=1, validation=True)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    assert lines[0] == "Epoch 1/2" and lines[2] == "Epoch 2/2"
    assert lines[1].startswith("20/20 [==============================] - ")
    assert lines[1].endswith("step - loss: 0.5000 - val_loss: 0.7000")
    assert lines[3].endswith("step - loss: 0.2500 - val_loss: 0.6000")


def test_progbar_logger_verbose2(capsys):
    run_fit([], FakeModel(), [{"loss": 0.5}], steps=8, verbose=2, validation=True)
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # one epoch: no "Epoch 1/1" header
    assert out.startswith("8/8 - ") and out.endswith("/step - loss: 0.5000\n")


def test_progbar_logger_tty_shows_running_logs(monkeypatch):
    class TTY(io.StringIO):
        def isatty(self):
            return True

    stream = TTY()
    monkeypatch.setattr(P, "_stream", lambda: stream)
    monkeypatch.setattr(P, "_clock", lambda: 0.0)  # a frozen clock: only the first and the final frame are drawn
    steps_seen = []
    run_fit(
        [C.LambdaCallback(on_train_batch_end=lambda b, logs: steps_seen.append(b))],
        FakeModel(),
        [{"loss": 2.0}],
        steps=3,
        verbose=1,
        batch_logs=lambda epoch, step: {"loss": float(step + 1)},
    )
    frames = stream.getvalue().split("\r")[1:]
    assert frames[0].startswith("1/3 [") and frames[0].endswith(" - loss: 1.0000")  # as given, not re-averaged
    assert frames[-1].startswith("3/3 [") and frames[-1].endswith(" - loss: 2.0000\n")  # the epoch logs


def test_progbar_logger_evaluate_and_predict(capsys):
    model = FakeModel()
    cbs = C.CallbackList(None, add_progbar=True, model=model, verbose=1, epochs=1, steps=4)
    cbs.on_test_begin()
    for step in range(4):
        cbs.on_test_batch_begin(step)
        cbs.on_test_batch_end(step, {"loss": 0.5})
    cbs.on_test_end({"loss": 0.5})
    cbs = C.CallbackList(None, add_progbar=True, model=model, verbose=1, epochs=1, steps=None)
    cbs.on_predict_begin()
    for step in range(3):
        cbs.on_predict_batch_end(step, {"outputs": np.zeros(2)})
    cbs.on_predict_end()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("4/4 [====") and lines[0].endswith(" - loss: 0.5000")
    assert lines[1].startswith("3/3 [====") and lines[1].endswith("/step")  # no predictions shown


def test_progbar_logger_silent_with_verbose0(capsys):
    run_fit([C.ProgbarLogger()], FakeModel(), [{"loss": 0.5}] * 2, verbose=0)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("make", [lambda m: C.EarlyStopping(mode=m), lambda m: C.ReduceLROnPlateau(mode=m),
                                  lambda m: C.ModelCheckpoint("/nonexistent/ck.keras", mode=m)])
def test_an_unknown_mode_falls_back_to_auto_with_a_warning(make):
    # Keras 3.15.1's MonitorCallback: "<Class> mode 'up' is unknown, fallback to auto mode."
    with pytest.warns(UserWarning, match="mode 'up' is unknown, fallback to auto mode"):
        cb = make("up")
    assert cb.mode == "auto"
