"""Ops.multi_tensor_update's shared checks, and NumpyOps keeping the optimizers' own rules.

The kernels themselves run in tests/kernels (host emulator) and
tests/backends/test_cupy_kernels_gpu.py (a GPU).
"""

import numpy as np
import pytest

from backends import multi_tensor
from backends.numpy_ops import NumpyOps

SGD = dict(lr=0.1, wd=0.0, momentum=0.0, use_momentum=False, nesterov=False)


def _group(shape=(3, 2), dtype=np.float32, state=1):
    rng = np.random.default_rng(0)
    return tuple(rng.standard_normal(shape).astype(dtype) for _ in range(2 + state))


def test_numpy_ops_has_no_fused_step_and_changes_nothing():
    group = _group()
    before = [a.copy() for a in group]
    assert NumpyOps().multi_tensor_update("sgd", [group], SGD, [False]) is False
    for a, b in zip(group, before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "rule, groups, constants, decay, error, text",
    [
        ("lamb", [_group()], SGD, [False], ValueError, "rule='lamb'"),
        ("sgd", [_group()], {"lr": 0.1}, [False], ValueError, "Missing constants"),
        ("sgd", [_group()], SGD, [], ValueError, "one flag per group"),
        ("sgd", [_group(state=2)], SGD, [False], ValueError, "groups[0]"),
        ("sgd", [_group(), _group(dtype=np.float64)], SGD, [False, False], TypeError, "groups[1]"),
        ("sgd", [_group(dtype=np.float16)], SGD, [False], TypeError, "float16"),
        ("sgd", [(*_group(state=0), np.zeros((2, 3), np.float32))], SGD, [False], ValueError, "groups[0][2]"),
        ("sgd", [(None, *_group(state=1)[1:])], SGD, [False], ValueError, "groups[0]`: the variable"),
        ("sgd", [(np.zeros((2, 3), np.float32).T, *_group((3, 2))[1:])], SGD, [False], ValueError, "C-contiguous"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(rule, groups, constants, decay, error, text):
    with pytest.raises(error, match=text.replace("[", r"\[").replace("]", r"\]")):
        NumpyOps().multi_tensor_update(rule, groups, constants, decay)


def test_a_strided_gradient_is_accepted():
    w, _, m = _group((3, 2))
    g = np.zeros((2, 3), np.float32).T  # the gradient alone is made contiguous by Ops
    assert NumpyOps().multi_tensor_update("sgd", [(w, g, m)], SGD, [False]) is False


def test_kernel_constants_round_to_the_variable_dtype():
    got = multi_tensor.kernel_constants("sgd", dict(SGD, lr=0.1, nesterov=True), np.float32)
    assert got == (np.float32(0.1), np.float32(0.0), np.float32(0.0), np.int32(0), np.int32(1))
    assert all(type(v) in (np.float32, np.int32) for v in got)
