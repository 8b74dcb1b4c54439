"""CPU backend: the generic :class:`backends.ops.Ops` on NumPy, plus faster paths.

The fast paths compute what the generic code computes: batch normalization,
pooling, ReLU and the bias add use the same formulas in the same order (the
same bits); convolutions and dense products differ only in how BLAS blocks
its sums. What makes them faster on a CPU:

* Work is split across the machine's cores (``GPULAYERS_CPU_THREADS`` parts,
  default: the usable cores, at most 8; 1 turns splitting off). NumPy releases
  the GIL inside ufunc loops and BLAS calls, so helper threads each take a
  slice of the batch. Waking an idle helper costs 0.1-0.25 ms on a virtual
  machine, so only large operations are split.
* GEMMs run on those threads too, each calling BLAS on one thread: OpenBLAS's
  own worker threads spin for about 0.1 s after each call (taking the core our
  helper needs) and synchronise on every K block of a long reduction. While a
  NumpyOps operation runs, NumPy's OpenBLAS is set to one thread
  (:class:`_BlasThreads`); where that cannot be done, OpenBLAS keeps its own
  threading and the operations run unsplit.
* Convolutions build the im2col patches of a few images at a time in each
  thread's cache (over a kept zero-bordered padded buffer) and multiply them
  there, so the (M, KH*KW*C) patch matrix is never written out. The kernel
  gradient sums the per-chunk products in float64. The input gradient of a
  stride-1 convolution is the forward convolution of dy with the flipped,
  transposed kernel.
* Per-channel vectors are tiled to a few hundred elements and the channels-last
  array is viewed with rows that long, so NumPy's inner loops run over long
  rows instead of stopping every C elements; per-channel sums go through BLAS
  (``ones @ x``).
* 2x2 stride-2 pooling (the usual one) works on the four cell planes directly.
* glibc's malloc is told to keep freed memory (``mallopt``: no trimming of
  the heap top, no per-array ``mmap`` below 32 MiB): a training step frees
  its activations when the tape is done with them and allocates the same
  sizes again in the next step, and memory handed back to the system comes
  back as page faults, which measured 20% of a CPU training step. The
  process keeps its peak heap instead. ``GPULAYERS_MALLOC_TUNING=0`` leaves
  malloc alone; other C libraries are left alone.
"""

import ctypes
import math
import os
import sys
import threading
from collections import OrderedDict

import numpy

from backends.ops import Ops
from backends.window_plans import out_size, taps as _taps

__all__ = ["NumpyOps", "cpu_threads"]

_FLOATS = (numpy.dtype("float32"), numpy.dtype("float64"))
# Below this many elements an op runs on one thread: waking an idle helper costs
# 0.02 ms on bare metal but 0.1-0.25 ms on a virtual machine.
_PARALLEL_MIN = 1 << 19
# Per-channel vectors are tiled up to about this many elements (1-2 KiB rows;
# much longer rows measured slower).
_ROW = 256
# Default elements per chunk of the chunked loops (see _chunks).
_CHUNK = 1 << 16
# Pooling chunks are whole images, counted in input elements (here: one per thread;
# smaller chunks measured slower: each NumPy call costs a few microseconds).
_POOL_CHUNK = 1 << 40
# Elements (patch matrix, or dx and its parts) per chunk in the convolutions; the
# kernel gradient sums over the rows, which goes faster in longer chunks.
_CONV_CHUNK = 1 << 16
_CONV_KERNEL_CHUNK = 1 << 19


def cpu_threads():
    """How many parts elementwise work is split into: ``GPULAYERS_CPU_THREADS``, else the usable cores (at most 8)."""
    env = os.environ.get("GPULAYERS_CPU_THREADS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(
                f"Invalid value for `GPULAYERS_CPU_THREADS`: expected a positive int. Received: {env!r}"
            ) from None
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


class _Helper:
    """One helper thread that runs the jobs handed to it, one at a time."""

    def __init__(self, index):
        self._go = threading.Semaphore(0)
        self._done = threading.Semaphore(0)
        self._job = None
        self._error = None
        threading.Thread(target=self._loop, name=f"gpulayers-cpu-{index}", daemon=True).start()

    def _loop(self):
        while True:
            self._go.acquire()
            fn, args = self._job
            try:
                fn(*args)
            except BaseException as exc:  # handed back to the caller
                self._error = exc
            self._job = None
            self._done.release()

    def submit(self, fn, args):
        self._job = (fn, args)
        self._go.release()

    def wait(self):
        self._done.acquire()
        error, self._error = self._error, None
        return error


class _Workers:
    """Runs ``fn(lo, hi)`` over parts of a range, one part per thread.

    The calling thread runs the first part itself. Helpers start on first use
    (and again after a fork). When another thread is already using them, the
    work simply runs on the caller.
    """

    def __init__(self, parts):
        self.parts = parts
        self._lock = threading.Lock()
        self._helpers = []
        self._pid = None

    def split(self, n, size, fn):
        """Call ``fn(lo, hi)`` over ``[0, n)``; ``size`` is the total element count (decides splitting)."""
        k = min(self.parts, n) if size >= _PARALLEL_MIN else 1
        if k <= 1 or not self._lock.acquire(blocking=False):
            if n > 0:
                fn(0, n)
            return
        try:
            if self._pid != os.getpid():
                self._helpers = [_Helper(i) for i in range(self.parts - 1)]
                self._pid = os.getpid()
            bounds = [n * i // k for i in range(k + 1)]
            for i in range(1, k):
                self._helpers[i - 1].submit(fn, (bounds[i], bounds[i + 1]))
            error = None
            try:
                fn(bounds[0], bounds[1])
            except BaseException as exc:
                error = exc
            for i in range(1, k):
                error = self._helpers[i - 1].wait() or error
            if error is not None:
                raise error
        finally:
            self._lock.release()


def _rows(a, c):
    """View C-contiguous ``a`` (channels last, ``c`` of them) as rows of ``r * c`` elements; returns (view, r)."""
    p = a.size // c
    r = max(1, _ROW // c)
    while p % r:
        r -= 1
    return a.reshape(p // r, r * c), r


class _BlasThreads:
    """The thread count of the OpenBLAS that NumPy uses, set to 1 while NumpyOps multiplies on its own threads.

    OpenBLAS's idle workers spin for about 0.1 s after each call, taking a core
    from whatever runs next (our own helper threads included), and its threaded
    GEMM stalls on every K block when another process holds a core. NumpyOps
    therefore splits its GEMMs across its own threads, each running BLAS on one
    thread. The library is found as threadpoolctl finds it (the loaded shared
    object, ``[scipy_]openblas_{get,set}_num_threads[64_]``); where it cannot be
    found, NumPy's BLAS keeps its own threading and NumpyOps does not split GEMMs.
    The previous count is restored when the outermost operation returns.
    """

    _NAMES = (("scipy_openblas_", "64_"), ("scipy_openblas_", ""), ("openblas_", "64_"), ("openblas_", ""))

    def __init__(self):
        self._lock = threading.Lock()
        self._depth = 0
        self._saved = None
        self._fns = None  # (get, set) once looked up; False when there is none

    def _lookup(self):
        try:
            import ctypes

            with open("/proc/self/maps") as f:
                paths = {line.split()[-1] for line in f if "openblas" in line.rsplit("/", 1)[-1].lower()}
            for path in sorted(paths):
                lib = ctypes.CDLL(path)
                for prefix, suffix in self._NAMES:
                    get = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
                    set_ = getattr(lib, f"{prefix}set_num_threads{suffix}", None)
                    if get is not None and set_ is not None:
                        get.restype, get.argtypes = ctypes.c_int, []
                        set_.restype, set_.argtypes = None, [ctypes.c_int]
                        return get, set_
        except (OSError, AttributeError, ValueError):
            pass
        return False

    def available(self):
        if self._fns is None:
            with self._lock:
                if self._fns is None:
                    self._fns = self._lookup()
        return bool(self._fns)

    def __enter__(self):
        if not self.available():
            return self
        with self._lock:
            if self._depth == 0:
                get, set_ = self._fns
                self._saved = get()
                if self._saved != 1:
                    set_(1)
            self._depth += 1
        return self

    def __exit__(self, *exc):
        if not self._fns:
            return False
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._saved not in (None, 1):
                self._fns[1](self._saved)
                self._saved = None
        return False


_BLAS = _BlasThreads()


class _NoScope:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_NO_SCOPE = _NoScope()

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's upper bound for M_MMAP_THRESHOLD on 64-bit
_malloc_tuned = None


def tune_malloc():
    """Keep freed memory in glibc's heap (see the module docstring); True when done. Once per process."""
    global _malloc_tuned
    if _malloc_tuned is None:
        _malloc_tuned = False
        if os.environ.get("GPULAYERS_MALLOC_TUNING", "1") != "0" and sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(None)
                libc.gnu_get_libc_version  # noqa: B018 (glibc only: musl has none, and other mallopt semantics)
                mallopt = libc.mallopt
            except (OSError, AttributeError):
                return False
            mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
            _malloc_tuned = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(
                mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
            )
    return _malloc_tuned


class NumpyOps(Ops):
    """Operations on ``numpy.ndarray``."""

    name = "numpy"
    xp = numpy

    def __init__(self):
        # Per-thread scratch buffers, reused across calls: filling freshly
        # mapped memory costs about as much again as the copy (page faults).
        self._local = threading.local()
        self._workers = _Workers(cpu_threads())
        tune_malloc()

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
        import platform

        cpu = platform.processor() or platform.machine()
        return f"CPU ({cpu}, {os.cpu_count()} cores), numpy {numpy.__version__}"

    def to_numpy(self, x):
        if type(x).__module__.split(".", 1)[0] == "cupy" and hasattr(x, "get"):
            return x.get()
        return numpy.asarray(x)

    # ---------------------------------------------------------------- buffers
    def _new_col(self, shape, dtype):
        """This thread's reusable buffer (im2col patches, or a chunk of them), as ``shape``."""
        size = 1
        for s in shape:
            size *= s
        nbytes = size * numpy.dtype(dtype).itemsize
        buf = getattr(self._local, "col", None)
        if buf is None or buf.nbytes < nbytes:
            self._local.col = None  # free the old one before mapping the new one
            buf = numpy.empty(nbytes, dtype=numpy.uint8)
            self._local.col = buf
        # The buffer never escapes: callers only read it into new arrays.
        return buf[:nbytes].view(dtype).reshape(shape)

    def _scratch(self, size, dtype):
        """A second per-thread buffer of ``size`` elements (for BN's temporaries)."""
        nbytes = size * numpy.dtype(dtype).itemsize
        buf = getattr(self._local, "scratch", None)
        if buf is None or buf.nbytes < nbytes:
            self._local.scratch = None
            buf = numpy.empty(nbytes, dtype=numpy.uint8)
            self._local.scratch = buf
        return buf[:nbytes].view(dtype)

    def release_buffers(self):
        """Drop this thread's cached buffers (frees their memory)."""
        self._local.col = None
        self._local.scratch = None
        self._local.pads = None

    # ------------------------------------------------------------- splitting
    def _split(self, n, size, fn):
        self._workers.split(n, size, fn)

    def _split_rows(self, rows, row_len, fn):
        """``fn(lo, hi)`` over ``[0, rows)`` of rows ``row_len`` long, split across threads."""
        self._split(rows, rows * row_len, fn)

    def _chunks(self, rows, row_len, step_fn, state=None, chunk=_CHUNK):
        """Split ``[0, rows)`` across threads; each calls ``step_fn(a, b, st)`` over chunks of about
        ``chunk`` elements, ``st = state(n)`` (n: rows per chunk) made once per thread. Returns the states."""
        step = max(1, chunk // max(row_len, 1))
        states = []

        def part(lo, hi):
            st = state(min(step, hi - lo)) if state is not None else None
            for a in range(lo, hi, step):
                step_fn(a, min(a + step, hi), st)
            states.append((lo, st))

        self._split(rows, rows * row_len, part)
        # In row order, not in the order the threads finished: sums over the states are then the same
        # from run to run.
        return [st for _, st in sorted(states, key=lambda item: item[0])]

    # ------------------------------------------------------------- threading
    @property
    def _own_gemm(self):
        """Whether GEMMs are split across our threads (with NumPy's BLAS on one thread meanwhile)."""
        own = self.__dict__.get("_own")
        if own is None:
            own = self._own = self._workers.parts > 1 and _BLAS.available()
        return own

    def _blas_scope(self):
        return _BLAS if self._own_gemm else _NO_SCOPE

    def _mm(self, a, b):
        # NumPy's float16 matmul is a plain loop (no BLAS), ~100x slower than float32's. It accumulates in
        # float32 and rounds once, as cuBLAS's float32 compute type does; a float32 BLAS GEMM gives the same.
        if a.dtype == numpy.float16 and b.dtype == numpy.float16:
            with self._blas_scope():
                return (a.astype(numpy.float32) @ b.astype(numpy.float32)).astype(numpy.float16)
        return a @ b

    def matmul(self, a, b):
        if not (self._fast(a, b) and a.dtype == b.dtype and a.ndim >= 2 and b.ndim == 2):
            with self._blas_scope():
                return super().matmul(a, b)
        lead, (m, k), n = a.shape[:-1], (math.prod(a.shape[:-1]), a.shape[-1]), b.shape[1]
        if a.ndim > 2:
            a = numpy.ascontiguousarray(a).reshape(m, k)
        out = numpy.empty((m, n), dtype=a.dtype)
        with self._blas_scope():
            if self._own_gemm and m > 1:
                self._split(m, (m * k * n) >> 4, lambda lo, hi: numpy.matmul(a[lo:hi], b, out=out[lo:hi]))
            else:
                numpy.matmul(a, b, out=out)
        return out.reshape(lead + (n,))

    # ------------------------------------------------------------ convolution
    @staticmethod
    def _fast(*arrays):
        return all(isinstance(a, numpy.ndarray) and a.dtype in _FLOATS for a in arrays)

    def _pad(self, x, pads):
        """Zero-pad NHWC ``x`` into a kept zero-bordered buffer (only its interior is ever written)."""
        top, bottom, left, right = pads
        if not (top or bottom or left or right):
            return x
        n, h, w, c = x.shape
        shape = (n, h + top + bottom, w + left + right, c)
        key = (shape, x.dtype.str, tuple(pads))
        cache = getattr(self._local, "pads", None)
        if cache is None:
            cache = self._local.pads = OrderedDict()
        buf = cache.pop(key, None)
        if buf is None:
            buf = numpy.zeros(shape, dtype=x.dtype)
            while len(cache) >= 4:
                cache.popitem(last=False)
        cache[key] = buf
        inner = buf[:, top : top + h, left : left + w, :]

        def fill(lo, hi):
            numpy.copyto(inner[lo:hi], x[lo:hi])

        self._split(n, x.size, fill)
        return buf

    def _patches(self, x, window, strides, pads, dilation, out_hw):
        """NHWC ``x``'s patches as a view: (N, OH, OW, C) for an unpadded 1x1 kernel, else
        (N, OH, OW, KH, KW, C) over the kept padded buffer."""
        (kh, kw), (sh, sw), (dh, dw), (oh, ow) = window, strides, dilation, out_hw
        if kh == kw == 1 and not any(pads):
            return x[:, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw, :]
        xpad = self._pad(x, pads)
        s_n, s_h, s_w, s_c = xpad.strides
        return numpy.lib.stride_tricks.as_strided(
            xpad, shape=(x.shape[0], oh, ow, kh, kw, x.shape[3]), strides=(s_n, s_h * sh, s_w * sw, s_h * dh, s_w * dw, s_c)
        )

    def _im2col(self, x, window, strides, pads, dilation, out_hw):
        if not self._fast(x):
            return super()._im2col(x, window, strides, pads, dilation, out_hw)
        n, (oh, ow) = x.shape[0], out_hw
        k = window[0] * window[1] * x.shape[3]
        view = self._patches(x, window, strides, pads, dilation, out_hw)
        if view.flags.c_contiguous:
            return view.reshape(n * oh * ow, k)
        col = self._new_col(view.shape, x.dtype)

        def fill(lo, hi):
            numpy.copyto(col[lo:hi], view[lo:hi])

        self._split(n, col.size, fill)
        return col.reshape(n * oh * ow, k)

    @staticmethod
    def _patch_rows(view, a, b, buf):
        """Images ``a:b`` of a patch view as a (rows, K) matrix: the view itself when contiguous, else a copy in ``buf``."""
        part = view[a:b]
        rows = part.shape[0] * part.shape[1] * part.shape[2]
        if part.flags.c_contiguous:
            return part.reshape(rows, -1)
        col = buf[: part.size].reshape(part.shape)
        numpy.copyto(col, part)
        return col.reshape(rows, -1)

    def _conv_geometry(self, x, kernel_shape, strides, pads, dilation):
        n, h, w, c = x.shape
        kh, kw = int(kernel_shape[0]), int(kernel_shape[1])
        oh = out_size(h, kh, strides[0], dilation[0], pads[0] + pads[1])
        ow = out_size(w, kw, strides[1], dilation[1], pads[2] + pads[3])
        return n, kh, kw, c, oh, ow

    def conv2d_forward(self, x, kernel, strides, pads, dilation, data_format):
        """im2col and one GEMM; with our own threads, image by image in each thread's cache
        (the patches of a few images, then their GEMM), so no patch matrix is written out."""
        reduced = self._reduced_conv2d_forward(x, kernel, strides, pads, dilation, data_format)
        if reduced is not None:  # huge strides, dilation or padding (see window_plans._axis_plan)
            return reduced
        if not self._fast(x) or 0 in x.shape or 0 in kernel.shape:
            return super().conv2d_forward(x, kernel, strides, pads, dilation, data_format)
        x = self._to_nhwc(x, data_format)
        n, kh, kw, c, oh, ow = self._conv_geometry(x, kernel.shape, strides, pads, dilation)
        f, k, per_image = kernel.shape[3], kh * kw * c, oh * ow
        k2d = kernel.astype(x.dtype, copy=False).reshape(k, f)
        y = numpy.empty((n * per_image, f), dtype=x.dtype)
        with self._blas_scope():
            if not self._own_gemm:
                numpy.matmul(self._im2col(x, (kh, kw), strides, pads, dilation, (oh, ow)), k2d, out=y)
            else:
                view = self._patches(x, (kh, kw), strides, pads, dilation, (oh, ow))

                def step(a, b, buf):
                    rows = self._patch_rows(view, a, b, buf)
                    numpy.matmul(rows, k2d, out=y[a * per_image : b * per_image])

                if view.flags.c_contiguous:  # an unpadded stride-1 1x1 kernel: no copy, one GEMM per thread
                    self._chunks(n, per_image * k, step, chunk=n * per_image * k)
                else:
                    buffer = lambda i: self._new_col((i * per_image * k,), x.dtype)  # noqa: E731
                    self._chunks(n, per_image * k, step, buffer, chunk=_CONV_CHUNK)
        return self._from_nhwc(y.reshape(n, oh, ow, f), data_format)

    def conv2d_backward_kernel(self, x, dy, kernel_shape, strides, pads, dilation, data_format, patches=None):
        """``col.T @ dy2d``; with our own threads, per chunk of images (patches rebuilt in cache),
        summed in float64 across chunks."""
        reduced = self._reduced_conv2d_backward_kernel(x, dy, kernel_shape, strides, pads, dilation, data_format)
        if reduced is not None:
            return reduced
        if not self._fast(x, dy) or 0 in x.shape or 0 in dy.shape or 0 in kernel_shape:
            return super().conv2d_backward_kernel(x, dy, kernel_shape, strides, pads, dilation, data_format)
        x = self._to_nhwc(x, data_format)
        dy = self._to_nhwc(dy, data_format)
        n, kh, kw, c, oh, ow = self._conv_geometry(x, kernel_shape, strides, pads, dilation)
        f, k, per_image = int(kernel_shape[3]), kh * kw * c, oh * ow
        dy2d = numpy.ascontiguousarray(dy).reshape(n * per_image, f)
        with self._blas_scope():
            if not self._own_gemm:
                col = self._im2col(x, (kh, kw), strides, pads, dilation, (oh, ow))
                # A long-K product: OpenBLAS's threads synchronise on every K block
                # (and stall when a core is busy elsewhere), so it runs on one thread.
                with _BLAS:
                    return (col.T @ dy2d).reshape(kh, kw, c, f)
            view = self._patches(x, (kh, kw), strides, pads, dilation, (oh, ow))

            def step(a, b, st):
                rows = self._patch_rows(view, a, b, st[0])
                st[1] += rows.T @ dy2d[a * per_image : b * per_image]

            states = self._chunks(
                n,
                per_image * k,
                step,
                lambda i: [self._new_col((i * per_image * k,), x.dtype), numpy.zeros((k, f))],
                chunk=_CONV_KERNEL_CHUNK,
            )
        total = sum(st[1] for st in states) if states else numpy.zeros((k, f))
        return total.astype(x.dtype).reshape(kh, kw, c, f)

    def conv2d_backward_input(self, dy, kernel, x_shape, strides, pads, dilation, data_format):
        """With our own threads and stride 1, a forward convolution of ``dy`` with the flipped,
        transposed kernel (padded by ``(k - 1) * d - pad``). Otherwise one GEMM per kernel tap,
        ``dy2d @ kernel[i, j].T``, added into the input positions the tap touched (no
        (M, KH*KW*C) gradient matrix); a tap that covers all of dx (the centre of a 'same'
        stride-1 window) is written straight into dx, which then needs no zeroing."""
        reduced = self._reduced_conv2d_backward_input(dy, kernel, x_shape, strides, pads, dilation, data_format)
        if reduced is not None:
            return reduced
        if not self._fast(dy) or 0 in dy.shape or 0 in kernel.shape or 0 in tuple(x_shape):
            return super().conv2d_backward_input(dy, kernel, x_shape, strides, pads, dilation, data_format)
        n, h, w, c = self._shape_nhwc(x_shape, data_format)
        kh, kw, _, f = kernel.shape
        (sh, sw), (dh, dw) = strides, dilation
        flipped_pads = ((kh - 1) * dh - pads[0], (kh - 1) * dh - pads[1], (kw - 1) * dw - pads[2], (kw - 1) * dw - pads[3])
        if self._own_gemm and (sh, sw) == (1, 1) and min(flipped_pads) >= 0 and kh * kw > 1:
            # Stride 1: dx is the correlation of dy with the flipped, transposed kernel,
            # padded by (k - 1) * d - pad: a forward convolution (patches built in cache).
            flipped = kernel.astype(dy.dtype, copy=False)[::-1, ::-1].transpose(0, 1, 3, 2)
            return self.conv2d_forward(dy, numpy.ascontiguousarray(flipped), (1, 1), flipped_pads, (dh, dw), data_format)
        dy = self._to_nhwc(dy, data_format)
        _, oh, ow, _ = dy.shape
        per_image = oh * ow
        k2d = kernel.astype(dy.dtype, copy=False).reshape(kh * kw * c, f)
        dy2d = numpy.ascontiguousarray(dy).reshape(n * per_image, f)
        taps = _taps((h, w), (oh, ow), (kh, kw), strides, dilation, pads)
        whole = (slice(0, h, 1), slice(0, w, 1), slice(0, oh), slice(0, ow))
        first = next((k for k, o, i in taps if i[1:3] + o[1:3] == whole), None)
        rest = [t for t in taps if t[0] != first]
        dx = numpy.empty((n, h, w, c), dtype=dy.dtype)
        with self._blas_scope():
            if not self._own_gemm:
                if first is None:
                    self._split(n, dx.size, lambda lo, hi: dx[lo:hi].fill(0))
                else:
                    numpy.matmul(dy2d, k2d[first * c : (first + 1) * c].T, out=dx.reshape(n * h * w, c))
                for k, out_idx, in_idx in rest:
                    part = (dy2d @ k2d[k * c : (k + 1) * c].T).reshape(n, oh, ow, c)

                    def add(lo, hi, part=part, out_idx=out_idx, in_idx=in_idx):
                        target = dx[lo:hi][in_idx]
                        numpy.add(target, part[lo:hi][out_idx], out=target)

                    self._split(n, dx.size, add)
                return self._from_nhwc(dx, data_format)

            def step(a, b, buf):
                g, d = dy2d[a * per_image : b * per_image], dx[a:b]
                if first is None:
                    d.fill(0)
                else:
                    numpy.matmul(g, k2d[first * c : (first + 1) * c].T, out=d.reshape(-1, c))
                part = buf[: (b - a) * per_image * c].reshape(b - a, oh, ow, c)
                for k, out_idx, in_idx in rest:
                    numpy.matmul(g, k2d[k * c : (k + 1) * c].T, out=part.reshape(-1, c))
                    target = d[in_idx]
                    numpy.add(target, part[out_idx], out=target)

            buffer = lambda i: self._new_col((i * per_image * c,), dy.dtype)  # noqa: E731
            self._chunks(n, h * w * c + per_image * (f + c), step, buffer, chunk=_CONV_CHUNK)
        return self._from_nhwc(dx, data_format)

    # ---------------------------------------------------------------- pooling
    @staticmethod
    def _is_2x2(pool_size, strides, pads):
        return tuple(pool_size) == (2, 2) and tuple(strides) == (2, 2) and not any(pads)

    @staticmethod
    def _cells(a, oh, ow):
        """The four cell planes of 2x2 stride-2 windows over NHWC ``a``, in window order."""
        return [a[:, i : 2 * oh : 2, j : 2 * ow : 2, :] for i in (0, 1) for j in (0, 1)]

    def max_pool2d_forward(self, x, pool_size, strides, pads, data_format):
        if not (self._fast(x) and self._is_2x2(pool_size, strides, pads)):
            return super().max_pool2d_forward(x, pool_size, strides, pads, data_format)
        x = self._to_nhwc(x, data_format)
        n, h, w, c = x.shape
        oh, ow = h // 2, w // 2
        a, b, cc, d = self._cells(x, oh, ow)
        y = numpy.empty((n, oh, ow, c), dtype=x.dtype)
        arg = numpy.empty((n, oh, ow, c), dtype=numpy.int32)

        def step(lo, hi, st):
            # The generic order: max(max(max(-inf, a), b), c), d), and first max
            # = a != y, + (a != y & b != y), + (... & c != y).
            yy = y[lo:hi]
            numpy.maximum(a[lo:hi], b[lo:hi], out=yy)
            numpy.maximum(yy, cc[lo:hi], out=yy)
            numpy.maximum(yy, d[lo:hi], out=yy)
            m0, m1, m2 = (m[: hi - lo] for m in st)
            # A NaN cell is the first max of a NaN window (the generic rule);
            # checked per chunk (max propagates NaN: one read-only pass) so that
            # chunks without NaN pay nothing more.
            nan = yy.size and numpy.isnan(yy.max())
            numpy.not_equal(a[lo:hi], yy, out=m0)
            if nan:
                numpy.logical_and(m0, a[lo:hi] == a[lo:hi], out=m0)
            numpy.not_equal(b[lo:hi], yy, out=m1)
            if nan:
                numpy.logical_and(m1, b[lo:hi] == b[lo:hi], out=m1)
            numpy.logical_and(m1, m0, out=m1)
            numpy.not_equal(cc[lo:hi], yy, out=m2)
            if nan:
                numpy.logical_and(m2, cc[lo:hi] == cc[lo:hi], out=m2)
            numpy.logical_and(m2, m1, out=m2)
            aa = arg[lo:hi]
            numpy.add(m0, m1, out=aa, dtype=numpy.int32)
            numpy.add(aa, m2, out=aa)

        masks = lambda k: [numpy.empty((k, oh, ow, c), dtype=bool) for _ in range(3)]  # noqa: E731
        self._chunks(n, h * w * c, step, masks, chunk=_POOL_CHUNK)
        return self._from_nhwc(y, data_format), self._from_nhwc(arg, data_format)

    def _empty_dx_2x2(self, x_shape, dtype, data_format):
        n, h, w, c = self._shape_nhwc(x_shape, data_format)
        dx = numpy.empty((n, h, w, c), dtype=dtype)
        if h % 2:
            dx[:, h - 1] = 0
        if w % 2:
            dx[:, :, w - 1] = 0
        return dx

    def max_pool2d_backward(self, dy, argmax, x_shape, pool_size, strides, pads, data_format):
        if not (self._fast(dy) and self._is_2x2(pool_size, strides, pads)):
            return super().max_pool2d_backward(dy, argmax, x_shape, pool_size, strides, pads, data_format)
        dy = self._to_nhwc(dy, data_format)
        argmax = self._to_nhwc(argmax, data_format)
        dx = self._empty_dx_2x2(x_shape, dy.dtype, data_format)
        n, oh, ow, _ = dy.shape
        cells = self._cells(dx, oh, ow)

        def step(lo, hi, mask):
            g, idx, m = dy[lo:hi], argmax[lo:hi], mask[: hi - lo]
            for k, cell in enumerate(cells):
                numpy.equal(idx, k, out=m)
                numpy.multiply(g, m, out=cell[lo:hi])

        self._chunks(n, math.prod(dx.shape[1:]), step, lambda k: numpy.empty((k,) + dy.shape[1:], dtype=bool), chunk=_POOL_CHUNK)
        return self._from_nhwc(dx, data_format)

    def avg_pool2d_forward(self, x, pool_size, strides, pads, data_format):
        if not (self._fast(x) and self._is_2x2(pool_size, strides, pads)):
            return super().avg_pool2d_forward(x, pool_size, strides, pads, data_format)
        x = self._to_nhwc(x, data_format)
        n, h, w, c = x.shape
        oh, ow = h // 2, w // 2
        a, b, cc, d = self._cells(x, oh, ow)
        y = numpy.empty((n, oh, ow, c), dtype=x.dtype)
        four = x.dtype.type(4)

        def step(lo, hi, st):
            yy = y[lo:hi]
            numpy.add(a[lo:hi], b[lo:hi], out=yy)
            numpy.add(yy, cc[lo:hi], out=yy)
            numpy.add(yy, d[lo:hi], out=yy)
            numpy.divide(yy, four, out=yy)

        self._chunks(n, h * w * c, step, chunk=_POOL_CHUNK)
        return self._from_nhwc(y, data_format)

    def avg_pool2d_backward(self, dy, x_shape, pool_size, strides, pads, data_format):
        if not (self._fast(dy) and self._is_2x2(pool_size, strides, pads)):
            return super().avg_pool2d_backward(dy, x_shape, pool_size, strides, pads, data_format)
        dy = self._to_nhwc(dy, data_format)
        dx = self._empty_dx_2x2(x_shape, dy.dtype, data_format)
        n, oh, ow, _ = dy.shape
        cells = self._cells(dx, oh, ow)
        four = dy.dtype.type(4)

        def step(lo, hi, st):
            g = cells[0][lo:hi]
            numpy.divide(dy[lo:hi], four, out=g)
            for cell in cells[1:]:
                numpy.copyto(cell[lo:hi], g)

        self._chunks(n, math.prod(dx.shape[1:]), step, chunk=_POOL_CHUNK)
        return self._from_nhwc(dx, data_format)

    # ---------------------------------------------------- batch normalization
    def _channel_sum(self, a, axis):
        # BLAS matrix-vector products with a ones vector are 3-8x faster than
        # ndarray.sum over the batch axes (run on one BLAS thread: see _BlasThreads).
        if a.dtype not in _FLOATS or not a.flags.c_contiguous or a.size == 0:
            return super()._channel_sum(a, axis)
        c = a.shape[axis]
        pre = math.prod(a.shape[:axis])
        post = a.size // (pre * c)
        with self._blas_scope():
            if post > 1:
                a = (a.reshape(pre * c, post) @ numpy.ones(post, dtype=a.dtype)).reshape(pre, c)
            else:
                a = a.reshape(pre, c)
            return numpy.ones(pre, dtype=a.dtype) @ a

    def _bn_fast(self, x, axis):
        return (
            isinstance(x, numpy.ndarray)
            and x.dtype in _FLOATS
            and axis == x.ndim - 1
            and x.flags.c_contiguous
            and x.size > 0
        )

    def batch_norm_forward_training(self, x, gamma, beta, axis, epsilon):
        """The generic formulas, pass by pass and in the same order (so the same results bit for
        bit), each pass split across threads over rows of tiled channels."""
        if not self._bn_fast(x, axis):
            return super().batch_norm_forward_training(x, gamma, beta, axis, epsilon)
        dtype = x.dtype
        gamma, beta = self._bn_vec(gamma, dtype), self._bn_vec(beta, dtype)
        c = x.shape[axis]
        div = max(x.size // c, 1)
        mean = self._channel_sum(x, axis) / div
        centered = numpy.empty_like(x)
        sq = self._scratch(x.size, dtype).reshape(x.shape)
        (xr, r), cr, sr = _rows(x, c), _rows(centered, c)[0], _rows(sq, c)[0]
        mean_t = numpy.tile(mean, r)

        def center(lo, hi):
            numpy.subtract(xr[lo:hi], mean_t, out=cr[lo:hi])
            numpy.multiply(cr[lo:hi], cr[lo:hi], out=sr[lo:hi])

        self._split_rows(xr.shape[0], xr.shape[1], center)
        var = self._channel_sum(sq, axis) / div
        rstd = 1 / numpy.sqrt(var + epsilon)
        inv = rstd if gamma is None else rstd * gamma
        shift = -mean * inv
        if beta is not None:
            shift = shift + beta
        y = numpy.empty_like(x)
        yr = _rows(y, c)[0]
        inv_t, shift_t = numpy.tile(inv, r), numpy.tile(shift, r)

        def affine(lo, hi):
            numpy.multiply(xr[lo:hi], inv_t, out=yr[lo:hi])
            numpy.add(yr[lo:hi], shift_t, out=yr[lo:hi])

        self._split_rows(xr.shape[0], xr.shape[1], affine)
        cache = (centered, rstd, gamma, beta is not None, axis, div, dtype)
        return y, mean, var, cache

    def batch_norm_backward_training(self, dy, cache):
        centered, rstd, gamma, has_beta, axis, div, out_dtype = cache
        if not (self._bn_fast(centered, axis) and self._fast(dy) and dy.dtype == centered.dtype and dy.shape == centered.shape):
            return super().batch_norm_backward_training(dy, cache)
        dtype = centered.dtype
        c = centered.shape[axis]
        dy = numpy.ascontiguousarray(dy)
        sum_dy = self._channel_sum(dy, axis)
        prod = self._scratch(dy.size, dtype).reshape(dy.shape)
        (dyr, r), cr, pr = _rows(dy, c), _rows(centered, c)[0], _rows(prod, c)[0]

        def multiply(lo, hi):
            numpy.multiply(dyr[lo:hi], cr[lo:hi], out=pr[lo:hi])

        self._split_rows(dyr.shape[0], dyr.shape[1], multiply)
        sum_dy_xhat = self._channel_sum(prod, axis) * rstd
        g = rstd if gamma is None else rstd * gamma
        c1 = -g * rstd * sum_dy_xhat / div
        c0 = -g * sum_dy / div
        dx = numpy.empty_like(dy)
        dxr = _rows(dx, c)[0]
        g_t, c1_t, c0_t = numpy.tile(g, r), numpy.tile(c1, r), numpy.tile(c0, r)

        def combine(lo, hi):
            # dx = dy*g; dx += centered*c1; dx += c0 (the generic order).
            out, tmp = dxr[lo:hi], pr[lo:hi]
            numpy.multiply(dyr[lo:hi], g_t, out=out)
            numpy.multiply(cr[lo:hi], c1_t, out=tmp)
            numpy.add(out, tmp, out=out)
            numpy.add(out, c0_t, out=out)

        self._split_rows(dxr.shape[0], dxr.shape[1], combine)
        dgamma = None if gamma is None else sum_dy_xhat
        dbeta = sum_dy if has_beta else None
        return dx, dgamma, dbeta

    def batch_norm_forward_inference(self, x, gamma, beta, mean, var, axis, epsilon):
        if not self._bn_fast(x, axis):
            return super().batch_norm_forward_inference(x, gamma, beta, mean, var, axis, epsilon)
        dtype = x.dtype
        gamma, beta = self._bn_vec(gamma, dtype), self._bn_vec(beta, dtype)
        mean, var = mean.astype(dtype, copy=False), var.astype(dtype, copy=False)
        inv = 1 / numpy.sqrt(var + epsilon)
        if gamma is not None:
            inv = inv * gamma
        shift = -mean * inv
        if beta is not None:
            shift = shift + beta
        c = x.shape[axis]
        y = numpy.empty_like(x)
        (xr, r), yr = _rows(x, c), _rows(y, c)[0]
        inv_t, shift_t = numpy.tile(inv, r), numpy.tile(shift, r)

        def affine(lo, hi):
            numpy.multiply(xr[lo:hi], inv_t, out=yr[lo:hi])
            numpy.add(yr[lo:hi], shift_t, out=yr[lo:hi])

        self._split_rows(xr.shape[0], xr.shape[1], affine)
        return y

    # ------------------------------------------------ helpers for layer glue
    def bias_add(self, z, bias, axis):
        if not (
            self._fast(z)
            and isinstance(bias, numpy.ndarray)
            and z.flags.c_contiguous
            and axis == z.ndim - 1
            and z.size > 0
            and bias.shape == (z.shape[axis],)
        ):
            return super().bias_add(z, bias, axis)
        zr, r = _rows(z, z.shape[axis])
        b = numpy.tile(bias, r)

        def add(lo, hi):
            numpy.add(zr[lo:hi], b, out=zr[lo:hi])

        self._split_rows(zr.shape[0], zr.shape[1], add)
        return z

    def relu(self, x):
        if not (self._fast(x) and x.flags.c_contiguous):
            return super().relu(x)
        y = numpy.empty_like(x)
        # Against a row of zeros rather than the scalar 0: NumPy's maximum runs
        # much faster on two arrays (same values, NaN included).
        width = _ROW if x.size % _ROW == 0 else x.size
        xr, yr = x.reshape(-1, width), y.reshape(-1, width)
        zeros = numpy.zeros(width, dtype=x.dtype)

        def run(lo, hi):
            numpy.maximum(xr[lo:hi], zeros, out=yr[lo:hi])

        self._split_rows(xr.shape[0], width, run)
        return y

    def relu_backward(self, x, dy):
        if not (self._fast(x, dy) and x.shape == dy.shape and x.flags.c_contiguous and dy.flags.c_contiguous):
            return super().relu_backward(x, dy)
        dx = numpy.empty_like(dy)
        xf, df, of = x.reshape(-1), dy.reshape(-1), dx.reshape(-1)

        def run(lo, hi):
            numpy.multiply(df[lo:hi], xf[lo:hi] > 0, out=of[lo:hi])

        self._split(xf.size, xf.size, run)
        return dx
