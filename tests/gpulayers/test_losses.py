"""Tests for gpulayers.losses: Keras 3 values, reductions, gradients through the tape, fusion, lookup, errors."""

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpulayers import activations, autodiff, config, ops
from gpulayers import losses as L
from gpulayers.autodiff import Tensor
from helpers import numeric_grad_of, to_np

EPS = 1e-7  # Keras's default epsilon


# ---------------------------------------------------------------------------
# Plain float64 references, written as loops
# ---------------------------------------------------------------------------
def ref_cce_row(t, p, from_logits, smoothing):
    c = len(p)
    t = [ti * (1 - smoothing) + smoothing / c for ti in t] if smoothing else list(t)
    if from_logits:
        m = max(p)
        lse = m + math.log(sum(math.exp(v - m) for v in p))
        return -sum(ti * (pi - lse) for ti, pi in zip(t, p))
    s = sum(p)
    total = 0.0
    for ti, pi in zip(t, p):
        q = min(max(pi / s, EPS), 1 - EPS)
        total -= ti * math.log(q)
    return total


def ref_cce(t, p, from_logits=False, smoothing=0.0, axis=-1):
    t = np.moveaxis(np.asarray(t, dtype=float), axis, -1)
    p = np.moveaxis(np.asarray(p, dtype=float), axis, -1)
    out = np.empty(p.shape[:-1])
    for idx in np.ndindex(out.shape):
        out[idx] = ref_cce_row(t[idx], p[idx], from_logits, smoothing)
    return out


def ref_bce(t, p, from_logits=False, smoothing=0.0):
    t = np.asarray(t, dtype=float)
    p = np.asarray(p, dtype=float)
    out = np.empty(p.shape[:-1])
    for idx in np.ndindex(out.shape):
        total = 0.0
        for ti, pi in zip(t[idx], p[idx]):
            if smoothing:
                ti = ti * (1 - smoothing) + 0.5 * smoothing
            if from_logits:
                pi = 1.0 / (1.0 + math.exp(-pi))
                total -= ti * math.log(pi) + (1 - ti) * math.log(1 - pi)
            else:
                q = min(max(pi, EPS), 1 - EPS)
                total -= ti * math.log(q) + (1 - ti) * math.log(1 - q)
        out[idx] = total / p.shape[-1]
    return out


def ref_regression(kind, t, p, delta=1.0):
    t = np.asarray(t, dtype=float)
    p = np.asarray(p, dtype=float)
    out = np.empty(p.shape[:-1])
    for idx in np.ndindex(out.shape):
        total = 0.0
        for ti, pi in zip(t[idx], p[idx]):
            e = pi - ti
            if kind == "mse":
                total += e * e
            elif kind == "mae":
                total += abs(e)
            else:
                total += 0.5 * e * e if abs(e) <= delta else delta * abs(e) - 0.5 * delta * delta
        out[idx] = total / p.shape[-1]
    return out


def ref_reduce(values, weights, reduction):
    """Keras's reduction for values (N,) and weights None or (N,)."""
    values = np.asarray(values, dtype=float).ravel()
    w = np.ones_like(values) if weights is None else np.asarray(weights, dtype=float).ravel()
    weighted = [v * wi for v, wi in zip(values, w)]
    if reduction in (None, "none"):
        return np.array(weighted)
    total = sum(weighted)
    if reduction == "sum":
        return total
    if reduction == "mean_with_sample_weight" and weights is not None:
        return total / sum(w) if sum(w) != 0 else 0.0
    return total / len(weighted)


def softmax(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


RNG = np.random.default_rng(1234)
REDUCTIONS = ["sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", None, "none"]


def one_hot(labels, c):
    return np.eye(c)[np.asarray(labels).ravel()].reshape(np.shape(labels) + (c,))


def value_and_grad(loss, y_true, y_pred, sample_weight=None):
    """(the loss as numpy, d loss / d y_pred through the tape, summed when the loss is not reduced)."""
    p = ops.convert_to_tensor(y_pred)
    p.watched = True
    value = loss(y_true, p, sample_weight)
    (grad,) = autodiff.gradient(value, [p])
    return to_np(value), np.zeros(np.shape(y_pred), np.asarray(y_pred).dtype) if grad is None else to_np(grad)


def through(activation, loss, y_true, z, sample_weight=None, fuse=True):
    """(loss value, d loss / d z) for ``y_pred = activation(z)``: fused by the loss, or (``fuse=False``)
    differentiated through the activation (``* 1.0`` hides the activation's node from the loss)."""
    logits = ops.convert_to_tensor(z)
    logits.watched = True
    probs = getattr(activations, activation)(logits)
    value = loss(y_true, probs if fuse else probs * 1.0, sample_weight)
    (grad,) = autodiff.gradient(value, [logits])
    return to_np(value), to_np(grad)


def reaches(tensor, op):
    """Whether the backward pass from ``tensor`` runs through a node named ``op``."""
    stack, seen = [tensor.node], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op == op:
            return True
        stack.extend(t.node for t, need in zip(node.inputs, node.needs) if need)
    return False


# ---------------------------------------------------------------------------
# Values against the references and Keras's documented numbers
# ---------------------------------------------------------------------------
def test_keras_documented_values():
    yt = np.array([[0, 1, 0], [0, 0, 1]])
    yp = np.array([[0.05, 0.95, 0.0], [0.1, 0.8, 0.1]])
    assert float(L.CategoricalCrossentropy()(yt, yp)) == pytest.approx(1.177, abs=1e-3)
    assert float(L.CategoricalCrossentropy()(yt, yp, sample_weight=np.array([0.3, 0.7]))) == pytest.approx(0.814, abs=1e-3)
    assert float(L.CategoricalCrossentropy(reduction="sum")(yt, yp)) == pytest.approx(2.354, abs=1e-3)
    np.testing.assert_allclose(L.CategoricalCrossentropy(reduction=None)(yt, yp), [0.0513, 2.303], atol=1e-3)
    assert float(L.SparseCategoricalCrossentropy()(np.array([1, 2]), yp)) == pytest.approx(1.177, abs=1e-3)
    yt = np.array([[0, 1], [0, 0]])
    logits = np.array([[-18.6, 0.51], [2.94, -12.8]])
    bce = L.BinaryCrossentropy(from_logits=True)
    assert float(bce(yt, logits)) == pytest.approx(0.8654, abs=1e-4)
    assert float(bce(yt, logits, sample_weight=np.array([0.8, 0.2]))) == pytest.approx(0.243, abs=1e-3)
    assert float(L.BinaryCrossentropy(from_logits=True, reduction="sum")(yt, logits)) == pytest.approx(1.730, abs=1e-3)
    np.testing.assert_allclose(L.BinaryCrossentropy(from_logits=True, reduction=None)(yt, logits), [0.235, 1.496], atol=1e-3)
    np.testing.assert_allclose(L.binary_crossentropy(yt, np.array([[0.6, 0.4], [0.4, 0.6]])), [0.916, 0.714], atol=1e-3)
    assert float(L.Huber()(yt, np.array([[0.6, 0.4], [0.4, 0.6]]))) == pytest.approx(0.155, abs=1e-3)


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_categorical_matches_reference(from_logits, smoothing):
    t = one_hot(RNG.integers(0, 5, 6), 5)
    p = RNG.normal(size=(6, 5)) if from_logits else RNG.uniform(0.01, 1.0, (6, 5))
    got = L.categorical_crossentropy(t, p, from_logits=from_logits, label_smoothing=smoothing)
    np.testing.assert_allclose(got, ref_cce(t, p, from_logits, smoothing), rtol=1e-12)
    soft = RNG.dirichlet(np.ones(5), 6)  # soft labels too
    got = L.categorical_crossentropy(soft, p, from_logits=from_logits, label_smoothing=smoothing)
    np.testing.assert_allclose(got, ref_cce(soft, p, from_logits, smoothing), rtol=1e-12)


def test_categorical_axis_1():
    t = one_hot(RNG.integers(0, 3, (2, 4)), 3).transpose(0, 2, 1)  # (2, 3, 4), classes on axis 1
    p = RNG.uniform(0.05, 1.0, (2, 3, 4))
    got = L.CategoricalCrossentropy(axis=1, label_smoothing=0.1, reduction=None)(t, p)
    np.testing.assert_allclose(got, ref_cce(t, p, False, 0.1, axis=1), rtol=1e-12)
    assert got.shape == (2, 4)


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_binary_matches_reference(from_logits, smoothing):
    t = RNG.integers(0, 2, (5, 3)).astype(float)
    p = RNG.normal(0, 3, (5, 3)) if from_logits else RNG.uniform(0.0, 1.0, (5, 3))
    got = L.binary_crossentropy(t, p, from_logits=from_logits, label_smoothing=smoothing)
    np.testing.assert_allclose(got, ref_bce(t, p, from_logits, smoothing), rtol=1e-10)


def test_binary_from_logits_is_stable_for_large_logits():
    got = L.binary_crossentropy(np.array([[1.0, 0.0]]), np.array([[-800.0, 800.0]]), from_logits=True)
    assert float(got[0]) == pytest.approx(800.0)


@pytest.mark.parametrize("kind,fn,cls", [
    ("mse", L.mean_squared_error, L.MeanSquaredError),
    ("mae", L.mean_absolute_error, L.MeanAbsoluteError),
    ("huber", L.huber, L.Huber),
])
def test_regression_matches_reference(kind, fn, cls):
    t = RNG.normal(size=(4, 3))
    p = RNG.normal(size=(4, 3)) * 2
    np.testing.assert_allclose(fn(t, p), ref_regression(kind, t, p), rtol=1e-12)
    np.testing.assert_allclose(float(cls()(t, p)), np.mean(ref_regression(kind, t, p)), rtol=1e-12)
    if kind == "huber":
        np.testing.assert_allclose(L.huber(t, p, delta=0.3), ref_regression(kind, t, p, 0.3), rtol=1e-12)
        np.testing.assert_allclose(L.Huber(delta=0.3, reduction=None)(t, p), ref_regression(kind, t, p, 0.3), rtol=1e-12)
    assert L.mse is L.mean_squared_error and L.mae is L.mean_absolute_error


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_reductions_match_keras(reduction, weighted):
    t = RNG.normal(size=(5, 2))
    p = RNG.normal(size=(5, 2))
    w = RNG.uniform(0, 2, 5) if weighted else None
    got = L.MeanSquaredError(reduction=reduction)(t, p, sample_weight=w)
    np.testing.assert_allclose(got, ref_reduce(ref_regression("mse", t, p), w, reduction), rtol=1e-12)
    if reduction not in (None, "none"):
        assert isinstance(got, Tensor) and got.shape == ()


def test_sample_weight_shapes_and_zero_weights():
    t, p = RNG.normal(size=(4, 3)), RNG.normal(size=(4, 3))
    per = ref_regression("mse", t, p)
    w = np.array([1.0, 0.0, 2.0, 0.5])
    loss = L.MeanSquaredError()
    expected = sum(per[i] * w[i] for i in range(4)) / 4
    assert float(loss(t, p, w)) == pytest.approx(expected)
    assert float(loss(t, p, w[:, None])) == pytest.approx(expected)  # (N, 1) weights
    assert float(loss(t, p, 2.0)) == pytest.approx(2 * per.mean())  # scalar weight
    zero = L.MeanSquaredError(reduction="mean_with_sample_weight")(t, p, np.zeros(4))
    assert float(zero) == 0.0
    # Per-sample weights on (N, T) per-sample values align with the batch axis.
    t3, p3 = RNG.normal(size=(4, 3, 2)), RNG.normal(size=(4, 3, 2))
    per3 = ref_regression("mse", t3, p3)
    got = L.MeanSquaredError(reduction="sum")(t3, p3, w)
    assert float(got) == pytest.approx(sum(per3[i, j] * w[i] for i in range(4) for j in range(3)))
    with pytest.raises(ValueError, match=r"sample_weight.*\(3,\)"):
        loss(t, p, np.ones(3))


def test_rank_one_binary_gives_one_value_like_keras():
    # Keras averages over the last axis: rank-1 y gives a single 0-d per-sample value,
    # and a (N,) weight then scales the batch mean by mean(weight).
    t = np.array([0.0, 1.0, 1.0, 0.0])
    p = np.array([0.2, 0.7, 0.4, 0.1])
    per = L.binary_crossentropy(t, p)
    assert per.shape == ()
    w = np.array([1.0, 2.0, 0.0, 1.0])
    assert float(L.BinaryCrossentropy()(t, p, w)) == pytest.approx(float(per) * w.mean())
    # (N, 1) predictions with (N,) labels: one value per sample.
    assert L.binary_crossentropy(t, p[:, None]).shape == (4,)


# ---------------------------------------------------------------------------
# Sparse labels
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.float32, np.float64])
@pytest.mark.parametrize("column", [False, True])
@pytest.mark.parametrize("from_logits", [False, True])
def test_sparse_labels_match_categorical(dtype, column, from_logits):
    labels = RNG.integers(0, 4, 7)
    p = RNG.normal(size=(7, 4)) if from_logits else RNG.uniform(0.01, 1.0, (7, 4))
    y = labels.astype(dtype)
    if column:
        y = y[:, None]
    got = L.sparse_categorical_crossentropy(y, p, from_logits=from_logits)
    np.testing.assert_allclose(got, ref_cce(one_hot(labels, 4), p, from_logits), rtol=1e-12)
    w = RNG.uniform(0, 1, 7)
    dense = L.CategoricalCrossentropy(from_logits=from_logits)
    sparse = L.SparseCategoricalCrossentropy(from_logits=from_logits)
    np.testing.assert_allclose(float(sparse(y, p, w)), float(dense(one_hot(labels, 4), p, w)), rtol=1e-12)


def test_sparse_on_sequences():
    labels = RNG.integers(0, 3, (2, 5))
    p = RNG.uniform(0.1, 1, (2, 5, 3))
    got = L.sparse_categorical_crossentropy(labels, p)
    np.testing.assert_allclose(got, ref_cce(one_hot(labels, 3), p), rtol=1e-12)


@pytest.mark.parametrize("bad,shown", [
    (np.array([0, 3, 1]), "3"), (np.array([0, -1, 1]), "-1"), (np.array([0.0, 1.5, 1.0]), "1.5"),
    (np.array([0.0, np.nan, 1.0]), "nan"), (np.array([[0], [7], [1]]), "7"),
])
def test_sparse_bad_labels_are_named(bad, shown):
    p = RNG.uniform(0.1, 1.0, (3, 3))
    with pytest.raises(ValueError, match=rf"label.*{shown}"):
        L.SparseCategoricalCrossentropy()(bad, p)
    with pytest.raises(ValueError, match=rf"label.*{shown}"):
        value_and_grad(L.SparseCategoricalCrossentropy(), bad, p)


def test_sparse_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(4,\).*\(3, 5\)"):
        L.sparse_categorical_crossentropy(np.zeros(4, dtype=int), np.ones((3, 5)))


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "mean_with_sample_weight"])
def test_sparse_ignore_class(from_logits, reduction):
    labels = np.array([0, 255, 2, 1, 255, 2])
    p = RNG.normal(size=(6, 3)) if from_logits else RNG.uniform(0.05, 1.0, (6, 3))
    loss = L.SparseCategoricalCrossentropy(from_logits=from_logits, ignore_class=255, reduction=reduction)
    valid = labels != 255
    per = ref_cce(one_hot(np.where(valid, labels, 0), 3), p, from_logits) * valid
    np.testing.assert_allclose(L.sparse_categorical_crossentropy(labels, p, from_logits, ignore_class=255), per, rtol=1e-12)
    expected = per.sum() if reduction == "sum" else per.sum() / valid.sum()
    assert float(loss(labels, p)) == pytest.approx(expected, rel=1e-12)
    value, grad = value_and_grad(loss, labels, p)
    assert np.all(grad[~valid] == 0)
    num = numeric_grad_of(lambda x: loss(labels, x), p)
    np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-8)


# ---------------------------------------------------------------------------
# Exact gradients (finite differences)
# ---------------------------------------------------------------------------
def weights_for(kind, n):
    return {"none": None, "vector": RNG.uniform(0.2, 2.0, n), "column": RNG.uniform(0.2, 2.0, (n, 1))}[kind]


def check_grad(loss, t, p, w, rtol=1e-5, atol=1e-8):
    value, grad = value_and_grad(loss, t, p, sample_weight=w)
    assert grad.shape == p.shape and grad.dtype == p.dtype
    np.testing.assert_array_equal(value, to_np(loss(t, p, sample_weight=w)))
    num = numeric_grad_of(lambda x: loss(t, x, sample_weight=w), p)
    np.testing.assert_allclose(grad, num, rtol=rtol, atol=atol)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weights", ["none", "vector", "column"])
@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.15])
def test_categorical_gradient(reduction, weights, from_logits, smoothing):
    t = one_hot(RNG.integers(0, 4, 3), 4)
    p = RNG.normal(size=(3, 4)) if from_logits else RNG.uniform(0.1, 1.0, (3, 4))  # unnormalised
    loss = L.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=smoothing, reduction=reduction)
    check_grad(loss, t, p, weights_for(weights, 3))


def test_categorical_gradient_axis_and_soft_labels():
    t = RNG.dirichlet(np.ones(3), (2, 2)).transpose(0, 2, 1)  # (2, 3, 2) classes on axis 1
    for from_logits in (False, True):
        p = RNG.normal(size=(2, 3, 2)) if from_logits else RNG.uniform(0.1, 1.0, (2, 3, 2))
        check_grad(L.CategoricalCrossentropy(from_logits=from_logits, axis=1, label_smoothing=0.1), t, p,
                   RNG.uniform(0.5, 1.5, 2))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weights", ["none", "vector"])
@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("column", [False, True])
def test_sparse_gradient(reduction, weights, from_logits, column):
    labels = RNG.integers(0, 4, 3)
    y = labels[:, None] if column else labels
    p = RNG.normal(size=(3, 4)) if from_logits else RNG.uniform(0.1, 1.0, (3, 4))
    loss = L.SparseCategoricalCrossentropy(from_logits=from_logits, reduction=reduction)
    check_grad(loss, y, p, weights_for(weights, 3))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weights", ["none", "vector", "column"])
@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_binary_gradient(reduction, weights, from_logits, smoothing):
    t = RNG.integers(0, 2, (3, 2)).astype(float)
    p = RNG.normal(0, 2, (3, 2)) if from_logits else RNG.uniform(0.05, 0.95, (3, 2))
    loss = L.BinaryCrossentropy(from_logits=from_logits, label_smoothing=smoothing, reduction=reduction)
    check_grad(loss, t, p, weights_for(weights, 3))


@pytest.mark.parametrize("shape_t,shape_p", [((4,), (4, 1)), ((4, 1), (4,)), ((4,), (4,))])
def test_binary_gradient_rank_combinations(shape_t, shape_p):
    t = RNG.integers(0, 2, shape_t).astype(float)
    p = RNG.uniform(0.05, 0.95, shape_p)
    for w in (None, RNG.uniform(0.5, 1.5, 4)):
        check_grad(L.BinaryCrossentropy(), t, p, w)


@pytest.mark.parametrize("loss", [L.MeanSquaredError(), L.MeanAbsoluteError(), L.Huber(), L.Huber(delta=0.4),
                                  L.MeanSquaredError(reduction="sum"), L.Huber(reduction=None),
                                  L.MeanAbsoluteError(reduction="mean_with_sample_weight")],
                         ids=lambda x: f"{type(x).__name__}-{x.reduction}-{getattr(x, 'delta', '')}")
@pytest.mark.parametrize("weights", ["none", "vector"])
def test_regression_gradient(loss, weights):
    t = RNG.normal(size=(4, 3))
    # Keep |error| away from MAE's and Huber's kinks (0 and delta).
    err = RNG.uniform(0.1, 2.0, (4, 3)) * RNG.choice([-1.0, 1.0], (4, 3))
    err[np.abs(np.abs(err) - getattr(loss, "delta", 1.0)) < 0.05] += 0.1
    check_grad(loss, t, t + err, weights_for(weights, 4))


def test_regression_gradient_with_column_targets():
    t = RNG.normal(size=(5,))
    p = RNG.normal(size=(5, 1))
    check_grad(L.MeanSquaredError(), t, p, None)
    value, grad = value_and_grad(L.MeanSquaredError(), t, p)
    np.testing.assert_allclose(grad[:, 0], 2 * (p[:, 0] - t) / 5)


# ---------------------------------------------------------------------------
# Fused softmax / sigmoid gradients
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", None])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_fused_categorical_equals_composed(reduction, smoothing):
    z = RNG.normal(size=(5, 4))
    p = softmax(z)
    t = one_hot(RNG.integers(0, 4, 5), 4)
    w = RNG.uniform(0.5, 2.0, 5)
    loss = L.CategoricalCrossentropy(label_smoothing=smoothing, reduction=reduction)
    value, dz = through("softmax", loss, t, z, w)
    v2, dz_chain = through("softmax", loss, t, z, w, fuse=False)
    np.testing.assert_allclose(value, v2, rtol=1e-12)
    np.testing.assert_allclose(dz, dz_chain, rtol=1e-9, atol=1e-14)
    logits = L.CategoricalCrossentropy(from_logits=True, label_smoothing=smoothing, reduction=reduction)
    np.testing.assert_allclose(dz, value_and_grad(logits, t, z, w)[1], rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(dz, numeric_grad_of(lambda x: loss(t, softmax(x), w), z), rtol=1e-5, atol=1e-9)
    if reduction == "sum_over_batch_size" and not smoothing:
        np.testing.assert_allclose(dz, (p - t) * w[:, None] / 5, rtol=1e-12)


@pytest.mark.parametrize("column", [False, True])
def test_fused_sparse_equals_composed(column):
    z = RNG.normal(size=(6, 3))
    p = softmax(z)
    labels = RNG.integers(0, 3, 6)
    y = labels[:, None] if column else labels
    loss = L.SparseCategoricalCrossentropy()
    value, dz = through("softmax", loss, y, z)
    _, dz_chain = through("softmax", loss, y, z, fuse=False)
    np.testing.assert_allclose(dz, dz_chain, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(dz, (p - one_hot(labels, 3)) / 6, rtol=1e-12, atol=1e-15)
    assert float(value) == pytest.approx(float(loss(y, p)))


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "mean", "mean_with_sample_weight"])
def test_unweighted_sparse_mean_after_a_softmax_is_one_node_on_the_logits(reduction):
    # The values and their mean as one node (one launch each way on the GPU): the same bits as the values'
    # own mean, and the same gradient, as a float32 training step computes them.
    z = ops.convert_to_tensor(RNG.normal(size=(7, 5)).astype(np.float32))
    z.watched = True
    labels = RNG.integers(0, 5, 7)
    fused = L.SparseCategoricalCrossentropy(reduction=reduction)
    loss = fused(labels, activations.softmax(z))
    assert loss.node.op == "sparse_categorical_crossentropy" and loss.node.inputs[0] is z
    (dz,) = autodiff.gradient(loss, [z])
    composed = ops.mean(L.SparseCategoricalCrossentropy(reduction="none")(labels, activations.softmax(z)))
    (dz_composed,) = autodiff.gradient(composed, [z])
    assert to_np(loss).dtype == np.float32 and to_np(loss) == to_np(composed)
    np.testing.assert_allclose(to_np(dz), to_np(dz_composed), rtol=1e-6, atol=1e-9)
    p = to_np(activations.softmax(z)).astype(np.float64)
    np.testing.assert_allclose(to_np(dz), (p - one_hot(labels, 5)) / 7, rtol=1e-6, atol=1e-8)
    # With sample weights (or an ignored class) the values are reduced as before: a reduce_loss node.
    weighted = fused(labels, activations.softmax(z), sample_weight=np.ones(7, np.float32))
    assert weighted.node.op == "reduce_loss" and float(to_np(weighted)) == pytest.approx(float(to_np(loss)), rel=1e-6)


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum"])
def test_fused_binary_equals_composed(reduction):
    z = RNG.normal(size=(4, 3))
    p = sigmoid(z)
    t = RNG.integers(0, 2, (4, 3)).astype(float)
    w = RNG.uniform(0.5, 2.0, 4)
    loss = L.BinaryCrossentropy(reduction=reduction)
    value, dz = through("sigmoid", loss, t, z, w)
    _, dz_chain = through("sigmoid", loss, t, z, w, fuse=False)
    np.testing.assert_allclose(dz, dz_chain, rtol=1e-9, atol=1e-14)
    logits = L.BinaryCrossentropy(from_logits=True, reduction=reduction)
    np.testing.assert_allclose(dz, value_and_grad(logits, t, z, w)[1], rtol=1e-9, atol=1e-14)
    if reduction == "sum_over_batch_size":
        np.testing.assert_allclose(dz, (p - t) * w[:, None] / (4 * 3), rtol=1e-12)


def test_fused_gradient_has_no_division_at_saturation():
    t = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    z = np.array([[-800.0, 800.0, -800.0], [-800.0, 800.0, -800.0]])  # a saturated softmax: hopeless and perfect
    _, dz = through("softmax", L.CategoricalCrossentropy(), t, z)
    np.testing.assert_allclose(dz, (softmax(z) - t) / 2)
    _, dz = through("sigmoid", L.BinaryCrossentropy(), np.array([[1.0], [0.0]]), np.array([[-800.0], [-800.0]]))
    np.testing.assert_allclose(dz, [[-0.5], [0.0]])


def test_fusion_only_where_it_applies():
    z = RNG.normal(size=(2, 3, 4))
    p = ops.convert_to_tensor(z)
    p.watched = True
    probs = activations.softmax(p)
    t = one_hot(RNG.integers(0, 4, (2, 3)), 4)
    assert not reaches(L.CategoricalCrossentropy()(t, probs), "softmax")  # fused: straight to the logits
    assert not reaches(L.SparseCategoricalCrossentropy()(np.argmax(t, -1), probs), "softmax")
    unfused = [L.CategoricalCrossentropy(from_logits=True), L.SparseCategoricalCrossentropy(from_logits=True),
               L.MeanSquaredError(), L.MeanAbsoluteError(), L.Huber()]
    for loss in unfused:
        y = np.argmax(t, -1) if isinstance(loss, L.SparseCategoricalCrossentropy) else t
        assert reaches(loss(y, probs), "softmax"), loss
    # The class axis is not the softmax's: no fusion.
    assert reaches(L.CategoricalCrossentropy(axis=1)(np.ones((2, 3, 4)) / 3, probs), "softmax")
    sig = activations.sigmoid(p)
    assert not reaches(L.BinaryCrossentropy()(np.ones((2, 3, 4)), sig), "sigmoid")
    assert reaches(L.BinaryCrossentropy(from_logits=True)(np.ones((2, 3, 4)), sig), "sigmoid")


# ---------------------------------------------------------------------------
# Keras's clipping with epsilon
# ---------------------------------------------------------------------------
def test_clipping_at_zero_and_one():
    big = -math.log(EPS)  # 16.118...
    # Probability 0 for the true class: the loss saturates at -log(eps), gradient 0.
    t = np.array([[1.0, 0.0, 0.0]])
    p = np.array([[0.0, 0.7, 0.3]])
    value, grad = value_and_grad(L.CategoricalCrossentropy(), t, p)
    assert float(value) == pytest.approx(big, rel=1e-12)
    np.testing.assert_array_equal(grad, 0.0)
    # Probability ~1 for the true class: clipped to 1 - eps, gradient 0.
    p = np.array([[1.0 - 1e-9, 1e-9, 0.0]])
    value, grad = value_and_grad(L.CategoricalCrossentropy(), t, p)
    assert float(value) == pytest.approx(-math.log(1 - EPS), rel=1e-6)
    np.testing.assert_array_equal(grad, 0.0)
    value, grad = value_and_grad(L.SparseCategoricalCrossentropy(), np.array([1]), np.array([[1.0, 0.0]]))
    assert float(value) == pytest.approx(big, rel=1e-12)
    np.testing.assert_array_equal(grad, 0.0)
    # Binary: p=0 with t=1 and p=1 with t=0 cost -log(eps); p exactly right costs -log(1-eps).
    bt = np.array([[1.0, 0.0, 1.0, 0.0, 1.0]])
    bp = np.array([[0.0, 1.0, 1.0, 0.0, 0.5]])
    value, grad = value_and_grad(L.BinaryCrossentropy(reduction=None), bt, bp)
    hi = 1 - EPS
    expected = (big - math.log(1 - hi) - 2 * math.log(hi) + math.log(2)) / 5
    assert float(value[0]) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_array_equal(grad[0, :4], 0.0)
    assert grad[0, 4] == pytest.approx(-2.0 / 5)
    # No clip for logits.
    assert float(L.CategoricalCrossentropy(from_logits=True)(t, np.array([[-50.0, 50.0, 0.0]]))) == pytest.approx(100.0)


def test_clipping_in_float32():
    t = np.array([[1.0, 0.0]], dtype=np.float32)
    p = np.array([[0.0, 1.0]], dtype=np.float32)
    value, grad = value_and_grad(L.CategoricalCrossentropy(), t, p)
    assert value.dtype == np.float32 and grad.dtype == np.float32
    assert float(value) == pytest.approx(-math.log(np.float32(EPS)), rel=1e-6)
    np.testing.assert_array_equal(grad, 0.0)


def test_epsilon_comes_from_config():
    old = config.epsilon()
    try:
        config.set_epsilon(1e-3)
        got = L.CategoricalCrossentropy()(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]))
        assert float(got) == pytest.approx(-math.log(1e-3))
    finally:
        config.set_epsilon(old)
    assert config.epsilon() == EPS


def test_categorical_renormalises_probabilities():
    t = np.array([[0.0, 1.0, 0.0]])
    p = np.array([[0.2, 0.4, 0.2]])  # sums to 0.8: Keras divides by the sum first
    assert float(L.CategoricalCrossentropy()(t, p)) == pytest.approx(-math.log(0.5))


# ---------------------------------------------------------------------------
# Dtypes
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_dtypes_follow_y_pred(dtype):
    t = RNG.integers(0, 3, 4)
    p = RNG.uniform(0.1, 1.0, (4, 3)).astype(dtype)
    for loss, y in ((L.SparseCategoricalCrossentropy(), t), (L.CategoricalCrossentropy(), one_hot(t, 3).astype(int)),
                    (L.MeanSquaredError(), one_hot(t, 3).astype(np.int32)), (L.BinaryCrossentropy(), one_hot(t, 3))):
        value, grad = value_and_grad(loss, y, p)
        assert value.shape == ()
        assert grad.dtype == dtype and grad.shape == p.shape
        assert value.dtype == (np.float32 if dtype == np.float16 else dtype)
    assert L.MeanSquaredError(dtype="float64")(np.ones((2, 2)), np.ones((2, 2), np.float32)).dtype == np.float64


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("loss", [L.MeanSquaredError(), L.MeanAbsoluteError(), L.Huber(), L.BinaryCrossentropy(),
                                  L.CategoricalCrossentropy()], ids=lambda x: type(x).__name__)
def test_shape_mismatch_names_both_shapes(loss):
    with pytest.raises(ValueError, match=r"y_true\.shape=\(4, 3\).*y_pred\.shape=\(4, 2\)"):
        loss(np.zeros((4, 3)), np.ones((4, 2)) / 2)
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(4, 2\)"):
        value_and_grad(loss, np.zeros((4, 3)), np.ones((4, 2)) / 2)


def test_argument_errors():
    with pytest.raises(ValueError, match="reduction"):
        L.MeanSquaredError(reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        L.CategoricalCrossentropy(label_smoothing=1.5)
    with pytest.raises(TypeError, match="from_logits"):
        L.BinaryCrossentropy(from_logits="yes")
    assert L.BinaryCrossentropy(from_logits=1).from_logits is True  # 0 and 1 pass as bools, as in Keras
    with pytest.raises(ValueError, match="axis"):
        L.CategoricalCrossentropy(axis=True)
    with pytest.raises(ValueError, match="ignore_class"):
        L.SparseCategoricalCrossentropy(ignore_class=1.5)
    with pytest.raises(ValueError, match="delta"):
        L.Huber(delta=-1.0)
    with pytest.raises(ValueError, match="dtype"):
        L.MeanSquaredError(dtype="int32")
    with pytest.warns(SyntaxWarning, match="binary_crossentropy"):
        L.categorical_crossentropy(np.ones((2, 1)), np.ones((2, 1)))


# ---------------------------------------------------------------------------
# get / serialize / deserialize, custom losses
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("identifier,cls,name", [
    ("categorical_crossentropy", L.CategoricalCrossentropy, "categorical_crossentropy"),
    ("CategoricalCrossentropy", L.CategoricalCrossentropy, "categorical_crossentropy"),
    ("sparse_categorical_crossentropy", L.SparseCategoricalCrossentropy, "sparse_categorical_crossentropy"),
    ("binary_crossentropy", L.BinaryCrossentropy, "binary_crossentropy"),
    ("bce", L.BinaryCrossentropy, "bce"), ("BCE", L.BinaryCrossentropy, "BCE"),
    ("mse", L.MeanSquaredError, "mse"), ("MSE", L.MeanSquaredError, "MSE"),
    ("mean_squared_error", L.MeanSquaredError, "mean_squared_error"),
    ("mae", L.MeanAbsoluteError, "mae"), ("MeanAbsoluteError", L.MeanAbsoluteError, "mean_absolute_error"),
    ("huber", L.Huber, "huber"), ("Huber", L.Huber, "huber_loss"),
    (L.mean_squared_error, L.MeanSquaredError, "mean_squared_error"),
    (L.Huber, L.Huber, "huber_loss"),
])
def test_to_loss_names(identifier, cls, name):
    loss = L.to_loss(identifier)  # what compile(loss=...) trains
    assert type(loss) is cls and loss.name == name
    assert loss.reduction == "sum_over_batch_size"


def test_get_gives_functions_for_function_names_as_keras():
    # Keras 3.15.1: get("mse") is the per-sample function ([0.125, 0.5]), get("MeanSquaredError") an instance.
    y_true, y_pred = np.array([[0.0, 1.0], [1.0, 1.0]]), np.array([[0.5, 1.0], [0.0, 1.0]])
    for name in ("mse", "MSE", "mean_squared_error"):
        assert L.get(name) is L.mean_squared_error
    np.testing.assert_allclose(to_np(L.get("mse")(y_true, y_pred)), [0.125, 0.5])
    assert L.get("huber") is L.huber and L.get("bce") is L.binary_crossentropy and L.get("MAPE") is L.mean_absolute_percentage_error
    assert type(L.get("MeanSquaredError")) is L.MeanSquaredError and type(L.get("Huber")) is L.Huber
    assert L.get(L.mean_squared_error) is L.mean_squared_error and type(L.get(L.Huber)) is L.Huber

    def mine(y_true, y_pred):
        return y_pred

    assert L.get(mine) is mine


def test_get_instances_dicts_and_round_trips():
    assert L.get(None) is None
    inst = L.CategoricalCrossentropy(from_logits=True)
    assert L.get(inst) is inst
    keras_dict = {"module": "keras.losses", "class_name": "CategoricalCrossentropy",
                  "config": {"name": "cce", "reduction": "sum", "from_logits": True, "label_smoothing": 0.1,
                             "axis": -1}, "registered_name": None}
    loss = L.get(keras_dict)
    assert (loss.name, loss.reduction, loss.from_logits, loss.label_smoothing) == ("cce", "sum", True, 0.1)
    assert L.serialize(loss) == keras_dict
    fn_dict = {"module": "keras.losses", "class_name": "function", "config": "mean_squared_error",
               "registered_name": "mean_squared_error"}
    assert type(L.get(fn_dict)) is L.MeanSquaredError
    assert L.serialize(L.mean_squared_error) == fn_dict
    for loss in (L.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1, reduction=None),
                 L.BinaryCrossentropy(label_smoothing=0.2, axis=-1, name="b"), L.Huber(delta=2.5),
                 L.MeanAbsoluteError(reduction="sum"), L.MeanSquaredError(name="m", dtype="float64")):
        again = L.deserialize(L.serialize(loss))
        assert type(again) is type(loss) and again.get_config() == loss.get_config()
    assert L.get({"class_name": "Huber", "config": {"delta": 3.0}}).delta == 3.0


def test_get_errors():
    with pytest.raises(ValueError, match=r"`loss`.*'categorical_crossentropie'.*Did you mean"):
        L.get("categorical_crossentropie")
    with pytest.raises(ValueError, match="loss"):
        L.get(42)
    with pytest.raises(ValueError, match="not a gpulayers built-in"):
        L.get({"module": "my.module", "class_name": "MeanSquaredError", "config": {}})
    with pytest.raises(ValueError, match="bad config"):
        L.get({"class_name": "MeanSquaredError", "config": {"from_logits": True}})


def test_a_plain_callable_trains_through_the_tape():
    def my_loss(y_true, y_pred):
        return np.mean(np.abs(y_true - y_pred) ** 3, axis=-1)  # NumPy on tensors: recorded as the ops

    loss = L.to_loss(my_loss)
    t, p = np.zeros((2, 2)), np.ones((2, 2))
    assert loss.name == "my_loss" and float(loss(t, p)) == 1.0
    assert float(L.to_loss(my_loss)(t, p, sample_weight=np.array([1.0, 0.0]))) == 0.5
    t, p, w = RNG.normal(size=(3, 2)), RNG.normal(size=(3, 2)), RNG.uniform(size=3)
    _, grad = value_and_grad(loss, t, p, w)  # computed in floatx (float32), as Keras casts a loss's inputs
    expected = 3 * (p - t) * np.abs(p - t) / 2 * w[:, None] / 3
    np.testing.assert_allclose(grad, expected, rtol=1e-5)
    assert L.serialize(loss)["config"] == "my_loss"


def test_a_plain_callable_gets_targets_of_the_predictions_rank():
    # Keras's LossFunctionWrapper: labels (N,) for an output (N, 1) arrive as (N, 1), so the user's
    # function does not broadcast them into (N, N); a trailing axis of 1 on the labels is dropped likewise.
    seen = []

    def squared(y_true, y_pred):
        seen.append((tuple(y_true.shape), tuple(y_pred.shape)))
        return ops.mean(ops.square(y_true - y_pred), axis=-1)

    loss = L.to_loss(squared)
    t, p = np.array([1.0, 0.0, 1.0]), np.array([[0.2], [0.4], [0.9]])
    want = np.mean((t - p[:, 0]) ** 2)
    assert float(loss(t, p)) == pytest.approx(want, rel=1e-6) and seen[-1] == ((3, 1), (3, 1))
    assert float(loss(t[:, None], p)) == pytest.approx(want, rel=1e-6)
    assert float(loss(t[:, None], p[:, 0])) == pytest.approx(want, rel=1e-6) and seen[-1] == ((3, 1), (3, 1))
    assert float(loss(np.ones((2, 3)), np.zeros((2, 3)))) == 1.0 and seen[-1] == ((2, 3), (2, 3))


def test_a_loss_subclass_needs_only_call():
    class Cubic(L.Loss):
        def call(self, y_true, y_pred):
            return ops.sum((y_pred - y_true) ** 3, axis=-1)

    t, p = RNG.normal(size=(3, 2)), RNG.normal(size=(3, 2))
    check_grad(Cubic(reduction="sum", dtype="float64"), t, p, RNG.uniform(size=3))
    assert Cubic().name.startswith("cubic")


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 6), k=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_reduction_identities(n, k, seed):
    rng = np.random.default_rng(seed)
    t, p = rng.normal(size=(n, k)), rng.normal(size=(n, k))
    w = rng.uniform(0.1, 2.0, n)
    per = L.MeanSquaredError(reduction=None)(t, p, w)
    total = float(L.MeanSquaredError(reduction="sum")(t, p, w))
    assert total == pytest.approx(float(np.sum(per)))
    assert float(L.MeanSquaredError()(t, p, w)) == pytest.approx(total / n)
    assert float(L.MeanSquaredError(reduction="mean_with_sample_weight")(t, p, w)) == pytest.approx(total / w.sum())
    _, g_sum = value_and_grad(L.MeanSquaredError(reduction="sum"), t, p, w)
    _, g_mean = value_and_grad(L.MeanSquaredError(), t, p, w)
    np.testing.assert_allclose(g_sum, g_mean * n, rtol=1e-12, atol=1e-15)


def test_no_warnings_in_normal_use():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value_and_grad(L.CategoricalCrossentropy(), one_hot([0, 1], 3), softmax(RNG.normal(size=(2, 3))))
        value_and_grad(L.BinaryCrossentropy(), np.array([[1.0], [0.0]]), np.array([[0.0], [1.0]]))


def test_label_check_can_be_skipped_after_upfront_validation():
    loss = L.SparseCategoricalCrossentropy()
    loss.check_labels = False
    p = RNG.uniform(0.1, 1.0, (3, 4))
    labels = np.array([0, 3, 2])
    assert float(loss(labels, p)) == pytest.approx(float(L.SparseCategoricalCrossentropy()(labels, p)))
    assert "check_labels" not in loss.get_config()


def test_a_subclass_of_a_builtin_loss_that_overrides_call_is_called():
    # Keras's Loss.__call__ calls `call`: a subclass's own call replaces the built-in computation.
    class Doubled(L.SparseCategoricalCrossentropy):
        def call(self, y_true, y_pred):
            return 2.0 * L.sparse_categorical_crossentropy(y_true, y_pred)

    class Halved(L.MeanSquaredError):
        def call(self, y_true, y_pred):
            return 0.5 * L.mean_squared_error(y_true, y_pred)

    p = np.array([[0.2, 0.8], [0.6, 0.4]], np.float32)
    y = np.array([1, 1])
    assert float(Doubled()(y, p)) == pytest.approx(2 * float(L.SparseCategoricalCrossentropy()(y, p)), rel=1e-6)
    t = np.array([[0.0, 1.0], [1.0, 1.0]], np.float32)
    assert float(Halved()(t, p)) == pytest.approx(0.5 * float(L.MeanSquaredError()(t, p)), rel=1e-6)

    class Plain(L.MeanSquaredError):  # no call of its own: the built-in computation
        pass

    assert float(Plain()(t, p)) == float(L.MeanSquaredError()(t, p))
