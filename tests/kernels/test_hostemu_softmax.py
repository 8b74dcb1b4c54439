"""backends/kernels/softmax.cu on the host emulator, against backends.numpy_ops.NumpyOps.

The row kernels (softmax_rows, bias_softmax_rows, sparse_xent_fwd, sparse_xent_mean) combine a row's lanes
through __shared__ trees, so they run with fibers in forward, reverse and
shuffled thread orders and with block sizes that do not divide into the
lanes; the results match NumpyOps within float tolerance (the summation
order differs). sparse_xent_bwd is elementwise and gives NumpyOps' bits.
"""

import numpy as np
import pytest

from backends.numpy_ops import NumpyOps
from emu_helpers import ORDERS_BARRIER, assert_same_bits, expr, i32, i64, poison

pytestmark = pytest.mark.kernels

REF = NumpyOps()
SHAPES = ((7, 1), (5, 3), (33, 10), (4, 32), (3, 70), (2, 257))  # one class; lanes left idle; lanes striding


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-7) if np.dtype(dtype) == np.float32 else dict(rtol=1e-13, atol=1e-15)


def _lanes(cols):
    lanes = 1
    while lanes < min(cols, 32):
        lanes *= 2
    return lanes


def _data(shape, dtype, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * 3).astype(dtype)


def _rows(emu, kernel, dtype, arrays, rows, cols, scalars=(), block=256, grid=None, order="forward", lanes=None):
    lanes = _lanes(cols) if lanes is None else lanes
    groups = -(-rows // max(1, block // min(lanes, block)))
    k = emu["softmax"].kernel(expr(kernel, dtype))
    k(grid or groups, block, tuple(arrays) + (i64(rows), i32(cols), i32(lanes)) + tuple(scalars), order=order)


LAUNCH = [(256, None), (7, None), (1, None), (64, 2)]  # (block, grid): odd blocks, a block smaller than the lanes


@pytest.mark.parametrize("order", ORDERS_BARRIER)
@pytest.mark.parametrize("block, grid", LAUNCH)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_softmax_rows_matches_numpy(emu, shape, dtype, block, grid, order):
    x = _data(shape, dtype)
    y = poison(shape, dtype)
    _rows(emu, "softmax_rows", dtype, (x, y), shape[0], shape[1], block=block, grid=grid, order=order)
    np.testing.assert_allclose(y, REF.softmax(x, 1), **_tol(dtype))


@pytest.mark.parametrize("order", ORDERS_BARRIER)
@pytest.mark.parametrize("block, grid", LAUNCH)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_bias_softmax_rows_adds_the_bias_in_place_then_normalizes(emu, shape, dtype, block, grid, order):
    z = _data(shape, dtype)
    bias = _data(shape[1:], dtype, seed=4)
    want_z = z.copy()
    want_y = REF.bias_add_softmax(want_z, bias)
    y = poison(shape, dtype)
    _rows(emu, "bias_softmax_rows", dtype, (z, bias, y), shape[0], shape[1], block=block, grid=grid, order=order)
    assert_same_bits(z, want_z, "the logits")  # one float add, as numpy's
    np.testing.assert_allclose(y, want_y, **_tol(dtype))


def test_softmax_rows_keeps_nan_and_infinity_rows_as_numpy(emu):
    x = _data((4, 5), np.float32)
    x[1, 2] = np.nan
    x[2, 0] = np.inf
    x[3, :] = -np.inf
    y = poison(x.shape, np.float32)
    with np.errstate(invalid="ignore"):
        want = REF.softmax(x, 1)
    _rows(emu, "softmax_rows", np.float32, (x, y), 4, 5)
    np.testing.assert_allclose(y, want, **_tol(np.float32))  # NaN where numpy has NaN


@pytest.mark.parametrize("order", ORDERS_BARRIER)
@pytest.mark.parametrize("block, grid", LAUNCH)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_sparse_xent_fwd_matches_numpy(emu, shape, dtype, block, grid, order):
    rows, cols = shape
    p = REF.softmax(_data(shape, dtype), 1)
    if cols > 1:
        p[0, 0] = 0.0  # a probability the clip lifts to epsilon
    labels = np.random.default_rng(1).integers(0, cols, rows).astype(np.int64)
    lo, hi = dtype(1e-7), dtype(1 - 1e-7)
    values = poison((rows,), dtype)
    _rows(emu, "sparse_xent_fwd", dtype, (p, labels, values), rows, cols, (lo, hi), block=block, grid=grid, order=order)
    np.testing.assert_allclose(values, REF.sparse_xent_values(p, labels, lo, hi), **_tol(dtype))


def test_sparse_xent_fwd_gives_nan_for_a_label_out_of_range(emu):
    p = REF.softmax(_data((4, 3), np.float32), 1)
    labels = np.array([0, 3, -1, 2], np.int64)
    values = poison((4,), np.float32)
    _rows(emu, "sparse_xent_fwd", np.float32, (p, labels, values), 4, 3, (np.float32(1e-7), np.float32(1 - 1e-7)))
    assert np.isnan(values[[1, 2]]).all() and np.isfinite(values[[0, 3]]).all()


@pytest.mark.parametrize("order", ORDERS_BARRIER)
@pytest.mark.parametrize("block, grid", LAUNCH + [(32, 5), (256, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES + ((300, 3),), ids=str)
def test_sparse_xent_mean_is_the_mean_of_the_values_in_one_launch(emu, shape, dtype, block, grid, order):
    rows, cols = shape
    p = REF.softmax(_data(shape, dtype), 1)
    labels = np.random.default_rng(1).integers(0, cols, rows).astype(np.int64)
    lo, hi = dtype(1e-7), dtype(1 - 1e-7)
    lanes = _lanes(cols)
    groups = -(-rows // max(1, block // min(lanes, block)))
    grid = grid or groups
    mean, partial, done = poison((), dtype), poison((grid,), np.float64), np.zeros(1, np.uint32)
    for _ in range(2):  # the counter is left at 0 for the next launch
        _rows(emu, "sparse_xent_mean", dtype, (p, labels, mean, partial, done), rows, cols, (lo, hi),
              block=block, grid=grid, order=order)
        want = np.float64(REF.sparse_xent_values(p, labels, lo, hi).astype(np.float64).mean())
        np.testing.assert_allclose(mean, want, **_tol(dtype))
        assert done[0] == 0
    labels[0] = cols  # out of range: NaN, as the values' mean
    _rows(emu, "sparse_xent_mean", dtype, (p, labels, mean, partial, done), rows, cols, (lo, hi), block=block, grid=grid)
    assert np.isnan(mean)


@pytest.mark.parametrize("g_stride, scale", [(1, 1), (0, 1), (0, 1 / 7)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_sparse_xent_bwd_gives_the_bits_of_numpy(emu, shape, dtype, g_stride, scale):
    rows, cols = shape
    p = REF.softmax(_data(shape, dtype), 1)
    labels = np.random.default_rng(2).integers(0, cols, rows).astype(np.int64)
    g = _data((rows,), dtype, seed=3) if g_stride else np.full(1, 0.3, dtype)
    dx = poison(shape, dtype)
    k = emu["softmax"].kernel(expr("sparse_xent_bwd", dtype))
    k(3, 64, (p, labels, g, dx, i64(rows), i32(cols), i64(g_stride), dtype(scale)))
    if scale != 1:  # the mean's gradient: g * scale for every row
        want = REF.sparse_xent_logits_grad(p, labels, g.reshape(()), dtype(scale))
    else:
        want = REF.sparse_xent_logits_grad(p, labels, g if g_stride else np.broadcast_to(g[0], (rows,)))
    assert_same_bits(dx, want, "sparse_xent_bwd")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_top1_match_gives_numpys_argmax_matches(emu, shape, dtype):
    rows, cols = shape
    rng = np.random.default_rng(5)
    scores = rng.integers(-2, 3, shape).astype(dtype)  # ties: the first largest counts
    if rows > 2 and cols > 2:
        scores[1, 2] = np.nan  # a NaN is the largest, as for numpy's argmax
        scores[2, :] = -np.inf
    labels = rng.integers(0, cols, rows).astype(np.int64)
    labels[0] = int(np.argmax(scores[0]))  # one sure match
    out = poison((rows,), np.float64)
    emu["softmax"].kernel(expr("top1_match", dtype))(3, 64, (scores, labels, out, i64(rows), i32(cols)))
    assert_same_bits(out, REF.top1_matches(scores, labels), "top1_match")
