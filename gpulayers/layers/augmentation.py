"""Image augmentation layers: RandomFlip, RandomCrop, RandomTranslation (Keras 3's classes).

Active only in training, as Keras's: ``training`` defaults to True when the
layer is called alone (Keras's signature), and ``fit`` / ``predict`` pass
True / False. Each layer keeps its own random stream (``self._rng``, seeded
from ``seed`` on first use, as :class:`~gpulayers.layers.regularization.Dropout`);
every draw goes through :meth:`_Augmentation._uniform`, which tests replace to
fix the draws. The geometry follows Keras's JAX backend: the affine warp is
``jax.scipy.ndimage.map_coordinates`` (order 0 or 1; fill modes reflect,
wrap, constant, nearest) at each output pixel's transformed coordinates.
"""

import itertools
import numbers

import numpy as np

from gpulayers import ops, utils
from gpulayers.argument_validation import standardize_data_format
from gpulayers.layers.base import Layer
from gpulayers.layers.preprocessing import check_real, check_size, crop, image_axes, resize_images
from gpulayers.layers.regularization import check_seed, layer_stream
from gpulayers.ops.core import xp

__all__ = ["RandomCrop", "RandomFlip", "RandomTranslation"]

_FILL_MODES = ("reflect", "wrap", "constant", "nearest")
_INTERPOLATIONS = ("nearest", "bilinear")


def check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(f"Invalid value for `{name}`: expected one of {choices}. Received: {name}={value!r}")
    return value


def check_factor(factor, name, low=-1.0, high=1.0):
    """Keras's ``(lower, upper)`` of a factor: a number f in [low, high] gives (-|f|, |f|); a pair is sorted."""
    message = (f"The `{name}` argument should be a number (or a list of two numbers) in the range "
               f"[{low}, {high}]. Received: {name}={factor!r}")

    def number(v):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not low <= v <= high:
            raise ValueError(message)
        return v

    if isinstance(factor, (tuple, list)):
        if len(factor) != 2:
            raise ValueError(message)
        return tuple(sorted((number(factor[0]), number(factor[1]))))
    factor = abs(number(factor))
    return -factor, factor


class _Augmentation(Layer):
    built_at_construction = True
    single_input = True
    input_cast = "all"  # Keras casts images to the layer's dtype

    def __init__(self, seed=None, data_format=None, **kwargs):
        seed = check_seed(seed)
        data_format = standardize_data_format(data_format)
        super().__init__(**kwargs)
        self.seed, self.data_format = seed, data_format
        self._rng = self._rng_ops = None  # made on first training call, per backend

    def _uniform(self, shape, low=0.0, high=1.0):
        """Uniform float32 draws in [low, high) from the layer's stream (a raw backend array)."""
        ops_, stream = layer_stream(self)
        u = ops_.uniform(stream, tuple(shape), "float32")
        return (u * np.float32(high - low) + np.float32(low)).astype("float32")

    def call(self, inputs, training=True):
        image_axes(inputs.ndim, self.data_format)
        if not training:
            return inputs
        return self._augment(inputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}


class RandomFlip(_Augmentation):
    """Flips each image with probability 1/2 in training: left-right, up-down, or (``"horizontal_and_vertical"``)
    both at once with one draw per image, as Keras; identity at inference.

    Args:
        mode: ``"horizontal"``, ``"vertical"`` or ``"horizontal_and_vertical"`` (default).
        seed: Int or None.
        data_format: ``"channels_last"`` or ``"channels_first"``.

    Input and output shape: rank 3 or 4 images, the same.
    """

    def __init__(self, mode="horizontal_and_vertical", seed=None, data_format=None, **kwargs):
        check_choice(mode, "mode", ("horizontal", "vertical", "horizontal_and_vertical"))
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        self.mode = mode

    def _augment(self, images):
        h_axis, w_axis = image_axes(images.ndim, self.data_format)
        batched = images.ndim == 4  # Keras's draw shapes: (batch, 1, 1, 1), or (1, 1, 1) for one image
        flips = ops.convert_to_tensor(self._uniform((images.shape[0], 1, 1, 1) if batched else (1, 1, 1)) <= 0.5)
        out = images
        if self.mode != "vertical":
            out = ops.where(flips, ops.flip(out, axis=w_axis), out)
        if self.mode != "horizontal":
            out = ops.where(flips, ops.flip(out, axis=h_axis), out)
        return out

    def get_config(self):
        return {**super().get_config(), "seed": self.seed, "mode": self.mode}


class RandomCrop(_Augmentation):
    """Crops a random ``(height, width)`` window in training (one window for the whole batch, as Keras);
    identity at inference (Keras 3.15's behaviour). An image not larger than the window on both sides is
    cropped around its centre to the target aspect ratio and resized (bilinear).

    Args:
        height, width: Ints, the crop size.
        seed: Int or None (Keras draws and keeps a default seed when None).
        data_format: ``"channels_last"`` or ``"channels_first"``.

    Input and output shape: rank 3 or 4 images, with ``height, width`` in training.
    """

    input_cast = "float"  # at inference an integer image comes back as it is, as Keras's

    def __init__(self, height, width, seed=None, data_format=None, name=None, **kwargs):
        height, width = check_size(height, "height"), check_size(width, "width")
        if seed is None:
            seed = int(utils.host_rng().integers(1, 10**9))  # Keras's make_default_seed range
        super().__init__(seed=seed, data_format=data_format, name=name, **kwargs)
        self.height, self.width = height, width

    def _augment(self, images):
        h_axis, w_axis = image_axes(images.ndim, self.data_format)
        in_h, in_w = images.shape[h_axis], images.shape[w_axis]
        if in_h > self.height and in_w > self.width:
            top = int(self._uniform((), 0.0, float(in_h - self.height + 1)))
            left = int(self._uniform((), 0.0, float(in_w - self.width + 1)))
        else:
            crop_h = max(min(in_h, int(float(in_w * self.height) / self.width)), 1)
            crop_w = max(min(in_w, int(float(in_h * self.width) / self.height)), 1)
            top, left = int(float(in_h - crop_h) / 2), int(float(in_w - crop_w) / 2)
        if images.data.dtype != np.dtype(self.compute_dtype):
            images = ops.cast(images, self.compute_dtype)
        out = crop(images, h_axis, w_axis, top, left, self.height, self.width)
        if out.shape[h_axis] != self.height or out.shape[w_axis] != self.width:
            out = resize_images(out, self.height, self.width, "bilinear", self.data_format)
        return out

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        h_axis, w_axis = image_axes(len(shape), self.data_format)
        shape[h_axis], shape[w_axis] = self.height, self.width
        return tuple(shape)

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width, "seed": self.seed}


# ---------------------------------------------------------------- the affine warp

def _round_away(c):
    x = xp()
    return x.where(c >= 0, x.floor(c + 0.5), x.ceil(c - 0.5))


def _fix_index(index, size, mode):
    x = xp()
    if mode == "nearest":
        return x.clip(index, 0, size - 1)
    if mode == "wrap":
        return index % size
    if mode == "reflect":  # jax's half-sample symmetric reflection: d c b a | a b c d | d c b a
        s = 2 * size
        return (x.abs((2 * index + 1 + s) % (2 * s) - s) - 1) // 2
    return index  # constant: out-of-range indices are masked


def _nodes(coord, size, order, mode):
    """``[(index, weight, valid)]`` along one axis: jax's nearest (round half away) or linear nodes."""
    x = xp()
    if order == "nearest":
        nodes = [(_round_away(coord).astype("int64"), None)]
    else:
        lower = x.floor(coord)
        upper_weight = coord - lower
        lower = lower.astype("int64")
        nodes = [(lower, 1 - upper_weight), (lower + 1, upper_weight)]
    out = []
    for index, weight in nodes:
        valid = (index >= 0) & (index < size) if mode == "constant" else None
        out.append((x.clip(_fix_index(index, size, mode), 0, size - 1), weight, valid))
    return out


def affine_transform(layer, images, transforms, interpolation, fill_mode, fill_value, data_format):
    """``keras.ops.image.affine_transform`` (JAX backend) of a rank-4 Tensor, with a hand-written backward.

    ``transforms`` is a raw ``(batch, 8)`` array ``[a0, a1, a2, b0, b1, b2, c0, c1]``: output pixel
    ``(y, x)`` samples the input at ``(b0*x + b1*y + b2, a0*x + a1*y + a2)`` (the projective terms are
    ignored, as Keras's JAX backend ignores them)."""
    def forward(arr):
        x = xp()
        nhwc = x.moveaxis(arr, 1, -1) if data_format == "channels_first" else arr
        n, h, w, c = nhwc.shape
        dtype = "float64" if arr.dtype == np.float64 else "float32"
        t = transforms.astype(dtype).reshape(n, 8, 1, 1)
        ys, xs = x.meshgrid(x.arange(h, dtype=dtype), x.arange(w, dtype=dtype), indexing="ij")
        y_in = t[:, 3] * xs + t[:, 4] * ys + t[:, 5]
        x_in = t[:, 0] * xs + t[:, 1] * ys + t[:, 2]
        base = x.arange(n).reshape(n, 1, 1) * (h * w)
        flat_in = nhwc.reshape(n * h * w, c)
        corners, out = [], x.zeros(nhwc.shape, dtype=arr.dtype)
        for (iy, wy, vy), (ix, wx, vx) in itertools.product(_nodes(y_in, h, interpolation, fill_mode),
                                                            _nodes(x_in, w, interpolation, fill_mode)):
            weight = x.ones((n, h, w), dtype) if wy is None else wy * wx
            flat = base + iy * w + ix
            value = flat_in[flat]
            grad_weight = weight
            if vy is not None:
                valid = vy & vx
                value = x.where(valid[..., None], value, arr.dtype.type(fill_value))
                grad_weight = weight * valid  # a corner outside the image reads fill_value: no gradient
            out += (weight[..., None] * value).astype(arr.dtype)
            corners.append((flat, grad_weight))

        def backward(dy, needs):
            g_nhwc = x.moveaxis(dy, 1, -1) if data_format == "channels_first" else dy
            channel = x.arange(c)
            grad = x.zeros(n * h * w * c, dtype="float64")
            for flat, weight in corners:
                idx = (flat[..., None] * c + channel).ravel()
                grad += x.bincount(idx, weights=(weight[..., None] * g_nhwc).ravel(), minlength=grad.size)
            grad = grad.astype(arr.dtype).reshape(n, h, w, c)
            return (x.ascontiguousarray(x.moveaxis(grad, -1, 1)) if data_format == "channels_first" else grad,)

        result = x.moveaxis(out, -1, 1) if data_format == "channels_first" else out
        return x.ascontiguousarray(result), backward

    return layer._record("affine_transform", forward, images)


class _AffineAugmentation(_Augmentation):
    """The layers that warp images by a per-image affine transform (Keras's fill and interpolation arguments)."""

    def __init__(self, fill_mode="reflect", interpolation="bilinear", seed=None, fill_value=0.0, data_format=None,
                 **kwargs):
        check_choice(fill_mode, "fill_mode", _FILL_MODES)
        check_choice(interpolation, "interpolation", _INTERPOLATIONS)
        check_real(fill_value, "fill_value")
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        self.fill_mode, self.interpolation, self.fill_value = fill_mode, interpolation, fill_value

    def _augment(self, images):
        batched = images.ndim == 4
        x = images if batched else ops.expand_dims(images, 0)
        h_axis, w_axis = image_axes(4, self.data_format)
        transforms = self._transforms(x.shape[0], x.shape[h_axis], x.shape[w_axis])
        y = affine_transform(self, x, transforms, self.interpolation, self.fill_mode, self.fill_value,
                             self.data_format)
        return y if batched else ops.squeeze(y, 0)

    def get_config(self):
        return {**super().get_config(), "fill_mode": self.fill_mode, "interpolation": self.interpolation,
                "seed": self.seed, "fill_value": self.fill_value}


class RandomTranslation(_AffineAugmentation):
    """Shifts each image by a random fraction of its height and width in training; identity at inference.

    Args:
        height_factor, width_factor: A float f in [-1, 1] (a shift drawn in
            ``[-|f|, |f|]`` times the size) or a pair ``(lower, upper)``.
            A positive shift moves the content down / right.
        fill_mode: ``"reflect"`` (default), ``"wrap"``, ``"constant"`` or ``"nearest"``.
        interpolation: ``"bilinear"`` (default) or ``"nearest"``.
        seed: Int or None.
        fill_value: Float, the value outside the image for ``"constant"``.
        data_format: ``"channels_last"`` or ``"channels_first"``.

    Input and output shape: rank 3 or 4 images, the same.
    """

    def __init__(self, height_factor, width_factor, fill_mode="reflect", interpolation="bilinear", seed=None,
                 fill_value=0.0, data_format=None, **kwargs):
        height_range = check_factor(height_factor, "height_factor")
        width_range = check_factor(width_factor, "width_factor")
        super().__init__(fill_mode, interpolation, seed, fill_value, data_format, **kwargs)
        self.height_factor, self.width_factor = height_factor, width_factor
        self.height_lower, self.height_upper = height_range
        self.width_lower, self.width_upper = width_range

    def _transforms(self, n, height, width):
        x = xp()
        dy = self._uniform((n, 1), self.height_lower, self.height_upper)[:, 0] * np.float32(height)
        dx = self._uniform((n, 1), self.width_lower, self.width_upper)[:, 0] * np.float32(width)
        one, zero = x.ones(n, "float32"), x.zeros(n, "float32")
        return x.stack([one, zero, -dx, zero, one, -dy, zero, zero], axis=1)

    def get_config(self):
        return {**super().get_config(), "height_factor": self.height_factor, "width_factor": self.width_factor}
