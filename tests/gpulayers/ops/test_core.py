"""gpulayers.ops' core family: conversion, casting, shapes, stop_gradient, slices."""

import numpy as np
import pytest

from gpulayers import autodiff, ops
from gpulayers.autodiff import Tensor
from gpulayers.variables import Variable
from helpers import check_op_gradients, to_np


def test_convert_to_tensor_and_back():
    a = np.arange(6.0).reshape(2, 3)
    t = ops.convert_to_tensor(a)
    assert isinstance(t, Tensor) and ops.is_tensor(t) and not ops.is_tensor(a)
    assert ops.convert_to_tensor(t) is t
    host = ops.convert_to_numpy(t)
    host[0, 0] = 99.0  # a copy: the tensor keeps its value
    assert float(t[0, 0]) == 0.0
    assert ops.convert_to_tensor(a, dtype="float32").dtype == np.float32
    assert ops.shape(t) == (2, 3) and ops.dtype(t) == "float64"
    stacked = ops.convert_to_tensor([t, t])  # a list of tensors is stacked
    assert stacked.shape == (2, 2, 3)
    v = Variable(np.ones(2), name="v")
    assert ops.convert_to_tensor(v) is v  # gradients still reach the variable
    with pytest.raises(ValueError, match="sparse"):
        ops.convert_to_tensor(a, sparse=True)
    with pytest.raises(ValueError, match="dtype"):
        ops.cast(a, "not-a-dtype")


def test_cast_differentiates_between_floats_only():
    x = ops.convert_to_tensor(np.array([1.5, 2.5]))
    x.watched = True
    (g,) = autodiff.gradient(ops.sum(ops.cast(x, "float32") * np.float32(3.0)), [x])
    assert g.dtype == np.float64
    np.testing.assert_allclose(g, [3.0, 3.0])
    assert ops.cast(x, "int32").node is None
    assert ops.cast(x, "float64") is x


def test_stop_gradient_slice_slice_update_unstack():
    x = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(to_np(ops.slice(x, (1, 1), (2, 2))), x[1:3, 1:3])
    check_op_gradients(lambda t: ops.slice(t, (0, 1), (2, 3)), x)
    updated = ops.slice_update(x, (1, 0), np.zeros((1, 4)))
    np.testing.assert_array_equal(to_np(updated)[1], 0.0)
    check_op_gradients(lambda t, u: ops.slice_update(t, (1, 2), u) * 2.0, x, np.ones((2, 2)))
    parts = ops.unstack(x, axis=1)
    assert len(parts) == 4 and parts[0].shape == (3,)
    with pytest.raises(ValueError, match="num"):
        ops.unstack(x, num=3, axis=1)
    t = ops.convert_to_tensor(x)
    t.watched = True
    (g,) = autodiff.gradient(ops.sum(t * ops.stop_gradient(t)), [t])
    np.testing.assert_allclose(g, x)  # d/dt (t * c) with c = t held constant
