"""Rescaling, Normalization (+adapt), Resizing, CenterCrop: loop references, gradients, Keras parity, files."""

import json

import numpy as np
import pytest

import gpulayers
from gpulayers.layers import CenterCrop, Normalization, Rescaling, Resizing
from helpers import check_layer_gradients, keras_or_skip, to_np

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 7, 5, 3)).astype("float32")


def bilinear_reference(img, out_h, out_w):
    """Half-pixel bilinear with clamped edges, by loops in float64 (one HWC image)."""
    h, w, c = img.shape
    out = np.zeros((out_h, out_w, c))
    for i in range(out_h):
        for j in range(out_w):
            y = min(max((i + 0.5) * h / out_h - 0.5, 0), h - 1)
            x = min(max((j + 0.5) * w / out_w - 0.5, 0), w - 1)
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            fy, fx = y - y0, x - x0
            out[i, j] = ((1 - fy) * (1 - fx) * img[y0, x0] + (1 - fy) * fx * img[y0, x1]
                         + fy * (1 - fx) * img[y1, x0] + fy * fx * img[y1, x1])
    return out


def test_resizing_matches_loop_reference_and_gradients():
    x = X.astype("float64")
    layer = Resizing(4, 9, dtype="float64")
    np.testing.assert_allclose(to_np(layer(x))[1], bilinear_reference(x[1], 4, 9), rtol=1e-12, atol=1e-12)
    check_layer_gradients(Resizing(4, 3, dtype="float64"), x[:1])
    check_layer_gradients(Resizing(3, 3, interpolation="nearest", crop_to_aspect_ratio=True, dtype="float64"), x[:1])


def test_rescaling_normalization_centercrop_formulas_and_gradients():
    np.testing.assert_allclose(to_np(Rescaling(0.5, 1.0)(X)), X * 0.5 + 1.0, rtol=1e-6)
    d = X.reshape(-1, 3).astype("float64")
    layer = Normalization(dtype="float64")
    layer.adapt(d)
    assert [w.shape for w in layer.get_weights()] == [(3,), (3,), ()]
    np.testing.assert_allclose(to_np(layer(d)), (d - d.mean(0)) / d.std(0), rtol=1e-10)
    streamed = Normalization(dtype="float64")
    streamed.adapt([d[:7], (d[7:30], None), d[30:]])  # batches combine as Keras combines them
    np.testing.assert_allclose(streamed.get_weights()[1], d.var(0), rtol=1e-10)
    check_layer_gradients(layer, d[:4])
    check_layer_gradients(Normalization(mean=2.0, variance=4.0, invert=True, dtype="float64"), d[:4])
    check_layer_gradients(Rescaling(2.0, 1.0, dtype="float64"), d[:4])
    np.testing.assert_array_equal(to_np(CenterCrop(3, 3)(X)), X[:, 2:5, 1:4])
    check_layer_gradients(CenterCrop(9, 4, dtype="float64"), X[:1].astype("float64"))


@pytest.mark.parametrize("kwargs", [dict(height=0, width=2), dict(height=2, width=2, interpolation="bicubic"),
                                    dict(height=2, width=2, crop_to_aspect_ratio=True, pad_to_aspect_ratio=True),
                                    dict(height=2, width=2, fill_mode="reflect")])
def test_bad_resizing_arguments(kwargs):
    with pytest.raises(ValueError):
        Resizing(**kwargs)


def test_bad_normalization_arguments():
    with pytest.raises(ValueError, match="mean"):
        Normalization(mean=1.0)
    with pytest.raises(TypeError, match="axis"):
        Normalization(axis="x")


RESIZES = [dict(height=4, width=9), dict(height=10, width=3, interpolation="nearest"),
           dict(height=4, width=4, crop_to_aspect_ratio=True), dict(height=4, width=6, pad_to_aspect_ratio=True,
                                                                   fill_value=2.0),
           dict(height=3, width=8, pad_to_aspect_ratio=True, data_format="channels_first")]


def test_forward_parity_with_keras():
    keras = keras_or_skip()
    for kw in RESIZES:
        np.testing.assert_allclose(to_np(Resizing(**kw)(X)), np.asarray(keras.layers.Resizing(**kw)(X)), atol=1e-6)
    xi = (RNG.random((7, 5, 3)) * 255).astype("uint8")
    np.testing.assert_array_equal(to_np(Resizing(4, 9)(xi)), np.asarray(keras.layers.Resizing(4, 9)(xi)))
    for kw in [dict(height=3, width=3), dict(height=9, width=4), dict(height=2, width=6)]:
        np.testing.assert_allclose(to_np(CenterCrop(**kw)(X)), np.asarray(keras.layers.CenterCrop(**kw)(X)), atol=1e-6)
    np.testing.assert_allclose(to_np(Rescaling([1., 2., 3.], 1.)(X)), np.asarray(keras.layers.Rescaling([1., 2., 3.], 1.)(X)))
    d = X.reshape(-1, 3)
    for ax in (-1, None, (0, 1)):
        ours, theirs = Normalization(axis=ax), keras.layers.Normalization(axis=ax)
        ours.adapt(d), theirs.adapt(d)
        np.testing.assert_allclose(to_np(ours(d)), np.asarray(theirs(d)), atol=1e-5)
    x3 = RNG.standard_normal((2, 3, 4, 5)).astype("float32")
    kw = dict(axis=(1, 3), mean=[1., 2, 3, 4, 5], variance=[1., 2, 3, 4, 5], invert=True)
    np.testing.assert_allclose(to_np(Normalization(**kw)(x3)), np.asarray(keras.layers.Normalization(**kw)(x3)),
                               atol=1e-6)


def _model(L, Input, Sequential, seed_kw, norm=None):
    return Sequential([Input((8, 6, 3)), L.Rescaling(0.5, 0.1), L.Normalization(**(norm or {})), L.RandomFlip(**seed_kw),
                       L.RandomTranslation(0.2, 0.1, **seed_kw), L.RandomCrop(6, 6, **seed_kw),
                       L.Resizing(5, 4), L.CenterCrop(4, 4), L.Flatten(), L.Dense(2)])


def test_keras_files_both_ways(tmp_path):
    keras = keras_or_skip()
    from gpulayers import saving
    x = RNG.standard_normal((3, 8, 6, 3)).astype("float32")
    mine = _model(gpulayers.layers, gpulayers.Input, gpulayers.Sequential, dict(seed=3))
    mine.layers[1].adapt(x * 0.5 + 0.1)
    expected = mine.predict(x, verbose=0)
    mine.save(tmp_path / "g.keras")
    theirs = keras.saving.load_model(str(tmp_path / "g.keras"))
    np.testing.assert_allclose(np.asarray(theirs.predict(x, verbose=0)), expected, rtol=1e-5, atol=1e-6)
    for a, b in zip(mine.layers, theirs.layers, strict=True):
        assert json.loads(json.dumps(a.get_config())) == json.loads(json.dumps(b.get_config()))
    kmodel = _model(keras.layers, keras.Input, keras.Sequential, dict(seed=3))
    kmodel.layers[1].adapt(x * 0.5 + 0.1)  # an adapted Normalization holds an integer `count`
    kmodel.save(str(tmp_path / "k.keras"))
    loaded = saving.load_model(tmp_path / "k.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), np.asarray(kmodel.predict(x, verbose=0)),
                               rtol=1e-5, atol=1e-6)


def test_adapted_normalization_file_loads(tmp_path):
    from gpulayers import saving
    model = gpulayers.Sequential([gpulayers.Input((3,)), Normalization()])
    model.layers[0].adapt(X.reshape(-1, 3))
    model.save(tmp_path / "n.keras")
    loaded = saving.load_model(tmp_path / "n.keras")
    for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_an_integer_weight_refuses_a_float_dataset(tmp_path):
    import h5py
    model = gpulayers.Sequential([gpulayers.Input((3,)), Normalization()])
    model.layers[0].adapt(X.reshape(-1, 3))
    path = tmp_path / "n.weights.h5"
    model.save_weights(path)
    with h5py.File(path, "r+") as f:
        (count,) = [k for k, v in f["layers/normalization/vars"].items() if v.dtype.kind in "iu"]
        del f["layers/normalization/vars"][count]
        f["layers/normalization/vars"][count] = np.float32(3.0)
    before = model.get_weights()
    with pytest.raises(ValueError, match="an integer array for weight"):
        model.load_weights(path)
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)
