"""The metrics that average a loss function over the samples seen, as Keras 3.15's: the regression errors
(MSE, MAE, MAPE, MSLE, RMSE, log-cosh), the cross-entropies, the hinge family, KL divergence, Poisson and
cosine similarity.

Each is a :class:`~gpulayers.metrics.MeanMetricWrapper` of the loss function of
the same formula (``gpulayers.losses``) with Keras's default name and config;
RootMeanSquaredError averages the squared errors and takes the root of the
mean, and CosineSimilarity reports the similarity itself (1 for the same
direction), where the loss of that name is its negative.
"""

from backends import array_namespace
from gpulayers import losses, ops
from gpulayers.argument_validation import check_real, standardize_bool
from gpulayers.autodiff import no_backward, unwrap
from gpulayers.metrics import Mean, MeanMetricWrapper

__all__ = [
    "BinaryCrossentropy", "CategoricalCrossentropy", "CategoricalHinge", "CosineSimilarity", "Hinge", "KLDivergence",
    "LogCoshError", "MeanAbsoluteError", "MeanAbsolutePercentageError", "MeanSquaredError",
    "MeanSquaredLogarithmicError", "Poisson", "RootMeanSquaredError", "SparseCategoricalCrossentropy", "SquaredHinge",
    "cosine_similarity",
]


def cosine_similarity(y_true, y_pred, axis=-1):
    """``sum(l2_normalize(y_true) * l2_normalize(y_pred), axis)``: Keras's metric function (the loss's negative)."""
    return -losses.cosine_similarity(y_true, y_pred, axis=axis)


class _LossMetric(MeanMetricWrapper):
    """A MeanMetricWrapper of ``fn`` whose config is its name and dtype (and the arguments in ``_keys``)."""

    fn = None
    _keys = ()

    def __init__(self, name, dtype=None, **kwargs):
        super().__init__(type(self).fn, name=name, dtype=dtype, **kwargs)
        for key, value in kwargs.items():
            setattr(self, key, value)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, **{key: getattr(self, key) for key in self._keys}}


def _metric(class_name, fn, default_name, doc):
    def __init__(self, name=default_name, dtype=None):
        _LossMetric.__init__(self, name, dtype)

    return type(class_name, (_LossMetric,), {"fn": staticmethod(fn), "__init__": __init__, "__doc__": doc,
                                             "__module__": __name__})


MeanSquaredError = _metric("MeanSquaredError", losses.mean_squared_error, "mean_squared_error",
                           "The mean of ``mean((y_true - y_pred)**2, axis=-1)``.")
MeanAbsoluteError = _metric("MeanAbsoluteError", losses.mean_absolute_error, "mean_absolute_error",
                            "The mean of ``mean(|y_true - y_pred|, axis=-1)``.")
MeanAbsolutePercentageError = _metric(
    "MeanAbsolutePercentageError", losses.mean_absolute_percentage_error, "mean_absolute_percentage_error",
    "The mean of ``100 * mean(|(y_true - y_pred) / max(|y_true|, epsilon)|, axis=-1)``.")
MeanSquaredLogarithmicError = _metric(
    "MeanSquaredLogarithmicError", losses.mean_squared_logarithmic_error, "mean_squared_logarithmic_error",
    "The mean of ``mean((log(max(y_pred, eps) + 1) - log(max(y_true, eps) + 1))**2, axis=-1)``.")
LogCoshError = _metric("LogCoshError", losses.log_cosh, "logcosh",
                       "The mean of ``mean(log(cosh(y_pred - y_true)), axis=-1)``.")
Hinge = _metric("Hinge", losses.hinge, "hinge", "The mean of the hinge loss (labels in {-1, 1}, or {0, 1} mapped).")
SquaredHinge = _metric("SquaredHinge", losses.squared_hinge, "squared_hinge", "The mean of the squared hinge loss.")
CategoricalHinge = _metric("CategoricalHinge", losses.categorical_hinge, "categorical_hinge",
                           "The mean of the categorical hinge loss.")
KLDivergence = _metric("KLDivergence", losses.kl_divergence, "kl_divergence",
                       "The mean of the Kullback-Leibler divergence ``sum(y_true * log(y_true / y_pred), axis=-1)``.")
Poisson = _metric("Poisson", losses.poisson, "poisson", "The mean of ``mean(y_pred - y_true * log(y_pred), axis=-1)``.")


class BinaryCrossentropy(_LossMetric):
    """The mean binary cross-entropy (Keras's ``keras.metrics.BinaryCrossentropy``)."""

    fn = staticmethod(losses.binary_crossentropy)
    _keys = ("from_logits", "label_smoothing")

    def __init__(self, name="binary_crossentropy", dtype=None, from_logits=False, label_smoothing=0):
        super().__init__(name, dtype, from_logits=standardize_bool(from_logits, "from_logits"),
                         label_smoothing=check_real(label_smoothing, "label_smoothing", 0, 1))


class CategoricalCrossentropy(_LossMetric):
    """The mean categorical cross-entropy of one-hot (or soft) labels."""

    fn = staticmethod(losses.categorical_crossentropy)
    _keys = ("from_logits", "label_smoothing", "axis")

    def __init__(self, name="categorical_crossentropy", dtype=None, from_logits=False, label_smoothing=0, axis=-1):
        super().__init__(name, dtype, from_logits=standardize_bool(from_logits, "from_logits"),
                         label_smoothing=check_real(label_smoothing, "label_smoothing", 0, 1), axis=axis)


class SparseCategoricalCrossentropy(_LossMetric):
    """The mean categorical cross-entropy of integer labels."""

    fn = staticmethod(losses.sparse_categorical_crossentropy)
    _keys = ("from_logits", "ignore_class", "axis")

    def __init__(self, name="sparse_categorical_crossentropy", dtype=None, from_logits=False, ignore_class=None,
                 axis=-1):
        super().__init__(name, dtype, from_logits=standardize_bool(from_logits, "from_logits"),
                         ignore_class=ignore_class, axis=axis)

    def update_state(self, y_true, y_pred, sample_weight=None):
        # As Keras's: the ignored labels' zero values are left out of the mean only when weights are given
        # (its mask reaches the weights, not the count of an unweighted mean).
        with no_backward():
            values, mask = losses._sparse(unwrap(y_true), unwrap(y_pred), self.from_logits, self.ignore_class,
                                          self.axis)
        sample_weight = unwrap(sample_weight)
        if mask is not None and sample_weight is not None:
            xp = array_namespace(mask)
            m, sw = losses.squeeze_or_expand_to_same_rank(mask.astype(xp.float64), xp.asarray(sample_weight))
            sample_weight = sw * m
        return Mean.update_state(self, values.data, sample_weight=sample_weight)


class CosineSimilarity(_LossMetric):
    """The mean cosine similarity of ``y_true`` and ``y_pred`` along ``axis`` (1: the same direction).

    The config keeps ``axis`` (Keras 3.15's leaves it out, so its round trip
    resets it to -1; Keras reads it either way).
    """

    fn = staticmethod(cosine_similarity)
    _keys = ("axis",)

    def __init__(self, name="cosine_similarity", dtype=None, axis=-1):
        super().__init__(name, dtype, axis=axis)


def _squared_error(y_true, y_pred):
    """``(y_pred - y_true)**2`` element by element (after Keras's squeeze/expand of a trailing axis of 1)."""
    y_pred = ops.convert_to_tensor(y_pred)
    if y_pred.dtype not in ("float16", "float32", "float64"):
        y_pred = ops.cast(y_pred, "float32")
    y_true = ops.cast(ops.convert_to_tensor(y_true), y_pred.dtype)
    y_true, y_pred = losses.squeeze_or_expand_to_same_rank(y_true, y_pred)
    return ops.square(y_pred - y_true)


class RootMeanSquaredError(_LossMetric):
    """``sqrt`` of the mean squared error over the samples seen (Keras's RootMeanSquaredError); the root is
    taken on the device, so the fit loop reads it as it reads a mean."""

    fn = staticmethod(_squared_error)

    def __init__(self, name="root_mean_squared_error", dtype=None):
        super().__init__(name, dtype)

    def _device_result(self):
        return ops.sqrt(super()._device_result()).data
