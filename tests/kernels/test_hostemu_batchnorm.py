"""backends/kernels/batchnorm.cu on the host emulator, against backends.numpy_ops.NumpyOps.

The kernels run in the sequence CupyOps uses (partial sums -> per-channel
factors -> elementwise apply), with x seen as (outer, c, inner). The block
reductions (bn_partial_last, bn_partial_mid) use __syncthreads and run with
fibers in forward, reverse and shuffled thread orders, which must give the
same bits; the results are compared with NumpyOps within float tolerance
(the summation order differs).
"""

import numpy as np
import pytest

from backends.numpy_ops import NumpyOps
from emu_helpers import ORDERS_BARRIER, assert_same_bits, expr, i32, i64, poison

pytestmark = pytest.mark.kernels

REF = NumpyOps()
EPS = 1e-3


def _tol(dtype):
    return dict(rtol=2e-5, atol=2e-5) if np.dtype(dtype) == np.float32 else dict(rtol=1e-12, atol=1e-12)


LAYOUTS = {
    # name: (shape, axis, use the *_last kernel)
    "nhwc-c37": ((2, 5, 3, 37), -1, True),  # two channel groups of 32, the second ragged
    "nhwc-c5": ((4, 3, 3, 5), -1, True),  # fewer channels than lanes
    "dense-c7": ((10, 7), -1, True),
    "nchw": ((3, 6, 4, 5), 1, False),
    "axis0": ((4, 3, 5), 0, False),  # outer == 1
    "rows-mid": ((9, 6), 1, False),  # inner == 1 through the general kernel
}


class BN:
    """Launches the batchnorm kernels for one (outer, c, inner) layout and dtype."""

    def __init__(self, emu, x, axis, use_last, block=256, grid_cap=None, nchunks=None, order="forward"):
        self.mod = emu["batchnorm"]
        self.dtype = x.dtype
        axis %= x.ndim
        self.outer = int(np.prod(x.shape[:axis], dtype=np.int64))
        self.c = x.shape[axis]
        self.inner = int(np.prod(x.shape[axis + 1 :], dtype=np.int64))
        self.use_last = use_last and self.inner == 1
        self.block, self.grid_cap, self.order = block, grid_cap, order
        if nchunks is None:  # CupyOps' choice for a 132-SM device
            target = 132 * 8
            if self.use_last:
                nchunks = max(1, min(-(-self.outer // 256), target // -(-self.c // 32)))
            else:
                nchunks = max(1, min(-(-(self.outer * self.inner) // 2048), target // self.c))
        self.nchunks = nchunks

    def k(self, name):
        return self.mod.kernel(expr(name, self.dtype))

    def vec(self):
        return poison(self.c, self.dtype)

    def elementwise(self, name, args, work):
        self.k(name)(max(1, min(-(-work // 256), 64)), 256, args, order=self.order)

    def partial(self, mode, x, dy=None, mean=None, relu_y=None):
        """(part1, part2) per chunk: mode 0 (mean, M2), mode 1 (sum d, sum d*(x-mean)), d = dy masked by
        relu_y > 0 when given; runs with fibers."""
        c, nchunks = self.c, self.nchunks
        part1, part2 = poison((nchunks, c), self.dtype), poison((nchunks, c), self.dtype)
        dy = x if dy is None else dy
        mean = x if mean is None else mean
        arrays = (x, dy, mean, x if relu_y is None else relu_y, part1, part2)
        masked = i32(relu_y is not None)
        if self.use_last:
            units = -(-c // 32) * nchunks
            args = arrays + (i64(self.outer), i32(c), i32(nchunks), i32(mode), masked)
            k = self.k("bn_partial_last")
        else:
            units = c * nchunks
            args = arrays + (i64(self.outer), i32(c), i32(self.inner), i32(nchunks), i32(mode), masked)
            k = self.k("bn_partial_mid")
        assert k.needs_fibers
        grid = units if self.grid_cap is None else min(units, self.grid_cap)
        k(grid, self.block, args, order=self.order, seed=grid)
        return part1, part2

    def _flags(self, gamma, beta, filler):
        return (filler if gamma is None else gamma, filler if beta is None else beta, i32(gamma is not None),
                i32(beta is not None), self.dtype.type(EPS), i32(self.c))

    def statistics(self, x, gamma, beta, fin_block=256, fin_grid=None, moving=None):
        """(mean, var, rstd, scale, shift, new moving mean, new moving var): the Welford partials, then
        bn_params_welford (block per channel), folding the batch into ``moving`` = (mean, var, momentum)."""
        part_mean, part_m2 = self.partial(0, x)
        mean, var, rstd, scale, shift, new_mm, new_mv = (self.vec() for _ in range(7))
        mm, mv, momentum = moving if moving is not None else (mean, mean, 0.0)
        t = self.dtype.type
        args = (part_mean, part_m2, i32(self.nchunks), i64(self.outer * self.inner)) + \
            self._flags(gamma, beta, part_mean) + (mean, var, rstd, scale, shift) + \
            (mm, mv, t(momentum), t(1.0 - momentum), i32(moving is not None), new_mm, new_mv)
        k = self.k("bn_params_welford")
        assert k.needs_fibers
        k(fin_grid or self.c, fin_block, args, order=self.order, seed=3)
        if moving is None:
            assert np.isnan(new_mm).all() and np.isnan(new_mv).all()  # not written
        return mean, var, rstd, scale, shift, new_mm, new_mv

    def forward_training(self, x, gamma, beta, relu=False):
        mean, var, rstd, scale, shift, _, _ = self.statistics(x, gamma, beta)
        return self.apply(x, scale, shift, relu), mean, var, rstd

    def params(self, var, mean, gamma, beta):
        rstd, scale, shift = (self.vec() for _ in range(3))
        args = (var, mean) + self._flags(gamma, beta, mean) + (rstd, scale, shift)
        self.elementwise("bn_params", args, self.c)
        return rstd, scale, shift

    def apply(self, x, scale, shift, relu=False):
        y = poison(x.shape, self.dtype)
        args = (x, scale, scale if shift is None else shift, y, i64(self.outer), i32(self.c), i32(self.inner),
                i32(shift is not None), i32(relu))
        self.elementwise("bn_apply", args, x.size)
        return y

    def backward_training(self, x, dy, mean, rstd, gamma, relu_y=None):
        c, div = self.c, max(self.outer * self.inner, 1)
        part1, part2 = self.partial(1, x, dy, mean, relu_y)
        dgamma, dbeta, g, c1, c0 = (self.vec() for _ in range(5))
        args = (part1, part2, i32(self.nchunks), i32(c), i64(div), rstd, rstd if gamma is None else gamma,
                i32(gamma is not None), i32(1), dgamma, dbeta, g, c1, c0)
        self.elementwise("bn_fin_bwd", args, c)
        dx = poison(x.shape, self.dtype)
        args = (dy, x, mean, g, c1, c0, x if relu_y is None else relu_y, dx, i64(self.outer), i32(c), i32(self.inner),
                i32(relu_y is not None))
        self.elementwise("bn_bwd_apply", args, x.size)
        return dx, dgamma, dbeta

    def backward_inference(self, dy, x, gamma, mean, var):
        c = self.c
        rstd, scale, _ = self.params(var, mean, gamma, None)
        dx = self.apply(dy, scale, None)
        part1, part2 = self.partial(1, x, dy, mean)
        dgamma, dbeta = self.vec(), self.vec()
        unused = poison(c, self.dtype)  # g, c1, c0: not written when training == 0
        args = (part1, part2, i32(self.nchunks), i32(c), i64(max(self.outer * self.inner, 1)), rstd,
                rstd if gamma is None else gamma, i32(gamma is not None), i32(0), dgamma, dbeta, unused, unused, unused)
        self.elementwise("bn_fin_bwd", args, c)
        assert np.isnan(unused).all()
        return dx, dgamma, dbeta


def _data(shape, axis, dtype, seed):
    rng = np.random.default_rng(seed)
    c = shape[axis]
    x = (rng.standard_normal(shape) * 3 + 1.5).astype(dtype)
    gamma = rng.uniform(0.5, 2, c).astype(dtype)
    beta = rng.standard_normal(c).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    return x, gamma, beta, dy


@pytest.mark.parametrize("affine", ["gamma+beta", "none"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_batch_norm_training_forward_and_backward(emu, layout, dtype, affine):
    shape, axis, use_last = LAYOUTS[layout]
    x, gamma, beta, dy = _data(shape, axis, dtype, 0)
    if affine == "none":
        gamma = beta = None
    want_y, want_mean, want_var, cache = REF.batch_norm_forward_training(x, gamma, beta, axis, EPS)
    want_dx, want_dg, want_db = REF.batch_norm_backward_training(dy, cache)
    bn = BN(emu, x, axis, use_last)
    y, mean, var, rstd = bn.forward_training(x, gamma, beta)
    t = _tol(dtype)
    np.testing.assert_allclose(mean, want_mean, err_msg="mean", **t)
    np.testing.assert_allclose(var, want_var, err_msg="var", **t)
    np.testing.assert_allclose(y, want_y, err_msg="y", **t)
    dx, dgamma, dbeta = bn.backward_training(x, dy, mean, rstd, gamma)
    np.testing.assert_allclose(dx, want_dx, err_msg="dx", **t)
    np.testing.assert_allclose(dbeta, np.sum(dy, axis=tuple(i for i in range(x.ndim) if i != axis % x.ndim)),
                               err_msg="dbeta", **t)
    if gamma is not None:
        np.testing.assert_allclose(dgamma, want_dg, err_msg="dgamma", **t)
        np.testing.assert_allclose(dbeta, want_db, err_msg="dbeta", **t)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_batch_norm_training_step_with_a_relu_after_it(emu, layout, dtype):
    """The moving statistics from the merge launch, the ReLU in bn_apply, and its output masking the backward:
    NumpyOps' separate moving update, relu and relu_backward."""
    shape, axis, use_last = LAYOUTS[layout]
    x, gamma, beta, dy = _data(shape, axis, dtype, 9)
    dy.reshape(-1)[:3] = np.nan  # NaN gradients stay NaN through the mask, as dy * (y > 0) keeps them
    c = shape[axis]
    moving = (np.linspace(-1, 1, c).astype(dtype), np.linspace(0.5, 2, c).astype(dtype), 0.99)
    want_y, want_mm, want_mv, cache = REF.batch_norm_training_step(x, gamma, beta, *moving[:2], axis, EPS, moving[2],
                                                                   relu=True)
    with np.errstate(invalid="ignore"):
        want_dx, want_dg, want_db = REF.batch_norm_training_step_backward(dy, cache)
    bn = BN(emu, x, axis, use_last)
    mean, _, rstd, scale, shift, new_mm, new_mv = bn.statistics(x, gamma, beta, moving=moving)
    y = bn.apply(x, scale, shift, relu=True)
    t = _tol(dtype)
    np.testing.assert_allclose(y, want_y, err_msg="y", **t)
    np.testing.assert_allclose(new_mm, want_mm, err_msg="moving mean", **t)
    np.testing.assert_allclose(new_mv, want_mv, err_msg="moving var", **t)
    assert (y >= 0).all() and not np.signbit(y).any()
    dx, dgamma, dbeta = bn.backward_training(x, dy, mean, rstd, gamma, relu_y=y)
    for got, want, what in ((dx, want_dx, "dx"), (dgamma, want_dg, "dgamma"), (dbeta, want_db, "dbeta")):
        np.testing.assert_allclose(got, want, err_msg=what, **t)


@pytest.mark.parametrize("affine", ["gamma+beta", "gamma", "beta", "none"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["nhwc-c37", "nchw", "dense-c7"])
def test_batch_norm_inference_forward_and_backward(emu, layout, dtype, affine):
    shape, axis, use_last = LAYOUTS[layout]
    x, gamma, beta, dy = _data(shape, axis, dtype, 1)
    rng = np.random.default_rng(2)
    mean = rng.standard_normal(shape[axis]).astype(dtype)
    var = rng.uniform(0.1, 3, shape[axis]).astype(dtype)
    gamma = gamma if "gamma" in affine else None
    beta = beta if "beta" in affine else None
    want_y = REF.batch_norm_forward_inference(x, gamma, beta, mean, var, axis, EPS)
    want_dx, want_dg, want_db = REF.batch_norm_backward_inference(dy, x, gamma, mean, var, axis, EPS, True)
    bn = BN(emu, x, axis, use_last)
    _, scale, shift = bn.params(var, mean, gamma, beta)
    y = bn.apply(x, scale, shift)
    t = _tol(dtype)
    np.testing.assert_allclose(y, want_y, err_msg="y", **t)
    dx, dgamma, dbeta = bn.backward_inference(dy, x, gamma, mean, var)
    np.testing.assert_allclose(dx, want_dx, err_msg="dx", **t)
    np.testing.assert_allclose(dbeta, want_db, err_msg="dbeta", **t)
    if gamma is not None:
        np.testing.assert_allclose(dgamma, want_dg, err_msg="dgamma", **t)


# Block sizes: CupyOps' 256, one warp, a partial second row of lanes (48),
# a single thread, the maximum; grids: one block per unit, 1, 3.
REDUCTION_LAUNCHES = [(256, None), (32, 1), (48, 3), (1, 2), (1024, 1), (96, None)]


def _merged(part_mean, part_m2, total, nchunks):
    """The whole channel's (mean, M2) from per-chunk ones, in float64 (chunk k holds min(per, total - k*per))."""
    per = -(-total // nchunks)
    n = np.clip(total - np.arange(nchunks) * per, 0, per).astype(np.float64)[:, None]
    m, q = part_mean.astype(np.float64), part_m2.astype(np.float64)
    mean = (n * m).sum(0) / total
    return mean, (q + n * (m - mean) ** 2).sum(0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["nhwc-c37", "nhwc-c5", "nchw", "axis0"])
def test_batch_norm_partial_reductions_every_order_and_launch(emu, layout, dtype):
    """The __syncthreads trees: same bits in forward/reverse/shuffled orders, for odd blocks, grids and chunkings."""
    shape, axis, use_last = LAYOUTS[layout]
    x, gamma, beta, dy = _data(shape, axis, dtype, 3)
    axes = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    mean = x64.mean(axis=axes).astype(dtype)
    bshape = [1] * x.ndim
    bshape[axis] = -1
    centered = x64 - mean.astype(np.float64).reshape(bshape)
    true_mean = x64.mean(axis=axes)
    want = {0: (true_mean, ((x64 - true_mean.reshape(bshape)) ** 2).sum(axes)),
            1: (dy64.sum(axes), (dy64 * centered).sum(axes))}
    rows = x.size // shape[axis]
    for block, grid_cap in REDUCTION_LAUNCHES:
        # rows + 2: more chunks than rows, some empty (small blocks only, to keep the run short)
        for nchunks in (1, 3, rows + 2) if block <= 48 else (1, 3):
            for mode in (0, 1):
                runs = []
                for order in ORDERS_BARRIER:
                    bn = BN(emu, x, axis, use_last, block=block, grid_cap=grid_cap, nchunks=nchunks, order=order)
                    p1, p2 = bn.partial(mode, x, dy, mean)
                    runs.append((p1, p2))
                    what = f"mode {mode} block {block} grid_cap {grid_cap} nchunks {nchunks} {order}"
                    got = _merged(p1, p2, rows, nchunks) if mode == 0 else (p1.astype(np.float64).sum(0),
                                                                            p2.astype(np.float64).sum(0))
                    for g, w in zip(got, want[mode]):
                        np.testing.assert_allclose(g, w, err_msg=what, **_tol(dtype))
                for p1, p2 in runs[1:]:
                    assert_same_bits(p1, runs[0][0], f"order independence {what}")
                    assert_same_bits(p2, runs[0][1], f"order independence {what}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_statistics_merge_for_any_launch_and_chunking(emu, dtype):
    """bn_params_welford's tree over chunks: any block size, empty chunks, a grid smaller than the channels."""
    shape, axis, use_last = LAYOUTS["nhwc-c37"]
    x, gamma, beta, _ = _data(shape, axis, dtype, 6)
    want_y, want_mean, want_var, _ = REF.batch_norm_forward_training(x, gamma, beta, axis, EPS)
    rows = x.size // shape[axis]
    results = []
    for nchunks in (1, 4, rows + 3):
        for fin_block, fin_grid in ((256, None), (1, 5), (7, 2), (1024, 1)):
            for order in ORDERS_BARRIER:
                bn = BN(emu, x, axis, use_last, nchunks=nchunks, order=order)
                mean, var, rstd, scale, shift, _, _ = bn.statistics(x, gamma, beta, fin_block, fin_grid)
                what = f"nchunks {nchunks} block {fin_block} grid {fin_grid} {order}"
                np.testing.assert_allclose(mean, want_mean, err_msg=what, **_tol(dtype))
                np.testing.assert_allclose(var, want_var, err_msg=what, **_tol(dtype))
                np.testing.assert_allclose(bn.apply(x, scale, shift), want_y, err_msg=what, **_tol(dtype))
                results.append((fin_block, nchunks, mean, var))
    for block, nchunks, mean, var in results:  # the same launch shape gives the same bits in every order
        same = [(m, v) for b, k, m, v in results if (b, k) == (block, nchunks)]
        assert_same_bits(mean, same[0][0], "order independence")
        assert_same_bits(var, same[0][1], "order independence")


def test_batch_norm_statistics_far_from_zero_are_as_exact_as_two_passes(emu):
    """float32 values around 1e4 with unit spread: one pass loses no more than the two-pass form."""
    rng = np.random.default_rng(8)
    x = (1e4 + rng.standard_normal((4096, 3))).astype(np.float32)
    mean, var, *_ = BN(emu, x, -1, True).statistics(x, None, None)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(mean, x64.mean(0), rtol=1e-7)
    two_pass = REF.batch_norm_forward_training(x, None, None, 1, EPS)[2]
    exact = x64.var(0)
    assert np.all(np.abs(var - exact) <= 2 * np.abs(two_pass - exact) + 1e-6 * exact), (var, two_pass, exact)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_apply_grid_stride_small_grids(emu, dtype):
    """bn_apply / bn_bwd_apply walk the channel incrementally across grid-stride steps."""
    shape, axis = (3, 7, 5, 4), 1  # outer 3, c 7, inner 20
    x, gamma, beta, dy = _data(shape, axis, dtype, 4)
    bn = BN(emu, x, axis, False)
    c = shape[axis]
    scale, shift = gamma, beta
    want = x * scale.reshape(1, c, 1, 1) + shift.reshape(1, c, 1, 1)
    mean, g, c1, c0 = (np.random.default_rng(5).standard_normal(c).astype(dtype) for _ in range(4))
    want_bwd = (dy * g.reshape(1, c, 1, 1) + (x - mean.reshape(1, c, 1, 1)) * c1.reshape(1, c, 1, 1)
                + c0.reshape(1, c, 1, 1))
    for grid, block in ((1, 1), (1, 32), (3, 7), (2, 13), (64, 256)):
        y = poison(shape, dtype)
        bn.k("bn_apply")(grid, block, (x, scale, shift, y, i64(3), i32(c), i32(20), i32(1), i32(0)), order="reverse")
        np.testing.assert_allclose(y, want, err_msg=f"apply {grid}x{block}", **_tol(dtype))
        y = poison(shape, dtype)
        bn.k("bn_apply")(grid, block, (x, scale, scale, y, i64(3), i32(c), i32(20), i32(0), i32(0)))
        np.testing.assert_allclose(y, x * scale.reshape(1, c, 1, 1), err_msg=f"scale only {grid}x{block}",
                                   **_tol(dtype))
        dx = poison(shape, dtype)
        bn.k("bn_bwd_apply")(grid, block, (dy, x, mean, g, c1, c0, x, dx, i64(3), i32(c), i32(20), i32(0)))
        np.testing.assert_allclose(dx, want_bwd, err_msg=f"bwd apply {grid}x{block}", **_tol(dtype))
