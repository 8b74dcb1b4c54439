"""Models: the Sequential container, and loading a saved model."""

from gpulayers.models.sequential import Sequential

__all__ = ["Sequential", "load_model"]


def load_model(filepath):
    """Load a model saved as a Keras 3 ``.keras`` file (by gpulayers or by Keras).

    Only gpulayers' own layer classes can be built from the file; anything
    else is refused with ValueError before any object is created.
    """
    from gpulayers import saving

    return saving.load_model(filepath)
