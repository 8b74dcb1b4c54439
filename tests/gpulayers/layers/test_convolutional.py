"""Conv2D: numerics against a plain float64 loop reference, gradients, shapes, argument checks."""

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gpulayers import regularizers
from gpulayers.layers import Conv2D, Convolution2D
from helpers import forward, check_layer_gradients, keras_or_skip, numeric_grad, to_np

# ---------------------------------------------------------------- references (plain loops)


def keras_out_len(n, k, s, d, padding):
    """Keras's output length: 'same' -> ceil(n / s); 'valid' -> floor((n - span) / s) + 1."""
    span = (k - 1) * d + 1
    if padding == "same":
        return math.ceil(n / s)
    return (n - span) // s + 1


def pad_before(n, k, s, d, padding):
    """Keras/TF 'same' padding: the smaller half before, the extra pixel after (bottom/right)."""
    if padding == "valid":
        return 0
    out = math.ceil(n / s)
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2


def ref_conv2d(x, kernel, bias, strides, padding, dilation, data_format, activation=None):
    x = np.asarray(x, dtype=np.float64)
    kernel = np.asarray(kernel, dtype=np.float64)
    if data_format == "channels_first":
        x = x.transpose(0, 2, 3, 1)
    n, h, w, c = x.shape
    kh, kw, cin, f = kernel.shape
    assert cin == c
    (sh, sw), (dh, dw) = strides, dilation
    oh, ow = keras_out_len(h, kh, sh, dh, padding), keras_out_len(w, kw, sw, dw, padding)
    top, left = pad_before(h, kh, sh, dh, padding), pad_before(w, kw, sw, dw, padding)
    out = np.zeros((n, oh, ow, f))
    for i in range(oh):
        for j in range(ow):
            for a in range(kh):
                for b in range(kw):
                    r = i * sh - top + a * dh
                    q = j * sw - left + b * dw
                    if 0 <= r < h and 0 <= q < w:
                        for ci in range(c):
                            out[:, i, j, :] += x[:, r, q, ci : ci + 1] * kernel[a, b, ci][None, :]
    if bias is not None:
        out += np.asarray(bias, dtype=np.float64)
    if data_format == "channels_first":
        out = out.transpose(0, 3, 1, 2)
    # Keras applies the activation to the layer's output as laid out (softmax on axis -1 even
    # for channels_first).
    if activation == "relu":
        out = np.maximum(out, 0)
    elif activation == "tanh":
        out = np.tanh(out)
    elif activation == "softmax":
        e = np.exp(out - out.max(axis=-1, keepdims=True))
        out = e / e.sum(axis=-1, keepdims=True)
    return out


def make_input(rng, n, h, w, c, data_format):
    shape = (n, h, w, c) if data_format == "channels_last" else (n, c, h, w)
    return rng.standard_normal(shape)


def random_weights(layer, rng):
    layer.set_weights([rng.standard_normal(w.shape) for w in layer.get_weights()])


# ---------------------------------------------------------------- forward numerics

CASES = [
    # kernel, strides, padding, dilation, (h, w)
    ((3, 3), (1, 1), "valid", (1, 1), (6, 7)),
    ((3, 3), (1, 1), "same", (1, 1), (5, 5)),
    ((2, 2), (1, 1), "same", (1, 1), (4, 5)),  # even kernel: extra pad bottom/right
    ((3, 2), (2, 2), "valid", (1, 1), (7, 6)),  # non-square kernel, strides
    ((2, 3), (2, 1), "same", (1, 1), (7, 5)),
    ((3, 3), (2, 2), "same", (1, 1), (6, 6)),
    ((3, 3), (3, 2), "same", (1, 1), (7, 8)),
    ((4, 4), (2, 3), "same", (1, 1), (5, 7)),
    ((3, 3), (1, 1), "valid", (2, 2), (7, 7)),  # dilation
    ((2, 3), (1, 1), "same", (2, 1), (6, 5)),
    ((3, 2), (1, 1), "same", (1, 3), (5, 8)),
    ((1, 1), (2, 2), "valid", (1, 1), (5, 4)),
    ((5, 5), (1, 1), "same", (1, 1), (3, 3)),  # kernel larger than the input with 'same'
]


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("kernel,strides,padding,dilation,hw", CASES)
def test_forward_matches_loop_reference(kernel, strides, padding, dilation, hw, data_format):
    rng = np.random.default_rng(hash((kernel, strides, padding, dilation, hw)) % 2**32)
    x = make_input(rng, 2, hw[0], hw[1], 3, data_format).astype(np.float32)
    layer = Conv2D(4, kernel, strides=strides, padding=padding, dilation_rate=dilation, data_format=data_format)
    layer.build_from_shape(x.shape)
    random_weights(layer, rng)
    k, b = layer.get_weights()
    y = to_np(layer(x))
    ref = ref_conv2d(x, k, b, strides, padding, dilation, data_format)
    assert y.dtype == np.float32
    assert y.shape == ref.shape == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("activation", ["relu", "tanh", "softmax"])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_forward_bias_and_activation(activation, use_bias, data_format):
    rng = np.random.default_rng(3)
    x = make_input(rng, 2, 5, 6, 2, data_format).astype(np.float32)
    layer = Conv2D(3, (2, 3), padding="same", activation=activation, use_bias=use_bias, data_format=data_format)
    layer.build_from_shape(x.shape)
    random_weights(layer, rng)
    weights = layer.get_weights()
    assert len(weights) == (2 if use_bias else 1)
    bias = weights[1] if use_bias else None
    ref = ref_conv2d(x, weights[0], bias, (1, 1), "same", (1, 1), data_format, activation)
    np.testing.assert_allclose(to_np(layer(x)), ref, rtol=1e-5, atol=1e-5)


def test_same_padding_puts_the_extra_pixel_bottom_right():
    # 3x3 input, 2x2 ones kernel, 'same': total pad 1 per axis, all of it after.
    x = np.arange(1.0, 10.0).reshape(1, 3, 3, 1)
    layer = Conv2D(1, 2, padding="same", use_bias=False, kernel_initializer="ones", data_format="channels_last")
    y = to_np(layer(x))[0, :, :, 0]
    expected = np.array([[1 + 2 + 4 + 5, 2 + 3 + 5 + 6, 3 + 6], [4 + 5 + 7 + 8, 5 + 6 + 8 + 9, 6 + 9], [7 + 8, 8 + 9, 9]])
    np.testing.assert_array_equal(y, expected)


def test_same_padding_with_stride_gives_ceil_and_pads_after():
    # 4x4 input, 3x3 ones kernel, stride 2, 'same': out 2, total pad (2-1)*2+3-4 = 1, all of it after.
    x = np.arange(16.0).reshape(1, 4, 4, 1)
    layer = Conv2D(1, 3, strides=2, padding="same", use_bias=False, kernel_initializer="ones", data_format="channels_last")
    y = to_np(layer(x))[0, :, :, 0]
    xs = x[0, :, :, 0]
    expected = np.array([[xs[0:3, 0:3].sum(), xs[0:3, 2:4].sum()], [xs[2:4, 0:3].sum(), xs[2:4, 2:4].sum()]])
    np.testing.assert_array_equal(y, expected)


def test_weights_in_keras_layout():
    layer = Conv2D(5, (2, 3), data_format="channels_first")
    layer(np.zeros((1, 4, 6, 6), dtype=np.float32))
    assert [w.name for w in layer.weights] == ["kernel", "bias"]
    assert layer.kernel.shape == (2, 3, 4, 5)
    assert layer.bias.shape == (5,)
    assert layer.count_params() == 2 * 3 * 4 * 5 + 5
    layer2 = Conv2D(5, 3, use_bias=False, data_format="channels_last")
    layer2(np.zeros((1, 6, 6, 2)))
    assert [w.shape for w in layer2.get_weights()] == [(3, 3, 2, 5)]


def test_default_arguments_like_keras():
    layer = Conv2D(2, 3)
    assert layer.strides == (1, 1)
    assert layer.dilation_rate == (1, 1)
    assert layer.padding == "valid"
    assert layer.kernel_size == (3, 3)
    assert layer.use_bias is True
    assert Convolution2D is Conv2D
    assert Conv2D(2, 3, padding="SAME").padding == "same"


def test_float64_layer_computes_in_float64():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 5, 5, 2))
    layer = Conv2D(2, 3, dtype="float64", data_format="channels_last")
    layer.build_from_shape(x.shape)
    random_weights(layer, rng)
    y = to_np(layer(x))
    assert y.dtype == np.float64
    k, b = layer.get_weights()
    np.testing.assert_allclose(y, ref_conv2d(x, k, b, (1, 1), "valid", (1, 1), "channels_last"), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- gradients

GRAD_CASES = [
    dict(kernel_size=3, strides=1, padding="valid"),
    dict(kernel_size=3, strides=1, padding="same"),
    dict(kernel_size=(2, 3), strides=2, padding="same"),
    dict(kernel_size=(3, 2), strides=(2, 1), padding="valid"),
    dict(kernel_size=2, strides=1, padding="same", dilation_rate=2),
    dict(kernel_size=(2, 2), strides=1, padding="valid", dilation_rate=(1, 2)),
    dict(kernel_size=3, padding="same", activation="tanh"),
    dict(kernel_size=2, padding="valid", activation="softmax"),
    dict(kernel_size=3, padding="same", use_bias=False),
    dict(
        kernel_size=2,
        strides=2,
        padding="same",
        kernel_regularizer=regularizers.L2(0.05),
        bias_regularizer=regularizers.L1(0.01),
        activity_regularizer=regularizers.L1(0.02),
    ),
]


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("kwargs", GRAD_CASES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items())[:60])
def test_gradients_match_finite_differences(kwargs, data_format):
    rng = np.random.default_rng(7)
    x = make_input(rng, 2, 5, 4, 2, data_format)
    layer = Conv2D(2, data_format=data_format, dtype="float64", **kwargs)
    layer.build_from_shape(x.shape)
    random_weights(layer, rng)
    dx, grads = check_layer_gradients(layer, x)
    assert dx.shape == x.shape
    assert set(grads) == ({"kernel", "bias"} if layer.use_bias else {"kernel"})


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_relu_gradient_away_from_kinks(data_format):
    rng = np.random.default_rng(11)
    x = make_input(rng, 1, 4, 4, 2, data_format)
    layer = Conv2D(3, 2, padding="same", activation="relu", data_format=data_format, dtype="float64")
    layer.build_from_shape(x.shape)
    random_weights(layer, rng)
    # Make sure no pre-activation lies near 0, where the finite difference is invalid.
    z = ref_conv2d(x, *layer.get_weights(), (1, 1), "same", (1, 1), data_format)
    assert np.min(np.abs(z)) > 1e-4
    assert (z > 0).any() and (z < 0).any()
    check_layer_gradients(layer, x)


def test_regularizer_losses_and_gradients_are_included():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 4, 4, 2))
    layer = Conv2D(
        2, 2, dtype="float64", data_format="channels_last",
        kernel_regularizer=regularizers.L2(0.1), activity_regularizer=regularizers.L1(0.05),
    )
    layer.build_from_shape(x.shape)
    random_weights(layer, rng)
    y = to_np(layer(x))
    k = layer.get_weights()[0]
    losses = [float(to_np(v)) for v in layer.losses]
    assert len(losses) == 2
    # The activity penalty is per sample (Keras 3.14+): divided by the batch size.
    np.testing.assert_allclose(sorted(losses), sorted([0.05 * np.abs(y).sum() / 2, 0.1 * (k**2).sum()]), rtol=1e-10)
    check_layer_gradients(layer, x)


def test_trainable_false_gives_input_gradient_only():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 4, 4, 1))
    layer = Conv2D(2, 2, dtype="float64", data_format="channels_last")
    layer.build_from_shape(x.shape)
    layer.trainable = False
    assert layer.trainable_weights == []
    dx, grads = check_layer_gradients(layer, x)
    assert grads == {}
    assert not layer.kernel.trainable and not layer.bias.trainable  # so the tape computes no kernel gradient


# ---------------------------------------------------------------- properties (hypothesis)


@st.composite
def conv_args(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dilated = draw(st.booleans())
    if dilated:
        strides, dilation = (1, 1), (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    else:
        strides, dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3))), (1, 1)
    padding = draw(st.sampled_from(["valid", "same"]))
    data_format = draw(st.sampled_from(["channels_last", "channels_first"]))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    return dict(kernel=(kh, kw), strides=strides, dilation=dilation, padding=padding, data_format=data_format, hw=(h, w))


def valid_for(args):
    (h, w), (kh, kw) = args["hw"], args["kernel"]
    (sh, sw), (dh, dw) = args["strides"], args["dilation"]
    return keras_out_len(h, kh, sh, dh, args["padding"]) > 0 and keras_out_len(w, kw, sw, dw, args["padding"]) > 0


@settings(max_examples=40, deadline=None)
@given(conv_args(), st.integers(1, 3), st.integers(1, 3))
def test_property_output_shape_and_keras_formula(args, channels, filters):
    layer = Conv2D(
        filters, args["kernel"], strides=args["strides"], padding=args["padding"],
        dilation_rate=args["dilation"], data_format=args["data_format"],
    )
    h, w = args["hw"]
    x = np.ones((2, h, w, channels) if args["data_format"] == "channels_last" else (2, channels, h, w), np.float32)
    if not valid_for(args):
        with pytest.raises(ValueError, match="Computed output size would be zero or negative"):
            layer(x)
        assert not layer.built and layer.weights == []
        return
    oh = keras_out_len(h, args["kernel"][0], args["strides"][0], args["dilation"][0], args["padding"])
    ow = keras_out_len(w, args["kernel"][1], args["strides"][1], args["dilation"][1], args["padding"])
    expected = (2, oh, ow, filters) if args["data_format"] == "channels_last" else (2, filters, oh, ow)
    assert layer.compute_output_shape(x.shape) == expected
    assert layer.compute_output_shape((None,) + x.shape[1:]) == (None,) + expected[1:]
    y = to_np(layer(x))
    assert y.shape == expected
    assert layer.output_shape == (None,) + expected[1:]


@settings(max_examples=30, deadline=None)
@given(conv_args(), st.integers(1, 2), st.integers(1, 2), st.integers(0, 2**31 - 1))
def test_property_gradient_of_sum(args, channels, filters, seed):
    assume(valid_for(args))
    rng = np.random.default_rng(seed)
    layer = Conv2D(
        filters, args["kernel"], strides=args["strides"], padding=args["padding"],
        dilation_rate=args["dilation"], data_format=args["data_format"], dtype="float64",
    )
    x = make_input(rng, 1, args["hw"][0], args["hw"][1], channels, args["data_format"])
    layer.build_from_shape(x.shape)
    random_weights(layer, rng)
    y, backward = forward(layer, x)
    np.testing.assert_allclose(
        y, ref_conv2d(x, *layer.get_weights(), args["strides"], args["padding"], args["dilation"], args["data_format"]),
        rtol=1e-10, atol=1e-10,
    )
    dx = to_np(backward(np.ones_like(y)))
    kgrad = backward.grads["kernel"]
    num_dx = numeric_grad(lambda: float(to_np(layer(x)).sum()), x)
    np.testing.assert_allclose(dx, num_dx, rtol=1e-6, atol=1e-7)
    host = layer.get_weights()
    kernel = host[0]

    def with_kernel():
        layer.set_weights([kernel] + host[1:])
        return float(to_np(layer(x)).sum())

    np.testing.assert_allclose(kgrad, numeric_grad(with_kernel, kernel), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- bad arguments and inputs


@pytest.mark.parametrize(
    "kwargs,error,pattern",
    [
        (dict(filters=0), ValueError, r"filters.*0"),
        (dict(filters=-2), ValueError, r"filters.*-2"),
        (dict(filters=2.5), ValueError, r"filters.*2\.5"),
        (dict(filters="4"), ValueError, r"filters.*'4'"),
        (dict(filters=True), ValueError, r"filters.*True"),
        (dict(kernel_size=(3, 3, 3)), ValueError, r"kernel_size.*\(3, 3, 3\)"),
        (dict(kernel_size=(3,)), ValueError, r"kernel_size.*\(3,\)"),
        (dict(kernel_size=0), ValueError, r"kernel_size.*0"),
        (dict(kernel_size=(0, 2)), ValueError, r"kernel_size.*\(0, 2\)"),
        (dict(kernel_size=(2.0, 2)), ValueError, r"kernel_size"),
        (dict(strides=0), ValueError, r"strides.*0"),
        (dict(strides=(1, 0)), ValueError, r"strides.*\(1, 0\)"),
        (dict(strides=(1, 1, 1)), ValueError, r"strides"),
        (dict(dilation_rate=0), ValueError, r"dilation_rate.*0"),
        (dict(strides=2, dilation_rate=2), ValueError, r"`strides > 1` not supported in conjunction with `dilation_rate > 1`"),
        (dict(strides=(1, 2), dilation_rate=(2, 1)), ValueError, r"dilation_rate=\(2, 1\)"),
        (dict(groups=3), ValueError, r"filters must be evenly divisible by the number of groups.*groups=3"),
        (dict(groups=0), ValueError, r"groups.*0"),
        (dict(padding="full"), ValueError, r"padding.*'full'"),
        (dict(padding="causal"), ValueError, r"padding.*'causal'"),
        (dict(padding=1), ValueError, r"padding.*1"),
        (dict(data_format="channels_middle"), ValueError, r"data_format.*'channels_middle'"),
        (dict(activation="relux"), ValueError, r"activation.*'relux'"),
        (dict(activation=3), TypeError, r"activation.*3"),
        (dict(kernel_initializer="glorot_unifrm"), ValueError, r"kernel_initializer.*'glorot_unifrm'"),
        (dict(bias_initializer="nope"), ValueError, r"bias_initializer.*'nope'"),
        (dict(kernel_regularizer="l3"), ValueError, r"kernel_regularizer.*'l3'"),
        (dict(use_bias="yes"), TypeError, r"use_bias.*'yes'"),
        (dict(dtype="int32"), ValueError, r"dtype.*int32"),
        (dict(filtres=3), TypeError, r"filtres"),
    ],
)
def test_bad_arguments_are_refused(kwargs, error, pattern):
    args = dict(filters=2, kernel_size=3)
    args.update(kwargs)
    with pytest.raises(error, match=pattern):
        Conv2D(**args)


# Keras 3.15's config for keras.layers.Conv2D(4, 3) (written by Keras 3.15.1).
KERAS_CONV2D_CONFIG = {
    "name": "conv2d", "trainable": True,
    "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None},
    "filters": 4, "kernel_size": (3, 3), "strides": (1, 1), "padding": "valid", "data_format": "channels_last",
    "dilation_rate": (1, 1), "groups": 1, "activation": "linear", "use_bias": True,
    "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform",
                           "config": {"seed": None, "input_axes": None, "output_axes": None}, "registered_name": None},
    "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": None},
    "kernel_regularizer": None, "bias_regularizer": None, "activity_regularizer": None,
    "kernel_constraint": None, "bias_constraint": None,
}


def test_takes_keras_3_lora_arguments_with_their_defaults():
    layer = Conv2D(4, 3, lora_rank=None, lora_alpha=None)
    assert layer.lora_rank is None and layer.lora_alpha is None and layer.lora_enabled is False
    config = layer.get_config()
    assert "lora_rank" not in config and "lora_alpha" not in config  # Keras writes them only with LoRA on
    assert "quantization_config" not in config  # Keras's Conv2D has none
    alpha = Conv2D(4, 3, lora_alpha=2.0, name="alpha")
    assert alpha.lora_alpha == 2.0 and alpha.get_config() == Conv2D(4, 3, name="alpha").get_config()


def test_config_is_keras_3_config():
    layer = Conv2D.from_config(dict(KERAS_CONV2D_CONFIG))
    assert layer.get_config() == KERAS_CONV2D_CONFIG
    assert Conv2D(4, 3, activity_regularizer="l2").get_config()["activity_regularizer"]["class_name"] == "L2"
    assert to_np(layer(np.ones((1, 5, 5, 2), np.float32))).shape == (1, 3, 3, 4)


@pytest.mark.parametrize(
    "kwargs,error,pattern",
    [
        (dict(lora_rank=2), ValueError, r"Invalid value for `lora_rank`: lora_rank is not supported.*lora_rank=2"),
        (dict(lora_rank=2, lora_alpha=4), ValueError, r"lora_rank is not supported.*lora_rank=2"),
        (dict(lora_alpha=[4]), TypeError, r"lora_alpha.*\[4\]"),
        (dict(quantization_config=None), TypeError, r"quantization_config"),  # not an argument of Keras's Conv2D
    ],
)
def test_lora_is_refused(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        Conv2D(4, 3, **kwargs)
    with pytest.raises(error, match=pattern):
        Conv2D.from_config({**KERAS_CONV2D_CONFIG, **kwargs})


def test_wrong_input_rank_is_refused():
    layer = Conv2D(2, 2, data_format="channels_last")
    with pytest.raises(ValueError, match=r"ndim=4.*ndim=3"):
        layer(np.zeros((4, 4, 3), np.float32))
    assert not layer.built
    layer(np.zeros((1, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"ndim=4.*ndim=5"):
        layer(np.zeros((1, 1, 4, 4, 3), np.float32))


@pytest.mark.parametrize(
    "kwargs,hw",
    [
        (dict(kernel_size=3), (2, 5)),
        (dict(kernel_size=(2, 4)), (5, 3)),
        (dict(kernel_size=3, dilation_rate=3), (6, 6)),  # span 7 > 6
    ],
)
def test_input_smaller_than_kernel_with_valid_padding(kwargs, hw):
    layer = Conv2D(2, data_format="channels_last", **kwargs)
    x = np.zeros((1,) + hw + (1,), np.float32)
    with pytest.raises(ValueError, match="Computed output size would be zero or negative"):
        layer(x)
    with pytest.raises(ValueError, match="Computed output size would be zero or negative"):
        layer.compute_output_shape(x.shape)
    assert not layer.built and layer.weights == []
    # 'same' accepts the same input.
    same = Conv2D(2, padding="same", data_format="channels_last", **kwargs)
    assert to_np(same(x)).shape == (1,) + hw + (2,)


@pytest.mark.parametrize("data_format,good,bad", [
    ("channels_last", (1, 5, 5, 3), (1, 5, 5, 4)),
    ("channels_first", (1, 3, 5, 5), (1, 4, 5, 5)),
])
def test_channel_mismatch_after_build_leaves_weights_unchanged(data_format, good, bad):
    layer = Conv2D(2, 3, data_format=data_format)
    layer(np.ones(good, np.float32))
    before = layer.get_weights()
    with pytest.raises(ValueError, match=r"inputs\.shape=\(1, " + str(bad[1])):
        layer(np.ones(bad, np.float32))
    # A spatial size too small for the built layer is refused too, with nothing changed.
    small = list(good)
    small[2 if data_format == "channels_last" else 3] = 2
    with pytest.raises(ValueError, match="Computed output size would be zero or negative"):
        layer(np.ones(small, np.float32))
    after = layer.get_weights()
    assert len(before) == len(after)
    for b, a in zip(before, after):
        np.testing.assert_array_equal(b, a)


def test_backward_dy_of_wrong_shape_is_refused():
    layer = Conv2D(2, 3, data_format="channels_last")
    y, backward = forward(layer, np.ones((1, 5, 5, 1), np.float32))
    with pytest.raises(ValueError, match=r"output_gradient"):
        backward(np.ones((1, 3, 3, 3), np.float32))
    assert to_np(backward(np.ones(y.shape, np.float32))).shape == (1, 5, 5, 1)


# ---------------------------------------------------------------- groups


def ref_grouped_conv2d(x, kernel, bias, groups, data_format, **geometry):
    """Each group's input channels convolved (by the loop reference) with its slice of the filters."""
    axis = 3 if data_format == "channels_last" else 1
    cin, cout = np.asarray(x).shape[axis] // groups, kernel.shape[-1] // groups
    outs = [ref_conv2d(np.take(x, range(g * cin, (g + 1) * cin), axis=axis), kernel[..., g * cout:(g + 1) * cout],
                       None, data_format=data_format, **geometry) for g in range(groups)]
    out = np.concatenate(outs, axis=axis)
    if bias is not None:
        out += np.asarray(bias).reshape([-1 if i == axis else 1 for i in range(4)])
    return out


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("groups, channels, filters", [(2, 4, 6), (3, 3, 3), (4, 8, 4)])
def test_grouped_convolution_matches_the_loop_reference_and_differentiates(groups, channels, filters, data_format):
    rng = np.random.default_rng(11)
    layer = Conv2D(filters, (3, 2), strides=(1, 2), padding="same", groups=groups, data_format=data_format,
                   dtype="float64")
    x = make_input(rng, 2, 5, 6, channels, data_format)
    layer(x)
    assert layer.kernel.shape == (3, 2, channels // groups, filters)  # Keras's kernel layout for groups
    random_weights(layer, rng)
    kernel, bias = layer.get_weights()
    want = ref_grouped_conv2d(x, kernel, bias, groups, data_format, strides=(1, 2), padding="same", dilation=(1, 1))
    np.testing.assert_allclose(to_np(layer(x)), want, rtol=1e-10, atol=1e-12)
    check_layer_gradients(layer, x)


def test_grouped_convolution_checks_the_input_channels():
    with pytest.raises(ValueError, match="input channels must be evenly divisible by the number of groups"):
        Conv2D(4, 3, groups=2)(np.ones((1, 5, 5, 3), np.float32))


def test_grouped_convolution_equals_keras():
    keras = keras_or_skip()
    import gpulayers

    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 7, 6, 4)).astype(np.float32)
    for ours, theirs, data in ((Conv2D(6, 3, groups=2, padding="same"), keras.layers.Conv2D(6, 3, groups=2, padding="same"), x),
                               (gpulayers.layers.Conv1D(4, 3, groups=4), keras.layers.Conv1D(4, 3, groups=4), x[:, 0])):
        ours(data)
        theirs(data)
        weights = [rng.standard_normal(w.shape).astype(np.float32) for w in ours.get_weights()]
        ours.set_weights(weights)
        theirs.set_weights(weights)
        np.testing.assert_allclose(to_np(ours(data)), keras.ops.convert_to_numpy(theirs(data)), rtol=1e-4, atol=1e-5)
