"""Core ops (``keras.ops`` core): conversion, casting, shapes, ``stop_gradient``,
and the pieces every op module shares (operand conversion, dtype rules,
reducing a broadcast gradient back to an operand's shape).

Dtype rules, as Keras's: Python numbers are "weak" (``float32_tensor * 2.0``
stays float32; ``int_tensor * 2.5`` becomes ``floatx()``); Python lists of
ints become int32 and of floats ``floatx()``; NumPy arrays keep their dtype.
"""

import builtins
import numbers

import numpy as np

from backends import get_ops
from gpulayers import config
from gpulayers.autodiff import Tensor, as_tensor, record, unwrap

__all__ = [
    "cast",
    "convert_to_numpy",
    "convert_to_tensor",
    "dtype",
    "is_tensor",
    "shape",
    "slice",
    "slice_update",
    "stop_gradient",
    "unstack",
]

_FLOAT_KINDS = "f"


def xp():
    """The active backend's array namespace (numpy or cupy)."""
    return get_ops().xp


def is_scalar(x):
    """A Python (or NumPy) number: kept as a weak scalar in arithmetic."""
    return isinstance(x, (numbers.Number, np.generic)) and not isinstance(x, np.ndarray)


def standardize_dtype(dtype):
    """A dtype name (``'float32'``); None stays None. Keras's names and numpy/cupy dtypes accepted."""
    if dtype is None:
        return None
    name = dtype if isinstance(dtype, str) else getattr(dtype, "name", dtype)
    if name == "float":
        return config.floatx()
    if name == "int":
        return "int32"
    try:
        return np.dtype(name).name
    except TypeError:
        raise ValueError(f"Invalid value for `dtype`: {dtype!r} is not a dtype.") from None


def operand(x):
    """An op's input: a Tensor, or a Python number kept as it is (weak typing)."""
    if isinstance(x, Tensor):
        return as_tensor(x)  # a Variable inside a mixed-precision layer reads in its compute dtype
    if is_scalar(x):
        return x
    return convert_to_tensor(x)


def data(x):
    """The raw array (or Python number) behind an operand."""
    return x.data if isinstance(x, Tensor) else x


def fix_float64(y, *operands):
    """NumPy turns ``int_array * 2.5`` and ``int / int`` into float64; Keras gives ``floatx()``.

    Only when no operand is a float64 array: float64 inputs keep float64 results.
    """
    if y.dtype != np.float64:
        return y
    for x in operands:
        d = getattr(data(x), "dtype", None)
        if d is not None and d == np.float64:
            return y
    return y.astype(config.floatx())


def unbroadcast(g, shape):
    """Sum ``g`` over the axes broadcasting added or stretched, back to ``shape``."""
    shape = tuple(shape)
    if tuple(g.shape) == shape:
        return g
    lead = g.ndim - len(shape)
    if len(shape) >= 1 and shape[-1] == g.shape[-1] and all(n == 1 for n in shape[:-1]) and g.ndim > 1:
        # A bias-like (C,) operand: the backend's channel sum (a GEMV against ones) is much faster.
        return get_ops().channel_sum(g, g.ndim - 1).reshape(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1)
    out = g.sum(axis=axes) if axes else g
    return out.reshape(shape)


def normalize_axes(axis, ndim):
    """``axis`` (None, an int or a sequence) as a sorted tuple of non-negative ints, checked against ``ndim``."""
    if axis is None:
        return tuple(range(ndim))
    items = (axis,) if isinstance(axis, (numbers.Integral, np.integer)) else tuple(axis)
    out = []
    for a in items:
        if isinstance(a, bool) or not isinstance(a, (numbers.Integral, np.integer)) or not -ndim <= a < max(ndim, 1):
            raise ValueError(f"Invalid value for `axis`: {axis!r} is out of range for a tensor of rank {ndim}.")
        out.append(int(a) % max(ndim, 1))
    if len(set(out)) != len(out):
        raise ValueError(f"Invalid value for `axis`: repeated axes in {axis!r}.")
    return tuple(sorted(out))


def is_int(value):
    """An int or NumPy integer, not a bool."""
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_real(value, name):
    """A real number (not a bool) as a float; TypeError naming ``name`` otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.number)):
        raise TypeError(f"Invalid type for `{name}`: expected a number. Received: {name}={value!r}")
    return float(value)


def normalize_axis(axis, ndim, name="axis"):
    """One axis as a non-negative int."""
    if not is_int(axis):
        raise ValueError(f"Invalid value for `{name}`: expected an int. Received: {name}={axis!r}")
    if not -ndim <= axis < builtins.max(ndim, 1):
        raise ValueError(f"Invalid value for `{name}`: axis {axis} is out of range for a tensor of rank {ndim}.")
    return int(axis) % builtins.max(ndim, 1)


# ---------------------------------------------------------------- public core ops


def convert_to_tensor(x, dtype=None, sparse=None, ragged=None):
    """``x`` as a Tensor of the active backend (a Tensor or Variable is returned as it is, or cast).

    Python lists and numbers of ints become int32, of floats ``floatx()``;
    arrays keep their dtype unless ``dtype`` is given.
    """
    if sparse:
        raise ValueError("Invalid value for `sparse`: gpulayers has no sparse tensors. Received: sparse=True")
    if ragged:
        raise ValueError("Invalid value for `ragged`: gpulayers has no ragged tensors. Received: ragged=True")
    dtype = standardize_dtype(dtype)
    if isinstance(x, Tensor):
        x = as_tensor(x)  # inside a mixed-precision layer a Variable reads in its compute dtype, as in Keras
        return x if dtype is None or x.data.dtype == np.dtype(dtype) else cast(x, dtype)
    if isinstance(x, (list, tuple)) and any(isinstance(v, Tensor) for v in _flat(x)):
        from gpulayers.ops import numpy as numpy_ops  # lists of tensors are stacked (differentiably)

        out = numpy_ops.stack([convert_to_tensor(v) for v in x])
        return out if dtype is None else cast(out, dtype)
    if dtype is None and not hasattr(x, "dtype"):
        if isinstance(x, bool) or (isinstance(x, (list, tuple)) and _all(x, lambda v: isinstance(v, bool))):
            dtype = "bool"
        elif isinstance(x, numbers.Integral) or (isinstance(x, (list, tuple)) and _all(x, lambda v: isinstance(v, numbers.Integral))):
            dtype = "int32"
        elif isinstance(x, numbers.Real) or isinstance(x, (list, tuple)):
            host = np.asarray(x)
            dtype = config.floatx() if host.dtype.kind == "f" else None
    return as_tensor(unwrap(x), dtype)


def _flat(x):
    for v in x:
        if isinstance(v, (list, tuple)):
            yield from _flat(v)
        else:
            yield v


def _all(x, test):
    items = list(_flat(x))
    return bool(items) and all(test(v) for v in items)


def convert_to_numpy(x):
    """A NumPy copy of ``x`` (a Tensor, a Variable, a backend array or anything array-like)."""
    raw = unwrap(x)
    if isinstance(raw, np.ndarray):
        return raw.copy()
    return get_ops().to_numpy(raw) if hasattr(raw, "shape") else np.asarray(raw)


def is_tensor(x):
    """Whether ``x`` is a gpulayers Tensor (Variables are tensors too)."""
    return isinstance(x, Tensor)


def shape(x):
    """The shape of ``x`` as a tuple of ints."""
    return tuple(int(d) for d in getattr(unwrap(x), "shape", np.shape(x)))


def dtype(x):
    """The dtype name of ``x`` (``'float32'``)."""
    return standardize_dtype(getattr(unwrap(x), "dtype", None) or convert_to_tensor(x).dtype)


def cast(x, dtype):
    """``x`` as ``dtype``; differentiable between float dtypes (no gradient flows into ints or bools)."""
    x = convert_to_tensor(x)
    target = np.dtype(standardize_dtype(dtype))
    if x.data.dtype == target:
        return x
    y = x.data.astype(target)
    source = x.data.dtype
    if target.kind not in _FLOAT_KINDS or source.kind not in _FLOAT_KINDS:
        return Tensor(y)
    return record("cast", y, (x,), lambda g, needs: (g.astype(source),))


def stop_gradient(x):
    """``x``'s value, through which no gradient flows."""
    return Tensor(convert_to_tensor(x).data)


def slice(inputs, start_indices, shape):  # noqa: A001 (Keras's name)
    """``inputs[start : start + shape]`` on every axis (Keras's ``ops.slice``)."""
    x = convert_to_tensor(inputs)
    return x[tuple(builtins.slice(int(s), int(s) + int(n)) for s, n in zip(start_indices, shape))]


def slice_update(inputs, start_indices, updates):
    """A copy of ``inputs`` with the block at ``start_indices`` replaced by ``updates`` (differentiable in both)."""
    x = convert_to_tensor(inputs)
    u = convert_to_tensor(updates, dtype=x.dtype)
    key = tuple(builtins.slice(int(s), int(s) + int(n)) for s, n in zip(start_indices, u.shape))
    y = x.data.copy()
    y[key] = u.data

    def backward(g, needs):
        gx = None
        if needs[0]:
            gx = g.copy()
            gx[key] = 0
        return gx, (g[key] if needs[1] else None)

    return record("slice_update", y, (x, u), backward)


def unstack(x, num=None, axis=0):
    """The slices of ``x`` along ``axis``, as a list of tensors."""
    x = convert_to_tensor(x)
    axis = normalize_axes(axis, x.ndim)[0]
    n = x.shape[axis]
    if num is not None and int(num) != n:
        raise ValueError(f"Invalid value for `num`: axis {axis} has {n} entries. Received: num={num!r}")
    index = [builtins.slice(None)] * x.ndim
    out = []
    for i in range(n):
        index[axis] = i
        out.append(x[tuple(index)])
    return out
