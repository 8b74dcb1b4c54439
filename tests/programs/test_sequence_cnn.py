"""A 1-D CNN over token sequences (Embedding, Conv1D, GlobalMaxPooling1D, Dense), as issue 16 asks.

The reference chapter puts one-dimensional convolution to work on sequences;
this is the smallest such Keras program: sequences of tokens, positive when
they hold a three-token motif anywhere. A width-3 Conv1D can detect the
motif and a global max over time finds it wherever it is, so the model has
to learn, and the held-out accuracy says whether it did.
"""

import numpy as np

import gpulayers as keras
from programs.program_support import keras_or_skip

VOCAB, LENGTH, MOTIF = 20, 32, (5, 9, 5)


def sequences(n, seed):
    """``(tokens int32 (n, LENGTH) in [1, VOCAB), labels float32 (n,))``: half hold MOTIF, half do not."""
    rng = np.random.default_rng(seed)
    x = rng.integers(1, VOCAB, (n, LENGTH)).astype(np.int32)
    y = np.arange(n) % 2
    for row, label in zip(x, y):
        while _holds_motif(row):  # negatives hold no motif by chance
            row[rng.integers(LENGTH)] = rng.integers(1, VOCAB)
        if label:
            start = rng.integers(0, LENGTH - len(MOTIF) + 1)
            row[start:start + len(MOTIF)] = MOTIF
    order = rng.permutation(n)
    return x[order], y[order].astype(np.float32)


def _holds_motif(row):
    windows = np.lib.stride_tricks.sliding_window_view(row, len(MOTIF))
    return bool(np.any(np.all(windows == MOTIF, axis=1)))


def model_of(k):
    return k.Sequential([
        k.Input(shape=(LENGTH,), dtype="int32"),
        k.layers.Embedding(VOCAB, 8),
        k.layers.Conv1D(16, 3, activation="relu"),
        k.layers.GlobalMaxPooling1D(),
        k.layers.Dense(1, activation="sigmoid"),
    ])


def test_the_data_is_what_it_says():
    x, y = sequences(200, 0)
    assert x.shape == (200, LENGTH) and x.dtype == np.int32 and x.min() >= 1 and x.max() < VOCAB
    assert [_holds_motif(row) for row in x] == [bool(label) for label in y]


def test_it_learns_to_find_the_motif():
    keras.utils.set_random_seed(0)
    x, y = sequences(600, 1)
    x_test, y_test = sequences(200, 2)
    model = model_of(keras)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, batch_size=32, epochs=12, verbose=0).history
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    assert accuracy >= 0.9


def test_training_trajectory_matches_keras():
    k = keras_or_skip()
    x, y = sequences(160, 3)
    ours, theirs = model_of(keras), model_of(k)
    ours.set_weights([np.asarray(w) for w in theirs.get_weights()])
    for model in (ours, theirs):
        model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    h_ours = ours.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0).history
    h_theirs = theirs.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0).history
    np.testing.assert_allclose(h_ours["loss"], h_theirs["loss"], rtol=2e-4)
    np.testing.assert_allclose(h_ours["accuracy"], h_theirs["accuracy"], atol=1e-6)
    np.testing.assert_allclose(ours.predict(x, verbose=0), np.asarray(theirs.predict(x, verbose=0)),
                               rtol=1e-4, atol=1e-6)
