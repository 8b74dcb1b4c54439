"""Lambda (Keras 3's ``keras.layers.Lambda``): a function of the inputs as a layer.

Saving writes Keras's config: a named function by reference (``{"module":
"builtins", "class_name": "function", "config": name, ...}``, ``name`` being
the registered ``"package>name"`` when the function is registered), a Python
``lambda`` as Keras's ``__lambda__`` entry (its marshalled bytecode), which
Keras loads with ``safe_mode=False``.

Loading never unmarshals nor runs code from a config: a ``__lambda__`` entry
is always refused (with Keras's message in safe mode). A function given by
reference is resolved only among the objects the program made known
(``custom_objects``, :func:`~gpulayers.object_registration.custom_object_scope`,
:func:`~gpulayers.object_registration.register_keras_serializable`); no
module named in a config is imported. Keras resolves such a function in safe
mode too, and so does gpulayers: the program itself provided it.
"""

import base64
import inspect
import marshal
import numbers
import types

import numpy as np

from gpulayers import object_registration
from gpulayers.layers.base import Layer

__all__ = ["Lambda"]

_SAFE_MODE_MESSAGE = (
    "Requested the deserialization of a `Lambda` layer whose `function` is a Python lambda. This carries a "
    "potential risk of arbitrary code execution and thus it is disallowed by default. If you trust the source of "
    "the artifact, you can override this error by passing `safe_mode=False` to the loading function, or calling "
    "`keras.config.enable_unsafe_deserialization()."
)


def bytecode_refusal(safe_mode, argument="function"):
    """Why a Lambda saved as Python bytecode is not loaded: Keras's safe-mode message in safe mode, else
    that gpulayers never runs bytecode from a file."""
    if safe_mode:
        return _SAFE_MODE_MESSAGE
    return (
        f"The `{argument}` of this Lambda layer is a Python lambda saved as bytecode: gpulayers never "
        "unmarshals or runs bytecode from a file or config, even with safe_mode=False. Define the function "
        "with a name and make it known to the loader, in `custom_objects` or with "
        "`register_keras_serializable()`, and save the model again (or rebuild the layer in code)."
    )


def _is_shape(value):
    return isinstance(value, (list, tuple)) and all(
        d is None or (isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 0) for d in value
    )


def _is_shape_structure(value):
    if _is_shape(value):
        return True
    if isinstance(value, (list, tuple)):
        return bool(value) and all(_is_shape_structure(v) for v in value)
    if isinstance(value, dict):
        return bool(value) and all(isinstance(k, str) and _is_shape_structure(v) for k, v in value.items())
    return False


def _map_shapes(fn, value):
    """``fn`` on each shape of a structure of shapes (tuples of ints/None, or lists/dicts of them)."""
    if _is_shape(value):
        return fn(tuple(value))
    if isinstance(value, dict):
        return {k: _map_shapes(fn, v) for k, v in value.items()}
    return type(value)(_map_shapes(fn, v) for v in value)


def _parameters(function):
    """The names ``function`` takes as arguments (none known for a callable inspect cannot read)."""
    try:
        return set(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return set()


def _function_config(fn, argument):
    """Keras's config entry for a function (or a callable object with a config)."""
    if isinstance(fn, types.FunctionType) and fn.__name__ == "<lambda>":
        code = base64.encodebytes(marshal.dumps(fn.__code__)).decode("ascii")  # Keras's format: base64 lines
        closure = tuple(cell.cell_contents for cell in fn.__closure__) if fn.__closure__ else None
        return {"class_name": "__lambda__", "config": {"code": code, "defaults": fn.__defaults__, "closure": closure}}
    if not callable(fn):
        raise TypeError(f"Invalid type for `{argument}`: expected a callable. Received: {argument}={fn!r:.80}")
    if not inspect.isroutine(fn) and hasattr(fn, "get_config"):
        cls = type(fn)
        return {"module": cls.__module__, "class_name": cls.__name__, "config": fn.get_config(),
                "registered_name": object_registration.get_registered_name(cls)}
    return {"module": "builtins", "class_name": "function",
            "config": object_registration.get_registered_name(fn), "registered_name": "function"}


def _serialize_value(value, argument):
    """A Lambda's ``arguments`` (or constant ``mask``) in JSON-able form: plain values as they are, NumPy
    arrays as Keras's ``__numpy__`` entries."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return {"class_name": "__numpy__", "config": {"value": value.tolist(), "dtype": value.dtype.name}}
    if isinstance(value, (list, tuple)):
        return type(value)(_serialize_value(v, argument) for v in value)
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _serialize_value(v, argument) for k, v in value.items()}
    if hasattr(value, "get_config"):
        cls = type(value)
        return {"module": cls.__module__, "class_name": cls.__name__, "config": value.get_config(),
                "registered_name": object_registration.get_registered_name(cls)}
    raise TypeError(
        f"Cannot serialize `{argument}` of a Lambda layer: expected plain values (numbers, strings, lists, dicts), "
        f"NumPy arrays or objects with get_config(). Received: {value!r:.80} of type {type(value).__name__}"
    )


def _deserialize_value(value, argument, custom_objects):
    if isinstance(value, list):
        return [_deserialize_value(v, argument, custom_objects) for v in value]
    if isinstance(value, tuple):
        return tuple(_deserialize_value(v, argument, custom_objects) for v in value)
    if not isinstance(value, dict):
        return value
    if value.get("class_name") == "__numpy__" and isinstance(value.get("config"), dict):
        inner = value["config"]
        return np.asarray(inner.get("value"), dtype=inner.get("dtype"))
    if isinstance(value.get("class_name"), str) and "config" in value and set(value) <= {
            "module", "class_name", "config", "registered_name"}:
        if value["class_name"] in ("__lambda__", "__bytes__", "__tensor__", "__keras_tensor__"):
            raise ValueError(f"Cannot load `{argument}` of a Lambda layer: gpulayers does not load "
                             f"{value['class_name']!r} entries. Received: {argument}={value!r:.200}")
        obj = object_registration.resolve(value, custom_objects)
        if obj is None:
            raise ValueError(
                f"Could not locate {value['class_name']!r} in `{argument}` of a Lambda layer: pass it in "
                "`custom_objects` or register it with `register_keras_serializable()`. No module named in a config "
                f"is ever imported. Received: {argument}={value!r:.200}"
            )
        return object_registration.instantiate(value, obj)
    return {k: _deserialize_value(v, argument, custom_objects) for k, v in value.items()}


class Lambda(Layer):
    """Wraps a function of the inputs as a layer: ``Lambda(lambda x: x ** 2)``.

    Write the function with :mod:`gpulayers.ops` (or tensor operators and
    NumPy ufuncs on tensors) so that gradients flow through it. A subclass of
    :class:`Layer` with ``get_config`` saves more portably.

    Args:
        function: The function; called as ``function(inputs, **arguments)``,
            with ``training`` (and ``mask=None``) when it takes them.
        output_shape: None (found by calling the function on zeros), a shape
            without the batch axis (a tuple, or a list/dict of them for
            several outputs; the batch axis of the first input is put in
            front), or a function of the full input shape.
        mask: Kept and saved, as Keras's; gpulayers has no masking, so it is not applied.
        arguments: Dict of keyword arguments for ``function``.

    Example:
        >>> Lambda(lambda x, k: x * k, arguments={"k": 3})(np.ones((2, 2)))  # all 3.0
    """

    single_input = False

    def __init__(self, function, output_shape=None, mask=None, arguments=None, **kwargs):
        if not callable(function):
            raise TypeError(f"Invalid type for `function`: expected a callable. Received: function={function!r:.80}")
        if output_shape is not None and not callable(output_shape) and not _is_shape_structure(output_shape):
            raise TypeError(
                "Invalid type for `output_shape`: expected None, a function, or a shape (a tuple of non-negative "
                f"ints or None, or a list or dict of them). Received: output_shape={output_shape!r:.80}"
            )
        if arguments is not None and (not isinstance(arguments, dict) or not all(isinstance(k, str) for k in arguments)):
            raise TypeError(
                f"Invalid type for `arguments`: expected a dict of keyword arguments. Received: arguments={arguments!r:.80}"
            )
        super().__init__(**kwargs)
        self.function = function
        self.arguments = dict(arguments or {})
        self.mask = mask
        self.supports_masking = mask is not None
        self._output_shape = tuple(output_shape) if _is_shape(output_shape) else output_shape
        parameters = _parameters(function)
        self._fn_expects_training_arg = "training" in parameters
        self._fn_expects_mask_arg = "mask" in parameters

    def _overrides(self, method):
        # The output shape comes from the function: nothing to check before a call (which would run it
        # on zeros, twice, at every call).
        return False if method == "compute_output_shape" else super()._overrides(method)

    def compute_output_shape(self, input_shape):
        if self._output_shape is None:
            try:
                return self._traced_output_shape(input_shape)
            except Exception as exc:
                raise NotImplementedError(
                    "We could not automatically infer the shape of the Lambda's output. Please specify the "
                    f"`output_shape` argument for this Lambda layer. ({type(exc).__name__}: {exc})"
                ) from exc
        if callable(self._output_shape):
            return self._output_shape(input_shape)
        first = input_shape
        while not _is_shape(first) and first:  # the first input's shape
            first = next(iter(first.values())) if isinstance(first, dict) else first[0]
        batch = first[0] if _is_shape(first) and first else None
        return _map_shapes(lambda shape: (batch,) + shape, self._output_shape)

    def call(self, inputs, mask=None, training=None):
        kwargs = dict(self.arguments)
        if self._fn_expects_mask_arg:
            kwargs["mask"] = mask
        if self._fn_expects_training_arg:
            kwargs["training"] = training
        return self.function(inputs, **kwargs)

    def compute_mask(self, inputs, mask=None):
        return self.mask(inputs, mask) if callable(self.mask) else self.mask

    def get_config(self):
        config = {**super().get_config(), "function": _function_config(self.function, "function")}
        if self._output_shape is not None:
            config["output_shape"] = (_function_config(self._output_shape, "output_shape")
                                      if callable(self._output_shape) else self._output_shape)
        if self.mask is not None:
            config["mask"] = _function_config(self.mask, "mask") if callable(self.mask) else _serialize_value(self.mask, "mask")
        config["arguments"] = _serialize_value(self.arguments, "arguments")
        return config

    @staticmethod
    def _load_function(entry, argument, safe_mode, custom_objects):
        """The function a config entry names, among the objects the program made known; a ``__lambda__``
        entry (bytecode) is refused."""
        if callable(entry):
            return entry
        if isinstance(entry, dict) and entry.get("class_name") == "__lambda__":
            raise ValueError(bytecode_refusal(safe_mode, argument))
        if isinstance(entry, str):
            name = entry
        elif isinstance(entry, dict) and entry.get("class_name") == "function" and isinstance(entry.get("config"), str):
            name = entry["config"]
        elif isinstance(entry, dict) and isinstance(entry.get("class_name"), str):
            obj = object_registration.resolve(entry, custom_objects)
            if obj is None:
                raise ValueError(
                    f"Could not locate {entry['class_name']!r}, the `{argument}` of a Lambda layer: pass it in "
                    "`custom_objects` or register it with `register_keras_serializable()`. No module named in a "
                    f"config is ever imported. Received: {argument}={entry!r:.200}"
                )
            return object_registration.instantiate(entry, obj)
        else:
            raise ValueError(
                f"Invalid value for `{argument}` in a Lambda config: expected a function's name or config. "
                f"Received: {argument}={entry!r:.200}"
            )
        fn = object_registration.get_registered_object(name, custom_objects)
        if fn is None:
            raise ValueError(
                f"Could not locate function {name!r}, the `{argument}` of a Lambda layer: pass it in "
                "`custom_objects={...}` or register it with `register_keras_serializable()`. No module named in a "
                "config is ever imported."
            )
        if not callable(fn):
            raise TypeError(f"The object known as {name!r} is not callable, so it cannot be the `{argument}` of a "
                            f"Lambda layer. Received: {fn!r:.80}")
        return fn

    @classmethod
    def from_config(cls, config, custom_objects=None, safe_mode=None):
        """Build from Keras's config. ``safe_mode`` None: the :func:`~gpulayers.object_registration.in_safe_mode`
        in force (safe outside any scope)."""
        if not isinstance(config, dict) or "function" not in config:
            raise ValueError(f"Invalid config for layer class 'Lambda': it needs a 'function' entry. Received: "
                             f"{config!r:.200}")
        object_registration.check_custom_objects(custom_objects)
        safe = object_registration.in_safe_mode() if safe_mode is None else safe_mode is not False
        config = dict(config)
        config["function"] = cls._load_function(config["function"], "function", safe, custom_objects)
        shape = config.get("output_shape")
        if isinstance(shape, dict) and isinstance(shape.get("class_name"), str) and not _is_shape_structure(shape):
            config["output_shape"] = cls._load_function(shape, "output_shape", safe, custom_objects)
        elif isinstance(shape, (list, tuple)):
            config["output_shape"] = _map_shapes(tuple, shape) if _is_shape_structure(shape) else shape
        mask = config.get("mask")
        if isinstance(mask, dict) and mask.get("class_name") in ("__lambda__", "function"):
            config["mask"] = cls._load_function(mask, "mask", safe, custom_objects)
        elif mask is not None:
            config["mask"] = _deserialize_value(mask, "mask", custom_objects)
        if "arguments" in config:
            config["arguments"] = _deserialize_value(config["arguments"], "arguments", custom_objects)
        return cls(**config)
