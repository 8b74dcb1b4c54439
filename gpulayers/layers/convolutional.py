"""1-D and 2-D convolution (Conv1D, Conv2D) and transposed convolution (Conv2DTranspose), as Keras 3's layers."""

from backends import get_ops
from gpulayers import activations, constraints, initializers, regularizers
from gpulayers.argument_validation import (
    standardize_bool,
    standardize_data_format,
    standardize_int,
    standardize_padding,
    standardize_tuple,
)
from gpulayers.window_geometry import conv_output_length, same_pads, window_pads
from gpulayers.layers.base import Layer
from gpulayers.layers.input_spec import InputSpec
from gpulayers.layers.core import check_no_lora
from gpulayers.ops.convolution import conv_transpose_arrays, conv_transpose_output_length

__all__ = ["Conv1D", "Conv2D", "Conv2DTranspose", "Convolution1D", "Convolution2D", "Convolution2DTranspose"]


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


class _ConvBase(Layer):
    """What Conv1D, Conv2D and Conv2DTranspose share: the argument checks, the kernel and bias, the config."""

    rank = 2  # spatial axes

    single_input = True
    input_cast = "all"  # numeric inputs are computed in the layer's dtype

    def _standardize(self, filters, kernel_size, strides, padding, data_format, dilation_rate, activation, use_bias,
                     kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer, kernel_constraint,
                     bias_constraint):
        """Check and keep the shared arguments (before ``Layer.__init__``: nothing is set if one is refused)."""
        filters = standardize_int(filters, "filters")
        kernel_size = standardize_tuple(kernel_size, self.rank, "kernel_size")
        strides = standardize_tuple(strides, self.rank, "strides")
        dilation_rate = standardize_tuple(dilation_rate, self.rank, "dilation_rate")
        if max(strides) > 1 and max(dilation_rate) > 1:
            raise ValueError(
                "`strides > 1` not supported in conjunction with `dilation_rate > 1`. "
                f"Received: strides={strides} and dilation_rate={dilation_rate}"
            )
        return {
            "filters": filters, "kernel_size": kernel_size, "strides": strides, "dilation_rate": dilation_rate,
            "padding": self._standardize_padding(padding),
            "data_format": standardize_data_format(data_format),
            "activation": activations.get(activation, argument="activation"),
            "use_bias": standardize_bool(use_bias, "use_bias"),
            "kernel_initializer": initializers.get(kernel_initializer, argument="kernel_initializer"),
            "bias_initializer": initializers.get(bias_initializer, argument="bias_initializer"),
            "kernel_regularizer": regularizers.get(kernel_regularizer, argument="kernel_regularizer"),
            "bias_regularizer": regularizers.get(bias_regularizer, argument="bias_regularizer"),
            "kernel_constraint": constraints.get(kernel_constraint, argument="kernel_constraint"),
            "bias_constraint": constraints.get(bias_constraint, argument="bias_constraint"),
        }

    @staticmethod
    def _standardize_padding(padding):
        return standardize_padding(padding)

    @staticmethod
    def _standardize_groups(groups, filters):
        groups = standardize_int(groups, "groups")
        if filters % groups:
            raise ValueError(
                "The number of filters must be evenly divisible by the number of groups. "
                f"Received: groups={groups}, filters={filters}"
            )
        return groups

    def _keep(self, arguments):
        for name, value in arguments.items():
            setattr(self, name, value)
        self.input_spec = InputSpec(ndim=self.rank + 2)
        self.kernel = self.bias = None

    @property
    def _channel_axis(self):
        return self.rank + 1 if self.data_format == "channels_last" else 1

    def _kernel_shape(self, channels):
        raise NotImplementedError

    def build(self, input_shape):
        channels = input_shape[self._channel_axis]
        if channels is None:
            raise ValueError(
                f"The channel axis of the input of layer '{self.name}' must be known. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        groups = getattr(self, "groups", 1)
        if channels % groups:
            raise ValueError(
                "The number of input channels must be evenly divisible by the number of groups. "
                f"Received: groups={groups}, input_shape={tuple(input_shape)}"
            )
        self.kernel = self.add_weight(
            shape=self._kernel_shape(channels // groups),
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
        self.input_spec = InputSpec(ndim=self.rank + 2, axes={self._channel_axis: channels})
        self.built = True

    def _grouped(self, single, x, kernel, bias):
        """A grouped convolution (Keras's ``groups``): the input channels in ``groups`` equal slices, slice ``i``
        convolved with the kernel's output-channel slice ``i`` by ``single(x_i, kernel_i, None) -> (z_i,
        backward_i)``, the outputs concatenated on the channel axis, then the bias."""
        ops = get_ops()
        xp, axis, groups = ops.xp, self._channel_axis, self.groups
        cin, cout = x.shape[axis] // groups, kernel.shape[-1] // groups

        def channels(a, i, width):
            return xp.ascontiguousarray(a[(slice(None),) * axis + (slice(i * width, (i + 1) * width),)])

        parts = [single(channels(x, i, cin), xp.ascontiguousarray(kernel[..., i * cout:(i + 1) * cout]), None)
                 for i in range(groups)]
        z = xp.concatenate([z_i for z_i, _ in parts], axis=axis)
        if bias is not None:
            ops.bias_add(z, bias, axis)

        def backward(dz, needs):
            grads = [backward_i(channels(dz, i, cout), (needs[0], needs[1], False))
                     for i, (_, backward_i) in enumerate(parts)]
            dx = xp.concatenate([g[0] for g in grads], axis=axis) if needs[0] else None
            dk = xp.concatenate([g[1] for g in grads], axis=-1) if needs[1] else None
            db = ops.channel_sum(dz, axis) if needs[2] else None
            return dx, dk, db

        return z, backward

    def _conv_config(self, **own):
        """Keras's config keys, in Keras's order, with the class's own keys (``own``) after ``padding``."""
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            **own,
            "activation": activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "activity_regularizer": regularizers.serialize(self.activity_regularizer),  # always, as Keras's
            "kernel_constraint": constraints.serialize(self.kernel_constraint),
            "bias_constraint": constraints.serialize(self.bias_constraint),
        }


class Conv2D(_ConvBase):
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
        groups: Number of groups the input channels are split into, each convolved with its own
            ``filters / groups`` filters (both counts divisible by it).
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
        arguments = self._standardize(
            filters, kernel_size, strides, padding, data_format, dilation_rate, activation, use_bias,
            kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer, kernel_constraint,
            bias_constraint,
        )
        groups = self._standardize_groups(groups, arguments["filters"])
        check_no_lora(lora_rank, lora_alpha)
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self._keep(arguments)
        self.groups = groups
        self.lora_rank = None
        self.lora_alpha = lora_alpha
        self.lora_enabled = False

    def _kernel_shape(self, channels):
        return self.kernel_size + (channels, self.filters)

    def compute_output_shape(self, input_shape):
        return windowed_output_shape(self, input_shape, self.filters, self.kernel_size, self.strides, self.dilation_rate)

    def _pads(self, x_shape):
        h, w, _ = spatial_axes(self.data_format)
        return window_pads((x_shape[h], x_shape[w]), self.kernel_size, self.strides, self.dilation_rate, self.padding)

    def call(self, inputs):
        if self.groups > 1:
            return self._activate(self._record("conv2d", lambda *a: self._grouped(self._conv, *a), inputs, self.kernel,
                                               self.bias))
        if self.activation is activations.relu:  # bias and ReLU in one pass, one node
            return self._record("conv2d", self._conv_relu, inputs, self.kernel, self.bias)
        return self._activate(self._record("conv2d", self._conv, inputs, self.kernel, self.bias))

    def _conv_relu(self, x, kernel, bias):
        return self._conv(x, kernel, bias, relu=True)

    def _conv(self, x, kernel, bias, relu=False):
        ops = get_ops()
        pads, axis = self._pads(x.shape), self._channel_axis
        geometry = (self.strides, pads, self.dilation_rate, self.data_format)
        z, patches = ops.conv2d_forward_train(x, kernel, *geometry)
        if relu:
            z = ops.bias_add_relu(z, bias, axis)
        elif bias is not None:
            ops.bias_add(z, bias, axis)

        def backward(dz, needs):
            if relu:
                dz = ops.relu_backward(z, dz)  # z is the ReLU's output: > 0 exactly where its input is
            dk = ops.conv2d_backward_kernel(x, dz, kernel.shape, *geometry, patches=patches) if needs[1] else None
            db = ops.channel_sum(dz, axis) if needs[2] else None
            dx = ops.conv2d_backward_input(dz, kernel, tuple(x.shape), *geometry) if needs[0] else None
            return dx, dk, db

        return z, backward

    def get_config(self):
        return self._conv_config(data_format=self.data_format, dilation_rate=self.dilation_rate, groups=self.groups)


Convolution2D = Conv2D


class Conv2DTranspose(_ConvBase):
    """Transposed 2-D convolution layer (Keras 3's ``keras.layers.Conv2DTranspose``).

    The gradient of a Conv2D with respect to its input, used to upsample: each
    input pixel adds the kernel, scaled by its value, into the output, the
    pixels ``strides`` apart.

    Args:
        filters: Positive int, the number of output channels.
        kernel_size: Int or tuple of 2 ints.
        strides: Int or tuple of 2 ints (default 1). Strides > 1 cannot be
            combined with dilation_rate > 1.
        padding: ``'valid'`` or ``'same'`` (case-insensitive).
        output_padding: None, or an int or tuple of 2 ints (each >= 0 and
            below the stride): extra rows/columns at the bottom/right.
        data_format: ``'channels_last'`` or ``'channels_first'``; default
            ``gpulayers.config.image_data_format()``.
        dilation_rate: Int or tuple of 2 ints (default 1).
        activation, use_bias, kernel_initializer, bias_initializer,
        kernel_regularizer, bias_regularizer, activity_regularizer,
        kernel_constraint, bias_constraint: As in :class:`Conv2D`.

    Output size along each spatial axis (``span = (k - 1) * dilation + 1``),
    Keras's: ``'valid'``: ``(n - 1) * stride + max(span, stride)`` or, with
    output_padding, ``(n - 1) * stride + span + output_padding``; ``'same'``:
    ``n * stride`` or, with output_padding, ``(n - 1) * stride + span % 2 +
    output_padding``. The kernel has Keras's layout ``(kernel_h, kernel_w,
    filters, in_channels)``.

    Example:
        >>> Conv2DTranspose(8, 3, strides=2, padding="same")(np.zeros((2, 16, 16, 3))).shape
        (2, 32, 32, 8)
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        output_padding=None,
        data_format=None,
        dilation_rate=(1, 1),
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        arguments = self._standardize(
            filters, kernel_size, strides, padding, data_format, dilation_rate, activation, use_bias,
            kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer, kernel_constraint,
            bias_constraint,
        )
        if output_padding is not None:
            output_padding = standardize_tuple(output_padding, 2, "output_padding", allow_zero=True)
            for i, (extra, stride) in enumerate(zip(output_padding, arguments["strides"])):
                if extra >= stride:
                    raise ValueError(
                        "`output_padding` must be strictly less than `strides` for all dimensions. At dimension "
                        f"{i}, `output_padding` is {extra} but `strides` is {stride}. Received: "
                        f"output_padding={output_padding}, strides={arguments['strides']}"
                    )
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self._keep(arguments)
        self.output_padding = output_padding

    def _kernel_shape(self, channels):
        return self.kernel_size + (self.filters, channels)  # Keras's layout for a transposed kernel

    def _output_padding(self):
        return (None, None) if self.output_padding is None else self.output_padding

    def compute_output_shape(self, input_shape):
        check_rank4(self, input_shape)
        h_axis, w_axis, c_axis = spatial_axes(self.data_format)
        out = list(input_shape)
        for i, axis in enumerate((h_axis, w_axis)):
            out[axis] = conv_transpose_output_length(
                input_shape[axis], self.kernel_size[i], self.strides[i], self.dilation_rate[i], self.padding,
                self._output_padding()[i],
            )
        out[c_axis] = self.filters
        return tuple(out)

    def call(self, inputs):
        return self._activate(self._record("conv2d_transpose", self._conv_transpose, inputs, self.kernel, self.bias))

    def _conv_transpose(self, x, kernel, bias):
        ops = get_ops()
        axis = self._channel_axis
        z, conv_backward = conv_transpose_arrays(
            x, kernel, self.strides, self.padding, self._output_padding(), self.dilation_rate, self.data_format
        )
        if bias is not None:
            ops.bias_add(z, bias, axis)

        def backward(dz, needs):
            dx, dk = conv_backward(dz, needs[:2])
            db = ops.channel_sum(dz, axis) if needs[2] else None
            return dx, dk, db

        return z, backward

    def get_config(self):
        return self._conv_config(
            output_padding=self.output_padding, data_format=self.data_format, dilation_rate=self.dilation_rate
        )


Convolution2DTranspose = Conv2DTranspose


def lift_1d(shape, data_format):
    """The 4-D shape a 1-D ``(N, L, C)`` (or ``(N, C, L)``) array has with a unit height axis."""
    if data_format == "channels_last":
        return (shape[0], 1, shape[1], shape[2])
    return (shape[0], shape[1], 1, shape[2])


class Conv1D(_ConvBase):
    """1-D convolution layer (temporal convolution), as Keras 3's ``keras.layers.Conv1D``.

    Args:
        filters: Positive int, the number of output channels.
        kernel_size: Int or tuple of 1 int, the window's length.
        strides: Int or tuple of 1 int (default 1). Strides > 1 cannot be
            combined with dilation_rate > 1.
        padding: ``'valid'``, ``'same'`` (output length ``ceil(n / stride)``,
            the extra pad step at the end) or ``'causal'`` (all the padding at
            the start, so output ``t`` sees no input after ``t``).
        data_format: ``'channels_last'`` (N, steps, C) or ``'channels_first'``
            (N, C, steps); default ``gpulayers.config.image_data_format()``.
        dilation_rate: Int or tuple of 1 int (default 1).
        groups: Number of groups the input channels are split into, each convolved with its own
            ``filters / groups`` filters (both counts divisible by it).
        activation, use_bias, kernel_initializer, bias_initializer,
        kernel_regularizer, bias_regularizer, activity_regularizer,
        kernel_constraint, bias_constraint: As in :class:`Conv2D`.

    The kernel has Keras's layout ``(kernel_size, in_channels, filters)``; the
    layer runs on the 2-D convolution hot paths with a unit height axis.

    Example:
        >>> Conv1D(8, 3, padding="causal")(np.zeros((2, 10, 4))).shape
        (2, 10, 8)
    """

    rank = 1

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
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
        **kwargs,
    ):
        arguments = self._standardize(
            filters, kernel_size, strides, padding, data_format, dilation_rate, activation, use_bias,
            kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer, kernel_constraint,
            bias_constraint,
        )
        groups = self._standardize_groups(groups, arguments["filters"])
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self._keep(arguments)
        self.groups = groups

    @staticmethod
    def _standardize_padding(padding):
        if isinstance(padding, str) and padding.lower() == "causal":
            return "causal"
        try:
            return standardize_padding(padding)
        except ValueError:
            raise ValueError(
                f"Invalid value for `padding`: expected 'valid', 'same' or 'causal'. Received: padding={padding!r}"
            ) from None

    def _kernel_shape(self, channels):
        return self.kernel_size + (channels, self.filters)

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(
                f"Input of layer '{self.name}' is incompatible with the layer: expected ndim=3, "
                f"found ndim={len(input_shape)}. Full shape received: inputs.shape={tuple(input_shape)}"
            )
        steps_axis = 1 if self.data_format == "channels_last" else 2
        padding = "same" if self.padding == "causal" else self.padding  # causal: ceil(n / stride), as same
        n = conv_output_length(input_shape[steps_axis], self.kernel_size[0], self.strides[0], self.dilation_rate[0],
                               padding)
        if n is not None and n <= 0:
            raise ValueError(
                f"Computed output size would be zero or negative for layer '{self.name}': the input "
                f"is smaller than the window. Received: inputs.shape={tuple(input_shape)}, "
                f"kernel_size={self.kernel_size}, strides={self.strides}, dilation_rate={self.dilation_rate}, "
                f"padding='{self.padding}'"
            )
        out = list(input_shape)
        out[steps_axis] = n
        out[self._channel_axis] = self.filters
        return tuple(out)

    def _pads(self, steps):
        k, s, d = self.kernel_size[0], self.strides[0], self.dilation_rate[0]
        if self.padding == "valid":
            return (0, 0, 0, 0)
        if self.padding == "causal":
            return (0, 0, (k - 1) * d, 0)
        return (0, 0) + same_pads(steps, k, s, d)

    def call(self, inputs):
        conv = self._conv if self.groups == 1 else (lambda *a: self._grouped(self._conv, *a))
        return self._activate(self._record("conv1d", conv, inputs, self.kernel, self.bias))

    def _conv(self, x, kernel, bias):
        ops = get_ops()
        x4 = x.reshape(lift_1d(x.shape, self.data_format))
        k4 = kernel.reshape((1,) + kernel.shape)
        steps = x.shape[1 if self.data_format == "channels_last" else 2]
        axis4 = 3 if self.data_format == "channels_last" else 1
        geometry = ((1, self.strides[0]), self._pads(steps), (1, self.dilation_rate[0]), self.data_format)
        z4 = ops.conv2d_forward(x4, k4, *geometry)
        if bias is not None:
            ops.bias_add(z4, bias, axis4)
        if self.data_format == "channels_last":
            z = z4.reshape((z4.shape[0], z4.shape[2], z4.shape[3]))
        else:
            z = z4.reshape((z4.shape[0], z4.shape[1], z4.shape[3]))

        def backward(dz, needs):
            dz4 = dz.reshape(z4.shape)
            dk = ops.conv2d_backward_kernel(x4, dz4, k4.shape, *geometry).reshape(kernel.shape) if needs[1] else None
            db = ops.channel_sum(dz4, axis4) if needs[2] else None
            dx = ops.conv2d_backward_input(dz4, k4, tuple(x4.shape), *geometry).reshape(x.shape) if needs[0] else None
            return dx, dk, db

        return z, backward

    def get_config(self):
        return self._conv_config(data_format=self.data_format, dilation_rate=self.dilation_rate, groups=self.groups)


Convolution1D = Conv1D
