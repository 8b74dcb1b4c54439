"""Keras 3.15's Circle loss (Sun et al., 2020) for L2-normalised embeddings, differentiable on the tape.

For each query embedding (a row of ``y_pred``) against the reference rows
(``ref_embeddings``, by default ``y_pred`` itself), with ``d`` the cosine
distance ``max(1 - y_pred @ ref.T, 0)``, positives the references of the same
label (not the query itself with ``remove_diagonal``) and negatives the rest::

    w_pos = max((m + d) * pos, 0)          w_neg = max((1 + m - d) * neg, 0)
    loss = softplus(logsumexp_pos(-gamma * w_pos * (m - d)) + logsumexp_neg(gamma * w_neg * (1 - m - d)))

As Keras's, the class reduces over the queries whose loss is positive only
(Keras's mask ``loss > 0``): a query without positives or negatives counts
for nothing.

Example:
    >>> emb = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    >>> round(float(Circle()(np.array([0, 0, 1]), emb)), 3)
    3.201
"""

import numpy as np

from backends import array_namespace
from gpulayers import ops
from gpulayers.argument_validation import check_real, standardize_bool
from gpulayers.autodiff import unwrap
from gpulayers.losses import Loss, _prediction

__all__ = ["Circle", "circle"]


def _labels(labels):
    """Integer labels as a column (Keras's ``build_pos_neg_masks`` takes ``(N,)`` or ``(N, 1)``)."""
    raw = ops.convert_to_tensor(unwrap(labels)).data
    return raw.astype(np.int32).reshape(-1, 1)


def circle(y_true, y_pred, ref_labels=None, ref_embeddings=None, remove_diagonal=True, gamma=80, margin=0.4):
    """Per-query Circle loss of the embeddings ``y_pred`` with integer labels ``y_true`` (module docstring);
    ``ref_labels``/``ref_embeddings`` default to ``y_true``/``y_pred``."""
    return _circle(y_true, y_pred, ref_labels, ref_embeddings, remove_diagonal, gamma, margin)


def _circle(y_true, y_pred, ref_labels, ref_embeddings, remove_diagonal, gamma, margin, dtype=None):
    p = _prediction(y_pred, dtype)
    ref = p if ref_embeddings is None else ops.cast(ops.convert_to_tensor(ref_embeddings), p.dtype)
    if p.ndim != 2 or ref.ndim != 2 or p.shape[1] != ref.shape[1]:
        raise ValueError(
            "In circle, `y_pred` and `ref_embeddings` must be 2D embeddings of one size. "
            f"Received: y_pred.shape={tuple(p.shape)}, ref_embeddings.shape={tuple(ref.shape)}"
        )
    query = _labels(y_true)
    keys = query if ref_labels is None else _labels(ref_labels)
    if query.shape[0] != p.shape[0] or keys.shape[0] != ref.shape[0]:
        raise ValueError(
            "In circle, there must be one label per embedding. Received: "
            f"y_true.shape={tuple(np.shape(unwrap(y_true)))}, y_pred.shape={tuple(p.shape)}, "
            f"ref_embeddings.shape={tuple(ref.shape)}"
        )
    positive = query == keys.T
    negative = ~positive
    if remove_diagonal:
        positive = positive & ~array_namespace(positive).eye(*positive.shape, dtype=bool)
    distance = ops.maximum(1.0 - ops.matmul(p, ops.transpose(ref)), 0.0)
    pos_w = ops.maximum((margin + distance) * ops.cast(positive, p.dtype), 0.0)
    neg_w = ops.maximum((1.0 + margin - distance) * ops.cast(negative, p.dtype), 0.0)
    pos_terms = -gamma * pos_w * (margin - distance)
    neg_terms = gamma * neg_w * ((1.0 - margin) - distance)
    p_loss = ops.logsumexp(ops.where(positive, pos_terms, float("-inf")), axis=1)
    n_loss = ops.logsumexp(ops.where(negative, neg_terms, float("-inf")), axis=1)
    return ops.softplus(p_loss + n_loss)


class Circle(Loss):
    """Circle loss of integer labels ``y_true`` and L2-normalised embeddings ``y_pred`` (module docstring).

    Args:
        gamma: the scale (default 80.0). margin: the relaxation ``m``
            (default 0.4). remove_diagonal: leave each query out of its own
            positives (default True). reduction, name, dtype: as
            :class:`~gpulayers.losses.Loss`; the mean counts the queries of
            positive loss only, as Keras's mask does.
    """

    def __init__(self, gamma=80.0, margin=0.4, remove_diagonal=True, reduction="sum_over_batch_size",
                 name="circle", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.gamma = check_real(gamma, "gamma", minimum=0.0)
        self.margin = check_real(margin, "margin")
        self.remove_diagonal = standardize_bool(remove_diagonal, "remove_diagonal")

    def call(self, y_true, y_pred):
        return _circle(y_true, y_pred, None, None, self.remove_diagonal, self.gamma, self.margin, self.dtype)

    def _values(self, y_true, y_pred):
        values = self.call(y_true, y_pred)
        return values, values.data > 0

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "margin": self.margin,
                "remove_diagonal": self.remove_diagonal}
