"""Nadam, Adamax, Adadelta, Lion and Ftrl (gpulayers.optimizers.algorithms_adaptive).

Three independent references: each rule written out below in float64 from
Keras 3.15's formulas (keras/src/optimizers/<name>.py), the golden values of
Keras's own tests (<name>_test.py), and Keras itself over several steps when
it is importable. Then the state (Keras's names and order, so a .keras file
moves both ways), configs, names and argument errors.
"""

import zipfile

import h5py
import numpy as np
import pytest

from gpulayers import optimizers as O
from gpulayers.layers import Dense, Input
from gpulayers.models import Sequential, load_model
from gpulayers.variables import Variable
from helpers import keras_or_skip

NEW = ("Nadam", "Adamax", "Adadelta", "Lion", "Ftrl")


def var(values, name="kernel", dtype=np.float64):
    return Variable(np.array(values, dtype=dtype), name=name)


def f64(values):
    return np.array(values, dtype=np.float64)


def run(opt, w0, grads, dtype=np.float64):
    """Apply ``grads`` one step at a time to a variable starting at ``w0``; the values after each step."""
    v = var(w0, dtype=dtype)
    out = []
    for g in grads:
        opt.apply([np.array(g, dtype=dtype)], [v])
        out.append(np.array(v.numpy(), dtype=np.float64))
    return out


def slots(opt):
    """The state arrays: ``variables`` after ``iteration`` and ``learning_rate``."""
    return [v.numpy() for v in opt.variables[2:]]


W0 = [1.0, -0.5, 2.0]
G = [[0.1, -0.2, 0.3], [0.3, 0.1, -0.5], [-0.2, 0.4, 0.05], [0.0, -0.3, 0.2]]


# ---------------------------------------------------------------- float64 references, written from Keras's formulas


def nadam_reference(w0, grads, lr, b1, b2, eps):
    w, m, v, u_product, out = f64(w0), np.zeros(len(w0)), np.zeros(len(w0)), 1.0, []
    for t, g in enumerate(map(f64, grads), start=1):
        u_t = b1 * (1 - 0.5 * 0.96**t)
        u_next = b1 * (1 - 0.5 * 0.96 ** (t + 1))
        u_product *= u_t  # once per step, before the variables
        m = m + (g - m) * (1 - b1)
        v = v + (g * g - v) * (1 - b2)
        m_hat = u_next * m / (1 - u_product * u_next) + (1 - u_t) * g / (1 - u_product)
        v_hat = v / (1 - b2**t)
        w = w - m_hat * lr / (np.sqrt(v_hat) + eps)
        out.append(w)
    return out, (m, v, u_product)


def adamax_reference(w0, grads, lr, b1, b2, eps):
    w, m, u, out = f64(w0), np.zeros(len(w0)), np.zeros(len(w0)), []
    for t, g in enumerate(map(f64, grads), start=1):
        m = m + (g - m) * (1 - b1)
        u = np.maximum(b2 * u, np.abs(g))
        w = w - lr * m / ((1 - b1**t) * (u + eps))
        out.append(w)
    return out, (m, u)


def adadelta_reference(w0, grads, lr, rho, eps):
    w, acc_g, acc_d, out = f64(w0), np.zeros(len(w0)), np.zeros(len(w0)), []
    for g in map(f64, grads):
        acc_g = rho * acc_g + (1 - rho) * g * g
        delta = -np.sqrt(acc_d + eps) * g / np.sqrt(acc_g + eps)
        acc_d = rho * acc_d + (1 - rho) * delta * delta
        w = w + lr * delta
        out.append(w)
    return out, (acc_g, acc_d)


def lion_reference(w0, grads, lr, b1, b2):
    w, m, out = f64(w0), np.zeros(len(w0)), []
    for g in map(f64, grads):
        w = w - lr * np.sign(b1 * m + (1 - b1) * g)
        m = b2 * m + (1 - b2) * g
        out.append(w)
    return out, (m,)


def ftrl_reference(w0, grads, lr, power, init, l1, l2, shrinkage, beta):
    """``power`` is ``-learning_rate_power`` (0.5 for Keras's default)."""
    w, n, z, out = f64(w0), np.full(len(w0), init), np.zeros(len(w0)), []
    for g in map(f64, grads):
        l2_total = l2 + beta / (2 * lr)
        n_new = n + g * g
        z = z + (g + 2 * shrinkage * w) - (n_new**power - n**power) / lr * w
        w = (np.clip(z, -l1, l1) - z) / (n_new**power / lr + 2 * l2_total)
        n = n_new
        out.append(w)
    return out, (n, z)


def test_nadam_steps_written_out():
    want, (m, v, u_product) = nadam_reference(W0, G, lr=0.05, b1=0.8, b2=0.95, eps=1e-6)
    opt = O.Nadam(learning_rate=0.05, beta_1=0.8, beta_2=0.95, epsilon=1e-6)
    np.testing.assert_allclose(run(opt, W0, G), want, rtol=1e-13)
    momentum, velocity = slots(opt)[:2]
    np.testing.assert_allclose(momentum, m, rtol=1e-13)
    np.testing.assert_allclose(velocity, v, rtol=1e-13)
    assert opt.variables[-1].numpy() == pytest.approx(u_product, rel=1e-14)  # u_product, last as in Keras


def test_nadam_first_step_literal():
    # t = 1, zero state: m = 0.1 g, v = 0.001 g², u_1 = 0.9 * 0.52, u_2 = 0.9 * (1 - 0.5 * 0.9216)
    u1, u2 = 0.9 * 0.52, 0.9 * 0.5392
    m_hat = u2 * 0.1 * 2.0 / (1 - u1 * u2) + (1 - u1) * 2.0 / (1 - u1)  # g = 2
    w1 = 1.0 - m_hat * 0.1 / (np.sqrt(0.001 * 4.0 / 0.001) + 1e-7)
    assert run(O.Nadam(learning_rate=0.1), [1.0], [[2.0]])[0][0] == pytest.approx(w1, rel=1e-14)


def test_adamax_steps_written_out():
    want, (m, u) = adamax_reference(W0, G, lr=0.05, b1=0.85, b2=0.95, eps=1e-6)
    opt = O.Adamax(learning_rate=0.05, beta_1=0.85, beta_2=0.95, epsilon=1e-6)
    np.testing.assert_allclose(run(opt, W0, G), want, rtol=1e-13)
    np.testing.assert_allclose(slots(opt)[0], m, rtol=1e-13)
    np.testing.assert_allclose(slots(opt)[1], u, rtol=1e-13)


def test_adadelta_steps_written_out():
    want, (acc_g, acc_d) = adadelta_reference(W0, G, lr=1.0, rho=0.8, eps=1e-6)
    opt = O.Adadelta(learning_rate=1.0, rho=0.8, epsilon=1e-6)
    np.testing.assert_allclose(run(opt, W0, G), want, rtol=1e-13)
    np.testing.assert_allclose(slots(opt)[0], acc_g, rtol=1e-13)
    np.testing.assert_allclose(slots(opt)[1], acc_d, rtol=1e-13)


def test_adadelta_first_step_literal():
    # acc_g = 0.05 g², delta = -sqrt(eps) g / sqrt(0.05 g² + eps)
    g, eps = 2.0, 1e-6
    delta = -np.sqrt(eps) * g / np.sqrt(0.05 * g * g + eps)
    assert run(O.Adadelta(learning_rate=0.5, epsilon=eps), [1.0], [[g]])[0][0] == pytest.approx(1.0 + 0.5 * delta,
                                                                                           rel=1e-14)


def test_lion_steps_written_out():
    want, (m,) = lion_reference(W0, G, lr=0.01, b1=0.7, b2=0.95)
    opt = O.Lion(learning_rate=0.01, beta_1=0.7, beta_2=0.95)
    np.testing.assert_allclose(run(opt, W0, G), want, rtol=1e-14)
    np.testing.assert_allclose(slots(opt)[0], m, rtol=1e-14)


def test_lion_moves_by_the_learning_rate_and_a_zero_direction_stays():
    got = run(O.Lion(learning_rate=0.25), [1.0, 1.0, 1.0], [[3.0, -0.001, 0.0]])
    np.testing.assert_allclose(got[0], [0.75, 1.25, 1.0], rtol=0, atol=0)


@pytest.mark.parametrize("kwargs", [
    dict(learning_rate=0.05, learning_rate_power=-0.2, initial_accumulator_value=0.4, l1_regularization_strength=0.05,
         l2_regularization_strength=0.15, l2_shrinkage_regularization_strength=0.01, beta=0.3),
    dict(learning_rate=0.5),  # Keras's defaults otherwise: power -0.5, accumulator 0.1, no regularization
    dict(learning_rate=0.2, learning_rate_power=0.0, l1_regularization_strength=0.01),  # a fixed rate
])
def test_ftrl_steps_written_out(kwargs):
    defaults = dict(learning_rate_power=-0.5, initial_accumulator_value=0.1, l1_regularization_strength=0.0,
                    l2_regularization_strength=0.0, l2_shrinkage_regularization_strength=0.0, beta=0.0)
    k = {**defaults, **kwargs}
    want, (n, z) = ftrl_reference(W0, G, k["learning_rate"], -k["learning_rate_power"], k["initial_accumulator_value"],
                                  k["l1_regularization_strength"], k["l2_regularization_strength"],
                                  k["l2_shrinkage_regularization_strength"], k["beta"])
    opt = O.Ftrl(**kwargs)
    np.testing.assert_allclose(run(opt, W0, G), want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(slots(opt)[0], n, rtol=1e-13)
    np.testing.assert_allclose(slots(opt)[1], z, rtol=1e-12, atol=1e-15)


def test_ftrl_accumulator_starts_at_its_initial_value():
    opt = O.Ftrl(initial_accumulator_value=0.25)
    opt.build([var([1.0, 2.0])])
    accumulator, linear = slots(opt)
    assert accumulator.tolist() == [0.25, 0.25] and linear.tolist() == [0.0, 0.0]


# ---------------------------------------------------------------- Keras's golden values (its *_test.py)


SINGLE_STEP = {  # Keras's test_single_step: learning_rate=0.5, grads [1, 6, 7, 2] on [1, 2, 3, 4]
    "Nadam": [0.4686, 1.4686, 2.4686, 3.4686],
    "Adamax": [0.5, 1.5, 2.5, 3.5],
    "Adadelta": [0.9993, 1.9993, 2.9993, 3.9993],
    "Lion": [0.5, 1.5, 2.5, 3.5],
    "Ftrl": [0.2218, 1.3954, 2.3651, 2.8814],
}


@pytest.mark.parametrize("name", NEW)
def test_keras_single_step(name):
    v = var([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    getattr(O, name)(learning_rate=0.5).apply([np.array([1.0, 6.0, 7.0, 2.0], np.float32)], [v])
    np.testing.assert_allclose(v.numpy(), SINGLE_STEP[name], rtol=1e-4, atol=1e-4)


GOLDEN = {  # Keras's test_correctness_with_golden: one step of 0.01s, then arange(0.1, 1.1, 0.1) each row
    "Nadam": (dict(learning_rate=0.5, beta_1=0.5, beta_2=0.67, epsilon=1e-5), [
        [0.4281] * 10,
        [-0.1738, -0.1731, -0.1726, -0.1723, -0.1721, -0.172, -0.1719, -0.1718, -0.1718, -0.1717],
        [-0.7115, -0.7103, -0.7096, -0.7092, -0.709, -0.7088, -0.7086, -0.7085, -0.7085, -0.7084],
        [-1.2335, -1.2322, -1.2313, -1.2309, -1.2306, -1.2304, -1.2302, -1.2301, -1.23, -1.2299],
        [-1.7492, -1.7478, -1.7469, -1.7464, -1.7461, -1.7459, -1.7457, -1.7456, -1.7455, -1.7454]]),
    "Adamax": (dict(learning_rate=0.2, beta_1=0.85, beta_2=0.95, epsilon=1e-6), [
        [0.8] * 10,
        [0.6827, 0.6873, 0.6888, 0.6896, 0.6901, 0.6904, 0.6906, 0.6908, 0.6909, 0.691],
        [0.5333, 0.5407, 0.5431, 0.5444, 0.5451, 0.5456, 0.546, 0.5462, 0.5464, 0.5466],
        [0.368, 0.3773, 0.3804, 0.382, 0.3829, 0.3835, 0.384, 0.3843, 0.3846, 0.3848],
        [0.1933, 0.204, 0.2076, 0.2094, 0.2105, 0.2112, 0.2117, 0.2121, 0.2124, 0.2126]]),
    "Adadelta": (dict(learning_rate=1.0, rho=0.8, epsilon=1e-6),
                 [[value] * 10 for value in (0.9978, 0.9947, 0.9915, 0.9882, 0.9849)]),
    "Lion": (dict(), [[value] * 10 for value in (0.999, 0.998, 0.997, 0.996, 0.995)]),
    "Ftrl": (dict(learning_rate=0.05, learning_rate_power=-0.2, initial_accumulator_value=0.4,
                  l1_regularization_strength=0.05, l2_regularization_strength=0.15,
                  l2_shrinkage_regularization_strength=0.01, beta=0.3), [
        [0.0] * 10,
        [-0.0034, -0.0077, -0.0118, -0.0157, -0.0194, -0.023, -0.0263, -0.0294, -0.0325, -0.0354],
        [-0.0078, -0.0162, -0.0242, -0.0317, -0.0387, -0.0454, -0.0516, -0.0575, -0.0631, -0.0685],
        [-0.0121, -0.0246, -0.0363, -0.0472, -0.0573, -0.0668, -0.0757, -0.0842, -0.0922, -0.0999],
        [-0.0164, -0.0328, -0.0481, -0.0623, -0.0753, -0.0875, -0.099, -0.1098, -0.1201, -0.1299]]),
}


@pytest.mark.parametrize("name", NEW)
def test_keras_golden_values(name):
    kwargs, golden = GOLDEN[name]
    opt = getattr(O, name)(**kwargs)
    x = var(np.ones(10), dtype=np.float32)
    grads = np.arange(0.1, 1.1, 0.1).astype(np.float32)
    opt.apply([np.full(10, 0.01, np.float32)], [x])
    for row in golden:
        np.testing.assert_allclose(x.numpy(), row, rtol=5e-4, atol=5e-4)
        opt.apply([grads], [x])


@pytest.mark.parametrize("name", ["Nadam", "Adamax", "Adadelta", "Lion"])  # Keras has no such test for Ftrl
def test_keras_weight_decay_golden_value(name):
    # Keras's test_weight_decay: with zero gradients only the decay moves the weights (2 * 0.996**3).
    zero = np.zeros((), np.float32)
    var1, var2, var3 = var(2.0, "a", np.float32), var(2.0, "exclude", np.float32), var(2.0, "c", np.float32)
    make = getattr(O, name)
    make(learning_rate=1.0, weight_decay=0.004).apply_gradients(zip([zero], [var1]))
    second = make(learning_rate=1.0, weight_decay=0.004)
    second.exclude_from_weight_decay(var_names=["exclude"])
    second.apply_gradients(zip([zero, zero], [var1, var2]))
    third = make(learning_rate=1.0, weight_decay=0.004)
    third.exclude_from_weight_decay(var_list=[var3])
    third.apply_gradients(zip([zero, zero], [var1, var3]))
    assert var1.numpy() == pytest.approx(1.9760959, abs=1e-6)
    assert var2.numpy() == 2.0 and var3.numpy() == 2.0


# ---------------------------------------------------------------- dtypes and the optimizer-wide state


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_dtype_kept_and_close_to_float64(name, dtype):
    kwargs = {"Adadelta": dict(learning_rate=1.0)}.get(name, dict(learning_rate=0.05))
    opt = getattr(O, name)(**kwargs)
    got = run(opt, W0, G, dtype=dtype)
    assert all(s.dtype == dtype for s in slots(opt))
    want = run(getattr(O, name)(**kwargs), W0, G)
    rtol, atol = {np.float32: (2e-5, 1e-6), np.float16: (1e-2, 5e-3)}[dtype]
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def test_nadam_u_product_is_made_at_build_in_the_first_variable_dtype_and_advances_once_per_step():
    opt = O.Nadam(beta_1=0.9)
    assert len(opt.variables) == 2  # iteration and learning_rate: u_product comes with build, as in Keras
    a, b = var([1.0], "a", np.float32), var([2.0, 3.0], "b", np.float64)
    opt.build([a, b])
    u = opt.variables[-1]
    assert (u.name, u.path, u.dtype, u.shape, float(u)) == ("variable", "variable", "float32", (), 1.0)
    opt.apply([np.ones(1, np.float32), np.ones(2)], [a, b])  # two variables, one step: one factor
    u1 = np.float32(0.9) * (np.float32(1) - np.float32(0.5) * np.float32(0.96))
    assert u.numpy() == u1
    opt.apply([np.ones(1, np.float32), np.ones(2)], [a, b])
    # Keras's order of the products: (u_product * beta_1) * (1 - 0.5 * 0.96**t), in float32
    assert u.numpy() == u1 * np.float32(0.9) * (np.float32(1) - np.float32(0.5) * np.float32(0.96) ** 2)


def test_nadam_failed_step_leaves_u_product_unchanged():
    opt = O.Nadam()
    a = var([1.0, 2.0], "a")
    opt.apply([f64([1.0, 1.0])], [a])
    before = (opt.variables[-1].numpy(), [s.copy() for s in slots(opt)], a.numpy(), int(opt.iterations))

    def failing(w):
        raise RuntimeError("constraint failed")

    a.constraint = failing
    with pytest.raises(RuntimeError):
        opt.apply([f64([1.0, 1.0])], [a])
    after = (opt.variables[-1].numpy(), slots(opt), a.numpy(), int(opt.iterations))
    assert after[0] == before[0] and after[3] == before[3]
    for x, y in zip(after[1] + [after[2]], before[1] + [before[2]]):
        np.testing.assert_array_equal(x, y)


def test_nadam_loss_scale_skipped_step_leaves_u_product_unchanged():
    opt = O.LossScaleOptimizer(O.Nadam())
    a = var([1.0], "a", np.float32)
    opt.apply([np.array([np.inf], np.float32)], [a])  # skipped: not finite
    assert float(opt.inner_optimizer.variables[-1]) == 1.0 and int(opt.iterations) == 0
    opt.apply([np.array([1.0], np.float32)], [a])
    assert float(opt.inner_optimizer.variables[-1]) != 1.0 and int(opt.iterations) == 1


# ---------------------------------------------------------------- Keras's variables: names and order


SLOT_NAMES = {
    "Nadam": ("momentum", "velocity"),
    "Adamax": ("momentum", "norm"),
    "Adadelta": ("accumulated_grad", "accumulated_delta_var"),
    "Lion": ("momentum",),
    "Ftrl": ("accumulator", "linear"),
}


@pytest.mark.parametrize("name", NEW)
def test_variables_in_keras_order_and_names(name):
    opt = getattr(O, name)()
    a, b = Variable(np.ones((2, 3), np.float32), name="kernel"), Variable(np.ones(3, np.float32), name="bias")
    a.path, b.path = "seq/dense/kernel", "seq/dense/bias"
    opt.build([a, b])
    prefix = opt.name
    want = [f"{prefix}/iteration", f"{prefix}/learning_rate"]
    want += [f"{prefix}/seq_dense_{w}_{slot}" for w in ("kernel", "bias") for slot in SLOT_NAMES[name]]
    if name == "Nadam":
        want.append("variable")
    assert [v.path for v in opt.variables] == want
    assert all(not v.trainable for v in opt.variables)


@pytest.mark.parametrize("name", NEW)
def test_variables_match_keras(name):
    keras = keras_or_skip()
    mine, theirs = getattr(O, name)(), getattr(keras.optimizers, name)()
    kmodel = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")], name="net")
    model = Sequential([Input((3,)), Dense(2, name="d")], name="net")
    theirs.build(kmodel.trainable_variables)
    mine.build(model.trainable_weights)

    def names(opt, model_prefix=""):  # the paths without the optimizer's own (counted) name
        return [v.path.split("/", 1)[-1].replace(model_prefix, "", 1) for v in opt.variables]

    # Keras 3.15 puts a Sequential's name in its weights' paths (net/d/kernel), gpulayers does not (d/kernel):
    # the slots are named from those paths, so the model's part is left out here.
    assert names(mine) == names(theirs, "net_")
    assert [v.name for v in mine.variables] == [v.name.replace("net_", "", 1) for v in theirs.variables]
    assert [tuple(v.shape) for v in mine.variables] == [tuple(v.shape) for v in theirs.variables]
    for a, b in zip(mine.variables[1:], theirs.variables[1:]):  # Keras's iteration is int32 (JAX, torch)
        assert a.dtype == str(b.dtype)
        np.testing.assert_array_equal(a.numpy(), np.asarray(b.numpy()))


# ---------------------------------------------------------------- against Keras, several steps


KERAS_CASES = {
    "Nadam": dict(learning_rate=0.05, beta_1=0.8, beta_2=0.95, epsilon=1e-6, weight_decay=0.01),
    "Adamax": dict(learning_rate=0.05, beta_1=0.85, beta_2=0.95, epsilon=1e-6, clipnorm=1.0),
    "Adadelta": dict(learning_rate=1.0, rho=0.8, epsilon=1e-6),
    "Lion": dict(learning_rate=0.01, beta_1=0.9, beta_2=0.95, weight_decay=0.1),
    "Ftrl": dict(learning_rate=0.05, learning_rate_power=-0.2, initial_accumulator_value=0.4,
                 l1_regularization_strength=0.05, l2_regularization_strength=0.15,
                 l2_shrinkage_regularization_strength=0.01, beta=0.3),
}


@pytest.mark.parametrize("name", NEW)
def test_same_steps_as_keras(name):
    keras = keras_or_skip()
    rng = np.random.default_rng(3)
    start = [rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(4).astype(np.float32)]
    steps = [[rng.standard_normal(w.shape).astype(np.float32) for w in start] for _ in range(6)]
    theirs = getattr(keras.optimizers, name)(**KERAS_CASES[name])
    mine = getattr(O, name)(**KERAS_CASES[name])
    kvars = [keras.Variable(w) for w in start]
    mvars = [Variable(w.copy(), name=f"w{i}") for i, w in enumerate(start)]
    for grads in steps:
        theirs.apply_gradients(zip([keras.ops.convert_to_tensor(g) for g in grads], kvars))
        mine.apply([g.copy() for g in grads], mvars)
        for k, m in zip(kvars, mvars):
            np.testing.assert_allclose(m.numpy(), keras.ops.convert_to_numpy(k), rtol=1e-5, atol=1e-6)
    assert len(mine.variables) == len(theirs.variables)
    for m, k in zip(mine.variables, theirs.variables):
        np.testing.assert_allclose(m.numpy(), np.asarray(k.numpy()), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- .keras files, both ways


def make_model(seed=0):
    model = Sequential([Input((3,)), Dense(4, activation="relu"), Dense(2, activation="softmax")], name="net")
    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype("float32") for w in model.weights])
    return model


def batches(count, seed=1):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((8, 3)).astype("float32"), rng.integers(0, 2, 8)) for _ in range(count)]


def saved_optimizer_vars(path):
    with zipfile.ZipFile(path) as z, h5py.File(z.open("model.weights.h5"), "r") as h5:
        group = h5["optimizer/vars"]
        return [np.array(group[str(i)]) for i in range(len(group))]


@pytest.mark.parametrize("name", NEW)
def test_saved_state_resumes_in_gpulayers(tmp_path, name):
    data = batches(5)
    model = make_model()
    model.compile(optimizer=getattr(O, name)(learning_rate=0.05), loss="sparse_categorical_crossentropy")
    for x, y in data[:3]:
        model.train_on_batch(x, y)
    model.save(tmp_path / "m.keras")
    stored = saved_optimizer_vars(tmp_path / "m.keras")
    assert len(stored) == len(model.optimizer.variables)
    for a, b in zip(stored, model.optimizer.variables):
        np.testing.assert_array_equal(a, b.numpy())
    loaded = load_model(tmp_path / "m.keras")
    assert type(loaded.optimizer) is type(model.optimizer) and int(loaded.optimizer.iterations) == 3
    for x, y in data[3:]:
        model.train_on_batch(x, y)
        loaded.train_on_batch(x, y)
    for a, b in zip(model.get_weights() + [v.numpy() for v in model.optimizer.variables],
                    loaded.get_weights() + [v.numpy() for v in loaded.optimizer.variables], strict=True):
        np.testing.assert_array_equal(a, b)


def keras_model(keras, weights):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    model.set_weights(weights)
    return model


@pytest.mark.parametrize("name", NEW)
def test_gpulayers_file_resumes_in_keras(tmp_path, name):
    keras = keras_or_skip()
    data = batches(5)
    model = make_model()
    model.compile(optimizer=getattr(O, name)(learning_rate=0.05), loss="sparse_categorical_crossentropy")
    for x, y in data[:3]:
        model.train_on_batch(x, y)
    model.save(tmp_path / "m.keras")
    kmodel = keras.saving.load_model(str(tmp_path / "m.keras"))
    assert type(kmodel.optimizer).__name__ == name and int(kmodel.optimizer.iterations.numpy()) == 3
    assert len(kmodel.optimizer.variables) == len(model.optimizer.variables)
    for k, m in zip(kmodel.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(k.numpy()), m.numpy())
    for x, y in data[3:]:
        model.train_on_batch(x, y)
        kmodel.train_on_batch(x, y)
    for got, want in zip(kmodel.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NEW)
def test_keras_file_resumes_in_gpulayers(tmp_path, name):
    keras = keras_or_skip()
    data = batches(5)
    kmodel = keras_model(keras, make_model().get_weights())
    kmodel.compile(optimizer=getattr(keras.optimizers, name)(learning_rate=0.05),
                   loss="sparse_categorical_crossentropy")
    for x, y in data[:3]:
        kmodel.train_on_batch(x, y)
    kmodel.save(str(tmp_path / "k.keras"))
    mine = load_model(tmp_path / "k.keras")
    assert type(mine.optimizer).__name__ == name and int(mine.optimizer.iterations) == 3
    assert len(mine.optimizer.variables) == len(kmodel.optimizer.variables)
    for m, k in zip(mine.optimizer.variables, kmodel.optimizer.variables):
        np.testing.assert_array_equal(m.numpy(), np.asarray(k.numpy()).astype(m.numpy().dtype))
    for x, y in data[3:]:
        kmodel.train_on_batch(x, y)
        mine.train_on_batch(x, y)
    for got, want in zip(mine.get_weights(), kmodel.get_weights(), strict=True):
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-4, atol=1e-5)


def test_import_state_without_slots_restarts_nadam_u_product():
    model = make_model()
    model.compile(optimizer=O.Nadam(), loss="sparse_categorical_crossentropy")
    model.train_on_batch(*batches(1)[0])
    opt, weights = model.optimizer, model.trainable_weights
    assert float(opt.variables[-1]) != 1.0
    opt.import_state(weights, iterations=0, slots=[])  # Keras's unbuilt optimizer: everything afresh
    assert float(opt.variables[-1]) == 1.0 and int(opt.iterations) == 0
    state = opt.export_state(weights)
    assert state["slots"] == []
    with pytest.raises(ValueError, match=r"slots\[8\]"):  # u_product is a scalar
        opt.import_state(weights, iterations=1, slots=[np.zeros(w.shape, np.float32) for w in weights for _ in "mv"]
                         + [np.zeros(2, np.float32)])
    assert int(opt.iterations) == 0


# ---------------------------------------------------------------- configs, names, lookup, errors


DEFAULTS = {  # every learning_rate defaults to 0.001
    "Nadam": {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
    "Adamax": {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
    "Adadelta": {"rho": 0.95, "epsilon": 1e-7},
    "Lion": {"beta_1": 0.9, "beta_2": 0.99},
    "Ftrl": {"learning_rate_power": -0.5, "initial_accumulator_value": 0.1,
             "l1_regularization_strength": 0.0, "l2_regularization_strength": 0.0,
             "l2_shrinkage_regularization_strength": 0.0, "beta": 0.0},
}
BASE = {"weight_decay": None, "clipnorm": None, "global_clipnorm": None, "clipvalue": None, "use_ema": False,
        "ema_momentum": 0.99, "ema_overwrite_frequency": None, "loss_scale_factor": None,
        "gradient_accumulation_steps": None}


@pytest.mark.parametrize("name", NEW)
def test_config_defaults_and_round_trip(name):
    opt = getattr(O, name)(name="opt")
    config = opt.get_config()
    assert list(config) == ["name", "learning_rate", *BASE, *DEFAULTS[name]]  # Keras's key order
    assert config == {"name": "opt", "learning_rate": 0.001, **BASE, **DEFAULTS[name]}
    again = getattr(O, name).from_config(config)
    assert again.get_config() == config
    data = O.serialize(opt)
    assert data == {"module": "keras.optimizers", "class_name": name, "config": config, "registered_name": None}
    assert type(O.deserialize(data)) is getattr(O, name)


@pytest.mark.parametrize("name", NEW)
def test_config_matches_keras(name):
    keras = keras_or_skip()
    kwargs = {k: v for k, v in KERAS_CASES[name].items() if k != "learning_rate"}
    mine, theirs = getattr(O, name)(**kwargs).get_config(), getattr(keras.optimizers, name)(**kwargs).get_config()
    assert list(mine) == list(theirs)
    for key in mine:
        if key == "name":
            continue
        assert mine[key] == pytest.approx(theirs[key], rel=1e-7) if isinstance(mine[key], float) else \
            mine[key] == theirs[key], key


def _counter(name, base):
    """0 for ``base``, n for ``base_n``: the counter of Keras's auto_name."""
    assert name == base or (name.startswith(base + "_") and name[len(base) + 1:].isdigit()), name
    return 0 if name == base else int(name[len(base) + 1:])


@pytest.mark.parametrize("name", NEW)
def test_get_by_name_and_default_names(name):
    first, second = O.get(name.lower()), O.get(name.upper())  # Keras looks names up in any case
    assert type(first) is getattr(O, name) and type(second) is getattr(O, name)
    assert _counter(second.name, name.lower()) == _counter(first.name, name.lower()) + 1
    assert name in O.__all__


@pytest.mark.parametrize("make, pattern", [
    (lambda: O.Nadam(beta_1=1.5), "beta_1"),
    (lambda: O.Nadam(beta_2=-0.1), "beta_2"),
    (lambda: O.Nadam(epsilon="small"), "epsilon"),
    (lambda: O.Adamax(beta_1=float("nan")), "beta_1"),
    (lambda: O.Adamax(epsilon=-1.0), "epsilon"),
    (lambda: O.Adadelta(rho=1.2), "rho"),
    (lambda: O.Adadelta(epsilon=None), "epsilon"),
    (lambda: O.Lion(beta_1=0.0), "beta_1"),
    (lambda: O.Lion(beta_1=1.01), "beta_1"),
    (lambda: O.Lion(beta_2=2.0), "beta_2"),
    (lambda: O.Ftrl(learning_rate_power=0.5), "learning_rate_power"),
    (lambda: O.Ftrl(initial_accumulator_value=-0.1), "initial_accumulator_value"),
    (lambda: O.Ftrl(l1_regularization_strength=-1.0), "l1_regularization_strength"),
    (lambda: O.Ftrl(l2_regularization_strength=-1.0), "l2_regularization_strength"),
    (lambda: O.Ftrl(l2_shrinkage_regularization_strength=-1.0), "l2_shrinkage_regularization_strength"),
    (lambda: O.Ftrl(beta=float("inf")), "beta"),
    (lambda: O.Nadam(learning_rate=-0.1), "learning_rate"),
    (lambda: O.Lion(momentum=0.9), "not recognized"),
])
def test_argument_errors_name_the_argument_and_the_value(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


def test_a_refused_argument_uses_no_default_name():
    before = _counter(O.Nadam().name, "nadam")
    with pytest.raises(ValueError, match="beta_1"):
        O.Nadam(beta_1=2.0)
    assert _counter(O.Nadam().name, "nadam") == before + 1
