"""gpulayers.utils.to_categorical and normalize: Keras's semantics, against Keras and plain NumPy."""

import os

import numpy as np
import pytest

import gpulayers
from gpulayers import config
from gpulayers.numerical_utils import normalize, to_categorical

RNG = np.random.default_rng(7)


def keras_numerical_utils():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    return pytest.importorskip("keras.src.utils.numerical_utils", reason="Keras 3 is not installed: the comparison needs it")


def one_hot_reference(labels, num_classes):
    return (np.asarray(labels)[..., None] == np.arange(num_classes)).astype(np.float64)


@pytest.mark.parametrize(
    "shape, expected",
    [((), (5,)), ((1,), (1, 5)), ((3,), (3, 5)), ((4, 3), (4, 3, 5)), ((5, 4, 3), (5, 4, 3, 5)),
     ((3, 1), (3, 5)), ((3, 2, 1), (3, 2, 5)), ((1, 1), (1, 5)), ((0,), (0, 5))],
)
def test_to_categorical_shapes_dtype_and_values(shape, expected):
    labels = RNG.integers(0, 5, shape)
    one_hot = to_categorical(labels, 5)
    assert one_hot.shape == expected and one_hot.dtype == np.float64
    squeezed = labels.reshape(expected[:-1])
    np.testing.assert_array_equal(one_hot, one_hot_reference(squeezed, 5))


def test_to_categorical_matches_keras():
    keras_utils = keras_numerical_utils()
    cases = [([0, 2, 5], None), ([[1], [0], [3]], 4), (np.array([[2, 0], [1, 1]], np.uint8), 3), (3, 6),
             ([1.7, 0.2, 2.9], None), (np.zeros((2, 3, 1), np.int32), 0), ([True, False], None)]
    for x, num_classes in cases:
        ours, theirs = to_categorical(x, num_classes), keras_utils.to_categorical(x, num_classes)
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype, (x, num_classes)
        np.testing.assert_array_equal(ours, theirs)


def test_to_categorical_infers_num_classes():
    assert to_categorical([0, 2, 5]).shape == (3, 6)
    assert to_categorical([0, 2, 5], 0).shape == (3, 6)  # 0 means "infer", as in Keras


def test_to_categorical_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"`x`.*>= 0.*-1"):
        to_categorical([0, -1, 2], 3)  # Keras's NumPy indexing would mark the last class instead
    with pytest.raises(ValueError, match=r"num_classes=3.*holding 3"):
        to_categorical([0, 3], 3)
    with pytest.raises(ValueError, match=r"Received: num_classes=-2"):
        to_categorical([0], -2)
    with pytest.raises(ValueError, match=r"num_classes=2\.5"):
        to_categorical([0], 2.5)
    with pytest.raises(ValueError, match=r"num_classes=True"):
        to_categorical([0], True)
    with pytest.raises(ValueError, match="empty"):
        to_categorical([])
    with pytest.raises(ValueError, match=r"`x`.*NaN"):
        to_categorical([0.0, np.nan], 2)
    with pytest.raises(ValueError, match=r"`x`"):
        to_categorical(["a", "b"], 2)


def test_to_categorical_of_a_tensor_is_a_tensor_of_floatx():
    labels = gpulayers.ops.convert_to_tensor(np.array([[0], [2], [1]]))
    out = to_categorical(labels, 3)
    assert isinstance(out, gpulayers.Tensor) and out.shape == (3, 3) and str(out.dtype) == config.floatx()
    np.testing.assert_array_equal(np.asarray(out), np.eye(3)[[0, 2, 1]])
    assert to_categorical(gpulayers.ops.convert_to_tensor([0, 3])).shape == (2, 4)
    with pytest.raises(ValueError, match="`x`"):
        to_categorical(gpulayers.ops.convert_to_tensor([0, 3]), 3)
    with pytest.raises(ValueError, match="`x`"):
        to_categorical(gpulayers.ops.convert_to_tensor([0.5, 1.0]), 3)


def normalize_reference(x, axis, order):
    norm = np.linalg.norm(x, order, axis, keepdims=True)
    return x / np.where(norm == 0, 1, norm)


@pytest.mark.parametrize("order", [1, 2, 3, np.inf])
@pytest.mark.parametrize("axis", [-1, 1, -2])
def test_normalize_numpy_reference(order, axis):
    x = RNG.standard_normal((3, 4, 5)).astype(np.float32)
    x[1, :, 2] = 0  # a zero vector stays zero (its norm is taken as 1)
    x[2, 0, :] = 0
    out = normalize(x, axis=axis, order=order)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, normalize_reference(x, axis, order), rtol=1e-6, atol=0)
    assert np.isfinite(out).all()


def test_normalize_matches_keras():
    keras_utils = keras_numerical_utils()
    cases = [(RNG.uniform(size=(3, 3)), -1, 2), (RNG.uniform(size=(3, 3)).astype(np.float32), -1, 1),
             (RNG.integers(-3, 4, (4, 2)), 1, 2), (RNG.standard_normal((2, 3, 4)), -2, 3),
             (np.array([3.0, 4.0]), -1, 2), (np.zeros((2, 3), np.float32), -1, 2),
             (RNG.standard_normal((2, 5)), -1, np.inf)]
    for x, axis, order in cases:
        ours, theirs = normalize(x, axis, order), keras_utils.normalize(x, axis, order)
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype, (x.shape, axis, order)
        np.testing.assert_array_equal(ours, theirs)  # the same NumPy calls: the same bits


def test_normalize_axis_0_normalizes_axis_0():
    # Keras's NumPy path turns axis=0 into -1 (`axis or -1`), dividing by the wrong norms; gpulayers does not.
    x = RNG.uniform(size=(3, 4))
    np.testing.assert_allclose(normalize(x, axis=0), x / np.linalg.norm(x, axis=0, keepdims=True))
    assert normalize(np.array([3.0, 4.0]), axis=0).shape == (1, 2)  # a vector gives (1, n), as in Keras


def test_normalize_of_other_inputs_goes_to_ops():
    out = normalize([[3.0, 4.0]])
    assert isinstance(out, gpulayers.Tensor)
    np.testing.assert_allclose(np.asarray(out), [[0.6, 0.8]], rtol=1e-6)
    t = normalize(gpulayers.ops.convert_to_tensor(np.array([[0.0, 2.0]], np.float32)), order=1)
    np.testing.assert_allclose(np.asarray(t), [[0.0, 1.0]])


def test_normalize_errors_name_the_argument():
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match=r"Received: axis=2"):
        normalize(x, axis=2)
    with pytest.raises(ValueError, match=r"Received: axis=None"):
        normalize(x, axis=None)
    with pytest.raises(ValueError, match=r"Received: order='fro'"):
        normalize(x, order="fro")
    with pytest.raises(ValueError, match=r"`x`"):
        normalize(np.array(1.0))


def test_exported_from_gpulayers_utils():
    assert gpulayers.utils.to_categorical is to_categorical and gpulayers.utils.normalize is normalize
