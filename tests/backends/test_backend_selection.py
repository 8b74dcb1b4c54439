"""Backend selection (backends/__init__.py): auto, numpy, cupy, and cupy without a GPU."""

import logging
import sys
import time
import types

import pytest

import backends


class CUDARuntimeError(RuntimeError):
    pass


def fake_cupy(error=None, count=1):
    """A stand-in for a cupy install whose device probe fails with ``error``."""

    def get_device_count():
        if error is not None:
            raise CUDARuntimeError(error)
        return count

    module = types.ModuleType("cupy")
    module.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=get_device_count))
    return module


@pytest.fixture
def fresh(monkeypatch):
    """Forget the resolved backend and the cached probe; restore them afterwards."""
    monkeypatch.setattr(backends, "_ops", None)
    monkeypatch.setattr(backends, "_requested", None)
    monkeypatch.setattr(backends, "_cupy_status", None)
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    return monkeypatch


def test_auto_falls_back_to_numpy_quietly_when_the_driver_is_missing(fresh, caplog):
    fresh.setitem(sys.modules, "cupy", fake_cupy("cudaErrorInsufficientDriver: CUDA driver version is insufficient"))
    start = time.perf_counter()
    with caplog.at_level(logging.DEBUG, logger="gpulayers.backends"):
        assert backends.get_backend() == "numpy"
    assert time.perf_counter() - start < 2.0
    debug = [r for r in caplog.records if r.name == "gpulayers.backends"]
    assert len(debug) == 1 and debug[0].levelno == logging.DEBUG
    assert "driver" in debug[0].getMessage()


@pytest.mark.parametrize(
    "error, count, why",
    [
        ("cudaErrorInsufficientDriver: CUDA driver version is insufficient", 1, "driver is missing or too old"),
        ("cudaErrorNoDevice: no CUDA-capable device is detected", 1, "no CUDA device"),
        (None, 0, "no CUDA device"),
    ],
)
def test_asking_for_cupy_without_a_usable_device_says_why(fresh, error, count, why):
    fresh.setitem(sys.modules, "cupy", fake_cupy(error, count))
    backends.set_backend("numpy")
    with pytest.raises(RuntimeError, match=why):
        backends.set_backend("cupy")
    assert backends.get_backend() == "numpy"  # unchanged by the refused call


def test_asking_for_cupy_when_it_is_not_installed(fresh):
    fresh.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    with pytest.raises(RuntimeError, match="cupy is not installed"):
        backends.set_backend("cupy")
    assert backends.cupy_status()[0] is False
    assert backends.get_backend() == "numpy"


def test_environment_variable_selects_the_backend(fresh):
    fresh.setitem(sys.modules, "cupy", fake_cupy("cudaErrorNoDevice"))
    fresh.setenv(backends.ENV_VAR, "NumPy")
    assert backends.get_backend() == "numpy"


def test_environment_variable_asking_for_cupy_without_gpu_raises(fresh):
    fresh.setitem(sys.modules, "cupy", fake_cupy("cudaErrorNoDevice"))
    fresh.setenv(backends.ENV_VAR, "cupy")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        backends.get_ops()


def test_invalid_environment_value_is_named(fresh):
    fresh.setenv(backends.ENV_VAR, "tpu")
    with pytest.raises(ValueError, match="GPULAYERS_BACKEND.*'tpu'"):
        backends.get_ops()


@pytest.mark.parametrize("name", ["tpu", "", None, 3])
def test_set_backend_refuses_unknown_names(fresh, name):
    with pytest.raises(ValueError, match="`name`"):
        backends.set_backend(name)


def test_gpulayers_reexports_the_switch():
    import gpulayers

    assert gpulayers.set_backend is backends.set_backend
    assert gpulayers.get_backend() in ("numpy", "cupy")


def test_array_namespace_of_numpy_arrays():
    import numpy as np

    assert backends.array_namespace(np.zeros(2)) is np


# ------------------------------------------------------------------ TF32


def _fake_linalg(monkeypatch, fail=None):
    """cupy._core._routines_linalg's compute-type switch, recording what it is set to."""
    calls = []

    def set_compute_type(dtype, compute_type):
        if fail:
            raise ValueError(fail)
        calls.append((dtype, compute_type))

    linalg = types.SimpleNamespace(COMPUTE_TYPE_TF32=7, COMPUTE_TYPE_FP32=4, set_compute_type=set_compute_type)
    core = types.ModuleType("cupy._core")
    core._routines_linalg = linalg
    monkeypatch.setitem(sys.modules, "cupy._core", core)
    monkeypatch.setitem(sys.modules, "cupy._core._routines_linalg", linalg)
    return calls


def test_tf32_is_off_by_default_and_switches_the_cupy_compute_type(fresh, monkeypatch):
    import numpy as np

    from backends.cupy_ops import CupyOps
    from gpulayers import config

    fresh.setattr(backends, "_tf32", None)
    fresh.delenv("CUPY_TF32", raising=False)
    assert config.is_tf32_enabled() is False
    calls = _fake_linalg(monkeypatch)
    ops = CupyOps.__new__(CupyOps)  # its set_tf32 needs nothing of a device here
    fresh.setattr(backends, "_ops", ops)
    config.enable_tf32()
    assert config.is_tf32_enabled() is True and calls == [(np.float32, 7)]
    config.disable_tf32()
    assert config.is_tf32_enabled() is False and calls[-1] == (np.float32, 4)


def test_tf32_follows_cupys_environment_until_set(fresh):
    fresh.setattr(backends, "_tf32", None)
    fresh.setenv("CUPY_TF32", "1")
    assert backends.tf32_enabled() is True


def test_tf32_setting_is_kept_for_a_backend_chosen_later_and_ignored_on_the_cpu(fresh):
    fresh.setattr(backends, "_tf32", None)
    backends.set_backend("numpy")
    backends.set_tf32(True)  # NumpyOps has no TF32: accepted, nothing changes
    assert backends.tf32_enabled() is True
    backends.set_tf32(False)


def test_tf32_refusals_leave_the_setting_alone(fresh, monkeypatch):
    from backends.cupy_ops import CupyOps

    fresh.setattr(backends, "_tf32", False)
    with pytest.raises(TypeError, match="enabled=1"):
        backends.set_tf32(1)
    _fake_linalg(monkeypatch, fail="TF32 needs compute capability 8.0")
    fresh.setattr(backends, "_ops", CupyOps.__new__(CupyOps))
    with pytest.raises(ValueError, match="8.0"):
        backends.set_tf32(True)
    assert backends.tf32_enabled() is False
