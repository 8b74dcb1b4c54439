"""Products of the NumPy-like family: ``matmul``, ``tensordot``, ``dot``, ``outer``, ``einsum``."""

import builtins
import numbers

import numpy as np

from gpulayers.autodiff import record
from gpulayers.ops.core import (
    convert_to_tensor,
    fix_float64,
    unbroadcast,
    xp,
)
from gpulayers.ops.elementwise import multiply
from gpulayers.ops.shapes import ravel, reshape

__all__ = [
    "dot", "einsum", "matmul", "outer", "tensordot",
]



def matmul(x1, x2):
    """NumPy's ``matmul`` (batch axes broadcast; 1-D operands are vectors)."""
    a, b = convert_to_tensor(x1), convert_to_tensor(x2)
    ad, bd = a.data, b.data
    if ad.ndim == 0 or bd.ndim == 0:
        raise ValueError(f"matmul needs operands of rank >= 1. Received shapes {ad.shape} and {bd.shape}")
    y = fix_float64(xp().asarray(xp().matmul(ad, bd)), a, b)

    def backward(g, needs):
        a2 = ad[None, :] if ad.ndim == 1 else ad
        b2 = bd[:, None] if bd.ndim == 1 else bd
        g2 = g
        if bd.ndim == 1:
            g2 = g2[..., None]
        if ad.ndim == 1:
            g2 = g2[..., None, :]
        ga = gb = None
        if needs[0]:
            ga = xp().matmul(g2, xp().swapaxes(b2, -1, -2))
            ga = unbroadcast(ga, a2.shape).reshape(ad.shape)
        if needs[1]:
            if b2.ndim == 2 and a2.ndim > 2:
                # (N, ..., K) @ (K, M): one GEMM over all rows instead of a batch then a sum.
                k = a2.shape[-1]
                gb = a2.reshape(-1, k).T @ g2.reshape(-1, g2.shape[-1])
            else:
                gb = unbroadcast(xp().matmul(xp().swapaxes(a2, -1, -2), g2), b2.shape)
            gb = gb.reshape(bd.shape)
        return ga, gb

    return record("matmul", y, (a, b), backward)


def _tensordot_axes(axes, ndim_a, ndim_b):
    if isinstance(axes, (numbers.Integral, np.integer)):
        n = int(axes)
        return list(range(ndim_a - n, ndim_a)), list(range(n))
    left, right = axes
    left = [left] if isinstance(left, (numbers.Integral, np.integer)) else list(left)
    right = [right] if isinstance(right, (numbers.Integral, np.integer)) else list(right)
    return [int(i) % ndim_a for i in left], [int(i) % ndim_b for i in right]


def tensordot(x1, x2, axes=2):
    """Sum of products over the given axes of ``x1`` and ``x2`` (NumPy's ``tensordot``)."""
    a, b = convert_to_tensor(x1), convert_to_tensor(x2)
    ad, bd = a.data, b.data
    a_axes, b_axes = _tensordot_axes(axes, ad.ndim, bd.ndim)
    y = fix_float64(xp().asarray(xp().tensordot(ad, bd, axes=(a_axes, b_axes))), a, b)
    a_free = [i for i in range(ad.ndim) if i not in a_axes]
    b_free = [i for i in range(bd.ndim) if i not in b_axes]

    def backward(g, needs):
        ga = gb = None
        if needs[0]:
            part = xp().tensordot(g, bd, axes=(list(range(len(a_free), g.ndim)), b_free))
            ga = part.transpose(np.argsort(a_free + a_axes))
        if needs[1]:
            part = xp().tensordot(ad, g, axes=(a_free, list(range(len(a_free)))))
            gb = part.transpose(np.argsort(b_axes + b_free))
        return ga, gb

    return record("tensordot", y, (a, b), backward)


def dot(x1, x2):
    """NumPy's ``dot``: products of scalars, inner products of vectors, matrix products, and
    sums over the last axis of ``x1`` and the second-to-last of ``x2``."""
    a, b = convert_to_tensor(x1), convert_to_tensor(x2)
    if a.ndim == 0 or b.ndim == 0:
        return multiply(a, b)
    if b.ndim == 1:
        return tensordot(a, b, axes=([a.ndim - 1], [0]))
    return tensordot(a, b, axes=([a.ndim - 1], [b.ndim - 2]))


def outer(x1, x2):
    """Outer product of the flattened operands."""
    a, b = ravel(x1), ravel(x2)
    return multiply(reshape(a, (-1, 1)), reshape(b, (1, -1)))


_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _einsum_spec(subscripts, shapes):
    """Explicit subscripts: ellipses replaced by letters, the implicit output written out."""
    spec = subscripts.replace(" ", "")
    inputs, arrow, output = spec.partition("->")
    terms = inputs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(f"einsum: {len(terms)} operands in {subscripts!r}, {len(shapes)} given.")
    free = [c for c in _LETTERS if c not in spec]
    n_ell = builtins.max([len(s) - (len(t) - 3) for t, s in zip(terms, shapes) if "..." in t] or [0])
    ell = "".join(free[:n_ell])
    out_terms = []
    for t, s in zip(terms, shapes):
        if "..." in t:
            k = len(s) - (len(t) - 3)
            t = t.replace("...", ell[n_ell - k:] if k else "")
        if len(t) != len(s):
            raise ValueError(f"einsum: term {t!r} does not match an operand of rank {len(s)}.")
        out_terms.append(t)
    if arrow:
        output = output.replace("...", ell)
    else:
        counts = {}
        for t in out_terms:
            for c in t:
                counts[c] = counts.get(c, 0) + 1
        output = ell + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in ell))
    return out_terms, output


def einsum(subscripts, *operands):
    """Einstein summation (NumPy's ``einsum``), with gradients for every operand.

    A letter repeated within one operand (a diagonal, ``"ii->i"``) has no gradient.
    """
    tensors = [convert_to_tensor(o) for o in operands]
    datas = [t.data for t in tensors]
    terms, output = _einsum_spec(subscripts, [d.shape for d in datas])
    spec = ",".join(terms) + "->" + output
    y = fix_float64(xp().asarray(xp().einsum(spec, *datas)), *tensors)

    def backward(g, needs):
        grads = []
        for i, (term, d) in enumerate(zip(terms, datas)):
            if not needs[i]:
                grads.append(None)
                continue
            if len(set(term)) != len(term):
                raise NotImplementedError(
                    f"einsum has no gradient for an operand with a repeated letter ({term!r} in {subscripts!r})."
                )
            others = [terms[j] for j in range(len(terms)) if j != i]
            seen = set(output).union(*others) if others else set(output)
            kept = "".join(c for c in term if c in seen)
            part = xp().einsum(",".join([output] + others) + "->" + kept, g, *[datas[j] for j in range(len(datas)) if j != i])
            shape = [1] * len(term)
            for c, n in zip(kept, part.shape):
                shape[term.index(c)] = n
            part = part.reshape(shape)
            stretched = tuple(k for k, (n, m) in enumerate(zip(d.shape, shape)) if n == 1 and m != 1)
            if stretched:  # broadcast ellipsis axes: sum back to size 1
                part = part.sum(axis=stretched, keepdims=True)
            grads.append(xp().broadcast_to(part, d.shape))
        return grads

    return record("einsum", y, tensors, backward)
