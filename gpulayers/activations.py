"""Activation functions with Keras 3's names, formulas and defaults.

Every function takes a Tensor, Variable, NumPy or CuPy array (or an
array-like) and returns a :class:`~gpulayers.autodiff.Tensor` of the input's
float dtype (float32 stays float32), differentiable on the tape: they are thin
functions over :mod:`gpulayers.ops.nn`, plus Keras's activation-only logic
(``relu``'s ``negative_slope``, ``max_value`` and ``threshold`` branches, one
primitive with its exact derivative). ``softmax`` records a ``"softmax"`` node
and ``sigmoid`` a ``"sigmoid"`` node, which the probability cross-entropies
fuse with; ``relu`` with its default arguments runs the backend's fast path.

Lookup and (de)serialization follow Keras 3: ``get("relu")``, ``get(None)``
(the identity ``linear``), ``serialize(relu) == "relu"``.
"""

from gpulayers import object_registration
from gpulayers.autodiff import record
from gpulayers.ops import nn as _nn
from gpulayers.ops.activations import _sigmoid_array
from gpulayers.ops import numpy as _numpy_ops
from gpulayers.ops.core import convert_to_tensor, xp
from gpulayers.ops.math import erf  # noqa: F401 (kept here for compatibility; it lives in ops.math)
from gpulayers.ops.elementwise import _float
from gpulayers.registry import Registry

__all__ = [
    "celu",
    "deserialize",
    "elu",
    "erf",
    "exponential",
    "gelu",
    "get",
    "glu",
    "hard_shrink",
    "hard_sigmoid",
    "hard_silu",
    "hard_swish",
    "hard_tanh",
    "is_builtin",
    "leaky_relu",
    "linear",
    "log_sigmoid",
    "log_softmax",
    "mish",
    "relu",
    "relu6",
    "selu",
    "serialize",
    "sigmoid",
    "silu",
    "soft_shrink",
    "softmax",
    "softplus",
    "softsign",
    "sparse_plus",
    "sparse_sigmoid",
    "sparsemax",
    "squareplus",
    "swish",
    "tanh",
    "tanh_shrink",
    "threshold",
]



def _relu_with_options(x, negative_slope, max_value, threshold):
    """Keras's ``ReLU.static_call`` branches (beyond plain and leaky ReLU) as one primitive.

    Gradient: 1 above the threshold (or 0), and strictly inside
    ``(0, max_value)`` when the output is clipped; ``negative_slope`` below the
    threshold.
    """
    x = _float(x)
    a = x.data
    np_ = xp()
    clip_max = max_value is not None
    if threshold != 0:
        out = a * (a > threshold)
    elif max_value == 6:
        out = np_.minimum(np_.maximum(a, 0.0), 6.0)
        clip_max = False
    else:
        out = np_.maximum(a, 0.0)
    if clip_max:
        out = np_.clip(out, 0.0, max_value)
    if negative_slope != 0.0:
        out = out - negative_slope * np_.maximum(threshold - a, 0.0)
    out = out.astype(a.dtype, copy=False)

    def backward(g, needs):
        mask = a > threshold if threshold != 0 else a > 0
        if max_value is not None:
            mask = mask & (a > 0) & (a < max_value)
        dx = g * mask
        if negative_slope != 0.0:
            # Multiply g first: slope * bool_array alone would be float64.
            dx = dx + negative_slope * (g * (a < threshold))
        return (dx,)

    return record("relu", out, (x,), backward)


def relu(x, negative_slope=0.0, max_value=None, threshold=0.0):
    """Rectified linear unit with Keras 3's options.

    Below ``threshold`` the output is ``negative_slope * (x - threshold)``;
    above it ``x``, clipped to ``max_value`` when given. Keras's exact branch
    structure is kept, including its edge cases (e.g. a negative threshold
    without ``max_value`` passes ``threshold < x < 0`` through unchanged).
    With the default arguments it is :func:`gpulayers.ops.relu` (the
    backend's fast path); with only ``negative_slope``, ``leaky_relu``.

    Args:
        x: input tensor or array.
        negative_slope: slope below the threshold.
        max_value: saturation value, or None for none.
        threshold: value below which the unit is damped.

    Example:
        >>> relu(np.array([-10., -5., 0., 5., 10.]), negative_slope=0.5).numpy()
        array([-5. , -2.5,  0. ,  5. , 10. ])
    """
    if negative_slope == 0.0 and max_value is None and threshold == 0:
        return _nn.relu(x)
    if negative_slope != 0.0 and max_value is None and threshold == 0:
        return _nn.leaky_relu(x, negative_slope)
    return _relu_with_options(x, negative_slope, max_value, threshold)


def leaky_relu(x, negative_slope=0.2):
    """Leaky ReLU: ``max(x, negative_slope * x)`` (Keras's formula).

    Example:
        >>> leaky_relu(np.array([-1.0, 2.0])).numpy()
        array([-0.2,  2. ])
    """
    return _nn.leaky_relu(x, negative_slope)


def relu6(x):
    """ReLU capped at 6: ``min(max(x, 0), 6)``."""
    return _nn.relu6(x)


def softmax(x, axis=-1):
    """Softmax along ``axis`` (an int or a tuple), shifted by the max for stability.

    Records a ``"softmax"`` node, so a probability cross-entropy on its
    output differentiates with respect to the logits directly.

    Example:
        >>> softmax(np.array([[1000.0, 1000.0]])).numpy()
        array([[0.5, 0.5]])
    """
    return _nn.softmax(x, axis=axis)


def log_softmax(x, axis=-1):
    """``log(softmax(x))`` computed without forming the softmax."""
    return _nn.log_softmax(x, axis=axis)


def elu(x, alpha=1.0):
    """Exponential linear unit: ``x`` for ``x >= 0``, else ``alpha * (exp(x) - 1)``."""
    return _nn.elu(x, alpha=alpha)


def selu(x):
    """Scaled ELU: ``scale * elu(x, alpha)`` with Keras's constants."""
    return _nn.selu(x)


def softplus(x):
    """``log(1 + exp(x))``, as ``logaddexp(x, 0)`` so large ``x`` does not overflow."""
    return _nn.softplus(x)


def softsign(x):
    """``x / (1 + |x|)``."""
    return _nn.softsign(x)


def sigmoid(x):
    """Logistic function ``1 / (1 + exp(-x))``, recorded as a ``"sigmoid"`` node.

    Written with ``exp(-|x|)`` so no lane overflows (no warnings for large
    ``|x|``); the values match the textbook formula to rounding.
    """
    return _nn.sigmoid(x)


def tanh(x):
    """Hyperbolic tangent."""
    return _numpy_ops.tanh(x)


def silu(x):
    """Swish / SiLU: ``x * sigmoid(x)``. ``swish`` is the same function."""
    return _nn.silu(x)


swish = silu


def gelu(x, approximate=False):
    """Gaussian error linear unit (Keras's activation default: exact).

    Exact: ``x * (1 + erf(x / sqrt(2))) / 2``; with ``approximate=True`` the
    tanh form ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.

    Example:
        >>> gelu(np.array([1.0])).numpy()
        array([0.84134475])
    """
    return _nn.gelu(x, approximate=approximate)


def exponential(x):
    """``exp(x)``."""
    return _numpy_ops.exp(x)


def hard_sigmoid(x):
    """``relu6(x + 3) / 6``: 0 below -3, 1 above 3, ``x/6 + 0.5`` between."""
    return _nn.hard_sigmoid(x)


def hard_silu(x):
    """Hard swish: ``x * hard_sigmoid(x)``. ``hard_swish`` is the same function."""
    return _nn.hard_silu(x)


hard_swish = hard_silu


def mish(x):
    """``x * tanh(softplus(x))``; gradient ``t + x * (1 - t**2) * sigmoid(x)`` with ``t = tanh(softplus(x))``."""
    x = _float(x)
    a = x.data
    np_ = xp()

    def softplus_array(v):
        return np_.logaddexp(v, np_.zeros((), dtype=v.dtype))

    t = np_.tanh(softplus_array(a))

    def backward(g, needs):
        return (g * (t + a * (1.0 - t * t) * _sigmoid_array(a)),)

    return record("mish", a * t, (x,), backward)


def linear(x):
    """Identity: returns ``x`` (as a Tensor) unchanged."""
    return convert_to_tensor(x)


def celu(x, alpha=1.0):
    """Continuously differentiable ELU: ``max(x, 0) + alpha * (exp(min(x, 0) / alpha) - 1)``."""
    return _nn.celu(x, alpha=alpha)


def glu(x, axis=-1):
    """Gated linear unit: ``a * sigmoid(b)``, ``a`` and ``b`` the halves of ``x`` along ``axis``."""
    return _nn.glu(x, axis=axis)


def log_sigmoid(x):
    """``log(sigmoid(x))``, computed as ``-softplus(-x)``."""
    return _nn.log_sigmoid(x)


def hard_tanh(x):
    """``clip(x, -1, 1)``."""
    return _nn.hard_tanh(x)


def hard_shrink(x, threshold=0.5):
    """``x`` where ``|x| > threshold``, else 0."""
    return _nn.hard_shrink(x, threshold=threshold)


def soft_shrink(x, threshold=0.5):
    """``x`` moved ``threshold`` towards 0, and 0 within ``threshold`` of it."""
    return _nn.soft_shrink(x, threshold=threshold)


def tanh_shrink(x):
    """``x - tanh(x)``."""
    return _nn.tanh_shrink(x)


def threshold(x, threshold, default_value):
    """``x`` where ``x > threshold``, else ``default_value``."""
    return _nn.threshold(x, threshold, default_value)


def sparse_plus(x):
    """A piecewise softplus: 0 up to -1, ``(x + 1)**2 / 4`` up to 1, then ``x``."""
    return _nn.sparse_plus(x)


def sparse_sigmoid(x):
    """A piecewise sigmoid: 0 up to -1, ``(x + 1) / 2`` up to 1, then 1."""
    return _nn.sparse_sigmoid(x)


def squareplus(x, b=4):
    """``(x + sqrt(x**2 + b)) / 2``, a smooth ReLU."""
    return _nn.squareplus(x, b=b)


def sparsemax(x, axis=-1):
    """The projection of ``x`` onto the probability simplex along ``axis`` (sparse softmax)."""
    return _nn.sparsemax(x, axis=axis)


# Keras 3 names. Aliases map to the same function; serialize gives the
# function's own name (swish -> "silu", as Keras does).
_BY_NAME = {
    fn.__name__: fn
    for fn in (relu, leaky_relu, relu6, softmax, log_softmax, elu, selu, softplus, softsign,
               sigmoid, tanh, silu, gelu, exponential, hard_sigmoid, hard_silu, mish, linear, celu, glu,
               log_sigmoid, hard_tanh, hard_shrink, soft_shrink, tanh_shrink, threshold, sparse_plus,
               sparse_sigmoid, squareplus, sparsemax)
}
_ALIASES = {"swish": silu, "hard_swish": hard_silu}
_ALL = {**_BY_NAME, **_ALIASES}
_REGISTRY = Registry("activation", "keras.activations", _ALL)
_BUILTINS = frozenset(_BY_NAME.values())


def is_builtin(fn):
    """Whether ``fn`` is one of this module's activations (not a partial or a user's callable)."""
    return fn in _BUILTINS


def _from_dict(config, argument):
    # Keras 3 writes built-in functions as
    # {"module": "keras.activations", "class_name": "function", "config": "relu", ...}.
    module = config.get("module")
    name = config.get("config")
    if config.get("class_name") != "function" or not isinstance(name, str):
        raise ValueError(
            f"Invalid value for `{argument}`: expected an activation name or Keras's "
            f"function config {{'class_name': 'function', 'config': <name>}}. "
            f"Received: {argument}={config!r}"
        )
    if module is not None and not str(module).startswith("keras"):
        # Never import a module named in a config: only built-ins are known.
        raise ValueError(
            f"Invalid value for `{argument}`: activation {name!r} from module {module!r} "
            f"is not a gpulayers built-in. Received: {argument}={config!r}"
        )
    return _REGISTRY.lookup(name, argument)


def deserialize(config, argument="activation"):
    """Return the activation named by ``config``: a built-in, or a user's function the program made known
    (``custom_objects``, ``register_keras_serializable``).

    Args:
        config: a name such as ``"relu"``, or Keras's dict form
            ``{"module": "keras.activations", "class_name": "function",
            "config": "relu", "registered_name": ...}``.
        argument: name used in error messages.

    Example:
        >>> deserialize("swish") is silu
        True
    """
    if not isinstance(config, (str, dict)):
        raise _REGISTRY.config_type_error(config, argument)
    custom = object_registration.deserialize_custom(config)  # the user's activations come first, as in Keras
    if custom is not None:
        return custom
    if isinstance(config, str):
        return _REGISTRY.lookup(config, argument)
    return _from_dict(config, argument)


def serialize(fn):
    """Keras 3's serialized form of an activation.

    A built-in gives its name (``"relu"``); any other callable gives Keras's
    dict for a custom function, which :func:`deserialize` loads only when
    the program makes it known.

    Example:
        >>> serialize(swish)
        'silu'
    """
    for name, builtin in _BY_NAME.items():
        if fn is builtin:
            return name
    if not callable(fn):
        raise TypeError(f"Invalid type for `activation`: expected a callable. Received: activation={fn!r}")
    name = getattr(fn, "__name__", type(fn).__name__)
    config = fn.get_config() if hasattr(fn, "get_config") else name
    return {
        "module": getattr(fn, "__module__", None),
        "class_name": "function" if config is name else type(fn).__name__,
        "config": config,
        "registered_name": object_registration.get_registered_name(fn if config is name else type(fn)),
    }


def get(identifier, argument="activation"):
    """Resolve an activation identifier to a callable.

    Args:
        identifier: None (gives :func:`linear`), a name, Keras's dict form, or
            any callable (returned as is).
        argument: the caller's argument name, used in error messages.

    Raises:
        ValueError: unknown name or bad dict. TypeError: not callable.

    Example:
        >>> get("relu") is relu, get(None) is linear
        (True, True)
    """
    if identifier is None:
        return linear
    if isinstance(identifier, (str, dict)):
        return deserialize(identifier, argument)
    if callable(identifier):
        return identifier
    raise TypeError(
        f"Invalid type for `{argument}`: expected None, an activation name, a config dict "
        f"or a callable. Received: {argument}={identifier!r} of type {type(identifier).__name__}"
    )
