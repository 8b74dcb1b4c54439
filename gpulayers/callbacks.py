"""Training callbacks with Keras 3's names, hooks, arguments and behaviour.

The training loop drives a ``CallbackList`` (which adds ``History`` and
``ProgbarLogger`` when asked) through Keras 3's hooks::

    on_train_begin(logs)
      on_epoch_begin(epoch, logs)
        on_train_batch_begin(batch, logs) / on_train_batch_end(batch, logs)
        on_test_begin / on_test_batch_begin / on_test_batch_end / on_test_end
      on_epoch_end(epoch, logs)          # logs: train means plus "val_*" keys
    on_train_end(logs)
    on_predict_begin / on_predict_batch_begin / on_predict_batch_end / on_predict_end

``epoch`` and ``batch`` are 0-based. Callbacks talk to the model only through
``model.stop_training``, ``model.history``, ``model.get_weights()`` /
``set_weights()``, ``model.save(path)`` / ``save_weights(path)``,
``model.optimizer.learning_rate`` (read with ``float()``, written as a float)
and, optionally, ``model.metrics_names`` (CSVLogger) and ``model.metrics``
(direction of a monitored metric).

Differences from Keras 3, all deliberate:
- hooks run synchronously (no thread pool for batch-end hooks);
- an unknown ``mode`` is a ValueError (Keras warns and uses "auto");
- ``mode="auto"`` also knows Keras's built-in metric names and their
  ``prefix_`` forms (Keras reads the direction only from the compiled metric
  objects, which is also done here when the model's metrics carry a
  ``_direction``);
- ``ModelCheckpoint`` infers the direction only when ``save_best_only`` needs
  it, accepts only ``.keras`` for full saves (recent Keras also takes legacy
  ``.h5``) and reports a filepath it cannot format as a ValueError (Keras: KeyError);
- ``ProgbarLogger`` shows the logs as given instead of re-averaging running
  aggregates; it stays silent for validation only while a ``fit`` runs;
- ``LearningRateScheduler`` also accepts an int (or a 0-d array) from ``schedule``;
- ``LambdaCallback`` refuses keyword arguments that are not hook names;
- ``TerminateOnNaN`` also names the invalid value;
- ``TensorBoard`` writes its event files itself (no TensorFlow): scalars and
  weight histograms; no graph, images, embeddings or profiles.
"""

import csv
import inspect
import math
import numbers
import os
import string
import sys
import time
import warnings

from gpulayers.argument_validation import standardize_bool, standardize_int
from gpulayers.progbar import Progbar

__all__ = [
    "BackupAndRestore",
    "CSVLogger",
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "History",
    "LambdaCallback",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "ProgbarLogger",
    "ReduceLROnPlateau",
    "TensorBoard",
    "TerminateOnNaN",
]

HOOKS = (
    "on_batch_begin",
    "on_batch_end",
    "on_epoch_begin",
    "on_epoch_end",
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_test_batch_begin",
    "on_test_batch_end",
    "on_predict_batch_begin",
    "on_predict_batch_end",
    "on_train_begin",
    "on_train_end",
    "on_test_begin",
    "on_test_end",
    "on_predict_begin",
    "on_predict_end",
)


# ---------------------------------------------------------------- helpers


def _print(message):
    """Print a line to ``sys.stdout`` as it is now (Keras's ``print_msg``)."""
    stream = sys.stdout
    if stream is not None:
        stream.write(message + "\n")
        stream.flush()


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_real(value, argument, allow_none=False):
    if value is None and allow_none:
        return None
    if not _is_real(value) or math.isnan(value):
        raise ValueError(
            f"Invalid value for `{argument}`: expected a number{' or None' if allow_none else ''}. "
            f"Received: {argument}={value!r}"
        )
    return float(value)


def _check_verbose(verbose, argument="verbose"):
    if isinstance(verbose, bool) or not isinstance(verbose, numbers.Integral) or verbose < 0:
        raise ValueError(f"Invalid value for `{argument}`: expected an int >= 0. Received: {argument}={verbose!r}")
    return int(verbose)


def _check_monitor(monitor):
    if not isinstance(monitor, str) or not monitor:
        raise TypeError(f"Invalid type for `monitor`: expected a metric name. Received: monitor={monitor!r}")
    return monitor


def _check_mode(mode, callback):
    """Keras's rule: an unknown mode is warned about and taken as 'auto'."""
    if mode not in ("auto", "min", "max"):
        warnings.warn(f"{type(callback).__name__} mode '{mode}' is unknown, fallback to auto mode.", stacklevel=3)
        return "auto"
    return mode


def _to_float(value):
    """A log value as a Python float when it is a number or a 0-d array; else unchanged."""
    if isinstance(value, (float, int)):  # Python numbers (and bools) stay as they are
        return value
    if _is_real(value) or getattr(value, "ndim", None) == 0 or getattr(value, "shape", None) == ():
        try:
            return float(value)
        except (TypeError, ValueError):
            return value
    return value


# Directions of Keras's built-in metrics, by their default names ("up": larger is better).
_UP = frozenset(
    """acc accuracy binary_accuracy categorical_accuracy sparse_categorical_accuracy
    top_k_categorical_accuracy sparse_top_k_categorical_accuracy auc prc precision recall
    precision_at_recall recall_at_precision sensitivity_at_specificity specificity_at_sensitivity
    true_positives true_negatives f1_score fbeta_score r2_score iou binary_iou mean_iou one_hot_iou
    one_hot_mean_iou cosine_similarity pearson_correlation concordance_correlation""".split()
)
_DOWN = frozenset(
    """loss mse mae mape msle mean_squared_error mean_absolute_error mean_absolute_percentage_error
    mean_squared_logarithmic_error root_mean_squared_error rmse log_cosh logcosh log_cosh_error
    binary_crossentropy categorical_crossentropy sparse_categorical_crossentropy
    binary_focal_crossentropy categorical_focal_crossentropy kl_divergence kld
    kullback_leibler_divergence poisson hinge squared_hinge categorical_hinge false_positives
    false_negatives ctc dice tversky""".split()
)


def _metric_direction(model, monitor):
    """"max", "min" or None: what Keras 3's ``mode="auto"`` picks for ``monitor``."""
    name = monitor[4:] if monitor.startswith("val_") else monitor
    if name == "loss":
        return "min"
    # Keras 3: the compiled metric of that name knows its direction.
    stack = list(getattr(model, "metrics", None) or []) if model is not None else []
    seen = 0
    while stack and seen < 1000:
        seen += 1
        metric = stack.pop()
        inner = getattr(metric, "metrics", None)
        if isinstance(inner, (list, tuple)):
            stack.extend(inner)
        if getattr(metric, "name", None) == name and getattr(metric, "_direction", None) in ("up", "down"):
            return "max" if metric._direction == "up" else "min"
    if name in _UP:
        return "max"
    if name in _DOWN:
        return "min"
    # Prefixed names of multi-output models ("dense_1_accuracy") and Keras 2's rule.
    for known in sorted(_UP | _DOWN, key=len, reverse=True):
        if name.endswith("_" + known):
            return "max" if known in _UP else "min"
    return None


def _get_lr(model, who):
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not hasattr(optimizer, "learning_rate"):
        raise ValueError(f"{who} needs a model with an optimizer that has a `learning_rate` (compile the model first).")
    lr = optimizer.learning_rate
    try:
        return float(lr)
    except (TypeError, ValueError):
        raise TypeError(
            f"{who} needs a learning rate that is a number; the optimizer's learning_rate is {lr!r} "
            "(a schedule cannot be changed by a callback)."
        ) from None


# ---------------------------------------------------------------- base classes


class Callback:
    """Base class for callbacks: every hook does nothing.

    Attributes:
        params: dict of training parameters (``verbose``, ``epochs``, ``steps``).
        model: the model being trained (set by ``set_model``).

    ``on_train_batch_begin/end`` call the older ``on_batch_begin/end`` aliases,
    as in Keras, so a callback may override either.

    Example:
        >>> class Count(Callback):
        ...     def on_epoch_end(self, epoch, logs=None):
        ...         print(epoch, logs["loss"])
    """

    def __init__(self):
        self.params = None
        self._model = None

    def set_params(self, params):
        self.params = params

    def set_model(self, model):
        self._model = model

    @property
    def model(self):
        return self._model

    def on_batch_begin(self, batch, logs=None):
        """Backwards-compatible alias of ``on_train_batch_begin``."""

    def on_batch_end(self, batch, logs=None):
        """Backwards-compatible alias of ``on_train_batch_end``."""

    def on_epoch_begin(self, epoch, logs=None):
        """Start of an epoch (training only)."""

    def on_epoch_end(self, epoch, logs=None):
        """End of an epoch: ``logs`` has the epoch's metrics and ``val_*`` ones."""

    def on_train_batch_begin(self, batch, logs=None):
        """Start of a training batch."""
        self.on_batch_begin(batch, logs=logs)

    def on_train_batch_end(self, batch, logs=None):
        """End of a training batch: ``logs`` has the metrics aggregated so far."""
        self.on_batch_end(batch, logs=logs)

    def on_test_batch_begin(self, batch, logs=None):
        """Start of an evaluation (or validation) batch."""

    def on_test_batch_end(self, batch, logs=None):
        """End of an evaluation (or validation) batch."""

    def on_predict_batch_begin(self, batch, logs=None):
        """Start of a prediction batch."""

    def on_predict_batch_end(self, batch, logs=None):
        """End of a prediction batch."""

    def on_train_begin(self, logs=None):
        """Start of training."""

    def on_train_end(self, logs=None):
        """End of training."""

    def on_test_begin(self, logs=None):
        """Start of evaluation or validation."""

    def on_test_end(self, logs=None):
        """End of evaluation or validation."""

    def on_predict_begin(self, logs=None):
        """Start of prediction."""

    def on_predict_end(self, logs=None):
        """End of prediction."""


def _flatten_callbacks(callbacks):
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback):
        return [callbacks]
    if not isinstance(callbacks, (list, tuple)):
        raise TypeError(
            "Invalid type for `callbacks`: expected a list of Callback instances. "
            f"Received: callbacks={callbacks!r} of type {type(callbacks).__name__}"
        )
    flat = []
    for item in callbacks:
        if isinstance(item, (list, tuple)):
            flat.extend(_flatten_callbacks(item))
        elif isinstance(item, Callback):
            flat.append(item)
        else:
            raise TypeError(
                "Invalid type for `callbacks`: every item must be a gpulayers.callbacks.Callback. "
                f"Received: {item!r} of type {type(item).__name__}"
            )
    return flat


class CallbackList(Callback):
    """Calls every hook on each callback in turn.

    Args:
        callbacks: a Callback, a (nested) list of them, or None.
        add_history: append a ``History`` unless one is in ``callbacks``.
        add_progbar: append a ``ProgbarLogger`` unless one is in ``callbacks``.
        model: the model, given to every callback (and ``model.history``
            set to the History).
        **params: passed to every callback's ``set_params`` (when any).

    Train/test batch-end logs are flattened (nested dicts merged), sorted by
    key and their values turned into Python floats where possible, as Keras
    does; epoch-end values that are 0-d arrays become floats (in place).
    """

    def __init__(self, callbacks=None, add_history=False, add_progbar=False, model=None, **params):
        super().__init__()
        self.callbacks = _flatten_callbacks(callbacks)
        self._history = next((cb for cb in self.callbacks if isinstance(cb, History)), None)
        self._progbar = next((cb for cb in self.callbacks if isinstance(cb, ProgbarLogger)), None)
        if self._history is None and add_history:
            self._history = History()
            self.callbacks.append(self._history)
        if self._progbar is None and add_progbar:
            self._progbar = ProgbarLogger()
            self.callbacks.append(self._progbar)
        self.set_model(model)
        self.set_params(params)

    def append(self, callback):
        """Add a callback (or a list of them), giving it the model and params."""
        for cb in _flatten_callbacks(callback):
            self.callbacks.append(cb)
            if self.model is not None:
                cb.set_model(self.model)
            if self.params:
                cb.set_params(self.params)

    def set_params(self, params):
        self.params = params
        if params:
            for callback in self.callbacks:
                callback.set_params(params)

    def set_model(self, model):
        if model is None:
            return
        super().set_model(model)
        if self._history is not None:
            model.history = self._history
        for callback in self.callbacks:
            callback.set_model(model)

    @staticmethod
    def _pythonify_logs(logs):
        result = {}
        for key, value in sorted(logs.items(), key=lambda kv: str(kv[0])):
            if isinstance(value, dict):
                result.update(CallbackList._pythonify_logs(value))
            else:
                try:
                    value = float(value)
                except (TypeError, ValueError):
                    pass
                result[key] = value
        return result

    def _dispatch(self, hook, *args, logs=None, as_keyword=False):
        logs = logs or {}
        for callback in self.callbacks:
            if as_keyword:
                getattr(callback, hook)(*args, logs=logs)
            else:
                getattr(callback, hook)(*args, logs)

    def on_batch_begin(self, batch, logs=None):
        self._dispatch("on_batch_begin", batch, logs=logs, as_keyword=True)

    def on_batch_end(self, batch, logs=None):
        self._dispatch("on_batch_end", batch, logs=self._pythonify_logs(logs or {}), as_keyword=True)

    def on_epoch_begin(self, epoch, logs=None):
        self._dispatch("on_epoch_begin", epoch, logs=logs)

    def on_epoch_end(self, epoch, logs=None):
        if logs:
            for key, value in logs.items():
                logs[key] = _to_float(value)
        self._dispatch("on_epoch_end", epoch, logs=logs)

    def on_train_batch_begin(self, batch, logs=None):
        self._dispatch("on_train_batch_begin", batch, logs=logs, as_keyword=True)

    def on_train_batch_end(self, batch, logs=None):
        self._dispatch("on_train_batch_end", batch, logs=self._pythonify_logs(logs or {}), as_keyword=True)

    def on_test_batch_begin(self, batch, logs=None):
        self._dispatch("on_test_batch_begin", batch, logs=logs, as_keyword=True)

    def on_test_batch_end(self, batch, logs=None):
        self._dispatch("on_test_batch_end", batch, logs=self._pythonify_logs(logs or {}), as_keyword=True)

    def on_predict_batch_begin(self, batch, logs=None):
        self._dispatch("on_predict_batch_begin", batch, logs=logs, as_keyword=True)

    def on_predict_batch_end(self, batch, logs=None):
        self._dispatch("on_predict_batch_end", batch, logs=logs, as_keyword=True)

    def on_train_begin(self, logs=None):
        self._dispatch("on_train_begin", logs=logs)

    def on_train_end(self, logs=None):
        self._dispatch("on_train_end", logs=logs)

    def on_test_begin(self, logs=None):
        self._dispatch("on_test_begin", logs=logs)

    def on_test_end(self, logs=None):
        self._dispatch("on_test_end", logs=logs)

    def on_predict_begin(self, logs=None):
        self._dispatch("on_predict_begin", logs=logs)

    def on_predict_end(self, logs=None):
        self._dispatch("on_predict_end", logs=logs)


# ---------------------------------------------------------------- default callbacks


class History(Callback):
    """Records every epoch's logs: ``history[key]`` is a list (one value per epoch).

    ``epoch`` lists the epoch indices seen in the current training run; like
    Keras, ``history`` keeps growing if the same History serves several runs.
    ``model.history`` is set to this object.
    """

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)
        if self.model is not None:
            self.model.history = self


class ProgbarLogger(Callback):
    """Prints a progress bar and the metrics (see ``gpulayers.progbar.Progbar``).

    Reads ``verbose`` ("auto" means 1), ``epochs`` and ``steps`` from the
    params. Prints ``Epoch i/N`` before each epoch when N > 1. Inside ``fit``
    the validation pass is silent.

    The logs are shown as given, not averaged again: batch logs are already
    the running aggregates of the epoch (Keras 3's contract) and the final
    line shows the epoch logs. (Keras 3 re-averages the batch logs while the
    epoch runs, so its live numbers lag; its final line is the same.)
    """

    def __init__(self):
        super().__init__()
        self.seen = 0
        self.progbar = None
        self.target = None
        self.verbose = 1
        self.epochs = 1
        self._called_in_fit = False

    def set_params(self, params):
        super().set_params(params)
        verbose = params.get("verbose", 1)
        self.verbose = 1 if verbose == "auto" else _check_verbose(verbose, "params['verbose']")
        self.epochs = params.get("epochs", 1) or 1
        self.target = params.get("steps")

    def on_train_begin(self, logs=None):
        self._called_in_fit = True

    def on_train_end(self, logs=None):
        self._called_in_fit = False

    def on_test_begin(self, logs=None):
        if not self._called_in_fit:
            self._reset_progbar()

    def on_predict_begin(self, logs=None):
        self._reset_progbar()

    def on_epoch_begin(self, epoch, logs=None):
        self._reset_progbar()
        if self.verbose and self.epochs > 1:
            _print(f"Epoch {epoch + 1}/{self.epochs}")

    def on_train_batch_end(self, batch, logs=None):
        self._update_progbar(batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        if not self._called_in_fit:
            self._update_progbar(batch, logs)

    def on_predict_batch_end(self, batch, logs=None):
        self._update_progbar(batch, None)  # never the predictions

    def on_epoch_end(self, epoch, logs=None):
        self._finalize_progbar(logs)

    def on_test_end(self, logs=None):
        if not self._called_in_fit:
            self._finalize_progbar(logs)

    def on_predict_end(self, logs=None):
        self._finalize_progbar(logs)

    def _reset_progbar(self):
        self.seen = 0
        self.progbar = Progbar(target=self.target, verbose=min(self.verbose, 2), unit_name="step")

    def _update_progbar(self, batch, logs):
        if self.progbar is None:
            self._reset_progbar()
        self.seen = batch + 1
        if self.verbose == 1:
            logs = logs or {}
            self.progbar.stateful_metrics.update(logs.keys())
            self.progbar.update(self.seen, list(logs.items()), finalize=False)

    def _finalize_progbar(self, logs):
        if self.progbar is None:
            self._reset_progbar()
        if self.target is None:
            self.target = self.seen
            self.progbar.target = self.seen
        logs = logs or {}
        self.progbar.stateful_metrics.update(logs.keys())
        self.progbar.update(self.target, list(logs.items()), finalize=True)


# ---------------------------------------------------------------- monitoring callbacks


class _Monitor:
    """Shared ``mode``/``monitor`` logic: comparison with a min_delta margin."""

    def _resolve_mode(self, owner):
        if self.mode != "auto":
            return self.mode
        direction = _metric_direction(self.model, self.monitor)
        if direction is None:
            raise ValueError(
                f"{owner} received monitor={self.monitor!r} but cannot tell whether that metric should be "
                "maximized or minimized. Pass mode='max' to use its highest value or mode='min' to use "
                "its lowest."
            )
        return direction

    def _better(self, value, reference, min_delta):
        """Whether ``value`` improves on ``reference`` by more than ``min_delta`` (None: always)."""
        if reference is None:
            return True
        if self._direction == "min":
            return value + min_delta < reference
        return value - min_delta > reference

    def _monitor_value(self, logs, message):
        value = (logs or {}).get(self.monitor)
        if value is None:
            warnings.warn(
                f"{message} `{self.monitor}`, which is not in the logs. "
                f"Available metrics are: {','.join(map(str, (logs or {}).keys()))}",
                stacklevel=3,
            )
            return None
        return _to_float(value)


class EarlyStopping(_Monitor, Callback):
    """Stops training when a monitored metric has stopped improving.

    Args:
        monitor: the log key to watch (``"val_loss"``).
        min_delta: an improvement smaller than ``|min_delta|`` does not count.
        patience: epochs without improvement before stopping.
        verbose: 1 prints when it stops and when it restores weights.
        mode: "min", "max" or "auto" (from the metric's name).
        baseline: the value to beat: the wait is only reset by epochs that
            improve on both the best so far and the baseline.
        restore_best_weights: at the end of training (stopped early or not),
            set the weights of the best epoch, even if it never beat the
            baseline.
        start_from_epoch: epochs ignored at the start (warm-up).

    Sets ``model.stop_training = True`` once ``patience`` monitored epochs in
    a row did not improve (never at epoch 0). Reusable: state resets at each
    ``on_train_begin``. After training, ``stopped_epoch``, ``best``,
    ``best_epoch`` and ``wait`` hold the run's outcome.
    """

    def __init__(
        self,
        monitor="val_loss",
        min_delta=0,
        patience=0,
        verbose=0,
        mode="auto",
        baseline=None,
        restore_best_weights=False,
        start_from_epoch=0,
    ):
        super().__init__()
        self.monitor = _check_monitor(monitor)
        self.min_delta = abs(_check_real(min_delta, "min_delta"))
        self.patience = standardize_int(patience, "patience", minimum=0)
        self.verbose = _check_verbose(verbose)
        self.mode = _check_mode(mode, self)
        self.baseline = _check_real(baseline, "baseline", allow_none=True)
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = standardize_int(start_from_epoch, "start_from_epoch", minimum=0)
        self._direction = None
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        if self._direction is None:  # resolved late, once the model's metrics exist
            self._direction = self._resolve_mode("EarlyStopping")
        current = self._monitor_value(logs, "Early stopping is conditioned on")
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
            self.best_epoch = epoch
        self.wait += 1
        if self._better(current, self.best, self.min_delta):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._better(current, self.baseline, self.min_delta):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            _print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                _print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


def _check_filepath(filepath):
    if isinstance(filepath, os.PathLike):
        filepath = os.fspath(filepath)
    if not isinstance(filepath, str) or not filepath:
        raise TypeError(f"Invalid type for `filepath`: expected a path string. Received: filepath={filepath!r}")
    try:
        list(string.Formatter().parse(filepath))
    except ValueError as exc:
        raise ValueError(f"Invalid value for `filepath`: not a valid format string ({exc}). Received: filepath={filepath!r}") from None
    return filepath


class ModelCheckpoint(_Monitor, Callback):
    """Saves the model (or its weights) every epoch or every ``save_freq`` batches.

    Args:
        filepath: where to save; may hold ``str.format`` fields filled from
            ``epoch`` (1-based), ``batch`` (1-based, batch-level saves) and the
            logs, e.g. ``"ckpt-{epoch:02d}-{val_loss:.2f}.keras"``. Must end
            in ``.keras`` (full model) or, with ``save_weights_only``, in
            ``.weights.h5``.
        monitor: the log key compared when ``save_best_only``.
        verbose: 1 prints a line for each decision.
        save_best_only: save only when ``monitor`` improves on the best so far
            (and on ``initial_value_threshold``); without the key in the logs
            it warns and saves.
        save_weights_only: ``model.save_weights(path)`` instead of ``model.save(path)``.
        mode: "min", "max" or "auto".
        save_freq: "epoch" or a number of batches (an int >= 1).
        initial_value_threshold: the value the first save must improve on.

    ``best`` persists across training runs, as in Keras.
    """

    def __init__(
        self,
        filepath,
        monitor="val_loss",
        verbose=0,
        save_best_only=False,
        save_weights_only=False,
        mode="auto",
        save_freq="epoch",
        initial_value_threshold=None,
    ):
        super().__init__()
        self.filepath = _check_filepath(filepath)
        self.monitor = _check_monitor(monitor)
        self.verbose = _check_verbose(verbose)
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)
        self.mode = _check_mode(mode, self)
        if save_freq != "epoch" and (isinstance(save_freq, bool) or not isinstance(save_freq, numbers.Integral) or save_freq < 1):
            raise ValueError(f"Invalid value for `save_freq`: expected 'epoch' or an int >= 1. Received: save_freq={save_freq!r}")
        self.save_freq = save_freq if save_freq == "epoch" else int(save_freq)
        self.initial_value_threshold = _check_real(initial_value_threshold, "initial_value_threshold", allow_none=True)
        if self.save_weights_only:
            if not self.filepath.endswith(".weights.h5"):
                raise ValueError(
                    "Invalid value for `filepath`: with save_weights_only=True it must end in `.weights.h5` "
                    f"(Keras weights format). Received: filepath={self.filepath!r}"
                )
        elif not self.filepath.endswith(".keras"):
            raise ValueError(
                "Invalid value for `filepath`: it must end in `.keras` (Keras model format), or in "
                f"`.weights.h5` with save_weights_only=True. Received: filepath={self.filepath!r}"
            )
        self.best = self.initial_value_threshold
        self._direction = None
        self._current_epoch = 0
        self._batches_since_save = 0
        self._last_batch_seen = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq == "epoch":
            return
        # A batch index not above the last one starts a new epoch.
        steps = batch + 1 if batch <= self._last_batch_seen else batch - self._last_batch_seen
        self._batches_since_save += steps
        self._last_batch_seen = batch
        if self._batches_since_save >= self.save_freq:
            self._batches_since_save = 0
            self._save(self._current_epoch, batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch, None, logs)

    def _file_path(self, epoch, batch, logs):
        fields = dict(logs or {})
        fields["epoch"] = epoch + 1
        if batch is not None and "batch" not in fields:
            fields["batch"] = batch + 1
        try:
            return self.filepath.format_map(fields)
        except KeyError as exc:
            raise ValueError(
                f"Invalid value for `filepath`: it names {exc} which is neither `epoch`"
                f"{', `batch`' if batch is not None else ''} nor a key of the logs "
                f"({', '.join(map(str, (logs or {}).keys())) or 'none'}). Received: filepath={self.filepath!r}"
            ) from None
        except (ValueError, TypeError, IndexError) as exc:
            raise ValueError(f"Invalid value for `filepath`: cannot format it ({exc}). Received: filepath={self.filepath!r}") from None

    def _should_save(self, epoch, logs, filepath):
        if not self.save_best_only:
            if self.verbose > 0:
                _print(f"\nEpoch {epoch + 1}: saving model to {filepath}")
            return True
        if self._direction is None:
            self._direction = self._resolve_mode("ModelCheckpoint")
        current = (logs or {}).get(self.monitor)
        if current is None:
            warnings.warn(
                f"ModelCheckpoint can save the best model only with `{self.monitor}` in the logs; saving anyway. "
                f"Available metrics are: {','.join(map(str, (logs or {}).keys()))}",
                stacklevel=4,
            )
            return True
        current = _to_float(current)
        if not _is_real(current):
            warnings.warn(
                f"ModelCheckpoint can save the best model only when `{self.monitor}` is a scalar. "
                f"Received: {current!r}. Saving anyway.",
                stacklevel=4,
            )
            return True
        if self.best is None:
            best_text = "inf" if self._direction == "min" else "-inf"
        else:
            best_text = f"{self.best:.5f}"
        if self._better(current, self.best, 0.0):
            if self.verbose > 0:
                _print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {best_text} to {current:.5f}, saving model to {filepath}")
            self.best = current
            return True
        if self.verbose > 0:
            _print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {best_text}")
        return False

    def _save(self, epoch, batch, logs):
        filepath = self._file_path(epoch, batch, logs)
        if not self._should_save(epoch, logs, filepath):
            return
        if os.path.isdir(filepath):
            raise IsADirectoryError(
                f"Invalid value for `filepath`: {filepath!r} is an existing directory; ModelCheckpoint needs a file path."
            )
        dirname = os.path.dirname(filepath)
        if dirname:
            os.makedirs(dirname, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(filepath)
        else:
            self.model.save(filepath)
        if self.verbose > 0:
            _print(f"\nEpoch {epoch + 1}: finished saving model to {filepath}")


class ReduceLROnPlateau(_Monitor, Callback):
    """Multiplies the learning rate by ``factor`` when a metric stops improving.

    Args:
        monitor: the log key to watch.
        factor: ``new_lr = max(lr * factor, min_lr)``; a number in [0, 1).
        patience: epochs without improvement before a reduction.
        verbose: 1 prints each reduction.
        mode: "min", "max" or "auto" (unknown names count as "min", as Keras).
        min_delta: an improvement must exceed this margin.
        cooldown: epochs after a reduction during which no epoch counts.
        min_lr: the lowest learning rate.

    Adds ``"learning_rate"`` (before any change) to the epoch logs, as Keras 3.
    """

    def __init__(
        self,
        monitor="val_loss",
        factor=0.1,
        patience=10,
        verbose=0,
        mode="auto",
        min_delta=1e-4,
        cooldown=0,
        min_lr=0.0,
    ):
        super().__init__()
        self.monitor = _check_monitor(monitor)
        factor = _check_real(factor, "factor")
        if not 0.0 <= factor < 1.0:
            raise ValueError(
                f"Invalid value for `factor`: ReduceLROnPlateau needs 0 <= factor < 1. Received: factor={factor!r}"
            )
        self.factor = factor
        self.patience = standardize_int(patience, "patience", minimum=0)
        self.verbose = _check_verbose(verbose)
        self.mode = _check_mode(mode, self)
        self.min_delta = _check_real(min_delta, "min_delta")
        self.cooldown = standardize_int(cooldown, "cooldown", minimum=0)
        min_lr = _check_real(min_lr, "min_lr")
        if min_lr < 0:
            raise ValueError(f"Invalid value for `min_lr`: expected a number >= 0. Received: min_lr={min_lr!r}")
        self.min_lr = min_lr
        self._direction = None
        self._reset()

    def _reset(self):
        self.cooldown_counter = 0
        self.wait = 0
        self.best = None

    def in_cooldown(self):
        return self.cooldown_counter > 0

    def on_train_begin(self, logs=None):
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        if self._direction is None:
            if self.mode != "auto":
                self._direction = self.mode
            else:  # Keras's ReduceLROnPlateau never refuses: "acc" in the name means max, else min
                self._direction = _metric_direction(self.model, self.monitor) or (
                    "max" if "acc" in self.monitor else "min"
                )
        logs = logs if logs is not None else {}
        logs["learning_rate"] = _get_lr(self.model, "ReduceLROnPlateau")
        current = self._monitor_value(logs, "Learning rate reduction is conditioned on")
        if current is None:
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._better(current, self.best, self.min_delta):
            self.best = current
            self.wait = 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience:
                old_lr = _get_lr(self.model, "ReduceLROnPlateau")
                if old_lr > self.min_lr:
                    new_lr = max(old_lr * self.factor, self.min_lr)
                    self.model.optimizer.learning_rate = new_lr
                    if self.verbose > 0:
                        _print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new_lr}.")
                    self.cooldown_counter = self.cooldown
                    self.wait = 0


def _takes_two_args(fn):
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    try:
        sig.bind(0, 0.1)
        return True
    except TypeError:
        return False


class LearningRateScheduler(Callback):
    """Sets the learning rate at each epoch's start to ``schedule(epoch, lr)``.

    Args:
        schedule: ``schedule(epoch, lr) -> new_lr`` (epoch 0-based, lr a
            float); a one-argument ``schedule(epoch)`` is accepted as in Keras.
        verbose: 1 prints each new learning rate.

    Adds ``"learning_rate"`` to the epoch logs (so History records it).

    Example:
        >>> LearningRateScheduler(lambda epoch, lr: lr if epoch < 10 else lr * 0.9)
    """

    def __init__(self, schedule, verbose=0):
        super().__init__()
        if not callable(schedule):
            raise TypeError(
                f"Invalid type for `schedule`: expected a function (epoch, lr) -> lr. Received: schedule={schedule!r}"
            )
        self.schedule = schedule
        self.verbose = _check_verbose(verbose)

    def on_epoch_begin(self, epoch, logs=None):
        lr = _get_lr(self.model, "LearningRateScheduler")
        two = _takes_two_args(self.schedule)
        if two is None:  # no signature to read: Keras's try-the-new-form-first rule
            try:
                new_lr = self.schedule(epoch, lr)
            except TypeError:
                new_lr = self.schedule(epoch)
        else:
            new_lr = self.schedule(epoch, lr) if two else self.schedule(epoch)
        new_lr = _to_float(new_lr)
        if not _is_real(new_lr) or not math.isfinite(new_lr):
            raise ValueError(
                "Invalid value for `schedule`: it must return a finite float learning rate. "
                f"Received: schedule({epoch}, {lr}) returned {new_lr!r}"
            )
        new_lr = float(new_lr)
        self.model.optimizer.learning_rate = new_lr
        if self.verbose > 0:
            _print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {new_lr}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = _get_lr(self.model, "LearningRateScheduler")


class TensorBoard(Callback):
    """Logs the training curves for TensorBoard, as Keras 3's ``keras.callbacks.TensorBoard``.

    Writes event files under ``<log_dir>/train`` and ``<log_dir>/validation``
    (made on first use), with Keras's tags: at each epoch's end
    ``epoch_<metric>`` for every training log (and ``epoch_learning_rate``)
    in ``train`` and for every ``val_*`` log (without the prefix) in
    ``validation``, the epoch as the step; after each evaluation or
    validation pass ``evaluation_<metric>_vs_iterations`` in ``validation``,
    the optimizer's update count as the step; with an int ``update_freq``
    every ``update_freq`` batches ``batch_<metric>`` in ``train``. The files
    are written by :mod:`gpulayers.event_writer`, without TensorFlow.

    Args:
        log_dir: Directory of the logs (default ``"logs"``).
        histogram_freq: Every how many epochs to log a histogram of each
            weight (``<weight name>/histogram``); 0 (default) for never.
        write_graph, write_images: Accepted; gpulayers writes no graph or images.
        write_steps_per_second: Also log ``epoch_steps_per_second`` (and
            ``batch_steps_per_second`` with an int ``update_freq``).
        update_freq: ``"epoch"`` (default), ``"batch"`` (every batch) or an int.
        profile_batch: Must be 0 (no profiler, as Keras on torch).
        embeddings_freq, embeddings_metadata: Must be 0 and None (embedding
            projections need TensorFlow's projector).
    """

    def __init__(
        self,
        log_dir="logs",
        histogram_freq=0,
        write_graph=True,
        write_images=False,
        write_steps_per_second=False,
        update_freq="epoch",
        profile_batch=0,
        embeddings_freq=0,
        embeddings_metadata=None,
    ):
        super().__init__()
        self.log_dir = str(os.fspath(log_dir))
        self.histogram_freq = standardize_int(histogram_freq, "histogram_freq", minimum=0)
        self.write_graph = bool(write_graph)
        self.write_images = bool(write_images)
        self.write_steps_per_second = bool(write_steps_per_second)
        if update_freq == "batch":
            update_freq = 1
        elif update_freq != "epoch":
            update_freq = standardize_int(update_freq, "update_freq")
        self.update_freq = update_freq
        if profile_batch:
            raise ValueError(
                "Profiling is not available in gpulayers. Received: "
                f"profile_batch={profile_batch} (must be 0)"
            )
        self.embeddings_freq = standardize_int(embeddings_freq, "embeddings_freq", minimum=0)
        if self.embeddings_freq or embeddings_metadata is not None:
            raise ValueError(
                "Embedding projections are not supported by gpulayers' TensorBoard (they need TensorFlow's "
                f"projector). Received: embeddings_freq={embeddings_freq!r}, embeddings_metadata={embeddings_metadata!r}"
            )
        self.embeddings_metadata = None
        self._global_train_batch = 0
        self._global_test_batch = 0
        self._batch_start_time = 0.0
        self._epoch_start_time = 0.0
        self._previous_epoch_iterations = 0
        self._writers = {}
        self._train_dir = os.path.join(self.log_dir, "train")
        self._val_dir = os.path.join(self.log_dir, "validation")

    def set_model(self, model):
        super().set_model(model)
        self._close_writers()

    def _writer(self, kind):
        from gpulayers.event_writer import EventFileWriter

        if kind not in self._writers:
            self._writers[kind] = EventFileWriter(self._train_dir if kind == "train" else self._val_dir)
        return self._writers[kind]

    def _close_writers(self):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}

    def _iterations(self):
        """The optimizer's update count as an int (Keras's ``iterations``: a Variable, or a tensor with gradient
        accumulation), or None without an optimizer."""
        iterations = getattr(getattr(self.model, "optimizer", None), "iterations", None)
        return None if iterations is None else int(_to_float(iterations))

    @staticmethod
    def _scalars(logs):
        out = {}
        for name, value in (logs or {}).items():
            value = _to_float(value)
            if _is_real(value):
                out[name] = float(value)
        return out

    def on_train_begin(self, logs=None):
        self._global_train_batch = 0
        self._previous_epoch_iterations = 0

    def on_train_end(self, logs=None):
        self._close_writers()

    def on_train_batch_begin(self, batch, logs=None):
        self._global_train_batch += 1
        if self.write_steps_per_second:
            self._batch_start_time = time.time()

    def on_train_batch_end(self, batch, logs=None):
        if self.update_freq == "epoch" or self._global_train_batch % self.update_freq:
            return
        writer, step = self._writer("train"), self._global_train_batch
        if self.write_steps_per_second:
            elapsed = time.time() - self._batch_start_time
            if elapsed > 0:
                writer.scalar("batch_steps_per_second", 1.0 / elapsed, step)
        for name, value in self._scalars(logs).items():
            writer.scalar(f"batch_{name}", value, step)

    def on_test_batch_begin(self, batch, logs=None):
        self._global_test_batch += 1

    def on_test_end(self, logs=None):
        step = self._iterations()
        if step is None:
            return
        writer = self._writer("val")
        for name, value in self._scalars(logs).items():
            writer.scalar(f"evaluation_{name}_vs_iterations", value, step)

    def on_epoch_begin(self, epoch, logs=None):
        if self.write_steps_per_second:
            self._previous_epoch_iterations = self._iterations() or 0
            self._epoch_start_time = time.time()

    def on_epoch_end(self, epoch, logs=None):
        self._log_epoch_metrics(epoch, logs)
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            self._log_weights(epoch)

    def _log_epoch_metrics(self, epoch, logs):
        values = self._scalars(logs)
        if not values:
            return
        train = {k: v for k, v in values.items() if not k.startswith("val_")}
        val = {k[4:]: v for k, v in values.items() if k.startswith("val_")}
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and hasattr(optimizer, "learning_rate"):
            try:
                train["learning_rate"] = float(optimizer.learning_rate)
            except (TypeError, ValueError):
                pass
        if self.write_steps_per_second:
            elapsed = time.time() - self._epoch_start_time
            done = (self._iterations() or 0) - self._previous_epoch_iterations
            if elapsed > 0:
                train["steps_per_second"] = done / elapsed
        if train:
            writer = self._writer("train")
            for name, value in train.items():
                writer.scalar(f"epoch_{name}", value, epoch)
        if val:
            writer = self._writer("val")
            for name, value in val.items():
                writer.scalar(f"epoch_{name}", value, epoch)

    def _log_weights(self, epoch):
        writer = self._writer("train")
        for layer in self.model.layers:
            for weight in getattr(layer, "weights", []):
                name = str(getattr(weight, "name", "weight")).replace(":", "_")
                writer.histogram(f"{name}/histogram", weight.numpy(), epoch)


class TerminateOnNaN(Callback):
    """Stops training when a batch's ``"loss"`` is NaN or infinite.

    Prints ``Batch <i>: Invalid loss <value>, terminating training`` and sets
    ``model.stop_training = True`` (so ``on_train_end`` still runs), or, with
    ``raise_error=True``, raises RuntimeError at once.
    """

    def __init__(self, raise_error=False):
        super().__init__()
        self.raise_error = standardize_bool(raise_error, "raise_error")

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        try:
            value = float(loss)
        except (TypeError, ValueError):
            return
        if math.isfinite(value):
            return
        if self.raise_error:
            raise RuntimeError(f"Invalid loss {value} at batch {batch}: terminating training immediately.")
        _print(f"Batch {batch}: Invalid loss {value}, terminating training")
        self.model.stop_training = True


class CSVLogger(Callback):
    """Writes one CSV row per epoch: ``epoch`` (0-based) then the sorted log keys.

    Args:
        filename: path of the CSV file.
        separator: the field delimiter (one character).
        append: add to an existing file (a header only if it is empty)
            instead of overwriting it.

    The columns come from the first epoch's logs; when those have no
    ``val_*`` entry (no validation, or ``validation_freq > 1``), a ``val_``
    column for each of them follows, as Keras 3.15 writes it. A missing
    value is ``NA``.
    Lines end with ``\\r\\n`` (Python's csv "excel" dialect, as Keras). A
    list-like value is written as ``[a, b]``.
    """

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        if isinstance(filename, os.PathLike):
            filename = os.fspath(filename)
        if not isinstance(filename, str) or not filename:
            raise TypeError(f"Invalid type for `filename`: expected a path string. Received: filename={filename!r}")
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(f"Invalid value for `separator`: expected a single character. Received: separator={separator!r}")
        self.filename = filename
        self.sep = separator
        self.append = bool(append)
        self.keys = None
        self.writer = None
        self.csv_file = None
        self.append_header = True

    def on_train_begin(self, logs=None):
        self.append_header = True
        if self.append:
            if os.path.exists(self.filename):
                with open(self.filename, newline="") as f:
                    self.append_header = not f.readline()
            mode = "a"
        else:
            mode = "w"
        if self.csv_file is not None and not self.csv_file.closed:
            self.csv_file.close()
        self.csv_file = open(self.filename, mode, newline="")
        self.writer = None
        self.keys = None

    @staticmethod
    def _cell(value):
        if isinstance(value, str):
            return value
        value = _to_float(value)
        if hasattr(value, "__iter__"):
            return "[" + ", ".join(map(str, value)) + "]"
        return value

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.csv_file is None or self.csv_file.closed:
            self.on_train_begin()
        if self.keys is None:
            self.keys = sorted(logs.keys())
            if self.keys and not any(key.startswith("val_") for key in self.keys):
                self.keys += [f"val_{key}" for key in self.keys]
        if self.writer is None:
            dialect = type("_Dialect", (csv.excel,), {"delimiter": self.sep})
            self.writer = csv.DictWriter(self.csv_file, fieldnames=["epoch", *self.keys], dialect=dialect)
            if self.append_header:
                self.writer.writeheader()
        row = {"epoch": epoch}
        row.update((key, self._cell(logs.get(key, "NA"))) for key in self.keys)
        self.writer.writerow(row)
        self.csv_file.flush()

    def on_train_end(self, logs=None):
        if self.csv_file is not None and not self.csv_file.closed:
            self.csv_file.close()
        self.writer = None


class LambdaCallback(Callback):
    """A callback built from functions: ``LambdaCallback(on_epoch_end=lambda epoch, logs: ...)``.

    Any hook name (see ``Callback``) may be given; each function takes the
    hook's arguments: ``(epoch, logs)``, ``(batch, logs)`` or ``(logs)``.
    Other keyword arguments become attributes, as in Keras.
    """

    def __init__(
        self,
        on_epoch_begin=None,
        on_epoch_end=None,
        on_train_begin=None,
        on_train_end=None,
        on_train_batch_begin=None,
        on_train_batch_end=None,
        **kwargs,
    ):
        super().__init__()
        hooks = dict(
            on_epoch_begin=on_epoch_begin,
            on_epoch_end=on_epoch_end,
            on_train_begin=on_train_begin,
            on_train_end=on_train_end,
            on_train_batch_begin=on_train_batch_begin,
            on_train_batch_end=on_train_batch_end,
        )
        for name, fn in kwargs.items():
            if name in HOOKS:
                hooks[name] = fn
            else:
                setattr(self, name, fn)
        for name, fn in hooks.items():
            if fn is None:
                continue
            if not callable(fn):
                raise TypeError(f"Invalid type for `{name}`: expected a function. Received: {name}={fn!r}")
            setattr(self, name, fn)


# Defined in its own module; imported last, since it subclasses Callback.
from gpulayers.callbacks_backup import BackupAndRestore  # noqa: E402
