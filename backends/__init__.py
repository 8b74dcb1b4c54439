"""Array namespaces and hot-path operations for gpulayers.

One Ops class per backend: :class:`backends.numpy_ops.NumpyOps` (CPU) and
:class:`backends.cupy_ops.CupyOps` (NVIDIA GPUs through CuPy). Layers get the
active one from :func:`get_ops` and compute with ``ops.xp`` and its methods,
so the same layer code runs on both.

The backend is chosen by :func:`set_backend` or the ``GPULAYERS_BACKEND``
environment variable: ``"numpy"``, ``"cupy"`` or ``"auto"`` (the default:
cupy when it imports and a CUDA device is usable, else numpy). Nothing is
probed at import time; the first :func:`get_ops` call resolves the choice.
"""

import logging
import os
import threading

__all__ = [
    "BACKEND_NAMES", "array_namespace", "cupy_status", "get_backend", "get_ops", "set_backend", "set_tf32",
    "tf32_enabled",
]

BACKEND_NAMES = ("numpy", "cupy", "auto")
ENV_VAR = "GPULAYERS_BACKEND"

_log = logging.getLogger("gpulayers.backends")
_lock = threading.Lock()
_requested = None  # name given to set_backend; None means "read the environment"
_ops = None  # the resolved Ops instance
_tf32 = None  # None: CuPy's default; True / False: set_tf32's choice
_cupy_status = None  # cached (usable, reason)


def _check_name(name, argument):
    if not isinstance(name, str) or name.lower() not in BACKEND_NAMES:
        raise ValueError(
            f"Invalid value for `{argument}`: expected one of "
            f"{', '.join(repr(n) for n in BACKEND_NAMES)}. Received: {argument}={name!r}"
        )
    return name.lower()


def cupy_status():
    """Tell whether the cupy backend can run here.

    Returns ``(usable, reason)``: ``reason`` says why not (cupy missing, no
    CUDA device, or a driver too old for the installed CuPy) and is ``""``
    when usable. The probe runs once per process and is cached.
    """
    global _cupy_status
    if _cupy_status is None:
        _cupy_status = _probe_cupy()
    return _cupy_status


def _probe_cupy():
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken install raising anything
        return False, f"cupy is not installed or does not import ({type(exc).__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError without a driver or device
        text = str(exc)
        if "InsufficientDriver" in text:
            why = "the NVIDIA driver is missing or too old for this CuPy build"
        elif "NoDevice" in text:
            why = "no CUDA device is visible"
        else:
            why = "the CUDA runtime cannot be used"
        return False, f"cupy imports but {why} ({text})"
    if count < 1:
        return False, "cupy imports but no CUDA device is visible"
    return True, ""


def _make_ops(name):
    if name == "numpy":
        from backends.numpy_ops import NumpyOps

        return NumpyOps()
    usable, reason = cupy_status()
    if name == "cupy":
        if not usable:
            raise RuntimeError(f"The cupy backend was requested but cannot run: {reason}.")
        return _cupy_ops()
    # auto
    if usable:
        return _cupy_ops()
    _log.debug("backend 'auto' chose numpy: %s", reason)
    from backends.numpy_ops import NumpyOps

    return NumpyOps()


def set_tf32(enabled):
    """Let cuBLAS compute float32 matrix products in TF32 (``True``) or keep them float32 (``False``).

    Applies to the active cupy backend at once and to one created later;
    NumpyOps has no TF32 and ignores it. Until this is called, CuPy's own
    default holds: float32, or TF32 where ``CUPY_TF32=1`` is set. Raises
    TypeError for a non-bool; where CuPy refuses (raises), the setting stays
    as it was. On a GPU without TF32 (before Ampere) CuPy warns and keeps
    float32. Bias gradients stay in float32 sums either way.
    """
    global _tf32
    if not isinstance(enabled, bool):
        raise TypeError(f"Invalid type for `enabled`: expected a bool. Received: enabled={enabled!r}")
    with _lock:
        if _ops is not None:
            _ops.set_tf32(enabled)
        _tf32 = enabled


def tf32_enabled():
    """Whether float32 matrix products may run in TF32 on the GPU (see :func:`set_tf32`)."""
    if _tf32 is None:
        return os.environ.get("CUPY_TF32", "0").strip() == "1"
    return _tf32


def _cupy_ops():
    from backends.cupy_ops import CupyOps

    ops = CupyOps()
    if _tf32 is not None:
        ops.set_tf32(_tf32)
    return ops


def set_backend(name):
    """Select the array backend: ``"numpy"``, ``"cupy"`` or ``"auto"``.

    Raises ValueError for an unknown name and RuntimeError when ``"cupy"`` is
    asked for where it cannot run (the message says why). On error the current
    backend stays as it was.
    """
    global _requested, _ops
    name = _check_name(name, "name")
    ops = _make_ops(name)
    with _lock:
        _requested, _ops = name, ops


def get_ops():
    """Return the active Ops instance, resolving the choice on first use."""
    global _ops
    ops = _ops
    if ops is None:
        with _lock:
            if _ops is None:
                name = _requested or _check_name(os.environ.get(ENV_VAR, "auto"), ENV_VAR)
                _ops = _make_ops(name)
            ops = _ops
    return ops


def get_backend():
    """Return the name of the active backend: ``"numpy"`` or ``"cupy"``."""
    return get_ops().name


def array_namespace(x):
    """Return the array module (numpy or cupy) that owns array ``x``."""
    if type(x).__module__.split(".", 1)[0] == "cupy":
        import cupy

        return cupy
    import numpy

    return numpy
