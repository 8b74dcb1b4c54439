"""Generic hot-path operations, written only against an array namespace ``xp``.

:class:`Ops` uses nothing but functions that NumPy and CuPy share
(``as_strided``, ``copyto``, ``matmul``, ufuncs with ``out=``, slicing), so
:class:`backends.numpy_ops.NumpyOps` and :class:`backends.cupy_ops.CupyOps`
both run it; each subclass only sets ``xp`` and overrides what it can do
faster.

Conventions shared by every method:

* Images are ``"channels_last"`` (N, H, W, C) or ``"channels_first"``
  (N, C, H, W). Internally everything runs in NHWC: channels_first inputs are
  transposed (a view) on the way in and outputs are transposed back and made
  C-contiguous on the way out.
* ``strides=(sh, sw)``, ``dilation=(dh, dw)``, ``pool_size=(ph, pw)`` and
  ``pads=(top, bottom, left, right)`` are ints, already validated by the caller.
  The output size is ``(n + pad_total - ((k - 1) * d + 1)) // s + 1``.
* Results keep the input dtype, and arithmetic runs in it (float32 stays
  float32). Batch normalization is the one exception: float16 inputs are
  normalised in float32, as Keras does, and the results cast back.
* Window cells are numbered row-major, ``i * pw + j`` (int32 indices, int64
  for windows of over 2**31 cells; windows of 2**63 cells or more, which int64
  cannot number, number the cells of their reduced window, see ``backends/window_plans.py``).

Every window operation first reduces geometry whose strides, dilations,
window or padding far exceed the input (``backends/window_plans.py``: the taps that see
real input, the input they read); ordinary geometry is left as it is.

Most window operations loop over the kernel "taps" (window offsets) in Python
and do one whole-array operation per tap on strided slices. That needs no
padded copy and no per-window temporaries, and visiting taps in window order
gives first-max tie-breaking and running sums for free.
"""

import numpy

from backends.window_plans import ReducedWindows, out_size, taps as _taps

__all__ = ["Ops", "out_size"]

_FLOAT16 = numpy.dtype("float16")


class Ops(ReducedWindows):
    """Backend operations on arrays of namespace ``xp`` (set by subclasses)."""

    name = "generic"
    xp = None

    # ------------------------------------------------------------------ arrays
    def asarray(self, x, dtype=None):
        """Convert ``x`` to an ``xp`` array, cast to ``dtype`` if given; no copy when already right."""
        xp = self.xp
        if isinstance(x, xp.ndarray):
            if dtype is None or x.dtype == numpy.dtype(dtype):
                return x
            return x.astype(dtype)
        return xp.asarray(x, dtype=dtype)

    def set_tf32(self, enabled):
        """TF32 for float32 matrix products (:func:`backends.set_tf32`): the CPU has none, so nothing to do."""

    def to_numpy(self, x):
        """Return ``x`` as a ``numpy.ndarray``."""
        return numpy.asarray(x)

    def rng(self, seed):
        """A random generator for this ``xp``, seeded with the int ``seed``."""
        return self.xp.random.default_rng(seed)

    #: Whether :meth:`capture_graph` can record work for replay (CupyOps: CUDA graphs).
    supports_graphs = False

    def capture_graph(self, fn):
        """``(graph, fn())`` with ``fn``'s device work recorded for ``graph.launch()`` to replay (see
        ``backends/cuda_graphs.py``); only where :attr:`supports_graphs`."""
        raise NotImplementedError(f"{type(self).__name__} has no graph capture")

    def refuse_host_random(self):
        """Raise where a draw from a host-seeded generator (:meth:`rng`) cannot be used now (CupyOps: while a
        CUDA graph is being captured, whose replays would repeat the numbers); nothing here."""

    def random_stream(self, seed):
        """A layer's own source of random numbers for :meth:`uniform` and :meth:`dropout_random`, seeded
        with the int ``seed``: here :meth:`rng`'s generator (CupyOps keeps a counter-based stream on the
        device instead)."""
        return self.rng(seed)

    def uniform(self, rng, shape, dtype):
        """Uniform floats in [0, 1) of ``shape`` and ``dtype`` drawn from ``rng`` (or a :meth:`random_stream`)."""
        dtype = numpy.dtype(dtype)
        draw_dtype = dtype if dtype.itemsize >= 4 else numpy.dtype("float32")
        if hasattr(rng, "random"):  # numpy/cupy Generator
            u = rng.random(shape, dtype=draw_dtype)
        else:  # cupy RandomState
            u = rng.random_sample(shape, dtype=draw_dtype)
        return self._uniform_as(u, dtype)

    def _uniform_as(self, u, dtype):
        """Uniforms drawn in float32 or float64 as ``dtype``: rounding to float16 can turn values just
        below 1 into 1.0, so they are kept below it."""
        if u.dtype == dtype:
            return u
        return self.xp.minimum(u.astype(dtype), numpy.nextafter(dtype.type(1), dtype.type(0)))

    # ---------------------------------------------------------------- layouts
    @staticmethod
    def _to_nhwc(x, data_format):
        return x.transpose(0, 2, 3, 1) if data_format == "channels_first" else x

    def _from_nhwc(self, y, data_format):
        if data_format == "channels_first":
            return self.xp.ascontiguousarray(y.transpose(0, 3, 1, 2))
        return y

    @staticmethod
    def _shape_nhwc(shape, data_format):
        n, a, b, c = (int(v) for v in shape)
        return (n, b, c, a) if data_format == "channels_first" else (n, a, b, c)

    def _pad(self, x, pads):
        """Zero-pad an NHWC array spatially; returns ``x`` itself when there is no padding."""
        top, bottom, left, right = pads
        if not (top or bottom or left or right):
            return x
        n, h, w, c = x.shape
        out = self.xp.zeros((n, h + top + bottom, w + left + right, c), dtype=x.dtype)
        out[:, top : top + h, left : left + w, :] = x
        return out

    # ------------------------------------------------------------ convolution
    def _new_col(self, shape, dtype):
        """Buffer for im2col; NumpyOps reuses one to skip page faults."""
        return self.xp.empty(shape, dtype=dtype)

    def _im2col(self, x, window, strides, pads, dilation, out_hw):
        """Patches of NHWC ``x`` as a C-contiguous (N*OH*OW, KH*KW*C) matrix.

        Column order (i, j, c) matches a Keras kernel (kh, kw, cin, cout)
        reshaped to (kh*kw*cin, cout), so no kernel transpose is needed.
        """
        xp = self.xp
        n, h, w, c = x.shape
        (kh, kw), (sh, sw), (dh, dw), (oh, ow) = window, strides, dilation, out_hw
        m = n * oh * ow
        if kh == kw == 1 and not any(pads):
            # 1x1: the patches are the (strided) pixels themselves.
            return xp.ascontiguousarray(x[:, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw, :]).reshape(m, c)
        xpad = self._pad(x, pads)
        s_n, s_h, s_w, s_c = xpad.strides
        view = xp.lib.stride_tricks.as_strided(
            xpad, shape=(n, oh, ow, kh, kw, c), strides=(s_n, s_h * sh, s_w * sw, s_h * dh, s_w * dw, s_c)
        )
        # Copy into a contiguous buffer: reshaping the overlapping view would
        # copy too, but much more slowly.
        col = self._new_col((n, oh, ow, kh, kw, c), x.dtype)
        xp.copyto(col, view)
        return col.reshape(m, kh * kw * c)

    def conv2d_forward(self, x, kernel, strides, pads, dilation, data_format):
        """2-D cross-correlation, no bias.

        Args:
            x: (N, H, W, C) or (N, C, H, W) per ``data_format``.
            kernel: (KH, KW, C, F), Keras layout.
        Returns:
            y: (N, OH, OW, F) or (N, F, OH, OW).
        """
        reduced = self._reduced_conv2d_forward(x, kernel, strides, pads, dilation, data_format)
        if reduced is not None:
            return reduced
        x = self._to_nhwc(x, data_format)
        n, h, w, c = x.shape
        kh, kw, _, f = kernel.shape
        oh = out_size(h, kh, strides[0], dilation[0], pads[0] + pads[1])
        ow = out_size(w, kw, strides[1], dilation[1], pads[2] + pads[3])
        col = self._im2col(x, (kh, kw), strides, pads, dilation, (oh, ow))
        y = self._mm(col, kernel.astype(x.dtype, copy=False).reshape(kh * kw * c, f))
        return self._from_nhwc(y.reshape(n, oh, ow, f), data_format)

    def conv2d_forward_train(self, x, kernel, strides, pads, dilation, data_format):
        """:meth:`conv2d_forward` in a training step: ``(y, patches)``.

        ``patches`` is what :meth:`conv2d_backward_kernel` can reuse instead of
        rebuilding the im2col matrix from ``x``, or None where the backend keeps
        nothing (here; CupyOps keeps the matrix when one im2col chunk held the
        whole batch).
        """
        return self.conv2d_forward(x, kernel, strides, pads, dilation, data_format), None

    def conv2d_backward_input(self, dy, kernel, x_shape, strides, pads, dilation, data_format):
        """Gradient of :meth:`conv2d_forward` with respect to ``x``.

        One GEMM per kernel tap (``dy2d @ kernel[i, j].T``), added into the
        input positions that tap touched. This never builds the (M, KH*KW*C)
        patch-gradient matrix.

        Args:
            dy: gradient of y, layout per ``data_format``.
            x_shape: the 4-tuple shape of x, in ``data_format``.
        Returns:
            dx with shape ``x_shape``.
        """
        reduced = self._reduced_conv2d_backward_input(dy, kernel, x_shape, strides, pads, dilation, data_format)
        if reduced is not None:
            return reduced
        xp = self.xp
        dy = self._to_nhwc(dy, data_format)
        n, h, w, c = self._shape_nhwc(x_shape, data_format)
        kh, kw, _, f = kernel.shape
        _, oh, ow, _ = dy.shape
        kernel = kernel.astype(dy.dtype, copy=False)
        dy2d = xp.ascontiguousarray(dy).reshape(n * oh * ow, f)
        if kh == kw == 1 and tuple(strides) == (1, 1) and not any(pads):
            dx = self._mm(dy2d, kernel[0, 0].T).reshape(n, h, w, c)
            return self._from_nhwc(dx, data_format)
        dx = xp.zeros((n, h, w, c), dtype=dy.dtype)
        for k, out_idx, in_idx in _taps((h, w), (oh, ow), (kh, kw), strides, dilation, pads):
            part = self._mm(dy2d, kernel[k // kw, k % kw].T).reshape(n, oh, ow, c)
            dx[in_idx] += part[out_idx]
        return self._from_nhwc(dx, data_format)

    def conv2d_backward_kernel(self, x, dy, kernel_shape, strides, pads, dilation, data_format, patches=None):
        """Gradient of :meth:`conv2d_forward` with respect to the kernel.

        Recomputes the im2col matrix from ``x`` and returns ``col.T @ dy2d``
        reshaped to ``kernel_shape`` (KH, KW, C, F). ``patches`` is
        :meth:`conv2d_forward_train`'s, ignored by backends that keep none.
        """
        reduced = self._reduced_conv2d_backward_kernel(x, dy, kernel_shape, strides, pads, dilation, data_format)
        if reduced is not None:
            return reduced
        xp = self.xp
        x = self._to_nhwc(x, data_format)
        dy = self._to_nhwc(dy, data_format)
        kh, kw, c, f = (int(v) for v in kernel_shape)
        n, oh, ow, _ = dy.shape
        col = self._im2col(x, (kh, kw), strides, pads, dilation, (oh, ow))
        dy2d = xp.ascontiguousarray(dy).reshape(n * oh * ow, f)
        return self._mm(col.T, dy2d).reshape(kh, kw, c, f)

    # ---------------------------------------------------------------- pooling
    def _pool_geometry(self, x_nhwc, pool_size, strides, pads):
        n, h, w, c = x_nhwc.shape
        oh = out_size(h, pool_size[0], strides[0], 1, pads[0] + pads[1])
        ow = out_size(w, pool_size[1], strides[1], 1, pads[2] + pads[3])
        taps = _taps((h, w), (oh, ow), pool_size, strides, (1, 1), pads)
        return (n, oh, ow, c), taps

    def _route(self, dy, index, x_shape, pool_size, strides, pads, data_format):
        """Send each ``dy`` to the window cell named by ``index`` (no cell when -1)."""
        xp = self.xp
        dy = self._to_nhwc(dy, data_format)
        index = self._to_nhwc(index, data_format)
        n, h, w, c = self._shape_nhwc(x_shape, data_format)
        _, oh, ow, _ = dy.shape
        dx = xp.zeros((n, h, w, c), dtype=dy.dtype)
        for k, out_idx, in_idx in _taps((h, w), (oh, ow), pool_size, strides, (1, 1), pads):
            # Taps are visited one at a time, so overlapping windows accumulate.
            dx[in_idx] += dy[out_idx] * (index[out_idx] == k)
        return self._from_nhwc(dx, data_format)

    def _pool_counts(self, h, w, out_hw, pool_size, strides, pads, dtype):
        """Real (unpadded) cells per window, as a (1, OH, OW, 1) array of ``dtype``."""
        xp = self.xp

        def axis_counts(n, out, k, s, pad):
            start = xp.arange(out) * s - pad
            return xp.clip(start + k, 0, n) - xp.clip(start, 0, n)

        ch = axis_counts(h, out_hw[0], pool_size[0], strides[0], pads[0])
        cw = axis_counts(w, out_hw[1], pool_size[1], strides[1], pads[2])
        counts = ch[:, None] * cw[None, :]
        # A window of padding only has no real cell; give it 0 rather than NaN.
        return xp.maximum(counts, 1).astype(dtype)[None, :, :, None]

    def max_pool2d_forward(self, x, pool_size, strides, pads, data_format):
        """Max pooling; padded cells never win.

        Returns:
            (y, argmax): y pooled; argmax int32 of y's shape, the row-major cell
            index of the FIRST maximum in each window (a NaN counts as the
            maximum: the first NaN, as the CUDA kernel). int64 for windows of
            over 2**31 cells.
        """
        reduced = self._reduced_max_pool2d_forward(x, pool_size, strides, pads, data_format)
        if reduced is not None:
            return reduced
        xp = self.xp
        x = self._to_nhwc(x, data_format)
        shape, taps = self._pool_geometry(x, pool_size, strides, pads)
        # Branch-free passes only: masked copies (copyto where=, np.where) on
        # random masks are several times slower than arithmetic on NumPy.
        y = xp.full(shape, -numpy.inf, dtype=x.dtype)
        for _, out_idx, in_idx in taps:
            best = y[out_idx]
            xp.maximum(best, x[in_idx], out=best)
        # First max = number of leading cells that are not the max. Padded
        # cells (taps that miss an output) are never the max. A window holding
        # a NaN has y = NaN and its first NaN as argmax (as the CUDA kernel);
        # x != y holds for every cell there, so NaN cells must count as matches.
        # Checked once (max propagates NaN): without NaN nothing changes.
        nan = y.size > 0 and bool(xp.isnan(y.max()))
        present = {k: (out_idx, in_idx) for k, out_idx, in_idx in taps}
        arg = xp.zeros(shape, dtype=self._index_dtype(pool_size))
        not_yet = xp.ones(shape, dtype=bool)
        for k in range(pool_size[0] * pool_size[1] - 1):
            if k in present:
                out_idx, in_idx = present[k]
                v = x[in_idx]
                miss = v != y[out_idx]
                if nan:
                    miss &= v == v
                not_yet[out_idx] &= miss
            arg += not_yet
        return self._from_nhwc(y, data_format), self._from_nhwc(arg, data_format)

    def max_pool2d_backward(self, dy, argmax, x_shape, pool_size, strides, pads, data_format):
        """Gradient of max pooling: ``dy`` goes to each window's argmax cell."""
        reduced = self._reduced_route(
            self.max_pool2d_backward, dy, argmax, x_shape, pool_size, strides, pads, data_format
        )
        if reduced is not None:
            return reduced
        return self._route(dy, argmax, x_shape, pool_size, strides, pads, data_format)

    def avg_pool2d_forward(self, x, pool_size, strides, pads, data_format):
        """Average pooling dividing by the number of real cells in each window (Keras)."""
        reduced = self._reduced_avg_pool2d_forward(x, pool_size, strides, pads, data_format)
        if reduced is not None:
            return reduced
        xp = self.xp
        x = self._to_nhwc(x, data_format)
        shape, taps = self._pool_geometry(x, pool_size, strides, pads)
        total = xp.zeros(shape, dtype=x.dtype)
        for _, out_idx, in_idx in taps:
            total[out_idx] += x[in_idx]
        counts = self._pool_counts(x.shape[1], x.shape[2], shape[1:3], pool_size, strides, pads, x.dtype)
        return self._from_nhwc(total / counts, data_format)

    def avg_pool2d_backward(self, dy, x_shape, pool_size, strides, pads, data_format):
        """Gradient of :meth:`avg_pool2d_forward`."""
        reduced = self._reduced_avg_pool2d_backward(dy, x_shape, pool_size, strides, pads, data_format)
        if reduced is not None:
            return reduced
        xp = self.xp
        dy = self._to_nhwc(dy, data_format)
        n, h, w, c = self._shape_nhwc(x_shape, data_format)
        _, oh, ow, _ = dy.shape
        g = dy / self._pool_counts(h, w, (oh, ow), pool_size, strides, pads, dy.dtype)
        dx = xp.zeros((n, h, w, c), dtype=dy.dtype)
        for _, out_idx, in_idx in _taps((h, w), (oh, ow), pool_size, strides, (1, 1), pads):
            dx[in_idx] += g[out_idx]
        return self._from_nhwc(dx, data_format)

    def _window_sum(self, a, shape, taps, square=False):
        """Sum of ``a`` (or ``a**2``) over each window, in window order."""
        total = self.xp.zeros(shape, dtype=a.dtype)
        for _, out_idx, in_idx in taps:
            v = a[in_idx]
            total[out_idx] += v * v if square else v
        return total

    def stochastic_pool2d_forward(self, x, uniforms, pool_size, strides, pads, data_format):
        """Training-mode stochastic pooling (Zeiler & Fergus 2013).

        With ``a = max(x, 0)``, each window picks the first cell whose running
        sum of ``a`` reaches ``u * sum(a)`` and whose ``a > 0``.

        Args:
            uniforms: [0, 1) draws of y's shape (layout per ``data_format``).
        Returns:
            (y, index): y is x at the picked cell (0 for windows summing to 0);
            index is int32, the picked cell, or -1 for windows summing to 0
            (int64 for windows of over 2**31 cells).
        """
        reduced = self._reduced_stochastic_pool2d_forward(x, uniforms, pool_size, strides, pads, data_format)
        if reduced is not None:
            return reduced
        xp = self.xp
        x = self._to_nhwc(x, data_format)
        u = self._to_nhwc(uniforms, data_format).astype(x.dtype, copy=False)
        shape, taps = self._pool_geometry(x, pool_size, strides, pads)
        a = xp.maximum(x, 0)
        # The threshold uses the same summation order as the running sum below,
        # so the running sum ends exactly at the total and every window with
        # a positive total picks a cell (u < 1 makes u*total <= total).
        target = u * self._window_sum(a, shape, taps)
        running = xp.zeros(shape, dtype=x.dtype)
        y = xp.zeros(shape, dtype=x.dtype)
        index = xp.full(shape, -1, dtype=self._index_dtype(pool_size))
        open_ = xp.ones(shape, dtype=bool)  # no cell picked yet
        for k, out_idx, in_idx in taps:
            v, run = a[in_idx], running[out_idx]
            run += v
            pick = (run >= target[out_idx]) & (v > 0) & open_[out_idx]
            open_[out_idx] &= ~pick
            # Arithmetic rather than masked copies (faster on NumPy); v == x where v > 0.
            index[out_idx] += pick * (k + 1)
            y[out_idx] += pick * v
        return self._from_nhwc(y, data_format), self._from_nhwc(index, data_format)

    def stochastic_pool2d_backward(self, dy, index, x_shape, pool_size, strides, pads, data_format):
        """Gradient of the training forward: ``dy`` goes to the picked cell; index -1 gives nothing."""
        reduced = self._reduced_route(
            self.stochastic_pool2d_backward, dy, index, x_shape, pool_size, strides, pads, data_format
        )
        if reduced is not None:
            return reduced
        return self._route(dy, index, x_shape, pool_size, strides, pads, data_format)

    def stochastic_pool2d_inference_forward(self, x, pool_size, strides, pads, data_format):
        """Inference-mode stochastic pooling: ``sum(a^2) / sum(a)`` per window, 0 where the sum is 0."""
        reduced = self._reduced_stochastic_pool2d_inference_forward(x, pool_size, strides, pads, data_format)
        if reduced is not None:
            return reduced
        xp = self.xp
        x = self._to_nhwc(x, data_format)
        shape, taps = self._pool_geometry(x, pool_size, strides, pads)
        a = xp.maximum(x, 0)
        s = self._window_sum(a, shape, taps)
        q = self._window_sum(a, shape, taps, square=True)
        # s >= 0, and q is 0 wherever s is 0: dividing by 1 there gives the 0 we
        # want. (Adding a bool keeps the dtype, unlike where() with a scalar.)
        return self._from_nhwc(q / (s + (s == 0)), data_format)

    def stochastic_pool2d_inference_backward(self, dy, x, pool_size, strides, pads, data_format):
        """Exact gradient of :meth:`stochastic_pool2d_inference_forward`.

        For a cell with ``a_i > 0``: ``dy * (2 a_i S - Q) / S^2 = dy * (2 a_i - y) / S``
        with ``S = sum(a)``, ``Q = sum(a^2)`` and ``y = Q / S``; 0 for ``x_i <= 0``.
        """
        reduced = self._reduced_stochastic_pool2d_inference_backward(dy, x, pool_size, strides, pads, data_format)
        if reduced is not None:
            return reduced
        xp = self.xp
        x = self._to_nhwc(x, data_format)
        dy = self._to_nhwc(dy, data_format)
        shape, taps = self._pool_geometry(x, pool_size, strides, pads)
        a = xp.maximum(x, 0)
        s = self._window_sum(a, shape, taps)
        s += s == 0  # zero-sum windows have no positive cell, so they get no gradient anyway
        y = self._window_sum(a, shape, taps, square=True) / s
        r = dy / s
        dx = xp.zeros(x.shape, dtype=x.dtype)
        for _, out_idx, in_idx in taps:
            v = a[in_idx]
            dx[in_idx] += (2 * v - y[out_idx]) * r[out_idx] * (v > 0)
        return self._from_nhwc(dx, data_format)

    # --------------------------------------------------------- global pooling
    @staticmethod
    def _hw_axes(data_format):
        return (2, 3) if data_format == "channels_first" else (1, 2)

    def _global_keep(self, y, data_format, keepdims):
        """(N, C) -> (N, 1, 1, C) / (N, C, 1, 1) when ``keepdims``."""
        if not keepdims:
            return y
        n, c = y.shape
        return y.reshape((n, c, 1, 1) if data_format == "channels_first" else (n, 1, 1, c))

    def _flat_hw(self, x, data_format):
        """x as (N, H*W, C) (channels_last) or (N, C, H*W) (channels_first), and the H*W axis."""
        n, a, b, c = x.shape
        if data_format == "channels_first":
            return x.reshape(n, a, b * c), 2
        return x.reshape(n, a * b, c), 1

    def global_avg_pool2d_forward(self, x, data_format, keepdims):
        """Mean over H and W. Returns (N, C), or keepdims shape."""
        return self.xp.mean(x, axis=self._hw_axes(data_format), keepdims=keepdims)

    def global_avg_pool2d_backward(self, dy, x_shape, data_format, keepdims):
        """Gradient of the global mean: ``dy / (H*W)`` broadcast over H and W."""
        xp = self.xp
        n, h, w, c = self._shape_nhwc(x_shape, data_format)
        g = self._global_keep(dy.reshape(n, c), data_format, True) / (h * w)
        dx = xp.empty(tuple(int(v) for v in x_shape), dtype=dy.dtype)
        dx[...] = g
        return dx

    def global_max_pool2d_forward(self, x, data_format, keepdims):
        """Max over H and W.

        Returns:
            (y, argmax): y (N, C) or keepdims shape; argmax int32 of y's shape,
            the flat index over H*W of the FIRST maximum.
        """
        xp = self.xp
        flat, axis = self._flat_hw(x, data_format)
        n, c = x.shape[0], flat.shape[3 - axis]
        if flat.shape[axis] == 0 or n == 0:
            return (
                self._global_keep(xp.empty((n, c), dtype=x.dtype), data_format, keepdims),
                self._global_keep(xp.zeros((n, c), dtype=numpy.int32), data_format, keepdims),
            )
        arg = xp.argmax(flat, axis=axis)  # first max on ties
        y = xp.take_along_axis(flat, xp.expand_dims(arg, axis), axis=axis).reshape(n, c)
        arg = arg.astype(numpy.int32)
        return self._global_keep(y, data_format, keepdims), self._global_keep(arg, data_format, keepdims)

    def global_max_pool2d_backward(self, dy, argmax, x_shape, data_format, keepdims):
        """Gradient of the global max: ``dy`` goes to the argmax pixel of each (n, c)."""
        xp = self.xp
        n, h, w, c = self._shape_nhwc(x_shape, data_format)
        dy = dy.reshape(n, c)
        argmax = argmax.reshape(n, c)
        pos = xp.arange(h * w, dtype=numpy.int32)
        if data_format == "channels_first":
            dx = (pos[None, None, :] == argmax[:, :, None]) * dy[:, :, None]
        else:
            dx = (pos[None, :, None] == argmax[:, None, :]) * dy[:, None, :]
        return dx.astype(dy.dtype, copy=False).reshape(tuple(int(v) for v in x_shape))

    # ---------------------------------------------------- batch normalization
    @staticmethod
    def _bn_dtype(dtype):
        # float16 statistics overflow and lose precision: Keras normalises
        # float16 inputs in float32, and so do we.
        return numpy.dtype("float32") if numpy.dtype(dtype) == _FLOAT16 else numpy.dtype(dtype)

    @staticmethod
    def _bn_bshape(x, axis):
        shape = [1] * x.ndim
        shape[axis] = x.shape[axis]
        return tuple(shape)

    def _channel_sum(self, a, axis):
        """Sum of ``a`` over every axis except ``axis`` -> shape (C,)."""
        return self.xp.sum(a, axis=tuple(i for i in range(a.ndim) if i != axis))

    def _bn_vec(self, v, dtype):
        return None if v is None else v.astype(dtype, copy=False)

    def batch_norm_forward_training(self, x, gamma, beta, axis, epsilon):
        """Batch normalization with batch statistics (Keras formula).

        Args:
            x: any rank >= 2; ``axis`` (0..ndim-1) holds the C features.
            gamma, beta: (C,) or None.
        Returns:
            (y, mean, var, cache): mean/var (C,) in x's dtype, var biased and
            two-pass; cache is opaque, for :meth:`batch_norm_backward_training`.
        """
        xp = self.xp
        out_dtype = x.dtype
        dtype = self._bn_dtype(out_dtype)
        x = x.astype(dtype, copy=False)
        gamma, beta = self._bn_vec(gamma, dtype), self._bn_vec(beta, dtype)
        m = x.size // x.shape[axis] if x.shape[axis] else 0
        div = max(m, 1)  # an empty batch gives mean 0 and var 0 instead of NaN
        bshape = self._bn_bshape(x, axis)
        mean = self._channel_sum(x, axis) / div
        centered = x - mean.reshape(bshape)  # kept for the backward pass
        var = self._channel_sum(centered * centered, axis) / div  # two-pass: stable
        rstd = 1 / xp.sqrt(var + epsilon)
        inv = rstd if gamma is None else rstd * gamma
        shift = -mean * inv
        if beta is not None:
            shift = shift + beta
        y = x * inv.reshape(bshape)
        y += shift.reshape(bshape)
        cache = (centered, rstd, gamma, beta is not None, axis, div, out_dtype)
        return (
            y.astype(out_dtype, copy=False),
            mean.astype(out_dtype, copy=False),
            var.astype(out_dtype, copy=False),
            cache,
        )

    def batch_norm_training_step(self, x, gamma, beta, moving_mean, moving_var, axis, epsilon, momentum, relu=False):
        """A BatchNormalization's training forward: batch statistics, then (with ``relu``, for a layer whose
        output only feeds a ReLU) the ReLU, and the new moving statistics (:meth:`batch_norm_moving_update`;
        the given ones for an empty batch).

        Returns ``(y, new_moving_mean, new_moving_var, cache)``, the cache for
        :meth:`batch_norm_training_step_backward`.
        """
        y, mean, var, cache = self.batch_norm_forward_training(x, gamma, beta, axis, epsilon)
        if x.size:  # an empty batch has no statistics to fold in
            moving_mean, moving_var = self.batch_norm_moving_update(moving_mean, moving_var, mean, var, momentum)
        if relu:
            y = self.relu(y)
            return y, moving_mean, moving_var, (y, cache)
        return y, moving_mean, moving_var, (None, cache)

    def batch_norm_training_step_backward(self, dy, cache):
        """The gradient of :meth:`batch_norm_training_step`: (dx, dgamma, dbeta)."""
        relu_y, cache = cache
        if relu_y is not None:
            dy = self.relu_backward(relu_y, dy)
        return self.batch_norm_backward_training(dy, cache)

    def batch_norm_moving_update(self, moving_mean, moving_var, mean, var, momentum):
        """Keras's moving statistics after a step: ``moving * momentum + batch * (1 - momentum)``, new arrays."""
        return moving_mean * momentum + mean * (1.0 - momentum), moving_var * momentum + var * (1.0 - momentum)

    def batch_norm_backward_training(self, dy, cache):
        """Exact gradient through the batch statistics.

        With ``xhat = (x - mean) * rstd`` and ``g = gamma * rstd``:
        ``dx = g * (dy - mean(dy) - xhat * mean(dy * xhat))``.

        Returns:
            (dx, dgamma, dbeta); dgamma/dbeta are None when gamma/beta were None.
        """
        centered, rstd, gamma, has_beta, axis, div, out_dtype = cache
        dtype = centered.dtype
        dy = dy.astype(dtype, copy=False)
        bshape = self._bn_bshape(centered, axis)
        sum_dy = self._channel_sum(dy, axis)
        sum_dy_xhat = self._channel_sum(dy * centered, axis) * rstd
        g = rstd if gamma is None else rstd * gamma
        # dx = dy*g + centered*c1 + c0, folding the per-channel factors first.
        c1 = -g * rstd * sum_dy_xhat / div
        c0 = -g * sum_dy / div
        dx = dy * g.reshape(bshape)
        dx += centered * c1.reshape(bshape)
        dx += c0.reshape(bshape)
        dgamma = None if gamma is None else sum_dy_xhat.astype(out_dtype, copy=False)
        dbeta = sum_dy.astype(out_dtype, copy=False) if has_beta else None
        return dx.astype(out_dtype, copy=False), dgamma, dbeta

    def batch_norm_forward_inference(self, x, gamma, beta, mean, var, axis, epsilon):
        """Batch normalization with given statistics: ``y = x*inv + (beta - mean*inv)``."""
        xp = self.xp
        out_dtype = x.dtype
        dtype = self._bn_dtype(out_dtype)
        x = x.astype(dtype, copy=False)
        gamma, beta = self._bn_vec(gamma, dtype), self._bn_vec(beta, dtype)
        mean, var = mean.astype(dtype, copy=False), var.astype(dtype, copy=False)
        bshape = self._bn_bshape(x, axis)
        inv = 1 / xp.sqrt(var + epsilon)
        if gamma is not None:
            inv = inv * gamma
        shift = -mean * inv
        if beta is not None:
            shift = shift + beta
        y = x * inv.reshape(bshape)
        y += shift.reshape(bshape)
        return y.astype(out_dtype, copy=False)

    def batch_norm_backward_inference(self, dy, x, gamma, mean, var, axis, epsilon, has_beta=True):
        """Gradient of :meth:`batch_norm_forward_inference`; the statistics are constants.

        Returns:
            (dx, dgamma, dbeta): dgamma None when gamma is None, dbeta None
            when ``has_beta`` is False.
        """
        xp = self.xp
        out_dtype = dy.dtype
        dtype = self._bn_dtype(out_dtype)
        x, dy = x.astype(dtype, copy=False), dy.astype(dtype, copy=False)
        gamma = self._bn_vec(gamma, dtype)
        mean, var = mean.astype(dtype, copy=False), var.astype(dtype, copy=False)
        bshape = self._bn_bshape(x, axis)
        rstd = 1 / xp.sqrt(var + epsilon)
        inv = rstd if gamma is None else rstd * gamma
        dx = dy * inv.reshape(bshape)
        dgamma = None
        if gamma is not None:
            dgamma = (self._channel_sum(dy * (x - mean.reshape(bshape)), axis) * rstd).astype(out_dtype, copy=False)
        dbeta = self._channel_sum(dy, axis).astype(out_dtype, copy=False) if has_beta else None
        return dx.astype(out_dtype, copy=False), dgamma, dbeta

    # ------------------------------------------------ helpers for layer glue
    def matmul(self, a, b):
        """``a @ b`` (``a`` of rank >= 2, ``b`` a matrix): the layers' dense products."""
        return self._mm(a, b)

    def _mm(self, a, b):
        """``a @ b``: every GEMM of the layers' hot paths goes through here (a backend overrides it
        where its library has no fast path for a dtype)."""
        return a @ b

    def bias_add(self, z, bias, axis):
        """Add the (C,) ``bias`` along ``axis`` of ``z`` in place (``z += bias``); returns ``z``."""
        shape = [1] * z.ndim
        shape[axis] = z.shape[axis]
        z += bias.reshape(shape)
        return z

    def bias_add_relu(self, z, bias, axis):
        """``relu(z + bias)`` along ``axis`` (``bias`` (C,) or None): a layer's bias and ReLU in one pass.

        ``z`` is the layer's own fresh product and may be overwritten.
        """
        return self.relu(z if bias is None else self.bias_add(z, bias, axis))

    def channel_sum(self, a, axis):
        """Sum of ``a`` over every axis except ``axis`` -> shape (C,) (a bias gradient)."""
        return self._channel_sum(a, axis)

    def relu(self, x):
        """``max(x, 0)`` in x's dtype: ``gpulayers.activations.relu`` with its default arguments."""
        return self.xp.maximum(x, 0.0).astype(x.dtype, copy=False)

    def relu_backward(self, x, dy):
        """Gradient of :meth:`relu` at ``x``: ``dy * (x > 0)``."""
        return dy * (x > 0)

    # ------------------------------------------------ dropout
    def dropout(self, x, u, keep):
        """Keras's dropout from uniforms ``u`` in [0, 1) (x's shape, or broadcasting to it).

        Returns ``(y, kept)``: ``kept = u < keep``; ``y = x / keep`` where
        kept and exactly 0 elsewhere (``where`` rather than a 0/1 multiply, so
        a dropped unit stays 0 even where ``x / keep`` overflows; float16
        divides in float32, so a keep below float16's range, rate 0.99999, is
        not rounded first).
        """
        kept = u < keep
        return self.dropout_backward(x, kept, keep), kept

    def dropout_random(self, x, mask_shape, keep, stream):
        """:meth:`dropout` with its uniforms (of ``mask_shape``, broadcasting to x's) drawn from ``stream``
        (a :meth:`random_stream`); returns ``(y, kept)``."""
        return self.dropout(x, self.uniform(stream, mask_shape, x.dtype), keep)

    def dropout_backward(self, dy, kept, keep):
        """The gradient of :meth:`dropout`: ``dy / keep`` where kept, 0 elsewhere."""
        xp = self.xp
        if keep == 0:
            return xp.zeros_like(dy)
        work = numpy.dtype("float32") if dy.dtype.itemsize < 4 else dy.dtype
        with numpy.errstate(over="ignore"):  # a float16 result beyond 65504 is inf, as in Keras
            scaled = (dy.astype(work, copy=False) / work.type(keep)).astype(dy.dtype, copy=False)
        return xp.where(kept, scaled, dy.dtype.type(0))

    # ------------------------------------------------ classification
    def softmax(self, x, axis):
        """``exp(x - max) / sum(exp(x - max))`` along the int ``axis`` of a non-empty float ``x``."""
        e = self.xp.exp(x - x.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)

    def bias_add_softmax(self, z, bias):
        """A layer's bias and softmax over the last axis in one pass: ``z += bias`` in place (``z``, the
        layer's own fresh product of at least 2 classes, becomes its logits), returns ``softmax(z)``."""
        z += bias
        return self.xp.empty_like(z) if z.size == 0 else self.softmax(z, z.ndim - 1)

    def sparse_xent_values(self, p, labels, lo, hi):
        """Sparse cross-entropy from probabilities: ``-log(clip(p[r, k] / sum(p[r]), lo, hi))`` per row.

        ``p`` is (rows, classes) float, ``labels`` (rows,) int64 in range,
        ``lo``/``hi`` scalars of p's dtype. Returns (rows,).
        """
        xp = self.xp
        qk = xp.take_along_axis(p, labels.reshape(-1, 1), axis=1) / p.sum(axis=1, keepdims=True)
        return -xp.log(xp.clip(qk, lo, hi)).reshape(-1)

    def sparse_xent_mean(self, p, labels, lo, hi):
        """The mean of :meth:`sparse_xent_values` (Keras's sum / size), a 0-d array of p's dtype."""
        return self.xp.asarray(self.xp.mean(self.sparse_xent_values(p, labels, lo, hi)), dtype=p.dtype)

    def sparse_xent_logits_grad(self, p, labels, g, scale=None):
        """``(p - onehot(labels)) * g[:, None]``: :meth:`sparse_xent_values`'s gradient on the logits of
        the softmax that gave ``p`` (``g``: (rows,), the gradient of the values). With ``scale`` (a
        scalar of p's dtype), ``g`` is 0-d and every row's gradient is ``g * scale``: that of
        :meth:`sparse_xent_mean` with ``scale = 1 / rows``."""
        xp = self.xp
        if scale is not None:
            g = xp.broadcast_to((g * scale).astype(p.dtype, copy=False), (p.shape[0],))
        onehot = (xp.arange(p.shape[1]) == labels.reshape(-1, 1)).astype(p.dtype)
        return (p - onehot) * g.astype(p.dtype, copy=False).reshape(-1, 1)

    # ------------------------------------------------ metrics
    def top1_matches(self, scores, labels):
        """Per row of the (rows, classes) float ``scores``: 1.0 (float64) where the index of the first
        largest score equals the integer label (``labels``: (rows,)), else 0.0."""
        xp = self.xp
        return (labels == xp.argmax(scores, axis=-1).astype(labels.dtype)).astype(xp.float64)

    def accumulate(self, total, value, weight, count):
        """A mean metric's update and its result: ``(total + float64(value) * weight, that / count)``, the
        mean 0 where ``count`` (the new host count) is 0 (0-d ``value``, float ``weight``; ``total`` a
        0-d float64 array or a Python float)."""
        total = total + value.astype(self.xp.float64) * weight
        return total, (total * 0.0 if count == 0 else total / count)

    # ------------------------------------------------ optimizer steps
    def multi_tensor_update(self, rule, groups, constants, decay):
        """One optimizer step for many variables at once, in place, where the backend has a fused form.

        Args:
            rule: a key of :data:`backends.multi_tensor.RULES` ("sgd", "adam", "rmsprop", "adagrad").
            groups: one ``(variable, gradient, *state)`` tuple of same-shape,
                same-dtype (float32 or float64) arrays per variable, the state
                in the rule's slot order, None for an unused slot. Gradients
                are made C-contiguous here; the rest must be.
            constants: the rule's named constants (``backends.multi_tensor.RULES``).
            decay: one bool per group: apply ``w -= w * wd * lr`` first.

        Returns True when the arrays were updated, False when this backend has
        no fused step (nothing changed: the caller runs its per-variable rule).
        """
        from backends import multi_tensor

        xp = self.xp
        groups = [(w, g if g is None or g.flags.c_contiguous else xp.ascontiguousarray(g), *state)
                  for w, g, *state in groups]
        dtype = multi_tensor.check_groups(rule, groups, constants, decay)
        return self._multi_tensor_update(rule, groups, multi_tensor.kernel_constants(rule, constants, dtype), decay)

    def _multi_tensor_update(self, rule, groups, constants, decay):
        return False  # no fused form: NumpyOps keeps the optimizers' own expressions
