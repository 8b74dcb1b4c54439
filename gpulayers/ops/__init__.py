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

import sys as _sys  # noqa: E402

from gpulayers import autodiff as _autodiff  # noqa: E402

_autodiff._ops = _sys.modules[__name__]  # the Tensor operators (x + y, x[i], np.exp(x)) call these ops
