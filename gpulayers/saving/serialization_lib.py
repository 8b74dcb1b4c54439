"""``keras.saving.serialize_keras_object`` / ``deserialize_keras_object``: any Keras object, both ways.

Each family (layers and models, optimizers, schedules, losses, metrics,
initializers, regularizers, constraints, activations) has its own
``serialize``/``deserialize`` with Keras's ``{"module", "class_name",
"config", "registered_name"}`` form; these two functions pick the family
from the object's base class or the entry's module, and map containers,
arrays and tensors as Keras does (``__numpy__``, ``__tensor__``,
``__bytes__``). As everywhere in gpulayers, only built-in classes and the
ones the program made known are ever built; no module a config names is
imported.
"""

import numbers

import numpy as np

from gpulayers import activations, constraints, initializers, losses, metrics, object_registration
from gpulayers import optimizers, regularizers, serialization
from gpulayers.autodiff import Tensor
from gpulayers.layers.base import Layer
from gpulayers.ops.core import convert_to_numpy
from gpulayers.optimizers import schedules
from gpulayers.optimizers.base import Optimizer

__all__ = ["deserialize_keras_object", "serialize_keras_object"]

# Base class -> the family that writes it (checked in order).
_BY_BASE = (
    (Optimizer, optimizers),
    (schedules.LearningRateSchedule, schedules),
    (losses.Loss, losses),
    (metrics.Metric, metrics),
    (initializers.Initializer, initializers),
    (regularizers.Regularizer, regularizers),
    (constraints.Constraint, constraints),
)

# The first name of a module after "keras." (or "gpulayers.", "keras.src.") -> its family.
_BY_MODULE = {
    "activations": activations, "constraints": constraints, "initializers": initializers, "losses": losses,
    "metrics": metrics, "optimizers": optimizers, "regularizers": regularizers,
}


def serialize_keras_object(obj):
    """Keras's config for ``obj``: plain values as they are, containers item by item, arrays and tensors
    as ``__numpy__`` / ``__tensor__`` entries, Keras objects as their family's dict."""
    if obj is None or isinstance(obj, (bool, numbers.Real, str)) and not isinstance(obj, np.generic):
        return obj
    if isinstance(obj, (list, tuple)):
        items = [serialize_keras_object(item) for item in obj]
        return tuple(items) if isinstance(obj, tuple) else items
    if isinstance(obj, dict):
        return {key: serialize_keras_object(value) for key, value in obj.items()}
    if isinstance(obj, bytes):
        return {"class_name": "__bytes__", "config": {"value": obj.decode("utf-8")}}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return {"class_name": "__numpy__", "config": {"value": obj.tolist(), "dtype": obj.dtype.name}}
    if isinstance(obj, Tensor):
        value = convert_to_numpy(obj)
        return {"class_name": "__tensor__", "config": {"value": value.tolist(), "dtype": value.dtype.name}}
    for base, family in _BY_BASE:
        if isinstance(obj, base):
            return family.serialize(obj)
    if isinstance(obj, Layer):
        return serialization.serialize(obj)
    if callable(obj):
        return _serialize_function(obj)
    raise TypeError(f"Invalid type for `obj`: cannot serialize a {type(obj).__name__}. Received: obj={obj!r:.80}")


def _serialize_function(fn):
    if activations.is_builtin(fn):
        name = activations.serialize(fn)
        return {"module": "keras.activations", "class_name": "function", "config": name, "registered_name": name}
    return losses.serialize(fn)  # a built-in loss function, else Keras's entry for the user's function


def deserialize_keras_object(config, custom_objects=None, safe_mode=True, **kwargs):
    """The object ``config`` describes (Keras's form), built from gpulayers' classes and the ones the
    program made known (``custom_objects``, ``custom_object_scope``, ``register_keras_serializable``).

    ``safe_mode`` is accepted for Keras's signature: gpulayers never runs code from a config, whatever
    its value.
    """
    with object_registration.custom_object_scope(object_registration.check_custom_objects(custom_objects)):
        return _deserialize(config)


def _deserialize(config):
    if config is None or isinstance(config, (bool, numbers.Real, str)):
        return config
    if isinstance(config, (list, tuple)):
        items = [_deserialize(item) for item in config]
        return tuple(items) if isinstance(config, tuple) else items
    if not isinstance(config, dict):
        raise TypeError(f"Invalid type for `config`: expected a dict, a list or a plain value. Received: {config!r:.80}")
    if "class_name" not in config:
        return {key: _deserialize(value) for key, value in config.items()}
    class_name, inner = config["class_name"], config.get("config")
    if class_name in ("__numpy__", "__tensor__"):
        value = np.array(inner["value"], dtype=inner["dtype"])
        return value if class_name == "__numpy__" else Tensor(value)
    if class_name == "__bytes__":
        return inner["value"].encode("utf-8")
    custom = object_registration.deserialize_custom(config)
    if custom is not None:
        return custom
    family = _family(config.get("module"), class_name)
    return family(config)


def _builtin_function(entry):
    """A built-in function by name: an activation, else a loss (or metric) function."""
    try:
        return activations.deserialize(entry.get("config"))
    except ValueError:
        return losses.get(entry.get("config"))


def _family(module, class_name):
    """The function that builds an entry of ``module``: a family's ``deserialize``, else the layers'."""
    if class_name == "function" and module in (None, "builtins"):  # Keras writes its activations so
        return _builtin_function
    parts = module.split(".") if isinstance(module, str) else []
    if parts[:1] not in (["keras"], ["gpulayers"]):
        return serialization.deserialize  # a user's module: the layers' lookup says what it knows
    # The first family named in the path: keras.optimizers, keras.src.losses.losses, Keras's
    # backend-specific keras.src.backend.torch.optimizers.torch_sgd, gpulayers.losses_margin...
    names = [part.split("_")[0] for part in parts[1:]]
    name = next((n for n in names if n in _BY_MODULE), None)
    if name == "optimizers" and "schedules" in parts:
        return schedules.deserialize
    if name == "losses" and class_name == "function":
        return lambda entry: losses.get(entry["config"])  # the function itself, as Keras gives it
    family = _BY_MODULE.get(name)
    return family.deserialize if family is not None else serialization.deserialize
