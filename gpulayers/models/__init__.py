"""Models: the Sequential container."""

from gpulayers.models.sequential import Sequential

__all__ = ["Sequential"]
