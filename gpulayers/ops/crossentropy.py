"""The cross-entropies of the nn family (categorical, sparse, binary), differentiable on the tape.

Given probabilities straight from a recorded ``softmax`` or ``sigmoid`` (and
``from_logits=False``), they compute from the logits instead: the fused,
stable form Keras's backends take too, with the gradient ``p - target``.
``check_sparse_labels`` is the one check of integer labels, shared with the
losses.
"""


import numpy as np

from backends import get_ops
from gpulayers import config
from gpulayers.autodiff import Tensor, record
from gpulayers.ops.activations import _log_softmax_array, _sigmoid_array
from gpulayers.ops.core import convert_to_tensor, normalize_axis, xp

__all__ = [
    "binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy",
]


def _ce_dtypes(output):
    """(compute dtype, result dtype): float16 computes in float32; non-floats in ``floatx()``."""
    d = output.data.dtype
    if d.kind != "f":
        d = np.dtype(config.floatx())
    return (np.dtype("float32") if d.itemsize < 4 else d), d


def _fused_logits(output, op, axis=None):
    """The logits behind ``output`` when it is the result of a ``softmax`` (over ``axis``) or ``sigmoid``.

    A float cast between the activation and the loss (float16 probabilities
    computed in float32) is looked through.
    """
    t = output
    if not isinstance(t, Tensor) or t.node is None:
        return None
    if t.node.op == "cast":
        t = t.node.inputs[0]
        if t.node is None:
            return None
    if t.node.op != op or t.index != 0:
        return None
    if op == "softmax" and (t.node.attrs or {}).get("axis") != axis:
        return None
    return t.node.inputs[0]


def _expand(g, ax, dtype):
    return xp().expand_dims(g.astype(dtype, copy=False), ax)


def _clip_bounds(dtype):
    # Scalars of the compute dtype, not device arrays: no host-to-device copy per call.
    eps = config.epsilon()
    return np.dtype(dtype).type(eps), np.dtype(dtype).type(1.0 - eps)


def _target_input(target):
    return target if target.requires_grad and target.data.dtype.kind == "f" else None


def categorical_crossentropy(target, output, from_logits=False, axis=-1):
    """``-sum(target * log(p), axis)`` per sample (Keras's formula).

    With ``from_logits``, ``log p = log_softmax(output)``. Otherwise the
    probabilities are renormalised, ``q = output / sum(output, axis)``, and
    clipped to ``[epsilon, 1 - epsilon]``; the gradient is the exact
    derivative of that (0 where the clip is active). When ``output`` is the
    result of :func:`softmax` over the same axis, the node is recorded on the
    softmax's logits with the fused gradient ``(p * sum(target) - target) * g``:
    the derivative of the unclipped loss, what training on logits gives (the
    value is still the clipped one); a float cast between the softmax and the
    loss is looked through. The gradient then reaches the logits directly:
    asked for with respect to the probabilities themselves, it has no part
    from this loss. float16 computes in float32; the result has
    ``output``'s dtype. ``target`` gets the gradient ``-log(q)``.
    """
    target, output = _same_shapes(target, output)
    if output.ndim < 1:
        raise ValueError(
            "Arguments `target` and `output` must be at least rank 1. "
            f"Received: target.shape={target.shape}, output.shape={output.shape}"
        )
    ax = normalize_axis(axis, output.ndim)
    cdtype, rdtype = _ce_dtypes(output)
    p = output.data.astype(cdtype, copy=False)
    t = target.data.astype(cdtype, copy=False)
    t_sum = t.sum(axis=ax, keepdims=True)
    np_ = xp()
    if from_logits:
        logp = _log_softmax_array(p, ax)
        values = -(t * logp).sum(axis=ax)

        def backward(g, needs):
            ge = _expand(g, ax, cdtype)
            go = (np_.exp(logp) * t_sum - t) * ge if needs[0] else None
            return go, (-logp * ge if needs[1] else None)

        return record("categorical_crossentropy", values.astype(rdtype, copy=False), (output, _target_input(target)), backward)

    lo, hi = _clip_bounds(cdtype)
    s = p.sum(axis=ax, keepdims=True)
    q = p / s
    qc = np_.clip(q, lo, hi)
    logq = np_.log(qc)
    values = (-(t * logq).sum(axis=ax)).astype(rdtype, copy=False)
    logits = _fused_logits(output, "softmax", ax)
    if logits is not None:

        def fused(g, needs):
            ge = _expand(g, ax, cdtype)
            gz = (p * t_sum - t) * ge if needs[0] else None
            return gz, (-logq * ge if needs[1] else None)

        return record("categorical_crossentropy", values, (logits, _target_input(target)), fused)

    def backward(g, needs):
        ge = _expand(g, ax, cdtype)
        go = None
        if needs[0]:
            gq = np_.where((q >= lo) & (q <= hi), -t / qc, 0.0)  # d loss / d q
            go = (gq - (gq * q).sum(axis=ax, keepdims=True)) / s * ge
        return go, (-logq * ge if needs[1] else None)

    return record("categorical_crossentropy", values, (output, _target_input(target)), backward)


def _same_shapes(target, output):
    """Both as tensors, refusing different shapes (Keras's message)."""
    output = convert_to_tensor(output)
    target = convert_to_tensor(target)
    if target.shape != output.shape:
        raise ValueError(
            "Arguments `target` and `output` must have the same shape. "
            f"Received: target.shape={target.shape}, output.shape={output.shape}"
        )
    return target, output


def check_sparse_labels(labels, num_classes, ignore_class=None, argument="target", classes="output's class axis"):
    """Refuse (ValueError naming the first one) a label that is not an integer in ``[0, num_classes)``
    (``ignore_class`` aside): one device-to-host sync. Returns the labels, bools as ints."""
    np_ = xp()
    if labels.dtype.kind == "b":
        labels = labels.astype(np.int64)
    if labels.dtype.kind in "iu":
        bad = (labels < 0) | (labels >= num_classes)
    elif labels.dtype.kind == "f":
        bad = (labels != np_.floor(labels)) | (labels < 0) | (labels >= num_classes)  # NaN is bad too
    else:
        raise TypeError(
            f"Invalid dtype for `{argument}`: sparse labels must be integers or floats. "
            f"Received: {argument}.dtype={labels.dtype}"
        )
    if ignore_class is not None:
        bad = bad & (labels != ignore_class)
    if bool(np_.any(bad)):
        flat = np.asarray(get_ops().to_numpy(bad)).reshape(-1)
        host = np.asarray(get_ops().to_numpy(labels)).reshape(-1)
        i = int(np.argmax(flat))
        value = host[i].item()
        raise ValueError(
            f"Invalid value in `{argument}`: {value!r} at flat index {i}. Sparse labels must be integers in "
            f"[0, {num_classes}), where {num_classes} is the size of {classes}"
            + (f", or ignore_class={ignore_class}" if ignore_class is not None else "")
            + f". Received: label={value!r}"
        )
    return labels


def sparse_categorical_crossentropy(target, output, from_logits=False, axis=-1):
    """Categorical cross-entropy with integer class labels in ``target``.

    ``target`` has ``output``'s shape without the class ``axis`` (or with that
    axis of size 1, which is squeezed). Values, clipping, fusion with a
    :func:`softmax` (gradient ``(p - onehot) * g`` on the logits) and dtypes as
    :func:`categorical_crossentropy`. Labels outside ``[0, classes)`` are refused.
    """
    return sparse_crossentropy(target, output, from_logits, axis, check_labels=True)


def sparse_crossentropy(target, output, from_logits=False, axis=-1, check_labels=True, mean=False):
    """:func:`sparse_categorical_crossentropy`; ``check_labels=False`` skips the label check (and its
    host sync) for a caller that checked the labels already (``losses``, once per ``fit``).

    ``mean=True`` asks for the mean of the values where ``output`` comes straight from a softmax over its
    last axis: that is then the result, a 0-d node on the logits (on the GPU one launch each way, where the
    values and their mean are three); otherwise the values come back as without it.
    """
    output = convert_to_tensor(output)
    labels = convert_to_tensor(target).data
    if output.ndim < 1:
        raise ValueError(f"Argument `output` must be at least rank 1. Received: output.shape={output.shape}")
    ax = normalize_axis(axis, output.ndim)
    if labels.ndim == output.ndim and labels.shape[ax] == 1:  # Keras squeezes the class axis of the labels
        labels = labels.reshape(labels.shape[:ax] + labels.shape[ax + 1 :])
    expected = output.shape[:ax] + output.shape[ax + 1 :]
    if tuple(labels.shape) != expected:
        raise ValueError(
            "Arguments `target` and `output` must have the same shape except output's class axis: "
            f"target.shape={convert_to_tensor(target).shape}, output.shape={output.shape}"
        )
    classes = output.shape[ax]
    if check_labels:
        labels = check_sparse_labels(labels, classes)
    elif labels.dtype.kind == "b":
        labels = labels.astype(np.int64)
    cdtype, rdtype = _ce_dtypes(output)
    np_ = xp()
    p = output.data.astype(cdtype, copy=False)
    labels = labels.astype(np.int64, copy=False)
    idx = np_.expand_dims(labels, ax)

    def onehot():  # built when a backward pass needs it
        ramp = np_.arange(classes).reshape([classes if i == ax else 1 for i in range(output.ndim)])
        return (ramp == idx).astype(cdtype)

    if from_logits:
        logp = _log_softmax_array(p, ax)
        values = -np_.take_along_axis(logp, idx, axis=ax).squeeze(ax)
        return record(
            "sparse_categorical_crossentropy", values.astype(rdtype, copy=False), (output,),
            lambda g, needs: ((np_.exp(logp) - onehot()) * _expand(g, ax, cdtype),),
        )
    lo, hi = _clip_bounds(cdtype)
    logits = _fused_logits(output, "softmax", ax)
    if logits is not None and ax == output.ndim - 1 and p.size:
        # The training path behind a softmax: Ops' row kernels (one launch each way on the GPU).
        ops = get_ops()
        rows, k = p.reshape(-1, classes), labels.reshape(-1)
        if mean and rdtype == cdtype:
            scale = cdtype.type(1.0 / k.size)  # the mean's gradient, as losses' reduction takes it
            return record(
                "sparse_categorical_crossentropy", ops.sparse_xent_mean(rows, k, lo, hi), (logits,),
                lambda g, needs: (ops.sparse_xent_logits_grad(rows, k, g, scale).reshape(p.shape),),
            )
        values = ops.sparse_xent_values(rows, k, lo, hi).reshape(labels.shape).astype(rdtype, copy=False)
        return record(
            "sparse_categorical_crossentropy", values, (logits,),
            lambda g, needs: (ops.sparse_xent_logits_grad(rows, k, g.reshape(-1)).reshape(p.shape),),
        )
    s = p.sum(axis=ax, keepdims=True)
    q = p / s
    qk = np_.take_along_axis(q, idx, axis=ax)
    qkc = np_.clip(qk, lo, hi)
    values = (-np_.log(qkc).squeeze(ax)).astype(rdtype, copy=False)
    if logits is not None:
        return record(
            "sparse_categorical_crossentropy", values, (logits,),
            lambda g, needs: ((p - onehot()) * _expand(g, ax, cdtype),),
        )

    def backward(g, needs):
        gk = np_.where((qk >= lo) & (qk <= hi), -1.0 / qkc, 0.0)  # d loss / d q_k
        return (gk * (onehot() - qk) / s * _expand(g, ax, cdtype),)

    return record("sparse_categorical_crossentropy", values, (output,), backward)


def binary_crossentropy(target, output, from_logits=False):
    """Elementwise ``-(t * log(p) + (1 - t) * log(1 - p))`` with ``p`` clipped to ``[epsilon, 1 - epsilon]``.

    With ``from_logits``, the stable ``max(z, 0) - z * t + log1p(exp(-|z|))``
    (Keras's TensorFlow, JAX and PyTorch form; gradient ``sigmoid(z) - t``).
    When ``output`` is the result of :func:`sigmoid`, the node is recorded on
    its logits with the fused gradient ``(p - t) * g`` (see
    :func:`categorical_crossentropy`). Dtypes as there.
    """
    target, output = _same_shapes(target, output)
    cdtype, rdtype = _ce_dtypes(output)
    np_ = xp()
    p = output.data.astype(cdtype, copy=False)
    t = target.data.astype(cdtype, copy=False)
    inputs = (output, _target_input(target))
    if from_logits:
        values = np_.maximum(p, 0.0) - p * t + np_.log1p(np_.exp(-np_.abs(p)))

        def backward(g, needs):
            g = g.astype(cdtype, copy=False)
            return ((_sigmoid_array(p) - t) * g if needs[0] else None), (-p * g if needs[1] else None)

        return record("binary_crossentropy", values.astype(rdtype, copy=False), inputs, backward)
    lo, hi = _clip_bounds(cdtype)
    pc = np_.clip(p, lo, hi)
    log_p, log_not_p = np_.log(pc), np_.log(1.0 - pc)
    values = (-(t * log_p + (1.0 - t) * log_not_p)).astype(rdtype, copy=False)

    def target_grad(g):
        return (log_not_p - log_p) * g

    logits = _fused_logits(output, "sigmoid")
    if logits is not None:

        def fused(g, needs):
            g = g.astype(cdtype, copy=False)
            return ((p - t) * g if needs[0] else None), (target_grad(g) if needs[1] else None)

        return record("binary_crossentropy", values, (logits, inputs[1]), fused)

    def backward_p(g, needs):
        g = g.astype(cdtype, copy=False)
        go = None
        if needs[0]:
            go = np_.where((p >= lo) & (p <= hi), (pc - t) / (pc * (1.0 - pc)), 0.0) * g
        return go, (target_grad(g) if needs[1] else None)

    return record("binary_crossentropy", values, inputs, backward_p)
