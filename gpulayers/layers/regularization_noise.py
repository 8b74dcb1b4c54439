"""Noise layers: GaussianNoise, GaussianDropout and AlphaDropout (Keras 3's ``keras.layers`` classes).

Active only in training (``training=True``); identity otherwise. Seeds and
streams as :class:`~gpulayers.layers.regularization.Dropout`: an int seed
gives the same sequence of draws on a backend, None draws from the
process-wide generator (reproducible after ``set_random_seed``). The
backends' streams give uniforms, so normal noise is made from them with
the Box-Muller transform.
"""

import math
import numbers

import numpy as np

from gpulayers.layers.base import Layer
from gpulayers.layers.regularization import check_noise_shape, check_rate, check_seed, fit_noise_shape, layer_stream
from gpulayers.ops.activations import SELU_ALPHA, SELU_SCALE

__all__ = ["AlphaDropout", "GaussianDropout", "GaussianNoise"]


def _work_dtype(dtype):
    """float16 noise is drawn and shaped in float32, then rounded once."""
    dtype = np.dtype(dtype)
    return dtype if dtype.itemsize >= 4 else np.dtype("float32")


def standard_normal(ops, stream, shape, dtype):
    """N(0, 1) samples of ``shape`` in ``dtype`` (float32 or float64): Box-Muller on two uniform draws."""
    xp = ops.xp
    u = ops.uniform(stream, (2, math.prod(shape)), dtype)  # flat: a 0-d shape still gives arrays, not scalars
    radius = xp.log1p(-u[0])  # 1 - u is in (0, 1]: the log is finite
    radius *= -2.0
    xp.sqrt(radius, out=radius)
    angle = u[1]
    angle *= 2.0 * math.pi
    return (radius * xp.cos(angle, out=angle)).reshape(shape)


class _Noise(Layer):
    built_at_construction = True
    single_input = True
    input_cast = "all"  # numeric inputs are computed in the layer's dtype, as Dropout's

    def __init__(self, seed=None, **kwargs):
        seed = check_seed(seed)
        super().__init__(**kwargs)
        self.seed = seed
        self._rng = self._rng_ops = None  # made on first training call, per backend

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


class GaussianNoise(_Noise):
    """Adds zero-centred Gaussian noise of standard deviation ``stddev`` in training; identity otherwise.

    Args:
        stddev: Float in [0, 1] (Keras's range), the noise's standard deviation.
        seed: Int or None; the same seed gives the same noise on a backend.

    Input and output shape: any, the same. The gradient passes through unchanged.

    Example:
        >>> y = GaussianNoise(0.1, seed=1)(np.zeros((2, 3)), training=True)  # samples of N(0, 0.01)
    """

    def __init__(self, stddev, seed=None, **kwargs):
        if isinstance(stddev, bool) or not isinstance(stddev, numbers.Real) or not 0 <= stddev <= 1:
            raise ValueError(
                "Invalid value received for argument `stddev`. Expected a float value between 0 and 1. "
                f"Received: stddev={stddev!r}"
            )
        super().__init__(seed=seed, **kwargs)
        self.stddev = float(stddev)

    def call(self, inputs, training=False):
        if not training or self.stddev == 0:
            return inputs
        return self._record("gaussian_noise", self._add_noise, inputs)

    def _add_noise(self, x):
        ops, stream = layer_stream(self)
        noise = standard_normal(ops, stream, x.shape, _work_dtype(x.dtype))
        noise *= self.stddev
        noise = noise.astype(x.dtype, copy=False)
        noise += x  # in place: a 0-d input gives a 0-d array, not a scalar
        return noise, lambda dy, needs: (dy,)

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev, "seed": self.seed}


class GaussianDropout(_Noise):
    """Multiplies by 1-centred Gaussian noise of standard deviation ``sqrt(rate / (1 - rate))`` in training.

    Args:
        rate: Float in [0, 1], the drop probability of the :class:`Dropout` it
            stands for. ``rate=1`` (infinite noise) is refused at a training call.
        seed: Int or None; the same seed gives the same noise on a backend.

    Input and output shape: any, the same. The gradient is multiplied by the same noise.

    Example:
        >>> y = GaussianDropout(0.2, seed=1)(np.ones((2, 3)), training=True)  # samples of N(1, 0.25)
    """

    def __init__(self, rate, seed=None, **kwargs):
        rate = check_rate(rate)
        super().__init__(seed=seed, **kwargs)
        self.rate = rate

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        if self.rate == 1:
            raise ValueError(
                f"Layer '{self.name}': GaussianDropout with rate=1 would multiply by noise of infinite standard "
                "deviation sqrt(rate / (1 - rate)); use a rate below 1 in training. Received: rate=1.0"
            )
        return self._record("gaussian_dropout", self._multiply, inputs)

    def _multiply(self, x):
        ops, stream = layer_stream(self)
        noise = standard_normal(ops, stream, x.shape, _work_dtype(x.dtype))
        noise *= math.sqrt(self.rate / (1.0 - self.rate))
        noise += 1.0
        noise = noise.astype(x.dtype, copy=False)
        xp = ops.xp

        def times_noise(v):  # into a new array: a 0-d input gives a 0-d array, not a scalar
            return xp.multiply(v, noise, out=xp.empty_like(v))

        return times_noise(x), lambda dy, needs: (times_noise(dy),)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


class AlphaDropout(_Noise):
    """Dropout that keeps SELU's self-normalization: in training each unit is
    set, with probability ``rate``, to SELU's negative saturation value
    ``alpha' = -scale * alpha``, and the result is mapped by ``a * x + b`` with
    ``a = ((1 - rate) * (1 + rate * alpha'**2)) ** -0.5`` and
    ``b = -a * alpha' * rate``, so inputs of mean 0 and variance 1 keep them.
    Identity in inference.

    Args:
        rate: Float in [0, 1]. ``rate=1`` gives zeros (the formula's limit;
            Keras computes NaN there).
        noise_shape: Shape of the binary mask, broadcast over the input, as
            :class:`Dropout`'s (None entries take the input's size).
        seed: Int or None; the same seed gives the same masks on a backend.

    Input and output shape: any, the same. The gradient is ``a`` where a unit
    is kept, 0 where it is dropped.

    Example:
        >>> y = AlphaDropout(0.1, seed=1)(np.zeros((2, 3)), training=True)
    """

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        rate = check_rate(rate)
        noise_shape = check_noise_shape(noise_shape)
        super().__init__(seed=seed, **kwargs)
        self.rate = rate
        self.noise_shape = noise_shape

    def compute_output_shape(self, input_shape):
        fit_noise_shape(self, self.noise_shape, input_shape)
        return tuple(input_shape)

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        return self._record("alpha_dropout", self._drop, inputs)

    def _drop(self, x):
        ops, stream = layer_stream(self)
        xp, t = ops.xp, x.dtype.type
        mask_shape = fit_noise_shape(self, self.noise_shape, x.shape)
        if self.rate == 1:
            return xp.zeros_like(x), lambda dy, needs: (xp.zeros_like(dy),)
        kept = ops.uniform(stream, mask_shape, _work_dtype(x.dtype)) >= self.rate  # Keras keeps u >= rate
        alpha_p = -SELU_ALPHA * SELU_SCALE
        a = ((1.0 - self.rate) * (1.0 + self.rate * alpha_p**2)) ** -0.5
        b = -a * alpha_p * self.rate
        # Rounded as Keras's a * (x * kept + alpha' * (1 - kept)) + b in x's dtype, without its 0 * inf = NaN.
        dropped = t(a) * t(alpha_p) + t(b)
        y = xp.where(kept, x * t(a) + t(b), dropped)
        return y, lambda dy, needs: (xp.where(kept, dy * t(a), t(0)),)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed, "noise_shape": self.noise_shape}
