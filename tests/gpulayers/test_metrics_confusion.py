"""Tests for gpulayers.metrics_confusion and metrics_auc: Keras's documented values, float64 loop references (counts,
a trapezoid AUC, a numerically integrated PR AUC, the best rate under a constraint), top_k and class_id,
weights, state variables, configs, lookup and compile, errors, and Keras 3 itself on random batches."""

import os
import zlib

import numpy as np
import pytest

import gpulayers
from gpulayers import metrics as M
from gpulayers import metrics_auc as A
from gpulayers import metrics_confusion as C
from helpers import keras_or_skip

EPS = 1e-7  # Keras's epsilon: AUC's end thresholds are -EPS and 1 + EPS
RNG = np.random.default_rng(2024)


def keras_module():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    return keras_or_skip()


def run(metric, y_true, y_pred, sample_weight=None):
    metric.reset_state()
    metric.update_state(np.array(y_true), np.array(y_pred),
                        sample_weight=None if sample_weight is None else np.array(sample_weight))
    return metric.result()


# ---------------------------------------------------------------------------
# float64 references, written as loops
# ---------------------------------------------------------------------------
def ref_counts(y, p, w, thresholds):
    """tp, fp, tn, fn per threshold: ``p > t`` is a positive prediction, ``y != 0`` a positive label; the
    comparison is made in float32, as Keras's (float32(0.3) is not above the threshold 0.3)."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    w = np.ones_like(p) if w is None else np.broadcast_to(np.asarray(w, float), p.shape)
    y, p, w = y.ravel(), p.ravel(), w.ravel()
    out = {c: np.zeros(len(thresholds)) for c in ("tp", "fp", "tn", "fn")}
    for k, th in enumerate(thresholds):
        for yi, pi, wi in zip(y, p, w):
            pos, true = np.float32(pi) > np.float32(th), yi != 0
            cell = ("tp" if true else "fp") if pos else ("fn" if true else "tn")
            out[cell][k] += wi
    return out


def ratio(a, b):
    return np.array([x / (x + y) if x + y else 0.0 for x, y in zip(a, b)])


def top_k_filter(p, k):
    """Each row's k largest entries kept (the lower index first among ties), the others at -1e10."""
    p = np.array(p, float)
    rows = p.reshape(-1, p.shape[-1])
    for row in rows:
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))
        for j in order[k:]:
            row[j] = -1e10
    return rows.reshape(p.shape)


def auc_thresholds(n):
    return [-EPS] + [i / (n - 1) for i in range(1, n - 1)] + [1 + EPS]


def ref_auc(y, p, w, n=200, curve="ROC", method="interpolation", thresholds=None):
    th = auc_thresholds(n) if thresholds is None else [-EPS] + sorted(thresholds) + [1 + EPS]
    c = ref_counts(y, p, w, th)
    tp, fp, tn, fn = c["tp"], c["fp"], c["tn"], c["fn"]
    if curve == "PR" and method == "interpolation":
        return ref_pr_interpolated(tp, fp, fn)
    recall = ratio(tp, fn)
    x, yv = (ratio(fp, tn), recall) if curve == "ROC" else (recall, ratio(tp, fp))
    area = 0.0
    for i in range(len(th) - 1):
        pair = (yv[i], yv[i + 1])
        height = {"interpolation": sum(pair) / 2, "minoring": min(pair), "majoring": max(pair)}[method]
        area += (x[i] - x[i + 1]) * height
    return area


def ref_pr_interpolated(tp, fp, fn, steps=4000):
    """Between neighbouring thresholds TP and TP + FP move linearly; integrate precision d(recall) by a
    midpoint rule (Davis & Goadrich), an independent check of Keras's closed form."""
    total = tp[-1] + fn[-1]
    if total <= 0:
        return 0.0
    area = 0.0
    s = (np.arange(steps) + 0.5) / steps
    for i in range(len(tp) - 1):
        dtp = tp[i] - tp[i + 1]
        dp = (tp[i] + fp[i]) - (tp[i + 1] + fp[i + 1])
        if dtp == 0 or dp <= 0:
            continue
        t_s = tp[i + 1] + s * dtp
        p_s = tp[i + 1] + fp[i + 1] + s * dp
        area += np.mean(t_s / p_s) * dtp / total
    return area


def mann_whitney_auc(y, p):
    pos, neg = p[y != 0], p[y == 0]
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def at_thresholds(n):
    return [0.5] if n == 1 else [0.0] + [i / (n - 1) for i in range(1, n - 1)] + [1.0]


def ref_best(y, p, w, n, constrained, dependent, value):
    c = ref_counts(y, p, w, at_thresholds(n))
    rates = {"recall": ratio(c["tp"], c["fn"]), "precision": ratio(c["tp"], c["fp"]),
             "specificity": ratio(c["tn"], c["fp"])}
    best = 0.0
    for k in range(len(rates[constrained])):
        if rates[constrained][k] >= value:
            best = max(best, rates[dependent][k])
    return best


def binary_batch(n=40, c=3, weighted=True, rng=RNG):
    y = rng.integers(0, 2, (n, c)).astype(np.float32)
    p = rng.uniform(0, 1, (n, c)).astype(np.float32)
    w = (rng.integers(0, 9, n) / 4).astype(np.float32) if weighted else None  # dyadic: exact in float32 too
    return y, p, w


# ---------------------------------------------------------------------------
# Keras's documented values
# ---------------------------------------------------------------------------
def test_keras_documented_values():
    assert run(C.TruePositives(), [0, 1, 1, 1], [1, 0, 1, 1]) == 2.0
    assert run(C.TruePositives(), [0, 1, 1, 1], [1, 0, 1, 1], [0, 0, 1, 0]) == 1.0
    assert run(C.FalsePositives(), [0, 1, 0, 0], [0, 0, 1, 1]) == 2.0
    assert run(C.FalsePositives(), [0, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 0]) == 1.0
    assert run(C.TrueNegatives(), [0, 1, 0, 0], [1, 1, 0, 0]) == 2.0
    assert run(C.TrueNegatives(), [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0]) == 1.0
    assert run(C.FalseNegatives(), [0, 1, 1, 1], [0, 1, 0, 0]) == 2.0
    assert run(C.FalseNegatives(), [0, 1, 1, 1], [0, 1, 0, 0], [0, 0, 1, 0]) == 1.0
    for cls in (C.Precision, C.Recall):
        assert run(cls(), [0, 1, 1, 1], [1, 0, 1, 1]) == pytest.approx(0.6666667)
        assert run(cls(), [0, 1, 1, 1], [1, 0, 1, 1], [0, 0, 1, 0]) == 1.0
    assert run(C.Precision(top_k=2), [0, 0, 1, 1], [1, 1, 1, 1]) == 0.0  # ties: the lower indices are kept
    assert run(C.Precision(top_k=4), [0, 0, 1, 1], [1, 1, 1, 1]) == 0.5
    y, p = [0, 0, 0, 1, 1], [0, 0.3, 0.8, 0.3, 0.8]
    assert run(C.SensitivityAtSpecificity(0.5), y, p) == 0.5
    assert run(C.SensitivityAtSpecificity(0.5), y, p, [1, 1, 2, 2, 1]) == pytest.approx(0.333333, abs=1e-6)
    assert run(C.SpecificityAtSensitivity(0.5), y, p) == pytest.approx(0.66666667)
    assert run(C.SpecificityAtSensitivity(0.5), y, p, [1, 1, 2, 2, 2]) == 0.5
    assert run(C.PrecisionAtRecall(0.5), y, p) == 0.5
    assert run(C.PrecisionAtRecall(0.5), y, p, [2, 2, 2, 1, 1]) == pytest.approx(0.33333333)
    y, p = [0, 0, 1, 1], [0, 0.5, 0.3, 0.9]
    assert run(C.RecallAtPrecision(0.8), y, p) == 0.5
    assert run(C.RecallAtPrecision(0.8), y, p, [1, 0, 0, 1]) == 1.0
    # thresholds [-1e-7, 0.5, 1 + 1e-7]: tp = [2, 1, 0], fp = [2, 0, 0]; area ((1 + 0.5) / 2) * 1 = 0.75
    assert run(A.AUC(num_thresholds=3), y, p) == 0.75
    assert run(A.AUC(num_thresholds=3), y, p, [1, 0, 0, 1]) == 1.0


def test_importable_from_metrics_and_results_are_python_floats():
    assert M.Precision is C.Precision and M.AUC is A.AUC and gpulayers.metrics.Recall is C.Recall
    m = C.Precision(thresholds=[0.2, 0.7])
    m.update_state(np.array([1, 0, 1]), np.array([0.9, 0.5, 0.3]))
    assert m.result() == [pytest.approx(2 / 3), 1.0] and all(type(v) is float for v in m.result())
    a = A.AUC()
    a.update_state(np.array([1, 0, 1]), np.array([0.9, 0.5, 0.3]))
    assert type(a.result()) is float
    on_device = M.device_result(a)  # the fit loop's value: left on the device, no host read
    assert isinstance(on_device, (np.ndarray, np.generic)) and float(on_device) == a.result()


# ---------------------------------------------------------------------------
# Counts, precision and recall against the loops
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("thresholds", [None, 0.3, [0.0, 0.3, 0.5, 0.8], [0.0, 0.5, 1.0], [0.0, 0.25, 0.5, 0.75, 1.0]])
def test_counts_precision_recall_against_loops(thresholds):
    th = [0.5] if thresholds is None else (thresholds if isinstance(thresholds, list) else [thresholds])
    metrics = {c: cls(thresholds=thresholds) for c, cls in
               (("tp", C.TruePositives), ("fp", C.FalsePositives), ("tn", C.TrueNegatives), ("fn", C.FalseNegatives))}
    prec, rec = C.Precision(thresholds=thresholds), C.Recall(thresholds=thresholds)
    ref = {c: np.zeros(len(th)) for c in metrics}
    for _ in range(3):
        y, p, w = binary_batch(12, 2)
        y[0, 0] = 0.4  # a nonzero label is true, as Keras's cast to bool
        p[1, 1] = 0.3  # on a threshold: not above it
        for m in (*metrics.values(), prec, rec):
            m.update_state(y, p, w)
        for c, v in ref_counts(y, p, w[:, None], th).items():
            ref[c] += v
    for c, m in metrics.items():
        np.testing.assert_allclose(m.result(), ref[c] if len(th) > 1 else ref[c][0], rtol=1e-12)
    np.testing.assert_allclose(prec.result(), ratio(ref["tp"], ref["fp"]) if len(th) > 1 else ratio(ref["tp"], ref["fp"])[0],
                               rtol=1e-12)
    np.testing.assert_allclose(rec.result(), ratio(ref["tp"], ref["fn"]) if len(th) > 1 else ratio(ref["tp"], ref["fn"])[0],
                               rtol=1e-12)


def test_evenly_spaced_thresholds_count_as_keras_buckets():
    # [0, 0.5, 1] is Keras's bucket path: predictions are clipped to [0, 1] first, so 1.5 is not above 1.0,
    # while the uneven [0, 0.4, 1] compares directly and 1.5 is.
    y, p = [1, 0, 1, 0, 1], [1.5, 1.2, 0.5, 0.0, -0.3]
    even, uneven = C.TruePositives(thresholds=[0.0, 0.5, 1.0]), C.TruePositives(thresholds=[0.0, 0.4, 1.0])
    assert run(even, y, p) == [2.0, 1.0, 0.0]
    assert run(uneven, y, p) == [2.0, 2.0, 1.0]
    assert run(C.FalsePositives(thresholds=[0.0, 0.5, 1.0]), y, p) == [1.0, 1.0, 0.0]
    assert run(C.FalsePositives(thresholds=[0.0, 0.4, 1.0]), y, p) == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("top_k,class_id,thresholds", [(1, None, None), (2, None, None), (2, 1, None), (None, 2, None),
                                                       (3, None, [0.1, 0.6]), (2, 0, [0.0, 0.5, 1.0])])
def test_top_k_and_class_id_against_loops(top_k, class_id, thresholds):
    prec = C.Precision(thresholds=thresholds, top_k=top_k, class_id=class_id)
    rec = C.Recall(thresholds=thresholds, top_k=top_k, class_id=class_id)
    th = prec.thresholds
    assert th == ([-1e10] if thresholds is None and top_k else ([0.5] if thresholds is None else thresholds))
    ref = {c: np.zeros(len(th)) for c in ("tp", "fp", "fn")}
    for _ in range(3):
        y, p, w = binary_batch(10, 4)
        prec.update_state(y, p, w)
        rec.update_state(y, p, w)
        q = top_k_filter(p, top_k) if top_k else p.astype(float)
        yy, ww = y, np.broadcast_to(w[:, None], y.shape)
        if class_id is not None:
            q, yy, ww = q[:, class_id], y[:, class_id], w
        for c, v in ref_counts(yy, q, ww, th).items():
            if c in ref:
                ref[c] += v
    expect_p, expect_r = ratio(ref["tp"], ref["fp"]), ratio(ref["tp"], ref["fn"])
    np.testing.assert_allclose(prec.result(), expect_p if len(th) > 1 else expect_p[0], rtol=1e-12)
    np.testing.assert_allclose(rec.result(), expect_r if len(th) > 1 else expect_r[0], rtol=1e-12)


def test_sample_weight_shapes():
    y = np.array([[1, 0], [1, 1], [0, 1]], np.float32)
    p = np.array([[0.9, 0.7], [0.2, 0.8], [0.6, 0.4]], np.float32)
    per_entry = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    ref = ref_counts(y, p, per_entry, [0.5])
    assert run(C.TruePositives(), y, p, per_entry) == ref["tp"][0] == 5.0
    assert run(C.FalseNegatives(), y, p, per_entry) == ref["fn"][0] == 9.0
    assert run(C.FalseNegatives(), y, p, [1.0, 2.0, 0.5]) == 2.0 + 0.5  # one weight per sample
    assert run(C.FalseNegatives(), y, p, [[1.0], [2.0], [0.5]]) == 2.5
    assert run(C.FalseNegatives(), y, p, 2.0) == 4.0  # a scalar weight
    assert run(C.Recall(), y[:, :1], p[:, :1], [1.0, 0.0, 7.0]) == 1.0  # (N, 1) against (N,) weights
    with pytest.raises(ValueError, match=r"sample_weight.*\(2,\)"):
        run(C.Precision(), y, p, [1.0, 2.0])


def test_reset_state_and_empty_results():
    for m in (C.Precision(), C.Recall(top_k=1), C.TruePositives(thresholds=[0.2, 0.8]), A.AUC(), A.AUC(curve="PR"),
              C.PrecisionAtRecall(0.5), C.RecallAtPrecision(0.5), C.SensitivityAtSpecificity(0.5),
              C.SpecificityAtSensitivity(0.5), A.AUC(multi_label=True)):
        assert m.result() in (0.0, [0.0, 0.0])
        y, p, w = binary_batch(8, 3)
        m.update_state(y, p, w)
        m.reset_state()
        assert all(not np.any(v.numpy()) for v in m.variables)
        assert m.result() in (0.0, [0.0, 0.0])


# ---------------------------------------------------------------------------
# The constrained rates
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("cls,constrained,dependent,value,n,class_id", [
    (C.PrecisionAtRecall, "recall", "precision", 0.6, 200, None),
    (C.RecallAtPrecision, "precision", "recall", 0.55, 200, None),
    (C.SensitivityAtSpecificity, "specificity", "recall", 0.4, 7, None),
    (C.SpecificityAtSensitivity, "recall", "specificity", 0.7, 1, None),
    (C.SpecificityAtSensitivity, "recall", "specificity", 0.5, 33, 1),
])
def test_constrained_rates_against_loops(cls, constrained, dependent, value, n, class_id):
    m = cls(value, num_thresholds=n, class_id=class_id)
    ys, ps, ws = [], [], []
    for _ in range(3):
        y, p, w = binary_batch(30, 3)
        m.update_state(y, p, w)
        ys.append(y if class_id is None else y[:, class_id])
        ps.append(p if class_id is None else p[:, class_id])
        ws.append(np.broadcast_to(w[:, None], y.shape) if class_id is None else w)
    ref = ref_best(np.concatenate(ys), np.concatenate(ps), np.concatenate(ws), n, constrained, dependent, value)
    assert m.result() == pytest.approx(ref, rel=1e-12, abs=1e-15)
    assert m.thresholds == pytest.approx(at_thresholds(n))


# ---------------------------------------------------------------------------
# AUC
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [
    {}, {"summation_method": "minoring"}, {"summation_method": "majoring"}, {"num_thresholds": 7},
    {"curve": "PR"}, {"curve": "pr", "summation_method": "Majoring"}, {"curve": "PR", "num_thresholds": 13},
    {"thresholds": [0.9, 0.1, 0.35]}, {"thresholds": [0.25, 0.5, 0.75], "curve": "PR"},
])
def test_auc_against_trapezoids(kwargs):
    m = A.AUC(**kwargs)
    ys, ps, ws = [], [], []
    for _ in range(3):
        y, p, w = binary_batch(25, 2)
        m.update_state(y, p, w)
        ys.append(y)
        ps.append(p)
        ws.append(np.broadcast_to(w[:, None], y.shape))
    curve = kwargs.get("curve", "ROC").upper()
    ref = ref_auc(np.concatenate(ys), np.concatenate(ps), np.concatenate(ws), n=kwargs.get("num_thresholds", 200),
                  curve=curve, method=kwargs.get("summation_method", "interpolation").lower(),
                  thresholds=kwargs.get("thresholds"))
    tol = 1e-6 if curve == "PR" and "summation_method" not in kwargs else 1e-12  # the midpoint rule's error
    assert m.result() == pytest.approx(ref, rel=tol, abs=1e-12)


def test_auc_approaches_the_rank_statistic_with_many_thresholds():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 300)
    p = np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1)
    m = A.AUC(num_thresholds=20001)
    m.update_state(y, p)
    assert m.result() == pytest.approx(mann_whitney_auc(y, p), abs=2e-4)


def test_auc_end_points_from_logits_and_label_weights():
    # 0 and 1 sit inside the end thresholds -eps and 1 + eps: a perfect ranking gives 1.0
    assert run(A.AUC(num_thresholds=5), [0, 0, 1, 1], [0.0, 0.1, 0.9, 1.0]) == 1.0
    logits = np.array([-3.0, 0.2, -0.4, 2.5], np.float32)
    expect = run(A.AUC(num_thresholds=11), [0, 0, 1, 1], 1 / (1 + np.exp(-logits)))
    assert run(A.AUC(num_thresholds=11, from_logits=True), [0, 0, 1, 1], logits) == pytest.approx(expect, abs=1e-12)
    # label_weights without multi_label weight each column's entries in the flattened counts
    y, p, _ = binary_batch(20, 3)
    lw = [0.25, 1.0, 2.0]
    got = run(A.AUC(label_weights=lw), y, p)
    assert got == pytest.approx(ref_auc(y, p, np.broadcast_to(np.array(lw), y.shape)), rel=1e-12)


def test_auc_multi_label_against_per_label_trapezoids():
    lw = [0.5, 2.0, 1.0]
    plain, weighted = A.AUC(multi_label=True), A.AUC(multi_label=True, num_labels=3, label_weights=lw, curve="PR",
                                                      summation_method="minoring")
    assert plain.variables == [] and [tuple(v.shape) for v in weighted.variables] == [(200, 3)] * 4
    batches = [binary_batch(20, 3) for _ in range(3)]
    for y, p, w in batches:
        plain.update_state(y, p, w)
        weighted.update_state(y, p, w)
    assert [tuple(v.shape) for v in plain.variables] == [(200, 3)] * 4
    y = np.concatenate([b[0] for b in batches])
    p = np.concatenate([b[1] for b in batches])
    w = np.concatenate([b[2] for b in batches])
    per_roc = [ref_auc(y[:, j], p[:, j], w) for j in range(3)]
    per_pr = [ref_auc(y[:, j], p[:, j], w, curve="PR", method="minoring") for j in range(3)]
    assert plain.result() == pytest.approx(np.mean(per_roc), rel=1e-12)
    assert weighted.result() == pytest.approx(np.dot(per_pr, lw) / sum(lw), rel=1e-12)


def test_auc_thresholds_and_config():
    m = A.AUC(thresholds=[0.7, 0.2], name="a")
    assert m.num_thresholds == 4 and m.thresholds == [-EPS, 0.2, 0.7, 1 + EPS]
    assert m.get_config() == {"name": "a", "dtype": "float32", "num_thresholds": 4, "curve": "ROC",
                              "summation_method": "interpolation", "multi_label": False, "num_labels": None,
                              "label_weights": None, "from_logits": False, "thresholds": [0.2, 0.7]}
    again = A.AUC.from_config(m.get_config())
    assert again.thresholds == m.thresholds and again.get_config() == m.get_config()
    # Keras's config holds label_weights as a serialized tensor; it is read as the list it holds
    tensor = {"class_name": "__tensor__", "config": {"value": [0.5, 0.5], "dtype": "float32"}}
    lw = A.AUC.from_config({"name": "b", "multi_label": True, "label_weights": tensor})
    assert lw.label_weights == [0.5, 0.5] and lw.get_config()["label_weights"] == [0.5, 0.5]


# ---------------------------------------------------------------------------
# State variables, configs, lookup and compile
# ---------------------------------------------------------------------------
FOUR = ["true_positives", "false_positives", "true_negatives", "false_negatives"]
STATE = [
    (C.Precision(thresholds=[0.2, 0.5, 0.9], name="p"), ["true_positives", "false_positives"], (3,)),
    (C.Recall(top_k=2, name="r"), ["true_positives", "false_negatives"], (1,)),
    (C.TruePositives(name="tp"), ["accumulator"], (1,)),
    (C.FalseNegatives(thresholds=[0.1, 0.9], name="fn"), ["accumulator"], (2,)),
    (A.AUC(name="auc"), FOUR, (200,)),
    (A.AUC(num_thresholds=9, multi_label=True, num_labels=2, name="ml"), FOUR, (9, 2)),
    (C.PrecisionAtRecall(0.5, num_thresholds=11, name="par"), FOUR, (11,)),
    (C.SensitivityAtSpecificity(0.5, num_thresholds=1, name="sas"), FOUR, (1,)),
]


@pytest.mark.parametrize("metric,names,shape", STATE, ids=[s[0].name for s in STATE])
def test_state_variables_are_keras(metric, names, shape):
    assert [v.name for v in metric.variables] == names
    assert [v.path for v in metric.variables] == [f"{metric.name}/{n}" for n in names]
    assert all(tuple(v.shape) == shape and not v.trainable for v in metric.variables)


CONFIGS = [
    (C.Precision(thresholds=[0.2, 0.6], top_k=2, class_id=1, name="p"),
     {"name": "p", "dtype": "float32", "thresholds": [0.2, 0.6], "top_k": 2, "class_id": 1}),
    (C.Recall(name="r"), {"name": "r", "dtype": "float32", "thresholds": None, "top_k": None, "class_id": None}),
    (C.TrueNegatives(thresholds=0.3, name="tn"), {"name": "tn", "dtype": "float32", "thresholds": 0.3}),
    (C.SpecificityAtSensitivity(0.4, num_thresholds=50, class_id=2, name="s"),
     {"name": "s", "dtype": "float32", "class_id": 2, "num_thresholds": 50, "sensitivity": 0.4}),
    (C.RecallAtPrecision(0.8, name="rp"),
     {"name": "rp", "dtype": "float32", "class_id": None, "num_thresholds": 200, "precision": 0.8}),
    (A.AUC(curve="PR", summation_method="majoring", multi_label=True, num_labels=2, label_weights=[1, 3],
           from_logits=True, name="a"),
     {"name": "a", "dtype": "float32", "num_thresholds": 200, "curve": "PR", "summation_method": "majoring",
      "multi_label": True, "num_labels": 2, "label_weights": [1.0, 3.0], "from_logits": True}),
]


@pytest.mark.parametrize("metric,expected", CONFIGS, ids=[c[0].name for c in CONFIGS])
def test_configs_are_keras_and_round_trip(metric, expected):
    assert metric.get_config() == expected
    data = M.serialize(metric)
    assert data == {"module": "keras.metrics", "class_name": type(metric).__name__, "config": expected,
                    "registered_name": None}
    again = M.deserialize(data)
    assert type(again) is type(metric) and again.get_config() == expected


def test_lookup_by_name_and_compile():
    assert type(M.get("auc")) is A.AUC and M.get("AUC").name == "AUC"
    for name, cls in (("precision", C.Precision), ("true_positives", C.TruePositives), ("TrueNegatives", C.TrueNegatives),
                      ("false_negatives", C.FalseNegatives), ("FalsePositives", C.FalsePositives)):
        assert type(M.get(name)) is cls and M.get(name).name == name
    for name in ("PrecisionAtRecall", "recall_at_precision", "sensitivity_at_specificity", "SpecificityAtSensitivity"):
        with pytest.raises(ValueError, match="needs arguments"):
            M.get(name)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(32, 3)).astype(np.float32)
    y = (x[:, :1] > 0).astype(np.float32)
    model = gpulayers.Sequential([gpulayers.Input((3,)), gpulayers.layers.Dense(1, activation="sigmoid")])
    model.compile("sgd", "binary_crossentropy",
                  metrics=["AUC", C.Precision(thresholds=[0.3, 0.7], name="precision"), C.PrecisionAtRecall(0.5, name="par"),
                           "true_positives"])
    history = model.fit(x, y, epochs=1, batch_size=8, verbose=0).history
    assert set(history) == {"loss", "AUC", "precision", "par", "true_positives"}
    assert len(history["precision"][0]) == 2 and 0.0 <= history["AUC"][0] <= 1.0
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    auc = A.AUC()
    auc.update_state(y, model.predict(x, verbose=0))
    assert logs["AUC"] == pytest.approx(auc.result(), abs=1e-12)


# ---------------------------------------------------------------------------
# Argument errors
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("build,match", [
    (lambda: C.Precision(thresholds=1.5), "thresholds"),
    (lambda: C.Recall(thresholds=[0.2, "x"]), "thresholds"),
    (lambda: C.TruePositives(thresholds=[]), "thresholds"),
    (lambda: C.Precision(top_k=0), "top_k=0"),
    (lambda: C.Recall(top_k=1.5), "top_k"),
    (lambda: C.Precision(class_id=-1), "class_id=-1"),
    (lambda: A.AUC(num_thresholds=1), "num_thresholds=1"),
    (lambda: A.AUC(curve="ROCK"), "curve='ROCK'"),
    (lambda: A.AUC(curve="Pr"), "curve"),
    (lambda: A.AUC(summation_method="trapezoid"), "summation_method='trapezoid'"),
    (lambda: A.AUC(num_labels=3), "num_labels"),
    (lambda: A.AUC(thresholds=[0.5, 1.2]), "thresholds"),
    (lambda: A.AUC(label_weights=[1.0, -1.0]), "label_weights"),
    (lambda: A.AUC(multi_label=True, num_labels=2, label_weights=[1.0, 2.0, 3.0]), "label_weights"),
    (lambda: C.SensitivityAtSpecificity(1.5), "specificity=1.5"),
    (lambda: C.PrecisionAtRecall(0.5, num_thresholds=0), "num_thresholds=0"),
    (lambda: C.RecallAtPrecision(-0.1), "precision=-0.1"),
])
def test_argument_errors(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_update_errors_leave_the_state_alone():
    m = C.Precision(class_id=3)
    with pytest.raises(ValueError, match="class_id"):
        m.update_state(np.ones((2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        C.Recall().update_state(np.ones(3), np.ones(2))
    with pytest.raises(ValueError, match="top_k"):
        C.Precision(top_k=4).update_state(np.ones((2, 3)), np.ones((2, 3)))
    a = A.AUC(multi_label=True)
    with pytest.raises(ValueError, match="rank 2"):
        a.update_state(np.ones((2, 3, 1)), np.ones((2, 3, 1)))
    a.update_state(np.ones((2, 3)), np.ones((2, 3)))
    before = [v.numpy().copy() for v in a.variables]
    with pytest.raises(ValueError, match="num_labels"):
        a.update_state(np.ones((2, 4)), np.ones((2, 4)))
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, a.variables))
    assert m.result() == 0.0


# ---------------------------------------------------------------------------
# Keras 3 itself
# ---------------------------------------------------------------------------
PARITY = [
    ("Precision", {}), ("Recall", {"thresholds": [0.0, 0.3, 0.5, 0.8]}), ("Precision", {"thresholds": [0.0, 0.5, 1.0]}),
    ("Precision", {"top_k": 2}), ("Recall", {"top_k": 2, "class_id": 1}), ("Precision", {"class_id": 2}),
    ("Recall", {"top_k": 3, "thresholds": [0.1, 0.6]}),
    ("TruePositives", {}), ("FalsePositives", {"thresholds": [0.0, 0.5, 1.0]}), ("TrueNegatives", {"thresholds": [0.2, 0.7]}),
    ("FalseNegatives", {"thresholds": [0.0, 0.25, 0.5, 0.75, 1.0]}),
    ("PrecisionAtRecall", {"recall": 0.6}), ("RecallAtPrecision", {"precision": 0.55, "num_thresholds": 9}),
    ("SensitivityAtSpecificity", {"specificity": 0.5, "class_id": 1}),
    ("SpecificityAtSensitivity", {"sensitivity": 0.7, "num_thresholds": 1}),
    ("AUC", {}), ("AUC", {"curve": "PR"}), ("AUC", {"curve": "PR", "summation_method": "minoring"}),
    ("AUC", {"summation_method": "majoring", "num_thresholds": 17}), ("AUC", {"curve": "PRGAIN"}),
    ("AUC", {"thresholds": [0.1, 0.35, 0.9]}), ("AUC", {"thresholds": [0.25, 0.5, 0.75], "curve": "PR"}),
    ("AUC", {"from_logits": True}), ("AUC", {"multi_label": True}),
    ("AUC", {"multi_label": True, "num_labels": 3, "curve": "PR"}),
    ("AUC", {"multi_label": True, "label_weights": [0.25, 0.5, 1.0]}), ("AUC", {"label_weights": [0.25, 0.5, 1.0]}),
]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras's own variable reads under NumPy 2
@pytest.mark.parametrize("name,kwargs", PARITY, ids=[f"{n}-{sorted(k.items())}" for n, k in PARITY])
def test_matches_keras_on_random_batches(name, kwargs):
    keras = keras_module()
    rng = np.random.default_rng(zlib.crc32(f"{name}{sorted(kwargs.items())}".encode()))  # fixed per case
    ours, theirs = getattr(M, name)(name="m", **kwargs), getattr(keras.metrics, name)(name="m", **kwargs)
    assert [(v.name, tuple(v.shape)) for v in ours.variables] == [(v.name, tuple(v.shape)) for v in theirs.variables]
    for _ in range(3):
        y, p, w = binary_batch(24, 3, rng=rng)
        if kwargs.get("from_logits"):
            p = (p - 0.5) * 8
        ours.update_state(y, p, w)
        theirs.update_state(y, p, sample_weight=w)
    assert [(v.name, tuple(v.shape)) for v in ours.variables] == [(v.name, tuple(v.shape)) for v in theirs.variables]
    np.testing.assert_allclose(ours.result(), np.asarray(theirs.result(), np.float64), rtol=1e-6, atol=1e-6)
    for mine, keras_var in zip(ours.variables, theirs.variables):
        np.testing.assert_allclose(mine.numpy(), np.asarray(keras_var.numpy(), np.float64), rtol=1e-6, atol=1e-5)
    expected = theirs.get_config()
    if expected.get("label_weights") is not None:
        expected["label_weights"] = [float(v) for v in np.asarray(expected["label_weights"])]
    assert ours.get_config() == expected
    assert type(keras.metrics.get(M.serialize(ours))).__name__ == name  # our dict is one Keras reads
