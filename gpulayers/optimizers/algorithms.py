"""The update rules: SGD, Adam, AdamW, RMSprop and Adagrad, as Keras 3 computes them.

Each ``_update_step(g, w, lr, state)`` gets the (clipped) gradient already
cast to the variable's dtype and the learning rate of the current step, and
returns the variable's new value and its new state arrays. Nothing is updated
in place, so a step that fails half way (out of memory) changes nothing: the
optimizer commits every variable's results together. Each expression rounds
exactly as Keras's in-place form (``m * b - g * lr`` is ``m *= b; m -= g * lr``).
The rules, defaults and default names are those of ``keras/src/optimizers/``
(``sgd.py``, ``adam.py``, ``adamw.py``, ``rmsprop.py``, ``adagrad.py``).
"""

import math

from backends import array_namespace
from gpulayers.argument_validation import check_real, standardize_bool
from gpulayers.optimizers.base import Optimizer

__all__ = ["SGD", "Adagrad", "Adam", "AdamW", "RMSprop"]


class SGD(Optimizer):
    """Gradient descent, with optional (Nesterov) momentum.

    Without momentum: ``w -= lr * g``. With momentum:
    ``m = momentum * m - lr * g``, then ``w += m`` or, with ``nesterov``,
    ``w += momentum * m - lr * g``.

    Args:
        learning_rate: float, schedule or callable (default 0.01).
        momentum: float in [0, 1] (default 0.0; the momentum state exists only when it is not 0).
        nesterov: bool (default False).
        **kwargs: the common arguments of :class:`~gpulayers.optimizers.base.Optimizer`.

    Example:
        >>> opt = SGD(learning_rate=0.1, momentum=0.9)
        >>> opt.apply([grad], [variable])
    """


    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None, use_ema=False, ema_momentum=0.99,
                 ema_overwrite_frequency=None, loss_scale_factor=None, gradient_accumulation_steps=None, name=None,
                 **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, clipnorm=clipnorm,
                         clipvalue=clipvalue, global_clipnorm=global_clipnorm, use_ema=use_ema,
                         ema_momentum=ema_momentum, ema_overwrite_frequency=ema_overwrite_frequency,
                         loss_scale_factor=loss_scale_factor, gradient_accumulation_steps=gradient_accumulation_steps,
                         name=name, **kwargs)
        self.momentum = check_real(momentum, "momentum", minimum=0, maximum=1)
        self.nesterov = standardize_bool(nesterov, "nesterov")

    def _slots(self):
        return ("momentum",) if self.momentum != 0 else ()

    def _update_step(self, g, w, lr, state):
        if self.momentum == 0:
            return w - g * lr, {}
        m = state["momentum"] * self.momentum - g * lr
        if self.nesterov:
            return w + (m * self.momentum - g * lr), {"momentum": m}
        return w + m, {"momentum": m}

    def _fused_rule(self, lr):
        use = self.momentum != 0
        return "sgd", {"lr": lr, "momentum": self.momentum, "use_momentum": use, "nesterov": self.nesterov}, \
            ("momentum" if use else None,)

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum, "nesterov": self.nesterov})
        return config


class Adam(Optimizer):
    """Adam (Kingma & Ba), with Keras's "epsilon hat" and optional AMSGrad.

    With ``t = iterations + 1``::

        m += (g - m) * (1 - beta_1)
        v += (g * g - v) * (1 - beta_2)
        v_hat = max(v_hat, v)                      # amsgrad only; then used for v
        w -= m * lr * sqrt(1 - beta_2**t) / (1 - beta_1**t) / (sqrt(v) + epsilon)

    Args:
        learning_rate: float, schedule or callable (default 0.001).
        beta_1, beta_2: decay rates in [0, 1) (defaults 0.9 and 0.999).
        epsilon: >= 0 (default 1e-7).
        amsgrad: bool (default False).
        **kwargs: the common arguments of :class:`~gpulayers.optimizers.base.Optimizer`.
    """


    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False,
                 weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None, use_ema=False,
                 ema_momentum=0.99, ema_overwrite_frequency=None, loss_scale_factor=None,
                 gradient_accumulation_steps=None, name=None, **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, clipnorm=clipnorm,
                         clipvalue=clipvalue, global_clipnorm=global_clipnorm, use_ema=use_ema,
                         ema_momentum=ema_momentum, ema_overwrite_frequency=ema_overwrite_frequency,
                         loss_scale_factor=loss_scale_factor, gradient_accumulation_steps=gradient_accumulation_steps,
                         name=name, **kwargs)
        self.beta_1 = check_real(beta_1, "beta_1", minimum=0, maximum=1, max_open=True)
        self.beta_2 = check_real(beta_2, "beta_2", minimum=0, maximum=1, max_open=True)
        self.epsilon = check_real(epsilon, "epsilon", minimum=0)
        self.amsgrad = standardize_bool(amsgrad, "amsgrad")

    def _slots(self):
        return ("momentum", "velocity", "velocity_hat") if self.amsgrad else ("momentum", "velocity")

    def _slot_groups(self):
        # Keras builds momentum and velocity together (interleaved per variable), then velocity_hat.
        return (("momentum", "velocity"),) + ((("velocity_hat",),) if self.amsgrad else ())

    def _alpha(self, lr):
        """The step size with both bias corrections, for step ``iterations + 1``."""
        t = self._updates_done() + 1
        return lr * math.sqrt(1 - self.beta_2**t) / (1 - self.beta_1**t)

    def _update_step(self, g, w, lr, state):
        xp = array_namespace(w)
        alpha = self._alpha(lr)
        m, v = state["momentum"], state["velocity"]
        m = m + (g - m) * (1 - self.beta_1)
        v = v + (g * g - v) * (1 - self.beta_2)
        new_state = {"momentum": m, "velocity": v}
        if self.amsgrad:
            v = new_state["velocity_hat"] = xp.maximum(state["velocity_hat"], v)
        return w - (m * alpha) / (xp.sqrt(v) + self.epsilon), new_state

    def _fused_rule(self, lr):
        constants = {"lr": lr, "alpha": self._alpha(lr),
                     "one_minus_beta_1": 1 - self.beta_1, "one_minus_beta_2": 1 - self.beta_2,
                     "epsilon": self.epsilon, "amsgrad": self.amsgrad}
        return "adam", constants, ("momentum", "velocity", "velocity_hat" if self.amsgrad else None)

    def get_config(self):
        config = super().get_config()
        config.update({"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                       "amsgrad": self.amsgrad})
        return config


class AdamW(Adam):
    """Adam with decoupled weight decay: Adam whose ``weight_decay`` defaults to 0.004 and may not be None.

    The decay is the base optimizer's ``w -= w * weight_decay * lr``, applied
    before the Adam step (Keras 3's AdamW is exactly this).
    """


    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, clipnorm=None, clipvalue=None, global_clipnorm=None, use_ema=False,
                 ema_momentum=0.99, ema_overwrite_frequency=None, loss_scale_factor=None,
                 gradient_accumulation_steps=None, name=None, **kwargs):
        if weight_decay is None:
            raise ValueError("Argument `weight_decay` must be a float. Received: weight_decay=None")
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                         amsgrad=amsgrad, weight_decay=weight_decay, clipnorm=clipnorm, clipvalue=clipvalue,
                         global_clipnorm=global_clipnorm, use_ema=use_ema, ema_momentum=ema_momentum,
                         ema_overwrite_frequency=ema_overwrite_frequency, loss_scale_factor=loss_scale_factor,
                         gradient_accumulation_steps=gradient_accumulation_steps, name=name, **kwargs)


class RMSprop(Optimizer):
    """RMSprop, optionally centered and with plain momentum.

    ::

        v = rho * v + (1 - rho) * g * g
        a = rho * a + (1 - rho) * g                # centered only
        step = lr * g / sqrt(v - a * a + epsilon)  # sqrt(v + epsilon) when not centered
        mom = momentum * mom + step; w -= mom      # w -= step when momentum is 0

    Args:
        learning_rate: float, schedule or callable (default 0.001).
        rho: discount in [0, 1] (default 0.9).
        momentum: in [0, 1] (default 0.0).
        epsilon: >= 0 (default 1e-7); added inside the square root.
        centered: bool (default False).
        **kwargs: the common arguments of :class:`~gpulayers.optimizers.base.Optimizer`.
    """


    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False,
                 weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None, use_ema=False,
                 ema_momentum=0.99, ema_overwrite_frequency=None, loss_scale_factor=None,
                 gradient_accumulation_steps=None, name=None, **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, clipnorm=clipnorm,
                         clipvalue=clipvalue, global_clipnorm=global_clipnorm, use_ema=use_ema,
                         ema_momentum=ema_momentum, ema_overwrite_frequency=ema_overwrite_frequency,
                         loss_scale_factor=loss_scale_factor, gradient_accumulation_steps=gradient_accumulation_steps,
                         name=name, **kwargs)
        self.rho = check_real(rho, "rho", minimum=0, maximum=1)
        self.momentum = check_real(momentum, "momentum", minimum=0, maximum=1)
        self.epsilon = check_real(epsilon, "epsilon", minimum=0)
        self.centered = standardize_bool(centered, "centered")

    def _slots(self):
        return ("velocity",) + (("momentum",) if self.momentum > 0 else ()) + \
            (("average_gradient",) if self.centered else ())

    def _update_step(self, g, w, lr, state):
        xp = array_namespace(w)
        rho = self.rho
        velocity = state["velocity"] * rho + (1 - rho) * (g * g)
        new_state = {"velocity": velocity}
        if self.centered:
            average = new_state["average_gradient"] = state["average_gradient"] * rho + (1 - rho) * g
            denominator = velocity - average * average + self.epsilon
        else:
            denominator = velocity + self.epsilon
        increment = (lr * g) / xp.sqrt(denominator)
        if self.momentum > 0:
            momentum = new_state["momentum"] = state["momentum"] * self.momentum + increment
            return w - momentum, new_state
        return w - increment, new_state

    def _fused_rule(self, lr):
        use = self.momentum > 0
        constants = {"lr": lr, "rho": self.rho, "one_minus_rho": 1 - self.rho, "epsilon": self.epsilon,
                     "momentum": self.momentum, "use_momentum": use, "centered": self.centered}
        return "rmsprop", constants, ("velocity", "momentum" if use else None,
                                      "average_gradient" if self.centered else None)

    def get_config(self):
        config = super().get_config()
        config.update({"rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon,
                       "centered": self.centered})
        return config


class Adagrad(Optimizer):
    """Adagrad: ``acc += g * g; w -= lr * g / sqrt(acc + epsilon)``, ``acc`` starting at
    ``initial_accumulator_value``.

    Args:
        learning_rate: float, schedule or callable (default 0.001).
        initial_accumulator_value: >= 0 (default 0.1).
        epsilon: >= 0 (default 1e-7); added inside the square root.
        **kwargs: the common arguments of :class:`~gpulayers.optimizers.base.Optimizer`.

    Keras 3 gives Adagrad no fixed default name: ``adagrad``, then
    ``adagrad_1``... (counted with the layer names; ``clear_session`` resets).
    """


    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, use_ema=False, ema_momentum=0.99,
                 ema_overwrite_frequency=None, loss_scale_factor=None, gradient_accumulation_steps=None, name=None,
                 **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, clipnorm=clipnorm,
                         clipvalue=clipvalue, global_clipnorm=global_clipnorm, use_ema=use_ema,
                         ema_momentum=ema_momentum, ema_overwrite_frequency=ema_overwrite_frequency,
                         loss_scale_factor=loss_scale_factor, gradient_accumulation_steps=gradient_accumulation_steps,
                         name=name, **kwargs)
        self.initial_accumulator_value = check_real(initial_accumulator_value, "initial_accumulator_value", minimum=0)
        self.epsilon = check_real(epsilon, "epsilon", minimum=0)

    def _slots(self):
        return ("accumulator",)

    def _init_slot(self, slot, value):
        return array_namespace(value).full_like(value, self.initial_accumulator_value)

    def _update_step(self, g, w, lr, state):
        xp = array_namespace(w)
        accumulator = state["accumulator"] + g * g
        return w - (lr * g) / xp.sqrt(accumulator + self.epsilon), {"accumulator": accumulator}

    def _fused_rule(self, lr):
        return "adagrad", {"lr": lr, "epsilon": self.epsilon}, ("accumulator",)

    def get_config(self):
        config = super().get_config()
        config.update({"initial_accumulator_value": self.initial_accumulator_value, "epsilon": self.epsilon})
        return config
