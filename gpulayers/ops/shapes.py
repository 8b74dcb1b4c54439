"""Shape and indexing ops of the NumPy-like family: reshapes, joins and splits, ``pad``, ``take``, ``get_item``.

The gradients of gathers (``take``, ``repeat``, ``get_item``) scatter-add, so
repeated indices sum.
"""

import builtins
import numbers

import numpy as np

from gpulayers.autodiff import Tensor, record
from gpulayers.ops.core import (
    convert_to_tensor,
    data,
    is_scalar,
    normalize_axes,
    unbroadcast,
    xp,
)
from gpulayers.ops.reductions import _reduction_axes

__all__ = [
    "broadcast_to", "concatenate", "expand_dims", "flip", "get_item", "hstack", "moveaxis", "pad", "ravel",
    "repeat", "reshape", "split", "squeeze", "stack", "swapaxes", "take", "take_along_axis", "tile", "transpose",
    "tril", "triu", "vstack",
]



def reshape(x, newshape):
    x = convert_to_tensor(x)
    shape = x.data.shape
    newshape = (newshape,) if isinstance(newshape, (numbers.Integral, np.integer)) else tuple(int(d) for d in newshape)
    return record("reshape", x.data.reshape(newshape), (x,), lambda g, needs: (g.reshape(shape),))


def ravel(x):
    return reshape(x, (-1,))


def transpose(x, axes=None):
    x = convert_to_tensor(x)
    axes = tuple(range(x.ndim))[::-1] if axes is None else tuple(int(a) % builtins.max(x.ndim, 1) for a in axes)
    inverse = tuple(np.argsort(axes))
    return record("transpose", x.data.transpose(axes), (x,), lambda g, needs: (g.transpose(inverse),))


def moveaxis(x, source, destination):
    x = convert_to_tensor(x)
    src = [int(a) % x.ndim for a in ((source,) if isinstance(source, (numbers.Integral, np.integer)) else source)]
    dst = [int(a) % x.ndim for a in ((destination,) if isinstance(destination, (numbers.Integral, np.integer)) else destination)]
    order = [n for n in range(x.ndim) if n not in src]
    for d, a in sorted(zip(dst, src)):
        order.insert(d, a)
    return transpose(x, order)


def swapaxes(x, axis1, axis2):
    x = convert_to_tensor(x)
    order = list(range(x.ndim))
    a1, a2 = int(axis1) % x.ndim, int(axis2) % x.ndim
    order[a1], order[a2] = order[a2], order[a1]
    return transpose(x, order)


def expand_dims(x, axis):
    x = convert_to_tensor(x)
    axes = (axis,) if isinstance(axis, (numbers.Integral, np.integer)) else tuple(axis)
    out_ndim = x.ndim + len(axes)
    shape = list(x.shape)
    for a in sorted(int(a) % out_ndim for a in axes):
        shape.insert(a, 1)
    return reshape(x, shape)


def squeeze(x, axis=None):
    x = convert_to_tensor(x)
    if axis is None:
        axes = tuple(i for i, n in enumerate(x.shape) if n == 1)
    else:
        axes = normalize_axes(axis, x.ndim)
        bad = [a for a in axes if x.shape[a] != 1]
        if bad:
            raise ValueError(f"Cannot squeeze axis {bad[0]} of a tensor of shape {x.shape}: its size is not 1.")
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if i not in axes))


def broadcast_to(x, shape):
    x = convert_to_tensor(x)
    a = x.data
    y = xp().broadcast_to(a, tuple(int(d) for d in shape))
    return record("broadcast_to", y, (x,), lambda g, needs: (unbroadcast(g, a.shape),))


def flip(x, axis=None):
    x = convert_to_tensor(x)
    axes = _reduction_axes(x, axis)
    return record("flip", xp().flip(x.data, axes), (x,), lambda g, needs: (xp().flip(g, axes),))


def concatenate(xs, axis=0):
    """Join tensors along ``axis``."""
    tensors = [convert_to_tensor(x) for x in xs]
    if not tensors:
        raise ValueError("concatenate needs at least one tensor.")
    ax = normalize_axes(axis, tensors[0].ndim)[0]
    y = xp().concatenate([t.data for t in tensors], axis=ax)
    bounds = np.cumsum([t.data.shape[ax] for t in tensors])[:-1]

    def backward(g, needs):
        parts = xp().split(g, [int(b) for b in bounds], axis=ax)
        return [p if n else None for p, n in zip(parts, needs)]

    return record("concatenate", y, tensors, backward)


def hstack(xs):
    tensors = [convert_to_tensor(x) for x in xs]
    return concatenate(tensors, axis=0 if tensors and tensors[0].ndim == 1 else 1)


def vstack(xs):
    tensors = [convert_to_tensor(x) for x in xs]
    return concatenate([t if t.ndim > 1 else reshape(t, (1, -1)) for t in tensors], axis=0)


def stack(x, axis=0):
    """Join tensors of one shape along a new ``axis``."""
    tensors = [convert_to_tensor(t) for t in x]
    if not tensors:
        raise ValueError("stack needs at least one tensor.")
    y = xp().stack([t.data for t in tensors], axis=axis)
    ax = int(axis) % y.ndim

    def backward(g, needs):
        return [xp().take(g, i, axis=ax) if n else None for i, n in enumerate(needs)]

    return record("stack", y, tensors, backward)


def split(x, indices_or_sections, axis=0):
    """Split ``x`` along ``axis`` into equal sections or at the given indices; returns a list."""
    x = convert_to_tensor(x)
    ax = normalize_axes(axis, x.ndim)[0]
    sections = indices_or_sections
    if not isinstance(sections, (numbers.Integral, np.integer)):
        sections = [int(i) for i in sections]
    parts = tuple(xp().split(x.data, sections, axis=ax))
    outputs = record("split", parts, (x,), lambda gs, needs: (xp().concatenate(gs, axis=ax),))
    return list(outputs)


def tile(x, repeats):
    x = convert_to_tensor(x)
    reps = (int(repeats),) if isinstance(repeats, (numbers.Integral, np.integer)) else tuple(int(r) for r in repeats)
    n = builtins.max(x.ndim, len(reps))
    shape = (1,) * (n - x.ndim) + x.shape
    reps = (1,) * (n - len(reps)) + reps
    y = xp().tile(x.data, reps)
    original = x.shape

    def backward(g, needs):
        interleaved = []
        for r, s in zip(reps, shape):
            interleaved += [r, s]
        return (g.reshape(interleaved).sum(axis=tuple(range(0, 2 * n, 2))).reshape(original),)

    return record("tile", y, (x,), backward)


def _scatter(how, target, index, values):
    """``target[index] += values`` (``how="add"``) or ``= maximum(target[index], values)`` (``"max"``), with
    repeated indices accumulating, in place."""
    if isinstance(target, np.ndarray):
        (np.add if how == "add" else np.maximum).at(target, index, values)
    else:
        import cupyx

        (cupyx.scatter_add if how == "add" else cupyx.scatter_max)(target, index, values)
    return target


def _scatter_add(target, index, values):
    return _scatter("add", target, index, values)


def repeat(x, repeats, axis=None):
    x = convert_to_tensor(x)
    a = x.data
    if axis is None:
        a_flat, ax = a.reshape(-1), 0
    else:
        a_flat, ax = a, normalize_axes(axis, a.ndim)[0]
    reps = data(repeats)
    y = xp().repeat(a_flat, reps, axis=ax)
    n = a_flat.shape[ax]

    def backward(g, needs):
        source = xp().repeat(xp().arange(n), reps)
        moved = xp().moveaxis(g, ax, 0)
        out = xp().zeros((n,) + moved.shape[1:], dtype=g.dtype)
        _scatter_add(out, source, moved)
        return (xp().moveaxis(out, 0, ax).reshape(a.shape),)

    return record("repeat", y, (x,), backward)


def pad(x, pad_width, mode="constant", constant_values=None):
    """Pad ``x`` (NumPy's ``pad``). Modes that move entries (constant, edge, reflect,
    symmetric, wrap) are differentiable; statistics modes (mean, median...) are not."""
    x = convert_to_tensor(x)
    a = x.data
    width = np.broadcast_to(np.asarray(pad_width, dtype=np.int64), (a.ndim, 2))
    kwargs = {"constant_values": constant_values} if mode == "constant" and constant_values is not None else {}
    y = xp().pad(a, [tuple(int(v) for v in row) for row in width], mode=mode, **kwargs)
    if mode == "constant":
        key = tuple(builtins.slice(int(lo), int(lo) + n) for (lo, _), n in zip(width, a.shape))
        return record("pad", y, (x,), lambda g, needs: (g[key],))
    if mode not in ("edge", "reflect", "symmetric", "wrap"):
        return Tensor(y)

    def backward(g, needs):
        # The entries each output cell copies, found by padding an index array the same way.
        index = xp().arange(a.size).reshape(a.shape)
        source = xp().pad(index, [tuple(int(v) for v in row) for row in width], mode=mode).reshape(-1)
        out = xp().bincount(source, weights=g.reshape(-1).astype(np.float64), minlength=a.size)
        return (out.astype(g.dtype).reshape(a.shape),)

    return record("pad", y, (x,), backward)


def _index_array(indices):
    """Indices as a raw integer array (floats holding whole numbers are accepted, as Keras's take)."""
    idx = data(convert_to_tensor(indices))
    return idx if idx.dtype.kind in "iu" else idx.astype(np.int64)


def take(x, indices, axis=None):
    """Entries of ``x`` at ``indices`` along ``axis`` (None: of the flattened ``x``)."""
    x = convert_to_tensor(x)
    a, idx = x.data, _index_array(indices)
    if axis is None:
        flat = a.reshape(-1)
        y = xp().take(flat, idx)

        def backward(g, needs):
            out = xp().zeros(flat.shape, dtype=g.dtype)
            _scatter_add(out, idx.reshape(-1), g.reshape(-1))
            return (out.reshape(a.shape),)

        return record("take", y, (x,), backward)
    ax = normalize_axes(axis, a.ndim)[0]
    y = xp().take(a, idx, axis=ax)

    def backward(g, needs):
        moved = xp().moveaxis(xp().zeros(a.shape, dtype=g.dtype), ax, 0)
        # g's axes: a[:ax], idx's, a[ax+1:]; bring idx's to the front.
        order = list(range(ax, ax + idx.ndim)) + list(range(ax)) + list(range(ax + idx.ndim, g.ndim))
        _scatter_add(moved, idx, g.transpose(order))
        return (xp().moveaxis(moved, 0, ax),)

    return record("take", y, (x,), backward)


def take_along_axis(x, indices, axis=None):
    """NumPy's ``take_along_axis`` (None: along the flattened ``x``)."""
    x = convert_to_tensor(x)
    a, idx = x.data, _index_array(indices)
    source = a.reshape(-1) if axis is None else a
    ax = 0 if axis is None else normalize_axes(axis, a.ndim)[0]
    y = xp().take_along_axis(source, idx, axis=ax)

    def backward(g, needs):
        out = xp().zeros(source.shape, dtype=g.dtype)
        full = [xp().broadcast_to(i, y.shape) for i in xp().ogrid[tuple(builtins.slice(0, n) for n in y.shape)]]
        full[ax] = xp().broadcast_to(idx, y.shape)
        _scatter_add(out, tuple(full), g)
        return (out.reshape(a.shape),)

    return record("take_along_axis", y, (x,), backward)


def _raw_key(key):
    """An index with Tensors replaced by their arrays; whether it uses advanced (array) indexing."""
    items = key if isinstance(key, tuple) else (key,)
    raw, advanced = [], False
    for k in items:
        if isinstance(k, Tensor):
            k = k.data
        if isinstance(k, list) or (hasattr(k, "dtype") and getattr(k, "ndim", 0) >= 0 and not is_scalar(k)):
            k = xp().asarray(k)
            advanced = True
        raw.append(k)
    return (tuple(raw) if isinstance(key, tuple) else raw[0]), advanced


def get_item(x, key):
    """``x[key]`` with NumPy's basic and advanced indexing; repeated indices accumulate gradients."""
    x = convert_to_tensor(x)
    a = x.data
    key, advanced = _raw_key(key)
    y = a[key]
    if not hasattr(y, "shape"):
        y = xp().asarray(y)

    def backward(g, needs):
        out = xp().zeros(a.shape, dtype=g.dtype)
        if advanced:
            _scatter_add(out, key, g)
        else:
            out[key] = g
        return (out,)

    return record("get_item", y, (x,), backward)


def tril(x, k=0):
    x = convert_to_tensor(x)
    return record("tril", xp().tril(x.data, k), (x,), lambda g, needs: (xp().tril(g, k),))


def triu(x, k=0):
    x = convert_to_tensor(x)
    return record("triu", xp().triu(x.data, k), (x,), lambda g, needs: (xp().triu(g, k),))
