"""Saving and loading models and weights in Keras 3's file formats.

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
import io
import json
import os
import stat
import tempfile
import warnings
import zipfile

import numpy as np

from gpulayers import layers as layers_module
from gpulayers import object_registration, utils
from gpulayers.object_registration import (  # noqa: F401 (Keras's names: gpulayers.saving.register_keras_serializable)
    CustomObjectScope,
    custom_object_scope,
    get_custom_objects,
    get_registered_name,
    get_registered_object,
    register_keras_serializable,
)

__all__ = sorted(object_registration.__all__ + ["load_model", "load_weights", "save_model", "save_weights"])

# The Keras release written to metadata.json (Keras does not check it; the
# layout written here is that of the files Keras 3.15 writes).
KERAS_VERSION = "3.15.0"

_CONFIG = "config.json"
_METADATA = "metadata.json"
_WEIGHTS = "model.weights.h5"
_MAX_JSON_BYTES = 64 * 1024 * 1024  # config.json and metadata.json
_WEIGHTS_SLACK_BYTES = 64 * 1024 * 1024  # HDF5 overhead allowed above the arrays' size

# Layer classes that keras.layers has: written with module "keras.layers".
# A gpulayers class outside this set (StochasticPooling2D) is written with
# module "gpulayers.layers" and registered_name "gpulayers>Name".
_KERAS_LAYER_NAMES = frozenset(
    """
    Activation ActivityRegularization Add AlphaDropout Average AveragePooling1D
    AveragePooling2D AveragePooling3D BatchNormalization Concatenate Conv1D
    Conv1DTranspose Conv2D Conv2DTranspose Conv3D Conv3DTranspose Cropping1D
    Cropping2D Cropping3D Dense DepthwiseConv1D DepthwiseConv2D Dot Dropout ELU
    Embedding Flatten GaussianDropout GaussianNoise GlobalAveragePooling1D
    GlobalAveragePooling2D GlobalAveragePooling3D GlobalMaxPooling1D
    GlobalMaxPooling2D GlobalMaxPooling3D GroupNormalization InputLayer
    LayerNormalization LeakyReLU MaxPooling1D MaxPooling2D MaxPooling3D Maximum
    Minimum Multiply Permute PReLU ReLU RepeatVector Rescaling Reshape
    SeparableConv1D SeparableConv2D Softmax SpatialDropout1D SpatialDropout2D
    SpatialDropout3D Subtract UpSampling1D UpSampling2D UpSampling3D
    UnitNormalization ZeroPadding1D ZeroPadding2D ZeroPadding3D
    """.split()
)
_GPULAYERS_MODULE = "gpulayers.layers"
_GPULAYERS_PACKAGE = "gpulayers"

# Classes that carry Python code in Keras files: never loaded.
_CODE_CLASSES = frozenset({"Lambda", "TFOpLambda", "SlicingOpLambda", "__lambda__", "function"})

# At most three state arrays per trainable weight (Adam with amsgrad, centered RMSprop with momentum).
_MAX_SLOTS = 3


# ====================================================================== public API


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
    weights = _weights_to_h5_bytes(model)

    def write(fileobj):
        with zipfile.ZipFile(fileobj, "w", compression=zipfile.ZIP_STORED) as archive:
            for name, data in ((_METADATA, metadata_json.encode()), (_CONFIG, config_json.encode()), (_WEIGHTS, weights)):
                archive.writestr(_zip_info(name), data)

    _atomic_write(path, write)


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True):
    """Load a model from a ``.keras`` file written by gpulayers or by Keras 3.

    The archive, ``metadata.json`` and the whole of ``config.json`` are
    checked before any layer is built; the model is built only from
    gpulayers' own classes and the user's classes the program made known
    (``custom_objects={"Name": cls}``, ``custom_object_scope``, or
    ``register_keras_serializable``: a file can name them, never a module to
    import), then its weights are checked in full and loaded. The keys Keras
    adds (``build_config``, ``shared_object_id``...) are accepted.
    ``safe_mode`` is accepted for Keras compatibility: gpulayers never loads
    code from a file (no lambda), whatever its value.

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
            state that do not fit the model...). The message names the file
            and the problem.
        FileNotFoundError: There is no such file.
    """
    path = _check_path(filepath, (".keras",), "load_model")
    if not isinstance(safe_mode, bool):
        raise TypeError(f"Invalid type for `safe_mode`: expected a bool. Received: safe_mode={safe_mode!r}")
    with object_registration.custom_object_scope(object_registration.check_custom_objects(custom_objects)):
        return _load_model(path, compile)


def _load_model(path, compile):
    with _open_archive(path) as archive:
        metadata = _parse_json(_read_member(archive, path, _METADATA, _MAX_JSON_BYTES), path, _METADATA)
        _check_metadata(metadata, path)
        config = _parse_json(_read_member(archive, path, _CONFIG, _MAX_JSON_BYTES), path, _CONFIG)
        _check_model_config(config, path)
        compile_config = config.get("compile_config") if compile else None
        if compile_config:
            _check_compile_config(compile_config, path)
        model = _build_model(config, path)
        if compile_config:
            _compile_model(model, compile_config, path)
        weights = _read_member(archive, path, _WEIGHTS, _weights_size_limit(model))
    label = f"{path} ({_WEIGHTS})"
    _assign(model, *_read_weights(io.BytesIO(weights), model, label), label)
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
    data = _weights_to_h5_bytes(model)
    _atomic_write(path, lambda fileobj: fileobj.write(data))


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
    if path.endswith(".keras"):
        with _open_archive(path, required=(_WEIGHTS,)) as archive:
            source = io.BytesIO(_read_member(archive, path, _WEIGHTS, _weights_size_limit(model)))
        label = f"{path} ({_WEIGHTS})"
    else:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No such weights file: {path}")
        source = label = path
    _assign(model, *_read_weights(source, model, label), label)


# ====================================================================== checks on arguments


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


def _sequential_class():
    from gpulayers.models.sequential import Sequential  # here: gpulayers.models imports this module

    return Sequential


def _check_model(model):
    if not isinstance(model, _sequential_class()):
        raise TypeError(
            f"Invalid type for `model`: expected a gpulayers Sequential. Received: {model!r:.80} "
            f"of type {type(model).__name__}"
        )


def _h5py():
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is a dependency
        raise ImportError("h5py is needed to save and load weights: pip install h5py") from None
    return h5py


# ====================================================================== writing


def _model_config_json(model, path):
    cls = type(model)
    ours = cls is _sequential_class()
    entry = {
        "module": "keras" if ours else cls.__module__,
        "class_name": cls.__name__,
        "config": _container_config(model),
        "registered_name": None if ours else object_registration.get_registered_name(cls),
    }
    if model.built:
        entry["build_config"] = {"input_shape": list(model.input_shape)}
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
        _check_compile_config(compile_config, path)
    except ValueError as exc:
        warnings.warn(
            f"Model '{model.name}' is saved with its compile config, but gpulayers' load_model will compile "
            "from it only when the user's objects it names are known (`custom_objects`, or "
            f"`register_keras_serializable`). {exc} Otherwise load the file with load_model(path, compile=False) "
            "and compile the model again.",
            stacklevel=4,
        )


def _container_config(model):
    """``model.get_config()`` with every layer entry in Keras's form (module, nesting)."""
    config = model.get_config()
    Sequential = _sequential_class()
    layer_objects = list(getattr(model, "_layers", model.layers))
    entries = config.get("layers", [])
    if len(entries) == len(layer_objects):
        pairs = zip(entries, layer_objects)
    else:  # defensive: match by name when the lists differ
        by_name = {layer.name: layer for layer in layer_objects}
        pairs = ((e, by_name.get(e.get("config", {}).get("name"))) for e in entries)
    fixed = []
    for entry, layer in pairs:
        entry = dict(entry)
        cls = type(layer)
        name = cls.__name__
        if isinstance(layer, Sequential):
            entry["config"] = _container_config(layer)
        if cls is Sequential:
            entry["module"], entry["registered_name"] = "keras", None
        elif layers_module.LAYER_CLASSES.get(name) is cls and name in _KERAS_LAYER_NAMES:
            entry["module"], entry["registered_name"] = "keras.layers", None
        elif layers_module.LAYER_CLASSES.get(name) is cls:
            entry["module"], entry["registered_name"] = _GPULAYERS_MODULE, f"{_GPULAYERS_PACKAGE}>{name}"
        elif layer is not None:  # a user's class: written as Keras writes custom objects
            entry["module"], entry["registered_name"] = cls.__module__, object_registration.get_registered_name(cls)
        fixed.append(entry)
    config["layers"] = fixed
    return config


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


def _layer_group_names(layers):
    """Keras's group name for each layer: snake_case class name, then _1, _2... per class."""
    used = {}
    return [_unique(utils.to_snake_case(type(layer).__name__), used) for layer in layers]


def _weights_to_h5_bytes(model):
    h5py = _h5py()
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        _write_container(h5, "", model, set())
        if _compiled_optimizer(model) is not None:
            _write_optimizer(h5, model)
    return buffer.getvalue()


def _compiled_optimizer(model):
    return model.optimizer if getattr(model, "_compiled", False) else None


def _write_optimizer(h5, model):
    """Keras's ``optimizer/vars``: iterations, the float learning rate (if any), then the slots in Keras's order."""
    optimizer = model.optimizer
    state = optimizer.export_state(model.trainable_weights)
    group = h5.create_group("optimizer/vars")
    group.attrs["name"] = optimizer.name
    # int64, as Keras's TensorFlow backend writes it (its torch and JAX backends write int32;
    # Keras and gpulayers read either): a long run cannot overflow it.
    values = [np.array(state["iterations"], dtype=np.int64)]
    if state["learning_rate"] is not None:
        values.append(_learning_rate_array(state["learning_rate"]))
    values.extend(state["slots"])
    for i, value in enumerate(values):
        group.create_dataset(str(i), data=np.asarray(value, order="C"))  # not ascontiguousarray: it makes scalars 1-d


def _learning_rate_array(lr):
    """float32, Keras's dtype for the learning-rate variable; float64 for a rate float32 cannot hold."""
    with np.errstate(over="ignore"):
        narrow = np.array(lr, dtype=np.float32)
    return narrow if np.isfinite(narrow) else np.array(lr, dtype=np.float64)


def _write_container(h5, prefix, model, visited):
    own = h5.create_group(_join(prefix, "vars"))
    own.attrs["name"] = model.name
    visited.add(id(model))
    Sequential = _sequential_class()
    for group_name, layer in zip(_layer_group_names(model.layers), model.layers):
        if id(layer) in visited:  # a layer met twice is saved once, as Keras does
            continue
        path = _join(prefix, "layers", group_name)
        if isinstance(layer, Sequential):
            _write_container(h5, path, layer, visited)
            continue
        _write_layer(h5, path, layer, visited)


def _write_layer(h5, path, layer, visited):
    """A layer's own weights in ``path/vars``, then each sublayer in its attribute's group (Keras's layout)."""
    visited.add(id(layer))
    group = h5.create_group(_join(path, "vars"))
    group.attrs["name"] = layer.name
    for i, v in enumerate(_own_variables(layer)):
        group.create_dataset(str(i), data=np.asarray(v.numpy(), order="C"))  # not ascontiguousarray: 0-d stays 0-d
    for child_path, child in _sublayers(layer):
        if id(child) in visited:
            continue
        if isinstance(child, _sequential_class()):
            _write_container(h5, _join(path, child_path), child, visited)
        else:
            _write_layer(h5, _join(path, child_path), child, visited)


def _own_variables(layer):
    """The variables a layer's ``vars`` group holds: its own trainable ones, then its other ones (Keras's
    ``save_own_variables``); a sublayer's are in the sublayer's group."""
    out, seen = [], set()
    for v in layer._trainable_variables + layer._non_trainable_variables:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


_BASE_ATTRIBUTES = None


def _sublayers(layer):
    """``(relative path, sublayer)`` for the layers a user's layer holds, as Keras's saving walks them:
    its attributes (public names first, then private ones, each sorted; what a bare Layer has is
    skipped), a layer under its attribute's name, the layers in a list, tuple or dict attribute under
    ``attr/<class in snake_case>[_1, _2...]``."""
    global _BASE_ATTRIBUTES
    if _BASE_ATTRIBUTES is None:
        _BASE_ATTRIBUTES = frozenset(vars(layers_module.Layer()))
    names = sorted((n for n in vars(layer) if n not in _BASE_ATTRIBUTES), key=lambda n: f"~{n}" if n.startswith("_") else n)
    out = []
    for name in names:
        value = vars(layer)[name]
        if isinstance(value, layers_module.Layer):
            out.append((name, value))
        elif isinstance(value, (list, tuple, dict)):
            out.extend((f"{name}/{sub}", child) for sub, child in _container_items(value))
    return out


def _container_items(container):
    items = list(container.values()) if isinstance(container, dict) else list(container)
    used, out = {}, []
    for item in items:
        if isinstance(item, layers_module.Layer):
            name = _unique(utils.to_snake_case(type(item).__name__), used)
            out.append((name, item))
        elif isinstance(item, (list, tuple, dict)):
            name = _unique("container", used)
            out.extend((f"{name}/{sub}", child) for sub, child in _container_items(item))
    return out


def _unique(name, used):
    if name in used:
        used[name] += 1
        return f"{name}_{used[name]}"
    used[name] = 0
    return name


def _join(*parts):
    return "/".join(p for p in parts if p)


def _zip_info(name):
    info = zipfile.ZipInfo(name, date_time=datetime.datetime.now().timetuple()[:6])
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    return info


def _atomic_write(path, write):
    """Write through ``write(fileobj)`` to a temporary file beside ``path``, then move it over ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"Cannot save to {path}: the directory {directory} does not exist.")
    if os.path.isdir(path):
        raise IsADirectoryError(f"Cannot save to {path}: it is a directory.")
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fileobj:
            write(fileobj)
            fileobj.flush()
            os.fsync(fileobj.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_directory(directory):
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ====================================================================== reading the archive


class _Archive:
    """A validated ``.keras`` zip: opened, its members listed, closed on exit."""

    def __init__(self, path, required):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No such model file: {path}")
        try:
            self.zip = zipfile.ZipFile(path, "r")
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
            if isinstance(exc, (FileNotFoundError, PermissionError)):
                raise
            raise ValueError(f"Invalid model file {path}: not a readable .keras (zip) archive ({exc}).") from None
        names = self.zip.namelist()
        for name in (_METADATA, _CONFIG, _WEIGHTS):
            if names.count(name) > 1:
                self.zip.close()
                raise ValueError(f"Invalid model file {path}: the archive holds '{name}' more than once.")
        if _WEIGHTS not in names and "model.weights.npz" in names:
            self.zip.close()
            raise ValueError(
                f"Invalid model file {path}: its weights are in model.weights.npz, a format that can hold "
                "pickled objects; gpulayers reads only model.weights.h5."
            )
        for name in required:
            if name not in names:
                self.zip.close()
                raise ValueError(f"Invalid model file {path}: the archive has no '{name}'.")

    def __enter__(self):
        return self.zip

    def __exit__(self, *exc):
        self.zip.close()


def _open_archive(path, required=(_METADATA, _CONFIG, _WEIGHTS)):
    return _Archive(path, required)


def _read_member(archive, path, name, limit):
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise ValueError(f"Invalid model file {path}: the archive has no '{name}'.") from None
    if info.file_size > limit:
        raise ValueError(
            f"Invalid model file {path}: '{name}' declares {info.file_size} bytes, more than the "
            f"{limit} allowed for it."
        )
    try:
        with archive.open(info, "r") as member:
            data = member.read(limit + 1)
    except Exception as exc:  # zipfile raises BadZipFile, zlib.error, EOFError, RuntimeError...
        raise ValueError(f"Invalid model file {path}: '{name}' cannot be read ({type(exc).__name__}: {exc}).") from None
    if len(data) > limit:
        raise ValueError(f"Invalid model file {path}: '{name}' is larger than the {limit} bytes allowed for it.")
    return data


def _weights_size_limit(model):
    total = sum(int(np.prod(w.shape)) * 8 for w in model.weights)  # float64 at most
    total += _MAX_SLOTS * sum(int(np.prod(w.shape)) * 8 for w in model.trainable_weights)  # optimizer state
    return 2 * total + _WEIGHTS_SLACK_BYTES


def _no_duplicate_keys(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _parse_json(data, path, name):
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"Invalid model file {path}: '{name}' is not valid JSON ({exc}).") from None


def _check_metadata(metadata, path):
    if not isinstance(metadata, dict):
        raise ValueError(f"Invalid model file {path}: '{_METADATA}' should hold a JSON object.")
    version = metadata.get("keras_version")
    if not isinstance(version, str):
        raise ValueError(f"Invalid model file {path}: '{_METADATA}' has no `keras_version` string.")
    major = version.split(".", 1)[0]
    if not major.isdigit() or int(major) < 3:
        raise ValueError(
            f"Invalid model file {path}: written by Keras {version!r}; gpulayers reads the Keras 3 format only."
        )


# ====================================================================== checking the config


def _bad(path, where, what):
    return ValueError(f"Invalid model file {path}: {_CONFIG} at {where}: {what}")


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
    if class_name in _CODE_CLASSES and not reference:
        raise _bad(path, where, f"{class_name!r} holds Python code, which gpulayers never loads.")
    if class_name.startswith("__"):
        raise _bad(path, where, f"class_name {class_name!r} is not allowed.")
    registered = obj.get("registered_name")
    if registered is not None:
        if not isinstance(registered, str):
            raise _bad(path, where, f"'registered_name' should be a string or null. Received: {registered!r:.80}")
        if ">" in registered and registered != f"{_GPULAYERS_PACKAGE}>{class_name}":
            raise _bad(path, where, f"custom object {registered!r} is not one of gpulayers' classes.")


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


def _check_model_config(config, path):
    """Validate the whole config tree before anything is built."""
    try:
        _check_tree(config, path, "model")
        _check_container(config, path, "model")
    except RecursionError:
        raise ValueError(f"Invalid model file {path}: {_CONFIG} is nested too deeply.") from None


def _check_compile_config(config, path):
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


def _check_container(entry, path, where):
    if not isinstance(entry, dict):
        raise _bad(path, where, f"expected a serialized Sequential (a JSON object). Received: {entry!r:.80}")
    class_name = entry.get("class_name")
    known = object_registration.resolve(entry)
    if class_name != "Sequential" and not (isinstance(known, type) and issubclass(known, _sequential_class())):
        raise _bad(
            path,
            where,
            f"gpulayers loads Sequential models only. Received: class_name={class_name!r:.80}",
        )
    config = entry.get("config")
    if not isinstance(config, dict):
        raise _bad(path, where, "'config' should be a JSON object.")
    entries = config.get("layers", [])
    if not isinstance(entries, list):
        raise _bad(path, f"{where}.config.layers", "expected a list of layers.")
    for i, layer in enumerate(entries):
        here = f"{where}.config.layers[{i}]"
        if not isinstance(layer, dict):
            raise _bad(path, here, f"expected a serialized layer (a JSON object). Received: {layer!r:.80}")
        name = layer.get("class_name")
        if name == "Sequential":
            _check_container(layer, path, here)
            continue
        if name not in layers_module.LAYER_CLASSES and object_registration.resolve(layer) is None:
            raise _bad(
                path,
                here,
                f"unknown layer class {name!r:.80}; gpulayers builds its own layers "
                f"({', '.join(sorted(layers_module.LAYER_CLASSES))}), Sequential, and the classes passed in "
                "`custom_objects` or registered with `register_keras_serializable`.",
            )
        if not isinstance(layer.get("config", {}), dict):
            raise _bad(path, here, "'config' should be a JSON object.")
        _check_build_config(layer, path, here)
    _check_build_config(entry, path, where)
    if config.get("build_input_shape") is not None:
        _check_shape(config["build_input_shape"], path, f"{where}.config.build_input_shape")


def _check_build_config(entry, path, where):
    build = entry.get("build_config")
    if build is None:
        return
    if not isinstance(build, dict):
        raise _bad(path, f"{where}.build_config", "expected a JSON object.")
    if build.get("input_shape") is not None:
        _check_shape(build["input_shape"], path, f"{where}.build_config.input_shape")


def _check_shape(shape, path, where):
    if not isinstance(shape, list) or not all(d is None or (isinstance(d, int) and not isinstance(d, bool) and d >= 0) for d in shape):
        raise _bad(path, where, f"expected a list of non-negative ints or nulls. Received: {shape!r:.80}")


# ====================================================================== building and compiling the model


def _build_model(config, path):
    """The checked config, without Keras's ``shared_object_id`` keys, built by ``layers.deserialize``.

    The layer classes take every argument Keras 3 writes (``renorm``,
    ``quantization_config``, ``input_axes``...) and refuse, with ValueError,
    the values they cannot honour.
    """
    try:
        return layers_module.deserialize(_strip_shared_ids(config))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Invalid model file {path}: the model cannot be built from {_CONFIG}: {exc}") from None


def _compile_model(model, compile_config, path):
    try:
        model.compile_from_config(compile_config)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"Invalid model file {path}: the model cannot be compiled from the compile_config in {_CONFIG}: {exc} "
            "(load_model(path, compile=False) loads the model without compiling it)."
        ) from None


def _strip_shared_ids(value):
    if isinstance(value, dict):
        return {k: _strip_shared_ids(v) for k, v in value.items() if k != "shared_object_id"}
    if isinstance(value, list):
        return [_strip_shared_ids(v) for v in value]
    return value


# ====================================================================== reading weights


def _plan(model, prefix, visited, containers, leaves):
    """The groups the model expects: containers (Sequential path -> {child: "container" or "layer"}) and
    leaves (layer path -> (the layer, {entry of its group: sublayer path or None for ``vars``}))."""
    Sequential = _sequential_class()
    visited.add(id(model))
    children = {}
    for group_name, layer in zip(_layer_group_names(model.layers), model.layers):
        if id(layer) in visited:
            continue
        path = _join(prefix, "layers", group_name)
        if isinstance(layer, Sequential):
            children[group_name] = "container"
            _plan(layer, path, visited, containers, leaves)
        else:
            children[group_name] = "layer"
            _plan_layer(layer, path, visited, containers, leaves)
    containers[prefix] = children


def _plan_layer(layer, path, visited, containers, leaves):
    visited.add(id(layer))
    entries = {"vars": None}
    for child_path, child in _sublayers(layer):
        if id(child) in visited:
            continue
        entries.setdefault(child_path.split("/", 1)[0], []).append(child_path)
        if isinstance(child, _sequential_class()):
            _plan(child, _join(path, child_path), visited, containers, leaves)
        else:
            _plan_layer(child, _join(path, child_path), visited, containers, leaves)
    leaves[path] = (layer, entries)


def _read_weights(source, model, label):
    """The weights of ``model`` from the HDF5 ``source``, checked, in ``model.weights`` order, and the
    optimizer state to restore (a dict for ``Optimizer.import_state``, or None).

    The optimizer group is read only for a compiled model.
    """
    h5py = _h5py()
    containers, leaves = {}, {}
    _plan(model, "", set(), containers, leaves)
    try:
        h5 = h5py.File(source, "r")
    except (OSError, ValueError) as exc:
        raise ValueError(f"Invalid weights file {label}: not a readable HDF5 file ({exc}).") from None
    try:
        with h5:
            values = _read_checked(h5, model, containers, leaves, label, h5py)
            state = _read_optimizer(h5, model, label, h5py)
    except (OSError, RuntimeError, KeyError, TypeError) as exc:  # h5py read errors on a damaged file
        raise ValueError(f"Invalid weights file {label}: cannot be read ({type(exc).__name__}: {exc}).") from None
    arrays = []
    for w in model.weights:
        arrays.append(values[id(w)])
    return arrays, state


def _assign(model, arrays, state, label):
    """Set the checked weights and optimizer state: everything is converted first, so it is all or nothing."""
    commit = None
    if state is not None:
        try:
            commit = model.optimizer._prepare_import(model.trainable_weights, **state)
        except (TypeError, ValueError) as exc:  # pragma: no cover - the file was checked against the model
            raise ValueError(f"Invalid weights file {label}: the optimizer state does not fit: {exc}") from None
    model.set_weights(arrays)
    if commit is not None:
        commit()  # plain assignments: cannot fail half way


def _member(group, name, kind, label, where, h5py):
    """``group[name]`` when it is a hard link to a Group (kind 'group') or a Dataset (kind 'dataset')."""
    link = group.get(name, getlink=True)
    if link is None:
        raise ValueError(f"Invalid weights file {label}: missing {kind} '{where}'.")
    if not isinstance(link, h5py.HardLink):
        raise ValueError(f"Invalid weights file {label}: '{where}' is a link ({type(link).__name__}); only plain groups and datasets are read.")
    obj = group[name]
    wanted = h5py.Group if kind == "group" else h5py.Dataset
    if not isinstance(obj, wanted):
        raise ValueError(f"Invalid weights file {label}: '{where}' should be a {kind}.")
    return obj


def _read_checked(h5, model, containers, leaves, label, h5py):
    if "layer_names" in h5.attrs or "model_weights" in h5:
        raise ValueError(
            f"Invalid weights file {label}: it is a Keras 2 (legacy HDF5) file; gpulayers reads the Keras 3 layout only."
        )
    if "_layer_checkpoint_dependencies" in h5:
        raise ValueError(f"Invalid weights file {label}: it has the Keras 2.13 layout; gpulayers reads the Keras 3 layout only.")
    # The top: 'layers', the model's own (empty) 'vars', and a compiled Keras model's 'optimizer' (ignored).
    extra = sorted(set(h5.keys()) - {"layers", "vars", "optimizer"})
    if extra:
        raise ValueError(f"Invalid weights file {label}: unexpected top-level entries {extra}.")
    values = {}
    for prefix in sorted(containers, key=len):
        node = h5 if not prefix else _member(h5, prefix, "group", label, prefix, h5py)
        if prefix:
            extra = sorted(set(node.keys()) - {"layers", "vars"})
            if extra:
                raise ValueError(f"Invalid weights file {label}: unexpected entries {extra} in '{prefix}'.")
        if "vars" in node:
            own = _member(node, "vars", "group", label, _join(prefix, "vars"), h5py)
            if len(own):
                raise ValueError(
                    f"Invalid weights file {label}: '{_join(prefix, 'vars')}' holds {len(own)} arrays, "
                    "but a Sequential has no weights of its own."
                )
        expected = containers[prefix]
        layers_path = _join(prefix, "layers")
        if "layers" in node:
            found = set(_member(node, "layers", "group", label, layers_path, h5py).keys())
        else:
            found = set()
        if found != set(expected):
            missing, unexpected = sorted(set(expected) - found), sorted(found - set(expected))
            raise ValueError(
                f"Invalid weights file {label}: the layer groups in '{layers_path}' do not match the model "
                f"'{model.name}' (missing: {missing}, unexpected: {unexpected})."
            )
        for group_name, kind in expected.items():
            path = _join(layers_path, group_name)
            _member(h5, path, "group", label, path, h5py)
            if kind == "layer":
                _read_layer(h5, path, leaves, values, label, h5py, model)
    return values


def _read_layer(h5, path, leaves, values, label, h5py, model):
    """A layer's group: exactly its ``vars`` and its sublayers' groups; its own weights, then each sublayer's."""
    layer, entries = leaves[path]
    group = _member(h5, path, "group", label, path, h5py)
    extra = sorted(set(group.keys()) - set(entries))
    if extra:
        raise ValueError(f"Invalid weights file {label}: unexpected entries {extra} in '{path}'.")
    _read_leaf(h5, _join(path, "vars"), layer, values, label, h5py, model)
    between = {}  # the groups of list and dict attributes: path -> the names they must hold
    for child_paths in (e for e in entries.values() if e is not None):
        for child_path in child_paths:
            parts = child_path.split("/")
            for depth in range(1, len(parts)):
                between.setdefault(_join(path, *parts[:depth]), set()).add(parts[depth])
    for inner, names in sorted(between.items()):
        found = set(_member(h5, inner, "group", label, inner, h5py).keys())
        if found != names:
            raise ValueError(
                f"Invalid weights file {label}: '{inner}' holds {sorted(found)}; the model expects {sorted(names)}."
            )
    for child_paths in (e for e in entries.values() if e is not None):
        for child_path in child_paths:
            full = _join(path, child_path)
            if full in leaves:  # a nested Sequential is read with the containers
                _read_layer(h5, full, leaves, values, label, h5py, model)


def _read_leaf(h5, vars_path, layer, values, label, h5py, model):
    group = _member(h5, vars_path, "group", label, vars_path, h5py)
    weights = _own_variables(layer)
    keys = set(group.keys())
    wanted = {str(i) for i in range(len(weights))}
    if keys != wanted:
        hint = ""
        if not weights and keys and not model.built:
            hint = f" Model '{model.name}' is not built: build it (or call it on data) before loading weights."
        raise ValueError(
            f"Invalid weights file {label}: layer group '{vars_path}' holds {len(keys)} arrays "
            f"({sorted(keys, key=_int_key)}); layer '{layer.name}' of the model expects {len(weights)} "
            f"({sorted(wanted, key=_int_key)}).{hint}"
        )
    for i, weight in enumerate(weights):
        where = f"{vars_path}/{i}"
        ds = _dataset(group, str(i), "f", label, where, h5py, f"a float array for weight '{weight.path}' ({weight.dtype})")
        _check_dataset_shape(ds, weight.shape, label, where, f"weight '{weight.path}' of the model")
        values[id(weight)] = _read_array(ds)


def _dataset(group, name, kinds, label, where, h5py, wanted):
    """``group[name]``: a plain dataset inside the file, of a numeric dtype whose kind is in ``kinds``.

    Nothing is read yet: the caller checks the shape first.
    """
    ds = _member(group, name, "dataset", label, where, h5py)
    if ds.external or ds.is_virtual:
        raise ValueError(f"Invalid weights file {label}: '{where}' refers to data outside the file.")
    if "dtype" in ds.attrs:
        raise ValueError(
            f"Invalid weights file {label}: '{where}' is stored as {ds.attrs['dtype']!r}, "
            "which gpulayers does not support."
        )
    sizes = (2, 4, 8) if kinds == "f" else (1, 2, 4, 8)
    if ds.dtype.kind not in kinds or ds.dtype.itemsize not in sizes:
        raise ValueError(f"Invalid weights file {label}: '{where}' has dtype {ds.dtype}; expected {wanted}.")
    return ds


def _check_dataset_shape(ds, shape, label, where, owner):
    if tuple(ds.shape) != tuple(shape):
        raise ValueError(
            f"Invalid weights file {label}: '{where}' has shape {tuple(ds.shape)}; {owner} has shape {tuple(shape)}."
        )


def _read_array(ds):
    array = np.empty(ds.shape, dtype=ds.dtype.newbyteorder("="))
    if array.size:
        ds.read_direct(array)
    return array


def _int_key(text):
    return (0, int(text)) if text.isdigit() else (1, text)


# ====================================================================== reading the optimizer state


def _read_optimizer(h5, model, label, h5py):
    """The checked ``optimizer/vars`` of a compiled model's file, as ``import_state`` arguments; None to keep
    the optimizer as it is (an uncompiled model, no optimizer group, or a count that does not fit).

    Layout (Keras's ``optimizer.variables``): ``0`` iterations (an integer scalar), ``1`` the learning
    rate (a float scalar) when the optimizer's rate is a float, then one array per slot and trainable
    weight in Keras's build order (``Optimizer._state_order``). A group with iterations and learning
    rate alone is Keras's unbuilt optimizer: the slots then start afresh.
    """
    optimizer = _compiled_optimizer(model)
    if optimizer is None or "optimizer" not in h5:
        return None
    top = _member(h5, "optimizer", "group", label, "optimizer", h5py)
    extra = sorted(set(top.keys()) - {"vars"})
    if extra:
        raise ValueError(
            f"Invalid weights file {label}: unexpected entries {extra} in 'optimizer'; gpulayers reads a plain "
            "optimizer's 'optimizer/vars' only."
        )
    group = _member(h5, "optimizer/vars", "group", label, "optimizer/vars", h5py)
    count = _check_optimizer_keys(group, label, h5py)
    variables = model.trainable_weights
    order = optimizer._state_order(variables)
    head = 2 if isinstance(optimizer._learning_rate, float) else 1
    if count not in (head, head + len(order)):
        # Keras's rule (BaseOptimizer.load_own_variables): a count that does not fit is skipped with a warning.
        warnings.warn(
            f"Skipping the optimizer state in {label}: it holds {count} variables, but optimizer "
            f"'{optimizer.name}' ({type(optimizer).__name__}) keeps {head + len(order)} for model '{model.name}' "
            f"(iterations{', learning_rate' if head == 2 else ''} and {len(order)} slot arrays). The weights "
            "are loaded; the optimizer keeps its current state.",
            stacklevel=4,
        )
        return None
    state = {"iterations": _read_iterations(group, label, h5py), "learning_rate": None, "slots": []}
    if head == 2:
        state["learning_rate"] = _read_learning_rate(group, label, h5py)
    if count > head:
        state["slots"] = _read_slots(group, order, head, label, h5py)
    return state


def _check_optimizer_keys(group, label, h5py):
    """The entries are exactly the datasets ``0`` ... ``n-1``, ``0`` an integer and the others floats; returns n."""
    keys = set(group.keys())
    count = len(keys)
    if keys != {str(i) for i in range(count)} or not count:
        raise ValueError(
            f"Invalid weights file {label}: 'optimizer/vars' should hold datasets named '0' (iterations), "
            f"'1', ... without gaps. Received: {sorted(keys, key=_int_key)[:20]}"
        )
    _dataset(group, "0", "iu", label, "optimizer/vars/0", h5py, "an integer (the optimizer's iterations)")
    for i in range(1, count):
        _dataset(group, str(i), "f", label, f"optimizer/vars/{i}", h5py, "a float array (optimizer state)")
    return count


def _read_iterations(group, label, h5py):
    where = "optimizer/vars/0"
    ds = _dataset(group, "0", "iu", label, where, h5py, "an integer (the optimizer's iterations)")
    _check_dataset_shape(ds, (), label, where, "the optimizer's iterations (a scalar)")
    value = int(_read_array(ds))
    if value < 0:
        raise ValueError(f"Invalid weights file {label}: '{where}' holds iterations={value}; expected an int >= 0.")
    return value


def _read_learning_rate(group, label, h5py):
    where = "optimizer/vars/1"
    ds = _dataset(group, "1", "f", label, where, h5py, "a float (the learning rate)")
    _check_dataset_shape(ds, (), label, where, "the learning rate (a scalar)")
    value = _read_array(ds)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"Invalid weights file {label}: '{where}' holds learning_rate={value}; expected a finite float >= 0.")
    return value[()]  # a NumPy scalar: its dtype tells the precision it was saved with


def _read_slots(group, order, first, label, h5py):
    slots = []
    for i, (variable, slot) in enumerate(order, start=first):
        where = f"optimizer/vars/{i}"
        ds = _dataset(group, str(i), "f", label, where, h5py, "a float array (optimizer state)")
        _check_dataset_shape(ds, variable.shape, label, where, f"the '{slot}' state of weight '{variable.path}'")
        slots.append(_read_array(ds).astype(variable.dtype, copy=False))
    return slots
