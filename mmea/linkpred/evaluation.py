"""Filtered link-prediction evaluation: MR, MRR, Hits@1/3/10 over head and tail prediction.

The standard filtered protocol (Bordes et al., 2013): for each test triple
``(h, r, t)`` the model scores every entity as the tail of ``(h, r, ?)`` and
as the head of ``(?, r, t)``; every *other* entity known to complete the
query in train, valid or test is removed from the ranking ("filtered"); the
gold entity's rank is then counted among the remaining entities.

**Ties.**  The rank is the *realistic* one, the mean over random orderings
of the tied candidates: ``rank = 1 + #{score > s} + #{score == s} / 2``
(others only), between the optimistic ``1 + #{>}`` and the pessimistic
``1 + #{>} + #{==}``.  A model that scores everything equally thus gets the
random-guess rank ``(n + 1) / 2`` instead of a perfect 1 (Sun et al., 2020,
"A Re-evaluation of Knowledge Graph Completion Methods", ACL).

Everything is vectorised: a batch of queries is one ``(B, E)`` score matrix
(``model.score_all_tails`` / ``score_all_heads``); filtering sets the known
answers (from a CSR of ``(h, r) -> tails`` and ``(r, t) -> heads``) to ``-inf``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..sampling import PartnerIndex

__all__ = ["FilterIndex", "rank_against_scores", "filtered_ranks", "metrics_from_ranks", "filtered_metrics",
           "TIE_RULES"]

TIE_RULES = ("realistic", "optimistic", "pessimistic")


class FilterIndex(PartnerIndex):
    """Known answers of every ``(h, r, ?)`` and ``(?, r, t)`` query, from all known triples (train + valid + test).

    :meth:`known_tails` / :meth:`known_heads` give flat ``(query position, entity)`` pairs.
    """


def rank_against_scores(scores, gold, filter_rows=None, filter_cols=None, tie: str = "realistic"):
    """Filtered rank of ``gold (B,)`` in each row of ``scores (B, E)`` (torch tensors; ``scores`` is modified).

    ``filter_rows`` / ``filter_cols`` name the known answers to remove (the
    gold itself may be among them: it is always kept).  Returns float64 ``(B,)``.
    """
    import torch

    if tie not in TIE_RULES:
        from ..errors import MmeaInputError

        raise MmeaInputError(f"tie rule must be one of {', '.join(TIE_RULES)}, got {tie!r}")
    rows = torch.arange(scores.shape[0], device=scores.device)
    gold_score = scores[rows, gold].clone()  # (B,)
    if filter_rows is not None and len(filter_rows):
        scores[filter_rows, filter_cols] = float("-inf")
    scores[rows, gold] = float("-inf")  # exclude the gold from the counts below
    greater = (scores > gold_score[:, None]).sum(1).double()  # (B,)
    if tie == "optimistic":
        return (1 + greater).cpu().numpy()
    equal = (scores == gold_score[:, None]).sum(1).double()
    if tie == "pessimistic":
        return (1 + greater + equal).cpu().numpy()
    return (1 + greater + equal / 2).cpu().numpy()


def filtered_ranks(score_all_tails: Callable, score_all_heads: Callable, triples: np.ndarray, filters: FilterIndex,
                   batch_size: int = 256, tie: str = "realistic", device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """``(head_ranks (N,), tail_ranks (N,))`` of ``triples`` under the filtered protocol.

    ``score_all_tails(h, r) -> (B, E)`` and ``score_all_heads(r, t) -> (B, E)``
    take int64 torch tensors (on ``device``) and return score tensors.
    """
    import torch

    triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
    head_ranks = np.empty(len(triples))
    tail_ranks = np.empty(len(triples))
    with torch.no_grad():
        for i in range(0, len(triples), batch_size):
            b = triples[i:i + batch_size]
            h, r, t = (torch.as_tensor(b[:, j], device=device) for j in range(3))
            fr, fc = filters.known_tails(b[:, 0], b[:, 1])
            s = score_all_tails(h, r).float()  # (B, E)
            tail_ranks[i:i + len(b)] = rank_against_scores(s, t, torch.as_tensor(fr, device=device),
                                                           torch.as_tensor(fc, device=device), tie)
            fr, fc = filters.known_heads(b[:, 1], b[:, 2])
            s = score_all_heads(r, t).float()  # (B, E)
            head_ranks[i:i + len(b)] = rank_against_scores(s, h, torch.as_tensor(fr, device=device),
                                                           torch.as_tensor(fc, device=device), tie)
    return head_ranks, tail_ranks


def metrics_from_ranks(ranks: np.ndarray, ks: tuple[int, ...] = (1, 3, 10)) -> dict:
    """``{"mr", "mrr", "hits@k"...}`` of 1-based ranks (Hits@k counts ``rank <= k``)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if not len(ranks):
        return {"mr": float("nan"), "mrr": float("nan"), **{f"hits@{k}": float("nan") for k in ks}, "count": 0}
    out = {"mr": float(ranks.mean()), "mrr": float((1.0 / ranks).mean())}
    out.update({f"hits@{k}": float((ranks <= k).mean()) for k in ks})
    out["count"] = int(len(ranks))
    return out


def filtered_metrics(model, triples: np.ndarray, filters: FilterIndex, batch_size: int = 256,
                     tie: str = "realistic", device: str = "cpu") -> dict:
    """Filtered MR, MRR, Hits@1/3/10 over head and tail prediction (both directions pooled).

    Returns the pooled figures at the top level plus ``"head"`` and ``"tail"``
    breakdowns and the tie rule.
    """
    hr, tr = filtered_ranks(model.score_all_tails, model.score_all_heads, triples, filters, batch_size, tie, device)
    out = metrics_from_ranks(np.concatenate([hr, tr]))
    out["head"] = metrics_from_ranks(hr)
    out["tail"] = metrics_from_ranks(tr)
    out["tie"] = tie
    return out
