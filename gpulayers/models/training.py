"""Training on a model: compile, fit, evaluate, predict and the *_on_batch calls.

:class:`Trainer` is mixed into :class:`gpulayers.models.Sequential`. One step
(:meth:`Trainer.train_step`, which a subclass may override as in Keras): the
batch goes to the backend once, the model runs forward with
``training=True`` while the tape records, :meth:`Trainer.compute_loss` adds
the compiled loss and ``model.losses``, :func:`gpulayers.autodiff.gradient`
walks the tape back to the trainable weights, and the optimizer applies the
gradients. Only the logged scalars come back to the host.
"""

import contextlib
import math
import numbers
import signal
import threading

import numpy as np

from backends import get_ops
from gpulayers import autodiff, losses as losses_module, metrics as metrics_module, optimizers, utils
from gpulayers.argument_validation import standardize_bool
from gpulayers.autodiff import no_backward, unwrap
from gpulayers.callbacks import CallbackList
from gpulayers.models import array_data
from gpulayers.models.array_data import ArrayBatches, num_samples, rows
from gpulayers.data_adapters import is_array_like
from gpulayers import data_adapters
from gpulayers.models.compile_utils import CompileLoss, CompileMetrics, flatten_like_outputs, is_per_output
from gpulayers.models.step_graphs import StepGraphs
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


def _check_verbose(verbose):
    if verbose == "auto":
        return 1
    if isinstance(verbose, bool) or verbose not in (0, 1, 2):
        raise ValueError(f"Invalid value for `verbose`: expected 'auto', 0, 1 or 2. Received: verbose={verbose!r}")
    return int(verbose)


def _check_batch_size(batch_size, name="batch_size"):
    if batch_size is None:
        return 32
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"Invalid value for `{name}`: expected a positive int. Received: {name}={batch_size!r}")
    return int(batch_size)


@contextlib.contextmanager
def _interrupts_between_steps():
    """Hold Ctrl-C (SIGINT) until the running training step has finished.

    Yields a function that raises KeyboardInterrupt if one arrived, to be
    called between steps, so an interrupted fit leaves the model exactly as
    its last completed step left it. A second Ctrl-C raises at once. Only
    possible in the main thread with Python's default handler installed;
    elsewhere interrupts behave as usual.
    """
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield lambda: None
        return
    pending = []

    def hold(signum, frame):
        if pending:  # asked twice: stop now
            raise KeyboardInterrupt
        pending.append(signum)

    signal.signal(signal.SIGINT, hold)
    try:

        def check():
            if pending:
                raise KeyboardInterrupt

        yield check
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# The keys of Keras 3's compile_config.
COMPILE_KEYS = frozenset(
    {"optimizer", "loss", "loss_weights", "metrics", "weighted_metrics", "run_eagerly", "steps_per_execution", "jit_compile"}
)


def _function_name(entry):
    """Keras's reference to a built-in function, ``{"class_name": "function", "module": "builtins" or
    "keras...", "config": name}``, as the name, which compile() looks up among gpulayers' own (as Keras
    looks it up in its built-in modules); anything else as it is."""
    if isinstance(entry, dict) and entry.get("class_name") == "function" and isinstance(entry.get("config"), str):
        module = entry.get("module")
        if isinstance(module, str) and (module in ("builtins", "keras") or module.startswith("keras.")):
            return entry["config"]
    return entry


def _serialize_compile_entry(value, serialize):
    """A compile argument as Keras's compile_config holds it: names and dicts as given, objects serialized."""
    if value is None or isinstance(value, (str, dict)):
        return value
    return serialize(value)


def _entries_ok(value, numbers_only=False, depth=0):
    """A compile_config entry: None, a name or serialized object (a number for loss weights), or lists and
    dicts of them, two levels deep at most."""
    if value is None:
        return True
    if numbers_only and isinstance(value, (int, float)) and not isinstance(value, bool):
        return True
    if not numbers_only and (isinstance(value, str) or (isinstance(value, dict) and "class_name" in value)):
        return True
    if depth < 2 and isinstance(value, list):
        return all(_entries_ok(v, numbers_only, depth + 1) for v in value)
    if depth < 2 and isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return all(_entries_ok(v, numbers_only, depth + 1) for v in value.values())
    return False


def _serialize_nested(value, serialize):
    """A compile argument (one entry, a list, a list of lists, a dict) with its objects serialized."""
    if isinstance(value, dict) and "class_name" not in value:
        return {k: _serialize_nested(v, serialize) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_serialize_nested(v, serialize) for v in value]
    return _serialize_compile_entry(value, serialize)


def _function_names(value):
    """:func:`_function_name` through lists and dicts of entries (Keras's multi-output forms)."""
    if isinstance(value, dict) and "class_name" not in value:
        return {k: _function_names(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_function_names(v) for v in value]
    return _function_name(value)


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


class Trainer:
    """The Keras training API; expects ``__call__``, ``backward``, ``trainable_weights``, ``losses``."""

    _compiled = False
    _auto_loss_scale = None  # the LossScaleOptimizer compile wrapped around the given optimizer
    _step_graphs = None  # compile(jit_compile=True) on the GPU: models/step_graphs.py
    _initial_epoch = None  # set in on_train_begin by a callback that restored a backup (BackupAndRestore)
    optimizer = None
    loss = None
    stop_training = False
    steps_per_execution = 1
    history = None
    # compile()'s own objects: not metrics or layers the model holds (Layer's attribute tracking skips them).
    _untracked_attributes = frozenset(
        {"_layers", "_trainable_variables", "_non_trainable_variables", "_losses", "_metrics", "_variables",
         "_loss_tracker", "_compile_loss", "_compile_metrics", "_compile_args", "loss", "optimizer",
         "_step_graphs"}
    )

    # ------------------------------------------------------------ compile

    def compile(
        self,
        optimizer="rmsprop",
        loss=None,
        loss_weights=None,
        metrics=None,
        weighted_metrics=None,
        run_eagerly=False,
        steps_per_execution=1,
        jit_compile="auto",
        auto_scale_loss=True,
    ):
        """Configure training: optimizer, loss and metrics (names or objects, as Keras).

        ``metrics`` ignore sample weights; ``weighted_metrics`` use them (Keras's rule).
        ``steps_per_execution`` (an int >= 1) is Keras's: ``fit``, ``evaluate``
        and ``predict`` run that many batches between two reads of the logs
        (the callbacks' ``on_*_batch_begin`` / ``on_*_batch_end`` fire once
        per execution, with the first and the last step), so on a GPU the
        loss and metrics stay on the device in between.
        ``run_eagerly`` (a bool) is accepted for compatibility (gpulayers
        always runs eagerly) and kept in :meth:`get_compile_config`, as is
        ``jit_compile`` (a bool or ``"auto"``, which means False here): with
        ``jit_compile=True`` on the GPU the built-in ``train_step`` replays
        its forward and backward pass from a CUDA graph captured at the
        second step of each input shape (``models/step_graphs.py``); on the
        CPU, with ``run_eagerly=True`` or an overridden ``train_step``, it
        changes nothing. With ``auto_scale_loss`` (the
        default) a model whose dtype policy is ``mixed_float16`` gets its
        optimizer wrapped in a :class:`~gpulayers.optimizers.LossScaleOptimizer`,
        as in Keras (the compile config keeps the optimizer as given). With several
        outputs, ``loss``, ``loss_weights``, ``metrics`` and
        ``weighted_metrics`` take Keras's lists (one entry per output) or
        dicts keyed by output name; one loss applies to every output.
        """
        run_eagerly = standardize_bool(run_eagerly, "run_eagerly")
        auto_scale_loss = standardize_bool(auto_scale_loss, "auto_scale_loss")
        if jit_compile != "auto":
            jit_compile = standardize_bool(jit_compile, "jit_compile")
        if isinstance(steps_per_execution, bool) or not isinstance(steps_per_execution, numbers.Integral) \
                or steps_per_execution < 1:
            raise ValueError(
                "Invalid value for `steps_per_execution`: expected an integer >= 1. "
                f"Received: steps_per_execution={steps_per_execution!r}"
            )
        keys = self._output_keys()
        opt = optimizers.get(optimizer)
        # A loss of None: the model's own losses (add_loss) are the loss.
        compile_loss = CompileLoss(loss, loss_weights, keys)
        per_output_loss = flatten_like_outputs(loss, keys, "loss") if is_per_output(loss) else loss
        compile_metrics = CompileMetrics(metrics, weighted_metrics, keys, per_output_loss, self._flat_output_shapes())
        # Two outputs of one shared layer have one name: their loss logs share it, as in Keras.
        names = ["loss"] + [e[3] for e in compile_metrics.entries]
        if len(set(names)) != len(names):
            raise ValueError(f"Invalid value for `metrics`: metric names must be unique. Received names: {names}")
        # Keras's rule: a mixed_float16 model's optimizer gets dynamic loss scaling; the compile config
        # keeps the optimizer as given.
        self._auto_loss_scale = None
        if auto_scale_loss and opt is not None and self.dtype_policy.name == "mixed_float16" \
                and not isinstance(opt, optimizers.LossScaleOptimizer):
            opt = self._auto_loss_scale = optimizers.LossScaleOptimizer(opt, name="loss_scale_optimizer")
        self.optimizer, self.loss = opt, loss
        self._compile_loss, self._compile_metrics = compile_loss, compile_metrics
        self._loss_tracker = metrics_module.Mean(name="loss")
        self._compile_args = {
            "loss": loss,
            "loss_weights": loss_weights,
            "metrics": metrics,
            "weighted_metrics": weighted_metrics,
            "run_eagerly": run_eagerly,
            # What Keras writes: "auto" resolves to False where nothing is jit-compiled (gpulayers never is).
            "jit_compile": False if jit_compile == "auto" or run_eagerly else jit_compile,
        }
        self.steps_per_execution = int(steps_per_execution)
        self._step_graphs = None  # graphs of the last compile's step are not this one's
        self._compiled = True
        self.stop_training = False

    @property
    def _loss_obj(self):
        """The compiled loss object of a one-output model (None without a loss or with several outputs)."""
        if not self._compiled or len(self._compile_loss.losses) != 1:
            return None
        return self._compile_loss.losses[0]

    def _needs_targets(self):
        return self._compiled and self._compile_loss.active

    def _output_keys(self):
        """The outputs' keys: a dict output's keys, else the output layers' names (one output: one key)."""
        struct = getattr(self, "_outputs_struct", None)
        if isinstance(struct, dict):
            return sorted(struct)  # Keras's order of a dict's outputs
        try:
            names = self.output_names
        except AttributeError:
            names = None
        return list(names) if names else ["output"]

    def _flat_output_shapes(self):
        outputs = getattr(self, "_outputs", None)
        if outputs is not None:
            return [t.shape for t in outputs]
        try:
            return [self.output_shape]
        except (AttributeError, ValueError, TypeError):
            return [None]

    def get_compile_config(self):
        """The arguments of :meth:`compile` as Keras 3 serializes them (``{}`` when not compiled).

        The keys are Keras's: ``optimizer`` (always the serialized optimizer,
        even when compiled with a name), ``loss``, ``metrics`` and
        ``weighted_metrics`` (names as given, objects serialized, in their
        lists or dicts), ``loss_weights``, ``run_eagerly``, ``steps_per_execution``
        and ``jit_compile``. Saving a model writes this dict as
        ``compile_config``.
        """
        if not self._compiled:
            return {}
        args = self._compile_args
        return {
            "optimizer": None if self.optimizer is None else optimizers.serialize(
                self.optimizer.inner_optimizer if self.optimizer is self._auto_loss_scale else self.optimizer),
            "loss": _serialize_nested(args["loss"], losses_module.serialize),
            "loss_weights": args["loss_weights"],
            "metrics": _serialize_nested(args["metrics"], metrics_module.serialize),
            "weighted_metrics": _serialize_nested(args["weighted_metrics"], metrics_module.serialize),
            "run_eagerly": args["run_eagerly"],
            "steps_per_execution": self.steps_per_execution,
            "jit_compile": args["jit_compile"],
        }

    def compile_from_config(self, config):
        """Compile from a :meth:`get_compile_config` dict (one written by gpulayers or by Keras 3).

        Only gpulayers' own optimizers, losses and metrics are built; a name
        or config of anything else (a user's class, a module to import) is
        refused with ValueError and the model is left as it was. As in Keras,
        the optimizer starts without state; ``saving`` restores it from the
        weights file.
        """
        if not isinstance(config, dict):
            raise TypeError(f"Invalid type for `config`: expected a dict. Received: config={config!r:.200}")
        unknown = sorted(set(config) - COMPILE_KEYS, key=str)
        if unknown:
            raise ValueError(
                f"Invalid value for `config`: unknown compile argument(s) {unknown}; expected keys among "
                f"{sorted(COMPILE_KEYS)}. Received: config={config!r:.200}"
            )
        kwargs = dict(config)
        optimizer = kwargs.get("optimizer", "rmsprop")  # compile()'s default, as in Keras
        if optimizer is not None and not isinstance(optimizer, (str, dict)):
            raise ValueError(
                f"Invalid value for `config['optimizer']`: expected a name or a serialized optimizer. "
                f"Received: {optimizer!r:.200}"
            )
        kwargs["optimizer"] = optimizers.get(optimizer, argument="optimizer")
        for key in ("loss", "metrics", "weighted_metrics", "loss_weights"):
            if not _entries_ok(kwargs.get(key), numbers_only=key == "loss_weights"):
                raise ValueError(
                    f"Invalid value for `config['{key}']`: expected null, a name or serialized object, or a list "
                    f"or dict of them (one per output). Received: {kwargs.get(key)!r:.200}"
                )
        for key in ("loss", "metrics", "weighted_metrics"):
            kwargs[key] = _function_names(kwargs.get(key))
        self.compile(**kwargs)

    @property
    def metrics(self):
        """The metrics ``fit`` reports and resets each epoch, as Keras: the loss tracker, each output's loss
        tracker (several outputs with a loss), the compiled metrics, then the metrics the model (or a layer
        inside it) holds as attributes."""
        out = []
        if self._compiled:
            out.append(self._loss_tracker)
            out.extend(self._compile_loss.trackers.values())
            out.extend(self._compile_metrics.metrics)
        for layer in self._flatten_layers():
            out.extend(layer._metrics)
        unique, seen = [], set()
        for m in out:
            if id(m) not in seen:
                seen.add(id(m))
                unique.append(m)
        return unique

    @property
    def metrics_names(self):
        names = self._compile_metrics.log_names() if self._compiled else {}
        return [names.get(id(m), m.name) for m in self.metrics]

    def reset_metrics(self):
        for m in self.metrics:
            m.reset_state()

    def _require_compiled(self, what):
        if not self._compiled:
            raise ValueError(f"You must call `compile()` before using `{what}()`.")

    # ------------------------------------------------------------ data checks

    def _check_data(self, x, y, sample_weight, name_x="x", name_y="y"):
        """Validate x, y and sample weights (arrays, or lists/dicts of them) before anything changes."""
        x, y, sample_weight = array_data.check_arrays(x, y, sample_weight, name_x, name_y)
        shape = map_structure(lambda a: (None,) + tuple(a.shape[1:]), x)
        if not self.built:
            self.build_from_shape(shape)
        out_shape = self.compute_output_shape(shape)  # raises for a wrong input shape
        if y is not None and self._compiled:
            keys = self._output_keys()
            out_shapes = [out_shape] if len(keys) == 1 else flatten_like_outputs(out_shape, keys, "outputs")
            targets = flatten_like_outputs(y, keys, name_y, allow_missing=True)
            for i, (loss, target) in enumerate(zip(self._compile_loss.losses, targets)):
                if loss is not None and target is not None and hasattr(target, "shape"):
                    label = name_y if len(keys) == 1 else f"{name_y}[{keys[i]!r}]"
                    self._check_targets(loss, target, out_shapes[i], label)
        return x, y, sample_weight

    def _check_targets(self, loss, y, out_shape, name_y):
        """Targets must fit the model's output (and sparse labels the class count), for the built-in losses."""
        if not losses_module.is_builtin(loss) or not isinstance(out_shape, tuple):
            return  # a user's loss decides what its targets look like
        if isinstance(loss, losses_module.SparseCategoricalCrossentropy):
            classes = out_shape[-1]
            labels = y.reshape(y.shape[0], -1) if y.ndim > 1 else y
            if y.ndim > 1 and labels.shape[1] != 1 and tuple(y.shape[1:]) != tuple(out_shape[1:-1]):
                raise ValueError(
                    f"Invalid `{name_y}` for a sparse categorical loss: expected integer labels of shape "
                    f"({y.shape[0]},) or ({y.shape[0]}, 1). Received: {name_y}.shape={tuple(y.shape)}"
                )
            host = labels if isinstance(labels, np.ndarray) else get_ops().to_numpy(labels)
            bad = (host < 0) | (host >= classes) | (host != np.floor(host))
            if bad.any():
                first = host[bad].flat[0]
                raise ValueError(
                    f"Invalid `{name_y}`: sparse labels must be integers in [0, {classes}) for a model "
                    f"with {classes} outputs. Received a label {first!r}."
                )
            return
        want = tuple(out_shape[1:])
        got = tuple(y.shape[1:])
        if got != want and not (got == () and want == (1,)):
            raise ValueError(
                f"Invalid shape for `{name_y}`: the model's output has shape {(None,) + want} but "
                f"{name_y}.shape={tuple(y.shape)}."
            )

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
        gradients of the trainable weights, one optimizer update, then
        :meth:`compute_metrics`. A subclass may override it, as in Keras.
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
        if weights:
            self.optimizer.apply(grads, weights)
        self._track_loss(loss, x)
        return self.compute_metrics(x, y, y_pred, sample_weight)

    def _differentiate(self, weights, x, y, sample_weight):
        """The training step's forward pass, loss and gradients of ``weights``: ``(loss, grads, y_pred)``."""
        # Forward passes replace (never modify) the non-trainable weights' arrays,
        # so keeping the old references is enough to undo a step that fails
        # before the optimizer runs, e.g. out of memory.
        saved = [(v, v.data) for v in self.non_trainable_weights]
        try:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
            if weights:
                scaled = self.optimizer.scale_loss(loss)  # a LossScaleOptimizer's dynamic scale
                grads = autodiff.gradient(scaled, weights, output_gradient=_loss_seed(scaled), free=True)
            else:
                grads = []
        except BaseException:
            for v, value_before in saved:
                v.data = value_before
            raise
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
        return _python_logs(self.train_step(self._batch_data(xb, yb, swb)))

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

        Everything is validated before the first weight changes: compile
        first, x and y of equal length and fitting the model, sparse labels
        in range, validation_split in [0, 1).
        """
        self._require_compiled("fit")
        verbose = _check_verbose(verbose)
        batch_size = _check_batch_size(batch_size)
        for name, value, low in (("epochs", epochs, 0), ("initial_epoch", initial_epoch, 0), ("validation_freq", validation_freq, 1)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"Invalid value for `{name}`: expected an int >= {low}. Received: {name}={value!r}")
        if steps_per_epoch is not None:
            steps_per_epoch = _check_batch_size(steps_per_epoch, "steps_per_epoch")
        if isinstance(validation_split, bool) or not isinstance(validation_split, numbers.Real) or not 0 <= validation_split < 1:
            raise ValueError(
                f"Invalid value for `validation_split`: expected a float in [0, 1). Received: validation_split={validation_split!r}"
            )
        if y is None and self._needs_targets() and is_array_like(x):
            raise ValueError("Invalid value for `y`: fit() needs targets for the compiled loss. Received: y=None")
        if validation_steps is not None:
            validation_steps = _check_batch_size(validation_steps, "validation_steps")
        ops = get_ops()
        given_batch_size = batch_size
        batch_size = _check_batch_size(batch_size)
        if is_array_like(x):
            x, y, sample_weight = self._check_data(x, y, sample_weight)
            if class_weight is not None:
                sample_weight = self._class_weights(y, class_weight, sample_weight)
            val = None
            if validation_data is not None:
                val = self._validation_source(validation_data, validation_batch_size or batch_size, validation_steps)
            elif validation_split:
                total = num_samples(x)
                split = int(math.ceil(total * (1.0 - validation_split)))
                if split == 0 or split == total:
                    raise ValueError(
                        f"Invalid value for `validation_split`: {validation_split} of {total} samples leaves "
                        "the training or the validation set empty."
                    )
                val_batch_size = _check_batch_size(validation_batch_size or batch_size, "validation_batch_size")
                val = ArrayBatches(rows(x, split, None), rows(y, split, None), rows(sample_weight, split, None),
                                   val_batch_size, validation_steps)
                x, y, sample_weight = rows(x, 0, split), rows(y, 0, split), rows(sample_weight, 0, split)
            train = ArrayBatches(x, y, sample_weight, batch_size, steps_per_epoch, shuffle)
        else:
            # A generator, iterator, PyDataset or torch DataLoader: its own batches (Keras's rules and errors).
            data_adapters.check_validation_split(x, validation_split)
            train = self._data_source(x, y, sample_weight, given_batch_size, steps_per_epoch, shuffle, class_weight)
            val = None
            try:
                first = train.peek()  # builds and checks the model before any weight changes
                if first is not None:
                    self._check_data(*first)
                if validation_data is not None:
                    val = self._validation_source(validation_data, validation_batch_size or given_batch_size,
                                                  validation_steps)
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
            with train, _interrupts_between_steps() as check_interrupt:
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

    def _validation_source(self, validation_data, batch_size, steps):
        """The validation batches: arrays in a tuple ``(x, y[, sample_weight])`` (checked now), or a
        generator, iterator, PyDataset or DataLoader of its own batches."""
        if isinstance(validation_data, (tuple, list)):
            if len(validation_data) not in (2, 3):
                raise ValueError(
                    "Invalid value for `validation_data`: expected a tuple (x_val, y_val) or (x_val, y_val, "
                    f"val_sample_weight). Received: a {type(validation_data).__name__} of {len(validation_data)} items"
                )
            xv, yv = validation_data[0], validation_data[1]
            swv = validation_data[2] if len(validation_data) == 3 else None
            xv, yv, swv = self._check_data(xv, yv, swv, "validation_data[0]", "validation_data[1]")
            return ArrayBatches(xv, yv, swv, _check_batch_size(batch_size, "validation_batch_size"), steps)
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
                    logs = self.train_step(self._batch_data(*self._to_batch(ops, xb, yb, swb)))
                    check_interrupt()
                logs = _python_logs(logs)  # the one read of the device values per execution
                cbs.on_train_batch_end(end, logs)
                if self.stop_training:
                    break
            epoch_logs = dict(logs)
            if val is not None and (epoch + 1) % validation_freq == 0:
                val_logs = self._evaluate_source(ops, val, callbacks=cbs, verbose=0)
                epoch_logs.update({f"val_{k}": v for k, v in val_logs.items()})
            cbs.on_epoch_end(epoch, epoch_logs)
            if self.stop_training:
                break
        return logs

    def _class_weights(self, y, class_weight, sample_weight):
        if not isinstance(class_weight, dict):
            raise TypeError(f"Invalid type for `class_weight`: expected a dict. Received: class_weight={class_weight!r}")
        if len(flatten(y)) > 1:
            raise ValueError(
                "`class_weight` is only supported for Models with a single output. Give `sample_weight` per output instead."
            )
        y = flatten(y)[0]
        if sample_weight is not None and len(flatten(sample_weight)) == 1:
            sample_weight = flatten(sample_weight)[0]
        host = y if isinstance(y, np.ndarray) else get_ops().to_numpy(y)
        if host.ndim > 1 and host.shape[-1] > 1:
            labels = host.argmax(axis=-1).reshape(host.shape[0])
        else:
            labels = np.rint(host.reshape(host.shape[0])).astype(np.int64)
        weights = np.ones(host.shape[0], dtype=np.float64)
        for cls, w in class_weight.items():
            weights[labels == int(cls)] = float(w)
        if sample_weight is not None:
            sw = sample_weight if isinstance(sample_weight, np.ndarray) else get_ops().to_numpy(sample_weight)
            weights = weights * sw
        return weights

    # ------------------------------------------------------------ evaluate / predict

    def _evaluate_source(self, ops, source, callbacks, verbose):
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
            logs = _python_logs(logs)
            cbs.on_test_batch_end(end, logs)
        cbs.on_test_end(logs)
        return logs

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None, callbacks=None, return_dict=False):
        """Loss (and metrics) on ``x``, ``y`` (arrays, or a generator, iterator, PyDataset or DataLoader of
        batches): a scalar without metrics, else ``[loss, *metrics]``."""
        self._require_compiled("evaluate")
        verbose = _check_verbose(verbose)
        if steps is not None:
            steps = _check_batch_size(steps, "steps")
        if is_array_like(x):
            batch_size = _check_batch_size(batch_size)
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
        verbose = _check_verbose(verbose)
        batch_size = _check_batch_size(batch_size)
        if getattr(self, "_layers", None) is not None and not self.layers and type(self).call is _sequential_call():
            raise ValueError(f"Sequential model '{self.name}' has no layers to predict with.")
        ops = get_ops()
        if steps is not None:
            steps = _check_batch_size(steps, "steps")
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
        x, y, sample_weight = self._check_data(x, y, sample_weight)
        if class_weight is not None:
            sample_weight = self._class_weights(y, class_weight, sample_weight)
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
