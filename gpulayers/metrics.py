"""Stateful metrics with Keras 3's names, defaults and formulas.

Each metric accumulates with ``update_state(y_true, y_pred, sample_weight=None)``
and reports with ``result()`` (a Python float; a list of floats where Keras
gives a vector: several thresholds, per-class F-scores); ``reset_state()``
starts over. The running sums stay on the arrays' device (0-d NumPy or CuPy
arrays, or Keras's state variables, accumulated in float64); ``result()`` is
the only place that copies a value to the host, so a training loop syncs only
when it logs.

This module holds the base classes, the means, the accuracies and the
regression metrics, and the lookup; Keras's other families live in modules of
their own and are importable from here too: the confusion-matrix metrics
(:mod:`gpulayers.metrics_confusion`: Precision, Recall, the counts and the
metrics at a fixed recall, precision, sensitivity or specificity), AUC
(:mod:`gpulayers.metrics_auc`), the F-scores (:mod:`gpulayers.metrics_fscore`),
the IoU metrics (:mod:`gpulayers.metrics_iou`), the top-k accuracies
(:mod:`gpulayers.metrics_top_k`) and R2Score (:mod:`gpulayers.metrics_regression`).

:func:`get` resolves compile-style identifiers as Keras 3's ``compile`` does:
``"accuracy"``/``"acc"`` (any case) become binary, sparse categorical or
categorical accuracy, picked from the loss when it is one of the three
cross-entropies and otherwise from the shapes (Keras's
``is_binary_or_sparse_categorical``), and the metric keeps the name the user
wrote, so it is logged as ``"accuracy"`` or ``"acc"``.

Example:
    >>> m = get("accuracy", loss="sparse_categorical_crossentropy")
    >>> type(m).__name__, m.name
    ('SparseCategoricalAccuracy', 'accuracy')
    >>> m.update_state(np.array([2, 1]), np.array([[0.1, 0.6, 0.3], [0.05, 0.95, 0.0]]))
    >>> m.result()
    0.5
"""

import difflib
import inspect
import numbers

import numpy as np

from backends import array_namespace, get_ops
from gpulayers import config, initializers, losses, object_registration
from gpulayers.autodiff import no_backward, unwrap
from gpulayers.losses import squeeze_or_expand_to_same_rank
from gpulayers.utils import to_snake_case, unique_name

__all__ = [
    "AUC",
    "Accuracy",
    "BinaryAccuracy",
    "BinaryIoU",
    "CategoricalAccuracy",
    "F1Score",
    "FBetaScore",
    "FalseNegatives",
    "FalsePositives",
    "IoU",
    "Mean",
    "MeanAbsoluteError",
    "MeanAbsolutePercentageError",
    "MeanIoU",
    "MeanMetricWrapper",
    "MeanSquaredError",
    "MeanSquaredLogarithmicError",
    "Metric",
    "OneHotIoU",
    "OneHotMeanIoU",
    "Precision",
    "PrecisionAtRecall",
    "R2Score",
    "Recall",
    "RecallAtPrecision",
    "SensitivityAtSpecificity",
    "SparseCategoricalAccuracy",
    "SparseTopKCategoricalAccuracy",
    "SpecificityAtSensitivity",
    "Sum",
    "TopKCategoricalAccuracy",
    "TrueNegatives",
    "TruePositives",
    "accuracy",
    "binary_accuracy",
    "categorical_accuracy",
    "deserialize",
    "get",
    "serialize",
    "sparse_categorical_accuracy",
    "sparse_top_k_categorical_accuracy",
    "top_k_categorical_accuracy",
]

KERAS_MODULE = "keras.metrics"
_FLOAT_DTYPES = ("float16", "float32", "float64")


def _namespace(*arrays):
    """The namespace of the first array-like argument (numpy for Python scalars and lists)."""
    for a in map(unwrap, arrays):
        if a is not None and hasattr(a, "shape") and hasattr(a, "dtype"):
            return array_namespace(a)
    return np


def _to_float(x):
    """The host copy of a 0-d state (the only device->host transfer)."""
    return float(x)


def _divide_no_nan(num, den):
    """``num / den`` (0 where ``den`` is 0) without reading device values on the host."""
    if not hasattr(den, "shape"):  # a host count (the usual case: batch sizes added up)
        return 0.0 if den == 0 else num / den
    xp = array_namespace(den)
    return xp.where(den == 0, 0.0, num / xp.where(den == 0, 1.0, den))


def _check_dtype(value):
    """The metric's dtype name: a float or integer dtype, a dtype policy's compute dtype (a policy object or
    a name such as ``"mixed_float16"``), or None for ``floatx()``, as Keras takes them."""
    if value is None:
        return config.floatx()
    policy = getattr(value, "compute_dtype", None)
    if isinstance(policy, str):
        value = policy
    elif isinstance(value, str) and value.startswith("mixed_"):
        value = value[len("mixed_"):]
    try:
        name = np.dtype(value).name
    except TypeError:
        name = None
    if name is None or not (name in _FLOAT_DTYPES or np.dtype(name).kind in "iu"):
        raise ValueError(
            f"Invalid value for `dtype`: expected None, a dtype policy, or one of {_FLOAT_DTYPES} or an integer "
            f"dtype. Received: dtype={value!r}"
        )
    return name


# ---------------------------------------------------------------------------
# Per-sample metric functions (Keras's names)
# ---------------------------------------------------------------------------
def _float_pred(xp, y_pred):
    y_pred = xp.asarray(y_pred)
    return y_pred if y_pred.dtype.kind == "f" else y_pred.astype(config.floatx())


def _check_same_shape(fn, t, p, y_true, y_pred):
    if tuple(t.shape) != tuple(p.shape):
        raise ValueError(
            f"In {fn}, `y_true` and `y_pred` must have the same shape (up to a trailing axis of size 1). "
            f"Received: y_true.shape={tuple(y_true.shape)}, y_pred.shape={tuple(y_pred.shape)}"
        )


def accuracy(y_true, y_pred):
    """``y_pred == y_true`` element by element, as floats (1.0 or 0.0), as Keras's: a metric averages them
    per sample (over every axis after the first), so rank-1 labels count one match each."""
    y_true, y_pred = unwrap(y_true), unwrap(y_pred)
    xp = _namespace(y_pred, y_true)
    y_pred = _float_pred(xp, y_pred)
    y_true = xp.asarray(y_true)
    t, p = squeeze_or_expand_to_same_rank(y_true.astype(y_pred.dtype, copy=False), y_pred)
    _check_same_shape("accuracy", t, p, y_true, y_pred)
    return (t == p).astype(xp.float64)


def binary_accuracy(y_true, y_pred, threshold=0.5):
    """``(y_pred > threshold) == y_true`` element by element, as floats (1.0 or 0.0), as Keras's.

    As in Keras, ``y_true`` is compared as given (a soft label 0.9 never
    matches); a metric averages the matches per sample.
    """
    y_true, y_pred = unwrap(y_true), unwrap(y_pred)
    xp = _namespace(y_pred, y_true)
    y_pred = _float_pred(xp, y_pred)
    y_true = xp.asarray(y_true)
    t, p = squeeze_or_expand_to_same_rank(y_true, y_pred)
    _check_same_shape("binary_accuracy", t, p, y_true, y_pred)
    pred = (p > xp.asarray(threshold, dtype=p.dtype)).astype(t.dtype)
    return (t == pred).astype(xp.float64)


def categorical_accuracy(y_true, y_pred):
    """How often ``argmax(y_pred) == argmax(y_true)`` on the last axis (one-hot labels)."""
    y_true, y_pred = unwrap(y_true), unwrap(y_pred)
    xp = _namespace(y_pred, y_true)
    y_pred = xp.asarray(y_pred)
    y_true = xp.asarray(y_true)
    if tuple(y_true.shape) != tuple(y_pred.shape) or y_pred.ndim < 1:
        raise ValueError(
            "In categorical_accuracy, `y_true` (one-hot) and `y_pred` must have the same shape. "
            f"Received: y_true.shape={tuple(y_true.shape)}, y_pred.shape={tuple(y_pred.shape)}"
        )
    return (xp.argmax(y_true, axis=-1) == xp.argmax(y_pred, axis=-1)).astype(xp.float64)


def sparse_categorical_accuracy(y_true, y_pred):
    """How often ``argmax(y_pred) == y_true`` for integer labels of shape ``(N,)`` or ``(N, 1)``."""
    y_true, y_pred = unwrap(y_true), unwrap(y_pred)
    xp = _namespace(y_pred, y_true)
    y_pred = xp.asarray(y_pred)
    y_true = xp.asarray(y_true)
    t = y_true
    squeezed = y_pred.ndim >= 1 and t.ndim == y_pred.ndim and t.shape[-1] == 1
    if squeezed:
        t = t.reshape(t.shape[:-1])
    if y_pred.ndim < 1:
        raise ValueError(
            "In sparse_categorical_accuracy, `y_pred` needs a class axis. "
            f"Received: y_true.shape={tuple(y_true.shape)}, y_pred.shape={tuple(y_pred.shape)}"
        )
    if tuple(t.shape) != tuple(y_pred.shape[:-1]):
        return _broadcast_sparse_matches(xp, y_true, t, y_pred, squeezed)
    ops = get_ops()
    if xp is ops.xp and t.dtype.kind in "iu" and y_pred.size:  # one kernel on the GPU
        return ops.top1_matches(y_pred.reshape(-1, y_pred.shape[-1]), t.reshape(-1)).reshape(t.shape)
    pred = xp.argmax(y_pred, axis=-1).astype(t.dtype)  # float labels compare as floats, as in Keras
    return (t == pred).astype(xp.float64)


def _broadcast_sparse_matches(xp, y_true, t, y_pred, squeezed):
    """Keras's sparse_categorical_accuracy for labels that are not y_pred's shape without its class axis:
    the labels and the argmax compared by broadcasting, the matches put back in the labels' shape when a
    trailing 1 was squeezed, and a trailing 1 of the matches dropped."""
    pred = xp.argmax(y_pred, axis=-1).astype(t.dtype)
    try:
        matches = (t == pred).astype(xp.float64)
        if squeezed:
            matches = matches.reshape(y_true.shape)
    except ValueError:
        raise ValueError(
            "In sparse_categorical_accuracy, `y_true` must broadcast against y_pred's shape without its last "
            f"axis. Received: y_true.shape={tuple(y_true.shape)}, y_pred.shape={tuple(y_pred.shape)}"
        ) from None
    if matches.ndim > 1 and matches.shape[-1] == 1:
        matches = matches.reshape(matches.shape[:-1])
    return matches


# ---------------------------------------------------------------------------
# Base classes
# ---------------------------------------------------------------------------
class Metric:
    """Base class: ``update_state``, ``result`` and ``reset_state``, as Keras 3's ``keras.metrics.Metric``.

    A subclass makes its state variables in ``__init__`` with
    :meth:`add_variable` (they live on the active backend, and the default
    :meth:`reset_state` sets them back to zeros), updates them in
    ``update_state`` with ``gpulayers.ops`` and ``variable.assign``, and
    returns a tensor or a number from ``result``. The built-in metrics return
    Python floats. As in Keras, Variables and metrics held in attributes
    (alone or in lists, tuples and dicts) join :attr:`variables`.

    Args:
        name: the metric's name; None means the snake-case class name
            (made unique like Keras's: ``precision``, ``precision_1``...).
        dtype: the dtype of the state variables and results: a float or
            integer dtype, or a dtype policy (its compute dtype);
            ``floatx()`` by default. The built-ins accumulate a float dtype
            in float64, an integer one in that dtype (values truncated, as
            Keras's).
    """

    def __init__(self, name=None, dtype=None):
        self.name = name or unique_name(to_snake_case(type(self).__name__))
        self._dtype = _check_dtype(dtype)
        self._variables = getattr(self, "_variables", [])

    @property
    def dtype(self):
        return self._dtype

    @property
    def variables(self):
        """The state variables: those made by :meth:`add_variable`, any other Variable held in an attribute,
        then the variables of the metrics held in attributes (Keras's order)."""
        return self._tracked_variables(set())

    def _tracked_variables(self, visited):
        from gpulayers.variables import Variable  # variables -> utils; metrics are imported by layers

        visited.add(id(self))
        found = list(self.__dict__.get("_variables", []))
        seen = {id(v) for v in found}
        submetrics = []

        def walk(value):
            if isinstance(value, Variable):
                if id(value) not in seen:
                    seen.add(id(value))
                    found.append(value)
            elif isinstance(value, Metric):
                if id(value) not in visited:
                    visited.add(id(value))
                    submetrics.append(value)
            elif isinstance(value, (list, tuple)):
                for item in value:
                    walk(item)
            elif isinstance(value, dict):
                for item in value.values():
                    walk(item)

        for key, value in vars(self).items():
            if key != "_variables":
                walk(value)
        for metric in submetrics:
            found.extend(v for v in metric._tracked_variables(visited) if id(v) not in seen)
        return found

    def add_variable(self, shape, initializer, dtype=None, aggregation="sum", name=None):
        """A state variable (not trainable) of ``shape`` from ``initializer``, e.g. ``"zeros"``."""
        from gpulayers.variables import Variable  # variables -> utils; metrics are imported by layers

        dtype = dtype or self._dtype
        fn = initializers.get(initializer, argument="initializer")
        shape = tuple(int(d) for d in shape)
        host = np.asarray(fn(shape, dtype=dtype), dtype=dtype)
        variable = Variable.from_array(get_ops().asarray(host), name=name or unique_name("variable"), trainable=False,
                                       aggregation=aggregation)
        variable.path = f"{self.name}/{variable.name}"
        self.__dict__.setdefault("_variables", []).append(variable)
        return variable

    def add_weight(self, shape=(), initializer=None, dtype=None, name=None):
        """Keras's older name for :meth:`add_variable` (default initializer: zeros)."""
        return self.add_variable(shape, initializer or "zeros", dtype=dtype, name=name)

    def update_state(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not implement update_state().")

    def result(self):
        raise NotImplementedError(f"{type(self).__name__} does not implement result().")

    def reset_state(self):
        """Set every state variable to zeros (Keras's default); metrics with other state override it."""
        for v in self.variables:
            v.assign(get_ops().xp.zeros(v.shape, dtype=v.value.dtype))

    # Keras's functional forms: the state given as values, the metric's own left as it was.
    def _run_on(self, metric_variables, fn):
        variables = self.variables
        if metric_variables is not None and len(metric_variables) != len(variables):
            raise ValueError(
                f"Invalid value for `metric_variables`: expected {len(variables)} values, one per variable of "
                f"{type(self).__name__}().variables. Received: {len(metric_variables)} values"
            )
        attributes, values = dict(vars(self)), [(v, v.value) for v in variables]
        try:
            for v, value in zip(variables, metric_variables or ()):
                v.assign(value)
            out = fn()
            return out, [v.value for v in variables]
        finally:
            vars(self).clear()
            vars(self).update(attributes)
            for v, value in values:
                v.value = value

    def stateless_update_state(self, metric_variables, *args, **kwargs):
        """The variables' values after ``update_state(*args, **kwargs)`` from ``metric_variables``."""
        return self._run_on(metric_variables, lambda: self.update_state(*args, **kwargs))[1]

    def stateless_result(self, metric_variables):
        """``result()`` of the state ``metric_variables``."""
        return self._run_on(metric_variables, self.result)[0]

    def stateless_reset_state(self):
        """The variables' values after ``reset_state()``."""
        return self._run_on(None, self.reset_state)[1]

    def __call__(self, *args, **kwargs):
        """Update with one batch and return the running result."""
        with no_backward():
            self.update_state(*args, **kwargs)
            return self.result()

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}

    @classmethod
    def from_config(cls, config_):
        return cls(**config_)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}>"


def _state_dtype(dtype):
    """The dtype of a built-in metric's state: float64 for a float metric (the built-ins accumulate in
    float64), an integer dtype as it is (Keras's integer state: values and sums truncated)."""
    return dtype if np.dtype(dtype).kind in "iu" else "float64"


def _add_to(variable, delta):
    """``variable += delta`` in the variable's dtype (an integer state truncates the sum, as Keras's
    ``assign_add``); the new array is the variable's own, so it is not copied."""
    old = variable.value
    if hasattr(delta, "shape") and not isinstance(delta, np.generic):  # an array: onto the variable's device
        delta = get_ops().asarray(delta)
        old = get_ops().asarray(old)  # a count kept on the host (Mean) joins a device sum there
    # asarray: NumPy gives a scalar for 0-d sums, and casts a float sum into an integer state
    variable.value = array_namespace(old).asarray(old + delta, dtype=old.dtype)
    return variable.value


class Sum(Metric):
    """The (weighted) sum of the given values; state: ``total``."""

    def __init__(self, name="sum", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.total = self.add_variable((), "zeros", dtype=_state_dtype(self.dtype), name="total")

    def update_state(self, values, sample_weight=None):
        values, _ = _reduce_to_samplewise(unwrap(values), unwrap(sample_weight), "sum", self.dtype)
        _add_to(self.total, _namespace(values).sum(values))

    def reset_state(self):
        self.total.assign(0)

    def result(self):
        return _to_float(self.total.value)


def _reduce_to_samplewise(values, sample_weight, how, dtype):
    """Keras's ``reduce_to_samplewise_values``: per-sample values and weights, in float64 (an integer
    ``dtype`` first truncates them to integers, as Keras's cast does)."""
    xp = _namespace(values, sample_weight)
    integer = np.dtype(dtype).kind in "iu"

    def as_float(a):
        a = xp.asarray(a)
        return (a.astype(dtype) if integer else a).astype(xp.float64, copy=False)  # no copy when float64

    values = as_float(values)
    reduce_fn = xp.mean if how == "mean" else xp.sum
    if sample_weight is not None:
        sw = as_float(sample_weight)
        values, sw = squeeze_or_expand_to_same_rank(values, sw)
        w_ndim = sw.ndim
        if values.ndim > w_ndim:
            values = reduce_fn(values, axis=tuple(range(w_ndim, values.ndim)))
        try:
            sw = xp.broadcast_to(sw, values.shape)
        except ValueError:
            raise ValueError(
                "Invalid value for `sample_weight`: it cannot be broadcast to the per-sample metric "
                f"values. Received: sample_weight.shape={tuple(xp.asarray(sample_weight).shape)}, "
                f"values.shape={tuple(values.shape)}"
            ) from None
        values = values * sw
        if w_ndim > 1:
            sw = reduce_fn(sw, axis=tuple(range(1, w_ndim)))
    else:
        sw = None
    if values.ndim > 1:
        values = reduce_fn(values, axis=tuple(range(1, values.ndim)))
    return values, sw


class Mean(Metric):
    """The (weighted) mean of the given values: ``sum(v * w) / sum(w)``; state: ``total`` and ``count``.

    Example:
        >>> m = Mean()
        >>> m.update_state(np.array([1.0, 3.0, 5.0, 7.0]), sample_weight=np.array([1, 1, 0, 0]))
        >>> m.result()
        2.0
    """

    def __init__(self, name="mean", dtype=None):
        super().__init__(name=name, dtype=dtype)
        state = _state_dtype(self.dtype)
        self.total = self.add_variable((), "zeros", dtype=state, name="total")
        self.count = self.add_variable((), "zeros", dtype=state, name="count")
        self._host_count = (self.count.value, 0)
        self._mean = None

    def _known_count(self):
        """The count as a host number while it is known there (batch sizes and host weights added up), so
        that the mean needs no device read of it; None once a device weight (or anyone) changed it."""
        array, value = self._host_count
        return value if array is self.count.value else None

    def _keep_count_on_host(self, count):
        # The count variable holds a host array while the count is known on the host (batch sizes, host
        # weights): updating it launches nothing, and reading it needs no device sync.
        self.count.value = np.asarray(count, dtype=self.count.value.dtype)
        self._host_count = (self.count.value, count)

    def update_state(self, values, sample_weight=None):
        values, sample_weight = unwrap(values), unwrap(sample_weight)
        count = self._known_count()
        if (
            isinstance(sample_weight, numbers.Real)
            and not isinstance(sample_weight, (bool, np.bool_))
            and getattr(values, "ndim", None) == 0
            and self.total.value.dtype == np.float64
            and count is not None
        ):  # Keras's fast path: a scalar value with a scalar weight
            weight = float(sample_weight)
            count = count + weight
            # one launch on the GPU gives the new total and the result the step's logs take
            total, mean = get_ops().accumulate(self.total.value, values, weight, count)
            self.total.value = get_ops().asarray(total)
            self._keep_count_on_host(count)
            self._mean = (self.total.value, self.count.value, mean)
            return
        values, sw = _reduce_to_samplewise(values, sample_weight, "mean", self.dtype)
        xp = _namespace(values)
        _add_to(self.total, xp.sum(values))
        if sw is not None:
            host = sw if isinstance(sw, np.ndarray) else None
            added = xp.sum(sw) if host is None else float(host.sum())
        else:
            added = values.shape[0] if values.ndim >= 1 else 1
        if count is not None and not hasattr(added, "shape"):
            self._keep_count_on_host(int(count + added) if self.count.value.dtype.kind in "iu" else count + added)
        else:
            _add_to(self.count, added)  # a device sum of weights: the count lives on the device from now on

    def reset_state(self):
        self.total.assign(0)
        self.count.assign(0)
        self._host_count = (self.count.value, 0)
        self._mean = None  # (total, count, total / count) when an update computed the quotient too

    def _device_result(self):
        cached = self._mean  # still current only if nothing (a subclass, a restore) changed the state since
        if cached is not None and cached[0] is self.total.value and cached[1] is self.count.value:
            return cached[2]
        count = self._known_count()
        return _divide_no_nan(self.total.value, self.count.value if count is None else count)

    def result(self):
        return _to_float(self._device_result())


def device_result(metric):
    """``metric.result()`` left on the device where that needs no host read (the built-in Sum and
    Mean results and those of the variable-state metrics, unless a subclass overrides ``result``):
    the fit loop reads it on the host only when a callback needs the logs. Any other metric's
    ``result()`` as it is."""
    result = type(metric).result
    if result is Mean.result:
        return metric._device_result()
    if result is Sum.result:
        return metric.total.value
    if result is _StateMetric.result:
        return metric._device_result()
    return metric.result()


# Functions MeanMetricWrapper can (de)serialize by name.
_METRIC_FUNCTIONS = {
    "accuracy": accuracy,
    "binary_accuracy": binary_accuracy,
    "categorical_accuracy": categorical_accuracy,
    "sparse_categorical_accuracy": sparse_categorical_accuracy,
    "mean_squared_error": losses.mean_squared_error,
    "mean_absolute_error": losses.mean_absolute_error,
    "mean_absolute_percentage_error": losses.mean_absolute_percentage_error,
    "mean_squared_logarithmic_error": losses.mean_squared_logarithmic_error,
    "categorical_crossentropy": losses.categorical_crossentropy,
    "sparse_categorical_crossentropy": losses.sparse_categorical_crossentropy,
    "binary_crossentropy": losses.binary_crossentropy,
    "huber": losses.huber,
}


def _serialize_fn(fn):
    name = getattr(fn, "__name__", None)
    if name in _METRIC_FUNCTIONS and _METRIC_FUNCTIONS[name] is fn:
        module = losses.KERAS_MODULE if fn.__module__.startswith(losses.__name__) else KERAS_MODULE
        return {"module": module, "class_name": "function", "config": name, "registered_name": name}
    if isinstance(fn, losses.Loss):
        return losses.serialize(fn)
    return {"module": getattr(fn, "__module__", None), "class_name": "function",
            "config": name or repr(fn), "registered_name": object_registration.get_registered_name(fn)}


def _deserialize_fn(fn):
    if callable(fn):
        return fn
    name = fn.get("config") if isinstance(fn, dict) and fn.get("class_name") == "function" else fn
    if isinstance(name, str) and name in _METRIC_FUNCTIONS:
        return _METRIC_FUNCTIONS[name]
    if isinstance(fn, dict):
        return losses.deserialize(fn)
    raise ValueError(f"Invalid value for `fn`: unknown metric function {fn!r}. Expected one of {sorted(_METRIC_FUNCTIONS)}")


class MeanMetricWrapper(Mean):
    """The mean of ``fn(y_true, y_pred, **kwargs)`` over all samples seen.

    Args:
        fn: ``(y_true, y_pred, **kwargs) -> per-sample values``.
        name, dtype: as :class:`Metric`. kwargs: passed on to ``fn``.
    """

    def __init__(self, fn, name=None, dtype=None, **kwargs):
        super().__init__(name=name or unique_name("mean_metric_wrapper"), dtype=dtype)
        self._fn = _deserialize_fn(fn)
        self._fn_kwargs = kwargs

    def update_state(self, y_true, y_pred, sample_weight=None):
        with no_backward():
            values = self._fn(unwrap(y_true), unwrap(y_pred), **self._fn_kwargs)
        return super().update_state(values, sample_weight=sample_weight)

    def get_config(self):
        return {**super().get_config(), "fn": _serialize_fn(self._fn), **self._fn_kwargs}


class Accuracy(MeanMetricWrapper):
    """How often predictions equal labels exactly."""

    def __init__(self, name="accuracy", dtype=None):
        super().__init__(accuracy, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


def _check_threshold(threshold):
    if (
        isinstance(threshold, (bool, np.bool_))
        or not isinstance(threshold, numbers.Real)
        or not 0.0 < float(threshold) < 1.0
    ):
        raise ValueError(
            "Invalid value for `threshold`: expected a value in the interval (0, 1). "
            f"Received: threshold={threshold!r}"
        )
    return float(threshold)


class BinaryAccuracy(MeanMetricWrapper):
    """How often ``y_pred > threshold`` matches binary labels.

    Args:
        name, dtype: as :class:`Metric`. threshold: in (0, 1), default 0.5.
    """

    def __init__(self, name="binary_accuracy", dtype=None, threshold=0.5):
        threshold = _check_threshold(threshold)
        super().__init__(binary_accuracy, name=name, dtype=dtype, threshold=threshold)
        self.threshold = threshold

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "threshold": self.threshold}


class CategoricalAccuracy(MeanMetricWrapper):
    """How often ``argmax(y_pred)`` matches one-hot labels."""

    def __init__(self, name="categorical_accuracy", dtype=None):
        super().__init__(categorical_accuracy, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


class SparseCategoricalAccuracy(MeanMetricWrapper):
    """How often ``argmax(y_pred)`` matches integer labels."""

    def __init__(self, name="sparse_categorical_accuracy", dtype=None):
        super().__init__(sparse_categorical_accuracy, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


_ACCURACY_FNS = {
    "binary": binary_accuracy,
    "sparse": sparse_categorical_accuracy,
    "categorical": categorical_accuracy,
}


class _ResolvingAccuracy(MeanMetricWrapper):
    """``"accuracy"`` without a deciding loss or shapes: picks its kind from the first batch's shapes.

    Keras's compile does the same when it builds its metrics on the first
    batch. ``kind`` is None until then.
    """

    def __init__(self, name="accuracy", dtype=None):
        super().__init__(self._first_batch, name=name, dtype=dtype)
        self.kind = None

    def _first_batch(self, y_true, y_pred):
        self.kind = _kind_from_shapes(np.shape(y_true), np.shape(y_pred)) or "categorical"
        self._fn = _ACCURACY_FNS[self.kind]
        return self._fn(y_true, y_pred)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


# ---------------------------------------------------------------------------
# Metrics that keep Keras's state variables (confusion counts, F-scores, IoU)
# ---------------------------------------------------------------------------
def _host_result(value):
    """A device result as Keras's numbers on the host: a Python float, or a list of floats for a vector."""
    host = value if isinstance(value, (np.ndarray, np.generic)) else get_ops().to_numpy(value)
    host = np.asarray(host, dtype=np.float64)
    return float(host) if host.ndim == 0 else [float(v) for v in host.reshape(-1)]


class _StateMetric(Metric):
    """A metric whose state is Keras's variables (names, shapes and order as Keras 3.15's).

    Subclasses make them with :meth:`_add_state`, add to them with
    :meth:`_accumulate` and compute the result on the device in
    ``_device_result``; ``result()`` copies it to the host (a float or a list
    of floats), and the fit loop takes the device value (:func:`device_result`).
    """

    def _add_state(self, name, shape):
        return self.add_variable(shape, "zeros", dtype=_state_dtype(self.dtype), name=name)

    @staticmethod
    def _accumulate(variable, delta):
        variable.assign(variable.value + delta.astype(variable.value.dtype, copy=False))

    def _device_result(self):
        raise NotImplementedError(f"{type(self).__name__} does not implement _device_result().")

    def result(self):
        return _host_result(self._device_result())


# ---------------------------------------------------------------------------
# Lookup and (de)serialization
# ---------------------------------------------------------------------------
# Keras's other metric families live in modules of their own that build on the names above, hence imported here.
from gpulayers.metrics_confusion import (  # noqa: E402
    FalseNegatives, FalsePositives, Precision, PrecisionAtRecall, Recall, RecallAtPrecision,
    SensitivityAtSpecificity, SpecificityAtSensitivity, TrueNegatives, TruePositives)
from gpulayers.metrics_auc import AUC  # noqa: E402
from gpulayers.metrics_fscore import F1Score, FBetaScore  # noqa: E402
from gpulayers.metrics_iou import IoU, BinaryIoU, MeanIoU, OneHotIoU, OneHotMeanIoU  # noqa: E402
from gpulayers.metrics_losses import (  # noqa: E402
    BinaryCrossentropy, CategoricalCrossentropy, CategoricalHinge, CosineSimilarity, Hinge, KLDivergence, LogCoshError,
    MeanAbsoluteError, MeanAbsolutePercentageError, MeanSquaredError, MeanSquaredLogarithmicError, Poisson,
    RootMeanSquaredError, SparseCategoricalCrossentropy, SquaredHinge, cosine_similarity)
from gpulayers.metrics_regression import R2Score  # noqa: E402
from gpulayers.metrics_top_k import (  # noqa: E402
    SparseTopKCategoricalAccuracy, TopKCategoricalAccuracy, sparse_top_k_categorical_accuracy,
    top_k_categorical_accuracy)

_METRIC_FUNCTIONS.update({"hinge": losses.hinge, "squared_hinge": losses.squared_hinge,
                          "categorical_hinge": losses.categorical_hinge, "kl_divergence": losses.kl_divergence,
                          "poisson": losses.poisson, "log_cosh": losses.log_cosh, "cosine_similarity": cosine_similarity})
_METRIC_FUNCTIONS.update({"top_k_categorical_accuracy": top_k_categorical_accuracy,
                          "sparse_top_k_categorical_accuracy": sparse_top_k_categorical_accuracy})
_CLASSES = (Mean, Sum, MeanMetricWrapper, Accuracy, BinaryAccuracy, CategoricalAccuracy,
            SparseCategoricalAccuracy, MeanSquaredError, MeanAbsoluteError, MeanAbsolutePercentageError,
            MeanSquaredLogarithmicError, TopKCategoricalAccuracy, SparseTopKCategoricalAccuracy, Precision, Recall,
            TruePositives, FalsePositives, TrueNegatives, FalseNegatives, PrecisionAtRecall, RecallAtPrecision,
            SensitivityAtSpecificity, SpecificityAtSensitivity, AUC, F1Score, FBetaScore, IoU, BinaryIoU, MeanIoU,
            OneHotIoU, OneHotMeanIoU, BinaryCrossentropy, CategoricalCrossentropy, SparseCategoricalCrossentropy,
            Hinge, SquaredHinge, CategoricalHinge, KLDivergence, Poisson, CosineSimilarity, LogCoshError,
            RootMeanSquaredError, R2Score)
_BY_NAME = {cls.__name__: cls for cls in _CLASSES}
_BY_NAME.update({to_snake_case(cls.__name__): cls for cls in _CLASSES})
_BY_NAME.update({"mse": MeanSquaredError, "MSE": MeanSquaredError, "mae": MeanAbsoluteError, "MAE": MeanAbsoluteError,
                 "mape": MeanAbsolutePercentageError, "MAPE": MeanAbsolutePercentageError,
                 "msle": MeanSquaredLogarithmicError, "MSLE": MeanSquaredLogarithmicError,
                 "logcosh": LogCoshError})
_ALL_NAMES = sorted(set(_BY_NAME) | {"acc"})


def _kind_from_shapes(y_true_shape, y_pred_shape):
    """Keras's ``is_binary_or_sparse_categorical``: 'binary', 'sparse', 'categorical' or None."""
    if y_true_shape is None or y_pred_shape is None:
        return None
    yt, yp = tuple(y_true_shape), tuple(y_pred_shape)
    if not yp:
        return None
    if yp[-1] == 1:
        return "binary"
    if len(yt) < len(yp) or (yt and yt[-1] == 1 and yp[-1] > 1):
        return "sparse"
    return "categorical"


def _kind_from_loss(loss):
    if loss is None:
        return None
    try:
        obj = losses.to_loss(loss)
    except (TypeError, ValueError):
        return None
    if isinstance(obj, losses.BinaryCrossentropy):
        return "binary"
    if isinstance(obj, losses.SparseCategoricalCrossentropy):
        return "sparse"
    if isinstance(obj, losses.CategoricalCrossentropy):
        return "categorical"
    return None


_ACCURACY_CLASSES = {"binary": BinaryAccuracy, "sparse": SparseCategoricalAccuracy,
                     "categorical": CategoricalAccuracy}


def _required_arguments(cls):
    """The constructor arguments of ``cls`` without a default (``num_classes`` for MeanIoU, ``fn``...)."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    return [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _unknown(identifier):
    text = str(identifier)
    close = difflib.get_close_matches(text, _ALL_NAMES, n=1) if isinstance(identifier, str) else []
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(
        f"Invalid value for `metrics`: unknown metric {identifier!r}.{hint} Expected one of "
        f"{_ALL_NAMES}, a config dict, a Metric or a callable. Received: metrics={identifier!r}"
    )


def serialize(metric):
    """Keras 3's dict for a metric."""
    if metric is None:
        return None
    if not isinstance(metric, Metric):
        return _serialize_fn(metric)
    if isinstance(metric, _ResolvingAccuracy):  # serialized as the accuracy it resolved to
        class_name = _ACCURACY_CLASSES[metric.kind or "categorical"].__name__
    else:
        class_name = type(metric).__name__
    if type(metric) not in _CLASSES and not isinstance(metric, _ResolvingAccuracy):  # a user's metric
        return {"module": type(metric).__module__, "class_name": class_name, "config": metric.get_config(),
                "registered_name": object_registration.get_registered_name(type(metric))}
    return {"module": KERAS_MODULE, "class_name": class_name, "config": metric.get_config(),
            "registered_name": None}


def deserialize(config_):
    """Build a metric from a name or a Keras 3 config dict: the built-ins and the user's metrics the
    program made known (``custom_objects``, ``register_keras_serializable``); nothing is imported."""
    custom = object_registration.deserialize_custom(config_) if isinstance(config_, (str, dict)) else None
    if custom is not None:
        return get(custom)
    if isinstance(config_, str):
        return get(config_)
    if not isinstance(config_, dict):
        raise _unknown(config_)
    name, module, kwargs = config_.get("class_name"), config_.get("module"), config_.get("config", {})
    if module is not None and not str(module).startswith("keras"):
        raise ValueError(
            f"Invalid value for `metrics`: {name!r} from module {module!r} is not a gpulayers built-in "
            f"metric. Received: metrics={config_!r}"
        )
    if name == "function" and isinstance(kwargs, str):
        return get(kwargs)
    if name not in _BY_NAME or not isinstance(kwargs, dict):
        raise _unknown(name)
    try:
        return _BY_NAME[name].from_config(dict(kwargs))
    except TypeError as exc:
        raise ValueError(f"Invalid value for `metrics`: bad config for {name}: {exc}. Received: metrics={config_!r}") from None


def get(identifier, loss=None, y_true_shape=None, y_pred_shape=None):
    """Resolve one entry of ``compile(metrics=[...])`` as Keras 3's compile does.

    Args:
        identifier: a name, a Keras config dict, a Metric instance or
            subclass, or a callable ``(y_true, y_pred) -> per-sample values``
            (wrapped in :class:`MeanMetricWrapper`). None gives None.
        loss: the compiled loss (name, Loss or function); for
            ``"accuracy"``/``"acc"`` it picks binary accuracy for binary
            cross-entropy, sparse categorical for sparse categorical
            cross-entropy and categorical for categorical cross-entropy.
        y_true_shape, y_pred_shape: the shapes Keras decides from when the
            loss does not (``y_pred`` last axis 1 -> binary; ``y_true`` of
            lower rank, or last axis 1 against more classes -> sparse; else
            categorical). Without them the metric decides on its first batch.

    A string identifier names the metric as written (``"acc"`` is logged as
    ``acc``, ``"mae"`` as ``mae``), as Keras's compile does.
    """
    if identifier is None:
        return None
    if isinstance(identifier, str):
        if identifier.lower() in ("accuracy", "acc"):
            kind = _kind_from_loss(loss) or _kind_from_shapes(y_true_shape, y_pred_shape)
            if kind is None:
                return _ResolvingAccuracy(name=identifier)
            return _ACCURACY_CLASSES[kind](name=identifier)
        if identifier not in _BY_NAME:
            raise _unknown(identifier)
        cls = _BY_NAME[identifier]
        required = _required_arguments(cls)
        if cls in (Mean, Sum, MeanMetricWrapper) or required:
            needs = f" ({', '.join(required)})" if required else ""
            raise ValueError(
                f"Invalid value for `metrics`: {identifier!r} needs arguments{needs} and cannot be given by name; "
                f"pass an instance. Received: metrics={identifier!r}"
            )
        return cls(name=identifier)
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, type):
        if issubclass(identifier, Metric):
            return identifier()
        raise _unknown(identifier)
    if callable(identifier):
        name = identifier.name if isinstance(identifier, losses.Loss) else to_snake_case(
            getattr(identifier, "__name__", type(identifier).__name__))
        return MeanMetricWrapper(identifier, name=name)
    raise _unknown(identifier)
