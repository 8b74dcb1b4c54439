"""Argument standardization shared by the layers, with Keras's messages.

Each helper raises ValueError or TypeError naming the argument and the value
it received, so a bad constructor argument is refused before anything is built.
"""

import numbers

import numpy as np

from gpulayers import config

__all__ = [
    "MAX_DIM",
    "conv_output_length",
    "same_pads",
    "standardize_bool",
    "standardize_dtype",
    "standardize_int",
    "standardize_padding",
    "standardize_side_pairs",
    "standardize_shape",
    "standardize_tuple",
    "window_pads",
]


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def standardize_int(value, name, minimum=1, maximum=None):
    """An int >= ``minimum`` (and <= ``maximum``, if given); a bool or float is refused."""
    if not _is_int(value):
        raise TypeError(f"Invalid type for `{name}`: expected an int. Received: {name}={value!r}")
    if value < minimum:
        raise ValueError(f"Invalid value for `{name}`: expected an int >= {minimum}. Received: {name}={value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"Invalid value for `{name}`: expected an int <= {maximum}. Received: {name}={value!r}")
    return int(value)


def standardize_bool(value, name):
    if not isinstance(value, (bool, numbers.Integral)) or value not in (0, 1):
        raise TypeError(f"Invalid type for `{name}`: expected a bool. Received: {name}={value!r}")
    return bool(value)


def standardize_tuple(value, n, name, allow_zero=False):
    """An int or an iterable of ``n`` ints, all > 0 (>= 0 with allow_zero), as a tuple."""
    if _is_int(value):
        items = (int(value),) * n
    else:
        try:
            items = tuple(value)
        except TypeError:
            raise TypeError(
                f"The `{name}` argument must be a tuple of {n} integers. Received: {name}={value!r}"
            ) from None
        if len(items) != n or not all(_is_int(v) for v in items):
            raise ValueError(
                f"The `{name}` argument must be a tuple of {n} integers. Received: {name}={value!r}"
            )
        items = tuple(int(v) for v in items)
    low = 0 if allow_zero else 1
    if any(v < low for v in items):
        raise ValueError(
            f"The `{name}` argument must be a tuple of {n} integers, each >= {low}. "
            f"Received: {name}={value!r}"
        )
    return items


def standardize_padding(value, name="padding"):
    """``'valid'`` or ``'same'`` (case-insensitive, as Keras 3)."""
    if not isinstance(value, str) or value.lower() not in ("valid", "same"):
        raise ValueError(
            f"Invalid value for `{name}`: expected 'valid' or 'same'. Received: {name}={value!r}"
        )
    return value.lower()


def standardize_side_pairs(value, name):
    """Keras's 2-D padding/cropping amounts as ``((top, bottom), (left, right))``, each int >= 0.

    ``value``: an int (the same on all four sides), a pair of ints
    ``(symmetric_height, symmetric_width)``, or a pair of pairs
    ``((top, bottom), (left, right))``; a pair's entries may mix the two forms.
    """
    if _is_int(value):
        if value < 0:
            raise ValueError(f"`{name}` cannot be negative. Received: {name}={value!r}.")
        return ((int(value),) * 2,) * 2
    if not isinstance(value, (list, tuple)):
        raise TypeError(
            f"`{name}` should be either an int, a tuple of 2 ints (symmetric_height_{name}, "
            f"symmetric_width_{name}), or a tuple of 2 tuples of 2 ints ((top_{name}, bottom_{name}), "
            f"(left_{name}, right_{name})). Received: {name}={value!r}."
        )
    if len(value) != 2:
        raise ValueError(f"`{name}` should have two elements. Received: {name}={value!r}.")
    return (
        standardize_tuple(value[0], 2, f"1st entry of {name}", allow_zero=True),
        standardize_tuple(value[1], 2, f"2nd entry of {name}", allow_zero=True),
    )


def standardize_data_format(value):
    return config.standardize_data_format(value)


def conv_output_length(n, kernel, stride, dilation, padding):
    """Keras's output length: 'same' -> ceil(n / stride), 'valid' -> floor((n - span) / stride) + 1.

    ``None`` (an unknown size) gives ``None``; a result below 1 gives 0 and the
    caller refuses it.
    """
    if n is None:
        return None
    span = (kernel - 1) * dilation + 1
    if padding == "same":
        return (n - 1) // stride + 1
    return max((n - span) // stride + 1, 0) if n >= span else 0


def same_pads(n, kernel, stride, dilation):
    """(before, after) zero padding for 'same': the extra pixel goes after (bottom/right)."""
    out = (n - 1) // stride + 1
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - n, 0)
    return total // 2, total - total // 2


def window_pads(spatial, kernel, strides, dilation, padding):
    """(top, bottom, left, right) for a 2-D window op on a (H, W) input."""
    if padding == "valid":
        return (0, 0, 0, 0)
    top, bottom = same_pads(spatial[0], kernel[0], strides[0], dilation[0])
    left, right = same_pads(spatial[1], kernel[1], strides[1], dilation[1])
    return (top, bottom, left, right)


_FLOAT_DTYPES = ("float16", "float32", "float64")


def standardize_dtype(dtype, name="dtype"):
    """A float dtype name (an Input's): None -> floatx(); a DTypePolicy or its config naming one accepted."""
    if dtype is None:
        return config.floatx()
    if isinstance(dtype, dict):  # Keras 3 serializes a layer's dtype as a DTypePolicy
        policy = dtype.get("config")
        if isinstance(policy, dict) and isinstance(policy.get("name"), str):
            dtype = policy["name"]
    elif hasattr(dtype, "name") and not isinstance(dtype, (str, np.dtype)):
        dtype = dtype.name  # a DTypePolicy-like object
    text = None
    if not isinstance(dtype, dict):  # NumPy reads a dict as a structured dtype
        try:
            text = np.dtype(dtype).name
        except (TypeError, ValueError):
            pass
    if text not in _FLOAT_DTYPES:
        raise ValueError(
            f"Invalid value for `{name}`: expected one of {_FLOAT_DTYPES}. "
            f"Received: {name}={dtype!r}"
        )
    return text


MAX_DIM = int(np.iinfo(np.intp).max)


def standardize_shape(value, name):
    """A shape tuple of positive ints or None entries."""
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"Invalid type for `{name}`: expected a tuple of ints. Received: {name}={value!r}") from None
    for v in items:
        # No array can have an axis longer than the largest index (2**63 - 1).
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v <= MAX_DIM):
            raise ValueError(
                f"Invalid value for `{name}`: expected a tuple of non-negative ints (at most {MAX_DIM}) or None. "
                f"Received: {name}={value!r}"
            )
    return tuple(None if v is None else int(v) for v in items)
