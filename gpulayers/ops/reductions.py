"""Reductions of the NumPy-like family (sum, mean, max, var, cumsum, arg-reductions, sort).

Ties in ``max``/``min`` share the gradient equally; ``prod`` is exact with
zeros; the arg-reductions and ``argsort`` have no gradient.
"""

import math

import numpy as np

from gpulayers.autodiff import Tensor, record
from gpulayers.ops.core import (
    convert_to_tensor,
    normalize_axes,
    xp,
)
from gpulayers.ops.elementwise import _float, sqrt

__all__ = [
    "all", "amax", "amin", "any", "argmax", "argmin", "argsort", "count_nonzero", "cumsum", "max", "mean", "min",
    "prod", "sort", "std", "sum", "var",
]



def _keep(g, axes, ndim):
    """``g`` with the reduced ``axes`` put back as size-1 axes."""
    shape = list(g.shape)
    for a in axes:
        shape.insert(a, 1)
    return g.reshape(shape) if len(shape) == ndim else g


def _reduction_axes(x, axis):
    return normalize_axes(axis, x.ndim) if x.ndim else ()


def sum(x, axis=None, keepdims=False):  # noqa: A001 (Keras's name)
    x = convert_to_tensor(x)
    axes = _reduction_axes(x, axis)
    a = x.data
    y = xp().asarray(a.sum(axis=axes, keepdims=keepdims))
    if a.dtype.kind == "b":
        y = y.astype("int32")
    shape = a.shape

    def backward(g, needs):
        kept = g if keepdims else _keep(g, axes, len(shape))
        return (xp().broadcast_to(kept, shape),)

    return record("sum", y, (x,), backward)


def mean(x, axis=None, keepdims=False):
    x = _float(x)
    axes = _reduction_axes(x, axis)
    a = x.data
    count = math.prod(a.shape[i] for i in axes) if axes else 1
    y = xp().asarray(a.mean(axis=axes, keepdims=keepdims))
    shape = a.shape

    def backward(g, needs):
        kept = g if keepdims else _keep(g, axes, len(shape))
        return (xp().broadcast_to(kept / count, shape),)

    return record("mean", y, (x,), backward)


def _extreme(op, pick):
    def reduce(x, axis=None, keepdims=False, initial=None):
        x = convert_to_tensor(x)
        axes = _reduction_axes(x, axis)
        a = x.data
        kwargs = {} if initial is None else {"initial": initial}
        y = xp().asarray(pick(a, axis=axes, keepdims=True, **kwargs))
        out = y if keepdims else y.reshape(tuple(n for i, n in enumerate(a.shape) if i not in axes))

        def backward(g, needs):
            kept = g if keepdims else _keep(g, axes, a.ndim)
            hits = (a == y).astype(g.dtype)
            count = hits.sum(axis=axes, keepdims=True)
            return (hits * (kept / xp().maximum(count, 1)),)

        return record(op, out, (x,), backward)

    reduce.__name__ = reduce.__qualname__ = op
    reduce.__doc__ = f"The {op}imum over ``axis``; ties share the gradient equally."
    return reduce


max = _extreme("max", lambda a, **kw: xp().max(a, **kw))  # noqa: A001 (Keras's name)
min = _extreme("min", lambda a, **kw: xp().min(a, **kw))  # noqa: A001 (Keras's name)
amax = max
amin = min


def prod(x, axis=None, keepdims=False, dtype=None):
    """The product over ``axis``; the gradient is exact with zeros too (products of the other entries)."""
    x = convert_to_tensor(x, dtype=dtype)
    axes = _reduction_axes(x, axis)
    a = x.data
    y = xp().asarray(a.prod(axis=axes, keepdims=keepdims))

    def backward(g, needs):
        kept = g if keepdims else _keep(g, axes, a.ndim)
        rest = [i for i in range(a.ndim) if i not in axes]
        moved = a.transpose(rest + list(axes)) if a.ndim else a
        lead = moved.shape[: len(rest)]
        flat = moved.reshape(lead + (-1,))
        ones = xp().ones(lead + (1,), dtype=a.dtype)
        left = xp().concatenate([ones, xp().cumprod(flat, axis=-1)[..., :-1]], axis=-1)
        right = xp().flip(xp().concatenate([ones, xp().cumprod(xp().flip(flat, -1), axis=-1)[..., :-1]], axis=-1), -1)
        others = (left * right).reshape(moved.shape)
        inverse = np.argsort(rest + list(axes)) if a.ndim else ()
        others = others.transpose(tuple(inverse)) if a.ndim else others
        return (others * kept,)

    return record("prod", y, (x,), backward)


def var(x, axis=None, keepdims=False):
    """The biased variance (``mean((x - mean(x))**2)``) over ``axis``."""
    x = _float(x)
    axes = _reduction_axes(x, axis)
    a = x.data
    count = math.prod(a.shape[i] for i in axes) if axes else 1
    centered = a - a.mean(axis=axes, keepdims=True)
    y = xp().asarray((centered * centered).mean(axis=axes, keepdims=keepdims))

    def backward(g, needs):
        kept = g if keepdims else _keep(g, axes, a.ndim)
        return (centered * (kept * (2.0 / count)),)

    return record("var", y, (x,), backward)


def std(x, axis=None, keepdims=False):
    """The biased standard deviation over ``axis``."""
    return sqrt(var(x, axis=axis, keepdims=keepdims))


def cumsum(x, axis=None, dtype=None):
    """Cumulative sums along ``axis`` (None: over the flattened tensor)."""
    x = convert_to_tensor(x, dtype=dtype)
    a = x.data
    if axis is None:
        flat = a.reshape(-1)
        y = xp().cumsum(flat)
        return record("cumsum", y, (x,), lambda g, needs: (xp().flip(xp().cumsum(xp().flip(g, 0)), 0).reshape(a.shape),))
    ax = normalize_axes(axis, a.ndim)[0]
    y = xp().cumsum(a, axis=ax)
    return record("cumsum", y, (x,), lambda g, needs: (xp().flip(xp().cumsum(xp().flip(g, ax), axis=ax), ax),))


def any(x, axis=None, keepdims=False):  # noqa: A001 (Keras's name)
    x = convert_to_tensor(x)
    return Tensor(xp().asarray(xp().any(x.data, axis=_reduction_axes(x, axis), keepdims=keepdims)))


def all(x, axis=None, keepdims=False):  # noqa: A001 (Keras's name)
    x = convert_to_tensor(x)
    return Tensor(xp().asarray(xp().all(x.data, axis=_reduction_axes(x, axis), keepdims=keepdims)))


def count_nonzero(x, axis=None):
    x = convert_to_tensor(x)
    return Tensor(xp().asarray(xp().count_nonzero(x.data, axis=_reduction_axes(x, axis))).astype("int32"))


def _arg(fn):
    def arg(x, axis=None, keepdims=False):
        a = convert_to_tensor(x).data
        if axis is None:
            out = fn(a.reshape(-1), axis=0)
            if keepdims:
                out = xp().asarray(out).reshape((1,) * a.ndim)
        else:
            out = fn(a, axis=int(axis), keepdims=keepdims)
        return Tensor(xp().asarray(out).astype("int32"))

    return arg


argmax = _arg(lambda a, axis, keepdims=False: xp().argmax(a, axis=axis, keepdims=keepdims))
argmin = _arg(lambda a, axis, keepdims=False: xp().argmin(a, axis=axis, keepdims=keepdims))
argmax.__name__, argmin.__name__ = "argmax", "argmin"
argmax.__doc__ = "Index of the largest entry along ``axis`` (the first on ties), int32; no gradient."
argmin.__doc__ = "Index of the smallest entry along ``axis`` (the first on ties), int32; no gradient."


def argsort(x, axis=-1):
    """Indices that sort ``x`` along ``axis`` (stable), int32; no gradient."""
    a = convert_to_tensor(x).data
    return Tensor(xp().argsort(a, axis=axis, kind="stable").astype("int32"))


def sort(x, axis=-1):
    """``x`` sorted along ``axis``; the gradient follows each entry back to its place."""
    x = convert_to_tensor(x)
    a = x.data
    if a.ndim == 0:
        return x
    ax = normalize_axes(axis, a.ndim)[0]
    order = xp().argsort(a, axis=ax, kind="stable")
    y = xp().take_along_axis(a, order, axis=ax)
    inverse = xp().argsort(order, axis=ax)
    return record("sort", y, (x,), lambda g, needs: (xp().take_along_axis(g, inverse, axis=ax),))
