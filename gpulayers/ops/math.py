"""Math and linear-algebra ops (``keras.ops`` math and ``keras.ops.linalg.norm``).

Every function takes Tensors, Variables, backend arrays or array-likes and
returns Tensors; integer and bool inputs of the float functions compute in
``floatx()``. Gradient conventions: ``top_k`` sends each value's gradient to
the entry it came from; ``segment_max`` and the max/min norms share the
gradient of tied entries equally; a vector norm has gradient 0 at the zero
vector (a subgradient) and at entries that are 0 for ``0 < ord < 1`` or
negative ``ord``; the SVD norms (``ord=2``, ``-2``, ``'nuc'``) raise where the
norm is not differentiable (a repeated or zero singular value) rather than
return a wrong gradient. ``in_top_k`` and the 0-"norm" have no gradient.
"""

import builtins
import numbers

import numpy as np

from gpulayers.autodiff import Tensor, record
from gpulayers.ops import numpy as numpy_ops
from gpulayers.ops.core import convert_to_tensor, normalize_axes, xp
from gpulayers.ops.elementwise import _float, _unary
from gpulayers.ops.reductions import _keep
from gpulayers.ops.shapes import _scatter, _scatter_add

__all__ = [
    "erf",
    "in_top_k",
    "logsumexp",
    "norm",
    "rsqrt",
    "segment_max",
    "segment_sum",
    "top_k",
]


def _is_int(value):
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


# ---------------------------------------------------------------- erf
# W. J. Cody, "Rational Chebyshev approximations for the error function",
# Math. Comp. 23 (1969), coefficients as in SPECFUN's CALERF. NumPy has no erf,
# and this needs only elementwise ops, so it runs unchanged on CuPy.
_ERF_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02,
          3.20937758913846947e03, 1.85777706184603153e-1)
_ERF_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03,
          2.84423683343917062e03)
_ERF_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01,
          2.98635138197400131e02, 8.81952221241769090e02, 1.71204761263407058e03,
          2.05107837782607147e03, 1.23033935479799725e03, 2.15311535474403846e-8)
_ERF_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02,
          1.62138957456669019e03, 3.29079923573345963e03, 4.36261909014324716e03,
          3.43936767414372164e03, 1.23033935480374942e03)
_ERF_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
          1.60837851487422766e-2, 6.58749161529837803e-4, 1.63153871373020978e-2)
_ERF_Q = (2.56852019228982242e00, 1.87295284992346725e00, 5.27905102951428412e-1,
          6.05183413124413191e-2, 2.33520497626869185e-3)
_INV_SQRT_PI = 0.56418958354775628695
_TWO_OVER_SQRT_PI = 1.1283791670955125739


def _rational(t, num, den, n):
    """CALERF's Horner loop: ``(num[-1]*t + ...) / (t + ...)`` over ``n`` steps."""
    xnum = num[-1] * t
    xden = t
    for i in range(n):
        xnum = (xnum + num[i]) * t
        xden = (xden + den[i]) * t
    return (xnum + num[n]) / (xden + den[n])


def _exp_neg_square(y):
    # exp(-y*y) computed as exp(-a*a) * exp(-(y-a)(y+a)) with a = y rounded
    # down to 1/16: the product y*y is then exact enough to keep erfc's
    # relative error near machine precision (CALERF's trick).
    a = xp().floor(y * 16.0) / 16.0
    return xp().exp(-a * a) * xp().exp(-(y - a) * (y + a))


def erf_array(x):
    """The error function of a raw float array (numpy or cupy), in its dtype.

    About 1e-15 relative error in float64; float16 is computed in float32.
    """
    np_ = xp()
    out_dtype = x.dtype
    if x.dtype.itemsize < 4:  # the polynomials overflow float16
        x = x.astype(np_.float32)
    # erf(|x|) rounds to 1 beyond 6 in float64; clamping avoids overflow warnings.
    y = np_.minimum(np_.abs(x), 6.0)
    small = y * _rational(y * y, _ERF_A, _ERF_B, 3)
    # Evaluate the two erfc branches on clamped copies so every lane is finite.
    mid_y = np_.clip(y, 0.46875, 4.0)
    erfc_mid = _exp_neg_square(mid_y) * _rational(mid_y, _ERF_C, _ERF_D, 7)
    far_y = np_.maximum(y, 4.0)
    z = 1.0 / (far_y * far_y)
    erfc_far = _exp_neg_square(far_y) * (_INV_SQRT_PI - z * _rational(z, _ERF_P, _ERF_Q, 4)) / far_y
    big = 1.0 - np_.where(y <= 4.0, erfc_mid, erfc_far)
    result = np_.where(y <= 0.46875, small, big)
    result = np_.where(x < 0, -result, result)
    return result.astype(out_dtype, copy=False)


def erf(x):
    """The error function, elementwise; gradient ``2 / sqrt(pi) * exp(-x**2)``.

    Example:
        >>> float(erf(0.5))  # math.erf(0.5) = 0.5204998778130465
        0.5204998...
    """
    return _unary(
        "erf", _float(x), erf_array,
        lambda g, a, y: g * (_TWO_OVER_SQRT_PI * xp().exp(-(a * a))),
    )


def rsqrt(x):
    """``1 / sqrt(x)``, elementwise; gradient ``-0.5 * x**-1.5``."""
    return _unary("rsqrt", _float(x), lambda a: 1 / xp().sqrt(a), lambda g, a, y: g * ((y * y * y) * -0.5))


# ---------------------------------------------------------------- reductions


def logsumexp(x, axis=None, keepdims=False):
    """``log(sum(exp(x), axis))`` shifted by the max for stability; gradient ``softmax(x, axis)``.

    A slice of only ``-inf`` gives ``-inf`` (gradient 0); an empty one ``-inf``.
    """
    x = _float(x)
    a = x.data
    axes = normalize_axes(axis, a.ndim) if a.ndim else ()
    np_ = xp()
    if a.size == 0:
        y = np_.full(a.sum(axis=axes, keepdims=keepdims).shape, -np.inf, dtype=a.dtype)
        return record("logsumexp", y, (x,), lambda g, needs: (np_.zeros(a.shape, dtype=g.dtype),))
    m = a.max(axis=axes, keepdims=True)
    m = np_.where(np_.isfinite(m), m, 0).astype(a.dtype, copy=False)
    with np.errstate(divide="ignore"):
        kept = np_.log(np_.exp(a - m).sum(axis=axes, keepdims=True)) + m
    y = kept if keepdims else kept.reshape(tuple(n for i, n in enumerate(a.shape) if i not in axes))

    def backward(g, needs):
        gk = g if keepdims else _keep(g, axes, a.ndim)
        with np.errstate(invalid="ignore"):
            share = np_.where(kept == -np.inf, 0, np_.exp(a - kept))
        return ((gk * share).astype(g.dtype, copy=False),)

    return record("logsumexp", y, (x,), backward)


def top_k(x, k, sorted=True):  # noqa: A002 (Keras's name)
    """The ``k`` largest entries along the last axis and their indices (int32).

    Descending order, and the lower index first among ties (TensorFlow's and
    JAX's order). ``sorted=False`` is accepted and gives the same, sorted,
    result (any order is allowed then). The values' gradient goes back to
    the entries they were taken from; the indices have none.
    """
    x = convert_to_tensor(x)
    a = x.data
    if a.ndim < 1:
        raise ValueError(f"Invalid value for `x`: top_k needs a tensor of rank >= 1. Received: x.shape={tuple(a.shape)}")
    if not _is_int(k) or not 0 <= k <= a.shape[-1]:
        raise ValueError(
            f"Invalid value for `k`: expected an int in [0, {a.shape[-1]}] (the size of the last axis). Received: k={k!r}"
        )
    key = a if a.dtype.kind == "f" else a.astype(np.int64)
    order = xp().argsort(-key, axis=-1, kind="stable")[..., : int(k)]
    values = numpy_ops.take_along_axis(x, Tensor(order), axis=-1)
    return values, Tensor(order.astype(np.int32))


def in_top_k(targets, predictions, k):
    """Whether each target's prediction is among the ``k`` largest of its row (bool, no gradient).

    ``targets``: (batch,) class indices; ``predictions``: (batch, classes).
    As in Keras, a prediction tied with the k-th largest counts as in; a
    target outside ``[0, classes)`` is never in.
    """
    t = convert_to_tensor(targets).data
    p = convert_to_tensor(predictions).data
    if p.ndim != 2:
        raise ValueError(
            f"Invalid value for `predictions`: expected a 2-D (batch, classes) tensor. Received: predictions.shape={tuple(p.shape)}"
        )
    if t.ndim != 1 or t.shape[0] != p.shape[0]:
        raise ValueError(
            "Invalid value for `targets`: expected a 1-D tensor with one entry per row of `predictions`. "
            f"Received: targets.shape={tuple(t.shape)}, predictions.shape={tuple(p.shape)}"
        )
    if t.dtype.kind not in "iub":
        raise TypeError(f"Invalid dtype for `targets`: expected integer class indices. Received: targets.dtype={t.dtype}")
    if not _is_int(k) or k < 0:
        raise ValueError(f"Invalid value for `k`: expected a non-negative int. Received: k={k!r}")
    np_ = xp()
    n, classes = p.shape
    if k == 0 or classes == 0:
        return Tensor(np_.zeros((n,), dtype=bool))
    key = p if p.dtype.kind == "f" else p.astype(np.int64)
    kth = -np_.sort(-key, axis=-1)[:, builtins.min(int(k), classes) - 1]
    t = t.astype(np.int64)
    valid = (t >= 0) & (t < classes)
    picked = np_.take_along_axis(key, np_.clip(t, 0, classes - 1)[:, None], axis=-1)[:, 0]
    return Tensor(valid & (picked >= kth))


# ---------------------------------------------------------------- segments


def _segments(data, segment_ids, num_segments):
    x = convert_to_tensor(data)
    ids = convert_to_tensor(segment_ids).data
    if ids.ndim != 1:
        raise ValueError(
            "Invalid value for `segment_ids`: expected a 1-D tensor (flatten data and ids first). "
            f"Received: segment_ids.shape={tuple(ids.shape)}"
        )
    if x.ndim < 1 or x.shape[0] != ids.shape[0]:
        raise ValueError(
            "Invalid value for `segment_ids`: it must have one entry per row of `data` (data.shape[0]). "
            f"Received: segment_ids.shape={tuple(ids.shape)}, data.shape={tuple(x.shape)}"
        )
    if ids.dtype.kind not in "iu":
        raise TypeError(f"Invalid dtype for `segment_ids`: expected integers. Received: segment_ids.dtype={ids.dtype}")
    if num_segments is None:
        num_segments = int(ids.max()) + 1 if ids.size else 0
        num_segments = builtins.max(num_segments, 0)
    elif not _is_int(num_segments) or num_segments < 0:
        raise ValueError(f"Invalid value for `num_segments`: expected None or a non-negative int. Received: num_segments={num_segments!r}")
    ids = ids.astype(np.int64)
    valid = (ids >= 0) & (ids < num_segments)  # negative ids (-1) and ids beyond num_segments are dropped
    return x, ids, valid, int(num_segments)


def _row_mask(valid, ndim):
    return valid.reshape(valid.shape + (1,) * (ndim - 1))


def segment_sum(data, segment_ids, num_segments=None, sorted=False):  # noqa: A002 (Keras's name)
    """Sums of the rows of ``data`` sharing a segment id: shape ``(num_segments,) + data.shape[1:]``.

    ``num_segments`` defaults to ``max(segment_ids) + 1``; rows with a negative
    id or one beyond ``num_segments`` are left out. ``sorted`` is accepted (the
    result does not depend on it). Gradient: each row gets its segment's.
    """
    x, ids, valid, ns = _segments(data, segment_ids, num_segments)
    a = x.data
    if a.dtype.kind == "b":
        a = a.astype(np.int32)
    out = xp().zeros((ns,) + a.shape[1:], dtype=a.dtype)
    _scatter_add(out, ids[valid], a[valid])
    mask = _row_mask(valid, a.ndim)

    def backward(g, needs):
        picked = g[xp().clip(ids, 0, builtins.max(ns - 1, 0))] if ns else xp().zeros(a.shape, dtype=g.dtype)
        return (xp().where(mask, picked, 0).astype(g.dtype, copy=False),)

    return record("segment_sum", out, (x,), backward)


def segment_max(data, segment_ids, num_segments=None, sorted=False):  # noqa: A002 (Keras's name)
    """Maxima of the rows of ``data`` sharing a segment id (as :func:`segment_sum`).

    An empty segment gives ``-inf`` (the dtype's minimum for integers). Tied
    rows share their segment's gradient equally.
    """
    x, ids, valid, ns = _segments(data, segment_ids, num_segments)
    a = x.data
    np_ = xp()
    if a.dtype.kind == "f":
        lowest = -np.inf
    elif a.dtype.kind == "b":
        a, lowest = a.astype(np.int32), np.iinfo(np.int32).min
    else:
        lowest = np.iinfo(a.dtype).min
    out = np_.full((ns,) + a.shape[1:], lowest, dtype=a.dtype)
    _scatter("max", out, ids[valid], a[valid])
    mask = _row_mask(valid, a.ndim)

    def backward(g, needs):
        safe = np_.clip(ids, 0, builtins.max(ns - 1, 0))
        if not ns:
            return (np_.zeros(a.shape, dtype=g.dtype),)
        hits = ((a == out[safe]) & mask).astype(g.dtype)
        counts = np_.zeros(out.shape, dtype=g.dtype)
        _scatter_add(counts, ids[valid], hits[valid])
        return (hits * g[safe] / np_.maximum(counts[safe], 1),)

    return record("segment_max", out, (x,), backward)


# ---------------------------------------------------------------- norms


def _norm_axes(axis, ndim):
    """``axis`` as a tuple of non-negative ints in the caller's order (a matrix norm's order matters)."""
    items = (axis,) if _is_int(axis) else tuple(axis)
    out = []
    for a in items:
        if not _is_int(a) or not -ndim <= a < ndim:
            raise ValueError(f"Invalid value for `axis`: {axis!r} is out of range for a tensor of rank {ndim}.")
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"Invalid value for `axis`: repeated axes in {axis!r}.")
    return tuple(out)


def _reduced_shape(shape, axes, keepdims):
    if keepdims:
        return tuple(1 if i in axes else n for i, n in enumerate(shape))
    return tuple(n for i, n in enumerate(shape) if i not in axes)


def _two_norm(x, axes, keepdims):
    """``sqrt(sum(x**2))`` over ``axes``; gradient ``x / norm`` (0 where the norm is 0)."""
    a = x.data
    np_ = xp()
    n = np_.sqrt((a * a).sum(axis=axes, keepdims=True))
    y = n.reshape(_reduced_shape(a.shape, axes, keepdims))

    def backward(g, needs):
        gk = g.reshape(n.shape)
        safe = np_.where(n > 0, n, 1)
        return (np_.where(n > 0, a * (gk / safe), 0).astype(g.dtype, copy=False),)

    return record("norm", y, (x,), backward)


def _p_norm(x, p, axes, keepdims):
    """``sum(|x|**p) ** (1/p)`` over ``axes`` (NumPy's order of operations)."""
    a = x.data
    np_ = xp()
    with np.errstate(divide="ignore", over="ignore"):
        s = (np_.abs(a) ** p).sum(axis=axes, keepdims=True)
        n = s ** (1.0 / p)
    n = n.astype(a.dtype, copy=False)
    y = n.reshape(_reduced_shape(a.shape, axes, keepdims))

    def backward(g, needs):
        gk = g.reshape(n.shape)
        ok = (a != 0) & (n > 0) & np_.isfinite(n)
        mag = np_.where(ok, np_.abs(a), 1)
        scale = np_.where(ok, n, 1)
        # d/dx_i = sign(x_i) |x_i|^(p-1) / n^(p-1)
        d = np_.sign(a) * (mag / scale) ** (p - 1)
        return (np_.where(ok, d * gk, 0).astype(g.dtype, copy=False),)

    return record("norm", y, (x,), backward)


def _vector_norm(x, ord, axes, keepdims):  # noqa: A002
    if ord is None or ord == 2:
        return _two_norm(x, axes, keepdims)
    if ord == np.inf:
        return numpy_ops.max(numpy_ops.absolute(x), axis=axes, keepdims=keepdims)
    if ord == -np.inf:
        return numpy_ops.min(numpy_ops.absolute(x), axis=axes, keepdims=keepdims)
    if ord == 0:
        a = x.data
        return Tensor((a != 0).sum(axis=axes, keepdims=keepdims).astype(a.dtype))
    if ord == 1:
        return numpy_ops.sum(numpy_ops.absolute(x), axis=axes, keepdims=keepdims)
    return _p_norm(x, float(ord), axes, keepdims)


def _svd_norm(x, ord, axes, keepdims):  # noqa: A002
    """Matrix norms from singular values: 2 (largest), -2 (smallest), 'nuc' (their sum)."""
    a = x.data
    np_ = xp()
    row, col = axes
    work = a.astype(np.float32) if a.dtype.itemsize < 4 else a
    m = np_.moveaxis(work, (row, col), (-2, -1))
    u, s, vh = np_.linalg.svd(m, full_matrices=False)
    if ord == 2:
        value, pick = s[..., 0], 0
    elif ord == -2:
        value, pick = s[..., -1], s.shape[-1] - 1
    else:
        value, pick = s.sum(axis=-1), None
    y = value.astype(a.dtype, copy=False).reshape(_reduced_shape(a.shape, tuple(sorted(axes)), keepdims))

    def backward(g, needs):
        tol = 8 * np.finfo(s.dtype).eps * builtins.max(m.shape[-2:]) * s.max(axis=-1, keepdims=True)
        if pick is None:
            if bool((s <= tol).any()):
                raise ValueError("ops.norm(ord='nuc') has no gradient at a rank-deficient matrix (a zero singular value).")
            direction = u @ vh
        else:
            k = s.shape[-1]
            if k > 1:
                other = s[..., 1] if pick == 0 else s[..., -2]
                if bool((np_.abs(s[..., pick] - other) <= tol[..., 0]).any()):
                    raise ValueError(
                        f"ops.norm(ord={ord}) has no gradient here: the {'largest' if pick == 0 else 'smallest'} "
                        "singular value is repeated."
                    )
            if pick != 0 and bool((s[..., pick] <= tol[..., 0]).any()):
                raise ValueError("ops.norm(ord=-2) has no gradient at a singular matrix (a zero singular value).")
            direction = u[..., :, pick : pick + 1] @ vh[..., pick : pick + 1, :]
        gm = g.reshape(value.shape).astype(direction.dtype)[..., None, None] * direction
        return (np_.moveaxis(gm, (-2, -1), (row, col)).astype(g.dtype, copy=False),)

    return record("norm", y, (x,), backward)


def _matrix_norm(x, ord, axes, keepdims):  # noqa: A002
    row, col = axes
    if ord in (None, "fro"):
        return _two_norm(x, tuple(sorted(axes)), keepdims)
    if ord in (2, -2, "nuc"):
        return _svd_norm(x, ord, axes, keepdims)
    # 1 / -1: extreme column sum (over rows); inf / -inf: extreme row sum (over columns).
    summed, picked = (row, col) if ord in (1, -1) else (col, row)
    reduce = numpy_ops.max if ord in (1, np.inf) else numpy_ops.min
    sums = numpy_ops.sum(numpy_ops.absolute(x), axis=summed, keepdims=True)
    out = reduce(sums, axis=picked, keepdims=True)
    return out if keepdims else numpy_ops.reshape(out, _reduced_shape(x.shape, axes, False))


_MATRIX_ORDS = (None, "fro", "nuc", np.inf, -np.inf, 1, -1, 2, -2)


def norm(x, ord=None, axis=None, keepdims=False):  # noqa: A002 (Keras's name)
    """Vector or matrix norm (NumPy's ``linalg.norm``), differentiable.

    Vector norms (``axis`` an int, or None on a 1-D input): ``ord`` None or 2
    (Euclidean), 1, ``inf`` (max ``|x|``), ``-inf`` (min ``|x|``), 0 (count of
    non-zeros, no gradient), any other number p: ``sum(|x|**p)**(1/p)``.
    Matrix norms (``axis`` two ints, or None on a 2-D input): None or
    ``'fro'``, ``'nuc'``, 1 / -1 (max / min column sum of ``|x|``), ``inf`` /
    ``-inf`` (max / min row sum), 2 / -2 (largest / smallest singular value).
    ``axis=None`` with ``ord=None`` is the 2-norm of all entries.
    """
    x = _float(x)
    nd = x.ndim
    if isinstance(ord, str):
        if ord not in ("fro", "nuc"):
            raise ValueError(f"Invalid value for `ord`: expected 'fro' or 'nuc' when a string. Received: ord={ord!r}")
    elif ord is not None and (isinstance(ord, (bool, np.bool_)) or not isinstance(ord, (numbers.Real, np.number))):
        raise ValueError(f"Invalid value for `ord`: expected None, a number, 'fro' or 'nuc'. Received: ord={ord!r}")
    if axis is None:
        if ord is None:
            return _two_norm(x, tuple(range(nd)), keepdims)
        if nd not in (1, 2):
            raise ValueError(
                f"Invalid value for `axis`: ord={ord!r} with axis=None needs a 1-D or 2-D input; give `axis` for "
                f"a tensor of rank {nd}. Received: x.shape={x.shape}"
            )
        axes = tuple(range(nd))
    else:
        axes = _norm_axes(axis, nd)
    if len(axes) == 1:
        if isinstance(ord, str):
            raise ValueError(f"Invalid value for `ord`: {ord!r} is a matrix norm; a vector norm needs a number. Received: ord={ord!r}")
        return _vector_norm(x, ord, axes, keepdims)
    if len(axes) == 2:
        if ord not in _MATRIX_ORDS:
            raise ValueError(
                f"Invalid value for `ord`: a matrix norm takes one of None, 'fro', 'nuc', inf, -inf, 1, -1, 2, -2. "
                f"Received: ord={ord!r}"
            )
        return _matrix_norm(x, ord, axes, keepdims)
    raise ValueError(f"Invalid value for `axis`: a norm takes one axis (vector) or two (matrix). Received: axis={axis!r}")
