"""Nadam, Adamax, Adadelta, Lion and Ftrl, as Keras 3.15 computes them.

The rules, defaults, slot names and default names are those of
``keras/src/optimizers/`` (``nadam.py``, ``adamax.py``, ``adadelta.py``,
``lion.py``, ``ftrl.py``). As in :mod:`gpulayers.optimizers.algorithms`, each
``_update_step(g, w, lr, state)`` returns the variable's new value and its new
state arrays without changing anything in place. Where Keras casts a
hyperparameter or the step to the variable's dtype before using it
(``ops.cast(self.beta_1, variable.dtype)``), the scalar here is made in that
dtype too (``dt(self.beta_1)``), so the float32 arithmetic rounds as Keras's
does; where Keras uses the Python float, so does this module. These
optimizers take the per-variable path on every backend (no fused GPU kernel).
"""

import numpy as np

from backends import array_namespace
from gpulayers.argument_validation import check_real
from gpulayers.optimizers.base import Optimizer

__all__ = ["Adadelta", "Adamax", "Ftrl", "Lion", "Nadam"]


# Keras's common optimizer arguments, which each constructor passes on to Optimizer
_BASE_ARGUMENTS = ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "use_ema", "ema_momentum",
                   "ema_overwrite_frequency", "loss_scale_factor", "gradient_accumulation_steps", "name")


def _base(arguments):
    """The common arguments out of a constructor's ``locals()``."""
    return {key: arguments[key] for key in _BASE_ARGUMENTS}


class Nadam(Optimizer):
    """Adam with Nesterov momentum (Dozat), with Keras's momentum schedule ``u_t = beta_1 * (1 - 0.5 * 0.96**t)``.

    With ``t = iterations + 1``, ``u_product = u_1 * ... * u_t`` (one
    optimizer-wide scalar, updated once per step before the variables)::

        m += (g - m) * (1 - beta_1)
        v += (g * g - v) * (1 - beta_2)
        m_hat = u_{t+1} * m / (1 - u_product * u_{t+1}) + (1 - u_t) * g / (1 - u_product)
        v_hat = v / (1 - beta_2**t)
        w -= m_hat * lr / (sqrt(v_hat) + epsilon)

    Args:
        learning_rate: float, schedule or callable (default 0.001).
        beta_1, beta_2: decay rates in [0, 1] (defaults 0.9 and 0.999).
        epsilon: >= 0 (default 1e-7).
        **kwargs: the common arguments of :class:`~gpulayers.optimizers.base.Optimizer`.

    State: ``momentum`` and ``velocity`` per variable (built together, as in
    Keras), then ``u_product`` (Keras's unnamed ``variable``, 1.0 at build,
    in the dtype of the first variable).
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, use_ema=False, ema_momentum=0.99,
                 ema_overwrite_frequency=None, loss_scale_factor=None, gradient_accumulation_steps=None, name=None,
                 **kwargs):
        beta_1 = check_real(beta_1, "beta_1", minimum=0, maximum=1)
        beta_2 = check_real(beta_2, "beta_2", minimum=0, maximum=1)
        epsilon = check_real(epsilon, "epsilon", minimum=0)
        super().__init__(learning_rate=learning_rate, **_base(locals()), **kwargs)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def _slots(self):
        return ("momentum", "velocity")

    def _slot_groups(self):
        return (("momentum", "velocity"),)

    def _global_slots(self):
        return ("u_product",)

    def _initial_global(self, name, dtype):
        return np.ones((), dtype=dtype)

    def _next_globals(self):
        u_product = self._global_state["u_product"][()]
        dt = type(u_product)
        step = dt(self._updates_done() + 1)
        # Keras: u_product * beta_1 * (1 - 0.5 * 0.96**t), in u_product's dtype
        return {"u_product": np.asarray(u_product * dt(self.beta_1) * (dt(1.0) - dt(0.5) * dt(0.96) ** step))}

    def _update_step(self, g, w, lr, state):
        xp = array_namespace(w)
        dt = w.dtype.type
        step_globals = self._step_globals or self._next_globals()
        local_step, next_step = dt(self._updates_done() + 1), dt(self._updates_done() + 2)
        decay, beta_1, beta_2 = dt(0.96), dt(self.beta_1), dt(self.beta_2)
        u_t = beta_1 * (dt(1.0) - dt(0.5) * decay ** local_step)
        u_t_1 = beta_1 * (dt(1.0) - dt(0.5) * decay ** next_step)
        u_product_t = dt(step_globals["u_product"][()])
        u_product_t_1 = u_product_t * u_t_1
        beta_2_power = beta_2 ** local_step
        m, v = state["momentum"], state["velocity"]
        m = m + (g - m) * (dt(1) - beta_1)
        v = v + (g * g - v) * (dt(1) - beta_2)
        m_hat = (u_t_1 * m) / (dt(1) - u_product_t_1) + ((dt(1) - u_t) * g) / (dt(1) - u_product_t)
        v_hat = v / (dt(1) - beta_2_power)
        return w - (m_hat * lr) / (xp.sqrt(v_hat) + self.epsilon), {"momentum": m, "velocity": v}

    def get_config(self):
        config = super().get_config()
        config.update({"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon})
        return config


class Adamax(Optimizer):
    """Adamax: Adam with the infinity norm.

    With ``t = iterations + 1``::

        m += (g - m) * (1 - beta_1)
        u = max(beta_2 * u, |g|)
        w -= lr * m / ((1 - beta_1**t) * (u + epsilon))

    Args:
        learning_rate: float, schedule or callable (default 0.001).
        beta_1, beta_2: decay rates in [0, 1] (defaults 0.9 and 0.999).
        epsilon: >= 0 (default 1e-7).
        **kwargs: the common arguments of :class:`~gpulayers.optimizers.base.Optimizer`.

    State: ``momentum`` and ``norm`` per variable, built together.
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, use_ema=False, ema_momentum=0.99,
                 ema_overwrite_frequency=None, loss_scale_factor=None, gradient_accumulation_steps=None, name=None,
                 **kwargs):
        beta_1 = check_real(beta_1, "beta_1", minimum=0, maximum=1)
        beta_2 = check_real(beta_2, "beta_2", minimum=0, maximum=1)
        epsilon = check_real(epsilon, "epsilon", minimum=0)
        super().__init__(learning_rate=learning_rate, **_base(locals()), **kwargs)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def _slots(self):
        return ("momentum", "norm")

    def _slot_groups(self):
        return (("momentum", "norm"),)

    def _update_step(self, g, w, lr, state):
        xp = array_namespace(w)
        dt = w.dtype.type
        beta_1_power = dt(self.beta_1) ** dt(self._updates_done() + 1)
        m, u = state["momentum"], state["norm"]
        m = m + (g - m) * (1 - self.beta_1)
        u = xp.maximum(u * self.beta_2, xp.abs(g))
        return w - (m * lr) / ((dt(1) - beta_1_power) * (u + self.epsilon)), {"momentum": m, "norm": u}

    def get_config(self):
        config = super().get_config()
        config.update({"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon})
        return config


class Adadelta(Optimizer):
    """Adadelta (Zeiler), scaled by ``learning_rate`` as in Keras.

    ::

        acc_g = rho * acc_g + (1 - rho) * g * g
        delta = -sqrt(acc_dv + epsilon) * g / sqrt(acc_g + epsilon)
        acc_dv = rho * acc_dv + (1 - rho) * delta * delta
        w += lr * delta

    Args:
        learning_rate: float, schedule or callable (default 0.001; Keras's
            default, where the paper's method has 1.0).
        rho: decay rate in [0, 1] (default 0.95).
        epsilon: >= 0 (default 1e-7), inside both square roots.
        **kwargs: the common arguments of :class:`~gpulayers.optimizers.base.Optimizer`.

    State: ``accumulated_grad`` and ``accumulated_delta_var`` per variable, built together.
    """

    def __init__(self, learning_rate=0.001, rho=0.95, epsilon=1e-7, weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None, use_ema=False, ema_momentum=0.99,
                 ema_overwrite_frequency=None, loss_scale_factor=None, gradient_accumulation_steps=None, name=None,
                 **kwargs):
        rho = check_real(rho, "rho", minimum=0, maximum=1)
        epsilon = check_real(epsilon, "epsilon", minimum=0)
        super().__init__(learning_rate=learning_rate, **_base(locals()), **kwargs)
        self.rho, self.epsilon = rho, epsilon

    def _slots(self):
        return ("accumulated_grad", "accumulated_delta_var")

    def _slot_groups(self):
        return (("accumulated_grad", "accumulated_delta_var"),)

    def _update_step(self, g, w, lr, state):
        xp = array_namespace(w)
        rho = self.rho
        accumulated_grad = state["accumulated_grad"] * rho + (1 - rho) * (g * g)
        accumulated_delta = state["accumulated_delta_var"]
        delta = -((xp.sqrt(accumulated_delta + self.epsilon) * g) / xp.sqrt(accumulated_grad + self.epsilon))
        accumulated_delta = accumulated_delta * rho + (1 - rho) * (delta * delta)
        return w + delta * lr, {"accumulated_grad": accumulated_grad, "accumulated_delta_var": accumulated_delta}

    def get_config(self):
        config = super().get_config()
        config.update({"rho": self.rho, "epsilon": self.epsilon})
        return config


class Lion(Optimizer):
    """Lion (Chen et al., "Symbolic Discovery of Optimization Algorithms"): the sign of an interpolated momentum.

    ::

        w -= lr * sign(beta_1 * m + (1 - beta_1) * g)
        m = beta_2 * m + (1 - beta_2) * g

    Args:
        learning_rate: float, schedule or callable (default 0.001).
        beta_1: in (0, 1] (default 0.9); 0 would make it SignSGD, which
            Keras refuses.
        beta_2: in [0, 1] (default 0.99).
        **kwargs: the common arguments of :class:`~gpulayers.optimizers.base.Optimizer`.

    State: ``momentum`` per variable.
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.99, weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None, use_ema=False, ema_momentum=0.99,
                 ema_overwrite_frequency=None, loss_scale_factor=None, gradient_accumulation_steps=None, name=None,
                 **kwargs):
        beta_1 = check_real(beta_1, "beta_1", minimum=0, maximum=1, min_open=True)  # 0: SignSGD, refused by Keras
        beta_2 = check_real(beta_2, "beta_2", minimum=0, maximum=1)
        super().__init__(learning_rate=learning_rate, **_base(locals()), **kwargs)
        self.beta_1, self.beta_2 = beta_1, beta_2

    def _slots(self):
        return ("momentum",)

    def _update_step(self, g, w, lr, state):
        xp = array_namespace(w)
        dt = w.dtype.type
        beta_1, beta_2 = dt(self.beta_1), dt(self.beta_2)
        m = state["momentum"]
        new_w = w - xp.sign(m * beta_1 + g * (dt(1.0) - beta_1)) * lr
        return new_w, {"momentum": m * beta_2 + g * (dt(1.0) - beta_2)}

    def get_config(self):
        config = super().get_config()
        config.update({"beta_1": self.beta_1, "beta_2": self.beta_2})
        return config


class Ftrl(Optimizer):
    """FTRL-Proximal (McMahan et al.), with L1, L2 and L2-shrinkage regularization, as Keras 3 computes it.

    With ``p = -learning_rate_power`` and ``l2 = l2_regularization_strength + beta / (2 * lr)``::

        g_s = g + 2 * l2_shrinkage_regularization_strength * w
        n_new = n + g * g
        z += g_s - (n_new**p - n**p) / lr * w
        w = (clip(z, -l1, l1) - z) / (n_new**p / lr + 2 * l2)
        n = n_new

    Args:
        learning_rate: float, schedule or callable (default 0.001).
        learning_rate_power: <= 0 (default -0.5); 0 gives a fixed rate.
        initial_accumulator_value: >= 0 (default 0.1), where ``n`` starts.
        l1_regularization_strength, l2_regularization_strength,
        l2_shrinkage_regularization_strength: >= 0 (defaults 0.0).
        beta: the "beta" of the FTRL paper (default 0.0).
        **kwargs: the common arguments of :class:`~gpulayers.optimizers.base.Optimizer`.

    State: ``accumulator`` (``n``) and ``linear`` (``z``) per variable, built together.
    """

    def __init__(self, learning_rate=0.001, learning_rate_power=-0.5, initial_accumulator_value=0.1,
                 l1_regularization_strength=0.0, l2_regularization_strength=0.0,
                 l2_shrinkage_regularization_strength=0.0, beta=0.0, weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None, use_ema=False, ema_momentum=0.99,
                 ema_overwrite_frequency=None, loss_scale_factor=None, gradient_accumulation_steps=None, name=None,
                 **kwargs):
        initial_accumulator_value = check_real(initial_accumulator_value, "initial_accumulator_value", minimum=0)
        learning_rate_power = check_real(learning_rate_power, "learning_rate_power", maximum=0)
        l1 = check_real(l1_regularization_strength, "l1_regularization_strength", minimum=0)
        l2 = check_real(l2_regularization_strength, "l2_regularization_strength", minimum=0)
        shrinkage = check_real(l2_shrinkage_regularization_strength, "l2_shrinkage_regularization_strength", minimum=0)
        beta = check_real(beta, "beta")
        super().__init__(learning_rate=learning_rate, **_base(locals()), **kwargs)
        self.learning_rate_power = learning_rate_power
        self.initial_accumulator_value = initial_accumulator_value
        self.l1_regularization_strength = l1
        self.l2_regularization_strength = l2
        self.l2_shrinkage_regularization_strength = shrinkage
        self.beta = beta

    def _slots(self):
        return ("accumulator", "linear")

    def _slot_groups(self):
        return (("accumulator", "linear"),)

    def _init_slot(self, slot, value):
        if slot == "accumulator":
            return array_namespace(value).full_like(value, self.initial_accumulator_value)
        return super()._init_slot(slot, value)

    def _update_step(self, g, w, lr, state):
        xp = array_namespace(w)
        dt = w.dtype.type
        with np.errstate(divide="ignore", invalid="ignore"):  # lr = 0 gives inf and NaN, as in Keras
            lr_t = dt(lr)  # Keras casts the rate to the variable's dtype; beta / (2 * lr) is in that dtype
            l2 = self.l2_regularization_strength + self.beta / (dt(2.0) * lr_t)
            power = -self.learning_rate_power
            accumulator, linear = state["accumulator"], state["linear"]
            grad_to_use = g + (2 * self.l2_shrinkage_regularization_strength) * w
            new_accumulator = accumulator + g * g
            new_power = xp.power(new_accumulator, power)
            linear = linear + (grad_to_use - ((new_power - xp.power(accumulator, power)) / lr_t) * w)
            quadratic = new_power / lr_t + 2 * l2
            l1 = self.l1_regularization_strength
            new_w = (xp.clip(linear, -l1, l1) - linear) / quadratic
        return new_w, {"accumulator": new_accumulator, "linear": linear}

    def get_config(self):
        config = super().get_config()
        config.update({
            "learning_rate_power": self.learning_rate_power,
            "initial_accumulator_value": self.initial_accumulator_value,
            "l1_regularization_strength": self.l1_regularization_strength,
            "l2_regularization_strength": self.l2_regularization_strength,
            "l2_shrinkage_regularization_strength": self.l2_shrinkage_regularization_strength,
            "beta": self.beta,
        })
        return config
