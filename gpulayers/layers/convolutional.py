"""2-D convolution (Conv2D), as Keras 3's ``keras.layers.Conv2D``."""

from backends import get_ops
from gpulayers import activations, constraints, initializers, regularizers
from gpulayers.layers.arguments import (
    conv_output_length,
    standardize_bool,
    standardize_data_format,
    standardize_int,
    standardize_padding,
    standardize_tuple,
    window_pads,
)
from gpulayers.layers.base import Layer
from gpulayers.layers.input_spec import InputSpec
from gpulayers.layers.core import check_no_lora

__all__ = ["Conv2D", "Convolution2D"]


def spatial_axes(data_format):
    """(H axis, W axis, channel axis) of a 4-D tensor."""
    return (1, 2, 3) if data_format == "channels_last" else (2, 3, 1)


def check_rank4(layer, input_shape):
    if len(input_shape) != 4:
        raise ValueError(
            f"Input of layer '{layer.name}' is incompatible with the layer: expected ndim=4, "
            f"found ndim={len(input_shape)}. Full shape received: inputs.shape={tuple(input_shape)}"
        )


def windowed_output_shape(layer, input_shape, channels, kernel, strides, dilation):
    """Output shape of a 2-D window op, refusing an empty result as Keras does."""
    check_rank4(layer, input_shape)
    h_axis, w_axis, c_axis = spatial_axes(layer.data_format)
    out = list(input_shape)
    for i, axis in enumerate((h_axis, w_axis)):
        n = conv_output_length(input_shape[axis], kernel[i], strides[i], dilation[i], layer.padding)
        if n is not None and n <= 0:
            raise ValueError(
                f"Computed output size would be zero or negative for layer '{layer.name}': the input "
                f"is smaller than the window. Received: inputs.shape={tuple(input_shape)}, "
                f"window={kernel}, strides={strides}, dilation_rate={dilation}, padding='{layer.padding}'"
            )
        out[axis] = n
    out[c_axis] = channels
    return tuple(out)


class Conv2D(Layer):
    """2-D convolution layer (spatial convolution over images).

    Args:
        filters: Positive int, the number of output channels.
        kernel_size: Int or tuple of 2 ints, the window's height and width.
        strides: Int or tuple of 2 ints (default 1). Strides > 1 cannot be
            combined with dilation_rate > 1.
        padding: ``'valid'`` (no padding) or ``'same'`` (output size
            ``ceil(n / stride)``; the extra pad pixel goes bottom/right).
        data_format: ``'channels_last'`` (N, H, W, C) or ``'channels_first'``
            (N, C, H, W); default ``gpulayers.config.image_data_format()``.
        dilation_rate: Int or tuple of 2 ints (default 1).
        groups: Must be 1 (grouped convolution is not supported yet).
        activation, use_bias, kernel_initializer, bias_initializer,
        kernel_regularizer, bias_regularizer, activity_regularizer,
        kernel_constraint, bias_constraint: As in :class:`Dense`.
        lora_rank, lora_alpha: As in :class:`Dense` (Keras's LoRA arguments):
            ``lora_rank`` must be None.

    Input shape: ``(batch, rows, cols, channels)`` or ``(batch, channels, rows, cols)``.
    Output shape: ``(batch, new_rows, new_cols, filters)`` or ``(batch, filters, new_rows, new_cols)``.
    The kernel has Keras's layout ``(kernel_h, kernel_w, in_channels, filters)``.

    Example:
        >>> layer = Conv2D(8, 3, padding="same")
        >>> layer(np.zeros((2, 32, 32, 3))).shape
        (2, 32, 32, 8)
    """

    single_input = True
    input_cast = "all"  # numeric inputs are computed in the layer's dtype

    def __init__(
        self,
        filters,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        data_format=None,
        dilation_rate=(1, 1),
        groups=1,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        lora_rank=None,
        lora_alpha=None,
        **kwargs,
    ):
        filters = standardize_int(filters, "filters")
        kernel_size = standardize_tuple(kernel_size, 2, "kernel_size")
        strides = standardize_tuple(strides, 2, "strides")
        dilation_rate = standardize_tuple(dilation_rate, 2, "dilation_rate")
        if max(strides) > 1 and max(dilation_rate) > 1:
            raise ValueError(
                "`strides > 1` not supported in conjunction with `dilation_rate > 1`. "
                f"Received: strides={strides} and dilation_rate={dilation_rate}"
            )
        groups = standardize_int(groups, "groups")
        if groups != 1:
            raise ValueError(
                f"Invalid value for `groups`: grouped convolution is not supported yet, only groups=1. "
                f"Received: groups={groups}"
            )
        check_no_lora(lora_rank, lora_alpha)
        self.padding = standardize_padding(padding)
        self.data_format = standardize_data_format(data_format)
        self.activation = activations.get(activation, argument="activation")
        self.use_bias = standardize_bool(use_bias, "use_bias")
        self.kernel_initializer = initializers.get(kernel_initializer, argument="kernel_initializer")
        self.bias_initializer = initializers.get(bias_initializer, argument="bias_initializer")
        self.kernel_regularizer = regularizers.get(kernel_regularizer, argument="kernel_regularizer")
        self.bias_regularizer = regularizers.get(bias_regularizer, argument="bias_regularizer")
        self.kernel_constraint = constraints.get(kernel_constraint, argument="kernel_constraint")
        self.bias_constraint = constraints.get(bias_constraint, argument="bias_constraint")
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.dilation_rate = dilation_rate
        self.groups = groups
        self.lora_rank = None
        self.lora_alpha = lora_alpha
        self.lora_enabled = False
        self.input_spec = InputSpec(ndim=4)
        self.kernel = self.bias = None

    @property
    def _channel_axis(self):
        return spatial_axes(self.data_format)[2]

    def build(self, input_shape):
        channels = input_shape[self._channel_axis]
        if channels is None:
            raise ValueError(
                f"The channel axis of the input of layer '{self.name}' must be known. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        self.kernel = self.add_weight(
            shape=self.kernel_size + (channels, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
            name="kernel",
        )
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(self.filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
                name="bias",
            )
        self.input_spec = InputSpec(ndim=4, axes={self._channel_axis: channels})
        self.built = True

    def compute_output_shape(self, input_shape):
        return windowed_output_shape(self, input_shape, self.filters, self.kernel_size, self.strides, self.dilation_rate)

    def _pads(self, x_shape):
        h, w, _ = spatial_axes(self.data_format)
        return window_pads((x_shape[h], x_shape[w]), self.kernel_size, self.strides, self.dilation_rate, self.padding)

    def call(self, inputs):
        return self._activate(self._record("conv2d", self._conv, inputs, self.kernel, self.bias))

    def _conv(self, x, kernel, bias):
        ops = get_ops()
        pads, axis = self._pads(x.shape), self._channel_axis
        geometry = (self.strides, pads, self.dilation_rate, self.data_format)
        z = ops.conv2d_forward(x, kernel, *geometry)
        if bias is not None:
            ops.bias_add(z, bias, axis)

        def backward(dz, needs):
            dk = ops.conv2d_backward_kernel(x, dz, kernel.shape, *geometry) if needs[1] else None
            db = ops.channel_sum(dz, axis) if needs[2] else None
            dx = ops.conv2d_backward_input(dz, kernel, tuple(x.shape), *geometry) if needs[0] else None
            return dx, dk, db

        return z, backward

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
            "dilation_rate": self.dilation_rate,
            "groups": self.groups,
            "activation": activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "activity_regularizer": regularizers.serialize(self.activity_regularizer),  # always, as Keras's Conv2D
            "kernel_constraint": constraints.serialize(self.kernel_constraint),
            "bias_constraint": constraints.serialize(self.bias_constraint),
        }


Convolution2D = Conv2D
