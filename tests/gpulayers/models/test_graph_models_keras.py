"""A two-output functional model with residual blocks, in gpulayers and in Keras 3: the same numbers.

The same graph (same layer names) is built in both libraries, Keras's initial
weights are copied into gpulayers, both are compiled alike (a list or a dict
of losses, loss weights, per-output metrics) and trained with the same
optimizer on the same batches: the per-epoch logs (the same keys), the final
weights, ``predict`` and ``evaluate`` agree within float32 tolerance.

Runs only where Keras 3 imports with a backend that trains (torch is tried
when KERAS_BACKEND is unset).
"""

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
try:
    import keras
except Exception as exc:  # not installed, or its backend is missing
    pytest.skip(f"Keras 3 is not importable here ({type(exc).__name__}: {exc})", allow_module_level=True)

import gpulayers

pytestmark = pytest.mark.skipif(keras.backend.backend() == "numpy", reason="Keras's numpy backend cannot train")

LOSS_RTOL = 2e-4  # float32 through a few epochs: the existing parity tests' tolerances
WEIGHT_RTOL, WEIGHT_ATOL = 2e-3, 2e-4


def build(lib, dict_outputs=False):
    """The same graph from either library (``lib`` is keras or gpulayers): a convolutional residual block
    with BatchNormalization, a Dense residual connection, a softmax classifier and a regression head."""
    L = lib.layers
    if lib is keras:
        keras.utils.set_random_seed(0)  # Keras draws the initial weights, which gpulayers then copies
    inputs = lib.Input((8, 8, 3), name="image")
    x = L.Conv2D(4, 3, padding="same", name="conv_in")(inputs)
    h = L.BatchNormalization(name="bn1")(x)
    h = L.Activation("relu", name="relu1")(h)
    # No bias before this BatchNormalization (as in ResNets): BN cancels it, so its gradient is round-off,
    # which Adam would scale up into full steps that differ between any two implementations.
    h = L.Conv2D(4, 3, padding="same", use_bias=False, name="conv2")(h)
    h = L.BatchNormalization(name="bn2")(h)
    x = L.Add(name="add")([x, h])
    x = L.Activation("relu", name="relu2")(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    d = L.Dense(8, activation="tanh", name="dense")(x)
    d = L.add([d, L.Dense(8, name="dense_res")(d)], name="add_dense")
    cls = L.Dense(3, activation="softmax", name="cls")(d)
    reg = L.Dense(2, name="reg")(d)
    return lib.Model(inputs, {"cls": cls, "reg": reg} if dict_outputs else [cls, reg], name="two_heads")


def data(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8, 8, 3)).astype("float32")
    return x, rng.integers(0, 3, n), rng.standard_normal((n, 2)).astype("float32")


CASES = {
    "list-sgd": dict(
        optimizer=("SGD", dict(learning_rate=0.05, momentum=0.9)),
        loss=["sparse_categorical_crossentropy", "mse"],
        loss_weights=[1.0, 0.5],
        metrics=[["accuracy"], ["mae"]],
    ),
    "dict-adam": dict(
        optimizer=("Adam", dict(learning_rate=0.01)),
        loss={"cls": "sparse_categorical_crossentropy", "reg": "mse"},
        loss_weights={"cls": 0.7, "reg": 0.3},
        metrics={"cls": ["sparse_categorical_accuracy"], "reg": ["mae", "mse"]},
    ),
    "dict-outputs-adam": dict(
        dict_outputs=True,
        optimizer=("Adam", dict(learning_rate=0.01, amsgrad=True)),
        loss={"cls": "sparse_categorical_crossentropy", "reg": "mae"},
        loss_weights={"cls": 1.0, "reg": 2.0},
        metrics={"cls": ["accuracy"], "reg": ["mse"]},
    ),
}


def compiled_pair(case):
    spec = dict(CASES[case])
    dict_outputs = spec.pop("dict_outputs", False)
    name, kwargs = spec.pop("optimizer")
    theirs, ours = build(keras, dict_outputs), build(gpulayers, dict_outputs)
    assert [layer.name for layer in ours.layers] == [layer.name for layer in theirs.layers]
    ours.set_weights(theirs.get_weights())
    theirs.compile(optimizer=getattr(keras.optimizers, name)(**kwargs), **spec)
    ours.compile(optimizer=getattr(gpulayers.optimizers, name)(**kwargs), **spec)
    return ours, theirs, dict_outputs


def targets(y_cls, y_reg, dict_form):
    return {"cls": y_cls, "reg": y_reg} if dict_form else [y_cls, y_reg]


def assert_outputs_close(ours, theirs, rtol, atol):
    if isinstance(theirs, dict):
        assert isinstance(ours, dict) and sorted(ours) == sorted(theirs)
        pairs = [(ours[k], theirs[k]) for k in theirs]
    else:
        assert isinstance(ours, list) and len(ours) == len(theirs)
        pairs = list(zip(ours, theirs))
    for a, b in pairs:
        np.testing.assert_allclose(a, np.asarray(b), rtol=rtol, atol=atol)


def test_same_graph_names_and_weights_as_keras():
    theirs, ours = build(keras), build(gpulayers)
    assert [layer.name for layer in ours.layers] == [layer.name for layer in theirs.layers]
    assert [tuple(w.shape) for w in ours.weights] == [tuple(w.shape) for w in theirs.weights]
    assert [w.path for w in ours.weights] == [w.path for w in theirs.weights]
    assert ours.output_names == theirs.output_names == ["cls", "reg"]
    ours.set_weights(theirs.get_weights())
    x, _, _ = data(16, seed=1)
    assert_outputs_close(ours.predict(x, verbose=0), theirs.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", list(CASES))
def test_two_heads_train_like_keras(case):
    ours, theirs, dict_outputs = compiled_pair(case)
    x, y_cls, y_reg = data(48, seed=0)
    xv, yv_cls, yv_reg = data(16, seed=1)
    y, yv = targets(y_cls, y_reg, dict_outputs), targets(yv_cls, yv_reg, dict_outputs)
    fit = dict(batch_size=8, epochs=3, shuffle=False, verbose=0)
    h_theirs = theirs.fit(x, y, validation_data=(xv, yv), **fit).history
    h_ours = ours.fit(x, y, validation_data=(xv, yv), **fit).history
    assert sorted(h_ours) == sorted(h_theirs)
    for key in h_theirs:
        np.testing.assert_allclose(h_ours[key], h_theirs[key], rtol=LOSS_RTOL, atol=1e-6, err_msg=key)
    assert len(ours.get_weights()) == len(theirs.get_weights())
    for w, a, b in zip(theirs.weights, ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=WEIGHT_RTOL, atol=WEIGHT_ATOL, err_msg=w.path)
    assert_outputs_close(ours.predict(xv, verbose=0), theirs.predict(xv, verbose=0), rtol=1e-3, atol=1e-4)
    e_ours, e_theirs = ours.evaluate(xv, yv, verbose=0), theirs.evaluate(xv, yv, verbose=0)
    assert len(e_ours) == len(e_theirs)
    np.testing.assert_allclose(e_ours, e_theirs, rtol=LOSS_RTOL, atol=1e-6)
    d_ours = ours.evaluate(xv, yv, verbose=0, return_dict=True)
    d_theirs = theirs.evaluate(xv, yv, verbose=0, return_dict=True)
    assert sorted(d_ours) == sorted(d_theirs)
    for key in d_theirs:
        assert d_ours[key] == pytest.approx(d_theirs[key], rel=LOSS_RTOL, abs=1e-6), key
