"""Argument checks shared by the optimizers and the learning-rate schedules.

Messages follow the rest of gpulayers: they name the argument and repeat
the value received, e.g. ``Invalid value for `momentum`: expected a float in
[0, 1]. Received: momentum=1.5``.
"""

import math
import numbers

import numpy as np


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


def check_int(value, argument, minimum=0):
    """A Python or NumPy int (bools excluded) >= ``minimum``, as a Python int; ValueError otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"Invalid value for `{argument}`: expected an int >= {minimum}. Received: {argument}={value!r}")
    return int(value)


def check_bool(value, argument):
    """A Python bool (NumPy bools accepted); TypeError otherwise."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"Invalid type for `{argument}`: expected a bool. Received: {argument}={value!r}")
    return bool(value)


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
