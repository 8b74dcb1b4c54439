"""Window ops with huge strides, dilations, windows or padding (backends/ops.py ``_axis_plan``).

Such geometry used to overflow int64 (``as_strided`` byte strides, ``arange(out) * s``),
build padded copies of terabytes, or loop over every cell of a 10**12-cell window,
although the outputs are small. The ops now run on a reduced geometry (the taps
that see real input, the input they read) and must give exactly what the
caller's geometry means. References here are float64 loops over output pixels
and INPUT pixels (so they stay small for any window), written apart from the
implementation; backward passes are also checked by finite differences.
"""

import functools
import math
import random
import time

import numpy as np
import pytest

import backends.window_plans as plans_module
from backends.numpy_ops import NumpyOps
from backends.ops import Ops
from backends.window_plans import out_size
from helpers import numeric_grad_of

OPS = NumpyOps()
FORMATS = ("channels_last", "channels_first")


class GenericNumpy(Ops):
    """The generic code on NumPy (no NumpyOps overrides)."""

    name = "generic"
    xp = np


BACKENDS = {"numpy": OPS, "generic": GenericNumpy()}


# ---------------------------------------------------------------- helpers
def same_pads(n, k, s, d=1):
    """Keras 'same' padding along one axis: (before, after)."""
    out = (n - 1) // s + 1
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


def fmt(x_nhwc, data_format):
    return np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)) if data_format == "channels_first" else x_nhwc


def nhwc(x, data_format):
    return x.transpose(0, 2, 3, 1) if data_format == "channels_first" else x


def geometry(h, w, window, strides, dilation, pads):
    (kh, kw), (sh, sw), (dh, dw) = window, strides, dilation
    top, bottom, left, right = pads
    return out_size(h, kh, sh, dh, top + bottom), out_size(w, kw, sw, dw, left + right)


def cells(h, w, oy, ox, window, strides, dilation, pads):
    """The real input pixels of output (oy, ox) as (cell, r, q), in window order.

    Walks the input, not the window: tap i reads r when r + top - oy*sh = i*dh.
    """
    (kh, kw), (sh, sw), (dh, dw) = window, strides, dilation
    top, _, left, _ = pads
    found = []
    for r in range(h):
        i, ri = divmod(r + top - oy * sh, dh)
        if ri or not 0 <= i < kh:
            continue
        for q in range(w):
            j, rj = divmod(q + left - ox * sw, dw)
            if rj or not 0 <= j < kw:
                continue
            found.append((i * kw + j, r, q))
    return found


def conv_ref(x, k, strides, pads, dilation):
    n, h, w, _ = x.shape
    kh, kw, _, f = k.shape
    oh, ow = geometry(h, w, (kh, kw), strides, dilation, pads)
    y = np.zeros((n, oh, ow, f))
    for oy in range(oh):
        for ox in range(ow):
            for cell, r, q in cells(h, w, oy, ox, (kh, kw), strides, dilation, pads):
                y[:, oy, ox, :] += x[:, r, q, :].astype(np.float64) @ k[cell // kw, cell % kw].astype(np.float64)
    return y


def pool_ref(x, kind, pool, strides, pads, u=None):
    """'max' -> (y, argmax: first max, first NaN wins), 'avg', 'sto' -> (y, index), 'inf'."""
    n, h, w, c = x.shape
    oh, ow = geometry(h, w, pool, strides, (1, 1), pads)
    y = np.zeros((n, oh, ow, c))
    idx = np.full((n, oh, ow, c), -1, dtype=object)  # Python ints: windows may have over 2**63 cells
    for oy in range(oh):
        for ox in range(ow):
            real = cells(h, w, oy, ox, pool, strides, (1, 1), pads)
            for b in range(n):
                for ch in range(c):
                    vals = [(cell, float(x[b, r, q, ch])) for cell, r, q in real]
                    if kind == "max":
                        best, arg = -math.inf, pool[0] * pool[1] - 1  # a window of padding only
                        for m, (cell, v) in enumerate(vals):
                            if m == 0 or v > best or (math.isnan(v) and not math.isnan(best)):
                                best, arg = v, cell
                        y[b, oy, ox, ch], idx[b, oy, ox, ch] = best, arg
                    elif kind == "avg":
                        y[b, oy, ox, ch] = sum(v for _, v in vals) / max(len(vals), 1)
                    else:
                        acts = [(cell, max(v, 0.0)) for cell, v in vals]
                        total = sum(a for _, a in acts)
                        if kind == "inf":
                            y[b, oy, ox, ch] = sum(a * a for _, a in acts) / total if total > 0 else 0.0
                            continue
                        running, target = 0.0, u[b, oy, ox, ch] * total
                        for cell, a in acts:
                            running += a
                            if running >= target and a > 0:
                                y[b, oy, ox, ch], idx[b, oy, ox, ch] = a, cell
                                break
    return (y, idx) if kind in ("max", "sto") else y


def route_ref(dy, index, x_shape, pool, strides, pads):
    n, h, w, c = x_shape
    oh, ow = dy.shape[1:3]
    dx = np.zeros(x_shape)
    for oy in range(oh):
        for ox in range(ow):
            for cell, r, q in cells(h, w, oy, ox, pool, strides, (1, 1), pads):
                hit = index[:, oy, ox, :] == cell
                dx[:, r, q, :] += np.where(hit, dy[:, oy, ox, :], 0.0)
    return dx


def close(a, b, tol=1e-9):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=tol, atol=tol)


# ------------------------------------------------------------ convolution
def _conv_case(x_shape, kernel_shape, strides, dilation, padding):
    _, h, w, _ = x_shape
    (kh, kw), (sh, sw), (dh, dw) = kernel_shape[:2], strides, dilation
    pads = same_pads(h, kh, sh, dh) + same_pads(w, kw, sw, dw) if padding == "same" else (0, 0, 0, 0)
    return x_shape, kernel_shape, strides, dilation, pads


CONV_CASES = {
    # the reproducers of tests/gpulayers/test_fuzz.py, then neighbours
    "strides-2**60": _conv_case((1, 4, 4, 1), (2, 2, 1, 1), (2**60, 2**60), (1, 1), "valid"),
    "strides-10**30-same": _conv_case((1, 4, 4, 1), (2, 2, 1, 1), (10**30, 10**30), (1, 1), "same"),
    "dilation-2**62-on-a-1-wide-axis": _conv_case((1, 4, 4, 1), (2, 1, 1, 1), (1, 1), (1, 2**62), "valid"),
    "dilation-10**6-same-no-tap-sees-input": _conv_case((1, 4, 4, 1), (2, 2, 1, 1), (1, 1), (10**6, 10**6), "same"),
    "dilation-10**5-same-centre-tap": _conv_case((2, 5, 6, 3), (3, 3, 3, 2), (1, 1), (10**5, 10**5), "same"),
    "dilation-mixed-same": _conv_case((2, 6, 5, 2), (3, 2, 2, 3), (1, 1), (10**6, 3), "same"),
    "dilation-one-axis-same": _conv_case((1, 5, 7, 2), (4, 3, 2, 2), (1, 1), (2, 10**7), "same"),
    "strides-mixed": _conv_case((2, 5, 7, 2), (2, 3, 2, 2), (2**64, 2), (1, 1), "same"),
    "strides-beyond-input-valid": _conv_case((2, 5, 6, 2), (3, 2, 2, 2), (7, 2**41), (1, 1), "valid"),
    "explicit-pads-padding-only-outputs": ((1, 3, 4, 2), (2, 2, 2, 2), (3, 1), (2, 2), (5, 4, 0, 9)),
    "explicit-pads-no-tap-sees-input": ((1, 3, 4, 1), (2, 1, 1, 2), (1, 1), (9, 1), (5, 4, 0, 0)),
}


@functools.lru_cache(maxsize=None)
def conv_expected(case):
    """(x, kernel, dy, y, dx, dkernel) in NHWC float64: the loops, and finite differences."""
    x_shape, k_shape, strides, dilation, pads = CONV_CASES[case]
    rng = np.random.default_rng(0)
    x, k = rng.standard_normal(x_shape), rng.standard_normal(k_shape)
    y = conv_ref(x, k, strides, pads, dilation)
    dy = rng.standard_normal(y.shape)
    loss = lambda xx, kk: float(np.sum(conv_ref(xx, kk, strides, pads, dilation) * dy))  # noqa: E731
    return x, k, dy, y, numeric_grad_of(lambda xx: loss(xx, k), x), numeric_grad_of(lambda kk: loss(x, kk), k)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv_forward_and_backward(case, data_format, backend):
    ops = BACKENDS[backend]
    _, _, strides, dilation, pads = CONV_CASES[case]
    x, k, dy, want_y, want_dx, want_dk = conv_expected(case)
    xf, dyf = fmt(x, data_format), fmt(dy, data_format)
    y = ops.conv2d_forward(xf, k, strides, pads, dilation, data_format)
    assert y.shape == dyf.shape and y.dtype == np.float64
    close(nhwc(y, data_format), want_y)
    # float32 too: the reduced path keeps the dtype
    y32 = ops.conv2d_forward(xf.astype(np.float32), k.astype(np.float32), strides, pads, dilation, data_format)
    assert y32.dtype == np.float32
    close(nhwc(y32, data_format), want_y, tol=1e-5)
    dx = ops.conv2d_backward_input(dyf, k, xf.shape, strides, pads, dilation, data_format)
    assert dx.shape == xf.shape and dx.dtype == np.float64
    close(nhwc(dx, data_format), want_dx, tol=1e-6)
    dk = ops.conv2d_backward_kernel(xf, dyf, k.shape, strides, pads, dilation, data_format)
    assert dk.shape == k.shape and dk.dtype == np.float64
    close(dk, want_dk, tol=1e-6)
    # taps that only ever see padding (the loss does not depend on them): exactly 0
    assert (dk[want_dk == 0] == 0).all()
    x32, dy32, k32 = xf.astype(np.float32), dyf.astype(np.float32), k.astype(np.float32)
    dx32 = ops.conv2d_backward_input(dy32, k32, xf.shape, strides, pads, dilation, data_format)
    dk32 = ops.conv2d_backward_kernel(x32, dy32, k.shape, strides, pads, dilation, data_format)
    assert dx32.dtype == dk32.dtype == np.float32
    close(nhwc(dx32, data_format), want_dx, tol=1e-4)
    close(dk32, want_dk, tol=1e-4)


def test_dilation_beyond_the_input_with_same_padding_gives_zeros():
    """Conv2D(1, 2, dilation_rate=10**6, padding='same') on 4x4: with Keras's 'same' split
    (500000 before, 500000 after) tap 0 reads o - 500000 and tap 1 reads o + 500000, so every
    output sees only padding: zeros (with no (10**6 + 4)**2 buffer)."""
    x = np.ones((1, 4, 4, 1), np.float32)
    k = np.ones((2, 2, 1, 1), np.float32)
    pads = same_pads(4, 2, 1, 10**6) * 2
    assert pads == (500000, 500000, 500000, 500000)
    y = OPS.conv2d_forward(x, k, (1, 1), pads, (10**6, 10**6), "channels_last")
    np.testing.assert_array_equal(y, np.zeros((1, 4, 4, 1), np.float32))
    assert y.dtype == np.float32


# ---------------------------------------------------------------- pooling
def _pool_case(x_shape, pool, strides, padding):
    _, h, w, _ = x_shape
    pads = same_pads(h, pool[0], strides[0]) + same_pads(w, pool[1], strides[1]) if padding == "same" else (0, 0, 0, 0)
    return x_shape, pool, strides, pads


POOL_CASES = {
    "window-10**6-same": _pool_case((1, 4, 4, 2), (10**6, 10**6), (10**6, 10**6), "same"),
    "window-10**6-same-stride-1": _pool_case((2, 3, 4, 1), (10**6, 3), (1, 1), "same"),
    "window-tall-same-strided": _pool_case((1, 5, 3, 2), (7 * 10**5, 2), (3, 2), "same"),
    # cell numbers beyond int32 in one axis, and windows of 2**63 cells or more (no int64
    # numbers them: their cells keep the numbers of the reduced window)
    "window-1x2**31-same": _pool_case((1, 3, 4, 2), (1, 2**31), (1, 2**31), "same"),
    "window-1x2**63-same": _pool_case((1, 2, 3, 1), (1, 2**63), (1, 1), "same"),
    "window-1x(2**63-1)-same": _pool_case((1, 2, 3, 2), (1, 2**63 - 1), (2, 1), "same"),
    "window-2**32+1-same": _pool_case((1, 3, 4, 2), (2**32 + 1, 2**32 + 1), (2**32 + 1, 2**32 + 1), "same"),
    "window-10**6x2**62-same": _pool_case((2, 4, 3, 1), (10**6, 2**62), (1, 2**62), "same"),
    "window-10**30-same-stride-1": _pool_case((1, 3, 2, 2), (10**30, 3), (1, 1), "same"),
    "strides-2**63": _pool_case((1, 4, 4, 2), (2, 2), (2**63, 2**63), "valid"),
    "strides-2**64-same": _pool_case((2, 4, 5, 1), (2, 2), (1, 2**64), "same"),
    "strides-10**30-ragged": _pool_case((1, 5, 6, 2), (3, 2), (10**30, 4), "valid"),
    "explicit-pads-padding-only-windows": ((1, 3, 4, 2), (2, 2), (3, 1), (4, 5, 0, 3)),
    "explicit-pads-every-window-padding": ((1, 1, 3, 1), (1, 2), (2, 1), (1, 0, 0, 0)),
}


@functools.lru_cache(maxsize=None)
def pool_grad(case, kind, x_seed, dy_seed):
    """Finite differences of sum(pool_ref(x) * dy) for the x and dy the tests draw."""
    x_shape, pool, strides, pads = POOL_CASES[case]
    x = _x(x_shape, x_seed, ties=False) if kind == "avg" else _x(x_shape, x_seed) + 0.25
    dy = np.random.default_rng(dy_seed).standard_normal(pool_ref(x, kind, pool, strides, pads).shape)
    return numeric_grad_of(lambda xx: float(np.sum(pool_ref(xx, kind, pool, strides, pads) * dy)), x)


def _x(shape, seed, ties=True):
    rng = np.random.default_rng(seed)
    if ties:  # many exact ties (first max), negatives and zero-sum windows
        return rng.integers(-2, 3, shape).astype(np.float64)
    return rng.standard_normal(shape)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("case", sorted(POOL_CASES))
def test_max_pool(case, data_format, backend):
    ops = BACKENDS[backend]
    x_shape, pool, strides, pads = POOL_CASES[case]
    x = _x(x_shape, 1)
    if x.shape[3] > 1:
        x[0, 0, -1, 1] = np.nan  # the first NaN of a window is its max
    want_y, want_arg = pool_ref(x, "max", pool, strides, pads)
    args = (pool, strides, pads, data_format)
    y, arg = ops.max_pool2d_forward(fmt(x, data_format), *args)
    np.testing.assert_array_equal(nhwc(y, data_format), want_y)
    # cell numbers of the caller's window: int64 where a window has over 2**31 cells
    assert arg.dtype == (np.int64 if pool[0] * pool[1] > 2**31 else np.int32)
    if pool[0] * pool[1] < 2**63:
        np.testing.assert_array_equal(nhwc(arg, data_format), want_arg)
    dy = np.random.default_rng(2).standard_normal(want_y.shape)
    dx = ops.max_pool2d_backward(fmt(dy, data_format), arg, fmt(x, data_format).shape, *args)
    close(nhwc(dx, data_format), route_ref(dy, want_arg, x.shape, pool, strides, pads), tol=1e-12)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("case", sorted(POOL_CASES))
def test_average_pool(case, data_format, backend):
    ops = BACKENDS[backend]
    x_shape, pool, strides, pads = POOL_CASES[case]
    x = _x(x_shape, 3, ties=False)
    args = (pool, strides, pads, data_format)
    want = pool_ref(x, "avg", pool, strides, pads)
    close(nhwc(ops.avg_pool2d_forward(fmt(x, data_format), *args), data_format), want, tol=1e-12)
    dy = np.random.default_rng(4).standard_normal(want.shape)
    dx = ops.avg_pool2d_backward(fmt(dy, data_format), fmt(x, data_format).shape, *args)
    close(nhwc(dx, data_format), pool_grad(case, "avg", 3, 4), tol=1e-6)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("case", sorted(POOL_CASES))
def test_stochastic_pool(case, data_format, backend):
    ops = BACKENDS[backend]
    x_shape, pool, strides, pads = POOL_CASES[case]
    x = _x(x_shape, 5) + 0.25  # ties, zero-sum windows and positive ones
    args = (pool, strides, pads, data_format)
    xf = fmt(x, data_format)
    want_inf = pool_ref(x, "inf", pool, strides, pads)
    close(nhwc(ops.stochastic_pool2d_inference_forward(xf, *args), data_format), want_inf, tol=1e-12)
    dy = np.random.default_rng(6).standard_normal(want_inf.shape)
    dx = ops.stochastic_pool2d_inference_backward(fmt(dy, data_format), xf, *args)
    close(nhwc(dx, data_format), pool_grad(case, "inf", 5, 6), tol=1e-6)

    u = np.random.default_rng(7).random(want_inf.shape)
    want_y, want_idx = pool_ref(x, "sto", pool, strides, pads, u)
    y, idx = ops.stochastic_pool2d_forward(xf, fmt(u, data_format), *args)
    np.testing.assert_array_equal(nhwc(y, data_format), want_y)
    if pool[0] * pool[1] < 2**63:
        np.testing.assert_array_equal(nhwc(idx, data_format), want_idx)
    else:
        np.testing.assert_array_equal(nhwc(idx, data_format) < 0, want_idx < 0)
    dx = ops.stochastic_pool2d_backward(fmt(dy, data_format), idx, xf.shape, *args)
    close(nhwc(dx, data_format), route_ref(dy, want_idx, x.shape, pool, strides, pads), tol=1e-12)


def test_huge_window_is_fast():
    """pool_size=10**6 with 'same' on 4x4 (a 10**12-cell window): bounded by the input."""
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    args = ((10**6, 10**6), (10**6, 10**6), same_pads(4, 10**6, 10**6) * 2, "channels_last")
    start = time.perf_counter()
    y, arg = OPS.max_pool2d_forward(x, *args)
    OPS.max_pool2d_backward(np.ones_like(y), arg, x.shape, *args)
    OPS.avg_pool2d_backward(np.ones_like(y), x.shape, *args)
    OPS.stochastic_pool2d_inference_backward(np.ones_like(y), x, *args)
    assert time.perf_counter() - start < 5  # was endless
    assert y.reshape(-1).tolist() == [15.0]
    top = same_pads(4, 10**6, 10**6)[0]
    assert int(arg.reshape(-1)[0]) == (3 + top) * 10**6 + (3 + top)


# ------------------------------------------------- the plan and its limits
@pytest.mark.parametrize(
    "in_hw,window,strides,dilation,padding",
    [
        ((32, 32), (3, 3), (1, 1), (1, 1), "same"),
        ((32, 32), (3, 3), (2, 2), (1, 1), "same"),
        ((31, 17), (3, 3), (2, 2), (1, 1), "valid"),
        ((32, 32), (2, 2), (2, 2), (1, 1), "valid"),
        ((7, 9), (3, 3), (2, 2), (1, 1), "same"),
        ((16, 16), (3, 3), (1, 1), (2, 2), "same"),
        ((4, 4), (7, 7), (1, 1), (1, 1), "same"),
        ((5, 5), (5, 5), (5, 5), (1, 1), "same"),
        ((2, 2), (2, 2), (2, 2), (1, 1), "same"),
        ((1, 1), (1, 1), (1, 1), (1, 1), "same"),
        ((28, 28), (1, 1), (1, 1), (1, 1), "valid"),
        ((6, 6), (6, 6), (1, 1), (1, 1), "valid"),
    ],
)
def test_ordinary_geometry_is_left_alone(in_hw, window, strides, dilation, padding):
    """No plan (so no extra work, and the usual fast paths) for the shapes layers normally use.

    (A window wider than the input, e.g. 3x3 'same' on 1x1, is reduced: its outer taps
    only see padding. test_reduced_geometry_matches_the_full_computation covers that.)"""
    (h, w), (kh, kw), (sh, sw), (dh, dw) = in_hw, window, strides, dilation
    pads = same_pads(h, kh, sh, dh) + same_pads(w, kw, sw, dw) if padding == "same" else (0, 0, 0, 0)
    assert plans_module.window_plan(in_hw, window, strides, dilation, pads) is None


def _random_geometry(rng):
    """Small inputs with windows, strides, dilations and pads up to several times their size."""
    while True:
        h, w = rng.randint(1, 5), rng.randint(1, 5)
        kh, kw = rng.randint(1, 7), rng.randint(1, 7)
        sh, sw = rng.choice([1, 2, 3, 7, 40]), rng.choice([1, 2, 3, 7, 40])
        dh, dw = rng.randint(1, 5), rng.randint(1, 5)
        pads = tuple(rng.randint(0, 10) for _ in range(4))
        if min(geometry(h, w, (kh, kw), (sh, sw), (dh, dw), pads)) >= 1:
            return (h, w), (kh, kw), (sh, sw), (dh, dw), pads


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_reduced_geometry_matches_the_full_computation(backend, monkeypatch):
    """On geometry small enough to compute as given, the reduced computation gives the same:
    bit for bit for pooling (same cells, same order), to rounding for convolutions (BLAS)."""
    ops = BACKENDS[backend]
    rng = random.Random(11)
    gen = np.random.default_rng(12)
    planned = 0
    for trial in range(120):
        (h, w), window, strides, dilation, pads = _random_geometry(rng)
        planned += plans_module.window_plan((h, w), window, strides, dilation, pads) is not None
        df = FORMATS[trial % 2]
        dtype = (np.float32, np.float64)[trial // 2 % 2]
        x_nhwc = gen.integers(-2, 3, (2, h, w, 2)).astype(dtype)
        if trial % 5 == 0:
            x_nhwc.reshape(-1)[gen.integers(x_nhwc.size)] = np.nan
        x = fmt(x_nhwc, df)
        kernel = gen.standard_normal(window + (2, 3)).astype(dtype)
        pool_args = (window, strides, pads, df)

        def run_all():
            y = ops.conv2d_forward(x, kernel, strides, pads, dilation, df)
            dy = np.ones_like(y)
            out = [
                ops.conv2d_backward_input(dy, kernel, x.shape, strides, pads, dilation, df),
                ops.conv2d_backward_kernel(x, dy, kernel.shape, strides, pads, dilation, df),
                y,
            ]
            ym, arg = ops.max_pool2d_forward(x, *pool_args)
            g = np.linspace(-1, 1, ym.size).reshape(ym.shape).astype(dtype)
            u = np.linspace(0, 0.99, ym.size).reshape(ym.shape).astype(dtype)
            ys, idx = ops.stochastic_pool2d_forward(x, u, *pool_args)
            return out, [
                ym, arg, ops.max_pool2d_backward(g, arg, x.shape, *pool_args),
                ops.avg_pool2d_forward(x, *pool_args), ops.avg_pool2d_backward(g, x.shape, *pool_args),
                ys, idx, ops.stochastic_pool2d_backward(g, idx, x.shape, *pool_args),
                ops.stochastic_pool2d_inference_forward(x, *pool_args),
                ops.stochastic_pool2d_inference_backward(g, x, *pool_args),
            ]

        conv, pool = run_all()
        with monkeypatch.context() as m:
            m.setattr(plans_module, "window_plan", lambda *a: None)
            conv0, pool0 = run_all()
        what = f"{(h, w)} {window} {strides} {dilation} {pads} {df} {np.dtype(dtype).name}"
        for a, b in zip(pool, pool0):
            assert a.shape == b.shape and a.dtype == b.dtype, what
            np.testing.assert_array_equal(a, b, err_msg=what)
        for a, b in zip(conv, conv0):
            assert a.shape == b.shape and a.dtype == b.dtype, what
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=what)
    assert planned > 40  # the draws do exercise the reduction


# ------------------------------------------------------------ NaN argmax
@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize(
    "pool,strides,pads",
    [((2, 2), (2, 2), (0, 0, 0, 0)), ((3, 3), (2, 2), (1, 1, 1, 1)), ((3, 2), (1, 1), (0, 0, 0, 0))],
    ids=["2x2-fast-path", "3x3-same", "3x2-overlapping"],
)
def test_max_pool_nan_argmax_is_the_first_nan(backend, pool, strides, pads):
    """As the CUDA kernel: a window holding NaN gives NaN and its first NaN cell as argmax,
    so the gradient goes there (it used to go to cell ph*pw - 1)."""
    ops = BACKENDS[backend]
    x = _x((2, 6, 6, 3), 9)
    x[0, 1, 1, 0] = x[0, 0, 1, 0] = x[1, 4, 5, 2] = x[1, 5, 4, 2] = np.nan
    x[1, 2, 2, 1] = np.inf
    x[0, 2:4, 2:4, 1] = -np.inf
    want_y, want_arg = pool_ref(x, "max", pool, strides, pads)
    assert np.isnan(want_y).sum() >= 2
    for dtype in (np.float32, np.float64):
        y, arg = ops.max_pool2d_forward(x.astype(dtype), pool, strides, pads, "channels_last")
        np.testing.assert_array_equal(y, want_y.astype(dtype))
        np.testing.assert_array_equal(arg, want_arg)
        dy = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
        dx = ops.max_pool2d_backward(dy, arg, x.shape, pool, strides, pads, "channels_last")
        close(dx, route_ref(dy, want_arg, x.shape, pool, strides, pads), tol=1e-6)
