"""Closed-form similarities between diagonal Gaussians (pure torch, no state).

For ``p = N(mu_1, diag v_1)``, ``q = N(mu_2, diag v_2)`` in ``d`` dimensions (sums over ``d``):

- KL divergence: ``KL(p || q) = 1/2 sum [log(v_2 / v_1) + (v_1 + (mu_1 - mu_2)^2) / v_2 - 1]``;
- expected likelihood kernel (Jebara, Kondor & Howard, "Probability Product Kernels", JMLR 2004;
  Vilnis & McCallum, "Word Representations via Gaussian Embedding", ICLR 2015):
  ``log int p(x) q(x) dx = log N(mu_1; mu_2, v_1 + v_2)
  = -1/2 sum [log(2 pi (v_1 + v_2)) + (mu_1 - mu_2)^2 / (v_1 + v_2)]``;
- Bhattacharyya distance: with ``v = (v_1 + v_2) / 2``,
  ``D_B = 1/8 sum (mu_1 - mu_2)^2 / v + 1/2 sum [log v - 1/2 (log v_1 + log v_2)]``;
- squared 2-Wasserstein distance (diagonal covariances commute):
  ``W_2^2 = ||mu_1 - mu_2||^2 + ||sqrt(v_1) - sqrt(v_2)||^2``.

Every function broadcasts over leading dimensions: ``(B, 1, d)`` against ``(1, K, d)`` gives ``(B, K)``.
The *pairwise* forms (``*_pairwise``) take ``(B, d)`` and ``(K, d)`` and expand the squared terms as matrix
products, so no ``(B, K, d)`` tensor is built.  Scores are oriented "higher is more similar".
"""

from __future__ import annotations

import math

import torch

__all__ = ["kl_diagonal", "expected_likelihood", "bhattacharyya", "wasserstein2", "SCORES", "pairwise_score"]

SCORES = ("csls", "expected-likelihood", "bhattacharyya", "wasserstein")


def kl_diagonal(mu1, var1, mu2, var2):
    """``KL(N(mu1, v1) || N(mu2, v2))`` summed over the last dimension."""
    return 0.5 * (torch.log(var2 / var1) + (var1 + (mu1 - mu2) ** 2) / var2 - 1.0).sum(-1)


def expected_likelihood(mu1, var1, mu2, var2):
    """``log int N(x; mu1, v1) N(x; mu2, v2) dx = log N(mu1; mu2, v1 + v2)`` (higher: more similar)."""
    v = var1 + var2
    return -0.5 * (torch.log(2.0 * math.pi * v) + (mu1 - mu2) ** 2 / v).sum(-1)


def bhattacharyya(mu1, var1, mu2, var2):
    """Bhattacharyya distance ``D_B`` of two diagonal Gaussians (0 for equal ones)."""
    v = 0.5 * (var1 + var2)
    return (0.125 * (mu1 - mu2) ** 2 / v + 0.5 * (torch.log(v) - 0.5 * (torch.log(var1) + torch.log(var2)))).sum(-1)


def wasserstein2(mu1, var1, mu2, var2):
    """Squared 2-Wasserstein distance ``||mu1 - mu2||^2 + ||sqrt v1 - sqrt v2||^2``."""
    return ((mu1 - mu2) ** 2 + (var1.sqrt() - var2.sqrt()) ** 2).sum(-1)


def _sq(a, b):
    """``(B, K)`` sums ``sum_d (a_bd - b_kd)^2`` of ``a (B, d)``, ``b (K, d)`` as matrix products."""
    return ((a * a).sum(-1)[:, None] + (b * b).sum(-1)[None, :] - 2.0 * a @ b.T).clamp_min(0.0)


def pairwise_score(name: str, mu1, var1, mu2, var2) -> torch.Tensor:
    """``(B, K)`` similarity (higher = closer) of every row of ``(mu1, var1) (B, d)`` to every row of ``(K, d)``.

    ``expected-likelihood`` and ``bhattacharyya`` have a per-pair denominator ``v1 + v2`` and are computed
    over a ``(B, K, d)`` broadcast (callers pass blocks); ``wasserstein`` expands into matrix products.
    """
    if name == "wasserstein":
        return -(_sq(mu1, mu2) + _sq(var1.sqrt(), var2.sqrt()))
    a, va, b, vb = mu1[:, None, :], var1[:, None, :], mu2[None, :, :], var2[None, :, :]
    if name == "expected-likelihood":
        return expected_likelihood(a, va, b, vb)
    if name == "bhattacharyya":
        return -bhattacharyya(a, va, b, vb)
    raise ValueError(f"unknown distribution score {name!r}; expected one of {', '.join(SCORES[1:])}")
