"""Reshaping layers, as Keras 3's: Flatten, Reshape, Permute, RepeatVector.

They move entries without arithmetic and are differentiable on the tape;
none has weights. The spatial ones (ZeroPadding, Cropping, UpSampling for 1,
2 and 3 spatial axes) are in ``reshaping_spatial``.
"""

import math
import numbers

import numpy as np

from backends import get_ops
from gpulayers import autodiff, ops
from gpulayers.argument_validation import standardize_data_format
from gpulayers.layers.base import Layer
from gpulayers.layers.input_spec import InputSpec

__all__ = ["Flatten", "Permute", "RepeatVector", "Reshape"]


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
