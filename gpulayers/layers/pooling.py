"""Pooling layers: max, average and stochastic windows, and global pooling (1-D and 2-D)."""

from backends import get_ops
from gpulayers import utils
from gpulayers.argument_validation import standardize_bool, standardize_data_format, standardize_padding, standardize_tuple
from gpulayers.window_geometry import conv_output_length, same_pads, window_pads
from gpulayers.layers.base import Layer
from gpulayers.layers.input_spec import InputSpec
from gpulayers.layers.convolutional import check_rank4, lift_1d, spatial_axes, windowed_output_shape

__all__ = [
    "AveragePooling1D",
    "AveragePooling2D",
    "AvgPool1D",
    "AvgPool2D",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalAvgPool1D",
    "GlobalAvgPool2D",
    "GlobalMaxPool1D",
    "GlobalMaxPool2D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "MaxPool1D",
    "MaxPool2D",
    "MaxPooling1D",
    "MaxPooling2D",
    "StochasticPooling2D",
]


class _Pooling(Layer):
    """Shared arguments of the windowed pooling layers (``rank`` spatial axes)."""

    built_at_construction = True

    rank = 2
    single_input = True
    input_cast = "all"  # numeric inputs are computed in the layer's dtype

    def __init__(self, pool_size, strides=None, padding="valid", data_format=None, **kwargs):
        pool_size = standardize_tuple(pool_size, self.rank, "pool_size")
        strides = pool_size if strides is None else standardize_tuple(strides, self.rank, "strides")
        self.padding = standardize_padding(padding)
        self.data_format = standardize_data_format(data_format)
        super().__init__(**kwargs)
        self.pool_size = pool_size
        self.strides = strides
        self.input_spec = InputSpec(ndim=self.rank + 2)


class Pooling2D(_Pooling):
    """Shared arguments of the windowed 2-D pooling layers."""

    def compute_output_shape(self, input_shape):
        check_rank4(self, input_shape)
        channels = input_shape[spatial_axes(self.data_format)[2]]
        return windowed_output_shape(self, input_shape, channels, self.pool_size, self.strides, (1, 1))

    def _window(self, x_shape):
        """(pool_size, strides, pads, data_format) for the ops calls."""
        h, w, _ = spatial_axes(self.data_format)
        pads = window_pads((x_shape[h], x_shape[w]), self.pool_size, self.strides, (1, 1), self.padding)
        return self.pool_size, self.strides, pads, self.data_format

    def get_config(self):
        return {
            **super().get_config(),
            "pool_size": self.pool_size,
            "padding": self.padding,
            "strides": self.strides,
            "data_format": self.data_format,
        }


class MaxPooling2D(Pooling2D):
    """Max pooling over 2-D windows.

    Args:
        pool_size: Int or tuple of 2 ints, the window size (default (2, 2)).
        strides: Int, tuple of 2 ints, or None (default: pool_size).
        padding: ``'valid'`` or ``'same'`` (padded cells never win).
        data_format: ``'channels_last'`` or ``'channels_first'``.

    Input shape: 4-D, ``(batch, rows, cols, channels)`` or ``(batch, channels, rows, cols)``.
    Output shape: 4-D with pooled rows and cols. On ties the first maximum in
    the window (row-major) receives the gradient, as in Keras and PyTorch.

    Example:
        >>> MaxPooling2D()(np.arange(16.0).reshape(1, 4, 4, 1))[0, :, :, 0]
        array([[ 5.,  7.],
               [13., 15.]], dtype=float32)
    """

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)

    def call(self, inputs):
        return self._record("max_pool2d", self._pool, inputs)

    def _pool(self, x):
        ops, window, shape = get_ops(), self._window(x.shape), tuple(x.shape)
        y, argmax = ops.max_pool2d_forward(x, *window)
        return y, lambda dy, needs: (ops.max_pool2d_backward(dy, argmax, shape, *window),)


class AveragePooling2D(Pooling2D):
    """Average pooling over 2-D windows.

    Args:
        pool_size: Int or tuple of 2 ints (required, as in Keras).
        strides: Int, tuple of 2 ints, or None (default: pool_size).
        padding: ``'valid'`` or ``'same'``. With 'same' each window is divided
            by its number of real (unpadded) cells, as Keras does.
        data_format: ``'channels_last'`` or ``'channels_first'``.

    Input shape: 4-D. Output shape: 4-D with pooled rows and cols.

    Example:
        >>> AveragePooling2D(2)(np.ones((1, 4, 4, 1))).shape
        (1, 2, 2, 1)
    """

    def __init__(self, pool_size, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)

    def call(self, inputs):
        return self._record("average_pool2d", self._pool, inputs)

    def _pool(self, x):
        ops, window, shape = get_ops(), self._window(x.shape), tuple(x.shape)
        y = ops.avg_pool2d_forward(x, *window)
        return y, lambda dy, needs: (ops.avg_pool2d_backward(dy, shape, *window),)


class StochasticPooling2D(Pooling2D):
    """Stochastic pooling (Zeiler & Fergus, 2013); meant to follow a ReLU.

    In training each window outputs one of its elements, drawn with
    probability ``p_i = a_i / sum(a)`` where ``a = max(x, 0)``; the gradient
    flows to that element only. A window whose activations sum to 0 outputs 0.
    In inference the window outputs the expectation ``sum(p_i * a_i)``.
    Negative inputs count as 0, so put it after a ReLU.

    Args:
        pool_size, strides, padding, data_format: As :class:`MaxPooling2D`.
        seed: Int or None; the same seed gives the same draws on a backend.

    Input shape: 4-D. Output shape: 4-D with pooled rows and cols.

    Example:
        >>> layer = StochasticPooling2D(seed=0)
        >>> layer(np.ones((1, 4, 4, 1)), training=True).shape
        (1, 2, 2, 1)
    """

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, seed=None, **kwargs):
        if seed is not None:
            seed = _check_seed(seed)
        super().__init__(pool_size, strides, padding, data_format, **kwargs)
        self.seed = seed
        self._rng = self._rng_ops = None  # made on first training call, per backend

    def call(self, inputs, training=False):
        return self._record("stochastic_pool2d", self._draw if training else self._expect, inputs)

    def _draw(self, x):
        ops, window, shape = get_ops(), self._window(x.shape), tuple(x.shape)
        if self._rng is None or self._rng_ops is not ops:
            self._rng, self._rng_ops = ops.random_stream(utils.derive_seed(self.seed)), ops
        uniforms = ops.uniform(self._rng, self.compute_output_shape(shape), x.dtype)
        y, index = ops.stochastic_pool2d_forward(x, uniforms, *window)
        return y, lambda dy, needs: (ops.stochastic_pool2d_backward(dy, index, shape, *window),)

    def _expect(self, x):
        ops, window = get_ops(), self._window(x.shape)
        y = ops.stochastic_pool2d_inference_forward(x, *window)
        return y, lambda dy, needs: (ops.stochastic_pool2d_inference_backward(dy, x, *window),)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"Invalid value for `seed`: expected None or a non-negative int. Received: seed={seed!r}")
    return seed


class GlobalPooling2D(Layer):
    """Shared arguments of global pooling: data_format and keepdims."""

    built_at_construction = True

    single_input = True
    input_cast = "all"  # numeric inputs are computed in the layer's dtype

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        self.data_format = standardize_data_format(data_format)
        self.keepdims = standardize_bool(keepdims, "keepdims")
        super().__init__(**kwargs)
        self.input_spec = InputSpec(ndim=4)

    def compute_output_shape(self, input_shape):
        check_rank4(self, input_shape)
        n = input_shape[0]
        h_axis, w_axis, c_axis = spatial_axes(self.data_format)
        if 0 in (input_shape[h_axis], input_shape[w_axis]):  # no mean or max of nothing
            raise ValueError(
                f"Input of layer '{self.name}' has an empty spatial extent, so there is nothing to pool. "
                f"Received: inputs.shape={tuple(input_shape)} (data_format={self.data_format!r})"
            )
        channels = input_shape[c_axis]
        if not self.keepdims:
            return (n, channels)
        return (n, 1, 1, channels) if self.data_format == "channels_last" else (n, channels, 1, 1)

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format, "keepdims": self.keepdims}


class GlobalAveragePooling2D(GlobalPooling2D):
    """Mean over the spatial axes.

    Args:
        data_format: ``'channels_last'`` or ``'channels_first'``.
        keepdims: Keep the spatial axes with size 1.

    Input shape: 4-D. Output shape: ``(batch, channels)``, or with keepdims
    ``(batch, 1, 1, channels)`` / ``(batch, channels, 1, 1)``.

    Example:
        >>> GlobalAveragePooling2D()(np.ones((2, 4, 4, 3))).shape
        (2, 3)
    """

    def call(self, inputs):
        return self._record("global_average_pool2d", self._pool, inputs)

    def _pool(self, x):
        ops, shape, layout = get_ops(), tuple(x.shape), (self.data_format, self.keepdims)
        y = ops.global_avg_pool2d_forward(x, *layout)
        return y, lambda dy, needs: (ops.global_avg_pool2d_backward(dy, shape, *layout),)


class GlobalMaxPooling2D(GlobalPooling2D):
    """Maximum over the spatial axes (the first maximum receives the gradient).

    Args:
        data_format: ``'channels_last'`` or ``'channels_first'``.
        keepdims: Keep the spatial axes with size 1.

    Input shape: 4-D. Output shape: as :class:`GlobalAveragePooling2D`.

    Example:
        >>> GlobalMaxPooling2D(keepdims=True)(np.ones((2, 4, 4, 3))).shape
        (2, 1, 1, 3)
    """

    def call(self, inputs):
        return self._record("global_max_pool2d", self._pool, inputs)

    def _pool(self, x):
        ops, shape, layout = get_ops(), tuple(x.shape), (self.data_format, self.keepdims)
        y, argmax = ops.global_max_pool2d_forward(x, *layout)
        return y, lambda dy, needs: (ops.global_max_pool2d_backward(dy, argmax, shape, *layout),)


def _check_rank3(layer, input_shape):
    if len(input_shape) != 3:
        raise ValueError(
            f"Input of layer '{layer.name}' is incompatible with the layer: expected ndim=3, "
            f"found ndim={len(input_shape)}. Full shape received: inputs.shape={tuple(input_shape)}"
        )


class Pooling1D(_Pooling):
    """Shared arguments of the windowed 1-D pooling layers (run on the 2-D paths with a unit height axis)."""

    rank = 1

    def compute_output_shape(self, input_shape):
        _check_rank3(self, input_shape)
        steps_axis = 1 if self.data_format == "channels_last" else 2
        n = conv_output_length(input_shape[steps_axis], self.pool_size[0], self.strides[0], 1, self.padding)
        if n is not None and n <= 0:
            raise ValueError(
                f"Computed output size would be zero or negative for layer '{self.name}': the input "
                f"is smaller than the window. Received: inputs.shape={tuple(input_shape)}, "
                f"pool_size={self.pool_size}, strides={self.strides}, padding='{self.padding}'"
            )
        out = list(input_shape)
        out[steps_axis] = n
        return tuple(out)

    def _window(self, x_shape):
        steps = x_shape[1 if self.data_format == "channels_last" else 2]
        pads = (0, 0, 0, 0) if self.padding == "valid" else (0, 0) + same_pads(steps, self.pool_size[0],
                                                                              self.strides[0], 1)
        return (1, self.pool_size[0]), (1, self.strides[0]), pads, self.data_format

    def _squeeze(self, y4):
        if self.data_format == "channels_last":
            return y4.reshape((y4.shape[0], y4.shape[2], y4.shape[3]))
        return y4.reshape((y4.shape[0], y4.shape[1], y4.shape[3]))

    def get_config(self):
        return {
            **super().get_config(),
            "pool_size": self.pool_size,
            "padding": self.padding,
            "strides": self.strides,
            "data_format": self.data_format,
        }


class MaxPooling1D(Pooling1D):
    """Max pooling over 1-D windows, as Keras 3's ``keras.layers.MaxPooling1D``.

    Args:
        pool_size: Int (default 2), the window length.
        strides: Int or None (default: pool_size).
        padding: ``'valid'`` or ``'same'``.
        data_format: ``'channels_last'`` (N, steps, C) or ``'channels_first'`` (N, C, steps).
    """

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)

    def call(self, inputs):
        return self._record("max_pool1d", self._pool, inputs)

    def _pool(self, x):
        ops, window = get_ops(), self._window(x.shape)
        x4 = x.reshape(lift_1d(x.shape, self.data_format))
        y4, argmax = ops.max_pool2d_forward(x4, *window)

        def backward(dy, needs):
            return (ops.max_pool2d_backward(dy.reshape(y4.shape), argmax, tuple(x4.shape), *window).reshape(x.shape),)

        return self._squeeze(y4), backward


class AveragePooling1D(Pooling1D):
    """Average pooling over 1-D windows, as Keras 3's ``keras.layers.AveragePooling1D``.

    Args:
        pool_size: Int (required, as in Keras).
        strides: Int or None (default: pool_size).
        padding: ``'valid'`` or ``'same'`` (each window divided by its number of real steps).
        data_format: ``'channels_last'`` or ``'channels_first'``.
    """

    def __init__(self, pool_size, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)

    def call(self, inputs):
        return self._record("average_pool1d", self._pool, inputs)

    def _pool(self, x):
        ops, window = get_ops(), self._window(x.shape)
        x4 = x.reshape(lift_1d(x.shape, self.data_format))
        y4 = ops.avg_pool2d_forward(x4, *window)

        def backward(dy, needs):
            return (ops.avg_pool2d_backward(dy.reshape(y4.shape), tuple(x4.shape), *window).reshape(x.shape),)

        return self._squeeze(y4), backward


class GlobalPooling1D(Layer):
    """Shared arguments of 1-D global pooling: data_format and keepdims."""

    built_at_construction = True

    single_input = True
    input_cast = "all"

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        self.data_format = standardize_data_format(data_format)
        self.keepdims = standardize_bool(keepdims, "keepdims")
        super().__init__(**kwargs)
        self.input_spec = InputSpec(ndim=3)

    def compute_output_shape(self, input_shape):
        _check_rank3(self, input_shape)
        steps_axis, c_axis = (1, 2) if self.data_format == "channels_last" else (2, 1)
        if input_shape[steps_axis] == 0:
            raise ValueError(
                f"Input of layer '{self.name}' has no steps, so there is nothing to pool. "
                f"Received: inputs.shape={tuple(input_shape)} (data_format={self.data_format!r})"
            )
        n, channels = input_shape[0], input_shape[c_axis]
        if not self.keepdims:
            return (n, channels)
        return (n, 1, channels) if self.data_format == "channels_last" else (n, channels, 1)

    def _check_mask(self, mask):
        if mask is not None:
            raise NotImplementedError(
                f"Layer '{self.name}' was given a mask: masking is not supported by gpulayers yet."
            )

    def _out_shape(self, x_shape):
        return self.compute_output_shape(tuple(x_shape))

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format, "keepdims": self.keepdims}


class GlobalAveragePooling1D(GlobalPooling1D):
    """Mean over the steps axis, as Keras 3's ``keras.layers.GlobalAveragePooling1D``.

    Args:
        data_format: ``'channels_last'`` (N, steps, C) or ``'channels_first'`` (N, C, steps).
        keepdims: Keep the steps axis with size 1.

    Output shape: ``(batch, channels)``, or with keepdims ``(batch, 1, channels)`` / ``(batch, channels, 1)``.
    """

    def call(self, inputs, mask=None):
        self._check_mask(mask)
        return self._record("global_average_pool1d", self._pool, inputs)

    def _pool(self, x):
        ops = get_ops()
        x4_shape = lift_1d(x.shape, self.data_format)
        y = ops.global_avg_pool2d_forward(x.reshape(x4_shape), self.data_format, False)
        out_shape = self._out_shape(x.shape)

        def backward(dy, needs):
            dy2 = dy.reshape(y.shape)
            return (ops.global_avg_pool2d_backward(dy2, x4_shape, self.data_format, False).reshape(x.shape),)

        return y.reshape(out_shape), backward


class GlobalMaxPooling1D(GlobalPooling1D):
    """Maximum over the steps axis (the first maximum receives the gradient), as Keras 3's layer.

    Args:
        data_format: ``'channels_last'`` or ``'channels_first'``.
        keepdims: Keep the steps axis with size 1.
    """

    def call(self, inputs):
        return self._record("global_max_pool1d", self._pool, inputs)

    def _pool(self, x):
        ops = get_ops()
        x4_shape = lift_1d(x.shape, self.data_format)
        y, argmax = ops.global_max_pool2d_forward(x.reshape(x4_shape), self.data_format, False)
        out_shape = self._out_shape(x.shape)

        def backward(dy, needs):
            dy2 = dy.reshape(y.shape)
            return (ops.global_max_pool2d_backward(dy2, argmax, x4_shape, self.data_format, False).reshape(x.shape),)

        return y.reshape(out_shape), backward


MaxPool1D = MaxPooling1D
AvgPool1D = AveragePooling1D
GlobalAvgPool1D = GlobalAveragePooling1D
GlobalMaxPool1D = GlobalMaxPooling1D
MaxPool2D = MaxPooling2D
AvgPool2D = AveragePooling2D
GlobalAvgPool2D = GlobalAveragePooling2D
GlobalMaxPool2D = GlobalMaxPooling2D
