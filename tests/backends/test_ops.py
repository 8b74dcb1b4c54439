"""Tests of backends.ops through NumpyOps.

References are float64 Python loops over output pixels and window cells,
written independently of the implementation; every backward method is also
checked against central finite differences (float64).
"""

import math

import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from backends.numpy_ops import NumpyOps
from helpers import numeric_grad_of

OPS = NumpyOps()
FORMATS = ("channels_last", "channels_first")
PROP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------- helpers
def to_format(x_nhwc, data_format):
    return np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)) if data_format == "channels_first" else x_nhwc


def from_format(x, data_format):
    return x.transpose(0, 2, 3, 1) if data_format == "channels_first" else x


def shape_in(shape_nhwc, data_format):
    n, h, w, c = shape_nhwc
    return (n, c, h, w) if data_format == "channels_first" else (n, h, w, c)


def out_len(n, k, s, d, pad_total):
    return (n + pad_total - ((k - 1) * d + 1)) // s + 1


def windows(h, w, window, strides, dilation, pads):
    """For each output pixel (oy, ox): list of (cell, r, q); r and q are None for padded cells."""
    (kh, kw), (sh, sw), (dh, dw) = window, strides, dilation
    top, bottom, left, right = pads
    oh = out_len(h, kh, sh, dh, top + bottom)
    ow = out_len(w, kw, sw, dw, left + right)
    result = {}
    for oy in range(oh):
        for ox in range(ow):
            cells = []
            for i in range(kh):
                for j in range(kw):
                    r = oy * sh + i * dh - top
                    q = ox * sw + j * dw - left
                    if 0 <= r < h and 0 <= q < w:
                        cells.append((i * kw + j, r, q))
                    else:
                        cells.append((i * kw + j, None, None))
            result[(oy, ox)] = cells
    return (oh, ow), result


def assert_close(a, b, rtol=1e-7, atol=1e-9):
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=rtol, atol=atol)


def rand(rng, shape):
    return rng.standard_normal(shape)


# -------------------------------------------------------------- references
def conv_ref(x, k, strides, pads, dilation):
    n, h, w, c = x.shape
    kh, kw, _, f = k.shape
    (oh, ow), wins = windows(h, w, (kh, kw), strides, dilation, pads)
    y = np.zeros((n, oh, ow, f))
    for b in range(n):
        for (oy, ox), cells in wins.items():
            for cell, r, q in cells:
                if r is not None:
                    i, j = divmod(cell, kw)
                    for ci in range(c):
                        for fo in range(f):
                            y[b, oy, ox, fo] += x[b, r, q, ci] * k[i, j, ci, fo]
    return y


def pool_ref(x, kind, pool, strides, pads, uniforms=None):
    """kind: 'max' -> (y, argmax); 'avg' -> y; 'sto' -> (y, index); 'sto_inf' -> y."""
    n, h, w, c = x.shape
    (oh, ow), wins = windows(h, w, pool, strides, (1, 1), pads)
    y = np.zeros((n, oh, ow, c))
    idx = np.zeros((n, oh, ow, c), dtype=np.int64)
    for b in range(n):
        for (oy, ox), cells in wins.items():
            for ch in range(c):
                vals = [(cell, None if r is None else x[b, r, q, ch]) for cell, r, q in cells]
                real = [(cell, v) for cell, v in vals if v is not None]
                if kind == "max":
                    best, arg = -math.inf, None
                    for cell, v in real:
                        if v > best:
                            best, arg = v, cell
                    y[b, oy, ox, ch], idx[b, oy, ox, ch] = best, arg
                elif kind == "avg":
                    y[b, oy, ox, ch] = sum(v for _, v in real) / len(real)
                else:
                    acts = [(cell, max(v, 0.0)) for cell, v in real]
                    total = 0.0
                    for _, a in acts:
                        total += a
                    if kind == "sto_inf":
                        y[b, oy, ox, ch] = sum(a * a for _, a in acts) / total if total > 0 else 0.0
                        continue
                    target = uniforms[b, oy, ox, ch] * total
                    running, pick, out = 0.0, -1, 0.0
                    for cell, a in acts:
                        running += a
                        if running >= target and a > 0:
                            pick, out = cell, a
                            break
                    y[b, oy, ox, ch], idx[b, oy, ox, ch] = out, pick
    if kind in ("max", "sto"):
        return y, idx
    return y


def route_ref(dy, index, x_shape, pool, strides, pads):
    """Send dy[b, oy, ox, c] to the window cell index[b, oy, ox, c] (nothing for -1)."""
    n, h, w, c = x_shape
    _, wins = windows(h, w, pool, strides, (1, 1), pads)
    dx = np.zeros(x_shape)
    for b in range(n):
        for (oy, ox), cells in wins.items():
            for ch in range(c):
                for cell, r, q in cells:
                    if cell == index[b, oy, ox, ch] and r is not None:
                        dx[b, r, q, ch] += dy[b, oy, ox, ch]
    return dx


def bn_ref(x, gamma, beta, axis, eps, mean=None, var=None):
    """Keras batch norm, channel by channel; batch statistics when mean/var are None."""
    x = np.asarray(x, dtype=np.float64)
    y = np.empty_like(x)
    c = x.shape[axis]
    means, vars_ = np.zeros(c), np.zeros(c)
    for ch in range(c):
        vals = list(np.take(x, ch, axis=axis).ravel())
        if mean is None:
            m = math.fsum(vals) / len(vals)
            v = math.fsum((t - m) ** 2 for t in vals) / len(vals)
        else:
            m, v = mean[ch], var[ch]
        means[ch], vars_[ch] = m, v
        inv = 1 / math.sqrt(v + eps) * (1.0 if gamma is None else gamma[ch])
        shift = (0.0 if beta is None else beta[ch]) - m * inv
        sl = [slice(None)] * x.ndim
        sl[axis] = ch
        y[tuple(sl)] = np.take(x, ch, axis=axis) * inv + shift
    return y, means, vars_


# --------------------------------------------------------------- conv cases
# (x_nhwc shape, kernel shape, strides, pads, dilation)
CONV_CASES = [
    ((2, 5, 6, 3), (3, 3, 3, 4), (1, 1), (0, 0, 0, 0), (1, 1)),  # valid
    ((2, 5, 6, 3), (3, 3, 3, 4), (1, 1), (1, 1, 1, 1), (1, 1)),  # same, stride 1
    ((2, 6, 6, 2), (3, 2, 2, 3), (2, 2), (0, 1, 0, 1), (1, 1)),  # same-like, extra pad bottom/right
    ((1, 5, 7, 2), (2, 3, 2, 3), (2, 1), (1, 2, 0, 1), (1, 1)),  # arbitrary asymmetric pads, batch 1
    ((2, 7, 6, 2), (3, 3, 2, 2), (1, 1), (2, 2, 2, 2), (2, 2)),  # dilation, same
    ((2, 7, 7, 2), (2, 2, 2, 3), (1, 2), (0, 0, 0, 0), (2, 1)),  # mixed dilation/stride
    ((2, 4, 5, 3), (1, 1, 3, 2), (1, 1), (0, 0, 0, 0), (1, 1)),  # 1x1
    ((2, 5, 5, 3), (1, 1, 3, 2), (2, 2), (0, 0, 0, 0), (1, 1)),  # 1x1 strided, ragged
    ((2, 7, 8, 2), (2, 2, 2, 2), (3, 3), (0, 0, 0, 0), (1, 1)),  # stride > kernel, ragged
    ((1, 3, 3, 2), (3, 3, 2, 2), (1, 1), (0, 0, 0, 0), (1, 1)),  # output 1x1
    ((1, 3, 4, 2), (2, 2, 2, 2), (1, 1), (3, 3, 4, 4), (1, 1)),  # pads larger than the kernel
    ((2, 6, 5, 1), (4, 1, 1, 2), (2, 1), (1, 2, 0, 0), (1, 1)),  # tall kernel
]


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_forward_matches_loops(case, data_format):
    xs, ks, strides, pads, dil = case
    rng = np.random.default_rng(1)
    x, k = rand(rng, xs), rand(rng, ks)
    y = OPS.conv2d_forward(to_format(x, data_format), k, strides, pads, dil, data_format)
    ref = conv_ref(x, k, strides, pads, dil)
    assert y.shape == shape_in(ref.shape, data_format)
    assert y.flags.c_contiguous
    assert_close(from_format(y, data_format), ref)


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_backward_finite_differences(case, data_format):
    xs, ks, strides, pads, dil = case
    rng = np.random.default_rng(2)
    x, k = to_format(rand(rng, xs), data_format), rand(rng, ks)
    y = OPS.conv2d_forward(x, k, strides, pads, dil, data_format)
    w = rand(rng, y.shape)
    dx = OPS.conv2d_backward_input(w, k, x.shape, strides, pads, dil, data_format)
    dk = OPS.conv2d_backward_kernel(x, w, k.shape, strides, pads, dil, data_format)
    assert dx.shape == x.shape and dk.shape == k.shape
    num_dx = numeric_grad_of(lambda t: np.sum(OPS.conv2d_forward(t, k, strides, pads, dil, data_format) * w), x)
    num_dk = numeric_grad_of(lambda t: np.sum(OPS.conv2d_forward(x, t, strides, pads, dil, data_format) * w), k)
    assert_close(dx, num_dx, rtol=1e-6, atol=1e-7)
    assert_close(dk, num_dk, rtol=1e-6, atol=1e-7)


@PROP
@given(
    n=st.integers(1, 2),
    h=st.integers(1, 7),
    w=st.integers(1, 7),
    c=st.integers(1, 3),
    f=st.integers(1, 3),
    kh=st.integers(1, 3),
    kw=st.integers(1, 3),
    sh=st.integers(1, 3),
    sw=st.integers(1, 3),
    dh=st.integers(1, 2),
    dw=st.integers(1, 2),
    pads=st.tuples(*[st.integers(0, 2)] * 4),
    data_format=st.sampled_from(FORMATS),
    seed=st.integers(0, 2**31),
)
def test_conv2d_properties(n, h, w, c, f, kh, kw, sh, sw, dh, dw, pads, data_format, seed):
    """Forward equals the loops; both backwards are the adjoints of the forward."""
    assume(out_len(h, kh, sh, dh, pads[0] + pads[1]) >= 1 and out_len(w, kw, sw, dw, pads[2] + pads[3]) >= 1)
    rng = np.random.default_rng(seed)
    x_nhwc, k = rand(rng, (n, h, w, c)), rand(rng, (kh, kw, c, f))
    x = to_format(x_nhwc, data_format)
    args = ((sh, sw), pads, (dh, dw), data_format)
    y = OPS.conv2d_forward(x, k, *args)
    assert_close(from_format(y, data_format), conv_ref(x_nhwc, k, (sh, sw), pads, (dh, dw)))
    dy = rand(rng, y.shape)
    dx = OPS.conv2d_backward_input(dy, k, x.shape, *args)
    dk = OPS.conv2d_backward_kernel(x, dy, k.shape, *args)
    assert math.isclose(np.sum(y * dy), np.sum(x * dx), rel_tol=1e-9, abs_tol=1e-9)
    assert math.isclose(np.sum(y * dy), np.sum(k * dk), rel_tol=1e-9, abs_tol=1e-9)


# ----------------------------------------------------------------- pooling
# (x_nhwc shape, pool, strides, pads); no window is all padding.
POOL_CASES = [
    ((2, 6, 6, 3), (2, 2), (2, 2), (0, 0, 0, 0)),  # the common 2x2/2
    ((2, 7, 5, 2), (2, 2), (2, 2), (0, 0, 0, 0)),  # ragged: last row/col dropped
    ((2, 7, 7, 2), (3, 3), (2, 2), (0, 0, 0, 0)),  # overlapping windows
    ((1, 7, 6, 2), (3, 3), (2, 2), (1, 1, 1, 1)),  # overlapping, padded, batch 1
    ((2, 5, 5, 2), (2, 2), (2, 2), (0, 1, 0, 1)),  # 'same' with odd size
    ((2, 5, 6, 2), (3, 2), (1, 2), (1, 2, 0, 1)),  # non-square pool, asymmetric pads
    ((2, 6, 7, 2), (2, 3), (1, 1), (1, 0, 2, 0)),  # pads top/left only
    ((2, 5, 5, 2), (1, 1), (2, 2), (0, 0, 0, 0)),  # 1x1 pool, strided
    ((2, 8, 7, 2), (2, 2), (3, 3), (0, 0, 0, 0)),  # stride > pool: cells skipped
    ((1, 3, 3, 2), (3, 3), (1, 1), (0, 0, 0, 0)),  # output 1x1
    ((2, 4, 5, 2), (3, 3), (1, 1), (1, 1, 1, 1)),  # same, stride 1
]


def pool_forward(kind, x, pool, strides, pads, data_format, u=None):
    if kind == "max":
        return OPS.max_pool2d_forward(x, pool, strides, pads, data_format)
    if kind == "avg":
        return OPS.avg_pool2d_forward(x, pool, strides, pads, data_format)
    if kind == "sto":
        return OPS.stochastic_pool2d_forward(x, u, pool, strides, pads, data_format)
    return OPS.stochastic_pool2d_inference_forward(x, pool, strides, pads, data_format)


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("kind", ["max", "avg", "sto", "sto_inf"])
def test_pool_forward_matches_loops(kind, case, data_format):
    xs, pool, strides, pads = case
    rng = np.random.default_rng(3)
    x = rand(rng, xs)
    oh = out_len(xs[1], pool[0], strides[0], 1, pads[0] + pads[1])
    ow = out_len(xs[2], pool[1], strides[1], 1, pads[2] + pads[3])
    u = rng.random((xs[0], oh, ow, xs[3]))
    out = pool_forward(kind, to_format(x, data_format), pool, strides, pads, data_format, to_format(u, data_format))
    ref = pool_ref(x, kind, pool, strides, pads, u)
    if kind in ("max", "sto"):
        (y, idx), (ref_y, ref_idx) = out, ref
        assert idx.shape == y.shape and np.issubdtype(idx.dtype, np.integer)
        np.testing.assert_array_equal(from_format(idx, data_format), ref_idx)
    else:
        y, ref_y = out, ref
    assert y.shape == shape_in(ref_y.shape, data_format)
    assert y.flags.c_contiguous
    assert_close(from_format(y, data_format), ref_y)


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("kind", ["max", "avg", "sto", "sto_inf"])
def test_pool_backward_finite_differences(kind, case, data_format):
    xs, pool, strides, pads = case
    rng = np.random.default_rng(4)
    x = to_format(rand(rng, xs), data_format)
    args = (pool, strides, pads, data_format)
    ref_shape = OPS.avg_pool2d_forward(x, *args).shape
    u = rng.random(ref_shape)
    w = rand(rng, ref_shape)

    def loss(t):
        out = pool_forward(kind, t, pool, strides, pads, data_format, u)
        return np.sum((out[0] if isinstance(out, tuple) else out) * w)

    if kind == "max":
        _, arg = OPS.max_pool2d_forward(x, *args)
        dx = OPS.max_pool2d_backward(w, arg, x.shape, *args)
    elif kind == "avg":
        dx = OPS.avg_pool2d_backward(w, x.shape, *args)
    elif kind == "sto":
        _, index = OPS.stochastic_pool2d_forward(x, u, *args)
        dx = OPS.stochastic_pool2d_backward(w, index, x.shape, *args)
    else:
        dx = OPS.stochastic_pool2d_inference_backward(w, x, *args)
    assert dx.shape == x.shape and dx.flags.c_contiguous
    assert_close(dx, numeric_grad_of(loss, x), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("case", POOL_CASES[:6])
def test_max_pool_ties_pick_first_max(case, data_format):
    """Inputs from {0, 1, 2} tie constantly: the first max in row-major order wins."""
    xs, pool, strides, pads = case
    rng = np.random.default_rng(5)
    x = rng.integers(0, 3, xs).astype(np.float64)
    y, arg = OPS.max_pool2d_forward(to_format(x, data_format), pool, strides, pads, data_format)
    ref_y, ref_arg = pool_ref(x, "max", pool, strides, pads)
    np.testing.assert_array_equal(from_format(arg, data_format), ref_arg)
    assert_close(from_format(y, data_format), ref_y)
    dy = rand(rng, ref_y.shape)
    dx = OPS.max_pool2d_backward(to_format(dy, data_format), arg, shape_in(xs, data_format), pool, strides, pads, data_format)
    assert_close(from_format(dx, data_format), route_ref(dy, ref_arg, xs, pool, strides, pads))


def test_max_pool_constant_and_negative_inputs():
    # All-equal windows pick cell 0; padded cells (-inf) never win over negatives.
    x = np.full((1, 4, 4, 1), 7.0)
    _, arg = OPS.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0, 0, 0), "channels_last")
    assert (arg == 0).all()
    x = -np.arange(1.0, 10.0).reshape(1, 3, 3, 1)
    y, arg = OPS.max_pool2d_forward(x, (3, 3), (2, 2), (1, 1, 1, 1), "channels_last")
    np.testing.assert_array_equal(y[0, :, :, 0], [[-1.0, -2.0], [-4.0, -5.0]])
    np.testing.assert_array_equal(arg[0, :, :, 0], [[4, 3], [1, 0]])


@PROP
@given(
    n=st.integers(1, 2),
    h=st.integers(1, 7),
    w=st.integers(1, 7),
    c=st.integers(1, 2),
    ph=st.integers(1, 3),
    pw=st.integers(1, 3),
    sh=st.integers(1, 3),
    sw=st.integers(1, 3),
    pad_fracs=st.tuples(*[st.integers(0, 2)] * 4),
    data_format=st.sampled_from(FORMATS),
    ties=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_pool_properties(n, h, w, c, ph, pw, sh, sw, pad_fracs, data_format, ties, seed):
    """Max/avg/stochastic forwards equal the loops; the backwards route like the loops / are adjoint."""
    # Keep pads below the pool size so no window is all padding.
    pads = (min(pad_fracs[0], ph - 1), min(pad_fracs[1], ph - 1), min(pad_fracs[2], pw - 1), min(pad_fracs[3], pw - 1))
    oh, ow = out_len(h, ph, sh, 1, pads[0] + pads[1]), out_len(w, pw, sw, 1, pads[2] + pads[3])
    assume(oh >= 1 and ow >= 1)
    rng = np.random.default_rng(seed)
    x_nhwc = rng.integers(-2, 3, (n, h, w, c)).astype(np.float64) if ties else rand(rng, (n, h, w, c))
    u_nhwc = rng.random((n, oh, ow, c))
    x, u = to_format(x_nhwc, data_format), to_format(u_nhwc, data_format)
    args = ((ph, pw), (sh, sw), pads, data_format)
    dy_nhwc = rand(rng, (n, oh, ow, c))
    dy = to_format(dy_nhwc, data_format)

    y, arg = OPS.max_pool2d_forward(x, *args)
    ref_y, ref_arg = pool_ref(x_nhwc, "max", (ph, pw), (sh, sw), pads)
    assert_close(from_format(y, data_format), ref_y)
    np.testing.assert_array_equal(from_format(arg, data_format), ref_arg)
    dx = OPS.max_pool2d_backward(dy, arg, x.shape, *args)
    assert_close(from_format(dx, data_format), route_ref(dy_nhwc, ref_arg, x_nhwc.shape, (ph, pw), (sh, sw), pads))

    y = OPS.avg_pool2d_forward(x, *args)
    assert_close(from_format(y, data_format), pool_ref(x_nhwc, "avg", (ph, pw), (sh, sw), pads))
    dx = OPS.avg_pool2d_backward(dy, x.shape, *args)
    assert math.isclose(np.sum(y * dy), np.sum(x * dx), rel_tol=1e-9, abs_tol=1e-9)

    y, index = OPS.stochastic_pool2d_forward(x, u, *args)
    ref_y, ref_index = pool_ref(x_nhwc, "sto", (ph, pw), (sh, sw), pads, u_nhwc)
    assert_close(from_format(y, data_format), ref_y)
    np.testing.assert_array_equal(from_format(index, data_format), ref_index)
    dx = OPS.stochastic_pool2d_backward(dy, index, x.shape, *args)
    assert_close(from_format(dx, data_format), route_ref(dy_nhwc, ref_index, x_nhwc.shape, (ph, pw), (sh, sw), pads))

    y = OPS.stochastic_pool2d_inference_forward(x, *args)
    assert_close(from_format(y, data_format), pool_ref(x_nhwc, "sto_inf", (ph, pw), (sh, sw), pads))


def test_stochastic_pool_zero_windows_and_extreme_uniforms():
    x = np.array([[-1.0, 0.0, 2.0, 0.0], [-3.0, -0.5, 0.0, 1.0]]).reshape(1, 2, 4, 1)
    # window 0 = [-1, 0, -3, -0.5] sums to 0; window 1 = [2, 0, 0, 1].
    for u0, expect_idx, expect_y in ((0.0, 0, 2.0), (0.6, 0, 2.0), (0.7, 3, 1.0), (np.nextafter(1.0, 0), 3, 1.0)):
        u = np.array([0.5, u0]).reshape(1, 1, 2, 1)
        y, idx = OPS.stochastic_pool2d_forward(x, u, (2, 2), (2, 2), (0, 0, 0, 0), "channels_last")
        assert idx[0, 0, 0, 0] == -1 and y[0, 0, 0, 0] == 0.0
        assert idx[0, 0, 1, 0] == expect_idx and y[0, 0, 1, 0] == expect_y
        dx = OPS.stochastic_pool2d_backward(np.ones((1, 1, 2, 1)), idx, x.shape, (2, 2), (2, 2), (0, 0, 0, 0), "channels_last")
        assert dx[0, :, :2, 0].sum() == 0 and dx.sum() == 1
    y = OPS.stochastic_pool2d_inference_forward(x, (2, 2), (2, 2), (0, 0, 0, 0), "channels_last")
    assert_close(y.ravel(), [0.0, 5.0 / 3.0])
    dx = OPS.stochastic_pool2d_inference_backward(np.ones((1, 1, 2, 1)), x, (2, 2), (2, 2), (0, 0, 0, 0), "channels_last")
    # S = 3, Q = 5: d/da = (2 a S - Q) / S^2 -> a=2: 7/9, a=1: 1/9; zero elsewhere.
    assert_close(dx[0, :, :, 0], [[0, 0, 7 / 9, 0], [0, 0, 0, 1 / 9]])


@pytest.mark.parametrize(
    "window, u, expect",
    [
        ([0.0, 0.0, 3.0, 1.0], 0.0, 2),  # u = 0: the first POSITIVE cell, never a zero one
        ([-1.0, 0.0, 3.0, 1.0], 0.0, 2),
        ([1.0, 0.0, 1.0, 0.0], 0.5, 0),  # running sum equals u*S exactly: "reaches" includes equality
        ([1.0, 0.0, 1.0, 0.0], 0.75, 2),  # zero cells between are skipped
        ([0.0, 2.0, 0.0, 0.0], 0.999, 1),  # trailing zeros never picked
    ],
)
def test_stochastic_pool_pick_rule(window, u, expect):
    x = np.array(window).reshape(1, 2, 2, 1)
    y, idx = OPS.stochastic_pool2d_forward(x, np.full((1, 1, 1, 1), u), (2, 2), (2, 2), (0, 0, 0, 0), "channels_last")
    assert idx.item() == expect and y.item() == window[expect]


def test_stochastic_pool_samples_follow_the_activations():
    """Over many uniforms the picks follow p_i = a_i / sum(a) (the multinomial of the paper)."""
    count = 20000
    x = np.broadcast_to(np.array([[1.0, -2.0], [3.0, 4.0]]).reshape(1, 2, 2, 1), (count, 2, 2, 1)).copy()
    u = np.random.default_rng(6).random((count, 1, 1, 1))
    _, idx = OPS.stochastic_pool2d_forward(x, u, (2, 2), (2, 2), (0, 0, 0, 0), "channels_last")
    freq = np.bincount(idx.ravel(), minlength=4) / count
    np.testing.assert_allclose(freq, [1 / 8, 0, 3 / 8, 4 / 8], atol=0.015)


# ---------------------------------------------------------- global pooling
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("data_format", FORMATS)
def test_global_pooling(data_format, keepdims):
    rng = np.random.default_rng(7)
    for x_nhwc in (rand(rng, (2, 3, 4, 5)), rng.integers(0, 2, (3, 2, 3, 2)).astype(np.float64), rand(rng, (1, 1, 1, 3))):
        n, h, w, c = x_nhwc.shape
        x = to_format(x_nhwc, data_format)
        ref_avg, ref_max, ref_arg = np.zeros((n, c)), np.zeros((n, c)), np.zeros((n, c), dtype=np.int64)
        for b in range(n):
            for ch in range(c):
                total, best, arg = 0.0, -math.inf, -1
                for r in range(h):
                    for q in range(w):
                        v = x_nhwc[b, r, q, ch]
                        total += v
                        if v > best:
                            best, arg = v, r * w + q
                ref_avg[b, ch], ref_max[b, ch], ref_arg[b, ch] = total / (h * w), best, arg
        kshape = ((n, c, 1, 1) if data_format == "channels_first" else (n, 1, 1, c)) if keepdims else (n, c)
        y = OPS.global_avg_pool2d_forward(x, data_format, keepdims)
        assert y.shape == kshape
        assert_close(y.reshape(n, c), ref_avg)
        y, arg = OPS.global_max_pool2d_forward(x, data_format, keepdims)
        assert y.shape == kshape and arg.shape == kshape
        assert_close(y.reshape(n, c), ref_max)
        np.testing.assert_array_equal(arg.reshape(n, c), ref_arg)

        w_ = rand(rng, kshape)
        dx = OPS.global_avg_pool2d_backward(w_, x.shape, data_format, keepdims)
        num = numeric_grad_of(lambda t: np.sum(OPS.global_avg_pool2d_forward(t, data_format, keepdims) * w_), x)
        assert dx.shape == x.shape
        assert_close(dx, num, rtol=1e-6, atol=1e-7)
        dx = OPS.global_max_pool2d_backward(w_, arg, x.shape, data_format, keepdims)
        assert dx.shape == x.shape
        # Route check (valid with ties) ...
        ref_dx = np.zeros(x_nhwc.shape)
        for b in range(n):
            for ch in range(c):
                r, q = divmod(ref_arg[b, ch], w)
                ref_dx[b, r, q, ch] = w_.reshape(n, c)[b, ch]
        assert_close(from_format(dx, data_format), ref_dx)
        # ... and finite differences where there are no ties.
        if x_nhwc.dtype == np.float64 and len(np.unique(x_nhwc)) == x_nhwc.size:
            num = numeric_grad_of(lambda t: np.sum(OPS.global_max_pool2d_forward(t, data_format, keepdims)[0] * w_), x)
            assert_close(dx, num, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------- batch normalization
# (x shape, axis)
BN_CASES = [
    ((6, 3), 1),
    ((1, 2, 3, 4), 1),  # NCHW, batch 1
    ((2, 3, 4, 3), 3),  # NHWC
    ((3, 4, 2), 2),
    ((4, 3, 2), 0),
    ((2, 3, 2, 2), 2),
]


@pytest.mark.parametrize("affine", [(True, True), (False, False), (True, False), (False, True)])
@pytest.mark.parametrize("case", BN_CASES)
def test_batch_norm_training(case, affine):
    shape, axis = case
    rng = np.random.default_rng(8)
    c, eps = shape[axis], 1e-3
    x = rand(rng, shape) * 3 + 1
    gamma = rng.random(c) + 0.5 if affine[0] else None
    beta = rand(rng, c) if affine[1] else None
    y, mean, var, cache = OPS.batch_norm_forward_training(x, gamma, beta, axis, eps)
    ref_y, ref_mean, ref_var = bn_ref(x, gamma, beta, axis, eps)
    assert y.shape == x.shape and mean.shape == (c,) and var.shape == (c,)
    assert_close(y, ref_y, rtol=1e-9, atol=1e-10)
    assert_close(mean, ref_mean, rtol=1e-12, atol=1e-12)
    assert_close(var, ref_var, rtol=1e-12, atol=1e-12)

    w = rand(rng, shape)
    dx, dgamma, dbeta = OPS.batch_norm_backward_training(w, cache)
    assert (dgamma is None) == (gamma is None) and (dbeta is None) == (beta is None)

    def loss(t, g=gamma, b=beta):
        return np.sum(OPS.batch_norm_forward_training(t, g, b, axis, eps)[0] * w)

    assert_close(dx, numeric_grad_of(loss, x), rtol=1e-5, atol=1e-6)
    if gamma is not None:
        assert_close(dgamma, numeric_grad_of(lambda g: loss(x, g=g), gamma), rtol=1e-6, atol=1e-7)
    if beta is not None:
        assert_close(dbeta, numeric_grad_of(lambda b: loss(x, b=b), beta), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("affine", [(True, True), (False, False), (True, False), (False, True)])
@pytest.mark.parametrize("case", BN_CASES)
def test_batch_norm_inference(case, affine):
    shape, axis = case
    rng = np.random.default_rng(9)
    c, eps = shape[axis], 1e-3
    x = rand(rng, shape)
    mean, var = rand(rng, c), rng.random(c) + 0.1
    gamma = rng.random(c) + 0.5 if affine[0] else None
    beta = rand(rng, c) if affine[1] else None
    y = OPS.batch_norm_forward_inference(x, gamma, beta, mean, var, axis, eps)
    assert_close(y, bn_ref(x, gamma, beta, axis, eps, mean, var)[0], rtol=1e-12, atol=1e-12)

    w = rand(rng, shape)
    dx, dgamma, dbeta = OPS.batch_norm_backward_inference(w, x, gamma, mean, var, axis, eps, has_beta=beta is not None)
    assert (dgamma is None) == (gamma is None) and (dbeta is None) == (beta is None)

    def loss(t, g=gamma, b=beta):
        return np.sum(OPS.batch_norm_forward_inference(t, g, b, mean, var, axis, eps) * w)

    assert_close(dx, numeric_grad_of(loss, x), rtol=1e-6, atol=1e-7)
    if gamma is not None:
        assert_close(dgamma, numeric_grad_of(lambda g: loss(x, g=g), gamma), rtol=1e-6, atol=1e-7)
    if beta is not None:
        assert_close(dbeta, numeric_grad_of(lambda b: loss(x, b=b), beta), rtol=1e-6, atol=1e-7)


@PROP
@given(
    shape=st.lists(st.integers(1, 4), min_size=2, max_size=4),
    axis_pick=st.integers(0, 3),
    affine=st.tuples(st.booleans(), st.booleans()),
    seed=st.integers(0, 2**31),
)
def test_batch_norm_properties(shape, axis_pick, affine, seed):
    """Training forward equals the loops; backward is exact against finite differences."""
    axis = axis_pick % len(shape)
    rng = np.random.default_rng(seed)
    x = rand(rng, shape) * 2 + 3
    c = shape[axis]
    gamma = rng.random(c) + 0.5 if affine[0] else None
    beta = rand(rng, c) if affine[1] else None
    y, mean, var, cache = OPS.batch_norm_forward_training(x, gamma, beta, axis, 1e-3)
    ref_y, ref_mean, ref_var = bn_ref(x, gamma, beta, axis, 1e-3)
    assert_close(y, ref_y, rtol=1e-9, atol=1e-9)
    assert_close(var, ref_var, rtol=1e-10, atol=1e-12)
    w = rand(rng, shape)
    dx, _, _ = OPS.batch_norm_backward_training(w, cache)
    num = numeric_grad_of(lambda t: np.sum(OPS.batch_norm_forward_training(t, gamma, beta, axis, 1e-3)[0] * w), x)
    assert_close(dx, num, rtol=1e-5, atol=1e-6)


def test_batch_norm_variance_is_two_pass():
    # Large offset, tiny spread: E[x^2] - E[x]^2 would cancel catastrophically in float32.
    x = (np.float32(1e4) + np.arange(8, dtype=np.float32).reshape(8, 1) * np.float32(1e-2)).astype(np.float32)
    _, mean, var, _ = OPS.batch_norm_forward_training(x, None, None, 1, 1e-3)
    assert var.dtype == np.float32
    assert_close(var, [np.var(x.astype(np.float64))], rtol=1e-2)


# ------------------------------------------------------------------- dtypes
def _run_all(x4, dtype, data_format="channels_last"):
    """Call every method on float `dtype` inputs; yield (name, output) pairs."""
    rng = np.random.default_rng(10)
    x = x4.astype(dtype)
    k = rand(rng, (3, 2, x.shape[-1 if data_format == "channels_last" else 1], 2)).astype(dtype)
    args = ((2, 1), (1, 1, 0, 1), (1, 1), data_format)
    y = OPS.conv2d_forward(x, k, *args)
    yield "conv2d_forward", y
    yield "conv2d_backward_input", OPS.conv2d_backward_input(y, k, x.shape, *args)
    yield "conv2d_backward_kernel", OPS.conv2d_backward_kernel(x, y, k.shape, *args)
    pargs = ((3, 3), (2, 2), (1, 1, 1, 1), data_format)
    y, arg = OPS.max_pool2d_forward(x, *pargs)
    yield "max_pool2d_forward", y
    yield "max_pool2d_backward", OPS.max_pool2d_backward(y, arg, x.shape, *pargs)
    yield "avg_pool2d_forward", OPS.avg_pool2d_forward(x, *pargs)
    yield "avg_pool2d_backward", OPS.avg_pool2d_backward(y, x.shape, *pargs)
    u = OPS.uniform(OPS.rng(0), y.shape, np.float64).astype(dtype)  # the same draws for every dtype
    ys, index = OPS.stochastic_pool2d_forward(x, u, *pargs)
    yield "stochastic_pool2d_forward", ys
    yield "stochastic_pool2d_backward", OPS.stochastic_pool2d_backward(y, index, x.shape, *pargs)
    yield "stochastic_pool2d_inference_forward", OPS.stochastic_pool2d_inference_forward(x, *pargs)
    yield "stochastic_pool2d_inference_backward", OPS.stochastic_pool2d_inference_backward(y, x, *pargs)
    for keep in (False, True):
        g = OPS.global_avg_pool2d_forward(x, data_format, keep)
        yield "global_avg_pool2d_forward", g
        yield "global_avg_pool2d_backward", OPS.global_avg_pool2d_backward(g, x.shape, data_format, keep)
        g, garg = OPS.global_max_pool2d_forward(x, data_format, keep)
        yield "global_max_pool2d_forward", g
        yield "global_max_pool2d_backward", OPS.global_max_pool2d_backward(g, garg, x.shape, data_format, keep)
    axis = 3 if data_format == "channels_last" else 1
    c = x.shape[axis]
    gamma, beta = np.linspace(0.5, 1.5, c).astype(dtype), np.linspace(-1, 1, c).astype(dtype)
    yb, mean, var, cache = OPS.batch_norm_forward_training(x, gamma, beta, axis, 1e-3)
    yield "batch_norm_forward_training", yb
    yield "batch_norm_forward_training.mean", mean
    yield "batch_norm_forward_training.var", var
    for name, out in zip(("dx", "dgamma", "dbeta"), OPS.batch_norm_backward_training(yb, cache)):
        yield "batch_norm_backward_training." + name, out
    yield "batch_norm_forward_inference", OPS.batch_norm_forward_inference(x, gamma, beta, mean, var, axis, 1e-3)
    for name, out in zip(("dx", "dgamma", "dbeta"), OPS.batch_norm_backward_inference(yb, x, gamma, mean, var, axis, 1e-3)):
        yield "batch_norm_backward_inference." + name, out


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_outputs_keep_the_input_dtype(dtype, data_format):
    x = np.random.default_rng(11).standard_normal((2, 5, 6, 3))
    for name, out in _run_all(to_format(x, data_format), dtype, data_format):
        assert out.dtype == dtype, name
        assert np.isfinite(out).all(), name


def test_float32_results_close_to_float64():
    x = np.random.default_rng(12).standard_normal((2, 5, 6, 3))
    for (name, a), (_, b) in zip(_run_all(x, np.float32), _run_all(x, np.float64)):
        assert_close(a, b, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("data_format", FORMATS)
def test_batch_size_zero(data_format):
    x = np.zeros(shape_in((0, 5, 6, 3), data_format), dtype=np.float32)
    outs = dict(_run_all(x, np.float32, data_format))
    cl = data_format == "channels_last"
    assert outs["conv2d_forward"].shape == ((0, 3, 6, 2) if cl else (0, 2, 3, 6))
    assert outs["conv2d_backward_input"].shape == x.shape
    assert outs["conv2d_backward_kernel"].shape == (3, 2, 3, 2) and not outs["conv2d_backward_kernel"].any()
    assert outs["max_pool2d_forward"].shape == ((0, 3, 3, 3) if cl else (0, 3, 3, 3))
    for name in ("max_pool2d_backward", "avg_pool2d_backward", "stochastic_pool2d_backward", "stochastic_pool2d_inference_backward"):
        assert outs[name].shape == x.shape, name
    assert outs["global_max_pool2d_backward"].shape == x.shape
    assert outs["batch_norm_forward_training.mean"].shape == (3,)
    assert outs["batch_norm_backward_training.dx"].shape == x.shape


# ------------------------------------------------------- arrays and random
class _DLPackOnly:
    """Exposes only the DLPack protocol (no __array__)."""

    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kwargs):
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


def test_asarray_and_to_numpy():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert OPS.asarray(a) is a
    assert OPS.asarray(a, np.float32) is a
    b = OPS.asarray(a, np.float64)
    assert b.dtype == np.float64 and np.array_equal(a, b)
    np.testing.assert_array_equal(OPS.asarray(_DLPackOnly(a)), a)
    np.testing.assert_array_equal(OPS.asarray([[1, 2]], "float32"), np.array([[1, 2]], np.float32))
    assert OPS.to_numpy(a) is a
    assert OPS.name == "numpy" and OPS.xp is np


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_uniform(dtype):
    u = OPS.uniform(OPS.rng(3), (1000, 7), dtype)
    assert u.dtype == dtype and u.shape == (1000, 7)
    assert (u >= 0).all() and (u < 1).all()
    assert abs(float(u.astype(np.float64).mean()) - 0.5) < 0.02
    np.testing.assert_array_equal(u, OPS.uniform(OPS.rng(3), (1000, 7), dtype))


def test_cupy_ops_module_imports_without_cupy(monkeypatch):
    import backends.cupy_ops as cupy_ops  # must import everywhere

    monkeypatch.setitem(sys.modules, "cupy", None)  # as if cupy were not installed
    with pytest.raises(ImportError, match="CupyOps needs cupy"):
        cupy_ops.CupyOps()
