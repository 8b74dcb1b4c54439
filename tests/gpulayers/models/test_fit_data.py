"""fit/evaluate/predict on data that is not arrays: generators, iterators, PyDataset, torch DataLoader."""

import warnings

import numpy as np
import pytest

import gpulayers
from gpulayers import layers
from gpulayers.models import Model, Sequential


def make_model(seed=0):
    gpulayers.utils.set_random_seed(seed)
    model = Sequential([gpulayers.Input((3,)), layers.Dense(4, activation="relu"), layers.Dense(1)])
    model.compile("sgd", "mse", metrics=["mae"])
    return model


def arrays(n=24, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3)).astype("float32")
    return x, x.sum(axis=1, keepdims=True)


class Batches(gpulayers.utils.PyDataset):
    def __init__(self, x, y, batch_size, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, i):
        lo = i * self.batch_size
        return self.x[lo:lo + self.batch_size], self.y[lo:lo + self.batch_size]


def test_a_pydataset_trains_like_the_same_arrays_in_the_same_order():
    x, y = arrays()
    a, b = make_model(), make_model()
    ha = a.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    hb = b.fit(Batches(x, y, 8, workers=2), epochs=3, shuffle=False, verbose=0)
    np.testing.assert_allclose(ha.history["loss"], hb.history["loss"], rtol=1e-6)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-6)
    assert b.evaluate(Batches(x, y, 8), verbose=0) == pytest.approx(a.evaluate(x, y, batch_size=8, verbose=0))
    np.testing.assert_allclose(b.predict(Batches(x, y, 8), verbose=0), a.predict(x, verbose=0), rtol=1e-6)


def test_an_endless_generator_with_steps_per_epoch_and_validation_steps():
    x, y = arrays()

    def endless():
        while True:
            for i in range(0, 24, 6):
                yield x[i:i + 6], y[i:i + 6]

    model = make_model()
    history = model.fit(endless(), steps_per_epoch=4, epochs=2, validation_data=endless(), validation_steps=2,
                        verbose=0)
    assert len(history.history["loss"]) == 2 and "val_loss" in history.history


def test_a_finite_generator_is_one_epoch_then_training_stops_with_keras_warning():
    x, y = arrays()
    model = make_model()
    gen = ((x[i:i + 8], y[i:i + 8]) for i in range(0, 24, 8))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(gen, epochs=3, verbose=0)
    assert len(history.history["loss"]) == 1
    assert any("ran out of data" in str(w.message) for w in caught)


def test_generator_batches_with_sample_weights_and_multi_input_dicts():
    a, b = gpulayers.Input((2,), name="a"), gpulayers.Input((1,), name="b")
    model = Model({"a": a, "b": b}, layers.Dense(1)(layers.Dense(3)(a)))
    model.compile("sgd", "mse")
    rng = np.random.default_rng(0)

    def batches():
        for _ in range(3):
            yield {"a": rng.standard_normal((4, 2)), "b": rng.standard_normal((4, 1))}, rng.standard_normal((4, 1)), np.ones(4)

    assert len(model.fit(batches(), verbose=0).history["loss"]) == 1


def test_refusals_follow_keras():
    model = make_model()
    x, y = arrays()
    gen = ((x[i:i + 8], y[i:i + 8]) for i in range(0, 24, 8))
    with pytest.raises(ValueError, match="validation_split"):
        model.fit(gen, validation_split=0.2, verbose=0)
    with pytest.raises(ValueError):
        model.fit(Batches(x, y, 8), y, verbose=0)


def test_a_torch_dataloader_trains():
    torch = pytest.importorskip("torch")
    x, y = arrays()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                                         batch_size=8, shuffle=False)
    a, b = make_model(), make_model()
    ha = a.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    hb = b.fit(loader, epochs=2, verbose=0)
    np.testing.assert_allclose(ha.history["loss"], hb.history["loss"], rtol=1e-6)


def test_validation_in_fit_calls_the_callbacks_test_hooks():
    # As Keras: fit's callbacks see on_test_begin / on_test_batch_* / on_test_end for each validation.
    calls = []

    class Record(gpulayers.callbacks.Callback):
        def on_test_begin(self, logs=None):
            calls.append("test_begin")

        def on_test_batch_end(self, batch, logs=None):
            calls.append("test_batch")

        def on_test_end(self, logs=None):
            calls.append("test_end")

    x, y = arrays()
    model = make_model()
    model.fit(x, y, batch_size=8, epochs=2, validation_split=0.25, callbacks=[Record()], verbose=0)
    assert calls == ["test_begin", "test_batch", "test_end"] * 2
