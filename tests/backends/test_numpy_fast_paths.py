"""NumpyOps's CPU fast paths against the generic Ops code on NumPy.

The fast paths (2x2 pooling, batch normalization over the last axis, ReLU,
bias add, the convolution buffers and per-tap backward) split their work
across helper threads. Here the splitting is forced on (any size, three
parts) so that the split code runs on small arrays, and every result is
compared with the generic code: bit for bit where the fast path computes the
same formula in the same order (pooling, batch norm, ReLU, bias add), to a
tight tolerance for convolutions (BLAS may block its sums differently).
"""

import numpy as np
import pytest

from backends import numpy_ops
from backends.numpy_ops import NumpyOps
from backends.ops import Ops

FORMATS = ("channels_last", "channels_first")


class GenericNumpy(Ops):
    """The generic code on NumPy, without NumpyOps's overrides."""

    name = "generic"
    xp = np


GENERIC = GenericNumpy()


class GenericWithBlasSums:
    """The generic methods on a NumpyOps (so with its BLAS per-channel sums, as the fast paths)."""

    def __init__(self):
        self._ops = NumpyOps()

    def __getattr__(self, name):
        method = getattr(Ops, name)
        return lambda *args: method(self._ops, *args)


GENERIC_BLAS_SUMS = GenericWithBlasSums()


@pytest.fixture(params=[1, 3], ids=["one-thread", "three-parts"])
def ops(request, monkeypatch):
    monkeypatch.setattr(numpy_ops, "_PARALLEL_MIN", 0)
    monkeypatch.setenv("GPULAYERS_CPU_THREADS", str(request.param))
    return NumpyOps()


def _fmt(x, data_format):
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if data_format == "channels_first" else x


def _data(shape, dtype, ties, seed=0):
    rng = np.random.default_rng(seed)
    if ties:
        return rng.integers(-2, 3, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _same(a, b):
    """Equal bit for bit up to the sign of zero (and NaN where NaN)."""
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("shape", [(4, 8, 6, 3), (3, 7, 5, 2), (5, 2, 2, 1), (0, 4, 4, 2)])
def test_2x2_pooling_matches_generic(ops, shape, ties, dtype, data_format):
    x = _fmt(_data(shape, dtype, ties), data_format)
    args = ((2, 2), (2, 2), (0, 0, 0, 0), data_format)
    y, arg = ops.max_pool2d_forward(x, *args)
    y0, arg0 = GENERIC.max_pool2d_forward(x, *args)
    _same(y, y0)
    _same(arg, arg0)
    dy = _data(y.shape, dtype, False, seed=1)
    _same(ops.max_pool2d_backward(dy, arg, x.shape, *args), GENERIC.max_pool2d_backward(dy, arg0, x.shape, *args))
    _same(ops.avg_pool2d_forward(x, *args), GENERIC.avg_pool2d_forward(x, *args))
    _same(ops.avg_pool2d_backward(dy, x.shape, *args), GENERIC.avg_pool2d_backward(dy, x.shape, *args))


def test_max_pool_nan_and_infinities_match_generic(ops):
    x = _data((2, 4, 4, 3), np.float32, True)
    x[0, 0, 0, 0] = np.nan
    x[0, 1, 1, 1] = np.inf
    x[1, 2, 3, 2] = -np.inf
    x[1, 0:2, 0:2, 0] = -np.inf
    args = ((2, 2), (2, 2), (0, 0, 0, 0), "channels_last")
    y, arg = ops.max_pool2d_forward(x, *args)
    y0, arg0 = GENERIC.max_pool2d_forward(x, *args)
    _same(y, y0)
    _same(arg, arg0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(4, 5, 6, 3), (7, 16), (2, 3, 4, 300), (1, 1, 1, 5), (64, 9, 9, 8)])
def test_batch_norm_matches_generic(ops, shape, affine, dtype):
    """The generic formulas in the generic order, split across threads: the same bits."""
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(shape) * 3 + 5).astype(dtype)
    c = shape[-1]
    gamma = (rng.random(c) + 0.5).astype(dtype) if affine else None
    beta = rng.standard_normal(c).astype(dtype) if affine else None
    axis = len(shape) - 1
    ref = GENERIC_BLAS_SUMS
    got = ops.batch_norm_forward_training(x, gamma, beta, axis, 1e-3)
    want = ref.batch_norm_forward_training(x, gamma, beta, axis, 1e-3)
    for a, b in zip(got[:3], want[:3]):
        _same(a, b)
    dy = rng.standard_normal(shape).astype(dtype)
    for a, b in zip(ops.batch_norm_backward_training(dy, got[3]), ref.batch_norm_backward_training(dy, want[3])):
        if b is None:
            assert a is None
        else:
            _same(a, b)
    mean, var = want[1], want[2] + 1
    _same(
        ops.batch_norm_forward_inference(x, gamma, beta, mean, var, axis, 1e-3),
        ref.batch_norm_forward_inference(x, gamma, beta, mean, var, axis, 1e-3),
    )


def test_batch_norm_other_axes_and_float16_use_the_generic_code(ops):
    rng = np.random.default_rng(3)
    for x, axis in ((rng.standard_normal((3, 4, 5, 6)).astype(np.float32), 1), (rng.standard_normal((6, 4)).astype(np.float16), 1)):
        got = ops.batch_norm_forward_training(x, None, None, axis, 1e-3)
        want = GENERIC.batch_norm_forward_training(x, None, None, axis, 1e-3)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-6, atol=1e-6)
        dy = rng.standard_normal(x.shape).astype(x.dtype)
        np.testing.assert_allclose(
            ops.batch_norm_backward_training(dy, got[3])[0], GENERIC.batch_norm_backward_training(dy, want[3])[0], rtol=1e-5, atol=1e-5
        )


CONV_CASES = [
    # x NHWC, kernel, strides, pads, dilation
    ((3, 8, 8, 3), (3, 3, 3, 4), (1, 1), (1, 1, 1, 1), (1, 1)),  # 'same' 3x3: centre tap written first
    ((2, 9, 7, 2), (3, 3, 2, 3), (2, 2), (0, 1, 1, 1), (1, 1)),  # 'same' stride 2
    ((2, 6, 6, 4), (1, 1, 4, 5), (1, 1), (0, 0, 0, 0), (1, 1)),  # 1x1
    ((2, 7, 7, 4), (1, 1, 4, 5), (2, 2), (0, 0, 0, 0), (1, 1)),  # strided 1x1
    ((2, 7, 8, 2), (3, 2, 2, 3), (1, 1), (0, 0, 0, 0), (2, 1)),  # valid, dilated: no full tap
    ((0, 5, 5, 2), (3, 3, 2, 2), (1, 1), (1, 1, 1, 1), (1, 1)),  # empty batch
]


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CONV_CASES)
def test_convolution_matches_generic(ops, case, dtype, data_format):
    xs, ks, strides, pads, dil = case
    rng = np.random.default_rng(4)
    x = _fmt(rng.standard_normal(xs).astype(dtype), data_format)
    k = rng.standard_normal(ks).astype(dtype)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)
    for _ in range(2):  # the second time through the kept buffers
        y = ops.conv2d_forward(x, k, strides, pads, dil, data_format)
        y0 = GENERIC.conv2d_forward(x, k, strides, pads, dil, data_format)
        assert y.shape == y0.shape and y.dtype == y0.dtype and y.flags.c_contiguous
        np.testing.assert_allclose(y, y0, **tol)
        dy = rng.standard_normal(y.shape).astype(dtype)
        dx = ops.conv2d_backward_input(dy, k, x.shape, strides, pads, dil, data_format)
        assert dx.shape == x.shape and dx.dtype == x.dtype
        np.testing.assert_allclose(dx, GENERIC.conv2d_backward_input(dy, k, x.shape, strides, pads, dil, data_format), **tol)
        dk = ops.conv2d_backward_kernel(x, dy, k.shape, strides, pads, dil, data_format)
        np.testing.assert_allclose(dk, GENERIC.conv2d_backward_kernel(x, dy, k.shape, strides, pads, dil, data_format), **tol)


@pytest.mark.parametrize("data_format", FORMATS)
def test_chunked_convolution_odd_batches_and_chunks(ops, monkeypatch, data_format):
    # Chunks of 3 images, a batch that does not split evenly over the threads.
    monkeypatch.setattr(numpy_ops, "_CONV_CHUNK", 3 * 64 * 27)
    rng = np.random.default_rng(9)
    x = _fmt(rng.standard_normal((13, 8, 8, 3)), data_format)
    k = rng.standard_normal((3, 3, 3, 4))
    args = ((1, 1), (1, 1, 1, 1), (1, 1), data_format)
    y = ops.conv2d_forward(x, k, *args)
    np.testing.assert_allclose(y, GENERIC.conv2d_forward(x, k, *args), rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    np.testing.assert_allclose(
        ops.conv2d_backward_kernel(x, dy, k.shape, *args), GENERIC.conv2d_backward_kernel(x, dy, k.shape, *args), rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(
        ops.conv2d_backward_input(dy, k, x.shape, *args), GENERIC.conv2d_backward_input(dy, k, x.shape, *args), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("shape", [(5, 7), (1, 7), (4, 3, 7), (0, 7)])
def test_matmul_matches_numpy(ops, shape):
    rng = np.random.default_rng(10)
    a = rng.standard_normal(shape).astype(np.float32)
    b = rng.standard_normal((7, 6)).astype(np.float32)
    got = ops.matmul(a, b)
    assert got.shape == shape[:-1] + (6,) and got.dtype == np.float32
    np.testing.assert_allclose(got, a @ b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ops.matmul(a.reshape(-1, 7).T.T, b), (a @ b).reshape(-1, 6), rtol=1e-5, atol=1e-5)


def test_float16_products_are_float32_products_rounded_once(ops):
    # NumPy's own float16 matmul and cuBLAS's float32 compute type both accumulate in float32 and round
    # once; NumpyOps takes BLAS's float32 GEMM for the speed, and must keep those numbers
    rng = np.random.default_rng(11)
    a = rng.standard_normal((9, 400)).astype(np.float16)
    b = rng.standard_normal((400, 5)).astype(np.float16)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    got = ops.matmul(a, b)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, exact.astype(np.float32).astype(np.float16))
    np.testing.assert_array_equal(got, a @ b)
    x = rng.standard_normal((2, 6, 6, 3)).astype(np.float16)
    k = rng.standard_normal((3, 3, 3, 4)).astype(np.float16)
    y = ops.conv2d_forward(x, k, (1, 1), (1, 1, 1, 1), (1, 1), "channels_last")
    ref = GENERIC.conv2d_forward(x.astype(np.float64), k.astype(np.float64), (1, 1), (1, 1, 1, 1), (1, 1),
                                 "channels_last")
    assert y.dtype == np.float16
    np.testing.assert_allclose(y.astype(np.float64), ref, rtol=1e-3, atol=2e-3)  # one float16 rounding


def test_blas_threads_are_restored(ops):
    blas = numpy_ops._BLAS
    if not blas.available():
        pytest.skip("NumPy's BLAS is not an OpenBLAS whose threads can be set here")
    get = blas._fns[0]
    before = get()
    x = np.random.default_rng(11).standard_normal((4, 6, 6, 3)).astype(np.float32)
    ops.conv2d_forward(x, np.ones((3, 3, 3, 2), np.float32), (1, 1), (1, 1, 1, 1), (1, 1), "channels_last")
    assert get() == before


def test_padded_buffer_keeps_a_zero_border(ops):
    rng = np.random.default_rng(5)
    k = rng.standard_normal((3, 3, 2, 2)).astype(np.float32)
    for scale in (1.0, 1e3, -7.0):  # other data each time through the same kept buffer
        x = (rng.standard_normal((2, 5, 5, 2)) * scale).astype(np.float32)
        y = ops.conv2d_forward(x, k, (1, 1), (1, 1, 1, 1), (1, 1), "channels_last")
        np.testing.assert_allclose(y, GENERIC.conv2d_forward(x, k, (1, 1), (1, 1, 1, 1), (1, 1), "channels_last"), rtol=1e-5, atol=1e-4 * abs(scale))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_relu_and_bias_add_match_generic(ops, dtype):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 4, 5, 6)).astype(dtype)
    x[0, 0, 0, :3] = [0.0, -0.0, np.nan]
    dy = rng.standard_normal(x.shape).astype(dtype)
    _same(ops.relu(x), GENERIC.relu(x))
    _same(ops.relu_backward(x, dy), GENERIC.relu_backward(x, dy))
    b = rng.standard_normal(6).astype(dtype)
    _same(ops.bias_add(x.copy(), b, 3), GENERIC.bias_add(x.copy(), b, 3))
    _same(ops.bias_add(x.copy(), b[:5], 2), GENERIC.bias_add(x.copy(), b[:5], 2))
    assert ops.relu(x[:, ::2]).shape == x[:, ::2].shape  # non-contiguous: the generic path


def test_channel_sum_matches_numpy(ops):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 3, 5, 6))
    for axis in range(4):
        others = tuple(i for i in range(4) if i != axis)
        np.testing.assert_allclose(ops.channel_sum(x, axis), x.sum(axis=others), rtol=1e-12)


def test_errors_in_helper_threads_reach_the_caller(monkeypatch):
    monkeypatch.setattr(numpy_ops, "_PARALLEL_MIN", 0)
    workers = numpy_ops._Workers(3)
    seen = []

    def job(lo, hi):
        seen.append((lo, hi))
        if lo > 0:
            raise ValueError(f"part {lo}")

    with pytest.raises(ValueError, match="part"):
        workers.split(9, 9, job)
    assert sorted(seen) == [(0, 3), (3, 6), (6, 9)]
    seen.clear()
    workers.split(9, 9, lambda lo, hi: seen.append((lo, hi)))  # still usable afterwards
    assert sorted(seen) == [(0, 3), (3, 6), (6, 9)]


def test_cpu_threads_setting(monkeypatch):
    monkeypatch.setenv("GPULAYERS_CPU_THREADS", "5")
    assert numpy_ops.cpu_threads() == 5
    monkeypatch.setenv("GPULAYERS_CPU_THREADS", "many")
    with pytest.raises(ValueError, match="GPULAYERS_CPU_THREADS"):
        numpy_ops.cpu_threads()
    monkeypatch.delenv("GPULAYERS_CPU_THREADS")
    assert 1 <= numpy_ops.cpu_threads() <= 8
