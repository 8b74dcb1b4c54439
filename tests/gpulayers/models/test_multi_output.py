"""Several inputs and outputs in training: compile's lists and dicts, the logs' names, the data's forms."""

import numpy as np
import pytest

import gpulayers
from gpulayers import layers, optimizers
from gpulayers.models import Model
from helpers import to_np


def two_output_model(dict_outputs=False):
    gpulayers.utils.set_random_seed(0)
    x = gpulayers.Input((4,), name="x", dtype="float64")
    h = layers.Dense(5, activation="tanh", name="h", dtype="float64")(x)
    cls = layers.Dense(3, activation="softmax", name="cls", dtype="float64")(h)
    reg = layers.Dense(1, name="reg", dtype="float64")(h)
    return Model(x, {"a": cls, "b": reg} if dict_outputs else [cls, reg])


def data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 4)), rng.integers(0, 3, n), rng.standard_normal((n, 1))


def test_logs_are_named_like_keras():
    # The names Keras 3.15 logs for this model and compile call (torch backend).
    model = two_output_model()
    model.compile("sgd", loss=["sparse_categorical_crossentropy", "mse"], metrics=[["accuracy"], ["mae"]])
    x, y1, y2 = data()
    history = model.fit(x, [y1, y2], epochs=1, verbose=0)
    assert sorted(history.history) == ["cls_accuracy", "cls_loss", "loss", "reg_loss", "reg_mae"]
    values = model.evaluate(x, [y1, y2], verbose=0)
    assert len(values) == 5  # loss, cls_loss, reg_loss, cls_accuracy, reg_mae
    logs = model.evaluate(x, [y1, y2], verbose=0, return_dict=True)
    assert values[0] == pytest.approx(values[1] + values[2]) and logs["loss"] == pytest.approx(values[0])


def test_dict_outputs_are_keyed_by_the_dicts_keys():
    model = two_output_model(dict_outputs=True)
    model.compile("sgd", loss={"a": "sparse_categorical_crossentropy", "b": "mse"}, metrics={"a": ["accuracy"]})
    x, y1, y2 = data()
    history = model.fit(x, {"a": y1, "b": y2}, epochs=1, verbose=0)
    assert sorted(history.history) == ["a_accuracy", "a_loss", "b_loss", "loss"]
    out = model.predict(x, verbose=0)
    assert sorted(out) == ["a", "b"] and out["a"].shape == (16, 3)


def test_loss_weights_weigh_each_outputs_loss():
    model = two_output_model()
    model.compile("sgd", loss={"cls": "sparse_categorical_crossentropy", "reg": "mse"}, loss_weights={"cls": 1.0, "reg": 0.5})
    x, y1, y2 = data()
    logs = model.evaluate(x, [y1, y2], verbose=0, return_dict=True)
    p, r = model.predict(x, verbose=0)
    ce = -np.mean(np.log(p[np.arange(16), y1]))
    mse = np.mean((r - y2) ** 2)
    assert logs["cls_loss"] == pytest.approx(ce, rel=1e-6) and logs["reg_loss"] == pytest.approx(mse, rel=1e-6)
    assert logs["loss"] == pytest.approx(ce + 0.5 * mse, rel=1e-6)


def test_one_sgd_step_on_two_outputs_matches_the_sum_of_the_gradients():
    x = gpulayers.Input((3,), dtype="float64")
    a = layers.Dense(2, name="a", dtype="float64", use_bias=False)(x)
    b = layers.Dense(1, name="b", dtype="float64", use_bias=False)(x)
    model = Model(x, [a, b])
    rng = np.random.default_rng(4)
    wa, wb = rng.standard_normal((3, 2)), rng.standard_normal((3, 1))
    model.set_weights([wa, wb])
    model.compile(optimizers.SGD(0.1), loss=["mse", "mse"], loss_weights=[2.0, 1.0])
    xs, ya, yb = rng.standard_normal((6, 3)), rng.standard_normal((6, 2)), rng.standard_normal((6, 1))
    model.train_on_batch(xs, [ya, yb])
    grad_a = 2.0 * 2 * xs.T @ (xs @ wa - ya) / ya.size
    grad_b = 2 * xs.T @ (xs @ wb - yb) / yb.size
    new_a, new_b = model.get_weights()
    np.testing.assert_allclose(new_a, wa - 0.1 * grad_a, rtol=1e-12)
    np.testing.assert_allclose(new_b, wb - 0.1 * grad_b, rtol=1e-12)


def test_one_loss_applies_to_every_output_and_none_skips_one():
    model = two_output_model()
    x, _, y2 = data()
    y1 = np.random.default_rng(1).standard_normal((16, 3))
    model.compile("sgd", loss="mse")
    assert sorted(model.fit(x, [y1, y2], verbose=0).history) == ["cls_loss", "loss", "reg_loss"]
    model.compile("sgd", loss=["mse", None])
    assert sorted(model.fit(x, [y1, y2], verbose=0).history) == ["loss"]


def test_per_output_sample_weights():
    model = two_output_model()
    model.compile("sgd", loss=["sparse_categorical_crossentropy", "mse"])
    x, y1, y2 = data()
    zero = np.zeros(16)
    logs = model.evaluate(x, [y1, y2], sample_weight=[np.ones(16), zero], verbose=0, return_dict=True)
    assert logs["reg_loss"] == 0.0 and logs["loss"] == pytest.approx(logs["cls_loss"])


def test_several_inputs_from_a_list_or_a_dict():
    a, b = gpulayers.Input((3,), name="a"), gpulayers.Input((2,), name="b")
    ha, hb = layers.Dense(4, activation="relu")(a), layers.Dense(4)(b)
    merged = layers.Dense(1)(ha)  # the merge layers come with their own tests; here b feeds a second output
    model = Model([a, b], [merged, layers.Dense(1)(hb)])
    rng = np.random.default_rng(0)
    xa, xb, y = rng.standard_normal((10, 3)), rng.standard_normal((10, 2)), rng.standard_normal((10, 1))
    model.compile("sgd", "mse")
    model.fit([xa, xb], [y, y], epochs=1, batch_size=4, verbose=0)
    history = model.fit({"a": xa, "b": xb}, [y, y], epochs=1, verbose=0, validation_split=0.2)
    assert "val_loss" in history.history
    for p, q in zip(model.predict([xa, xb], verbose=0), model.predict({"b": xb, "a": xa}, verbose=0)):
        np.testing.assert_allclose(p, q)
    with pytest.raises(ValueError, match="cardinality"):
        model.fit([xa, xb[:5]], [y, y], verbose=0)


def test_compile_errors_name_the_argument():
    model = two_output_model()
    with pytest.raises(ValueError, match=r"Expected keys \['cls', 'reg'\] in loss dict"):
        model.compile("sgd", loss={"cls": "mse"})
    with pytest.raises(ValueError, match="Invalid keys in `loss`"):
        model.compile("sgd", loss={"cls": "mse", "reg": "mse", "other": "mse"})
    with pytest.raises(ValueError, match="2 outputs"):
        model.compile("sgd", loss=["mse"] * 3)
    with pytest.raises(ValueError, match="Invalid `metrics`"):
        model.compile("sgd", loss="mse", metrics=["mae"])
    with pytest.raises(ValueError, match="single output"):
        model.compile("sgd", loss="mse")
        x, y1, y2 = data()
        model.fit(x, [np.zeros((16, 3)), y2], class_weight={0: 1.0}, verbose=0)


def test_compile_config_round_trips_lists_and_dicts():
    model = two_output_model()
    model.compile("adam", loss={"cls": "sparse_categorical_crossentropy", "reg": "mse"},
                  loss_weights={"cls": 1.0, "reg": 0.5}, metrics={"cls": "accuracy", "reg": ["mae", "mse"]})
    config = model.get_compile_config()
    assert config["loss"] == {"cls": "sparse_categorical_crossentropy", "reg": "mse"}
    assert config["loss_weights"] == {"cls": 1.0, "reg": 0.5}
    assert config["metrics"] == {"cls": "accuracy", "reg": ["mae", "mse"]}
    other = two_output_model()
    other.compile_from_config(config)
    assert other.metrics_names == model.metrics_names
    x, y1, y2 = data()
    assert to_np(np.asarray(other.evaluate(x, [y1, y2], verbose=0))).shape == (6,)


def test_evaluate_lists_values_in_keras_order():
    # Keras 3.15 gives [loss, zz_loss, aa_loss, aa_mae, zz_mae] here: the per-output metrics sorted by name.
    x = gpulayers.Input((3,))
    model = Model(x, [layers.Dense(1, name="zz", kernel_initializer="ones")(x),
                      layers.Dense(1, name="aa", kernel_initializer="zeros")(x)])
    model.compile("sgd", "mse", metrics=[["mae"], ["mae"]])
    values = model.evaluate(np.ones((4, 3)), [np.zeros((4, 1)), np.ones((4, 1))], verbose=0)
    assert values == pytest.approx([10.0, 9.0, 1.0, 1.0, 3.0])


def test_a_flat_list_gives_one_metric_per_output_and_shared_outputs_compile():
    x = gpulayers.Input((3,))
    model = Model(x, [layers.Dense(1, name="a")(x), layers.Dense(1, name="b")(x)])
    model.compile("sgd", "mse", metrics=["mae", "mse"])
    assert model.metrics_names[-2:] == ["a_mae", "b_mse"]
    shared = layers.Dense(2, name="d")
    twice = Model(x, [shared(x), shared(layers.Dense(3)(x))])
    twice.compile("sgd", "mse")  # both outputs are 'd': one d_loss log, as in Keras
    assert sorted(twice.fit(np.ones((4, 3)), [np.ones((4, 2))] * 2, verbose=0).history) == ["d_loss", "loss"]
