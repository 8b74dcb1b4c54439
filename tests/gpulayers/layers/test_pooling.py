"""Pooling layers: max, average, stochastic and global, against plain float64 loop references."""

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gpulayers.layers import (
    AveragePooling2D,
    AvgPool2D,
    GlobalAveragePooling2D,
    GlobalAvgPool2D,
    GlobalMaxPool2D,
    GlobalMaxPooling2D,
    MaxPool2D,
    MaxPooling2D,
    StochasticPooling2D,
)
from helpers import forward, check_layer_gradients, numeric_grad, to_np

# ---------------------------------------------------------------- references (plain loops)


def keras_out_len(n, k, s, padding):
    if padding == "same":
        return math.ceil(n / s)
    return (n - k) // s + 1


def pad_before(n, k, s, padding):
    if padding == "valid":
        return 0
    total = max((math.ceil(n / s) - 1) * s + k - n, 0)
    return total // 2  # the extra padded cell goes after (bottom/right)


def windows(h, w, pool, strides, padding):
    """Yield ((i, j), [(r, q), ...]) with the REAL cells of each output window in row-major order."""
    oh, ow = keras_out_len(h, pool[0], strides[0], padding), keras_out_len(w, pool[1], strides[1], padding)
    top, left = pad_before(h, pool[0], strides[0], padding), pad_before(w, pool[1], strides[1], padding)
    for i in range(oh):
        for j in range(ow):
            cells = []
            for a in range(pool[0]):
                for b in range(pool[1]):
                    r, q = i * strides[0] - top + a, j * strides[1] - left + b
                    if 0 <= r < h and 0 <= q < w:
                        cells.append((r, q))
            yield (i, j), cells


def to_nhwc(x, data_format):
    x = np.asarray(x, dtype=np.float64)
    return x.transpose(0, 2, 3, 1) if data_format == "channels_first" else x


def from_nhwc(y, data_format):
    return y.transpose(0, 3, 1, 2) if data_format == "channels_first" else y


def ref_pool(x, pool, strides, padding, data_format, kind):
    x = to_nhwc(x, data_format)
    n, h, w, c = x.shape
    oh, ow = keras_out_len(h, pool[0], strides[0], padding), keras_out_len(w, pool[1], strides[1], padding)
    out = np.zeros((n, oh, ow, c))
    for (i, j), cells in windows(h, w, pool, strides, padding):
        for b in range(n):
            for ch in range(c):
                vals = [x[b, r, q, ch] for r, q in cells]
                if kind == "max":
                    out[b, i, j, ch] = max(vals)
                elif kind == "avg":
                    out[b, i, j, ch] = sum(vals) / len(vals)
                elif kind == "stochastic_inference":
                    a = [max(v, 0.0) for v in vals]
                    s = sum(a)
                    out[b, i, j, ch] = sum(v * v for v in a) / s if s > 0 else 0.0
    return from_nhwc(out, data_format)


def ref_max_pool_grad(x, dy, pool, strides, padding, data_format):
    """The gradient goes to the FIRST maximum (row-major) of each window."""
    x, dy = to_nhwc(x, data_format), to_nhwc(dy, data_format)
    n, h, w, c = x.shape
    dx = np.zeros_like(x)
    for (i, j), cells in windows(h, w, pool, strides, padding):
        for b in range(n):
            for ch in range(c):
                best = None
                for r, q in cells:
                    if best is None or x[b, r, q, ch] > x[b, best[0], best[1], ch]:
                        best = (r, q)
                dx[b, best[0], best[1], ch] += dy[b, i, j, ch]
    return from_nhwc(dx, data_format)


def ref_avg_pool_grad(x_shape, dy, pool, strides, padding, data_format):
    dy = to_nhwc(dy, data_format)
    shape = tuple(x_shape)
    n, h, w, c = (shape[0], shape[2], shape[3], shape[1]) if data_format == "channels_first" else shape
    dx = np.zeros((n, h, w, c))
    for (i, j), cells in windows(h, w, pool, strides, padding):
        for r, q in cells:
            dx[:, r, q, :] += dy[:, i, j, :] / len(cells)
    return from_nhwc(dx, data_format)


def separated(rng, shape, scale=0.1, offset=0.0):
    """Distinct values at least ``scale`` apart, in random order (no ties, no kinks for max)."""
    size = int(np.prod(shape))
    return (rng.permutation(size).reshape(shape) * scale + offset).astype(np.float64)


def make_shape(n, h, w, c, data_format):
    return (n, h, w, c) if data_format == "channels_last" else (n, c, h, w)


DATA_FORMATS = ["channels_last", "channels_first"]

WINDOW_CASES = [
    # pool, strides, padding, (h, w)
    ((2, 2), None, "valid", (4, 6)),
    ((2, 2), None, "valid", (5, 5)),  # last row/col dropped
    ((2, 2), None, "same", (5, 5)),  # one padded row/col bottom/right
    ((3, 3), (2, 2), "valid", (7, 7)),  # overlapping windows
    ((3, 3), (2, 2), "same", (6, 6)),
    ((3, 3), (1, 1), "same", (4, 5)),  # padding on both sides
    ((2, 3), (1, 2), "valid", (5, 7)),
    ((3, 2), (2, 3), "same", (5, 7)),
    ((4, 4), (3, 3), "same", (5, 5)),
    ((1, 1), (2, 2), "valid", (5, 4)),  # strides larger than the window
]


# ---------------------------------------------------------------- max pooling


@pytest.mark.parametrize("data_format", DATA_FORMATS)
@pytest.mark.parametrize("pool,strides,padding,hw", WINDOW_CASES)
def test_max_pool_forward_and_backward_match_reference(pool, strides, padding, hw, data_format):
    rng = np.random.default_rng(abs(hash((pool, strides, padding, hw))) % 2**32)
    x = rng.standard_normal(make_shape(2, hw[0], hw[1], 3, data_format)).astype(np.float32)
    layer = MaxPooling2D(pool, strides=strides, padding=padding, data_format=data_format)
    y, backward = forward(layer, x)
    s = pool if strides is None else strides
    ref = ref_pool(x, pool, s, padding, data_format, "max")
    assert y.shape == ref.shape == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=0)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = to_np(backward(dy))
    np.testing.assert_allclose(dx, ref_max_pool_grad(x, dy, pool, s, padding, data_format), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("data_format", DATA_FORMATS)
def test_max_pool_ties_send_the_gradient_to_the_first_maximum(data_format):
    # Every window of 2x2 all-equal values: the top-left cell of each window gets dy.
    x = np.ones(make_shape(1, 4, 4, 2, data_format), np.float32)
    layer = MaxPooling2D(2, data_format=data_format)
    y, backward = forward(layer, x)
    dx = to_nhwc(to_np(backward(np.ones(y.shape, np.float32))), data_format)
    expected = np.zeros((1, 4, 4, 2))
    expected[:, 0::2, 0::2, :] = 1
    np.testing.assert_array_equal(dx, expected)
    # Ties inside one window at the 2nd and 4th cell: the 2nd (row-major) wins.
    x = np.array([[0.0, 5.0], [1.0, 5.0]]).reshape(1, 2, 2, 1)
    layer = MaxPooling2D(2, data_format="channels_last")
    _, backward = forward(layer, x)
    dx = to_np(backward(np.full((1, 1, 1, 1), 3.0, np.float32)))[0, :, :, 0]
    np.testing.assert_array_equal(dx, [[0, 3], [0, 0]])
    # Overlapping windows with ties, against the reference.
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, size=make_shape(2, 5, 5, 2, data_format)).astype(np.float32)
    layer = MaxPooling2D(3, strides=1, padding="same", data_format=data_format)
    y, backward = forward(layer, x)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = to_np(backward(dy))
    np.testing.assert_allclose(dx, ref_max_pool_grad(x, dy, (3, 3), (1, 1), "same", data_format), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("data_format", DATA_FORMATS)
def test_max_pool_same_padding_never_wins(data_format):
    # All-negative input: a zero padding cell would win if it took part.
    rng = np.random.default_rng(1)
    x = -1.0 - rng.random(make_shape(2, 5, 5, 2, data_format))
    layer = MaxPooling2D(2, padding="same", data_format=data_format, dtype="float64")
    y, backward = forward(layer, x)
    assert (y < 0).all()
    np.testing.assert_array_equal(y, ref_pool(x, (2, 2), (2, 2), "same", data_format, "max"))
    dx = to_np(backward(np.ones(y.shape)))
    assert dx.sum() == y.size  # every window's gradient lands on a real cell


def test_max_pool_example_and_defaults():
    layer = MaxPooling2D(data_format="channels_last")
    assert layer.pool_size == (2, 2) and layer.strides == (2, 2) and layer.padding == "valid"
    y = to_np(layer(np.arange(16.0).reshape(1, 4, 4, 1)))[0, :, :, 0]
    np.testing.assert_array_equal(y, [[5, 7], [13, 15]])
    assert MaxPooling2D(pool_size=3).strides == (3, 3)
    assert MaxPooling2D(pool_size=(2, 3)).strides == (2, 3)
    assert MaxPooling2D(pool_size=3, strides=1).strides == (1, 1)
    assert MaxPool2D is MaxPooling2D
    assert AvgPool2D is AveragePooling2D
    assert GlobalAvgPool2D is GlobalAveragePooling2D
    assert GlobalMaxPool2D is GlobalMaxPooling2D


# ---------------------------------------------------------------- average pooling


@pytest.mark.parametrize("data_format", DATA_FORMATS)
@pytest.mark.parametrize("pool,strides,padding,hw", WINDOW_CASES)
def test_avg_pool_forward_and_backward_match_reference(pool, strides, padding, hw, data_format):
    rng = np.random.default_rng(abs(hash((pool, strides, padding, hw, 1))) % 2**32)
    x = rng.standard_normal(make_shape(2, hw[0], hw[1], 3, data_format)).astype(np.float32)
    layer = AveragePooling2D(pool, strides=strides, padding=padding, data_format=data_format)
    y, backward = forward(layer, x)
    s = pool if strides is None else strides
    ref = ref_pool(x, pool, s, padding, data_format, "avg")
    assert y.shape == ref.shape == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    np.testing.assert_allclose(
        to_np(backward(dy)), ref_avg_pool_grad(x.shape, dy, pool, s, padding, data_format), rtol=1e-5, atol=1e-6
    )


def test_avg_pool_same_divides_by_real_cells():
    # 3x3 ones, pool 2 'same': every window averages real cells only, so all outputs are 1
    # (a padded-count divisor would give 0.5 and 0.25 at the border).
    x = np.ones((1, 3, 3, 1), np.float32)
    y = to_np(AveragePooling2D(2, padding="same", data_format="channels_last")(x))
    np.testing.assert_array_equal(y, np.ones((1, 2, 2, 1)))
    x = np.arange(9.0).reshape(1, 3, 3, 1)
    y = to_np(AveragePooling2D(2, padding="same", data_format="channels_last")(x))[0, :, :, 0]
    np.testing.assert_allclose(y, [[(0 + 1 + 3 + 4) / 4, (2 + 5) / 2], [(6 + 7) / 2, 8.0]], rtol=1e-6)


def test_avg_pool_requires_pool_size_and_defaults_strides():
    with pytest.raises(TypeError, match="pool_size"):
        AveragePooling2D()
    layer = AveragePooling2D(3)
    assert layer.pool_size == (3, 3) and layer.strides == (3, 3) and layer.padding == "valid"
    assert to_np(layer(np.ones((1, 6, 7, 2)), training=False)).shape == (1, 2, 2, 2)


# ---------------------------------------------------------------- stochastic pooling


@pytest.mark.parametrize("data_format", DATA_FORMATS)
@pytest.mark.parametrize("pool,strides,padding,hw", WINDOW_CASES[:6])
def test_stochastic_inference_matches_reference(pool, strides, padding, hw, data_format):
    rng = np.random.default_rng(abs(hash((pool, strides, padding, hw, 2))) % 2**32)
    x = rng.standard_normal(make_shape(2, hw[0], hw[1], 2, data_format)).astype(np.float32)
    x[0, 0, 0, 0] = -1.0
    layer = StochasticPooling2D(pool, strides=strides, padding=padding, data_format=data_format)
    y = to_np(layer(x, training=False))
    s = pool if strides is None else strides
    ref = ref_pool(x, pool, s, padding, data_format, "stochastic_inference")
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


def test_stochastic_zero_sum_windows_give_zero():
    x = np.array(
        [[-1.0, -2.0, 0.0, 0.0], [-3.0, -0.5, 0.0, 0.0], [0.0, -1.0, 1.0, 2.0], [-1.0, -1.0, 3.0, 4.0]]
    ).reshape(1, 4, 4, 1)
    layer = StochasticPooling2D(2, seed=0, data_format="channels_last", dtype="float64")
    y = to_np(layer(x, training=False))[0, :, :, 0]
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, [[0, 0], [0, 30 / 10]], rtol=1e-12)
    for _ in range(20):
        y, backward = forward(layer, x, training=True)
        y = y[0, :, :, 0]
        assert y[0, 0] == 0 and y[0, 1] == 0 and y[1, 0] == 0
        assert y[1, 1] in (1.0, 2.0, 3.0, 4.0)
        dx = to_np(backward(np.ones((1, 2, 2, 1))))[0, :, :, 0]
        assert np.isfinite(dx).all()
        assert dx[:2, :].sum() == 0 and dx[2:, :2].sum() == 0  # zero-sum windows get no gradient
        assert dx[2:, 2:].sum() == 1


@pytest.mark.parametrize("data_format", DATA_FORMATS)
@pytest.mark.parametrize("padding,pool,strides", [("valid", 2, None), ("same", 2, None), ("same", 3, 2), ("valid", 3, 1)])
def test_stochastic_training_picks_a_positive_element_of_its_window(padding, pool, strides, data_format):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(make_shape(2, 5, 5, 3, data_format))
    pool2, s2 = (pool, pool), (pool, pool) if strides is None else (strides, strides)
    xn = to_nhwc(x, data_format)
    for seed in range(8):
        layer = StochasticPooling2D(pool, strides=strides, padding=padding, data_format=data_format, seed=seed, dtype="float64")
        y, backward = forward(layer, x, training=True)
        y = to_nhwc(y, data_format)
        dx = to_nhwc(to_np(backward(from_nhwc(np.ones(y.shape), data_format))), data_format)
        assert dx.sum() == np.count_nonzero(y)  # exactly one cell per non-zero window gets the gradient
        for (i, j), cells in windows(5, 5, pool2, s2, padding):
            for b in range(2):
                for ch in range(3):
                    vals = [xn[b, r, q, ch] for r, q in cells]
                    positive = [v for v in vals if v > 0]
                    out = y[b, i, j, ch]
                    if positive:
                        assert out in positive, (out, vals)
                    else:
                        assert out == 0.0


def test_stochastic_training_frequencies_follow_the_probabilities():
    # One 2x2 window a = [0.5, 1.0, 0 (from -2), 2.5]: p = a / 4.
    window = np.array([[0.5, 1.0], [-2.0, 2.5]])
    n = 2000
    x = np.tile(window.reshape(1, 2, 2, 1), (n, 1, 1, 1))
    counts = {0.5: 0, 1.0: 0, -2.0: 0, 2.5: 0}
    grad_counts = np.zeros((2, 2))
    for seed in range(10):
        layer = StochasticPooling2D(2, seed=seed, data_format="channels_last", dtype="float64")
        y, backward = forward(layer, x, training=True)
        for v in y.reshape(-1):
            counts[float(v)] += 1
        grad_counts += to_np(backward(np.ones((n, 1, 1, 1)))).sum(axis=(0, 3))
    total = 10 * n
    freq = {k: v / total for k, v in counts.items()}
    expected = {0.5: 0.125, 1.0: 0.25, -2.0: 0.0, 2.5: 0.625}
    for k in expected:
        assert abs(freq[k] - expected[k]) < 0.015, (freq, expected)
    assert counts[-2.0] == 0
    np.testing.assert_allclose(grad_counts / total, [[0.125, 0.25], [0.0, 0.625]], atol=0.015)
    np.testing.assert_array_equal(grad_counts.reshape(-1), [counts[0.5], counts[1.0], 0, counts[2.5]])


def test_stochastic_inference_equals_the_expectation_of_training():
    window = np.array([[0.5, 1.0], [-2.0, 2.5]])
    x = np.tile(window.reshape(1, 2, 2, 1), (4000, 1, 1, 1))
    layer = StochasticPooling2D(2, seed=3, data_format="channels_last", dtype="float64")
    expectation = (0.25 + 1.0 + 6.25) / 4.0
    assert float(to_np(layer(x[:1], training=False))[0, 0, 0, 0]) == pytest.approx(expectation, rel=1e-12)
    assert float(to_np(layer(x, training=True)).mean()) == pytest.approx(expectation, abs=0.05)


def test_stochastic_seed_reproducibility():
    rng = np.random.default_rng(9)
    x = np.abs(rng.standard_normal((4, 6, 6, 3))) + 0.1
    a = StochasticPooling2D(seed=42, data_format="channels_last")
    b = StochasticPooling2D(seed=42, data_format="channels_last")
    ya1, yb1 = to_np(a(x, training=True)), to_np(b(x, training=True))
    np.testing.assert_array_equal(ya1, yb1)
    ya2, yb2 = to_np(a(x, training=True)), to_np(b(x, training=True))
    np.testing.assert_array_equal(ya2, yb2)
    assert not np.array_equal(ya1, ya2)  # the generator advances between calls
    c = StochasticPooling2D(seed=43, data_format="channels_last")
    assert not np.array_equal(to_np(c(x, training=True)), ya1)


# ---------------------------------------------------------------- global pooling


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("data_format", DATA_FORMATS)
def test_global_pooling_values_and_keepdims(data_format, keepdims):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(make_shape(2, 3, 4, 5, data_format)).astype(np.float32)
    xn = to_nhwc(x, data_format)
    ref_avg = np.zeros((2, 5))
    ref_max = np.zeros((2, 5))
    for b in range(2):
        for c in range(5):
            cells = [xn[b, r, q, c] for r in range(3) for q in range(4)]
            ref_avg[b, c] = sum(cells) / len(cells)
            ref_max[b, c] = max(cells)
    shape = (2, 5) if not keepdims else ((2, 1, 1, 5) if data_format == "channels_last" else (2, 5, 1, 1))
    for cls, ref in ((GlobalAveragePooling2D, ref_avg), (GlobalMaxPooling2D, ref_max)):
        layer = cls(data_format=data_format, keepdims=keepdims)
        y = to_np(layer(x))
        assert y.shape == shape == layer.compute_output_shape(x.shape)
        np.testing.assert_allclose(y.reshape(2, 5), ref, rtol=1e-5, atol=1e-6)


def test_global_pooling_defaults_and_ties():
    assert GlobalAveragePooling2D().keepdims is False
    assert GlobalMaxPooling2D().keepdims is False
    layer = GlobalMaxPooling2D(data_format="channels_last")
    x = np.zeros((1, 2, 2, 1), np.float32)
    x[0, 0, 1, 0] = x[0, 1, 0, 0] = 1.0
    _, backward = forward(layer, x)
    dx = to_np(backward(np.ones((1, 1), np.float32)))[0, :, :, 0]
    np.testing.assert_array_equal(dx, [[0, 1], [0, 0]])


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("data_format", DATA_FORMATS)
@pytest.mark.parametrize("cls", [GlobalAveragePooling2D, GlobalMaxPooling2D])
def test_global_pooling_gradients(cls, data_format, keepdims):
    rng = np.random.default_rng(6)
    x = separated(rng, make_shape(2, 3, 3, 2, data_format), offset=-1.5)
    check_layer_gradients(cls(data_format=data_format, keepdims=keepdims, dtype="float64"), x)


# ---------------------------------------------------------------- gradients of windowed pooling

GRAD_CASES = [
    (2, None, "valid"),
    (2, None, "same"),
    (3, 2, "valid"),  # overlapping windows
    (3, 2, "same"),
    ((2, 3), (1, 2), "same"),
]


@pytest.mark.parametrize("data_format", DATA_FORMATS)
@pytest.mark.parametrize("pool,strides,padding", GRAD_CASES)
@pytest.mark.parametrize("kind", ["max", "avg", "stochastic_inference", "stochastic_training"])
def test_pooling_gradients_match_finite_differences(kind, pool, strides, padding, data_format):
    rng = np.random.default_rng(8)
    shape = make_shape(2, 5, 5, 2, data_format)
    if kind.startswith("stochastic"):
        # Mostly positive, distinct values (a window of negatives only has no gradient to check).
        x = separated(rng, shape, scale=0.05, offset=-0.375)  # never within 0.025 of the kink at 0
    else:
        x = separated(rng, shape, scale=0.1, offset=-5.0)
    cls = {"max": MaxPooling2D, "avg": AveragePooling2D}.get(kind, StochasticPooling2D)
    layer = cls(pool, strides=strides, padding=padding, data_format=data_format, dtype="float64")
    dx, grads = check_layer_gradients(layer, x, training=(kind == "stochastic_training"))
    assert grads == {}
    assert np.abs(dx).sum() > 0


# ---------------------------------------------------------------- properties (hypothesis)


@st.composite
def pool_args(draw):
    pool = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    strides = draw(st.one_of(st.none(), st.tuples(st.integers(1, 4), st.integers(1, 4))))
    padding = draw(st.sampled_from(["valid", "same"]))
    data_format = draw(st.sampled_from(DATA_FORMATS))
    hw = (draw(st.integers(1, 8)), draw(st.integers(1, 8)))
    return pool, strides, padding, data_format, hw


WINDOWED = [MaxPooling2D, AveragePooling2D, StochasticPooling2D]


@settings(max_examples=40, deadline=None)
@given(pool_args(), st.sampled_from(WINDOWED), st.integers(1, 3))
def test_property_output_shape_and_keras_formula(args, cls, channels):
    pool, strides, padding, data_format, (h, w) = args
    layer = cls(pool, strides=strides, padding=padding, data_format=data_format)
    s = pool if strides is None else strides
    x = np.ones(make_shape(2, h, w, channels, data_format), np.float32)
    oh, ow = keras_out_len(h, pool[0], s[0], padding), keras_out_len(w, pool[1], s[1], padding)
    if oh <= 0 or ow <= 0:
        with pytest.raises(ValueError, match="Computed output size would be zero or negative"):
            layer(x)
        return
    expected = make_shape(2, oh, ow, channels, data_format)
    assert layer.compute_output_shape(x.shape) == expected
    for training in (False, True):
        assert to_np(layer(x, training=training)).shape == expected
    assert layer.output_shape == (None,) + expected[1:]


@settings(max_examples=30, deadline=None)
@given(pool_args(), st.sampled_from(["max", "avg", "stochastic_inference"]), st.integers(0, 2**31 - 1))
def test_property_forward_and_gradient_of_sum(args, kind, seed):
    pool, strides, padding, data_format, (h, w) = args
    s = pool if strides is None else strides
    assume(keras_out_len(h, pool[0], s[0], padding) > 0 and keras_out_len(w, pool[1], s[1], padding) > 0)
    rng = np.random.default_rng(seed)
    shape = make_shape(1, h, w, 2, data_format)
    x = separated(rng, shape, scale=0.1, offset=-0.25 if kind == "stochastic_inference" else -2.0)
    cls = {"max": MaxPooling2D, "avg": AveragePooling2D, "stochastic_inference": StochasticPooling2D}[kind]
    layer = cls(pool, strides=strides, padding=padding, data_format=data_format, dtype="float64")
    y, backward = forward(layer, x)
    np.testing.assert_allclose(y, ref_pool(x, pool, s, padding, data_format, kind), rtol=1e-12, atol=1e-12)
    dx = to_np(backward(np.ones_like(y)))
    num = numeric_grad(lambda: float(to_np(layer(x)).sum()), x)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-7)


@settings(max_examples=25, deadline=None)
@given(pool_args(), st.integers(0, 2**31 - 1))
def test_property_stochastic_training_output_is_in_window(args, seed):
    pool, strides, padding, data_format, (h, w) = args
    s = pool if strides is None else strides
    assume(keras_out_len(h, pool[0], s[0], padding) > 0 and keras_out_len(w, pool[1], s[1], padding) > 0)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(make_shape(2, h, w, 2, data_format))
    layer = StochasticPooling2D(pool, strides=strides, padding=padding, data_format=data_format, seed=seed, dtype="float64")
    y = to_nhwc(to_np(layer(x, training=True)), data_format)
    xn = to_nhwc(x, data_format)
    for (i, j), cells in windows(h, w, pool, s, padding):
        for b in range(2):
            for ch in range(2):
                positive = [xn[b, r, q, ch] for r, q in cells if xn[b, r, q, ch] > 0]
                assert (y[b, i, j, ch] in positive) if positive else (y[b, i, j, ch] == 0.0)


# ---------------------------------------------------------------- bad arguments and inputs


@pytest.mark.parametrize("cls", [MaxPooling2D, AveragePooling2D, StochasticPooling2D])
@pytest.mark.parametrize(
    "kwargs,error,pattern",
    [
        (dict(pool_size=0), ValueError, r"pool_size.*0"),
        (dict(pool_size=(2, 0)), ValueError, r"pool_size.*\(2, 0\)"),
        (dict(pool_size=(2, 2, 2)), ValueError, r"pool_size.*\(2, 2, 2\)"),
        (dict(pool_size=-1), ValueError, r"pool_size.*-1"),
        (dict(pool_size=2.5), TypeError, r"pool_size.*2\.5"),
        (dict(pool_size=2, strides=0), ValueError, r"strides.*0"),
        (dict(pool_size=2, strides=(1, 2, 3)), ValueError, r"strides.*\(1, 2, 3\)"),
        (dict(pool_size=2, padding="full"), ValueError, r"padding.*'full'"),
        (dict(pool_size=2, padding=None), ValueError, r"padding.*None"),
        (dict(pool_size=2, data_format="NHWC"), ValueError, r"(?i)data_format.*'NHWC'"),
        (dict(pool_size=2, pool=3), TypeError, r"pool"),
        (dict(pool_size=2, dtype="int8"), ValueError, r"dtype.*int8"),
    ],
)
def test_bad_pooling_arguments(cls, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        cls(**kwargs)


@pytest.mark.parametrize("seed", [-1, 1.5, "1", True])
def test_stochastic_bad_seed(seed):
    with pytest.raises((ValueError, TypeError), match=r"seed"):
        StochasticPooling2D(seed=seed)


@pytest.mark.parametrize("cls", [GlobalAveragePooling2D, GlobalMaxPooling2D])
def test_bad_global_pooling_arguments(cls):
    with pytest.raises(ValueError, match=r"data_format.*'channels'"):
        cls(data_format="channels")
    with pytest.raises(TypeError, match=r"keepdims.*'yes'"):
        cls(keepdims="yes")
    with pytest.raises(TypeError, match=r"pool_size"):
        cls(pool_size=2)
    layer = cls(data_format="channels_last")
    with pytest.raises(ValueError, match=r"ndim=4.*ndim=3"):
        layer(np.ones((2, 3, 3), np.float32))
    with pytest.raises(ValueError, match=r"ndim=4.*ndim=2"):
        layer.compute_output_shape((2, 3))


@pytest.mark.parametrize("cls", [MaxPooling2D, AveragePooling2D, StochasticPooling2D])
def test_pooling_input_errors(cls):
    layer = cls(3, data_format="channels_last")
    with pytest.raises(ValueError, match=r"ndim=4.*ndim=3"):
        layer(np.ones((3, 3, 3), np.float32))
    with pytest.raises(ValueError, match=r"ndim=4.*ndim=5"):
        layer(np.ones((1, 3, 3, 3, 1), np.float32))
    for training in (False, True):
        with pytest.raises(ValueError, match="Computed output size would be zero or negative"):
            layer(np.ones((1, 2, 5, 1), np.float32), training=training)
    with pytest.raises(ValueError, match="Computed output size would be zero or negative"):
        layer.compute_output_shape((None, 5, 2, 1))
    # 'same' accepts an input smaller than the window.
    same = cls(3, padding="same", data_format="channels_last")
    assert to_np(same(np.ones((1, 2, 5, 1), np.float32))).shape == (1, 1, 2, 1)
