"""gpulayers.ops' NumPy-like family: values against NumPy in float64, gradients against finite differences."""

import numpy as np
import pytest

from gpulayers import config, ops
from gpulayers.autodiff import Tensor
from helpers import check_op_gradients, to_np

RNG = np.random.default_rng(1234)


def r(*shape):
    return RNG.standard_normal(shape)


def positive(*shape):
    return RNG.uniform(0.5, 2.0, shape)


# ---------------------------------------------------------------- elementwise

BINARY = [
    ("add", np.add), ("subtract", np.subtract), ("multiply", np.multiply), ("divide", np.divide),
    ("true_divide", np.true_divide), ("maximum", np.maximum), ("minimum", np.minimum),
    ("logaddexp", np.logaddexp), ("mod", np.mod),
]
BROADCASTS = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((), (2, 3)), ((5,), ())]


@pytest.mark.parametrize("shapes", BROADCASTS, ids=str)
@pytest.mark.parametrize("name,ref", BINARY, ids=[b[0] for b in BINARY])
def test_binary_ops_match_numpy_and_differentiate(name, ref, shapes):
    a = positive(*shapes[0]) + 0.25 if name == "mod" else r(*shapes[0])
    b = positive(*shapes[1])
    fn = getattr(ops, name)
    np.testing.assert_allclose(to_np(fn(a, b)), ref(a, b), rtol=1e-12)
    check_op_gradients(fn, a, b, rtol=1e-5, atol=1e-7)


def test_power_and_its_exponent_gradient():
    check_op_gradients(ops.power, positive(3, 2), r(2))
    check_op_gradients(lambda x: ops.power(x, 3), r(4))
    check_op_gradients(lambda x: x**2 + 2.0**x, r(4))
    np.testing.assert_allclose(to_np(ops.power(np.array([2.0, 3.0]), 2)), [4.0, 9.0])


def test_ties_share_the_gradient_of_maximum_and_minimum():
    x = ops.convert_to_tensor(np.array([1.0, 2.0, 3.0]))
    x.watched = True
    from gpulayers.autodiff import gradient

    np.testing.assert_allclose(gradient(ops.sum(ops.maximum(x, 2.0)), [x])[0], [0.0, 0.5, 1.0])
    np.testing.assert_allclose(gradient(ops.sum(ops.minimum(x, 2.0)), [x])[0], [1.0, 0.5, 0.0])


UNARY = [
    ("negative", np.negative, r), ("absolute", np.abs, r), ("square", np.square, r), ("sqrt", np.sqrt, positive),
    ("reciprocal", np.reciprocal, positive), ("exp", np.exp, r), ("expm1", np.expm1, r), ("log", np.log, positive),
    ("log1p", np.log1p, positive), ("log2", np.log2, positive), ("log10", np.log10, positive), ("sin", np.sin, r),
    ("cos", np.cos, r), ("tan", lambda x: np.tan(x), lambda *s: RNG.uniform(-1, 1, s)), ("tanh", np.tanh, r),
    ("sinh", np.sinh, r), ("cosh", np.cosh, r), ("arcsin", np.arcsin, lambda *s: RNG.uniform(-0.9, 0.9, s)),
    ("arccos", np.arccos, lambda *s: RNG.uniform(-0.9, 0.9, s)), ("arctan", np.arctan, r),
    ("arcsinh", np.arcsinh, r), ("arctanh", np.arctanh, lambda *s: RNG.uniform(-0.9, 0.9, s)),
]


@pytest.mark.parametrize("name,ref,draw", UNARY, ids=[u[0] for u in UNARY])
def test_unary_ops_match_numpy_and_differentiate(name, ref, draw):
    x = draw(3, 4)
    fn = getattr(ops, name)
    np.testing.assert_allclose(to_np(fn(x)), ref(x), rtol=1e-12)
    check_op_gradients(fn, x, rtol=1e-5, atol=1e-7)
    check_op_gradients(lambda t: fn(t) * t, x, rtol=1e-5, atol=1e-7)  # fan-out


def test_functions_without_gradient_give_plain_values():
    x = np.array([-1.5, 0.0, 2.5])
    for name, ref in (("sign", np.sign), ("floor", np.floor), ("ceil", np.ceil), ("round", np.round),
                      ("isnan", np.isnan), ("isfinite", np.isfinite), ("logical_not", np.logical_not)):
        np.testing.assert_array_equal(to_np(getattr(ops, name)(x)), ref(x))
    for name, ref in (("equal", np.equal), ("not_equal", np.not_equal), ("greater", np.greater),
                      ("greater_equal", np.greater_equal), ("less", np.less), ("less_equal", np.less_equal),
                      ("logical_and", np.logical_and), ("logical_or", np.logical_or),
                      ("logical_xor", np.logical_xor)):
        np.testing.assert_array_equal(to_np(getattr(ops, name)(x, 0.0)), ref(x, 0.0))
    np.testing.assert_array_equal(to_np(ops.floor_divide(np.array([7, -7]), 2)), [3, -4])


def test_clip_and_where_and_their_gradients():
    x = np.array([-2.0, -0.5, 0.0, 0.5, 2.0])
    np.testing.assert_allclose(to_np(ops.clip(x, -1.0, 1.0)), np.clip(x, -1.0, 1.0))
    check_op_gradients(lambda t: ops.clip(t, -1.0, 1.0), x + 0.01)
    check_op_gradients(lambda t, lo, hi: ops.clip(t, lo, hi), r(5), np.full(5, -0.3), np.full(5, 0.4))
    cond = np.array([[True, False, True]])
    check_op_gradients(lambda a, b: ops.where(cond, a, b), r(2, 3), r(3))
    np.testing.assert_array_equal(to_np(ops.where(cond, 1.0, 0.0)), [[1.0, 0.0, 1.0]])
    (rows, cols) = ops.where(cond)
    np.testing.assert_array_equal(to_np(cols), [0, 2])


def test_dtype_rules_follow_keras():
    f32 = np.ones(3, dtype=np.float32)
    assert ops.multiply(f32, 2.0).dtype == np.float32  # Python numbers are weak
    assert ops.multiply(np.ones(3, dtype=np.int32), 2.5).dtype == np.dtype(config.floatx())
    assert ops.divide(np.ones(3, dtype=np.int32), np.ones(3, dtype=np.int32)).dtype == np.dtype(config.floatx())
    assert ops.add(np.ones(3), f32).dtype == np.float64  # a float64 array keeps float64
    assert ops.exp(np.array([1, 2])).dtype == np.dtype(config.floatx())
    assert ops.convert_to_tensor([1, 2]).dtype == np.int32
    assert ops.convert_to_tensor([1.0, 2]).dtype == np.float32
    assert ops.convert_to_tensor([True]).dtype == np.bool_


# ---------------------------------------------------------------- reductions


@pytest.mark.parametrize("axis", [None, 0, 1, (0, 2), -1])
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions_match_numpy_and_differentiate(axis, keepdims):
    x = r(3, 4, 2)
    for name, ref in (("sum", np.sum), ("mean", np.mean), ("max", np.max), ("min", np.min), ("prod", np.prod),
                      ("var", np.var), ("std", np.std)):
        fn = getattr(ops, name)
        np.testing.assert_allclose(to_np(fn(x, axis=axis, keepdims=keepdims)), ref(x, axis=axis, keepdims=keepdims),
                                   rtol=1e-12, err_msg=name)
        check_op_gradients(lambda t: fn(t, axis=axis, keepdims=keepdims), x, rtol=1e-5, atol=1e-7)


def test_max_splits_the_gradient_over_ties_and_prod_handles_zeros():
    check_op_gradients(lambda t: ops.max(t, axis=1), np.array([[1.0, 3.0, 3.0], [2.0, 0.0, 1.0]]), rtol=1e-5)
    from gpulayers.autodiff import gradient

    t = ops.convert_to_tensor(np.array([[1.0, 3.0, 3.0]]))
    t.watched = True
    np.testing.assert_allclose(gradient(ops.max(t), [t])[0], [[0.0, 0.5, 0.5]])
    check_op_gradients(lambda u: ops.prod(u, axis=1), np.array([[0.0, 2.0, 3.0], [0.0, 0.0, 5.0], [1.0, 2.0, 3.0]]))


def test_cumsum_argmax_argsort_sort():
    x = r(3, 5)
    np.testing.assert_allclose(to_np(ops.cumsum(x, axis=1)), np.cumsum(x, axis=1))
    check_op_gradients(lambda t: ops.cumsum(t, axis=0), x)
    check_op_gradients(lambda t: ops.cumsum(t), x)
    assert ops.argmax(x, axis=1).dtype == np.int32
    np.testing.assert_array_equal(to_np(ops.argmax(x, axis=1)), np.argmax(x, axis=1))
    np.testing.assert_array_equal(to_np(ops.argmin(x)), np.argmin(x))
    np.testing.assert_array_equal(to_np(ops.argsort(x, axis=0)), np.argsort(x, axis=0, kind="stable"))
    np.testing.assert_allclose(to_np(ops.sort(x, axis=1)), np.sort(x, axis=1))
    check_op_gradients(lambda t: ops.sort(t, axis=1) * np.arange(5.0), x)


def test_any_all_count_nonzero():
    x = np.array([[0.0, 1.0], [0.0, 0.0]])
    np.testing.assert_array_equal(to_np(ops.any(x, axis=1)), [True, False])
    np.testing.assert_array_equal(to_np(ops.all(x > -1)), True)
    np.testing.assert_array_equal(to_np(ops.count_nonzero(x, axis=0)), [0, 1])


# ---------------------------------------------------------------- linear algebra


@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)),
                                    ((1, 3, 4), (2, 4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,))], ids=str)
def test_matmul(shapes):
    a, b = r(*shapes[0]), r(*shapes[1])
    np.testing.assert_allclose(to_np(ops.matmul(a, b)), np.matmul(a, b), rtol=1e-12)
    check_op_gradients(ops.matmul, a, b)
    check_op_gradients(lambda x, y: x @ y, a, b)


def test_dot_tensordot_outer_einsum():
    a, b, c = r(3, 4), r(4, 5), r(2, 3, 4)
    for x, y in ((a, b), (r(4), r(4)), (c, r(4)), (c, r(2, 4, 5)), (r(3), 2.0)):
        np.testing.assert_allclose(to_np(ops.dot(x, y)), np.dot(x, y), rtol=1e-12)
        if not isinstance(y, float):
            check_op_gradients(ops.dot, x, y)
    for axes in (1, 2, ([1, 2], [0, 1]), ([0], [1])):
        y = r(3, 4) if axes in (2, ([1, 2], [0, 1])) else (r(4, 6) if axes == 1 else r(5, 2))
        np.testing.assert_allclose(to_np(ops.tensordot(c, y, axes=axes)), np.tensordot(c, y, axes=axes), rtol=1e-12)
        check_op_gradients(lambda p, q: ops.tensordot(p, q, axes=axes), c, y)
    check_op_gradients(ops.outer, r(3), r(2, 2))
    for spec, operands in (("ij,jk->ik", (a, b)), ("bij,j->bi", (c, r(4))), ("ij->", (a,)), ("ij,ij->i", (a, a)),
                           ("...ij,...jk->...ik", (c, r(1, 4, 2))), ("ij", (a,)), ("ij,jk", (a, b)), ("ij->j", (a,))):
        np.testing.assert_allclose(to_np(ops.einsum(spec, *operands)), np.einsum(spec, *operands), rtol=1e-12)
        check_op_gradients(lambda *t: ops.einsum(spec, *t), *operands)
    with pytest.raises(NotImplementedError, match="repeated letter"):
        from gpulayers.autodiff import gradient

        t = ops.convert_to_tensor(np.eye(3))
        t.watched = True
        gradient(ops.sum(ops.einsum("ii->i", t)), [t])


# ---------------------------------------------------------------- shapes


def test_shape_ops_and_their_gradients():
    x = r(2, 3, 4)
    cases = [
        (lambda t: ops.reshape(t, (4, -1)), lambda a: a.reshape(4, -1)),
        (lambda t: ops.transpose(t, (2, 0, 1)), lambda a: a.transpose(2, 0, 1)),
        (lambda t: ops.transpose(t), lambda a: a.T),
        (lambda t: ops.expand_dims(t, (0, -1)), lambda a: a[None, ..., None]),
        (lambda t: ops.squeeze(ops.expand_dims(t, 1), 1), lambda a: a),
        (lambda t: ops.moveaxis(t, 0, -1), lambda a: np.moveaxis(a, 0, -1)),
        (lambda t: ops.swapaxes(t, 0, 2), lambda a: np.swapaxes(a, 0, 2)),
        (lambda t: ops.ravel(t), lambda a: a.ravel()),
        (lambda t: ops.broadcast_to(t[:, :1], (2, 3, 4)), lambda a: np.broadcast_to(a[:, :1], (2, 3, 4))),
        (lambda t: ops.flip(t, axis=1), lambda a: np.flip(a, 1)),
        (lambda t: ops.tile(t, (2, 1, 1, 2)), lambda a: np.tile(a, (2, 1, 1, 2))),
        (lambda t: ops.repeat(t, 2, axis=1), lambda a: np.repeat(a, 2, axis=1)),
        (lambda t: ops.repeat(t, [1, 0, 3], axis=1), lambda a: np.repeat(a, [1, 0, 3], axis=1)),
        (lambda t: ops.repeat(t, 2), lambda a: np.repeat(a, 2)),
        (lambda t: t[1, ::2, [3, 0, 3]], lambda a: a[1, ::2, [3, 0, 3]]),
        (lambda t: t[t > 0], lambda a: a[a > 0]),
        (lambda t: t[..., None, 1:3], lambda a: a[..., None, 1:3]),
        (lambda t: ops.take(t, np.array([[0, 2], [2, 2]]), axis=1), lambda a: np.take(a, [[0, 2], [2, 2]], axis=1)),
        (lambda t: ops.take(t, np.array([5, 5, 0])), lambda a: np.take(a, [5, 5, 0])),
        (lambda t: ops.take_along_axis(t, np.array([[[0], [3], [3]]] * 2), axis=2),
         lambda a: np.take_along_axis(a, np.array([[[0], [3], [3]]] * 2), axis=2)),
        (lambda t: ops.tril(t[0]), lambda a: np.tril(a[0])),
        (lambda t: ops.triu(t[0], 1), lambda a: np.triu(a[0], 1)),
    ]
    for fn, ref in cases:
        np.testing.assert_allclose(to_np(fn(ops.convert_to_tensor(x))), ref(x), rtol=1e-12)
        check_op_gradients(fn, x)


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "symmetric", "wrap"])
def test_pad(mode):
    x = r(3, 4)
    width = ((1, 2), (2, 0))
    np.testing.assert_allclose(to_np(ops.pad(x, width, mode=mode)), np.pad(x, width, mode=mode))
    check_op_gradients(lambda t: ops.pad(t, width, mode=mode), x)
    np.testing.assert_allclose(to_np(ops.pad(x, 1, constant_values=7.0))[0], 7.0)


def test_concatenate_stack_split_hstack_vstack():
    a, b = r(2, 3), r(2, 5)
    np.testing.assert_allclose(to_np(ops.concatenate([a, b], axis=1)), np.concatenate([a, b], axis=1))
    check_op_gradients(lambda p, q: ops.concatenate([p, q, p], axis=-1), a, b)
    check_op_gradients(lambda p, q: ops.stack([p, q[:, :3]], axis=1), a, b)
    parts = ops.split(b, [1, 3], axis=1)
    assert [p.shape for p in parts] == [(2, 1), (2, 2), (2, 2)]
    check_op_gradients(lambda t: ops.split(t, 2, axis=0), r(4, 3))
    np.testing.assert_allclose(to_np(ops.hstack([a, b])), np.hstack([a, b]))
    np.testing.assert_allclose(to_np(ops.vstack([a, a])), np.vstack([a, a]))
    check_op_gradients(lambda p: ops.unstack(p, axis=1), a)


def test_creation_ops():
    assert ops.zeros((2, 3)).dtype == np.float32 and ops.ones(4, dtype="int32").dtype == np.int32
    np.testing.assert_array_equal(to_np(ops.full((2,), 3.0)), [3.0, 3.0])
    np.testing.assert_array_equal(to_np(ops.eye(2, 3, k=1)), np.eye(2, 3, k=1))
    assert ops.arange(5).dtype == np.int32 and ops.arange(0.0, 1.0, 0.25).dtype == np.float32
    np.testing.assert_allclose(to_np(ops.linspace(0, 1, 5)), np.linspace(0, 1, 5))
    x = np.ones((2, 2), dtype=np.float64)
    assert ops.zeros_like(x).dtype == np.float64 and ops.ones_like(x, dtype="float32").dtype == np.float32
    np.testing.assert_array_equal(to_np(ops.full_like(x, 2)), np.full((2, 2), 2.0))
    assert ops.identity(3).shape == (3, 3)
    # ops.array: convert_to_tensor's dtype rules (float lists floatx, int lists int32, arrays kept)
    assert ops.array([1.5, 2.0]).dtype == np.float32 and ops.array([1, 2]).dtype == np.int32
    assert ops.array(x).dtype == np.float64 and ops.array([1, 2], dtype="float16").dtype == np.float16
    np.testing.assert_array_equal(to_np(ops.array([[1, 2]])), [[1, 2]])


def test_tensor_methods_and_operators_are_the_ops():
    x = r(3, 4)
    check_op_gradients(lambda t: (t.sum(axis=0) - t.mean() * t.max() / (1 + t.min() ** 2)).reshape(2, 2), x)
    check_op_gradients(lambda t: abs(-t).T @ t, x)
    assert isinstance(ops.convert_to_tensor(x).astype("float32"), Tensor)
