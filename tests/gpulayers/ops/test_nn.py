"""Tests for gpulayers.ops.nn: Keras's values and float64 references, gradients
against finite differences, and the cross-entropies' fusion with softmax/sigmoid."""

import functools
import math
import warnings

import numpy as np
import pytest
from helpers import check_op_gradients, grad_of, keras_or_skip

from gpulayers import autodiff, config, ops
from gpulayers.autodiff import Tensor
from gpulayers.ops import nn as N

EPS = 1e-7  # config.epsilon()
SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946  # Klambauer et al.



def watched(x):
    t = Tensor(np.array(x, dtype=np.float64))
    t.watched = True
    return t


# ----------------------------------------------------------------- activations: Keras's values

X5 = np.array([-1, 0, 1, 2, 3], dtype=np.float32)
KERAS_VALUES = [
    ("relu", X5, [0, 0, 1, 2, 3]),
    ("relu6", np.array([-1, 0, 1, 2, 3, 4, 5, 6, 7], dtype=np.float32), [0, 0, 1, 2, 3, 4, 5, 6, 6]),
    ("sigmoid", X5, [0.26894143, 0.5, 0.7310586, 0.880797, 0.95257413]),
    ("softplus", X5, [0.31326166, 0.6931472, 1.3132616, 2.126928, 3.0485873]),
    ("softsign", X5, [-0.5, 0, 0.5, 0.6666667, 0.75]),
    ("silu", X5, [-0.26894143, 0, 0.7310586, 1.7615942, 2.8577223]),
    ("log_sigmoid", X5, [-1.3132616, -0.6931472, -0.31326166, -0.126928, -0.04858732]),
    ("leaky_relu", X5, [-0.2, 0, 1, 2, 3]),
    ("hard_sigmoid", X5, [0.33333334, 0.5, 0.6666667, 0.8333334, 1.0]),
    ("hard_silu", np.array([-3, -2, -1, 0, 1, 2, 3], dtype=np.float32),
     [-0.0, -0.333333, -0.333333, 0.0, 0.6666667, 1.6666667, 3.0]),
    ("elu", X5, [-0.63212055, 0, 1, 2, 3]),
    ("selu", X5, [-1.1113307, 0.0, 1.050701, 2.101402, 3.152103]),
    ("gelu", X5, [-0.15880796, 0.0, 0.841192, 1.9545977, 2.9963627]),  # approximate=True by default
    ("celu", X5, [-0.63212055, 0.0, 1.0, 2.0, 3.0]),
    ("glu", np.array([-1, 0, 1, 2, 3, 4], dtype=np.float32), [-0.8807971, 0.0, 0.98201376]),
]


@pytest.mark.parametrize("name,x,expected", KERAS_VALUES, ids=[c[0] for c in KERAS_VALUES])
def test_activation_values_match_keras(name, x, expected):
    y = getattr(N, name)(x)
    assert isinstance(y, Tensor) and y.dtype == np.float32
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)


def test_elu_alpha_and_swish_aliases():
    np.testing.assert_allclose(N.elu(X5, alpha=0.5), [-0.31606027, 0, 1, 2, 3], rtol=1e-6)
    assert N.swish is N.silu and N.hard_swish is N.hard_silu
    exact = N.gelu(X5, approximate=False)
    np.testing.assert_allclose(exact, [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in X5], rtol=1e-6)


# Scalar float64 references.
def _sig(v):
    return 1 / (1 + math.exp(-v))


REFS = {
    "relu": (lambda v: max(v, 0.0), {}),
    "relu6": (lambda v: min(max(v, 0.0), 6.0), {}),
    "sigmoid": (_sig, {}),
    "softplus": (lambda v: math.log1p(math.exp(v)), {}),
    "softsign": (lambda v: v / (1 + abs(v)), {}),
    "silu": (lambda v: v * _sig(v), {}),
    "log_sigmoid": (lambda v: math.log(_sig(v)), {}),
    "leaky_relu": (lambda v: v if v >= 0 else 0.3 * v, {"negative_slope": 0.3}),
    "hard_sigmoid": (lambda v: min(max(v / 6 + 0.5, 0.0), 1.0), {}),
    "hard_silu": (lambda v: v * min(max(v / 6 + 0.5, 0.0), 1.0), {}),
    "elu": (lambda v: v if v >= 0 else 0.7 * math.expm1(v), {"alpha": 0.7}),
    "selu": (lambda v: SELU_SCALE * (v if v >= 0 else SELU_ALPHA * math.expm1(v)), {}),
    "gelu": (lambda v: 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3))), {}),
    "celu": (lambda v: max(v, 0.0) + 1.5 * math.expm1(min(v, 0.0) / 1.5), {"alpha": 1.5}),
}
KINKS = {"relu": [0], "relu6": [0, 6], "leaky_relu": [0], "hard_sigmoid": [-3, 3], "hard_silu": [-3, 3],
         "elu": [0], "selu": [0], "celu": [0], "softsign": [0]}


def away_from(kinks, n, seed, low=-7.0, high=7.0):
    x = np.random.default_rng(seed).uniform(low, high, n)
    for k in kinks:
        x = x[np.abs(x - k) > 1e-2]
    return x


@pytest.mark.parametrize("name", sorted(REFS))
def test_activation_values_and_gradients(name):
    fn = getattr(N, name)
    ref, kwargs = REFS[name]
    x = away_from(KINKS.get(name, []), 300, seed=0)
    np.testing.assert_allclose(fn(x, **kwargs), [ref(v) for v in x], rtol=1e-13, atol=1e-15)
    x = away_from(KINKS.get(name, []), 24, seed=1, low=-5, high=5).reshape(2, -1)
    check_op_gradients(lambda t: fn(t, **kwargs), x, atol=1e-7)
    check_op_gradients(lambda t: fn(t, **kwargs) * t, x, atol=1e-7)


@pytest.mark.parametrize("name", sorted(REFS))
def test_activation_gradients_of_a_scalar(name):
    # a 0-d input keeps a 0-d gradient (numpy's ascontiguousarray would make it 1-d)
    fn = getattr(N, name)
    ref, kwargs = REFS[name]
    x = np.array(away_from(KINKS.get(name, []), 1, seed=4, low=0.5, high=2.0)[0])
    check_op_gradients(lambda t: fn(t, **kwargs), x, atol=1e-7)


def test_glu_gradient_and_odd_axis():
    x = np.random.default_rng(2).normal(size=(3, 4))
    check_op_gradients(N.glu, x)
    check_op_gradients(lambda t: N.glu(t, axis=0), np.random.default_rng(3).normal(size=(4, 3)))
    with pytest.raises(ValueError, match="even size"):
        N.glu(np.ones((2, 3)))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(REFS) + ["glu"])
def test_activation_dtypes_are_kept(name, dtype):
    x = np.linspace(-3, 3, 8).astype(dtype)
    y, (g,) = grad_of(getattr(N, name), x)
    assert y.dtype == dtype and g.dtype == dtype


def test_integer_inputs():
    assert N.relu(np.array([-1, 2], dtype=np.int32)).dtype == np.int32  # relu and relu6 keep integers (Keras)
    assert N.relu6(np.array([-1, 9], dtype=np.int32)).numpy().tolist() == [0, 6]
    assert N.sigmoid([0, 1]).dtype == np.float32  # the others compute in floatx
    assert N.softmax([1, 2]).dtype == np.float32


def test_bad_activation_arguments():
    with pytest.raises(TypeError, match=r"`negative_slope`.*Received: negative_slope='a'"):
        N.leaky_relu(X5, negative_slope="a")
    with pytest.raises(TypeError, match=r"`alpha`"):
        N.elu(X5, alpha=None)
    with pytest.raises(ValueError, match=r"`alpha`.*cannot be 0"):
        N.celu(X5, alpha=0)


# ----------------------------------------------------------------- softmax, log_softmax


def test_softmax_keras_values():
    x = np.array([[1, 2, 3], [1, 2, 3]], dtype=np.float32)
    np.testing.assert_allclose(N.softmax(x, axis=None), [[0.045015, 0.122364, 0.33262]] * 2, atol=1e-6)
    np.testing.assert_allclose(N.softmax(x, axis=0), [[0.5] * 3] * 2)
    np.testing.assert_allclose(N.softmax(x), [[0.09003057, 0.24472848, 0.66524094]] * 2, rtol=1e-6)
    np.testing.assert_allclose(N.log_softmax(x, axis=None), [[-3.100753, -2.100753, -1.100753]] * 2, rtol=1e-6)
    np.testing.assert_allclose(N.log_softmax(x, axis=0), [[-0.693147] * 3] * 2, rtol=1e-6)
    np.testing.assert_allclose(N.log_softmax(x), [[-2.407606, -1.407606, -0.407606]] * 2, rtol=1e-6)


@pytest.mark.parametrize("axis", [(0, 1), (0, 2), (1, 2)])
def test_softmax_over_axis_tuples(axis):
    x = np.array([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]])
    np.testing.assert_allclose(np.sum(N.softmax(x, axis=axis).numpy(), axis=axis), 1.0)
    np.testing.assert_allclose(np.sum(np.exp(N.log_softmax(x, axis=axis).numpy()), axis=axis), 1.0)
    check_op_gradients(lambda t: N.softmax(t, axis=axis) * t, x)
    check_op_gradients(lambda t: N.log_softmax(t, axis=axis), x)


def test_softmax_records_its_axis_and_warns_on_a_unit_axis():
    x = watched(np.ones((2, 3)))
    assert N.softmax(x).node.op == "softmax" and N.softmax(x).node.attrs == {"axis": 1}
    assert N.softmax(x, axis=None).node.attrs == {"axis": (0, 1)}
    with pytest.warns(UserWarning, match=r"softmax over axis 1 of a tensor of shape \(1, 1\).*sigmoid instead"):
        N.softmax(np.array([[1.0]]), 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        N.softmax(np.ones((2, 3)))
    with pytest.raises(ValueError, match="out of range"):
        N.softmax(np.ones((3, 4)), axis=10)


# ----------------------------------------------------------------- one_hot


def test_one_hot_keras_cases():
    eye = np.eye(4)
    idx = np.array([0, 1, 2, 3])
    np.testing.assert_array_equal(N.one_hot(idx, 4), eye[idx])
    np.testing.assert_array_equal(N.one_hot(idx, 4, axis=0), eye[idx])
    np.testing.assert_array_equal(N.one_hot([0, 1, 2, 3], 4), eye[idx])
    idx2 = np.array([[0, 1], [2, 3]])
    np.testing.assert_array_equal(N.one_hot(idx2, 4), eye[idx2])
    np.testing.assert_array_equal(N.one_hot(idx2, 4, axis=2), eye[idx2])
    np.testing.assert_array_equal(N.one_hot(idx2, 4, axis=1), np.transpose(eye[idx2], (0, 2, 1)))
    col = np.array([[0], [1], [2], [3]])
    np.testing.assert_array_equal(N.one_hot(col, 4, axis=0), eye[col].swapaxes(1, 2))
    np.testing.assert_array_equal(N.one_hot(np.array([0, -1, -1, 3]), 4), [[1, 0, 0, 0], [0] * 4, [0] * 4, [0, 0, 0, 1]])
    np.testing.assert_array_equal(N.one_hot(np.array([5]), 4), [[0, 0, 0, 0]])


def test_one_hot_dtype_and_errors():
    assert N.one_hot([1], 3).dtype == np.float32
    assert N.one_hot([1], 3, dtype="int32").dtype == np.int32
    assert N.one_hot([1], 3, dtype="bool").dtype == np.bool_
    with pytest.raises(ValueError, match="sparse"):
        N.one_hot([1], 3, sparse=True)
    with pytest.raises(ValueError, match="num_classes=0"):
        N.one_hot([1], 0)
    with pytest.raises(ValueError, match="out of range"):
        N.one_hot([1], 3, axis=2)


# ----------------------------------------------------------------- moments, batch_normalization, normalize


def test_moments_keras_cases():
    x = np.array([0, 1, 2, 3, 4, 100, -200], dtype=np.float32)
    mean, var = N.moments(x, axes=[0])
    np.testing.assert_allclose(mean, np.mean(x), rtol=1e-5)
    np.testing.assert_allclose(var, np.var(x), rtol=1e-5)
    x = np.random.default_rng(4).uniform(size=(2, 5, 5, 3)).astype(np.float32)
    for axes in ([0], [0, 1, 2]):
        for keepdims in (False, True):
            mean, var = N.moments(x, axes=axes, keepdims=keepdims)
            np.testing.assert_allclose(mean, np.mean(x, axis=tuple(axes), keepdims=keepdims), rtol=1e-5)
            np.testing.assert_allclose(var, np.var(x, axis=tuple(axes), keepdims=keepdims), rtol=1e-5)
    x16 = np.array([-741.0, 353.2, 1099.0, -1807.0, 502.8, -83.4, 333.5, -130.9], dtype=np.float16)
    mean, var = N.moments(x16, axes=[0])
    assert mean.dtype == var.dtype == np.float16
    np.testing.assert_allclose(mean, np.mean(x16.astype(np.float32)).astype(np.float16))
    assert float(var) == float(np.finfo(np.float16).max)  # overflowing variance clipped, as Keras
    mean, var = N.moments(x, axes=[0], synchronized=True)
    np.testing.assert_allclose(var, np.var(x, axis=0), rtol=1e-5)


def test_moments_gradients():
    x = np.random.default_rng(5).normal(size=(3, 4, 2))
    check_op_gradients(lambda t: N.moments(t, axes=(0, 2)), x)
    check_op_gradients(lambda t: N.moments(t, axes=1, keepdims=True), x)


def test_batch_normalization_keras_values_and_gradients():
    x = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    mean, var = np.array([0.2, 0.3, 0.4]), np.array([4.0, 16.0, 64.0])
    out = N.batch_normalization(x, mean, var, axis=-1, offset=np.array([5.0, 10.0, 15.0]),
                                scale=np.array([10.0, 20.0, 30.0]), epsilon=1e-7)
    np.testing.assert_allclose(out, [[4.5, 9.5, 14.625], [6.0, 11.0, 15.75]])
    out = N.batch_normalization(x, mean, var, axis=1, epsilon=1e-7)
    np.testing.assert_allclose(out, [[-0.05, -0.025, -0.0125], [0.1, 0.05, 0.025]])
    rng = np.random.default_rng(6)
    args = (rng.normal(size=(2, 3, 4)), rng.normal(size=4), rng.uniform(0.5, 2, 4), rng.normal(size=4), rng.normal(size=4))
    check_op_gradients(lambda x, m, v, o, s: N.batch_normalization(x, m, v, axis=2, offset=o, scale=s), *args)
    check_op_gradients(
        lambda x, m, v: N.batch_normalization(x, m, v, axis=1) * x,
        rng.normal(size=(2, 3, 4)), rng.normal(size=3), rng.uniform(0.5, 2, 3),
    )


def test_batch_normalization_shapes_and_dtype():
    x = np.ones((2, 3), dtype=np.float32)
    assert N.batch_normalization(x, np.zeros(3), np.ones(3), axis=-1).dtype == np.float32
    with pytest.raises(ValueError, match=r"`variance`.*length x.shape\[axis\] = 3"):
        N.batch_normalization(x, np.zeros(3), np.ones(2), axis=-1)
    with pytest.raises(ValueError, match=r"`scale`"):
        N.batch_normalization(x, np.zeros(3), np.ones(3), axis=-1, scale=np.ones((3, 1)))


def test_normalize_keras_values():
    x = np.array([[1, 2, 3], [1, 2, 3]], dtype=np.float32)
    np.testing.assert_allclose(N.normalize(x, axis=None), [[0.18898225, 0.3779645, 0.56694674]] * 2, rtol=1e-6)
    np.testing.assert_allclose(N.normalize(x, axis=0), [[0.70710677] * 3] * 2, rtol=1e-6)
    np.testing.assert_allclose(N.normalize(x, axis=-1), [[0.26726124, 0.53452247, 0.8017837]] * 2, rtol=1e-6)
    np.testing.assert_allclose(N.normalize(x, order=3), [[0.30285344, 0.6057069, 0.9085603]] * 2, rtol=1e-6)
    tiny = np.array([[1e-6, 1e-8]], dtype=np.float32)
    np.testing.assert_allclose(N.normalize(tiny, axis=-1, order=2, epsilon=1e-5), [[1e-1, 1e-3]], rtol=1e-5)
    assert N.normalize(x).dtype == np.float32 and N.normalize([[1, 2]]).dtype == np.float32
    assert N.normalize(np.float32(2.0)).shape == (1,)


def test_normalize_gradients():
    x = np.random.default_rng(7).normal(size=(3, 4))
    for order in (2, 1, 3):
        check_op_gradients(lambda t: N.normalize(t, order=order), x)
        check_op_gradients(lambda t: N.normalize(t, axis=0, order=order) * t, x)
    # Where the bound 1/epsilon holds (the zero vector too) the op is x / epsilon.
    _, (g,) = grad_of(lambda t: N.normalize(t, epsilon=1e-3), np.array([[0.0, 0.0], [1e-4, 0.0]]))
    np.testing.assert_allclose(g, np.full((2, 2), 1e3))
    _, (g,) = grad_of(lambda t: N.normalize(t, order=3, epsilon=1e-3), np.zeros((1, 3)))
    np.testing.assert_allclose(g, np.full((1, 3), 1e3))


def test_normalize_order_validation():
    for order in ("a", -1, 0, 2.5, True):
        with pytest.raises(ValueError, match="Argument `order` must be an int >= 1"):
            N.normalize(np.array([1.0, 2.0]), order=order)


# ----------------------------------------------------------------- convolution


def same_pads(n, k, s, d):
    out = -(-n // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


def ref_conv2d(x, k, strides, padding, dilation, groups=1):
    """Float64 NHWC grouped cross-correlation, one output pixel at a time."""
    n, h, w, c = x.shape
    kh, kw, cin, cout = k.shape
    if padding == "same":
        (t, b), (l, r) = same_pads(h, kh, strides[0], dilation[0]), same_pads(w, kw, strides[1], dilation[1])
        x = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)))
    ph, pw = x.shape[1:3]
    oh = (ph - (kh - 1) * dilation[0] - 1) // strides[0] + 1
    ow = (pw - (kw - 1) * dilation[1] - 1) // strides[1] + 1
    out = np.zeros((n, oh, ow, cout))
    step = cout // groups
    for i in range(oh):
        for j in range(ow):
            rows = i * strides[0] + np.arange(kh) * dilation[0]
            cols = j * strides[1] + np.arange(kw) * dilation[1]
            patch = x[:, rows][:, :, cols]  # (n, kh, kw, c)
            for g in range(groups):
                out[:, i, j, g * step:(g + 1) * step] = np.tensordot(
                    patch[..., g * cin:(g + 1) * cin], k[..., g * step:(g + 1) * step], axes=3
                )
    return out


CONV2D_CASES = [((1, 1), "valid", (1, 1)), ((2, 1), "same", (1, 1)), ((1, 1), "same", (2, 1)),
                ((3, 2), "valid", (1, 1)), ((2, 2), "same", (1, 2))]


@pytest.mark.parametrize("strides,padding,dilation", CONV2D_CASES)
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_conv2d_matches_reference_and_gradients(strides, padding, dilation, data_format):
    rng = np.random.default_rng(8)
    x = rng.normal(size=(2, 7, 6, 3))
    k = rng.normal(size=(3, 2, 3, 4))
    expected = ref_conv2d(x, k, strides, padding, dilation)
    xin = x if data_format == "channels_last" else x.transpose(0, 3, 1, 2)
    got = N.conv(xin, k, strides=strides, padding=padding, data_format=data_format, dilation_rate=dilation)
    if data_format == "channels_first":
        got = got.numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    small = (xin[:1, :, :5, :5] if data_format == "channels_first" else xin[:1, :5, :5])
    check_op_gradients(
        lambda a, b: N.conv(a, b, strides=strides, padding=padding, data_format=data_format, dilation_rate=dilation),
        small, k,
    )


@pytest.mark.parametrize("strides,padding,dilation", [(1, "valid", 1), (2, "same", 1), (1, "same", 2), (3, "valid", 1)])
def test_conv1d_matches_reference_and_gradients(strides, padding, dilation):
    x = np.arange(120, dtype=float).reshape(2, 20, 3) / 50
    k = np.arange(24, dtype=float).reshape(4, 3, 2) / 10
    expected = ref_conv2d(x[:, None], k[None], (1, strides), padding, (1, dilation))[:, 0]
    got = N.conv(x, k, strides=strides, padding=padding, dilation_rate=dilation)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    got_cf = N.conv(x.transpose(0, 2, 1), k, strides=strides, padding=padding, data_format="channels_first",
                    dilation_rate=dilation)
    np.testing.assert_allclose(got_cf.numpy().transpose(0, 2, 1), expected, rtol=1e-12)
    check_op_gradients(lambda a, b: N.conv(a, b, strides, padding, dilation_rate=dilation), x[:1, :9], k)


def test_grouped_conv():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(2, 5, 5, 4))
    k = rng.normal(size=(3, 3, 2, 6))  # 2 groups of 2 input channels, 3 outputs each
    np.testing.assert_allclose(N.conv(x, k, padding="same"), ref_conv2d(x, k, (1, 1), "same", (1, 1), groups=2),
                               rtol=1e-12, atol=1e-12)
    check_op_gradients(lambda a, b: N.conv(a, b), x[:1, :4, :4], k)
    with pytest.raises(ValueError, match="divisible by the groups"):
        N.conv(x, rng.normal(size=(3, 3, 2, 5)))


def test_conv_errors_and_dtypes():
    with pytest.raises(ValueError, match="only 1-D and 2-D"):
        N.conv(np.ones((1, 4, 4, 4, 2)), np.ones((2, 2, 2, 2, 2)))
    with pytest.raises(ValueError, match="kernel of rank 4"):
        N.conv(np.ones((1, 4, 4, 2)), np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="evenly divisible"):
        N.conv(np.ones((1, 4, 4, 3)), np.ones((2, 2, 2, 1)))
    with pytest.raises(ValueError, match="empty output"):
        N.conv(np.ones((1, 2, 2, 1)), np.ones((3, 3, 1, 1)))
    with pytest.raises(ValueError, match="padding"):
        N.conv(np.ones((1, 4, 4, 1)), np.ones((3, 3, 1, 1)), padding="full")
    with pytest.raises(ValueError, match="strides"):
        N.conv(np.ones((1, 4, 4, 1)), np.ones((3, 3, 1, 1)), strides=(1, 0))
    y = N.conv(np.ones((1, 4, 4, 1), dtype=np.float32), np.ones((3, 3, 1, 1), dtype=np.float32))
    assert y.dtype == np.float32 and y.shape == (1, 2, 2, 1)


def ref_depthwise(x, k, strides, padding, dilation):
    kh, kw, c, m = k.shape
    parts = [ref_conv2d(x[..., ci:ci + 1], k[:, :, ci:ci + 1, :], strides, padding, dilation) for ci in range(c)]
    return np.concatenate(parts, axis=-1)  # output channel c * m + j


@pytest.mark.parametrize("strides,padding,dilation", CONV2D_CASES)
def test_depthwise_conv2d(strides, padding, dilation):
    rng = np.random.default_rng(10)
    x = rng.normal(size=(2, 7, 6, 3))
    k = rng.normal(size=(3, 2, 3, 2))
    expected = ref_depthwise(x, k, strides, padding, dilation)
    np.testing.assert_allclose(N.depthwise_conv(x, k, strides, padding, dilation_rate=dilation), expected,
                               rtol=1e-12, atol=1e-12)
    cf = N.depthwise_conv(x.transpose(0, 3, 1, 2), k, strides, padding, "channels_first", dilation)
    np.testing.assert_allclose(cf.numpy().transpose(0, 2, 3, 1), expected, rtol=1e-12, atol=1e-12)
    check_op_gradients(lambda a, b: N.depthwise_conv(a, b, strides, padding, dilation_rate=dilation), x[:1, :5, :5], k)
    check_op_gradients(
        lambda a, b: N.depthwise_conv(a, b, strides, padding, "channels_first", dilation),
        x[:1, :5, :5].transpose(0, 3, 1, 2), k,
    )


def test_depthwise_conv1d_and_errors():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(2, 9, 3))
    k = rng.normal(size=(3, 3, 2))
    expected = ref_depthwise(x[:, None], k[None], (1, 2), "same", (1, 1))[:, 0]
    np.testing.assert_allclose(N.depthwise_conv(x, k, 2, "same"), expected, rtol=1e-12)
    check_op_gradients(lambda a, b: N.depthwise_conv(a, b, 1, "valid", dilation_rate=2), x[:1], k)
    with pytest.raises(ValueError, match="match the kernel's in_channels"):
        N.depthwise_conv(x, rng.normal(size=(3, 2, 2)))
    with pytest.raises(ValueError, match="only 1-D and 2-D"):
        N.depthwise_conv(np.ones((1, 3, 3, 3, 1)), np.ones((1, 1, 1, 1, 1)))


# ----------------------------------------------------------------- pooling


def ref_pool2d(x, pool, strides, padding, kind):
    n, h, w, c = x.shape
    if padding == "same":
        oh, ow = -(-h // strides[0]), -(-w // strides[1])
        t = max((oh - 1) * strides[0] + pool[0] - h, 0) // 2
        l = max((ow - 1) * strides[1] + pool[1] - w, 0) // 2
    else:
        oh, ow = (h - pool[0]) // strides[0] + 1, (w - pool[1]) // strides[1] + 1
        t = l = 0
    out = np.zeros((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * strides[0] - t, j * strides[1] - l
            win = x[:, max(r0, 0):min(r0 + pool[0], h), max(c0, 0):min(c0 + pool[1], w)]
            out[:, i, j] = win.max(axis=(1, 2)) if kind == "max" else win.mean(axis=(1, 2))
    return out


POOL_CASES = [((2, 2), (1, 1), "valid"), ((2, 2), (2, 1), "same"), ((2, 3), (3, 3), "same"), ((3, 3), (2, 2), "valid")]


@pytest.mark.parametrize("pool,strides,padding", POOL_CASES)
@pytest.mark.parametrize("kind", ["max", "average"])
def test_pool2d_matches_reference_and_gradients(pool, strides, padding, kind):
    fn = N.max_pool if kind == "max" else N.average_pool
    x = np.random.default_rng(12).permutation(2 * 7 * 6 * 3).reshape(2, 7, 6, 3) / 10.0  # distinct: no max ties
    expected = ref_pool2d(x, pool, strides, padding, "max" if kind == "max" else "avg")
    np.testing.assert_allclose(fn(x, pool, strides, padding), expected, rtol=1e-13)
    cf = fn(x.transpose(0, 3, 1, 2), pool, strides, padding, data_format="channels_first")
    np.testing.assert_allclose(cf.numpy().transpose(0, 2, 3, 1), expected, rtol=1e-13)
    check_op_gradients(lambda t: fn(t, pool, strides, padding), x[:1, :5, :5, :2], atol=1e-7)


@pytest.mark.parametrize("kind", ["max", "average"])
def test_pool1d_and_default_strides(kind):
    fn = N.max_pool if kind == "max" else N.average_pool
    x = np.arange(120, dtype=float).reshape(2, 20, 3)
    expected = ref_pool2d(x[:, None], (1, 2), (1, 2), "same", "max" if kind == "max" else "avg")[:, 0]
    np.testing.assert_allclose(fn(x, 2, padding="same"), expected)  # strides default to pool_size
    np.testing.assert_allclose(fn(x.transpose(0, 2, 1), 2, 2, "same", "channels_first").numpy().transpose(0, 2, 1), expected)
    check_op_gradients(lambda t: fn(t, 3, 2), np.random.default_rng(13).normal(size=(1, 9, 2)))
    with pytest.raises(ValueError, match="pool_size"):
        fn(x, 0)
    with pytest.raises(ValueError, match="only 1-D and 2-D"):
        fn(np.ones((1, 2, 2, 2, 1)), 2)


# ----------------------------------------------------------------- cross-entropies: Keras's values


def test_crossentropy_keras_values():
    # Keras's expected values carry float32 digits: its assertAllClose tolerance (1e-6).
    close = functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-6)
    target = np.array([[0.1], [0.9], [0.2], [1.0]])
    output = np.array([[0.1], [0.2], [0.3], [0.4]])
    close(N.binary_crossentropy(target, output), [[0.32508277], [1.47080801], [0.52613434], [0.91629048]])
    close(N.binary_crossentropy(target, output, from_logits=True),
                               [[0.73439666], [0.61813887], [0.79435524], [0.51301525]])
    close(N.binary_crossentropy(target, np.array([[0.99], [-0.2], [0.9], [-0.4]]), from_logits=True),
                               [[1.206961], [0.778139], [1.061154], [0.913015]], rtol=1e-6)
    t = np.array([[0.33008796, 0.0391289, 0.9503603], [0.80376694, 0.92363342, 0.19147756]])
    o = np.array([[0.23446431, 0.35822914, 0.06683268], [0.3413979, 0.05420256, 0.81619654]])
    close(N.categorical_crossentropy(t, o), [2.54095299, 3.96374412])
    close(N.categorical_crossentropy(t, o, axis=0), [0.71683073, 1.87988172, 2.46810762])
    close(N.categorical_crossentropy(t, o, from_logits=True), [1.59419954, 2.49880593])
    o2 = np.array([[1.23446431, -0.35822914, 1.06683268], [0.3413979, -0.05420256, 0.81619654]])
    close(N.categorical_crossentropy(t, o2, from_logits=True), [1.16825923, 2.55436813])
    labels = np.array([0, 1, 2])
    probs = np.array([[0.9, 0.05, 0.05], [0.05, 0.89, 0.06], [0.05, 0.01, 0.94]])
    close(N.sparse_categorical_crossentropy(labels, probs), [0.105361, 0.116534, 0.061875], rtol=1e-5)
    logits = np.array([[8.0, 1.0, 1.0], [0.0, 9.0, 1.0], [2.0, 3.0, 5.0]])
    close(N.sparse_categorical_crossentropy(labels, logits, from_logits=True),
                               [0.001822, 0.000459, 0.169846], rtol=1e-3)


def probabilities(rng, shape, axis=-1):
    p = rng.uniform(0.05, 1.0, shape)
    return p / p.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_categorical_gradients_unfused(axis):
    rng = np.random.default_rng(14)
    t = probabilities(rng, (3, 4, 5), axis)
    p = rng.uniform(0.05, 1.0, (3, 4, 5))  # not normalised: the renormalisation is differentiated too
    check_op_gradients(lambda o: N.categorical_crossentropy(t, o, axis=axis), p, rtol=1e-6, atol=1e-8)
    check_op_gradients(lambda o: N.categorical_crossentropy(t, o, axis=axis, from_logits=True), rng.normal(size=(3, 4, 5)))
    check_op_gradients(lambda tt, o: N.categorical_crossentropy(tt, o, axis=axis), t, p)  # target gradient too


def test_sparse_and_binary_gradients_unfused():
    rng = np.random.default_rng(15)
    labels = np.array([[0, 2], [3, 1], [1, 1]])
    p = rng.uniform(0.05, 1.0, (3, 2, 4))
    check_op_gradients(lambda o: N.sparse_categorical_crossentropy(labels, o), p)
    check_op_gradients(lambda o: N.sparse_categorical_crossentropy(labels, o, from_logits=True), rng.normal(size=(3, 2, 4)))
    check_op_gradients(lambda o: N.sparse_categorical_crossentropy(labels[..., None], o), p)  # trailing 1 squeezed
    q = rng.uniform(0.05, 1.0, (3, 4, 2))
    check_op_gradients(lambda o: N.sparse_categorical_crossentropy(np.array([[0, 1], [2, 3], [1, 0]]), o, axis=1), q)
    t = rng.uniform(0, 1, (4, 3))
    check_op_gradients(lambda o: N.binary_crossentropy(t, o), rng.uniform(0.05, 0.95, (4, 3)))
    check_op_gradients(lambda o: N.binary_crossentropy(t, o, from_logits=True), rng.normal(scale=3, size=(4, 3)))
    check_op_gradients(lambda tt, o: N.binary_crossentropy(tt, o), t, rng.uniform(0.05, 0.95, (4, 3)))
    check_op_gradients(lambda tt, o: N.binary_crossentropy(tt, o, from_logits=True), t, rng.normal(size=(4, 3)))


def test_clipped_probabilities_get_no_gradient():
    _, (g,) = grad_of(lambda o: N.binary_crossentropy(np.array([1.0, 0.0, 1.0]), o), np.array([0.0, 1.0, 0.5]))
    assert g[0] == 0 and g[1] == 0 and g[2] == pytest.approx(-2.0)
    _, (g,) = grad_of(lambda o: N.categorical_crossentropy(np.array([[1.0, 0.0]]), o), np.array([[0.0, 1.0]]))
    np.testing.assert_array_equal(g, [[0.0, 0.0]])  # q_0 = 0 is clipped, q_1 is not weighted
    y = N.categorical_crossentropy(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]))
    assert float(y[0]) == pytest.approx(-math.log(EPS))


def test_crossentropy_dtypes():
    rng = np.random.default_rng(17)
    t = probabilities(rng, (3, 4))
    for dtype in (np.float16, np.float32):
        p = probabilities(rng, (3, 4)).astype(dtype)
        y, (g,) = grad_of(lambda o: N.categorical_crossentropy(t, o), p)
        assert y.dtype == dtype and g.dtype == dtype
        assert N.sparse_categorical_crossentropy([0, 1, 2], p).dtype == dtype
        assert N.binary_crossentropy(t, p).dtype == dtype
    # float16 computes in float32: log(1 - eps) is not 0 there.
    p16 = np.array([[1.0, 0.0]], dtype=np.float16)
    ref32 = -math.log(np.float32(1.0) - np.float32(EPS))
    assert float(N.binary_crossentropy(np.array([[1.0, 1.0]]), p16)[0, 0]) == pytest.approx(ref32, rel=1e-3)


def test_crossentropy_argument_errors():
    with pytest.raises(ValueError, match="same shape"):
        N.categorical_crossentropy(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="at least rank 1"):
        N.categorical_crossentropy(np.float32(1), np.float32(1))
    with pytest.raises(ValueError, match="same shape"):
        N.binary_crossentropy(np.ones((2, 3)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="except output's class axis"):
        N.sparse_categorical_crossentropy(np.array([0, 1, 2]), np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"Invalid value in `target`: 3 at flat index 1"):
        N.sparse_categorical_crossentropy(np.array([0, 3]), np.ones((2, 3)) / 3)
    with pytest.raises(ValueError, match=r"1.5"):
        N.sparse_categorical_crossentropy(np.array([0.0, 1.5]), np.ones((2, 3)) / 3)
    with pytest.raises(ValueError, match="out of range"):
        N.categorical_crossentropy(np.ones((2, 3)), np.ones((2, 3)), axis=2)


# ----------------------------------------------------------------- cross-entropies: fusion


def softmax_backward(p, dp, axis=-1):
    return p * (dp - np.sum(dp * p, axis=axis, keepdims=True))


def fused_and_unfused(loss_fn, logits, activation, extra=None):
    """Gradient wrt the logits through the fused node, and the same chain with the fusion cut.

    The unfused one differentiates the loss wrt a fresh copy of the
    probabilities, then the activation's Jacobian by hand.
    """
    z = watched(logits)
    with autodiff.GradientTape() as tape:
        probs = activation(z)
        loss = loss_fn(probs)
        total = ops.sum(loss) + (0 if extra is None else ops.sum(probs * extra))
    fused = tape.gradient(total, z)
    loss_node = loss.node
    p = probs.numpy()
    copy = watched(p)
    with autodiff.GradientTape() as tape:
        plain = ops.sum(loss_fn(copy))
    dp = tape.gradient(plain, copy)
    if extra is not None:
        dp = dp + extra
    return fused, dp, p, float(total), loss_node


@pytest.mark.parametrize("axis", [-1, 0])
def test_categorical_fused_gradient_equals_unfused(axis):
    rng = np.random.default_rng(18)
    logits = rng.normal(size=(4, 5))
    t = probabilities(rng, (4, 5), axis) * rng.uniform(0.5, 1.5, (4, 5))  # sum(t) != 1 too
    fused, dp, p, _, node = fused_and_unfused(
        lambda probs: N.categorical_crossentropy(t, probs, axis=axis), logits, lambda z: N.softmax(z, axis=axis)
    )
    assert node.op == "categorical_crossentropy" and node.inputs[0].node is None  # recorded on the logits
    np.testing.assert_allclose(fused, softmax_backward(p, dp, axis), rtol=1e-10, atol=1e-14)
    ts = t.sum(axis=axis, keepdims=True)
    np.testing.assert_allclose(fused, p * ts - t, rtol=1e-12, atol=1e-15)


def test_sparse_and_binary_fused_gradients_equal_unfused():
    rng = np.random.default_rng(19)
    logits = rng.normal(size=(6, 4))
    labels = np.array([0, 3, 1, 2, 2, 0])
    fused, dp, p, _, _ = fused_and_unfused(lambda q: N.sparse_categorical_crossentropy(labels, q), logits, N.softmax)
    np.testing.assert_allclose(fused, softmax_backward(p, dp), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(fused, p - np.eye(4)[labels], rtol=1e-12, atol=1e-15)
    t = rng.uniform(0, 1, (6, 4))
    fused, dp, p, _, node = fused_and_unfused(lambda q: N.binary_crossentropy(t, q), logits, N.sigmoid)
    assert node.op == "binary_crossentropy"
    np.testing.assert_allclose(fused, dp * p * (1 - p), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(fused, p - t, rtol=1e-12, atol=1e-15)


def test_fused_value_is_the_clipped_loss_and_the_gradient_ignores_the_clip():
    logits = np.array([[40.0, 0.0, -40.0]])  # p[2] ~ 4e-36 < eps: clipped
    t = np.array([[0.0, 0.0, 1.0]])
    z = watched(logits)
    with autodiff.GradientTape() as tape:
        probs = N.softmax(z)
        loss = N.categorical_crossentropy(t, probs)
    g = tape.gradient(ops.sum(loss), z)
    assert float(loss[0]) == pytest.approx(-math.log(EPS))
    p = probs.numpy()
    np.testing.assert_allclose(g, p - t, atol=1e-15)  # the unclipped loss's derivative (the clip would give 0)


def test_fan_out_sums_the_fused_and_the_other_gradients():
    rng = np.random.default_rng(20)
    logits = rng.normal(size=(3, 4))
    t = probabilities(rng, (3, 4))
    w = rng.normal(size=(3, 4))
    fused, dp, p, _, _ = fused_and_unfused(lambda q: N.categorical_crossentropy(t, q), logits, N.softmax, extra=w)
    np.testing.assert_allclose(fused, (p - t) + softmax_backward(p, w), rtol=1e-10, atol=1e-14)
    labels = np.array([1, 0, 3])
    fused, dp, p, _, _ = fused_and_unfused(lambda q: N.sparse_categorical_crossentropy(labels, q), logits, N.softmax, extra=w)
    np.testing.assert_allclose(fused, (p - np.eye(4)[labels]) + softmax_backward(p, w), rtol=1e-10, atol=1e-14)
    tb = rng.uniform(0, 1, (3, 4))
    fused, dp, p, _, _ = fused_and_unfused(lambda q: N.binary_crossentropy(tb, q), logits, N.sigmoid, extra=w)
    np.testing.assert_allclose(fused, (p - tb) + w * p * (1 - p), rtol=1e-10, atol=1e-14)


def test_fusion_needs_the_matching_activation_and_axis():
    rng = np.random.default_rng(21)
    z = watched(rng.normal(size=(3, 4)))
    t = probabilities(rng, (3, 4))
    # A softmax over another axis is not fused: the loss differentiates the probabilities.
    loss = N.categorical_crossentropy(t, N.softmax(z, axis=0))
    assert loss.node.inputs[0].node.op == "softmax"
    loss = N.categorical_crossentropy(t, N.sigmoid(z))
    assert loss.node.inputs[0].node.op == "sigmoid"
    loss = N.binary_crossentropy(np.ones((3, 4)) / 2, N.softmax(z))
    assert loss.node.inputs[0].node.op == "softmax"
    # from_logits=True never fuses (its input is the logits already).
    probs = N.softmax(z)
    assert N.categorical_crossentropy(t, probs, from_logits=True).node.inputs[0] is probs
    # Fused: the node's input is the softmax's input.
    assert N.categorical_crossentropy(t, probs).node.inputs[0] is z


def test_fusion_looks_through_a_float_cast():
    rng = np.random.default_rng(22)
    logits = rng.normal(size=(3, 4)).astype(np.float16)
    t = probabilities(rng, (3, 4))
    z = Tensor(logits)
    z.watched = True
    with autodiff.GradientTape() as tape:
        probs = ops.cast(N.softmax(z), "float32")
        loss = ops.sum(N.categorical_crossentropy(t, probs))
    assert loss.dtype == np.float32
    g = tape.gradient(loss, z)
    assert g.dtype == np.float16
    p = probs.numpy()
    np.testing.assert_allclose(g.astype(np.float32), (p * t.sum(-1, keepdims=True) - t).astype(np.float16), rtol=1e-3)


def test_activations_module_softmax_and_sigmoid_fuse():
    from gpulayers import activations

    rng = np.random.default_rng(23)
    z = watched(rng.normal(size=(2, 3)))
    assert N.categorical_crossentropy(np.eye(3)[[0, 2]], activations.softmax(z)).node.inputs[0] is z
    assert N.binary_crossentropy(np.ones((2, 3)), activations.sigmoid(z)).node.inputs[0] is z


def test_nn_ops_are_in_the_public_namespace():
    for name in N.__all__:
        assert getattr(ops, name) is getattr(N, name)
    assert config.epsilon() == EPS


# ----------------------------------------------------------------- conv_transpose


def keras_transpose_pads(k, s, d, padding, output_padding):
    """Keras's (JAX's) padding (lo, hi) of the stride-dilated input, for one axis (negative: cropped)."""
    span = (k - 1) * d + 1
    if padding == "valid":
        extra = max(span, s) - span if output_padding is None else output_padding
        return span - 1, span - 1 + extra
    total = s + span - 2 if output_padding is None else span + span % 2 - 2 + output_padding
    lo = min(total // 2 + total % 2, span - 1)
    return lo, total - lo


def ref_conv_transpose2d(x, k, strides, padding, output_padding, dilation):
    """Float64 NHWC transposed convolution as JAX defines it: spread the input `strides` apart, pad it,
    correlate it with the spatially flipped kernel (kh, kw, out, in)."""
    n, h, w, c = x.shape
    kh, kw, f, cin = k.shape
    assert cin == c
    (sh, sw), (dh, dw) = strides, dilation
    ops_ = (None, None) if output_padding is None else output_padding
    z = np.zeros((n, (h - 1) * sh + 1, (w - 1) * sw + 1, c))
    z[:, ::sh, ::sw] = x
    for axis, (kk, s, d, op) in ((1, (kh, sh, dh, ops_[0])), (2, (kw, sw, dw, ops_[1]))):
        lo, hi = keras_transpose_pads(kk, s, d, padding, op)
        width = [(0, 0)] * 4
        width[axis] = (max(lo, 0), max(hi, 0))
        z = np.pad(z, width)
        index = [slice(None)] * 4
        index[axis] = slice(max(-lo, 0), z.shape[axis] - max(-hi, 0))
        z = z[tuple(index)]
    flipped = k[::-1, ::-1]
    oh = z.shape[1] - (kh - 1) * dh
    ow = z.shape[2] - (kw - 1) * dw
    out = np.zeros((n, max(oh, 0), max(ow, 0), f))
    for i in range(max(oh, 0)):
        for j in range(max(ow, 0)):
            patch = z[:, i + np.arange(kh) * dh][:, :, j + np.arange(kw) * dw]  # (n, kh, kw, c)
            out[:, i, j] = np.einsum("nabc,abfc->nf", patch, flipped)
    return out


CONV_TRANSPOSE_CASES = [
    # kernel, strides, padding, output_padding, dilation, (h, w)
    ((3, 3), (1, 1), "valid", None, (1, 1), (4, 5)),
    ((3, 2), (2, 2), "valid", None, (1, 1), (3, 4)),
    ((2, 3), (3, 2), "valid", (1, 0), (1, 1), (3, 3)),
    ((3, 3), (2, 2), "same", None, (1, 1), (5, 4)),
    ((4, 3), (2, 3), "same", (1, 2), (1, 1), (3, 2)),
    ((3, 3), (1, 1), "same", None, (2, 1), (5, 6)),
    ((2, 2), (1, 1), "valid", None, (2, 3), (4, 3)),
    ((1, 1), (3, 2), "valid", None, (1, 1), (2, 3)),  # stride beyond the kernel: zero rows and columns
    ((5, 4), (1, 2), "same", (0, 1), (1, 1), (1, 3)),
]


@pytest.mark.parametrize("kernel,strides,padding,output_padding,dilation,hw", CONV_TRANSPOSE_CASES)
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_conv_transpose_matches_reference(kernel, strides, padding, output_padding, dilation, hw, data_format):
    rng = np.random.default_rng(30)
    x = rng.normal(size=(2, *hw, 3))
    k = rng.normal(size=(*kernel, 4, 3))
    expected = ref_conv_transpose2d(x, k, strides, padding, output_padding, dilation)
    xin = x if data_format == "channels_last" else x.transpose(0, 3, 1, 2)
    got = N.conv_transpose(xin, k, strides, padding, output_padding, data_format, dilation).numpy()
    if data_format == "channels_first":
        got = got.transpose(0, 2, 3, 1)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel,strides,padding,output_padding,dilation,hw", CONV_TRANSPOSE_CASES[1::2])
def test_conv_transpose_gradients(kernel, strides, padding, output_padding, dilation, hw):
    rng = np.random.default_rng(31)
    x = rng.normal(size=(1, *hw, 2))
    k = rng.normal(size=(*kernel, 3, 2))
    check_op_gradients(lambda a, b: N.conv_transpose(a, b, strides, padding, output_padding, None, dilation), x, k)
    xt = x.transpose(0, 3, 1, 2)
    check_op_gradients(
        lambda a, b: N.conv_transpose(a, b, strides, padding, output_padding, "channels_first", dilation), xt, k
    )


def test_conv_transpose_output_padding_past_the_stride_gives_zero_rows():
    # The op (as Keras's) takes output_padding >= strides: the extra rows/columns no input reaches are 0.
    rng = np.random.default_rng(32)
    x = rng.normal(size=(1, 3, 2, 2))
    k = rng.normal(size=(2, 3, 2, 2))
    y = N.conv_transpose(x, k, strides=(2, 1), output_padding=(3, 2)).numpy()
    expected = ref_conv_transpose2d(x, k, (2, 1), "valid", (3, 2), (1, 1))
    assert y.shape == (1, 4 + 2 + 3, 1 + 3 + 2, 2)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    assert not y[:, -3:].any() and not y[:, :, -2:].any()
    check_op_gradients(lambda a, b: N.conv_transpose(a, b, strides=(2, 1), output_padding=(3, 2)), x, k)


def test_conv_transpose_empty_axis_and_empty_batch():
    # 'same' with output_padding: (n - 1) * stride + span % 2 + output_padding can be 0, as in Keras.
    x = np.ones((2, 1, 3, 1))
    y, (dx, dk) = grad_of(lambda a, b: N.conv_transpose(a, b, 2, "same", (0, 1)), x, np.ones((2, 2, 3, 1)))
    assert y.shape == (2, 0, 5, 3)
    assert dx.shape == x.shape and not np.any(dx) and dk.shape == (2, 2, 3, 1) and not np.any(dk)
    assert N.conv_transpose(np.ones((0, 3, 3, 2)), np.ones((2, 2, 4, 2)), 2).shape == (0, 6, 6, 4)


def test_conv_transpose_1d_matches_the_2d_reference():
    rng = np.random.default_rng(33)
    x = rng.normal(size=(2, 7, 3))
    k = rng.normal(size=(3, 2, 3))
    for strides, padding, output_padding, dilation in [(1, "valid", None, 1), (2, "same", None, 1),
                                                       (3, "valid", 1, 1), (1, "same", 0, 2)]:
        expected = ref_conv_transpose2d(x[:, None], k[None], (1, strides), padding,
                                        None if output_padding is None else (0, output_padding), (1, dilation))[:, 0]
        got = N.conv_transpose(x, k, strides, padding, output_padding, dilation_rate=dilation)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
        got_cf = N.conv_transpose(x.transpose(0, 2, 1), k, strides, padding, output_padding, "channels_first", dilation)
        np.testing.assert_allclose(got_cf.numpy().transpose(0, 2, 1), expected, rtol=1e-12, atol=1e-12)
    check_op_gradients(lambda a, b: N.conv_transpose(a, b, 2, "same"), x[:1, :4], k)


def test_conv_transpose_is_the_adjoint_of_conv():
    # <conv(u, k), v> == <u, conv_transpose(v, k)>: the transposed convolution is the convolution's transpose.
    rng = np.random.default_rng(34)
    k = rng.normal(size=(3, 2, 4, 5))  # conv: 4 -> 5 channels; conv_transpose: 5 -> 4
    for strides, padding, dilation in [((2, 3), "valid", (1, 1)), ((1, 1), "same", (2, 1)), ((2, 2), "same", (1, 1))]:
        u = rng.normal(size=(2, 8, 9, 4))
        v_shape = N.conv(u, k, strides, padding, dilation_rate=dilation).shape
        v = rng.normal(size=v_shape)
        uv = float(np.sum(N.conv(u, k, strides, padding, dilation_rate=dilation).numpy() * v))
        # The output_padding that gives back u's size: the transposed convolution is then conv's adjoint.
        spans = [(k.shape[i] - 1) * dilation[i] + 1 for i in range(2)]
        extra = tuple(u.shape[1 + i] - (v_shape[1 + i] - 1) * strides[i] - (spans[i] if padding == "valid" else spans[i] % 2)
                      for i in range(2))
        ut = N.conv_transpose(v, k, strides, padding, extra, dilation_rate=dilation).numpy()
        assert ut.shape == u.shape
        np.testing.assert_allclose(float(np.sum(u * ut)), uv, rtol=1e-10)


def test_conv_transpose_errors_and_dtypes():
    with pytest.raises(ValueError, match=r"input channels=3, kernel input channels=2"):
        N.conv_transpose(np.ones((1, 4, 4, 3)), np.ones((2, 2, 5, 2)))
    with pytest.raises(ValueError, match="kernel of rank 4"):
        N.conv_transpose(np.ones((1, 4, 4, 2)), np.ones((2, 5, 2)))
    with pytest.raises(ValueError, match="only 1-D and 2-D"):
        N.conv_transpose(np.ones((1, 4, 4, 4, 2)), np.ones((2, 2, 2, 2, 2)))
    with pytest.raises(ValueError, match="padding.*'full'"):
        N.conv_transpose(np.ones((1, 4, 4, 1)), np.ones((3, 3, 1, 1)), padding="full")
    with pytest.raises(ValueError, match=r"output_padding.*-1"):
        N.conv_transpose(np.ones((1, 4, 4, 1)), np.ones((3, 3, 1, 1)), 2, output_padding=(0, -1))
    with pytest.raises(ValueError, match="strides"):
        N.conv_transpose(np.ones((1, 4, 4, 1)), np.ones((3, 3, 1, 1)), strides=(1, 0))
    y = N.conv_transpose(np.ones((1, 4, 4, 2), np.float32), np.ones((3, 3, 5, 2), np.float32), 2, "same")
    assert y.dtype == np.float32 and y.shape == (1, 8, 8, 5)
    assert ops.conv_transpose is N.conv_transpose and "conv_transpose" in ops.__all__




@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras's torch backend converting to NumPy
def test_conv_transpose_matcheskeras_or_skip():
    keras = keras_or_skip()
    rng = np.random.default_rng(35)
    for kernel, strides, padding, output_padding, dilation, hw in CONV_TRANSPOSE_CASES:
        for data_format in ("channels_last", "channels_first"):
            x = rng.normal(size=(2, *hw, 3)).astype(np.float32)
            if data_format == "channels_first":
                x = x.transpose(0, 3, 1, 2).copy()
            k = rng.normal(size=(*kernel, 4, 3)).astype(np.float32)
            args = (strides, padding, output_padding, data_format, dilation)
            theirs = keras.ops.convert_to_numpy(keras.ops.conv_transpose(x, k, *args))
            np.testing.assert_allclose(N.conv_transpose(x, k, *args).numpy(), theirs, rtol=1e-5, atol=1e-5)
