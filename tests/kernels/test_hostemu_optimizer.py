"""backends/kernels/optimizer.cu on the host emulator, against the optimizers' own update rules.

Each multi-tensor kernel updates a set of variables of mixed sizes (empty,
one element, ragged chunks) in place through a table packed by
``backends.multi_tensor.tables``. The reference is the optimizer's
``_update_step`` run by numpy on copies: the kernel must give the same bits
(the emulator does not contract to FMA, and every constant reaches the
kernel rounded as numpy rounds it). Each array sits between NaN guard zones
that must come out untouched.
"""

import math

import numpy as np
import pytest

from backends import multi_tensor
from emu_helpers import LAUNCHES, assert_same_bits, expr, i32
from gpulayers.optimizers import SGD, Adagrad, Adam, AdamW, RMSprop

pytestmark = pytest.mark.kernels

KERNELS = {"sgd": "mt_sgd", "adam": "mt_adam", "rmsprop": "mt_rmsprop", "adagrad": "mt_adagrad"}  # rule -> kernel
SIZES = (5, 0, 1, 4099, 64)  # ragged chunks, an empty variable, one element
GUARD = 16

CONFIGS = {
    "sgd": lambda: SGD(learning_rate=0.1),
    "sgd-momentum": lambda: SGD(learning_rate=0.1, momentum=0.9),
    "sgd-nesterov": lambda: SGD(learning_rate=0.05, momentum=0.7, nesterov=True),
    "adam": lambda: Adam(learning_rate=0.01),
    "adam-amsgrad": lambda: Adam(learning_rate=0.01, beta_1=0.8, amsgrad=True),
    "adamw": lambda: AdamW(learning_rate=0.01, weight_decay=0.1),
    "rmsprop": lambda: RMSprop(learning_rate=0.01),
    "rmsprop-centered-momentum": lambda: RMSprop(learning_rate=0.01, momentum=0.5, centered=True),
    "adagrad": lambda: Adagrad(learning_rate=0.1),
}


def _guarded(values):
    """``values`` copied into the middle of a NaN-filled buffer; returns (buffer, the view)."""
    buf = np.full(values.size + 2 * GUARD, np.nan, values.dtype)
    view = buf[GUARD:GUARD + values.size]
    view[...] = values.ravel()
    return buf, view.reshape(values.shape)


def _state(rng, slot, shape, dtype):
    # As the rules keep them: squares are non-negative, and RMSprop's centred variance stays positive.
    if slot in ("velocity", "velocity_hat", "accumulator"):
        return (0.5 + rng.random(shape)).astype(dtype)
    if slot == "average_gradient":
        return (0.1 * rng.standard_normal(shape)).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _launch(emu, rule, groups, decay, constants, dtype, launch, chunk):
    grid_of, block = LAUNCHES[launch]
    k = emu["optimizer"].kernel(expr(KERNELS[rule], dtype))
    for table, chunks in multi_tensor.tables(groups, decay, lambda a: a.ctypes.data, chunk=chunk):
        k(grid_of(chunks * block), block, (table, i32(chunk)) + constants, guard=False)


@pytest.mark.parametrize("launch", sorted(LAUNCHES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_kernel_gives_the_bits_of_the_update_rule(emu, config, dtype, launch):
    rng = np.random.default_rng(7)
    opt = CONFIGS[config]()
    opt._iterations = 3  # Adam's bias corrections depend on the step
    lr = opt.learning_rate
    rule, constants, slots = opt._fused_rule(lr)
    constants["wd"] = opt.weight_decay or 0.0
    decay = [i % 2 == 0 for i in range(len(SIZES))]  # every other variable excluded from weight decay
    groups, buffers, want = [], [], []
    for i, n in enumerate(SIZES):
        shape = (n,) if n < 64 else (8, n // 8)
        w = rng.standard_normal(shape).astype(dtype)
        g = rng.standard_normal(shape).astype(dtype)
        state = {s: _state(rng, s, shape, dtype) for s in slots if s is not None}
        ref_w = w - w * opt.weight_decay * lr if opt.weight_decay and decay[i] else w
        new_w, new_state = opt._update_step(g, ref_w, lr, {k: v.copy() for k, v in state.items()})
        want.append((new_w, new_state))
        arrays = [_guarded(w), _guarded(g)] + [None if s is None else _guarded(state[s]) for s in slots]
        buffers.append(arrays)
        groups.append(tuple(None if a is None else a[1] for a in arrays))
    dtype_constants = multi_tensor.kernel_constants(rule, constants, dtype)
    _launch(emu, rule, groups, decay, dtype_constants, dtype, launch, chunk=1000)
    for i, ((new_w, new_state), arrays, group) in enumerate(zip(want, buffers, groups)):
        assert_same_bits(group[0], new_w.astype(dtype), f"{config} variable {i}")
        for s, a in zip(slots, group[2:]):
            if s is not None:
                assert_same_bits(a, new_state[s].astype(dtype), f"{config} {s} {i}")
        for a in arrays:
            if a is not None:
                assert np.isnan(a[0][:GUARD]).all() and np.isnan(a[0][GUARD + a[1].size:]).all(), f"{config} {i}: guard"


def test_every_rule_has_a_kernel(emu):
    assert sorted(KERNELS) == sorted(multi_tensor.RULES)
    assert sorted(emu["optimizer"].names) == sorted(expr(k, t) for k in KERNELS.values() for t in (np.float32, np.float64))


def test_tables_split_past_max_tensors_and_skip_empty_variables():
    arrays = [np.zeros(n, np.float32) for n in [3] * (multi_tensor.MAX_TENSORS + 2) + [0]]
    groups = [(a, a, None, None, None) for a in arrays]
    tables = multi_tensor.tables(groups, [True] * len(groups), lambda a: 1000 + len(a), chunk=2)
    assert [int(t["count"]) for t, _ in tables] == [multi_tensor.MAX_TENSORS, 2]
    assert [c for _, c in tables] == [2 * multi_tensor.MAX_TENSORS, 4]
    first = tables[0][0]
    assert list(first["chunk_start"][:4]) == [0, 2, 4, 6] and int(first["chunk_start"][-1]) == 64
    assert int(first["decay_mask"]) == 2**32 - 1 and int(tables[1][0]["decay_mask"]) == 3
    assert int(first["ptr"][2, 0]) == 0 and int(first["ptr"][0, 0]) == 1003
    assert multi_tensor.TABLE_DTYPE.itemsize == 1808  # sizeof(struct MtTable), as the emulator reports it


def test_adam_alpha_is_the_rules_own():
    opt = Adam(learning_rate=0.002, beta_1=0.8, beta_2=0.95)
    opt._iterations = 4
    _, constants, _ = opt._fused_rule(0.002)
    assert constants["alpha"] == 0.002 * math.sqrt(1 - 0.95**5) / (1 - 0.8**5)
