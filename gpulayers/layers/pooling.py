"""Pooling layers: max, average and stochastic windows, and global pooling."""

from backends import get_ops
from gpulayers import utils
from gpulayers.layers.arguments import (
    standardize_bool,
    standardize_data_format,
    standardize_padding,
    standardize_tuple,
    window_pads,
)
from gpulayers.layers.base import Layer
from gpulayers.layers.input_spec import InputSpec
from gpulayers.layers.convolutional import check_rank4, spatial_axes, windowed_output_shape

__all__ = [
    "AveragePooling2D",
    "AvgPool2D",
    "GlobalAveragePooling2D",
    "GlobalAvgPool2D",
    "GlobalMaxPool2D",
    "GlobalMaxPooling2D",
    "MaxPool2D",
    "MaxPooling2D",
    "StochasticPooling2D",
]


class Pooling2D(Layer):
    """Shared arguments of the windowed 2-D pooling layers."""

    single_input = True
    input_cast = "all"  # numeric inputs are computed in the layer's dtype

    def __init__(self, pool_size, strides=None, padding="valid", data_format=None, **kwargs):
        pool_size = standardize_tuple(pool_size, 2, "pool_size")
        strides = pool_size if strides is None else standardize_tuple(strides, 2, "strides")
        self.padding = standardize_padding(padding)
        self.data_format = standardize_data_format(data_format)
        super().__init__(**kwargs)
        self.pool_size = pool_size
        self.strides = strides
        self.input_spec = InputSpec(ndim=4)

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
            self._rng, self._rng_ops = ops.rng(utils.derive_seed(self.seed)), ops
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


MaxPool2D = MaxPooling2D
AvgPool2D = AveragePooling2D
GlobalAvgPool2D = GlobalAveragePooling2D
GlobalMaxPool2D = GlobalMaxPooling2D
