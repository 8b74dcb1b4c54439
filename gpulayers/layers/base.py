"""The Layer base class, its weights (Variable) and the input checks (InputSpec).

A layer's life, as in Keras: ``__init__`` standardizes the arguments,
``build(input_shape)`` creates the weights, ``call(x, training)`` computes.
gpulayers adds one more step for training without autodiff:
``backward(dy)`` returns the gradient with respect to the layer's input and
stores the gradients of its weights in ``variable.grad``. Each layer keeps
what its backward pass needs from its last call (``self._cache``).

The gradients that ``backward`` stores are those of the upstream loss plus
this layer's own ``losses`` (weight regularizers and activity regularizer), so
a training step minimises exactly the loss that Keras reports.
"""

import contextlib
import threading

import numpy as np

from backends import get_ops
from gpulayers import activations, config, initializers, regularizers, utils
from gpulayers.layers.arguments import standardize_int

__all__ = ["InputSpec", "Layer", "Variable", "no_backward"]

_state = threading.local()


@contextlib.contextmanager
def no_backward():
    """Within this block, calls keep nothing for a backward pass (inference)."""
    previous = getattr(_state, "no_backward", False)
    _state.no_backward = True
    try:
        yield
    finally:
        _state.no_backward = previous


def _recording():
    return not getattr(_state, "no_backward", False)


# ---------------------------------------------------------------- dtypes

_FLOAT_DTYPES = ("float16", "float32", "float64")


def standardize_dtype(dtype, name="dtype"):
    """A layer dtype as a string: None -> floatx(); Keras's DTypePolicy config accepted."""
    if dtype is None:
        return config.floatx()
    if isinstance(dtype, dict):  # Keras 3 serializes a layer's dtype as a DTypePolicy
        policy = dtype.get("config")
        if isinstance(policy, dict) and isinstance(policy.get("name"), str):
            dtype = policy["name"]
    elif hasattr(dtype, "name") and not isinstance(dtype, (str, np.dtype)):
        dtype = dtype.name  # a DTypePolicy-like object
    text = None
    if not isinstance(dtype, dict):  # NumPy reads a dict as a structured dtype
        try:
            text = np.dtype(dtype).name
        except (TypeError, ValueError):
            pass
    if text not in _FLOAT_DTYPES:
        raise ValueError(
            f"Invalid value for `{name}`: expected one of {_FLOAT_DTYPES} "
            f"(mixed-precision policies are not supported). Received: {name}={dtype!r}"
        )
    return text


def serialize_dtype(dtype):
    """Keras 3's config form of a layer dtype."""
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": dtype}, "registered_name": None}


# ---------------------------------------------------------------- Variable


class Variable:
    """A layer weight: its value on the active backend, and its last gradient.

    ``value`` is an array of the backend's namespace; ``grad`` holds the
    gradient stored by the owning layer's last ``backward`` (None before).
    ``np.asarray(variable)`` and ``variable.numpy()`` give a host copy.
    """

    def __init__(self, value, name, trainable=True, regularizer=None, constraint=None, path=None):
        self.value = value
        self.grad = None
        self.name = name
        self.path = path or name
        self.trainable = trainable
        self.regularizer = regularizer
        self.constraint = constraint

    @property
    def shape(self):
        return tuple(self.value.shape)

    @property
    def dtype(self):
        return str(self.value.dtype)

    def numpy(self):
        return get_ops().to_numpy(self.value) if not isinstance(self.value, np.ndarray) else self.value.copy()

    def __array__(self, dtype=None, copy=None):
        host = self.numpy()
        return host if dtype is None else host.astype(dtype)

    def assign(self, value):
        """Replace the value (same shape; cast to this variable's dtype)."""
        ops = get_ops()
        value = ops.asarray(value, dtype=self.dtype)
        if tuple(value.shape) != self.shape:
            raise ValueError(
                f"Invalid shape for `value` of variable '{self.path}': expected {self.shape}. "
                f"Received: value.shape={tuple(value.shape)}"
            )
        self.value = value.copy()  # never alias the caller's array

    def __repr__(self):
        return f"<Variable path={self.path!r} shape={self.shape} dtype={self.dtype} trainable={self.trainable}>"


# ---------------------------------------------------------------- InputSpec


class InputSpec:
    """What a layer accepts: a rank (``ndim`` or ``min_ndim``) and fixed sizes on some axes."""

    def __init__(self, ndim=None, min_ndim=None, axes=None):
        self.ndim = ndim
        self.min_ndim = min_ndim
        self.axes = dict(axes or {})

    def check(self, layer_name, shape):
        shape = tuple(shape)
        prefix = f"Input of layer '{layer_name}' is incompatible with the layer:"
        if self.ndim is not None and len(shape) != self.ndim:
            raise ValueError(
                f"{prefix} expected ndim={self.ndim}, found ndim={len(shape)}. "
                f"Full shape received: inputs.shape={shape}"
            )
        if self.min_ndim is not None and len(shape) < self.min_ndim:
            raise ValueError(
                f"{prefix} expected min_ndim={self.min_ndim}, found ndim={len(shape)}. "
                f"Full shape received: inputs.shape={shape}"
            )
        for axis, size in self.axes.items():
            if size is not None and shape[axis] is not None and shape[axis] != size:
                raise ValueError(
                    f"{prefix} expected axis {axis} of the input shape to have value {size}, "
                    f"but received input with shape inputs.shape={shape}"
                )


# ---------------------------------------------------------------- Layer


MAX_DIM = int(np.iinfo(np.intp).max)


def _standardize_shape(value, name):
    """A shape tuple of positive ints or None entries."""
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"Invalid type for `{name}`: expected a tuple of ints. Received: {name}={value!r}") from None
    for v in items:
        # No array can have an axis longer than the largest index (2**63 - 1).
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v <= MAX_DIM):
            raise ValueError(
                f"Invalid value for `{name}`: expected a tuple of non-negative ints (at most {MAX_DIM}) or None. "
                f"Received: {name}={value!r}"
            )
    return tuple(None if v is None else int(v) for v in items)


class Layer:
    """Base class of all gpulayers layers (Keras 3's ``keras.layers.Layer`` API).

    Args:
        activity_regularizer: Regularizer applied to the layer's output; its
            value joins ``layer.losses``.
        trainable: Whether the layer's weights are updated by training.
        name: Unique name; by default the snake_case class name with a
            ``_1``, ``_2``... suffix (``gpulayers.utils.clear_session`` resets it).
        dtype: ``'float16'``, ``'float32'`` or ``'float64'``; default ``floatx()``.
        input_shape: On the first layer of a Sequential, the shape of one
            sample (no batch axis); ``batch_size`` may go with it.
        input_dim: Shorthand for ``input_shape=(input_dim,)``.
    """

    def __init__(
        self,
        *,
        activity_regularizer=None,
        trainable=True,
        name=None,
        dtype=None,
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
        self.name = name
        self._dtype = standardize_dtype(dtype)
        self._trainable = bool(trainable)
        self.activity_regularizer = regularizers.get(activity_regularizer, argument="activity_regularizer")
        # The shape of a batch, when the user gave one (used by Sequential).
        self._batch_input_shape = None
        if batch_input_shape is not None:
            self._batch_input_shape = _standardize_shape(batch_input_shape, "batch_input_shape")
        elif input_shape is not None or input_dim is not None:
            if input_shape is None:
                input_shape = (standardize_int(input_dim, "input_dim", maximum=MAX_DIM),)
            if batch_size is not None:
                batch_size = standardize_int(batch_size, "batch_size", maximum=MAX_DIM)
            self._batch_input_shape = (batch_size,) + _standardize_shape(input_shape, "input_shape")
        self.built = False
        self.input_spec = None
        self._variables = []
        self._build_input_shape = None
        self._cache = None
        self._activity_losses = []
        self._through_activation = True

    # ------------------------------------------------------------ properties

    @property
    def dtype(self):
        """The layer's dtype, e.g. ``'float32'`` (weights and computation)."""
        return self._dtype

    compute_dtype = dtype
    variable_dtype = dtype

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        self._trainable = bool(value)

    @property
    def weights(self):
        """All weights: trainable ones first, then the others (Keras's order)."""
        return [v for v in self._variables if v.trainable] + [v for v in self._variables if not v.trainable]

    variables = weights

    @property
    def trainable_weights(self):
        return [v for v in self._variables if v.trainable] if self._trainable else []

    trainable_variables = trainable_weights

    @property
    def non_trainable_weights(self):
        if not self._trainable:
            return self.weights
        return [v for v in self._variables if not v.trainable]

    non_trainable_variables = non_trainable_weights

    @property
    def losses(self):
        """Activity loss of the last call, then the trainable weights' regularization terms."""
        out = list(self._activity_losses)
        for v in self.trainable_weights:
            if v.regularizer is not None:
                out.append(v.regularizer(v.value))
        return out

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

    # ------------------------------------------------------------ weights

    def add_weight(self, name, shape, initializer, regularizer=None, constraint=None, trainable=True):
        """Create a weight from ``initializer(shape, dtype)`` on the active backend.

        A None initializer means ``glorot_uniform``, as in Keras.
        """
        if initializer is None:
            initializer = initializers.get("glorot_uniform")
        host = np.asarray(initializer(tuple(shape), dtype=self._dtype), dtype=self._dtype)
        if host.shape != tuple(shape):
            raise ValueError(
                f"Initializer {initializer!r} returned shape {host.shape} for weight '{name}' "
                f"of layer '{self.name}', expected {tuple(shape)}"
            )
        var = Variable(
            get_ops().asarray(host),
            name=name,
            trainable=trainable,
            regularizer=regularizer,
            constraint=constraint,
            path=f"{self.name}/{name}",
        )
        self._variables.append(var)
        return var

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
        return int(sum(int(np.prod(v.shape)) for v in self._variables))

    # ------------------------------------------------------------ building

    def build(self, input_shape):
        """Create the weights for inputs of ``input_shape``. Layers with weights override it."""
        self.built = True

    def compute_output_shape(self, input_shape):
        """Output shape for ``input_shape``; validates it (ValueError) without side effects."""
        return tuple(input_shape)

    def build_from_shape(self, input_shape):
        """Validate ``input_shape`` (batch axis first, may be None) and build once."""
        input_shape = tuple(None if d is None else int(d) for d in input_shape)
        if self.input_spec is not None:
            self.input_spec.check(self.name, input_shape)
        self.compute_output_shape(input_shape)  # raises before any weight exists
        if not self.built:
            restore = self._snapshot()
            try:
                self.build(input_shape)
            except BaseException:
                restore()  # a refused build leaves no weights (or other state) behind
                raise
            self.built = True
        self._build_input_shape = (None,) + input_shape[1:]

    def _snapshot(self):
        """A function that puts this layer's attributes back as they are now (used to undo a build)."""
        state, variables = dict(self.__dict__), list(self._variables)

        def restore():
            self.__dict__.clear()
            self.__dict__.update(state)
            self._variables[:] = variables

        return restore

    # ------------------------------------------------------------ calling

    def __call__(self, inputs, training=False):
        """Compute the layer on ``inputs`` (numpy, cupy, or anything array-like).

        ``training=True`` enables dropout, batch statistics and stochastic
        pooling draws. The output is an array of the active backend.
        """
        ops = get_ops()
        x = to_backend(inputs, ops, self._dtype)
        self._move_weights(ops)
        unbuild = None
        if self.built:
            if self.input_spec is not None:
                self.input_spec.check(self.name, x.shape)
            self.compute_output_shape(x.shape)
        else:
            unbuild = self._snapshot()
            self.build_from_shape(x.shape)
        self._cache = None
        try:
            y = self.call(x, training=bool(training))
        except BaseException as exc:
            if unbuild is not None:  # a first call that is refused leaves the layer unbuilt
                unbuild()
            if isinstance(exc, MemoryError) and not isinstance(exc, LayerOutOfMemoryError):
                raise out_of_memory(self, "forward", x.shape, exc) from exc  # cupy's OOM is a MemoryError too
            raise
        if config.check_numerics():
            check_finite(self, "forward", y, x)
        self._activity_losses = []
        if self.activity_regularizer is not None:
            self._activity_losses = [self.activity_regularizer(y)]
        if not _recording():
            self._cache = None
        elif self._cache is not None:
            self._cache["output"] = y  # for the output-shape check and the activity gradient
        return y

    def call(self, x, training=False):
        """The forward computation; set ``self._cache`` (a dict) for ``backward``."""
        return x

    def backward(self, dy, need_input_grad=True, through_activation=True):
        """Backpropagate ``dy`` (the gradient of the loss wrt the last output).

        Stores the weights' gradients (including this layer's regularization
        terms) in ``variable.grad`` and returns the gradient wrt the input
        (None when ``need_input_grad`` is False and the layer can skip it).
        With ``through_activation=False``, ``dy`` is already the gradient wrt
        the pre-activation values (a loss fused with the final softmax or
        sigmoid computes it directly, without dividing by probabilities).
        """
        if self._cache is None:
            raise RuntimeError(
                f"Layer '{self.name}' has no forward pass to backpropagate: call it first "
                "(outside `no_backward`)."
            )
        ops = get_ops()
        dy = to_backend(dy, ops, self._dtype)
        expected = tuple(self._cache["output"].shape)
        if tuple(dy.shape) != expected:
            raise ValueError(
                f"Invalid shape for `dy` of layer '{self.name}': expected {expected} (the last "
                f"output's shape). Received: dy.shape={tuple(dy.shape)}"
            )
        if self.activity_regularizer is not None:
            dy = dy + self._regularizer_gradient(
                self.activity_regularizer, self._cache["output"], "activity_regularizer"
            )
        for v in self._variables:
            v.grad = None
        self._through_activation = through_activation
        try:
            dx = self._backward(dy, need_input_grad)
        except LayerOutOfMemoryError:
            raise
        except MemoryError as exc:
            raise out_of_memory(self, "backward", dy.shape, exc) from exc
        finally:
            self._through_activation = True
        for v in self.trainable_weights:
            if v.regularizer is not None and v.grad is not None:
                v.grad = v.grad + self._regularizer_gradient(v.regularizer, v.value, v.name)
        if config.check_numerics():
            for name, value in [("input gradient", dx)] + [(f"gradient of {v.name}", v.grad) for v in self._variables]:
                if value is not None:
                    check_finite(self, f"backward ({name})", value, dy)
        return dx

    def _backward(self, dy, need_input_grad):
        return dy

    def _regularizer_gradient(self, regularizer, value, what):
        grad = regularizers.get_gradient(regularizer)
        if grad is None:
            raise TypeError(
                f"The regularizer {regularizer!r} of '{self.name}' ({what}) has no `gradient` method, "
                "so it cannot be trained: gpulayers has no autodiff. Use a "
                "gpulayers.regularizers.Regularizer subclass that defines gradient(x)."
            )
        return grad(value)

    def _move_weights(self, ops):
        """After a backend switch, bring the weights to the new backend."""
        for v in self._variables:
            if type(v.value).__module__.split(".", 1)[0] != ops.name:
                v.value = ops.asarray(ops_to_numpy(v.value))
                v.grad = None

    # ------------------------------------------------------------ activation helpers

    def _activate(self, z):
        if self.activation is activations.relu:
            return get_ops().relu(z)  # the same values; the backend's version is faster
        y = self.activation(z)
        if activations.is_builtin(self.activation):
            return y
        # A user's callable: its result must be a float array of z's shape
        # (np.int64 or a function returning a list is refused, not passed on).
        ops = get_ops()
        dtype = getattr(y, "dtype", None)
        if getattr(y, "shape", None) != z.shape or dtype is None or numpy_dtype(dtype).kind != "f":
            raise TypeError(
                f"The activation {self.activation!r} of layer '{self.name}' must return a float array of "
                f"its input's shape {tuple(z.shape)}. Received: {type(y).__name__} with shape "
                f"{getattr(y, 'shape', None)} and dtype {dtype}"
            )
        return ops.asarray(y, dtype=z.dtype)

    def _activation_backward(self, z, y, dy):
        if self.activation is activations.linear or not self._through_activation:
            return dy
        if self.activation is activations.relu:
            return get_ops().relu_backward(z, dy)
        backward = activations.get_backward(self.activation)
        if backward is None:
            raise TypeError(
                f"The activation {self.activation!r} of layer '{self.name}' has no `backward` "
                "attribute, so the layer cannot be trained: gpulayers has no autodiff. Give the "
                "callable a backward(x, y, dy) attribute or use a built-in activation."
            )
        return backward(z, y, dy)

    # ------------------------------------------------------------ config

    def get_config(self):
        """Keras 3's config keys for this layer."""
        cfg = {"name": self.name, "trainable": self.trainable, "dtype": serialize_dtype(self._dtype)}
        if self.activity_regularizer is not None:
            cfg["activity_regularizer"] = regularizers.serialize(self.activity_regularizer)
        return cfg

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"


# ---------------------------------------------------------------- helpers


class LayerOutOfMemoryError(MemoryError):
    """Out of memory inside a layer; the message names the layer, the pass and the shapes."""


def out_of_memory(layer, where, shape, exc):
    return LayerOutOfMemoryError(
        f"Out of memory in the {where} pass of layer '{layer.name}' ({type(layer).__name__}) on an input "
        f"of shape {tuple(shape)}: {exc}. Try a smaller batch_size."
    )


def check_finite(layer, where, value, source):
    """Raise FloatingPointError naming ``layer`` if ``value`` holds NaN or Inf."""
    xp = get_ops().xp
    if bool(xp.isfinite(value).all()):
        return
    what = f"Layer '{layer.name}' ({type(layer).__name__})"
    if not bool(xp.isfinite(source).all()):
        bad = int((~xp.isfinite(source)).sum())
        raise FloatingPointError(
            f"{what} received {bad} non-finite value(s) (NaN or Inf) in its {where} pass: "
            f"they came from outside the layers (the data or the loss). Received shape {tuple(source.shape)}."
        )
    bad = int((~xp.isfinite(value)).sum())
    raise FloatingPointError(
        f"{what} produced {bad} non-finite value(s) in its {where} pass from finite values: "
        f"received shape {tuple(source.shape)}, produced shape {tuple(value.shape)}."
    )


def numpy_dtype(dtype):
    """``dtype`` as a NumPy dtype, or an object dtype when NumPy cannot read it."""
    try:
        return np.dtype(dtype)
    except TypeError:
        return np.dtype(object)


def ops_to_numpy(value):
    if isinstance(value, np.ndarray):
        return value
    return value.get() if hasattr(value, "get") else np.asarray(value)


_ALLOWED_KINDS = "biuf"  # bool, int, uint, float


def to_backend(inputs, ops, dtype):
    """Convert array-likes (numpy, cupy, __array__, __dlpack__) to the backend at ``dtype``."""
    kind = getattr(getattr(inputs, "dtype", None), "kind", None)
    if kind is None:
        if isinstance(inputs, (str, bytes)) or inputs is None or isinstance(inputs, dict):
            raise TypeError(f"Invalid type for `inputs`: expected an array. Received: inputs={inputs!r:.80}")
        if not (hasattr(inputs, "__array__") or hasattr(inputs, "__dlpack__") or isinstance(inputs, (list, tuple, int, float))):
            raise TypeError(f"Invalid type for `inputs`: expected an array. Received: inputs={inputs!r:.80}")
        try:
            arr = ops.asarray(inputs)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"Invalid value for `inputs`: it cannot be converted to an array ({exc})") from None
        kind = arr.dtype.kind
    else:
        arr = inputs
    if kind not in _ALLOWED_KINDS:
        raise TypeError(
            f"Invalid dtype for `inputs`: expected a numeric (bool, int or float) array. "
            f"Received: inputs.dtype={arr.dtype}"
        )
    out = ops.asarray(arr, dtype=dtype)
    # C order always: the summation order (BLAS, reductions) and so the last
    # bits of a result must not depend on how the caller's array is laid out.
    if out.ndim and not out.flags.c_contiguous:
        out = ops.xp.ascontiguousarray(out)
    return out


def check_weight_list(weights, params, owner):
    """Validate a list of arrays against the variables it should replace (count and shapes)."""
    if isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__"):
        raise TypeError(f"Invalid type for `weights` of {owner}: expected a list of arrays. Received: {weights!r:.80}")
    if len(weights) != len(params):
        raise ValueError(
            f"Invalid `weights` for {owner}: expected a list of {len(params)} arrays "
            f"(shapes {[p.shape for p in params]}). Received a list of {len(weights)}."
        )
    for i, (w, p) in enumerate(zip(weights, params)):
        shape = tuple(np.shape(w))
        if shape != p.shape:
            raise ValueError(
                f"Invalid `weights` for {owner}: weights[{i}] ('{p.name}') should have shape "
                f"{p.shape}. Received: shape={shape}"
            )
