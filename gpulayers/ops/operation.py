"""``keras.ops`` on symbolic tensors: a call on KerasTensors becomes an :class:`Operation` in the functional graph.

As in Keras 3, ``ops.mean(x, axis=-1)`` (or ``x + y`` where the symbolic
tensors answer their operators with the ops) on the KerasTensors of a
functional model computes nothing: it creates one Operation (named after
the op: ``mean``, ``mean_1``...; its class named as Keras's, ``Mean``),
finds the output's shape and dtype, and records a
:class:`~gpulayers.symbolic.Node` with the call's arguments, so the model
replays the op on data. An Operation has no weights.

The output spec comes from running the op on zeros (every unknown size set
to 2, then 3; a size that differs between the two runs is unknown) with
nothing recorded. :func:`symbolic_dispatch` wraps each public function of
``gpulayers.ops``; on tensors and arrays it calls the function directly.
"""

import functools

import numpy as np

from gpulayers import autodiff, utils
from gpulayers.symbolic import KerasTensor, Node, any_symbolic
from gpulayers.tree import flatten, map_structure

__all__ = ["Operation", "symbolic_dispatch"]


def _camel(name):
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


class Operation:
    """One op of the functional graph (Keras's ``keras.Operation``): callable on KerasTensors or on data.

    Subclasses (one per op, made by :func:`symbolic_dispatch`) set ``_fn``.
    """

    _fn = None
    _op_name = None
    keras_module = None  # Keras's module of the op ("keras.src.ops.numpy"...), written in configs

    def __init__(self, name=None):
        self.name = name if name is not None else utils.unique_name(utils.to_snake_case(type(self).__name__))
        self._inbound_nodes = []
        self.built = True
        self.trainable = False

    # What a model's code reads off each of ``model.layers``: an Operation has no weights.
    weights = trainable_weights = non_trainable_weights = variables = property(lambda self: [])
    losses = property(lambda self: [])

    def count_params(self):
        return 0

    def get_weights(self):
        return []

    def call(self, *args, **kwargs):
        return type(self)._fn(*args, **kwargs)

    def __call__(self, *args, **kwargs):
        if any_symbolic(args, kwargs):
            return self.symbolic_call(*args, **kwargs)
        return self.call(*args, **kwargs)

    def compute_output_spec(self, *args, **kwargs):
        """The output KerasTensor(s): the op run on zeros, twice, with no gradient recorded."""
        from backends import get_ops

        xp = get_ops().xp
        runs = []
        for size in (2, 3):
            def leaf(x, size=size):
                if isinstance(x, KerasTensor):
                    shape = tuple(size if d is None else d for d in x.shape)
                    return autodiff.Tensor(xp.zeros(shape, dtype=x.dtype))
                return x

            call_args = tuple(map_structure(leaf, a) for a in args)
            call_kwargs = {k: map_structure(leaf, v) for k, v in kwargs.items()}
            with autodiff.no_backward(), np.errstate(all="ignore"):
                runs.append(self.call(*call_args, **call_kwargs))
        return _merge(runs[0], runs[1])

    def symbolic_call(self, *args, **kwargs):
        outputs = self.compute_output_spec(*args, **kwargs)
        Node(self, args, kwargs, outputs)
        return outputs

    def _node_attribute(self, attribute):
        nodes = self._inbound_nodes
        if not nodes:
            raise AttributeError(f"Operation '{self.name}' has never been called and thus has no defined {attribute}.")
        tensors = nodes[0].input_tensors if attribute == "input" else nodes[0].output_tensors
        return tensors[0] if len(tensors) == 1 else list(tensors)

    @property
    def input(self):
        return self._node_attribute("input")

    @property
    def output(self):
        return self._node_attribute("output")

    def get_config(self):
        """Keras's config of an op: its name (the call's other arguments are in its node, in the file too)."""
        return {"name": self.name}

    @classmethod
    def from_config(cls, config):
        if not isinstance(config, dict) or set(config) - {"name"}:
            raise ValueError(
                f"Invalid config for the op {cls.__name__}: gpulayers reads {{'name': ...}} and takes the op's "
                f"other arguments from its call in the graph. Received: {config!r:.200}"
            )
        return cls(name=config.get("name"))

    def __repr__(self):
        return f"<Operation name={self.name}>"


def _merge(a, b):
    """The KerasTensor structure of two runs' outputs: sizes that differ become None."""
    if isinstance(a, dict):
        return {k: _merge(a[k], b[k]) for k in a}
    if isinstance(a, (list, tuple)):
        return type(a)(_merge(p, q) for p, q in zip(a, b))
    if not hasattr(a, "shape") or not hasattr(a, "dtype"):
        raise TypeError(f"A symbolic op must return tensors; this one returned {type(a).__name__}: {a!r:.80}")
    ta, tb = autodiff.as_tensor(a), autodiff.as_tensor(b)
    shape = tuple(p if p == q else None for p, q in zip(ta.shape, tb.shape))
    return KerasTensor(shape, ta.data.dtype)


def _operation_class(name, fn):
    return type(_camel(name), (Operation,), {"_fn": staticmethod(fn), "_op_name": name, "__module__": __name__})


def _symbolic_leaf(x):
    if isinstance(x, KerasTensor):
        return True
    if isinstance(x, (list, tuple)):
        return any(isinstance(v, KerasTensor) or isinstance(v, (list, tuple, dict)) and _symbolic_leaf(v) for v in x)
    if isinstance(x, dict):
        return any(_symbolic_leaf(v) for v in x.values())
    return False


_PLAIN = None


def _plain_types():
    global _PLAIN
    from gpulayers.variables import Variable

    _PLAIN = frozenset((autodiff.Tensor, Variable, np.ndarray, float, int, bool, str, type(None)))
    return _PLAIN


def symbolic_dispatch(name, fn):
    """``fn`` that, called with any KerasTensor among its arguments, adds an Operation to the graph instead."""
    cls = _operation_class(name, fn)

    @functools.wraps(fn)
    def op(*args, **kwargs):
        plain = _PLAIN or _plain_types()
        for a in args:
            if a.__class__ not in plain and _symbolic_leaf(a):
                return cls()(*args, **kwargs)
        if kwargs:
            for v in kwargs.values():
                if _symbolic_leaf(v):
                    return cls()(*args, **kwargs)
        return fn(*args, **kwargs)

    op.operation_class = cls
    op.__wrapped__ = fn
    return op


def is_symbolic_structure(x):
    """Whether a structure holds a KerasTensor (used by the conversion ops to refuse one)."""
    return any(isinstance(leaf, KerasTensor) for leaf in flatten(x))
