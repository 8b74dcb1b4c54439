"""Saving and loading models and weights in Keras 3's file formats (``keras.saving``).

- ``.keras`` (:func:`save_model`, :func:`load_model`): a zip of
  ``metadata.json``, ``config.json`` (the model in Keras's schema:
  Sequential, Functional with its ``inbound_nodes``, or a user's registered
  model class; and its ``compile_config``) and ``model.weights.h5``.
- ``.weights.h5`` (:func:`save_weights`, :func:`load_weights`): the
  weights (and a compiled model's optimizer state) alone.

The modules: ``archive`` (the zip, its members read within bounds, metadata),
``atomic_files`` (atomic writes), ``serialization_lib`` (Keras's
``serialize_keras_object`` / ``deserialize_keras_object`` for every family), ``config_checks``
(the config validated before anything is built), ``weights_file`` (the HDF5
layout, read all or nothing), ``saving_lib`` (the four functions). Loading
never runs code from a file: no pickle, no eval, no import of a module a
file names; only gpulayers' own classes and those the program made known
(:mod:`gpulayers.object_registration`, re-exported here as in Keras) are built.
"""

from gpulayers.object_registration import (
    CustomObjectScope,
    custom_object_scope,
    get_custom_objects,
    get_registered_name,
    get_registered_object,
    register_keras_serializable,
)
from gpulayers.saving.archive import KERAS_VERSION
from gpulayers.saving.saving_lib import load_model, load_weights, save_model, save_weights
from gpulayers.saving.serialization_lib import deserialize_keras_object, serialize_keras_object

__all__ = [
    "KERAS_VERSION",
    "CustomObjectScope",
    "custom_object_scope",
    "deserialize_keras_object",
    "get_custom_objects",
    "get_registered_name",
    "get_registered_object",
    "load_model",
    "load_weights",
    "register_keras_serializable",
    "save_model",
    "save_weights",
    "serialize_keras_object",
]
