"""Tests for gpulayers.metrics_fscore: Keras's documented values, F-scores counted by float64 loops
(every average, weights, the argmax rule), state variables, configs, compile, errors, and Keras 3 itself."""

import os

import numpy as np
import pytest

import gpulayers
from gpulayers import metrics as M
from gpulayers import metrics_fscore as F
from helpers import keras_or_skip

EPS = 1e-7  # Keras's epsilon in the F-score formula
Y_DOC = np.array([[1, 1, 1], [1, 0, 0], [1, 1, 0]], np.int32)
P_DOC = np.array([[0.2, 0.6, 0.7], [0.2, 0.6, 0.6], [0.6, 0.8, 0.0]], np.float32)


def keras_module():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    return keras_or_skip()


def ref_fbeta(y, p, w=None, average=None, beta=1.0, threshold=None):
    """The score by counting: per-class tp/fp/fn and true-label weight, then Keras's formula with eps."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    n, c = p.shape
    w = np.ones(n) if w is None else np.asarray(w, float)
    tp, fp, fn, support = (np.zeros(c) for _ in range(4))
    for i in range(n):
        row_max = max(np.float32(v) for v in p[i])
        for j in range(c):
            v = np.float32(p[i, j])
            pos = (v >= row_max and abs(v) > 1e-9) if threshold is None else v > np.float32(threshold)
            tp[j] += w[i] * pos * y[i, j]
            fp[j] += w[i] * pos * (1 - y[i, j])
            fn[j] += w[i] * (not pos) * y[i, j]
            support[j] += w[i] * y[i, j]
    if average == "micro":
        tp, fp, fn = np.array([tp.sum()]), np.array([fp.sum()]), np.array([fn.sum()])
    b2 = beta * beta
    scores = []
    for t, f_p, f_n in zip(tp, fp, fn):
        precision, recall = t / (t + f_p + EPS), t / (t + f_n + EPS)
        scores.append(precision * recall / (b2 * precision + recall + EPS) * (1 + b2))
    if average is None:
        return scores
    if average == "weighted":
        return sum(s * sw / (support.sum() + EPS) for s, sw in zip(scores, support))
    return sum(scores) / len(scores)


def test_keras_documented_values():
    m = F.F1Score(threshold=0.5)
    m.update_state(Y_DOC, P_DOC)
    np.testing.assert_allclose(m.result(), [0.5, 0.8, 0.6666667], atol=1e-6)
    m = F.FBetaScore(beta=2.0, threshold=0.5)
    m.update_state(Y_DOC, P_DOC)
    np.testing.assert_allclose(m.result(), [0.3846154, 0.90909094, 0.8333334], atol=1e-6)
    assert all(type(v) is float for v in m.result())


@pytest.mark.parametrize("average", [None, "micro", "macro", "weighted"])
@pytest.mark.parametrize("beta,threshold", [(1.0, None), (0.5, 0.4), (2.0, 0.66), (3.0, 1.0)])
def test_against_counting_loops(average, beta, threshold):
    rng = np.random.default_rng(11)
    m = F.FBetaScore(average=average, beta=beta, threshold=threshold)
    ys, ps, ws = [], [], []
    for n in (5, 8, 3):
        y = rng.integers(0, 2, (n, 4)).astype(np.float32)
        p = rng.uniform(0, 1, (n, 4)).astype(np.float32)
        p[0] = [0.3, 0.7, 0.7, 0.1]  # a tie for the row's maximum: both are positive with threshold=None
        if n == 8:
            p[1] = 0.0  # an all-zero row: no positive with threshold=None
        w = rng.uniform(0, 2, n)
        m.update_state(y, p, sample_weight=w)
        ys.append(y)
        ps.append(p)
        ws.append(w)
    ref = ref_fbeta(np.concatenate(ys), np.concatenate(ps), np.concatenate(ws), average, beta, threshold)
    np.testing.assert_allclose(m.result(), ref, rtol=1e-12, atol=1e-15)
    f1 = F.F1Score(average=average, threshold=threshold)
    for y, p, w in zip(ys, ps, ws):
        f1.update_state(y, p, w)
    np.testing.assert_allclose(f1.result(), ref_fbeta(np.concatenate(ys), np.concatenate(ps), np.concatenate(ws),
                                                      average, 1.0, threshold), rtol=1e-12, atol=1e-15)


def test_perfect_and_worst_scores_and_weights():
    y = np.array([[1, 1, 1], [1, 0, 0], [1, 1, 0]])
    p = np.array([[0.7, 0.7, 0.7], [1, 0, 0], [0.9, 0.8, 0]])
    for average in ("micro", "macro", "weighted"):
        m = F.FBetaScore(average=average, beta=0.5, threshold=0.66)
        m.update_state(y, p)
        assert m.result() == pytest.approx(1.0, abs=1e-6)
        m.reset_state()
        m.update_state(1 - y, p)
        assert m.result() == pytest.approx(0.0, abs=1e-6)
    # a zero weight removes a sample; (N, 1) weights read as one per sample
    m = F.F1Score(threshold=0.5)
    m.update_state(y, p, sample_weight=np.array([[1.0], [0.0], [1.0]]))
    np.testing.assert_allclose(m.result(), ref_fbeta(y[[0, 2]], p[[0, 2]], threshold=0.5), rtol=1e-12)


def test_state_reset_and_config():
    m = F.F1Score(average="weighted", name="f1")
    assert m.variables == [] and m.result() == 0.0  # the state is made at the first update, as Keras
    assert F.F1Score().result() == []
    m.update_state(Y_DOC, P_DOC)
    assert [(v.path, tuple(v.shape)) for v in m.variables] == [
        ("f1/true_positives", (3,)), ("f1/false_positives", (3,)), ("f1/false_negatives", (3,)),
        ("f1/intermediate_weights", (3,))]
    micro = F.FBetaScore(average="micro")
    micro.update_state(Y_DOC, P_DOC)
    assert [tuple(v.shape) for v in micro.variables] == [()] * 4
    m.reset_state()
    assert all(not np.any(v.numpy()) for v in m.variables) and m.result() == 0.0
    assert m.get_config() == {"name": "f1", "dtype": "float32", "average": "weighted", "threshold": None}
    fb = F.FBetaScore(average="macro", beta=0.5, threshold=0.3, name="fb")
    assert fb.get_config() == {"name": "fb", "dtype": "float32", "average": "macro", "beta": 0.5, "threshold": 0.3}
    for metric in (m, fb, F.FBetaScore(beta=np.float64(2.0))):
        data = M.serialize(metric)
        assert data["module"] == "keras.metrics" and data["class_name"] == type(metric).__name__
        again = M.deserialize(data)
        assert type(again) is type(metric) and again.get_config() == metric.get_config()
    assert type(F.FBetaScore(beta=np.float64(2.0)).get_config()["beta"]) is float


def test_lookup_and_compile():
    assert type(M.get("f1_score")) is F.F1Score and type(M.get("F1Score")) is F.F1Score
    assert type(M.get("FBetaScore")) is F.FBetaScore and M.get("f_beta_score").name == "f_beta_score"
    rng = np.random.default_rng(4)
    x = rng.normal(size=(24, 3)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 24)]
    model = gpulayers.Sequential([gpulayers.Input((3,)), gpulayers.layers.Dense(3, activation="softmax")])
    model.compile("adam", "categorical_crossentropy", metrics=["AUC", gpulayers.metrics.F1Score(average="macro")])
    history = model.fit(x, y, epochs=1, batch_size=8, verbose=0).history
    assert set(history) == {"loss", "AUC", "f1_score"}
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert logs["f1_score"] == pytest.approx(ref_fbeta(y, model.predict(x, verbose=0), average="macro"), rel=1e-6)


@pytest.mark.parametrize("build,match", [
    (lambda: F.FBetaScore(average="mean"), "average='mean'"),
    (lambda: F.F1Score(average="MICRO"), "average"),
    (lambda: F.FBetaScore(beta=0.0), "beta=0.0"),
    (lambda: F.FBetaScore(beta=True), "beta=True"),
    (lambda: F.F1Score(threshold=0.0), "threshold=0.0"),
    (lambda: F.F1Score(threshold=1.5), "threshold=1.5"),
    (lambda: F.FBetaScore(beta=1), "beta=1 of type int"),  # Keras wants a Python float, not an int
    (lambda: F.FBetaScore(beta="1.0"), "beta='1.0'"),
    (lambda: F.F1Score(threshold=1), "threshold=1 of type int"),
])
def test_argument_errors(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_undefined_output_dim_is_a_value_error():
    with pytest.raises(ValueError, match=r"output_dim fully defined.*\(2, None\)"):
        F.FBetaScore(beta=1.0)._build((2, None), (2, None))


def test_shape_errors_leave_the_state_alone():
    with pytest.raises(ValueError, match="2D inputs"):
        F.F1Score().update_state(np.ones(3), np.ones(3))
    m = F.F1Score(threshold=0.5)
    m.update_state(Y_DOC, P_DOC)
    before = m.result()
    with pytest.raises(ValueError, match=r"\(batch_size, 3\)"):
        m.update_state(np.ones((2, 4)), np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"\(3, 3\).*\(3, 2\)"):
        m.update_state(np.ones((3, 3)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="sample_weight"):
        m.update_state(Y_DOC, P_DOC, sample_weight=np.ones(2))
    assert m.result() == before


PARITY = [({}, "F1Score"), ({"average": "micro"}, "F1Score"), ({"average": "macro", "threshold": 0.4}, "F1Score"),
          ({"average": "weighted"}, "F1Score"), ({"beta": 2.0}, "FBetaScore"),
          ({"beta": 0.5, "average": "weighted", "threshold": 0.6}, "FBetaScore")]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras's own variable reads under NumPy 2
@pytest.mark.parametrize("kwargs,name", PARITY)
def test_matches_keras_on_random_batches(kwargs, name):
    keras = keras_module()
    rng = np.random.default_rng(17)
    ours, theirs = getattr(F, name)(name="m", **kwargs), getattr(keras.metrics, name)(name="m", **kwargs)
    for _ in range(3):
        y = rng.integers(0, 2, (12, 4)).astype(np.float32)
        p = rng.uniform(0, 1, (12, 4)).astype(np.float32)
        w = (rng.integers(0, 9, 12) / 4).astype(np.float32)
        ours.update_state(y, p, w)
        theirs.update_state(y, p, sample_weight=w)
    np.testing.assert_allclose(ours.result(), np.asarray(theirs.result(), np.float64), rtol=1e-6, atol=1e-6)
    assert [(v.name, tuple(v.shape)) for v in ours.variables] == [(v.name, tuple(v.shape)) for v in theirs.variables]
    assert ours.get_config() == theirs.get_config()
    assert type(keras.metrics.get(M.serialize(ours))).__name__ == name
