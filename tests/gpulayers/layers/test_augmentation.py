"""RandomFlip, RandomCrop, RandomTranslation: Keras's formulas on forced draws, a loop reference of the warp,
gradients, statistics, inference identity, seeds, configs and bad arguments."""

import json

import numpy as np
import pytest

from gpulayers.layers import RandomCrop, RandomFlip, RandomTranslation, augmentation
from helpers import check_layer_gradients, keras_or_skip, to_np

RNG = np.random.default_rng(0)
X = RNG.standard_normal((3, 6, 7, 2)).astype("float32")


@pytest.fixture
def forced(monkeypatch):
    """Make our layers (and Keras's, when asked) draw the given uniforms in order."""
    queue = {"ours": [], "keras": []}

    def ours(self, shape, low=0.0, high=1.0):
        u = queue["ours"].pop(0)
        return (np.float32(low) + np.float32(high - low) * np.broadcast_to(u, shape)).astype("float32")

    monkeypatch.setattr(augmentation._Augmentation, "_uniform", ours)

    def with_keras():
        keras = keras_or_skip()
        import importlib

        kr = importlib.import_module(f"keras.src.backend.{keras.backend.backend()}.random")

        def theirs(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
            u = queue["keras"].pop(0)
            return keras.ops.convert_to_tensor((minval + (maxval - minval) * np.broadcast_to(u, shape)).astype("float32"))

        monkeypatch.setattr(kr, "uniform", theirs)
        return keras

    def draws(*values):
        queue["ours"][:] = list(values)
        queue["keras"][:] = list(values)

    return draws, with_keras


def warp_reference(img, dy, dx, mode, order, cval):
    """map_coordinates by loops: output (i, j) reads input (i - dy, j - dx), float64, one HWC image."""
    h, w, _ = img.shape

    def fix(k, n):
        if mode == "nearest":
            return min(max(k, 0), n - 1), True
        if mode == "wrap":
            return k % n, True
        if mode == "reflect":
            period = 2 * n
            k %= period
            return (k if k < n else period - 1 - k), True
        return k, 0 <= k < n

    out = np.zeros(img.shape)
    for i in range(h):
        for j in range(w):
            y, x = i - dy, j - dx
            if order == "nearest":
                nodes = [((int(np.floor(y + 0.5)), 1.0), (int(np.floor(x + 0.5)), 1.0))]
            else:
                y0, x0 = int(np.floor(y)), int(np.floor(x))
                nodes = [((y0 + a, 1 - (y - y0) if a == 0 else y - y0), (x0 + b, 1 - (x - x0) if b == 0 else x - x0))
                         for a in (0, 1) for b in (0, 1)]
            for (yk, wy), (xk, wx) in nodes:
                (yy, vy), (xx, vx) = fix(yk, h), fix(xk, w)
                out[i, j] += wy * wx * (img[yy, xx] if vy and vx else cval)
    return out


@pytest.mark.parametrize("mode", ["reflect", "wrap", "constant", "nearest"])
@pytest.mark.parametrize("order", ["bilinear", "nearest"])
def test_translation_matches_loop_reference_and_gradients(forced, mode, order):
    draws, _ = forced
    x = X[:1].astype("float64")
    layer = RandomTranslation(0.9, 0.9, fill_mode=mode, interpolation=order, fill_value=1.5, dtype="float64")
    draws(np.float32(0.3), np.float32(0.85))  # shifts 0.3*(1.8)-0.9 rows... as fractions of H and W
    y = to_np(layer(x))[0]
    dy, dx = np.float32(np.float32(0.3) * np.float32(1.8) - np.float32(0.9)) * 6, \
        np.float32(np.float32(0.85) * np.float32(1.8) - np.float32(0.9)) * 7
    np.testing.assert_allclose(y, warp_reference(x[0], float(dy), float(dx), mode, order, 1.5), atol=1e-5)
    draws(*([np.float32(0.3), np.float32(0.85)] * 200))
    check_layer_gradients(layer, x, training=True)


@pytest.mark.parametrize("name,kwargs,n_draws", [
    ("RandomFlip", dict(mode="horizontal"), 1), ("RandomFlip", dict(mode="vertical", data_format="channels_first"), 1),
    ("RandomFlip", dict(), 1),
    ("RandomTranslation", dict(height_factor=0.9, width_factor=(-0.6, 0.8), fill_mode="constant", fill_value=1.5), 2),
    ("RandomTranslation", dict(height_factor=0.5, width_factor=0.2, interpolation="nearest",
                               data_format="channels_first"), 2),
    ("RandomCrop", dict(height=3, width=4, seed=1), 2), ("RandomCrop", dict(height=8, width=4, seed=1), 0),
])
def test_keras_formulas_on_the_same_draws(forced, name, kwargs, n_draws):
    draws, with_keras = forced
    keras = with_keras()
    values = [RNG.random((3, 1, 1, 1) if name == "RandomFlip" else (3, 1) if name == "RandomTranslation" else ())
              .astype("float32") for _ in range(n_draws)]
    draws(*values)
    ours = to_np(getattr(augmentation, name)(**kwargs)(X, training=True))
    theirs = keras.ops.convert_to_numpy(getattr(keras.layers, name)(**kwargs)(X, training=True))
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    layer, klayer = getattr(augmentation, name)(**kwargs), getattr(keras.layers, name)(**kwargs)
    np.testing.assert_array_equal(to_np(layer(X, training=False)), keras.ops.convert_to_numpy(klayer(X, training=False)))
    cfg = json.loads(json.dumps(layer.get_config()))
    kcfg = json.loads(json.dumps(klayer.get_config()))
    cfg.pop("name"), kcfg.pop("name")
    if name == "RandomCrop" and "seed" not in kwargs:
        cfg.pop("seed"), kcfg.pop("seed")
    assert cfg == kcfg
    assert json.loads(json.dumps(type(layer).from_config(kcfg | {"name": "x"}).get_config())) == kcfg | {"name": "x"}


def test_statistics_seeds_and_identity():
    ones = np.broadcast_to(np.arange(7.0, dtype="float32").reshape(1, 1, 7, 1), (400, 1, 7, 1))
    flipped = to_np(RandomFlip("horizontal", seed=1)(ones, training=True))[:, 0, 0, 0] == 6
    assert 0.4 < flipped.mean() < 0.6
    a, b = RandomTranslation(0.3, 0.3, seed=4), RandomTranslation(0.3, 0.3, seed=4)
    np.testing.assert_array_equal(to_np(a(X, training=True)), to_np(b(X, training=True)))
    assert not np.array_equal(to_np(a(X, training=True)), to_np(a(X, training=True)))
    column = np.repeat(np.arange(6.0, dtype="float32").reshape(6, 1, 1), 2, axis=1)  # both sides larger
    starts = {float(to_np(RandomCrop(1, 1, seed=s)(column, training=True)).ravel()[0]) for s in range(60)}
    assert starts <= {0.0, 1.0, 2.0, 3.0, 4.0, 5.0} and len(starts) >= 4  # uniform over the valid starts
    for layer in (RandomFlip(), RandomTranslation(0.5, 0.5), RandomCrop(2, 2)):
        np.testing.assert_array_equal(to_np(layer(X, training=False)), X)
    check_layer_gradients(RandomFlip(dtype="float64"), X[:2].astype("float64"), training=True)
    check_layer_gradients(RandomCrop(3, 4, seed=2, dtype="float64"), X[:1].astype("float64"), training=True)


@pytest.mark.parametrize("make", [lambda: RandomFlip("diagonal"), lambda: RandomTranslation(1.5, 0.1),
                                  lambda: RandomTranslation(0.1, (0.1, 0.2, 0.3)),
                                  lambda: RandomTranslation(0.1, 0.1, fill_mode="mirror"),
                                  lambda: RandomTranslation(0.1, 0.1, interpolation="bicubic"),
                                  lambda: RandomCrop(0, 2), lambda: RandomFlip(seed=-1)])
def test_bad_arguments(make):
    with pytest.raises(ValueError):
        make()
