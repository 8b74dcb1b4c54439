"""``save_model`` / ``load_model`` (the ``.keras`` file) and ``save_weights`` / ``load_weights``.

Two formats, both those of Keras 3 (the layout was checked against files
that Keras 3.15 wrote):

- ``.keras``: a zip archive (members stored, not compressed) holding
  ``metadata.json`` (``keras_version``, ``date_saved``), ``config.json`` (the
  model serialized as Keras does: ``{"module": "keras", "class_name":
  "Sequential", "config": {...}, "registered_name": null, "build_config":
  ..., "compile_config": ...}``) and ``model.weights.h5``.
- ``.weights.h5``: the HDF5 weights file alone.

The HDF5 layout is Keras's: a ``vars`` group at the top for the model's own
(absent) variables, then ``layers/<name>/vars/<i>`` for every layer, where
``<name>`` is the layer's class name in snake_case, with ``_1``, ``_2``...
for the second, third... layer of that class in the same model, and ``<i>``
counts the layer's weights in ``get_weights`` order (trainable ones first; a
BatchNormalization gives gamma, beta, moving_mean, moving_variance). Layers
without weights get an empty ``vars`` group; every ``vars`` group carries the
layer's name as its ``name`` attribute. A nested Sequential is a container:
``layers/sequential/vars`` and ``layers/sequential/layers/...``. A user's
layer that holds layers keeps its own weights in its ``vars`` group and each
sublayer in a group named by the attribute holding it (``layers/block/
inner/vars``; the layers of a list attribute in ``layers/block/heads/dense``,
``.../dense_1``), walked as Keras walks them.

A compiled model is saved as Keras saves one, so training resumes from
the file in gpulayers or in Keras:

- ``config.json`` holds ``"compile_config"`` (``model.get_compile_config()``):
  ``optimizer`` (always the serialized optimizer, module
  ``"keras.optimizers"``, with its ``get_config()``: the learning rate as a
  float or a serialized schedule), ``loss``, ``metrics`` and
  ``weighted_metrics`` (names as given, objects serialized),
  ``loss_weights`` (null), ``run_eagerly``, ``steps_per_execution`` (1) and
  ``jit_compile`` (false unless given as true). An uncompiled model writes
  ``{}``.
- The weights file (inside ``.keras`` and from ``save_weights`` alike)
  gets ``optimizer/vars`` (its ``name`` attribute is the optimizer's name)
  with the datasets of Keras's ``optimizer.variables``: ``0`` iterations (a
  scalar int64, as Keras's TensorFlow backend writes it; its torch and JAX
  backends write int32, read as well), ``1`` the learning rate (a float32
  scalar) only when it is a plain float, then one array per slot and
  trainable weight in Keras's build order: each ``add_optimizer_variables``
  call loops over ``model.trainable_weights`` and, per weight, over its
  slot names. SGD: ``momentum`` (only when momentum != 0); Adam and AdamW:
  ``momentum``, ``velocity`` per weight, then ``velocity_hat`` per weight
  with amsgrad; RMSprop: every ``velocity``, then every ``momentum`` (when
  momentum > 0), then every ``average_gradient`` (centered); Adagrad: every
  ``accumulator``. An optimizer that has not updated yet writes ``0`` and
  ``1`` alone, as Keras's unbuilt optimizer does.

``load_model(path)`` (``compile=True``) compiles a model saved compiled from
its ``compile_config`` and restores the optimizer state, so the next
training step is bit for bit the one the saved model would have taken (the
learning rate comes from ``compile_config``, exact; the float32 copy in
``optimizer/vars/1`` replaces it only where the two differ in float32).
``load_model(path, compile=False)`` reads neither. ``load_weights`` into a
compiled model restores the optimizer state too; an uncompiled model
ignores the ``optimizer`` group. An ``optimizer/vars`` group holding
iterations and learning rate alone restores those and leaves the slots to
start afresh (Keras skips such a group with a warning). A well-formed group
whose count fits neither that nor the optimizer (another optimizer class or
options, other trainable weights) is skipped with a warning, as Keras does:
the weights load and the optimizer keeps its state.

Loading never runs code from a file: no pickle, no eval, no import of a
module named in a file. A model is built only from gpulayers' own layer
classes (``gpulayers.layers.LAYER_CLASSES``), Sequential, and the user's
classes and functions the program itself made known: passed in
``custom_objects``, in force through ``custom_object_scope``, or registered
with ``register_keras_serializable`` (found by ``registered_name``, then
``class_name``). Anything else (an unknown class, a Lambda layer, a
``module`` outside ``keras``/``gpulayers``, an unknown ``registered_name``,
a key starting with ``__``) is refused with ValueError before any layer is
created. The same rules hold for ``compile_config`` (checked before any
layer is created, built only from gpulayers' own optimizers, learning-rate
schedules, losses and metrics and the user's known ones;
Keras's references to its built-in functions by name, ``{"class_name":
"function", "module": "keras.losses", "config": "mse"}``, are looked up by
name, never imported), and a ``compile_config`` with anything else is
refused: ``compile=False`` loads such a model uncompiled. Weights and
optimizer state are checked in full (the set of groups, the count, shape
and dtype of every array: integer iterations >= 0, a finite learning rate
>= 0, float slots of their weight's shape) before the model changes, so a
load either replaces all the weights and the optimizer state or none.

Every save is atomic: the file is written next to the target under a
temporary name, flushed and fsynced, then moved over the target with
``os.replace``; if anything fails the old file stays as it was and the
temporary file is removed.

Not covered: the state of the compiled metrics (Keras does not save it
either), metrics and other non-layer objects held as attributes of a user's
layer, and optimizers outside gpulayers' five. A model compiled with a
user's loss or metric is saved with a warning when the program has not
registered it: it loads compiled with ``custom_objects``, or uncompiled with
``compile=False``.
"""

import datetime
import json
import os
import warnings
import zipfile

import numpy as np

from gpulayers import object_registration, serialization
from gpulayers.layers.weight_allocation import deferred_initialization
from gpulayers.saving.archive import (
    CONFIG, KERAS_VERSION, MAX_JSON_BYTES, METADATA, WEIGHTS, atomic_write, check_metadata, member_size, open_archive,
    open_regular_file, parse_json, read_member, zip_info,
)
from gpulayers.saving.config_checks import check_compile_config, check_model_config
from gpulayers.saving.weights_file import assign, read_weights, weights_to_h5_bytes

__all__ = ["load_model", "load_weights", "save_model", "save_weights"]

def save_model(model, filepath):
    """Save ``model`` as a Keras 3 ``.keras`` file (config, weights, metadata).

    Keras 3 (``keras.saving.load_model``) loads the file when every layer is
    one that Keras has. A model holding a gpulayers-only layer
    (StochasticPooling2D) is written with that layer's ``module`` set to
    ``"gpulayers.layers"`` and ``registered_name`` ``"gpulayers>Name"``:
    gpulayers loads such a file, Keras cannot. A layer of a user's own class
    is written as Keras writes custom objects (its Python module, and
    ``"package>Name"`` when registered): gpulayers and Keras load it when the
    loading program knows the class (``custom_objects`` or registration).
    An unbuilt model is saved with a warning, and without weights.

    Args:
        model: A gpulayers ``Sequential``.
        filepath: Path ending in ``.keras``; an existing file is replaced
            atomically.

    Raises:
        ValueError: ``filepath`` does not end in ``.keras``, or the config
            cannot be written as JSON.
        TypeError: ``model`` is not a Sequential.
    """
    path = _check_path(filepath, (".keras",), "save_model")
    _check_model(model)
    if not model.built:
        warnings.warn(
            f"You are saving model '{model.name}', which has not been built: the file holds no weights. "
            "Build the model first (give it an input shape or call it on data).",
            stacklevel=2,
        )
    config_json = _model_config_json(model, path)
    metadata_json = json.dumps(
        {"keras_version": KERAS_VERSION, "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")}
    )
    weights = weights_to_h5_bytes(model)

    def write(fileobj):
        with zipfile.ZipFile(fileobj, "w", compression=zipfile.ZIP_STORED) as archive:
            for name, data in ((METADATA, metadata_json.encode()), (CONFIG, config_json.encode()), (WEIGHTS, weights)):
                archive.writestr(zip_info(name), data)

    atomic_write(path, write)


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True):
    """Load a model from a ``.keras`` file written by gpulayers or by Keras 3.

    The archive, ``metadata.json`` and the whole of ``config.json`` are
    checked before any layer is built; the model is built only from
    gpulayers' own classes and the user's classes the program made known
    (``custom_objects={"Name": cls}``, ``custom_object_scope``, or
    ``register_keras_serializable``: a file can name them, never a module to
    import), then its weights are checked in full and loaded. The keys Keras
    adds (``build_config``, ``shared_object_id``...) are accepted.
    ``safe_mode`` is Keras's: in safe mode a Lambda saved as Python bytecode
    is refused with Keras's message; out of it, it is refused still
    (gpulayers never runs code from a file), with a message that says how
    to pass the function instead. A Lambda whose function is named (and
    known to the program) loads in both.

    With ``compile=True`` (Keras's default) a model saved compiled comes back
    compiled from its ``compile_config`` (only gpulayers' own optimizers,
    losses and metrics are built) with the optimizer's state (iterations,
    learning rate, slots) from the weights file, so training resumes where
    it stopped: the next step is the one the saved model would have taken.
    With ``compile=False`` the model comes back uncompiled and the
    ``compile_config`` and optimizer state are not read.

    Raises:
        ValueError: The extension is not ``.keras``, or the file is not a
            valid model file (corrupt or truncated archive, bad JSON, a class
            or module that gpulayers does not build, weights or optimizer
            state that do not fit the model...), a FIFO or device, or a load
            that runs out of memory. The message names the file and the
            problem. Before any weight gets memory, the model is built with
            placeholders and refused if it declares more parameters than
            ``model.weights.h5`` can hold (2 bytes each); a compressed member
            may inflate to 16 times its stored size at most, and is read in
            chunks that stop at its declared size; configs nest at most
            ``MAX_CONFIG_DEPTH`` (100) levels and hold at most ``MAX_LAYERS``
            (10 000) layers (``gpulayers.saving.config_checks``).
        IsADirectoryError: The path is a directory.
        FileNotFoundError: There is no such file.
    """
    path = _check_path(filepath, (".keras",), "load_model")
    if not isinstance(safe_mode, bool):
        raise TypeError(f"Invalid type for `safe_mode`: expected a bool. Received: safe_mode={safe_mode!r}")
    with object_registration.custom_object_scope(object_registration.check_custom_objects(custom_objects)), \
            object_registration.safe_mode_scope(safe_mode):
        return _load_model(path, compile)


def _load_model(path, compile):
    """Check the archive and the config, build the model with placeholder weights (no initial values,
    no memory; no more parameters than the weights member can hold), check the weights member against
    it, and only then give the weights their values."""
    try:
        with open_archive(path) as archive:
            metadata = parse_json(read_member(archive, path, METADATA, MAX_JSON_BYTES).getvalue(), path, METADATA)
            check_metadata(metadata, path)
            config = parse_json(read_member(archive, path, CONFIG, MAX_JSON_BYTES).getvalue(), path, CONFIG)
            check_model_config(config, path)
            compile_config = config.get("compile_config") if compile else None
            if compile_config:
                check_compile_config(compile_config, path)
            size = member_size(archive, path, WEIGHTS)
            with deferred_initialization(size // 2, f"its {size}-byte {WEIGHTS}") as deferred:
                model = _build_model(config, path)
            if compile_config:
                _compile_model(model, compile_config, path)
            weights = read_member(archive, path, WEIGHTS)
        label = f"{path} ({WEIGHTS})"
        arrays, state = read_weights(weights, model, label, data_limit=size)
        del weights  # the arrays are read: the file's bytes are not needed while they are assigned
        assign(model, arrays, state, label)
        deferred.initialize_remaining()
    except MemoryError as exc:
        raise ValueError(f"Invalid model file {path}: loading it ran out of memory ({exc}).") from None
    except RecursionError:
        raise ValueError(f"Invalid model file {path}: its model is nested too deeply to be built.") from None
    return model


def save_weights(model, filepath):
    """Save the weights of ``model`` to a Keras 3 ``.weights.h5`` file.

    The layout is Keras's (see the module docstring), so ``keras.Model.
    load_weights`` reads the file into the same architecture built with Keras.
    A compiled model's optimizer state is saved too (the ``optimizer``
    group), as Keras does.

    Raises:
        ValueError: ``filepath`` does not end in ``.weights.h5``.
        TypeError: ``model`` is not a Sequential.
    """
    path = _check_path(filepath, (".weights.h5",), "save_weights")
    _check_model(model)
    data = weights_to_h5_bytes(model)
    atomic_write(path, lambda fileobj: fileobj.write(data))


def load_weights(model, filepath):
    """Load weights into ``model`` from a ``.weights.h5`` or ``.keras`` file.

    Files from gpulayers and from Keras 3 are read alike. Everything is
    checked before any weight changes: the layer groups must be exactly those
    of the model, and every layer must have as many arrays as it has weights,
    each with the weight's shape and a floating dtype (cast to the weight's
    dtype, as Keras does). A compiled model also gets the optimizer state the
    file holds (checked as fully; see the module docstring); an uncompiled
    model ignores it. On any error the model keeps all its weights and its
    optimizer state.

    Raises:
        ValueError: Wrong extension, or a file that is corrupt, truncated or
            does not fit the model (the message names the file and the
            first problem found).
        FileNotFoundError: There is no such file.
    """
    path = _check_path(filepath, (".weights.h5", ".keras"), "load_weights")
    _check_model(model)
    try:
        if path.endswith(".keras"):
            with open_archive(path, required=(WEIGHTS,)) as archive:
                source = read_member(archive, path, WEIGHTS)
            size, label = len(source.getbuffer()), f"{path} ({WEIGHTS})"
        else:
            source, size = open_regular_file(path, "weights file")
            label = path
        with source:
            arrays, state = read_weights(source, model, label, data_limit=size)
        assign(model, arrays, state, label)
    except MemoryError as exc:
        raise ValueError(f"Invalid weights file {path}: loading it ran out of memory ({exc}).") from None


def _check_path(filepath, extensions, function):
    if isinstance(filepath, os.PathLike):
        filepath = os.fspath(filepath)
    if not isinstance(filepath, str):
        raise TypeError(
            f"Invalid type for `filepath` of {function}: expected a str or os.PathLike. "
            f"Received: filepath={filepath!r} of type {type(filepath).__name__}"
        )
    if not filepath.endswith(extensions):
        wanted = " or ".join(f"`{e}`" for e in extensions)
        raise ValueError(f"Invalid `filepath` for {function}: expected a {wanted} extension. Received: filepath={filepath}")
    return filepath


def _check_model(model):
    from gpulayers.models import Model

    if not isinstance(model, Model):
        raise TypeError(
            f"Invalid type for `model`: expected a gpulayers Model (Sequential, functional or subclassed). "
            f"Received: {model!r:.80} of type {type(model).__name__}"
        )


def _model_config_json(model, path):
    """The model's entry in Keras's form, with its ``build_config`` and ``compile_config``."""
    from gpulayers.models import Functional, Sequential

    entry = serialization.serialize(model)
    if isinstance(model, Functional):
        entry["build_config"] = {"input_shape": None}  # as Keras writes it: the graph builds every layer
    elif isinstance(model, Sequential):
        if model.built:
            entry["build_config"] = {"input_shape": list(model.input_shape)}
    else:
        build = model.get_build_config()
        if build is not None:
            entry["build_config"] = build
    entry["compile_config"] = model.get_compile_config()  # {} when uncompiled, as Keras writes it
    try:
        text = json.dumps(entry, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"The config of model '{model.name}' cannot be written as JSON: {exc}") from None
    _warn_if_not_compilable(model, json.loads(text)["compile_config"], path)
    return text


def _warn_if_not_compilable(model, compile_config, path):
    """A user's loss, metric, optimizer or learning-rate function is saved, but load_model will refuse it."""
    if not compile_config:
        return
    try:
        check_compile_config(compile_config, path)
    except ValueError as exc:
        warnings.warn(
            f"Model '{model.name}' is saved with its compile config, but gpulayers' load_model will compile "
            "from it only when the user's objects it names are known (`custom_objects`, or "
            f"`register_keras_serializable`). {exc} Otherwise load the file with load_model(path, compile=False) "
            "and compile the model again.",
            stacklevel=4,
        )


def _json_default(value):
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{value!r:.80} of type {type(value).__name__} is not JSON serializable")


def _build_model(config, path):
    """The checked config, without Keras's ``shared_object_id`` keys, built by ``layers.deserialize``.

    The layer classes take every argument Keras 3 writes (``renorm``,
    ``quantization_config``, ``input_axes``...) and refuse, with ValueError,
    the values they cannot honour.
    """
    try:
        return serialization.deserialize(_strip_shared_ids(config))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Invalid model file {path}: the model cannot be built from {CONFIG}: {exc}") from None


def _compile_model(model, compile_config, path):
    try:
        model.compile_from_config(compile_config)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"Invalid model file {path}: the model cannot be compiled from the compile_config in {CONFIG}: {exc} "
            "(load_model(path, compile=False) loads the model without compiling it)."
        ) from None


def _strip_shared_ids(value):
    if isinstance(value, dict):
        return {k: _strip_shared_ids(v) for k, v in value.items() if k != "shared_object_id"}
    if isinstance(value, list):
        return [_strip_shared_ids(v) for v in value]
    return value
