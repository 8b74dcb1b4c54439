"""Shared pieces of the host-emulation tests: the self-test module specs and comparison helpers."""

from pathlib import Path

import numpy as np

import hostemu

HERE = Path(__file__).resolve().parent

SELFTEST_KERNELS = (
    "block_sum<float>",
    "block_sum<double>",
    "block_sum_dyn<float>",
    "rotate_ok",
    "shift_ok",
    "shift_racy",
    "barrier_half",
    "early_return",
    "barrier_split",
    "count_positive",
    "axpb<float>",
    "axpb<double>",
    "warp_sum",
    "shfl_xor_bcast",
    "write_past_end",
    "write_const",
    "smem_overrun",
    "read_past_end",
    "all_types",
    "atomics",
    "int_overflow",
    "endless",
)
# Smaller builds of the same file: the ucontext fibers, and the sanitizers.
UCONTEXT_KERNELS = ("block_sum<float>", "block_sum<double>", "warp_sum", "barrier_split", "shift_racy")
SANITIZE_KERNELS = ("read_past_end", "int_overflow", "block_sum<float>")


def selftest_spec(name="selftest", kernels=SELFTEST_KERNELS, **kw):
    path = HERE / "selftest_kernels.cu"
    return hostemu.ModuleSpec(name, path.read_text(), kernels, path=str(path), **kw)


def selftest_specs():
    return [
        selftest_spec(),
        selftest_spec("selftest_ucontext", UCONTEXT_KERNELS, flags=("-DHOSTEMU_UCONTEXT",)),
        selftest_spec("selftest_san", SANITIZE_KERNELS, sanitize=True),
    ]


# ------------------------------------------------------------ comparison tools
i32, i64 = np.int32, np.int64
SENTINEL_INT = -7777  # poison for int outputs
ORDERS_BARRIER = ("forward", "reverse", "shuffle")


def poison(shape, dtype):
    """An output buffer filled with NaN (floats) or SENTINEL_INT (ints), so unwritten elements show."""
    a = np.empty(shape, dtype=dtype)
    a.fill(np.nan if np.dtype(dtype).kind == "f" else SENTINEL_INT)
    return a


def cupy_grid(work, block=256, cap=132 * 16):
    """The grid CupyOps launches for ``work`` items: ceil(work / block), capped at 16 waves of 132 SMs."""
    return max(1, min(-(-int(work) // block), cap))


# Launch configurations for elementwise grid-stride kernels: (name, grid(work), block).
LAUNCHES = {
    "cupy": (cupy_grid, 256),
    "grid1": (lambda work: 1, 32),  # one block of one warp strides over everything
    "odd": (lambda work: 3, 7),  # a block size that is not a multiple of 32
}


def same_pads(n, k, s, d=1):
    """Keras 'same' padding along one axis: (before, after), the extra cell after."""
    out = (n - 1) // s + 1
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


def assert_same_bits(got, want, what=""):
    """Exact equality (NaN == NaN), with the first mismatches in the message."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    bad = ~((got == want) | (np.isnan(got) & np.isnan(want)) if got.dtype.kind == "f" else (got == want))
    if bad.any():
        idx = np.argwhere(bad)[:5]
        detail = ", ".join(f"{tuple(int(v) for v in i)}: got {got[tuple(i)]!r} want {want[tuple(i)]!r}" for i in idx)
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} elements differ; {detail}")


def tol(dtype):
    return dict(rtol=2e-6, atol=1e-6) if np.dtype(dtype) == np.float32 else dict(rtol=1e-13, atol=1e-13)


def expr(kernel, dtype):
    """Name expression of a template kernel for a numpy dtype: expr("im2col", np.float32) == "im2col<float>"."""
    return f"{kernel}<{ {'float32': 'float', 'float64': 'double'}[np.dtype(dtype).name] }>"


def fake_cuda_runtime(sm_count):
    """``cupy.cuda.runtime`` of the stand-in cupy modules: device 0, ``sm_count`` SMs.

    No ``getDeviceCount``: backends' probe then finds no usable GPU, so a test
    that resolves the "auto" backend while a stand-in is installed never picks
    it (and never caches that choice for the tests after it).
    """

    class Runtime:
        cudaDevAttrMultiProcessorCount = 16

        @staticmethod
        def getDevice():
            return 0

        @staticmethod
        def deviceGetAttribute(attr, device):
            assert attr == Runtime.cudaDevAttrMultiProcessorCount
            return sm_count

        @staticmethod
        def getDeviceProperties(device):
            return {"name": b"host emulation", "totalGlobalMem": 80 * 2**30}

    return Runtime


def load_kernel_module(code, options, name_expressions):
    """The host-emulated build of the kernel_modules() entry CupyOps hands to ``cupy.RawModule``,
    checking the options and name expressions it passed are that entry's."""
    from backends.cuda_sources import kernel_modules

    spec = next(m for m in kernel_modules() if m.source == code)
    assert tuple(name_expressions) == tuple(spec.name_expressions)
    assert tuple(options) == tuple(spec.options)
    return hostemu.load(spec)
