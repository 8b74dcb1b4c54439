"""Elementwise ops of the NumPy-like family: arithmetic, comparisons, the unary maths, ``clip`` and ``where``.

Broadcasting follows NumPy; each gradient is unbroadcast back to its operand's
shape. Ties in ``maximum``/``minimum`` share the gradient equally; ``abs`` and
``sign`` have slope 0 at 0; comparisons and rounding have no gradient.
"""

import math

from gpulayers import config
from gpulayers.autodiff import Tensor, record
from gpulayers.ops.core import (
    convert_to_tensor,
    data,
    fix_float64,
    is_scalar,
    operand,
    unbroadcast,
    xp,
)

__all__ = [
    "abs", "absolute", "add", "arccos", "arcsin", "arcsinh", "arctan", "arctanh", "ceil", "clip", "cos", "cosh",
    "divide", "divide_no_nan", "equal", "exp", "expm1", "floor", "floor_divide", "greater", "greater_equal",
    "isfinite", "isinf", "isnan", "less", "less_equal", "log", "log10", "log1p", "log2", "logaddexp", "logical_and",
    "logical_not", "logical_or", "logical_xor", "maximum", "minimum", "mod", "multiply", "negative", "not_equal",
    "power", "reciprocal", "round", "sign", "sin", "sinh", "sqrt", "square", "subtract", "tan", "tanh",
    "true_divide", "where",
]

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
    return Tensor(fix_float64(xp().asarray(xp().floor_divide(data(a), data(b))), a, b))


def _compare(fn):
    def compare(x1, x2):
        return Tensor(xp().asarray(fn(data(operand(x1)), data(operand(x2)))))

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
        return Tensor(y)
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
        return tuple(Tensor(i) for i in xp().nonzero(cond))
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
