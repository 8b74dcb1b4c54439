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

from backends.ops import Ops
from backends.window_plans import out_size

__all__ = ["CupyOps", "IM2COL_LIMIT_ENV"]

IM2COL_LIMIT_ENV = "GPULAYERS_IM2COL_LIMIT_MB"
_DEFAULT_IM2COL_LIMIT_MB = 256

_F16 = numpy.dtype("float16")
_F32 = numpy.dtype("float32")
_F64 = numpy.dtype("float64")
_I32 = numpy.dtype("int32")

_BLOCK = 256  # threads per block for every launch (kernels accept 1..1024)
_WAVES = 16  # grid-stride grids are capped at _WAVES blocks per SM

# Process-wide caches (guarded by _lock): RawModule per kernel file, kernel
# functions per (file, expression, device), SM count per device.
_lock = threading.Lock()
_raw_modules = {}
_functions = {}
_sm_counts = {}


def _i32(value, what):
    value = int(value)
    if not -(2**31) <= value < 2**31:
        raise ValueError(f"{what}={value} does not fit the CUDA kernels' 32-bit int parameter")
    return numpy.int32(value)


def _i64(value):
    return numpy.int64(int(value))


def _prod(values):
    out = 1
    for v in values:
        out *= int(v)
    return out


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
_PoolGeom = collections.namedtuple("_PoolGeom", "n h w c oh ow ph pw sh sw top left cf")


class PhiloxStream:
    """A layer's random numbers on the GPU: Philox4x32-10 keyed by its seed, with its launch counter in a
    2-word device array (``backends/kernels/elementwise.cu``) that the kernels advance themselves, so a
    draw needs no host work and no generator state leaves the device."""

    __slots__ = ("key", "state")

    def __init__(self, seed, state):
        self.key = numpy.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF)
        self.state = state


class CupyOps(Ops):
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

    # ---------------------------------------------------------------- pooling
    def _pool_geom(self, x_shape, pool_size, strides, pads, data_format):
        n, h, w, c = self._shape_nhwc(x_shape, data_format)
        ph, pw = (int(v) for v in pool_size)
        sh, sw = (int(v) for v in strides)
        top, bottom, left, right = (int(v) for v in pads)
        oh = out_size(h, ph, sh, 1, top + bottom)
        ow = out_size(w, pw, sw, 1, left + right)
        return _PoolGeom(n, h, w, c, oh, ow, ph, pw, sh, sw, top, left, data_format == "channels_first")

    @staticmethod
    def _pool_out_shape(g):
        return (g.n, g.c, g.oh, g.ow) if g.cf else (g.n, g.oh, g.ow, g.c)

    @staticmethod
    def _pool_in_shape(g):
        return (g.n, g.c, g.h, g.w) if g.cf else (g.n, g.h, g.w, g.c)

    @staticmethod
    def _pool_args(g):
        _i32(g.ph * g.pw, "pool cells")  # the kernels number window cells i * pw + j in an int
        return (
            _i32(g.n, "batch"), _i32(g.h, "height"), _i32(g.w, "width"), _i32(g.c, "channels"),
            _i32(1 if g.cf else 0, "channels_first"), _i32(g.oh, "output height"), _i32(g.ow, "output width"),
            _i32(g.ph, "pool height"), _i32(g.pw, "pool width"), _i32(g.sh, "stride"), _i32(g.sw, "stride"),
            _i32(g.top, "padding"), _i32(g.left, "padding"),
        )

    def _pool_input(self, x, op):
        x = self.asarray(x)
        dt = self._compute_dtype(x.dtype, op)
        return self._prep(x, dt), x.dtype, dt

    def _pool_grad(self, dy, x_shape, pool_size, strides, pads, data_format, op):
        """(dy C-contiguous in the compute dtype, its original dtype, compute dtype, geometry)."""
        dy, out_dtype, dt = self._pool_input(dy, op)
        g = self._pool_geom(tuple(int(v) for v in x_shape), pool_size, strides, pads, data_format)
        self._check_shape(op, "dy", dy, self._pool_out_shape(g))
        return dy, out_dtype, dt, g

    def _index(self, index, g, op, what):
        index = self.xp.ascontiguousarray(self.asarray(index), dtype=_I32)
        self._check_shape(op, what, index, self._pool_out_shape(g))
        return index

    def max_pool2d_forward(self, x, pool_size, strides, pads, data_format):
        op = "max_pool2d_forward"
        reduced = self._reduced_max_pool2d_forward(self.asarray(x), pool_size, strides, pads, data_format)
        if reduced is not None:  # huge window, strides or padding (see ops._axis_plan)
            return reduced
        x, out_dtype, dt = self._pool_input(x, op)
        g = self._pool_geom(x.shape, pool_size, strides, pads, data_format)
        y = self.xp.empty(self._pool_out_shape(g), dtype=dt)
        arg = self.xp.empty(y.shape, dtype=_I32)
        self._launch("pool", "max_pool_fwd", dt, y.size, (x, y, arg, *self._pool_args(g)))
        return y.astype(out_dtype, copy=False), arg

    def _route(self, dy, index, x_shape, pool_size, strides, pads, data_format, op="max_pool2d_backward"):
        dy, out_dtype, dt, g = self._pool_grad(dy, x_shape, pool_size, strides, pads, data_format, op)
        index = self._index(index, g, op, "index")
        dx = self.xp.empty(self._pool_in_shape(g), dtype=dt)
        self._launch("pool", "pool_route_bwd", dt, dx.size, (dy, index, dx, *self._pool_args(g)))
        return dx.astype(out_dtype, copy=False)

    def max_pool2d_backward(self, dy, argmax, x_shape, pool_size, strides, pads, data_format):
        reduced = self._reduced_route(
            self.max_pool2d_backward, dy, argmax, x_shape, pool_size, strides, pads, data_format
        )
        if reduced is not None:
            return reduced
        return self._route(dy, argmax, x_shape, pool_size, strides, pads, data_format, "max_pool2d_backward")

    def avg_pool2d_forward(self, x, pool_size, strides, pads, data_format):
        op = "avg_pool2d_forward"
        reduced = self._reduced_avg_pool2d_forward(self.asarray(x), pool_size, strides, pads, data_format)
        if reduced is not None:
            return reduced
        x, out_dtype, dt = self._pool_input(x, op)
        g = self._pool_geom(x.shape, pool_size, strides, pads, data_format)
        y = self.xp.empty(self._pool_out_shape(g), dtype=dt)
        self._launch("pool", "avg_pool_fwd", dt, y.size, (x, y, *self._pool_args(g)))
        return y.astype(out_dtype, copy=False)

    def avg_pool2d_backward(self, dy, x_shape, pool_size, strides, pads, data_format):
        op = "avg_pool2d_backward"
        reduced = self._reduced_avg_pool2d_backward(dy, x_shape, pool_size, strides, pads, data_format)
        if reduced is not None:
            return reduced
        dy, out_dtype, dt, g = self._pool_grad(dy, x_shape, pool_size, strides, pads, data_format, op)
        dx = self.xp.empty(self._pool_in_shape(g), dtype=dt)
        self._launch("pool", "avg_pool_bwd", dt, dx.size, (dy, dx, *self._pool_args(g)))
        return dx.astype(out_dtype, copy=False)

    def stochastic_pool2d_forward(self, x, uniforms, pool_size, strides, pads, data_format):
        op = "stochastic_pool2d_forward"
        reduced = self._reduced_stochastic_pool2d_forward(
            self.asarray(x), uniforms, pool_size, strides, pads, data_format
        )
        if reduced is not None:
            return reduced
        x, out_dtype, dt = self._pool_input(x, op)
        g = self._pool_geom(x.shape, pool_size, strides, pads, data_format)
        u = self.asarray(uniforms)
        self._check_shape(op, "uniforms", u, self._pool_out_shape(g))
        # Like the generic code, u is taken in x's dtype (then in the compute dtype).
        u = self.xp.ascontiguousarray(u.astype(out_dtype, copy=False), dtype=dt)
        y = self.xp.empty(self._pool_out_shape(g), dtype=dt)
        index = self.xp.empty(y.shape, dtype=_I32)
        self._launch("pool", "stoch_pool_fwd", dt, y.size, (x, u, y, index, *self._pool_args(g)))
        return y.astype(out_dtype, copy=False), index

    def stochastic_pool2d_backward(self, dy, index, x_shape, pool_size, strides, pads, data_format):
        reduced = self._reduced_route(
            self.stochastic_pool2d_backward, dy, index, x_shape, pool_size, strides, pads, data_format
        )
        if reduced is not None:
            return reduced
        return self._route(dy, index, x_shape, pool_size, strides, pads, data_format, "stochastic_pool2d_backward")

    def stochastic_pool2d_inference_forward(self, x, pool_size, strides, pads, data_format):
        op = "stochastic_pool2d_inference_forward"
        reduced = self._reduced_stochastic_pool2d_inference_forward(
            self.asarray(x), pool_size, strides, pads, data_format
        )
        if reduced is not None:
            return reduced
        x, out_dtype, dt = self._pool_input(x, op)
        g = self._pool_geom(x.shape, pool_size, strides, pads, data_format)
        y = self.xp.empty(self._pool_out_shape(g), dtype=dt)
        self._launch("pool", "stoch_pool_inf_fwd", dt, y.size, (x, y, *self._pool_args(g)))
        return y.astype(out_dtype, copy=False)

    def stochastic_pool2d_inference_backward(self, dy, x, pool_size, strides, pads, data_format):
        op = "stochastic_pool2d_inference_backward"
        reduced = self._reduced_stochastic_pool2d_inference_backward(
            dy, self.asarray(x), pool_size, strides, pads, data_format
        )
        if reduced is not None:
            return reduced
        x, out_dtype, dt = self._pool_input(x, op)
        dy, _, _, g = self._pool_grad(dy, x.shape, pool_size, strides, pads, data_format, op)
        dy = dy.astype(dt, copy=False)
        yw = self.xp.empty(dy.shape, dtype=dt)
        r = self.xp.empty(dy.shape, dtype=dt)
        args = self._pool_args(g)
        self._launch("pool", "stoch_pool_inf_stats", dt, dy.size, (x, dy, yw, r, *args))
        dx = self.xp.empty(x.shape, dtype=dt)
        self._launch("pool", "stoch_pool_inf_bwd", dt, dx.size, (x, yw, r, dx, *args))
        return dx.astype(out_dtype, copy=False)

    # --------------------------------------------------------- global pooling
    def _global_launch(self, x, y, arg, n, hw, c, cf, mode, dt):
        """Run the serial (thread per output) or block (block per output) global-pool kernel."""
        outputs = n * c
        args = (x, y, arg, _i32(n, "batch"), _i32(hw, "height*width"), _i32(c, "channels"), _i32(cf, "channels_first"), _i32(mode, "mode"))
        # A thread per output reads coalesced along channels (NHWC) and is the
        # better choice when there are enough outputs to fill the GPU.
        if not cf and outputs >= self._sm_count() * 512:
            self._launch("pool", "global_pool_fwd_serial", dt, outputs, args)
        else:
            block = 32
            while block < 256 and block < hw:
                block *= 2
            self._launch_blocks("pool", "global_pool_fwd_block", dt, outputs, args, block=block)

    def global_avg_pool2d_forward(self, x, data_format, keepdims):
        op = "global_avg_pool2d_forward"
        x, out_dtype, dt = self._pool_input(x, op)
        n, h, w, c = self._shape_nhwc(x.shape, data_format)
        if h * w == 0 or n * c == 0:
            return super().global_avg_pool2d_forward(x.astype(out_dtype, copy=False), data_format, keepdims)
        y = self.xp.empty((n, c), dtype=dt)
        cf = 1 if data_format == "channels_first" else 0
        unused = self.xp.empty((1,), dtype=_I32)  # argmax is not written in mode 0
        self._global_launch(x, y, unused, n, h * w, c, cf, 0, dt)
        return self._global_keep(y.astype(out_dtype, copy=False), data_format, keepdims)

    def global_avg_pool2d_backward(self, dy, x_shape, data_format, keepdims):
        op = "global_avg_pool2d_backward"
        dy, out_dtype, dt = self._pool_input(dy, op)
        x_shape = tuple(int(v) for v in x_shape)
        n, h, w, c = self._shape_nhwc(x_shape, data_format)
        if dy.size != n * c:
            raise ValueError(f"CupyOps.{op}: dy has shape {tuple(dy.shape)}, expected {n * c} values for x {x_shape}.")
        dx = self.xp.empty(x_shape, dtype=dt)
        cf = 1 if data_format == "channels_first" else 0
        args = (dy.reshape(n, c), dx, _i32(n, "batch"), _i32(h * w, "height*width"), _i32(c, "channels"), _i32(cf, "channels_first"))
        self._launch("pool", "global_avg_bwd", dt, dx.size, args)
        return dx.astype(out_dtype, copy=False)

    def global_max_pool2d_forward(self, x, data_format, keepdims):
        op = "global_max_pool2d_forward"
        x, out_dtype, dt = self._pool_input(x, op)
        n, h, w, c = self._shape_nhwc(x.shape, data_format)
        if h * w == 0 or n * c == 0:
            return super().global_max_pool2d_forward(x.astype(out_dtype, copy=False), data_format, keepdims)
        y = self.xp.empty((n, c), dtype=dt)
        arg = self.xp.empty((n, c), dtype=_I32)
        cf = 1 if data_format == "channels_first" else 0
        self._global_launch(x, y, arg, n, h * w, c, cf, 1, dt)
        return (
            self._global_keep(y.astype(out_dtype, copy=False), data_format, keepdims),
            self._global_keep(arg, data_format, keepdims),
        )

    def global_max_pool2d_backward(self, dy, argmax, x_shape, data_format, keepdims):
        op = "global_max_pool2d_backward"
        dy, out_dtype, dt = self._pool_input(dy, op)
        x_shape = tuple(int(v) for v in x_shape)
        n, h, w, c = self._shape_nhwc(x_shape, data_format)
        argmax = self.xp.ascontiguousarray(self.asarray(argmax), dtype=_I32)
        if dy.size != n * c or argmax.size != n * c:
            raise ValueError(
                f"CupyOps.{op}: dy {tuple(dy.shape)} and argmax {tuple(argmax.shape)} must hold {n * c} values for x {x_shape}."
            )
        dx = self.xp.empty(x_shape, dtype=dt)
        cf = 1 if data_format == "channels_first" else 0
        args = (
            dy.reshape(n, c), argmax.reshape(n, c), dx,
            _i32(n, "batch"), _i32(h * w, "height*width"), _i32(c, "channels"), _i32(cf, "channels_first"),
        )
        self._launch("pool", "global_max_bwd", dt, dx.size, args)
        return dx.astype(out_dtype, copy=False)

    # ---------------------------------------------------- batch normalization
    _BN_CACHE_TAG = "cupy-batch-norm"

    def _bn_layout(self, shape, axis, op):
        ndim = len(shape)
        if not -ndim <= int(axis) < ndim:
            raise ValueError(f"CupyOps.{op}: axis {axis} is out of range for an input of rank {ndim}.")
        axis = int(axis) % ndim
        outer = _prod(shape[:axis])
        inner = _prod(shape[axis + 1 :])
        return axis, outer, int(shape[axis]), inner

    _BN_STATISTICS, _BN_BACKWARD = 0, 1  # batchnorm.cu's reduction modes

    def _bn_sums(self, mode, x, dy, mean, outer, c, inner, dt, relu_y=None):
        """Per-chunk channel reductions (see batchnorm.cu); ``relu_y``: the output of a ReLU that followed,
        masking ``dy``. Returns (part1, part2, nchunks)."""
        cupy = self.xp
        if outer * inner == 0:
            # Nothing to reduce, and bn_partial_mid divides by `inner`: zero partials.
            return cupy.zeros((1, c), dtype=dt), cupy.zeros((1, c), dtype=dt), 1
        target = self._sm_count() * 8  # work units: about one full wave of 256-thread blocks
        if inner == 1:
            groups = -(-c // 32)
            nchunks = max(1, min(-(-outer // 256), target // groups))
            units = groups * nchunks
        else:
            nchunks = max(1, min(-(-(outer * inner) // 2048), target // c))
            units = c * nchunks
        part1, part2 = cupy.empty((nchunks, c), dtype=dt), cupy.empty((nchunks, c), dtype=dt)
        dy = x if dy is None else dy  # dy and mean are read in the backward mode only
        mean = x if mean is None else mean
        arrays = (x, dy, mean, x if relu_y is None else relu_y, part1, part2)
        masked = _i32(relu_y is not None, "masked")
        if inner == 1:
            args = arrays + (_i64(outer), _i32(c, "channels"), _i32(nchunks, "chunks"), _i32(mode, "mode"), masked)
            self._launch_blocks("batchnorm", "bn_partial_last", dt, units, args)
        else:
            args = arrays + (
                _i64(outer), _i32(c, "channels"), _i32(inner, "inner size"), _i32(nchunks, "chunks"),
                _i32(mode, "mode"), masked,
            )
            self._launch_blocks("batchnorm", "bn_partial_mid", dt, units, args)
        return part1, part2, nchunks

    def _bn_vec(self, v, dtype):
        return None if v is None else self.xp.ascontiguousarray(self.asarray(v).reshape(-1), dtype=dtype)

    def _bn_flags(self, gamma, beta, mean, epsilon, c, dt):
        return (
            mean if gamma is None else gamma, mean if beta is None else beta,
            _i32(gamma is not None, "has_gamma"), _i32(beta is not None, "has_beta"), dt.type(epsilon),
            _i32(c, "channels"),
        )

    def _bn_params(self, var, mean, gamma, beta, epsilon, c, dt):
        """(rstd, scale, shift) from given statistics."""
        rstd, scale, shift = (self.xp.empty((c,), dtype=dt) for _ in range(3))
        args = (var, mean) + self._bn_flags(gamma, beta, mean, epsilon, c, dt) + (rstd, scale, shift)
        self._launch("batchnorm", "bn_params", dt, c, args)
        return rstd, scale, shift

    def _bn_statistics(self, x, gamma, beta, epsilon, outer, c, inner, dt, moving=None):
        """(mean, var, rstd, scale, shift, new moving mean, new moving var) of x's batch: one Welford pass and
        one merge per channel, which also folds the batch into ``moving`` = (mean, var, momentum) when given."""
        cupy = self.xp
        mean, var, rstd, scale, shift = (cupy.empty((c,), dtype=dt) for _ in range(5))
        part_mean, part_m2, k = self._bn_sums(self._BN_STATISTICS, x, None, None, outer, c, inner, dt)
        if moving is None:
            moving_args, new_mm, new_mv = (mean, mean, dt.type(0), dt.type(0), _i32(0, "update"), mean, mean), None, None
        else:
            mm, mv, momentum = moving
            new_mm, new_mv = cupy.empty((c,), dtype=dt), cupy.empty((c,), dtype=dt)
            moving_args = (mm, mv, dt.type(momentum), dt.type(1.0 - momentum), _i32(1, "update"), new_mm, new_mv)
        args = (part_mean, part_m2, _i32(k, "chunks"), _i64(outer * inner)) + \
            self._bn_flags(gamma, beta, part_mean, epsilon, c, dt) + (mean, var, rstd, scale, shift) + moving_args
        self._launch_blocks("batchnorm", "bn_params_welford", dt, c, args)
        return mean, var, rstd, scale, shift, new_mm, new_mv

    def _bn_apply(self, x, scale, shift, outer, c, inner, dt, relu=False):
        y = self.xp.empty(x.shape, dtype=dt)
        args = (
            x, scale, scale if shift is None else shift, y, _i64(outer), _i32(c, "channels"), _i32(inner, "inner size"),
            _i32(shift is not None, "has_shift"), _i32(relu, "relu"),
        )
        self._launch("batchnorm", "bn_apply", dt, x.size, args)
        return y

    def _bn_check_vec(self, op, name, v, c):
        if v is not None and v.size != c:
            raise ValueError(f"CupyOps.{op}: {name} has {v.size} values, expected {c} (one per channel).")

    def batch_norm_forward_training(self, x, gamma, beta, axis, epsilon):
        return self._bn_forward_training(x, gamma, beta, axis, epsilon)[:4]

    def batch_norm_training_step(self, x, gamma, beta, moving_mean, moving_var, axis, epsilon, momentum, relu=False):
        # One launch gives the statistics, the factors and the new moving statistics; the ReLU rides in
        # bn_apply, and its output, kept in the cache, masks the backward reductions.
        cupy = self.xp
        dt = getattr(x, "dtype", None)
        if dt not in (_F32, _F64) or any(
            not isinstance(v, cupy.ndarray) or v.dtype != dt or v.ndim != 1 for v in (moving_mean, moving_var)
        ):  # float16 (the moving statistics in float32), or host variables: the generic composition
            return super().batch_norm_training_step(x, gamma, beta, moving_mean, moving_var, axis, epsilon,
                                                    momentum, relu)
        moving = (cupy.ascontiguousarray(moving_mean), cupy.ascontiguousarray(moving_var), momentum)
        y, _, _, cache, new_mm, new_mv = self._bn_forward_training(x, gamma, beta, axis, epsilon, relu, moving)
        if new_mm is None:  # an empty batch (or no channels): nothing to fold in
            new_mm, new_mv = moving_mean, moving_var
        return y, new_mm, new_mv, (None, cache)

    def _bn_forward_training(self, x, gamma, beta, axis, epsilon, relu=False, moving=None):
        """(y, mean, var, cache, new moving mean, new moving var); the moving ones None unless folded in."""
        cupy = self.xp
        op = "batch_norm_forward_training"
        x = self.asarray(x)
        out_dtype = x.dtype
        dt = self._compute_dtype(out_dtype, op)  # float16 statistics run in float32, as in Keras
        x = self._prep(x, dt)
        axis, outer, c, inner = self._bn_layout(x.shape, axis, op)
        gamma, beta = self._bn_vec(gamma, dt), self._bn_vec(beta, dt)
        self._bn_check_vec(op, "gamma", gamma, c)
        self._bn_check_vec(op, "beta", beta, c)
        m = outer * inner
        div = max(m, 1)  # an empty batch gives mean 0 and var 0 instead of NaN
        if c == 0:
            empty = cupy.empty((0,), dtype=out_dtype)
            cache = (self._BN_CACHE_TAG, x, empty.astype(dt), empty.astype(dt), gamma, beta is not None, axis, div,
                     out_dtype, (outer, c, inner), None)
            return x.astype(out_dtype, copy=False), empty, empty, cache, None, None
        new_mm = new_mv = None
        if m == 0:  # an empty batch: statistics 0, as NumpyOps gives
            mean, var = cupy.zeros((c,), dtype=dt), cupy.zeros((c,), dtype=dt)
            rstd, scale, shift = self._bn_params(var, mean, gamma, beta, epsilon, c, dt)
        else:
            if moving is not None:
                for name, v in (("moving_mean", moving[0]), ("moving_var", moving[1])):
                    self._bn_check_vec(op, name, v, c)
            mean, var, rstd, scale, shift, new_mm, new_mv = self._bn_statistics(
                x, gamma, beta, epsilon, outer, c, inner, dt, moving
            )
        y = self._bn_apply(x, scale, shift, outer, c, inner, dt, relu=relu)
        cache = (self._BN_CACHE_TAG, x, mean, rstd, gamma, beta is not None, axis, div, out_dtype, (outer, c, inner),
                 y if relu else None)
        return (
            y.astype(out_dtype, copy=False),
            mean.astype(out_dtype, copy=False),
            var.astype(out_dtype, copy=False),
            cache,
            new_mm,
            new_mv,
        )

    def batch_norm_backward_training(self, dy, cache):
        cupy = self.xp
        op = "batch_norm_backward_training"
        if not (isinstance(cache, tuple) and cache and isinstance(cache[0], str) and cache[0] == self._BN_CACHE_TAG):
            return super().batch_norm_backward_training(dy, cache)  # a cache made by the generic code
        _, x, mean, rstd, gamma, has_beta, axis, div, out_dtype, (outer, c, inner), relu_y = cache
        dt = x.dtype
        dy = self.asarray(dy)
        self._check_shape(op, "dy", dy, x.shape)
        dy = cupy.ascontiguousarray(dy, dtype=dt)
        if c == 0:
            empty = cupy.empty((0,), dtype=out_dtype)
            return dy.astype(out_dtype, copy=False), (None if gamma is None else empty), (empty if has_beta else None)
        part1, part2, k = self._bn_sums(self._BN_BACKWARD, x, dy, mean, outer, c, inner, dt, relu_y)
        dgamma, dbeta, g, c1, c0 = (cupy.empty((c,), dtype=dt) for _ in range(5))
        args = (
            part1, part2, _i32(k, "chunks"), _i32(c, "channels"), _i64(div), rstd,
            rstd if gamma is None else gamma, _i32(gamma is not None, "has_gamma"), _i32(1, "training"),
            dgamma, dbeta, g, c1, c0,
        )
        self._launch("batchnorm", "bn_fin_bwd", dt, c, args)
        dx = cupy.empty(x.shape, dtype=dt)
        args = (
            dy, x, mean, g, c1, c0, x if relu_y is None else relu_y, dx, _i64(outer), _i32(c, "channels"),
            _i32(inner, "inner size"), _i32(relu_y is not None, "masked"),
        )
        self._launch("batchnorm", "bn_bwd_apply", dt, dx.size, args)
        return (
            dx.astype(out_dtype, copy=False),
            None if gamma is None else dgamma.astype(out_dtype, copy=False),
            dbeta.astype(out_dtype, copy=False) if has_beta else None,
        )

    def batch_norm_forward_inference(self, x, gamma, beta, mean, var, axis, epsilon):
        op = "batch_norm_forward_inference"
        x = self.asarray(x)
        out_dtype = x.dtype
        dt = self._compute_dtype(out_dtype, op)
        x = self._prep(x, dt)
        axis, outer, c, inner = self._bn_layout(x.shape, axis, op)
        gamma, beta = self._bn_vec(gamma, dt), self._bn_vec(beta, dt)
        mean, var = self._bn_vec(mean, dt), self._bn_vec(var, dt)
        for name, v in (("gamma", gamma), ("beta", beta), ("mean", mean), ("var", var)):
            self._bn_check_vec(op, name, v, c)
        if c == 0:
            return x.astype(out_dtype, copy=False)
        _, scale, shift = self._bn_params(var, mean, gamma, beta, epsilon, c, dt)
        return self._bn_apply(x, scale, shift, outer, c, inner, dt).astype(out_dtype, copy=False)

    def batch_norm_backward_inference(self, dy, x, gamma, mean, var, axis, epsilon, has_beta=True):
        cupy = self.xp
        op = "batch_norm_backward_inference"
        dy = self.asarray(dy)
        out_dtype = dy.dtype
        dt = self._compute_dtype(out_dtype, op)
        dy = self._prep(dy, dt)
        x = self._prep(x, dt)
        self._check_shape(op, "dy", dy, x.shape)
        axis, outer, c, inner = self._bn_layout(x.shape, axis, op)
        gamma = self._bn_vec(gamma, dt)
        mean, var = self._bn_vec(mean, dt), self._bn_vec(var, dt)
        for name, v in (("gamma", gamma), ("mean", mean), ("var", var)):
            self._bn_check_vec(op, name, v, c)
        if c == 0:
            empty = cupy.empty((0,), dtype=out_dtype)
            return dy.astype(out_dtype, copy=False), (None if gamma is None else empty), (empty if has_beta else None)
        rstd, scale, _ = self._bn_params(var, mean, gamma, None, epsilon, c, dt)
        dx = self._bn_apply(dy, scale, None, outer, c, inner, dt)
        dgamma = dbeta = None
        if gamma is not None or has_beta:
            part1, part2, k = self._bn_sums(self._BN_BACKWARD, x, dy, mean, outer, c, inner, dt)
            dgamma, dbeta = cupy.empty((c,), dtype=dt), cupy.empty((c,), dtype=dt)
            args = (
                part1, part2, _i32(k, "chunks"), _i32(c, "channels"), _i64(max(outer * inner, 1)), rstd,
                rstd if gamma is None else gamma, _i32(gamma is not None, "has_gamma"), _i32(0, "training"),
                dgamma, dbeta, dgamma, dgamma, dgamma,  # g, c1, c0 are not written when training == 0
            )
            self._launch("batchnorm", "bn_fin_bwd", dt, c, args)
            dgamma = None if gamma is None else dgamma.astype(out_dtype, copy=False)
            dbeta = dbeta.astype(out_dtype, copy=False) if has_beta else None
        return dx.astype(out_dtype, copy=False), dgamma, dbeta

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

    def _row_launch(self, kernel, dtype, rows, cols, arrays, scalars=()):
        """A softmax.cu row kernel: ``(*arrays, rows, cols, lanes, *scalars)``, one block per group of rows."""
        lanes = self._row_lanes(cols)
        args = tuple(arrays) + (_i64(rows), _i32(cols, "classes"), _i32(lanes, "lanes")) + tuple(scalars)
        self._launch_blocks("softmax", kernel, dtype, -(-rows // (_BLOCK // lanes)), args)

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
        lanes = self._row_lanes(cols)
        grid = min(-(-rows // (_BLOCK // lanes)), self._grid_cap())
        mean, partial = cupy.empty((), dtype=p.dtype), cupy.empty((grid,), dtype=_F64)
        t = p.dtype.type
        self._launch_blocks("softmax", "sparse_xent_mean", p.dtype, grid,
                            (p, labels, mean, partial, self._blocks_done(), _i64(rows), _i32(cols, "classes"),
                             _i32(lanes, "lanes"), t(lo), t(hi)))
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
