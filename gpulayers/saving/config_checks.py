"""Checks of a ``.keras`` file's ``config.json`` and ``compile_config``, before anything is built.

Every dict has string keys and no dunder keys; every serialized object is
Keras's or gpulayers' (a ``module`` under ``keras`` or ``gpulayers``) or one
the program made known (``custom_objects``, a scope, registration); no class
that carries code (Python bytecode, ``TFOpLambda``) is accepted; the model
is a Sequential, a Functional, or a user's known Model class, and every layer
entry names a class gpulayers builds.
"""

from gpulayers import object_registration, serialization
from gpulayers.saving.archive import CONFIG

__all__ = ["MAX_CONFIG_DEPTH", "MAX_LAYERS", "check_compile_config", "check_model_config"]

_GPULAYERS_PACKAGE = serialization.GPULAYERS_PACKAGE
_MODEL_CLASSES = ("Sequential", "Functional")

# Classes that carry Python code in Keras files: never loaded.
_CODE_CLASSES = frozenset({"TFOpLambda", "SlicingOpLambda", "__lambda__", "function"})


def _bad(path, where, what):
    return ValueError(f"Invalid model file {path}: {CONFIG} at {where}: {what}")


def _allowed_module(module):
    if module is None:
        return True
    if not isinstance(module, str):
        return False
    return any(module == root or module.startswith(root + ".") for root in ("keras", _GPULAYERS_PACKAGE))


def _function_reference(obj):
    """Keras's form of a built-in function given by name, as a compile_config holds ``loss=keras.losses.mse``.

    Keras 3.15 writes ``{"module": "builtins", "class_name": "function", "config": "mean_squared_error",
    "registered_name": "function"}`` (older files and gpulayers: ``"module": "keras.losses"``). No code:
    the name is looked up among gpulayers' own functions, never imported.
    """
    module = obj.get("module")
    return (
        obj.get("class_name") == "function"
        and isinstance(module, str)
        and (module in ("builtins", "keras") or module.startswith("keras."))
        and isinstance(obj.get("config"), str)
    )


def _check_object(obj, path, where, functions=False):
    """A serialized object (a dict with class_name/module): its module and registered_name.

    ``functions``: accept Keras's references to its built-in functions by name.
    """
    if object_registration.resolve(obj) is not None:
        return  # an object the program made known (custom_objects, a scope, the registry)
    module = obj.get("module")
    class_name = obj.get("class_name")
    reference = functions and _function_reference(obj)
    if not reference and not _allowed_module(module):
        raise _bad(
            path,
            where,
            f"{class_name!r:.80} from module {module!r:.80} is neither Keras's nor gpulayers', and the program made "
            "no such class known: pass it in `custom_objects` (or register it with `register_keras_serializable`). "
            "No module named in a file is ever imported.",
        )
    if not isinstance(class_name, str) or not class_name:
        raise _bad(path, where, f"'class_name' should be a non-empty string. Received: {class_name!r:.80}")
    if class_name == "__keras_tensor__" and not functions:  # a symbolic tensor in a functional model's node
        _check_keras_tensor(obj, path, where)
        return
    if class_name in ("__slice__", "__tuple__") and not functions:  # a call argument such as x[:, :2]
        if set(obj) - {"class_name", "config"} or not isinstance(obj.get("config"), dict):
            raise _bad(path, where, f"a {class_name} entry holds only its 'config'.")
        return
    if class_name in ("__numpy__", "__tensor__"):  # an array argument (Constant's value, AUC's label_weights)
        _check_array_entry(obj, class_name, path, where)
        return
    if class_name == "__lambda__":
        from gpulayers.layers.lambda_layer import bytecode_refusal

        raise _bad(path, where, bytecode_refusal(object_registration.in_safe_mode()))
    # A Lambda layer may sit in a model (its function is named, or it is refused by Lambda.from_config); a
    # compile_config holds no layers.
    if (class_name in _CODE_CLASSES or (functions and class_name == "Lambda")) and not reference:
        raise _bad(path, where, f"{class_name!r} holds Python code, which gpulayers never loads.")
    if class_name.startswith("__"):
        raise _bad(path, where, f"class_name {class_name!r} is not allowed.")
    registered = obj.get("registered_name")
    if registered is not None:
        if not isinstance(registered, str):
            raise _bad(path, where, f"'registered_name' should be a string or null. Received: {registered!r:.80}")
        if ">" in registered and registered != f"{_GPULAYERS_PACKAGE}>{class_name}":
            raise _bad(path, where, f"custom object {registered!r} is not one of gpulayers' classes.")


def _check_array_entry(obj, class_name, path, where):
    """Keras's form of an array in a config: ``{"class_name": "__numpy__", "config": {"value": nested lists of
    numbers, "dtype": a real dtype name}}``; data only."""
    config = obj.get("config")
    if set(obj) - {"class_name", "config"} or not isinstance(config, dict) or set(config) - {"value", "dtype"}:
        raise _bad(path, where, f"a {class_name} entry holds only its 'config' with 'value' and 'dtype'.")
    dtype = config.get("dtype")
    if not isinstance(dtype, str) or dtype not in _REAL_DTYPES:
        raise _bad(path, where, f"a {class_name} entry's dtype should be a real dtype name. Received: {dtype!r:.80}")

    def numbers_only(value, depth=0):
        if isinstance(value, list):
            return depth < 32 and all(numbers_only(v, depth + 1) for v in value)
        return isinstance(value, (int, float)) and not isinstance(value, bool) or value is None

    if not numbers_only(config.get("value")):
        raise _bad(path, where, f"a {class_name} entry's value should be nested lists of numbers.")


_REAL_DTYPES = frozenset(
    {"float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
     "uint64", "bool"}
)


def _check_keras_tensor(obj, path, where):
    config = obj.get("config")
    if set(obj) - {"class_name", "config"} or not isinstance(config, dict):
        raise _bad(path, where, "a __keras_tensor__ entry holds only its 'config'.")
    history, shape = config.get("keras_history"), config.get("shape")
    if not (isinstance(history, list) and len(history) == 3 and isinstance(history[0], str)
            and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in history[1:])):
        raise _bad(path, where, f"keras_history should be [layer name, node index, tensor index]. Received: {history!r:.80}")
    if shape is not None:
        _check_shape(shape, path, f"{where}.shape")
    if not isinstance(config.get("dtype", "float32"), str):
        raise _bad(path, where, "dtype should be a string.")


def _check_tree(value, path, where, functions=False):
    """Every dict in a config: string keys, no dunder keys, serialized objects from Keras or gpulayers."""
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise _bad(path, where, f"non-string key {key!r}.")
            if key.startswith("__"):
                raise _bad(path, where, f"key {key!r} is not allowed.")
        is_object = "class_name" in value or "module" in value
        if is_object:
            _check_object(value, path, where, functions)
        for key, item in value.items():
            if is_object and key == "compile_config":  # checked on its own, and only when compiling
                continue
            _check_tree(item, path, f"{where}.{key}", functions)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_tree(item, path, f"{where}[{i}]", functions)
    elif not (value is None or isinstance(value, (str, bool, int, float))):  # pragma: no cover - JSON gives no other types
        raise _bad(path, where, f"unexpected value {value!r:.80}.")


# The deepest nesting of JSON objects and lists a config may have: a Functional model inside another
# adds 6 levels, a Sequential 3, a layer's own arguments about 6; real files stay under 40.
MAX_CONFIG_DEPTH = 100

# The most layer entries a config may hold, nested models' included: loading is linear in them (about
# 0.3 ms each), so this bounds the time a file can take, far above real models (ResNet-152: 517 layers).
MAX_LAYERS = 10_000


def _deeper_than(value, limit):
    """Whether ``value`` nests JSON objects and lists more than ``limit`` deep (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def check_model_config(config, path):
    """Validate the whole config tree before anything is built."""
    if isinstance(config, (dict, list)) and _deeper_than(config, MAX_CONFIG_DEPTH):
        raise ValueError(
            f"Invalid model file {path}: {CONFIG} nests objects and lists more than {MAX_CONFIG_DEPTH} levels "
            "deep; gpulayers reads configs up to that depth."
        )
    try:
        _check_tree(config, path, "model")
        _check_container(config, path, "model", [0])
    except RecursionError:  # pragma: no cover - the depth is bounded above
        raise ValueError(f"Invalid model file {path}: {CONFIG} is nested too deeply.") from None


def check_compile_config(config, path):
    """The compile_config tree, before anything is built: a JSON object of Keras's keys holding only
    Keras's or gpulayers' objects (no module to import, no code); what they name is then built
    by ``compile_from_config``, which knows only gpulayers' own classes."""
    where = "model.compile_config"
    if not isinstance(config, dict):
        raise _bad(path, where, f"expected a JSON object. Received: {config!r:.80}")
    from gpulayers.models.training import COMPILE_KEYS  # here: gpulayers.models imports this module

    unknown = sorted(set(config) - COMPILE_KEYS)
    if unknown:
        raise _bad(path, where, f"unexpected keys {unknown}; Keras's are {sorted(COMPILE_KEYS)}.")
    try:
        _check_tree(config, path, where, functions=True)
    except RecursionError:
        raise _bad(path, where, "nested too deeply.") from None


def _check_container(entry, path, where, count):
    """The model entry: a Sequential or Functional (every layer entry checked, nested models too), or a
    model class the program made known (its own config is its business). ``count``: [layer entries so far]."""
    if not isinstance(entry, dict):
        raise _bad(path, where, f"expected a serialized model (a JSON object). Received: {entry!r:.80}")
    class_name = entry.get("class_name")
    known = object_registration.resolve(entry)
    if class_name not in _MODEL_CLASSES and known is None:
        raise _bad(
            path,
            where,
            "gpulayers loads Sequential and Functional models, and the model classes the program makes known "
            f"(`custom_objects`, `register_keras_serializable`). Received: class_name={class_name!r:.80}",
        )
    config = entry.get("config")
    if not isinstance(config, dict):
        raise _bad(path, where, "'config' should be a JSON object.")
    _check_build_config(entry, path, where)
    if known is not None and class_name not in _MODEL_CLASSES:
        return
    entries = config.get("layers", [])
    if not isinstance(entries, list):
        raise _bad(path, f"{where}.config.layers", "expected a list of layers.")
    count[0] += len(entries)
    if count[0] > MAX_LAYERS:
        raise _bad(path, f"{where}.config.layers", f"more than {MAX_LAYERS} layers in all; gpulayers loads at most that many.")
    builtin = serialization.builtin_classes()
    for i, layer in enumerate(entries):
        here = f"{where}.config.layers[{i}]"
        if not isinstance(layer, dict):
            raise _bad(path, here, f"expected a serialized layer (a JSON object). Received: {layer!r:.80}")
        name = layer.get("class_name")
        if class_name == "Functional" and not isinstance(layer.get("inbound_nodes", []), list):
            raise _bad(path, f"{here}.inbound_nodes", "expected a list of calls.")
        if name in _MODEL_CLASSES:
            _check_container(layer, path, here, count)
            continue
        if serialization.is_operation_entry(layer):  # an op called on symbolic tensors (x + y, ops.mean)
            continue
        if name not in builtin and object_registration.resolve(layer) is None:
            raise _bad(
                path,
                here,
                f"unknown layer class {name!r:.80}; gpulayers builds its own layers "
                f"({', '.join(sorted(builtin))}), and the classes passed in "
                "`custom_objects` or registered with `register_keras_serializable`.",
            )
        if not isinstance(layer.get("config", {}), dict):
            raise _bad(path, here, "'config' should be a JSON object.")
        _check_build_config(layer, path, here)
    if class_name == "Functional":
        for key in ("input_layers", "output_layers"):
            if key not in config:
                raise _bad(path, f"{where}.config", f"a Functional model needs '{key}'.")
    if config.get("build_input_shape") is not None:
        _check_shape(config["build_input_shape"], path, f"{where}.config.build_input_shape")


def _check_build_config(entry, path, where):
    build = entry.get("build_config")
    if build is None:
        return
    if not isinstance(build, dict):
        raise _bad(path, f"{where}.build_config", "expected a JSON object.")
    shape = build.get("input_shape")
    if shape is not None:
        # One shape, or a list or dict of them (a layer called on several tensors, such as Add).
        if isinstance(shape, dict):
            for key, value in shape.items():
                _check_shape(value, path, f"{where}.build_config.input_shape.{key}")
        elif isinstance(shape, list) and shape and all(isinstance(s, list) for s in shape):
            for i, value in enumerate(shape):
                _check_shape(value, path, f"{where}.build_config.input_shape[{i}]")
        else:
            _check_shape(shape, path, f"{where}.build_config.input_shape")


def _check_shape(shape, path, where):
    if not isinstance(shape, list) or not all(d is None or (isinstance(d, int) and not isinstance(d, bool) and d >= 0) for d in shape):
        raise _bad(path, where, f"expected a list of non-negative ints or nulls. Received: {shape!r:.80}")
