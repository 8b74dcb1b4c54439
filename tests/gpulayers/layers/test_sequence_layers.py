"""Conv1D, the 1-D poolings, Embedding and LSTM: float64 references, finite-difference gradients, Keras's configs."""

import numpy as np
import pytest

from helpers import check_layer_gradients, to_np

from gpulayers import autodiff, layers, ops
from gpulayers.variables import Variable


def _conv1d_reference(x, kernel, bias, stride, dilation, pads):
    n, steps, _ = x.shape
    k, _, filters = kernel.shape
    padded = np.pad(x, ((0, 0), pads, (0, 0)))
    span = (k - 1) * dilation + 1
    out_len = (padded.shape[1] - span) // stride + 1
    out = np.zeros((n, out_len, filters))
    for t in range(out_len):
        for j in range(k):
            out[:, t] += padded[:, t * stride + j * dilation] @ kernel[j]
    return out + bias


@pytest.mark.parametrize("padding, strides, dilation", [("valid", 1, 1), ("same", 2, 1), ("causal", 1, 2), ("same", 1, 3)])
def test_conv1d_matches_a_float64_reference(padding, strides, dilation):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 9, 3))
    layer = layers.Conv1D(4, 3, strides=strides, padding=padding, dilation_rate=dilation, dtype="float64")
    y = to_np(layer(x))
    kernel, bias = (to_np(w.value) for w in layer.weights)
    assert kernel.shape == (3, 3, 4)
    span = 2 * dilation
    if padding == "valid":
        pads = (0, 0)
    elif padding == "causal":
        pads = (span, 0)
    else:
        out = -(-9 // strides)
        total = max((out - 1) * strides + span + 1 - 9, 0)
        pads = (total // 2, total - total // 2)
    np.testing.assert_allclose(y, _conv1d_reference(x, kernel, bias, strides, dilation, pads), rtol=1e-12, atol=1e-12)
    assert layer.compute_output_shape((None, 9, 3)) == (None,) + y.shape[1:]


def test_conv1d_gradients_and_channels_first():
    rng = np.random.default_rng(1)
    check_layer_gradients(layers.Conv1D(3, 2, padding="causal", activation="tanh", dtype="float64"),
                          rng.standard_normal((2, 6, 2)))
    first = layers.Conv1D(3, 2, data_format="channels_first", dtype="float64")
    x = rng.standard_normal((2, 4, 7))  # (batch, channels, steps)
    assert first(x).shape == (2, 3, 6)
    check_layer_gradients(first, x)


def test_conv1d_arguments_and_config():
    with pytest.raises(ValueError, match="padding"):
        layers.Conv1D(2, 3, padding="full")
    with pytest.raises(ValueError, match="dilation_rate"):
        layers.Conv1D(2, 3, strides=2, dilation_rate=2)
    with pytest.raises(ValueError, match="ndim=3"):
        layers.Conv1D(2, 3)(np.zeros((1, 5, 5, 2)))
    config = layers.Conv1D(2, 3, padding="CAUSAL").get_config()
    assert config["kernel_size"] == (3,) and config["strides"] == (1,) and config["padding"] == "causal"
    assert layers.Conv1D.from_config(config).get_config() == config


@pytest.mark.parametrize("cls, reduce", [(layers.GlobalAveragePooling1D, np.mean), (layers.GlobalMaxPooling1D, np.max)])
def test_global_pooling_1d(cls, reduce):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 5, 4))
    np.testing.assert_allclose(to_np(cls(dtype="float64")(x)), reduce(x, axis=1), rtol=1e-12)
    kept = cls(keepdims=True, data_format="channels_first", dtype="float64")(x)
    np.testing.assert_allclose(to_np(kept), reduce(x, axis=2, keepdims=True), rtol=1e-12)
    check_layer_gradients(cls(dtype="float64"), x)
    assert cls().compute_output_shape((None, None, 4)) == (None, 4)


def test_windowed_pooling_1d():
    x = np.arange(12.0).reshape(1, 6, 2)
    np.testing.assert_array_equal(to_np(layers.MaxPooling1D()(x))[0], [[2, 3], [6, 7], [10, 11]])
    np.testing.assert_allclose(to_np(layers.AveragePooling1D(4, strides=2, padding="same")(x))[0],
                               [[2, 3], [5, 6], [8, 9]])
    check_layer_gradients(layers.AveragePooling1D(2, strides=1, dtype="float64"), np.random.default_rng(3).random((2, 5, 3)))
    assert layers.MaxPooling1D(3).get_config()["pool_size"] == (3,)


def test_embedding_lookup_and_gradient():
    layer = layers.Embedding(6, 3)
    idx = np.array([[1, 4, 1], [0, 5, 4]])
    y = layer(idx)
    table = to_np(layer.embeddings.value)
    np.testing.assert_array_equal(to_np(y), table[idx])
    assert y.dtype == "float32"
    assert layer(idx.astype("float32")).shape == (2, 3, 3)  # float indices are cast, as Keras does
    with autodiff.GradientTape() as tape:
        loss = ops.sum(layer(idx) * 2.0)
    (grad,) = tape.gradient(loss, [layer.embeddings])
    counts = np.bincount(idx.ravel(), minlength=6)[:, None] * 2.0
    np.testing.assert_allclose(to_np(grad), np.broadcast_to(counts, (6, 3)))
    with pytest.raises(IndexError, match="outside"):
        layer(np.array([[6]]))


def test_embedding_arguments_and_config():
    with pytest.raises(NotImplementedError, match="mask_zero"):
        layers.Embedding(5, 2, mask_zero=True)
    weights = np.arange(10.0).reshape(5, 2)
    layer = layers.Embedding(5, 2, weights=weights)
    np.testing.assert_array_equal(to_np(layer(np.array([3]))), [[6.0, 7.0]])
    config = layers.Embedding(5, 2).get_config()
    assert config["embeddings_initializer"]["class_name"] == "RandomUniform"
    assert {"input_dim", "output_dim", "mask_zero", "embeddings_regularizer"} <= set(config)
    x = layers.Input((4,), dtype="int32")
    out = layers.Embedding(5, 2)(x)
    assert out.shape == (None, 4, 2) and out.dtype == "float32"


def _lstm_reference(x, kernel, recurrent, bias, units):
    def sig(v):
        return 1 / (1 + np.exp(-v))

    h = np.zeros((x.shape[0], units))
    c = np.zeros_like(h)
    outs = []
    for t in range(x.shape[1]):
        z = x[:, t] @ kernel + h @ recurrent + bias
        i, f, g, o = sig(z[:, :units]), sig(z[:, units:2 * units]), np.tanh(z[:, 2 * units:3 * units]), sig(z[:, 3 * units:])
        c = f * c + i * g
        h = o * np.tanh(c)
        outs.append(h)
    return np.stack(outs, 1), h, c


def test_lstm_matches_a_float64_reference():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 5, 2))
    layer = layers.LSTM(4, return_sequences=True, return_state=True, dtype="float64")
    seq, h, c = (to_np(t) for t in layer(x))
    kernel, recurrent, bias = (to_np(w.value) for w in layer.weights)
    assert [w.shape for w in layer.weights] == [(2, 16), (4, 16), (16,)]
    np.testing.assert_array_equal(bias[4:8], 1.0)  # unit_forget_bias
    assert all(w.value.flags.c_contiguous for w in layer.weights)  # the orthogonal recurrent kernel too
    ref_seq, ref_h, ref_c = _lstm_reference(x, kernel, recurrent, bias, 4)
    np.testing.assert_allclose(seq, ref_seq, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h, ref_h, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c, ref_c, rtol=1e-12, atol=1e-12)
    back = layers.LSTM(4, go_backwards=True, dtype="float64")
    back(x)
    back.set_weights([kernel, recurrent, bias])
    np.testing.assert_allclose(to_np(back(x)), _lstm_reference(x[:, ::-1], kernel, recurrent, bias, 4)[1], rtol=1e-12)


@pytest.mark.parametrize("kwargs", [
    dict(return_sequences=True),
    dict(go_backwards=True, return_sequences=True),
    dict(activation="relu"),  # the step-by-step loop on the ops
    dict(use_bias=False, recurrent_activation="hard_sigmoid"),
])
def test_lstm_gradients(kwargs):
    rng = np.random.default_rng(5)
    check_layer_gradients(layers.LSTM(3, dtype="float64", **kwargs), rng.standard_normal((2, 4, 2)) * 0.7)


def test_lstm_initial_state_gradients_and_state_outputs():
    rng = np.random.default_rng(6)
    layer = layers.LSTM(3, return_state=True, dtype="float64")
    x = ops.convert_to_tensor(rng.standard_normal((2, 4, 2)))
    h0 = Variable(rng.standard_normal((2, 3)))
    c0 = Variable(rng.standard_normal((2, 3)))

    def scalar(h0_value, c0_value):
        out, h, c = layer(x, initial_state=[h0_value, c0_value])
        return ops.sum(out * 1.5) + ops.sum(h * h) + ops.sum(c * 0.5)

    with autodiff.GradientTape() as tape:
        total = scalar(h0, c0)
    dh, dc = (to_np(g) for g in tape.gradient(total, [h0, c0]))
    eps = 1e-6
    for var, analytic in ((h0, dh), (c0, dc)):
        base = to_np(var.value).copy()
        numeric = np.zeros_like(base)
        for i in np.ndindex(base.shape):
            for sign in (1, -1):
                bumped = base.copy()
                bumped[i] += sign * eps
                var.value = bumped
                with autodiff.no_backward():
                    numeric[i] += sign * float(to_np(scalar(h0, c0)))
            var.value = base
        np.testing.assert_allclose(analytic, numeric / (2 * eps), rtol=1e-5, atol=1e-8)


def test_lstm_dropout_masks_inputs_in_training_only():
    x = np.random.default_rng(7).standard_normal((4, 3, 5)).astype("float32")
    layer = layers.LSTM(2, dropout=0.5, seed=1)
    np.testing.assert_array_equal(to_np(layer(x)), to_np(layer(x)))  # inference: no dropout
    assert not np.allclose(to_np(layer(x, training=True)), to_np(layer(x)))
    check = layers.LSTM(2, recurrent_dropout=0.3, seed=2)
    assert check(x, training=True).shape == (4, 2)


def test_lstm_arguments_config_and_symbolic_call():
    with pytest.raises(NotImplementedError, match="stateful"):
        layers.LSTM(2, stateful=True)
    with pytest.raises(ValueError, match="use_cudnn"):
        layers.LSTM(2, use_cudnn="yes")
    with pytest.raises(NotImplementedError, match="mask"):
        layers.LSTM(2)(np.zeros((1, 3, 2)), mask=np.ones((1, 3), dtype=bool))
    config = layers.LSTM(5, return_sequences=True).get_config()
    assert config["units"] == 5 and config["recurrent_initializer"]["class_name"] == "Orthogonal"
    assert config["zero_output_for_mask"] is False and config["unit_forget_bias"] is True
    again = layers.LSTM.from_config(config)
    assert again.get_config() == {**config, "name": again.name}
    inputs = layers.Input((None, 3))
    seq, h, c = layers.LSTM(4, return_sequences=True, return_state=True)(inputs)
    assert seq.shape == (None, None, 4) and h.shape == (None, 4) and c.shape == (None, 4)
