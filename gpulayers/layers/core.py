"""Core layers: Dense and Activation."""

import math
import numbers

from backends import get_ops
from gpulayers import activations, constraints, initializers, regularizers
from gpulayers.layers.arguments import standardize_bool, standardize_int
from gpulayers.layers.base import Layer
from gpulayers.layers.input_spec import InputSpec

__all__ = ["Activation", "Dense"]


class Dense(Layer):
    """Densely connected layer: ``output = activation(inputs @ kernel + bias)``.

    Args:
        units: Positive int, the size of the output's last axis.
        activation: Activation function (name, callable or None for linear).
        use_bias: Whether to add a bias vector.
        kernel_initializer, bias_initializer: Initializers (default
            ``'glorot_uniform'`` and ``'zeros'``).
        kernel_regularizer, bias_regularizer, activity_regularizer: Regularizers.
        kernel_constraint, bias_constraint: Constraints applied after updates.
        lora_rank: Must be None: LoRA (Keras's low-rank kernel update) is not
            supported; any other value raises ValueError.
        lora_alpha: Accepted for Keras compatibility; without ``lora_rank``
            it has no effect (and, as in Keras, is not in the config).
        quantization_config: Must be None: quantized kernels are not
            supported; any other value raises ValueError. Always None in
            the config, as Keras writes it for an unquantized layer.

    Input shape: ``(batch_size, ..., input_dim)``.
    Output shape: ``(batch_size, ..., units)``.

    Example:
        >>> layer = Dense(3, activation="relu")
        >>> layer(np.ones((2, 4))).shape
        (2, 3)
    """

    single_input = True
    input_cast = "all"  # numeric inputs are computed in the layer's dtype

    def __init__(
        self,
        units,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        lora_rank=None,
        lora_alpha=None,
        quantization_config=None,
        **kwargs,
    ):
        units = standardize_int(units, "units")
        check_no_lora(lora_rank, lora_alpha)
        if quantization_config is not None:
            raise ValueError(
                "Invalid value for `quantization_config`: quantization_config is not supported by gpulayers "
                f"(quantized kernels); pass None. Received: quantization_config={quantization_config!r:.200}"
            )
        self.activation = activations.get(activation, argument="activation")
        self.use_bias = standardize_bool(use_bias, "use_bias")
        self.kernel_initializer = initializers.get(kernel_initializer, argument="kernel_initializer")
        self.bias_initializer = initializers.get(bias_initializer, argument="bias_initializer")
        self.kernel_regularizer = regularizers.get(kernel_regularizer, argument="kernel_regularizer")
        self.bias_regularizer = regularizers.get(bias_regularizer, argument="bias_regularizer")
        self.kernel_constraint = constraints.get(kernel_constraint, argument="kernel_constraint")
        self.bias_constraint = constraints.get(bias_constraint, argument="bias_constraint")
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.units = units
        self.lora_rank = None
        self.lora_alpha = lora_alpha
        self.lora_enabled = False
        self.quantization_config = None
        self.input_spec = InputSpec(min_ndim=2)
        self.kernel = self.bias = None

    def build(self, input_shape):
        in_dim = input_shape[-1]
        if in_dim is None:
            raise ValueError(
                f"The last axis of the input of layer '{self.name}' must be known. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        self.kernel = self.add_weight(
            shape=(in_dim, self.units),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
            name="kernel",
        )
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(self.units,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
                name="bias",
            )
        self.input_spec = InputSpec(min_ndim=2, axes={-1: in_dim})
        self.built = True

    def compute_output_shape(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(
                f"Input of layer '{self.name}' must have rank >= 2 (batch, ..., features). "
                f"Received: input_shape={tuple(input_shape)}"
            )
        return tuple(input_shape[:-1]) + (self.units,)

    def call(self, inputs):
        return self._activate(self._record("dense", self._dense, inputs, self.kernel, self.bias))

    def _dense(self, x, kernel, bias):
        ops, units = get_ops(), self.units
        z = ops.matmul(x, kernel)
        if bias is not None:
            z += bias

        def backward(dz, needs):
            dx = ops.matmul(dz, kernel.T) if needs[0] else None
            dk = db = None
            if needs[1] or needs[2]:
                rows = math.prod(x.shape[:-1])  # not -1: a zero-size feature axis must work too
                dz2 = dz.reshape(rows, units)
                if needs[1]:
                    dk = ops.matmul(x.reshape(rows, x.shape[-1]).T, dz2)
                if needs[2]:
                    db = dz2.sum(axis=0)
            return dx, dk, db

        return z, backward

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": constraints.serialize(self.kernel_constraint),
            "bias_constraint": constraints.serialize(self.bias_constraint),
            "quantization_config": None,
        }


def check_no_lora(lora_rank, lora_alpha):
    """Keras's ``lora_rank``/``lora_alpha`` arguments: only "no LoRA" (``lora_rank=None``) is supported."""
    if lora_rank is not None:
        raise ValueError(
            "Invalid value for `lora_rank`: lora_rank is not supported by gpulayers (no LoRA); pass None. "
            f"Received: lora_rank={lora_rank!r}"
        )
    if lora_alpha is not None and (isinstance(lora_alpha, bool) or not isinstance(lora_alpha, numbers.Real)):
        raise TypeError(
            f"Invalid type for `lora_alpha`: expected None or a number. Received: lora_alpha={lora_alpha!r}"
        )


class Activation(Layer):
    """Applies an activation function to its input.

    Args:
        activation: Name (``'relu'``...) or callable.

    Input and output shape: any, the same.

    Example:
        >>> Activation("relu")(np.array([[-1.0, 2.0]]))
        array([[0., 2.]], dtype=float32)
    """

    single_input = True
    input_cast = "all"  # numeric inputs are computed in the layer's dtype

    def __init__(self, activation, **kwargs):
        self.activation = activations.get(activation, argument="activation")
        super().__init__(**kwargs)

    def call(self, inputs):
        return self._activate(inputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "activation": activations.serialize(self.activation)}
