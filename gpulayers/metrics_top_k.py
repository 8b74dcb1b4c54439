"""Keras 3's top-k accuracies: how often the true class is among the ``k`` highest predictions.

``top_k_categorical_accuracy`` takes one-hot labels (their argmax is the
true class), ``sparse_top_k_categorical_accuracy`` integer class ids (or,
with ``from_sorted_ids=True``, predictions that are the ids of the top
classes, best first). As Keras's ``in_top_k``, a prediction tied with the
k-th largest counts as in, a NaN score at the true class never does, and an
id outside ``[0, classes)`` is never in. Predictions of rank > 2 are
flattened to ``(-1, classes)`` and the matches take the labels' shape.

Example:
    >>> m = SparseTopKCategoricalAccuracy(k=1)
    >>> m.update_state(np.array([2, 1]), np.array([[0.1, 0.9, 0.8], [0.05, 0.95, 0]]))
    >>> m.result()
    0.5
"""

import numpy as np

from gpulayers.argument_validation import standardize_bool, standardize_int
from gpulayers.autodiff import unwrap
from gpulayers.metrics import MeanMetricWrapper, _float_pred, _namespace

__all__ = [
    "SparseTopKCategoricalAccuracy",
    "TopKCategoricalAccuracy",
    "sparse_top_k_categorical_accuracy",
    "top_k_categorical_accuracy",
]


def _in_top_k(xp, targets, predictions, k):
    """Whether each row's ``targets`` entry is among its ``k`` largest (ties with the k-th count as in)."""
    classes = predictions.shape[-1]
    inside = (targets >= 0) & (targets < classes)
    at = xp.take_along_axis(predictions, xp.where(inside, targets, 0).astype(xp.int64)[:, None], axis=-1)
    at = xp.where(xp.isnan(at), -xp.inf, at)  # a NaN score is no large score
    rank = 1 + xp.sum(predictions > at, axis=-1)
    return inside & (rank <= k)


def _rows(fn, t, p, y_true, y_pred):
    """``p`` as ``(rows, classes)`` and ``t`` as one id per row, checked against each other."""
    if p.ndim < 2:
        raise ValueError(
            f"In {fn}, `y_pred` must have a class axis: shape (batch_size, num_classes). "
            f"Received: y_true.shape={tuple(np.shape(y_true))}, y_pred.shape={tuple(np.shape(y_pred))}"
        )
    p = p.reshape(-1, p.shape[-1])
    t = t.reshape(-1)
    if t.shape[0] != p.shape[0]:
        raise ValueError(
            f"In {fn}, `y_true` must hold one class per row of `y_pred`. "
            f"Received: y_true.shape={tuple(np.shape(y_true))}, y_pred.shape={tuple(np.shape(y_pred))}"
        )
    return t, p


def top_k_categorical_accuracy(y_true, y_pred, k=5):
    """1.0 where ``argmax(y_true)`` (one-hot labels) is among the ``k`` largest of ``y_pred``, else 0.0."""
    y_true, y_pred = unwrap(y_true), unwrap(y_pred)
    xp = _namespace(y_pred, y_true)
    p = _float_pred(xp, y_pred)
    y = xp.asarray(y_true)
    if tuple(y.shape) != tuple(p.shape):
        raise ValueError(
            "In top_k_categorical_accuracy, `y_true` (one-hot) and `y_pred` must have the same shape. "
            f"Received: y_true.shape={tuple(y.shape)}, y_pred.shape={tuple(p.shape)}"
        )
    labels = xp.argmax(y.astype(p.dtype, copy=False), axis=-1) if y.ndim else y
    shape = labels.shape
    t, p = _rows("top_k_categorical_accuracy", labels, p, y_true, y_pred)
    return _in_top_k(xp, t, p, k).astype(xp.float64).reshape(shape)


def sparse_top_k_categorical_accuracy(y_true, y_pred, k=5, from_sorted_ids=False):
    """1.0 where the integer label ``y_true`` is among the ``k`` largest of ``y_pred``, else 0.0.

    With ``from_sorted_ids``, ``y_pred`` holds class ids sorted from the best
    score down (at least ``k`` per row) and a match is the label among the
    first ``k``.
    """
    y_true, y_pred = unwrap(y_true), unwrap(y_pred)
    xp = _namespace(y_pred, y_true)
    p = xp.asarray(y_pred) if from_sorted_ids else _float_pred(xp, y_pred)
    t = xp.asarray(y_true)
    # Keras's casts: ids compare in y_pred's dtype; labels are int32 (a float label truncates)
    t = t.astype(p.dtype if from_sorted_ids else xp.int32, copy=False)
    shape = t.shape if t.ndim > 1 else None
    t, p = _rows("sparse_top_k_categorical_accuracy", t, p, y_true, y_pred)
    if from_sorted_ids:
        matches = xp.any(t[:, None] == p[:, :k], axis=1)  # a label listed twice counts once
    else:
        matches = _in_top_k(xp, t, p, k)
    matches = matches.astype(xp.float64)
    return matches.reshape(shape) if shape is not None else matches


class TopKCategoricalAccuracy(MeanMetricWrapper):
    """How often the one-hot label is among the ``k`` highest predictions.

    Args:
        k: the number of top predictions to look at (an int >= 1, default 5).
        name, dtype: as :class:`~gpulayers.metrics.Metric`.

    Example:
        >>> m = TopKCategoricalAccuracy(k=1)
        >>> m.update_state(np.array([[0, 0, 1], [0, 1, 0]]), np.array([[0.1, 0.9, 0.8], [0.05, 0.95, 0]]))
        >>> m.result()
        0.5
    """

    def __init__(self, k=5, name="top_k_categorical_accuracy", dtype=None):
        k = standardize_int(k, "k", minimum=1)
        super().__init__(top_k_categorical_accuracy, name=name, dtype=dtype, k=k)
        self.k = k

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "k": self.k}


class SparseTopKCategoricalAccuracy(MeanMetricWrapper):
    """How often the integer label is among the ``k`` highest predictions.

    Args:
        k: the number of top predictions to look at (an int >= 1, default 5).
        name, dtype: as :class:`~gpulayers.metrics.Metric`.
        from_sorted_ids: whether ``y_pred`` holds the ids of the top classes,
            best first, rather than a score per class.

    Example:
        >>> m = SparseTopKCategoricalAccuracy(k=1, from_sorted_ids=True)
        >>> m.update_state(np.array([2, 1]), np.array([[1, 0, 3], [1, 2, 3]]))
        >>> m.result()
        0.5
    """

    def __init__(self, k=5, name="sparse_top_k_categorical_accuracy", dtype=None, from_sorted_ids=False):
        k = standardize_int(k, "k", minimum=1)
        from_sorted_ids = standardize_bool(from_sorted_ids, "from_sorted_ids")
        super().__init__(sparse_top_k_categorical_accuracy, name=name, dtype=dtype, k=k, from_sorted_ids=from_sorted_ids)
        self.k = k
        self.from_sorted_ids = from_sorted_ids

    def get_config(self):
        config_ = {"name": self.name, "dtype": self.dtype, "k": self.k}
        if self.from_sorted_ids:  # Keras writes the key only when set
            config_["from_sorted_ids"] = True
        return config_
