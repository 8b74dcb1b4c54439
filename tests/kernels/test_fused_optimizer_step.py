"""Optimizer.apply on CupyOps: one multi-tensor launch per 32 variables, the bits of the per-variable rule.

The counting stand-in for cupy (kernels on the host emulator) runs the
optimizers' fused path; the same steps on NumpyOps, which keeps the
per-variable expressions, are the reference. Constraints and subclasses with
their own rule take the per-variable path on the device too.
"""

import numpy as np
import pytest

from step_counting import counting_backend
from test_hostemu_optimizer import CONFIGS

pytestmark = pytest.mark.kernels

SHAPES = [(3, 3, 2, 4), (4,), (7, 5), (1,)] * 9 + [(0,)]  # 36 variables with elements: two launches


def _variables(ops, dtype, constraint=None):
    from gpulayers.variables import Variable

    rng = np.random.default_rng(1)
    out = []
    for i, shape in enumerate(SHAPES):
        v = Variable(ops.asarray(rng.standard_normal(shape).astype(dtype)), name=f"v{i}",
                     constraint=constraint if i == 3 else None)
        out.append(v)
    return out


def _grads(ops, step, dtype):
    rng = np.random.default_rng(100 + step)
    return [ops.asarray(rng.standard_normal(shape).astype(dtype)) for shape in SHAPES]


def _run(make_optimizer, ops, dtype, steps=3, constraint=None):
    opt = make_optimizer()
    opt.exclude_from_weight_decay(var_names=["v1"])
    variables = _variables(ops, dtype, constraint)
    for step in range(steps):
        opt.apply(_grads(ops, step, dtype), variables)
    return opt, [ops.to_numpy(v.value) for v in variables], [ops.to_numpy(a) for a in opt.variables]


def _reference(make_optimizer, dtype, constraint=None):
    from backends.numpy_ops import NumpyOps

    return _run(make_optimizer, NumpyOps(), dtype, constraint=constraint)


def _same(got, want):
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


@pytest.fixture
def counter(monkeypatch, emu):
    return counting_backend(monkeypatch)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_fused_step_equals_the_per_variable_rule(counter, config, dtype):
    from backends import get_ops

    _, want_w, want_s = _reference(CONFIGS[config], dtype)
    ops = get_ops()
    opt = CONFIGS[config]()
    opt.exclude_from_weight_decay(var_names=["v1"])
    variables = _variables(ops, dtype)
    with counter.paused():
        grads = [_grads(ops, step, dtype) for step in range(3)]
    for step in range(3):
        counter.reset()
        opt.apply(grads[step], variables)
        # After the first step (which creates the state): two launches (32 variables per table), nothing else.
        rule = config.split("-")[0].replace("adamw", "adam")
        assert step == 0 or [name.split("<")[0] for _, name in counter.log] == [f"mt_{rule}"] * 2
    assert opt.iterations == 3
    with counter.paused():
        _same([ops.to_numpy(v.value) for v in variables], want_w)
        _same([ops.to_numpy(a) for a in opt.variables], want_s)


def test_constraints_and_own_rules_take_the_per_variable_path(counter):
    from backends import get_ops
    from gpulayers import constraints
    from gpulayers.optimizers import SGD

    class Halved(SGD):
        def _update_step(self, g, w, lr, state):
            return super()._update_step(g * 0.5, w, lr, state)

    ops = get_ops()
    for make, constraint in ((lambda: SGD(0.1, momentum=0.9), constraints.NonNeg()), (lambda: Halved(0.1), None)):
        _, want_w, _ = _reference(make, np.float32, constraint)
        counter.reset()
        _, got_w, _ = _run(make, ops, np.float32, constraint=constraint)
        assert not any(name.startswith("mt_") for _, name in counter.log)
        with counter.paused():
            _same(got_w, want_w)


def test_clipping_runs_before_the_fused_step(counter):
    from backends import get_ops
    from gpulayers.optimizers import Adam

    def make():
        return Adam(0.01, global_clipnorm=1.0)

    _, want_w, want_s = _reference(make, np.float32)
    counter.reset()
    _, got_w, got_s = _run(make, get_ops(), np.float32)
    assert sum(name == "mt_adam<float>" for _, name in counter.log) == 6
    with counter.paused():
        _same(got_w, want_w)
        _same(got_s, want_s)


def test_arrays_the_kernel_cannot_update_in_place_take_the_per_variable_path(counter):
    # A Fortran-ordered weight (what cupy.asarray keeps of a transposed numpy array) and one variable given
    # twice: no multi-tensor launch, and the results of the per-variable rule.
    from backends import get_ops
    from counting_cupy import DeviceArray
    from gpulayers.optimizers import SGD
    from gpulayers.variables import Variable

    ops = get_ops()
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    g = np.full((2, 3), 0.5, np.float32)
    fortran = Variable.from_array(DeviceArray(np.asfortranarray(w), counter), name="f")
    counter.reset()
    SGD(0.1, momentum=0.9).apply([ops.asarray(g)], [fortran])
    assert not any(name.startswith("mt_") for _, name in counter.log)
    with counter.paused():
        np.testing.assert_allclose(ops.to_numpy(fortran.value), w - 0.1 * g, rtol=1e-6)
    same = Variable(ops.asarray(w), name="s")
    counter.reset()
    SGD(0.1).apply([ops.asarray(g), ops.asarray(g)], [same, same])
    assert not any(name.startswith("mt_") for _, name in counter.log)
    with counter.paused():
        np.testing.assert_allclose(ops.to_numpy(same.value), w - 0.1 * g, rtol=1e-6)  # the last update wins


def test_assign_never_shares_an_array_between_variables(counter):
    from backends import get_ops
    from gpulayers.optimizers import SGD
    from gpulayers.variables import Variable

    ops = get_ops()
    online = Variable(ops.asarray(np.ones(4, np.float32)), name="online")
    target = Variable(ops.asarray(np.zeros(4, np.float32)), name="target")
    target.assign(online)
    SGD(0.1).apply([ops.asarray(np.ones(4, np.float32))], [online])  # in place, on the device
    with counter.paused():
        np.testing.assert_array_equal(ops.to_numpy(target.value), np.ones(4, np.float32))
        np.testing.assert_allclose(ops.to_numpy(online.value), np.full(4, 0.9, np.float32))
