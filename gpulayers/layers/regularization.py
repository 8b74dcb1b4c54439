"""Dropout (``keras.layers.Dropout``)."""

import numbers

from backends import get_ops
from gpulayers import utils
from gpulayers.layers.base import Layer

__all__ = ["Dropout"]


class Dropout(Layer):
    """Inverted dropout: in training, zero each unit with probability ``rate``
    and scale the kept ones by ``1 / (1 - rate)``; identity otherwise.

    Args:
        rate: Float in [0, 1], the fraction of units to drop (1 drops all).
        noise_shape: Shape of the binary mask, broadcast over the input; a
            None entry takes the input's size (e.g. ``(None, 1, 1, None)``
            drops whole feature maps of an NHWC input).
        seed: Int or None; the same seed gives the same masks on a backend.

    Input and output shape: any, the same.

    Example:
        >>> layer = Dropout(0.5, seed=1)
        >>> y = layer(np.ones((2, 4)), training=True)  # entries are 0 or 2
    """

    built_at_construction = True

    single_input = True
    input_cast = "all"  # numeric inputs are computed in the layer's dtype

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 <= rate <= 1:
            raise ValueError(
                "Invalid value received for argument `rate`. Expected a float value between 0 and 1. "
                f"Received: rate={rate!r}"
            )
        if noise_shape is not None:
            try:
                noise_shape = tuple(noise_shape)
            except TypeError:
                raise TypeError(
                    f"Invalid type for `noise_shape`: expected a tuple of ints or None. Received: noise_shape={noise_shape!r}"
                ) from None
            for d in noise_shape:
                if d is not None and (isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1):
                    raise ValueError(
                        "Invalid value for `noise_shape`: expected positive ints or None. "
                        f"Received: noise_shape={noise_shape!r}"
                    )
            noise_shape = tuple(None if d is None else int(d) for d in noise_shape)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
            raise ValueError(f"Invalid value for `seed`: expected None or a non-negative int. Received: seed={seed!r}")
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.noise_shape = noise_shape
        self.seed = None if seed is None else int(seed)
        self._rng = self._rng_ops = None  # made on first training call, per backend

    def _mask_shape(self, shape):
        if self.noise_shape is None:
            return tuple(shape)
        if len(self.noise_shape) != len(shape):
            raise ValueError(
                f"Invalid `noise_shape` for the input of layer '{self.name}': it must have the input's "
                f"rank {len(shape)}. Received: noise_shape={self.noise_shape}, inputs.shape={tuple(shape)}"
            )
        out = []
        for d, n in zip(self.noise_shape, shape):
            if d is not None and d != 1 and n is not None and d != n:
                raise ValueError(
                    f"Invalid `noise_shape` for the input of layer '{self.name}': each entry must be None, "
                    f"1 or the input's size. Received: noise_shape={self.noise_shape}, inputs.shape={tuple(shape)}"
                )
            out.append(n if d is None else d)
        return tuple(out)

    def compute_output_shape(self, input_shape):
        if self.noise_shape is not None:
            self._mask_shape(input_shape)
        return tuple(input_shape)

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        return self._record("dropout", self._drop, inputs)

    def _drop(self, x):
        ops = get_ops()
        if self._rng is None or self._rng_ops is not ops:
            self._rng, self._rng_ops = ops.random_stream(utils.derive_seed(self.seed)), ops
        keep = 1.0 - self.rate
        y, kept = ops.dropout_random(x, self._mask_shape(x.shape), keep, self._rng)
        return y, lambda dy, needs: (ops.dropout_backward(dy, kept, keep),)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed, "noise_shape": self.noise_shape}
