"""CupyOps against NumpyOps: same inputs, same results, for every method.

Skipped (with the reason) wherever cupy cannot run; NumpyOps itself is
checked against independent references in test_ops.py.
"""

import types

import numpy as np
import pytest

import backends
from backends.numpy_ops import NumpyOps
from backends.ops import Ops

FORMATS = ("channels_last", "channels_first")
# (x NHWC shape, conv kernel, conv strides/pads/dilation, pool, pool strides, pool pads)
CASES = [
    ((2, 7, 6, 3), (3, 3, 3, 4), (1, 1), (1, 1, 1, 1), (1, 1), (2, 2), (2, 2), (0, 0, 0, 0)),
    ((2, 7, 7, 2), (3, 2, 2, 3), (2, 2), (0, 1, 0, 1), (1, 1), (3, 3), (2, 2), (1, 1, 1, 1)),
    ((1, 6, 7, 2), (2, 3, 2, 2), (1, 1), (1, 2, 0, 1), (2, 2), (3, 2), (1, 2), (1, 2, 0, 1)),
    ((2, 5, 5, 3), (1, 1, 3, 2), (2, 2), (0, 0, 0, 0), (1, 1), (1, 1), (2, 2), (0, 0, 0, 0)),
    ((0, 5, 5, 2), (3, 3, 2, 2), (1, 1), (1, 1, 1, 1), (1, 1), (2, 2), (2, 2), (0, 1, 0, 1)),  # empty batch
]


def _to_format(x, data_format):
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if data_format == "channels_first" else x


def run_every_method(ops, case, dtype, data_format, ties):
    """Call every Ops method on inputs built on the host; return {name: numpy result}."""
    xs, ks, cs, cp, cd, pool, ps, pp = case
    rng = np.random.default_rng(0)
    host = rng.integers(-2, 3, xs).astype(dtype) if ties else rng.standard_normal(xs).astype(dtype)
    x = ops.asarray(_to_format(host, data_format))
    k = ops.asarray(rng.standard_normal(ks).astype(dtype))
    out = {}

    y = ops.conv2d_forward(x, k, cs, cp, cd, data_format)
    dy = ops.asarray(rng.standard_normal(y.shape).astype(dtype))
    out["conv2d_forward"] = y
    out["conv2d_backward_input"] = ops.conv2d_backward_input(dy, k, x.shape, cs, cp, cd, data_format)
    out["conv2d_backward_kernel"] = ops.conv2d_backward_kernel(x, dy, k.shape, cs, cp, cd, data_format)

    pargs = (pool, ps, pp, data_format)
    y, arg = ops.max_pool2d_forward(x, *pargs)
    dy = ops.asarray(rng.standard_normal(y.shape).astype(dtype))
    u = ops.asarray(rng.random(y.shape).astype(dtype))
    out["max_pool2d_forward"], out["max_pool2d_forward.argmax"] = y, arg
    out["max_pool2d_backward"] = ops.max_pool2d_backward(dy, arg, x.shape, *pargs)
    out["avg_pool2d_forward"] = ops.avg_pool2d_forward(x, *pargs)
    out["avg_pool2d_backward"] = ops.avg_pool2d_backward(dy, x.shape, *pargs)
    ys, index = ops.stochastic_pool2d_forward(x, u, *pargs)
    out["stochastic_pool2d_forward"], out["stochastic_pool2d_forward.index"] = ys, index
    out["stochastic_pool2d_backward"] = ops.stochastic_pool2d_backward(dy, index, x.shape, *pargs)
    out["stochastic_pool2d_inference_forward"] = ops.stochastic_pool2d_inference_forward(x, *pargs)
    out["stochastic_pool2d_inference_backward"] = ops.stochastic_pool2d_inference_backward(dy, x, *pargs)

    for keep in (False, True):
        g = ops.global_avg_pool2d_forward(x, data_format, keep)
        gy = ops.asarray(rng.standard_normal(g.shape).astype(dtype))
        out[f"global_avg_pool2d_forward[{keep}]"] = g
        out[f"global_avg_pool2d_backward[{keep}]"] = ops.global_avg_pool2d_backward(gy, x.shape, data_format, keep)
        g, garg = ops.global_max_pool2d_forward(x, data_format, keep)
        out[f"global_max_pool2d_forward[{keep}]"], out[f"global_max_pool2d_forward.argmax[{keep}]"] = g, garg
        out[f"global_max_pool2d_backward[{keep}]"] = ops.global_max_pool2d_backward(gy, garg, x.shape, data_format, keep)

    axis = 3 if data_format == "channels_last" else 1
    c = xs[3]
    gamma = ops.asarray((rng.random(c) + 0.5).astype(dtype))
    beta = ops.asarray(rng.standard_normal(c).astype(dtype))
    dy = ops.asarray(rng.standard_normal(x.shape).astype(dtype))
    for g_, b_ in ((gamma, beta), (None, None)):
        tag = "affine" if g_ is not None else "plain"
        yb, mean, var, cache = ops.batch_norm_forward_training(x, g_, b_, axis, 1e-3)
        out[f"bn_train_forward.{tag}"], out[f"bn_train_mean.{tag}"], out[f"bn_train_var.{tag}"] = yb, mean, var
        for name, v in zip(("dx", "dgamma", "dbeta"), ops.batch_norm_backward_training(dy, cache)):
            out[f"bn_train_backward.{name}.{tag}"] = v
        mean = ops.asarray(rng.standard_normal(c).astype(dtype))
        var = ops.asarray((rng.random(c) + 0.1).astype(dtype))
        out[f"bn_inference_forward.{tag}"] = ops.batch_norm_forward_inference(x, g_, b_, mean, var, axis, 1e-3)
        grads = ops.batch_norm_backward_inference(dy, x, g_, mean, var, axis, 1e-3, has_beta=b_ is not None)
        for name, v in zip(("dx", "dgamma", "dbeta"), grads):
            out[f"bn_inference_backward.{name}.{tag}"] = v
    return out


def assert_same_results(ops, case, dtype, data_format, ties):
    expected = run_every_method(NumpyOps(), case, dtype, data_format, ties)
    got = run_every_method(ops, case, dtype, data_format, ties)
    assert got.keys() == expected.keys()
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == np.float64 else dict(rtol=2e-4, atol=2e-5)
    for name, want in expected.items():
        have = got[name]
        if want is None:
            assert have is None, name
            continue
        assert isinstance(have, ops.xp.ndarray), name
        have = ops.to_numpy(have)
        assert have.shape == want.shape and have.dtype == want.dtype, name
        if np.issubdtype(want.dtype, np.integer):
            np.testing.assert_array_equal(have, want, err_msg=name)
        else:
            np.testing.assert_allclose(have, want, err_msg=name, **tol)


# The generic Ops code on NumPy, restricted to the names it may use (all of
# which CuPy has) and without NumpyOps's overrides: what CupyOps runs, checked
# here where there is no GPU.
_SHARED_NAMES = (
    "arange argmax asarray ascontiguousarray clip copyto empty expand_dims full isnan lib maximum mean "
    "minimum ndarray ones random sqrt sum take_along_axis where zeros"
).split()


class GenericOnNumpy(Ops):
    name = "generic-numpy"
    xp = types.SimpleNamespace(**{n: getattr(np, n) for n in _SHARED_NAMES})


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("case", CASES)
def test_generic_code_matches_numpy_ops(case, data_format):
    for dtype in (np.float32, np.float64):
        for ties in (False, True):
            assert_same_results(GenericOnNumpy(), case, dtype, data_format, ties)


@pytest.mark.gpu
class TestCupyParity:
    @pytest.fixture(scope="class")
    def cupy_ops(self):
        usable, reason = backends.cupy_status()
        if not usable:
            pytest.skip(f"CupyOps parity needs a usable CUDA device: {reason}")
        from backends.cupy_ops import CupyOps

        return CupyOps()

    @pytest.mark.parametrize("ties", [False, True])
    @pytest.mark.parametrize("data_format", FORMATS)
    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    @pytest.mark.parametrize("case", CASES)
    def test_every_method_matches_numpy(self, cupy_ops, case, dtype, data_format, ties):
        assert_same_results(cupy_ops, case, dtype, data_format, ties)

    def test_arrays_and_random(self, cupy_ops):
        cupy = cupy_ops.xp
        a = np.arange(6, dtype=np.float32).reshape(2, 3)
        d = cupy_ops.asarray(a)
        assert isinstance(d, cupy.ndarray) and d.dtype == np.float32
        assert cupy_ops.asarray(d) is d and cupy_ops.asarray(d, np.float32) is d
        assert cupy_ops.asarray(d, np.float64).dtype == np.float64
        np.testing.assert_array_equal(cupy_ops.to_numpy(d), a)
        np.testing.assert_array_equal(NumpyOps().asarray(d), a)  # NumpyOps takes cupy arrays too
        np.testing.assert_array_equal(NumpyOps().to_numpy(d), a)
        for dtype in (np.float16, np.float32, np.float64):
            u = cupy_ops.uniform(cupy_ops.rng(5), (500, 3), dtype)
            assert isinstance(u, cupy.ndarray) and u.dtype == dtype and u.shape == (500, 3)
            h = cupy_ops.to_numpy(u)
            assert (h >= 0).all() and (h < 1).all() and abs(h.astype(np.float64).mean() - 0.5) < 0.05
            np.testing.assert_array_equal(h, cupy_ops.to_numpy(cupy_ops.uniform(cupy_ops.rng(5), (500, 3), dtype)))
