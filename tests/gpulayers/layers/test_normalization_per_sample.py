"""LayerNormalization, GroupNormalization, RMSNormalization, UnitNormalization and the ops
layer_normalization / rms_normalization: loop references, gradients, weights, dtypes, arguments,
and Keras parity (outputs, configs, .keras files both ways)."""

import contextlib
import itertools
import json
import zipfile

import numpy as np
import pytest

import gpulayers
from gpulayers import constraints, ops, regularizers, saving
from gpulayers.layers import GroupNormalization, LayerNormalization, RMSNormalization, UnitNormalization
from helpers import check_layer_gradients, check_op_gradients, keras_or_skip, to_np

# ---------------------------------------------------------------- float64 loop references


def ref_per_sample(x, axes, gamma=None, beta=None, epsilon=1e-3, mode="center"):
    """Normalize every slice of ``x`` over ``axes`` with explicit loops over the other indices.

    ``gamma``/``beta`` have the shape of the normalized axes (ascending order).
    mode: "center" (layer norm), "variance" (Keras's rms_scaling), "rms".
    """
    x = np.asarray(x, np.float64)
    axes = sorted(a % x.ndim for a in axes)
    kept = [a for a in range(x.ndim) if a not in axes]
    out = np.zeros_like(x)
    for index in itertools.product(*(range(x.shape[a]) for a in kept)):
        where = [slice(None)] * x.ndim
        for a, i in zip(kept, index):
            where[a] = i
        block = x[tuple(where)]
        values = list(block.ravel())
        n = len(values)
        mean = sum(values) / n
        var = sum((v - mean) ** 2 for v in values) / n
        if mode == "center":
            norm = (block - mean) / np.sqrt(var + epsilon)
        elif mode == "variance":
            norm = block / np.sqrt(var + epsilon)
        else:
            norm = block / np.sqrt(sum(v * v for v in values) / n + epsilon)
        if gamma is not None:
            norm = norm * np.asarray(gamma, np.float64)
        if beta is not None:
            norm = norm + np.asarray(beta, np.float64)
        out[tuple(where)] = norm
    return out


def ref_group_norm(x, groups, axis, gamma, beta, epsilon):
    """Per sample and per group of channels: loops over samples, groups and channels."""
    x = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    channels = x.shape[-1]
    size = channels // groups
    out = np.zeros_like(x)
    for n in range(x.shape[0]):
        for g in range(groups):
            block = x[n, ..., g * size:(g + 1) * size]
            values = list(block.ravel())
            mean = sum(values) / len(values)
            var = sum((v - mean) ** 2 for v in values) / len(values)
            for c in range(size):
                k = g * size + c
                scale = 1.0 if gamma is None else gamma[k]
                shift = 0.0 if beta is None else beta[k]
                out[n, ..., k] = (block[..., c] - mean) / np.sqrt(var + epsilon) * scale + shift
    return np.moveaxis(out, -1, axis)


def ref_unit(x, axes):
    x = np.asarray(x, np.float64)
    axes = tuple(sorted(a % x.ndim for a in axes))
    norm = np.sqrt((x * x).sum(axis=axes, keepdims=True))
    return x / np.maximum(norm, 1e-12)


def randomize(layer, rng):
    values = [rng.standard_normal(w.shape) for w in layer.get_weights()]
    layer.set_weights(values)
    return {v.name: w for v, w in zip(layer.weights, values)}


# ---------------------------------------------------------------- LayerNormalization


@pytest.mark.parametrize(
    "shape,axis,kwargs",
    [
        ((3, 5), -1, {}),
        ((2, 3, 4), [1, 2], {}),
        ((2, 3, 4), [-1, -2], {}),  # unsorted: the same as sorted
        ((2, 3, 4, 2), (1, 3), {}),
        ((2, 3, 4), 1, {"epsilon": 0.1}),
        ((3, 4), -1, {"center": False}),
        ((3, 4), -1, {"scale": False}),
        ((3, 4), -1, {"center": False, "scale": False}),
    ],
)
def test_layer_normalization_matches_the_loop_reference(shape, axis, kwargs):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3 + 2).astype(np.float32)
    layer = LayerNormalization(axis=axis, **kwargs)
    layer.build_from_shape(x.shape)
    w = randomize(layer, rng)
    axes = [axis] if isinstance(axis, int) else list(axis)
    ref = ref_per_sample(x, axes, w.get("gamma"), w.get("beta"), kwargs.get("epsilon", 1e-3))
    for training in (True, False):  # no batch statistics: training changes nothing
        y = to_np(layer(x, training=training))
        assert y.dtype == np.float32 and y.shape == x.shape
        np.testing.assert_allclose(y, ref, rtol=2e-5, atol=2e-5)


def test_layer_normalization_weights_and_config_follow_keras():
    layer = LayerNormalization(axis=[-1, 1])
    assert layer.get_config()["axis"] == [-1, 1]
    layer.build_from_shape((2, 3, 5, 4))
    assert [(v.name, v.shape) for v in layer.weights] == [("gamma", (3, 4)), ("beta", (3, 4))]
    assert layer.get_config()["axis"] == [-1, 1]  # sorted as given, as Keras's build does
    single = LayerNormalization()
    single.build_from_shape((2, 6))
    assert single.get_config()["axis"] == [-1] and single.gamma.shape == (6,)
    no_beta = LayerNormalization(center=False)
    no_beta.build_from_shape((2, 3))
    assert [v.name for v in no_beta.weights] == ["gamma"]


def test_rms_scaling_is_keras_deprecated_variant():
    with pytest.warns(UserWarning, match="deprecated"):
        layer = LayerNormalization(rms_scaling=True, center=True)
    x = np.arange(10, dtype=np.float32).reshape(2, 5)
    layer.build_from_shape(x.shape)
    assert [v.name for v in layer.weights] == ["gamma"]  # no beta with rms_scaling
    gamma = randomize(layer, np.random.default_rng(1))["gamma"]
    ref = ref_per_sample(x, [-1], gamma, None, 1e-3, mode="variance")
    np.testing.assert_allclose(to_np(layer(x)), ref, rtol=1e-5, atol=1e-5)
    assert layer.get_config()["rms_scaling"] is True


@pytest.mark.parametrize(
    "shape,kwargs",
    [
        ((3, 4), {}),
        ((2, 3, 2), {"axis": [1, 2]}),
        ((2, 3, 2), {"axis": 1, "center": False}),
        ((3, 4), {"scale": False, "gamma_regularizer": regularizers.L2(0.1), "beta_regularizer": "l1"}),
        ((3, 4), {"rms_scaling": True}),
    ],
)
def test_layer_normalization_gradients(shape, kwargs):
    rng = np.random.default_rng(2)
    with pytest.warns(UserWarning) if kwargs.get("rms_scaling") else contextlib.nullcontext():
        layer = LayerNormalization(dtype="float64", **kwargs)
    x = rng.standard_normal(shape) * 2 + 1
    layer.build_from_shape(x.shape)
    randomize(layer, rng)
    _, grads = check_layer_gradients(layer, x)
    assert set(grads) == {v.name for v in layer.trainable_weights}


def test_mixed_precision_keeps_float32_inputs_and_weights():
    x = np.full((2, 4, 8), 70000.0, np.float32)
    x[:, :, ::2] = 69000.0
    for layer in (LayerNormalization(dtype="mixed_float16"), GroupNormalization(groups=2, dtype="mixed_float16")):
        y = layer(x)
        assert y.dtype == np.float16 and layer.gamma.dtype == "float32" and layer.beta.dtype == "float32"
        assert layer.autocast is False
        # Normalized in float32 (70000 would overflow float16 before the statistics).
        np.testing.assert_allclose(to_np(y).astype(np.float32), np.where(x == 70000.0, 1.0, -1.0), atol=2e-3)
    # float16 inputs are normalized in float32 and given back in float16.
    half = np.array([[1000.0, 1001.0, 1003.0]], np.float16)
    y = ops.layer_normalization(half, epsilon=1e-3)
    assert y.dtype == np.float16
    np.testing.assert_allclose(to_np(y), ref_per_sample(half, [-1], epsilon=1e-3), atol=2e-3)


def test_a_float64_input_is_normalized_in_float64_then_cast():
    x = np.array([[1.0, 1.0 + 1e-9, 1.0 + 2e-9]])
    y = to_np(LayerNormalization(epsilon=0)(x))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [[-1.2247449, 0.0, 1.2247449]], rtol=1e-4)  # float32 would see equal values


def test_symbolic_output_dtype_is_the_layers():
    inputs = gpulayers.Input((4,))
    out = LayerNormalization(dtype="mixed_float16")(inputs)
    assert out.dtype == "float16" and out.shape == (None, 4)
    assert GroupNormalization(groups=2, dtype="float64")(inputs).dtype == "float64"


def test_empty_batch_and_integer_inputs():
    assert to_np(LayerNormalization()(np.zeros((1, 0, 10), np.float32))).shape == (1, 0, 10)
    y = to_np(LayerNormalization()(np.arange(6).reshape(2, 3)))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, ref_per_sample(np.arange(6).reshape(2, 3), [-1]), rtol=1e-5)


# ---------------------------------------------------------------- GroupNormalization


@pytest.mark.parametrize(
    "shape,groups,axis",
    [((2, 8), 4, -1), ((2, 3, 6), 2, -1), ((2, 3, 6), 1, -1), ((2, 6, 3), 3, 1), ((2, 4, 2, 3), 2, 1),
     ((1, 2, 2, 2, 4), -1, -1), ((2, 3, 4, 2), 2, -2)],
)
def test_group_normalization_matches_the_loop_reference(shape, groups, axis):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(shape) * 2 - 1).astype(np.float32)
    layer = GroupNormalization(groups=groups, axis=axis, epsilon=1e-2)
    layer.build_from_shape(x.shape)
    w = randomize(layer, rng)
    channels = shape[axis]
    assert [(v.name, v.shape) for v in layer.weights] == [("gamma", (channels,)), ("beta", (channels,))]
    expected_groups = channels if groups == -1 else groups
    assert layer.get_config()["groups"] == expected_groups
    ref = ref_group_norm(x, expected_groups, axis % x.ndim, w["gamma"], w["beta"], 1e-2)
    np.testing.assert_allclose(to_np(layer(x, training=True)), ref, rtol=2e-5, atol=2e-5)


def test_group_normalization_keras_examples():
    x = np.array([[-1.0, -1.0, 1.0, 1.0, 2.0, 2.0, 0, -2.0]])
    y = GroupNormalization(groups=2, axis=1, scale=False, center=False)(x)
    np.testing.assert_allclose(to_np(y), [[-1.0, -1.0, 1.0, 1.0, 0.904, 0.904, -0.301, -1.507]], atol=1e-3)
    inst = GroupNormalization(groups=-1, scale=False, center=False)(np.array([[[-1.0, 1.0, 0, 2.0], [1.0, 3.0, -4, -2.0]]]))
    np.testing.assert_allclose(to_np(inst), [[[-1.0, -1.0, 1.0, 1.0], [1.0, 1.0, -1.0, -1.0]]], atol=1e-3)


@pytest.mark.parametrize("kwargs,shape", [({"groups": 2}, (2, 3, 4)), ({"groups": 3, "axis": 1}, (2, 3, 2)),
                                          ({"groups": 2, "center": False, "gamma_regularizer": "l2"}, (2, 2, 4))])
def test_group_normalization_gradients(kwargs, shape):
    rng = np.random.default_rng(4)
    layer = GroupNormalization(dtype="float64", **kwargs)
    x = rng.standard_normal(shape) + 0.5
    layer.build_from_shape(x.shape)
    randomize(layer, rng)
    _, grads = check_layer_gradients(layer, x)
    assert set(grads) == {v.name for v in layer.trainable_weights}


# ---------------------------------------------------------------- RMSNormalization and UnitNormalization


@pytest.mark.parametrize("shape,axis", [((3, 4), -1), ((2, 3, 4), [1, 2]), ((2, 3, 4), 1)])
def test_rms_normalization_matches_the_loop_reference_and_its_gradients(shape, axis):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype(np.float32)
    layer = RMSNormalization(axis=axis, epsilon=1e-4)
    layer.build_from_shape(shape)
    scale = randomize(layer, rng)["scale"]
    axes = [axis] if isinstance(axis, int) else axis
    assert layer.scale.shape == tuple(shape[a] for a in axes) and layer.get_config()["axis"] == axes
    ref = ref_per_sample(x, axes, scale, None, 1e-4, mode="rms")
    np.testing.assert_allclose(to_np(layer(x)), ref, rtol=2e-5, atol=2e-5)
    layer64 = RMSNormalization(axis=axis, epsilon=1e-4, dtype="float64")
    layer64.build_from_shape(shape)
    randomize(layer64, rng)
    check_layer_gradients(layer64, x.astype(np.float64))


@pytest.mark.parametrize("shape,axis", [((3, 4), -1), ((2, 3, 3), (1, 2)), ((2, 3, 2), 1)])
def test_unit_normalization(shape, axis):
    rng = np.random.default_rng(6)
    x = rng.standard_normal(shape)
    layer = UnitNormalization(axis=axis)
    assert layer.built and layer.weights == []
    axes = [axis] if isinstance(axis, int) else list(axis)
    y = to_np(layer(x.astype(np.float32)))
    np.testing.assert_allclose(y, ref_unit(x, axes), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose((y.astype(np.float64) ** 2).sum(axis=tuple(axes)), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(to_np(layer(np.zeros(shape, np.float32))), 0.0)  # the zero vector stays zero
    check_layer_gradients(UnitNormalization(axis=axis, dtype="float64"), x)
    assert layer.get_config()["axis"] == (list(axis) if isinstance(axis, tuple) else axis)


# ---------------------------------------------------------------- the ops


@pytest.mark.parametrize("axis", [-1, [1, 2], (0, 2)])
def test_layer_normalization_op_gradients_and_value(axis):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 2))
    axes = [axis] if isinstance(axis, int) else list(axis)
    shape = tuple(x.shape[a] for a in sorted(a % 3 for a in axes))
    gamma, beta = rng.standard_normal(shape), rng.standard_normal(shape)
    y = to_np(ops.layer_normalization(x, gamma, beta, axis=axis, epsilon=1e-3))
    ref = ref_per_sample(x, axes, gamma, beta, 1e-3)
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-12)
    check_op_gradients(lambda a, g, b: ops.layer_normalization(a, g, b, axis=axis, epsilon=1e-3), x, gamma, beta)
    check_op_gradients(lambda a, s: ops.rms_normalization(a, s, axis=axis, epsilon=1e-3), x, gamma)


def test_ops_defaults_are_keras():
    x = np.arange(5, dtype=np.float32)
    np.testing.assert_allclose(to_np(ops.layer_normalization(x)), [-1.4142135, -0.70710677, 0.0, 0.7071067, 1.4142135],
                               rtol=1e-6)  # epsilon: config.epsilon()
    np.testing.assert_allclose(to_np(ops.rms_normalization(np.float32([3.0, 4.0]))), [0.8485281, 1.1313709], rtol=1e-6)
    assert to_np(ops.rms_normalization(np.float32(2.0))).shape == (1,)  # a 0-d input is treated as (1,)
    with pytest.raises(ValueError, match="gamma"):
        ops.layer_normalization(np.ones((2, 3, 4)), gamma=np.ones(5), axis=[1, 2])
    with pytest.raises(ValueError, match="scale"):
        ops.rms_normalization(np.ones((2, 3)), scale=np.ones(4))


# ---------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "cls,kwargs,error,pattern",
    [
        (LayerNormalization, {"axis": {"axis": -1}}, TypeError, r"int or a list/tuple of ints.*axis"),
        (LayerNormalization, {"axis": 1.0}, TypeError, r"axis=1\.0"),
        (LayerNormalization, {"axis": [1, 1]}, ValueError, r"axis.*\[1, 1\]"),
        (LayerNormalization, {"axis": []}, ValueError, r"axis.*\[\]"),
        (LayerNormalization, {"epsilon": -1.0}, ValueError, r"epsilon.*-1\.0"),
        (LayerNormalization, {"epsilon": "1e-3"}, ValueError, r"epsilon.*'1e-3'"),
        (LayerNormalization, {"center": "yes"}, TypeError, r"center.*'yes'"),
        (LayerNormalization, {"rms_scaling": 2}, TypeError, r"rms_scaling.*2"),
        (LayerNormalization, {"gamma_initializer": "onez"}, ValueError, r"gamma_initializer.*'onez'"),
        (LayerNormalization, {"beta_regularizer": "l9"}, ValueError, r"beta_regularizer.*'l9'"),
        (GroupNormalization, {"groups": 0}, ValueError, r"argument `groups`.*groups=0"),
        (GroupNormalization, {"groups": -2}, ValueError, r"argument `groups`.*groups=-2"),
        (GroupNormalization, {"groups": 1.5}, ValueError, r"argument `groups`.*groups=1\.5"),
        (GroupNormalization, {"groups": "32"}, ValueError, r"argument `groups`.*groups='32'"),
        (GroupNormalization, {"groups": True}, ValueError, r"argument `groups`.*groups=True"),
        (GroupNormalization, {"axis": [1, 2]}, TypeError, r"axis.*\[1, 2\]"),
        (GroupNormalization, {"scale": 3}, TypeError, r"scale.*3"),
        (GroupNormalization, {"beta_constraint": "nope"}, ValueError, r"beta_constraint.*'nope'"),
        (RMSNormalization, {"axis": "last"}, TypeError, r"axis.*'last'"),
        (RMSNormalization, {"epsilon": float("nan")}, ValueError, r"epsilon.*nan"),
        (UnitNormalization, {"axis": {"axis": -1}}, TypeError, r"Invalid value for `axis` argument: expected an int"),
    ],
)
def test_bad_arguments_are_refused(cls, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        cls(**kwargs)


@pytest.mark.parametrize(
    "layer,shape,pattern",
    [
        (LayerNormalization(axis=3), (2, 3, 4), r"axis 3 is out of bounds"),
        (LayerNormalization(axis=[1, -4]), (2, 3, 4), r"axis -4 is out of bounds"),
        (GroupNormalization(groups=5), (2, 2, 4), r"cannot be more than the number of channels"),
        (GroupNormalization(groups=3), (2, 2, 4), r"must be a multiple of the number of groups \(3\)"),
        (GroupNormalization(groups=1, axis=0), (2, 4), r"batch axis"),
        (GroupNormalization(groups=1), (4,), r"rank >= 2"),
        (RMSNormalization(axis=-3), (2, 3), r"axis -3 is out of bounds"),
        (UnitNormalization(axis=2), (2, 3), r"out of bounds"),
    ],
)
def test_bad_inputs_are_refused_before_any_weight(layer, shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        layer(np.ones(shape, np.float32))
    assert layer.weights == []


def test_group_normalization_needs_a_known_channel_count():
    layer = GroupNormalization(groups=2)
    with pytest.raises(ValueError, match="input tensor should have a defined dimension but the layer received"):
        layer(gpulayers.Input((2, None)))
    assert layer.weights == [] and not layer.built


def test_constraints_apply_to_gamma_and_beta():
    layer = GroupNormalization(groups=2, gamma_constraint=constraints.UnitNorm(), beta_constraint="non_neg")
    layer.build_from_shape((2, 4))
    assert isinstance(layer.gamma.constraint, constraints.UnitNorm) and layer.beta.constraint is not None


# ---------------------------------------------------------------- Keras parity


def _pairs(keras):
    K = keras.layers
    ours_rms_scaling = LayerNormalization(rms_scaling=True, epsilon=1e-2)
    return [
        (LayerNormalization(), K.LayerNormalization(), (3, 4, 6)),
        (LayerNormalization(axis=[1, 2], epsilon=1e-4), K.LayerNormalization(axis=[1, 2], epsilon=1e-4), (3, 4, 6)),
        # Keras's torch backend takes a non-trailing single axis for trailing ones: rank 2 here.
        (LayerNormalization(axis=1, center=False), K.LayerNormalization(axis=1, center=False), (3, 4)),
        (ours_rms_scaling, K.LayerNormalization(rms_scaling=True, epsilon=1e-2), (3, 4, 6)),
        (GroupNormalization(groups=3), K.GroupNormalization(groups=3), (3, 4, 6)),
        (GroupNormalization(groups=2, axis=1), K.GroupNormalization(groups=2, axis=1), (3, 4, 6)),
        (GroupNormalization(groups=-1, axis=-1, scale=False), K.GroupNormalization(groups=-1, scale=False), (2, 3, 2, 4)),
        (RMSNormalization(epsilon=1e-3), K.RMSNormalization(epsilon=1e-3), (3, 4, 6)),
        (RMSNormalization(axis=[1, 2]), K.RMSNormalization(axis=[1, 2]), (3, 4, 6)),
        (UnitNormalization(), K.UnitNormalization(), (3, 4, 6)),
        (UnitNormalization(axis=[1, 2]), K.UnitNormalization(axis=[1, 2]), (3, 4, 6)),
    ]


def _plain(config):
    return json.loads(json.dumps(config))


def test_outputs_weights_and_configs_equal_keras():
    keras = keras_or_skip()
    rng = np.random.default_rng(8)
    with pytest.warns(UserWarning):
        pairs = _pairs(keras)
    for ours, theirs, shape in pairs:
        x = (rng.standard_normal(shape) * 4 + 3).astype(np.float32)
        ours(x)
        theirs(x)
        assert [tuple(w.shape) for w in ours.get_weights()] == [tuple(w.shape) for w in theirs.get_weights()]
        assert [v.name for v in ours.weights] == [v.name for v in theirs.weights]
        weights = [rng.standard_normal(w.shape).astype(np.float32) for w in ours.get_weights()]
        ours.set_weights(weights)
        theirs.set_weights(weights)
        np.testing.assert_allclose(to_np(ours(x)), keras.ops.convert_to_numpy(theirs(x)), rtol=1e-5, atol=1e-5)
        expected = {**_plain(theirs.get_config()), "name": ours.name}
        assert _plain(ours.get_config()) == expected, type(ours).__name__
        rebuilt = type(ours).from_config(theirs.get_config())
        assert _plain(rebuilt.get_config()) == {**expected, "name": theirs.name}


def _model(module):
    K = module.layers
    return module.Sequential([
        module.Input((4, 6)), K.Dense(6), K.LayerNormalization(axis=[1, 2], epsilon=1e-4),
        K.GroupNormalization(groups=3, center=False), K.RMSNormalization(), K.UnitNormalization(axis=-1),
        K.LayerNormalization(), K.Flatten(), K.Dense(2),
    ])


def test_keras_files_both_ways(tmp_path):
    keras = keras_or_skip()
    rng = np.random.default_rng(9)
    x = rng.standard_normal((5, 4, 6)).astype(np.float32)
    ours = _model(gpulayers)
    ours.set_weights([rng.standard_normal(w.shape).astype(np.float32) for w in ours.get_weights()])
    expected = ours.predict(x, verbose=0)
    ours.save(tmp_path / "ours.keras")
    theirs = keras.saving.load_model(tmp_path / "ours.keras")
    np.testing.assert_allclose(np.asarray(theirs.predict(x, verbose=0)), expected, rtol=1e-4, atol=1e-5)
    # Keras -> gpulayers, after Keras trained it a little (weights away from their initial values).
    built = _model(keras)
    built.compile(optimizer="adam", loss="mse")
    built.fit(x, rng.standard_normal((5, 2)).astype(np.float32), epochs=2, verbose=0)
    built.save(tmp_path / "theirs.keras")
    mine = saving.load_model(tmp_path / "theirs.keras")
    np.testing.assert_allclose(mine.predict(x, verbose=0), np.asarray(built.predict(x, verbose=0)), rtol=1e-4, atol=1e-5)
    entries = json.loads(zipfile.ZipFile(tmp_path / "theirs.keras").read("config.json"))["config"]["layers"]
    for entry, layer in zip(entries[1:], mine.layers, strict=True):
        assert entry["class_name"] == type(layer).__name__ and entry["module"] == "keras.layers"
        assert _plain(layer.get_config()) == _without_shared_ids(entry["config"])


def _without_shared_ids(value):
    if isinstance(value, dict):
        return {k: _without_shared_ids(v) for k, v in value.items() if k != "shared_object_id"}
    if isinstance(value, list):
        return [_without_shared_ids(v) for v in value]
    return value
