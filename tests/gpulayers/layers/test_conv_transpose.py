"""Conv2DTranspose: numerics against a float64 scatter reference, Keras's output sizes, gradients, weights,
config and errors, and parity with Keras where it imports."""

import os

import numpy as np
import pytest

from gpulayers import layers as gl
from gpulayers.layers import Conv2D, Conv2DTranspose, Convolution2DTranspose
from helpers import check_layer_gradients, to_np

# ---------------------------------------------------------------- references


def keras_length(n, k, s, d, padding, output_padding):
    """Keras's documented output length of a transposed convolution along one axis."""
    span = (k - 1) * d + 1
    if padding == "valid":
        return (n - 1) * s + (max(span, s) if output_padding is None else span + output_padding)
    return n * s if output_padding is None else (n - 1) * s + span % 2 + output_padding


def keras_offset(k, s, d, padding, output_padding):
    """Where input pixel 0's kernel tap 0 lands (minus): TF's 'same' cropping of the full scatter."""
    span = (k - 1) * d + 1
    if padding == "valid":
        return 0
    total = s + span - 2 if output_padding is None else span + span % 2 - 2 + output_padding
    return span - 1 - min(total // 2 + total % 2, span - 1)


def ref_conv_transpose(x, kernel, bias, strides, padding, output_padding, dilation, data_format):
    """Float64 scatter: input pixel (i, j) adds x[i, j] @ kernel[a, b].T at output (i*s + a*d - off, ...)."""
    x = np.asarray(x, np.float64)
    if data_format == "channels_first":
        x = x.transpose(0, 2, 3, 1)
    n, h, w, c = x.shape
    kh, kw, f, cin = kernel.shape
    assert cin == c
    ops_ = (None, None) if output_padding is None else output_padding
    oh = keras_length(h, kh, strides[0], dilation[0], padding, ops_[0])
    ow = keras_length(w, kw, strides[1], dilation[1], padding, ops_[1])
    top = keras_offset(kh, strides[0], dilation[0], padding, ops_[0])
    left = keras_offset(kw, strides[1], dilation[1], padding, ops_[1])
    out = np.zeros((n, oh, ow, f))
    for i in range(h):
        for j in range(w):
            for a in range(kh):
                for b in range(kw):
                    r = i * strides[0] + a * dilation[0] - top
                    q = j * strides[1] + b * dilation[1] - left
                    if 0 <= r < oh and 0 <= q < ow:
                        out[:, r, q] += x[:, i, j] @ kernel[a, b].T
    if bias is not None:
        out += bias
    return out.transpose(0, 3, 1, 2) if data_format == "channels_first" else out


def random_weights(layer, rng):
    layer.set_weights([rng.standard_normal(w.shape) for w in layer.get_weights()])


CASES = [
    # kernel, strides, padding, output_padding, dilation, (h, w)
    ((3, 3), (1, 1), "valid", None, (1, 1), (4, 5)),
    ((3, 2), (2, 2), "valid", None, (1, 1), (3, 4)),
    ((2, 3), (3, 2), "valid", (2, 1), (1, 1), (3, 3)),
    ((3, 3), (2, 2), "same", None, (1, 1), (5, 4)),
    ((4, 3), (2, 3), "same", (1, 2), (1, 1), (3, 2)),
    ((3, 3), (1, 1), "same", None, (2, 1), (5, 6)),
    ((2, 2), (1, 1), "valid", None, (2, 3), (4, 3)),
    ((1, 1), (3, 2), "valid", None, (1, 1), (2, 3)),
    ((5, 4), (1, 2), "same", (0, 1), (1, 1), (1, 3)),
]


@pytest.mark.parametrize("kernel,strides,padding,output_padding,dilation,hw", CASES)
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_forward_matches_scatter_reference(kernel, strides, padding, output_padding, dilation, hw, data_format):
    rng = np.random.default_rng(0)
    layer = Conv2DTranspose(4, kernel, strides, padding, output_padding, data_format, dilation, dtype="float64")
    x = rng.standard_normal((2, *hw, 3) if data_format == "channels_last" else (2, 3, *hw))
    layer.build_from_shape(x.shape)
    random_weights(layer, rng)
    kernel_w, bias = layer.get_weights()
    y = to_np(layer(x))
    expected = ref_conv_transpose(x, kernel_w, bias, strides, padding, output_padding, dilation, data_format)
    assert y.shape == expected.shape == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_output_sizes_follow_keras_formula():
    layer = Conv2DTranspose(8, 3, strides=2, padding="same")
    assert layer.compute_output_shape((None, 16, 16, 3)) == (None, 32, 32, 8)
    assert layer.compute_output_shape((None, None, 7, 3)) == (None, None, 14, 8)
    assert Conv2DTranspose(2, 3, strides=2).compute_output_shape((1, 5, 5, 1)) == (1, 11, 11, 2)
    assert Conv2DTranspose(2, 2, strides=3).compute_output_shape((1, 5, 5, 1)) == (1, 15, 15, 2)  # max(span, s)
    assert Conv2DTranspose(2, 3, strides=2, output_padding=1).compute_output_shape((1, 5, 5, 1)) == (1, 12, 12, 2)
    assert Conv2DTranspose(2, 4, 2, "same", output_padding=1).compute_output_shape((1, 5, 5, 1)) == (1, 9, 9, 2)
    cf = Conv2DTranspose(2, 3, 2, "same", data_format="channels_first")
    assert cf.compute_output_shape((None, 3, 4, 5)) == (None, 2, 8, 10)
    assert to_np(cf(np.ones((1, 3, 4, 5), np.float32))).shape == (1, 2, 8, 10)


def test_weights_in_keras_layout_and_order():
    layer = Conv2DTranspose(5, (2, 3), use_bias=True)
    layer.build_from_shape((None, 4, 4, 3))
    assert [v.name for v in layer.weights] == ["kernel", "bias"]
    assert [tuple(v.shape) for v in layer.weights] == [(2, 3, 5, 3), (5,)]
    no_bias = Conv2DTranspose(5, 2, use_bias=False, data_format="channels_first")
    no_bias.build_from_shape((None, 3, 4, 4))
    assert [tuple(v.shape) for v in no_bias.weights] == [(2, 2, 5, 3)]
    assert Convolution2DTranspose is Conv2DTranspose
    assert gl.LAYER_CLASSES["Conv2DTranspose"] is gl.LAYER_CLASSES["Convolution2DTranspose"] is Conv2DTranspose


def test_activation_and_float32():
    rng = np.random.default_rng(1)
    layer = Conv2DTranspose(3, 3, strides=2, activation="relu")
    x = rng.standard_normal((2, 3, 3, 2)).astype(np.float32)
    y = to_np(layer(x))
    assert y.dtype == np.float32 and y.shape == (2, 7, 7, 3)
    kernel, bias = layer.get_weights()
    expected = np.maximum(ref_conv_transpose(x, kernel, bias, (2, 2), "valid", None, (1, 1), "channels_last"), 0)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kernel_size=3, strides=2),
        dict(kernel_size=(2, 3), strides=(2, 1), padding="same", output_padding=(1, 0)),
        dict(kernel_size=2, dilation_rate=(2, 1), padding="same"),
        dict(kernel_size=3, strides=3, output_padding=2, kernel_regularizer="l2", bias_regularizer="l1",
             activity_regularizer="l2"),
        dict(kernel_size=2, activation="tanh", use_bias=False),
    ],
)
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_gradients_match_finite_differences(kwargs, data_format):
    rng = np.random.default_rng(2)
    layer = Conv2DTranspose(2, data_format=data_format, dtype="float64", **kwargs)
    x = rng.standard_normal((2, 3, 2, 2) if data_format == "channels_last" else (2, 2, 3, 2))
    layer.build_from_shape(x.shape)
    random_weights(layer, rng)
    dx, grads = check_layer_gradients(layer, x)
    assert dx.shape == x.shape and set(grads) == {v.name for v in layer.trainable_weights}


def test_inverts_conv2d_shapes_in_an_encoder_decoder():
    x = np.zeros((2, 9, 9, 3), np.float32)
    down = Conv2D(4, 3, strides=2, padding="same")
    up = Conv2DTranspose(3, 3, strides=2, padding="same", output_padding=0)
    assert to_np(up(down(x))).shape == (2, 9, 9, 3)  # (5 - 1) * 2 + 1 + 0


@pytest.mark.parametrize(
    "kwargs,error,pattern",
    [
        (dict(filters=0), ValueError, r"filters.*0"),
        (dict(filters=2.0), ValueError, r"filters.*2\.0"),
        (dict(kernel_size=(3, 0)), ValueError, r"kernel_size.*\(3, 0\)"),
        (dict(kernel_size=(3, 3, 3)), ValueError, r"kernel_size"),
        (dict(strides=0), ValueError, r"strides.*0"),
        (dict(padding="full"), ValueError, r"padding.*'full'"),
        (dict(output_padding=-1), ValueError, r"output_padding.*-1"),
        (dict(strides=2, output_padding=2), ValueError, r"`output_padding` must be strictly less than `strides`"),
        (dict(output_padding=(0, 1)), ValueError, r"output_padding.*\(0, 1\).*strides=\(1, 1\)"),
        (dict(strides=2, dilation_rate=2), ValueError, r"`strides > 1` not supported in conjunction with `dilation"),
        (dict(data_format="nchw"), ValueError, r"data_format.*'nchw'"),
        (dict(activation="nope"), ValueError, r"activation.*'nope'"),
        (dict(use_bias="yes"), TypeError, r"use_bias.*'yes'"),
        (dict(groups=2), TypeError, r"groups"),  # not an argument of Keras's Conv2DTranspose
    ],
)
def test_bad_arguments_are_refused(kwargs, error, pattern):
    args = dict(filters=2, kernel_size=3)
    args.update(kwargs)
    with pytest.raises(error, match=pattern):
        Conv2DTranspose(**args)


def test_wrong_inputs_are_refused_and_leave_the_layer_unchanged():
    layer = Conv2DTranspose(2, 3)
    with pytest.raises(ValueError, match=r"expected ndim=4, found ndim=3"):
        layer(np.ones((2, 4, 4), np.float32))
    assert not layer.built and layer.weights == []
    layer(np.ones((1, 4, 4, 3), np.float32))
    before = [w.copy() for w in layer.get_weights()]
    with pytest.raises(ValueError, match=r"expected axis -1|expected axis 3"):
        layer(np.ones((1, 4, 4, 2), np.float32))
    for a, b in zip(before, layer.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_config_round_trip():
    layer = Conv2DTranspose(4, (2, 3), strides=2, padding="same", output_padding=(1, 0), name="up",
                            kernel_regularizer="l2")
    config = layer.get_config()
    assert config["output_padding"] == (1, 0) and "groups" not in config
    clone = Conv2DTranspose.from_config(config)
    assert clone.get_config() == config
    assert gl.deserialize(gl.serialize(layer)).get_config() == config


# ---------------------------------------------------------------- Keras parity


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    return pytest.importorskip("keras")


PARITY = [
    dict(filters=4, kernel_size=3, strides=2, padding="same"),
    dict(filters=3, kernel_size=(2, 3), strides=(3, 2), output_padding=(1, 1), activation="relu"),
    dict(filters=2, kernel_size=4, strides=2, padding="same", output_padding=1),
    dict(filters=2, kernel_size=3, dilation_rate=(2, 1), use_bias=False),
]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("kwargs", PARITY)
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_matches_keras(kwargs, data_format):
    keras = _keras()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 4, 3) if data_format == "channels_last" else (2, 3, 5, 4)).astype(np.float32)
    theirs = keras.layers.Conv2DTranspose(data_format=data_format, name="ct", **kwargs)
    ours = Conv2DTranspose(data_format=data_format, name="ct", **kwargs)
    theirs.build(x.shape)
    ours.build_from_shape(x.shape)
    weights = [rng.standard_normal(tuple(w.shape)).astype(np.float32) for w in theirs.weights]
    theirs.set_weights(weights)
    ours.set_weights(weights)
    expected = keras.ops.convert_to_numpy(theirs(x))
    np.testing.assert_allclose(to_np(ours(x)), expected, rtol=1e-5, atol=1e-5)
    assert ours.compute_output_shape((None,) + x.shape[1:]) == tuple(theirs.compute_output_shape((None,) + x.shape[1:]))
    assert ours.get_config() == theirs.get_config()
    clone = Conv2DTranspose.from_config(theirs.get_config())
    assert clone.get_config() == theirs.get_config()
