"""Activation functions with Keras 3's names, formulas and defaults.

Every function takes a NumPy or CuPy float array and returns an array of the
same namespace and dtype (float32 stays float32). Each built-in function
carries its exact derivative as ``fn.backward(x, y, dy) -> dx``, where ``x``
is the input, ``y`` the forward output and ``dy`` the upstream gradient.
Functions with parameters take the same keywords in ``backward``::

    y = relu(x, max_value=6.0)
    dx = relu.backward(x, y, dy, max_value=6.0)

Lookup and (de)serialization follow Keras 3: ``get("relu")``, ``get(None)``
(the identity ``linear``), ``serialize(relu) == "relu"``.
"""

import functools
import math

from backends import array_namespace
from gpulayers.registry import Registry

__all__ = [
    "deserialize",
    "elu",
    "erf",
    "exponential",
    "gelu",
    "get",
    "get_backward",
    "hard_sigmoid",
    "hard_silu",
    "hard_swish",
    "is_builtin",
    "leaky_relu",
    "linear",
    "log_softmax",
    "mish",
    "relu",
    "relu6",
    "selu",
    "serialize",
    "sigmoid",
    "silu",
    "softmax",
    "softplus",
    "softsign",
    "swish",
    "tanh",
]

# SELU constants (Klambauer et al. 2017), as in Keras.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _backward(grad_fn):
    """Attach ``grad_fn`` to the decorated forward function as ``.backward``."""

    def attach(fn):
        fn.backward = grad_fn
        return fn

    return attach


# ---------------------------------------------------------------------------
# erf: W. J. Cody, "Rational Chebyshev approximations for the error function",
# Math. Comp. 23 (1969), coefficients as in SPECFUN's CALERF. NumPy has no erf,
# and this needs only elementwise ops, so it runs unchanged on CuPy.
# ---------------------------------------------------------------------------
_ERF_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02,
          3.20937758913846947e03, 1.85777706184603153e-1)
_ERF_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03,
          2.84423683343917062e03)
_ERF_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01,
          2.98635138197400131e02, 8.81952221241769090e02, 1.71204761263407058e03,
          2.05107837782607147e03, 1.23033935479799725e03, 2.15311535474403846e-8)
_ERF_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02,
          1.62138957456669019e03, 3.29079923573345963e03, 4.36261909014324716e03,
          3.43936767414372164e03, 1.23033935480374942e03)
_ERF_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
          1.60837851487422766e-2, 6.58749161529837803e-4, 1.63153871373020978e-2)
_ERF_Q = (2.56852019228982242e00, 1.87295284992346725e00, 5.27905102951428412e-1,
          6.05183413124413191e-2, 2.33520497626869185e-3)
_INV_SQRT_PI = 0.56418958354775628695


def _rational(t, num, den, n):
    """CALERF's Horner loop: ``(num[-1]*t + ...) / (t + ...)`` over ``n`` steps."""
    xnum = num[-1] * t
    xden = t
    for i in range(n):
        xnum = (xnum + num[i]) * t
        xden = (xden + den[i]) * t
    return (xnum + num[n]) / (xden + den[n])


def _exp_neg_square(xp, y):
    # exp(-y*y) computed as exp(-a*a) * exp(-(y-a)(y+a)) with a = y rounded
    # down to 1/16: the product y*y is then exact enough to keep erfc's
    # relative error near machine precision (CALERF's trick).
    a = xp.floor(y * 16.0) / 16.0
    return xp.exp(-a * a) * xp.exp(-(y - a) * (y + a))


def erf(x):
    """The error function, elementwise, to about 1e-15 relative in float64.

    Args:
        x: NumPy or CuPy float array. float16 is computed in float32.

    Example:
        >>> float(erf(np.array(0.5)))  # math.erf(0.5) = 0.5204998778130465
        0.5204998778130465
    """
    xp = array_namespace(x)
    out_dtype = x.dtype
    if x.dtype.itemsize < 4:  # the polynomials overflow float16
        x = x.astype(xp.float32)
    # erf(|x|) rounds to 1 beyond 6 in float64; clamping avoids overflow warnings.
    y = xp.minimum(xp.abs(x), 6.0)
    small = y * _rational(y * y, _ERF_A, _ERF_B, 3)
    # Evaluate the two erfc branches on clamped copies so every lane is finite.
    mid_y = xp.clip(y, 0.46875, 4.0)
    erfc_mid = _exp_neg_square(xp, mid_y) * _rational(mid_y, _ERF_C, _ERF_D, 7)
    far_y = xp.maximum(y, 4.0)
    z = 1.0 / (far_y * far_y)
    erfc_far = _exp_neg_square(xp, far_y) * (_INV_SQRT_PI - z * _rational(z, _ERF_P, _ERF_Q, 4)) / far_y
    big = 1.0 - xp.where(y <= 4.0, erfc_mid, erfc_far)
    result = xp.where(y <= 0.46875, small, big)
    result = xp.where(x < 0, -result, result)
    return result.astype(out_dtype, copy=False)


# ---------------------------------------------------------------------------
# Activations. Python-float constants keep float32 inputs in float32 (NEP 50).
# ---------------------------------------------------------------------------


def _relu_backward(x, y, dy, negative_slope=0.0, max_value=None, threshold=0.0):
    if negative_slope != 0.0 and max_value is None and threshold == 0:
        return _leaky_relu_backward(x, y, dy, negative_slope)
    # Pass-through lanes: above the threshold (or 0), and strictly inside
    # (0, max_value) when the output is clipped (the relu6 branch included).
    mask = x > threshold if threshold != 0 else x > 0
    if max_value is not None:
        mask = mask & (x > 0) & (x < max_value)
    dx = dy * mask
    if negative_slope != 0.0:
        # Multiply dy first: slope * bool_array alone would be float64.
        dx = dx + negative_slope * (dy * (x < threshold))
    return dx


@_backward(_relu_backward)
def relu(x, negative_slope=0.0, max_value=None, threshold=0.0):
    """Rectified linear unit with Keras 3's options.

    Below ``threshold`` the output is ``negative_slope * (x - threshold)``;
    above it ``x``, clipped to ``max_value`` when given. Keras's exact branch
    structure is kept, including its edge cases (e.g. a negative threshold
    without ``max_value`` passes ``threshold < x < 0`` through unchanged).

    Args:
        x: float array.
        negative_slope: slope below the threshold.
        max_value: saturation value, or None for none.
        threshold: value below which the unit is damped.

    Example:
        >>> relu(np.array([-10., -5., 0., 5., 10.]), negative_slope=0.5)
        array([-5. , -2.5,  0. ,  5. , 10. ])
    """
    xp = array_namespace(x)
    if negative_slope != 0.0 and max_value is None and threshold == 0:
        return leaky_relu(x, negative_slope)
    clip_max = max_value is not None
    if threshold != 0:
        out = x * (x > threshold)
    elif max_value == 6:
        out = xp.minimum(xp.maximum(x, 0.0), 6.0)
        clip_max = False
    else:
        out = xp.maximum(x, 0.0)
    if clip_max:
        out = xp.clip(out, 0.0, max_value)
    if negative_slope != 0.0:
        out = out - negative_slope * xp.maximum(threshold - x, 0.0)
    return out.astype(x.dtype, copy=False)


def _leaky_relu_backward(x, y, dy, negative_slope=0.2):
    xp = array_namespace(x)
    # d/dx max(x, s*x): 1 where x wins (ties included, as np.maximum keeps x), else s.
    return xp.where(x >= negative_slope * x, dy, negative_slope * dy)


@_backward(_leaky_relu_backward)
def leaky_relu(x, negative_slope=0.2):
    """Leaky ReLU: ``max(x, negative_slope * x)`` (Keras's formula).

    Example:
        >>> leaky_relu(np.array([-1.0, 2.0]))
        array([-0.2,  2. ])
    """
    xp = array_namespace(x)
    return xp.maximum(x, negative_slope * x)


@_backward(lambda x, y, dy: dy * ((x > 0) & (x < 6)))
def relu6(x):
    """ReLU capped at 6: ``min(max(x, 0), 6)``."""
    xp = array_namespace(x)
    return xp.minimum(xp.maximum(x, 0.0), 6.0)


def _softmax_backward(x, y, dy, axis=-1):
    xp = array_namespace(y)
    return y * (dy - xp.sum(dy * y, axis=axis, keepdims=True))


@_backward(_softmax_backward)
def softmax(x, axis=-1):
    """Softmax along ``axis`` (an int or a tuple), shifted by the max for stability.

    Example:
        >>> softmax(np.array([[1000.0, 1000.0]]))
        array([[0.5, 0.5]])
    """
    xp = array_namespace(x)
    if x.size == 0:  # nothing to normalize (and no max of an empty axis)
        return xp.empty_like(x)
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)


def _log_softmax_backward(x, y, dy, axis=-1):
    xp = array_namespace(y)
    return dy - xp.exp(y) * xp.sum(dy, axis=axis, keepdims=True)


@_backward(_log_softmax_backward)
def log_softmax(x, axis=-1):
    """``log(softmax(x))`` computed without forming the softmax."""
    xp = array_namespace(x)
    if x.size == 0:
        return xp.empty_like(x)
    shifted = x - xp.max(x, axis=axis, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


def _elu_backward(x, y, dy, alpha=1.0):
    xp = array_namespace(x)
    return xp.where(x > 0, dy, dy * (alpha * xp.exp(xp.minimum(x, 0.0))))


@_backward(_elu_backward)
def elu(x, alpha=1.0):
    """Exponential linear unit: ``x`` for ``x >= 0``, else ``alpha * (exp(x) - 1)``."""
    xp = array_namespace(x)
    # minimum() keeps expm1 from overflowing in the discarded lanes.
    neg = alpha * xp.expm1(xp.minimum(x, 0.0))
    return xp.where(x >= 0, x, neg).astype(x.dtype, copy=False)


@_backward(lambda x, y, dy: SELU_SCALE * _elu_backward(x, None, dy, SELU_ALPHA))
def selu(x):
    """Scaled ELU: ``scale * elu(x, alpha)`` with Keras's constants."""
    return (SELU_SCALE * elu(x, SELU_ALPHA)).astype(x.dtype, copy=False)


@_backward(lambda x, y, dy: dy * sigmoid(x))
def softplus(x):
    """``log(1 + exp(x))``, as ``logaddexp(x, 0)`` so large ``x`` does not overflow."""
    xp = array_namespace(x)
    return xp.logaddexp(x, xp.zeros((), dtype=x.dtype))


def _softsign_backward(x, y, dy):
    xp = array_namespace(x)
    d = 1.0 + xp.abs(x)
    return dy / (d * d)


@_backward(_softsign_backward)
def softsign(x):
    """``x / (1 + |x|)``."""
    xp = array_namespace(x)
    return x / (1.0 + xp.abs(x))


@_backward(lambda x, y, dy: dy * (y * (1.0 - y)))
def sigmoid(x):
    """Logistic function ``1 / (1 + exp(-x))``.

    Written with ``exp(-|x|)`` so no lane overflows (no warnings for large
    ``|x|``); the values match the textbook formula to rounding.
    """
    xp = array_namespace(x)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


@_backward(lambda x, y, dy: dy * (1.0 - y * y))
def tanh(x):
    """Hyperbolic tangent."""
    return array_namespace(x).tanh(x)


def _silu_backward(x, y, dy):
    s = sigmoid(x)
    return dy * (s * (1.0 + x * (1.0 - s)))


@_backward(_silu_backward)
def silu(x):
    """Swish / SiLU: ``x * sigmoid(x)``. ``swish`` is the same function."""
    return x * sigmoid(x)


swish = silu

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_C = 0.044715


def _gelu_backward(x, y, dy, approximate=False):
    xp = array_namespace(x)
    if approximate:
        t = xp.tanh(_SQRT_2_OVER_PI * (x + _GELU_C * x**3))
        du = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_C * x * x)
        return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)
    cdf = 0.5 * (1.0 + erf(x * _INV_SQRT_2))
    pdf = _INV_SQRT_2PI * xp.exp(-0.5 * x * x)
    return dy * (cdf + x * pdf)


@_backward(_gelu_backward)
def gelu(x, approximate=False):
    """Gaussian error linear unit.

    Exact: ``x * (1 + erf(x / sqrt(2))) / 2``; with ``approximate=True`` the
    tanh form ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.

    Example:
        >>> gelu(np.array([1.0]))
        array([0.84134475])
    """
    xp = array_namespace(x)
    if approximate:
        return 0.5 * x * (1.0 + xp.tanh(_SQRT_2_OVER_PI * (x + _GELU_C * x**3)))
    return x * (erf(x * _INV_SQRT_2) + 1.0) / 2.0


@_backward(lambda x, y, dy: dy * y)
def exponential(x):
    """``exp(x)``."""
    return array_namespace(x).exp(x)


def _hard_sigmoid_backward(x, y, dy):
    return dy * ((x > -3.0) & (x < 3.0)) / 6.0


@_backward(_hard_sigmoid_backward)
def hard_sigmoid(x):
    """``relu6(x + 3) / 6``: 0 below -3, 1 above 3, ``x/6 + 0.5`` between."""
    xp = array_namespace(x)
    # Same operation order as Keras's NumPy backend, for identical rounding.
    return xp.clip(x / 6.0 + 0.5, 0.0, 1.0)


@_backward(lambda x, y, dy: dy * hard_sigmoid(x) + x * _hard_sigmoid_backward(x, None, dy))
def hard_silu(x):
    """Hard swish: ``x * hard_sigmoid(x)``. ``hard_swish`` is the same function."""
    return x * hard_sigmoid(x)


hard_swish = hard_silu


def _mish_backward(x, y, dy):
    xp = array_namespace(x)
    t = xp.tanh(softplus(x))
    return dy * (t + x * (1.0 - t * t) * sigmoid(x))


@_backward(_mish_backward)
def mish(x):
    """``x * tanh(softplus(x))``."""
    return x * array_namespace(x).tanh(softplus(x))


@_backward(lambda x, y, dy: dy)
def linear(x):
    """Identity: returns ``x`` unchanged."""
    return x


# Keras 3 names. Aliases map to the same function; serialize gives the
# function's own name (swish -> "silu", as Keras does).
_BY_NAME = {
    fn.__name__: fn
    for fn in (relu, leaky_relu, relu6, softmax, log_softmax, elu, selu, softplus, softsign,
               sigmoid, tanh, silu, gelu, exponential, hard_sigmoid, hard_silu, mish, linear)
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
    """Return the built-in activation named by ``config``.

    Args:
        config: a name such as ``"relu"``, or Keras's dict form
            ``{"module": "keras.activations", "class_name": "function",
            "config": "relu", "registered_name": ...}``.
        argument: name used in error messages.

    Example:
        >>> deserialize("swish") is silu
        True
    """
    if isinstance(config, str):
        return _REGISTRY.lookup(config, argument)
    if isinstance(config, dict):
        return _from_dict(config, argument)
    raise _REGISTRY.config_type_error(config, argument)


def serialize(fn):
    """Keras 3's serialized form of an activation.

    A built-in gives its name (``"relu"``); any other callable gives Keras's
    dict for a custom function, which :func:`deserialize` refuses to load.

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
        "registered_name": name,
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


def get_backward(fn):
    """The derivative ``backward(x, y, dy)`` of ``fn``, or None if it has none.

    A ``functools.partial`` of a built-in (keywords only) gets the matching
    partial of its backward, e.g. ``partial(relu, max_value=6)``.
    """
    backward = getattr(fn, "backward", None)
    if backward is not None:
        return backward
    if isinstance(fn, functools.partial) and not fn.args:
        inner = getattr(fn.func, "backward", None)
        if inner is not None:
            return functools.partial(inner, **fn.keywords)
    return None
