"""A functional model's config in Keras 3's schema, and the model rebuilt from one.

The schema (``class_name: "Functional"``)::

    {"name": ..., "trainable": ...,
     "layers": [{"module", "class_name", "config", "registered_name", "name",
                 "inbound_nodes": [{"args": [...], "kwargs": {...}}, ...]}, ...],
     "input_layers": ..., "output_layers": ...}

Each node's arguments are written with every KerasTensor replaced by
``{"class_name": "__keras_tensor__", "config": {"shape", "dtype",
"keras_history": [layer name, node index, tensor index]}}``; node indices
count only the nodes that belong to this model. ``input_layers`` and
``output_layers`` hold ``[layer name, node index, tensor index]`` entries in
the structure of the model's inputs and outputs (one entry, a list or a
dict); as in Keras, there a nested Functional's node index is one more than
in ``keras_history`` (Keras counts a node its functional models once had at
construction), and reading undoes it.
"""

from gpulayers import serialization
from gpulayers.symbolic import KerasTensor
from gpulayers.tree import flatten, map_structure

__all__ = ["functional_config", "functional_from_config"]


def _is_functional(layer):
    from gpulayers.models.functional import Functional

    return isinstance(layer, Functional)


def functional_config(model):
    """Keras 3's config of the Functional ``model``."""

    def tensor_config(t):
        layer, index, tensor_index = t._keras_history
        return {
            "class_name": "__keras_tensor__",
            "config": {"shape": list(t.shape), "dtype": t.dtype,
                       "keras_history": [layer.name, model._saved_node_index(layer, index), tensor_index]},
        }

    def argument(value):
        if isinstance(value, KerasTensor):
            return tensor_config(value)
        if isinstance(value, tuple):
            return {"class_name": "__tuple__", "config": {"value": [argument(v) for v in value]}}
        return _plain(value)

    layer_entries = []
    for layer in model._operations:
        nodes = []
        for node in layer._inbound_nodes:
            if id(node) in model._node_ids and not node.is_input:
                args, kwargs = node.arguments
                nodes.append({
                    "args": [map_structure(argument, a) for a in args],
                    "kwargs": {k: map_structure(argument, v) for k, v in kwargs.items()},
                })
        entry = serialization.serialize(layer)
        build = None
        if hasattr(layer, "get_build_config") and not isinstance(layer, _input_layer_class()):
            build = layer.get_build_config()
        if build is not None and not _is_functional(layer):
            entry["build_config"] = build
        entry["name"] = layer.name
        entry["inbound_nodes"] = nodes
        layer_entries.append(entry)

    def endpoint(t):
        layer, index, tensor_index = t._keras_history
        offset = 1 if _is_functional(layer) else 0
        return [layer.name, model._saved_node_index(layer, index) + offset, tensor_index]

    def endpoints(struct):
        if isinstance(struct, KerasTensor):
            return endpoint(struct)
        if isinstance(struct, dict):
            return {k: endpoints(v) for k, v in struct.items()}
        return [endpoints(v) for v in struct]

    return {
        "name": model.name,
        "trainable": model.trainable,
        "layers": layer_entries,
        "input_layers": endpoints(model._inputs_struct),
        "output_layers": endpoints(model._outputs_struct),
    }


def _input_layer_class():
    from gpulayers.layers.input_layer import InputLayer

    return InputLayer


def _plain(value):
    """A non-tensor call argument as JSON-like data (what Keras writes for ``training=True`` and the like)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, slice):  # Keras's forms of a slice and a tuple (an index such as x[:, :2])
        return {"class_name": "__slice__", "config": {"start": value.start, "stop": value.stop, "step": value.step}}
    if isinstance(value, tuple):
        return {"class_name": "__tuple__", "config": {"value": [_plain(v) for v in value]}}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    raise ValueError(
        f"A functional model's layer call argument {value!r:.80} (of type {type(value).__name__}) cannot be saved "
        "in its config: only tensors, numbers, strings, None and lists or dicts of them can."
    )


def _bad(what):
    return ValueError(f"Invalid Functional model configuration: {what}")


def _is_endpoint(value):
    return isinstance(value, list) and len(value) == 3 and isinstance(value[0], str)


def functional_from_config(cls, config, custom_objects=None):
    """Rebuild a Functional model (of class ``cls``) from :func:`functional_config` output or Keras's.

    Every layer is built from its entry, then the nodes are replayed as
    symbolic calls in an order where each call's inputs exist (a layer
    shared at several depths may need several rounds), as Keras does.
    """
    if not isinstance(config, dict):
        raise _bad(f"expected a dict. Received: {config!r:.200}")
    config = dict(config)
    try:
        entries = config.pop("layers")
        input_spec, output_spec = config.pop("input_layers"), config.pop("output_layers")
    except KeyError as exc:
        raise _bad(f"missing key {exc}.") from None
    if not isinstance(entries, list):
        raise _bad("'layers' should be a list.")
    name, trainable = config.pop("name", None), config.pop("trainable", True)
    created, pending, order = {}, {}, []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise _bad(f"each layer entry needs a 'name'. Received: {entry!r:.200}")
        layer_name = entry["name"]
        if layer_name in created:
            raise _bad(f"the layer name {layer_name!r} is used twice.")
        nodes = entry.get("inbound_nodes", [])
        if not isinstance(nodes, list):
            raise _bad(f"'inbound_nodes' of layer {layer_name!r} should be a list.")
        layer_entry = {k: v for k, v in entry.items() if k not in ("name", "inbound_nodes")}
        if nodes or _entry_is_functional(layer_entry):
            layer_entry.pop("build_config", None)  # its calls build it
        layer = serialization.deserialize(layer_entry, custom_objects)
        if layer.name != layer_name:
            raise _bad(f"layer entry {layer_name!r} builds a layer named {layer.name!r}.")
        created[layer_name] = layer
        pending[layer_name] = list(nodes)
        order.append(layer_name)

    def tensor(layer_name, node_index, tensor_index, where):
        layer = created.get(layer_name)
        if layer is None:
            raise _bad(f"{where} names an unknown layer {layer_name!r}.")
        nodes = layer.__dict__.get("_inbound_nodes", [])
        if not isinstance(node_index, int) or not 0 <= node_index < len(nodes):
            raise IndexError(node_index)  # not made yet: try again in a later round
        outputs = nodes[node_index].output_tensors
        if not isinstance(tensor_index, int) or not 0 <= tensor_index < len(outputs):
            raise _bad(f"{where} names output {tensor_index!r} of layer {layer_name!r}, which has {len(outputs)}.")
        return outputs[tensor_index]

    def fill(value, where):
        if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
            history = value.get("config", {}).get("keras_history")
            if not _is_endpoint(history):
                raise _bad(f"{where}: a tensor needs a keras_history [layer, node, tensor]. Received: {history!r:.80}")
            return tensor(*history, where)
        if isinstance(value, dict) and value.get("class_name") == "__slice__":
            config = value.get("config", {})
            return slice(config.get("start"), config.get("stop"), config.get("step"))
        if isinstance(value, dict) and value.get("class_name") == "__tuple__":
            return tuple(fill(v, where) for v in value.get("config", {}).get("value", []))
        if isinstance(value, dict):
            return {k: fill(v, where) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v, where) for v in value]
        return value

    while any(pending.values()):
        progressed = False
        for layer_name in order:
            nodes = pending[layer_name]
            while nodes:
                node = nodes[0]
                where = f"a call of layer {layer_name!r}"
                if not isinstance(node, dict):
                    raise _bad(f"{where} should be a JSON object. Received: {node!r:.80}")
                try:
                    args = fill(node.get("args", []), where)
                    kwargs = fill(node.get("kwargs", {}), where)
                except IndexError:
                    break
                if not isinstance(args, list) or not isinstance(kwargs, dict):
                    raise _bad(f"{where} needs a list of args and a dict of kwargs.")
                kwargs.pop("mask", None)  # Keras writes mask=None for a nested model's call; gpulayers has no masks
                created[layer_name](*args, **kwargs)
                nodes.pop(0)
                progressed = True
        if not progressed:
            stuck = sorted(n for n, nodes in pending.items() if nodes)
            raise _bad(
                "The graph of the Functional model either has loops or disconnected nodes. The following nodes "
                f"failed to be resolved: {stuck}"
            )

    def endpoints(spec, where):
        if _is_endpoint(spec):
            layer_name, node_index, tensor_index = spec
            if _is_functional(created.get(layer_name)):
                node_index -= 1  # Keras's count includes a construction node
            try:
                return tensor(layer_name, node_index, tensor_index, where)
            except IndexError:
                raise _bad(f"{where} names node {spec[1]!r} of layer {layer_name!r}, which does not exist.") from None
        if isinstance(spec, dict):
            return {k: endpoints(v, where) for k, v in spec.items()}
        if isinstance(spec, list) and spec:
            return [endpoints(v, where) for v in spec]
        raise _bad(f"{where} should be [layer, node, tensor] entries. Received: {spec!r:.80}")

    inputs = endpoints(input_spec, "input_layers")
    outputs = endpoints(output_spec, "output_layers")
    for x in flatten(inputs):
        if not isinstance(x, KerasTensor):
            raise _bad("input_layers must name tensors.")
    kwargs = {k: config[k] for k in ("dtype",) if k in config}
    return cls(inputs=inputs, outputs=outputs, name=name, trainable=trainable, **kwargs)


def _entry_is_functional(entry):
    return entry.get("class_name") == "Functional"
