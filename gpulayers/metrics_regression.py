"""Keras 3.15's R2Score: the coefficient of determination, optionally adjusted for the regressors.

Per output column ``j`` (inputs ``(batch, outputs)``, weights per sample or
per entry), accumulated over the batches seen::

    mean = sum(w * y) / sum(w)
    total = sum(w * y**2) - sum(w * y) * mean        (the weighted sum of squares)
    r2_j = 1 - sum(w * (y - y_pred)**2) / total       (0 where that is infinite)

aggregated per ``class_aggregation``: ``"uniform_average"`` (the mean),
``"variance_weighted_average"`` (weighted by ``total``) or None (one score
per column, a list). With ``num_regressors = p > 0`` the adjusted score
``1 - (1 - r2) * (n - 1) / (n - p - 1)`` is given, ``n`` the number of
entries seen (Keras's count of ``y_true``'s elements), falling back with a
warning to r2 where ``p >= n - 1``.

Example:
    >>> m = R2Score()
    >>> m.update_state(np.array([[1.0], [4.0], [3.0]]), np.array([[2.0], [4.0], [4.0]]))
    >>> round(m.result(), 6)
    0.571429
"""

import numbers
import warnings

import numpy as np

from backends import get_ops
from gpulayers.autodiff import unwrap
from gpulayers.losses import squeeze_or_expand_to_same_rank
from gpulayers.metrics import _StateMetric

__all__ = ["R2Score"]

_AGGREGATIONS = (None, "uniform_average", "variance_weighted_average")


class R2Score(_StateMetric):
    """The R2 score (coefficient of determination) of 2D regression outputs (module docstring).

    Args:
        class_aggregation: None, ``"uniform_average"`` (default) or
            ``"variance_weighted_average"``.
        num_regressors: the number of independent regressors, an int >= 0
            (0, the default: the plain R2 score).
        name, dtype: as :class:`~gpulayers.metrics.Metric`.

    Its variables are Keras's: ``num_samples`` at construction, then
    ``squared_sum``, ``sum``, ``residual`` and ``count`` (one entry per
    output) at the first update.
    """

    def __init__(self, class_aggregation="uniform_average", num_regressors=0, name="r2_score", dtype=None):
        if not any(class_aggregation is a or (isinstance(class_aggregation, str) and class_aggregation == a)
                   for a in _AGGREGATIONS):
            raise ValueError(
                f"Invalid value for `class_aggregation`: expected one of {_AGGREGATIONS}. "
                f"Received: class_aggregation={class_aggregation!r}"
            )
        if isinstance(num_regressors, (bool, np.bool_)) or not isinstance(num_regressors, numbers.Real) \
                or not num_regressors >= 0:
            raise ValueError(
                f"Invalid value for `num_regressors`: expected a number >= 0. Received: num_regressors={num_regressors!r}"
            )
        super().__init__(name=name, dtype=dtype)
        self.class_aggregation = class_aggregation
        self.num_regressors = num_regressors
        self.num_samples = self._add_state("num_samples", ())
        self._built = False

    def _build(self, y_true_shape, y_pred_shape):
        if len(y_pred_shape) != 2 or len(y_true_shape) != 2:
            raise ValueError(
                "R2Score expects 2D inputs with shape (batch_size, output_dim). Received input shapes: "
                f"y_pred.shape={tuple(y_pred_shape)} and y_true.shape={tuple(y_true_shape)}."
            )
        if y_pred_shape[-1] is None or y_true_shape[-1] is None:
            raise ValueError(
                "R2Score expects 2D inputs with shape (batch_size, output_dim), with output_dim fully defined "
                f"(not None). Received input shapes: y_pred.shape={tuple(y_pred_shape)} and "
                f"y_true.shape={tuple(y_true_shape)}."
            )
        outputs = (int(y_pred_shape[-1]),)
        self.squared_sum = self._add_state("squared_sum", outputs)
        self.sum = self._add_state("sum", outputs)
        self.total_mse = self._add_state("residual", outputs)
        self.count = self._add_state("count", outputs)
        self._built = True

    def update_state(self, y_true, y_pred, sample_weight=None):
        ops = get_ops()
        xp = ops.xp
        t = ops.asarray(unwrap(y_true)).astype(xp.float64)
        p = ops.asarray(unwrap(y_pred)).astype(xp.float64)
        t, p = squeeze_or_expand_to_same_rank(t, p)
        if not self._built:
            self._build(t.shape, p.shape)
        if tuple(t.shape) != tuple(p.shape) or p.ndim != 2 or p.shape[-1] != self.sum.shape[0]:
            raise ValueError(
                f"In R2Score, `y_true` and `y_pred` must both have shape (batch_size, {self.sum.shape[0]}). "
                f"Received: y_true.shape={tuple(t.shape)}, y_pred.shape={tuple(p.shape)}"
            )
        sw = xp.ones((), dtype=xp.float64) if sample_weight is None else ops.asarray(unwrap(sample_weight))
        sw = sw.astype(xp.float64)
        if sw.ndim == 1:
            sw = sw[:, None]  # one weight per sample, across the outputs
        try:
            sw = xp.broadcast_to(sw, t.shape)
        except ValueError:
            raise ValueError(
                "Invalid value for `sample_weight` of R2Score: it cannot be broadcast to y_true's shape. "
                f"Received: sample_weight.shape={tuple(np.shape(unwrap(sample_weight)))}, y_true.shape={tuple(t.shape)}"
            ) from None
        weighted = t * sw
        self._accumulate(self.sum, xp.sum(weighted, axis=0))
        self._accumulate(self.squared_sum, xp.sum(t * weighted, axis=0))
        self._accumulate(self.total_mse, xp.sum((t - p) ** 2 * sw, axis=0))
        self._accumulate(self.count, xp.sum(sw, axis=0))
        self._accumulate(self.num_samples, xp.asarray(float(t.size)))

    def _device_result(self):
        xp = get_ops().xp
        if not self._built:  # nothing seen yet: no outputs to score
            return xp.zeros((0,)) if self.class_aggregation is None else xp.asarray(0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = self.sum.value / self.count.value
            total = self.squared_sum.value - self.sum.value * mean
            raw = 1 - self.total_mse.value / total
            raw = xp.where(xp.isinf(raw), 0.0, raw)
            if self.class_aggregation == "uniform_average":
                score = xp.mean(raw)
            elif self.class_aggregation == "variance_weighted_average":
                score = xp.sum(total * raw) / xp.sum(total)
            else:
                score = raw
        if self.num_regressors:
            n = float(self.num_samples.value)  # Keras compares on the host too
            if self.num_regressors > n - 1:
                warnings.warn("More independent predictors than datapoints in adjusted R2 score. "
                              "Falling back to standard R2 score.", stacklevel=3)
            elif self.num_regressors == n - 1:
                warnings.warn("Division by zero in Adjusted R2 score. Falling back to standard R2 score.",
                              stacklevel=3)
            else:
                score = 1.0 - (1.0 - score) * (n - 1.0) / (n - self.num_regressors - 1.0)
        return score

    def get_config(self):
        return {**super().get_config(), "class_aggregation": self.class_aggregation,
                "num_regressors": self.num_regressors}
