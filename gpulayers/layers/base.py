"""The Layer base class.

A layer's life, as in Keras 3: ``__init__`` standardizes the arguments,
``build(input_shape)`` creates the weights (``add_weight``), ``call(inputs)``
computes on :class:`~gpulayers.autodiff.Tensor` inputs. Gradients come from
the tape (:mod:`gpulayers.autodiff`): ``call`` written with ``gpulayers.ops``
is differentiable as it stands, and the built-in layers record one node per
call holding their hand-written backward pass (the RawKernels and NumPy fast
paths) in a closure. Nothing of a call is kept on the layer, so a layer may
be called any number of times in one forward pass; its weights' gradients
are then summed over the calls.

``__call__`` does what Keras's does: converts array inputs to tensors (float
inputs to the layer's dtype), checks the input spec, builds on first use,
resolves ``training`` (explicit, else the enclosing layer's, else ``call``'s
default), clears the losses of the outermost call's layers, calls, and adds
the activity regularizer's loss (divided by the batch size, as Keras 3.14+).
"""

import contextlib
import inspect
import math
import threading
import warnings

import numpy as np

from backends import get_ops
from gpulayers import activations, autodiff, config, constraints, dtype_policies, initializers, regularizers, utils
from gpulayers.autodiff import Tensor, no_backward
from gpulayers.argument_validation import MAX_DIM, standardize_int, standardize_shape
from gpulayers.layers.arrays import (
    LayerOutOfMemoryError,
    check_finite,
    check_weight_list,
    compute_array,
    numpy_dtype,
    ops_to_numpy,
    out_of_memory,
    to_backend,
)
from gpulayers.symbolic import any_symbolic
from gpulayers.tree import flatten, is_structure, map_shapes, map_structure, shape_structure
from gpulayers.layers.weight_allocation import active_deferral, check_weight_size
from gpulayers.variables import Variable

__all__ = ["Layer", "Variable", "no_backward"]

_state = threading.local()  # the call context of the outermost layer call, and shape tracing


# ---------------------------------------------------------------- Layer


# Attributes the base class manages itself: never tracked as sublayers or weights.
_UNTRACKED = frozenset(
    {"_layers", "_trainable_variables", "_non_trainable_variables", "_losses", "_metrics", "_variables"}
)
_CALL_INFO = {}  # layer class -> (call accepts `training`, its default)


def _call_info(cls):
    info = _CALL_INFO.get(cls)
    if info is None:
        parameter = inspect.signature(cls.call).parameters.get("training")
        default = None
        if parameter is not None and parameter.default is not inspect.Parameter.empty:
            default = parameter.default
        info = _CALL_INFO[cls] = (parameter is not None, default)
    return info


class _CallContext:
    """The outermost layer call in progress: its resolved ``training``, inherited by inner calls."""

    __slots__ = ("training",)

    def __init__(self):
        self.training = None


def _tracing():
    return getattr(_state, "tracing", False)


class Layer:
    """Base class of all layers (Keras 3's ``keras.layers.Layer``).

    Subclass it as in Keras: create weights in ``__init__`` or in
    ``build(input_shape)`` with :meth:`add_weight`, compute in
    ``call(inputs)`` (optionally ``call(inputs, training=None)``) with
    ``gpulayers.ops``, add extra losses with :meth:`add_loss`, and give
    ``get_config`` for files. Layers and variables assigned as attributes are
    tracked (their weights and losses join this layer's).

    Args:
        activity_regularizer: Regularizer applied to the layer's outputs; its
            value (divided by the batch size) joins ``layer.losses``.
        trainable: Whether the layer's weights are updated by training.
        name: Unique name; by default the snake_case class name with a
            ``_1``, ``_2``... suffix (``gpulayers.utils.clear_session`` resets it).
        dtype: ``'float16'``, ``'float32'`` or ``'float64'``; default ``floatx()``.
        autocast: Whether float inputs are cast to the layer's dtype.
        input_shape: On the first layer of a Sequential, the shape of one
            sample (no batch axis); ``batch_size`` may go with it.
        input_dim: Shorthand for ``input_shape=(input_dim,)``.
    """

    def __new__(cls, *args, **kwargs):
        # As Keras: the constructor's arguments, when all are plain values, become the config of a
        # user's layer that defines no get_config.
        obj = super().__new__(cls)
        names = inspect.getfullargspec(cls.__init__).args[1:]
        given = dict(zip(names, args), **kwargs)
        object.__setattr__(obj, "_auto_config", given if _plain(given) else None)
        return obj

    single_input = False  # the built-in layers take one tensor; a user's layer may take a list or dict
    # Keras 3.15 builds the layers whose build has nothing to make (pooling, Dropout, Activation, Reshape,
    # the activation layers) in their constructor: built is True at once, and build() is never called.
    built_at_construction = False
    # Which inputs __call__ casts to the layer's dtype (with autocast): "float" ones, as Keras's autocast
    # (a user's layer may take integer indices), "all" numeric ones (the built-in layers compute in their
    # dtype), or None (a model leaves that to its layers).
    input_cast = "float"

    def __init__(
        self,
        *,
        activity_regularizer=None,
        trainable=True,
        name=None,
        dtype=None,
        autocast=True,
        input_shape=None,
        batch_size=None,
        input_dim=None,
        batch_input_shape=None,
        **kwargs,
    ):
        if kwargs:
            raise TypeError(
                f"Unrecognized keyword arguments passed to {type(self).__name__}: {kwargs}"
            )
        if name is None:
            name = utils.unique_name(utils.to_snake_case(type(self).__name__))
        elif not isinstance(name, str) or not name or "/" in name:
            raise ValueError(
                f"Invalid value for `name`: expected a non-empty string without '/'. Received: name={name!r}"
            )
        for attr in _UNTRACKED:  # a subclass may have set tracked attributes before calling super().__init__()
            self.__dict__.setdefault(attr, [])
        self.name = name
        self._dtype_policy = dtype_policies.get(dtype)
        self._trainable = bool(trainable)
        self.autocast = bool(autocast)
        self.activity_regularizer = regularizers.get(activity_regularizer, argument="activity_regularizer")
        # The shape of a batch, when the user gave one (used by Sequential).
        self._batch_input_shape = None
        if batch_input_shape is not None:
            self._batch_input_shape = standardize_shape(batch_input_shape, "batch_input_shape")
        elif input_shape is not None or input_dim is not None:
            warnings.warn(
                "Do not pass an `input_shape`/`input_dim` argument to a layer. When using Sequential models, "
                "prefer using an `Input(shape)` object as the first layer in the model instead.",
                stacklevel=3,
            )
            if input_shape is None:
                input_shape = (standardize_int(input_dim, "input_dim", maximum=MAX_DIM),)
            if batch_size is not None:
                batch_size = standardize_int(batch_size, "batch_size", maximum=MAX_DIM)
            self._batch_input_shape = (batch_size,) + standardize_shape(input_shape, "input_shape")
        self.__dict__.setdefault("built", self.built_at_construction)
        self.__dict__.setdefault("input_spec", None)
        self._build_input_shape = None
        self._initialized = True

    def _check_super_called(self):
        if not self.__dict__.get("_initialized"):
            raise RuntimeError(
                f"In layer '{type(self).__name__}', you forgot to call `super().__init__()` as the first statement "
                "in the `__init__()` method. Go add it!"
            )

    # ------------------------------------------------------------ tracking

    _untracked_attributes = _UNTRACKED  # a subclass adds the bookkeeping attributes it keeps itself

    def __setattr__(self, name, value):
        if name not in self._untracked_attributes:
            self._track(value)
        object.__setattr__(self, name, value)

    def _track(self, value):
        """Adopt a layer, variable or metric assigned as an attribute (or a list or dict of them)."""
        if isinstance(value, Layer):
            layers = self.__dict__.setdefault("_layers", [])
            if value is not self and all(value is not l for l in layers):
                layers.append(value)
        elif isinstance(value, Variable):
            self._track_variable(value)
        elif isinstance(value, (list, tuple)):
            for item in value:
                if isinstance(item, (Layer, Variable, list, tuple, dict)) or _is_metric(item):
                    self._track(item)
        elif isinstance(value, dict):
            for item in value.values():
                self._track(item)
        elif _is_metric(value):
            metrics = self.__dict__.setdefault("_metrics", [])
            if all(value is not m for m in metrics):
                metrics.append(value)

    def _track_variable(self, variable):
        d = self.__dict__
        trainable = d.setdefault("_trainable_variables", [])
        others = d.setdefault("_non_trainable_variables", [])
        if any(variable is v for v in trainable) or any(variable is v for v in others):
            return
        (trainable if variable.trainable else others).append(variable)

    def _flatten_layers(self, include_self=True, recursive=True):
        """This layer (optionally) and every layer inside it, each once, breadth first (Keras's signature:
        ``recursive=False`` gives the direct children only)."""
        out, seen, queue = ([self] if include_self else []), {id(self)}, list(self._layers)
        while queue:
            layer = queue.pop(0)
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            out.append(layer)
            if recursive:
                queue.extend(layer._layers)
        return out

    # ------------------------------------------------------------ properties

    @property
    def dtype_policy(self):
        """The layer's :class:`~gpulayers.dtype_policies.DTypePolicy`."""
        return self._dtype_policy

    @dtype_policy.setter
    def dtype_policy(self, value):
        self._dtype_policy = dtype_policies.get(value, argument="dtype_policy")

    @property
    def dtype(self):
        """The dtype of the layer's weights (Keras's alias of ``variable_dtype``), e.g. ``'float32'``."""
        return self.variable_dtype

    @property
    def variable_dtype(self):
        return self._dtype_policy.variable_dtype

    @property
    def compute_dtype(self):
        """The dtype the layer casts its float inputs (and, with a mixed policy, its weights) to."""
        return self._dtype_policy.compute_dtype

    @property
    def input_dtype(self):
        return self.compute_dtype

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        """Freeze (False) or unfreeze this layer, its weights and every layer inside it (Keras 3's rule)."""
        value = bool(value)
        self._trainable = value
        for v in self._trainable_variables:
            v.trainable = value
        for layer in self._layers:
            layer.trainable = value

    @property
    def weights(self):
        """Every weight: this layer's trainable ones, its other ones, then its sublayers' (Keras's order)."""
        out, seen = [], set()
        for v in self._trainable_variables + self._non_trainable_variables:
            if id(v) not in seen:
                seen.add(id(v))
                out.append(v)
        for layer in self._layers:
            for v in layer.weights:
                if id(v) not in seen:
                    seen.add(id(v))
                    out.append(v)
        return out

    @property
    def variables(self):
        """The weights and the state of the metrics the layer tracks."""
        out = self.weights
        seen = {id(v) for v in out}
        for layer in self._flatten_layers():
            for metric in layer._metrics:
                for v in getattr(metric, "variables", ()):
                    if id(v) not in seen:
                        seen.add(id(v))
                        out.append(v)
        return out

    @property
    def trainable_weights(self):
        return [v for v in self.weights if v.trainable] if self._trainable else []

    trainable_variables = trainable_weights

    @property
    def non_trainable_weights(self):
        if not self._trainable:
            return self.weights
        return [v for v in self.weights if not v.trainable]

    non_trainable_variables = non_trainable_weights

    @property
    def losses(self):
        """The losses of the last call (``add_loss``, activity regularizers, sublayers'), then the
        trainable weights' regularization penalties, computed now."""
        out = []
        for layer in self._flatten_layers():
            out.extend(layer._losses)
        for v in self.trainable_weights:
            if v.regularizer is not None:
                out.append(autodiff.as_tensor(v.regularizer(v)))
        return out

    def add_loss(self, loss):
        """Add a scalar loss tensor (or a list of them) computed in ``call``; ``fit`` adds it to the loss."""
        if _tracing():
            return
        for x in flatten(loss) if isinstance(loss, (list, tuple)) else [loss]:
            if not isinstance(x, Tensor) and not (hasattr(x, "shape") and hasattr(x, "dtype")):
                raise ValueError(
                    "`add_loss()` can only be called from inside `build()` or `call()`, on a tensor input. "
                    f"Received invalid value: {x!r:.80}"
                )
            self._losses.append(autodiff.as_tensor(x))

    def _clear_losses(self):
        for layer in self._flatten_layers():
            layer._losses.clear()

    @property
    def output_shape(self):
        """Output shape with the batch axis as None; AttributeError until built."""
        if not self.built or self._build_input_shape is None:
            raise AttributeError(
                f"The layer '{self.name}' has never been called and thus has no defined output shape."
            )
        return self.compute_output_shape(self._build_input_shape)

    @property
    def input_shape(self):
        if self._build_input_shape is None:
            raise AttributeError(f"The layer '{self.name}' has no defined input shape yet.")
        return self._build_input_shape

    # ------------------------------------------------------------ graph connectivity

    def _node_attribute(self, attribute, what):
        nodes = self.__dict__.get("_inbound_nodes", [])
        if not nodes:
            raise AttributeError(
                f"The layer {self.name} has never been called and thus has no defined {what}."
            )
        node = nodes[0]
        if attribute == "input":
            values = node.input_tensors
        else:
            values = node.output_tensors
        return values[0] if len(values) == 1 else values

    @property
    def input(self):
        """The symbolic input of the layer's first call on KerasTensors (a list for several)."""
        return self._node_attribute("input", "input")

    @property
    def output(self):
        """The symbolic output of the layer's first call on KerasTensors (a list for several)."""
        return self._node_attribute("output", "output")

    # ------------------------------------------------------------ weights

    def add_weight(
        self,
        *args,
        shape=None,
        initializer=None,
        dtype=None,
        trainable=True,
        autocast=True,
        regularizer=None,
        constraint=None,
        aggregation="none",
        overwrite_with_gradient=False,
        name=None,
    ):
        """Create a weight, as Keras 3's ``add_weight``, on the active backend.

        ``shape`` (default ``()``), ``initializer`` (default
        ``glorot_uniform`` for float dtypes, ``zeros`` otherwise; a name, a
        callable or an initializer object), ``dtype`` (default the layer's),
        ``trainable``, ``regularizer`` (its penalty joins ``losses``),
        ``constraint`` (applied after each optimizer update), ``name``
        (optional). The initial values are drawn on the host with NumPy, so a
        seed gives the same weights on every backend; inside
        ``weight_allocation.deferred_initialization`` (a model being loaded)
        none are drawn. A weight larger than the process can hold (see
        ``weight_allocation.weight_byte_limit``) is refused with ValueError first.
        """
        self._check_super_called()
        if args:  # Keras's legacy positional form: (shape, initializer, dtype)
            if len(args) > 3:
                raise TypeError(f"add_weight() takes at most 3 positional arguments but {len(args)} were given.")
            if isinstance(args[0], str):
                raise ValueError(
                    f"`name` must be passed as a keyword argument. Received: add_weight('{args[0]}', ...). "
                    f"Use: add_weight(shape=..., name='{args[0]}')."
                )
            given = {"shape": shape, "initializer": initializer, "dtype": dtype}
            for key, value in zip(given, args):
                if given[key] is not None:
                    raise ValueError(f"`{key}` was passed both positionally and as a keyword argument.")
                given[key] = value
            shape, initializer, dtype = given["shape"], given["initializer"], given["dtype"]
        shape = () if shape is None else standardize_shape(shape, "shape")
        if None in shape:
            raise ValueError(
                f"Shapes used to initialize variables must be fully-defined (no `None` dimensions). "
                f"Received: shape={shape} for weight '{name}' of layer '{self.name}'"
            )
        dtype = self.variable_dtype if dtype is None else np.dtype(dtype).name
        if initializer is None:
            initializer = "glorot_uniform" if np.dtype(dtype).kind == "f" else "zeros"
        initializer = initializers.get(initializer, argument="initializer")
        name = name or utils.unique_name("variable")
        check_weight_size(self, name, shape, dtype)
        deferred = active_deferral()
        if deferred is not None:
            value = deferred.placeholder(self, name, shape, dtype)
        else:
            host = np.asarray(initializer(tuple(shape), dtype=dtype), dtype=dtype)
            if host.shape != tuple(shape):
                raise ValueError(
                    f"Initializer {initializer!r} returned shape {host.shape} for weight '{name}' "
                    f"of layer '{self.name}', expected {tuple(shape)}"
                )
            value = get_ops().asarray(host)
        var = Variable.from_array(
            value,
            trainable=trainable,
            name=name,
            regularizer=regularizers.get(regularizer, argument="regularizer"),
            constraint=constraints.get(constraint, argument="constraint"),
            autocast=autocast,
            aggregation=aggregation,
        )
        var.path = f"{self.name}/{name}"
        var.overwrite_with_gradient = bool(overwrite_with_gradient)
        self._track_variable(var)
        if trainable and not self._trainable:
            var.trainable = False  # a frozen layer's new weights stay frozen until it is unfrozen
        if deferred is not None:
            deferred.pending.append((var, value, initializer))
        return var

    add_variable = add_weight

    def get_weights(self):
        """The weights as numpy arrays, in Keras's order."""
        return [v.numpy() for v in self.weights]

    def set_weights(self, weights):
        """Set all weights from numpy arrays; every shape is checked before any is assigned."""
        params = self.weights
        check_weight_list(weights, params, f"layer '{self.name}'")
        ops = get_ops()
        # Copies, so that changing the caller's arrays later leaves the layer alone.
        values = [ops.asarray(np.asarray(w), dtype=p.dtype).copy() for w, p in zip(weights, params)]
        for p, value in zip(params, values):
            p.value = value

    def count_params(self):
        if not self.built:
            raise ValueError(
                f"You tried to call `count_params` on layer '{self.name}', but the layer isn't built."
            )
        return int(sum(math.prod(v.shape) for v in self.weights))

    # ------------------------------------------------------------ building

    def build(self, input_shape):
        """Create the weights for inputs of ``input_shape``. Layers with weights override it."""
        self.built = True

    def _overrides(self, method):
        return getattr(type(self), method) is not getattr(Layer, method)

    def compute_output_shape(self, input_shape):
        """Output shape for ``input_shape`` (a tuple, or a structure of them for several inputs).

        Layers that know their geometry override it (and validate the shape
        there, without side effects). Otherwise the shape is found by running
        ``call`` on zeros, in inference mode, twice, with each unknown
        (None) size set to 2 and then 3: an output size that follows them is
        unknown too. The layer's weights are left as they were.
        """
        return self._traced_output_shape(input_shape)

    def _traced_output_shape(self, input_shape):
        return map_structure(lambda t: t.shape, self._traced_spec((input_shape,), {}, shapes=True))

    def _traced_spec(self, args, kwargs, shapes=False):
        """The output KerasTensors of ``call`` on zeros for each KerasTensor (or, with ``shapes``, each shape
        of ``args[0]``), run twice in inference mode with every unknown size set to 2 and then 3."""
        from gpulayers.symbolic import KerasTensor

        ops = get_ops()
        if not self.built:
            self.build_from_shape(args[0] if shapes else shape_structure(args[0]))
        variables = [(v, v.data) for layer in self._flatten_layers() for v in layer.weights]

        def concrete(size):
            def zeros(shape, dtype):
                return Tensor(ops.xp.zeros(tuple(size if d is None else int(d) for d in shape), dtype=dtype))

            if shapes:
                return (map_shapes(lambda s: zeros(s, self.compute_dtype), args[0]),) + tuple(args[1:]), kwargs

            def leaf(x):
                return zeros(x.shape, x.dtype) if isinstance(x, KerasTensor) else x

            return tuple(map_structure(leaf, a) for a in args), {k: map_structure(leaf, v) for k, v in kwargs.items()}

        previous = (_tracing(), getattr(_state, "context", None))
        _state.tracing, _state.context = True, _CallContext()
        accepts_training, _ = _call_info(type(self))
        try:
            with no_backward():
                outs = []
                for n in (2, 3):
                    call_args, call_kwargs = concrete(n)
                    if accepts_training:
                        call_kwargs["training"] = False
                    with self._autocast_scope():
                        outs.append(self.call(*call_args, **call_kwargs))
        finally:
            _state.tracing, _state.context = previous
            for v, value in variables:
                v.data = value

        def merge(a, b):
            shape = tuple(p if p == q else None for p, q in zip(a.shape, b.shape))
            return KerasTensor(shape, a.data.dtype)

        return _merge_structures(merge, outs[0], outs[1])

    def compute_output_spec(self, *args, **kwargs):
        """The output KerasTensor(s) of a call on KerasTensors ``args`` (builds the layer first).

        From :meth:`compute_output_shape` when the layer defines it (the
        dtype: the layer's own for the inputs it casts, else the input's),
        otherwise by tracing ``call`` on zeros.
        """
        from gpulayers.symbolic import KerasTensor, any_symbolic

        inputs = args[0]
        shape = shape_structure(inputs)
        if not self.built:
            self._build_for_call(args, kwargs, shape)
        elif isinstance(inputs, KerasTensor) and self.input_spec is not None:
            self.input_spec.check(self.name, shape)
        if self._overrides("compute_output_shape") and not any_symbolic(args[1:], kwargs):
            out_shapes = self.compute_output_shape(shape)
            first = flatten(inputs)[0] if flatten(inputs) else None
            kinds = {"float": "f", "all": "biuf", None: ""}[self.input_cast] if self.autocast else ""
            dtype = first.dtype if first is not None and np.dtype(first.dtype).kind not in kinds else self.compute_dtype
            return map_shapes(lambda s: KerasTensor(s, dtype), out_shapes)
        return self._traced_spec(args, kwargs)

    def build_from_shape(self, input_shape):
        """Validate ``input_shape`` (batch axis first, may be None) and build once."""
        if isinstance(input_shape, dict) or (input_shape and isinstance(input_shape[0], (list, tuple))):
            if not self.built:
                self._build_undoably(input_shape)
            return
        input_shape = tuple(None if d is None else int(d) for d in input_shape)
        if self.input_spec is not None:
            self.input_spec.check(self.name, input_shape)
        if self._overrides("compute_output_shape"):
            self.compute_output_shape(input_shape)  # raises before any weight exists
        if not self.built:
            self._build_undoably(input_shape)
        self._build_input_shape = (None,) + input_shape[1:] if input_shape else ()

    def _build_for_call(self, args, kwargs, shape):
        """Build for a first call: ``build(input_shape)``, or, when ``build`` takes several shapes
        (``build(self, x_shape, y_shape)``), each from the call argument of that name (Keras's rule)."""
        names = _build_parameters(type(self))
        if len(names) <= 1:
            self.build_from_shape(shape)
            return
        try:
            bound = inspect.signature(self.call).bind(*args, **kwargs).arguments
        except TypeError:
            bound = {}
        shapes = []
        for i, name in enumerate(names):
            key = name[: -len("_shape")] if name.endswith("_shape") else name
            value = bound.get(key, args[i] if i < len(args) else None)
            shapes.append(shape_structure(value) if value is not None and (is_structure(value) or hasattr(value, "shape"))
                          else None)
        restore = self._snapshot()
        try:
            self.build(*shapes)
        except BaseException:
            restore()
            raise
        self.built = True

    def get_build_config(self):
        """Keras's ``build_config``: ``{"input_shape": ...}`` of the shape the layer was built for (or None)."""
        if self.built and self._build_input_shape is not None:
            return {"input_shape": list(self._build_input_shape)}
        return None

    def build_from_config(self, config):
        """Build from a :meth:`get_build_config` dict (as a file holds it), when it gives a shape."""
        shape = config.get("input_shape") if isinstance(config, dict) else None
        if shape is not None and not self.built:
            def as_tuple(s):
                if isinstance(s, (list, tuple)) and s and isinstance(s[0], (list, tuple)):
                    return [as_tuple(v) for v in s]
                return tuple(s)

            self.build_from_shape(as_tuple(shape) if not isinstance(shape, dict) else {k: tuple(v) for k, v in shape.items()})

    def _build_undoably(self, input_shape):
        restore = self._snapshot()
        try:
            self.build(input_shape)
        except BaseException:
            restore()  # a refused build leaves no weights (or other state) behind
            raise
        self.built = True

    def _snapshot(self):
        """A function that puts this layer's attributes back as they are now (used to undo a build)."""
        state = dict(self.__dict__)
        lists = {name: list(self.__dict__.get(name, [])) for name in _UNTRACKED}

        def restore():
            self.__dict__.clear()
            self.__dict__.update(state)
            for name, items in lists.items():
                self.__dict__[name] = items

        return restore

    # ------------------------------------------------------------ calling

    def __call__(self, *args, **kwargs):
        """Compute the layer on ``inputs`` (tensors, numpy or cupy arrays, array-likes, or a list/dict of them).

        ``training=True`` enables dropout, batch statistics and stochastic
        pooling draws. Returns Tensors of the active backend.
        """
        self._check_super_called()
        if not args:
            if "inputs" not in kwargs:
                raise TypeError(f"Layer '{self.name}' was called without inputs.")
            args = (kwargs.pop("inputs"),)
        if any_symbolic(args, kwargs):
            return self._symbolic_call(args, kwargs)
        training = kwargs.pop("training", None)
        ops = get_ops()
        inputs = self._convert_inputs(args[0], ops)
        rest = tuple(self._convert_inputs(a, ops) if is_structure(a) or hasattr(a, "shape") else a for a in args[1:])
        self._move_weights(ops)
        context = getattr(_state, "context", None)
        entry = context is None
        if entry:
            context = _state.context = _CallContext()
            self._clear_losses()
        try:
            return self._call_in_context(context, inputs, rest, kwargs, training)
        finally:
            if entry:
                _state.context = None

    def _call_in_context(self, context, inputs, rest, kwargs, training):
        accepts_training, default = _call_info(type(self))
        if training is None:
            training = context.training if context.training is not None else default
        context.training = training
        if accepts_training and training is not None:
            kwargs["training"] = training
        single = isinstance(inputs, Tensor)
        if not single and (self.single_input or self.input_spec is not None):
            self._refuse_structure(inputs)
        shape = shape_structure(inputs)
        unbuild = None
        if not self.built:
            unbuild = self._snapshot()
            self._build_for_call((inputs,) + tuple(rest), kwargs, shape)
        elif single:
            if self.input_spec is not None:
                self.input_spec.check(self.name, shape)
            if self._overrides("compute_output_shape"):
                self.compute_output_shape(shape)
        try:
            with self._autocast_scope():
                outputs = self.call(inputs, *rest, **kwargs)
        except BaseException as exc:
            if unbuild is not None:  # a first call that is refused leaves the layer unbuilt
                unbuild()
            if isinstance(exc, MemoryError) and not isinstance(exc, LayerOutOfMemoryError):
                raise out_of_memory(self, "forward", shape, exc) from exc  # cupy's OOM is a MemoryError too
            raise
        outputs = map_structure(lambda y: y if isinstance(y, Tensor) else autodiff.as_tensor(y), outputs)
        if config.check_numerics():
            for y in flatten(outputs):
                check_finite(self, "forward", y.data, flatten(inputs)[0].data if flatten(inputs) else y.data)
        if self.activity_regularizer is not None and not _tracing():
            from gpulayers import ops as ops_module  # the ops package imports the layers' arguments module

            for y in flatten(outputs):
                loss = autodiff.as_tensor(self.activity_regularizer(y))
                if y.ndim > 0:  # Keras 3.14+: the penalty is per sample
                    loss = ops_module.divide_no_nan(loss, ops_module.cast(y.shape[0], loss.dtype))
                self.add_loss(loss)
        self._note_input_shape(shape)
        self.built = True
        return outputs

    def _note_input_shape(self, shape):
        """A layer built at construction learns its input shape from its first call (``output_shape``)."""
        if self._build_input_shape is None and self.built_at_construction and isinstance(shape, tuple) \
                and all(d is None or isinstance(d, int) for d in shape):
            self._build_input_shape = (None,) + shape[1:] if shape else ()

    def _symbolic_call(self, args, kwargs):
        """A call on KerasTensors: build, find the output spec, record a Node; nothing is computed."""
        from gpulayers.symbolic import KerasTensor, Node

        inputs = args[0]
        if not isinstance(inputs, KerasTensor) and (self.single_input or self.input_spec is not None):
            self._refuse_structure(inputs)
        for leaf in flatten(inputs):
            if not isinstance(leaf, KerasTensor):
                raise ValueError(
                    f"Layer '{self.name}' was called on a mix of symbolic KerasTensors and arrays. In a functional "
                    f"model every input of a layer must come from `Input(...)` or another layer. Received: {leaf!r:.80}"
                )
        spec_kwargs = {k: v for k, v in kwargs.items() if k != "training"}
        unbuild = None if self.built else self._snapshot()
        try:
            outputs = self.compute_output_spec(*args, **spec_kwargs)
        except BaseException:
            if unbuild is not None:
                unbuild()  # a refused first call leaves the layer unbuilt
            raise
        self._note_input_shape(shape_structure(inputs))
        self.built = True
        Node(self, args, kwargs, outputs)
        return outputs

    def _refuse_structure(self, inputs):
        if isinstance(inputs, dict):
            raise TypeError(
                f"Invalid type for `inputs` of layer '{self.name}': expected one tensor. Received: a dict "
                f"with keys {sorted(map(str, inputs))}"
            )
        count = len(flatten(inputs))
        raise ValueError(f"Layer '{self.name}' expects 1 input(s), but it received {count} input tensors.")

    def _convert_inputs(self, inputs, ops):
        """Tensors for the array leaves of ``inputs``; float ones cast to the layer's dtype (autocast)."""

        kinds = {"float": "f", "all": "biuf", None: ""}[self.input_cast] if self.autocast else ""
        dtype = np.dtype(self.compute_dtype)

        def leaf(x):
            if isinstance(x, Tensor):
                if x.data.dtype.kind in kinds and x.data.dtype != dtype:
                    from gpulayers import ops as ops_module

                    return ops_module.cast(x, dtype)
                return x
            arr = to_backend(x, ops, None)
            if arr.dtype.kind in kinds and arr.dtype != dtype:
                arr = arr.astype(dtype)
            return Tensor(arr)

        return map_structure(leaf, inputs)

    def _autocast_scope(self):
        """The dtype this layer's variables read in while it runs (Keras's rule): its compute dtype when
        that differs from its variable dtype or from an enclosing layer's; none for a layer without
        autocast or with a non-float compute dtype; else the enclosing layer's."""
        outer, compute = autodiff.autocast_dtype(), np.dtype(self.compute_dtype)
        if outer is not None:
            if not self.autocast or compute.kind != "f":
                return autodiff.autocast_scope(None)
            return autodiff.autocast_scope(compute) if outer != compute else contextlib.nullcontext()
        if compute != np.dtype(self.variable_dtype):
            return autodiff.autocast_scope(compute)
        return contextlib.nullcontext()

    def call(self, inputs, *args, **kwargs):
        """The forward computation on Tensors (``gpulayers.ops``); the base layer returns its input."""
        return inputs

    def _move_weights(self, ops):
        """After a backend switch, bring the weights to the new backend."""
        for v in self._trainable_variables + self._non_trainable_variables:
            if type(v.data).__module__.split(".", 1)[0] != ops.name:
                v.data = ops.asarray(ops_to_numpy(v.data))

    def _record(self, op, forward, *inputs):
        """One node for a built-in layer's call: ``forward(*arrays) -> (output, backward)`` on the inputs'
        raw arrays (non-float inputs cast to the layer's dtype, C order). The backward pass names the layer
        when it runs out of memory or (with ``config.check_numerics()``) meets NaN or Inf."""
        tensors = tuple(None if x is None else autodiff.as_tensor(x) for x in inputs)
        arrays = tuple(None if t is None else compute_array(t.data, self.compute_dtype) for t in tensors)
        y, backward = forward(*arrays)

        def guarded(dy, needs):
            if dy.ndim and not dy.flags.c_contiguous:  # the kernels read C order (and 0-d stays 0-d)
                dy = get_ops().xp.ascontiguousarray(dy)
            try:
                grads = backward(dy, needs)
            except LayerOutOfMemoryError:
                raise
            except MemoryError as exc:
                raise out_of_memory(self, "backward", dy.shape, exc) from exc
            if config.check_numerics():
                for g in grads:
                    if g is not None:
                        check_finite(self, "backward", g, dy)
            return grads

        return autodiff.record(op, y, tensors, guarded, {"layer": self.name})

    def _activate(self, z):
        """``self.activation(z)`` (``z`` itself when the activation was set to None, as Keras's layers
        allow); a user's activation must give a float tensor of ``z``'s shape."""
        if self.activation is None:
            return z
        y = self.activation(z)
        if activations.is_builtin(self.activation):
            return y
        # np.int64 or a function returning a list is refused, not passed on.
        dtype = getattr(y, "dtype", None)
        if tuple(getattr(y, "shape", ())) != tuple(z.shape) or dtype is None or numpy_dtype(dtype).kind != "f" \
                or getattr(y, "ndim", None) != z.ndim:
            raise TypeError(
                f"The activation {self.activation!r} of layer '{self.name}' must return a float array of "
                f"its input's shape {tuple(z.shape)}. Received: {type(y).__name__} with shape "
                f"{getattr(y, 'shape', None)} and dtype {dtype}"
            )
        if not isinstance(y, Tensor) and z.requires_grad and autodiff.recording():
            raise TypeError(
                f"The activation {self.activation!r} of layer '{self.name}' returned a {type(y).__name__}, not a "
                "tensor, so no gradient can flow through it: write it with gpulayers.ops (or NumPy ufuncs, which "
                "tensors answer), as Keras's backend-agnostic layers are."
            )
        y = autodiff.as_tensor(y)
        if y.data.dtype != z.data.dtype:
            from gpulayers import ops as ops_module

            y = ops_module.cast(y, z.data.dtype)
        return y

    # ------------------------------------------------------------ config

    def get_config(self):
        """Keras 3's config keys for this layer: name, trainable, dtype (and activity_regularizer).

        A user's layer that does not override it gets, as in Keras, the
        arguments its constructor was called with (when they are all plain
        values: numbers, strings, None, lists and dicts of them); otherwise
        it must define ``get_config`` to be saved.
        """
        cfg = {"name": self.name}
        if type(self).get_config is Layer.get_config and type(self) is not Layer:
            auto = self.__dict__.get("_auto_config")
            if auto is None:
                raise NotImplementedError(
                    f"Layer {type(self).__name__} was created by passing non-serializable argument values in "
                    "`__init__()`, and therefore the layer must override `get_config()` in order to be "
                    "serializable. Please implement `get_config()`."
                )
            spec = inspect.getfullargspec(type(self).__init__)
            if spec.varkw is None and "name" not in spec.args[1:]:
                cfg = {}
            cfg.update(auto)
        cfg.update(trainable=self.trainable, dtype=dtype_policies.serialize(self._dtype_policy))
        if self.activity_regularizer is not None:
            cfg["activity_regularizer"] = regularizers.serialize(self.activity_regularizer)
        return cfg

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"


_BUILD_PARAMETERS = {}


def _build_parameters(cls):
    """The names of ``cls.build``'s positional parameters after ``self``."""
    names = _BUILD_PARAMETERS.get(cls)
    if names is None:
        params = list(inspect.signature(cls.build).parameters.values())[1:]
        names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        names = _BUILD_PARAMETERS[cls] = names
    return names


def _plain(value):
    """Whether ``value`` is made only of JSON-like plain values (what an automatic config may hold)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def _merge_structures(fn, a, b):
    if isinstance(a, dict):
        return {k: _merge_structures(fn, a[k], b[k]) for k in a}
    if isinstance(a, (list, tuple)):
        return type(a)(_merge_structures(fn, p, q) for p, q in zip(a, b))
    return fn(autodiff.as_tensor(a), autodiff.as_tensor(b))


_metric_class = None


def _is_metric(value):
    global _metric_class
    if _metric_class is None:
        from gpulayers.metrics import Metric

        _metric_class = Metric
    return isinstance(value, _metric_class)


