"""Batch normalization (``keras.layers.BatchNormalization``; the chapter's
``keras.layers.normalization.BatchNormalization`` path works too)."""

import numbers

from backends import get_ops
from gpulayers import config, constraints, initializers, ops, regularizers
from gpulayers.argument_validation import standardize_bool
from gpulayers.layers.base import Layer
from gpulayers.layers.input_spec import InputSpec
from gpulayers.utils import finite_real

__all__ = ["BatchNormalization"]


def _number(value, name, low, high=None, low_open=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Invalid type for `{name}`: expected a number. Received: {name}={value!r}")
    number = finite_real(value)  # None for inf, nan and ints beyond float range
    if number is None or (number <= low if low_open else number < low) or (high is not None and number > high):
        bounds = f"({low}, inf)" if low_open else f"[{low}, {high}]"
        raise ValueError(f"Invalid value for `{name}`: expected a finite number in {bounds}. Received: {name}={value!r}")
    return number


_RENORM_CLIPPING_KEYS = ("rmax", "rmin", "dmax")


def _renorm_clipping(value):
    """None, or a copy of a dict with Keras's keys (rmax, rmin, dmax) holding numbers or None."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(
            f"Invalid type for `renorm_clipping`: expected None or a dict. Received: renorm_clipping={value!r}"
        )
    for key, item in value.items():
        if key not in _RENORM_CLIPPING_KEYS:
            raise ValueError(
                f"Invalid value for `renorm_clipping`: unknown key {key!r}; the keys are {_RENORM_CLIPPING_KEYS}. "
                f"Received: renorm_clipping={value!r}"
            )
        if item is not None and (isinstance(item, bool) or not isinstance(item, numbers.Real)):
            raise TypeError(
                f"Invalid type for `renorm_clipping`: {key!r} should be a number or None. "
                f"Received: renorm_clipping={value!r}"
            )
    return dict(value)


class BatchNormalization(Layer):
    """Normalizes its input per feature with batch statistics (training) or moving ones.

    In training (``training=True`` and ``trainable``) it uses the mean and the
    biased variance of the batch over every axis but ``axis``, and updates
    ``moving = moving * momentum + batch * (1 - momentum)``. Otherwise it uses
    the moving statistics. Either way the output is
    ``x * inv + (beta - mean * inv)`` with ``inv = gamma / sqrt(var + epsilon)``.

    Args:
        axis: Int, the feature axis (``-1`` for channels_last, ``1`` after a
            channels_first convolution).
        momentum: Momentum of the moving statistics, in [0, 1] (default 0.99).
        epsilon: Positive number added to the variance (default 1e-3).
        center: Whether to add the learned offset ``beta``.
        scale: Whether to multiply by the learned ``gamma``.
        beta_initializer, gamma_initializer, moving_mean_initializer,
        moving_variance_initializer: Initializers.
        beta_regularizer, gamma_regularizer: Regularizers.
        beta_constraint, gamma_constraint: Constraints.
        renorm: Must be False: batch renormalization is not supported;
            True raises ValueError.
        renorm_clipping: None or a dict with keys among ``rmax``, ``rmin``,
            ``dmax`` (numbers or None); accepted for Keras compatibility,
            without effect since renorm is off.
        renorm_momentum: Number in [0, 1] (default 0.99); accepted for Keras
            compatibility, without effect since renorm is off.
        synchronized: Accepted for Keras compatibility; one device needs no sync.

    Input and output shape: any rank >= 2, the same.
    Weights, in Keras's order: gamma (if scale), beta (if center),
    moving_mean, moving_variance.

    Example:
        >>> bn = BatchNormalization()
        >>> bn(np.random.rand(8, 4), training=True).mean(axis=0).round(3)
        array([0., 0., 0., 0.], dtype=float32)
    """

    single_input = True
    input_cast = "all"  # numeric inputs are computed in the layer's dtype

    def __init__(
        self,
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_variance_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        renorm=False,
        renorm_clipping=None,
        renorm_momentum=0.99,
        synchronized=False,
        **kwargs,
    ):
        if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
            raise TypeError(f"Invalid type for `axis`: expected an int. Received: axis={axis!r}")
        momentum = _number(momentum, "momentum", 0.0, 1.0)
        epsilon = _number(epsilon, "epsilon", 0.0, low_open=True)
        if standardize_bool(renorm, "renorm"):
            raise ValueError(
                "Invalid value for `renorm`: renorm is not supported by gpulayers (batch renormalization); "
                f"pass False. Received: renorm={renorm!r}"
            )
        self.renorm = False
        self.renorm_clipping = _renorm_clipping(renorm_clipping)
        self.renorm_momentum = _number(renorm_momentum, "renorm_momentum", 0.0, 1.0)
        self.center = standardize_bool(center, "center")
        self.scale = standardize_bool(scale, "scale")
        self.synchronized = standardize_bool(synchronized, "synchronized")
        self.beta_initializer = initializers.get(beta_initializer, argument="beta_initializer")
        self.gamma_initializer = initializers.get(gamma_initializer, argument="gamma_initializer")
        self.moving_mean_initializer = initializers.get(moving_mean_initializer, argument="moving_mean_initializer")
        self.moving_variance_initializer = initializers.get(
            moving_variance_initializer, argument="moving_variance_initializer"
        )
        self.beta_regularizer = regularizers.get(beta_regularizer, argument="beta_regularizer")
        self.gamma_regularizer = regularizers.get(gamma_regularizer, argument="gamma_regularizer")
        self.beta_constraint = constraints.get(beta_constraint, argument="beta_constraint")
        self.gamma_constraint = constraints.get(gamma_constraint, argument="gamma_constraint")
        super().__init__(**kwargs)
        self.axis = int(axis)
        self.momentum = momentum
        self.epsilon = epsilon
        self.gamma = self.beta = self.moving_mean = self.moving_variance = None

    def _resolved_axis(self, ndim):
        if not -ndim <= self.axis < ndim:
            raise ValueError(
                f"Invalid value for `axis` of layer '{self.name}': it is out of range for an input of "
                f"rank {ndim}. Received: axis={self.axis}"
            )
        return self.axis % ndim

    def compute_output_shape(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(
                f"Input of layer '{self.name}' must have rank >= 2. Received: input_shape={tuple(input_shape)}"
            )
        self._resolved_axis(len(input_shape))
        return tuple(input_shape)

    def build(self, input_shape):
        axis = self._resolved_axis(len(input_shape))
        size = input_shape[axis]
        if size is None:
            raise ValueError(
                f"Axis {self.axis} of the input of layer '{self.name}' must be known. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        shape = (size,)
        if self.scale:
            self.gamma = self.add_weight(
                shape=shape, initializer=self.gamma_initializer, regularizer=self.gamma_regularizer,
                constraint=self.gamma_constraint, name="gamma", autocast=False,
            )
        if self.center:
            self.beta = self.add_weight(
                shape=shape, initializer=self.beta_initializer, regularizer=self.beta_regularizer,
                constraint=self.beta_constraint, name="beta", autocast=False,
            )
        self.moving_mean = self.add_weight(
            shape=shape, initializer=self.moving_mean_initializer, trainable=False, name="moving_mean",
            autocast=False,
        )
        self.moving_variance = self.add_weight(
            shape=shape, initializer=self.moving_variance_initializer, trainable=False, name="moving_variance",
            autocast=False,
        )
        self.input_spec = InputSpec(ndim=len(input_shape), axes={axis: size})
        self.built = True

    def call(self, inputs, training=None, mask=None, _then_relu=False):
        # Batch statistics only when training a trainable layer (a frozen one runs in inference mode).
        # _then_relu: a Functional graph whose only use of this output is a ReLU asks for it here, so
        # the two are one node and, on the GPU, one pass each way (models/functional.py).
        if mask is not None:
            mask = ops.convert_to_tensor(mask)
            if mask.ndim != inputs.ndim - 1:
                raise ValueError(
                    f"Invalid `mask` for layer '{self.name}': the mask provided should be one dimension less than "
                    f"the inputs. Received: mask.shape={mask.shape}, inputs.shape={inputs.shape}"
                )
        batch = training and self.trainable
        statistics = self._batch_statistics if batch else self._moving_statistics
        half = inputs.dtype == "float16"
        if half:
            # As Keras: float16 statistics overflow, so a float16 input (a float16 or mixed_float16
            # layer) is normalised in float32, with the float32 weights, and the output cast back.
            inputs = ops.cast(inputs, "float32")
        if batch and mask is not None:
            y = self._masked_batch_statistics(inputs, mask)
            y = ops.relu(y) if _then_relu else y
        else:
            y = self._record("batch_normalization", lambda x, gamma, beta: statistics(x, gamma, beta, _then_relu),
                             inputs, self.gamma, self.beta)
        return ops.cast(y, "float16") if half else y

    def _masked_batch_statistics(self, x, mask):
        """Keras's masked moments (only the unmasked positions count; the mask, nonzero = kept, broadcast
        over the last axis), then the moving update and the normalization, on the tape (the fused
        kernels take no mask)."""
        axis = self._resolved_axis(x.ndim)
        axes = tuple(a for a in range(x.ndim) if a != axis)
        kept = ops.broadcast_to(ops.expand_dims(ops.cast(ops.not_equal(mask, 0), x.dtype), -1), x.shape)
        count = ops.sum(kept, axis=axes, keepdims=True) + config.epsilon()
        mean = ops.sum(x * kept, axis=axes, keepdims=True) / count
        difference = (x - mean) * kept
        variance = ops.sum(difference * difference, axis=axes, keepdims=True) / count
        mean, variance = ops.reshape(mean, (-1,)), ops.reshape(variance, (-1,))
        for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
            value = moving.value * self.momentum + batch.data * (1.0 - self.momentum)
            moving.value = value.astype(moving.dtype, copy=False)
        return ops.batch_normalization(x, mean, variance, axis, offset=self.beta, scale=self.gamma,
                                       epsilon=self.epsilon)

    def _batch_statistics(self, x, gamma, beta, relu):
        ops = get_ops()
        y, moving_mean, moving_variance, cache = ops.batch_norm_training_step(
            x, gamma, beta, self.moving_mean.value, self.moving_variance.value, self._resolved_axis(x.ndim),
            self.epsilon, self.momentum, relu=relu,
        )
        # The statistics come in the computation's dtype; the variables keep theirs (a float16 layer's).
        self.moving_mean.value = moving_mean.astype(self.moving_mean.dtype, copy=False)
        self.moving_variance.value = moving_variance.astype(self.moving_variance.dtype, copy=False)
        return y, lambda dy, needs: ops.batch_norm_training_step_backward(dy, cache)

    def _moving_statistics(self, x, gamma, beta, relu):
        ops, axis, epsilon, has_beta = get_ops(), self._resolved_axis(x.ndim), self.epsilon, beta is not None
        mean, var = self.moving_mean.value, self.moving_variance.value
        y = ops.batch_norm_forward_inference(x, gamma, beta, mean, var, axis, epsilon)
        if relu:
            y = ops.relu(y)

        def backward(dy, needs):
            if relu:
                dy = ops.relu_backward(y, dy)
            return ops.batch_norm_backward_inference(dy, x, gamma, mean, var, axis, epsilon, has_beta=has_beta)

        return y, backward

    def get_config(self):
        return {
            **super().get_config(),
            "axis": self.axis,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": initializers.serialize(self.beta_initializer),
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
            "moving_mean_initializer": initializers.serialize(self.moving_mean_initializer),
            "moving_variance_initializer": initializers.serialize(self.moving_variance_initializer),
            "beta_regularizer": regularizers.serialize(self.beta_regularizer),
            "gamma_regularizer": regularizers.serialize(self.gamma_regularizer),
            "beta_constraint": constraints.serialize(self.beta_constraint),
            "gamma_constraint": constraints.serialize(self.gamma_constraint),
            "synchronized": self.synchronized,
            "renorm": self.renorm,
            "renorm_clipping": None if self.renorm_clipping is None else dict(self.renorm_clipping),
            "renorm_momentum": self.renorm_momentum,
        }
