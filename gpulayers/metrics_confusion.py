"""Keras 3's confusion-matrix metrics: thresholded counts, precision and recall, and the best of one
rate where another reaches a given value; the counting they share with AUC (:mod:`gpulayers.metrics_auc`).

Every metric here compares ``y_pred`` with thresholds (``y_pred > t`` is a
positive prediction, a nonzero ``y_true`` a positive label) and keeps
weighted counts per threshold in Keras 3.15's variables (same names,
shapes and order, e.g. ``true_positives`` and ``false_positives`` of shape
``(num_thresholds,)`` for Precision); the counts accumulate in float64, the
comparisons run in the metric's dtype as Keras's do. As in Keras:

* ``sample_weight`` has the rank of ``y_true`` or one less (one weight per
  sample) and broadcasts to it;
* ``top_k`` keeps the k largest predictions of the last axis (the lower
  index first among ties) and sets the others below every threshold;
  ``class_id`` then looks only at that column;
* evenly spaced thresholds (AUC's and the ``*At*`` metrics' defaults, or
  such a list) are counted by bucketing each prediction once
  (``ceil(y_pred * (n - 1)) - 1``, after clipping to [0, 1]), Keras's fast
  path, whose counts at a bucket edge are the ones Keras gets.

Results are Python floats (a list of floats for several thresholds); the
fit loop takes them on the device (:func:`gpulayers.metrics.device_result`).

Example:
    >>> m = Precision(thresholds=[0.4, 0.8])
    >>> m.update_state([0, 1, 1, 1], [0.5, 0.9, 0.6, 0.2])
    >>> [round(v, 4) for v in m.result()]
    [0.6667, 1.0]
"""

import numpy as np

from backends import get_ops
from gpulayers import config
from gpulayers.argument_validation import check_real, is_real, standardize_int
from gpulayers.autodiff import unwrap
from gpulayers.losses import squeeze_or_expand_to_same_rank
from gpulayers.metrics import _StateMetric, _divide_no_nan

__all__ = [
    "FalseNegatives",
    "FalsePositives",
    "Precision",
    "PrecisionAtRecall",
    "Recall",
    "RecallAtPrecision",
    "SensitivityAtSpecificity",
    "SpecificityAtSensitivity",
    "TrueNegatives",
    "TruePositives",
]

NEG_INF = -1e10  # Keras's threshold with top_k: the predictions kept are above it, the others at it


# ---------------------------------------------------------------------------
# Thresholds and counting
# ---------------------------------------------------------------------------
def _parse_thresholds(thresholds, default):
    """Keras's ``parse_init_thresholds``: None gives ``[default]``; a float or a list of floats in [0, 1]."""
    if thresholds is None:
        return [default]
    if isinstance(thresholds, np.ndarray):
        values = thresholds.reshape(-1).tolist()
    else:
        values = list(thresholds) if isinstance(thresholds, (list, tuple)) else [thresholds]
    if not values or not all(is_real(t) and 0.0 <= float(t) <= 1.0 for t in values):
        raise ValueError(
            "Invalid value for `thresholds`: threshold values must be in [0, 1]. "
            f"Received: thresholds={thresholds!r}"
        )
    return [float(t) for t in values]


def _evenly_spaced(thresholds):
    """Keras's ``is_evenly_distributed_thresholds``: at least 3 values, ``i / (n - 1)`` within 1e-7."""
    n = len(thresholds)
    if n < 3:
        return False
    return bool(np.allclose(thresholds, np.arange(n, dtype=np.float32) / (n - 1), atol=config.epsilon()))


def _check_class_id(class_id):
    return standardize_int(class_id, "class_id", minimum=0, allow_none=True)


def _sigmoid(xp, x):
    e = xp.exp(-xp.abs(x))  # never overflows
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def _keep_top_k(xp, p, k, owner):
    """Keras's ``_filter_top_k``: the k largest entries of the last axis kept, the others set to NEG_INF."""
    if p.ndim < 1 or k > p.shape[-1]:
        raise ValueError(
            f"Invalid value for `top_k` of {owner}: y_pred has {p.shape[-1] if p.ndim else 0} entries on its last "
            f"axis. Received: top_k={k}, y_pred.shape={tuple(p.shape)}"
        )
    order = xp.argsort(-p, axis=-1, kind="stable")  # descending, the lower index first among ties
    rank = xp.argsort(order, axis=-1, kind="stable")  # each entry's place in that order
    return xp.where(rank < k, p, p.dtype.type(NEG_INF))


def _batch(metric, y_true, y_pred, sample_weight, top_k=None, class_id=None, from_logits=False):
    """Labels (bool), predictions (in the metric's dtype) and weights (float64 or None) of one batch, with
    Keras's ranks, top_k and class_id applied; the weights broadcast to the predictions."""
    ops = get_ops()
    xp = ops.xp
    owner = type(metric).__name__
    y_true, y_pred, sample_weight = unwrap(y_true), unwrap(y_pred), unwrap(sample_weight)
    p = ops.asarray(y_pred, dtype=metric.dtype)
    t = ops.asarray(y_true, dtype=metric.dtype)
    if from_logits:
        p = _sigmoid(xp, p)
    p, t = squeeze_or_expand_to_same_rank(p, t)
    if tuple(p.shape) != tuple(t.shape):
        raise ValueError(
            f"In {owner}, `y_true` and `y_pred` must have the same shape. "
            f"Received: y_true.shape={tuple(np.shape(y_true))}, y_pred.shape={tuple(np.shape(y_pred))}"
        )
    w = None
    if sample_weight is not None:
        w = ops.asarray(sample_weight, dtype="float64")
        w = w.reshape(tuple(w.shape) + (1,))  # one weight per sample (or per entry) against y_true's rank
        _, w = squeeze_or_expand_to_same_rank(t, w, expand_rank_1=False)
    if top_k is not None:
        p = _keep_top_k(xp, p, top_k, owner)
    if class_id is not None:
        if p.ndim < 2 or class_id >= p.shape[-1]:
            raise ValueError(
                f"Invalid value for `class_id` of {owner}: y_pred must have shape (num_samples, num_classes) with "
                f"class_id < num_classes. Received: class_id={class_id}, y_pred.shape={tuple(np.shape(y_pred))}"
            )
        p, t = p[..., class_id, None], t[..., class_id, None]
    if w is not None:
        try:
            w = xp.broadcast_to(w, p.shape)
        except ValueError:
            raise ValueError(
                f"Invalid value for `sample_weight` of {owner}: it cannot be broadcast to y_true. Received: "
                f"sample_weight.shape={tuple(np.shape(sample_weight))}, y_true.shape={tuple(np.shape(y_true))}"
            ) from None
    return t != 0, p, w


def _counts(cells, labels, preds, weights, thresholds, evenly, multi_label=False):
    """The weighted counts ``{cell: array}`` of this batch at each threshold, for the cells asked
    ("tp", "fp", "tn", "fn"): shape ``(thresholds,)``, or ``(thresholds, labels)`` with ``multi_label``."""
    xp = get_ops().xp
    if not multi_label:
        labels, preds = labels.reshape(-1), preds.reshape(-1)
        weights = None if weights is None else weights.reshape(-1)
    pos = labels.astype(xp.float64)
    neg = 1.0 - pos
    if weights is not None:
        pos, neg = pos * weights, neg * weights
    n = len(thresholds)
    out = {}
    if evenly:  # Keras's bucket path: one pass over the predictions, then a reverse cumulative sum
        p = xp.clip(preds, 0, 1)
        bucket = xp.ceil(p * p.dtype.type(n - 1)) - 1
        if thresholds[0] < 0 or thresholds[-1] > 1:  # AUC's end points -eps and 1 + eps: bucket -1 is above -eps
            bucket = xp.maximum(bucket, 0)
        valid = (bucket >= 0) & (bucket < n)  # Keras's segment sum drops bucket -1 (y_pred <= the first threshold)
        index = xp.where(valid, bucket, 0).astype(xp.int64)
        size = n
        if multi_label:
            size = n * preds.shape[-1]
            index = index + n * xp.arange(preds.shape[-1], dtype=xp.int64)
        index = index.reshape(-1)

        def above(values):
            hist = xp.bincount(index, weights=xp.where(valid, values, 0.0).reshape(-1), minlength=size)
            hist = hist.reshape(-1, n).T if multi_label else hist
            return xp.cumsum(hist[::-1], axis=0)[::-1]

        tp, fp = above(pos), above(neg)
        found = {"tp": tp, "fp": fp}
        if "fn" in cells:
            found["fn"] = xp.sum(pos, axis=0) - tp
        if "tn" in cells:
            found["tn"] = xp.sum(neg, axis=0) - fp
        return {c: found[c] for c in cells}
    th = xp.asarray(thresholds, dtype=preds.dtype)
    th = th.reshape((n,) + (1,) * preds.ndim)
    pred_pos = preds[None] > th  # (thresholds, values...)
    label_pos = labels[None]
    w = None if weights is None else weights[None]
    for c in cells:
        hits = {"tp": label_pos & pred_pos, "fp": ~label_pos & pred_pos,
                "fn": label_pos & ~pred_pos, "tn": ~label_pos & ~pred_pos}[c]
        hits = hits.astype(xp.float64) if w is None else xp.where(hits, w, 0.0)
        out[c] = xp.sum(hits, axis=1)
    return out


class _ConfusionState(_StateMetric):
    """A metric counting some of tp/fp/tn/fn at ``self.thresholds`` in Keras's variables."""

    _cells = {}  # cell -> variable attribute, in Keras's variable order

    def _make_counts(self, shape):
        for attr in self._cells.values():
            setattr(self, attr, self._add_state(attr, shape))

    def _update(self, y_true, y_pred, sample_weight, top_k=None, class_id=None):
        labels, preds, weights = _batch(self, y_true, y_pred, sample_weight, top_k, class_id)
        found = _counts(tuple(self._cells), labels, preds, weights, self.thresholds, self._thresholds_distributed_evenly)
        for cell, attr in self._cells.items():
            self._accumulate(getattr(self, attr), found[cell])

    def _value(self, attr):
        return getattr(self, attr).value


# ---------------------------------------------------------------------------
# Counts, precision and recall
# ---------------------------------------------------------------------------
class _ConditionCount(_ConfusionState):
    """The weighted count of one cell of the confusion matrix per threshold, in ``accumulator``."""

    def __init__(self, thresholds=None, name=None, dtype=None):
        parsed = _parse_thresholds(thresholds, 0.5)
        super().__init__(name=name, dtype=dtype)
        self.init_thresholds = thresholds
        self.thresholds = parsed
        self._thresholds_distributed_evenly = _evenly_spaced(self.thresholds)
        self._make_counts((len(self.thresholds),))

    def update_state(self, y_true, y_pred, sample_weight=None):
        self._update(y_true, y_pred, sample_weight)

    def _device_result(self):
        value = self.accumulator.value
        return value[0] if len(self.thresholds) == 1 else value

    def get_config(self):
        return {**super().get_config(), "thresholds": self.init_thresholds}


class TruePositives(_ConditionCount):
    """The (weighted) number of true positives: nonzero labels predicted above the threshold.

    Args:
        thresholds: None (0.5), a float or a list of floats in [0, 1]; with
            several, ``result()`` is a list (one count per threshold).
        name, dtype: as :class:`~gpulayers.metrics.Metric`.

    Example:
        >>> m = TruePositives()
        >>> m.update_state([0, 1, 1, 1], [1, 0, 1, 1])
        >>> m.result()
        2.0
    """

    _cells = {"tp": "accumulator"}


class FalsePositives(_ConditionCount):
    """The (weighted) number of false positives; arguments as :class:`TruePositives`.

    Example:
        >>> m = FalsePositives()
        >>> m.update_state([0, 1, 0, 0], [0, 0, 1, 1])
        >>> m.result()
        2.0
    """

    _cells = {"fp": "accumulator"}


class TrueNegatives(_ConditionCount):
    """The (weighted) number of true negatives; arguments as :class:`TruePositives`.

    Example:
        >>> m = TrueNegatives()
        >>> m.update_state([0, 1, 0, 0], [1, 1, 0, 0])
        >>> m.result()
        2.0
    """

    _cells = {"tn": "accumulator"}


class FalseNegatives(_ConditionCount):
    """The (weighted) number of false negatives; arguments as :class:`TruePositives`.

    Example:
        >>> m = FalseNegatives()
        >>> m.update_state([0, 1, 1, 1], [0, 1, 0, 0])
        >>> m.result()
        2.0
    """

    _cells = {"fn": "accumulator"}


class _PrecisionRecall(_ConfusionState):
    def __init__(self, thresholds=None, top_k=None, class_id=None, name=None, dtype=None):
        top_k = standardize_int(top_k, "top_k", minimum=1, allow_none=True)
        class_id = _check_class_id(class_id)
        parsed = _parse_thresholds(thresholds, 0.5 if top_k is None else NEG_INF)
        super().__init__(name=name, dtype=dtype)
        self.init_thresholds = thresholds
        self.top_k = top_k
        self.class_id = class_id
        self.thresholds = parsed
        self._thresholds_distributed_evenly = _evenly_spaced(self.thresholds)
        self._make_counts((len(self.thresholds),))

    def update_state(self, y_true, y_pred, sample_weight=None):
        self._update(y_true, y_pred, sample_weight, self.top_k, self.class_id)

    def _ratio(self, other):
        tp = self.true_positives.value
        value = _divide_no_nan(tp, tp + self._value(other))
        return value[0] if len(self.thresholds) == 1 else value

    def get_config(self):
        return {**super().get_config(), "thresholds": self.init_thresholds,
                "top_k": self.top_k, "class_id": self.class_id}


class Precision(_PrecisionRecall):
    """``tp / (tp + fp)``: how many of the positive predictions are right.

    A prediction above the threshold is positive, a nonzero label true.

    Args:
        thresholds: None (0.5; with ``top_k``, every prediction kept), a
            float or a list of floats in [0, 1]; with several, ``result()``
            is a list (one precision per threshold).
        top_k: None, or an int >= 1: only the k largest predictions of each
            row (last axis) count as positive.
        class_id: None, or the column of a ``(N, num_classes)`` output to
            look at.
        name, dtype: as :class:`~gpulayers.metrics.Metric`.

    Example:
        >>> m = Precision()
        >>> m.update_state([0, 1, 1, 1], [1, 0, 1, 1])
        >>> round(m.result(), 4)
        0.6667
    """

    _cells = {"tp": "true_positives", "fp": "false_positives"}

    def _device_result(self):
        return self._ratio("false_positives")


class Recall(_PrecisionRecall):
    """``tp / (tp + fn)``: how many of the true labels are predicted; arguments as :class:`Precision`.

    Example:
        >>> m = Recall()
        >>> m.update_state([0, 1, 1, 1], [1, 0, 1, 1])
        >>> round(m.result(), 4)
        0.6667
    """

    _cells = {"tp": "true_positives", "fn": "false_negatives"}

    def _device_result(self):
        return self._ratio("false_negatives")


# ---------------------------------------------------------------------------
# One rate where another reaches a given value
# ---------------------------------------------------------------------------
class _AtConstraint(_ConfusionState):
    """Counts at ``num_thresholds`` evenly spaced thresholds in [0, 1] (0.5 alone for 1); the result is
    the largest of one rate over the thresholds where another is >= ``value`` (0 where none is)."""

    _cells = {"tp": "true_positives", "fp": "false_positives", "tn": "true_negatives", "fn": "false_negatives"}
    _value_name = None  # the argument `value` comes from: "recall", "precision"...

    def __init__(self, value, num_thresholds=200, class_id=None, name=None, dtype=None):
        value = check_real(value, self._value_name, minimum=0.0, maximum=1.0)
        num_thresholds = standardize_int(num_thresholds, "num_thresholds", minimum=1)
        class_id = _check_class_id(class_id)
        super().__init__(name=name, dtype=dtype)
        setattr(self, self._value_name, value)
        self.value = value
        self.num_thresholds = num_thresholds
        self.class_id = class_id
        if num_thresholds == 1:
            self.thresholds, self._thresholds_distributed_evenly = [0.5], False
        else:
            inner = [(i + 1) * 1.0 / (num_thresholds - 1) for i in range(num_thresholds - 2)]
            self.thresholds, self._thresholds_distributed_evenly = [0.0] + inner + [1.0], True
        self._make_counts((len(self.thresholds),))

    def update_state(self, y_true, y_pred, sample_weight=None):
        self._update(y_true, y_pred, sample_weight, class_id=self.class_id)

    def _rates(self):
        tp, fp, tn, fn = (self._value(a) for a in self._cells.values())
        return {"recall": _divide_no_nan(tp, tp + fn), "precision": _divide_no_nan(tp, tp + fp),
                "specificity": _divide_no_nan(tn, tn + fp)}

    def _best(self, constrained, dependent):
        xp = get_ops().xp
        rates = self._rates()
        feasible = rates[constrained] >= self.value
        return xp.max(xp.where(feasible, rates[dependent], 0.0))  # rates are >= 0: 0 where none is feasible

    def get_config(self):
        return {**super().get_config(), "class_id": self.class_id, "num_thresholds": self.num_thresholds,
                self._value_name: getattr(self, self._value_name)}


class SensitivityAtSpecificity(_AtConstraint):
    """The best sensitivity (recall, ``tp / (tp + fn)``) where specificity (``tn / (tn + fp)``) is >= a value.

    Args:
        specificity: in [0, 1].
        num_thresholds: the number of evenly spaced thresholds in [0, 1]
            tried (an int >= 1, default 200).
        class_id: None, or the column of a ``(N, num_classes)`` output.
        name, dtype: as :class:`~gpulayers.metrics.Metric`.

    Example:
        >>> m = SensitivityAtSpecificity(0.5)
        >>> m.update_state([0, 0, 0, 1, 1], [0, 0.3, 0.8, 0.3, 0.8])
        >>> m.result()
        0.5
    """

    _value_name = "specificity"

    def __init__(self, specificity, num_thresholds=200, class_id=None, name=None, dtype=None):
        super().__init__(specificity, num_thresholds=num_thresholds, class_id=class_id, name=name, dtype=dtype)

    def _device_result(self):
        return self._best("specificity", "recall")


class SpecificityAtSensitivity(_AtConstraint):
    """The best specificity where sensitivity (recall) is >= ``sensitivity``; arguments as
    :class:`SensitivityAtSpecificity`.

    Example:
        >>> m = SpecificityAtSensitivity(0.5)
        >>> m.update_state([0, 0, 0, 1, 1], [0, 0.3, 0.8, 0.3, 0.8])
        >>> round(m.result(), 4)
        0.6667
    """

    _value_name = "sensitivity"

    def __init__(self, sensitivity, num_thresholds=200, class_id=None, name=None, dtype=None):
        super().__init__(sensitivity, num_thresholds=num_thresholds, class_id=class_id, name=name, dtype=dtype)

    def _device_result(self):
        return self._best("recall", "specificity")


class PrecisionAtRecall(_AtConstraint):
    """The best precision where recall is >= ``recall``; arguments as :class:`SensitivityAtSpecificity`.

    Example:
        >>> m = PrecisionAtRecall(0.5)
        >>> m.update_state([0, 0, 0, 1, 1], [0, 0.3, 0.8, 0.3, 0.8])
        >>> m.result()
        0.5
    """

    _value_name = "recall"

    def __init__(self, recall, num_thresholds=200, class_id=None, name=None, dtype=None):
        super().__init__(recall, num_thresholds=num_thresholds, class_id=class_id, name=name, dtype=dtype)

    def _device_result(self):
        return self._best("recall", "precision")


class RecallAtPrecision(_AtConstraint):
    """The best recall where precision is >= ``precision`` (0 where no threshold reaches it); arguments as
    :class:`SensitivityAtSpecificity`.

    Example:
        >>> m = RecallAtPrecision(0.8)
        >>> m.update_state([0, 0, 1, 1], [0, 0.5, 0.3, 0.9])
        >>> m.result()
        0.5
    """

    _value_name = "precision"

    def __init__(self, precision, num_thresholds=200, class_id=None, name=None, dtype=None):
        super().__init__(precision, num_thresholds=num_thresholds, class_id=class_id, name=name, dtype=dtype)

    def _device_result(self):
        return self._best("precision", "recall")
