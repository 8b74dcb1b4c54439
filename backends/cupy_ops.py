"""GPU backend: :class:`backends.ops.Ops` on CuPy, with CUDA kernels for the hot paths.

The module imports without CuPy; only creating :class:`CupyOps` needs it.

Convolution, pooling (max, average, stochastic, global), batch
normalization and the optimizers' multi-tensor steps run on the RawKernels
in ``backends/kernels/*.cu`` (described
by :func:`backends.cuda_sources.kernel_modules`); matrix products go through
``cupy.matmul`` (cuBLAS). CuPy 14 has no cuDNN, so these kernels are the whole
convolution and pooling path.

How the wrappers treat their inputs:

* dtype: float32 and float64 run in their own precision; float16 is converted
  to float32 for the kernels and the results converted back (so float16
  arithmetic is done in float32 here); anything else raises TypeError.
* Layout: inputs are made C-contiguous in their own layout. Pooling kernels
  read and write NHWC or NCHW directly; the convolution im2col reads NCHW
  through element strides (no copy), col2im writes NCHW directly, and only
  the (N*OH*OW, F) matrix of the products is NHWC (transposed with cupy for
  channels_first).
* Modules are compiled lazily (``cupy.RawModule``, compiled by CuPy on the
  first kernel fetched, cached on disk by CuPy and in memory per process
  here), never at import. A missing NVRTC or a failed compile raises one
  RuntimeError naming the cause.
* Window geometry far beyond the input (huge strides, dilations, windows or
  padding) is first reduced by :class:`backends.ops.Ops` (``backends/window_plans.py``), so
  the kernels get small int32 arguments; pooling kernels also visit only the
  window cells inside the input.
* The im2col workspace is bounded by :attr:`CupyOps.im2col_limit_bytes`
  (default 256 MiB, or ``GPULAYERS_IM2COL_LIMIT_MB`` in the environment):
  larger batches run in chunks of images. An out-of-memory error inside a
  chunk retries with half the chunk, down to one image, then raises
  MemoryError naming the layer's shapes. In a training step
  (:meth:`CupyOps.conv2d_forward_train`) the forward's im2col matrix is kept
  for the weight gradient when one chunk held the whole batch, as long as
  the matrices kept alive, across layers, stay within
  :attr:`CupyOps.keep_patches_bytes` (default 256 MiB; 0 keeps none): one
  im2col pass fewer, for bounded memory.
"""

import collections
import os
import threading
import weakref

import numpy

from backends.cuda_args import BLOCK as _BLOCK, F16 as _F16, F32 as _F32, F64 as _F64, i32 as _i32, i64 as _i64, prod as _prod
from backends.cupy_batchnorm import BatchNormKernels
from backends.cupy_elementwise import ElementwiseKernels, PhiloxStream
from backends.cupy_pooling import PoolingKernels
from backends.ops import Ops
from backends.window_plans import out_size

__all__ = ["CupyOps", "IM2COL_LIMIT_ENV"]

IM2COL_LIMIT_ENV = "GPULAYERS_IM2COL_LIMIT_MB"
_DEFAULT_IM2COL_LIMIT_MB = 256

_WAVES = 16  # grid-stride grids are capped at _WAVES blocks per SM

# Process-wide caches (guarded by _lock): RawModule per kernel file, kernel
# functions per (file, expression, device), SM count per device.
_lock = threading.Lock()
_raw_modules = {}
_functions = {}
_sm_counts = {}


def _limit_from_env():
    text = os.environ.get(IM2COL_LIMIT_ENV, "").strip()
    if not text:
        return _DEFAULT_IM2COL_LIMIT_MB * 2**20
    try:
        mb = float(text)
    except ValueError:
        mb = -1.0
    if not mb > 0:
        raise ValueError(f"{IM2COL_LIMIT_ENV} must be a positive number of MiB. Received: {text!r}")
    return max(1, int(mb * 2**20))


def _module_spec(name):
    from backends.cuda_sources import kernel_modules

    for spec in kernel_modules():
        if spec.name == name:
            return spec
    raise KeyError(f"no CUDA kernel module named {name!r}")


def _load_error(spec, expression, exc):
    """One RuntimeError saying why the kernels of ``spec`` cannot be loaded."""
    text = f"{type(exc).__name__}: {exc}"
    where = f"{os.path.basename(spec.path)} ({expression})"
    try:
        from cupy.cuda.compiler import CompileException
    except Exception:  # pragma: no cover - cupy without its compiler module
        CompileException = ()
    if CompileException and isinstance(exc, CompileException):
        return RuntimeError(f"NVRTC failed to compile the gpulayers CUDA kernels in {where}: {text}")
    low = text.lower()
    if "nvrtc" in low:
        return RuntimeError(
            f"NVRTC, CUDA's runtime compiler, is missing or cannot be loaded, so the gpulayers CUDA kernels "
            f"in {where} cannot be compiled. Install the NVRTC matching cupy's CUDA version (for "
            f"cupy-cuda13x: pip install nvidia-cuda-nvrtc, CUDA 13 line; or a CUDA toolkit). Cause: {text}"
        )
    if "insufficientdriver" in low or "driver version" in low:
        return RuntimeError(f"The NVIDIA driver is missing or too old for this CuPy build; cannot load {where}. Cause: {text}")
    if "nodevice" in low or "no cuda-capable device" in low:
        return RuntimeError(f"No CUDA device is visible; cannot load {where}. Cause: {text}")
    return RuntimeError(f"Loading the gpulayers CUDA kernels in {where} failed. Cause: {text}")


class _KeptPatches:
    """A forward's im2col matrix kept for the weight gradient; its bytes count against
    :attr:`CupyOps.keep_patches_bytes` for as long as it lives."""

    __slots__ = ("array", "__weakref__")

    def __init__(self, array):
        self.array = array


def _release(counter, nbytes):
    with _lock:
        counter[0] -= nbytes


_ConvGeom = collections.namedtuple(
    "_ConvGeom", "n h w c kh kw f oh ow sh sw dh dw top left cf K rows m direct"
)


class CupyOps(PoolingKernels, BatchNormKernels, ElementwiseKernels, Ops):
    """Operations on ``cupy.ndarray``, with CUDA kernels for convolution, pooling and batch norm.

    Args:
        im2col_limit_bytes: bound on the im2col workspace of one convolution
            call; default from ``GPULAYERS_IM2COL_LIMIT_MB`` or 256 MiB. It
            can also be changed later through the attribute of that name.
    """

    name = "cupy"
    xp = None  # set per instance: cupy is imported lazily

    def __init__(self, im2col_limit_bytes=None):
        try:
            import cupy
        except Exception as exc:  # ImportError, or a broken install raising anything
            raise ImportError(f"CupyOps needs cupy, which does not import here ({type(exc).__name__}: {exc})") from exc
        self.xp = cupy
        self.im2col_limit_bytes = _limit_from_env() if im2col_limit_bytes is None else max(1, int(im2col_limit_bytes))
        self.keep_patches_bytes = 256 * 2**20
        self._kept_patches = [0]  # bytes of the im2col matrices kept alive now, across layers
        self._ones_cache = {}
        self._done_counters = {}

    def asarray(self, x, dtype=None):
        """cupy array from a cupy/numpy array, a CUDA array interface, ``__dlpack__`` or ``__array__``."""
        cupy = self.xp
        if isinstance(x, cupy.ndarray):
            return super().asarray(x, dtype)
        if not isinstance(x, numpy.ndarray):
            if hasattr(x, "__cuda_array_interface__"):
                return cupy.asarray(x, dtype=dtype)
            if hasattr(x, "__dlpack__"):
                try:
                    return self.asarray(cupy.from_dlpack(x), dtype)
                except Exception:  # a host-side DLPack tensor: go through numpy below
                    pass
            x = numpy.from_dlpack(x) if hasattr(x, "__dlpack__") and not hasattr(x, "__array__") else numpy.asarray(x)
        return cupy.asarray(x, dtype=dtype)

    def device_name(self):
        """The current CUDA device's name and memory, with cupy's version."""
        cupy = self.xp
        device = cupy.cuda.Device()
        props = cupy.cuda.runtime.getDeviceProperties(device.id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        total = props["totalGlobalMem"] / 2**30
        return f"GPU {device.id}: {name} ({total:.0f} GiB), cupy {cupy.__version__}"

    def set_tf32(self, enabled):
        # cuBLAS's compute type for float32 GEMMs (cupy.matmul): TF32 tensor cores, or true float32.
        from cupy._core import _routines_linalg as linalg

        linalg.set_compute_type(numpy.float32, linalg.COMPUTE_TYPE_TF32 if enabled else linalg.COMPUTE_TYPE_FP32)

    def to_numpy(self, x):
        if isinstance(x, self.xp.ndarray):
            return x.get()
        return numpy.asarray(x)

    supports_graphs = True
    _capturing = False  # set by backends.cuda_graphs.capture while it records

    def capture_graph(self, fn):
        from backends import cuda_graphs

        return cuda_graphs.capture(self, fn)

    def refuse_host_random(self):
        if self._capturing:
            from backends.cuda_graphs import GraphCaptureError

            raise GraphCaptureError(
                "a draw from a host-seeded random generator (gpulayers.random, or a layer's own generator) "
                "cannot be replayed by a graph: it would repeat the same numbers"
            )

    def rng(self, seed):
        self.refuse_host_random()
        random = self.xp.random
        if hasattr(random, "default_rng"):
            return random.default_rng(seed)
        return random.RandomState(seed)

    def random_stream(self, seed):
        return PhiloxStream(seed, self.xp.zeros(2, dtype=numpy.uint64))

    def uniform(self, rng, shape, dtype):
        if not isinstance(rng, PhiloxStream):
            self.refuse_host_random()
            return super().uniform(rng, shape, dtype)
        dtype = numpy.dtype(dtype)
        u = self.xp.empty(shape, dtype=dtype if dtype in (_F32, _F64) else _F32)
        self._elementwise_stream("philox_fill", u.dtype, u.size, (u,), rng)
        return self._uniform_as(u, dtype)

    # ------------------------------------------------------------ kernels
    def _kernel(self, module, kernel, dtype):
        """The compiled ``kernel<T>`` of ``module`` for numpy ``dtype`` (compiles on first use)."""
        cupy = self.xp
        try:
            device = cupy.cuda.runtime.getDevice()
        except Exception as exc:  # no driver / no device
            spec = _module_spec(module)
            raise _load_error(spec, spec.expression(kernel, dtype), exc) from exc
        key = (module, kernel, numpy.dtype(dtype).name, device)
        fn = _functions.get(key)
        if fn is not None:
            return fn
        spec = _module_spec(module)
        expression = spec.expression(kernel, dtype)
        with _lock:
            raw = _raw_modules.get(module)
            if raw is None:
                raw = cupy.RawModule(
                    code=spec.source, options=tuple(spec.options), name_expressions=list(spec.name_expressions)
                )
                _raw_modules[module] = raw
        try:
            fn = raw.get_function(expression)
        except Exception as exc:
            raise _load_error(spec, expression, exc) from exc
        with _lock:
            _functions[key] = fn
        return fn

    def _grid_cap(self):
        cupy = self.xp
        device = cupy.cuda.runtime.getDevice()
        sms = _sm_counts.get(device)
        if sms is None:
            try:
                sms = int(cupy.cuda.runtime.deviceGetAttribute(cupy.cuda.runtime.cudaDevAttrMultiProcessorCount, device))
            except Exception:
                sms = 80
            _sm_counts[device] = sms = max(1, sms)
        return sms * _WAVES

    def _sm_count(self):
        return self._grid_cap() // _WAVES

    def _launch(self, module, kernel, dtype, work, args, per_block=_BLOCK):
        """Launch a 1-D grid over ``work`` items (``per_block`` items per block before grid-striding)."""
        work = int(work)
        if work <= 0:
            return
        fn = self._kernel(module, kernel, dtype)
        grid = min(-(-work // per_block), self._grid_cap())
        fn((int(grid),), (_BLOCK,), args)

    def _launch_blocks(self, module, kernel, dtype, units, args, block=_BLOCK):
        """Launch a block-per-unit reduction kernel over ``units`` work units."""
        units = int(units)
        if units <= 0:
            return
        fn = self._kernel(module, kernel, dtype)
        fn((int(min(units, self._grid_cap())),), (int(block),), args)

    # ------------------------------------------------------------ dtypes
    @staticmethod
    def _compute_dtype(dtype, op):
        """float32/float64 -> itself, float16 -> float32; refuse anything else."""
        d = numpy.dtype(dtype)
        if d == _F32 or d == _F64:
            return d
        if d == _F16:
            return _F32
        raise TypeError(
            f"CupyOps.{op}: the CUDA kernels take float16, float32 or float64 arrays; received dtype {d}."
        )

    def _prep(self, a, dtype):
        """``a`` as a C-contiguous cupy array of ``dtype`` (no copy when it already is)."""
        return self.xp.ascontiguousarray(self.asarray(a), dtype=dtype)

    @staticmethod
    def _check_shape(op, what, arr, shape):
        if tuple(arr.shape) != tuple(shape):
            raise ValueError(f"CupyOps.{op}: {what} has shape {tuple(arr.shape)}, expected {tuple(shape)}.")

    # ------------------------------------------------------------ convolution
    def _conv_geom(self, x_shape, kernel_shape, strides, pads, dilation, data_format, op):
        n, h, w, c = self._shape_nhwc(x_shape, data_format)
        kh, kw, kc, f = (int(v) for v in kernel_shape)
        if kc != c:
            raise ValueError(
                f"CupyOps.{op}: kernel {tuple(kernel_shape)} expects {kc} input channels but x "
                f"{tuple(x_shape)} ({data_format}) has {c}."
            )
        sh, sw = (int(v) for v in strides)
        dh, dw = (int(v) for v in dilation)
        top, bottom, left, right = (int(v) for v in pads)
        oh = out_size(h, kh, sh, dh, top + bottom)
        ow = out_size(w, kw, sw, dw, left + right)
        cf = data_format == "channels_first"
        direct = kh == kw == 1 and sh == sw == 1 and not (top or bottom or left or right) and not cf
        return _ConvGeom(
            n, h, w, c, kh, kw, f, oh, ow, sh, sw, dh, dw, top, left, cf, kh * kw * c, oh * ow, n * oh * ow, direct
        )

    def _im2col(self, x, g, b0, b1, col):
        """Fill ``col`` ((b1-b0)*OH*OW, K) from images b0..b1-1 of C-contiguous ``x``."""
        if g.cf:  # x is (n, c, h, w): element strides of its NHWC view
            strides = (g.c * g.h * g.w, g.w, 1, g.h * g.w)
        else:
            strides = (g.h * g.w * g.c, g.w * g.c, g.c, 1)
        args = (
            x[b0:b1], col,
            _i32(b1 - b0, "batch"), _i32(g.h, "height"), _i32(g.w, "width"), _i32(g.c, "channels"),
            *(_i64(s) for s in strides),
            _i32(g.kh, "kernel height"), _i32(g.kw, "kernel width"),
            _i32(g.sh, "stride"), _i32(g.sw, "stride"), _i32(g.dh, "dilation"), _i32(g.dw, "dilation"),
            _i32(g.top, "padding"), _i32(g.left, "padding"), _i32(g.oh, "output height"), _i32(g.ow, "output width"),
        )
        self._launch("conv", "im2col", col.dtype, (b1 - b0) * g.rows * g.c, args)

    def _col2im(self, col, dx, g, b0, b1):
        """Write images b0..b1-1 of ``dx`` (C-contiguous, its own layout) from the patch gradients ``col``."""
        args = (
            col, dx[b0:b1],
            _i32(b1 - b0, "batch"), _i32(g.h, "height"), _i32(g.w, "width"), _i32(g.c, "channels"),
            _i32(1 if g.cf else 0, "channels_first"),
            _i32(g.kh, "kernel height"), _i32(g.kw, "kernel width"),
            _i32(g.sh, "stride"), _i32(g.sw, "stride"), _i32(g.dh, "dilation"), _i32(g.dw, "dilation"),
            _i32(g.top, "padding"), _i32(g.left, "padding"), _i32(g.oh, "output height"), _i32(g.ow, "output width"),
        )
        self._launch("conv", "col2im", col.dtype, (b1 - b0) * g.h * g.w * g.c, args)

    def _conv_chunks(self, g, dtype, op, shapes, body):
        """Call ``body(b0, b1, col)`` over chunks of images with an im2col workspace ``col``.

        The workspace holds at most :attr:`im2col_limit_bytes` (but always at
        least one image). On out-of-memory the chunk is halved and retried;
        ``body`` must be safe to rerun for the same images.
        """
        cupy = self.xp
        oom = cupy.cuda.memory.OutOfMemoryError
        per_image = g.rows * g.K * dtype.itemsize
        chunk = max(1, min(g.n, int(self.im2col_limit_bytes) // max(per_image, 1)))
        col = None
        b0 = 0
        while b0 < g.n:
            b1 = min(g.n, b0 + chunk)
            try:
                if col is None:
                    col = cupy.empty((chunk * g.rows, g.K), dtype=dtype)
                body(b0, b1, col[: (b1 - b0) * g.rows])
            except oom as exc:
                col = None
                if chunk == 1:
                    raise MemoryError(
                        f"CupyOps.{op}: out of GPU memory even with an im2col workspace of one image "
                        f"({g.rows * g.K * dtype.itemsize} bytes) for {shapes}: {exc}"
                    ) from exc
                chunk = max(1, chunk // 2)
                continue
            b0 = b1

    def _dy2d(self, dy, g, dtype, op):
        """``dy`` as a C-contiguous NHWC (N*OH*OW, F) matrix of ``dtype``."""
        dy = self.asarray(dy)
        want = (g.n, g.f, g.oh, g.ow) if g.cf else (g.n, g.oh, g.ow, g.f)
        self._check_shape(op, "dy", dy, want)
        if g.cf:
            dy = dy.transpose(0, 2, 3, 1)
        return self.xp.ascontiguousarray(dy, dtype=dtype).reshape(g.m, g.f)

    def conv2d_forward(self, x, kernel, strides, pads, dilation, data_format):
        return self._conv2d_forward(x, kernel, strides, pads, dilation, data_format, keep=False)[0]

    def conv2d_forward_train(self, x, kernel, strides, pads, dilation, data_format):
        return self._conv2d_forward(x, kernel, strides, pads, dilation, data_format, keep=True)

    def _conv2d_forward(self, x, kernel, strides, pads, dilation, data_format, keep):
        """(y, patches): patches is the whole im2col matrix when ``keep`` and one chunk held the batch, else None."""
        cupy = self.xp
        op = "conv2d_forward"
        x = self.asarray(x)
        reduced = self._reduced_conv2d_forward(x, kernel, strides, pads, dilation, data_format)
        if reduced is not None:  # huge strides, dilation or padding (see ops._axis_plan)
            return reduced, None
        out_dtype = x.dtype
        dt = self._compute_dtype(out_dtype, op)
        x = self._prep(x, dt)
        kernel = self._prep(kernel, dt)
        g = self._conv_geom(x.shape, kernel.shape, strides, pads, dilation, data_format, op)
        w2d = kernel.reshape(g.K, g.f)
        y2d = cupy.empty((g.m, g.f), dtype=dt)
        patches = []
        if y2d.size:
            if g.K == 0:
                y2d.fill(0)
            elif g.direct:
                cupy.matmul(x.reshape(g.m, g.c), w2d, out=y2d)
            else:

                def body(b0, b1, col):
                    self._im2col(x, g, b0, b1, col)
                    cupy.matmul(col, w2d, out=y2d[b0 * g.rows : b1 * g.rows])
                    if keep and b0 == 0 and b1 == g.n:  # one chunk: col is the whole matrix
                        patches.append(col)

                shapes = f"x {tuple(x.shape)} ({data_format}), kernel {tuple(kernel.shape)}"
                self._conv_chunks(g, dt, op, shapes, body)
        y = y2d.reshape(g.n, g.oh, g.ow, g.f)
        if g.cf:
            y = cupy.ascontiguousarray(y.transpose(0, 3, 1, 2))
        return y.astype(out_dtype, copy=False), (self._keep(patches[0]) if patches else None)

    def _keep(self, col):
        """``col`` wrapped to be kept for the weight gradient, or None when the budget has no room."""
        with _lock:
            if self._kept_patches[0] + col.nbytes > self.keep_patches_bytes:
                return None
            self._kept_patches[0] += col.nbytes
        kept = _KeptPatches(col)
        weakref.finalize(kept, _release, self._kept_patches, col.nbytes)
        return kept

    def conv2d_backward_input(self, dy, kernel, x_shape, strides, pads, dilation, data_format):
        cupy = self.xp
        op = "conv2d_backward_input"
        dy = self.asarray(dy)
        reduced = self._reduced_conv2d_backward_input(dy, kernel, x_shape, strides, pads, dilation, data_format)
        if reduced is not None:
            return reduced
        out_dtype = dy.dtype
        dt = self._compute_dtype(out_dtype, op)
        kernel = self._prep(kernel, dt)
        x_shape = tuple(int(v) for v in x_shape)
        g = self._conv_geom(x_shape, kernel.shape, strides, pads, dilation, data_format, op)
        dy2d = self._dy2d(dy, g, dt, op)
        w2d = kernel.reshape(g.K, g.f)
        dx = cupy.empty(x_shape, dtype=dt)
        if dx.size:
            if g.m == 0 or g.f == 0:
                dx.fill(0)
            elif g.direct:
                cupy.matmul(dy2d, w2d.T, out=dx.reshape(g.m, g.c))
            else:

                def body(b0, b1, col):
                    cupy.matmul(dy2d[b0 * g.rows : b1 * g.rows], w2d.T, out=col)
                    self._col2im(col, dx, g, b0, b1)

                shapes = f"dy {tuple(dy.shape)}, x {x_shape} ({data_format}), kernel {tuple(kernel.shape)}"
                self._conv_chunks(g, dt, op, shapes, body)
        return dx.astype(out_dtype, copy=False)

    def conv2d_backward_kernel(self, x, dy, kernel_shape, strides, pads, dilation, data_format, patches=None):
        cupy = self.xp
        op = "conv2d_backward_kernel"
        x = self.asarray(x)
        reduced = self._reduced_conv2d_backward_kernel(x, dy, kernel_shape, strides, pads, dilation, data_format)
        if reduced is not None:
            return reduced
        out_dtype = x.dtype
        dt = self._compute_dtype(out_dtype, op)
        x = self._prep(x, dt)
        kernel_shape = tuple(int(v) for v in kernel_shape)
        g = self._conv_geom(x.shape, kernel_shape, strides, pads, dilation, data_format, op)
        dy2d = self._dy2d(dy, g, dt, op)
        dw = cupy.empty((g.K, g.f), dtype=dt)
        if not (dw.size and g.m):
            dw.fill(0)
        elif g.direct:
            cupy.matmul(x.reshape(g.m, g.c).T, dy2d, out=dw)
        elif isinstance(patches, _KeptPatches) and tuple(patches.array.shape) == (g.m, g.K) \
                and patches.array.dtype == dt:
            cupy.matmul(patches.array.T, dy2d, out=dw)  # the forward's im2col matrix: no second im2col
        else:

            def body(b0, b1, col):
                self._im2col(x, g, b0, b1, col)
                rows = dy2d[b0 * g.rows : b1 * g.rows]
                if b0 == 0:  # the first chunk (retried or not) writes dw; the later ones add to it
                    cupy.matmul(col.T, rows, out=dw)
                else:
                    cupy.add(dw, cupy.matmul(col.T, rows), out=dw)  # after the product: a retry adds nothing twice

            shapes = f"x {tuple(x.shape)} ({data_format}), dy {tuple(dy.shape)}, kernel {kernel_shape}"
            self._conv_chunks(g, dt, op, shapes, body)
        return dw.reshape(kernel_shape).astype(out_dtype, copy=False)

    # ------------------------------------------------------- bias gradients
    def _ones(self, n, dtype):
        """A cached device vector of ``n`` ones (read only): the other operand of the bias-gradient GEMVs."""
        key = (int(n), numpy.dtype(dtype).name, self.xp.cuda.runtime.getDevice())
        ones = self._ones_cache.get(key)
        if ones is None:
            if len(self._ones_cache) >= 32:  # batch and image sizes vary little; do not grow without bound
                self._ones_cache.clear()
            ones = self._ones_cache[key] = self.xp.ones((int(n),), dtype=dtype)
        return ones

    def channel_sum(self, a, axis):
        # A GEMV against ones (cuBLAS) instead of CuPy's generic reduction, which runs on one or two
        # blocks for a bias gradient's shape: the sum over the rows of the (rows, C) view, or over
        # the images after the positions for channels_first.
        cupy = self.xp
        import backends

        if not isinstance(a, cupy.ndarray) or a.dtype not in (_F32, _F64) or a.size == 0 or a.ndim < 2 \
                or backends.tf32_enabled():  # TF32 would round every summand to 10 bits
            return super().channel_sum(a, axis)
        axis %= a.ndim
        a = cupy.ascontiguousarray(a)
        c, inner = int(a.shape[axis]), _prod(a.shape[axis + 1 :])
        outer = a.size // (c * inner)
        if inner == 1:
            return self._ones(outer, a.dtype) @ a.reshape(outer, c)
        per_image = a.reshape(outer * c, inner) @ self._ones(inner, a.dtype)
        return self._ones(outer, a.dtype) @ per_image.reshape(outer, c)

    # ------------------------------------------------------- optimizer steps
    def _multi_tensor_update(self, rule, groups, constants, decay):
        from backends import multi_tensor

        cupy = self.xp
        if any(a is not None and not isinstance(a, cupy.ndarray) for group in groups for a in group):
            return False  # host arrays (a variable kept on the CPU): the optimizer's own rule
        updated = [a.data.ptr for w, _, *state in groups for a in (w, *state) if a is not None and a.size]
        if len(set(updated)) != len(updated):
            return False  # one array listed twice: in place, its blocks would race
        dtype = groups[0][0].dtype
        chunk = _i32(multi_tensor.CHUNK, "chunk")
        for table, chunks in multi_tensor.tables(groups, decay, lambda a: a.data.ptr):
            self._launch_blocks("optimizer", f"mt_{rule}", dtype, chunks, (table, chunk) + constants)
        return True
