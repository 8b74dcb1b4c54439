"""``BackupAndRestore``: Keras 3's fault-tolerance callback (``keras.callbacks.BackupAndRestore``).

A backup is two files in ``backup_dir``, with Keras's names:

- ``latest.weights.h5``: the weights and the optimizer state, in the
  ``.weights.h5`` layout of :func:`gpulayers.saving.save_weights`;
- ``training_metadata.json``: ``{"epoch": e, "batch": b}`` (Keras's keys:
  ``e`` epochs are complete; ``b`` is the last batch of a batch-level save),
  plus ``weights_sha256``, the digest of the weights file it goes with, and
  ``previous``, the same three entries for the backup it replaces.

With ``double_checkpoint`` the backup before the latest one is kept as
``latest.weights.h5.bkp`` and ``training_metadata.json.bkp``.

Every file is written atomically (a temporary file, fsync, ``os.replace``),
the metadata before the weights. A kill between the two leaves new metadata
beside the previous weights: their digest is the one under ``previous``, so
the previous backup is restored. A pair whose digests fit neither, or a file
that cannot be read, is a corrupted backup: the restore falls back to the
``.bkp`` pair when there is one (as Keras does), else raises ValueError.
Everything is checked before the model changes.

How ``fit`` resumes: as in Keras, ``on_train_begin`` sets
``model._initial_epoch`` to the number of epochs the backup holds, and
``fit`` (``gpulayers/models/training.py``) starts there, taking the value
right after ``callbacks.on_train_begin()``.

Differences from Keras 3.15, all deliberate:

- a corrupted backup raises ValueError (Keras: the OSError of h5py, or the
  JSON error of a damaged metadata file, after the weights were loaded);
  the fallback to the ``.bkp`` pair also covers damaged metadata and
  weights that do not fit the model, and leaves the latest pair as it was
  when the ``.bkp`` pair is unusable too;
- ``save_freq`` must be ``"epoch"`` or an int >= 1: Keras's ``False``
  (TensorFlow's preemption checkpointing) is refused, and the flags must be
  bools;
- a batch-level save records the epoch running (Keras records the epochs
  this callback saw end, wrong in a fit that starts at a later epoch);
- at the end of a successful ``fit`` only the backup's files are deleted,
  then ``backup_dir`` if that leaves it empty (Keras removes the whole
  directory, whatever else it holds);
- ``fit`` forgets the restored epoch once it has used it (a Keras model
  keeps it, so its next ``fit`` starts at that epoch too).
"""

import hashlib
import io
import json
import numbers
import os
import shutil
import warnings

import numpy as np

from gpulayers.argument_validation import standardize_bool
from gpulayers.callbacks import Callback
from gpulayers.saving.archive import atomic_write
from gpulayers.saving.weights_file import assign, read_weights, weights_size_limit, weights_to_h5_bytes

__all__ = ["BackupAndRestore"]

WEIGHTS_FILE = "latest.weights.h5"
METADATA_FILE = "training_metadata.json"
PREVIOUS_SUFFIX = ".bkp"
_MAX_METADATA_BYTES = 64 * 1024


def _check_backup_dir(backup_dir):
    if backup_dir is None or (isinstance(backup_dir, (str, bytes)) and not backup_dir):
        raise ValueError(
            f"Empty `backup_dir` argument passed: expected the path of a directory. Received: backup_dir={backup_dir!r}"
        )
    if not isinstance(backup_dir, (str, os.PathLike)):
        raise TypeError(
            "Invalid type for `backup_dir`: expected a path string or os.PathLike. "
            f"Received: backup_dir={backup_dir!r} of type {type(backup_dir).__name__}"
        )
    path = os.fspath(backup_dir)
    if not isinstance(path, str) or not path:
        raise ValueError(f"Invalid value for `backup_dir`: expected a non-empty path string. Received: backup_dir={backup_dir!r}")
    return path


def _check_save_freq(save_freq):
    if isinstance(save_freq, str) and save_freq == "epoch":
        return save_freq
    if isinstance(save_freq, (bool, np.bool_)) or not isinstance(save_freq, numbers.Integral) or save_freq < 1:
        note = " (preemption checkpointing, save_freq=False, is TensorFlow's and not supported)" if save_freq is False else ""
        raise ValueError(
            f"Invalid value for `save_freq`: expected 'epoch' or an int >= 1{note}. Received: save_freq={save_freq!r}"
        )
    return int(save_freq)


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_record(value, label, key=None):
    """``{"epoch", "batch", "weights_sha256"}`` from a metadata file, checked; ``batch`` and the digest may be
    absent (a Keras file has no digest)."""
    where = f"`{key}` in {label}" if key else label
    if not isinstance(value, dict):
        raise ValueError(f"Invalid backup metadata {where}: expected a JSON object. Received: {value!r:.80}")
    epoch, batch, digest = value.get("epoch"), value.get("batch", 0), value.get("weights_sha256")
    if not _is_count(epoch) or not _is_count(batch):
        raise ValueError(
            f"Invalid backup metadata {where}: `epoch` and `batch` must be ints >= 0. "
            f"Received: epoch={epoch!r}, batch={batch!r}"
        )
    if digest is not None and (not isinstance(digest, str) or len(digest) != 64
                               or any(c not in "0123456789abcdef" for c in digest)):
        raise ValueError(f"Invalid backup metadata {where}: `weights_sha256` must be a sha256 hex digest. Received: {digest!r:.80}")
    return {"epoch": epoch, "batch": batch, "weights_sha256": digest}


def _read_bytes(path, limit, what):
    size = os.path.getsize(path)
    if size > limit:
        raise ValueError(f"Invalid backup {what} {path}: {size} bytes, more than the {limit} allowed.")
    with open(path, "rb") as f:
        return f.read(limit + 1)


def _read_metadata(path):
    """The checked metadata file: ``(record, previous record or None)``."""
    data = _read_bytes(path, _MAX_METADATA_BYTES, "metadata")
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"Invalid backup metadata {path}: not valid JSON ({exc}).") from None
    record = _check_record(value, path)
    previous = value.get("previous")
    if previous is not None:
        previous = _check_record(previous, path, "previous")
    return record, previous


def _copy_atomically(source, target):
    with open(source, "rb") as src:
        atomic_write(target, lambda out: shutil.copyfileobj(src, out))


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


class BackupAndRestore(Callback):
    """Backs up the training state so that an interrupted ``fit`` resumes where it stopped.

    At the end of every epoch (or every ``save_freq`` batches) the weights,
    the optimizer state and the epoch counter are saved in ``backup_dir``,
    replacing the last backup. When ``fit`` starts and a backup exists, the
    model gets its weights and optimizer state back and ``fit`` starts at
    the epoch after the last one the backup holds (a batch-level backup
    restarts its epoch from the first batch). A successful ``fit`` deletes
    the backup unless ``delete_checkpoint=False``. The model restored must
    be the one backed up, compiled the same way.

    Args:
        backup_dir: path of the directory for the backup, used by this
            callback alone (created when needed).
        save_freq: ``"epoch"`` to save at the end of each epoch, or an int
            >= 1 to save every ``save_freq`` training batches.
        double_checkpoint: also keep the backup before the latest one, to be
            restored when the latest one cannot be read (a corrupted file).
        delete_checkpoint: delete the backup at the end of a successful fit.

    Raises:
        ValueError: an empty ``backup_dir`` or a bad ``save_freq``;
            ``fit`` raises it from ``on_train_begin`` for an unbuilt model or
            a backup that cannot be restored (before any weight changes).
        TypeError: a ``backup_dir`` that is not a path, or flags that are
            not bools.

    Example:
        >>> backup = BackupAndRestore("/tmp/backup")
        >>> model.fit(x, y, epochs=10, callbacks=[backup])  # interrupted at epoch 4
        >>> model.fit(x, y, epochs=10, callbacks=[backup])  # runs epochs 4 to 9
    """

    def __init__(self, backup_dir, save_freq="epoch", double_checkpoint=False, delete_checkpoint=True):
        super().__init__()
        self.backup_dir = _check_backup_dir(backup_dir)
        self.save_freq = _check_save_freq(save_freq)
        self.double_checkpoint = standardize_bool(double_checkpoint, "double_checkpoint")
        self.delete_checkpoint = standardize_bool(delete_checkpoint, "delete_checkpoint")
        self._weights_path = os.path.join(self.backup_dir, WEIGHTS_FILE)
        self._training_metadata_path = os.path.join(self.backup_dir, METADATA_FILE)
        self._prev_weights_path = self._weights_path + PREVIOUS_SUFFIX
        self._prev_training_metadata_path = self._training_metadata_path + PREVIOUS_SUFFIX
        self._batches_seen_since_last_saving = 0
        self._last_batch_seen = 0
        self._current_epoch = 0
        # The record of the weights file now at _weights_path (None: none written or restored), so the
        # next save can name it as `previous`.
        self._on_disk = None

    # ------------------------------------------------------------ hooks

    def on_train_begin(self, logs=None):
        model = self.model
        if not model.built:
            raise ValueError(
                "To use the BackupAndRestore callback, your model must be built before you call `fit()`. "
                f"Model {model.name!r} is unbuilt: build it by calling it on a batch of data, or give it an Input."
            )
        if os.path.exists(self.backup_dir) and not os.path.isdir(self.backup_dir):
            raise ValueError(f"Invalid value for `backup_dir`: {self.backup_dir!r} exists and is not a directory.")
        record = self._restore()
        if record is not None:
            model._initial_epoch = record["epoch"]

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        self._current_epoch = epoch + 1
        self._last_batch_seen = 0
        if self.save_freq == "epoch":
            self._save()

    def on_train_batch_end(self, batch, logs=None):
        if self._should_save_on_batch(batch):
            self._save()

    def on_train_end(self, logs=None):
        if self.delete_checkpoint:
            self._delete()

    # ------------------------------------------------------------ saving

    def _should_save_on_batch(self, batch):
        """Counts the batches since the last save (``batch`` is the last step of an execution)."""
        if self.save_freq == "epoch":
            return False
        # A batch index not above the last one starts a new epoch.
        self._batches_seen_since_last_saving += batch + 1 if batch <= self._last_batch_seen else batch - self._last_batch_seen
        self._last_batch_seen = batch
        if self._batches_seen_since_last_saving >= self.save_freq:
            self._batches_seen_since_last_saving = 0
            return True
        return False

    def _save(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        data = weights_to_h5_bytes(self.model)
        if self.double_checkpoint:
            # The latest pair becomes the previous one; metadata first, as below.
            for latest, previous in ((self._training_metadata_path, self._prev_training_metadata_path),
                                     (self._weights_path, self._prev_weights_path)):
                if os.path.isfile(latest):
                    _copy_atomically(latest, previous)
        record = {"epoch": self._current_epoch, "batch": self._last_batch_seen,
                  "weights_sha256": hashlib.sha256(data).hexdigest()}
        text = json.dumps({**record, "previous": self._on_disk})
        # Metadata before weights: a kill in between leaves the previous weights, which `previous` names.
        atomic_write(self._training_metadata_path, lambda f: f.write(text.encode("utf-8")))
        atomic_write(self._weights_path, lambda f: f.write(data))
        self._on_disk = record

    def _delete(self):
        names = (WEIGHTS_FILE, METADATA_FILE, WEIGHTS_FILE + PREVIOUS_SUFFIX, METADATA_FILE + PREVIOUS_SUFFIX)
        self._on_disk = None
        if not os.path.isdir(self.backup_dir):
            return
        for entry in os.listdir(self.backup_dir):
            # Our files, and the temporary files a killed atomic write left (".<name>.<random>.tmp").
            ours = entry in names or (entry.endswith(".tmp") and any(entry.startswith(f".{n}.") for n in names))
            if ours:
                _remove(os.path.join(self.backup_dir, entry))
        left = os.listdir(self.backup_dir)
        if left:
            warnings.warn(
                f"BackupAndRestore deleted its backup but kept {self.backup_dir}, which holds other files: "
                f"{', '.join(sorted(left)[:5])}{', ...' if len(left) > 5 else ''}.",
                stacklevel=2,
            )
            return
        os.rmdir(self.backup_dir)

    # ------------------------------------------------------------ restoring

    def _restore(self):
        """Load the latest backup (or the previous one when it is corrupted); returns its record or None."""
        try:
            found = self._read_pair(self._training_metadata_path, self._weights_path)
        except (OSError, ValueError) as exc:
            if not os.path.isfile(self._prev_weights_path):
                raise ValueError(
                    f"BackupAndRestore cannot restore the backup in {self.backup_dir}: {exc} "
                    "Delete the directory to train from the start."
                ) from None
            try:
                found = self._read_pair(self._prev_training_metadata_path, self._prev_weights_path)
            except (OSError, ValueError) as prev_exc:
                raise ValueError(
                    f"BackupAndRestore cannot restore the backup in {self.backup_dir}: the latest one is unusable "
                    f"({exc}) and so is the previous one ({prev_exc}). Delete the directory to train from the start."
                ) from None
            if found is None:  # no whole previous backup either
                raise ValueError(
                    f"BackupAndRestore cannot restore the backup in {self.backup_dir}: {exc} The previous backup "
                    "is incomplete. Delete the directory to train from the start."
                ) from None
            # The previous pair replaces the corrupted one, so the next save keeps it as the previous backup.
            if os.path.isfile(self._prev_training_metadata_path):
                _copy_atomically(self._prev_training_metadata_path, self._training_metadata_path)
            else:
                _remove(self._training_metadata_path)
            _copy_atomically(self._prev_weights_path, self._weights_path)
        if found is None:
            self._on_disk = None
            return None
        record, arrays, state, label = found
        assign(self.model, arrays, state, label)
        self._on_disk = record
        return record

    def _read_pair(self, metadata_path, weights_path):
        """The checked contents of one backup, ``(record, arrays, optimizer state, label)``, or None when it
        holds no complete backup; nothing is assigned."""
        has_metadata, has_weights = os.path.isfile(metadata_path), os.path.isfile(weights_path)
        if not has_metadata and not has_weights:
            return None
        record, previous = _read_metadata(metadata_path) if has_metadata else ({"epoch": 0, "batch": 0}, None)
        if not has_weights:
            if previous is None:
                return None  # the first save was killed before its weights were written
            raise ValueError(f"Invalid backup {metadata_path}: its weights file {weights_path} is missing.")
        data = _read_bytes(weights_path, weights_size_limit(self.model), "weights file")
        digest = hashlib.sha256(data).hexdigest()
        if record.get("weights_sha256") not in (None, digest):
            if previous is None or previous["weights_sha256"] != digest:
                raise ValueError(
                    f"Invalid backup {weights_path}: its contents do not match the digest in {metadata_path} "
                    "(a damaged or replaced file)."
                )
            record = previous  # killed between the two writes of a save: the previous backup is whole
        arrays, state = read_weights(io.BytesIO(data), self.model, weights_path)
        return {"epoch": record["epoch"], "batch": record["batch"], "weights_sha256": digest}, arrays, state, weights_path
