"""compile(jit_compile=True) on the counting stand-in for cupy: the training step as a replayed CUDA graph.

The stand-in records a capture as a GPU would (kernels and writes to older
buffers do not run while recording; a host copy or sync inside raises) and
replays it into the same buffers, so these tests check what the GPU relies
on: a replayed step trains to the same bits as the eager one (dropout's
device-resident random state advances, batch normalization's moving
statistics carry over, changed weights are read), and what cannot be
captured runs eagerly with a warning.
"""

import os
import sys
import warnings

import numpy as np
import pytest

from step_counting import counting_backend

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
from bench_models import our_cnn  # noqa: E402

pytestmark = pytest.mark.kernels

BATCH = 16


@pytest.fixture
def counter(monkeypatch, emu):
    return counting_backend(monkeypatch)


def _data(batches, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((BATCH * batches, 32, 32, 3)).astype("float32"), rng.integers(0, 10, BATCH * batches)


def _train(jit, optimizer="adam", steps=5, metrics=("accuracy",)):
    import gpulayers

    gpulayers.set_random_seed(1)
    model = our_cnn()
    model.compile(optimizer=gpulayers.optimizers.get(optimizer), loss="sparse_categorical_crossentropy",
                  metrics=list(metrics), jit_compile=jit)
    x, y = _data(steps)
    losses = []
    for i in range(steps):
        sl = slice(i * BATCH, (i + 1) * BATCH)
        losses.append(model.train_on_batch(x[sl], y[sl], return_dict=True))
    return model, losses


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_replayed_step_trains_to_the_bits_of_the_eager_one(counter, optimizer):
    eager, eager_logs = _train(False, optimizer)
    assert counter.captures == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing falls back
        graphed, graphed_logs = _train(True, optimizer)
    assert counter.captures == 1  # step 1 eager, step 2 captured, steps 3-5 replayed
    assert graphed_logs == eager_logs
    for a, b in zip(eager.weights, graphed.weights):  # kernels, biases, moving statistics
        with counter.paused():
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_a_replayed_step_is_one_launch_then_the_optimizer(counter):
    model, _ = _train(True, "sgd", steps=3, metrics=())
    x, y = _data(1, seed=5)
    with counter.paused():
        from backends import get_ops

        data = (get_ops().asarray(x), get_ops().asarray(y))
    model.train_step(data)  # the loss tracker's state is a device array from here on
    counter.reset()
    model.train_step(data)
    # The batch copied into the graph's inputs, one launch, the optimizer's one launch, the loss tracker's.
    assert counter.counts["graph"] == 1 and counter.device_ops == 5, counter.summary()
    assert counter.counts["elementwise"] == 2 and counter.counts["kernel"] == 2 and counter.allocs == 2


def _model_with(layer):
    import gpulayers
    from gpulayers import layers

    gpulayers.set_random_seed(2)
    model = gpulayers.Sequential([layers.Input((6,)), layers.Dense(8), layer, layers.Dense(3, activation="softmax")])
    return model


def _fit_steps(model, jit, steps=4, batch=BATCH, optimizer="sgd"):
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", jit_compile=jit)
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((batch * steps, 6)).astype("float32"), rng.integers(0, 3, batch * steps)
    history = model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
    return history.history["loss"], [w.numpy() for w in model.weights]


class _Reads:
    """A layer whose call reads a value back to the host (a sync: not capturable)."""

    def __new__(cls):
        from gpulayers import layers, ops

        class ReadsBack(layers.Layer):
            def call(self, x):
                if float(ops.max(x)) > 1e9:
                    return x * 2.0
                return x

        return ReadsBack()


class _HostRandom:
    """A layer drawing from gpulayers.random with a seed generator (host-seeded: not replayable)."""

    def __new__(cls):
        import gpulayers
        from gpulayers import layers

        class Noise(layers.Layer):
            def __init__(self):
                super().__init__()
                self.seed_generator = gpulayers.random.SeedGenerator(4)

            def call(self, x, training=False):
                if training:
                    return x + 0.1 * gpulayers.random.normal(x.shape, seed=self.seed_generator)
                return x

        return Noise()


@pytest.mark.parametrize("make, why", [(_Reads, "could not be captured"), (_HostRandom, "host-seeded random")])
def test_a_step_that_cannot_be_captured_runs_eagerly_with_one_warning(counter, make, why):
    with counter.paused():
        want = _fit_steps(_model_with(make()), False)
    with pytest.warns(UserWarning, match=f"jit_compile: the training step runs eagerly: .*{why}") as record:
        with counter.paused():
            got = _fit_steps(_model_with(make()), True)
    assert len([w for w in record if "jit_compile" in str(w.message)]) == 1
    assert got[0] == want[0]
    for a, b in zip(want[1], got[1]):
        np.testing.assert_array_equal(a, b)


def test_weights_set_between_steps_are_what_the_graph_reads(counter):
    from gpulayers import layers

    results = []
    for jit in (False, True):
        with counter.paused():
            model = _model_with(layers.BatchNormalization())
            _fit_steps(model, jit, steps=3)  # captured at the second step under jit
            model.set_weights([w * 0.5 for w in model.get_weights()])
            results.append(_fit_steps(model, jit, steps=3))
    assert results[0][0] == results[1][0]
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_array_equal(a, b)


def test_each_batch_shape_gets_its_own_graph(counter):
    from gpulayers import layers

    with counter.paused():
        model = _model_with(layers.Dropout(0.3))
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", jit_compile=True)
        rng = np.random.default_rng(3)
        x, y = rng.standard_normal((42, 6)).astype("float32"), rng.integers(0, 3, 42)
        history = model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)  # 5 batches of 8 and one of 2
    assert counter.captures == 2  # batches of 8 captured in epoch 1, the batch of 2 in epoch 2
    assert all(np.isfinite(history.history["loss"]))


def test_a_loss_scale_optimizer_runs_eagerly(counter):
    import gpulayers
    from gpulayers import layers

    with counter.paused(), pytest.warns(UserWarning, match="LossScaleOptimizer"):
        _fit_steps(_model_with(layers.ReLU()), True, optimizer=gpulayers.optimizers.LossScaleOptimizer(
            gpulayers.optimizers.SGD()))
    assert counter.captures == 0


@pytest.mark.parametrize("fails_at", [2, 4])  # the capturing step, a replayed one
def test_a_graph_step_failing_in_the_optimizer_is_undone_whole(counter, monkeypatch, fails_at):
    import gpulayers
    from gpulayers import layers

    def model():
        gpulayers.set_random_seed(2)
        m = gpulayers.Sequential([layers.Input((6,)), layers.Dense(8), layers.BatchNormalization(),
                                  layers.Dropout(0.3, seed=5), layers.Dense(3, activation="softmax")])
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=True)
        return m

    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((8 * 6, 6)).astype("float32"), rng.integers(0, 3, 8 * 6)
    batches = [(x[i * 8:(i + 1) * 8], y[i * 8:(i + 1) * 8]) for i in range(6)]
    with counter.paused():
        graphed, twin = model(), model()
        for i, (xb, yb) in enumerate(batches):
            if i + 1 == fails_at:
                fused = type(graphed.optimizer)._apply_fused
                before = [w.numpy() for w in graphed.weights]

                def no_memory(self, *args):
                    raise MemoryError("cudaErrorMemoryAllocation (simulated)")

                monkeypatch.setattr(type(graphed.optimizer), "_apply_fused", no_memory)
                with pytest.raises(MemoryError):
                    graphed.train_on_batch(xb, yb)
                monkeypatch.setattr(type(graphed.optimizer), "_apply_fused", fused)
                for a, w in zip(before, graphed.weights):  # the moving statistics the graph wrote are back
                    np.testing.assert_array_equal(a, w.numpy(), err_msg=w.path)
            assert graphed.train_on_batch(xb, yb) == twin.train_on_batch(xb, yb)
        for a, b in zip(graphed.weights, twin.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    assert graphed._step_graphs.captured == 1
