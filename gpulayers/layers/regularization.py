"""Dropout, its spatial variants and ActivityRegularization (Keras 3's ``keras.layers`` classes).

The random layers here and in :mod:`gpulayers.layers.regularization_noise`
share one scheme: each keeps its own stream (``self._rng``, made on its first
training call from ``seed``, per backend) so the same seed gives the same
draws call after call, and a failed training step can put the stream back.
"""

import numbers

from backends import get_ops
from gpulayers import regularizers, utils
from gpulayers.argument_validation import standardize_data_format
from gpulayers.layers.base import Layer
from gpulayers.layers.input_spec import InputSpec

__all__ = ["ActivityRegularization", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D"]


def check_rate(rate):
    """Keras's rule for a drop rate: a real number in [0, 1] (NaN refused), as a float."""
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 <= rate <= 1:
        raise ValueError(
            "Invalid value received for argument `rate`. Expected a float value between 0 and 1. "
            f"Received: rate={rate!r}"
        )
    return float(rate)


def check_seed(seed):
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise ValueError(f"Invalid value for `seed`: expected None or a non-negative int. Received: seed={seed!r}")
    return None if seed is None else int(seed)


def check_noise_shape(noise_shape):
    """None, or a tuple of positive ints and Nones (Keras's checks and wording, ValueError throughout)."""
    if noise_shape is None:
        return None
    prefix = "Invalid value received for argument `noise_shape`."
    if isinstance(noise_shape, str):
        raise ValueError(f"{prefix} Expected a tuple or list of integers. Received: noise_shape={noise_shape!r}")
    try:
        dims = tuple(noise_shape)
    except TypeError:
        raise ValueError(
            f"{prefix} Expected an iterable of integers (e.g., a tuple or list). Received: noise_shape={noise_shape!r}"
        ) from None
    for i, d in enumerate(dims):
        if d is None:
            continue
        if isinstance(d, bool) or not isinstance(d, numbers.Integral):
            raise ValueError(
                f"{prefix} Expected all elements to be integers or None. Received element at index {i}: {d!r} "
                f"(type: {type(d).__name__}); noise_shape={dims!r}"
            )
        if d <= 0:
            raise ValueError(
                f"{prefix} Expected all dimensions to be positive integers or None. Received negative or zero "
                f"value at index {i}: {d!r}; noise_shape={dims!r}"
            )
    return tuple(None if d is None else int(d) for d in dims)


def fit_noise_shape(layer, noise_shape, shape):
    """The concrete mask shape of ``noise_shape`` for an input of ``shape`` (None entries take its size)."""
    if noise_shape is None:
        return tuple(shape)
    if len(noise_shape) != len(shape):
        raise ValueError(
            f"Invalid `noise_shape` for the input of layer '{layer.name}': it must have the input's "
            f"rank {len(shape)}. Received: noise_shape={noise_shape}, inputs.shape={tuple(shape)}"
        )
    out = []
    for d, n in zip(noise_shape, shape):
        if d is not None and d != 1 and n is not None and d != n:
            raise ValueError(
                f"Invalid `noise_shape` for the input of layer '{layer.name}': each entry must be None, "
                f"1 or the input's size. Received: noise_shape={noise_shape}, inputs.shape={tuple(shape)}"
            )
        out.append(n if d is None else d)
    return tuple(out)


def layer_stream(layer):
    """``(ops, stream)``: the layer's own random stream on the active backend, seeded on first use."""
    ops = get_ops()
    if layer._rng is None or layer._rng_ops is not ops:
        layer._rng, layer._rng_ops = ops.random_stream(utils.derive_seed(layer.seed)), ops
    return ops, layer._rng


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
        rate = check_rate(rate)
        noise_shape = check_noise_shape(noise_shape)
        seed = check_seed(seed)
        super().__init__(**kwargs)
        self.rate = rate
        self.noise_shape = noise_shape
        self.seed = seed
        self._rng = self._rng_ops = None  # made on first training call, per backend

    def _mask_shape(self, shape):
        return fit_noise_shape(self, self.noise_shape, shape)

    def compute_output_shape(self, input_shape):
        if self.noise_shape is not None:
            self._mask_shape(input_shape)
        return tuple(input_shape)

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        return self._record("dropout", self._drop, inputs)

    def _drop(self, x):
        ops, stream = layer_stream(self)
        keep = 1.0 - self.rate
        y, kept = ops.dropout_random(x, self._mask_shape(x.shape), keep, stream)
        return y, lambda dy, needs: (ops.dropout_backward(dy, kept, keep),)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed, "noise_shape": self.noise_shape}


class _SpatialDropout(Dropout):
    """Dropout of whole feature maps: one draw per (sample, channel), shared over the spatial axes."""

    rank = None  # the number of spatial axes

    def __init__(self, rate, data_format=None, seed=None, name=None, dtype=None):
        # Keras's signature: no noise_shape, no trainable or other base arguments (its configs hold none).
        data_format = standardize_data_format(data_format)
        super().__init__(rate, seed=seed, name=name, dtype=dtype)
        self.data_format = data_format
        self.input_spec = InputSpec(ndim=self.rank + 2)

    def _mask_shape(self, shape):
        if self.data_format == "channels_first":
            return (shape[0], shape[1]) + (1,) * self.rank
        return (shape[0],) + (1,) * self.rank + (shape[-1],)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        # Keras's keys, and its dtype as the variable dtype's name (not a DTypePolicy).
        return {"rate": self.rate, "seed": self.seed, "name": self.name, "dtype": self.dtype,
                "data_format": self.data_format}


class SpatialDropout1D(_SpatialDropout):
    """Dropout of whole 1-D feature maps: in training each (sample, channel) of a
    ``(batch, steps, channels)`` input is zeroed with probability ``rate`` over
    all its steps, the rest scaled by ``1 / (1 - rate)``; identity otherwise.

    Args:
        rate: Float in [0, 1], the fraction of channels to drop.
        seed: Int or None; the same seed gives the same masks on a backend.

    Input and output shape: 3-D, the same. (Channels last only, as Keras.)

    Example:
        >>> y = SpatialDropout1D(0.5, seed=1)(np.ones((2, 5, 3)), training=True)
        >>> bool((y[:, 0] == y[:, 4]).all())  # the same mask at every step
        True
    """

    rank = 1

    def __init__(self, rate, seed=None, name=None, dtype=None):
        super().__init__(rate, data_format="channels_last", seed=seed, name=name, dtype=dtype)

    def get_config(self):
        cfg = super().get_config()
        del cfg["data_format"]
        return cfg


class SpatialDropout2D(_SpatialDropout):
    """Dropout of whole 2-D feature maps (see :class:`SpatialDropout1D`).

    Args:
        rate: Float in [0, 1], the fraction of channels to drop.
        data_format: ``'channels_last'`` (NHWC) or ``'channels_first'`` (NCHW);
            default ``image_data_format()``.
        seed: Int or None.

    Input and output shape: 4-D, the same.
    """

    rank = 2


class SpatialDropout3D(_SpatialDropout):
    """Dropout of whole 3-D feature maps (see :class:`SpatialDropout1D`).

    Args:
        rate: Float in [0, 1], the fraction of channels to drop.
        data_format: ``'channels_last'`` (NDHWC) or ``'channels_first'``
            (NCDHW); default ``image_data_format()``.
        seed: Int or None.

    Input and output shape: 5-D, the same.
    """

    rank = 3


class ActivityRegularization(Layer):
    """Passes its input through and adds ``l1 * sum(|x|) + l2 * sum(x**2)``,
    divided by the batch size (Keras 3.14+), to ``layer.losses`` at each call.

    Args:
        l1, l2: Non-negative floats.

    Input and output shape: any, the same.

    Example:
        >>> layer = ActivityRegularization(l1=0.2, l2=0.3)
        >>> _ = layer(2 * np.ones((1,)))
        >>> float(layer.losses[0])  # 0.2 * 2 + 0.3 * 4
        1.6
    """

    built_at_construction = True

    single_input = True

    def __init__(self, l1=0.0, l2=0.0, **kwargs):
        if "activity_regularizer" in kwargs:
            raise TypeError(
                "ActivityRegularization takes `l1` and `l2`, not `activity_regularizer`. "
                f"Received: activity_regularizer={kwargs['activity_regularizer']!r:.80}"
            )
        penalty = regularizers.L1L2(l1=l1, l2=l2)  # checks both factors
        super().__init__(activity_regularizer=penalty, **kwargs)
        self.l1, self.l2 = penalty.l1, penalty.l2

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        cfg = super().get_config()
        cfg.pop("activity_regularizer", None)
        return {**cfg, "l1": self.l1, "l2": self.l2}
