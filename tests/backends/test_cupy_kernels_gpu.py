"""CupyOps (CUDA kernels) against NumpyOps on a GPU: the parity matrix.

Skipped, with the reason, wherever ``backends.cupy_status()`` says cupy
cannot run. Covers every Ops method and argument class (strides, padding,
dilation, both data formats, float32/float64/float16, pool sizes,
overlapping windows, ties, batch-norm axes, an empty batch, non-contiguous
inputs), im2col chunking under a tiny workspace limit, whole layers through
``set_backend("cupy")``, a short training run whose loss curve follows the
NumPy run, and, where the host emulator (``tests/kernels/hostemu.py``) exists,
the GPU kernels against the same kernels run on the CPU.
"""

import importlib
import os
import sys

import numpy as np
import pytest

import backends
from backends.numpy_ops import NumpyOps

pytestmark = pytest.mark.gpu

FORMATS = ("channels_last", "channels_first")
DTYPES = (np.float32, np.float64, np.float16)


@pytest.fixture(scope="module")
def cupy_ops():
    usable, reason = backends.cupy_status()
    if not usable:
        pytest.skip(f"the CUDA kernel tests need a usable CUDA device: {reason}")
    from backends.cupy_ops import CupyOps

    return CupyOps()


@pytest.fixture(scope="module")
def numpy_ops():
    return NumpyOps()


# ------------------------------------------------------------------ helpers


def _to_format(x, data_format):
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if data_format == "channels_first" else x


def _data(rng, shape, dtype, ties=False):
    if ties:  # many equal values and many zeros / negatives
        return rng.integers(-2, 3, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _tolerance(dtype):
    if dtype == np.float64:
        return 1e-10, 1e-10
    if dtype == np.float16:
        return 1e-2, 1e-2
    return 2e-4, 2e-5


def compare(name, have, want, dtype, ops):
    """``have`` (a cupy array or None) against ``want`` (numpy or None), in shape, dtype and value."""
    if want is None:
        assert have is None, f"{name}: expected None"
        return
    assert have is not None, f"{name}: got None"
    assert isinstance(have, ops.xp.ndarray), f"{name}: result is a {type(have).__name__}, not a cupy array"
    h = ops.to_numpy(have)
    assert h.shape == want.shape, f"{name}: shape {h.shape} != {want.shape}"
    assert h.dtype == want.dtype, f"{name}: dtype {h.dtype} != {want.dtype}"
    if np.issubdtype(want.dtype, np.integer) or want.dtype == np.bool_:
        np.testing.assert_array_equal(h, want, err_msg=name)
        return
    rtol, atol = _tolerance(dtype)
    scale = max(1.0, float(np.max(np.abs(want.astype(np.float64)), initial=0.0)))
    np.testing.assert_allclose(h.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol * scale, err_msg=name)


def _host(out):
    """Dict of Ops results -> numpy (None stays None)."""
    return {k: (None if v is None else np.asarray(v)) for k, v in out.items()}


def _reference(numpy_ops, fn, host_args, dtype):
    """NumpyOps result. For float16 the reference runs in float32 on the same
    (float16) values and is rounded back, so it is the exact answer within one
    float16 rounding; integer outputs (argmax) come from float16 directly."""
    if dtype != np.float16:
        return _host(fn(numpy_ops, *host_args))
    exact = _host(fn(numpy_ops, *host_args))
    up = [a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype == np.float16 else a for a in host_args]
    wide = _host(fn(numpy_ops, *up))
    out = {}
    for k, v in wide.items():
        if v is None or not np.issubdtype(v.dtype, np.floating):
            out[k] = exact[k]
        else:
            out[k] = v.astype(np.float16)
    return out


def _run_both(cupy_ops, numpy_ops, fn, host_args, dtype, skip=()):
    want = _reference(numpy_ops, fn, host_args, dtype)
    dev_args = [cupy_ops.asarray(a) if isinstance(a, np.ndarray) else a for a in host_args]
    have = fn(cupy_ops, *dev_args)
    assert set(have) == set(want)
    for k in want:
        if k not in skip:
            compare(k, have[k], want[k], dtype, cupy_ops)
    return {k: (None if v is None else cupy_ops.to_numpy(v)) for k, v in have.items()}, want


# ------------------------------------------------------------- convolution

# x NHWC shape, kernel (KH, KW, C, F), strides, pads (top, bottom, left, right), dilation
CONV_CASES = [
    ((2, 8, 8, 3), (3, 3, 3, 4), (1, 1), (1, 1, 1, 1), (1, 1)),  # 'same' 3x3
    ((2, 9, 8, 3), (3, 3, 3, 5), (2, 2), (0, 1, 0, 1), (1, 1)),  # stride 2, extra pad bottom/right
    ((1, 7, 9, 2), (2, 3, 2, 3), (1, 1), (1, 2, 0, 1), (2, 1)),  # asymmetric pads, dilation
    ((2, 11, 10, 3), (3, 3, 3, 2), (1, 1), (2, 2, 2, 2), (2, 2)),  # dilation 2 'same'
    ((2, 7, 7, 5), (1, 1, 5, 6), (1, 1), (0, 0, 0, 0), (1, 1)),  # 1x1 fast path
    ((2, 7, 7, 5), (1, 1, 5, 6), (2, 2), (0, 0, 0, 0), (1, 1)),  # 1x1 strided
    ((2, 6, 7, 4), (2, 2, 4, 3), (2, 3), (0, 0, 0, 0), (1, 1)),  # stride != kernel, ragged edge
    ((1, 5, 5, 1), (5, 5, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),  # kernel = input, 1 output
    ((2, 12, 13, 17), (3, 3, 17, 33), (1, 1), (1, 1, 1, 1), (1, 1)),  # channels not a warp multiple
    ((0, 5, 5, 2), (3, 3, 2, 2), (1, 1), (1, 1, 1, 1), (1, 1)),  # empty batch
]


def _conv_all(ops, x, k, dy, strides, pads, dilation, data_format):
    return {
        "conv2d_forward": ops.conv2d_forward(x, k, strides, pads, dilation, data_format),
        "conv2d_backward_input": ops.conv2d_backward_input(dy, k, tuple(x.shape), strides, pads, dilation, data_format),
        "conv2d_backward_kernel": ops.conv2d_backward_kernel(x, dy, tuple(k.shape), strides, pads, dilation, data_format),
    }


def _conv_inputs(case, dtype, data_format, seed=0):
    xs, ks, strides, pads, dilation = case
    rng = np.random.default_rng(seed)
    x = _to_format(_data(rng, xs, dtype), data_format)
    k = _data(rng, ks, dtype)
    y = NumpyOps().conv2d_forward(x, k, strides, pads, dilation, data_format)
    dy = _data(rng, y.shape, dtype)
    return x, k, dy, strides, pads, dilation, data_format


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x{}k{}s{}p{}d{}".format(*c).replace(" ", ""))
def test_conv_matches_numpy(cupy_ops, numpy_ops, case, data_format, dtype):
    _run_both(cupy_ops, numpy_ops, _conv_all, _conv_inputs(case, dtype, data_format), dtype)


def test_conv_noncontiguous_and_mixed_dtype_inputs(cupy_ops, numpy_ops):
    """Inputs CupyOps must copy or handle by strides: sliced views, Fortran order, a float64 kernel on float32 data."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal((4, 20, 18, 6)).astype(np.float32)
    k = rng.standard_normal((3, 3, 3, 8)).astype(np.float32)
    for data_format in FORMATS:
        x_host = _to_format(base, data_format)
        view = x_host[:, ::2] if data_format == "channels_first" else x_host[..., ::2]  # C = 3, non-contiguous
        want = numpy_ops.conv2d_forward(np.ascontiguousarray(view), k, (1, 1), (1, 1, 1, 1), (1, 1), data_format)
        xd = cupy_ops.asarray(x_host)
        xv = xd[:, ::2] if data_format == "channels_first" else xd[..., ::2]
        assert not xv.flags.c_contiguous
        compare("conv noncontiguous x", cupy_ops.conv2d_forward(xv, cupy_ops.asarray(k), (1, 1), (1, 1, 1, 1), (1, 1), data_format), want, np.float32, cupy_ops)
        xf = cupy_ops.xp.asfortranarray(cupy_ops.asarray(np.ascontiguousarray(view)))
        compare("conv Fortran-order x", cupy_ops.conv2d_forward(xf, cupy_ops.asarray(k), (1, 1), (1, 1, 1, 1), (1, 1), data_format), want, np.float32, cupy_ops)
    # A float64 kernel with float32 data: the result keeps x's dtype, as NumpyOps.
    x = base[..., :3]
    want = numpy_ops.conv2d_forward(x, k.astype(np.float64), (1, 1), (0, 0, 0, 0), (1, 1), "channels_last")
    have = cupy_ops.conv2d_forward(cupy_ops.asarray(x), cupy_ops.asarray(k.astype(np.float64)), (1, 1), (0, 0, 0, 0), (1, 1), "channels_last")
    compare("conv float64 kernel on float32 x", have, want, np.float32, cupy_ops)


# ------------------------------------------------------------ im2col chunks


def _chunked_ops(limit_bytes):
    from backends.cupy_ops import CupyOps

    return CupyOps(im2col_limit_bytes=limit_bytes)


def _per_image_bytes(case, dtype):
    """im2col bytes of one image for a CONV_CASES entry (rows * K * itemsize)."""
    from backends.window_plans import out_size

    (n, h, w, c), (kh, kw, _, _), (sh, sw), (t, b, l, r), (dh, dw) = case
    rows = out_size(h, kh, sh, dh, t + b) * out_size(w, kw, sw, dw, l + r)
    return rows * kh * kw * c * np.dtype(dtype).itemsize


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("case", [CONV_CASES[0], CONV_CASES[1], CONV_CASES[3], CONV_CASES[8]], ids=["same3x3", "s2", "dil2", "wide"])
def test_im2col_chunking_matches_unchunked(cupy_ops, numpy_ops, case, data_format):
    """A tiny workspace limit (one image per chunk) gives the same results as NumPy."""
    ops = _chunked_ops(16)
    for dtype in (np.float32, np.float64):
        args = _conv_inputs(case, dtype, data_format, seed=5)
        want = _host(_conv_all(numpy_ops, *args))
        have = _conv_all(ops, *[ops.asarray(a) if isinstance(a, np.ndarray) else a for a in args])
        for k in want:
            compare(f"{k} with im2col_limit_bytes=16", have[k], want[k], dtype, ops)


@pytest.mark.parametrize("images_per_chunk", [1, 2, 3, 6])
def test_im2col_chunks_with_a_remainder(cupy_ops, numpy_ops, images_per_chunk):
    """7 images in chunks of 1, 2, 3 or 6: the last chunk is partial."""
    case = ((7, 9, 9, 5), (3, 3, 5, 4), (1, 1), (1, 1, 1, 1), (1, 1))
    ops = _chunked_ops(images_per_chunk * _per_image_bytes(case, np.float32))
    for data_format in FORMATS:
        args = _conv_inputs(case, np.float32, data_format, seed=9)
        want = _host(_conv_all(numpy_ops, *args))
        have = _conv_all(ops, *[ops.asarray(a) if isinstance(a, np.ndarray) else a for a in args])
        for name in want:
            compare(f"{name}, {images_per_chunk} images per chunk, {data_format}", have[name], want[name], np.float32, ops)


def test_im2col_limit_from_the_environment(cupy_ops, monkeypatch):
    from backends.cupy_ops import IM2COL_LIMIT_ENV, CupyOps

    monkeypatch.setenv(IM2COL_LIMIT_ENV, "0.5")
    assert CupyOps().im2col_limit_bytes == 2**19
    monkeypatch.setenv(IM2COL_LIMIT_ENV, "nonsense")
    with pytest.raises(ValueError, match=IM2COL_LIMIT_ENV):
        CupyOps()


def _oom(cupy, nbytes):
    cls = cupy.cuda.memory.OutOfMemoryError
    try:
        return cls(nbytes, 0, 0)
    except TypeError:
        return cls(nbytes, 0)


def test_im2col_out_of_memory_retries_with_smaller_chunks(cupy_ops, numpy_ops, monkeypatch):
    """A workspace allocation that fails above 2 images is retried with halved chunks, same results."""
    cupy = cupy_ops.xp
    case = ((8, 9, 9, 5), (3, 3, 5, 4), (1, 1), (1, 1, 1, 1), (1, 1))
    per_image = _per_image_bytes(case, np.float32)
    ops = _chunked_ops(8 * per_image)
    args = _conv_inputs(case, np.float32, "channels_last", seed=10)
    want = _host(_conv_all(numpy_ops, *args))
    real_empty = cupy.empty
    refused = []

    def empty(shape, dtype=float, *a, **kw):
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if isinstance(shape, tuple) and len(shape) == 2 and shape[1] == 45 and nbytes > 2 * per_image:
            refused.append(shape)
            raise _oom(cupy, nbytes)
        return real_empty(shape, dtype, *a, **kw)

    monkeypatch.setattr(cupy, "empty", empty)
    have = _conv_all(ops, *[ops.asarray(a) if isinstance(a, np.ndarray) else a for a in args])
    monkeypatch.setattr(cupy, "empty", real_empty)
    assert refused, "the im2col workspace was never allocated through cupy.empty with K=45 columns"
    for name in want:
        compare(f"{name} after out-of-memory retries", have[name], want[name], np.float32, ops)


def test_im2col_out_of_memory_with_one_image_raises_memory_error(cupy_ops, monkeypatch):
    cupy = cupy_ops.xp
    ops = _chunked_ops(16)
    x = ops.asarray(np.ones((2, 9, 9, 5), np.float32))
    k = ops.asarray(np.ones((3, 3, 5, 4), np.float32))
    real_empty = cupy.empty

    def empty(shape, dtype=float, *a, **kw):
        if isinstance(shape, tuple) and len(shape) == 2 and shape[1] == 45:
            raise _oom(cupy, 1 << 40)
        return real_empty(shape, dtype, *a, **kw)

    monkeypatch.setattr(cupy, "empty", empty)
    with pytest.raises(MemoryError, match="conv2d_forward"):
        ops.conv2d_forward(x, k, (1, 1), (1, 1, 1, 1), (1, 1), "channels_last")


# ------------------------------------------------------------------ pooling

# x NHWC shape, pool size, strides, pads
POOL_CASES = [
    ((2, 8, 8, 3), (2, 2), (2, 2), (0, 0, 0, 0)),  # the common 2x2
    ((2, 7, 7, 2), (3, 3), (2, 2), (1, 1, 1, 1)),  # overlapping, padded
    ((1, 6, 7, 2), (3, 2), (1, 2), (1, 2, 0, 1)),  # overlapping rows, asymmetric pads
    ((2, 6, 6, 3), (2, 2), (1, 1), (0, 0, 0, 0)),  # stride 1: every cell in up to 4 windows
    ((2, 5, 5, 3), (1, 1), (1, 1), (0, 0, 0, 0)),  # 1x1
    ((2, 7, 8, 4), (3, 3), (3, 3), (0, 1, 0, 1)),  # 'same' with a ragged edge window
    ((1, 9, 9, 33), (5, 5), (2, 2), (2, 2, 2, 2)),  # big window, 33 channels
    ((0, 5, 5, 2), (2, 2), (2, 2), (0, 1, 0, 1)),  # empty batch
]


def _pool_all(ops, x, dy, u, pool, strides, pads, data_format):
    g = (pool, strides, pads, data_format)
    y, arg = ops.max_pool2d_forward(x, *g)
    ys, index = ops.stochastic_pool2d_forward(x, u, *g)
    return {
        "max_pool2d_forward": y,
        "max_pool2d_forward.argmax": arg,
        "max_pool2d_backward": ops.max_pool2d_backward(dy, arg, tuple(x.shape), *g),
        "avg_pool2d_forward": ops.avg_pool2d_forward(x, *g),
        "avg_pool2d_backward": ops.avg_pool2d_backward(dy, tuple(x.shape), *g),
        "stochastic_pool2d_forward": ys,
        "stochastic_pool2d_forward.index": index,
        "stochastic_pool2d_backward": ops.stochastic_pool2d_backward(dy, index, tuple(x.shape), *g),
        "stochastic_pool2d_inference_forward": ops.stochastic_pool2d_inference_forward(x, *g),
        "stochastic_pool2d_inference_backward": ops.stochastic_pool2d_inference_backward(dy, x, *g),
    }


def _pool_inputs(case, dtype, data_format, ties, seed=0):
    xs, pool, strides, pads = case
    rng = np.random.default_rng(seed)
    x = _to_format(_data(rng, xs, dtype, ties), data_format)
    y, _ = NumpyOps().max_pool2d_forward(x, pool, strides, pads, data_format)
    dy = _data(rng, y.shape, dtype)
    u = rng.random(y.shape).astype(dtype)
    if dtype == np.float16:
        u = np.minimum(u, np.float16(0.999))
    return x, dy, u, pool, strides, pads, data_format


@pytest.mark.parametrize("ties", [False, True], ids=["random", "ties"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: "x{}p{}s{}pad{}".format(*c).replace(" ", ""))
def test_pool_matches_numpy(cupy_ops, numpy_ops, case, data_format, dtype, ties):
    args = _pool_inputs(case, dtype, data_format, ties)
    # In float16 the stochastic pick depends on the precision of its running
    # sums; it is checked for consistency below instead of exactly.
    skip = ("stochastic_pool2d_forward", "stochastic_pool2d_forward.index", "stochastic_pool2d_backward") if dtype == np.float16 else ()
    have, _ = _run_both(cupy_ops, numpy_ops, _pool_all, args, dtype, skip=skip)
    if skip:
        _check_stochastic_consistent(cupy_ops, have, args)


def _check_stochastic_consistent(ops, have, args):
    """Each pick is a window cell with a positive value, y equals it, and -1 only for all-non-positive windows."""
    x, _, _, pool, strides, pads, data_format = args
    x = x.transpose(0, 2, 3, 1) if data_format == "channels_first" else x
    y = have["stochastic_pool2d_forward"]
    idx = have["stochastic_pool2d_forward.index"]
    if data_format == "channels_first":
        y, idx = y.transpose(0, 2, 3, 1), idx.transpose(0, 2, 3, 1)
    n, oh, ow, c = y.shape
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                for ch in range(c):
                    k = int(idx[b, i, j, ch])
                    cells = []
                    for a in range(pool[0]):
                        for e in range(pool[1]):
                            r, s = i * strides[0] + a - pads[0], j * strides[1] + e - pads[2]
                            inside = 0 <= r < x.shape[1] and 0 <= s < x.shape[2]
                            cells.append(float(x[b, r, s, ch]) if inside else None)
                    if k == -1:
                        assert all(v is None or v <= 0 for v in cells) and y[b, i, j, ch] == 0
                    else:
                        assert 0 <= k < len(cells) and cells[k] is not None and cells[k] > 0
                        assert float(y[b, i, j, ch]) == cells[k]


def test_pool_noncontiguous_input(cupy_ops, numpy_ops):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 9, 10, 6)).astype(np.float32)
    g = ((3, 3), (2, 2), (1, 1, 1, 1), "channels_last")
    xd = cupy_ops.asarray(x)[:, :, ::2]  # W = 5, strided
    xh = np.ascontiguousarray(x[:, :, ::2])
    y, arg = cupy_ops.max_pool2d_forward(xd, *g)
    want_y, want_arg = numpy_ops.max_pool2d_forward(xh, *g)
    compare("max pool view", y, want_y, np.float32, cupy_ops)
    compare("max pool view argmax", arg, want_arg, np.float32, cupy_ops)
    compare("avg pool view", cupy_ops.avg_pool2d_forward(xd, *g), numpy_ops.avg_pool2d_forward(xh, *g), np.float32, cupy_ops)


def test_max_pool_ties_pick_the_first_cell(cupy_ops):
    """All-equal windows: argmax is the first real cell, and backward sends all of dy there."""
    x = np.ones((1, 4, 4, 2), np.float32)
    for pads, first in (((0, 0, 0, 0), 0), ((1, 0, 1, 0), 3)):  # with padding, cell 3 is the first real one
        y, arg = cupy_ops.max_pool2d_forward(cupy_ops.asarray(x), (2, 2), (2, 2), pads, "channels_last")
        a = cupy_ops.to_numpy(arg)
        if pads == (0, 0, 0, 0):
            assert (a == first).all(), a
        else:
            assert a[0, 0, 0, 0] == first, a


def test_large_inputs_run_grid_stride_loops(cupy_ops, numpy_ops):
    """More elements than one grid covers (CupyOps caps grids at 16 blocks per SM), so every thread loops."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((64, 32, 32, 72)).astype(np.float32)  # 4.7M elements
    g = ((2, 2), (2, 2), (0, 0, 0, 0), "channels_last")
    dy = rng.standard_normal((64, 16, 16, 72)).astype(np.float32)
    xd, dyd = cupy_ops.asarray(x), cupy_ops.asarray(dy)
    y, arg = cupy_ops.max_pool2d_forward(xd, *g)
    want_y, want_arg = numpy_ops.max_pool2d_forward(x, *g)
    compare("large max pool", y, want_y, np.float32, cupy_ops)
    compare("large max pool argmax", arg, want_arg, np.float32, cupy_ops)
    compare("large max pool backward", cupy_ops.max_pool2d_backward(dyd, arg, x.shape, *g), numpy_ops.max_pool2d_backward(dy, want_arg, x.shape, *g), np.float32, cupy_ops)
    compare("large avg pool", cupy_ops.avg_pool2d_forward(xd, *g), numpy_ops.avg_pool2d_forward(x, *g), np.float32, cupy_ops)
    yb, mean, var, cache = cupy_ops.batch_norm_forward_training(xd, None, None, 3, 1e-3)
    want = numpy_ops.batch_norm_forward_training(x, None, None, 3, 1e-3)
    for name, h, w in (("y", yb, want[0]), ("mean", mean, want[1]), ("var", var, want[2])):
        compare(f"large batch norm {name}", h, w, np.float32, cupy_ops)
    dyx = rng.standard_normal(x.shape).astype(np.float32)
    dx = cupy_ops.batch_norm_backward_training(cupy_ops.asarray(dyx), cache)[0]
    compare("large batch norm dx", dx, numpy_ops.batch_norm_backward_training(dyx, want[3])[0], np.float32, cupy_ops)
    k = rng.standard_normal((3, 3, 72, 16)).astype(np.float32)
    compare(
        "large conv",
        cupy_ops.conv2d_forward(xd[:8], cupy_ops.asarray(k), (1, 1), (1, 1, 1, 1), (1, 1), "channels_last"),
        numpy_ops.conv2d_forward(x[:8], k, (1, 1), (1, 1, 1, 1), (1, 1), "channels_last"),
        np.float32,
        cupy_ops,
    )


# ----------------------------------------------------------- global pooling


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("shape", [(2, 5, 6, 3), (3, 1, 1, 4), (2, 16, 16, 70), (0, 4, 4, 2)], ids=str)
@pytest.mark.parametrize("ties", [False, True], ids=["random", "ties"])
def test_global_pool_matches_numpy(cupy_ops, numpy_ops, shape, data_format, dtype, ties):
    rng = np.random.default_rng(1)
    x = _to_format(_data(rng, shape, dtype, ties), data_format)
    n, c = shape[0], shape[3]

    def fn(ops, x, dy):
        out = {}
        for keep in (False, True):
            g = dy if not keep else dy.reshape((n, c, 1, 1) if data_format == "channels_first" else (n, 1, 1, c))
            out[f"gap[{keep}]"] = ops.global_avg_pool2d_forward(x, data_format, keep)
            out[f"gap_bwd[{keep}]"] = ops.global_avg_pool2d_backward(g, tuple(x.shape), data_format, keep)
            y, arg = ops.global_max_pool2d_forward(x, data_format, keep)
            out[f"gmp[{keep}]"], out[f"gmp.argmax[{keep}]"] = y, arg
            out[f"gmp_bwd[{keep}]"] = ops.global_max_pool2d_backward(g, arg, tuple(x.shape), data_format, keep)
        return out

    _run_both(cupy_ops, numpy_ops, fn, [x, _data(rng, (n, c), dtype)], dtype)


# -------------------------------------------------------------- batch norm

# x shape, axis
BN_CASES = [
    ((4, 5, 6, 3), 3),  # NHWC
    ((4, 3, 5, 6), 1),  # NCHW
    ((6, 7), 1),  # Dense output
    ((3, 4, 5), 2),  # sequence, last axis
    ((3, 4, 5), 1),  # middle axis
    ((4, 5, 6, 3), 2),  # a middle axis of a 4-D tensor
    ((64, 8, 8, 130), 3),  # many channels, long reductions
    ((2, 33, 7, 9), 1),
    ((0, 4, 4, 3), 3),  # empty batch
]


def _bn_all(ops, x, gamma, beta, mean, var, dy, axis):
    out = {}
    y, m, v, cache = ops.batch_norm_forward_training(x, gamma, beta, axis, 1e-3)
    out.update(train_y=y, train_mean=m, train_var=v)
    dx, dg, db = ops.batch_norm_backward_training(dy, cache)
    out.update(train_dx=dx, train_dgamma=dg, train_dbeta=db)
    out["inf_y"] = ops.batch_norm_forward_inference(x, gamma, beta, mean, var, axis, 1e-3)
    dx, dg, db = ops.batch_norm_backward_inference(dy, x, gamma, mean, var, axis, 1e-3, has_beta=beta is not None)
    out.update(inf_dx=dx, inf_dgamma=dg, inf_dbeta=db)
    y, mm, mv, cache = ops.batch_norm_training_step(x, gamma, beta, mean, var, axis, 1e-3, 0.9, relu=True)
    dx, dg, db = ops.batch_norm_training_step_backward(dy, cache)
    out.update(step_y=y, step_moving_mean=mm, step_moving_var=mv, step_dx=dx, step_dgamma=dg, step_dbeta=db)
    return out


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", BN_CASES, ids=lambda c: f"{c[0]}axis{c[1]}".replace(" ", ""))
def test_batch_norm_matches_numpy(cupy_ops, numpy_ops, case, dtype, affine):
    shape, axis = case
    rng = np.random.default_rng(2)
    c = shape[axis]
    x = (rng.standard_normal(shape) * 3 + 1.5).astype(dtype)  # an offset mean tests the two-pass variance
    dy = _data(rng, shape, dtype)
    gamma = (rng.random(c) + 0.5).astype(dtype) if affine else None
    beta = rng.standard_normal(c).astype(dtype) if affine else None
    mean = rng.standard_normal(c).astype(dtype)
    var = (rng.random(c) + 0.1).astype(dtype)
    _run_both(cupy_ops, numpy_ops, lambda o, *a: _bn_all(o, *a, axis), [x, gamma, beta, mean, var, dy], dtype)


def test_batch_norm_large_offset_is_stable(cupy_ops, numpy_ops):
    """A mean of 1e4 with unit spread: a one-pass E[x^2]-E[x]^2 would lose the variance in float32."""
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((32, 8, 8, 16)) + 1e4).astype(np.float32)
    _, _, var, _ = cupy_ops.batch_norm_forward_training(cupy_ops.asarray(x), None, None, 3, 1e-3)
    want = x.astype(np.float64).var(axis=(0, 1, 2))
    np.testing.assert_allclose(cupy_ops.to_numpy(var), want, rtol=2e-3)


# -------------------------------------------------------------- the layers


@pytest.fixture
def on_backend(cupy_ops):
    """Run a function with the backend set to a name; restores the backend after the test."""
    before = backends.get_backend()

    def run(name, fn):
        backends.set_backend(name)
        return fn()

    yield run
    backends.set_backend(before)


def _layer_cases():
    from gpulayers import layers as L

    cf = "channels_first"
    return [
        ("conv_same", lambda: L.Conv2D(4, 3, padding="same"), (2, 8, 8, 3)),
        ("conv_s2_valid_cf", lambda: L.Conv2D(3, (2, 3), strides=2, data_format=cf), (2, 3, 9, 8)),
        ("conv_dilated_relu", lambda: L.Conv2D(5, 3, dilation_rate=2, padding="same", activation="relu"), (2, 9, 9, 2)),
        ("conv_1x1_nobias", lambda: L.Conv2D(2, 1, use_bias=False), (2, 5, 5, 4)),
        ("maxpool", lambda: L.MaxPooling2D(), (2, 8, 8, 3)),
        ("maxpool_same_overlap", lambda: L.MaxPooling2D(3, strides=2, padding="same"), (2, 7, 7, 3)),
        ("avgpool_same_s1", lambda: L.AveragePooling2D(3, strides=1, padding="same"), (2, 6, 5, 2)),
        ("avgpool_cf", lambda: L.AveragePooling2D(2, data_format=cf), (2, 3, 6, 6)),
        ("stochastic_inference", lambda: L.StochasticPooling2D(), (2, 6, 6, 3)),
        ("gap_keepdims", lambda: L.GlobalAveragePooling2D(keepdims=True), (2, 5, 5, 3)),
        ("gmp_cf", lambda: L.GlobalMaxPooling2D(data_format=cf), (2, 3, 5, 5)),
        ("bn", lambda: L.BatchNormalization(), (4, 5, 5, 3)),
        ("bn_cf", lambda: L.BatchNormalization(axis=1), (4, 3, 5, 5)),
        ("bn_plain", lambda: L.BatchNormalization(center=False, scale=False), (6, 4)),
        ("dense_tanh", lambda: L.Dense(7, activation="tanh"), (5, 6)),
        ("flatten_cf", lambda: L.Flatten(data_format=cf), (2, 3, 4, 4)),
        ("softmax", lambda: L.Activation("softmax"), (3, 6)),
        ("conv_f64", lambda: L.Conv2D(3, 3, padding="same", dtype="float64"), (2, 6, 6, 2)),
        ("bn_f16", lambda: L.BatchNormalization(dtype="float16"), (4, 4, 4, 3)),
        ("conv_f16", lambda: L.Conv2D(3, 3, padding="same", dtype="float16"), (2, 6, 6, 2)),
    ]


def _run_layer(make, x, dy, weights, training):
    from backends import get_ops

    ops = get_ops()
    layer = make()
    layer(x, training=False)  # builds; inference changes no state
    if weights:
        layer.set_weights(weights)
    y = layer(ops.asarray(x), training=training)
    dx = layer.backward(ops.asarray(dy.astype(y.dtype)))
    grads = [ops.to_numpy(v.grad) for v in layer.trainable_weights]
    state = [np.asarray(w) for w in layer.get_weights()]  # moving statistics after the call
    where = ops.name if isinstance(y, ops.xp.ndarray) and isinstance(dx, ops.xp.ndarray) else f"{ops.name} returning {type(y).__name__}"
    return ops.to_numpy(y), ops.to_numpy(dx), grads, state, where


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("name", [c[0] for c in _layer_cases()])
def test_layer_matches_numpy_backend(on_backend, name, training):
    make, shape = next((m, s) for n, m, s in _layer_cases() if n == name)
    if name == "stochastic_inference" and training:
        pytest.skip("training-mode draws come from each backend's own generator; see test_stochastic_layer_training")
    rng = np.random.default_rng(6)
    x = rng.standard_normal(shape).astype(np.float32)
    ref = on_backend("numpy", lambda: make())
    y_ref = on_backend("numpy", lambda: np.asarray(ref(x, training=False)))
    weights = ref.get_weights()
    dy = rng.standard_normal(y_ref.shape)
    want = on_backend("numpy", lambda: _run_layer(make, x, dy, weights, training))
    have = on_backend("cupy", lambda: _run_layer(make, x, dy, weights, training))
    assert have[4] == "cupy", f"{name}: expected cupy arrays from the cupy backend, got: {have[4]}"
    dtype = want[0].dtype.type
    for label, h, w in (("y", have[0], want[0]), ("dx", have[1], want[1])):
        _close(f"{name} {label}", h, w, dtype)
    assert len(have[2]) == len(want[2])
    for i, (h, w) in enumerate(zip(have[2], want[2])):
        _close(f"{name} grad {i}", h, w, dtype)
    for i, (h, w) in enumerate(zip(have[3], want[3])):
        _close(f"{name} weight/state {i}", h, w, dtype)


def _close(label, have, want, dtype):
    assert have.shape == want.shape and have.dtype == want.dtype, f"{label}: {have.shape}/{have.dtype} != {want.shape}/{want.dtype}"
    rtol, atol = _tolerance(dtype)
    scale = max(1.0, float(np.max(np.abs(want.astype(np.float64)), initial=0.0)))
    np.testing.assert_allclose(have.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol * scale, err_msg=label)


def test_stochastic_layer_training(on_backend):
    """On cupy, a seeded StochasticPooling2D repeats its draws, and each output is a positive cell of its window or 0."""
    from gpulayers import layers as L

    rng = np.random.default_rng(7)
    x = np.maximum(rng.standard_normal((2, 6, 6, 3)), 0).astype(np.float32)

    def run():
        from backends import get_ops

        ops = get_ops()
        a = L.StochasticPooling2D(seed=3)
        b = L.StochasticPooling2D(seed=3)
        ya, yb = ops.to_numpy(a(x, training=True)), ops.to_numpy(b(x, training=True))
        dx = ops.to_numpy(a.backward(ops.asarray(np.ones(ya.shape, np.float32))))
        return ya, yb, dx

    ya, yb, dx = on_backend("cupy", run)
    np.testing.assert_array_equal(ya, yb)
    windows = x.reshape(2, 3, 2, 3, 2, 3).transpose(0, 1, 3, 5, 2, 4).reshape(2, 3, 3, 3, 4)
    for idx in np.ndindex(ya.shape):
        cell = windows[idx]
        assert ya[idx] == 0 and cell.max() <= 0 or ya[idx] in cell[cell > 0]
    assert dx.sum() == pytest.approx(float((ya > 0).sum()))  # one unit of gradient per picking window


# -------------------------------------------------------------- training


def _train(backend_name, on_backend, dtype, epochs=4):
    import gpulayers
    from gpulayers import layers as L
    from gpulayers import optimizers

    rng = np.random.default_rng(11)
    n = 64
    y = rng.integers(0, 3, n)
    x = rng.uniform(0, 0.3, (n, 12, 12, 3)).astype(dtype)
    for i in range(n):  # a class-dependent bright patch: learnable in a few epochs
        r, c = rng.integers(0, 8, 2)
        x[i, r : r + 4, c : c + 4, y[i]] += 0.7

    def run():
        gpulayers.set_random_seed(0)
        model = gpulayers.Sequential(
            [
                L.Input((12, 12, 3), dtype=dtype),
                L.Conv2D(8, 3, padding="same", dtype=dtype),
                L.BatchNormalization(dtype=dtype),
                L.Activation("relu", dtype=dtype),
                L.MaxPooling2D(dtype=dtype),
                L.Conv2D(8, 3, padding="same", activation="relu", dtype=dtype),
                L.AveragePooling2D(2, dtype=dtype),
                L.Flatten(dtype=dtype),
                L.Dense(16, activation="relu", dtype=dtype),
                L.Dense(3, activation="softmax", dtype=dtype),
            ]
        )
        model.compile(optimizer=optimizers.SGD(learning_rate=0.05, momentum=0.9), loss="sparse_categorical_crossentropy")
        history = model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)
        return history.history["loss"], [np.asarray(w) for w in model.get_weights()]

    return on_backend(backend_name, run)


@pytest.mark.parametrize("dtype,rtol", [("float32", 2e-3), ("float64", 1e-8)])
def test_training_follows_the_numpy_run(on_backend, dtype, rtol):
    loss_np, w_np = _train("numpy", on_backend, dtype)
    loss_cp, w_cp = _train("cupy", on_backend, dtype)
    assert loss_np[-1] < loss_np[0], f"the NumPy run did not learn: {loss_np}"
    np.testing.assert_allclose(loss_cp, loss_np, rtol=rtol, err_msg="cupy loss curve vs numpy")
    for i, (a, b) in enumerate(zip(w_cp, w_np)):
        scale = max(1.0, float(np.abs(b).max(initial=0)))
        np.testing.assert_allclose(a, b, rtol=rtol * 10, atol=rtol * 10 * scale, err_msg=f"weight {i} after training")


# ------------------------------------------------------ optimizer steps

OPTIMIZER_CASES = {
    "sgd-nesterov": ("SGD", dict(learning_rate=0.05, momentum=0.7, nesterov=True)),
    "adam-amsgrad": ("Adam", dict(learning_rate=0.01, amsgrad=True)),
    "adamw": ("AdamW", dict(learning_rate=0.01, weight_decay=0.1)),
    "rmsprop-centered": ("RMSprop", dict(learning_rate=0.01, momentum=0.5, centered=True)),
    "adagrad": ("Adagrad", dict(learning_rate=0.1)),
}


def _optimizer_steps(config, dtype, steps=3):
    from gpulayers import optimizers
    from gpulayers.variables import Variable

    ops = backends.get_ops()
    rng = np.random.default_rng(5)
    shapes = [(3, 3, 2, 4), (4,), (7, 5), (1,)] * 9  # 36 variables: two launches on the GPU
    variables = [Variable(ops.asarray(rng.standard_normal(s).astype(dtype)), name=f"v{i}") for i, s in enumerate(shapes)]
    name, kwargs = OPTIMIZER_CASES[config]
    opt = getattr(optimizers, name)(**kwargs)
    opt.exclude_from_weight_decay(var_names=["v1"])
    for _ in range(steps):
        opt.apply([ops.asarray(rng.standard_normal(s).astype(dtype)) for s in shapes], variables)
    return [ops.to_numpy(v.value) for v in variables] + [ops.to_numpy(a) for a in opt.variables]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("config", sorted(OPTIMIZER_CASES))
def test_fused_optimizer_step_matches_numpy(on_backend, monkeypatch, config, dtype):
    from backends.cupy_ops import CupyOps

    fused = []
    original = CupyOps._multi_tensor_update

    def spy(self, *args):
        fused.append(original(self, *args))
        return fused[-1]

    monkeypatch.setattr(CupyOps, "_multi_tensor_update", spy)
    want = on_backend("numpy", lambda: _optimizer_steps(config, dtype))
    got = on_backend("cupy", lambda: _optimizer_steps(config, dtype))
    assert fused == [True] * 3, "the GPU step did not take the multi-tensor path"
    rtol = 1e-12 if dtype == np.float64 else 1e-5  # the GPU may contract to FMA
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol, err_msg=f"{config}: array {i}")


# ---------------------------------------------------- GPU vs host emulation


def _hostemu():
    """The host-emulation helper (tests/kernels/hostemu.py), or skip naming what is missing."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(here, "kernels", "hostemu.py")
    if not os.path.exists(path):
        pytest.skip("GPU-vs-host-emulation comparison needs tests/kernels/hostemu.py, which does not exist yet")
    kernels_dir = os.path.dirname(path)
    if kernels_dir not in sys.path:
        sys.path.insert(0, kernels_dir)
    try:
        return importlib.import_module("hostemu")
    except Exception as exc:  # noqa: BLE001 -- the reason is shown
        pytest.skip(f"tests/kernels/hostemu.py does not import here ({type(exc).__name__}: {exc})")


class _Mirror:
    """Runs every kernel CupyOps launches on the GPU and again in the host emulator, and compares.

    Array arguments are copied to the host before the GPU launch (so the
    emulator starts from the same bytes, garbage in unwritten outputs
    included) and every array is compared after both runs: exactly for
    integers, within float rounding for floats (the GPU flushes denormals and
    may contract to FMA; the emulator does neither).
    """

    def __init__(self, ops, hostemu):
        from backends.cuda_sources import kernel_modules

        self.ops, self.hostemu = ops, hostemu
        self.specs = {m.name: m for m in kernel_modules()}
        self.host_modules = {}
        self.launched = set()
        self.problems = []
        self.skipped = []
        original = ops._kernel

        def kernel(module, name, dtype):
            fn = original(module, name, dtype)
            expr = self.specs[module].expression(name, dtype)
            host = self._host_module(module).kernel(expr)

            def launch(grid, block, args, shared_mem=0, **kw):
                self._launch(expr, fn, host, grid, block, args, shared_mem, kw)

            return launch

        ops._kernel = kernel

    def _host_module(self, module):
        mod = self.host_modules.get(module)
        if mod is None:
            mod = self.host_modules[module] = self.hostemu.load(self.specs[module])
        return mod

    def _launch(self, expr, fn, host, grid, block, args, shared_mem, kw):
        cupy = self.ops.xp
        self.launched.add(expr)
        copies, host_args, spans = {}, [], []
        if any(isinstance(a, np.void) for a in args):
            # A struct of device pointers (optimizer.cu's MtTable): the emulator cannot follow them.
            # test_fused_optimizer_step_matches_numpy compares these kernels instead.
            fn(grid, block, args, shared_mem=shared_mem, **kw)
            self.skipped.append(f"{expr}: device pointers inside a struct argument")
            return
        for i, a in enumerate(args):
            if isinstance(a, cupy.ndarray):
                if not a.flags.c_contiguous:
                    self.problems.append(f"{expr}: argument {i} {a.shape} is not C-contiguous; a raw kernel sees only its pointer")
                key = (_address(a), a.nbytes)
                if key not in copies:
                    copies[key] = np.array(self.ops.to_numpy(a), copy=True, order="C")
                    spans.append(key)
                host_args.append(copies[key])
            else:
                host_args.append(a)
        overlapping = any(
            p1 < p2 + n2 and p2 < p1 + n1 and (p1, n1) != (p2, n2) and n1 and n2
            for j, (p1, n1) in enumerate(spans)
            for (p2, n2) in spans[j + 1 :]
        )
        fn(grid, block, args, shared_mem=shared_mem, **kw)
        if overlapping:
            self.skipped.append(f"{expr}: partly overlapping array arguments")
            return
        cupy.cuda.Device().synchronize()
        try:
            host(grid, block, tuple(host_args), shared_mem=shared_mem)
        except Exception as exc:  # noqa: BLE001 -- recorded with the kernel's name
            self.problems.append(f"{expr}: the host emulation failed: {type(exc).__name__}: {exc}")
            return
        for i, a in enumerate(args):
            if not isinstance(a, cupy.ndarray) or a.size == 0:
                continue
            gpu, emu = self.ops.to_numpy(a), copies[(_address(a), a.nbytes)]
            if np.issubdtype(gpu.dtype, np.integer):
                if not np.array_equal(gpu, emu):
                    bad = np.flatnonzero(gpu.reshape(-1) != emu.reshape(-1))
                    self.problems.append(f"{expr}: argument {i}: {bad.size} integers differ, first at {bad[0]}: GPU {gpu.reshape(-1)[bad[0]]} host {emu.reshape(-1)[bad[0]]}")
                continue
            rtol = 1e-12 if gpu.dtype == np.float64 else 2e-5
            g64, e64 = gpu.astype(np.float64), emu.astype(np.float64)
            scale = max(1.0, float(np.nanmax(np.abs(e64), initial=0.0)) if np.isfinite(e64).any() else 1.0)
            close = np.isclose(g64, e64, rtol=rtol, atol=rtol * scale, equal_nan=True)
            if not close.all():
                bad = np.flatnonzero(~close.reshape(-1))
                self.problems.append(
                    f"{expr}: argument {i}: {bad.size} values differ, first at {bad[0]}: "
                    f"GPU {g64.reshape(-1)[bad[0]]!r} host {e64.reshape(-1)[bad[0]]!r}"
                )


def _address(a):
    """Device address of a cupy array (host address for numpy, used when checking this file on a CPU)."""
    data = a.data
    return data.ptr if hasattr(data, "ptr") else a.__array_interface__["data"][0]


def _exercise_every_kernel(ops, dtype):
    """Calls that between them launch every kernel of every module (for the given float dtype)."""
    rng = np.random.default_rng(12)
    for data_format in FORMATS:
        for case in (CONV_CASES[1], CONV_CASES[2], CONV_CASES[5]):
            args = _conv_inputs(case, dtype, data_format, seed=12)
            _conv_all(ops, *[ops.asarray(a) if isinstance(a, np.ndarray) else a for a in args])
        for case in (POOL_CASES[1], POOL_CASES[2], POOL_CASES[5]):
            for ties in (False, True):
                args = _pool_inputs(case, dtype, data_format, ties, seed=12)
                _pool_all(ops, *[ops.asarray(a) if isinstance(a, np.ndarray) else a for a in args])
        # Global pooling: small (block per output) and, for NHWC, enough outputs
        # for the thread-per-output kernel.
        for shape in ((2, 5, 6, 3), (ops._sm_count() * 8 + 1, 2, 2, 64)):
            x = ops.asarray(_to_format(_data(rng, shape, dtype), data_format))
            n, c = shape[0], shape[3]
            dy = ops.asarray(_data(rng, (n, c), dtype))
            ops.global_avg_pool2d_forward(x, data_format, False)
            ops.global_avg_pool2d_backward(dy, tuple(x.shape), data_format, False)
            _, arg = ops.global_max_pool2d_forward(x, data_format, False)
            ops.global_max_pool2d_backward(dy, arg, tuple(x.shape), data_format, False)
    for shape, axis in (((4, 5, 6, 3), 3), ((4, 3, 5, 6), 1), ((300, 40), 1)):
        c = shape[axis]
        x = ops.asarray((rng.standard_normal(shape) * 2 + 1).astype(dtype))
        dy = ops.asarray(_data(rng, shape, dtype))
        for affine in (True, False):
            gamma = ops.asarray((rng.random(c) + 0.5).astype(dtype)) if affine else None
            beta = ops.asarray(rng.standard_normal(c).astype(dtype)) if affine else None
            mean = ops.asarray(rng.standard_normal(c).astype(dtype))
            var = ops.asarray((rng.random(c) + 0.1).astype(dtype))
            _bn_all(ops, x, gamma, beta, mean, var, dy, axis)
    x, dy = ops.asarray(_data(rng, (1000, 3), dtype)), ops.asarray(_data(rng, (1000, 3), dtype))
    ops.relu_backward(x, dy)
    ops.bias_add_relu(x.copy(), ops.asarray(_data(rng, (3,), dtype)), 1)
    _, kept = ops.dropout(x, ops.asarray(rng.random((1000, 3)).astype(dtype)), 0.8)
    ops.dropout_backward(dy, kept, 0.8)
    stream = ops.random_stream(11)
    ops.uniform(stream, (1000, 3), dtype)
    ops.dropout_random(x, (1000, 3), 0.8, stream)
    for rows, cols in ((37, 10), (5, 300)):
        ops.bias_add_softmax(ops.asarray(_data(rng, (rows, cols), dtype)), ops.asarray(_data(rng, (cols,), dtype)))
        p = ops.softmax(ops.asarray(_data(rng, (rows, cols), dtype)), 1)
        labels = ops.asarray(rng.integers(0, cols, rows))
        ops.sparse_xent_values(p, labels, dtype(1e-7), dtype(1 - 1e-7))
        ops.sparse_xent_mean(p, labels, dtype(1e-7), dtype(1 - 1e-7))
        ops.sparse_xent_logits_grad(p, labels, ops.asarray(dtype(0.5)), dtype(1 / rows))
        ops.sparse_xent_logits_grad(p, labels, ops.asarray(_data(rng, (rows,), dtype)))
        ops.sparse_xent_logits_grad(p, labels, ops.xp.broadcast_to(ops.asarray(dtype(0.5)), (rows,)))
        ops.top1_matches(p, labels)
    ops.accumulate(ops.asarray(np.float64(1.5)), ops.asarray(dtype(0.25)), 32.0, 64.0)
    from backends import multi_tensor

    constants = dict(lr=0.1, wd=0.01, momentum=0.9, use_momentum=True, nesterov=False, alpha=0.01,
                     one_minus_beta_1=0.1, one_minus_beta_2=0.001, epsilon=1e-7, amsgrad=True, rho=0.9,
                     one_minus_rho=0.1, centered=True)
    for rule, (slots, _) in multi_tensor.RULES.items():
        group = [ops.asarray(rng.random((5, 3)).astype(dtype)) for _ in range(2 + len(slots))]
        ops.multi_tensor_update(rule, [tuple(group)], constants, [True])


def test_gpu_kernels_match_host_emulation(cupy_ops):
    hostemu = _hostemu()
    if hostemu.compiler() is None:
        pytest.skip("GPU-vs-host-emulation comparison needs a C++ compiler (g++), which is not on PATH here")
    reason = hostemu.compiler_missing_reason()
    if reason:
        pytest.skip(f"GPU-vs-host-emulation comparison: the host emulator cannot be built here: {reason}")
    from backends.cupy_ops import CupyOps

    ops = CupyOps()
    mirror = _Mirror(ops, hostemu)
    for dtype in (np.float32, np.float64):
        _exercise_every_kernel(ops, dtype)
    assert not mirror.problems, "\n".join(mirror.problems[:30])
    expected = {e for m in mirror.specs.values() for e in m.name_expressions}
    missing = sorted(expected - mirror.launched)
    assert not missing, f"kernels never launched by the comparison (extend _exercise_every_kernel): {missing}"
