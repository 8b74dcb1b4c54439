"""Reshaping layers: Flatten (channels-last ordering, every rank), Reshape, Permute, RepeatVector, UpSampling2D
(nearest and bilinear; bicubic and lanczos in test_reshaping_spatial.py), ZeroPadding2D, Cropping2D: values against NumPy references, shapes, gradients, argument
checks, and parity with Keras where it imports."""

import os

import numpy as np
import pytest

from gpulayers import autodiff, layers as layers_module, ops
from gpulayers.layers import Cropping2D, Dense, Flatten, Permute, RepeatVector, Reshape, UpSampling2D, ZeroPadding2D
from helpers import check_layer_gradients, to_np


def test_channels_last_is_a_plain_reshape():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    layer = Flatten(data_format="channels_last")
    y = to_np(layer(x))
    assert y.shape == (2, 60) == layer.compute_output_shape(x.shape)
    np.testing.assert_array_equal(y, x.reshape(2, 60))


def test_channels_first_transposes_to_channels_last_order():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)  # (N, C, H, W)
    y = to_np(Flatten(data_format="channels_first")(x))
    np.testing.assert_array_equal(y, np.transpose(x, (0, 2, 3, 1)).reshape(2, -1))
    # Element by element: feature index (h * W + w) * C + c holds x[n, c, h, w].
    for c in range(3):
        for h in range(4):
            for w in range(5):
                assert y[1, (h * 5 + w) * 3 + c] == x[1, c, h, w]


def test_channels_first_matches_channels_last_model():
    # The same image in both layouts flattens to the same vector, so a following Dense's
    # weights are valid for either data format.
    rng = np.random.default_rng(0)
    nhwc = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    nchw = np.transpose(nhwc, (0, 3, 1, 2)).copy()
    np.testing.assert_array_equal(
        to_np(Flatten(data_format="channels_first")(nchw)), to_np(Flatten(data_format="channels_last")(nhwc))
    )


def test_channels_first_rank3_and_rank5():
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)  # (N, C, L)
    np.testing.assert_array_equal(to_np(Flatten(data_format="channels_first")(x)), x.transpose(0, 2, 1).reshape(2, -1))
    x = np.arange(2 * 2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 2, 3, 2, 2)
    np.testing.assert_array_equal(
        to_np(Flatten(data_format="channels_first")(x)), x.transpose(0, 2, 3, 4, 1).reshape(2, -1)
    )


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_rank2_and_rank1_inputs(data_format):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    layer = Flatten(data_format=data_format)
    np.testing.assert_array_equal(to_np(layer(x)), x)  # rank 2: unchanged, even for channels_first
    y = to_np(Flatten(data_format=data_format)(np.arange(3, dtype=np.float32)))
    np.testing.assert_array_equal(y, [[0.0], [1.0], [2.0]])  # (batch,) -> (batch, 1), as Keras


def test_output_shapes():
    layer = Flatten(data_format="channels_last")
    assert layer.compute_output_shape((None, 4, 5, 3)) == (None, 60)
    assert layer.compute_output_shape((2, None, 5, 3)) == (2, None)
    assert layer.compute_output_shape((7, 3)) == (7, 3)
    assert layer.compute_output_shape((7,)) == (7, 1)
    layer(np.zeros((2, 4, 5, 3), np.float32))
    assert layer.output_shape == (None, 60)
    y = to_np(Flatten(data_format="channels_first")(np.zeros((0, 3, 2, 2), np.float32)))
    assert y.shape == (0, 12)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("shape", [(1, 2, 3, 2, 2), (2, 3, 2, 4), (2, 3, 4), (3, 5)])
def test_gradients(data_format, shape):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    dx, grads = check_layer_gradients(Flatten(data_format=data_format, dtype="float64"), x)
    assert dx.shape == x.shape and grads == {}


def test_flatten_then_dense_backward_round_trip():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 2, 2))
    flat = Flatten(data_format="channels_first", dtype="float64")
    dense = Dense(3, dtype="float64")
    inputs = ops.convert_to_tensor(x)
    inputs.watched = True
    y = dense(flat(inputs))
    (dx,) = autodiff.gradient(ops.sum(y), [inputs])
    kernel = dense.get_weights()[0]
    # d sum(y) / d x[n, c, h, w] = sum_j kernel[(h * 2 + w) * 3 + c, j]
    expected = np.zeros_like(x)
    for c in range(3):
        for h in range(2):
            for w in range(2):
                expected[:, c, h, w] = kernel[(h * 2 + w) * 3 + c].sum()
    np.testing.assert_allclose(dx, expected, rtol=1e-12)


@pytest.mark.parametrize(
    "kwargs,error,pattern",
    [
        (dict(data_format="nchw"), ValueError, r"data_format.*'nchw'"),
        (dict(data_format=1), ValueError, r"data_format.*1"),
        (dict(start_dim=1), TypeError, r"start_dim"),
    ],
)
def test_bad_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        Flatten(**kwargs)


def test_scalar_input_is_refused():
    with pytest.raises(ValueError, match=r"ndim|batch"):
        Flatten()(np.float32(3.0))


# ================================================================ Reshape, Permute, RepeatVector


def test_reshape_values_and_inferred_axis():
    x = np.arange(5 * 12, dtype=np.float32).reshape(5, 12)
    layer = Reshape((-1, 2, 2))
    y = to_np(layer(x))
    np.testing.assert_array_equal(y, x.reshape(5, 3, 2, 2))
    assert layer.compute_output_shape((None, 12)) == (None, 3, 2, 2)
    assert layer.compute_output_shape((None, None)) == (None, None, 2, 2)  # -1 unknown when the input is
    assert Reshape((3, 4)).compute_output_shape((7, 2, 6)) == (7, 3, 4)
    assert to_np(Reshape((4, 3))(np.arange(12).reshape(1, 12))).dtype.kind == "i"  # ints stay ints, as in Keras
    assert Reshape((0, 5)).compute_output_shape((2, 0)) == (2, 0, 5)


@pytest.mark.parametrize(
    "target,error,pattern",
    [
        ((-1, -1), ValueError, r"at most one unknown dimension \(-1\) in `target_shape`"),
        ((2, -2), ValueError, r"must be a non-negative integer, or `-1`.*target_shape=\(2, -2\)"),
        ((2, 1.5), TypeError, r"target_shape.*1\.5"),
        (3, TypeError, r"target_shape=3"),
        ((True, 2), TypeError, r"target_shape"),
    ],
)
def test_reshape_bad_target_shapes(target, error, pattern):
    with pytest.raises(error, match=pattern):
        Reshape(target)


def test_reshape_size_mismatch():
    with pytest.raises(ValueError, match=r"total size of the tensor must be unchanged.*input_shape=\(12,\)"):
        Reshape((5,))(np.ones((2, 12), np.float32))
    with pytest.raises(ValueError, match=r"cannot by divided"):
        Reshape((-1, 5))(np.ones((2, 12), np.float32))
    with pytest.raises(ValueError, match=r"cannot by divided"):
        Reshape((0, -1)).compute_output_shape((None, 4))


def test_permute_values_and_shapes():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)
    layer = Permute((3, 1, 2), dtype="float64")
    np.testing.assert_array_equal(to_np(layer(x)), x.transpose(0, 3, 1, 2))
    assert layer.compute_output_shape((None, 3, 4, 5)) == (None, 5, 3, 4)
    assert Permute((2, 1)).compute_output_shape((None, 10, 64)) == (None, 64, 10)
    with pytest.raises(ValueError, match=r"expected ndim=4, found ndim=3"):
        layer(np.ones((2, 3, 4)))


@pytest.mark.parametrize(
    "dims,error,pattern",
    [
        ((1, 3), ValueError, r"must be consecutive and start from 1. Received dims=\(1, 3\)"),
        ((0, 1), ValueError, r"start from 1"),
        ((1, 1), ValueError, r"consecutive"),
        ((1, 2.0), TypeError, r"dims.*2\.0"),
        (2, TypeError, r"dims=2"),
    ],
)
def test_permute_bad_dims(dims, error, pattern):
    with pytest.raises(error, match=pattern):
        Permute(dims)


def test_repeat_vector():
    x = np.arange(6, dtype=np.float64).reshape(2, 3)
    layer = RepeatVector(4, dtype="float64")
    y = to_np(layer(x))
    assert y.shape == (2, 4, 3) == layer.compute_output_shape((2, 3))
    np.testing.assert_array_equal(y, np.repeat(x[:, None], 4, axis=1))
    assert layer.compute_output_shape((None, 7)) == (None, 4, 7)
    with pytest.raises(ValueError, match=r"expected ndim=2, found ndim=3"):
        layer(np.ones((2, 3, 1)))
    with pytest.raises(TypeError, match=r"Expected an integer value for `n`"):
        RepeatVector(2.0)
    with pytest.raises(TypeError, match=r"Expected an integer value for `n`"):
        RepeatVector(True)
    with pytest.raises(ValueError, match=r"Argument `n` should be a positive integer. Received: n=0"):
        RepeatVector(0)


@pytest.mark.parametrize(
    "layer,shape",
    [
        (lambda: Reshape((-1, 3), dtype="float64"), (2, 3, 4)),
        (lambda: Permute((2, 3, 1), dtype="float64"), (2, 3, 2, 4)),
        (lambda: RepeatVector(3, dtype="float64"), (2, 4)),
    ],
)
def test_reshaping_gradients(layer, shape):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape)
    dx, grads = check_layer_gradients(layer(), x)
    assert dx.shape == x.shape and grads == {}


# ================================================================ UpSampling2D, ZeroPadding2D, Cropping2D


def to_nhwc(x, data_format):
    return x if data_format == "channels_last" else x.transpose(0, 2, 3, 1)


def from_nhwc(x, data_format):
    return x if data_format == "channels_last" else x.transpose(0, 3, 1, 2)


def ref_bilinear(x, size):
    """Float64 NHWC bilinear upsampling with half-pixel centres, the sample position clamped to the image."""
    n, h, w, c = x.shape
    out = np.zeros((n, h * size[0], w * size[1], c))
    for o in range(h * size[0]):
        r = min(max((o + 0.5) / size[0] - 0.5, 0.0), h - 1)
        r0 = int(np.floor(r))
        r1, fr = min(r0 + 1, h - 1), r - r0
        for p in range(w * size[1]):
            q = min(max((p + 0.5) / size[1] - 0.5, 0.0), w - 1)
            q0 = int(np.floor(q))
            q1, fq = min(q0 + 1, w - 1), q - q0
            out[:, o, p] = ((1 - fr) * (1 - fq) * x[:, r0, q0] + (1 - fr) * fq * x[:, r0, q1]
                            + fr * (1 - fq) * x[:, r1, q0] + fr * fq * x[:, r1, q1])
    return out


SIZES = [(2, 2), (3, 1), (1, 4), (2, 3)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_upsampling_nearest_repeats_pixels(size, data_format):
    rng = np.random.default_rng(4)
    nhwc = rng.standard_normal((2, 3, 5, 2))
    layer = UpSampling2D(size, data_format, dtype="float64")
    x = from_nhwc(nhwc, data_format)
    y = to_np(layer(x))
    expected = np.repeat(np.repeat(nhwc, size[0], axis=1), size[1], axis=2)
    np.testing.assert_array_equal(to_nhwc(y, data_format), expected)
    assert y.shape == layer.compute_output_shape(x.shape)
    dx, _ = check_layer_gradients(layer, x)
    assert dx.shape == x.shape


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_upsampling_bilinear_matches_reference(size, data_format):
    rng = np.random.default_rng(5)
    nhwc = rng.standard_normal((2, 3, 5, 2))
    layer = UpSampling2D(size, data_format, "bilinear", dtype="float64")
    x = from_nhwc(nhwc, data_format)
    y = to_np(layer(x))
    np.testing.assert_allclose(to_nhwc(y, data_format), ref_bilinear(nhwc, size), rtol=1e-12, atol=1e-12)
    dx, _ = check_layer_gradients(layer, x)
    assert dx.shape == x.shape


def test_upsampling_shapes_dtype_and_config():
    layer = UpSampling2D((2, 3), interpolation="BILINEAR")
    assert layer.interpolation == "bilinear"
    assert layer.compute_output_shape((None, 4, None, 3)) == (None, 8, None, 3)
    assert UpSampling2D(data_format="channels_first").compute_output_shape((1, 3, 4, 5)) == (1, 3, 8, 10)
    y = to_np(layer(np.ones((1, 2, 2, 1), np.float32)))
    assert y.dtype == np.float32 and y.shape == (1, 4, 6, 1)
    np.testing.assert_allclose(y, 1.0, rtol=1e-6)  # the weights of each output sum to 1
    config = UpSampling2D(3, name="u").get_config()
    assert config["size"] == (3, 3) and config["interpolation"] == "nearest"
    assert UpSampling2D.from_config(config).get_config() == config


@pytest.mark.parametrize(
    "kwargs,error,pattern",
    [
        (dict(size=0), ValueError, r"size.*0"),
        (dict(size=(2, 2, 2)), ValueError, r"size"),
        (dict(interpolation="area"), ValueError, r"interpolation.*'area'"),
        (dict(interpolation=None), ValueError, r"interpolation=None"),
        (dict(data_format="nhwc"), ValueError, r"data_format.*'nhwc'"),
    ],
)
def test_upsampling_bad_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        UpSampling2D(**kwargs)


PADDINGS = [
    (1, ((1, 1), (1, 1))),
    ((2, 0), ((2, 2), (0, 0))),
    (((1, 0), (2, 3)), ((1, 0), (2, 3))),
    ([[0, 1], 2], ((0, 1), (2, 2))),
]


@pytest.mark.parametrize("padding,pairs", PADDINGS)
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_zero_padding(padding, pairs, data_format):
    rng = np.random.default_rng(6)
    nhwc = rng.standard_normal((2, 3, 4, 2))
    layer = ZeroPadding2D(padding, data_format, dtype="float64")
    assert layer.padding == pairs
    x = from_nhwc(nhwc, data_format)
    y = to_np(layer(x))
    np.testing.assert_array_equal(to_nhwc(y, data_format), np.pad(nhwc, ((0, 0), *pairs, (0, 0))))
    assert y.shape == layer.compute_output_shape(x.shape)
    check_layer_gradients(layer, x)


@pytest.mark.parametrize("cropping,pairs", PADDINGS)
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_cropping(cropping, pairs, data_format):
    rng = np.random.default_rng(7)
    nhwc = rng.standard_normal((2, 5, 7, 2))
    layer = Cropping2D(cropping, data_format, dtype="float64")
    assert layer.cropping == pairs
    x = from_nhwc(nhwc, data_format)
    y = to_np(layer(x))
    (t, b), (l, r) = pairs
    np.testing.assert_array_equal(to_nhwc(y, data_format), nhwc[:, t : 5 - b, l : 7 - r])
    assert y.shape == layer.compute_output_shape(x.shape)
    check_layer_gradients(layer, x)


def test_padding_and_cropping_shapes_with_unknown_sizes():
    assert ZeroPadding2D(((1, 2), (3, 4))).compute_output_shape((None, None, 5, 3)) == (None, None, 12, 3)
    assert Cropping2D(((1, 2), (3, 0))).compute_output_shape((None, None, 5, 3)) == (None, None, 2, 3)
    assert Cropping2D(1, "channels_first").compute_output_shape((None, 3, 4, None)) == (None, 3, 2, None)


@pytest.mark.parametrize("cls,name", [(ZeroPadding2D, "padding"), (Cropping2D, "cropping")])
@pytest.mark.parametrize(
    "value,error,pattern",
    [
        (-1, ValueError, r"cannot be negative"),
        ((1, 2, 3), ValueError, r"should have two elements"),
        (((1, 2, 3), 1), ValueError, r"1st entry of {name}"),
        ((1, (2, -1)), ValueError, r"2nd entry of {name}.*-1"),
        ((1.5, 1), ValueError, r"1st entry of {name}"),
        ("same", ValueError, r"`{name}` should be either an int"),
        (None, ValueError, r"`{name}` should be either an int"),
    ],
)
def test_padding_and_cropping_bad_arguments(cls, name, value, error, pattern):
    # Every refusal is a ValueError, as Keras's (its own tests expect one for "1" and ((1, 2), "3")).
    with pytest.raises(error, match=pattern.format(name=name)):
        cls(value)


def test_cropping_too_much_and_wrong_ranks():
    with pytest.raises(ValueError, match=r"should be smaller than the corresponding spatial dimension"):
        Cropping2D(((2, 2), (0, 0)))(np.ones((1, 4, 4, 1), np.float32))
    layer = Cropping2D(((0, 0), (3, 3)), data_format="channels_first")
    with pytest.raises(ValueError, match=r"should be smaller"):
        layer(np.ones((1, 2, 4, 6), np.float32))
    assert not layer.built
    for cls in (ZeroPadding2D, Cropping2D, UpSampling2D):
        with pytest.raises(ValueError, match=r"expected ndim=4, found ndim=3"):
            cls()(np.ones((1, 4, 4), np.float32))


def test_image_data_format_default(monkeypatch):
    from gpulayers import config as gconfig

    monkeypatch.setattr(gconfig, "image_data_format", lambda: "channels_first")
    for cls in (UpSampling2D, ZeroPadding2D, Cropping2D):
        assert cls().data_format == "channels_first"


# ================================================================ Keras parity


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    return pytest.importorskip("keras")


KERAS_CASES = [
    ("Flatten", dict(data_format="channels_last"), (2, 3, 4)),
    ("Flatten", dict(data_format="channels_first"), (2, 3, 4)),
    ("Flatten", dict(data_format="channels_last"), (2, 2, 3, 2, 2)),
    ("Flatten", dict(data_format="channels_first"), (2, 2, 3, 2, 2)),
    ("Reshape", dict(target_shape=(-1, 2)), (2, 3, 4)),
    ("Permute", dict(dims=(3, 1, 2)), (2, 3, 4, 5)),
    ("RepeatVector", dict(n=3), (2, 4)),
    ("UpSampling2D", dict(size=(2, 3)), (2, 3, 4, 2)),
    ("UpSampling2D", dict(size=(2, 3), interpolation="bilinear"), (2, 3, 4, 2)),
    ("UpSampling2D", dict(size=3, interpolation="bilinear", data_format="channels_first"), (2, 2, 3, 4)),
    ("ZeroPadding2D", dict(padding=((1, 0), (2, 3))), (2, 3, 4, 2)),
    ("ZeroPadding2D", dict(padding=2, data_format="channels_first"), (2, 2, 3, 4)),
    ("Cropping2D", dict(cropping=((1, 0), (2, 1))), (2, 3, 4, 2)),
    ("Cropping2D", dict(cropping=(1, 1), data_format="channels_first"), (2, 2, 3, 4)),
]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name,kwargs,shape", KERAS_CASES)
def test_matches_keras(name, kwargs, shape):
    keras = _keras()
    rng = np.random.default_rng(8)
    x = rng.standard_normal(shape).astype(np.float32)
    theirs = getattr(keras.layers, name)(name="r", **kwargs)
    ours = getattr(layers_module, name)(name="r", **kwargs)
    expected = keras.ops.convert_to_numpy(theirs(x))
    np.testing.assert_allclose(to_np(ours(x)), expected, rtol=1e-5, atol=1e-6)
    symbolic = (None,) + shape[1:]
    assert ours.compute_output_shape(symbolic) == tuple(theirs.compute_output_shape(symbolic))
    assert ours.get_config() == theirs.get_config()
    clone = getattr(layers_module, name).from_config(theirs.get_config())
    np.testing.assert_allclose(to_np(clone(x)), expected, rtol=1e-5, atol=1e-6)
    assert layers_module.LAYER_CLASSES[name] is type(ours)
