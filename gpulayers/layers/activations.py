"""Activation layers: ReLU, LeakyReLU, ELU and Softmax (Keras 3's ``keras.layers`` classes).

Each computes the activation of :mod:`gpulayers.activations` of the same
name, so they are differentiable on the tape as they stand, and a
``Softmax`` before a probability cross-entropy gets the fused gradient.
"""

import numbers

from gpulayers import activations
from gpulayers.layers.base import Layer

__all__ = ["ELU", "LeakyReLU", "ReLU", "Softmax"]


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
