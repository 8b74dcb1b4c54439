"""Saves survive kill -9 and SIGTERM: child processes save in a loop and are killed at random moments.

After each kill the files on disk must load completely and hold one whole
generation of weights (never a mix, never a truncated file); a SIGTERM
leaves no temporary file, and the temporaries a SIGKILL leaves are removed
by the next save into their directory, whatever file it saves. A live
writer's temporary is never removed: two processes saving to one file
concurrently both succeed.

GPULAYERS_STRESS_KILLS sets the number of kills of each random loop (8 by
default; scripts/stress.sh runs 300).
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from gpulayers import callbacks
from gpulayers.layers import Conv2D, Dense, Flatten, Input
from gpulayers.models import Sequential, load_model

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and SIGTERM are POSIX")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KILLS = int(os.environ.get("GPULAYERS_STRESS_KILLS", "8"))
ENV = dict(os.environ, PYTHONPATH=ROOT, GPULAYERS_BACKEND="numpy")

CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from gpulayers.layers import Conv2D, Dense, Flatten, Input
    from gpulayers.models import Sequential
    model = Sequential([Input((16, 16, 3)), Conv2D(32, 3), Flatten(), Dense(64)])
    shapes = [w.shape for w in model.get_weights()]
    generation = 0
    while True:
        generation += 1
        model.set_weights([np.full(s, generation, dtype="float32") for s in shapes])
        model.save(sys.argv[1])
        model.save_weights(sys.argv[2])
        print(generation, flush=True)
    """
)

# A job checkpointing each epoch, stopped inside the save of epoch 1 (its data written, before the fsync) until
# killed, or, when told "go" on stdin, let finish.
CHECKPOINTING = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from gpulayers import callbacks
    from gpulayers.layers import Dense, Input
    from gpulayers.models import Sequential
    real_fsync = os.fsync
    def fsync(fd):
        os.fsync = real_fsync
        print("saving", flush=True)
        assert sys.stdin.readline() == "go\\n"
        real_fsync(fd)
    os.fsync = fsync
    model = Sequential([Input((4,)), Dense(3)])
    model.compile("sgd", "mse")
    model.fit(np.zeros((8, 4)), np.zeros((8, 3)), epochs=1, verbose=0,
              callbacks=[callbacks.ModelCheckpoint(sys.argv[1], save_weights_only=False)])
    print("saved", flush=True)
    """
)


def build():
    return Sequential([Input((16, 16, 3)), Conv2D(32, 3), Flatten(), Dense(64)])


def one_generation(weights):
    values = {float(np.unique(w)[0]) for w in weights if np.unique(w).size == 1}
    assert all(np.unique(w).size == 1 for w in weights), "a weight array mixes generations"
    assert len(values) == 1, f"weights from several generations: {sorted(values)}"
    return values.pop()


def temporaries(directory):
    return sorted(n for n in os.listdir(directory) if n.endswith(".tmp"))


def kill_loop(tmp_path, signum):
    """Start the saving child KILLS times, send it ``signum`` at a random moment; the temporaries after each kill."""
    model_path, weights_path = tmp_path / "m.keras", tmp_path / "m.weights.h5"
    rng = np.random.default_rng(signum)
    generations, left = [], []
    for _ in range(KILLS):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(model_path), str(weights_path)], env=ENV, stdout=subprocess.PIPE, text=True
        )
        child.stdout.readline()  # one full generation written: both files exist
        time.sleep(rng.uniform(0.0, 0.25))
        child.send_signal(signum)
        assert child.wait() == -signum  # killed by the signal, as without a save running
        child.stdout.close()
        left.append(temporaries(tmp_path))
        generations.append(one_generation(load_model(model_path).get_weights()))
        fresh = build()
        fresh.load_weights(weights_path)
        one_generation(fresh.get_weights())
    # Each run starts over at generation 1 and saves again and again.
    assert max(generations) > 1
    return left


def test_saves_survive_sigkill_at_random_moments(tmp_path):
    left = kill_loop(tmp_path, signal.SIGKILL)
    print(f"{sum(map(bool, left))} of {KILLS} SIGKILLs left a temporary")
    # Each child's first save removed what the previous one left: at most the last save's temporary remains.
    assert all(len(names) <= 1 for names in left), left
    model = build()
    model.save(tmp_path / "m.keras")
    assert temporaries(tmp_path) == []


def test_sigterm_at_random_moments_leaves_no_temporary(tmp_path):
    left = kill_loop(tmp_path, signal.SIGTERM)
    assert left == [[]] * KILLS, left


def start_checkpointing(directory):
    child = subprocess.Popen(
        [sys.executable, "-c", CHECKPOINTING, str(directory / "model.{epoch:02d}.keras")],
        env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert child.stdout.readline() == "saving\n"
    return child


def finish(child, signum=None):
    if signum is not None:
        child.send_signal(signum)
    else:
        child.stdin.write("go\n")
        child.stdin.flush()
    status = child.wait()
    child.stdin.close()
    child.stdout.close()
    return status


def test_a_killed_checkpoint_leaves_a_temporary_that_the_next_save_removes(tmp_path):
    child = start_checkpointing(tmp_path)
    assert finish(child, signal.SIGKILL) == -signal.SIGKILL
    [left] = temporaries(tmp_path)
    assert left.startswith(".model.01.keras.") and os.path.getsize(tmp_path / left) > 0
    # The job restarts and saves its next epoch under another name: the dead writer's temporary goes.
    model = Sequential([Input((4,)), Dense(3)])
    model.compile("sgd", "mse")
    model.fit(np.zeros((8, 4)), np.zeros((8, 3)), initial_epoch=1, epochs=2, verbose=0,
              callbacks=[callbacks.ModelCheckpoint(str(tmp_path / "model.{epoch:02d}.keras"))])
    assert os.listdir(tmp_path) == ["model.02.keras"]


def test_sigterm_during_a_checkpoint_removes_the_temporary_and_terminates(tmp_path):
    child = start_checkpointing(tmp_path)
    assert finish(child, signal.SIGTERM) == -signal.SIGTERM
    assert os.listdir(tmp_path) == []


def test_a_live_writers_temporary_is_never_removed(tmp_path):
    child = start_checkpointing(tmp_path)
    [live] = temporaries(tmp_path)
    # Another process saves to the same file meanwhile (another model, to tell the files apart).
    Sequential([Input((4,)), Dense(5)]).save(tmp_path / "model.01.keras")
    assert load_model(tmp_path / "model.01.keras").layers[-1].units == 5
    assert temporaries(tmp_path) == [live]
    assert finish(child) == 0
    # The child's save completed last: its file, whole.
    assert load_model(tmp_path / "model.01.keras").layers[-1].units == 3
    assert os.listdir(tmp_path) == ["model.01.keras"]


def test_concurrent_writers_to_one_file_both_succeed(tmp_path):
    script = CHILD.replace("while True:", "for _ in range(int(sys.argv[3])):")
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path / "m.keras"), str(tmp_path / "m.weights.h5"), "15"],
            env=ENV, stdout=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    assert [child.wait() for child in children] == [0, 0]
    assert one_generation(load_model(tmp_path / "m.keras").get_weights()) == 15
    assert sorted(os.listdir(tmp_path)) == ["m.keras", "m.weights.h5"]
