"""Name lookup, Keras 3 (de)serialization and ``get`` for one kind of built-in.

:mod:`gpulayers.initializers`, :mod:`gpulayers.regularizers` and
:mod:`gpulayers.constraints` each hold one :class:`Registry` of their classes;
:mod:`gpulayers.activations` uses its :meth:`Registry.lookup` and
:meth:`Registry.config_type_error`.

Example:
    >>> from gpulayers.constraints import Constraint, NonNeg
    >>> reg = Registry("constraint", "keras.constraints", {"non_neg": NonNeg}, (NonNeg,), Constraint)
    >>> reg.get("non_neg", argument="bias_constraint")
    NonNeg()
"""

import difflib

__all__ = ["Registry"]


def _a(word):
    """The indefinite article for ``word`` in messages ("an initializer")."""
    return "an" if word[:1].lower() in "aeiou" else "a"


class Registry:
    """The built-ins of one kind, found by name and written as Keras 3 configs.

    Only the values in ``by_name`` (and ``shortcuts``) are ever returned or
    instantiated; nothing named in a config is imported.

    Args:
        kind: singular noun for messages, e.g. ``"initializer"``.
        keras_module: the module Keras writes in a built-in's config,
            e.g. ``"keras.initializers"``.
        by_name: name -> built-in (a class with ``from_config``, or for
            :meth:`lookup` alone any value). Kept by reference.
        classes: the built-in classes :meth:`serialize` writes as
            ``keras_module`` configs.
        base: the base class whose subclasses :meth:`get` instantiates
            (needed by :meth:`get` only).
        shortcuts: extra string names for :meth:`deserialize` only,
            name -> zero-argument factory; not listed in lookup messages.
        any_case: look names up lower-cased (``by_name``'s keys are lower
            case), as Keras does for optimizers.
        not_provided: Keras's names that gpulayers does not provide (said
            so in the error, rather than "unknown").
    """

    def __init__(self, kind, keras_module, by_name, classes=(), base=None, shortcuts=None, any_case=False,
                 not_provided=()):
        self.kind = kind
        self.keras_module = keras_module
        self.by_name = by_name
        self.classes = tuple(classes)
        self.base = base
        self.shortcuts = dict(shortcuts or {})
        self.any_case = any_case
        self.not_provided = frozenset(not_provided)

    def lookup(self, name, argument):
        """``by_name[name]``; ValueError (with a "Did you mean" hint) if unknown."""
        key = name.lower() if self.any_case else name
        if key in self.by_name:
            return self.by_name[key]
        if key in self.not_provided:
            why = f"Keras's {name!r} {self.kind} is not provided by gpulayers."
        else:
            close = difflib.get_close_matches(key, list(self.by_name), n=1)
            why = f"unknown {self.kind} {name!r}." + (f" Did you mean {close[0]!r}?" if close else "")
        case = " (any case)" if self.any_case else ""
        raise ValueError(
            f"Invalid value for `{argument}`: {why} Expected one of {sorted(self.by_name)}{case}. "
            f"Received: {argument}={name!r}"
        )

    @staticmethod
    def config_type_error(config, argument):
        """The TypeError for a config that is neither a string nor a dict."""
        return TypeError(
            f"Invalid type for `{argument}`: expected a string or a dict. "
            f"Received: {argument}={config!r} of type {type(config).__name__}"
        )

    def deserialize(self, config, argument):
        """Build a built-in from a name or a Keras 3 config dict.

        A dict's ``module``, if given, must start with ``"keras"``; errors from
        the class's ``from_config`` come back as ValueError naming ``argument``.
        """
        if not isinstance(config, (str, dict)):
            raise self.config_type_error(config, argument)
        from gpulayers import object_registration  # the user's classes and functions come first, as in Keras

        custom = object_registration.deserialize_custom(config)
        if custom is not None:
            return custom
        if isinstance(config, str):
            if config in self.shortcuts:
                return self.shortcuts[config]()
            return self.lookup(config, argument)()
        name, module, kwargs = config.get("class_name"), config.get("module"), config.get("config", {})
        if not isinstance(name, str) or not isinstance(kwargs, dict):
            raise ValueError(
                f"Invalid value for `{argument}`: a config dict needs a string 'class_name' and a dict "
                f"'config'. Received: {argument}={config!r}"
            )
        if module is not None and not str(module).startswith("keras"):
            raise ValueError(
                f"Invalid value for `{argument}`: {name!r} from module {module!r} is not a gpulayers "
                f"built-in {self.kind}. Received: {argument}={config!r}"
            )
        cls = self.lookup(name, argument)
        try:
            return cls.from_config(kwargs)
        except (TypeError, ValueError) as exc:  # unexpected keys or bad values
            raise ValueError(f"Invalid value for `{argument}`: bad config for {name}: {exc}. "
                             f"Received: {argument}={config!r}") from None

    def serialize(self, obj):
        """Keras 3's dict for ``obj``; None stays None.

        A built-in gives ``{"module": keras_module, "class_name", "config",
        "registered_name": None}``; a user object or function gives Keras's
        custom-object form (which :meth:`deserialize` refuses to load).
        """
        if obj is None:
            return None
        if type(obj) in self.classes:  # a user subclass is not the built-in it extends
            return {"module": self.keras_module, "class_name": type(obj).__name__,
                    "config": obj.get_config(), "registered_name": None}
        if not callable(obj) and not hasattr(obj, "get_config"):
            raise TypeError(f"Invalid type for `{self.kind}`: expected {_a(self.kind)} {self.kind}. "
                            f"Received: {obj!r}")
        from gpulayers import object_registration

        is_obj = hasattr(obj, "get_config")
        name = getattr(obj, "__name__", type(obj).__name__)
        return {"module": getattr(obj, "__module__", None),
                "class_name": type(obj).__name__ if is_obj else "function",
                "config": obj.get_config() if is_obj else name,
                "registered_name": object_registration.get_registered_name(type(obj) if is_obj else obj)}

    def get(self, identifier, argument):
        """Resolve None, a name, a config dict, an instance, a ``base`` subclass or a callable.

        None gives None; a subclass is instantiated with no arguments;
        instances and other callables come back as they are. Anything else
        (a class outside ``base`` included) raises TypeError.
        """
        if identifier is None:
            return None
        if isinstance(identifier, (str, dict)):
            return self.deserialize(identifier, argument)
        if isinstance(identifier, type) and issubclass(identifier, self.base):
            return identifier()
        if callable(identifier) and not isinstance(identifier, type):
            return identifier
        base = self.base.__name__
        raise TypeError(
            f"Invalid type for `{argument}`: expected None, {_a(self.kind)} {self.kind} name, a config dict, "
            f"{_a(base)} {base} or a callable. Received: {argument}={identifier!r} of type "
            f"{type(identifier).__name__}"
        )
