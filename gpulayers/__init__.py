"""gpulayers: Keras-compatible neural-network layers on CuPy (GPU) and NumPy (CPU).

    >>> import gpulayers
    >>> gpulayers.get_backend()          # 'cupy' with a usable GPU, else 'numpy'
    >>> gpulayers.set_backend("numpy")   # or set GPULAYERS_BACKEND=numpy
"""

from backends import get_backend, set_backend
from gpulayers import (
    activations,
    autodiff,
    backend,
    callbacks,
    config,
    constraints,
    datasets,
    dtype_policies,
    initializers,
    layers,
    losses,
    metrics,
    mixed_precision,
    models,
    ops,
    optimizers,
    random,
    regularizers,
    saving,
    utils,
)
from gpulayers.autodiff import GradientTape, Tensor, no_backward
from gpulayers.dtype_policies import DTypePolicy, FloatDTypePolicy
from gpulayers.initializers import Initializer
from gpulayers.layers import Input, InputLayer, InputSpec, Layer
from gpulayers.losses import Loss
from gpulayers.metrics import Metric
from gpulayers.models import Functional, Model, Sequential
from gpulayers.ops.operation import Operation
from gpulayers.optimizers import Optimizer
from gpulayers.regularizers import Regularizer
from gpulayers.symbolic import KerasTensor
from gpulayers.variables import Variable
from gpulayers.utils import clear_session, set_random_seed

__version__ = "0.1.0"


def version():
    """gpulayers' version string (``keras.version()`` gives Keras's)."""
    return __version__


__all__ = [
    "DTypePolicy",
    "FloatDTypePolicy",
    "Functional",
    "GradientTape",
    "Initializer",
    "Input",
    "InputLayer",
    "InputSpec",
    "KerasTensor",
    "Layer",
    "Loss",
    "Metric",
    "Model",
    "Operation",
    "Optimizer",
    "Regularizer",
    "Sequential",
    "Tensor",
    "Variable",
    "__version__",
    "activations",
    "autodiff",
    "backend",
    "callbacks",
    "clear_session",
    "config",
    "constraints",
    "datasets",
    "dtype_policies",
    "get_backend",
    "initializers",
    "layers",
    "losses",
    "metrics",
    "mixed_precision",
    "models",
    "no_backward",
    "ops",
    "optimizers",
    "random",
    "regularizers",
    "saving",
    "set_backend",
    "set_random_seed",
    "utils",
    "version",
]
