"""keras-io ``examples/vision/autoencoder.py`` (convolutional denoising autoencoder) with the gpulayers imports.

A functional model from ``layers.Input``: Conv2D and MaxPooling2D with
``padding="same"`` down to 7x7, Conv2DTranspose with ``strides=2`` (or, in the
example's first version, UpSampling2D and Conv2D) back up to 28x28, a sigmoid
Conv2D; ``compile(optimizer="adam", loss="binary_crossentropy")``; ``fit``
with ``shuffle=True`` and ``validation_data``, on clean and then on noisy
inputs; ``predict``.
"""

import numpy as np

from gpulayers import layers
from gpulayers.models import Model
from programs.program_support import digits, keras_or_skip


def autoencoder(k_layers, model_class, transpose=True, filters=32):
    inputs = k_layers.Input(shape=(28, 28, 1))
    x = k_layers.Conv2D(filters, (3, 3), activation="relu", padding="same")(inputs)
    x = k_layers.MaxPooling2D((2, 2), padding="same")(x)
    x = k_layers.Conv2D(filters, (3, 3), activation="relu", padding="same")(x)
    x = k_layers.MaxPooling2D((2, 2), padding="same")(x)
    if transpose:
        x = k_layers.Conv2DTranspose(filters, (3, 3), strides=2, activation="relu", padding="same")(x)
        x = k_layers.Conv2DTranspose(filters, (3, 3), strides=2, activation="relu", padding="same")(x)
    else:
        x = k_layers.Conv2D(filters, (3, 3), activation="relu", padding="same")(x)
        x = k_layers.UpSampling2D((2, 2))(x)
        x = k_layers.Conv2D(filters, (3, 3), activation="relu", padding="same")(x)
        x = k_layers.UpSampling2D((2, 2))(x)
    x = k_layers.Conv2D(1, (3, 3), activation="sigmoid", padding="same")(x)
    return model_class(inputs, x)


def images(n, seed):
    x, _ = digits(n, seed)
    return np.reshape(x.astype("float32") / 255.0, (n, 28, 28, 1))


def noise(array, seed):
    noisy = array + 0.4 * np.random.default_rng(seed).normal(loc=0.0, scale=1.0, size=array.shape)
    return np.clip(noisy, 0.0, 1.0)


def test_shapes_of_both_versions():
    for transpose, params in ((True, 28353), (False, 28353)):
        model = autoencoder(layers, Model, transpose)
        shapes = [layer.output.shape for layer in model.layers[1:]]
        assert shapes[1] == (None, 14, 14, 32) and shapes[3] == (None, 7, 7, 32)
        assert model.output_shape == (None, 28, 28, 1)
        assert model.count_params() == params


def test_it_learns_to_denoise():
    clean = images(256, 0)
    test_clean = images(64, 1)
    model = autoencoder(layers, Model, filters=8)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    first = model.fit(x=clean, y=clean, epochs=2, batch_size=64, shuffle=True, validation_data=(test_clean, test_clean),
                      verbose=0).history
    assert sorted(first) == ["loss", "val_loss"]
    second = model.fit(x=noise(clean, 2), y=clean, epochs=3, batch_size=64, shuffle=True,
                       validation_data=(noise(test_clean, 3), test_clean), verbose=0).history
    assert second["val_loss"][-1] < first["val_loss"][0]
    predictions = model.predict(noise(test_clean, 3), verbose=0)
    assert predictions.shape == (64, 28, 28, 1) and 0 <= predictions.min() and predictions.max() <= 1


def test_training_trajectory_matches_keras():
    k = keras_or_skip()
    clean, val = images(48, 4), images(16, 5)
    for transpose in (True, False):
        ours = autoencoder(layers, Model, transpose, filters=4)
        theirs = autoencoder(k.layers, k.Model, transpose, filters=4)
        ours.set_weights(theirs.get_weights())
        ours.compile(optimizer="adam", loss="binary_crossentropy")
        theirs.compile(optimizer="adam", loss="binary_crossentropy")
        h_ours = ours.fit(clean, clean, epochs=2, batch_size=16, shuffle=False, validation_data=(val, val),
                          verbose=0).history
        h_theirs = theirs.fit(clean, clean, epochs=2, batch_size=16, shuffle=False, validation_data=(val, val),
                              verbose=0).history
        for key in ("loss", "val_loss"):
            np.testing.assert_allclose(h_ours[key], h_theirs[key], rtol=2e-4)
        np.testing.assert_allclose(ours.predict(val, verbose=0), theirs.predict(val, verbose=0), rtol=2e-3, atol=2e-5)
