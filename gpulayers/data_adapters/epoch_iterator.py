"""``EpochIterator``: Keras's epochs and steps over any data adapter."""

import numbers
import warnings
import weakref

from gpulayers.data_adapters.adapters import get_data_adapter

__all__ = ["RAN_OUT_OF_DATA", "EpochIterator"]

RAN_OUT_OF_DATA = (
    "Your input ran out of data; interrupting training. The generator or dataset must be able to produce at "
    "least `steps_per_epoch * epochs` batches: give fewer steps or epochs, or make the generator endless."
)


class EpochIterator:
    """Batches epoch by epoch, with Keras's meaning of ``steps_per_epoch``.

    ``enumerate_epoch()`` yields ``(step, (x, y, sample_weight))`` for one
    epoch, calling the adapter's ``on_epoch_begin`` first and its
    ``on_epoch_end`` when the epoch ends (also when the trainer breaks out of
    the loop; not when the data raised).

    - ``steps_per_epoch=None``: an epoch is one full pass (a PyDataset's or
      DataLoader's length, a generator until it stops).
    - ``steps_per_epoch=n``: an epoch is ``n`` batches, and the pass in
      progress continues into the next epoch (as in Keras). When the data
      ends before ``n`` batches, Keras's "Your input ran out of data"
      warning is issued and the epoch ends there. A finite PyDataset or
      DataLoader then starts a new pass at the next epoch (and so does one
      whose pass ended exactly at an epoch's end); a generator is
      :attr:`exhausted`.

    :meth:`peek` shows the batch the next epoch begins with (to build and
    check the model before the first step) without taking it.

    A one-shot source (generator, iterator) that has ended can give no more
    epochs: :meth:`out_of_data` says so (with the warning, once, if it was
    not issued when the data ended) so the trainer stops training.
    ``close()`` (or leaving a ``with`` block) ends the epoch in progress and
    stops every worker thread; the trainer calls it in a ``finally``. Between
    epochs a PyDataset's workers are stopped too and resume where they were.
    With ``device_arrays=True`` batches come from the adapter's
    ``get_device_iterator()`` (arrays already on a CUDA device stay there as
    CuPy arrays) instead of ``get_numpy_iterator()``.
    """

    def __init__(
        self, x, y=None, sample_weight=None, batch_size=None, steps_per_epoch=None, shuffle=False,
        class_weight=None, device_arrays=False,
    ):
        if steps_per_epoch is not None and (
            isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, numbers.Integral) or steps_per_epoch < 1
        ):
            raise ValueError(f"Invalid value for `steps_per_epoch`: expected None or a positive int. Received: {steps_per_epoch!r}")
        self.data_adapter = get_data_adapter(
            x, y=y, sample_weight=sample_weight, batch_size=batch_size, steps_per_epoch=steps_per_epoch,
            shuffle=shuffle, class_weight=class_weight,
        )
        self.steps_per_epoch = None if steps_per_epoch is None else int(steps_per_epoch)
        self._device_arrays = bool(device_arrays)
        self._iterator = None  # the pass in progress
        self._steps_seen = 0  # batches taken from it
        self._counted = None  # batches in a full pass, counted where the adapter did not know
        self._exhausted = False
        self._warning_owed = False  # a one-shot source ended at the end of a full pass, unwarned
        self._epoch = None  # weak reference to the running epoch's generator
        self._closing = False
        self._peeked = None  # a batch taken by peek(), the next epoch's first
        self._pass_ready = False  # peek() started the pass the next epoch uses

    @property
    def num_batches(self):
        """Steps per epoch: ``steps_per_epoch``, else the adapter's count, else the count of a finished pass (or None)."""
        if self.steps_per_epoch is not None:
            return self.steps_per_epoch
        known = self.data_adapter.num_batches
        return known if known is not None else self._counted

    @property
    def exhausted(self):
        """True once a one-shot source (generator, iterator) has ended: no batch will come again."""
        return self._exhausted

    def out_of_data(self):
        """Whether training must stop because a one-shot source has nothing left for another epoch.

        Call it before each epoch after the first. When the source ended
        without the warning (at the natural end of a full pass), the warning
        is issued now, since another epoch was wanted.
        """
        if self._exhausted and self._warning_owed:
            self._warning_owed = False
            _warn_ran_out()
        return self._exhausted

    def peek(self):
        """The batch the next epoch begins with, ``(x, y, sample_weight)``, without taking it; None if the data has ended.

        For building and checking the model before training: the batch is
        still the next epoch's step 0. Worker threads are stopped again
        before it returns; the adapter's epoch hooks are not called.
        """
        if self._peeked is not None:
            return self._peeked
        if self._exhausted:
            return None
        if self._starts_new_pass():
            self._new_pass()
            self._pass_ready = True
        try:
            self._peeked = next(self._iterator)
        except StopIteration:
            self._end_of_pass(self.data_adapter)
            return None
        except BaseException:
            self._close_pass()
            raise
        self._pause()
        return self._peeked

    def _starts_new_pass(self):
        """Whether an epoch begins with a new pass rather than the one in progress."""
        if self._pass_ready:
            return False
        return self._iterator is None or (self.steps_per_epoch is None and not self.data_adapter.one_shot)

    def enumerate_epoch(self):
        """A generator of ``(step, (x, y, sample_weight))`` for the next epoch (see the class)."""
        previous = self._epoch() if self._epoch is not None else None
        if previous is not None:
            previous.close()
        epoch = self._run_epoch()
        self._epoch = weakref.ref(epoch)
        return epoch

    def _run_epoch(self):
        adapter = self.data_adapter
        adapter.on_epoch_begin()
        try:
            if self._exhausted:
                self._warning_owed = False
                _warn_ran_out()
            else:
                yield from self._steps(adapter)
        except GeneratorExit:  # the trainer left the epoch early, or close()
            self._pause()
            if not self._closing:
                adapter.on_epoch_end()
            raise
        except BaseException:
            self._close_pass()
            raise
        self._pause()
        adapter.on_epoch_end()

    def _steps(self, adapter):
        if self._starts_new_pass():
            self._new_pass()
        self._pass_ready = False
        limit = self.steps_per_epoch
        step = 0
        while limit is None or step < limit:
            if self._peeked is not None:
                batch, self._peeked = self._peeked, None
            else:
                try:
                    batch = next(self._iterator)
                except StopIteration:
                    self._end_of_pass(adapter)
                    if limit is not None:
                        _warn_ran_out()
                    elif adapter.one_shot:
                        self._warning_owed = True
                    return
            self._steps_seen += 1
            yield step, batch
            step += 1
        # All the steps were taken: a pass of known length that is used up starts afresh next epoch.
        known = adapter.num_batches if adapter.num_batches is not None else self._counted
        if not adapter.one_shot and known is not None and self._steps_seen >= known:
            self._close_pass()

    def _new_pass(self):
        self._close_pass()
        adapter = self.data_adapter
        self._iterator = iter(adapter.get_device_iterator() if self._device_arrays else adapter.get_numpy_iterator())
        self._steps_seen = 0

    def _end_of_pass(self, adapter):
        if adapter.num_batches is None and (self._counted is None or not adapter.one_shot):
            self._counted = self._steps_seen
        self._close_pass()
        if adapter.one_shot:
            self._exhausted = True

    def _pause(self):
        pause = getattr(self._iterator, "pause", None)
        if pause is not None:
            pause()

    def _close_pass(self):
        iterator, self._iterator = self._iterator, None
        self._pass_ready = False
        if not self.data_adapter.one_shot:
            self._peeked = None  # it belonged to that pass; a one-shot stream's next batch it stays
        close = getattr(iterator, "close", None)
        if close is not None:
            close()

    def close(self):
        """End the epoch in progress (without the adapter's ``on_epoch_end``) and stop every worker thread.

        A later epoch starts a new pass (a one-shot source continues its stream).
        """
        epoch = self._epoch() if self._epoch is not None else None
        self._closing = True
        try:
            if epoch is not None:
                epoch.close()
        finally:
            self._closing = False
            self._epoch = None
            self._close_pass()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _warn_ran_out():
    warnings.warn(RAN_OUT_OF_DATA, stacklevel=4)
