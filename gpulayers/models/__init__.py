"""Models: ``Model`` (functional and subclassed), ``Sequential``, and loading a saved model."""

from gpulayers import serialization
from gpulayers.models.model import Model
from gpulayers.models.functional import Functional
from gpulayers.models.sequential import Sequential

__all__ = ["Functional", "Model", "Sequential", "load_model"]

serialization.register_builtin("Sequential", Sequential, module="keras")
serialization.register_builtin("Functional", Functional, module="keras.src.models.functional", registered_name="Functional")


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True):
    """Load a model saved as a Keras 3 ``.keras`` file (by gpulayers or by Keras).

    Only gpulayers' own classes and the user's classes the program made known
    (``custom_objects``, ``register_keras_serializable``) can be built from
    the file; anything else is refused with ValueError before any object is
    created. With ``compile=True`` a model saved compiled comes back
    compiled, with its optimizer state, ready to resume training (see
    :func:`gpulayers.saving.load_model`).
    """
    from gpulayers import saving

    return saving.load_model(filepath, custom_objects=custom_objects, compile=compile, safe_mode=safe_mode)
