"""GPU backend: the generic :class:`backends.ops.Ops` on CuPy.

The module imports without CuPy; only creating :class:`CupyOps` needs it.
Dedicated CUDA kernels can later override the generic methods one by one.
"""

import numpy

from backends.ops import Ops

__all__ = ["CupyOps"]


class CupyOps(Ops):
    """Operations on ``cupy.ndarray``."""

    name = "cupy"
    xp = None  # set per instance: cupy is imported lazily

    def __init__(self):
        try:
            import cupy
        except Exception as exc:  # ImportError, or a broken install raising anything
            raise ImportError(f"CupyOps needs cupy, which does not import here ({type(exc).__name__}: {exc})") from exc
        self.xp = cupy

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

    def to_numpy(self, x):
        if isinstance(x, self.xp.ndarray):
            return x.get()
        return numpy.asarray(x)

    def rng(self, seed):
        random = self.xp.random
        if hasattr(random, "default_rng"):
            return random.default_rng(seed)
        return random.RandomState(seed)
