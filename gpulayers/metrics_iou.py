"""Keras 3's intersection-over-union metrics: IoU, MeanIoU, BinaryIoU, OneHotIoU and OneHotMeanIoU.

All keep one weighted confusion matrix, Keras 3.15's variable
``total_confusion_matrix`` of shape ``(num_classes, num_classes)`` (rows:
true class, columns: predicted class), and report the mean over the target
classes of ``tp / (tp + fp + fn)``, a class whose ``tp + fp + fn`` is 0
counting for nothing (neither 0 nor 1)::

    iou_c = cm[c, c] / (sum(cm[:, c]) + sum(cm[c, :]) - cm[c, c] + eps)
    result = sum(iou_c over valid targets) / (number of valid targets + eps)

As in Keras the default dtype is int32: the matrix holds integer counts and
float sample weights are truncated (with Keras's warning); pass
``dtype="float32"`` for fractional weights. Labels and predictions are
class ids (flattened), or one-hot / scores reduced by ``argmax`` along
``axis`` when ``sparse_y_true`` / ``sparse_y_pred`` is False; a pair whose
true or predicted id is outside ``[0, num_classes)``, or whose true id is
``ignore_class``, is left out.

Example:
    >>> m = MeanIoU(num_classes=2)
    >>> m.update_state([0, 0, 1, 1], [0, 1, 0, 1])
    >>> round(m.result(), 4)
    0.3333
"""

import warnings

import numpy as np

from backends import get_ops
from gpulayers import config
from gpulayers.argument_validation import check_real, standardize_bool, standardize_int
from gpulayers.autodiff import unwrap
from gpulayers.metrics import _StateMetric

__all__ = ["BinaryIoU", "IoU", "MeanIoU", "OneHotIoU", "OneHotMeanIoU"]

_ANY_INT = -(2 ** 62)  # the lower bound for arguments that may be negative (ignore_class, axis)


def _iou_dtype(dtype):
    """Keras's ``dtype or "int"``: int32 by default; any integer or float dtype."""
    if dtype is None or dtype == "int":
        return "int32"
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name is None or np.dtype(name).kind not in "iuf":
        raise ValueError(f"Invalid value for `dtype`: expected None or an integer or float dtype. Received: dtype={dtype!r}")
    return name


def _target_ids(target_class_ids, num_classes):
    try:
        ids = list(target_class_ids)
    except TypeError:
        ids = None
    if not ids or not all(isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_)) for i in ids):
        raise ValueError(
            "Invalid value for `target_class_ids`: expected a non-empty list of class ids (ints). "
            f"Received: target_class_ids={target_class_ids!r}"
        )
    if max(ids) >= num_classes or min(ids) < 0:
        raise ValueError(
            f"Invalid value for `target_class_ids`: target class id {max(ids) if max(ids) >= num_classes else min(ids)} "
            f"is out of range, which is [0, {num_classes}). Received: target_class_ids={target_class_ids!r}"
        )
    return [int(i) for i in ids]


class _IoUBase(_StateMetric):
    """The confusion matrix of class ids, accumulated in ``total_confusion_matrix``."""

    def __init__(self, num_classes, name=None, dtype=None, ignore_class=None, sparse_y_true=True,
                 sparse_y_pred=True, axis=-1):
        num_classes = standardize_int(num_classes, "num_classes", minimum=1)
        dtype = _iou_dtype(dtype)
        ignore_class = standardize_int(ignore_class, "ignore_class", minimum=_ANY_INT, allow_none=True)
        sparse_y_true = standardize_bool(sparse_y_true, "sparse_y_true")
        sparse_y_pred = standardize_bool(sparse_y_pred, "sparse_y_pred")
        axis = standardize_int(axis, "axis", minimum=_ANY_INT)
        super().__init__(name=name)
        self._dtype = dtype  # the base takes float dtypes only; Keras counts in int32 here
        self.num_classes = num_classes
        self.ignore_class = ignore_class
        self.sparse_y_true = sparse_y_true
        self.sparse_y_pred = sparse_y_pred
        self.axis = axis
        self.total_cm = self._add_state("total_confusion_matrix", (num_classes, num_classes))

    def _ids(self, values, sparse, argument):
        xp = get_ops().xp
        if not sparse:
            if values.ndim == 0:
                raise ValueError(
                    f"Invalid value for `{argument}` of {type(self).__name__}: with sparse_{argument}=False it needs "
                    f"a class axis to take the argmax of. Received: {argument}.shape=()"
                )
            values = xp.argmax(values, axis=self.axis)
        return values.astype(self.dtype, copy=False).reshape(-1)  # an int dtype truncates, as Keras's cast

    def update_state(self, y_true, y_pred, sample_weight=None):
        ops = get_ops()
        xp = ops.xp
        owner = type(self).__name__
        y_true, y_pred, sample_weight = unwrap(y_true), unwrap(y_pred), unwrap(sample_weight)
        t = self._ids(ops.asarray(y_true), self.sparse_y_true, "y_true")
        p = self._ids(ops.asarray(y_pred), self.sparse_y_pred, "y_pred")
        if t.shape != p.shape:
            raise ValueError(
                f"In {owner}, `y_true` and `y_pred` must hold as many class ids. Received: "
                f"y_true.shape={tuple(np.shape(y_true))}, y_pred.shape={tuple(np.shape(y_pred))}"
            )
        if sample_weight is None:
            w = xp.ones(t.shape, dtype=self.dtype)
        else:
            if "float" in str(getattr(sample_weight, "dtype", "")) and np.dtype(self.dtype).kind in "iu":
                warnings.warn(
                    "You are passing weight as `float`, but dtype is `int`. This may result in an incorrect weight "
                    "due to type casting Consider using integer weights.",
                    stacklevel=2,
                )
            w = ops.asarray(sample_weight, dtype=self.dtype)
            if w.ndim > 1:
                w = w.reshape(-1)
            try:
                w = xp.broadcast_to(w, t.shape)
            except ValueError:
                raise ValueError(
                    f"Invalid value for `sample_weight` of {owner}: it cannot be broadcast to the class ids. Received: "
                    f"sample_weight.shape={tuple(np.shape(sample_weight))}, y_true.shape={tuple(np.shape(y_true))}"
                ) from None
        n = self.num_classes
        keep = (t >= 0) & (t < n) & (p >= 0) & (p < n)  # out-of-range ids never reach the matrix
        if self.ignore_class is not None:
            keep &= t != self.ignore_class
        index = xp.where(keep, t, 0).astype(xp.int64) * n + xp.where(keep, p, 0).astype(xp.int64)
        weights = xp.where(keep, w, 0).astype(xp.float64)
        cm = xp.bincount(index, weights=weights, minlength=n * n).reshape(n, n)
        self._accumulate(self.total_cm, cm)


class IoU(_IoUBase):
    """The mean IoU of the classes ``target_class_ids``.

    Args:
        num_classes: the number of classes (an int >= 1).
        target_class_ids: the class ids to average over (in
            ``[0, num_classes)``).
        name: as :class:`~gpulayers.metrics.Metric`.
        dtype: the confusion matrix's dtype (int32 by default, as Keras).
        ignore_class: None, or a true class id whose entries are left out.
        sparse_y_true, sparse_y_pred: whether the labels / predictions are
            class ids (True) or one-hot / scores to take the argmax of.
        axis: the class axis of non-sparse inputs (default -1).

    Example:
        >>> m = IoU(num_classes=2, target_class_ids=[0])
        >>> m.update_state([0, 0, 1, 1], [0, 1, 0, 1])
        >>> round(m.result(), 4)
        0.3333
    """

    def __init__(self, num_classes, target_class_ids, name=None, dtype=None, ignore_class=None, sparse_y_true=True,
                 sparse_y_pred=True, axis=-1):
        super().__init__(num_classes, name=name, dtype=dtype, ignore_class=ignore_class, sparse_y_true=sparse_y_true,
                         sparse_y_pred=sparse_y_pred, axis=axis)
        self.target_class_ids = _target_ids(target_class_ids, self.num_classes)

    def _device_result(self):
        xp = get_ops().xp
        cm = self.total_cm.value.astype(xp.float64)
        tp = xp.diag(cm)
        union = xp.sum(cm, axis=0) + xp.sum(cm, axis=1) - tp
        ids = xp.asarray(self.target_class_ids, dtype=xp.int64)
        tp, union = tp[ids], union[ids]
        valid = union > 1e-9  # a class never seen nor predicted counts for nothing
        iou = xp.where(valid, tp / (union + config.epsilon()), 0.0)
        return xp.sum(iou) / (xp.sum(valid) + config.epsilon())

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "target_class_ids": self.target_class_ids,
                "ignore_class": self.ignore_class, "sparse_y_true": self.sparse_y_true,
                "sparse_y_pred": self.sparse_y_pred, "axis": self.axis}


class BinaryIoU(IoU):
    """The IoU of binary predictions: ``y_pred >= threshold`` is class 1, the rest class 0.

    Args:
        target_class_ids: the classes to average over, of (0, 1).
        threshold: the cut-off (a float; default 0.5; ``>=`` is class 1).
        name, dtype: as :class:`IoU`.

    Example:
        >>> m = BinaryIoU(target_class_ids=[0, 1], threshold=0.3)
        >>> m.update_state([0, 1, 0, 1], [0.1, 0.2, 0.4, 0.7])
        >>> round(m.result(), 4)
        0.3333
    """

    def __init__(self, target_class_ids=(0, 1), threshold=0.5, name=None, dtype=None):
        super().__init__(num_classes=2, target_class_ids=target_class_ids, name=name, dtype=dtype)
        self.threshold = check_real(threshold, "threshold")

    def update_state(self, y_true, y_pred, sample_weight=None):
        p = get_ops().asarray(unwrap(y_pred), dtype="float32")  # Keras compares in float32
        return super().update_state(y_true, (p >= self.threshold).astype(self.dtype), sample_weight)

    def get_config(self):
        return {"target_class_ids": self.target_class_ids, "threshold": self.threshold, "name": self.name,
                "dtype": self.dtype}


class MeanIoU(IoU):
    """The mean IoU over all ``num_classes`` classes; arguments as :class:`IoU`.

    Example:
        >>> m = MeanIoU(num_classes=2, dtype="float32")
        >>> m.update_state([0, 0, 1, 1], [0, 1, 0, 1], sample_weight=[0.3, 0.3, 0.3, 0.1])
        >>> round(m.result(), 4)
        0.2381
    """

    def __init__(self, num_classes, name=None, dtype=None, ignore_class=None, sparse_y_true=True, sparse_y_pred=True,
                 axis=-1):
        num_classes = standardize_int(num_classes, "num_classes", minimum=1)
        super().__init__(num_classes, list(range(num_classes)), name=name, dtype=dtype, ignore_class=ignore_class,
                         sparse_y_true=sparse_y_true, sparse_y_pred=sparse_y_pred, axis=axis)

    def get_config(self):
        return {"num_classes": self.num_classes, "name": self.name, "dtype": self.dtype,
                "ignore_class": self.ignore_class, "sparse_y_true": self.sparse_y_true,
                "sparse_y_pred": self.sparse_y_pred, "axis": self.axis}


class OneHotIoU(IoU):
    """:class:`IoU` for one-hot labels (and, by default, scores as predictions): both reduced by argmax.

    Args:
        num_classes, target_class_ids, name, dtype, ignore_class, axis: as
            :class:`IoU`.
        sparse_y_pred: whether the predictions are class ids already
            (default False).

    Example:
        >>> m = OneHotIoU(num_classes=3, target_class_ids=[0, 2], dtype="float32")
        >>> m.update_state(np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0], [1, 0, 0]]),
        ...                np.array([[0.2, 0.3, 0.5], [0.1, 0.2, 0.7], [0.5, 0.3, 0.1], [0.1, 0.4, 0.5]]),
        ...                sample_weight=[0.1, 0.2, 0.3, 0.4])
        >>> round(m.result(), 3)
        0.071
    """

    def __init__(self, num_classes, target_class_ids, name=None, dtype=None, ignore_class=None, sparse_y_pred=False,
                 axis=-1):
        super().__init__(num_classes, target_class_ids, name=name, dtype=dtype, ignore_class=ignore_class,
                         sparse_y_true=False, sparse_y_pred=sparse_y_pred, axis=axis)

    def get_config(self):
        return {"num_classes": self.num_classes, "target_class_ids": self.target_class_ids, "name": self.name,
                "dtype": self.dtype, "ignore_class": self.ignore_class, "sparse_y_pred": self.sparse_y_pred,
                "axis": self.axis}


class OneHotMeanIoU(MeanIoU):
    """:class:`MeanIoU` for one-hot labels (and, by default, scores); arguments as :class:`OneHotIoU`.

    Example:
        >>> m = OneHotMeanIoU(num_classes=3, dtype="float32")
        >>> m.update_state(np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0], [1, 0, 0]]),
        ...                np.array([[0.2, 0.3, 0.5], [0.1, 0.2, 0.7], [0.5, 0.3, 0.1], [0.1, 0.4, 0.5]]),
        ...                sample_weight=[0.1, 0.2, 0.3, 0.4])
        >>> round(m.result(), 3)
        0.048
    """

    def __init__(self, num_classes, name=None, dtype=None, ignore_class=None, sparse_y_pred=False, axis=-1):
        super().__init__(num_classes, name=name, dtype=dtype, ignore_class=ignore_class, sparse_y_true=False,
                         sparse_y_pred=sparse_y_pred, axis=axis)

    def get_config(self):
        return {"num_classes": self.num_classes, "name": self.name, "dtype": self.dtype,
                "ignore_class": self.ignore_class, "sparse_y_pred": self.sparse_y_pred, "axis": self.axis}
