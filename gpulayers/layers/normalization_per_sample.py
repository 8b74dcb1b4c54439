"""Normalization within each sample: LayerNormalization, GroupNormalization, RMSNormalization and
UnitNormalization (``keras.layers``), the statistics taken over a sample's own features, never
across the batch, so training and inference compute the same thing."""

import numbers
import warnings

import numpy as np

from gpulayers import constraints, initializers, ops, regularizers
from gpulayers.argument_validation import check_real, standardize_bool
from gpulayers.layers.base import Layer
from gpulayers.layers.input_spec import InputSpec
from gpulayers.ops.nn import _normalize_over
from gpulayers.symbolic import KerasTensor
from gpulayers.tree import map_structure

__all__ = ["GroupNormalization", "LayerNormalization", "RMSNormalization", "UnitNormalization"]


def _is_int(value):
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def _axis_argument(axis, message):
    """Keras's ``axis``: an int stays an int, a list or tuple of ints becomes a list; TypeError otherwise."""
    if _is_int(axis):
        return int(axis)
    if isinstance(axis, (list, tuple)) and all(_is_int(a) for a in axis):
        if not axis or len(set(axis)) != len(axis):
            raise ValueError(f"Invalid value for `axis`: expected distinct axes, at least one. Received: axis={axis!r}")
        return [int(a) for a in axis]
    raise TypeError(f"{message} Received: axis={axis!r}")


def _check_axes(layer, axis, input_shape):
    """The axes of ``axis`` (int or list) as non-negative ints in ascending order; ValueError when one
    is out of range for ``input_shape``."""
    ndim = len(input_shape)
    items = axis if isinstance(axis, list) else [axis]
    for a in items:
        if not -ndim <= a < ndim:
            raise ValueError(
                f"Invalid value for `axis` of layer '{layer.name}': axis {a} is out of bounds for input shape "
                f"{tuple(input_shape)}. Received: axis={axis!r}"
            )
    return sorted(a % ndim for a in items)


def _spanned_shape(layer, axes, input_shape):
    shape = tuple(input_shape[a] for a in axes)
    if None in shape:
        raise ValueError(
            f"The normalized axes {axes} of the input of layer '{layer.name}' must have known sizes. "
            f"Received: input_shape={tuple(input_shape)}"
        )
    return shape


def _affine_weights(layer, shape, scale, center):
    """gamma (if ``scale``) then beta (if ``center``), in float32 even in a mixed-precision layer, as Keras."""
    layer.gamma = layer.beta = None
    if scale:
        layer.gamma = layer.add_weight(
            shape=shape, initializer=layer.gamma_initializer, regularizer=layer.gamma_regularizer,
            constraint=layer.gamma_constraint, name="gamma", autocast=False,
        )
    if center:
        layer.beta = layer.add_weight(
            shape=shape, initializer=layer.beta_initializer, regularizer=layer.beta_regularizer,
            constraint=layer.beta_constraint, name="beta", autocast=False,
        )


class _AffineNormalization(Layer):
    """What LayerNormalization and GroupNormalization share: epsilon, center/scale with their
    initializers, regularizers and constraints, and Keras's ``autocast = False``: float inputs are not
    cast to the layer's dtype but normalized in float32 at least, and only the output is cast."""

    single_input = True

    def __init__(self, epsilon, center, scale, beta_initializer, gamma_initializer, beta_regularizer,
                 gamma_regularizer, beta_constraint, gamma_constraint, **kwargs):
        epsilon = check_real(epsilon, "epsilon", minimum=0)
        self.center = standardize_bool(center, "center")
        self.scale = standardize_bool(scale, "scale")
        self.beta_initializer = initializers.get(beta_initializer, argument="beta_initializer")
        self.gamma_initializer = initializers.get(gamma_initializer, argument="gamma_initializer")
        self.beta_regularizer = regularizers.get(beta_regularizer, argument="beta_regularizer")
        self.gamma_regularizer = regularizers.get(gamma_regularizer, argument="gamma_regularizer")
        self.beta_constraint = constraints.get(beta_constraint, argument="beta_constraint")
        self.gamma_constraint = constraints.get(gamma_constraint, argument="gamma_constraint")
        super().__init__(**kwargs)
        self.epsilon = epsilon
        self.autocast = False
        self.gamma = self.beta = None

    def _float_input(self, inputs):
        # Integer and bool inputs are computed in the layer's dtype, as gpulayers' other built-in layers.
        return inputs if inputs.dtype.kind == "f" else ops.cast(inputs, self.compute_dtype)

    def compute_output_spec(self, *args, **kwargs):
        # The output is always cast to the layer's dtype, whatever the (uncast) input's dtype.
        return map_structure(lambda t: KerasTensor(t.shape, self.compute_dtype),
                             super().compute_output_spec(*args, **kwargs))

    def _affine_config(self):
        return {
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": initializers.serialize(self.beta_initializer),
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
            "beta_regularizer": regularizers.serialize(self.beta_regularizer),
            "gamma_regularizer": regularizers.serialize(self.gamma_regularizer),
            "beta_constraint": constraints.serialize(self.beta_constraint),
            "gamma_constraint": constraints.serialize(self.gamma_constraint),
        }


class LayerNormalization(_AffineNormalization):
    """Normalizes each sample over ``axis``: ``(x - mean) / sqrt(var + epsilon) * gamma + beta``.

    The mean and the biased variance are those of one sample's values on the
    normalized axes; ``gamma`` and ``beta`` span those axes. Computed as
    Keras (``ops.layer_normalization``) in float32 at least; as in Keras,
    float inputs are not cast to the layer's dtype (a float32 input of a
    mixed_float16 layer is normalized in float32) and the output is.

    Args:
        axis: Int or list/tuple of ints, the axes to normalize over (default
            -1). After build the config holds the sorted list, as Keras's.
        epsilon: Number >= 0 added to the variance (default 1e-3).
        center: Whether to add the learned offset ``beta``.
        scale: Whether to multiply by the learned ``gamma``.
        rms_scaling: Keras's deprecated variant (it warns):
            ``x / sqrt(var + epsilon) * gamma``, without centering or ``beta``.
        beta_initializer, gamma_initializer: Initializers (zeros, ones).
        beta_regularizer, gamma_regularizer: Regularizers.
        beta_constraint, gamma_constraint: Constraints.

    Input and output shape: any, the same.
    Weights, in Keras's order: gamma (if scale or rms_scaling), beta (if
    center and not rms_scaling), of shape ``input_shape[axis]`` (the sizes
    of the axes, in ascending order, for several).

    Example:
        >>> LayerNormalization()(np.arange(4.0)[None]).numpy().round(3)
        array([[-1.341, -0.447,  0.447,  1.341]], dtype=float32)
    """

    def __init__(self, axis=-1, epsilon=1e-3, center=True, scale=True, beta_initializer="zeros",
                 gamma_initializer="ones", beta_regularizer=None, gamma_regularizer=None, beta_constraint=None,
                 gamma_constraint=None, rms_scaling=False, **kwargs):
        axis = _axis_argument(axis, "Expected an int or a list/tuple of ints for the argument 'axis'.")
        rms_scaling = standardize_bool(rms_scaling, "rms_scaling")
        super().__init__(epsilon, center, scale, beta_initializer, gamma_initializer, beta_regularizer,
                         gamma_regularizer, beta_constraint, gamma_constraint, **kwargs)
        if rms_scaling:
            warnings.warn(
                "You passed `rms_scaling=True`, which is deprecated (as in Keras): it scales the input by its "
                "variance, not by its root mean square. For RMS normalization use `RMSNormalization`.",
                stacklevel=2,
            )
        self.axis = axis
        self.rms_scaling = rms_scaling

    def compute_output_shape(self, input_shape):
        _check_axes(self, self.axis, input_shape)
        return tuple(input_shape)

    def build(self, input_shape):
        axes = _check_axes(self, self.axis, input_shape)
        shape = _spanned_shape(self, axes, input_shape)
        _affine_weights(self, shape, self.scale or self.rms_scaling, self.center and not self.rms_scaling)
        self.axis = sorted(self.axis) if isinstance(self.axis, list) else [self.axis]  # as Keras's config
        self.built = True

    def call(self, inputs):
        y = ops.layer_normalization(self._float_input(inputs), self.gamma, self.beta, self.axis, self.epsilon,
                                    rms_scaling=self.rms_scaling)
        return ops.cast(y, self.compute_dtype)

    def get_config(self):
        config = {"axis": self.axis, **self._affine_config(), "rms_scaling": self.rms_scaling}
        return {**super().get_config(), **config}


class GroupNormalization(_AffineNormalization):
    """Splits the channels on ``axis`` into ``groups`` and normalizes each sample's groups apart.

    Each group's mean and biased variance are taken over its channels and
    every other axis but the batch axis; ``gamma`` and ``beta`` are per
    channel. ``groups=1`` normalizes each sample as a whole, ``groups=-1``
    (one channel per group) is instance normalization. Numerics and dtypes
    as LayerNormalization's (Keras's: float32 at least, inputs not cast).

    Args:
        groups: Positive int dividing the number of channels, or -1 for as
            many groups as channels (the config then holds that number).
        axis: Int, the channel axis (default -1); not the batch axis 0.
        epsilon, center, scale, beta_initializer, gamma_initializer,
        beta_regularizer, gamma_regularizer, beta_constraint,
        gamma_constraint: As LayerNormalization's.

    Input and output shape: rank >= 2, the same.
    Weights: gamma (if scale), beta (if center), each ``(channels,)``.

    Example:
        >>> GroupNormalization(groups=2)(np.arange(8.0).reshape(1, 2, 4)).shape
        (1, 2, 4)
    """

    def __init__(self, groups=32, axis=-1, epsilon=1e-3, center=True, scale=True, beta_initializer="zeros",
                 gamma_initializer="ones", beta_regularizer=None, gamma_regularizer=None, beta_constraint=None,
                 gamma_constraint=None, **kwargs):
        if not _is_int(groups) or (groups <= 0 and groups != -1):
            raise ValueError(
                "Invalid value for argument `groups`: expected a positive int (or -1 for instance "
                f"normalization). Received: groups={groups!r}"
            )
        if not _is_int(axis):
            raise TypeError(f"Invalid type for `axis`: expected an int. Received: axis={axis!r}")
        super().__init__(epsilon, center, scale, beta_initializer, gamma_initializer, beta_regularizer,
                         gamma_regularizer, beta_constraint, gamma_constraint, **kwargs)
        self.groups = int(groups)
        self.axis = int(axis)

    def _channel_axis(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(
                f"Input of layer '{self.name}' must have rank >= 2 (batch, ..., channels). "
                f"Received: input_shape={tuple(input_shape)}"
            )
        axis = _check_axes(self, self.axis, input_shape)[0]
        if axis == 0:
            raise ValueError(
                f"Invalid value for `axis` of layer '{self.name}': axis 0 is the batch axis. Received: axis={self.axis}"
            )
        return axis

    def compute_output_shape(self, input_shape):
        self._channel_axis(input_shape)
        return tuple(input_shape)

    def build(self, input_shape):
        axis = self._channel_axis(input_shape)
        dim = input_shape[axis]
        if dim is None:
            raise ValueError(
                f"Axis {self.axis} of input tensor should have a defined dimension but the layer received an "
                f"input with shape {tuple(input_shape)}."
            )
        groups = dim if self.groups == -1 else self.groups
        if dim < groups:
            raise ValueError(
                f"Invalid value for `groups` of layer '{self.name}': the number of groups ({groups}) cannot be "
                f"more than the number of channels ({dim})."
            )
        if dim % groups:
            raise ValueError(
                f"Invalid value for `groups` of layer '{self.name}': the number of channels ({dim}) on axis "
                f"{self.axis} must be a multiple of the number of groups ({groups})."
            )
        _affine_weights(self, (dim,), self.scale, self.center)
        self.groups = groups
        self.input_spec = InputSpec(ndim=len(input_shape), axes={self.axis: dim})
        self.built = True

    def call(self, inputs):
        x = self._float_input(inputs)
        axis = self.axis % x.ndim
        per_group = x.shape[axis] // self.groups
        # (..., channels, ...) -> (..., groups, channels per group, ...): statistics per sample and group.
        grouped = ops.reshape(x, x.shape[:axis] + (self.groups, per_group) + x.shape[axis + 1:])
        reduce = tuple(a for a in range(1, grouped.ndim) if a != axis)
        along = [1] * grouped.ndim
        along[axis], along[axis + 1] = self.groups, per_group
        gamma = None if self.gamma is None else ops.reshape(self.gamma, along)
        beta = None if self.beta is None else ops.reshape(self.beta, along)
        y = _normalize_over(grouped, gamma, beta, reduce, self.epsilon, "center", "gamma", "beta")
        return ops.cast(ops.reshape(y, x.shape), self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "axis": self.axis, **self._affine_config()}


class RMSNormalization(Layer):
    """Root-mean-square normalization: ``x / sqrt(mean(x**2, axis) + epsilon) * scale``.

    No centering and no offset; ``scale`` (ones at first) spans the
    normalized axes. Computed as ``ops.rms_normalization``, in float32 at
    least. Unlike Keras 3.15 (which broadcasts ``scale`` against the last
    axes whatever ``axis`` is), ``scale`` lies along the normalized axes.

    Args:
        axis: Int or list/tuple of ints (default -1); the sorted list after
            build, as Keras's config.
        epsilon: Number >= 0 added to the mean square (default 1e-6).

    Input and output shape: any, the same.
    Weights: scale, of shape ``input_shape[axis]``.

    Example:
        >>> RMSNormalization()(np.array([[3.0, 4.0]])).numpy().round(3)
        array([[0.849, 1.131]], dtype=float32)
    """

    single_input = True
    input_cast = "all"

    def __init__(self, axis=-1, epsilon=1e-6, **kwargs):
        axis = _axis_argument(axis, "Invalid type for `axis`: expected an int or a list/tuple of ints.")
        epsilon = check_real(epsilon, "epsilon", minimum=0)
        super().__init__(**kwargs)
        self.axis = axis
        self.epsilon = epsilon
        self.scale = None

    def compute_output_shape(self, input_shape):
        _check_axes(self, self.axis, input_shape)
        return tuple(input_shape)

    def build(self, input_shape):
        axes = _check_axes(self, self.axis, input_shape)
        self.scale = self.add_weight(shape=_spanned_shape(self, axes, input_shape), initializer="ones", name="scale")
        self.axis = sorted(self.axis) if isinstance(self.axis, list) else [self.axis]
        self.built = True

    def call(self, inputs):
        return ops.rms_normalization(inputs, scale=self.scale, axis=self.axis, epsilon=self.epsilon)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "epsilon": self.epsilon}


class UnitNormalization(Layer):
    """Scales each sample to unit L2 norm over ``axis``: ``x / max(||x||, 1e-12)`` (Keras's
    ``ops.normalize(x, axis, order=2, epsilon=1e-12)``) - an embedding for cosine similarity.

    Args:
        axis: Int or list/tuple of ints (default -1), the axes whose values
            form one vector.

    Input and output shape: any, the same. No weights.

    Example:
        >>> UnitNormalization()(np.array([[3.0, 4.0]])).numpy()
        array([[0.6, 0.8]], dtype=float32)
    """

    built_at_construction = True
    single_input = True
    input_cast = "all"

    def __init__(self, axis=-1, **kwargs):
        axis = _axis_argument(axis, "Invalid value for `axis` argument: expected an int or a list/tuple of ints.")
        super().__init__(**kwargs)
        self.axis = axis

    def compute_output_shape(self, input_shape):
        _check_axes(self, self.axis, input_shape)
        return tuple(input_shape)

    def call(self, inputs):
        return ops.normalize(inputs, axis=self.axis, order=2, epsilon=1e-12)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}
