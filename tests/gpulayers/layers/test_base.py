"""The Layer API shared by every layer: names, weights, trainable, losses, set_weights,
configs, and the conversion of inputs to the backend."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends import get_ops
from gpulayers import autodiff, ops, regularizers, utils
from gpulayers import layers as layers_module
from gpulayers.layers import (
    Activation,
    AveragePooling2D,
    AvgPool2D,
    BatchNormalization,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAveragePooling2D,
    GlobalMaxPooling2D,
    InputLayer,
    InputSpec,
    Layer,
    MaxPool2D,
    MaxPooling2D,
    StochasticPooling2D,
)
from gpulayers.layers.base import no_backward
from helpers import to_np


@pytest.fixture
def fresh_names(monkeypatch):
    """Layer-name counters starting from zero, restored afterwards."""
    monkeypatch.setattr(utils, "_name_counts", {})
    utils.clear_session()


def assert_weights_equal(before, after):
    assert len(before) == len(after)
    for b, a in zip(before, after):
        np.testing.assert_array_equal(b, a)


# ---------------------------------------------------------------- names


def test_default_names_are_keras_snake_case(fresh_names):
    expected = [
        (lambda: Dense(2), "dense"),
        (lambda: Dense(2), "dense_1"),
        (lambda: Conv2D(2, 3), "conv2d"),
        (lambda: MaxPooling2D(), "max_pooling2d"),
        (lambda: MaxPool2D(), "max_pooling2d_1"),
        (lambda: AveragePooling2D(2), "average_pooling2d"),
        (lambda: AvgPool2D(2), "average_pooling2d_1"),
        (lambda: StochasticPooling2D(), "stochastic_pooling2d"),
        (lambda: GlobalAveragePooling2D(), "global_average_pooling2d"),
        (lambda: GlobalMaxPooling2D(), "global_max_pooling2d"),
        (lambda: BatchNormalization(), "batch_normalization"),
        (lambda: Dropout(0.1), "dropout"),
        (lambda: Flatten(), "flatten"),
        (lambda: Activation("relu"), "activation"),
        (lambda: InputLayer(shape=(3,)), "input_layer"),
        (lambda: Dense(2), "dense_2"),
    ]
    for make, name in expected:
        assert make().name == name
    utils.clear_session()
    assert Dense(2).name == "dense"


def test_explicit_names_and_weight_paths(fresh_names):
    layer = Dense(2, name="head")
    assert layer.name == "head"
    layer(np.ones((1, 3), np.float32))
    assert [v.path for v in layer.weights] == ["head/kernel", "head/bias"]
    assert Dense(2).name == "dense"  # an explicit name takes no counter


@pytest.mark.parametrize("name", ["", "a/b", 3, ["x"]])
def test_bad_names(name):
    with pytest.raises(ValueError, match=r"name"):
        Dense(2, name=name)


# ---------------------------------------------------------------- weights


def test_weights_order_trainable_then_not():
    bn = BatchNormalization()
    bn(np.ones((2, 3), np.float32))
    assert [v.name for v in bn.weights] == ["gamma", "beta", "moving_mean", "moving_variance"]
    assert [v.name for v in bn.trainable_weights] == ["gamma", "beta"]
    assert [v.name for v in bn.non_trainable_weights] == ["moving_mean", "moving_variance"]
    assert bn.variables == bn.weights and bn.trainable_variables == bn.trainable_weights
    conv = Conv2D(2, 2)
    conv(np.ones((1, 3, 3, 1), np.float32))
    assert [v.name for v in conv.weights] == ["kernel", "bias"]
    assert [w.shape for w in conv.get_weights()] == [(2, 2, 1, 2), (2,)]
    for layer in (MaxPooling2D(), Flatten(), Dropout(0.2), Activation("relu"), GlobalMaxPooling2D()):
        layer(np.ones((1, 4, 4, 1), np.float32))
        assert layer.weights == [] and layer.get_weights() == [] and layer.count_params() == 0


def test_get_weights_returns_copies():
    layer = Dense(2)
    layer(np.ones((1, 3), np.float32))
    w = layer.get_weights()
    w[0][:] = 123.0
    assert not np.any(layer.get_weights()[0] == 123.0)
    assert np.asarray(layer.kernel).shape == (3, 2)
    assert layer.kernel.dtype == "float32" and layer.kernel.trainable


def test_set_weights_copies_the_values():
    layer = Dense(2)
    layer(np.ones((1, 3), np.float32))
    kernel = np.ones((3, 2), np.float32)
    bias = np.zeros(2, np.float32)
    layer.set_weights([kernel, bias])
    kernel[:] = 7.0
    np.testing.assert_array_equal(layer.get_weights()[0], np.ones((3, 2)))
    value = np.full((3, 2), 2.0, np.float32)
    layer.kernel.assign(value)
    value[:] = 9.0
    np.testing.assert_array_equal(layer.kernel.numpy(), np.full((3, 2), 2.0))


def test_set_weights_casts_to_the_layer_dtype():
    layer = Dense(2)
    layer(np.ones((1, 3), np.float32))
    layer.set_weights([np.ones((3, 2), np.float64), [1, 2]])
    w = layer.get_weights()
    assert w[0].dtype == np.float32 and w[1].dtype == np.float32
    np.testing.assert_array_equal(w[1], [1.0, 2.0])
    np.testing.assert_allclose(to_np(layer(np.ones((1, 3), np.float32))), [[4.0, 5.0]])


def test_set_weights_validation_changes_nothing_on_error():
    layer = BatchNormalization()
    layer(np.random.default_rng(0).standard_normal((4, 3)), training=True)
    before = layer.get_weights()
    good = [np.full(3, 2.0)] * 4
    with pytest.raises(ValueError, match=r"expected a list of 4 arrays.*Received a list of 3"):
        layer.set_weights(good[:3])
    with pytest.raises(ValueError, match=r"weights\[3\].*moving_variance.*\(3,\).*shape=\(4,\)"):
        layer.set_weights(good[:3] + [np.ones(4)])
    with pytest.raises(ValueError, match=r"weights\[0\].*gamma.*shape=\(3, 1\)"):
        layer.set_weights([np.ones((3, 1))] + good[1:])
    with pytest.raises(TypeError, match=r"weights"):
        layer.set_weights("abc")
    with pytest.raises(TypeError, match=r"weights"):
        layer.set_weights(3.0)
    assert_weights_equal(before, layer.get_weights())
    layer.set_weights(good)
    assert_weights_equal(good, layer.get_weights())


def test_variable_assign_checks_the_shape():
    layer = Dense(2)
    layer(np.ones((1, 3), np.float32))
    before = layer.kernel.numpy()
    with pytest.raises(ValueError, match=r"value.*\(3, 2\).*\(2, 3\)"):
        layer.kernel.assign(np.ones((2, 3)))
    np.testing.assert_array_equal(layer.kernel.numpy(), before)
    layer.kernel.assign(np.zeros((3, 2)))
    np.testing.assert_array_equal(layer.kernel.numpy(), np.zeros((3, 2)))


def test_count_params_and_shapes_before_build():
    layer = Conv2D(2, 3)
    with pytest.raises(ValueError, match=r"count_params"):
        layer.count_params()
    with pytest.raises(AttributeError):
        layer.output_shape
    with pytest.raises(AttributeError):
        layer.input_shape
    layer(np.ones((2, 5, 5, 1), np.float32))
    assert layer.input_shape == (None, 5, 5, 1)
    assert layer.output_shape == (None, 3, 3, 2)
    assert layer.count_params() == 3 * 3 * 1 * 2 + 2


@pytest.mark.parametrize(
    "make,argument",
    [
        (lambda: Dense(2, kernel_initializer=None), "kernel_initializer"),
        (lambda: Dense(2, bias_initializer=None), "bias_initializer"),
        (lambda: Conv2D(2, 1, kernel_initializer=None), "kernel_initializer"),
        (lambda: BatchNormalization(gamma_initializer=None), "gamma_initializer"),
    ],
)
def test_none_initializer_is_accepted_or_refused_up_front(make, argument):
    try:
        layer = make()
    except (ValueError, TypeError) as exc:  # refusing it in the constructor is fine too
        assert argument in str(exc)
        return
    layer(np.ones((2, 3, 3, 2), np.float32))
    assert all(np.isfinite(w).all() for w in layer.get_weights())


def test_data_format_defaults_to_the_config(monkeypatch):
    from gpulayers import config

    monkeypatch.setattr(config, "_image_data_format", "channels_first")
    for layer in (Conv2D(2, 3), MaxPooling2D(), AveragePooling2D(2), StochasticPooling2D(),
                  GlobalAveragePooling2D(), GlobalMaxPooling2D(), Flatten()):
        assert layer.data_format == "channels_first"
    conv = Conv2D(2, 3)
    conv(np.ones((1, 4, 5, 5), np.float32))
    assert conv.kernel.shape == (3, 3, 4, 2)
    monkeypatch.setattr(config, "_image_data_format", "channels_last")
    assert conv.data_format == "channels_first"  # fixed when the layer was made
    assert Conv2D(2, 3).data_format == "channels_last"
    assert Conv2D(2, 3, data_format="Channels_First").data_format == "channels_first"


# ---------------------------------------------------------------- trainable


def test_trainable_flag():
    layer = Dense(2, trainable=False)
    layer(np.ones((1, 3), np.float32))
    assert layer.trainable is False
    assert layer.trainable_weights == []
    assert [v.name for v in layer.non_trainable_weights] == ["kernel", "bias"]
    assert [v.name for v in layer.weights] == ["kernel", "bias"]
    layer.trainable = True
    assert [v.name for v in layer.trainable_weights] == ["kernel", "bias"]
    assert layer.non_trainable_weights == []
    bn = BatchNormalization()
    bn(np.ones((2, 3), np.float32))
    bn.trainable = False
    assert [v.name for v in bn.weights] == ["gamma", "beta", "moving_mean", "moving_variance"]
    assert bn.get_config()["trainable"] is False


# ---------------------------------------------------------------- losses


def test_losses_activity_is_replaced_at_each_call():
    layer = Dense(2, activity_regularizer=regularizers.L1(0.5), kernel_initializer="ones", dtype="float64")
    assert layer.losses == []
    # Keras 3.14+: the activity penalty is divided by the batch size.
    y1 = to_np(layer(np.ones((1, 3))))
    assert [float(to_np(v)) for v in layer.losses] == pytest.approx([0.5 * np.abs(y1).sum()])
    y2 = to_np(layer(2 * np.ones((4, 3))))
    assert [float(to_np(v)) for v in layer.losses] == pytest.approx([0.5 * np.abs(y2).sum() / 4])
    assert Dense(2).losses == []


def test_layers_without_regularizers_have_no_losses():
    for layer in (Conv2D(2, 2), BatchNormalization(), MaxPooling2D(), Dropout(0.5), Flatten()):
        layer(np.ones((2, 4, 4, 2), np.float32), training=True)
        assert layer.losses == []


# ---------------------------------------------------------------- backward bookkeeping


def test_no_backward_records_no_node():
    layer = Dense(2)
    with no_backward():
        y = layer(np.ones((1, 3), np.float32))
    assert y.node is None
    assert autodiff.gradient(ops.sum(y), layer.trainable_weights) == [None, None]
    y = layer(np.ones((1, 3), np.float32))
    assert y.node is not None and y.node.op == "dense"
    with pytest.raises(ValueError, match=r"output_gradient.*\(1, 2\).*\(1, 3\)"):
        autodiff.gradient(y, layer.trainable_weights, output_gradient=np.ones((1, 3), np.float32))


def test_a_layer_called_twice_sums_the_gradients_of_both_calls():
    # The old engine kept one cache per layer: the second call overwrote the first one's.
    rng = np.random.default_rng(0)
    layer = Dense(3, activation="tanh", dtype="float64")
    a, b = rng.standard_normal((2, 4)), rng.standard_normal((5, 4))
    layer(a)
    kernel = layer.kernel
    with autodiff.GradientTape() as tape:
        loss = ops.sum(layer(a) ** 2) + ops.sum(layer(b) * 3.0)
    both = to_np(tape.gradient(loss, [kernel])[0])
    with autodiff.GradientTape() as tape:
        first = ops.sum(layer(a) ** 2)
    with autodiff.GradientTape() as tape2:
        second = ops.sum(layer(b) * 3.0)
    np.testing.assert_allclose(both, to_np(tape.gradient(first, [kernel])[0]) + to_np(tape2.gradient(second, [kernel])[0]))


# ---------------------------------------------------------------- configs

ROUND_TRIP_LAYERS = [
    (Dense, dict(units=3, activation="tanh", use_bias=False, kernel_initializer="he_normal",
                 kernel_regularizer=regularizers.L2(0.3), activity_regularizer=regularizers.L1(0.1),
                 kernel_constraint="non_neg", name="my_dense", dtype="float64", trainable=False)),
    (Dense, dict(units=4, bias_regularizer="l1", bias_constraint="max_norm")),
    (Conv2D, dict(filters=4, kernel_size=(2, 3), strides=(2, 1), padding="same", data_format="channels_first",
                  activation="relu", bias_initializer="ones", kernel_regularizer="l2")),
    (Conv2D, dict(filters=2, kernel_size=3, dilation_rate=2, use_bias=False, data_format="channels_last")),
    (MaxPooling2D, dict(pool_size=3, strides=2, padding="same", data_format="channels_first")),
    (AveragePooling2D, dict(pool_size=(2, 3), padding="valid", data_format="channels_last")),
    (StochasticPooling2D, dict(pool_size=2, strides=1, seed=5, padding="same", data_format="channels_last")),
    (GlobalAveragePooling2D, dict(data_format="channels_first", keepdims=True)),
    (GlobalMaxPooling2D, dict(data_format="channels_last", keepdims=False)),
    (BatchNormalization, dict(axis=1, momentum=0.5, epsilon=0.01, center=False, gamma_initializer="zeros",
                              gamma_regularizer="l2", gamma_constraint="unit_norm")),
    (BatchNormalization, dict(scale=False, moving_variance_initializer="zeros")),
    (Dropout, dict(rate=0.25, noise_shape=(None, 1, 1, None), seed=3)),
    (Flatten, dict(data_format="channels_first")),
    (Activation, dict(activation="softmax")),
    (InputLayer, dict(shape=(4, 5), batch_size=2, dtype="float64", name="inp")),
]


def _json_round_trip(config):
    return json.loads(json.dumps(config))


@pytest.mark.parametrize("cls,kwargs", ROUND_TRIP_LAYERS, ids=lambda v: v.__name__ if isinstance(v, type) else "")
def test_config_round_trips(cls, kwargs):
    layer = cls(**kwargs)
    config = layer.get_config()
    assert config["name"] == layer.name
    for key, value in kwargs.items():
        if key in ("units", "filters", "rate", "seed", "momentum", "epsilon", "axis", "center", "scale", "keepdims"):
            assert config[key] == value
    clone = cls.from_config(config)
    assert clone.get_config() == config
    # Through JSON (tuples become lists), as in a .keras file.
    as_json = _json_round_trip(config)
    from_json = cls.from_config(as_json)
    assert _json_round_trip(from_json.get_config()) == as_json
    # Through gpulayers.layers.serialize / deserialize.
    again = layers_module.deserialize(_json_round_trip(layers_module.serialize(layer)))
    assert type(again) is cls
    assert _json_round_trip(again.get_config()) == as_json


@pytest.mark.parametrize("cls,kwargs", ROUND_TRIP_LAYERS[:-1], ids=lambda v: v.__name__ if isinstance(v, type) else "")
def test_config_clone_computes_the_same(cls, kwargs):
    rng = np.random.default_rng(0)
    layer = cls(**kwargs)
    clone = cls.from_config(_json_round_trip(layer.get_config()))
    shape = (2, 3) if cls is Dense else (2, 6, 7, 6)
    x = rng.standard_normal(shape)
    layer.build_from_shape(x.shape)
    clone.build_from_shape(x.shape)
    assert [v.name for v in clone.weights] == [v.name for v in layer.weights]
    clone.set_weights(layer.get_weights())
    assert clone.dtype == layer.dtype and clone.trainable == layer.trainable
    np.testing.assert_array_equal(to_np(clone(x)), to_np(layer(x)))
    if "seed" in kwargs:  # seeded layers draw the same in training
        np.testing.assert_array_equal(to_np(clone(x, training=True)), to_np(layer(x, training=True)))


def test_every_layer_class_is_known_by_name():
    for name in ("Dense", "Conv2D", "Convolution2D", "MaxPooling2D", "MaxPool2D", "AveragePooling2D", "AvgPool2D",
                 "GlobalAveragePooling2D", "GlobalAvgPool2D", "GlobalMaxPooling2D", "GlobalMaxPool2D",
                 "StochasticPooling2D", "BatchNormalization", "Dropout", "Flatten", "Activation", "InputLayer"):
        assert name in layers_module.LAYER_CLASSES
    with pytest.raises(ValueError, match=r"'Lambda'"):
        layers_module.deserialize({"class_name": "Lambda", "config": {}})
    with pytest.raises(ValueError, match=r"class_name"):
        layers_module.deserialize(["Dense"])


def test_from_config_accepts_a_keras3_style_config():
    config = {
        "name": "conv2d_7",
        "trainable": True,
        "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None},
        "filters": 8,
        "kernel_size": [3, 3],
        "strides": [1, 1],
        "padding": "same",
        "data_format": "channels_last",
        "dilation_rate": [1, 1],
        "groups": 1,
        "activation": "relu",
        "use_bias": True,
        "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform",
                               "config": {"seed": None}, "registered_name": None},
        "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": None},
        "kernel_regularizer": None,
        "bias_regularizer": None,
        "activity_regularizer": None,
        "kernel_constraint": None,
        "bias_constraint": None,
    }
    layer = Conv2D.from_config(config)
    assert layer.name == "conv2d_7" and layer.kernel_size == (3, 3) and layer.padding == "same"
    assert to_np(layer(np.ones((1, 4, 4, 2), np.float32))).shape == (1, 4, 4, 8)


def test_from_config_refuses_unknown_keys():
    config = Dense(2).get_config()
    config["not_an_argument"] = 1
    with pytest.raises(TypeError, match=r"not_an_argument"):
        Dense.from_config(config)


# ---------------------------------------------------------------- input conversion


class ArrayLike:
    """Has only __array__ (like many array libraries)."""

    def __init__(self, data):
        self._data = np.asarray(data)

    def __array__(self, dtype=None, copy=None):
        return self._data if dtype is None else self._data.astype(dtype)


class DLPackOnly:
    """Has only the DLPack protocol (like a torch or jax array seen through it)."""

    def __init__(self, data):
        self._data = np.ascontiguousarray(data)

    def __dlpack__(self, **kwargs):
        return self._data.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._data.__dlpack_device__()


X = [[1.0, -2.0, 3.0], [0.5, 0.0, -1.5]]


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.array(X),
        lambda: np.array(X, dtype=np.float32),
        lambda: np.array(X, dtype=np.float16),
        lambda: X,
        lambda: tuple(tuple(r) for r in X),
        lambda: ArrayLike(X),
        lambda: DLPackOnly(np.array(X)),
        lambda: DLPackOnly(np.array(X, dtype=np.float32)),
        lambda: np.asfortranarray(np.array(X)),
    ],
    ids=["float64", "float32", "float16", "list", "tuple", "__array__", "__dlpack__", "__dlpack__f32", "fortran"],
)
def test_inputs_are_converted_to_the_layer_dtype(make):
    layer = Activation("linear")
    y = layer(make())
    assert isinstance(y, autodiff.Tensor) and isinstance(y.data, get_ops().xp.ndarray)  # of the active backend
    assert y.dtype == np.float32
    np.testing.assert_allclose(to_np(y), np.array(X, dtype=np.float32))
    y64 = Dense(2, dtype="float64", kernel_initializer="ones")(make())
    assert y64.dtype == np.float64
    np.testing.assert_allclose(to_np(y64), np.sum(X, axis=1, keepdims=True) * np.ones((1, 2)))


@pytest.mark.parametrize(
    "x,expected",
    [
        (np.array([[1, 2], [3, 4]], dtype=np.int64), [[1.0, 2.0], [3.0, 4.0]]),
        (np.array([[1, 2], [3, 4]], dtype=np.uint8), [[1.0, 2.0], [3.0, 4.0]]),
        (np.array([[True, False], [False, True]]), [[1.0, 0.0], [0.0, 1.0]]),
        ([[1, 2], [3, 4]], [[1.0, 2.0], [3.0, 4.0]]),
        ([[True, False], [False, True]], [[1.0, 0.0], [0.0, 1.0]]),
        (ArrayLike(np.array([[1, 0], [0, 2]], dtype=np.int32)), [[1.0, 0.0], [0.0, 2.0]]),
        (DLPackOnly(np.array([[1, 0], [0, 2]], dtype=np.int16)), [[1.0, 0.0], [0.0, 2.0]]),
    ],
)
def test_int_and_bool_inputs_are_cast(x, expected):
    for layer in (Activation("linear"), Flatten(), BatchNormalization(momentum=1.0, epsilon=1e-12)):
        y = layer(x)
        assert y.dtype == np.float32
        np.testing.assert_allclose(to_np(y), expected, rtol=1e-5)


def test_a_users_layer_casts_float_inputs_only_as_keras_autocast():
    class Passthrough(Layer):
        def call(self, inputs):
            return inputs

    assert Passthrough()(np.array([1, 2], dtype=np.int64)).dtype == np.int64  # indices stay indices
    assert Passthrough()(np.array([1.5], dtype=np.float64)).dtype == np.float32
    assert Passthrough(autocast=False)(np.array([1.5], dtype=np.float64)).dtype == np.float64


@pytest.mark.parametrize(
    "x,pattern",
    [
        (np.array([[1.0, 2.0]], dtype=object), r"inputs.*object"),
        (np.array([[1 + 2j, 2.0]]), r"inputs.*complex128"),
        (np.array([[1 + 2j, 2.0]], dtype=np.complex64), r"inputs.*complex64"),
        (np.array([["1", "2"]]), r"inputs.*<U1"),
        (np.array([[b"1", b"2"]]), r"inputs.*S1"),
        (np.array([[1, 2]], dtype="datetime64[s]"), r"inputs.*datetime64"),
        ([[1 + 1j, 2]], r"inputs.*complex"),
        ([["a", "b"]], r"inputs"),
        ([[1.0, 2.0], [3.0]], r"inputs"),  # ragged
        (ArrayLike(np.ones((1, 2), dtype=complex)), r"inputs.*complex"),
        (ArrayLike(np.array([["x", "y"]])), r"inputs"),
        ("abc", r"inputs.*'abc'"),
        (b"ab", r"inputs"),
        (None, r"inputs.*None"),
        ({"a": 1}, r"inputs"),
        (object(), r"inputs"),
    ],
)
def test_non_numeric_inputs_raise_type_error_naming_inputs(x, pattern):
    layers = [Activation("relu"), Dense(2), Conv2D(1, 1), BatchNormalization(), MaxPooling2D(1), Dropout(0.5)]
    for layer in layers:
        with pytest.raises(TypeError, match=pattern):
            layer(x, training=True)
        # A refused call builds nothing (the weightless layers are built from the start, as Keras's).
        assert layer.built is type(layer).built_at_construction and layer.weights == []


def test_refused_inputs_leave_a_built_layer_unchanged():
    rng = np.random.default_rng(1)
    bn = BatchNormalization(axis=-1)
    bn(rng.standard_normal((4, 2)), training=True)
    conv = Conv2D(2, 1)
    conv(rng.standard_normal((1, 2, 2, 2)))
    for layer, bad in ((bn, np.ones((4, 2), complex)), (conv, np.ones((1, 2, 2, 2), object))):
        before = layer.get_weights()
        with pytest.raises(TypeError, match=r"inputs"):
            layer(bad, training=True)
        assert_weights_equal(before, layer.get_weights())


# ---------------------------------------------------------------- InputSpec and the base Layer


def test_input_spec_messages():
    spec = InputSpec(ndim=4, axes={-1: 3})
    with pytest.raises(ValueError, match=r"'lay'.*ndim=4.*ndim=2.*inputs\.shape=\(1, 3\)"):
        spec.check("lay", (1, 3))
    with pytest.raises(ValueError, match=r"axis -1.*value 3.*inputs\.shape=\(1, 2, 2, 4\)"):
        spec.check("lay", (1, 2, 2, 4))
    spec.check("lay", (None, 2, 2, 3))
    with pytest.raises(ValueError, match=r"min_ndim=2"):
        InputSpec(min_ndim=2).check("lay", (3,))


def test_base_layer_is_identity_and_refuses_unknown_kwargs():
    layer = Layer()
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(to_np(layer(x)), x)
    with pytest.raises(TypeError, match=r"foo"):
        Layer(foo=1)
    with pytest.raises(ValueError, match=r"dtype.*'complex64'"):
        Layer(dtype="complex64")
    with pytest.raises(ValueError, match=r"dtype.*bfloat16.*'mixed_bfloat16'"):
        Layer(dtype="mixed_bfloat16")
    assert Layer(dtype={"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float64"}}).dtype == "float64"


@pytest.mark.parametrize(
    "cls,kwargs",
    [(Dense, dict(units=2)), (Conv2D, dict(filters=2, kernel_size=1)), (MaxPooling2D, {}), (BatchNormalization, {}),
     (Dropout, dict(rate=0.5)), (Flatten, {}), (Activation, dict(activation="relu")),
     (GlobalAveragePooling2D, {}), (StochasticPooling2D, {}), (AveragePooling2D, dict(pool_size=2))],
)
def test_unknown_constructor_kwargs_raise_type_error(cls, kwargs):
    with pytest.raises(TypeError, match=r"bogus_argument"):
        cls(bogus_argument=1, **kwargs)


# ---------------------------------------------------------------- fuzz: only ValueError / TypeError

FUZZ_LAYERS = [
    lambda: Dense(2),
    lambda: Conv2D(2, 2, data_format="channels_last"),
    lambda: Conv2D(2, (1, 2), strides=2, padding="same", data_format="channels_first"),
    lambda: MaxPooling2D(2, data_format="channels_last"),
    lambda: AveragePooling2D(2, strides=1, padding="same", data_format="channels_first"),
    lambda: StochasticPooling2D(2, seed=0, data_format="channels_last"),
    lambda: GlobalAveragePooling2D(data_format="channels_last"),
    lambda: GlobalMaxPooling2D(data_format="channels_first", keepdims=True),
    lambda: BatchNormalization(axis=1),
    lambda: BatchNormalization(axis=-1),
    lambda: Dropout(0.5, noise_shape=(None, 1, 1, None), seed=0),
    lambda: Dropout(0.5, seed=0),
    lambda: Flatten(data_format="channels_first"),
    lambda: Activation("softmax"),
    lambda: InputLayer(shape=(3, 3, 2)),
]

shapes = st.lists(st.integers(0, 4), min_size=0, max_size=5).map(tuple)


@pytest.mark.parametrize("index", range(len(FUZZ_LAYERS)))
@settings(max_examples=25, deadline=None)
@given(first=shapes, second=shapes, training=st.booleans(), right_dy=st.booleans(), dy_shape=shapes)
def test_fuzz_shapes_raise_only_value_or_type_errors(index, first, second, training, right_dy, dy_shape):
    layer = FUZZ_LAYERS[index]()
    for shape in (first, second):
        before = layer.get_weights()
        x = ops.convert_to_tensor(np.ones(shape, np.float32))
        x.watched = True
        try:
            y = layer(x, training=training)
        except (ValueError, TypeError):
            assert_weights_equal(before, layer.get_weights())  # a refused call changes nothing
            continue
        assert tuple(y.shape) == tuple(layer.compute_output_shape(shape))
        dy = np.ones(tuple(y.shape) if right_dy else dy_shape, np.float32)
        try:
            (dx,) = autodiff.gradient(y, [x], output_gradient=dy)
        except (ValueError, TypeError):
            assert dy.shape != tuple(y.shape)
        else:
            assert dy.shape == tuple(y.shape) and (dx is None or tuple(dx.shape) == shape)


def test_weightless_layers_are_built_at_construction_as_in_keras():
    # Keras 3.15.1: the layers whose build makes nothing are built by their constructor; the others
    # (Flatten, Permute, the merges, Dense...) when first called.
    from gpulayers import layers as L

    built = [L.MaxPooling2D(), L.AveragePooling2D(2), L.MaxPooling1D(), L.AveragePooling1D(2), L.StochasticPooling2D(),
             L.GlobalAveragePooling2D(), L.GlobalMaxPooling1D(), L.Dropout(0.5), L.Activation("relu"), L.Reshape((2,)),
             L.ReLU(), L.LeakyReLU(), L.ELU(), L.Softmax()]
    unbuilt = [L.Flatten(), L.Permute((2, 1)), L.RepeatVector(2), L.UpSampling2D(), L.Add(), L.Concatenate(),
               L.ZeroPadding2D(), L.Lambda(lambda x: x), L.Dense(2), L.Conv2D(2, 3), L.BatchNormalization()]
    assert all(layer.built for layer in built) and not any(layer.built for layer in unbuilt)
    pool = L.MaxPooling2D()
    assert pool(np.ones((1, 4, 4, 3), np.float32)).shape == (1, 2, 2, 3)
    assert pool.output_shape == (None, 2, 2, 3)  # learnt from the first call
    with pytest.raises(ValueError):
        pool(np.ones((1, 4, 4), np.float32))  # its input spec is still checked
