"""Search once: one blockwise product pass gives a run's ranks, its candidates and its validation scores.

An ``mmea align`` run needs, from the same embeddings,

* the rank of each test link's gold target (the metrics, cosine and CSLS, src->tgt and tgt->src),
* each query source's top-k targets (``alignment.csv``, the matchers) and each candidate
  target's best query source (the ``mutual`` column),
* the top-2 targets of each validation source (the calibration, :mod:`mmea.calibration`).

Computed one after the other these recompute the CSLS radii and the ``(n, m)`` cosines six
times; the CSLS radii of the targets are known only after every source has been seen, so even a
fused computation needs two passes over the cosines.  :func:`search_once` computes the cosines
**once**, block by block of eval-source rows (never more than one ``(block, m)`` block), and keeps
per block only short lists:

1. **the pass**: each eval source's top-``K`` candidates by cosine (``K`` =
   :data:`LIST_SIZE`; its radius ``r_src`` is the mean of the first ``csls_k``), each
   candidate's top-``K`` eval sources and top-``K`` query sources (their radii: ``r_tgt``), each
   row's largest cosine within :data:`GROUPS` groups of candidates of similar radius, and the
   cosine of every gold pair.
2. **settling from the lists**: a rank, a top-k or a best match read from a list is exact when
   everything outside the list provably scores below it: outside the list a cosine is at most the
   list's ``K``-th (and the group's largest), and a CSLS ``(2 cos - r_query) - r_candidate`` at
   most that bound with the group's smallest radius (float rounding is monotone, so the bound
   holds for the float32 scores).  A candidate column (the target as the query) also keeps its
   top :data:`KEYS` sources by ``2 cos - r_src``: no source outside its list scores above the
   largest unlisted one of them (minus the column's radius, plus :data:`KEY_ROUNDING`).  A gold
   target outside its list, or a list whose bound is not strictly below the score it must settle,
   is **redone**: that source row (or that target column) against everything, each at most once;
   a DBP15k run redoes a few hundred of 10,500.
   A redone product whose cosines differ in any bit from the pass's list values (small products
   take other float32 kernels) is computed again padded to the pass's block shape.
3. the validation sources against the candidates + their own targets: their top-2.

Every score is the float32 expression of :func:`~mmea.search.csls.csls_from_cos` on the same
cosines (``(2 cos - r_query) - r_candidate``, also for the tgt->src direction), and ranks and
top-k follow the tie rule of :mod:`mmea.search.csls` (score desc, lower index first), so the
result equals :func:`~mmea.evaluation.evaluate_embeddings`, :func:`~mmea.search.matching.align`
and :func:`~mmea.calibration.score_valid_sources` run separately (tests/test_onepass.py, with
short lists that force the redo and long ones that settle most from the lists).  The embeddings
stay float32 at their own dimension.  The pass is an exact torch pass; FAISS indexes keep the
separate search.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import MmeaInputError
from ..progress import progress_bar
from .csls import METHODS, SearchResult, _mean_topk_t, _merge_column_topk, csls_from_cos
from .knn import BLOCK_ELEMENTS, _check_device, as_float32, row_block_size, scale_rows, topk_rows

if TYPE_CHECKING:
    from .matching import Alignment

__all__ = ["OnePass", "search_once", "align_once"]

#: candidates kept per source row and sources per candidate column by the pass (``K`` of the module doc)
LIST_SIZE = 64
#: column groups of the pass's bounds (:class:`_Lists`)
GROUPS = 64
#: rows below which a redo is always padded to the pass's block shape (tiny products take other kernels)
MIN_ROWS = 64
#: column keys ``2 cos - r_src`` kept per candidate column by the pass (its top ``KEYS`` eval sources)
KEYS = 4
#: how far a float32 score ``(2 cos - r_tgt) - r_src`` can lie above the bound ``(2 cos - r_src) - r_tgt`` built
#: from the column key: every value is below 4 in magnitude, so each float32 rounding errs by at most 2**-22
#: (2.4e-7); the score rounds twice, the key once and the bound's subtraction once (< 1e-6); 2e-6 leaves a margin
KEY_ROUNDING = 2e-6


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
        lists: the pass's candidate lists, for a later step that needs more than the top-k (the
            one-to-one assignment): ``src_ids (p, K)`` positions into ``cand`` of each eval source's
            top-``K`` cosines ``src_cos (p, K)`` (descending; eval sources in ``eval_src`` order), and
            ``tgt_ids (m, K')`` positions into ``eval_src`` of each candidate's top eval sources,
            ``tgt_cos (m, K')``.
        column_best: ``{"cos": (m,), "csls": (m,)}`` float32: each candidate's best score over the eval
            sources (the metrics' radii), the column maxima ``c(v)`` of the reciprocal ranking
            (:mod:`mmea.search.reciprocal`), kept by the pass so that ranking needs one pass less.
    """

    ranks: dict | None = None
    result: SearchResult | None = None
    r_src: np.ndarray | None = None
    r_tgt: np.ndarray | None = None
    valid_ids: np.ndarray | None = None
    valid_scores: np.ndarray | None = None
    num_valid_candidates: int = 0
    stats: dict = field(default_factory=dict)
    lists: dict | None = None
    column_best: dict | None = None


def _ids(x: Any, n: int, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.int64).reshape(-1)
    if len(x) and (x.min() < 0 or x.max() >= n):
        raise MmeaInputError(f"{what} id out of range for {n} embeddings")
    return x


def _mean_top(S, k: int):
    """``(b,)`` mean of each row's ``k`` largest values (the CSLS radius of a row)."""
    return _mean_topk_t(torch.topk(S, k, dim=1).values)


def _csls_into(out, S, first, second):
    """``csls_from_cos(S, first, second)`` = ``(2 S - first) - second`` written into ``out`` (no new block)."""
    out = torch.mul(S, 2, out=out)
    return out.sub_(first).sub_(second)


class _Links:
    """The test links as positions: ``q_it (n,)`` the iteration position of each link's source,
    ``q_eval (n,)`` its position among the eval sources (ties), ``q_tgt (n,)`` its target's column;
    grouped by source block (:meth:`rows_in`)."""

    def __init__(self, q_it, q_eval, q_tgt, p: int, bs: int):
        self.q_it, self.q_eval, self.q_tgt, self.n = q_it, q_eval, q_tgt, len(q_it)
        self.by_src = torch.argsort(q_it, stable=True)
        edges = torch.arange(0, p + bs, bs, device=q_it.device)
        self.bounds = torch.searchsorted(q_it[self.by_src], edges).tolist()
        self.gold_cos = torch.zeros((self.n,), dtype=torch.float32, device=q_it.device)
        self.fwd: dict | None = None  # {"cos", "csls"}: (n,) src->tgt ranks, set by the settling step
        self.back: dict | None = None  # the same, tgt->src

    def rows_in(self, i: int, a: int):
        """``(links whose source is in block i (rows a:...), their row in the block)``."""
        sel = self.by_src[self.bounds[i]:self.bounds[i + 1]]
        return sel, self.q_it[sel] - a


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


def _merge_column_lists(lst, S, k: int, offset: int):
    """Running top-``k`` ``(values (<= k, m) descending, iteration rows (<= k, m))`` of each column,
    merged with the block ``S (b, m)`` whose rows are the iteration rows ``offset:offset + b``."""
    bv, bi = torch.topk(S, min(k, S.shape[0]), dim=0)  # (<= k, m)
    bi += offset
    if lst is None:
        return bv, bi
    v, i = torch.cat([lst[0], bv]), torch.cat([lst[1], bi])
    tv, ti = torch.topk(v, min(k, v.shape[0]), dim=0)
    return tv, i.gather(0, ti)


@dataclass
class _Lists:
    """What the one product pass keeps: each eval source's top-``K`` candidates (``row_v/row_i (p, K)``,
    cosines descending and candidate columns), each candidate's top-``K`` eval sources
    (``col (values, iteration rows)``, ``(K, m)``) and, when the query rows are fewer than the eval
    sources, its top-``K`` query rows (``colq``); the radii; each link's gold cosine."""

    row_v: Any
    row_i: Any
    col: tuple
    colq: tuple
    r_src: Any
    r_eval: Any
    r_search: Any
    perm: Any = None  # (G * w,) the candidate columns grouped (padded by repeating the last one)
    group_max: Any = None  # (p, G) each row's largest cosine within each group
    col_top: Any = None  # ((KEYS, m) values, (KEYS, m) iteration rows): each column's largest 2 cos - r_src, desc

    @property
    def col_key(self):
        """``(m,)`` each column's largest ``2 cos - r_src`` over the eval sources."""
        return self.col_top[0][0]

    def bound(self, rows, r_cand):
        """``(n,)`` an upper bound of the CSLS ``(2 cos - r_src) - r_cand`` of each row of ``rows`` with
        every candidate outside its list: per group, the smaller of the group's largest cosine and the
        list's ``K``-th, against the group's smallest radius (float rounding is monotone, so it holds
        for the float32 scores too)."""
        G = self.group_max.shape[1]
        rmin = r_cand[self.perm].view(G, -1).amin(1)  # (G,)
        cap = self.group_max[rows].clamp(max=self.row_v[rows, -1:])  # (n, G)
        return csls_from_cos(cap, self.r_src[rows, None], rmin[None, :]).amax(1)

    def column_bound(self, listed, r_col):
        """``(m,)`` an upper bound of the CSLS ``(2 cos - r_col) - r_src`` of each candidate column (the target as
        the query) with every eval source outside ``listed (K, m)``, its column list's rows: the largest key
        ``2 cos - r_src`` of the column's top :data:`KEYS` rows that is not listed (the ``KEYS``-th key when all
        are: no other row has a larger one), minus ``r_col (m,)``, plus :data:`KEY_ROUNDING` (the two float32
        expressions of the same sum).  Where a few sources stand out in a column, it is far tighter than the
        list's ``K``-th cosine against the smallest radius of all sources."""
        kv, ki = self.col_top  # (T, m)
        listed_key = (ki[:, None, :] == listed[None, :, :]).any(1)  # (T, m): the row is in the column's list
        out = torch.where(listed_key, torch.tensor(-torch.inf, device=kv.device), kv).amax(0)
        return torch.maximum(out, kv[-1]) - r_col + KEY_ROUNDING


def _column_groups(S, k: int, groups: int = GROUPS):
    """``(G * w,)`` the columns of the first block ``S (b, m)`` ordered by the mean of their top ``k``
    (an estimate of their CSLS radius), cut into ``G`` groups of ``w`` (the last column repeated to
    fill the last group): columns of one group have close radii, so the bounds of :class:`_Lists`
    are tight.  Any grouping gives a valid bound; this one only makes it useful."""
    m = S.shape[1]
    G = min(groups, m)
    w = -(-m // G)
    est = torch.topk(S, min(k, S.shape[0]), dim=0).values.mean(0)  # (m,)
    perm = torch.argsort(est)
    return torch.cat([perm, perm[-1:].expand(G * w - m)])


def _list_pass(P, C, m: int, counts, nq: int, csls_k: int, n_rows: int, links: _Links | None, K: int, bs: int,
               progress: bool, desc: str = "search") -> _Lists:
    """The one pass over the eval sources ``P (p, d)`` x ``C (m + e, d)`` (candidates, then extra targets).

    Per block of ``P`` rows: the cosine block, its rows' top-``K`` (and radius ``r_src``, the mean of the
    first ``csls_k``), its columns merged into the running column lists (over all rows: the metrics'
    ``r_eval``; over the query rows repeated ``counts`` times: the search radii ``r_search``, which also
    cover the extra targets), the gold cosine of each link whose source is in the block, and each column's
    running maximum of ``2 cos - r_src`` (``col_key``: minus the column's radius, its best CSLS).
    """
    p, mc = P.shape[0], C.shape[0]
    kr, kc, ke, ks = min(K, m), min(csls_k, m), min(csls_k, p), min(csls_k, max(n_rows, 1))
    same = bool((counts == 1).all())  # query rows = P: the column lists serve both radii
    row_v = torch.empty((p, kr), dtype=torch.float32, device=P.device)
    row_i = torch.empty((p, kr), dtype=torch.int64, device=P.device)
    r_src = torch.empty((p,), dtype=torch.float32, device=P.device)
    col = colq = col_s = col_x = perm = col_top = None
    buf = torch.empty((min(bs, p), m), dtype=torch.float32, device=P.device)
    kbuf = torch.empty_like(buf)  # the column keys' block, reused
    CT, XT = C[:m].T, C[m:].T
    with progress_bar(total=p, progress=progress, desc=desc, unit="row", leave=False) as bar:
        for i, a in enumerate(range(0, p, bs)):
            e = min(a + bs, p)
            S = torch.mm(P[a:e], CT, out=buf[:e - a])  # (b, m)
            v, ix = torch.topk(S, kr, dim=1)  # (b, kr) descending
            row_v[a:e], row_i[a:e] = v, ix
            r_src[a:e] = _mean_topk_t(v[:, :kc])
            if perm is None:
                perm = _column_groups(S, ke)
                group_max = torch.empty((p, len(perm) // min(GROUPS, m)), dtype=torch.float32, device=P.device)
            group_max[a:e] = S.index_select(1, perm).view(e - a, group_max.shape[1], -1).amax(2)
            if links is not None:
                sel, rr = links.rows_in(i, a)
                links.gold_cos[sel] = S[rr, links.q_tgt[sel]]
            col = _merge_column_lists(col, S, min(K, p), a)
            key = torch.mul(S, 2, out=kbuf[:e - a]).sub_(r_src[a:e, None])  # (b, m) csls_from_cos's first step
            col_top = _merge_column_keys(col_top, key, a)
            q = max(0, min(e, nq) - a)
            if q and nq < p:
                colq = _merge_column_lists(colq, S[:q], min(K, nq), a)
            c = counts[a:e]
            if int(c.sum()):
                Sx = P[a:e] @ XT if mc > m else None  # (b, e): the extra targets' columns, for their radius
                if not same:  # query rows repeated as often as they are rows
                    rep = torch.repeat_interleave(torch.arange(e - a, device=S.device), c)
                    col_s = _merge_column_topk(col_s, S[rep], ks)
                    Sx = Sx[rep] if Sx is not None else None
                if Sx is not None:
                    col_x = _merge_column_topk(col_x, Sx, ks)
            bar.update(e - a)
    r_eval = _mean_topk_t(col[0][:ke], dim=0)
    r_search = r_eval if same else _mean_topk_t(col_s, dim=0)
    if mc > m:
        r_search = torch.cat([r_search, _mean_topk_t(col_x, dim=0)])
    return _Lists(row_v, row_i, col, colq if nq < p else col, r_src, r_eval, r_search, perm, group_max, col_top)


def _merge_column_keys(top, key, offset: int):
    """The running top :data:`KEYS` ``(values (T, m), iteration rows (T, m))`` of each column merged with the
    block ``key (b, m)`` whose first row is iteration row ``offset`` (values descending)."""
    v, i = torch.topk(key, min(KEYS, key.shape[0]), dim=0)  # (t, m)
    i += offset
    if top is not None:
        v, i = torch.cat([top[0], v]), torch.cat([top[1], i])
        v, o = torch.topk(v, min(KEYS, v.shape[0]), dim=0)
        i = i.gather(0, o)
    return v, i


def _count_ranks(X, gs, idx, gidx):
    """``1 + #{x > g} + #{x == g, idx < gidx}`` per row of ``X (n, k)`` (the tie rule: lower index first)."""
    g = gs[:, None]
    return 1 + (X > g).sum(1) + ((X == g) & (idx < gidx[:, None])).sum(1)


def _fwd_from_lists(L: _Links, lists: _Lists, m: int):
    """src->tgt ranks of every link from its source's list; ``ok (n,)``: the list proves the rank
    (every candidate outside it scores strictly below the gold, by the bound of its ``K``-th cosine)."""
    i, g = L.q_it, L.q_tgt
    v, ids = lists.row_v[i], lists.row_i[i]  # (n, K)
    rs, re = lists.r_src[i], lists.r_eval
    gold = {"cos": L.gold_cos, "csls": csls_from_cos(L.gold_cos, rs, re[g])}
    scores = {"cos": v, "csls": csls_from_cos(v, rs[:, None], re[ids])}
    bound = {"cos": v[:, -1], "csls": lists.bound(i, re)}
    ranks = {k: _count_ranks(scores[k], gold[k], ids, g) for k in METHODS}
    ok = (bound["cos"] < gold["cos"]) & (bound["csls"] < gold["csls"])
    return ranks, ok | (v.shape[1] == m)


def _back_from_lists(L: _Links, lists: _Lists, eval_pos, p: int):
    """tgt->src ranks of every link from its target's column list (the target is the query:
    ``(2 cos - r_eval[j]) - r_src[i]``, ties to the lower eval position); ``ok`` as in the forward case."""
    j = L.q_tgt
    v, rows = lists.col[0][:, j].T, lists.col[1][:, j].T  # (n, K)
    rt, rs = lists.r_eval[j], lists.r_src
    gold = {"cos": L.gold_cos, "csls": csls_from_cos(L.gold_cos, rt, rs[L.q_it])}
    scores = {"cos": v, "csls": csls_from_cos(v, rt[:, None], rs[rows])}
    keys = lists.column_bound(lists.col[1], lists.r_eval)[j]  # (n,) by the column keys
    bound = {"cos": v[:, -1], "csls": torch.minimum(csls_from_cos(v[:, -1], rt, rs.min()), keys)}
    pos = eval_pos[rows]
    ranks = {k: _count_ranks(scores[k], gold[k], pos, L.q_eval) for k in METHODS}
    ok = (bound["cos"] < gold["cos"]) & (bound["csls"] < gold["csls"])
    return ranks, ok | (v.shape[1] == p)


def _sorted_by_score(score, ids):
    """Positions of each row of ``score (n, k)`` ordered by (score desc, ``ids`` asc)."""
    o1 = torch.argsort(ids, dim=1)
    o2 = torch.sort(score.gather(1, o1), dim=1, descending=True, stable=True).indices
    return o1.gather(1, o2)


def _top_from_lists(lists: _Lists, nq: int, t: int, method: str, m: int):
    """Top-``t`` ``(ids, cos, csls)`` of the ``nq`` query rows from their lists (search radii);
    ``ok (nq,)``: the ``t``-th score is above every candidate outside the list."""
    v, ids, rs = lists.row_v[:nq], lists.row_i[:nq], lists.r_src[:nq, None]
    rt = lists.r_search[:m]
    X = csls_from_cos(v, rs, rt[ids])  # (nq, K)
    score, bound = (X, lists.bound(slice(0, nq), rt)) if method == "csls" else (v, v[:, -1])
    sel = _sorted_by_score(score, ids)[:, :t]
    ok = (score.gather(1, sel[:, -1:])[:, 0] > bound) | (v.shape[1] == m)
    return (ids.gather(1, sel), v.gather(1, sel), X.gather(1, sel)), ok


def _reverse_from_lists(lists: _Lists, nq: int, method: str, m: int):
    """Each candidate's best query row (iteration position; the first one on ties) from its column
    list over the query rows; ``ok (m,)``: the best score is above every query row outside the list."""
    v, rows = lists.colq
    rt = lists.r_search[:m]
    rs = lists.r_src
    score = csls_from_cos(v, rt[None, :], rs[rows]) if method == "csls" else v  # (K, m)
    best = score.max(dim=0).values
    key = torch.where(score == best[None, :], rows, torch.iinfo(torch.int64).max).min(dim=0).values
    if method == "csls":  # the column keys are over every eval source: a bound over the query rows too
        bound = torch.minimum(csls_from_cos(v[-1], rt, rs[:nq].min()), lists.column_bound(rows, rt))
    else:
        bound = v[-1]
    return key, (best > bound) | (v.shape[0] == nq)


def _redo_rows(P, CT, rows, bs: int, known=None):
    """Cosine blocks ``(b, m)`` of the rows ``rows`` of ``P`` (the ones a list could not settle), in chunks.

    A product of another shape may take another kernel (small products do) whose float32 sums
    differ in the last bit from the pass's.  ``known = (values (n, K), columns (n, K))``: the pass's
    own cosines of each row's list; a chunk whose cosines differ from them in any bit is computed
    again padded (with its first row) to the pass's block shape ``(bs, m)``, so that every cosine
    equals the pass's bit for bit.  Without ``known`` every chunk is padded.
    """
    for a in range(0, len(rows), bs):
        chunk = rows[a:a + bs]
        b = len(chunk)
        S = None
        if known is not None and b >= MIN_ROWS:
            S = P[chunk] @ CT
            if not bool((S.gather(1, known[1][chunk]) == known[0][chunk]).all()):
                S = None
        if S is None:
            S = (P[torch.cat([chunk, chunk[:1].expand(max(bs - b, 0))])] @ CT)[:b]
        yield a, a + b, S


def _in_chunk(pos, a: int, e: int):
    """``(which, row in the chunk)`` of the entries whose position ``pos`` falls in ``a:e``."""
    which = ((pos >= a) & (pos < e)).nonzero().flatten()
    return which, pos[which] - a


def _redo_sources(P, Cm, lists: _Lists, links, bad_f, top, bad_t, t: int, method: str, bs: int) -> int:
    """Recompute, exactly and once, every source row a list could not settle: the forward ranks of
    the links ``bad_f`` and the top-``t`` of the query rows ``bad_t``.  Returns the rows redone."""
    m = Cm.shape[0]
    rows = torch.unique(torch.cat([links.q_it[bad_f] if links is not None else bad_f, bad_t]))  # sorted
    pos_f = torch.searchsorted(rows, links.q_it[bad_f]) if links is not None else bad_f
    pos_t = torch.searchsorted(rows, bad_t)
    colidx = torch.arange(m, device=P.device)
    for a, e, S in _redo_rows(P, Cm.T, rows, bs, (lists.row_v, lists.row_i)):  # (b, m)
        which, rr = _in_chunk(pos_f, a, e)
        if len(which):
            lk = bad_f[which]
            g = links.q_tgt[lk, None]
            Z = S[rr]  # (w, m)
            links.fwd["cos"][lk] = _count_ranks(Z, Z.gather(1, g)[:, 0], colidx[None, :], g[:, 0])
            X = csls_from_cos(Z, lists.r_src[links.q_it[lk], None], lists.r_eval[None, :])
            links.fwd["csls"][lk] = _count_ranks(X, X.gather(1, g)[:, 0], colidx[None, :], g[:, 0])
        which, rr = _in_chunk(pos_t, a, e)
        if len(which):
            q = bad_t[which]
            ids, cos, csls = _row_topk(S[rr], None, lists.r_src[q, None], lists.r_search[:m], t, method)
            top[0][q], top[1][q], top[2][q] = ids, cos, csls
    return len(rows)


def _redo_targets(P, Cm, lists: _Lists, links, bad_b, key, bad_r, eval_pos, nq: int, method: str, bs: int) -> int:
    """Recompute, exactly and once, every candidate column a list could not settle (the target as the
    query, against every eval source): the backward ranks of the links ``bad_b`` and the reverse best
    of the candidates ``bad_r``.  Returns the columns redone."""
    cols = torch.unique(torch.cat([links.q_tgt[bad_b] if links is not None else bad_b, bad_r]))
    pos_b = torch.searchsorted(cols, links.q_tgt[bad_b]) if links is not None else bad_b
    pos_r = torch.searchsorted(cols, bad_r)
    for a, e, S in _redo_rows(Cm, P.T, cols, bs, (lists.col[0].T, lists.col[1].T)):  # (b, p)
        which, rr = _in_chunk(pos_b, a, e)
        if len(which):
            lk = bad_b[which]
            Z = {"cos": S[rr]}
            Z["csls"] = csls_from_cos(Z["cos"], lists.r_eval[links.q_tgt[lk], None], lists.r_src[None, :])
            gi = links.q_it[lk, None]
            for k in METHODS:
                links.back[k][lk] = _count_ranks(Z[k], Z[k].gather(1, gi)[:, 0],
                                                 eval_pos[None, :].expand_as(Z[k]), links.q_eval[lk])
        which, rr = _in_chunk(pos_r, a, e)
        if len(which):
            j = bad_r[which]
            Y = S[rr, :nq]  # (w, nq) the query rows are the first nq
            if method == "csls":
                Y = csls_from_cos(Y, lists.r_search[j, None], lists.r_src[None, :nq])
            key[j] = Y.max(dim=1).indices  # the first maximum: the lowest iteration position
    return len(cols)


def _settle(P, Cm, lists: _Lists, links: _Links | None, eval_pos, nq: int, topk: int, method: str, reverse: bool,
            bs: int):
    """Ranks, top-``topk`` and reverse best from the lists; what a list cannot settle is recomputed
    exactly (its source row or target column against everything, each at most once).  Returns them
    and the numbers of rows and columns redone."""
    p, m = P.shape[0], Cm.shape[0]
    t = min(int(topk), m)
    none = torch.zeros((0,), dtype=torch.int64, device=P.device)
    bad_f = bad_b = bad_t = bad_r = none
    top = key = None
    if links is not None:
        links.fwd, ok = _fwd_from_lists(links, lists, m)
        bad_f = (~ok).nonzero().flatten()
        links.back, ok = _back_from_lists(links, lists, eval_pos, p)
        bad_b = (~ok).nonzero().flatten()
    if t:
        top, ok = _top_from_lists(lists, nq, t, method, m)
        bad_t = (~ok).nonzero().flatten()
    if reverse:
        key, ok = _reverse_from_lists(lists, nq, method, m)
        bad_r = (~ok).nonzero().flatten()
    redo = {"rows": _redo_sources(P, Cm, lists, links, bad_f, top, bad_t, t, method, min(bs, p)),
            "columns": _redo_targets(P, Cm, lists, links, bad_b, key, bad_r, eval_pos, nq, method, min(bs, m))}
    fwd, back = (links.fwd, links.back) if links is not None else (None, None)
    return fwd, back, top, key, redo


def _valid_pass(Q, C, r_tgt, csls_k: int, method: str, bs: int, progress: bool):
    """Top-2 ``(ids, scores)`` of each validation source ``Q (v, d)`` among ``C (m + e, d)``.

    Each row's radius is its own mean top-``csls_k`` cosine over ``C`` (as a query's); the
    targets' radii are ``r_tgt (m + e,)``.
    """
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


def _checked_inputs(src_emb, tgt_emb, rows, cand, gold, eval_src, extra, method: str, csls_k: int, topk: int):
    """:func:`search_once`'s arguments checked: ``(src, tgt, rows, cand, eval sources, extra)``.

    The embeddings are float32 views; the rows the pass reads are checked for NaN / inf when they
    are scaled (the others are never read, so a full scan would only cost time)."""
    if method not in METHODS:
        raise MmeaInputError(f"unknown similarity {method!r}; valid choices: {', '.join(METHODS)}")
    if int(csls_k) < 1 or int(topk) < 0:
        raise MmeaInputError(f"csls_k must be >= 1 and topk >= 0, got {csls_k} and {topk}")
    src, tgt = as_float32(src_emb, "source embeddings", False), as_float32(tgt_emb, "target embeddings", False)
    if src.shape[1] != tgt.shape[1]:
        raise MmeaInputError(f"source embeddings have dimension {src.shape[1]}, target embeddings {tgt.shape[1]}")
    rows, cand = _ids(rows, len(src), "source row"), _ids(cand, len(tgt), "target row")
    if not len(rows) or not len(cand):
        raise MmeaInputError(f"nothing to search: {len(rows)} source and {len(cand)} target rows")
    P = np.unique(rows) if eval_src is None else _ids(eval_src, len(src), "source row")
    if len(np.unique(P)) != len(P):
        raise MmeaInputError("the eval sources must be unique")
    extra = np.zeros(0, np.int64) if extra is None else _ids(extra, len(tgt), "target row")
    if gold is not None and len(np.asarray(gold).reshape(-1)) != len(rows):
        raise MmeaInputError(f"{len(np.asarray(gold).reshape(-1))} gold targets for {len(rows)} query rows")
    return src, tgt, rows, cand, P, extra


def search_once(src_emb: Any, tgt_emb: Any, rows: Any, cand: Any, *, gold: Any = None, eval_src: Any = None,
                topk: int = 2, reverse: bool = True, valid_src: Any = None, extra: Any = None,
                method: str = "csls", csls_k: int = 10, device: str = "cpu", block_size: int | None = None,
                progress: bool = False, desc: str = "search", list_size: int = LIST_SIZE) -> OnePass:
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
        progress, desc: bars over the pass (``desc``) and the calibration when stderr is a terminal.
        list_size: the candidates kept per row and the sources kept per column in the pass (``K``).
    """
    device = _check_device(device)
    src, tgt, rows, cand, P, extra = _checked_inputs(src_emb, tgt_emb, rows, cand, gold, eval_src, extra, method,
                                                     csls_k, topk)
    order, it_pos, q_src, counts, firsts = _iteration(rows, P, len(src))
    m, csls_k = len(cand), int(csls_k)
    bs = row_block_size(m, block_size, budget=BLOCK_ELEMENTS // 2)
    q_it = it_pos[q_src]  # (n,) each row's iteration position
    out = OnePass(num_valid_candidates=m + len(extra))
    with torch.no_grad():
        t = lambda x: torch.from_numpy(np.ascontiguousarray(x)).to(device)  # noqa: E731

        def unit(x, ids, what):  # (len(ids), d) unit rows, checked
            return torch.from_numpy(scale_rows(x[ids], inplace=True, what=what, rows=ids)).to(device)

        P_t = unit(src, P[order], "source embeddings")  # (p, d)
        C_t = unit(tgt, np.concatenate([cand, extra]), "target embeddings")  # (m + e, d)
        links = None if gold is None else _Links(t(q_it), t(q_src), t(_ids(gold, m, "gold target")), len(P), bs)
        K = max(int(list_size), csls_k, min(int(topk), m))
        lists = _list_pass(P_t, C_t, m, t(counts), len(firsts), csls_k, len(rows), links, K, bs, progress, desc)
        r_src, r_eval, r_search = lists.r_src, lists.r_eval, lists.r_search
        rt_s = r_search[:m]
        fwd, back, top, best, redo = _settle(P_t, C_t[:m], lists, links, t(order), len(firsts), topk, method,
                                             reverse, bs)
        out.stats = {"list_size": K, "redone_rows": redo["rows"], "redone_columns": redo["columns"]}
        if valid_src is not None and len(valid_src):
            vs = _ids(valid_src, len(src), "validation source")
            vid, vscore = _valid_pass(unit(src, vs, "source embeddings"), C_t, r_search, csls_k, method,
                                      row_block_size(len(C_t), block_size), progress)
            out.valid_ids, out.valid_scores = vid.cpu().numpy(), vscore.cpu().numpy()
    r_src = r_src.cpu().numpy()
    out.r_src, out.r_tgt = r_src[it_pos], r_eval.cpu().numpy()
    out.lists = {"src_ids": lists.row_i.cpu().numpy()[it_pos], "src_cos": lists.row_v.cpu().numpy()[it_pos],
                 "tgt_ids": order[lists.col[1].T.cpu().numpy()], "tgt_cos": lists.col[0].T.cpu().numpy()}
    # (2 cos - r_src) - r_tgt rounds monotonically in its first term, so the column maximum of the CSLS is the
    # maximum of the first term minus the radius: the same float32 value as a column maximum over the CSLS block
    out.column_best = {"cos": lists.col[0][0].cpu().numpy(), "csls": (lists.col_key - r_eval).cpu().numpy()}
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
