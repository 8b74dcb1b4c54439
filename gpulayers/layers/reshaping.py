"""Flatten (``keras.layers.Flatten``)."""

import math

from gpulayers import ops
from gpulayers.layers.arguments import standardize_data_format
from gpulayers.layers.base import Layer
from gpulayers.layers.input_spec import InputSpec

__all__ = ["Flatten"]


class Flatten(Layer):
    """Flattens every axis but the batch axis.

    With ``data_format='channels_first'`` the input is first transposed to
    channels-last order, so the flattened features come out in the same order
    as for the channels_last model (Keras's behaviour, which keeps a following
    Dense's weights valid across data formats).

    Args:
        data_format: ``'channels_last'`` or ``'channels_first'``.

    Input shape: ``(batch, ...)``. Output shape: ``(batch, product of the rest)``
    (``(batch, 1)`` for a 1-D input).

    Example:
        >>> Flatten()(np.zeros((2, 3, 4, 5))).shape
        (2, 60)
    """

    single_input = True
    input_cast = "all"  # numeric inputs are computed in the layer's dtype

    def __init__(self, data_format=None, **kwargs):
        self.data_format = standardize_data_format(data_format)
        super().__init__(**kwargs)
        self.input_spec = InputSpec(min_ndim=1)

    def compute_output_shape(self, input_shape):
        if len(input_shape) < 1:
            raise ValueError(f"Input of layer '{self.name}' needs a batch axis. Received: input_shape={tuple(input_shape)}")
        rest = input_shape[1:]
        size = None if None in rest else math.prod(rest)
        return (input_shape[0], size)

    def _to_channels_last(self, ndim):
        return self.data_format == "channels_first" and ndim > 2

    def call(self, inputs):
        x = inputs
        if self._to_channels_last(x.ndim):
            x = ops.transpose(x, (0,) + tuple(range(2, x.ndim)) + (1,))
        return ops.reshape(x, (x.shape[0], math.prod(x.shape[1:])))

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}
