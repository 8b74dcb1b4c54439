"""Dynamic loss scaling (Keras 3's ``LossScaleOptimizer``), for training under ``mixed_float16``.

float16 gradients underflow to zero below about 6e-8. The training step
multiplies the loss by ``dynamic_scale`` (:meth:`LossScaleOptimizer.scale_loss`),
so every gradient on the way back is that much larger; :meth:`apply` divides
them by the scale again before the wrapped optimizer sees them. The scale
adapts as Keras's does: a step with any non-finite gradient is skipped and
halves it; ``dynamic_growth_steps`` finite steps in a row double it.
``compile`` wraps the optimizer in one automatically when the model's policy
is ``mixed_float16`` (``auto_scale_loss=True``).
"""

import numpy as np

from backends import array_namespace
from gpulayers.argument_validation import check_real, standardize_int
from gpulayers.optimizers.base import Optimizer
from gpulayers.optimizers.state_variables import ScalarVariable

__all__ = ["LossScaleOptimizer"]

# Keras's base-optimizer arguments: a LossScaleOptimizer takes them at their defaults only
# (they belong on the inner optimizer).
_BASE_DEFAULTS = {
    "weight_decay": None, "clipnorm": None, "global_clipnorm": None, "clipvalue": None, "use_ema": False,
    "ema_momentum": 0.99, "ema_overwrite_frequency": None, "loss_scale_factor": None,
    "gradient_accumulation_steps": None,
}


class LossScaleOptimizer(Optimizer):
    """Wraps ``inner_optimizer`` with dynamic loss scaling.

    Args:
        inner_optimizer: the Optimizer that updates the weights.
        initial_scale: the first loss scale (a float > 0; Keras's 2**15).
        dynamic_growth_steps: after this many finite steps in a row the
            scale doubles (an int >= 1).
        name: the optimizer's name (default ``"loss_scale_optimizer"``).
    """


    def __init__(self, inner_optimizer, initial_scale=2.0**15, dynamic_growth_steps=2000, name=None, **kwargs):
        if not kwargs.pop("dynamic", True):
            raise ValueError(
                "Invalid value for `dynamic`: LossScaleOptimizer no longer supports dynamic=False; set "
                "`loss_scale_factor` on the inner optimizer instead. Received: dynamic=False"
            )
        for argument, default in _BASE_DEFAULTS.items():
            if argument in kwargs and kwargs.pop(argument) != default:
                raise ValueError(
                    f"Invalid value for `{argument}`: LossScaleOptimizer does not support it; set it on the "
                    "inner optimizer."
                )
        if kwargs:
            raise ValueError(f"Argument(s) not recognized by LossScaleOptimizer: {sorted(kwargs)}")
        if not isinstance(inner_optimizer, Optimizer):
            raise TypeError(
                "Invalid type for `inner_optimizer`: expected an Optimizer. Received: "
                f"inner_optimizer={inner_optimizer!r} of type {type(inner_optimizer).__name__}"
            )
        if isinstance(inner_optimizer, LossScaleOptimizer):
            raise ValueError("Invalid value for `inner_optimizer`: it is already a LossScaleOptimizer.")
        initial_scale = check_real(initial_scale, "initial_scale", minimum=0, min_open=True)
        dynamic_growth_steps = standardize_int(dynamic_growth_steps, "dynamic_growth_steps")
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = inner_optimizer
        self.initial_scale = float(initial_scale)
        self.dynamic_growth_steps = dynamic_growth_steps
        self._step_counter = 0
        # Keras keeps the scale in a float32 variable: doubling and halving are exact in it.
        self._dynamic_scale = np.float32(self.initial_scale)

    # ------------------------------------------------------------ the scale

    @property
    def dynamic_scale(self):
        """The current loss scale (a float32 scalar)."""
        return self._dynamic_scale

    @property
    def step_counter(self):
        """Finite steps since the scale last changed."""
        return self._step_counter

    def finalize_variable_values(self, var_list):
        """The inner optimizer's (its moving averages, with ``use_ema``), as Keras's."""
        self.inner_optimizer.finalize_variable_values(var_list)

    def scale_loss(self, loss):
        """``loss * dynamic_scale`` (the initial scale before the first step)."""
        return loss * self._dynamic_scale

    def check_finite(self, grads):
        """Whether every gradient is finite: one device reduction per gradient, one read of the result."""
        flags = [array_namespace(g).isfinite(g).all() for g in grads if g is not None]
        if not flags:
            return True
        xp = array_namespace(flags[0])
        return bool(xp.stack(flags).all()) if len(flags) > 1 else bool(flags[0])

    # ------------------------------------------------------------ the inner optimizer's face

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        self.inner_optimizer.learning_rate = value

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    @iterations.setter
    def iterations(self, value):
        self.inner_optimizer.iterations = value

    @property
    def variables(self):
        """Keras's list: this optimizer's own ``iteration`` (0) and ``learning_rate`` (0.0), its
        ``step_counter`` and ``dynamic_scale`` once built, then the inner optimizer's variables."""
        own = [self._iterations_variable(), self._learning_rate_variable()]
        if self.inner_optimizer.built:
            own += [self._scale_variable("step_counter", np.int64), self._scale_variable("dynamic_scale", np.float32)]
        return own + self.inner_optimizer.variables

    def _scale_variable(self, name, dtype):
        view = self._views.get(name)
        if view is None:
            view = self._views[name] = ScalarVariable(
                name, f"{self.name}/{name}", dtype, lambda: getattr(self, name), lambda a: self._set_scale(name, a))
        return view

    def _set_scale(self, name, array):
        """An assigned ``step_counter`` (an int >= 0) or ``dynamic_scale`` (a float > 0)."""
        if name == "step_counter":
            self._step_counter = standardize_int(int(array), "step_counter", minimum=0)
        else:
            self._dynamic_scale = np.float32(check_real(float(array), "dynamic_scale", minimum=0, min_open=True))

    def build(self, variables):
        self.inner_optimizer.build(variables)
        self._built_variables = list(self.inner_optimizer._built_variables)
        self.built = True

    def _state_order(self, variables):
        return self.inner_optimizer._state_order(variables)

    # ------------------------------------------------------------ one step

    def apply(self, grads, variables=None):
        """Unscale ``grads`` and let the inner optimizer apply them, or skip the step if any is not finite."""
        grads, variables = self.inner_optimizer._checked_pairs(grads, variables)
        if not self.check_finite(grads):
            if not self.inner_optimizer.built:
                self.inner_optimizer.build(variables)  # Keras builds the state even on a skipped first step
            self._step_counter = 0
            self._dynamic_scale = np.float32(self._dynamic_scale * np.float32(0.5))
            return
        # divided by the float32 scale (a float16 gradient gives float32, as in Keras: 2**16 is inf in float16)
        scale = self._dynamic_scale
        unscaled = [
            g if g is None or getattr(v, "overwrite_with_gradient", False) else g / scale
            for g, v in zip(grads, variables)
        ]
        self.inner_optimizer.apply(unscaled, variables)
        if self._step_counter == self.dynamic_growth_steps - 1:
            self._step_counter = 0
            self._dynamic_scale = np.float32(self._dynamic_scale * np.float32(2.0))
        else:
            self._step_counter += 1

    def _step_snapshot(self):
        inner = self.inner_optimizer._step_snapshot()
        own = (self._step_counter, self._dynamic_scale, self.built, self._built_variables)

        def restore():
            inner()
            self._step_counter, self._dynamic_scale, self.built, self._built_variables = own

        return restore

    # ------------------------------------------------------------ saving and restoring the state

    def export_state(self, variables):
        """The inner optimizer's state, with this one's ``step_counter`` and ``dynamic_scale``."""
        state = self.inner_optimizer.export_state(variables)
        return {**state, "step_counter": self._step_counter, "dynamic_scale": self._dynamic_scale}

    def import_state(self, variables, iterations, learning_rate=None, slots=(), step_counter=0, dynamic_scale=None):
        self._prepare_import(variables, iterations, learning_rate, slots, step_counter, dynamic_scale)()

    def _prepare_import(self, variables, iterations, learning_rate=None, slots=(), step_counter=0,
                        dynamic_scale=None):
        step_counter = standardize_int(step_counter, "step_counter", minimum=0)
        if dynamic_scale is not None:
            dynamic_scale = np.float32(check_real(dynamic_scale, "dynamic_scale", minimum=0, min_open=True))
        inner = self.inner_optimizer._prepare_import(variables, iterations, learning_rate, slots)

        def commit():
            inner()
            self._step_counter = step_counter
            if dynamic_scale is not None:
                self._dynamic_scale = dynamic_scale
            self._built_variables, self.built = list(self.inner_optimizer._built_variables), True

        return commit

    # ------------------------------------------------------------ config

    def get_config(self):
        from gpulayers import optimizers

        return {
            "name": self.name,
            "inner_optimizer": optimizers.serialize(self.inner_optimizer),
            "initial_scale": self.initial_scale,
            "dynamic_growth_steps": self.dynamic_growth_steps,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        from gpulayers import optimizers

        if not isinstance(config, dict):
            raise TypeError(f"Invalid type for `config`: expected a dict. Received: config={config!r}")
        config = dict(config)
        inner = optimizers.get(config.pop("inner_optimizer", None), argument="inner_optimizer")
        return cls(inner, **config)

    def __repr__(self):
        return (f"<LossScaleOptimizer name={self.name!r} inner={self.inner_optimizer!r} "
                f"dynamic_scale={float(self._dynamic_scale)}>")
