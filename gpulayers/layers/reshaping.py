"""Reshaping layers, as Keras 3's: Flatten, Reshape, Permute, RepeatVector, UpSampling2D, ZeroPadding2D,
Cropping2D.

They move entries without arithmetic (UpSampling2D's bilinear mode
interpolates), and are differentiable on the tape; none has weights.
"""

import math
import numbers

import numpy as np

from backends import get_ops
from gpulayers import autodiff, ops
from gpulayers.argument_validation import standardize_data_format, standardize_side_pairs, standardize_tuple
from gpulayers.layers.base import Layer
from gpulayers.layers.convolutional import check_rank4, spatial_axes
from gpulayers.layers.input_spec import InputSpec

__all__ = ["Cropping2D", "Flatten", "Permute", "RepeatVector", "Reshape", "UpSampling2D", "ZeroPadding2D"]


def _is_int(value):
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


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


# ---------------------------------------------------------------- Reshape, Permute, RepeatVector


def _standardize_target_shape(value):
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(
            f"Invalid type for `target_shape`: expected a tuple of ints. Received: target_shape={value!r}"
        ) from None
    if not all(_is_int(d) for d in items):
        raise TypeError(f"Invalid type for `target_shape`: expected a tuple of ints. Received: target_shape={value!r}")
    items = tuple(int(d) for d in items)
    if any(d < -1 for d in items):
        raise ValueError(
            "Each dimension in `target_shape` must be a non-negative integer, or `-1` for a single unknown "
            f"dimension. Received: target_shape={items}."
        )
    if items.count(-1) > 1:
        raise ValueError(
            f"There must be at most one unknown dimension (-1) in `target_shape`. Received: target_shape={items}."
        )
    return items


def _resolve_target_shape(sizes, target):
    """``target`` with its -1 worked out from ``sizes`` (the input's non-batch sizes); None where unknown."""
    if None in sizes:
        return tuple(None if d == -1 else d for d in target)
    total = math.prod(sizes)
    if -1 not in target:
        if math.prod(target) != total:
            raise ValueError(
                f"The total size of the tensor must be unchanged. Received: input_shape={tuple(sizes)}, "
                f"target_shape={target}"
            )
        return target
    known = math.prod(d for d in target if d != -1)
    if known == 0 or total % known:
        raise ValueError(
            "The total size of the tensor must be unchanged, however, the input size cannot by divided by the "
            f"specified dimensions in target_shape. Received: input_shape={tuple(sizes)}, target_shape={target}"
        )
    return tuple(total // known if d == -1 else d for d in target)


def _check_batch_axis(layer, input_shape):
    if len(input_shape) < 1:
        raise ValueError(
            f"Input of layer '{layer.name}' needs a batch axis. Received: input_shape={tuple(input_shape)}"
        )


class Reshape(Layer):
    """Reshapes each sample to ``target_shape`` (the batch axis is kept).

    Args:
        target_shape: Tuple of ints, without the batch axis; one entry may be
            -1, worked out from the input's size.

    Example:
        >>> Reshape((-1, 2, 2))(np.zeros((5, 12))).shape
        (5, 3, 2, 2)
    """

    built_at_construction = True

    single_input = True

    def __init__(self, target_shape, **kwargs):
        target_shape = _standardize_target_shape(target_shape)
        super().__init__(**kwargs)
        self.target_shape = target_shape

    def compute_output_shape(self, input_shape):
        _check_batch_axis(self, input_shape)
        return (input_shape[0],) + _resolve_target_shape(tuple(input_shape[1:]), self.target_shape)

    def call(self, inputs):
        sizes = _resolve_target_shape(tuple(inputs.shape[1:]), self.target_shape)
        return ops.reshape(inputs, (inputs.shape[0],) + sizes)

    def get_config(self):
        return {**super().get_config(), "target_shape": self.target_shape}


class Permute(Layer):
    """Permutes the axes after the batch axis by ``dims`` (1-indexed: ``(2, 1)`` swaps the first two).

    Args:
        dims: Tuple of ints, a permutation of ``1..n`` for inputs of rank ``n + 1``.

    Example:
        >>> Permute((2, 1))(np.zeros((4, 10, 64))).shape
        (4, 64, 10)
    """

    single_input = True

    def __init__(self, dims, **kwargs):
        try:
            items = tuple(dims)
        except TypeError:
            raise TypeError(f"Invalid type for `dims`: expected a tuple of ints. Received: dims={dims!r}") from None
        if not all(_is_int(d) for d in items):
            raise TypeError(f"Invalid type for `dims`: expected a tuple of ints. Received: dims={dims!r}")
        items = tuple(int(d) for d in items)
        if sorted(items) != list(range(1, len(items) + 1)):
            raise ValueError(
                "Invalid permutation argument `dims` for Permute Layer. The set of indices in `dims` must be "
                f"consecutive and start from 1. Received dims={dims!r}"
            )
        super().__init__(**kwargs)
        self.dims = items
        self.input_spec = InputSpec(ndim=len(items) + 1)

    def compute_output_shape(self, input_shape):
        self.input_spec.check(self.name, input_shape)
        return (input_shape[0],) + tuple(input_shape[d] for d in self.dims)

    def call(self, inputs):
        return ops.transpose(inputs, (0,) + self.dims)

    def get_config(self):
        return {**super().get_config(), "dims": self.dims}


class RepeatVector(Layer):
    """Repeats a ``(batch, features)`` input ``n`` times: ``(batch, n, features)``.

    Args:
        n: Positive int, the repetition factor.
    """

    single_input = True

    def __init__(self, n, **kwargs):
        if not _is_int(n):
            raise TypeError(f"Expected an integer value for `n`, got {type(n)}. Received: n={n!r}")
        if n <= 0:
            raise ValueError(f"Argument `n` should be a positive integer. Received: n={n!r}")
        super().__init__(**kwargs)
        self.n = int(n)
        self.input_spec = InputSpec(ndim=2)

    def compute_output_shape(self, input_shape):
        self.input_spec.check(self.name, input_shape)
        return (input_shape[0], self.n, input_shape[1])

    def call(self, inputs):
        a = inputs.data
        y = get_ops().xp.repeat(a[:, None, :], self.n, axis=1)
        return autodiff.record("repeat_vector", y, (inputs,), lambda g, needs: (g.sum(axis=1),))

    def get_config(self):
        return {**super().get_config(), "n": self.n}


# ---------------------------------------------------------------- UpSampling2D, ZeroPadding2D, Cropping2D

_INTERPOLATIONS = ("nearest", "bilinear")
_KERAS_ONLY_INTERPOLATIONS = ("bicubic", "lanczos3", "lanczos5")


def _bilinear_weights(n, factor, dtype):
    """The (n, n * factor) matrix of Keras's (JAX's) bilinear resize along one axis, antialias off.

    Output ``o`` samples the input at ``(o + 0.5) / factor - 0.5`` (half-pixel
    centres) with the triangle kernel ``max(0, 1 - |t - j|)``, the weights of
    each output normalized to sum to 1 (so the edges repeat the edge pixel).
    Computed in float64, then cast to ``dtype``, as Keras does.
    """
    out = n * factor
    centres = (np.arange(out, dtype=np.float64) + 0.5) / factor - 0.5
    w = np.maximum(0.0, 1.0 - np.abs(centres[None, :] - np.arange(n, dtype=np.float64)[:, None]))
    total = w.sum(axis=0, keepdims=True)
    w = np.where(np.abs(total) > 1000.0 * np.finfo(np.float32).eps, w / np.where(total != 0, total, 1), 0.0)
    inside = (centres >= -0.5) & (centres <= n - 0.5)
    return np.where(inside[None, :], w, 0.0).astype(dtype)


class UpSampling2D(Layer):
    """Upsamples images by integer factors along rows and columns.

    Args:
        size: Int or tuple of 2 ints, the factors for rows and columns (default 2).
        data_format: ``'channels_last'`` or ``'channels_first'``; default
            ``gpulayers.config.image_data_format()``.
        interpolation: ``'nearest'`` (each pixel repeated) or ``'bilinear'``
            (Keras's ``ops.image.resize``: half-pixel centres, the edge pixel
            repeated at the borders, no antialiasing). Keras's ``'bicubic'``,
            ``'lanczos3'`` and ``'lanczos5'`` are not provided.

    Example:
        >>> UpSampling2D(size=(1, 2))(np.zeros((2, 2, 1, 3))).shape
        (2, 2, 2, 3)
    """

    single_input = True
    input_cast = "all"  # numeric inputs are computed in the layer's dtype

    def __init__(self, size=(2, 2), data_format=None, interpolation="nearest", **kwargs):
        size = standardize_tuple(size, 2, "size")
        text = interpolation.lower() if isinstance(interpolation, str) else interpolation
        if text not in _INTERPOLATIONS:
            why = " (Keras's is not provided by gpulayers)" if text in _KERAS_ONLY_INTERPOLATIONS else ""
            raise ValueError(
                f"Invalid value for `interpolation`: expected one of {_INTERPOLATIONS}{why}. "
                f"Received: interpolation={interpolation!r}"
            )
        self.data_format = standardize_data_format(data_format)
        super().__init__(**kwargs)
        self.size = size
        self.interpolation = text
        self.input_spec = InputSpec(ndim=4)

    def compute_output_shape(self, input_shape):
        check_rank4(self, input_shape)
        out = list(input_shape)
        for axis, factor in zip(spatial_axes(self.data_format)[:2], self.size):
            out[axis] = None if input_shape[axis] is None else input_shape[axis] * factor
        return tuple(out)

    def call(self, inputs):
        if self.interpolation == "nearest":
            return self._record("upsampling2d_nearest", self._nearest, inputs)
        return self._record("upsampling2d_bilinear", self._bilinear, inputs)

    def _nearest(self, x):
        xp = get_ops().xp
        h_axis, w_axis = spatial_axes(self.data_format)[:2]
        (sh, sw), shape = self.size, x.shape
        # Insert a unit axis after each spatial one, stretch it to the factor, merge.
        spread = list(shape)
        spread.insert(w_axis + 1, sw)
        spread.insert(h_axis + 1, sh)
        view = list(shape)
        view.insert(w_axis + 1, 1)
        view.insert(h_axis + 1, 1)
        y = xp.ascontiguousarray(xp.broadcast_to(x.reshape(view), tuple(spread)))
        out_shape = self.compute_output_shape(shape)
        y = y.reshape(out_shape)

        def backward(g, needs):
            return (g.reshape(spread).sum(axis=(h_axis + 1, w_axis + 2)),)

        return y, backward

    def _bilinear(self, x):
        xp = get_ops().xp
        steps = [
            (axis, xp.asarray(_bilinear_weights(x.shape[axis], factor, x.dtype)))
            for axis, factor in zip(spatial_axes(self.data_format)[:2], self.size)
            if factor != 1  # Keras resizes only the axes whose size changes
        ]
        y = x
        for axis, w in steps:
            y = xp.moveaxis(xp.tensordot(y, w, axes=(axis, 0)), -1, axis)

        def backward(g, needs):
            for axis, w in reversed(steps):
                g = xp.moveaxis(xp.tensordot(g, w, axes=(axis, 1)), -1, axis)
            return (xp.ascontiguousarray(g),)

        return xp.ascontiguousarray(y), backward

    def get_config(self):
        return {
            **super().get_config(),
            "size": self.size,
            "data_format": self.data_format,
            "interpolation": self.interpolation,
        }


class ZeroPadding2D(Layer):
    """Adds rows and columns of zeros around images.

    Args:
        padding: An int (all four sides), a pair ``(symmetric_height,
            symmetric_width)``, or ``((top, bottom), (left, right))``; ints >= 0.
        data_format: ``'channels_last'`` or ``'channels_first'``; default
            ``gpulayers.config.image_data_format()``.

    Example:
        >>> ZeroPadding2D(((1, 0), (2, 3)))(np.zeros((1, 4, 4, 2))).shape
        (1, 5, 9, 2)
    """

    single_input = True

    def __init__(self, padding=(1, 1), data_format=None, **kwargs):
        padding = standardize_side_pairs(padding, "padding")
        self.data_format = standardize_data_format(data_format)
        super().__init__(**kwargs)
        self.padding = padding
        self.input_spec = InputSpec(ndim=4)

    def compute_output_shape(self, input_shape):
        check_rank4(self, input_shape)
        out = list(input_shape)
        for axis, (before, after) in zip(spatial_axes(self.data_format)[:2], self.padding):
            if out[axis] is not None:
                out[axis] += before + after
        return tuple(out)

    def call(self, inputs):
        widths = [(0, 0)] * 4
        h_axis, w_axis = spatial_axes(self.data_format)[:2]
        widths[h_axis], widths[w_axis] = self.padding
        return ops.pad(inputs, widths)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding, "data_format": self.data_format}


class Cropping2D(Layer):
    """Removes rows and columns at the edges of images.

    Args:
        cropping: An int (all four sides), a pair ``(symmetric_height,
            symmetric_width)``, or ``((top, bottom), (left, right))``; ints >= 0,
            leaving at least one row and one column.
        data_format: ``'channels_last'`` or ``'channels_first'``; default
            ``gpulayers.config.image_data_format()``.

    Example:
        >>> Cropping2D(((2, 2), (4, 4)))(np.zeros((2, 28, 28, 3))).shape
        (2, 24, 20, 3)
    """

    single_input = True

    def __init__(self, cropping=((0, 0), (0, 0)), data_format=None, **kwargs):
        cropping = standardize_side_pairs(cropping, "cropping")
        self.data_format = standardize_data_format(data_format)
        super().__init__(**kwargs)
        self.cropping = cropping
        self.input_spec = InputSpec(ndim=4)

    def compute_output_shape(self, input_shape):
        check_rank4(self, input_shape)
        out = list(input_shape)
        axes = spatial_axes(self.data_format)[:2]
        if any(out[a] is not None and sum(c) >= out[a] for a, c in zip(axes, self.cropping)):
            raise ValueError(
                "Values in `cropping` argument should be smaller than the corresponding spatial dimension of the "
                f"input. Received: input_shape={tuple(input_shape)}, cropping={self.cropping}"
            )
        for axis, (before, after) in zip(axes, self.cropping):
            if out[axis] is not None:
                out[axis] -= before + after
        return tuple(out)

    def call(self, inputs):
        key = [slice(None)] * 4
        for axis, (before, after) in zip(spatial_axes(self.data_format)[:2], self.cropping):
            key[axis] = slice(before, inputs.shape[axis] - after)
        return inputs[tuple(key)]

    def get_config(self):
        return {**super().get_config(), "cropping": self.cropping, "data_format": self.data_format}
