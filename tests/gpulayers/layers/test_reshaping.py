"""Flatten: channels-last ordering, shapes, gradients, argument checks."""

import numpy as np
import pytest

from gpulayers import autodiff, ops
from gpulayers.layers import Dense, Flatten
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
@pytest.mark.parametrize("shape", [(2, 3, 2, 4), (2, 3, 4), (3, 5)])
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
