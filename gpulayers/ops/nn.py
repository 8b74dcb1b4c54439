"""Neural-network ops (``keras.ops`` nn namespace), each differentiable on the tape.

The namespace, and the encoding and normalization ops (``one_hot``,
``moments``, ``batch_normalization``, ``normalize``, ``layer_normalization``,
``rms_normalization``), over
:mod:`~gpulayers.ops.activations`, :mod:`~gpulayers.ops.crossentropy` and
:mod:`~gpulayers.ops.convolution`.
"""

import numpy as np

from gpulayers import config
from gpulayers.argument_validation import standardize_bool
from gpulayers.autodiff import Tensor, record
from gpulayers.ops import numpy as numpy_ops
from gpulayers.ops.activations import *  # noqa: F401,F403
from gpulayers.ops.activations import __all__ as _activations_all
from gpulayers.ops.convolution import *  # noqa: F401,F403
from gpulayers.ops.convolution import __all__ as _convolution_all
from gpulayers.ops.crossentropy import *  # noqa: F401,F403
from gpulayers.ops.crossentropy import __all__ as _crossentropy_all
from gpulayers.ops.core import (
    cast, check_real, convert_to_tensor, is_int, normalize_axes, normalize_axis, standardize_dtype, unbroadcast, xp,
)
from gpulayers.ops.elementwise import _float
from gpulayers.ops.math import _vector_norm

_OWN = [
    "batch_normalization", "layer_normalization", "moments", "normalize", "one_hot", "rms_normalization",
]

__all__ = sorted(_activations_all + _crossentropy_all + _convolution_all + _OWN)


# ---------------------------------------------------------------- encoding


def one_hot(x, num_classes, axis=-1, dtype=None, sparse=False):
    """One-hot encoding of integer ``x`` along a new ``axis`` (dtype ``floatx()`` by default).

    Indices outside ``[0, num_classes)`` (such as -1) give all-zero vectors. No gradient.
    """
    if sparse:
        raise ValueError("Invalid value for `sparse`: gpulayers has no sparse tensors. Received: sparse=True")
    if not is_int(num_classes) or num_classes < 1:
        raise ValueError(f"Invalid value for `num_classes`: expected a positive int. Received: num_classes={num_classes!r}")
    a = convert_to_tensor(x).data
    out_ndim = a.ndim + 1
    ax = normalize_axis(axis, out_ndim)
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
    ax = normalize_axis(axis, x.ndim)
    channels = x.shape[ax]
    shape = [1] * x.ndim
    shape[ax] = channels
    eps = check_real(epsilon, "epsilon")

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
    if not is_int(order) or order < 1:
        raise ValueError(f"Argument `order` must be an int >= 1. Received: order={order!r}")
    x = _float(x)
    if x.ndim == 0:
        x = numpy_ops.reshape(x, (1,))
    eps = config.epsilon() if epsilon is None else check_real(epsilon, "epsilon")
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


def layer_normalization(x, gamma=None, beta=None, axis=-1, epsilon=None, rms_scaling=False):
    """Keras's ``ops.layer_normalization``: ``(x - mean) * rsqrt(var + epsilon) * gamma + beta`` over ``axis``.

    Computed as Keras does, ``x * inv + (beta - mean * inv)`` with
    ``inv = gamma * rsqrt(var + epsilon)``, in float32 at least (float16 in,
    float16 out); ``epsilon`` defaults to ``config.epsilon()``. ``gamma`` and
    ``beta`` span the normalized axes (shape ``x.shape[axis]`` for one axis,
    the sizes of ``axis`` in order for several; a tensor of ``x``'s rank is
    used as it is). ``rms_scaling=True`` is Keras's deprecated variant
    ``x * rsqrt(var + epsilon) * gamma`` (no centering, no ``beta``).
    """
    rms_scaling = standardize_bool(rms_scaling, "rms_scaling")
    mode = "variance" if rms_scaling else "center"
    return _normalize_over(x, gamma, None if rms_scaling else beta, axis, epsilon, mode, "gamma", "beta")


def rms_normalization(x, scale=None, axis=-1, epsilon=None):
    """Keras's ``ops.rms_normalization``: ``x * rsqrt(mean(x**2, axis) + epsilon) * scale``.

    In float32 at least, ``epsilon`` defaulting to ``config.epsilon()``;
    ``scale`` spans the normalized axes as ``gamma`` does in
    :func:`layer_normalization`. A 0-d ``x`` is treated as shape ``(1,)``, as Keras.
    """
    return _normalize_over(x, scale, None, axis, epsilon, "rms", "scale", None)


def _normalize_over(x, gamma, beta, axis, epsilon, mode, gamma_name, beta_name):
    """One node: ``x`` normalized over ``axis`` by ``mode``, then scaled by ``gamma`` and shifted by ``beta``.

    ``mode``: "center" (subtract the mean, divide by the standard deviation),
    "variance" (divide by the standard deviation only) or "rms" (divide by
    the root mean square). The layers' core too: GroupNormalization passes a
    grouped view of its input with gammas of the grouped rank.
    """
    x = _float(x)
    if x.ndim == 0:
        x = numpy_ops.reshape(x, (1,))
    eps = config.epsilon() if epsilon is None else check_real(epsilon, "epsilon")
    axes = normalize_axes(axis, x.ndim)
    out_dtype = x.data.dtype
    dtype = np.result_type(out_dtype, np.float32)  # as Keras: float16 statistics overflow, so float32 at least
    spanned = [1] * x.ndim
    for a in axes:
        spanned[a] = x.shape[a]

    def parameter(v, name):
        if v is None:
            return None
        v = convert_to_tensor(v)
        if v.data.dtype.kind != "f":
            v = cast(v, dtype)
        if v.ndim != x.ndim and axes != (x.ndim - 1,):  # Keras's rule: a vector over the axes lies along them
            if v.size != int(np.prod(spanned)):
                raise ValueError(
                    f"Invalid shape for `{name}`: expected the sizes of the normalized axes "
                    f"{tuple(x.shape[a] for a in axes)}. Received: {name}.shape={v.shape}"
                )
            v = numpy_ops.reshape(v, spanned)
        try:
            np.broadcast_shapes(tuple(v.shape), tuple(x.shape))
        except ValueError:
            raise ValueError(
                f"Invalid shape for `{name}`: it does not broadcast against x.shape={x.shape} with "
                f"axis={axis!r}. Received: {name}.shape={v.shape}"
            ) from None
        return v

    gamma, beta = parameter(gamma, gamma_name), parameter(beta, beta_name)
    a = x.data.astype(dtype, copy=False)
    g = None if gamma is None else gamma.data.astype(dtype, copy=False)
    b = None if beta is None else beta.data.astype(dtype, copy=False)
    np_ = xp()
    centered = None
    with np.errstate(invalid="ignore", divide="ignore"):  # an empty axis gives NaN, as in Keras
        if mode == "rms":
            rstd = 1 / np_.sqrt((a * a).mean(axis=axes, keepdims=True) + eps)
        else:
            mean = a.mean(axis=axes, keepdims=True)
            centered = a - mean
            rstd = 1 / np_.sqrt((centered * centered).mean(axis=axes, keepdims=True) + eps)
    inv = rstd if g is None else rstd * g
    if mode == "center":  # Keras's order: x * inv + (beta - mean * inv)
        shift = -mean * inv
        y = a * inv + (shift if b is None else shift + b)
    else:
        y = a * inv

    def backward(dy, needs):
        dy = dy.astype(dtype, copy=False)
        xhat = (centered if mode == "center" else a) * rstd  # what gamma multiplies
        dx = dgamma = dbeta = None
        if needs[0]:
            # The input gradient loses its components along what the statistics depend on.
            dxhat = dy if g is None else dy * g
            along = (dxhat * xhat).mean(axis=axes, keepdims=True)
            if mode == "center":
                dx = rstd * (dxhat - dxhat.mean(axis=axes, keepdims=True) - xhat * along)
            else:
                dx = rstd * (dxhat - (xhat if mode == "rms" else centered * rstd) * along)
            dx = dx.astype(out_dtype, copy=False)
        if needs[1]:
            dgamma = unbroadcast(dy * xhat, gamma.shape).astype(gamma.data.dtype, copy=False)
        if needs[2]:
            dbeta = unbroadcast(dy, beta.shape).astype(beta.data.dtype, copy=False)
        return dx, dgamma, dbeta

    name = "rms_normalization" if mode == "rms" else "layer_normalization"
    return record(name, y.astype(out_dtype, copy=False), (x, gamma, beta), backward)
