"""The layers of gpulayers, with Keras 3's names and arguments."""

from gpulayers.layers.base import InputSpec, Layer, Variable
from gpulayers.layers.convolutional import Conv2D, Convolution2D
from gpulayers.layers.core import Activation, Dense, Input, InputLayer, KerasTensor
from gpulayers.layers.normalization import BatchNormalization
from gpulayers.layers.pooling import (
    AveragePooling2D,
    AvgPool2D,
    GlobalAveragePooling2D,
    GlobalAvgPool2D,
    GlobalMaxPool2D,
    GlobalMaxPooling2D,
    MaxPool2D,
    MaxPooling2D,
    StochasticPooling2D,
)
from gpulayers.layers.regularization import Dropout
from gpulayers.layers.reshaping import Flatten

__all__ = [
    "Activation",
    "AveragePooling2D",
    "AvgPool2D",
    "BatchNormalization",
    "Conv2D",
    "Convolution2D",
    "Dense",
    "Dropout",
    "Flatten",
    "GlobalAveragePooling2D",
    "GlobalAvgPool2D",
    "GlobalMaxPool2D",
    "GlobalMaxPooling2D",
    "Input",
    "InputLayer",
    "InputSpec",
    "KerasTensor",
    "Layer",
    "MaxPool2D",
    "MaxPooling2D",
    "StochasticPooling2D",
    "Variable",
]

# The classes gpulayers knows by name: the only ones a config may instantiate.
LAYER_CLASSES = {
    cls.__name__: cls
    for cls in (
        Activation,
        AveragePooling2D,
        BatchNormalization,
        Conv2D,
        Dense,
        Dropout,
        Flatten,
        GlobalAveragePooling2D,
        GlobalMaxPooling2D,
        InputLayer,
        MaxPooling2D,
        StochasticPooling2D,
    )
}
LAYER_CLASSES.update(
    MaxPool2D=MaxPooling2D,
    AvgPool2D=AveragePooling2D,
    GlobalAvgPool2D=GlobalAveragePooling2D,
    GlobalMaxPool2D=GlobalMaxPooling2D,
    Convolution2D=Conv2D,
)


def deserialize(config):
    """Build a layer, or a Sequential, from ``{"class_name": ..., "config": {...}}`` (Keras's form).

    Only gpulayers' own layer classes (``LAYER_CLASSES``) and ``Sequential``
    can be built; anything else is refused. A Sequential is built with
    ``Sequential.from_config`` (its layers through this function); when its
    config has no ``build_input_shape``, the entry's ``build_config``
    ``input_shape`` (which Keras writes for a model built by a call) builds it.
    """
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"Invalid layer config: expected a dict with 'class_name'. Received: {config!r:.200}")
    name = config["class_name"]
    if name == "Sequential":
        from gpulayers.models.sequential import Sequential  # here: gpulayers.models imports this package

        cls = Sequential
    else:
        cls = LAYER_CLASSES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(
            f"Unknown layer class {name!r}: gpulayers builds only its own layers "
            f"({', '.join(sorted(LAYER_CLASSES))}) and Sequential."
        )
    inner = config.get("config", {})
    if not isinstance(inner, dict):
        raise ValueError(f"Invalid config for layer class {name!r}: expected a dict. Received: {inner!r:.200}")
    layer = cls.from_config(dict(inner))
    if name == "Sequential" and not layer.built and layer.layers:
        build_config = config.get("build_config")
        shape = build_config.get("input_shape") if isinstance(build_config, dict) else None
        if shape is not None:
            layer.build(tuple(shape))
    return layer


def serialize(layer):
    """Keras 3's dict form of a layer: module, class_name, config, registered_name."""
    return {
        "module": "keras.layers",
        "class_name": type(layer).__name__,
        "config": layer.get_config(),
        "registered_name": None,
    }
