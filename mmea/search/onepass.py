"""Search once: the same two blockwise passes give a run's ranks, its candidates and its validation scores.

An ``mmea align`` run needs, from the same embeddings,

* the rank of each test link's gold target (the metrics, cosine and CSLS, src->tgt and tgt->src),
* each query source's top-k targets (``alignment.csv``, the matchers) and each candidate
  target's best query source (the ``mutual`` column),
* the top-2 targets of each validation source (the calibration, :mod:`mmea.calibration`).

Computed one after the other, each of these recomputes the CSLS radii and the
``(n, m)`` cosines (six products of the embedding matrices).  :func:`search_once`
computes them in two blockwise passes over the same blocks, and never holds more
than a few ``(block, m)`` score blocks:

1. **radii**: the eval sources ``P`` (the test sources, or every source with
   ``candidates="all"``) x the candidate targets: ``r_src`` of every ``P`` row,
   ``r_tgt`` of every candidate over ``P`` (the metrics' radii) and, when the query
   rows are not ``P`` itself (duplicates, ``candidates="all"``), over the query rows
   with their multiplicity, plus the validation targets that are not candidates
   (the search's radii, as :class:`~mmea.search.matching.Similarity` computes them);
   and the cosine of every gold pair.
2. **everything else**, block by block of ``P`` rows: the src->tgt gold ranks (rows),
   the tgt->src gold ranks (columns: the gold score of each target is known from
   pass 1, so each block adds its counts), each query row's top-k, each candidate's
   best query row (a running column maximum); then the validation sources against
   the candidates + their own targets: their top-2.

The passes visit the query rows first, in the order of their first position among
the rows, so the first maximum of a column is the tie winner of
``csls_topk(tgt, src, 1)``.  Every score is the float32 expression of
:func:`~mmea.search.csls.csls_from_cos` on the same cosines (``(2 cos - r_query) -
r_candidate``, also for the tgt->src direction), and ranks and top-k follow the tie
rule of :mod:`mmea.search.csls` (score desc, lower index first), so the result
equals :func:`~mmea.evaluation.evaluate_embeddings`, :func:`~mmea.search.matching.align`
and :func:`~mmea.calibration.score_valid_sources` run separately
(tests/test_onepass.py).  The embeddings stay float32 at their own dimension.
The passes are exact torch passes; FAISS indexes keep the separate search.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import MmeaInputError
from ..progress import progress_bar
from .csls import METHODS, SearchResult, _mean_topk_t, _merge_column_topk, csls_from_cos
from .knn import BLOCK_ELEMENTS, _check_device, l2_normalize, row_block_size, topk_rows

if TYPE_CHECKING:
    from .matching import Alignment

__all__ = ["OnePass", "search_once", "align_once"]


@dataclass
class OnePass:
    """What :func:`search_once` found.

    Attributes:
        ranks: ``{"src->tgt": {"cos": (n,), "csls": (n,)}, "tgt->src": {...}}`` int64 1-based
            gold ranks, one per query row (= test link), or ``None`` without gold.
        result: the query rows' top-k (``ids`` index ``cand``), ranked by the search
            radii, with ``reverse_best`` set when asked; ``None`` for ``topk=0``.
        r_src: ``(p,)`` radii of the eval sources over the candidates; r_tgt: ``(m,)`` of the
            candidates over the eval sources (the metrics' radii).
        valid_ids: ``(v, <=2)`` positions into ``cand + extra`` of each validation source's
            best targets; valid_scores: their scores (``None`` without validation sources).
        num_valid_candidates: ``len(cand) + len(extra)``.
    """

    ranks: dict | None = None
    result: SearchResult | None = None
    r_src: np.ndarray | None = None
    r_tgt: np.ndarray | None = None
    valid_ids: np.ndarray | None = None
    valid_scores: np.ndarray | None = None
    num_valid_candidates: int = 0
    stats: dict = field(default_factory=dict)


def _ids(x: Any, n: int, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.int64).reshape(-1)
    if len(x) and (x.min() < 0 or x.max() >= n):
        raise MmeaInputError(f"{what} id out of range for {n} embeddings")
    return x


def _mean_top(S, k: int):
    """``(b,)`` mean of each row's ``k`` largest values (the CSLS radius of a row)."""
    import torch

    return _mean_topk_t(torch.topk(S, k, dim=1).values)


def _csls_into(out, S, first, second):
    """``csls_from_cos(S, first, second)`` = ``(2 S - first) - second`` written into ``out`` (no new block)."""
    import torch

    out = torch.mul(S, 2, out=out)
    return out.sub_(first).sub_(second)


def _gt_eq(Z, g, dim: int, work=None):
    """``(#{Z > g}, #{Z == g})`` along ``dim`` (int64), from sums of ``sign(Z - g)`` and its square.

    ``sign(fl(z - g))`` is the sign of ``z - g`` exactly (a float difference is 0 only for equal
    values), and the float sums of +-1 are exact integers; far faster than reducing booleans.
    """
    import torch

    n = Z.shape[dim]
    acc = torch.float32 if n < 2**24 else torch.float64  # sums of +-1 stay exact integers
    W = torch.sub(Z, g, out=work) if work is not None else Z - g
    W.sign_()
    s1 = W.sum(dim, dtype=acc)  # #gt - #lt
    W.abs_()
    s2 = W.sum(dim, dtype=acc)  # #gt + #lt
    return ((s1 + s2) / 2).long(), n - s2.long()


def _row_ranks(X, g, colidx, work):
    """1-based rank of column ``g (b, 1)`` in each row of ``X (b, m)``: ``1 + #{x > x_g} + #{x = x_g before g}``."""
    gv = X.gather(1, g)  # (b, 1)
    gt, eq = _gt_eq(X, gv, 1, work)
    r = 1 + gt
    tied = (eq > 1).nonzero().flatten()  # rows where another column ties the gold: count those before it
    if len(tied):
        r[tied] += ((X[tied] == gv[tied]) & (colidx[None, :] < g[tied])).sum(1)
    return r


class _Links:
    """The test links as positions: ``q_it (n,)`` the iteration position of each link's source,
    ``q_eval (n,)`` its position among the eval sources (ties), ``q_tgt (n,)`` its target's column;
    grouped by source block (:meth:`rows_in`) and by target column (``col_link``)."""

    def __init__(self, q_it, q_eval, q_tgt, p: int, m: int, bs: int):
        import torch

        self.q_it, self.q_eval, self.q_tgt, self.n = q_it, q_eval, q_tgt, len(q_it)
        self.by_src = torch.argsort(q_it, stable=True)
        edges = torch.arange(0, p + bs, bs, device=q_it.device)
        self.bounds = torch.searchsorted(q_it[self.by_src], edges).tolist()
        self.gold_cos = torch.zeros((self.n,), dtype=torch.float32, device=q_it.device)
        # each candidate's first link (-1: none); the other links of a target (rare) go apart
        by_tgt = torch.argsort(q_tgt, stable=True)
        t_sorted = q_tgt[by_tgt]
        head = torch.ones_like(t_sorted, dtype=torch.bool)
        head[1:] = t_sorted[1:] != t_sorted[:-1]
        self.col_link = torch.full((m,), -1, dtype=torch.int64, device=q_it.device)
        self.col_link[t_sorted[head]] = by_tgt[head]
        self.more = by_tgt[~head]  # (x,) links whose target has an earlier link

    def rows_in(self, i: int, a: int, e: int):
        """``(links, their row in the block, whether they are exactly the block's rows in order)``."""
        import torch

        sel = self.by_src[self.bounds[i]:self.bounds[i + 1]]
        rr = self.q_it[sel] - a
        whole = len(rr) == e - a and bool((rr == torch.arange(e - a, device=rr.device)).all())
        return sel, rr, whole


def _radii_pass(P, C, m: int, counts, csls_k: int, n_rows: int, links: _Links | None, bs: int, progress: bool):
    """Pass 1 over the eval sources ``P (p, d)`` x ``C (m + e, d)`` (candidates, then extra targets).

    Returns ``r_src (p,)`` over the candidates; ``r_eval (m,)`` over all ``P`` rows (``None``
    without links, and when every count is 1: then it is ``r_search[:m]``); ``r_search (m + e,)``
    over the ``P`` rows repeated ``counts (p,)`` times.  Stores each link's gold cosine in ``links``.
    """
    import torch

    p, mc = P.shape[0], C.shape[0]
    kc, ke, ks = min(csls_k, m), min(csls_k, p), min(csls_k, max(n_rows, 1))
    same = bool((counts == 1).all())  # query rows = P: one column top-k serves both
    r_src = torch.empty((p,), dtype=torch.float32, device=P.device)
    col_e = col_s = col_x = None
    buf = torch.empty((min(bs, p), m), dtype=torch.float32, device=P.device)
    CT, XT = C[:m].T, C[m:].T
    with progress_bar(total=p, progress=progress, desc="CSLS radii", unit="row", leave=False) as bar:
        for i, a in enumerate(range(0, p, bs)):
            e = min(a + bs, p)
            S = torch.mm(P[a:e], CT, out=buf[:e - a])  # (b, m): the same product as pass 2's
            r_src[a:e] = _mean_top(S, kc)
            if links is not None:
                sel, rr, _ = links.rows_in(i, a, e)
                links.gold_cos[sel] = S[rr, links.q_tgt[sel]]
                if not same:
                    col_e = _merge_column_topk(col_e, S, ke)
            c = counts[a:e]
            if int(c.sum()):
                # the extra targets' columns (validation targets) too, for their search radius
                Sx = P[a:e] @ XT if mc > m else None  # (b, e)
                if not bool((c == 1).all()):  # query rows repeated as often as they are rows
                    rep = torch.repeat_interleave(torch.arange(e - a, device=S.device), c)
                    S, Sx = S[rep], (Sx[rep] if Sx is not None else None)
                col_s = _merge_column_topk(col_s, S, ks)
                if Sx is not None:
                    col_x = _merge_column_topk(col_x, Sx, ks)
            bar.update(e - a)
    r_search = _mean_topk_t(col_s, dim=0)
    if mc > m:
        r_search = torch.cat([r_search, _mean_topk_t(col_x, dim=0)])
    return r_src, (_mean_topk_t(col_e, dim=0) if links is not None and not same else None), r_search


class _ColumnRanks:
    """tgt->src ranks accumulated block by block from the columns of the src->tgt blocks.

    A target's rank of its gold source is ``1 + #{i: s_i > s_g} + #{i: s_i = s_g, i < g}`` over
    the eval sources (``i``, ``g``: their eval positions); the gold score is known from pass 1, so
    each block adds its counts.  The CSLS of target ``j`` and source ``i`` is
    ``(2 cos - r_tgt[j]) - r_src[i]`` (the target is the query).
    """

    def __init__(self, links: _Links, r_src, r_eval):
        import torch

        L = self.links = links
        gold = {"cos": L.gold_cos, "csls": csls_from_cos(L.gold_cos, r_eval[L.q_tgt], r_src[L.q_it])}
        has = L.col_link >= 0
        first = L.col_link.clamp(min=0)
        big = torch.iinfo(torch.int64).max
        self.g = {k: torch.where(has, v[first], torch.tensor(float("inf"), device=v.device)) for k, v in gold.items()}
        self.gi = torch.where(has, L.q_eval[first], torch.zeros_like(first))  # (m,) eval position of the gold
        self.gpos = torch.where(has, L.q_it[first], torch.full_like(first, big))  # (m,) its iteration position
        self.gx = {k: v[L.more] for k, v in gold.items()}  # (x,) the other links of a target
        self.gix, self.gposx, self.cx = L.q_eval[L.more], L.q_it[L.more], L.q_tgt[L.more]
        self.cnt = {k: torch.zeros_like(self.gi) for k in METHODS}
        self.cntx = {k: torch.zeros_like(self.gix) for k in METHODS}

    def add(self, method: str, Z, a: int, e: int, rowpos, work) -> None:
        """Counts of block ``Z (b, m)`` (cosine, or the CSLS above) of iteration rows ``a:e``,
        whose eval positions are ``rowpos (b,)``."""
        self.cnt[method] += self._count(Z, self.g[method], self.gi, self.gpos, a, e, rowpos, work)
        if len(self.cx):
            self.cntx[method] += self._count(Z[:, self.cx], self.gx[method], self.gix, self.gposx, a, e, rowpos)

    @staticmethod
    def _count(Z, g, gi, gpos, a, e, rowpos, work=None):
        gt, eq = _gt_eq(Z, g[None, :], 0, work)
        here = ((gpos >= a) & (gpos < e)).long()  # the gold cell itself is in this block
        tied = (eq > here).nonzero().flatten()  # columns where another source ties the gold
        if len(tied):
            gt[tied] += ((Z[:, tied] == g[tied][None, :]) & (rowpos[:, None] < gi[tied][None, :])).sum(0)
        return gt

    def ranks(self) -> dict:
        L = self.links
        out = {}
        for k in METHODS:
            r = 1 + self.cnt[k][L.q_tgt]
            r[L.more] = 1 + self.cntx[k]
            out[k] = r
        return out


class _ReverseBest:
    """Each candidate target's best query source (the ``mutual`` column), merged block by block.

    The query rows come first in the iteration, in the order of their first position among the
    rows, so the first maximum (``torch.max`` returns the first) breaks ties as
    ``csls_topk(tgt, src, 1)`` does.
    """

    def __init__(self, m: int, device):
        import torch

        self.value = torch.full((m,), -float("inf"), dtype=torch.float32, device=device)
        self.key = torch.zeros((m,), dtype=torch.int64, device=device)

    def add(self, Y, a: int) -> None:
        """Merge the block ``Y (b, m)`` of query rows ``a:a+b`` (iteration positions)."""
        import torch

        top, idx = Y.max(dim=0)  # (m,)
        better = top > self.value  # a later block wins only with a higher score
        self.value = torch.where(better, top, self.value)
        self.key = torch.where(better, idx + a, self.key)


def _row_topk(S, X, rs, r_search, t: int, method: str):
    """Top-``t`` ``(ids, cos, csls)`` of each row of the cosine block ``S (b, m)`` by ``method``.

    ``X``: the block's CSLS with ``r_search`` when already computed, else ``None``; ``rs (b, 1)``
    the rows' radii.
    """
    if method == "csls":
        X = csls_from_cos(S, rs, r_search[None, :]) if X is None else X
        _, ids = topk_rows(X, t)
    else:
        _, ids = topk_rows(S, t)
    cos = S.gather(1, ids)
    return ids, cos, (X.gather(1, ids) if X is not None else csls_from_cos(cos, rs, r_search[ids]))


def _main_pass(P, Cm, r_src, r_eval, r_search, links: _Links | None, nq: int, eval_pos, topk: int, method: str,
               reverse: bool, bs: int, progress: bool, desc: str = "search"):
    """Pass 2 over the eval sources ``P (p, d)`` x the candidates ``Cm (m, d)``, in pass 1's blocks.

    The first ``nq`` rows of ``P`` are the query rows; ``eval_pos (p,)`` each row's eval position.
    Returns ``(src->tgt ranks, tgt->src ranks)`` per link (``None`` without links), the
    top-``topk`` ``(ids, cos, csls)`` of the query rows (``None`` for 0) and each candidate's
    best query row (its iteration position; ``None`` unless ``reverse``).
    """
    import torch

    p, m = P.shape[0], Cm.shape[0]
    dev = P.device
    t = min(int(topk), m)
    top = tuple(torch.zeros((nq, t), dtype=dt, device=dev) for dt in (torch.int64, torch.float32, torch.float32))
    fwd = {k: torch.empty((links.n,), dtype=torch.int64, device=dev) for k in METHODS} if links else None
    cols = _ColumnRanks(links, r_src, r_eval) if links else None
    best = _ReverseBest(m, dev) if reverse else None
    same_r = r_search is r_eval
    colidx = torch.arange(m, device=dev)
    bufs = [torch.empty((min(bs, p), m), dtype=torch.float32, device=dev) for _ in range(4)]  # S, X, Y, work
    CT = Cm.T
    with progress_bar(total=p, progress=progress, desc=desc, unit="row", leave=False) as bar:
        for i, a in enumerate(range(0, p, bs)):
            e = min(a + bs, p)
            b, q = e - a, max(0, min(e, nq) - a)  # block rows, query rows among them (a prefix)
            S = torch.mm(P[a:e], CT, out=bufs[0][:b])  # (b, m)
            rs = r_src[a:e, None]  # (b, 1)
            X = Y = None  # the block's CSLS with the metrics' radii: rows as queries (X), columns (Y)
            if links is not None:
                sel, rr, whole = links.rows_in(i, a, e)
                g = links.q_tgt[sel, None]
                if whole:
                    fwd["cos"][sel] = _row_ranks(S, g, colidx, bufs[3][:b])
                    X = _csls_into(bufs[1][:b], S, rs, r_eval[None, :])
                    fwd["csls"][sel] = _row_ranks(X, g, colidx, bufs[3][:b])
                elif len(sel):
                    Sl = S[rr]
                    fwd["cos"][sel] = _row_ranks(Sl, g, colidx, None)
                    fwd["csls"][sel] = _row_ranks(csls_from_cos(Sl, rs[rr], r_eval[None, :]), g, colidx, None)
                    del Sl
                cols.add("cos", S, a, e, eval_pos[a:e], bufs[3][:b])
                Y = _csls_into(bufs[2][:b], S, r_eval[None, :], rs)
                cols.add("csls", Y, a, e, eval_pos[a:e], bufs[3][:b])
            if t and q:
                Xq = X[:q] if X is not None and same_r else None
                ids, cos, csls = _row_topk(S[:q], Xq, rs[:q], r_search, t, method)
                top[0][a:a + q], top[1][a:a + q], top[2][a:a + q] = ids, cos, csls
            if best is not None and q:
                if method == "cos":
                    best.add(S[:q], a)
                elif Y is not None and same_r:
                    best.add(Y[:q], a)
                else:
                    best.add(_csls_into(bufs[2][:q], S[:q], r_search[None, :], rs[:q]), a)
            bar.update(b)
    return fwd, (cols.ranks() if cols else None), (top if t else None), (best.key if best else None)


def _valid_pass(Q, C, r_tgt, csls_k: int, method: str, bs: int, progress: bool):
    """Top-2 ``(ids, scores)`` of each validation source ``Q (v, d)`` among ``C (m + e, d)``.

    Each row's radius is its own mean top-``csls_k`` cosine over ``C`` (as a query's); the
    targets' radii are ``r_tgt (m + e,)``.
    """
    import torch

    v, mc = Q.shape[0], C.shape[0]
    t = min(2, mc)
    ids = torch.empty((v, t), dtype=torch.int64, device=Q.device)
    scores = torch.empty((v, t), dtype=torch.float32, device=Q.device)
    CT = C.T
    with progress_bar(total=v, progress=progress, desc="calibration", unit="row", leave=False) as bar:
        for a in range(0, v, bs):
            e = min(a + bs, v)
            S = Q[a:e] @ CT  # (b, m + e)
            rs = _mean_top(S, min(csls_k, mc))[:, None]
            i, cos, csls = _row_topk(S, None, rs, r_tgt, t, method)
            ids[a:e], scores[a:e] = i, (csls if method == "csls" else cos)
            bar.update(e - a)
    return ids, scores


def _iteration(rows: np.ndarray, P: np.ndarray, n_src: int):
    """The order the passes visit the eval sources ``P`` in: the query rows first, in the order of
    their first position among ``rows``, then the others.  Returns ``(order (p,), it_pos (p,)
    the iteration position of each P row, q_src (n,) each row's P position, counts (p,) in
    iteration order, firsts (nq,) the first row position of each query row in iteration order)``."""
    pos = np.full(n_src, -1, np.int64)
    pos[P] = np.arange(len(P))
    q_src = pos[rows]
    if (q_src < 0).any():
        raise MmeaInputError("every query row must be among the eval sources")
    seen, at = np.unique(q_src, return_index=True)
    first = np.full(len(P), np.iinfo(np.int64).max, np.int64)
    first[seen] = at
    order = np.argsort(first, kind="stable")  # query rows by first position, then the rest in P order
    it_pos = np.empty(len(P), np.int64)
    it_pos[order] = np.arange(len(P))
    counts = np.bincount(q_src, minlength=len(P))[order]
    return order, it_pos, q_src, counts, np.sort(at)


def search_once(src_emb: Any, tgt_emb: Any, rows: Any, cand: Any, *, gold: Any = None, eval_src: Any = None,
                topk: int = 2, reverse: bool = True, valid_src: Any = None, extra: Any = None,
                method: str = "csls", csls_k: int = 10, device: str = "cpu", block_size: int | None = None,
                progress: bool = False, desc: str = "search") -> OnePass:
    """Ranks, top-k, reverse best and validation top-2 of one run in two blockwise passes (module doc).

    Args:
        src_emb: ``(N, d)``; tgt_emb: ``(M, d)`` all embeddings (L2-normalised here, float32).
        rows: ``(n,)`` query source ids (duplicates allowed: the test links' sources in link order).
        cand: ``(m,)`` candidate target ids (unique).
        gold: ``(n,)`` position in ``cand`` of each row's gold target: gold ranks in both
            directions, with radii over ``eval_src`` (as :func:`~mmea.evaluation.evaluate_embeddings`);
            ``None``: no ranks.
        eval_src: ``(p,)`` unique source ids that contain every row: the sources the tgt->src
            ranks are taken against and the metrics' ``r_tgt`` is computed over (default: the unique rows).
        topk: best targets kept per row, ranked with the radii over ``rows`` (as
            :func:`~mmea.search.matching.align`); 0: none.  reverse: also each candidate's best row.
        valid_src, extra: ``(v,)`` validation source ids ranked against ``cand`` + ``extra`` ``(e,)``
            target ids (top 2 kept, as :func:`~mmea.calibration.score_valid_sources`); ``None``: none.
        method: the search score (``csls`` or ``cos``); the ranks are computed for both.
        block_size: rows per ``(block, m)`` score block (default: 32 MiB blocks).
        progress, desc: bars over the passes ("CSLS radii", then ``desc``, then "calibration")
            when stderr is a terminal.
    """
    import torch

    if method not in METHODS:
        raise MmeaInputError(f"unknown similarity {method!r}; valid choices: {', '.join(METHODS)}")
    if int(csls_k) < 1 or int(topk) < 0:
        raise MmeaInputError(f"csls_k must be >= 1 and topk >= 0, got {csls_k} and {topk}")
    device = _check_device(device)
    src, tgt = l2_normalize(src_emb, "source embeddings"), l2_normalize(tgt_emb, "target embeddings")
    if src.shape[1] != tgt.shape[1]:
        raise MmeaInputError(f"source embeddings have dimension {src.shape[1]}, target embeddings {tgt.shape[1]}")
    rows, cand = _ids(rows, len(src), "source row"), _ids(cand, len(tgt), "target row")
    if not len(rows) or not len(cand):
        raise MmeaInputError(f"nothing to search: {len(rows)} source and {len(cand)} target rows")
    P = np.unique(rows) if eval_src is None else _ids(eval_src, len(src), "source row")
    if len(np.unique(P)) != len(P):
        raise MmeaInputError("the eval sources must be unique")
    order, it_pos, q_src, counts, firsts = _iteration(rows, P, len(src))
    extra = np.zeros(0, np.int64) if extra is None else _ids(extra, len(tgt), "target row")
    if gold is not None and len(np.asarray(gold).reshape(-1)) != len(rows):
        raise MmeaInputError(f"{len(np.asarray(gold).reshape(-1))} gold targets for {len(rows)} query rows")
    m, csls_k = len(cand), int(csls_k)
    bs = row_block_size(m, block_size, budget=BLOCK_ELEMENTS // 4)
    q_it = it_pos[q_src]  # (n,) each row's iteration position
    out = OnePass(num_valid_candidates=m + len(extra))
    with torch.no_grad():
        t = lambda x: torch.from_numpy(np.ascontiguousarray(x)).to(device)  # noqa: E731
        P_t, C_t = t(src[P[order]]), t(tgt[np.concatenate([cand, extra])])  # (p, d), (m + e, d)
        links = None if gold is None else _Links(t(q_it), t(q_src), t(_ids(gold, m, "gold target")), len(P), m, bs)
        r_src, r_eval, r_search = _radii_pass(P_t, C_t, m, t(counts), csls_k, len(rows), links, bs, progress)
        rt_s = r_search[:m]
        r_eval = rt_s if r_eval is None else r_eval
        fwd, back, top, best = _main_pass(P_t, C_t[:m], r_src, r_eval, rt_s, links, len(firsts), t(order), topk,
                                          method, reverse, bs, progress, desc)
        if valid_src is not None and len(valid_src):
            vs = _ids(valid_src, len(src), "validation source")
            vid, vscore = _valid_pass(t(src[vs]), C_t, r_search, csls_k, method,
                                      row_block_size(len(C_t), block_size), progress)
            out.valid_ids, out.valid_scores = vid.cpu().numpy(), vscore.cpu().numpy()
    r_src = r_src.cpu().numpy()
    out.r_src, out.r_tgt = r_src[it_pos], r_eval.cpu().numpy()
    if fwd is not None:
        out.ranks = {"src->tgt": {k: v.cpu().numpy() for k, v in fwd.items()},
                     "tgt->src": {k: v.cpu().numpy() for k, v in back.items()}}
    if top is not None:
        ids, cos, csls = (x.cpu().numpy()[q_it] for x in top)  # per query row in iteration order -> per row
        out.result = SearchResult(ids=ids, cos=cos, csls=csls, r_src=r_src[q_it], r_tgt=rt_s.cpu().numpy(),
                                  method=method, csls_k=csls_k, exact=True, index="torch",
                                  stats={"candidates": m, "rescored_rows": 0, "rescored_pairs": 0})
        if best is not None:
            out.result.reverse_best = firsts[best.cpu().numpy()]  # iteration position -> row position
    return out


def align_once(src_emb: Any, tgt_emb: Any, rows: Any, cand: Any, *, topk: int = 1, method: str = "csls",
               csls_k: int = 10, matcher: str = "none", matcher_options: dict | None = None, device: str = "cpu",
               block_size: int | None = None, candidates: str = "test", index: str = "auto",
               progress: bool = False, **once) -> tuple[Alignment, OnePass]:
    """:func:`~mmea.search.matching.align` (same result) from :func:`search_once`, with its ranks and validation top-2.

    ``once``: ``gold``, ``eval_src``, ``valid_src``, ``extra`` of :func:`search_once`.  The
    top-k is searched once, wide enough for the matcher's own candidate lists (greedy's ``k``);
    the ``mutual`` matcher reads the reverse best matches of the pass.  ``index``: what a
    matcher that searches again (sparse Hungarian / Sinkhorn) uses.
    """
    from .matching import MATCHERS, Alignment, Similarity

    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    cand = np.asarray(cand, dtype=np.int64).reshape(-1)
    match = None if matcher in (None, "none") else MATCHERS.make(matcher, **(matcher_options or {}))
    keep = max(int(topk), 2)  # what align() keeps (the export reads ranks and margins from it)
    want = max(keep, int(getattr(match, "k", 0)))
    found = search_once(src_emb, tgt_emb, rows, cand, topk=want, reverse=True, method=method, csls_k=csls_k,
                        device=device, block_size=block_size, progress=progress, **once)
    result = found.result
    matching = None
    if match is not None:
        sim = Similarity(np.asarray(src_emb)[rows], np.asarray(tgt_emb)[cand], method=method, csls_k=csls_k,
                         device=device, block_size=block_size, index=index,
                         radius=(result.r_src, result.r_tgt), progress=progress)
        matching = match.match(sim, result=result)
    result = dataclasses.replace(result, ids=result.ids[:, :keep], cos=result.cos[:, :keep],
                                 csls=result.csls[:, :keep])
    found.result = result
    return Alignment(rows, cand, result, result.reverse_best, matching, candidates), found
