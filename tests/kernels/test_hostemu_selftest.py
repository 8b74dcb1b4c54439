"""Self-tests of the host-emulation harness on its own small kernels (selftest_kernels.cu).

They check that the emulator runs barriers and warp collectives like a GPU,
exposes a planted missing-barrier race by reordering threads, reports
divergent barriers as errors instead of hanging, catches out-of-bounds and
const writes, and refuses arguments of the wrong C type.
"""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import hostemu
from emu_helpers import HERE, SANITIZE_KERNELS

pytestmark = pytest.mark.kernels

ORDERS = ("forward", "reverse", "shuffle")
i32, i64 = np.int32, np.int64


@pytest.fixture(scope="module")
def st(emu):
    return emu["selftest"]


def poisoned(shape, dtype):
    a = np.empty(shape, dtype=dtype)
    a.fill(np.nan if np.dtype(dtype).kind == "f" else -1)
    return a


# ----------------------------------------------------------------- barriers
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("grid,block", [(4, 256), (1, 64), (3, 32), (2, 1)])
def test_barrier_reduction_every_order(st, dtype, grid, block):
    n = 1000
    x = np.random.default_rng(0).standard_normal(n).astype(dtype)
    name = "block_sum<float>" if dtype == np.float32 else "block_sum<double>"
    assert st.kernel(name).needs_fibers
    results = []
    for order in ORDERS:
        out = poisoned(grid, dtype)
        st.kernel(name)(grid, block, (x, out, i32(n)), order=order, seed=7)
        results.append(out)
    out = poisoned(grid, dtype)
    st.kernel(name)(grid, block, (x, out, i32(n)), workers=2)  # blocks on two OS threads, fibers on each
    results.append(out)
    # The tree reduction's summation order is fixed: every schedule gives the same bits.
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    np.testing.assert_allclose(results[0].sum(dtype=np.float64), x.sum(dtype=np.float64), rtol=1e-5)


def test_dynamic_shared_memory_reduction(st):
    x = np.arange(700, dtype=np.float32)
    for order in ORDERS:
        out = poisoned(3, np.float32)
        st.kernel("block_sum_dyn<float>")(3, 128, (x, out, i32(700)), shared_mem=128 * 4, order=order)
        assert out.sum() == x.sum()


def test_barrier_kernel_correct_in_both_modes_of_scheduling(st):
    x = np.arange(4 * 64, dtype=np.float32)
    want = np.roll(x.reshape(4, 64), -1, axis=1).reshape(-1)
    for order in ORDERS:
        y = poisoned(x.shape, np.float32)
        st.kernel("rotate_ok")(4, 64, (x, y), order=order)
        np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("mode", ["auto", "fibers"])
def test_missing_barrier_race_exposed_by_reverse_order(st, mode):
    x = np.arange(2 * 64, dtype=np.float32) + 1
    want = x.copy()
    want.reshape(2, 64)[:, 1:] = x.reshape(2, 64)[:, :-1]
    ok, racy = st.kernel("shift_ok"), st.kernel("shift_racy")
    assert ok.needs_fibers and not racy.needs_fibers  # no barrier: a plain loop in auto mode
    for order in ("forward", "reverse"):
        y = poisoned(x.shape, np.float32)
        ok(2, 64, (x, y), order=order, mode=mode)
        np.testing.assert_array_equal(y, want)
    y_fwd, y_rev = poisoned(x.shape, np.float32), poisoned(x.shape, np.float32)
    racy(2, 64, (x, y_fwd), order="forward", mode=mode)
    racy(2, 64, (x, y_rev), order="reverse", mode=mode)
    np.testing.assert_array_equal(y_fwd, want)  # thread order hides the race...
    assert not np.array_equal(y_rev, want)  # ...the reversed order shows it
    assert np.count_nonzero(y_rev != want) >= 62  # at least a whole block reads stale values


def test_divergent_barrier_is_an_error_not_a_hang(st):
    y = np.zeros(64, np.float32)
    with pytest.raises(hostemu.KernelLaunchError, match=r"barrier divergence: 32 threads wait at __syncthreads "
                       r"selftest_kernels.cu:\d+ \(barrier #1\) but 32 threads have exited"):
        st.kernel("barrier_half")(1, 64, (y,))


def test_early_return_before_barrier_is_an_error(st):
    x = np.ones(100, np.float32)
    y = poisoned(100, np.float32)
    st.kernel("early_return")(2, 50, (x, y, i32(100)))  # every thread reaches the barrier: fine
    np.testing.assert_array_equal(y, x)
    with pytest.raises(hostemu.KernelLaunchError, match=r"block \(1,0,0\).*early return"):
        st.kernel("early_return")(2, 64, (x, y, i32(100)))


@pytest.mark.parametrize("order", ["forward", "reverse"])
def test_barriers_at_different_lines_are_an_error(st, order):
    y = np.zeros(32, np.float32)
    with pytest.raises(hostemu.KernelLaunchError, match=r"barrier divergence at barrier #1: thread \(\d+,0,0\) "
                       r"waits at selftest_kernels.cu:(\d+), thread \(\d+,0,0\) at selftest_kernels.cu:(?!\1)\d+"):
        st.kernel("barrier_split")(1, 32, (y,), order=order)


def test_barrier_in_loop_mode_is_an_error(st):
    y = np.zeros(3, np.float32)
    with pytest.raises(hostemu.KernelLaunchError, match="needs fiber mode"):
        st.kernel("block_sum<float>")(1, 32, (np.ones(10, np.float32), y, i32(10)), mode="loop")


def test_syncthreads_count_and_or(st):
    x = np.linspace(-1, 1, 96, dtype=np.float32)
    out = poisoned(3, np.int32)
    st.kernel("count_positive")(1, 96, (x, out), order="reverse")
    assert out.tolist() == [int((x > 0).sum()), 0, 1]


# ------------------------------------------------------------ warp collectives
@pytest.mark.parametrize("block", [32, 64, 48])
def test_warp_shuffle_reduction(st, block):
    x = np.random.default_rng(1).standard_normal(2 * block).astype(np.float32)
    nwarps = -(-block // 32)
    for order in ("forward", "reverse"):
        out = poisoned(2 * nwarps, np.float32)
        st.kernel("warp_sum")(2, block, (x, out, i32(1)), order=order)
        want = [x[b * block + w * 32 : b * block + min(block, w * 32 + 32)].sum() for b in range(2) for w in range(nwarps)]
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_shuffle_from_a_missing_lane_is_poison(st):
    # Block of 48: the second warp has 16 lanes; unguarded shuffles read lanes
    # past the block, which the GPU leaves undefined and the emulator poisons.
    x = np.ones(48, np.float32)
    out = poisoned(2, np.float32)
    st.kernel("warp_sum")(1, 48, (x, out, i32(0)))
    assert out[0] == 32 and np.isnan(out[1])


def test_shfl_xor_idx_up(st):
    x = np.random.default_rng(2).integers(-1000, 1000, 32).astype(np.int32)
    y = poisoned(32, np.int32)
    st.kernel("shfl_xor_bcast")(1, 32, (x, y), order="reverse")
    # every lane gets the warp max (butterfly), read back from lane 3; the
    # shfl_up by 1 within segments of 8 adds the lane's own 0 everywhere.
    np.testing.assert_array_equal(y, np.full(32, x.max()))


# --------------------------------------------------------- grids and dims
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("grid,block", [(1, 1), (1, 32), ((3, 2), (7, 3)), ((2, 1, 1), (5, 2, 1)), (64, 256)])
def test_grid_stride_loop_small_grids(st, dtype, grid, block):
    n = 1000
    x = np.random.default_rng(3).standard_normal(n).astype(dtype)
    y = poisoned(n, dtype)
    name = "axpb<float>" if dtype == np.float32 else "axpb<double>"
    st.kernel(name)(grid, block, (x, y, i64(n)), order="reverse")
    np.testing.assert_array_equal(y, dtype(2) * x + dtype(1))


def test_invalid_configurations_refused(st):
    x, y = np.ones(4, np.float32), np.ones(4, np.float32)
    k = st.kernel("axpb<float>")
    with pytest.raises(hostemu.KernelLaunchError, match="zero grid"):
        k(0, 32, (x, y, i64(4)))
    with pytest.raises(hostemu.KernelLaunchError, match="1024 threads"):
        k(1, (1025,), (x, y, i64(4)))
    with pytest.raises(hostemu.KernelLaunchError, match="1024 threads"):
        k(1, (64, 32), (x, y, i64(4)))
    with pytest.raises(hostemu.KernelLaunchError, match="shared_mem"):
        k(1, 32, (x, y, i64(4)), shared_mem=48 * 1024 + 1)


def test_several_workers_and_atomics(st):
    x = np.random.default_rng(4).random(64 * 128).astype(np.float32)
    fsum, imax, cnt = np.zeros(1, np.float32), np.full(1, -(2**31), np.int32), np.zeros(1, np.uint64)
    st.kernel("atomics")(64, 128, (fsum, imax, cnt, x), workers=2)
    assert cnt[0] == x.size
    assert imax[0] == int((x * np.float32(1000)).astype(np.int32).max())
    np.testing.assert_allclose(fsum[0], x.sum(dtype=np.float64), rtol=1e-4)


# ------------------------------------------------------------------ faults
def test_out_of_bounds_write_caught_by_guard(st):
    y = np.zeros(100, np.float32)
    with pytest.raises(hostemu.KernelLaunchError, match=r"wrote past the end of argument 0 \(float\*\)"):
        st.kernel("write_past_end")(4, 32, (y, i32(100)))


def test_write_through_const_pointer_caught(st):
    x = np.ones(32, np.float32)
    with pytest.raises(hostemu.KernelLaunchError, match=r"wrote to const argument 0 \(const float\*\)"):
        st.kernel("write_const")(1, 32, (x,))
    assert (x == 1).all()  # the kernel wrote to the guarded copy, never to x


def test_dynamic_shared_memory_overrun_caught(st):
    y = np.zeros(32, np.float32)
    st.kernel("smem_overrun")(1, 32, (y,), shared_mem=32 * 4)
    with pytest.raises(hostemu.KernelLaunchError, match="past the launch's shared_mem=124"):
        st.kernel("smem_overrun")(1, 32, (y,), shared_mem=31 * 4)


# -------------------------------------------------------------------- types
def test_exported_parameter_types(st):
    assert st.kernel("axpb<double>").params == [("const double*", 8), ("double*", 8), ("long long", 8)]
    assert [t for t, _ in st.kernel("all_types").params] == [
        "double*", "const float*", "const double*", "const int*", "char", "unsigned char", "short", "int",
        "unsigned int", "long", "long long", "unsigned long long", "float", "double", "bool", "struct float4*",
    ]


def test_every_scalar_type_passes_its_value(st):
    out = poisoned(1, np.float64)
    v = np.array([1, 2, 3, 4], np.float32)
    args = (out, np.array([0.5], np.float32), np.array([0.25], np.float64), np.array([-3], np.int32),
            np.int8(-2), np.uint8(200), np.int16(-300), i32(-70000), np.uint32(3_000_000_000), np.int64(-5),
            np.int64(2**40), np.uint64(2**63), np.float32(1.5), np.float64(1e-3), np.bool_(True), v)
    st.kernel("all_types")(1, 1, args)
    want = 0.5 + 0.25 - 3 - 2 + 200 - 300 - 70000 + 3e9 - 5 + 2.0**40 + 2.0**63 + 1.5 + 1e-3 + 1 + 1 + 4
    assert out[0] == pytest.approx(want, rel=1e-15)


def test_wrong_types_refused(st):
    k = st.kernel("axpb<float>")
    x32, y32 = np.ones(8, np.float32), np.ones(8, np.float32)
    with pytest.raises(TypeError, match=r"argument 0 \(const float\*\) takes a float32 array, got float64"):
        k(1, 32, (x32.astype(np.float64), y32, i64(8)))
    with pytest.raises(TypeError, match=r"argument 2 \(long long\) takes a numpy int64 scalar, got int"):
        k(1, 32, (x32, y32, 8))
    with pytest.raises(TypeError, match=r"argument 2 \(long long\) takes numpy int64, got int32"):
        k(1, 32, (x32, y32, i32(8)))
    with pytest.raises(TypeError, match="C-contiguous"):
        k(1, 32, (np.ones(16, np.float32)[::2], y32, i64(8)))
    ro = np.ones(8, np.float32)
    ro.flags.writeable = False
    with pytest.raises(TypeError, match="read-only"):
        k(1, 32, (x32, ro, i64(8)))
    with pytest.raises(TypeError, match="takes 3 arguments"):
        k(1, 32, (x32, y32))
    with pytest.raises(TypeError, match="numpy array or None"):
        k(1, 32, ([1.0] * 8, y32, i64(8)))
    with pytest.raises(TypeError, match=r"argument 2 \(int\) takes numpy int32, got int64"):
        st.kernel("block_sum<float>")(1, 32, (x32, np.zeros(1, np.float32), i64(8)))
    with pytest.raises(KeyError, match="no kernel"):
        st.kernel("axpb<int>")


# ------------------------------------------------------------- build variants
def test_ucontext_fibers_agree(emu, st):
    uc = emu["selftest_ucontext"]
    assert uc.features.startswith("context=ucontext") and st.features.startswith("context=x86_64-asm")
    x = np.random.default_rng(5).standard_normal(5000).astype(np.float32)
    for order in ("forward", "reverse"):
        a, b = poisoned(5, np.float32), poisoned(5, np.float32)
        st.kernel("block_sum<float>")(5, 256, (x, a, i32(5000)), order=order)
        uc.kernel("block_sum<float>")(5, 256, (x, b, i32(5000)), order=order)
        np.testing.assert_array_equal(a, b)
    with pytest.raises(hostemu.KernelLaunchError, match="barrier divergence"):
        uc.kernel("barrier_split")(1, 32, (np.zeros(32, np.float32),))


def test_source_rewrite_and_barrier_analysis():
    src = "extern __shared__ __align__(16)\n unsigned char smem[];\n"
    out = hostemu._rewrite_source(src)
    assert out.count("\n") == src.count("\n")
    assert "unsigned char* const smem = reinterpret_cast<unsigned char*>(::hostemu::dyn_smem());" in out
    out = hostemu._rewrite_source("  extern __shared__ alignas(8) double buf[ ];")
    assert out == "  double* const buf = reinterpret_cast<double*>(::hostemu::dyn_smem());"
    src = textwrap.dedent("""
        #define SYNC __syncthreads()
        __device__ void helper(float* s) { s[0] = 1; SYNC; }
        __device__ void plain(float* s) { if (s) { s[0] = 2; } }
        template <typename T> __global__ void a(T* s) { helper(s); }
        template <typename T> __global__ void b(T* s) { plain(s); /* __syncthreads() */ }
        extern "C" __global__ void c(float* s) { for (int i = 0; i < 2; ++i) { plain(s); } }
    """)
    assert hostemu.barrier_kernels(src, ["a<float>", "b<double>", "c", "missing"]) == {
        "a<float>": True, "b<double>": False, "c": False, "missing": True,
    }


def test_sanitizers_catch_out_of_bounds_read_and_overflow(emu):
    """-fsanitize=address,undefined build, loaded in a subprocess with libasan preloaded."""
    if isinstance(emu["selftest_san"], BaseException):
        raise emu["selftest_san"]  # e.g. g++ without its sanitizer runtimes (libasan, libubsan)
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(HERE)!r})
        import numpy as np, hostemu
        from emu_helpers import selftest_spec
        m = hostemu.load(selftest_spec("selftest_san", {SANITIZE_KERNELS!r}, sanitize=True))
        x = np.ones(1000, np.float32); out = np.zeros(4, np.float32)
        m.kernel("block_sum<float>")(4, 64, (x, out, np.int32(1000)), order="reverse")
        assert out.sum() == 1000, out
        print("clean run ok", flush=True)
        what = sys.argv[1]
        if what == "oob":
            y = np.zeros(1000, np.float32)
            m.kernel("read_past_end")(8, 128, (x, y, np.int32(1000)), guard=False)
        else:
            a = np.full(32, 100000, np.int32); y = np.zeros(32, np.int32)
            m.kernel("int_overflow")(1, 32, (a, y))
        print("not caught", flush=True)
    """)
    for what, pattern in (("oob", "heap-buffer-overflow"), ("overflow", "signed integer overflow")):
        r = subprocess.run([sys.executable, "-c", script, what], env=hostemu.asan_env(), capture_output=True,
                           text=True, timeout=120)
        assert "clean run ok" in r.stdout, r.stderr[-3000:]
        assert "not caught" not in r.stdout
        assert r.returncode != 0 and pattern in r.stderr, r.stderr[-3000:]
        assert "selftest_kernels.cu" in r.stderr  # the report points at the kernel source


def test_endless_kernel_ends_the_process_with_a_message(emu):
    """A kernel that never returns cannot be interrupted: the launch watchdog exits with a message."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(HERE)!r})
        import numpy as np, hostemu
        from emu_helpers import selftest_spec
        m = hostemu.load(selftest_spec())
        m.kernel("endless")(4, 32, (np.zeros(1, np.int32),), timeout_s=0.5)
        print("returned", flush=True)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 124 and "returned" not in r.stdout, (r.returncode, r.stderr[-2000:])
    assert "hostemu: kernel endless still running after 0 s (1 of 4 blocks started)" in r.stderr
