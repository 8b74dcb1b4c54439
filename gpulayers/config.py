"""Global settings, read once from Keras's own ``keras.json``.

The file is looked up in ``$KERAS_HOME`` or ``~/.keras`` and only ever read
(never created or written, unlike Keras). A missing or unreadable file means
Keras's defaults; an invalid value in it is ignored with a warning. The
environment variable ``GPULAYERS_IMAGE_DATA_FORMAT`` overrides the file's
``image_data_format``.
"""

import json
import os
import warnings

__all__ = [
    "backend",
    "disable_tf32",
    "dtype_policy",
    "disable_traceback_filtering",
    "enable_tf32",
    "enable_traceback_filtering",
    "epsilon",
    "floatx",
    "image_data_format",
    "is_tf32_enabled",
    "is_traceback_filtering_enabled",
    "keras_config_path",
    "set_epsilon",
    "set_floatx",
    "set_check_numerics",
    "set_dtype_policy",
    "set_image_data_format",
    "standardize_data_format",
    "check_numerics",
]

IMAGE_DATA_FORMATS = ("channels_last", "channels_first")
FLOAT_TYPES = ("float16", "float32", "float64")
ENV_DATA_FORMAT = "GPULAYERS_IMAGE_DATA_FORMAT"

_image_data_format = "channels_last"
_floatx = "float32"
_epsilon = 1e-7
_check_numerics = False
_traceback_filtering = True


def keras_config_path():
    """Path of the keras.json that gpulayers reads (it may not exist)."""
    home = os.environ.get("KERAS_HOME")
    if home is None:
        home = os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "keras.json")


def _check_data_format(value, argument):
    if value not in IMAGE_DATA_FORMATS:
        raise ValueError(
            f"Invalid value for `{argument}`: expected 'channels_last' or "
            f"'channels_first'. Received: {argument}={value!r}"
        )
    return value


def _check_floatx(value, argument):
    if value not in FLOAT_TYPES:
        raise ValueError(
            f"Invalid value for `{argument}`: expected one of {FLOAT_TYPES}. "
            f"Received: {argument}={value!r}"
        )
    return value


def _check_epsilon(value, argument):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(
            f"Invalid value for `{argument}`: expected a positive number. "
            f"Received: {argument}={value!r}"
        )
    return float(value)


def image_data_format():
    """Default image layout: ``'channels_last'`` or ``'channels_first'``."""
    return _image_data_format


def set_image_data_format(data_format):
    """Set the default image layout for layers created afterwards."""
    global _image_data_format
    _image_data_format = _check_data_format(data_format, "data_format")


def floatx():
    """Default float type of weights and computations, e.g. ``'float32'``."""
    return _floatx


def set_floatx(value):
    """Set the default float type: ``'float16'``, ``'float32'`` or ``'float64'``."""
    global _floatx
    _floatx = _check_floatx(value, "value")


def epsilon():
    """The fuzz factor used in numeric expressions (Keras's default 1e-7)."""
    return _epsilon


def set_epsilon(value):
    """Set the fuzz factor returned by :func:`epsilon`."""
    global _epsilon
    _epsilon = _check_epsilon(value, "value")


def dtype_policy():
    """The global dtype policy (:func:`gpulayers.dtype_policies.dtype_policy`)."""
    from gpulayers import dtype_policies

    return dtype_policies.dtype_policy()


def set_dtype_policy(policy):
    """Set the global dtype policy, e.g. ``"mixed_float16"`` (:func:`gpulayers.dtype_policies.set_dtype_policy`)."""
    from gpulayers import dtype_policies

    dtype_policies.set_dtype_policy(policy)


def check_numerics():
    """Whether every layer checks its outputs and gradients for NaN and Inf."""
    return _check_numerics


def set_check_numerics(enabled):
    """Make every layer check its outputs and gradients for NaN and Inf (slow; for debugging).

    With it on, the first layer that produces a non-finite value raises
    FloatingPointError naming the layer, the pass (forward or backward) and
    the shapes.
    """
    global _check_numerics
    if not isinstance(enabled, bool):
        raise TypeError(f"Invalid type for `enabled`: expected a bool. Received: enabled={enabled!r}")
    _check_numerics = enabled


def backend():
    """The array backend in use: ``'numpy'`` or ``'cupy'`` (where Keras names its own, e.g. ``'torch'``)."""
    from backends import get_backend

    return get_backend()


def enable_traceback_filtering():
    """Keras's switch for trimming its frames from tracebacks; gpulayers trims none, so only the flag changes."""
    global _traceback_filtering
    _traceback_filtering = True


def disable_traceback_filtering():
    """Keras's switch for showing full tracebacks; gpulayers always shows them, so only the flag changes."""
    global _traceback_filtering
    _traceback_filtering = False


def is_traceback_filtering_enabled():
    """The flag :func:`enable_traceback_filtering` and :func:`disable_traceback_filtering` set (True at start)."""
    return _traceback_filtering


def enable_tf32():
    """Let the GPU compute float32 matrix products (Dense, the convolutions' GEMMs) in TF32.

    TF32 tensor cores are several times faster on Ampere and later GPUs but
    keep only 10 mantissa bits of each operand, so results no longer match
    Keras's float32 numerics. Off by default (unless CuPy's own
    ``CUPY_TF32=1`` is set); the CPU backend has no TF32 and ignores it.
    """
    import backends

    backends.set_tf32(True)


def disable_tf32():
    """Back to true float32 matrix products on the GPU (the default)."""
    import backends

    backends.set_tf32(False)


def is_tf32_enabled():
    """Whether float32 matrix products may run in TF32 on the GPU."""
    import backends

    return backends.tf32_enabled()


def standardize_data_format(data_format):
    """Resolve a layer's ``data_format`` argument (None means the default)."""
    if data_format is None:
        return image_data_format()
    if isinstance(data_format, str):
        data_format = data_format.lower()
    return _check_data_format(data_format, "data_format")


def _load():
    """Read keras.json and the environment into the module's settings."""
    global _image_data_format, _floatx, _epsilon
    path = keras_config_path()
    settings = {}
    try:
        with open(path, encoding="utf-8") as f:
            settings = json.load(f)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        warnings.warn(f"gpulayers ignores {path}: it cannot be read as JSON ({exc}).", stacklevel=3)
    if not isinstance(settings, dict):
        warnings.warn(f"gpulayers ignores {path}: it does not hold a JSON object.", stacklevel=3)
        settings = {}
    checks = {
        "image_data_format": (_check_data_format, "_image_data_format"),
        "floatx": (_check_floatx, "_floatx"),
        "epsilon": (_check_epsilon, "_epsilon"),
    }
    for key, (check, attr) in checks.items():
        if key in settings:
            try:
                globals()[attr] = check(settings[key], key)
            except ValueError as exc:
                warnings.warn(f"gpulayers ignores {key} in {path}: {exc}", stacklevel=3)
    env = os.environ.get(ENV_DATA_FORMAT)
    if env:
        try:
            _image_data_format = _check_data_format(env, ENV_DATA_FORMAT)
        except ValueError as exc:
            warnings.warn(f"gpulayers ignores the environment variable: {exc}", stacklevel=3)


_load()
