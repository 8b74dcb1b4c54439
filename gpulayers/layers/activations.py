"""Activation layers: ReLU, LeakyReLU, PReLU, ELU and Softmax (Keras 3's ``keras.layers`` classes).

Each but PReLU computes the activation of :mod:`gpulayers.activations` of
the same name, so they are differentiable on the tape as they stand, and a
``Softmax`` before a probability cross-entropy gets the fused gradient.
PReLU, with its learned slopes, records one node with its own backward.
"""

import numbers

from backends import get_ops
from gpulayers import activations, constraints, initializers, regularizers
from gpulayers.layers.base import Layer
from gpulayers.layers.input_spec import InputSpec

__all__ = ["ELU", "LeakyReLU", "PReLU", "ReLU", "Softmax"]


def _non_negative(value, argument, layer, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Invalid type for `{argument}` of a {layer} layer: expected a number. Received: {argument}={value!r}")
    if value < 0:
        raise ValueError(f"{argument} of a {layer} layer cannot be a negative value. Received: {argument}={value!r}")
    return float(value)


class _Elementwise(Layer):
    built_at_construction = True
    single_input = True
    input_cast = "float"

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


class ReLU(_Elementwise):
    """Rectified linear unit: ``max_value`` above it, ``x`` from ``threshold``, ``negative_slope * (x - threshold)`` below.

    Args:
        max_value: Float >= 0 or None (no cap).
        negative_slope: Float >= 0, the slope below the threshold.
        threshold: Float >= 0.
    """

    def __init__(self, max_value=None, negative_slope=0.0, threshold=0.0, **kwargs):
        max_value = _non_negative(max_value, "max_value", "ReLU", allow_none=True)
        negative_slope = _non_negative(negative_slope, "negative_slope", "ReLU")
        threshold = _non_negative(threshold, "threshold", "ReLU")
        super().__init__(**kwargs)
        self.max_value, self.negative_slope, self.threshold = max_value, negative_slope, threshold

    def call(self, inputs):
        return activations.relu(inputs, negative_slope=self.negative_slope, max_value=self.max_value,
                                threshold=self.threshold)

    def get_config(self):
        return {**super().get_config(), "max_value": self.max_value, "negative_slope": self.negative_slope,
                "threshold": self.threshold}


class LeakyReLU(_Elementwise):
    """``x`` for ``x >= 0``, else ``negative_slope * x`` (Keras 3's default slope 0.3; ``alpha`` is its old name)."""

    def __init__(self, negative_slope=0.3, **kwargs):
        if "alpha" in kwargs:
            negative_slope = kwargs.pop("alpha")
        negative_slope = _non_negative(negative_slope, "negative_slope", "LeakyReLU")
        super().__init__(**kwargs)
        self.negative_slope = negative_slope

    def call(self, inputs):
        return activations.leaky_relu(inputs, negative_slope=self.negative_slope)

    def get_config(self):
        return {**super().get_config(), "negative_slope": self.negative_slope}


class PReLU(Layer):
    """Parametric ReLU: ``x`` for ``x >= 0``, ``alpha * x`` below, with ``alpha`` learned.

    Args:
        alpha_initializer: Initializer of ``alpha`` (default ``'Zeros'``: a ReLU at first).
        alpha_regularizer: Regularizer of ``alpha``.
        alpha_constraint: Constraint applied to ``alpha`` after updates.
        shared_axes: An int or a list of ints >= 1, the input axes along which
            one slope is shared (``[1, 2]`` on NHWC feature maps: one slope per
            channel). None: a slope per unit.

    Weight: ``alpha`` of shape ``input_shape[1:]`` with 1 on the shared axes.
    Input and output shape: any rank >= 1, the same. The gradient of the
    input is 0 at ``x == 0`` exactly (as Keras's ``relu(x) - alpha * relu(-x)``).

    Example:
        >>> layer = PReLU(alpha_initializer=Constant(0.25), shared_axes=[1, 2])
        >>> layer(np.ones((2, 4, 4, 3))).shape, layer.alpha.shape
        ((2, 4, 4, 3), (1, 1, 3))
    """

    single_input = True
    input_cast = "all"  # integer inputs too give float outputs, as Keras's

    def __init__(self, alpha_initializer="Zeros", alpha_regularizer=None, alpha_constraint=None, shared_axes=None,
                 **kwargs):
        if shared_axes is not None:
            axes = list(shared_axes) if isinstance(shared_axes, (list, tuple)) else [shared_axes]
            if any(isinstance(a, bool) or not isinstance(a, numbers.Integral) or a < 1 for a in axes):
                raise ValueError(
                    "Invalid value for `shared_axes`: expected None, an int or a list of ints >= 1 (axis 0 is the "
                    f"batch). Received: shared_axes={shared_axes!r}"
                )
            shared_axes = [int(a) for a in axes]
        self.alpha_initializer = initializers.get(alpha_initializer, argument="alpha_initializer")
        self.alpha_regularizer = regularizers.get(alpha_regularizer, argument="alpha_regularizer")
        self.alpha_constraint = constraints.get(alpha_constraint, argument="alpha_constraint")
        super().__init__(**kwargs)
        self.shared_axes = shared_axes
        self.alpha = None

    def _shared(self):
        return () if self.shared_axes is None else tuple(self.shared_axes)

    def compute_output_shape(self, input_shape):
        if len(input_shape) < 1 or any(a >= len(input_shape) for a in self._shared()):
            raise ValueError(
                f"Invalid input for layer '{self.name}': PReLU needs a batch axis and the axes of "
                f"`shared_axes`. Received: input_shape={tuple(input_shape)}, shared_axes={self.shared_axes}"
            )
        return tuple(input_shape)

    def build(self, input_shape):
        self.compute_output_shape(input_shape)
        shared = self._shared()
        shape = tuple(1 if i in shared else n for i, n in enumerate(input_shape) if i > 0)
        self.alpha = self.add_weight(shape=shape, name="alpha", initializer=self.alpha_initializer,
                                     regularizer=self.alpha_regularizer, constraint=self.alpha_constraint)
        axes = {i: n for i, n in enumerate(input_shape) if i > 0 and i not in shared}
        self.input_spec = InputSpec(ndim=len(input_shape), axes=axes)
        self.built = True

    def call(self, inputs):
        return self._record("prelu", self._prelu, inputs, self.alpha)

    def _prelu(self, x, alpha):
        xp = get_ops().xp
        y = xp.where(x > 0, x, alpha * x)
        # alpha's gradient sums over the batch and the shared axes, where it was broadcast.
        reduced = (0,) + tuple(i for i in range(1, x.ndim) if alpha.shape[i - 1] == 1 and x.shape[i] != 1)

        def backward(dy, needs):
            dx = xp.where(x > 0, dy, xp.where(x < 0, alpha * dy, dy.dtype.type(0))) if needs[0] else None
            dalpha = None
            if needs[1]:
                wide = "float32" if dy.dtype.itemsize < 4 else dy.dtype  # float16 sums over a batch overflow
                dalpha = xp.sum(dy * xp.minimum(x, 0), axis=reduced, keepdims=True, dtype=wide)
                dalpha = dalpha.reshape(alpha.shape).astype(dy.dtype, copy=False)
            return dx, dalpha

        return y, backward

    def get_config(self):
        return {
            **super().get_config(),
            "alpha_initializer": initializers.serialize(self.alpha_initializer),
            "alpha_regularizer": regularizers.serialize(self.alpha_regularizer),
            "alpha_constraint": constraints.serialize(self.alpha_constraint),
            "shared_axes": self.shared_axes,
        }


class ELU(_Elementwise):
    """``x`` for ``x > 0``, else ``alpha * (exp(x) - 1)``."""

    def __init__(self, alpha=1.0, **kwargs):
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
            raise TypeError(f"Invalid type for `alpha` of an ELU layer: expected a number. Received: alpha={alpha!r}")
        super().__init__(**kwargs)
        self.alpha = float(alpha)

    def call(self, inputs):
        return activations.elu(inputs, alpha=self.alpha)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}


class Softmax(_Elementwise):
    """Softmax along ``axis`` (an int or a tuple of ints)."""

    def __init__(self, axis=-1, **kwargs):
        axes = axis if isinstance(axis, (list, tuple)) else (axis,)
        if not axes or any(isinstance(a, bool) or not isinstance(a, numbers.Integral) for a in axes):
            raise TypeError(f"Invalid type for `axis` of a Softmax layer: expected an int or a tuple of ints. Received: axis={axis!r}")
        super().__init__(**kwargs)
        self.axis = tuple(int(a) for a in axis) if isinstance(axis, (list, tuple)) else int(axis)

    def call(self, inputs, mask=None):
        if mask is not None:
            raise ValueError(f"Layer '{self.name}': masks are not supported by gpulayers yet. Received a mask.")
        return activations.softmax(inputs, axis=self.axis)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}
