"""A CupyOps backend on the counting stand-in for cupy, kernels run by the host emulator.

``counting_backend(monkeypatch)`` installs it for one test (``sys.modules``
and the backend choice are restored by monkeypatch) and returns the Counter.
"""

import sys

from counting_cupy import CountingCupy, Counter
from emu_helpers import load_kernel_module


class _EmuModule:
    def __init__(self, code, options, name_expressions):
        self._mod = load_kernel_module(code, options, name_expressions)

    def get_function(self, name):
        k = self._mod.kernel(name)
        return lambda grid, block, args, shared_mem=0: k(grid, block, args, shared_mem=shared_mem, guard=False)


def counting_backend(monkeypatch, sm_count=132):
    import backends
    from backends import cupy_ops

    counter = Counter()
    monkeypatch.setitem(sys.modules, "cupy", CountingCupy(counter, _EmuModule, sm_count=sm_count))
    for cache in ("_raw_modules", "_functions", "_sm_counts"):
        monkeypatch.setattr(cupy_ops, cache, {})
    ops = cupy_ops.CupyOps(im2col_limit_bytes=2**31)
    monkeypatch.setattr(backends, "_ops", ops)
    monkeypatch.setattr(backends, "_cupy_status", None)  # a probe of the stand-in is not cached past the test
    return counter
