"""Weights (and a compiled model's optimizer state) in Keras 3's HDF5 layout.

The layout is Keras's: a ``vars`` group for the model's own variables, then
``layers/<name>/vars/<i>`` for every layer of a Sequential or Functional
model (InputLayers included for a Functional, as Keras writes them), where
``<name>`` is the layer's class name in snake_case, with ``_1``, ``_2``...
for the second, third... layer of that class in the same model, and ``<i>``
counts the layer's weights in ``get_weights`` order. Layers without weights
get an empty ``vars`` group; every ``vars`` group carries the layer's name
as its ``name`` attribute. A nested Sequential or Functional is a container
(``layers/functional/vars``, ``layers/functional/layers/...``). A
subclassed model, and a user's layer that holds layers, keep their own
weights in their ``vars`` group and each sublayer in a group named by the
attribute holding it (``d1/vars``; the layers of a list attribute in
``blocks/dense``, ``blocks/dense_1``), walked as Keras walks them.

The optimizer's state goes to ``optimizer/vars``: ``0`` iterations, ``1``
the learning rate when it is a plain float, then one array per slot and
trainable weight in Keras's build order. Reading checks everything (the
set of groups, the count, shape and dtype of every array, the optimizer's
slots) before the model changes, so a load replaces all the weights and
the optimizer state or none.
"""

import contextlib
import io
import threading
import warnings

import numpy as np

from gpulayers import utils
from gpulayers.layers.base import Layer

__all__ = ["assign", "read_weights", "weights_size_limit", "weights_to_h5_bytes"]


def _is_container(layer):
    """A model whose weights file lists its layers (Sequential, Functional); a subclassed model is walked
    by its attributes, as any layer holding layers."""
    from gpulayers.models import Functional, Sequential

    return isinstance(layer, (Sequential, Functional))

_WEIGHTS_SLACK_BYTES = 64 * 1024 * 1024  # HDF5 overhead allowed above the arrays' size


# At most three state arrays per trainable weight (Adam with amsgrad, centered RMSprop with momentum).
_MAX_SLOTS = 3


def _h5py():
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is a dependency
        raise ImportError("h5py is needed to save and load weights: pip install h5py") from None
    return h5py


def _join(*parts):
    return "/".join(p for p in parts if p)


def _unique(name, used):
    if name in used:
        used[name] += 1
        return f"{name}_{used[name]}"
    used[name] = 0
    return name


def _layer_group_names(layers):
    """Keras's group name for each layer: snake_case class name, then _1, _2... per class."""
    used = {}
    return [_unique(utils.to_snake_case(type(layer).__name__), used) for layer in layers]


def weights_to_h5_bytes(model):
    h5py = _h5py()
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        if _is_container(model):
            _write_container(h5, "", model, set())
        else:  # a subclassed model: its own vars, then its layers by attribute, as any layer holding layers
            _write_layer(h5, "", model, set())
        if _compiled_optimizer(model) is not None:
            _write_optimizer(h5, model)
    return buffer.getvalue()


def weights_size_limit(model):
    total = sum(int(np.prod(w.shape)) * 8 for w in model.weights)  # float64 at most
    total += _MAX_SLOTS * sum(int(np.prod(w.shape)) * 8 for w in model.trainable_weights)  # optimizer state
    return 2 * total + _WEIGHTS_SLACK_BYTES


def _compiled_optimizer(model):
    return model.optimizer if getattr(model, "_compiled", False) else None


def _write_optimizer(h5, model):
    """Keras's ``optimizer/vars``: iterations, the float learning rate (if any), then the slots in Keras's order.

    A LossScaleOptimizer writes, as Keras does, its own iterations (0) and learning rate (0.0), its
    ``step_counter`` and ``dynamic_scale``, then the inner optimizer's list; and that list again in
    ``optimizer/inner_optimizer/vars``."""
    optimizer = model.optimizer
    state = optimizer.export_state(model.trainable_weights)
    inner = getattr(optimizer, "inner_optimizer", None)
    values = _optimizer_values(state)
    if inner is not None:
        _write_vars(h5, "optimizer/inner_optimizer/vars", inner.name, values)
        own = [np.array(0, dtype=np.int64), np.array(0.0, dtype=np.float32)]
        if inner.built:  # Keras's LossScaleOptimizer.build adds the two (a plain SGD has no slots, but is built)
            own += [np.array(state["step_counter"], dtype=np.int64), np.asarray(state["dynamic_scale"], np.float32)]
        values = own + values
    _write_vars(h5, "optimizer/vars", optimizer.name, values)


def _optimizer_values(state):
    # int64, as Keras's TensorFlow backend writes it (its torch and JAX backends write int32;
    # Keras and gpulayers read either): a long run cannot overflow it.
    values = [np.array(state["iterations"], dtype=np.int64)]
    if state["learning_rate"] is not None:
        values.append(_learning_rate_array(state["learning_rate"]))
    return values + list(state["slots"])


def _write_vars(h5, path, name, values):
    group = h5.create_group(path)
    group.attrs["name"] = name
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
    for group_name, layer in zip(_layer_group_names(model.layers), model.layers):
        if id(layer) in visited:  # a layer met twice is saved once, as Keras does
            continue
        path = _join(prefix, "layers", group_name)
        if _is_container(layer):
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
        if _is_container(child):
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
        _BASE_ATTRIBUTES = frozenset(vars(Layer()))
    names = sorted((n for n in vars(layer) if n not in _BASE_ATTRIBUTES), key=lambda n: f"~{n}" if n.startswith("_") else n)
    out = []
    for name in names:
        value = vars(layer)[name]
        if isinstance(value, Layer):
            out.append((name, value))
        elif isinstance(value, (list, tuple, dict)):
            out.extend((f"{name}/{sub}", child) for sub, child in _container_items(value))
    return out


def _container_items(container):
    items = list(container.values()) if isinstance(container, dict) else list(container)
    used, out = {}, []
    for item in items:
        if isinstance(item, Layer):
            name = _unique(utils.to_snake_case(type(item).__name__), used)
            out.append((name, item))
        elif isinstance(item, (list, tuple, dict)):
            name = _unique("container", used)
            out.extend((f"{name}/{sub}", child) for sub, child in _container_items(item))
    return out


def _plan(model, prefix, visited, containers, leaves):
    """The groups the model expects: containers (Sequential path -> {child: "container" or "layer"}) and
    leaves (layer path -> (the layer, {entry of its group: sublayer path or None for ``vars``}))."""
    visited.add(id(model))
    children = {}
    for group_name, layer in zip(_layer_group_names(model.layers), model.layers):
        if id(layer) in visited:
            continue
        path = _join(prefix, "layers", group_name)
        if _is_container(layer):
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
        if _is_container(child):
            _plan(child, _join(path, child_path), visited, containers, leaves)
        else:
            _plan_layer(child, _join(path, child_path), visited, containers, leaves)
    leaves[path] = (layer, entries)


def read_weights(source, model, label, data_limit=None):
    """The weights of ``model`` from the HDF5 ``source``, checked, in ``model.weights`` order, and the
    optimizer state to restore (a dict for ``Optimizer.import_state``, or None).

    The optimizer group is read only for a compiled model. ``data_limit``: the source's size; the arrays
    read may not take more (Keras stores them uncompressed), so a small file cannot make a large load.
    """
    h5py = _h5py()
    containers, leaves = {}, {}
    if _is_container(model):
        _plan(model, "", set(), containers, leaves)
    else:
        _plan_layer(model, "", set(), containers, leaves)
    try:
        h5 = h5py.File(source, "r")
    except (OSError, ValueError) as exc:
        raise ValueError(f"Invalid weights file {label}: not a readable HDF5 file ({exc}).") from None
    try:
        with h5, _data_budget(data_limit, label):
            values = _read_checked(h5, model, containers, leaves, label, h5py)
            state = _read_optimizer(h5, model, label, h5py)
    except (OSError, RuntimeError, KeyError, TypeError) as exc:  # h5py read errors on a damaged file
        raise ValueError(f"Invalid weights file {label}: cannot be read ({type(exc).__name__}: {exc}).") from None
    arrays = []
    for w in model.weights:
        arrays.append(values[id(w)])
    return arrays, state


def assign(model, arrays, state, label):
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
    if not _is_container(model):  # a subclassed model: the top is its own layer group
        values = {}
        _read_layer(h5, "", leaves, values, label, h5py, model)
        return values
    # The top: 'layers', the model's own (empty) 'vars', and a compiled Keras model's 'optimizer' (ignored).
    extra = sorted(set(h5.keys()) - {"layers", "vars", "optimizer"})
    if extra:
        raise ValueError(f"Invalid weights file {label}: unexpected top-level entries {_some(extra)}.")
    values = {}
    for prefix in sorted(containers, key=len):
        node = h5 if not prefix else _member(h5, prefix, "group", label, prefix, h5py)
        if prefix:
            extra = sorted(set(node.keys()) - {"layers", "vars"})
            if extra:
                raise ValueError(f"Invalid weights file {label}: unexpected entries {_some(extra)} in '{prefix}'.")
        if "vars" in node:
            own = _member(node, "vars", "group", label, _join(prefix, "vars"), h5py)
            if len(own):
                raise ValueError(
                    f"Invalid weights file {label}: '{_join(prefix, 'vars')}' holds {len(own)} arrays, "
                    "but a Sequential has no weights of its own."
                )
        expected = containers[prefix]
        layers_path = _join(prefix, "layers")
        layers_group = _member(node, "layers", "group", label, layers_path, h5py) if "layers" in node else None
        found = set() if layers_group is None else set(layers_group.keys())
        if found != set(expected):
            missing, unexpected = sorted(set(expected) - found), sorted(found - set(expected))
            raise ValueError(
                f"Invalid weights file {label}: the layer groups in '{layers_path}' do not match the model "
                f"'{model.name}' (missing: {_some(missing)}, unexpected: {_some(unexpected)})."
            )
        for group_name, kind in expected.items():
            path = _join(layers_path, group_name)
            # looked up in its parent once and passed on: a lookup in a group of thousands costs ~50 us
            group = _member(layers_group, group_name, "group", label, path, h5py)
            if kind == "layer":
                _read_layer(h5, path, leaves, values, label, h5py, model, group)
    return values


def _read_layer(h5, path, leaves, values, label, h5py, model, group=None):
    """A layer's group (``group``, when the caller has it): exactly its ``vars`` and its sublayers' groups;
    its own weights, then each sublayer's."""
    layer, entries = leaves[path]
    if group is None:
        group = _member(h5, path, "group", label, path, h5py) if path else h5
    extra = sorted(set(group.keys()) - set(entries) - ({"optimizer"} if not path else set()))
    if extra:
        raise ValueError(f"Invalid weights file {label}: unexpected entries {_some(extra)} in '{path}'.")
    _read_leaf(group, _join(path, "vars"), layer, values, label, h5py, model)
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
                f"Invalid weights file {label}: '{inner}' holds {_some(sorted(found))}; the model expects "
                f"{_some(sorted(names))}."
            )
    for child_paths in (e for e in entries.values() if e is not None):
        for child_path in child_paths:
            full = _join(path, child_path)
            if full in leaves:  # a nested Sequential is read with the containers
                _read_layer(h5, full, leaves, values, label, h5py, model)


def _read_leaf(parent, vars_path, layer, values, label, h5py, model):
    group = _member(parent, "vars", "group", label, vars_path, h5py)
    weights = _own_variables(layer)
    keys = set(group.keys())
    wanted = {str(i) for i in range(len(weights))}
    if keys != wanted:
        hint = ""
        if not weights and keys and not model.built:
            hint = f" Model '{model.name}' is not built: build it (or call it on data) before loading weights."
        raise ValueError(
            f"Invalid weights file {label}: layer group '{vars_path}' holds {len(keys)} arrays "
            f"({_some(sorted(keys, key=_int_key))}); layer '{layer.name}' of the model expects {len(weights)} "
            f"({_some(sorted(wanted, key=_int_key))}).{hint}"
        )
    for i, weight in enumerate(weights):
        where = f"{vars_path}/{i}"
        # an integer weight (Normalization's count) is stored as integers, every other one as floats
        if np.dtype(weight.dtype).kind in "iu":
            kinds, wanted = "iu", f"an integer array for weight '{weight.path}' ({weight.dtype})"
        else:
            kinds, wanted = "f", f"a float array for weight '{weight.path}' ({weight.dtype})"
        ds = _dataset(group, str(i), kinds, label, where, h5py, wanted)
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
    budget = getattr(_budget, "left", None)
    if budget is not None:
        size = ds.size * ds.dtype.itemsize
        if size > budget[0]:
            raise ValueError(
                f"Invalid weights file {budget[1]}: '{ds.name.lstrip('/')}' holds {size} bytes of data; with the "
                f"arrays before it that is more than the file's {budget[2]} bytes (gpulayers reads arrays "
                "stored uncompressed, as Keras writes them)."
            )
        budget[0] -= size
    array = np.empty(ds.shape, dtype=ds.dtype.newbyteorder("="))
    if array.size:
        ds.read_direct(array)
    return array


_INT64_MAX = int(np.iinfo(np.int64).max)

# Names listed in an error message: the first few, then how many more (a file can hold millions).
_MESSAGE_NAMES = 10


def _some(names):
    names = list(names)
    if len(names) <= _MESSAGE_NAMES:
        return str(names)
    return f"{str(names[:_MESSAGE_NAMES])[:-1]}, ... and {len(names) - _MESSAGE_NAMES} more]"


_budget = threading.local()  # [bytes left, label, limit] while read_weights runs with a data_limit


@contextlib.contextmanager
def _data_budget(limit, label):
    _budget.left = None if limit is None else [limit, label, limit]
    try:
        yield
    finally:
        _budget.left = None


def _int_key(text):
    return (0, int(text)) if text.isdigit() else (1, text)


def _read_optimizer(h5, model, label, h5py):
    """The checked ``optimizer/vars`` of a compiled model's file, as ``import_state`` arguments; None to keep
    the optimizer as it is (an uncompiled model, no optimizer group, or a count that does not fit).

    Layout (Keras's ``optimizer.variables``): ``0`` iterations (an integer scalar), ``1`` the learning
    rate (a float scalar) when the optimizer's rate is a float, then one array per slot and trainable
    weight in Keras's build order (``Optimizer._state_order``). A group with iterations and learning
    rate alone is Keras's unbuilt optimizer: the slots then start afresh. A LossScaleOptimizer's list
    starts with its own iterations and learning rate and (built) its step counter and scale.
    """
    optimizer = _compiled_optimizer(model)
    if optimizer is None or "optimizer" not in h5:
        return None
    scaled = hasattr(optimizer, "inner_optimizer")
    inner = optimizer.inner_optimizer if scaled else optimizer
    top = _member(h5, "optimizer", "group", label, "optimizer", h5py)
    if not scaled and "inner_optimizer" in top:
        # a loss-scaled state for a plain optimizer (a Functional model saved under mixed_float16 and loaded
        # under another global policy: its config keeps no policy), skipped as Keras skips it
        warnings.warn(
            f"Skipping the optimizer state in {label}: it is a LossScaleOptimizer's, but optimizer "
            f"'{optimizer.name}' ({type(optimizer).__name__}) of model '{model.name}' is not loss-scaled. The "
            "weights are loaded; the optimizer keeps its current state.",
            stacklevel=4,
        )
        return None
    extra = sorted(set(top.keys()) - ({"vars", "inner_optimizer"} if scaled else {"vars"}))
    if extra:
        raise ValueError(
            f"Invalid weights file {label}: unexpected entries {_some(extra)} in 'optimizer'; gpulayers reads a plain "
            "optimizer's 'optimizer/vars' only."
        )
    group = _member(h5, "optimizer/vars", "group", label, "optimizer/vars", h5py)
    variables = model.trainable_weights
    order = inner._state_order(variables)
    head = 2 if isinstance(inner._learning_rate, float) else 1
    # (datasets before the inner optimizer's, the integer ones among all of them) of the unbuilt and
    # the built layouts
    layouts = [(2, (0, 2)), (4, (0, 2, 4))] if scaled else [(0, (0,)), (0, (0,))]
    counts = (layouts[0][0] + head, layouts[1][0] + head + len(order))
    count = _optimizer_count(group, label)
    if count not in counts:
        # Keras's rule (BaseOptimizer.load_own_variables): a count that does not fit is skipped with a warning.
        warnings.warn(
            f"Skipping the optimizer state in {label}: it holds {count} variables, but optimizer "
            f"'{optimizer.name}' ({type(optimizer).__name__}) keeps {counts[1]} for model '{model.name}' "
            f"(iterations{', learning_rate' if head == 2 else ''} and {len(order)} slot arrays"
            f"{' after its own 4' if scaled else ''}). The weights are loaded; the optimizer keeps its current state.",
            stacklevel=4,
        )
        return None
    own, ints = layouts[count == counts[1] and count != counts[0]]
    _check_optimizer_kinds(group, count, ints, label, h5py)
    state = {"iterations": _read_iterations(group, label, h5py, own), "learning_rate": None, "slots": []}
    if head == 2:
        state["learning_rate"] = _read_learning_rate(group, label, h5py, own + 1)
    if count > own + head:
        state["slots"] = _read_slots(group, order, own + head, label, h5py)
    if scaled and own == 4:
        state["step_counter"] = _read_iterations(group, label, h5py, 2, "the loss scale's step counter")
        ds = _dataset(group, "3", "f", label, "optimizer/vars/3", h5py, "a float (the loss scale)")
        _check_dataset_shape(ds, (), label, "optimizer/vars/3", "the loss scale (a scalar)")
        value = _read_array(ds)
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"Invalid weights file {label}: 'optimizer/vars/3' holds dynamic_scale={value}; "
                             "expected a finite float > 0.")
        state["dynamic_scale"] = float(value)
    return state


def _optimizer_count(group, label):
    """n, where the entries are exactly the datasets ``0`` ... ``n-1`` (n >= 1)."""
    keys = set(group.keys())
    count = len(keys)
    if keys != {str(i) for i in range(count)} or not count:
        raise ValueError(
            f"Invalid weights file {label}: 'optimizer/vars' should hold datasets named '0' (iterations), "
            f"'1', ... without gaps. Received: {_some(sorted(keys, key=_int_key))}"
        )
    return count


def _check_optimizer_kinds(group, count, ints, label, h5py):
    """The datasets at the indices in ``ints`` are integers, the others floats."""
    for i in range(count):
        if i in ints:
            _dataset(group, str(i), "iu", label, f"optimizer/vars/{i}", h5py, "an integer (the optimizer's iterations)")
        else:
            _dataset(group, str(i), "f", label, f"optimizer/vars/{i}", h5py, "a float array (optimizer state)")


def _read_iterations(group, label, h5py, index=0, what="the optimizer's iterations"):
    where = f"optimizer/vars/{index}"
    ds = _dataset(group, str(index), "iu", label, where, h5py, f"an integer ({what})")
    _check_dataset_shape(ds, (), label, where, f"{what} (a scalar)")
    value = int(_read_array(ds))
    if not 0 <= value <= _INT64_MAX:  # saved back as int64, as Keras's TensorFlow backend does
        raise ValueError(
            f"Invalid weights file {label}: '{where}' holds {what} = {value}; expected an int in [0, {_INT64_MAX}]."
        )
    return value


def _read_learning_rate(group, label, h5py, index=1):
    where = f"optimizer/vars/{index}"
    ds = _dataset(group, str(index), "f", label, where, h5py, "a float (the learning rate)")
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
