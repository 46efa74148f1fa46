"""Pure maths of SelfMEA (Liu et al., "Self-Supervised Entity Alignment Based on
Multi-Modal Contrastive Learning", IEEE/CAA JAS 2022): the NCA loss (eq. 6),
the relative similarity metric loss of SelfKG (Liu et al., WWW 2022), masked
modality fusion (eq. 5) and the CSR gather of the bag encoders; the one-to-one seed
proposals of Algorithm 1 are seed logic (:func:`mmea.seeds.propose_mutual_pairs`).

Small functions on tensors so that tests can check them against hand values.
torch is imported inside each function: importing this module stays instant.
"""

from __future__ import annotations

__all__ = ["nca_loss", "rsm_loss", "fusion_weights", "fuse", "fused_similarity", "bag_gather", "with_propagation"]


def nca_loss(sim, alpha: float = 5.0, beta: float = 10.0, eps: float = 1e-6):
    """NCA alignment loss of SelfMEA eq. 6 over ``B`` aligned pairs.

    ``sim (B, B)``: ``S[m, n]`` is the similarity of source ``m`` and target
    ``n`` of the batch, row ``i`` and column ``i`` being the ``i``-th pair:

        L = 1/B sum_i [ 1/alpha log(1 + sum_{m != i} exp(alpha S_mi))
                      + 1/alpha log(1 + sum_{n != i} exp(alpha S_in))
                      - log(1 + beta S_ii) ]

    The first two terms push the other sources of target ``i`` (column) and
    the other targets of source ``i`` (row) away, the last pulls the pair
    together.  ``1 + beta S_ii`` is clamped at ``eps``: with cosine
    similarities it is non-positive only for pairs with ``S_ii <= -1/beta``,
    where the paper's formula is undefined.  ``log(1 + sum exp)`` is computed
    as a ``logsumexp`` with a zero logit, stable for any ``alpha``.
    Defaults ``alpha = 5, beta = 10`` follow the NCA settings of the paper's
    references (EVA / MCLEA use the same loss family).
    """
    import torch

    b = sim.shape[0]
    eye = torch.eye(b, dtype=torch.bool, device=sim.device)
    neg = (alpha * sim).masked_fill(eye, float("-inf"))  # (B, B), diagonal excluded
    zero = torch.zeros(b, 1, dtype=sim.dtype, device=sim.device)
    col = torch.logsumexp(torch.cat([zero, neg.t()], dim=1), dim=1) / alpha  # (B,) over m != i of S_mi
    row = torch.logsumexp(torch.cat([zero, neg], dim=1), dim=1) / alpha  # (B,) over n != i of S_in
    pos = torch.log((1.0 + beta * torch.diagonal(sim)).clamp_min(eps))  # (B,)
    return (col + row - pos).mean()


def rsm_loss(anchor, negatives, tau: float = 0.08):
    """Relative similarity metric loss of SelfKG (Liu et al., WWW 2022), as in SelfMEA sec. III-B.

    ``anchor (B, d)`` and ``negatives (Q, d)`` are L2-normalised; negatives
    come from the *other* KG (no label needed):

        L = -1/tau + 1/B sum_x log( exp(1/tau) + sum_i exp(f(x)^T f(y_i^-) / tau) )

    The positive similarity is fixed at its maximum ``1`` (``||f|| = 1``), so
    only the uniformity term acts: entities of one KG are pushed apart from
    the other KG's entities, which sharpens the few true neighbours.
    """
    import torch

    b = anchor.shape[0]
    logits = anchor @ negatives.t() / tau  # (B, Q)
    pos = torch.full((b, 1), 1.0 / tau, dtype=anchor.dtype, device=anchor.device)
    return (torch.logsumexp(torch.cat([pos, logits], dim=1), dim=1) - 1.0 / tau).mean()


def fusion_weights(w, mask):
    """Per-entity modality weights: ``softmax(w)`` restricted to the modalities an entity has (eq. 5).

    ``w (K,)`` learnable logits, ``mask (n, K)`` bool.  Row ``e`` is
    ``exp(w_i) m_ei / sum_j exp(w_j) m_ej``: it sums to one over the present
    modalities, so a missing modality neither dilutes the others nor adds
    a zero block's share; a row without any modality is all zeros.
    """
    import torch

    logits = w.unsqueeze(0).expand(mask.shape[0], -1).masked_fill(~mask, float("-inf"))  # (n, K)
    a = torch.softmax(logits, dim=1)
    return torch.nan_to_num(a, nan=0.0)  # all-missing rows: softmax of -inf gives nan


def fuse(blocks, mask, w):
    """Joint embedding ``F_J = concat_i a_i F_i`` (eq. 5) of L2-normalised blocks ``F_i (n, d_i)``."""
    import torch

    a = fusion_weights(w, mask)  # (n, K)
    return torch.cat([a[:, i:i + 1] * f for i, f in enumerate(blocks)], dim=1)  # (n, sum d_i)


def fused_similarity(sims, a_src, a_tgt):
    """Cosine of the joint embeddings ``F_J`` (eq. 5) from the per-modality cosines, without forming ``F_J``.

    With L2-normalised blocks (zero where missing) and weights ``a (n, K)``,
    ``<F_J(p), F_J(q)> = sum_i a_pi a_qi S_i[p, q]`` and ``||F_J(p)|| = ||a_p||``, so

        cos(F_J(p), F_J(q)) = sum_i a_pi a_qi S_i[p, q] / (||a_p|| ||a_q||).

    ``sims``: ``K`` tensors ``(B, B')``; ``a_src (B, K)``, ``a_tgt (B', K)``.
    This equals ``normalize(fuse(...)) @ normalize(fuse(...)).T`` at a fraction of its cost.
    """
    import torch

    num = sum(a_src[:, i:i + 1] * a_tgt[:, i].unsqueeze(0) * s for i, s in enumerate(sims))  # (B, B')
    den = torch.linalg.norm(a_src, dim=1).unsqueeze(1) * torch.linalg.norm(a_tgt, dim=1).unsqueeze(0)
    return num / den.clamp_min(1e-12)


def bag_gather(indptr, indices, data, rows):
    """The CSR rows ``rows`` as ``(input, offsets, per_sample_weights)`` for ``torch.nn.EmbeddingBag``.

    With ``mode="sum"``, ``EmbeddingBag(W)(input, offsets, weights)`` is the
    sparse product ``X[rows] W`` (SelfMEA eqs. 3-4 without the bias).
    """
    import torch

    starts, ends = indptr[rows], indptr[rows + 1]  # (b,)
    lens = ends - starts
    offsets = torch.zeros_like(lens)
    if len(lens) > 1:
        offsets[1:] = torch.cumsum(lens, 0)[:-1]
    total = int(lens.sum())
    pos = torch.arange(total, device=indices.device) - torch.repeat_interleave(offsets, lens) \
        + torch.repeat_interleave(starts, lens)  # (total,) positions in indices/data
    return indices[pos], offsets, data[pos]


def with_propagation(f_g, lp, a: float):
    """``normalize([sqrt(1 - a) F_G, sqrt(a) L])`` ``(b, d_g + d_l)``: the structure modality with ``structure_lp``.

    ``f_g (b, d_g)`` unit rows (the relational encoder's modality), ``lp (b, d_l)`` unit rows or zero rows (the pool's
    label propagation; zero for an entity no anchor reaches, whose row is then ``F_G`` alone).  Between two entities
    both reached, the cosine is ``(1 - a) cos_G + a cos_L``."""
    import math

    import torch

    out = torch.cat([math.sqrt(1.0 - a) * f_g, math.sqrt(a) * lp], dim=1)
    return torch.nn.functional.normalize(out, dim=1)
