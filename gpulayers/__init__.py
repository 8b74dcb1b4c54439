"""gpulayers: Keras-compatible neural-network layers on CuPy (GPU) and NumPy (CPU).

    >>> import gpulayers
    >>> gpulayers.get_backend()          # 'cupy' with a usable GPU, else 'numpy'
    >>> gpulayers.set_backend("numpy")   # or set GPULAYERS_BACKEND=numpy
"""

from backends import get_backend, set_backend
from gpulayers import (
    activations,
    callbacks,
    config,
    constraints,
    datasets,
    initializers,
    layers,
    losses,
    metrics,
    models,
    optimizers,
    regularizers,
    utils,
)
from gpulayers.models import Sequential
from gpulayers.utils import clear_session, set_random_seed

__version__ = "0.1.0"

__all__ = [
    "Sequential",
    "activations",
    "callbacks",
    "clear_session",
    "config",
    "constraints",
    "datasets",
    "get_backend",
    "initializers",
    "layers",
    "losses",
    "metrics",
    "models",
    "optimizers",
    "regularizers",
    "set_backend",
    "set_random_seed",
    "utils",
]
