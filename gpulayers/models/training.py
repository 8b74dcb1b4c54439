"""Training on a model: fit, evaluate, predict and the *_on_batch calls (compile: ``models/compiling.py``).

:class:`Trainer` is mixed into :class:`gpulayers.models.Sequential`. One step
(:meth:`Trainer.train_step`, which a subclass may override as in Keras): the
batch goes to the backend once, the model runs forward with
``training=True`` while the tape records, :meth:`Trainer.compute_loss` adds
the compiled loss and ``model.losses``, :func:`gpulayers.autodiff.gradient`
walks the tape back to the trainable weights, and the optimizer applies the
gradients. Only the logged scalars come back to the host.

Beside it: the checks made before a call changes anything
(``models/fit_checks.py``), the undo of a step that fails
(``models/step_undo.py``) and Ctrl-C held between steps
(``models/interrupts.py``).
"""

import math

import numpy as np

from backends import get_ops
from gpulayers import autodiff, metrics as metrics_module, utils
from gpulayers.autodiff import no_backward, unwrap
from gpulayers.callbacks import CallbackList
from gpulayers.models import array_data
from gpulayers.models.array_data import ArrayBatches, num_samples, rows
from gpulayers.data_adapters import is_array_like
from gpulayers import data_adapters
from gpulayers.models.compile_utils import COMPILE_KEYS, flatten_like_outputs
from gpulayers.models.compiling import Compiling
from gpulayers.models.fit_checks import (
    build_for, check_batch_size, check_data, check_fit_arguments, check_verbose, class_weights, unbuilt_if_refused,
)
from gpulayers.models.interrupts import interrupts_between_steps
from gpulayers.models.step_graphs import StepGraphs
from gpulayers.models.step_undo import run_train_step
from gpulayers.tree import flatten, map_structure

__all__ = ["COMPILE_KEYS", "Trainer"]

# The gradient seed of a scalar loss, ones of its dtype, made once per backend and dtype instead of a fill
# per step. Backward passes only read their upstream gradient, and the optimizer only reads its gradients.
_LOSS_SEEDS = {}


def _loss_seed(loss):
    ops = get_ops()
    key = (loss.data.dtype.str, tuple(loss.data.shape))
    made_by, seed = _LOSS_SEEDS.get(key, (None, None))
    if made_by is not ops:  # first use, or another backend since
        seed = ops.xp.ones(loss.data.shape, dtype=loss.data.dtype)
        _LOSS_SEEDS[key] = (ops, seed)
    return seed


def _to_python(value):
    """A metric result as a Python float (or a list of floats)."""
    value = unwrap(value)
    if isinstance(value, (list, tuple)):
        return [_to_python(v) for v in value]
    if hasattr(value, "ndim") and value.ndim > 0:
        host = value if isinstance(value, np.ndarray) else get_ops().to_numpy(value)
        return [float(v) for v in host.reshape(-1)] if host.size != 1 else float(host.reshape(-1)[0])
    return float(value)


def _python_logs(logs):
    """The logs a step returned, with every value a Python float (or list), for the callbacks."""
    if not isinstance(logs, dict):
        raise TypeError(f"train_step/test_step must return a dict of metric results. Received: {logs!r:.80}")
    return {k: _to_python(v) for k, v in logs.items()}


def _executions(enumerated, n):
    """Keras's executions: ``(begin_step, end_step, batches)`` with up to ``n`` consecutive batches
    each; ``end_step`` is ``begin_step + n - 1`` even for a short last one, as in Keras's EpochIterator."""
    batches, begin = [], 0
    for step, batch in enumerated:
        if not batches:
            begin = step
        batches.append(batch)
        if len(batches) == n:
            yield begin, begin + n - 1, batches
            batches = []
    if batches:
        yield begin, begin + n - 1, batches


class Trainer(Compiling):
    """The Keras training API; expects ``__call__``, ``backward``, ``trainable_weights``, ``losses``."""

    _initial_epoch = None  # set in on_train_begin by a callback that restored a backup (BackupAndRestore)
    stop_training = False
    history = None
    # compile()'s own objects: not metrics or layers the model holds (Layer's attribute tracking skips them).
    _untracked_attributes = frozenset(
        {"_layers", "_trainable_variables", "_non_trainable_variables", "_losses", "_metrics", "_variables",
         "_loss_tracker", "_compile_loss", "_compile_metrics", "_compile_args", "loss", "optimizer",
         "_step_graphs"}
    )

    # ------------------------------------------------------------ data checks

    def _check_data(self, x, y, sample_weight, name_x="x", name_y="y", build=True):
        """Validate x, y and sample weights (arrays, or lists/dicts of them) before anything changes."""
        with unbuilt_if_refused(self):
            return check_data(self, x, y, sample_weight, name_x, name_y, build)

    # ------------------------------------------------------------ one step

    def _batch_dtypes(self, x):
        """The dtype float inputs go to the backend in (None: each Input's, done by the graph), and the
        dtype of float targets and of sample weights."""
        inputs = getattr(self, "_inputs", None)
        if inputs is not None:
            floats = [t.dtype for t in self._outputs if np.dtype(t.dtype).kind == "f"]
            target = floats[0] if floats else self.dtype
            return (inputs[0].dtype if len(inputs) == 1 and hasattr(x, "shape") else None), target
        layers = getattr(self, "_layers", None)
        dtype = layers[0].dtype if layers else self.dtype  # a Sequential's input dtype
        return dtype, dtype

    def _to_batch(self, ops, x, y, sw):
        input_dtype, dtype = self._batch_dtypes(x)
        xb = array_data.to_backend_batch(ops, x, input_dtype)
        yb = array_data.to_backend_batch(ops, y, dtype)
        swb = array_data.to_backend_batch(ops, sw, dtype, cast_ints=True)
        return xb, yb, swb

    @staticmethod
    def _batch_data(xb, yb, swb):
        """What ``train_step``/``test_step`` receive: ``(x, y)`` or ``(x, y, sample_weight)``, as Keras."""
        return (xb, yb) if swb is None else (xb, yb, swb)

    # ------------------------------------------------------------ one step

    def _flat_targets(self, y, y_pred, sample_weight):
        keys = self._output_keys()
        if len(keys) == 1:
            return [y], [y_pred], [sample_weight]
        preds = flatten(y_pred) if not isinstance(y_pred, dict) else [y_pred[k] for k in keys]
        targets = [None] * len(keys) if y is None else flatten_like_outputs(y, keys, "y", allow_missing=True)
        if sample_weight is None or not isinstance(sample_weight, (list, tuple, dict)):
            weights = [sample_weight] * len(keys)  # one weight per sample, for every output
        else:
            weights = flatten_like_outputs(sample_weight, keys, "sample_weight", allow_missing=True)
        return targets, preds, weights

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The compiled loss (each output's, weighted by ``loss_weights``, summed) plus every loss of
        ``self.losses`` (``add_loss``, regularizers), as a scalar tensor.

        Override it (as in Keras) to train on another loss; ``train_step`` and
        ``test_step`` call it.
        """
        terms = []
        if self._compiled and self._compile_loss.active:
            terms.append(self._compile_loss(*self._flat_targets(y, y_pred, sample_weight)))
        for loss in self.losses:
            if loss.data.dtype.kind != "f":
                loss = loss.astype(self.dtype)
            terms.append(loss.sum())
        if not terms:
            raise ValueError("No loss to compute. Provide a `loss` argument in `compile()`.")
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Update the compiled metrics with this batch and return every metric's result (a dict)."""
        with no_backward():
            targets, preds, weights = self._flat_targets(y, y_pred, sample_weight)
            for i, metric, weighted, _ in self._compile_metrics.entries:
                metric.update_state(unwrap(targets[i]), unwrap(preds[i]), unwrap(weights[i]) if weighted else None)
        return self.get_metrics_result()

    def get_metrics_result(self):
        """``{name: result}`` for every metric of :attr:`metrics`. As in Keras, the built-in means are
        left where they are computed (device 0-d arrays on the GPU: reading them is a sync); the fit
        loop and ``*_on_batch`` turn the logs into Python floats when they hand them out."""
        logs = {}
        names = self._compile_metrics.log_names() if self._compiled else {}
        for metric in self.metrics:
            result = metrics_module.device_result(metric)
            if isinstance(result, dict):
                logs.update(result)
            else:
                logs[names.get(id(metric), metric.name)] = result
        return logs

    def _track_loss(self, loss, x):
        batch = num_samples(x)
        self._loss_tracker.update_state(loss.data, sample_weight=batch)
        self._compile_loss.update_trackers(batch)

    def train_step(self, data):
        """One training step on a batch ``(x, y)`` or ``(x, y, sample_weight)``; returns the logs.

        Forward with ``training=True`` on the tape, :meth:`compute_loss`, the
        gradients of the trainable weights, the loss tracker and
        :meth:`compute_metrics` (on the predictions, before the update, as
        Keras's JAX trainer), then one optimizer update. A subclass may
        override it, as in Keras; ``fit`` and ``train_on_batch`` undo a step
        that raises (``models/step_undo.py``).
        """
        x, y, sample_weight = utils.unpack_x_y_sample_weight(data)
        weights = self.trainable_weights
        ops = get_ops()
        if getattr(self, "_compile_args", {}).get("jit_compile") is True and ops.supports_graphs:
            # compile(jit_compile=True) on the GPU: the differentiation replayed from a CUDA graph.
            if self._step_graphs is None:
                self._step_graphs = StepGraphs()
            (x, y, sample_weight), (loss, grads, y_pred) = self._step_graphs.run(
                self, ops, self._differentiate, weights, x, y, sample_weight
            )
        else:
            loss, grads, y_pred = self._differentiate(weights, x, y, sample_weight)
        # The metrics before the optimizer (they read no weight): the GPU's fused update, in place, is then
        # the step's last act, and a step failing before it is undone whole (models/step_undo.py).
        self._track_loss(loss, x)
        logs = self.compute_metrics(x, y, y_pred, sample_weight)
        if weights:
            self.optimizer.apply(grads, weights)
        return logs

    def _differentiate(self, weights, x, y, sample_weight):
        """The training step's forward pass, loss and gradients of ``weights``: ``(loss, grads, y_pred)``."""
        y_pred = self(x, training=True)
        loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
        if weights:
            scaled = self.optimizer.scale_loss(loss)  # a LossScaleOptimizer's dynamic scale
            grads = autodiff.gradient(scaled, weights, output_gradient=_loss_seed(scaled), free=True)
        else:
            grads = []
        return loss, grads, y_pred

    def test_step(self, data):
        """The loss and metrics of one batch in inference mode; returns the logs."""
        x, y, sample_weight = utils.unpack_x_y_sample_weight(data)
        with no_backward():
            y_pred = self(x, training=False)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=False)
        self._track_loss(loss, x)
        return self.compute_metrics(x, y, y_pred, sample_weight)

    def predict_step(self, data):
        """The model's output for one batch of inputs (inference mode)."""
        x, _, _ = utils.unpack_x_y_sample_weight(data)
        return self(x, training=False)

    def _train_batch(self, ops, xb, yb, swb):
        return _python_logs(run_train_step(self, self._batch_data(xb, yb, swb)))

    def _test_batch(self, ops, xb, yb, swb):
        return _python_logs(self.test_step(self._batch_data(xb, yb, swb)))

    # ------------------------------------------------------------ fit

    def fit(
        self,
        x=None,
        y=None,
        batch_size=None,
        epochs=1,
        verbose="auto",
        callbacks=None,
        validation_split=0.0,
        validation_data=None,
        shuffle=True,
        class_weight=None,
        sample_weight=None,
        initial_epoch=0,
        steps_per_epoch=None,
        validation_steps=None,
        validation_batch_size=None,
        validation_freq=1,
    ):
        """Train for ``epochs`` epochs; returns a History (``.history`` holds per-epoch logs).

        Everything is validated before the model is built or any weight
        changes (``models/fit_checks.py``): compile first, x and y of equal
        length and fitting the model, sparse labels in range, class_weight,
        validation_data, validation_split in [0, 1). A step that raises is
        undone whole; Ctrl-C stops at the end of the running step with
        KeyboardInterrupt, its ``history`` the epochs completed.
        """
        self._require_compiled("fit")
        verbose, batch_size, steps_per_epoch, validation_steps, class_weight = check_fit_arguments(
            verbose, batch_size, epochs, initial_epoch, validation_freq, steps_per_epoch, validation_split,
            validation_steps, class_weight,
        )
        if y is None and self._needs_targets() and is_array_like(x):
            raise ValueError("Invalid value for `y`: fit() needs targets for the compiled loss. Received: y=None")
        ops = get_ops()
        if is_array_like(x):
            with unbuilt_if_refused(self):  # every check first; a model is built only for data it accepts
                x, y, sample_weight = self._check_data(x, y, sample_weight, build=False)
                if class_weight is not None:
                    sample_weight = class_weights(y, class_weight, sample_weight)
                val = None
                if validation_data is not None:
                    val = self._validation_source(validation_data, validation_batch_size or batch_size,
                                                  validation_steps, like=x)
                elif validation_split:
                    total = num_samples(x)
                    split = int(math.ceil(total * (1.0 - validation_split)))
                    if split == 0 or split == total:
                        raise ValueError(
                            f"Invalid value for `validation_split`: {validation_split} of {total} samples leaves "
                            "the training or the validation set empty."
                        )
                    val_batch_size = check_batch_size(validation_batch_size or batch_size, "validation_batch_size")
                    val = ArrayBatches(rows(x, split, None), rows(y, split, None), rows(sample_weight, split, None),
                                       val_batch_size, validation_steps)
                    x, y, sample_weight = rows(x, 0, split), rows(y, 0, split), rows(sample_weight, 0, split)
                train = ArrayBatches(x, y, sample_weight, batch_size, steps_per_epoch, shuffle)
                build_for(self, x)
        else:
            # A generator, iterator, PyDataset or torch DataLoader: its own batches (Keras's rules and errors).
            data_adapters.check_validation_split(x, validation_split)
            train = self._data_source(x, y, sample_weight, batch_size, steps_per_epoch, shuffle, class_weight)
            val = None
            try:
                with unbuilt_if_refused(self):
                    first = train.peek()  # checks the model against the first batch before any weight changes
                    if first is not None:
                        first = self._check_data(*first, build=False)
                    if validation_data is not None:
                        val = self._validation_source(validation_data, validation_batch_size or batch_size,
                                                      validation_steps, like=None if first is None else first[0])
                    if first is not None:
                        build_for(self, first[0])
            except BaseException:
                train.close()
                raise
        cbs = CallbackList(callbacks, add_history=True, add_progbar=verbose != 0, model=self, verbose=verbose,
                           epochs=epochs, steps=train.num_batches)
        self.stop_training = False
        cbs.on_train_begin()
        # BackupAndRestore restores a backup in on_train_begin and sets where this fit resumes; taken once,
        # so a later fit starts where it is told to.
        initial_epoch, self._initial_epoch = self._initial_epoch or initial_epoch, None
        logs = {}
        try:
            with train, interrupts_between_steps() as check_interrupt:
                logs = self._fit_epochs(ops, cbs, check_interrupt, train, val, initial_epoch, epochs, validation_freq)
        except KeyboardInterrupt as exc:
            exc.history = self.history  # the epochs completed so far
            raise
        finally:
            if val is not None:
                val.close()
        if self.optimizer is not None and epochs > 0 and getattr(self.optimizer, "built", False):
            self.optimizer.finalize_variable_values(self.trainable_weights)  # Keras's: EMA weights take over
        cbs.on_train_end(logs)
        return self.history

    def _data_source(self, x, y, sample_weight, batch_size, steps, shuffle=False, class_weight=None):
        return data_adapters.EpochIterator(
            x, y, sample_weight, batch_size=batch_size, steps_per_epoch=steps, shuffle=shuffle,
            class_weight=class_weight, device_arrays=get_ops().name == "cupy",
        )

    def _validation_source(self, validation_data, batch_size, steps, like=None):
        """The validation batches: arrays in a tuple ``(x, y[, sample_weight])`` (checked now), or a
        generator, iterator, PyDataset or DataLoader of its own batches. ``like``: fit's x (an unbuilt model
        is built for its shape)."""
        if isinstance(validation_data, (tuple, list)):
            if len(validation_data) not in (2, 3):
                raise ValueError(
                    "Invalid value for `validation_data`: expected a tuple (x_val, y_val) or (x_val, y_val, "
                    f"val_sample_weight). Received: a {type(validation_data).__name__} of {len(validation_data)} items"
                )
            xv, yv = validation_data[0], validation_data[1]
            swv = validation_data[2] if len(validation_data) == 3 else None
            xv, yv, swv = check_data(self, xv, yv, swv, "validation_data[0]", "validation_data[1]", build=False,
                                     like=like)
            return ArrayBatches(xv, yv, swv, check_batch_size(batch_size, "validation_batch_size"), steps)
        if is_array_like(validation_data):
            raise ValueError(
                "Invalid value for `validation_data`: expected a tuple (x_val, y_val) or (x_val, y_val, "
                f"val_sample_weight), or a generator or dataset. Received: {type(validation_data).__name__}"
            )
        return self._data_source(validation_data, None, None, None, steps)

    def _fit_epochs(self, ops, cbs, check_interrupt, train, val, initial_epoch, epochs, validation_freq):
        logs = {}
        for epoch in range(initial_epoch, epochs):
            if epoch > initial_epoch and train.out_of_data():
                break  # a generator that has ended gives no more epochs (Keras warns and stops)
            self.reset_metrics()
            cbs.on_epoch_begin(epoch)
            for begin, end, batches in _executions(train.enumerate_epoch(), self.steps_per_execution):
                cbs.on_train_batch_begin(begin)
                for xb, yb, swb in batches:
                    logs = run_train_step(self, self._batch_data(*self._to_batch(ops, xb, yb, swb)))
                    check_interrupt()
                logs = _python_logs(logs)  # the one read of the device values per execution
                cbs.on_train_batch_end(end, logs)
                if self.stop_training:
                    break
            epoch_logs = dict(logs)
            check_interrupt()  # a Ctrl-C during the last step's callbacks: no validation, no epoch end
            if val is not None and (epoch + 1) % validation_freq == 0:
                val_logs = self._evaluate_source(ops, val, callbacks=cbs, verbose=0, check_interrupt=check_interrupt)
                epoch_logs.update({f"val_{k}": v for k, v in val_logs.items()})
                check_interrupt()
            cbs.on_epoch_end(epoch, epoch_logs)
            if self.stop_training:
                break
        return logs

    # ------------------------------------------------------------ evaluate / predict

    def _evaluate_source(self, ops, source, callbacks, verbose, check_interrupt=None):
        self.reset_metrics()
        if isinstance(callbacks, CallbackList):  # fit's own, for its validation (as Keras: on_test_* fire)
            cbs = callbacks
        else:
            cbs = CallbackList(callbacks, add_progbar=verbose != 0, model=self, verbose=verbose, epochs=1,
                               steps=source.num_batches)
        cbs.on_test_begin()
        logs = {}
        for begin, end, batches in _executions(source.enumerate_epoch(), self.steps_per_execution):
            cbs.on_test_batch_begin(begin)
            for xb, yb, swb in batches:
                logs = self.test_step(self._batch_data(*self._to_batch(ops, xb, yb, swb)))
            if check_interrupt is not None:
                check_interrupt()  # fit's validation stops at a Ctrl-C: it changes nothing the model keeps
            logs = _python_logs(logs)
            cbs.on_test_batch_end(end, logs)
        cbs.on_test_end(logs)
        return logs

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None, callbacks=None, return_dict=False):
        """Loss (and metrics) on ``x``, ``y`` (arrays, or a generator, iterator, PyDataset or DataLoader of
        batches): a scalar without metrics, else ``[loss, *metrics]``."""
        self._require_compiled("evaluate")
        verbose = check_verbose(verbose)
        if steps is not None:
            steps = check_batch_size(steps, "steps")
        if is_array_like(x):
            batch_size = check_batch_size(batch_size)
            if y is None and self._needs_targets():
                raise ValueError("Invalid value for `y`: evaluate() needs targets for the compiled loss. Received: y=None")
            x, y, sample_weight = self._check_data(x, y, sample_weight)
            source = ArrayBatches(x, y, sample_weight, batch_size, steps)
        else:
            source = self._data_source(x, y, sample_weight, batch_size, steps)
        with source:
            logs = self._evaluate_source(get_ops(), source, callbacks, verbose)
        return self._format_logs(logs, return_dict)

    def _format_logs(self, logs, return_dict):
        if return_dict:
            return dict(logs)
        # Keras's order: the loss, each output's loss, the metrics logged under their own name (in the
        # model's order), then every other log (per-output metrics...) sorted by name.
        first = []
        if self._compiled:
            first = ["loss"] + [t.name for t in self._compile_loss.trackers.values()]
        first += [m.name for m in self.metrics if m.name in logs and m.name not in first]
        names = [n for n in first if n in logs] + sorted(n for n in logs if n not in first)
        values = [logs[name] for name in names]
        return values[0] if len(values) == 1 else values

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Outputs for ``x`` as numpy arrays (a list or dict of them for several outputs), computed in batches
        (inference mode)."""
        verbose = check_verbose(verbose)
        batch_size = check_batch_size(batch_size)
        if getattr(self, "_layers", None) is not None and not self.layers and type(self).call is _sequential_call():
            raise ValueError(f"Sequential model '{self.name}' has no layers to predict with.")
        ops = get_ops()
        if steps is not None:
            steps = check_batch_size(steps, "steps")
        if is_array_like(x):
            data = array_data.convert(x, "x")
            source = ArrayBatches(data, None, None, batch_size, steps, at_least_one=True)
        else:
            source = self._data_source(x, None, None, None, steps)
        cbs = CallbackList(callbacks, add_progbar=verbose != 0, model=self, verbose=verbose, epochs=1,
                           steps=source.num_batches)
        cbs.on_predict_begin()
        outputs = []
        with source, no_backward():
            for begin, end, batches in _executions(source.enumerate_epoch(), self.steps_per_execution):
                cbs.on_predict_batch_begin(begin)
                device = [self.predict_step((self._to_batch(ops, xb, None, None)[0],)) for xb, _, _ in batches]
                chunk = [map_structure(lambda t: ops.to_numpy(unwrap(t)), out) for out in device]
                outputs.extend(chunk)
                cbs.on_predict_batch_end(end, {"outputs": chunk[0] if len(chunk) == 1 else array_data.concatenate(chunk)})
        cbs.on_predict_end()
        if not outputs:
            raise ValueError("predict() got no batches: the data is empty.")
        return array_data.concatenate(outputs)

    # ------------------------------------------------------------ single batches

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        """One training step on one batch; returns that batch's loss (and metrics), as Keras 3
        (the metrics are reset first, as in every Keras backend's trainer)."""
        self._require_compiled("train_on_batch")
        if y is None and self._needs_targets():
            raise ValueError("Invalid value for `y`: train_on_batch() needs targets. Received: y=None")
        class_weight = data_adapters.check_class_weight(class_weight)
        x, y, sample_weight = self._check_data(x, y, sample_weight)
        if class_weight is not None:
            sample_weight = class_weights(y, class_weight, sample_weight)
        self.reset_metrics()
        ops = get_ops()
        return self._format_logs(self._train_batch(ops, *self._to_batch(ops, x, y, sample_weight)), return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        """Loss (and metrics) on one batch, without training."""
        self._require_compiled("test_on_batch")
        if y is None and self._needs_targets():
            raise ValueError("Invalid value for `y`: test_on_batch() needs targets. Received: y=None")
        x, y, sample_weight = self._check_data(x, y, sample_weight)
        self.reset_metrics()
        ops = get_ops()
        return self._format_logs(self._test_batch(ops, *self._to_batch(ops, x, y, sample_weight)), return_dict)

    def predict_on_batch(self, x):
        """Outputs for one batch as a numpy array."""
        ops = get_ops()
        with no_backward():
            return map_structure(lambda t: ops.to_numpy(unwrap(t)), self(x, training=False))

    # ------------------------------------------------------------ files

    def save(self, filepath):
        """Save the whole model as a Keras 3 ``.keras`` file (atomically).

        A compiled model is saved with its compile config and optimizer state:
        ``gpulayers.models.load_model`` (or Keras's) resumes its training.
        """
        from gpulayers import saving

        saving.save_model(self, filepath)

    def save_weights(self, filepath):
        """Save the weights (and a compiled model's optimizer state) in Keras 3's ``.weights.h5`` layout (atomically)."""
        from gpulayers import saving

        saving.save_weights(self, filepath)

    def load_weights(self, filepath):
        """Load weights from a ``.weights.h5`` or ``.keras`` file; validates before assigning.

        A compiled model also restores the optimizer state the file holds.
        """
        from gpulayers import saving

        saving.load_weights(self, filepath)


def _sequential_call():
    from gpulayers.models.sequential import Sequential

    return Sequential.call
