"""The activations of the nn family (``relu`` ... ``softmax``, ``log_softmax``), differentiable on the tape.

Each keeps its input's float dtype (integer and bool inputs compute in
``floatx()``, except ``relu`` and ``relu6``, which keep integers, as Keras);
Python-number constants never promote float32 to float64. Gradient
conventions at kinks: ``relu``, ``relu6`` and ``hard_sigmoid`` pass nothing at
their corners, ``leaky_relu`` passes 1 where ``x >= negative_slope * x``,
``elu``/``selu`` take the exponential side at 0.

``softmax`` records an op named ``"softmax"`` with ``attrs={"axis": ...}``
(the axis as a non-negative int, or a sorted tuple of several) and
``sigmoid`` one named ``"sigmoid"``: the probability cross-entropies
recognise them and fuse (:mod:`gpulayers.ops.crossentropy`).
"""

import math
import warnings

from backends import get_ops
from gpulayers.autodiff import record
from gpulayers.ops import numpy as numpy_ops
from gpulayers.ops.core import check_real, convert_to_tensor, is_int, normalize_axes, normalize_axis, xp
from gpulayers.ops.elementwise import _float, _unary
from gpulayers.ops.math import erf_array

__all__ = [
    "celu", "elu", "gelu", "glu", "hard_shrink", "hard_sigmoid", "hard_silu", "hard_swish", "hard_tanh",
    "leaky_relu", "log_sigmoid", "log_softmax", "relu", "relu6", "selu", "sigmoid", "silu", "soft_shrink",
    "softmax", "softplus", "softsign", "sparse_plus", "sparse_sigmoid", "sparsemax", "squareplus", "swish",
    "tanh_shrink", "threshold",
]


SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_C = 0.044715


def _sigmoid_array(a):
    """``1 / (1 + exp(-a))`` through ``exp(-|a|)``: no lane overflows."""
    e = xp().exp(-xp().abs(a))
    return xp().where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(a.dtype, copy=False)


def relu(x):
    """``max(x, 0)`` through the backend's fast path; gradient ``(x > 0)``."""
    x = convert_to_tensor(x)
    a = x.data
    ops = get_ops()
    y = ops.relu(a)
    # asarray, not ascontiguousarray: that one makes a 0-d gradient 1-d
    return record("relu", y, (x,), lambda g, needs: (ops.relu_backward(a, xp().asarray(g, order="C")),))


def relu6(x):
    """``min(max(x, 0), 6)``; gradient 1 where ``0 < x < 6``."""
    x = convert_to_tensor(x)
    a = x.data
    y = xp().minimum(xp().maximum(a, 0), 6).astype(a.dtype, copy=False)
    return record("relu6", y, (x,), lambda g, needs: (g * ((a > 0) & (a < 6)),))


def sigmoid(x):
    """Logistic ``1 / (1 + exp(-x))`` (op name ``"sigmoid"``); gradient ``y * (1 - y)``."""
    return _unary("sigmoid", _float(x), _sigmoid_array, lambda g, a, y: g * (y * (1.0 - y)))


def softplus(x):
    """``log(1 + exp(x))`` as ``logaddexp(x, 0)``; gradient ``sigmoid(x)``."""
    return _unary(
        "softplus", _float(x), lambda a: xp().logaddexp(a, xp().zeros((), dtype=a.dtype)),
        lambda g, a, y: g * _sigmoid_array(a),
    )


def softsign(x):
    """``x / (1 + |x|)``; gradient ``1 / (1 + |x|)**2``."""

    def grad(g, a, y):
        d = 1.0 + xp().abs(a)
        return g / (d * d)

    return _unary("softsign", _float(x), lambda a: a / (1.0 + xp().abs(a)), grad)


def silu(x):
    """Swish / SiLU ``x * sigmoid(x)``; gradient ``s * (1 + x * (1 - s))``."""

    def grad(g, a, y):
        s = _sigmoid_array(a)
        return g * (s * (1.0 + a * (1.0 - s)))

    return _unary("silu", _float(x), lambda a: a * _sigmoid_array(a), grad)


swish = silu


def log_sigmoid(x):
    """``log(sigmoid(x)) = -softplus(-x)``; gradient ``sigmoid(-x)``."""
    return _unary(
        "log_sigmoid", _float(x), lambda a: -xp().logaddexp(-a, xp().zeros((), dtype=a.dtype)),
        lambda g, a, y: g * _sigmoid_array(-a),
    )


def leaky_relu(x, negative_slope=0.2):
    """``max(x, negative_slope * x)`` (Keras's formula); gradient 1 where ``x`` wins (ties too), else the slope."""
    slope = check_real(negative_slope, "negative_slope")
    return _unary(
        "leaky_relu", _float(x), lambda a: xp().maximum(a, slope * a),
        lambda g, a, y: xp().where(a >= slope * a, g, slope * g),
    )


def hard_sigmoid(x):
    """``clip(x / 6 + 0.5, 0, 1)``; gradient ``1/6`` where the clip is inactive."""

    def grad(g, a, y):
        u = a / 6.0 + 0.5
        return g * ((u > 0) & (u < 1)) / 6.0

    # Same operation order as Keras's NumPy backend, for identical rounding.
    return _unary("hard_sigmoid", _float(x), lambda a: xp().clip(a / 6.0 + 0.5, 0.0, 1.0), grad)


def hard_silu(x):
    """Hard swish ``x * hard_sigmoid(x)``."""

    def grad(g, a, y):
        u = a / 6.0 + 0.5
        return g * (xp().clip(u, 0.0, 1.0) + a * ((u > 0) & (u < 1)) / 6.0)

    return _unary("hard_silu", _float(x), lambda a: a * xp().clip(a / 6.0 + 0.5, 0.0, 1.0), grad)


hard_swish = hard_silu


def _elu_array(a, alpha):
    # minimum() keeps expm1 from overflowing in the discarded lanes.
    return xp().where(a >= 0, a, alpha * xp().expm1(xp().minimum(a, 0.0))).astype(a.dtype, copy=False)


def _elu_grad(a, alpha):
    return xp().where(a > 0, 1.0, alpha * xp().exp(xp().minimum(a, 0.0))).astype(a.dtype, copy=False)


def elu(x, alpha=1.0):
    """``x`` for ``x >= 0``, else ``alpha * (exp(x) - 1)``; gradient ``alpha * exp(x)`` for ``x <= 0``."""
    alpha = check_real(alpha, "alpha")
    return _unary("elu", _float(x), lambda a: _elu_array(a, alpha), lambda g, a, y: g * _elu_grad(a, alpha))


def selu(x):
    """``scale * elu(x, alpha)`` with Keras's constants."""
    return _unary(
        "selu", _float(x), lambda a: (SELU_SCALE * _elu_array(a, SELU_ALPHA)).astype(a.dtype, copy=False),
        lambda g, a, y: g * (SELU_SCALE * _elu_grad(a, SELU_ALPHA)),
    )


def celu(x, alpha=1.0):
    """``max(x, 0) + alpha * expm1(min(x, 0) / alpha)``; gradient ``exp(min(x, 0) / alpha)`` below 0."""
    alpha = check_real(alpha, "alpha")
    if alpha == 0:
        raise ValueError(f"Invalid value for `alpha`: celu divides by it, so it cannot be 0. Received: alpha={alpha!r}")
    return _unary(
        "celu", _float(x),
        lambda a: xp().maximum(a, 0.0) + alpha * xp().expm1(xp().minimum(a, 0.0) / alpha),
        lambda g, a, y: g * xp().where(a > 0, 1.0, xp().exp(xp().minimum(a, 0.0) / alpha)).astype(a.dtype, copy=False),
    )


def gelu(x, approximate=True):
    """Gaussian error linear unit (Keras's ops default: the tanh approximation).

    Exact: ``x * (1 + erf(x / sqrt(2))) / 2``; approximate:
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``. Exact derivatives of each.
    """
    x = _float(x)
    if approximate:
        def compute(a):
            return 0.5 * a * (1.0 + xp().tanh(_SQRT_2_OVER_PI * (a + _GELU_C * a**3)))

        def grad(g, a, y):
            t = xp().tanh(_SQRT_2_OVER_PI * (a + _GELU_C * a**3))
            du = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_C * a * a)
            return g * (0.5 * (1.0 + t) + 0.5 * a * (1.0 - t * t) * du)

        return _unary("gelu", x, compute, grad)

    def grad_exact(g, a, y):
        cdf = 0.5 * (1.0 + erf_array(a * _INV_SQRT_2))
        pdf = _INV_SQRT_2PI * xp().exp(-0.5 * a * a)
        return g * (cdf + a * pdf)

    return _unary("gelu", x, lambda a: a * (erf_array(a * _INV_SQRT_2) + 1.0) / 2.0, grad_exact)


def glu(x, axis=-1):
    """Gated linear unit: ``a * sigmoid(b)`` with ``a, b`` the two halves of ``x`` along ``axis``."""
    x = _float(x)
    ax = normalize_axis(axis, x.ndim)
    if x.shape[ax] % 2:
        raise ValueError(f"Invalid value for `x`: glu needs an even size along axis {axis}. Received: x.shape={x.shape}")
    first, second = numpy_ops.split(x, 2, axis=ax)
    return numpy_ops.multiply(first, sigmoid(second))


# ---------------------------------------------------------------- piecewise and shrinking activations


def _scalar(value, a):
    """A Python number as a 0-d array of ``a``'s dtype, so float32 stays float32."""
    return xp().asarray(value, dtype=a.dtype)


def hard_tanh(x):
    """``clip(x, -1, 1)``; gradient 1 strictly inside."""
    return _unary(
        "hard_tanh", _float(x), lambda a: xp().clip(a, _scalar(-1.0, a), _scalar(1.0, a)),
        lambda g, a, y: g * ((a > -1) & (a < 1)),
    )


def hard_shrink(x, threshold=0.5):
    """``x`` where ``|x| > threshold``, else 0; gradient 1 there."""
    t = check_real(threshold, "threshold")
    return _unary(
        "hard_shrink", _float(x), lambda a: xp().where(xp().abs(a) > t, a, _scalar(0.0, a)),
        lambda g, a, y: g * (xp().abs(a) > t),
    )


def soft_shrink(x, threshold=0.5):
    """``x - threshold`` above ``threshold``, ``x + threshold`` below ``-threshold``, else 0."""
    t = check_real(threshold, "threshold")

    def compute(a):
        zero = _scalar(0.0, a)
        return xp().where(a > t, a - _scalar(t, a), xp().where(a < -t, a + _scalar(t, a), zero))

    return _unary("soft_shrink", _float(x), compute, lambda g, a, y: g * ((a > t) | (a < -t)))


def threshold(x, threshold, default_value):
    """``x`` where ``x > threshold``, else ``default_value``; gradient 1 where ``x`` passes."""
    t = check_real(threshold, "threshold")
    fill = check_real(default_value, "default_value")
    return _unary(
        "threshold", _float(x), lambda a: xp().where(a > t, a, _scalar(fill, a)), lambda g, a, y: g * (a > t)
    )


def sparse_plus(x):
    """0 for ``x <= -1``, ``(x + 1)**2 / 4`` for ``-1 < x < 1``, ``x`` above; gradient 0, ``(x + 1) / 2``, 1."""

    def compute(a):
        middle = _scalar(0.25, a) * (a + _scalar(1.0, a)) ** 2
        return xp().where(a <= -1, _scalar(0.0, a), xp().where(a < 1, middle, a))

    def grad(g, a, y):
        return g * xp().where(a <= -1, _scalar(0.0, a), xp().where(a < 1, (a + _scalar(1.0, a)) * _scalar(0.5, a),
                                                                     _scalar(1.0, a)))

    return _unary("sparse_plus", _float(x), compute, grad)


def sparse_sigmoid(x):
    """0 for ``x <= -1``, 1 for ``x >= 1``, ``(x + 1) / 2`` between; gradient 1/2 strictly between."""

    def compute(a):
        middle = _scalar(0.5, a) * (a + _scalar(1.0, a))
        return xp().where(a <= -1, _scalar(0.0, a), xp().where(a >= 1, _scalar(1.0, a), middle))

    return _unary("sparse_sigmoid", _float(x), compute, lambda g, a, y: g * ((a > -1) & (a < 1)) * _scalar(0.5, a))


def squareplus(x, b=4):
    """``(x + sqrt(x**2 + b)) / 2``, a smooth ReLU; gradient ``(1 + x / sqrt(x**2 + b)) / 2``."""
    b = check_real(b, "b")
    if b < 0:
        raise ValueError(f"Invalid value for `b`: squareplus takes the square root of x**2 + b, so b must be >= 0. "
                         f"Received: b={b!r}")

    def grad(g, a, y):
        root = 2.0 * y - a  # sqrt(x**2 + b), recovered from the output
        with_root = xp().where(root > 0, a / xp().where(root > 0, root, _scalar(1.0, a)), xp().sign(a))
        return g * (_scalar(1.0, a) + with_root) * _scalar(0.5, a)

    return _unary("squareplus", _float(x), lambda a: (a + xp().sqrt(a * a + _scalar(b, a))) / _scalar(2.0, a), grad)


def tanh_shrink(x):
    """``x - tanh(x)``; gradient ``tanh(x)**2``."""

    def grad(g, a, y):
        t = xp().tanh(a)
        return g * (t * t)

    return _unary("tanh_shrink", _float(x), lambda a: a - xp().tanh(a), grad)


def sparsemax(x, axis=-1):
    """The Euclidean projection of ``x`` onto the simplex along ``axis``: ``max(x - tau, 0)``.

    ``tau`` makes each slice sum to 1 (Martins & Astudillo, 2016). The
    Jacobian is ``diag(s) - s s^T / k`` on the support ``s`` (``k`` entries),
    so the input gradient is ``s * (g - sum(s * g) / k)``.
    """
    x = _float(x)
    if not x.ndim:
        raise ValueError("Invalid value for `x`: sparsemax needs a tensor of rank >= 1. Received: a 0-d tensor")
    ax = normalize_axis(axis, x.ndim)
    a = x.data
    np_ = xp()
    if a.size == 0:
        return record("sparsemax", np_.empty_like(a), (x,), lambda g, needs: (np_.zeros_like(a),))
    descending = -np_.sort(-a, axis=ax)
    cumulative = np_.cumsum(descending, axis=ax)
    rank_shape = [1] * a.ndim
    rank_shape[ax] = -1
    ranks = np_.arange(1, a.shape[ax] + 1, dtype=a.dtype).reshape(rank_shape)
    # The support is a prefix of the sorted slice (never empty: the largest
    # entry always passes); tau comes from the cumulative sum at its end.
    k = (descending - (cumulative - 1) / ranks > 0).sum(axis=ax, keepdims=True)
    tau = (np_.take_along_axis(cumulative, k - 1, axis=ax) - 1) / k.astype(a.dtype)
    y = np_.maximum(a - tau, 0).astype(a.dtype, copy=False)

    def backward(g, needs):
        s = (y > 0).astype(a.dtype)
        count = np_.maximum(s.sum(axis=ax, keepdims=True), 1)
        return (s * (g - (s * g).sum(axis=ax, keepdims=True) / count),)

    return record("sparsemax", y, (x,), backward)


def _softmax_axes(x, axis):
    if axis is not None and is_int(axis) and -x.ndim <= axis < x.ndim and x.shape[axis] == 1:
        warnings.warn(
            f"You are using a softmax over axis {axis} of a tensor of shape {x.shape}. This axis has size 1. "
            "The softmax operation will always return the value 1, which is likely not what you intended. "
            "Did you mean to use a sigmoid instead?",
            UserWarning,
            stacklevel=3,
        )
    if not x.ndim:
        raise ValueError("Invalid value for `x`: softmax needs a tensor of rank >= 1. Received: a 0-d tensor")
    return normalize_axes(axis, x.ndim)


def softmax(x, axis=-1):
    """``exp(x) / sum(exp(x))`` along ``axis`` (an int, a tuple, or None for all), shifted by the max.

    Gradient ``y * (g - sum(g * y, axis))``. Recorded as op ``"softmax"`` with
    ``attrs={"axis": ...}`` so a cross-entropy can fuse with it.
    """
    x = _float(x)
    axes = _softmax_axes(x, axis)
    a = x.data
    if a.size == 0:  # nothing to normalize (and no max of an empty axis)
        y = xp().empty_like(a)
    elif len(axes) == 1:
        y = get_ops().softmax(a, axes[0])  # one row kernel on the GPU
    else:
        e = xp().exp(a - a.max(axis=axes, keepdims=True))
        y = e / e.sum(axis=axes, keepdims=True)
    return softmax_node(x, y, axes)


def softmax_node(x, y, axes):
    """Record ``y``, the softmax of the float tensor ``x`` over the tuple ``axes`` computed by the caller
    (a layer that fused it with its bias), as :func:`softmax` records it."""

    def backward(g, needs):
        return (y * (g - (g * y).sum(axis=axes, keepdims=True)),)

    return record("softmax", y, (x,), backward, attrs={"axis": axes[0] if len(axes) == 1 else axes})


def _log_softmax_array(a, axes):
    shifted = a - a.max(axis=axes, keepdims=True)
    return shifted - xp().log(xp().exp(shifted).sum(axis=axes, keepdims=True))


def log_softmax(x, axis=-1):
    """``x - max(x) - log(sum(exp(x - max(x))))`` along ``axis``; gradient ``g - softmax(x) * sum(g)``."""
    x = _float(x)
    if not x.ndim:
        raise ValueError("Invalid value for `x`: log_softmax needs a tensor of rank >= 1. Received: a 0-d tensor")
    axes = normalize_axes(axis, x.ndim)
    a = x.data
    y = xp().empty_like(a) if a.size == 0 else _log_softmax_array(a, axes)
    return record(
        "log_softmax", y, (x,), lambda g, needs: (g - xp().exp(y) * g.sum(axis=axes, keepdims=True),)
    )
