"""Arrays crossing into layers, and the errors that name the layer they happened in.

``to_backend`` converts a caller's array-like to the backend (numeric only, C
order, so the summation order never depends on the caller's layout);
``check_weight_list`` validates ``set_weights``; ``out_of_memory`` and
``check_finite`` turn a failure inside a layer into an error naming it.
"""

import numpy as np

from backends import get_ops

__all__ = [
    "LayerOutOfMemoryError", "check_finite", "check_weight_list", "compute_array", "numpy_dtype", "ops_to_numpy",
    "out_of_memory", "to_backend",
]


def compute_array(a, dtype):
    """A built-in layer's raw input: float, C-contiguous (the summation order must not depend on layout)."""
    if a.dtype.kind != "f":
        a = a.astype(dtype)
    if a.ndim and not a.flags.c_contiguous:
        a = get_ops().xp.ascontiguousarray(a)
    return a


class LayerOutOfMemoryError(MemoryError):
    """Out of memory inside a layer; the message names the layer, the pass and the shapes."""


def out_of_memory(layer, where, shape, exc):
    return LayerOutOfMemoryError(
        f"Out of memory in the {where} pass of layer '{layer.name}' ({type(layer).__name__}) on an input "
        f"of shape {tuple(shape)}: {exc}. Try a smaller batch_size."
    )


def check_finite(layer, where, value, source):
    """Raise FloatingPointError naming ``layer`` if ``value`` holds NaN or Inf."""
    xp = get_ops().xp
    if bool(xp.isfinite(value).all()):
        return
    what = f"Layer '{layer.name}' ({type(layer).__name__})"
    if not bool(xp.isfinite(source).all()):
        bad = int((~xp.isfinite(source)).sum())
        raise FloatingPointError(
            f"{what} received {bad} non-finite value(s) (NaN or Inf) in its {where} pass: "
            f"they came from outside the layers (the data or the loss). Received shape {tuple(source.shape)}."
        )
    bad = int((~xp.isfinite(value)).sum())
    raise FloatingPointError(
        f"{what} produced {bad} non-finite value(s) in its {where} pass from finite values: "
        f"received shape {tuple(source.shape)}, produced shape {tuple(value.shape)}."
    )


def numpy_dtype(dtype):
    """``dtype`` as a NumPy dtype, or an object dtype when NumPy cannot read it."""
    try:
        return np.dtype(dtype)
    except TypeError:
        return np.dtype(object)


def ops_to_numpy(value):
    if isinstance(value, np.ndarray):
        return value
    return value.get() if hasattr(value, "get") else np.asarray(value)


_ALLOWED_KINDS = "biuf"  # bool, int, uint, float


def to_backend(inputs, ops, dtype):
    """Convert array-likes (numpy, cupy, __array__, __dlpack__) to the backend at ``dtype``."""
    kind = getattr(getattr(inputs, "dtype", None), "kind", None)
    if kind is None:
        if isinstance(inputs, (str, bytes)) or inputs is None or isinstance(inputs, dict):
            raise TypeError(f"Invalid type for `inputs`: expected an array. Received: inputs={inputs!r:.80}")
        if not (hasattr(inputs, "__array__") or hasattr(inputs, "__dlpack__") or isinstance(inputs, (list, tuple, int, float))):
            raise TypeError(f"Invalid type for `inputs`: expected an array. Received: inputs={inputs!r:.80}")
        try:
            arr = ops.asarray(inputs)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"Invalid value for `inputs`: it cannot be converted to an array ({exc})") from None
        kind = arr.dtype.kind
    else:
        arr = inputs
    if kind not in _ALLOWED_KINDS:
        raise TypeError(
            f"Invalid dtype for `inputs`: expected a numeric (bool, int or float) array. "
            f"Received: inputs.dtype={arr.dtype}"
        )
    out = ops.asarray(arr, dtype=dtype)
    # C order always: the summation order (BLAS, reductions) and so the last
    # bits of a result must not depend on how the caller's array is laid out.
    if out.ndim and not out.flags.c_contiguous:
        out = ops.xp.ascontiguousarray(out)
    return out


def check_weight_list(weights, params, owner):
    """Validate a list of arrays against the variables it should replace (count and shapes)."""
    if isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__"):
        raise TypeError(f"Invalid type for `weights` of {owner}: expected a list of arrays. Received: {weights!r:.80}")
    if len(weights) != len(params):
        raise ValueError(
            f"Invalid `weights` for {owner}: expected a list of {len(params)} arrays "
            f"(shapes {[p.shape for p in params]}). Received a list of {len(weights)}."
        )
    for i, (w, p) in enumerate(zip(weights, params)):
        shape = tuple(np.shape(w))
        if shape != p.shape:
            raise ValueError(
                f"Invalid `weights` for {owner}: weights[{i}] ('{p.name}') should have shape "
                f"{p.shape}. Received: shape={shape}"
            )
