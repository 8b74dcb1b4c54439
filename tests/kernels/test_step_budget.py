"""Device-operation budgets of one training step of the benchmark CNN, on the counting stand-in for cupy.

The benchmark CNN (scripts/bench_models.py: Conv-BN-ReLU-Pool twice, Dense,
Dropout, Dense-softmax) trains through CupyOps with its RawKernels run by
the host emulator; every launch, GEMM, elementwise kernel, reduction, copy
and sync a GPU would see is counted (tests/kernels/counting_cupy.py). The
ceilings are what the step costs now: a change that adds device work to it
fails here, and each fusion lowers them. The issue's targets are 45 (SGD)
and 55 (Adam with an accuracy metric); docs/benchmarks/gpu_step_counts.md
has the history of these counts.
"""

import os
import sys

import numpy as np
import pytest

from step_counting import counting_backend

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
from bench_models import our_cnn  # noqa: E402

pytestmark = pytest.mark.kernels

BATCH = 32  # the counts do not depend on the batch (no im2col chunking at this size)

# Device operations of one train_step: (optimizer, metrics) -> ceiling.
BUDGETS = {("sgd", ()): 45, ("adam", ("accuracy",)): 49}


def _model(optimizer, metrics):
    import gpulayers

    model = our_cnn()
    if optimizer != "sgd" or metrics:
        opt = gpulayers.optimizers.get(optimizer)
        model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=list(metrics))
    return model


def _data(batches=1):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH * batches, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, BATCH * batches)
    return x, y


@pytest.fixture
def counter(monkeypatch, emu):
    c = counting_backend(monkeypatch)
    c.trace = True
    return c


@pytest.mark.parametrize("optimizer, metrics", sorted(BUDGETS), ids=lambda v: "-".join(v) if isinstance(v, tuple) else v)
def test_one_training_step_stays_inside_its_budget(counter, optimizer, metrics):
    from backends import get_ops

    ops = get_ops()
    model = _model(optimizer, metrics)
    x, y = _data()
    with counter.paused():
        data = (ops.asarray(x), ops.asarray(y))
    model.train_step(data)  # the first step builds the model and the optimizer
    counter.reset()
    logs = model.train_step(data)
    budget = BUDGETS[(optimizer, metrics)]
    detail = f"{counter.summary()}; budget {budget}\n" + "\n".join(map(str, counter.log))
    assert counter.device_ops <= budget, detail
    # Nothing of the step comes back to the host: the logs stay on the device until read.
    assert counter.counts["d2h"] == 0 and counter.counts["sync"] == 0, detail
    assert sorted(logs) == sorted(["loss", *metrics])
    with counter.paused():
        assert np.isfinite(float(logs["loss"]))


def test_fit_reads_the_device_once_per_execution(counter):
    # 8 batches in executions of 4: two reads of the one log (the loss), nothing else comes back.
    model = _model("sgd", ())
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", steps_per_execution=4)
    x, y = _data(batches=8)
    model.fit(x[:BATCH], y[:BATCH], batch_size=BATCH, epochs=1, verbose=0)  # builds
    counter.reset()
    history = model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False)
    assert counter.counts["sync"] == 2 and counter.counts["d2h"] == 2, counter.summary()
    assert np.isfinite(history.history["loss"][0])
