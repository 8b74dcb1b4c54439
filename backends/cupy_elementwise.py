"""CupyOps' elementwise and row-kernel wrappers: the ReLU gradient, bias + ReLU, dropout (Philox
streams), softmax and the sparse cross-entropy, the metrics' kernels."""

import numpy

from backends.cuda_args import BLOCK as _BLOCK, F32 as _F32, F64 as _F64, i32 as _i32, i64 as _i64, prod as _prod

__all__ = ["ElementwiseKernels", "PhiloxStream"]


class PhiloxStream:
    """A layer's random numbers on the GPU: Philox4x32-10 keyed by its seed, with its launch counter in a
    2-word device array (``backends/kernels/elementwise.cu``) that the kernels advance themselves, so a
    draw needs no host work and no generator state leaves the device."""

    __slots__ = ("key", "state")

    def __init__(self, seed, state):
        self.key = numpy.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF)
        self.state = state


class ElementwiseKernels:
    """The elementwise, softmax and metric methods of :class:`backends.cupy_ops.CupyOps` (mixed into it; they use its launchers)."""

    # ------------------------------------------------------- elementwise
    def _elementwise(self, kernel, dtype, n, args):
        self._launch("elementwise", kernel, dtype, n, args + (_i64(n),))

    def _elementwise_stream(self, kernel, dtype, n, args, stream):
        """An elementwise kernel drawing from a :class:`PhiloxStream`: ``(*args, n, key, state)``."""
        self._launch("elementwise", kernel, dtype, n, args + (_i64(n), stream.key, stream.state))

    def relu_backward(self, x, dy):
        if x.dtype not in (_F32, _F64) or dy.dtype != x.dtype or x.shape != dy.shape or x.ndim == 0:
            return super().relu_backward(x, dy)
        cupy = self.xp
        x, dy = cupy.ascontiguousarray(x), cupy.ascontiguousarray(dy)
        dx = cupy.empty(x.shape, dtype=x.dtype)
        self._elementwise("relu_bwd", x.dtype, x.size, (x, dy, dx))
        return dx

    def bias_add_relu(self, z, bias, axis):
        cupy = self.xp
        if z.dtype not in (_F32, _F64) or z.ndim == 0 or (
            bias is not None and (bias.dtype != z.dtype or bias.shape != (z.shape[axis],))
        ):
            return super().bias_add_relu(z, bias, axis)
        z = cupy.ascontiguousarray(z)
        axis %= z.ndim
        c, inner = int(z.shape[axis]), _prod(z.shape[axis + 1 :])
        y = cupy.empty(z.shape, dtype=z.dtype)
        args = (z, z if bias is None else cupy.ascontiguousarray(bias), y)
        self._launch("elementwise", "bias_relu", z.dtype, z.size,
                     args + (_i64(z.size), _i32(max(c, 1), "channels"), _i32(max(inner, 1), "inner size"),
                             _i32(bias is not None, "has_bias")))
        return y

    def dropout(self, x, u, keep):
        if x.dtype not in (_F32, _F64) or u.dtype != x.dtype or u.shape != x.shape or keep == 0 or x.ndim == 0:
            return super().dropout(x, u, keep)  # a broadcast noise_shape, float16, rate 1
        cupy = self.xp
        x, u = cupy.ascontiguousarray(x), cupy.ascontiguousarray(u)
        y, kept = cupy.empty(x.shape, dtype=x.dtype), cupy.empty(x.shape, dtype=numpy.bool_)
        self._elementwise("dropout_fwd", x.dtype, x.size, (x, u, x.dtype.type(keep), y, kept))
        return y, kept

    def dropout_random(self, x, mask_shape, keep, stream):
        if not isinstance(stream, PhiloxStream) or x.dtype not in (_F32, _F64) or tuple(mask_shape) != x.shape \
                or keep == 0 or x.ndim == 0:
            return super().dropout_random(x, mask_shape, keep, stream)  # a broadcast noise_shape, float16, rate 1
        cupy = self.xp
        x = cupy.ascontiguousarray(x)
        y, kept = cupy.empty(x.shape, dtype=x.dtype), cupy.empty(x.shape, dtype=numpy.bool_)
        self._elementwise_stream("dropout_philox", x.dtype, x.size, (x, x.dtype.type(keep), y, kept), stream)
        return y, kept

    def dropout_backward(self, dy, kept, keep):
        if dy.dtype not in (_F32, _F64) or kept.shape != dy.shape or kept.dtype != numpy.bool_ or keep == 0 \
                or dy.ndim == 0:
            return super().dropout_backward(dy, kept, keep)
        cupy = self.xp
        dy, kept = cupy.ascontiguousarray(dy), cupy.ascontiguousarray(kept)
        dx = cupy.empty(dy.shape, dtype=dy.dtype)
        self._elementwise("dropout_bwd", dy.dtype, dy.size, (dy, kept, dy.dtype.type(keep), dx))
        return dx

    # ------------------------------------------------ softmax, cross-entropy
    @staticmethod
    def _row_lanes(cols):
        """Lanes per row of softmax.cu's row kernels: the power of two >= cols, at most 32."""
        lanes = 1
        while lanes < min(int(cols), 32):
            lanes *= 2
        return lanes

    def _row_grid(self, rows, cols):
        """The blocks a row kernel launches: one per group of rows, capped (the grid strides past the cap)."""
        return min(-(-rows // (_BLOCK // self._row_lanes(cols))), self._grid_cap())

    def _row_launch(self, kernel, dtype, rows, cols, arrays, scalars=()):
        """A softmax.cu row kernel: ``(*arrays, rows, cols, lanes, *scalars)`` on :meth:`_row_grid` blocks."""
        lanes = self._row_lanes(cols)
        args = tuple(arrays) + (_i64(rows), _i32(cols, "classes"), _i32(lanes, "lanes")) + tuple(scalars)
        self._launch_blocks("softmax", kernel, dtype, self._row_grid(rows, cols), args)

    def softmax(self, x, axis):
        if axis != x.ndim - 1 or x.dtype not in (_F32, _F64) or x.size == 0:
            return super().softmax(x, axis)
        x = self.xp.ascontiguousarray(x)
        cols = x.shape[-1]
        y = self.xp.empty(x.shape, dtype=x.dtype)
        self._row_launch("softmax_rows", x.dtype, x.size // cols, cols, (x, y))
        return y

    def bias_add_softmax(self, z, bias):
        if z.dtype not in (_F32, _F64) or bias.dtype != z.dtype or bias.shape != z.shape[-1:] or z.size == 0 \
                or not z.flags.c_contiguous:
            return super().bias_add_softmax(z, bias)
        cols = z.shape[-1]
        y = self.xp.empty(z.shape, dtype=z.dtype)
        self._row_launch("bias_softmax_rows", z.dtype, z.size // cols, cols, (z, self.xp.ascontiguousarray(bias), y))
        return y

    def _rows_and_labels(self, p, labels):
        """A (rows, classes) matrix and its labels as the row kernels read them: C order, int64 labels."""
        cupy = self.xp
        return cupy.ascontiguousarray(p), cupy.ascontiguousarray(labels.astype(numpy.int64, copy=False))

    def sparse_xent_values(self, p, labels, lo, hi):
        if p.dtype not in (_F32, _F64) or p.size == 0:
            return super().sparse_xent_values(p, labels, lo, hi)
        cupy = self.xp
        p, labels = self._rows_and_labels(p, labels)
        rows, cols = p.shape
        values = cupy.empty((rows,), dtype=p.dtype)
        t = p.dtype.type
        self._row_launch("sparse_xent_fwd", p.dtype, rows, cols, (p, labels, values), (t(lo), t(hi)))
        return values

    def sparse_xent_mean(self, p, labels, lo, hi):
        if p.dtype not in (_F32, _F64) or p.size == 0:
            return super().sparse_xent_mean(p, labels, lo, hi)
        cupy = self.xp
        p, labels = self._rows_and_labels(p, labels)
        rows, cols = p.shape
        # one partial sum per block launched
        mean, partial = cupy.empty((), dtype=p.dtype), cupy.empty((self._row_grid(rows, cols),), dtype=_F64)
        t = p.dtype.type
        self._row_launch("sparse_xent_mean", p.dtype, rows, cols, (p, labels, mean, partial, self._blocks_done()),
                         (t(lo), t(hi)))
        return mean

    def _blocks_done(self):
        """A zeroed device counter of finished blocks for the last-block reductions (each such kernel resets
        it to 0 as it ends), one per device."""
        device = self.xp.cuda.runtime.getDevice()
        done = self._done_counters.get(device)
        if done is None:
            done = self._done_counters[device] = self.xp.zeros((1,), dtype=numpy.uint32)
        return done

    def sparse_xent_logits_grad(self, p, labels, g, scale=None):
        if p.dtype not in (_F32, _F64) or p.size == 0:
            return super().sparse_xent_logits_grad(p, labels, g, scale)
        cupy = self.xp
        p, labels = self._rows_and_labels(p, labels)
        rows, cols = p.shape
        g = g.astype(p.dtype, copy=False).reshape(1 if scale is not None else rows)
        if scale is not None or g.strides[0] == 0:  # one value for every row (a mean's gradient): read it once
            g, g_stride = g[:1], 0
        else:
            g, g_stride = cupy.ascontiguousarray(g), 1
        dx = cupy.empty(p.shape, dtype=p.dtype)
        self._launch("softmax", "sparse_xent_bwd", p.dtype, p.size,
                     (p, labels, g, dx, _i64(rows), _i32(cols, "classes"), _i64(g_stride),
                      p.dtype.type(1 if scale is None else scale)))
        return dx

    def top1_matches(self, scores, labels):
        cupy = self.xp
        # Labels narrower than 32 bits take the generic path: Keras casts the argmax to their dtype (wrapping).
        if scores.dtype not in (_F32, _F64) or scores.ndim != 2 or labels.dtype.kind not in "iu" \
                or labels.dtype.itemsize < 4 or scores.size == 0:
            return super().top1_matches(scores, labels)
        scores, labels = self._rows_and_labels(scores, labels)
        rows, cols = scores.shape
        out = cupy.empty((rows,), dtype=_F64)
        self._launch("softmax", "top1_match", scores.dtype, rows, (scores, labels, out, _i64(rows), _i32(cols, "classes")))
        return out

    # ------------------------------------------------------------ metrics
    def accumulate(self, total, value, weight, count):
        cupy = self.xp
        if not (isinstance(total, cupy.ndarray) and total.dtype == _F64 and total.ndim == 0
                and isinstance(value, cupy.ndarray) and value.ndim == 0 and value.dtype in (_F32, _F64)):
            return super().accumulate(total, value, weight, count)  # the first update (a Python 0.0), or float16
        out, mean = cupy.empty((), dtype=_F64), cupy.empty((), dtype=_F64)
        self._launch("elementwise", "accumulate", value.dtype, 1,
                     (total, value, numpy.float64(weight), numpy.float64(count), out, mean))
        return out, mean
