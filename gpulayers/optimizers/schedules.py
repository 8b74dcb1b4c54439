"""Learning-rate schedules with Keras 3's classes, formulas and configs.

A schedule is called with the optimizer's step (``optimizer.iterations``,
the number of updates already applied) and returns the learning rate for
the next update as a Python float. The formulas are Keras 3's
(``keras/src/optimizers/schedules/learning_rate_schedule.py``), computed in
float64 on the host (Keras computes in the dtype of ``initial_learning_rate``,
float32 for a Python float).

Example:
    >>> s = ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5, staircase=True)
    >>> [s(0), s(9), s(10), s(25)]
    [0.1, 0.1, 0.05, 0.025]
    >>> serialize(s)["class_name"]
    'ExponentialDecay'
"""

import difflib
import math

import numpy as np

from gpulayers.argument_validation import check_name, check_real, is_real, standardize_bool

__all__ = [
    "CosineDecay",
    "CosineDecayRestarts",
    "ExponentialDecay",
    "InverseTimeDecay",
    "LearningRateSchedule",
    "PiecewiseConstantDecay",
    "PolynomialDecay",
    "deserialize",
    "serialize",
]

KERAS_MODULE = "keras.optimizers.schedules"


def _step(step):
    """The optimizer step as a float (an int, a NumPy/CuPy integer or a 0-d array); finite. A negative step
    is taken as Keras takes it: the formula extended below 0 (ExponentialDecay(0.1, 10, 0.5)(-1) > 0.1)."""
    if is_real(step) or (getattr(step, "shape", None) == () and hasattr(step, "dtype")):
        value = float(step)
        if math.isfinite(value):
            return value
    raise ValueError(f"Invalid value for `step`: expected a finite number. Received: step={step!r}")


def _overflow_to_inf():
    """IEEE arithmetic without warnings: a rate beyond float64 is inf (0 * inf NaN), as Keras's tensors give
    (Python's ``**`` and ``math.floor`` would raise OverflowError)."""
    return np.errstate(over="ignore", divide="ignore", invalid="ignore")


class LearningRateSchedule:
    """Base class: subclasses define ``__call__(step)`` and ``get_config()``.

    A subclass of this class (or any callable) may be given as an
    optimizer's ``learning_rate``.
    """

    def __call__(self, step):
        raise NotImplementedError(f"Learning rate schedule '{type(self).__name__}' must override `__call__(self, step)`.")

    def get_config(self):
        raise NotImplementedError(
            f"Learning rate schedule '{type(self).__name__}' must override `get_config()` in order to be serializable."
        )

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        try:
            args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        except NotImplementedError:
            args = ""
        return f"{type(self).__name__}({args})"


class ExponentialDecay(LearningRateSchedule):
    """``initial_learning_rate * decay_rate ** (step / decay_steps)``.

    With ``staircase=True`` the exponent is ``floor(step / decay_steps)``.

    Args:
        initial_learning_rate: the rate at step 0 (>= 0).
        decay_steps: > 0.
        decay_rate: >= 0.
        staircase: decay at whole multiples of ``decay_steps`` only.
        name: kept in the config (Keras's default ``"ExponentialDecay"``).
    """

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name="ExponentialDecay"):
        self.initial_learning_rate = check_real(initial_learning_rate, "initial_learning_rate", minimum=0)
        self.decay_steps = check_real(decay_steps, "decay_steps", minimum=0, min_open=True)
        self.decay_rate = check_real(decay_rate, "decay_rate", minimum=0)
        self.staircase = standardize_bool(staircase, "staircase")
        self.name = check_name(name, allow_none=True)

    def __call__(self, step):
        with _overflow_to_inf():  # a growing rate (decay_rate > 1) overflows to inf, as Keras's
            p = np.float64(_step(step)) / self.decay_steps
            if self.staircase:
                p = np.floor(p)
            return float(np.float64(self.initial_learning_rate) * np.float64(self.decay_rate) ** p)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "staircase": self.staircase,
            "name": self.name,
        }


class InverseTimeDecay(LearningRateSchedule):
    """``initial_learning_rate / (1 + decay_rate * step / decay_steps)`` (floored with ``staircase``).

    Args:
        initial_learning_rate: >= 0.
        decay_steps: > 0.
        decay_rate: >= 0.
        staircase: floor ``step / decay_steps``.
        name: kept in the config (default ``"InverseTimeDecay"``).
    """

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name="InverseTimeDecay"):
        self.initial_learning_rate = check_real(initial_learning_rate, "initial_learning_rate", minimum=0)
        self.decay_steps = check_real(decay_steps, "decay_steps", minimum=0, min_open=True)
        self.decay_rate = check_real(decay_rate, "decay_rate", minimum=0)
        self.staircase = standardize_bool(staircase, "staircase")
        self.name = check_name(name, allow_none=True)

    def __call__(self, step):
        with _overflow_to_inf():  # a tiny decay_steps makes p inf and the rate 0, as Keras's
            p = np.float64(_step(step)) / self.decay_steps
            if self.staircase:
                p = np.floor(p)
            return float(np.float64(self.initial_learning_rate) / (1.0 + self.decay_rate * p))

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "staircase": self.staircase,
            "name": self.name,
        }


class PiecewiseConstantDecay(LearningRateSchedule):
    """``values[0]`` while ``step <= boundaries[0]``, ``values[i]`` while
    ``boundaries[i-1] < step <= boundaries[i]``, ``values[-1]`` after the last boundary.

    Args:
        boundaries: strictly increasing numbers.
        values: one more number than ``boundaries``.
        name: kept in the config (Keras's default ``"PiecewiseConstant"``).
    """

    def __init__(self, boundaries, values, name="PiecewiseConstant"):
        if not isinstance(boundaries, (list, tuple)) or not isinstance(values, (list, tuple)):
            raise TypeError(
                "Invalid type for `boundaries` / `values`: expected lists of numbers. "
                f"Received: boundaries={boundaries!r}, values={values!r}"
            )
        boundaries = [check_real(b, "boundaries") for b in boundaries]
        values = [check_real(v, "values") for v in values]
        if len(boundaries) != len(values) - 1:
            raise ValueError(
                "The length of boundaries should be 1 less than the length of values. "
                f"Received: boundaries={boundaries} of length {len(boundaries)}, "
                f"and values={values} of length {len(values)}."
            )
        if any(b >= c for b, c in zip(boundaries, boundaries[1:])):
            raise ValueError(
                f"Invalid value for `boundaries`: expected strictly increasing numbers. Received: boundaries={boundaries}"
            )
        self.boundaries = boundaries
        self.values = values
        self.name = check_name(name, allow_none=True)

    def __call__(self, step):
        step = _step(step)
        for boundary, value in zip(self.boundaries, self.values):
            if step <= boundary:
                return float(value)
        return float(self.values[-1])

    def get_config(self):
        return {"boundaries": list(self.boundaries), "values": list(self.values), "name": self.name}


class PolynomialDecay(LearningRateSchedule):
    """``(initial - end) * (1 - step / decay_steps) ** power + end``, ``step`` capped at ``decay_steps``.

    With ``cycle=True`` the step is not capped; ``decay_steps`` is multiplied
    by ``ceil(step / decay_steps)`` (1 at step 0) instead.

    Args:
        initial_learning_rate: >= 0.
        decay_steps: > 0.
        end_learning_rate: >= 0 (default 0.0001).
        power: >= 0 (default 1.0).
        cycle: restart the decay every ``decay_steps``.
        name: kept in the config (default ``"PolynomialDecay"``).
    """

    def __init__(
        self, initial_learning_rate, decay_steps, end_learning_rate=0.0001, power=1.0, cycle=False,
        name="PolynomialDecay",
    ):
        self.initial_learning_rate = check_real(initial_learning_rate, "initial_learning_rate", minimum=0)
        self.decay_steps = check_real(decay_steps, "decay_steps", minimum=0, min_open=True)
        self.end_learning_rate = check_real(end_learning_rate, "end_learning_rate", minimum=0)
        self.power = check_real(power, "power", minimum=0)
        self.cycle = standardize_bool(cycle, "cycle")
        self.name = check_name(name, allow_none=True)

    def __call__(self, step):
        step = _step(step)
        decay_steps = float(self.decay_steps)
        if self.cycle:
            decay_steps *= 1.0 if step == 0 else float(np.ceil(step / decay_steps))  # -0.0 below 0, as Keras
        else:
            step = min(step, decay_steps)
        with np.errstate(divide="ignore", invalid="ignore"):  # a negative step's cycle is 0 steps long: inf, as Keras
            p = np.float64(step) / decay_steps
            lr = (self.initial_learning_rate - self.end_learning_rate) * (1.0 - p) ** self.power + self.end_learning_rate
        return float(lr)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "end_learning_rate": self.end_learning_rate,
            "power": self.power,
            "cycle": self.cycle,
            "name": self.name,
        }


class CosineDecay(LearningRateSchedule):
    """Cosine decay, optionally after a linear warmup.

    Without ``warmup_target``: ``initial * ((1 - alpha) * 0.5 * (1 + cos(pi * s / decay_steps)) + alpha)``
    with ``s = min(step, decay_steps)``. With ``warmup_target``: a linear
    ramp from ``initial_learning_rate`` to ``warmup_target`` over
    ``warmup_steps``, then the cosine decay from ``warmup_target``.

    Args:
        initial_learning_rate: >= 0.
        decay_steps: > 0.
        alpha: the final rate as a fraction of the decay's start, in [0, 1].
        name: kept in the config (default ``"CosineDecay"``).
        warmup_target: None (no warmup) or the rate reached after warmup.
        warmup_steps: >= 0.
    """

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, name="CosineDecay", warmup_target=None,
                 warmup_steps=0):
        self.initial_learning_rate = check_real(initial_learning_rate, "initial_learning_rate", minimum=0)
        self.decay_steps = check_real(decay_steps, "decay_steps", minimum=0, min_open=True)
        self.alpha = check_real(alpha, "alpha", minimum=0, maximum=1)
        self.name = check_name(name, allow_none=True)
        self.warmup_target = check_real(warmup_target, "warmup_target", minimum=0, allow_none=True)
        self.warmup_steps = check_real(warmup_steps, "warmup_steps", minimum=0)

    def _decay(self, step, start):
        cosine = 0.5 * (1.0 + math.cos(math.pi * step / self.decay_steps))
        return start * ((1 - self.alpha) * cosine + self.alpha)

    def __call__(self, step):
        step = _step(step)
        if self.warmup_target is None:
            return self._decay(min(step, self.decay_steps), float(self.initial_learning_rate))
        step = min(step, self.decay_steps + self.warmup_steps)
        if step < self.warmup_steps:
            delta = self.warmup_target - self.initial_learning_rate
            return delta * (step / self.warmup_steps) + self.initial_learning_rate
        return self._decay(step - self.warmup_steps, float(self.warmup_target))

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "alpha": self.alpha,
            "name": self.name,
            "warmup_target": self.warmup_target,
            "warmup_steps": self.warmup_steps,
        }


class CosineDecayRestarts(LearningRateSchedule):
    """Cosine decay with warm restarts (SGDR, Loshchilov & Hutter).

    The first period lasts ``first_decay_steps``; each next one is ``t_mul``
    times longer and starts from ``m_mul`` times the previous peak. Within a
    period: ``initial * ((1 - alpha) * 0.5 * m_mul**i * (1 + cos(pi * f)) + alpha)``,
    ``i`` the restart index and ``f`` the fraction of the period done.

    Args:
        initial_learning_rate: >= 0.
        first_decay_steps: > 0.
        t_mul: > 0, the growth of each period's length.
        m_mul: >= 0, the factor on each restart's peak.
        alpha: the floor as a fraction of ``initial_learning_rate``, in [0, 1].
        name: kept in the config (default ``"SGDRDecay"``, Keras's).
    """

    def __init__(self, initial_learning_rate, first_decay_steps, t_mul=2.0, m_mul=1.0, alpha=0.0, name="SGDRDecay"):
        self.initial_learning_rate = check_real(initial_learning_rate, "initial_learning_rate", minimum=0)
        self.first_decay_steps = check_real(first_decay_steps, "first_decay_steps", minimum=0, min_open=True)
        self.t_mul = check_real(t_mul, "t_mul", minimum=0, min_open=True)
        self.m_mul = check_real(m_mul, "m_mul", minimum=0)
        self.alpha = check_real(alpha, "alpha", minimum=0, maximum=1)
        self.name = check_name(name, allow_none=True)

    def __call__(self, step):
        with _overflow_to_inf():
            done = np.float64(_step(step)) / self.first_decay_steps
            t_mul = np.float64(self.t_mul)
            if t_mul == 1.0:
                restart = np.floor(done)
                done -= restart
            else:
                # periods 1, t, t**2...: the restart is the last i with (1 - t**i) / (1 - t) <= done
                restart = np.floor(np.log1p(-done * (1.0 - t_mul)) / np.log(t_mul))
                start = (1.0 - t_mul**restart) / (1.0 - t_mul)
                done = (done - start) / t_mul**restart
            cosine = 0.5 * np.float64(self.m_mul) ** restart * (1.0 + np.cos(np.pi * done))
            return float(np.float64(self.initial_learning_rate) * ((1 - self.alpha) * cosine + self.alpha))

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "first_decay_steps": self.first_decay_steps,
            "t_mul": self.t_mul,
            "m_mul": self.m_mul,
            "alpha": self.alpha,
            "name": self.name,
        }


_CLASSES = (
    CosineDecay, CosineDecayRestarts, ExponentialDecay, InverseTimeDecay, PiecewiseConstantDecay, PolynomialDecay,
)
_BY_NAME = {cls.__name__: cls for cls in _CLASSES}


def serialize(schedule):
    """Keras 3's dict for a schedule: ``{"module", "class_name", "config", "registered_name"}``.

    A built-in schedule gets ``module="keras.optimizers.schedules"``; a user
    subclass is written in Keras's custom-object form (which
    :func:`deserialize` refuses to load).
    """
    if not isinstance(schedule, LearningRateSchedule):
        raise TypeError(
            f"Invalid type for `learning_rate_schedule`: expected a LearningRateSchedule. "
            f"Received: learning_rate_schedule={schedule!r}"
        )
    name = type(schedule).__name__
    if type(schedule) in _CLASSES:
        return {"module": KERAS_MODULE, "class_name": name, "config": schedule.get_config(), "registered_name": None}
    return {"module": type(schedule).__module__, "class_name": name, "config": schedule.get_config(),
            "registered_name": name}


def deserialize(config, argument="learning_rate"):
    """Build a built-in schedule from its Keras 3 config dict.

    Only this module's classes are instantiated; nothing named in the config
    is imported. Errors are ValueErrors naming ``argument``.
    """
    if not isinstance(config, dict):
        raise TypeError(
            f"Invalid type for `{argument}`: expected a schedule config dict. Received: {argument}={config!r}"
        )
    name, module, kwargs = config.get("class_name"), config.get("module"), config.get("config", {})
    if not isinstance(name, str) or not isinstance(kwargs, dict):
        raise ValueError(
            f"Invalid value for `{argument}`: a config dict needs a string 'class_name' and a dict 'config'. "
            f"Received: {argument}={config!r}"
        )
    if (module is not None and not str(module).startswith("keras")) or name not in _BY_NAME:
        close = difflib.get_close_matches(name, list(_BY_NAME), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"Invalid value for `{argument}`: {name!r} (module {module!r}) is not a gpulayers built-in "
            f"learning rate schedule.{hint} Expected one of {sorted(_BY_NAME)}. Received: {argument}={config!r}"
        )
    try:
        return _BY_NAME[name].from_config(dict(kwargs))
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"Invalid value for `{argument}`: bad config for {name}: {exc}. Received: {argument}={config!r}"
        ) from None
