"""Tests for gpulayers.metrics: hand counts, weighted means, accumulation, compile-style lookup."""

import numpy as np
import pytest

from gpulayers import losses
from gpulayers import metrics as M

RNG = np.random.default_rng(99)


def one_hot(labels, c):
    return np.eye(c)[np.asarray(labels)]


# ---------------------------------------------------------------------------
# Keras's documented numbers
# ---------------------------------------------------------------------------
def test_keras_documented_values():
    def run(metric, y_true, y_pred, sample_weight=None):
        metric.reset_state()
        metric.update_state(np.array(y_true), np.array(y_pred), sample_weight=sample_weight)
        return metric.result()

    m = M.Mean()
    m.update_state(np.array([1.0, 3.0, 5.0, 7.0]))
    assert m.result() == 4.0
    m.reset_state()
    m.update_state(np.array([1.0, 3.0, 5.0, 7.0]), sample_weight=np.array([1, 1, 0, 0]))
    assert m.result() == 2.0
    yt, yp = [[1], [2], [3], [4]], [[0], [2], [3], [4]]
    assert run(M.Accuracy(), yt, yp) == 0.75
    assert run(M.Accuracy(), yt, yp, np.array([1, 1, 0, 0])) == 0.5
    yt, yp = [[1], [1], [0], [0]], [[0.98], [1], [0], [0.6]]
    assert run(M.BinaryAccuracy(), yt, yp) == 0.75
    assert run(M.BinaryAccuracy(), yt, yp, np.array([1, 0, 0, 1])) == 0.5
    yt, yp = [[0, 0, 1], [0, 1, 0]], [[0.1, 0.9, 0.8], [0.05, 0.95, 0]]
    assert run(M.CategoricalAccuracy(), yt, yp) == 0.5
    assert run(M.CategoricalAccuracy(), yt, yp, np.array([0.7, 0.3])) == pytest.approx(0.3)
    yt, yp = [[2], [1]], [[0.1, 0.6, 0.3], [0.05, 0.95, 0]]
    assert run(M.SparseCategoricalAccuracy(), yt, yp) == 0.5
    assert run(M.SparseCategoricalAccuracy(), yt, yp, np.array([0.7, 0.3])) == pytest.approx(0.3)
    yt, yp = [[0, 1], [0, 0]], [[1.0, 1], [0, 0]]
    assert run(M.MeanSquaredError(), yt, yp) == 0.25
    assert run(M.MeanAbsoluteError(), yt, yp) == 0.25
    assert run(M.MeanAbsoluteError(), yt, yp, np.array([1, 0])) == 0.5
    for cls in (M.Precision, M.Recall):
        assert run(cls(), [0, 1, 1, 1], [1.0, 0, 1, 1]) == pytest.approx(2 / 3)
        assert run(cls(), [0, 1, 1, 1], [1.0, 0, 1, 1], np.array([0, 0, 1, 0])) == 1.0


# ---------------------------------------------------------------------------
# Hand counts over several batches
# ---------------------------------------------------------------------------
def batches(n_batches=4, c=4, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_batches):
        n = 3 + 2 * i  # unequal batch sizes
        out.append((rng.integers(0, c, n), rng.uniform(0, 1, (n, c)), rng.uniform(0, 2, n)))
    return out


@pytest.mark.parametrize("weighted", [False, True])
def test_sparse_and_categorical_accuracy_hand_counts(weighted):
    data = batches()
    sparse, sparse_col, cat = M.SparseCategoricalAccuracy(), M.SparseCategoricalAccuracy(), M.CategoricalAccuracy()
    hits = total = 0.0
    for labels, probs, w in data:
        sw = w if weighted else None
        sparse.update_state(labels, probs, sw)
        sparse_col.update_state(labels[:, None].astype(np.float32), probs, sw)
        cat.update_state(one_hot(labels, 4), probs, sw)
        for i in range(len(labels)):
            wi = w[i] if weighted else 1.0
            best = max(range(4), key=lambda j: (probs[i, j], -j))
            hits += wi * (best == labels[i])
            total += wi
    for m in (sparse, sparse_col, cat):
        assert isinstance(m.result(), float)
        assert m.result() == pytest.approx(hits / total, rel=1e-12)


@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_binary_accuracy_hand_counts(threshold):
    m = M.BinaryAccuracy(threshold=threshold)
    hits = count = 0
    for labels, probs, _ in batches(c=3):
        y = (labels[:, None] == np.arange(3)).astype(float)  # multi-label targets (N, 3)
        m.update_state(y, probs)
        for i in range(y.shape[0]):
            hits += sum(float(y[i, j] == (probs[i, j] > threshold)) for j in range(3)) / 3
            count += 1
    assert m.result() == pytest.approx(hits / count)


def test_binary_accuracy_rank_one_counts_each_element():
    # Keras 3.15.1 compares element by element: 1 of 2, then 4 of 4 (Keras gives 0.8333), whatever the rank.
    for t0, p0, t1, p1 in ((np.array([1, 0]), np.array([0.9, 0.8]), np.array([1, 1, 1, 1]), np.array([0.9, 0.8, 0.7, 0.6])),
                           (np.array([[1], [0]]), np.array([[0.9], [0.8]]), np.array([1, 1, 1, 1]),
                            np.array([[0.9], [0.8], [0.7], [0.6]]))):
        m = M.BinaryAccuracy()
        m.update_state(t0, p0)
        m.update_state(t1, p1)
        assert m.result() == pytest.approx(5 / 6)


def test_accuracy_counts_rank_one_labels_one_by_one_and_takes_element_weights():
    # Keras 3.15.1's numbers: four batches all right, then 3 of 4 (0.95); weights per element or per row.
    m = M.Accuracy()
    for _ in range(4):
        m.update_state(np.array([1, 2, 3, 4]), np.array([1, 2, 3, 4]))
    m.update_state(np.array([1, 2, 3, 4]), np.array([1, 2, 3, 0]))
    assert m.result() == pytest.approx(0.95)
    t, p = np.array([[1, 2], [3, 4]]), np.array([[1, 0], [3, 4]])
    for sw, want in ((np.array([[1, 0], [1, 1]]), 1.0), (np.array([1, 3]), 0.875), (None, 0.75)):
        m = M.Accuracy()
        m.update_state(t, p, sample_weight=sw)
        assert m.result() == pytest.approx(want)
    np.testing.assert_array_equal(M.accuracy(t, p), [[1.0, 0.0], [1.0, 1.0]])
    np.testing.assert_array_equal(M.binary_accuracy(np.array([[1, 0], [1, 1]]), np.array([[0.9, 0.2], [0.3, 0.8]])),
                                  [[1.0, 1.0], [0.0, 1.0]])


def test_soft_labels_never_match_in_binary_accuracy():
    m = M.BinaryAccuracy()
    m.update_state(np.array([[0.9], [1.0]]), np.array([[0.95], [0.95]]))
    assert m.result() == 0.5


@pytest.mark.parametrize("cls,kind", [(M.MeanSquaredError, "mse"), (M.MeanAbsoluteError, "mae")])
def test_regression_metrics_weighted_over_batches(cls, kind):
    m = cls()
    num = den = 0.0
    for i in range(3):
        t, p, w = RNG.normal(size=(2 + i, 3)), RNG.normal(size=(2 + i, 3)), RNG.uniform(0, 1, 2 + i)
        m.update_state(t, p, sample_weight=w)
        for r in range(t.shape[0]):
            err = [(p[r, j] - t[r, j]) ** 2 if kind == "mse" else abs(p[r, j] - t[r, j]) for j in range(3)]
            num += w[r] * sum(err) / 3
            den += w[r]
    assert m.result() == pytest.approx(num / den, rel=1e-12)


def test_mean_weight_shapes():
    m = M.Mean()
    v = RNG.normal(size=(3, 4))
    w = RNG.uniform(0, 1, (3, 4))
    m.update_state(v, w)  # Keras: per-sample mean of v*w over the mean of w
    expected_total = sum(sum(v[i, j] * w[i, j] for j in range(4)) / 4 for i in range(3))
    expected_count = sum(sum(w[i, j] for j in range(4)) / 4 for i in range(3))
    assert m.result() == pytest.approx(expected_total / expected_count)
    m.reset_state()
    m.update_state(v, np.array([1.0, 0.0, 3.0]))  # per-sample weight on (N, T) values
    assert m.result() == pytest.approx((v[0].mean() + 3 * v[2].mean()) / 4)
    m.reset_state()
    m.update_state(np.array(2.0), 3.0)  # scalar value with a scalar weight
    m.update_state(np.array(4.0), 1.0)
    assert m.result() == pytest.approx(2.5)
    m.reset_state()
    m.update_state(5.0)
    m.update_state([1.0, 3.0])
    assert m.result() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="sample_weight"):
        m.update_state(np.ones(3), np.ones(2))
    s = M.Sum()
    s.update_state(np.array([1.0, 3.0, 5.0, 7.0]), sample_weight=np.array([1, 1, 0, 0]))
    assert s.result() == 4.0


def test_reset_and_empty_results():
    for m in (M.Mean(), M.Accuracy(), M.BinaryAccuracy(), M.SparseCategoricalAccuracy(), M.Precision(), M.Recall()):
        assert m.result() == 0.0
    m = M.SparseCategoricalAccuracy()
    m.update_state(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]))
    assert m.result() == 1.0
    m.reset_state()
    assert m.result() == 0.0
    m.update_state(np.array([0]), np.array([[0.1, 0.9]]))
    assert m.result() == 0.0
    m.update_state(np.array([1]), np.array([[0.1, 0.9]]), sample_weight=np.array([0.0]))
    assert m.result() == 0.0  # a zero weight adds nothing


def test_call_updates_and_returns_the_running_result():
    m = M.Accuracy()
    assert m(np.array([[1], [2]]), np.array([[1], [0]])) == 0.5
    assert m(np.array([[1], [2]]), np.array([[1], [2]])) == 0.75


def test_state_stays_on_device_until_result(monkeypatch):
    calls = []
    real = M._to_float
    monkeypatch.setattr(M, "_to_float", lambda x: calls.append(1) or real(x))
    metrics = [M.Mean(), M.SparseCategoricalAccuracy(), M.MeanSquaredError()]
    for _ in range(3):
        labels = RNG.integers(0, 3, 5)
        probs = RNG.uniform(size=(5, 3))
        metrics[0].update_state(probs[:, 0], RNG.uniform(size=5))
        metrics[1].update_state(labels, probs)
        metrics[2].update_state(one_hot(labels, 3), probs)
    assert calls == []
    assert isinstance(metrics[0].total.value, (np.ndarray, np.generic))
    for m in metrics:
        m.result()
    assert calls


# ---------------------------------------------------------------------------
# Precision and recall
# ---------------------------------------------------------------------------
def test_precision_recall_hand_counts_thresholds_and_weights():
    thresholds = [0.0, 0.3, 0.5, 0.8]
    p_m, r_m = M.Precision(thresholds=thresholds), M.Recall(thresholds=thresholds)
    tp = [0.0] * 4
    fp = [0.0] * 4
    fn = [0.0] * 4
    for _ in range(3):
        y = RNG.integers(0, 2, (6, 2)).astype(float)
        y[0, 0] = 0.4  # nonzero labels count as positive, as Keras's cast to bool
        p = RNG.uniform(0, 1, (6, 2))
        p[1, 1] = 0.5  # exactly at a threshold: not positive (strict >)
        w = RNG.uniform(0, 2, 6)
        p_m.update_state(y, p, w)
        r_m.update_state(y, p, w)
        for k, th in enumerate(thresholds):
            for i in range(6):
                for j in range(2):
                    pos, true = p[i, j] > th, y[i, j] != 0
                    tp[k] += w[i] * (pos and true)
                    fp[k] += w[i] * (pos and not true)
                    fn[k] += w[i] * ((not pos) and true)
    np.testing.assert_allclose(p_m.result(), [tp[k] / (tp[k] + fp[k]) for k in range(4)], rtol=1e-12)
    np.testing.assert_allclose(r_m.result(), [tp[k] / (tp[k] + fn[k]) for k in range(4)], rtol=1e-12)
    assert isinstance(p_m.result(), list) and all(isinstance(v, float) for v in p_m.result())


def test_precision_recall_shapes_class_id_and_errors():
    p = M.Precision()
    p.update_state(np.array([1, 0, 1]), np.array([[0.9], [0.7], [0.2]]))  # (N,) labels, (N, 1) predictions
    assert p.result() == 0.5
    r = M.Recall(class_id=1)
    r.update_state(one_hot([1, 1, 0, 2], 3), np.array([[0.1, 0.9, 0.0], [0.6, 0.4, 0], [0, 0.8, 0.2], [0, 0, 1.0]]))
    assert r.result() == 0.5
    assert M.Precision(thresholds=0.7).thresholds == [0.7]
    with pytest.raises(ValueError, match="thresholds"):
        M.Precision(thresholds=1.5)
    with pytest.raises(ValueError, match="thresholds"):
        M.Recall(thresholds=[0.2, -0.1])
    with pytest.raises(ValueError, match="top_k"):
        M.Precision(top_k=0)  # top_k itself is covered in test_metrics_confusion.py
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        M.Precision().update_state(np.ones(3), np.ones(2))
    assert M.Precision().name.startswith("precision") and M.Recall().name.startswith("recall")


# ---------------------------------------------------------------------------
# Lookup as Keras 3's compile does it
# ---------------------------------------------------------------------------
BCE_LOSSES = ["binary_crossentropy", "bce", "BinaryCrossentropy", losses.BinaryCrossentropy(from_logits=True),
              losses.binary_crossentropy]
SPARSE_LOSSES = ["sparse_categorical_crossentropy", losses.SparseCategoricalCrossentropy(),
                 losses.sparse_categorical_crossentropy, losses.SparseCategoricalCrossentropy]
CAT_LOSSES = ["categorical_crossentropy", "CategoricalCrossentropy", losses.CategoricalCrossentropy(label_smoothing=0.1),
              losses.categorical_crossentropy]


@pytest.mark.parametrize("name", ["accuracy", "acc", "Accuracy", "ACC"])
@pytest.mark.parametrize("loss,cls", [(lo, M.BinaryAccuracy) for lo in BCE_LOSSES]
                         + [(lo, M.SparseCategoricalAccuracy) for lo in SPARSE_LOSSES]
                         + [(lo, M.CategoricalAccuracy) for lo in CAT_LOSSES])
def test_accuracy_resolves_from_the_loss_and_keeps_the_name(name, loss, cls):
    metric = M.get(name, loss=loss)
    assert type(metric) is cls and metric.name == name


def test_loss_decides_before_shapes():
    # Multi-label sigmoid outputs with binary cross-entropy: binary accuracy.
    # (Keras 3 decides from the shapes alone and would pick categorical here.)
    m = M.get("accuracy", loss="binary_crossentropy", y_true_shape=(8, 3), y_pred_shape=(8, 3))
    assert type(m) is M.BinaryAccuracy


@pytest.mark.parametrize("yt,yp,cls", [
    ((8, 1), (8, 1), M.BinaryAccuracy), ((8,), (8, 1), M.BinaryAccuracy),
    ((8,), (8, 5), M.SparseCategoricalAccuracy), ((8, 1), (8, 5), M.SparseCategoricalAccuracy),
    ((8, 5), (8, 5), M.CategoricalAccuracy), ((8, 7, 5), (8, 7, 5), M.CategoricalAccuracy),
    ((8, 7), (8, 7, 5), M.SparseCategoricalAccuracy),
])
@pytest.mark.parametrize("loss", [None, "mse", losses.Huber()])
def test_accuracy_resolves_from_shapes_otherwise(yt, yp, cls, loss):
    m = M.get("acc", loss=loss, y_true_shape=yt, y_pred_shape=yp)
    assert type(m) is cls and m.name == "acc"


@pytest.mark.parametrize("y_true,y_pred,kind,expected", [
    (np.array([[1], [0]]), np.array([[0.9], [0.8]]), "binary", 0.5),
    (np.array([2, 0]), np.array([[0.1, 0.2, 0.7], [0.5, 0.4, 0.1]]), "sparse", 1.0),
    (one_hot([2, 0], 3), np.array([[0.1, 0.2, 0.7], [0.3, 0.4, 0.3]]), "categorical", 0.5),
])
def test_accuracy_without_loss_or_shapes_resolves_on_first_batch(y_true, y_pred, kind, expected):
    m = M.get("accuracy")
    assert m.name == "accuracy" and m.kind is None
    m.update_state(y_true, y_pred)
    m.update_state(y_true, y_pred)
    assert m.kind == kind and m.result() == expected
    assert M.serialize(m)["class_name"] == {"binary": "BinaryAccuracy", "sparse": "SparseCategoricalAccuracy",
                                            "categorical": "CategoricalAccuracy"}[kind]


@pytest.mark.parametrize("identifier,cls", [
    ("mae", M.MeanAbsoluteError), ("MAE", M.MeanAbsoluteError), ("mean_absolute_error", M.MeanAbsoluteError),
    ("MeanAbsoluteError", M.MeanAbsoluteError), ("mse", M.MeanSquaredError), ("mean_squared_error", M.MeanSquaredError),
    ("precision", M.Precision), ("recall", M.Recall), ("binary_accuracy", M.BinaryAccuracy),
    ("sparse_categorical_accuracy", M.SparseCategoricalAccuracy), ("categorical_accuracy", M.CategoricalAccuracy),
])
def test_get_names_keep_the_given_name(identifier, cls):
    m = M.get(identifier, loss="binary_crossentropy")
    assert type(m) is cls and m.name == identifier


def test_get_objects_callables_and_errors():
    assert M.get(None) is None
    inst = M.Precision(thresholds=0.2, name="p")
    assert M.get(inst) is inst
    assert type(M.get(M.Recall)) is M.Recall

    def my_metric(y_true, y_pred):
        return np.abs(y_true - y_pred).max(axis=-1)

    m = M.get(my_metric)
    assert isinstance(m, M.MeanMetricWrapper) and m.name == "my_metric"
    m.update_state(np.zeros((2, 2)), np.array([[1.0, 2.0], [0.0, 4.0]]))
    assert m.result() == 3.0
    lm = M.get(losses.Huber(name="hub"))
    assert lm.name == "hub"
    lm.update_state(np.zeros((2, 1)), np.ones((2, 1)))
    assert lm.result() == 0.5
    with pytest.raises(ValueError, match=r"`metrics`.*'accuracyy'.*Did you mean"):
        M.get("accuracyy")
    with pytest.raises(ValueError, match="metrics"):
        M.get(3.5)
    with pytest.raises(ValueError, match="metrics"):
        M.get("mean")


def test_configs_round_trip():
    for m in (M.BinaryAccuracy(threshold=0.3, name="ba"), M.Precision(thresholds=[0.2, 0.6], class_id=1),
              M.Recall(name="r"), M.MeanAbsoluteError(name="mae"), M.Accuracy(), M.Mean(name="loss"),
              M.MeanMetricWrapper(losses.huber, name="h", delta=0.5)):
        again = M.deserialize(M.serialize(m))
        assert type(again) is type(m) and again.get_config() == m.get_config()
    cfg = M.BinaryAccuracy().get_config()
    assert cfg == {"name": "binary_accuracy", "dtype": "float32", "threshold": 0.5}
    keras_dict = {"module": "keras.metrics", "class_name": "SparseCategoricalAccuracy",
                  "config": {"name": "acc", "dtype": "float32"}, "registered_name": None}
    assert M.serialize(M.get(keras_dict)) == keras_dict
    wrapped = M.deserialize(M.serialize(M.MeanMetricWrapper(losses.huber, name="h", delta=0.5)))
    wrapped.update_state(np.zeros((1, 1)), np.full((1, 1), 2.0))
    assert wrapped.result() == pytest.approx(0.5 * 2 - 0.125)


def test_argument_and_shape_errors():
    with pytest.raises(ValueError, match="threshold"):
        M.BinaryAccuracy(threshold=1.0)
    with pytest.raises(ValueError, match="dtype"):
        M.Mean(dtype="string")
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(3, 4\)"):
        M.CategoricalAccuracy().update_state(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"\(4,\).*\(3, 4\)"):
        M.SparseCategoricalAccuracy().update_state(np.zeros(4), np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(3, 4\)"):
        M.MeanSquaredError().update_state(np.zeros((3, 2)), np.zeros((3, 4)))


def test_float32_inputs():
    m = M.SparseCategoricalAccuracy()
    m.update_state(np.array([1, 0], dtype=np.int32), np.array([[0.2, 0.8], [0.6, 0.4]], dtype=np.float32))
    b = M.BinaryAccuracy()
    b.update_state(np.array([[1.0]], dtype=np.float32), np.array([[0.5000001]], dtype=np.float32))
    assert m.result() == 1.0 and b.result() == 1.0 and isinstance(b.result(), float)


def test_sparse_categorical_accuracy_broadcasts_as_keras():
    # Keras 3.15.1's test_reshape_matches: labels (2, 1) against predictions (1, 2, 3) compare by broadcasting.
    m = M.SparseCategoricalAccuracy()
    m.update_state(np.array([[0], [0]]), np.array([[[0.9, 0.1, 0.0], [0.8, 0.15, 0.05]]], np.float32))
    assert m.result() == 1.0
    m = M.SparseCategoricalAccuracy()
    m.update_state(np.array([1, 0]), np.array([[[0.1, 0.9]], [[0.8, 0.2]]]))  # (2,) against argmax (2, 1): 0.5
    assert m.result() == 0.5
    with pytest.raises(ValueError, match="broadcast"):
        M.sparse_categorical_accuracy(np.array([1, 0, 1]), np.ones((2, 4)))
