"""Pure maths of CLEP (Papaluca et al., "Contrastive Language-Entity Pre-training for Richer
Knowledge Graph Embedding"): the scaled cosine logits, the symmetric contrastive loss, the
in-batch duplicate mask and the cross-space score.

A batch holds ``B`` triples ``(e_head, r, d_tail)``.  With the projected graph side
``x~_g (B, p)`` and text side ``x~_t (B, p)``:

    m_ij = cos(x~_g_i, x~_t_j) * e^tau                       (tau learnable)
    L    = 1/2 ( CE(M) + CE(M^T) )

``CE(M) = -1/B sum_i log softmax_j(m_ij)[i]`` is the row-wise cross-entropy with the
diagonal as the target, ``CE(M^T)`` the column-wise one (CLIP's loss, Radford et al. 2021).

Small functions on tensors so that tests can check them against hand values.
torch is imported inside each function: importing this module stays instant.
"""

from __future__ import annotations

import numpy as np

__all__ = ["clep_logits", "duplicate_mask", "symmetric_contrastive_loss", "cross_space_scores", "with_inverses"]


def clep_logits(xg, xt, log_scale):
    """``M (B, B)``: ``m_ij = cos(xg_i, xt_j) * exp(log_scale)``; ``log_scale`` is the learnable ``tau``."""
    import torch

    f = torch.nn.functional.normalize
    return (f(xg, dim=-1) @ f(xt, dim=-1).T) * log_scale.exp()  # (B, B)


def duplicate_mask(text_ids, query_ids=None):
    """``(B, B)`` bool: the off-diagonal pairs that are *not* negatives.

    ``mask[i, j]`` (``j != i``) is True when the tails share a text
    (``text_ids[i] == text_ids[j]``: row ``i``'s graph side paired with text
    ``j`` is as correct as with its own), or, given ``query_ids``, when the two
    triples share their ``(head, relation)`` query (then ``(h_i, r_i, t_j)`` is a
    training triple too).  Both relations are symmetric, so the same mask
    serves the rows of ``M`` and of ``M^T``.
    """
    import torch

    same = text_ids[:, None] == text_ids[None, :]  # (B, B)
    if query_ids is not None:
        same = same | (query_ids[:, None] == query_ids[None, :])
    return same & ~torch.eye(len(text_ids), dtype=torch.bool, device=same.device)


def symmetric_contrastive_loss(logits, mask=None):
    """``L = 1/2 (CE(M) + CE(M^T))`` with the diagonal as the targets.

    ``mask (B, B)`` (:func:`duplicate_mask`): masked logits are set to ``-inf``
    before both softmaxes, so a duplicate is neither a positive nor a negative.
    """
    import torch

    if mask is not None:
        logits = logits.masked_fill(mask, float("-inf"))
    target = torch.arange(logits.shape[0], device=logits.device)
    ce = torch.nn.functional.cross_entropy
    return 0.5 * (ce(logits, target) + ce(logits.T, target))


def cross_space_scores(queries, texts):
    """``f_s (B, N)``: cosine of every projected graph query ``(B, p)`` with every projected text ``(N, p)``."""
    import torch

    f = torch.nn.functional.normalize
    return f(queries, dim=-1) @ f(texts, dim=-1).T


def with_inverses(triples, num_relations: int):
    """``(2T, 3)``: the triples plus their inverses ``(t, r + R, h)`` (numpy int64).

    The training pairs of CLEP and the message edges of the R-GCN; head prediction
    ``(?, r, t)`` becomes the tail prediction ``(t, r + R, ?)``.
    """
    triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
    inv = np.stack([triples[:, 2], triples[:, 1] + num_relations, triples[:, 0]], 1)
    return np.concatenate([triples, inv])
