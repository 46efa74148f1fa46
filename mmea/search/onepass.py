"""Search once: one blockwise pass per direction gives the ranks, the candidates and the validation scores.

An ``mmea align`` run needs, from the same embeddings,

* the rank of each test link's gold target (the metrics, cosine and CSLS, src->tgt and tgt->src),
* each query source's top-k targets (``alignment.csv``, the matchers) and each candidate
  target's best query source (the ``mutual`` column),
* the top-2 targets of each validation source (the calibration, :mod:`mmea.calibration`).

Computed one after the other, each of these recomputes the CSLS radii and the
``(n, m)`` cosines.  :func:`search_once` computes them in three blockwise passes
and never holds more than one ``(block, m)`` score block:

1. **radii**: the eval sources ``P`` x the candidate targets (plus the validation
   targets that are not candidates, the *extra* columns): ``r_src`` of every
   ``P`` row over the candidates, ``r_tgt`` of every candidate over ``P`` (the
   metrics' radii) and, when the query rows are not ``P`` itself (duplicates, or
   ``candidates="all"``), over the query rows with their multiplicity (the search's
   radii, as :class:`~mmea.search.matching.Similarity` computes them).
2. **src->tgt**: each block of query rows against the candidates: gold ranks by
   cosine and CSLS, and the top-k by the search score; then the validation
   sources against the candidates + extra targets: their top-2.
3. **tgt->src**: each block of candidate targets against ``P``: the gold ranks of
   the links whose target is in the block, and each target's best query source.

Every score is the float32 expression of :func:`~mmea.search.csls.csls_from_cos`
on the same cosines, and ranks and top-k follow the tie rule of
:mod:`mmea.search.csls` (score desc, lower index first), so the result equals
:func:`~mmea.evaluation.evaluate_embeddings`, :func:`~mmea.search.matching.align` and
:func:`~mmea.calibration.score_valid_sources` run separately (tests/test_onepass.py).
The passes are exact torch passes; FAISS indexes keep the separate search.
"""

from __future__ import annotations

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


def _rank(X, g, before):
    """1-based rank of column ``g (b, 1)`` in each row of ``X (b, m)`` under the tie rule (see module doc)."""
    gv = X.gather(1, g)  # (b, 1)
    return 1 + (X > gv).sum(1) + ((X == gv) & before).sum(1)


def _mean_top(S, k: int):
    """``(b,)`` mean of each row's ``k`` largest values (the CSLS radius of a row)."""
    import torch

    return _mean_topk_t(torch.topk(S, k, dim=1).values)


class _Links:
    """The test links as positions: ``q_src (n,)`` into the eval sources ``P``, ``q_tgt (n,)`` into the
    candidates, grouped by source block (``rows_in(i)``) and by target column (``col_link``)."""

    def __init__(self, q_src, q_tgt, p: int, m: int, bs: int):
        import torch

        self.q_src, self.q_tgt, self.n = q_src, q_tgt, len(q_src)
        self.by_src = torch.argsort(q_src, stable=True)
        edges = torch.arange(0, p + bs, bs, device=q_src.device)
        self.bounds = torch.searchsorted(q_src[self.by_src], edges).tolist()
        self.gold_cos = torch.zeros((self.n,), dtype=torch.float32, device=q_src.device)
        # each candidate's first link (-1: none); the other links of a target (rare) go apart
        by_tgt = torch.argsort(q_tgt, stable=True)
        t_sorted = q_tgt[by_tgt]
        head = torch.ones_like(t_sorted, dtype=torch.bool)
        head[1:] = t_sorted[1:] != t_sorted[:-1]
        self.col_link = torch.full((m,), -1, dtype=torch.int64, device=q_src.device)
        self.col_link[t_sorted[head]] = by_tgt[head]
        self.more = by_tgt[~head]  # (x,) links whose target has an earlier link

    def rows_in(self, i: int, a: int, e: int):
        """``(links, their row in the block, whether they are exactly the block's rows in order)``."""
        import torch

        sel = self.by_src[self.bounds[i]:self.bounds[i + 1]]
        rr = self.q_src[sel] - a
        whole = len(rr) == e - a and bool((rr == torch.arange(e - a, device=rr.device)).all())
        return sel, rr, whole


def _radii_pass(P, C, m: int, counts: np.ndarray, csls_k: int, n_rows: int, links: _Links | None, bs: int,
                progress: bool):
    """Pass 1 over the eval sources ``P (p, d)`` x ``C (m + e, d)`` (candidates, then extra targets).

    Returns ``r_src (p,)`` over the candidates; ``r_eval (m,)`` over all ``P`` rows (``None``
    without links, and when every count is 1: then it is ``r_search[:m]``); ``r_search (m + e,)``
    over the ``P`` rows repeated ``counts`` times.  Stores each link's gold cosine in ``links``.
    """
    import torch

    p, mc = P.shape[0], C.shape[0]
    kc, ke, ks = min(csls_k, m), min(csls_k, p), min(csls_k, max(n_rows, 1))
    same = bool((counts == 1).all())  # query rows = P: one column top-k serves both
    counts_t = torch.from_numpy(counts).to(P.device)
    r_src = torch.empty((p,), dtype=torch.float32, device=P.device)
    col_e = col_s = None
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
            if mc > m:  # the extra targets' columns (validation targets), for their search radius
                S = torch.cat([S, P[a:e] @ XT], 1)  # (b, m + e)
            c = counts_t[a:e]
            if same:
                col_s = _merge_column_topk(col_s, S, ks)
            elif int(c.sum()):
                rep = S if bool((c == 1).all()) else S[torch.repeat_interleave(torch.arange(e - a, device=S.device), c)]
                col_s = _merge_column_topk(col_s, rep, ks)
            bar.update(e - a)
    r_search = _mean_topk_t(col_s, dim=0)
    return r_src, (_mean_topk_t(col_e, dim=0) if links is not None and not same else None), r_search


def _col_count(Z, g, gi, rowpos):
    """Per column of ``Z (b, k)``: rows scoring above ``g (k,)``, plus rows tying it before row ``gi (k,)``."""
    return (Z > g[None, :]).sum(0) + ((Z == g[None, :]) & (rowpos[:, None] < gi[None, :])).sum(0)


class _ColumnRanks:
    """tgt->src ranks accumulated block by block from the columns of the src->tgt blocks.

    A target's rank of its gold source is ``1 + #{i: s_i > s_g} + #{i: s_i = s_g, i < g}`` over
    the eval sources; the gold score is known from pass 1, so each block adds its counts.  The
    CSLS of target ``j`` and source ``i`` is ``(2 cos - r_tgt[j]) - r_src[i]`` (the target is the query).
    """

    def __init__(self, links: _Links, r_src, r_eval):
        import torch

        L = links
        self.links = L
        gold = {"cos": L.gold_cos, "csls": csls_from_cos(L.gold_cos, r_eval[L.q_tgt], r_src[L.q_src])}
        has = L.col_link >= 0
        first = L.col_link.clamp(min=0)
        inf = torch.tensor(float("inf"), device=first.device)
        self.g = {k: torch.where(has, v[first], inf) for k, v in gold.items()}  # (m,) per column
        self.gi = torch.where(has, L.q_src[first], torch.zeros_like(first))
        self.gx = {k: v[L.more] for k, v in gold.items()}  # (x,) the other links of a target
        self.gix, self.cx = L.q_src[L.more], L.q_tgt[L.more]
        self.cnt = {k: torch.zeros_like(self.gi) for k in METHODS}
        self.cntx = {k: torch.zeros_like(self.gix) for k in METHODS}

    def add(self, method: str, Z, rowpos) -> None:
        """Counts of block ``Z (b, m)`` (cosine, or the CSLS above) whose rows are eval sources ``rowpos (b,)``."""
        self.cnt[method] += _col_count(Z, self.g[method], self.gi, rowpos)
        if len(self.cx):
            self.cntx[method] += _col_count(Z[:, self.cx], self.gx[method], self.gix, rowpos)

    def ranks(self) -> dict:
        L = self.links
        out = {}
        for k in METHODS:
            r = 1 + self.cnt[k][L.q_tgt]
            r[L.more] = 1 + self.cntx[k]
            out[k] = r
        return out


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


class _ReverseBest:
    """Each candidate target's best query source (the ``mutual`` column), merged block by block.

    Ties go to the query source that comes first among the rows, as
    ``csls_topk(tgt, src, 1)`` breaks them; the CSLS is ``(2 cos - r_tgt[j]) - r_src[i]``.
    """

    def __init__(self, m: int, query, first, device):
        import torch

        self.big = torch.iinfo(torch.int64).max
        self.value = torch.full((m,), -float("inf"), dtype=torch.float32, device=device)
        self.key = torch.full((m,), self.big, dtype=torch.int64, device=device)
        self.query = query
        self.tie = torch.where(query, first, torch.full_like(first, self.big))  # (p,)

    def add(self, Y, a: int, e: int) -> None:
        """Merge the block ``Y (b, m)`` of eval-source rows ``a:e``."""
        import torch

        q = self.query[a:e]
        if not bool(q.all()):
            Y = Y.masked_fill(~q[:, None], -float("inf"))
        top = Y.max(dim=0).values  # (m,)
        key = torch.where(Y == top[None, :], self.tie[a:e, None], self.big).min(dim=0).values
        better = (top > self.value) | ((top == self.value) & (key < self.key))
        self.value = torch.where(better, top, self.value)
        self.key = torch.where(better, key, self.key)


def _main_pass(P, Cm, r_src, r_eval, r_search, links: _Links | None, query, first, topk: int, method: str,
               reverse: bool, bs: int, progress: bool):
    """Pass 2 over the eval sources ``P (p, d)`` x the candidates ``Cm (m, d)``, in pass 1's blocks.

    ``query (p,)``: the ``P`` rows that are query rows; ``first (p,)`` their first position among
    the rows.  Returns ``(src->tgt ranks, tgt->src ranks)`` per link (``None`` without links), the
    top-``topk`` ``(ids, cos, csls)`` of every ``P`` row (query rows only filled; ``None`` for 0)
    and each candidate's best query row (``None`` unless ``reverse``).
    """
    import torch

    p, m = P.shape[0], Cm.shape[0]
    dev = P.device
    t = min(int(topk), m)
    top = tuple(torch.zeros((p, t), dtype=dt, device=dev) for dt in (torch.int64, torch.float32, torch.float32))
    fwd = {k: torch.empty((links.n,), dtype=torch.int64, device=dev) for k in METHODS} if links else None
    cols = _ColumnRanks(links, r_src, r_eval) if links else None
    best = _ReverseBest(m, query, first, dev) if reverse else None
    same_r = r_search is r_eval
    colidx, pidx = torch.arange(m, device=dev), torch.arange(p, device=dev)
    buf = torch.empty((min(bs, p), m), dtype=torch.float32, device=dev)
    CT = Cm.T
    with progress_bar(total=p, progress=progress, desc="search", unit="row", leave=False) as bar:
        for i, a in enumerate(range(0, p, bs)):
            e = min(a + bs, p)
            S = torch.mm(P[a:e], CT, out=buf[:e - a])  # (b, m)
            rs = r_src[a:e, None]  # (b, 1)
            X = Y = None  # the block's CSLS with the metrics' radii: rows as queries (X), columns (Y)
            if links is not None:
                sel, rr, whole = links.rows_in(i, a, e)
                Sl = S if whole else S[rr]
                g = links.q_tgt[sel, None]
                before = colidx[None, :] < g
                fwd["cos"][sel] = _rank(Sl, g, before)
                Xl = csls_from_cos(Sl, r_src[links.q_src[sel], None], r_eval[None, :])
                fwd["csls"][sel] = _rank(Xl, g, before)
                X = Xl if whole else None
                del before, Sl
                cols.add("cos", S, pidx[a:e])
                Y = csls_from_cos(S, r_eval[None, :], rs)
                cols.add("csls", Y, pidx[a:e])
            if t:
                q = query[a:e]
                if bool(q.all()):
                    ids, cos, csls = _row_topk(S, X if same_r else None, rs, r_search, t, method)
                    top[0][a:e], top[1][a:e], top[2][a:e] = ids, cos, csls
                else:
                    qi = q.nonzero().flatten()
                    ids, cos, csls = _row_topk(S[qi], None, rs[qi], r_search, t, method)
                    top[0][a + qi], top[1][a + qi], top[2][a + qi] = ids, cos, csls
            if best is not None:
                if method == "cos":
                    best.add(S, a, e)
                else:
                    best.add(Y if Y is not None and same_r else csls_from_cos(S, r_search[None, :], rs), a, e)
            bar.update(e - a)
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


def _positions(rows: np.ndarray, P: np.ndarray, n_src: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(q_src (n,), counts (p,), first (p,))``: each row's position in ``P``, how often each ``P`` row
    is a query row, and where it first is one (``-1``: never)."""
    pos = np.full(n_src, -1, np.int64)
    pos[P] = np.arange(len(P))
    q_src = pos[rows]
    if (q_src < 0).any():
        raise MmeaInputError("every query row must be among the eval sources")
    first = np.full(len(P), -1, np.int64)
    seen, at = np.unique(q_src, return_index=True)
    first[seen] = at
    return q_src, np.bincount(q_src, minlength=len(P)), first


def search_once(src_emb: Any, tgt_emb: Any, rows: Any, cand: Any, *, gold: Any = None, eval_src: Any = None,
                topk: int = 2, reverse: bool = True, valid_src: Any = None, extra: Any = None,
                method: str = "csls", csls_k: int = 10, device: str = "cpu", block_size: int | None = None,
                progress: bool = False) -> OnePass:
    """Ranks, top-k, reverse best and validation top-2 of one run in two blockwise passes (module doc).

    Args:
        src_emb: ``(N, d)``; tgt_emb: ``(M, d)`` all embeddings (L2-normalised here, float32).
        rows: ``(n,)`` query source ids (duplicates allowed: the test links' sources in link order).
        cand: ``(m,)`` candidate target ids (unique).
        gold: ``(n,)`` position in ``cand`` of each row's gold target: gold ranks in both
            directions, with radii over ``eval_src`` (as :func:`~mmea.evaluation.evaluate_embeddings`); ``None``: no ranks.
        eval_src: ``(p,)`` unique source ids that contain every row: the sources the tgt->src
            ranks are taken against and the metrics' ``r_tgt`` is computed over (default: the unique rows).
        topk: best targets kept per row, ranked with the radii over ``rows`` (as
            :func:`~mmea.search.matching.align`); 0: none.  reverse: also each candidate's best row.
        valid_src, extra: ``(v,)`` validation source ids ranked against ``cand`` + ``extra`` ``(e,)``
            target ids (top 2 kept, as :func:`~mmea.calibration.score_valid_sources`); ``None``: none.
        method: the search score (``csls`` or ``cos``); the ranks are computed for both.
        block_size: rows per ``(block, m)`` score block (default: 32 MiB blocks).
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
    q_src, counts, first = _positions(rows, P, len(src))
    extra = np.zeros(0, np.int64) if extra is None else _ids(extra, len(tgt), "target row")
    if gold is not None and len(np.asarray(gold).reshape(-1)) != len(rows):
        raise MmeaInputError(f"{len(np.asarray(gold).reshape(-1))} gold targets for {len(rows)} query rows")
    m, csls_k = len(cand), int(csls_k)
    bs = row_block_size(m, block_size, budget=BLOCK_ELEMENTS // 4)
    out = OnePass(num_valid_candidates=m + len(extra))
    with torch.no_grad():
        t = lambda x: torch.from_numpy(np.ascontiguousarray(x)).to(device)  # noqa: E731
        P_t, C_t = t(src[P]), t(tgt[np.concatenate([cand, extra])])  # (p, d), (m + e, d)
        links = None if gold is None else _Links(t(q_src), t(_ids(gold, m, "gold target")), len(P), m, bs)
        r_src, r_eval, r_search = _radii_pass(P_t, C_t, m, counts, csls_k, len(rows), links, bs, progress)
        rt_s = r_search[:m]
        r_eval = rt_s if r_eval is None else r_eval
        fwd, back, top, best = _main_pass(P_t, C_t[:m], r_src, r_eval, rt_s, links, t(counts > 0), t(first),
                                          topk, method, reverse, bs, progress)
        if valid_src is not None and len(valid_src):
            vs = _ids(valid_src, len(src), "validation source")
            vid, vscore = _valid_pass(t(src[vs]), C_t, r_search, csls_k, method,
                                      row_block_size(len(C_t), block_size), progress)
            out.valid_ids, out.valid_scores = vid.cpu().numpy(), vscore.cpu().numpy()
    out.r_src, out.r_tgt = r_src.cpu().numpy(), r_eval.cpu().numpy()
    if fwd is not None:
        out.ranks = {"src->tgt": {k: v.cpu().numpy() for k, v in fwd.items()},
                     "tgt->src": {k: v.cpu().numpy() for k, v in back.items()}}
    if top is not None:
        ids, cos, csls = (x.cpu().numpy()[q_src] for x in top)  # per P row -> per query row
        out.result = SearchResult(ids=ids, cos=cos, csls=csls, r_src=out.r_src[q_src], r_tgt=rt_s.cpu().numpy(),
                                  method=method, csls_k=csls_k, exact=True, index="torch",
                                  stats={"candidates": m, "rescored_rows": 0, "rescored_pairs": 0})
        if best is not None:
            out.result.reverse_best = best.cpu().numpy()
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
    want = max(int(topk), 2, int(getattr(match, "k", 0)))
    found = search_once(src_emb, tgt_emb, rows, cand, topk=want, reverse=True, method=method, csls_k=csls_k,
                        device=device, block_size=block_size, progress=progress, **once)
    result = found.result
    matching = None
    if match is not None:
        sim = Similarity(np.asarray(src_emb)[rows], np.asarray(tgt_emb)[cand], method=method, csls_k=csls_k,
                         device=device, block_size=block_size, index=index,
                         radius=(result.r_src, result.r_tgt), progress=progress)
        matching = match.match(sim, result)
    return Alignment(rows, cand, result, result.reverse_best, matching, candidates), found
