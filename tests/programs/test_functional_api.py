"""keras-io ``guides/functional_api.py`` with the gpulayers imports: what it exercises.

Functional models from ``keras.Input``; ``summary`` and ``keras.utils.plot_model``;
training an MLP with ``SparseCategoricalCrossentropy(from_logits=True)`` and
RMSprop; an encoder/decoder made of Conv2D, MaxPooling2D, GlobalMaxPooling2D,
Reshape, Conv2DTranspose and UpSampling2D, and models called like layers; an
ensemble joined by ``layers.average``; a model with three inputs (two
Embedding + LSTM branches) and two named outputs, compiled with per-output
losses and loss weights (lists and dicts) and fitted on dicts; a toy ResNet
with ``layers.add``; a shared Embedding; custom layers (``add_weight``,
``ops.matmul``) and a custom RNN over Conv1D features with a static batch
size; ``keras.ops`` applied to symbolic tensors.
"""

import types

import numpy as np
import pytest

import gpulayers as keras
from gpulayers import layers, ops
from programs.program_support import digits, keras_or_skip


def mlp():
    inputs = keras.Input(shape=(784,))
    x = layers.Dense(64, activation="relu")(inputs)
    x = layers.Dense(64, activation="relu")(x)
    outputs = layers.Dense(10)(x)
    return keras.Model(inputs=inputs, outputs=outputs, name="mnist_model")


def test_inputs_and_the_mlp(capsys):
    inputs = keras.Input(shape=(784,))
    assert inputs.shape == (None, 784) and inputs.dtype == "float32"
    assert keras.Input(shape=(32, 32, 3)).shape == (None, 32, 32, 3)
    model = mlp()
    model.summary()
    out = capsys.readouterr().out
    assert 'Model: "mnist_model"' in out and "Total params: 55,050" in out


def test_the_mlp_trains_with_logits_and_rmsprop():
    keras.utils.set_random_seed(0)
    x, y = digits(600, 0)
    x = x.reshape(600, 784).astype("float32") / 255
    model = mlp()
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  optimizer=keras.optimizers.RMSprop(), metrics=["accuracy"])
    history = model.fit(x, y, batch_size=64, epochs=2, validation_split=0.2, verbose=0)
    assert history.history["loss"][1] < history.history["loss"][0]
    loss, accuracy = model.evaluate(x[:100], y[:100], verbose=0)
    assert accuracy > 0.6


# ---------------------------------------------------------------- plot_model


def test_plot_model_without_pydot_says_what_to_install(monkeypatch):
    from gpulayers import model_visualization

    monkeypatch.setattr(model_visualization, "_pydot", lambda: None)
    with pytest.raises(ImportError, match=r"pip install pydot"):
        keras.utils.plot_model(mlp(), "unused.png")
    with pytest.raises(ImportError, match=r"pip install pydot"):
        keras.utils.model_to_dot(mlp())


def test_plot_model_without_graphviz_says_what_to_install(monkeypatch):
    pytest.importorskip("pydot")
    from gpulayers import model_visualization

    monkeypatch.setattr(model_visualization, "_graphviz_works", lambda pydot: False)
    with pytest.raises(ImportError, match=r"graphviz"):
        keras.utils.plot_model(mlp(), "unused.png")


def test_plot_model_arguments_are_checked(pydot_module):
    with pytest.raises(ValueError, match="not yet been built"):
        keras.utils.plot_model(keras.Sequential([layers.Dense(2)]))
    with pytest.raises(ValueError, match="layer_range"):
        keras.utils.model_to_dot(mlp(), layer_range=["a", "b"])
    with pytest.raises(ValueError, match="Unrecognized"):
        keras.utils.model_to_dot(mlp(), colours=True)


class _FakeGraph:
    """The part of pydot's graph API model_to_dot uses (for machines without pydot)."""

    def __init__(self, graph_name="G", **attributes):
        self.name, self.attributes = graph_name, dict(attributes)
        self.nodes, self.edges, self.subgraphs, self.node_defaults = [], [], [], {}

    def set(self, key, value):
        self.attributes[key] = value

    def get(self, key):
        return self.attributes.get(key)

    def set_node_defaults(self, **attributes):
        self.node_defaults.update(attributes)

    def add_node(self, node):
        self.nodes.append(node)

    def add_edge(self, edge):
        self.edges.append(edge)

    def add_subgraph(self, graph):
        self.subgraphs.append(graph)

    def get_nodes(self):
        return list(self.nodes)

    def get_edges(self):
        return list(self.edges)

    def get_subgraphs(self):
        return list(self.subgraphs)

    def get_edge(self, source, destination):
        return [e for e in self.edges if (e.source, e.destination) == (source, destination)]

    def to_string(self):
        parts = [f"{k}={v};" for k, v in self.attributes.items()]
        parts += [n.attributes.get("label", "") for n in self.nodes]
        return "\n".join(parts + [g.to_string() for g in self.subgraphs])


class _FakeNode:
    def __init__(self, name, label=None):
        self.name, self.attributes = name, {"label": label}

    def set(self, key, value):
        self.attributes[key] = value

    def get(self, key):
        return self.attributes.get(key)

    def get_name(self):
        return self.name


class _FakeEdge(_FakeNode):
    def __init__(self, source, destination):
        super().__init__(f"{source}->{destination}")
        self.source, self.destination = source, destination

    def get_source(self):
        return self.source

    def get_destination(self):
        return self.destination


FAKE_PYDOT = types.SimpleNamespace(
    Dot=type("Dot", (_FakeGraph,), {}), Cluster=type("Cluster", (_FakeGraph,), {}), Node=_FakeNode, Edge=_FakeEdge,
)


@pytest.fixture(params=["stand-in pydot", "pydot"])
def pydot_module(request, monkeypatch):
    """model_to_dot's pydot: the real one where installed, and always a stand-in with pydot's graph API."""
    from gpulayers import model_visualization

    if request.param == "pydot":
        return pytest.importorskip("pydot")
    monkeypatch.setattr(model_visualization, "_pydot", lambda: FAKE_PYDOT)
    return FAKE_PYDOT


def _edges(dot):
    names = {}
    for node in dot.get_nodes() + [n for g in dot.get_subgraphs() for n in g.get_nodes()]:
        label = node.get("label") or ""
        if "<b>" in label:
            names[node.get_name()] = label.split("<b>")[1].split("</b>")[0]
    edges = dot.get_edges() + [e for g in dot.get_subgraphs() for e in g.get_edges()]
    return sorted((names[e.get_source()], names[e.get_destination()]) for e in edges)


def test_model_to_dot_draws_the_graph_of_layers(pydot_module):
    model = mlp()
    dot = keras.utils.model_to_dot(model, show_shapes=True, show_dtype=True, show_layer_activations=True,
                                   show_trainable=True)
    names = [layer.name for layer in model.layers]
    assert _edges(dot) == sorted([(names[0], names[1]), (names[1], names[2]), (names[2], names[3])])
    text = dot.to_string()
    assert "Output shape: <b>(None, 64)</b>" in text and "Input shape: <b>(None, 784)</b>" in text
    assert "Activation: <b>relu</b>" in text and "Trainable" in text and "float32" in text
    assert "rankdir=TB" in text
    assert "(Dense)" not in keras.utils.model_to_dot(model, show_layer_names=False).to_string()


def test_model_to_dot_nested_models_and_ops(pydot_module):
    inner_in = keras.Input((4,), name="inner_in")
    inner = keras.Model(inner_in, layers.Dense(3, name="inner_dense")(inner_in), name="inner")
    x = keras.Input((4,), name="outer_in")
    y = ops.add(inner(x), 1.0)
    model = keras.Model(x, layers.Dense(2, name="head")(y))
    add = y._keras_history[0].name  # "add", or "add_<n>" after other graphs
    flat = keras.utils.model_to_dot(model)
    assert _edges(flat) == sorted([(add, "head"), ("inner", add), ("outer_in", "inner")])
    nested = keras.utils.model_to_dot(model, expand_nested=True)
    assert _edges(nested) == sorted([(add, "head"), ("inner_dense", add), ("inner_in", "inner_dense"),
                                     ("outer_in", "inner_in")])
    assert len(nested.get_subgraphs()) == 1
    seq = keras.Sequential([keras.Input((3,)), layers.Dense(2, name="s1"), layers.Dense(1, name="s2")])
    assert _edges(keras.utils.model_to_dot(seq)) == [("s1", "s2")]


def test_model_to_dot_of_a_subclassed_model_is_one_box(pydot_module):
    class Tiny(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = Tiny()
    model(np.zeros((1, 3), dtype="float32"))
    dot = keras.utils.model_to_dot(model)
    boxes = [n for n in dot.get_nodes() if n.get_name() not in ("node", "edge", "graph")]  # pydot's defaults
    assert len(boxes) == 1 and not dot.get_edges()


def test_plot_model_writes_the_image(tmp_path):
    pydot = pytest.importorskip("pydot")
    from gpulayers import model_visualization

    if not model_visualization._graphviz_works(pydot):
        pytest.skip("Graphviz is not installed")
    path = tmp_path / "my_first_model_with_shape_info.png"
    keras.utils.plot_model(mlp(), str(path), show_shapes=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keras.utils.plot_model(mlp(), tmp_path / "model.svg", rankdir="LR")
    assert (tmp_path / "model.svg").read_text().lstrip().startswith("<?xml")


# ---------------------------------------------------------------- shared graphs, nested models, ensembles


def encoder_decoder():
    encoder_input = keras.Input(shape=(28, 28, 1), name="original_img")
    x = layers.Conv2D(16, 3, activation="relu")(encoder_input)
    x = layers.Conv2D(32, 3, activation="relu")(x)
    x = layers.MaxPooling2D(3)(x)
    x = layers.Conv2D(32, 3, activation="relu")(x)
    x = layers.Conv2D(16, 3, activation="relu")(x)
    encoder = keras.Model(encoder_input, layers.GlobalMaxPooling2D()(x), name="encoder")
    decoder_input = keras.Input(shape=(16,), name="encoded_img")
    x = layers.Reshape((4, 4, 1))(decoder_input)
    x = layers.Conv2DTranspose(16, 3, activation="relu")(x)
    x = layers.Conv2DTranspose(32, 3, activation="relu")(x)
    x = layers.UpSampling2D(3)(x)
    x = layers.Conv2DTranspose(16, 3, activation="relu")(x)
    decoder = keras.Model(decoder_input, layers.Conv2DTranspose(1, 3, activation="relu")(x), name="decoder")
    return encoder, decoder


def test_models_are_callable_like_layers():
    encoder, decoder = encoder_decoder()
    assert encoder.output_shape == (None, 16) and decoder.output_shape == (None, 28, 28, 1)
    assert encoder.count_params() == 18672 and decoder.count_params() == 9569
    img = keras.Input(shape=(28, 28, 1), name="img")
    autoencoder = keras.Model(img, decoder(encoder(img)), name="autoencoder")
    assert [layer.name for layer in autoencoder.layers] == ["img", "encoder", "decoder"]
    assert autoencoder.count_params() == 28241
    x = np.random.default_rng(0).random((2, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(autoencoder(x)), np.asarray(decoder(encoder(x))), rtol=1e-6)


def test_an_ensemble_averages_its_models():
    def get_model():
        inputs = keras.Input(shape=(128,))
        return keras.Model(inputs, layers.Dense(1)(inputs))

    models = [get_model() for _ in range(3)]
    inputs = keras.Input(shape=(128,))
    ensemble = keras.Model(inputs=inputs, outputs=layers.average([m(inputs) for m in models]))
    x = np.random.default_rng(1).random((4, 128)).astype("float32")
    expected = sum(np.asarray(m(x)) for m in models) / 3
    np.testing.assert_allclose(np.asarray(ensemble(x)), expected, rtol=1e-6)


# ---------------------------------------------------------------- several inputs and outputs

NUM_WORDS, NUM_TAGS, NUM_DEPARTMENTS = 200, 12, 4


def ticket_model(k):
    title_input = k.Input(shape=(None,), name="title")
    body_input = k.Input(shape=(None,), name="body")
    tags_input = k.Input(shape=(NUM_TAGS,), name="tags")
    title_features = k.layers.LSTM(16)(k.layers.Embedding(NUM_WORDS, 8)(title_input))
    body_features = k.layers.LSTM(8)(k.layers.Embedding(NUM_WORDS, 8)(body_input))
    x = k.layers.concatenate([title_features, body_features, tags_input])
    priority = k.layers.Dense(1, name="priority")(x)
    department = k.layers.Dense(NUM_DEPARTMENTS, name="department")(x)
    return k.Model(inputs=[title_input, body_input, tags_input], outputs={"priority": priority, "department": department})


def ticket_data(n, seed=0):
    rng = np.random.default_rng(seed)
    inputs = {
        "title": rng.integers(NUM_WORDS, size=(n, 6)),
        "body": rng.integers(NUM_WORDS, size=(n, 12)),
        "tags": rng.integers(2, size=(n, NUM_TAGS)).astype("float32"),
    }
    # Learnable targets: the priority follows the first tag, the department the next two.
    tags = inputs["tags"]
    targets = {
        "priority": tags[:, :1].astype("float64"),
        "department": np.eye(NUM_DEPARTMENTS)[(tags[:, 1] * 2 + tags[:, 2]).astype(int)].astype("int64"),
    }
    return inputs, targets


@pytest.mark.parametrize("form", ["list", "dict"])
def test_several_inputs_and_outputs_train_with_weighted_losses(form):
    keras.utils.set_random_seed(2)
    model = ticket_model(keras)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    cce = keras.losses.CategoricalCrossentropy(from_logits=True)
    if form == "list":
        # A list follows the outputs' flat order, a dict's keys sorted as Keras sorts them: department, priority.
        model.compile(optimizer=keras.optimizers.RMSprop(1e-2), loss=[cce, bce], loss_weights=[0.2, 1.0])
    else:
        model.compile(optimizer=keras.optimizers.RMSprop(1e-2), loss={"priority": bce, "department": cce},
                      loss_weights={"priority": 1.0, "department": 0.2})
    inputs, targets = ticket_data(256)
    history = model.fit(inputs, targets, epochs=3, batch_size=32, verbose=0)
    assert sorted(history.history) == ["department_loss", "loss", "priority_loss"]
    assert history.history["loss"][-1] < history.history["loss"][0]
    scores = model.evaluate(inputs, targets, verbose=0, return_dict=True)
    np.testing.assert_allclose(scores["loss"], scores["priority_loss"] + 0.2 * scores["department_loss"], rtol=1e-5)
    predictions = model.predict(inputs, verbose=0)
    assert predictions["priority"].shape == (256, 1) and predictions["department"].shape == (256, 4)


def _copy_weights(theirs, ours):
    """Keras's weights into our model, layer by layer: the named output layers by name, the others in order."""
    named = {"priority", "department"}
    mine = {layer.name: layer for layer in ours.layers if layer.name in named}
    rest = [layer for layer in ours.layers if layer.name not in named]
    others = [layer for layer in theirs.layers if layer.name not in named]
    for layer in theirs.layers:
        if layer.name in named:
            mine[layer.name].set_weights(layer.get_weights())
    for a, b in zip(rest, others, strict=True):
        assert type(a).__name__ == type(b).__name__
        a.set_weights(b.get_weights())


def test_the_ticket_model_predicts_as_keras():
    k = keras_or_skip()
    ours, theirs = ticket_model(keras), ticket_model(k)
    _copy_weights(theirs, ours)
    inputs, _ = ticket_data(16, 3)
    mine, reference = ours.predict(inputs, verbose=0), theirs.predict(inputs, verbose=0)
    for key in ("priority", "department"):
        np.testing.assert_allclose(mine[key], reference[key], rtol=1e-5, atol=1e-6)


def test_dict_outputs_are_ordered_by_key_as_keras():
    model = ticket_model(keras)
    assert model.output_names == ["department", "priority"]
    assert [layer.name for layer in model.layers][-2:] == ["department", "priority"]


def test_the_toy_resnet():
    inputs = keras.Input(shape=(32, 32, 3), name="img")
    x = layers.Conv2D(32, 3, activation="relu")(inputs)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    block_1_output = layers.MaxPooling2D(3)(x)
    x = layers.Conv2D(64, 3, activation="relu", padding="same")(block_1_output)
    x = layers.Conv2D(64, 3, activation="relu", padding="same")(x)
    block_2_output = layers.add([x, block_1_output])
    x = layers.Conv2D(64, 3, activation="relu")(block_2_output)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(32, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    model = keras.Model(inputs, layers.Dense(10)(x), name="toy_resnet")
    assert model.count_params() == 896 + 18496 + 3 * 36928 + 64 * 32 + 32 + 330
    rng = np.random.default_rng(4)
    x_train = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8).astype("float32") / 255
    y_train = keras.utils.to_categorical(rng.integers(0, 10, (64, 1)), 10)
    model.compile(optimizer=keras.optimizers.RMSprop(1e-3),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True), metrics=["acc"])
    history = model.fit(x_train, y_train, batch_size=32, epochs=1, validation_split=0.25, verbose=0)
    assert sorted(history.history) == ["acc", "loss", "val_acc", "val_loss"]


def test_a_shared_embedding_is_one_layer_with_one_table():
    shared = layers.Embedding(1000, 16)
    a = keras.Input(shape=(None,), dtype="int32")
    b = keras.Input(shape=(None,), dtype="int32")
    model = keras.Model([a, b], [shared(a), shared(b)])
    assert sum(layer is shared for layer in model.layers) == 1 and len(model.weights) == 1
    ea, eb = model([np.array([[3, 7]]), np.array([[7, 3, 3]])])
    np.testing.assert_array_equal(np.asarray(ea)[0, 1], np.asarray(eb)[0, 0])


# ---------------------------------------------------------------- custom layers


class CustomDense(layers.Layer):
    def __init__(self, units=32):
        super().__init__()
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units), initializer="random_normal", trainable=True)
        self.b = self.add_weight(shape=(self.units,), initializer="random_normal", trainable=True)

    def call(self, inputs):
        return ops.matmul(inputs, self.w) + self.b

    def get_config(self):
        return {"units": self.units}


def test_a_custom_layer_in_a_functional_model():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, CustomDense(10)(inputs))
    assert model.output_shape == (None, 10)
    layer = model.layers[-1]
    x = np.random.default_rng(5).random((3, 4)).astype("float32")
    np.testing.assert_allclose(np.asarray(model(x)), x @ layer.w.numpy() + layer.b.numpy(), rtol=1e-5)
    assert CustomDense.from_config(layer.get_config()).units == 10


def custom_rnn_class(classifier_factory):
    class CustomRNN(layers.Layer):
        def __init__(self):
            super().__init__()
            self.units = 32
            self.projection_1 = layers.Dense(units=32, activation="tanh")
            self.projection_2 = layers.Dense(units=32, activation="tanh")
            self.classifier = classifier_factory()

        def call(self, inputs):
            outputs = []
            state = ops.zeros(shape=(inputs.shape[0], self.units))
            for t in range(inputs.shape[1]):
                y = self.projection_1(inputs[:, t, :]) + self.projection_2(state)
                state = y
                outputs.append(y)
            return self.classifier(ops.stack(outputs, axis=1))

    return CustomRNN


def test_a_custom_rnn_over_conv1d_features_with_a_static_batch():
    rnn = custom_rnn_class(lambda: layers.Dense(1))
    inputs = keras.Input(batch_shape=(16, 10, 5))
    features = layers.Conv1D(32, 3)(inputs)
    assert features.shape == (16, 8, 32)
    model = keras.Model(inputs, rnn()(features))
    assert model.output_shape == (16, 8, 1)
    x = np.random.default_rng(6).random((16, 10, 5)).astype("float32")
    assert model.predict(x, verbose=0).shape == (16, 8, 1)
    assert tuple(rnn()(ops.zeros((1, 10, 5))).shape) == (1, 10, 1)


def test_a_custom_rnn_holding_a_functional_model():
    inputs = keras.Input((None, 32))
    classifier = keras.Model(inputs, layers.Dense(1)(layers.GlobalAveragePooling1D()(inputs)))
    rnn = custom_rnn_class(lambda: classifier)()
    assert tuple(rnn(ops.zeros((1, 10, 5))).shape) == (1, 1)


def test_ops_on_symbolic_tensors_are_nodes_of_the_graph():
    inputs = keras.Input((6,))
    x = layers.Dense(4)(inputs)
    doubled = ops.multiply(ops.add(x, x), 0.5)
    mean = ops.mean(doubled, axis=-1, keepdims=True)
    halves = ops.split(doubled, 2, axis=-1)
    assert mean.shape == (None, 1) and [h.shape for h in halves] == [(None, 2), (None, 2)]
    model = keras.Model(inputs, [mean, ops.concatenate([halves[1], halves[0]], axis=-1)])
    # Keras's order too: by depth from the outputs, the deepest first.
    # The ops are in the graph's config (and summary), not in model.layers, as in Keras.
    assert [e["class_name"] for e in model.get_config()["layers"][2:]] == ["Add", "Multiply", "Split", "Mean", "Concatenate"]
    assert len(model.layers) == 2
    x_data = np.random.default_rng(7).random((3, 6)).astype("float32")
    dense = np.asarray(model.layers[1](x_data))
    got_mean, got_swapped = model.predict(x_data, verbose=0)
    np.testing.assert_allclose(got_mean, dense.mean(axis=-1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(got_swapped, np.concatenate([dense[:, 2:], dense[:, :2]], axis=-1), rtol=1e-6)
    assert ops.shape(inputs) == (None, 6) and not ops.is_tensor(inputs)
