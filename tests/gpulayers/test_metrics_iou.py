"""Tests for gpulayers.metrics_iou: Keras's documented values, a float64 confusion matrix built by a loop,
int32 truncation of weights, ignore_class and out-of-range ids, one-hot inputs, state, configs, errors,
and Keras 3 itself."""

import os
import warnings

import numpy as np
import pytest

from gpulayers import metrics as M
from gpulayers import metrics_iou as I
from helpers import keras_or_skip

EPS = 1e-7
Y_ONE_HOT = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0], [1, 0, 0]])
P_SCORES = np.array([[0.2, 0.3, 0.5], [0.1, 0.2, 0.7], [0.5, 0.3, 0.1], [0.1, 0.4, 0.5]])
W_DOC = [0.1, 0.2, 0.3, 0.4]


def keras_module():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    return keras_or_skip()


def ref_iou(y, p, w, num_classes, targets=None, ignore_class=None, int_weights=False):
    """The weighted confusion matrix by a loop (rows: true, columns: predicted), then the mean IoU over the
    targets that occur (``tp + fp + fn > 0``), with Keras's epsilons."""
    cm = np.zeros((num_classes, num_classes))
    y, p = np.asarray(y).ravel(), np.asarray(p).ravel()
    w = np.ones(len(y)) if w is None else np.broadcast_to(np.asarray(w, float).ravel(), y.shape)
    for t, q, wi in zip(y, p, w):
        t, q = (int(t), int(q)) if int_weights else (t, q)
        if not (0 <= t < num_classes and 0 <= q < num_classes) or t == ignore_class:
            continue
        cm[int(t), int(q)] += int(wi) if int_weights else wi
    targets = range(num_classes) if targets is None else targets
    total, valid = 0.0, 0
    for c in targets:
        union = cm[:, c].sum() + cm[c, :].sum() - cm[c, c]
        if union > 1e-9:
            total += cm[c, c] / (union + EPS)
            valid += 1
    return total / (valid + EPS), cm


def test_keras_documented_values():
    m = I.IoU(num_classes=2, target_class_ids=[0])
    m.update_state([0, 0, 1, 1], [0, 1, 0, 1])
    assert m.result() == pytest.approx(0.33333334, rel=1e-6)
    m = I.MeanIoU(num_classes=2)
    m.update_state([0, 0, 1, 1], [0, 1, 0, 1])
    assert m.result() == pytest.approx(0.33333334, rel=1e-6)
    # Keras's weighted examples hold with float counts (with its default int32 the weights truncate to 0)
    m = I.MeanIoU(num_classes=2, dtype="float32")
    m.update_state([0, 0, 1, 1], [0, 1, 0, 1], sample_weight=[0.3, 0.3, 0.3, 0.1])
    assert m.result() == pytest.approx(0.23809525, rel=1e-6)
    m = I.IoU(num_classes=2, target_class_ids=[0], dtype="float32")
    m.update_state([0, 0, 1, 1], [0, 1, 0, 1], sample_weight=[0.3, 0.3, 0.3, 0.1])
    assert m.result() == pytest.approx(0.33333334, rel=1e-6)
    m = I.BinaryIoU(target_class_ids=[0, 1], threshold=0.3)
    m.update_state([0, 1, 0, 1], [0.1, 0.2, 0.4, 0.7])
    assert m.result() == pytest.approx(0.33333334, rel=1e-6)
    m = I.BinaryIoU(target_class_ids=[0, 1], threshold=0.3, dtype="float32")
    m.update_state([0, 1, 0, 1], [0.1, 0.2, 0.4, 0.7], sample_weight=[0.2, 0.3, 0.4, 0.1])
    assert m.result() == pytest.approx(0.17361112, rel=1e-6)
    m = I.OneHotIoU(num_classes=3, target_class_ids=[0, 2], dtype="float32")
    m.update_state(Y_ONE_HOT, P_SCORES, sample_weight=W_DOC)
    assert m.result() == pytest.approx((0 / 0.9 + 0.1 / 0.7) / 2, rel=1e-6)  # 0.071
    m = I.OneHotMeanIoU(num_classes=3, dtype="float32")
    m.update_state(Y_ONE_HOT, P_SCORES, sample_weight=W_DOC)
    assert m.result() == pytest.approx((0.1 / 0.7) / 3, rel=1e-6)  # 0.048


def test_int32_counts_truncate_float_weights_with_keras_warning():
    m = I.MeanIoU(num_classes=2)
    assert m.dtype == "int32" and m.variables[0].dtype == "int32"
    with pytest.warns(UserWarning, match="weight as `float`"):
        m.update_state([0, 0, 1, 1], [0, 1, 0, 1], sample_weight=np.array([0.3, 1.7, 2.0, 1.0]))
    np.testing.assert_array_equal(m.total_cm.numpy(), [[0, 1], [2, 1]])  # weights 0, 1, 2, 1
    assert m.result() == pytest.approx((0 / 3 + 1 / 4) / 2, rel=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        I.MeanIoU(num_classes=2).update_state([0, 1], [0, 1], sample_weight=np.array([1, 2]))  # int weights: no warning


@pytest.mark.parametrize("dtype", ["int32", "float32", "float64"])
@pytest.mark.parametrize("ignore_class", [None, 2, -1])
def test_against_a_loop_over_several_batches(dtype, ignore_class):
    rng = np.random.default_rng(8)
    m = I.MeanIoU(num_classes=4, dtype=dtype, ignore_class=ignore_class)
    ys, ps, ws = [], [], []
    for n in (10, 17, 6):
        y = rng.integers(-1, 5, n)  # -1 and 4 are out of range: left out
        p = rng.integers(-1, 5, n)
        # float weights are taken in the metric's dtype, as Keras converts them
        w = rng.integers(0, 4, n) if dtype == "int32" else rng.uniform(0, 2, n).astype(dtype).astype(float)
        m.update_state(y, p, sample_weight=w)
        ys.append(y)
        ps.append(p)
        ws.append(w)
    ref, cm = ref_iou(np.concatenate(ys), np.concatenate(ps), np.concatenate(ws), 4, ignore_class=ignore_class)
    np.testing.assert_allclose(m.total_cm.numpy(), cm, rtol=1e-12)
    assert m.result() == pytest.approx(ref, rel=1e-12)


def test_float_ids_rank_2_inputs_and_argmax_axis():
    # float ids truncate (1.7 is class 1) after the range check; rank-2 inputs are flattened
    m = I.MeanIoU(num_classes=3, dtype="float32")
    y, p = np.array([[0, 1.7], [2, 2]]), np.array([[0, 1], [1, 2.9]])
    m.update_state(y, p, sample_weight=np.array([[1.0, 2.0], [3.0, 4.0]]))
    np.testing.assert_allclose(m.total_cm.numpy(), [[1, 0, 0], [0, 2, 0], [0, 3, 4]])
    # one-hot along axis 1 of a (batch, classes, positions) tensor
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, (4, 5))
    scores = rng.uniform(size=(4, 3, 5))
    m = I.OneHotMeanIoU(num_classes=3, axis=1)
    m.update_state(np.moveaxis(np.eye(3)[labels], -1, 1), scores)
    assert m.result() == pytest.approx(ref_iou(labels, scores.argmax(axis=1), None, 3)[0], rel=1e-12)
    m = I.MeanIoU(num_classes=3, sparse_y_pred=False)
    m.update_state(labels[:, 0], scores[:, :, 0])
    assert m.result() == pytest.approx(ref_iou(labels[:, 0], scores[:, :, 0].argmax(-1), None, 3)[0], rel=1e-12)
    o = I.OneHotIoU(num_classes=3, target_class_ids=[1], sparse_y_pred=True)
    o.update_state(np.eye(3)[labels[:, 0]], scores[:, :, 0].argmax(-1))
    assert o.result() == pytest.approx(ref_iou(labels[:, 0], scores[:, :, 0].argmax(-1), None, 3, [1])[0], rel=1e-12)


def test_state_reset_and_configs():
    m = I.IoU(num_classes=3, target_class_ids=(0, 2), name="iou")
    assert [(v.path, tuple(v.shape)) for v in m.variables] == [("iou/total_confusion_matrix", (3, 3))]
    assert m.result() == 0.0
    m.update_state([0, 1, 2], [0, 2, 2])
    m.reset_state()
    assert not np.any(m.total_cm.numpy()) and m.result() == 0.0
    cases = [
        (m, {"name": "iou", "dtype": "int32", "num_classes": 3, "target_class_ids": [0, 2], "ignore_class": None,
             "sparse_y_true": True, "sparse_y_pred": True, "axis": -1}),
        (I.MeanIoU(4, name="miou", ignore_class=0, dtype="float32"),
         {"num_classes": 4, "name": "miou", "dtype": "float32", "ignore_class": 0, "sparse_y_true": True,
          "sparse_y_pred": True, "axis": -1}),
        (I.BinaryIoU(name="b"), {"target_class_ids": [0, 1], "threshold": 0.5, "name": "b", "dtype": "int32"}),
        (I.OneHotIoU(3, [1], name="oh"),
         {"num_classes": 3, "target_class_ids": [1], "name": "oh", "dtype": "int32", "ignore_class": None,
          "sparse_y_pred": False, "axis": -1}),
        (I.OneHotMeanIoU(3, name="ohm"),
         {"num_classes": 3, "name": "ohm", "dtype": "int32", "ignore_class": None, "sparse_y_pred": False, "axis": -1}),
    ]
    for metric, expected in cases:
        assert metric.get_config() == expected
        again = M.deserialize(M.serialize(metric))
        assert type(again) is type(metric) and again.get_config() == expected


def test_lookup_names():
    assert type(M.get("binary_io_u")) is I.BinaryIoU and type(M.get("BinaryIoU")) is I.BinaryIoU
    for name in ("MeanIoU", "mean_io_u", "IoU", "io_u", "OneHotIoU", "one_hot_mean_io_u"):
        with pytest.raises(ValueError, match="needs arguments.*num_classes"):
            M.get(name)


@pytest.mark.parametrize("build,match", [
    (lambda: I.MeanIoU(num_classes=0), "num_classes=0"),
    (lambda: I.MeanIoU(num_classes=2.0), "num_classes"),
    (lambda: I.IoU(3, target_class_ids=[3]), "target_class_ids"),
    (lambda: I.IoU(3, target_class_ids=[-1]), "target_class_ids"),
    (lambda: I.IoU(3, target_class_ids=[]), "target_class_ids"),
    (lambda: I.IoU(3, target_class_ids=[0.5]), "target_class_ids"),
    (lambda: I.MeanIoU(2, dtype="string"), "dtype"),
    (lambda: I.MeanIoU(2, ignore_class=1.5), "ignore_class"),
    (lambda: I.MeanIoU(2, sparse_y_true="no"), "sparse_y_true"),
    (lambda: I.BinaryIoU(threshold="half"), "threshold"),
])
def test_argument_errors(build, match):
    with pytest.raises((ValueError, TypeError), match=match):
        build()


def test_shape_errors_leave_the_state_alone():
    m = I.MeanIoU(num_classes=3)
    m.update_state([0, 1], [0, 1])
    before = m.total_cm.numpy().copy()
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        m.update_state([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="sample_weight"):
        m.update_state([0, 1], [0, 1], sample_weight=[1, 2, 3])
    np.testing.assert_array_equal(m.total_cm.numpy(), before)


PARITY = [
    ("MeanIoU", {"num_classes": 4}, "ids"), ("MeanIoU", {"num_classes": 4, "ignore_class": 2}, "ids"),
    ("MeanIoU", {"num_classes": 4, "dtype": "float32"}, "ids"), ("IoU", {"num_classes": 4, "target_class_ids": [1, 3]}, "ids"),
    ("BinaryIoU", {"threshold": 0.3, "dtype": "float32"}, "binary"), ("BinaryIoU", {}, "binary"),
    ("OneHotIoU", {"num_classes": 3, "target_class_ids": [0, 2], "dtype": "float32"}, "one_hot"),
    ("OneHotMeanIoU", {"num_classes": 3}, "one_hot"),
]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras's own variable reads under NumPy 2
@pytest.mark.filterwarnings("ignore:You are passing weight")
@pytest.mark.filterwarnings("ignore:Explicitly requested dtype")  # JAX without x64, inside Keras
@pytest.mark.parametrize("name,kwargs,kind", PARITY)
def test_matches_keras_on_random_batches(name, kwargs, kind):
    keras = keras_module()
    rng = np.random.default_rng(23)
    ours, theirs = getattr(I, name)(name="m", **kwargs), getattr(keras.metrics, name)(name="m", **kwargs)
    for _ in range(3):
        if kind == "ids":
            y, p = rng.integers(-1, 5, 30), rng.integers(0, 5, 30)
        elif kind == "binary":
            y, p = rng.integers(0, 2, 30), rng.uniform(size=30).astype(np.float32)
        else:
            y, p = np.eye(3)[rng.integers(0, 3, 30)], rng.uniform(size=(30, 3))
        w = (rng.integers(0, 9, 30) / 4).astype(np.float32)
        ours.update_state(y, p, w)
        theirs.update_state(y, p, sample_weight=w)
    np.testing.assert_allclose(ours.total_cm.numpy(), np.asarray(theirs.total_cm.numpy(), np.float64), rtol=1e-6)
    assert ours.result() == pytest.approx(float(theirs.result()), rel=1e-6, abs=1e-7)
    assert [(v.name, tuple(v.shape)) for v in ours.variables] == [(v.name, tuple(v.shape)) for v in theirs.variables]
    if "dtype" not in kwargs:  # int32 counts, as Keras's (float counts accumulate in float64 here)
        assert ours.variables[0].dtype == theirs.variables[0].dtype == "int32"
    assert ours.get_config() == theirs.get_config()
    assert type(keras.metrics.get(M.serialize(ours))).__name__ == name
