"""CPU backend: the generic :class:`backends.ops.Ops` on NumPy, plus a few faster paths."""

import threading

import numpy

from backends.ops import Ops

__all__ = ["NumpyOps"]


class NumpyOps(Ops):
    """Operations on ``numpy.ndarray``."""

    name = "numpy"
    xp = numpy

    def __init__(self):
        # One im2col buffer per thread, reused across calls: filling freshly
        # mapped memory costs about as much again as the copy (page faults).
        self._local = threading.local()

    def asarray(self, x, dtype=None):
        """numpy array from a numpy/cupy array or anything with ``__array__`` or ``__dlpack__``."""
        if isinstance(x, numpy.ndarray):
            return super().asarray(x, dtype)
        if type(x).__module__.split(".", 1)[0] == "cupy" and hasattr(x, "get"):
            x = x.get()
        elif hasattr(x, "__dlpack__") and not hasattr(x, "__array__"):
            x = numpy.from_dlpack(x)
        return numpy.asarray(x, dtype=dtype)

    def device_name(self):
        """What computes: the CPU, with numpy's version."""
        import os
        import platform

        cpu = platform.processor() or platform.machine()
        return f"CPU ({cpu}, {os.cpu_count()} cores), numpy {numpy.__version__}"

    def to_numpy(self, x):
        if type(x).__module__.split(".", 1)[0] == "cupy" and hasattr(x, "get"):
            return x.get()
        return numpy.asarray(x)

    def _new_col(self, shape, dtype):
        size = 1
        for s in shape:
            size *= s
        nbytes = size * numpy.dtype(dtype).itemsize
        buf = getattr(self._local, "col", None)
        if buf is None or buf.nbytes < nbytes:
            buf = numpy.empty(nbytes, dtype=numpy.uint8)
            self._local.col = buf
        # The buffer never escapes: callers only multiply it into new arrays.
        return buf[:nbytes].view(dtype).reshape(shape)

    def release_buffers(self):
        """Drop this thread's cached im2col buffer (frees its memory)."""
        self._local.col = None

    def _channel_sum(self, a, axis):
        # BLAS matrix-vector products with a ones vector are 3-8x faster than
        # ndarray.sum over the batch axes.
        if a.dtype not in (numpy.float32, numpy.float64) or not a.flags.c_contiguous or a.size == 0:
            return super()._channel_sum(a, axis)
        c = a.shape[axis]
        pre = 1
        for s in a.shape[:axis]:
            pre *= s
        post = a.size // (pre * c)
        if post > 1:
            a = (a.reshape(pre * c, post) @ numpy.ones(post, dtype=a.dtype)).reshape(pre, c)
        else:
            a = a.reshape(pre, c)
        return numpy.ones(pre, dtype=a.dtype) @ a
