"""Deterministic preprocessing layers: Rescaling, Normalization, Resizing, CenterCrop (Keras 3's classes).

They compute with ``gpulayers.ops`` on the tape, so gradients flow to their
inputs as in Keras (all four are differentiable). Resizing follows Keras's JAX
backend (``jax.image.resize`` without antialiasing): bilinear samples at
half-pixel centres with edges clamped, nearest takes ``floor((i + 0.5) * in / out)``
computed in float32.
"""

import itertools
import math
import numbers

import numpy as np

from gpulayers import config, ops
from gpulayers.argument_validation import standardize_data_format
from gpulayers.autodiff import Tensor
from gpulayers.layers.base import Layer
from gpulayers.ops.core import xp

__all__ = ["CenterCrop", "Normalization", "Rescaling", "Resizing"]

_INTERPOLATIONS = ("bilinear", "nearest")


def check_size(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"Invalid value for `{name}`: expected a positive int. Received: {name}={value!r}")
    return int(value)


def check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"Invalid type for `{name}`: expected a bool. Received: {name}={value!r}")
    return bool(value)


def check_real(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Invalid type for `{name}`: expected a number. Received: {name}={value!r}")
    return value


def image_axes(ndim, data_format):
    """The (height, width) axes of a rank-3 or rank-4 image tensor."""
    if ndim not in (3, 4):
        raise ValueError(
            "Expected image tensor to have rank 3 (single image) or rank 4 (batch of images). "
            f"Received: rank {ndim}"
        )
    return (ndim - 2, ndim - 1) if data_format == "channels_first" else (ndim - 3, ndim - 2)


def _work_dtype(dtype):
    # Keras (JAX, x64 off) builds its sampling weights in float32; float64 layers keep float64.
    return "float64" if np.dtype(dtype) == np.float64 else "float32"


def _bilinear_matrix(n_in, n_out, dtype):
    """The (n_out, n_in) weights of jax.image.resize's triangle kernel: half-pixel centres, renormalized
    over the pixels inside the image (which clamps the edges)."""
    x = xp()
    inv_scale = x.asarray(n_in, dtype=dtype) / x.asarray(n_out, dtype=dtype)
    centres = (x.arange(n_out, dtype=dtype) + 0.5) * inv_scale - 0.5
    w = x.maximum(0, 1 - x.abs(x.arange(n_in, dtype=dtype)[None, :] - centres[:, None]))
    total = w.sum(axis=1, keepdims=True)
    return x.where(total > 1000 * np.finfo(dtype).eps, w / x.where(total == 0, 1, total), 0).astype(dtype)


def _nearest_indices(n_in, n_out):
    x = xp()
    centres = (x.arange(n_out, dtype="float32") + 0.5) * np.float32(n_in) / np.float32(n_out)
    return x.minimum(x.floor(centres).astype("int32"), n_in - 1)


def _resize_axis(images, axis, n_out, interpolation):
    n_in = images.shape[axis]
    if n_in == n_out:
        return images
    if interpolation == "nearest":
        return ops.take(images, Tensor(_nearest_indices(n_in, n_out)), axis=axis)
    weights = Tensor(_bilinear_matrix(n_in, n_out, _work_dtype(images.dtype)).astype(images.data.dtype))
    return ops.moveaxis(ops.tensordot(weights, images, axes=[[1], [axis]]), 0, axis)


def resize_images(images, height, width, interpolation="bilinear", data_format="channels_last",
                  crop_to_aspect_ratio=False, pad_to_aspect_ratio=False, fill_value=0.0):
    """``keras.ops.image.resize`` (JAX backend, no antialias) on a float Tensor of rank 3 or 4."""
    h_axis, w_axis = image_axes(images.ndim, data_format)
    in_h, in_w = images.shape[h_axis], images.shape[w_axis]
    if crop_to_aspect_ratio:
        crop_h = max(min(in_h, int(float(in_w * height) / width)), 1)
        crop_w = max(min(in_w, int(float(in_h * width) / height)), 1)
        top, left = int(float(in_h - crop_h) / 2), int(float(in_w - crop_w) / 2)
        images = crop(images, h_axis, w_axis, top, left, crop_h, crop_w)
    elif pad_to_aspect_ratio:
        # Keras pads the same amount on both sides of one axis (the height first).
        pad_h = int(float(max(in_h, int(float(in_w * height) / width)) - in_h) / 2)
        pad_w = int(float(max(in_w, int(float(in_h * width) / height)) - in_w) / 2)
        widths = [[0, 0] for _ in range(images.ndim)]
        if pad_h > 0:
            widths[h_axis] = [pad_h, pad_h]
        elif pad_w > 0:
            widths[w_axis] = [pad_w, pad_w]
        if pad_h > 0 or pad_w > 0:
            images = ops.pad(images, widths, constant_values=fill_value)
    images = _resize_axis(images, h_axis, height, interpolation)
    return _resize_axis(images, w_axis, width, interpolation)


def crop(images, h_axis, w_axis, top, left, height, width):
    key = [slice(None)] * images.ndim
    key[h_axis], key[w_axis] = slice(top, top + height), slice(left, left + width)
    return ops.get_item(images, tuple(key))


def cast_back(resized, dtype):
    """A float result back to an integer input's dtype: rounded and saturated, as Keras's Resizing."""
    if resized.data.dtype == dtype:
        return resized
    info = np.iinfo(dtype)
    return ops.cast(ops.clip(ops.round(resized), info.min, info.max), dtype)


class Rescaling(Layer):
    """Computes ``inputs * scale + offset`` (inputs cast to the layer's dtype), in training and inference.

    Args:
        scale: Float, or a per-channel list/array (broadcast on the last axis;
            on channels_first images it is reshaped to ``(C, 1, 1)``).
        offset: Float (or per-channel like ``scale``).

    Input and output shape: any, the same.

    Example:
        >>> Rescaling(1 / 127.5, offset=-1)(np.array([0, 255]))  # [-1, 1]
    """

    built_at_construction = True
    single_input = True
    input_cast = "all"

    def __init__(self, scale, offset=0.0, **kwargs):
        for name, value in (("scale", scale), ("offset", offset)):
            if isinstance(value, (str, bool, dict)) or value is None:
                raise TypeError(f"Invalid type for `{name}`: expected a number or an array of numbers. "
                                f"Received: {name}={value!r}")
        super().__init__(**kwargs)
        self.scale, self.offset = scale, offset

    def _constant(self, value):
        const = ops.convert_to_tensor(np.asarray(value, dtype=self.compute_dtype))
        if const.ndim > 0 and config.image_data_format() == "channels_first":
            const = ops.reshape(const, tuple(const.shape) + (1,) * (3 - const.ndim))
        return const

    def call(self, inputs):
        return ops.add(ops.multiply(inputs, self._constant(self.scale)), self._constant(self.offset))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        def plain(v):
            return v.tolist() if hasattr(v, "tolist") else v

        return {**super().get_config(), "scale": plain(self.scale), "offset": plain(self.offset)}


def _first_batch(batch):
    return batch[0] if isinstance(batch, tuple) else batch


class Normalization(Layer):
    """Feature-wise standardization ``(x - mean) / max(sqrt(variance), epsilon)`` (or its inverse).

    The mean and variance are given, or learned by :meth:`adapt`. Learned ones
    are the layer's non-trainable weights ``mean``, ``variance`` and ``count``
    (int32, kept at 0 as Keras keeps it), in Keras's order and shapes; given
    ones are constants (no weights), as in Keras.

    Args:
        axis: Int, tuple of ints, or None: the axes that keep a separate
            mean and variance per index (None: one scalar). Default -1.
        mean, variance: Values broadcast to the kept axes; both or neither.
        invert: If True, computes ``mean + x * max(sqrt(variance), epsilon)``.

    Input and output shape: any, the same.

    Example:
        >>> layer = Normalization(axis=None)
        >>> layer.adapt(np.array([1., 2., 3., 4., 5.]))
        >>> layer(np.array([1., 2., 3.]))  # [-1.414, -0.707, 0.]
    """

    single_input = True
    input_cast = "all"

    def __init__(self, axis=-1, mean=None, variance=None, invert=False, **kwargs):
        if axis is None:
            axis = ()
        elif isinstance(axis, numbers.Integral) and not isinstance(axis, bool):
            axis = (int(axis),)
        elif isinstance(axis, (tuple, list)) and all(isinstance(a, numbers.Integral) and not isinstance(a, bool)
                                                     for a in axis):
            axis = tuple(int(a) for a in axis)
        else:
            raise TypeError(f"Invalid type for `axis`: expected an int, a tuple of ints or None. Received: axis={axis!r}")
        if (mean is None) != (variance is None):
            raise ValueError("When setting values directly, both `mean` and `variance` must be set. "
                             f"Received: mean={mean} and variance={variance}")
        if mean is not None:
            if np.shape(mean) != np.shape(variance):
                raise ValueError("When setting values directly, `mean` and `variance` must have the same shape. "
                                 f"Received: mean shape {np.shape(mean)} and variance shape {np.shape(variance)}")
            if len(np.shape(mean)) > len(axis):
                raise ValueError(f"The rank of `mean` must be less than or equal to the number of axes "
                                 f"({len(axis)}). Received: mean shape {np.shape(mean)} for axis {axis}")
        invert = check_bool(invert, "invert")
        super().__init__(**kwargs)
        self.axis, self.input_mean, self.input_variance, self.invert = axis, mean, variance, invert

    def build(self, input_shape):
        ndim = len(input_shape)
        if any(a < -ndim or a >= ndim for a in self.axis):
            raise ValueError("All `axis` values must be in the range [-ndim, ndim). "
                             f"Received inputs with ndim={ndim}, while axis={self.axis}")
        keep = tuple(sorted(a % ndim for a in self.axis))
        for d in keep:
            if input_shape[d] is None:
                raise ValueError(f"All `axis` values to be kept must have a known shape. Received axis={self.axis}, "
                                 f"inputs.shape={tuple(input_shape)}, with unknown axis at index {d}")
        self._build_input_shape = tuple(input_shape)
        self._keep_axis = keep
        self._reduce_axis = tuple(d for d in range(ndim) if d not in keep)
        self._broadcast_shape = tuple(input_shape[d] if d in keep else 1 for d in range(ndim))
        self._mean_and_var_shape = tuple(input_shape[d] for d in keep)
        if self.input_mean is None:
            self.adapt_mean = self.add_weight(name="mean", shape=self._mean_and_var_shape, initializer="zeros",
                                              trainable=False)
            self.adapt_variance = self.add_weight(name="variance", shape=self._mean_and_var_shape,
                                                  initializer="ones", trainable=False)
            self.count = self.add_weight(name="count", shape=(), dtype="int32", initializer="zeros", trainable=False)
            return
        # Given values: trailing axes of `mean` line up with the last kept axes (Keras's rule).
        mean, variance = np.asarray(self.input_mean, "float64"), np.asarray(self.input_variance, "float64")
        expanded = [1] * ndim
        for i in range(1, mean.ndim + 1):
            expanded[keep[-i]] = mean.shape[-i]
        try:
            self._fixed = tuple(np.broadcast_to(v.reshape(expanded), self._broadcast_shape) for v in (mean, variance))
        except ValueError:
            raise ValueError(f"Invalid `mean`/`variance` of shape {mean.shape} for the kept axes "
                             f"{self._mean_and_var_shape} of layer '{self.name}'") from None

    def adapt(self, data):
        """Learn the mean and variance of ``data``: an array or Tensor, or an iterable of batches (each an
        array, or an ``(x, y[, sample_weight])`` tuple) combined as Keras combines them."""
        if isinstance(data, Tensor) or (hasattr(data, "shape") and hasattr(data, "dtype")):
            batches, shape = None, tuple(data.shape)
        elif hasattr(data, "__iter__") and not isinstance(data, (str, bytes, dict)):
            it = iter(data)
            first = next(it, None)
            if first is None:
                raise ValueError("adapt() received an empty iterable (no batches). Expected at least one batch.")
            first = _first_batch(first)
            if not hasattr(first, "shape"):
                raise TypeError("adapt() expects an iterable that yields arrays or tensors with a `.shape` "
                                f"attribute. Got an element of type {type(first).__name__}.")
            batches, shape = itertools.chain([first], it), tuple(first.shape)
        else:
            raise TypeError(f"Unsupported data type: {type(data)}. `adapt` supports arrays, tensors and "
                            "iterables of batches.")
        if self.input_mean is not None:
            raise ValueError(f"Layer '{self.name}' was given `mean` and `variance`: it has nothing to adapt.")
        if not self.built:
            self._build_undoably(shape)
        self._check_kept(shape)
        if batches is None:
            x = ops.convert_to_tensor(data)
            x = x if x.data.dtype.kind == "f" else ops.cast(x, "float64")
            mean, var = ops.mean(x, axis=self._reduce_axis), ops.var(x, axis=self._reduce_axis)
        else:
            mean = var = ops.zeros(self._mean_and_var_shape, dtype="float32")
            total = 0
            for batch in batches:
                batch = ops.convert_to_tensor(_first_batch(batch), dtype=self.compute_dtype)
                self._check_kept(tuple(batch.shape))
                b_mean, b_var = ops.mean(batch, axis=self._reduce_axis), ops.var(batch, axis=self._reduce_axis)
                count = math.prod(batch.shape[d] for d in self._reduce_axis)
                total += count
                w_new = float(count) / total
                w_old = 1.0 - w_new
                new_mean = mean * w_old + b_mean * w_new
                var = (var + (mean - new_mean) ** 2) * w_old + (b_var + (b_mean - new_mean) ** 2) * w_new
                mean = new_mean
        self.adapt_mean.assign(ops.cast(mean, self.adapt_mean.dtype))
        self.adapt_variance.assign(ops.cast(var, self.adapt_variance.dtype))

    def _check_kept(self, shape):
        if len(shape) != len(self._build_input_shape) or any(
                shape[d] != self._build_input_shape[d] for d in self._keep_axis):
            raise ValueError(f"The layer was built with input_shape={self._build_input_shape}, but adapt() is "
                             f"being called with data with an incompatible shape, data.shape={shape}")

    def call(self, inputs):
        if self.input_mean is None:
            mean = ops.reshape(self.adapt_mean, self._broadcast_shape)
            variance = ops.reshape(self.adapt_variance, self._broadcast_shape)
        else:
            mean, variance = (ops.convert_to_tensor(v.astype(self.compute_dtype)) for v in self._fixed)
        mean, variance = ops.cast(mean, inputs.dtype), ops.cast(variance, inputs.dtype)
        scale = ops.maximum(ops.sqrt(variance), config.epsilon())
        if self.invert:
            return ops.add(mean, ops.multiply(inputs, scale))
        return ops.divide(ops.subtract(inputs, mean), scale)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        def plain(v):
            return np.array(v).tolist()

        return {**super().get_config(), "axis": self.axis, "invert": self.invert,
                "mean": plain(self.input_mean), "variance": plain(self.input_variance)}


class Resizing(Layer):
    """Resizes images to ``(height, width)`` (``keras.layers.Resizing``), in training and inference.

    Args:
        height, width: Ints, the output size.
        interpolation: ``"bilinear"`` (default) or ``"nearest"``.
        crop_to_aspect_ratio: If True, first crop the largest centred window
            of the target aspect ratio.
        pad_to_aspect_ratio: If True, first pad the short side evenly with
            ``fill_value`` to the target aspect ratio.
        fill_mode: ``"constant"`` only (as Keras).
        fill_value: Float, the padding value.
        antialias: False only (antialiased downsampling is not implemented).
        data_format: ``"channels_last"`` or ``"channels_first"``.

    Input and output shape: ``(batch, H, W, C)`` or ``(H, W, C)`` (channels
    last) to the same with ``height, width``. Integer images come back
    rounded and saturated in their dtype, as Keras's.
    """

    built_at_construction = True
    single_input = True

    def __init__(self, height, width, interpolation="bilinear", crop_to_aspect_ratio=False,
                 pad_to_aspect_ratio=False, fill_mode="constant", fill_value=0.0, antialias=False,
                 data_format=None, **kwargs):
        height, width = check_size(height, "height"), check_size(width, "width")
        if interpolation not in _INTERPOLATIONS:
            raise ValueError(f"Invalid value for argument `interpolation`. Expected one of {_INTERPOLATIONS}. "
                             f"Received: interpolation={interpolation!r}")
        crop_to_aspect_ratio = check_bool(crop_to_aspect_ratio, "crop_to_aspect_ratio")
        pad_to_aspect_ratio = check_bool(pad_to_aspect_ratio, "pad_to_aspect_ratio")
        if crop_to_aspect_ratio and pad_to_aspect_ratio:
            raise ValueError("Only one of `pad_to_aspect_ratio` & `crop_to_aspect_ratio` can be `True`. Received: "
                             "crop_to_aspect_ratio=True, pad_to_aspect_ratio=True")
        if fill_mode != "constant":
            raise ValueError(f"Invalid value for argument `fill_mode`. Only `'constant'` is supported. "
                             f"Received: fill_mode={fill_mode!r}")
        check_real(fill_value, "fill_value")
        if check_bool(antialias, "antialias"):
            raise ValueError("Resizing(antialias=True) is not supported by gpulayers. Received: antialias=True")
        data_format = standardize_data_format(data_format)
        super().__init__(**kwargs)
        self.height, self.width, self.interpolation = height, width, interpolation
        self.crop_to_aspect_ratio, self.pad_to_aspect_ratio = crop_to_aspect_ratio, pad_to_aspect_ratio
        self.fill_mode, self.fill_value, self.antialias = fill_mode, fill_value, False
        self.data_format = data_format

    def call(self, inputs):
        dtype = inputs.data.dtype
        x = inputs if dtype.kind == "f" else ops.cast(inputs, self.compute_dtype)
        y = resize_images(x, self.height, self.width, self.interpolation, self.data_format,
                          self.crop_to_aspect_ratio, self.pad_to_aspect_ratio, self.fill_value)
        return y if dtype.kind == "f" else cast_back(y, dtype)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        h_axis, w_axis = image_axes(len(shape), self.data_format)
        shape[h_axis], shape[w_axis] = self.height, self.width
        return tuple(shape)

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width,
                "interpolation": self.interpolation, "crop_to_aspect_ratio": self.crop_to_aspect_ratio,
                "pad_to_aspect_ratio": self.pad_to_aspect_ratio, "fill_mode": self.fill_mode,
                "fill_value": self.fill_value, "antialias": self.antialias, "data_format": self.data_format}


class CenterCrop(Layer):
    """Crops the central ``(height, width)`` window of images, in training and inference; an image
    smaller than that on either side is cropped to the target aspect ratio and resized (bilinear), as Keras.

    Args:
        height, width: Ints, the output size.
        data_format: ``"channels_last"`` or ``"channels_first"``.

    Input and output shape: rank 3 or 4 images, with ``height, width``.
    """

    built_at_construction = True
    single_input = True
    input_cast = "all"

    def __init__(self, height, width, data_format=None, **kwargs):
        height, width = check_size(height, "height"), check_size(width, "width")
        data_format = standardize_data_format(data_format)
        super().__init__(**kwargs)
        self.height, self.width, self.data_format = height, width, data_format

    def call(self, inputs):
        h_axis, w_axis = image_axes(inputs.ndim, self.data_format)
        h_diff, w_diff = inputs.shape[h_axis] - self.height, inputs.shape[w_axis] - self.width
        if h_diff >= 0 and w_diff >= 0:
            return crop(inputs, h_axis, w_axis, h_diff // 2, w_diff // 2, self.height, self.width)
        return resize_images(inputs, self.height, self.width, "bilinear", self.data_format, crop_to_aspect_ratio=True)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        h_axis, w_axis = image_axes(len(shape), self.data_format)
        shape[h_axis], shape[w_axis] = self.height, self.width
        return tuple(shape)

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width, "data_format": self.data_format}
