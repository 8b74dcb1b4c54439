"""Graph models as users write them: a residual CNN and a siamese network, trained on the bundled faces.

Each model is trained with ``fit`` on :func:`gpulayers.datasets.faces` (25x25
grey images, face or not), and a small float64 instance of the same graph
has its tape gradients compared with central finite differences: every
trainable weight and the inputs, BatchNormalization in training mode.
"""

import numpy as np
import pytest

import gpulayers
from backends import get_ops
from gpulayers import autodiff, layers, ops, optimizers
from gpulayers.models import Model
from helpers import numeric_grad, to_np


@pytest.fixture
def float64():
    """floatx float64 for the gradient checks: Keras computes a loss in floatx, whatever the model's dtype."""
    previous = gpulayers.config.floatx()
    gpulayers.config.set_floatx("float64")
    yield
    gpulayers.config.set_floatx(previous)


def check_model_gradients(model, inputs, scalar, rtol=1e-5, atol=1e-9):
    """The tape's gradients of ``scalar(model, tensors)`` (a scalar Tensor) wrt each input and each trainable
    weight against central finite differences of the same function (off the tape). Returns the inputs'
    and the weights' gradients, the weights' keyed by path (layers' weights share their names)."""
    hosts = [np.array(x, dtype=np.float64, order="C") for x in inputs]
    tensors = [ops.convert_to_tensor(h.copy()) for h in hosts]
    weights = model.trainable_weights
    with autodiff.GradientTape() as tape:
        tape.watch(tensors)
        total = scalar(model, tensors)
    grads = [to_np(g) for g in tape.gradient(total, tensors + weights)]

    def value():
        with autodiff.no_backward():
            return float(to_np(scalar(model, [ops.convert_to_tensor(h) for h in hosts]).data))

    for i, host in enumerate(hosts):
        np.testing.assert_allclose(grads[i], numeric_grad(value, host), rtol=rtol, atol=atol, err_msg=f"input {i}")
    for v, g in zip(weights, grads[len(hosts):]):
        host = to_np(v.data).astype(np.float64)

        def with_weight(v=v, host=host):
            v.data = get_ops().asarray(host.copy())
            return value()

        want = numeric_grad(with_weight, host)
        v.data = get_ops().asarray(host)
        np.testing.assert_allclose(g, want, rtol=rtol, atol=atol, err_msg=v.path)
    assert len({v.path for v in weights}) == len(weights)
    return grads[:len(hosts)], {v.path: g for v, g in zip(weights, grads[len(hosts):])}


@pytest.fixture(scope="module")
def faces():
    """The faces split, standardized with the training set's mean and deviation."""
    (x_train, y_train), (x_test, y_test) = gpulayers.datasets.faces(data_format="channels_last")
    mean, std = x_train.mean(), x_train.std()
    return ((x_train - mean) / std, y_train), ((x_test - mean) / std, y_test)


# ---------------------------------------------------------------- a residual CNN


def residual_block(x, filters, stride, name, dtype, momentum):
    """Two 3x3 convolutions with BatchNormalization, added to the input (through a strided 1x1
    convolution with its own BatchNormalization when the shape changes), then ReLU."""
    h = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1", dtype=dtype)(x)
    h = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn1", dtype=dtype)(h)
    h = layers.Activation("relu", name=f"{name}_relu1", dtype=dtype)(h)
    h = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2", dtype=dtype)(h)
    h = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn2", dtype=dtype)(h)
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_proj", dtype=dtype)(x)
        shortcut = layers.BatchNormalization(momentum=momentum, name=f"{name}_proj_bn", dtype=dtype)(shortcut)
    out = layers.Add(name=f"{name}_add", dtype=dtype)([h, shortcut])
    return layers.Activation("relu", name=f"{name}_out", dtype=dtype)(out)


def resnet(shape=(25, 25, 1), filters=(8, 16), outputs=1, dtype="float32", momentum=0.9, seed=0, regularizer=None):
    """Stem, an identity block, a downsampling block with a projection shortcut, global pooling, a Dense head.

    BatchNormalization's momentum is 0.9: the few dozen steps of these tests would leave Keras's default
    0.99 moving statistics near their initial values, and inference mode (evaluate, predict) far from
    training mode, in Keras as here."""
    gpulayers.utils.set_random_seed(seed)
    inputs = gpulayers.Input(shape, name="image", dtype=dtype)
    x = layers.Conv2D(filters[0], 3, padding="same", use_bias=False, name="stem", dtype=dtype)(inputs)
    x = layers.BatchNormalization(momentum=momentum, name="stem_bn", dtype=dtype)(x)
    x = layers.Activation("relu", name="stem_relu", dtype=dtype)(x)
    x = residual_block(x, filters[0], 1, "block1", dtype, momentum)
    x = residual_block(x, filters[1], 2, "block2", dtype, momentum)
    x = layers.GlobalAveragePooling2D(name="pool", dtype=dtype)(x)
    activation = "sigmoid" if outputs == 1 else None
    out = layers.Dense(outputs, activation=activation, kernel_regularizer=regularizer, name="head", dtype=dtype)(x)
    return Model(inputs, out, name="resnet")


def test_the_residual_cnn_has_the_graph_it_was_given():
    model = resnet()
    names = [layer.name for layer in model.layers]
    assert names[0] == "image" and names[-2:] == ["pool", "head"]
    assert model.get_layer("block1_add").input[1] is model.get_layer("stem_relu").output  # the identity shortcut
    assert model.get_layer("block2_proj").output.shape == (None, 13, 13, 16)  # 1x1, stride 2: 25 -> 13
    assert model.get_layer("block2_add").output.shape == (None, 13, 13, 16)
    assert model.output_shape == (None, 1)
    assert len(model.trainable_weights) == 6 + 12 + 2  # 6 convolutions, 6 BN (gamma, beta), the head
    assert len(model.non_trainable_weights) == 12  # the 6 BN layers' moving mean and variance


def test_the_residual_cnn_learns_faces(faces):
    (x_train, y_train), (x_test, y_test) = faces
    model = resnet()
    model.compile(optimizer=optimizers.Adam(0.01), loss="binary_crossentropy", metrics=["accuracy"])
    untrained = model.evaluate(x_test, y_test, verbose=0, return_dict=True)
    history = model.fit(x_train, y_train, batch_size=16, epochs=5, verbose=0, validation_data=(x_test, y_test)).history
    assert sorted(history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert len(history["loss"]) == 5
    assert history["loss"][-1] < 0.4 * history["loss"][0]
    assert history["accuracy"][-1] > 0.9
    logs = model.evaluate(x_test, y_test, verbose=0, return_dict=True)
    assert logs["accuracy"] >= 0.85  # 40 test images, 20 of each class: chance is 0.5
    assert logs["loss"] < 0.5 * untrained["loss"]
    assert logs["loss"] == pytest.approx(history["val_loss"][-1], rel=1e-6)
    predicted = model.predict(x_test, verbose=0)
    assert predicted.shape == (40, 1)
    assert np.mean((predicted[:, 0] > 0.5) == (y_test == 1)) == pytest.approx(logs["accuracy"])


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_residual_cnn_gradients_match_finite_differences(training):
    # A small float64 instance: 5x5x2 images, 2 then 3 filters (the second block projects and strides),
    # three outputs and an L2 regularizer on the head, so model.losses count too.
    model = resnet(shape=(5, 5, 2), filters=(2, 3), outputs=3, dtype="float64", seed=1, regularizer="l2")
    x = np.random.default_rng(2).standard_normal((3, 5, 5, 2))
    if not training:  # moving statistics away from (0, 1), so inference mode normalizes by something
        for _ in range(3):
            model(x, training=True)
    r = np.random.default_rng(3).standard_normal((3, 3))

    def scalar(model, inputs):
        total = ops.sum(model(inputs[0], training=training) * r)
        for loss in model.losses:
            total = total + loss
        return total

    before = [to_np(v.data).copy() for v in model.non_trainable_weights]
    (dx,), grads = check_model_gradients(model, [x], scalar)
    assert len(grads) == len(model.trainable_weights) == 20
    assert all(np.abs(g).max() > 0 for g in grads.values()) and np.abs(dx).max() > 0
    moved = [not np.array_equal(b, to_np(v.data)) for b, v in zip(before, model.non_trainable_weights)]
    assert all(moved) if training else not any(moved)  # training mode updates the moving statistics


# ---------------------------------------------------------------- a siamese network


def tower(shape=(25, 25, 1), filters=(6, 8), dtype="float32", name="tower", seed=0):
    """The embedding: two strided convolutions, global pooling, a Dense embedding of 8."""
    gpulayers.utils.set_random_seed(seed)
    inputs = gpulayers.Input(shape, name=f"{name}_image", dtype=dtype)
    x = layers.Conv2D(filters[0], 3, strides=2, activation="relu", name=f"{name}_conv1", dtype=dtype)(inputs)
    x = layers.Conv2D(filters[1], 3, strides=2, activation="relu", name=f"{name}_conv2", dtype=dtype)(x)
    x = layers.GlobalAveragePooling2D(name=f"{name}_pool", dtype=dtype)(x)
    x = layers.Dense(8, name=f"{name}_embedding", dtype=dtype)(x)
    return Model(inputs, x, name=name)


def euclidean_distance(vectors):
    a, b = vectors
    squared = ops.sum(ops.square(a - b), axis=1, keepdims=True)
    return ops.sqrt(ops.maximum(squared, gpulayers.config.epsilon()))


MARGIN = 1.0


def contrastive_loss(y_true, y_pred):
    """Hadsell et al.: similar pairs (label 1) pulled together, others pushed beyond the margin."""
    similar = y_true * ops.square(y_pred)
    dissimilar = (1.0 - y_true) * ops.square(ops.maximum(MARGIN - y_pred, 0.0))
    return ops.mean(similar + dissimilar, axis=-1)


def siamese(first, second=None, dtype="float32"):
    """Two images, one embedding each (through the same tower, or ``second`` for the second image),
    and their distance."""
    shape = first.input_shape[1:]
    a = gpulayers.Input(shape, name="left", dtype=dtype)
    b = gpulayers.Input(shape, name="right", dtype=dtype)
    embeddings = [first(a), (first if second is None else second)(b)]
    distance = layers.Lambda(euclidean_distance, name="distance", dtype=dtype)(embeddings)
    return Model([a, b], distance, name="siamese")


def pairs(x, y, n, seed):
    """``n`` pairs of images, half of the same class (label 1), half of different classes (label 0)."""
    rng = np.random.default_rng(seed)
    by_class = {c: np.flatnonzero(y == c) for c in (0, 1)}
    left, right, labels = [], [], []
    for i in range(n):
        c = rng.integers(0, 2)
        same = i % 2 == 0
        left.append(rng.choice(by_class[c]))
        right.append(rng.choice(by_class[c if same else 1 - c]))
        labels.append(float(same))
    return x[left], x[right], np.array(labels, dtype="float32")


def test_the_siamese_network_shares_one_tower():
    embed = tower()
    model = siamese(embed)
    assert [layer.name for layer in model.layers] == ["left", "right", "tower", "distance"]
    assert len(model.trainable_weights) == len(embed.trainable_weights) == 6
    assert all(a is b for a, b in zip(model.trainable_weights, embed.trainable_weights))
    assert len(embed._inbound_nodes) == 2  # one node per image (as Keras: none for its own graph)
    assert model.output_shape == (None, 1)


def test_the_siamese_network_learns_a_distance_on_faces(faces):
    (x_train, y_train), (x_test, y_test) = faces
    left, right, labels = pairs(x_train, y_train, 320, seed=0)
    test_left, test_right, test_labels = pairs(x_test, y_test, 80, seed=1)
    model = siamese(tower())
    model.compile(optimizer=optimizers.Adam(0.01), loss=contrastive_loss)
    before = model.evaluate([test_left, test_right], test_labels, verbose=0)
    # Labels (N,) for distances (N, 1) reach the loss as (N, 1), as in Keras, not broadcast into (N, N).
    assert model.evaluate([test_left, test_right], test_labels[:, None], verbose=0) == pytest.approx(before, rel=1e-6)
    history = model.fit([left, right], labels, batch_size=32, epochs=6, verbose=0).history
    assert sorted(history) == ["loss"]
    assert history["loss"][-1] < 0.6 * history["loss"][0]
    assert model.evaluate([test_left, test_right], test_labels, verbose=0) < before
    distance = model.predict([test_left, test_right], verbose=0)[:, 0]
    assert distance.shape == (80,) and np.all(distance > 0)
    same, different = distance[test_labels == 1], distance[test_labels == 0]
    assert np.median(same) < np.median(different)
    assert np.mean((distance < MARGIN / 2) == (test_labels == 1)) > 0.7


def small_siamese_data(seed=3, n=4):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 7, 7, 1)), rng.standard_normal((n, 7, 7, 1)), np.array([1.0, 0.0, 1.0, 0.0])


def compiled_loss(y):
    """The compiled contrastive loss of the model on a pair of images (the user's function, reduced by fit's
    wrapper), in training mode."""
    return lambda model, images: model.compute_loss(y=y, y_pred=model(images, training=True))


def test_siamese_gradients_match_finite_differences(float64):
    model = siamese(tower(shape=(7, 7, 1), filters=(3, 4), dtype="float64", seed=4), dtype="float64")
    model.compile(optimizer="sgd", loss=contrastive_loss)
    a, b, y = small_siamese_data()
    distance = to_np(model([a, b]).data)[:, 0]
    assert np.all(distance < 2 * MARGIN) and np.any((y == 0) & (distance < MARGIN))  # both terms of the loss count
    (da, db), grads = check_model_gradients(model, [a, b], compiled_loss(y))
    assert np.abs(da).max() > 0 and np.abs(db).max() > 0 and len(grads) == 6


def siamese_loss_and_grads(model, y, sources):
    """The compiled loss on the images ``sources[:2]`` and its gradients wrt every source."""
    with autodiff.GradientTape() as tape:
        tape.watch(sources[:2])
        loss = compiled_loss(y)(model, sources[:2])
    return float(to_np(loss.data)), [to_np(g) for g in tape.gradient(loss, sources)]


def test_the_shared_towers_gradient_is_the_sum_over_its_two_calls(float64):
    embed = tower(shape=(7, 7, 1), filters=(3, 4), dtype="float64", seed=4)
    shared = siamese(embed, dtype="float64")
    # The same network with a second, separate tower (a copy of the weights) for the right image.
    copy = tower(shape=(7, 7, 1), filters=(3, 4), dtype="float64", name="copy", seed=5)
    copy.set_weights(embed.get_weights())
    separate = siamese(embed, copy, dtype="float64")
    for model in (shared, separate):
        model.compile(optimizer="sgd", loss=contrastive_loss)
    a, b, y = small_siamese_data()
    ta, tb = ops.convert_to_tensor(a), ops.convert_to_tensor(b)
    loss_shared, g_shared = siamese_loss_and_grads(shared, y, [ta, tb] + embed.trainable_weights)
    sources = [ta, tb] + embed.trainable_weights + copy.trainable_weights
    loss_separate, g_separate = siamese_loss_and_grads(separate, y, sources)
    assert loss_shared == pytest.approx(loss_separate, rel=1e-14)
    n = len(embed.trainable_weights)
    left_call, right_call = g_separate[2:2 + n], g_separate[2 + n:]
    for v, total, left, right in zip(embed.trainable_weights, g_shared[2:], left_call, right_call):
        np.testing.assert_allclose(total, left + right, rtol=1e-12, atol=1e-15, err_msg=v.path)
        assert not np.allclose(left, right)  # each call contributes its own part
    for g, h in zip(g_shared[:2], g_separate[:2]):  # the inputs' gradients are the same either way
        np.testing.assert_allclose(g, h, rtol=1e-12, atol=1e-15)
    # One SGD step on the shared tower moves it by the summed gradient.
    before = embed.get_weights()
    shared.compile(optimizer=optimizers.SGD(0.1), loss=contrastive_loss)
    shared.train_on_batch([a, b], y)
    for w0, w1, left, right in zip(before, embed.get_weights(), left_call, right_call):
        np.testing.assert_allclose(w1, w0 - 0.1 * (left + right), rtol=1e-12, atol=1e-15)
