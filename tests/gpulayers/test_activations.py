"""Tests for gpulayers.activations against plain float64 references, and their
gradients on the tape against finite differences."""

import functools
import math

import numpy as np
import pytest
from helpers import check_op_gradients, grad_of, keras_or_skip
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from backends import get_ops
from gpulayers import activations as A
from gpulayers import autodiff, ops
from gpulayers.autodiff import Tensor
from gpulayers.variables import Variable

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


# ----------------------------------------------------------------- references
# Scalar float64 formulas written from the definitions (Keras 3 semantics).


def ref_relu(v, negative_slope=0.0, max_value=None, threshold=0.0):
    if negative_slope != 0 and max_value is None and threshold == 0:
        return max(v, negative_slope * v)
    if threshold != 0:
        out = v if v > threshold else 0.0
    else:
        out = max(v, 0.0)
    if max_value is not None:
        out = min(max(out, 0.0), max_value)
    if negative_slope != 0:
        out -= negative_slope * max(threshold - v, 0.0)
    return out


def ref_sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


def ref_softplus(v):
    return math.log1p(math.exp(v))


def ref_elu(v, alpha=1.0):
    return v if v >= 0 else alpha * math.expm1(v)


def ref_hard_sigmoid(v):
    return min(max(v / 6.0 + 0.5, 0.0), 1.0)


REFS = {
    "relu": ref_relu,
    "leaky_relu": lambda v, negative_slope=0.2: v if v >= 0 else negative_slope * v,
    "relu6": lambda v: min(max(v, 0.0), 6.0),
    "elu": ref_elu,
    "selu": lambda v: SELU_SCALE * ref_elu(v, SELU_ALPHA),
    "softplus": ref_softplus,
    "softsign": lambda v: v / (1.0 + abs(v)),
    "sigmoid": ref_sigmoid,
    "tanh": math.tanh,
    "silu": lambda v: v * ref_sigmoid(v),
    "swish": lambda v: v * ref_sigmoid(v),
    "gelu": lambda v, approximate=False: (
        0.5 * v * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v**3)))
        if approximate
        else 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0)))
    ),
    "exponential": math.exp,
    "hard_sigmoid": ref_hard_sigmoid,
    "hard_silu": lambda v: v * ref_hard_sigmoid(v),
    "hard_swish": lambda v: v * ref_hard_sigmoid(v),
    "mish": lambda v: v * math.tanh(ref_softplus(v)),
    "linear": lambda v: v,
    "celu": lambda v, alpha=1.0: max(v, 0.0) + alpha * math.expm1(min(v, 0.0) / alpha),
    "log_sigmoid": lambda v: math.log(ref_sigmoid(v)),
    "hard_tanh": lambda v: min(max(v, -1.0), 1.0),
    "hard_shrink": lambda v, threshold=0.5: v if abs(v) > threshold else 0.0,
    "soft_shrink": lambda v, threshold=0.5: v - threshold if v > threshold else (v + threshold if v < -threshold else 0.0),
    "tanh_shrink": lambda v: v - math.tanh(v),
    "threshold": lambda v, threshold, default_value: v if v > threshold else default_value,
    "sparse_plus": lambda v: 0.0 if v <= -1 else ((v + 1) ** 2 / 4 if v < 1 else v),
    "sparse_sigmoid": lambda v: 0.0 if v <= -1 else (1.0 if v >= 1 else (v + 1) / 2),
    "squareplus": lambda v, b=4: (v + math.sqrt(v * v + b)) / 2,
}

# (name, kwargs, kink points where the derivative jumps)
CASES = [
    ("relu", {}, [0.0]),
    ("relu", {"negative_slope": 0.1}, [0.0]),
    ("relu", {"negative_slope": 1.5}, [0.0]),  # Keras's max(x, s*x) branch with s > 1
    ("relu", {"max_value": 2.5}, [0.0, 2.5]),
    ("relu", {"max_value": 6}, [0.0, 6.0]),
    ("relu", {"threshold": 1.0}, [1.0]),
    ("relu", {"threshold": -1.0}, [-1.0]),  # passes (-1, 0) through, as Keras does
    ("relu", {"threshold": -1.0, "max_value": 2.0}, [-1.0, 0.0, 2.0]),
    ("relu", {"negative_slope": 0.3, "max_value": 6}, [0.0, 6.0]),
    ("relu", {"negative_slope": 0.2, "threshold": 1.5, "max_value": 3.0}, [0.0, 1.5, 3.0]),
    ("leaky_relu", {}, [0.0]),
    ("leaky_relu", {"negative_slope": 0.5}, [0.0]),
    ("relu6", {}, [0.0, 6.0]),
    ("elu", {}, [0.0]),
    ("elu", {"alpha": 0.5}, [0.0]),
    ("selu", {}, [0.0]),
    ("softplus", {}, []),
    ("softsign", {}, [0.0]),
    ("sigmoid", {}, []),
    ("tanh", {}, []),
    ("silu", {}, []),
    ("swish", {}, []),
    ("gelu", {}, []),
    ("gelu", {"approximate": True}, []),
    ("exponential", {}, []),
    ("hard_sigmoid", {}, [-3.0, 3.0]),
    ("hard_silu", {}, [-3.0, 3.0]),
    ("hard_swish", {}, [-3.0, 3.0]),
    ("mish", {}, []),
    ("linear", {}, []),
    ("celu", {}, [0.0]),
    ("celu", {"alpha": 2.0}, [0.0]),
    ("log_sigmoid", {}, []),
    ("hard_tanh", {}, [-1.0, 1.0]),
    ("hard_shrink", {}, [-0.5, 0.5]),
    ("hard_shrink", {"threshold": 2.0}, [-2.0, 2.0]),
    ("soft_shrink", {}, [-0.5, 0.5]),
    ("soft_shrink", {"threshold": 1.5}, [-1.5, 1.5]),
    ("tanh_shrink", {}, []),
    ("threshold", {"threshold": 0.5, "default_value": -2.0}, [0.5]),
    ("sparse_plus", {}, [-1.0, 1.0]),
    ("sparse_sigmoid", {}, [-1.0, 1.0]),
    ("squareplus", {}, []),
    ("squareplus", {"b": 0.5}, []),
]
CASE_IDS = [f"{n}-{k}" if k else n for n, k, _ in CASES]


def sample(kinks, n=400, low=-8.0, high=8.0, seed=0):
    """Points in [low, high] at least 1e-2 away from every kink."""
    x = np.random.default_rng(seed).uniform(low, high, n)
    for k in kinks:
        x = x[np.abs(x - k) > 1e-2]
    return x


def reference(name, x, kwargs):
    return np.array([REFS[name](float(v), **kwargs) for v in x.ravel()]).reshape(x.shape)


# ----------------------------------------------------------------- forward


@pytest.mark.parametrize("name,kwargs,kinks", CASES, ids=CASE_IDS)
def test_forward_matches_float64_reference(name, kwargs, kinks):
    fn = getattr(A, name)
    x = np.concatenate([sample([]), [0.0, -3.0, 3.0, 6.0, 1.0, -1.0, 2.5]])
    np.testing.assert_allclose(fn(x, **kwargs), reference(name, x, kwargs), rtol=1e-13, atol=1e-15)


def test_relu_keras_doc_examples():
    x = np.array([-10.0, -5.0, 0.0, 5.0, 10.0])
    np.testing.assert_array_equal(A.relu(x), [0, 0, 0, 5, 10])
    np.testing.assert_array_equal(A.relu(x, negative_slope=0.5), [-5, -2.5, 0, 5, 10])
    np.testing.assert_array_equal(A.relu(x, max_value=5.0), [0, 0, 0, 5, 5])
    np.testing.assert_array_equal(A.relu(x, threshold=5.0), [0, 0, 0, 0, 10])


def test_hard_sigmoid_and_selu_known_values():
    np.testing.assert_array_equal(A.hard_sigmoid(np.array([-4.0, -3.0, 0.0, 3.0, 4.0])), [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(A.selu(np.array([1.0, -1.0])), [SELU_SCALE, SELU_SCALE * SELU_ALPHA * math.expm1(-1)])


def test_swish_is_silu():
    assert A.swish is A.silu and A.hard_swish is A.hard_silu


# ----------------------------------------------------------------- erf


def test_erf_matches_math_erf_to_float64_precision():
    x = np.concatenate([
        np.linspace(-7.0, 7.0, 20001),
        np.logspace(-300, 1.5, 3000),
        -np.logspace(-300, 1.5, 3000),
        [0.0, 0.46875, -0.46875, 4.0, -4.0, 6.0, 26.5, 1e300],
    ])
    ref = np.array([math.erf(v) for v in x])
    got = A.erf(x)
    rel = np.abs(got - ref) / np.maximum(np.abs(ref), np.finfo(float).tiny)
    assert rel.max() < 1e-14


def test_erf_special_values_and_dtypes():
    got = A.erf(np.array([0.0, np.inf, -np.inf, np.nan]))
    assert got[0] == 0.0 and got[1] == 1.0 and got[2] == -1.0 and np.isnan(got[3])
    for dtype, tol in ((np.float32, 1e-6), (np.float16, 2e-3)):
        x = np.linspace(-5, 5, 101).astype(dtype)
        y = A.erf(x)
        assert y.dtype == dtype
        np.testing.assert_allclose(y.astype(float), [math.erf(v) for v in x.astype(float)], atol=tol)


# ----------------------------------------------------------------- gradients (tape)



@pytest.mark.parametrize("name,kwargs,kinks", CASES, ids=CASE_IDS)
def test_gradient_matches_finite_differences(name, kwargs, kinks):
    fn = getattr(A, name)
    x = sample(kinks, n=40, low=-6.0, high=6.0, seed=1)
    # atol: the finite differences of a sum of values up to exp(6) carry ~1e-7 of rounding.
    check_op_gradients(lambda t: fn(t, **kwargs), x, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name,kwargs,kinks", CASES, ids=CASE_IDS)
def test_gradient_with_fan_out(name, kwargs, kinks):
    # x feeds the activation and the product: both gradients must be summed.
    fn = getattr(A, name)
    x = sample(kinks, n=12, low=-4, high=4, seed=5).reshape(3, 4)
    check_op_gradients(lambda t: fn(t, **kwargs) * t, x, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name,kwargs,kinks", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_low_precision_dtypes_are_kept(name, kwargs, kinks, dtype):
    fn = getattr(A, name)
    x64 = sample(kinks, n=64, low=-5, high=5, seed=3)
    x = x64.astype(dtype)
    y, (dx,) = grad_of(lambda t: fn(t, **kwargs), x)
    assert isinstance(y, Tensor)
    assert y.dtype == dtype and dx.dtype == dtype
    if dtype == np.float32:
        np.testing.assert_allclose(y, reference(name, x.astype(float), kwargs), rtol=1e-5, atol=1e-6)


def test_no_floating_point_errors_at_extremes():
    x = np.array([-1e4, -800.0, -50.0, 50.0, 800.0, 1e4])
    names = ["relu", "elu", "selu", "softplus", "softsign", "sigmoid", "tanh", "silu", "gelu", "hard_sigmoid", "mish"]
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        for name in names:
            fn = getattr(A, name)
            y, (dx,) = grad_of(fn, x)
            assert np.all(np.isfinite(np.asarray(y))), name
            assert np.all(np.isfinite(dx)), name
        for approximate in (False, True):
            y, (dx,) = grad_of(lambda t: A.gelu(t, approximate=approximate), x)
            assert np.all(np.isfinite(np.asarray(y))) and np.all(np.isfinite(dx))
    np.testing.assert_array_equal(A.sigmoid(np.array([-1e4, 1e4])), [0.0, 1.0])


def test_gradients_at_the_kinks_follow_the_conventions():
    # relu-like units pass nothing at their corners; leaky_relu passes 1 at 0 (x wins the max tie).
    at = np.array([0.0, 6.0, -3.0, 3.0])
    _, (d,) = grad_of(A.relu, at)
    np.testing.assert_array_equal(d, [0, 1, 0, 1])
    _, (d,) = grad_of(A.relu6, at)
    np.testing.assert_array_equal(d, [0, 0, 0, 1])
    _, (d,) = grad_of(A.hard_sigmoid, at)
    np.testing.assert_array_equal(d, [1 / 6, 0, 0, 0])
    _, (d,) = grad_of(A.leaky_relu, at)
    np.testing.assert_array_equal(d, [1, 1, 0.2, 1])
    _, (d,) = grad_of(lambda t: A.relu(t, max_value=6.0), at)
    np.testing.assert_array_equal(d, [0, 0, 0, 1])


def test_squareplus_with_b_zero_is_relu_with_half_gradient_at_zero():
    _, (d,) = grad_of(lambda t: A.squareplus(t, b=0), np.array([-2.0, 0.0, 3.0]))
    np.testing.assert_array_equal(A.squareplus(np.array([-2.0, 0.0, 3.0]), b=0), [0.0, 0.0, 3.0])
    np.testing.assert_array_equal(d, [0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="`b`"):
        A.squareplus(np.ones(2), b=-1)


# ----------------------------------------------------------------- glu and sparsemax


def ref_sparsemax(x, axis):
    """Martins & Astudillo's algorithm over every 1-D slice, in float64 Python."""
    moved = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    out = np.empty_like(moved)
    for idx in np.ndindex(moved.shape[:-1]):
        z = sorted((float(v) for v in moved[idx]), reverse=True)
        total, k, k_total = 0.0, 0, 0.0
        for j, v in enumerate(z, start=1):
            total += v
            if 1 + j * v > total:
                k, k_total = j, total
        tau = (k_total - 1) / k
        out[idx] = [max(float(v) - tau, 0.0) for v in moved[idx]]
    return np.moveaxis(out, -1, axis)


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_sparsemax_is_the_simplex_projection(axis):
    x = np.random.default_rng(7).normal(size=(3, 5, 4)) * 2
    y = ops.convert_to_numpy(A.sparsemax(x.astype(np.float32), axis=axis))
    np.testing.assert_allclose(y, ref_sparsemax(x, axis), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y.sum(axis=axis), 1.0, rtol=1e-5)
    assert (y == 0).any() and (y > 0).sum() > y.size // 5  # supports of several sizes
    # Keras's own cases: one dominant entry per slice takes everything
    np.testing.assert_array_equal(A.sparsemax(np.linspace(1, 12, 12)), np.eye(12)[-1])


def test_sparsemax_gradient_matches_finite_differences():
    # inputs whose supports do not change under the finite-difference step
    x = np.array([[0.1, 0.5, 0.3, -2.0], [2.0, 0.0, -1.0, 1.5], [0.2, 0.21, 0.19, 0.2]])
    check_op_gradients(lambda t: A.sparsemax(t) * ops.convert_to_tensor(np.arange(4.0)), x, rtol=1e-6, atol=1e-8)
    check_op_gradients(lambda t: A.sparsemax(t, axis=0) * t, x, rtol=1e-6, atol=1e-8)


def test_glu_halves_along_the_axis():
    x = np.random.default_rng(2).normal(size=(2, 6, 4))
    for axis in (-1, 1):
        a, b = np.split(x, 2, axis=axis)
        np.testing.assert_allclose(A.glu(x, axis=axis), a / (1 + np.exp(-b)), rtol=1e-12)
        check_op_gradients(lambda t: A.glu(t, axis=axis), x)
    with pytest.raises(ValueError, match="even"):
        A.glu(np.ones((2, 3)))


def test_the_activations_keras_added_match_keras():
    keras = keras_or_skip()
    x = np.random.default_rng(4).normal(size=(3, 8)).astype(np.float32) * 2
    calls = [("celu", {}), ("glu", {}), ("log_sigmoid", {}), ("hard_tanh", {}), ("hard_shrink", {}),
             ("soft_shrink", {"threshold": 0.7}), ("tanh_shrink", {}), ("sparse_plus", {}), ("sparse_sigmoid", {}),
             ("squareplus", {"b": 2}), ("threshold", {"threshold": 0.1, "default_value": -1.0})]
    for name, kwargs in calls:
        ours = ops.convert_to_numpy(getattr(A, name)(x, **kwargs))
        theirs = keras.ops.convert_to_numpy(getattr(keras.activations, name)(x, **kwargs))
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6, err_msg=name)
    # sparsemax agrees where Keras's tau is the paper's: a support of one entry per slice
    peaked = x + 10 * np.eye(8, dtype=np.float32)[:3]
    np.testing.assert_allclose(A.sparsemax(peaked), keras.ops.convert_to_numpy(keras.activations.sparsemax(peaked)))


# ----------------------------------------------------------------- softmax


def ref_softmax(x, axis):
    """Loop over every 1-D slice along ``axis`` (an int) with math.exp."""
    moved = np.moveaxis(x, axis, -1)
    out = np.empty_like(moved)
    for idx in np.ndindex(moved.shape[:-1]):
        row = [float(v) for v in moved[idx]]
        m = max(row)
        exps = [math.exp(v - m) for v in row]
        total = sum(exps)
        out[idx] = [e / total for e in exps]
    return np.moveaxis(out, -1, axis)


@pytest.mark.parametrize("axis", [-1, 0, 1, 2, -2])
def test_softmax_and_log_softmax_along_axes(axis):
    x = np.random.default_rng(4).normal(scale=3.0, size=(3, 4, 5))
    ref = ref_softmax(x, axis)
    np.testing.assert_allclose(A.softmax(x, axis=axis), ref, rtol=1e-13)
    np.testing.assert_allclose(A.log_softmax(x, axis=axis), np.log(ref), rtol=1e-12, atol=1e-14)


def test_softmax_over_an_axis_tuple():
    x = np.random.default_rng(5).normal(size=(2, 3, 4))
    flat = x.reshape(2, 12)
    expected = ref_softmax(flat, -1).reshape(2, 3, 4)
    np.testing.assert_allclose(A.softmax(x, axis=(1, 2)), expected, rtol=1e-13)


def test_softmax_is_stable_for_huge_logits():
    y = A.softmax(np.array([[1000.0, 1000.0, -1000.0]], dtype=np.float32))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [[0.5, 0.5, 0.0]])


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [-1, 0, (0, 1)])
def test_softmax_gradient_matches_finite_differences(name, axis):
    fn = getattr(A, name)
    x = np.random.default_rng(6).normal(size=(3, 4))
    check_op_gradients(lambda t: fn(t, axis=axis), x, rtol=1e-6, atol=1e-8)
    check_op_gradients(lambda t: fn(t, axis=axis) * t, x, rtol=1e-6, atol=1e-8)


def test_softmax_gradient_keeps_float32():
    x = np.random.default_rng(7).normal(size=(2, 5)).astype(np.float32)
    _, (dx,) = grad_of(A.softmax, x)
    assert dx.dtype == np.float32


def test_softmax_and_sigmoid_record_the_nodes_the_losses_fuse_with():
    x = Tensor(np.random.default_rng(8).normal(size=(2, 3)))
    x.watched = True
    probs = A.softmax(x)
    assert probs.node.op == "softmax" and probs.node.attrs == {"axis": 1}
    assert probs.node.inputs[0] is x
    assert A.softmax(x, axis=0).node.attrs == {"axis": 0}
    assert A.sigmoid(x).node.op == "sigmoid" and A.sigmoid(x).node.inputs[0] is x


def test_relu_with_default_arguments_runs_the_backend_fast_path(monkeypatch):
    backend = get_ops()
    calls = []
    forward, backward = backend.relu, backend.relu_backward
    monkeypatch.setattr(backend, "relu", lambda a: calls.append("forward") or forward(a))
    monkeypatch.setattr(backend, "relu_backward", lambda a, g: calls.append("backward") or backward(a, g))
    x = np.array([[-1.0, 2.0], [3.0, -4.0]])
    y, (dx,) = grad_of(A.relu, x)
    assert calls == ["forward", "backward"]
    np.testing.assert_array_equal(y, [[0, 2], [3, 0]])
    np.testing.assert_array_equal(dx, [[0, 1], [1, 0]])
    calls.clear()
    A.relu(x, max_value=3.0)
    assert calls == []


def test_activations_take_tensors_variables_and_lists():
    v = Variable(np.array([-1.0, 0.5, 2.0]), name="v")
    with autodiff.GradientTape() as tape:
        total = ops.sum(A.silu(v) + A.elu(v))
    grad = tape.gradient(total, v)
    s = 1 / (1 + np.exp(-np.array([-1.0, 0.5, 2.0])))
    expected = s * (1 + np.array([-1.0, 0.5, 2.0]) * (1 - s)) + np.array([np.exp(-1.0), 1.0, 1.0])
    np.testing.assert_allclose(grad, expected, rtol=1e-6)
    out = A.relu([-1.0, 2.0])
    assert isinstance(out, Tensor) and out.dtype == np.float32
    assert isinstance(A.linear(np.ones(2)), Tensor)


def test_no_hand_written_backward_is_left():
    assert not hasattr(A, "get_backward")
    for name in sorted(set(n for n, _, _ in CASES)):
        assert not hasattr(getattr(A, name), "backward"), name


# ----------------------------------------------------------------- lookup and serialization


def test_get_names_none_and_callables():
    assert A.get(None) is A.linear
    assert A.get("relu") is A.relu
    assert A.get("swish") is A.silu
    assert A.get("hard_swish") is A.hard_silu

    def custom(x):
        return 2 * x

    assert A.get(custom) is custom


def test_get_accepts_keras_function_dict():
    config = {"module": "keras.activations", "class_name": "function", "config": "relu", "registered_name": "function"}
    assert A.get(config) is A.relu
    assert A.get({"class_name": "function", "config": "tanh"}) is A.tanh


def test_get_errors_name_the_argument_and_value():
    with pytest.raises(ValueError, match=r"`activation`.*'relux'.*Did you mean 'relu'.*Received: activation='relux'"):
        A.get("relux")
    with pytest.raises(ValueError, match=r"Invalid value for `dense_activation`.*Received: dense_activation='nope'"):
        A.get("nope", argument="dense_activation")
    with pytest.raises(TypeError, match=r"Invalid type for `activation`.*Received: activation=3"):
        A.get(3)
    with pytest.raises(ValueError, match="not a gpulayers built-in"):
        A.get({"module": "os", "class_name": "function", "config": "system"})
    with pytest.raises(ValueError, match="class_name"):
        A.get({"class_name": "ReLU", "config": {}})


@pytest.mark.parametrize("name", sorted(set(n for n, _, _ in CASES) | {"glu", "sparsemax"}))
def test_serialize_deserialize_round_trip(name):
    fn = getattr(A, name)
    text = A.serialize(fn)
    assert isinstance(text, str)
    back = A.deserialize(text)
    assert back is fn
    x = np.linspace(-3, 3, 8)
    kwargs = {"threshold": 0.5, "default_value": 0.0} if name == "threshold" else {}
    np.testing.assert_array_equal(back(x, **kwargs), fn(x, **kwargs))
    assert A.deserialize({"module": "keras.activations", "class_name": "function", "config": text}) is fn


def test_serialize_names_match_keras():
    assert A.serialize(A.swish) == "silu"
    assert A.serialize(A.hard_swish) == "hard_silu"
    assert A.serialize(A.relu) == "relu"


def test_serialize_custom_callable_gives_a_dict_that_does_not_load():
    def custom(x):
        return x

    config = A.serialize(custom)
    assert config["class_name"] == "function" and config["config"] == "custom"
    with pytest.raises(ValueError):
        A.deserialize(config)


def test_keyword_partial_is_differentiable():
    fn = functools.partial(A.relu, max_value=2.0)
    y, (dx,) = grad_of(fn, np.array([-1.0, 1.0, 3.0]))
    np.testing.assert_array_equal(y, [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(dx, [0.0, 1.0, 0.0])


# ----------------------------------------------------------------- properties

finite = st.floats(-50, 50, allow_nan=False, allow_infinity=False)


@pytest.mark.filterwarnings("ignore:You are using a softmax over axis")  # size-1 axes are drawn too
@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=5), elements=finite),
       st.floats(-100, 100))
def test_softmax_is_a_distribution_and_shift_invariant(x, shift):
    y = A.softmax(x)
    assert np.all((y >= 0) & (y <= 1))
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(A.softmax(x + shift), y, rtol=1e-9, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.float64, st.integers(1, 20), elements=st.floats(-40, 40)))
def test_sigmoid_symmetry_and_erf_oddness(x):
    np.testing.assert_allclose(A.sigmoid(x) + A.sigmoid(-x), 1.0, rtol=1e-15)
    np.testing.assert_array_equal(A.erf(-x), -A.erf(x))
    assert np.all(np.abs(A.erf(x)) <= 1.0)


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.float64, st.integers(1, 20), elements=st.floats(-10, 10)))
def test_gelu_approximation_stays_close_to_exact(x):
    assert np.max(np.abs(np.asarray(A.gelu(x, approximate=True) - A.gelu(x)))) < 1e-3
