"""Variables: the state of layers, metrics and optimizers (``keras.Variable``).

A Variable is a :class:`~gpulayers.autodiff.Tensor` whose value can be
replaced: it takes part in arithmetic and ``gpulayers.ops`` like any tensor
(``layer.kernel * 2``, ``ops.sum(v)``, ``regularizer(v)``), and a trainable
one is a source of gradients. ``value`` is the current backend array;
``assign`` replaces it (never changing the old array, so values saved by a
recorded forward pass stay valid).
"""

import numpy as np

from backends import get_ops
from gpulayers import utils
from gpulayers.autodiff import Tensor, no_backward, unwrap

__all__ = ["Variable"]


def _dtype_name(dtype):
    try:
        return np.dtype(dtype).name
    except TypeError:
        raise ValueError(f"Invalid value for `dtype`: not a dtype. Received: dtype={dtype!r}") from None


class Variable(Tensor):
    """A named, assignable tensor (Keras 3's ``keras.Variable``).

    Args:
        initializer: An initial value (array-like; its shape is the
            variable's), or an initializer (name, callable or
            ``gpulayers.initializers`` object) called with ``shape``.
        shape: The shape, required with an initializer.
        dtype: The dtype (default: the value's dtype, else ``floatx()``).
        trainable: Whether training updates it (and gradients reach it).
        name: A name without ``/`` (default ``variable``, ``variable_1``...).
        regularizer, constraint: A penalty added to the layer's losses, and
            a projection applied after each optimizer update.
        autocast, aggregation, synchronization: Keras's arguments, accepted
            for compatibility (gpulayers runs one dtype, one device).

    Example:
        >>> v = Variable(np.ones((2, 2)), name="w")
        >>> v.assign_add(np.ones((2, 2)))
        >>> v.numpy()
        array([[2., 2.], [2., 2.]], dtype=float32)
    """

    def __init__(
        self,
        initializer,
        shape=None,
        dtype=None,
        trainable=True,
        autocast=True,
        aggregation="none",
        synchronization="auto",
        name=None,
        regularizer=None,
        constraint=None,
    ):
        if name is None:
            name = utils.unique_name("variable")
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"Invalid value for `name`: expected a non-empty string without '/'. Received: name={name!r}")
        if aggregation not in (None, "none", "mean", "sum", "only_first_replica"):
            raise ValueError(
                "Invalid value for `aggregation`: expected one of None, 'none', 'mean', 'sum', "
                f"'only_first_replica'. Received: aggregation={aggregation!r}"
            )
        from gpulayers import config, initializers  # initializers import this package's layers indirectly

        if isinstance(initializer, (str, dict)) or (callable(initializer) and not hasattr(initializer, "shape")):
            if shape is None:
                raise ValueError(
                    "When creating a Variable from an initializer, the `shape` argument should be specified. "
                    f"Received: initializer={initializer!r} and shape=None"
                )
            dtype = _dtype_name(dtype or config.floatx())
            fn = initializers.get(initializer, argument="initializer")
            shape = tuple(int(d) for d in shape)
            host = np.asarray(fn(shape, dtype=dtype), dtype=dtype)
            if host.shape != shape:
                raise ValueError(
                    f"Initializer {initializer!r} returned shape {host.shape} for variable '{name}', expected {shape}"
                )
            value = get_ops().asarray(host)
        else:
            raw = unwrap(initializer)
            if dtype is None:
                kind = getattr(getattr(raw, "dtype", None), "kind", None)
                dtype = raw.dtype if kind is not None else np.asarray(raw).dtype
                if np.dtype(dtype) == np.float64 and kind is None:  # a Python float
                    dtype = config.floatx()
            value = get_ops().asarray(raw, dtype=_dtype_name(dtype))
            if value is raw:
                value = value.copy()  # never alias the caller's array
            if shape is not None and tuple(value.shape) != tuple(shape):
                raise ValueError(
                    f"Invalid value for `shape`: the initial value has shape {tuple(value.shape)}. Received: shape={tuple(shape)}"
                )
        self._setup(value, name, trainable, regularizer, constraint, autocast, aggregation, synchronization)

    def _setup(self, value, name, trainable, regularizer, constraint, autocast, aggregation, synchronization):
        Tensor.__init__(self, value)
        self.name = name
        self.path = name
        self._trainable = bool(trainable)
        self.regularizer = regularizer
        self.constraint = constraint
        self.autocast = bool(autocast)
        self.aggregation = aggregation or "none"
        self.synchronization = synchronization or "none"
        self.overwrite_with_gradient = False

    @classmethod
    def from_array(cls, array, name, trainable=True, regularizer=None, constraint=None, autocast=True,
                   aggregation="none", synchronization="auto"):
        """A Variable owning ``array`` (a backend array nobody else holds: it is not copied)."""
        variable = cls.__new__(cls)
        variable._setup(array, name, trainable, regularizer, constraint, autocast, aggregation, synchronization)
        return variable

    # A Variable keeps its value in Tensor's ``data`` slot; ``value`` is the Keras name.
    @property
    def value(self):
        """The current value: an array of the active backend."""
        return self.data

    @value.setter
    def value(self, array):
        self.data = array

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        self._trainable = bool(value)

    @property
    def requires_grad(self):
        return (self._trainable or self.watched) and self.data.dtype.kind in "fc"

    @property
    def dtype(self):
        """The dtype's name, e.g. ``'float32'`` (as Keras's variables)."""
        return self.data.dtype.name

    def numpy(self):
        return get_ops().to_numpy(self.data) if not isinstance(self.data, np.ndarray) else self.data.copy()

    def __bool__(self):
        raise TypeError("A Variable cannot be used as a boolean.")

    def assign(self, value):
        """Replace the value (same shape; cast to this variable's dtype). Returns the new value."""
        raw = unwrap(value)
        new = get_ops().asarray(raw, dtype=self.data.dtype)
        if tuple(new.shape) != tuple(self.data.shape):
            raise ValueError(
                f"Invalid shape for `value` of variable '{self.path}': expected {tuple(self.data.shape)}. "
                f"Received: value.shape={tuple(new.shape)}"
            )
        if new is raw:
            # Never alias another array, a Tensor's or another Variable's included: the GPU optimizer
            # updates variables in place, and the caller may change theirs later.
            new = new.copy()
        self.data = new
        return Tensor(new)

    def assign_add(self, value):
        with no_backward():
            return self.assign(self + value)

    def assign_sub(self, value):
        with no_backward():
            return self.assign(self - value)

    def __repr__(self):
        return f"<Variable path={self.path!r} shape={self.shape} dtype={self.dtype} trainable={self.trainable}>"
