"""A stand-in ``cupy`` that counts what a real GPU would be asked to do.

Arrays are :class:`DeviceArray` (numpy storage, *not* an ``np.ndarray``, so
code that tells host from device arrays by type takes its device path, and an
implicit ``numpy.asarray`` on one raises as cupy does). Every operation on
them is run by numpy and recorded in a :class:`Counter` as one device event:

* ``kernel``: a RawKernel launch (run by the host emulator, so values are real);
* ``gemm``: ``matmul`` / ``dot`` / ``tensordot`` / ``einsum`` (cuBLAS);
* ``elementwise``: every other ufunc or array function that writes memory
  (copies, casts, ``where``, gathers, ``__setitem__``...), one kernel each;
* ``reduction``: ``sum``, ``mean``, ``max``, ``argmax``... (one kernel each);
* ``fill``: ``zeros`` / ``ones`` / ``full`` (a memset or fill kernel);
* ``random``: a draw from a device generator;
* ``h2d`` / ``d2h``: copies between host and device (``cupy.asarray`` of a
  host array; ``.get()``, ``float()``, ``.item()``, ``bool()``...);
* ``sync``: a blocking wait (every ``d2h`` is one, and ``synchronize()``).

* ``graph``: the launch of a captured CUDA graph (one event, whatever it holds).

Stream capture (``Stream.begin_capture`` / ``end_capture``, CuPy's API)
records what a GPU would record: each operation becomes a step of the graph,
replayed in order into the same buffers by ``Graph.launch``. As on a GPU,
capturing runs nothing that a later step could see: kernels and in-place
writes to buffers made before the capture run on copies (buffers made during
it get their values, so shapes and indices stay real), a device generator's
draw is replayed as drawn, and a copy between host and device or a sync
raises, as cudaErrorStreamCaptureUnsupported does.

Views (reshape of a contiguous array, transpose, basic slicing, broadcast)
cost nothing, as on the GPU. ``allocs`` counts new device buffers. This is a
model of CuPy's launch behaviour, close enough to set budgets: a fused
CuPy elementwise expression would be one launch where this counts one per
ufunc, so it never undercounts.
"""

from __future__ import annotations

import collections
import contextlib
import traceback
import types

import numpy as np

from emu_helpers import fake_cuda_runtime

DEVICE_EVENTS = ("kernel", "gemm", "elementwise", "reduction", "fill", "random", "h2d", "d2h", "graph")

_GEMM = {"matmul", "dot", "tensordot", "einsum", "inner", "vdot"}
_REDUCTIONS = {
    "sum", "mean", "max", "min", "amax", "amin", "argmax", "argmin", "prod", "any", "all", "cumsum",
    "cumprod", "nansum", "nanmax", "nanmin", "count_nonzero", "average", "ptp",
}
_TWO_PASS = {"var", "std"}  # mean, then the centred sum
_ALLOC_ONLY = {"empty", "empty_like"}
_FILL = {"zeros", "ones", "full", "zeros_like", "ones_like", "full_like", "arange", "linspace", "eye", "identity"}
_HOST = {"shape", "ndim", "size", "result_type", "dtype", "can_cast", "isscalar", "iscomplexobj", "may_share_memory",
         "shares_memory", "broadcast_shapes", "promote_types", "issubdtype", "finfo", "iinfo", "min_scalar_type"}


class _Capture:
    """A stream capture under way: its steps, and the buffers made during it (by id, kept alive)."""

    def __init__(self):
        self.steps = []
        self.owned = {}


class Counter:
    """What the stand-in saw: ``counts[event]``, ``allocs``, ``log`` (event, name) in order, and the number
    of graphs captured (``captures``)."""

    def __init__(self, trace=False):
        self.trace = trace  # log entries get the innermost gpulayers/backends frame too
        self.counts = collections.Counter()
        self.captures = 0
        self.allocs = 0
        self.log = []
        self.enabled = True

    def add(self, event, name, n=1):
        if self.enabled:
            self.counts[event] += n
            self.log.append((event, name, _caller()) if self.trace else (event, name))

    def alloc(self, arr):
        if self.enabled:
            self.allocs += 1

    def reset(self):
        self.counts.clear()
        self.allocs = 0
        self.log.clear()

    @property
    def device_ops(self):
        """Launches and copies: everything in DEVICE_EVENTS."""
        return sum(self.counts[e] for e in DEVICE_EVENTS)

    def summary(self):
        parts = [f"{e}={self.counts[e]}" for e in DEVICE_EVENTS if self.counts[e]]
        return f"{self.device_ops} device ops ({', '.join(parts)}), {self.counts['sync']} syncs, {self.allocs} allocs"

    @contextlib.contextmanager
    def paused(self):
        was, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = was


def _caller():
    for frame in reversed(traceback.extract_stack()[:-3]):
        if "/gpulayers/" in frame.filename or "/backends/" in frame.filename:
            return f"{frame.filename.rsplit('/', 2)[-2]}/{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno} {frame.name}"
    return "?"


class DeviceArray:
    """A device array of the stand-in: numpy storage, cupy's interface."""

    __slots__ = ("_a", "_counter")
    __module__ = "cupy"  # as cupy.ndarray's: code that tells arrays apart by module sees a device array
    __array_priority__ = 100  # as cupy.ndarray: higher priorities (gpulayers' Tensor) win binary operators

    def __init__(self, a, counter):
        self._a = a
        self._counter = counter

    # -- plain attributes (host-side metadata: free)
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    device = property(lambda self: types.SimpleNamespace(id=0))
    data = property(lambda self: types.SimpleNamespace(ptr=self._a.ctypes.data))  # the host emulator's "device" address
    T = property(lambda self: self._view(self._a.T))

    def __len__(self):
        return len(self._a)

    def __repr__(self):
        return f"DeviceArray({self._a!r})"

    def __iter__(self):
        for i in range(len(self._a)):
            yield self[i]

    # -- to the host: a copy and a sync each
    def _to_host(self, name):
        _module_of(self._counter).refuse_in_capture(f"a copy to the host ({name})")
        self._counter.add("d2h", name)
        self._counter.add("sync", name)
        return self._a

    def get(self, stream=None, order="C", out=None):
        return np.array(self._to_host("get"), order=order)

    def item(self, *args):
        return self._to_host("item").item(*args)

    def tolist(self):
        return self._to_host("tolist").tolist()

    def __float__(self):
        return float(self._to_host("__float__"))

    def __int__(self):
        return int(self._to_host("__int__"))

    def __index__(self):
        return self._to_host("__index__").__index__()

    def __bool__(self):
        return bool(self._to_host("__bool__"))

    def __array__(self, *args, **kwargs):
        raise TypeError(
            "Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy array explicitly."
        )

    # -- numpy protocol: numpy's functions on device arrays run "on the device", as cupy's do
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return _module_of(self._counter).ufunc_call(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types_, args, kwargs):
        return _module_of(self._counter).call(func.__name__, func, args, kwargs)

    # -- methods
    def _view(self, a):
        return DeviceArray(a, self._counter)

    def _call(self, name, *args, **kwargs):
        return _module_of(self._counter).call(name, getattr(np, name), (self,) + args, kwargs)

    def reshape(self, *shape, order="C"):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return self._call("reshape", shape, order=order)

    def astype(self, dtype, order="K", casting="unsafe", subok=True, copy=True):
        if not copy and np.dtype(dtype) == self._a.dtype:
            return self
        src = self._a
        out = DeviceArray(src.astype(dtype, order=order, casting=casting), self._counter)
        self._counter.add("elementwise", "astype")
        self._counter.alloc(out._a)
        _module_of(self._counter).captured(out._a, lambda: src.astype(dtype, order=order, casting=casting))
        return out

    def copy(self, order="C"):
        return self._call("copy", order=order)

    def view(self, dtype=None):
        return self._view(self._a.view() if dtype is None else self._a.view(dtype))

    def transpose(self, *axes):
        return self._view(self._a.transpose(*axes))

    def swapaxes(self, a, b):
        return self._view(self._a.swapaxes(a, b))

    def ravel(self, order="C"):
        return self._call("ravel", order=order)

    def flatten(self, order="C"):
        return self._call("copy").reshape(-1)

    def squeeze(self, axis=None):
        return self._view(self._a.squeeze(axis))

    def fill(self, value):
        self._counter.add("fill", "fill")
        a = self._a
        _module_of(self._counter).in_place(lambda: a.fill(value), a)

    def __getitem__(self, key):
        return _module_of(self._counter).getitem(self, key)

    def __setitem__(self, key, value):
        _module_of(self._counter).setitem(self, key, value)


def _binary(name, reflected=False, inplace=False):
    ufunc = getattr(np, name)

    def op(self, other):
        if not isinstance(other, (DeviceArray, np.generic, int, float, bool, complex)):
            if getattr(other, "__array_priority__", 0) > self.__array_priority__ or not isinstance(other, np.ndarray):
                return NotImplemented
        mod = _module_of(self._counter)
        if inplace:
            return mod.ufunc_call(ufunc, "__call__", (self, other), {"out": (self,)})
        return mod.ufunc_call(ufunc, "__call__", (other, self) if reflected else (self, other), {})

    return op


for _sym, _uf in [("add", "add"), ("sub", "subtract"), ("mul", "multiply"), ("truediv", "true_divide"),
                  ("floordiv", "floor_divide"), ("mod", "remainder"), ("pow", "power"), ("matmul", "matmul"),
                  ("and", "bitwise_and"), ("or", "bitwise_or"), ("xor", "bitwise_xor")]:
    setattr(DeviceArray, f"__{_sym}__", _binary(_uf))
    setattr(DeviceArray, f"__r{_sym}__", _binary(_uf, reflected=True))
    setattr(DeviceArray, f"__i{_sym}__", _binary(_uf, inplace=True))
for _sym, _uf in [("lt", "less"), ("le", "less_equal"), ("gt", "greater"), ("ge", "greater_equal"),
                  ("eq", "equal"), ("ne", "not_equal")]:
    setattr(DeviceArray, f"__{_sym}__", _binary(_uf))
for _sym, _uf in [("neg", "negative"), ("pos", "positive"), ("abs", "absolute"), ("invert", "invert")]:
    setattr(DeviceArray, f"__{_sym}__", (lambda uf: lambda self: _module_of(self._counter).ufunc_call(uf, "__call__", (self,), {}))(getattr(np, _uf)))
DeviceArray.__hash__ = None
for _name in ("sum", "mean", "max", "min", "argmax", "argmin", "prod", "any", "all", "var", "std", "cumsum", "clip",
              "round", "nonzero", "dot", "take", "repeat", "sort", "argsort", "conj"):
    setattr(DeviceArray, _name, (lambda n: lambda self, *a, **k: self._call(n, *a, **k))(_name))


_MODULES = {}


def _module_of(counter):
    return _MODULES[id(counter)]


class _Generator:
    """A device random generator: numpy's, each draw one ``random`` launch."""

    def __init__(self, gen, fake):
        self._gen, self._fake = gen, fake

    def __getattr__(self, name):
        fn = getattr(self._gen, name)

        def draw(*args, **kwargs):
            out = np.asarray(fn(*args, **kwargs))
            self._fake.counter.add("random", name)
            wrapped = self._fake.wrap(out)
            drawn = out.copy()  # a captured draw replays the numbers it drew (its offset is baked in the graph)
            self._fake.captured(out, lambda: drawn)
            return wrapped

        return draw


class CountingCupy(types.ModuleType):
    """The stand-in module: ``sys.modules["cupy"] = CountingCupy(counter, raw_module)``.

    ``raw_module(code, options, name_expressions)`` gives an object with
    ``get_function(name) -> kernel(grid, block, args, shared_mem=0)`` taking
    numpy buffers (the host emulator's); launches are counted here.
    """

    __version__ = "14.2.0 (counting stand-in)"

    def __init__(self, counter, raw_module, sm_count=132):
        super().__init__("cupy")
        self.counter = counter
        self.capture = None  # a _Capture while a stream captures
        _MODULES[id(counter)] = self
        self.ndarray = DeviceArray
        fake = self

        class RawModule:
            def __init__(self, code, options=(), name_expressions=()):
                self._mod = raw_module(code, tuple(options), tuple(name_expressions))

            def get_function(self, name):
                k = self._mod.get_function(name)

                def launch(grid, block, args, shared_mem=0, stream=None):
                    fake.counter.add("kernel", name)
                    raw = tuple(a._a if isinstance(a, DeviceArray) else a for a in args)
                    if fake.capture is None:
                        k(grid, block, raw, shared_mem=shared_mem)
                        return
                    fake.capture.steps.append(lambda: k(grid, block, raw, shared_mem=shared_mem))
                    # Run now only into buffers of the capture: what existed before must not change yet.
                    k(grid, block, tuple(a if not isinstance(a, np.ndarray) or fake.owned(a) else a.copy() for a in raw),
                      shared_mem=shared_mem)

                return launch

        def _sync(*_):
            fake.refuse_in_capture("a synchronization")
            fake.counter.add("sync", "synchronize")

        class Graph:
            def __init__(self, steps):
                self._steps = steps

            def launch(self, stream=None):
                fake.refuse_in_capture("a graph launch")
                fake.counter.add("graph", "launch")
                with np.errstate(all="ignore"):
                    for step in self._steps:
                        step()

            def upload(self, stream=None):
                pass

        class Stream:
            null = None

            def __init__(self, non_blocking=False, null=False):
                self._null = null

            synchronize = staticmethod(_sync)

            def begin_capture(self, mode=None):
                if self._null:
                    raise RuntimeError("cannot capture on the default (legacy) stream")
                if fake.capture is not None:
                    raise RuntimeError("cudaErrorIllegalState: a capture is already under way (stand-in)")
                fake.capture = _Capture()

            def end_capture(self):
                capture, fake.capture = fake.capture, None
                if capture is None:
                    raise RuntimeError("cudaErrorIllegalState: no capture under way (stand-in)")
                fake.counter.captures += 1
                return Graph(capture.steps)

            def is_capturing(self):
                return fake.capture is not None

            def __enter__(self):
                fake.streams.append(self)
                return self

            def __exit__(self, *exc):
                fake.streams.pop()
                return False

        Stream.null = Stream(null=True)
        self.streams = [Stream.null]

        class MemoryPool:
            def __init__(self, allocator=None):
                self.allocations = 0

            def malloc(self, nbytes):
                self.allocations += 1

            def used_bytes(self):
                return 0

        @contextlib.contextmanager
        def using_allocator(allocator=None):
            fake.allocators.append(allocator)
            try:
                yield
            finally:
                fake.allocators.pop()

        self.allocators = []

        class Device:
            def __init__(self, device=None):
                self.id = 0

            synchronize = staticmethod(_sync)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

        self.RawModule = RawModule
        self.cuda = types.SimpleNamespace(
            runtime=fake_cuda_runtime(sm_count),
            Stream=Stream,
            Device=Device,
            MemoryPool=MemoryPool,
            using_allocator=using_allocator,
            get_current_stream=lambda: fake.streams[-1],
            memory=types.SimpleNamespace(OutOfMemoryError=type("OutOfMemoryError", (MemoryError,), {})),
            compiler=types.SimpleNamespace(CompileException=type("CompileException", (Exception,), {})),
        )
        self.random = types.SimpleNamespace(
            default_rng=lambda seed=None: _Generator(np.random.default_rng(seed), fake),
            RandomState=lambda seed=None: _Generator(np.random.RandomState(seed), fake),
        )

    # -- wrapping
    def wrap(self, out, fresh=True):
        if isinstance(out, np.generic):
            out = np.asarray(out)  # cupy gives 0-d device arrays where numpy gives scalars
        if isinstance(out, np.ndarray):
            if fresh:
                self.counter.alloc(out)
                if self.capture is not None:
                    self.capture.owned[id(out)] = out
            return DeviceArray(out, self.counter)
        if isinstance(out, tuple):
            return tuple(self.wrap(o, fresh) for o in out)
        if isinstance(out, list):
            return [self.wrap(o, fresh) for o in out]
        return out

    def unwrap(self, value, what):
        if isinstance(value, DeviceArray):
            return value._a
        if isinstance(value, np.ndarray) and value.ndim:
            raise TypeError(f"cupy.{what}: a numpy.ndarray (host memory) was passed where a device array is needed")
        if isinstance(value, (list, tuple)):
            return type(value)(self.unwrap(v, what) for v in value)
        return value

    @staticmethod
    def _bases(values):
        out = []
        for v in values:
            if isinstance(v, DeviceArray):
                out.append(v._a)
            elif isinstance(v, (list, tuple)):
                out.extend(CountingCupy._bases(v))
        return out

    # -- stream capture
    def refuse_in_capture(self, what):
        if self.capture is not None:
            raise RuntimeError(
                f"cudaErrorStreamCaptureUnsupported: operation not permitted when stream is capturing ({what}; stand-in)"
            )

    def owned(self, a):
        """Whether the numpy buffer ``a`` (or the array it views) was made during the capture under way."""
        while isinstance(a, np.ndarray):
            if id(a) in self.capture.owned:
                return True
            a = a.base
        return False

    def captured(self, result, compute):
        """A new buffer ``result`` made by ``compute()``: a capture replays it into the same memory."""
        if self.capture is None:
            return
        results = result if isinstance(result, (tuple, list)) else (result,)

        def replay():
            values = compute()
            for r, v in zip(results, values if isinstance(result, (tuple, list)) else (values,)):
                if isinstance(r, np.ndarray):
                    np.copyto(r, v, casting="unsafe")

        self.capture.steps.append(replay)

    def in_place(self, write, *targets):
        """An in-place ``write()`` to ``targets``: done now, or under a capture recorded (and done now only
        when every target was made during the capture)."""
        if self.capture is None:
            write()
            return
        self.capture.steps.append(write)
        if all(self.owned(t) for t in targets):
            with np.errstate(all="ignore"):
                write()

    def _finish(self, name, event, result, inputs, compute=None):
        """Wrap ``result``; a result that is a view of an input costs nothing."""
        bases = self._bases(inputs)

        def is_view(r):
            return isinstance(r, np.ndarray) and any(np.shares_memory(r, b) for b in bases)

        leaves = result if isinstance(result, (tuple, list)) else (result,)
        if all(is_view(r) for r in leaves if isinstance(r, np.ndarray)) and any(isinstance(r, np.ndarray) for r in leaves):
            return self.wrap(result, fresh=False)
        if not isinstance(result, (np.ndarray, tuple, list)) and event not in ("gemm", "reduction"):
            return result  # a host value (a shape, a dtype, a bool about metadata)
        self.counter.add(event, name, 2 if name in _TWO_PASS else 1)
        wrapped = self.wrap(result)
        if compute is not None:
            self.captured(result, compute)
        return wrapped

    # -- entry points
    def ufunc_call(self, ufunc, method, inputs, kwargs):
        for v in inputs:
            if not isinstance(v, (DeviceArray, np.ndarray, np.generic, int, float, bool, complex)):
                return NotImplemented
        args = self.unwrap(inputs, ufunc.__name__)
        out = kwargs.get("out")
        if out is not None:
            kwargs = dict(kwargs, out=tuple(self.unwrap(o, ufunc.__name__) for o in (out if isinstance(out, tuple) else (out,))))
        fn = getattr(ufunc, method)
        event = "gemm" if ufunc.__name__ == "matmul" else ("reduction" if method in ("reduce", "accumulate") else "elementwise")
        self.counter.add(event, f"{ufunc.__name__}.{method}" if method != "__call__" else ufunc.__name__)
        if out is not None:
            self.in_place(lambda: fn(*args, **kwargs), *kwargs["out"])
            return out if isinstance(out, tuple) and len(out) > 1 else (out[0] if isinstance(out, tuple) else out)
        result = fn(*args, **kwargs)
        wrapped = self.wrap(result)
        self.captured(result, lambda: fn(*args, **kwargs))
        return wrapped

    def call(self, name, fn, args, kwargs):
        if name in _HOST:
            return fn(*self.unwrap(args, name), **kwargs)
        if name in ("asarray", "array", "ascontiguousarray", "asanyarray") and args and not isinstance(args[0], DeviceArray):
            # host data (an array, a list, a Python scalar): copied to the device
            self.refuse_in_capture(f"a copy from the host ({name})")
            self.counter.add("h2d", name)
            a = np.array(args[0], dtype=kwargs.get("dtype", args[1] if len(args) > 1 else None), order="C")
            return self.wrap(a)
        out = kwargs.get("out")
        uargs = self.unwrap(args, name)
        ukwargs = {k: self.unwrap(v, name) for k, v in kwargs.items()}
        event = ("gemm" if name in _GEMM else "reduction" if name in _REDUCTIONS | _TWO_PASS
                 else "fill" if name in _FILL else "elementwise")
        if out is not None and name not in _ALLOC_ONLY:
            self.counter.add(event, name)
            self.in_place(lambda: fn(*uargs, **ukwargs), ukwargs["out"])
            return out
        result = fn(*uargs, **ukwargs)
        if name in _ALLOC_ONLY:
            return self.wrap(result)
        return self._finish(name, event, result, args, compute=lambda: fn(*uargs, **ukwargs))

    def getitem(self, arr, key):
        ukey = self.unwrap(key, "__getitem__") if isinstance(key, (DeviceArray, tuple, list)) else key
        result = arr._a[ukey]
        if isinstance(result, np.generic):  # an element: a 0-d view in cupy
            return DeviceArray(np.asarray(result), self.counter)
        if isinstance(result, np.ndarray) and np.shares_memory(result, arr._a):
            return DeviceArray(result, self.counter)
        self.counter.add("elementwise", "__getitem__")
        result = np.asarray(result)
        wrapped = self.wrap(result)
        src = arr._a
        self.captured(result, lambda: src[ukey])
        return wrapped

    def setitem(self, arr, key, value):
        ukey = self.unwrap(key, "__setitem__") if isinstance(key, (DeviceArray, tuple, list)) else key
        a, v = arr._a, self.unwrap(value, "__setitem__")
        self.counter.add("elementwise", "__setitem__")

        def write():
            a[ukey] = v

        self.in_place(write, a)

    # -- module functions
    def asnumpy(self, a, stream=None, order="C", out=None):
        return a.get() if isinstance(a, DeviceArray) else np.asarray(a)

    def is_available(self):
        return True

    def get_array_module(self, *args):
        return self if any(isinstance(a, DeviceArray) for a in args) else np

    def __getattr__(self, name):
        attr = getattr(np, name)
        if isinstance(attr, np.ufunc):
            return _Ufunc(attr, self)
        if isinstance(attr, type) or not callable(attr):
            return attr  # dtypes and scalar types, constants
        fake = self

        def fn(*args, **kwargs):
            return fake.call(name, attr, args, kwargs)

        fn.__name__ = name
        return fn


class _Ufunc:
    def __init__(self, ufunc, fake):
        self._u, self._fake = ufunc, fake
        self.__name__ = ufunc.__name__

    def __call__(self, *args, **kwargs):
        return self._fake.ufunc_call(self._u, "__call__", args, kwargs)

    def reduce(self, *args, **kwargs):
        return self._fake.ufunc_call(self._u, "reduce", args, kwargs)

    def at(self, *args, **kwargs):
        return self._fake.ufunc_call(self._u, "at", args, kwargs)
