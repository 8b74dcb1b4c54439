"""What CIFAR-10 and CIFAR-100 share: reading one of their Python-pickle batch files as data."""

import os

import numpy as np

from gpulayers.datasets.pickle_reader import read_pickle_data

__all__ = ["load_batch"]

IMAGE_SIZE = 3 * 32 * 32


def load_batch(fpath, label_key="labels", num_classes=None):
    """``(data, labels)`` of the CIFAR batch file ``fpath``, read without unpickling it.

    ``data`` is a read-only uint8 array of shape ``(N, 3, 32, 32)`` (a view of
    the file's bytes; the loaders copy it), ``labels`` an int64 array of
    shape ``(N,)`` taken from the dict entry ``label_key``. The file must hold
    a dict with a ``data`` array of shape ``(N, 3072)`` and dtype uint8 and a
    list of N int labels (in ``[0, num_classes)`` when ``num_classes`` is
    given), its keys Python 2 ``str`` (bytes) or ``str``; anything else is
    refused with ValueError before anything is allocated.
    """
    if not os.path.isfile(fpath):
        raise FileNotFoundError(
            f"{fpath} is missing: the extracted CIFAR directory {os.path.dirname(os.path.dirname(fpath))} is incomplete. "
            "Delete that directory (its archive is kept) to extract or download it again."
        )
    batch = read_pickle_data(fpath)
    if not isinstance(batch, dict):
        raise ValueError(f"{fpath} is not a CIFAR batch: it holds a {type(batch).__name__}, not a dict.")
    entries = {}
    for key, value in batch.items():
        if isinstance(key, bytes):
            key = key.decode("utf-8", errors="replace")
        entries[key] = value
    for key in ("data", label_key):
        if key not in entries:
            raise ValueError(f"{fpath} is not a CIFAR batch: it has no {key!r} entry (its keys: {sorted(entries)}).")
    data, labels = entries["data"], entries[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != IMAGE_SIZE:
        described = f"shape {data.shape} and dtype {data.dtype}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{fpath} is not a CIFAR batch: its 'data' should be uint8 of shape (N, {IMAGE_SIZE}), not {described}.")
    count = data.shape[0]
    if not isinstance(labels, list) or len(labels) != count:
        size = len(labels) if isinstance(labels, (list, tuple)) else type(labels).__name__
        raise ValueError(f"{fpath} is not a CIFAR batch: {label_key!r} should be a list of {count} labels, not {size}.")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
        raise ValueError(f"{fpath} is not a CIFAR batch: {label_key!r} holds something other than ints.")
    labels = np.array(labels, dtype=np.int64) if labels else np.zeros(0, np.int64)
    if num_classes is not None and count and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{fpath} is not a CIFAR batch: {label_key!r} should be in [0, {num_classes}), "
            f"it holds values in [{labels.min()}, {labels.max()}]."
        )
    return data.reshape(count, 3, 32, 32), labels
