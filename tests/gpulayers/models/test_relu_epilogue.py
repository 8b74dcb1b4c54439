"""A BatchNormalization whose only use is a plain ReLU runs as one call (models/functional.py).

The fused models must train to the same bits as the same models with the
fusion turned off; only the patterns the rule names are fused.
"""

import numpy as np
import pytest

import gpulayers
from gpulayers import layers, optimizers
from gpulayers.models import functional


def _stack(relu):
    return [
        layers.Conv2D(4, 3, padding="same"),
        layers.BatchNormalization(),
        relu,
        layers.Flatten(),
        layers.Dense(3, activation="softmax"),
    ]


def _sequential(relu):
    return gpulayers.Sequential([layers.Input((6, 6, 2))] + _stack(relu))


def _functional(relu):
    x = inputs = layers.Input((6, 6, 2))
    for layer in _stack(relu):
        x = layer(x)
    return gpulayers.Model(inputs, x)


def _train(make, relu):
    gpulayers.set_random_seed(3)
    model = make(relu)
    model.compile(optimizer=optimizers.SGD(0.1, momentum=0.9), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 6, 6, 2)).astype("float32")
    y = rng.integers(0, 3, 16)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    return model, history.history["loss"], [np.asarray(w) for w in model.get_weights()], model.predict(x, verbose=0)


@pytest.mark.parametrize("make", [_sequential, _functional], ids=["sequential", "functional"])
@pytest.mark.parametrize("relu", [lambda: layers.Activation("relu"), lambda: layers.ReLU()], ids=["activation", "relu"])
def test_fused_training_gives_the_bits_of_the_separate_layers(make, relu, monkeypatch):
    fused, loss, weights, pred = _train(make, relu())
    if make is _functional:
        assert len(fused._relu_epilogues) == 1
    monkeypatch.setattr(functional, "fuses_relu", lambda bn, act: False)
    reference, want_loss, want_weights, want_pred = _train(make, relu())
    if make is _functional:
        assert not reference._relu_epilogues
    assert loss == want_loss
    for a, b in zip(weights, want_weights, strict=True):  # the moving statistics too
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(pred, want_pred)


def test_only_a_plain_relu_that_is_the_only_use_is_fused():
    x = inputs = layers.Input((5,))
    bn1, bn2, bn3, bn4 = (layers.BatchNormalization() for _ in range(4))
    a = layers.Activation("relu")(bn1(x))  # fused
    b_out = bn2(x)
    b = layers.Add()([layers.Activation("relu")(b_out), b_out])  # the normalization's output is used twice
    c = layers.ReLU(max_value=6.0)(bn3(x))  # not a plain ReLU
    d_out = bn4(x)
    d = layers.Activation("relu")(d_out)  # its input is also a model output
    model = gpulayers.Model(inputs, [a, b, c, d, d_out])
    fused = {model._graph_nodes[i].operation.name for i, n in enumerate(model._graph_nodes)
             if id(n) in model._relu_epilogues}
    assert fused == {bn1.name}
    out = model(np.random.default_rng(1).standard_normal((4, 5)).astype("float32"), training=True)
    assert all(np.isfinite(np.asarray(o)).all() for o in out)


def test_a_frozen_normalization_fuses_with_its_relu_too(monkeypatch):
    def make(relu):
        model = _sequential(relu)
        model.layers[1].trainable = False  # inference statistics inside a training step
        return model

    _, loss, weights, _ = _train(make, layers.Activation("relu"))
    monkeypatch.setattr(functional, "fuses_relu", lambda bn, act: False)
    _, want_loss, want_weights, _ = _train(make, layers.Activation("relu"))
    assert loss == want_loss
    for a, b in zip(weights, want_weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_normalization_made_outside_the_model_is_not_fused():
    # The model's input is the normalization's output: the model never calls the normalization.
    bn_out = layers.BatchNormalization()(layers.Input((3,)))
    model = gpulayers.Model(bn_out, layers.ReLU()(bn_out))
    assert not model._relu_epilogues
    np.testing.assert_array_equal(np.asarray(model(np.array([[-1.0, 2.0, -3.0]], "float32"))), [[0.0, 2.0, 0.0]])


def test_a_relu_changed_after_the_model_was_built_is_not_fused():
    x = inputs = layers.Input((3,))
    act = layers.Activation("relu")
    model = gpulayers.Model(inputs, act(layers.BatchNormalization()(x)))
    assert len(model._relu_epilogues) == 1
    act.activation = gpulayers.activations.linear
    out = np.asarray(model(np.array([[-1.0, 2.0, -3.0], [1.0, 0.0, 3.0]], "float32"), training=True))
    assert (out < 0).any()  # the linear activation now, not a ReLU
