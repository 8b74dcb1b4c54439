"""Tests for Keras 3's hinge, KL, Poisson, focal, cosine, log-cosh, Dice and Tversky losses in gpulayers.losses.

Values against float64 references written here, gradients against finite
differences, reductions and sample weights, configs and lookup, errors, and
a direct comparison with Keras when it is installed.
"""

import importlib.util
import math
import os

import numpy as np
import pytest

import gpulayers
from gpulayers import autodiff, ops, optimizers
from gpulayers import losses as L
from gpulayers.layers import Dense, Input
from gpulayers.models import Sequential
from helpers import numeric_grad_of, to_np

EPS = 1e-7  # Keras's default epsilon
RNG = np.random.default_rng(20240611)
REDUCTIONS = ["sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", None, "none"]


# ---------------------------------------------------------------------------
# float64 references, written from the formulas
# ---------------------------------------------------------------------------
def rows(a):
    """Every last-axis row of ``a`` with its index in the leading axes."""
    a = np.asarray(a, dtype=float)
    return [(idx, a[idx]) for idx in np.ndindex(a.shape[:-1])]


def ref_hinge(t, p, squared=False):
    t, p = np.asarray(t, dtype=float), np.asarray(p, dtype=float)
    if np.all((t == 0) | (t == 1)):
        t = 2 * t - 1
    out = np.empty(p.shape[:-1])
    for idx, row in rows(p):
        gaps = [max(1 - ti * pi, 0.0) for ti, pi in zip(t[idx], row)]
        out[idx] = sum(g * g if squared else g for g in gaps) / len(gaps)
    return out


def ref_categorical_hinge(t, p):
    t = np.asarray(t, dtype=float)
    out = np.empty(np.shape(p)[:-1])
    for idx, row in rows(p):
        pos = sum(ti * pi for ti, pi in zip(t[idx], row))
        neg = max((1 - ti) * pi for ti, pi in zip(t[idx], row))
        out[idx] = max(neg - pos + 1, 0.0)
    return out


def ref_kl(t, p):
    t = np.asarray(t, dtype=float)
    out = np.empty(np.shape(p)[:-1])
    for idx, row in rows(p):
        total = 0.0
        for ti, pi in zip(t[idx], row):
            ti, pi = min(max(ti, EPS), 1.0), min(max(pi, EPS), 1.0)
            total += ti * math.log(ti / pi)
        out[idx] = total
    return out


def ref_poisson(t, p):
    t = np.asarray(t, dtype=float)
    out = np.empty(np.shape(p)[:-1])
    for idx, row in rows(p):
        out[idx] = sum(pi - ti * math.log(pi + EPS) for ti, pi in zip(t[idx], row)) / len(row)
    return out


def ref_categorical_focal(t, p, alpha=0.25, gamma=2.0, from_logits=False, smoothing=0.0):
    t = np.asarray(t, dtype=float)
    out = np.empty(np.shape(p)[:-1])
    for idx, row in rows(p):
        c = len(row)
        if from_logits:
            m = max(row)
            e = [math.exp(v - m) for v in row]
            row = [v / sum(e) for v in e]
        s = sum(row)
        weights = alpha if isinstance(alpha, (list, tuple)) else [alpha] * c
        total = 0.0
        for ti, pi, ai in zip(t[idx], row, weights):
            ti = ti * (1 - smoothing) + smoothing / c
            q = min(max(pi / s, EPS), 1 - EPS)
            total += ai * (1 - q) ** gamma * -ti * math.log(q)
        out[idx] = total
    return out


def ref_binary_focal(t, p, balancing=False, alpha=0.25, gamma=2.0, from_logits=False, smoothing=0.0):
    t = np.asarray(t, dtype=float)
    out = np.empty(np.shape(p)[:-1])
    for idx, row in rows(p):
        total = 0.0
        for ti, pi in zip(t[idx], row):
            ti = ti * (1 - smoothing) + 0.5 * smoothing
            if from_logits:
                pi = 1 / (1 + math.exp(-pi))
            q = min(max(pi, EPS), 1 - EPS)
            bce = -(ti * math.log(q) + (1 - ti) * math.log(1 - q))
            p_t = ti * pi + (1 - ti) * (1 - pi)
            value = (1 - p_t) ** gamma * bce
            if balancing:
                value *= ti * alpha + (1 - ti) * (1 - alpha)
            total += value
        out[idx] = total / len(row)
    return out


def ref_cosine(t, p, axis=-1):
    t = np.moveaxis(np.asarray(t, dtype=float), axis, -1)
    p = np.moveaxis(np.asarray(p, dtype=float), axis, -1)
    out = np.empty(p.shape[:-1])
    for idx, row in rows(p):
        def unit(v):
            squares = sum(x * x for x in v)
            scale = min(1 / math.sqrt(squares), 1 / EPS) if squares else 1 / EPS
            return [x * scale for x in v]
        out[idx] = -sum(a * b for a, b in zip(unit(t[idx]), unit(row)))
    return out


def ref_log_cosh(t, p):
    t = np.asarray(t, dtype=float)
    out = np.empty(np.shape(p)[:-1])
    for idx, row in rows(p):
        out[idx] = sum(math.log(math.cosh(pi - ti)) for ti, pi in zip(t[idx], row)) / len(row)
    return out


def ref_tversky(t, p, alpha=0.5, beta=0.5, axis=None, dice=False):
    """Sums over ``axis`` (None: all) by explicit loops over the kept leading axes."""
    t, p = np.asarray(t, dtype=float), np.asarray(p, dtype=float)
    axes = tuple(range(p.ndim)) if axis is None else tuple(a % p.ndim for a in np.atleast_1d(axis))
    kept = [a for a in range(p.ndim) if a not in axes]
    out = np.empty([p.shape[a] for a in kept])
    for idx in np.ndindex(out.shape):
        sl = [slice(None)] * p.ndim
        for a, i in zip(kept, idx):
            sl[a] = i
        tt, pp = t[tuple(sl)].ravel(), p[tuple(sl)].ravel()
        inter = sum(a * b for a, b in zip(tt, pp))
        if dice:
            out[idx] = 1 - 2 * inter / (sum(tt) + sum(pp) + EPS)
        else:
            missed = sum(a * (1 - b) for a, b in zip(tt, pp))
            extra = sum((1 - a) * b for a, b in zip(tt, pp))
            out[idx] = 1 - inter / (inter + alpha * missed + beta * extra + EPS)
    return out


def ref_reduce(values, weights, reduction):
    """Keras's reduction of per-sample values (N,) or () with weights None or (N,)."""
    values = np.asarray(values, dtype=float)
    w = None if weights is None else np.asarray(weights, dtype=float)
    weighted = values if w is None else values * w
    if reduction in (None, "none"):
        return weighted
    total = weighted.sum()
    if reduction == "sum":
        return total
    if reduction == "mean_with_sample_weight" and w is not None:
        return total / w.sum() if w.sum() else 0.0
    return total / weighted.size


# ---------------------------------------------------------------------------
# Inputs: y_true and y_pred of shape (N, C), float64
# ---------------------------------------------------------------------------
def one_hot(n, c):
    return np.eye(c)[RNG.integers(0, c, n)]


def signed(n, c):
    return RNG.choice([-1.0, 1.0], (n, c))


def binary(n, c):
    return RNG.integers(0, 2, (n, c)).astype(float)


def probabilities(n, c):
    return RNG.uniform(0.05, 0.95, (n, c))


def normal(n, c):
    return RNG.normal(size=(n, c))


def positive(n, c):
    return RNG.uniform(0.2, 3.0, (n, c))


def counts(n, c):
    return RNG.poisson(1.5, (n, c)).astype(float)


def soft(n, c):
    return RNG.dirichlet(np.ones(c), n)


# (id, function, class, keyword arguments, y_true maker, y_pred maker, reference(t, p))
CASES = [
    ("hinge_signed", L.hinge, L.Hinge, {}, signed, normal, ref_hinge),
    ("hinge_binary", L.hinge, L.Hinge, {}, binary, normal, ref_hinge),
    ("squared_hinge", L.squared_hinge, L.SquaredHinge, {}, binary, normal, lambda t, p: ref_hinge(t, p, True)),
    ("categorical_hinge", L.categorical_hinge, L.CategoricalHinge, {}, one_hot, normal, ref_categorical_hinge),
    ("kl_divergence", L.kl_divergence, L.KLDivergence, {}, soft, soft, ref_kl),
    ("kl_one_hot", L.kl_divergence, L.KLDivergence, {}, one_hot, probabilities, ref_kl),
    ("poisson", L.poisson, L.Poisson, {}, counts, positive, ref_poisson),
    ("cfce", L.categorical_focal_crossentropy, L.CategoricalFocalCrossentropy, {}, one_hot, probabilities,
     ref_categorical_focal),
    ("cfce_logits_smoothing", L.categorical_focal_crossentropy, L.CategoricalFocalCrossentropy,
     {"from_logits": True, "label_smoothing": 0.2, "gamma": 1.5, "alpha": 0.4}, one_hot, normal,
     lambda t, p: ref_categorical_focal(t, p, 0.4, 1.5, True, 0.2)),
    ("cfce_class_alphas", L.categorical_focal_crossentropy, L.CategoricalFocalCrossentropy,
     {"alpha": [0.1, 0.2, 0.3, 0.4], "gamma": 3}, soft, probabilities,
     lambda t, p: ref_categorical_focal(t, p, [0.1, 0.2, 0.3, 0.4], 3)),
    ("bfce", L.binary_focal_crossentropy, L.BinaryFocalCrossentropy, {}, binary, probabilities, ref_binary_focal),
    ("bfce_balanced_logits_smoothing", L.binary_focal_crossentropy, L.BinaryFocalCrossentropy,
     {"apply_class_balancing": True, "alpha": 0.3, "gamma": 2.5, "from_logits": True, "label_smoothing": 0.1},
     binary, normal, lambda t, p: ref_binary_focal(t, p, True, 0.3, 2.5, True, 0.1)),
    ("bfce_gamma0", L.binary_focal_crossentropy, L.BinaryFocalCrossentropy, {"gamma": 0.0}, binary,
     probabilities, lambda t, p: ref_binary_focal(t, p, gamma=0.0)),
    ("cosine_similarity", L.cosine_similarity, L.CosineSimilarity, {}, normal, normal, ref_cosine),
    ("log_cosh", L.log_cosh, L.LogCosh, {}, normal, normal, ref_log_cosh),
    ("dice_per_sample", L.dice, L.Dice, {"axis": (1,)}, binary, probabilities,
     lambda t, p: ref_tversky(t, p, axis=(1,), dice=True)),
    ("dice_all", L.dice, L.Dice, {}, binary, probabilities, lambda t, p: ref_tversky(t, p, dice=True)),
    ("tversky_per_sample", L.tversky, L.Tversky, {"alpha": 0.7, "beta": 0.3, "axis": -1}, binary, probabilities,
     lambda t, p: ref_tversky(t, p, 0.7, 0.3, axis=-1)),
    ("tversky_all", L.tversky, L.Tversky, {}, soft, probabilities, ref_tversky),
]
IDS = [case[0] for case in CASES]


def inputs(case, n=5, c=4):
    _, _, _, _, make_true, make_pred, _ = case
    return make_true(n, c), make_pred(n, c)


def value_and_grad(loss, y_true, y_pred, sample_weight=None):
    """(the loss as numpy, d sum(loss) / d y_pred through the tape)."""
    p = ops.convert_to_tensor(y_pred)
    p.watched = True
    value = loss(y_true, p, sample_weight)
    (grad,) = autodiff.gradient(value, [p])
    return to_np(value), to_np(grad)


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_values_match_reference(case):
    _, fn, cls, kwargs, _, _, ref = case
    t, p = inputs(case)
    want = ref(t, p)
    np.testing.assert_allclose(to_np(fn(t, p, **kwargs)), want, rtol=1e-10, atol=1e-13)
    got = cls(reduction=None, **kwargs)(t, p)
    assert got.dtype == np.float64 and got.shape == want.shape
    np.testing.assert_allclose(to_np(got), want, rtol=1e-10, atol=1e-13)


def test_keras_documented_values():
    # Numbers from Keras 3.15's docstrings, computed there in float32.
    yt, yp = np.array([[0, 1, 0], [0, 0, 1]]), np.array([[0.05, 0.95, 0.0], [0.1, 0.8, 0.1]])
    cfce = L.CategoricalFocalCrossentropy()
    assert float(cfce(yt, yp)) == pytest.approx(0.23315276, rel=1e-6)
    assert float(cfce(yt, yp, sample_weight=np.array([0.3, 0.7]))) == pytest.approx(0.1632, abs=1e-4)
    assert float(L.CategoricalFocalCrossentropy(reduction="sum")(yt, yp)) == pytest.approx(0.46631, abs=1e-5)
    np.testing.assert_allclose(to_np(L.CategoricalFocalCrossentropy(reduction=None)(yt, yp)),
                               [3.2058331e-05, 4.6627346e-01], rtol=1e-6)
    np.testing.assert_allclose(to_np(L.categorical_focal_crossentropy(
        np.array([[0, 1, 0], [0, 0, 1]]), np.array([[0.05, 0.9, 0.05], [0.1, 0.85, 0.05]]))),
        [2.63401289e-04, 6.75912094e-01], rtol=1e-6)
    yt, logits = np.array([[0, 1], [0, 0]]), np.array([[-18.6, 0.51], [2.94, -12.8]])
    for gamma, balanced, reduction, weights, want in [
        (3, False, "sum_over_batch_size", None, 0.647), (3, True, "sum_over_batch_size", None, 0.482),
        (3, False, "sum_over_batch_size", [0.8, 0.2], 0.133), (3, True, "sum_over_batch_size", [0.8, 0.2], 0.097),
        (4, False, "sum", None, 1.222), (4, True, "sum", None, 0.914),
    ]:
        loss = L.BinaryFocalCrossentropy(apply_class_balancing=balanced, gamma=gamma, from_logits=True,
                                         reduction=reduction)
        assert float(loss(yt, logits, sample_weight=weights)) == pytest.approx(want, abs=1e-3)
    np.testing.assert_allclose(to_np(L.BinaryFocalCrossentropy(gamma=5, from_logits=True, reduction=None)(yt, logits)),
                               [0.0017, 1.1561], atol=1e-4)
    rank1 = L.BinaryFocalCrossentropy(gamma=2, from_logits=True)(np.array([0, 1, 0, 0]), np.array([-18.6, 0.51, 2.94, -12.8]))
    assert float(rank1) == pytest.approx(0.691, abs=1e-3)
    np.testing.assert_allclose(to_np(L.binary_focal_crossentropy(yt, np.array([[0.6, 0.4], [0.4, 0.6]]), gamma=2)),
                               [0.330, 0.206], atol=1e-3)
    t = np.array([[[[1.0], [1.0]], [[0.0], [0.0]]], [[[1.0], [1.0]], [[0.0], [0.0]]]])
    p = np.array([[[[0.0], [1.0]], [[0.0], [1.0]]], [[[0.4], [0.0]], [[0.0], [0.9]]]])
    np.testing.assert_allclose(to_np(L.Dice(axis=(1, 2, 3), reduction=None)(t, p)), [0.5, 0.75757575], rtol=1e-6)
    assert float(L.Dice()(t, p)) == pytest.approx(0.6164384, rel=1e-6)
    np.testing.assert_allclose(to_np(L.cosine_similarity([[0.0, 1.0], [1.0, 1.0], [1.0, 1.0]],
                                                         [[1.0, 0.0], [1.0, 1.0], [-1.0, -1.0]])),
                               [0.0, -0.99999994, 0.99999994], rtol=1e-6)
    assert float(L.LogCosh()(np.array([[0.0, 1.0], [0.0, 0.0]]), np.array([[1.0, 1.0], [0.0, 0.0]]))) == \
        pytest.approx(0.108, abs=1e-3)


def test_hinge_converts_only_all_binary_labels():
    p = np.array([[0.3, -0.6, 1.5]])
    # {0, 1} labels are read as {-1, 1}.
    assert float(L.hinge(np.array([[0.0, 1.0, 1.0]]), p)[0]) == pytest.approx((1.3 + 1.6 + 0.0) / 3)
    assert float(L.hinge(np.array([[-1.0, 1.0, 1.0]]), p)[0]) == pytest.approx((1.3 + 1.6 + 0.0) / 3)
    # A label outside {0, 1} anywhere in the call: all labels stay as given.
    got = to_np(L.hinge(np.array([[0.0, 1.0, 1.0], [0.5, 1.0, 0.0]]), np.array([[0.3, -0.6, 1.5], [1.0, 1.0, 1.0]])))
    np.testing.assert_allclose(got, [(1.0 + 1.6 + 0.0) / 3, (0.5 + 0.0 + 1.0) / 3])
    # Integer labels too (cast to y_pred's dtype first).
    np.testing.assert_allclose(to_np(L.SquaredHinge(reduction=None)(np.array([[0, 1]]), np.array([[0.5, 0.5]]))),
                               [(1.5 ** 2 + 0.5 ** 2) / 2])


def test_cosine_similarity_sign_axis_and_zero_vectors():
    v = RNG.normal(size=(3, 4))
    np.testing.assert_allclose(to_np(L.cosine_similarity(v, 2.5 * v)), -np.ones(3), rtol=1e-12)
    np.testing.assert_allclose(to_np(L.cosine_similarity(v, -v)), np.ones(3), rtol=1e-12)
    zero = to_np(L.cosine_similarity(np.zeros((1, 4)), v[:1]))
    assert zero.tolist() == [0.0]
    t, p = RNG.normal(size=(2, 3, 4)), RNG.normal(size=(2, 3, 4))
    got = L.CosineSimilarity(axis=1, reduction=None)(t, p)
    assert got.shape == (2, 4)
    np.testing.assert_allclose(to_np(got), ref_cosine(t, p, axis=1), rtol=1e-12)
    # The gradient through a zero y_pred is finite (Keras's bound 1 / epsilon holds there).
    _, grad = value_and_grad(L.CosineSimilarity(), v[:1], np.zeros((1, 4)))
    assert np.all(np.isfinite(grad))


def test_log_cosh_is_stable_for_large_errors():
    got = to_np(L.log_cosh(np.zeros((1, 2)), np.array([[800.0, -900.0]])))
    np.testing.assert_allclose(got, [(800.0 + 900.0) / 2 - math.log(2.0)], rtol=1e-12)
    small = to_np(L.log_cosh(np.zeros((1, 1)), np.array([[1e-4]])))
    np.testing.assert_allclose(small, [math.log(math.cosh(1e-4))], rtol=1e-6)


def test_dice_and_tversky_axes():
    t = RNG.integers(0, 2, (2, 3, 4, 1)).astype(float)
    p = RNG.uniform(0.0, 1.0, (2, 3, 4, 1))
    for axis in [(1, 2, 3), [1, 2], 2, None]:
        want = ref_tversky(t, p, axis=axis, dice=True)
        got = L.Dice(axis=axis, reduction=None)(t, p)
        assert got.shape == want.shape
        np.testing.assert_allclose(to_np(got), want, rtol=1e-12)
        np.testing.assert_allclose(to_np(L.tversky(t, p, 0.2, 0.8, axis=axis)),
                                   ref_tversky(t, p, 0.2, 0.8, axis=axis), rtol=1e-12)
    # alpha = beta = 0.5 is Dice (up to where epsilon enters: Dice's denominator is twice Tversky's).
    np.testing.assert_allclose(to_np(L.tversky(t, p, axis=(1, 2, 3))), to_np(L.dice(t, p, axis=(1, 2, 3))), rtol=1e-7)


def test_focal_with_gamma_zero_is_the_cross_entropy():
    t, p = one_hot(6, 3), probabilities(6, 3)
    np.testing.assert_allclose(to_np(L.categorical_focal_crossentropy(t, p, alpha=1.0, gamma=0.0)),
                               to_np(L.categorical_crossentropy(t, p)), rtol=1e-12)
    t = binary(6, 3)
    np.testing.assert_allclose(to_np(L.binary_focal_crossentropy(t, p, gamma=0.0)),
                               to_np(L.binary_crossentropy(t, p)), rtol=1e-12)


def test_categorical_focal_on_another_axis_weights_that_axis():
    t = np.moveaxis(np.eye(3)[RNG.integers(0, 3, (2, 4))], -1, 1)  # (2, 3, 4), classes on axis 1
    p = RNG.uniform(0.05, 1.0, (2, 3, 4))
    got = L.CategoricalFocalCrossentropy(axis=1, alpha=[0.2, 0.3, 0.5], reduction=None)(t, p)
    want = ref_categorical_focal(np.moveaxis(t, 1, -1), np.moveaxis(p, 1, -1), [0.2, 0.3, 0.5])
    assert got.shape == (2, 4)
    np.testing.assert_allclose(to_np(got), want, rtol=1e-12)


# ---------------------------------------------------------------------------
# Reductions, sample weights, gradients
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_reductions_and_sample_weights(case, reduction):
    _, _, cls, kwargs, _, _, ref = case
    t, p = inputs(case)
    per = ref(t, p)
    w = RNG.uniform(0.0, 2.0, 5)
    loss = cls(reduction=reduction, **kwargs)
    for weights in (None, w, w[:, None]):
        got = to_np(loss(t, p, sample_weight=weights))
        want = ref_reduce(per, None if weights is None else w, reduction)
        if weights is not None and weights.ndim == 2 and reduction in (None, "none"):
            want = want.reshape(-1, 1)  # Keras expands the (N,) values to the (N, 1) weights
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)
        if reduction not in (None, "none"):
            assert got.shape == ()
    if reduction == "mean_with_sample_weight":
        assert float(loss(t, p, sample_weight=np.zeros(5))) == 0.0


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "mean_with_sample_weight", None])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradients_match_finite_differences(case, reduction):
    _, _, cls, kwargs, _, _, _ = case
    t, p = inputs(case, n=4, c=3) if case[0] != "cfce_class_alphas" else inputs(case, n=4, c=4)
    w = None if reduction == "sum" else RNG.uniform(0.2, 2.0, 4)
    loss = cls(reduction=reduction, **kwargs)
    value, grad = value_and_grad(loss, t, p, w)
    assert grad.shape == p.shape and grad.dtype == np.float64
    np.testing.assert_array_equal(value, to_np(loss(t, p, sample_weight=w)))
    numeric = numeric_grad_of(lambda x: loss(t, x, sample_weight=w), p)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def test_focal_gradients_through_the_activations():
    # y_pred straight out of a softmax / sigmoid: the gradient reaches the logits exactly.
    z = RNG.normal(size=(4, 3))
    for loss, act, t in ((L.CategoricalFocalCrossentropy(gamma=2.0), ops.softmax, one_hot(4, 3)),
                         (L.BinaryFocalCrossentropy(apply_class_balancing=True), ops.sigmoid, binary(4, 3))):
        logits = ops.convert_to_tensor(z)
        logits.watched = True
        (grad,) = autodiff.gradient(loss(t, act(logits)), [logits])
        numeric = numeric_grad_of(lambda x: loss(t, act(ops.convert_to_tensor(x))), z)
        np.testing.assert_allclose(to_np(grad), numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_dtypes_follow_y_pred(dtype):
    t, p = binary(4, 3), probabilities(4, 3).astype(dtype)
    for cls in (L.Hinge, L.SquaredHinge, L.CategoricalHinge, L.KLDivergence, L.Poisson,
                L.CategoricalFocalCrossentropy, L.BinaryFocalCrossentropy, L.CosineSimilarity, L.LogCosh, L.Dice,
                L.Tversky):
        value, grad = value_and_grad(cls(), t, p)
        assert value.dtype == (np.float32 if dtype == np.float16 else dtype), cls.__name__
        assert grad.dtype == dtype and grad.shape == p.shape
    assert L.Poisson(dtype="float64")(t, p.astype(np.float32)).dtype == np.float64


# ---------------------------------------------------------------------------
# Keras parity
# ---------------------------------------------------------------------------
def keras_or_skip():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    backend = os.environ["KERAS_BACKEND"]
    if backend != "numpy" and importlib.util.find_spec(backend) is None:
        pytest.skip(f"Keras's backend {backend!r} is not installed")
    return pytest.importorskip("keras", reason="Keras 3 is not installed: the comparison needs it")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_keras(case):
    keras = keras_or_skip()
    _, fn, cls, kwargs, _, _, _ = case
    theirs_cls = getattr(keras.losses, cls.__name__)
    t, p = inputs(case, n=6, c=4)
    w = RNG.uniform(0.0, 2.0, 6)
    for reduction in REDUCTIONS[:5]:
        for weights in (None, w):
            ours = to_np(cls(reduction=reduction, **kwargs)(t.astype(np.float32), p.astype(np.float32), weights))
            theirs = keras.ops.convert_to_numpy(
                theirs_cls(reduction=reduction, **kwargs)(t.astype(np.float32), p.astype(np.float32), weights))
            assert ours.dtype == np.float32
            np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=1e-6, err_msg=f"{reduction}, {weights is None}")
    theirs = keras.ops.convert_to_numpy(getattr(keras.losses, fn.__name__)(t, p, **kwargs))
    np.testing.assert_allclose(to_np(fn(t.astype(np.float32), p.astype(np.float32), **kwargs)), theirs,
                               rtol=2e-5, atol=1e-6)
    if keras.backend.backend() == "jax" and not importlib.import_module("jax").config.jax_enable_x64:
        return  # float64 would be truncated to float32 there
    theirs = keras.ops.convert_to_numpy(theirs_cls(reduction=None, dtype="float64", **kwargs)(t, p, w))
    assert theirs.dtype == np.float64
    # Keras takes log(2) in float32 for log-cosh (2e-9 off): hence the absolute tolerance.
    np.testing.assert_allclose(to_np(cls(reduction=None, **kwargs)(t, p, w)), theirs, rtol=1e-6, atol=1e-8)


def test_configs_are_keras_configs():
    keras = keras_or_skip()
    for _, _, cls, kwargs, _, _, _ in CASES:
        ours, theirs = cls(name="x", reduction="sum", **kwargs), getattr(keras.losses, cls.__name__)(
            name="x", reduction="sum", **kwargs)
        expected = theirs.get_config()
        if cls is L.CosineSimilarity:
            expected["axis"] = -1  # kept here; Keras 3 leaves it out of its config
        assert ours.get_config() == expected, cls.__name__
        again = keras.losses.deserialize(L.serialize(ours))  # a gpulayers config, read by Keras
        assert type(again).__name__ == cls.__name__
        assert L.deserialize(keras.losses.serialize(theirs)).get_config() == ours.get_config()


# ---------------------------------------------------------------------------
# Configs, lookup, compile
# ---------------------------------------------------------------------------
NON_DEFAULT = [
    L.Hinge(reduction="sum", name="h"), L.SquaredHinge(reduction=None), L.CategoricalHinge(dtype="float64"),
    L.KLDivergence(name="k"), L.Poisson(reduction="mean"), L.LogCosh(reduction="none"),
    L.CategoricalFocalCrossentropy(alpha=[0.2, 0.8], gamma=1, from_logits=True, label_smoothing=0.1, axis=1),
    L.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.4, gamma=3.0, label_smoothing=0.2, axis=-2),
    L.CosineSimilarity(axis=1, name="cos"), L.Dice(axis=(1, 2, 3), reduction="sum"),
    L.Tversky(alpha=0.3, beta=0.7, axis=[1, 2], name="t"),
]


@pytest.mark.parametrize("loss", NON_DEFAULT, ids=lambda x: type(x).__name__)
def test_config_round_trip(loss):
    config = L.serialize(loss)
    assert config["module"] == "keras.losses" and config["class_name"] == type(loss).__name__
    again = L.deserialize(config)
    assert type(again) is type(loss) and again.get_config() == loss.get_config()
    assert type(L.get(config)) is type(loss)
    assert L.is_builtin(loss)


def test_default_names_and_configs():
    assert [cls().name for cls in (L.Hinge, L.SquaredHinge, L.CategoricalHinge, L.KLDivergence, L.Poisson,
                                   L.CategoricalFocalCrossentropy, L.BinaryFocalCrossentropy, L.CosineSimilarity,
                                   L.LogCosh, L.Dice, L.Tversky)] == [
        "hinge", "squared_hinge", "categorical_hinge", "kl_divergence", "poisson", "categorical_focal_crossentropy",
        "binary_focal_crossentropy", "cosine_similarity", "log_cosh", "dice", "tversky"]
    assert L.BinaryFocalCrossentropy().get_config() == {
        "name": "binary_focal_crossentropy", "reduction": "sum_over_batch_size", "from_logits": False,
        "label_smoothing": 0.0, "axis": -1, "apply_class_balancing": False, "alpha": 0.25, "gamma": 2.0}
    assert L.Tversky().get_config() == {"name": "tversky", "reduction": "sum_over_batch_size", "alpha": 0.5,
                                        "beta": 0.5, "axis": None}
    assert L.Dice(axis=(1, 2)).get_config()["axis"] == (1, 2)


FUNCTION_NAMES = ["hinge", "squared_hinge", "categorical_hinge", "kl_divergence", "poisson",
                  "categorical_focal_crossentropy", "binary_focal_crossentropy", "cosine_similarity", "log_cosh",
                  "dice", "tversky"]


def test_get_and_to_loss_by_name():
    for name in FUNCTION_NAMES:
        fn = L.get(name)
        assert fn is getattr(L, name) and callable(fn)
        assert L.serialize(fn) == {"module": "keras.losses", "class_name": "function", "config": name,
                                   "registered_name": name}
        loss = L.to_loss(name)  # what compile(loss=name) trains: the class, named as the identifier
        assert type(loss) is L._FUNCTIONS[fn] and loss.name == name
        cls = type(loss)
        assert type(L.get(cls.__name__)) is cls and L.get(cls.__name__).name == cls().name
    assert L.get("kld") is L.kl_divergence and L.get("KLD") is L.kl_divergence
    assert type(L.to_loss("KLD")) is L.KLDivergence and L.to_loss("kld").name == "kld"
    assert type(L.deserialize({"class_name": "function", "config": "poisson"})) is L.Poisson
    with pytest.raises(ValueError, match="Did you mean 'poisson'"):
        L.get("poison")


@pytest.mark.parametrize("name", FUNCTION_NAMES + ["kld", "KLDivergence", "Tversky"])
def test_compile_with_the_name_trains(name):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((32, 3)).astype(np.float32)
    labels = (x @ np.array([1.0, -1.0, 0.5], np.float32) > 0).astype(np.float32)
    y = np.stack([labels, 1 - labels], axis=1)
    gpulayers.set_random_seed(0)
    activation = "softmax" if name not in ("hinge", "squared_hinge", "cosine_similarity", "log_cosh") else None
    model = Sequential([Input((3,)), Dense(2, activation=activation)])
    model.compile(optimizer=optimizers.SGD(0.1), loss=name)
    history = model.fit(x, y, epochs=4, batch_size=32, shuffle=False, verbose=0).history["loss"]
    assert all(np.isfinite(history)) and history[-1] < history[0]
    loss = L.to_loss(name)
    assert model.evaluate(x, y, verbose=0) == pytest.approx(float(loss(y, model.predict(x, verbose=0))), rel=1e-5)


def test_compile_poisson_fits_counts():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((64, 2)).astype(np.float32)
    y = rng.poisson(np.exp(0.5 * x[:, :1] - 0.3 * x[:, 1:])).astype(np.float32)
    gpulayers.set_random_seed(1)
    model = Sequential([Input((2,)), Dense(1, activation="exponential")])
    model.compile(optimizer=optimizers.Adam(0.05), loss="poisson")
    history = model.fit(x, y, epochs=30, batch_size=64, shuffle=False, verbose=0).history["loss"]
    assert history[-1] < history[0] - 0.05


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------
def test_argument_errors_are_named():
    with pytest.raises(ValueError, match="reduction"):
        L.Hinge(reduction="avg")
    with pytest.raises(ValueError, match=r"alpha.*'high'"):
        L.BinaryFocalCrossentropy(alpha="high")
    with pytest.raises(ValueError, match=r"gamma.*-1"):
        L.CategoricalFocalCrossentropy(gamma=-1)
    with pytest.raises(ValueError, match=r"alpha=\[\]"):
        L.CategoricalFocalCrossentropy(alpha=[])
    with pytest.raises(ValueError, match=r"alpha.*nan"):
        L.CategoricalFocalCrossentropy(alpha=[0.5, float("nan")])
    with pytest.raises(TypeError, match="apply_class_balancing"):
        L.BinaryFocalCrossentropy(apply_class_balancing="yes")
    with pytest.raises(TypeError, match="from_logits"):
        L.categorical_focal_crossentropy(np.eye(2), np.eye(2), from_logits="no")
    with pytest.raises(ValueError, match="label_smoothing"):
        L.BinaryFocalCrossentropy(label_smoothing=2.0)
    with pytest.raises(ValueError, match="axis"):
        L.CosineSimilarity(axis=1.5)
    with pytest.raises(ValueError, match=r"axis.*'rows'"):
        L.Dice(axis="rows")
    with pytest.raises(ValueError, match="axis"):
        L.Tversky(axis=(1, True))
    with pytest.raises(ValueError, match=r"beta.*inf"):
        L.Tversky(beta=float("inf"))
    with pytest.raises(ValueError, match=r"alpha"):
        L.tversky(np.ones((2, 2)), np.ones((2, 2)), alpha=None)
    with pytest.raises(ValueError, match="dtype"):
        L.Poisson(dtype="int32")


def test_call_errors_are_named():
    with pytest.raises(ValueError, match=r"alpha.*one weight per class \(3"):
        L.CategoricalFocalCrossentropy(alpha=[0.5, 0.5])(np.eye(3), np.eye(3))
    with pytest.raises(ValueError, match="axis"):
        L.CosineSimilarity(axis=2)(np.ones((2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="axis"):
        L.Dice(axis=(1, 4))(np.ones((2, 3)), np.ones((2, 3)))
    with pytest.warns(SyntaxWarning, match="binary_crossentropy"):
        L.categorical_focal_crossentropy(np.ones((2, 1)), np.ones((2, 1)))
    for loss in (L.Hinge(), L.CategoricalHinge(), L.KLDivergence(), L.Poisson(), L.LogCosh(), L.Dice(),
                 L.CosineSimilarity(), L.BinaryFocalCrossentropy(), L.CategoricalFocalCrossentropy()):
        with pytest.raises(ValueError, match=r"y_true\.shape=\(4, 3\).*y_pred\.shape=\(4, 2\)"):
            loss(np.zeros((4, 3)), np.full((4, 2), 0.5))


def test_rank_differences_follow_keras():
    # Labels (N,) for y_pred (N, 1), and (N, 1) for (N,), are matched as Keras's loss wrapper does.
    t, p = np.array([1.0, 0.0, 1.0]), np.array([[0.7], [0.2], [0.4]])
    for loss in (L.Hinge(), L.Poisson(), L.LogCosh(), L.BinaryFocalCrossentropy(), L.KLDivergence(), L.Dice()):
        a = float(loss(t, p))
        assert a == pytest.approx(float(loss(t[:, None], p)), rel=1e-12)
        assert a == pytest.approx(float(loss(t[:, None], p[:, 0])), rel=1e-12)
