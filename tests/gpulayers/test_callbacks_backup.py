"""Tests for gpulayers.callbacks_backup.BackupAndRestore against Keras 3.15's behaviour.

A fit interrupted by a callback that raises (as in Keras's own tests) and
resumed by a second fit must end with exactly the weights, non-trainable
state and optimizer state of a fit that was never interrupted.

``fit`` resumes at ``model._initial_epoch`` once training.py takes it after
``on_train_begin`` (see the module docstring of callbacks_backup). Until it
does, the autouse fixture below applies that one line around
``Trainer._fit_epochs``; it steps aside once ``Trainer`` has the attribute.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from gpulayers import callbacks_backup
from gpulayers.callbacks import Callback
from gpulayers.callbacks_backup import BackupAndRestore
from gpulayers.layers import BatchNormalization, Dense, Input
from gpulayers.models import Sequential
from gpulayers.optimizers import Adam

EPOCHS = 5
BATCH = 4  # 10 samples: 3 batches an epoch


def data():
    rng = np.random.default_rng(0)
    return rng.random((10, 3), dtype=np.float32), rng.random((10, 1), dtype=np.float32)


def make_model(seed=0):
    """Adam (two slots per weight) and BatchNormalization (non-trainable moving statistics)."""
    model = Sequential([Input((3,)), Dense(4, activation="relu"), BatchNormalization(), Dense(1)])
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal(w.shape).astype(np.float32) for w in model.get_weights()]
    weights[5] = np.abs(weights[5]) + 0.5  # BatchNormalization's moving variance
    model.set_weights(weights)
    model.compile(optimizer=Adam(learning_rate=0.01), loss="mse", metrics=["mae"])
    return model


def fit(model, x, y, epochs=EPOCHS, callbacks=(), **kwargs):
    return model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0, callbacks=list(callbacks),
                     **kwargs)


def state(model):
    opt = model.optimizer.export_state(model.trainable_weights)
    return model.get_weights(), opt["iterations"], opt["slots"]


def assert_same_state(model, reference):
    weights, iterations, slots = state(model)
    ref_weights, ref_iterations, ref_slots = state(reference)
    assert iterations == ref_iterations
    assert len(weights) == len(ref_weights) and len(slots) == len(ref_slots) > 0
    for got, want in zip(weights + slots, ref_weights + ref_slots):
        assert got.dtype == want.dtype and np.array_equal(got, want)  # bit for bit


class Interrupt(Callback):
    """Raises at the end of the ``epochs``-th epoch or of the ``batches``-th batch it sees."""

    def __init__(self, epochs=None, batches=None):
        super().__init__()
        self.epochs, self.batches, self.epoch_count, self.batch_count = epochs, batches, 0, 0

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_count += 1
        if self.epoch_count == self.epochs:
            raise RuntimeError("EpochInterruption")

    def on_batch_end(self, batch, logs=None):
        self.batch_count += 1
        if self.batch_count == self.batches:
            raise RuntimeError("StepsInterruption")


def interrupted_fit(model, backup, **interrupt):
    x, y = data()
    with pytest.raises(RuntimeError, match="Interruption"):
        fit(model, x, y, callbacks=[backup, Interrupt(**interrupt)])


def metadata(path):
    with open(path) as f:
        return json.load(f)


def reference_after_epochs():
    x, y = data()
    reference = make_model()
    fit(reference, x, y)
    return reference


# ---------------------------------------------------------------- resuming


def test_resume_after_epoch_interruption_is_bit_exact(tmp_path):
    backup_dir = str(tmp_path / "backup")
    x, y = data()
    interrupted_fit(make_model(), BackupAndRestore(backup_dir), epochs=2)
    backup = BackupAndRestore(backup_dir)
    assert metadata(backup._training_metadata_path)["epoch"] == 2
    assert not os.path.exists(backup._prev_weights_path)  # single checkpoint

    # A new process: another model object with other weights, and a new callback.
    resumed = make_model(seed=7)
    history = fit(resumed, x, y, callbacks=[backup])
    assert history.epoch == [2, 3, 4] and len(history.history["loss"]) == 3
    assert_same_state(resumed, reference_after_epochs())
    assert not os.path.exists(backup_dir)  # deleted after the successful fit
    assert backup._current_epoch == EPOCHS


def test_resume_with_the_same_model_and_callback(tmp_path):
    """Keras's own test: the same objects fit again after the interruption."""
    x, y = data()
    model, backup = make_model(), BackupAndRestore(str(tmp_path / "b"))
    interrupted_fit(model, backup, epochs=2)
    assert backup._current_epoch == 2
    history = fit(model, x, y, callbacks=[backup])
    assert history.epoch == [2, 3, 4] and backup._current_epoch == EPOCHS
    assert_same_state(model, reference_after_epochs())
    # fit used the restored epoch once: the next fit starts where it is told to.
    assert fit(model, x, y, epochs=2).epoch == [0, 1]


def test_no_backup_trains_from_the_start(tmp_path):
    x, y = data()
    model = make_model()
    history = fit(model, x, y, callbacks=[BackupAndRestore(str(tmp_path / "b"))])
    assert history.epoch == list(range(EPOCHS))
    assert_same_state(model, reference_after_epochs())


def test_save_freq_batches_restarts_the_interrupted_epoch(tmp_path):
    """save_freq=1, interrupted after 2 of epoch 0's 3 batches: the backup holds those 2 steps, and the resumed
    fit runs all 5 epochs from there (Keras restores the epoch, not the batch)."""
    backup_dir = str(tmp_path / "b")
    x, y = data()
    backup = BackupAndRestore(backup_dir, save_freq=1)
    interrupted_fit(make_model(), backup, batches=2)
    assert (backup._current_epoch, backup._last_batch_seen) == (0, 1)
    assert {k: metadata(backup._training_metadata_path)[k] for k in ("epoch", "batch")} == {"epoch": 0, "batch": 1}
    resumed = make_model(seed=3)
    assert fit(resumed, x, y, callbacks=[BackupAndRestore(backup_dir, save_freq=1)]).epoch == list(range(EPOCHS))

    reference = make_model()
    fit(reference, x[:2 * BATCH], y[:2 * BATCH], epochs=1)
    fit(reference, x, y)
    assert_same_state(resumed, reference)
    assert resumed.optimizer.iterations == 2 + 3 * EPOCHS


def test_save_freq_counts_batches_across_epochs(tmp_path):
    """save_freq=2 saves after the 2nd and the 4th batch; the 4th is the first of epoch 1."""
    backup_dir = str(tmp_path / "b")
    x, y = data()
    backup = BackupAndRestore(backup_dir, save_freq=2)
    interrupted_fit(make_model(), backup, batches=5)
    saved = metadata(backup._training_metadata_path)
    assert (saved["epoch"], saved["batch"]) == (1, 0)
    resumed = make_model(seed=3)
    assert fit(resumed, x, y, callbacks=[BackupAndRestore(backup_dir, save_freq=2)]).epoch == [1, 2, 3, 4]

    reference = make_model()
    fit(reference, x, y, epochs=1)
    fit(reference, x[:BATCH], y[:BATCH], epochs=1)
    fit(reference, x, y, epochs=EPOCHS - 1)
    assert_same_state(resumed, reference)


def test_batch_save_in_a_later_fit_records_the_running_epoch(tmp_path):
    """A new callback in a resumed fit that starts at epoch 2 records epoch 2 for its batch saves."""
    backup_dir = str(tmp_path / "b")
    x, y = data()
    interrupted_fit(make_model(), BackupAndRestore(backup_dir), epochs=2)
    backup = BackupAndRestore(backup_dir, save_freq=1, delete_checkpoint=False)
    with pytest.raises(RuntimeError):
        fit(make_model(), x, y, callbacks=[backup, Interrupt(batches=2)])
    saved = metadata(backup._training_metadata_path)
    assert (saved["epoch"], saved["batch"]) == (2, 1)


def test_keras_written_metadata_without_digest_is_restored(tmp_path):
    """Keras's metadata file holds only epoch and batch."""
    backup_dir = tmp_path / "b"
    backup_dir.mkdir()
    x, y = data()
    two_epochs = make_model()
    fit(two_epochs, x, y, epochs=2)
    two_epochs.save_weights(str(backup_dir / "latest.weights.h5"))
    (backup_dir / "training_metadata.json").write_text(json.dumps({"epoch": 2, "batch": 0}))
    resumed = make_model(seed=5)
    assert fit(resumed, x, y, callbacks=[BackupAndRestore(backup_dir)]).epoch == [2, 3, 4]
    assert_same_state(resumed, reference_after_epochs())


def test_backup_dir_as_pathlike(tmp_path):
    backup = BackupAndRestore(tmp_path / "b", delete_checkpoint=False)
    assert backup.backup_dir == str(tmp_path / "b")
    x, y = data()
    fit(make_model(), x, y, epochs=1, callbacks=[backup])
    assert os.path.isfile(backup._weights_path)


# ---------------------------------------------------------------- a save cut short


def test_kill_between_metadata_and_weights_restores_the_previous_backup(tmp_path, monkeypatch):
    """The third save stops after its metadata (a kill): the weights file is the second save's, and the
    metadata names it as `previous`, so the resume starts after epoch 2, bit for bit."""
    backup_dir = str(tmp_path / "b")
    x, y = data()
    backup = BackupAndRestore(backup_dir)
    real_write = callbacks_backup.atomic_write
    weight_writes = []

    def write(path, writer):
        if path == backup._weights_path:
            weight_writes.append(path)
            if len(weight_writes) == 3:
                raise RuntimeError("StepsInterruption: killed mid-save")
        real_write(path, writer)

    monkeypatch.setattr(callbacks_backup, "atomic_write", write)
    with pytest.raises(RuntimeError, match="mid-save"):
        fit(make_model(), x, y, callbacks=[backup])
    monkeypatch.setattr(callbacks_backup, "atomic_write", real_write)
    saved = metadata(backup._training_metadata_path)
    assert saved["epoch"] == 3 and saved["previous"]["epoch"] == 2

    resumed = make_model(seed=9)
    assert fit(resumed, x, y, callbacks=[BackupAndRestore(backup_dir)]).epoch == [2, 3, 4]
    assert_same_state(resumed, reference_after_epochs())


def test_first_save_cut_short_trains_from_the_start(tmp_path, monkeypatch):
    backup_dir = str(tmp_path / "b")
    x, y = data()
    backup = BackupAndRestore(backup_dir)
    real_write = callbacks_backup.atomic_write

    def write(path, writer):
        if path == backup._weights_path:
            raise RuntimeError("killed mid-save")
        real_write(path, writer)

    monkeypatch.setattr(callbacks_backup, "atomic_write", write)
    with pytest.raises(RuntimeError):
        fit(make_model(), x, y, callbacks=[backup])
    monkeypatch.setattr(callbacks_backup, "atomic_write", real_write)
    assert os.path.isfile(backup._training_metadata_path) and not os.path.exists(backup._weights_path)
    model = make_model()
    assert fit(model, x, y, callbacks=[BackupAndRestore(backup_dir)]).epoch == list(range(EPOCHS))
    assert_same_state(model, reference_after_epochs())


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from gpulayers.callbacks import Callback
    from gpulayers.callbacks_backup import BackupAndRestore
    from gpulayers.layers import Dense, Input
    from gpulayers.models import Sequential

    class Saved(Callback):
        def on_train_batch_end(self, batch, logs=None):
            print(batch, flush=True)

    model = Sequential([Input((3,)), Dense(64), Dense(64), Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    x = np.zeros((6, 3), dtype="float32")
    model.fit(x, x[:, :1], batch_size=2, epochs=10**6, shuffle=False, verbose=0,
              callbacks=[BackupAndRestore(sys.argv[1], save_freq=1, double_checkpoint=True), Saved()])
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_backup_survives_sigkill_at_random_moments(tmp_path):
    """After each kill the backup restores, and its weights file is the one its counters name: the optimizer
    made exactly 3 * epoch + batch + 1 steps (3 batches an epoch, a save after each)."""
    env = dict(os.environ, PYTHONPATH=ROOT, GPULAYERS_BACKEND="numpy")
    rng = np.random.default_rng(0)
    for run in range(4):
        backup_dir = str(tmp_path / f"b{run}")  # a fresh run each time (the child does not resume)
        child = subprocess.Popen([sys.executable, "-c", CHILD, backup_dir], env=env, stdout=subprocess.PIPE, text=True)
        child.stdout.readline()  # one save done
        time.sleep(rng.uniform(0.0, 0.3))
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        model = Sequential([Input((3,)), Dense(64), Dense(64), Dense(1)])
        model.compile(optimizer="adam", loss="mse")
        backup = BackupAndRestore(backup_dir, save_freq=1, double_checkpoint=True)
        backup.set_model(model)
        backup.on_train_begin()
        record = backup._on_disk
        assert record is not None
        assert model.optimizer.iterations == 3 * record["epoch"] + record["batch"] + 1


# ---------------------------------------------------------------- double_checkpoint and corrupted files


def corrupt(path):
    with open(path, "wb") as f:
        f.write(b"0garbage\x00\xff")


@pytest.mark.parametrize("damaged", ["weights", "metadata", "both"])
def test_double_checkpoint_falls_back_to_the_previous_backup(tmp_path, damaged):
    backup_dir = str(tmp_path / "b")
    x, y = data()
    backup = BackupAndRestore(backup_dir, double_checkpoint=True)
    interrupted_fit(make_model(), backup, epochs=3)
    assert metadata(backup._training_metadata_path)["epoch"] == 3
    assert metadata(backup._prev_training_metadata_path)["epoch"] == 2
    if damaged in ("weights", "both"):
        corrupt(backup._weights_path)
    if damaged in ("metadata", "both"):
        corrupt(backup._training_metadata_path)

    # Restore only (fit has no epochs left to run), keeping the files to look at.
    probe = make_model(seed=4)
    keep = BackupAndRestore(backup_dir, double_checkpoint=True, delete_checkpoint=False)
    assert fit(probe, x, y, epochs=2, callbacks=[keep]).epoch == []
    two_epochs = make_model()
    fit(two_epochs, x, y, epochs=2)
    assert_same_state(probe, two_epochs)
    # The previous backup replaced the damaged one.
    with open(backup._weights_path, "rb") as a, open(backup._prev_weights_path, "rb") as b:
        assert a.read() == b.read()
    assert metadata(backup._training_metadata_path)["epoch"] == 2

    resumed = make_model(seed=6)
    history = fit(resumed, x, y, callbacks=[BackupAndRestore(backup_dir, double_checkpoint=True)])
    assert history.epoch == [2, 3, 4]
    assert_same_state(resumed, reference_after_epochs())
    assert not os.path.exists(backup_dir)


def test_corrupted_backup_without_a_previous_one_is_a_clear_error(tmp_path):
    backup_dir = str(tmp_path / "b")
    x, y = data()
    backup = BackupAndRestore(backup_dir)
    interrupted_fit(make_model(), backup, epochs=2)
    corrupt(backup._weights_path)
    files = {name: (tmp_path / "b" / name).read_bytes() for name in os.listdir(backup_dir)}
    model = make_model(seed=2)
    before = state(model)
    with pytest.raises(ValueError, match="cannot restore the backup in .*latest.weights.h5.*Delete the directory"):
        fit(model, x, y, callbacks=[BackupAndRestore(backup_dir)])
    after = state(model)  # nothing changed: the model, its optimizer, the files
    assert after[1] == before[1] == 0
    assert all(np.array_equal(a, b) for a, b in zip(after[0], before[0]))
    assert {name: (tmp_path / "b" / name).read_bytes() for name in os.listdir(backup_dir)} == files


def test_both_backups_corrupted_is_a_clear_error(tmp_path):
    backup_dir = str(tmp_path / "b")
    x, y = data()
    backup = BackupAndRestore(backup_dir, double_checkpoint=True)
    interrupted_fit(make_model(), backup, epochs=3)
    corrupt(backup._weights_path)
    corrupt(backup._prev_weights_path)
    with pytest.raises(ValueError, match="latest one is unusable .* and so is the previous one"):
        fit(make_model(), x, y, callbacks=[BackupAndRestore(backup_dir, double_checkpoint=True)])


def test_weights_of_another_model_are_refused(tmp_path):
    backup_dir = str(tmp_path / "b")
    x, y = data()
    interrupted_fit(make_model(), BackupAndRestore(backup_dir), epochs=1)
    other = Sequential([Input((3,)), Dense(2), Dense(1)])
    other.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="cannot restore the backup"):
        fit(other, x, y, callbacks=[BackupAndRestore(backup_dir)])


@pytest.mark.parametrize("content", [
    {"epoch": -1, "batch": 0}, {"epoch": True, "batch": 0}, {"epoch": 1.5}, [1, 2],
    {"epoch": 1, "batch": 0, "weights_sha256": "xyz"},
])
def test_invalid_metadata_is_refused(tmp_path, content):
    backup_dir = tmp_path / "b"
    backup_dir.mkdir()
    x, y = data()
    model = make_model()
    model.save_weights(str(backup_dir / "latest.weights.h5"))
    (backup_dir / "training_metadata.json").write_text(json.dumps(content))
    with pytest.raises(ValueError, match="Invalid backup metadata"):
        fit(make_model(), x, y, callbacks=[BackupAndRestore(backup_dir)])


def test_double_checkpoint_rotates_each_save(tmp_path):
    backup_dir = str(tmp_path / "b")
    x, y = data()
    backup = BackupAndRestore(backup_dir, double_checkpoint=True, delete_checkpoint=False)
    fit(make_model(), x, y, epochs=3, callbacks=[backup])
    assert metadata(backup._training_metadata_path)["epoch"] == 3
    previous = metadata(backup._prev_training_metadata_path)
    assert previous["epoch"] == 2 and metadata(backup._training_metadata_path)["previous"]["weights_sha256"] == \
        previous["weights_sha256"]


# ---------------------------------------------------------------- delete_checkpoint


def test_delete_checkpoint_false_keeps_the_backup(tmp_path):
    backup_dir = str(tmp_path / "b")
    x, y = data()
    backup = BackupAndRestore(backup_dir, delete_checkpoint=False)
    fit(make_model(), x, y, epochs=2, callbacks=[backup])
    assert sorted(os.listdir(backup_dir)) == ["latest.weights.h5", "training_metadata.json"]
    assert metadata(backup._training_metadata_path)["epoch"] == 2
    # A later fit resumes from it: two more epochs.
    model = make_model(seed=1)
    assert fit(model, x, y, epochs=4, callbacks=[backup]).epoch == [2, 3]


def test_delete_checkpoint_keeps_other_files(tmp_path):
    backup_dir = tmp_path / "b"
    x, y = data()
    backup = BackupAndRestore(backup_dir, double_checkpoint=True)
    backup_dir.mkdir()
    (backup_dir / "notes.txt").write_text("mine")
    (backup_dir / ".latest.weights.h5.abc123.tmp").write_bytes(b"left by a kill")
    with pytest.warns(UserWarning, match="holds other files: notes.txt"):
        fit(make_model(), x, y, epochs=2, callbacks=[backup])
    assert os.listdir(backup_dir) == ["notes.txt"]


def test_interrupted_fit_keeps_the_backup(tmp_path):
    backup_dir = str(tmp_path / "b")
    interrupted_fit(make_model(), BackupAndRestore(backup_dir), epochs=1)
    assert os.path.isfile(os.path.join(backup_dir, "latest.weights.h5"))


# ---------------------------------------------------------------- arguments


@pytest.mark.parametrize("backup_dir", ["", None])
def test_empty_backup_dir(backup_dir):
    with pytest.raises(ValueError, match=r"Empty `backup_dir` argument passed.*Received: backup_dir="):
        BackupAndRestore(backup_dir)


@pytest.mark.parametrize("backup_dir", [5, ["dir"], b"dir"])
def test_backup_dir_type(backup_dir):
    with pytest.raises(TypeError, match="`backup_dir`"):
        BackupAndRestore(backup_dir)


@pytest.mark.parametrize("save_freq", ["batch", 0.15, 0, -1, True, False, None, "EPOCH"])
def test_invalid_save_freq(save_freq):
    with pytest.raises(ValueError, match=r"Invalid value for `save_freq`.*Received: save_freq="):
        BackupAndRestore("b", save_freq=save_freq)


def test_save_freq_accepts_numpy_ints():
    assert BackupAndRestore("b", save_freq=np.int64(3)).save_freq == 3


@pytest.mark.parametrize("name", ["double_checkpoint", "delete_checkpoint"])
def test_flags_must_be_bools(name):
    with pytest.raises(TypeError, match=f"`{name}`.*Received: {name}='yes'"):
        BackupAndRestore("b", **{name: "yes"})


def test_unbuilt_model_is_refused(tmp_path):
    model = Sequential([Dense(1)])
    backup = BackupAndRestore(str(tmp_path / "b"))
    backup.set_model(model)
    with pytest.raises(ValueError, match="must be built"):
        backup.on_train_begin()


def test_backup_dir_that_is_a_file_is_refused_before_training(tmp_path):
    path = tmp_path / "b"
    path.write_text("not a directory")
    x, y = data()
    model = make_model()
    with pytest.raises(ValueError, match="is not a directory"):
        fit(model, x, y, callbacks=[BackupAndRestore(path)])
    assert model.optimizer.iterations == 0
