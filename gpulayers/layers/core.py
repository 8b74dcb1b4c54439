"""Core layers: Dense, Embedding, Activation and Identity."""

import math
import numbers

import numpy as np

from backends import get_ops
from gpulayers import activations, constraints, initializers, regularizers
from gpulayers.argument_validation import standardize_bool, standardize_int
from gpulayers.layers.base import Layer
from gpulayers.layers.input_spec import InputSpec
from gpulayers.ops.activations import softmax_node
from gpulayers.tree import map_structure

__all__ = ["Activation", "Dense", "Embedding", "Identity"]


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
        if self.activation is activations.relu:  # bias and ReLU in one pass, one node
            return self._record("dense", self._dense_relu, inputs, self.kernel, self.bias)
        if self.activation is activations.softmax and self.use_bias and self.units > 1:
            # Bias and softmax in one pass, still two nodes (a cross-entropy finds the logits behind the softmax).
            probs = []
            z = self._record("dense", lambda *a: self._dense_softmax(probs, *a), inputs, self.kernel, self.bias)
            return softmax_node(z, probs[0], (z.ndim - 1,))
        return self._activate(self._record("dense", self._dense, inputs, self.kernel, self.bias))

    def _dense_softmax(self, probs, x, kernel, bias):
        ops = get_ops()
        z = ops.matmul(x, kernel)
        probs.append(ops.bias_add_softmax(z, bias))  # z becomes the logits in place
        return z, self._dense_backward(x, kernel)

    def _dense_relu(self, x, kernel, bias):
        ops = get_ops()
        y = ops.bias_add_relu(ops.matmul(x, kernel), bias, -1)
        backward = self._dense_backward(x, kernel)
        return y, lambda dy, needs: backward(ops.relu_backward(y, dy), needs)  # y > 0 exactly where its input is

    def _dense(self, x, kernel, bias):
        z = get_ops().matmul(x, kernel)
        if bias is not None:
            z += bias
        return z, self._dense_backward(x, kernel)

    def _dense_backward(self, x, kernel):
        ops, units = get_ops(), self.units

        def backward(dz, needs):
            dx = ops.matmul(dz, kernel.T) if needs[0] else None
            dk = db = None
            if needs[1] or needs[2]:
                rows = math.prod(x.shape[:-1])  # not -1: a zero-size feature axis must work too
                dz2 = dz.reshape(rows, units)
                if needs[1]:
                    dk = ops.matmul(x.reshape(rows, x.shape[-1]).T, dz2)
                if needs[2]:
                    db = ops.channel_sum(dz2, 1)
            return dx, dk, db

        return backward

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


class Embedding(Layer):
    """Turns non-negative integer indices into dense vectors: row ``i`` of the ``embeddings`` matrix.

    Args:
        input_dim: Positive int, the vocabulary size (largest index + 1).
        output_dim: Positive int, the size of each vector.
        embeddings_initializer: Initializer of the matrix (default
            ``'uniform'``: RandomUniform(-0.05, 0.05), as Keras).
        embeddings_regularizer, activity_regularizer: Regularizers.
        embeddings_constraint: Constraint applied after updates.
        mask_zero: Must be False: masks are not supported by gpulayers yet, so
            a layer that would emit one is refused rather than silently unmasked.
        weights: Optional initial matrix of shape ``(input_dim, output_dim)``.
        lora_rank, lora_alpha, quantization_config: As in :class:`Dense`
            (only None is supported).

    Input shape: ``(batch_size, ...)`` of indices (floats are cast to int32,
    as Keras does). Output shape: ``(batch_size, ..., output_dim)`` in the
    layer's dtype. The gradient adds each output row's gradient into the row
    it was read from.

    Example:
        >>> Embedding(1000, 8)(np.array([[4, 20, 7]])).shape
        (1, 3, 8)
    """

    input_cast = None  # indices stay integers

    def __init__(
        self,
        input_dim,
        output_dim,
        embeddings_initializer="uniform",
        embeddings_regularizer=None,
        embeddings_constraint=None,
        mask_zero=False,
        weights=None,
        lora_rank=None,
        lora_alpha=None,
        quantization_config=None,
        **kwargs,
    ):
        input_dim = standardize_int(input_dim, "input_dim")
        output_dim = standardize_int(output_dim, "output_dim")
        check_no_lora(lora_rank, lora_alpha)
        if quantization_config is not None:
            raise ValueError(
                "Invalid value for `quantization_config`: quantization_config is not supported by gpulayers "
                f"(quantized kernels); pass None. Received: quantization_config={quantization_config!r:.200}"
            )
        if standardize_bool(mask_zero, "mask_zero"):
            raise NotImplementedError(
                "Embedding(mask_zero=True) is not supported: gpulayers has no masking yet, and the layers after "
                "it would ignore the mask. Pad with an index the model may learn instead, or pass mask_zero=False."
            )
        self.embeddings_initializer = initializers.get(embeddings_initializer, argument="embeddings_initializer")
        self.embeddings_regularizer = regularizers.get(embeddings_regularizer, argument="embeddings_regularizer")
        self.embeddings_constraint = constraints.get(embeddings_constraint, argument="embeddings_constraint")
        super().__init__(**kwargs)
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.mask_zero = False
        self.lora_rank = None
        self.lora_alpha = lora_alpha
        self.lora_enabled = False
        self.quantization_config = None
        self.embeddings = None
        if weights is not None:
            self.build()
            if not isinstance(weights, (list, tuple)):
                weights = [weights]
            self.set_weights(weights)

    def build(self, input_shape=None):
        if self.embeddings is not None:
            return
        self.embeddings = self.add_weight(
            shape=(self.input_dim, self.output_dim),
            initializer=self.embeddings_initializer,
            regularizer=self.embeddings_regularizer,
            constraint=self.embeddings_constraint,
            name="embeddings",
        )
        self.built = True

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def compute_output_spec(self, *args, **kwargs):
        from gpulayers.symbolic import KerasTensor

        if not self.built:
            self.build_from_shape(tuple(args[0].shape))
        return KerasTensor(self.compute_output_shape(args[0].shape), self.dtype)

    def compute_mask(self, inputs, mask=None):
        return None

    def call(self, inputs):
        indices = inputs.data
        if indices.dtype.kind not in "iu":
            indices = indices.astype(np.int32)  # Keras casts float indices to int32
        elif indices.dtype.kind == "u":
            indices = indices.astype(np.int64)
        if indices.size:
            low, high = int(indices.min()), int(indices.max())
            if low < 0 or high >= self.input_dim:
                raise IndexError(
                    f"Layer '{self.name}' received index {low if low < 0 else high}, outside [0, {self.input_dim}) "
                    f"(input_dim={self.input_dim})."
                )
        return self._record("embedding", lambda table: self._lookup(indices, table), self.embeddings)

    def _lookup(self, indices, table):
        xp = get_ops().xp
        y = xp.take(table, indices, axis=0)

        def backward(dy, needs):
            from gpulayers.ops.shapes import _scatter_add

            grad = xp.zeros(table.shape, dtype=dy.dtype)
            return (_scatter_add(grad, indices.reshape(-1), dy.reshape(-1, self.output_dim)),)

        return y, backward

    def get_config(self):
        cfg = super().get_config()
        cfg.pop("activity_regularizer", None)
        return {
            **cfg,
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "embeddings_initializer": initializers.serialize(self.embeddings_initializer),
            "embeddings_regularizer": regularizers.serialize(self.embeddings_regularizer),
            "activity_regularizer": regularizers.serialize(self.activity_regularizer),
            "embeddings_constraint": constraints.serialize(self.embeddings_constraint),
            "mask_zero": self.mask_zero,
            "quantization_config": None,
        }


class Activation(Layer):
    """Applies an activation function to its input.

    Args:
        activation: Name (``'relu'``...) or callable.

    Input and output shape: any, the same.

    Example:
        >>> Activation("relu")(np.array([[-1.0, 2.0]]))
        array([[0., 2.]], dtype=float32)
    """

    built_at_construction = True

    single_input = True
    input_cast = "all"  # numeric inputs are computed in the layer's dtype

    def __init__(self, activation, **kwargs):
        self.activation = activations.get(activation, argument="activation")
        super().__init__(**kwargs)

    def call(self, inputs):
        return self._activate(inputs)

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        if self.activation is activations.glu and shape and shape[-1] is not None:
            return shape[:-1] + (shape[-1] // 2,)  # glu halves the last axis (Keras's layer does not say so)
        return shape

    def get_config(self):
        return {**super().get_config(), "activation": activations.serialize(self.activation)}


class Identity(Layer):
    """Returns its input (a tensor, or a list or dict of them) unchanged: a placeholder layer.

    As every layer, it casts float inputs to its dtype (autocast); other
    inputs pass as they are. Input and output shape: any, the same.

    Example:
        >>> Identity()(np.array([[1.0, 2.0]])).shape
        (1, 2)
    """

    built_at_construction = True

    def call(self, inputs):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, inputs):
        from gpulayers.symbolic import KerasTensor

        floats = "f" if self.autocast else ""
        return map_structure(
            lambda x: KerasTensor(x.shape, self.compute_dtype if np.dtype(x.dtype).kind in floats else x.dtype), inputs
        )
