"""Fixtures of the host-emulation tests (tests/kernels).

Every test here is marked ``kernels``. The tests skip only where there is no
C++ compiler at all (the reason is given); a g++ that cannot build the
harness fails them. All libraries are built once per session, in parallel
(one g++ per core), and cached across runs by hostemu.cache_dir().
"""

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import hostemu  # noqa: E402
from emu_helpers import selftest_specs  # noqa: E402

def require_compiler():
    """Skip when there is no C++ compiler; fail when there is one that cannot build the harness."""
    if hostemu.compiler() is None:
        pytest.skip(f"host emulation needs a C++ compiler: {os.environ.get('CXX', 'g++')} is not on PATH")
    reason = hostemu.compiler_missing_reason()
    if reason:
        pytest.fail(reason)


@pytest.fixture(scope="session")
def emu():
    """{module name: hostemu.Module} for every kernel_modules() entry and the self-test kernels.

    The sanitizer build of the self-test kernels is compiled in the same
    parallel batch but only used (in a subprocess) by its own test, which
    gets its path -- or its build error -- as ``emu["selftest_san"]``.
    """
    require_compiler()
    from backends.cuda_sources import kernel_modules

    specs = [hostemu.ModuleSpec.coerce(m) for m in kernel_modules()] + selftest_specs()
    if os.environ.get("GPULAYERS_HOSTEMU_SANITIZE", "") not in ("", "0"):  # debug run, see hostemu's docstring
        for s in specs[: len(kernel_modules())]:
            s.sanitize = True
    built = hostemu.build_many(specs, return_exceptions=True)
    out = {}
    for spec, result in zip(specs, built):
        if spec.name == "selftest_san":
            out[spec.name] = result
        elif isinstance(result, BaseException):
            raise result
        else:
            out[spec.name] = hostemu.load(spec)
    return out
