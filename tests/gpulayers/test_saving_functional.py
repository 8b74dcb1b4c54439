"""Files of functional, nested and subclassed models: Keras 3's schema and layout, both ways."""

import importlib.util
import io
import json
import os
import zipfile

import h5py
import numpy as np
import pytest

import gpulayers
from gpulayers import layers, saving
from gpulayers.models import Functional, Model, Sequential


def residual_two_output_model(seed=0, dropout=0.25):
    gpulayers.utils.set_random_seed(seed)
    x = gpulayers.Input((6, 6, 2), name="image")
    h = layers.Conv2D(4, 3, padding="same", name="conv_a")(x)
    h = layers.BatchNormalization(name="bn_a")(h)
    h = layers.Activation("relu", name="relu_a")(h)
    h = layers.Conv2D(4, 3, padding="same", name="conv_b")(h)
    shortcut = layers.Conv2D(4, 1, name="project")(x)
    h = layers.Add(name="add")([h, shortcut])
    pooled = layers.GlobalAveragePooling2D(name="pool")(h)
    inner_in = gpulayers.Input((4,), name="inner_in")
    inner = Model(inner_in, layers.Dense(4, activation="tanh", name="inner_dense")(inner_in), name="inner")
    head = Sequential([gpulayers.Input((4,)), layers.Dense(3, activation="softmax", name="probs")], name="head")
    cls = head(inner(pooled))
    reg = layers.Dense(1, name="value")(layers.Dropout(dropout, name="drop")(pooled))
    return Model(x, [cls, reg], name="resnet_two")


def data(n=8, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 6, 6, 2)).astype("float32"), rng.integers(0, 3, n), rng.standard_normal((n, 1)).astype("float32")


def test_a_functional_model_round_trips_compiled_and_resumes(tmp_path):
    model = residual_two_output_model(dropout=0.0)  # no random draws: the next steps must agree
    model.compile(gpulayers.optimizers.Adam(0.01), loss=["sparse_categorical_crossentropy", "mse"],
                  loss_weights=[1.0, 0.5], metrics=[["accuracy"], ["mae"]])
    x, y1, y2 = data()
    model.fit(x, [y1, y2], epochs=2, batch_size=4, verbose=0, shuffle=False)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = saving.load_model(path)
    assert isinstance(loaded, Functional) and loaded.name == "resnet_two"
    assert [l.name for l in loaded.layers] == [l.name for l in model.layers]
    assert isinstance(loaded.get_layer("inner"), Functional) and isinstance(loaded.get_layer("head"), Sequential)
    for p, q in zip(model.predict(x, verbose=0), loaded.predict(x, verbose=0)):
        np.testing.assert_array_equal(p, q)
    assert json.dumps(loaded.get_config(), sort_keys=True) == json.dumps(model.get_config(), sort_keys=True)
    a = model.train_on_batch(x, [y1, y2], return_dict=True)
    b = loaded.train_on_batch(x, [y1, y2], return_dict=True)
    assert a == pytest.approx(b, rel=1e-6)


def test_the_config_is_keras_3s_schema(tmp_path):
    model = residual_two_output_model()
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as archive:
        config = json.loads(archive.read("config.json"))
        h5 = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
        groups = sorted(h5["layers"].keys())
    assert config["class_name"] == "Functional" and config["module"] == "keras.src.models.functional"
    assert config["registered_name"] == "Functional" and config["build_config"] == {"input_shape": None}
    inner = config["config"]
    assert inner["input_layers"] == ["image", 0, 0]
    assert inner["output_layers"] == [["head", 0, 0], ["value", 0, 0]]
    add = next(e for e in inner["layers"] if e["name"] == "add")
    args = add["inbound_nodes"][0]["args"][0]
    assert [a["config"]["keras_history"] for a in args] == [["conv_b", 0, 0], ["project", 0, 0]]
    assert args[0]["class_name"] == "__keras_tensor__" and args[0]["config"]["shape"] == [None, 6, 6, 4]
    assert "input_layer" in groups and "functional" in groups and "sequential" in groups
    assert groups.count("conv2d") == 1 and "conv2d_2" in groups


def test_a_nested_functional_output_uses_keras_node_index_offset():
    x = gpulayers.Input((3,), name="x")
    inner = Model(x, layers.Dense(2, name="d")(x), name="inner")
    y = gpulayers.Input((3,), name="y")
    outer = Model(y, inner(y))
    config = outer.get_config()
    assert config["output_layers"] == ["inner", 1, 0]  # Keras writes 1 here (and 0 in keras_history)
    again = Functional.from_config(json.loads(json.dumps(config)))
    assert again.get_layer("inner").get_layer("d").kernel.shape == (3, 2)


def test_shared_layers_round_trip(tmp_path):
    a, b = gpulayers.Input((4,), name="a"), gpulayers.Input((4,), name="b")
    tower = layers.Dense(3, name="tower")
    out = layers.Subtract(name="diff")([tower(a), tower(b)])
    model = Model([a, b], out)
    model.save(tmp_path / "s.keras")
    loaded = saving.load_model(tmp_path / "s.keras")
    assert len(loaded.get_layer("tower")._inbound_nodes) == 2 and len(loaded.weights) == 2
    xs = [np.ones((2, 4), "float32"), np.zeros((2, 4), "float32")]
    np.testing.assert_array_equal(model.predict(xs, verbose=0), loaded.predict(xs, verbose=0))


@gpulayers.saving.register_keras_serializable(package="tests")
class Blocks(Model):
    def __init__(self, units=3, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.first = layers.Dense(units, activation="relu")
        self.rest = [layers.Dense(units), layers.Dense(1)]

    def call(self, inputs, training=None):
        x = self.first(inputs)
        for layer in self.rest:
            x = layer(x)
        return x

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_a_subclassed_models_weights_and_whole_file(tmp_path):
    model = Blocks(units=4, name="blocks")
    x = np.random.default_rng(0).standard_normal((5, 2)).astype("float32")
    want = model.predict(x, verbose=0)
    model.save_weights(tmp_path / "b.weights.h5")
    with h5py.File(tmp_path / "b.weights.h5", "r") as h5:
        names = []
        h5.visit(names.append)
    assert "first/vars/0" in names and "rest/dense/vars/0" in names and "rest/dense_1/vars/1" in names
    other = Blocks(units=4)
    other(x)
    other.load_weights(tmp_path / "b.weights.h5")
    np.testing.assert_array_equal(other.predict(x, verbose=0), want)
    model.save(tmp_path / "b.keras")
    loaded = saving.load_model(tmp_path / "b.keras")
    assert isinstance(loaded, Blocks) and loaded.units == 4
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), want)


def double(t):
    return t * 2.0


def test_lambda_layers_in_files_follow_safe_mode(tmp_path):
    x = gpulayers.Input((3,), name="x")
    model = Model(x, layers.Lambda(lambda t: t + 1.0, name="plus")(x))
    model.save(tmp_path / "lam.keras")
    with pytest.raises(ValueError, match="safe_mode=False"):
        saving.load_model(tmp_path / "lam.keras")
    with pytest.raises(ValueError, match="never unmarshals or runs bytecode"):
        saving.load_model(tmp_path / "lam.keras", safe_mode=False)
    named = Model(x, layers.Lambda(double, name="twice")(x))
    named.save(tmp_path / "named.keras")
    loaded = saving.load_model(tmp_path / "named.keras", custom_objects={"double": double})
    np.testing.assert_array_equal(loaded.predict(np.ones((1, 3)), verbose=0), 2 * np.ones((1, 3)))


def test_a_broken_graph_in_a_file_is_refused_with_the_file_named(tmp_path):
    model = residual_two_output_model()
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    config = json.loads(members["config.json"])
    add = next(e for e in config["config"]["layers"] if e["name"] == "add")
    add["inbound_nodes"][0]["args"][0][0]["config"]["keras_history"] = ["nowhere", 0, 0]
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "bad.keras", "w") as archive:
        for name, body in members.items():
            archive.writestr(name, body)
    with pytest.raises(ValueError, match="bad.keras.*nowhere"):
        saving.load_model(tmp_path / "bad.keras")


# ---------------------------------------------------------------- with Keras 3 (optional)


def _keras():
    if "KERAS_BACKEND" not in os.environ and importlib.util.find_spec("torch") is not None:
        os.environ["KERAS_BACKEND"] = "torch"
    return pytest.importorskip("keras", reason="Keras 3 is not installed: the interop check needs it")


def test_keras_loads_our_functional_file_and_we_load_keras(tmp_path):
    keras = _keras()
    model = residual_two_output_model()
    model.compile("sgd", loss=["sparse_categorical_crossentropy", "mse"])
    x, y1, y2 = data()
    model.save(tmp_path / "ours.keras")
    theirs = keras.saving.load_model(tmp_path / "ours.keras")
    assert [l.name for l in theirs.layers] == [l.name for l in model.layers]
    for p, q in zip(model.predict(x, verbose=0), theirs.predict(x, verbose=0)):
        np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-6)
    theirs.save(tmp_path / "theirs.keras")
    back = saving.load_model(tmp_path / "theirs.keras")
    for p, q in zip(back.predict(x, verbose=0), theirs.predict(x, verbose=0)):
        np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-6)
    assert [l.name for l in back.layers] == [l.name for l in theirs.layers]


def test_a_keras_built_functional_file_with_shared_and_nested_layers_loads(tmp_path):
    keras = _keras()
    x = keras.Input((4,), name="x")
    inner_in = keras.Input((3,), name="ii")
    inner = keras.Model(inner_in, keras.layers.Dense(2, name="id")(inner_in), name="inner")
    shared = keras.layers.Dense(3, name="shared")
    a, b = shared(x), keras.layers.Dense(3, name="b")(x)
    s = keras.layers.Concatenate(name="cat")([a, b])
    t = inner(keras.layers.Dense(3, name="squeeze")(s))
    out = keras.layers.Add(name="add")([keras.layers.Dense(2, name="proj")(shared(x)), t])
    kmodel = keras.Model(x, {"out": out, "side": a}, name="kf")
    kmodel.save(tmp_path / "k.keras")
    ours = saving.load_model(tmp_path / "k.keras")
    data_x = np.random.default_rng(0).standard_normal((3, 4)).astype("float32")
    got, want = ours.predict(data_x, verbose=0), kmodel.predict(data_x, verbose=0)
    assert sorted(got) == ["out", "side"]
    for key in got:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6)


def test_ops_on_symbolic_tensors_are_saved_as_keras_ops(tmp_path):
    gpulayers.utils.clear_session()  # the op names below are the first of the session's
    x = gpulayers.Input((8,), name="x")
    h = layers.Dense(4, name="d1")(x)
    r = h
    h = layers.Dense(4, name="d2")(h)
    h += r
    y = gpulayers.ops.mean((2.0 * h - 1.0)[:, :2], axis=-1)
    model = Model(x, [h, y])
    entries = model.get_config()["layers"]
    assert [(e["module"], e["class_name"], e["config"]) for e in entries][3] == ("keras.src.ops.numpy", "Add", {"name": "add"})
    model.save(tmp_path / "ops.keras")
    loaded = saving.load_model(tmp_path / "ops.keras")
    data = np.random.default_rng(0).standard_normal((3, 8)).astype("float32")
    for p, q in zip(model.predict(data, verbose=0), loaded.predict(data, verbose=0)):
        np.testing.assert_array_equal(p, q)


def test_binary_ops_on_symbolic_tensors_move_both_ways_with_keras(tmp_path):
    keras = _keras()
    x = gpulayers.Input((8,))
    h = layers.Dense(4)(x)
    model = Model(x, (layers.Dense(4)(h) + h) * 2.0)
    model.save(tmp_path / "ours.keras")
    data = np.ones((2, 8), "float32")
    theirs = keras.saving.load_model(tmp_path / "ours.keras")
    np.testing.assert_allclose(theirs.predict(data, verbose=0), model.predict(data, verbose=0), rtol=1e-6)
    kx = keras.Input((8,))
    ka = keras.layers.Dense(3)(kx)
    kmodel = keras.Model(kx, keras.ops.subtract(keras.ops.add(ka, ka) * 3.0, ka))
    kmodel.save(tmp_path / "theirs.keras")
    back = saving.load_model(tmp_path / "theirs.keras")
    np.testing.assert_allclose(back.predict(data, verbose=0), kmodel.predict(data, verbose=0), rtol=1e-6)
