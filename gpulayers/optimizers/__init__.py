"""Optimizers with Keras 3's classes, update rules, defaults and configs.

``SGD``, ``Adam``, ``AdamW``, ``RMSprop``, ``Adagrad`` (``algorithms``) and
``Nadam``, ``Adamax``, ``Adadelta``, ``Lion``, ``Ftrl`` (``algorithms_adaptive``) update
:class:`~gpulayers.variables.Variable` objects by replacing their
``value``, on whichever array module (NumPy or CuPy) holds each variable;
``schedules`` holds the learning-rate schedules. See
:mod:`gpulayers.optimizers.base` for the order of one step (clipping,
weight decay, update, ``iterations += 1``, constraints).

Example:
    >>> from gpulayers import optimizers
    >>> opt = optimizers.get("adam")                 # Adam(learning_rate=0.001)
    >>> with gpulayers.GradientTape() as tape:
    ...     loss = ...
    >>> opt.apply(tape.gradient(loss, weights), weights)
    >>> optimizers.serialize(opt)["class_name"]
    'Adam'
"""

from gpulayers.optimizers import schedules
from gpulayers.optimizers.algorithms import SGD, Adagrad, Adam, AdamW, RMSprop
from gpulayers.optimizers.algorithms_adaptive import Adadelta, Adamax, Ftrl, Lion, Nadam
from gpulayers.optimizers.base import Optimizer
from gpulayers.optimizers.loss_scale import LossScaleOptimizer
from gpulayers.registry import Registry

__all__ = ["SGD", "Adadelta", "Adagrad", "Adam", "AdamW", "Adamax", "Ftrl", "Lion", "LossScaleOptimizer", "Nadam",
           "Optimizer", "RMSprop", "deserialize", "get", "schedules", "serialize"]

KERAS_MODULE = "keras.optimizers"
_CLASSES = (SGD, Adam, AdamW, RMSprop, Adagrad, Nadam, Adamax, Adadelta, Lion, Ftrl, LossScaleOptimizer)
# Keras 3 looks names up case-insensitively: the lower-cased class name.
_BY_NAME = {cls.__name__.lower(): cls for cls in _CLASSES}
# Keras 3 optimizers that gpulayers does not provide (named in the error message).
_NOT_PROVIDED = ("adafactor", "lamb", "muon", "schedulefreeadamw")


_REGISTRY = Registry("optimizer", KERAS_MODULE, _BY_NAME, _CLASSES, Optimizer, any_case=True,
                     not_provided=_NOT_PROVIDED)


def serialize(optimizer):
    """Keras 3's dict: ``{"module": "keras.optimizers", "class_name", "config", "registered_name": None}``.

    Example:
        >>> serialize(SGD())["config"]["momentum"]
        0.0
    """
    if not isinstance(optimizer, Optimizer):
        raise TypeError(
            f"Invalid type for `optimizer`: expected an Optimizer. Received: optimizer={optimizer!r} "
            f"of type {type(optimizer).__name__}"
        )
    return _REGISTRY.serialize(optimizer)


def deserialize(config, argument="optimizer"):
    """Build a built-in optimizer from a Keras 3 config dict (or a name).

    ``class_name`` is matched case-insensitively, as in Keras. Only this
    module's classes are instantiated; nothing named in a config is imported.
    Errors are ValueErrors naming ``argument``.
    """
    return _REGISTRY.deserialize(config, argument)


def get(identifier, argument="optimizer"):
    """Resolve an optimizer identifier, as ``keras.optimizers.get``.

    Args:
        identifier: None (returns None), a name (``"adam"``, ``"Adam"``,
            ``"RMSprop"``...: the class name in any case, with default
            arguments), a Keras 3 config dict, or an Optimizer instance
            (returned as it is).
        argument: the caller's argument name, used in error messages.

    Example:
        >>> get("SGD").get_config()["learning_rate"]
        0.01
    """
    if identifier is None:
        return None
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, (str, dict)):
        return deserialize(identifier, argument)
    raise ValueError(
        f"Invalid value for `{argument}`: could not interpret optimizer identifier; expected None, a name, "
        f"a config dict or an Optimizer instance. Received: {argument}={identifier!r} of type "
        f"{type(identifier).__name__}"
    )
