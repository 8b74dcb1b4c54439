"""Saving and restoring a compiled model: compile_config and optimizer state in Keras 3's layout.

The layout expected here is written out from Keras 3.15's sources
(``keras/src/optimizers/*.py``, each ``build``) and the files Keras 3.15 (torch
backend) wrote, independently of gpulayers' code: ``optimizer/vars/0``
iterations, ``1`` the learning rate when it is a float, then the slots in
build order (each ``add_optimizer_variables`` call loops over the trainable
weights and, per weight, over its names).
"""

import io
import json
import re
import warnings
import zipfile

import h5py
import numpy as np
import pytest

from gpulayers import losses, metrics, optimizers, serialization
from gpulayers.layers import BatchNormalization, Conv2D, Dense, Flatten, Input
from gpulayers.models import Sequential, load_model
from gpulayers.optimizers import schedules
from helpers import keras_or_skip

# ---------------------------------------------------------------- models and data


def make_model(seed=0):
    """Six trainable weights of four shapes: conv kernel and bias, BN gamma and beta, dense kernel and bias."""
    model = Sequential(
        [
            Input(shape=(4, 4, 2)),
            Conv2D(3, 2, activation="relu"),
            BatchNormalization(),
            Flatten(),
            Dense(3, activation="softmax"),
        ],
        name="net",
    )
    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(0.2, 1.2, w.shape).astype("float32") for w in model.weights])
    return model


TRAINABLE_SHAPES = [(2, 2, 2, 3), (3,), (3,), (3,), (27, 3), (3,)]
N = len(TRAINABLE_SHAPES)


def batches(count, seed=1):
    rng = np.random.default_rng(seed)
    return [
        (rng.standard_normal((8, 4, 4, 2)).astype("float32"), rng.integers(0, 3, 8))
        for _ in range(count)
    ]


def compiled(optimizer, seed=0):
    model = make_model(seed)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def train(model, data):
    for x, y in data:
        model.train_on_batch(x, y)


def assert_same_weights(a, b):
    wa, wb = a.get_weights(), b.get_weights()
    assert len(wa) == len(wb)
    for x, y in zip(wa, wb):
        np.testing.assert_array_equal(x, y)


def snapshot(model):
    state = model.optimizer.export_state(model.trainable_weights) if model.optimizer else None
    lr = model.optimizer._learning_rate if model.optimizer else None
    return [w.copy() for w in model.get_weights()], state, lr


def assert_unchanged(model, before):
    weights, state, lr = before
    for a, b in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(a, b)
    if state is not None:
        now = model.optimizer.export_state(model.trainable_weights)
        assert now["iterations"] == state["iterations"] and now["learning_rate"] == state["learning_rate"]
        assert len(now["slots"]) == len(state["slots"])
        for a, b in zip(now["slots"], state["slots"]):
            np.testing.assert_array_equal(a, b)
        assert model.optimizer._learning_rate is lr or model.optimizer._learning_rate == lr


# ---------------------------------------------------------------- the optimizers and Keras's slot order


def interleaved(*names):
    """One ``add_optimizer_variables(var_list, names)`` call: per weight, each name."""
    return [(name, i) for i in range(N) for name in names]


OPTIMIZERS = {  # id -> (factory, slot order as Keras builds it)
    "sgd": (lambda: optimizers.SGD(0.05), []),
    "sgd_momentum": (lambda: optimizers.SGD(0.05, momentum=0.9), interleaved("momentum")),
    "sgd_nesterov_clipnorm": (
        lambda: optimizers.SGD(0.05, momentum=0.9, nesterov=True, clipnorm=0.5),
        interleaved("momentum"),
    ),
    "adam": (lambda: optimizers.Adam(0.01), interleaved("momentum", "velocity")),
    "adam_by_name": (lambda: "adam", interleaved("momentum", "velocity")),
    "adam_amsgrad": (
        lambda: optimizers.Adam(0.01, amsgrad=True),
        interleaved("momentum", "velocity") + interleaved("velocity_hat"),
    ),
    "adamw": (lambda: optimizers.AdamW(0.01, weight_decay=0.05), interleaved("momentum", "velocity")),
    "rmsprop": (lambda: optimizers.RMSprop(0.01), interleaved("velocity")),
    "rmsprop_momentum_centered": (
        lambda: optimizers.RMSprop(0.01, momentum=0.5, centered=True),
        interleaved("velocity") + interleaved("momentum") + interleaved("average_gradient"),
    ),
    "adagrad": (lambda: optimizers.Adagrad(0.05, initial_accumulator_value=0.2), interleaved("accumulator")),
    "adam_schedule": (
        lambda: optimizers.Adam(schedules.ExponentialDecay(0.02, decay_steps=2, decay_rate=0.5)),
        interleaved("momentum", "velocity"),
    ),
    "sgd_piecewise_schedule": (
        lambda: optimizers.SGD(schedules.PiecewiseConstantDecay([2], [0.1, 0.01]), momentum=0.5),
        interleaved("momentum"),
    ),
}


def has_float_lr(opt_id):
    return "schedule" not in opt_id


# ---------------------------------------------------------------- round trips: training resumes bit for bit


@pytest.mark.parametrize("opt_id", sorted(OPTIMIZERS))
def test_keras_file_round_trip_resumes_training_bit_for_bit(tmp_path, opt_id):
    factory, _ = OPTIMIZERS[opt_id]
    data = batches(6)
    model = compiled(factory())
    train(model, data[:3])
    model.save(tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras")
    assert loaded._compiled and type(loaded.optimizer) is type(model.optimizer)
    assert loaded.optimizer.iterations == model.optimizer.iterations == 3
    assert loaded.get_compile_config() == json.loads(json.dumps(model.get_compile_config()))
    train(model, data[3:])
    train(loaded, data[3:])
    assert_same_weights(loaded, model)
    assert loaded.optimizer.iterations == 6
    a, b = (m.optimizer.export_state(m.trainable_weights) for m in (model, loaded))
    for x, y in zip(a["slots"], b["slots"], strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("opt_id", ["sgd_momentum", "adam_amsgrad", "rmsprop_momentum_centered", "adagrad", "adam_schedule"])
@pytest.mark.parametrize("kind", ["weights.h5", "keras"])
def test_load_weights_into_a_compiled_model_restores_the_optimizer(tmp_path, opt_id, kind):
    factory, _ = OPTIMIZERS[opt_id]
    data = batches(5)
    model = compiled(factory())
    train(model, data[:3])
    path = tmp_path / f"m.{kind}"
    (model.save_weights if kind == "weights.h5" else model.save)(path)
    other = compiled(factory(), seed=5)  # other weights, fresh optimizer
    other.load_weights(path)
    assert other.optimizer.iterations == 3
    train(model, data[3:])
    train(other, data[3:])
    assert_same_weights(other, model)


def test_float64_model_and_frozen_layer_round_trip(tmp_path):
    """Slots keep the weights' dtype; a frozen layer's weights have no slots (Keras builds on trainable weights)."""
    model = Sequential([Input(shape=(5,), dtype="float64"), Dense(4, activation="tanh", dtype="float64"),
                        Dense(3, activation="softmax", dtype="float64")])
    model.layers[0].trainable = False
    model.compile(optimizer=optimizers.Adam(0.01, amsgrad=True), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(2)
    data = [(rng.standard_normal((6, 5)), rng.integers(0, 3, 6)) for _ in range(4)]
    train(model, data[:2])
    model.save(tmp_path / "m.keras")
    _, entries = read_optimizer_group(tmp_path / "m.keras")
    assert len(entries) == 2 + 3 * 2  # the second Dense's kernel and bias only
    assert all(entries[str(k)][1] == np.float64 for k in range(2, 8))
    loaded = load_model(tmp_path / "m.keras")
    assert not loaded.layers[0].trainable
    train(model, data[2:])
    train(loaded, data[2:])
    assert_same_weights(loaded, model)


def test_a_compiled_never_trained_model_round_trip(tmp_path):
    model = compiled(optimizers.Adam(0.003))
    model.save(tmp_path / "m.keras")
    with h5py.File(io.BytesIO(zipfile.ZipFile(tmp_path / "m.keras").read("model.weights.h5"))) as h5:
        assert sorted(h5["optimizer/vars"]) == ["0", "1"]  # Keras's unbuilt optimizer
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # iterations and learning rate alone load without a warning
        loaded = load_model(tmp_path / "m.keras")
    assert loaded.optimizer.iterations == 0 and loaded.optimizer.learning_rate == 0.003
    data = batches(2)
    train(model, data)
    train(loaded, data)
    assert_same_weights(loaded, model)


def test_iterations_and_learning_rate_alone_reset_a_trained_optimizer(tmp_path):
    """A file of Keras's unbuilt optimizer into a trained model: the slots start afresh, as the saved model's would."""
    fresh = compiled(optimizers.Adam(0.01))
    fresh.save_weights(tmp_path / "fresh.weights.h5")
    trained = compiled(optimizers.Adam(0.01), seed=3)
    train(trained, batches(3, seed=7))
    trained.load_weights(tmp_path / "fresh.weights.h5")
    assert trained.optimizer.iterations == 0
    data = batches(2)
    train(fresh, data)
    train(trained, data)
    assert_same_weights(trained, fresh)


def test_uncompiled_and_compile_false(tmp_path):
    model = compiled(optimizers.Adam(0.01))
    train(model, batches(2))
    model.save(tmp_path / "m.keras")
    bare = load_model(tmp_path / "m.keras", compile=False)
    assert not bare._compiled and bare.optimizer is None and bare.get_compile_config() == {}
    assert_same_weights(bare, model)
    bare.save(tmp_path / "bare.keras")
    archive = zipfile.ZipFile(tmp_path / "bare.keras")
    assert json.loads(archive.read("config.json"))["compile_config"] == {}
    with h5py.File(io.BytesIO(archive.read("model.weights.h5"))) as h5:
        assert set(h5) == {"layers", "vars"}
    target = make_model(seed=4)  # uncompiled: the optimizer group is ignored
    target.load_weights(tmp_path / "m.keras")
    assert_same_weights(target, model)


def test_learning_rate_in_the_file_replaces_a_different_float_rate(tmp_path):
    model = compiled(optimizers.SGD(0.05, momentum=0.9))
    train(model, batches(1))
    model.save_weights(tmp_path / "m.weights.h5")
    same = compiled(optimizers.SGD(0.05, momentum=0.9))
    same.load_weights(tmp_path / "m.weights.h5")
    assert same.optimizer._learning_rate == 0.05  # the float32 copy equals it in float32: the exact float stays
    other = compiled(optimizers.SGD(0.2, momentum=0.9))
    other.load_weights(tmp_path / "m.weights.h5")
    assert other.optimizer._learning_rate == float(np.float32(0.05))


def test_reduced_learning_rate_is_saved(tmp_path):
    model = compiled(optimizers.Adam(0.01))
    train(model, batches(1))
    model.optimizer.learning_rate = 0.0025  # what ReduceLROnPlateau does
    model.save(tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras")
    assert loaded.optimizer.learning_rate == 0.0025


# ---------------------------------------------------------------- the layout written


def read_optimizer_group(path):
    if str(path).endswith(".keras"):
        source = io.BytesIO(zipfile.ZipFile(path).read("model.weights.h5"))
    else:
        source = path
    with h5py.File(source, "r") as h5:
        assert set(h5["optimizer"]) == {"vars"}
        group = h5["optimizer/vars"]
        return dict(group.attrs), {key: (group[key].shape, group[key].dtype, group[key][()]) for key in group}


@pytest.mark.parametrize("opt_id", sorted(OPTIMIZERS))
def test_optimizer_group_has_keras_names_order_shapes_and_dtypes(tmp_path, opt_id):
    factory, order = OPTIMIZERS[opt_id]
    model = compiled(factory())
    train(model, batches(2))
    model.save(tmp_path / "m.keras")
    model.save_weights(tmp_path / "m.weights.h5")
    head = 2 if has_float_lr(opt_id) else 1
    trainable = model.trainable_weights
    assert [tuple(w.shape) for w in trainable] == TRAINABLE_SHAPES
    for path in (tmp_path / "m.keras", tmp_path / "m.weights.h5"):
        attrs, entries = read_optimizer_group(path)
        assert attrs == {"name": model.optimizer.name}
        assert sorted(entries, key=int) == [str(i) for i in range(head + len(order))]
        shape, dtype, value = entries["0"]
        assert shape == () and dtype == np.int64 and value == 2
        if head == 2:
            shape, dtype, value = entries["1"]
            assert shape == () and dtype == np.float32 and value == np.float32(model.optimizer.learning_rate)
        for k, (slot, i) in enumerate(order, start=head):
            shape, dtype, value = entries[str(k)]
            assert shape == TRAINABLE_SHAPES[i] and dtype == np.float32, (k, slot, i)
            np.testing.assert_array_equal(value, model.optimizer._state[id(trainable[i])][1][slot])


def test_compile_config_is_keras_schema(tmp_path):
    model = compiled("adam")
    model.save(tmp_path / "m.keras")
    config = json.loads(zipfile.ZipFile(tmp_path / "m.keras").read("config.json"))["compile_config"]
    adam = config.pop("optimizer")
    assert config == {
        "loss": "sparse_categorical_crossentropy",
        "loss_weights": None,
        "metrics": ["accuracy"],
        "weighted_metrics": None,
        "run_eagerly": False,
        "steps_per_execution": 1,
        "jit_compile": False,
    }
    assert (adam["module"], adam["class_name"], adam["registered_name"]) == ("keras.optimizers", "Adam", None)
    assert re.fullmatch(r"adam(_\d+)?", adam["config"].pop("name"))  # Keras's auto_name: adam, adam_1...
    assert adam["config"] == {
        "learning_rate": 0.001, "weight_decay": None, "clipnorm": None, "global_clipnorm": None,
        "clipvalue": None, "use_ema": False, "ema_momentum": 0.99, "ema_overwrite_frequency": None,
        "loss_scale_factor": None, "gradient_accumulation_steps": None, "beta_1": 0.9, "beta_2": 0.999,
        "epsilon": 1e-07, "amsgrad": False,
    }


def test_compile_config_serializes_objects_and_keeps_names():
    model = make_model()
    model.compile(
        optimizer=optimizers.SGD(schedules.ExponentialDecay(0.1, 10, 0.9), momentum=0.5),
        loss=losses.SparseCategoricalCrossentropy(ignore_class=2),
        metrics=[metrics.SparseCategoricalAccuracy(name="acc"), "mae"],
        weighted_metrics=["accuracy"],
        run_eagerly=True,
        jit_compile=True,
    )
    config = json.loads(json.dumps(model.get_compile_config()))
    assert config["optimizer"]["config"]["learning_rate"]["class_name"] == "ExponentialDecay"
    assert config["loss"]["class_name"] == "SparseCategoricalCrossentropy"
    assert config["loss"]["config"]["ignore_class"] == 2
    assert config["metrics"][0]["class_name"] == "SparseCategoricalAccuracy" and config["metrics"][1] == "mae"
    assert config["weighted_metrics"] == ["accuracy"]
    assert config["run_eagerly"] is True and config["jit_compile"] is False  # Keras: no jit when run eagerly
    again = make_model()
    again.compile_from_config(config)
    assert json.loads(json.dumps(again.get_compile_config())) == config
    assert again.metrics_names == model.metrics_names


def test_compile_arguments_checked():
    model = make_model()
    with pytest.raises(TypeError, match="run_eagerly"):
        model.compile(optimizer="sgd", loss="mse", run_eagerly="yes")
    with pytest.raises(TypeError, match="jit_compile"):
        model.compile(optimizer="sgd", loss="mse", jit_compile=None)
    assert not model._compiled
    with pytest.raises(ValueError, match="unknown compile argument"):
        model.compile_from_config({"optimizer": "sgd", "loss": "mse", "evil": 1})
    with pytest.raises(TypeError):
        model.compile_from_config([1])
    with pytest.raises(ValueError, match="not provided"):
        model.compile_from_config({"optimizer": {"module": "keras.optimizers", "class_name": "Adafactor", "config": {}}, "loss": "mse"})
    with pytest.raises(ValueError, match="metrics"):
        model.compile_from_config({"optimizer": "sgd", "loss": "mse", "metrics": {"a": "mae"}})
    assert not model._compiled and model.get_compile_config() == {}


def test_user_loss_is_saved_with_a_warning_and_loads_only_uncompiled(tmp_path):
    def my_loss(y_true, y_pred):
        return ((y_true - y_pred) ** 2).mean(axis=-1)

    model = make_model()
    model.compile(optimizer="sgd", loss=my_loss)
    with pytest.warns(UserWarning, match="compile=False"):
        model.save(tmp_path / "m.keras")
    with pytest.raises(ValueError, match="compile") as info:
        load_model(tmp_path / "m.keras")
    assert str(tmp_path / "m.keras") in str(info.value)
    assert not load_model(tmp_path / "m.keras", compile=False)._compiled


def test_keras_references_to_builtin_functions_are_looked_up_by_name(trained_file, tmp_path):
    """Keras 3.15 writes ``loss=keras.losses.mean_squared_error`` with module "builtins"; older files "keras.losses"."""

    def functions(config):
        config["compile_config"].update(
            loss={"module": "builtins", "class_name": "function", "config": "sparse_categorical_crossentropy",
                  "registered_name": "function"},
            metrics=[{"module": "keras.metrics", "class_name": "function", "config": "sparse_categorical_accuracy",
                      "registered_name": "sparse_categorical_accuracy"}],
        )

    path = rewrite(trained_file["keras"], tmp_path / "f.keras", config_edit=functions)
    loaded = load_model(path)
    assert isinstance(loaded._loss_obj, losses.SparseCategoricalCrossentropy)
    assert loaded.metrics_names == ["loss", "sparse_categorical_accuracy"]
    data = batches(2)
    twin = load_model(trained_file["keras"])  # the same file with the loss and metric given by name
    train(loaded, data)
    train(twin, data)
    assert_same_weights(loaded, twin)


# ---------------------------------------------------------------- hostile compile configs


def rewrite(src, dst, config_edit=None, h5_edit=None):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name == "config.json" and config_edit is not None:
                config = json.loads(data)
                config_edit(config)
                data = json.dumps(config).encode()
            if name == "model.weights.h5" and h5_edit is not None:
                buffer = io.BytesIO(data)
                with h5py.File(buffer, "a") as h5:
                    h5_edit(h5)
                data = buffer.getvalue()
            zout.writestr(name, data)
    return dst


@pytest.fixture(scope="module")
def trained_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trained")
    model = compiled(optimizers.Adam(0.01, amsgrad=True))
    train(model, batches(2))
    model.save(folder / "m.keras")
    model.save_weights(folder / "m.weights.h5")
    return {"keras": folder / "m.keras", "h5": folder / "m.weights.h5", "model": model}


def _compile(**changes):
    def edit(config):
        config["compile_config"].update(changes)

    return edit


def _optimizer_config(**changes):
    def edit(config):
        config["compile_config"]["optimizer"]["config"].update(changes)

    return edit


HOSTILE_COMPILE_CONFIGS = {  # refused before any layer is built
    "optimizer from module os": _compile(optimizer={"module": "os", "class_name": "system", "config": {}}),
    "optimizer of a user's module": _compile(
        optimizer={"module": "my_project.opt", "class_name": "Adam", "config": {}, "registered_name": "MyAdam"}),
    "custom registered optimizer": _compile(
        optimizer={"module": "keras.optimizers", "class_name": "Adam", "config": {}, "registered_name": "evil>Adam"}),
    "lambda loss": _compile(loss={"class_name": "__lambda__", "config": {"code": "print(1)"}}),
    "Lambda metric": _compile(metrics=[{"module": "keras.layers", "class_name": "Lambda", "config": {}}]),
    "function from module os": _compile(loss={"module": "os", "class_name": "function", "config": "system",
                                              "registered_name": "system"}),
    "learning rate function of a user's module": _optimizer_config(
        learning_rate={"module": "__main__", "class_name": "function", "config": "lr", "registered_name": "lr"}),
    "dunder key": _optimizer_config(__reduce__=["os.system", ["echo hi"]]),
    "unknown compile key": _compile(evil=1),
    "not an object": lambda config: config.update(compile_config=[1, 2]),
}

UNBUILDABLE_COMPILE_CONFIGS = {  # refused when compiling (after the layers are built, before any weight is read)
    "unknown optimizer": _compile(optimizer={"module": "keras.optimizers", "class_name": "Adafactor", "config": {}}),
    "unknown loss function": _compile(loss={"module": "keras.losses", "class_name": "function", "config": "evil",
                                            "registered_name": "evil"}),
    "unknown metric": _compile(metrics=["evil"]),
    "schedule named function": _optimizer_config(
        learning_rate={"module": "keras.optimizers.schedules", "class_name": "function", "config": "print"}),
    "learning rate a builtins function": _optimizer_config(
        learning_rate={"module": "builtins", "class_name": "function", "config": "print", "registered_name": "function"}),
    "loss the builtin eval": _compile(loss={"module": "builtins", "class_name": "function", "config": "eval",
                                            "registered_name": "function"}),
    "learning rate a string": _optimizer_config(learning_rate="fast"),
    "unknown optimizer argument": _optimizer_config(evil=1),
    "steps_per_execution zero": _compile(steps_per_execution=0),
    "metrics not a list": _compile(metrics={"dense": "mae"}),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_COMPILE_CONFIGS))
def test_hostile_compile_config_refused_before_anything_is_built(trained_file, tmp_path, monkeypatch, case):
    path = rewrite(trained_file["keras"], tmp_path / "h.keras", config_edit=HOSTILE_COMPILE_CONFIGS[case])
    built = []
    real = serialization.deserialize
    monkeypatch.setattr(serialization, "deserialize", lambda entry, custom_objects=None: built.append(entry) or real(entry))
    with pytest.raises(ValueError) as info:
        load_model(path)
    assert str(path) in str(info.value) and "compile_config" in str(info.value)
    assert built == []
    monkeypatch.undo()
    assert not load_model(path, compile=False)._compiled  # compile=False never reads it


def test_a_compile_config_without_a_loss_compiles_without_one(trained_file, tmp_path):
    # Keras's compile(loss=None): the model's own losses (add_loss) are what it trains on.
    path = rewrite(trained_file["keras"], tmp_path / "n.keras", config_edit=lambda config: config["compile_config"].pop("loss"))
    model = load_model(path)
    assert model._compiled and model._loss_obj is None


@pytest.mark.parametrize("case", sorted(UNBUILDABLE_COMPILE_CONFIGS))
def test_compile_config_gpulayers_cannot_build_is_refused(trained_file, tmp_path, case):
    path = rewrite(trained_file["keras"], tmp_path / "u.keras", config_edit=UNBUILDABLE_COMPILE_CONFIGS[case])
    with pytest.raises(ValueError, match="compile") as info:
        load_model(path)
    assert str(path) in str(info.value)
    assert not load_model(path, compile=False)._compiled


# ---------------------------------------------------------------- hostile optimizer groups: nothing changes


def _replace(key, value):
    def edit(h5):
        del h5[f"optimizer/vars/{key}"]
        h5[f"optimizer/vars/{key}"] = value

    return edit


def _slot_transposed(h5):
    data = h5["optimizer/vars/2"][()]
    del h5["optimizer/vars/2"]
    h5["optimizer/vars/2"] = data.reshape(3, 2, 2, 2)


def _gap(h5):
    h5.move("optimizer/vars/5", f"optimizer/vars/{len(h5['optimizer/vars']) + 3}")


def _extra_name(h5):
    h5["optimizer/vars/evil"] = np.zeros(1, dtype=np.float32)


def _soft_link(h5):
    del h5["optimizer/vars/3"]
    h5["optimizer/vars/3"] = h5py.SoftLink("/optimizer/vars/2")


def _external_link(h5):
    del h5["optimizer/vars/3"]
    h5["optimizer/vars/3"] = h5py.ExternalLink("/etc/passwd", "/x")


def _group_for_dataset(h5):
    del h5["optimizer/vars/4"]
    h5.create_group("optimizer/vars/4")


def _vars_a_dataset(h5):
    del h5["optimizer/vars"]
    h5["optimizer/vars"] = np.zeros(3, dtype=np.float32)


def _inner_optimizer(h5):
    h5.create_group("optimizer/inner_optimizer/vars")


def _empty_vars(h5):
    del h5["optimizer/vars"]
    h5.create_group("optimizer/vars")


HOSTILE_OPTIMIZER_GROUPS = {
    "slot of another shape": _slot_transposed,
    "string slot": _replace("3", np.array([b"abc"] * 3)),
    "int slot": _replace("3", np.zeros((2, 2, 2, 3), dtype=np.int32)),
    "iterations a float": _replace("0", np.array(3.0, dtype=np.float32)),
    "iterations negative": _replace("0", np.array(-1, dtype=np.int64)),
    "iterations not a scalar": _replace("0", np.array([3], dtype=np.int64)),
    "iterations a string": _replace("0", np.array(b"3")),
    "learning rate NaN": _replace("1", np.array(np.nan, dtype=np.float32)),
    "learning rate negative": _replace("1", np.array(-0.1, dtype=np.float32)),
    "learning rate not a scalar": _replace("1", np.zeros(1, dtype=np.float32)),
    "gap in the names": _gap,
    "name not a number": _extra_name,
    "soft link": _soft_link,
    "external link": _external_link,
    "group instead of a dataset": _group_for_dataset,
    "vars a dataset": _vars_a_dataset,
    "no datasets": _empty_vars,
}


@pytest.mark.parametrize("case", sorted(HOSTILE_OPTIMIZER_GROUPS))
def test_hostile_optimizer_group_refused_and_nothing_changes(trained_file, tmp_path, case):
    edit = HOSTILE_OPTIMIZER_GROUPS[case]
    h5_path = tmp_path / "w.weights.h5"
    buffer = io.BytesIO(trained_file["h5"].read_bytes())
    with h5py.File(buffer, "a") as h5:
        edit(h5)
    h5_path.write_bytes(buffer.getvalue())
    keras_path = rewrite(trained_file["keras"], tmp_path / "w.keras", h5_edit=edit)
    target = compiled(optimizers.Adam(0.02, amsgrad=True), seed=9)
    train(target, batches(1, seed=4))
    before = snapshot(target)
    for path in (h5_path, keras_path):
        with pytest.raises(ValueError) as info:
            target.load_weights(path)
        assert str(path) in str(info.value) and "optimizer" in str(info.value)
        assert_unchanged(target, before)
    with pytest.raises(ValueError) as info:
        load_model(keras_path)
    assert str(keras_path) in str(info.value)
    assert_same_weights(load_model(keras_path, compile=False), trained_file["model"])
    uncompiled = make_model(seed=9)  # ignores the optimizer group, as Keras does
    uncompiled.load_weights(h5_path)
    assert_same_weights(uncompiled, trained_file["model"])


def test_count_that_fits_no_optimizer_is_skipped_with_a_warning(trained_file):
    """Keras's rule: the weights load, the optimizer keeps its state."""
    for optimizer in (optimizers.SGD(0.1, momentum=0.9), optimizers.Adam(0.01),
                      optimizers.Adam(schedules.ExponentialDecay(0.01, 5, 0.5), amsgrad=True)):
        target = compiled(optimizer, seed=9)
        train(target, batches(1, seed=4))
        _, state, _ = snapshot(target)
        with pytest.warns(UserWarning, match=r"Skipping the optimizer state.*holds 20 variables"):
            target.load_weights(trained_file["h5"])
        assert_same_weights(target, trained_file["model"])
        assert_unchanged(target, (trained_file["model"].get_weights(), state, target.optimizer._learning_rate))


def test_loss_scaled_state_for_a_plain_optimizer_is_skipped_with_a_warning(trained_file, tmp_path):
    """A LossScaleOptimizer's group (``optimizer/inner_optimizer``) for a plain optimizer: Keras skips it."""
    h5_path = tmp_path / "w.weights.h5"
    buffer = io.BytesIO(trained_file["h5"].read_bytes())
    with h5py.File(buffer, "a") as h5:
        _inner_optimizer(h5)
    h5_path.write_bytes(buffer.getvalue())
    target = compiled(optimizers.Adam(0.02, amsgrad=True), seed=9)
    train(target, batches(1, seed=4))
    _, state, _ = snapshot(target)
    with pytest.warns(UserWarning, match=r"Skipping the optimizer state.*LossScaleOptimizer's"):
        target.load_weights(h5_path)
    assert_same_weights(target, trained_file["model"])
    assert_unchanged(target, (trained_file["model"].get_weights(), state, target.optimizer._learning_rate))


def test_weights_that_do_not_fit_change_no_optimizer_state(trained_file, tmp_path):
    def bad_weight(h5):
        del h5["layers/dense/vars/1"]
        h5["layers/dense/vars/1"] = np.zeros(7, dtype=np.float32)

    path = rewrite(trained_file["keras"], tmp_path / "b.keras", h5_edit=bad_weight)
    target = compiled(optimizers.Adam(0.02, amsgrad=True), seed=9)
    train(target, batches(1, seed=4))
    before = snapshot(target)
    with pytest.raises(ValueError, match="dense/vars/1"):
        target.load_weights(path)
    assert_unchanged(target, before)


def test_optimizer_import_state_checks_before_assigning():
    model = compiled(optimizers.RMSprop(0.01, momentum=0.5))
    train(model, batches(1))
    opt, weights = model.optimizer, model.trainable_weights
    state = opt.export_state(weights)
    assert len(state["slots"]) == 2 * N and state["iterations"] == 1
    before = snapshot(model)
    bad = [dict(state, slots=state["slots"][:-1]), dict(state, iterations=-1), dict(state, iterations=1.5),
           dict(state, slots=state["slots"][:-1] + [np.zeros((9,), np.float32)]),
           dict(state, slots=state["slots"][:-1] + [np.array(["a", "b", "c"])])]
    for case in bad:
        with pytest.raises(ValueError):
            opt.import_state(weights, **case)
        assert_unchanged(model, before)
    opt.import_state(weights, **state)
    assert_unchanged(model, before)


# ---------------------------------------------------------------- real Keras 3 (optional)




def keras_model(keras, weights):
    L = keras.layers
    model = keras.Sequential([
        keras.Input((4, 4, 2)), L.Conv2D(3, 2, activation="relu"), L.BatchNormalization(), L.Flatten(),
        L.Dense(3, activation="softmax"),
    ])
    model.set_weights(weights)
    return model


KERAS_OPTIMIZERS = {  # id -> (Keras optimizer, the same in gpulayers)
    "adam": (lambda k: k.optimizers.Adam(0.01), lambda: optimizers.Adam(0.01)),
    "adamw_amsgrad": (lambda k: k.optimizers.AdamW(0.01, weight_decay=0.05, amsgrad=True),
                      lambda: optimizers.AdamW(0.01, weight_decay=0.05, amsgrad=True)),
    "sgd_nesterov": (lambda k: k.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
                     lambda: optimizers.SGD(0.05, momentum=0.9, nesterov=True)),
    "rmsprop_momentum_centered": (lambda k: k.optimizers.RMSprop(0.01, momentum=0.5, centered=True),
                                  lambda: optimizers.RMSprop(0.01, momentum=0.5, centered=True)),
    "adagrad": (lambda k: k.optimizers.Adagrad(0.05, initial_accumulator_value=0.2),
                lambda: optimizers.Adagrad(0.05, initial_accumulator_value=0.2)),
    "adam_schedule": (lambda k: k.optimizers.Adam(k.optimizers.schedules.ExponentialDecay(0.02, 2, 0.5)),
                      lambda: optimizers.Adam(schedules.ExponentialDecay(0.02, 2, 0.5))),
}


def keras_state(kmodel):
    """Keras's optimizer.variables as NumPy arrays: iterations, learning rate (if a variable), slots."""
    return [np.asarray(v.numpy()) for v in kmodel.optimizer.variables]


def gpulayers_state(model):
    state = model.optimizer.export_state(model.trainable_weights)
    head = [np.asarray(state["iterations"])]
    if state["learning_rate"] is not None:
        head.append(np.asarray(state["learning_rate"], dtype=np.float32))
    return head + state["slots"]


def assert_close_states(a, b, exact=False):
    assert len(a) == len(b)
    assert int(a[0]) == int(b[0])
    for x, y in zip(a[1:], b[1:]):
        assert x.shape == y.shape
        if exact:
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("opt_id", sorted(KERAS_OPTIMIZERS))
def test_keras_trained_file_resumes_in_gpulayers(tmp_path, opt_id):
    keras = keras_or_skip()
    make_keras, _ = KERAS_OPTIMIZERS[opt_id]
    data = batches(5)
    kmodel = keras_model(keras, make_model().get_weights())
    kmodel.compile(optimizer=make_keras(keras), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    for x, y in data[:3]:
        kmodel.train_on_batch(x, y)
    kmodel.save(str(tmp_path / "k.keras"))
    kmodel.save_weights(str(tmp_path / "k.weights.h5"))
    mine = load_model(tmp_path / "k.keras")
    assert mine._compiled and mine.optimizer.iterations == 3
    assert_close_states(gpulayers_state(mine), keras_state(kmodel), exact=True)
    other = compiled(KERAS_OPTIMIZERS[opt_id][1](), seed=6)
    other.load_weights(tmp_path / "k.weights.h5")
    assert other.optimizer.iterations == 3
    for x, y in data[3:]:
        kmodel.train_on_batch(x, y)
        mine.train_on_batch(x, y)
        other.train_on_batch(x, y)
    expected = [np.asarray(w) for w in kmodel.get_weights()]
    for model in (mine, other):
        for got, want in zip(model.get_weights(), expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert_close_states(gpulayers_state(mine), keras_state(kmodel))


@pytest.mark.parametrize("opt_id", sorted(KERAS_OPTIMIZERS))
def test_gpulayers_file_resumes_in_keras(tmp_path, opt_id):
    keras = keras_or_skip()
    _, make_mine = KERAS_OPTIMIZERS[opt_id]
    data = batches(5)
    model = compiled(make_mine())
    train(model, data[:3])
    model.save(tmp_path / "m.keras")
    model.save_weights(tmp_path / "m.weights.h5")
    kmodel = keras.saving.load_model(str(tmp_path / "m.keras"))
    assert int(kmodel.optimizer.iterations.numpy()) == 3
    assert type(kmodel.optimizer).__name__ == type(model.optimizer).__name__
    assert_close_states(keras_state(kmodel), gpulayers_state(model), exact=True)
    built = keras_model(keras, make_model(seed=6).get_weights())
    built.compile(optimizer=KERAS_OPTIMIZERS[opt_id][0](keras), loss="sparse_categorical_crossentropy")
    built.optimizer.build(built.trainable_variables)
    built.load_weights(str(tmp_path / "m.weights.h5"))
    assert_close_states(keras_state(built), gpulayers_state(model), exact=True)
    for x, y in data[3:]:
        model.train_on_batch(x, y)
        kmodel.train_on_batch(x, y)
        built.train_on_batch(x, y)
    for k in (kmodel, built):
        for got, want in zip(k.get_weights(), model.get_weights(), strict=True):
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


KERAS_COMPILE_ARGUMENTS = {  # id -> compile() arguments, built with the keras module
    "function loss and metric": lambda k: dict(
        optimizer="sgd", loss=k.losses.sparse_categorical_crossentropy,
        metrics=[k.metrics.sparse_categorical_accuracy]),
    "objects": lambda k: dict(
        optimizer=k.optimizers.RMSprop(0.01, momentum=0.3), loss=k.losses.SparseCategoricalCrossentropy(),
        metrics=[k.metrics.SparseCategoricalAccuracy(name="acc")], weighted_metrics=["accuracy"]),
    "names": lambda k: dict(optimizer="adamw", loss="sparse_categorical_crossentropy", metrics=["acc"]),
    "cosine schedule with warmup": lambda k: dict(
        optimizer=k.optimizers.Adam(k.optimizers.schedules.CosineDecay(0.01, 10, warmup_target=0.02, warmup_steps=2)),
        loss="sparse_categorical_crossentropy"),
}


@pytest.mark.parametrize("case", sorted(KERAS_COMPILE_ARGUMENTS))
def test_keras_compile_configs_load_and_resume(tmp_path, case):
    keras = keras_or_skip()
    data = batches(4)
    kmodel = keras_model(keras, make_model().get_weights())
    kmodel.compile(**KERAS_COMPILE_ARGUMENTS[case](keras))
    for x, y in data[:2]:
        kmodel.train_on_batch(x, y)
    kmodel.save(str(tmp_path / "k.keras"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        mine = load_model(tmp_path / "k.keras")
    assert mine.optimizer.iterations == 2
    assert_close_states(gpulayers_state(mine), keras_state(kmodel), exact=True)
    for x, y in data[2:]:
        kmodel.train_on_batch(x, y)
        mine.train_on_batch(x, y)
    for got, want in zip(mine.get_weights(), kmodel.get_weights(), strict=True):
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-4, atol=1e-5)
    mine.save(tmp_path / "m.keras")  # and back: Keras reads what gpulayers writes
    again = keras.saving.load_model(str(tmp_path / "m.keras"))
    assert int(again.optimizer.iterations.numpy()) == 4


def test_keras_compiled_never_trained_file_loads_in_gpulayers_and_back(tmp_path):
    keras = keras_or_skip()
    kmodel = keras_model(keras, make_model().get_weights())
    kmodel.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    kmodel.save(str(tmp_path / "k.keras"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mine = load_model(tmp_path / "k.keras")
    assert mine.optimizer.iterations == 0 and isinstance(mine._loss_obj, losses.SparseCategoricalCrossentropy)
    mine.save(tmp_path / "m.keras")
    again = keras.saving.load_model(str(tmp_path / "m.keras"))
    assert again.get_compile_config()["loss"]["class_name"] == "SparseCategoricalCrossentropy"
