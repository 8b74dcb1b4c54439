"""Window geometry far beyond the input, reduced before any window operation runs.

A convolution or pooling whose strides, dilations, window or padding far
exceed the input (``Conv2D(strides=10**6)``, a 2**40-cell window) would
spend its time on taps that never see real input. :func:`_axis_plan` finds,
per axis, the kernel taps that do and the input rows they read;
:func:`window_plan` combines the two axes into a :class:`_Plan` (None for
ordinary geometry, which is left as it is). :class:`ReducedWindows`, mixed
into :class:`backends.ops.Ops`, runs each window operation on the reduced
geometry (cropped input, kept taps) and maps the result back, so the work is
bounded by the input and the outputs. :func:`taps` lists the window offsets
and the strided slices each reads, which the generic operations loop over.
"""

import numpy

__all__ = ["ReducedWindows", "out_size", "taps", "window_plan"]


def out_size(n, k, s, d, pad_total):
    """Output length of a window op along one axis (see module docstring)."""
    return (n + pad_total - ((k - 1) * d + 1)) // s + 1


def _tap_span(n, out, offset, s, pad_before):
    """Where one window offset lands along one axis, clipped to the real input.

    Output position ``o`` reads input position ``r = o * s + offset - pad_before``.
    Returns ``(out_slice, in_slice)`` covering the ``o`` whose ``r`` lies in
    ``[0, n)``, or None when there are none (the offset only sees padding).
    """
    o0 = max(0, -((offset - pad_before) // s))  # ceil((pad - offset) / s)
    o1 = min(out, (n - 1 + pad_before - offset) // s + 1)
    if o1 <= o0:
        return None
    r0 = o0 * s + offset - pad_before
    return slice(o0, o1), slice(r0, r0 + (o1 - o0 - 1) * s + 1, s)


def taps(in_hw, out_hw, window, strides, dilation, pads):
    """List ``(k, out_index, in_index)`` for every window offset that sees real input.

    ``k = i * kw + j`` is the cell number within the window; the indices are
    4-D NHWC slicing tuples: ``y[out_index]`` and ``x[in_index]`` line up.
    """
    (h, w), (oh, ow), (kh, kw) = in_hw, out_hw, window
    (sh, sw), (dh, dw) = strides, dilation
    top, _, left, _ = pads
    rows = [_tap_span(h, oh, i * dh, sh, top) for i in range(kh)]
    cols = [_tap_span(w, ow, j * dw, sw, left) for j in range(kw)]
    all_ = slice(None)
    taps = []
    for i, rspan in enumerate(rows):
        for j, cspan in enumerate(cols):
            if rspan is not None and cspan is not None:
                taps.append(
                    (i * kw + j, (all_, rspan[0], cspan[0], all_), (all_, rspan[1], cspan[1], all_))
                )
    return taps


def _reads_input(n, out, offset, s, pad_before):
    """Whether the tap at ``offset`` reads real input for some output (outputs ``0..out-1``)."""
    o = max(0, -((offset - pad_before) // s))
    return o < out and o * s + offset - pad_before < n


def _axis_plan(n, out, k, s, d, pad_before, pad_after):
    """Bounded geometry for one axis of a window op, or None when it needs no change.

    The caller's geometry can be far larger than the work it implies: a stride
    beyond the input (only the first window exists), a dilation on a 1-wide
    kernel, or a window/padding so large that its edge taps only ever see
    padding. Left alone, these overflow int64 strides, build huge padded
    copies or loop over every window cell. The reduction is exact: it keeps
    the taps ``t0..t1`` that see real input for some output (those outside see
    only padding), crops the input to the span they read and pads only what
    that span needs. Returns ``(t0, t1, c0, c1, s, d, pad_before, pad_after)``
    for the reduced op on ``x[c0:c1]`` with kernel taps ``t0..t1`` (same
    output length), or ``False`` when no tap ever sees real input.
    """
    if n <= 0 or k <= 0 or out <= 0:
        return None  # nothing to bound; the normal code handles (or refuses) it
    # With both edge taps real, window and padding are bounded by the input
    # and the outputs; a stride or (1-wide) dilation can still exceed the extent.
    extent = n + pad_before + pad_after
    if (
        s <= extent
        and (k > 1 or d <= extent)
        and _reads_input(n, out, 0, s, pad_before)
        and _reads_input(n, out, (k - 1) * d, s, pad_before)
    ):
        return None
    # Taps reading real input for output o: [ceil((p - o*s)/d), floor((n-1+p-o*s)/d)],
    # both ends non-increasing in o; so the last tap comes from the first output
    # with a real tap and the first tap from the last one.
    def real_taps(o):
        lo = max(0, -((o * s - pad_before) // d))
        hi = min(k - 1, (n - 1 + pad_before - o * s) // d)
        return (lo, hi) if lo <= hi else None

    first = next((t for t in map(real_taps, range(out)) if t is not None), None)
    if first is None:
        return False
    last = next(t for t in map(real_taps, range(out - 1, -1, -1)) if t is not None)
    t0, t1 = last[0], first[1]
    r_min = t0 * d - pad_before  # first and last input position the kept taps read
    r_max = (out - 1) * s + t1 * d - pad_before
    c0, c1 = max(r_min, 0), min(r_max, n - 1) + 1
    # A lone output needs no stride and a lone tap no dilation: 1 keeps them bounded.
    return t0, t1, c0, c1, (s if out > 1 else 1), (d if t1 > t0 else 1), c0 - r_min, r_max + 1 - c1


def window_plan(in_hw, window, strides, dilation, pads):
    """:func:`_axis_plan` for both axes: None when nothing needs to change, else a :class:`_Plan`."""
    h, w = int(in_hw[0]), int(in_hw[1])
    kh, kw, sh, sw = int(window[0]), int(window[1]), int(strides[0]), int(strides[1])
    dh, dw, (top, bottom, left, right) = int(dilation[0]), int(dilation[1]), [int(v) for v in pads]
    oh = out_size(h, kh, sh, dh, top + bottom)
    ow = out_size(w, kw, sw, dw, left + right)
    rows = _axis_plan(h, oh, kh, sh, dh, top, bottom)
    cols = _axis_plan(w, ow, kw, sw, dw, left, right)
    if rows is None and cols is None:
        return None
    if rows is False or cols is False:
        return _Plan(None, (oh, ow))
    # An axis that needs no change keeps its geometry (taps 0..k-1, the whole input).
    rows = rows or (0, kh - 1, 0, h, sh, dh, top, bottom)
    cols = cols or (0, kw - 1, 0, w, sw, dw, left, right)
    return _Plan((rows, cols), (oh, ow))


class _Plan:
    """A reduced window geometry (see :func:`_axis_plan`) for an output of ``out_hw``.

    ``empty``: no kernel tap or window cell ever sees real input. Otherwise the
    reduced op runs on ``x[crop]`` with the kernel taps ``taps`` (two slices),
    and ``window``, ``strides``, ``dilation``, ``pads``.
    """

    def __init__(self, axes, out_hw):
        self.out_hw = out_hw
        self.empty = axes is None
        if self.empty:
            return
        (t0, t1, c0, c1, sh, dh, top, bottom), (u0, u1, e0, e1, sw, dw, left, right) = axes
        self.taps = (slice(t0, t1 + 1), slice(u0, u1 + 1))
        self.crop = (slice(c0, c1), slice(e0, e1))
        self.in_hw = (c1 - c0, e1 - e0)
        self.window = (t1 - t0 + 1, u1 - u0 + 1)
        self.strides, self.dilation, self.pads = (sh, sw), (dh, dw), (top, bottom, left, right)


class ReducedWindows:
    """The window operations on reduced geometry (mixed into :class:`backends.ops.Ops`, whose array helpers
    ``_shape_nhwc``, ``_hw_axes``, ``xp`` and window operations they use)."""

    # Every window method first asks for a plan (see _axis_plan): for ordinary
    # geometry there is none and nothing changes; otherwise the method runs on
    # the reduced geometry (cropped input, kept taps) and its result is mapped
    # back, so the work is bounded by the input and outputs, not by the strides,
    # dilations, window or padding asked for.

    def _conv_plan(self, x_shape, kernel_shape, strides, pads, dilation, data_format):
        _, h, w, _ = self._shape_nhwc(x_shape, data_format)
        return window_plan((h, w), kernel_shape[:2], strides, dilation, pads)

    def _pool_plan(self, x_shape, pool_size, strides, pads, data_format):
        _, h, w, _ = self._shape_nhwc(x_shape, data_format)
        return window_plan((h, w), pool_size, strides, (1, 1), pads)

    def _crop(self, x, plan, data_format):
        """The part of ``x`` (layout per ``data_format``) that the reduced op reads."""
        index = [slice(None)] * 4
        a, b = self._hw_axes(data_format)
        index[a], index[b] = plan.crop
        return x[tuple(index)]

    def _cropped_shape(self, x_shape, plan, data_format):
        shape = [int(v) for v in x_shape]
        a, b = self._hw_axes(data_format)
        shape[a], shape[b] = plan.in_hw
        return tuple(shape)

    def _uncrop(self, part, x_shape, plan, data_format):
        """A gradient of the whole input from ``part``, that of the cropped input (zeros elsewhere)."""
        full = self.xp.zeros(tuple(int(v) for v in x_shape), dtype=part.dtype)
        index = [slice(None)] * 4
        a, b = self._hw_axes(data_format)
        index[a], index[b] = plan.crop
        full[tuple(index)] = part
        return full

    def _plan_out_shape(self, x_shape, plan, data_format, channels=None):
        n, _, _, c = self._shape_nhwc(x_shape, data_format)
        c = c if channels is None else int(channels)
        oh, ow = plan.out_hw
        return (n, c, oh, ow) if data_format == "channels_first" else (n, oh, ow, c)

    @staticmethod
    def _index_dtype(pool_size):
        """int32 for window cell numbers, int64 for windows too large for it."""
        return numpy.dtype("int32") if int(pool_size[0]) * int(pool_size[1]) <= 2**31 else numpy.dtype("int64")

    @staticmethod
    def _numbered_in_plan(pool_size):
        """Whether cells keep numbers of the reduced window: only for windows of 2**63 cells
        or more, which int64 cannot number (forward and backward agree: both reduce alike)."""
        return int(pool_size[0]) * int(pool_size[1]) >= 2**63

    def _index_from_plan(self, index, plan, pool_size, picks_none=False):
        """Cell numbers in the reduced window -> numbers in the caller's window (-1 stays -1
        where ``picks_none``: stochastic pooling)."""
        xp = self.xp
        idx = self.asarray(index).astype(numpy.int64)  # int64 arithmetic: pw may exceed int32
        if self._numbered_in_plan(pool_size):
            return idx
        # (i', j') -> (i' + t0, j' + u0): k = k' + t0*pw + u0 + i' * (pw - pw').
        pw, pw_r = int(pool_size[1]), plan.window[1]
        full = idx + (plan.taps[0].start * pw + plan.taps[1].start)
        if pw != pw_r:
            full += (idx // pw_r) * (pw - pw_r)
        if picks_none:
            full = xp.where(idx < 0, -1, full)
        return full.astype(self._index_dtype(pool_size), copy=False)

    def _index_to_plan(self, index, plan, pool_size):
        """Inverse of :meth:`_index_from_plan`; cells outside the reduced window (which only
        ever hold padding, so route nothing) become -1."""
        xp = self.xp
        idx = self.asarray(index).astype(numpy.int64)
        (ph_r, pw_r), pw = plan.window, int(pool_size[1])
        if self._numbered_in_plan(pool_size):
            i, j = idx // pw_r, idx % pw_r
        else:
            i, j = idx // pw - plan.taps[0].start, idx % pw - plan.taps[1].start
        inside = (idx >= 0) & (i >= 0) & (i < ph_r) & (j >= 0) & (j < pw_r)
        return xp.where(inside, i * pw_r + j, -1).astype(numpy.int32)

    def _padding_only_windows(self, plan, data_format):
        """Bool, broadcastable to y: windows of the reduced geometry without a real cell."""
        xp = self.xp

        def axis_real(n, out, k, s, pad):
            start = xp.arange(out, dtype=numpy.int64) * s - pad
            return (start < n) & (start + k > 0)

        rows = axis_real(plan.in_hw[0], plan.out_hw[0], plan.window[0], plan.strides[0], plan.pads[0])
        cols = axis_real(plan.in_hw[1], plan.out_hw[1], plan.window[1], plan.strides[1], plan.pads[2])
        none = ~(rows[:, None] & cols[None, :])
        return none[None, None] if data_format == "channels_first" else none[None, :, :, None]

    def _reduced_conv2d_forward(self, x, kernel, strides, pads, dilation, data_format):
        """:meth:`conv2d_forward` on the bounded geometry; None when there is nothing to reduce."""
        plan = self._conv_plan(x.shape, kernel.shape, strides, pads, dilation, data_format)
        if plan is None:
            return None
        if plan.empty:  # every tap reads padding: zeros
            return self.xp.zeros(self._plan_out_shape(x.shape, plan, data_format, kernel.shape[3]), dtype=x.dtype)
        return self.conv2d_forward(
            self._crop(x, plan, data_format), kernel[plan.taps], plan.strides, plan.pads, plan.dilation, data_format
        )

    def _reduced_conv2d_backward_input(self, dy, kernel, x_shape, strides, pads, dilation, data_format):
        plan = self._conv_plan(x_shape, kernel.shape, strides, pads, dilation, data_format)
        if plan is None:
            return None
        if plan.empty:
            return self.xp.zeros(tuple(int(v) for v in x_shape), dtype=dy.dtype)
        part = self.conv2d_backward_input(
            dy, kernel[plan.taps], self._cropped_shape(x_shape, plan, data_format),
            plan.strides, plan.pads, plan.dilation, data_format,
        )
        return self._uncrop(part, x_shape, plan, data_format)

    def _reduced_conv2d_backward_kernel(self, x, dy, kernel_shape, strides, pads, dilation, data_format):
        plan = self._conv_plan(x.shape, kernel_shape, strides, pads, dilation, data_format)
        if plan is None:
            return None
        kernel_shape = tuple(int(v) for v in kernel_shape)
        if plan.empty:  # dropped taps only ever multiply padding: zero gradient
            return self.xp.zeros(kernel_shape, dtype=x.dtype)
        part = self.conv2d_backward_kernel(
            self._crop(x, plan, data_format), dy, plan.window + kernel_shape[2:],
            plan.strides, plan.pads, plan.dilation, data_format,
        )
        full = self.xp.zeros(kernel_shape, dtype=part.dtype)
        full[plan.taps] = part
        return full

    def _reduced_max_pool2d_forward(self, x, pool_size, strides, pads, data_format):
        plan = self._pool_plan(x.shape, pool_size, strides, pads, data_format)
        if plan is None:
            return None
        # The argmax of a window of padding only: its last cell (none when it has no int64 number).
        last = -1 if self._numbered_in_plan(pool_size) else int(pool_size[0]) * int(pool_size[1]) - 1
        shape = self._plan_out_shape(x.shape, plan, data_format)
        if plan.empty:
            y = self.xp.full(shape, -numpy.inf, dtype=x.dtype)
            return y, self.xp.full(shape, last, dtype=self._index_dtype(pool_size))
        y, arg = self.max_pool2d_forward(
            self._crop(x, plan, data_format), plan.window, plan.strides, plan.pads, data_format
        )
        arg = self._index_from_plan(arg, plan, pool_size)
        if any(plan.pads):
            arg = self.xp.where(self._padding_only_windows(plan, data_format), last, arg).astype(arg.dtype)
        return y, arg

    def _reduced_route(self, backward, dy, index, x_shape, pool_size, strides, pads, data_format):
        """Max or stochastic pooling's backward (``backward``) on the bounded geometry."""
        plan = self._pool_plan(x_shape, pool_size, strides, pads, data_format)
        if plan is None:
            return None
        if plan.empty:
            return self.xp.zeros(tuple(int(v) for v in x_shape), dtype=self.asarray(dy).dtype)
        index = self._index_to_plan(index, plan, pool_size)
        x_shape_r = self._cropped_shape(x_shape, plan, data_format)
        part = backward(dy, index, x_shape_r, plan.window, plan.strides, plan.pads, data_format)
        return self._uncrop(part, x_shape, plan, data_format)

    def _reduced_avg_pool2d_forward(self, x, pool_size, strides, pads, data_format):
        # Only padded cells are dropped, and average pooling counts real cells only.
        plan = self._pool_plan(x.shape, pool_size, strides, pads, data_format)
        if plan is None:
            return None
        if plan.empty:
            return self.xp.zeros(self._plan_out_shape(x.shape, plan, data_format), dtype=x.dtype)
        return self.avg_pool2d_forward(
            self._crop(x, plan, data_format), plan.window, plan.strides, plan.pads, data_format
        )

    def _reduced_avg_pool2d_backward(self, dy, x_shape, pool_size, strides, pads, data_format):
        plan = self._pool_plan(x_shape, pool_size, strides, pads, data_format)
        if plan is None:
            return None
        if plan.empty:
            return self.xp.zeros(tuple(int(v) for v in x_shape), dtype=self.asarray(dy).dtype)
        part = self.avg_pool2d_backward(
            dy, self._cropped_shape(x_shape, plan, data_format), plan.window, plan.strides, plan.pads, data_format
        )
        return self._uncrop(part, x_shape, plan, data_format)

    def _reduced_stochastic_pool2d_forward(self, x, uniforms, pool_size, strides, pads, data_format):
        plan = self._pool_plan(x.shape, pool_size, strides, pads, data_format)
        if plan is None:
            return None
        shape = self._plan_out_shape(x.shape, plan, data_format)
        if plan.empty:  # a window of padding only sums to 0: y 0, no pick
            return self.xp.zeros(shape, dtype=x.dtype), self.xp.full(shape, -1, dtype=numpy.int32)
        y, index = self.stochastic_pool2d_forward(
            self._crop(x, plan, data_format), uniforms, plan.window, plan.strides, plan.pads, data_format
        )
        return y, self._index_from_plan(index, plan, pool_size, picks_none=True)

    def _reduced_stochastic_pool2d_inference_forward(self, x, pool_size, strides, pads, data_format):
        plan = self._pool_plan(x.shape, pool_size, strides, pads, data_format)
        if plan is None:
            return None
        if plan.empty:
            return self.xp.zeros(self._plan_out_shape(x.shape, plan, data_format), dtype=x.dtype)
        return self.stochastic_pool2d_inference_forward(
            self._crop(x, plan, data_format), plan.window, plan.strides, plan.pads, data_format
        )

    def _reduced_stochastic_pool2d_inference_backward(self, dy, x, pool_size, strides, pads, data_format):
        plan = self._pool_plan(x.shape, pool_size, strides, pads, data_format)
        if plan is None:
            return None
        if plan.empty:
            return self.xp.zeros(tuple(x.shape), dtype=x.dtype)
        part = self.stochastic_pool2d_inference_backward(
            dy, self._crop(x, plan, data_format), plan.window, plan.strides, plan.pads, data_format
        )
        return self._uncrop(part, x.shape, plan, data_format)
