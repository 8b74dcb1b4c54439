"""backends/kernels/elementwise.cu on the host emulator: the bits of backends.numpy_ops.NumpyOps."""

import numpy as np
import pytest

from backends.numpy_ops import NumpyOps
from emu_helpers import LAUNCHES, assert_same_bits, expr, i32, i64, poison

pytestmark = pytest.mark.kernels

REF = NumpyOps()
SIZES = (1, 255, 1000)


def _launch(emu, kernel, dtype, n, args, launch):
    grid_of, block = LAUNCHES[launch]
    emu["elementwise"].kernel(expr(kernel, dtype))(grid_of(n), block, args + (i64(n),))


def _data(n, dtype, seed=0):
    x = np.random.default_rng(seed).standard_normal(n).astype(dtype)
    x[: min(n, 4)] = [0.0, -0.0, np.inf, np.nan][: min(n, 4)]
    return x


@pytest.mark.parametrize("launch", sorted(LAUNCHES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", SIZES)
def test_relu_bwd(emu, n, dtype, launch):
    x, dy = _data(n, dtype), _data(n, dtype, seed=1)[::-1].copy()  # NaN / inf in dy meet x <= 0 too
    dx = poison(n, dtype)
    _launch(emu, "relu_bwd", dtype, n, (x, dy, dx), launch)
    assert_same_bits(dx, REF.relu_backward(x, dy), "relu_bwd")


@pytest.mark.parametrize("launch", sorted(LAUNCHES))
@pytest.mark.parametrize("keep", [0.5, 0.9, 1e-30])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", SIZES)
def test_dropout_fwd_and_bwd(emu, n, dtype, keep, launch):
    x = _data(n, dtype)
    u = np.random.default_rng(2).random(n).astype(dtype)
    u[-1] = dtype(keep)  # on the boundary: dropped (u < keep keeps)
    want_y, want_kept = REF.dropout(x, u, keep)
    y, kept = poison(n, dtype), np.ones(n, np.bool_)
    _launch(emu, "dropout_fwd", dtype, n, (x, u, dtype(keep), y, kept), launch)
    assert_same_bits(y, want_y, "dropout_fwd y")
    assert_same_bits(kept, want_kept, "dropout_fwd kept")
    dy = _data(n, dtype, seed=3)
    dx = poison(n, dtype)
    _launch(emu, "dropout_bwd", dtype, n, (dy, kept, dtype(keep), dx), launch)
    assert_same_bits(dx, REF.dropout_backward(dy, want_kept, keep), "dropout_bwd")


@pytest.mark.parametrize("launch", sorted(LAUNCHES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", [((37, 5), 1), ((2, 3, 4, 5), 1), ((6,), 0)])
def test_bias_relu(emu, shape, axis, dtype, launch):
    z = _data(int(np.prod(shape)), dtype).reshape(shape)
    z.reshape(-1)[-1] = -0.0  # numpy's maximum makes it +0.0
    bias = np.random.default_rng(4).standard_normal(shape[axis]).astype(dtype)
    n, c, inner = z.size, shape[axis], int(np.prod(shape[axis + 1:]))
    grid_of, block = LAUNCHES[launch]
    k = emu["elementwise"].kernel(expr("bias_relu", dtype))
    for b in (bias, None):
        y = poison(shape, dtype)
        k(grid_of(n), block, (z, z if b is None else b, y, i64(n), i32(c), i32(inner), i32(b is not None)))
        assert_same_bits(y, REF.bias_add_relu(z.copy(), b, axis), f"bias_relu bias={b is not None}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_accumulate(emu, dtype):
    total = np.array(1.0 / 3.0)
    value = np.array(0.1, dtype)
    for count in (7.0, 0.0):  # the mean is 0 where the count is
        out, mean = poison((), np.float64), poison((), np.float64)
        emu["elementwise"].kernel(expr("accumulate", dtype))(1, 32, (total, value, np.float64(32.0),
                                                                      np.float64(count), out, mean))
        ref_total, ref_mean = REF.accumulate(total, value, 32.0, count)
        assert_same_bits(out, np.asarray(ref_total), "accumulate total")
        assert_same_bits(mean, np.asarray(ref_mean), f"accumulate mean, count {count}")
