"""The symbolic values a functional graph is made of: :class:`KerasTensor` and :class:`Node`.

``Input(...)`` gives a KerasTensor (a shape with the batch axis, a dtype, and
no data). Calling a layer on KerasTensors computes nothing: it builds the
layer, works out the output's shape and dtype, and records a :class:`Node`
(the layer, the call's arguments with their KerasTensors, the outputs) in
``layer._inbound_nodes``. Each output remembers where it came from in
``_keras_history = (layer, node_index, tensor_index)``, as Keras's. A
Functional model walks these histories back from its outputs to its inputs.
"""

import itertools

import numpy as np

from gpulayers.tree import flatten

__all__ = ["KerasTensor", "Node", "any_symbolic", "is_keras_tensor"]

_counter = itertools.count()


class KerasTensor:
    """A symbolic tensor: shape (None for an unknown size), dtype, name and history; no values.

    Args:
        shape: Tuple of ints or None, batch axis first.
        dtype: A NumPy dtype name (``"float32"``...).
        name: Optional name; a unique ``keras_tensor_<n>`` by default.
    """

    def __init__(self, shape, dtype="float32", name=None):
        self.shape = tuple(None if d is None else int(d) for d in shape)
        self.dtype = np.dtype(dtype).name
        self.name = name if name is not None else f"keras_tensor_{next(_counter)}"
        self._keras_history = None  # (layer, node_index, tensor_index) once a node made it

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def sparse(self):
        return False

    @property
    def ragged(self):
        return False

    def __repr__(self):
        return f"<KerasTensor shape={self.shape}, dtype={self.dtype}, sparse=False, ragged=False, name={self.name}>"

    # Operators build the graph as Keras's do: each calls the matching ``gpulayers.ops`` function, which on
    # a KerasTensor adds an Operation node (``x += residual`` is ``ops.add(x, residual)``). ``==`` stays
    # identity, so KerasTensors can be dict keys and set members.
    def _op(self, name, *args):
        from gpulayers import ops

        return getattr(ops, name)(*args)

    def __add__(self, other):
        return self._op("add", self, other)

    def __radd__(self, other):
        return self._op("add", other, self)

    def __sub__(self, other):
        return self._op("subtract", self, other)

    def __rsub__(self, other):
        return self._op("subtract", other, self)

    def __mul__(self, other):
        return self._op("multiply", self, other)

    def __rmul__(self, other):
        return self._op("multiply", other, self)

    def __truediv__(self, other):
        return self._op("true_divide", self, other)

    def __rtruediv__(self, other):
        return self._op("true_divide", other, self)

    def __floordiv__(self, other):
        return self._op("floor_divide", self, other)

    def __rfloordiv__(self, other):
        return self._op("floor_divide", other, self)

    def __mod__(self, other):
        return self._op("mod", self, other)

    def __pow__(self, other):
        return self._op("power", self, other)

    def __rpow__(self, other):
        return self._op("power", other, self)

    def __matmul__(self, other):
        return self._op("matmul", self, other)

    def __rmatmul__(self, other):
        return self._op("matmul", other, self)

    def __neg__(self):
        return self._op("negative", self)

    def __pos__(self):
        return self

    def __abs__(self):
        return self._op("absolute", self)

    def __lt__(self, other):
        return self._op("less", self, other)

    def __le__(self, other):
        return self._op("less_equal", self, other)

    def __gt__(self, other):
        return self._op("greater", self, other)

    def __ge__(self, other):
        return self._op("greater_equal", self, other)

    def __getitem__(self, key):
        return self._op("get_item", self, key)

    def __bool__(self):
        raise TypeError("A symbolic KerasTensor has no value: it cannot be used as a Python bool.")

    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            f"A symbolic KerasTensor ({self.name}, shape {self.shape}) has no values: it cannot be converted to an "
            "array. Call layers on it to build a model, then call the model on data."
        )


def is_keras_tensor(x):
    """Whether ``x`` is a symbolic :class:`KerasTensor` (Keras's ``keras.utils.is_keras_tensor``)."""
    return isinstance(x, KerasTensor)


def any_symbolic(args, kwargs=None):
    """Whether any leaf of ``args`` (a tuple of call arguments) or ``kwargs`` values is a KerasTensor."""
    leaves = [leaf for a in args for leaf in flatten(a)]
    if kwargs:
        leaves += [leaf for v in kwargs.values() for leaf in flatten(v)]
    return any(isinstance(leaf, KerasTensor) for leaf in leaves)


class Node:
    """One symbolic call of a layer: what it was called with and what it returned.

    Creating a node registers it with the layer (``layer._inbound_nodes``)
    and stamps each output KerasTensor with its history.

    Args:
        operation: The layer called.
        call_args: The positional arguments (a tuple), KerasTensors among them.
        call_kwargs: The keyword arguments (``training`` only when given explicitly).
        outputs: The output KerasTensor(s), a structure.
    """

    def __init__(self, operation, call_args=(), call_kwargs=None, outputs=None):
        self.operation = operation
        self.arguments = (tuple(call_args), dict(call_kwargs or {}))
        self.outputs = outputs
        self.input_tensors = [x for x in flatten(list(self.arguments[0])) + flatten(self.arguments[1])
                              if isinstance(x, KerasTensor)]
        self.output_tensors = flatten(outputs) if outputs is not None else []
        self.is_input = not self.input_tensors
        nodes = operation.__dict__.setdefault("_inbound_nodes", [])
        index = len(nodes)
        nodes.append(self)
        for i, t in enumerate(self.output_tensors):
            if isinstance(t, KerasTensor) and t._keras_history is None:
                t._keras_history = (operation, index, i)

    @property
    def parent_nodes(self):
        """The nodes that made this node's input tensors."""
        parents = []
        for x in self.input_tensors:
            if x._keras_history is not None:
                layer, index, _ = x._keras_history
                parents.append(layer._inbound_nodes[index])
        return parents

    def __repr__(self):
        return f"<Node operation={self.operation.name}, inputs={[t.name for t in self.input_tensors]}>"
