"""Dense, Activation, InputLayer and Input."""

import math
import re

import numpy as np
import pytest

from gpulayers import config, regularizers
from gpulayers.layers import Activation, Dense, Input, InputLayer
from gpulayers.symbolic import KerasTensor
from helpers import forward, check_layer_gradients, to_np

# ---------------------------------------------------------------- references


def ref_dense(x, kernel, bias):
    """Plain loops: y[..., j] = sum_i x[..., i] * kernel[i, j] + bias[j]."""
    x = np.asarray(x, dtype=np.float64)
    lead = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1])
    units = kernel.shape[1]
    out = np.zeros((flat.shape[0], units))
    for r in range(flat.shape[0]):
        for j in range(units):
            total = 0.0
            for i in range(flat.shape[1]):
                total += flat[r, i] * float(kernel[i, j])
            out[r, j] = total + (float(bias[j]) if bias is not None else 0.0)
    return out.reshape(lead + (units,))


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _softplus(x):
    return np.log1p(np.exp(x))


_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772, 1.0507009873554805
def _sparsemax_tau(x):
    """Sparsemax's threshold along the last axis, by trying every support size (float64)."""
    z = -np.sort(-x, axis=-1)
    k = np.arange(1, x.shape[-1] + 1)
    cumulative = np.cumsum(z, axis=-1)
    support = (1 + k * z > cumulative).sum(axis=-1, keepdims=True)
    return (np.take_along_axis(cumulative, support - 1, axis=-1) - 1) / support


REFERENCE_ACTIVATIONS = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.2 * x),
    "relu6": lambda x: np.clip(x, 0, 6),
    "softmax": _softmax,
    "log_softmax": lambda x: np.log(_softmax(x)),
    "elu": lambda x: np.where(x > 0, x, np.expm1(x)),
    "selu": lambda x: _SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(x)),
    "softplus": _softplus,
    "softsign": lambda x: x / (np.abs(x) + 1),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "silu": lambda x: x * _sigmoid(x),
    "swish": lambda x: x * _sigmoid(x),
    "gelu": lambda x: 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2))),
    "exponential": np.exp,
    "hard_sigmoid": lambda x: np.clip(x + 3, 0, 6) / 6,
    "hard_silu": lambda x: x * np.clip(x + 3, 0, 6) / 6,
    "hard_swish": lambda x: x * np.clip(x + 3, 0, 6) / 6,
    "mish": lambda x: x * np.tanh(_softplus(x)),
    "celu": lambda x: np.maximum(x, 0) + np.expm1(np.minimum(x, 0)),
    "glu": lambda x: np.split(x, 2, axis=-1)[0] * _sigmoid(np.split(x, 2, axis=-1)[1]),
    "log_sigmoid": lambda x: np.log(_sigmoid(x)),
    "hard_tanh": lambda x: np.clip(x, -1, 1),
    "hard_shrink": lambda x: np.where(np.abs(x) > 0.5, x, 0.0),
    "soft_shrink": lambda x: np.sign(x) * np.maximum(np.abs(x) - 0.5, 0.0),
    "tanh_shrink": lambda x: x - np.tanh(x),
    "sparse_plus": lambda x: np.where(x <= -1, 0.0, np.where(x < 1, (x + 1) ** 2 / 4, x)),
    "sparse_sigmoid": lambda x: np.clip((x + 1) / 2, 0, 1),
    "squareplus": lambda x: (x + np.sqrt(x * x + 4)) / 2,
    "sparsemax": lambda x: np.maximum(x - _sparsemax_tau(x), 0.0),
}

# Activations that need arguments an Activation layer cannot pass (Keras's `threshold`).
ARGUMENT_ACTIVATIONS = {"threshold"}

# relu, relu6, hard_sigmoid, hard_silu, selu, the shrinks and the sparse ones...
KINKS = np.array([0.0, -3.0, 3.0, 6.0, -1.0, 1.0, -0.5, 0.5])


def away_from_kinks(rng, shape, low=-5.0, high=7.0):
    """Random values, none within 0.05 of an activation kink."""
    x = rng.uniform(low, high, size=shape)
    near = np.abs(x[..., None] - KINKS).min(axis=-1) < 0.05
    x[near] += 0.1
    return x


# ---------------------------------------------------------------- Dense


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4), (2, 2, 3, 4)])
def test_dense_matches_loop_reference(shape, use_bias):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    layer = Dense(5, use_bias=use_bias)
    layer.build_from_shape(x.shape)
    layer.set_weights([rng.standard_normal(w.shape) for w in layer.get_weights()])
    weights = layer.get_weights()
    y = to_np(layer(x))
    assert y.dtype == np.float32
    assert y.shape == shape[:-1] + (5,) == layer.compute_output_shape(shape)
    np.testing.assert_allclose(y, ref_dense(x, weights[0], weights[1] if use_bias else None), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "softmax"])
def test_dense_activation(activation):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    layer = Dense(6, activation=activation, bias_initializer="ones")
    y = to_np(layer(x))
    kernel, bias = layer.get_weights()
    np.testing.assert_array_equal(bias, np.ones(6))
    ref = REFERENCE_ACTIVATIONS[activation](ref_dense(x, kernel, bias))
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


def test_dense_softmax_keeps_its_logits_node_for_the_loss():
    # Bias and softmax run in one pass, but the graph is Keras's: a softmax node on the dense node's output,
    # whose values are the biased logits (a cross-entropy sends its gradient there).
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    layer = Dense(5, activation="softmax", bias_initializer="ones")
    y = layer(x)
    assert y.node.op == "softmax" and y.node.attrs == {"axis": 1}
    logits = y.node.inputs[0]
    assert logits.node.op == "dense"
    kernel, bias = layer.get_weights()
    np.testing.assert_array_equal(to_np(logits), x @ kernel + bias)
    with pytest.warns(UserWarning, match="axis -1 of a tensor of shape"):  # one unit: Keras's warning stays
        Dense(1, activation="softmax")(x)


def test_dense_weights_in_keras_layout():
    layer = Dense(3)
    assert not layer.built and layer.weights == []
    layer(np.zeros((2, 7), np.float32))
    assert layer.built
    assert [v.name for v in layer.weights] == ["kernel", "bias"]
    assert layer.kernel.shape == (7, 3) and layer.bias.shape == (3,)
    assert layer.count_params() == 24
    assert layer.output_shape == (None, 3)
    np.testing.assert_array_equal(layer.get_weights()[1], np.zeros(3))  # bias 'zeros' by default
    # glorot_uniform: limit sqrt(6 / (in + out))
    assert np.abs(layer.get_weights()[0]).max() <= math.sqrt(6 / 10)
    assert Dense(2, use_bias=False).use_bias is False


def test_dense_3d_input_builds_on_the_last_axis():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 5, 3))
    layer = Dense(4, dtype="float64")
    y = to_np(layer(x))
    assert layer.kernel.shape == (3, 4)
    kernel, bias = layer.get_weights()
    for b in range(2):
        for t in range(5):
            np.testing.assert_allclose(y[b, t], x[b, t] @ kernel + bias, rtol=1e-12)


DENSE_GRAD_CASES = [
    dict(),
    dict(activation="tanh"),
    dict(activation="sigmoid"),
    dict(activation="softmax"),
    dict(activation="elu"),
    dict(use_bias=False),
    dict(kernel_regularizer=regularizers.L2(0.1), bias_regularizer=regularizers.L1(0.05)),
    dict(activity_regularizer=regularizers.L2(0.03), kernel_regularizer=regularizers.L1L2(l1=0.01, l2=0.02)),
    dict(kernel_regularizer="l2", activity_regularizer="l1", activation="tanh"),
]


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4)])
@pytest.mark.parametrize("kwargs", DENSE_GRAD_CASES, ids=lambda kw: ",".join(sorted(kw)) or "plain")
def test_dense_gradients(kwargs, shape):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape)
    layer = Dense(3, dtype="float64", **kwargs)
    layer.build_from_shape(x.shape)
    layer.set_weights([rng.standard_normal(w.shape) for w in layer.get_weights()])
    _, grads = check_layer_gradients(layer, x)
    assert set(grads) == ({"kernel", "bias"} if layer.use_bias else {"kernel"})


def test_dense_relu_gradient_away_from_kinks():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 3))
    layer = Dense(4, activation="relu", dtype="float64")
    layer.build_from_shape(x.shape)
    layer.set_weights([rng.standard_normal((3, 4)), rng.standard_normal(4)])
    z = ref_dense(x, *layer.get_weights())
    assert np.abs(z).min() > 1e-3 and (z < 0).any() and (z > 0).any()
    check_layer_gradients(layer, x)


def test_dense_losses_values():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 2))
    layer = Dense(
        2, dtype="float64", kernel_regularizer=regularizers.L2(0.1),
        bias_regularizer=regularizers.L1(0.2), activity_regularizer=regularizers.L1(0.05),
        bias_initializer="ones",
    )
    y = to_np(layer(x))
    kernel, bias = layer.get_weights()
    losses = [float(to_np(v)) for v in layer.losses]
    # Keras's order: the activity loss of the last call (per sample: divided by the batch size, as Keras
    # 3.14+), then the weights' terms.
    np.testing.assert_allclose(losses, [0.05 * np.abs(y).sum() / 3, 0.1 * (kernel**2).sum(), 0.2 * np.abs(bias).sum()],
                               rtol=1e-12)
    layer.trainable = False
    assert [float(to_np(v)) for v in layer.losses] == pytest.approx([0.05 * np.abs(y).sum() / 3])


def test_dense_trainable_false():
    rng = np.random.default_rng(6)
    layer = Dense(2, dtype="float64")
    x = rng.standard_normal((3, 4))
    layer(x)
    layer.trainable = False
    assert layer.trainable_weights == []
    assert [v.name for v in layer.non_trainable_weights] == ["kernel", "bias"]
    dx, grads = check_layer_gradients(layer, x)
    assert grads == {} and not layer.kernel.trainable and not layer.bias.trainable
    _, backward = forward(layer, x)
    np.testing.assert_allclose(to_np(backward(np.ones((3, 2)))), np.ones((3, 2)) @ layer.get_weights()[0].T)


@pytest.mark.parametrize(
    "units,error",
    # Keras 3.15.1 raises ValueError for every bad `units` (a float, a string, None); a bool is refused too.
    [(0, ValueError), (-1, ValueError), (2.5, ValueError), ("3", ValueError), (True, ValueError), (None, ValueError), (3.0, ValueError)],
)
def test_dense_units_must_be_a_positive_int(units, error):
    with pytest.raises(error, match=r"units.*" + re.escape(f"units={units!r}")):
        Dense(units)


@pytest.mark.parametrize(
    "kwargs,error,pattern",
    [
        (dict(activation="rellu"), ValueError, r"activation.*'rellu'"),
        (dict(activation=5), TypeError, r"activation.*5"),
        (dict(kernel_initializer="glorot"), ValueError, r"kernel_initializer.*'glorot'"),
        (dict(bias_initializer="zeroes"), ValueError, r"bias_initializer.*'zeroes'"),
        (dict(kernel_regularizer="l1_l3"), ValueError, r"kernel_regularizer.*'l1_l3'"),
        (dict(activity_regularizer="l5"), ValueError, r"activity_regularizer.*'l5'"),
        (dict(kernel_constraint="max_normal"), ValueError, r"kernel_constraint.*'max_normal'"),
        (dict(use_bias="false"), TypeError, r"use_bias.*'false'"),
        (dict(dtype="int64"), ValueError, r"dtype.*int64"),
        (dict(name=""), ValueError, r"name"),
        (dict(name="a/b"), ValueError, r"name.*'a/b'"),
        (dict(unit=3), TypeError, r"unit"),
        (dict(input_dim=0), ValueError, r"input_dim.*0"),
        (dict(input_shape=(-2,)), ValueError, r"input_shape.*-2"),
    ],
)
def test_dense_bad_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        Dense(3, **kwargs)


# Keras 3.15's config for keras.layers.Dense(3) (written by Keras 3.15.1).
KERAS_DENSE_CONFIG = {
    "name": "dense", "trainable": True,
    "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None},
    "units": 3, "activation": "linear", "use_bias": True,
    "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform",
                           "config": {"seed": None, "input_axes": None, "output_axes": None}, "registered_name": None},
    "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": None},
    "kernel_regularizer": None, "bias_regularizer": None, "kernel_constraint": None, "bias_constraint": None,
    "quantization_config": None,
}


def test_dense_takes_keras_3_arguments_with_their_defaults():
    layer = Dense(3, lora_rank=None, lora_alpha=None, quantization_config=None)
    assert layer.lora_rank is None and layer.lora_alpha is None and layer.lora_enabled is False
    assert layer.quantization_config is None
    config = layer.get_config()
    assert config["quantization_config"] is None  # always written, as Keras writes it
    assert "lora_rank" not in config and "lora_alpha" not in config  # Keras writes them only with LoRA on
    # lora_alpha alone changes nothing (Keras keeps it, and leaves it out of the config).
    alpha = Dense(3, lora_alpha=8, name="alpha")
    assert alpha.lora_alpha == 8 and alpha.get_config() == Dense(3, name="alpha").get_config()


def test_dense_config_is_keras_3_config():
    layer = Dense.from_config(dict(KERAS_DENSE_CONFIG))
    assert layer.get_config() == KERAS_DENSE_CONFIG
    assert to_np(layer(np.ones((2, 4), np.float32))).shape == (2, 3)


@pytest.mark.parametrize(
    "kwargs,error,pattern",
    [
        (dict(lora_rank=4), ValueError, r"Invalid value for `lora_rank`: lora_rank is not supported.*lora_rank=4"),
        (dict(lora_rank=4, lora_alpha=8), ValueError, r"lora_rank is not supported.*lora_rank=4"),
        (dict(lora_rank=0), ValueError, r"lora_rank is not supported.*lora_rank=0"),
        (dict(lora_alpha="8"), TypeError, r"lora_alpha.*'8'"),
        (dict(quantization_config={"module": "keras.quantizers", "class_name": "Int8QuantizationConfig",
                                   "config": {}, "registered_name": None}),
         ValueError, r"Invalid value for `quantization_config`: quantization_config is not supported.*Int8"),
        (dict(quantization_config="int8"), ValueError, r"quantization_config is not supported.*'int8'"),
    ],
)
def test_dense_refuses_lora_and_quantization(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        Dense(3, **kwargs)
    with pytest.raises(error, match=pattern):
        Dense.from_config({**KERAS_DENSE_CONFIG, **kwargs})


def test_dense_bad_inputs_leave_weights_unchanged():
    layer = Dense(3)
    with pytest.raises(ValueError, match=r"ndim|rank"):
        layer(np.ones((4,), np.float32))
    assert not layer.built and layer.weights == []
    layer(np.ones((2, 4), np.float32))
    before = layer.get_weights()
    with pytest.raises(ValueError, match=r"inputs\.shape=\(2, 5\)"):
        layer(np.ones((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"inputs\.shape=\(2, 3, 5\)"):
        layer(np.ones((2, 3, 5), np.float32))
    with pytest.raises(ValueError, match=r"ndim|rank"):
        layer(np.ones((4,), np.float32))
    with pytest.raises(TypeError, match=r"inputs"):
        layer(np.array([["a", "b", "c", "d"]]))
    after = layer.get_weights()
    for b, a in zip(before, after):
        np.testing.assert_array_equal(b, a)
    assert layer.kernel.shape == (4, 3)


@pytest.mark.parametrize("shape", [(3, 0), (2, 3, 0)])
def test_dense_zero_size_feature_axis_backward(shape):
    layer = Dense(2, dtype="float64", bias_initializer="ones")
    y, backward = forward(layer, np.ones(shape))
    assert y.shape == shape[:-1] + (2,)
    np.testing.assert_array_equal(y, np.ones(y.shape))  # only the bias
    dx = to_np(backward(np.ones(y.shape)))
    assert dx.shape == shape
    assert backward.grads["kernel"].shape == (0, 2)
    np.testing.assert_array_equal(backward.grads["bias"], np.full(2, float(np.prod(shape[:-1]))))


# ---------------------------------------------------------------- Activation

ACTIVATION_NAMES = sorted(REFERENCE_ACTIVATIONS)


def test_every_activation_name_is_covered():
    from gpulayers import activations

    assert set(activations._ALL) - ARGUMENT_ACTIVATIONS <= set(REFERENCE_ACTIVATIONS), "add a reference for it"


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_activation_layer_forward(name):
    rng = np.random.default_rng(7)
    x = away_from_kinks(rng, (3, 4))
    layer = Activation(name, dtype="float64")
    y = to_np(layer(x))
    assert y.shape == layer.compute_output_shape(x.shape) == (x.shape[:-1] + (2,) if name == "glu" else x.shape)
    np.testing.assert_allclose(y, REFERENCE_ACTIVATIONS[name](x), rtol=1e-6, atol=1e-7)
    y32 = to_np(Activation(name)(x.astype(np.float32)))
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, REFERENCE_ACTIVATIONS[name](x.astype(np.float32).astype(np.float64)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
@pytest.mark.parametrize("shape", [(3, 4), (2, 2, 2, 3)])
def test_activation_layer_gradients(name, shape):
    if name == "glu" and shape[-1] % 2:
        pytest.skip("glu halves the last axis")
    rng = np.random.default_rng(8)
    x = away_from_kinks(rng, shape, low=-4.0, high=4.0 if name == "exponential" else 7.0)
    dx, grads = check_layer_gradients(Activation(name, dtype="float64"), x)
    assert grads == {}


def test_activation_layer_accepts_callables_and_has_no_weights():
    layer = Activation(lambda x: 2 * x)
    y, backward = forward(layer, np.ones((1, 2), np.float32))
    np.testing.assert_array_equal(y, [[2.0, 2.0]])
    np.testing.assert_array_equal(to_np(backward(np.ones((1, 2), np.float32))), [[2.0, 2.0]])  # no derivative by hand
    assert layer.weights == [] and layer.get_weights() == []
    # A callable that leaves the tensors for plain arrays cannot be trained: refused while recording.
    opaque = Activation(lambda x: np.where(np.asarray(x) > 0, np.asarray(x), 0.0).astype(np.float32))
    with pytest.raises(TypeError, match=r"no gradient can flow"):
        forward(opaque, np.ones((1, 2), np.float32))
    np.testing.assert_array_equal(to_np(opaque(np.array([[-1.0, 2.0]], np.float32))), [[0.0, 2.0]])
    with pytest.raises(ValueError, match=r"activation.*'sigmoidd'"):
        Activation("sigmoidd")
    with pytest.raises(TypeError, match=r"activation"):
        Activation()
    with pytest.raises(TypeError, match=r"activation.*3"):
        Activation(3)
    np.testing.assert_array_equal(to_np(Activation(None)(np.array([[-1.0, 2.0]]))), [[-1.0, 2.0]])


def test_activation_relu_example():
    y = to_np(Activation("relu")(np.array([[-1.0, 2.0]])))
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, [[0.0, 2.0]])


# ---------------------------------------------------------------- InputLayer / Input


def test_input_returns_a_keras_tensor():
    t = Input(shape=(4, 5))
    assert isinstance(t, KerasTensor)
    assert t.shape == (None, 4, 5) and t.ndim == 3
    assert t.dtype == config.floatx()
    t = Input((3,), batch_size=2, dtype="float64", name="features")
    assert t.shape == (2, 3) and t.dtype == "float64" and t.name == "features"
    assert Input(batch_shape=(None, 7)).shape == (None, 7)
    assert Input(shape=(None, 3)).shape == (None, None, 3)


def test_input_layer_passes_inputs_through_and_checks_them():
    layer = InputLayer(shape=(2, 3))
    assert layer.built and layer.weights == []
    assert layer.output_shape == (None, 2, 3)
    x = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    y, backward = forward(layer, x)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(to_np(backward(np.ones_like(x))), np.ones_like(x))
    with pytest.raises(ValueError, match=r"inputs\.shape=\(2, 3, 2\)"):
        layer(np.zeros((2, 3, 2), np.float32))
    with pytest.raises(ValueError, match=r"inputs\.shape=\(2, 6\)"):
        layer(np.zeros((2, 6), np.float32))
    # A fixed batch size is not enforced (Keras checks a model's inputs without the batch axis).
    fixed = InputLayer(batch_shape=(4, 3))
    assert to_np(fixed(np.zeros((2, 3), np.float32))).shape == (2, 3)
    with pytest.raises(ValueError, match=r"inputs\.shape=\(4, 2\)"):
        fixed(np.zeros((4, 2), np.float32))


def test_a_fixed_batch_size_takes_the_last_partial_batch():
    # Keras 3.15.1 fits Input(batch_size=4) on 8 training rows and 2 validation rows.
    import gpulayers

    for model in (gpulayers.Sequential([Input((3,), batch_size=4), Dense(1)]),
                  gpulayers.Model(*(lambda x: (x, Dense(1)(x)))(Input((3,), batch_size=4)))):
        model.compile(optimizer="sgd", loss="mse")
        history = model.fit(np.ones((10, 3)), np.ones((10, 1)), batch_size=4, validation_split=0.2, verbose=0)
        assert sorted(history.history) == ["loss", "val_loss"]
        assert to_np(model(np.ones((2, 3), np.float32))).shape == (2, 1)
        with pytest.raises(ValueError, match="incompatible"):
            model(np.ones((2, 5), np.float32))


@pytest.mark.parametrize(
    "kwargs,error,pattern",
    [
        (dict(), ValueError, r"shape"),
        (dict(shape=(3,), batch_shape=(None, 3)), ValueError, r"shape.*batch_shape"),
        (dict(shape=(3,), sparse=True), ValueError, r"sparse.*True"),
        (dict(shape=(-1, 3)), ValueError, r"shape.*-1"),
        (dict(shape=(2.5,)), ValueError, r"shape.*2\.5"),
        (dict(shape=3), TypeError, r"shape.*3"),
        (dict(shape=(3,), batch_size=0), ValueError, r"batch_size.*0"),
        (dict(batch_shape=()), ValueError, r"batch_shape"),
        (dict(shape=(3,), dtype="complex64"), ValueError, r"dtype.*complex64"),  # int and bool dtypes are accepted
        (dict(shape=(3,), unknown_arg=1), TypeError, r"unknown_arg"),
    ],
)
def test_input_bad_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        InputLayer(**kwargs)
    with pytest.raises(error, match=pattern):
        Input(**kwargs)


def test_input_integer_and_bool_dtypes():
    # As keras.Input: indices for an Embedding come in as int32, masks as bool; data is cast to the dtype.
    for dtype in ("int32", "int64", "uint8", "bool"):
        x = Input(shape=(3,), dtype=dtype)
        assert x.dtype == dtype
        assert x._keras_history[0].get_config()["dtype"] == dtype
    layer = InputLayer(shape=(3,), dtype="int32")
    assert layer(np.array([[1.0, 2.0, 3.0]])).dtype == "int32"


def test_input_layer_legacy_keras2_arguments():
    with pytest.warns(UserWarning, match="`input_shape` is deprecated. Use `shape` instead"):  # as Keras
        assert InputLayer(input_shape=(3,)).batch_shape == (None, 3)
    assert InputLayer(batch_input_shape=(2, 3)).batch_shape == (2, 3)


def test_input_layer_attributes_and_call_as_keras():
    layer = InputLayer(shape=(32,))
    assert (layer.sparse, layer.ragged, layer.optional) == (False, False, False)
    assert layer.call() is None


def test_input_layer_takes_keras_3_arguments_and_refuses_what_it_cannot_do():
    layer = InputLayer(shape=(3,), ragged=False, optional=False, sparse=False)
    assert layer.get_config() == {
        "batch_shape": (None, 3),
        "dtype": "float32",
        "sparse": False,
        "ragged": False,
        "name": layer.name,
        "optional": False,
    }
    for arg in ("sparse", "ragged", "optional"):
        with pytest.raises(ValueError, match=f"`{arg}`.*{arg}=True"):
            InputLayer(shape=(3,), **{arg: True})
    with pytest.raises(ValueError, match="input_tensor"):
        InputLayer(shape=(3,), input_tensor=np.zeros((1, 3)))


def test_activation_set_to_none_after_construction_is_linear():
    # Keras's layers check `activation is not None` at call time.
    from gpulayers.layers import Conv2D

    x = np.random.default_rng(8).standard_normal((2, 3)).astype(np.float32)
    layer = Dense(4, activation="relu", bias_initializer="ones")
    layer(x)
    layer.activation = None
    kernel, bias = layer.get_weights()
    np.testing.assert_allclose(to_np(layer(x)), x @ kernel + bias, rtol=1e-6)
    conv = Conv2D(2, 1, activation="sigmoid")
    conv.activation = None
    assert to_np(conv(np.ones((1, 2, 2, 1), np.float32))).shape == (1, 2, 2, 2)


def test_input_layer_and_input_shape_arguments_as_keras():
    # Keras 3.15.1: batch_size with batch_shape is a ValueError; input_shape on a layer warns (any layer).
    with pytest.raises(ValueError, match="both `batch_size` and `batch_shape`"):
        InputLayer(batch_size=2, batch_shape=(3, 4))
    with pytest.warns(UserWarning, match="Do not pass an `input_shape`/`input_dim` argument to a layer"):
        Dense(2, input_shape=(3,))
    with pytest.warns(UserWarning, match="input_dim"):
        Dense(2, input_dim=3)
