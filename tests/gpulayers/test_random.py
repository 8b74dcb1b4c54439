"""Tests for gpulayers.random: Keras's seeding rules, distributions, validation, dropout's gradient."""

import math

import numpy as np
import pytest
from helpers import check_op_gradients

from gpulayers import autodiff, ops, utils
from gpulayers import random as R
from gpulayers.autodiff import Tensor


@pytest.fixture(autouse=True)
def fixed_global_seed(monkeypatch):
    # The process-wide generator is put back afterwards: other tests keep their own draws.
    monkeypatch.setattr(utils, "_rng", utils.host_rng())
    utils.set_random_seed(1234)


DRAWS = [
    ("normal", lambda seed: R.normal((50,), seed=seed)),
    ("uniform", lambda seed: R.uniform((50,), seed=seed)),
    ("truncated_normal", lambda seed: R.truncated_normal((50,), seed=seed)),
    ("randint", lambda seed: R.randint((50,), 0, 1000, seed=seed)),
    ("categorical", lambda seed: R.categorical(np.zeros((2, 100)), 25, seed=seed)),
    ("dropout", lambda seed: R.dropout(np.ones(50), 0.5, seed=seed)),
    ("shuffle", lambda seed: R.shuffle(np.arange(50), seed=seed)),
]
DRAW_IDS = [d[0] for d in DRAWS]


@pytest.mark.parametrize("name,draw", DRAWS, ids=DRAW_IDS)
def test_seeding_rules(name, draw):
    # An int: the same draws at every call; None: different ones; a SeedGenerator: advances.
    a, b = draw(7).numpy(), draw(7).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(draw(7).numpy(), draw(8).numpy())
    assert not np.array_equal(draw(None).numpy(), draw(None).numpy())
    gen = R.SeedGenerator(7)
    first, second = draw(gen).numpy(), draw(gen).numpy()
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, a)  # SeedGenerator(7)'s first draw is seed=7's
    assert isinstance(draw(3), Tensor)


@pytest.mark.parametrize("name,draw", DRAWS, ids=DRAW_IDS)
def test_set_random_seed_makes_unseeded_draws_reproducible(name, draw):
    utils.set_random_seed(99)
    first = [draw(None).numpy(), draw(R.SeedGenerator()).numpy()]
    utils.set_random_seed(99)
    again = [draw(None).numpy(), draw(R.SeedGenerator()).numpy()]
    for x, y in zip(first, again):
        np.testing.assert_array_equal(x, y)


def test_seed_generator_counter_config_and_errors():
    gen = R.SeedGenerator(5, name="gen")
    seeds = [gen.next() for _ in range(4)]
    assert len(set(seeds)) == 4 and all(isinstance(s, int) and 0 <= s < 2**63 for s in seeds)
    assert gen.state.tolist() == [5, 4]
    assert [R.SeedGenerator(5).next() for _ in range(1)] == seeds[:1]
    assert gen.get_config() == {"seed": 5, "name": "gen"}
    assert R.SeedGenerator.from_config(gen.get_config()).next() == seeds[0]
    assert R.SeedGenerator().get_config()["seed"] is None
    assert R.SeedGenerator(-3).next() != R.SeedGenerator(3).next()
    with pytest.raises(ValueError, match=r"Argument `seed` must be an integer. Received: seed=1.5"):
        R.SeedGenerator(1.5)
    with pytest.raises(ValueError, match=r"`seed`.*SeedGenerator.*Received: seed='a'"):
        R.normal((2,), seed="a")
    with pytest.raises(ValueError, match="seed=True"):
        R.uniform((2,), seed=True)


def test_normal_and_uniform_statistics_and_dtypes():
    x = R.normal((200_000,), mean=3.0, stddev=2.0, seed=1).numpy()
    assert x.dtype == np.float32
    assert abs(x.mean() - 3.0) < 0.02 and abs(x.std() - 2.0) < 0.02
    u = R.uniform((200_000,), minval=-2.0, maxval=5.0, seed=2, dtype="float64").numpy()
    assert u.dtype == np.float64 and u.min() >= -2.0 and u.max() < 5.0
    assert abs(u.mean() - 1.5) < 0.02 and abs(u.var() - 49 / 12) < 0.05
    h = R.uniform((100_000,), minval=0.0, maxval=1.0, dtype="float16", seed=3).numpy()
    assert h.dtype == np.float16 and h.max() < 1.0  # the bound stays exclusive after rounding
    assert R.normal((2, 3), dtype="float16", seed=1).dtype == np.float16
    assert R.normal(4, seed=1).shape == (4,)


def test_truncated_normal_stays_within_two_stddev():
    x = R.truncated_normal((100_000,), mean=1.0, stddev=0.5, seed=4).numpy()
    assert x.min() >= 0.0 and x.max() <= 2.0
    # A normal truncated at +-2 sigma has standard deviation 0.8796 sigma.
    assert abs(x.std() / 0.5 - 0.8796) < 0.01 and abs(x.mean() - 1.0) < 0.01
    assert R.truncated_normal((3, 4), seed=4).shape == (3, 4)


def test_randint_range_and_dtype():
    x = R.randint((10_000,), -3, 4, seed=5).numpy()
    assert x.dtype == np.int32 and set(np.unique(x).tolist()) == set(range(-3, 4))
    assert R.randint((3,), 0, 256, dtype="uint8", seed=5).dtype == np.uint8
    with pytest.raises(ValueError, match="integer `dtype`"):
        R.randint((3,), 0, 5, dtype="float32")
    with pytest.raises(ValueError, match=r"minval=5, maxval=5"):
        R.randint((3,), 5, 5)
    with pytest.raises(ValueError, match="uint8"):
        R.randint((3,), 0, 300, dtype="uint8")
    with pytest.raises(TypeError, match="`maxval`"):
        R.randint((3,), 0, 2.5)


def test_categorical_frequencies():
    with np.errstate(divide="ignore"):  # log(0) = -inf: probability 0
        logits = np.log(np.array([[0.2, 0.0, 0.5, 0.3], [0.0, 0.0, 0.0, 1.0]]))
    x = R.categorical(logits, 20_000, seed=6).numpy()
    assert x.shape == (2, 20_000) and x.dtype == np.int32
    freq = np.bincount(x[0], minlength=4) / 20_000
    np.testing.assert_allclose(freq, [0.2, 0.0, 0.5, 0.3], atol=0.015)
    assert np.all(x[1] == 3)  # classes of probability 0 never come out
    assert R.categorical(np.zeros((1, 3)), 4, dtype="int64", seed=1).dtype == np.int64
    with pytest.raises(ValueError, match="2-D"):
        R.categorical(np.zeros(3), 2)
    with pytest.raises(ValueError, match="num_samples"):
        R.categorical(np.zeros((1, 3)), -1)


def test_dropout_values_and_gradient():
    x = np.random.default_rng(7).normal(size=(40, 50))
    y = R.dropout(x, 0.3, seed=8).numpy()
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.02
    np.testing.assert_allclose(y[kept], x[kept] / 0.7)
    # With an int seed every call draws the same mask, so finite differences see one function.
    check_op_gradients(lambda t: R.dropout(t, 0.4, seed=9), x[:4, :6])
    check_op_gradients(lambda t: R.dropout(t, 0.4, seed=9) * t, x[:4, :6])
    t = ops.convert_to_tensor(x[:4, :6])
    with autodiff.GradientTape() as tape:
        tape.watch(t)
        out = R.dropout(t, 0.5, seed=R.SeedGenerator(3))
    g = tape.gradient(ops.sum(out), t)
    np.testing.assert_array_equal(g, (out.numpy() != 0) * 2.0)  # the mask of this call, kept in the closure


def test_dropout_noise_shape_edges_and_dtypes():
    x = np.ones((4, 6, 3), dtype=np.float32)
    y = R.dropout(x, 0.5, noise_shape=(None, 1, 3), seed=10).numpy()
    assert y.dtype == np.float32
    assert np.all(y == y[:, :1, :])  # one draw broadcast over axis 1
    np.testing.assert_array_equal(R.dropout(x, 0.0).numpy(), x)
    np.testing.assert_array_equal(R.dropout(x, 1.0).numpy(), np.zeros_like(x))
    h = R.dropout(np.full((1000,), 60000.0, dtype=np.float16), 0.999, seed=1).numpy()
    assert h.dtype == np.float16 and np.all(np.isin(h, [0.0, np.inf]))  # float16 overflow gives inf, as Keras
    for bad in (-0.1, 1.5, "a", True):
        with pytest.raises(ValueError, match="`rate`"):
            R.dropout(x, bad)
    with pytest.raises(ValueError, match="noise_shape"):
        R.dropout(x, 0.5, noise_shape=(4, 2, 3))
    with pytest.raises(ValueError, match="noise_shape"):
        R.dropout(x, 0.5, noise_shape=(4, 6))


def test_shuffle_permutes_whole_slices_and_is_differentiable():
    x = np.arange(40).reshape(8, 5)
    y = R.shuffle(x, seed=11).numpy()
    assert sorted(map(tuple, y)) == sorted(map(tuple, x))  # rows kept whole
    assert not np.array_equal(y, x)
    z = R.shuffle(x, axis=1, seed=11).numpy()
    np.testing.assert_array_equal(np.sort(z, axis=1), x)
    assert len({tuple(np.argsort(row)) for row in z}) == 1  # one permutation for every row
    check_op_gradients(lambda t: R.shuffle(t, axis=1, seed=12) * t, np.random.default_rng(13).normal(size=(3, 6)))
    with pytest.raises(ValueError, match="axis"):
        R.shuffle(x, axis=2)


def test_shape_and_dtype_validation():
    with pytest.raises(ValueError, match="floating point `dtype`"):
        R.normal((2,), dtype="int32")
    with pytest.raises(ValueError, match="floating point `dtype`"):
        R.uniform((2,), dtype="int32")
    with pytest.raises(ValueError, match=r"`shape`.*Received: shape=\(2, -1\)"):
        R.normal((2, -1))
    with pytest.raises(TypeError, match="`shape`"):
        R.uniform(None)
    with pytest.raises(TypeError, match="`stddev`"):
        R.normal((2,), stddev="x")
    assert math.isfinite(float(R.normal((), seed=1)))
