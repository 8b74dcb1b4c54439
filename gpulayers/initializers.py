"""Weight initializers with Keras 3's classes, arguments, defaults and configs.

An initializer is called as ``init(shape, dtype=None)`` and returns a NumPy
array on the host (``dtype`` defaults to :func:`gpulayers.config.floatx`);
layers move it to the device.

Seeds: an int ``seed`` gives the same values on every call, as in Keras 3.
``seed=None`` draws a fresh seed from :func:`gpulayers.utils.host_rng` on
each call, so :func:`gpulayers.utils.set_random_seed` makes a whole program
reproducible while two layers sharing one unseeded initializer still get
different weights.

Example:
    >>> init = get("glorot_uniform", argument="kernel_initializer")
    >>> w = init((64, 32))          # float32 numpy array
    >>> serialize(init)["class_name"]
    'GlorotUniform'
"""

import math
import numbers

import numpy as np

from backends import get_ops
from gpulayers import config, utils
from gpulayers.random import SeedGenerator
from gpulayers.registry import Registry

__all__ = [
    "Constant",
    "GlorotNormal",
    "GlorotUniform",
    "HeNormal",
    "HeUniform",
    "Identity",
    "Initializer",
    "LecunNormal",
    "LecunUniform",
    "Ones",
    "Orthogonal",
    "RandomNormal",
    "RandomUniform",
    "TruncatedNormal",
    "VarianceScaling",
    "Zeros",
    "compute_fans",
    "deserialize",
    "get",
    "serialize",
]

# Standard deviation of a standard normal truncated to [-2, 2]; VarianceScaling
# divides by it so the truncated draw has the intended variance (Keras's value).
TRUNCATED_STDDEV = 0.87962566103423978


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _check_real(value, argument, minimum=None):
    if utils.finite_real(value) is None or (minimum is not None and value < minimum):
        need = "a finite number" if minimum is None else f"a finite number >= {minimum}"
        raise ValueError(f"Invalid value for `{argument}`: expected {need}. Received: {argument}={value!r}")
    # numpy scalars become Python numbers so configs stay JSON-friendly.
    return value.item() if isinstance(value, np.generic) else value


def _check_seed(seed):
    if seed is None or isinstance(seed, SeedGenerator):  # a generator: new values at each call, as Keras
        return seed
    if isinstance(seed, dict) and seed.get("class_name") == "SeedGenerator" and isinstance(seed.get("config"), dict):
        return SeedGenerator.from_config(dict(seed["config"]))  # the form get_config writes
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(
            f"Invalid value for `seed`: expected None, a non-negative int or a SeedGenerator. Received: seed={seed!r}"
        )
    return int(seed)


def _check_shape(shape):
    try:
        dims = tuple(shape)
    except TypeError:
        dims = None
    if dims is None or not all(isinstance(d, (int, np.integer)) and not isinstance(d, (bool, np.bool_))
                               and d >= 0 for d in dims):
        raise ValueError(
            f"Invalid value for `shape`: expected a tuple of non-negative ints. Received: shape={shape!r}"
        )
    return tuple(int(d) for d in dims)


def _dtype(dtype, floating=False):
    try:
        dt = np.dtype(config.floatx() if dtype is None else dtype)
    except TypeError:
        dt = None
    if dt is None or (floating and not np.issubdtype(dt, np.floating)):
        need = "a float dtype" if floating else "a numpy dtype"
        raise ValueError(f"Invalid value for `dtype`: expected {need}. Received: dtype={dtype!r}")
    return dt


def _check_axes(value, argument):
    """None, or a list of int axes (the form Keras keeps after loading a config)."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(
            f"Invalid value for `{argument}`: expected None or a list of ints. Received: {argument}={value!r}"
        )
    items = list(value)
    if not all(isinstance(a, (int, np.integer)) and not isinstance(a, (bool, np.bool_)) for a in items):
        raise ValueError(
            f"Invalid value for `{argument}`: expected None or a list of ints. Received: {argument}={value!r}"
        )
    return [int(a) for a in items]


def compute_fans(shape, input_axes=None, output_axes=None):
    """Keras's ``(fan_in, fan_out)`` for a weight shape.

    With both ``input_axes`` and ``output_axes`` given, the fans are the
    products of the sizes on those axes (negative axes count from the end).
    Otherwise, as in Keras (which ignores one list given alone): rank 0:
    (1, 1); rank 1: (n, n); rank 2: (rows, cols); higher ranks are
    convolution kernels ``(*spatial, in, out)`` whose spatial size multiplies
    both fans.

    Example:
        >>> compute_fans((3, 3, 16, 32))
        (144, 288)
        >>> compute_fans((4, 8, 16), input_axes=[0], output_axes=[1, 2])
        (4, 128)
    """
    shape = tuple(shape)
    if input_axes is not None and output_axes is not None:
        fans = []
        for argument, axes in (("input_axes", input_axes), ("output_axes", output_axes)):
            product = 1
            for axis in axes:
                if not -len(shape) <= axis < len(shape):
                    raise ValueError(
                        f"Invalid value for `{argument}`: axis {axis} is out of range for a weight of shape "
                        f"{shape}. Received: {argument}={list(axes)!r}"
                    )
                product *= shape[axis]
            fans.append(int(product))
        return fans[0], fans[1]
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return int(shape[0]), int(shape[0])
    if len(shape) == 2:
        return int(shape[0]), int(shape[1])
    receptive = math.prod(shape[:-2])
    return int(shape[-2] * receptive), int(shape[-1] * receptive)


def _rng(seed):
    if isinstance(seed, SeedGenerator):
        seed = seed.next()
    return np.random.default_rng(utils.derive_seed(seed))


def _truncated_standard_normal(rng, size):
    """Standard normal draws, each one outside [-2, 2] redrawn until inside."""
    z = rng.standard_normal(size)
    bad = np.flatnonzero(np.abs(z) > 2.0)
    while bad.size:
        z[bad] = rng.standard_normal(bad.size)
        bad = bad[np.abs(z[bad]) > 2.0]
    return z


class Initializer:
    """Base class: subclasses implement ``__call__(shape, dtype=None)``.

    ``get_config`` returns the constructor arguments; ``from_config`` calls
    the constructor with them.
    """

    def __call__(self, shape, dtype=None):
        raise NotImplementedError("Initializer subclasses must implement `__call__(shape, dtype=None)`.")

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def clone(self):
        return self.__class__.from_config(self.get_config())

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Zeros(Initializer):
    """All zeros. Example: ``Zeros()((2, 3))``."""

    def __call__(self, shape, dtype=None):
        return np.zeros(_check_shape(shape), dtype=_dtype(dtype))


class Ones(Initializer):
    """All ones. Example: ``Ones()((2, 3))``."""

    def __call__(self, shape, dtype=None):
        return np.ones(_check_shape(shape), dtype=_dtype(dtype))


class Constant(Initializer):
    """Every entry equal to ``value``: a real scalar, or an array (a list or NumPy array) that broadcasts to
    the shape asked for, as Keras 3.15's (``value * ones(shape)``).

    Args:
        value: a real scalar or an array of reals.

    Example:
        >>> Constant(0.5)((2,), "float32")
        array([0.5, 0.5], dtype=float32)
        >>> Constant([1.0, 2.0])((2, 2), "float32")
        array([[1., 2.],
               [1., 2.]], dtype=float32)
    """

    def __init__(self, value=0.0):
        if isinstance(value, (list, tuple, np.ndarray)):
            array = np.asarray(value)
            if array.dtype.kind not in "biuf" or not np.isfinite(array.astype(np.float64)).all():
                raise ValueError(f"Invalid value for `value`: expected finite real numbers. Received: value={value!r}")
            self.value = array if isinstance(value, np.ndarray) else value
        elif not _is_real(value) or (isinstance(value, numbers.Integral) and utils.finite_real(value) is None):
            raise ValueError(f"Invalid value for `value`: expected a real scalar or an array. Received: value={value!r}")
        else:
            self.value = value.item() if isinstance(value, np.generic) else value

    def __call__(self, shape, dtype=None):
        shape, dtype = _check_shape(shape), _dtype(dtype)
        value = np.asarray(self.value, dtype=dtype)
        try:
            return np.array(np.broadcast_to(value, shape))
        except ValueError:
            raise ValueError(
                f"Incompatible shapes for broadcasting: Constant's value of shape {value.shape} cannot fill a "
                f"weight of shape {shape}"
            ) from None

    def get_config(self):
        if isinstance(self.value, np.ndarray):  # Keras's form of a NumPy array in a config
            return {"value": {"class_name": "__numpy__",
                              "config": {"value": self.value.tolist(), "dtype": self.value.dtype.name}}}
        return {"value": self.value}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        value = config.get("value", 0.0)
        if isinstance(value, dict) and value.get("class_name") == "__numpy__" and isinstance(value.get("config"), dict):
            inner = value["config"]
            value = np.asarray(inner.get("value"), dtype=_array_dtype(inner.get("dtype")))
        config["value"] = value
        return cls(**config)


def _array_dtype(name):
    """A real NumPy dtype named in a config (``"float64"``...); anything else refused."""
    try:
        dtype = np.dtype(name)
    except (TypeError, ValueError):
        dtype = None
    if dtype is None or dtype.kind not in "biuf":
        raise ValueError(f"Invalid value for `value`: an array of dtype {name!r} is not a real array")
    return dtype


class RandomInitializer(Initializer):
    """Base for random initializers: holds and validates ``seed``."""

    def __init__(self, seed=None):
        self.seed = _check_seed(seed)

    def get_config(self):
        return {"seed": _seed_config(self.seed)}


def _seed_config(seed):
    if isinstance(seed, SeedGenerator):  # Keras's entry for it
        return {"module": "keras.random", "class_name": "SeedGenerator", "config": seed.get_config(),
                "registered_name": None}
    return seed


class RandomNormal(RandomInitializer):
    """Normal draws with ``mean`` and ``stddev``.

    Args:
        mean: mean of the draws.
        stddev: standard deviation (>= 0).
        seed: None or a non-negative int.

    Example:
        >>> RandomNormal(stddev=1.0, seed=1)((2, 2)).shape
        (2, 2)
    """

    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean = _check_real(mean, "mean")
        self.stddev = _check_real(stddev, "stddev", minimum=0)
        super().__init__(seed)

    def __call__(self, shape, dtype=None):
        shape, dt = _check_shape(shape), _dtype(dtype, floating=True)
        z = _rng(self.seed).standard_normal(shape)
        return (self.mean + self.stddev * z).astype(dt)

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "stddev": self.stddev}


class TruncatedNormal(RandomInitializer):
    """Normal draws, redrawn when more than 2 ``stddev`` from ``mean``.

    Example:
        >>> w = TruncatedNormal(stddev=1.0, seed=0)((1000,))
        >>> bool(abs(w).max() <= 2.0)
        True
    """

    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean = _check_real(mean, "mean")
        self.stddev = _check_real(stddev, "stddev", minimum=0)
        super().__init__(seed)

    def __call__(self, shape, dtype=None):
        shape, dt = _check_shape(shape), _dtype(dtype, floating=True)
        z = _truncated_standard_normal(_rng(self.seed), math.prod(shape)).reshape(shape)
        return (self.mean + self.stddev * z).astype(dt)

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "stddev": self.stddev}


class RandomUniform(RandomInitializer):
    """Uniform draws in ``[minval, maxval)``.

    Example:
        >>> w = RandomUniform(-1.0, 1.0, seed=0)((4,))
    """

    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        self.minval = _check_real(minval, "minval")
        self.maxval = _check_real(maxval, "maxval")
        if self.maxval < self.minval:
            raise ValueError(
                f"Invalid value for `maxval`: expected maxval >= minval={minval!r}. Received: maxval={maxval!r}"
            )
        super().__init__(seed)

    def __call__(self, shape, dtype=None):
        shape, dt = _check_shape(shape), _dtype(dtype, floating=True)
        return _rng(self.seed).uniform(self.minval, self.maxval, shape).astype(dt)

    def get_config(self):
        return {**super().get_config(), "minval": self.minval, "maxval": self.maxval}


_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform")


class VarianceScaling(RandomInitializer):
    """Draws whose variance is ``scale / n``, ``n`` a fan of the shape.

    ``n`` is fan_in, fan_out or their average (``mode``; at least 1). Normal
    distributions use ``stddev = sqrt(scale / n)`` (divided by
    ``TRUNCATED_STDDEV`` when truncated at 2 stddev); ``"uniform"`` draws in
    ``[-limit, limit]`` with ``limit = sqrt(3 * scale / n)``.

    Args:
        scale: positive factor.
        mode: "fan_in", "fan_out" or "fan_avg".
        distribution: "truncated_normal", "untruncated_normal" or "uniform"
            (case-insensitive; "normal" means "truncated_normal", as in Keras).
        seed: None or a non-negative int.
        input_axes, output_axes: None (default) or lists of int axes: with
            both given, fan_in and fan_out are the products of the shape's
            sizes on those axes (see :func:`compute_fans`); as in Keras, one
            given without the other has no effect.

    Example:
        >>> VarianceScaling(2.0, "fan_in", "uniform", seed=3)((256, 128)).std()  # ~ sqrt(2/256)
    """

    def __init__(
        self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None, input_axes=None, output_axes=None
    ):
        if utils.finite_real(scale) is None or scale <= 0:
            raise ValueError(f"Invalid value for `scale`: expected a positive number. Received: scale={scale!r}")
        if mode not in _MODES:
            raise ValueError(f"Invalid value for `mode`: expected one of {_MODES}. Received: mode={mode!r}")
        dist = distribution.lower() if isinstance(distribution, str) else distribution
        dist = "truncated_normal" if dist == "normal" else dist
        if dist not in _DISTRIBUTIONS:
            raise ValueError(
                f"Invalid value for `distribution`: expected one of {_DISTRIBUTIONS}. "
                f"Received: distribution={distribution!r}"
            )
        self.scale = scale.item() if isinstance(scale, np.generic) else scale
        self.mode = mode
        self.distribution = dist
        self.input_axes = _check_axes(input_axes, "input_axes")
        self.output_axes = _check_axes(output_axes, "output_axes")
        super().__init__(seed)

    def __call__(self, shape, dtype=None):
        shape, dt = _check_shape(shape), _dtype(dtype, floating=True)
        fan_in, fan_out = compute_fans(shape, self.input_axes, self.output_axes)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        variance = self.scale / max(1.0, n)
        rng = _rng(self.seed)
        if self.distribution == "truncated_normal":
            stddev = math.sqrt(variance) / TRUNCATED_STDDEV
            values = stddev * _truncated_standard_normal(rng, math.prod(shape)).reshape(shape)
        elif self.distribution == "untruncated_normal":
            values = math.sqrt(variance) * rng.standard_normal(shape)
        else:
            limit = math.sqrt(3.0 * variance)
            values = rng.uniform(-limit, limit, shape)
        return values.astype(dt)

    def _axes_config(self):
        return {
            "input_axes": None if self.input_axes is None else list(self.input_axes),
            "output_axes": None if self.output_axes is None else list(self.output_axes),
        }

    def get_config(self):
        return {
            **super().get_config(),
            "scale": self.scale,
            "mode": self.mode,
            "distribution": self.distribution,
            **self._axes_config(),
        }


class _FixedVarianceScaling(VarianceScaling):
    """A VarianceScaling preset: its arguments (and config) are ``seed``, ``input_axes`` and ``output_axes``."""

    _preset = {}

    def __init__(self, seed=None, input_axes=None, output_axes=None):
        super().__init__(seed=seed, input_axes=input_axes, output_axes=output_axes, **self._preset)

    def get_config(self):
        return {"seed": _seed_config(self.seed), **self._axes_config()}


class GlorotUniform(_FixedVarianceScaling):
    """Uniform in ``[-limit, limit]``, ``limit = sqrt(6 / (fan_in + fan_out))``."""

    _preset = {"scale": 1.0, "mode": "fan_avg", "distribution": "uniform"}


class GlorotNormal(_FixedVarianceScaling):
    """Truncated normal with ``stddev = sqrt(2 / (fan_in + fan_out))``."""

    _preset = {"scale": 1.0, "mode": "fan_avg", "distribution": "truncated_normal"}


class HeUniform(_FixedVarianceScaling):
    """Uniform in ``[-limit, limit]``, ``limit = sqrt(6 / fan_in)``."""

    _preset = {"scale": 2.0, "mode": "fan_in", "distribution": "uniform"}


class HeNormal(_FixedVarianceScaling):
    """Truncated normal with ``stddev = sqrt(2 / fan_in)``."""

    _preset = {"scale": 2.0, "mode": "fan_in", "distribution": "truncated_normal"}


class LecunUniform(_FixedVarianceScaling):
    """Uniform in ``[-limit, limit]``, ``limit = sqrt(3 / fan_in)``."""

    _preset = {"scale": 1.0, "mode": "fan_in", "distribution": "uniform"}


class LecunNormal(_FixedVarianceScaling):
    """Truncated normal with ``stddev = sqrt(1 / fan_in)``."""

    _preset = {"scale": 1.0, "mode": "fan_in", "distribution": "truncated_normal"}


class Orthogonal(RandomInitializer):
    """A (semi-)orthogonal matrix times ``gain``, as Keras builds it.

    The shape is flattened to ``(prod(shape[:-1]), shape[-1])``; the Q factor
    of a normal matrix (sign-corrected by R's diagonal) fills it, with
    orthonormal columns when it is tall and orthonormal rows when wide.

    Args:
        gain: multiplicative factor.
        seed: None or a non-negative int.

    Example:
        >>> q = Orthogonal(seed=0)((4, 4), "float64")
        >>> np.allclose(q.T @ q, np.eye(4))
        True
    """

    def __init__(self, gain=1.0, seed=None):
        self.gain = _check_real(gain, "gain")
        super().__init__(seed)

    def __call__(self, shape, dtype=None):
        shape, dt = _check_shape(shape), _dtype(dtype, floating=True)
        if len(shape) < 2:
            raise ValueError(
                f"Invalid value for `shape`: Orthogonal needs a shape of rank 2 or more. Received: shape={shape}"
            )
        rows, cols = math.prod(shape[:-1]), shape[-1]
        a = _rng(self.seed).standard_normal((max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        # Fix each column's sign so the result is uniform over orthogonal matrices.
        q = q * np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        # C order (the transpose above is not): the layers' hot paths and the saved files read it as laid out.
        return np.ascontiguousarray((self.gain * q.reshape(shape)).astype(dt))

    def get_config(self):
        return {**super().get_config(), "gain": self.gain}


class Identity(Initializer):
    """``gain`` times the identity matrix (``eye(rows, cols)``); 2-D shapes only.

    Example:
        >>> Identity(2.0)((2, 3), "float32")
        array([[2., 0., 0.],
               [0., 2., 0.]], dtype=float32)
    """

    def __init__(self, gain=1.0):
        self.gain = _check_real(gain, "gain")

    def __call__(self, shape, dtype=None):
        shape, dt = _check_shape(shape), _dtype(dtype)
        if len(shape) != 2:
            raise ValueError(
                f"Invalid value for `shape`: Identity only makes 2-D matrices. Received: shape={shape}"
            )
        return (self.gain * np.eye(*shape)).astype(dt)

    def get_config(self):
        return {"gain": self.gain}


_CLASSES = (Zeros, Ones, Constant, RandomNormal, RandomUniform, TruncatedNormal, VarianceScaling,
            GlorotUniform, GlorotNormal, HeUniform, HeNormal, LecunUniform, LecunNormal, Orthogonal, Identity)
# Keras 3 resolves the class name, its snake_case form and a few aliases.
_BY_NAME = {cls.__name__: cls for cls in _CLASSES}
_BY_NAME.update({utils.to_snake_case(cls.__name__): cls for cls in _CLASSES})
_BY_NAME.update({
    "normal": RandomNormal,
    "uniform": RandomUniform,
    "one": Ones,
    "zero": Zeros,
    "IdentityInitializer": Identity,
    "OrthogonalInitializer": Orthogonal,
})
KERAS_MODULE = "keras.initializers"
_REGISTRY = Registry("initializer", KERAS_MODULE, _BY_NAME, _CLASSES, Initializer)


def deserialize(config, argument="initializer"):
    """Build a built-in initializer from a name or a Keras 3 config dict.

    Only this module's classes are ever instantiated: a config naming another
    module or an unknown class raises ValueError (nothing is imported).

    Args:
        config: ``"he_normal"`` or ``{"module": "keras.initializers",
            "class_name": "HeNormal", "config": {"seed": None}, ...}``.
        argument: name used in error messages.

    Example:
        >>> deserialize({"class_name": "Constant", "config": {"value": 2.0}})
        Constant(value=2.0)
    """
    return _REGISTRY.deserialize(config, argument)


def serialize(initializer):
    """Keras 3's dict for an initializer (None stays None).

    Example:
        >>> data = serialize(GlorotUniform(seed=1))
        >>> data["module"], data["class_name"], data["registered_name"]
        ('keras.initializers', 'GlorotUniform', None)
        >>> data["config"]
        {'seed': 1, 'input_axes': None, 'output_axes': None}
    """
    return _REGISTRY.serialize(initializer)


def get(identifier, argument="initializer"):
    """Resolve an initializer identifier.

    Args:
        identifier: None (returns None), a name (``"glorot_uniform"`` or
            ``"GlorotUniform"``), a Keras config dict, an Initializer instance
            or subclass, a callable ``(shape, dtype) -> array``, or an array
            (NumPy or a tensor): the weight's values, as ``Constant(array)``
            (which broadcasts it to the weight's shape).
        argument: the caller's argument name, used in error messages.

    Example:
        >>> get("he_normal", argument="kernel_initializer")
        HeNormal(seed=None, input_axes=None, output_axes=None)
    """
    from gpulayers.autodiff import Tensor  # imported on use: autodiff is not needed to build the registry

    if isinstance(identifier, (np.ndarray, np.generic, Tensor, get_ops().xp.ndarray)):
        return _values_initializer(identifier, argument)
    return _REGISTRY.get(identifier, argument)


def _values_initializer(values, argument):
    """An array given as an initializer: Constant(array), so the layer's config saves and loads (Keras 3.15
    wraps it in a function whose config neither Keras nor gpulayers can load back)."""
    values = np.array(get_ops().to_numpy(getattr(values, "data", values)))
    if values.dtype.kind not in "biuf":
        raise TypeError(f"Invalid type for `{argument}`: an array of dtype {values.dtype} is not a real array")
    return Constant(values)
