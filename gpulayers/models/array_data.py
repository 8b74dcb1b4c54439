"""In-memory training data: arrays, or lists/tuples/dicts of arrays (one per model input or output).

``fit``/``evaluate``/``predict`` check such data once (:func:`check_arrays`),
then cut it into batches by rows (:func:`take`, :func:`rows`) and move each
batch to the backend (:func:`to_backend_batch`). Every function keeps the
structure it is given.
"""

import numpy as np

from backends import get_ops
from gpulayers.layers.arrays import to_backend
from gpulayers.tree import flatten, map_structure

__all__ = ["check_arrays", "concatenate", "num_samples", "rows", "take", "to_backend_batch"]


def host_or_backend(data, name):
    """Keep numpy and backend arrays as they are (indexed per batch); turn the rest into numpy."""
    if data is None:
        return None
    module = type(data).__module__.split(".", 1)[0]
    if isinstance(data, np.ndarray) or module == "cupy":
        arr = data
    else:
        try:
            arr = np.asarray(data)
        except Exception as exc:  # ragged lists, objects...
            raise TypeError(f"Invalid value for `{name}`: it cannot be converted to an array ({exc}).") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"Invalid dtype for `{name}`: expected numbers. Received: {name}.dtype={arr.dtype}")
    if arr.ndim < 1:
        raise ValueError(f"Invalid value for `{name}`: it needs a batch axis. Received: {name}.shape={tuple(arr.shape)}")
    return arr


def _is_structure(data):
    """A list/tuple/dict of arrays (one per input or output), not one array written as nested lists."""
    if isinstance(data, dict):
        return True
    if not isinstance(data, (list, tuple)):
        return False
    return any(isinstance(v, dict) or getattr(v, "ndim", 0) > 0 or _is_structure(v) for v in data)


def _named_leaves(data, name):
    """``(name, leaf)`` pairs: ``x``, or ``x[0]``, ``x['key']``... for a structure."""
    if isinstance(data, dict):
        return [(n, leaf) for k, v in data.items() for n, leaf in _named_leaves(v, f"{name}[{k!r}]")]
    if _is_structure(data):
        return [(n, leaf) for i, v in enumerate(data) for n, leaf in _named_leaves(v, f"{name}[{i}]")]
    return [(name, data)]


def convert(data, name):
    """Every leaf of ``data`` checked and kept as a numpy or backend array, in the same structure."""
    if data is None:
        return None
    if isinstance(data, dict):
        return {k: convert(v, f"{name}[{k!r}]") for k, v in data.items()}
    if _is_structure(data):
        return type(data)(convert(v, f"{name}[{i}]") for i, v in enumerate(data)) if not hasattr(data, "_fields") \
            else type(data)(*(convert(v, f"{name}[{i}]") for i, v in enumerate(data)))
    return host_or_backend(data, name)


def num_samples(data):
    """The number of rows of a structure's first array."""
    return int(flatten(data)[0].shape[0])


def check_arrays(x, y, sample_weight, name_x="x", name_y="y"):
    """``(x, y, sample_weight)`` as arrays in their structures, with one number of samples for all."""
    x = convert(x, name_x)
    if x is None or (isinstance(x, (list, tuple, dict)) and not flatten(x)):
        raise ValueError(f"Invalid value for `{name_x}`: no input data. Received: {name_x}={x!r:.80}")
    y = convert(y, name_y)
    sample_weight = convert(sample_weight, "sample_weight")
    leaves = _named_leaves(x, name_x) + (_named_leaves(y, name_y) if y is not None else [])
    counts = {n: int(a.shape[0]) for n, a in leaves}
    if len(set(counts.values())) > 1:
        first = leaves[0][0]
        other = next(n for n in counts if counts[n] != counts[first])
        raise ValueError(
            f"Data cardinality is ambiguous: `{first}` has {counts[first]} samples and `{other}` has "
            f"{counts[other]}. Make sure all arrays contain the same number of samples."
        )
    n = counts[leaves[0][0]]
    if n == 0:
        raise ValueError(f"Invalid value for `{name_x}`: the dataset is empty (0 samples).")
    if sample_weight is not None:
        for sw_name, sw in _named_leaves(sample_weight, "sample_weight"):
            if sw.shape[0] != n or sw.ndim != 1:
                raise ValueError(
                    f"Invalid `{sw_name}`: expected shape ({n},) to match `{name_x}`. "
                    f"Received: {sw_name}.shape={tuple(sw.shape)}"
                )
    return x, y, sample_weight


def take(data, idx):
    """Rows ``idx`` (a numpy index array) of every array of ``data`` (None stays None)."""
    if data is None:
        return None

    def leaf(a):
        return a[idx] if isinstance(a, np.ndarray) else a[get_ops().asarray(idx)]

    return map_structure(leaf, data)


def rows(data, lo, hi):
    """``data[lo:hi]`` for every array of ``data`` (None stays None)."""
    return None if data is None else map_structure(lambda a: a[lo:hi], data)


def to_backend_batch(ops, data, dtype, cast_ints=False):
    """A batch on the backend: float arrays in ``dtype`` (None: as they are); integer arrays kept (or cast,
    with ``cast_ints``)."""
    if data is None:
        return None

    def leaf(a):
        arr = to_backend(a, ops, None)
        if dtype is not None and (arr.dtype.kind == "f" or (cast_ints and arr.dtype.kind in "biu")):
            if arr.dtype != np.dtype(dtype):
                arr = arr.astype(dtype)
        return arr

    return map_structure(leaf, data)


def concatenate(batches):
    """The per-batch numpy outputs of ``predict`` joined along the batch axis, in their structure."""
    first = batches[0]
    if isinstance(first, dict):
        return {k: concatenate([b[k] for b in batches]) for k in first}
    if isinstance(first, (list, tuple)):
        return type(first)(concatenate([b[i] for b in batches]) for i in range(len(first)))
    return np.concatenate(batches, axis=0)


class ArrayBatches:
    """In-memory data cut into batches epoch by epoch: the arrays' counterpart of
    :class:`gpulayers.data_adapters.EpochIterator` (the same ``num_batches``, ``enumerate_epoch``,
    ``out_of_data`` and context manager), so ``fit`` runs one loop for both.

    Args:
        x, y, sample_weight: Checked data (:func:`check_arrays`).
        batch_size: Rows per batch (the last one may be smaller).
        steps: At most this many batches per epoch (None: all).
        shuffle: A new order of the rows each epoch (drawn from the global seed).
        at_least_one: One (empty) batch even for no rows.
    """

    def __init__(self, x, y, sample_weight, batch_size, steps=None, shuffle=False, at_least_one=False):
        from gpulayers import utils

        self._data = (x, y, sample_weight)
        self._n = num_samples(x)
        self._batch_size = batch_size
        self.num_batches = -(-self._n // batch_size)
        if steps is not None:
            self.num_batches = min(self.num_batches, steps)
        if at_least_one:  # predict on 0 samples gives 0 rows of the right shape
            self.num_batches = max(self.num_batches, 1)
        self._shuffle = shuffle
        self._rng = utils.host_rng

    def enumerate_epoch(self):
        x, y, sw = self._data
        order = self._rng().permutation(self._n) if self._shuffle else None
        for step in range(self.num_batches):
            lo, hi = step * self._batch_size, (step + 1) * self._batch_size
            if order is None:
                yield step, (rows(x, lo, hi), rows(y, lo, hi), rows(sw, lo, hi))
            else:
                idx = order[lo:hi]
                yield step, (take(x, idx), take(y, idx), take(sw, idx))

    def out_of_data(self):
        return False

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
