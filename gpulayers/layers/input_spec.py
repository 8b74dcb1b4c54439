"""InputSpec: the rank and axis sizes a layer accepts, checked by ``Layer.__call__`` before ``build``."""

__all__ = ["InputSpec"]


class InputSpec:
    """What a layer accepts: a rank (``ndim`` or ``min_ndim``) and fixed sizes on some axes."""

    def __init__(self, ndim=None, min_ndim=None, axes=None):
        self.ndim = ndim
        self.min_ndim = min_ndim
        self.axes = dict(axes or {})

    def check(self, layer_name, shape):
        shape = tuple(shape)
        prefix = f"Input of layer '{layer_name}' is incompatible with the layer:"
        if self.ndim is not None and len(shape) != self.ndim:
            raise ValueError(
                f"{prefix} expected ndim={self.ndim}, found ndim={len(shape)}. "
                f"Full shape received: inputs.shape={shape}"
            )
        if self.min_ndim is not None and len(shape) < self.min_ndim:
            raise ValueError(
                f"{prefix} expected min_ndim={self.min_ndim}, found ndim={len(shape)}. "
                f"Full shape received: inputs.shape={shape}"
            )
        for axis, size in self.axes.items():
            if size is not None and shape[axis] is not None and shape[axis] != size:
                raise ValueError(
                    f"{prefix} expected axis {axis} of the input shape to have value {size}, "
                    f"but received input with shape inputs.shape={shape}"
                )
