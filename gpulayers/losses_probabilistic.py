"""Keras 3's probabilistic losses beyond the cross-entropies, differentiable on the tape.

``kl_divergence``, ``poisson``, ``categorical_focal_crossentropy``,
``binary_focal_crossentropy`` and ``categorical_generalized_cross_entropy``
and their classes, with Keras 3.15's names,
defaults and formulas (``keras/src/losses/losses.py``), ``eps = config.epsilon()``:

* KL divergence: ``sum(t * log(t / p), axis=-1)`` with ``t`` and ``p``
  clipped to ``[eps, 1]``;
* Poisson: ``mean(p - t * log(p + eps), axis=-1)``;
* categorical focal: ``sum(alpha * (1 - q)**gamma * -t * log(q), axis)`` with
  ``q = p / sum(p, axis)`` clipped to ``[eps, 1 - eps]`` (``p = softmax(y_pred)``
  with ``from_logits``); ``alpha`` a number or one weight per class;
  smoothing ``t * (1 - s) + s / num_classes``;
* binary focal: ``mean(w * (1 - p_t)**gamma * bce(t, p), axis)`` with
  ``p_t = t * p + (1 - t) * (1 - p)`` (``p = sigmoid(y_pred)`` with
  ``from_logits``), ``bce`` the binary cross-entropy of ``p`` clipped to
  ``[eps, 1 - eps]``, ``w = t * alpha + (1 - t) * (1 - alpha)`` with
  ``apply_class_balancing`` (else 1); smoothing ``t * (1 - s) + 0.5 * s``;
* generalized: ``(1 - p**q) / q`` with ``p`` the probability of the integer
  label (unclipped, as Keras's).

Inputs, dtypes and reductions follow :mod:`gpulayers.losses`.

Example:
    >>> y_true = np.array([[0., 1., 0.], [0., 0., 1.]])
    >>> y_pred = np.array([[0.05, 0.95, 0.], [0.1, 0.8, 0.1]])
    >>> round(float(CategoricalFocalCrossentropy()(y_true, y_pred)), 4)
    0.2332
"""

import warnings

import numpy as np

from gpulayers import config, ops
from gpulayers.argument_validation import check_real, standardize_bool
from gpulayers.autodiff import unwrap
from gpulayers.losses import Loss, _axis_index, _check_axis, _check_smoothing, _pair, _prediction

__all__ = [
    "BinaryFocalCrossentropy",
    "CategoricalFocalCrossentropy",
    "CategoricalGeneralizedCrossEntropy",
    "KLDivergence",
    "Poisson",
    "binary_focal_crossentropy",
    "categorical_focal_crossentropy",
    "categorical_generalized_cross_entropy",
    "kl_divergence",
    "poisson",
]


def _check_gamma(gamma):
    return check_real(gamma, "gamma", minimum=0)


def _check_class_weights(alpha):
    """A number, or a list/tuple (or 1-d array) of numbers, one per class; kept in the form given."""
    if isinstance(alpha, np.ndarray) and alpha.ndim == 1:
        alpha = alpha.tolist()
    if isinstance(alpha, (list, tuple)):
        if not alpha:
            raise ValueError("Invalid value for `alpha`: expected a float or one float per class. Received: alpha=[]")
        return type(alpha)(check_real(a, "alpha") for a in alpha)
    return check_real(alpha, "alpha")


def _kl(y_true, y_pred, dtype=None):
    t, p = _pair("kl_divergence", y_true, y_pred, dtype)
    eps = config.epsilon()  # a Python float: taken in y_pred's dtype, exact in float64
    t = ops.clip(t, eps, 1.0)
    p = ops.clip(p, eps, 1.0)
    return ops.sum(t * ops.log(t / p), axis=-1)


def _poisson(y_true, y_pred, dtype=None):
    t, p = _pair("poisson", y_true, y_pred, dtype)
    return ops.mean(p - t * ops.log(p + config.epsilon()), axis=-1)


def _categorical_focal(y_true, y_pred, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0, axis=-1,
                       dtype=None):
    fn = "categorical_focal_crossentropy"
    axis, label_smoothing = _check_axis(axis), _check_smoothing(label_smoothing)
    alpha, gamma = _check_class_weights(alpha), _check_gamma(gamma)
    from_logits = standardize_bool(from_logits, "from_logits")
    t, p = _pair(fn, y_true, y_pred, dtype)
    ax = _axis_index(axis, p.ndim, p.shape)
    classes = p.shape[ax]
    if p.shape[-1] == 1:
        warnings.warn(
            f"In loss {fn}, expected y_pred.shape to be (batch_size, num_classes) with num_classes > 1. "
            f"Received: y_pred.shape={tuple(p.shape)}. Consider using 'binary_crossentropy' if you only have "
            "2 classes.",
            SyntaxWarning,
            stacklevel=3,
        )
    if isinstance(alpha, (list, tuple)):
        if len(alpha) != classes:
            raise ValueError(
                f"Invalid value for `alpha`: expected one weight per class ({classes} along axis {axis}). "
                f"Received: alpha={alpha!r}"
            )
        shape = [1] * p.ndim
        shape[ax] = classes
        alpha = ops.convert_to_tensor(np.asarray(alpha, dtype=p.dtype).reshape(shape))
    if label_smoothing:
        t = t * (1.0 - label_smoothing) + label_smoothing / classes
    if from_logits:
        p = ops.softmax(p, axis=ax)
    eps = config.epsilon()
    q = ops.clip(p / ops.sum(p, axis=ax, keepdims=True), eps, 1.0 - eps)
    values = -t * ops.log(q)
    if gamma:  # (1 - q)**0 is 1: left out, so q = 1 gives no 0 * inf in the gradient
        values = ops.power(1.0 - q, gamma) * values
    return ops.sum(values * alpha, axis=ax)


def _binary_focal(y_true, y_pred, apply_class_balancing=False, alpha=0.25, gamma=2.0, from_logits=False,
                  label_smoothing=0.0, axis=-1, dtype=None):
    axis, label_smoothing = _check_axis(axis), _check_smoothing(label_smoothing)
    alpha, gamma = check_real(alpha, "alpha"), _check_gamma(gamma)
    from_logits = standardize_bool(from_logits, "from_logits")
    apply_class_balancing = standardize_bool(apply_class_balancing, "apply_class_balancing")
    t, p = _pair("binary_focal_crossentropy", y_true, y_pred, dtype)
    ax = _axis_index(axis, p.ndim, p.shape)
    if label_smoothing:
        t = t * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        p = ops.sigmoid(p)  # the cross-entropy then works on the logits (fused, stable gradient)
    values = ops.binary_crossentropy(t, p, from_logits=False)
    if gamma:
        p_t = t * p + (1.0 - t) * (1.0 - p)
        values = ops.power(1.0 - p_t, gamma) * values
    if apply_class_balancing:
        values = (t * alpha + (1.0 - t) * (1.0 - alpha)) * values
    return ops.mean(values, axis=ax)


def kl_divergence(y_true, y_pred):
    """``sum(t * log(t / p), axis=-1)`` with ``t`` and ``p`` clipped to ``[epsilon, 1]``."""
    return _kl(y_true, y_pred)


def poisson(y_true, y_pred):
    """``mean(y_pred - y_true * log(y_pred + epsilon), axis=-1)``."""
    return _poisson(y_true, y_pred)


def categorical_focal_crossentropy(y_true, y_pred, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0,
                                   axis=-1):
    """Per-sample focal cross-entropy with one-hot (or soft) labels of y_pred's shape (see the module)."""
    return _categorical_focal(y_true, y_pred, alpha, gamma, from_logits, label_smoothing, axis)


def binary_focal_crossentropy(y_true, y_pred, apply_class_balancing=False, alpha=0.25, gamma=2.0,
                              from_logits=False, label_smoothing=0.0, axis=-1):
    """Binary focal cross-entropy averaged over ``axis`` (see the module); ``gamma=0`` is binary
    cross-entropy."""
    return _binary_focal(y_true, y_pred, apply_class_balancing, alpha, gamma, from_logits, label_smoothing, axis)


class KLDivergence(Loss):
    """Kullback-Leibler divergence, ``sum(t * log(t / p), axis=-1)`` per sample, ``t`` and ``p`` clipped to
    ``[epsilon, 1]``. reduction, name, dtype: as :class:`~gpulayers.losses.Loss`."""

    def __init__(self, reduction="sum_over_batch_size", name="kl_divergence", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return _kl(y_true, y_pred, self.dtype)

    def _values(self, y_true, y_pred):
        return self.call(y_true, y_pred), None


class Poisson(Loss):
    """Poisson loss, ``mean(y_pred - y_true * log(y_pred + epsilon), axis=-1)`` per sample.
    reduction, name, dtype: as :class:`~gpulayers.losses.Loss`."""

    def __init__(self, reduction="sum_over_batch_size", name="poisson", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return _poisson(y_true, y_pred, self.dtype)

    def _values(self, y_true, y_pred):
        return self.call(y_true, y_pred), None


class CategoricalFocalCrossentropy(Loss):
    """Alpha-balanced focal cross-entropy with one-hot (or soft) labels (Lin et al., 2018).

    Args:
        alpha: a weight for every class (default 0.25), or a list with one
            weight per class (along ``axis``).
        gamma: the focusing parameter, >= 0 (default 2.0); 0 is weighted
            categorical cross-entropy.
        from_logits: whether ``y_pred`` holds logits.
        label_smoothing: in [0, 1]; targets become ``y * (1 - s) + s / num_classes``.
        axis: the class axis. reduction, name, dtype: as :class:`~gpulayers.losses.Loss`.
    """

    def __init__(self, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0, axis=-1,
                 reduction="sum_over_batch_size", name="categorical_focal_crossentropy", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.alpha = _check_class_weights(alpha)
        self.gamma = _check_gamma(gamma)
        self.from_logits = standardize_bool(from_logits, "from_logits")
        self.label_smoothing = _check_smoothing(label_smoothing)
        self.axis = _check_axis(axis)

    def call(self, y_true, y_pred):
        return _categorical_focal(y_true, y_pred, self.alpha, self.gamma, self.from_logits, self.label_smoothing,
                                  self.axis, self.dtype)

    def _values(self, y_true, y_pred):
        return self.call(y_true, y_pred), None

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits, "label_smoothing": self.label_smoothing,
                "axis": self.axis, "alpha": self.alpha, "gamma": self.gamma}


class BinaryFocalCrossentropy(Loss):
    """Binary focal cross-entropy (Lin et al., 2018), averaged over ``axis``.

    Args:
        apply_class_balancing: weight class 1 by ``alpha`` and class 0 by ``1 - alpha``.
        alpha: the balancing weight of class 1 (default 0.25).
        gamma: the focusing parameter, >= 0 (default 2.0); 0 is binary cross-entropy.
        from_logits: whether ``y_pred`` holds logits.
        label_smoothing: in [0, 1]; targets become ``y * (1 - s) + 0.5 * s``.
        axis: the axis averaged over. reduction, name, dtype: as :class:`~gpulayers.losses.Loss`.
    """

    def __init__(self, apply_class_balancing=False, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0,
                 axis=-1, reduction="sum_over_batch_size", name="binary_focal_crossentropy", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.apply_class_balancing = standardize_bool(apply_class_balancing, "apply_class_balancing")
        self.alpha = check_real(alpha, "alpha")
        self.gamma = _check_gamma(gamma)
        self.from_logits = standardize_bool(from_logits, "from_logits")
        self.label_smoothing = _check_smoothing(label_smoothing)
        self.axis = _check_axis(axis)

    def call(self, y_true, y_pred):
        return _binary_focal(y_true, y_pred, self.apply_class_balancing, self.alpha, self.gamma, self.from_logits,
                             self.label_smoothing, self.axis, self.dtype)

    def _values(self, y_true, y_pred):
        return self.call(y_true, y_pred), None

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits, "label_smoothing": self.label_smoothing,
                "axis": self.axis, "apply_class_balancing": self.apply_class_balancing, "alpha": self.alpha,
                "gamma": self.gamma}


def _check_q(q):
    return check_real(q, "q", minimum=0.0, maximum=1.0, min_open=True, max_open=True)


def categorical_generalized_cross_entropy(y_true, y_pred, q):
    """Per-sample generalized cross-entropy ``(1 - p**q) / q``, ``p`` the predicted probability of the
    integer label (Zhang & Sabuncu, 2018): cross-entropy as ``q`` -> 0, MAE-like as ``q`` -> 1."""
    return _generalized(y_true, y_pred, _check_q(q))


def _generalized(y_true, y_pred, q, dtype=None):
    p = _prediction(y_pred, dtype)
    labels = ops.convert_to_tensor(unwrap(y_true)).data
    if labels.ndim == p.ndim and labels.shape[-1] == 1:
        labels = labels.reshape(labels.shape[:-1])
    if p.ndim < 1 or tuple(labels.shape) != tuple(p.shape[:-1]):
        raise ValueError(
            "In categorical_generalized_cross_entropy, `y_true` must hold integer labels of y_pred's shape "
            f"without its last axis. Received: y_true.shape={tuple(np.shape(unwrap(y_true)))}, "
            f"y_pred.shape={tuple(p.shape)}"
        )
    # Keras's one-hot of the labels (an out-of-range label selects nothing: p = 0, loss 1 / q)
    one_hot = ops.one_hot(labels.astype(np.int64), p.shape[-1], dtype=p.dtype)
    prob = ops.sum(p * one_hot, axis=-1)
    return (1.0 - ops.power(prob, q)) / q


class CategoricalGeneralizedCrossEntropy(Loss):
    """Generalized cross-entropy of integer labels and class probabilities, ``(1 - p**q) / q`` per sample.

    Args:
        q: in (0, 1) (default 0.5): near 0 it is cross-entropy, near 1 MAE,
            more robust to noisy labels. reduction, name, dtype: as
            :class:`~gpulayers.losses.Loss`.
    """

    def __init__(self, q=0.5, reduction="sum_over_batch_size", name="categorical_generalized_cross_entropy",
                 dtype=None):
        self.q = _check_q(q)
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return _generalized(y_true, y_pred, self.q, self.dtype)

    def _values(self, y_true, y_pred):
        return self.call(y_true, y_pred), None

    def get_config(self):
        return {**super().get_config(), "q": self.q}
