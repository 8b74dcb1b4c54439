"""Reverse-mode automatic differentiation, define-by-run.

Every differentiable operation (a :mod:`gpulayers.ops` function, a built-in
layer's call, a loss) returns a :class:`Tensor`: the backend array in
``.data`` and, while recording, the :class:`Node` that made it. A node holds
its inputs and a backward closure with the per-call state it needs (the
saved activations, a dropout mask, a pooling argmax), never state on a
layer, so a layer may be called any number of times in one forward pass.

:func:`gradient` walks the nodes that lead from a target back to its
sources in reverse order of creation and **sums** the gradients of a value
that feeds several consumers. Recording is on unless inside
:func:`no_backward` (``predict`` and ``evaluate`` use it); an operation
whose inputs need no gradient records nothing. A value needs a gradient
when it is a trainable :class:`~gpulayers.variables.Variable`, a Tensor
watched by a :class:`GradientTape`, or the output of a recorded node.

An operation is written as (see :func:`record`)::

    def exp(x):
        x = as_tensor(x)
        y = xp.exp(x.data)
        return record("exp", y, (x,), lambda g, needs: (g * y,))

Backward closures compute on raw arrays (NumPy or CuPy), so gradients of
gradients are not available.
"""

import contextlib
import itertools
import threading

import numpy as np

from backends import get_ops

__all__ = ["GradientTape", "Node", "Tensor", "as_tensor", "gradient", "no_backward", "record", "recording", "unwrap"]

_state = threading.local()
_sequence = itertools.count()  # creation order of nodes
_ops = None  # the gpulayers.ops package, bound when it is imported (the Tensor operators call it)


def recording():
    """Whether operations are being recorded for a backward pass here (not inside :func:`no_backward`)."""
    return getattr(_state, "recording", True)


@contextlib.contextmanager
def _recording_set(value):
    previous = recording()
    _state.recording = value
    try:
        yield
    finally:
        _state.recording = previous


def no_backward():
    """Within this block nothing is recorded: no nodes, no saved activations (inference)."""
    return _recording_set(False)


def autocast_dtype():
    """The dtype float variables are read in here (a mixed-precision layer's compute dtype), or None."""
    return getattr(_state, "autocast", None)


@contextlib.contextmanager
def autocast_scope(dtype):
    """Within this block a float Variable with ``autocast`` reads as a cast to ``dtype`` (None: as itself),
    a node on the tape, so its gradient comes back in the variable's own dtype (Keras's AutocastScope)."""
    previous = autocast_dtype()
    _state.autocast = None if dtype is None else np.dtype(dtype)
    try:
        yield
    finally:
        _state.autocast = previous


# ---------------------------------------------------------------- nodes


class Node:
    """One recorded operation: what it read and how to send gradients back to it.

    ``backward(grads, needs)`` gets the gradient of the target with respect
    to the node's output (a tuple of them for several outputs, zeros for
    outputs nothing used) and ``needs``, one bool per input telling whether
    that input's gradient is wanted; it returns one array (or None) per
    input, each of that input's shape.
    """

    __slots__ = ("op", "inputs", "needs", "backward", "seq", "n_out", "out_specs", "attrs")

    def __init__(self, op, inputs, needs, backward, out_specs=None, attrs=None):
        self.op = op
        self.inputs = inputs
        self.needs = needs
        self.backward = backward
        self.seq = next(_sequence)
        self.out_specs = out_specs  # ((shape, dtype), ...) of several outputs, for zero gradients
        self.n_out = 1 if out_specs is None else len(out_specs)
        self.attrs = attrs

    def __repr__(self):
        return f"<Node {self.op} #{self.seq} inputs={len(self.inputs)} outputs={self.n_out}>"


# ---------------------------------------------------------------- tensors


class Tensor:
    """A backend array (``data``: numpy or cupy) with the node that produced it.

    It behaves like a Keras backend tensor: ``shape`` (a tuple of ints),
    ``dtype``, ``ndim``, arithmetic and comparison operators, indexing,
    ``numpy()`` and ``np.asarray(tensor)``. Operators and NumPy ufuncs with a
    ``gpulayers.ops`` counterpart are recorded like the ops themselves.
    """

    __slots__ = ("data", "node", "index", "watched", "__weakref__")
    __array_priority__ = 1000  # numpy and cupy binary operators defer to ours

    def __init__(self, data, node=None, index=0):
        self.data = data
        self.node = node
        self.index = index
        self.watched = False

    @property
    def requires_grad(self):
        """Whether a gradient can flow to this value (a recorded result or a watched float tensor)."""
        return self.node is not None or (self.watched and self.data.dtype.kind in "fc")

    # ------------------------------------------------------------ array facts
    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return int(self.data.size)

    def __len__(self):
        if not self.data.ndim:
            raise TypeError("len() of a 0-d tensor")
        return int(self.data.shape[0])

    def numpy(self):
        """A host (numpy) copy of the value."""
        return get_ops().to_numpy(self.data) if not isinstance(self.data, np.ndarray) else self.data.copy()

    def __array__(self, dtype=None, copy=None):
        host = self.data if isinstance(self.data, np.ndarray) else get_ops().to_numpy(self.data)
        return host if dtype is None else host.astype(dtype, copy=False)

    @property
    def __cuda_array_interface__(self):
        return self.data.__cuda_array_interface__  # AttributeError on the host, as for numpy arrays

    def __dlpack__(self, *args, **kwargs):
        return self.data.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.data.__dlpack_device__()

    def item(self):
        return self.data.item()

    def tolist(self):
        return self.numpy().tolist()

    def __bool__(self):
        return bool(self.data)

    def __float__(self):
        return float(self.data)

    def __int__(self):
        return int(self.data)

    def __index__(self):
        return self.data.__index__()

    def __iter__(self):
        if not self.data.ndim:
            raise TypeError("iteration over a 0-d tensor")
        for i in range(self.data.shape[0]):
            yield self[i]

    def __repr__(self):
        grad = f", node={self.node.op}" if self.node is not None else ""
        return f"<Tensor shape={self.shape} dtype={self.dtype}{grad}>\n{self.data!r}"

    __hash__ = object.__hash__  # by identity, though == is elementwise

    # ------------------------------------------------------------ methods (ops)
    def astype(self, dtype, copy=True):
        return _ops.cast(self, dtype)

    def reshape(self, *shape):
        return _ops.reshape(self, shape[0] if len(shape) == 1 else shape)

    def transpose(self, *axes):
        return _ops.transpose(self, (axes[0] if len(axes) == 1 else axes) or None)

    @property
    def T(self):
        return _ops.transpose(self)

    # numpy's functions call these methods with numpy's arguments (np.max(t, axis=1) calls t.max(axis=1, out=None))
    def sum(self, axis=None, dtype=None, out=None, keepdims=False, **kwargs):
        _no_out(out)
        return _ops.sum(self if dtype is None else self.astype(dtype), axis=axis, keepdims=keepdims)

    def mean(self, axis=None, dtype=None, out=None, keepdims=False, **kwargs):
        _no_out(out)
        return _ops.mean(self if dtype is None else self.astype(dtype), axis=axis, keepdims=keepdims)

    def max(self, axis=None, out=None, keepdims=False, **kwargs):
        _no_out(out)
        return _ops.max(self, axis=axis, keepdims=keepdims)

    def min(self, axis=None, out=None, keepdims=False, **kwargs):
        _no_out(out)
        return _ops.min(self, axis=axis, keepdims=keepdims)

    def all(self, axis=None, out=None, keepdims=False, **kwargs):
        _no_out(out)
        return _ops.all(self, axis=axis, keepdims=keepdims)

    def any(self, axis=None, out=None, keepdims=False, **kwargs):
        _no_out(out)
        return _ops.any(self, axis=axis, keepdims=keepdims)

    # ------------------------------------------------------------ operators
    def __getitem__(self, key):
        return _ops.get_item(self, key)

    def __setitem__(self, key, value):
        raise TypeError(
            "gpulayers tensors are immutable, as in TensorFlow and JAX: use ops.where, ops.concatenate or "
            "ops.slice_update to build a new tensor."
        )

    def __neg__(self):
        return _ops.negative(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return _ops.absolute(self)

    def __invert__(self):
        return _ops.logical_not(self) if self.data.dtype.kind == "b" else _ops.bitwise_invert(self)

    def __add__(self, other):
        return _ops.add(self, other)

    def __radd__(self, other):
        return _ops.add(other, self)

    def __sub__(self, other):
        return _ops.subtract(self, other)

    def __rsub__(self, other):
        return _ops.subtract(other, self)

    def __mul__(self, other):
        return _ops.multiply(self, other)

    def __rmul__(self, other):
        return _ops.multiply(other, self)

    def __truediv__(self, other):
        return _ops.true_divide(self, other)

    def __rtruediv__(self, other):
        return _ops.true_divide(other, self)

    def __floordiv__(self, other):
        return _ops.floor_divide(self, other)

    def __rfloordiv__(self, other):
        return _ops.floor_divide(other, self)

    def __mod__(self, other):
        return _ops.mod(self, other)

    def __rmod__(self, other):
        return _ops.mod(other, self)

    def __pow__(self, other):
        return _ops.power(self, other)

    def __rpow__(self, other):
        return _ops.power(other, self)

    def __matmul__(self, other):
        return _ops.matmul(self, other)

    def __rmatmul__(self, other):
        return _ops.matmul(other, self)

    def __eq__(self, other):
        return _ops.equal(self, other)

    def __ne__(self, other):
        return _ops.not_equal(self, other)

    def __lt__(self, other):
        return _ops.less(self, other)

    def __le__(self, other):
        return _ops.less_equal(self, other)

    def __gt__(self, other):
        return _ops.greater(self, other)

    def __ge__(self, other):
        return _ops.greater_equal(self, other)

    def __and__(self, other):
        return _ops.logical_and(self, other)

    def __rand__(self, other):
        return _ops.logical_and(other, self)

    def __or__(self, other):
        return _ops.logical_or(self, other)

    def __ror__(self, other):
        return _ops.logical_or(other, self)

    def __xor__(self, other):
        return _ops.logical_xor(self, other)

    def __rxor__(self, other):
        return _ops.logical_xor(other, self)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        """``np.exp(tensor)``, ``ndarray + tensor``: the matching op when there is one, else plain NumPy."""
        fn = _ops.numpy.UFUNCS.get(ufunc) if method == "__call__" and not kwargs else None
        if fn is not None:
            return fn(*inputs)
        raw = [unwrap(x) for x in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(unwrap(x) for x in kwargs["out"])
        return getattr(ufunc, method)(*raw, **kwargs)


def _no_out(out):
    if out is not None:
        raise TypeError("gpulayers tensors are immutable: `out=` is not supported.")


def unwrap(x):
    """The raw array of a Tensor (or Variable); anything else as it is."""
    return x.data if isinstance(x, Tensor) else x


def as_tensor(x, dtype=None):
    """``x`` as a Tensor on the active backend (a Tensor stays itself unless a cast is asked for)."""
    if isinstance(x, Tensor):
        if dtype is None:
            cast = getattr(_state, "autocast", None)
            if cast is None or x.node is not None or not getattr(x, "autocast", False) \
                    or x.data.dtype == cast or x.data.dtype.kind != "f":
                return x
            # a variable read inside a mixed-precision layer: a cast node (not ops.cast, which reads its
            # input through here)
            source = x.data.dtype
            return record("cast", x.data.astype(cast), (x,), lambda g, needs: (g.astype(source),))
        if x.data.dtype == np.dtype(dtype):
            return x
        return _ops.cast(x, dtype)
    ops = get_ops()
    if isinstance(x, (list, tuple)) and any(isinstance(v, Tensor) for v in x):
        return _ops.stack(list(x)) if dtype is None else _ops.cast(_ops.stack(list(x)), dtype)
    data = ops.asarray(x, dtype=dtype)
    if data.ndim and not data.flags.c_contiguous:
        # C order: the summation order (BLAS, reductions), and so the last bits of a result, must not
        # depend on how the caller's array is laid out.
        data = ops.xp.ascontiguousarray(data)
    return Tensor(data)


# ---------------------------------------------------------------- recording


def record(op, outputs, inputs, backward, attrs=None):
    """Wrap an operation's raw result as Tensor(s), with a node when one is needed.

    Args:
        op: a short name (``"matmul"``); also how a loss recognises the
            softmax or sigmoid it fuses with.
        outputs: the raw array, or a tuple of them for several outputs.
        inputs: the operation's inputs (Tensors, or None for absent ones).
        backward: ``backward(grads, needs) -> one gradient (or None) per input``.
        attrs: optional facts about the call (a softmax's axis).

    Returns a Tensor, or a tuple of Tensors for a tuple of outputs. Nothing is
    recorded inside :func:`no_backward` or when no input needs a gradient.
    """
    multi = isinstance(outputs, tuple)
    node = None
    if getattr(_state, "recording", True):
        needs = tuple(t is not None and t.requires_grad for t in inputs)
        if True in needs:
            specs = tuple((y.shape, y.dtype) for y in outputs) if multi else None
            node = Node(op, tuple(inputs), needs, backward, specs, attrs)
    if not multi:
        return Tensor(outputs, node)
    return tuple(Tensor(y, node, i) for i, y in enumerate(outputs))


# ---------------------------------------------------------------- gradients


def _as_list(sources):
    """(flat list of sources, function rebuilding the caller's structure from a flat list)."""
    if isinstance(sources, Tensor):
        return [sources], lambda flat: flat[0]
    if isinstance(sources, dict):
        keys = list(sources)
        return [sources[k] for k in keys], lambda flat: dict(zip(keys, flat))
    if isinstance(sources, (list, tuple)):
        items = list(sources)
        for i, s in enumerate(items):
            if not isinstance(s, Tensor):
                raise TypeError(
                    f"Invalid type for `sources[{i}]`: expected a Tensor or a Variable. Received: {type(s).__name__}"
                )
        return items, (lambda flat: flat) if isinstance(sources, list) else (lambda flat: tuple(flat))
    raise TypeError(f"Invalid type for `sources`: expected a Tensor, a Variable, or a list or dict of them. Received: {sources!r:.80}")


def gradient(target, sources, output_gradient=None, free=False):
    """d ``target`` / d ``sources`` by reverse-mode accumulation.

    Args:
        target: a Tensor; non-scalar targets are summed (their gradient is
            ``output_gradient``, ones by default).
        sources: a Tensor or Variable, or a list, tuple or dict of them.
        output_gradient: the gradient to start from (target's shape), or None.
        free: drop each node's saved state once used (a training step that
            will not differentiate the same graph again frees memory early).

    Returns the gradients in the structure of ``sources``; None for a source
    the target does not depend on (as ``tf.GradientTape.gradient``).
    """
    if not isinstance(target, Tensor):
        raise TypeError(f"Invalid type for `target`: expected a Tensor. Received: {type(target).__name__}")
    flat, rebuild = _as_list(sources)
    xp = get_ops().xp
    seed = xp.ones_like(target.data) if output_gradient is None else get_ops().asarray(unwrap(output_gradient))
    if seed.ndim and not seed.flags.c_contiguous:  # the summation order must not follow the caller's layout
        seed = xp.ascontiguousarray(seed)
    if tuple(seed.shape) != tuple(target.data.shape):
        raise ValueError(
            f"Invalid shape for `output_gradient`: expected the target's shape {tuple(target.data.shape)}. "
            f"Received: {tuple(seed.shape)}"
        )
    leaf_ids = {id(s) for s in flat if s.node is None}
    wanted = {}  # (id(node), index) -> gradient of an intermediate source
    for s in flat:
        if s.node is not None:
            wanted[(id(s.node), s.index)] = None
    wanted_nodes = {key[0] for key in wanted}
    leaf_grads = {}

    if target.node is None:
        if id(target) in leaf_ids:
            leaf_grads[id(target)] = seed
        return rebuild([leaf_grads.get(id(s)) if s.node is None else None for s in flat])

    # Every node the target depends on, oldest first (inputs are older than their consumers).
    nodes, seen, stack = [], {id(target.node)}, [target.node]
    while stack:
        node = stack.pop()
        nodes.append(node)
        for t, need in zip(node.inputs, node.needs):
            if need and t.node is not None and id(t.node) not in seen:
                if t.node.backward is None:
                    raise RuntimeError(
                        "This graph was already differentiated and freed (a non-persistent GradientTape, "
                        "or a training step): run the forward pass again."
                    )
                seen.add(id(t.node))
                stack.append(t.node)
    nodes.sort(key=lambda n: n.seq)
    # Which nodes lead to a source; only their inputs' gradients are computed.
    useful = set()
    for node in nodes:
        if id(node) in wanted_nodes or any(
            need and (id(t) in leaf_ids if t.node is None else id(t.node) in useful)
            for t, need in zip(node.inputs, node.needs)
        ):
            useful.add(id(node))

    pending = {id(target.node): [None] * target.node.n_out}
    pending[id(target.node)][target.index] = seed
    for node in reversed(nodes):
        grads = pending.pop(id(node), None)
        if grads is None or id(node) not in useful:
            continue
        for i, g in enumerate(grads):
            if (id(node), i) in wanted:
                wanted[(id(node), i)] = g
        needs = tuple(
            need and (id(t) in leaf_ids if t.node is None else id(t.node) in useful)
            for t, need in zip(node.inputs, node.needs)
        )
        if True not in needs:
            continue
        if node.n_out == 1:
            upstream = grads[0]
        else:
            upstream = tuple(g if g is not None else xp.zeros(s, dtype=d) for g, (s, d) in zip(grads, node.out_specs))
        input_grads = node.backward(upstream, needs)
        if free:
            node.backward = None
        for t, need, g in zip(node.inputs, needs, input_grads):
            if not need or g is None:
                continue
            if tuple(g.shape) != tuple(t.data.shape):
                raise RuntimeError(
                    f"Internal error: the backward pass of '{node.op}' gave a gradient of shape {tuple(g.shape)} "
                    f"for an input of shape {tuple(t.data.shape)}."
                )
            if g.dtype != t.data.dtype:
                g = g.astype(t.data.dtype)
            if t.node is None:
                old = leaf_grads.get(id(t))
                leaf_grads[id(t)] = g if old is None else old + g
            else:
                slots = pending.get(id(t.node))
                if slots is None:
                    slots = pending[id(t.node)] = [None] * t.node.n_out
                old = slots[t.index]
                slots[t.index] = g if old is None else old + g
    if free:
        target.node.backward = None
    return rebuild([leaf_grads.get(id(s)) if s.node is None else wanted[(id(s.node), s.index)] for s in flat])


class GradientTape:
    """``tf.GradientTape``'s interface over gpulayers' recording.

    Inside the block every operation records (even within
    :func:`no_backward`); ``watch(tensor)`` makes a tensor that is not a
    trainable variable (an input, a frozen weight) a source of gradients.
    A tape that is not ``persistent`` gives one :meth:`gradient` and then
    frees the graph.

    Example:
        >>> with gpulayers.GradientTape() as tape:
        ...     loss = ops.sum(layer(x) ** 2)
        >>> grads = tape.gradient(loss, layer.trainable_weights)
    """

    def __init__(self, persistent=False, watch_accessed_variables=True):
        self.persistent = bool(persistent)
        self._context = None
        self._used = False

    def __enter__(self):
        self._context = _recording_set(True)
        self._context.__enter__()
        return self

    def __exit__(self, *exc):
        self._context.__exit__(*exc)
        self._context = None
        return False

    def watch(self, tensor):
        """Make ``tensor`` (a Tensor or Variable, or a list of them) a source of gradients."""
        items = list(tensor) if isinstance(tensor, (list, tuple)) else [tensor]
        for t in items:
            if not isinstance(t, Tensor):
                raise TypeError(
                    f"Invalid type for `tensor` of GradientTape.watch: expected a Tensor or a Variable (convert an "
                    f"array with ops.convert_to_tensor first). Received: {type(t).__name__}"
                )
            t.watched = True

    def gradient(self, target, sources, output_gradients=None):
        """Gradients of ``target`` with respect to ``sources`` (see :func:`gradient`)."""
        if self._used and not self.persistent:
            raise RuntimeError("A non-persistent GradientTape can only compute one gradient; use persistent=True.")
        self._used = True
        return gradient(target, sources, output_gradients, free=not self.persistent)
