"""Keras 3 parity of the regularization family, PReLU and Identity: configs, noise formulas on the same draws,
mask shapes, activity losses, and ``.keras`` files both ways. Identity (a core layer) is tested here too."""

import json
import zipfile

import numpy as np
import pytest

import gpulayers
from backends import get_ops
from gpulayers import saving
from gpulayers.layers import regularization_noise
from helpers import keras_or_skip, to_np

# (class name, constructor arguments) for the config and file checks.
LAYERS = [
    ("SpatialDropout1D", dict(rate=0.3, seed=4)),
    ("SpatialDropout2D", dict(rate=0.2, data_format="channels_first")),
    ("SpatialDropout3D", dict(rate=0.5, seed=1)),
    ("GaussianNoise", dict(stddev=0.25, seed=2)),
    ("GaussianDropout", dict(rate=0.4)),
    ("AlphaDropout", dict(rate=0.1, noise_shape=(None, 1, 3), seed=3)),
    ("ActivityRegularization", dict(l1=0.25, l2=0.5)),
    ("PReLU", dict(alpha_initializer="ones", shared_axes=[1])),
    ("Identity", {}),
]


def plain(config):
    """The config as a file holds it (tuples as lists), without Keras's shared-object ids."""

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "shared_object_id"}
        return [strip(v) for v in value] if isinstance(value, list) else value

    return strip(json.loads(json.dumps(config)))


@pytest.mark.parametrize("name,kwargs", LAYERS, ids=[n for n, _ in LAYERS])
def test_configs_are_keras_configs_both_ways(name, kwargs):
    keras = keras_or_skip()
    ours = getattr(gpulayers.layers, name)(name="x", **kwargs)
    theirs = getattr(keras.layers, name)(name="x", **kwargs)
    assert plain(ours.get_config()) == plain(theirs.get_config())
    assert plain(getattr(gpulayers.layers, name).from_config(theirs.get_config()).get_config()) == plain(ours.get_config())
    assert plain(getattr(keras.layers, name).from_config(ours.get_config()).get_config()) == plain(theirs.get_config())


@pytest.fixture
def keras_random(monkeypatch):
    """Make Keras's noise layers and ours draw given numbers: ``set(z=..., u=...)``."""
    keras = keras_or_skip()
    from keras.src import backend, ops as kops

    drawn = {}

    def normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
        return keras.ops.convert_to_tensor((mean + stddev * drawn["z"]).astype("float32"))

    def uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
        return keras.ops.convert_to_tensor(drawn["u"])

    for module in {id(backend.random): backend.random, id(kops.random): kops.random}.values():
        monkeypatch.setattr(module, "normal", normal)
        monkeypatch.setattr(module, "uniform", uniform)
    monkeypatch.setattr(regularization_noise, "standard_normal", lambda ops, stream, shape, dtype: ops.asarray(drawn["z"]).copy())
    monkeypatch.setattr(get_ops(), "uniform", lambda stream, shape, dtype: get_ops().asarray(drawn["u"]).copy())
    return keras, drawn


@pytest.mark.parametrize("name,kwargs,draw", [
    ("GaussianNoise", dict(stddev=0.3), "z"),
    ("GaussianDropout", dict(rate=0.3), "z"),
    ("AlphaDropout", dict(rate=0.3), "u"),
    ("AlphaDropout", dict(rate=0.6, noise_shape=(None, 1, 5)), "u"),
])
def test_noise_formulas_match_keras_on_the_same_draws(keras_random, name, kwargs, draw):
    keras, drawn = keras_random
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 5)).astype("float32")
    shape = x.shape if "noise_shape" not in kwargs else (4, 1, 5)
    drawn["z"] = rng.standard_normal(x.shape).astype("float32")
    drawn["u"] = rng.uniform(size=shape).astype("float32")
    ours, theirs = getattr(gpulayers.layers, name)(**kwargs), getattr(keras.layers, name)(**kwargs)
    want = keras.ops.convert_to_numpy(theirs(x, training=True))
    np.testing.assert_allclose(to_np(ours(x, training=True)), want, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(to_np(ours(x, training=False)), keras.ops.convert_to_numpy(theirs(x, training=False)))


@pytest.mark.parametrize("name,kwargs,shape", [
    ("SpatialDropout1D", {}, (2, 3, 4)),
    ("SpatialDropout2D", dict(data_format="channels_last"), (2, 3, 4, 5)),
    ("SpatialDropout2D", dict(data_format="channels_first"), (2, 3, 4, 5)),
    ("SpatialDropout3D", dict(data_format="channels_last"), (2, 3, 4, 4, 5)),
    ("SpatialDropout3D", dict(data_format="channels_first"), (2, 3, 4, 4, 5)),
])
def test_spatial_masks_have_keras_shapes_and_statistics(name, kwargs, shape):
    keras = keras_or_skip()
    ours, theirs = getattr(gpulayers.layers, name)(0.5, **kwargs), getattr(keras.layers, name)(0.5, **kwargs)
    x = np.ones(shape, "float32")
    assert ours._mask_shape(x.shape) == tuple(theirs._get_noise_shape(x))
    big = (300,) + shape[1:]
    ones = np.ones(big, "float32")
    y, k = to_np(ours(ones, training=True)), keras.ops.convert_to_numpy(theirs(ones, training=True))
    assert set(np.unique(y).tolist()) == set(np.unique(k).tolist()) == {0.0, 2.0}
    assert abs(y.mean() - k.mean()) < 0.15  # 300 * channels draws each
    np.testing.assert_array_equal(to_np(ours(x)), keras.ops.convert_to_numpy(theirs(x)))


def test_activity_loss_matches_keras():
    keras = keras_or_skip()
    x = np.random.default_rng(1).standard_normal((4, 6)).astype("float32")
    ours, theirs = gpulayers.layers.ActivityRegularization(0.1, 0.2), keras.layers.ActivityRegularization(0.1, 0.2)
    ours(x), theirs(x)
    np.testing.assert_allclose(float(to_np(ours.losses[0])), float(keras.ops.convert_to_numpy(theirs.losses[0])),
                               rtol=1e-6)


def test_identity_passes_structures_and_casts_floats():
    from gpulayers.layers import Identity

    layer = Identity()
    assert layer.built and layer.weights == []
    x, idx = np.arange(6.0).reshape(2, 3), np.arange(4)
    out = layer({"a": x, "b": idx})
    assert out["a"].dtype == np.float32 and out["b"].dtype == idx.dtype
    np.testing.assert_array_equal(to_np(out["a"]), x)
    np.testing.assert_array_equal(to_np(out["b"]), idx)
    assert Identity(dtype="float64")(x).dtype == np.float64
    inputs = [gpulayers.Input((3,)), gpulayers.Input((2,), dtype="int32")]
    specs = Identity()(inputs)
    assert [(s.shape, s.dtype) for s in specs] == [((None, 3), "float32"), ((None, 2), "int32")]
    from helpers import check_layer_gradients

    check_layer_gradients(Identity(dtype="float64"), x)
    assert Identity.from_config(Identity(name="i").get_config()).name == "i"


def _gpulayers_model():
    L = gpulayers.layers
    model = gpulayers.Sequential([
        gpulayers.Input((4, 4, 3)),
        L.SpatialDropout2D(0.2, seed=1),
        L.PReLU(shared_axes=[1, 2], alpha_initializer="random_uniform"),
        L.Reshape((2, 2, 4, 3)),
        L.SpatialDropout3D(0.3, data_format="channels_first"),
        L.Reshape((16, 3)),
        L.SpatialDropout1D(0.1),
        L.GaussianNoise(0.2, seed=5),
        L.GaussianDropout(0.3),
        L.AlphaDropout(0.1, noise_shape=(None, 1, 3)),
        L.ActivityRegularization(l1=0.01),
        L.PReLU(alpha_initializer="random_uniform"),
        L.Identity(),
        L.Flatten(),
        L.Dense(2),
    ])
    return model


def _keras_model(keras):
    L = keras.layers
    return keras.Sequential([
        keras.Input((4, 4, 3)),
        L.SpatialDropout2D(0.2, seed=1),
        L.PReLU(shared_axes=[1, 2], alpha_initializer="random_uniform"),
        L.Reshape((2, 2, 4, 3)),
        L.SpatialDropout3D(0.3, data_format="channels_first"),
        L.Reshape((16, 3)),
        L.SpatialDropout1D(0.1),
        L.GaussianNoise(0.2, seed=5),
        L.GaussianDropout(0.3),
        L.AlphaDropout(0.1, noise_shape=(None, 1, 3)),
        L.ActivityRegularization(l1=0.01),
        L.PReLU(alpha_initializer="random_uniform"),
        L.Identity(),
        L.Flatten(),
        L.Dense(2),
    ])


def test_keras_files_both_ways(tmp_path):
    keras = keras_or_skip()
    x = np.random.default_rng(2).standard_normal((5, 4, 4, 3)).astype("float32")
    # gpulayers -> Keras.
    model = _gpulayers_model()
    assert [tuple(w.shape) for w in model.get_weights()] == [(1, 1, 3), (16, 3), (48, 2), (2,)]
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "g.keras")
    theirs = keras.saving.load_model(str(tmp_path / "g.keras"))
    np.testing.assert_allclose(np.asarray(theirs.predict(x, verbose=0)), expected, rtol=1e-5, atol=1e-6)
    for mine, their in zip(model.layers, theirs.layers, strict=True):
        assert type(mine).__name__ == type(their).__name__
        assert plain(mine.get_config()) == plain(their.get_config())
    np.testing.assert_allclose(saving.load_model(tmp_path / "g.keras").predict(x, verbose=0), expected, rtol=1e-6)
    # Keras -> gpulayers.
    kmodel = _keras_model(keras)
    kexpected = np.asarray(kmodel.predict(x, verbose=0))
    kmodel.save(str(tmp_path / "k.keras"))
    mine = saving.load_model(tmp_path / "k.keras")
    np.testing.assert_allclose(mine.predict(x, verbose=0), kexpected, rtol=1e-5, atol=1e-6)
    entries = json.loads(zipfile.ZipFile(tmp_path / "k.keras").read("config.json"))["config"]["layers"][1:]
    for entry, layer in zip(entries, mine.layers, strict=True):
        assert entry["class_name"] == type(layer).__name__
        assert plain(layer.get_config()) == plain(entry["config"])


def test_training_step_through_the_family():
    """The layers train in a model: the inference loss falls, PReLU's alpha moves."""
    gpulayers.utils.set_random_seed(0)
    model = _gpulayers_model()
    model.compile(optimizer=gpulayers.optimizers.Adam(0.01), loss="mse")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((32, 4, 4, 3)).astype("float32")
    y = x.reshape(32, -1)[:, :2] + 0.5  # learnable through the noise
    alpha = model.layers[1].get_weights()[0].copy()
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=15, batch_size=16, verbose=0)
    assert model.evaluate(x, y, verbose=0) < 0.7 * before  # about 0.5 for seeds 0-2
    assert not np.array_equal(model.layers[1].get_weights()[0], alpha)
