"""Ranking by similarities between diagonal Gaussians, blockwise (:mod:`mmea.search.distributions_math`).

``csls`` over the means stays the default everywhere; these are options (``model.scores`` of
``gaussian-strong``).  A block of ``block`` query rows is scored against every candidate, so memory is
``block x K`` (and ``block x K x d`` for the scores with a per-pair denominator), never ``N x M``.
"""

from __future__ import annotations

import numpy as np

from ..errors import MmeaInputError
from .distributions_math import SCORES, pairwise_score

__all__ = ["distribution_ranks", "SCORES"]


def distribution_ranks(name: str, mu_s, var_s, mu_t, var_t, links, *, candidates: str = "test",
                       block: int = 64) -> np.ndarray:
    """1-based rank of each link's target among the candidates under score ``name`` (ties count against).

    ``mu_*, var_* (N, d) / (M, d)``; ``links (L, 2)`` source / target rows; ``candidates``: ``test`` (the
    links' targets) or ``all`` (every target row).
    """
    import torch

    if name not in SCORES[1:]:
        raise MmeaInputError(f"unknown distribution score {name!r}; expected one of {', '.join(SCORES[1:])}")
    links = np.asarray(links, dtype=np.int64).reshape(-1, 2)
    cand = np.unique(links[:, 1]) if candidates == "test" else np.arange(len(mu_t))
    t = lambda x: torch.as_tensor(np.asarray(x, np.float32))  # noqa: E731
    mt, vt = t(mu_t)[cand], t(var_t)[cand]  # (K, d)
    gold = np.searchsorted(cand, links[:, 1])  # (L,) positions in cand
    ranks = np.empty(len(links), dtype=np.int64)
    ms, vs = t(mu_s), t(var_s)
    with torch.no_grad():
        for i in range(0, len(links), block):
            rows = torch.as_tensor(links[i:i + block, 0])
            s = pairwise_score(name, ms[rows], vs[rows], mt, vt)  # (b, K)
            g = s[torch.arange(len(rows)), torch.as_tensor(gold[i:i + block])][:, None]  # (b, 1)
            ranks[i:i + block] = (1 + (s > g).sum(1)).numpy()
    return ranks
