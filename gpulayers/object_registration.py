"""The user's classes and functions that configs and files may name (Keras's object registration).

Loading never imports a module a file names: a file can only name gpulayers'
own classes, or objects the program itself made known, either by
:func:`register_keras_serializable` (as ``"package>Name"``) or through
``custom_objects`` (a dict passed to ``load_model``/``deserialize``, or the
:func:`custom_object_scope` in force).

Example:
    >>> @register_keras_serializable(package="faces")
    ... class Scale(gpulayers.layers.Layer):
    ...     ...
    >>> get_registered_name(Scale)
    'faces>Scale'
"""

import inspect
import threading

__all__ = [
    "CustomObjectScope",
    "custom_object_scope",
    "get_custom_objects",
    "get_registered_name",
    "get_registered_object",
    "in_safe_mode",
    "register_keras_serializable",
    "safe_mode_scope",
]

_GLOBAL_CUSTOM_OBJECTS = {}  # "package>Name" -> class or function
_GLOBAL_CUSTOM_NAMES = {}  # class or function -> "package>Name"
_scopes = threading.local()
_safe_mode = threading.local()  # the stack of safe_mode_scope values in force in this thread


def register_keras_serializable(package="Custom", name=None):
    """Decorator: make a class (with ``get_config``) or a function loadable by its registered name.

    Args:
        package: The package part of the name (no ``>``), default ``"Custom"``.
        name: The name part; default the object's ``__name__``.
    """
    if not isinstance(package, str) or not package or ">" in package:
        raise ValueError(f"Invalid value for `package`: expected a non-empty string without '>'. Received: package={package!r}")
    if name is not None and (not isinstance(name, str) or not name or ">" in name):
        raise ValueError(f"Invalid value for `name`: expected None or a non-empty string without '>'. Received: name={name!r}")

    def decorator(obj):
        if not (inspect.isclass(obj) or callable(obj)):
            raise TypeError(f"register_keras_serializable decorates a class or a function. Received: {obj!r:.80}")
        if inspect.isclass(obj) and not hasattr(obj, "get_config"):
            raise ValueError(f"Cannot register {obj.__name__}: a class needs a get_config() method to be saved.")
        registered = f"{package}>{name or obj.__name__}"
        _GLOBAL_CUSTOM_OBJECTS[registered] = obj
        _GLOBAL_CUSTOM_NAMES[obj] = registered
        return obj

    return decorator


def get_registered_name(obj):
    """``"package>Name"`` for a registered object, else its ``__name__`` (what files write as ``registered_name``)."""
    try:
        registered = _GLOBAL_CUSTOM_NAMES.get(obj)
    except TypeError:  # an unhashable object
        registered = None
    return registered or getattr(obj, "__name__", type(obj).__name__)


def get_custom_objects():
    """The global registry, ``{"package>Name": object}`` (a live dict, as Keras's)."""
    return _GLOBAL_CUSTOM_OBJECTS


class CustomObjectScope:
    """``with custom_object_scope({"Name": cls}):`` makes the objects known to every load inside the block."""

    def __init__(self, custom_objects):
        if custom_objects is None:  # as Keras: an empty scope
            custom_objects = {}
        if not isinstance(custom_objects, dict):
            raise TypeError(f"Invalid type for `custom_objects`: expected a dict. Received: {custom_objects!r:.80}")
        self.custom_objects = dict(custom_objects)

    def __enter__(self):
        stack = getattr(_scopes, "stack", None)
        if stack is None:
            stack = _scopes.stack = []
        stack.append(self.custom_objects)
        return self

    def __exit__(self, *exc):
        _scopes.stack.pop()
        return False


custom_object_scope = CustomObjectScope


class safe_mode_scope:  # noqa: N801 (a context manager used like a function, as Keras's SafeModeScope)
    """``with safe_mode_scope(False):`` marks the loads inside the block as trusted (``safe_mode=False``).

    What a load in safe mode refuses that a trusted one allows is up to the
    object loaded (a Lambda layer's function by reference). Nothing, in
    either mode, runs Python code from a file. Scopes nest; each thread has
    its own. ``safe_mode=None`` keeps the mode in force.
    """

    def __init__(self, safe_mode=True):
        if safe_mode is not None and not isinstance(safe_mode, bool):
            raise TypeError(f"Invalid type for `safe_mode`: expected a bool or None. Received: safe_mode={safe_mode!r}")
        self.safe_mode = safe_mode

    def __enter__(self):
        stack = getattr(_safe_mode, "stack", None)
        if stack is None:
            stack = _safe_mode.stack = []
        stack.append(in_safe_mode() if self.safe_mode is None else self.safe_mode)
        return self

    def __exit__(self, *exc):
        _safe_mode.stack.pop()
        return False


def in_safe_mode():
    """Whether loads in this thread are in safe mode: the innermost :class:`safe_mode_scope`'s value,
    True outside any."""
    stack = getattr(_safe_mode, "stack", None)
    return stack[-1] if stack else True


def check_custom_objects(custom_objects):
    """``custom_objects`` as a dict of str keys (None gives an empty dict)."""
    if custom_objects is None:
        return {}
    if not isinstance(custom_objects, dict) or not all(isinstance(k, str) for k in custom_objects):
        raise TypeError(
            f"Invalid type for `custom_objects`: expected a dict from names to classes or functions. "
            f"Received: {custom_objects!r:.200}"
        )
    return custom_objects


def get_registered_object(name, custom_objects=None):
    """The object known by ``name`` (a registered name or a plain name), or None.

    Looked up in ``custom_objects``, then the scopes in force (innermost
    first), then the registry.
    """
    if not isinstance(name, str):
        return None
    for table in [check_custom_objects(custom_objects)] + list(reversed(getattr(_scopes, "stack", []))):
        if name in table:
            return table[name]
    return _GLOBAL_CUSTOM_OBJECTS.get(name)


def resolve(entry, custom_objects=None):
    """The user's object a serialized entry names (by ``registered_name``, then ``class_name``), or None."""
    for key in (entry.get("registered_name"), entry.get("class_name")):
        obj = get_registered_object(key, custom_objects)
        if obj is not None:
            return obj
    if entry.get("class_name") == "function" and isinstance(entry.get("config"), str):
        return get_registered_object(entry["config"], custom_objects)
    return None


def instantiate(entry, obj):
    """The user's object for a serialized entry: a class built with ``from_config(entry["config"])`` (or
    its constructor), a function as it is."""
    if not inspect.isclass(obj):
        return obj
    config = entry.get("config", {})
    if not isinstance(config, dict):
        raise ValueError(f"Invalid config for {obj.__name__}: expected a dict. Received: {config!r:.200}")
    return obj.from_config(config) if hasattr(obj, "from_config") else obj(**config)


def deserialize_custom(config):
    """The user's object a serialized dict (or a plain name) refers to, built; None when the program
    made no such object known."""
    if isinstance(config, str):
        return get_registered_object(config)
    if not isinstance(config, dict):
        return None
    obj = resolve(config)
    return None if obj is None else instantiate(config, obj)
