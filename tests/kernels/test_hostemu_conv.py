"""backends/kernels/conv.cu on the host emulator, against backends.numpy_ops.NumpyOps.

im2col is data movement: it must equal NumpyOps' im2col bit for bit. col2im
sums, per input element, the patch gradients in tap order (i, j); the
reference below sums the same values in the same order with NumpyOps' own
tap geometry (``backends.window_plans.taps``), so it is compared exactly too, and the
whole backward-input product is compared with NumpyOps.conv2d_backward_input
within float tolerance (its GEMMs round differently).
"""

import numpy as np
import pytest

from backends.numpy_ops import NumpyOps
from backends.window_plans import out_size, taps as _taps
from emu_helpers import LAUNCHES, assert_same_bits, expr, i32, i64, poison, same_pads, tol

pytestmark = pytest.mark.kernels

REF = NumpyOps()


def _case(n, h, w, c, k, s=(1, 1), d=(1, 1), pads=(0, 0, 0, 0), f=2):
    return dict(n=n, h=h, w=w, c=c, k=k, s=s, d=d, pads=pads, f=f)


CASES = {
    "3x3-same-s1": _case(2, 7, 9, 3, (3, 3), pads=(1, 1, 1, 1)),
    "3x3-same-s2-asym": _case(2, 8, 6, 2, (3, 3), s=(2, 2), pads=same_pads(8, 3, 2) + same_pads(6, 3, 2)),
    "dilated-3x2": _case(1, 9, 10, 4, (3, 2), d=(2, 3)),
    "dilated-same": _case(2, 6, 7, 2, (3, 3), d=(2, 2), pads=same_pads(6, 3, 1, 2) + same_pads(7, 3, 1, 2)),
    "stride-gt-kernel": _case(3, 5, 5, 1, (2, 2), s=(3, 3)),  # skipped pixels: col2im writes 0
    "1x1-padded-s2": _case(2, 5, 4, 3, (1, 1), s=(2, 2), pads=(1, 0, 0, 1)),
    "4x4-s3-odd-pads": _case(1, 11, 9, 2, (4, 4), s=(3, 3), pads=(2, 1, 0, 3)),
    "kernel-eq-input": _case(2, 3, 4, 5, (3, 4)),
}


def _geometry(g):
    (kh, kw), (sh, sw), (dh, dw) = g["k"], g["s"], g["d"]
    top, bottom, left, right = g["pads"]
    oh = out_size(g["h"], kh, sh, dh, top + bottom)
    ow = out_size(g["w"], kw, sw, dw, left + right)
    assert oh > 0 and ow > 0
    return kh, kw, sh, sw, dh, dw, top, left, oh, ow


def _im2col_args(x, col, g, channels_first):
    n, h, w, c = g["n"], g["h"], g["w"], g["c"]
    kh, kw, sh, sw, dh, dw, top, left, oh, ow = _geometry(g)
    strides = (c * h * w, w, 1, h * w) if channels_first else (h * w * c, w * c, c, 1)
    return (x, col, i32(n), i32(h), i32(w), i32(c), *(i64(v) for v in strides),
            i32(kh), i32(kw), i32(sh), i32(sw), i32(dh), i32(dw), i32(top), i32(left), i32(oh), i32(ow))


def _col2im_args(dcol, dx, g, channels_first):
    kh, kw, sh, sw, dh, dw, top, left, oh, ow = _geometry(g)
    return (dcol, dx, i32(g["n"]), i32(g["h"]), i32(g["w"]), i32(g["c"]), i32(int(channels_first)),
            i32(kh), i32(kw), i32(sh), i32(sw), i32(dh), i32(dw), i32(top), i32(left), i32(oh), i32(ow))


def _x(g, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal((g["n"], g["h"], g["w"], g["c"])).astype(dtype)


def _col2im_reference(dcol, g):
    """dx (NHWC): for every input pixel, the patch gradients that read it, added in tap order (i, j)."""
    kh, kw, sh, sw, dh, dw, top, left, oh, ow = _geometry(g)
    n, h, w, c = g["n"], g["h"], g["w"], g["c"]
    d6 = dcol.reshape(n, oh, ow, kh, kw, c)
    dx = np.zeros((n, h, w, c), dtype=dcol.dtype)
    for k, out_idx, in_idx in _taps((h, w), (oh, ow), (kh, kw), (sh, sw), (dh, dw), g["pads"]):
        dx[in_idx] += d6[:, :, :, k // kw, k % kw, :][out_idx]
    return dx


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", sorted(CASES))
def test_im2col_equals_numpy_ops(emu, case, dtype):
    g = CASES[case]
    kh, kw, sh, sw, dh, dw, top, left, oh, ow = _geometry(g)
    k = emu["conv"].kernel(expr("im2col", dtype))
    x = _x(g, dtype)
    want = REF._im2col(x, (kh, kw), (sh, sw), g["pads"], (dh, dw), (oh, ow)).copy()
    work = g["n"] * oh * ow * g["c"]
    for launch, (grid, block) in LAUNCHES.items():
        for channels_first in (False, True):
            xin = np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if channels_first else x
            col = poison(want.shape, dtype)
            k(grid(work), block, _im2col_args(xin, col, g, channels_first), order="reverse" if launch == "odd" else "forward")
            assert_same_bits(col, want, f"im2col {case} {launch} cf={channels_first}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", sorted(CASES))
def test_col2im_sums_in_tap_order(emu, case, dtype):
    g = CASES[case]
    kh, kw, sh, sw, dh, dw, top, left, oh, ow = _geometry(g)
    k = emu["conv"].kernel(expr("col2im", dtype))
    m, K = g["n"] * oh * ow, kh * kw * g["c"]
    dcol = np.random.default_rng(1).standard_normal((m, K)).astype(dtype)
    want = _col2im_reference(dcol, g)
    work = g["n"] * g["h"] * g["w"] * g["c"]
    for launch, (grid, block) in LAUNCHES.items():
        for channels_first in (False, True):
            shape = (g["n"], g["c"], g["h"], g["w"]) if channels_first else want.shape
            dx = poison(shape, dtype)
            k(grid(work), block, _col2im_args(dcol, dx, g, channels_first))
            got = dx.transpose(0, 2, 3, 1) if channels_first else dx
            assert_same_bits(np.ascontiguousarray(got), want, f"col2im {case} {launch} cf={channels_first}")


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("case", ["3x3-same-s2-asym", "dilated-same", "4x4-s3-odd-pads", "stride-gt-kernel"])
def test_conv_forward_and_backward_through_kernels(emu, case, data_format):
    """Forward, backward-input and backward-kernel as CupyOps composes them (kernels + matmul)."""
    g = CASES[case]
    kh, kw, sh, sw, dh, dw, top, left, oh, ow = _geometry(g)
    dtype = np.float64
    cf = data_format == "channels_first"
    rng = np.random.default_rng(2)
    x_nhwc = _x(g, dtype, 3)
    x = np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)) if cf else x_nhwc
    kernel = rng.standard_normal((kh, kw, g["c"], g["f"])).astype(dtype)
    m, K = g["n"] * oh * ow, kh * kw * g["c"]
    im2col, col2im = emu["conv"].kernel("im2col<double>"), emu["conv"].kernel("col2im<double>")

    col = poison((m, K), dtype)
    im2col(7, 64, _im2col_args(x, col, g, cf))
    y = (col @ kernel.reshape(K, g["f"])).reshape(g["n"], oh, ow, g["f"])
    y = y.transpose(0, 3, 1, 2) if cf else y
    want_y = REF.conv2d_forward(x, kernel, g["s"], g["pads"], g["d"], data_format)
    np.testing.assert_allclose(y, want_y, **tol(dtype))

    dy = rng.standard_normal(want_y.shape).astype(dtype)
    dy2d = np.ascontiguousarray(dy.transpose(0, 2, 3, 1) if cf else dy).reshape(m, g["f"])
    dx = poison(x.shape, dtype)
    col2im(5, 32, _col2im_args(np.ascontiguousarray(dy2d @ kernel.reshape(K, g["f"]).T), dx, g, cf))
    want_dx = REF.conv2d_backward_input(dy, kernel, x.shape, g["s"], g["pads"], g["d"], data_format)
    np.testing.assert_allclose(dx, want_dx, **tol(dtype))

    dw = (col.T @ dy2d).reshape(kernel.shape)
    want_dw = REF.conv2d_backward_kernel(x, dy, kernel.shape, g["s"], g["pads"], g["d"], data_format)
    np.testing.assert_allclose(dw, want_dw, **tol(dtype))


def test_im2col_many_images_grid_stride(emu):
    """Far more elements than threads: 1 block of 32 threads covers 2*16*16*8*9 column entries."""
    g = _case(2, 16, 16, 8, (3, 3), pads=(1, 1, 1, 1))
    kh, kw, sh, sw, dh, dw, top, left, oh, ow = _geometry(g)
    x = _x(g, np.float32, 4)
    want = REF._im2col(x, (kh, kw), (sh, sw), g["pads"], (dh, dw), (oh, ow)).copy()
    col = poison(want.shape, np.float32)
    emu["conv"].kernel("im2col<float>")(1, 32, _im2col_args(x, col, g, False))
    assert_same_bits(col, want, "im2col grid=1")
