"""Host emulation of CUDA kernels: compile .cu sources with g++ and launch them on numpy arrays.

The same .cu text that NVRTC compiles for the GPU is compiled with
``g++ -std=c++20`` against ``cuda_host.h`` (the CUDA built-ins) and
``hostemu_launcher.cpp`` (grid execution, fibers for barriers, the exported C
API), into a shared library cached by a hash of everything that goes into it.

    mod = load(source, ["k<float>"])          # or load(spec) for a kernel_modules() entry
    k = mod.kernel("k<float>")
    k.params                                  # [("const float*", 8), ("int", 4), ...]
    k(grid, block, (x, y, np.int32(n)), shared_mem=0, order="forward")

Arguments are checked against the C parameter types the library exports:
pointers take C-contiguous numpy arrays of exactly the pointee's dtype (or
None for a null pointer), scalars take numpy scalars of exactly the C type
(``np.int32`` for ``int``, ``np.int64`` for ``long long``); Python ints and
floats are refused so a silent conversion never hides a wrong type.

By default every array is passed through a guarded copy: poisoned guard
zones (0xFF bytes: NaN for floats, -1 for ints) on both sides catch
out-of-bounds writes, and ``const T*`` arguments are checked unchanged.
Kernels whose source uses ``__syncthreads`` or warp collectives run with one
fiber per CUDA thread; the others run as plain loops (``mode`` overrides).

Environment: ``CXX`` picks the compiler (default g++), ``GPULAYERS_HOSTEMU_CACHE``
the cache directory (default ``$XDG_CACHE_HOME/gpulayers-hostemu`` or
``~/.cache/gpulayers-hostemu``), ``GPULAYERS_HOSTEMU_TIMEOUT`` the seconds a
launch may run before the process is ended (default 120).

Debug run with AddressSanitizer and UBSan on every kernel: the tests' ``emu``
fixture builds with ``-fsanitize=address,undefined`` when
``GPULAYERS_HOSTEMU_SANITIZE=1``, and Python must start with libasan
preloaded (see :func:`asan_env`)::

    LD_PRELOAD="$(g++ -print-file-name=libasan.so) $(g++ -print-file-name=libstdc++.so)" \\
        ASAN_OPTIONS=detect_leaks=0 GPULAYERS_HOSTEMU_SANITIZE=1 python -m pytest tests/kernels -m kernels
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

__all__ = [
    "CompileError",
    "HostEmuError",
    "Kernel",
    "KernelLaunchError",
    "Module",
    "ModuleSpec",
    "asan_env",
    "barrier_kernels",
    "build",
    "build_many",
    "cache_dir",
    "compiler",
    "compiler_missing_reason",
    "load",
]

HERE = Path(__file__).resolve().parent
HEADER = HERE / "cuda_host.h"
LAUNCHER = HERE / "hostemu_launcher.cpp"
ABI = 2

BASE_FLAGS = (
    "-std=c++20",
    "-O1",
    "-shared",
    "-fPIC",
    "-fvisibility=hidden",
    "-fno-gnu-unique",
    "-ffp-contract=off",  # the GPU may contract to FMA; we compare arithmetic with a tolerance
    "-fno-strict-aliasing",
    "-pthread",
    "-Wl,-z,defs",  # an undefined symbol fails the build, not the dlopen
)
SANITIZE_FLAGS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g")

# Barrier-like built-ins: a source using any of these runs with fibers.
_NEEDS_FIBERS = re.compile(r"__syncthreads|__syncwarp|__shfl|__ballot_sync|__any_sync|__all_sync|__activemask")
_EXTERN_SHARED = re.compile(
    r"extern\s+__shared__\s+([^;{}()]*?(?:(?:__align__|alignas)\s*\(\s*\d+\s*\)[^;{}()]*?)?)\s*\b(\w+)\s*\[\s*\]\s*;"
)
_ALIGN = re.compile(r"__align__\s*\(\s*\d+\s*\)|alignas\s*\(\s*\d+\s*\)")

_CTYPES = {
    "bool": np.dtype(np.bool_),
    "char": np.dtype(np.int8),
    "signed char": np.dtype(np.int8),
    "unsigned char": np.dtype(np.uint8),
    "short": np.dtype(np.int16),
    "unsigned short": np.dtype(np.uint16),
    "int": np.dtype(np.int32),
    "unsigned int": np.dtype(np.uint32),
    "long": np.dtype(np.int64),
    "unsigned long": np.dtype(np.uint64),
    "long long": np.dtype(np.int64),
    "unsigned long long": np.dtype(np.uint64),
    "float": np.dtype(np.float32),
    "double": np.dtype(np.float64),
}
# Pointers to CUDA vector types take arrays of their element type.
_VECTOR_ELEMENTS = {
    "float2": "float", "float3": "float", "float4": "float",
    "double2": "double", "double3": "double", "double4": "double",
    "int2": "int", "int3": "int", "int4": "int", "uint2": "unsigned int", "uint4": "unsigned int",
}
_ORDERS = {"forward": 0, "reverse": 1, "shuffle": 2}
_GUARD = 1024  # bytes of poison on each side of a guarded argument


class HostEmuError(RuntimeError):
    """Base class of the harness's errors."""


class CompileError(HostEmuError):
    """g++ rejected the generated translation unit (the message holds its output)."""


class KernelLaunchError(HostEmuError):
    """A launch failed: bad configuration, barrier divergence, deadlock, out-of-bounds write..."""


# --------------------------------------------------------------- compiler
def compiler():
    """Path of the C++ compiler (``$CXX`` or g++), or None when there is none."""
    return shutil.which(os.environ.get("CXX", "g++"))


_missing_reason = None
_missing_checked = False


def compiler_missing_reason():
    """None when a C++20 g++ is usable, else why not (for ``pytest.skip``)."""
    global _missing_reason, _missing_checked
    if _missing_checked:
        return _missing_reason
    _missing_checked = True
    cxx = compiler()
    if cxx is None:
        _missing_reason = f"no C++ compiler: {os.environ.get('CXX', 'g++')} is not on PATH"
        return _missing_reason
    probe = "#include <source_location>\n#include <atomic>\nint main(){float f=0;std::atomic_ref<float>(f).fetch_add(1);}\n"
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "probe.cpp"
        src.write_text(probe)
        r = subprocess.run([cxx, "-std=c++20", "-fsyntax-only", str(src)], capture_output=True, text=True)
    if r.returncode != 0:
        _missing_reason = f"{cxx} cannot compile C++20 (<source_location>, atomic_ref<float>): {r.stderr[-500:]}"
    return _missing_reason


_compiler_ids = {}


def _compiler_id(cxx):
    """First line of ``cxx --version`` (part of the cache key), asked once per process."""
    if cxx not in _compiler_ids:
        r = subprocess.run([cxx, "--version"], capture_output=True, text=True)
        _compiler_ids[cxx] = r.stdout.splitlines()[0] if r.stdout else cxx
    return _compiler_ids[cxx]


def cache_dir():
    """Directory holding built libraries (created on demand)."""
    d = os.environ.get("GPULAYERS_HOSTEMU_CACHE")
    if d:
        path = Path(d)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = Path(base) / "gpulayers-hostemu"
    path.mkdir(parents=True, exist_ok=True)
    return path


# ------------------------------------------------------------ module specs
class ModuleSpec:
    """One .cu module: its source, NVRTC options and name expressions."""

    def __init__(self, name, source, name_expressions, options=(), path=None, flags=(), sanitize=False):
        self.name = re.sub(r"[^A-Za-z0-9_.-]", "_", str(name))
        self.source = source
        self.name_expressions = tuple(name_expressions)
        self.options = tuple(options)  # NVRTC options (only -D/-U/-I matter here)
        self.path = path
        self.flags = tuple(flags)  # extra g++ flags, e.g. "-DHOSTEMU_UCONTEXT"
        self.sanitize = sanitize  # build with -fsanitize=address,undefined

    @classmethod
    def coerce(cls, spec, name_expressions=None, options=(), name="module"):
        """A ModuleSpec from a source string (+ name expressions), a dict or an object with those attributes."""
        if isinstance(spec, ModuleSpec):
            return spec
        if isinstance(spec, str):
            if name_expressions is None:
                raise TypeError("load(source, name_expressions): name expressions are required")
            return cls(name, spec, name_expressions, options)
        get = (lambda k: spec.get(k)) if isinstance(spec, dict) else (lambda k: getattr(spec, k, None))
        source = get("source") or get("code")
        path = get("path") or get("file")
        if source is None and path is not None:
            source = Path(path).read_text()
        exprs = get("name_expressions") or get("names") or name_expressions
        opts = get("options") or options
        mname = get("name") or (Path(path).stem if path else name)
        if source is None or exprs is None:
            raise TypeError(f"cannot read a module spec from {spec!r}")
        return cls(mname, source, exprs, opts, path)


_KEYWORDS = {"if", "for", "while", "switch", "catch", "return", "sizeof", "alignof", "decltype", "do", "else"}


def _strip_comments(src):
    src = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), src, flags=re.S)
    src = re.sub(r"//[^\n]*", "", src)
    return re.sub(r'"(?:\\.|[^"\\\n])*"', '""', src)


def barrier_kernels(source, names):
    """Which of the kernels ``names`` (name expressions) may reach a barrier or warp collective.

    Finds each function body by its braces, marks those that mention a
    barrier built-in (or a macro or function that does, transitively) and
    maps each name expression to its function. A kernel whose body is not
    found counts as using barriers when the source has any. Launching a
    barrier kernel in loop mode fails loudly, so an error here costs speed,
    never a wrong result.
    """
    src = _strip_comments(source)
    bodies = {}
    for m in re.finditer(r"^\s*#\s*define\s+(\w+)(.*)$", src, flags=re.M):
        bodies.setdefault(m.group(1), []).append(m.group(2))
    stack = []
    head_end = 0
    for i, ch in enumerate(src):
        if ch == "{":
            stack.append((i, src[head_end:i]))
            head_end = i + 1
        elif ch == "}" and stack:
            start, head = stack.pop()
            head_end = i + 1
            fm = re.search(r"\b([A-Za-z_]\w*)\s*(?:<[^<>;{}]*>)?\s*\(([^;{}()]*)\)[\s\w:]*$", head)
            if fm and fm.group(1) not in _KEYWORDS:
                bodies.setdefault(fm.group(1), []).append(src[start:i + 1])
        elif ch == ";":
            head_end = i + 1
    using = {n for n, texts in bodies.items() if any(_NEEDS_FIBERS.search(t) for t in texts)}
    changed = True
    while changed:
        changed = False
        for n, texts in bodies.items():
            if n not in using and any(re.search(rf"\b{re.escape(u)}\b", t) for t in texts for u in using):
                using.add(n)
                changed = True
    any_barrier = bool(_NEEDS_FIBERS.search(src))
    out = {}
    for expr in names:
        base = re.match(r"\s*([\w:]+)", expr).group(1).split("::")[-1]
        out[expr] = (base in using) if base in bodies else any_barrier
    return out


def _c_string(s):
    return json.dumps(s)  # a JSON string is a valid C string literal for printable text


def _rewrite_source(source):
    """Dynamic shared memory: ``extern __shared__ T s[];`` -> a pointer to the worker's buffer.

    The replacement keeps the line count, so g++ messages point at the .cu line.
    """

    def repl(m):
        ctype = " ".join(_ALIGN.sub(" ", m.group(1)).split())
        newlines = m.group(0).count("\n")
        return (
            f"{ctype}* const {m.group(2)} = reinterpret_cast<{ctype}*>(::hostemu::dyn_smem());" + "\n" * newlines
        )

    return _EXTERN_SHARED.sub(repl, source)


def _translate_options(options):
    """NVRTC options -> g++ flags: keep -D/-U/-I, drop the rest (arch, -ftz, std, ...)."""
    flags = []
    it = iter(options)
    for opt in it:
        opt = str(opt)
        for short, long_ in (("-D", "--define-macro"), ("-U", "--undefine-macro"), ("-I", "--include-path")):
            if opt == short or opt == long_:
                flags.append(short + str(next(it)))
                break
            if opt.startswith(long_ + "="):
                flags.append(short + opt[len(long_) + 1 :])
                break
            if opt.startswith(short) and len(opt) > 2:
                flags.append(opt)
                break
    return flags


def _translation_unit(spec):
    """cuda_host.h, the launcher runtime, the (rewritten) .cu text, then the kernel table.

    The runtime comes before the kernel source so that macros defined by a
    .cu file cannot change it; only the table, which takes the kernels'
    addresses, follows the source.
    """
    origin = str(spec.path) if spec.path else f"{spec.name}.cu"
    lines = [
        '#include "cuda_host.h"',
        '#include "hostemu_launcher.cpp"',
        f"#line 1 {_c_string(origin)}",
        _rewrite_source(spec.source),
        "",
        f"#line 1 {_c_string('hostemu-registry(' + spec.name + ')')}",
        "namespace hostemu {",
        "const Entry entries[] = {",
    ]
    for expr in spec.name_expressions:
        lines.append(f"    make_entry({_c_string(expr)}, &{expr}),")
    if not spec.name_expressions:
        lines.append("    Entry{nullptr, nullptr, nullptr, 0, nullptr, nullptr},")
    lines += ["};", f"const int entry_count = {len(spec.name_expressions)};", "}  // namespace hostemu", ""]
    return "\n".join(lines)


def _flags(spec, sanitize, extra_flags):
    flags = list(BASE_FLAGS) + _translate_options(spec.options)
    if sanitize or spec.sanitize:
        flags += SANITIZE_FLAGS
    flags += list(spec.flags) + list(extra_flags)
    return flags


def _key(spec, sanitize, extra_flags, cxx):
    h = hashlib.sha256()
    for part in (
        f"abi{ABI}",
        _compiler_id(cxx),
        HEADER.read_text(),
        LAUNCHER.read_text(),
        _translation_unit(spec),
        "\0".join(_flags(spec, sanitize, extra_flags)),
    ):
        h.update(part.encode())
        h.update(b"\0\1")
    return h.hexdigest()[:24]


def build(spec, *, sanitize=False, extra_flags=()):
    """Compile ``spec`` (a ModuleSpec) unless cached; returns the shared library's path."""
    reason = compiler_missing_reason()
    if reason:
        raise HostEmuError(reason)
    cxx = compiler()
    sanitize = sanitize or spec.sanitize
    key = _key(spec, sanitize, tuple(extra_flags), cxx)
    out = cache_dir() / f"{spec.name}-{'san-' if sanitize else ''}{key}.so"
    if out.exists():
        try:
            os.utime(out)  # recently used: kept by _prune
        except OSError:
            pass
        return out
    _prune(out.parent)
    tu = out.with_suffix(".cpp")
    tmp_tu = tu.with_name(f"{tu.stem}.{os.getpid()}.{threading.get_ident()}.cpp")
    tmp_tu.write_text(_translation_unit(spec))
    tmp_so = out.with_name(f"{out.stem}.{os.getpid()}.{threading.get_ident()}.tmp.so")
    cmd = [cxx, *_flags(spec, sanitize, extra_flags), "-I", str(HERE), str(tmp_tu), "-o", str(tmp_so)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        tmp_tu.unlink(missing_ok=True)
        tmp_so.unlink(missing_ok=True)
        raise CompileError(f"g++ failed on {spec.name} ({' '.join(cmd)}):\n{r.stderr[-8000:]}")
    os.replace(tmp_tu, tu)  # kept next to the library, for reading g++/ASan reports
    os.replace(tmp_so, out)
    return out


_pruned = False
PRUNE_DAYS = 14


def _prune(directory):
    """Once per process, before a fresh build: remove libraries unused for PRUNE_DAYS days."""
    global _pruned
    if _pruned:
        return
    _pruned = True
    import time

    limit = time.time() - PRUNE_DAYS * 86400
    for p in directory.glob("*.so"):
        try:
            if p.stat().st_mtime < limit:
                p.unlink()
                p.with_suffix(".cpp").unlink(missing_ok=True)
        except OSError:
            pass


def build_many(specs, *, sanitize=False, jobs=None, return_exceptions=False):
    """Build several ModuleSpecs in parallel (one g++ per core); returns their paths.

    With ``return_exceptions`` a failed build gives its exception in place of
    the path instead of raising (after every build has finished).
    """
    specs = [ModuleSpec.coerce(s) for s in specs]
    jobs = jobs or max(1, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        # Slowest first (sanitizer builds, then the most instantiations), so they do not start last.
        def cost(i):
            return (not specs[i].sanitize, -len(specs[i].source) * len(specs[i].name_expressions))

        futures = {i: pool.submit(build, specs[i], sanitize=sanitize) for i in sorted(range(len(specs)), key=cost)}
    out = []
    for i in range(len(specs)):
        exc = futures[i].exception()
        if exc is not None and not return_exceptions:
            raise exc
        out.append(exc if exc is not None else futures[i].result())
    return out


def asan_env(env=None):
    """Environment for a subprocess that loads ``sanitize=True`` libraries (preloads libasan)."""
    env = dict(os.environ if env is None else env)
    cxx = compiler() or "g++"
    libs = [
        subprocess.run([cxx, f"-print-file-name={lib}"], capture_output=True, text=True).stdout.strip()
        for lib in ("libasan.so", "libstdc++.so")  # libstdc++ too, or ASan cannot intercept __cxa_throw
    ]
    env["LD_PRELOAD"] = " ".join(libs)
    env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=0:halt_on_error=1"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    return env


# ------------------------------------------------------------------ loading
_modules = {}
_modules_lock = threading.Lock()


def load(spec, name_expressions=None, options=(), *, name="module", sanitize=False, extra_flags=()):
    """Build (or reuse) and load a module; returns a :class:`Module`.

    ``spec`` is a ModuleSpec, a kernel_modules() entry (dict or object with
    source/options/name_expressions), or a source string given together with
    ``name_expressions``.
    """
    spec = ModuleSpec.coerce(spec, name_expressions, options, name)
    sanitize = sanitize or spec.sanitize
    if sanitize and "libasan" not in Path("/proc/self/maps").read_text():
        raise HostEmuError(
            "sanitize=True needs libasan loaded first: run Python under hostemu.asan_env() "
            "(LD_PRELOAD=$(g++ -print-file-name=libasan.so))"
        )
    path = build(spec, sanitize=sanitize, extra_flags=extra_flags)
    with _modules_lock:
        mod = _modules.get(path)
        if mod is None:
            mod = _modules[path] = Module(path, spec, sanitized=sanitize)
    return mod


class Module:
    """A loaded library: ``kernel(name)`` for each name expression."""

    def __init__(self, path, spec, sanitized=False):
        self.path = Path(path)
        self.spec = spec
        self.sanitized = sanitized  # built with -fsanitize=address,undefined
        self.needs_fibers = bool(_NEEDS_FIBERS.search(spec.source))
        fibers = barrier_kernels(spec.source, spec.name_expressions)
        lib = self._lib = ctypes.CDLL(str(path))
        lib.hostemu_abi.restype = ctypes.c_int
        if lib.hostemu_abi() != ABI:
            raise HostEmuError(f"{path}: ABI mismatch")
        lib.hostemu_features.restype = ctypes.c_char_p
        lib.hostemu_kernel_count.restype = ctypes.c_int
        lib.hostemu_kernel_name.restype = ctypes.c_char_p
        lib.hostemu_kernel_name.argtypes = [ctypes.c_int]
        lib.hostemu_kernel_nparams.restype = ctypes.c_int
        lib.hostemu_kernel_nparams.argtypes = [ctypes.c_int]
        lib.hostemu_kernel_param_type.restype = ctypes.c_char_p
        lib.hostemu_kernel_param_type.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.hostemu_kernel_param_size.restype = ctypes.c_ulonglong
        lib.hostemu_kernel_param_size.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.hostemu_launch.restype = ctypes.c_int
        lib.hostemu_launch.argtypes = [
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_ulonglong,
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_ulonglong,
            ctypes.c_int,
            ctypes.c_double,
            ctypes.c_char_p,
            ctypes.c_ulonglong,
        ]
        self.features = lib.hostemu_features().decode()
        self.kernels = {}
        for i in range(lib.hostemu_kernel_count()):
            name = lib.hostemu_kernel_name(i).decode()
            params = [
                (lib.hostemu_kernel_param_type(i, j).decode(), int(lib.hostemu_kernel_param_size(i, j)))
                for j in range(lib.hostemu_kernel_nparams(i))
            ]
            self.kernels[name] = Kernel(self, i, name, params, fibers.get(name, self.needs_fibers))

    def kernel(self, name):
        try:
            return self.kernels[name]
        except KeyError:
            raise KeyError(f"{self.spec.name} has no kernel {name!r}; it has {sorted(self.kernels)}") from None

    __getitem__ = kernel

    @property
    def names(self):
        return list(self.kernels)


def _dims(v, what):
    if isinstance(v, (int, np.integer)):
        v = (int(v),)
    v = tuple(int(x) for x in v)
    if not 1 <= len(v) <= 3:
        raise KernelLaunchError(f"{what} must have 1 to 3 dimensions, got {v}")
    v = v + (1,) * (3 - len(v))
    if any(x < 0 or x >= 2**32 for x in v):
        raise KernelLaunchError(f"{what} dimension out of range: {v}")
    return (ctypes.c_uint * 3)(*v)


class _Param:
    def __init__(self, ctype, size):
        self.ctype, self.size = ctype, size
        self.pointer = ctype.endswith("*")
        base = ctype[:-1] if self.pointer else ctype
        self.const = base.startswith("const ")
        base = base[len("const ") :] if self.const else base
        base = _VECTOR_ELEMENTS.get(base.removeprefix("struct "), base)
        self.base = base
        self.dtype = _CTYPES.get(base)
        if not self.pointer and self.dtype is not None and self.dtype.itemsize != size:
            raise HostEmuError(f"C type {ctype} has size {size}, numpy {self.dtype} {self.dtype.itemsize}")


class Kernel:
    """A launchable kernel; ``params`` lists its (C type, size) parameters."""

    def __init__(self, module, index, name, params, needs_fibers=True):
        self.module, self.index, self.name = module, index, name
        self.needs_fibers = needs_fibers  # "auto" mode runs it with fibers
        self.params = params
        self._params = [_Param(t, s) for t, s in params]

    def __repr__(self):
        return f"<hostemu kernel {self.name}({', '.join(t for t, _ in self.params)})>"

    def _check(self, i, p, a):
        where = f"{self.name}: argument {i} ({p.ctype})"
        if p.pointer:
            if a is None:
                return
            if not isinstance(a, np.ndarray):
                raise TypeError(f"{where} takes a numpy array or None, got {type(a).__name__}")
            if p.dtype is not None and a.dtype != p.dtype:
                raise TypeError(f"{where} takes a {p.dtype} array, got {a.dtype}")
            if p.dtype is None and p.base != "void" and not p.base.endswith("*"):
                raise TypeError(f"{where}: no numpy dtype for {p.base!r}")
            if not a.flags.c_contiguous:
                raise TypeError(f"{where} needs a C-contiguous array")
            if not p.const and not a.flags.writeable:
                raise TypeError(f"{where} is written through but the array is read-only")
            return
        if not isinstance(a, np.generic):  # (np.float64 subclasses float: test np.generic first)
            want = p.dtype.type.__name__ if p.dtype is not None else f"{p.size} bytes"
            if p.dtype is None and isinstance(a, (bytes, bytearray)) and len(a) == p.size:
                return
            raise TypeError(f"{where} takes a numpy {want} scalar, got {type(a).__name__} {a!r}")
        if p.dtype is None:
            if a.nbytes != p.size:
                raise TypeError(f"{where} takes {p.size} bytes, got {a.nbytes}")
            return
        if a.dtype != p.dtype:
            raise TypeError(f"{where} takes numpy {p.dtype}, got {a.dtype}")

    def __call__(
        self,
        grid,
        block,
        args,
        shared_mem=0,
        order="forward",
        *,
        mode="auto",
        workers=1,
        seed=0,
        guard=None,
        max_shared_mem=48 * 1024,
        timeout_s=None,
    ):
        """Launch like cuLaunchKernel.

        Args:
            grid, block: int or 1-3 tuple.
            args: one value per kernel parameter (see module docstring).
            shared_mem: dynamic shared memory bytes.
            order: "forward", "reverse" or "shuffle" (with ``seed``): the order
                blocks are visited and, within a block, threads are run
                between barriers.
            mode: "auto" (fibers when the kernel may reach a barrier or warp
                collective, see :func:`barrier_kernels`), "loop", "fibers".
            workers: OS threads running blocks concurrently (1: deterministic).
            guard: pass arrays through poisoned guard zones and check them;
                default on, except in sanitizer builds, where AddressSanitizer
                watches the arrays themselves (reads too).
            timeout_s: end the whole process, with a message on stderr, when
                the launch runs longer (an endless loop in a kernel cannot be
                interrupted otherwise); default ``$GPULAYERS_HOSTEMU_TIMEOUT``
                or 120 s; 0 for no limit.
        """
        args = tuple(args)
        if len(args) != len(self._params):
            raise TypeError(f"{self.name} takes {len(self._params)} arguments {self.params}, got {len(args)}")
        for i, (p, a) in enumerate(zip(self._params, args)):
            self._check(i, p, a)
        if order not in _ORDERS:
            raise ValueError(f"order must be one of {sorted(_ORDERS)}")
        if mode not in ("auto", "loop", "fibers"):
            raise ValueError("mode must be 'auto', 'loop' or 'fibers'")
        if shared_mem < 0 or shared_mem > max_shared_mem:
            raise KernelLaunchError(
                f"{self.name}: shared_mem={shared_mem} exceeds {max_shared_mem} bytes "
                "(CUDA's default limit without cudaFuncAttributeMaxDynamicSharedMemorySize)"
            )
        fibers = self.needs_fibers if mode == "auto" else mode == "fibers"
        if guard is None:
            guard = not self.module.sanitized
        grid3, block3 = _dims(grid, "grid"), _dims(block, "block")

        holders, guarded = [], {}
        arrays = [a for p, a in zip(self._params, args) if p.pointer and a is not None]
        for i, (p, a) in enumerate(zip(self._params, args)):
            if p.pointer:
                if a is None:
                    holders.append(ctypes.c_void_p(0))
                    continue
                addr = a.__array_interface__["data"][0]
                if guard and a.nbytes and not any(
                    b is not a and np.may_share_memory(a, b) and (b.ctypes.data, b.nbytes) != (addr, a.nbytes)
                    for b in arrays
                ):
                    g = guarded.get((addr, a.nbytes))
                    if g is None:
                        g = guarded[(addr, a.nbytes)] = _Guarded(a)
                    g.params.append((i, p))
                    addr = g.addr
                holders.append(ctypes.c_void_p(addr))
            else:
                raw = a if isinstance(a, (bytes, bytearray)) else a.tobytes()
                holders.append((ctypes.c_char * max(1, len(raw))).from_buffer_copy(raw))
        argv = (ctypes.c_void_p * max(1, len(holders)))(*[ctypes.addressof(h) for h in holders])
        err = ctypes.create_string_buffer(4096)
        rc = self.module._lib.hostemu_launch(
            self.index,
            grid3,
            block3,
            int(shared_mem),
            argv,
            1 if fibers else 0,
            _ORDERS[order],
            int(seed),
            int(workers),
            float(_default_timeout() if timeout_s is None else timeout_s),
            err,
            len(err),
        )
        problems = []
        for g in guarded.values():
            problems += g.finish(self.name)
        if rc != 0:
            raise KernelLaunchError(f"{self.name}: {err.value.decode(errors='replace')}")
        if problems:
            raise KernelLaunchError("; ".join(problems))


def _default_timeout():
    return float(os.environ.get("GPULAYERS_HOSTEMU_TIMEOUT", "120"))


class _Guarded:
    """A copy of an array between two poisoned guard zones."""

    def __init__(self, a):
        self.array = a
        n = a.nbytes
        self.buf = np.empty(n + 2 * _GUARD + 256, dtype=np.uint8)
        off = (-self.buf.ctypes.data) % 256
        self.lo = off + _GUARD
        self.buf[:] = 0xFF
        self.view = self.buf[self.lo : self.lo + n]
        self.view[:] = a.reshape(-1).view(np.uint8)
        self.addr = self.buf.ctypes.data + self.lo
        self.params = []

    def finish(self, kname):
        a, n = self.array, self.array.nbytes
        problems = []
        names = ", ".join(f"{i} ({p.ctype})" for i, p in self.params)
        before = np.flatnonzero(self.buf[self.lo - _GUARD : self.lo] != 0xFF)
        after = np.flatnonzero(self.buf[self.lo + n : self.lo + n + _GUARD] != 0xFF)
        if before.size:
            problems.append(f"{kname}: wrote {_GUARD - before[0]} bytes before the start of argument {names}")
        if after.size:
            problems.append(
                f"{kname}: wrote past the end of argument {names} (byte {n + after[-1]} of a {n}-byte array)"
            )
        if all(p.const for _, p in self.params):
            if not np.array_equal(self.view, a.reshape(-1).view(np.uint8)):
                problems.append(f"{kname}: wrote to const argument {names}")
        else:
            a.reshape(-1).view(np.uint8)[:] = self.view
        return problems
