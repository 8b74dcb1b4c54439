"""An optimizer's state: per-variable slots, optimizer-wide arrays, Keras's ``variables``, export and import.

:class:`OptimizerState` is the part of :class:`~gpulayers.optimizers.base.Optimizer`
that keeps the state its update rule reads and writes:

- one array per model variable and slot (:meth:`~OptimizerState._slots`:
  momentums, velocities...), created on the variable's first update (or by
  :meth:`~OptimizerState.build`) with the variable's own array module, shape
  and dtype, so it lives where the variable lives (host or GPU) and float32
  training stays float32;
- optimizer-wide 0-d arrays (:meth:`~OptimizerState._global_slots`: Nadam's
  ``u_product``), made at build in the first variable's dtype as Keras does,
  kept on the host;
- Keras's order of all of them (:meth:`~OptimizerState._state_order`), which
  is the order of ``optimizer.variables`` and of a ``.keras`` file's
  ``optimizer/vars`` group, written and read with
  :meth:`~OptimizerState.export_state` and :meth:`~OptimizerState.import_state`.
"""

import numpy as np

from backends import array_namespace, get_ops
from gpulayers.config import floatx
from gpulayers.argument_validation import standardize_int
from gpulayers.optimizers.state_variables import GlobalSlot, ScalarVariable, SlotVariable

__all__ = ["OptimizerState"]


def _as_host(array):
    """An array from another array module as a NumPy array."""
    getter = getattr(array, "get", None)  # CuPy's device -> host copy
    return getter() if callable(getter) else np.asarray(array)


class OptimizerState:
    """The state half of an Optimizer (a mixin: the Optimizer sets ``_state``, ``_global_state``,
    ``_step_globals``, ``_views``, ``_built_variables`` and ``built`` in its ``__init__``)."""

    def _slots(self):
        """Names of the per-variable state arrays (Keras's variable names)."""
        return ()

    def _init_slot(self, slot, value):
        """A new state array for ``slot``, like ``value`` (same module, device, shape, dtype)."""
        return array_namespace(value).zeros_like(value)

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
            entry = (variable, {slot: self._init_slot(slot, variable.value) for slot in self._all_slots()})
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
        self._ensure_globals(variables)
        self._built_variables = variables
        self.built = True

    def _step_snapshot(self):
        """A function that puts back everything a step of :meth:`apply` may change, for a training step
        that failed after it (``gpulayers.models.step_undo``). Only references are kept: the per-variable
        rules replace arrays, never modify them (the fused GPU step, which does, is a step's last act)."""
        entries = {key: (v, dict(slots)) for key, (v, slots) in self._state.items()}
        global_state, global_values = self._global_state, dict(self._global_state)
        scalars = (self._iterations, self.built, self._built_variables)

        def restore():
            for key in [key for key in self._state if key not in entries]:
                del self._state[key]  # slots made by the failed step's build
            for key, (v, slots) in entries.items():
                current = self._state.setdefault(key, (v, {}))[1]
                current.clear()
                current.update(slots)
            global_state.clear()
            global_state.update(global_values)
            self._global_state = global_state
            self._iterations, self.built, self._built_variables = scalars
            self._step_globals = {}

        return restore

    def _slot_groups(self):
        """The slots in Keras's build order: one tuple per ``add_optimizer_variables`` call.

        Keras creates the slots of one call variable by variable (Adam: the
        first variable's momentum and velocity, then the second's...), and
        the calls one after the other. By default each slot is its own call.
        """
        return tuple((slot,) for slot in self._slots())

    def _all_slots(self):
        """Every per-variable state array: Keras's ``average`` (with ``use_ema``) and ``gradient_accumulator``
        (with gradient accumulation), then the rule's slots."""
        return ((("average",) if self.use_ema else ()) + (("gradient_accumulator",) if self.gradient_accumulation_steps
                                                         else ()) + tuple(self._slots()))

    def _slot_order(self, variables):
        """``(variable, slot)`` for each per-variable state array of ``variables``, in Keras's order (the
        averages and the gradient accumulators, which Keras's base ``build`` makes, first)."""
        groups = (((("average",),) if self.use_ema else ()) + ((("gradient_accumulator",),)
                                                             if self.gradient_accumulation_steps else ())
                  + tuple(self._slot_groups()))
        return [(v, slot) for group in groups for v in variables for slot in group]

    # ------------------------------------------------------------ optimizer-wide state

    def _global_slots(self):
        """Names of the optimizer-wide 0-d state arrays, which Keras's ``build`` makes after the slots
        (Nadam's ``u_product``). Kept on the host: they are step constants of the update rule."""
        return ()

    def _initial_global(self, name, dtype):
        """The value ``name`` starts from, a 0-d NumPy array of ``dtype``."""
        return np.zeros((), dtype=dtype)

    def _next_globals(self):
        """The optimizer-wide values after the step in progress (computed once per step, before the
        per-variable updates, which read them from ``self._step_globals``); committed with the step."""
        return {}

    @staticmethod
    def _build_dtype(variables):
        """Keras's dtype for the optimizer-wide state: the first variable's, floatx without any."""
        return np.dtype(variables[0].value.dtype) if variables else np.dtype(floatx())

    def _global_dtype(self, variables):
        existing = next(iter(self._global_state.values()), None)
        return existing.dtype if existing is not None else self._build_dtype(variables)

    def _fresh_globals(self, variables):
        dtype = self._build_dtype(variables)
        return {name: self._initial_global(name, dtype) for name in self._global_slots()}

    def _ensure_globals(self, variables):
        if self._global_slots() and not self._global_state:
            self._set_globals(self._fresh_globals(variables))

    def _set_globals(self, values):
        self._global_state = values
        for name in self._global_slots():  # a view keeps its dtype: the next read makes a new one
            self._views.pop(("global", name), None)

    def _state_order(self, variables):
        """What a weights file holds after iterations and learning rate, in Keras's ``optimizer.variables`` order:
        ``(variable, slot)`` per slot array of ``variables``, then ``(GlobalSlot, name)`` per optimizer-wide array."""
        order = self._slot_order(variables)
        if self._global_slots():
            dtype = self._global_dtype(variables)
            order += [(GlobalSlot(name, dtype), name) for name in self._global_slots()]
        return order

    @property
    def variables(self):
        """Keras's ``optimizer.variables``: ``iteration``, ``learning_rate`` (a float rate only), then the slots.

        Variables (views: see :mod:`~gpulayers.optimizers.state_variables`).
        The model variables in the order they were first seen; slots in
        Keras's build order (Adam: each variable's momentum and velocity, then
        every ``velocity_hat``); the optimizer-wide ones (Nadam's) last.
        """
        out = [self._iterations_variable()]
        if isinstance(self._learning_rate, float):
            out.append(self._learning_rate_variable())
        seen = [v for v, _ in self._state.values()]
        out += [self._slot_variable(v, slot) for v, slot in self._slot_order(seen)]
        out += [self._global_variable(name) for name in self._global_slots() if name in self._global_state]
        return out

    def set_weights(self, weights):
        """Keras's ``optimizer.set_weights``: each of :attr:`variables`, in order, from ``weights`` (arrays of
        their shapes, all checked before any is assigned)."""
        if not self.built:
            raise ValueError(
                "You are calling `set_weights()` on an optimizer that has not yet been built. Please call "
                "`optimizer.build(trainable_variables)` to create the optimizer weights before calling `set_weights()`."
            )
        variables = self.variables
        arrays = [get_ops().to_numpy(getattr(w, "data", w)) if not isinstance(w, np.ndarray) else w for w in weights]
        if len(arrays) != len(variables):
            raise ValueError(
                f"Invalid value for `weights`: optimizer '{self.name}' has {len(variables)} variables. "
                f"Received: {len(arrays)} arrays"
            )
        for v, a in zip(variables, arrays):
            if tuple(np.shape(a)) != tuple(v.shape):
                raise ValueError(
                    f"Optimizer variable {v.path} has shape {tuple(v.shape)} not compatible with provided weight "
                    f"shape {tuple(np.shape(a))}."
                )
        for v, a in zip(variables, arrays):
            v.assign(np.asarray(a))

    def _slot_variable(self, variable, slot):
        key = ("slot", id(variable), slot)
        view = self._views.get(key)
        if view is None:
            view = self._views[key] = SlotVariable(self, variable, slot)
        return view

    def _global_variable(self, name):
        key = ("global", name)
        view = self._views.get(key)
        if view is None:
            dtype = self._global_state[name].dtype

            def put(array):
                self._global_state[name] = np.array(array, dtype=dtype)

            # Keras makes Nadam's u_product as an unnamed Variable: "variable", outside the optimizer's scope
            view = self._views[key] = ScalarVariable("variable", "variable", dtype,
                                                     lambda: self._global_state[name][()], put)
        return view

    # ------------------------------------------------------------ saving and restoring the state

    def export_state(self, variables):
        """The state of ``variables`` as Keras 3 saves it (the ``optimizer/vars`` group of a weights file).

        Returns:
            A dict: ``iterations`` (int); ``learning_rate``, the float
            learning rate, or None for a schedule or a callable (Keras keeps
            no variable for those); ``slots``, NumPy copies of the state
            arrays in Keras's order (:meth:`_state_order`, the optimizer-wide
            ones last), or ``[]`` when none of ``variables`` has state yet
            (Keras's unbuilt optimizer). A variable without state among
            others that have it contributes the arrays its first update
            would start from.
        """
        variables = self._check_variables(variables)
        lr = self._learning_rate if isinstance(self._learning_rate, float) else None
        slots = []
        if any(id(v) in self._state for v in variables):
            for v, slot in self._state_order(variables):
                if isinstance(v, GlobalSlot):
                    array = self._global_state.get(slot)
                    slots.append(np.array(self._initial_global(slot, v.dtype) if array is None else array))
                    continue
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
                optimizer had no state, so these variables (and the
                optimizer-wide state) start afresh.

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
        new_state, new_globals = self._converted_slots(variables, list(slots))
        if new_state is None:
            new_globals = self._fresh_globals(variables)

        def commit():
            self._iterations = int(iterations)
            self._learning_rate = new_lr
            for v in variables:
                if new_state is None:
                    self._state.pop(id(v), None)  # the saved optimizer had none: created afresh on the next update
                else:
                    self._state[id(v)] = (v, new_state[id(v)])
            if self._global_slots():
                self._set_globals(new_globals)
            if not self.built:
                self._built_variables = list(variables)
                self.built = True

        return commit

    def _converted_slots(self, variables, slots):
        """``({id(variable): {slot: array}}, {name: 0-d host array})`` from the arrays in Keras's order, each
        slot on its variable's device; ``(None, None)`` when empty."""
        if not slots:
            return None, None
        order = self._state_order(variables)
        if len(slots) != len(order):
            raise ValueError(
                f"Invalid value for `slots`: optimizer '{self.name}' ({type(self).__name__}) keeps {len(order)} state "
                f"arrays for {len(variables)} variables. Received: {len(slots)} arrays"
            )
        new_state, new_globals = {id(v): {} for v in variables}, {}
        for i, ((v, slot), array) in enumerate(zip(order, slots)):
            shape = tuple(v.shape) if isinstance(v, GlobalSlot) else tuple(v.value.shape)
            if tuple(getattr(array, "shape", ())) != shape:
                raise ValueError(
                    f"Invalid shape for `slots[{i}]`: the '{slot}' state of variable "
                    f"'{getattr(v, 'path', v.name)}' has shape {shape}. "
                    f"Received: slots[{i}].shape={tuple(getattr(array, 'shape', ()))}"
                )
            if getattr(getattr(array, "dtype", None), "kind", None) not in ("f", "i", "u"):
                raise ValueError(
                    f"Invalid dtype for `slots[{i}]`: expected a numeric array for the '{slot}' state of variable "
                    f"'{getattr(v, 'path', v.name)}'. Received: {type(array).__name__} of dtype {getattr(array, 'dtype', None)}"
                )
            if isinstance(v, GlobalSlot):
                new_globals[slot] = np.array(_as_host(array), dtype=v.dtype)
                continue
            value = v.value
            xp = array_namespace(value)
            source = _as_host(array) if xp is np else array  # a CuPy array comes to the host for a NumPy variable
            new_state[id(v)][slot] = xp.array(source, dtype=value.dtype, copy=True)
        return new_state, new_globals
