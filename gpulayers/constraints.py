"""Weight constraints with Keras 3's classes, formulas and configs.

A constraint maps a weight array to its projected value, ``w_new = c(w)``,
in the same namespace (NumPy or CuPy) and dtype. Norm-based constraints use
Keras's exact formula ``w * desired / (epsilon() + norm)``, with norms taken
over ``axis`` (an int or a list of ints) and ``epsilon()`` from
:mod:`gpulayers.config`.

Example:
    >>> c = get("max_norm", argument="kernel_constraint")
    >>> w = c(np.full((4, 3), 3.0))   # each column rescaled to norm ~2
"""


import numpy as np

from backends import array_namespace
from gpulayers import config
from gpulayers.registry import Registry
from gpulayers.utils import finite_real

__all__ = ["Constraint", "MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm", "deserialize", "get", "serialize"]


def _check_number(value, argument, minimum=None):
    if finite_real(value) is None or (minimum is not None and value < minimum):
        need = "a finite number" if minimum is None else f"a finite number >= {minimum}"
        raise ValueError(f"Invalid value for `{argument}`: expected {need}. Received: {argument}={value!r}")
    return value.item() if isinstance(value, np.generic) else value


def _check_axis(axis):
    """Keep ``axis`` as given (for the config); return the form numpy takes."""
    def is_int(a):
        return isinstance(a, (int, np.integer)) and not isinstance(a, (bool, np.bool_))

    if is_int(axis):
        return int(axis)
    if isinstance(axis, (list, tuple)) and axis and all(is_int(a) for a in axis):
        return tuple(int(a) for a in axis)
    raise ValueError(
        f"Invalid value for `axis`: expected an int or a non-empty list of ints. Received: axis={axis!r}"
    )


def _norms(w, axis):
    xp = array_namespace(w)
    return xp.sqrt(xp.sum(w * w, axis=axis, keepdims=True))


class Constraint:
    """Base class: ``__call__(w)`` returns the constrained weights (here unchanged)."""

    def __call__(self, w):
        return w

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class MaxNorm(Constraint):
    """Rescale slices whose L2 norm exceeds ``max_value``.

    Args:
        max_value: the largest allowed norm (>= 0).
        axis: axis or axes the norm runs over; 0 for a Dense kernel's
            columns, ``[0, 1, 2]`` for a channels-last Conv2D kernel's filters.

    Example:
        >>> MaxNorm(1.0)(np.array([[3.0], [4.0]]))   # ~ [[0.6], [0.8]]
    """

    def __init__(self, max_value=2, axis=0):
        self.max_value = _check_number(max_value, "max_value", minimum=0)
        self._axis = _check_axis(axis)
        self.axis = axis

    def __call__(self, w):
        xp = array_namespace(w)
        norms = _norms(w, self._axis)
        desired = xp.clip(norms, 0.0, self.max_value)
        return w * (desired / (config.epsilon() + norms))

    def get_config(self):
        return {"max_value": self.max_value, "axis": self.axis}


class NonNeg(Constraint):
    """Clamp negative weights to 0: ``maximum(w, 0)``."""

    def __call__(self, w):
        return array_namespace(w).maximum(w, 0.0)


class UnitNorm(Constraint):
    """Scale slices to unit L2 norm: ``w / (epsilon() + norm)``.

    Args:
        axis: axis or axes the norm runs over (see :class:`MaxNorm`).
    """

    def __init__(self, axis=0):
        self._axis = _check_axis(axis)
        self.axis = axis

    def __call__(self, w):
        return w / (config.epsilon() + _norms(w, self._axis))

    def get_config(self):
        return {"axis": self.axis}


class MinMaxNorm(Constraint):
    """Move slice norms towards ``[min_value, max_value]``.

    The target norm is ``rate * clip(norm, min_value, max_value) + (1 - rate) * norm``:
    ``rate=1`` enforces the bounds at once, smaller rates approach them gradually.

    Args:
        min_value: lower norm bound (>= 0).
        max_value: upper norm bound (>= min_value).
        rate: enforcement rate.
        axis: axis or axes the norm runs over (see :class:`MaxNorm`).

    Example:
        >>> MinMaxNorm(1.0, 2.0)(np.array([[0.3], [0.4]]))   # ~ [[0.6], [0.8]]
    """

    def __init__(self, min_value=0.0, max_value=1.0, rate=1.0, axis=0):
        self.min_value = _check_number(min_value, "min_value", minimum=0)
        self.max_value = _check_number(max_value, "max_value", minimum=self.min_value)
        self.rate = _check_number(rate, "rate")
        self._axis = _check_axis(axis)
        self.axis = axis

    def __call__(self, w):
        xp = array_namespace(w)
        norms = _norms(w, self._axis)
        desired = self.rate * xp.clip(norms, self.min_value, self.max_value) + (1 - self.rate) * norms
        return w * (desired / (config.epsilon() + norms))

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value, "rate": self.rate, "axis": self.axis}


_CLASSES = (MaxNorm, NonNeg, UnitNorm, MinMaxNorm)
_BY_NAME = {
    "MaxNorm": MaxNorm, "max_norm": MaxNorm,
    "NonNeg": NonNeg, "non_neg": NonNeg,
    "UnitNorm": UnitNorm, "unit_norm": UnitNorm,
    "MinMaxNorm": MinMaxNorm, "min_max_norm": MinMaxNorm,
}
KERAS_MODULE = "keras.constraints"
_REGISTRY = Registry("constraint", KERAS_MODULE, _BY_NAME, _CLASSES, Constraint)


def deserialize(config, argument="constraint"):
    """Build a built-in constraint from a name or a Keras 3 config dict.

    Only this module's classes are ever instantiated; nothing named in a
    config is imported.

    Example:
        >>> deserialize({"class_name": "MaxNorm", "config": {"max_value": 3, "axis": 0}})
        MaxNorm(max_value=3, axis=0)
    """
    return _REGISTRY.deserialize(config, argument)


def serialize(constraint):
    """Keras 3's dict for a constraint (None stays None).

    Example:
        >>> serialize(NonNeg())
        {'module': 'keras.constraints', 'class_name': 'NonNeg', 'config': {}, 'registered_name': None}
    """
    return _REGISTRY.serialize(constraint)


def get(identifier, argument="constraint"):
    """Resolve a constraint identifier.

    Args:
        identifier: None (returns None), a name (``"max_norm"`` or
            ``"MaxNorm"``), a Keras config dict, a Constraint instance or
            subclass, or a callable ``w -> w``.
        argument: the caller's argument name, used in error messages.

    Example:
        >>> get("non_neg", argument="bias_constraint")
        NonNeg()
    """
    return _REGISTRY.get(identifier, argument)
