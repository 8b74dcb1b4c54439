"""Keras 3's F-scores: FBetaScore and F1Score, for multi-class and multi-label outputs.

Predictions ``(batch, classes)`` are made 0/1 (above ``threshold``, or the
row's largest entries when ``threshold`` is None) and per-class weighted
counts of true positives, false positives, false negatives and true labels
are kept in Keras 3.15's variables (``true_positives``,
``false_positives``, ``false_negatives``, ``intermediate_weights``, of
shape ``(classes,)``, or ``()`` for ``average="micro"``), made at the first
``update_state``. The score is Keras's formula with its epsilons::

    precision = tp / (tp + fp + eps)
    recall = tp / (tp + fn + eps)
    f = (1 + beta**2) * precision * recall / (beta**2 * precision + recall + eps)

averaged per ``average``: None (one score per class, a list), ``"micro"``
(from the summed counts), ``"macro"`` (the plain mean) or ``"weighted"``
(weighted by each class's share of the true labels).

Example:
    >>> m = F1Score(threshold=0.5)
    >>> m.update_state(np.array([[1, 1, 1], [1, 0, 0], [1, 1, 0]]),
    ...                np.array([[0.2, 0.6, 0.7], [0.2, 0.6, 0.6], [0.6, 0.8, 0.0]]))
    >>> [round(v, 4) for v in m.result()]
    [0.5, 0.8, 0.6667]
"""

import numpy as np

from backends import get_ops
from gpulayers import config
from gpulayers.argument_validation import check_real
from gpulayers.autodiff import unwrap
from gpulayers.metrics import _StateMetric

__all__ = ["F1Score", "FBetaScore"]

_AVERAGES = (None, "micro", "macro", "weighted")


def _check_float(value, argument, maximum):
    """A Python float (NumPy's float64 included) in (0, maximum]: Keras refuses ints here too."""
    if not isinstance(value, float):
        raise ValueError(
            f"Invalid value for `{argument}`: expected a Python float. Received: {argument}={value!r} of type "
            f"{type(value).__name__}"
        )
    return float(check_real(value, argument, minimum=0.0, maximum=maximum, min_open=True))


class FBetaScore(_StateMetric):
    """The F-beta score: the weighted harmonic mean of precision and recall, recall weighted ``beta`` times.

    Args:
        average: None (per-class scores, a list), ``"micro"``, ``"macro"``
            or ``"weighted"``.
        beta: a float > 0 (default 1.0; an int is refused, as in Keras).
        threshold: None (each row's largest prediction is positive, unless it
            is within 1e-9 of 0), or a float in (0, 1] (not an int):
            predictions above it are positive.
        name, dtype: as :class:`~gpulayers.metrics.Metric`.

    Example:
        >>> m = FBetaScore(beta=2.0, threshold=0.5)
        >>> m.update_state(np.array([[1, 1, 1], [1, 0, 0], [1, 1, 0]]),
        ...                np.array([[0.2, 0.6, 0.7], [0.2, 0.6, 0.6], [0.6, 0.8, 0.0]]))
        >>> [round(v, 4) for v in m.result()]
        [0.3846, 0.9091, 0.8333]
    """

    def __init__(self, average=None, beta=1.0, threshold=None, name="fbeta_score", dtype=None):
        if not any(average is a or (isinstance(average, str) and average == a) for a in _AVERAGES):
            raise ValueError(
                "Invalid value for `average`: expected one of {None, 'micro', 'macro', 'weighted'}. "
                f"Received: average={average!r}"
            )
        beta = _check_float(beta, "beta", maximum=None)
        if threshold is not None:
            threshold = _check_float(threshold, "threshold", maximum=1.0)
        super().__init__(name=name, dtype=dtype)
        self.average = average
        self.beta = beta
        self.threshold = threshold
        self.axis = None if average == "micro" else 0
        self._built = False

    def _build(self, y_true_shape, y_pred_shape):
        if len(y_pred_shape) != 2 or len(y_true_shape) != 2:
            raise ValueError(
                f"{type(self).__name__} expects 2D inputs with shape (batch_size, output_dim). Received input "
                f"shapes: y_pred.shape={tuple(y_pred_shape)} and y_true.shape={tuple(y_true_shape)}."
            )
        if y_pred_shape[-1] is None or y_true_shape[-1] is None:
            raise ValueError(
                f"{type(self).__name__} expects 2D inputs with shape (batch_size, output_dim), with output_dim "
                f"fully defined (not None). Received input shapes: y_pred.shape={tuple(y_pred_shape)} and "
                f"y_true.shape={tuple(y_true_shape)}."
            )
        self._num_classes = int(y_pred_shape[-1])
        shape = () if self.average == "micro" else (self._num_classes,)
        self.true_positives = self._add_state("true_positives", shape)
        self.false_positives = self._add_state("false_positives", shape)
        self.false_negatives = self._add_state("false_negatives", shape)
        self.intermediate_weights = self._add_state("intermediate_weights", shape)
        self._built = True

    def update_state(self, y_true, y_pred, sample_weight=None):
        ops = get_ops()
        xp = ops.xp
        owner = type(self).__name__
        y_true, y_pred, sample_weight = unwrap(y_true), unwrap(y_pred), unwrap(sample_weight)
        t = ops.asarray(y_true, dtype=self.dtype)
        p = ops.asarray(y_pred, dtype=self.dtype)
        if tuple(t.shape) != tuple(p.shape) or (self._built and (p.ndim != 2 or p.shape[-1] != self._num_classes)):
            classes = self._num_classes if self._built else "output_dim"
            raise ValueError(
                f"In {owner}, `y_true` and `y_pred` must both have shape (batch_size, {classes}). "
                f"Received: y_true.shape={tuple(t.shape)}, y_pred.shape={tuple(p.shape)}"
            )
        if not self._built:
            self._build(t.shape, p.shape)
        sw = None
        if sample_weight is not None:
            sw = ops.asarray(sample_weight, dtype="float64")
            if sw.ndim == 2 and sw.shape[-1] == 1:
                sw = sw.reshape(-1)
            try:
                sw = xp.broadcast_to(sw, p.shape[:1])[:, None]  # one weight per sample (Keras's expand_dims)
            except ValueError:
                raise ValueError(
                    f"Invalid value for `sample_weight` of {owner}: expected one weight per sample. Received: "
                    f"sample_weight.shape={tuple(np.shape(sample_weight))}, y_pred.shape={tuple(p.shape)}"
                ) from None
        if self.threshold is None:  # the row's maximum is positive (ties too), unless it is ~0
            pred = (p >= xp.max(p, axis=-1, keepdims=True)) & (xp.abs(p) > 1e-9)
        else:
            pred = p > self.threshold
        pred = pred.astype(xp.float64)
        true = t.astype(xp.float64)

        def weighted_sum(values):
            return xp.sum(values if sw is None else values * sw, axis=self.axis)

        self._accumulate(self.true_positives, weighted_sum(pred * true))
        self._accumulate(self.false_positives, weighted_sum(pred * (1.0 - true)))
        self._accumulate(self.false_negatives, weighted_sum((1.0 - pred) * true))
        self._accumulate(self.intermediate_weights, weighted_sum(true))

    def reset_state(self):
        if self._built:
            super().reset_state()

    def _device_result(self):
        xp = get_ops().xp
        if not self._built:  # nothing seen yet: no classes to score
            return xp.zeros((0,)) if self.average is None else xp.asarray(0.0)
        eps = config.epsilon()
        tp, fp, fn = self.true_positives.value, self.false_positives.value, self.false_negatives.value
        precision = tp / (tp + fp + eps)
        recall = tp / (tp + fn + eps)
        b2 = self.beta ** 2
        score = precision * recall / (b2 * precision + recall + eps) * (1 + b2)
        if self.average == "weighted":
            support = self.intermediate_weights.value
            return xp.sum(score * support / (xp.sum(support) + eps))
        if self.average is not None:
            return xp.mean(score)
        return score

    def get_config(self):
        return {**super().get_config(), "average": self.average, "beta": self.beta, "threshold": self.threshold}


class F1Score(FBetaScore):
    """The F1 score, ``2 * precision * recall / (precision + recall)``: :class:`FBetaScore` with ``beta=1``.

    Args:
        average, threshold, name, dtype: as :class:`FBetaScore`.

    Example:
        >>> m = F1Score(average="micro", threshold=0.5)
        >>> m.update_state(np.array([[1, 0], [0, 1]]), np.array([[0.8, 0.3], [0.6, 0.9]]))
        >>> round(m.result(), 4)
        0.8
    """

    def __init__(self, average=None, threshold=None, name="f1_score", dtype=None):
        super().__init__(average=average, beta=1.0, threshold=threshold, name=name, dtype=dtype)

    def get_config(self):
        config_ = super().get_config()
        del config_["beta"]
        return config_
