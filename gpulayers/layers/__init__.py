"""The layers of gpulayers, with Keras 3's names and arguments."""

from gpulayers.layers.base import Layer, Variable
from gpulayers.layers.input_spec import InputSpec
from gpulayers.layers.convolutional import (
    Conv1D,
    Conv2D,
    Conv2DTranspose,
    Convolution1D,
    Convolution2D,
    Convolution2DTranspose,
)
from gpulayers.layers.core import Activation, Dense, Embedding
from gpulayers.layers.input_layer import Input, InputLayer
from gpulayers.layers.lambda_layer import Lambda
from gpulayers.layers.merging import (
    Add,
    Average,
    Concatenate,
    Dot,
    Maximum,
    Minimum,
    Multiply,
    Subtract,
    add,
    average,
    concatenate,
    dot,
    maximum,
    minimum,
    multiply,
    subtract,
)
from gpulayers.layers.normalization import BatchNormalization
from gpulayers.layers.pooling import (
    AveragePooling1D,
    AveragePooling2D,
    AvgPool1D,
    AvgPool2D,
    GlobalAveragePooling1D,
    GlobalAveragePooling2D,
    GlobalAvgPool1D,
    GlobalAvgPool2D,
    GlobalMaxPool1D,
    GlobalMaxPool2D,
    GlobalMaxPooling1D,
    GlobalMaxPooling2D,
    MaxPool1D,
    MaxPool2D,
    MaxPooling1D,
    MaxPooling2D,
    StochasticPooling2D,
)
from gpulayers.layers.regularization import Dropout
from gpulayers.layers.rnn import LSTM, LSTMCell
from gpulayers.layers.reshaping import (
    Cropping2D,
    Flatten,
    Permute,
    RepeatVector,
    Reshape,
    UpSampling2D,
    ZeroPadding2D,
)

__all__ = [
    "Activation",
    "Add",
    "Average",
    "AveragePooling1D",
    "AveragePooling2D",
    "AvgPool1D",
    "AvgPool2D",
    "BatchNormalization",
    "Concatenate",
    "Conv1D",
    "Conv2D",
    "Conv2DTranspose",
    "Convolution1D",
    "Convolution2D",
    "Convolution2DTranspose",
    "Cropping2D",
    "Dense",
    "Dot",
    "Dropout",
    "Embedding",
    "Flatten",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalAvgPool1D",
    "GlobalAvgPool2D",
    "GlobalMaxPool1D",
    "GlobalMaxPool2D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "Input",
    "InputLayer",
    "InputSpec",
    "LSTM",
    "LSTMCell",
    "Lambda",
    "Layer",
    "MaxPool1D",
    "MaxPool2D",
    "MaxPooling1D",
    "MaxPooling2D",
    "Maximum",
    "Minimum",
    "Multiply",
    "Permute",
    "RepeatVector",
    "Reshape",
    "StochasticPooling2D",
    "Subtract",
    "UpSampling2D",
    "Variable",
    "ZeroPadding2D",
    "add",
    "average",
    "concatenate",
    "dot",
    "maximum",
    "minimum",
    "multiply",
    "subtract",
]

# The classes gpulayers knows by name: the only ones a config may instantiate.
LAYER_CLASSES = {
    cls.__name__: cls
    for cls in (
        Activation,
        Add,
        Average,
        AveragePooling1D,
        AveragePooling2D,
        BatchNormalization,
        Concatenate,
        Conv1D,
        Conv2D,
        Conv2DTranspose,
        Cropping2D,
        Dense,
        Dot,
        Dropout,
        Embedding,
        Flatten,
        GlobalAveragePooling1D,
        GlobalAveragePooling2D,
        GlobalMaxPooling1D,
        GlobalMaxPooling2D,
        InputLayer,
        LSTM,
        LSTMCell,
        Lambda,
        Maximum,
        MaxPooling1D,
        MaxPooling2D,
        Minimum,
        Multiply,
        Permute,
        RepeatVector,
        Reshape,
        StochasticPooling2D,
        Subtract,
        UpSampling2D,
        ZeroPadding2D,
    )
}
LAYER_CLASSES.update(
    MaxPool1D=MaxPooling1D,
    AvgPool1D=AveragePooling1D,
    GlobalAvgPool1D=GlobalAveragePooling1D,
    GlobalMaxPool1D=GlobalMaxPooling1D,
    Convolution1D=Conv1D,
    MaxPool2D=MaxPooling2D,
    AvgPool2D=AveragePooling2D,
    GlobalAvgPool2D=GlobalAveragePooling2D,
    GlobalMaxPool2D=GlobalMaxPooling2D,
    Convolution2D=Conv2D,
    Convolution2DTranspose=Conv2DTranspose,
)


def _layer_class(config, custom_objects):
    """The class a layer entry names: an object the program made known (``custom_objects``, a scope,
    the registry; first, as in Keras), else gpulayers' own class for Keras's or gpulayers' module."""
    from gpulayers import object_registration
    from gpulayers.models.sequential import Sequential  # here: gpulayers.models imports this package

    name, module = config["class_name"], config.get("module")
    custom = object_registration.resolve(config, custom_objects)
    if custom is not None:
        if not (isinstance(custom, type) and issubclass(custom, Layer)):
            raise ValueError(f"The custom object for {name!r} is not a Layer subclass. Received: {custom!r:.80}")
        return custom
    ours = module is None or (isinstance(module, str) and module.split(".", 1)[0] in ("keras", "gpulayers"))
    if ours and name == "Sequential":
        return Sequential
    if ours and isinstance(name, str) and name in LAYER_CLASSES:
        return LAYER_CLASSES[name]
    raise ValueError(
        f"Unknown layer class {name!r} (module {module!r}): gpulayers builds its own layers "
        f"({', '.join(sorted(LAYER_CLASSES))}), Sequential, and the classes the program makes known: pass "
        "`custom_objects={'Name': cls}` or decorate the class with "
        "`gpulayers.saving.register_keras_serializable()`. No module named in a config is ever imported."
    )


def deserialize(config, custom_objects=None):
    """Build a layer, or a Sequential, from ``{"class_name": ..., "config": {...}}`` (Keras's form).

    gpulayers' own layer classes (``LAYER_CLASSES``) and ``Sequential`` are
    built for Keras's and gpulayers' modules; a user's class is built when
    the program made it known (``custom_objects``, ``custom_object_scope``,
    ``register_keras_serializable``), with its ``from_config``. Anything
    else is refused. A Sequential whose config has no ``build_input_shape``
    is built from the entry's ``build_config`` ``input_shape`` (which Keras
    writes for a model built by a call).
    """
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"Invalid layer config: expected a dict with 'class_name'. Received: {config!r:.200}")
    cls = _layer_class(config, custom_objects)
    inner = config.get("config", {})
    if not isinstance(inner, dict):
        raise ValueError(f"Invalid config for layer class {config['class_name']!r}: expected a dict. Received: {inner!r:.200}")
    from gpulayers import object_registration
    from gpulayers.models.sequential import Sequential

    with object_registration.custom_object_scope(object_registration.check_custom_objects(custom_objects)):
        layer = cls.from_config(dict(inner))
    if isinstance(layer, Sequential) and not layer.built and layer.layers:
        build_config = config.get("build_config")
        shape = build_config.get("input_shape") if isinstance(build_config, dict) else None
        if shape is not None:
            layer.build(tuple(shape))
    return layer


def serialize(layer):
    """Keras 3's dict form of a layer: module, class_name, config, registered_name.

    gpulayers' classes are written as Keras's (module ``keras.layers``); a
    user's class with its own module and registered name (``"package>Name"``
    when registered), as Keras writes custom objects.
    """
    from gpulayers import object_registration

    cls = type(layer)
    if LAYER_CLASSES.get(cls.__name__) is cls or cls.__name__ == "Sequential" and cls.__module__.startswith("gpulayers."):
        module, registered = "keras.layers", None
    else:
        module, registered = cls.__module__, object_registration.get_registered_name(cls)
    return {"module": module, "class_name": cls.__name__, "config": layer.get_config(), "registered_name": registered}
