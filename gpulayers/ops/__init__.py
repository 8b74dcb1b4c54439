"""``gpulayers.ops``: Keras 3's ``keras.ops``, differentiable on gpulayers' tape.

The functions have Keras's names, arguments and broadcasting and run on the
active backend (numpy or cupy). Families, as in Keras: ``core``
(conversion, casting, shapes), ``numpy`` (the NumPy-like API), ``math``
(erf, logsumexp, top_k, norms, segment reductions) and ``nn`` (activations,
convolution, pooling, normalization, cross-entropies). ``numpy`` and ``nn``
are namespaces over modules by kind (``elementwise``, ``reductions``,
``products``, ``shapes``; ``activations``, ``crossentropy``, ``convolution``).
"""

from gpulayers.ops.core import *  # noqa: F401,F403
from gpulayers.ops.core import __all__ as _core_all
from gpulayers.ops.math import *  # noqa: F401,F403
from gpulayers.ops.math import __all__ as _math_all
from gpulayers.ops.nn import *  # noqa: F401,F403
from gpulayers.ops.nn import __all__ as _nn_all
from gpulayers.ops.numpy import *  # noqa: F401,F403
from gpulayers.ops.numpy import __all__ as _numpy_all

__all__ = sorted(set(_core_all) | set(_numpy_all) | set(_math_all) | set(_nn_all))

# On KerasTensors (a functional model being defined) each op adds an Operation to the graph (Keras 3's
# symbolic ops); on tensors and arrays it runs as it is. shape, dtype and the conversions to host and
# type checks answer for a KerasTensor directly.
from gpulayers import serialization as _serialization  # noqa: E402
from gpulayers.ops import operation as _operation  # noqa: E402
from gpulayers.symbolic import KerasTensor as _KerasTensor  # noqa: E402

from gpulayers.ops import core as _core_module, math as _math_module, nn as _nn_module  # noqa: E402
from gpulayers.ops import numpy as _numpy_module  # noqa: E402

_DIRECT = {"convert_to_numpy", "is_tensor", "shape", "dtype"}
_WRAPPED = {}  # id of a function -> its dispatching version (aliases such as swish/silu stay one object)
for _name in __all__:
    if _name not in _DIRECT:
        _plain = globals()[_name]
        _wrapped = _WRAPPED.get(id(_plain))
        if _wrapped is None:
            _wrapped = _WRAPPED[id(_plain)] = _operation.symbolic_dispatch(_name, _plain)
        globals()[_name] = _wrapped
        for _family, _namespace in (("core", _core_module), ("numpy", _numpy_module), ("math", _math_module),
                                    ("nn", _nn_module)):  # keras.ops.nn.relu too
            if getattr(_namespace, _name, None) is _plain:
                setattr(_namespace, _name, _wrapped)
                if _wrapped.operation_class.keras_module is None:  # what a config names: Keras's op module
                    _wrapped.operation_class.keras_module = f"keras.src.ops.{_family}"
                    _serialization.register_operation(_wrapped.operation_class)
_core_shape, _core_dtype, _core_is_tensor = shape, dtype, is_tensor  # noqa: F405


def shape(x):  # noqa: F811
    """The shape of ``x`` as a tuple (None for an unknown size of a KerasTensor)."""
    return tuple(x.shape) if isinstance(x, _KerasTensor) else _core_shape(x)


def dtype(x):  # noqa: F811
    """The dtype name of ``x`` (``'float32'``...)."""
    return x.dtype if isinstance(x, _KerasTensor) else _core_dtype(x)


def is_tensor(x):  # noqa: F811
    """Whether ``x`` is a backend tensor (a symbolic KerasTensor is not, as in Keras)."""
    return False if isinstance(x, _KerasTensor) else _core_is_tensor(x)


Operation = _operation.Operation

import sys as _sys  # noqa: E402

from gpulayers import autodiff as _autodiff  # noqa: E402

_autodiff._ops = _sys.modules[__name__]  # the Tensor operators (x + y, x[i], np.exp(x)) call these ops
