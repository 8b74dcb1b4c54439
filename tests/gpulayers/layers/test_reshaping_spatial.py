"""ZeroPadding1D/3D, Cropping1D/3D, UpSampling1D/3D (the N-d code the 2-D layers share) and UpSampling2D's
bicubic and lanczos modes: values against float64 loop references, gradients, shapes, configs, argument
checks, and parity with Keras where it imports (outputs, configs, `.keras` files both ways). The 2-D layers'
own tests are in test_reshaping.py."""

import numpy as np
import pytest

import gpulayers
from gpulayers import layers as layers_module, saving
from gpulayers.layers import (
    Cropping1D,
    Cropping2D,
    Cropping3D,
    UpSampling1D,
    UpSampling2D,
    UpSampling3D,
    ZeroPadding1D,
    ZeroPadding2D,
    ZeroPadding3D,
)
from helpers import check_layer_gradients, keras_or_skip, to_np

FORMATS = ["channels_last", "channels_first"]


def spatial_axes(rank, data_format):
    first = 2 if data_format == "channels_first" else 1
    return list(range(first, first + rank))


def sample(rank, data_format, spatial, seed, batch=2, channels=2):
    shape = (batch, *spatial, channels) if data_format == "channels_last" else (batch, channels, *spatial)
    return np.random.default_rng(seed).standard_normal(shape)


# ---------------------------------------------------------------- float64 loop references


def ref_pad(x, axes, pairs):
    shape = list(x.shape)
    for a, (before, after) in zip(axes, pairs):
        shape[a] += before + after
    out = np.zeros(shape)
    for idx in np.ndindex(*x.shape):
        o = list(idx)
        for a, (before, _) in zip(axes, pairs):
            o[a] += before
        out[tuple(o)] = x[idx]
    return out


def ref_crop(x, axes, pairs):
    shape = list(x.shape)
    for a, (before, after) in zip(axes, pairs):
        shape[a] -= before + after
    out = np.empty(shape)
    for idx in np.ndindex(*shape):
        i = list(idx)
        for a, (before, _) in zip(axes, pairs):
            i[a] += before
        out[idx] = x[tuple(i)]
    return out


def ref_upsample(x, axes, factors):
    shape = list(x.shape)
    for a, f in zip(axes, factors):
        shape[a] *= f
    out = np.empty(shape)
    for idx in np.ndindex(*shape):
        i = list(idx)
        for a, f in zip(axes, factors):
            i[a] //= f
        out[idx] = x[tuple(i)]
    return out


# (argument as given, the (before, after) pair per spatial axis)
SIDES = {
    1: [(1, ((1, 1),)), ((2, 0), ((2, 0),)), ([0, 3], ((0, 3),)), (np.int64(1), ((1, 1),))],
    3: [
        (1, ((1, 1),) * 3),
        ((1, 0, 2), ((1, 1), (0, 0), (2, 2))),
        (((1, 0), (0, 2), (2, 1)), ((1, 0), (0, 2), (2, 1))),
        ([2, (0, 1), [1, 0]], ((2, 2), (0, 1), (1, 0))),
    ],
}
SPATIAL = {1: (7,), 3: (5, 4, 5)}
PAD_CASES = [(ZeroPadding1D, 1, f, *s) for f in FORMATS for s in SIDES[1]]
PAD_CASES += [(ZeroPadding3D, 3, f, *s) for f in FORMATS for s in SIDES[3]]
CROP_CASES = [(Cropping1D, 1, "channels_last", *s) for s in SIDES[1]]
CROP_CASES += [(Cropping3D, 3, f, *s) for f in FORMATS for s in SIDES[3]]


def _stored(rank, pairs):
    return pairs[0] if rank == 1 else pairs  # Keras keeps the 1-D amounts as one pair


@pytest.mark.parametrize("cls,rank,data_format,given,pairs", PAD_CASES)
def test_zero_padding_matches_loop_reference(cls, rank, data_format, given, pairs):
    x = sample(rank, data_format, SPATIAL[rank][:rank], seed=1, batch=1)
    layer = cls(given, data_format, dtype="float64")
    assert layer.padding == _stored(rank, pairs)
    y = to_np(layer(x))
    np.testing.assert_array_equal(y, ref_pad(x, spatial_axes(rank, data_format), pairs))
    assert y.shape == layer.compute_output_shape(x.shape)
    check_layer_gradients(layer, x)


@pytest.mark.parametrize("cls,rank,data_format,given,pairs", CROP_CASES)
def test_cropping_matches_loop_reference(cls, rank, data_format, given, pairs):
    x = sample(rank, data_format, SPATIAL[rank], seed=2, batch=1)
    kwargs = {} if rank == 1 else dict(data_format=data_format)
    layer = cls(given, dtype="float64", **kwargs)
    assert layer.cropping == _stored(rank, pairs)
    y = to_np(layer(x))
    np.testing.assert_array_equal(y, ref_crop(x, spatial_axes(rank, data_format), pairs))
    assert y.shape == layer.compute_output_shape(x.shape)
    check_layer_gradients(layer, x)


UPSAMPLING_CASES = [(UpSampling1D, 1, "channels_last", s, (s,)) for s in (1, 3)]
UPSAMPLING_CASES += [
    (UpSampling3D, 3, f, given, factors)
    for f in FORMATS
    for given, factors in ((2, (2, 2, 2)), ((1, 2, 3), (1, 2, 3)), ([3, 1, 1], (3, 1, 1)))
]


@pytest.mark.parametrize("cls,rank,data_format,given,factors", UPSAMPLING_CASES)
def test_upsampling_matches_loop_reference(cls, rank, data_format, given, factors):
    x = sample(rank, data_format, (3, 2, 2)[:rank], seed=3, batch=1)
    kwargs = {} if rank == 1 else dict(data_format=data_format)
    layer = cls(given, dtype="float64", **kwargs)
    assert layer.size == (factors[0] if rank == 1 else factors)
    y = to_np(layer(x))
    np.testing.assert_array_equal(y, ref_upsample(x, spatial_axes(rank, data_format), factors))
    assert y.shape == layer.compute_output_shape(x.shape)
    check_layer_gradients(layer, x)


def test_one_implementation_serves_every_rank():
    # The 2-D classes are the N-d code at rank 2: same results as the loop references.
    x = sample(2, "channels_first", (4, 5), seed=4)
    axes = spatial_axes(2, "channels_first")
    pairs = ((1, 2), (0, 1))
    np.testing.assert_array_equal(to_np(ZeroPadding2D(pairs, "channels_first", dtype="float64")(x)), ref_pad(x, axes, pairs))
    np.testing.assert_array_equal(to_np(Cropping2D(pairs, "channels_first", dtype="float64")(x)), ref_crop(x, axes, pairs))
    np.testing.assert_array_equal(
        to_np(UpSampling2D((2, 3), "channels_first", dtype="float64")(x)), ref_upsample(x, axes, (2, 3))
    )


def keys_cubic(t, a=-0.5):
    t = abs(t)
    if t <= 1:
        return (a + 2) * t**3 - (a + 3) * t**2 + 1
    return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a if t < 2 else 0.0


def lanczos(radius):
    return lambda t: float(np.sinc(t) * np.sinc(t / radius)) if abs(t) < radius else 0.0


KERNELS = {"bicubic": keys_cubic, "lanczos3": lanczos(3), "lanczos5": lanczos(5)}


def ref_resize(nhwc, size, kernel):
    """Float64 NHWC upsampling: output o samples at (o + 0.5) / factor - 0.5, taps kernel(t - j) over the
    input, normalized to sum to 1 (JAX's resize, antialias off, which Keras's JAX backend calls)."""

    def taps(n, factor):
        rows = []
        for o in range(n * factor):
            t = (o + 0.5) / factor - 0.5
            w = np.array([kernel(t - j) for j in range(n)])
            rows.append(w / w.sum())
        return np.array(rows)

    rows, cols = taps(nhwc.shape[1], size[0]), taps(nhwc.shape[2], size[1])
    out = np.zeros((nhwc.shape[0], rows.shape[0], cols.shape[0], nhwc.shape[3]))
    for o in range(rows.shape[0]):
        for p in range(cols.shape[0]):
            for j in range(nhwc.shape[1]):
                for k in range(nhwc.shape[2]):
                    out[:, o, p] += rows[o, j] * cols[p, k] * nhwc[:, j, k]
    return out


@pytest.mark.parametrize("interpolation", sorted(KERNELS))
@pytest.mark.parametrize("size,data_format", [((2, 3), "channels_last"), ((3, 1), "channels_first")])
def test_upsampling2d_cubic_and_lanczos_match_loop_reference(interpolation, size, data_format):
    nhwc = np.random.default_rng(5).standard_normal((1, 3, 4, 2))
    x = nhwc if data_format == "channels_last" else nhwc.transpose(0, 3, 1, 2)
    layer = UpSampling2D(size, data_format, interpolation.upper(), dtype="float64")
    assert layer.get_config()["interpolation"] == interpolation
    y = to_np(layer(x))
    y = y if data_format == "channels_last" else y.transpose(0, 2, 3, 1)
    np.testing.assert_allclose(y, ref_resize(nhwc, size, KERNELS[interpolation]), rtol=1e-12, atol=1e-12)
    check_layer_gradients(layer, x)


def test_upsampling2d_resizes_as_keras_jax_backend():
    # Keras's torch backend has another bicubic and no lanczos: its JAX backend calls jax.image.resize.
    jax = pytest.importorskip("jax")
    x = np.random.default_rng(6).standard_normal((2, 3, 5, 2)).astype(np.float32)
    for interpolation in ("bilinear", "bicubic", "lanczos3", "lanczos5"):
        want = np.asarray(jax.image.resize(x, (2, 6, 15, 2), method=interpolation, antialias=False))
        got = to_np(UpSampling2D((2, 3), interpolation=interpolation)(x))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6, err_msg=interpolation)


def test_shapes_with_unknown_sizes_and_empty_batches():
    assert ZeroPadding1D((1, 2)).compute_output_shape((None, None, 3)) == (None, None, 3)
    assert ZeroPadding1D((1, 2), "channels_first").compute_output_shape((None, 3, 4)) == (None, 3, 7)
    assert ZeroPadding3D(1).compute_output_shape((None, 2, None, 4, 5)) == (None, 4, None, 6, 5)
    assert Cropping1D((1, 2)).compute_output_shape((None, None, 3)) == (None, None, 3)
    assert Cropping3D(1, "channels_first").compute_output_shape((None, 5, None, 3, 4)) == (None, 5, None, 1, 2)
    assert UpSampling1D(3).compute_output_shape((None, None, 2)) == (None, None, 2)
    assert UpSampling1D(3).compute_output_shape((4, 2, 5)) == (4, 6, 5)
    assert UpSampling3D((1, 2, 3), "channels_first").compute_output_shape((None, 2, 3, None, 1)) == (None, 2, 3, None, 3)
    assert to_np(UpSampling3D()(np.zeros((0, 1, 2, 1, 3), np.float32))).shape == (0, 2, 4, 2, 3)
    assert to_np(Cropping3D()(np.zeros((0, 3, 3, 3, 2), np.float32))).shape == (0, 1, 1, 1, 2)


def test_padding_and_cropping_keep_integer_inputs():
    # As Keras's: only a float input is cast to the layer's dtype.
    x = np.arange(24).reshape(2, 3, 4)
    assert to_np(ZeroPadding1D()(x)).dtype.kind == "i"
    assert to_np(Cropping1D((1, 0))(x)).dtype.kind == "i"
    assert to_np(ZeroPadding3D(0)(x.reshape(1, 2, 3, 2, 2))).dtype.kind == "i"


def test_configs_are_keras_shaped():
    assert ZeroPadding1D().padding == (1, 1)
    assert ZeroPadding3D().padding == ((1, 1), (1, 1), (1, 1))
    assert Cropping1D().cropping == (1, 1)
    assert Cropping3D().cropping == ((1, 1), (1, 1), (1, 1))
    assert UpSampling1D().size == 2 and UpSampling3D().size == (2, 2, 2)
    base = {"name", "trainable", "dtype"}
    for layer, extra in (
        (ZeroPadding1D((1, 2), "channels_first"), dict(padding=(1, 2), data_format="channels_first")),
        (ZeroPadding3D((1, 2, 3)), dict(padding=((1, 1), (2, 2), (3, 3)), data_format="channels_last")),
        (Cropping1D(2), dict(cropping=(2, 2))),
        (Cropping3D(((0, 1), 2, (3, 0))), dict(cropping=((0, 1), (2, 2), (3, 0)), data_format="channels_last")),
        (UpSampling1D(3), dict(size=3)),
        (UpSampling3D((1, 2, 3), "channels_first"), dict(size=(1, 2, 3), data_format="channels_first")),
    ):
        config = layer.get_config()
        assert set(config) == base | set(extra), type(layer).__name__
        assert {k: config[k] for k in extra} == extra
        assert type(layer).from_config(config).get_config() == config
        assert layers_module.LAYER_CLASSES[type(layer).__name__] is type(layer)


def test_image_data_format_default(monkeypatch):
    from gpulayers import config as gconfig

    monkeypatch.setattr(gconfig, "image_data_format", lambda: "channels_first")
    for cls in (ZeroPadding1D, ZeroPadding3D, Cropping3D, UpSampling3D):
        assert cls().data_format == "channels_first"
    x = np.ones((1, 2, 3), np.float32)
    assert to_np(ZeroPadding1D()(x)).shape == (1, 2, 5)  # the steps are axis 2
    assert to_np(UpSampling1D()(x)).shape == (1, 4, 3)  # no data_format: the steps stay axis 1
    assert to_np(Cropping1D((1, 0))(x)).shape == (1, 1, 3)


PAD_CROP_BAD = [
    (ZeroPadding1D, "padding", (1,), r"`padding` argument must be an int or a tuple of 2 integers.*\(1,\)"),
    (ZeroPadding1D, "padding", (1, 2, 3), r"`padding`.*\(1, 2, 3\)"),
    (ZeroPadding1D, "padding", "1", r"`padding`.*'1'"),
    (ZeroPadding1D, "padding", -1, r"each >= 0. Received: padding=-1"),
    (ZeroPadding1D, "padding", 1.5, r"padding=1.5"),
    (ZeroPadding1D, "padding", (1, True), r"padding=\(1, True\)"),
    (Cropping1D, "cropping", (1, -2), r"each >= 0. Received: cropping=\(1, -2\)"),
    (Cropping1D, "cropping", None, r"cropping=None"),
    (ZeroPadding3D, "padding", (1, 2), r"`padding` should have three elements"),
    (ZeroPadding3D, "padding", (1, 2, 3, 4), r"should have three elements"),
    (ZeroPadding3D, "padding", "1", r"`padding` should be either an int.*'1'"),
    (ZeroPadding3D, "padding", -2, r"`padding` cannot be negative. Received: padding=-2"),
    (ZeroPadding3D, "padding", ((1, 2), (3, 4), (5, 6, 7)), r"3rd entry of padding.*\(5, 6, 7\)"),
    (ZeroPadding3D, "padding", ((1, 2), (3, 4), (5, -6)), r"3rd entry of padding.*each >= 0"),
    (ZeroPadding3D, "padding", ((1, 2), (3, 4), "5"), r"3rd entry of padding.*'5'"),
    (Cropping3D, "cropping", (1, (2.0, 1), 3), r"2nd entry of cropping.*2\.0"),
    (Cropping3D, "cropping", None, r"`cropping` should be either an int"),
]


@pytest.mark.parametrize("cls,name,value,pattern", PAD_CROP_BAD)
def test_padding_and_cropping_bad_arguments(cls, name, value, pattern):
    with pytest.raises(ValueError, match=pattern):  # ValueError throughout, as Keras
        cls(value)


@pytest.mark.parametrize(
    "make,error,pattern",
    [
        (lambda: UpSampling1D(0), ValueError, r"`size` should be a positive integer. Received: size=0"),
        (lambda: UpSampling1D(-2), ValueError, r"positive integer"),
        (lambda: UpSampling1D(2.5), TypeError, r"Expected an integer value for `size`.*size=2.5"),
        (lambda: UpSampling1D("2"), TypeError, r"Expected an integer value for `size`"),
        (lambda: UpSampling1D(True), TypeError, r"Expected an integer value for `size`.*size=True"),
        (lambda: UpSampling3D(0), ValueError, r"size.*0"),
        (lambda: UpSampling3D((2, 2)), ValueError, r"`size` argument must be a tuple of 3 integers"),
        (lambda: UpSampling3D(data_format="ncdhw"), ValueError, r"data_format.*'ncdhw'"),
        (lambda: ZeroPadding1D(data_format="ncw"), ValueError, r"data_format.*'ncw'"),
        # Keras's 1-D cropping and upsampling have no data_format, and UpSampling3D no interpolation.
        (lambda: Cropping1D(data_format="channels_last"), TypeError, r"data_format"),
        (lambda: UpSampling1D(data_format="channels_last"), TypeError, r"data_format"),
        (lambda: UpSampling3D(interpolation="nearest"), TypeError, r"interpolation"),
    ],
)
def test_other_bad_arguments(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()


def test_cropping_too_much_is_refused_before_building():
    layer = Cropping1D((3, 3))
    with pytest.raises(ValueError, match=r"`cropping` parameter of `Cropping1D` layer must be smaller than the "
                                         r"input length. Received: input_shape=\(3, 5, 7\)"):
        layer(np.ones((3, 5, 7), np.float32))
    assert not layer.built
    with pytest.raises(ValueError, match=r"must be smaller"):
        Cropping1D((3, 3))(gpulayers.Input(batch_shape=(3, 6, 7)))
    layer = Cropping3D(((0, 0), (4, 5), (0, 0)), data_format="channels_first")
    with pytest.raises(ValueError, match=r"Values in `cropping` argument should be smaller than the corresponding "
                                         r"spatial dimension.*cropping=\(\(0, 0\), \(4, 5\), \(0, 0\)\)"):
        layer(np.ones((1, 2, 3, 9, 3), np.float32))
    assert not layer.built
    assert Cropping3D(((0, 0), (4, 4), (0, 0))).compute_output_shape((1, 3, 9, 3, 2)) == (1, 3, 1, 3, 2)


@pytest.mark.parametrize("cls,rank", [(ZeroPadding1D, 1), (Cropping1D, 1), (UpSampling1D, 1),
                                      (ZeroPadding3D, 3), (Cropping3D, 3), (UpSampling3D, 3)])
def test_wrong_ranks_are_refused(cls, rank):
    with pytest.raises(ValueError, match=rf"expected ndim={rank + 2}, found ndim=4"):
        cls()(np.ones((1, 4, 4, 4), np.float32))
    with pytest.raises(ValueError, match=rf"expected ndim={rank + 2}"):
        cls().compute_output_shape((1, 4, 4, 4))


# ---------------------------------------------------------------- Keras parity

KERAS_CASES = [
    ("ZeroPadding1D", dict(padding=(1, 2)), (2, 3, 4)),
    ("ZeroPadding1D", dict(padding=2, data_format="channels_first"), (2, 3, 4)),
    ("ZeroPadding3D", dict(padding=((1, 0), 2, (0, 1))), (1, 2, 3, 2, 2)),
    ("ZeroPadding3D", dict(padding=1, data_format="channels_first"), (1, 2, 3, 2, 2)),
    ("Cropping1D", dict(cropping=(1, 0)), (2, 4, 3)),
    ("Cropping1D", dict(cropping=1), (2, 4, 3)),
    ("Cropping3D", dict(cropping=((1, 0), (0, 1), 1)), (1, 3, 3, 4, 2)),
    ("Cropping3D", dict(cropping=(1, 0, 1), data_format="channels_first"), (1, 2, 3, 3, 4)),
    ("UpSampling1D", dict(size=3), (2, 3, 4)),
    ("UpSampling3D", dict(size=(1, 2, 3)), (1, 2, 3, 2, 2)),
    ("UpSampling3D", dict(size=2, data_format="channels_first"), (1, 2, 2, 3, 2)),
]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name,kwargs,shape", KERAS_CASES)
def test_matches_keras(name, kwargs, shape):
    keras = keras_or_skip()
    x = np.random.default_rng(8).standard_normal(shape).astype(np.float32)
    theirs = getattr(keras.layers, name)(name="r", **kwargs)
    ours = getattr(layers_module, name)(name="r", **kwargs)
    expected = keras.ops.convert_to_numpy(theirs(x))
    np.testing.assert_array_equal(to_np(ours(x)), expected)
    symbolic = (None,) + shape[1:]
    assert ours.compute_output_shape(symbolic) == tuple(theirs.compute_output_shape(symbolic))
    assert ours.get_config() == theirs.get_config()
    clone = getattr(layers_module, name).from_config(theirs.get_config())
    np.testing.assert_array_equal(to_np(clone(x)), expected)


def _stack(lib, rank, data_format):
    """The same small model in gpulayers or Keras: pad, crop, upsample, flatten, dense."""
    L = lib.layers
    fmt = {} if rank == 1 else dict(data_format=data_format)
    if rank == 1:
        shape, spatial = ((5, 3), [L.ZeroPadding1D((1, 2), data_format=data_format), L.Cropping1D((2, 1)), L.UpSampling1D(2)])
    else:
        shape = (2, 3, 2, 2) if data_format == "channels_first" else (3, 2, 2, 2)
        spatial = [L.ZeroPadding3D(((1, 0), 1, (0, 1)), **fmt), L.Cropping3D((0, 1, (1, 0)), **fmt), L.UpSampling3D((2, 1, 2), **fmt)]
    return lib.Sequential([lib.Input(shape), *spatial, L.Flatten(data_format=data_format), L.Dense(3)])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("rank,data_format", [(1, "channels_first"), (3, "channels_first"), (3, "channels_last")])
def test_keras_files_both_ways(tmp_path, rank, data_format):
    keras = keras_or_skip()
    ours = _stack(gpulayers, rank, data_format)
    x = np.random.default_rng(9).standard_normal((2,) + ours.input_shape[1:]).astype(np.float32)
    ours.save(tmp_path / "ours.keras")
    theirs = keras.saving.load_model(tmp_path / "ours.keras")
    np.testing.assert_allclose(theirs.predict(x, verbose=0), ours.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert [l.get_config() for l in theirs.layers] == [l.get_config() for l in ours.layers]

    kmodel = _stack(keras, rank, data_format)
    kmodel.save(tmp_path / "theirs.keras")
    back = saving.load_model(tmp_path / "theirs.keras")
    np.testing.assert_allclose(back.predict(x, verbose=0), kmodel.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert [l.get_config() for l in back.layers] == [l.get_config() for l in kmodel.layers]
