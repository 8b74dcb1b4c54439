"""The tape: nodes, reverse-order accumulation, fan-out sums, pruning, GradientTape, no_backward."""

import numpy as np
import pytest

from gpulayers import autodiff, ops
from gpulayers.autodiff import GradientTape, Tensor, gradient, no_backward, record
from gpulayers.variables import Variable
from helpers import check_op_gradients, to_np


def watched(a):
    t = ops.convert_to_tensor(np.asarray(a, dtype=np.float64))
    t.watched = True
    return t


def test_a_value_used_twice_gets_the_sum_of_both_gradients():
    x = watched([1.0, 2.0, 3.0])
    y = ops.sum(x * x + ops.exp(x) * 2.0)  # x feeds a multiply twice and an exp
    (g,) = gradient(y, [x])
    np.testing.assert_allclose(g, 2 * np.array([1.0, 2.0, 3.0]) + 2 * np.exp([1.0, 2.0, 3.0]))


def test_diamond_graph_and_finite_differences():
    def f(a, b):
        c = a * b
        d = ops.tanh(c) + c * a  # c used twice, a used three times
        return ops.sum(d, axis=1) / (1.0 + ops.square(b).sum())

    rng = np.random.default_rng(0)
    check_op_gradients(f, rng.standard_normal((3, 4)), rng.standard_normal((4,)))


def test_nodes_run_in_reverse_creation_order():
    order = []

    def tracked(name, x):
        x = ops.convert_to_tensor(x)

        def backward(g, needs):
            order.append(name)
            return (g,)

        return record(name, x.data.copy(), (x,), backward)

    x = watched([1.0])
    a = tracked("a", x)
    b = tracked("b", a)
    c = tracked("c", a)  # a feeds b and c: a's backward runs once, after both
    total = ops.sum(tracked("d", b + c))
    gradient(total, [x])
    assert order == ["d", "c", "b", "a"]
    np.testing.assert_allclose(gradient(ops.sum(tracked("e", b + c)), [x])[0], [2.0])


def test_unconnected_sources_get_none_and_constants_record_nothing():
    x, z = watched([1.0, 2.0]), watched([3.0])
    y = ops.sum(x * 3.0)
    gx, gz = gradient(y, [x, z])
    np.testing.assert_allclose(gx, [3.0, 3.0])
    assert gz is None
    plain = ops.convert_to_tensor(np.ones(3)) * 2.0
    assert plain.node is None  # nothing needed a gradient


def test_stop_gradient_cuts_the_graph():
    x = watched([2.0])
    y = ops.sum(x * ops.stop_gradient(x))  # d/dx = stop(x) only
    np.testing.assert_allclose(gradient(y, [x])[0], [2.0])


def test_no_backward_records_nothing_and_a_tape_records_inside_it():
    v = Variable(np.ones(2), name="v")
    with no_backward():
        assert (v * 2.0).node is None
        with GradientTape() as tape:
            y = ops.sum(v * 2.0)
        assert y.node is not None
    np.testing.assert_allclose(to_np(tape.gradient(y, [v])[0]), [2.0, 2.0])
    assert autodiff.recording()


def test_trainable_variables_are_sources_and_frozen_ones_are_not():
    w = Variable(np.array([1.0, 2.0]), name="w")
    frozen = Variable(np.array([3.0, 4.0]), name="f", trainable=False)
    y = ops.sum(w * frozen)
    gw, gf = gradient(y, [w, frozen])
    np.testing.assert_allclose(gw, [3.0, 4.0])
    assert gf is None
    with GradientTape() as tape:
        tape.watch(frozen)
        y = ops.sum(w * frozen)
    np.testing.assert_allclose(to_np(tape.gradient(y, [frozen])[0]), [1.0, 2.0])


def test_gradients_of_intermediate_values_and_output_gradient():
    x = watched([1.0, 2.0])
    h = x * 3.0
    y = h * h
    gh, gx = gradient(y, [h, x], output_gradient=np.array([1.0, -1.0]))
    np.testing.assert_allclose(gh, 2 * np.array([3.0, 6.0]) * [1.0, -1.0])
    np.testing.assert_allclose(gx, 3 * gh)
    with pytest.raises(ValueError, match="output_gradient"):
        gradient(y, [x], output_gradient=np.ones(3))


def test_only_nodes_leading_to_a_source_run():
    calls = []

    def spy(x):
        x = ops.convert_to_tensor(x)
        return record("spy", x.data * 1.0, (x,), lambda g, needs: calls.append(1) or (g,))

    a, b = watched([1.0]), watched([2.0])
    y = ops.sum(spy(a) + b)
    gradient(y, [b])
    assert calls == []  # a's branch leads to no requested source
    gradient(y, [a])
    assert calls == [1]


def test_needs_tells_which_inputs_want_a_gradient():
    seen = []

    def pair(x, y):
        x, y = ops.convert_to_tensor(x), ops.convert_to_tensor(y)

        def backward(g, needs):
            seen.append(needs)
            return (g if needs[0] else None, g if needs[1] else None)

        return record("pair", x.data + y.data, (x, y), backward)

    x = watched([1.0])
    gradient(ops.sum(pair(x, np.ones(1))), [x])
    assert seen == [(True, False)]


def test_a_non_persistent_tape_gives_one_gradient_and_frees_the_graph():
    v = Variable(np.ones(2), name="v")
    with GradientTape() as tape:
        y = ops.sum(ops.exp(v))
    tape.gradient(y, [v])
    with pytest.raises(RuntimeError, match="one gradient"):
        tape.gradient(y, [v])
    with pytest.raises(RuntimeError, match="freed"):
        gradient(ops.sum(y * ops.sum(v)), [v])
    with GradientTape(persistent=True) as tape:
        y = ops.sum(ops.exp(v))
    for _ in range(2):
        np.testing.assert_allclose(to_np(tape.gradient(y, {"v": v})["v"]), np.exp([1.0, 1.0]))


def test_gradient_checks_its_arguments():
    x = watched([1.0])
    with pytest.raises(TypeError, match="target"):
        gradient(np.ones(1), [x])
    with pytest.raises(TypeError, match="sources"):
        gradient(ops.sum(x), [np.ones(1)])
    with pytest.raises(TypeError, match="watch"):
        GradientTape().watch(np.ones(1))


def test_a_wrong_gradient_shape_from_an_op_is_an_internal_error():
    x = watched([1.0, 2.0])
    bad = record("bad", x.data * 2, (x,), lambda g, needs: (g[:1],))
    with pytest.raises(RuntimeError, match="'bad'.*shape"):
        gradient(ops.sum(bad), [x])


def test_multi_output_nodes_fill_missing_gradients_with_zeros():
    x = watched(np.arange(6.0))
    first, second, third = ops.split(x, 3)
    y = ops.sum(second * 2.0)  # only one output used
    np.testing.assert_allclose(gradient(y, [x])[0], [0, 0, 2, 2, 0, 0])


def test_tensor_behaves_like_an_array():
    t = ops.convert_to_tensor(np.arange(6.0).reshape(2, 3))
    assert t.shape == (2, 3) and t.ndim == 2 and t.size == 6 and len(t) == 2
    assert t.dtype == np.float64
    np.testing.assert_array_equal(np.asarray(t), np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(t.numpy(), np.arange(6.0).reshape(2, 3))
    assert float(t[1, 2]) == 5.0 and int(t[0, 1]) == 1
    assert [r.shape for r in t] == [(3,), (3,)]
    assert bool((t > 2.0)[1, 0])
    assert isinstance(np.ones(3) + t[0], Tensor)  # numpy defers to the tensor
    assert isinstance(np.exp(t), Tensor) and np.exp(t).shape == (2, 3)
    assert isinstance(np.mean(t), Tensor)
    with pytest.raises(TypeError, match="immutable"):
        t[0, 0] = 1.0
    assert {t: "kept"}[t] == "kept"  # hashable by identity although == is elementwise


def test_numpy_ufuncs_on_tensors_are_differentiable():
    check_op_gradients(lambda x: np.exp(x) * np.tanh(x) + np.ones(3) / (1 + x * x), np.array([0.5, -1.0, 2.0]))
