"""Random draws with Keras 3's ``keras.random`` API, on the active backend.

Seeding follows Keras: ``seed=None`` draws differently at every call (from
the process-wide generator behind :func:`gpulayers.utils.host_rng`, so
:func:`gpulayers.utils.set_random_seed` makes a program reproducible); an
int gives the same draws at every call; a :class:`SeedGenerator` advances
at every call. Each call makes a fresh backend generator with
``get_ops().rng(int_seed)``, so the same seed gives the same numbers on one
backend (NumPy and CuPy streams differ).

Example:
    >>> gen = SeedGenerator(42)
    >>> a = normal((2, 3), seed=gen)
    >>> b = normal((2, 3), seed=gen)     # different from a
    >>> c = normal((2, 3), seed=42)      # the same as a: SeedGenerator(42)'s first draw
"""

import math
import numbers

import numpy as np

from backends import get_ops
from gpulayers import config, utils
from gpulayers.autodiff import Tensor, record
from gpulayers.ops import numpy as numpy_ops
from gpulayers.ops.core import convert_to_tensor, standardize_dtype
from gpulayers.ops.elementwise import _float

__all__ = [
    "SeedGenerator",
    "categorical",
    "dropout",
    "normal",
    "randint",
    "shuffle",
    "truncated_normal",
    "uniform",
]

_MASK64 = (1 << 64) - 1


def _is_int(value):
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def _mix(seed, counter):
    """A 63-bit int seed for draw number ``counter`` of the stream ``seed`` (SeedSequence hashing)."""
    words = np.random.SeedSequence(int(seed) & _MASK64, spawn_key=(int(counter),)).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


class SeedGenerator:
    """A counter-based stream of seeds (``keras.random.SeedGenerator``).

    ``next()`` gives a new int seed at each call, from ``(seed, counter)``;
    the counter then advances. ``seed=None`` takes a seed from
    :func:`gpulayers.utils.host_rng` (reproducible after ``set_random_seed``).

    Args:
        seed: an int, or None.
        name: a name (default ``seed_generator``, ``seed_generator_1``...).
    """

    def __init__(self, seed=None, name=None):
        if seed is not None and not _is_int(seed):
            raise ValueError(f"Argument `seed` must be an integer. Received: seed={seed!r}")
        self._initial_seed = None if seed is None else int(seed)
        # Keras's default seeds are in [1, 1e9].
        self._seed = int(utils.host_rng().integers(1, 10**9)) if seed is None else int(seed)
        self._counter = 0
        self.name = utils.unique_name("seed_generator") if name is None else str(name)

    @property
    def state(self):
        """``[seed, counter]`` as an int64 NumPy array (Keras keeps the same pair)."""
        return np.array([self._seed, self._counter], dtype=np.int64)

    def next(self, ordered=True):
        """The next int seed; the counter advances (``ordered`` is accepted for Keras's signature)."""
        value = _mix(self._seed, self._counter)
        self._counter += 1
        return value

    def get_config(self):
        return {"seed": self._initial_seed, "name": self.name}

    @classmethod
    def from_config(cls, config_):
        return cls(**config_)

    def __repr__(self):
        return f"<SeedGenerator name={self.name!r} seed={self._seed} counter={self._counter}>"


def draw_seed(seed):
    """The int seed of one draw: ``seed`` None (fresh), an int (fixed) or a :class:`SeedGenerator` (advances)."""
    if isinstance(seed, SeedGenerator):
        return seed.next()
    if _is_int(seed):
        return _mix(seed, 0)
    if seed is None:
        return utils.derive_seed(None)
    raise ValueError(
        "Argument `seed` must be either an integer or an instance of `SeedGenerator`. "
        f"Received: seed={seed!r} (of type {type(seed).__name__})"
    )


def _rng(seed):
    ops = get_ops()
    ops.refuse_host_random()  # inside a CUDA graph capture: refused before a SeedGenerator advances
    return ops.rng(draw_seed(seed))


def _shape(shape):
    if _is_int(shape):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"Invalid type for `shape`: expected an int or a tuple of ints. Received: shape={shape!r}") from None
    if not all(_is_int(d) and d >= 0 for d in dims):
        raise ValueError(f"Invalid value for `shape`: expected non-negative ints. Received: shape={shape!r}")
    return tuple(int(d) for d in dims)


def _float_dtype(dtype, fn):
    name = standardize_dtype(dtype) or config.floatx()
    if np.dtype(name).kind != "f":
        raise ValueError(f"`gpulayers.random.{fn}` requires a floating point `dtype`. Received: dtype={dtype!r}")
    return np.dtype(name)


def _number(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.number)):
        raise TypeError(f"Invalid type for `{name}`: expected a number. Received: {name}={value!r}")
    return float(value)


def _draw_dtype(dtype):
    return dtype if dtype.itemsize >= 4 else np.dtype("float32")


def _standard_normal(rng, shape, dtype):
    return rng.standard_normal(shape, dtype=_draw_dtype(dtype))


def normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    """Samples of a normal distribution ``N(mean, stddev**2)`` (dtype ``floatx()`` by default)."""
    dtype = _float_dtype(dtype, "normal")
    shape = _shape(shape)
    mean, stddev = _number(mean, "mean"), _number(stddev, "stddev")
    z = _standard_normal(_rng(seed), shape, dtype)
    return Tensor((z * stddev + mean).astype(dtype))


def uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
    """Samples of the uniform distribution on ``[minval, maxval)``."""
    dtype = _float_dtype(dtype, "uniform")
    shape = _shape(shape)
    lo, hi = _number(minval, "minval"), _number(maxval, "maxval")
    ops = get_ops()
    u = ops.uniform(_rng(seed), shape, _draw_dtype(dtype))
    y = (lo + (hi - lo) * u).astype(dtype)
    if hi > lo:
        # Rounding the scaled draw can reach maxval; keep the bound exclusive.
        below = np.nextafter(dtype.type(hi), dtype.type(lo))
        y = ops.xp.minimum(y, below)
    return Tensor(y)


def truncated_normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    """Normal samples within two standard deviations of ``mean``; the others are redrawn (as Keras)."""
    dtype = _float_dtype(dtype, "truncated_normal")
    shape = _shape(shape)
    mean, stddev = _number(mean, "mean"), _number(stddev, "stddev")
    rng = _rng(seed)
    xp = get_ops().xp
    n = math.prod(shape)
    z = _standard_normal(rng, (n,), dtype)
    bad = xp.abs(z) > 2.0
    while bool(bad.any()):  # each round redraws the ~4.6% outside [-2, 2]
        z[bad] = _standard_normal(rng, (int(bad.sum()),), dtype)
        bad = xp.abs(z) > 2.0
    return Tensor((z.reshape(shape) * stddev + mean).astype(dtype))


def randint(shape, minval, maxval, dtype="int32", seed=None):
    """Integers drawn uniformly from ``[minval, maxval)``."""
    name = standardize_dtype(dtype)
    if name is None or np.dtype(name).kind not in "iu":
        raise ValueError(f"`gpulayers.random.randint` requires an integer `dtype`. Received: dtype={dtype!r}")
    dtype = np.dtype(name)
    shape = _shape(shape)
    for value, arg in ((minval, "minval"), (maxval, "maxval")):
        if not _is_int(value):
            raise TypeError(f"Invalid type for `{arg}`: expected an int. Received: {arg}={value!r}")
    info = np.iinfo(dtype)
    if not info.min <= minval < maxval <= info.max + 1:
        raise ValueError(
            f"Invalid range for `randint`: expected {info.min} <= minval < maxval <= {info.max + 1} for {dtype.name}. "
            f"Received: minval={minval!r}, maxval={maxval!r}"
        )
    rng = _rng(seed)
    if hasattr(rng, "integers"):
        out = rng.integers(int(minval), int(maxval), size=shape, dtype=dtype)
    else:  # cupy RandomState
        out = rng.randint(int(minval), int(maxval), size=shape, dtype=dtype)
    return Tensor(out)


def categorical(logits, num_samples, dtype="int32", seed=None):
    """``num_samples`` class indices per row of the 2-D ``logits`` (unnormalised log-probabilities).

    Inverse-CDF sampling of ``softmax(logits)`` in float64; a class of
    probability 0 (logit ``-inf``) is never drawn.
    """
    x = convert_to_tensor(logits)
    if x.ndim != 2:
        raise ValueError(
            "`logits` should be a 2-D tensor with shape [batch_size, num_classes]. "
            f"Received: logits.shape={x.shape}"
        )
    if not _is_int(num_samples) or num_samples < 0:
        raise ValueError(f"Invalid value for `num_samples`: expected a non-negative int. Received: num_samples={num_samples!r}")
    name = standardize_dtype(dtype)
    if name is None or np.dtype(name).kind not in "iu":
        raise ValueError(f"`gpulayers.random.categorical` requires an integer `dtype`. Received: dtype={dtype!r}")
    ops = get_ops()
    xp = ops.xp
    z = x.data.astype(np.float64)
    batch, classes = z.shape
    if classes == 0:
        raise ValueError(f"Invalid value for `logits`: there are no classes to draw from. Received: logits.shape={x.shape}")
    e = xp.exp(z - z.max(axis=-1, keepdims=True))
    cdf = xp.cumsum(e, axis=-1)
    cdf = cdf / cdf[:, -1:]
    u = ops.uniform(_rng(seed), (batch, int(num_samples)), np.float64)
    idx = (cdf[:, None, :] <= u[..., None]).sum(axis=-1)
    return Tensor(xp.minimum(idx, classes - 1).astype(name))


def dropout(inputs, rate, noise_shape=None, seed=None):
    """Inverted dropout: each entry kept with probability ``1 - rate`` and scaled by ``1 / (1 - rate)``, else 0.

    ``noise_shape`` (None entries take the input's size) broadcasts one draw
    over the axes of size 1. Differentiable wrt ``inputs``: the same mask and
    scale apply to the gradient. float16 divides in float32 (as the layers do).
    """
    if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, (numbers.Real, np.number)) or not 0 <= rate <= 1:
        raise ValueError(f"Invalid value for `rate`: expected a float in [0, 1]. Received: rate={rate!r}")
    x = _float(inputs)
    rate = float(rate)
    if rate == 0.0:
        return x
    xp = get_ops().xp
    a = x.data
    if rate == 1.0:
        return record("dropout", xp.zeros_like(a), (x,), lambda g, needs: (xp.zeros_like(g),))
    if noise_shape is None:
        mask_shape = tuple(a.shape)
    else:
        try:
            dims = tuple(noise_shape)
        except TypeError:
            raise TypeError(f"Invalid type for `noise_shape`: expected a tuple. Received: noise_shape={noise_shape!r}") from None
        if len(dims) != a.ndim or any(
            d is not None and (not _is_int(d) or (d != 1 and d != n)) for d, n in zip(dims, a.shape)
        ):
            raise ValueError(
                "Invalid value for `noise_shape`: it must have the input's rank, each entry None, 1 or the input's size. "
                f"Received: noise_shape={noise_shape!r}, inputs.shape={tuple(a.shape)}"
            )
        mask_shape = tuple(n if d is None else int(d) for d, n in zip(dims, a.shape))
    keep = 1.0 - rate
    kept = get_ops().uniform(_rng(seed), mask_shape, a.dtype) < keep
    work = np.dtype("float32") if a.dtype.itemsize < 4 else a.dtype

    def scaled(v):
        with np.errstate(over="ignore"):  # a float16 result beyond 65504 is inf, as in Keras
            s = (v.astype(work, copy=False) / work.type(keep)).astype(v.dtype, copy=False)
        return xp.where(kept, s, v.dtype.type(0))

    return record("dropout", scaled(a), (x,), lambda g, needs: (scaled(g),))


def shuffle(x, axis=0, seed=None):
    """``x`` with its slices along ``axis`` in a random order (one permutation, as TensorFlow and JAX).

    Differentiable: the gradient goes back through the same permutation.
    """
    x = convert_to_tensor(x)
    if x.ndim == 0:
        raise ValueError("Invalid value for `x`: shuffle needs a tensor of rank >= 1. Received: a 0-d tensor")
    if not _is_int(axis) or not -x.ndim <= axis < x.ndim:
        raise ValueError(f"Invalid value for `axis`: out of range for a tensor of rank {x.ndim}. Received: axis={axis!r}")
    ops = get_ops()
    n = x.shape[int(axis)]
    order = ops.xp.argsort(ops.uniform(_rng(seed), (n,), np.float64), kind="stable")
    return numpy_ops.take(x, Tensor(order), axis=int(axis))
