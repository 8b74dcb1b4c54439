"""Keras 3's AUC: the area under the ROC or precision-recall curve, by a Riemann sum over thresholds.

The counts (``true_positives``, ``false_positives``, ``true_negatives``,
``false_negatives``, Keras 3.15's variables, of shape ``(num_thresholds,)``
or ``(num_thresholds, num_labels)`` with ``multi_label``) are kept as the
other confusion metrics keep theirs (:mod:`gpulayers.metrics_confusion`):
in float64, the predictions compared in the metric's dtype, evenly spaced
thresholds counted by Keras's buckets. The thresholds are ``-epsilon``, the
inner ones, and ``1 + epsilon``, so predictions of exactly 0 and 1 fall
inside; the curve's points are the rates at each threshold and the areas
between neighbours are summed (``"interpolation"``: the trapezoid, or for
PR Davis & Goadrich's interpolation of the counts; ``"minoring"`` /
``"majoring"``: the lower / higher of the two heights).

Example:
    >>> m = AUC(num_thresholds=3)
    >>> m.update_state([0, 0, 1, 1], [0, 0.5, 0.3, 0.9])
    >>> m.result()
    0.75
"""

import numpy as np

from backends import get_ops
from gpulayers import config
from gpulayers.argument_validation import standardize_bool, standardize_int
from gpulayers.autodiff import unwrap
from gpulayers.metrics import _divide_no_nan
from gpulayers.metrics_confusion import _batch, _ConfusionState, _counts, _evenly_spaced, _parse_thresholds

__all__ = ["AUC"]

_CURVES = {"roc": "ROC", "pr": "PR", "prgain": "PRGAIN"}
_SUMMATIONS = ("interpolation", "majoring", "minoring")


def _label_weights(value):
    """None, or a 1-D list of finite weights >= 0 (Keras's config may hold them as a ``__tensor__``)."""
    if value is None:
        return None
    if isinstance(value, dict) and value.get("class_name") == "__tensor__":
        value = (value.get("config") or {}).get("value")
    raw = unwrap(value)
    try:
        host = np.asarray(raw if isinstance(raw, np.ndarray) or not hasattr(raw, "get") else raw.get(), dtype=np.float64)
    except (TypeError, ValueError):
        host = None
    if host is None or host.ndim != 1 or host.size == 0 or not np.all(np.isfinite(host)) or np.any(host < 0):
        raise ValueError(
            "Invalid value for `label_weights`: expected None or a 1-D list of finite weights >= 0. "
            f"Received: label_weights={value!r}"
        )
    return [float(v) for v in host]


class AUC(_ConfusionState):
    """The area under the ROC curve (default) or the precision-recall curve, by a Riemann sum over thresholds.

    Counts are kept at ``num_thresholds`` thresholds: ``-epsilon``, the
    ``num_thresholds - 2`` evenly spaced inner values (or the given
    ``thresholds``, sorted) and ``1 + epsilon``, so that predictions of
    exactly 0 and 1 fall inside. The curve's points are the rates at each
    threshold; the areas between neighbours are summed.

    Args:
        num_thresholds: an int >= 2 (default 200); ignored when
            ``thresholds`` is given.
        curve: ``"ROC"`` (recall against the false positive rate), ``"PR"``
            (precision against recall) or ``"PRGAIN"`` (precision gain
            against recall gain); lower case accepted.
        summation_method: ``"interpolation"`` (the trapezoid for ROC;
            Davis & Goadrich's interpolation of the counts for PR),
            ``"minoring"`` (the lower of each pair of heights) or
            ``"majoring"`` (the higher).
        name, dtype: as :class:`~gpulayers.metrics.Metric`.
        thresholds: None, or a list of inner thresholds in [0, 1].
        multi_label: True: ``y_pred`` is ``(N, num_labels)``, an AUC per
            label is computed and averaged (weighted by ``label_weights``);
            False: every entry is one data point.
        num_labels: the number of labels with ``multi_label`` (else the
            state is made at the first ``update_state``).
        label_weights: None or a list of weights >= 0, one per label: the
            weights of the label AUCs' average (``multi_label``), or of each
            label's entries in the counts (not ``multi_label``).
        from_logits: whether ``y_pred`` holds logits (a sigmoid is applied).

    Example:
        >>> m = AUC(num_thresholds=3)
        >>> m.update_state([0, 0, 1, 1], [0, 0.5, 0.3, 0.9])
        >>> m.result()
        0.75
    """

    _cells = {"tp": "true_positives", "fp": "false_positives", "tn": "true_negatives", "fn": "false_negatives"}

    def __init__(self, num_thresholds=200, curve="ROC", summation_method="interpolation", name=None, dtype=None,
                 thresholds=None, multi_label=False, num_labels=None, label_weights=None, from_logits=False):
        curve_key = curve.lower() if isinstance(curve, str) else None
        if curve_key not in _CURVES or curve not in (curve_key, _CURVES.get(curve_key)):
            raise ValueError(
                f"Invalid value for `curve`: expected one of ['ROC', 'PR', 'PRGAIN']. Received: curve={curve!r}"
            )
        method = summation_method.lower() if isinstance(summation_method, str) else None
        if method not in _SUMMATIONS or summation_method not in (method, method.capitalize()):
            raise ValueError(
                f"Invalid value for `summation_method`: expected one of {list(_SUMMATIONS)}. "
                f"Received: summation_method={summation_method!r}"
            )
        multi_label = standardize_bool(multi_label, "multi_label")
        from_logits = standardize_bool(from_logits, "from_logits")
        num_labels = standardize_int(num_labels, "num_labels", minimum=1, allow_none=True)
        if num_labels is not None and not multi_label:
            raise ValueError(
                "Invalid value for `num_labels`: it is needed only when `multi_label` is True. "
                f"Received: num_labels={num_labels}, multi_label={multi_label}"
            )
        if thresholds is not None:
            empty = isinstance(thresholds, (list, tuple)) and not thresholds  # Keras allows []: the end points alone
            inner = [] if empty else sorted(_parse_thresholds(thresholds, None))
            num_thresholds = len(inner) + 2
            evenly = _evenly_spaced(np.array([0.0] + inner + [1.0]))
        else:
            num_thresholds = standardize_int(num_thresholds, "num_thresholds", minimum=2)
            inner = [(i + 1) * 1.0 / (num_thresholds - 1) for i in range(num_thresholds - 2)]
            evenly = True
        label_weights = _label_weights(label_weights)
        if label_weights is not None and num_labels is not None and len(label_weights) != num_labels:
            raise ValueError(
                f"Invalid value for `label_weights`: expected {num_labels} weights (num_labels). "
                f"Received: label_weights={label_weights!r}"
            )
        super().__init__(name=name, dtype=dtype)
        self._init_from_thresholds = thresholds is not None
        self.num_thresholds = num_thresholds
        eps = config.epsilon()
        self._thresholds = [0.0 - eps] + inner + [1.0 + eps]
        self._thresholds_distributed_evenly = evenly
        self.curve = _CURVES[curve_key]
        self.summation_method = method
        self.multi_label = multi_label
        self.num_labels = num_labels
        self.label_weights = label_weights
        self._from_logits = from_logits
        self._built = False
        if not multi_label:
            self._build(None)
        elif num_labels:
            self._build((None, num_labels))

    @property
    def thresholds(self):
        """The thresholds the counts are kept at, the end points ``-epsilon`` and ``1 + epsilon`` included."""
        return list(self._thresholds)

    def _build(self, shape):
        if self.multi_label:
            if len(shape) != 2:
                raise ValueError(
                    "`y_pred` must have rank 2 when `multi_label=True`. "
                    f"Found rank {len(shape)}. Full shape received for `y_pred`: {tuple(shape)}"
                )
            self._num_labels = int(shape[1])
            if self.label_weights is not None and len(self.label_weights) != self._num_labels:
                raise ValueError(
                    f"Invalid value for `label_weights`: y_pred has {self._num_labels} labels. "
                    f"Received: label_weights={self.label_weights!r}"
                )
            state_shape = (self.num_thresholds, self._num_labels)
        else:
            state_shape = (self.num_thresholds,)
        self._build_input_shape = shape
        self._make_counts(state_shape)
        self._built = True

    def update_state(self, y_true, y_pred, sample_weight=None):
        shape = tuple(np.shape(unwrap(y_pred)))
        if not self._built:
            self._build(shape)
        elif self.multi_label and (len(shape) != 2 or shape[1] != self._num_labels):
            raise ValueError(
                f"In AUC with multi_label=True, y_pred must have shape (batch, {self._num_labels}) (num_labels). "
                f"Received: y_pred.shape={shape}"
            )
        labels, preds, weights = _batch(self, y_true, y_pred, sample_weight, from_logits=self._from_logits)
        if self.label_weights is not None and not self.multi_label:
            xp = get_ops().xp
            lw = xp.asarray(self.label_weights, dtype=xp.float64)[None]
            try:
                lw = xp.broadcast_to(lw, preds.shape)
            except ValueError:
                raise ValueError(
                    f"Invalid value for `label_weights`: {len(self.label_weights)} weights do not broadcast "
                    f"against y_pred's last axis. Received: y_pred.shape={shape}"
                ) from None
            weights = lw if weights is None else weights * lw
        found = _counts(tuple(self._cells), labels, preds, weights, self._thresholds,
                        self._thresholds_distributed_evenly, self.multi_label)
        for cell, attr in self._cells.items():
            self._accumulate(getattr(self, attr), found[cell])

    def reset_state(self):
        if self._built:
            super().reset_state()

    def _interpolated_pr(self, tp, fp, fn):
        """Davis & Goadrich's PR area: TP and TP + FP vary linearly between thresholds, precision does not;
        each interval's integral in closed form (Keras's ``interpolate_pr_auc``)."""
        xp = get_ops().xp
        dtp = tp[:-1] - tp[1:]
        p = tp + fp
        dp = p[:-1] - p[1:]
        slope = _divide_no_nan(dtp, xp.maximum(dp, 0))
        intercept = tp[1:] - slope * p[1:]
        both = (p[:-1] > 0) & (p[1:] > 0)
        ratio = xp.where(both, _divide_no_nan(p[:-1], xp.maximum(p[1:], 0)), 1.0)
        return _divide_no_nan(slope * (dtp + intercept * xp.log(ratio)), xp.maximum(tp[1:] + fn[1:], 0))

    def _device_result(self):
        xp = get_ops().xp
        if not self._built:
            return xp.asarray(0.0)
        tp, fp, tn, fn = (self._value(a) for a in self._cells.values())
        if self.curve == "PR" and self.summation_method == "interpolation":
            terms = self._interpolated_pr(tp, fp, fn)
        else:
            recall = _divide_no_nan(tp, tp + fn)
            if self.curve == "ROC":
                x, y = _divide_no_nan(fp, fp + tn), recall
            elif self.curve == "PR":
                x, y = recall, _divide_no_nan(tp, tp + fp)
            else:  # PRGAIN; Keras's fixes: no true positive gives recall gain 0 and precision gain 1,
                # a negative recall gain becomes 0
                scale = _divide_no_nan(tp + fn, tn + fp)
                recall_gain = xp.where(tp == 0, 0.0, 1.0 - scale * _divide_no_nan(fn, tp))
                x = xp.maximum(recall_gain, 0.0)
                y = xp.where(tp == 0, 1.0, 1.0 - scale * _divide_no_nan(fp, tp))
            if self.summation_method == "interpolation":
                heights = (y[:-1] + y[1:]) / 2.0
            elif self.summation_method == "minoring":
                heights = xp.minimum(y[:-1], y[1:])
            else:
                heights = xp.maximum(y[:-1], y[1:])
            terms = (x[:-1] - x[1:]) * heights
        if not self.multi_label:
            return xp.sum(terms)
        per_label = xp.sum(terms, axis=0)
        if self.label_weights is None:
            return xp.mean(per_label)
        lw = xp.asarray(self.label_weights, dtype=xp.float64)
        return _divide_no_nan(xp.sum(per_label * lw), xp.sum(lw))

    def get_config(self):
        config_ = {
            **super().get_config(),
            "num_thresholds": self.num_thresholds,
            "curve": self.curve,
            "summation_method": self.summation_method,
            "multi_label": self.multi_label,
            "num_labels": self.num_labels,
            "label_weights": None if self.label_weights is None else list(self.label_weights),
            "from_logits": self._from_logits,
        }
        if self._init_from_thresholds:  # the inner thresholds only, as Keras: the end points are added back
            config_["thresholds"] = self.thresholds[1:-1]
        return config_

