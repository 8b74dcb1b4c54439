"""The optimizer base class: learning rate, clipping, weight decay, state, configs.

One training step, ``optimizer.apply(grads, variables)``, follows Keras 3's
``BaseOptimizer.apply`` (``keras/src/optimizers/base_optimizer.py``):

1. pairs whose gradient is None are dropped (all None is an error);
2. the gradients are clipped: ``clipnorm`` per gradient, ``global_clipnorm``
   over all of them together, or ``clipvalue`` elementwise;
3. weight decay, when ``weight_decay`` is set: ``w -= w * weight_decay * lr``
   for each variable not excluded by :meth:`Optimizer.exclude_from_weight_decay`;
4. the optimizer's update rule, with the learning rate of the current step
   (a schedule is evaluated at ``iterations``, the number of updates already
   applied);
5. ``iterations += 1``;
6. each updated variable's constraint: ``v.value = v.constraint(v.value)``.

Steps 3 to 5 compute every new value before any is assigned, so a step that
fails part way changes nothing. On the GPU (CupyOps) a step without
constraints runs instead as one multi-tensor launch per 32 variables
(:meth:`Optimizer._apply_fused`), with the same arithmetic, updating the
variables and their state in place.

Optimizer state (momentums, velocities..., and optimizer-wide arrays such as
Nadam's ``u_product``) is kept by :class:`~gpulayers.optimizers.state.OptimizerState`,
the base of :class:`Optimizer`.

Differences from Keras 3, all deliberate:

- A variable first seen after ``build`` gets its state then (Keras refuses
  variables it was not built with).
- ``learning_rate`` may also be a callable taking the step,
  ``lr = f(iterations)``; a callable taking no argument is called as Keras
  calls it, ``f()``.
- ``use_ema=True`` keeps Keras's moving average of each variable
  (``average`` slots, first in the state; ``ema_momentum``,
  ``ema_overwrite_frequency``), which ``finalize_variable_values`` (the end
  of ``fit``) copies into the variables. ``gradient_accumulation_steps=n`` sums the gradients of n calls
  and applies their mean at the n-th, as Keras's (``gradient_accumulator``
  slots first in the state, ``iterations`` the updates). ``loss_scale_factor``
  scales the loss the training step differentiates and divides the
  gradients by it before clipping, as Keras's.

- The update rules use the exact Python float of a float learning rate
  (Keras: its float32 variable), and ``get_config`` writes that float (Keras:
  the float32 value, 0.001 as 0.0010000000474974513). The two agree for
  float32 weights, where the rate is rounded to float32 anyway.
- ``iterations`` is an int64 Variable (Keras: int32 on JAX and torch).

``learning_rate``, ``iterations`` and ``variables`` give Keras's Variables
(:mod:`gpulayers.optimizers.state_variables`): views of the Python float, the
int and the state arrays the optimizer keeps, so that assigning one changes
the optimizer (``optimizer.learning_rate.assign(0.01)``) and one held across
steps stays current.

Saving: ``export_state`` gives the state of a model's variables as Keras 3
stores it in a weights file (iterations, the float learning rate, then the
slots in Keras's build order) and ``import_state`` restores it;
``gpulayers.saving`` writes and reads the ``optimizer/vars`` group with them.
"""

import inspect
import re
import warnings

import numpy as np

from backends import array_namespace, get_ops
from gpulayers import utils
from gpulayers.autodiff import Tensor, unwrap
from gpulayers.config import floatx
from gpulayers.optimizers import schedules as _schedules
from gpulayers.optimizers.state import OptimizerState, _as_host
from gpulayers.optimizers.state_variables import LearningRateValue, LearningRateVariable, ScalarVariable
from gpulayers.argument_validation import check_name, check_real, is_real, scalar_to_float, standardize_bool, standardize_int

__all__ = ["Optimizer"]


def _takes_step(function):
    """Whether a learning-rate callable is called with the step (True) or with nothing (False)."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # some builtins have no signature: pass the step
        return True
    for args in ((0,), ()):
        try:
            signature.bind(*args)
            return bool(args)
        except TypeError:
            pass
    raise TypeError(
        "Invalid value for `learning_rate`: a callable learning rate must take the step "
        f"(`lr = f(iterations)`) or no argument. Received: learning_rate={function!r} with signature {signature}"
    )


def _constrained(variable, value):
    """``variable.constraint(value)`` as a raw array of the value's shape and dtype (a user's constraint may
    answer with a tensor)."""
    out = unwrap(variable.constraint(value))
    if tuple(getattr(out, "shape", ())) != tuple(value.shape):
        raise ValueError(
            f"The constraint {variable.constraint!r} of variable '{getattr(variable, 'path', variable.name)}' must "
            f"return an array of shape {tuple(value.shape)}. Received shape {getattr(out, 'shape', None)}"
        )
    return out if out.dtype == value.dtype else out.astype(value.dtype)


def _clip_by_global_norm(grads, clip_norm):
    """Keras's ``clip_by_global_norm``: scale every gradient by ``clip_norm / max(norm, clip_norm)``.

    A non-finite global norm makes every gradient NaN, as in Keras.
    """
    squares = [array_namespace(g).sum(g * g) for g in grads]
    spaces = {array_namespace(s) for s in squares}
    with np.errstate(divide="ignore", invalid="ignore"):
        if len(spaces) == 1:
            xp = spaces.pop()
            norm = xp.sqrt(xp.sum(xp.stack([xp.asarray(s) for s in squares])))
        else:  # NumPy and CuPy variables in one call: add up on the host
            xp = np
            norm = np.sqrt(np.sum([float(s) for s in squares]))
        scale = clip_norm * xp.minimum(1.0 / norm, 1.0 / clip_norm)
        scale = scale + (norm - norm)  # NaN when the norm is inf or NaN
        return [g * (scale.astype(g.dtype) if array_namespace(scale) is array_namespace(g) else float(scale))
                for g in grads]


class Optimizer(OptimizerState):
    """Base class of the optimizers (Keras 3's ``keras.optimizers.Optimizer`` API).

    Subclasses list their state in :meth:`_slots` and
    implement :meth:`_update_step`.

    Args:
        learning_rate: a float >= 0, a
            :class:`~gpulayers.optimizers.schedules.LearningRateSchedule`, or a
            callable ``step -> lr`` (or ``() -> lr``).
        weight_decay: None or a float >= 0; if set, ``w -= w * weight_decay * lr``
            before each update.
        clipnorm: clip each gradient to this L2 norm.
        clipvalue: clip each gradient's entries to ``[-clipvalue, clipvalue]``.
        global_clipnorm: clip all gradients together to this global L2 norm.
            Only one of the three may be set; 0 means no clipping, as in Keras.
        loss_scale_factor: None, or a float > 0: a static loss scale (see above).
        gradient_accumulation_steps: None, or an int >= 2 (see above).
        use_ema, ema_momentum, ema_overwrite_frequency: the moving average of
            the weights (see above): a bool, a float in [0, 1], None or an int >= 1.
        name: the optimizer's name; None gives Keras's default for the class.
    """


    def __init__(
        self,
        learning_rate,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        gradient_accumulation_steps=None,
        name=None,
        **kwargs,
    ):
        cls = type(self).__name__
        if kwargs.pop("decay", None) is not None:
            warnings.warn("Argument `decay` is no longer supported and will be ignored.", stacklevel=3)
        if kwargs:
            raise ValueError(f"Argument(s) not recognized by {cls}: {kwargs}")
        if name is None:
            name = utils.unique_name(utils.to_snake_case(cls))  # Keras 3.15's auto_name: sgd, sgd_1, adam_w
        self.name = check_name(name)
        self.weight_decay = check_real(weight_decay, "weight_decay", minimum=0, allow_none=True)
        self.clipnorm = check_real(clipnorm, "clipnorm", minimum=0, allow_none=True)
        self.clipvalue = check_real(clipvalue, "clipvalue", minimum=0, allow_none=True)
        self.global_clipnorm = check_real(global_clipnorm, "global_clipnorm", minimum=0, allow_none=True)
        if sum(a is not None for a in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError(
                "Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. "
                f"Received: clipnorm={clipnorm}, clipvalue={clipvalue}, global_clipnorm={global_clipnorm}"
            )
        # Keras's exponential moving average of the weights: `average` slots, updated after each call.
        self.use_ema = standardize_bool(use_ema, "use_ema")
        self.ema_momentum = check_real(ema_momentum, "ema_momentum", minimum=0, maximum=1)
        if ema_overwrite_frequency is not None and (
            isinstance(ema_overwrite_frequency, (bool, np.bool_))
            or not isinstance(ema_overwrite_frequency, (int, np.integer))
            or ema_overwrite_frequency < 1
        ):
            raise ValueError(
                "Invalid value for `ema_overwrite_frequency`: expected None or an int >= 1. "
                f"Received: ema_overwrite_frequency={ema_overwrite_frequency!r}"
            )
        self.ema_overwrite_frequency = None if ema_overwrite_frequency is None else int(ema_overwrite_frequency)
        if gradient_accumulation_steps is not None:
            gradient_accumulation_steps = standardize_int(gradient_accumulation_steps, "gradient_accumulation_steps",
                                                          minimum=2)
        # Keras's static loss scaling: the step differentiates loss * factor and divides the gradients by it.
        self.loss_scale_factor = check_real(loss_scale_factor, "loss_scale_factor", minimum=0, min_open=True,
                                            allow_none=True)
        # Keras's gradient accumulation: the gradients summed over that many calls, their mean applied at the last.
        self.gradient_accumulation_steps = gradient_accumulation_steps

        self._iterations = 0
        self._learning_rate, self._lr_takes_step = self._standardize_learning_rate(learning_rate)
        self._state = {}  # id(variable) -> (variable, {slot: array}), in creation order
        self._global_state = {}  # name -> 0-d host array: the optimizer-wide state (Nadam's u_product)
        self._step_globals = {}  # the values _global_state takes if the step in progress succeeds
        self._views = {}  # the Variables of `iterations`, `learning_rate` and `variables`, made on first use
        self._built_variables = []
        self.built = False
        self._exclude_vars = {}  # id -> variable (kept alive so ids stay unique)
        self._exclude_pattern = None

    # ------------------------------------------------------------ learning rate

    @staticmethod
    def _standardize_learning_rate(value):
        if isinstance(value, Tensor):  # a learning-rate Variable or a 0-d tensor: its number
            value = unwrap(value)
        if isinstance(value, _schedules.LearningRateSchedule):
            return value, True
        if callable(value) and not is_real(value):
            return value, _takes_step(value)
        if not is_real(value) and getattr(value, "shape", None) != ():
            raise ValueError(
                "Argument `learning_rate` should be float, or an instance of LearningRateSchedule, or a callable "
                "(that takes the current iteration value and returns the corresponding learning rate value). "
                f"Received instead: learning_rate={value!r}"
            )
        lr = scalar_to_float(value, "learning_rate")
        if lr < 0:
            raise ValueError(f"Invalid value for `learning_rate`: expected a float >= 0. Received: learning_rate={value!r}")
        return lr, False

    def _current_learning_rate(self):
        """The learning rate of the next update as a Python float, what the update rules use.

        A float rate is the exact float set (its floatx rounding is what the
        ``learning_rate`` Variable shows); a schedule is evaluated at ``iterations``.
        """
        lr = self._learning_rate
        if isinstance(lr, float):
            return lr
        value = unwrap(lr(self._iterations) if self._lr_takes_step else lr())
        if is_real(value) or (getattr(value, "shape", None) == ()
                              and getattr(getattr(value, "dtype", None), "kind", None) in ("f", "i", "u")):
            # inf or NaN too, as Keras: a growing schedule's overflow reaches the weights, and the loss
            # (TerminateOnNaN, check_numerics) reports it
            return float(value)
        return scalar_to_float(value, "learning_rate")

    @property
    def learning_rate(self):
        """The learning rate, as Keras 3 gives it.

        With a float rate: Keras's ``learning_rate`` Variable (floatx, shape
        ``()``; ``assign``, ``numpy()``, ``float()``, arithmetic), always the
        same object. With a schedule or a callable: its value at the current
        step, a 0-d floatx tensor. Setting a float replaces a float rate (what
        ``ReduceLROnPlateau`` does); setting a float over a schedule or a
        callable raises TypeError, as in Keras. A schedule or a callable may
        always be set (the Variable is then detached from the optimizer).
        """
        if isinstance(self._learning_rate, float):
            return self._learning_rate_variable()
        value = np.asarray(self._current_learning_rate(), dtype=floatx())
        return LearningRateValue(get_ops().asarray(value))

    @learning_rate.setter
    def learning_rate(self, value):
        if isinstance(value, Tensor):
            value = unwrap(value)
        if not isinstance(value, _schedules.LearningRateSchedule) and not (callable(value) and not is_real(value)):
            if not isinstance(self._learning_rate, float):
                kind = ("a `LearningRateSchedule` object"
                        if isinstance(self._learning_rate, _schedules.LearningRateSchedule) else "a callable")
                raise TypeError(
                    f"This optimizer was created with {kind} as its `learning_rate` constructor argument, hence its "
                    "learning rate is not settable. If you need the learning rate to be settable, you should "
                    "instantiate the optimizer with a float `learning_rate` argument."
                )
        new = self._standardize_learning_rate(value)
        if not isinstance(new[0], float):  # Keras untracks its learning-rate variable
            view = self._views.pop("learning_rate", None)
            if view is not None:
                view._detach()
        self._learning_rate, self._lr_takes_step = new

    def _learning_rate_variable(self):
        view = self._views.get("learning_rate")
        if view is None:
            view = self._views["learning_rate"] = LearningRateVariable(self, floatx())
        return view

    @property
    def iterations(self):
        """The number of updates applied so far: Keras's ``iteration`` Variable (an integer scalar).

        ``int(optimizer.iterations)``, ``.numpy()`` and ``.assign(n)`` work as
        in Keras; setting ``optimizer.iterations = n`` also does. With gradient
        accumulation, Keras's value: the calls so far over the accumulation
        steps, a 0-d integer tensor (the ``iteration`` Variable of
        :attr:`variables` keeps counting the calls).
        """
        if self.gradient_accumulation_steps:
            return Tensor(np.asarray(self._updates_done(), dtype=np.int64))
        return self._iterations_variable()

    @iterations.setter
    def iterations(self, value):
        if isinstance(value, Tensor):
            value = unwrap(value)
        if getattr(value, "shape", None) == () and getattr(getattr(value, "dtype", None), "kind", None) in ("i", "u"):
            value = int(value)  # a 0-d integer array
        self._iterations = standardize_int(value, "iterations", minimum=0)

    def _iterations_variable(self):
        # this optimizer's own count (a LossScaleOptimizer's `iterations` is its inner optimizer's)
        view = self._views.get("iteration")
        if view is None:
            view = self._views["iteration"] = ScalarVariable(
                "iteration", f"{self.name}/iteration", np.int64, lambda: self._iterations,
                lambda array: Optimizer.iterations.fset(self, array))
        return view

    # ------------------------------------------------------------ the update rule

    def _update_step(self, grad, value, learning_rate, state):
        """The variable's new value from its gradient (cast to its dtype); updates ``state`` in place."""
        raise NotImplementedError(f"{type(self).__name__} must implement `_update_step`.")

    # ------------------------------------------------------------ weight decay

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        """Exempt variables from weight decay.

        Args:
            var_list: Variables to exempt.
            var_names: strings (regular expressions, joined with ``|`` as in
                Keras); a variable whose ``name`` contains a match is exempt,
                e.g. ``["bias"]``.

        Each call replaces the previous exclusions.
        """
        if var_list is not None:
            var_list = self._check_variables(var_list)
        if var_names is not None:
            if isinstance(var_names, str) or not isinstance(var_names, (list, tuple, set)) or \
                    not all(isinstance(n, str) for n in var_names):
                raise TypeError(
                    f"Invalid type for `var_names`: expected a list of strings. Received: var_names={var_names!r}"
                )
        self._exclude_vars = {id(v): v for v in var_list or ()}
        self._exclude_pattern = None
        if var_names:
            try:
                self._exclude_pattern = re.compile("|".join(sorted(set(var_names))))
            except re.error as exc:
                raise ValueError(
                    f"Invalid value for `var_names`: not a valid regular expression ({exc}). Received: var_names={var_names!r}"
                ) from None

    def _use_weight_decay(self, variable):
        if id(variable) in self._exclude_vars:
            return False
        return self._exclude_pattern is None or self._exclude_pattern.search(variable.name) is None

    # ------------------------------------------------------------ one step

    def _check_gradient(self, grad, variable, i):
        if not hasattr(grad, "shape") or not hasattr(grad, "dtype"):
            raise TypeError(
                f"Invalid type for `grads[{i}]`: expected an array or None. Received: {grad!r} of type {type(grad).__name__}"
            )
        value = variable.value
        if tuple(grad.shape) != tuple(value.shape):
            raise ValueError(
                f"Invalid shape for `grads[{i}]`: expected {tuple(value.shape)}, the shape of variable "
                f"'{getattr(variable, 'path', variable.name)}'. Received: grads[{i}].shape={tuple(grad.shape)}"
            )
        xp = array_namespace(value)
        if array_namespace(grad) is not xp:
            grad = xp.asarray(_as_host(grad)) if xp is not np else _as_host(grad)
        return grad

    def _clip_gradients(self, grads):
        if self.clipnorm:
            out = []
            for g in grads:
                xp = array_namespace(g)
                norm = xp.sqrt(xp.sum(g * g))
                out.append((g * self.clipnorm) / xp.maximum(norm, self.clipnorm))
            return out
        if self.global_clipnorm:
            return _clip_by_global_norm(grads, self.global_clipnorm)
        if self.clipvalue:
            return [array_namespace(g).clip(g, -self.clipvalue, self.clipvalue) for g in grads]
        return grads

    def _checked_pairs(self, grads, variables):
        """``(grads, variables)`` for :meth:`apply`: the variables (None: those built on) checked, the
        gradients unwrapped from tensors, one per variable."""
        if variables is None:
            if not self.built:
                raise ValueError(
                    "When passing `grads` without `variables`, the optimizer must already be built on a list of "
                    "variables. Call `optimizer.build(trainable_variables)` first."
                )
            variables = self._built_variables
        variables = self._check_variables(variables)
        if isinstance(grads, (str, bytes)) or not hasattr(grads, "__iter__"):
            raise TypeError(f"Invalid type for `grads`: expected a list of arrays. Received: grads={grads!r}")
        grads = [unwrap(g) for g in grads]  # gradients may come as tensors (GradientTape.gradient)
        if len(grads) != len(variables):
            raise ValueError(
                f"`grads` and `variables` must have the same length. Received: {len(grads)} gradients "
                f"for {len(variables)} variables"
            )
        return grads, variables

    def apply(self, grads, variables=None):
        """Update ``variables`` from ``grads`` (one step; see the module docstring for the order).

        Args:
            grads: one array (or None, skipped) per variable.
            variables: the Variables; None means those given to :meth:`build`.
        """
        updates_before = self._updates_done()
        calls_before = self._iterations
        self._apply(grads, variables)
        if self.use_ema and self._iterations != calls_before:
            self._update_moving_averages(updates_before)

    def _update_moving_averages(self, updates_before):
        """Keras's EMA after a call: ``average = m * average + (1 - m) * variable`` for every variable the
        optimizer holds, m = ema_momentum (0 at the first update, so the average starts at the variable); every
        ``ema_overwrite_frequency`` updates the variables take their averages."""
        momentum = 0.0 if updates_before == 0 else self.ema_momentum
        for v, state in self._state.values():
            w = v.value
            state["average"] = (momentum * state["average"] + (1 - momentum) * w).astype(w.dtype, copy=False)
        freq = self.ema_overwrite_frequency
        if freq and (updates_before + 1) % freq == 0:
            self.finalize_variable_values([v for v, _ in self._state.values()])

    def finalize_variable_values(self, var_list):
        """Keras's end of training: with ``use_ema`` each variable of ``var_list`` takes its moving average
        (``fit`` calls it after its last epoch); nothing otherwise."""
        if not self.use_ema:
            return
        var_list = list(var_list)
        states = [self._state.get(id(v)) for v in var_list]
        if any(s is None for s in states) or len(var_list) != len(self._state):
            raise ValueError(
                f"The length of model variables ({len(var_list)}) to override does not match the length of model "
                f"variables stored in the optimizer ({len(self._state)}). Please check if the optimizer was called "
                "on your model."
            )
        for v, (_, state) in zip(var_list, states):
            v.assign(state["average"])

    def _apply(self, grads, variables):
        grads, variables = self._checked_pairs(grads, variables)
        if not grads:
            return
        pairs = [(self._check_gradient(g, v, i), v) for i, (g, v) in enumerate(zip(grads, variables)) if g is not None]
        if not pairs:
            raise ValueError("No gradients provided for any variable.")
        if len(pairs) < len(variables):  # as Keras: the step goes on without them, with a warning
            missing = [v.path for g, v in zip(grads, variables) if g is None]
            warnings.warn(
                f"Gradients do not exist for variables {missing} when minimizing the loss. If using "
                "`model.compile()`, did you forget to provide a `loss` argument?",
                stacklevel=2,
            )
        if not self.built:
            self.build(variables)
        self._ensure_globals(variables)
        grads = [g for g, _ in pairs]
        variables = [v for _, v in pairs]
        states = [self._state_for(v) for v in variables]
        lr = self._current_learning_rate()

        # All new values are computed before any is assigned: a step that
        # fails part way (out of GPU memory) leaves weights and state as they were.
        if self.loss_scale_factor is not None:  # unscaled before clipping, as Keras
            grads = [g / self.loss_scale_factor for g in grads]
        if self.gradient_accumulation_steps:
            grads = self._accumulated(grads, variables, states)
            if grads is None:
                return
        grads = self._clip_gradients(grads)
        self._step_globals = self._next_globals()
        if self._apply_fused(grads, variables, states, lr):
            self._reset_accumulators(states)
            return
        results = []
        for g, v, state in zip(grads, variables, states):
            try:
                w = v.value
                if self.weight_decay is not None and self._use_weight_decay(v):
                    w = w - w * self.weight_decay * lr
                dtype = w.dtype
                new, new_state = self._update_step(g.astype(dtype, copy=False), w, lr, state)
                results.append((new if new.dtype == dtype else new.astype(dtype), new_state))
            except MemoryError as exc:  # cupy's OutOfMemoryError too: name what was being updated
                raise MemoryError(
                    f"Out of memory in optimizer '{self.name}' updating variable "
                    f"'{getattr(v, 'path', v.name)}' of shape {tuple(v.value.shape)} ({type(exc).__name__}: "
                    f"{exc}); no weight or optimizer state was changed."
                ) from exc
        self._iterations += 1  # Keras applies the constraints after the increment
        try:
            results = [
                (_constrained(v, new) if getattr(v, "constraint", None) is not None else new, new_state)
                for v, (new, new_state) in zip(variables, results)
            ]
        except BaseException:
            self._iterations -= 1
            raise
        for v, state, (new, new_state) in zip(variables, states, results):
            v.value = new
            state.update(new_state)
        self._global_state.update(self._step_globals)
        self._step_globals = {}
        self._reset_accumulators(states)

    def _updates_done(self):
        """The number of updates applied: ``iterations``, or with gradient accumulation the calls over the
        accumulation steps (Keras's ``iterations`` then, which the rules' step counts use)."""
        steps = self.gradient_accumulation_steps
        return self._iterations // steps if steps else self._iterations

    def _accumulated(self, grads, variables, states):
        """Gradient accumulation (Keras's): on all calls but every ``gradient_accumulation_steps``-th, the
        gradients are added to the accumulators and only ``iterations`` (and the constraints) move: None comes
        back. On that call the mean of the accumulated gradients and these comes back (the accumulators are reset
        once the update is done)."""
        steps = self.gradient_accumulation_steps
        accumulators = [state["gradient_accumulator"] for state in states]
        if (self._iterations + 1) % steps:
            new = [acc + g.astype(acc.dtype, copy=False) for acc, g in zip(accumulators, grads)]
            constrained = [_constrained(v, v.value) if getattr(v, "constraint", None) is not None else None
                           for v in variables]
            for state, acc in zip(states, new):
                state["gradient_accumulator"] = acc
            for v, value in zip(variables, constrained):
                if value is not None:
                    v.value = value
            self._iterations += 1
            return None
        return [(g.astype(acc.dtype, copy=False) + acc) / steps for g, acc in zip(grads, accumulators)]

    def _reset_accumulators(self, states):
        if self.gradient_accumulation_steps:  # after the update: a step that fails keeps them
            for state in states:
                state["gradient_accumulator"] = array_namespace(state["gradient_accumulator"]).zeros_like(
                    state["gradient_accumulator"])

    def _apply_fused(self, grads, variables, states, lr):
        """The update of every variable in one multi-tensor launch, where the backend has one.

        CupyOps does (``backends/multi_tensor.py``): the variables and their
        state are then updated in place (``Variable.assign`` copies, so no two
        variables share an array). Returns False, having changed nothing,
        where it does not apply: NumpyOps, a subclass with its own
        ``_update_step``, constraints, variables that are not all float32 or
        all float64 on the device, arrays that are not C-contiguous, or two
        variables on one array.
        """
        owner = next(c for c in type(self).__mro__ if "_update_step" in vars(c))
        if "_fused_rule" not in vars(owner) or any(getattr(v, "constraint", None) is not None for v in variables):
            return False
        ops = get_ops()
        dtype = variables[0].value.dtype
        if ops.xp is np or dtype not in (np.float32, np.float64) or any(
            array_namespace(v.value) is not ops.xp for v in variables
        ):
            return False
        rule, constants, slots = self._fused_rule(lr)
        arrays = [v.value for v in variables] + [state[s] for state in states for s in slots if s is not None]
        if any(not a.flags.c_contiguous or a.dtype != dtype for a in arrays):
            return False  # e.g. a Fortran-ordered weight from cupy.asarray: the per-variable rule handles it
        constants["wd"] = 0.0 if self.weight_decay is None else self.weight_decay
        decay = [self.weight_decay is not None and self._use_weight_decay(v) for v in variables]
        try:
            groups = [(v.value, g.astype(dtype, copy=False), *(None if s is None else state[s] for s in slots))
                      for g, v, state in zip(grads, variables, states)]
            done = ops.multi_tensor_update(rule, groups, constants, decay)
        except MemoryError as exc:  # cupy's OutOfMemoryError too
            raise MemoryError(
                f"Out of memory in optimizer '{self.name}' preparing its step ({type(exc).__name__}: {exc}); "
                "no weight or optimizer state was changed."
            ) from exc
        if done:
            self._iterations += 1
            self._global_state.update(self._step_globals)
            self._step_globals = {}
        return done

    def scale_loss(self, loss):
        """The loss the training step differentiates: ``loss * loss_scale_factor`` when that is set, else
        ``loss`` itself (a LossScaleOptimizer scales it by its dynamic scale)."""
        return loss if self.loss_scale_factor is None else loss * self.loss_scale_factor

    def apply_gradients(self, grads_and_vars):
        """Keras's pair form: ``apply_gradients([(grad, variable), ...])``; returns the ``iterations`` Variable."""
        pairs = list(grads_and_vars)
        for i, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TypeError(
                    f"Invalid type for `grads_and_vars[{i}]`: expected a (gradient, variable) pair. Received: {pair!r}"
                )
        if pairs:
            self.apply([g for g, _ in pairs], [v for _, v in pairs])
        return self.iterations

    # ------------------------------------------------------------ config

    def get_config(self):
        """Keras 3's config keys (the subclass adds its own)."""
        lr = self._learning_rate
        if isinstance(lr, _schedules.LearningRateSchedule):
            lr = _schedules.serialize(lr)
        elif not isinstance(lr, float):  # a plain callable: Keras's custom-object form
            name = getattr(lr, "__name__", type(lr).__name__)
            lr = {"module": getattr(lr, "__module__", None), "class_name": "function", "config": name,
                  "registered_name": name}
        return {
            "name": self.name,
            "learning_rate": lr,
            "weight_decay": self.weight_decay,
            "clipnorm": self.clipnorm,
            "global_clipnorm": self.global_clipnorm,
            "clipvalue": self.clipvalue,
            "use_ema": self.use_ema,
            "ema_momentum": self.ema_momentum,
            "ema_overwrite_frequency": self.ema_overwrite_frequency,
            "loss_scale_factor": self.loss_scale_factor,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """An optimizer (without state) from :meth:`get_config`'s dict; a schedule dict is rebuilt."""
        if not isinstance(config, dict):
            raise TypeError(f"Invalid type for `config`: expected a dict. Received: config={config!r}")
        config = dict(config)
        if isinstance(config.get("learning_rate"), dict):
            config["learning_rate"] = _schedules.deserialize(config["learning_rate"], argument="learning_rate")
        return cls(**config)

    def __repr__(self):
        lr = self._learning_rate
        return f"<{type(self).__name__} name={self.name!r} learning_rate={lr!r} iterations={self._iterations}>"
