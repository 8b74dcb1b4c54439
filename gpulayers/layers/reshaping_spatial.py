"""Spatial reshaping layers for 1, 2 and 3 spatial axes, as Keras 3's: ZeroPadding1D/2D/3D,
Cropping1D/2D/3D, UpSampling1D/2D/3D.

Each kind is written once for N spatial axes (``_ZeroPadding``, ``_Cropping``,
``_UpSampling``); the public classes fix the rank and Keras's signature,
defaults and argument forms. They move entries without arithmetic
(UpSampling2D's resizing modes interpolate), are differentiable on the tape,
and have no weights.
"""

import numbers

import numpy as np

from gpulayers import ops
from gpulayers.argument_validation import standardize_data_format, standardize_tuple
from gpulayers.layers.base import Layer
from gpulayers.layers.input_spec import InputSpec
from gpulayers.ops.core import xp

__all__ = [
    "Cropping1D",
    "Cropping2D",
    "Cropping3D",
    "UpSampling1D",
    "UpSampling2D",
    "UpSampling3D",
    "ZeroPadding1D",
    "ZeroPadding2D",
    "ZeroPadding3D",
]

_ORDINALS = ("1st", "2nd", "3rd")
_COUNTS = {2: "two", 3: "three"}


def _is_int(value):
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def _side_pair(value, label, whole=None):
    """``(before, after)`` from an int or a pair of ints, each >= 0; ValueError otherwise (as Keras)."""
    items = (value, value) if _is_int(value) else None
    if items is None and not isinstance(value, str):
        try:
            items = tuple(value)
        except TypeError:
            pass
    where = "" if whole is None else f" (in {whole!r})"
    if items is None or len(items) != 2 or not all(_is_int(v) for v in items):
        raise ValueError(
            f"The `{label}` argument must be an int or a tuple of 2 integers. Received: {label}={value!r}{where}"
        )
    if min(items) < 0:
        raise ValueError(
            f"The `{label}` argument must be a tuple of 2 integers, each >= 0. Received: {label}={value!r}{where}"
        )
    return (int(items[0]), int(items[1]))


def _side_pairs(value, rank, name):
    """Keras's padding/cropping amounts for ``rank`` spatial axes as ``rank`` pairs ``(before, after)``.

    Rank 1 takes an int or one pair. Ranks 2 and 3 take an int (every side),
    ``rank`` ints (symmetric per axis) or ``rank`` pairs, the forms mixed per
    axis. Every refusal is a ValueError, as Keras's.
    """
    if rank == 1:
        return (_side_pair(value, name),)
    if _is_int(value):
        if value < 0:
            raise ValueError(f"`{name}` cannot be negative. Received: {name}={value!r}.")
        return ((int(value),) * 2,) * rank
    if isinstance(value, str) or not hasattr(value, "__len__"):
        raise ValueError(
            f"`{name}` should be either an int, a tuple of {rank} ints (one symmetric amount per spatial axis), "
            f"or a tuple of {rank} tuples of 2 ints ((before, after) per spatial axis). Received: {name}={value!r}."
        )
    if len(value) != rank:
        raise ValueError(f"`{name}` should have {_COUNTS[rank]} elements. Received: {name}={value!r}.")
    return tuple(_side_pair(v, f"{_ORDINALS[i]} entry of {name}", value) for i, v in enumerate(value))


class _Spatial(Layer):
    """A weightless layer over ``rank`` spatial axes: axes ``1..rank`` (channels_last) or ``2..rank + 1``
    (channels_first). The 1-D layers Keras gives no ``data_format`` (``has_data_format = False``) are
    channels_last."""

    rank = None
    has_data_format = True
    single_input = True

    def __init__(self, data_format=None, **kwargs):
        if self.has_data_format:
            self.data_format = standardize_data_format(data_format)
        super().__init__(**kwargs)
        self.input_spec = InputSpec(ndim=self.rank + 2)

    def _spatial_axes(self):
        first = 2 if self.has_data_format and self.data_format == "channels_first" else 1
        return tuple(range(first, first + self.rank))

    def _format_config(self):
        return {"data_format": self.data_format} if self.has_data_format else {}


# ---------------------------------------------------------------- zero padding


class _ZeroPadding(_Spatial):
    """Adds zeros before and after each spatial axis."""

    def __init__(self, padding, data_format=None, **kwargs):
        pairs = _side_pairs(padding, self.rank, "padding")
        super().__init__(data_format, **kwargs)
        self.padding = pairs[0] if self.rank == 1 else pairs  # Keras's 1-D padding is one (before, after) pair

    def _pairs(self):
        return (self.padding,) if self.rank == 1 else self.padding

    def compute_output_shape(self, input_shape):
        self.input_spec.check(self.name, input_shape)
        out = list(input_shape)
        for axis, (before, after) in zip(self._spatial_axes(), self._pairs()):
            if out[axis] is not None:
                out[axis] += before + after
        return tuple(out)

    def call(self, inputs):
        widths = [(0, 0)] * inputs.ndim
        for axis, pair in zip(self._spatial_axes(), self._pairs()):
            widths[axis] = pair
        return ops.pad(inputs, widths)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding, **self._format_config()}


class ZeroPadding1D(_ZeroPadding):
    """Adds zeros at the start and end of sequences.

    Args:
        padding: An int (both ends) or a pair ``(before, after)``; ints >= 0.
        data_format: ``'channels_last'`` (``(batch, steps, features)``) or
            ``'channels_first'`` (``(batch, features, steps)``); default
            ``gpulayers.config.image_data_format()``.

    Example:
        >>> ZeroPadding1D(2)(np.zeros((2, 3, 4))).shape
        (2, 7, 4)
    """

    rank = 1

    def __init__(self, padding=1, data_format=None, **kwargs):
        super().__init__(padding, data_format, **kwargs)


class ZeroPadding2D(_ZeroPadding):
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

    rank = 2

    def __init__(self, padding=(1, 1), data_format=None, **kwargs):
        super().__init__(padding, data_format, **kwargs)


class ZeroPadding3D(_ZeroPadding):
    """Adds zeros around volumes (depth, height and width).

    Args:
        padding: An int (every side), 3 ints (symmetric per axis), or 3 pairs
            ``((before, after), ...)``; ints >= 0.
        data_format: ``'channels_last'`` or ``'channels_first'``; default
            ``gpulayers.config.image_data_format()``.

    Example:
        >>> ZeroPadding3D(2)(np.zeros((1, 1, 2, 2, 3))).shape
        (1, 5, 6, 6, 3)
    """

    rank = 3

    def __init__(self, padding=((1, 1), (1, 1), (1, 1)), data_format=None, **kwargs):
        super().__init__(padding, data_format, **kwargs)


# ---------------------------------------------------------------- cropping


class _Cropping(_Spatial):
    """Removes entries at the start and end of each spatial axis, leaving at least one."""

    def __init__(self, cropping, data_format=None, **kwargs):
        pairs = _side_pairs(cropping, self.rank, "cropping")
        super().__init__(data_format, **kwargs)
        self.cropping = pairs[0] if self.rank == 1 else pairs  # Keras's 1-D cropping is one pair

    def _pairs(self):
        return (self.cropping,) if self.rank == 1 else self.cropping

    def compute_output_shape(self, input_shape):
        self.input_spec.check(self.name, input_shape)
        out = list(input_shape)
        for axis, (before, after) in zip(self._spatial_axes(), self._pairs()):
            if out[axis] is None:
                continue
            if before + after >= out[axis]:
                raise ValueError(self._too_much_message(input_shape))
            out[axis] -= before + after
        return tuple(out)

    def _too_much_message(self, input_shape):
        if self.rank == 1:
            need = f"`cropping` parameter of `{type(self).__name__}` layer must be smaller than the input length."
        else:
            need = (
                "Values in `cropping` argument should be smaller than the corresponding spatial dimension of "
                "the input."
            )
        return f"{need} Received: input_shape={tuple(input_shape)}, cropping={self.cropping}"

    def call(self, inputs):
        key = [slice(None)] * inputs.ndim
        for axis, (before, after) in zip(self._spatial_axes(), self._pairs()):
            key[axis] = slice(before, inputs.shape[axis] - after)
        return inputs[tuple(key)]

    def get_config(self):
        return {**super().get_config(), "cropping": self.cropping, **self._format_config()}


class Cropping1D(_Cropping):
    """Removes steps at the start and end of sequences ``(batch, steps, features)``.

    Keras's Cropping1D has no ``data_format``: the steps are axis 1.

    Args:
        cropping: An int (both ends) or a pair ``(before, after)``; ints >= 0,
            leaving at least one step.

    Example:
        >>> Cropping1D(1)(np.zeros((2, 3, 2))).shape
        (2, 1, 2)
    """

    rank = 1
    has_data_format = False

    def __init__(self, cropping=(1, 1), **kwargs):
        super().__init__(cropping, None, **kwargs)  # a data_format keyword is refused (a TypeError), as Keras


class Cropping2D(_Cropping):
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

    rank = 2

    def __init__(self, cropping=((0, 0), (0, 0)), data_format=None, **kwargs):
        super().__init__(cropping, data_format, **kwargs)


class Cropping3D(_Cropping):
    """Removes entries at the edges of volumes (depth, height and width).

    Args:
        cropping: An int (every side), 3 ints (symmetric per axis), or 3 pairs
            ``((before, after), ...)``; ints >= 0, leaving at least one entry
            per axis.
        data_format: ``'channels_last'`` or ``'channels_first'``; default
            ``gpulayers.config.image_data_format()``.

    Example:
        >>> Cropping3D((2, 4, 2))(np.zeros((2, 28, 28, 10, 3))).shape
        (2, 24, 20, 6, 3)
    """

    rank = 3

    def __init__(self, cropping=((1, 1), (1, 1), (1, 1)), data_format=None, **kwargs):
        super().__init__(cropping, data_format, **kwargs)


# ---------------------------------------------------------------- upsampling

def _triangle(t):
    return np.maximum(0.0, 1.0 - t)


def _keys_cubic(t):  # Keys's cubic convolution kernel with a = -0.5 (JAX's "cubic")
    near = ((1.5 * t - 2.5) * t) * t + 1.0
    far = ((-0.5 * t + 2.5) * t - 4.0) * t + 2.0
    return np.where(t >= 2.0, 0.0, np.where(t >= 1.0, far, near))


def _lanczos(radius):
    def kernel(t):
        y = radius * np.sin(np.pi * t) * np.sin(np.pi * t / radius)
        out = np.where(t > 1e-3, y / np.where(t != 0, np.pi**2 * t**2, 1.0), 1.0)
        return np.where(t > radius, 0.0, out)

    return kernel


# What Keras's UpSampling2D passes to ops.image.resize, with the kernels of Keras's JAX backend
# (jax.image.resize, antialias off; Keras's torch backend has another cubic and no lanczos).
_KERNELS = {"bilinear": _triangle, "bicubic": _keys_cubic, "lanczos3": _lanczos(3.0), "lanczos5": _lanczos(5.0)}
_INTERPOLATIONS = ("nearest",) + tuple(_KERNELS)


def _resize_weights(n, factor, kernel, dtype):
    """The (n, n * factor) matrix of Keras's (JAX's) resize along one axis with ``kernel``, antialias off.

    Output ``o`` samples the input at ``(o + 0.5) / factor - 0.5`` (half-pixel
    centres), input ``j`` weighing ``kernel(|t - j|)``; the weights of each
    output are normalized to sum to 1 (so near the edges the taps outside the
    input are dropped). Computed in float64, then cast to ``dtype``.
    """
    out = n * factor
    centres = (np.arange(out, dtype=np.float64) + 0.5) / factor - 0.5
    w = kernel(np.abs(centres[None, :] - np.arange(n, dtype=np.float64)[:, None]))
    total = w.sum(axis=0, keepdims=True)
    w = np.where(np.abs(total) > 1000.0 * np.finfo(np.float32).eps, w / np.where(total != 0, total, 1), 0.0)
    inside = (centres >= -0.5) & (centres <= n - 0.5)
    return np.where(inside[None, :], w, 0.0).astype(dtype)


class _UpSampling(_Spatial):
    """Repeats each entry of the spatial axes by integer factors (``_factors()``, one per axis)."""

    input_cast = "all"  # numeric inputs are computed in the layer's dtype
    interpolation = "nearest"  # only UpSampling2D offers others

    def _factors(self):
        return (self.size,) if self.rank == 1 else self.size

    def compute_output_shape(self, input_shape):
        self.input_spec.check(self.name, input_shape)
        out = list(input_shape)
        for axis, factor in zip(self._spatial_axes(), self._factors()):
            out[axis] = None if input_shape[axis] is None else input_shape[axis] * factor
        return tuple(out)

    def call(self, inputs):
        if self.interpolation == "nearest":
            return self._record(f"upsampling{self.rank}d_nearest", self._nearest, inputs)
        return self._record(f"upsampling{self.rank}d_{self.interpolation}", self._resize, inputs)

    def _nearest(self, x):
        axes, factors = self._spatial_axes(), self._factors()
        # A unit axis after each spatial one, broadcast to its factor, then merged with it.
        view, spread = [], []
        for axis, n in enumerate(x.shape):
            view.append(n)
            spread.append(n)
            if axis in axes:
                view.append(1)
                spread.append(factors[axes.index(axis)])
        a = xp()
        y = a.ascontiguousarray(a.broadcast_to(x.reshape(view), tuple(spread)))
        y = y.reshape(self.compute_output_shape(x.shape))
        inserted = tuple(axis + i + 1 for i, axis in enumerate(axes))

        def backward(g, needs):
            return (g.reshape(spread).sum(axis=inserted),)

        return y, backward

    def _resize(self, x):
        a = xp()
        kernel = _KERNELS[self.interpolation]
        steps = [
            (axis, a.asarray(_resize_weights(x.shape[axis], factor, kernel, x.dtype)))
            for axis, factor in zip(self._spatial_axes(), self._factors())
            if factor != 1  # Keras resizes only the axes whose size changes
        ]
        y = x
        for axis, w in steps:
            y = a.moveaxis(a.tensordot(y, w, axes=(axis, 0)), -1, axis)

        def backward(g, needs):
            for axis, w in reversed(steps):
                g = a.moveaxis(a.tensordot(g, w, axes=(axis, 1)), -1, axis)
            return (a.ascontiguousarray(g),)

        return a.ascontiguousarray(y), backward

    def get_config(self):
        return {**super().get_config(), "size": self.size, **self._format_config()}


class UpSampling1D(_UpSampling):
    """Repeats each step of sequences ``(batch, steps, features)`` ``size`` times.

    Keras's UpSampling1D has no ``data_format``: the steps are axis 1.

    Args:
        size: Positive int, the upsampling factor (default 2).

    Example:
        >>> UpSampling1D(3)(np.zeros((2, 2, 3))).shape
        (2, 6, 3)
    """

    rank = 1
    has_data_format = False

    def __init__(self, size=2, **kwargs):
        if not _is_int(size):
            raise TypeError(f"Expected an integer value for `size`, got {type(size)}. Received: size={size!r}")
        if size <= 0:
            raise ValueError(f"Argument `size` should be a positive integer. Received: size={size!r}")
        super().__init__(None, **kwargs)  # a data_format keyword is refused (a TypeError), as Keras
        self.size = int(size)


class UpSampling2D(_UpSampling):
    """Upsamples images by integer factors along rows and columns.

    Args:
        size: Int or tuple of 2 ints, the factors for rows and columns (default 2).
        data_format: ``'channels_last'`` or ``'channels_first'``; default
            ``gpulayers.config.image_data_format()``.
        interpolation: ``'nearest'`` (each pixel repeated), or ``'bilinear'``,
            ``'bicubic'``, ``'lanczos3'``, ``'lanczos5'``: Keras's
            ``ops.image.resize`` as its JAX backend computes it (half-pixel
            centres, the kernel's weights renormalized where its taps leave the
            image, no antialiasing).

    Example:
        >>> UpSampling2D(size=(1, 2))(np.zeros((2, 2, 1, 3))).shape
        (2, 2, 2, 3)
    """

    rank = 2

    def __init__(self, size=(2, 2), data_format=None, interpolation="nearest", **kwargs):
        size = standardize_tuple(size, 2, "size")
        text = interpolation.lower() if isinstance(interpolation, str) else interpolation
        if text not in _INTERPOLATIONS:
            raise ValueError(
                f"Invalid value for `interpolation`: expected one of {_INTERPOLATIONS}. "
                f"Received: interpolation={interpolation!r}"
            )
        super().__init__(data_format, **kwargs)
        self.size = size
        self.interpolation = text

    def get_config(self):
        return {**super().get_config(), "interpolation": self.interpolation}


class UpSampling3D(_UpSampling):
    """Upsamples volumes by integer factors along depth, height and width (nearest: each entry repeated;
    Keras's UpSampling3D has no other interpolation).

    Args:
        size: Int or tuple of 3 ints, the factors per spatial axis (default 2).
        data_format: ``'channels_last'`` or ``'channels_first'``; default
            ``gpulayers.config.image_data_format()``.

    Example:
        >>> UpSampling3D((2, 2, 2))(np.zeros((2, 1, 2, 1, 3))).shape
        (2, 2, 4, 2, 3)
    """

    rank = 3

    def __init__(self, size=(2, 2, 2), data_format=None, **kwargs):
        size = standardize_tuple(size, 3, "size")
        super().__init__(data_format, **kwargs)
        self.size = size
