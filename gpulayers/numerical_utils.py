"""``to_categorical`` and ``normalize``: Keras 3's ``keras.utils`` functions of the same names.

As Keras's, each works on host data with NumPy (and returns NumPy arrays)
and on gpulayers tensors with :mod:`gpulayers.ops` (and returns tensors).
"""

import numbers

import numpy as np

__all__ = ["normalize", "to_categorical"]


def _is_backend_value(x):
    """A gpulayers Tensor (or Variable) or a raw device array: Keras's "backend tensor" branch."""
    from gpulayers.autodiff import Tensor

    return isinstance(x, Tensor) or type(x).__module__.split(".")[0] == "cupy"


def _check_num_classes(num_classes):
    if num_classes is None:
        return None
    if isinstance(num_classes, (bool, np.bool_)) or not isinstance(num_classes, numbers.Integral) or num_classes < 0:
        raise ValueError(
            f"Invalid value for `num_classes`: expected a positive int or None. Received: num_classes={num_classes!r}"
        )
    return int(num_classes) or None  # Keras reads 0 as "not given"


def _check_labels(labels, num_classes):
    """Every label in ``[0, num_classes)`` (inferring ``num_classes`` as ``max + 1`` when None); the class count."""
    if labels.size == 0:
        if num_classes is None:
            raise ValueError("Invalid value for `x`: `num_classes` cannot be inferred from an empty `x`; pass it.")
        return num_classes
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        raise ValueError(f"Invalid value for `x`: class indices must be >= 0. Received: x holding {low}")
    if num_classes is None:
        return high + 1
    if high >= num_classes:
        raise ValueError(
            f"Invalid value for `x`: class indices must be < num_classes={num_classes}. Received: x holding {high}"
        )
    return num_classes


def to_categorical(x, num_classes=None):
    """Convert class indices to one-hot vectors (a "binary class matrix"), the class axis last.

    As ``keras.utils.to_categorical``: ``x`` (array-like of ints) is read as
    int64 (floats are truncated, as Keras's); a trailing axis of size 1 is
    dropped (labels of shape ``(N, 1)`` give ``(N, num_classes)``); a 0-d
    ``x`` gives a vector. The result is a float64 NumPy array, or for a
    gpulayers tensor a tensor of ``floatx()``.

    Args:
        x: Class indices in ``[0, num_classes)``.
        num_classes: The number of classes; None (or 0, as in Keras) means
            ``max(x) + 1``.

    Raises:
        ValueError: ``x`` holds a negative index (Keras's NumPy path would
            silently mark the last class) or one ``>= num_classes``, is empty
            with no ``num_classes``, or is not integral data.

    Example:
        >>> to_categorical([0, 2, 1], num_classes=3)
        array([[1., 0., 0.],
               [0., 0., 1.],
               [0., 1., 0.]])
    """
    num_classes = _check_num_classes(num_classes)
    if _is_backend_value(x):
        return _to_categorical_tensor(x, num_classes)
    try:
        host = np.asarray(x)
        if host.dtype.kind == "f" and not np.isfinite(host).all():
            raise ValueError("it holds NaN or infinity")
        labels = np.array(host, dtype="int64")
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"Invalid value for `x`: expected integer class indices ({exc}). Received: x={x!r}") from exc
    shape = labels.shape
    if len(shape) > 1 and shape[-1] == 1:
        shape = shape[:-1]
    labels = labels.reshape(-1)
    num_classes = _check_labels(labels, num_classes)
    categorical = np.zeros((labels.shape[0], num_classes))
    categorical[np.arange(labels.shape[0]), labels] = 1
    return categorical.reshape(shape + (num_classes,))


def _to_categorical_tensor(x, num_classes):
    from gpulayers import ops

    x = ops.convert_to_tensor(x)
    if x.ndim > 1 and x.shape[-1] == 1:
        x = ops.reshape(x, x.shape[:-1])
    if x.dtype.kind not in "iub":
        raise ValueError(f"Invalid value for `x`: expected a tensor of integer class indices. Received: x of dtype {x.dtype}")
    labels = ops.convert_to_numpy(x).astype(np.int64).reshape(-1)  # one host copy, to check the range
    num_classes = _check_labels(labels, num_classes)
    return ops.nn.one_hot(x, num_classes)


def normalize(x, axis=-1, order=2):
    """Divide ``x`` by its ``order``-norm along ``axis`` (a zero norm is left as 1), as ``keras.utils.normalize``.

    A NumPy array is normalized with NumPy, the norm being
    ``np.linalg.norm(x, order, axis)`` (so the dtype follows NumPy: float64
    for an int array, float32 stays float32), and a 1-d array gives shape
    ``(1, n)`` as in Keras. Anything else (a tensor, a list) goes to
    :func:`gpulayers.ops.nn.normalize` and gives a tensor, as Keras sends it
    to ``keras.ops.nn.normalize``.

    Args:
        x: The array to normalize.
        axis: The axis (an int) along which to normalize.
        order: The norm order, e.g. 2 for the L2 norm, 1, or ``np.inf``.

    Returns:
        A normalized copy of ``x``.
    """
    if not isinstance(x, np.ndarray):
        from gpulayers import ops

        return ops.nn.normalize(x, axis=axis, order=order)
    if x.ndim == 0:
        raise ValueError(f"Invalid value for `x`: expected an array of at least 1 dimension. Received: x of shape {x.shape}")
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, numbers.Integral) or not -x.ndim <= axis < x.ndim:
        raise ValueError(
            f"Invalid value for `axis`: expected an int in [{-x.ndim}, {x.ndim}) for an input of shape {x.shape}. "
            f"Received: axis={axis!r}"
        )
    if isinstance(order, (bool, np.bool_)) or not isinstance(order, numbers.Real) or np.isnan(order):
        raise ValueError(f"Invalid value for `order`: expected a number (e.g. 2, 1 or np.inf). Received: order={order!r}")
    axis = int(axis)
    norm = np.atleast_1d(np.linalg.norm(x, order, axis))
    norm[norm == 0] = 1
    out = x / np.expand_dims(norm, axis)
    if x.ndim == 1:
        out = out.reshape(1, -1)  # Keras's shape for a vector: its norm is a (1,) array expanded to (1, 1)
    return out
