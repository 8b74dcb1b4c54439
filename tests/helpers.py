"""Shared test tools: host conversion and finite-difference gradient checks."""

import importlib.util
import os

import numpy as np
import pytest

from backends import get_ops


def keras_or_skip():
    """Keras 3 on a backend that trains (KERAS_BACKEND, else the first of torch, jax, tensorflow installed), or
    skip the test. The first import fixes the backend for the whole test process."""
    if "KERAS_BACKEND" not in os.environ:
        for backend in ("torch", "jax", "tensorflow"):
            if importlib.util.find_spec(backend) is not None:
                os.environ["KERAS_BACKEND"] = backend
                break
    try:
        import keras
    except Exception as exc:  # not installed, or its backend is missing
        pytest.skip(f"Keras 3 is not importable here ({type(exc).__name__}: {exc})")
    if not keras.__version__.startswith("3.") or keras.backend.backend() == "numpy":
        pytest.skip(f"needs Keras 3 on a backend that trains, found {keras.__version__} on {keras.backend.backend()}")
    return keras


def to_np(x):
    """Any backend array as a numpy array."""
    return get_ops().to_numpy(x) if not isinstance(x, np.ndarray) else x


def reset_randomness(layer, seed=1234):
    """Make a stochastic layer draw the same numbers at its next call."""
    if hasattr(layer, "_rng"):
        ops = get_ops()
        layer._rng, layer._rng_ops = ops.rng(seed), ops


def numeric_grad(f, array, eps=1e-6):
    """Central finite differences of the scalar f() wrt every entry of ``array`` (changed in place)."""
    grad = np.zeros(array.shape, dtype=np.float64)
    flat = array.reshape(-1)
    view = grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        view[i] = (up - down) / (2 * eps)
    return grad


def numeric_grad_of(f, x, eps=1e-6):
    """Central finite differences of the scalar ``sum(f(x))`` wrt every entry of ``x``, as float64.

    ``x`` itself is not changed (the differences are taken on a float64 copy).
    """
    x = np.array(x, dtype=np.float64, order="C")  # C order: the differences perturb a flat view
    return numeric_grad(lambda: float(np.sum(to_np(f(x)))), x, eps)


def check_layer_gradients(layer, x, training=False, rtol=1e-5, atol=1e-7, seed=0, eps=1e-6):
    """Compare the tape's gradients through a float64 layer with finite differences.

    The scalar is ``sum(r * layer(x)) + sum(layer.losses)`` for a fixed random
    ``r``, so the check covers the input gradient, every trainable weight's
    gradient, and the regularizers' and activity regularizer's contributions.
    Stochastic layers replay the same draws at each evaluation. Returns the
    input gradient and ``{weight name: gradient}``.
    """
    from gpulayers import autodiff, ops as gops

    ops = get_ops()
    rng = np.random.default_rng(seed)
    x = np.array(x, dtype=np.float64, order="C")  # C order: the differences perturb a flat view
    reset_randomness(layer)
    y = to_np(layer(x, training=training))
    r = rng.standard_normal(y.shape)

    def total(inputs):
        reset_randomness(layer)
        with autodiff.no_backward():
            out = to_np(layer(inputs, training=training))
            return float(np.sum(r * out) + sum(float(to_np(loss)) for loss in layer.losses))

    reset_randomness(layer)
    inputs = gops.convert_to_tensor(x)
    weights = layer.trainable_weights
    with autodiff.GradientTape() as tape:
        tape.watch(inputs)
        out = layer(inputs, training=training)
        scalar = gops.sum(out * r)
        for loss in layer.losses:
            scalar = scalar + loss
    dx, *wgrads = tape.gradient(scalar, [inputs] + weights)
    dx = to_np(dx)
    grads = {v.name: to_np(g) for v, g in zip(weights, wgrads)}

    num_dx = numeric_grad(lambda: total(x), x, eps)
    np.testing.assert_allclose(dx, num_dx, rtol=rtol, atol=atol, err_msg="input gradient")
    for v in weights:
        host = to_np(v.value).astype(np.float64)

        def with_weight():
            v.value = ops.asarray(host.copy())
            return total(x)

        num = numeric_grad(with_weight, host, eps)
        v.value = ops.asarray(host)
        np.testing.assert_allclose(grads[v.name], num, rtol=rtol, atol=atol, err_msg=f"gradient of {v.name}")
    return dx, grads


def check_op_gradients(fn, *arrays, rtol=1e-6, atol=1e-8, eps=1e-6, seed=0):
    """Compare the tape's gradients of ``fn`` with central finite differences, in float64.

    ``fn(*tensors)`` returns a Tensor (or a list/tuple of them, all checked).
    The scalar differentiated is ``sum(r * fn(...))`` for a fixed random
    ``r`` per output, so every entry of every output counts. Returns the
    analytic gradients (numpy, one per input).
    """
    from gpulayers import autodiff, ops

    hosts = [np.array(a, dtype=np.float64, order="C") for a in arrays]  # C order: the differences perturb a flat view
    rng = np.random.default_rng(seed)

    def outputs(values):
        out = fn(*values)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    first = outputs([ops.convert_to_tensor(h) for h in hosts])
    weights = [rng.standard_normal(tuple(o.shape)) for o in first]

    def scalar(values):
        return sum(ops.sum(o * w) for o, w in zip(outputs(values), weights))

    tensors = [ops.convert_to_tensor(h.copy()) for h in hosts]
    with autodiff.GradientTape() as tape:
        tape.watch(tensors)
        total = scalar(tensors)
    grads = tape.gradient(total, tensors)
    analytic = [np.zeros(h.shape) if g is None else to_np(g) for g, h in zip(grads, hosts)]
    for i, host in enumerate(hosts):

        def value():
            with autodiff.no_backward():
                return float(to_np(scalar([ops.convert_to_tensor(h) for h in hosts]).data))

        numeric = numeric_grad(value, host, eps)
        np.testing.assert_allclose(analytic[i], numeric, rtol=rtol, atol=atol, err_msg=f"gradient of input {i}")
    return analytic



def grad_of(fn, *xs, upstream=None):
    """(fn(*xs), [d sum(upstream * fn) / d x for x in xs]) through a GradientTape."""
    from gpulayers import autodiff, ops

    ts = [ops.convert_to_tensor(x) for x in xs]
    with autodiff.GradientTape() as tape:
        tape.watch(ts)
        y = fn(*ts)
        total = ops.sum(y if upstream is None else y * upstream)
    return y, tape.gradient(total, ts)


def forward(layer, x, training=False, **kwargs):
    """Call ``layer`` on ``x`` on the tape, for tests of its backward pass.

    Returns ``(y, backward)``: the output as numpy and a function
    ``backward(dy) -> dx`` giving the gradient of ``sum(dy * y)`` with respect
    to ``x`` (numpy); the trainable weights' gradients of that same call are
    left in ``backward.grads`` (``{weight name: numpy array}``). The graph is
    kept, so ``backward`` may run several times on one call.
    """
    from gpulayers import autodiff, ops as gops

    inputs = gops.convert_to_tensor(x)
    inputs.watched = True
    out = layer(inputs, training=training, **kwargs)
    weights = layer.trainable_weights

    def backward(dy):
        grads = autodiff.gradient(out, [inputs] + weights, output_gradient=get_ops().asarray(np.asarray(dy, dtype=out.dtype)))
        backward.grads = {v.name: None if g is None else to_np(g) for v, g in zip(weights, grads[1:])}
        return grads[0]

    return to_np(out), backward
