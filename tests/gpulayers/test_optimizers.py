"""Tests for gpulayers.optimizers: update rules against hand arithmetic, clipping,
weight decay, schedules, constraints, dtypes, state, configs and errors.

The expected values are written out step by step in float64 (Keras 3's
formulas, keras/src/optimizers/*.py); where possible a few literal numbers
pin the formulas themselves.
"""

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends import get_ops
from gpulayers import callbacks, optimizers as O
from gpulayers.layers import Dense, Input
from gpulayers.models import Sequential
from gpulayers.variables import Variable
from gpulayers.optimizers import schedules as S
from helpers import keras_or_skip, to_np


def var(values, name="kernel", dtype=np.float64, constraint=None):
    return Variable(np.array(values, dtype=dtype), name=name, constraint=constraint)


def f64(values):
    return np.array(values, dtype=np.float64)


def run(opt, w0, grads, dtype=np.float64):
    """Apply ``grads`` one step at a time to a variable starting at ``w0``; the values after each step."""
    v = var(w0, dtype=dtype)
    out = []
    for g in grads:
        opt.apply([np.array(g, dtype=dtype)], [v])
        out.append(np.array(v.value, dtype=np.float64))
    return out


def slots(opt):
    """The optimizer's state arrays: its ``variables`` after Keras's ``iteration`` and ``learning_rate``."""
    head = 2 if isinstance(opt._learning_rate, float) else 1
    return [v.value for v in opt.variables[head:]]


W0 = [1.0, -0.5]
G = [[0.1, -0.2], [0.3, 0.1], [-0.2, 0.4]]


# ---------------------------------------------------------------- SGD


def test_sgd_plain():
    lr = 0.1
    w0, g1, g2, g3 = f64(W0), f64(G[0]), f64(G[1]), f64(G[2])
    w1 = w0 - lr * g1
    w2 = w1 - lr * g2
    w3 = w2 - lr * g3
    got = run(O.SGD(learning_rate=lr), W0, G)
    np.testing.assert_allclose(got, [w1, w2, w3], rtol=1e-14)
    np.testing.assert_allclose(got[-1], [1.0 - 0.02, -0.5 - 0.03], rtol=1e-14)  # lr * sum of grads


def test_sgd_momentum_literal():
    # g = 1 each step, lr 0.1, momentum 0.9: m = -0.1, -0.19, -0.271; w = 0.9, 0.71, 0.439.
    got = run(O.SGD(learning_rate=0.1, momentum=0.9), [1.0], [[1.0]] * 3)
    np.testing.assert_allclose(np.ravel(got), [0.9, 0.71, 0.439], rtol=1e-13)


def test_sgd_nesterov_literal():
    # w += momentum * m - lr * g with the new m: 1 - 0.09 - 0.1 = 0.81; 0.81 - 0.171 - 0.1 = 0.539; 0.539 - 0.2439 - 0.1.
    got = run(O.SGD(learning_rate=0.1, momentum=0.9, nesterov=True), [1.0], [[1.0]] * 3)
    np.testing.assert_allclose(np.ravel(got), [0.81, 0.539, 0.1951], rtol=1e-13)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_steps(nesterov):
    lr, mu = 0.05, 0.8
    w, m = f64(W0), np.zeros(2)
    expected = []
    for g in map(f64, G):
        m = mu * m - lr * g
        w = w + (mu * m - lr * g if nesterov else m)
        expected.append(w)
    opt = O.SGD(learning_rate=lr, momentum=mu, nesterov=nesterov)
    np.testing.assert_allclose(run(opt, W0, G), expected, rtol=1e-14)
    np.testing.assert_allclose(slots(opt)[0], m, rtol=1e-14)  # the momentum state


def test_sgd_without_momentum_has_no_state():
    opt = O.SGD(momentum=0.0)
    run(opt, W0, G[:1])
    assert slots(opt) == []


# ---------------------------------------------------------------- Adam / AdamW


def adam_reference(w0, grads, lr, b1, b2, eps, amsgrad=False, weight_decay=None):
    """Keras 3's Adam, written out in float64 (t = step number from 1)."""
    w, m, v, vhat = f64(w0), np.zeros(len(w0)), np.zeros(len(w0)), np.zeros(len(w0))
    out = []
    for t, g in enumerate(map(f64, grads), start=1):
        if weight_decay is not None:
            w = w - w * weight_decay * lr
        alpha = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
        m = m + (g - m) * (1 - b1)
        v = v + (g * g - v) * (1 - b2)
        denom_v = v
        if amsgrad:
            vhat = np.maximum(vhat, v)
            denom_v = vhat
        w = w - m * alpha / (np.sqrt(denom_v) + eps)
        out.append(w)
    return out


def test_adam_steps_written_out():
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-7
    w0, g1, g2 = f64(W0), f64(G[0]), f64(G[1])
    # step 1
    m1 = 0.1 * g1
    v1 = 0.001 * g1**2
    w1 = w0 - m1 * (lr * math.sqrt(1 - b2) / (1 - b1)) / (np.sqrt(v1) + eps)
    # step 2
    m2 = m1 + (g2 - m1) * 0.1
    v2 = v1 + (g2**2 - v1) * 0.001
    w2 = w1 - m2 * (lr * math.sqrt(1 - b2**2) / (1 - b1**2)) / (np.sqrt(v2) + eps)
    got = run(O.Adam(learning_rate=lr), W0, G[:2])
    np.testing.assert_allclose(got, [w1, w2], rtol=1e-13)
    # The first Adam step is lr * sign(g) (up to epsilon).
    np.testing.assert_allclose(got[0], w0 - lr * np.sign(g1), atol=1e-6)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_three_steps(amsgrad):
    # The first entry's gradient shrinks, so v falls and AMSGrad's max matters.
    grads = [[1.0, 0.5], [0.01, 0.5], [0.01, -0.5]]
    opt = O.Adam(learning_rate=0.02, beta_1=0.8, beta_2=0.9, epsilon=1e-6, amsgrad=amsgrad)
    expected = adam_reference(W0, grads, 0.02, 0.8, 0.9, 1e-6, amsgrad=amsgrad)
    np.testing.assert_allclose(run(opt, W0, grads), expected, rtol=1e-13)
    assert len(slots(opt)) == (3 if amsgrad else 2)


def test_amsgrad_differs_from_adam():
    grads = [[1.0, 0.5], [0.01, 0.5], [0.01, -0.5]]
    plain = adam_reference(W0, grads, 0.02, 0.8, 0.9, 1e-6)
    ams = adam_reference(W0, grads, 0.02, 0.8, 0.9, 1e-6, amsgrad=True)
    assert abs(plain[-1][0] - ams[-1][0]) > 1e-4
    # velocity_hat = max over steps of v: v1 = 0.1 (step 1) for the first entry.
    opt = O.Adam(learning_rate=0.02, beta_1=0.8, beta_2=0.9, epsilon=1e-6, amsgrad=True)
    run(opt, W0, grads)
    np.testing.assert_allclose(slots(opt)[2][0], 0.1, rtol=1e-13)


def test_adamw_decays_before_the_adam_step():
    lr, wd = 0.01, 0.1
    w0, g1, g2 = f64(W0), f64(G[0]), f64(G[1])
    d0 = w0 - w0 * wd * lr  # decoupled decay first...
    m1, v1 = 0.1 * g1, 0.001 * g1**2
    w1 = d0 - m1 * (lr * math.sqrt(1 - 0.999) / (1 - 0.9)) / (np.sqrt(v1) + 1e-7)  # ...then Adam
    d1 = w1 - w1 * wd * lr
    m2, v2 = m1 + (g2 - m1) * 0.1, v1 + (g2**2 - v1) * 0.001
    w2 = d1 - m2 * (lr * math.sqrt(1 - 0.999**2) / (1 - 0.9**2)) / (np.sqrt(v2) + 1e-7)
    np.testing.assert_allclose(run(O.AdamW(learning_rate=lr, weight_decay=wd), W0, G[:2]), [w1, w2], rtol=1e-13)
    # AdamW is Adam with a weight decay: same numbers.
    np.testing.assert_allclose(run(O.Adam(learning_rate=lr, weight_decay=wd), W0, G[:2]), [w1, w2], rtol=1e-13)


def test_adamw_default_decay():
    opt = O.AdamW()
    assert opt.weight_decay == 0.004 and opt.learning_rate == 0.001
    expected = adam_reference(W0, G, 0.001, 0.9, 0.999, 1e-7, weight_decay=0.004)
    np.testing.assert_allclose(run(opt, W0, G), expected, rtol=1e-13)


# ---------------------------------------------------------------- RMSprop


def test_rmsprop_keras_docstring_example():
    # Keras's RMSprop docstring: lr 0.1, var 10, loss var**2 / 2 (grad = var) -> 9.683772.
    v = var([10.0], dtype=np.float32)
    O.RMSprop(learning_rate=0.1).apply([v.value.copy()], [v])
    np.testing.assert_allclose(v.value, [9.683772], rtol=1e-7)


def test_rmsprop_plain_steps():
    lr, rho, eps = 0.01, 0.9, 1e-7
    w0, g1, g2 = f64(W0), f64(G[0]), f64(G[1])
    v1 = 0.1 * g1**2  # rho * 0 + (1 - rho) * g^2
    w1 = w0 - lr * g1 / np.sqrt(v1 + eps)  # epsilon inside the root
    v2 = rho * v1 + (1 - rho) * g2**2
    w2 = w1 - lr * g2 / np.sqrt(v2 + eps)
    opt = O.RMSprop(learning_rate=lr)
    np.testing.assert_allclose(run(opt, W0, G[:2]), [w1, w2], rtol=1e-13)
    assert len(slots(opt)) == 1


def test_rmsprop_centered_with_momentum():
    lr, rho, mu, eps = 0.01, 0.8, 0.5, 1e-6
    w, v, a, mom = f64(W0), np.zeros(2), np.zeros(2), np.zeros(2)
    expected = []
    for g in map(f64, G):
        v = rho * v + (1 - rho) * g * g
        a = rho * a + (1 - rho) * g
        increment = lr * g / np.sqrt(v - a * a + eps)
        mom = mu * mom + increment
        w = w - mom
        expected.append(w)
    opt = O.RMSprop(learning_rate=lr, rho=rho, momentum=mu, epsilon=eps, centered=True)
    np.testing.assert_allclose(run(opt, W0, G), expected, rtol=1e-12)
    # State order as Keras: velocities, momentums, average gradients.
    np.testing.assert_allclose(slots(opt)[0], v, rtol=1e-13)
    np.testing.assert_allclose(slots(opt)[1], mom, rtol=1e-12)
    np.testing.assert_allclose(slots(opt)[2], a, rtol=1e-13)


def test_rmsprop_centered_first_step_literal():
    # One step, g = 1, rho 0.9: v = 0.1, a = 0.1, denominator 0.1 - 0.01 = 0.09 -> w -= lr / 0.3.
    got = run(O.RMSprop(learning_rate=0.03, centered=True, epsilon=0.0), [1.0], [[1.0]])
    np.testing.assert_allclose(got[0], [1.0 - 0.1], rtol=1e-13)


# ---------------------------------------------------------------- Adagrad


def test_adagrad_literal():
    # acc starts at 0.1; g = 1: acc 1.1 then 2.1; w -= 0.1 / sqrt(acc + 1e-7).
    got = run(O.Adagrad(learning_rate=0.1), [1.0], [[1.0], [1.0]])
    w1 = 1.0 - 0.1 / math.sqrt(1.1 + 1e-7)
    w2 = w1 - 0.1 / math.sqrt(2.1 + 1e-7)
    np.testing.assert_allclose(np.ravel(got), [w1, w2], rtol=1e-14)


def test_adagrad_initial_accumulator_steps():
    lr, init, eps = 0.05, 0.5, 1e-6
    w0, g1, g2, g3 = f64(W0), f64(G[0]), f64(G[1]), f64(G[2])
    acc1 = init + g1**2
    w1 = w0 - lr * g1 / np.sqrt(acc1 + eps)
    acc2 = acc1 + g2**2
    w2 = w1 - lr * g2 / np.sqrt(acc2 + eps)
    acc3 = acc2 + g3**2
    w3 = w2 - lr * g3 / np.sqrt(acc3 + eps)
    opt = O.Adagrad(learning_rate=lr, initial_accumulator_value=init, epsilon=eps)
    np.testing.assert_allclose(run(opt, W0, G), [w1, w2, w3], rtol=1e-14)
    np.testing.assert_allclose(slots(opt)[0], acc3, rtol=1e-14)


def test_adagrad_state_starts_at_initial_value():
    opt = O.Adagrad(initial_accumulator_value=0.25)
    opt.build([var([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)])
    (acc,) = slots(opt)
    assert acc.dtype == np.float32 and acc.shape == (2, 2)
    np.testing.assert_array_equal(acc, 0.25)


# ---------------------------------------------------------------- clipping


def test_clipnorm_per_variable():
    a, b = var([0.0, 0.0], "a"), var([[0.0, 0.0], [0.0, 0.0]], "b")
    ga = f64([3.0, 4.0])  # norm 5 -> scaled to norm 1
    gb = f64([[0.3, 0.0], [0.0, 0.4]])  # norm 0.5, under the limit: unchanged
    O.SGD(learning_rate=1.0, clipnorm=1.0).apply([ga, gb], [a, b])
    np.testing.assert_allclose(a.value, [-0.6, -0.8], rtol=1e-14)
    np.testing.assert_allclose(b.value, -gb, rtol=1e-14)


def test_clipnorm_over_the_whole_tensor():
    w = var([[0.0, 0.0], [0.0, 0.0]])
    O.SGD(learning_rate=1.0, clipnorm=2.0).apply([f64([[3.0, 0.0], [0.0, 4.0]])], [w])
    # Keras's clip_by_norm: g * clipnorm / max(norm, clipnorm), norm over every axis: 2 / 5.
    np.testing.assert_allclose(w.value, [[-1.2, 0.0], [0.0, -1.6]], rtol=1e-14)


def test_global_clipnorm():
    a, b, c = var([0.0], "a"), var([0.0], "b"), var([7.0], "c")
    opt = O.SGD(learning_rate=1.0, global_clipnorm=2.5)
    opt.apply([f64([3.0]), f64([4.0]), None], [a, b, c])  # global norm 5 -> scale 0.5; None ignored
    np.testing.assert_allclose([a.value[0], b.value[0], c.value[0]], [-1.5, -2.0, 7.0], rtol=1e-14)
    opt.apply([f64([0.3]), f64([0.4]), None], [a, b, c])  # norm 0.5: unchanged
    np.testing.assert_allclose([a.value[0], b.value[0]], [-1.8, -2.4], rtol=1e-14)


def test_global_clipnorm_non_finite_gives_nan():
    a, b = var([0.0], "a"), var([0.0], "b")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NumPy warning either
        O.SGD(learning_rate=1.0, global_clipnorm=1.0).apply([f64([np.inf]), f64([1.0])], [a, b])
    assert np.isnan(a.value[0]) and np.isnan(b.value[0])


def test_global_clipnorm_of_zero_gradients():
    a = var([1.0, 2.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 1 / norm is inf here: no warning, scale 1
        O.SGD(learning_rate=1.0, global_clipnorm=1.0).apply([f64([0.0, 0.0])], [a])
    np.testing.assert_array_equal(a.value, [1.0, 2.0])


def test_clipvalue():
    w = var([0.0, 0.0, 0.0])
    O.SGD(learning_rate=1.0, clipvalue=1.0).apply([f64([-3.0, 0.5, 2.0])], [w])
    np.testing.assert_allclose(w.value, [1.0, -0.5, -1.0], rtol=1e-14)


@pytest.mark.parametrize("arg", ["clipnorm", "clipvalue", "global_clipnorm"])
def test_clip_zero_means_off(arg):
    w = var([0.0])
    O.SGD(learning_rate=1.0, **{arg: 0.0}).apply([f64([10.0])], [w])
    np.testing.assert_allclose(w.value, [-10.0])


def test_clipping_happens_before_the_update_and_with_adam_state():
    # Adam sees the clipped gradient: its first momentum is 0.1 * clipped g.
    opt = O.Adam(clipvalue=0.5)
    run(opt, [0.0, 0.0], [[2.0, -0.1]])
    np.testing.assert_allclose(slots(opt)[0], [0.05, -0.01], rtol=1e-14)


def test_order_clip_then_decay_then_update():
    # g 10 -> clipped to 1; decay 2 - 2 * 0.5 * 0.1 = 1.9; update 1.9 - 0.1 * 1 = 1.8.
    # (Decay after the update would give 1.805.)
    got = run(O.SGD(learning_rate=0.1, weight_decay=0.5, clipnorm=1.0), [2.0], [[10.0]])
    np.testing.assert_allclose(got[0], [1.8], rtol=1e-14)


# ---------------------------------------------------------------- weight decay


def test_weight_decay_on_sgd_steps():
    lr, wd = 0.1, 0.2
    w0, g1, g2 = f64(W0), f64(G[0]), f64(G[1])
    w1 = (w0 - w0 * wd * lr) - lr * g1
    w2 = (w1 - w1 * wd * lr) - lr * g2
    np.testing.assert_allclose(run(O.SGD(learning_rate=lr, weight_decay=wd), W0, G[:2]), [w1, w2], rtol=1e-14)


def test_weight_decay_uses_the_scheduled_rate():
    sched = S.PiecewiseConstantDecay([0], [0.1, 0.01])
    got = run(O.SGD(learning_rate=sched, weight_decay=1.0), [1.0], [[0.0], [0.0]])
    np.testing.assert_allclose(np.ravel(got), [0.9, 0.9 * 0.99], rtol=1e-14)


def test_exclude_from_weight_decay():
    kernel, bias, gamma = var([1.0], "kernel"), var([1.0], "bias"), var([1.0], "gamma")
    opt = O.SGD(learning_rate=0.1, weight_decay=0.5)
    opt.exclude_from_weight_decay(var_list=[gamma], var_names=["bias"])
    zero = [f64([0.0])] * 3
    opt.apply(zero, [kernel, bias, gamma])
    assert (kernel.value[0], bias.value[0], gamma.value[0]) == (0.95, 1.0, 1.0)
    opt.exclude_from_weight_decay()  # a new call replaces the exclusions
    opt.apply(zero, [kernel, bias, gamma])
    np.testing.assert_allclose([kernel.value[0], bias.value[0], gamma.value[0]], [0.95 * 0.95, 0.95, 0.95])


def test_exclude_names_are_patterns_searched_in_the_name():
    a, b = var([1.0], "dense_bias_1"), var([1.0], "kernel")
    opt = O.AdamW(learning_rate=0.1, weight_decay=0.5)
    opt.exclude_from_weight_decay(var_names=["^dense_b", "nothing"])
    opt.apply([f64([0.0]), f64([0.0])], [a, b])
    assert a.value[0] == 1.0 and b.value[0] == pytest.approx(0.95)


# ---------------------------------------------------------------- schedules


def test_exponential_decay_values():
    smooth = S.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5)
    stairs = S.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5, staircase=True)
    assert [smooth(k) for k in range(4)] == pytest.approx([0.1, 0.1 * 0.5**0.5, 0.05, 0.1 * 0.5**1.5], rel=1e-15)
    assert [stairs(k) for k in range(5)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025], rel=1e-15)


@pytest.mark.parametrize("staircase", [False, True])
def test_schedule_rate_of_the_current_step(staircase):
    sched = S.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5, staircase=staircase)
    opt = O.SGD(learning_rate=sched)
    v = var([0.0])
    w = 0.0
    for step in range(4):
        p = step / 2 if not staircase else step // 2
        expected_lr = 0.1 * 0.5**p
        assert opt.iterations == step
        assert opt.learning_rate.shape == () and opt.learning_rate.dtype == np.float32  # a floatx tensor
        assert float(opt.learning_rate) == np.float32(expected_lr)
        opt.apply([f64([1.0])], [v])
        w -= expected_lr  # the update used the rate of this step
        assert v.value[0] == pytest.approx(w, rel=1e-14)
    assert opt.iterations == 4


def test_piecewise_constant_decay():
    s = S.PiecewiseConstantDecay([1, 3], [1.0, 0.5, 0.1])
    assert [s(k) for k in range(6)] == [1.0, 1.0, 0.5, 0.5, 0.1, 0.1]


def test_inverse_time_and_polynomial_and_cosine():
    inv = S.InverseTimeDecay(1.0, decay_steps=2, decay_rate=0.5)
    assert inv(3) == pytest.approx(1.0 / (1 + 0.5 * 1.5))
    assert S.InverseTimeDecay(1.0, 2, 0.5, staircase=True)(3) == pytest.approx(1.0 / 1.5)
    poly = S.PolynomialDecay(0.1, decay_steps=4, end_learning_rate=0.01, power=2.0)
    assert poly(1) == pytest.approx(0.09 * 0.75**2 + 0.01)
    assert poly(10) == pytest.approx(0.01)  # step capped at decay_steps
    cyc = S.PolynomialDecay(0.1, decay_steps=4, end_learning_rate=0.0, cycle=True)
    assert cyc(0) == pytest.approx(0.1) and cyc(6) == pytest.approx(0.1 * (1 - 6 / 8))
    cos = S.CosineDecay(1.0, decay_steps=4, alpha=0.1)
    assert cos(2) == pytest.approx(0.9 * 0.5 + 0.1) and cos(9) == pytest.approx(0.1)
    warm = S.CosineDecay(0.0, decay_steps=4, warmup_target=1.0, warmup_steps=2)
    assert [warm(0), warm(1), warm(2), warm(4)] == pytest.approx([0.0, 0.5, 1.0, 0.5])


def _sgdr_reference(step, initial, first, t_mul, m_mul, alpha):
    """Cosine decay with restarts by walking the periods one by one (float64)."""
    start, period, restart = 0.0, float(first), 0
    while step >= start + period:
        start, period, restart = start + period, period * t_mul, restart + 1
    cosine = 0.5 * m_mul**restart * (1 + math.cos(math.pi * (step - start) / period))
    return initial * ((1 - alpha) * cosine + alpha)


@pytest.mark.parametrize("t_mul,m_mul,alpha", [(2.0, 1.0, 0.0), (1.0, 0.5, 0.1), (1.5, 0.8, 0.0), (0.5, 1.0, 0.2)])
def test_cosine_decay_restarts(t_mul, m_mul, alpha):
    schedule = S.CosineDecayRestarts(0.1, first_decay_steps=10, t_mul=t_mul, m_mul=m_mul, alpha=alpha)
    steps = [s + 0.5 for s in range(60)] if t_mul < 1 else [s + 0.5 for s in range(200)]  # off the restarts
    if t_mul < 1:  # periods 10, 5, 2.5...: a finite total length of 20
        steps = [s for s in steps if s < 19]
    np.testing.assert_allclose([schedule(s) for s in steps],
                               [_sgdr_reference(s, 0.1, 10, t_mul, m_mul, alpha) for s in steps], rtol=1e-9)
    assert schedule(0) == pytest.approx(0.1) and schedule(10) == pytest.approx(0.1 * m_mul * (1 - alpha) + 0.1 * alpha)
    assert S.deserialize(S.serialize(schedule)).get_config() == schedule.get_config() == {
        "initial_learning_rate": 0.1, "first_decay_steps": 10, "t_mul": t_mul, "m_mul": m_mul, "alpha": alpha,
        "name": "SGDRDecay"}
    for bad in ({"first_decay_steps": 0}, {"t_mul": 0.0}, {"m_mul": -1.0}, {"alpha": 1.5}):
        with pytest.raises(ValueError, match=f"`{next(iter(bad))}`"):
            S.CosineDecayRestarts(**{"initial_learning_rate": 0.1, "first_decay_steps": 10, **bad})


def test_cosine_decay_restarts_matches_keras():
    keras = keras_or_skip()
    for kwargs in ({}, {"t_mul": 1.0, "m_mul": 0.5, "alpha": 0.1}, {"t_mul": 3.0, "m_mul": 0.9}):
        ours = S.CosineDecayRestarts(0.1, 7, **kwargs)
        theirs = keras.optimizers.schedules.CosineDecayRestarts(0.1, 7, **kwargs)
        steps = [s + 0.5 for s in range(100)]
        np.testing.assert_allclose([ours(s) for s in steps], [float(theirs(s)) for s in steps], rtol=2e-5,
                                   atol=1e-7)


def test_callable_learning_rates():
    opt = O.SGD(learning_rate=lambda step: 0.1 / (step + 1))
    v = var([0.0])
    for _ in range(3):
        opt.apply([f64([1.0])], [v])
    assert v.value[0] == pytest.approx(-(0.1 + 0.05 + 0.1 / 3))
    keras_style = O.SGD(learning_rate=lambda: 0.25)  # Keras calls a callable with no argument
    assert keras_style.learning_rate == 0.25


def test_learning_rate_setter():
    opt = O.Adam(learning_rate=0.01)
    opt.learning_rate = 0.5
    assert opt.learning_rate == 0.5 and isinstance(opt._learning_rate, float)
    opt.learning_rate = np.float32(0.25)  # what LR callbacks may compute
    assert opt.learning_rate == 0.25 and type(opt._learning_rate) is float
    v = var([0.0])
    opt2 = O.SGD(learning_rate=1.0)
    opt2.apply([f64([1.0])], [v])
    opt2.learning_rate = 0.1  # the next step uses the new rate
    opt2.apply([f64([1.0])], [v])
    assert v.value[0] == pytest.approx(-1.1)
    with pytest.raises(ValueError, match="learning_rate"):
        opt.learning_rate = -1.0
    opt.learning_rate = S.ExponentialDecay(0.1, 10, 0.9)  # a schedule may replace a float
    with pytest.raises(TypeError, match="LearningRateSchedule"):
        opt.learning_rate = 0.1
    with pytest.raises(TypeError, match="not settable"):
        O.SGD(learning_rate=lambda step: 0.1).learning_rate = 0.1


# ---------------------------------------------------------------- constraints, dtypes, None, state


def test_constraint_applied_after_update_and_increment():
    seen = []
    opt = O.SGD(learning_rate=1.0)

    def clip01(w):
        seen.append((np.array(w), opt.iterations))
        return np.clip(w, 0.0, 1.0)

    v = var([0.5, 0.5], constraint=clip01)
    skipped = var([5.0], "other", constraint=clip01)
    opt.apply([f64([-1.0, 1.0]), None], [v, skipped])
    np.testing.assert_allclose(seen[0][0], [1.5, -0.5])  # the constraint saw the updated value
    assert seen[0][1] == 1 and len(seen) == 1  # after iterations += 1; not for the skipped variable
    np.testing.assert_allclose(v.value, [1.0, 0.0])
    assert skipped.value[0] == 5.0


OPTIMIZERS = [
    lambda: O.SGD(0.1),
    lambda: O.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    lambda: O.Adam(0.01, amsgrad=True, clipnorm=1.0),
    lambda: O.AdamW(0.01, global_clipnorm=1.0),
    lambda: O.RMSprop(0.01, momentum=0.5, centered=True, clipvalue=0.5),
    lambda: O.Adagrad(0.1, weight_decay=0.1),
]


@pytest.mark.parametrize("make", OPTIMIZERS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_dtype_kept(make, dtype):
    opt = make()
    start = np.array([[1.0, -2.0], [0.5, 0.25]], dtype=dtype)
    v = Variable(start, name="kernel")
    for _ in range(3):
        grad = np.array([[0.1, 0.2], [-0.3, 0.4]], dtype=np.float64)  # a float64 gradient
        opt.apply([grad], [v])
        assert v.value.dtype == dtype
        assert grad.tolist() == [[0.1, 0.2], [-0.3, 0.4]]  # the gradient is not modified
    assert start.tolist() == [[1.0, -2.0], [0.5, 0.25]]  # nor the array the variable started with
    assert all(s.dtype == dtype for s in slots(opt))
    reference = make()
    expected = run(reference, [[1.0, -2.0], [0.5, 0.25]], [[[0.1, 0.2], [-0.3, 0.4]]] * 3)[-1]
    rtol, atol = {np.float64: (1e-14, 0), np.float32: (1e-5, 1e-6), np.float16: (5e-3, 2e-3)}[dtype]
    np.testing.assert_allclose(np.asarray(v.value, np.float64), expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("make", OPTIMIZERS)
def test_state_on_the_variable_array_module(make):
    ops = get_ops()
    v = Variable(ops.asarray(np.array([1.0, -2.0], dtype=np.float32)), name="kernel")
    opt = make()
    for _ in range(2):
        opt.apply([ops.asarray(np.array([0.5, -0.25], dtype=np.float32))], [v])
    assert type(v.value) is type(ops.asarray(np.zeros(1)))
    assert all(type(s) is type(v.value) for s in slots(opt))
    expected = run(make(), [1.0, -2.0], [[0.5, -0.25]] * 2, dtype=np.float32)[-1]
    np.testing.assert_allclose(to_np(v.value), expected, rtol=1e-6)


def test_none_gradients_skipped():
    a, b = var([1.0], "a"), var([2.0], "b")
    opt = O.Adam(0.1)
    opt.apply([None, f64([1.0])], [a, b])
    assert a.value[0] == 1.0 and b.value[0] != 2.0 and opt.iterations == 1
    with pytest.raises(ValueError, match="No gradients provided"):
        opt.apply([None, None], [a, b])
    assert opt.iterations == 1
    opt.apply([], [])  # nothing to do
    assert opt.iterations == 1


def test_state_created_lazily_and_per_variable():
    opt = O.Adam()
    assert slots(opt) == [] and not opt.built
    a, b = var([1.0, 2.0], "a"), var([[1.0], [2.0], [3.0]], "b")
    opt.apply([f64([1.0, 1.0]), f64([[1.0], [0.0], [1.0]])], [a, b])
    assert opt.built and len(slots(opt)) == 4  # Keras's order: momentum a, velocity a, momentum b, velocity b
    assert [s.shape for s in slots(opt)] == [(2,), (2,), (3, 1), (3, 1)]
    assert len({id(s) for s in slots(opt)}) == 4
    np.testing.assert_allclose(slots(opt)[2].ravel(), [0.1, 0.0, 0.1])
    np.testing.assert_allclose(slots(opt)[3].ravel(), [0.001, 0.0, 0.001])
    c = var([5.0], "c")  # a variable first seen later gets its state then
    opt.apply([f64([1.0])], [c])
    assert len(slots(opt)) == 6
    # apply(grads) alone updates the built variables
    opt.apply([f64([0.0, 0.0]), None])
    assert opt.iterations == 3


def test_explicit_build():
    a = var([1.0, 2.0])
    opt = O.RMSprop(momentum=0.5)
    opt.build([a])
    assert opt.built and len(slots(opt)) == 2 and all(np.all(s == 0) for s in slots(opt))
    opt.apply([f64([1.0, 1.0])])
    assert opt.iterations == 1
    with pytest.raises(ValueError, match="build"):
        O.SGD().apply([f64([1.0])])


def test_apply_gradients_pairs():
    a, b = var([1.0], "a"), var([2.0], "b")
    opt = O.SGD(0.5)
    assert opt.apply_gradients(zip([f64([1.0]), f64([2.0])], [a, b])) == 1
    assert (a.value[0], b.value[0]) == (0.5, 1.0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.01, 100.0) | st.floats(-100.0, -0.01), min_size=1, max_size=5),
       st.floats(1e-4, 1.0))
def test_first_adam_step_is_lr_times_sign(grad, lr):
    v = var(np.zeros(len(grad)))
    O.Adam(learning_rate=lr, epsilon=0.0).apply([f64(grad)], [v])
    np.testing.assert_allclose(v.value, -lr * np.sign(grad), rtol=1e-12)


# ---------------------------------------------------------------- configs


BASE_KEYS = {"name", "learning_rate", "weight_decay", "clipnorm", "global_clipnorm", "clipvalue", "use_ema",
             "ema_momentum", "ema_overwrite_frequency", "loss_scale_factor", "gradient_accumulation_steps"}
CONFIG_CASES = [
    (O.SGD(0.05, momentum=0.9, nesterov=True, clipnorm=1.0), {"momentum", "nesterov"}),
    (O.Adam(0.002, beta_1=0.8, beta_2=0.99, epsilon=1e-6, amsgrad=True, weight_decay=0.01), {"beta_1", "beta_2", "epsilon", "amsgrad"}),
    (O.AdamW(0.003, weight_decay=0.02, global_clipnorm=2.0), {"beta_1", "beta_2", "epsilon", "amsgrad"}),
    (O.RMSprop(0.01, rho=0.8, momentum=0.1, epsilon=1e-5, centered=True, clipvalue=0.5), {"rho", "momentum", "epsilon", "centered"}),
    (O.Adagrad(0.1, initial_accumulator_value=0.2, epsilon=1e-6, name="ada"), {"initial_accumulator_value", "epsilon"}),
]


@pytest.mark.parametrize("opt,extra", CONFIG_CASES, ids=lambda c: type(c).__name__ if isinstance(c, O.Optimizer) else "")
def test_config_round_trip(opt, extra):
    config = opt.get_config()
    assert set(config) == BASE_KEYS | extra
    again = type(opt).from_config(config)
    assert again.get_config() == config
    data = O.serialize(opt)
    assert data == {"module": "keras.optimizers", "class_name": type(opt).__name__, "config": config,
                    "registered_name": None}
    assert O.deserialize(data).get_config() == config
    assert O.get(data).get_config() == config


def test_default_names_and_values():
    # Keras 3.15.1's auto_name: the snake_case class name, made unique by a counter.
    from gpulayers import utils

    utils.clear_session()
    assert [O.SGD().name, O.SGD().name, O.Adam().name, O.AdamW().name, O.RMSprop().name, O.Adagrad().name] == [
        "sgd", "sgd_1", "adam", "adam_w", "rm_sprop", "adagrad"]
    assert O.LossScaleOptimizer(O.SGD()).name == "loss_scale_optimizer"
    c = O.Adam().get_config()
    assert (c["learning_rate"], c["beta_1"], c["beta_2"], c["epsilon"], c["amsgrad"]) == (0.001, 0.9, 0.999, 1e-7, False)
    c = O.RMSprop().get_config()
    assert (c["learning_rate"], c["rho"], c["momentum"], c["epsilon"], c["centered"]) == (0.001, 0.9, 0.0, 1e-7, False)
    c = O.Adagrad().get_config()
    assert (c["learning_rate"], c["initial_accumulator_value"], c["epsilon"]) == (0.001, 0.1, 1e-7)
    assert O.SGD().get_config()["learning_rate"] == 0.01


def test_schedule_in_config():
    opt = O.SGD(learning_rate=S.ExponentialDecay(0.1, 100, 0.96, staircase=True))
    config = opt.get_config()
    assert config["learning_rate"] == {
        "module": "keras.optimizers.schedules", "class_name": "ExponentialDecay",
        "config": {"initial_learning_rate": 0.1, "decay_steps": 100, "decay_rate": 0.96, "staircase": True,
                   "name": "ExponentialDecay"},
        "registered_name": None}
    again = O.SGD.from_config(config)
    assert isinstance(again._learning_rate, S.ExponentialDecay) and again.get_config() == config
    assert isinstance(config["learning_rate"], dict)  # from_config did not change the caller's dict
    for sched in [S.PiecewiseConstantDecay([2, 5], [0.1, 0.01, 0.001]), S.InverseTimeDecay(0.1, 3, 0.5),
                  S.PolynomialDecay(0.1, 10, cycle=True), S.CosineDecay(0.1, 10, warmup_target=0.2, warmup_steps=3)]:
        assert S.deserialize(S.serialize(sched)).get_config() == sched.get_config()


def test_keras_saved_config_loads():
    # An optimizer config as Keras 3 writes it in a .keras file's compile_config.
    keras_config = {
        "module": "keras.optimizers", "class_name": "Adam",
        "config": {"name": "adam", "learning_rate": 0.0010000000474974513, "weight_decay": None, "clipnorm": None,
                   "global_clipnorm": None, "clipvalue": None, "use_ema": False, "ema_momentum": 0.99,
                   "ema_overwrite_frequency": None, "loss_scale_factor": None, "gradient_accumulation_steps": None,
                   "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07, "amsgrad": False},
        "registered_name": None}
    opt = O.get(keras_config)
    assert isinstance(opt, O.Adam) and opt.learning_rate == pytest.approx(0.001)


def test_get_names_case_insensitive():
    for name, cls in [("sgd", O.SGD), ("SGD", O.SGD), ("adam", O.Adam), ("ADAM", O.Adam), ("AdamW", O.AdamW),
                      ("adamw", O.AdamW), ("rmsprop", O.RMSprop), ("RMSprop", O.RMSprop), ("Adagrad", O.Adagrad)]:
        assert type(O.get(name)) is cls
    assert O.get({"class_name": "sgd", "config": {"learning_rate": 0.5}}).learning_rate == 0.5
    opt = O.Adam()
    assert O.get(opt) is opt and O.get(None) is None


def test_get_errors():
    with pytest.raises(ValueError, match=r"`optimizer`.*not provided by gpulayers.*optimizer='adafactor'"):
        O.get("adafactor")
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamm'. Did you mean 'adam'"):
        O.get("adamm")
    with pytest.raises(ValueError, match=r"`optimizer`.*optimizer=42"):
        O.get(42)
    with pytest.raises(ValueError, match="`optimizer`"):
        O.get(O.Adam)  # a class, not an instance (as Keras)
    with pytest.raises(ValueError, match="is not a gpulayers built-in"):
        O.deserialize({"module": "evil.module", "class_name": "Adam", "config": {}})
    with pytest.raises(ValueError, match=r"bad config for SGD.*momentum"):
        O.deserialize({"class_name": "SGD", "config": {"momentum": 3.0}})
    with pytest.raises(ValueError, match="bad config for Adam"):
        O.deserialize({"class_name": "Adam", "config": {"not_an_arg": 1}})
    with pytest.raises(ValueError, match="not a gpulayers built-in learning rate schedule"):
        O.SGD.from_config({"learning_rate": {"module": "keras.optimizers.schedules", "class_name": "Mine", "config": {}}})
    with pytest.raises(TypeError, match="`optimizer`"):
        O.serialize("adam")


def test_callable_learning_rate_config_is_not_loadable():
    def my_lr(step):
        return 0.1

    config = O.SGD(learning_rate=my_lr).get_config()
    assert config["learning_rate"]["class_name"] == "function" and config["learning_rate"]["config"] == "my_lr"
    with pytest.raises(ValueError, match="learning_rate"):
        O.SGD.from_config(config)


# ---------------------------------------------------------------- argument errors


@pytest.mark.parametrize(
    "make,error,pattern",
    [
        (lambda: O.SGD(momentum=1.5), ValueError, r"`momentum`.*momentum=1.5"),
        (lambda: O.SGD(momentum=-0.1), ValueError, r"momentum=-0.1"),
        (lambda: O.SGD(nesterov="yes"), TypeError, r"`nesterov`.*nesterov='yes'"),
        (lambda: O.SGD(learning_rate="fast"), ValueError, r"learning_rate='fast'"),
        (lambda: O.SGD(learning_rate=-0.1), ValueError, r"`learning_rate`.*learning_rate=-0.1"),
        (lambda: O.SGD(learning_rate=float("nan")), ValueError, r"`learning_rate`"),
        (lambda: O.SGD(learning_rate=True), ValueError, r"learning_rate=True"),
        (lambda: O.Adam(beta_1=1.0), ValueError, r"`beta_1`.*beta_1=1.0"),
        (lambda: O.Adam(beta_2=-0.5), ValueError, r"`beta_2`.*beta_2=-0.5"),
        (lambda: O.Adam(epsilon=-1e-7), ValueError, r"`epsilon`"),
        (lambda: O.Adam(amsgrad="yes"), TypeError, r"`amsgrad`.*amsgrad='yes'"),
        (lambda: O.AdamW(weight_decay=None), ValueError, r"weight_decay=None"),
        (lambda: O.RMSprop(rho=1.5), ValueError, r"`rho`.*rho=1.5"),
        (lambda: O.RMSprop(centered=None), TypeError, r"`centered`"),
        (lambda: O.Adagrad(initial_accumulator_value=-1.0), ValueError, r"initial_accumulator_value=-1.0"),
        (lambda: O.SGD(weight_decay=-0.1), ValueError, r"`weight_decay`.*weight_decay=-0.1"),
        (lambda: O.SGD(clipnorm=-1.0), ValueError, r"`clipnorm`.*clipnorm=-1.0"),
        (lambda: O.SGD(clipvalue="1"), ValueError, r"`clipvalue`"),
        (lambda: O.SGD(clipnorm=1.0, clipvalue=1.0), ValueError, r"Only one of `clipnorm`, `clipvalue`"),
        (lambda: O.Adam(clipnorm=1.0, global_clipnorm=1.0), ValueError, r"Only one of"),
        (lambda: O.Adam(use_ema="yes"), TypeError, r"`use_ema`.*'yes'"),
        (lambda: O.Adam(loss_scale_factor=-2.0), ValueError, r"`loss_scale_factor`.*loss_scale_factor=-2.0"),
        (lambda: O.Adam(gradient_accumulation_steps=1), ValueError, r"`gradient_accumulation_steps`.*=1"),
        (lambda: O.Adam(ema_overwrite_frequency=0), ValueError, r"ema_overwrite_frequency=0"),
        (lambda: O.Adam(name=""), ValueError, r"`name`"),
        (lambda: O.Adam(lr=0.1), ValueError, r"not recognized.*'lr'"),
        (lambda: O.SGD(learning_rate=lambda a, b: 0.1), TypeError, r"callable learning rate"),
        (lambda: S.ExponentialDecay(0.1, 0, 0.9), ValueError, r"`decay_steps`.*decay_steps=0"),
        (lambda: S.ExponentialDecay(0.1, 10, 0.9, staircase="no"), TypeError, r"`staircase`"),
        (lambda: S.PiecewiseConstantDecay([1, 2], [0.1, 0.2]), ValueError, r"1 less than the length of values"),
        (lambda: S.PiecewiseConstantDecay([2, 1], [0.1, 0.2, 0.3]), ValueError, r"strictly increasing"),
        (lambda: S.CosineDecay(0.1, 10, alpha=2.0), ValueError, r"`alpha`"),
    ],
)
def test_argument_errors(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()


def test_decay_argument_warns_and_is_ignored():
    with pytest.warns(UserWarning, match="`decay` is no longer supported"):
        opt = O.SGD(decay=0.1)
    assert "decay" not in opt.get_config()


def test_apply_errors_leave_everything_unchanged():
    a, b = var([1.0, 2.0], "a"), var([3.0], "b")
    opt = O.Adam()
    with pytest.raises(ValueError, match=r"`grads\[1\]`.*expected \(1,\).*grads\[1\].shape=\(2,\)"):
        opt.apply([f64([1.0, 1.0]), f64([1.0, 1.0])], [a, b])
    with pytest.raises(ValueError, match="same length"):
        opt.apply([f64([1.0, 1.0])], [a, b])
    with pytest.raises(TypeError, match=r"`grads\[0\]`"):
        opt.apply([[1.0, 1.0]], [a])
    with pytest.raises(TypeError, match=r"`variables\[0\]`"):
        opt.apply([f64([1.0])], [np.zeros(1)])
    with pytest.raises(TypeError, match="`var_names`"):
        opt.exclude_from_weight_decay(var_names="bias")
    with pytest.raises(ValueError, match="`iterations`"):
        opt.iterations = -1
    assert opt.iterations == 0 and slots(opt) == [] and a.value.tolist() == [1.0, 2.0]


def test_a_user_subclass_is_serialized_as_a_custom_object_and_refused_on_load():
    """A subclass of a built-in is not the built-in: written in Keras's custom-object form, never rebuilt."""

    class MyAdam(O.Adam):
        pass

    config = O.serialize(MyAdam())
    assert (config["module"], config["class_name"], config["registered_name"]) == (__name__, "MyAdam", "MyAdam")
    with pytest.raises(ValueError, match="not a gpulayers built-in optimizer"):
        O.deserialize(config)
    assert O.serialize(O.Adam())["module"] == "keras.optimizers"


def test_schedules_take_a_negative_step_as_keras():
    # Keras 3.15.1 extends each formula below step 0 (values from Keras on JAX, steps -3, -1, 0, 3).
    S = O.schedules
    cases = [
        (S.ExponentialDecay(0.1, 10, 0.5), [0.123114, 0.107177, 0.1, 0.081225]),
        (S.ExponentialDecay(0.1, 10, 0.5, staircase=True), [0.2, 0.2, 0.1, 0.1]),
        (S.InverseTimeDecay(0.1, 10, 0.5), [0.117647, 0.105263, 0.1, 0.086957]),
        (S.PiecewiseConstantDecay([5, 10], [0.1, 0.05, 0.01]), [0.1, 0.1, 0.1, 0.1]),
        (S.PolynomialDecay(0.1, 10, 0.01), [0.127, 0.109, 0.1, 0.073]),
        (S.PolynomialDecay(0.1, 10, 0.01, cycle=True), [-np.inf, -np.inf, 0.1, 0.073]),
        (S.CosineDecay(0.1, 10), [0.079389, 0.097553, 0.1, 0.079389]),
        (S.CosineDecay(0.1, 10, warmup_target=0.2, warmup_steps=5), [0.04, 0.08, 0.1, 0.16]),
    ]
    for schedule, want in cases:
        np.testing.assert_allclose([schedule(s) for s in (-3, -1, 0, 3)], want, rtol=1e-5, err_msg=type(schedule).__name__)
    with pytest.raises(ValueError, match="finite"):
        S.ExponentialDecay(0.1, 10, 0.5)(float("nan"))


def test_missing_gradients_are_skipped_with_keras_warning():
    from gpulayers.variables import Variable

    opt = O.SGD(learning_rate=0.5)
    v, w = Variable(np.ones(2, np.float32), name="v"), Variable(np.ones(2, np.float32), name="w")
    with pytest.warns(UserWarning, match=r"Gradients do not exist for variables \['v'\] when minimizing the loss"):
        opt.apply([None, np.ones(2, np.float32)], [v, w])
    np.testing.assert_array_equal(v.numpy(), [1.0, 1.0])
    np.testing.assert_array_equal(w.numpy(), [0.5, 0.5])


def test_loss_scale_factor_scales_the_loss_and_unscales_the_gradients():
    # Keras 3.15: the step differentiates loss * factor; apply divides the gradients by it before clipping.
    import gpulayers
    from gpulayers import layers

    rng = np.random.default_rng(9)
    x, y = rng.standard_normal((16, 4)).astype(np.float32), rng.standard_normal((16, 1)).astype(np.float32)
    weights = []
    for factor in (None, 1024.0, 3.0):
        gpulayers.set_random_seed(3)
        model = gpulayers.Sequential([layers.Input((4,)), layers.Dense(3, activation="tanh"), layers.Dense(1)])
        model.compile(optimizer=O.SGD(0.1, loss_scale_factor=factor, clipnorm=0.5), loss="mse")
        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
        assert np.isfinite(history.history["loss"]).all()
        weights.append(model.get_weights())
        if factor is not None:
            assert model.optimizer.get_config()["loss_scale_factor"] == factor
            assert float(model.optimizer.scale_loss(np.float32(2.0))) == 2.0 * factor
    for a, b in zip(weights[0], weights[1]):  # a power of two: the same bits
        np.testing.assert_array_equal(a, b)
    for a, b in zip(weights[0], weights[2]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="loss_scale_factor"):
        O.SGD(loss_scale_factor=0.0)


def test_gradient_accumulation_applies_the_mean_every_n_calls():
    # Keras 3.15: the gradients of n calls are summed; the n-th call applies their mean; iterations counts updates.
    from gpulayers.variables import Variable

    w = Variable(np.array([1.0, -1.0]), name="w")
    opt = O.SGD(learning_rate=0.5, gradient_accumulation_steps=3)
    grads = [np.array([0.3, 0.6]), np.array([0.9, -0.3]), np.array([0.0, 0.3]), np.array([1.2, 1.2])]
    expected = np.array([1.0, -1.0])
    for i, g in enumerate(grads):
        opt.apply([g], [w])
        if i == 2:
            expected = expected - 0.5 * (grads[0] + grads[1] + grads[2]) / 3
        np.testing.assert_allclose(w.numpy(), expected, rtol=1e-15)
    assert int(opt.iterations) == 1 and int(opt.variables[0].numpy()) == 4  # updates vs calls
    np.testing.assert_allclose(opt.variables[2].numpy(), grads[3])  # the accumulator holds the 4th call
    assert opt.get_config()["gradient_accumulation_steps"] == 3
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        O.SGD(gradient_accumulation_steps=1)


@pytest.mark.parametrize("name, kwargs", [("SGD", dict(learning_rate=0.1, momentum=0.9)), ("Adam", dict(learning_rate=0.01)),
                                          ("AdamW", dict(learning_rate=0.01, weight_decay=0.1))])
def test_gradient_accumulation_equals_keras(name, kwargs):
    keras = keras_or_skip()
    from gpulayers.variables import Variable

    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((3, 2)).astype(np.float32)
    theirs, ours = (getattr(m, name)(gradient_accumulation_steps=3, **kwargs) for m in (keras.optimizers, O))
    kv, gv = keras.Variable(w0.copy(), name="w"), Variable(w0.copy(), name="w")
    for _ in range(7):
        g = rng.standard_normal((3, 2)).astype(np.float32)
        theirs.apply_gradients([(keras.ops.convert_to_tensor(g), kv)])
        ours.apply_gradients([(g, gv)])
    assert int(keras.ops.convert_to_numpy(theirs.iterations)) == int(ours.iterations) == 2
    assert [v.name for v in theirs.variables] == [v.name for v in ours.variables]
    for a, b in zip(theirs.variables, ours.variables):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.name)


@pytest.mark.parametrize("kwargs", [dict(gradient_accumulation_steps=2), dict(use_ema=True, gradient_accumulation_steps=2)],
                         ids=str)
def test_gradient_accumulation_and_ema_state_move_both_ways_in_keras_files(tmp_path, kwargs):
    # The accumulators and averages are optimizer variables (first after iteration and learning_rate, as Keras
    # builds them): a mid-accumulation .keras file resumes on either side.
    keras = keras_or_skip()
    import gpulayers
    from gpulayers import layers

    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((10, 3)).astype(np.float32), rng.standard_normal((10, 1)).astype(np.float32)
    ours = gpulayers.Sequential([layers.Input((3,)), layers.Dense(2), layers.Dense(1)])
    ours.compile(optimizer=O.Adam(0.01, **kwargs), loss="mse")
    ours.fit(x, y, batch_size=2, epochs=1, verbose=0, shuffle=False)  # 5 calls: an accumulation under way
    ours.save(tmp_path / "g.keras")
    theirs = keras.saving.load_model(tmp_path / "g.keras")
    assert [v.name for v in theirs.optimizer.variables] == [v.name for v in ours.optimizer.variables]
    for a, b in zip(theirs.optimizer.variables, ours.optimizer.variables):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), b.numpy(), rtol=1e-6, err_msg=a.name)
    theirs.save(tmp_path / "k.keras")
    again = gpulayers.saving.load_model(tmp_path / "k.keras")
    for a, b in zip(again.optimizer.variables, ours.optimizer.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, err_msg=a.name)
    assert int(again.optimizer.iterations) == 2 and again.optimizer.get_config()["gradient_accumulation_steps"] == 2


def test_ema_hand_computed_and_finalized():
    # Keras 3.15: average = m * average + (1 - m) * w after each update (m = 0 at the first), and
    # finalize_variable_values (fit's end) gives the variables their averages.
    from gpulayers.variables import Variable

    w = Variable(np.array([1.0, 2.0]), name="w")
    opt = O.SGD(learning_rate=0.5, use_ema=True, ema_momentum=0.75)
    average, value = None, np.array([1.0, 2.0])
    for g in (np.array([1.0, 0.0]), np.array([0.0, 2.0]), np.array([2.0, 2.0])):
        opt.apply([g], [w])
        value = value - 0.5 * g
        average = value.copy() if average is None else 0.75 * average + 0.25 * value
        np.testing.assert_allclose(w.numpy(), value)
        np.testing.assert_allclose(opt.variables[2].numpy(), average)
    assert opt.variables[2].name == "w_average"
    opt.finalize_variable_values([w])
    np.testing.assert_allclose(w.numpy(), average)
    with pytest.raises(ValueError, match="does not match the length"):
        opt.finalize_variable_values([w, Variable(np.zeros(2), name="other")])


@pytest.mark.parametrize("kwargs", [dict(use_ema=True), dict(use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=3),
                                    dict(use_ema=True, gradient_accumulation_steps=2)], ids=str)
def test_ema_equals_keras(kwargs):
    keras = keras_or_skip()
    from gpulayers.variables import Variable

    rng = np.random.default_rng(1)
    w0 = rng.standard_normal((3, 2)).astype(np.float32)
    theirs, ours = keras.optimizers.Adam(0.01, **kwargs), O.Adam(0.01, **kwargs)
    kv, gv = keras.Variable(w0.copy(), name="w"), Variable(w0.copy(), name="w")
    for _ in range(7):
        g = rng.standard_normal((3, 2)).astype(np.float32)
        theirs.apply_gradients([(keras.ops.convert_to_tensor(g), kv)])
        ours.apply_gradients([(g, gv)])
    assert [v.name for v in theirs.variables] == [v.name for v in ours.variables]
    for a, b in zip(theirs.variables, ours.variables):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.name)
    theirs.finalize_variable_values([kv])
    ours.finalize_variable_values([gv])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kv), gv.numpy(), rtol=1e-5, atol=1e-6)


def test_fit_ends_on_the_moving_averages():
    import gpulayers
    from gpulayers import layers

    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((12, 3)).astype(np.float32), rng.standard_normal((12, 1)).astype(np.float32)
    model = gpulayers.Sequential([layers.Input((3,)), layers.Dense(1)])
    model.compile(optimizer=O.SGD(0.1, use_ema=True), loss="mse")
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    averages = [v.numpy() for v in model.optimizer.variables if v.name.endswith("_average")]
    for w, average in zip(model.get_weights(), averages):
        np.testing.assert_array_equal(w, average)


def test_tensorboard_reads_iterations_under_gradient_accumulation(tmp_path):
    # optimizer.iterations is then a tensor of the updates (Keras's): TensorBoard takes it as an int.
    import gpulayers
    from gpulayers import layers

    model = gpulayers.Sequential([layers.Input((3,)), layers.Dense(1)])
    model.compile(optimizer=O.SGD(gradient_accumulation_steps=2), loss="mse")
    board = gpulayers.callbacks.TensorBoard(str(tmp_path), write_steps_per_second=True)
    model.fit(np.ones((8, 3)), np.ones((8, 1)), epochs=2, batch_size=2, verbose=0, validation_split=0.25,
              callbacks=[board])
    assert board._iterations() == 3 and list((tmp_path / "train").iterdir())


# ---------------------------------------------------------------- schedules that overflow

@pytest.mark.parametrize("schedule, step, want", [
    (S.ExponentialDecay(0.1, 1, 2.0), 2000, math.inf),  # Python's 2.0 ** 2000 raises OverflowError
    (S.ExponentialDecay(0.1, 1, 2.0, staircase=True), 2000, math.inf),
    (S.ExponentialDecay(0.1, 1e-300, 2.0, staircase=True), 1, math.inf),  # floor(inf) raises OverflowError
    (S.ExponentialDecay(0.0, 1, 2.0), 2000, math.nan),  # 0 * inf, as Keras
    (S.ExponentialDecay(0.1, 1e-300, 0.5), 1, 0.0),
    (S.InverseTimeDecay(0.1, 1e-300, 2.0, staircase=True), 1, 0.1 / (1 + 2e300)),
    (S.InverseTimeDecay(0.1, 1e-300, 1e300), 10**6, 0.0),
    (S.PolynomialDecay(0.1, 1e-300, power=1e300, cycle=True), 5, 0.0001),
    (S.CosineDecay(0.1, 1e300, warmup_target=1e300, warmup_steps=1e300), 10**18, 1e18),
    (S.PiecewiseConstantDecay([1e300], [1e300, 0.1]), 5, 1e300),
])
def test_schedules_overflow_to_inf_as_keras_instead_of_raising(schedule, step, want):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nor warn
        got = schedule(step)
    assert isinstance(got, float)
    assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, rel=1e-12)


def test_an_infinite_scheduled_rate_trains_to_nan_and_terminate_on_nan_stops(capsys):
    model = Sequential([Input((4,)), Dense(2, activation="softmax")])
    # 0.1 * 1e100 ** step: inf from the 4th step; Keras's rate is inf there too
    model.compile(optimizer=O.SGD(S.ExponentialDecay(0.1, 1, 1e100)), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 4)).astype("float32"), rng.integers(0, 2, 64)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        history = model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[callbacks.TerminateOnNaN()])
    assert model.optimizer._learning_rate(4) == math.inf
    assert len(history.history["loss"]) == 1 and math.isnan(history.history["loss"][0])
    assert "invalid loss nan" in capsys.readouterr().out.lower()
