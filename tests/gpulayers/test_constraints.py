"""Tests for gpulayers.constraints against explicit per-slice loops."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gpulayers import config
from gpulayers import constraints as C


def per_slice(w, axis, rescale):
    """Apply ``rescale(norm) -> factor`` to each slice of ``w`` over ``axis``, by explicit loops."""
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    axes = tuple(a % w.ndim for a in axes)
    kept = [a for a in range(w.ndim) if a not in axes]
    out = np.array(w, dtype=float)
    for idx in np.ndindex(*[w.shape[a] for a in kept]):
        index = [slice(None)] * w.ndim
        for a, i in zip(kept, idx):
            index[a] = i
        index = tuple(index)
        norm = math.sqrt(sum(float(v) ** 2 for v in np.ravel(w[index])))
        out[index] = w[index] * rescale(norm)
    return out


def ref_max_norm(w, max_value, axis):
    eps = config.epsilon()
    return per_slice(w, axis, lambda n: min(n, max_value) / (eps + n))


def ref_min_max_norm(w, lo, hi, rate, axis):
    eps = config.epsilon()
    return per_slice(w, axis, lambda n: (rate * min(max(n, lo), hi) + (1 - rate) * n) / (eps + n))


AXES = [0, 1, -1, [0, 1], [0, 1, 2]]


@pytest.mark.parametrize("axis", AXES)
def test_max_norm(axis):
    w = np.random.default_rng(0).normal(scale=2.0, size=(3, 4, 5))
    got = C.MaxNorm(max_value=1.5, axis=axis)(w)
    np.testing.assert_allclose(got, ref_max_norm(w, 1.5, axis), rtol=1e-13)


@pytest.mark.parametrize("axis", AXES)
def test_unit_norm(axis):
    w = np.random.default_rng(1).normal(size=(3, 4, 5))
    got = C.UnitNorm(axis=axis)(w)
    np.testing.assert_allclose(got, per_slice(w, axis, lambda n: 1 / (config.epsilon() + n)), rtol=1e-13)
    axes = tuple(axis) if isinstance(axis, list) else axis
    np.testing.assert_allclose(np.sqrt(np.sum(got**2, axis=axes)), 1.0, rtol=1e-6)


@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("rate", [1.0, 0.3])
def test_min_max_norm(axis, rate):
    w = np.random.default_rng(2).normal(size=(3, 4, 5))
    got = C.MinMaxNorm(min_value=1.0, max_value=2.0, rate=rate, axis=axis)(w)
    np.testing.assert_allclose(got, ref_min_max_norm(w, 1.0, 2.0, rate, axis), rtol=1e-13)


def test_non_neg():
    w = np.array([[-1.0, 0.0, 2.0], [3.0, -0.5, 0.1]])
    np.testing.assert_array_equal(C.NonNeg()(w), [[0, 0, 2], [3, 0, 0.1]])


def test_dense_kernel_example():
    # Columns [3, 4] (norm 5) and [0.3, 0.4] (norm 0.5) of a Dense kernel.
    w = np.array([[3.0, 0.3], [4.0, 0.4]])
    eps = config.epsilon()
    np.testing.assert_allclose(C.MaxNorm(1.0)(w), [[3 / (5 + eps), 0.3 * 0.5 / (0.5 + eps)],
                                                   [4 / (5 + eps), 0.4 * 0.5 / (0.5 + eps)]], rtol=1e-15)


def test_epsilon_comes_from_config():
    w = np.array([[1e-3], [0.0]])
    previous = config.epsilon()
    config.set_epsilon(1e-3)
    try:
        np.testing.assert_allclose(C.UnitNorm()(w), [[0.5], [0.0]])
    finally:
        config.set_epsilon(previous)


@pytest.mark.parametrize("constraint", [C.MaxNorm(), C.NonNeg(), C.UnitNorm(), C.MinMaxNorm(0.5, 1.5, 0.5)])
def test_float32_is_kept(constraint):
    w = np.random.default_rng(3).normal(size=(4, 3)).astype(np.float32)
    out = constraint(w)
    assert out.dtype == np.float32 and out.shape == w.shape
    np.testing.assert_allclose(out, constraint(w.astype(np.float64)), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- configs and lookup


@pytest.mark.parametrize("constraint,config_", [
    (C.MaxNorm(), {"max_value": 2, "axis": 0}),
    (C.MaxNorm(3.0, axis=[0, 1, 2]), {"max_value": 3.0, "axis": [0, 1, 2]}),
    (C.NonNeg(), {}),
    (C.UnitNorm(axis=1), {"axis": 1}),
    (C.MinMaxNorm(), {"min_value": 0.0, "max_value": 1.0, "rate": 1.0, "axis": 0}),
])
def test_configs_match_keras_and_round_trip(constraint, config_):
    assert constraint.get_config() == config_
    w = np.random.default_rng(4).normal(size=(2, 3, 4, 5))
    again = type(constraint).from_config(constraint.get_config())
    np.testing.assert_array_equal(again(w), constraint(w))
    data = C.serialize(constraint)
    assert data == {"module": "keras.constraints", "class_name": type(constraint).__name__,
                    "config": config_, "registered_name": None}
    np.testing.assert_array_equal(C.deserialize(data)(w), constraint(w))


@pytest.mark.parametrize("name,cls", [
    ("max_norm", C.MaxNorm), ("non_neg", C.NonNeg), ("unit_norm", C.UnitNorm), ("min_max_norm", C.MinMaxNorm),
    ("MaxNorm", C.MaxNorm), ("NonNeg", C.NonNeg), ("UnitNorm", C.UnitNorm), ("MinMaxNorm", C.MinMaxNorm),
])
def test_get_by_name(name, cls):
    assert type(C.get(name)) is cls


def test_get_other_identifiers():
    assert C.get(None) is None and C.serialize(None) is None
    c = C.MaxNorm(3)
    assert C.get(c) is c
    assert type(C.get(C.UnitNorm)) is C.UnitNorm

    def clip(w):
        return np.clip(w, -1, 1)

    assert C.get(clip) is clip
    assert type(C.get({"class_name": "NonNeg", "config": {}})) is C.NonNeg


def test_errors_name_the_argument_and_value():
    with pytest.raises(ValueError, match=r"unknown constraint 'maxnorm'.*Did you mean.*Received: kernel_constraint="
                                         r"'maxnorm'"):
        C.get("maxnorm", argument="kernel_constraint")
    with pytest.raises(TypeError, match=r"Invalid type for `bias_constraint`.*Received: bias_constraint=1"):
        C.get(1, argument="bias_constraint")
    with pytest.raises(ValueError, match="not a gpulayers built-in"):
        C.deserialize({"module": "builtins", "class_name": "MaxNorm", "config": {}})
    with pytest.raises(ValueError, match=r"`max_value`.*Received: max_value=-1"):
        C.MaxNorm(-1)
    with pytest.raises(ValueError, match=r"`axis`.*Received: axis='0'"):
        C.UnitNorm(axis="0")
    with pytest.raises(ValueError, match=r"`max_value`.*Received: max_value=0.5"):
        C.MinMaxNorm(min_value=1.0, max_value=0.5)
    with pytest.raises(ValueError, match=r"`rate`"):
        C.MinMaxNorm(rate=float("nan"))


# ----------------------------------------------------------------- properties


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 6)), elements=st.floats(-100, 100)),
       st.floats(0.01, 10))
def test_max_norm_bounds_column_norms(w, max_value):
    out = C.MaxNorm(max_value)(w)
    norms = np.sqrt(np.sum(out**2, axis=0))
    assert np.all(norms <= max_value * (1 + 1e-12))
    # Columns already inside the ball barely move (only the epsilon shrink).
    inside = np.sqrt(np.sum(w**2, axis=0)) <= max_value
    np.testing.assert_allclose(out[:, inside], w[:, inside], rtol=1e-5, atol=1e-6)
