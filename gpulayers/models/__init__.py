"""Models: the Sequential container, and loading a saved model."""

from gpulayers.models.sequential import Sequential

__all__ = ["Sequential", "load_model"]


def load_model(filepath, compile=True):
    """Load a model saved as a Keras 3 ``.keras`` file (by gpulayers or by Keras).

    Only gpulayers' own layer classes can be built from the file; anything
    else is refused with ValueError before any object is created. With
    ``compile=True`` a model saved compiled comes back compiled, with its
    optimizer state, ready to resume training (see
    :func:`gpulayers.saving.load_model`).
    """
    from gpulayers import saving

    return saving.load_model(filepath, compile=compile)
