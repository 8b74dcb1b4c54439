"""The CUDA kernel sources of the cupy backend, in one place.

:func:`kernel_modules` is the single description of what gets compiled: for
each ``backends/kernels/*.cu`` file, its path and text, the NVRTC options the
library passes to ``cupy.RawModule`` and the template name expressions it
instantiates. :class:`backends.cupy_ops.CupyOps` loads its modules from it,
and the compile check (NVRTC, no GPU needed) and the host-emulation tests
use the same description, so all three see exactly the same code.

Kernel conventions (every ``.cu`` file):

* Every kernel is a ``template <typename T> __global__ void name(...)``
  (optionally ``__launch_bounds__(1024)`` before the name, where a
  register-hungry instantiation must still fit a 1024-thread block)
  instantiated for ``float`` and ``double`` (name expressions
  ``"name<float>"`` and ``"name<double>"``).
* Every kernel is correct for any grid size (grid-stride loops over elements
  or, for block reductions, over work units by ``blockIdx.x``) and for any
  block size from 1 to :data:`MAX_BLOCK` threads (the block-reduction kernels
  size their ``__shared__`` arrays for that many). Only ``blockDim.x`` /
  ``gridDim.x`` are used: launch 1-D grids and blocks.
* Scalars are ``int`` (sizes, flags), ``long long`` (products that can pass
  2**31) or ``T`` (epsilon); arrays are C-contiguous unless a kernel takes
  explicit element strides. One struct is passed by value: the optimizer
  kernels' ``struct MtTable`` of device pointers (a numpy structured scalar
  of ``backends.multi_tensor.TABLE_DTYPE``). No atomics, no dynamic shared
  memory.

The C parameter types of each kernel come from parsing its signature in the
source (:attr:`KernelModule.param_types`), so there is no second table to
keep in step: ``param_types["im2col<float>"]`` is e.g.
``("const float*", "float*", "int", ..., "long long", ...)``.
"""

import dataclasses
import functools
import os
import re

__all__ = [
    "DTYPES",
    "KERNEL_DIR",
    "MAX_BLOCK",
    "NVRTC_OPTIONS",
    "COMMON_HEADER",
    "CUPY_ADDED_OPTIONS",
    "KernelModule",
    "kernel_modules",
    "parse_kernel_signatures",
]

KERNEL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels")

# Options the library passes to cupy.RawModule(options=...).
NVRTC_OPTIONS = ("--std=c++17",)

# What cupy adds by itself when it compiles a RawModule (see
# cupy._core.core.assemble_cupy_compiler_options; cupy also adds its include
# directories and -arch). A compile check outside cupy should add these too.
CUPY_ADDED_OPTIONS = ("-ftz=true", "--device-as-default-execution-space")

# C type for each instantiation, in the order of the name expressions.
DTYPES = (("float", "float32"), ("double", "float64"))

# Largest block (threads) the kernels accept; CupyOps launches 256.
MAX_BLOCK = 1024

# Device helpers put in front of every file's source (kernels/common.cuh).
COMMON_HEADER = "common.cuh"

# The files, in a fixed order, with the kernels each instantiates. Every
# template kernel of a file must be listed here (the compile check and
# tests/kernels compare this with the parsed source).
_FILES = (
    ("conv", "conv.cu", ("im2col", "col2im")),
    (
        "pool",
        "pool.cu",
        (
            "max_pool_fwd",
            "pool_route_bwd",
            "avg_pool_fwd",
            "avg_pool_bwd",
            "stoch_pool_fwd",
            "stoch_pool_inf_fwd",
            "stoch_pool_inf_stats",
            "stoch_pool_inf_bwd",
            "global_pool_fwd_serial",
            "global_pool_fwd_block",
            "global_avg_bwd",
            "global_max_bwd",
        ),
    ),
    (
        "batchnorm",
        "batchnorm.cu",
        (
            "bn_partial_last",
            "bn_partial_mid",
            "bn_params",
            "bn_params_welford",
            "bn_fin_bwd",
            "bn_apply",
            "bn_bwd_apply",
        ),
    ),
    ("softmax", "softmax.cu", ("softmax_rows", "bias_softmax_rows", "sparse_xent_fwd", "sparse_xent_mean", "sparse_xent_bwd", "top1_match")),
    ("elementwise", "elementwise.cu", ("relu_bwd", "dropout_fwd", "dropout_bwd", "philox_fill", "dropout_philox", "bias_relu", "accumulate")),
    ("optimizer", "optimizer.cu", ("mt_sgd", "mt_adam", "mt_rmsprop", "mt_adagrad")),
)

_SIG_RE = re.compile(
    r"template\s*<\s*typename\s+T\s*>\s*__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(([^)]*)\)",
    re.S,
)


def _strip_comments(src):
    src = re.sub(r"/\*.*?\*/", " ", src, flags=re.S)
    return re.sub(r"//[^\n]*", " ", src)


def _param_type(decl):
    """``'const T* __restrict__ x'`` -> ``'const T*'``; ``'long long n'`` -> ``'long long'``."""
    decl = decl.replace("__restrict__", " ")
    decl = re.sub(r"\s*\*\s*", "* ", decl).strip()
    m = re.match(r"^(.*?)\s*\b(\w+)$", decl)
    if not m or not m.group(1):
        raise ValueError(f"cannot parse kernel parameter {decl!r}")
    return re.sub(r"\s+", " ", m.group(1)).replace(" *", "*").strip()


def parse_kernel_signatures(source):
    """``{kernel name: (C parameter types with 'T' for the template type, ...)}`` from .cu text."""
    out = {}
    for name, params in _SIG_RE.findall(_strip_comments(source)):
        params = params.strip()
        out[name] = tuple(_param_type(p) for p in params.split(",")) if params else ()
    return out


def _subst(ctype, t):
    return re.sub(r"\bT\b", t, ctype)


@dataclasses.dataclass(frozen=True)
class KernelModule:
    """One ``.cu`` file as CupyOps compiles it.

    Attributes:
        name: short name (``"conv"``, ``"pool"``, ``"batchnorm"``).
        path: absolute path of the ``.cu`` file.
        source: ``kernels/common.cuh`` followed by its text (what
            ``cupy.RawModule(code=...)`` gets).
        options: NVRTC options passed to ``cupy.RawModule(options=...)``.
        kernels: template kernel names in the file.
        name_expressions: ``"kernel<float>"``, ``"kernel<double>"`` for each kernel.
        param_types: name expression -> tuple of C parameter types, e.g.
            ``("const float*", "float*", "int", "long long")``.
        dtypes: name expression -> numpy dtype name of ``T`` (``"float32"``/``"float64"``).
    """

    name: str
    path: str
    source: str
    options: tuple
    kernels: tuple
    name_expressions: tuple
    param_types: dict
    dtypes: dict

    def expression(self, kernel, dtype):
        """Name expression of ``kernel`` for numpy ``dtype`` (float32 or float64)."""
        dtype = str(getattr(dtype, "name", dtype))
        for ctype, npname in DTYPES:
            if npname == dtype:
                return f"{kernel}<{ctype}>"
        raise TypeError(f"no CUDA instantiation of {kernel} for dtype {dtype}")


@functools.lru_cache(maxsize=None)
def kernel_modules():
    """Every kernel module, as a tuple of :class:`KernelModule` (read from disk once per process).

    Raises RuntimeError when a listed kernel has no template signature in its
    file (a source and this list out of step).
    """
    # #line keeps compiler messages pointing at the right file and line.
    with open(os.path.join(KERNEL_DIR, COMMON_HEADER), encoding="utf-8") as f:
        common = f'#line 1 "{COMMON_HEADER}"\n' + f.read() + "\n"
    mods = []
    for name, fname, kernels in _FILES:
        path = os.path.join(KERNEL_DIR, fname)
        with open(path, encoding="utf-8") as f:
            source = common + f'#line 1 "{fname}"\n' + f.read()
        sigs = parse_kernel_signatures(source)
        missing = [k for k in kernels if k not in sigs]
        if missing:
            raise RuntimeError(f"{path}: kernels {missing} are listed in cuda_sources but not defined there")
        exprs, types, dtypes = [], {}, {}
        for k in kernels:
            for ctype, npname in DTYPES:
                e = f"{k}<{ctype}>"
                exprs.append(e)
                types[e] = tuple(_subst(p, ctype) for p in sigs[k])
                dtypes[e] = npname
        mods.append(
            KernelModule(
                name=name,
                path=path,
                source=source,
                options=NVRTC_OPTIONS,
                kernels=tuple(kernels),
                name_expressions=tuple(exprs),
                param_types=types,
                dtypes=dtypes,
            )
        )
    return tuple(mods)
