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


_M32 = 0xFFFFFFFF


def _philox(c, k):
    """Philox4x32-10 in Python integers, from the paper's round function (an independent reference)."""
    c, (k0, k1) = list(c), k
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [((p1 >> 32) ^ c[1] ^ k0) & _M32, p1 & _M32, ((p0 >> 32) ^ c[3] ^ k1) & _M32, p0 & _M32]
        k0, k1 = (k0 + 0x9E3779B9) & _M32, (k1 + 0xBB67AE85) & _M32
    return c


def test_the_python_philox_gives_the_papers_known_answers():
    # Random123's known-answer vectors for philox4x32-10: zeros, all ones, and the digits of pi.
    assert _philox([0] * 4, [0, 0]) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    assert _philox([_M32] * 4, [_M32, _M32]) == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    pi = [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344]
    assert _philox(pi, [0xA4093822, 0x299F31D0]) == [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]


def _uniforms(key, call, n, dtype):
    out = np.empty(n, dtype)
    for i in range(n):
        r = _philox([i & _M32, i >> 32, call & _M32, call >> 32], [key & _M32, key >> 32])
        out[i] = (r[0] >> 8) * 2.0**-24 if dtype == np.float32 else (((r[0] << 32) | r[1]) >> 11) * 2.0**-53
    return out


KEY = 0x0123456789ABCDEF


@pytest.mark.parametrize("launch", sorted(LAUNCHES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", SIZES)
def test_philox_fill_draws_the_reference_numbers_and_advances_its_stream(emu, n, dtype, launch):
    state = np.array([5, 0], np.uint64)  # the stream's sixth launch
    for call in (5, 6):
        u = poison(n, dtype)
        grid_of, block = LAUNCHES[launch]
        emu["elementwise"].kernel(expr("philox_fill", dtype))(grid_of(n), block, (u, i64(n), np.uint64(KEY), state))
        assert_same_bits(u, _uniforms(KEY, call, n, dtype), f"philox_fill, call {call}")
        assert state.tolist() == [call + 1, 0]  # the counter advanced once, the block tally reset
    assert ((u >= 0) & (u < 1)).all()


@pytest.mark.parametrize("launch", sorted(LAUNCHES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_philox_is_dropout_of_the_streams_uniforms(emu, dtype, launch):
    n, keep = 1000, 0.75
    x = _data(n, dtype)
    state = np.zeros(2, np.uint64)
    grid_of, block = LAUNCHES[launch]
    masks = []
    for call in (0, 1):
        y, kept = poison(n, dtype), np.zeros(n, np.bool_)
        emu["elementwise"].kernel(expr("dropout_philox", dtype))(
            grid_of(n), block, (x, dtype(keep), y, kept, i64(n), np.uint64(KEY), state))
        want_y, want_kept = REF.dropout(x, _uniforms(KEY, call, n, dtype), keep)
        assert_same_bits(y, want_y, f"dropout_philox y, call {call}")
        assert_same_bits(kept, want_kept, f"dropout_philox kept, call {call}")
        assert state.tolist() == [call + 1, 0]
        masks.append(kept)
    assert (masks[0] != masks[1]).any()  # a fresh mask each call
    assert abs(masks[0].mean() - keep) < 0.05


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
