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

Optimizer state (momentums, velocities...) is one array per variable and
slot, created on the variable's first update (or by :meth:`Optimizer.build`)
with the variable's own array module, shape and dtype, so it lives where the
variable lives (host or GPU) and float32 training stays float32.

Differences from Keras 3, all deliberate:

- A variable first seen after ``build`` gets its state then (Keras refuses
  variables it was not built with).
- ``learning_rate`` may also be a callable taking the step,
  ``lr = f(iterations)``; a callable taking no argument is called as Keras
  calls it, ``f()``.
- ``use_ema=True``, ``loss_scale_factor`` and ``gradient_accumulation_steps``
  are refused (ValueError); their config keys are still written.
- ``variables`` lists the state arrays only (Keras also lists its
  ``iteration`` and ``learning_rate`` variables), slot by slot.

Saving: :meth:`Optimizer.export_state` gives the state of a model's
variables as Keras 3 stores it in a weights file (iterations, the float
learning rate, then the slots in Keras's build order) and
:meth:`Optimizer.import_state` restores it; ``gpulayers.saving`` writes and
reads the ``optimizer/vars`` group with them.
"""

import inspect
import re
import warnings

import numpy as np

from backends import array_namespace, get_ops
from gpulayers import utils
from gpulayers.autodiff import unwrap
from gpulayers.optimizers import schedules as _schedules
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


def _as_host(grad):
    """A gradient from another array module as a NumPy array."""
    getter = getattr(grad, "get", None)  # CuPy's device -> host copy
    return getter() if callable(getter) else np.asarray(grad)


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


class Optimizer:
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
        use_ema, ema_momentum, ema_overwrite_frequency, loss_scale_factor,
        gradient_accumulation_steps: Keras's arguments, accepted at their
            defaults only (kept in the config).
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
        if standardize_bool(use_ema, "use_ema"):
            raise ValueError(
                f"Invalid value for `use_ema`: the exponential moving average of weights is not supported by "
                f"gpulayers optimizers. Received: use_ema={use_ema!r}"
            )
        self.use_ema = False
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
        for argument, value in (("loss_scale_factor", loss_scale_factor),
                                ("gradient_accumulation_steps", gradient_accumulation_steps)):
            if value is not None:
                raise ValueError(
                    f"Invalid value for `{argument}`: not supported by gpulayers optimizers (only None). "
                    f"Received: {argument}={value!r}"
                )
        self.loss_scale_factor = None
        self.gradient_accumulation_steps = None

        self._iterations = 0
        self._learning_rate, self._lr_takes_step = self._standardize_learning_rate(learning_rate)
        self._state = {}  # id(variable) -> (variable, {slot: array}), in creation order
        self._built_variables = []
        self.built = False
        self._exclude_vars = {}  # id -> variable (kept alive so ids stay unique)
        self._exclude_pattern = None

    # ------------------------------------------------------------ learning rate

    @staticmethod
    def _standardize_learning_rate(value):
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

    @property
    def learning_rate(self):
        """The learning rate of the next update, as a Python float.

        A schedule is evaluated at ``iterations``. Setting a float replaces a
        float learning rate (what ``ReduceLROnPlateau`` does); setting a float
        over a schedule or a callable raises TypeError, as in Keras. A
        schedule or a callable may always be set.
        """
        lr = self._learning_rate
        if isinstance(lr, float):
            return lr
        value = lr(self._iterations) if self._lr_takes_step else lr()
        return scalar_to_float(value, "learning_rate")

    @learning_rate.setter
    def learning_rate(self, value):
        if not isinstance(value, _schedules.LearningRateSchedule) and not (callable(value) and not is_real(value)):
            if not isinstance(self._learning_rate, float):
                kind = ("a `LearningRateSchedule` object"
                        if isinstance(self._learning_rate, _schedules.LearningRateSchedule) else "a callable")
                raise TypeError(
                    f"This optimizer was created with {kind} as its `learning_rate` constructor argument, hence its "
                    "learning rate is not settable. If you need the learning rate to be settable, you should "
                    "instantiate the optimizer with a float `learning_rate` argument."
                )
        self._learning_rate, self._lr_takes_step = self._standardize_learning_rate(value)

    @property
    def iterations(self):
        """The number of updates applied so far (an int)."""
        return self._iterations

    @iterations.setter
    def iterations(self, value):
        self._iterations = standardize_int(value, "iterations", minimum=0)

    # ------------------------------------------------------------ state

    def _slots(self):
        """Names of the per-variable state arrays (Keras's variable names)."""
        return ()

    def _init_slot(self, slot, value):
        """A new state array for ``slot``, like ``value`` (same module, device, shape, dtype)."""
        return array_namespace(value).zeros_like(value)

    def _update_step(self, grad, value, learning_rate, state):
        """The variable's new value from its gradient (cast to its dtype); updates ``state`` in place."""
        raise NotImplementedError(f"{type(self).__name__} must implement `_update_step`.")

    @staticmethod
    def _check_variables(variables):
        if isinstance(variables, (str, bytes)) or not hasattr(variables, "__iter__"):
            raise TypeError(f"Invalid type for `variables`: expected a list of Variables. Received: variables={variables!r}")
        variables = list(variables)
        for i, v in enumerate(variables):
            if not hasattr(getattr(v, "value", None), "shape") or not hasattr(v, "name"):
                raise TypeError(
                    f"Invalid type for `variables[{i}]`: expected a Variable (with `value` and `name`). "
                    f"Received: {v!r} of type {type(v).__name__}"
                )
        return variables

    def _state_for(self, variable):
        entry = self._state.get(id(variable))
        if entry is None:
            entry = (variable, {slot: self._init_slot(slot, variable.value) for slot in self._slots()})
            self._state[id(variable)] = entry
        else:
            for slot, array in entry[1].items():
                if tuple(array.shape) != tuple(variable.value.shape):
                    raise ValueError(
                        f"Invalid shape for variable '{getattr(variable, 'path', variable.name)}': the optimizer's "
                        f"'{slot}' state has shape {tuple(array.shape)}. Received: "
                        f"value.shape={tuple(variable.value.shape)} (recreate the optimizer for new variables)"
                    )
        return entry[1]

    def build(self, variables):
        """Create the state of ``variables`` now (otherwise it is created on their first update).

        ``apply(grads)`` without variables then updates these variables.
        """
        variables = self._check_variables(variables)
        for v in variables:
            self._state_for(v)
        self._built_variables = variables
        self.built = True

    def _slot_groups(self):
        """The slots in Keras's build order: one tuple per ``add_optimizer_variables`` call.

        Keras creates the slots of one call variable by variable (Adam: the
        first variable's momentum and velocity, then the second's...), and
        the calls one after the other. By default each slot is its own call.
        """
        return tuple((slot,) for slot in self._slots())

    def _state_order(self, variables):
        """``(variable, slot)`` for each state array of ``variables``, in Keras's ``optimizer.variables`` order."""
        return [(v, slot) for group in self._slot_groups() for v in variables for slot in group]

    @property
    def variables(self):
        """The state arrays in Keras's order (without its ``iteration`` and ``learning_rate``).

        Variables in the order they were first seen; slots in Keras's build
        order (Adam: each variable's momentum and velocity, then every
        ``velocity_hat``).
        """
        seen = [v for v, _ in self._state.values()]
        return [self._state[id(v)][1][slot] for v, slot in self._state_order(seen)]

    # ------------------------------------------------------------ saving and restoring the state

    def export_state(self, variables):
        """The state of ``variables`` as Keras 3 saves it (the ``optimizer/vars`` group of a weights file).

        Returns:
            A dict: ``iterations`` (int); ``learning_rate``, the float
            learning rate, or None for a schedule or a callable (Keras keeps
            no variable for those); ``slots``, NumPy copies of the state
            arrays in Keras's order (:meth:`_state_order`), or ``[]`` when
            none of ``variables`` has state yet (Keras's unbuilt optimizer).
            A variable without state among others that have it contributes
            the arrays its first update would start from.
        """
        variables = self._check_variables(variables)
        lr = self._learning_rate if isinstance(self._learning_rate, float) else None
        slots = []
        if any(id(v) in self._state for v in variables):
            for v, slot in self._state_order(variables):
                entry = self._state.get(id(v))
                array = entry[1][slot] if entry is not None else self._init_slot(slot, v.value)
                slots.append(np.array(_as_host(array)))
        return {"iterations": self._iterations, "learning_rate": lr, "slots": slots}

    def import_state(self, variables, iterations, learning_rate=None, slots=()):
        """Restore what :meth:`export_state` gave (or a Keras 3 file holds) for ``variables``.

        Args:
            variables: the Variables, in the order the state was exported for.
            iterations: int >= 0.
            learning_rate: the saved float learning rate, or None. It
                replaces a float learning rate only where the two differ in
                the saved value's precision (a NumPy scalar keeps its dtype),
                so a float32 copy of the rate does not overwrite the exact
                Python float (nor is a schedule replaced).
            slots: the state arrays in Keras's order, or empty: the saved
                optimizer had no state, so these variables start afresh.

        Everything is checked and converted before anything is assigned.
        """
        self._prepare_import(variables, iterations, learning_rate, slots)()

    def _prepare_import(self, variables, iterations, learning_rate, slots):
        """Check and convert the state to import; returns the function that assigns it (and cannot fail)."""
        variables = self._check_variables(variables)
        standardize_int(iterations, "iterations", minimum=0)
        new_lr = self._learning_rate
        if learning_rate is not None and isinstance(self._learning_rate, float):
            saved = np.asarray(learning_rate)
            if saved.shape != () or saved.dtype.kind != "f":
                raise ValueError(f"Invalid value for `learning_rate`: expected a float. Received: learning_rate={learning_rate!r}")
            if saved != np.asarray(self._learning_rate, dtype=saved.dtype):
                new_lr, _ = self._standardize_learning_rate(float(saved))
        new_state = self._converted_slots(variables, list(slots))

        def commit():
            self._iterations = int(iterations)
            self._learning_rate = new_lr
            for v in variables:
                if new_state is None:
                    self._state.pop(id(v), None)  # the saved optimizer had none: created afresh on the next update
                else:
                    self._state[id(v)] = (v, new_state[id(v)])
            if not self.built:
                self._built_variables = list(variables)
                self.built = True

        return commit

    def _converted_slots(self, variables, slots):
        """``{id(variable): {slot: array}}`` from the arrays in Keras's order, on each variable's device; None when empty."""
        if not slots:
            return None
        order = self._state_order(variables)
        if len(slots) != len(order):
            raise ValueError(
                f"Invalid value for `slots`: optimizer '{self.name}' ({type(self).__name__}) keeps {len(order)} state "
                f"arrays for {len(variables)} variables. Received: {len(slots)} arrays"
            )
        new_state = {id(v): {} for v in variables}
        for i, ((v, slot), array) in enumerate(zip(order, slots)):
            value = v.value
            if tuple(getattr(array, "shape", ())) != tuple(value.shape):
                raise ValueError(
                    f"Invalid shape for `slots[{i}]`: the '{slot}' state of variable "
                    f"'{getattr(v, 'path', v.name)}' has shape {tuple(value.shape)}. "
                    f"Received: slots[{i}].shape={tuple(getattr(array, 'shape', ()))}"
                )
            if getattr(getattr(array, "dtype", None), "kind", None) not in ("f", "i", "u"):
                raise ValueError(
                    f"Invalid dtype for `slots[{i}]`: expected a numeric array for the '{slot}' state of variable "
                    f"'{getattr(v, 'path', v.name)}'. Received: {type(array).__name__} of dtype {getattr(array, 'dtype', None)}"
                )
            xp = array_namespace(value)
            source = _as_host(array) if xp is np else array  # a CuPy array comes to the host for a NumPy variable
            new_state[id(v)][slot] = xp.array(source, dtype=value.dtype, copy=True)
        return new_state

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
        grads = [g for g, _ in pairs]
        variables = [v for _, v in pairs]
        states = [self._state_for(v) for v in variables]
        lr = self.learning_rate

        # All new values are computed before any is assigned: a step that
        # fails part way (out of GPU memory) leaves weights and state as they were.
        grads = self._clip_gradients(grads)
        if self._apply_fused(grads, variables, states, lr):
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
        return done

    def scale_loss(self, loss):
        """The loss the training step differentiates: ``loss`` itself (a LossScaleOptimizer scales it)."""
        return loss

    def apply_gradients(self, grads_and_vars):
        """Keras's pair form: ``apply_gradients([(grad, variable), ...])``; returns ``iterations``."""
        pairs = list(grads_and_vars)
        for i, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TypeError(
                    f"Invalid type for `grads_and_vars[{i}]`: expected a (gradient, variable) pair. Received: {pair!r}"
                )
        if pairs:
            self.apply([g for g, _ in pairs], [v for _, v in pairs])
        return self._iterations

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
