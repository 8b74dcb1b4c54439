"""Tests for gpulayers.regularizers: penalties, their gradients through the tape, configs, errors."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gpulayers import autodiff, ops
from gpulayers import regularizers as R
from gpulayers.autodiff import Tensor
from helpers import check_op_gradients, to_np


def grad_of(reg, x):
    """d reg(x) / dx through the tape."""
    t = ops.convert_to_tensor(x)
    t.watched = True
    (g,) = autodiff.gradient(reg(t), [t])
    return np.zeros(np.shape(x), dtype=np.asarray(x).dtype) if g is None else to_np(g)


def ref_penalty(x, l1=0.0, l2=0.0):
    """Plain loop: l1 * sum|v| + l2 * sum v^2."""
    total = 0.0
    for v in np.asarray(x, dtype=float).ravel():
        total += l1 * abs(v) + l2 * v * v
    return total


def away_from_zero(shape, seed):
    """Values with |v| in [0.1, 2]: L1's kink at 0 stays out of the difference stencil."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.1, 2.0, shape) * rng.choice([-1.0, 1.0], shape)


REGS = [
    (R.L1(0.3), {"l1": 0.3}),
    (R.L2(0.7), {"l2": 0.7}),
    (R.L1L2(l1=0.2, l2=0.5), {"l1": 0.2, "l2": 0.5}),
    (R.L1L2(l2=0.5), {"l2": 0.5}),
    (R.L1L2(l1=0.2), {"l1": 0.2}),
    (R.L1L2(), {}),
]
REG_IDS = [repr(r) for r, _ in REGS]


@pytest.mark.parametrize("reg,factors", REGS, ids=REG_IDS)
def test_penalty_matches_reference(reg, factors):
    x = np.random.default_rng(0).normal(size=(4, 5, 3))
    value = reg(x)
    assert isinstance(value, Tensor) and value.shape == () and value.dtype == np.float64
    assert math.isclose(float(value), ref_penalty(x, **factors), rel_tol=1e-13, abs_tol=1e-15)


@pytest.mark.parametrize("reg,factors", REGS, ids=REG_IDS)
def test_gradient_matches_finite_differences(reg, factors):
    x = away_from_zero((3, 4), seed=1)
    check_op_gradients(reg, x, rtol=1e-6, atol=1e-9)


def test_l1_gradient_is_zero_at_zero():
    np.testing.assert_array_equal(grad_of(R.L1(0.5), np.array([-2.0, 0.0, 3.0])), [-0.5, 0.0, 0.5])


@pytest.mark.parametrize("reg,factors", REGS, ids=REG_IDS)
def test_float32_is_kept(reg, factors):
    x = np.random.default_rng(2).normal(size=(6, 7)).astype(np.float32)
    value, grad = reg(x), grad_of(reg, x)
    assert value.dtype == np.float32 and value.shape == () and grad.dtype == np.float32
    assert math.isclose(float(value), ref_penalty(x, **factors), rel_tol=1e-5, abs_tol=1e-6)


def test_defaults_and_none_match_keras():
    assert R.L1().get_config() == {"l1": 0.01} == R.L1(None).get_config()
    assert R.L2().get_config() == {"l2": 0.01} == R.L2(None).get_config()
    assert R.L1L2().get_config() == {"l1": 0.0, "l2": 0.0} == R.L1L2(None, None).get_config()
    assert R.L1(np.float32(0.5)).l1 == 0.5 and R.L2(1).l2 == 1.0


@pytest.mark.parametrize("cls,argument", [(R.L1, "l1"), (R.L2, "l2"), (R.L1L2, "l1"), (R.L1L2, "l2")])
@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "0.1", True, [0.1]])
def test_bad_factors_raise_naming_the_argument(cls, argument, bad):
    with pytest.raises(ValueError, match=rf"Invalid value for `{argument}`.*Received: {argument}="):
        cls(**{argument: bad})


# ----------------------------------------------------------------- configs and lookup


@pytest.mark.parametrize("reg,factors", REGS, ids=REG_IDS)
def test_config_round_trips(reg, factors):
    config = reg.get_config()
    assert set(config) == {"L1": {"l1"}, "L2": {"l2"}, "L1L2": {"l1", "l2"}}[type(reg).__name__]
    x = away_from_zero((5,), seed=3)
    again = type(reg).from_config(config)
    assert again.get_config() == config and float(again(x)) == float(reg(x))
    data = R.serialize(reg)
    assert data == {"module": "keras.regularizers", "class_name": type(reg).__name__,
                    "config": config, "registered_name": None}
    loaded = R.deserialize(data)
    assert float(loaded(x)) == float(reg(x))
    np.testing.assert_array_equal(grad_of(loaded, x), grad_of(reg, x))


def test_get_by_name_follows_keras_3():
    assert R.get("l1").get_config() == {"l1": 0.01}
    assert R.get("l2").get_config() == {"l2": 0.01}
    assert R.get("L1").get_config() == {"l1": 0.01}
    # Keras 3's table maps "l1l2" (the snake_case of L1L2) to L1L2() with zero factors ...
    assert R.get("l1l2").get_config() == {"l1": 0.0, "l2": 0.0}
    assert type(R.get("L1L2")) is R.L1L2
    # ... and has no "l1_l2"; here it is Keras 2's l1_l2() shortcut, 0.01 each.
    both = R.get("l1_l2", argument="kernel_regularizer")
    assert type(both) is R.L1L2 and both.get_config() == {"l1": 0.01, "l2": 0.01}
    with pytest.raises(ValueError, match=r"`kernel_regularizer`.*Received: kernel_regularizer='l1-l2'"):
        R.get("l1-l2", argument="kernel_regularizer")


def test_get_other_identifiers():
    assert R.get(None) is None
    reg = R.L2(0.3)
    assert R.get(reg) is reg
    assert type(R.get(R.L1)) is R.L1
    assert type(R.get({"class_name": "L2", "config": {"l2": 0.2}})) is R.L2

    def custom(x):
        return 0.5 * np.sum(x)

    assert R.get(custom) is custom
    assert R.serialize(None) is None


def test_a_users_regularizer_needs_no_gradient_of_its_own():
    class Penalty(R.Regularizer):
        def __call__(self, x):
            return np.sum(x * x)  # NumPy on a tensor: recorded like ops.sum(ops.square(x))

    x = np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(grad_of(Penalty(), x), 2 * x)
    np.testing.assert_allclose(grad_of(lambda v: 0.5 * ops.sum(ops.abs(v)), x), 0.5 * np.sign(x))
    assert float(R.Regularizer()(np.ones(3))) == 0.0


def test_get_errors_name_the_argument_and_value():
    with pytest.raises(ValueError, match=r"unknown regularizer 'l3'.*Received: bias_regularizer='l3'"):
        R.get("l3", argument="bias_regularizer")
    with pytest.raises(TypeError, match=r"Invalid type for `kernel_regularizer`.*Received: kernel_regularizer=0.1"):
        R.get(0.1, argument="kernel_regularizer")
    with pytest.raises(ValueError, match="not a gpulayers built-in"):
        R.deserialize({"module": "subprocess", "class_name": "L1", "config": {}})
    with pytest.raises(ValueError, match="bad config for L1"):
        R.deserialize({"class_name": "L1", "config": {"l2": 0.1}})
    with pytest.raises(ValueError, match=r"`regularizer`.*l1=-1"):
        R.deserialize({"class_name": "L1", "config": {"l1": -1}})


# ----------------------------------------------------------------- properties


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.float64, hnp.array_shapes(max_dims=3, max_side=6), elements=st.floats(-1e3, 1e3)),
       st.floats(0, 10), st.floats(0, 10))
def test_l1l2_is_the_sum_of_l1_and_l2(x, l1, l2):
    total = R.L1L2(l1=l1, l2=l2)
    assert float(total(x)) >= 0
    np.testing.assert_allclose(float(total(x)), float(R.L1(l1)(x)) + float(R.L2(l2)(x)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad_of(total, x), grad_of(R.L1(l1), x) + grad_of(R.L2(l2), x), rtol=1e-12,
                               atol=1e-12)


def test_orthogonal_regularizer_rows_columns_gradient_and_config():
    rng = np.random.default_rng(3)
    value = rng.normal(size=(4, 3))
    for mode, axis in (("rows", 1), ("columns", 0)):
        unit = value / np.linalg.norm(value, axis=axis, keepdims=True)
        gram = unit @ unit.T if mode == "rows" else unit.T @ unit
        n = gram.shape[0]
        expected = 0.1 * 0.5 * np.abs(gram * (1 - np.eye(n))).sum() / (n * (n - 1) / 2)
        reg = R.OrthogonalRegularizer(factor=0.1, mode=mode)
        assert float(to_np(reg(value))) == pytest.approx(expected, rel=1e-12)
        check_op_gradients(lambda x: reg(x), value)
        assert R.deserialize(R.serialize(reg)).get_config() == {"factor": 0.1, "mode": mode}
    assert isinstance(R.get("orthogonal_regularizer"), R.OrthogonalRegularizer)
    assert isinstance(R.get("OrthogonalRegularizer"), R.OrthogonalRegularizer)
    with pytest.raises(ValueError, match="mode='diagonal'"):
        R.OrthogonalRegularizer(mode="diagonal")
    with pytest.raises(ValueError, match="factor=-1"):
        R.OrthogonalRegularizer(factor=-1)
    with pytest.raises(ValueError, match=r"rank 2.*\(4, 4, 4\)"):
        R.OrthogonalRegularizer()(np.ones((4, 4, 4)))
