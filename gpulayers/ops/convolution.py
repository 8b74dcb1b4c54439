"""Convolution and pooling of the nn family, through the backend's hot paths (RawKernels, NumPy fast paths).

They take 1-D inputs ``(N, L, C)`` and 2-D inputs ``(N, H, W, C)`` (or
channels first), with kernels in Keras's layout ``(kh, kw, in, out)``
(``(kh, kw, out, in)`` for ``conv_transpose``); 1-D runs through the 2-D
backend path with a unit axis.
"""

import builtins

import numpy as np

from backends import get_ops
from gpulayers import config
from gpulayers.argument_validation import standardize_padding, standardize_tuple
from gpulayers.autodiff import record
from gpulayers.ops import numpy as numpy_ops
from gpulayers.ops.core import cast, convert_to_tensor, xp
from gpulayers.ops.elementwise import _float
from gpulayers.window_geometry import conv_output_length, window_pads

__all__ = [
    "average_pool", "conv", "conv_transpose", "depthwise_conv", "max_pool",
]


def _spatial_rank(name, x):
    n = x.ndim - 2
    if n not in (1, 2):
        raise ValueError(
            f"{name} supports only 1-D and 2-D inputs: rank 3 (batch, length, channels) or rank 4 "
            f"(batch, height, width, channels). Received: inputs.shape={x.shape}"
        )
    return n


def _lift(x, data_format):
    """A 1-D input as 2-D with a unit height axis (differentiable reshape)."""
    shape = x.shape
    if data_format == "channels_last":
        return numpy_ops.reshape(x, (shape[0], 1, shape[1], shape[2]))
    return numpy_ops.reshape(x, (shape[0], shape[1], 1, shape[2]))


def _drop(y, data_format):
    shape = y.shape
    if data_format == "channels_last":
        return numpy_ops.reshape(y, (shape[0], shape[2], shape[3]))
    return numpy_ops.reshape(y, (shape[0], shape[1], shape[3]))


def _geometry(x4, window, strides, dilation, padding, data_format, name):
    h_ax, w_ax = (1, 2) if data_format == "channels_last" else (2, 3)
    h, w = x4.shape[h_ax], x4.shape[w_ax]
    out = [conv_output_length(n, k, s, d, padding) for n, k, s, d in zip((h, w), window, strides, dilation)]
    if x4.size and (out[0] < 1 or out[1] < 1):
        raise ValueError(
            f"The {name} operation resulted in an empty output: the input is too small for the window, strides, "
            f"dilation and padding. Received: inputs spatial shape={(h, w)}, window={tuple(window)}, "
            f"strides={tuple(strides)}, dilation_rate={tuple(dilation)}, padding={padding!r}"
        )
    return window_pads((h, w), window, strides, dilation, padding)


def _window_dtype(*tensors):
    kinds = [t.data.dtype for t in tensors]
    if builtins.all(d.kind == "f" for d in kinds):
        return np.result_type(*kinds)
    floats = [d for d in kinds if d.kind == "f"]
    return np.result_type(*floats) if floats else np.dtype(config.floatx())


def _conv2d(x, kernel, strides, padding, dilation, data_format):
    a = xp().ascontiguousarray(x.data)
    k = xp().ascontiguousarray(kernel.data)
    pads = _geometry(x, k.shape[:2], strides, dilation, padding, data_format, "convolution")
    ops = get_ops()
    y = ops.conv2d_forward(a, k, strides, pads, dilation, data_format)

    def backward(g, needs):
        g = xp().ascontiguousarray(g)
        dx = ops.conv2d_backward_input(g, k, tuple(a.shape), strides, pads, dilation, data_format) if needs[0] else None
        dk = ops.conv2d_backward_kernel(a, g, tuple(k.shape), strides, pads, dilation, data_format) if needs[1] else None
        return dx, dk

    return record("conv", y, (x, kernel), backward)


def _conv_setup(name, inputs, kernel, strides, padding, data_format, dilation_rate):
    x = convert_to_tensor(inputs)
    k = convert_to_tensor(kernel)
    n = _spatial_rank(name, x)
    if k.ndim != n + 2:
        raise ValueError(
            f"Invalid value for `kernel`: a {n}-D {name} takes a kernel of rank {n + 2} "
            f"(spatial dims, in, out). Received: kernel.shape={k.shape}"
        )
    data_format = config.standardize_data_format(data_format)
    padding = standardize_padding(padding)
    strides = standardize_tuple(strides, n, "strides")
    dilation = standardize_tuple(dilation_rate, n, "dilation_rate")
    dtype = _window_dtype(x, k)
    x, k = cast(x, dtype), cast(k, dtype)
    if n == 1:
        x = _lift(x, data_format)
        k = numpy_ops.reshape(k, (1,) + k.shape)
        strides, dilation = (1,) + strides, (1,) + dilation
    return n, x, k, strides, padding, dilation, data_format


def conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
    """1-D or 2-D cross-correlation (Keras's ``ops.conv``), without bias.

    ``kernel``: ``(k, in, out)`` or ``(kh, kw, in, out)``. When the input has
    a multiple of the kernel's input channels, the convolution is grouped
    (``channels // in`` groups, ``out`` divisible by them). 3-D is refused.
    """
    n, x, k, strides, padding, dilation, data_format = _conv_setup(
        "conv", inputs, kernel, strides, padding, data_format, dilation_rate
    )
    c_ax = 3 if data_format == "channels_last" else 1
    channels, k_in, k_out = x.shape[c_ax], k.shape[2], k.shape[3]
    if k_in < 1 or channels % k_in:
        raise ValueError(
            "The number of input channels must be evenly divisible by the kernel's in_channels. "
            f"Received input channels {channels} and kernel in_channels {k_in}."
        )
    groups = channels // k_in
    if groups == 1:
        y = _conv2d(x, k, strides, padding, dilation, data_format)
    else:
        if k_out % groups:
            raise ValueError(
                f"Invalid value for `kernel`: a grouped convolution ({groups} groups) needs out_channels divisible "
                f"by the groups. Received: kernel.shape={k.shape}"
            )
        step = k_out // groups
        parts = []
        for i in range(groups):
            index = [builtins.slice(None)] * 4
            index[c_ax] = builtins.slice(i * k_in, (i + 1) * k_in)
            xi = numpy_ops.get_item(x, tuple(index))
            ki = numpy_ops.get_item(k, (Ellipsis, builtins.slice(i * step, (i + 1) * step)))
            parts.append(_conv2d(xi, ki, strides, padding, dilation, data_format))
        y = numpy_ops.concatenate(parts, axis=c_ax)
    return _drop(y, data_format) if n == 1 else y


def transpose_geometry(n, kernel, stride, dilation, padding, output_padding):
    """One axis of Keras's transposed convolution: ``(pad_before, pad_after, out)``.

    Keras (as JAX) spreads the input ``stride`` apart, pads it by ``(lo, hi)``
    and correlates it with the flipped kernel; ``out`` is that result's
    length. The same numbers read the other way: the transposed convolution
    is the input gradient of a convolution of an ``out``-long input, padded by
    ``(span - 1 - lo, span - 1 - hi)``, which gives ``n`` outputs. The pad
    before is never negative; the pad after is negative when the output
    padding reaches past the last position any input touches (those
    trailing positions are zero).
    """
    span = (kernel - 1) * dilation + 1
    if padding == "valid":
        extra = max(span, stride) - span if output_padding is None else output_padding
        lo, hi = span - 1, span - 1 + extra
    else:
        total = stride + span - 2 if output_padding is None else span + span % 2 - 2 + output_padding
        lo = min(total // 2 + total % 2, span - 1)
        hi = total - lo
    return span - 1 - lo, span - 1 - hi, (n - 1) * stride + lo + hi - span + 2


def conv_transpose_output_length(n, kernel, stride, dilation, padding, output_padding):
    """Keras's output length of a transposed convolution along one axis (None stays None)."""
    if n is None:
        return None
    return transpose_geometry(n, kernel, stride, dilation, padding, output_padding)[2]


def conv_transpose_arrays(a, k, strides, padding, output_padding, dilation, data_format):
    """The 2-D transposed convolution on raw C-order arrays: ``(y, backward)``, where
    ``backward(g, needs) -> (dx, dk)`` (None where ``needs`` says so).

    ``a``: (N, H, W, C) or (N, C, H, W); ``k``: (kh, kw, filters, C);
    ``strides``, ``dilation``: pairs; ``output_padding``: a pair of ints or
    Nones. Shared by :func:`conv_transpose` and the Conv2DTranspose layer.
    """
    np_ = xp()
    h_ax, w_ax = (1, 2) if data_format == "channels_last" else (2, 3)
    c_ax = 3 if data_format == "channels_last" else 1
    geometry = [
        transpose_geometry(a.shape[ax], k.shape[i], strides[i], dilation[i], padding, output_padding[i])
        for i, ax in enumerate((h_ax, w_ax))
    ]
    full = [a.shape[0], 0, 0, 0]
    full[c_ax] = k.shape[2]
    full[h_ax], full[w_ax] = geometry[0][2], geometry[1][2]
    full = tuple(full)
    if min(full) == 0 or min(a.shape) == 0:
        # An empty input or output ('same' with output_padding can give a 0-long axis, as in Keras).
        def empty(g, needs):
            return (np_.zeros(a.shape, dtype=g.dtype) if needs[0] else None,
                    np_.zeros(k.shape, dtype=g.dtype) if needs[1] else None)

        return np_.zeros(full, dtype=a.dtype), empty
    # Trailing positions no input reaches (a negative pad after) are zeros, computed outside the conv.
    pads = (geometry[0][0], max(geometry[0][1], 0), geometry[1][0], max(geometry[1][1], 0))
    tails = (max(-geometry[0][1], 0), max(-geometry[1][1], 0))
    reached = list(full)
    reached[h_ax] -= tails[0]
    reached[w_ax] -= tails[1]
    reached = tuple(reached)
    ops = get_ops()
    y = ops.conv2d_backward_input(a, k, reached, strides, pads, dilation, data_format)
    if any(tails):
        grown = np_.zeros(full, dtype=y.dtype)
        grown[tuple(builtins.slice(0, n) for n in reached)] = y
        y = grown

    def backward(g, needs):
        if any(tails):
            g = g[tuple(builtins.slice(0, n) for n in reached)]
        g = np_.ascontiguousarray(g)
        dx = ops.conv2d_forward(g, k, strides, pads, dilation, data_format) if needs[0] else None
        dk = ops.conv2d_backward_kernel(g, a, tuple(k.shape), strides, pads, dilation, data_format) if needs[1] else None
        return dx, dk

    return y, backward


def _conv_transpose2d(x, kernel, strides, padding, output_padding, dilation, data_format):
    a = xp().ascontiguousarray(x.data)
    k = xp().ascontiguousarray(kernel.data)
    y, backward = conv_transpose_arrays(a, k, strides, padding, output_padding, dilation, data_format)
    return record("conv_transpose", y, (x, kernel), backward)


def conv_transpose(inputs, kernel, strides=1, padding="valid", output_padding=None, data_format=None, dilation_rate=1):
    """1-D or 2-D transposed convolution (Keras's ``ops.conv_transpose``), without bias.

    ``kernel``: ``(k, out, in)`` or ``(kh, kw, out, in)``, ``in`` matching the
    input's channels. The output length along each axis is Keras's:
    ``'valid'``: ``(n - 1) * stride + span + output_padding`` (output_padding
    defaulting to ``max(span, stride) - span``); ``'same'``: ``n * stride``,
    or ``(n - 1) * stride + span % 2 + output_padding`` when output_padding
    is given, where ``span = (k - 1) * dilation + 1``. It runs on the
    backend's convolution hot paths: the forward pass is a convolution's
    input gradient, the input gradient a convolution, the kernel gradient a
    convolution's kernel gradient.
    """
    n, x, k, strides, padding, dilation, data_format = _conv_setup(
        "conv_transpose", inputs, kernel, strides, padding, data_format, dilation_rate
    )
    channels = x.shape[3 if data_format == "channels_last" else 1]
    if k.shape[3] != channels:
        raise ValueError(
            "The number of input channels must match the kernel's input channels. Received: input "
            f"channels={channels}, kernel input channels={k.shape[3]}, data_format='{data_format}'."
        )
    if output_padding is None:
        extra = (None,) * n
    else:
        extra = standardize_tuple(output_padding, n, "output_padding", allow_zero=True)
    if n == 1:
        extra = (None,) + extra  # the unit axis (kernel 1, stride 1) stays 1 long
    y = _conv_transpose2d(x, k, strides, padding, extra, dilation, data_format)
    return _drop(y, data_format) if n == 1 else y


def _depthwise2d(x, kernel, strides, padding, dilation, data_format):
    np_ = xp()
    a = x.data
    k = kernel.data
    kh, kw, c, m = k.shape
    pads = _geometry(x, (kh, kw), strides, dilation, padding, data_format, "depthwise convolution")
    first = data_format == "channels_first"
    an = a.transpose(0, 2, 3, 1) if first else a
    nb, h, w, _ = an.shape
    top, bottom, left, right = pads
    oh = conv_output_length(h, kh, strides[0], dilation[0], padding)
    ow = conv_output_length(w, kw, strides[1], dilation[1], padding)
    padded = np_.pad(an, ((0, 0), (top, bottom), (left, right), (0, 0)))

    def tap(i, j):
        r, s = i * dilation[0], j * dilation[1]
        return (
            builtins.slice(None),
            builtins.slice(r, r + (oh - 1) * strides[0] + 1, strides[0]),
            builtins.slice(s, s + (ow - 1) * strides[1] + 1, strides[1]),
        )

    # Multiplier-major (M, N, OH, OW, C): every tap is one multiply-add over
    # contiguous channels (a trailing axis of size M is several times slower).
    ym = np_.zeros((m, nb, oh, ow, c), dtype=a.dtype)
    for i in range(kh):
        for j in range(kw):
            xs = padded[tap(i, j)]
            for q in range(m):
                ym[q] += xs * k[i, j, :, q]
    y = np_.moveaxis(ym, 0, -1).reshape(nb, oh, ow, c * m)  # output channel c * m + q
    y = np_.ascontiguousarray(y.transpose(0, 3, 1, 2) if first else y)

    def backward(g, needs):
        gn = g.transpose(0, 2, 3, 1) if first else g
        gm = np_.ascontiguousarray(np_.moveaxis(gn.reshape(nb, oh, ow, c, m), -1, 0))
        dx = dk = None
        if needs[0]:
            dpad = np_.zeros(padded.shape, dtype=g.dtype)
            for i in range(kh):
                for j in range(kw):
                    acc = gm[0] * k[i, j, :, 0]
                    for q in range(1, m):
                        acc += gm[q] * k[i, j, :, q]
                    dpad[tap(i, j)] += acc
            dx = dpad[:, top : top + h, left : left + w, :]
            dx = np_.ascontiguousarray(dx.transpose(0, 3, 1, 2) if first else dx)
        if needs[1]:
            dk = np_.zeros(k.shape, dtype=g.dtype)
            for i in range(kh):
                for j in range(kw):
                    xs = padded[tap(i, j)]
                    for q in range(m):
                        dk[i, j, :, q] = (xs * gm[q]).sum(axis=(0, 1, 2))
        return dx, dk

    return record("depthwise_conv", y, (x, kernel), backward)


def depthwise_conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
    """1-D or 2-D depthwise convolution: each input channel convolved with its own ``multiplier`` filters.

    ``kernel``: ``(kh, kw, channels, multiplier)`` (or ``(k, channels,
    multiplier)``); output channel ``c * multiplier + m`` (TensorFlow's order).
    """
    n, x, k, strides, padding, dilation, data_format = _conv_setup(
        "depthwise_conv", inputs, kernel, strides, padding, data_format, dilation_rate
    )
    channels = x.shape[3 if data_format == "channels_last" else 1]
    if k.shape[2] != channels:
        raise ValueError(
            "The number of input channels must match the kernel's in_channels for a depthwise convolution. "
            f"Received input channels {channels} and kernel.shape={k.shape}"
        )
    y = _depthwise2d(x, k, strides, padding, dilation, data_format)
    return _drop(y, data_format) if n == 1 else y


def _pool(kind, inputs, pool_size, strides, padding, data_format):
    x = _float(inputs)
    name = "max_pool" if kind == "max" else "average_pool"
    n = _spatial_rank(name, x)
    data_format = config.standardize_data_format(data_format)
    padding = standardize_padding(padding)
    pool = standardize_tuple(pool_size, n, "pool_size")
    strides = pool if strides is None else standardize_tuple(strides, n, "strides")
    if n == 1:
        x = _lift(x, data_format)
        pool, strides = (1,) + pool, (1,) + strides
    a = xp().ascontiguousarray(x.data)
    pads = _geometry(x, pool, strides, (1, 1), padding, data_format, "pooling")
    ops = get_ops()
    if kind == "max":
        y, arg = ops.max_pool2d_forward(a, pool, strides, pads, data_format)
        y = record(
            "max_pool", y, (x,),
            lambda g, needs: (ops.max_pool2d_backward(xp().ascontiguousarray(g), arg, tuple(a.shape), pool, strides, pads, data_format),),
        )
    else:
        y = ops.avg_pool2d_forward(a, pool, strides, pads, data_format)
        y = record(
            "average_pool", y, (x,),
            lambda g, needs: (ops.avg_pool2d_backward(xp().ascontiguousarray(g), tuple(a.shape), pool, strides, pads, data_format),),
        )
    return _drop(y, data_format) if n == 1 else y


def max_pool(inputs, pool_size, strides=None, padding="valid", data_format=None):
    """1-D or 2-D max pooling (``strides`` default to ``pool_size``; padded cells never win).

    The gradient goes to each window's first maximum.
    """
    return _pool("max", inputs, pool_size, strides, padding, data_format)


def average_pool(inputs, pool_size, strides=None, padding="valid", data_format=None):
    """1-D or 2-D average pooling; ``'same'`` windows divide by their count of real cells, as Keras."""
    return _pool("average", inputs, pool_size, strides, padding, data_format)
