"""Losses with Keras 3's names, formulas, defaults and reductions, differentiable on the tape.

Each loss class is called like Keras's: ``loss(y_true, y_pred, sample_weight=None)``
returns the reduced loss as a scalar :class:`~gpulayers.autodiff.Tensor`; the
functions (``categorical_crossentropy``...) return the per-sample values.
Both are recorded on the tape, so ``gradient(loss, weights)`` trains through
them. A user's loss is a function ``(y_true, y_pred) -> per-sample values``
or a :class:`Loss` subclass with ``call``, written with ``gpulayers.ops``:
neither needs a derivative by hand.

The cross-entropies are ``gpulayers.ops``' (``ops.categorical_crossentropy``
and its siblings): probabilities are renormalised and clipped to
``[epsilon, 1 - epsilon]`` as Keras does, and when ``y_pred`` comes straight
out of a softmax (or sigmoid) the loss node sends its gradient to the logits,
``(y_pred - y_true) * weight / N``, without dividing by small probabilities.

Formulas follow ``keras/src/losses/losses.py``:

* categorical: ``label_smoothing=s`` uses ``y_true * (1 - s) + s / num_classes``.
* sparse categorical: integer labels (shape ``(N,)`` or ``(N, 1)``);
  ``ignore_class`` masks the labels equal to it.
* binary: the mean over ``axis`` of the element losses; smoothing
  ``t * (1 - s) + 0.5 * s``.
* ``mean((y_pred - y_true)**2, -1)``, ``mean(|y_pred - y_true|, -1)``, and
  Huber ``mean(where(|e| <= d, e**2 / 2, d * |e| - d**2 / 2), -1)``.

The hinge losses (:mod:`gpulayers.losses_margin`), KL, Poisson, the focal and
generalized cross-entropies (:mod:`gpulayers.losses_probabilistic`), cosine
similarity, log-cosh, Dice and Tversky (:mod:`gpulayers.losses_similarity`)
and Circle (:mod:`gpulayers.losses_metric_learning`) are built on
this module's :class:`Loss` and reductions, and are looked up here too.

Reductions (Keras's ``reduce_weighted_values``): per-sample values are
multiplied by ``sample_weight`` (after Keras's squeeze/expand of a trailing
size-1 axis), then ``"sum"`` sums, ``"sum_over_batch_size"`` and ``"mean"``
divide the sum by the number of weighted values, ``"mean_with_sample_weight"``
divides by ``sum(sample_weight)`` (0 when it is 0), and ``"none"``/None keep
the weighted values.

Example:
    >>> cce = CategoricalCrossentropy()
    >>> y_true = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    >>> y_pred = np.array([[0.05, 0.95, 0.0], [0.1, 0.8, 0.1]])
    >>> round(float(cce(y_true, y_pred)), 3)
    1.177
"""

import difflib
import math
import numbers
import warnings

import numpy as np

from backends import array_namespace
from gpulayers import config, object_registration, ops
from gpulayers.argument_validation import standardize_bool
from gpulayers.autodiff import record, unwrap
from gpulayers.ops.core import unbroadcast as _unbroadcast
from gpulayers.ops.crossentropy import check_sparse_labels, sparse_crossentropy
from gpulayers.utils import to_snake_case, unique_name

__all__ = [
    "BinaryCrossentropy", "BinaryFocalCrossentropy", "CategoricalCrossentropy", "CategoricalFocalCrossentropy",
    "CategoricalGeneralizedCrossEntropy", "CategoricalHinge", "Circle", "categorical_generalized_cross_entropy", "circle", "CosineSimilarity", "Dice", "Hinge", "Huber", "KLDivergence", "LogCosh", "Loss",
    "MeanAbsoluteError", "MeanAbsolutePercentageError", "MeanSquaredError", "MeanSquaredLogarithmicError",
    "Poisson", "SparseCategoricalCrossentropy", "SquaredHinge", "Tversky", "binary_crossentropy",
    "binary_focal_crossentropy", "categorical_crossentropy", "categorical_focal_crossentropy", "categorical_hinge",
    "cosine_similarity", "deserialize", "dice", "get", "hinge", "huber", "is_builtin", "kl_divergence", "log_cosh",
    "mae", "mape", "mean_absolute_error", "mean_absolute_percentage_error", "mean_squared_error",
    "mean_squared_logarithmic_error", "mse", "msle", "poisson", "serialize", "sparse_categorical_crossentropy",
    "squared_hinge", "squeeze_or_expand_to_same_rank", "standardize_reduction", "tversky",
]

KERAS_MODULE = "keras.losses"
REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none", None)
_FLOAT_DTYPES = ("float16", "float32", "float64")

# ---------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------
def standardize_reduction(reduction):
    """Check ``reduction`` against Keras 3's allowed values and return it."""
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"Invalid value for `reduction`: expected one of {REDUCTIONS}. "
            f"Received: reduction={reduction!r}"
        )
    return reduction


def _check_smoothing(value):
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, numbers.Real)
        or not 0.0 <= float(value) <= 1.0
    ):
        raise ValueError(
            "Invalid value for `label_smoothing`: expected a float in [0, 1]. "
            f"Received: label_smoothing={value!r}"
        )
    return float(value)


def _check_axis(value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(
            f"Invalid value for `axis`: expected an int. Received: axis={value!r} of type {type(value).__name__}"
        )
    return int(value)


def _check_dtype(value):
    if value is None:
        return None
    name = getattr(value, "name", value)
    name = str(np.dtype(name)) if not isinstance(name, str) else name
    if name not in _FLOAT_DTYPES:
        raise ValueError(
            f"Invalid value for `dtype`: expected None or one of {_FLOAT_DTYPES}. Received: dtype={value!r}"
        )
    return name


# ---------------------------------------------------------------------------
# Array helpers (namespace-generic: NumPy and CuPy)
# ---------------------------------------------------------------------------
def squeeze_or_expand_to_same_rank(x1, x2, expand_rank_1=True):
    """Keras's rule: make ranks equal when they differ by one trailing size-1 axis.

    When one array has exactly one more dimension than the other and that
    last dimension is 1, it is squeezed, except that a rank-1 partner is
    expanded instead (with ``expand_rank_1``).
    """
    r1, r2 = len(x1.shape), len(x2.shape)
    if r1 == r2:
        return x1, x2
    if r1 == r2 + 1 and x1.shape[-1] == 1:
        if r2 == 1 and expand_rank_1:
            x2 = x2.reshape(x2.shape + (1,))
        else:
            x1 = x1.reshape(x1.shape[:-1])
    if r2 == r1 + 1 and x2.shape[-1] == 1:
        if r1 == 1 and expand_rank_1:
            x1 = x1.reshape(x1.shape + (1,))
        else:
            x2 = x2.reshape(x2.shape[:-1])
    return x1, x2



def _prediction(y_pred, dtype):
    """``y_pred`` as a float Tensor in the compute dtype: ``dtype`` if given, else its own (float16 and
    non-float predictions in float32 and ``floatx()``: ``log(1 - eps)`` needs float32)."""
    y_pred = ops.convert_to_tensor(y_pred)
    if dtype is None:
        kind, size = y_pred.data.dtype.kind, y_pred.data.dtype.itemsize
        dtype = config.floatx() if kind != "f" else ("float32" if size < 4 else None)
    return y_pred if dtype is None else ops.cast(y_pred, dtype)


def _target(y_true, y_pred):
    """``y_true`` as a constant tensor of ``y_pred``'s dtype (targets get no gradient)."""
    return ops.convert_to_tensor(unwrap(y_true), dtype=y_pred.dtype)


def _same_shape(fn_name, y_true, y_pred, hint=""):
    """Keras's squeeze/expand, then an exact shape match (Keras would silently broadcast)."""
    t, p = squeeze_or_expand_to_same_rank(y_true, y_pred)
    if t.shape != p.shape:
        raise ValueError(
            f"In {fn_name}, `y_true` and `y_pred` must have the same shape (up to a trailing axis of "
            f"size 1).{hint} Received: y_true.shape={tuple(y_true.shape)}, y_pred.shape={tuple(y_pred.shape)}"
        )
    if len(p.shape) < 1:
        raise ValueError(
            f"In {fn_name}, `y_true` and `y_pred` must have at least one dimension. "
            f"Received: y_true.shape={tuple(y_true.shape)}, y_pred.shape={tuple(y_pred.shape)}"
        )
    return t, p


def _pair(fn_name, y_true, y_pred, dtype=None):
    """(y_true, y_pred) as tensors of the compute dtype and of one shape (Keras's squeeze/expand, then checked)."""
    p = _prediction(y_pred, dtype)
    return _same_shape(fn_name, _target(y_true, p), p)


def _axis_index(axis, ndim, shape):
    if not -ndim <= axis < ndim:
        raise ValueError(f"Invalid value for `axis`: out of range for y_pred.shape={tuple(shape)}. Received: axis={axis}")
    return axis % ndim


def _categorical(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1, dtype=None):
    axis = _check_axis(axis)
    label_smoothing = _check_smoothing(label_smoothing)
    p = _prediction(y_pred, dtype)
    t = _target(y_true, p)
    hint = " For integer labels use sparse_categorical_crossentropy." if t.ndim == p.ndim - 1 else ""
    t, p = _same_shape("categorical_crossentropy", t, p, hint)
    ax = _axis_index(axis, p.ndim, p.shape)
    if p.shape[-1] == 1:
        warnings.warn(
            "In loss categorical_crossentropy, expected y_pred.shape to be (batch_size, num_classes) "
            f"with num_classes > 1. Received: y_pred.shape={tuple(p.shape)}. Consider using "
            "'binary_crossentropy' if you only have 2 classes.",
            SyntaxWarning,
            stacklevel=3,
        )
    if label_smoothing:
        t = t * (1.0 - label_smoothing) + label_smoothing / p.shape[ax]
    return ops.categorical_crossentropy(t, p, from_logits=from_logits, axis=ax)


def _sparse(y_true, y_pred, from_logits=False, ignore_class=None, axis=-1, dtype=None, check_labels=True,
            mean=False):
    """(per-sample values, mask of the labels that count or None); ``mean=True`` lets the values come
    back as their 0-d mean (see ``ops.crossentropy.sparse_crossentropy``)."""
    fn = "sparse_categorical_crossentropy"
    axis = _check_axis(axis)
    if ignore_class is not None and (
        isinstance(ignore_class, (bool, np.bool_)) or not isinstance(ignore_class, numbers.Integral)
    ):
        raise ValueError(f"Invalid value for `ignore_class`: expected None or an int. Received: ignore_class={ignore_class!r}")
    p = _prediction(y_pred, dtype)
    raw = unwrap(ops.convert_to_tensor(unwrap(y_true)))
    labels, pd = squeeze_or_expand_to_same_rank(raw, p.data)
    if pd.ndim != p.ndim:
        p = ops.reshape(p, pd.shape)
    if p.ndim < 1:
        raise ValueError(f"In {fn}, `y_pred` must have at least one dimension. Received: y_pred.shape={tuple(p.shape)}")
    ax = _axis_index(axis, p.ndim, p.shape)
    if labels.ndim == p.ndim and labels.shape[ax] == 1:  # a class axis of size 1 in the labels, as Keras squeezes
        labels = labels.reshape(labels.shape[:ax] + labels.shape[ax + 1:])
    if tuple(labels.shape) != tuple(p.shape[:ax] + p.shape[ax + 1:]):
        raise ValueError(
            f"In {fn}, `y_true` must have y_pred's shape without its class axis {axis} (optionally with that "
            f"axis of size 1). Received: y_true.shape={tuple(raw.shape)}, y_pred.shape={tuple(p.shape)}"
        )
    if check_labels:
        check_sparse_labels(labels, p.shape[ax], ignore_class, "y_true", f"y_pred's axis {axis} (its classes)")
    if ignore_class is None:
        return sparse_crossentropy(labels, p, from_logits=from_logits, axis=ax, check_labels=False, mean=mean), None
    mask = labels != ignore_class
    labels = array_namespace(labels).where(mask, labels, 0)
    values = sparse_crossentropy(labels, p, from_logits=from_logits, axis=ax, check_labels=False)
    return ops.where(mask, values, 0.0), mask


def _binary(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1, dtype=None):
    axis = _check_axis(axis)
    label_smoothing = _check_smoothing(label_smoothing)
    p = _prediction(y_pred, dtype)
    t, p = _same_shape("binary_crossentropy", _target(y_true, p), p)
    ax = _axis_index(axis, p.ndim, p.shape)
    if label_smoothing:
        t = t * (1.0 - label_smoothing) + 0.5 * label_smoothing
    return ops.mean(ops.binary_crossentropy(t, p, from_logits=from_logits), axis=ax)


def _regression(fn, kind, y_true, y_pred, delta=1.0, dtype=None):
    p = _prediction(y_pred, dtype)
    t, p = _same_shape(fn, _target(y_true, p), p)
    error = p - t
    if kind == "mse":
        return ops.mean(ops.square(error), axis=-1)
    if kind == "mae":
        return ops.mean(ops.absolute(error), axis=-1)
    if kind == "mape":  # Keras's: 100 * mean(|(t - p) / max(|t|, epsilon)|)
        epsilon = ops.cast(config.epsilon(), p.dtype)
        return 100.0 * ops.mean(ops.absolute((t - p) / ops.maximum(ops.absolute(t), epsilon)), axis=-1)
    if kind == "msle":  # Keras's: mean((log(max(p, eps) + 1) - log(max(t, eps) + 1))**2)
        epsilon = ops.cast(config.epsilon(), p.dtype)
        first = ops.log(ops.maximum(p, epsilon) + 1.0)
        second = ops.log(ops.maximum(t, epsilon) + 1.0)
        return ops.mean(ops.square(first - second), axis=-1)
    abs_error = ops.absolute(error)
    return ops.mean(ops.where(abs_error <= delta, 0.5 * ops.square(error), delta * abs_error - 0.5 * delta * delta), axis=-1)


# ---------------------------------------------------------------------------
# Public functions: per-sample values, Keras's names and signatures
# ---------------------------------------------------------------------------
def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """Per-sample categorical cross-entropy (one value per position outside ``axis``).

    Example:
        >>> categorical_crossentropy(np.array([[0., 1., 0.]]), np.array([[0.05, 0.95, 0.]]))
        <Tensor shape=(1,) ...> 0.05129329
    """
    return _categorical(y_true, y_pred, from_logits, label_smoothing, axis)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, ignore_class=None, axis=-1):
    """Per-sample cross-entropy with integer labels of y_pred's shape without the class ``axis`` (or with
    that axis of size 1).

    Labels must be integers (int arrays, or float arrays holding whole
    numbers) in ``[0, num_classes)``; otherwise ValueError names the label.
    """
    return _sparse(y_true, y_pred, from_logits, ignore_class, axis)[0]


def binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """Binary cross-entropy averaged over ``axis``."""
    return _binary(y_true, y_pred, from_logits, label_smoothing, axis)


def mean_squared_error(y_true, y_pred):
    """``mean((y_true - y_pred)**2, axis=-1)``."""
    return _regression("mean_squared_error", "mse", y_true, y_pred)


def mean_absolute_error(y_true, y_pred):
    """``mean(|y_true - y_pred|, axis=-1)``."""
    return _regression("mean_absolute_error", "mae", y_true, y_pred)


def mean_absolute_percentage_error(y_true, y_pred):
    """``100 * mean(|(y_true - y_pred) / max(|y_true|, epsilon)|, axis=-1)``."""
    return _regression("mean_absolute_percentage_error", "mape", y_true, y_pred)


def mean_squared_logarithmic_error(y_true, y_pred):
    """``mean((log(max(y_pred, eps) + 1) - log(max(y_true, eps) + 1))**2, axis=-1)``."""
    return _regression("mean_squared_logarithmic_error", "msle", y_true, y_pred)


def huber(y_true, y_pred, delta=1.0):
    """Huber loss averaged over the last axis."""
    return _regression("huber", "huber", y_true, y_pred, delta=_check_delta(delta))


mse = mean_squared_error
mae = mean_absolute_error
mape = mean_absolute_percentage_error
msle = mean_squared_logarithmic_error


def _check_delta(delta):
    if isinstance(delta, (bool, np.bool_)) or not isinstance(delta, numbers.Real) or not (
        math.isfinite(delta) and delta >= 0
    ):
        raise ValueError(f"Invalid value for `delta`: expected a non-negative float. Received: delta={delta!r}")
    return float(delta)


# ---------------------------------------------------------------------------
# Reduction with its gradient
# ---------------------------------------------------------------------------
def _align_weights(values, sample_weight, xp):
    sw = xp.asarray(sample_weight, dtype=values.dtype)
    v, sw = squeeze_or_expand_to_same_rank(values, sw)
    # A per-sample weight for values with more axes (e.g. (N,) for (N, T)):
    # align it with the leading axes, where NumPy-style broadcasting would
    # align it with the trailing ones.
    if 0 < sw.ndim < v.ndim and tuple(sw.shape) == tuple(v.shape[: sw.ndim]):
        sw = sw.reshape(tuple(sw.shape) + (1,) * (v.ndim - sw.ndim))
    try:
        out_shape = np.broadcast_shapes(tuple(v.shape), tuple(sw.shape))
    except ValueError:
        raise ValueError(
            "Invalid value for `sample_weight`: its shape cannot be matched with the per-sample "
            f"losses. Received: sample_weight.shape={tuple(xp.asarray(sample_weight).shape)}, "
            f"per-sample loss shape={tuple(values.shape)}"
        ) from None
    return v, sw, out_shape


def _weights(values, sample_weight, mask, reduction):
    """The sample weights with Keras's mask folded in (rescaled so a mean counts the valid entries only)."""
    if mask is None:
        return sample_weight
    xp = array_namespace(values)
    dtype = values.dtype
    m = mask.astype(dtype)
    if reduction in ("mean", "sum_over_batch_size"):
        valid = xp.sum(m)
        scale = xp.where(valid > 0, m.size / xp.where(valid > 0, valid, 1), 0)
        m = m * scale.astype(dtype)
    if sample_weight is None:
        return m
    m, sw = squeeze_or_expand_to_same_rank(m, xp.asarray(sample_weight, dtype=dtype))
    return sw * m


def _reduce(values, sample_weight, reduction):
    """Keras's ``reduce_weighted_values`` to a scalar, on raw arrays: (loss, backward), where
    ``backward(g)`` is ``g * d loss / d values`` (a broadcast view when that is one value)."""
    xp = array_namespace(values)
    dtype = values.dtype
    if sample_weight is not None:
        v, sw, out_shape = _align_weights(values, sample_weight, xp)
        weighted = v * sw
    else:
        v, sw, out_shape = values, None, tuple(values.shape)
        weighted = values
    if weighted.size == 0:
        return xp.zeros((), dtype=dtype), lambda g: xp.zeros(values.shape, dtype=dtype)
    if reduction == "sum":
        coef = None
        loss = xp.sum(weighted)
    elif reduction == "mean_with_sample_weight" and sw is not None:
        divisor = xp.sum(sw)
        nonzero = divisor != 0
        coef = xp.where(nonzero, 1.0 / xp.where(nonzero, divisor, 1), 0).astype(dtype)
        loss = xp.sum(weighted) * coef
    else:
        coef = dtype.type(1.0 / weighted.size)  # a host scalar: nothing to copy to the device
        loss = xp.mean(weighted)  # Keras's sum / size, one reduction
    loss = xp.asarray(loss, dtype=dtype)
    if sw is None:
        # Every value gets the same gradient: one multiplication, broadcast.
        if coef is None:
            return loss, lambda g: xp.broadcast_to(g.astype(dtype, copy=False), values.shape)
        return loss, lambda g: xp.broadcast_to((g * coef).astype(dtype, copy=False), values.shape)
    per = sw if coef is None else sw * coef
    dv = _unbroadcast(xp.broadcast_to(per, out_shape), tuple(v.shape)).reshape(values.shape).astype(dtype, copy=False)
    return loss, lambda g: dv * g


def _reduced(values, sample_weight, mask, reduction):
    """The weighted, reduced loss. A scalar reduction is one recorded node (its gradient wrt the values is
    ``_reduce``'s); ``"none"`` (or 0-d values) keeps the weighted values, as ops."""
    values = ops.convert_to_tensor(values)
    if values.data.dtype.kind != "f":
        values = ops.cast(values, config.floatx())
    raw = None if sample_weight is None else unwrap(ops.convert_to_tensor(unwrap(sample_weight)))
    weights = _weights(values.data, raw, mask, reduction)
    if reduction is None or reduction == "none" or (values.ndim == 0 and getattr(weights, "ndim", 0) == 0):
        if weights is None:
            return values
        v, sw, _ = _align_weights(values, weights, array_namespace(values.data))
        return v * ops.convert_to_tensor(sw)
    loss, backward = _reduce(values.data, weights, reduction)
    return record("reduce_loss", loss, (values,), lambda g, needs: (backward(g),))


# ---------------------------------------------------------------------------
# Classes
# ---------------------------------------------------------------------------
class Loss:
    """Base class, as Keras's ``keras.losses.Loss``.

    Subclass it and implement ``call(y_true, y_pred)`` returning per-sample
    values, with ``gpulayers.ops``: ``__call__`` applies the sample weights
    and the reduction, and training differentiates it through the tape.

    Args:
        name: the loss's name; None means the snake-case class name.
        reduction: ``"sum_over_batch_size"`` (default), ``"sum"``,
            ``"mean"``, ``"mean_with_sample_weight"``, ``"none"`` or None.
        dtype: compute dtype (``"float32"``...); None means y_pred's float
            dtype (float16 is computed in float32).
    """

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None):
        self.name = name or unique_name(to_snake_case(type(self).__name__))
        self.reduction = standardize_reduction(reduction)
        self.dtype = _check_dtype(dtype)

    def call(self, y_true, y_pred):
        raise NotImplementedError(f"{type(self).__name__} does not implement call().")

    def _values(self, y_true, y_pred):
        """(per-sample values, mask of the entries that count or None); the built-ins override it.

        As Keras's ``Loss.__call__``: both arguments become tensors of the
        loss's dtype (``floatx()`` by default) before ``call``.
        """
        dtype = self.dtype or config.floatx()
        y_pred = ops.cast(ops.convert_to_tensor(y_pred), dtype)
        y_true = ops.convert_to_tensor(unwrap(y_true), dtype=dtype)
        return self.call(y_true, y_pred), None

    def __call__(self, y_true, y_pred, sample_weight=None):
        values, mask = self._values(y_true, y_pred) if not self._call_overridden() else Loss._values(self, y_true, y_pred)
        return _reduced(values, sample_weight, mask, self.reduction)

    def _call_overridden(self):
        """Whether a subclass of a built-in loss has its own ``call``: Keras then calls it, so its values
        come from it and not from the built-in's own computation."""
        owner = next(c for c in type(self).__mro__ if "call" in c.__dict__)
        values_owner = next(c for c in type(self).__mro__ if "_values" in c.__dict__)
        return owner is not values_owner and issubclass(owner, values_owner) and owner not in _CLASSES

    def get_config(self):
        config_ = {"name": self.name, "reduction": self.reduction}
        if self.dtype is not None:
            config_["dtype"] = self.dtype
        return config_

    @classmethod
    def from_config(cls, config_):
        return cls(**config_)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class CategoricalCrossentropy(Loss):
    """Cross-entropy with one-hot (or soft) labels of y_pred's shape.

    Args:
        from_logits: whether ``y_pred`` holds logits (else probabilities).
        label_smoothing: in [0, 1]; targets become ``y * (1 - s) + s / num_classes``,
            with num_classes the size of ``axis`` (Keras takes the last axis's
            size whatever ``axis`` is; the two agree for the default -1).
        axis: the class axis. reduction, name, dtype: as :class:`Loss`.
    """

    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1,
                 reduction="sum_over_batch_size", name="categorical_crossentropy", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.from_logits = standardize_bool(from_logits, "from_logits")
        self.label_smoothing = _check_smoothing(label_smoothing)
        self.axis = _check_axis(axis)

    def call(self, y_true, y_pred):
        return _categorical(y_true, y_pred, self.from_logits, self.label_smoothing, self.axis, self.dtype)

    def _values(self, y_true, y_pred):
        return self.call(y_true, y_pred), None

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits,
                "label_smoothing": self.label_smoothing, "axis": self.axis}


class SparseCategoricalCrossentropy(Loss):
    """Cross-entropy with integer labels (shape ``(N,)`` or ``(N, 1)`` for y_pred ``(N, C)``).

    Args:
        from_logits: whether ``y_pred`` holds logits.
        ignore_class: None, or a label value whose positions get zero loss,
            zero gradient, and are left out of the mean (Keras's mask).
        axis: the class axis of ``y_pred`` (default -1; ``1`` for
            channels-first outputs), as Keras 3.15's. The config keeps it
            (Keras 3.15's leaves it out, so its round trip resets it to -1;
            Keras reads it either way).
        reduction, name, dtype: as :class:`Loss`.

    Every call checks the labels (integers in ``[0, num_classes)``), which
    costs one device-to-host sync. A caller that validated all labels
    beforehand may set the attribute ``check_labels = False`` to skip it
    (out-of-range labels then give undefined values).
    """

    check_labels = True

    def __init__(self, from_logits=False, ignore_class=None,
                 reduction="sum_over_batch_size", axis=-1, name="sparse_categorical_crossentropy", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.from_logits = standardize_bool(from_logits, "from_logits")
        self.axis = _check_axis(axis)
        if ignore_class is not None and (
            isinstance(ignore_class, (bool, np.bool_)) or not isinstance(ignore_class, numbers.Integral)
        ):
            raise ValueError(
                f"Invalid value for `ignore_class`: expected None or an int. Received: ignore_class={ignore_class!r}"
            )
        self.ignore_class = None if ignore_class is None else int(ignore_class)

    def _values(self, y_true, y_pred, mean=False):
        return _sparse(y_true, y_pred, self.from_logits, self.ignore_class, self.axis, self.dtype, self.check_labels,
                       mean=mean)

    def call(self, y_true, y_pred):
        return self._values(y_true, y_pred)[0]

    def __call__(self, y_true, y_pred, sample_weight=None):
        # Unweighted, a mean reduction is the mean of the values: the cross-entropy may compute it as one
        # node (a 0-d result, which the reduction passes through unchanged).
        if self._call_overridden():
            return super().__call__(y_true, y_pred, sample_weight)
        mean = sample_weight is None and self.reduction in ("sum_over_batch_size", "mean", "mean_with_sample_weight") \
            and type(self)._values is SparseCategoricalCrossentropy._values
        values, mask = self._values(y_true, y_pred, mean=mean)
        return _reduced(values, sample_weight, mask, self.reduction)

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits, "ignore_class": self.ignore_class,
                "axis": self.axis}


class BinaryCrossentropy(Loss):
    """Binary cross-entropy, averaged over ``axis`` (Keras's default -1).

    Args:
        from_logits: whether ``y_pred`` holds logits.
        label_smoothing: in [0, 1]; targets become ``y * (1 - s) + 0.5 * s``.
        axis: the axis averaged over. reduction, name, dtype: as :class:`Loss`.
    """

    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1,
                 reduction="sum_over_batch_size", name="binary_crossentropy", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.from_logits = standardize_bool(from_logits, "from_logits")
        self.label_smoothing = _check_smoothing(label_smoothing)
        self.axis = _check_axis(axis)

    def call(self, y_true, y_pred):
        return _binary(y_true, y_pred, self.from_logits, self.label_smoothing, self.axis, self.dtype)

    def _values(self, y_true, y_pred):
        return self.call(y_true, y_pred), None

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits,
                "label_smoothing": self.label_smoothing, "axis": self.axis}


class MeanSquaredError(Loss):
    """``mean((y_true - y_pred)**2, axis=-1)`` per sample."""

    def __init__(self, reduction="sum_over_batch_size", name="mean_squared_error", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return _regression("mean_squared_error", "mse", y_true, y_pred, dtype=self.dtype)

    def _values(self, y_true, y_pred):
        return self.call(y_true, y_pred), None


class MeanAbsoluteError(Loss):
    """``mean(|y_true - y_pred|, axis=-1)`` per sample; gradient ``sign`` (0 at 0)."""

    def __init__(self, reduction="sum_over_batch_size", name="mean_absolute_error", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return _regression("mean_absolute_error", "mae", y_true, y_pred, dtype=self.dtype)

    def _values(self, y_true, y_pred):
        return self.call(y_true, y_pred), None


class MeanAbsolutePercentageError(Loss):
    """``100 * mean(|(y_true - y_pred) / max(|y_true|, epsilon)|, axis=-1)`` per sample."""

    def __init__(self, reduction="sum_over_batch_size", name="mean_absolute_percentage_error", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return _regression("mean_absolute_percentage_error", "mape", y_true, y_pred, dtype=self.dtype)

    def _values(self, y_true, y_pred):
        return self.call(y_true, y_pred), None


class MeanSquaredLogarithmicError(Loss):
    """``mean((log(max(y_pred, eps) + 1) - log(max(y_true, eps) + 1))**2, axis=-1)`` per sample."""

    def __init__(self, reduction="sum_over_batch_size", name="mean_squared_logarithmic_error", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return _regression("mean_squared_logarithmic_error", "msle", y_true, y_pred, dtype=self.dtype)

    def _values(self, y_true, y_pred):
        return self.call(y_true, y_pred), None


class Huber(Loss):
    """Huber loss with threshold ``delta`` (default 1.0), averaged over the last axis.

    ``get_config`` includes ``delta`` (Keras 3's Huber.get_config leaves it
    out, so a round trip there resets it to 1.0).
    """

    def __init__(self, delta=1.0, reduction="sum_over_batch_size", name="huber_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.delta = _check_delta(delta)

    def call(self, y_true, y_pred):
        return _regression("huber", "huber", y_true, y_pred, delta=self.delta, dtype=self.dtype)

    def _values(self, y_true, y_pred):
        return self.call(y_true, y_pred), None

    def get_config(self):
        return {**super().get_config(), "delta": self.delta}


class _FunctionLoss(Loss):
    """A plain callable ``(y_true, y_pred) -> per-sample values``, reduced like any loss.

    As Keras's ``LossFunctionWrapper``, the function gets ``y_true`` and
    ``y_pred`` of the same rank (:func:`squeeze_or_expand_to_same_rank`):
    labels of shape ``(N,)`` for an output of shape ``(N, 1)`` arrive as
    ``(N, 1)``, not broadcast against it into ``(N, N)``.
    """

    def __init__(self, fn, reduction="sum_over_batch_size", name=None):
        self.fn = fn
        super().__init__(name=name or to_snake_case(getattr(fn, "__name__", type(fn).__name__)),
                         reduction=reduction)

    def call(self, y_true, y_pred):
        y_true, y_pred = squeeze_or_expand_to_same_rank(y_true, y_pred)
        return self.fn(y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "fn": getattr(self.fn, "__name__", repr(self.fn))}


# ---------------------------------------------------------------------------
# Lookup and (de)serialization
# ---------------------------------------------------------------------------
# Keras's other losses live in modules of their own that build on the names above, hence imported here.
from gpulayers.losses_margin import CategoricalHinge, Hinge, SquaredHinge, categorical_hinge, hinge, squared_hinge  # noqa: E402
from gpulayers.losses_probabilistic import (  # noqa: E402
    BinaryFocalCrossentropy, CategoricalFocalCrossentropy, CategoricalGeneralizedCrossEntropy, KLDivergence, Poisson,
    binary_focal_crossentropy, categorical_focal_crossentropy, categorical_generalized_cross_entropy, kl_divergence,
    poisson)
from gpulayers.losses_metric_learning import Circle, circle  # noqa: E402
from gpulayers.losses_similarity import (  # noqa: E402
    CosineSimilarity, Dice, LogCosh, Tversky, cosine_similarity, dice, log_cosh, tversky)

_CLASSES = (CategoricalCrossentropy, SparseCategoricalCrossentropy, BinaryCrossentropy,
            MeanSquaredError, MeanAbsoluteError, MeanAbsolutePercentageError, MeanSquaredLogarithmicError, Huber,
            Hinge, SquaredHinge, CategoricalHinge, KLDivergence, Poisson, CategoricalFocalCrossentropy,
            BinaryFocalCrossentropy, CosineSimilarity, LogCosh, Dice, Tversky, Circle, CategoricalGeneralizedCrossEntropy)
_BY_CLASS_NAME = {cls.__name__: cls for cls in _CLASSES}
_FUNCTIONS = {
    categorical_crossentropy: CategoricalCrossentropy,
    sparse_categorical_crossentropy: SparseCategoricalCrossentropy,
    binary_crossentropy: BinaryCrossentropy,
    mean_squared_error: MeanSquaredError,
    mean_absolute_error: MeanAbsoluteError,
    mean_absolute_percentage_error: MeanAbsolutePercentageError,
    mean_squared_logarithmic_error: MeanSquaredLogarithmicError,
    huber: Huber,
    hinge: Hinge, squared_hinge: SquaredHinge, categorical_hinge: CategoricalHinge,
    kl_divergence: KLDivergence, poisson: Poisson,
    categorical_focal_crossentropy: CategoricalFocalCrossentropy, binary_focal_crossentropy: BinaryFocalCrossentropy,
    cosine_similarity: CosineSimilarity, log_cosh: LogCosh, dice: Dice, tversky: Tversky, circle: Circle,
}
# Function names and Keras 3's aliases: the loss is the class with default
# arguments, named as the identifier (as Keras's compile names its wrapper).
_BY_FUNCTION_NAME = {fn.__name__: cls for fn, cls in _FUNCTIONS.items()}
_BY_FUNCTION_NAME.update({
    "bce": BinaryCrossentropy, "BCE": BinaryCrossentropy,
    "mse": MeanSquaredError, "MSE": MeanSquaredError,
    "mae": MeanAbsoluteError, "MAE": MeanAbsoluteError,
    "mape": MeanAbsolutePercentageError, "MAPE": MeanAbsolutePercentageError,
    "msle": MeanSquaredLogarithmicError, "MSLE": MeanSquaredLogarithmicError,
    "kld": KLDivergence, "KLD": KLDivergence,
})
_FUNCTION_BY_NAME = {fn.__name__: fn for fn in _FUNCTIONS}
_FUNCTION_BY_NAME.update({alias: {cls: fn for fn, cls in _FUNCTIONS.items()}[_BY_FUNCTION_NAME[alias]]
                          for alias in _BY_FUNCTION_NAME if alias not in _FUNCTION_BY_NAME})
_ALL_NAMES = sorted(set(_BY_CLASS_NAME) | set(_BY_FUNCTION_NAME))


def is_builtin(loss):
    """Whether ``loss`` is an instance of one of this module's loss classes (not a user's subclass)."""
    return type(loss) in _CLASSES


def _lookup(name):
    if name in _BY_CLASS_NAME:
        return _BY_CLASS_NAME[name]()
    if name in _BY_FUNCTION_NAME:
        return _BY_FUNCTION_NAME[name](name=name)
    close = difflib.get_close_matches(name, _ALL_NAMES, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"Invalid value for `loss`: unknown loss {name!r}.{hint} Expected one of {_ALL_NAMES}, a config "
        f"dict, a Loss instance or a callable. Received: loss={name!r}"
    )


def serialize(loss):
    """Keras 3's dict for a loss (None stays None).

    Example:
        >>> serialize(MeanSquaredError())["class_name"]
        'MeanSquaredError'
    """
    if loss is None:
        return None
    if isinstance(loss, _CLASSES):
        return {"module": KERAS_MODULE, "class_name": type(loss).__name__,
                "config": loss.get_config(), "registered_name": None}
    if loss in _FUNCTIONS:
        return {"module": KERAS_MODULE, "class_name": "function",
                "config": loss.__name__, "registered_name": loss.__name__}
    if isinstance(loss, _FunctionLoss):
        loss = loss.fn
    if not callable(loss):
        raise TypeError(f"Invalid type for `loss`: expected a loss. Received: loss={loss!r}")
    name = getattr(loss, "__name__", type(loss).__name__)
    is_obj = hasattr(loss, "get_config")
    return {"module": getattr(loss, "__module__", None),
            "class_name": type(loss).__name__ if is_obj else "function",
            "config": loss.get_config() if is_obj else name,
            "registered_name": object_registration.get_registered_name(type(loss) if is_obj else loss)}


def deserialize(config_):
    """Build a loss from a name or a Keras 3 config dict.

    This module's classes, and the user's losses the program made known
    (``custom_objects``, ``register_keras_serializable``), are built; nothing
    named in a config is imported. A serialized function (``class_name == "function"``) gives the
    matching class with default arguments, named as the function.
    """
    if not isinstance(config_, (str, dict)):
        raise ValueError(
            f"Invalid value for `loss`: expected a name or a config dict. Received: loss={config_!r}"
        )
    custom = object_registration.deserialize_custom(config_)  # the user's losses come first, as in Keras
    if custom is not None:
        return to_loss(custom)
    if isinstance(config_, str):
        return _lookup(config_)
    name, module, kwargs = config_.get("class_name"), config_.get("module"), config_.get("config", {})
    if module is not None and not str(module).startswith("keras"):
        raise ValueError(
            f"Invalid value for `loss`: {name!r} from module {module!r} is not a gpulayers built-in loss. "
            f"Received: loss={config_!r}"
        )
    if name == "function" and isinstance(kwargs, str):
        return _lookup(kwargs)
    if not isinstance(name, str) or not isinstance(kwargs, dict):
        raise ValueError(
            "Invalid value for `loss`: a config dict needs a string 'class_name' and a dict 'config'. "
            f"Received: loss={config_!r}"
        )
    if name not in _BY_CLASS_NAME:
        return _lookup(name)  # a function name or alias, else ValueError listing the names
    try:
        return _BY_CLASS_NAME[name].from_config(kwargs)
    except TypeError as exc:  # unexpected keys
        raise ValueError(f"Invalid value for `loss`: bad config for {name}: {exc}. Received: loss={config_!r}") from None


def get(identifier):
    """Keras's ``keras.losses.get``: a loss class's name gives an instance, a function's name or alias the
    function itself (per-sample values, unreduced), as Keras 3.15 does; a config dict, a Loss instance or
    subclass, or a callable as :func:`to_loss` takes them, a callable given back unchanged.

    Example:
        >>> get("MeanSquaredError").name, get("mse").__name__
        ('mean_squared_error', 'mean_squared_error')
    """
    if isinstance(identifier, str) and identifier not in _BY_CLASS_NAME and identifier in _FUNCTION_BY_NAME:
        return _FUNCTION_BY_NAME[identifier]
    if callable(identifier) and not isinstance(identifier, type) and not isinstance(identifier, Loss):
        return identifier
    return to_loss(identifier)


def to_loss(identifier):
    """Resolve a loss identifier to a :class:`Loss` (None stays None): what ``compile(loss=...)`` trains.

    Accepts a name (class names ``"CategoricalCrossentropy"``, function names
    ``"categorical_crossentropy"`` and Keras's aliases ``"mse"``, ``"mae"``,
    ``"bce"``, upper-case too), a Keras config dict, a Loss instance or
    subclass, one of this module's functions, or any callable
    ``(y_true, y_pred) -> per-sample values``. Such a callable is wrapped:
    it reduces like any loss and trains through the tape.

    Example:
        >>> to_loss("mse").name
        'mse'
    """
    if identifier is None:
        return None
    if isinstance(identifier, (str, dict)):
        return deserialize(identifier)
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, type):
        if issubclass(identifier, Loss):
            return identifier()
        raise ValueError(f"Invalid value for `loss`: {identifier.__name__} is not a Loss subclass. Received: loss={identifier!r}")
    try:
        cls = _FUNCTIONS.get(identifier)
    except TypeError:  # unhashable callable
        cls = None
    if cls is not None:
        return cls(name=identifier.__name__)
    if callable(identifier):
        return _FunctionLoss(identifier)
    raise ValueError(
        f"Invalid value for `loss`: expected None, a loss name, a config dict, a Loss or a callable. "
        f"Received: loss={identifier!r} of type {type(identifier).__name__}"
    )
