"""Variables: Keras 3's constructor, assignment, and arithmetic on the tape."""

import numpy as np
import pytest

from gpulayers import autodiff, ops, regularizers
from gpulayers.variables import Variable
from helpers import to_np


def test_a_variable_from_a_value_or_an_initializer():
    v = Variable(np.array([[1.0, 2.0]], dtype=np.float32), name="w")
    assert v.shape == (1, 2) and v.dtype == "float32" and v.trainable and v.name == "w" and v.path == "w"
    z = Variable("zeros", shape=(2, 3), dtype="float64", trainable=False)
    assert z.dtype == "float64" and not z.trainable and float(ops.sum(z)) == 0.0
    assert Variable(3.0).dtype == "float32"  # a Python float: floatx()
    with pytest.raises(ValueError, match="shape"):
        Variable("ones")
    with pytest.raises(ValueError, match="name"):
        Variable(np.ones(1), name="a/b")
    with pytest.raises(ValueError, match="aggregation"):
        Variable(np.ones(1), aggregation="max")


def test_assign_never_aliases_and_checks_the_shape():
    source = np.ones(3, dtype=np.float32)
    v = Variable(source, name="v")
    source[0] = 5.0
    assert float(v[0]) == 1.0  # the constructor copied
    value = np.full(3, 2.0)
    v.assign(value)
    value[0] = 7.0
    assert v.dtype == "float32" and float(v[0]) == 2.0
    v.assign_add(np.ones(3))
    v.assign_sub(ops.ones(3) * 0.5)
    np.testing.assert_allclose(v.numpy(), [2.5, 2.5, 2.5])
    with pytest.raises(ValueError, match="shape"):
        v.assign(np.ones(4))
    with pytest.raises(TypeError, match="boolean"):
        bool(v)


def test_variables_take_part_in_arithmetic_and_get_gradients():
    v = Variable(np.array([1.0, -2.0]), name="v")
    with autodiff.GradientTape() as tape:
        loss = ops.sum(v * 2.0) + regularizers.L2(0.5)(v) + ops.sum(np.ones(2) @ v)
    (g,) = tape.gradient(loss, [v])
    np.testing.assert_allclose(to_np(g), 2.0 + 0.5 * 2 * np.array([1.0, -2.0]) + 1.0)
    assert isinstance(v[0] + 1, autodiff.Tensor)
