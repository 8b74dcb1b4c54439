"""gpulayers.argument_validation: one rule per kind of argument, everywhere (Keras 3.15's rules)."""

import numpy as np
import pytest

from gpulayers import layers, losses, optimizers
from gpulayers.argument_validation import standardize_bool, standardize_int


@pytest.mark.parametrize("value", [True, False, 1, 0, np.bool_(True), np.int64(1)])
def test_bools_and_zero_or_one_are_booleans(value):
    assert standardize_bool(value, "flag") is bool(value)


@pytest.mark.parametrize("value", ["yes", 2, -1, 0.0, None, [1]])
def test_anything_else_is_not_a_boolean(value):
    with pytest.raises(TypeError, match=r"`flag`.*" + repr(value).replace("[", r"\[").replace("]", r"\]")):
        standardize_bool(value, "flag")


@pytest.mark.parametrize("value", [2.5, "3", None, True, 3.0, 0, -2])
def test_a_bad_int_is_a_value_error_naming_it(value):
    with pytest.raises(ValueError, match=f"`n`.*n={value!r}"):
        standardize_int(value, "n")
    assert standardize_int(np.int32(4), "n") == 4 and standardize_int(None, "n", allow_none=True) is None


def test_the_same_rule_for_every_boolean_argument():
    # Keras 3.15.1 accepts Dense(use_bias=1), BinaryCrossentropy(from_logits=1), SGD(nesterov=1): so does gpulayers,
    # and a string is refused the same way in each.
    made = [lambda v: layers.Dense(2, use_bias=v).use_bias, lambda v: losses.BinaryCrossentropy(from_logits=v).from_logits,
            lambda v: optimizers.SGD(momentum=0.5, nesterov=v).nesterov, lambda v: layers.BatchNormalization(center=v).center,
            lambda v: optimizers.schedules.ExponentialDecay(0.1, 10, 0.5, staircase=v).staircase]
    for make in made:
        assert make(1) is True and make(0) is False
        with pytest.raises(TypeError, match="expected a bool"):
            make("yes")


def test_the_same_rule_for_every_integer_argument():
    for make in (lambda v: layers.Dense(v), lambda v: layers.Conv2D(v, 3), lambda v: layers.Embedding(v, 2),
                 lambda v: layers.LSTM(v)):
        for bad in (2.5, "64", None):
            with pytest.raises(ValueError, match="expected an int"):
                make(bad)
