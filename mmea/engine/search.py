"""The align pipeline's search stage on Ray: the candidates sharded across actors, merged by the driver.

The same quantities as the in-process pass (:func:`mmea.search.onepass.align_once`), from a
:class:`~mmea.engine.shards.ShardedIndex` of the candidates ``C (m, d)`` queried by blocks of the eval
sources ``P (p, d)`` (in iteration order: the query rows first), in two rounds over the same products:

1. **radii**: each source's top-``k`` cosines per shard, merged: ``r_P(x) = 1/k sum_{y in N_k(x)} cos(x, y)``
   (Conneau et al., "Word Translation Without Parallel Data", ICLR 2018, eq. 6); each shard keeps a running
   top-``k`` of its columns over all blocks: ``r_C(y)`` over the sources.  So both radii come from the
   merged neighbour lists of both sides, as in-process; the same round gives each test link's gold cosine
   (from the shard that holds the gold).
2. **scores**: each query row's top-k by CSLS ``(2 cos - r_P) - r_C`` merged across shards; each test link's
   rank in both directions, ``1 + #{s > s_g} + #{s = s_g, before g}`` with the counts of every shard (and,
   tgt->src, every block) added; each candidate's best query row (the ``mutual`` column).

With exact shards the alignment, the ranks and the radii are identical to the in-process exact pass
(tests/test_ray_engine.py).  With ``search.index`` ``ivf`` / ``hnsw`` against the test targets the align
pipeline runs the in-process approximate pass (:func:`mmea.search.approx.approx_search`) with its lists
from :class:`RayLists` (each shard: its FAISS index and the model's channel indexes, the union re-scored
exactly; the driver merges the shards' top-k).  Otherwise (``--candidates all``) every shard of both sides
searches its own FAISS index, the driver re-ranks the merged cosine candidates by CSLS with the radii of
both sides' approximate lists, and the metrics are ranked in-process (as for the in-process FAISS search).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .shards import ShardedIndex, merge_topk, shard_bounds

log = logging.getLogger("mmea.engine")

__all__ = ["ray_search_run", "SearchSides", "query_blocks", "RayLists"]


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


def _topk_round(index: ShardedIndex, Q: np.ndarray, k: int, block: int | None = None, desc: str | None = None,
                **kwargs) -> dict:
    """Top-``k`` cosines of every row of ``Q`` in ``index``, merged: ``vals`` / ``ids`` ``(n, k)``; ``block``:
    query rows per call (default :func:`query_blocks`, sized for exact products); ``desc``: a progress bar."""
    bounds = (query_blocks(len(Q), max(b - a for a, b in index.bounds)) if block is None
              else [(a, min(a + block, len(Q))) for a in range(0, len(Q), block)])
    vals, ids = [], []
    for res in index.map_blocks("cos_topk", [{"Q": Q[a:b], "k": k, **kwargs} for a, b in bounds], desc=desc):
        v, i = merge_topk([(r["vals"], r["ids"]) for r in res], k)
        vals.append(v)
        ids.append(i)
    return {"vals": np.concatenate(vals), "ids": np.concatenate(ids)}


def _links_in(link_it: np.ndarray, a: int, b: int) -> np.ndarray:
    """The links whose source's iteration row lies in ``a:b``."""
    return np.flatnonzero((link_it >= a) & (link_it < b))


def _round_one(sides: SearchSides, index: ShardedIndex, q_tgt, csls_k: int, bounds: list) -> dict:
    """Round 1 (module doc): ``r_P (p,)``, ``r_C_eval`` / ``r_C_search (m,)`` and the links' gold cosines ``(n,)``."""
    n, p, m = len(sides.row_it), len(sides.P), len(sides.C)
    weighted = not bool((sides.counts == 1).all())
    index.each("begin_columns", min(csls_k, p), min(csls_k, n) if weighted else None)
    blocks = []
    for a, b in bounds:
        blk = {"Q": sides.P[a:b], "k": min(csls_k, m), "counts": sides.counts[a:b] if weighted else None}
        if q_tgt is not None:
            lk = _links_in(sides.row_it, a, b)
            blk["links"] = {"rows": sides.row_it[lk] - a, "cols": q_tgt[lk]}
        blocks.append(blk)
    r_P, gold_cos = [], []
    for res in index.map_blocks("radius_pass", blocks):
        r_P.append(_mean_top(merge_topk([(r["vals"], np.zeros_like(r["vals"], np.int64)) for r in res],
                                        min(csls_k, m))[0], min(csls_k, m)))
        if q_tgt is not None:
            gold_cos.append(np.nanmax(np.stack([r["gold_cos"] for r in res]), axis=0))
    cols = index.each("column_radii")
    out = {"r_P": np.concatenate(r_P), "r_C_eval": np.concatenate([c[0] for c in cols])}
    out["r_C_search"] = np.concatenate([c[1] for c in cols]) if weighted else out["r_C_eval"]
    if q_tgt is not None:  # per link, in the blocks' link order -> link order
        order = np.concatenate([_links_in(sides.row_it, a, b) for a, b in bounds])
        out["gold_cos"] = np.empty(n, np.float32)
        out["gold_cos"][order] = np.concatenate(gold_cos)
    return out


def _round_two(sides: SearchSides, index: ShardedIndex, r: dict, q_tgt, want: int, method: str, bounds: list) -> dict:
    """Round 2 (module doc): the query rows' top-k, the links' ranks both ways, each candidate's best query row."""
    nq = len(sides.firsts)
    blocks = []
    for a, b in bounds:
        blk = {"Q": sides.P[a:b], "r_q": r["r_P"][a:b], "k": want if a < nq else 0, "method": method,
               "best_rows": max(0, min(b, nq) - a)}
        if q_tgt is not None:
            lk = _links_in(sides.row_it, a, b)
            blk.update(row_key=sides.order[a:b], fwd={"rows": sides.row_it[lk] - a, "cols": q_tgt[lk],
                                                      "cos": r["gold_cos"][lk], "r": r["r_C_eval"][q_tgt[lk]]})
        blocks.append(blk)
    top, fwd, back = [], [], None
    best_v = best_r = None
    for (a, _), res in zip(bounds, index.map_blocks("score_pass", blocks)):
        if "ids" in res[0]:
            key = "csls" if method == "csls" else "cos"
            top.append(merge_topk([(x[key], x["ids"]) for x in res], want, [x["cos"] for x in res],
                                  [x["csls"] for x in res])[1:])
        if q_tgt is not None:
            fwd.append({k: 1 + sum(x["fwd_above"][k] + x["fwd_tied"][k] for x in res) for k in ("cos", "csls")})
            blk = {k: np.concatenate([x["back_above"][k] + x["back_tied"][k] for x in res]) for k in ("cos", "csls")}
            back = blk if back is None else {k: back[k] + blk[k] for k in blk}
        if "best_val" in res[0]:
            v, rows = np.concatenate([x["best_val"] for x in res]), np.concatenate([x["best_row"] for x in res]) + a
            better = v > best_v if best_v is not None else np.ones(len(v), bool)  # ties keep the earlier block
            best_v = v if best_v is None else np.where(better, v, best_v)
            best_r = rows if best_r is None else np.where(better, rows, best_r)
    return {"top": tuple(np.concatenate([t[j] for t in top])[: nq] for j in range(3)), "fwd": fwd, "back": back,
            "best": best_r}


def _exact_search(sides: SearchSides, index: ShardedIndex, q_src, q_tgt, csls_k: int, method: str,
                  want: int) -> tuple:
    """The exact sharded search: ``(top (ids, cos, csls) per query row, r_src (n,), r_tgt (m,), reverse_best (m,),
    ranks | None)`` (module doc)."""
    bounds = query_blocks(len(sides.P), max(b - a for a, b in index.bounds))
    r = _round_one(sides, index, q_tgt, csls_k, bounds)
    index.set_radius("eval", r["r_C_eval"])
    index.set_radius("search", r["r_C_search"])
    if q_tgt is not None:  # each link's tgt->src gold score: (2 cos - r_C[g]) - r_P[source]
        gc = r["gold_cos"]
        gold = {"cos": gc, "csls": (2 * gc - r["r_C_eval"][q_tgt]) - r["r_P"][sides.it_pos[q_src]]}
        shard_of = np.searchsorted([b for _, b in index.bounds], q_tgt, side="right")  # (n,) the shard of each gold
        index.ray.get([a.set_back_links.remote(q_tgt, gold, q_src) for a in index.actors])
    out = _round_two(sides, index, r, q_tgt, want, method, bounds)
    ranks = None
    if q_tgt is not None:
        order = np.concatenate([_links_in(sides.row_it, a, b) for a, b in bounds])
        fwd = {k: np.empty(len(q_tgt), np.int64) for k in ("cos", "csls")}
        for k in fwd:
            fwd[k][order] = np.concatenate([f[k] for f in out["fwd"]])
        back = {k: _scatter_back(out["back"][k], q_tgt, shard_of) for k in ("cos", "csls")}
        ranks = {"src->tgt": fwd, "tgt->src": back}
    ids, cos, csls = (x[sides.row_it] for x in out["top"])  # per unique query row -> per row
    return (ids, cos, csls), r["r_P"][sides.row_it], r["r_C_search"], sides.firsts[out["best"]], ranks


def _scatter_back(counts: np.ndarray, q_tgt: np.ndarray, shard_of: np.ndarray) -> np.ndarray:
    """``(n,)`` tgt->src ranks in link order from the shards' counts, concatenated in shard order (each shard
    lists the links whose gold it holds, in link order)."""
    order = np.argsort(shard_of, kind="stable")  # links grouped by their gold's shard, link order within
    out = np.empty(len(q_tgt), np.int64)
    out[order] = 1 + counts
    return out


def _rerank(vals: np.ndarray, ids: np.ndarray, r_q: np.ndarray, r_base: np.ndarray, k: int, method: str) -> tuple:
    """Top-``k`` ``(ids, cos, csls)`` of approximate cosine candidates ``vals / ids (b, K)`` by ``method``."""
    ok = ids >= 0
    cs = np.where(ok, (2 * vals - r_q[:, None]) - r_base[np.maximum(ids, 0)], -np.inf).astype(np.float32)
    cv = np.where(ok, vals, -np.inf).astype(np.float32)
    key = cs if method == "csls" else cv
    o = np.lexsort((np.where(ok, ids, np.iinfo(np.int64).max), -key.astype(np.float64)), axis=1)[:, :k]
    return tuple(np.take_along_axis(a, o, 1) for a in (ids, cv, cs))


def _approx_search(ray, sides: SearchSides, shards: int, cpus: float, index: str, csls_k: int, method: str,
                   want: int, options: dict | None = None) -> tuple:
    """The approximate sharded search (FAISS ``index`` per shard, built with ``options``: the run's
    ``search.nprobe`` / ``ef_search`` / ``ivf_storage``): candidates and radii from the merged approximate top-k
    of both sides, re-ranked by CSLS on the driver, as :func:`mmea.search.csls.csls_topk`."""
    Q = sides.P[sides.row_it]  # (n, d) the query rows, as the in-process FAISS search takes them
    n, m = len(Q), len(sides.C)
    K = min(m, max(50, 2 * want, csls_k))
    tgt_idx = ShardedIndex(ray, sides.C, shards, index=index, index_options=options, cpus=cpus)
    src_idx = ShardedIndex(ray, Q, shards, index=index, index_options=options, cpus=cpus)
    try:
        fwd = _topk_round(tgt_idx, Q, K)
        back = _topk_round(src_idx, sides.C, min(n, max(50, csls_k)))
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


#: query rows per call of an approximate shard (a FAISS search is cheap per row; Ray calls are not)
APPROX_BLOCK = 16384


class RayLists:
    """The lists of :func:`mmea.search.approx.approx_search` on Ray: each side's rows sharded across
    :class:`~mmea.engine.shards.IndexShard` actors, each with its FAISS index and the model's channel
    indexes; a query's top-``k`` is the merge of the shards' re-scored top-``k`` (the ``k`` best of a union
    are among the ``k`` best of its parts), so one shard gives the in-process lists.

    Call as ``lists(base, queries, k, channels) -> (cos (q, k), ids (q, k), index)``; ``index.search(Q, k)``
    (whole rows, as the in-process whole-row index) serves the validation sources.  :meth:`close` ends the
    actors.
    """

    def __init__(self, session, index: str, options: dict | None = None, progress: bool = False):
        self.session, self.index, self.options, self.progress = session, index, dict(options or {}), progress
        self.cpus = _cpus_per_actor(2 * session.shards, session.workers)  # both sides' actors at once
        self.open: list = []

    def __call__(self, base: np.ndarray, queries: np.ndarray, k: int, channels: dict | None):
        idx = ShardedIndex(self.session.ray, base, self.session.shards, index=self.index,
                           index_options=self.options, cpus=self.cpus, channels=channels)
        self.open.append(idx)
        got = _topk_round(idx, queries, k, block=APPROX_BLOCK,
                          desc=f"{self.index} lists on {len(idx.bounds)} shards" if self.progress else None)
        if channels:
            idx.each("drop_channels")  # before the other side's actors start: at 1M about 1 GiB a shard
        return got["vals"], got["ids"], _WholeRows(idx, _sharded_name(self.index, idx))

    def close(self) -> None:
        for idx in self.open:
            idx.close()
        self.open = []


def _sharded_name(index: str, idx: ShardedIndex) -> str:
    """``ray-ivf[2 shards, nprobe 16]``: the index kind, its slices and the cells an IVF slice scans a query
    (:func:`~mmea.engine.shards.shard_index_options`)."""
    probe = f", nprobe {idx.options['nprobe']}" if "nprobe" in idx.options and index == "ivf" else ""
    return f"ray-{index}[{len(idx.bounds)} shards{probe}]"


class _WholeRows:
    """``search(Q, k)`` over a :class:`ShardedIndex`'s whole-row indexes (no channels), merged."""

    def __init__(self, idx: ShardedIndex, name: str):
        self.idx, self.registry_name = idx, name

    def search(self, Q: np.ndarray, k: int) -> tuple:
        got = _topk_round(self.idx, np.ascontiguousarray(Q, np.float32), k, block=APPROX_BLOCK, channels=False)
        return got["vals"], got["ids"]


def _cpus_per_actor(actors: int, cpus: int) -> float:
    """CPUs each of ``actors`` actors reserves so that all of them fit ``cpus`` whole CPUs on any number of
    nodes: ``1 / ceil(actors / cpus)`` (a fraction that packs whole CPUs, so no actor waits for a CPU that
    is split across two nodes)."""
    return 1.0 / max(1, -(-int(actors) // max(1, int(cpus))))


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
    cpus = _cpus_per_actor(2 * shards, session.workers)  # the approximate search's two sides at once
    if index in ("torch", "flat"):
        tgt_idx = ShardedIndex(ray, sides.C, shards, cpus=_cpus_per_actor(shards, session.workers))
        try:
            top, r_src, r_tgt, reverse, ranks = _exact_search(sides, tgt_idx, q_src, q_tgt, search.csls_k,
                                                              search.method, want)
        finally:
            tgt_idx.close()
    else:
        top, r_src, r_tgt, reverse, ranks = _approx_search(ray, sides, shards, cpus, index, search.csls_k,
                                                           search.method, want, search.index_options())
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
