"""keras-io ``guides/sequential_model.py`` with the gpulayers imports: what it exercises.

Sequential models called on ``ops.ones``; ``layers``, ``add``, ``pop`` and
``name``; layers without weights until built; ``Input`` and ``input_shape``
giving a built model whose summary shows the output shapes; a Conv2D /
MaxPooling2D stack and GlobalMaxPooling2D; feature extractors made with
``keras.Model(inputs=model.inputs, outputs=...)`` from layer outputs and
``get_layer``; freezing layers with ``trainable = False``.
"""

import numpy as np
import pytest

import gpulayers as keras
from gpulayers import layers, ops
from programs.program_support import keras_or_skip


def test_a_sequential_model_is_its_layers_called_in_turn():
    model = keras.Sequential([
        layers.Dense(2, activation="relu", name="layer1"),
        layers.Dense(3, activation="relu", name="layer2"),
        layers.Dense(4, name="layer3"),
    ])
    x = ops.ones((3, 3))
    y = model(x)
    assert tuple(y.shape) == (3, 4)
    layer1, layer2, layer3 = model.layers
    np.testing.assert_array_equal(np.asarray(y), np.asarray(layer3(layer2(layer1(x)))))
    assert [layer.name for layer in model.layers] == ["layer1", "layer2", "layer3"]


def test_add_pop_and_name():
    model = keras.Sequential(name="my_sequential")
    for units in (2, 3, 4):
        model.add(layers.Dense(units))
    model.pop()
    assert len(model.layers) == 2 and model.name == "my_sequential"


def test_weights_appear_when_built():
    layer = layers.Dense(3)
    assert layer.weights == []
    layer(ops.ones((1, 4)))
    assert [tuple(w.shape) for w in layer.weights] == [(4, 3), (3,)]
    model = keras.Sequential([layers.Dense(2, activation="relu"), layers.Dense(3, activation="relu"), layers.Dense(4)])
    assert not model.built
    model(ops.ones((1, 4)))
    assert len(model.weights) == 6


@pytest.mark.parametrize("how", ["Input", "input_shape"])
def test_an_input_shape_gives_a_built_model(how, capsys):
    model = keras.Sequential()
    if how == "Input":
        model.add(keras.Input(shape=(4,)))
        model.add(layers.Dense(2, activation="relu"))
    else:
        model.add(layers.Dense(2, activation="relu", input_shape=(4,)))
    assert model.built and len(model.weights) == 2 and len(model.layers) == 1  # the Input is not a layer
    model.summary()
    assert "(None, 2)" in capsys.readouterr().out


def test_conv_stack_output_shapes():
    model = keras.Sequential()
    model.add(keras.Input(shape=(250, 250, 3)))
    model.add(layers.Conv2D(32, 5, strides=2, activation="relu"))
    model.add(layers.Conv2D(32, 3, activation="relu"))
    model.add(layers.MaxPooling2D(3))
    assert model.output_shape == (None, 40, 40, 32)
    for _ in range(2):
        model.add(layers.Conv2D(32, 3, activation="relu"))
    model.add(layers.MaxPooling2D(3))
    for _ in range(2):
        model.add(layers.Conv2D(32, 3, activation="relu"))
    model.add(layers.MaxPooling2D(2))
    assert model.output_shape == (None, 4, 4, 32)
    model.add(layers.GlobalMaxPooling2D())
    model.add(layers.Dense(10))
    assert model.output_shape == (None, 10)


def _initial_model(k, name=None):
    return k.Sequential([
        k.Input(shape=(40, 40, 3)),
        k.layers.Conv2D(8, 5, strides=2, activation="relu"),
        k.layers.Conv2D(8, 3, activation="relu", name=name),
        k.layers.Conv2D(8, 3, activation="relu"),
    ])


def test_feature_extraction_from_layer_outputs():
    initial = _initial_model(keras, name="my_intermediate_layer")
    extractor = keras.Model(inputs=initial.inputs, outputs=[layer.output for layer in initial.layers])
    x = ops.ones((1, 40, 40, 3))
    features = extractor(x)
    assert [tuple(f.shape) for f in features] == [(1, 18, 18, 8), (1, 16, 16, 8), (1, 14, 14, 8)]
    np.testing.assert_allclose(np.asarray(features[-1]), np.asarray(initial(x)), rtol=1e-6)
    one = keras.Model(inputs=initial.inputs, outputs=initial.get_layer(name="my_intermediate_layer").output)
    np.testing.assert_allclose(np.asarray(one(x)), np.asarray(features[1]), rtol=1e-6)


def test_feature_extraction_matches_keras():
    k = keras_or_skip()
    ours, theirs = _initial_model(keras), _initial_model(k)
    ours.set_weights(theirs.get_weights())
    x = np.random.default_rng(0).random((2, 40, 40, 3)).astype("float32")
    mine = keras.Model(inputs=ours.inputs, outputs=[layer.output for layer in ours.layers])(x)
    reference = k.Model(inputs=theirs.inputs, outputs=[layer.output for layer in theirs.layers])(x)
    for a, b in zip(mine, reference):
        np.testing.assert_allclose(np.asarray(a), k.ops.convert_to_numpy(b), rtol=1e-5, atol=1e-6)


def test_freezing_all_but_the_last_layer():
    model = keras.Sequential([
        keras.Input(shape=(784,)),
        layers.Dense(32, activation="relu"),
        layers.Dense(32, activation="relu"),
        layers.Dense(10),
    ])
    for layer in model.layers[:-1]:
        layer.trainable = False
    assert [tuple(w.shape) for w in model.trainable_weights] == [(32, 10), (10,)]
    frozen = [w.numpy().copy() for w in model.layers[0].weights]
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(0)
    model.fit(rng.random((16, 784)), rng.random((16, 10)), epochs=1, verbose=0)
    for before, w in zip(frozen, model.layers[0].weights):
        np.testing.assert_array_equal(before, w.numpy())
