"""NumPy-like ops (``keras.ops`` numpy namespace), each differentiable on the tape.

Every function takes Tensors, Variables, backend arrays, array-likes or
Python numbers, broadcasts as NumPy does and returns a Tensor. Gradients
follow the usual conventions: ties in ``max``/``min`` and ``maximum``/
``minimum`` share the gradient equally, ``abs`` and ``sign`` have slope 0 at
0, comparisons, ``argmax``, ``floor`` and friends have no gradient.
"""

import builtins
import numbers

import numpy as np

from gpulayers import config
from gpulayers.autodiff import Tensor
from gpulayers.ops.core import convert_to_tensor, data, standardize_dtype, xp
from gpulayers.ops.elementwise import *  # noqa: F401,F403
from gpulayers.ops.elementwise import __all__ as _elementwise_all
from gpulayers.ops.products import *  # noqa: F401,F403
from gpulayers.ops.products import __all__ as _products_all
from gpulayers.ops.reductions import *  # noqa: F401,F403
from gpulayers.ops.reductions import __all__ as _reductions_all
from gpulayers.ops.shapes import *  # noqa: F401,F403
from gpulayers.ops.shapes import __all__ as _shapes_all

_CREATION = [
    "arange", "array", "empty", "eye", "full", "full_like", "identity", "linspace", "ones", "ones_like", "zeros",
    "zeros_like",
]

__all__ = sorted(_elementwise_all + _reductions_all + _products_all + _shapes_all + _CREATION)


# ---------------------------------------------------------------- creation (no gradient)


def _dtype_or_floatx(dtype):
    return standardize_dtype(dtype) or config.floatx()


def _shape_arg(shape):
    return (int(shape),) if isinstance(shape, (numbers.Integral, np.integer)) else tuple(int(d) for d in shape)


def array(x, dtype=None):
    """A Tensor holding ``x`` (``keras.ops.array``): ``convert_to_tensor``'s dtype rules."""
    return convert_to_tensor(x, dtype=dtype)


def zeros(shape, dtype=None):
    return Tensor(xp().zeros(_shape_arg(shape), dtype=_dtype_or_floatx(dtype)))


def ones(shape, dtype=None):
    return Tensor(xp().ones(_shape_arg(shape), dtype=_dtype_or_floatx(dtype)))


def empty(shape, dtype=None):
    return Tensor(xp().empty(_shape_arg(shape), dtype=_dtype_or_floatx(dtype)))


def full(shape, fill_value, dtype=None):
    return Tensor(xp().full(_shape_arg(shape), data(fill_value), dtype=_dtype_or_floatx(dtype)))


def zeros_like(x, dtype=None):
    a = convert_to_tensor(x).data
    return Tensor(xp().zeros(a.shape, dtype=standardize_dtype(dtype) or a.dtype))


def ones_like(x, dtype=None):
    a = convert_to_tensor(x).data
    return Tensor(xp().ones(a.shape, dtype=standardize_dtype(dtype) or a.dtype))


def full_like(x, fill_value, dtype=None):
    a = convert_to_tensor(x).data
    return Tensor(xp().full(a.shape, data(fill_value), dtype=standardize_dtype(dtype) or a.dtype))


def eye(N, M=None, k=0, dtype=None):
    return Tensor(xp().eye(int(N), None if M is None else int(M), int(k), dtype=_dtype_or_floatx(dtype)))


def identity(n, dtype=None):
    return eye(n, dtype=dtype)


def arange(start, stop=None, step=1, dtype=None):
    """Evenly spaced values in ``[start, stop)``: int32 for int arguments, ``floatx()`` for floats."""
    values = [v for v in (start, stop, step) if v is not None]
    if dtype is None:
        dtype = "int32" if builtins.all(isinstance(data(v), (numbers.Integral, np.integer)) for v in values) else config.floatx()
    if stop is None:
        start, stop = 0, start
    return Tensor(xp().arange(data(start), data(stop), data(step), dtype=standardize_dtype(dtype)))


def linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0):
    out = xp().linspace(data(start), data(stop), int(num), endpoint=endpoint, retstep=retstep, axis=axis)
    if retstep:
        values, step = out
        return Tensor(values.astype(_dtype_or_floatx(dtype))), step
    return Tensor(out.astype(_dtype_or_floatx(dtype)))


# The NumPy ufuncs a Tensor answers with the op of the same name (``np.exp(tensor)``, ``ndarray + tensor``).
_UFUNC_NAMES = """
    add subtract multiply true_divide power maximum minimum logaddexp mod floor_divide negative absolute
    sign square sqrt reciprocal exp expm1 log log1p log2 log10 sin cos tan tanh sinh cosh arcsin arccos
    arctan arcsinh arctanh floor ceil isnan isinf isfinite matmul equal not_equal greater greater_equal less
    less_equal logical_and logical_or logical_xor logical_not
""".split()
UFUNCS = {getattr(np, name): globals()[name] for name in _UFUNC_NAMES}
