"""Process-wide helpers (the random seed, the layer-name counters) and Keras's ``keras.utils`` namespace.

Besides the seed and the names: ``to_categorical``, ``normalize``,
``Progbar``, ``get_file``, ``PyDataset``, ``plot_model`` / ``model_to_dot``
(:mod:`gpulayers.model_visualization`), the packing of ``(x, y,
sample_weight)`` batches, ``is_keras_tensor`` and the registration of custom
objects (``register_keras_serializable``, ``custom_object_scope``...).
"""

import numbers
import re

import numpy as np

from gpulayers.file_utils import get_file
from gpulayers.model_visualization import model_to_dot, plot_model
from gpulayers.numerical_utils import normalize, to_categorical
from gpulayers.object_registration import (
    CustomObjectScope,
    custom_object_scope,
    get_custom_objects,
    get_registered_name,
    get_registered_object,
    register_keras_serializable,
)
from gpulayers.progbar import Progbar
from gpulayers.symbolic import is_keras_tensor

__all__ = [
    "CustomObjectScope", "Progbar", "clear_session", "custom_object_scope", "derive_seed",
    "finite_real", "get_custom_objects", "get_file", "get_registered_name", "get_registered_object", "host_rng",
    "is_keras_tensor", "model_to_dot", "normalize", "pack_x_y_sample_weight", "plot_model",
    "register_keras_serializable", "set_random_seed", "to_categorical", "to_snake_case", "unique_name",
    "unpack_x_y_sample_weight",
]

_rng = np.random.default_rng()
_name_counts = {}


def set_random_seed(seed):
    """Seed every unseeded random draw of gpulayers (initializers, dropout).

    Like ``keras.utils.set_random_seed``: after it, the same program creates
    the same weights and the same dropout masks.
    """
    global _rng
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"Invalid value for `seed`: expected a non-negative int. Received: seed={seed!r}")
    _rng = np.random.default_rng(int(seed))


def host_rng():
    """The global numpy Generator behind unseeded draws."""
    return _rng


def derive_seed(seed):
    """An int seed for a new generator: ``seed`` itself, or one drawn from :func:`host_rng`."""
    if seed is None:
        return int(_rng.integers(0, 2**63 - 1))
    return int(seed)


def to_snake_case(name):
    """``'Conv2D'`` -> ``'conv2d'``, ``'BatchNormalization'`` -> ``'batch_normalization'``."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    name = re.sub(r"([a-z])([A-Z])", r"\1_\2", name)
    return name.lower()


def unique_name(base):
    """Keras-style unique names: ``dense``, then ``dense_1``, ``dense_2``..."""
    count = _name_counts.get(base, 0)
    _name_counts[base] = count + 1
    return base if count == 0 else f"{base}_{count}"


def clear_session():
    """Reset the layer-name counters, as ``keras.utils.clear_session`` does."""
    _name_counts.clear()


def finite_real(value):
    """``value`` as a finite float, or None if it is not a real number, not finite, or beyond float range.

    A bool is not a number here; a Python int too large for a float (10**400)
    is refused rather than raising OverflowError.
    """
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if number - number == 0 else None  # inf - inf and nan - nan are nan


def unpack_x_y_sample_weight(data):
    """``(x, y, sample_weight)`` from a batch ``x``, ``(x,)``, ``(x, y)`` or ``(x, y, sample_weight)``, as Keras's."""
    if isinstance(data, list):
        data = tuple(data)
    if not isinstance(data, tuple):
        return data, None, None
    if len(data) == 1:
        return data[0], None, None
    if len(data) == 2:
        return data[0], data[1], None
    if len(data) == 3:
        return data
    raise ValueError(
        "Data is expected to be in format `x`, `(x,)`, `(x, y)`, or `(x, y, sample_weight)`, found: "
        f"a tuple of {len(data)} items"
    )


def pack_x_y_sample_weight(x, y=None, sample_weight=None):
    """The batch tuple Keras's ``train_step`` unpacks: ``(x,)``, ``(x, y)`` or ``(x, y, sample_weight)``.

    As Keras's: ``x`` alone comes back as it is unless it is a list or
    tuple, which is wrapped as ``(x,)`` so that it is not read as ``(x, y)``.
    """
    if y is None:
        if not isinstance(x, (list, tuple)):
            return x
        return (x,)
    if sample_weight is None:
        return (x, y)
    return (x, y, sample_weight)


def __getattr__(name):
    # keras.utils.PyDataset (and its old name Sequence), imported on first use: data_adapters imports this module.
    if name in ("PyDataset", "Sequence"):
        from gpulayers.data_adapters import py_dataset

        return getattr(py_dataset, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
