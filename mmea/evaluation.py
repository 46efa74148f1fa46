"""Ranking and alignment metrics for entity alignment.

Ranking metrics (Bordes et al., "Translating Embeddings for Modeling
Multi-relational Data", NeurIPS 2013; the usual EA protocol, e.g. Sun et al.,
"A Benchmarking Study of Embedding-based Entity Alignment for Knowledge
Graphs", VLDB 2020) from the 1-based rank of each gold target:

    hits@k = |{i : rank_i <= k}| / n        MR = mean(rank_i)        MRR = mean(1 / rank_i)

:func:`evaluate_embeddings` ranks every test link in both directions
(src->tgt, tgt->src) by plain cosine and by CSLS (see :mod:`mmea.search.csls`)
with ties broken by the lower candidate index, in the blockwise passes of
:func:`mmea.search.onepass.search_once` (an ``mmea align`` run takes its ranks,
its top-k and its calibration scores from the same passes, and its metrics
from :func:`metrics_from_ranks`).  :func:`alignment_metrics`
scores a final one-to-one alignment (a matching) against gold links.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from .errors import MmeaInputError

__all__ = [
    "ranking_metrics",
    "evaluate_embeddings",
    "evaluation_rows",
    "metrics_from_ranks",
    "alignment_metrics",
    "DIRECTIONS",
    "METHODS",
    "CANDIDATE_SETS",
]

DIRECTIONS = ("src->tgt", "tgt->src")
METHODS = ("cos", "csls")
CANDIDATE_SETS = ("test", "all")


def ranking_metrics(ranks: Iterable[int], ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """``{"hits@k" (fraction), ..., "mr", "mrr"}`` from 1-based ranks.

    >>> ranking_metrics([1, 2, 4, 20], ks=(1, 5))
    {'hits@1': 0.25, 'hits@5': 0.75, 'mr': 6.75, 'mrr': 0.45}
    """
    r = np.asarray(list(ranks) if not isinstance(ranks, np.ndarray) else ranks, dtype=np.float64).reshape(-1)
    if len(r) == 0:
        raise MmeaInputError("no ranks to evaluate (empty test set?)")
    if (r < 1).any() or not np.isfinite(r).all():
        raise MmeaInputError("ranks must be finite and >= 1")
    out = {f"hits@{k}": float((r <= k).mean()) for k in ks}
    out["mr"] = float(r.mean())
    out["mrr"] = float((1.0 / r).mean())
    return out


def _parse_primary(primary: Any) -> tuple[str, str]:
    if isinstance(primary, str):
        parts = primary.split("/")
        if len(parts) != 2:
            raise MmeaInputError(f"primary metric must look like 'src->tgt/csls', got {primary!r}")
        primary = parts
    direction, method = primary
    if direction not in DIRECTIONS or method not in METHODS:
        raise MmeaInputError(f"primary metric {direction}/{method} unknown; directions {DIRECTIONS}, "
                             f"methods {METHODS}")
    return direction, method


def evaluation_rows(links: Any, num_src: int, num_tgt: int, candidates: str = "test"):
    """The candidate sets of an evaluation: ``(src_rows (N',), tgt_rows (M',), q_src (n,), q_tgt (n,))``.

    ``"test"``: the links' unique sources / targets; ``"all"``: every entity.  ``q_src`` / ``q_tgt``
    are each link's positions in them.  Raises :class:`MmeaInputError` on an unknown set, no
    links or ids out of range.
    """
    if candidates not in CANDIDATE_SETS:
        raise MmeaInputError(f"unknown candidate set {candidates!r}; valid choices: {', '.join(CANDIDATE_SETS)}")
    links = np.asarray(links, dtype=np.int64).reshape(-1, 2)
    if len(links) == 0:
        raise MmeaInputError("no test links to evaluate")
    if links[:, 0].min() < 0 or links[:, 0].max() >= num_src or links[:, 1].min() < 0 \
            or links[:, 1].max() >= num_tgt:
        raise MmeaInputError(f"test link ids out of range for {num_src} source / {num_tgt} target embeddings")
    if candidates == "test":
        src_rows, q_src = np.unique(links[:, 0], return_inverse=True)  # candidate sources, link -> position
        tgt_rows, q_tgt = np.unique(links[:, 1], return_inverse=True)
        return src_rows, tgt_rows, q_src.reshape(-1), q_tgt.reshape(-1)
    return np.arange(num_src), np.arange(num_tgt), links[:, 0], links[:, 1]


def metrics_from_ranks(ranks: dict, *, candidates: str, num_candidates: dict, csls_k: int,
                       primary: Any = ("src->tgt", "csls"), ks: Sequence[int] = (1, 5, 10),
                       return_ranks: bool = False) -> dict:
    """The evaluation dict of :func:`evaluate_embeddings` from ``ranks[direction][method]`` (one per link)."""
    direction, method = _parse_primary(primary)
    n = len(ranks[direction][method])
    by_method = {f"{d}/{mth}": {**ranking_metrics(ranks[d][mth], ks), "n": int(n)}
                 for d in DIRECTIONS for mth in METHODS}
    key = f"{direction}/{method}"
    out = {
        "test": {**by_method[key], "direction": direction, "method": method},
        "test_by_method": by_method,
        "primary": key,
        "candidates": candidates,
        "num_candidates": num_candidates,
        "num_links": int(n),
        "csls_k": int(csls_k),
    }
    if return_ranks:
        out["ranks"] = np.asarray(ranks[direction][method], dtype=np.int64)
    return out


def evaluate_embeddings(src_emb: Any, tgt_emb: Any, links: Any, *, candidates: str = "test", csls_k: int = 10,
                        primary: Any = ("src->tgt", "csls"), ks: Sequence[int] = (1, 5, 10),
                        device: str = "cpu", block_size: int | None = None, return_ranks: bool = False,
                        progress: bool = False) -> dict:
    """Hits@k / MR / MRR of ``links`` in both directions, by cosine and by CSLS.

    Args:
        src_emb: ``(N, d)`` embeddings of all source entities (row = internal id).
        tgt_emb: ``(M, d)`` embeddings of all target entities.
        links: ``(n, 2)`` int64 gold test links ``(source id, target id)``.
        candidates: ``"test"`` ranks each source against the test links' targets
            (the usual protocol; sources for tgt->src); ``"all"`` against every
            target entity (every source entity for tgt->src).
        csls_k: neighbourhood size of the CSLS radii.  The radii are computed
            over the candidate sets only: with ``"test"``, r_T over the test
            targets and r_S over the test sources; with ``"all"``, over all
            entities.  Gold labels are never used.
        primary: ``(direction, method)`` or ``"src->tgt/csls"`` reported as ``"test"``.
        return_ranks: also return ``"ranks"``: the ``(n,)`` int64 1-based rank of each
            link's gold target in the primary ranking, in the order of ``links``
            (exact: every gold target is among the candidates).
        progress: a bar over the blockwise pass when stderr is a terminal.

    The ranks of both directions and both methods come from the one blockwise product pass of
    :func:`mmea.search.onepass.search_once` (each cosine block computed once).

    Returns:
        ``{"test": {metrics, direction, method}, "test_by_method": {"src->tgt/cos": ..., "src->tgt/csls": ...,
        "tgt->src/cos": ..., "tgt->src/csls": ...}, "primary": "src->tgt/csls", "candidates": "test",
        "num_candidates": {"src->tgt": M', "tgt->src": N'}, "num_links": n, "csls_k": k}``;
        each metrics dict has ``hits@k`` (fractions), ``mr``, ``mrr`` and ``n``.
    """
    from .search.knn import as_float32
    from .search.onepass import search_once

    _parse_primary(primary)
    src, tgt = as_float32(src_emb, "source embeddings"), as_float32(tgt_emb, "target embeddings")
    src_rows, tgt_rows, q_src, q_tgt = evaluation_rows(links, len(src), len(tgt), candidates)
    found = search_once(src, tgt, src_rows[q_src], tgt_rows, gold=q_tgt, eval_src=src_rows, topk=0,
                        reverse=False, csls_k=csls_k, device=device, block_size=block_size, progress=progress,
                        desc="evaluate")
    return metrics_from_ranks(found.ranks, candidates=candidates, csls_k=csls_k, primary=primary, ks=ks,
                              num_candidates={"src->tgt": int(len(tgt_rows)), "tgt->src": int(len(src_rows))},
                              return_ranks=return_ranks)


def alignment_metrics(pred: Any, gold: Any) -> dict[str, float]:
    """Scores of predicted pairs against gold pairs (ids of any hashable kind).

    ``pred``: ``(p, 2)`` predicted (source, target) pairs, at most one per
    source is expected (the top prediction / the matched pair); ``gold``:
    ``(g, 2)`` gold pairs.  Only predictions whose source has a gold link can
    be judged:

    * ``hits@1`` = sources whose prediction is a gold target / gold sources
    * ``precision`` = correct / judged predictions; ``recall`` = correct / gold links
    * ``f1`` = harmonic mean; ``coverage`` = gold sources with a prediction / gold sources
    """
    pred_pairs = [tuple(p) for p in (pred.tolist() if hasattr(pred, "tolist") else pred)]
    gold_pairs = [tuple(p) for p in (gold.tolist() if hasattr(gold, "tolist") else gold)]
    if not gold_pairs:
        raise MmeaInputError("no gold links to evaluate against")
    gold_set = set(gold_pairs)
    gold_src = {s for s, _ in gold_pairs}
    judged = [(s, t) for s, t in pred_pairs if s in gold_src]
    correct = sum(1 for p in set(judged) if p in gold_set)
    predicted_src = {s for s, _ in judged}
    correct_src = {s for s, t in set(judged) if (s, t) in gold_set}
    precision = correct / len(judged) if judged else 0.0
    recall = correct / len(gold_set)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "hits@1": len(correct_src) / len(gold_src),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "coverage": len(predicted_src) / len(gold_src),
        "num_predictions": len(pred_pairs),
        "num_judged": len(judged),
        "num_gold": len(gold_set),
    }
