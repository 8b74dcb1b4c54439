"""Data sources other than arrays for ``fit``, ``evaluate`` and ``predict``, with Keras 3's semantics.

- :class:`PyDataset` (also ``gpulayers.utils.PyDataset``): Keras's base class
  for a Python dataset of batches, with thread workers.
- :func:`get_data_adapter` picks the adapter for a PyDataset, a torch
  DataLoader (recognised without importing torch), or a Python generator or
  iterator, with Keras's errors; :func:`is_array_like` tells the arrays that
  stay on the trainer's own path.
- Every adapter's ``get_numpy_iterator()`` yields ``(x, y, sample_weight)``
  triples of NumPy arrays (or lists, tuples and dicts of them).
- :class:`EpochIterator` runs epochs over an adapter: ``steps_per_epoch``,
  the "ran out of data" warning, one-shot generators continued across epochs.

Nothing here imports cupy or torch at import time; moving batches to the
backend is the trainer's job (``get_device_iterator()`` only spares data
already on a GPU the trip through the host).
"""

from gpulayers.data_adapters.adapters import (
    DataAdapter,
    GeneratorDataAdapter,
    PyDatasetAdapter,
    TorchDataLoaderAdapter,
    check_validation_split,
    get_data_adapter,
    is_array_like,
    is_py_dataset,
    is_torch_dataloader,
)
from gpulayers.data_adapters.conversion import (
    check_class_weight,
    class_weight_to_sample_weights,
    is_torch_tensor,
    to_device_leaf,
    to_numpy_leaf,
    torch_to_cupy,
)
from gpulayers.data_adapters.epoch_iterator import RAN_OUT_OF_DATA, EpochIterator
from gpulayers.data_adapters.py_dataset import PyDataset, Sequence

__all__ = [
    "RAN_OUT_OF_DATA",
    "DataAdapter",
    "EpochIterator",
    "GeneratorDataAdapter",
    "PyDataset",
    "PyDatasetAdapter",
    "Sequence",
    "TorchDataLoaderAdapter",
    "check_class_weight",
    "check_validation_split",
    "class_weight_to_sample_weights",
    "get_data_adapter",
    "is_array_like",
    "is_py_dataset",
    "is_torch_dataloader",
    "is_torch_tensor",
    "to_device_leaf",
    "to_numpy_leaf",
    "torch_to_cupy",
]
