"""Tests for gpulayers.metrics_top_k: Keras's documented values, a rank-counting loop (ties count as in),
sorted ids, rank > 2 inputs, weights, configs, the function's (de)serialization, errors, and Keras 3 itself."""

import os

import numpy as np
import pytest

from gpulayers import metrics as M
from gpulayers import metrics_top_k as T
from helpers import keras_or_skip


def keras_module():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    return keras_or_skip()


def ref_in_top_k(label, row, k):
    """1.0 when fewer than k scores are strictly above the label's (ties with the k-th count as in)."""
    if not 0 <= label < len(row) or np.isnan(row[label]):
        return 0.0
    return float(sum(v > row[label] for v in row) < k)


def weighted_mean(values, weights=None):
    values = np.asarray(values, float)
    weights = np.ones_like(values) if weights is None else np.asarray(weights, float)
    return float((values * weights).sum() / weights.sum())


def test_keras_documented_values():
    y_one_hot, y_ids = np.array([[0, 0, 1], [0, 1, 0]]), np.array([2, 1])
    p = np.array([[0.1, 0.9, 0.8], [0.05, 0.95, 0]])
    for metric, y in ((T.TopKCategoricalAccuracy(k=1), y_one_hot), (T.SparseTopKCategoricalAccuracy(k=1), y_ids)):
        metric.update_state(y, p)
        assert metric.result() == 0.5
        metric.reset_state()
        metric.update_state(y, p, sample_weight=np.array([0.7, 0.3]))
        assert metric.result() == pytest.approx(0.3)
    m = T.SparseTopKCategoricalAccuracy(k=1, from_sorted_ids=True)
    m.update_state(y_ids, np.array([[1, 0, 3], [1, 2, 3]]))
    assert m.result() == 0.5


@pytest.mark.parametrize("k", [1, 2, 4])
def test_against_a_rank_counting_loop(k):
    rng = np.random.default_rng(k)
    top, sparse = T.TopKCategoricalAccuracy(k=k), T.SparseTopKCategoricalAccuracy(k=k)
    values, weights = [], []
    for n in (6, 9):
        labels = rng.integers(0, 5, n)
        scores = rng.integers(0, 4, (n, 5)) / 4  # many ties
        w = rng.uniform(0, 2, n)
        top.update_state(np.eye(5)[labels], scores, w)
        sparse.update_state(labels, scores, w)
        values += [ref_in_top_k(t, row, k) for t, row in zip(labels, scores)]
        weights += list(w)
    assert top.result() == pytest.approx(weighted_mean(values, weights), rel=1e-12)
    assert sparse.result() == pytest.approx(weighted_mean(values, weights), rel=1e-12)


def test_functions_shapes_nan_and_sorted_ids():
    scores = np.array([[0.5, 0.5, 0.1], [np.nan, 0.2, 0.3], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1]])
    labels = np.array([1, 0, 2, 5])  # a tie counts as in; a NaN score or an id out of range never does
    np.testing.assert_array_equal(T.sparse_top_k_categorical_accuracy(labels, scores, k=1), [1, 0, 1, 0])
    np.testing.assert_array_equal(T.sparse_top_k_categorical_accuracy(labels[:, None], scores, k=1), [[1], [0], [1], [0]])
    np.testing.assert_array_equal(T.sparse_top_k_categorical_accuracy(labels.astype(float) + 0.7, scores, k=1),
                                  [1, 0, 1, 0])  # float labels truncate, as Keras's int32 cast
    # rank 3: predictions flattened to (-1, classes), the matches take the labels' shape
    rng = np.random.default_rng(1)
    p3 = rng.uniform(size=(2, 3, 4))
    y3 = rng.integers(0, 4, (2, 3))
    got = T.sparse_top_k_categorical_accuracy(y3, p3, k=2)
    assert got.shape == (2, 3)
    np.testing.assert_array_equal(got, [[ref_in_top_k(y3[i, j], p3[i, j], 2) for j in range(3)] for i in range(2)])
    got = T.top_k_categorical_accuracy(np.eye(4)[y3], p3, k=2)
    np.testing.assert_array_equal(got, [[ref_in_top_k(y3[i, j], p3[i, j], 2) for j in range(3)] for i in range(2)])
    ids = np.array([[3, 1, 1], [0, 2, 4]])
    np.testing.assert_array_equal(T.sparse_top_k_categorical_accuracy([1, 4], ids, k=2, from_sorted_ids=True), [1, 0])
    m = T.SparseTopKCategoricalAccuracy(k=3, from_sorted_ids=True)
    m.update_state(np.array([[1], [4]]), ids)
    assert m.result() == 1.0  # the duplicate id 1 counts once


def test_configs_lookup_and_serialized_functions():
    assert T.TopKCategoricalAccuracy().get_config() == {"name": "top_k_categorical_accuracy", "dtype": "float32", "k": 5}
    assert T.SparseTopKCategoricalAccuracy(k=2, name="s").get_config() == {"name": "s", "dtype": "float32", "k": 2}
    sorted_cfg = T.SparseTopKCategoricalAccuracy(from_sorted_ids=True).get_config()
    assert sorted_cfg == {"name": "sparse_top_k_categorical_accuracy", "dtype": "float32", "k": 5,
                          "from_sorted_ids": True}
    for metric in (T.TopKCategoricalAccuracy(k=3), T.SparseTopKCategoricalAccuracy(k=2, from_sorted_ids=True)):
        again = M.deserialize(M.serialize(metric))
        assert type(again) is type(metric) and again.get_config() == metric.get_config()
    assert type(M.get("top_k_categorical_accuracy")) is T.TopKCategoricalAccuracy
    assert type(M.get("SparseTopKCategoricalAccuracy")) is T.SparseTopKCategoricalAccuracy
    wrapped = M.MeanMetricWrapper(T.sparse_top_k_categorical_accuracy, name="w", k=1)
    data = M.serialize(wrapped)
    assert data["config"]["fn"]["config"] == "sparse_top_k_categorical_accuracy"
    assert data["config"]["fn"]["module"] == "keras.metrics" and data["config"]["k"] == 1
    again = M.deserialize(data)
    again.update_state(np.array([2, 1]), np.array([[0.1, 0.9, 0.8], [0.05, 0.95, 0]]))
    assert again.result() == 0.5


def test_errors():
    with pytest.raises(ValueError, match="k=0"):
        T.TopKCategoricalAccuracy(k=0)
    with pytest.raises(ValueError, match="k"):
        T.SparseTopKCategoricalAccuracy(k=1.5)
    with pytest.raises(TypeError, match="from_sorted_ids"):
        T.SparseTopKCategoricalAccuracy(from_sorted_ids="yes")
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        T.top_k_categorical_accuracy(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"\(3,\).*\(2, 4\)"):
        T.sparse_top_k_categorical_accuracy(np.zeros(3), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="class axis"):
        T.sparse_top_k_categorical_accuracy(np.zeros(3), np.zeros(3))


@pytest.mark.parametrize("name,kwargs,kind", [
    ("TopKCategoricalAccuracy", {"k": 2}, "one_hot"), ("SparseTopKCategoricalAccuracy", {"k": 3}, "ids"),
    ("SparseTopKCategoricalAccuracy", {"k": 2, "from_sorted_ids": True}, "sorted"),
    ("SparseTopKCategoricalAccuracy", {"k": 1}, "rank3"),
])
def test_matches_keras_on_random_batches(name, kwargs, kind):
    keras = keras_module()
    rng = np.random.default_rng(31)
    ours, theirs = getattr(T, name)(name="m", **kwargs), getattr(keras.metrics, name)(name="m", **kwargs)
    for _ in range(3):
        labels = rng.integers(0, 6, 10)
        scores = rng.uniform(size=(10, 6)).astype(np.float32)  # no ties: every backend's in_top_k agrees
        w = (rng.integers(0, 9, 10) / 4).astype(np.float32)
        y, p = {"one_hot": (np.eye(6)[labels], scores), "ids": (labels, scores),
                "sorted": (labels[:, None], np.argsort(-scores, axis=-1)),
                "rank3": (labels.reshape(5, 2), scores.reshape(5, 2, 6))}[kind]
        if kind == "rank3":
            w = w[:5]
        ours.update_state(y, p, w)
        theirs.update_state(y, p, sample_weight=w)
    assert ours.result() == pytest.approx(float(theirs.result()), rel=1e-6)
    assert ours.get_config() == theirs.get_config()
    assert type(keras.metrics.get(M.serialize(ours))).__name__ == name
