"""The align pipeline's search stage on Ray: sharded indexes of both sides, top-k merged by the driver.

The same quantities as the in-process pass (:func:`mmea.search.onepass.align_once`), from
:class:`~mmea.engine.shards.ShardedIndex` es of the eval sources ``P (p, d)`` and the candidates ``C (m, d)``:

1. **radii** (two rounds of top-k, one per side): ``r_P(x) = 1/k sum_{y in N_k(x)} cos(x, y)`` over ``C``
   and ``r_C(y)`` over ``P`` (Conneau et al., "Word Translation Without Parallel Data", ICLR 2018, eq. 6),
   each the mean of the merged top-``k`` of the shards: the radii come from the merged neighbour lists of
   both sides.  The same rounds give every test link's gold cosine (from the shard holding the gold).
2. **scores** (two more rounds): each query's top-k by CSLS ``(2 cos - r_P) - r_C`` merged across the
   target shards, and each test link's rank in both directions, ``1 + sum_s #{s_y > s_g} + #{s_y = s_g,
   y before g}`` summed over the shards (exact), and each candidate's best query source (``mutual``).

With exact shards the alignment, the ranks and the radii are identical to the in-process exact pass
(tests/test_ray_engine.py); with ``search.index`` ``ivf`` / ``hnsw`` every shard searches its own FAISS
index, the driver re-ranks the merged cosine candidates by CSLS, and the metrics are ranked in-process
(as for the in-process FAISS search).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .shards import ShardedIndex, merge_topk, shard_bounds

log = logging.getLogger("mmea.engine")

__all__ = ["ray_search_run", "SearchSides", "query_blocks"]


def query_blocks(n: int, m_shard: int, budget: int = 1 << 24) -> list[tuple[int, int]]:
    """``[(a, b), ...]`` query row blocks of about ``budget`` cosines per ``(block, m_shard)`` product."""
    bs = int(min(8192, max(64, budget // max(1, m_shard))))
    return [(a, min(a + bs, n)) for a in range(0, n, bs)]


def _mean_top(vals: np.ndarray, k: int) -> np.ndarray:
    """``(b,)`` float32 mean of the first ``k`` of each row (already descending), summed in float64."""
    return (vals[:, :k].astype(np.float64).sum(1) / max(k, 1)).astype(np.float32)


@dataclass
class SearchSides:
    """The rows of one search: ``P`` the eval sources in *iteration order* (the query rows by first
    appearance, then the others), ``C`` the candidates.

    ``order (p,)``: eval position (sorted source id order) of each iteration row; ``it_pos (p,)`` its
    inverse; ``row_it (n,)`` the iteration position of each query row; ``counts (p,)`` how often each
    iteration row is a query row; ``firsts (nq,)`` the first row position of each query source.
    """

    P: np.ndarray
    C: np.ndarray
    order: np.ndarray
    it_pos: np.ndarray
    row_it: np.ndarray
    counts: np.ndarray
    firsts: np.ndarray

    @classmethod
    def build(cls, src_emb, tgt_emb, rows: np.ndarray, eval_src: np.ndarray, cand: np.ndarray) -> "SearchSides":
        from ..search.knn import as_float32, scale_rows

        pos = np.searchsorted(eval_src, rows)  # (n,) eval position of each query row
        seen, at = np.unique(pos, return_index=True)
        first = np.full(len(eval_src), np.iinfo(np.int64).max, np.int64)
        first[seen] = at
        order = np.argsort(first, kind="stable")  # (p,)
        it_pos = np.empty(len(eval_src), np.int64)
        it_pos[order] = np.arange(len(eval_src))
        src, tgt = as_float32(src_emb, "source embeddings", False), as_float32(tgt_emb, "target embeddings", False)
        ids = eval_src[order]
        P = scale_rows(src[ids], inplace=True, what="source embeddings", rows=ids)  # (p, d)
        C = scale_rows(tgt[cand], inplace=True, what="target embeddings", rows=cand)  # (m, d)
        counts = np.bincount(pos, minlength=len(eval_src))[order]
        return cls(P, C, order, it_pos, it_pos[pos], counts, np.sort(at))


def _radius_round(index: ShardedIndex, Q: np.ndarray, k: int, gold: np.ndarray | None, weighted: bool) -> dict:
    """Top-``k`` cosines of every row of ``Q`` in ``index``, merged: ``r (n,)`` their mean, ``gold_cos (n,)``,
    ``wr (n, k)`` (the top-k over the rows repeated ``counts`` times) and the merged ``vals`` / ``ids``."""
    bounds = query_blocks(len(Q), max(b - a for a, b in index.bounds))
    blocks = [{"Q": Q[a:b], "k": k, "gold": None if gold is None else gold[a:b], "weighted": weighted}
              for a, b in bounds]
    vals, ids, gold_cos, wr = [], [], [], []
    for res in index.map_blocks("cos_topk", blocks):
        v, i = merge_topk([(r["vals"], r["ids"]) for r in res], k)
        vals.append(v)
        ids.append(i)
        if gold is not None:
            gold_cos.append(np.nanmax(np.stack([r["gold_cos"] for r in res]), axis=0))
        if weighted:
            wr.append(merge_topk([(r["wvals"], np.zeros_like(r["wvals"], np.int64)) for r in res], k)[0])
    out = {"vals": np.concatenate(vals), "ids": np.concatenate(ids)}
    out["r"] = _mean_top(out["vals"], min(k, index.m))
    out["gold_cos"] = np.concatenate(gold_cos).astype(np.float32) if gold is not None else None
    out["wr"] = np.concatenate(wr) if weighted else None  # (n, k) merged weighted top-k values
    return out


def _score_round(index: ShardedIndex, Q: np.ndarray, r_q: np.ndarray, k: int, method: str,
                 gold: dict | None, limit: int | None = None) -> dict:
    """Top-``k`` by ``method`` of every row of ``Q`` merged across ``index`` (``ids``, ``cos``, ``csls``) and,
    with ``gold``, the exact ranks ``{"cos", "csls"}`` of each row's gold (counts summed over the shards)."""
    bounds = query_blocks(len(Q), max(b - a for a, b in index.bounds))
    blocks = [{"Q": Q[a:b], "r_q": r_q[a:b], "k": k, "method": method, "limit": limit,
               "gold": None if gold is None else {g: v[a:b] for g, v in gold.items()}} for a, b in bounds]
    top, ranks = [], {"cos": [], "csls": []}
    for res in index.map_blocks("scores", blocks):
        if k:
            have = [r for r in res if "ids" in r]
            key = "csls" if method == "csls" else "cos"
            _, ids, cos, csls = merge_topk([(r[key], r["ids"]) for r in have], k, [r["cos"] for r in have],
                                           [r["csls"] for r in have])
            top.append((ids, cos, csls))
        if gold is not None:
            for name in ranks:
                ranks[name].append(1 + sum(r["above"][name] + r["tied"][name] for r in res))
    out: dict = {}
    if k:
        out["ids"], out["cos"], out["csls"] = (np.concatenate([t[j] for t in top]) for j in range(3))
    if gold is not None:
        out["ranks"] = {name: np.concatenate(v).astype(np.int64) for name, v in ranks.items()}
    return out


def _exact_radii(sides: SearchSides, src_idx: ShardedIndex, tgt_idx: ShardedIndex, q_tgt, csls_k: int) -> dict:
    """Rounds 1-2: ``r_P (p,)`` (iteration order), ``r_C_eval`` / ``r_C_search (m,)`` and the links' gold cosines."""
    n, p, m = len(sides.row_it), len(sides.P), len(sides.C)
    nq = len(sides.firsts)
    gold = None
    if q_tgt is not None:
        gold = np.full(p, -1, np.int64)
        gold[:nq] = q_tgt[sides.firsts]  # the first link of each query source
    fwd = _radius_round(tgt_idx, sides.P, min(csls_k, m), gold, False)
    out = {"r_P": fwd["r"]}
    if q_tgt is not None:
        gc = fwd["gold_cos"][sides.row_it]  # (n,)
        dup = np.flatnonzero(sides.firsts[sides.row_it] != np.arange(n))  # links that repeat a source
        if len(dup):
            gc[dup] = _radius_round(tgt_idx, sides.P[sides.row_it[dup]], 1, q_tgt[dup], False)["gold_cos"]
        out["gold_cos"] = gc
    weighted = not bool((sides.counts == 1).all())
    back = _radius_round(src_idx, sides.C, min(csls_k, p), None, weighted)
    out["r_C_eval"] = back["r"]
    out["r_C_search"] = _mean_top(back["wr"], min(csls_k, n)) if weighted else back["r"]
    return out


def _exact_search(sides: SearchSides, src_idx: ShardedIndex, tgt_idx: ShardedIndex, q_src, q_tgt, csls_k: int,
                  method: str, want: int) -> tuple:
    """The exact sharded search: ``(top (ids, cos, csls) per query row, r_src (n,), r_tgt (m,), reverse_best (m,),
    ranks | None)`` (module doc)."""
    n, m, nq = len(sides.row_it), len(sides.C), len(sides.firsts)
    r = _exact_radii(sides, src_idx, tgt_idx, q_tgt, csls_k)
    tgt_idx.set_radius("eval", r["r_C_eval"])
    tgt_idx.set_radius("search", r["r_C_search"])
    src_idx.set_radius("eval", r["r_P"])
    src_idx.set_radius("search", r["r_P"])
    r_rows = r["r_P"][sides.row_it]  # (n,)
    gold_f = gold_b = None
    if q_tgt is not None:
        gold_f = {"cos": r["gold_cos"], "key": q_tgt, "r": r["r_C_eval"][q_tgt]}
        gold_b = {"cos": r["gold_cos"], "key": q_src, "r": r["r_P"][sides.it_pos[q_src]]}
    fwd = _score_round(tgt_idx, sides.P[sides.row_it], r_rows, want, method, gold_f)
    reverse = np.zeros(m, np.int64)
    ranks = None
    merged = q_tgt is not None and np.array_equal(np.sort(q_tgt), np.arange(m)) \
        and np.array_equal(r["r_C_eval"], r["r_C_search"])
    if q_tgt is not None:  # tgt->src ranks (+ the reverse best when every candidate is one link's target)
        back = _score_round(src_idx, sides.C[q_tgt], r["r_C_eval"][q_tgt], 1 if merged else 0, method, gold_b,
                            limit=nq)
        ranks = {"src->tgt": fwd["ranks"], "tgt->src": back["ranks"]}
        if merged:
            reverse[q_tgt] = back["ids"][:, 0]
    if not merged:
        reverse = _score_round(src_idx, sides.C, r["r_C_search"], 1, method, None, limit=nq)["ids"][:, 0]
    top = (fwd["ids"], fwd["cos"], fwd["csls"])
    return top, r_rows, r["r_C_search"], sides.firsts[reverse], ranks


def _rerank(vals: np.ndarray, ids: np.ndarray, r_q: np.ndarray, r_base: np.ndarray, k: int, method: str) -> tuple:
    """Top-``k`` ``(ids, cos, csls)`` of approximate cosine candidates ``vals / ids (b, K)`` by ``method``."""
    ok = ids >= 0
    cs = np.where(ok, (2 * vals - r_q[:, None]) - r_base[np.maximum(ids, 0)], -np.inf).astype(np.float32)
    cv = np.where(ok, vals, -np.inf).astype(np.float32)
    key = cs if method == "csls" else cv
    o = np.lexsort((np.where(ok, ids, np.iinfo(np.int64).max), -key.astype(np.float64)), axis=1)[:, :k]
    return tuple(np.take_along_axis(a, o, 1) for a in (ids, cv, cs))


def _approx_search(ray, sides: SearchSides, shards: int, cpus: float, index: str, csls_k: int, method: str,
                   want: int) -> tuple:
    """The approximate sharded search (FAISS ``index`` per shard): candidates and radii from the merged
    approximate top-k of both sides, re-ranked by CSLS on the driver, as :func:`mmea.search.csls.csls_topk`."""
    Q = sides.P[sides.row_it]  # (n, d) the query rows, as the in-process FAISS search takes them
    n, m = len(Q), len(sides.C)
    K = min(m, max(50, 2 * want, csls_k))
    tgt_idx = ShardedIndex(ray, sides.C, shards, index=index, cpus=cpus)
    src_idx = ShardedIndex(ray, Q, shards, index=index, cpus=cpus)
    try:
        fwd = _radius_round(tgt_idx, Q, K, None, False)
        back = _radius_round(src_idx, sides.C, min(n, max(50, csls_k)), None, False)
    finally:
        tgt_idx.close()
        src_idx.close()

    def radius(v, i, k):
        ok = i[:, :k] >= 0
        return (np.where(ok, v[:, :k], 0).astype(np.float64).sum(1) / np.maximum(ok.sum(1), 1)).astype(np.float32)

    r_src, r_tgt = radius(fwd["vals"], fwd["ids"], min(csls_k, m)), radius(back["vals"], back["ids"], min(csls_k, n))
    top = _rerank(fwd["vals"], fwd["ids"], r_src, r_tgt, min(want, m), method)
    best = _rerank(back["vals"], back["ids"], r_tgt, r_src, 1, method)[0][:, 0]
    return top, r_src, r_tgt, np.maximum(best, 0), None


def ray_search_run(task, src_emb, tgt_emb, rows: np.ndarray, cand: np.ndarray, search, session,
                   progress: bool = False) -> tuple:
    """``(alignment, ranks | None, None)``: :func:`mmea.pipelines.align.search_run` on Ray (module doc).

    ``session``: a connected :class:`~mmea.engine.ray_engine.RaySession` (its ``shards``: slices per side).
    The ranks (exact shards) are those of the in-process pass; the validation scores are left to the
    calibration stage (``None``).
    """
    from ..evaluation import evaluation_rows
    from ..search.csls import SearchResult, _resolve_engine

    rows, cand = np.asarray(rows, np.int64), np.asarray(cand, np.int64)
    q_src = q_tgt = None
    if len(task.test):
        eval_src, _, q_src, q_tgt = evaluation_rows(task.test, len(src_emb), len(tgt_emb), search.candidates)
    else:
        eval_src = np.unique(rows)
    sides = SearchSides.build(src_emb, tgt_emb, rows, eval_src, cand)
    want = max(search.topk, 2)
    index = _resolve_engine(search.index, len(rows), len(cand), "cpu")
    shards, ray = session.shards, session.ray
    cpus = max(0.01, session.workers / (2 * shards))  # both sides' actors fit the cluster at once
    if index in ("torch", "flat"):
        src_idx = ShardedIndex(ray, sides.P, shards, tie_key=sides.order, counts=sides.counts, cpus=cpus)
        tgt_idx = ShardedIndex(ray, sides.C, shards, cpus=cpus)
        try:
            top, r_src, r_tgt, reverse, ranks = _exact_search(sides, src_idx, tgt_idx, q_src, q_tgt, search.csls_k,
                                                              search.method, want)
        finally:
            src_idx.close()
            tgt_idx.close()
    else:
        top, r_src, r_tgt, reverse, ranks = _approx_search(ray, sides, shards, cpus, index, search.csls_k,
                                                           search.method, want)
    result = SearchResult(ids=top[0], cos=top[1], csls=top[2], r_src=r_src, r_tgt=r_tgt, method=search.method,
                          csls_k=int(search.csls_k), exact=index in ("torch", "flat"), index=f"ray-{index}",
                          stats={"shards": len(shard_bounds(len(cand), shards))}, reverse_best=reverse)
    return _alignment(src_emb, tgt_emb, rows, cand, result, search), ranks, None


def _alignment(src_emb, tgt_emb, rows, cand, result, search):
    """The :class:`~mmea.search.matching.Alignment` of the merged top-k, with the run's matcher (as
    :func:`mmea.search.onepass.align_once`: the matcher reads the search's lists and radii)."""
    import dataclasses

    from ..search.matching import MATCHERS, Alignment, Similarity

    matching = None
    if search.match not in (None, "none"):
        sim = Similarity(np.asarray(src_emb)[rows], np.asarray(tgt_emb)[cand], method=search.method,
                         csls_k=search.csls_k, device="cpu", index=search.index, radius=(result.r_src, result.r_tgt))
        matching = MATCHERS.make(search.match).match(sim, result=result)
    keep = max(search.topk, 2)
    result = dataclasses.replace(result, ids=result.ids[:, :keep], cos=result.cos[:, :keep],
                                 csls=result.csls[:, :keep])
    return Alignment(rows, cand, result, result.reverse_best, matching, search.candidates)
