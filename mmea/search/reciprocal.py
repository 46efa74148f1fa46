"""Reciprocal preference ranking: each side's preferences, summed (RInf's preference aggregation).

Zeng, Zhao, Li, Tang, Wang, "On entity alignment at scale", The VLDB Journal 31 (2022), decode an
alignment from both sides' preferences instead of the source's scores alone.  With ``s (n, m)`` the
run's scores (CSLS or cosine) between the query sources and the candidate targets, the preference of
source ``u`` for target ``v`` and of ``v`` for ``u`` are each score's gap to that side's best:

    p(u -> v) = s(u, v) - max_v' s(u, v')          p(v -> u) = s(u, v) - max_u' s(u', v)

and a pair is scored by their sum ``p(u -> v) + p(v -> u)``.  Within source ``u``'s row the first max
is a constant, so ``u``'s targets are ranked by

    key(u, v) = 2 s(u, v) - c(v),        c(v) = max_u' s(u', v)

a target that another source prefers more is pushed down.  This is still a ranking per source (Hits@k,
MRR are defined; several sources may share their best target), not a one-to-one assignment
(``test.hits@1_one_to_one`` is that).  On CSLS scores it is CSLS applied once more with a one-neighbour
target radius.  No weight is tuned: the sum is the published form.  The column maxima ``c`` read the
query sources' embeddings only, like the CSLS radii, never a label.

Measured (DBP15k zh_en, 30% seeds, relational GNN without names, seed 0): Hits@1 0.714 by CSLS, 0.757 by
this ranking of the CSLS scores, 0.783 by the one-to-one assignment.

Two blockwise passes over the ``(n, m)`` scores (column maxima, then the keys); nothing larger than one
block of rows is held.  In a run both come from passes it makes anyway: the search pass keeps the column maxima
(:attr:`mmea.search.onepass.OnePass.column_best`) and the one-to-one graph's pass feeds the keys
(:class:`ReciprocalRanks`).  Written here because no library ranks by these keys without the dense matrix.

**From candidate lists** (:func:`listed_reciprocal`, an approximate search at 1M entities, where two passes
over ``n m`` scores are out of reach): each source's top-``K`` list (the pass's own, by the run's score) is
re-ranked by the keys, and the targets outside it stay behind it, as the lists' own metrics rank them (a gold
target outside its list is not ranked: a miss).  ``c(v)`` is the best score among the sources in ``v``'s
reverse list and the sources that list ``v``: with exact lists the true column maximum, with approximate
ones a lower bound of it.  This is a re-ranking of the listed candidates, not the dense ranking above: its
numbers are labelled so (``ranks_from``).
"""

from __future__ import annotations

import numpy as np

from ..errors import MmeaInputError
from ..progress import progress_bar
from .csls import list_positions
from .knn import row_block_size

__all__ = ["column_best", "reciprocal_ranks", "ReciprocalRanks", "reciprocal_best", "listed_column_best",
           "listed_reciprocal", "listed_reciprocal_ranks", "RECIPROCAL_MAX_SCORES"]

#: ``search.reciprocal = "auto"`` ranks by the reciprocal keys up to this many ``(n, m)`` scores (two passes)
RECIPROCAL_MAX_SCORES = 2_000_000_000


def _blocks(sim, rows: np.ndarray, progress: bool, desc: str):
    """``(start, stop, scores (b, m) torch)`` over blocks of ``rows`` (positions into ``sim``'s source rows)."""
    bs = row_block_size(sim.m, getattr(sim, "block_size", None))
    with progress_bar(total=len(rows), progress=progress, desc=desc, unit="row", leave=False) as bar:
        for a in range(0, len(rows), bs):
            e = min(a + bs, len(rows))
            yield a, e, sim.rows(rows[a:e])
            bar.update(e - a)


def column_best(sim, progress: bool = False) -> np.ndarray:
    """``c (m,)`` float32: each target's best score over ``sim``'s source rows (one blockwise pass)."""
    import torch

    best = None
    for _, _, S in _blocks(sim, np.arange(sim.n), progress, "column maxima"):
        top = S.max(dim=0).values  # (m,)
        best = top if best is None else torch.maximum(best, top)
    if best is None:
        return np.full(sim.m, -np.inf, np.float32)
    return best.cpu().numpy().astype(np.float32)


def _keys(S, col):
    """``2 s(u, v) - c(v)`` for a block ``S (b, m)`` and the column maxima ``col (1, m)``."""
    return 2.0 * S - col


def _checked_queries(gold, rows, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """``(gold (q,), rows (q,))`` int64, checked against ``n`` source rows and ``m`` targets."""
    gold = np.asarray(gold, dtype=np.int64).reshape(-1)
    rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
    if len(gold) != len(rows):
        raise MmeaInputError(f"{len(gold)} gold targets for {len(rows)} queries")
    if len(rows) and (rows.min() < 0 or rows.max() >= n):
        raise MmeaInputError(f"query source row out of range [0, {n})")
    if len(gold) and (gold.min() < 0 or gold.max() >= m):
        raise MmeaInputError(f"gold target index out of range [0, {m})")
    return gold, rows


def _gold_ranks(S, col, gold: np.ndarray) -> np.ndarray:
    """``(b,)`` rank of each row's ``gold`` target among the keys of the score block ``S (b, m)`` (tie rule of
    :func:`reciprocal_ranks`)."""
    import torch

    K = _keys(S, col)  # (b, m)
    g = torch.from_numpy(gold).to(S.device)[:, None]  # (b, 1)
    gv = torch.gather(K, 1, g)  # (b, 1)
    cols = torch.arange(K.shape[1], device=S.device)[None, :]  # (1, m)
    return (1 + (K > gv).sum(1) + ((K == gv) & (cols < g)).sum(1)).cpu().numpy()


def reciprocal_ranks(sim, gold: np.ndarray, rows: np.ndarray | None = None, *, progress: bool = False,
                     col: np.ndarray | None = None) -> np.ndarray:
    """``ranks (q,)`` int64 of each query's gold target (an index into ``sim``'s targets) by the keys.

    ``rows (q,)``: each query's source row in ``sim`` (default: row ``i`` for query ``i``; a source
    linked twice appears twice).  The column maxima are over every source row of ``sim``; ``col (m,)``: those
    maxima when an earlier pass kept them (:attr:`mmea.search.onepass.OnePass.column_best`), which saves the
    first pass.  The tie rule of :func:`mmea.search.csls.rank_of_targets`: ``1 + #{key > gold key} +
    #{key == gold key, lower target index}``.
    """
    import torch

    gold, rows = _checked_queries(gold, rows, sim.n, sim.m)
    col = column_best(sim, progress) if col is None else np.asarray(col, np.float32).reshape(-1)
    col_t = torch.from_numpy(col).to(sim.device)[None, :]  # (1, m)
    ranks = np.empty(len(rows), np.int64)
    with torch.no_grad():
        for a, e, S in _blocks(sim, rows, progress, "reciprocal ranks"):
            ranks[a:e] = _gold_ranks(S, col_t, gold[a:e])
    return ranks


class ReciprocalRanks:
    """:func:`reciprocal_ranks` fed by another blockwise pass over the same scores (the one-to-one graph's,
    :func:`mmea.search.matching.two_way_topk`), so the ranking costs no pass of its own.

    ``col (m,)``: the column maxima (kept by the search pass); ``gold (q,)``, ``rows (q,)`` as in
    :func:`reciprocal_ranks`.  Call it with each block ``(a, e, S)``: ``S (e - a, m)`` the scores of source rows
    ``a:e``; once every source row was fed, :attr:`ranks` holds the ranks (``-1`` where a row was never fed:
    :attr:`done` is False).
    """

    def __init__(self, col: np.ndarray, gold: np.ndarray, rows: np.ndarray, n: int):
        col = np.asarray(col, np.float32).reshape(-1)
        self.gold, self.rows = _checked_queries(gold, rows, n, len(col))
        self.col = col
        self._col_t = None
        self._order = np.argsort(self.rows, kind="stable")  # (q,) queries by source row
        self._sorted = self.rows[self._order]
        self.ranks = np.full(len(self.rows), -1, np.int64)

    @property
    def done(self) -> bool:
        return bool((self.ranks > 0).all())

    def __call__(self, a: int, e: int, S) -> None:
        import torch

        lo, hi = np.searchsorted(self._sorted, [a, e])
        if lo == hi:
            return
        if self._col_t is None:
            self._col_t = torch.from_numpy(self.col).to(S.device)[None, :]  # (1, m)
        q = self._order[lo:hi]  # the queries whose source row is in the block
        rr = torch.from_numpy(self.rows[q] - a).to(S.device)
        self.ranks[q] = _gold_ranks(S.index_select(0, rr), self._col_t, self.gold[q])


def reciprocal_best(sim, *, progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(best target (n,), its key (n,), its score s (n,))`` of every source row by the keys (ties: the
    lower target index, as ``torch.max``)."""
    import torch

    col = torch.from_numpy(column_best(sim, progress)).to(sim.device)[None, :]  # (1, m)
    ids = np.empty(sim.n, np.int64)
    keys = np.empty(sim.n, np.float32)
    scores = np.empty(sim.n, np.float32)
    with torch.no_grad():
        for a, e, S in _blocks(sim, np.arange(sim.n), progress, "reciprocal best"):
            k, i = _keys(S, col).max(dim=1)  # (b,), (b,)
            ids[a:e], keys[a:e] = i.cpu().numpy(), k.cpu().numpy()
            scores[a:e] = torch.gather(S, 1, i[:, None])[:, 0].cpu().numpy()
    return ids, keys, scores


# -- from the candidate lists of a search pass --------------------------------------------------------

def _listed(lists) -> tuple[np.ndarray, np.ndarray]:
    """``(ids (q, K), scores (q, K))`` of a :class:`~mmea.search.csls.SearchResult` list by its own method;
    unfilled slots (id ``-1``) score ``-inf``."""
    ids = np.asarray(lists.ids, np.int64)
    return ids, np.where(ids >= 0, np.asarray(lists.scores, np.float32), np.float32(-np.inf))


def listed_column_best(forward, reverse, m: int) -> np.ndarray:
    """``c (m,)`` float32: each target's best score among the sources of its reverse list and the sources that
    list it (``forward``: ``(p, K)`` lists of targets ``0..m-1``; ``reverse``: ``(m, K')`` lists of sources)."""
    f_ids, f_s = _listed(forward)  # (p, K)
    b_ids, b_s = _listed(reverse)  # (m, K')
    if len(b_ids) != m:
        raise MmeaInputError(f"the reverse lists have {len(b_ids)} rows for {m} targets")
    c = b_s.max(1) if b_s.shape[1] else np.full(m, -np.inf, np.float32)  # (m,)
    ok = f_ids >= 0
    np.maximum.at(c, f_ids[ok], f_s[ok])
    return c.astype(np.float32)


def listed_reciprocal(forward, reverse, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each source's list re-ranked by the keys: ``(ids (p, K), keys (p, K), scores (p, K))``, keys descending,
    ties by the lower target index, unfilled slots (id ``-1``, key ``-inf``) last (module doc)."""
    ids, s = _listed(forward)  # (p, K)
    c = listed_column_best(forward, reverse, m)  # (m,)
    keys = np.where(ids >= 0, 2.0 * s - c[np.maximum(ids, 0)], -np.inf).astype(np.float32)  # (p, K)
    order = np.lexsort((np.where(ids >= 0, ids, np.iinfo(np.int64).max), -keys), axis=-1)  # (p, K)
    take = lambda a: np.take_along_axis(a, order, axis=1)  # noqa: E731
    return take(ids), take(keys), take(s)


def listed_reciprocal_ranks(forward, reverse, m: int, rows: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """``(q,)`` 1-based position of ``gold[i]`` in source ``rows[i]``'s re-ranked list; ``-1`` when it is not
    listed (its rank is above ``K`` in this re-ranking)."""
    rows, gold = np.asarray(rows, np.int64).reshape(-1), np.asarray(gold, np.int64).reshape(-1)
    if len(rows) != len(gold):
        raise MmeaInputError(f"{len(gold)} gold targets for {len(rows)} queries")
    ids, _, _ = listed_reciprocal(forward, reverse, m)
    if len(rows) and (rows.min() < 0 or rows.max() >= len(ids)):
        raise MmeaInputError(f"query source row out of range [0, {len(ids)})")
    return list_positions(ids, rows, gold)

