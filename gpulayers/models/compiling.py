"""Keras's compile API on a model: ``compile``, its config, the optimizer and the compiled metrics.

:class:`Compiling` is the base of :class:`gpulayers.models.training.Trainer`:
what ``compile`` sets (the optimizer, a LossScaleOptimizer for
``mixed_float16``, the compiled loss and metrics, ``steps_per_execution``),
``get_compile_config`` / ``compile_from_config`` in Keras 3's layout, and the
model's ``metrics``.
"""

import numbers

from gpulayers import losses as losses_module, metrics as metrics_module, optimizers
from gpulayers.argument_validation import standardize_bool
from gpulayers.models.compile_utils import (
    COMPILE_KEYS, CompileLoss, CompileMetrics, compile_entries_ok, flatten_like_outputs, function_names, is_per_output,
    serialize_nested,
)

__all__ = ["Compiling"]


class Compiling:
    """compile() and what it makes (a mixin: the model gives ``dtype_policy`` and ``_flatten_layers``)."""

    _compiled = False
    _auto_loss_scale = None  # the LossScaleOptimizer compile wrapped around the given optimizer
    _step_graphs = None  # compile(jit_compile=True) on the GPU: models/step_graphs.py
    optimizer = None
    loss = None
    steps_per_execution = 1

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
            "loss": serialize_nested(args["loss"], losses_module.serialize),
            "loss_weights": args["loss_weights"],
            "metrics": serialize_nested(args["metrics"], metrics_module.serialize),
            "weighted_metrics": serialize_nested(args["weighted_metrics"], metrics_module.serialize),
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
            if not compile_entries_ok(kwargs.get(key), numbers_only=key == "loss_weights"):
                raise ValueError(
                    f"Invalid value for `config['{key}']`: expected null, a name or serialized object, or a list "
                    f"or dict of them (one per output). Received: {kwargs.get(key)!r:.200}"
                )
        for key in ("loss", "metrics", "weighted_metrics"):
            kwargs[key] = function_names(kwargs.get(key))
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
