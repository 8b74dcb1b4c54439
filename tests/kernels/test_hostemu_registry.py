"""The emulated modules against backends.cuda_sources: signatures, coverage, execution modes."""

from pathlib import Path

import numpy as np
import pytest

from emu_helpers import HERE, assert_same_bits, i32, i64, poison

pytestmark = pytest.mark.kernels


def test_exported_c_types_match_cuda_sources(emu):
    """The C parameter types g++ derives from each instantiated kernel equal what cuda_sources parses."""
    from backends.cuda_sources import kernel_modules

    for spec in kernel_modules():
        mod = emu[spec.name]
        assert sorted(mod.names) == sorted(spec.name_expressions)
        for name in spec.name_expressions:
            got = tuple(t for t, _ in mod.kernel(name).params)
            assert got == spec.param_types[name], name


def test_every_kernel_has_an_emulation_test():
    """Each kernel of kernel_modules() is launched by name somewhere in tests/kernels/test_hostemu_*.py."""
    from backends.cuda_sources import kernel_modules

    text = "\n".join(p.read_text() for p in sorted(Path(HERE).glob("test_hostemu_*.py")) if p.name != Path(__file__).name)
    missing = [k for spec in kernel_modules() for k in spec.kernels if f'"{k}"' not in text and f'"{k}<' not in text]
    assert not missing, f"kernels without a host-emulation test: {missing}"


def test_barrier_kernels_are_the_fiber_ones(emu):
    from backends.cuda_sources import kernel_modules

    fibers = {name for spec in kernel_modules() for name, k in emu[spec.name].kernels.items() if k.needs_fibers}
    barrier_kernels = ("global_pool_fwd_block", "bn_partial_last", "bn_partial_mid", "bn_params_welford",
                       "softmax_rows", "bias_softmax_rows", "sparse_xent_fwd", "sparse_xent_mean", "philox_fill", "dropout_philox")
    assert fibers == {f"{k}<{t}>" for k in barrier_kernels for t in ("float", "double")}


def test_loop_and_fiber_modes_agree_on_a_kernel_without_barriers(emu):
    n, h, w, c, kh, kw = 2, 6, 5, 3, 3, 3
    x = np.random.default_rng(0).standard_normal((n, h, w, c)).astype(np.float32)
    oh, ow = h, w
    args = lambda col: (x, col, i32(n), i32(h), i32(w), i32(c), i64(h * w * c), i64(w * c), i64(c), i64(1),  # noqa: E731
                        i32(kh), i32(kw), i32(1), i32(1), i32(1), i32(1), i32(1), i32(1), i32(oh), i32(ow))
    k = emu["conv"].kernel("im2col<float>")
    assert not k.needs_fibers
    a, b = poison((n * oh * ow, kh * kw * c), np.float32), poison((n * oh * ow, kh * kw * c), np.float32)
    k(3, 64, args(a), mode="loop")
    k(3, 64, args(b), mode="fibers", order="shuffle", seed=3)
    assert_same_bits(a, b, "loop vs fibers")
    assert not np.isnan(a).any()
