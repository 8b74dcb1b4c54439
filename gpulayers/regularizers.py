"""Weight penalties with Keras 3's classes, formulas and configs.

``reg(x)`` returns the penalty as a scalar tensor of ``x``'s dtype, computed
with ``gpulayers.ops``, so it is differentiable on the tape (a layer's
``losses`` hold it, and training minimises it with the loss). A user's
regularizer is any callable ``x -> scalar`` written the same way.

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

from gpulayers import ops
from gpulayers.registry import Registry
from gpulayers.utils import finite_real

__all__ = ["L1", "L1L2", "L2", "OrthogonalRegularizer", "Regularizer", "deserialize", "get", "l1", "l1_l2", "l2",
           "orthogonal_regularizer", "serialize"]


def _check_factor(value, argument):
    """A non-negative finite float, like Keras's ``validate_float_arg``."""
    if finite_real(value) is None or value < 0:
        raise ValueError(
            f"Invalid value for `{argument}`: expected a non-negative float. Received: {argument}={value!r}"
        )
    return float(value)


class Regularizer:
    """Base class: ``__call__(x)`` gives the penalty (zero here). Subclasses define ``get_config``."""

    def __call__(self, x):
        return ops.zeros((), dtype=ops.dtype(x))

    def get_config(self):
        raise NotImplementedError(f"{type(self).__name__} does not implement get_config().")

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class L1(Regularizer):
    """``l1 * sum(|x|)`` (its gradient ``l1 * sign(x)`` is 0 at 0).

    Args:
        l1: non-negative factor; None means the default 0.01, as in Keras.

    Example:
        >>> float(L1(0.5)(np.array([-1.0, 2.0])))
        1.5
    """

    def __init__(self, l1=0.01):
        self.l1 = _check_factor(0.01 if l1 is None else l1, "l1")

    def __call__(self, x):
        return self.l1 * ops.sum(ops.absolute(x))

    def get_config(self):
        return {"l1": self.l1}


class L2(Regularizer):
    """``l2 * sum(x**2)``.

    Args:
        l2: non-negative factor; None means the default 0.01, as in Keras.

    Example:
        >>> float(L2(0.5)(np.array([-1.0, 2.0])))
        2.5
    """

    def __init__(self, l2=0.01):
        self.l2 = _check_factor(0.01 if l2 is None else l2, "l2")

    def __call__(self, x):
        return self.l2 * ops.sum(ops.square(x))

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
        penalty = ops.zeros((), dtype=ops.dtype(x))
        # Skip zero terms, as Keras does (no work for an unused factor).
        if self.l1:
            penalty = penalty + self.l1 * ops.sum(ops.absolute(x))
        if self.l2:
            penalty = penalty + self.l2 * ops.sum(ops.square(x))
        return penalty

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


class OrthogonalRegularizer(Regularizer):
    """Pushes the rows (or columns) of a 2D weight towards orthogonality:
    ``factor * 0.5 * sum(|G - diag(G)|) / (n * (n - 1) / 2)``, ``G`` the Gram matrix of the L2-normalised
    rows (``mode="rows"``, ``n`` rows) or columns (``mode="columns"``), as Keras 3's.

    Args:
        factor: non-negative factor (default 0.01). mode: ``"rows"`` (default) or ``"columns"``.

    Example:
        >>> float(OrthogonalRegularizer(factor=1.0)(np.array([[1.0, 0.0], [1.0, 1.0]])))
        0.7071067811865475
    """

    def __init__(self, factor=0.01, mode="rows"):
        self.factor = _check_factor(factor, "factor")
        if not isinstance(mode, str) or mode not in ("rows", "columns"):
            raise ValueError(f"Invalid value for `mode`: expected one of {{'rows', 'columns'}}. Received: mode={mode!r}")
        self.mode = mode

    def __call__(self, x):
        if len(x.shape) != 2:
            raise ValueError(
                f"Invalid value for `inputs` of OrthogonalRegularizer: expected rank 2. Received: inputs.shape="
                f"{tuple(x.shape)}"
            )
        rows = self.mode == "rows"
        x = ops.normalize(x, axis=1 if rows else 0)
        product = ops.matmul(x, ops.transpose(x)) if rows else ops.matmul(ops.transpose(x), x)
        size = x.shape[0] if rows else x.shape[1]
        off_diagonal = product * (1.0 - ops.eye(size, dtype=ops.dtype(x)))
        pairs = size * (size - 1.0) / 2.0
        return self.factor * 0.5 * ops.sum(ops.absolute(off_diagonal)) / pairs

    def get_config(self):
        return {"factor": self.factor, "mode": self.mode}


# Keras 3's lower-case names for the classes (keras.regularizers.l2(1e-3)).
l1, l2, l1_l2, orthogonal_regularizer = L1, L2, L1L2, OrthogonalRegularizer

_CLASSES = (L1, L2, L1L2, OrthogonalRegularizer)
# Keras 3's table: class names and their snake_case forms ("L1L2" -> "l1l2").
_BY_NAME = {"L1": L1, "l1": L1, "L2": L2, "l2": L2, "L1L2": L1L2, "l1l2": L1L2,
            "OrthogonalRegularizer": OrthogonalRegularizer, "orthogonal_regularizer": OrthogonalRegularizer}
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
            Regularizer instance or subclass, or a callable ``x -> penalty``.
        argument: the caller's argument name, used in error messages.

    Example:
        >>> get("l1", argument="kernel_regularizer")
        L1(l1=0.01)
    """
    return _REGISTRY.get(identifier, argument)
