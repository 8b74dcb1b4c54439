"""Adapters: one interface over a Python generator or iterator, a PyDataset and a torch DataLoader."""

import collections.abc
import itertools
import numbers
import types
import warnings

import numpy as np

from gpulayers import utils
from gpulayers.data_adapters.conversion import (
    check_class_weight, class_weight_to_sample_weights, is_cupy_array, is_torch_tensor, map_batch, to_device_leaf,
    to_numpy_leaf,
)
from gpulayers.data_adapters.py_dataset import OrderedPrefetcher, PyDataset

__all__ = [
    "DataAdapter", "GeneratorDataAdapter", "PyDatasetAdapter", "TorchDataLoaderAdapter", "check_validation_split",
    "get_data_adapter", "is_array_like", "is_py_dataset", "is_torch_dataloader",
]


class DataAdapter:
    """What the training loop drives, whatever the data source.

    ``get_numpy_iterator()`` returns one pass over the data: it yields
    ``(x, y, sample_weight)`` triples whose arrays are NumPy arrays (``x``
    and ``y`` may be lists, tuples or dicts of them; ``y`` and
    ``sample_weight`` are None when the batch has none). For a one-shot
    source (:attr:`one_shot`: a generator or iterator) every call continues
    the same stream. ``get_device_iterator()`` is the same for a CuPy
    trainer, except that arrays already on a CUDA device come as CuPy arrays
    instead of going through the host. ``on_epoch_begin()`` and
    ``on_epoch_end()`` bracket each epoch.

    A subclass implements ``_iterate(leaf_fn)`` (or both iterators) and the
    properties it knows. A DataAdapter given to :func:`get_data_adapter` is
    returned as it is, so a trainer may wrap a source of its own.
    """

    one_shot = False  # True: the data can be read once (a generator); a new pass continues the old one

    @property
    def num_batches(self):
        """Batches in one pass, or None when unknown (a generator) or endless."""
        return None

    @property
    def batch_size(self):
        """Samples per batch when the source says (a DataLoader), else None."""
        return None

    @property
    def has_partial_batch(self):
        """Whether the last batch of a pass is smaller than the others: True/False when known, else None."""
        return None

    @property
    def partial_batch_size(self):
        """The size of that last smaller batch (0: none), or None when unknown."""
        return None

    def get_numpy_iterator(self):
        return self._iterate(to_numpy_leaf)

    def get_device_iterator(self):
        return self._iterate(to_device_leaf)

    def _iterate(self, leaf_fn):
        raise NotImplementedError

    def on_epoch_begin(self):
        pass

    def on_epoch_end(self):
        pass


# ---------------------------------------------------------------- batches


def _apply_class_weight(x, y, sample_weight, class_weight):
    if class_weight is None or y is None:
        return x, y, sample_weight
    if sample_weight is not None:
        raise ValueError("You cannot give both `class_weight` and sample weights: the batch already holds sample weights.")
    if isinstance(y, (list, tuple, dict)):  # converted already: a list here holds several arrays
        raise ValueError("`class_weight` is only supported for models with a single output (a batch has several targets).")
    return x, y, class_weight_to_sample_weights(y, class_weight)


def _describe_batch(batch):
    text = repr(batch)
    return (text[:100] + "...") if len(text) > 100 else text


# ---------------------------------------------------------------- generators and iterators


class GeneratorDataAdapter(DataAdapter):
    """A Python generator or iterator of batch tuples ``(x,)``, ``(x, y)`` or ``(x, y, sample_weight)``.

    It is one-shot: every pass continues the same stream and ends for good
    when the generator stops. The first batch is read at construction (an
    empty generator, or one whose batches are not tuples, is refused at
    once, as Keras does) and handed out first.
    """

    one_shot = True

    def __init__(self, iterator, kind="generator"):
        self._iterator = iterator
        self._kind = kind
        try:
            first = next(iterator)
        except StopIteration:
            raise ValueError(
                f"The {kind} given as `x` yielded no batch: it must yield at least one. Received an empty {kind}."
            ) from None
        self._unpack(first)  # refuse a bad first batch now
        self._peeked = [first]

    def _unpack(self, batch):
        if not isinstance(batch, (tuple, list)):
            raise ValueError(
                f"A {self._kind} given as `x` must yield tuples: (inputs,), (inputs, targets) or (inputs, targets, "
                f"sample_weights). Received: {_describe_batch(batch)} of type {type(batch).__name__}"
            )
        return utils.unpack_x_y_sample_weight(batch)

    def _batches(self):
        while True:
            if self._peeked:
                yield self._peeked.pop()
                continue
            try:
                batch = next(self._iterator)
            except StopIteration:
                return
            yield batch

    def _iterate(self, leaf_fn):
        for batch in self._batches():
            yield map_batch(leaf_fn, *self._unpack(batch))


# ---------------------------------------------------------------- PyDataset


class PyDatasetAdapter(DataAdapter):
    """A :class:`PyDataset`: batches ``dataset[i]``, in order or shuffled each pass, prefetched by its workers.

    A finite dataset gives a new pass (``range(num_batches)``, permuted with
    gpulayers' seeded generator when ``shuffle``) each time; an endless one
    (``num_batches`` None) continues its indices across passes. The
    dataset's ``on_epoch_begin``/``on_epoch_end`` are called through the
    adapter's.
    """

    def __init__(self, dataset, class_weight=None, shuffle=False):
        self.py_dataset = dataset
        self.class_weight = class_weight
        self.shuffle = bool(shuffle)
        workers, multiprocessing = dataset.workers, dataset.use_multiprocessing
        if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 0:
            raise ValueError(f"Invalid value for `workers` of {type(dataset).__name__}: expected an int >= 0. Received: {workers!r}")
        # As in Keras: background workers when there are several, or one with use_multiprocessing.
        self._threads = int(workers) if workers > 1 or (workers > 0 and multiprocessing) else 0
        queue_size = dataset.max_queue_size
        self._depth = queue_size if isinstance(queue_size, numbers.Integral) and queue_size >= 1 else max(1, int(workers))
        count = dataset.num_batches
        if count is not None and (isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 0):
            raise ValueError(f"Invalid `num_batches` of {type(dataset).__name__}: expected None or an int >= 0. Received: {count!r}")
        if count == 0:
            raise ValueError(f"The {type(dataset).__name__} given as `x` has no batches (its length is 0).")
        self._endless_indices = itertools.count()
        self._within_epoch = False

    @property
    def num_batches(self):
        return self.py_dataset.num_batches

    def _standardize(self, batch, leaf_fn):
        if isinstance(batch, dict) or hasattr(batch, "shape"):  # inputs only
            batch = (batch,)
        if isinstance(batch, list):
            batch = tuple(batch)
        if not isinstance(batch, tuple) or not 1 <= len(batch) <= 3:
            raise ValueError(
                "PyDataset.__getitem__() must return a dict of inputs or a tuple (inputs,), (inputs, targets) or "
                f"(inputs, targets, sample_weights). Received: {_describe_batch(batch)} of type {type(batch).__name__}"
            )
        x, y, sample_weight = map_batch(leaf_fn, *utils.unpack_x_y_sample_weight(batch))
        return _apply_class_weight(x, y, sample_weight, self.class_weight)

    def _order(self):
        count = self.py_dataset.num_batches
        if count is None:
            return self._endless_indices
        if self.shuffle:
            return utils.host_rng().permutation(count).tolist()
        return range(count)

    def _iterate(self, leaf_fn):
        dataset = self.py_dataset
        return OrderedPrefetcher(
            dataset.__getitem__,
            self._order(),
            workers=self._threads,
            depth=self._depth,
            transform=lambda batch: self._standardize(batch, leaf_fn),
            describe=lambda index: f"{type(dataset).__name__}[{index}]",
        )

    def on_epoch_begin(self):
        if self._within_epoch:
            raise ValueError("`on_epoch_begin` was called twice without `on_epoch_end` in between.")
        self._within_epoch = True
        self.py_dataset.on_epoch_begin()

    def on_epoch_end(self):
        self._within_epoch = False
        self.py_dataset.on_epoch_end()


# ---------------------------------------------------------------- torch DataLoader


class TorchDataLoaderAdapter(DataAdapter):
    """A ``torch.utils.data.DataLoader``: each pass iterates it anew; tensors become NumPy (or CuPy) arrays.

    A batch may be a list or tuple ``(x,)``, ``(x, y)``, ``(x, y,
    sample_weight)``, a dict of inputs, or one tensor (the inputs), with
    lists, tuples and dicts of tensors inside kept as they are.
    """

    def __init__(self, dataloader):
        self._dataloader = dataloader
        self._batch_size = dataloader.batch_size
        try:
            self._num_batches = len(dataloader)
        except TypeError:  # an IterableDataset without __len__
            self._num_batches = None
        self._partial = None
        if self._num_batches is not None and self._batch_size:
            try:
                samples = len(dataloader.dataset)
            except TypeError:
                samples = None
            if samples is not None:
                self._partial = 0 if dataloader.drop_last else samples % self._batch_size

    @property
    def num_batches(self):
        return self._num_batches

    @property
    def batch_size(self):
        return self._batch_size

    @property
    def has_partial_batch(self):
        return None if self._partial is None else self._partial > 0

    @property
    def partial_batch_size(self):
        return self._partial

    def _iterate(self, leaf_fn):
        for batch in self._dataloader:
            if isinstance(batch, dict) or hasattr(batch, "shape"):
                batch = (batch,)
            if not isinstance(batch, (tuple, list)) or not 1 <= len(batch) <= 3:
                raise ValueError(
                    "A torch DataLoader given as `x` must yield a tensor or dict of inputs, or a tuple (inputs,), "
                    f"(inputs, targets) or (inputs, targets, sample_weights). Received: {_describe_batch(batch)}"
                )
            yield map_batch(leaf_fn, *utils.unpack_x_y_sample_weight(tuple(batch)))


# ---------------------------------------------------------------- choosing an adapter


def is_torch_dataloader(x):
    """True for a ``torch.utils.data.DataLoader`` (or subclass), found without importing torch."""
    return any(cls.__name__ == "DataLoader" and cls.__module__.startswith("torch.utils.data") for cls in type(x).__mro__)


def is_py_dataset(x):
    """True for a gpulayers PyDataset, or Keras's own (``keras.utils.PyDataset``: the same interface)."""
    if isinstance(x, PyDataset):
        return True
    return any(cls.__name__ == "PyDataset" and cls.__module__.startswith("keras.") for cls in type(x).__mro__)


def _is_array_leaf(x):
    if isinstance(x, (np.ndarray, np.generic, numbers.Number)) and not isinstance(x, (str, bytes)):
        return True
    if is_torch_tensor(x) or is_cupy_array(x):
        return True
    if type(x).__module__.startswith("gpulayers.") and hasattr(x, "data") and hasattr(x, "shape"):
        return True
    return any(hasattr(x, attr) for attr in ("__array__", "__array_interface__", "__cuda_array_interface__"))


def is_array_like(x):
    """True when ``x`` is for the trainer's own array path rather than an adapter.

    Arrays (NumPy, CuPy, torch tensors, gpulayers tensors, anything with
    ``__array__`` such as pandas), Python numbers, and lists, tuples and dicts
    of these (several inputs); None inside a structure is allowed, as Keras
    allows it. Generators, iterators, PyDatasets and DataLoaders are not.
    """
    if isinstance(x, dict):
        return all(v is None or is_array_like(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return all(v is None or is_array_like(v) for v in x)
    return x is not None and _is_array_leaf(x)


def check_validation_split(x, validation_split):
    """Keras's refusal of ``validation_split`` for data that cannot be split: anything but arrays (ValueError)."""
    if validation_split and not is_array_like(x):
        raise ValueError(
            "`validation_split` is only supported for arrays (NumPy, CuPy or tensors): a "
            f"{type(x).__name__} cannot be split. Pass `validation_data` instead. Received: validation_split={validation_split!r}"
        )


def _refuse(argument, what, kind):
    raise ValueError(
        f"When `x` is a {kind}, do not pass `{argument}`: {what} must come from the {kind} itself, as part of "
        "each batch."
    )


def _refuse_separate_arrays(y, sample_weight, kind):
    if y is not None:
        _refuse("y", "the targets", kind)
    if sample_weight is not None:
        _refuse("sample_weight", "the sample weights", kind)


def _shuffle_ignored(shuffle, kind, expectation):
    if shuffle:
        warnings.warn(
            f"`shuffle=True` is ignored because `x` is {kind}: {expectation}",
            stacklevel=3,
        )


def get_data_adapter(x, y=None, sample_weight=None, batch_size=None, steps_per_epoch=None, shuffle=False, class_weight=None):
    """The adapter for ``x``: a :class:`PyDataset`, a torch DataLoader, a Python generator or iterator.

    As in Keras, such an ``x`` carries its own targets and sample weights:
    ``y`` and ``sample_weight`` are refused (ValueError). ``class_weight``
    (a dict) is applied per batch to a PyDataset's targets; it is refused for
    generators and DataLoaders, as Keras refuses it. ``shuffle`` reorders a
    finite PyDataset's batches each pass and is ignored with a warning
    elsewhere. ``batch_size`` and ``steps_per_epoch`` are accepted and
    ignored (the source makes its batches; :class:`EpochIterator` counts the
    steps), as in Keras 3. An adapter passed as ``x`` is returned as it is.

    Arrays are not handled here: :func:`is_array_like` says when ``x`` is
    for the trainer's own array path, and array-like ``x`` raises TypeError.
    Any other type raises TypeError.
    """
    del batch_size, steps_per_epoch  # the source makes its own batches
    if isinstance(x, DataAdapter):
        return x
    class_weight = check_class_weight(class_weight)
    if is_py_dataset(x):
        _refuse_separate_arrays(y, sample_weight, "PyDataset")
        if shuffle and x.num_batches is None:
            _shuffle_ignored(shuffle, "an endless PyDataset", "its batches are expected to come shuffled.")
            shuffle = False
        return PyDatasetAdapter(x, class_weight=class_weight, shuffle=shuffle)
    if is_torch_dataloader(x):
        _refuse_separate_arrays(y, sample_weight, "torch DataLoader")
        if class_weight is not None:
            raise ValueError(
                "`class_weight` is not supported with a torch DataLoader: have the dataset return "
                f"(inputs, targets, sample_weights) instead. Received: class_weight={class_weight!r:.100}"
            )
        _shuffle_ignored(shuffle, "a torch DataLoader", "shuffle in the DataLoader (`shuffle=True` there).")
        return TorchDataLoaderAdapter(x)
    if isinstance(x, (types.GeneratorType, collections.abc.Iterator)) and not is_array_like(x):
        kind = "generator" if isinstance(x, types.GeneratorType) else "iterator"
        _refuse_separate_arrays(y, sample_weight, kind)
        if class_weight is not None:
            raise ValueError(
                f"`class_weight` is not supported with a Python {kind}: have it yield (inputs, targets, "
                f"sample_weights) instead. Received: class_weight={class_weight!r:.100}"
            )
        _shuffle_ignored(shuffle, f"a {kind}", "it is expected to yield its batches already shuffled.")
        return GeneratorDataAdapter(x, kind=kind)
    if is_array_like(x):
        raise TypeError(
            f"`x` of type {type(x).__name__} is array data: it goes through the trainer's array path, not a "
            "data adapter (check with is_array_like first)."
        )
    raise TypeError(
        f"Unrecognized data type: x={x!r:.100} (of type {type(x).__name__}). Expected arrays (or lists or dicts of "
        "them), a PyDataset, a torch DataLoader, or a Python generator or iterator of batches."
    )
