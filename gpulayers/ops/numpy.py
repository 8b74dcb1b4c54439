"""NumPy-like ops (``keras.ops`` numpy namespace), each differentiable on the tape.

Every function takes Tensors, Variables, backend arrays, array-likes or
Python numbers, broadcasts as NumPy does and returns a Tensor. Gradients
follow the usual conventions: ties in ``max``/``min`` and ``maximum``/
``minimum`` share the gradient equally, ``abs`` and ``sign`` have slope 0 at
0, comparisons, ``argmax``, ``floor`` and friends have no gradient.
"""

import builtins
import math
import numbers

import numpy as np

from gpulayers import config
from gpulayers.autodiff import Tensor, record
from gpulayers.ops.core import (
    convert_to_tensor,
    data,
    fix_float64,
    is_scalar,
    normalize_axes,
    operand,
    standardize_dtype,
    unbroadcast,
    xp,
)

__all__ = [
    "abs", "absolute", "add", "all", "amax", "amin", "any", "arange", "arccos", "arcsin", "arcsinh", "arctan",
    "arctanh", "argmax", "argmin", "argsort", "broadcast_to", "ceil", "clip", "concatenate", "cos", "cosh",
    "count_nonzero", "cumsum", "divide", "divide_no_nan", "dot", "einsum", "empty", "equal", "exp", "expand_dims",
    "expm1", "eye", "flip", "floor", "floor_divide", "full", "full_like", "get_item", "greater", "greater_equal",
    "hstack", "identity", "isfinite", "isinf", "isnan", "less", "less_equal", "linspace", "log", "log10", "log1p",
    "log2", "logaddexp", "logical_and", "logical_not", "logical_or", "logical_xor", "matmul", "max", "maximum",
    "mean", "min", "minimum", "mod", "moveaxis", "multiply", "negative", "not_equal", "ones", "ones_like",
    "outer", "pad", "power", "prod", "ravel", "reciprocal", "repeat", "reshape", "round", "sign", "sin", "sinh",
    "sort", "split", "sqrt", "square", "squeeze", "stack", "std", "subtract", "sum", "swapaxes", "take",
    "take_along_axis", "tan", "tanh", "tensordot", "tile", "transpose", "tril", "triu", "true_divide", "var",
    "vstack", "where", "zeros", "zeros_like",
]


def _result(y):
    """A raw result as a Tensor with no node (ops without a gradient)."""
    return Tensor(y)


# ---------------------------------------------------------------- elementwise, two operands


def _binary(op, x1, x2, compute, grads):
    """Shared frame of the broadcasting binary ops.

    ``compute(a, b)`` gives the raw result; ``grads(g, a, b, y, needs)``
    gives the two gradients before they are summed back to each operand's
    shape. Python numbers stay weak scalars and never get a gradient.
    """
    a, b = operand(x1), operand(x2)
    ad, bd = data(a), data(b)
    y = fix_float64(xp().asarray(compute(ad, bd)), a, b)
    inputs = (a if isinstance(a, Tensor) else None, b if isinstance(b, Tensor) else None)

    def backward(g, needs):
        ga, gb = grads(g, ad, bd, y, needs)
        return (
            unbroadcast(ga, ad.shape) if needs[0] and ga is not None else None,
            unbroadcast(gb, bd.shape) if needs[1] and gb is not None else None,
        )

    return record(op, y, inputs, backward)


def add(x1, x2):
    return _binary("add", x1, x2, lambda a, b: a + b, lambda g, a, b, y, n: (g, g))


def subtract(x1, x2):
    return _binary("subtract", x1, x2, lambda a, b: a - b, lambda g, a, b, y, n: (g, -g if n[1] else None))


def multiply(x1, x2):
    return _binary(
        "multiply", x1, x2, lambda a, b: a * b,
        lambda g, a, b, y, n: (g * b if n[0] else None, g * a if n[1] else None),
    )


def true_divide(x1, x2):
    return _binary(
        "divide", x1, x2, lambda a, b: a / b,
        lambda g, a, b, y, n: (g / b if n[0] else None, -g * y / b if n[1] else None),
    )


divide = true_divide


def divide_no_nan(x1, x2):
    """``x1 / x2``, and 0 where ``x2`` is 0 (no gradient through those entries)."""

    def compute(a, b):
        safe = xp().where(b == 0, 1, b)
        return xp().where(b == 0, 0, a / safe)

    def grads(g, a, b, y, n):
        safe = xp().where(b == 0, 1, b)
        zero = b == 0
        return (
            xp().where(zero, 0, g / safe) if n[0] else None,
            xp().where(zero, 0, -g * y / safe) if n[1] else None,
        )

    return _binary("divide_no_nan", x1, x2, compute, grads)


def power(x1, x2):
    """``x1 ** x2``. The gradient wrt the exponent uses ``log(x1)`` where ``x1 > 0`` and 0 elsewhere."""

    def grads(g, a, b, y, n):
        ga = gb = None
        if n[0]:
            if is_scalar(b) and b == 2:
                ga = g * (2 * a)
            else:
                ga = g * (b * a ** (b - 1))
        if n[1]:
            positive = a > 0
            ga_log = xp().log(xp().where(positive, a, 1))
            gb = g * xp().where(positive, y * ga_log, 0)
        return ga, gb

    return _binary("power", x1, x2, lambda a, b: a**b, grads)


def _tie_split(first):
    """Gradient shares of ``maximum``/``minimum``: 1 for the winner, 1/2 each on ties."""

    def grads(g, a, b, y, n):
        wins = (first(a, b)).astype(g.dtype)
        ties = (a == b).astype(g.dtype)
        share = wins + 0.5 * ties
        return (g * share if n[0] else None, g * (1 - share) if n[1] else None)

    return grads


def maximum(x1, x2):
    return _binary("maximum", x1, x2, lambda a, b: xp().maximum(a, b), _tie_split(lambda a, b: a > b))


def minimum(x1, x2):
    return _binary("minimum", x1, x2, lambda a, b: xp().minimum(a, b), _tie_split(lambda a, b: a < b))


def logaddexp(x1, x2):
    return _binary(
        "logaddexp", x1, x2, lambda a, b: xp().logaddexp(a, b),
        lambda g, a, b, y, n: (g * xp().exp(a - y) if n[0] else None, g * xp().exp(b - y) if n[1] else None),
    )


def mod(x1, x2):
    """Remainder with the sign of the divisor (NumPy's ``mod``): ``x1 - floor(x1 / x2) * x2``."""
    return _binary(
        "mod", x1, x2, lambda a, b: xp().mod(a, b),
        lambda g, a, b, y, n: (g if n[0] else None, -g * xp().floor_divide(a, b) if n[1] else None),
    )


def floor_divide(x1, x2):
    """``floor(x1 / x2)``: no gradient (it is piecewise constant)."""
    a, b = operand(x1), operand(x2)
    return _result(fix_float64(xp().asarray(xp().floor_divide(data(a), data(b))), a, b))


def _compare(fn):
    def compare(x1, x2):
        return _result(xp().asarray(fn(data(operand(x1)), data(operand(x2)))))

    return compare


equal = _compare(lambda a, b: a == b)
not_equal = _compare(lambda a, b: a != b)
greater = _compare(lambda a, b: a > b)
greater_equal = _compare(lambda a, b: a >= b)
less = _compare(lambda a, b: a < b)
less_equal = _compare(lambda a, b: a <= b)
logical_and = _compare(lambda a, b: xp().logical_and(a, b))
logical_or = _compare(lambda a, b: xp().logical_or(a, b))
logical_xor = _compare(lambda a, b: xp().logical_xor(a, b))
for _name, _fn in (("equal", equal), ("not_equal", not_equal), ("greater", greater),
                   ("greater_equal", greater_equal), ("less", less), ("less_equal", less_equal),
                   ("logical_and", logical_and), ("logical_or", logical_or), ("logical_xor", logical_xor)):
    _fn.__name__ = _fn.__qualname__ = _name
    _fn.__doc__ = f"Elementwise ``{_name}`` of two broadcast operands, as a bool tensor (no gradient)."


# ---------------------------------------------------------------- elementwise, one operand


def _unary(op, x, compute, grad):
    """``compute(a)``; ``grad(g, a, y)`` the input gradient (None: the op has no gradient)."""
    x = convert_to_tensor(x)
    a = x.data
    y = fix_float64(xp().asarray(compute(a)), x)
    if grad is None:
        return _result(y)
    return record(op, y, (x,), lambda g, needs: (grad(g, a, y),))


def _float(x):
    """A float tensor: ints and bools become ``floatx()`` (Keras's rule for exp, log, sqrt...)."""
    x = convert_to_tensor(x)
    return x if x.data.dtype.kind in "fc" else x.astype(config.floatx())


def negative(x):
    return _unary("negative", x, lambda a: -a, lambda g, a, y: -g)


def absolute(x):
    return _unary("abs", x, lambda a: xp().abs(a), lambda g, a, y: g * xp().sign(a))


abs = absolute  # noqa: A001 (Keras's name)


def sign(x):
    return _unary("sign", x, lambda a: xp().sign(a), None)


def square(x):
    return _unary("square", x, lambda a: a * a, lambda g, a, y: g * (2 * a))


def sqrt(x):
    return _unary("sqrt", _float(x), lambda a: xp().sqrt(a), lambda g, a, y: g / (2 * y))


def reciprocal(x):
    return _unary("reciprocal", _float(x), lambda a: 1 / a, lambda g, a, y: -g * y * y)


def exp(x):
    return _unary("exp", _float(x), lambda a: xp().exp(a), lambda g, a, y: g * y)


def expm1(x):
    return _unary("expm1", _float(x), lambda a: xp().expm1(a), lambda g, a, y: g * (y + 1))


def log(x):
    return _unary("log", _float(x), lambda a: xp().log(a), lambda g, a, y: g / a)


def log1p(x):
    return _unary("log1p", _float(x), lambda a: xp().log1p(a), lambda g, a, y: g / (1 + a))


def log2(x):
    return _unary("log2", _float(x), lambda a: xp().log2(a), lambda g, a, y: g / (a * math.log(2)))


def log10(x):
    return _unary("log10", _float(x), lambda a: xp().log10(a), lambda g, a, y: g / (a * math.log(10)))


def sin(x):
    return _unary("sin", _float(x), lambda a: xp().sin(a), lambda g, a, y: g * xp().cos(a))


def cos(x):
    return _unary("cos", _float(x), lambda a: xp().cos(a), lambda g, a, y: -g * xp().sin(a))


def tan(x):
    return _unary("tan", _float(x), lambda a: xp().tan(a), lambda g, a, y: g * (1 + y * y))


def tanh(x):
    return _unary("tanh", _float(x), lambda a: xp().tanh(a), lambda g, a, y: g * (1 - y * y))


def sinh(x):
    return _unary("sinh", _float(x), lambda a: xp().sinh(a), lambda g, a, y: g * xp().cosh(a))


def cosh(x):
    return _unary("cosh", _float(x), lambda a: xp().cosh(a), lambda g, a, y: g * xp().sinh(a))


def arcsin(x):
    return _unary("arcsin", _float(x), lambda a: xp().arcsin(a), lambda g, a, y: g / xp().sqrt(1 - a * a))


def arccos(x):
    return _unary("arccos", _float(x), lambda a: xp().arccos(a), lambda g, a, y: -g / xp().sqrt(1 - a * a))


def arctan(x):
    return _unary("arctan", _float(x), lambda a: xp().arctan(a), lambda g, a, y: g / (1 + a * a))


def arcsinh(x):
    return _unary("arcsinh", _float(x), lambda a: xp().arcsinh(a), lambda g, a, y: g / xp().sqrt(a * a + 1))


def arctanh(x):
    return _unary("arctanh", _float(x), lambda a: xp().arctanh(a), lambda g, a, y: g / (1 - a * a))


def floor(x):
    return _unary("floor", x, lambda a: xp().floor(a), None)


def ceil(x):
    return _unary("ceil", x, lambda a: xp().ceil(a), None)


def round(x, decimals=0):  # noqa: A001 (Keras's name)
    return _unary("round", x, lambda a: xp().round(a, decimals), None)


def isnan(x):
    return _unary("isnan", x, lambda a: xp().isnan(a), None)


def isinf(x):
    return _unary("isinf", x, lambda a: xp().isinf(a), None)


def isfinite(x):
    return _unary("isfinite", x, lambda a: xp().isfinite(a), None)


def logical_not(x):
    return _unary("logical_not", x, lambda a: xp().logical_not(a), None)


def bitwise_invert(x):
    return _unary("bitwise_invert", x, lambda a: ~a, None)


def clip(x, x_min, x_max):
    """``x`` limited to ``[x_min, x_max]``; the gradient passes where ``x_min <= x <= x_max``.

    Tensor bounds get the gradient of the entries they clip.
    """
    x = convert_to_tensor(x)
    lo, hi = operand(x_min), operand(x_max)
    a, lod, hid = x.data, data(lo), data(hi)
    y = xp().minimum(xp().maximum(a, lod), hid).astype(a.dtype, copy=False)
    inputs = (x, lo if isinstance(lo, Tensor) else None, hi if isinstance(hi, Tensor) else None)

    def backward(g, needs):
        below, above = a < lod, a > hid
        gx = g * ~(below | above) if needs[0] else None
        glo = unbroadcast(g * (below & ~above), lod.shape) if needs[1] else None
        ghi = unbroadcast(g * above, hid.shape) if needs[2] else None
        return gx, glo, ghi

    return record("clip", y, inputs, backward)


def where(condition, x1=None, x2=None):
    """``x1`` where ``condition`` holds, else ``x2`` (broadcast); with one argument, the indices of true entries."""
    cond = data(convert_to_tensor(condition))
    if x1 is None and x2 is None:
        return tuple(_result(i) for i in xp().nonzero(cond))
    if x1 is None or x2 is None:
        raise ValueError("`x1` and `x2` must be given together: ops.where(condition) or ops.where(condition, x1, x2).")
    cond = cond.astype(bool, copy=False)
    a, b = operand(x1), operand(x2)
    ad, bd = data(a), data(b)
    y = fix_float64(xp().asarray(xp().where(cond, ad, bd)), a, b)
    inputs = (a if isinstance(a, Tensor) else None, b if isinstance(b, Tensor) else None)

    def backward(g, needs):
        zero = xp().zeros((), dtype=g.dtype)
        return (
            unbroadcast(xp().where(cond, g, zero), ad.shape) if needs[0] else None,
            unbroadcast(xp().where(cond, zero, g), bd.shape) if needs[1] else None,
        )

    return record("where", y, inputs, backward)


# ---------------------------------------------------------------- reductions


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
    return _result(xp().asarray(xp().any(x.data, axis=_reduction_axes(x, axis), keepdims=keepdims)))


def all(x, axis=None, keepdims=False):  # noqa: A001 (Keras's name)
    x = convert_to_tensor(x)
    return _result(xp().asarray(xp().all(x.data, axis=_reduction_axes(x, axis), keepdims=keepdims)))


def count_nonzero(x, axis=None):
    x = convert_to_tensor(x)
    return _result(xp().asarray(xp().count_nonzero(x.data, axis=_reduction_axes(x, axis))).astype("int32"))


def _arg(fn):
    def arg(x, axis=None, keepdims=False):
        a = convert_to_tensor(x).data
        if axis is None:
            out = fn(a.reshape(-1), axis=0)
            if keepdims:
                out = xp().asarray(out).reshape((1,) * a.ndim)
        else:
            out = fn(a, axis=int(axis), keepdims=keepdims)
        return _result(xp().asarray(out).astype("int32"))

    return arg


argmax = _arg(lambda a, axis, keepdims=False: xp().argmax(a, axis=axis, keepdims=keepdims))
argmin = _arg(lambda a, axis, keepdims=False: xp().argmin(a, axis=axis, keepdims=keepdims))
argmax.__name__, argmin.__name__ = "argmax", "argmin"
argmax.__doc__ = "Index of the largest entry along ``axis`` (the first on ties), int32; no gradient."
argmin.__doc__ = "Index of the smallest entry along ``axis`` (the first on ties), int32; no gradient."


def argsort(x, axis=-1):
    """Indices that sort ``x`` along ``axis`` (stable), int32; no gradient."""
    a = convert_to_tensor(x).data
    return _result(xp().argsort(a, axis=axis, kind="stable").astype("int32"))


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


# ---------------------------------------------------------------- linear algebra


def matmul(x1, x2):
    """NumPy's ``matmul`` (batch axes broadcast; 1-D operands are vectors)."""
    a, b = convert_to_tensor(x1), convert_to_tensor(x2)
    ad, bd = a.data, b.data
    if ad.ndim == 0 or bd.ndim == 0:
        raise ValueError(f"matmul needs operands of rank >= 1. Received shapes {ad.shape} and {bd.shape}")
    y = fix_float64(xp().asarray(xp().matmul(ad, bd)), a, b)

    def backward(g, needs):
        a2 = ad[None, :] if ad.ndim == 1 else ad
        b2 = bd[:, None] if bd.ndim == 1 else bd
        g2 = g
        if bd.ndim == 1:
            g2 = g2[..., None]
        if ad.ndim == 1:
            g2 = g2[..., None, :]
        ga = gb = None
        if needs[0]:
            ga = xp().matmul(g2, xp().swapaxes(b2, -1, -2))
            ga = unbroadcast(ga, a2.shape).reshape(ad.shape)
        if needs[1]:
            if b2.ndim == 2 and a2.ndim > 2:
                # (N, ..., K) @ (K, M): one GEMM over all rows instead of a batch then a sum.
                k = a2.shape[-1]
                gb = a2.reshape(-1, k).T @ g2.reshape(-1, g2.shape[-1])
            else:
                gb = unbroadcast(xp().matmul(xp().swapaxes(a2, -1, -2), g2), b2.shape)
            gb = gb.reshape(bd.shape)
        return ga, gb

    return record("matmul", y, (a, b), backward)


def _tensordot_axes(axes, ndim_a, ndim_b):
    if isinstance(axes, (numbers.Integral, np.integer)):
        n = int(axes)
        return list(range(ndim_a - n, ndim_a)), list(range(n))
    left, right = axes
    left = [left] if isinstance(left, (numbers.Integral, np.integer)) else list(left)
    right = [right] if isinstance(right, (numbers.Integral, np.integer)) else list(right)
    return [int(i) % ndim_a for i in left], [int(i) % ndim_b for i in right]


def tensordot(x1, x2, axes=2):
    """Sum of products over the given axes of ``x1`` and ``x2`` (NumPy's ``tensordot``)."""
    a, b = convert_to_tensor(x1), convert_to_tensor(x2)
    ad, bd = a.data, b.data
    a_axes, b_axes = _tensordot_axes(axes, ad.ndim, bd.ndim)
    y = fix_float64(xp().asarray(xp().tensordot(ad, bd, axes=(a_axes, b_axes))), a, b)
    a_free = [i for i in range(ad.ndim) if i not in a_axes]
    b_free = [i for i in range(bd.ndim) if i not in b_axes]

    def backward(g, needs):
        ga = gb = None
        if needs[0]:
            part = xp().tensordot(g, bd, axes=(list(range(len(a_free), g.ndim)), b_free))
            ga = part.transpose(np.argsort(a_free + a_axes))
        if needs[1]:
            part = xp().tensordot(ad, g, axes=(a_free, list(range(len(a_free)))))
            gb = part.transpose(np.argsort(b_axes + b_free))
        return ga, gb

    return record("tensordot", y, (a, b), backward)


def dot(x1, x2):
    """NumPy's ``dot``: products of scalars, inner products of vectors, matrix products, and
    sums over the last axis of ``x1`` and the second-to-last of ``x2``."""
    a, b = convert_to_tensor(x1), convert_to_tensor(x2)
    if a.ndim == 0 or b.ndim == 0:
        return multiply(a, b)
    if b.ndim == 1:
        return tensordot(a, b, axes=([a.ndim - 1], [0]))
    return tensordot(a, b, axes=([a.ndim - 1], [b.ndim - 2]))


def outer(x1, x2):
    """Outer product of the flattened operands."""
    a, b = ravel(x1), ravel(x2)
    return multiply(reshape(a, (-1, 1)), reshape(b, (1, -1)))


_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _einsum_spec(subscripts, shapes):
    """Explicit subscripts: ellipses replaced by letters, the implicit output written out."""
    spec = subscripts.replace(" ", "")
    inputs, arrow, output = spec.partition("->")
    terms = inputs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(f"einsum: {len(terms)} operands in {subscripts!r}, {len(shapes)} given.")
    free = [c for c in _LETTERS if c not in spec]
    n_ell = builtins.max([len(s) - (len(t) - 3) for t, s in zip(terms, shapes) if "..." in t] or [0])
    ell = "".join(free[:n_ell])
    out_terms = []
    for t, s in zip(terms, shapes):
        if "..." in t:
            k = len(s) - (len(t) - 3)
            t = t.replace("...", ell[n_ell - k:] if k else "")
        if len(t) != len(s):
            raise ValueError(f"einsum: term {t!r} does not match an operand of rank {len(s)}.")
        out_terms.append(t)
    if arrow:
        output = output.replace("...", ell)
    else:
        counts = {}
        for t in out_terms:
            for c in t:
                counts[c] = counts.get(c, 0) + 1
        output = ell + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in ell))
    return out_terms, output


def einsum(subscripts, *operands):
    """Einstein summation (NumPy's ``einsum``), with gradients for every operand.

    A letter repeated within one operand (a diagonal, ``"ii->i"``) has no gradient.
    """
    tensors = [convert_to_tensor(o) for o in operands]
    datas = [t.data for t in tensors]
    terms, output = _einsum_spec(subscripts, [d.shape for d in datas])
    spec = ",".join(terms) + "->" + output
    y = fix_float64(xp().asarray(xp().einsum(spec, *datas)), *tensors)

    def backward(g, needs):
        grads = []
        for i, (term, d) in enumerate(zip(terms, datas)):
            if not needs[i]:
                grads.append(None)
                continue
            if len(set(term)) != len(term):
                raise NotImplementedError(
                    f"einsum has no gradient for an operand with a repeated letter ({term!r} in {subscripts!r})."
                )
            others = [terms[j] for j in range(len(terms)) if j != i]
            seen = set(output).union(*others) if others else set(output)
            kept = "".join(c for c in term if c in seen)
            part = xp().einsum(",".join([output] + others) + "->" + kept, g, *[datas[j] for j in range(len(datas)) if j != i])
            shape = [1] * len(term)
            for c, n in zip(kept, part.shape):
                shape[term.index(c)] = n
            part = part.reshape(shape)
            stretched = tuple(k for k, (n, m) in enumerate(zip(d.shape, shape)) if n == 1 and m != 1)
            if stretched:  # broadcast ellipsis axes: sum back to size 1
                part = part.sum(axis=stretched, keepdims=True)
            grads.append(xp().broadcast_to(part, d.shape))
        return grads

    return record("einsum", y, tensors, backward)


# ---------------------------------------------------------------- shapes


def reshape(x, newshape):
    x = convert_to_tensor(x)
    shape = x.data.shape
    newshape = (newshape,) if isinstance(newshape, (numbers.Integral, np.integer)) else tuple(int(d) for d in newshape)
    return record("reshape", x.data.reshape(newshape), (x,), lambda g, needs: (g.reshape(shape),))


def ravel(x):
    return reshape(x, (-1,))


def transpose(x, axes=None):
    x = convert_to_tensor(x)
    axes = tuple(range(x.ndim))[::-1] if axes is None else tuple(int(a) % builtins.max(x.ndim, 1) for a in axes)
    inverse = tuple(np.argsort(axes))
    return record("transpose", x.data.transpose(axes), (x,), lambda g, needs: (g.transpose(inverse),))


def moveaxis(x, source, destination):
    x = convert_to_tensor(x)
    src = [int(a) % x.ndim for a in ((source,) if isinstance(source, (numbers.Integral, np.integer)) else source)]
    dst = [int(a) % x.ndim for a in ((destination,) if isinstance(destination, (numbers.Integral, np.integer)) else destination)]
    order = [n for n in range(x.ndim) if n not in src]
    for d, a in sorted(zip(dst, src)):
        order.insert(d, a)
    return transpose(x, order)


def swapaxes(x, axis1, axis2):
    x = convert_to_tensor(x)
    order = list(range(x.ndim))
    a1, a2 = int(axis1) % x.ndim, int(axis2) % x.ndim
    order[a1], order[a2] = order[a2], order[a1]
    return transpose(x, order)


def expand_dims(x, axis):
    x = convert_to_tensor(x)
    axes = (axis,) if isinstance(axis, (numbers.Integral, np.integer)) else tuple(axis)
    out_ndim = x.ndim + len(axes)
    shape = list(x.shape)
    for a in sorted(int(a) % out_ndim for a in axes):
        shape.insert(a, 1)
    return reshape(x, shape)


def squeeze(x, axis=None):
    x = convert_to_tensor(x)
    if axis is None:
        axes = tuple(i for i, n in enumerate(x.shape) if n == 1)
    else:
        axes = normalize_axes(axis, x.ndim)
        bad = [a for a in axes if x.shape[a] != 1]
        if bad:
            raise ValueError(f"Cannot squeeze axis {bad[0]} of a tensor of shape {x.shape}: its size is not 1.")
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if i not in axes))


def broadcast_to(x, shape):
    x = convert_to_tensor(x)
    a = x.data
    y = xp().broadcast_to(a, tuple(int(d) for d in shape))
    return record("broadcast_to", y, (x,), lambda g, needs: (unbroadcast(g, a.shape),))


def flip(x, axis=None):
    x = convert_to_tensor(x)
    axes = _reduction_axes(x, axis)
    return record("flip", xp().flip(x.data, axes), (x,), lambda g, needs: (xp().flip(g, axes),))


def concatenate(xs, axis=0):
    """Join tensors along ``axis``."""
    tensors = [convert_to_tensor(x) for x in xs]
    if not tensors:
        raise ValueError("concatenate needs at least one tensor.")
    ax = normalize_axes(axis, tensors[0].ndim)[0]
    y = xp().concatenate([t.data for t in tensors], axis=ax)
    bounds = np.cumsum([t.data.shape[ax] for t in tensors])[:-1]

    def backward(g, needs):
        parts = xp().split(g, [int(b) for b in bounds], axis=ax)
        return [p if n else None for p, n in zip(parts, needs)]

    return record("concatenate", y, tensors, backward)


def hstack(xs):
    tensors = [convert_to_tensor(x) for x in xs]
    return concatenate(tensors, axis=0 if tensors and tensors[0].ndim == 1 else 1)


def vstack(xs):
    tensors = [convert_to_tensor(x) for x in xs]
    return concatenate([t if t.ndim > 1 else reshape(t, (1, -1)) for t in tensors], axis=0)


def stack(x, axis=0):
    """Join tensors of one shape along a new ``axis``."""
    tensors = [convert_to_tensor(t) for t in x]
    if not tensors:
        raise ValueError("stack needs at least one tensor.")
    y = xp().stack([t.data for t in tensors], axis=axis)
    ax = int(axis) % y.ndim

    def backward(g, needs):
        return [xp().take(g, i, axis=ax) if n else None for i, n in enumerate(needs)]

    return record("stack", y, tensors, backward)


def split(x, indices_or_sections, axis=0):
    """Split ``x`` along ``axis`` into equal sections or at the given indices; returns a list."""
    x = convert_to_tensor(x)
    ax = normalize_axes(axis, x.ndim)[0]
    sections = indices_or_sections
    if not isinstance(sections, (numbers.Integral, np.integer)):
        sections = [int(i) for i in sections]
    parts = tuple(xp().split(x.data, sections, axis=ax))
    outputs = record("split", parts, (x,), lambda gs, needs: (xp().concatenate(gs, axis=ax),))
    return list(outputs)


def tile(x, repeats):
    x = convert_to_tensor(x)
    reps = (int(repeats),) if isinstance(repeats, (numbers.Integral, np.integer)) else tuple(int(r) for r in repeats)
    n = builtins.max(x.ndim, len(reps))
    shape = (1,) * (n - x.ndim) + x.shape
    reps = (1,) * (n - len(reps)) + reps
    y = xp().tile(x.data, reps)
    original = x.shape

    def backward(g, needs):
        interleaved = []
        for r, s in zip(reps, shape):
            interleaved += [r, s]
        return (g.reshape(interleaved).sum(axis=tuple(range(0, 2 * n, 2))).reshape(original),)

    return record("tile", y, (x,), backward)


def _scatter(how, target, index, values):
    """``target[index] += values`` (``how="add"``) or ``= maximum(target[index], values)`` (``"max"``), with
    repeated indices accumulating, in place."""
    if isinstance(target, np.ndarray):
        (np.add if how == "add" else np.maximum).at(target, index, values)
    else:
        import cupyx

        (cupyx.scatter_add if how == "add" else cupyx.scatter_max)(target, index, values)
    return target


def _scatter_add(target, index, values):
    return _scatter("add", target, index, values)


def repeat(x, repeats, axis=None):
    x = convert_to_tensor(x)
    a = x.data
    if axis is None:
        a_flat, ax = a.reshape(-1), 0
    else:
        a_flat, ax = a, normalize_axes(axis, a.ndim)[0]
    reps = data(repeats)
    y = xp().repeat(a_flat, reps, axis=ax)
    n = a_flat.shape[ax]

    def backward(g, needs):
        source = xp().repeat(xp().arange(n), reps)
        moved = xp().moveaxis(g, ax, 0)
        out = xp().zeros((n,) + moved.shape[1:], dtype=g.dtype)
        _scatter_add(out, source, moved)
        return (xp().moveaxis(out, 0, ax).reshape(a.shape),)

    return record("repeat", y, (x,), backward)


def pad(x, pad_width, mode="constant", constant_values=None):
    """Pad ``x`` (NumPy's ``pad``). Modes that move entries (constant, edge, reflect,
    symmetric, wrap) are differentiable; statistics modes (mean, median...) are not."""
    x = convert_to_tensor(x)
    a = x.data
    width = np.broadcast_to(np.asarray(pad_width, dtype=np.int64), (a.ndim, 2))
    kwargs = {"constant_values": constant_values} if mode == "constant" and constant_values is not None else {}
    y = xp().pad(a, [tuple(int(v) for v in row) for row in width], mode=mode, **kwargs)
    if mode == "constant":
        key = tuple(builtins.slice(int(lo), int(lo) + n) for (lo, _), n in zip(width, a.shape))
        return record("pad", y, (x,), lambda g, needs: (g[key],))
    if mode not in ("edge", "reflect", "symmetric", "wrap"):
        return _result(y)

    def backward(g, needs):
        # The entries each output cell copies, found by padding an index array the same way.
        index = xp().arange(a.size).reshape(a.shape)
        source = xp().pad(index, [tuple(int(v) for v in row) for row in width], mode=mode).reshape(-1)
        out = xp().bincount(source, weights=g.reshape(-1).astype(np.float64), minlength=a.size)
        return (out.astype(g.dtype).reshape(a.shape),)

    return record("pad", y, (x,), backward)


def _index_array(indices):
    """Indices as a raw integer array (floats holding whole numbers are accepted, as Keras's take)."""
    idx = data(convert_to_tensor(indices))
    return idx if idx.dtype.kind in "iu" else idx.astype(np.int64)


def take(x, indices, axis=None):
    """Entries of ``x`` at ``indices`` along ``axis`` (None: of the flattened ``x``)."""
    x = convert_to_tensor(x)
    a, idx = x.data, _index_array(indices)
    if axis is None:
        flat = a.reshape(-1)
        y = xp().take(flat, idx)

        def backward(g, needs):
            out = xp().zeros(flat.shape, dtype=g.dtype)
            _scatter_add(out, idx.reshape(-1), g.reshape(-1))
            return (out.reshape(a.shape),)

        return record("take", y, (x,), backward)
    ax = normalize_axes(axis, a.ndim)[0]
    y = xp().take(a, idx, axis=ax)

    def backward(g, needs):
        moved = xp().moveaxis(xp().zeros(a.shape, dtype=g.dtype), ax, 0)
        # g's axes: a[:ax], idx's, a[ax+1:]; bring idx's to the front.
        order = list(range(ax, ax + idx.ndim)) + list(range(ax)) + list(range(ax + idx.ndim, g.ndim))
        _scatter_add(moved, idx, g.transpose(order))
        return (xp().moveaxis(moved, 0, ax),)

    return record("take", y, (x,), backward)


def take_along_axis(x, indices, axis=None):
    """NumPy's ``take_along_axis`` (None: along the flattened ``x``)."""
    x = convert_to_tensor(x)
    a, idx = x.data, _index_array(indices)
    source = a.reshape(-1) if axis is None else a
    ax = 0 if axis is None else normalize_axes(axis, a.ndim)[0]
    y = xp().take_along_axis(source, idx, axis=ax)

    def backward(g, needs):
        out = xp().zeros(source.shape, dtype=g.dtype)
        full = [xp().broadcast_to(i, y.shape) for i in xp().ogrid[tuple(builtins.slice(0, n) for n in y.shape)]]
        full[ax] = xp().broadcast_to(idx, y.shape)
        _scatter_add(out, tuple(full), g)
        return (out.reshape(a.shape),)

    return record("take_along_axis", y, (x,), backward)


def _raw_key(key):
    """An index with Tensors replaced by their arrays; whether it uses advanced (array) indexing."""
    items = key if isinstance(key, tuple) else (key,)
    raw, advanced = [], False
    for k in items:
        if isinstance(k, Tensor):
            k = k.data
        if isinstance(k, list) or (hasattr(k, "dtype") and getattr(k, "ndim", 0) >= 0 and not is_scalar(k)):
            k = xp().asarray(k)
            advanced = True
        raw.append(k)
    return (tuple(raw) if isinstance(key, tuple) else raw[0]), advanced


def get_item(x, key):
    """``x[key]`` with NumPy's basic and advanced indexing; repeated indices accumulate gradients."""
    x = convert_to_tensor(x)
    a = x.data
    key, advanced = _raw_key(key)
    y = a[key]
    if not hasattr(y, "shape"):
        y = xp().asarray(y)

    def backward(g, needs):
        out = xp().zeros(a.shape, dtype=g.dtype)
        if advanced:
            _scatter_add(out, key, g)
        else:
            out[key] = g
        return (out,)

    return record("get_item", y, (x,), backward)


def tril(x, k=0):
    x = convert_to_tensor(x)
    return record("tril", xp().tril(x.data, k), (x,), lambda g, needs: (xp().tril(g, k),))


def triu(x, k=0):
    x = convert_to_tensor(x)
    return record("triu", xp().triu(x.data, k), (x,), lambda g, needs: (xp().triu(g, k),))


# ---------------------------------------------------------------- creation (no gradient)


def _dtype_or_floatx(dtype):
    return standardize_dtype(dtype) or config.floatx()


def _shape_arg(shape):
    return (int(shape),) if isinstance(shape, (numbers.Integral, np.integer)) else tuple(int(d) for d in shape)


def zeros(shape, dtype=None):
    return _result(xp().zeros(_shape_arg(shape), dtype=_dtype_or_floatx(dtype)))


def ones(shape, dtype=None):
    return _result(xp().ones(_shape_arg(shape), dtype=_dtype_or_floatx(dtype)))


def empty(shape, dtype=None):
    return _result(xp().empty(_shape_arg(shape), dtype=_dtype_or_floatx(dtype)))


def full(shape, fill_value, dtype=None):
    return _result(xp().full(_shape_arg(shape), data(fill_value), dtype=_dtype_or_floatx(dtype)))


def zeros_like(x, dtype=None):
    a = convert_to_tensor(x).data
    return _result(xp().zeros(a.shape, dtype=standardize_dtype(dtype) or a.dtype))


def ones_like(x, dtype=None):
    a = convert_to_tensor(x).data
    return _result(xp().ones(a.shape, dtype=standardize_dtype(dtype) or a.dtype))


def full_like(x, fill_value, dtype=None):
    a = convert_to_tensor(x).data
    return _result(xp().full(a.shape, data(fill_value), dtype=standardize_dtype(dtype) or a.dtype))


def eye(N, M=None, k=0, dtype=None):
    return _result(xp().eye(int(N), None if M is None else int(M), int(k), dtype=_dtype_or_floatx(dtype)))


def identity(n, dtype=None):
    return eye(n, dtype=dtype)


def arange(start, stop=None, step=1, dtype=None):
    """Evenly spaced values in ``[start, stop)``: int32 for int arguments, ``floatx()`` for floats."""
    values = [v for v in (start, stop, step) if v is not None]
    if dtype is None:
        dtype = "int32" if builtins.all(isinstance(data(v), (numbers.Integral, np.integer)) for v in values) else config.floatx()
    if stop is None:
        start, stop = 0, start
    return _result(xp().arange(data(start), data(stop), data(step), dtype=standardize_dtype(dtype)))


def linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0):
    out = xp().linspace(data(start), data(stop), int(num), endpoint=endpoint, retstep=retstep, axis=axis)
    if retstep:
        values, step = out
        return _result(values.astype(_dtype_or_floatx(dtype))), step
    return _result(out.astype(_dtype_or_floatx(dtype)))


# The NumPy ufuncs a Tensor answers with the matching op (``np.exp(tensor)``, ``ndarray + tensor``).
UFUNCS = {
    np.add: add, np.subtract: subtract, np.multiply: multiply, np.true_divide: true_divide,
    np.power: power, np.maximum: maximum, np.minimum: minimum, np.logaddexp: logaddexp, np.mod: mod,
    np.floor_divide: floor_divide, np.negative: negative, np.absolute: absolute, np.sign: sign,
    np.square: square, np.sqrt: sqrt, np.reciprocal: reciprocal, np.exp: exp, np.expm1: expm1, np.log: log,
    np.log1p: log1p, np.log2: log2, np.log10: log10, np.sin: sin, np.cos: cos, np.tan: tan, np.tanh: tanh,
    np.sinh: sinh, np.cosh: cosh, np.arcsin: arcsin, np.arccos: arccos, np.arctan: arctan, np.arcsinh: arcsinh,
    np.arctanh: arctanh, np.floor: floor, np.ceil: ceil, np.isnan: isnan, np.isinf: isinf, np.isfinite: isfinite,
    np.matmul: matmul, np.equal: equal, np.not_equal: not_equal, np.greater: greater,
    np.greater_equal: greater_equal, np.less: less, np.less_equal: less_equal, np.logical_and: logical_and,
    np.logical_or: logical_or, np.logical_xor: logical_xor, np.logical_not: logical_not,
}

