"""Argument validation shared by the layers, losses, metrics, optimizers and models, with Keras's messages.

Every helper raises ValueError or TypeError naming the argument and repeating
the value it received (``Invalid value for `units`: expected an int >= 1.
Received: units=2.5``), so a bad argument is refused before anything is
built or changed. The rules follow Keras 3.15's own checks:

* an integer argument is an int or a NumPy integer (a bool or a float is
  refused): ValueError, as Keras's ``units``/``input_dim`` checks;
* a boolean argument is a bool, a NumPy bool, or the int 0 or 1 (Keras
  programs pass ``1`` and ``0``): TypeError for anything else;
* a real argument is a finite Python or NumPy number within its bounds.
"""

import math
import numbers

import numpy as np

from gpulayers import config

__all__ = [
    "MAX_DIM",
    "check_name",
    "check_real",
    "is_real",
    "scalar_to_float",
    "standardize_bool",
    "standardize_data_format",
    "standardize_dtype",
    "standardize_int",
    "standardize_padding",
    "standardize_shape",
    "standardize_tuple",
]


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def standardize_int(value, name, minimum=1, maximum=None, allow_none=False):
    """An int >= ``minimum`` (and <= ``maximum``, if given) as a Python int, or None where allowed; ValueError
    otherwise (a bool or a float too, as Keras refuses ``Dense(units=2.5)``)."""
    if value is None and allow_none:
        return None
    if not _is_int(value) or value < minimum:
        raise ValueError(f"Invalid value for `{name}`: expected an int >= {minimum}. Received: {name}={value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"Invalid value for `{name}`: expected an int <= {maximum}. Received: {name}={value!r}")
    return int(value)


def standardize_bool(value, name):
    """A bool, a NumPy bool or the int 0 or 1, as a Python bool; TypeError otherwise."""
    if isinstance(value, (bool, np.bool_)) or (_is_int(value) and value in (0, 1)):
        return bool(value)
    raise TypeError(f"Invalid type for `{name}`: expected a bool. Received: {name}={value!r}")


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


def standardize_data_format(value):
    return config.standardize_data_format(value)




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


def is_real(value):
    """A real Python or NumPy number (bools excluded)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def check_real(value, argument, minimum=None, maximum=None, min_open=False, max_open=False, allow_none=False):
    """A finite real number inside the given bounds, returned as a Python number.

    ints stay ints (so configs keep what the user gave); NumPy scalars become
    Python numbers. Anything else raises ValueError naming ``argument``.
    """
    if value is None and allow_none:
        return None
    ok = is_real(value) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if min_open else value >= minimum
    if ok and maximum is not None:
        ok = value < maximum if max_open else value <= maximum
    if not ok:
        if minimum is not None and maximum is not None:
            need = f"a float in {'(' if min_open else '['}{minimum}, {maximum}{')' if max_open else ']'}"
        elif minimum is not None:
            need = f"a float {'>' if min_open else '>='} {minimum}"
        elif maximum is not None:
            need = f"a float {'<' if max_open else '<='} {maximum}"
        else:
            need = "a finite float"
        if allow_none:
            need = f"None or {need}"
        raise ValueError(f"Invalid value for `{argument}`: expected {need}. Received: {argument}={value!r}")
    return _plain(value)


def check_name(value, argument="name", allow_none=False):
    """A non-empty string (or None when allowed)."""
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(
            f"Invalid value for `{argument}`: expected a non-empty string. Received: {argument}={value!r}"
        )
    return value


def scalar_to_float(value, argument):
    """A real number or a 0-d numeric array (NumPy or CuPy) as a Python float; finite."""
    if is_real(value):
        out = float(value)
    elif getattr(value, "shape", None) == () and getattr(getattr(value, "dtype", None), "kind", None) in ("f", "i", "u"):
        out = float(value)  # a 0-d array (a device scalar is copied to the host)
    else:
        raise ValueError(
            f"Invalid value for `{argument}`: expected a float. Received: {argument}={value!r} "
            f"of type {type(value).__name__}"
        )
    if not math.isfinite(out):
        raise ValueError(f"Invalid value for `{argument}`: expected a finite float. Received: {argument}={value!r}")
    return out
