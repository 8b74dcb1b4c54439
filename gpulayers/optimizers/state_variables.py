"""The Variables through which a program reads and sets an optimizer's state, as in Keras 3.

Keras 3 keeps an optimizer's step count, float learning rate and slots in
backend Variables, and programs use them as such:
``optimizer.learning_rate.assign(0.01)``, ``float(optimizer.learning_rate)``,
``int(optimizer.iterations)``, ``[v.numpy() for v in optimizer.variables]``.
gpulayers' optimizers keep that state as Python numbers and plain arrays (the
update rules and the fused GPU step work on those), so the classes here are
:class:`~gpulayers.variables.Variable` *views* of it: every read gives the
optimizer's current value and every assign changes the optimizer. A Variable
held across steps therefore stays current, as Keras's does.

Beyond Keras, the 0-d views also format (``f"{lr:.4f}"``), round and take
``bool()`` like the number they hold, so code written for a float learning
rate or an int step count keeps working.
"""

import numpy as np

from backends import array_namespace, get_ops
from gpulayers.autodiff import Tensor
from gpulayers.variables import Variable

__all__ = ["GlobalSlot", "LearningRateValue", "LearningRateVariable", "OptimizerVariable", "ScalarVariable",
           "SlotVariable"]


def _host(array):
    """A backend array as a NumPy array (CuPy's device -> host copy)."""
    getter = getattr(array, "get", None)
    return getter() if callable(getter) else np.asarray(array)


class _Number:
    """``format``, ``round`` and ``bool`` of a 0-d value as of the Python number it holds."""

    __slots__ = ()

    def __format__(self, spec):
        if not spec:
            return str(self)
        if self.ndim:
            raise TypeError(f"unsupported format string passed to {type(self).__name__}.__format__: "
                            f"the value has shape {self.shape}")
        return format(self.item(), spec)

    def __round__(self, ndigits=None):
        if self.ndim:
            raise TypeError(f"type {type(self).__name__} of shape {self.shape} doesn't define __round__")
        return round(self.item(), ndigits)

    def __bool__(self):
        if self.ndim:
            raise TypeError(f"The truth value of a {type(self).__name__} of shape {self.shape} is ambiguous.")
        return bool(self.item())


class LearningRateValue(_Number, Tensor):
    """The learning rate of a schedule or a callable at the current step: a 0-d floatx tensor (not settable)."""

    __slots__ = ()


class OptimizerVariable(_Number, Variable):
    """A non-trainable Variable whose value lives in an optimizer.

    ``read()`` gives the current backend array; ``write(array)`` stores an
    assigned one (already cast to this Variable's dtype and shape by
    :meth:`Variable.assign`, and never aliased). Subclasses give the two.
    """

    def __init__(self, name, path):
        # Variable._setup assigns `data` once: the view ignores it until set up.
        self._setup(None, name, False, None, None, True, "only_first_replica", "on_read")
        self.path = path
        self._ready = True

    @property
    def data(self):
        return self._read()

    @data.setter
    def data(self, array):
        if self.__dict__.get("_ready"):
            self._write(array)

    def _read(self):
        raise NotImplementedError

    def _write(self, array):
        raise NotImplementedError

    def __repr__(self):  # Keras's form, with the value
        return f"<Variable path={self.path}, shape={self.shape}, dtype={self.dtype}, value={self.numpy()}>"


class ScalarVariable(OptimizerVariable):
    """A 0-d view of a number an optimizer keeps: ``get()`` gives it, ``put(host_array)`` stores an assigned one.

    The backend array is made again only when the number (or the active
    backend) changed since the last read.
    """

    def __init__(self, name, path, dtype, get, put):
        self._dtype = np.dtype(dtype)
        self._get, self._put = get, put
        self._cache = None
        super().__init__(name, path)

    def _read(self):
        number, ops = self._get(), get_ops()
        cache = self._cache
        if cache is None or cache[1] is not ops or cache[0] != number or type(cache[0]) is not type(number):
            self._cache = cache = (number, ops, ops.asarray(np.asarray(number, dtype=self._dtype)))
        return cache[2]

    def _write(self, array):
        self._put(_host(array))


class LearningRateVariable(ScalarVariable):
    """Keras's ``learning_rate`` variable (floatx, shape ``()``) over an optimizer's float learning rate.

    ``assign(0.01)`` keeps the exact Python float for the updates (the value
    read back is its floatx rounding, as in Keras). Once the optimizer's rate
    becomes a schedule, this Variable is detached: it keeps its last value
    and assigning it no longer changes the optimizer, as Keras's untracked
    variable.
    """

    def __init__(self, optimizer, dtype):
        self._optimizer = optimizer
        self._detached_value = None
        super().__init__("learning_rate", f"{optimizer.name}/learning_rate", dtype,
                         self._current, self._set_float)

    def _current(self):
        return self._optimizer._learning_rate if self._optimizer is not None else self._detached_value

    def _set_float(self, value):
        rate = self._checked(value)
        if self._optimizer is not None:
            self._optimizer._learning_rate = rate
        else:
            self._detached_value = rate

    @staticmethod
    def _checked(value):
        from gpulayers.optimizers.base import Optimizer

        rate, _ = Optimizer._standardize_learning_rate(value)
        if not isinstance(rate, float):
            raise TypeError(
                f"Invalid type for `value`: a learning-rate Variable holds a float. Received: value={value!r}"
            )
        return rate

    def assign(self, value):
        """Set the learning rate (a float >= 0 or a 0-d array) and return the new value."""
        self._set_float(value)
        return Tensor(self.data)

    def _detach(self):
        self._detached_value, self._optimizer = self._current(), None


class SlotVariable(OptimizerVariable):
    """One state array (a slot) of one model variable, named as Keras names it.

    Keras 3.15: ``<optimizer>/<variable path with '/' as '_'>_<slot>``, e.g.
    ``adam/sequential_dense_kernel_momentum``.
    """

    def __init__(self, optimizer, variable, slot):
        self._optimizer, self._variable, self._slot = optimizer, variable, slot
        name = f"{str(getattr(variable, 'path', variable.name)).replace('/', '_')}_{slot}"
        super().__init__(name, f"{optimizer.name}/{name}")

    def _read(self):
        return self._optimizer._state_for(self._variable)[self._slot]

    def _write(self, array):
        like = self._variable.value
        xp = array_namespace(like)
        if array_namespace(array) is not xp:  # kept on the module (host or GPU) of the variable it serves
            array = xp.asarray(_host(array))
        self._optimizer._state_for(self._variable)[self._slot] = array.astype(like.dtype, copy=False)


class GlobalSlot:
    """An optimizer-wide 0-d state array (Nadam's ``u_product``) in an optimizer's ``_state_order``: the
    ``shape``, ``dtype`` and ``path`` a weights file's reader checks a dataset against."""

    shape = ()

    def __init__(self, name, dtype):
        self.name = self.path = name
        self.dtype = np.dtype(dtype)

    def __repr__(self):
        return f"<GlobalSlot {self.name!r} dtype={self.dtype}>"
