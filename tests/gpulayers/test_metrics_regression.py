"""R2Score (Keras 3.15's) against float64 formulas, and the metrics' state variables and dtypes."""

import warnings

import numpy as np
import pytest

from gpulayers import metrics as M
from helpers import keras_or_skip

RNG = np.random.default_rng(5)


def ref_r2(t, p, w, aggregation, regressors):
    w = np.broadcast_to(w[:, None], t.shape)
    mean = (w * t).sum(0) / w.sum(0)
    total = (w * t * t).sum(0) - (w * t).sum(0) * mean
    raw = 1 - (w * (t - p) ** 2).sum(0) / total
    score = {None: raw, "uniform_average": raw.mean(),
             "variance_weighted_average": (total * raw).sum() / total.sum()}[aggregation]
    n = t.size
    return score if not regressors or regressors >= n - 1 else 1 - (1 - score) * (n - 1) / (n - regressors - 1)


@pytest.mark.parametrize("aggregation", [None, "uniform_average", "variance_weighted_average"])
@pytest.mark.parametrize("regressors", [0, 3])
def test_r2_score_against_formula(aggregation, regressors):
    m = M.R2Score(aggregation, regressors)
    ts, ps, ws = [], [], []
    for n in (5, 7):
        t, p, w = RNG.normal(size=(n, 3)), RNG.normal(size=(n, 3)), RNG.uniform(size=n)
        m.update_state(t, p, sample_weight=w)
        ts.append(t), ps.append(p), ws.append(w)
    expected = ref_r2(np.concatenate(ts), np.concatenate(ps), np.concatenate(ws), aggregation, regressors)
    np.testing.assert_allclose(m.result(), expected, rtol=1e-10)
    assert [v.name for v in m.variables] == ["num_samples", "squared_sum", "sum", "residual", "count"]
    m.reset_state()
    assert all(not np.any(v.numpy()) for v in m.variables)


def test_r2_score_arguments_config_and_warning():
    assert len(M.R2Score().variables) == 1  # num_samples at construction, the rest at the first update
    m = M.R2Score()
    m.update_state(np.array([[1.0], [4.0], [3.0]]), np.array([[2.0], [4.0], [4.0]]))
    assert m.result() == pytest.approx(0.5714285714)
    config = M.R2Score(class_aggregation=None, num_regressors=2).get_config()
    assert config == {"name": "r2_score", "dtype": "float32", "class_aggregation": None, "num_regressors": 2}
    assert M.deserialize(M.serialize(M.R2Score(None, 2))).get_config() == config
    with pytest.raises(ValueError, match="class_aggregation='wrong'"):
        M.R2Score(class_aggregation="wrong")
    with pytest.raises(ValueError, match="num_regressors=-1"):
        M.R2Score(num_regressors=-1)
    with pytest.raises(ValueError, match="2D inputs"):
        M.R2Score().update_state(np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="not None"):
        M.R2Score()._build((2, None), (2, None))
    m = M.R2Score(num_regressors=5)
    m.update_state(np.array([[1.0], [2.0], [4.0]]), np.array([[1.5], [2.0], [3.0]]))
    with pytest.warns(UserWarning, match="Falling back"):
        m.result()


def test_state_variables_exist_at_construction_in_keras_order():
    assert [v.path for v in M.Mean().variables] == ["mean/total", "mean/count"]
    assert [v.name for v in M.Sum().variables] == ["total"]
    for cls in (M.Accuracy, M.BinaryAccuracy, M.MeanSquaredError, M.Hinge, M.SparseCategoricalCrossentropy):
        assert [v.name for v in cls().variables] == ["total", "count"]
    m = M.Mean()
    m.update_state(np.array([1.0, 3.0]))
    assert [float(v.numpy()) for v in m.variables] == [4.0, 2.0]
    m.update_state(np.float64(5.0), sample_weight=2)  # the scalar fast path keeps the count variable too
    assert [float(v.numpy()) for v in m.variables] == [14.0, 4.0] and m.result() == 3.5
    m.reset_state()
    assert [float(v.numpy()) for v in m.variables] == [0.0, 0.0] and m.result() == 0.0
    m.count.assign(0.5)  # a state changed from outside is read back
    m.total.assign(2.0)
    assert m.result() == 4.0


def test_integer_dtype_truncates_like_keras():
    m = M.Mean(dtype="int32")
    assert m.dtype == "int32" and [v.dtype for v in m.variables] == ["int32", "int32"]
    m.update_state(np.array([1.5, 2.7, 3.9]))
    assert [int(v.numpy()) for v in m.variables] == [6, 3] and m.result() == 2.0
    mse = M.MeanSquaredError(dtype="int32")
    mse.update_state(np.array([[0.0, 1.0], [1.0, 1.0]]), np.array([[0.6, 0.3], [0.2, 0.9]]))
    assert mse.result() == 0.0 and int(mse.count.numpy()) == 2  # per-sample 0.425, 0.325 truncate to 0
    assert M.Hinge.from_config(M.Hinge(dtype="int32").get_config()).dtype == "int32"
    assert M.Mean(dtype="mixed_float16").dtype == "float16"


def test_tracked_variables_submetrics_and_stateless_forms():
    from gpulayers.variables import Variable

    m = M.Mean()
    m.more = {"a": [Variable(np.zeros(()), name="a")]}
    m.sub = M.Sum()
    m.sub.inner = M.Sum()
    assert [v.path for v in m.variables][:2] == ["mean/total", "mean/count"] and len(m.variables) == 5
    m = M.Mean()
    state = m.stateless_update_state(m.variables, np.array([2.0, 4.0]))
    assert [float(s) for s in state] == [6.0, 2.0] and m.result() == 0.0  # the metric's own state unchanged
    assert m.stateless_result([np.array(12.0), np.array(3.0)]) == 4.0
    m.update_state(np.array([1.0]))
    assert [float(s) for s in m.stateless_reset_state()] == [0.0, 0.0] and m.result() == 1.0
    with pytest.raises(ValueError, match="metric_variables"):
        m.stateless_result([np.array(1.0)])


def test_against_keras():
    keras = keras_or_skip()
    t, p, w = RNG.normal(size=(6, 2)), RNG.normal(size=(6, 2)), RNG.uniform(size=6)
    for aggregation in (None, "uniform_average", "variance_weighted_average"):
        ours, theirs = M.R2Score(aggregation, 1), keras.metrics.R2Score(aggregation, 1)
        ours.update_state(t, p, sample_weight=w)
        theirs.update_state(t, p, sample_weight=w)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            np.testing.assert_allclose(ours.result(), np.asarray(theirs.result()), rtol=1e-5, atol=1e-6)
    ours, theirs = M.Mean(dtype="int32"), keras.metrics.Mean(dtype="int32")
    ours.update_state(np.array([1.5, 2.7, 3.9]), sample_weight=np.array([1.0, 2.0, 1.0]))
    theirs.update_state(np.array([1.5, 2.7, 3.9]), sample_weight=np.array([1.0, 2.0, 1.0]))
    assert ours.result() == pytest.approx(float(theirs.result()))
    assert [v.name for v in ours.variables] == [v.name for v in theirs.variables]
