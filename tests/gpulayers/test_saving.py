"""Saving and loading: Keras 3's .keras and .weights.h5 formats, hostile files, atomic writes.

The expected HDF5 layout and config.json schema are those of files written by
Keras 3.15 (see /work/shared/reference/FACTS.md, "Keras 3 files").
"""

import importlib.util
import io
import json
import os
import pathlib
import re
import warnings
import zipfile

import h5py
import numpy as np
import pytest

from gpulayers import layers as layers_module
from gpulayers import saving, serialization
from gpulayers.layers import (
    Activation,
    AveragePooling2D,
    BatchNormalization,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAveragePooling2D,
    Input,
    MaxPooling2D,
    StochasticPooling2D,
)
from gpulayers.models import Sequential
from helpers import keras_or_skip

# ---------------------------------------------------------------- models


def every_layer_cnn(seed=0, dtype="float32"):
    """A CNN with every Keras layer type, Conv2D three times and Dense twice, non-trivial BN statistics."""
    model = Sequential(
        [
            Input(shape=(8, 8, 3), dtype=dtype),
            Conv2D(4, 3, padding="same", activation="relu", dtype=dtype, name="features"),
            BatchNormalization(dtype=dtype),
            MaxPooling2D(dtype=dtype),
            Conv2D(4, 3, padding="same", dtype=dtype),
            AveragePooling2D(2, dtype=dtype),
            Conv2D(6, 1, dtype=dtype),
            GlobalAveragePooling2D(dtype=dtype),
            Dropout(0.3, dtype=dtype),
            Dense(5, activation="tanh", dtype=dtype),
            Flatten(dtype=dtype),
            Dense(3, dtype=dtype),
            Activation("softmax", dtype=dtype),
        ],
        name="cnn",
    )
    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(dtype) for w in model.weights])
    return model


EXPECTED_GROUPS = [  # (group, weight shapes) in the model's layer order
    ("conv2d", [(3, 3, 3, 4), (4,)]),
    ("batch_normalization", [(4,)] * 4),
    ("max_pooling2d", []),
    ("conv2d_1", [(3, 3, 4, 4), (4,)]),
    ("average_pooling2d", []),
    ("conv2d_2", [(1, 1, 4, 6), (6,)]),
    ("global_average_pooling2d", []),
    ("dropout", []),
    ("dense", [(6, 5), (5,)]),
    ("flatten", []),
    ("dense_1", [(5, 3), (3,)]),
    ("activation", []),
]


def sample(n=4, seed=1):
    return np.random.default_rng(seed).standard_normal((n, 8, 8, 3)).astype("float32")


def snapshot(model):
    return [w.copy() for w in model.get_weights()]


def assert_same_weights(model, weights):
    got = model.get_weights()
    assert len(got) == len(weights)
    for a, b in zip(got, weights):
        np.testing.assert_array_equal(a, b)


def rewrite_keras(src, dst, replace=None, drop=(), add=None):
    """Copy the .keras zip ``src`` to ``dst`` with members replaced, dropped or added."""
    replace, add = dict(replace or {}), dict(add or {})
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a duplicate member name is wanted in one test
        for name in zin.namelist():
            if name in drop:
                continue
            data = zin.read(name)
            if name in replace:
                data = replace[name](data) if callable(replace[name]) else replace[name]
            zout.writestr(name, data)
        for name, data in add.items():
            zout.writestr(name, data)
    return dst


def edit_config(edit):
    def apply(data):
        config = json.loads(data)
        edit(config)
        return json.dumps(config).encode()

    return apply


def edit_h5(edit):
    """A replace function for model.weights.h5: apply ``edit(h5file)`` to a copy."""

    def apply(data):
        buffer = io.BytesIO(data)
        with h5py.File(buffer, "a") as h5:
            edit(h5)
        return buffer.getvalue()

    return apply


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One saved CNN in both formats, shared by the read-only tests."""
    folder = tmp_path_factory.mktemp("saved")
    model = every_layer_cnn()
    x = sample()
    saving.save_model(model, folder / "cnn.keras")
    saving.save_weights(model, folder / "cnn.weights.h5")
    return {
        "model": model,
        "x": x,
        "y": model.predict(x, verbose=0),
        "keras": folder / "cnn.keras",
        "h5": folder / "cnn.weights.h5",
    }


# ---------------------------------------------------------------- round trips


def test_keras_round_trip_gives_identical_predictions(saved):
    loaded = saving.load_model(saved["keras"])
    np.testing.assert_array_equal(loaded.predict(saved["x"], verbose=0), saved["y"])
    original = saved["model"]
    assert [type(l) for l in loaded.layers] == [type(l) for l in original.layers]
    assert [l.name for l in loaded.layers] == [l.name for l in original.layers]
    assert loaded.name == "cnn" and loaded.input_shape == (None, 8, 8, 3)
    assert loaded.get_config() == original.get_config()
    assert_same_weights(loaded, original.get_weights())
    assert [w.trainable for w in loaded.weights] == [w.trainable for w in original.weights]


@pytest.mark.parametrize("source", ["h5", "keras"])
def test_load_weights_round_trip(saved, source):
    target = every_layer_cnn(seed=7)
    assert not np.array_equal(target.predict(saved["x"], verbose=0), saved["y"])
    saving.load_weights(target, saved[source])
    np.testing.assert_array_equal(target.predict(saved["x"], verbose=0), saved["y"])


def test_float64_model_round_trip(tmp_path):
    model = every_layer_cnn(dtype="float64")
    saving.save_model(model, tmp_path / "m.keras")
    loaded = saving.load_model(tmp_path / "m.keras")
    assert all(w.dtype == "float64" for w in loaded.weights)
    np.testing.assert_array_equal(loaded.predict(sample(), verbose=0), model.predict(sample(), verbose=0))
    with h5py.File(io.BytesIO(zipfile.ZipFile(tmp_path / "m.keras").read("model.weights.h5"))) as h5:
        assert h5["layers/dense/vars/0"].dtype == np.float64


def test_weights_load_casts_a_float_file_to_the_model_dtype(saved):
    target = every_layer_cnn(seed=3, dtype="float64")
    saving.load_weights(target, saved["h5"])
    assert all(w.dtype == "float64" for w in target.weights)
    for a, b in zip(target.get_weights(), saved["model"].get_weights()):
        np.testing.assert_array_equal(a, b.astype("float64"))


def test_nested_sequential_layout_and_round_trip(tmp_path):
    inner = Sequential([Dense(3, activation="tanh"), Dense(2)])
    model = Sequential([Input(shape=(4,)), Dense(4), inner, Dense(1)])
    x = np.random.default_rng(0).standard_normal((5, 4)).astype("float32")
    saving.save_weights(model, tmp_path / "n.weights.h5")
    with h5py.File(tmp_path / "n.weights.h5", "r") as h5:
        assert set(h5) == {"layers", "vars"}
        assert set(h5["layers"]) == {"dense", "sequential", "dense_1"}
        assert set(h5["layers/sequential"]) == {"layers", "vars"}
        assert set(h5["layers/sequential/layers"]) == {"dense", "dense_1"}
        assert h5["layers/sequential/layers/dense/vars/0"].shape == (4, 3)
        assert h5["layers/sequential/layers/dense_1/vars/0"].shape == (3, 2)
        assert h5["layers/dense_1/vars/0"].shape == (2, 1)
        assert len(h5["layers/sequential/vars"]) == 0
        assert h5["layers/sequential/vars"].attrs["name"] == inner.name
    saving.save_model(model, tmp_path / "n.keras")
    config = json.loads(zipfile.ZipFile(tmp_path / "n.keras").read("config.json"))
    nested = config["config"]["layers"][2]
    assert (nested["module"], nested["class_name"], nested["registered_name"]) == ("keras", "Sequential", None)
    loaded = saving.load_model(tmp_path / "n.keras")
    assert isinstance(loaded.layers[1], Sequential)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_unbuilt_model_round_trip(tmp_path):
    model = Sequential([Dense(3), Dense(2)], name="lazy")
    with pytest.warns(UserWarning, match="not been built"):
        saving.save_model(model, tmp_path / "u.keras")
    loaded = saving.load_model(tmp_path / "u.keras")
    assert not loaded.built and [l.units for l in loaded.layers] == [3, 2]
    with h5py.File(io.BytesIO(zipfile.ZipFile(tmp_path / "u.keras").read("model.weights.h5"))) as h5:
        assert len(h5["layers/dense/vars"]) == 0 and len(h5["layers/dense_1/vars"]) == 0


def test_model_built_by_a_call_round_trip(tmp_path):
    model = Sequential([Dense(3), Dense(2)])
    x = np.ones((2, 4), dtype="float32")
    model(x)
    saving.save_model(model, tmp_path / "c.keras")
    config = json.loads(zipfile.ZipFile(tmp_path / "c.keras").read("config.json"))
    assert config["build_config"] == {"input_shape": [None, 4]}
    loaded = saving.load_model(tmp_path / "c.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_stochastic_pooling_is_a_gpulayers_object(tmp_path):
    model = Sequential([Input(shape=(4, 4, 2)), StochasticPooling2D(seed=3), Flatten(), Dense(2)])
    saving.save_model(model, tmp_path / "s.keras")
    entry = json.loads(zipfile.ZipFile(tmp_path / "s.keras").read("config.json"))["config"]["layers"][1]
    assert entry["module"] == "gpulayers.layers"
    assert entry["registered_name"] == "gpulayers>StochasticPooling2D"
    with h5py.File(io.BytesIO(zipfile.ZipFile(tmp_path / "s.keras").read("model.weights.h5"))) as h5:
        assert set(h5["layers"]) == {"stochastic_pooling2d", "flatten", "dense"}
    loaded = saving.load_model(tmp_path / "s.keras")
    assert isinstance(loaded.layers[0], StochasticPooling2D) and loaded.layers[0].seed == 3
    x = np.random.default_rng(0).random((2, 4, 4, 2)).astype("float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert "Keras" in saving.save_model.__doc__ and "cannot" in saving.save_model.__doc__


class MyDense(Dense):
    """A user's layer: saved as Keras saves custom objects, rebuilt only when the program makes it known."""


def test_user_layer_is_saved_as_a_custom_object_and_loaded_only_when_known(tmp_path):
    model = Sequential([Input(shape=(4,)), MyDense(2)])
    saving.save_model(model, tmp_path / "u.keras")
    entry = json.loads(zipfile.ZipFile(tmp_path / "u.keras").read("config.json"))["config"]["layers"][1]
    assert (entry["module"], entry["class_name"], entry["registered_name"]) == (__name__, "MyDense", "MyDense")
    with h5py.File(io.BytesIO(zipfile.ZipFile(tmp_path / "u.keras").read("model.weights.h5"))) as h5:
        assert set(h5["layers"]) == {"my_dense"}
    with pytest.raises(ValueError, match="custom_objects"):
        saving.load_model(tmp_path / "u.keras")
    loaded = saving.load_model(tmp_path / "u.keras", custom_objects={"MyDense": MyDense})
    assert type(loaded.layers[0]) is MyDense
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


# ---------------------------------------------------------------- file layout


def test_hdf5_layout_is_keras(saved):
    model = saved["model"]
    with h5py.File(saved["h5"], "r") as h5:
        assert set(h5) == {"layers", "vars"}
        assert len(h5["vars"]) == 0 and h5["vars"].attrs["name"] == "cnn"
        assert set(h5["layers"]) == {name for name, _ in EXPECTED_GROUPS}
        for (name, shapes), layer in zip(EXPECTED_GROUPS, model.layers):
            group = h5[f"layers/{name}"]
            assert set(group) == {"vars"}
            assert group["vars"].attrs["name"] == layer.name  # the group name comes from the class
            assert sorted(group["vars"]) == [str(i) for i in range(len(shapes))]
            for i, (shape, weight) in enumerate(zip(shapes, layer.get_weights())):
                dataset = group[f"vars/{i}"]
                assert isinstance(dataset, h5py.Dataset)
                assert dataset.shape == shape and dataset.dtype == np.float32
                np.testing.assert_array_equal(dataset[()], weight)
        bn = model.layers[1]
        names = ["gamma", "beta", "moving_mean", "moving_variance"]
        for i, name in enumerate(names):
            np.testing.assert_array_equal(h5[f"layers/batch_normalization/vars/{i}"][()], getattr(bn, name).numpy())


def test_keras_archive_members_and_weights_match_the_weights_file(saved):
    with zipfile.ZipFile(saved["keras"]) as archive:
        assert archive.namelist() == ["metadata.json", "config.json", "model.weights.h5"]
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
        metadata = json.loads(archive.read("metadata.json"))
        inner = io.BytesIO(archive.read("model.weights.h5"))
    assert set(metadata) == {"keras_version", "date_saved"}
    assert re.fullmatch(r"3\.\d+\.\d+", metadata["keras_version"])
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}@\d{2}:\d{2}:\d{2}", metadata["date_saved"])
    with h5py.File(inner, "r") as a, h5py.File(saved["h5"], "r") as b:
        for name, shapes in EXPECTED_GROUPS:
            for i in range(len(shapes)):
                np.testing.assert_array_equal(a[f"layers/{name}/vars/{i}"][()], b[f"layers/{name}/vars/{i}"][()])


def test_config_json_is_keras_schema(saved):
    config = json.loads(zipfile.ZipFile(saved["keras"]).read("config.json"))
    assert set(config) == {"module", "class_name", "config", "registered_name", "build_config", "compile_config"}
    assert (config["module"], config["class_name"], config["registered_name"]) == ("keras", "Sequential", None)
    assert config["build_config"] == {"input_shape": [None, 8, 8, 3]}
    assert config["compile_config"] == {}
    inner = config["config"]
    assert inner["name"] == "cnn" and inner["trainable"] is True
    assert inner["dtype"]["class_name"] == "DTypePolicy" and inner["dtype"]["config"] == {"name": "float32"}
    assert inner["build_input_shape"] == [None, 8, 8, 3]
    entries = inner["layers"]
    assert entries[0]["class_name"] == "InputLayer" and entries[0]["config"]["batch_shape"] == [None, 8, 8, 3]
    classes = [e["class_name"] for e in entries[1:]]
    assert classes == [type(l).__name__ for l in saved["model"].layers]
    for entry, layer in zip(entries[1:], saved["model"].layers):
        assert entry["module"] == "keras.layers" and entry["registered_name"] is None
        assert entry["config"] == json.loads(json.dumps(layers_module.serialize(layer)["config"]))
    assert entries[1]["build_config"] == {"input_shape": [None, 8, 8, 3]}
    assert entries[1]["config"]["kernel_size"] == [3, 3] and entries[1]["config"]["name"] == "features"


def test_accepts_the_extra_keys_keras_writes(saved, tmp_path):
    """What Keras 3.15 adds: shared_object_id, input_axes, renorm keys, quantization_config, compile_config, optimizer vars."""

    def keras_like(config):
        config["compile_config"] = {
            "optimizer": {"module": "keras.src.backend.torch.optimizers.torch_adam", "class_name": "Adam",
                          "config": {"learning_rate": 0.001}, "registered_name": "Adam"},
            "loss": "mse",
        }
        config["config"]["dtype"]["shared_object_id"] = 140440069321872
        for entry in config["config"]["layers"]:
            cfg = entry["config"]
            if entry["class_name"] == "InputLayer":
                cfg.update(ragged=False, optional=False)
                continue
            cfg["dtype"]["shared_object_id"] = 140440069321872
            if entry["class_name"] == "BatchNormalization":
                cfg.update(renorm=False, renorm_clipping=None, renorm_momentum=0.99)
            if entry["class_name"] == "Dense":
                cfg["quantization_config"] = None
            if "kernel_initializer" in cfg:
                cfg["kernel_initializer"]["config"].update(input_axes=None, output_axes=None)

    def optimizer_state(h5):  # Keras's torch backend: int32 iterations, float32 learning rate, no slots yet
        group = h5.create_group("optimizer").create_group("vars")
        group.attrs["name"] = "adam"
        group["0"] = np.array(3, dtype=np.int32)
        group["1"] = np.array(0.001, dtype=np.float32)

    path = rewrite_keras(saved["keras"], tmp_path / "k.keras", replace={
        "config.json": edit_config(keras_like), "model.weights.h5": edit_h5(optimizer_state)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = saving.load_model(path)
    np.testing.assert_array_equal(loaded.predict(saved["x"], verbose=0), saved["y"])
    assert type(loaded.optimizer).__name__ == "Adam" and loaded.optimizer.iterations == 3
    assert loaded.optimizer.learning_rate == 0.001 and loaded.loss == "mse"
    assert not saving.load_model(path, compile=False)._compiled


def test_keras_noop_keys_with_real_values_are_still_refused(saved, tmp_path):
    def renorm_on(config):
        config["config"]["layers"][2]["config"].update(renorm=True, renorm_clipping=None, renorm_momentum=0.9)

    path = rewrite_keras(saved["keras"], tmp_path / "r.keras", replace={"config.json": edit_config(renorm_on)})
    with pytest.raises(ValueError, match="renorm") as info:
        saving.load_model(path)
    assert str(path) in str(info.value)


def test_config_json_has_the_keras_3_arguments(saved):
    """Written by the layers themselves, as Keras 3.15 writes them (nothing is added or dropped by saving)."""
    entries = json.loads(zipfile.ZipFile(saved["keras"]).read("config.json"))["config"]["layers"]
    bn, dense, conv = entries[2]["config"], entries[9]["config"], entries[1]["config"]
    assert (bn["renorm"], bn["renorm_clipping"], bn["renorm_momentum"]) == (False, None, 0.99)
    assert dense["quantization_config"] is None and "quantization_config" not in conv
    assert "lora_rank" not in dense and "lora_rank" not in conv
    assert conv["activity_regularizer"] is None
    for cfg in (dense, conv):
        assert cfg["kernel_initializer"]["config"] == {"seed": None, "input_axes": None, "output_axes": None}


def test_keras_argument_values_reach_the_layers(saved, tmp_path):
    """The values Keras writes are given to the layers (not filtered out) and written back."""

    def keras_values(config):
        layers = config["config"]["layers"]
        layers[2]["config"].update(renorm_momentum=0.9, renorm_clipping={"rmax": 3.0, "rmin": 0.3, "dmax": 5.0})
        layers[9]["config"]["kernel_initializer"]["config"].update(input_axes=[0], output_axes=[1])

    path = rewrite_keras(saved["keras"], tmp_path / "v.keras", replace={"config.json": edit_config(keras_values)})
    loaded = saving.load_model(path)
    bn, dense = loaded.layers[1], loaded.layers[8]
    assert bn.renorm is False and bn.renorm_momentum == 0.9
    assert bn.renorm_clipping == {"rmax": 3.0, "rmin": 0.3, "dmax": 5.0}
    assert (dense.kernel_initializer.input_axes, dense.kernel_initializer.output_axes) == ([0], [1])
    np.testing.assert_array_equal(loaded.predict(saved["x"], verbose=0), saved["y"])
    saving.save_model(loaded, tmp_path / "again.keras")
    entries = json.loads(zipfile.ZipFile(tmp_path / "again.keras").read("config.json"))["config"]["layers"]
    assert entries[2]["config"]["renorm_momentum"] == 0.9
    assert entries[9]["config"]["kernel_initializer"]["config"]["input_axes"] == [0]


@pytest.mark.parametrize("index,changes,pattern", [
    (9, dict(quantization_config={"module": "keras.quantizers", "class_name": "Int8QuantizationConfig",
                                  "config": {}, "registered_name": None}), r"quantization_config is not supported"),
    (9, dict(lora_rank=4, lora_alpha=4), r"lora_rank is not supported.*lora_rank=4"),
    (1, dict(lora_rank=2, lora_alpha=2), r"lora_rank is not supported.*lora_rank=2"),
    (2, dict(renorm=True), r"renorm is not supported.*renorm=True"),
    (2, dict(renorm_momentum=7), r"renorm_momentum.*7"),
])
def test_keras_arguments_gpulayers_cannot_honour_are_refused(saved, tmp_path, index, changes, pattern):
    path = rewrite_keras(saved["keras"], tmp_path / "q.keras",
                         replace={"config.json": edit_config(_layer_config(index, **changes))})
    with pytest.raises(ValueError, match=pattern) as info:
        saving.load_model(path)
    assert str(path) in str(info.value)


def test_bad_initializer_axes_are_refused(saved, tmp_path):
    def bad_axes(config):
        config["config"]["layers"][9]["config"]["kernel_initializer"]["config"].update(input_axes="0", output_axes=[1])

    path = rewrite_keras(saved["keras"], tmp_path / "a.keras", replace={"config.json": edit_config(bad_axes)})
    with pytest.raises(ValueError, match=r"input_axes.*'0'") as info:
        saving.load_model(path)
    assert str(path) in str(info.value)


def test_layers_deserialize_builds_a_sequential():
    inner = Sequential([Dense(3, activation="tanh"), Dense(2)], name="inner")
    model = Sequential([Input(shape=(4,)), Dense(4), inner, Dense(1)], name="outer")
    x = np.random.default_rng(0).standard_normal((5, 4)).astype("float32")
    entry = json.loads(json.dumps({"class_name": "Sequential", "config": model.get_config()}))
    again = layers_module.deserialize(entry)
    assert isinstance(again, Sequential) and again.name == "outer" and again.built
    assert isinstance(again.layers[1], Sequential) and again.layers[1].name == "inner"
    again.set_weights(model.get_weights())
    np.testing.assert_array_equal(again.predict(x, verbose=0), model.predict(x, verbose=0))
    # A model built by a call gets an InputLayer and a build_input_shape, as in Keras 3.15.
    called = Sequential([Dense(3), Dense(2)], name="called")
    called(x)
    config = json.loads(json.dumps(called.get_config()))
    assert config["build_input_shape"] == [None, 4] and config["layers"][0]["class_name"] == "InputLayer"
    # A config with only the entry's build_config (as older Keras files have) is built from it.
    config.pop("build_input_shape")
    config["layers"].pop(0)
    entry = {"class_name": "Sequential", "config": config, "build_config": {"input_shape": [None, 4]}}
    rebuilt = layers_module.deserialize(entry)
    assert rebuilt.built and [w.shape for w in rebuilt.weights] == [w.shape for w in called.weights]
    entry.pop("build_config")
    assert not layers_module.deserialize(entry).built
    with pytest.raises(ValueError, match=r"Invalid Functional model configuration"):
        layers_module.deserialize({"class_name": "Functional", "config": {}})


# ---------------------------------------------------------------- hostile model files


def _layer(index, **changes):
    def edit(config):
        config["config"]["layers"][index].update(changes)

    return edit


def _layer_config(index, **changes):
    def edit(config):
        config["config"]["layers"][index]["config"].update(changes)

    return edit


HOSTILE_CONFIGS = {
    "unknown class": _layer(1, class_name="MyConv"),
    "Lambda layer": _layer(1, class_name="Lambda", config={"function": {"class_name": "__lambda__",
                                                                         "config": {"code": "print(1)"}}}),
    "module os": _layer(1, module="os"),
    "module os in an activation": _layer_config(1, activation={
        "module": "os", "class_name": "function", "config": "system", "registered_name": "system"}),
    "__reduce__ key": _layer_config(1, __reduce__=["os.system", ["echo hi"]]),
    "__lambda__ object": _layer_config(9, activation={"class_name": "__lambda__", "config": {"code": "x"}}),
    "custom registered_name": _layer(1, registered_name="evil>Conv2D"),
    "functional model": lambda config: config.update(class_name="Functional"),
    "layers not a list": lambda config: config["config"].update(layers={"a": 1}),
    "bad build shape": _layer(1, build_config={"input_shape": "big"}),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_CONFIGS))
def test_hostile_config_refused_before_anything_is_built(saved, tmp_path, monkeypatch, case):
    path = rewrite_keras(saved["keras"], tmp_path / "h.keras", replace={"config.json": edit_config(HOSTILE_CONFIGS[case])})
    built = []
    real = serialization.deserialize
    monkeypatch.setattr(serialization, "deserialize", lambda entry, custom_objects=None: built.append(entry) or real(entry))
    with pytest.raises(ValueError) as info:
        saving.load_model(path)
    assert str(path) in str(info.value)
    assert built == []


def _truncate(data):
    return data[: len(data) // 2]


HOSTILE_ARCHIVES = {
    "config not JSON": dict(replace={"config.json": b"{'class_name': 'Sequential',"}),
    "config not UTF-8": dict(replace={"config.json": b"\xff\xfe\x00"}),
    "config duplicate keys": dict(replace={"config.json": b'{"class_name": "Sequential", "class_name": "Sequential"}'}),
    "config not an object": dict(replace={"config.json": b"[1, 2]"}),
    "missing config": dict(drop=("config.json",)),
    "missing metadata": dict(drop=("metadata.json",)),
    "missing weights": dict(drop=("model.weights.h5",)),
    "npz weights": dict(drop=("model.weights.h5",), add={"model.weights.npz": b"PK"}),
    "keras 2 metadata": dict(replace={"metadata.json": b'{"keras_version": "2.15.0"}'}),
    "truncated weights member": dict(replace={"model.weights.h5": _truncate}),
    "weights not hdf5": dict(replace={"model.weights.h5": b"not an hdf5 file" * 100}),
    "duplicate member": dict(add={"config.json": b"{}"}),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_ARCHIVES))
def test_hostile_archive_refused(saved, tmp_path, case):
    path = rewrite_keras(saved["keras"], tmp_path / "h.keras", **HOSTILE_ARCHIVES[case])
    with pytest.raises(ValueError) as info:
        saving.load_model(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("cut", [0.5, 0.9, 1.0])
def test_truncated_or_damaged_zip_refused(saved, tmp_path, cut):
    data = saved["keras"].read_bytes()
    path = tmp_path / "t.keras"
    if cut == 1.0:  # same length, damaged bytes in the weights
        start = data.index(b"\x89HDF") + 3000
        data = data[:start] + b"\xab" * 200 + data[start + 200 :]
    else:
        data = data[: int(len(data) * cut)]
    path.write_bytes(data)
    with pytest.raises(ValueError) as info:
        saving.load_model(path)
    assert str(path) in str(info.value)


def test_missing_file_and_not_a_zip(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.keras"):
        saving.load_model(tmp_path / "nothing.keras")
    (tmp_path / "text.keras").write_text("hello")
    with pytest.raises(ValueError, match="text.keras"):
        saving.load_model(tmp_path / "text.keras")


# ---------------------------------------------------------------- hostile weights: the model keeps its weights


def _dense_kernel_transposed(h5):
    data = h5["layers/dense/vars/0"][()]
    del h5["layers/dense/vars/0"]
    h5["layers/dense/vars/0"] = data.T


def _extra_dataset(h5):
    h5["layers/dense/vars/2"] = np.zeros(5, dtype=np.float32)


def _missing_dataset(h5):
    del h5["layers/batch_normalization/vars/3"]


def _weight_in_weightless_layer(h5):
    h5["layers/flatten/vars/0"] = np.zeros(1, dtype=np.float32)


def _missing_group(h5):
    del h5["layers/dropout"]


def _extra_group(h5):
    h5.create_group("layers/dense_2/vars")


def _renamed_group(h5):
    h5.move("layers/conv2d_2", "layers/conv2d_3")


def _int_dataset(h5):
    del h5["layers/dense/vars/1"]
    h5["layers/dense/vars/1"] = np.zeros(5, dtype=np.int64)


def _string_dataset(h5):
    del h5["layers/dense/vars/1"]
    h5["layers/dense/vars/1"] = np.array([b"abcde"] * 5)


def _dataset_as_group(h5):
    del h5["layers/dense/vars/1"]
    h5.create_group("layers/dense/vars/1")


def _soft_link(h5):
    del h5["layers/dense/vars/1"]
    h5["layers/dense/vars/1"] = h5py.SoftLink("/layers/dense_1/vars/1")


def _external_link(h5):
    del h5["layers/dense/vars/1"]
    h5["layers/dense/vars/1"] = h5py.ExternalLink("/etc/passwd", "/x")


def _extra_top_level(h5):
    h5.create_group("evil")


def _weights_in_model_vars(h5):
    h5["vars/0"] = np.zeros(2, dtype=np.float32)


HOSTILE_WEIGHTS = {
    "wrong shape": _dense_kernel_transposed,
    "extra dataset": _extra_dataset,
    "missing dataset": _missing_dataset,
    "weight in a weightless layer": _weight_in_weightless_layer,
    "missing layer group": _missing_group,
    "extra layer group": _extra_group,
    "renamed layer group": _renamed_group,
    "int dataset": _int_dataset,
    "string dataset": _string_dataset,
    "group instead of dataset": _dataset_as_group,
    "soft link": _soft_link,
    "external link": _external_link,
    "extra top-level group": _extra_top_level,
    "arrays in the model's own vars": _weights_in_model_vars,
}


@pytest.mark.parametrize("case", sorted(HOSTILE_WEIGHTS))
def test_hostile_weights_refused_and_model_unchanged(saved, tmp_path, case):
    edit = HOSTILE_WEIGHTS[case]
    h5_path = tmp_path / "w.weights.h5"
    h5_path.write_bytes(edit_h5(edit)(saved["h5"].read_bytes()))
    keras_path = rewrite_keras(saved["keras"], tmp_path / "w.keras", replace={"model.weights.h5": edit_h5(edit)})
    target = every_layer_cnn(seed=11)
    before = snapshot(target)
    for path in (h5_path, keras_path):
        with pytest.raises(ValueError) as info:
            saving.load_weights(target, path)
        assert str(path) in str(info.value)
        assert_same_weights(target, before)
    with pytest.raises(ValueError) as info:
        saving.load_model(keras_path)
    assert str(keras_path) in str(info.value)


def test_truncated_weights_file_refused_and_model_unchanged(saved, tmp_path):
    data = saved["h5"].read_bytes()
    target = every_layer_cnn(seed=5)
    before = snapshot(target)
    for size in (0, 100, len(data) // 2, len(data) - 1000):
        path = tmp_path / f"t{size}.weights.h5"
        path.write_bytes(data[:size])
        with pytest.raises((ValueError, OSError)) as info:
            saving.load_weights(target, path)
        assert str(path) in str(info.value)
        assert_same_weights(target, before)


def test_weights_for_another_architecture_refused(saved):
    for other in (
        Sequential([Input(shape=(8, 8, 3)), Conv2D(4, 3), Flatten(), Dense(2)]),
        Sequential([Input(shape=(8, 8, 3)), Conv2D(4, 3), Flatten(), Dense(2), Dense(2), Dense(2)]),
    ):
        before = snapshot(other)
        with pytest.raises(ValueError, match="layer groups"):
            saving.load_weights(other, saved["h5"])
        assert_same_weights(other, before)


def test_weights_into_an_unbuilt_model_say_so(tmp_path):
    saving.save_weights(Sequential([Input(shape=(4,)), Dense(5), Dense(3)]), tmp_path / "d.weights.h5")
    unbuilt = Sequential([Dense(5), Dense(3)])
    with pytest.raises(ValueError, match="not built"):
        saving.load_weights(unbuilt, tmp_path / "d.weights.h5")
    assert not unbuilt.built and unbuilt.weights == []


def test_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="none.weights.h5"):
        saving.load_weights(every_layer_cnn(), tmp_path / "none.weights.h5")


# ---------------------------------------------------------------- atomic saves


def _failing_zip_member(monkeypatch):
    """config.json, the second archive member, fails to be written."""
    real = zipfile.ZipFile.writestr

    def writestr(self, info, data, *args, **kwargs):
        if getattr(info, "filename", info) == "config.json":
            raise OSError("disk full (injected)")
        return real(self, info, data, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", writestr)


class _FailingFile:
    """A file object that accepts 1000 bytes, then fails (a full disk)."""

    def __init__(self, fileobj):
        self._file, self._written = fileobj, 0

    def write(self, data):
        if self._written + len(data) > 1000:
            self._file.write(bytes(data)[: 1000 - self._written])
            raise OSError("disk full (injected)")
        self._written += len(data)
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()
        return False


def _failing_write(monkeypatch):
    real = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda *args, **kwargs: _FailingFile(real(*args, **kwargs)))


def _failing_fsync(monkeypatch):
    def fsync(fd):
        raise OSError("fsync failed (injected)")

    monkeypatch.setattr(os, "fsync", fsync)


def _failing_replace(monkeypatch):
    def replace(src, dst):
        raise OSError("rename failed (injected)")

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize(
    "kind, inject",
    [
        ("keras", _failing_zip_member),
        ("keras", _failing_write),
        ("keras", _failing_fsync),
        ("keras", _failing_replace),
        ("weights", _failing_write),
        ("weights", _failing_fsync),
        ("weights", _failing_replace),
    ],
)
def test_failed_save_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, kind, inject):
    model = every_layer_cnn()
    save = saving.save_model if kind == "keras" else saving.save_weights
    suffix = ".keras" if kind == "keras" else ".weights.h5"
    path, fresh = tmp_path / f"m{suffix}", tmp_path / f"fresh{suffix}"
    save(every_layer_cnn(seed=4), path)
    old = path.read_bytes()
    inject(monkeypatch)
    for target in (path, fresh):
        with pytest.raises(OSError, match="injected"):
            save(model, target)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    if kind == "keras":
        assert_same_weights(saving.load_model(path), every_layer_cnn(seed=4).get_weights())


def test_save_replaces_an_existing_file_and_keeps_its_mode(tmp_path):
    path = tmp_path / "m.keras"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)
    saving.save_model(every_layer_cnn(), path)
    assert zipfile.is_zipfile(path)
    assert (os.stat(path).st_mode & 0o777) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]


# ---------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "function, name",
    [
        (saving.save_model, "model.h5"),
        (saving.save_model, "model.keras.zip"),
        (saving.save_model, "model.weights.h5"),
        (saving.save_weights, "model.h5"),
        (saving.save_weights, "model.keras"),
        (saving.save_weights, "model.weights"),
    ],
)
def test_save_refuses_wrong_extensions(tmp_path, function, name):
    with pytest.raises(ValueError, match=re.escape(name)):
        function(every_layer_cnn(), tmp_path / name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["model.h5", "model.npz", "model.weights.h5.bak", "model.zip"])
def test_load_refuses_wrong_extensions(saved, tmp_path, name):
    path = tmp_path / name
    path.write_bytes(saved["keras"].read_bytes())
    with pytest.raises(ValueError, match=re.escape(name)):
        saving.load_weights(every_layer_cnn(), path)
    with pytest.raises(ValueError, match=re.escape(name)):
        saving.load_model(path)
    with pytest.raises(ValueError, match=re.escape(saved["h5"].name)):
        saving.load_model(saved["h5"])


def test_non_models_and_non_paths_refused(tmp_path):
    with pytest.raises(TypeError):
        saving.save_model(Dense(2), tmp_path / "m.keras")
    with pytest.raises(TypeError):
        saving.save_weights(object(), tmp_path / "m.weights.h5")
    with pytest.raises(TypeError):
        saving.load_model(42)
    with pytest.raises(TypeError):
        saving.load_weights(every_layer_cnn(), io.BytesIO())


def test_no_pickle_eval_or_imports_from_files():
    package = pathlib.Path(saving.__file__).parent
    source = "".join(p.read_text(encoding="utf-8") for p in sorted(package.glob("*.py")))
    source += pathlib.Path(serialization.__file__).read_text(encoding="utf-8")
    assert "load_model" in source
    for forbidden in ("import pickle", "allow_pickle", "np.load(", "eval(", "exec(", "import_module", "__import__"):
        assert forbidden not in source


# ---------------------------------------------------------------- real Keras 3 (optional)


def _keras_or_skip():
    if "KERAS_BACKEND" not in os.environ:
        for backend in ("torch", "jax", "tensorflow"):
            if importlib.util.find_spec(backend) is not None:
                os.environ["KERAS_BACKEND"] = backend
                break
    return pytest.importorskip("keras", reason="Keras 3 is not installed: the interop check needs it")


def test_real_keras_reads_gpulayers_files_and_gpulayers_reads_keras_files(saved, tmp_path):
    keras = _keras_or_skip()
    if not keras.__version__.startswith("3."):
        pytest.skip(f"needs Keras 3, found {keras.__version__}")
    x, y = saved["x"], saved["y"]
    # gpulayers -> Keras: the whole model, then the weights files into a Keras-built model.
    kmodel = keras.saving.load_model(saved["keras"])
    np.testing.assert_allclose(np.asarray(kmodel.predict(x, verbose=0)), y, rtol=1e-5, atol=1e-6)
    L = keras.layers
    built = keras.Sequential([
        keras.Input((8, 8, 3)), L.Conv2D(4, 3, padding="same", activation="relu"), L.BatchNormalization(),
        L.MaxPooling2D(), L.Conv2D(4, 3, padding="same"), L.AveragePooling2D(2), L.Conv2D(6, 1),
        L.GlobalAveragePooling2D(), L.Dropout(0.3), L.Dense(5, activation="tanh"), L.Flatten(), L.Dense(3),
        L.Activation("softmax"),
    ])
    for source in (saved["h5"], saved["keras"]):
        built.load_weights(str(source))
        np.testing.assert_allclose(np.asarray(built.predict(x, verbose=0)), y, rtol=1e-5, atol=1e-6)
    # Keras -> gpulayers: a model Keras trained (non-trivial BatchNormalization statistics).
    built.compile(optimizer="adam", loss="mse")
    built.fit(x, np.full((len(x), 3), 0.2, "float32"), epochs=2, verbose=0)
    expected = np.asarray(built.predict(x, verbose=0))
    built.save(str(tmp_path / "k.keras"))
    built.save_weights(str(tmp_path / "k.weights.h5"))
    mine = saving.load_model(tmp_path / "k.keras")
    np.testing.assert_allclose(mine.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    target = every_layer_cnn(seed=9)
    saving.load_weights(target, tmp_path / "k.weights.h5")
    np.testing.assert_allclose(target.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_real_keras_layer_configs_are_those_gpulayers_writes(tmp_path):
    """Every layer config in a file Keras 3 wrote is, key for key, the one gpulayers writes for that layer."""
    keras = _keras_or_skip()
    if not keras.__version__.startswith("3."):
        pytest.skip(f"needs Keras 3, found {keras.__version__}")
    L = keras.layers
    kmodel = keras.Sequential([
        keras.Input((8, 8, 3)), L.Conv2D(4, 3, padding="same", activation="relu", kernel_initializer="he_normal"),
        L.BatchNormalization(renorm_momentum=0.9), L.MaxPooling2D(), L.Conv2D(4, 3, activity_regularizer="l2"),
        L.GlobalAveragePooling2D(), L.Dense(5, kernel_initializer=keras.initializers.GlorotUniform(
            input_axes=[0], output_axes=[1])), L.Dense(3),
    ])
    kmodel.save(str(tmp_path / "k.keras"))

    def without_shared_ids(value):
        if isinstance(value, dict):
            return {k: without_shared_ids(v) for k, v in value.items() if k != "shared_object_id"}
        if isinstance(value, list):
            return [without_shared_ids(v) for v in value]
        return value

    entries = without_shared_ids(json.loads(zipfile.ZipFile(tmp_path / "k.keras").read("config.json")))
    mine = saving.load_model(tmp_path / "k.keras")
    for entry, layer in zip(entries["config"]["layers"][1:], mine.layers, strict=True):
        assert entry["class_name"] == type(layer).__name__
        assert json.loads(json.dumps(layer.get_config())) == entry["config"]


def test_arrays_in_configs_load_both_ways(tmp_path):
    # Keras writes an array argument (Constant's value, AUC's label_weights) as {"class_name": "__numpy__" or
    # "__tensor__", "config": {"value": ..., "dtype": ...}}: data, which loads; anything more in it is refused.
    from gpulayers.saving import config_checks

    entry = {"class_name": "__numpy__", "config": {"value": [[1.0, 2.0]], "dtype": "float64"}}
    config_checks._check_object(entry, "m.keras", "config")
    for bad in ({**entry, "module": "os"}, {"class_name": "__numpy__", "config": {"value": ["rm -rf"], "dtype": "float64"}},
                {"class_name": "__tensor__", "config": {"value": [1.0], "dtype": "object"}}):
        with pytest.raises(ValueError):
            config_checks._check_object(bad, "m.keras", "config")
    keras = keras_or_skip()
    import gpulayers

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, kernel_initializer=keras.initializers.Constant(
        np.arange(6.0).reshape(3, 2)))])
    model.compile(optimizer="sgd", loss="mse",
                  metrics=[keras.metrics.AUC(multi_label=True, num_labels=2, label_weights=[1.0, 2.0])])
    model.save(tmp_path / "k.keras")
    ours = gpulayers.saving.load_model(tmp_path / "k.keras")
    np.testing.assert_array_equal(ours.get_weights()[0], np.arange(6.0).reshape(3, 2))
    init = ours.layers[0].kernel_initializer
    np.testing.assert_array_equal(init((3, 2)), np.arange(6.0).reshape(3, 2))
    assert ours.get_compile_config()["metrics"][0]["config"]["label_weights"]["config"]["value"] == [1.0, 2.0]
    ours.save(tmp_path / "g.keras")
    # compile=False: Keras 3.15.1 cannot rebuild an AUC with label_weights from its own files either.
    back = keras.saving.load_model(tmp_path / "g.keras", compile=False)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(back.layers[0].kernel), np.arange(6.0).reshape(3, 2))
