"""Merging layers (Keras 3's ``keras.layers`` Add, Subtract, Multiply, Average, Maximum, Minimum,
Concatenate, Dot) and their functional forms (``add``, ``concatenate``, ``dot``...).

A merge layer is called on a list (or tuple) of tensors. The elementwise
merges broadcast as Keras does: the sizes after the batch axis are aligned
from the right (a 1 stretches), the batch sizes must agree, and an input of
lower rank gets unit axes inserted after its batch axis before the
operation. They compute with :mod:`gpulayers.ops`, so the tape
differentiates them (a tensor given twice gets both gradients).

Example:
    >>> add([np.ones((2, 3)), np.ones((2, 3))]).shape
    (2, 3)
"""

import math
import numbers

from gpulayers import ops
from gpulayers.argument_validation import standardize_bool
from gpulayers.layers.base import Layer

__all__ = [
    "Add",
    "Average",
    "Concatenate",
    "Dot",
    "Maximum",
    "Minimum",
    "Multiply",
    "Subtract",
    "add",
    "average",
    "concatenate",
    "dot",
    "maximum",
    "minimum",
    "multiply",
    "subtract",
]


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_shape(value):
    return isinstance(value, (list, tuple)) and all(d is None or _is_int(d) for d in value)


def _shape_list(input_shape):
    """``input_shape`` as a list of shape tuples, or None when it is not a list of shapes."""
    if not isinstance(input_shape, (list, tuple)) or not input_shape:
        return None
    if not all(isinstance(s, (list, tuple)) and _is_shape(s) for s in input_shape):
        return None
    return [tuple(s) for s in input_shape]


def _merged_sizes(shape1, shape2):
    """Keras's elementwise output sizes of two shapes (batch axis excluded), aligned from the right."""
    if len(shape1) < len(shape2):
        shape1, shape2 = shape2, shape1
    if not shape2:
        return tuple(shape1)
    out = list(shape1[: len(shape1) - len(shape2)])
    for i, j in zip(shape1[len(shape1) - len(shape2):], shape2):
        if i is None or j is None:
            out.append(None)
        elif i == 1:
            out.append(j)
        elif j == 1 or i == j:
            out.append(i)
        else:
            raise ValueError(f"Inputs have incompatible shapes. Received shapes {tuple(shape1)} and {tuple(shape2)}")
    return tuple(out)


class Merge(Layer):
    """Base of the elementwise merge layers: checks the list of inputs, aligns ranks, merges pairwise.

    Subclasses define ``_merge_function(tensors)`` on inputs of equal rank.
    """

    single_input = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def _shapes(self, input_shape):
        shapes = _shape_list(input_shape)
        if shapes is None:
            if isinstance(input_shape, (list, tuple)) and not input_shape:
                raise ValueError(
                    "A merge layer should be called on a list of at least 1 input. Received 0 inputs. "
                    f"Full input_shape received: {list(input_shape)}"
                )
            raise ValueError(
                "A merge layer should be called on a list of inputs. "
                f"Received: input_shape={_describe(input_shape)} (not a list of shapes)"
            )
        return shapes

    def _check_count(self, shapes):
        """Subclasses that take a fixed number of inputs refuse other counts here."""

    def compute_output_shape(self, input_shape):
        shapes = self._shapes(input_shape)
        self._check_count(shapes)
        batch_sizes = {s[0] for s in shapes if s} - {None}
        if len(batch_sizes) > 1:
            raise ValueError(f"Cannot merge tensors with different batch sizes. Received tensors with shapes {shapes}")
        sizes = shapes[0][1:]
        for shape in shapes[1:]:
            sizes = _merged_sizes(sizes, shape[1:])
        batch = batch_sizes.pop() if batch_sizes else None
        return (batch,) + tuple(sizes)

    def build(self, input_shape):
        self.compute_output_shape(input_shape)  # validation only: a merge layer has no weights
        self.built = True

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)):
            raise ValueError(
                f"A merge layer should be called on a list of inputs. Received: inputs={_describe(inputs)} "
                "(not a list of tensors)"
            )
        tensors = [ops.convert_to_tensor(x) for x in inputs]
        self.compute_output_shape([tuple(t.shape) for t in tensors])  # the checks hold on every call
        rank = max(t.ndim for t in tensors)
        # Keras's rule for inputs of different ranks: unit axes after the batch axis.
        aligned = [t if t.ndim == rank else ops.reshape(t, t.shape[:1] + (1,) * (rank - t.ndim) + t.shape[1:])
                   for t in tensors]
        return self._merge_function(aligned)

    def _merge_function(self, inputs):
        raise NotImplementedError

    def get_config(self):
        return super().get_config()


def _describe(value):
    """A short description of what a layer was called on, for messages."""
    shape = getattr(value, "shape", None)
    if shape is not None and not isinstance(value, (list, tuple)):
        return f"<{type(value).__name__} shape={tuple(shape)}>"
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


class Add(Merge):
    """Adds a list of inputs elementwise (same shapes, or Keras-broadcastable ones).

    Example:
        >>> Add()([np.ones((2, 3)), np.full((2, 3), 2.0)])  # all 3.0
    """

    def _merge_function(self, inputs):
        out = inputs[0]
        for x in inputs[1:]:
            out = ops.add(out, x)
        return out


class Subtract(Merge):
    """``inputs[0] - inputs[1]``, for a list of exactly 2 inputs."""

    def _check_count(self, shapes):
        if len(shapes) != 2:
            raise ValueError(f"A `Subtract` layer should be called on exactly 2 inputs. Received: input_shape={shapes}")

    def _merge_function(self, inputs):
        return ops.subtract(inputs[0], inputs[1])


class Multiply(Merge):
    """Multiplies a list of inputs elementwise."""

    def _merge_function(self, inputs):
        out = inputs[0]
        for x in inputs[1:]:
            out = ops.multiply(out, x)
        return out


class Average(Merge):
    """The elementwise mean of a list of inputs (their sum, then divided by their count)."""

    def _merge_function(self, inputs):
        out = inputs[0]
        for x in inputs[1:]:
            out = ops.add(out, x)
        return ops.true_divide(out, len(inputs))


class Maximum(Merge):
    """The elementwise maximum of a list of inputs."""

    def _merge_function(self, inputs):
        out = inputs[0]
        for x in inputs[1:]:
            out = ops.maximum(out, x)
        return out


class Minimum(Merge):
    """The elementwise minimum of a list of inputs."""

    def _merge_function(self, inputs):
        out = inputs[0]
        for x in inputs[1:]:
            out = ops.minimum(out, x)
        return out


def _check_axis_argument(value, name):
    if not _is_int(value):
        raise TypeError(f"Invalid type for `{name}`: expected an int. Received: {name}={value!r}")
    return int(value)


class Concatenate(Merge):
    """Concatenates a list of inputs along ``axis``; every other size must match.

    Args:
        axis: The concatenation axis (default -1; negative counts from the end).

    Example:
        >>> Concatenate(axis=1)([np.zeros((2, 2, 5)), np.zeros((2, 1, 5))]).shape
        (2, 3, 5)
    """

    def __init__(self, axis=-1, **kwargs):
        axis = _check_axis_argument(axis, "axis")
        super().__init__(**kwargs)
        self.axis = axis

    def _mismatch(self, shapes):
        return ValueError(
            "A `Concatenate` layer requires inputs with matching shapes except for the concatenation axis. "
            f"Received: input_shape={shapes}"
        )

    def compute_output_shape(self, input_shape):
        shapes = _shape_list(input_shape)
        if shapes is None:
            raise ValueError(
                "A `Concatenate` layer should be called on a list of at least 1 input. "
                f"Received: input_shape={_describe(input_shape)}"
            )
        if len({len(s) for s in shapes}) != 1:
            raise self._mismatch(shapes)
        rank = len(shapes[0])
        if not -rank <= self.axis < rank:
            raise ValueError(
                f"Invalid value for `axis`: axis {self.axis} is out of range for inputs of rank {rank}. "
                f"Received: input_shape={shapes}"
            )
        axis = self.axis % rank
        out = list(shapes[0])
        for i in range(rank):
            if i == axis:
                continue
            known = {s[i] for s in shapes} - {None}
            if len(known) > 1:
                raise self._mismatch(shapes)
            out[i] = known.pop() if known else None
        sizes = [s[axis] for s in shapes]
        out[axis] = None if None in sizes else sum(sizes)
        return tuple(out)

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)):
            raise ValueError(
                f"A `Concatenate` layer should be called on a list of inputs. Received: inputs={_describe(inputs)}"
            )
        tensors = [ops.convert_to_tensor(x) for x in inputs]
        self.compute_output_shape([tuple(t.shape) for t in tensors])
        return ops.concatenate(tensors, axis=self.axis % tensors[0].ndim)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


def _standardize_dot_axes(axes):
    if _is_int(axes):
        items = (int(axes),)
    elif isinstance(axes, (list, tuple)):
        if len(axes) != 2:
            raise ValueError(f"Invalid format for argument `axes`: it should contain two elements. Received: axes={axes!r}")
        if not all(_is_int(a) for a in axes):
            raise ValueError(
                f"Invalid format for argument `axes`: list elements should be integers. Received: axes={axes!r}"
            )
        items = tuple(int(a) for a in axes)
    else:
        raise TypeError(f"Invalid type for argument `axes`: it should be a list or an int. Received: axes={axes!r}")
    if 0 in items:
        raise ValueError(
            "Invalid value for argument `axes`: a Dot layer cannot take the dot product over axis 0, the batch "
            f"axis. Received: axes={axes!r}"
        )
    return axes if _is_int(axes) else type(axes)(items)


class Dot(Merge):
    """The dot product of the samples of two inputs along one axis of each (Keras's ``batch_dot``).

    For ``x`` of shape ``(batch, *a)`` and ``y`` of shape ``(batch, *b)``, the
    output is ``(batch, *a without axes[0], *b without axes[1])``, summed over
    the two chosen axes (of equal size); a result with no axis left after the
    batch axis is ``(batch, 1)``.

    Args:
        axes: An int (the same axis of both inputs) or a pair of ints; never
            the batch axis 0. Negative axes count from the end of each input.
        normalize: Whether to L2-normalize both inputs along their axis first
            (the result is then the cosine similarity).

    Example:
        >>> Dot(axes=(1, 2))([np.ones((1, 5, 2)), np.ones((1, 2, 5))]).shape
        (1, 2, 2)
    """

    def __init__(self, axes, normalize=False, **kwargs):
        axes = _standardize_dot_axes(axes)
        normalize = standardize_bool(normalize, "normalize")
        super().__init__(**kwargs)
        self.axes = axes
        self.normalize = normalize

    def _resolved_axes(self, shapes):
        pair = (self.axes, self.axes) if _is_int(self.axes) else tuple(self.axes)
        out = []
        for axis, shape in zip(pair, shapes):
            rank = len(shape)
            if not -rank <= axis < rank:
                raise ValueError(
                    f"Invalid value for argument `axes`: axis {axis} is out of range for an input of rank {rank}. "
                    f"Received: axes={self.axes}, input shapes {shapes[0]} and {shapes[1]}"
                )
            axis %= rank
            if axis == 0:
                raise ValueError(
                    "Cannot perform batch_dot over axis 0. If your inputs are not batched, add a dummy batch "
                    "dimension to your inputs using keras.ops.expand_dims(x, 0)"
                )
            out.append(axis)
        return out

    def compute_output_shape(self, input_shape):
        shapes = _shape_list(input_shape)
        if shapes is None or len(shapes) != 2:
            raise ValueError(
                f"A `Dot` layer should be called on a list of 2 inputs. Received: input_shape={_describe(input_shape)}"
            )
        shape1, shape2 = shapes
        if len(shape1) < 2 or len(shape2) < 2:
            raise ValueError(
                f"Cannot do batch_dot on inputs with rank < 2. Received inputs with shapes {shape1} and {shape2}."
            )
        if shape1[0] is not None and shape2[0] is not None and shape1[0] != shape2[0]:
            raise ValueError(
                f"Cannot do batch_dot on inputs with different batch sizes. Received inputs with shapes "
                f"{shape1} and {shape2}."
            )
        a1, a2 = self._resolved_axes(shapes)
        if shape1[a1] is not None and shape2[a2] is not None and shape1[a1] != shape2[a2]:
            raise ValueError(
                f"Incompatible input shapes: axis values {shape1[a1]} (at axis {a1}) != {shape2[a2]} (at axis {a2}). "
                f"Full input shapes: {shape1}, {shape2}"
            )
        batch = shape1[0] if shape1[0] is not None else shape2[0]
        out = (batch,) + shape1[1:a1] + shape1[a1 + 1:] + shape2[1:a2] + shape2[a2 + 1:]
        return out if len(out) > 1 else out + (1,)

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)):
            raise ValueError(f"A `Dot` layer should be called on a list of 2 inputs. Received: inputs={_describe(inputs)}")
        tensors = [ops.convert_to_tensor(x) for x in inputs]
        shape = self.compute_output_shape([tuple(t.shape) for t in tensors])
        x, y = tensors
        a1, a2 = self._resolved_axes([x.shape, y.shape])
        if self.normalize:
            x, y = ops.normalize(x, axis=a1), ops.normalize(y, axis=a2)
        # batch_dot: x's axis last, y's after the batch axis, then one batched matrix product.
        x = ops.moveaxis(x, a1, -1)
        y = ops.moveaxis(y, a2, 1)
        batch, depth = x.shape[0], x.shape[-1]
        x = ops.reshape(x, (batch, math.prod(x.shape[1:-1]), depth))
        y = ops.reshape(y, (batch, depth, math.prod(y.shape[2:])))
        return ops.reshape(ops.matmul(x, y), (batch,) + tuple(shape[1:]))

    def get_config(self):
        return {**super().get_config(), "axes": self.axes, "normalize": self.normalize}


# ---------------------------------------------------------------- functional forms


def add(inputs, **kwargs):
    """``Add(**kwargs)(inputs)``: the elementwise sum of a list of tensors."""
    return Add(**kwargs)(inputs)


def subtract(inputs, **kwargs):
    """``Subtract(**kwargs)(inputs)``: ``inputs[0] - inputs[1]``."""
    return Subtract(**kwargs)(inputs)


def multiply(inputs, **kwargs):
    """``Multiply(**kwargs)(inputs)``: the elementwise product of a list of tensors."""
    return Multiply(**kwargs)(inputs)


def average(inputs, **kwargs):
    """``Average(**kwargs)(inputs)``: the elementwise mean of a list of tensors."""
    return Average(**kwargs)(inputs)


def maximum(inputs, **kwargs):
    """``Maximum(**kwargs)(inputs)``: the elementwise maximum of a list of tensors."""
    return Maximum(**kwargs)(inputs)


def minimum(inputs, **kwargs):
    """``Minimum(**kwargs)(inputs)``: the elementwise minimum of a list of tensors."""
    return Minimum(**kwargs)(inputs)


def concatenate(inputs, axis=-1, **kwargs):
    """``Concatenate(axis=axis, **kwargs)(inputs)``."""
    return Concatenate(axis=axis, **kwargs)(inputs)


def dot(inputs, axes=-1, normalize=False, **kwargs):
    """``Dot(axes=axes, normalize=normalize, **kwargs)(inputs)`` (``axes`` defaults to -1, as Keras's ``dot``)."""
    return Dot(axes=axes, normalize=normalize, **kwargs)(inputs)
