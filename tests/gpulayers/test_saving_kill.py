"""Saves survive kill -9: a child process saves in a loop and is SIGKILLed at random moments.

After each kill the file on disk must load completely and hold one whole
generation of weights (never a mix, never a truncated file).
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from gpulayers.layers import Conv2D, Dense, Flatten, Input
from gpulayers.models import Sequential, load_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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


def build():
    return Sequential([Input((16, 16, 3)), Conv2D(32, 3), Flatten(), Dense(64)])


def one_generation(weights):
    values = {float(np.unique(w)[0]) for w in weights if np.unique(w).size == 1}
    assert all(np.unique(w).size == 1 for w in weights), "a weight array mixes generations"
    assert len(values) == 1, f"weights from several generations: {sorted(values)}"
    return values.pop()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_saves_survive_sigkill_at_random_moments(tmp_path):
    model_path = tmp_path / "m.keras"
    weights_path = tmp_path / "m.weights.h5"
    env = dict(os.environ, PYTHONPATH=ROOT, GPULAYERS_BACKEND="numpy")
    rng = np.random.default_rng(0)
    generations = []
    for _ in range(8):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(model_path), str(weights_path)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        child.stdout.readline()  # one full generation written: both files exist
        time.sleep(rng.uniform(0.0, 0.25))
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        loaded = load_model(model_path)
        generations.append(one_generation(loaded.get_weights()))
        fresh = build()
        fresh.load_weights(weights_path)
        one_generation(fresh.get_weights())
    # Each run starts over at generation 1 and saves again and again.
    assert max(generations) > 1
