"""CupyOps, end to end, with its RawKernels run by the host emulator instead of a GPU.

A stand-in ``cupy`` module (numpy arrays; ``empty`` poisoned with NaN /
-7777; ``RawModule`` builds the same kernel_modules() source with hostemu; a
2-SM "device" so grids are capped and grid-stride loops and chunked
reductions really loop) is put in
``sys.modules`` for these tests only, and CupyOps' module caches are
swapped for empty ones, so nothing leaks into other tests. Every
kernel-backed CupyOps method is then compared with NumpyOps: this checks
the wrappers' argument lists, launch shapes, chunking and layouts, on top of
the kernels themselves (tested one by one in the other test_hostemu_* files).
"""

import sys
import types

import numpy as np
import pytest

from backends.numpy_ops import NumpyOps
from emu_helpers import assert_same_bits, fake_cuda_runtime, load_kernel_module, poison, same_pads

pytestmark = pytest.mark.kernels

REF = NumpyOps()
FAKE_SMS = 2


class _Launches:
    def __init__(self):
        self.names = []


def _fake_cupy(order, launches):
    class RawModule:
        def __init__(self, code, options=(), name_expressions=()):
            self._mod = load_kernel_module(code, options, name_expressions)

        def get_function(self, name):
            k = self._mod.kernel(name)

            def launch(grid, block, args, shared_mem=0):
                launches.names.append(name)
                k(grid, block, args, shared_mem=shared_mem, order=order, seed=len(launches.names))

            return launch

    class OutOfMemoryError(MemoryError):
        pass

    class FakeCupy(types.ModuleType):
        def __getattr__(self, name):  # everything else: numpy's function of that name
            return getattr(np, name)

    fake = FakeCupy("cupy")
    fake.ndarray = np.ndarray
    # Fresh buffers come poisoned (NaN / -7777), so an element no kernel writes shows in the results.
    fake.empty = lambda shape, dtype=float, order="C": poison(shape, dtype)
    fake.RawModule = RawModule
    fake.cuda = types.SimpleNamespace(
        runtime=fake_cuda_runtime(FAKE_SMS),
        memory=types.SimpleNamespace(OutOfMemoryError=OutOfMemoryError),
        compiler=types.SimpleNamespace(CompileException=type("CompileException", (Exception,), {})),
    )
    return fake


@pytest.fixture(params=["forward", "reverse"])
def ops(request, emu, monkeypatch):
    """A CupyOps whose kernels run on the host emulator (threads in the given order)."""
    import backends
    from backends import cupy_ops

    launches = _Launches()
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(request.param, launches))
    for cache in ("_raw_modules", "_functions", "_sm_counts"):
        monkeypatch.setattr(cupy_ops, cache, {})
    monkeypatch.setattr(backends, "_cupy_status", None)  # a probe of the stand-in is not cached past the test
    o = cupy_ops.CupyOps(im2col_limit_bytes=2**30)
    o.launches = launches
    return o


def _close(got, want, dtype, what):
    t = dict(rtol=1e-5, atol=1e-5) if np.dtype(dtype) == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got, want, err_msg=what, **t)


def _df(cf):
    return "channels_first" if cf else "channels_last"


CONV = [
    # x NHWC shape, kernel shape, strides, dilation, pads
    ((2, 8, 7, 3), (3, 3, 3, 4), (2, 2), (1, 1), same_pads(8, 3, 2) + same_pads(7, 3, 2)),
    ((1, 9, 9, 2), (3, 2, 2, 3), (1, 1), (2, 2), (0, 0, 0, 0)),
    ((3, 5, 6, 4), (1, 1, 4, 2), (1, 1), (1, 1), (0, 0, 0, 0)),  # the direct (matmul only) path
    ((2, 6, 5, 1), (2, 2, 1, 2), (3, 2), (1, 1), (1, 0, 0, 1)),
]


@pytest.mark.parametrize("cf", [False, True], ids=["nhwc", "nchw"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", range(len(CONV)))
def test_conv2d_through_cupy_ops(ops, case, dtype, cf):
    shape, kshape, strides, dil, pads = CONV[case]
    rng = np.random.default_rng(case)
    x = rng.standard_normal(shape).astype(dtype)
    if cf:
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    kernel = rng.standard_normal(kshape).astype(dtype)
    df = _df(cf)
    want_y = REF.conv2d_forward(x, kernel, strides, pads, dil, df)
    dy = rng.standard_normal(want_y.shape).astype(dtype)
    for limit in (2**30, 1):  # 1 byte: one image per im2col chunk
        ops.im2col_limit_bytes = limit
        _close(ops.conv2d_forward(x, kernel, strides, pads, dil, df), want_y, dtype, f"conv fwd limit={limit}")
        _close(ops.conv2d_backward_input(dy, kernel, x.shape, strides, pads, dil, df),
               REF.conv2d_backward_input(dy, kernel, x.shape, strides, pads, dil, df), dtype, f"conv dx limit={limit}")
        _close(ops.conv2d_backward_kernel(x, dy, kernel.shape, strides, pads, dil, df),
               REF.conv2d_backward_kernel(x, dy, kernel.shape, strides, pads, dil, df), dtype, f"conv dw limit={limit}")
    if not (kshape[:2] == (1, 1) and not cf):
        assert {"im2col<float>", "im2col<double>"} & set(ops.launches.names)
        assert {"col2im<float>", "col2im<double>"} & set(ops.launches.names)


CONV_TRANSPOSE = [
    # x NHWC shape, kernel (kh, kw, filters, in), strides, padding, output_padding, dilation
    ((2, 4, 5, 3), (3, 3, 4, 3), (2, 2), "same", None, (1, 1)),
    ((1, 3, 3, 2), (2, 3, 3, 2), (3, 2), "valid", (2, 1), (1, 1)),
    ((2, 5, 4, 2), (3, 2, 2, 2), (1, 1), "same", None, (2, 1)),
    ((1, 3, 2, 2), (2, 3, 2, 2), (2, 1), "valid", (3, 2), (1, 1)),  # output_padding past the stride
]


@pytest.mark.parametrize("cf", [False, True], ids=["nhwc", "nchw"])
@pytest.mark.parametrize("case", range(len(CONV_TRANSPOSE)))
def test_conv_transpose_through_cupy_ops(ops, case, cf, monkeypatch):
    # ops.conv_transpose runs on the conv kernels with the transposed geometry (its pads after need not
    # be a convolution's usual ones): the emulated CupyOps must give NumpyOps' values.
    from gpulayers.ops import convolution

    shape, kshape, strides, padding, output_padding, dil = CONV_TRANSPOSE[case]
    rng = np.random.default_rng(30 + case)
    x = rng.standard_normal(shape).astype(np.float32)
    if cf:
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    kernel = rng.standard_normal(kshape).astype(np.float32)
    extra = (None, None) if output_padding is None else output_padding
    args = (strides, padding, extra, dil, _df(cf))
    monkeypatch.setattr(convolution, "get_ops", lambda: REF)
    want_y, want_back = convolution.conv_transpose_arrays(x, kernel, *args)
    g = rng.standard_normal(want_y.shape).astype(np.float32)
    want_dx, want_dk = want_back(g, (True, True))
    monkeypatch.setattr(convolution, "get_ops", lambda: ops)
    y, back = convolution.conv_transpose_arrays(x, kernel, *args)
    _close(y, want_y, np.float32, "conv_transpose y")
    dx, dk = back(g, (True, True))
    _close(dx, want_dx, np.float32, "conv_transpose dx")
    _close(dk, want_dk, np.float32, "conv_transpose dk")
    assert {"col2im<float>", "im2col<float>"} <= set(ops.launches.names)


POOL = [
    ((2, 7, 9, 3), (2, 2), (2, 2), (0, 0, 0, 0)),
    ((2, 8, 6, 5), (3, 3), (2, 2), same_pads(8, 3, 2) + same_pads(6, 3, 2)),
    ((1, 5, 7, 2), (3, 2), (1, 2), (1, 1, 0, 1)),
]


@pytest.mark.parametrize("cf", [False, True], ids=["nhwc", "nchw"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", range(len(POOL)))
def test_pooling_through_cupy_ops(ops, case, dtype, cf):
    shape, pool, strides, pads = POOL[case]
    rng = np.random.default_rng(10 + case)
    x = (rng.integers(-2, 3, shape) + (rng.random(shape) < 0.3) * rng.random(shape)).astype(dtype)
    if cf:
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    df = _df(cf)
    args = (pool, strides, pads, df)

    want_y, want_arg = REF.max_pool2d_forward(x, *args)
    y, arg = ops.max_pool2d_forward(x, *args)
    assert_same_bits(y, want_y, "max y")
    assert_same_bits(arg, want_arg, "max argmax")
    dy = rng.standard_normal(want_y.shape).astype(dtype)
    assert_same_bits(ops.max_pool2d_backward(dy, arg, x.shape, *args),
                     REF.max_pool2d_backward(dy, want_arg, x.shape, *args), "max dx")

    _close(ops.avg_pool2d_forward(x, *args), REF.avg_pool2d_forward(x, *args), dtype, "avg y")
    _close(ops.avg_pool2d_backward(dy, x.shape, *args), REF.avg_pool2d_backward(dy, x.shape, *args), dtype, "avg dx")

    u = rng.random(want_y.shape).astype(dtype)
    want_y, want_idx = REF.stochastic_pool2d_forward(x, u, *args)
    y, idx = ops.stochastic_pool2d_forward(x, u, *args)
    assert_same_bits(y, want_y, "stochastic y")
    assert_same_bits(idx, want_idx, "stochastic index")
    assert_same_bits(ops.stochastic_pool2d_backward(dy, idx, x.shape, *args),
                     REF.stochastic_pool2d_backward(dy, want_idx, x.shape, *args), "stochastic dx")
    _close(ops.stochastic_pool2d_inference_forward(x, *args), REF.stochastic_pool2d_inference_forward(x, *args),
           dtype, "stochastic inference y")
    _close(ops.stochastic_pool2d_inference_backward(dy, x, *args),
           REF.stochastic_pool2d_inference_backward(dy, x, *args), dtype, "stochastic inference dx")


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("cf", [False, True], ids=["nhwc", "nchw"])
@pytest.mark.parametrize("shape", [(2, 5, 3, 4), (32, 2, 2, 40)], ids=["block-kernel", "serial-kernel-if-nhwc"])
def test_global_pooling_through_cupy_ops(ops, shape, cf, keepdims):
    dtype = np.float32
    rng = np.random.default_rng(20)
    x = rng.integers(-3, 4, shape).astype(dtype)
    if cf:
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    df = _df(cf)
    _close(ops.global_avg_pool2d_forward(x, df, keepdims), REF.global_avg_pool2d_forward(x, df, keepdims), dtype,
           "global avg")
    want_y, want_arg = REF.global_max_pool2d_forward(x, df, keepdims)
    y, arg = ops.global_max_pool2d_forward(x, df, keepdims)
    assert_same_bits(y, want_y, "global max")
    assert_same_bits(arg, want_arg, "global argmax")
    dy = rng.standard_normal(want_y.shape).astype(dtype)
    _close(ops.global_avg_pool2d_backward(dy, x.shape, df, keepdims),
           REF.global_avg_pool2d_backward(dy, x.shape, df, keepdims), dtype, "global avg dx")
    assert_same_bits(ops.global_max_pool2d_backward(dy, arg, x.shape, df, keepdims),
                     REF.global_max_pool2d_backward(dy, want_arg, x.shape, df, keepdims), "global max dx")
    serial = not cf and shape[0] * shape[3] >= FAKE_SMS * 512
    used = set(ops.launches.names)
    assert ("global_pool_fwd_serial<float>" in used) == serial
    assert ("global_pool_fwd_block<float>" in used) == (not serial)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((4, 5, 3, 37), -1), ((3, 6, 4, 5), 1), ((300, 7), -1)])
def test_batch_norm_through_cupy_ops(ops, shape, axis, dtype, affine):
    rng = np.random.default_rng(30)
    c = shape[axis]
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    gamma = rng.uniform(0.5, 2, c).astype(dtype) if affine else None
    beta = rng.standard_normal(c).astype(dtype) if affine else None
    dy = rng.standard_normal(shape).astype(dtype)
    t = 5 if dtype == np.float32 else 1
    want = REF.batch_norm_forward_training(x, gamma, beta, axis, 1e-3)
    got = ops.batch_norm_forward_training(x, gamma, beta, axis, 1e-3)
    for g, w, what in zip(got[:3], want[:3], ("y", "mean", "var")):
        _close(g, w, dtype, f"bn training {what}")
    for g, w, what in zip(ops.batch_norm_backward_training(dy, got[3]), REF.batch_norm_backward_training(dy, want[3]),
                          ("dx", "dgamma", "dbeta")):
        if w is None:
            assert g is None
        else:
            np.testing.assert_allclose(g, w, rtol=t * 1e-5, atol=t * 1e-5, err_msg=f"bn training {what}")
    mean, var = want[1], want[2] + dtype(0.5)
    _close(ops.batch_norm_forward_inference(x, gamma, beta, mean, var, axis, 1e-3),
           REF.batch_norm_forward_inference(x, gamma, beta, mean, var, axis, 1e-3), dtype, "bn inference y")
    got = ops.batch_norm_backward_inference(dy, x, gamma, mean, var, axis, 1e-3, affine)
    want = REF.batch_norm_backward_inference(dy, x, gamma, mean, var, axis, 1e-3, affine)
    for g, w, what in zip(got, want, ("dx", "dgamma", "dbeta")):
        if w is None:
            assert g is None
        else:
            np.testing.assert_allclose(g, w, rtol=t * 1e-5, atol=t * 1e-5, err_msg=f"bn inference {what}")
    assert any(n.startswith("bn_partial") for n in ops.launches.names)


def test_float16_max_pool_through_cupy_ops(ops):
    """float16 runs in float32 on the kernels; max pooling stays exact."""
    x = np.random.default_rng(40).integers(-4, 5, (2, 6, 6, 3)).astype(np.float16)
    want_y, want_arg = REF.max_pool2d_forward(x, (3, 3), (2, 2), same_pads(6, 3, 2) * 2, "channels_last")
    y, arg = ops.max_pool2d_forward(x, (3, 3), (2, 2), same_pads(6, 3, 2) * 2, "channels_last")
    assert_same_bits(y, want_y, "f16 max")
    assert_same_bits(arg, want_arg, "f16 argmax")


def test_im2col_out_of_memory_retries_through_cupy_ops(ops, monkeypatch):
    """Workspace allocations above 2 images fail: CupyOps halves its chunk until they fit, same results."""
    cupy = sys.modules["cupy"]
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 7, 7, 3)).astype(np.float32)
    k = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
    args = ((1, 1), (1, 1, 1, 1), (1, 1), "channels_last")
    want = REF.conv2d_forward(x, k, *args)
    per_image = 7 * 7 * 27 * 4
    ops.im2col_limit_bytes = 6 * per_image  # the whole batch in one chunk, until memory runs out
    real_empty = cupy.empty
    refused = []

    def empty(shape, dtype=float, order="C"):
        shape = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
        if len(shape) == 2 and shape[1] == 27 and shape[0] * 27 * np.dtype(dtype).itemsize > 2 * per_image:
            refused.append(shape)
            raise cupy.cuda.memory.OutOfMemoryError(f"simulated: {shape}")
        return real_empty(shape, dtype, order)

    monkeypatch.setattr(cupy, "empty", empty)
    got = ops.conv2d_forward(x, k, *args)
    assert refused, "the im2col workspace never asked for more than 2 images"
    _close(np.asarray(got), want, np.float32, "conv2d_forward after out-of-memory retries")

    def never(shape, dtype=float, order="C"):
        shape = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
        if len(shape) == 2 and shape[1] == 27:
            raise cupy.cuda.memory.OutOfMemoryError("simulated")
        return real_empty(shape, dtype, order)

    monkeypatch.setattr(cupy, "empty", never)
    with pytest.raises(MemoryError, match="conv2d_forward"):
        ops.conv2d_forward(x, k, *args)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape, axis", [((6, 10), 1), ((2, 3, 40), 2), ((4, 3), 0)])
def test_softmax_through_cupy_ops(ops, shape, axis, dtype):
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    tol = dict(rtol=3e-3, atol=1e-4) if dtype == np.float16 else dict(rtol=1e-5, atol=1e-6)
    got = ops.softmax(x, axis)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, REF.softmax(x, axis), **tol)
    # The row kernel serves the last axis of float32/float64; the rest is NumpyOps' code.
    assert (axis == len(shape) - 1 and dtype != np.float16) == bool(ops.launches.names)
    np.testing.assert_allclose(ops.softmax(np.asfortranarray(x), axis), REF.softmax(x, axis), **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_bias_add_softmax_through_cupy_ops(ops, dtype):
    rng = np.random.default_rng(6)
    z, bias = rng.standard_normal((7, 2, 5)).astype(dtype), rng.standard_normal(5).astype(dtype)
    want_z = z.copy()
    want = REF.bias_add_softmax(want_z, bias)
    y = ops.bias_add_softmax(z, bias)
    assert_same_bits(z, want_z, "logits")
    _close(y, want, dtype, "softmax")
    assert [n.split("<")[0] for n in ops.launches.names] == ([] if dtype == np.float16 else ["bias_softmax_rows"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparse_crossentropy_through_cupy_ops(ops, dtype):
    rng = np.random.default_rng(1)
    p = REF.softmax(rng.standard_normal((9, 5)).astype(dtype), 1)
    labels = rng.integers(0, 5, 9).astype(np.int32)  # made int64 for the kernel
    lo, hi = dtype(1e-7), dtype(1 - 1e-7)
    _close(ops.sparse_xent_values(p, labels, lo, hi), REF.sparse_xent_values(p, labels.astype(np.int64), lo, hi),
           dtype, "values")
    g = rng.standard_normal(9).astype(dtype)
    for upstream in (g, np.broadcast_to(dtype(0.25), (9,)), g[::-1]):  # per row, one value for all, strided
        assert_same_bits(ops.sparse_xent_logits_grad(p, labels, upstream),
                         REF.sparse_xent_logits_grad(p, labels, upstream), "logits gradient")
    # The mean in one launch (twice: the blocks' counter is back at 0 after each), its gradient with the scale.
    for _ in range(2):
        _close(ops.sparse_xent_mean(p, labels, lo, hi), REF.sparse_xent_mean(p, labels.astype(np.int64), lo, hi),
               dtype, "mean")
    g0, scale = np.asarray(g[0]), dtype(1 / 9)
    assert_same_bits(ops.sparse_xent_logits_grad(p, labels, g0, scale),
                     REF.sparse_xent_logits_grad(p, labels, g0, scale), "mean's logits gradient")
    assert {"sparse_xent_fwd", "sparse_xent_mean", "sparse_xent_bwd"} <= {n.split("<")[0] for n in ops.launches.names}


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_relu_backward_and_dropout_through_cupy_ops(ops, dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 6)).astype(dtype)
    dy = rng.standard_normal((4, 6)).astype(dtype)
    assert_same_bits(ops.relu_backward(x, dy), REF.relu_backward(x, dy), "relu_backward")
    for u in (rng.random((4, 6)).astype(dtype), rng.random((1, 6)).astype(dtype)):  # full, and a noise_shape
        y, kept = ops.dropout(x, u, 0.75)
        want_y, want_kept = REF.dropout(x, u, 0.75)
        assert_same_bits(y, want_y, "dropout")
        assert_same_bits(kept, want_kept, "kept")
        assert_same_bits(ops.dropout_backward(dy, kept, 0.75), REF.dropout_backward(dy, want_kept, 0.75), "dropout dx")
    kernels = {n.split("<")[0] for n in ops.launches.names}
    assert kernels == (set() if dtype == np.float16 else {"relu_bwd", "dropout_fwd", "dropout_bwd"})


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_dropout_from_a_random_stream_draws_on_the_device(ops, dtype):
    # One launch per call, no generator on the host: the uniforms are the stream's philox_fill numbers.
    x = np.random.default_rng(4).standard_normal((40, 6)).astype(dtype)
    a, b = ops.random_stream(7), ops.random_stream(7)
    for _ in range(2):
        u = ops.uniform(a, x.shape, dtype)
        assert u.dtype == dtype and ((u >= 0) & (u < 1)).all()
        y, kept = ops.dropout_random(x, x.shape, 0.75, b)
        want_y, want_kept = REF.dropout(x, u, 0.75)  # the same seed and call: the same numbers
        assert_same_bits(y, want_y, "dropout_random")
        assert_same_bits(kept, want_kept, "kept")
    assert a.state.tolist() == b.state.tolist() == [2, 0]
    kernels = [n.split("<")[0] for n in ops.launches.names]
    if dtype == np.float16:  # drawn in float32, then the generic dropout
        assert kernels == ["philox_fill"] * 4
    else:
        assert kernels == ["philox_fill", "dropout_philox"] * 2
    # A broadcast noise_shape: the stream's uniforms of the mask's shape, then dropout.
    y, kept = ops.dropout_random(x, (1, 6), 0.5, ops.random_stream(3))
    assert kept.shape == (1, 6) and y.shape == x.shape


@pytest.mark.parametrize("keep_bytes", [2**30, 0])
@pytest.mark.parametrize("limit", [2**30, 1])
def test_conv_weight_gradient_from_the_forwards_patches(ops, limit, keep_bytes):
    # One chunk and room to keep it: the weight gradient reuses the forward's im2col matrix (one im2col
    # launch in all); chunked or over the keep limit: it is rebuilt. The values are NumpyOps' either way.
    shape, kshape, strides, dil, pads = CONV[0]
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(np.float32)
    kernel = rng.standard_normal(kshape).astype(np.float32)
    ops.im2col_limit_bytes, ops.keep_patches_bytes = limit, keep_bytes
    y, patches = ops.conv2d_forward_train(x, kernel, strides, pads, dil, "channels_last")
    _close(y, REF.conv2d_forward(x, kernel, strides, pads, dil, "channels_last"), np.float32, "forward")
    kept = limit > 1 and keep_bytes > 0
    assert (patches is not None) == kept
    before = ops.launches.names.count("im2col<float>")
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dw = ops.conv2d_backward_kernel(x, dy, kshape, strides, pads, dil, "channels_last", patches=patches)
    _close(dw, REF.conv2d_backward_kernel(x, dy, kshape, strides, pads, dil, "channels_last"), np.float32, "dw")
    assert (ops.launches.names.count("im2col<float>") == before) == kept


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape, axis", [((5, 7), -1), ((2, 3, 4, 4), 1)])
def test_bias_add_relu_through_cupy_ops(ops, shape, axis, dtype):
    rng = np.random.default_rng(5)
    z = rng.standard_normal(shape).astype(dtype)
    bias = rng.standard_normal(shape[axis]).astype(dtype)
    for b in (bias, None):
        assert_same_bits(ops.bias_add_relu(z.copy(), b, axis), REF.bias_add_relu(z.copy(), b, axis), "bias_add_relu")
    assert bool(ops.launches.names) == (dtype != np.float16)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape, axis", [((40, 6), 1), ((3, 5, 4, 4), 1), ((0, 6), 1)])
def test_batch_norm_training_step_through_cupy_ops(ops, shape, axis, dtype, relu):
    rng = np.random.default_rng(6)
    c = shape[axis]
    x = rng.standard_normal(shape).astype(dtype)
    gamma, beta = rng.uniform(0.5, 2, c).astype(dtype), rng.standard_normal(c).astype(dtype)
    moving = [rng.standard_normal(c).astype(np.float32), rng.uniform(0.5, 2, c).astype(np.float32)]
    if dtype == np.float64:
        moving = [m.astype(dtype) for m in moving]
    dy = rng.standard_normal(shape).astype(dtype)
    got = ops.batch_norm_training_step(x, gamma, beta, *moving, axis, 1e-3, 0.9, relu=relu)
    want = REF.batch_norm_training_step(x, gamma, beta, *moving, axis, 1e-3, 0.9, relu=relu)
    t = dict(rtol=3e-3, atol=3e-3) if dtype == np.float16 else dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 \
        else dict(rtol=1e-12, atol=1e-12)
    for g, w, what in zip(got[:3], want[:3], ("y", "moving mean", "moving var")):
        assert g.dtype == w.dtype, what
        np.testing.assert_allclose(g, w, err_msg=what, **t)
    for g, w, what in zip(ops.batch_norm_training_step_backward(dy, got[3]),
                          REF.batch_norm_training_step_backward(dy, want[3]), ("dx", "dgamma", "dbeta")):
        np.testing.assert_allclose(g, w, err_msg=what, **t)
    names = {n.split("<")[0] for n in ops.launches.names}
    if dtype != np.float16 and x.size:  # one merge launch gives the moving statistics; the ReLU rides along
        assert "bn_params_welford" in names and "relu_bwd" not in names


def test_metric_kernels_through_cupy_ops(ops):
    rng = np.random.default_rng(7)
    scores = rng.standard_normal((9, 4)).astype(np.float32)
    for labels in (rng.integers(0, 4, 9), rng.integers(0, 4, 9).astype(np.uint8)):  # int64, and cast to it
        assert_same_bits(ops.top1_matches(scores, labels), REF.top1_matches(scores, labels), "top1")
    float_labels = rng.integers(0, 4, 9).astype(np.float32)  # compared as floats: NumpyOps' code
    assert_same_bits(ops.top1_matches(scores, float_labels), REF.top1_matches(scores, float_labels), "float labels")
    total = np.array(2.5)
    for value in (np.array(0.75, np.float32), np.array(0.75, np.float64)):
        for ours, ref in zip(ops.accumulate(total, value, 8.0, 3.0), REF.accumulate(total, value, 8.0, 3.0)):
            assert_same_bits(np.asarray(ours), np.asarray(ref), "accumulate")
    assert ops.accumulate(0.0, np.array(1.5, np.float32), 2.0, 4.0) == (3.0, 0.75)  # a fresh metric's Python 0.0
    assert {n.split("<")[0] for n in ops.launches.names} == {"top1_match", "accumulate"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape, axis", [((6, 5), 1), ((2, 4, 3, 5), 3), ((2, 5, 4, 3), 1), ((3, 0, 2), 2)])
def test_channel_sum_through_cupy_ops(ops, shape, axis, dtype):
    a = np.random.default_rng(8).standard_normal(shape).astype(dtype)
    got = ops.channel_sum(a, axis)
    want = REF.channel_sum(a, axis)
    assert got.shape == want.shape == (shape[axis],) and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-2 if dtype == np.float16 else 1e-5, atol=1e-2 if dtype == np.float16 else 1e-5)
    np.testing.assert_allclose(ops.channel_sum(np.asfortranarray(a), axis), want, rtol=1e-2, atol=1e-2)


def test_kept_patches_share_one_budget_across_layers(ops):
    import gc

    shape, kshape, strides, dil, pads = CONV[0]
    rng = np.random.default_rng(9)
    x = rng.standard_normal(shape).astype(np.float32)
    kernel = rng.standard_normal(kshape).astype(np.float32)
    _, first = ops.conv2d_forward_train(x, kernel, strides, pads, dil, "channels_last")
    ops.keep_patches_bytes = first.array.nbytes  # room for one matrix only
    _, second = ops.conv2d_forward_train(x, kernel, strides, pads, dil, "channels_last")
    assert second is None  # the first still holds the budget
    del first
    gc.collect()
    _, third = ops.conv2d_forward_train(x, kernel, strides, pads, dil, "channels_last")
    assert third is not None  # released with the first one's closure


def test_zero_dimensional_inputs_keep_their_shape_through_cupy_ops(ops):
    x, dy = np.array(1.5, np.float32), np.array(2.0, np.float32)
    assert ops.relu_backward(x, dy).shape == ()
    y, kept = ops.dropout(x, np.array(0.25, np.float32), 0.5)
    assert y.shape == () and ops.dropout_backward(dy, kept, 0.5).shape == ()
    assert ops.bias_add_relu(np.array(-1.0, np.float32), None, 0).shape == ()
