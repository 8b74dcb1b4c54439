"""Circle, the generalized cross-entropy and SparseCategoricalCrossentropy's class axis (Keras 3.15's)."""

import numpy as np
import pytest

from gpulayers import losses as L
from gpulayers import metrics as M
from helpers import check_op_gradients, keras_or_skip, to_np

RNG = np.random.default_rng(7)
LABELS = np.array([1, 1, 2, 2, 3])
EMB = np.array([[0.70014004, -0.42008403, 0.14002801, 0.56011203], [0.17609018, 0.70436073, -0.52827054, 0.44022545],
                [-0.34050261, 0.25537696, -0.68100522, 0.59587957], [0.32163376, -0.75047877, 0.53605627, -0.21442251],
                [0.51261459, -0.34174306, 0.17087153, 0.76892189]])


def ref_circle(t, p, gamma=80.0, m=0.4, remove_diagonal=True):
    """Float64 loops over the query/reference pairs."""
    out = []
    for i in range(len(t)):
        pos, neg = [], []
        for j in range(len(t)):
            d = max(1.0 - float(p[i] @ p[j]), 0.0)
            if t[i] == t[j] and not (remove_diagonal and i == j):
                pos.append(-gamma * max(m + d, 0.0) * (m - d))
            elif t[i] != t[j]:
                neg.append(gamma * max(1.0 + m - d, 0.0) * (1.0 - m - d))
        lse = lambda v: -np.inf if not v else np.log(np.sum(np.exp(np.array(v) - max(v)))) + max(v)  # noqa: E731
        out.append(np.logaddexp(0.0, lse(pos) + lse(neg)))
    return np.array(out)


def test_circle_values_reduction_and_keras_numbers():
    values = to_np(L.circle(LABELS, EMB))
    np.testing.assert_allclose(values, ref_circle(LABELS, EMB), rtol=1e-10)
    assert float(L.Circle()(LABELS, EMB)) == pytest.approx(188.3883, abs=1e-3)  # Keras's test value
    assert float(L.Circle(gamma=256, margin=0.25)(LABELS, EMB)) == pytest.approx(652.7617, abs=1e-3)
    w = np.array([2.0, 2.0, 1.0, 1.0, 0.5])
    assert float(L.Circle()(LABELS, EMB, sample_weight=w)) == pytest.approx(244.91918, abs=1e-3)
    # a query without positives has loss 0 and is left out of the mean (Keras's mask loss > 0)
    labels = np.array([0, 0, 1, 2, 2])
    v = ref_circle(labels, EMB)
    assert v[2] == 0.0
    assert float(L.Circle()(labels, EMB)) == pytest.approx(v.sum() / 4, rel=1e-10)
    c = L.Circle(gamma=3.0, margin=0.1, remove_diagonal=False, name="c")
    assert c.get_config() == {"name": "c", "reduction": "sum_over_batch_size", "gamma": 3.0, "margin": 0.1,
                              "remove_diagonal": False}
    assert L.deserialize(L.serialize(c)).get_config() == c.get_config() and L.get("circle") is L.circle


def test_circle_gradient_matches_finite_differences():
    emb = RNG.normal(size=(6, 3))
    # norm 0.9: a unit row's self-distance max(1 - |p|^2, 0) sits on the kink, where differences are one-sided
    emb *= 0.9 / np.linalg.norm(emb, axis=1, keepdims=True)
    labels = np.array([0, 0, 1, 1, 2, 0])
    check_op_gradients(lambda p: L.Circle(gamma=4.0)(labels, p), emb, rtol=1e-5, atol=1e-8)
    check_op_gradients(lambda p, r: L.circle(labels, p, ref_labels=labels, ref_embeddings=r, gamma=4.0), emb, emb[::-1].copy(),
                       rtol=1e-5, atol=1e-8)


def test_generalized_cross_entropy_values_gradient_and_config():
    t = np.array([0, 1, 2, 1])
    p = RNG.uniform(0.1, 1.0, size=(4, 3))
    p /= p.sum(axis=1, keepdims=True)
    for q in (0.1, 0.5, 0.8):
        expected = (1 - p[np.arange(4), t] ** q) / q
        np.testing.assert_allclose(to_np(L.categorical_generalized_cross_entropy(t, p, q)), expected, rtol=1e-12)
        assert float(L.CategoricalGeneralizedCrossEntropy(q=q)(t[:, None], p)) == pytest.approx(expected.mean())
    check_op_gradients(lambda x: L.CategoricalGeneralizedCrossEntropy(q=0.3)(t, x), p, rtol=1e-6)
    g = L.CategoricalGeneralizedCrossEntropy(q=0.1, name="gce")
    assert g.get_config() == {"name": "gce", "reduction": "sum_over_batch_size", "q": 0.1}
    assert type(L.deserialize(L.serialize(g))) is L.CategoricalGeneralizedCrossEntropy
    for bad in (0, 1, 1.5, "0.5"):
        with pytest.raises(ValueError, match="`q`"):
            L.CategoricalGeneralizedCrossEntropy(q=bad)


def test_sparse_crossentropy_class_axis():
    p = RNG.uniform(0.05, 1.0, size=(2, 3, 4))
    t = RNG.integers(0, 3, size=(2, 1, 4))
    last = to_np(L.sparse_categorical_crossentropy(t[:, 0], np.moveaxis(p, 1, -1)))
    np.testing.assert_allclose(to_np(L.sparse_categorical_crossentropy(t, p, axis=1)), last, rtol=1e-12)
    np.testing.assert_allclose(to_np(L.sparse_categorical_crossentropy(t[:, 0], p, axis=1)), last, rtol=1e-12)
    loss = L.SparseCategoricalCrossentropy(axis=1, ignore_class=2)
    masked = np.where(t[:, 0] == 2, 0.0, last)
    assert float(loss(t, p)) == pytest.approx(masked.sum() / (t != 2).sum(), rel=1e-12)
    check_op_gradients(lambda x: L.SparseCategoricalCrossentropy(axis=1, from_logits=True)(t, x), p, rtol=1e-6)
    assert L.SparseCategoricalCrossentropy(axis=1).get_config()["axis"] == 1
    assert L.SparseCategoricalCrossentropy.from_config(L.SparseCategoricalCrossentropy(axis=1).get_config()).axis == 1
    m = M.SparseCategoricalCrossentropy(axis=1)
    m.update_state(t, p)
    assert m.result() == pytest.approx(last.mean(), rel=1e-12)
    with pytest.raises(ValueError, match="class axis"):
        L.sparse_categorical_crossentropy(t[:, 0], p, axis=0)


def test_sparse_crossentropy_metric_ignore_class_with_weights():
    t = np.array([0, 1, 2])
    p = np.array([[0.8, 0.1, 0.1], [0.05, 0.95, 0], [0.1, 0.8, 0.1]])
    values = -np.log(np.clip(p[np.arange(3), t], 1e-7, 1 - 1e-7))
    # Keras: weights drop the ignored label from the count; without weights it still counts (as a 0)
    m = M.SparseCategoricalCrossentropy(ignore_class=0)
    assert m(t, p, sample_weight=np.array([0.5, 1.5, 2.0])) == pytest.approx(
        (1.5 * values[1] + 2.0 * values[2]) / 3.5, rel=1e-6)  # Keras's 1.33774646
    assert M.SparseCategoricalCrossentropy(ignore_class=0)(t, p) == pytest.approx(values[1:].sum() / 3, rel=1e-6)


def test_against_keras():
    keras = keras_or_skip()
    assert float(L.Circle()(LABELS, EMB)) == pytest.approx(float(keras.losses.Circle()(LABELS, EMB)), rel=1e-5)
    t, p = np.array([0, 1, 0, 1]), np.array([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4], [0.4, 0.6]])
    assert float(L.CategoricalGeneralizedCrossEntropy(q=0.8)(t, p)) == pytest.approx(
        float(keras.losses.CategoricalGeneralizedCrossEntropy(q=0.8)(t, p)), rel=1e-5)
    km = keras.metrics.SparseCategoricalCrossentropy(ignore_class=0)
    w = np.array([0.5, 1.5, 2.0])
    tt, pp = np.array([0, 1, 2]), np.array([[0.8, 0.1, 0.1], [0.05, 0.95, 0], [0.1, 0.8, 0.1]])
    assert M.SparseCategoricalCrossentropy(ignore_class=0)(tt, pp, sample_weight=w) == pytest.approx(
        float(km(tt, pp, sample_weight=w)), rel=1e-5)
