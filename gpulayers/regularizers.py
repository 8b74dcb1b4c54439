"""Weight penalties with Keras 3's classes, formulas and configs, plus gradients.

``reg(x)`` returns the penalty as a 0-d array of ``x``'s namespace and dtype;
``reg.gradient(x)`` returns d penalty / dx, an array like ``x``, so layers can
add it to their weight gradients.

String names follow Keras 3's ``regularizers.get``: ``"l1"`` -> ``L1(0.01)``,
``"l2"`` -> ``L2(0.01)``, ``"l1l2"`` -> ``L1L2()`` (that is l1 = l2 = 0, a
zero penalty, though Keras's L1L2 docstring claims 0.01 each). Keras 3 has
no ``"l1_l2"`` entry (its class name L1L2 snake-cases to ``"l1l2"``); here
``"l1_l2"`` means what it meant in Keras 2 (the ``l1_l2()`` shortcut):
``L1L2(l1=0.01, l2=0.01)``.

Example:
    >>> reg = get("l2", argument="kernel_regularizer")
    >>> float(reg(np.ones((2, 2))))
    0.04
"""

from backends import array_namespace
from gpulayers.registry import Registry
from gpulayers.utils import finite_real

__all__ = ["L1", "L1L2", "L2", "Regularizer", "deserialize", "get", "get_gradient", "serialize"]


def _check_factor(value, argument):
    """A non-negative finite float, like Keras's ``validate_float_arg``."""
    if finite_real(value) is None or value < 0:
        raise ValueError(
            f"Invalid value for `{argument}`: expected a non-negative float. Received: {argument}={value!r}"
        )
    return float(value)


class Regularizer:
    """Base class: ``__call__(x)`` gives the penalty, ``gradient(x)`` its derivative.

    The base penalty is zero. Subclasses define ``get_config``.
    """

    def __call__(self, x):
        xp = array_namespace(x)
        return xp.zeros((), dtype=x.dtype)

    def gradient(self, x):
        return array_namespace(x).zeros_like(x)

    def get_config(self):
        raise NotImplementedError(f"{type(self).__name__} does not implement get_config().")

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _l1(x, factor):
    xp = array_namespace(x)
    return xp.asarray(factor * xp.sum(xp.abs(x)), dtype=x.dtype)


def _l2(x, factor):
    xp = array_namespace(x)
    return xp.asarray(factor * xp.sum(x * x), dtype=x.dtype)


class L1(Regularizer):
    """``l1 * sum(|x|)``; gradient ``l1 * sign(x)`` (0 at 0).

    Args:
        l1: non-negative factor; None means the default 0.01, as in Keras.

    Example:
        >>> float(L1(0.5)(np.array([-1.0, 2.0])))
        1.5
    """

    def __init__(self, l1=0.01):
        self.l1 = _check_factor(0.01 if l1 is None else l1, "l1")

    def __call__(self, x):
        return _l1(x, self.l1)

    def gradient(self, x):
        return self.l1 * array_namespace(x).sign(x)

    def get_config(self):
        return {"l1": self.l1}


class L2(Regularizer):
    """``l2 * sum(x**2)``; gradient ``2 * l2 * x``.

    Args:
        l2: non-negative factor; None means the default 0.01, as in Keras.

    Example:
        >>> float(L2(0.5)(np.array([-1.0, 2.0])))
        2.5
    """

    def __init__(self, l2=0.01):
        self.l2 = _check_factor(0.01 if l2 is None else l2, "l2")

    def __call__(self, x):
        return _l2(x, self.l2)

    def gradient(self, x):
        return (2.0 * self.l2) * x

    def get_config(self):
        return {"l2": self.l2}


class L1L2(Regularizer):
    """``l1 * sum(|x|) + l2 * sum(x**2)``.

    Args:
        l1, l2: non-negative factors; defaults (and None) are 0.0, as in Keras.

    Example:
        >>> float(L1L2(l1=1.0, l2=1.0)(np.array([-1.0, 2.0])))
        8.0
    """

    def __init__(self, l1=0.0, l2=0.0):
        self.l1 = _check_factor(0.0 if l1 is None else l1, "l1")
        self.l2 = _check_factor(0.0 if l2 is None else l2, "l2")

    def __call__(self, x):
        xp = array_namespace(x)
        penalty = xp.zeros((), dtype=x.dtype)
        # Skip zero terms, as Keras does (no work for an unused factor).
        if self.l1:
            penalty = penalty + _l1(x, self.l1)
        if self.l2:
            penalty = penalty + _l2(x, self.l2)
        return xp.asarray(penalty, dtype=x.dtype)

    def gradient(self, x):
        xp = array_namespace(x)
        grad = xp.zeros_like(x)
        if self.l1:
            grad = grad + self.l1 * xp.sign(x)
        if self.l2:
            grad = grad + (2.0 * self.l2) * x
        return grad

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


_CLASSES = (L1, L2, L1L2)
# Keras 3's table: class names and their snake_case forms ("L1L2" -> "l1l2").
_BY_NAME = {"L1": L1, "l1": L1, "L2": L2, "l2": L2, "L1L2": L1L2, "l1l2": L1L2}
KERAS_MODULE = "keras.regularizers"
# "l1_l2" is Keras 2's l1_l2() shortcut, which this name stood for.
_SHORTCUTS = {"l1_l2": lambda: L1L2(l1=0.01, l2=0.01)}
_REGISTRY = Registry("regularizer", KERAS_MODULE, _BY_NAME, _CLASSES, Regularizer, _SHORTCUTS)


def deserialize(config, argument="regularizer"):
    """Build a built-in regularizer from a name or a Keras 3 config dict.

    Only this module's classes are ever instantiated; nothing named in a
    config is imported.

    Example:
        >>> deserialize({"module": "keras.regularizers", "class_name": "L2",
        ...              "config": {"l2": 0.1}, "registered_name": None})
        L2(l2=0.1)
    """
    return _REGISTRY.deserialize(config, argument)


def serialize(regularizer):
    """Keras 3's dict for a regularizer (None stays None).

    Example:
        >>> serialize(L1(0.1))["config"]
        {'l1': 0.1}
    """
    return _REGISTRY.serialize(regularizer)


def get(identifier, argument="regularizer"):
    """Resolve a regularizer identifier.

    Args:
        identifier: None (returns None), a name, a Keras config dict, a
            Regularizer instance or subclass, or a callable ``x -> penalty``
            (which then has no ``gradient``).
        argument: the caller's argument name, used in error messages.

    Example:
        >>> get("l1", argument="kernel_regularizer")
        L1(l1=0.01)
    """
    return _REGISTRY.get(identifier, argument)


def get_gradient(regularizer):
    """``regularizer.gradient``, or None when there is no trustworthy one.

    None for a plain callable without ``gradient``, and for a Regularizer
    subclass that overrides ``__call__`` but not ``gradient`` (the base's
    zero gradient would silently drop its penalty from training).
    """
    cls = type(regularizer)
    if isinstance(regularizer, Regularizer) and cls.gradient is Regularizer.gradient \
            and cls.__call__ is not Regularizer.__call__:
        return None
    return getattr(regularizer, "gradient", None)
