"""Layers and models to and from Keras 3's ``{"module", "class_name", "config", "registered_name"}`` form.

This module sits below both ``gpulayers.layers`` and ``gpulayers.models``:
they register their classes here when they are imported
(:func:`register_builtin`), and configs are turned back into objects from
this registry and the user's classes the program made known
(:mod:`gpulayers.object_registration`), never by importing a module a
config names. ``saving`` uses it; it uses neither layers nor models.

Module names are written as Keras writes them, so Keras loads the files:
``keras.layers`` for its layer classes, ``keras`` for Sequential,
``keras.src.models.functional`` for Functional. A gpulayers-only layer
(StochasticPooling2D) is written with module ``gpulayers.layers`` and
registered name ``gpulayers>Name``; a user's class with its own module and
registered name (``"package>Name"`` when registered), as Keras writes custom
objects.
"""

from gpulayers import object_registration

__all__ = ["builtin_classes", "deserialize", "keras_entry", "register_builtin", "serialize"]

# Keras's own layer classes: a gpulayers class by one of these names is written as Keras's.
KERAS_LAYER_NAMES = frozenset(
    """
    Activation ActivityRegularization Add AlphaDropout Average AveragePooling1D
    AveragePooling2D AveragePooling3D BatchNormalization Concatenate Conv1D
    Conv1DTranspose Conv2D Conv2DTranspose Conv3D Conv3DTranspose Cropping1D
    Cropping2D Cropping3D Dense DepthwiseConv1D DepthwiseConv2D Dot Dropout ELU
    Embedding Flatten GaussianDropout GaussianNoise GlobalAveragePooling1D
    GlobalAveragePooling2D GlobalAveragePooling3D GlobalMaxPooling1D
    GlobalMaxPooling2D GlobalMaxPooling3D GroupNormalization GRU GRUCell InputLayer Lambda
    LayerNormalization LeakyReLU LSTM LSTMCell MaxPooling1D MaxPooling2D MaxPooling3D Maximum
    Minimum Multiply Permute PReLU ReLU RepeatVector Rescaling Reshape
    SeparableConv1D SeparableConv2D SimpleRNN SimpleRNNCell Softmax SpatialDropout1D SpatialDropout2D
    SpatialDropout3D Subtract UpSampling1D UpSampling2D UpSampling3D
    UnitNormalization ZeroPadding1D ZeroPadding2D ZeroPadding3D
    Identity RMSNormalization SpectralNormalization CenterCrop Normalization RandomBrightness
    RandomContrast RandomCrop RandomFlip RandomRotation RandomTranslation RandomZoom Resizing
    """.split()
)
GPULAYERS_MODULE = "gpulayers.layers"
GPULAYERS_PACKAGE = "gpulayers"

_BUILTIN = {}  # class name (and Keras aliases) -> gpulayers class
_WRITTEN = {}  # gpulayers class -> (module, registered_name) as written in configs
_BASE = []  # the class every deserialized layer must have (gpulayers.layers.Layer, registered by layers)


def register_base(cls):
    """The base class a user's class named in a config must derive from."""
    _BASE[:] = [cls]


def register_builtin(name, cls, module=None, registered_name=None):
    """Make gpulayers' class ``cls`` buildable from configs naming ``name`` (a class name or alias).

    ``module``/``registered_name``: what configs of ``cls`` say (default: Keras's ``keras.layers``
    for Keras's layer names, else gpulayers' own module and ``gpulayers>Name``).
    """
    _BUILTIN[name] = cls
    if cls not in _WRITTEN or name == cls.__name__:
        if module is None:
            if cls.__name__ in KERAS_LAYER_NAMES:
                module, registered_name = "keras.layers", None
            else:
                module, registered_name = GPULAYERS_MODULE, f"{GPULAYERS_PACKAGE}>{cls.__name__}"
        _WRITTEN[cls] = (module, registered_name)


_OPERATIONS = {}  # "Add" -> the op class of ops.add (named apart from the Add layer by its module)


def register_operation(cls):
    """Make an op of ``gpulayers.ops`` (an Operation class, with ``keras_module``) buildable from configs."""
    _OPERATIONS[cls.__name__] = cls
    _WRITTEN[cls] = (cls.keras_module, None)


def _is_op_module(module):
    return isinstance(module, str) and module.startswith(("keras.src.ops.", "keras.ops", "gpulayers.ops"))


def is_operation_entry(config):
    """Whether a serialized entry names an op of ``gpulayers.ops`` (not a layer)."""
    return _is_op_module(config.get("module")) and config.get("class_name") in _OPERATIONS


def builtin_classes():
    """``{name: class}`` of every gpulayers class a config may name."""
    return dict(_BUILTIN)


def _user_class(cls):
    """The user's class behind ``cls`` (a functional subclass is the user's class combined with Functional)."""
    return getattr(cls, "_functional_of", None) or cls


def keras_entry(obj):
    """``(module, class_name, registered_name)`` as Keras writes them for ``obj``'s class."""
    cls = type(obj)
    if cls in _WRITTEN:
        module, registered = _WRITTEN[cls]
        return module, cls.__name__, registered
    cls = _user_class(cls)
    return cls.__module__, cls.__name__, object_registration.get_registered_name(cls)


def serialize(layer):
    """Keras 3's dict form of a layer or model: module, class_name, config, registered_name."""
    module, class_name, registered = keras_entry(layer)
    return {"module": module, "class_name": class_name, "config": layer.get_config(), "registered_name": registered}


def _ours(module):
    return module is None or (isinstance(module, str) and module.split(".", 1)[0] in ("keras", GPULAYERS_PACKAGE))


def _class_for(config, custom_objects, base):
    name, module = config["class_name"], config.get("module")
    custom = object_registration.resolve(config, custom_objects)
    if custom is not None:
        if not (isinstance(custom, type) and issubclass(custom, base)):
            raise ValueError(f"The custom object for {name!r} is not a Layer subclass. Received: {custom!r:.80}")
        return custom
    if _is_op_module(module) and name in _OPERATIONS:
        return _OPERATIONS[name]
    if _ours(module) and isinstance(name, str) and name in _BUILTIN:
        return _BUILTIN[name]
    raise ValueError(
        f"Unknown layer class {name!r} (module {module!r}): gpulayers builds its own layers and models "
        f"({', '.join(sorted(_BUILTIN))}), and the classes the program makes known: pass "
        "`custom_objects={'Name': cls}` or decorate the class with "
        "`gpulayers.saving.register_keras_serializable()`. No module named in a config is ever imported."
    )


def deserialize(config, custom_objects=None):
    """Build a layer or model from ``{"class_name": ..., "config": {...}}`` (Keras's form).

    gpulayers' own classes are built for Keras's and gpulayers' modules; a
    user's class when the program made it known (``custom_objects``,
    ``custom_object_scope``, ``register_keras_serializable``), with its
    ``from_config``. Anything else is refused. An entry's ``build_config``
    builds what its config alone leaves unbuilt (a Sequential saved built
    by a call, a subclassed model), through ``build_from_config``.
    """
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"Invalid layer config: expected a dict with 'class_name'. Received: {config!r:.200}")
    cls = _class_for(config, custom_objects, _BASE[0] if _BASE else object)
    inner = config.get("config", {})
    if not isinstance(inner, dict):
        raise ValueError(f"Invalid config for layer class {config['class_name']!r}: expected a dict. Received: {inner!r:.200}")
    with object_registration.custom_object_scope(object_registration.check_custom_objects(custom_objects)):
        layer = cls.from_config(dict(inner))
    build_config = config.get("build_config")
    if not getattr(layer, "built", True) and isinstance(build_config, dict) and hasattr(layer, "build_from_config"):
        layer.build_from_config(build_config)
    return layer
