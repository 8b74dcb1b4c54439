"""``PyDataset`` (Keras 3's ``keras.utils.PyDataset``) and the ordered thread prefetch that serves its workers."""

import collections
import concurrent.futures
import itertools
import warnings

__all__ = ["PyDataset", "Sequence"]


class PyDataset:
    """Base class for a dataset written in Python that yields whole batches, as Keras 3's.

    A subclass implements ``__getitem__(index)``, which returns one complete
    batch (``x``, ``(x,)``, ``(x, y)``, ``(x, y, sample_weight)`` or a dict
    of inputs), and ``__len__`` (the number of batches), or instead a
    ``num_batches`` property that may return None for an endless dataset. It
    may also implement ``on_epoch_begin`` and ``on_epoch_end`` (reshuffle,
    resample...), which ``fit`` calls around each epoch. Its ``__init__``
    should call ``super().__init__(**kwargs)``; a warning says so when it did
    not.

    Args:
        workers: How many threads fetch batches ahead of the training loop
            (1: none, batches are fetched in the loop's own thread). NumPy
            releases the GIL in most array work, so threads overlap loading
            and augmentation with training.
        use_multiprocessing: Accepted for compatibility with Keras; gpulayers
            serves it with the same threads (a process pool would need the
            dataset pickled into each worker, which gpulayers never does).
            As in Keras, ``workers=1`` with ``use_multiprocessing=True``
            fetches in one background thread.
        max_queue_size: The most batches fetched ahead at any time (at least
            1; a value below 1 means as many as ``workers``).

    Batches come back in index order whatever the number of workers. A batch
    whose ``__getitem__`` raised raises the same exception, with its
    traceback, in the training loop. The threads run only while an epoch is
    being iterated: the end of the epoch, an exception or a KeyboardInterrupt
    stops them (in-flight calls are waited for, queued ones cancelled).
    Iterating a PyDataset directly (``for batch in dataset``) uses no
    threads.
    """

    def __init__(self, workers=1, use_multiprocessing=False, max_queue_size=10):
        self._workers = workers
        self._use_multiprocessing = use_multiprocessing
        self._max_queue_size = max_queue_size

    def _warn_if_super_not_called(self):
        missing = False
        for name, default in (("_workers", 1), ("_use_multiprocessing", False), ("_max_queue_size", 10)):
            if not hasattr(self, name):
                setattr(self, name, default)
                missing = True
        if missing:
            warnings.warn(
                f"{type(self).__name__}.__init__ should call `super().__init__(**kwargs)`; the dataset now uses "
                "the defaults workers=1, use_multiprocessing=False, max_queue_size=10. Pass those arguments "
                "through **kwargs to PyDataset rather than to `fit()`, which does not take them.",
                stacklevel=3,
            )

    @property
    def workers(self):
        self._warn_if_super_not_called()
        return self._workers

    @workers.setter
    def workers(self, value):
        self._workers = value

    @property
    def use_multiprocessing(self):
        self._warn_if_super_not_called()
        return self._use_multiprocessing

    @use_multiprocessing.setter
    def use_multiprocessing(self, value):
        self._use_multiprocessing = value

    @property
    def max_queue_size(self):
        self._warn_if_super_not_called()
        return self._max_queue_size

    @max_queue_size.setter
    def max_queue_size(self, value):
        self._max_queue_size = value

    def __getitem__(self, index):
        """The batch at position ``index``."""
        raise NotImplementedError(f"{type(self).__name__} must implement `__getitem__(self, index)`.")

    @property
    def num_batches(self):
        """The number of batches, or None for an endless dataset (by default ``len(self)``)."""
        if hasattr(self, "__len__"):
            return len(self)
        raise NotImplementedError(
            f"{type(self).__name__} must implement `__len__` or a `num_batches` property "
            "(which may return None for an endless dataset)."
        )

    def __iter__(self):
        count = self.num_batches
        for index in itertools.count() if count is None else range(count):
            yield self[index]

    def on_epoch_begin(self):
        """Called at the start of every epoch."""

    def on_epoch_end(self):
        """Called at the end of every epoch."""


Sequence = PyDataset  # Keras exports the class under both names


class OrderedPrefetcher:
    """An iterator of ``transform(fetch(i))`` for ``i`` in ``indices``, in order.

    With ``workers`` > 0, up to ``depth`` calls of ``fetch`` run ahead on a
    pool of that many threads; with 0, each runs in the consumer's thread
    when its item is asked for. ``transform`` always runs in the consumer's
    thread (CuPy's current device and stream are per thread). :meth:`pause` stops the threads and keeps the
    position (the next item starts them again); :meth:`close` stops them for
    good. Both wait for the calls in flight and cancel the queued ones, so
    no thread outlives them. An exception raised by a call is raised by
    ``next()`` when its turn comes, with the worker's traceback, and closes
    the prefetcher.
    """

    def __init__(self, fetch, indices, workers=0, depth=1, transform=None, describe=None):
        self._fetch = fetch
        self._transform = transform if transform is not None else (lambda item: item)
        self._indices = iter(indices)
        self._workers = int(workers)
        self._depth = max(1, int(depth))
        self._describe = describe  # index -> text for a failed worker's note
        self._pending = collections.deque()  # (index, future), in order
        self._pool = None
        self._closed = False

    def __iter__(self):
        return self

    def __next__(self):
        if self._closed:
            raise StopIteration
        if not self._workers:
            try:
                return self._transform(self._fetch(next(self._indices)))
            except BaseException:
                self._closed = True
                raise
        try:
            self._start()
            self._fill()
            if not self._pending:
                raise StopIteration
            _, future = self._pending.popleft()
            item = future.result()
            self._fill()
            return self._transform(item)
        except BaseException:  # the end, a worker's exception, a KeyboardInterrupt while waiting
            self.close()
            raise

    def _run(self, index):
        try:
            return self._fetch(index)
        except Exception as exc:
            if self._describe is not None and hasattr(exc, "add_note"):
                exc.add_note(f"(raised in a worker thread while fetching {self._describe(index)})")
            raise

    def _start(self):
        if self._pool is not None:
            return
        self._pool = concurrent.futures.ThreadPoolExecutor(self._workers, thread_name_prefix="gpulayers-PyDataset")
        # What pause() cancelled before it started runs again, in its place.
        self._pending = collections.deque(
            (index, self._pool.submit(self._run, index) if future.cancelled() else future)
            for index, future in self._pending
        )

    def _fill(self):
        while len(self._pending) < self._depth:
            index = next(self._indices, _END)
            if index is _END:
                return
            self._pending.append((index, self._pool.submit(self._run, index)))

    def pause(self):
        """Stop the threads (cancel what has not started, wait for what has); the next item restarts them."""
        if self._pool is None:
            return
        for _, future in self._pending:
            future.cancel()
        pool, self._pool = self._pool, None
        pool.shutdown(wait=True)

    def close(self):
        """Stop the threads for good; the iterator then ends."""
        self._closed = True
        self.pause()
        self._pending.clear()

    def __del__(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


_END = object()
