"""The functional model: a graph of layer calls from ``Input`` tensors to outputs (``keras.Model(inputs, outputs)``).

Building one walks the KerasTensors' histories back from the outputs
(:func:`map_graph`): the nodes in an order that computes every input before
it is used, and the layers in Keras's order (by depth from the outputs, the
deepest first; ties in the order the walk met them), which is the order of
``model.layers``, ``model.weights`` and the saved files. Calling the model
on data replays the nodes on Tensors, so the tape sees ordinary layer calls:
a layer used at several places shares its weights and their gradients are
summed. One pattern is fused on the way (:func:`relu_epilogues`): a
``BatchNormalization`` whose output only feeds a plain ReLU is called with
the ReLU folded in (one node, one pass each way on the GPU), and the ReLU
node is skipped; the values are those of the two calls.
"""

import collections
import warnings

import numpy as np

from gpulayers import autodiff
from gpulayers.layers.base import Layer, _call_info
from gpulayers.models.model import Model
from gpulayers.symbolic import KerasTensor
from gpulayers.tree import flatten, map_shapes, map_structure

__all__ = ["Functional", "map_graph"]


def _node_of(tensor):
    layer, index, _ = tensor._keras_history
    return layer._inbound_nodes[index]


def map_graph(inputs, outputs, output_paths=None):
    """Check and order the graph from the flat ``inputs`` to the flat ``outputs`` (KerasTensors).

    Returns ``(nodes, operations)``: the nodes to run, each after the nodes
    its inputs come from (InputLayer nodes included), and the layers in
    Keras's order. Raises Keras's ValueErrors for a cycle, an output not
    connected to the inputs (``output_paths`` name the outputs in the
    message) and a name used twice.
    """
    output_paths = output_paths or [str(i) for i in range(len(outputs))]
    input_ids = {id(t) for t in inputs}
    order, first_seen = [], {}
    finished, in_progress = set(), set()
    for output in outputs:
        stack = [(output, False)]
        while stack:  # an iterative depth-first walk: deep graphs must not hit Python's recursion limit
            tensor, expanded = stack.pop()
            node = _node_of(tensor)
            if expanded:
                in_progress.discard(id(node))
                if id(node) not in finished:
                    finished.add(id(node))
                    order.append(node)
                continue
            if id(node) in finished:
                continue
            if not node.is_input and id(tensor) in input_ids:
                finished.add(id(node))  # a declared input made by a layer outside the model: the walk stops here
                continue
            if id(node) in in_progress:
                raise ValueError(f"Tensor {tensor} from operation '{node.operation.name}' is part of a cycle.")
            first_seen.setdefault(id(node.operation), len(first_seen))
            in_progress.add(id(node))
            stack.append((tensor, True))
            if not node.is_input:
                stack.extend((t, False) for t in reversed(node.input_tensors))

    # Depth: 0 at the outputs, a node's parents one deeper; a layer takes its deepest node's depth.
    in_graph = {id(n) for n in order}
    node_depth, layer_depth, layers = {}, {}, {}
    for node in reversed(order):
        depth = max(node_depth.setdefault(id(node), 0), layer_depth.get(id(node.operation), 0))
        layer_depth[id(node.operation)] = depth
        layers[id(node.operation)] = node.operation
        node_depth[id(node)] = depth
        for parent in node.parent_nodes:
            if id(parent) in in_graph:
                node_depth[id(parent)] = max(depth + 1, node_depth.get(id(parent), 0))
    for t in inputs:  # an input no output needs still belongs to the model (its loss or metrics may use it)
        layer = t._keras_history[0]
        if id(layer) not in layer_depth and _node_of(t).is_input:
            layer_depth[id(layer)], layers[id(layer)], first_seen[id(layer)] = 0, layer, -1
            order.insert(0, _node_of(t))
    operations = sorted(layers.values(), key=lambda op: (-layer_depth[id(op)], first_seen[id(op)]))

    # Every output must be computable from the declared inputs alone (an Input the model was not given is not).
    computable = set(input_ids)
    for node in order:
        if not node.is_input and all(id(t) in computable for t in node.input_tensors):
            computable.update(id(t) for t in node.output_tensors)
    for path, t in zip(output_paths, outputs):
        if id(t) not in computable:
            raise ValueError(f"Output with path `{path}` is not connected to `inputs`")
    counts = collections.Counter(op.name for op in operations)
    for name, count in counts.items():
        if count != 1:
            raise ValueError(
                f'The name "{name}" is used {count} times in the model. All operation names should be unique.'
            )
    return order, operations


def _is_plain_relu(layer):
    from gpulayers import activations
    from gpulayers.layers.activations import ReLU
    from gpulayers.layers.core import Activation

    if type(layer) is Activation:
        return layer.activation is activations.relu
    return type(layer) is ReLU and layer.max_value is None and layer.negative_slope == 0 and layer.threshold == 0


def fuses_relu(bn, relu):
    """Whether ``bn`` (a layer) and ``relu`` (the layer using its only output) run as one call."""
    from gpulayers.layers.normalization import BatchNormalization

    return (type(bn) is BatchNormalization and _is_plain_relu(relu) and bn.dtype == relu.dtype
            and bn.activity_regularizer is None and relu.activity_regularizer is None)


def relu_epilogues(nodes, outputs):
    """``{id(batch-norm node): relu node}`` for each BatchNormalization call whose one output is used by a
    plain ReLU (``Activation("relu")`` or a default ``ReLU()``) and nowhere else (not even as a model
    output), both layers of the same dtype and without activity regularizers."""
    ids = {id(node) for node in nodes}
    uses = {}
    for node in nodes:
        for t in node.input_tensors:
            uses[id(t)] = uses.get(id(t), 0) + 1
    for t in outputs:
        uses[id(t)] = uses.get(id(t), 0) + 1
    out = {}
    for node in nodes:
        if len(node.input_tensors) != 1 or node.arguments[1] or not _is_plain_relu(node.operation):
            continue
        t = node.input_tensors[0]
        if uses.get(id(t)) != 1 or t._keras_history is None:
            continue
        parent = _node_of(t)
        if id(parent) not in ids:  # made outside this model (its input): the model never calls it
            continue
        if len(parent.output_tensors) == 1 and not parent.arguments[1] and fuses_relu(parent.operation, node.operation):
            out[id(parent)] = node
    return out


def _check_tensors(structure, argument, given, given_outputs):
    leaves = _flat(structure)
    if not leaves:
        raise ValueError(
            f"`{argument}` argument cannot be empty. Received:\ninputs={given}\noutputs={given_outputs}"
        )
    for x in leaves:
        if not isinstance(x, KerasTensor) or x._keras_history is None:
            raise ValueError(
                f"All `{argument}` values must be KerasTensors. Received: {argument}={structure!r:.200} including "
                f"invalid value {x!r:.80} of type {type(x)}"
            )
    return leaves


def _standardize_structure(x):
    """Keras keeps a model's inputs/outputs as given; a tuple becomes a list, a one-tensor list stays a list."""
    if isinstance(x, tuple) and not hasattr(x, "_fields"):
        return list(x)
    return x


def _flat(structure):
    """The leaves in Keras's order: a dict's values sorted by key (as ``keras.tree.flatten``)."""
    if isinstance(structure, dict):
        return [leaf for k in sorted(structure) for leaf in _flat(structure[k])]
    if isinstance(structure, (list, tuple)):
        return [leaf for v in structure for leaf in _flat(v)]
    return [structure]


class Functional(Model):
    """A model defined by its ``inputs`` and ``outputs`` KerasTensors (made by ``Model(inputs, outputs)``).

    Args:
        inputs: A KerasTensor from ``Input``, or a list or dict of them.
        outputs: A KerasTensor made by layer calls on the inputs, or a list or dict of them.
        name: Model name (default ``functional``, ``functional_1``...).
        trainable: Whether the model's weights are trained.
    """

    def __init__(self, inputs, outputs, name=None, **kwargs):
        inputs, outputs = _standardize_structure(inputs), _standardize_structure(outputs)
        flat_inputs = _check_tensors(inputs, "inputs", inputs, outputs)
        flat_outputs = _check_tensors(outputs, "outputs", inputs, outputs)
        if isinstance(inputs, dict):
            for key, x in inputs.items():
                if key != x.name:
                    warnings.warn(
                        "When providing `inputs` as a dict, all keys in the dict must match the names of the "
                        f"corresponding tensors. Received key '{key}' mapping to value {x} which has name "
                        f"'{x.name}'. Change the tensor name to '{key}' (via `Input(..., name='{key}')`)",
                        stacklevel=2,
                    )
        nodes, operations = map_graph(flat_inputs, flat_outputs, _paths(outputs))
        super().__init__(name=name, **kwargs)
        self._inputs_struct, self._outputs_struct = inputs, outputs
        self._inputs, self._outputs = flat_inputs, flat_outputs
        self._graph_nodes = [n for n in nodes if not n.is_input]
        self._node_ids = {id(n) for n in nodes}
        self._relu_epilogues = relu_epilogues(self._graph_nodes, flat_outputs)
        self._operations = operations
        # map_graph lists each operation once: its layers are tracked in one pass (_track scans the
        # tracked layers at each call, quadratic for a model of thousands of layers).
        known = {id(layer) for layer in self._layers}
        self._layers.extend(op for op in operations if isinstance(op, Layer) and op is not self and id(op) not in known)
        self.built = True
        self._build_input_shape = None

    _untracked_attributes = Model._untracked_attributes | {
        "_inputs_struct", "_outputs_struct", "_inputs", "_outputs", "_graph_nodes", "_node_ids", "_operations",
        "_relu_epilogues",
    }

    # ------------------------------------------------------------ structure

    @property
    def inputs(self):
        """The model's input KerasTensors, as a flat list."""
        return list(self._inputs)

    @property
    def outputs(self):
        """The model's output KerasTensors, as a flat list."""
        return list(self._outputs)

    @property
    def input(self):
        return self._inputs_struct

    @property
    def output(self):
        return self._outputs_struct

    @property
    def layers(self):
        """The layers of the graph in Keras's order, InputLayers included (not the ``ops`` called on
        symbolic tensors, which have no weights: as Keras's ``model.layers``)."""
        return [op for op in self._operations if isinstance(op, Layer)]

    @layers.setter
    def layers(self, _):
        raise AttributeError("`Model.layers` attribute is reserved and should not be used. Please use another name.")

    @property
    def output_names(self):
        """The names of the layers that make the outputs (Keras's ``model.output_names``)."""
        return [t._keras_history[0].name for t in self._outputs]

    @property
    def input_names(self):
        return [t._keras_history[0].name for t in self._inputs]

    @property
    def input_shape(self):
        shapes = map_structure(lambda t: t.shape, self._inputs_struct)
        return shapes[0] if isinstance(shapes, list) and len(shapes) == 1 else shapes

    @property
    def output_shape(self):
        shapes = map_structure(lambda t: t.shape, self._outputs_struct)
        return shapes[0] if isinstance(shapes, list) and len(shapes) == 1 else shapes

    @property
    def input_dtype(self):
        return self._inputs[0].dtype

    def _saved_node_index(self, layer, index):
        """The index a file gives ``layer``'s node ``index``: counted over this model's nodes only."""
        return sum(1 for n in layer._inbound_nodes[:index] if id(n) in self._node_ids)

    # ------------------------------------------------------------ computing

    def build(self, input_shape=None):
        self.built = True

    def _flat_inputs(self, inputs):
        """The call's inputs in the order of ``self.inputs``, checked against the model's input structure."""
        struct = self._inputs_struct
        if isinstance(inputs, dict) and not isinstance(struct, dict):
            names = [t.name for t in self._inputs]
            missing = [n for n in names if n not in inputs]
            if missing:
                raise ValueError(
                    f"Missing data for input(s) {missing} of model '{self.name}'. Expected the keys {names}. "
                    f"Received: keys {sorted(map(str, inputs))}"
                )
            return [inputs[n] for n in names]
        if isinstance(struct, dict):
            if not isinstance(inputs, dict):
                if len(self._inputs) == 1 and not isinstance(inputs, (list, tuple)):
                    return [inputs]
                raise ValueError(
                    f"Model '{self.name}' takes a dict of inputs with keys {list(struct)}. Received: "
                    f"{type(inputs).__name__}"
                )
            missing = [k for k in struct if k not in inputs]
            if missing:
                raise ValueError(
                    f"Missing data for input(s) {missing} of model '{self.name}'. Received: keys {sorted(map(str, inputs))}"
                )
            return _flat({k: inputs[k] for k in struct})
        flat = flatten(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if len(flat) != len(self._inputs):
            raise ValueError(
                f"Layer '{self.name}' expects {len(self._inputs)} input(s), but it received {len(flat)} input tensors. "
                f"Inputs received: {[getattr(x, 'shape', x) for x in flat]!r:.300}"
            )
        return flat

    def _check_shape(self, shape, ref):
        """``shape`` after Keras's rank adjustment to ``ref`` (a trailing axis of 1 dropped or added), checked
        as Keras checks a model's inputs: every axis but the batch axis (an ``Input(batch_size=4)`` takes a
        last, partial batch too)."""
        shape = tuple(shape)
        if len(shape) == len(ref.shape) + 1 and shape[-1] == 1:
            shape = shape[:-1]
        elif len(shape) == len(ref.shape) - 1 and ref.shape[-1] == 1:
            shape = shape + (1,)
        expected = (None,) + tuple(ref.shape[1:]) if ref.shape else ()
        if len(shape) != len(expected) or any(
            r is not None and d is not None and d != r for d, r in zip(shape, expected)
        ):
            raise ValueError(
                f"Input {ref.name} of model '{self.name}' is incompatible: expected shape {expected}, but received "
                f"a tensor with shape {shape}."
            )
        return shape

    def _adapt(self, x, ref):
        """One input made to fit its Input: its shape (see :meth:`_check_shape`) and its dtype."""
        from gpulayers import ops as ops_module

        x = autodiff.as_tensor(x)
        shape = self._check_shape(x.shape, ref)
        if len(shape) < x.ndim:
            x = ops_module.squeeze(x, axis=-1)
        elif len(shape) > x.ndim:
            x = ops_module.expand_dims(x, axis=-1)
        want = np.dtype(ref.dtype)
        if x.data.dtype != want and x.data.dtype.kind in "biuf" and want.kind in "biuf":
            x = ops_module.cast(x, want)
        return x

    def call(self, inputs, training=None, mask=None):
        values = {}
        for ref, x in zip(self._inputs, self._flat_inputs(inputs)):
            values[id(ref)] = self._adapt(x, ref)
        fused_away = set()
        for node in self._graph_nodes:
            if id(node) in fused_away:
                continue  # its ReLU ran inside the batch normalization before it
            layer = node.operation
            args, kwargs = node.arguments
            args = tuple(map_structure(lambda v: values[id(v)] if isinstance(v, KerasTensor) else v, a) for a in args)
            kwargs = {k: map_structure(lambda v: values[id(v)] if isinstance(v, KerasTensor) else v, v)
                      for k, v in kwargs.items()}
            if training is not None and _call_info(type(layer))[0]:
                kwargs["training"] = training
            relu = self._relu_epilogues.get(id(node))
            if relu is not None and fuses_relu(layer, relu.operation):  # still (the layers may have changed)
                kwargs["_then_relu"] = True
                fused_away.add(id(relu))
            else:
                relu = None
            outputs = layer(*args, **kwargs)
            for ref, y in zip((relu or node).output_tensors, flatten(outputs)):
                values[id(ref)] = y
        return map_structure(lambda ref: values[id(ref)], self._outputs_struct)

    def compute_output_spec(self, inputs, training=None, mask=None):
        flat = self._flat_inputs(inputs)
        for ref, x in zip(self._inputs, flat):
            self._check_shape(x.shape, ref)
        # The outputs' specs as built, with the batch size of this call's inputs.
        batch = flat[0].shape[0] if flat and flat[0].shape else None
        return map_structure(lambda t: KerasTensor((batch,) + t.shape[1:] if t.shape else (), t.dtype), self._outputs_struct)

    def compute_output_shape(self, input_shape):
        specs = self.compute_output_spec(map_shapes(KerasTensor, input_shape))
        return map_structure(lambda t: t.shape, specs)

    # ------------------------------------------------------------ config

    def get_config(self):
        """Keras 3's Functional config: name, trainable, the layers with their ``inbound_nodes``,
        ``input_layers`` and ``output_layers``."""
        from gpulayers.models.functional_config import functional_config

        return functional_config(self)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        from gpulayers.models.functional_config import functional_from_config

        return functional_from_config(cls, config, custom_objects)


def _paths(structure, prefix=""):
    """Keras's paths of a structure's leaves: ``""`` for one tensor, ``"0"``, ``"1"``... or the dict keys."""
    if isinstance(structure, dict):
        return [p for k in sorted(structure) for p in _paths(structure[k], f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(structure, (list, tuple)):
        return [p for i, v in enumerate(structure) for p in _paths(v, f"{prefix}.{i}" if prefix else str(i))]
    return [prefix]
