"""The maths of the Gaussian common-space model, as pure functions (no model, no state).

Equation numbers refer to Hama & Matsubara, "Common Space Learning with
Gaussian Embedding for Multi-Modal Entity Alignment"; every covariance is
diagonal and stored as its diagonal ``var`` (``(..., d)``, > 0).

- :func:`kl_diagonal`: ``KL(N(mu_0, diag var_0) || N(mu_1, diag var_1))``,
  the building block of every score and loss;
- :func:`relation_score`: the relational score (eq. 1);
- :func:`modality_score` / :func:`modality_loss`: the visual and numerical
  scores and losses (eqs. 3-4, 6-7);
- :func:`common_space_loss` (eq. 8) and :func:`alignment_loss` (eq. 9);
- :func:`symmetric_kl`: the score of the optional re-rank at evaluation.

The exchange strategy that extends ``D+`` (eq. 2) is seed logic:
:func:`mmea.seeds.exchange_triples`.

Torch is imported inside the functions that need it.
"""

from __future__ import annotations

__all__ = [
    "kl_diagonal",
    "symmetric_kl",
    "relation_score",
    "modality_score",
    "modality_loss",
    "common_space_loss",
    "alignment_loss",
]


def kl_diagonal(mu0, var0, mu1, var1):
    """``KL(N(mu0, diag var0) || N(mu1, diag var1))`` summed over the last axis.

    ``0.5 * sum_k [var0_k / var1_k + (mu1_k - mu0_k)^2 / var1_k - 1 + log var1_k - log var0_k]``
    (the closed form for Gaussians with diagonal covariances).  Arguments broadcast
    against each other (a 0-dim ``var`` is the same variance on every axis); the
    result has their broadcast shape without the last axis.
    """
    import torch

    if var0.dim() == 0 and var1.dim() == 0:  # isotropic, equal for all rows: fewer (..., d) temporaries
        d = max(mu0.shape[-1], mu1.shape[-1])
        const = d * (var0 / var1 - 1.0 + torch.log(var1) - torch.log(var0))
        return 0.5 * (((mu1 - mu0) ** 2).sum(-1) / var1 + const)
    return 0.5 * (var0 / var1 + (mu1 - mu0) ** 2 / var1 - 1.0 + torch.log(var1) - torch.log(var0)).sum(-1)


def symmetric_kl(mu0, var0, mu1, var1):
    """``KL(0 || 1) + KL(1 || 0)`` (Jeffreys divergence), the score of the evaluation re-rank."""
    return kl_diagonal(mu0, var0, mu1, var1) + kl_diagonal(mu1, var1, mu0, var0)


def relation_score(mu_h, var_h, mu_r, var_r, mu_t, var_t):
    """Relational score (eq. 1): ``f_rel(h, r, t) = -KL(N(mu_h - mu_t, S_h + S_t) || N(mu_r, S_r))``.

    The entity pair is represented by the distribution of ``h - t`` for
    independent ``h ~ N(mu_h, S_h)`` and ``t ~ N(mu_t, S_t)``, which is
    ``N(mu_h - mu_t, S_h + S_t)``: covariances of independent Gaussians add
    under subtraction, as in KG2E (He et al., 2015).  The paper prints
    ``S_h - S_t``, a typo: a difference of covariances is not a valid
    covariance (it can be zero or negative, and then the KL and its
    logarithms are undefined).  Higher means more plausible.
    """
    return -kl_diagonal(mu_h - mu_t, var_h + var_t, mu_r, var_r)


def modality_score(mu_e, var_e, mu_m, var_m):
    """Visual / numerical score (eqs. 3 and 6): ``f = -KL(N(mu_e, S_e) || N(mu_m, S_m))``.

    ``N(mu_e, S_e)`` is the entity's distribution in that modality's space,
    ``N(mu_m, S_m)`` the distribution of its image (``mu_i = tanh(M_1 i)``) or
    of one of its numerical attributes, with ``S_m = 0.5 I`` fixed.
    """
    return -kl_diagonal(mu_e, var_e, mu_m, var_m)


def modality_loss(score, mask=None):
    """Logistic loss of positive scores (eqs. 4 and 7): ``log(1 + exp(-f))``, averaged.

    The paper sums over the batch; the mean only rescales the gradient (and
    Adam is invariant to that scale).  ``mask`` (bool, the shape of ``score``)
    keeps the rows that have the modality; with nothing kept the loss is 0.
    """
    import torch.nn.functional as F

    loss = F.softplus(-score)
    if mask is None:
        return loss.mean()
    m = mask.to(loss.dtype)
    return (loss * m).sum() / m.sum().clamp_min(1.0)


def common_space_loss(common, modalities, masks):
    """Common-space loss (eq. 8): ``sum_m KL(e || e_m)`` over the modalities each entity has, averaged.

    Args:
        common: ``(mu, var)`` of the common-space distributions ``e``, ``(B, d)`` each.
        modalities: ``[(mu_m, var_m), ...]`` the entities' distributions in each modality space.
        masks: ``[(B,) bool, ...]`` which entities have each modality (None = all).

    Returns:
        ``()``: the mean over the batch of the per-entity sum.
    """
    mu, var = common
    total = mu.new_zeros(mu.shape[0])  # (B,)
    for (mu_m, var_m), mask in zip(modalities, masks):
        kl = kl_diagonal(mu, var, mu_m, var_m)  # (B,)
        total = total + (kl if mask is None else kl * mask.to(kl.dtype))
    return total.mean()


def alignment_loss(mu1, var1, mu2, var2):
    """Alignment loss (eq. 9): ``KL(e_1 || e_2)`` over train links ``(e_1, e_2)``, averaged."""
    return kl_diagonal(mu1, var1, mu2, var2).mean()
