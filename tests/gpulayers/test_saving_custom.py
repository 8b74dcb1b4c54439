"""Custom layers, losses and metrics in .keras files: custom_objects, register_keras_serializable,
automatic configs, and Keras's weights layout for layers holding layers."""

import io
import zipfile

import h5py
import numpy as np
import pytest

import gpulayers
from gpulayers import losses, metrics, ops, saving
from gpulayers.layers import Dense, Input, Layer
from gpulayers.models import Sequential, load_model


@saving.register_keras_serializable(package="tests")
class Scale(Layer):
    """No get_config: Keras's automatic config from the constructor's arguments."""

    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def build(self, input_shape):
        self.offset = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="offset")

    def call(self, inputs):
        return inputs * self.factor + self.offset


class Block(Layer):
    def __init__(self, units=3, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.inner = Dense(units, activation="tanh")
        self.heads = [Dense(units), Dense(units)]
        self.gain = self.add_weight(shape=(), initializer="ones", name="gain")

    def call(self, inputs):
        x = self.inner(inputs)
        return (self.heads[0](x) + self.heads[1](x)) * self.gain

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def my_loss(y_true, y_pred):
    return ops.mean(ops.abs(y_true - y_pred), axis=-1)


def trained(model, loss="mse", metric_list=None):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 4)).astype(np.float32)
    y = rng.standard_normal((16, model.output_shape[-1])).astype(np.float32)
    model.compile(optimizer="adam", loss=loss, metrics=metric_list)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    return x, y


def test_registration_names_and_scope():
    assert saving.get_registered_name(Scale) == "tests>Scale"
    assert saving.get_registered_object("tests>Scale") is Scale
    assert saving.get_custom_objects()["tests>Scale"] is Scale
    with saving.custom_object_scope({"Block": Block}):
        assert saving.get_registered_object("Block") is Block
    assert saving.get_registered_object("Block") is None
    with saving.custom_object_scope(None):  # as Keras: an empty scope
        assert saving.get_registered_object("tests>Scale") is Scale
    with pytest.raises(TypeError, match="custom_objects"):
        saving.custom_object_scope([Block])
    with pytest.raises(ValueError, match="package"):
        saving.register_keras_serializable(package="a>b")
    with pytest.raises(ValueError, match="get_config"):
        saving.register_keras_serializable()(type("NoConfig", (), {}))


def test_automatic_config_and_round_trip_of_a_registered_layer(tmp_path):
    layer = Scale(3.0, name="scale")
    assert layer.get_config() == {"name": "scale", "factor": 3.0, "trainable": True,
                                  "dtype": {"module": "keras", "class_name": "DTypePolicy",
                                            "config": {"name": "float32"}, "registered_name": None}}
    gpulayers.set_random_seed(0)
    model = Sequential([Input((4,)), Scale(3.0), Dense(2)])
    x, _ = trained(model)
    model.save(tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras")  # registered: no custom_objects needed
    assert isinstance(loaded.layers[0], Scale) and loaded.layers[0].factor == 3.0
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_a_layer_holding_layers_is_saved_in_keras_layout(tmp_path):
    gpulayers.set_random_seed(1)
    model = Sequential([Input((4,)), Block(3), Dense(1)])
    x, y = trained(model)
    model.save(tmp_path / "b.keras")
    saved_predictions = model.predict(x, verbose=0)
    with h5py.File(io.BytesIO(zipfile.ZipFile(tmp_path / "b.keras").read("model.weights.h5"))) as h5:
        block = h5["layers/block"]
        assert set(block) == {"vars", "inner", "heads"}
        assert list(block["vars"]) == ["0"]  # only the block's own weight: gain
        assert set(block["heads"]) == {"dense", "dense_1"}
        assert set(block["inner/vars"]) == {"0", "1"}
    with pytest.raises(ValueError, match="custom_objects"):
        load_model(tmp_path / "b.keras")
    loaded = load_model(tmp_path / "b.keras", custom_objects={"Block": Block})
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    # Training resumes exactly: the optimizer state came back with the weights.
    model.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    loaded.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    fresh = Sequential([Input((4,)), Block(3), Dense(1)])
    fresh.load_weights(tmp_path / "b.keras")
    np.testing.assert_allclose(fresh.predict(x, verbose=0), saved_predictions, rtol=1e-6)


def test_weights_that_do_not_fit_a_nested_layer_are_refused(tmp_path):
    model = Sequential([Input((4,)), Block(3)])
    model.save_weights(tmp_path / "w.weights.h5")
    with h5py.File(tmp_path / "w.weights.h5", "a") as h5:
        h5.create_group("layers/block/heads/dense_2/vars")
    target = Sequential([Input((4,)), Block(3)])
    before = target.get_weights()
    with pytest.raises(ValueError, match="heads"):
        target.load_weights(tmp_path / "w.weights.h5")
    for a, b in zip(before, target.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_custom_losses_and_metrics_in_the_compile_config(tmp_path):
    class Hits(metrics.Metric):
        def __init__(self, name="hits", **kwargs):
            super().__init__(name=name, **kwargs)
            self.count = self.add_variable(shape=(), initializer="zeros", name="count")

        def update_state(self, y_true, y_pred, sample_weight=None):
            self.count.assign_add(ops.sum(ops.cast(ops.abs(y_true - y_pred) < 0.5, "float32")))

        def result(self):
            return self.count

    gpulayers.set_random_seed(2)
    model = Sequential([Input((4,)), Dense(2)])
    trained(model, loss=my_loss, metric_list=[Hits()])
    with pytest.warns(UserWarning, match="custom_objects"):
        model.save(tmp_path / "c.keras")
    with pytest.raises(ValueError, match="compile"):
        load_model(tmp_path / "c.keras")
    loaded = load_model(tmp_path / "c.keras", custom_objects={"my_loss": my_loss, "Hits": Hits})
    assert loaded._compiled and loaded.metrics_names == ["loss", "hits"]
    assert isinstance(loaded._loss_obj, losses.Loss) and loaded._loss_obj.fn is my_loss
    assert not load_model(tmp_path / "c.keras", compile=False)._compiled
