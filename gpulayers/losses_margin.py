"""The hinge losses of Keras 3 (margin losses), differentiable on the tape.

``hinge``, ``squared_hinge`` and ``categorical_hinge`` and their classes, with
Keras 3.15's names, defaults and formulas (``keras/src/losses/losses.py``):

* hinge: ``mean(maximum(1 - y_true * y_pred, 0), axis=-1)``;
* squared hinge: ``mean(maximum(1 - y_true * y_pred, 0)**2, axis=-1)``;
* categorical hinge: ``maximum(neg - pos + 1, 0)`` with
  ``pos = sum(y_true * y_pred, -1)`` and ``neg = max((1 - y_true) * y_pred, -1)``.

The labels of ``hinge`` and ``squared_hinge`` are -1 or 1; when every label
of a call is 0 or 1 they are read as binary labels and mapped to -1 and 1
(``2 * y - 1``), as Keras does. That test runs on the device (no host
sync). Inputs, dtypes and reductions follow :mod:`gpulayers.losses`.

Example:
    >>> round(float(Hinge()(np.array([[0., 1.]]), np.array([[0.3, 0.6]]))), 3)
    0.85
"""

from backends import array_namespace
from gpulayers import ops
from gpulayers.losses import Loss, _pair

__all__ = ["CategoricalHinge", "Hinge", "SquaredHinge", "categorical_hinge", "hinge", "squared_hinge"]


def _signed_labels(t):
    """Keras's ``convert_binary_labels_to_hinge``: labels all in {0, 1} become {-1, 1}, others stay."""
    a = t.data
    xp = array_namespace(a)
    is_binary = xp.all((a == 0) | (a == 1))  # a device scalar: the choice is made by ``where``, not the host
    return ops.convert_to_tensor(xp.where(is_binary, 2 * a - 1, a).astype(a.dtype, copy=False))


def _margin(fn, kind, y_true, y_pred, dtype=None):
    t, p = _pair(fn, y_true, y_pred, dtype)
    if kind == "categorical":
        pos = ops.sum(t * p, axis=-1)
        neg = ops.max((1.0 - t) * p, axis=-1)
        return ops.maximum(neg - pos + 1.0, 0.0)
    gap = ops.maximum(1.0 - _signed_labels(t) * p, 0.0)
    return ops.mean(gap if kind == "hinge" else ops.square(gap), axis=-1)


def hinge(y_true, y_pred):
    """``mean(maximum(1 - y_true * y_pred, 0), axis=-1)``; labels in {0, 1} are mapped to {-1, 1}."""
    return _margin("hinge", "hinge", y_true, y_pred)


def squared_hinge(y_true, y_pred):
    """``mean(maximum(1 - y_true * y_pred, 0)**2, axis=-1)``; labels in {0, 1} are mapped to {-1, 1}."""
    return _margin("squared_hinge", "squared", y_true, y_pred)


def categorical_hinge(y_true, y_pred):
    """``maximum(max((1 - y_true) * y_pred) - sum(y_true * y_pred) + 1, 0)`` over the last axis.

    ``y_true`` is one-hot (or in {-1, 1}), of y_pred's shape.
    """
    return _margin("categorical_hinge", "categorical", y_true, y_pred)


class _MarginLoss(Loss):
    _fn, _kind = None, None

    def call(self, y_true, y_pred):
        return _margin(self._fn, self._kind, y_true, y_pred, dtype=self.dtype)

    def _values(self, y_true, y_pred):
        return self.call(y_true, y_pred), None


class Hinge(_MarginLoss):
    """The hinge loss, ``mean(maximum(1 - y_true * y_pred, 0), axis=-1)`` per sample.

    Labels are -1 or 1 (labels all 0 or 1 are mapped to -1 and 1).
    reduction, name, dtype: as :class:`~gpulayers.losses.Loss`.
    """

    _fn, _kind = "hinge", "hinge"

    def __init__(self, reduction="sum_over_batch_size", name="hinge", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)


class SquaredHinge(_MarginLoss):
    """The squared hinge loss, ``mean(maximum(1 - y_true * y_pred, 0)**2, axis=-1)`` per sample.

    Labels as :class:`Hinge`. reduction, name, dtype: as :class:`~gpulayers.losses.Loss`.
    """

    _fn, _kind = "squared_hinge", "squared"

    def __init__(self, reduction="sum_over_batch_size", name="squared_hinge", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)


class CategoricalHinge(_MarginLoss):
    """The categorical hinge loss, ``maximum(neg - pos + 1, 0)`` per sample.

    ``pos = sum(y_true * y_pred)`` and ``neg = max((1 - y_true) * y_pred)``
    over the last axis. reduction, name, dtype: as :class:`~gpulayers.losses.Loss`.
    """

    _fn, _kind = "categorical_hinge", "categorical"

    def __init__(self, reduction="sum_over_batch_size", name="categorical_hinge", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
