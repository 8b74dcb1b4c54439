"""Keras 3's similarity losses, differentiable on the tape: cosine similarity, log-cosh, Dice and Tversky.

Each says how far ``y_pred`` is from ``y_true``: in direction (cosine), in a
smooth error (log-cosh), or in overlap (Dice, Tversky, for segmentation
masks). Formulas follow Keras 3.15 (``keras/src/losses/losses.py``), with
``eps = config.epsilon()``:

* cosine similarity: ``-sum(l2_normalize(y_true) * l2_normalize(y_pred), axis)``,
  the normalisation ``x * min(rsqrt(sum(x**2)), 1 / eps)`` (a zero vector
  gives 0); the loss is -1 for equal directions, as Keras's sign;
* log-cosh: ``mean(e + softplus(-2 e) - log(2), axis=-1)`` for ``e = y_pred - y_true``
  (``log(cosh(e))`` without overflow);
* Dice: ``1 - 2 * sum(t * p) / (sum(t) + sum(p) + eps)``;
* Tversky: ``1 - sum(t * p) / (sum(t * p) + alpha * sum(t * (1 - p)) + beta * sum((1 - t) * p) + eps)``.

Dice and Tversky sum over ``axis`` (None: every axis, one value for the
batch, which the reduction then passes through; ``(1, 2, 3)`` for images of
shape ``(N, H, W, C)``: one value per image). Inputs, dtypes and reductions
follow :mod:`gpulayers.losses`.

Example:
    >>> y_true = np.array([[0., 1.], [1., 1.]])
    >>> y_pred = np.array([[1., 0.], [1., 1.]])
    >>> np.round(cosine_similarity(y_true, y_pred).data, 3)
    array([-0., -1.])
"""

import math
import numbers

import numpy as np

from gpulayers import config, ops
from gpulayers.argument_validation import check_real
from gpulayers.losses import Loss, _axis_index, _check_axis, _pair

__all__ = ["CosineSimilarity", "Dice", "LogCosh", "Tversky", "cosine_similarity", "dice", "log_cosh", "tversky"]


def _check_sum_axes(axis):
    """None, an int or a list/tuple of ints, kept in the form given (so configs keep it)."""
    def is_int(a):
        return isinstance(a, numbers.Integral) and not isinstance(a, (bool, np.bool_))

    if axis is None or is_int(axis):
        return None if axis is None else int(axis)
    if isinstance(axis, (list, tuple)) and all(is_int(a) for a in axis):
        return type(axis)(int(a) for a in axis)
    raise ValueError(
        f"Invalid value for `axis`: expected None, an int or a tuple of ints. Received: axis={axis!r}"
    )


def _cosine(y_true, y_pred, axis=-1, dtype=None):
    axis = _check_axis(axis)
    t, p = _pair("cosine_similarity", y_true, y_pred, dtype)
    ax = _axis_index(axis, p.ndim, p.shape)
    return -ops.sum(ops.normalize(t, axis=ax) * ops.normalize(p, axis=ax), axis=ax)


def _log_cosh(y_true, y_pred, dtype=None):
    t, p = _pair("log_cosh", y_true, y_pred, dtype)
    error = p - t
    # log(2) as a Python float, exact in float64 (Keras rounds it to float32 first: 2e-9 off there)
    return ops.mean(error + ops.softplus(-2.0 * error) - math.log(2.0), axis=-1)


def _overlap(fn, y_true, y_pred, alpha=0.5, beta=0.5, axis=None, dtype=None):
    axis = _check_sum_axes(axis)
    t, p = _pair(fn, y_true, y_pred, dtype)
    epsilon = config.epsilon()
    intersection = ops.sum(t * p, axis=axis)
    if fn == "dice":
        return 1.0 - 2.0 * intersection / (ops.sum(t, axis=axis) + ops.sum(p, axis=axis) + epsilon)
    missed = ops.sum(t * (1.0 - p), axis=axis)  # Keras calls it ``fp`` and weights it by alpha
    extra = ops.sum((1.0 - t) * p, axis=axis)
    return 1.0 - intersection / (intersection + alpha * missed + beta * extra + epsilon)


def cosine_similarity(y_true, y_pred, axis=-1):
    """``-sum(l2_normalize(y_true) * l2_normalize(y_pred), axis)``: -1 for the same direction, 0 orthogonal."""
    return _cosine(y_true, y_pred, axis)


def log_cosh(y_true, y_pred):
    """``mean(log(cosh(y_pred - y_true)), axis=-1)``, computed without overflow."""
    return _log_cosh(y_true, y_pred)


def dice(y_true, y_pred, axis=None):
    """``1 - 2 * sum(y_true * y_pred) / (sum(y_true) + sum(y_pred) + epsilon)``, summed over ``axis``."""
    return _overlap("dice", y_true, y_pred, axis=axis)


def tversky(y_true, y_pred, alpha=0.5, beta=0.5, axis=None):
    """Keras's Tversky loss summed over ``axis``; ``alpha`` weights ``sum(t * (1 - p))``, ``beta``
    ``sum((1 - t) * p)``; ``alpha = beta = 0.5`` is Dice."""
    alpha, beta = check_real(alpha, "alpha"), check_real(beta, "beta")
    return _overlap("tversky", y_true, y_pred, alpha, beta, axis)


class CosineSimilarity(Loss):
    """Cosine similarity loss, ``-sum(l2_normalize(y_true) * l2_normalize(y_pred), axis)`` per sample.

    Args:
        axis: the features axis (default -1).
        reduction, name, dtype: as :class:`~gpulayers.losses.Loss`.

    ``get_config`` includes ``axis`` (Keras 3's leaves it out, so a round
    trip there resets it to -1; Keras reads this config as it is).
    """

    def __init__(self, axis=-1, reduction="sum_over_batch_size", name="cosine_similarity", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.axis = _check_axis(axis)

    def call(self, y_true, y_pred):
        return _cosine(y_true, y_pred, self.axis, self.dtype)

    def _values(self, y_true, y_pred):
        return self.call(y_true, y_pred), None

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


class LogCosh(Loss):
    """``mean(log(cosh(y_pred - y_true)), axis=-1)`` per sample: about ``e**2 / 2`` for small errors,
    ``|e| - log(2)`` for large ones. reduction, name, dtype: as :class:`~gpulayers.losses.Loss`."""

    def __init__(self, reduction="sum_over_batch_size", name="log_cosh", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return _log_cosh(y_true, y_pred, self.dtype)

    def _values(self, y_true, y_pred):
        return self.call(y_true, y_pred), None


class Dice(Loss):
    """Dice loss, ``1 - 2 * sum(t * p) / (sum(t) + sum(p) + epsilon)`` over ``axis``.

    Args:
        reduction, name: as :class:`~gpulayers.losses.Loss`.
        axis: None (every axis: one value), an int or a tuple of the axes summed.
        dtype: as :class:`~gpulayers.losses.Loss`.
    """

    def __init__(self, reduction="sum_over_batch_size", name="dice", axis=None, dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.axis = _check_sum_axes(axis)

    def call(self, y_true, y_pred):
        return _overlap("dice", y_true, y_pred, axis=self.axis, dtype=self.dtype)

    def _values(self, y_true, y_pred):
        return self.call(y_true, y_pred), None

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


class Tversky(Loss):
    """Tversky loss over ``axis`` (Salehi et al., 2017): Dice with weighted misses.

    Args:
        alpha: weight of ``sum(t * (1 - p))`` (default 0.5).
        beta: weight of ``sum((1 - t) * p)`` (default 0.5).
        reduction, name: as :class:`~gpulayers.losses.Loss`.
        axis: as :class:`Dice`. dtype: as :class:`~gpulayers.losses.Loss`.
    """

    def __init__(self, alpha=0.5, beta=0.5, reduction="sum_over_batch_size", name="tversky", axis=None,
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.alpha = check_real(alpha, "alpha")
        self.beta = check_real(beta, "beta")
        self.axis = _check_sum_axes(axis)

    def call(self, y_true, y_pred):
        return _overlap("tversky", y_true, y_pred, self.alpha, self.beta, self.axis, self.dtype)

    def _values(self, y_true, y_pred):
        return self.call(y_true, y_pred), None

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta, "axis": self.axis}
