"""Lambda: calls, output shapes, gradients, Keras's config, and loading that never runs code from a config
(safe mode, custom objects, registration); object_registration's safe_mode_scope."""

import marshal
import os
import threading

import numpy as np
import pytest

from gpulayers import layers as gl, object_registration, ops
from gpulayers.layers import Dense, Input, Lambda
from gpulayers.models import Sequential
from gpulayers.object_registration import custom_object_scope, in_safe_mode, safe_mode_scope
from helpers import check_layer_gradients, check_op_gradients, to_np


def double(x):
    return x * 2


def scale(x, factor=1.0, training=None, mask=None):
    return x * factor * (10.0 if training else 1.0)


# ---------------------------------------------------------------- calling


def test_call_with_arguments_and_training():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(to_np(Lambda(double)(x)), 2 * x)
    layer = Lambda(scale, arguments={"factor": 3.0})
    np.testing.assert_array_equal(to_np(layer(x)), 3 * x)
    np.testing.assert_array_equal(to_np(layer(x, training=True)), 30 * x)
    assert layer._fn_expects_training_arg and layer._fn_expects_mask_arg
    pair = Lambda(lambda xs: ops.concatenate([xs[0], xs[1] * 2], axis=-1))
    np.testing.assert_array_equal(to_np(pair([x, x])), np.concatenate([x, 2 * x], axis=-1))


def test_gradients_flow_through_the_function():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3))
    check_layer_gradients(Lambda(lambda t: ops.sin(t) * t, dtype="float64"), x)
    check_op_gradients(lambda a, b: Lambda(lambda ts: ts[0] * ts[1] + ts[0], dtype="float64")([a, b]), x, x[::-1])
    check_op_gradients(lambda a: Lambda(lambda ts: ts[0] * ts[1], dtype="float64")([a, a]), x)  # fan-out


def test_output_shapes():
    assert Lambda(double).compute_output_shape((None, 4)) == (None, 4)  # traced on zeros
    assert Lambda(lambda t: ops.sum(t, axis=1)).compute_output_shape((None, 4, 5)) == (None, 5)
    assert Lambda(double, output_shape=(7,)).compute_output_shape((3, 4)) == (3, 7)
    assert Lambda(double, output_shape=[2, None]).compute_output_shape((None, 4)) == (None, 2, None)
    assert Lambda(double, output_shape=lambda s: s[:1] + (9,)).compute_output_shape((5, 4)) == (5, 9)
    two = Lambda(lambda ts: [ts[0], ts[1]], output_shape=[(3,), (4, 2)])
    assert two.compute_output_shape([(6, 1), (6, 2)]) == [(6, 3), (6, 4, 2)]
    with pytest.raises(NotImplementedError, match=r"could not automatically infer the shape"):
        Lambda(lambda t: t.no_such_method()).compute_output_shape((None, 3))


def test_in_a_sequential_model():
    model = Sequential([Input(shape=(3,)), Lambda(lambda t: t * 2), Dense(2)])
    assert model.output_shape == (None, 2)
    x = np.ones((4, 3), np.float32)
    kernel, bias = model.layers[-1].get_weights()
    np.testing.assert_allclose(model.predict(x, verbose=0), (2 * x) @ kernel + bias, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs,error,pattern",
    [
        (dict(function=3), TypeError, r"`function`.*function=3"),
        (dict(function=double, output_shape="abc"), TypeError, r"`output_shape`.*'abc'"),
        (dict(function=double, output_shape=(2, -1)), TypeError, r"`output_shape`"),
        (dict(function=double, arguments=[1]), TypeError, r"`arguments`.*\[1\]"),
        (dict(function=double, arguments={1: 2}), TypeError, r"`arguments`"),
        (dict(function=double, nope=1), TypeError, r"nope"),
    ],
)
def test_bad_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        Lambda(**kwargs)


# ---------------------------------------------------------------- config


def test_named_function_config_as_keras_writes_it():
    config = Lambda(double, output_shape=(3,), arguments={"a": 1, "w": np.array([1.0, 2.0])}, name="l").get_config()
    assert config["function"] == {"module": "builtins", "class_name": "function", "config": "double",
                                  "registered_name": "function"}
    assert config["output_shape"] == (3,)
    assert config["arguments"] == {"a": 1, "w": {"class_name": "__numpy__",
                                                 "config": {"value": [1.0, 2.0], "dtype": "float64"}}}
    assert "mask" not in config and list(config)[-1] == "arguments"
    assert Lambda(double, mask=double).get_config()["mask"]["config"] == "double"


def test_python_lambda_config_is_kerass_bytecode_entry():
    fn = lambda t, k=2: t * k  # noqa: E731
    entry = Lambda(fn).get_config()["function"]
    assert entry["class_name"] == "__lambda__" and set(entry["config"]) == {"code", "defaults", "closure"}
    assert entry["config"]["defaults"] == (2,) and entry["config"]["closure"] is None
    shape_entry = Lambda(double, output_shape=lambda s: s).get_config()["output_shape"]
    assert shape_entry["class_name"] == "__lambda__"


def test_registered_function_round_trip():
    @object_registration.register_keras_serializable(package="lambda_test")
    def triple(x):
        return x * 3

    try:
        layer = Lambda(triple, name="t")
        config = layer.get_config()
        assert config["function"]["config"] == "lambda_test>triple"
        for safe in (True, False):  # the program registered it: resolved in safe mode too, as Keras does
            clone = Lambda.from_config(config, safe_mode=safe)
            assert clone.function is triple
        assert gl.deserialize(gl.serialize(layer)).get_config() == config
    finally:
        object_registration._GLOBAL_CUSTOM_OBJECTS.pop("lambda_test>triple", None)
        object_registration._GLOBAL_CUSTOM_NAMES.pop(triple, None)


def test_named_function_from_custom_objects_and_scopes():
    config = Lambda(double, output_shape=(4,), arguments={"w": np.array([1, 2])}, name="l").get_config()
    clone = Lambda.from_config(config, custom_objects={"double": double})
    assert clone.function is double and clone._output_shape == (4,)
    assert isinstance(clone.arguments["w"], np.ndarray) and clone.arguments["w"].dtype == np.int64
    with custom_object_scope({"double": double}):
        assert Lambda.from_config(config).function is double
        assert gl.deserialize({"class_name": "Lambda", "config": config}).function is double
    assert gl.deserialize({"class_name": "Lambda", "config": config}, custom_objects={"double": double}).function \
        is double
    with pytest.raises(ValueError, match=r"Could not locate function 'double'.*custom_objects"):
        Lambda.from_config(config)


def test_no_module_named_in_a_config_is_imported():
    for safe in (True, False):
        for entry in ({"module": "os", "class_name": "function", "config": "getcwd", "registered_name": "function"},
                      {"module": "os", "class_name": "function", "config": "os.getcwd", "registered_name": "os.getcwd"},
                      "getcwd"):
            with pytest.raises(ValueError, match=r"Could not locate function|No module named in a config"):
                Lambda.from_config({"function": entry}, safe_mode=safe)


def test_bytecode_is_never_loaded(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("marshal.loads called")

    monkeypatch.setattr(marshal, "loads", forbidden)
    config = Lambda(lambda t: t + 1, name="l").get_config()
    with pytest.raises(ValueError, match=r"Requested the deserialization of a `Lambda` layer whose `function` is a "
                                         r"Python lambda.*safe_mode=False"):
        Lambda.from_config(config)
    with pytest.raises(ValueError, match=r"never unmarshals or runs bytecode.*custom_objects"):
        Lambda.from_config(config, safe_mode=False)
    with safe_mode_scope(False):
        with pytest.raises(ValueError, match=r"never unmarshals or runs bytecode"):
            Lambda.from_config(config)
        with pytest.raises(ValueError, match=r"Requested the deserialization"):
            Lambda.from_config(config, safe_mode=True)  # an explicit argument wins over the scope
    named = Lambda(double, output_shape=lambda s: s, name="l").get_config()  # the lambda is the output_shape
    with pytest.raises(ValueError, match=r"Requested the deserialization"):
        Lambda.from_config(named, custom_objects={"double": double})
    with pytest.raises(ValueError, match=r"'Lambda'"):
        Lambda.from_config({})


def test_safe_mode_scope():
    assert in_safe_mode() is True
    with safe_mode_scope(False):
        assert in_safe_mode() is False
        with safe_mode_scope(True):
            assert in_safe_mode() is True
        with safe_mode_scope(None):
            assert in_safe_mode() is False
        seen = []
        thread = threading.Thread(target=lambda: seen.append(in_safe_mode()))
        thread.start()
        thread.join()
        assert seen == [True]  # each thread has its own
    assert in_safe_mode() is True
    with pytest.raises(TypeError, match=r"safe_mode.*'no'"):
        safe_mode_scope("no")


# ---------------------------------------------------------------- Keras parity


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    return pytest.importorskip("keras")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_configs_match_keras_and_keras_loads_ours():
    keras = _keras()
    fn = lambda t, k=2.0: t * k  # noqa: E731
    for args in [dict(function=double, output_shape=(3,), arguments={"a": 1}),
                 dict(function=fn),
                 dict(function=double, output_shape=lambda s: s, mask=double)]:
        theirs = keras.layers.Lambda(name="l", **args).get_config()
        assert Lambda(name="l", **args).get_config() == theirs
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    restored = keras.layers.Lambda.from_config(Lambda(fn, name="l").get_config(), safe_mode=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(x)), 2 * x)
    # Keras's config of a named function loads here when the program knows the function.
    theirs = keras.layers.Lambda(double, output_shape=(3,), name="l").get_config()
    clone = Lambda.from_config(theirs, custom_objects={"double": double})
    np.testing.assert_array_equal(to_np(clone(x)), 2 * x)
    with pytest.raises(ValueError, match=r"Requested the deserialization"):
        Lambda.from_config(keras.layers.Lambda(fn, name="l").get_config())
