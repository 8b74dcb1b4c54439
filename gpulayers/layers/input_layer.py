"""The entry point of a functional model: ``InputLayer`` and ``Input`` (Keras's ``keras.Input``)."""

import warnings

import numpy as np

from gpulayers.argument_validation import MAX_DIM, standardize_dtype, standardize_int, standardize_shape
from gpulayers.layers.base import Layer
from gpulayers.symbolic import KerasTensor, Node

__all__ = ["Input", "InputLayer"]


class InputLayer(Layer):
    """The entry point of a model: fixes the shape of one batch.

    Args:
        shape: Shape of one sample, without the batch axis.
        batch_size: Optional fixed batch size.
        dtype: Input dtype (default ``floatx()``): a float, integer or bool
            dtype (``"int32"`` for indices, as Keras); inputs are cast to it.
        batch_shape: Full shape with the batch axis; instead of shape/batch_size.
        sparse, ragged, optional: Keras 3's flags; must be None or False
            (gpulayers has no sparse, ragged or optional inputs).
        input_tensor: Must be None.
        name: Layer name.
    """

    single_input = True
    input_cast = "all"  # numeric inputs are computed in the layer's dtype

    def __init__(
        self,
        shape=None,
        batch_size=None,
        dtype=None,
        sparse=None,
        ragged=None,
        batch_shape=None,
        input_tensor=None,
        optional=False,
        name=None,
        **kwargs,
    ):
        if "input_shape" in kwargs:
            warnings.warn("Argument `input_shape` is deprecated. Use `shape` instead.", UserWarning, stacklevel=2)
        for legacy in ("input_shape", "batch_input_shape"):
            if legacy in kwargs:  # Keras 2 spellings, still found in old configs
                value = kwargs.pop(legacy)
                if legacy == "input_shape" and shape is None:
                    shape = value
                elif batch_shape is None:
                    batch_shape = value
        for arg, value in (("sparse", sparse), ("ragged", ragged), ("optional", optional)):
            if value:
                raise ValueError(f"Invalid value for `{arg}`: {arg} inputs are not supported. Received: {arg}={value!r}")
        if input_tensor is not None:
            raise ValueError("Invalid value for `input_tensor`: gpulayers builds its inputs from a shape only.")
        if shape is not None and batch_shape is not None:
            raise ValueError("You cannot pass both `shape` and `batch_shape` at the same time.")
        if batch_size is not None and batch_shape is not None:
            raise ValueError("You cannot pass both `batch_size` and `batch_shape` at the same time.")
        if batch_shape is None:
            if shape is None:
                raise ValueError("You must pass a `shape` argument (or `batch_shape`) to InputLayer.")
            if batch_size is not None:
                batch_size = standardize_int(batch_size, "batch_size", maximum=MAX_DIM)
            batch_shape = (batch_size,) + standardize_shape(shape, "shape")
        else:
            batch_shape = standardize_shape(batch_shape, "batch_shape")
            if not batch_shape:
                raise ValueError(f"Invalid value for `batch_shape`: it needs a batch axis. Received: batch_shape={batch_shape!r}")
        input_dtype = _input_dtype(dtype)
        super().__init__(name=name, dtype=input_dtype if np.dtype(input_dtype).kind == "f" else None, **kwargs)
        self._input_dtype = input_dtype
        self.batch_shape = batch_shape
        self.sparse = self.ragged = self.optional = False  # refused above unless false, as Keras's attributes
        self.built = True
        self._build_input_shape = (None,) + batch_shape[1:]
        # The layer's one node has no inputs: its output is the symbolic tensor Input() returns.
        Node(self, (), {}, KerasTensor(batch_shape, self.dtype, name=self.name))

    # An Input's dtype is its own (an integer or bool one too), whatever the policy.
    dtype = compute_dtype = variable_dtype = property(lambda self: self._input_dtype)

    def call(self, inputs=None):
        # Keras's InputLayer.call() takes nothing and returns None; a graph passes its input through.
        return inputs

    def compute_output_shape(self, input_shape):
        if len(input_shape) != len(self.batch_shape):
            raise ValueError(
                f"Input of layer '{self.name}' is incompatible with the layer: expected shape "
                f"{self.batch_shape}. Received: inputs.shape={tuple(input_shape)}"
            )
        # The batch axis is not checked, as Keras checks a model's inputs: an Input(batch_size=4) takes
        # a last, partial batch too.
        for got, want in zip(input_shape[1:], self.batch_shape[1:]):
            if want is not None and got is not None and got != want:
                raise ValueError(
                    f"Input of layer '{self.name}' is incompatible with the layer: expected shape "
                    f"{self.batch_shape}. Received: inputs.shape={tuple(input_shape)}"
                )
        return tuple(input_shape)

    @property
    def output_shape(self):
        return (None,) + self.batch_shape[1:]

    def get_config(self):
        return {
            "batch_shape": self.batch_shape,
            "dtype": self.dtype,
            "sparse": False,
            "ragged": False,
            "name": self.name,
            "optional": False,
        }


def _input_dtype(dtype):
    """An Input's dtype name: the float dtypes a layer takes, or an integer or bool dtype."""
    if isinstance(dtype, str) or isinstance(dtype, np.dtype) or (isinstance(dtype, type) and issubclass(dtype, np.generic)):
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = None
        if name is not None and np.dtype(name).kind in "biu":
            return name
    return standardize_dtype(dtype)


def Input(shape=None, batch_size=None, dtype=None, sparse=None, ragged=None, batch_shape=None, name=None, optional=False,
          **kwargs):
    """A model's symbolic input, as ``keras.Input``: ``x = Input((28, 28, 1)); y = Dense(10)(Flatten()(x))``.

    Returns the :class:`~gpulayers.symbolic.KerasTensor` of a new
    :class:`InputLayer` (shape with the batch axis, dtype, name).
    """
    layer = InputLayer(
        shape=shape, batch_size=batch_size, dtype=dtype, sparse=sparse, ragged=ragged, batch_shape=batch_shape,
        name=name, optional=optional, **kwargs,
    )
    return layer.output
