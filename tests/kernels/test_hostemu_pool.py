"""backends/kernels/pool.cu on the host emulator, against backends.numpy_ops.NumpyOps.

Max pooling values and argmax indices, stochastic picks, the gradient
routing and global max/argmax are compared exactly; averages, the
stochastic inference forms and global means within float tolerance.
Inputs hold many ties (small integers) so "first maximum" is exercised;
every output buffer is poisoned (NaN / -7777) before each launch.
"""

import random
import sys

import numpy as np
import pytest

from backends.numpy_ops import NumpyOps
from backends.window_plans import out_size
from emu_helpers import (
    LAUNCHES,
    ORDERS_BARRIER,
    assert_same_bits,
    expr,
    i32,
    poison,
    same_pads,
    tol,
)

pytestmark = pytest.mark.kernels

REF = NumpyOps()
DTYPES = [np.float32, np.float64]


def _case(n, h, w, c, pool, strides, pads=(0, 0, 0, 0)):
    return dict(n=n, h=h, w=w, c=c, pool=pool, strides=strides, pads=pads)


CASES = {
    "2x2-s2-ragged": _case(2, 7, 9, 3, (2, 2), (2, 2)),
    "3x3-s2-same-overlap": _case(2, 8, 6, 2, (3, 3), (2, 2), same_pads(8, 3, 2) + same_pads(6, 3, 2)),
    "3x3-s1-same": _case(1, 5, 7, 4, (3, 3), (1, 1), (1, 1, 1, 1)),
    "3x2-s(2,1)-overlap": _case(2, 6, 5, 3, (3, 2), (2, 1)),
    "2x2-s1-pad-only-windows": _case(1, 4, 4, 2, (2, 2), (1, 1), (2, 0, 0, 1)),
    "global-like-window": _case(2, 3, 4, 5, (3, 4), (1, 1)),
    # Geometry NumpyOps reduces first (backends/ops.py _axis_plan) while the kernels
    # take it as is, clipping their loops to the input: windows of padding only,
    # strides beyond the input, windows far larger than it.
    "pads-beyond-window": _case(1, 4, 5, 2, (3, 2), (1, 2), (6, 4, 3, 5)),
    "strides-beyond-input": _case(2, 3, 4, 2, (2, 3), (7, 9)),
    "huge-window-same": _case(1, 3, 4, 2, (40, 51), (1, 1), same_pads(3, 40, 1) + same_pads(4, 51, 1)),
    "huge-window-same-strided": _case(2, 5, 3, 2, (30, 7), (4, 5), same_pads(5, 30, 4) + same_pads(3, 7, 5)),
}


def _geometry(g):
    (ph, pw), (sh, sw) = g["pool"], g["strides"]
    top, bottom, left, right = g["pads"]
    oh = out_size(g["h"], ph, sh, 1, top + bottom)
    ow = out_size(g["w"], pw, sw, 1, left + right)
    return oh, ow


def _shape_in(g, cf):
    return (g["n"], g["c"], g["h"], g["w"]) if cf else (g["n"], g["h"], g["w"], g["c"])


def _shape_out(g, cf):
    oh, ow = _geometry(g)
    return (g["n"], g["c"], oh, ow) if cf else (g["n"], oh, ow, g["c"])


def _geo_args(g, cf):
    oh, ow = _geometry(g)
    (ph, pw), (sh, sw) = g["pool"], g["strides"]
    top, _, left, _ = g["pads"]
    return (i32(g["n"]), i32(g["h"]), i32(g["w"]), i32(g["c"]), i32(int(cf)), i32(oh), i32(ow),
            i32(ph), i32(pw), i32(sh), i32(sw), i32(top), i32(left))


def _data_format(cf):
    return "channels_first" if cf else "channels_last"


def _tied(shape, dtype, seed):
    """Values with many exact ties (0, 1, 2) and some negatives."""
    rng = np.random.default_rng(seed)
    return (rng.integers(-1, 3, size=shape) + (rng.random(shape) < 0.2) * rng.random(shape)).astype(dtype)


def _launches(work):
    for name, (grid, block) in LAUNCHES.items():
        yield name, grid(work), block, ("reverse" if name == "odd" else "forward")


def _run(kernel, work, make_args, outputs):
    """Launch ``kernel`` with every LAUNCHES configuration; yields the poisoned-then-written outputs."""
    for name, grid, block, order in _launches(work):
        bufs = [poison(shape, dtype) for shape, dtype in outputs]
        kernel(grid, block, make_args(*bufs), order=order)
        yield name, bufs


# ---------------------------------------------------------------- max pooling
@pytest.mark.parametrize("cf", [False, True], ids=["nhwc", "nchw"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_max_pool_forward_values_and_first_argmax(emu, case, dtype, cf):
    g = CASES[case]
    x = _tied(_shape_in(g, cf), dtype, 0)
    want_y, want_arg = REF.max_pool2d_forward(x, g["pool"], g["strides"], g["pads"], _data_format(cf))
    k = emu["pool"].kernel(expr("max_pool_fwd", dtype))
    out = _shape_out(g, cf)
    for name, (y, arg) in _run(k, want_y.size, lambda y, a: (x, y, a, *_geo_args(g, cf)),
                               [(out, dtype), (out, np.int32)]):
        assert_same_bits(y, want_y, f"max y {case} {name}")
        assert_same_bits(arg, want_arg, f"max argmax {case} {name}")


@pytest.mark.parametrize("cf", [False, True], ids=["nhwc", "nchw"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_max_pool_backward_routes_to_argmax(emu, case, dtype, cf):
    g = CASES[case]
    x = _tied(_shape_in(g, cf), dtype, 1)
    df = _data_format(cf)
    _, arg = REF.max_pool2d_forward(x, g["pool"], g["strides"], g["pads"], df)
    dy = np.random.default_rng(2).standard_normal(arg.shape).astype(dtype)
    want = REF.max_pool2d_backward(dy, arg, x.shape, g["pool"], g["strides"], g["pads"], df)
    k = emu["pool"].kernel(expr("pool_route_bwd", dtype))
    for name, (dx,) in _run(k, x.size, lambda dx: (dy, arg, dx, *_geo_args(g, cf)), [(x.shape, dtype)]):
        assert_same_bits(dx, want, f"route {case} {name}")


# ------------------------------------------------------------ average pooling
@pytest.mark.parametrize("cf", [False, True], ids=["nhwc", "nchw"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_avg_pool_forward_and_backward(emu, case, dtype, cf):
    g = CASES[case]
    df = _data_format(cf)
    rng = np.random.default_rng(3)
    x = rng.standard_normal(_shape_in(g, cf)).astype(dtype)
    want_y = REF.avg_pool2d_forward(x, g["pool"], g["strides"], g["pads"], df)
    dy = rng.standard_normal(want_y.shape).astype(dtype)
    want_dx = REF.avg_pool2d_backward(dy, x.shape, g["pool"], g["strides"], g["pads"], df)
    fwd, bwd = emu["pool"].kernel(expr("avg_pool_fwd", dtype)), emu["pool"].kernel(expr("avg_pool_bwd", dtype))
    for name, (y,) in _run(fwd, want_y.size, lambda y: (x, y, *_geo_args(g, cf)), [(want_y.shape, dtype)]):
        np.testing.assert_allclose(y, want_y, err_msg=f"avg fwd {case} {name}", **tol(dtype))
    for name, (dx,) in _run(bwd, x.size, lambda dx: (dy, dx, *_geo_args(g, cf)), [(x.shape, dtype)]):
        np.testing.assert_allclose(dx, want_dx, err_msg=f"avg bwd {case} {name}", **tol(dtype))


# --------------------------------------------------------- stochastic pooling
@pytest.mark.parametrize("cf", [False, True], ids=["nhwc", "nchw"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_stochastic_pool_training_picks(emu, case, dtype, cf):
    """Same draws, same picks: y and the picked cell exactly, including zero-sum windows (-1)."""
    g = CASES[case]
    df = _data_format(cf)
    x = _tied(_shape_in(g, cf), dtype, 4) - dtype(0.5)
    channel0 = (slice(None), 0) if cf else (Ellipsis, 0)
    x[channel0] = -np.abs(x[channel0])  # channel 0: every window sums to 0 (no pick, index -1)
    u = np.random.default_rng(5).random(_shape_out(g, cf)).astype(dtype)
    u.reshape(-1)[:3] = [0.0, np.nextafter(dtype(1), dtype(0)), 0.5]  # the ends of [0, 1)
    want_y, want_idx = REF.stochastic_pool2d_forward(x, u, g["pool"], g["strides"], g["pads"], df)
    assert (want_idx[channel0] == -1).all() and (want_idx != -1).any()
    k = emu["pool"].kernel(expr("stoch_pool_fwd", dtype))
    out = want_y.shape
    for name, (y, idx) in _run(k, want_y.size, lambda y, i: (x, u, y, i, *_geo_args(g, cf)),
                               [(out, dtype), (out, np.int32)]):
        assert_same_bits(y, want_y, f"stoch y {case} {name}")
        assert_same_bits(idx, want_idx, f"stoch index {case} {name}")
    # ... and its gradient goes through the same routing kernel.
    dy = np.random.default_rng(6).standard_normal(out).astype(dtype)
    want_dx = REF.stochastic_pool2d_backward(dy, want_idx, x.shape, g["pool"], g["strides"], g["pads"], df)
    dx = poison(x.shape, dtype)
    emu["pool"].kernel(expr("pool_route_bwd", dtype))(2, 64, (dy, want_idx, dx, *_geo_args(g, cf)))
    assert_same_bits(dx, want_dx, f"stoch route {case}")


@pytest.mark.parametrize("cf", [False, True], ids=["nhwc", "nchw"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_stochastic_pool_inference_forward_and_backward(emu, case, dtype, cf):
    g = CASES[case]
    df = _data_format(cf)
    rng = np.random.default_rng(7)
    x = rng.standard_normal(_shape_in(g, cf)).astype(dtype)
    channel0 = (slice(None), 0) if cf else (Ellipsis, 0)
    x[channel0] = -np.abs(x[channel0])  # channel 0: every window has sum(a) == 0
    want_y = REF.stochastic_pool2d_inference_forward(x, g["pool"], g["strides"], g["pads"], df)
    dy = rng.standard_normal(want_y.shape).astype(dtype)
    want_dx = REF.stochastic_pool2d_inference_backward(dy, x, g["pool"], g["strides"], g["pads"], df)
    pool = emu["pool"]
    fwd = pool.kernel(expr("stoch_pool_inf_fwd", dtype))
    for name, (y,) in _run(fwd, want_y.size, lambda y: (x, y, *_geo_args(g, cf)), [(want_y.shape, dtype)]):
        np.testing.assert_allclose(y, want_y, err_msg=f"stoch inf fwd {case} {name}", **tol(dtype))
    stats, bwd = pool.kernel(expr("stoch_pool_inf_stats", dtype)), pool.kernel(expr("stoch_pool_inf_bwd", dtype))
    for name, (yw, r) in _run(stats, dy.size, lambda yw, r: (x, dy, yw, r, *_geo_args(g, cf)),
                              [(dy.shape, dtype), (dy.shape, dtype)]):
        np.testing.assert_allclose(yw, want_y, err_msg=f"stoch stats {case} {name}", **tol(dtype))
        for name2, (dx,) in _run(bwd, x.size, lambda dx: (x, yw, r, dx, *_geo_args(g, cf)), [(x.shape, dtype)]):
            np.testing.assert_allclose(dx, want_dx, err_msg=f"stoch inf bwd {case} {name}/{name2}", **tol(dtype))


# ------------------------------------------------------------- global pooling
GLOBAL_SHAPES = {"7x5x3": (2, 7, 5, 3), "1x1x4": (3, 1, 1, 4), "16x16x2": (1, 16, 16, 2), "3x100x1": (2, 3, 100, 1)}


def _global_ref(x, cf, mode):
    df = _data_format(cf)
    if mode == 0:
        return REF.global_avg_pool2d_forward(x, df, False), None
    return REF.global_max_pool2d_forward(x, df, False)


def _global_args(x, y, arg, n, hw, c, cf, mode):
    return (x, y, arg, i32(n), i32(hw), i32(c), i32(int(cf)), i32(mode))


@pytest.mark.parametrize("mode", [0, 1], ids=["avg", "max"])
@pytest.mark.parametrize("cf", [False, True], ids=["nhwc", "nchw"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", sorted(GLOBAL_SHAPES))
def test_global_pool_serial(emu, shape, dtype, cf, mode):
    n, h, w, c = GLOBAL_SHAPES[shape]
    x = _tied((n, c, h, w) if cf else (n, h, w, c), dtype, 8)
    want_y, want_arg = _global_ref(x, cf, mode)
    k = emu["pool"].kernel(expr("global_pool_fwd_serial", dtype))
    for name, (y, arg) in _run(k, n * c, lambda y, a: _global_args(x, y, a, n, h * w, c, cf, mode),
                               [((n, c), dtype), ((n, c), np.int32)]):
        if mode == 0:
            np.testing.assert_allclose(y, want_y, err_msg=f"global avg {shape} {name}", **tol(dtype))
            assert (arg == -7777).all()  # mode 0 leaves argmax alone
        else:
            assert_same_bits(y, want_y, f"global max {shape} {name}")
            assert_same_bits(arg, want_arg, f"global argmax {shape} {name}")


@pytest.mark.parametrize("mode", [0, 1], ids=["avg", "max"])
@pytest.mark.parametrize("cf", [False, True], ids=["nhwc", "nchw"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", sorted(GLOBAL_SHAPES))
def test_global_pool_block_reduction_every_order(emu, shape, dtype, cf, mode):
    """The __syncthreads tree: block sizes above and below h*w, odd ones, grids smaller than the outputs."""
    n, h, w, c = GLOBAL_SHAPES[shape]
    x = _tied((n, c, h, w) if cf else (n, h, w, c), dtype, 9)
    want_y, want_arg = _global_ref(x, cf, mode)
    k = emu["pool"].kernel(expr("global_pool_fwd_block", dtype))
    assert k.needs_fibers
    for grid, block in ((n * c, 32), (1, 64), (2, 7), (3, 256), (1, 1)):
        results = []
        for order in ORDERS_BARRIER:
            y, arg = poison((n, c), dtype), poison((n, c), np.int32)
            k(grid, block, _global_args(x, y, arg, n, h * w, c, cf, mode), order=order, seed=grid * block)
            results.append((y, arg))
            what = f"global block {shape} grid={grid} block={block} {order}"
            if mode == 0:
                np.testing.assert_allclose(y, want_y, err_msg=what, **tol(dtype))
            else:
                assert_same_bits(y, want_y, what)
                assert_same_bits(arg, want_arg, what + " argmax")
        for y, arg in results[1:]:  # the tree's order is fixed: same bits in every thread order
            assert_same_bits(y, results[0][0], f"global block {shape} order-independence")


@pytest.mark.parametrize("cf", [False, True], ids=["nhwc", "nchw"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_global_pool_backward(emu, dtype, cf):
    n, h, w, c = 2, 5, 3, 4
    df = _data_format(cf)
    shape = (n, c, h, w) if cf else (n, h, w, c)
    x = _tied(shape, dtype, 10)
    dy = np.random.default_rng(11).standard_normal((n, c)).astype(dtype)
    _, arg = REF.global_max_pool2d_forward(x, df, False)
    want_avg = REF.global_avg_pool2d_backward(dy, shape, df, False)
    want_max = REF.global_max_pool2d_backward(dy, arg, shape, df, False)
    avg, mx = emu["pool"].kernel(expr("global_avg_bwd", dtype)), emu["pool"].kernel(expr("global_max_bwd", dtype))
    common = (i32(n), i32(h * w), i32(c), i32(int(cf)))
    for name, (dx,) in _run(avg, x.size, lambda dx: (dy, dx, *common), [(shape, dtype)]):
        assert_same_bits(dx, want_avg, f"global avg bwd {name}")
    for name, (dx,) in _run(mx, x.size, lambda dx: (dy, arg, dx, *common), [(shape, dtype)]):
        assert_same_bits(dx, want_max, f"global max bwd {name}")


def _nan_case():
    g = CASES["3x3-s2-same-overlap"]
    x = _tied(_shape_in(g, False), np.float32, 12)
    x[0, 2, 3, 1] = np.nan
    x[1, 0, 0, 0] = np.nan
    want_y, want_arg = REF.max_pool2d_forward(x, g["pool"], g["strides"], g["pads"], "channels_last")
    assert np.isnan(want_y).sum() >= 2
    return g, x, want_y, want_arg


def test_max_pool_nan_is_the_max(emu):
    """A NaN in a window makes the output NaN, as NumpyOps' np.maximum does."""
    g, x, want_y, _ = _nan_case()
    y, arg = poison(want_y.shape, np.float32), poison(want_y.shape, np.int32)
    emu["pool"].kernel("max_pool_fwd<float>")(1, 32, (x, y, arg, *_geo_args(g, False)))
    assert_same_bits(y, want_y, "max with NaN")
    finite = ~np.isnan(want_y)
    assert_same_bits(arg[finite], _nan_case()[3][finite], "argmax of windows without NaN")


def test_max_pool_nan_argmax_matches_numpy_ops(emu):
    """The first NaN of a window is its argmax in both (NumpyOps used to give ph*pw-1 there)."""
    g, x, want_y, want_arg = _nan_case()
    y, arg = poison(want_y.shape, np.float32), poison(want_y.shape, np.int32)
    emu["pool"].kernel("max_pool_fwd<float>")(1, 32, (x, y, arg, *_geo_args(g, False)))
    assert_same_bits(arg, want_arg, "argmax with NaN")


@pytest.mark.parametrize("cf", [False, True], ids=["nhwc", "nchw"])
def test_global_max_nan_first(emu, cf):
    """Global max: the first NaN wins, value and index, as numpy's argmax."""
    n, h, w, c = 2, 4, 5, 3
    x = _tied((n, c, h, w) if cf else (n, h, w, c), np.float64, 13)
    x.reshape(-1)[[5, 17, 40, 41]] = np.nan
    want_y, want_arg = _global_ref(x, cf, 1)
    for kname, grid, block in (("global_pool_fwd_serial", 1, 32), ("global_pool_fwd_block", 2, 8)):
        y, arg = poison((n, c), np.float64), poison((n, c), np.int32)
        emu["pool"].kernel(expr(kname, np.float64))(grid, block, _global_args(x, y, arg, n, h * w, c, cf, 1))
        assert_same_bits(y, want_y, kname)
        assert_same_bits(arg, want_arg, kname + " argmax")


# ------------------------------------------------------------ random geometry
def _random_geometry(seed):
    """Inputs up to 6x6 with windows, strides and pads up to several times their size."""
    rng = random.Random(seed)
    while True:
        h, w, ph, pw = rng.randint(1, 6), rng.randint(1, 6), rng.randint(1, 9), rng.randint(1, 9)
        strides = (rng.choice([1, 2, 3, 7, 40]), rng.choice([1, 2, 3, 7, 40]))
        pads = tuple(rng.randint(0, 9) for _ in range(4))
        g = _case(2, h, w, 2, (ph, pw), strides, pads)
        if min(_geometry(g)) >= 1:
            return g


@pytest.mark.parametrize("seed", range(40))
def test_every_pool_kernel_on_random_geometry(emu, seed):
    """The clipped loops (pool_clip, pool_cover) against NumpyOps, which reduces such geometry first."""
    g, cf, dtype = _random_geometry(seed), seed % 2 == 1, np.float64
    df, geo = _data_format(cf), _geo_args(g, cf)
    shape, out = _shape_in(g, cf), _shape_out(g, cf)
    args = (g["pool"], g["strides"], g["pads"], df)
    rng = np.random.default_rng(seed)
    x, dy, u = _tied(shape, dtype, seed), rng.standard_normal(out), rng.random(out)
    pool = emu["pool"]

    def launch(name, *arrays, outputs):
        bufs = [poison(o, t) for o, t in outputs]
        pool.kernel(expr(name, dtype))(3, 32, (*arrays, *bufs, *geo))
        return bufs

    want_y, want_arg = REF.max_pool2d_forward(x, *args)
    y, arg = launch("max_pool_fwd", x, outputs=[(out, dtype), (out, np.int32)])
    assert_same_bits(y, want_y, "max y")
    assert_same_bits(arg, want_arg, "max argmax")
    (dx,) = launch("pool_route_bwd", dy, want_arg, outputs=[(shape, dtype)])
    assert_same_bits(dx, REF.max_pool2d_backward(dy, want_arg, shape, *args), "route")
    (y,) = launch("avg_pool_fwd", x, outputs=[(out, dtype)])
    np.testing.assert_allclose(y, REF.avg_pool2d_forward(x, *args), **tol(dtype))
    (dx,) = launch("avg_pool_bwd", dy, outputs=[(shape, dtype)])
    np.testing.assert_allclose(dx, REF.avg_pool2d_backward(dy, shape, *args), **tol(dtype))
    want_y, want_idx = REF.stochastic_pool2d_forward(x, u, *args)
    y, idx = launch("stoch_pool_fwd", x, u, outputs=[(out, dtype), (out, np.int32)])
    assert_same_bits(y, want_y, "stochastic y")
    assert_same_bits(idx, want_idx, "stochastic index")
    yw, r = launch("stoch_pool_inf_stats", x, dy, outputs=[(out, dtype), (out, dtype)])
    np.testing.assert_allclose(yw, REF.stochastic_pool2d_inference_forward(x, *args), **tol(dtype))
    (dx,) = launch("stoch_pool_inf_bwd", x, yw, r, outputs=[(shape, dtype)])
    np.testing.assert_allclose(dx, REF.stochastic_pool2d_inference_backward(dy, x, *args), **tol(dtype))


# ---------------------------------------- huge geometry, end to end through CupyOps
# CupyOps first reduces such geometry (backends/ops.py _axis_plan) as NumpyOps does,
# so the kernels get small int32 arguments: a 10**12-cell window, strides of 2**63 or
# a dilation of 10**6 with 'same' padding give NumpyOps's results (checked against
# float64 loops in tests/backends/test_huge_geometry.py) instead of a refusal.
import test_hostemu_cupy_ops as cupy_emu  # noqa: E402


@pytest.fixture
def ops(emu, monkeypatch):
    """A CupyOps whose kernels run on the host emulator (the stand-in cupy of test_hostemu_cupy_ops)."""
    from backends import cupy_ops

    monkeypatch.setitem(sys.modules, "cupy", cupy_emu._fake_cupy("forward", cupy_emu._Launches()))
    for cache in ("_raw_modules", "_functions", "_sm_counts"):
        monkeypatch.setattr(cupy_ops, cache, {})
    return cupy_ops.CupyOps(im2col_limit_bytes=2**30)


HUGE_POOL = {
    "window-10**6-same": ((1, 4, 4, 2), (10**6, 10**6), (10**6, 10**6), same_pads(4, 10**6, 10**6) * 2),
    "window-tall-same-strided": ((2, 5, 3, 2), (7 * 10**5, 2), (3, 2), same_pads(5, 7 * 10**5, 3) + same_pads(3, 2, 2)),
    "strides-2**63": ((2, 4, 5, 2), (2, 3), (2**63, 2**64), (0, 0, 0, 0)),
    "window-over-2**63-cells": ((1, 3, 4, 2), (2**32 + 1, 2**32 + 1), (1, 1), same_pads(3, 2**32 + 1, 1)
                                + same_pads(4, 2**32 + 1, 1)),
}


@pytest.mark.parametrize("cf", [False, True], ids=["nhwc", "nchw"])
@pytest.mark.parametrize("case", sorted(HUGE_POOL))
def test_huge_pooling_geometry_through_cupy_ops(ops, case, cf):
    shape, pool, strides, pads = HUGE_POOL[case]
    dtype = np.float32
    x = _tied(shape, dtype, 30)
    x[0, 1, 1, 1] = np.nan
    if cf:
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    args = (pool, strides, pads, _data_format(cf))
    want_y, want_arg = REF.max_pool2d_forward(x, *args)
    y, arg = ops.max_pool2d_forward(x, *args)
    assert_same_bits(y, want_y, "max y")
    assert_same_bits(arg, want_arg, "max argmax")  # int64 cell numbers for the 10**12-cell window
    dy = np.random.default_rng(31).standard_normal(want_y.shape).astype(dtype)
    assert_same_bits(ops.max_pool2d_backward(dy, arg, x.shape, *args),
                     REF.max_pool2d_backward(dy, want_arg, x.shape, *args), "max dx")
    np.testing.assert_allclose(ops.avg_pool2d_forward(x, *args), REF.avg_pool2d_forward(x, *args), **tol(dtype))
    np.testing.assert_allclose(ops.avg_pool2d_backward(dy, x.shape, *args),
                               REF.avg_pool2d_backward(dy, x.shape, *args), **tol(dtype))
    x = np.nan_to_num(x)
    u = np.random.default_rng(32).random(want_y.shape).astype(dtype)
    want_y, want_idx = REF.stochastic_pool2d_forward(x, u, *args)
    y, idx = ops.stochastic_pool2d_forward(x, u, *args)
    assert_same_bits(y, want_y, "stochastic y")
    assert_same_bits(idx, want_idx, "stochastic index")
    assert_same_bits(ops.stochastic_pool2d_backward(dy, idx, x.shape, *args),
                     REF.stochastic_pool2d_backward(dy, want_idx, x.shape, *args), "stochastic dx")
    np.testing.assert_allclose(ops.stochastic_pool2d_inference_forward(x, *args),
                               REF.stochastic_pool2d_inference_forward(x, *args), **tol(dtype))
    np.testing.assert_allclose(ops.stochastic_pool2d_inference_backward(dy, x, *args),
                               REF.stochastic_pool2d_inference_backward(dy, x, *args), **tol(dtype))


HUGE_CONV = {
    # x NHWC, kernel, strides, dilation, pads
    "strides-2**60": ((1, 4, 4, 2), (2, 2, 2, 3), (2**60, 2**60), (1, 1), (0, 0, 0, 0)),
    "dilation-2**62-on-a-1-wide-axis": ((2, 4, 4, 1), (2, 1, 1, 2), (1, 1), (1, 2**62), (0, 0, 0, 0)),
    "dilation-10**6-same-no-tap-sees-input": ((1, 4, 4, 1), (2, 2, 1, 1), (1, 1), (10**6, 10**6),
                                              same_pads(4, 2, 1, 10**6) * 2),
    "dilation-10**5-same-centre-tap": ((2, 5, 6, 3), (3, 3, 3, 2), (1, 1), (10**5, 10**5),
                                       same_pads(5, 3, 1, 10**5) + same_pads(6, 3, 1, 10**5)),
}


@pytest.mark.parametrize("cf", [False, True], ids=["nhwc", "nchw"])
@pytest.mark.parametrize("case", sorted(HUGE_CONV))
def test_huge_conv_geometry_through_cupy_ops(ops, case, cf):
    shape, kshape, strides, dil, pads = HUGE_CONV[case]
    dtype = np.float32
    rng = np.random.default_rng(33)
    x = rng.standard_normal(shape).astype(dtype)
    if cf:
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    kernel = rng.standard_normal(kshape).astype(dtype)
    df = _data_format(cf)
    want_y = REF.conv2d_forward(x, kernel, strides, pads, dil, df)
    dy = rng.standard_normal(want_y.shape).astype(dtype)
    np.testing.assert_allclose(ops.conv2d_forward(x, kernel, strides, pads, dil, df), want_y, **tol(dtype))
    np.testing.assert_allclose(ops.conv2d_backward_input(dy, kernel, x.shape, strides, pads, dil, df),
                               REF.conv2d_backward_input(dy, kernel, x.shape, strides, pads, dil, df), **tol(dtype))
    np.testing.assert_allclose(ops.conv2d_backward_kernel(x, dy, kernel.shape, strides, pads, dil, df),
                               REF.conv2d_backward_kernel(x, dy, kernel.shape, strides, pads, dil, df), **tol(dtype))
