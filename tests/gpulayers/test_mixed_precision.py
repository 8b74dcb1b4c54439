"""Mixed precision: dtype policies, the autocast rule, BatchNormalization in float32, dynamic loss scaling,
and their saving; against hand-computed steps and, where installed, Keras 3 itself."""

import json
import zipfile

import numpy as np
import pytest

import gpulayers
from gpulayers import dtype_policies, layers, mixed_precision, ops, optimizers
from gpulayers.autodiff import GradientTape
from gpulayers.optimizers import LossScaleOptimizer
from helpers import keras_or_skip


@pytest.fixture(autouse=True)
def _float32_policy():
    dtype_policies.set_dtype_policy("float32")
    yield
    dtype_policies.set_dtype_policy("float32")


def dtype_name(x):
    return np.dtype(getattr(x, "dtype", None) if not hasattr(x, "numpy") else x.numpy().dtype).name


def small_model(policy=None):
    """A small CNN; under ``policy`` "mixed_float16" the global policy is set too, since ``compile``
    wraps the optimizer by the model's own policy (as Keras's does)."""
    if policy == "mixed_float16":
        mixed_precision.set_global_policy(policy)
    rng = np.random.default_rng(0)
    model = gpulayers.Sequential([
        gpulayers.Input((6, 6, 2)), layers.Conv2D(4, 3, dtype=policy), layers.BatchNormalization(dtype=policy),
        layers.ReLU(dtype=policy), layers.Flatten(dtype=policy), layers.Dense(3, dtype=policy),
        layers.Activation("softmax", dtype="float32"),
    ])
    x = rng.standard_normal((16, 6, 6, 2)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    return model, x, y


# ---------------------------------------------------------------- policies


def test_policy_names_and_dtypes():
    mixed = mixed_precision.Policy("mixed_float16")
    assert (mixed.name, mixed.compute_dtype, mixed.variable_dtype) == ("mixed_float16", "float16", "float32")
    assert mixed.quantization_mode is None
    for name in ("float16", "float32", "float64"):
        p = gpulayers.DTypePolicy(name)
        assert p.compute_dtype == p.variable_dtype == name
    assert gpulayers.DTypePolicy() == gpulayers.DTypePolicy("float32")
    assert gpulayers.DTypePolicy("float16") != gpulayers.DTypePolicy("float32")
    assert isinstance(gpulayers.FloatDTypePolicy("float32"), gpulayers.DTypePolicy)


@pytest.mark.parametrize("bad, error, match", [
    ("mixed_bfloat16", ValueError, "bfloat16.*'mixed_bfloat16'"),
    ("int32", ValueError, "'int32'"),
    ("nonsense", ValueError, "'nonsense'"),
    (3, TypeError, "name=3"),
])
def test_bad_policy_names(bad, error, match):
    with pytest.raises(error, match=match):
        gpulayers.DTypePolicy(bad)


def test_global_policy_and_its_errors():
    assert mixed_precision.global_policy().name == "float32"
    mixed_precision.set_global_policy("mixed_float16")
    assert gpulayers.config.dtype_policy().name == "mixed_float16"
    assert layers.Dense(2).dtype_policy.name == "mixed_float16"
    assert layers.Dense(2, dtype="float32").dtype_policy.name == "float32"
    with pytest.raises(ValueError, match="policy=.*'int8'"):
        mixed_precision.set_global_policy("int8")
    with pytest.raises(ValueError, match="policy=5"):
        mixed_precision.set_global_policy(5)
    assert mixed_precision.global_policy().name == "mixed_float16"  # a refused policy changes nothing


def test_policy_serialization_is_keras_layout():
    config = dtype_policies.serialize(gpulayers.DTypePolicy("mixed_float16"))
    assert config == {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "mixed_float16"},
                      "registered_name": None}
    assert dtype_policies.deserialize(config) == gpulayers.DTypePolicy("mixed_float16")
    layer = layers.Dense(2, dtype="mixed_float16")
    again = layers.Dense.from_config(layer.get_config())
    assert again.dtype_policy.name == "mixed_float16"
    with pytest.raises(ValueError, match="QuantizedDTypePolicy"):
        dtype_policies.deserialize({"class_name": "QuantizedDTypePolicy", "config": {"name": "int8_from_float32"}})


# ---------------------------------------------------------------- layers under mixed_float16


def test_mixed_layer_computes_in_float16_and_keeps_float32_variables():
    layer = layers.Dense(3, dtype="mixed_float16")
    x = np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32)
    with GradientTape() as tape:
        y = layer(x)
        loss = ops.sum(ops.cast(y, "float32"))
    assert (layer.dtype, layer.variable_dtype, layer.compute_dtype) == ("float32", "float32", "float16")
    assert dtype_name(y) == "float16"
    assert all(dtype_name(w.numpy()) == "float32" for w in layer.weights)
    kernel, bias = layer.weights
    gk, gb = tape.gradient(loss, [kernel, bias])
    assert dtype_name(gk) == dtype_name(gb) == "float32"
    # d sum(x @ K + b) / dK = column sums of x (in float16, then cast back), within float16 rounding
    expected = np.repeat(x.astype(np.float16).astype(np.float64).sum(0)[:, None], 3, axis=1)
    np.testing.assert_allclose(np.asarray(gk), expected, rtol=2e-3)
    np.testing.assert_array_equal(np.asarray(gb), np.full(3, 4.0, np.float32))
    expected_y = x.astype(np.float16).astype(np.float64) @ kernel.numpy().astype(np.float16).astype(np.float64)
    np.testing.assert_allclose(y.numpy().astype(np.float64), expected_y, rtol=3e-3, atol=3e-3)


def test_float32_layer_inside_a_mixed_model_computes_in_float32():
    model, x, _ = small_model("mixed_float16")
    out = model(x)
    assert dtype_name(out) == "float32"  # the final float32 softmax casts its float16 input up
    h = x
    for layer in model.layers[:-1]:
        h = layer(h)
        assert dtype_name(h) == "float16"


def test_autocast_rule_follows_keras():
    outer = layers.Dense(2, dtype="mixed_float16")
    inner = layers.Dense(2, dtype="float32")
    outer.build((None, 2))
    inner.build((None, 2))
    # a float32 layer called inside a float16 scope reads its variables in float32 again (its own dtype)
    with outer._autocast_scope():
        assert gpulayers.autodiff.autocast_dtype() == np.float16
        with inner._autocast_scope():
            assert gpulayers.autodiff.autocast_dtype() == np.float32
        no_cast = layers.Dense(2, dtype="mixed_float16", autocast=False)
        with no_cast._autocast_scope():
            assert gpulayers.autodiff.autocast_dtype() is None
    assert gpulayers.autodiff.autocast_dtype() is None
    with inner._autocast_scope():  # a plain float32 layer opens no scope
        assert gpulayers.autodiff.autocast_dtype() is None


def test_batch_normalization_statistics_stay_float32():
    bn = layers.BatchNormalization(dtype="mixed_float16", momentum=0.5)
    x = (np.random.default_rng(2).standard_normal((32, 3)) * 3 + 100).astype(np.float32)
    y = bn(x, training=True)
    assert dtype_name(y) == "float16"
    assert all(dtype_name(w.numpy()) == "float32" for w in bn.weights)
    x64 = x.astype(np.float16).astype(np.float64)  # the layer's input is cast to float16 first
    mean, var = x64.mean(0), x64.var(0)
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.5 * mean, rtol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), 0.5 + 0.5 * var, rtol=1e-5)
    np.testing.assert_allclose(y.numpy().astype(np.float64), (x64 - mean) / np.sqrt(var + 1e-3), atol=4e-3)


# ---------------------------------------------------------------- dynamic loss scaling


def test_loss_scale_optimizer_validates_its_arguments():
    with pytest.raises(TypeError, match="inner_optimizer"):
        LossScaleOptimizer("sgd")
    with pytest.raises(ValueError, match="initial_scale"):
        LossScaleOptimizer(optimizers.SGD(), initial_scale=0.0)
    with pytest.raises(ValueError, match="dynamic_growth_steps=0"):
        LossScaleOptimizer(optimizers.SGD(), dynamic_growth_steps=0)
    with pytest.raises(ValueError, match="already a LossScaleOptimizer"):
        LossScaleOptimizer(LossScaleOptimizer(optimizers.SGD()))
    with pytest.raises(ValueError, match="clipnorm"):
        LossScaleOptimizer(optimizers.SGD(), clipnorm=1.0)


def test_loss_scale_dynamics_hand_computed():
    v = gpulayers.Variable(np.array([1.0, 2.0], np.float32))
    opt = LossScaleOptimizer(optimizers.SGD(0.5), initial_scale=8.0, dynamic_growth_steps=2)
    assert float(opt.scale_loss(np.float32(3.0))) == 24.0
    opt.apply([np.array([8.0, 16.0], np.float32)], [v])  # unscaled: [1, 2]; v -= 0.5 * [1, 2]
    np.testing.assert_array_equal(v.numpy(), [0.5, 1.0])
    assert (opt.step_counter, float(opt.dynamic_scale), int(opt.iterations)) == (1, 8.0, 1)
    opt.apply([np.array([8.0, 0.0], np.float32)], [v])  # the second finite step doubles the scale
    np.testing.assert_array_equal(v.numpy(), [0.0, 1.0])
    assert (opt.step_counter, float(opt.dynamic_scale), int(opt.iterations)) == (0, 16.0, 2)
    opt.apply([np.array([np.inf, 1.0], np.float32)], [v])  # skipped: weights and iterations stand, scale halves
    np.testing.assert_array_equal(v.numpy(), [0.0, 1.0])
    assert (opt.step_counter, float(opt.dynamic_scale), int(opt.iterations)) == (0, 8.0, 2)
    opt.apply([np.array([np.nan, 1.0], np.float32)], [v])
    assert float(opt.dynamic_scale) == 4.0 and int(opt.iterations) == 2


def test_compile_wraps_the_optimizer_under_mixed_float16():
    model, x, y = small_model("mixed_float16")
    model.compile(optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    assert isinstance(model.optimizer, LossScaleOptimizer)
    assert model.get_compile_config()["optimizer"]["class_name"] == "SGD"  # Keras saves the inner one
    history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
    assert int(model.optimizer.iterations) == 4 and model.optimizer.step_counter == 4
    assert all(dtype_name(w.numpy()) == "float32" for w in model.weights)
    plain, _, _ = small_model("mixed_float16")
    plain.compile(optimizers.SGD(0.1), "sparse_categorical_crossentropy", auto_scale_loss=False)
    assert isinstance(plain.optimizer, optimizers.SGD)
    with pytest.raises(TypeError, match="auto_scale_loss='yes'"):
        plain.compile("sgd", "mse", auto_scale_loss="yes")
    mixed_precision.set_global_policy("float32")
    f32, _, _ = small_model()
    f32.compile("sgd", "sparse_categorical_crossentropy")
    assert isinstance(f32.optimizer, optimizers.SGD)


def test_keras_file_round_trip_keeps_the_loss_scale(tmp_path):
    model, x, y = small_model("mixed_float16")
    model.compile(LossScaleOptimizer(optimizers.Adam(0.01), dynamic_growth_steps=3), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)  # 4 steps: one doubling, counter 1
    assert (model.optimizer.step_counter, float(model.optimizer.dynamic_scale)) == (1, 65536.0)
    path = tmp_path / "mixed.keras"
    model.save(path)
    with zipfile.ZipFile(path) as z:
        layer_config = json.loads(z.read("config.json"))["config"]["layers"][1]["config"]
    assert layer_config["dtype"]["config"]["name"] == "mixed_float16"
    mixed_precision.set_global_policy("float32")  # the model's saved policy decides, not the global one
    loaded = gpulayers.saving.load_model(path)
    assert isinstance(loaded.optimizer, LossScaleOptimizer)
    assert (loaded.optimizer.step_counter, float(loaded.optimizer.dynamic_scale)) == (1, 65536.0)
    assert int(loaded.optimizer.iterations) == 4
    for a, b in zip(model.weights + model.optimizer.variables, loaded.weights + loaded.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a.numpy() if hasattr(a, "numpy") else a),
                                      np.asarray(b.numpy() if hasattr(b, "numpy") else b))
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    loaded.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# ---------------------------------------------------------------- against Keras 3 (optional)




def keras_twin(keras):
    L = keras.layers
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        return keras.Sequential([
            keras.Input((6, 6, 2)), L.Conv2D(4, 3), L.BatchNormalization(), L.ReLU(), L.Flatten(), L.Dense(3),
            L.Activation("softmax", dtype="float32"),
        ])
    finally:
        keras.config.set_dtype_policy(previous)


def test_mixed_float16_training_matches_keras():
    keras = keras_or_skip()
    model, x, y = small_model("mixed_float16")
    theirs = keras_twin(keras)
    theirs.set_weights([w.numpy() for w in model.weights])
    np.testing.assert_allclose(model.predict(x, verbose=0), np.asarray(theirs.predict(x, verbose=0)), atol=2e-3)
    model.compile(optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    theirs.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    ours = model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0).history["loss"]
    keras_loss = theirs.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0).history["loss"]
    np.testing.assert_allclose(ours, keras_loss, rtol=2e-3)
    for a, b in zip(model.weights, theirs.weights):
        np.testing.assert_allclose(a.numpy(), np.asarray(b.numpy()), atol=2e-3)
    assert float(model.optimizer.dynamic_scale) == float(np.asarray(theirs.optimizer.dynamic_scale))
    assert model.optimizer.step_counter == int(np.asarray(theirs.optimizer.step_counter))


def test_keras_reads_our_loss_scale_file_and_we_read_its(tmp_path):
    keras = keras_or_skip()
    model, x, y = small_model("mixed_float16")
    # momentum, not Adam: Adam turns the float16 noise in the conv bias's ~0 gradient (BN cancels it) into
    # full-size steps, which no tolerance compares
    model.compile(optimizers.SGD(0.1, momentum=0.9), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    model.save(tmp_path / "ours.keras")
    # Keras rebuilds a Sequential in the global policy, not the saved one: its own mixed files load with
    # the optimizer state only under a mixed global policy, so a Keras program sets it first.
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        theirs = keras.saving.load_model(tmp_path / "ours.keras")
    finally:
        keras.config.set_dtype_policy(previous)
    assert isinstance(theirs.optimizer, keras.optimizers.LossScaleOptimizer)
    assert int(np.asarray(theirs.optimizer.step_counter)) == 2
    assert int(np.asarray(theirs.optimizer.iterations)) == 2
    for a, b in zip(model.weights, theirs.weights):
        np.testing.assert_array_equal(a.numpy(), np.asarray(b.numpy()))
    # the momentum moved too: one more epoch on each side lands on the same weights
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    theirs.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.weights, theirs.weights):
        np.testing.assert_allclose(a.numpy(), np.asarray(b.numpy()), atol=2e-3)
    theirs.save(tmp_path / "theirs.keras")
    mixed_precision.set_global_policy("float32")
    back = gpulayers.saving.load_model(tmp_path / "theirs.keras")
    assert isinstance(back.optimizer, LossScaleOptimizer)
    assert back.optimizer.step_counter == 4 and int(back.optimizer.iterations) == 4
    assert float(back.optimizer.dynamic_scale) == float(np.asarray(theirs.optimizer.dynamic_scale))
    for a, b in zip(back.weights, theirs.weights):
        np.testing.assert_array_equal(a.numpy(), np.asarray(b.numpy()))


def test_custom_training_loop_with_a_loss_scale_optimizer():
    # Keras 3's custom loop: scale the loss on the tape, apply the scaled gradients; the optimizer unscales
    def run(optimizer):
        mixed_precision.set_global_policy("mixed_float16")
        gpulayers.set_random_seed(3)
        model = gpulayers.Sequential([gpulayers.Input((4,)), layers.Dense(8, activation="relu"), layers.Dense(2),
                                      layers.Activation("linear", dtype="float32")])
        rng = np.random.default_rng(4)
        x, y = rng.random((16, 4)).astype(np.float32), rng.random((16, 2)).astype(np.float32)
        losses = []
        for _ in range(3):
            with GradientTape() as tape:
                loss = ops.mean((model(x, training=True) - y) ** 2)
                scaled = optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, model.trainable_weights)
            optimizer.apply_gradients(zip(grads, model.trainable_weights))
            losses.append(float(loss))
        return losses, [w.numpy() for w in model.weights]

    scaled_losses, scaled_weights = run(LossScaleOptimizer(optimizers.SGD(0.1)))
    plain_losses, plain_weights = run(optimizers.SGD(0.1))
    assert scaled_losses[-1] < scaled_losses[0]
    np.testing.assert_allclose(scaled_losses, plain_losses, rtol=1e-3)
    for a, b in zip(scaled_weights, plain_weights):  # float16 gradients, scaled or not, give the same steps
        np.testing.assert_allclose(a, b, atol=1e-3)


def test_float16_gradients_are_unscaled_in_float32():
    # 2**17 is inf in float16: the division must be by the float32 scale (Keras's result: 1 - 131/2**17)
    v = gpulayers.Variable(np.ones(2, np.float16))
    opt = LossScaleOptimizer(optimizers.SGD(1.0), initial_scale=2.0**17)
    opt.apply([np.full(2, 131.0, np.float16)], [v])
    np.testing.assert_allclose(v.numpy().astype(np.float64), 1 - 131 / 2**17, atol=5e-4)
    assert v.numpy()[0] != 1.0 and int(opt.iterations) == 1


def test_custom_layer_reads_its_variables_in_the_compute_dtype():
    class Scaled(layers.Layer):
        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1], 3), initializer="ones")
            self.v = self.add_weight(shape=(3,), initializer="ones", autocast=False)

        def call(self, x):
            assert dtype_name((self.w * 1.0).data) == "float16" and dtype_name((self.v * 1.0).data) == "float32"
            return ops.matmul(x, self.w)

    layer = Scaled(dtype="mixed_float16")
    with GradientTape() as tape:
        y = layer(np.ones((2, 4), np.float32))
        loss = ops.sum(ops.cast(y, "float32"))
    assert dtype_name(y.data) == "float16"
    (g,) = tape.gradient(loss, [layer.w])
    assert dtype_name(g) == "float32"
    np.testing.assert_array_equal(np.asarray(g), np.full((4, 3), 2.0, np.float32))


def test_plain_sgd_under_a_loss_scale_keeps_its_scale_in_files(tmp_path):
    # SGD has no slots, but once it has stepped Keras's file holds the step counter and the scale
    model, x, y = small_model("mixed_float16")
    model.compile(LossScaleOptimizer(optimizers.SGD(0.01), dynamic_growth_steps=3), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    before = (model.optimizer.step_counter, float(model.optimizer.dynamic_scale), int(model.optimizer.iterations))
    assert before[2] == 4
    model.save(tmp_path / "sgd.keras")
    loaded = gpulayers.saving.load_model(tmp_path / "sgd.keras")
    assert (loaded.optimizer.step_counter, float(loaded.optimizer.dynamic_scale),
            int(loaded.optimizer.iterations)) == before


def test_a_loss_scaled_file_loads_into_a_plain_optimizer_with_a_warning(tmp_path):
    # a Functional config keeps no policy: loaded under float32 the model compiles a plain Adam (as Keras's)
    mixed_precision.set_global_policy("mixed_float16")
    inputs = gpulayers.Input((4,))
    model = gpulayers.Model(inputs, layers.Dense(2)(layers.Dense(3)(inputs)))
    model.compile("adam", "mse")
    x = np.random.default_rng(5).random((8, 4)).astype(np.float32)
    model.fit(x, x[:, :2], verbose=0)
    model.save(tmp_path / "f.keras")
    mixed_precision.set_global_policy("float32")
    with pytest.warns(UserWarning, match="LossScaleOptimizer's"):
        loaded = gpulayers.saving.load_model(tmp_path / "f.keras")
    assert isinstance(loaded.optimizer, optimizers.Adam) and int(loaded.optimizer.iterations) == 0
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
