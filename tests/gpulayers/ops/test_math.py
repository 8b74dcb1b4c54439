"""Tests for gpulayers.ops.math: values against float64 references, gradients against finite differences."""

import math

import numpy as np
import pytest
from helpers import check_op_gradients, grad_of

from gpulayers import autodiff, ops
from gpulayers.autodiff import Tensor
from gpulayers.ops import math as M



# ----------------------------------------------------------------- erf, rsqrt


def test_erf_values_and_gradient():
    x = np.linspace(-5, 5, 41)
    np.testing.assert_allclose(M.erf(x), [math.erf(v) for v in x], rtol=1e-14, atol=1e-16)
    check_op_gradients(M.erf, x.reshape(1, 41))
    _, (g,) = grad_of(M.erf, x)
    np.testing.assert_allclose(g, 2 / math.sqrt(math.pi) * np.exp(-x * x), rtol=1e-14)


def test_erf_keras_example_and_dtypes():
    x = np.array([-3.0, -2.0, -1.0, 0.0, 1.0], dtype=np.float32)
    y = M.erf(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [-0.99998, -0.99532, -0.842701, 0.0, 0.842701], atol=1e-5)
    assert M.erf([0, 1]).dtype == np.float32  # ints compute in floatx
    assert M.erf(np.array([0.5], dtype=np.float16)).dtype == np.float16
    assert M.erf is ops.erf


def test_rsqrt():
    x = np.array([1.0, 10.0, 100.0], dtype=np.float32)
    y = M.rsqrt(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [1.0, 0.31622776, 0.1], rtol=1e-6)
    check_op_gradients(M.rsqrt, np.random.default_rng(0).uniform(0.5, 3, (3, 4)))


# ----------------------------------------------------------------- logsumexp


@pytest.mark.parametrize("axis,keepdims", [(None, False), (0, False), (1, True), ((0, 2), False), (-1, True)])
def test_logsumexp_matches_float64_reference(axis, keepdims):
    x = np.random.default_rng(1).normal(scale=3, size=(2, 3, 4))
    ref = np.log(np.sum(np.exp(x), axis=axis, keepdims=keepdims))
    got = M.logsumexp(x, axis=axis, keepdims=keepdims)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-13)
    check_op_gradients(lambda t: M.logsumexp(t, axis=axis, keepdims=keepdims), x)


def test_logsumexp_gradient_is_softmax_and_large_values_are_stable():
    x = np.array([[1000.0, 1000.0, 990.0], [-1000.0, -1000.0, -1010.0]])
    y, (g,) = grad_of(lambda t: M.logsumexp(t, axis=1), x)
    np.testing.assert_allclose(y, [1000 + math.log(2 + math.exp(-10)), -1000 + math.log(2 + math.exp(-10))])
    e = np.exp(x - x.max(axis=1, keepdims=True))
    np.testing.assert_allclose(g, e / e.sum(axis=1, keepdims=True), rtol=1e-14)
    assert M.logsumexp(np.array([1.0, 2.0, 3.0])).numpy() == pytest.approx(3.40760596444438)


def test_logsumexp_of_minus_infinity_and_empty():
    y, (g,) = grad_of(lambda t: M.logsumexp(t, axis=1), np.array([[-np.inf, -np.inf], [0.0, -np.inf]]))
    np.testing.assert_array_equal(y, [-np.inf, 0.0])
    np.testing.assert_array_equal(g, [[0, 0], [1, 0]])
    assert M.logsumexp(np.zeros((0, 3)), axis=0).numpy().tolist() == [-np.inf] * 3
    assert M.logsumexp([1, 2]).dtype == np.float32


# ----------------------------------------------------------------- top_k, in_top_k


def test_top_k_values_indices_and_ties():
    x = np.array([[5.0, 1.0, 5.0, 7.0, 3.0], [0.0, 2.0, 2.0, 2.0, -1.0]])
    values, indices = M.top_k(x, 3)
    np.testing.assert_array_equal(values, [[7, 5, 5], [2, 2, 2]])
    np.testing.assert_array_equal(indices, [[3, 0, 2], [1, 2, 3]])  # ties: lower index first
    assert indices.dtype == np.int32 and indices.node is None
    v, i = M.top_k(np.array([5, 2, 9, 7], dtype=np.int32), 2, sorted=False)
    assert sorted(v.tolist()) == [7, 9] and sorted(i.tolist()) == [2, 3]
    assert M.top_k(x, 0)[0].shape == (2, 0)


def test_top_k_gradient_goes_to_the_picked_entries():
    x = np.random.default_rng(2).permutation(24).reshape(2, 3, 4) * 0.5
    check_op_gradients(lambda t: M.top_k(t, 2)[0], x)
    check_op_gradients(lambda t: M.top_k(t, 3)[0] * ops.sum(t), x)
    _, (g,) = grad_of(lambda t: M.top_k(t, 1)[0], np.array([[1.0, 4.0, 2.0]]))
    np.testing.assert_array_equal(g, [[0, 1, 0]])


def test_top_k_rejects_bad_k():
    with pytest.raises(ValueError, match=r"`k`.*Received: k=4"):
        M.top_k(np.ones((2, 3)), 4)
    with pytest.raises(ValueError, match=r"`k`.*Received: k=1.5"):
        M.top_k(np.ones(3), 1.5)
    with pytest.raises(ValueError, match="rank >= 1"):
        M.top_k(np.float32(1.0), 1)


def test_in_top_k_keras_example():
    targets = np.array([2, 5, 3])
    predictions = np.array([[0.1, 0.4, 0.6, 0.9, 0.5], [0.1, 0.7, 0.9, 0.8, 0.3], [0.1, 0.6, 0.9, 0.9, 0.5]])
    out = M.in_top_k(targets, predictions, k=3)
    assert out.dtype == np.bool_
    np.testing.assert_array_equal(out, [True, False, True])  # 5 is no class; a tie with the k-th counts
    np.testing.assert_array_equal(M.in_top_k([0, 1], [[0.9, 0.1], [0.9, 0.1]], 1), [True, False])
    np.testing.assert_array_equal(M.in_top_k([0, 1], [[0.9, 0.1], [0.9, 0.1]], 0), [False, False])
    np.testing.assert_array_equal(M.in_top_k([0, 1], [[0.9, 0.1], [0.9, 0.1]], 7), [True, True])
    with pytest.raises(ValueError, match="predictions"):
        M.in_top_k([0], [0.5, 0.5], 1)
    with pytest.raises(ValueError, match="targets"):
        M.in_top_k([0, 1, 2], [[0.5, 0.5]], 1)


# ----------------------------------------------------------------- segments


def test_segment_sum_and_max_keras_examples():
    data = np.array([1, 2, 10, 20, 100, 200], dtype=np.int32)
    ids = np.array([0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(M.segment_sum(data, ids), [3, 30, 300])
    np.testing.assert_array_equal(M.segment_max(data, ids), [2, 20, 200])
    assert M.segment_sum(data, ids).dtype == np.int32


def test_segments_with_num_segments_and_dropped_ids():
    data = np.arange(12.0).reshape(6, 2)
    ids = np.array([3, -1, 0, 3, 5, 0])  # -1 and 5 (>= num_segments) are left out
    got = M.segment_sum(data, ids, num_segments=4)
    expected = np.zeros((4, 2))
    for row, i in zip(data, ids):
        if 0 <= i < 4:
            expected[i] += row
    np.testing.assert_array_equal(got, expected)
    mx = M.segment_max(data, ids, num_segments=4)
    np.testing.assert_array_equal(mx[[0, 3]], [[10, 11], [6, 7]])
    assert np.all(np.isneginf(mx.numpy()[[1, 2]]))  # empty segments
    assert M.segment_max(np.array([1, 2], dtype=np.int8), np.array([1, 1])).numpy().tolist() == [-128, 2]


def test_segment_gradients():
    rng = np.random.default_rng(3)
    data = rng.normal(size=(7, 3))
    ids = np.array([2, 0, 2, 1, -1, 0, 2])
    check_op_gradients(lambda t: M.segment_sum(t, ids, num_segments=3), data)
    check_op_gradients(lambda t: M.segment_max(t, ids, num_segments=3), data)
    check_op_gradients(lambda t: M.segment_max(t, ids) * ops.sum(t), data)
    # Tied maxima share the gradient equally.
    _, (g,) = grad_of(lambda t: M.segment_max(t, np.array([0, 0, 0])), np.array([1.0, 3.0, 3.0]))
    np.testing.assert_array_equal(g, [0, 0.5, 0.5])


def test_segment_validation():
    with pytest.raises(ValueError, match="1-D"):
        M.segment_sum(np.ones((2, 2)), np.zeros((2, 2), dtype=int))
    with pytest.raises(ValueError, match="one entry per row"):
        M.segment_sum(np.ones((3, 2)), np.array([0, 1]))
    with pytest.raises(TypeError, match="segment_ids"):
        M.segment_sum(np.ones(2), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="num_segments=-1"):
        M.segment_max(np.ones(2), np.array([0, 1]), num_segments=-1)


# ----------------------------------------------------------------- norm

VECTOR_ORDS = [None, 2, 1, np.inf, -np.inf, 0, 3, 0.5, -1.5]


@pytest.mark.parametrize("ord", VECTOR_ORDS)
@pytest.mark.parametrize("axis,keepdims", [(0, False), (-1, True), (1, False)])
def test_vector_norms_match_numpy(ord, axis, keepdims):
    x = np.random.default_rng(4).normal(size=(3, 4, 5))
    x[0, 0, 0] = 0.0
    got = M.norm(x, ord=ord, axis=axis, keepdims=keepdims)
    with np.errstate(divide="ignore"):  # NumPy's own 0 ** -1.5
        ref = np.linalg.norm(x, ord=ord, axis=axis, keepdims=keepdims)
    np.testing.assert_allclose(got, ref, rtol=1e-12)


@pytest.mark.parametrize("ord", [None, 2, 1, np.inf, -np.inf, 3, 0.5, -1.5])
def test_vector_norm_gradients(ord):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 6))
    check_op_gradients(lambda t: M.norm(t, ord=ord, axis=1), x, rtol=1e-5, atol=1e-8)
    check_op_gradients(lambda t: M.norm(t, ord=ord, axis=0, keepdims=True) * t, x, rtol=1e-5, atol=1e-8)


def test_zero_vector_norm_has_zero_gradient_and_zero_norm_has_none():
    for ord in (None, 2, 1, np.inf, 3):
        y, (g,) = grad_of(lambda t: M.norm(t, ord=ord), np.zeros(4))
        assert float(y) == 0.0
        np.testing.assert_array_equal(g, np.zeros(4))
    count = M.norm(np.array([0.0, 2.0, -1.0]), ord=0)
    assert float(count) == 2.0 and count.node is None


@pytest.mark.parametrize("ord", [None, "fro", "nuc", 1, -1, np.inf, -np.inf, 2, -2])
@pytest.mark.parametrize("axis", [(0, 1), (1, 0), (2, 0), (-1, -2)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_matrix_norms_match_numpy(ord, axis, keepdims):
    x = np.random.default_rng(6).normal(size=(3, 4, 5))
    got = M.norm(x, ord=ord, axis=axis, keepdims=keepdims)
    np.testing.assert_allclose(got, np.linalg.norm(x, ord=ord, axis=axis, keepdims=keepdims), rtol=1e-12)


@pytest.mark.parametrize("ord", [None, "fro", "nuc", 1, -1, np.inf, -np.inf, 2, -2])
def test_matrix_norm_gradients(ord):
    x = np.random.default_rng(7).normal(size=(2, 3, 4))
    check_op_gradients(lambda t: M.norm(t, ord=ord, axis=(1, 2)), x, rtol=1e-5, atol=1e-8)
    check_op_gradients(lambda t: M.norm(t, ord=ord, axis=(2, 0), keepdims=True), x, rtol=1e-5, atol=1e-8)


def test_axis_none_on_matrices_and_defaults():
    x = np.random.default_rng(8).normal(size=(3, 4))
    np.testing.assert_allclose(M.norm(x), np.linalg.norm(x), rtol=1e-14)
    np.testing.assert_allclose(M.norm(x, ord=1), np.linalg.norm(x, ord=1), rtol=1e-14)  # a matrix norm
    np.testing.assert_allclose(M.norm(x, keepdims=True), np.linalg.norm(x, keepdims=True), rtol=1e-14)
    x3 = np.ones((2, 2, 2))
    np.testing.assert_allclose(M.norm(x3), math.sqrt(8))
    assert M.norm(np.array([[1, 2], [3, 4]])).dtype == np.float32
    assert float(ops.norm(np.array([3.0, 4.0]))) == 5.0


def test_svd_norms_refuse_a_gradient_where_there_is_none():
    eye = np.eye(3)
    y, (g,) = grad_of(lambda t: M.norm(t, ord="fro"), eye)  # fine: Frobenius
    np.testing.assert_allclose(g, eye / math.sqrt(3))
    for ord, x, what in ((2, eye, "repeated"), (-2, eye, "repeated"), ("nuc", np.diag([1.0, 2.0, 0.0]), "rank-deficient")):
        t = ops.convert_to_tensor(x)
        with autodiff.GradientTape() as tape:
            tape.watch(t)
            total = M.norm(t, ord=ord)
        np.testing.assert_allclose(total, np.linalg.norm(x, ord=ord))
        with pytest.raises(ValueError, match=what):
            tape.gradient(total, t)


def test_norm_argument_errors():
    with pytest.raises(ValueError, match=r"Received: ord='max'"):
        M.norm(np.ones(3), ord="max")
    with pytest.raises(ValueError, match="vector norm"):
        M.norm(np.ones(3), ord="fro", axis=0)
    with pytest.raises(ValueError, match="matrix norm"):
        M.norm(np.ones((2, 2)), ord=3, axis=(0, 1))
    with pytest.raises(ValueError, match="one axis .* or two"):
        M.norm(np.ones((2, 2, 2)), axis=(0, 1, 2))
    with pytest.raises(ValueError, match="axis"):
        M.norm(np.ones((2, 2, 2)), ord=1)
    with pytest.raises(ValueError, match="out of range"):
        M.norm(np.ones((2, 2)), axis=2)
    with pytest.raises(ValueError, match="repeated"):
        M.norm(np.ones((2, 2)), axis=(1, 1))
    with pytest.raises(ValueError, match="ord=True"):
        M.norm(np.ones(2), ord=True)


def test_math_ops_are_in_the_public_namespace():
    for name in M.__all__:
        assert getattr(ops, name) is getattr(M, name)
    assert isinstance(ops.logsumexp(np.ones(2)), Tensor)
