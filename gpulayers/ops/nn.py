"""Neural-network ops (``keras.ops`` nn namespace), each differentiable on the tape.

Activations keep their input's float dtype (integer and bool inputs compute
in ``floatx()``, except ``relu`` and ``relu6`` which keep integers, as Keras);
Python-number constants never promote float32 to float64. Gradient
conventions at kinks: ``relu``, ``relu6`` and ``hard_sigmoid`` pass nothing at
their corners, ``leaky_relu`` passes 1 where ``x >= negative_slope * x``,
``elu``/``selu`` take the exponential side at 0.

``softmax`` records an op named ``"softmax"`` with ``attrs={"axis": ...}``
(the axis as a non-negative int, or a sorted tuple of several) and
``sigmoid`` one named ``"sigmoid"``: the probability cross-entropies
recognise them and fuse (see :func:`categorical_crossentropy`).

Convolution and pooling take 1-D inputs ``(N, L, C)`` and 2-D inputs
``(N, H, W, C)`` (or channels first), with kernels in Keras's layout
``(kh, kw, in, out)``; 1-D runs through the 2-D backend path with a unit axis.
"""

import builtins
import math
import numbers
import warnings

import numpy as np

from backends import get_ops
from gpulayers import config
from gpulayers.autodiff import Tensor, record
from gpulayers.ops import numpy as numpy_ops
from gpulayers.ops.core import cast, convert_to_tensor, normalize_axes, standardize_dtype, xp
from gpulayers.ops.math import _vector_norm, erf_array
from gpulayers.ops.elementwise import _float, _unary

__all__ = [
    "average_pool", "batch_normalization", "binary_crossentropy", "categorical_crossentropy", "celu", "conv",
    "depthwise_conv", "elu", "gelu", "glu", "hard_sigmoid", "hard_silu", "hard_swish", "leaky_relu", "log_sigmoid",
    "log_softmax", "max_pool", "moments", "normalize", "one_hot", "relu", "relu6", "selu", "sigmoid", "silu",
    "softmax", "softplus", "softsign", "sparse_categorical_crossentropy", "swish",
]

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_C = 0.044715


def _is_int(value):
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_real(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.number)):
        raise TypeError(f"Invalid type for `{name}`: expected a number. Received: {name}={value!r}")
    return float(value)


def _axis(axis, ndim, name="axis"):
    """One axis as a non-negative int."""
    if not _is_int(axis):
        raise ValueError(f"Invalid value for `{name}`: expected an int. Received: {name}={axis!r}")
    if not -ndim <= axis < builtins.max(ndim, 1):
        raise ValueError(f"Invalid value for `{name}`: axis {axis} is out of range for a tensor of rank {ndim}.")
    return int(axis) % builtins.max(ndim, 1)


# ---------------------------------------------------------------- activations


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
    slope = _check_real(negative_slope, "negative_slope")
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
    alpha = _check_real(alpha, "alpha")
    return _unary("elu", _float(x), lambda a: _elu_array(a, alpha), lambda g, a, y: g * _elu_grad(a, alpha))


def selu(x):
    """``scale * elu(x, alpha)`` with Keras's constants."""
    return _unary(
        "selu", _float(x), lambda a: (SELU_SCALE * _elu_array(a, SELU_ALPHA)).astype(a.dtype, copy=False),
        lambda g, a, y: g * (SELU_SCALE * _elu_grad(a, SELU_ALPHA)),
    )


def celu(x, alpha=1.0):
    """``max(x, 0) + alpha * expm1(min(x, 0) / alpha)``; gradient ``exp(min(x, 0) / alpha)`` below 0."""
    alpha = _check_real(alpha, "alpha")
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
    ax = _axis(axis, x.ndim)
    if x.shape[ax] % 2:
        raise ValueError(f"Invalid value for `x`: glu needs an even size along axis {axis}. Received: x.shape={x.shape}")
    first, second = numpy_ops.split(x, 2, axis=ax)
    return numpy_ops.multiply(first, sigmoid(second))


def _softmax_axes(x, axis):
    if axis is not None and _is_int(axis) and -x.ndim <= axis < x.ndim and x.shape[axis] == 1:
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
    else:
        e = xp().exp(a - a.max(axis=axes, keepdims=True))
        y = e / e.sum(axis=axes, keepdims=True)

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


# ---------------------------------------------------------------- encoding


def one_hot(x, num_classes, axis=-1, dtype=None, sparse=False):
    """One-hot encoding of integer ``x`` along a new ``axis`` (dtype ``floatx()`` by default).

    Indices outside ``[0, num_classes)`` (such as -1) give all-zero vectors. No gradient.
    """
    if sparse:
        raise ValueError("Invalid value for `sparse`: gpulayers has no sparse tensors. Received: sparse=True")
    if not _is_int(num_classes) or num_classes < 1:
        raise ValueError(f"Invalid value for `num_classes`: expected a positive int. Received: num_classes={num_classes!r}")
    a = convert_to_tensor(x).data
    out_ndim = a.ndim + 1
    ax = _axis(axis, out_ndim)
    dtype = standardize_dtype(dtype) or config.floatx()
    y = (a[..., None] == xp().arange(int(num_classes))).astype(dtype)
    if ax != out_ndim - 1:
        y = xp().ascontiguousarray(xp().moveaxis(y, -1, ax))
    return Tensor(y)


# ---------------------------------------------------------------- normalization


def moments(x, axes, keepdims=False, synchronized=False):
    """``(mean, variance)`` of ``x`` over ``axes`` (the biased variance, two-pass).

    float16 is computed in float32 and the results clipped to float16's
    range before the cast back, as Keras. gpulayers runs on one device, so
    ``synchronized=True`` gives the same (already global) statistics.
    """
    x = _float(x)
    reduce_axes = normalize_axes(axes, x.ndim) if x.ndim else ()
    low = x.data.dtype.itemsize < 4
    work = cast(x, "float32") if low else x
    mean = numpy_ops.mean(work, axis=reduce_axes, keepdims=keepdims)
    variance = numpy_ops.var(work, axis=reduce_axes, keepdims=keepdims)
    if low:
        big = float(np.finfo(np.float16).max)
        mean = cast(numpy_ops.clip(mean, -big, big), x.data.dtype)
        variance = cast(numpy_ops.clip(variance, -big, big), x.data.dtype)
    return mean, variance


def batch_normalization(x, mean, variance, axis, offset=None, scale=None, epsilon=1e-3):
    """``x * inv + (offset - mean * inv)`` with ``inv = scale / sqrt(variance + epsilon)`` (Keras's form).

    ``mean``, ``variance``, ``offset`` and ``scale`` are vectors of length
    ``x.shape[axis]``, cast to ``x``'s dtype; all five tensors get gradients.
    """
    x = _float(x)
    ax = _axis(axis, x.ndim)
    channels = x.shape[ax]
    shape = [1] * x.ndim
    shape[ax] = channels
    eps = _check_real(epsilon, "epsilon")

    def vector(v, name):
        v = convert_to_tensor(v, dtype=x.data.dtype)
        if tuple(v.shape) != (channels,):
            raise ValueError(
                f"Invalid shape for `{name}`: expected a vector of length x.shape[axis] = {channels}. "
                f"Received: {name}.shape={v.shape}"
            )
        return numpy_ops.reshape(v, shape)

    mean, variance = vector(mean, "mean"), vector(variance, "variance")
    inv = numpy_ops.reciprocal(numpy_ops.sqrt(numpy_ops.add(variance, eps)))
    if scale is not None:
        inv = numpy_ops.multiply(inv, vector(scale, "scale"))
    res = numpy_ops.negative(numpy_ops.multiply(mean, inv))
    if offset is not None:
        res = numpy_ops.add(res, vector(offset, "offset"))
    return numpy_ops.add(numpy_ops.multiply(x, inv), res)


def normalize(x, axis=-1, order=2, epsilon=None):
    """``x / max(norm(x, order, axis), epsilon)`` (``epsilon`` defaults to ``config.epsilon()``).

    ``order=2`` uses Keras's ``x * min(rsqrt(sum(x**2)), 1 / epsilon)``; the
    gradient is the exact one of that (``g / epsilon`` where the bound holds,
    the zero vector included). Other orders are the vector p-norm over the
    given axes. A 0-d ``x`` is treated as shape ``(1,)``, as Keras.
    """
    if not _is_int(order) or order < 1:
        raise ValueError(f"Argument `order` must be an int >= 1. Received: order={order!r}")
    x = _float(x)
    if x.ndim == 0:
        x = numpy_ops.reshape(x, (1,))
    eps = config.epsilon() if epsilon is None else _check_real(epsilon, "epsilon")
    axes = normalize_axes(axis, x.ndim)
    if order != 2:
        denom = numpy_ops.maximum(_vector_norm(x, order, axes, True), eps)
        return numpy_ops.true_divide(x, denom)
    a = x.data
    np_ = xp()
    cap = 1.0 / eps
    with np.errstate(divide="ignore"):
        r = 1 / np_.sqrt((a * a).sum(axis=axes, keepdims=True))
    bounded = r >= cap
    inv = np_.minimum(r, cap).astype(a.dtype, copy=False)

    def backward(g, needs):
        along = (g * a).sum(axis=axes, keepdims=True)
        return (g * inv - np_.where(bounded, 0, a * (inv * inv * inv) * along),)

    return record("normalize", a * inv, (x,), backward)


# ---------------------------------------------------------------- cross-entropies


def _ce_dtypes(output):
    """(compute dtype, result dtype): float16 computes in float32; non-floats in ``floatx()``."""
    d = output.data.dtype
    if d.kind != "f":
        d = np.dtype(config.floatx())
    return (np.dtype("float32") if d.itemsize < 4 else d), d


def _fused_logits(output, op, axis=None):
    """The logits behind ``output`` when it is the result of a ``softmax`` (over ``axis``) or ``sigmoid``.

    A float cast between the activation and the loss (float16 probabilities
    computed in float32) is looked through.
    """
    t = output
    if not isinstance(t, Tensor) or t.node is None:
        return None
    if t.node.op == "cast":
        t = t.node.inputs[0]
        if t.node is None:
            return None
    if t.node.op != op or t.index != 0:
        return None
    if op == "softmax" and (t.node.attrs or {}).get("axis") != axis:
        return None
    return t.node.inputs[0]


def _expand(g, ax, dtype):
    return xp().expand_dims(g.astype(dtype, copy=False), ax)


def _clip_bounds(dtype):
    eps = config.epsilon()
    return xp().asarray(eps, dtype=dtype), xp().asarray(1.0 - eps, dtype=dtype)


def _target_input(target):
    return target if target.requires_grad and target.data.dtype.kind == "f" else None


def categorical_crossentropy(target, output, from_logits=False, axis=-1):
    """``-sum(target * log(p), axis)`` per sample (Keras's formula).

    With ``from_logits``, ``log p = log_softmax(output)``. Otherwise the
    probabilities are renormalised, ``q = output / sum(output, axis)``, and
    clipped to ``[epsilon, 1 - epsilon]``; the gradient is the exact
    derivative of that (0 where the clip is active). When ``output`` is the
    result of :func:`softmax` over the same axis, the node is recorded on the
    softmax's logits with the fused gradient ``(p * sum(target) - target) * g``:
    the derivative of the unclipped loss, what training on logits gives (the
    value is still the clipped one); a float cast between the softmax and the
    loss is looked through. The gradient then reaches the logits directly:
    asked for with respect to the probabilities themselves, it has no part
    from this loss. float16 computes in float32; the result has
    ``output``'s dtype. ``target`` gets the gradient ``-log(q)``.
    """
    target, output = _same_shapes(target, output)
    if output.ndim < 1:
        raise ValueError(
            "Arguments `target` and `output` must be at least rank 1. "
            f"Received: target.shape={target.shape}, output.shape={output.shape}"
        )
    ax = _axis(axis, output.ndim)
    cdtype, rdtype = _ce_dtypes(output)
    p = output.data.astype(cdtype, copy=False)
    t = target.data.astype(cdtype, copy=False)
    t_sum = t.sum(axis=ax, keepdims=True)
    np_ = xp()
    if from_logits:
        logp = _log_softmax_array(p, ax)
        values = -(t * logp).sum(axis=ax)

        def backward(g, needs):
            ge = _expand(g, ax, cdtype)
            go = (np_.exp(logp) * t_sum - t) * ge if needs[0] else None
            return go, (-logp * ge if needs[1] else None)

        return record("categorical_crossentropy", values.astype(rdtype, copy=False), (output, _target_input(target)), backward)

    lo, hi = _clip_bounds(cdtype)
    s = p.sum(axis=ax, keepdims=True)
    q = p / s
    qc = np_.clip(q, lo, hi)
    logq = np_.log(qc)
    values = (-(t * logq).sum(axis=ax)).astype(rdtype, copy=False)
    logits = _fused_logits(output, "softmax", ax)
    if logits is not None:

        def fused(g, needs):
            ge = _expand(g, ax, cdtype)
            gz = (p * t_sum - t) * ge if needs[0] else None
            return gz, (-logq * ge if needs[1] else None)

        return record("categorical_crossentropy", values, (logits, _target_input(target)), fused)

    def backward(g, needs):
        ge = _expand(g, ax, cdtype)
        go = None
        if needs[0]:
            gq = np_.where((q >= lo) & (q <= hi), -t / qc, 0.0)  # d loss / d q
            go = (gq - (gq * q).sum(axis=ax, keepdims=True)) / s * ge
        return go, (-logq * ge if needs[1] else None)

    return record("categorical_crossentropy", values, (output, _target_input(target)), backward)


def _same_shapes(target, output):
    """Both as tensors, refusing different shapes (Keras's message)."""
    output = convert_to_tensor(output)
    target = convert_to_tensor(target)
    if target.shape != output.shape:
        raise ValueError(
            "Arguments `target` and `output` must have the same shape. "
            f"Received: target.shape={target.shape}, output.shape={output.shape}"
        )
    return target, output


def check_sparse_labels(labels, num_classes, ignore_class=None, argument="target", classes="output's class axis"):
    """Refuse (ValueError naming the first one) a label that is not an integer in ``[0, num_classes)``
    (``ignore_class`` aside): one device-to-host sync. Returns the labels, bools as ints."""
    np_ = xp()
    if labels.dtype.kind == "b":
        labels = labels.astype(np.int64)
    if labels.dtype.kind in "iu":
        bad = (labels < 0) | (labels >= num_classes)
    elif labels.dtype.kind == "f":
        bad = (labels != np_.floor(labels)) | (labels < 0) | (labels >= num_classes)  # NaN is bad too
    else:
        raise TypeError(
            f"Invalid dtype for `{argument}`: sparse labels must be integers or floats. "
            f"Received: {argument}.dtype={labels.dtype}"
        )
    if ignore_class is not None:
        bad = bad & (labels != ignore_class)
    if bool(np_.any(bad)):
        flat = np.asarray(get_ops().to_numpy(bad)).reshape(-1)
        host = np.asarray(get_ops().to_numpy(labels)).reshape(-1)
        i = int(np.argmax(flat))
        value = host[i].item()
        raise ValueError(
            f"Invalid value in `{argument}`: {value!r} at flat index {i}. Sparse labels must be integers in "
            f"[0, {num_classes}), where {num_classes} is the size of {classes}"
            + (f", or ignore_class={ignore_class}" if ignore_class is not None else "")
            + f". Received: label={value!r}"
        )
    return labels


def sparse_categorical_crossentropy(target, output, from_logits=False, axis=-1):
    """Categorical cross-entropy with integer class labels in ``target``.

    ``target`` has ``output``'s shape without the class ``axis`` (a trailing
    axis of size 1 is squeezed). Values, clipping, fusion with a
    :func:`softmax` (gradient ``(p - onehot) * g`` on the logits) and dtypes as
    :func:`categorical_crossentropy`. Labels outside ``[0, classes)`` are refused.
    """
    return sparse_crossentropy(target, output, from_logits, axis, check_labels=True)


def sparse_crossentropy(target, output, from_logits=False, axis=-1, check_labels=True):
    """:func:`sparse_categorical_crossentropy`; ``check_labels=False`` skips the label check (and its
    host sync) for a caller that checked the labels already (``losses``, once per ``fit``)."""
    output = convert_to_tensor(output)
    labels = convert_to_tensor(target).data
    if output.ndim < 1:
        raise ValueError(f"Argument `output` must be at least rank 1. Received: output.shape={output.shape}")
    ax = _axis(axis, output.ndim)
    if labels.ndim == output.ndim and labels.shape[-1] == 1:
        labels = labels.reshape(labels.shape[:-1])
    expected = output.shape[:ax] + output.shape[ax + 1 :]
    if tuple(labels.shape) != expected:
        raise ValueError(
            "Arguments `target` and `output` must have the same shape except output's class axis: "
            f"target.shape={convert_to_tensor(target).shape}, output.shape={output.shape}"
        )
    classes = output.shape[ax]
    if check_labels:
        labels = check_sparse_labels(labels, classes)
    elif labels.dtype.kind == "b":
        labels = labels.astype(np.int64)
    cdtype, rdtype = _ce_dtypes(output)
    np_ = xp()
    p = output.data.astype(cdtype, copy=False)
    idx = np_.expand_dims(labels.astype(np.int64), ax)
    ramp = np_.arange(classes).reshape([classes if i == ax else 1 for i in range(output.ndim)])
    onehot = (ramp == idx).astype(cdtype)
    if from_logits:
        logp = _log_softmax_array(p, ax)
        values = -np_.take_along_axis(logp, idx, axis=ax).squeeze(ax)
        return record(
            "sparse_categorical_crossentropy", values.astype(rdtype, copy=False), (output,),
            lambda g, needs: ((np_.exp(logp) - onehot) * _expand(g, ax, cdtype),),
        )
    lo, hi = _clip_bounds(cdtype)
    s = p.sum(axis=ax, keepdims=True)
    q = p / s
    qk = np_.take_along_axis(q, idx, axis=ax)
    qkc = np_.clip(qk, lo, hi)
    values = (-np_.log(qkc).squeeze(ax)).astype(rdtype, copy=False)
    logits = _fused_logits(output, "softmax", ax)
    if logits is not None:
        return record(
            "sparse_categorical_crossentropy", values, (logits,),
            lambda g, needs: ((p - onehot) * _expand(g, ax, cdtype),),
        )

    def backward(g, needs):
        gk = np_.where((qk >= lo) & (qk <= hi), -1.0 / qkc, 0.0)  # d loss / d q_k
        return (gk * (onehot - qk) / s * _expand(g, ax, cdtype),)

    return record("sparse_categorical_crossentropy", values, (output,), backward)


def binary_crossentropy(target, output, from_logits=False):
    """Elementwise ``-(t * log(p) + (1 - t) * log(1 - p))`` with ``p`` clipped to ``[epsilon, 1 - epsilon]``.

    With ``from_logits``, the stable ``max(z, 0) - z * t + log1p(exp(-|z|))``
    (Keras's TensorFlow, JAX and PyTorch form; gradient ``sigmoid(z) - t``).
    When ``output`` is the result of :func:`sigmoid`, the node is recorded on
    its logits with the fused gradient ``(p - t) * g`` (see
    :func:`categorical_crossentropy`). Dtypes as there.
    """
    target, output = _same_shapes(target, output)
    cdtype, rdtype = _ce_dtypes(output)
    np_ = xp()
    p = output.data.astype(cdtype, copy=False)
    t = target.data.astype(cdtype, copy=False)
    inputs = (output, _target_input(target))
    if from_logits:
        values = np_.maximum(p, 0.0) - p * t + np_.log1p(np_.exp(-np_.abs(p)))

        def backward(g, needs):
            g = g.astype(cdtype, copy=False)
            return ((_sigmoid_array(p) - t) * g if needs[0] else None), (-p * g if needs[1] else None)

        return record("binary_crossentropy", values.astype(rdtype, copy=False), inputs, backward)
    lo, hi = _clip_bounds(cdtype)
    pc = np_.clip(p, lo, hi)
    log_p, log_not_p = np_.log(pc), np_.log(1.0 - pc)
    values = (-(t * log_p + (1.0 - t) * log_not_p)).astype(rdtype, copy=False)

    def target_grad(g):
        return (log_not_p - log_p) * g

    logits = _fused_logits(output, "sigmoid")
    if logits is not None:

        def fused(g, needs):
            g = g.astype(cdtype, copy=False)
            return ((p - t) * g if needs[0] else None), (target_grad(g) if needs[1] else None)

        return record("binary_crossentropy", values, (logits, inputs[1]), fused)

    def backward_p(g, needs):
        g = g.astype(cdtype, copy=False)
        go = None
        if needs[0]:
            go = np_.where((p >= lo) & (p <= hi), (pc - t) / (pc * (1.0 - pc)), 0.0) * g
        return go, (target_grad(g) if needs[1] else None)

    return record("binary_crossentropy", values, inputs, backward_p)


# ---------------------------------------------------------------- convolution and pooling


def _arguments():
    # Imported on use: the layers package imports the activations, which import this module.
    from gpulayers.layers import arguments

    return arguments


def _spatial_rank(name, x):
    n = x.ndim - 2
    if n not in (1, 2):
        raise ValueError(
            f"{name} supports only 1-D and 2-D inputs: rank 3 (batch, length, channels) or rank 4 "
            f"(batch, height, width, channels). Received: inputs.shape={x.shape}"
        )
    return n


def _lift(x, data_format):
    """A 1-D input as 2-D with a unit height axis (differentiable reshape)."""
    shape = x.shape
    if data_format == "channels_last":
        return numpy_ops.reshape(x, (shape[0], 1, shape[1], shape[2]))
    return numpy_ops.reshape(x, (shape[0], shape[1], 1, shape[2]))


def _drop(y, data_format):
    shape = y.shape
    if data_format == "channels_last":
        return numpy_ops.reshape(y, (shape[0], shape[2], shape[3]))
    return numpy_ops.reshape(y, (shape[0], shape[1], shape[3]))


def _geometry(x4, window, strides, dilation, padding, data_format, name):
    h_ax, w_ax = (1, 2) if data_format == "channels_last" else (2, 3)
    h, w = x4.shape[h_ax], x4.shape[w_ax]
    args = _arguments()
    out = [args.conv_output_length(n, k, s, d, padding) for n, k, s, d in zip((h, w), window, strides, dilation)]
    if x4.size and (out[0] < 1 or out[1] < 1):
        raise ValueError(
            f"The {name} operation resulted in an empty output: the input is too small for the window, strides, "
            f"dilation and padding. Received: inputs spatial shape={(h, w)}, window={tuple(window)}, "
            f"strides={tuple(strides)}, dilation_rate={tuple(dilation)}, padding={padding!r}"
        )
    return args.window_pads((h, w), window, strides, dilation, padding)


def _window_dtype(*tensors):
    kinds = [t.data.dtype for t in tensors]
    if builtins.all(d.kind == "f" for d in kinds):
        return np.result_type(*kinds)
    floats = [d for d in kinds if d.kind == "f"]
    return np.result_type(*floats) if floats else np.dtype(config.floatx())


def _conv2d(x, kernel, strides, padding, dilation, data_format):
    a = xp().ascontiguousarray(x.data)
    k = xp().ascontiguousarray(kernel.data)
    pads = _geometry(x, k.shape[:2], strides, dilation, padding, data_format, "convolution")
    ops = get_ops()
    y = ops.conv2d_forward(a, k, strides, pads, dilation, data_format)

    def backward(g, needs):
        g = xp().ascontiguousarray(g)
        dx = ops.conv2d_backward_input(g, k, tuple(a.shape), strides, pads, dilation, data_format) if needs[0] else None
        dk = ops.conv2d_backward_kernel(a, g, tuple(k.shape), strides, pads, dilation, data_format) if needs[1] else None
        return dx, dk

    return record("conv", y, (x, kernel), backward)


def _conv_setup(name, inputs, kernel, strides, padding, data_format, dilation_rate):
    x = convert_to_tensor(inputs)
    k = convert_to_tensor(kernel)
    n = _spatial_rank(name, x)
    if k.ndim != n + 2:
        raise ValueError(
            f"Invalid value for `kernel`: a {n}-D {name} takes a kernel of rank {n + 2} "
            f"(spatial dims, in, out). Received: kernel.shape={k.shape}"
        )
    data_format = config.standardize_data_format(data_format)
    args = _arguments()
    padding = args.standardize_padding(padding)
    strides = args.standardize_tuple(strides, n, "strides")
    dilation = args.standardize_tuple(dilation_rate, n, "dilation_rate")
    dtype = _window_dtype(x, k)
    x, k = cast(x, dtype), cast(k, dtype)
    if n == 1:
        x = _lift(x, data_format)
        k = numpy_ops.reshape(k, (1,) + k.shape)
        strides, dilation = (1,) + strides, (1,) + dilation
    return n, x, k, strides, padding, dilation, data_format


def conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
    """1-D or 2-D cross-correlation (Keras's ``ops.conv``), without bias.

    ``kernel``: ``(k, in, out)`` or ``(kh, kw, in, out)``. When the input has
    a multiple of the kernel's input channels, the convolution is grouped
    (``channels // in`` groups, ``out`` divisible by them). 3-D is refused.
    """
    n, x, k, strides, padding, dilation, data_format = _conv_setup(
        "conv", inputs, kernel, strides, padding, data_format, dilation_rate
    )
    c_ax = 3 if data_format == "channels_last" else 1
    channels, k_in, k_out = x.shape[c_ax], k.shape[2], k.shape[3]
    if k_in < 1 or channels % k_in:
        raise ValueError(
            "The number of input channels must be evenly divisible by the kernel's in_channels. "
            f"Received input channels {channels} and kernel in_channels {k_in}."
        )
    groups = channels // k_in
    if groups == 1:
        y = _conv2d(x, k, strides, padding, dilation, data_format)
    else:
        if k_out % groups:
            raise ValueError(
                f"Invalid value for `kernel`: a grouped convolution ({groups} groups) needs out_channels divisible "
                f"by the groups. Received: kernel.shape={k.shape}"
            )
        step = k_out // groups
        parts = []
        for i in range(groups):
            index = [builtins.slice(None)] * 4
            index[c_ax] = builtins.slice(i * k_in, (i + 1) * k_in)
            xi = numpy_ops.get_item(x, tuple(index))
            ki = numpy_ops.get_item(k, (Ellipsis, builtins.slice(i * step, (i + 1) * step)))
            parts.append(_conv2d(xi, ki, strides, padding, dilation, data_format))
        y = numpy_ops.concatenate(parts, axis=c_ax)
    return _drop(y, data_format) if n == 1 else y


def _depthwise2d(x, kernel, strides, padding, dilation, data_format):
    np_ = xp()
    a = x.data
    k = kernel.data
    kh, kw, c, m = k.shape
    pads = _geometry(x, (kh, kw), strides, dilation, padding, data_format, "depthwise convolution")
    first = data_format == "channels_first"
    an = a.transpose(0, 2, 3, 1) if first else a
    nb, h, w, _ = an.shape
    top, bottom, left, right = pads
    oh = _arguments().conv_output_length(h, kh, strides[0], dilation[0], padding)
    ow = _arguments().conv_output_length(w, kw, strides[1], dilation[1], padding)
    padded = np_.pad(an, ((0, 0), (top, bottom), (left, right), (0, 0)))

    def tap(i, j):
        r, s = i * dilation[0], j * dilation[1]
        return (
            builtins.slice(None),
            builtins.slice(r, r + (oh - 1) * strides[0] + 1, strides[0]),
            builtins.slice(s, s + (ow - 1) * strides[1] + 1, strides[1]),
        )

    # Multiplier-major (M, N, OH, OW, C): every tap is one multiply-add over
    # contiguous channels (a trailing axis of size M is several times slower).
    ym = np_.zeros((m, nb, oh, ow, c), dtype=a.dtype)
    for i in range(kh):
        for j in range(kw):
            xs = padded[tap(i, j)]
            for q in range(m):
                ym[q] += xs * k[i, j, :, q]
    y = np_.moveaxis(ym, 0, -1).reshape(nb, oh, ow, c * m)  # output channel c * m + q
    y = np_.ascontiguousarray(y.transpose(0, 3, 1, 2) if first else y)

    def backward(g, needs):
        gn = g.transpose(0, 2, 3, 1) if first else g
        gm = np_.ascontiguousarray(np_.moveaxis(gn.reshape(nb, oh, ow, c, m), -1, 0))
        dx = dk = None
        if needs[0]:
            dpad = np_.zeros(padded.shape, dtype=g.dtype)
            for i in range(kh):
                for j in range(kw):
                    acc = gm[0] * k[i, j, :, 0]
                    for q in range(1, m):
                        acc += gm[q] * k[i, j, :, q]
                    dpad[tap(i, j)] += acc
            dx = dpad[:, top : top + h, left : left + w, :]
            dx = np_.ascontiguousarray(dx.transpose(0, 3, 1, 2) if first else dx)
        if needs[1]:
            dk = np_.zeros(k.shape, dtype=g.dtype)
            for i in range(kh):
                for j in range(kw):
                    xs = padded[tap(i, j)]
                    for q in range(m):
                        dk[i, j, :, q] = (xs * gm[q]).sum(axis=(0, 1, 2))
        return dx, dk

    return record("depthwise_conv", y, (x, kernel), backward)


def depthwise_conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
    """1-D or 2-D depthwise convolution: each input channel convolved with its own ``multiplier`` filters.

    ``kernel``: ``(kh, kw, channels, multiplier)`` (or ``(k, channels,
    multiplier)``); output channel ``c * multiplier + m`` (TensorFlow's order).
    """
    n, x, k, strides, padding, dilation, data_format = _conv_setup(
        "depthwise_conv", inputs, kernel, strides, padding, data_format, dilation_rate
    )
    channels = x.shape[3 if data_format == "channels_last" else 1]
    if k.shape[2] != channels:
        raise ValueError(
            "The number of input channels must match the kernel's in_channels for a depthwise convolution. "
            f"Received input channels {channels} and kernel.shape={k.shape}"
        )
    y = _depthwise2d(x, k, strides, padding, dilation, data_format)
    return _drop(y, data_format) if n == 1 else y


def _pool(kind, inputs, pool_size, strides, padding, data_format):
    x = _float(inputs)
    name = "max_pool" if kind == "max" else "average_pool"
    n = _spatial_rank(name, x)
    data_format = config.standardize_data_format(data_format)
    args = _arguments()
    padding = args.standardize_padding(padding)
    pool = args.standardize_tuple(pool_size, n, "pool_size")
    strides = pool if strides is None else args.standardize_tuple(strides, n, "strides")
    if n == 1:
        x = _lift(x, data_format)
        pool, strides = (1,) + pool, (1,) + strides
    a = xp().ascontiguousarray(x.data)
    pads = _geometry(x, pool, strides, (1, 1), padding, data_format, "pooling")
    ops = get_ops()
    if kind == "max":
        y, arg = ops.max_pool2d_forward(a, pool, strides, pads, data_format)
        y = record(
            "max_pool", y, (x,),
            lambda g, needs: (ops.max_pool2d_backward(xp().ascontiguousarray(g), arg, tuple(a.shape), pool, strides, pads, data_format),),
        )
    else:
        y = ops.avg_pool2d_forward(a, pool, strides, pads, data_format)
        y = record(
            "average_pool", y, (x,),
            lambda g, needs: (ops.avg_pool2d_backward(xp().ascontiguousarray(g), tuple(a.shape), pool, strides, pads, data_format),),
        )
    return _drop(y, data_format) if n == 1 else y


def max_pool(inputs, pool_size, strides=None, padding="valid", data_format=None):
    """1-D or 2-D max pooling (``strides`` default to ``pool_size``; padded cells never win).

    The gradient goes to each window's first maximum.
    """
    return _pool("max", inputs, pool_size, strides, padding, data_format)


def average_pool(inputs, pool_size, strides=None, padding="valid", data_format=None):
    """1-D or 2-D average pooling; ``'same'`` windows divide by their count of real cells, as Keras."""
    return _pool("average", inputs, pool_size, strides, padding, data_format)

