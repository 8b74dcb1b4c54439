"""gpulayers.metrics_losses: the losses as metrics, against float64 references and Keras 3.15."""

import numpy as np
import pytest

from gpulayers import metrics as M
from helpers import keras_or_skip

RNG = np.random.default_rng(21)


def _weighted_mean(per_sample, weights):
    per_sample, weights = np.concatenate(per_sample), np.concatenate(weights)
    return float((per_sample * weights).sum() / weights.sum())


def _batches(kind):
    out = []
    for n in (3, 5):
        if kind == "probabilities":
            t = np.eye(4)[RNG.integers(0, 4, n)]
            p = RNG.uniform(0.05, 1.0, (n, 4))
            p /= p.sum(axis=1, keepdims=True)
        elif kind == "binary":
            t, p = RNG.integers(0, 2, (n, 3)).astype(float), RNG.uniform(0.05, 0.95, (n, 3))
        elif kind == "counts":
            t, p = RNG.poisson(2.0, (n, 3)).astype(float), RNG.uniform(0.5, 4.0, (n, 3))
        else:
            t, p = RNG.normal(size=(n, 3)), RNG.normal(size=(n, 3))
        out.append((t, p, RNG.uniform(0.2, 1.5, n)))
    return out


def _eps_clip(p):
    return np.clip(p, 1e-7, 1 - 1e-7)


REFERENCES = {
    # metric -> (data kind, per-sample float64 reference)
    M.Hinge: ("binary", lambda t, p: np.maximum(1 - (2 * t - 1) * p, 0).mean(-1)),
    M.SquaredHinge: ("binary", lambda t, p: (np.maximum(1 - (2 * t - 1) * p, 0) ** 2).mean(-1)),
    M.CategoricalHinge: ("probabilities", lambda t, p: np.maximum(((1 - t) * p).max(-1) - (t * p).sum(-1) + 1, 0)),
    M.KLDivergence: ("probabilities", lambda t, p: (np.clip(t, 1e-7, 1) * np.log(np.clip(t, 1e-7, 1) / np.clip(p, 1e-7, 1))).sum(-1)),
    M.Poisson: ("counts", lambda t, p: (p - t * np.log(p + 1e-7)).mean(-1)),
    M.LogCoshError: ("real", lambda t, p: np.log(np.cosh(p - t)).mean(-1)),
    M.BinaryCrossentropy: ("binary", lambda t, p: -(t * np.log(_eps_clip(p)) + (1 - t) * np.log(1 - _eps_clip(p))).mean(-1)),
    M.CategoricalCrossentropy: ("probabilities", lambda t, p: -(t * np.log(_eps_clip(p))).sum(-1)),
    M.CosineSimilarity: ("real", lambda t, p: (t * p).sum(-1) / np.linalg.norm(t, axis=-1) / np.linalg.norm(p, axis=-1)),
}


@pytest.mark.parametrize("cls", sorted(REFERENCES, key=lambda c: c.__name__), ids=lambda c: c.__name__)
def test_the_weighted_mean_of_the_per_sample_reference(cls):
    kind, ref = REFERENCES[cls]
    m = cls()
    per, ws = [], []
    for t, p, w in _batches(kind):
        m.update_state(t, p, sample_weight=w)
        per.append(ref(t, p))
        ws.append(w)
    assert m.result() == pytest.approx(_weighted_mean(per, ws), rel=1e-6)
    m.reset_state()
    assert m.result() == 0.0
    again = M.deserialize(M.serialize(m))
    assert type(again) is cls and again.get_config() == m.get_config()


def test_sparse_cross_entropy_and_rmse_and_keras_documented_values():
    m = M.SparseCategoricalCrossentropy()
    m.update_state([1, 2], [[0.05, 0.95, 0], [0.1, 0.8, 0.1]], sample_weight=np.array([0.3, 0.7]))
    assert m.result() == pytest.approx(1.6271976, rel=1e-6)
    rmse = M.RootMeanSquaredError()
    rmse.update_state(np.array([[0, 1], [0, 0]]), np.array([[1, 1], [0, 0]]))
    assert rmse.result() == pytest.approx(0.5)
    rmse.update_state(np.array([[0, 1], [0, 0]]), np.array([[1, 1], [0, 0]]), sample_weight=np.array([1.0, 0.0]))
    # per-sample squared errors 0.5 and 0, then 0.5 (weight 1) and 0 (weight 0): sqrt(1.0 / 3)
    assert rmse.result() == pytest.approx(np.sqrt(1.0 / 3))
    cos = M.CosineSimilarity(axis=1)
    cos.update_state(np.array([[0.0, 1.0], [1.0, 1.0]]), np.array([[1.0, 0.0], [1.0, 1.0]]), sample_weight=[0.3, 0.7])
    assert cos.result() == pytest.approx(0.7)
    assert M.get("logcosh").name == "logcosh" and type(M.get("kl_divergence")) is M.KLDivergence
    assert M.BinaryCrossentropy(from_logits=True, label_smoothing=0.1).get_config() == {
        "name": "binary_crossentropy", "dtype": M.BinaryCrossentropy().dtype, "from_logits": True, "label_smoothing": 0.1}
    with pytest.raises(ValueError, match="label_smoothing"):
        M.CategoricalCrossentropy(label_smoothing=2)


@pytest.mark.parametrize("name", ["Hinge", "SquaredHinge", "CategoricalHinge", "KLDivergence", "Poisson", "LogCoshError",
                                  "BinaryCrossentropy", "CategoricalCrossentropy", "CosineSimilarity",
                                  "RootMeanSquaredError"])
def test_equal_to_keras(name):
    keras = keras_or_skip()
    kind = {"Poisson": "counts", "CategoricalHinge": "probabilities", "KLDivergence": "probabilities",
            "CategoricalCrossentropy": "probabilities", "BinaryCrossentropy": "binary", "Hinge": "binary",
            "SquaredHinge": "binary"}.get(name, "real")
    ours, theirs = getattr(M, name)(), getattr(keras.metrics, name)()
    for t, p, w in _batches(kind):
        t, p, w = t.astype(np.float32), p.astype(np.float32), w.astype(np.float32)
        ours.update_state(t, p, sample_weight=w)
        theirs.update_state(t, p, sample_weight=w)
    assert ours.result() == pytest.approx(float(keras.ops.convert_to_numpy(theirs.result())), rel=1e-5, abs=1e-6)
    assert ours.name == theirs.name
