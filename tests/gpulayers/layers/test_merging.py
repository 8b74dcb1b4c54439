"""Merging layers: values against NumPy, Keras's broadcasting and shape rules, gradients (fan-out
included), errors, configs, and parity with Keras where it imports."""

import os

import numpy as np
import pytest

from gpulayers import layers as gl, ops
from gpulayers.layers import (
    Add,
    Average,
    Concatenate,
    Dot,
    Maximum,
    Minimum,
    Multiply,
    Subtract,
    add,
    average,
    concatenate,
    dot,
    maximum,
    minimum,
    multiply,
    subtract,
)
from helpers import check_op_gradients, grad_of, to_np

ELEMENTWISE = [
    (Add, add, lambda xs: sum(xs)),
    (Multiply, multiply, lambda xs: np.prod(np.broadcast_arrays(*xs), axis=0)),
    (Average, average, lambda xs: sum(xs) / len(xs)),
    (Maximum, maximum, lambda xs: np.max(np.broadcast_arrays(*xs), axis=0)),
    (Minimum, minimum, lambda xs: np.min(np.broadcast_arrays(*xs), axis=0)),
]
IDS = [c[0].__name__ for c in ELEMENTWISE]


def inputs(rng, *shapes):
    return [rng.standard_normal(s) for s in shapes]


# ---------------------------------------------------------------- elementwise merges


@pytest.mark.parametrize("cls,fn,ref", ELEMENTWISE, ids=IDS)
def test_elementwise_values(cls, fn, ref):
    rng = np.random.default_rng(0)
    xs = inputs(rng, (2, 3, 4), (2, 3, 4), (2, 3, 4))
    y = to_np(cls(dtype="float64")(xs))
    np.testing.assert_allclose(y, ref(xs), rtol=1e-14)
    np.testing.assert_allclose(to_np(fn(xs[:2], dtype="float64")), ref(xs[:2]), rtol=1e-14)
    assert to_np(cls()(tuple(x.astype(np.float32) for x in xs))).dtype == np.float32


@pytest.mark.parametrize("cls,fn,ref", ELEMENTWISE, ids=IDS)
def test_elementwise_broadcasting_follows_keras(cls, fn, ref):
    # Sizes after the batch axis align from the right; 1 stretches; a lower rank gets unit axes after the batch.
    rng = np.random.default_rng(1)
    a, b, c = inputs(rng, (2, 3), (2, 4, 3), (2, 1, 1))
    layer = cls(dtype="float64")
    y = to_np(layer([a, b, c]))
    assert y.shape == (2, 4, 3) == layer.compute_output_shape([(2, 3), (2, 4, 3), (2, 1, 1)])
    np.testing.assert_allclose(y, ref([a[:, None, :], b, c]), rtol=1e-14)
    assert layer.compute_output_shape([(None, 3), (None, 4, 3)]) == (None, 4, 3)
    assert layer.compute_output_shape([(None, None, 3), (5, 4, 1)]) == (5, None, 3)
    assert layer.compute_output_shape([(None, 1, 5)]) == (None, 1, 5)  # one input is allowed, as in Keras 3


def test_subtract_values_and_count():
    rng = np.random.default_rng(2)
    a, b = inputs(rng, (3, 2), (3, 2))
    np.testing.assert_allclose(to_np(Subtract(dtype="float64")([a, b])), a - b, rtol=1e-14)
    np.testing.assert_allclose(to_np(subtract([a, b[:, :1]], dtype="float64")), a - b[:, :1], rtol=1e-14)
    for count in (1, 3):
        with pytest.raises(ValueError, match=r"A `Subtract` layer should be called on exactly 2 inputs"):
            Subtract()([a] * count)


@pytest.mark.parametrize("cls,fn,ref", ELEMENTWISE + [(Subtract, subtract, None)], ids=IDS + ["Subtract"])
def test_elementwise_gradients(cls, fn, ref):
    rng = np.random.default_rng(3)
    a, b = inputs(rng, (2, 3, 2), (2, 1, 2))
    check_op_gradients(lambda p, q: cls(dtype="float64")([p, q]), a, b)
    check_op_gradients(lambda p, q: cls(dtype="float64")([p, q]), a[:, 0], b)  # different ranks


@pytest.mark.parametrize("cls", [Add, Multiply, Average, Subtract, Concatenate], ids=lambda c: c.__name__)
def test_the_same_tensor_twice_gets_both_gradients(cls):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3))
    check_op_gradients(lambda t: cls(dtype="float64")([t, t]), x)
    _, (dx,) = grad_of(lambda t: Multiply(dtype="float64")([t, t, t]), x)
    np.testing.assert_allclose(dx, 3 * x**2, rtol=1e-13)
    _, (dx,) = grad_of(lambda t: Add(dtype="float64")([t, t]), x)
    np.testing.assert_allclose(dx, np.full_like(x, 2.0))


def test_maximum_and_minimum_route_the_gradient_to_the_winner():
    a = np.array([[1.0, 5.0, -2.0]])
    b = np.array([[3.0, 4.0, -1.0]])
    _, (da, db) = grad_of(lambda p, q: Maximum(dtype="float64")([p, q]), a, b)
    np.testing.assert_array_equal(da, [[0, 1, 0]])
    np.testing.assert_array_equal(db, [[1, 0, 1]])
    _, (da, db) = grad_of(lambda p, q: Minimum(dtype="float64")([p, q]), a, b)
    np.testing.assert_array_equal(da, [[1, 0, 1]])
    np.testing.assert_array_equal(db, [[0, 1, 0]])


@pytest.mark.parametrize("cls", [Add, Multiply, Average, Maximum, Minimum, Subtract], ids=lambda c: c.__name__)
def test_elementwise_errors(cls):
    a = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"A merge layer should be called on a list of inputs.*not a list"):
        cls()(a)
    with pytest.raises(ValueError, match=r"Inputs have incompatible shapes. Received shapes \(3,\) and \(4,\)"):
        cls()([a, np.ones((2, 4), np.float32)])
    with pytest.raises(ValueError, match=r"Cannot merge tensors with different batch sizes"):
        cls()([a, np.ones((3, 3), np.float32)])
    with pytest.raises(ValueError, match=r"list of inputs"):
        cls().compute_output_shape((None, 3))
    layer = cls()
    layer([a, a])
    with pytest.raises(ValueError, match=r"incompatible shapes"):  # checked on every call, not only the first
        layer([a, np.ones((2, 5), np.float32)])


def test_empty_list_is_refused():
    with pytest.raises(ValueError, match=r"at least 1 input"):
        Add().compute_output_shape([])
    with pytest.raises(ValueError, match=r"A merge layer should be called on a list of inputs"):
        Add()([])  # an empty list is an empty array to Layer.__call__


# ---------------------------------------------------------------- Concatenate


@pytest.mark.parametrize("axis", [-1, 1, 2, -2])
def test_concatenate_values_and_shapes(axis):
    rng = np.random.default_rng(5)
    shapes = [(2, 3, 4), (2, 3, 4), (2, 3, 4)]
    for i, s in enumerate(shapes):
        s = list(s)
        s[axis] += i
        shapes[i] = tuple(s)
    xs = inputs(rng, *shapes)
    layer = Concatenate(axis=axis, dtype="float64")
    y = to_np(layer(xs))
    np.testing.assert_array_equal(y, np.concatenate(xs, axis=axis))
    assert layer.compute_output_shape(shapes) == y.shape
    np.testing.assert_array_equal(to_np(concatenate(xs, axis=axis, dtype="float64")), y)
    check_op_gradients(lambda *ts: Concatenate(axis=axis, dtype="float64")(list(ts)), *xs)


def test_concatenate_shapes_with_unknown_sizes():
    layer = Concatenate(axis=1)
    assert layer.compute_output_shape([(None, 4, 3), (None, 2, 3)]) == (None, 6, 3)
    assert layer.compute_output_shape([(None, None, 3), (None, 2, 3)]) == (None, None, 3)
    assert layer.compute_output_shape([(None, 4, None), (None, 2, 3)]) == (None, 6, 3)
    assert Concatenate().compute_output_shape([(None, 5)]) == (None, 5)


def test_concatenate_errors():
    a = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"requires inputs with matching shapes except for the concatenation axis"):
        Concatenate()([a, np.ones((2, 4, 3), np.float32)])
    with pytest.raises(ValueError, match=r"requires inputs with matching shapes"):
        Concatenate(axis=1)([np.ones((2, 4, 3), np.float32), np.ones((2, 4, 2), np.float32)])
    with pytest.raises(ValueError, match=r"requires inputs with matching shapes"):
        Concatenate()([a, np.ones((3, 3), np.float32)])  # the batch axis too
    with pytest.raises(ValueError, match=r"axis 2 is out of range for inputs of rank 2"):
        Concatenate(axis=2)([a, a])
    with pytest.raises(ValueError, match=r"should be called on a list"):
        Concatenate()(a)
    with pytest.raises(TypeError, match=r"`axis`.*'1'"):
        Concatenate(axis="1")
    with pytest.raises(TypeError, match=r"`axis`.*True"):
        Concatenate(axis=True)


# ---------------------------------------------------------------- Dot


def batch_dot_ref(x, y, a1, a2):
    """Float64 batch_dot: sum over x's axis a1 and y's axis a2, per sample (a loop over the batch)."""
    out = np.stack([np.tensordot(x[i], y[i], axes=(a1 - 1, a2 - 1)) for i in range(x.shape[0])])
    return out.reshape(out.shape[0], 1) if out.ndim == 1 else out


DOT_CASES = [
    ((2, 3), (2, 3), 1),
    ((2, 3), (2, 3), -1),
    ((2, 3, 5), (2, 4, 3), (1, 2)),
    ((2, 5, 3), (2, 3), (2, 1)),
    ((2, 3), (2, 3, 4), (1, 1)),
    ((2, 2, 3, 4), (2, 4, 5), (-1, 1)),
    ((2, 3, 4), (2, 2, 3, 5), (1, -2)),
]


@pytest.mark.parametrize("s1,s2,axes", DOT_CASES)
def test_dot_values_shapes_and_gradients(s1, s2, axes):
    rng = np.random.default_rng(6)
    x, y = inputs(rng, s1, s2)
    layer = Dot(axes=axes, dtype="float64")
    out = to_np(layer([x, y]))
    pair = (axes, axes) if isinstance(axes, int) else axes
    a1, a2 = pair[0] % len(s1), pair[1] % len(s2)
    np.testing.assert_allclose(out, batch_dot_ref(x, y, a1, a2), rtol=1e-12, atol=1e-12)
    assert layer.compute_output_shape([s1, s2]) == out.shape
    assert layer.compute_output_shape([(None,) + s1[1:], (None,) + s2[1:]]) == (None,) + out.shape[1:]
    np.testing.assert_allclose(to_np(dot([x, y], axes=axes, dtype="float64")), out, rtol=1e-14)
    check_op_gradients(lambda p, q: Dot(axes=axes, dtype="float64")([p, q]), x, y)


def test_dot_normalize_gives_cosine_similarity():
    rng = np.random.default_rng(7)
    x, y = inputs(rng, (4, 5), (4, 5))
    cos = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
    np.testing.assert_allclose(to_np(Dot(axes=1, normalize=True, dtype="float64")([x, y]))[:, 0], cos, rtol=1e-12)
    check_op_gradients(lambda p, q: Dot(axes=1, normalize=True, dtype="float64")([p, q]), x, y)


def test_dot_fan_out():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 4))
    _, (dx,) = grad_of(lambda t: Dot(axes=1, dtype="float64")([t, t]), x)
    np.testing.assert_allclose(dx, 2 * x, rtol=1e-13)
    check_op_gradients(lambda t: Dot(axes=(1, 2), dtype="float64")([t, ops.transpose(t, (0, 2, 1))]),
                       rng.standard_normal((2, 3, 3)))


@pytest.mark.parametrize(
    "kwargs,error,pattern",
    [
        (dict(axes="a"), TypeError, r"Invalid type for argument `axes`: it should be a list or an int. Received: axes='a'"),
        (dict(axes=(1, 2, 3)), ValueError, r"it should contain two elements. Received: axes=\(1, 2, 3\)"),
        (dict(axes=(1, 2.0)), ValueError, r"list elements should be integers. Received: axes=\(1, 2.0\)"),
        (dict(axes=[[1], [2]]), ValueError, r"list elements should be integers"),
        (dict(axes=0), ValueError, r"axis 0, the batch axis. Received: axes=0"),
        (dict(axes=(1, 0)), ValueError, r"batch axis. Received: axes=\(1, 0\)"),
        (dict(axes=True), TypeError, r"axes=True"),
        (dict(axes=1, normalize="yes"), TypeError, r"normalize.*'yes'"),
    ],
)
def test_dot_bad_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        Dot(**kwargs)


def test_dot_bad_inputs():
    a = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"Incompatible input shapes: axis values 3 \(at axis 1\) != 4 \(at axis 1\)"):
        Dot(axes=1)([a, np.ones((2, 4), np.float32)])
    with pytest.raises(ValueError, match=r"A `Dot` layer should be called on a list of 2 inputs"):
        Dot(axes=1)([a, a, a])
    with pytest.raises(ValueError, match=r"A `Dot` layer should be called on a list of 2 inputs"):
        Dot(axes=1)(a)
    with pytest.raises(ValueError, match=r"Cannot perform batch_dot over axis 0"):
        Dot(axes=-2)([a, a])
    with pytest.raises(ValueError, match=r"axis 3 is out of range"):
        Dot(axes=3)([a, a])
    with pytest.raises(ValueError, match=r"rank < 2"):
        Dot(axes=1).compute_output_shape([(2,), (2, 3)])
    with pytest.raises(ValueError, match=r"different batch sizes"):
        Dot(axes=1)([a, np.ones((3, 3), np.float32)])


# ---------------------------------------------------------------- configs, names, Keras parity


def test_configs_and_registration():
    assert Concatenate(axis=1, name="c").get_config()["axis"] == 1
    config = Dot(axes=[1, 2], normalize=True, name="d").get_config()
    assert config["axes"] == [1, 2] and config["normalize"] is True
    for cls in (Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate, Dot):
        assert gl.LAYER_CLASSES[cls.__name__] is cls
        layer = cls(axes=1) if cls is Dot else cls()
        assert gl.deserialize(gl.serialize(layer)).get_config() == layer.get_config()
    assert set(Add(name="a").get_config()) == {"name", "trainable", "dtype"}


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    return pytest.importorskip("keras")


KERAS_CASES = [
    ("Add", {}, [(2, 3, 4), (2, 3, 4), (2, 1, 4)]),
    ("Add", {}, [(2, 4), (2, 3, 4)]),
    ("Subtract", {}, [(2, 3), (2, 3)]),
    ("Multiply", {}, [(2, 3, 4), (2, 3, 1)]),
    ("Average", {}, [(2, 5), (2, 5), (2, 5)]),
    ("Maximum", {}, [(2, 3), (2, 3)]),
    ("Minimum", {}, [(2, 2, 3), (2, 3)]),
    ("Concatenate", {"axis": 1}, [(2, 2, 3), (2, 4, 3)]),
    ("Concatenate", {}, [(2, 3), (2, 5)]),
    ("Dot", {"axes": (1, 2)}, [(2, 3, 5), (2, 4, 3)]),
    ("Dot", {"axes": -1, "normalize": True}, [(2, 4), (2, 4)]),
    ("Dot", {"axes": 1}, [(2, 3), (2, 3, 2)]),
]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name,kwargs,shapes", KERAS_CASES)
def test_matches_keras(name, kwargs, shapes):
    keras = _keras()
    rng = np.random.default_rng(9)
    xs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    theirs = getattr(keras.layers, name)(name="m", **kwargs)
    ours = getattr(gl, name)(name="m", **kwargs)
    expected = keras.ops.convert_to_numpy(theirs(xs))
    np.testing.assert_allclose(to_np(ours(xs)), expected, rtol=1e-5, atol=1e-6)
    symbolic = [(None,) + s[1:] for s in shapes]
    assert ours.compute_output_shape(symbolic) == tuple(theirs.compute_output_shape(symbolic))
    assert ours.get_config() == theirs.get_config()
    clone = getattr(gl, name).from_config(theirs.get_config())
    np.testing.assert_allclose(to_np(clone(xs)), expected, rtol=1e-5, atol=1e-6)
