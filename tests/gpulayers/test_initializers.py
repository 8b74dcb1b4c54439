"""Tests for gpulayers.initializers: values, statistics, seeds, configs, errors."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpulayers import config, utils
from gpulayers import initializers as I
from helpers import keras_or_skip

TRUNC = 0.87962566103423978  # std of a standard normal truncated to [-2, 2]

RANDOM_CLASSES = [I.RandomNormal, I.RandomUniform, I.TruncatedNormal, I.VarianceScaling, I.GlorotUniform,
                  I.GlorotNormal, I.HeUniform, I.HeNormal, I.LecunUniform, I.LecunNormal, I.Orthogonal]


# ----------------------------------------------------------------- fans


@pytest.mark.parametrize("shape,fans", [
    ((), (1, 1)),
    ((7,), (7, 7)),
    ((5, 3), (5, 3)),
    ((4, 6, 2), (4 * 6, 4 * 2)),  # Conv1D kernel (width, in, out)
    ((3, 3, 16, 32), (9 * 16, 9 * 32)),  # Conv2D kernel
    ((2, 3, 4, 5, 6), (24 * 5, 24 * 6)),
])
def test_compute_fans(shape, fans):
    assert I.compute_fans(shape) == fans


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=3, max_size=5))
def test_fans_share_the_receptive_field(shape):
    fan_in, fan_out = I.compute_fans(shape)
    receptive = math.prod(shape[:-2])
    assert fan_in == receptive * shape[-2] and fan_out == receptive * shape[-1]


# ----------------------------------------------------------------- constants


def test_zeros_ones_constant_identity():
    np.testing.assert_array_equal(I.Zeros()((2, 3)), np.zeros((2, 3)))
    np.testing.assert_array_equal(I.Ones()((4,)), np.ones(4))
    np.testing.assert_array_equal(I.Constant(2.5)((2, 2)), np.full((2, 2), 2.5))
    np.testing.assert_array_equal(I.Identity(3.0)((2, 3)), [[3, 0, 0], [0, 3, 0]])
    assert I.Zeros()((2,), dtype="int32").dtype == np.int32


def test_identity_needs_2d():
    with pytest.raises(ValueError, match=r"`shape`.*shape=\(2, 2, 2\)"):
        I.Identity()((2, 2, 2))


def test_default_dtype_is_floatx():
    assert I.GlorotUniform(seed=1)((3, 4)).dtype == np.float32
    assert I.Ones()((3,)).dtype == np.float32
    previous = config.floatx()
    config.set_floatx("float64")
    try:
        assert I.HeNormal(seed=1)((3, 4)).dtype == np.float64
    finally:
        config.set_floatx(previous)


@pytest.mark.parametrize("cls", RANDOM_CLASSES)
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_random_initializers_return_host_arrays_of_dtype(cls, dtype):
    w = cls(seed=3)((6, 5), dtype=dtype)
    assert type(w) is np.ndarray and w.dtype == np.dtype(dtype) and w.shape == (6, 5)
    assert np.all(np.isfinite(w))


@pytest.mark.parametrize("cls", RANDOM_CLASSES)
def test_random_initializers_refuse_int_dtypes(cls):
    with pytest.raises(ValueError, match=r"`dtype`.*dtype='int32'"):
        cls(seed=0)((3, 3), dtype="int32")


def test_zero_size_shapes():
    assert I.TruncatedNormal(seed=0)((0, 3)).shape == (0, 3)
    assert I.GlorotNormal(seed=0)((0, 3)).shape == (0, 3)


# ----------------------------------------------------------------- seeds


@pytest.mark.parametrize("cls", RANDOM_CLASSES)
def test_int_seed_is_reproducible_and_seeds_differ(cls):
    a = cls(seed=7)((8, 6))
    np.testing.assert_array_equal(a, cls(seed=7)((8, 6)))
    init = cls(seed=7)
    np.testing.assert_array_equal(init((8, 6)), init((8, 6)))  # same values on every call, as Keras
    assert not np.array_equal(a, cls(seed=8)((8, 6)))


@pytest.mark.parametrize("cls", RANDOM_CLASSES)
def test_unseeded_draws_follow_set_random_seed(cls):
    init = cls()
    utils.set_random_seed(123)
    first, second = init((8, 6)), init((8, 6))
    assert not np.array_equal(first, second)  # fresh draws per call
    utils.set_random_seed(123)
    np.testing.assert_array_equal(init((8, 6)), first)
    np.testing.assert_array_equal(init((8, 6)), second)


@pytest.mark.parametrize("seed", [-1, 1.5, "3", True, [1]])
def test_bad_seeds_raise(seed):
    with pytest.raises(ValueError, match=r"`seed`.*Received: seed="):
        I.GlorotUniform(seed=seed)


# ----------------------------------------------------------------- statistics


def test_random_normal_statistics():
    w = I.RandomNormal(mean=1.0, stddev=2.0, seed=0)((400, 500), dtype="float64")
    assert abs(w.mean() - 1.0) < 0.02 and abs(w.std() / 2.0 - 1) < 0.01


def test_random_uniform_statistics():
    w = I.RandomUniform(minval=-1.0, maxval=3.0, seed=0)((400, 500), dtype="float64")
    assert w.min() >= -1.0 and w.max() < 3.0
    assert abs(w.mean() - 1.0) < 0.02 and abs(w.std() / (4 / math.sqrt(12)) - 1) < 0.01


def test_truncated_normal_statistics():
    w = I.TruncatedNormal(mean=1.0, stddev=2.0, seed=0)((400, 500), dtype="float64")
    assert w.min() >= 1.0 - 4.0 and w.max() <= 1.0 + 4.0
    assert w.min() < -2.9 and w.max() > 4.9  # the tails are really used, up to the cut
    assert abs(w.mean() - 1.0) < 0.02 and abs(w.std() / (2.0 * TRUNC) - 1) < 0.01


@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg"])
@pytest.mark.parametrize("distribution", ["truncated_normal", "untruncated_normal", "uniform"])
def test_variance_scaling_statistics(mode, distribution):
    shape, scale = (3, 3, 64, 128), 1.7
    fan_in, fan_out = 9 * 64, 9 * 128
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    w = I.VarianceScaling(scale, mode, distribution, seed=1)(shape, dtype="float64")
    std = math.sqrt(scale / n)
    assert abs(w.std() / std - 1) < 0.02 and abs(w.mean()) < 0.02 * std
    if distribution == "uniform":
        assert np.abs(w).max() <= math.sqrt(3) * std
    if distribution == "truncated_normal":
        assert np.abs(w).max() <= 2 * std / TRUNC


@pytest.mark.parametrize("cls,scale,mode,distribution", [
    (I.GlorotUniform, 1.0, "fan_avg", "uniform"),
    (I.GlorotNormal, 1.0, "fan_avg", "truncated_normal"),
    (I.HeUniform, 2.0, "fan_in", "uniform"),
    (I.HeNormal, 2.0, "fan_in", "truncated_normal"),
    (I.LecunUniform, 1.0, "fan_in", "uniform"),
    (I.LecunNormal, 1.0, "fan_in", "truncated_normal"),
])
def test_presets_are_keras_variance_scalings(cls, scale, mode, distribution):
    np.testing.assert_array_equal(cls(seed=4)((30, 20)), I.VarianceScaling(scale, mode, distribution, seed=4)((30, 20)))


def test_glorot_and_he_limits():
    w = I.GlorotUniform(seed=0)((200, 300), dtype="float64")
    limit = math.sqrt(6 / 500)
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.99 * limit
    w = I.HeNormal(seed=0)((3, 3, 32, 64), dtype="float64")
    assert abs(w.std() / math.sqrt(2 / (9 * 32)) - 1) < 0.02


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32))
def test_uniform_presets_stay_within_limits(rows, cols, seed):
    w = I.HeUniform(seed=seed)((rows, cols), dtype="float64")
    assert np.abs(w).max() <= math.sqrt(6 / rows)


# ----------------------------------------------------------------- orthogonal


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (5, 5), (3, 3, 4, 8), (2, 2, 3, 40)])
def test_orthogonal(shape):
    w = I.Orthogonal(gain=2.0, seed=0)(shape, dtype="float64")
    assert w.shape == shape
    flat = w.reshape(-1, shape[-1])
    rows, cols = flat.shape
    gram = flat.T @ flat if rows >= cols else flat @ flat.T
    np.testing.assert_allclose(gram, 4.0 * np.eye(min(rows, cols)), atol=1e-12)


def test_orthogonal_needs_rank_2():
    with pytest.raises(ValueError, match="`shape`"):
        I.Orthogonal()((5,))


# ----------------------------------------------------------------- configs and lookup


@pytest.mark.parametrize("init,keys", [
    (I.Zeros(), set()),
    (I.Ones(), set()),
    (I.Constant(3.0), {"value"}),
    (I.RandomNormal(), {"mean", "stddev", "seed"}),
    (I.RandomUniform(), {"minval", "maxval", "seed"}),
    (I.TruncatedNormal(), {"mean", "stddev", "seed"}),
    (I.VarianceScaling(), {"scale", "mode", "distribution", "seed", "input_axes", "output_axes"}),
    (I.GlorotUniform(), {"seed", "input_axes", "output_axes"}),
    (I.GlorotNormal(), {"seed", "input_axes", "output_axes"}),
    (I.HeUniform(), {"seed", "input_axes", "output_axes"}),
    (I.HeNormal(), {"seed", "input_axes", "output_axes"}),
    (I.LecunUniform(), {"seed", "input_axes", "output_axes"}),
    (I.LecunNormal(), {"seed", "input_axes", "output_axes"}),
    (I.Orthogonal(), {"gain", "seed"}),
    (I.Identity(), {"gain"}),
])
def test_config_keys_and_round_trips(init, keys):
    config = init.get_config()
    assert set(config) == keys
    assert type(init).from_config(config).get_config() == config
    data = I.serialize(init)
    assert data == {"module": "keras.initializers", "class_name": type(init).__name__,
                    "config": config, "registered_name": None}
    assert I.deserialize(data).get_config() == config


def test_seeded_round_trip_gives_the_same_values():
    for init in (I.GlorotNormal(seed=5), I.VarianceScaling(0.5, "fan_out", "uniform", seed=2), I.Orthogonal(seed=1)):
        again = I.deserialize(I.serialize(init))
        np.testing.assert_array_equal(again((7, 3)), init((7, 3)))
        np.testing.assert_array_equal(type(init).from_config(init.get_config())((7, 3)), init((7, 3)))


def test_variance_scaling_defaults_match_keras():
    assert I.VarianceScaling().get_config() == {"scale": 1.0, "mode": "fan_in",
                                                "distribution": "truncated_normal", "seed": None,
                                                "input_axes": None, "output_axes": None}
    assert I.RandomNormal().get_config() == {"mean": 0.0, "stddev": 0.05, "seed": None}
    assert I.RandomUniform().get_config() == {"minval": -0.05, "maxval": 0.05, "seed": None}
    assert I.VarianceScaling(distribution="Normal").distribution == "truncated_normal"


@pytest.mark.parametrize("name,cls", [
    ("zeros", I.Zeros), ("ones", I.Ones), ("constant", I.Constant), ("random_normal", I.RandomNormal),
    ("random_uniform", I.RandomUniform), ("truncated_normal", I.TruncatedNormal),
    ("variance_scaling", I.VarianceScaling), ("glorot_uniform", I.GlorotUniform), ("glorot_normal", I.GlorotNormal),
    ("he_uniform", I.HeUniform), ("he_normal", I.HeNormal), ("lecun_uniform", I.LecunUniform),
    ("lecun_normal", I.LecunNormal), ("orthogonal", I.Orthogonal), ("identity", I.Identity),
    ("GlorotUniform", I.GlorotUniform), ("HeNormal", I.HeNormal), ("OrthogonalInitializer", I.Orthogonal),
    ("uniform", I.RandomUniform), ("normal", I.RandomNormal), ("zero", I.Zeros), ("one", I.Ones),
])
def test_get_by_name(name, cls):
    assert type(I.get(name)) is cls


def test_get_other_identifiers():
    assert I.get(None) is None
    init = I.HeNormal(seed=1)
    assert I.get(init) is init
    assert type(I.get(I.LecunNormal)) is I.LecunNormal

    def custom(shape, dtype=None):
        return np.full(shape, 7.0, dtype=dtype)

    assert I.get(custom) is custom
    keras_dict = {"module": "keras.initializers", "class_name": "GlorotUniform",
                  "config": {"seed": None}, "registered_name": None}
    assert type(I.get(keras_dict)) is I.GlorotUniform
    assert type(I.get({"class_name": "Zeros", "config": {}})) is I.Zeros  # legacy form, no module


def test_get_errors_name_the_argument_and_value():
    with pytest.raises(ValueError, match=r"Invalid value for `kernel_initializer`: unknown initializer "
                                         r"'glorot_unifrom'\. Did you mean 'glorot_uniform'.*"
                                         r"Received: kernel_initializer='glorot_unifrom'"):
        I.get("glorot_unifrom", argument="kernel_initializer")
    with pytest.raises(TypeError, match=r"Invalid type for `bias_initializer`.*Received: bias_initializer=3"):
        I.get(3, argument="bias_initializer")
    with pytest.raises(TypeError, match="`kernel_initializer`"):
        I.get(int, argument="kernel_initializer")


def test_deserialize_only_builds_known_classes():
    with pytest.raises(ValueError, match="not a gpulayers built-in"):
        I.deserialize({"module": "os", "class_name": "system", "config": {}})
    with pytest.raises(ValueError, match="unknown initializer 'Initializer'"):
        I.deserialize({"module": "keras.initializers", "class_name": "Initializer", "config": {}})
    with pytest.raises(ValueError, match="bad config for HeNormal"):
        I.deserialize({"class_name": "HeNormal", "config": {"scale": 3.0}})
    with pytest.raises(ValueError, match="class_name"):
        I.deserialize({"config": {}})


@pytest.mark.parametrize("kwargs,argument", [
    ({"scale": 0.0}, "scale"),
    ({"scale": -1.0}, "scale"),
    ({"scale": "big"}, "scale"),
    ({"mode": "fan_sum"}, "mode"),
    ({"distribution": "gaussian"}, "distribution"),
    ({"distribution": 3}, "distribution"),
])
def test_variance_scaling_validation(kwargs, argument):
    with pytest.raises(ValueError, match=rf"Invalid value for `{argument}`.*Received: {argument}="):
        I.VarianceScaling(**kwargs)


def test_other_argument_validation():
    with pytest.raises(ValueError, match="`stddev`"):
        I.RandomNormal(stddev=-1.0)
    with pytest.raises(ValueError, match="`maxval`"):
        I.RandomUniform(minval=1.0, maxval=0.0)
    with pytest.raises(ValueError, match="`value`"):
        I.Constant("a")
    with pytest.raises(ValueError, match="`shape`"):
        I.Zeros()((2, -1))


def test_serialize_of_none_and_custom_callables():
    assert I.serialize(None) is None

    def custom(shape, dtype=None):
        return np.zeros(shape)

    data = I.serialize(custom)
    assert data["class_name"] == "function" and data["config"] == "custom"
    with pytest.raises(ValueError):
        I.deserialize(data)


# ----------------------------------------------------------------- input_axes / output_axes (Keras 3)

PRESETS = [I.GlorotUniform, I.GlorotNormal, I.HeUniform, I.HeNormal, I.LecunUniform, I.LecunNormal]


@pytest.mark.parametrize("shape,input_axes,output_axes,fans", [
    ((4, 8, 16), [0], [1, 2], (4, 128)),
    ((4, 8, 16), [0, 1], [2], (32, 16)),
    ((4, 8, 16), [-3], [-1], (4, 16)),
    ((3, 3, 16, 32), [], [3], (1, 32)),
    ((5, 3), (0,), (1,), (5, 3)),
])
def test_compute_fans_with_axes(shape, input_axes, output_axes, fans):
    assert I.compute_fans(shape, input_axes=input_axes, output_axes=output_axes) == fans


def test_compute_fans_with_one_axes_list_ignores_it_as_keras_does():
    assert I.compute_fans((4, 8, 16), input_axes=[0]) == I.compute_fans((4, 8, 16)) == (32, 64)
    assert I.compute_fans((4, 8, 16), output_axes=[2]) == (32, 64)


@pytest.mark.parametrize("input_axes,output_axes,argument", [([3], [0], "input_axes"), ([0], [-4], "output_axes")])
def test_compute_fans_axis_out_of_range(input_axes, output_axes, argument):
    with pytest.raises(ValueError, match=rf"Invalid value for `{argument}`.*out of range.*\(4, 8, 16\)"):
        I.compute_fans((4, 8, 16), input_axes=input_axes, output_axes=output_axes)
    with pytest.raises(ValueError, match=rf"`{argument}`"):
        I.GlorotUniform(seed=1, input_axes=input_axes, output_axes=output_axes)((4, 8, 16))


@pytest.mark.parametrize("cls", PRESETS + [I.VarianceScaling])
def test_axes_default_to_none_and_are_in_the_config(cls):
    init = cls()
    assert init.input_axes is None and init.output_axes is None
    config = init.get_config()
    assert config["input_axes"] is None and config["output_axes"] is None
    np.testing.assert_array_equal(cls(seed=4, input_axes=None, output_axes=None)((6, 5)), cls(seed=4)((6, 5)))


@pytest.mark.parametrize("cls", PRESETS)
def test_keras_3_preset_config_is_accepted(cls):
    keras_entry = {"module": "keras.initializers", "class_name": cls.__name__,
                   "config": {"seed": None, "input_axes": None, "output_axes": None}, "registered_name": None}
    init = I.deserialize(keras_entry)
    assert type(init) is cls and I.serialize(init) == keras_entry


@pytest.mark.parametrize("cls", PRESETS)
def test_axes_change_the_fans(cls):
    shape = (4, 8, 16)
    init = cls(seed=3, input_axes=[0], output_axes=[1, 2])
    plain = cls(seed=3)
    preset = dict(cls._preset)
    fan_in, fan_out = 4, 128
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[preset["mode"]]
    n_plain = {"fan_in": 32, "fan_out": 64, "fan_avg": 48}[preset["mode"]]  # (4, 8, 16) as a conv kernel
    # Same seed, same draws: only the scale differs, by sqrt(n_plain / n).
    np.testing.assert_allclose(init(shape, "float64"), plain(shape, "float64") * math.sqrt(n_plain / n), rtol=1e-12)


def test_variance_scaling_axes_values_and_round_trip():
    init = I.VarianceScaling(2.0, "fan_in", "uniform", seed=7, input_axes=(0, 1), output_axes=[2])
    assert init.input_axes == [0, 1] and init.output_axes == [2]
    w = init((6, 5, 4), "float64")
    limit = math.sqrt(3 * 2.0 / 30)
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.9 * limit
    config = init.get_config()
    assert config["input_axes"] == [0, 1] and config["output_axes"] == [2]
    again = I.deserialize(I.serialize(init))
    assert again.get_config() == config
    np.testing.assert_array_equal(again((6, 5, 4), "float64"), w)
    config["input_axes"].append(2)  # the config is a copy
    assert init.input_axes == [0, 1]


@pytest.mark.parametrize("value", ["0", 0, 1.5, [1.5], [True], [0, "1"], object()])
@pytest.mark.parametrize("argument", ["input_axes", "output_axes"])
def test_bad_axes_are_refused(argument, value):
    with pytest.raises(ValueError, match=rf"Invalid value for `{argument}`.*Received: {argument}="):
        I.VarianceScaling(**{argument: value})
    with pytest.raises(ValueError, match=rf"`{argument}`"):
        I.HeNormal(**{argument: value})


def test_constant_takes_arrays_that_broadcast_and_saves_them_as_keras():
    # Keras 3.15.1: Constant(value) fills value * ones(shape); a NumPy value is saved as its "__numpy__" config.
    value = np.arange(6.0).reshape(2, 3)
    c = I.Constant(value)
    np.testing.assert_array_equal(c((2, 3), "float32"), value.astype(np.float32))
    assert c.get_config() == {"value": {"class_name": "__numpy__",
                                        "config": {"value": [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]], "dtype": "float64"}}}
    again = I.deserialize(I.serialize(c))
    np.testing.assert_array_equal(again((2, 3)), c((2, 3)))
    row = I.Constant([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(row((2, 3)), [[1, 2, 3], [1, 2, 3]])
    assert row.get_config() == {"value": [1.0, 2.0, 3.0]}
    with pytest.raises(ValueError, match=r"shape \(2, 3\) cannot fill a weight of shape \(4,\)"):
        c((4,))
    with pytest.raises(ValueError, match="value"):
        I.Constant(["a"])
    with pytest.raises(ValueError, match="value"):
        I.Constant([1.0, float("nan")])


def test_an_array_as_the_initializer_gives_its_values():
    from gpulayers.layers import Dense

    kernel = np.arange(6.0).reshape(3, 2)
    init = I.get(kernel, argument="kernel_initializer")
    np.testing.assert_array_equal(init((3, 2), "float32"), kernel)
    with pytest.raises(ValueError, match=r"value of shape \(3, 2\) cannot fill a weight of shape \(2, 3\)"):
        init((2, 3))
    layer = Dense(2, kernel_initializer=kernel)
    layer(np.ones((1, 3), np.float32))
    np.testing.assert_array_equal(layer.kernel.numpy(), kernel)
    # saved as Constant(array), so the layer's config loads back (Keras 3.15's function form does not)
    again = Dense.from_config(layer.get_config())
    assert isinstance(again.kernel_initializer, I.Constant)
    np.testing.assert_array_equal(again.kernel_initializer((3, 2)), kernel)


def test_a_seed_generator_as_the_seed_draws_anew_each_call_and_saves_as_keras():
    from gpulayers.random import SeedGenerator

    for cls in (I.RandomNormal, I.RandomUniform, I.TruncatedNormal, I.GlorotUniform, I.Orthogonal):
        init = cls(seed=SeedGenerator(5))
        first, second = init((4, 4)), init((4, 4))
        assert not np.array_equal(first, second)
        np.testing.assert_array_equal(cls(seed=SeedGenerator(5))((4, 4)), first)  # the generator's seed decides
        config = init.get_config()
        assert config["seed"] == {"module": "keras.random", "class_name": "SeedGenerator",
                                  "config": {"seed": 5, "name": init.seed.name}, "registered_name": None}
        again = cls.from_config(config)
        assert isinstance(again.seed, SeedGenerator)
        np.testing.assert_array_equal(again((4, 4)), first)
    with pytest.raises(ValueError, match="SeedGenerator"):
        I.RandomNormal(seed="seven")


def test_seed_generator_configs_move_both_ways_with_keras():
    from gpulayers.random import SeedGenerator

    keras = keras_or_skip()
    theirs = keras.initializers.RandomNormal(seed=keras.random.SeedGenerator(9))
    ours = I.RandomNormal.from_config(theirs.get_config())
    assert isinstance(ours.seed, SeedGenerator) and ours.get_config() == theirs.get_config()
    back = keras.initializers.RandomNormal.from_config(I.RandomNormal(seed=SeedGenerator(9)).get_config())
    assert isinstance(back.seed, keras.random.SeedGenerator)
