"""``keras.backend``: the settings and session helpers Keras 3 keeps there (its other backend functions are
``gpulayers.ops``).

    >>> gpulayers.backend.epsilon()
    1e-07
"""

from gpulayers.config import backend, epsilon, floatx, image_data_format, set_epsilon, set_floatx
from gpulayers.config import set_image_data_format
from gpulayers.symbolic import is_keras_tensor
from gpulayers.utils import clear_session

__all__ = [
    "backend",
    "clear_session",
    "epsilon",
    "floatx",
    "image_data_format",
    "is_keras_tensor",
    "set_epsilon",
    "set_floatx",
    "set_image_data_format",
]
