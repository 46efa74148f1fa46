"""The approximate search pass of a large ``mmea align`` run: two index searches give everything.

Above :data:`~mmea.search.knn.APPROX_PAIRS` query-candidate pairs the exact pass of
:mod:`mmea.search.onepass` costs ``n m d`` multiply-adds (529K x 529K x 512 at 1M entities a side:
days on two cores).  :func:`approx_search` builds one FAISS index (IVF, Jégou et al. TPAMI 2011;
or HNSW, Malkov & Yashunin TPAMI 2018) over the candidate targets and one over the query sources,
and searches each side's top-``K`` (:data:`LIST_SIZE`) *cosine* neighbours in the other once:

* the CSLS radii (Conneau et al., ICLR 2018) come from those approximate lists of **both** sides:
  ``r_src[i]`` the mean of source ``i``'s ``csls_k`` best target cosines, ``r_tgt[j]`` of target
  ``j``'s best source cosines;
* each list is re-scored, ``csls = (2 cos - r_query) - r_candidate`` (the float32 expression of
  :func:`~mmea.search.csls.csls_from_cos`), and sorted by the run's score (ties: lower index first);
* the forward lists give the alignment's top-k, the gold ranks src->tgt and the validation sources'
  top 2; the reverse lists the mutual best matches and the gold ranks tgt->src; both lists are the
  sparse candidate graph of the one-to-one assignment (:func:`listed_one_to_one`).

A gold partner outside its list is **not ranked** (rank ``-1``, :data:`~mmea.pipelines.align.RANK_NOT_RANKED`):
its true rank is above ``K`` (or the index missed it).  :func:`metrics_from_lists` counts it as a miss
for Hits@k and 0 in the MRR (a lower bound, short by less than ``1 / (K + 1)`` per unranked link) and
reports no MR.  Memory: the two indexes (a copy of each side's rows), the ``(n, K)`` lists, no
``(n, m)`` block.  The validation sources are searched in the target index too; their own targets
(not candidates) are scored exactly, blockwise (:class:`~mmea.search.knn.TorchIndex`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..errors import MmeaInputError
from .csls import METHODS, SearchResult, list_positions
from .knn import TorchIndex, as_float32, exact_scores, make_index, scale_rows
from .matching import ListedSimilarity, assigned_hits, solve_one_to_one
from .onepass import OnePass

__all__ = ["LIST_SIZE", "approx_search", "sorted_lists", "listed_mutual_pairs", "list_ranks", "list_rank_metrics",
           "metrics_from_lists", "listed_one_to_one"]

log = logging.getLogger("mmea.search")

#: neighbours kept per source and per target (the one-to-one graph's ``sparse_k`` too)
LIST_SIZE = 50


def _radius(cos: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """``(n,)`` mean of each row's first ``k`` found cosines (rows sorted descending; ``-1`` ids skipped)."""
    v, ok = cos[:, :k], ids[:, :k] >= 0
    return (np.where(ok, v, 0).astype(np.float64).sum(1) / np.maximum(ok.sum(1), 1)).astype(np.float32)


def sorted_lists(cos: np.ndarray, ids: np.ndarray, r_query: np.ndarray, r_cand: np.ndarray, method: str
                 ) -> SearchResult:
    """Candidate lists ``ids (n, K)`` with cosines ``cos (n, K)`` re-sorted by ``method``'s score.

    CSLS ``(2 cos - r_query[i]) - r_cand[ids]``; order: score descending, then candidate index ascending;
    unfilled slots (id ``-1``) last.  Returns a :class:`~mmea.search.csls.SearchResult` (radii included).
    """
    ok = ids >= 0
    csls = ((np.float32(2) * cos - r_query[:, None]) - r_cand[np.maximum(ids, 0)]).astype(np.float32)  # (n, K)
    score = np.where(ok, csls if method == "csls" else cos, -np.inf)
    order = np.lexsort((np.where(ok, ids, np.iinfo(np.int64).max), -score), axis=-1)  # (n, K)
    take = lambda a: np.take_along_axis(a, order, axis=1)  # noqa: E731
    return SearchResult(ids=take(ids), cos=take(cos), csls=take(csls), r_src=r_query, r_tgt=r_cand, method=method,
                        exact=False)


def list_ranks(lists: SearchResult, rows: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """``(n,)`` 1-based position of ``gold[i]`` in list ``rows[i]`` of ``lists``; ``-1`` when not in it."""
    return list_positions(lists.ids, rows, gold)


def _ranks(fwd: dict, bwd: dict, q: np.ndarray, gold: np.ndarray) -> dict:
    """``ranks[direction][method]`` of the links ``(q[i] source position, gold[i] candidate position)``."""
    return {"src->tgt": {m: list_ranks(fwd[m], q, gold) for m in METHODS},
            "tgt->src": {m: list_ranks(bwd[m], gold, q) for m in METHODS}}


def _valid_top(idx_t, idx_s, V: np.ndarray, E: np.ndarray, r_tgt: np.ndarray, K: int, csls_k: int, method: str,
               block_size: int | None, sparse: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The validation sources' top 2 over ``cand + extra``: ``(ids (v, 2) positions, scores (v, 2))``.

    ``sparse``: the pass's sparse term (:func:`_sparse_parts`) with the rows of ``V`` (``"valid"``) and ``E``
    (``"extra"``) too: every list is then re-scored with it, as the test lists are."""
    m = len(r_tgt)
    v_cos, v_ids = idx_t.search(V, K)  # (v, K) over the candidates
    if sparse is not None:
        v_cos, v_ids = with_sparse(sparse["T"], V, v_cos, v_ids, sparse["valid"], sparse["cand"], sparse["weight"], K)
    if len(E):
        e_cos, e_ids = idx_s.search(E, csls_k)  # (e, csls_k) over the query sources, like the candidates
        if sparse is not None:
            e_cos, e_ids = with_sparse(sparse["S"], E, e_cos, e_ids, sparse["extra"], sparse["src"], sparse["weight"],
                                       csls_k)
        r_extra = _radius(e_cos, e_ids, csls_k)  # (e,)
        e_cos, e_ids = TorchIndex(block_size=block_size).build(E).search(V, min(K, len(E)))  # exact, blockwise
        if sparse is not None:  # the dense top-K of the extras and their sparse top-K, re-scored with both terms
            e_cos, e_ids = with_sparse(E, V, e_cos, e_ids, sparse["valid"], sparse["extra"], sparse["weight"],
                                       min(K, len(E)))
        v_cos = np.concatenate([v_cos, e_cos], axis=1)
        v_ids = np.concatenate([v_ids, np.where(e_ids >= 0, e_ids + m, -1)], axis=1)
        order = np.argsort(-np.where(v_ids >= 0, v_cos, -np.inf), axis=1, kind="stable")
        v_cos, v_ids = np.take_along_axis(v_cos, order, 1), np.take_along_axis(v_ids, order, 1)
        r_all = np.concatenate([r_tgt, r_extra])
    else:
        r_all = r_tgt
    top = sorted_lists(v_cos, v_ids, _radius(v_cos, v_ids, csls_k), r_all, method)
    return top.ids[:, :2], top.scores[:, :2]


def with_sparse(base: np.ndarray, queries: np.ndarray, cos: np.ndarray, ids: np.ndarray, sq, sb, weight: float,
                k: int) -> tuple:
    """``(sim (q, k), ids (q, k))``: the dense candidate lists ``ids (q, K)`` (``-1``: none) with their exact
    cosines ``cos (q, K)``, joined by each query's exact sparse top-``k`` (rows of ``sq (q, L)`` against
    ``sb (m, L)``); the union scored ``<e_q, e_c> + weight <u_q, u_c>`` (dense unit rows of ``base (m, d)``,
    sparse rows of ``sb``) and the best ``k`` kept (ties: lower id).  Only the sparse candidates' cosines are
    computed here; one sparse product block at a time (:func:`mmea.search.sparse.products`) gives both the
    sparse top-``k`` and the sparse scores of the union."""
    from .sparse import lookup, products, row_topk

    sims, out = [np.zeros((0, k), np.float32)], [np.zeros((0, k), np.int64)]
    for a, x in products(sq, sb):
        e = a + x.shape[0]
        s_ids = row_topk(x, min(k, sb.shape[0]))[1]  # (b, k) exact
        cand = np.concatenate([ids[a:e], s_ids], axis=1)  # (b, K + k)
        v = np.concatenate([cos[a:e], exact_scores(base, queries[a:e], s_ids, chunk=1024)], axis=1)  # -inf: none
        order = np.argsort(cand, axis=1, kind="stable")  # a repeat: its dense-list copy first
        cand, v = np.take_along_axis(cand, order, 1), np.take_along_axis(v, order, 1)
        rep = np.zeros(cand.shape, bool)
        rep[:, 1:] = cand[:, 1:] == cand[:, :-1]
        cand[rep], v[rep] = -1, -np.inf
        v = v + np.float32(weight) * lookup(x, cand)
        order = np.lexsort((np.where(cand >= 0, cand, np.iinfo(np.int64).max), -v), axis=-1)[:, :k]
        top = np.take_along_axis(v, order, 1)
        sims.append(top)
        out.append(np.where(np.isfinite(top), np.take_along_axis(cand, order, 1), -1))
    return np.concatenate(sims), np.concatenate(out)


def unit_block(x: np.ndarray, cols: tuple[int, int]) -> np.ndarray:
    """``(n, b)`` float32 copy of columns ``cols = (start, stop)`` of ``x``, rows L2-normalised."""
    return scale_rows(np.ascontiguousarray(x[:, cols[0]:cols[1]]), inplace=True)


def union_topk(base: np.ndarray, queries: np.ndarray, found: list[np.ndarray], k: int) -> tuple:
    """``(cos (q, k), ids (q, k))``: the union of the candidate id lists ``found`` (each ``(q, k_c)``, ``-1``:
    none) re-scored by exact cosine on the whole rows, the best ``k`` kept (ties: lower id)."""
    cand = np.sort(np.concatenate(found, axis=1), axis=1)  # (q, sum k_c)
    cand[:, 1:][cand[:, 1:] == cand[:, :-1]] = -1  # repeats
    return _rescore(base, queries, cand, k)


def _block_candidates(ix, cols: tuple[int, int], queries: np.ndarray, k: int, step: int = 65536) -> np.ndarray:
    """``(q, k)`` candidate ids (``-1``: none) of the block index ``ix`` over columns ``cols`` of ``queries``,
    ``step`` query rows at a time (their unit block copy)."""
    return np.concatenate([ix.candidates(unit_block(queries[a:a + step], cols), k)
                           for a in range(0, len(queries), step)] or [np.zeros((0, k), np.int64)])


class ChannelIndex:
    """Candidates from column blocks only: each block's own index (over its unit rows) proposes its top-``k``,
    the union is re-scored exactly on the whole rows (:func:`union_topk`); no index over the whole rows.

    For a pass whose model also proposes candidates through a sparse term (label propagation's anchor
    overlap, :class:`~mmea.search.sparse.SparseBlock`): there the whole-row index, the pass's largest (512
    columns against the names block's 128), finds little the names channel and the term do not.  On the 1M
    synthetic pair (5,000 sampled test sources, exact top-50 lists, cosine + overlap scoring) the gold target
    is ranked first for 0.8392 with whole rows + names + overlap and 0.8400 with names + overlap (0.9210 /
    0.9224 after one overlap round).  ``search(Q, k) -> (cos (q, k), ids (q, k))`` like a
    :class:`~mmea.search.knn.SearchIndex`; the block indexes stay built (the validation pass searches again).
    """

    exact = False

    def __init__(self, index: str, base: np.ndarray, channels: dict, n_queries: int, opts: dict):
        self.base = base  # (m, d) unit rows
        self.parts = [(cols, make_index(index, unit_block(base, cols), n_queries=n_queries, **opts))
                      for cols in channels.values()]
        self.registry_name = self.parts[0][1].registry_name

    def candidates(self, queries: np.ndarray, k: int) -> list[np.ndarray]:
        """Each block's ``(q, k)`` candidate ids (``-1``: none)."""
        return [_block_candidates(ix, cols, queries, k) for cols, ix in self.parts]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return union_topk(self.base, queries, self.candidates(queries, min(int(k), len(self.base))),
                          min(int(k), len(self.base)))


def channel_lists(index: str, base: np.ndarray, queries: np.ndarray, k: int, channels: dict | None, opts: dict,
                  whole: bool = True) -> tuple:
    """``(cos (q, k), ids (q, k), full index | None)``: each query's approximate cosine top-``k`` in ``base``.

    Without ``channels`` one index over the whole rows.  With ``channels`` (``{name: (start, stop)}``
    column blocks of the embedding, e.g. label propagation's structure and names parts) one more index
    per block, over that block's unit rows: every channel proposes its top-``k``, the union (``<= (1 +
    C) k`` distinct ids a query) is re-scored exactly on the whole rows and the best ``k`` by cosine are
    kept.  Multi-channel candidate generation (as LargeEA's name and structure channels, Ge et al.,
    VLDB 2022): the gold partner of a query can be far in the whole space's cells yet near in one
    block's.  On the 1M synthetic pair (5,000 sampled sources, IVF defaults) the gold target is in the
    whole-row top-50 for 0.694 of them, in the union with the names and structure channels for 0.851
    (exact top-50: 0.869).  Channel indexes are built, searched and freed one at a time.  ``whole=False`` (with
    ``channels``): no whole-row index; the channels alone propose (:class:`ChannelIndex`, which is returned).
    """
    if channels and not whole:
        ch_idx = ChannelIndex(index, base, channels, len(queries), opts)
        return (*ch_idx.search(queries, k), ch_idx)
    idx = make_index(index, base, n_queries=len(queries), **opts)
    if not channels:
        return (*idx.search(queries, k), idx)  # (q, k) cosines and ids
    found = [idx.candidates(queries, k)]  # (q, k)
    for cols in channels.values():  # ids only: the union is re-scored on the whole rows below
        ch = make_index(index, unit_block(base, cols), n_queries=len(queries), **opts)
        found.append(_block_candidates(ch, cols, queries, k))
        del ch
    return (*union_topk(base, queries, found, k), idx)


def _rescore(base: np.ndarray, queries: np.ndarray, cand: np.ndarray, k: int, chunk: int = 1024) -> tuple:
    """The best ``k`` of each row's candidate ids ``cand (q, c)`` (``-1``: none) by exact cosine (unit rows):
    ``(cos (q, k), ids (q, k))``, descending, ties by lower id; chunked (``chunk x c x d`` floats at a time)."""
    q = len(cand)
    cos_out, ids_out = np.full((q, k), -np.inf, np.float32), np.full((q, k), -1, np.int64)
    for a in range(0, q, chunk):
        c = cand[a:a + chunk]  # (b, c)
        v = exact_scores(base, queries[a:a + chunk], c, chunk=chunk)  # (b, c); -inf where c is -1
        order = np.lexsort((np.where(c >= 0, c, np.iinfo(np.int64).max), -v), axis=-1)[:, :k]
        cos_out[a:a + chunk] = np.take_along_axis(v, order, 1)
        ids_out[a:a + chunk] = np.where(np.isfinite(cos_out[a:a + chunk]), np.take_along_axis(c, order, 1), -1)
    return cos_out, ids_out


def approx_search(src_emb: Any, tgt_emb: Any, rows: Any, cand: Any, *, topk: int = 2, method: str = "csls",
                  csls_k: int = 10, index: str = "ivf", device: str = "cpu", gold: Any = None,
                  valid_src: Any = None, extra: Any = None, list_size: int = LIST_SIZE, block_size: int | None = None,
                  progress: bool = False, channels: dict | None = None, lists=None, sparse=None,
                  whole_rows: bool = True, **index_params) -> OnePass:
    """The run's search from two approximate index searches (see the module docstring).

    ``rows (n,)`` query source ids (repeats allowed: they share one list), ``cand (m,)`` candidate target
    ids; ``gold (n,)``: each row's gold target as a position in ``cand`` (ranks), or ``None``;
    ``valid_src`` / ``extra``: the validation sources and their targets outside ``cand``
    (:func:`mmea.calibration.valid_queries`); ``channels``: column blocks searched as well
    (:func:`channel_lists`).  ``lists``: who computes each side's lists, ``lists(base, queries, k, channels)
    -> (cos, ids, index)`` with ``index.search(Q, k)`` and ``index.registry_name`` (default: :func:`channel_lists`
    in this process; ``--engine ray``: the shards of :class:`mmea.engine.search.RayLists`); ``whole_rows=False``
    with ``channels`` (in this process): the blocks alone propose, no whole-row index (:class:`ChannelIndex`).
    ``sparse``: a
    :class:`~mmea.search.sparse.SparseBlock` over all entities; every list (test, reverse, validation) is then
    joined by the exact sparse top-``K`` and re-scored ``cos + weight * sparse`` (:func:`with_sparse`).
    Returns a :class:`~mmea.search.onepass.OnePass` whose
    ``result`` is in ``rows`` order, ``r_src`` / ``lists["forward"]`` in ``np.unique(rows)`` order,
    ``ranks`` with ``-1`` for a link not in its list, ``stats["approximate"]``.
    """
    if method not in METHODS:
        raise MmeaInputError(f"unknown similarity {method!r}; valid choices: {', '.join(METHODS)}")
    src_emb, tgt_emb = np.asarray(src_emb), np.asarray(tgt_emb)
    rows, cand = np.asarray(rows, np.int64).reshape(-1), np.asarray(cand, np.int64).reshape(-1)
    eval_src, q = np.unique(rows, return_inverse=True)  # (p,), (n,) position of each row in eval_src
    S = scale_rows(as_float32(src_emb[eval_src], "source embeddings"), inplace=True)  # (p, d)
    T = scale_rows(as_float32(tgt_emb[cand], "target embeddings"), inplace=True)  # (m, d)
    K, Kb, kc = min(list_size, len(T)), min(list_size, len(S)), int(csls_k)
    opts = dict(device=device, block_size=block_size, progress=progress, **index_params)
    whole = whole_rows or not channels or lists is not None  # the block indexes alone: in this process only
    if lists is None:
        def lists(base, queries, k, chans):
            return channel_lists(index, base, queries, k, chans, opts, whole=whole)
    f_cos, f_ids, idx_t = lists(T, S, K, channels)  # (p, K) neighbours of each source
    b_cos, b_ids, idx_s = lists(S, T, Kb, channels)  # (m, Kb) neighbours of each target
    fwd, bwd, r_src, r_tgt, sp_rows, rounds = _two_way((f_cos, f_ids, b_cos, b_ids), (S, T), (K, Kb, kc), method,
                                                       sparse, (eval_src, cand, valid_src, extra))
    del f_cos, f_ids, b_cos, b_ids
    first_row = np.zeros(len(eval_src), np.int64)  # (p,) first position in rows of each eval source
    first_row[q[::-1]] = np.arange(len(rows))[::-1]
    f, b = fwd[method], bwd[method]
    keep = min(int(topk), K)
    result = SearchResult(ids=f.ids[q, :keep], cos=f.cos[q, :keep], csls=f.csls[q, :keep], r_src=r_src[q],
                          r_tgt=r_tgt, method=method, csls_k=kc, exact=False, index=idx_t.registry_name,
                          reverse_best=np.where(b.ids[:, 0] >= 0, first_row[np.maximum(b.ids[:, 0], 0)], -1))
    found = OnePass(result=result, r_src=r_src, r_tgt=r_tgt, lists={"forward": f, "reverse": b},
                    stats={"approximate": not getattr(idx_t, "exact", False), "listed": True, "index": result.index,
                           "list_size": K, "channels": ["whole rows"] * whole + [*(channels or {})]
                           + ([f"{sparse.name} (exact sparse)"] if sparse is not None else []),
                           **({"sparse_rounds": rounds} if rounds else {})})
    if gold is not None:
        found.ranks = _ranks(fwd, bwd, q, np.asarray(gold, np.int64).reshape(-1))
    if valid_src is not None and len(valid_src):
        E = scale_rows(as_float32(tgt_emb[np.asarray(extra if extra is not None else [], np.int64)].reshape(
            -1, T.shape[1]), "target embeddings"), inplace=True)
        V = scale_rows(as_float32(src_emb[np.asarray(valid_src, np.int64)], "source embeddings"), inplace=True)
        found.valid_ids, found.valid_scores = _valid_top(idx_t, idx_s, V, E, r_tgt, K, kc, method, block_size,
                                                         sp_rows)
        found.num_valid_candidates = len(T) + len(E)
    return found


def _two_way(dense: tuple, bases: tuple, sizes: tuple, method: str, sparse, rows: tuple) -> tuple:
    """Both sides' scored lists from the dense ones: ``(fwd, bwd, r_src, r_tgt, sparse rows, rounds)``.

    ``dense = (f_cos (p, K), f_ids, b_cos (m, Kb), b_ids)``, ``bases = (S (p, d), T (m, d))`` unit rows,
    ``sizes = (K, Kb, csls_k)``, ``rows = (eval_src, cand, valid_src, extra)``.  Each list is joined by the
    sparse term's exact top-``K`` (:func:`with_sparse`), radii and ``{method: SearchResult}`` follow.

    Sparse rounds (``sparse.rounds > 0`` with ``sparse.refine``): the pairs that are each other's first entry in
    the ``method``-sorted lists (mutual best, :func:`listed_mutual_pairs`; entity ids, no gold read) go to
    ``sparse.refine``, which returns the term rebuilt with them (label propagation: more anchors in the
    overlap, :meth:`~mmea.models.label_propagation.LabelPropagationModel.refine_overlap`), and the *same*
    dense lists are joined and scored again: a bootstrapping round (BootEA, Sun et al., IJCAI 2018; LightEA's
    iterations) that costs sparse products, not another index search.  ``rounds``: ``[{"pairs": n}, ...]``.
    """
    f_cos0, f_ids0, b_cos0, b_ids0 = dense
    (S, T), (K, Kb, kc), (eval_src, cand) = bases, sizes, rows[:2]
    rounds: list[dict] = []
    while True:
        sp_rows = _sparse_parts(sparse, *rows)
        f_cos, f_ids, b_cos, b_ids = dense
        if sp_rows is not None:  # one more candidate channel and one more term in every score
            w = sp_rows["weight"]
            sp_rows.update(T=T, S=S)
            f_cos, f_ids = with_sparse(T, S, f_cos0, f_ids0, sp_rows["src"], sp_rows["cand"], w, K)
            b_cos, b_ids = with_sparse(S, T, b_cos0, b_ids0, sp_rows["cand"], sp_rows["src"], w, Kb)
        r_src, r_tgt = _radius(f_cos, f_ids, min(kc, K)), _radius(b_cos, b_ids, min(kc, Kb))  # (p,), (m,)
        fwd = {m: sorted_lists(f_cos, f_ids, r_src, r_tgt, m) for m in METHODS}
        bwd = {m: sorted_lists(b_cos, b_ids, r_tgt, r_src, m) for m in METHODS}
        if sparse is None or sparse.refine is None or len(rounds) >= sparse.rounds:
            return fwd, bwd, r_src, r_tgt, sp_rows, rounds
        pairs = listed_mutual_pairs(fwd[method], bwd[method], eval_src, cand)  # (q, 2) entity ids
        del fwd, bwd, f_cos, f_ids, b_cos, b_ids, sp_rows  # the round's lists are rebuilt from the dense ones
        rounds.append({"pairs": int(len(pairs))})
        log.info("search: sparse round %d: %d mutual best pairs go to the %s", len(rounds), len(pairs), sparse.name)
        sparse = sparse.refine(pairs)


def listed_mutual_pairs(fwd: SearchResult, bwd: SearchResult, eval_src: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """``(q, 2)`` entity-id pairs ``(eval_src[i], cand[j])`` whose first list entries point at each other:
    ``fwd.ids[i, 0] == j`` (positions into ``cand``) and ``bwd.ids[j, 0] == i`` (positions into ``eval_src``)."""
    best = fwd.ids[:, 0] if fwd.ids.shape[1] else np.full(len(eval_src), -1, np.int64)  # (p,)
    back = bwd.ids[:, 0] if bwd.ids.shape[1] else np.full(len(cand), -1, np.int64)  # (m,)
    i = np.flatnonzero(best >= 0)
    i = i[back[best[i]] == i]
    return np.stack([np.asarray(eval_src, np.int64)[i], np.asarray(cand, np.int64)[best[i]]], axis=1).reshape(-1, 2)


def _sparse_parts(sparse, eval_src: np.ndarray, cand: np.ndarray, valid_src, extra) -> dict | None:
    """The rows of ``sparse`` (a :class:`~mmea.search.sparse.SparseBlock` or ``None``) that the pass scores:
    the query sources, the candidates, the validation sources and the extra validation targets."""
    if sparse is None:
        return None
    pick = lambda m, ids: m[np.asarray(ids if ids is not None else [], np.int64)]  # noqa: E731
    return {"weight": float(sparse.weight), "src": sparse.src[eval_src], "cand": sparse.tgt[cand],
            "valid": pick(sparse.src, valid_src), "extra": pick(sparse.tgt, extra)}


def list_rank_metrics(ranks, ks=(1, 5, 10)) -> dict:
    """Hits@k, MRR (an unranked link, ``-1``, counts 0: a lower bound), ``n`` and the ranked share of list ranks;
    no MR (an unranked link's rank is unknown)."""
    r = np.asarray(ranks, np.float64)
    if not len(r):
        raise MmeaInputError("no ranks to evaluate (empty test set?)")
    ranked = r >= 1
    return {**{f"hits@{k}": float(np.mean(ranked & (r <= k))) for k in ks}, "mr": None,
            "mrr": float(np.mean(np.where(ranked, 1.0 / np.maximum(r, 1), 0.0))), "n": int(len(r)),
            "ranked": float(np.mean(ranked))}


def metrics_from_lists(ranks: dict, *, list_size: int, index: str, candidates: str, num_candidates: dict,
                       csls_k: int, primary: tuple = ("src->tgt", "csls"), ks=(1, 5, 10), approximate: bool = True
                       ) -> dict:
    """The evaluation dict of :func:`mmea.evaluation.metrics_from_ranks` from list ranks (``-1``: not in the
    list): Hits@k exact given the lists, MRR with an unranked link counted 0 (a lower bound), no MR."""
    direction, method = primary
    by_method = {f"{d}/{mth}": list_rank_metrics(r, ks) for d, per in ranks.items() for mth, r in per.items()}
    key = f"{direction}/{method}"
    return {"test": {**by_method[key], "direction": direction, "method": method}, "test_by_method": by_method,
            "primary": key, "candidates": candidates, "num_candidates": num_candidates,
            "num_links": by_method[key]["n"], "csls_k": int(csls_k),
            "ranks_from": f"{'approximate' if approximate else 'exact'} top-{list_size} lists ({index}): "
                          "a gold partner outside its list is a miss "
                          "(MRR 0, a lower bound); MR not computed",
            "ranks": np.asarray(ranks[direction][method], np.int64)}


def listed_one_to_one(found: OnePass, links: np.ndarray, cand: np.ndarray, solver: str = "auto") -> dict:
    """Hits@1 of the one-to-one assignment over the pass's two-way lists (the sparse assignment's graph).

    ``found``: :func:`approx_search` of the links' sources against ``cand``; solved over the union of
    each source's and each target's top-``K`` by the run's score by
    :func:`~mmea.search.matching.solve_one_to_one` (exact sparse Hungarian, LAPJVsp, up to 100K sources;
    Sinkhorn + greedy above); returns ``{"hits@1", "solver", "pairs"}``.
    """
    links = np.asarray(links, np.int64).reshape(-1, 2)
    sources = np.unique(links[:, 0])  # the lists' eval_src order
    fwd, bwd = found.lists["forward"], found.lists["reverse"]
    matching, label = solve_one_to_one(ListedSimilarity(len(sources), len(cand), fwd, bwd), solver)
    k, kind = fwd.ids.shape[1], "approximate" if found.stats.get("approximate", True) else "exact"
    return {"hits@1": assigned_hits(matching, sources, cand, links), "pairs": int(len(matching)),
            "solver": f"{label} over each side's {kind} top-{k} by {fwd.method}, {found.stats.get('index')})"}
