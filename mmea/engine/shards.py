"""A sharded search index: the candidates' unit embeddings split across Ray actors, merged by the driver.

Base rows ``0..m`` are cut into ``K`` contiguous slices; :class:`IndexShard` (one Ray actor per slice)
holds its slice ``T_s (m_s, d)`` and answers blocks of queries ``Q (b, d)`` (the eval sources):

* :meth:`IndexShard.cos_topk`: each query's top-k cosines in the slice (the ``k`` best of a union are the
  ``k`` best of the slices' ``k`` best, so the driver's merge gives the CSLS radius ``r(x) = 1/k
  sum_{y in N_k(x)} cos(x, y)``, Conneau et al., ICLR 2018, eq. 6);
* round 1, :meth:`IndexShard.radius_pass`: the same, plus a running top-k of every column of the slice
  over all query blocks (the targets' radii, :meth:`~IndexShard.column_radii`) and the test links' gold
  cosines;
* round 2, :meth:`IndexShard.score_pass`: each query's top-k by CSLS ``(2 cos - r_x) - r_y`` (or cosine),
  the two counts of the rank rule of :mod:`mmea.search.csls` (``#{s > s_g}`` and ``#{s = s_g, key <
  key_g}``) in both directions, and each column's best query: a rank is ``1 +`` the counts summed over
  the slices (and blocks), exact.

Every score is the float32 expression of :func:`~mmea.search.csls.csls_from_cos` on cosines from the same
``torch.mm`` blocks as the in-process pass (a product's entries do not depend on how its columns are
sliced; queries of fewer than :data:`MIN_ROWS` rows are padded, since tiny products may take other kernels),
and ties go to the lower position, so the merged lists equal the in-process exact search id for id.
With ``index = "ivf" | "hnsw"`` a slice searches its own FAISS index (:mod:`mmea.search.knn`) instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["IndexShard", "ShardedIndex", "merge_topk", "shard_bounds", "shard_index_options", "MIN_ROWS"]

#: queries per product at least (padded with the first row): tiny products may take other float32 kernels
MIN_ROWS = 64


def shard_bounds(m: int, shards: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]``: ``m`` rows cut into at most ``shards`` contiguous non-empty slices."""
    cuts = np.linspace(0, m, max(1, min(int(shards), m)) + 1).astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def merge_topk(parts: list[tuple[np.ndarray, np.ndarray]], k: int, *carry: list[np.ndarray]) -> tuple:
    """The top-``k`` ``(scores (b, k), ids (b, k), *carried)`` of the union of the shards' ``(scores (b, k_s),
    ids (b, k_s))``; ``carry``: per-shard arrays of the same shapes gathered alongside (the cosines of a
    CSLS list).

    Ordered by score descending, then id ascending (ids ``-1``, slots an approximate index left empty,
    last): the rule of :func:`mmea.search.knn.sort_rows_np`, so the merge of exact shards equals one exact
    search over all rows.
    """
    vals = np.concatenate([np.asarray(v, np.float32) for v, _ in parts], axis=1)  # (b, sum k_s)
    ids = np.concatenate([np.asarray(i, np.int64) for _, i in parts], axis=1)
    o = np.lexsort((ids, -vals.astype(np.float64), ids < 0), axis=1)[:, :k]  # (b, k)
    out = [np.take_along_axis(vals, o, 1), np.take_along_axis(ids, o, 1)]
    out += [np.take_along_axis(np.concatenate(c, axis=1), o, 1) for c in carry]
    return tuple(out)


def shard_index_options(index: str, options: dict | None, m_shard: int, m_total: int) -> dict:
    """The index options of one slice of ``m_shard`` rows out of ``m_total``, chosen so that the slices
    together scan as many rows a query as one index over all ``m_total`` rows would.

    An IVF query scans ``nprobe`` cells of ``m / nlist`` rows; with the default ``nlist`` (about ``4 sqrt(m)``,
    :func:`mmea.search.knn.default_nlist`) a slice has fewer, smaller cells, and the same ``nprobe`` on each of
    ``K`` slices scans about ``sqrt(K)`` times the rows (at 1M on 2 slices: 2048 cells a slice against 4096,
    nprobe 32 scanned twice the rows of the in-process pass, for its time).  So a slice scans
    ``nprobe_s = round(nprobe * nlist(m_s) / nlist(m))`` cells (at least 1): ``K nprobe_s m_s / nlist(m_s)
    = nprobe m / nlist(m)`` rows, the same share of each slice as the whole index scans of the whole base.
    With ``nlist`` given every slice has that many cells and the share is already the same; other indexes'
    options pass unchanged.
    """
    from ..search.knn import IVF_NPROBE, default_nlist

    opts = dict(options or {})
    if index != "ivf" or opts.get("nlist") or m_shard >= m_total:
        return opts
    nprobe = int(opts.get("nprobe") or IVF_NPROBE)
    opts["nprobe"] = max(1, int(round(nprobe * default_nlist(m_shard) / default_nlist(m_total))))
    return opts


class IndexShard:
    """Rows ``offset:offset + m_s`` of one side (unit float32 ``base (m_s, d)``), as a Ray actor or in-process.

    ``index``: ``torch`` (exact, the default) or a FAISS kind of :data:`mmea.search.knn.INDEXES`;
    ``total``: the rows of the whole side (the options are those of :func:`shard_index_options`);
    ``threads``: torch threads of this actor.  Ties go to the lower base position.
    """

    def __init__(self, base: np.ndarray, offset: int, *, index: str = "torch", index_options: dict | None = None,
                 threads: int = 1, channels: dict | None = None, total: int | None = None):
        import torch

        torch.set_num_threads(max(1, int(threads)))
        self.base = np.array(base, dtype=np.float32, copy=True)  # (m_s, d); writable (object-store views are not)
        self.T = torch.from_numpy(self.base)
        self.offset, self.m = int(offset), len(self.base)
        self.key = torch.arange(self.offset, self.offset + self.m)  # (m_s,) the tie key: the base position
        self.radii: dict = {}
        self.approx, self.channels = None, []
        if index not in ("torch", "flat"):
            from ..search.approx import unit_block
            from ..search.knn import make_index

            opts = shard_index_options(index, index_options, self.m, total or self.m)
            self.approx = make_index(index, self.base, n_queries=self.m, **opts)
            self.channels = [(cols, make_index(index, unit_block(self.base, cols), n_queries=self.m, **opts))
                             for cols in (channels or {}).values()]

    def size(self) -> int:
        return self.m

    def drop_channels(self) -> None:
        """Free the channel indexes (and their unit-row copies) once the lists are made: the whole-row index
        alone serves the later searches (the validation sources)."""
        self.channels = []

    def set_radius(self, name: str, r: np.ndarray) -> None:
        """Store ``r (m_s,)``, this slice's CSLS radii under ``name`` (``eval``, ``search``)."""
        import torch

        self.radii[name] = torch.from_numpy(np.array(r, np.float32))

    def _products(self, Q: np.ndarray):
        """``Q (b, d) @ T.T`` -> torch ``(b, m_s)`` cosines, computed padded to :data:`MIN_ROWS` rows."""
        import torch

        b = len(Q)
        q = torch.from_numpy(np.ascontiguousarray(Q, np.float32))
        if b < MIN_ROWS:
            q = torch.cat([q, q[:1].expand(MIN_ROWS - b, -1)])
        return (q @ self.T.T)[:b]

    def cos_topk(self, Q: np.ndarray, k: int, channels: bool = True) -> dict:
        """Top-``k`` cosines of each query ``Q (b, d)`` here: ``vals (b, k')`` descending, ``ids (b, k')`` base
        positions (``-1`` where an approximate index found fewer).  With channel indexes (and ``channels``)
        every index proposes ``k`` ids and their union is re-scored exactly on the whole rows
        (:func:`mmea.search.approx.union_topk`, as :func:`~mmea.search.approx.channel_lists` in one process)."""
        import torch

        if self.approx is not None:
            if channels and self.channels:
                from ..search.approx import union_topk, unit_block

                Q = np.ascontiguousarray(Q, np.float32)
                found = [self.approx.candidates(Q, k)] + [ch.candidates(unit_block(Q, cols), k)
                                                          for cols, ch in self.channels]
                vals, ids = union_topk(self.base, Q, found, k)
            else:
                vals, ids = self.approx.search(Q, k)
            return {"vals": vals, "ids": np.where(ids >= 0, ids + self.offset, -1)}
        with torch.no_grad():
            v, i = torch.topk(self._products(Q), min(k, self.m), dim=1)
        return {"vals": v.numpy(), "ids": i.numpy() + self.offset}

    # -- the two rounds of the exact sharded search (mmea.engine.search) --------------------------------------
    def begin_columns(self, k_eval: int, k_search: int | None) -> None:
        """Start the running column top-k of round 1: over every query row (``k_eval``) and, with
        ``k_search``, over the rows repeated as often as they are query rows."""
        self.col = self.wcol = None
        self.k_eval, self.k_search = int(k_eval), k_search

    def radius_pass(self, Q: np.ndarray, k: int, links: dict | None = None, counts: Any = None) -> dict:
        """Round 1 on a block of eval sources ``Q (b, d)``: each row's top-``k`` cosines here (``vals (b, k')``,
        for its radius), the running column top-k of every column here (:meth:`column_radii`; ``counts (b,)``:
        each row's repeats in the weighted one) and ``gold_cos (l,)``, the cosine of each link ``links =
        {"rows": (l,) block rows, "cols": (l,) base positions}`` whose column lies here (NaN elsewhere)."""
        import torch

        from ..search.csls import _merge_column_topk

        with torch.no_grad():
            S = self._products(Q)  # (b, m_s)
            out = {"vals": torch.topk(S, min(k, self.m), dim=1).values.numpy()}
            self.col = _merge_column_topk(self.col, S, self.k_eval)
            if self.k_search is not None:
                rep = torch.repeat_interleave(torch.arange(len(Q)), torch.from_numpy(np.asarray(counts, np.int64)))
                if len(rep):
                    self.wcol = _merge_column_topk(self.wcol, S[rep], self.k_search)
            if links is not None:
                out["gold_cos"] = self._link_cos(S, links["rows"], links["cols"])
        return out

    def _link_cos(self, S, rows, cols) -> np.ndarray:
        """``(l,)`` ``S[rows, cols - offset]`` where the column lies here, NaN elsewhere."""
        import torch

        r, c = torch.from_numpy(np.asarray(rows, np.int64)), torch.from_numpy(np.asarray(cols, np.int64)) - self.offset
        here = ((c >= 0) & (c < self.m)).nonzero().flatten()
        out = torch.full((len(r),), float("nan"))
        out[here] = S[r[here], c[here]]
        return out.numpy()

    def column_radii(self) -> tuple:
        """``(r_eval (m_s,), r_search (m_s,) | None)``: the mean of each column's running top-k (round 1)."""
        from ..search.csls import _mean_topk_t

        rs = _mean_topk_t(self.wcol, dim=0).numpy() if self.wcol is not None else None
        return _mean_topk_t(self.col, dim=0).numpy(), rs

    def set_back_links(self, cols: np.ndarray, gold: dict, key: np.ndarray) -> None:
        """The links whose gold column lies here, for round 2's tgt->src counts: ``cols (n,)`` base
        positions of every link's gold, ``gold = {"cos", "csls"}`` ``(n,)`` its tgt->src gold scores,
        ``key (n,)`` the tie key (eval position) of its source."""
        import torch

        c = np.asarray(cols, np.int64) - self.offset
        self.back = np.flatnonzero((c >= 0) & (c < self.m))  # (L,) the links whose gold is here
        self.back_cols = torch.from_numpy(c[self.back])
        self.back_gold = {k: torch.from_numpy(np.asarray(v, np.float32)[self.back]) for k, v in gold.items()}
        self.back_key = torch.from_numpy(np.asarray(key, np.int64)[self.back])

    def score_pass(self, Q: np.ndarray, r_q: np.ndarray, k: int, *, method: str = "csls", fwd: dict | None = None,
                   row_key: Any = None, best_rows: int = 0) -> dict:
        """Round 2 on a block of eval sources ``Q (b, d)`` with radii ``r_q (b,)``:

        * ``ids`` / ``cos`` / ``csls`` ``(b, k')``: each row's top-``k`` here by ``method``, CSLS with the
          ``search`` radii;
        * ``fwd_above`` / ``fwd_tied`` ``{m: (l,)}``: the src->tgt rank counts of the links ``fwd = {"rows",
          "cols", "cos", "r"}`` (block rows, gold base positions, gold cosines, gold ``eval`` radii);
        * ``back_above`` / ``back_tied`` ``{m: (L,)}``: the tgt->src counts over this block's rows of the
          links whose gold lies here (:meth:`set_back_links`; ``row_key (b,)``: the rows' tie keys);
        * ``best_val`` / ``best_row`` ``(m_s,)``: each column's best among the first ``best_rows`` rows
          (``(2 cos - r_search) - r_q``, the first row on ties).
        """
        import torch

        from ..search.csls import csls_from_cos
        from ..search.knn import topk_rows

        out: dict = {}
        with torch.no_grad():
            S = self._products(Q)  # (b, m_s)
            rq = torch.from_numpy(np.asarray(r_q, np.float32))[:, None]  # (b, 1)
            if k:
                X = csls_from_cos(S, rq, self.radii["search"][None, :])  # (b, m_s)
                _, i = topk_rows(X if method == "csls" else S, min(k, self.m))
                out.update(ids=i.numpy() + self.offset, cos=S.gather(1, i).numpy(), csls=X.gather(1, i).numpy())
            if fwd is not None:
                out.update(self._forward_counts(S, rq, fwd))
            if row_key is not None:
                out.update(self._back_counts(S, rq, torch.from_numpy(np.asarray(row_key, np.int64))))
            if best_rows:
                Y = S[:best_rows]
                if method == "csls":
                    Y = csls_from_cos(Y, self.radii["search"][None, :], rq[:best_rows])  # the target is the query
                v, r = Y.max(dim=0)  # (m_s,): the first maximum on ties
                out.update(best_val=v.numpy(), best_row=r.numpy())
        return out

    def _forward_counts(self, S, rq, fwd: dict) -> dict:
        """The src->tgt counts ``#{s > s_g}``, ``#{s = s_g, column < g}`` of each link of ``fwd`` over the columns here."""
        import torch

        from ..search.csls import csls_from_cos

        rows = torch.from_numpy(np.asarray(fwd["rows"], np.int64))
        g = torch.from_numpy(np.asarray(fwd["cols"], np.int64))
        gc = torch.from_numpy(np.asarray(fwd["cos"], np.float32))
        r_l = rq[rows]  # (l, 1)
        Z = {"cos": S[rows]}  # (l, m_s)
        Z["csls"] = csls_from_cos(Z["cos"], r_l, self.radii["eval"][None, :])
        gold = {"cos": gc, "csls": csls_from_cos(gc, r_l[:, 0], torch.from_numpy(np.asarray(fwd["r"], np.float32)))}
        before = self.key[None, :] < g[:, None]  # (l, m_s)
        return {"fwd_above": {k: (Z[k] > gold[k][:, None]).sum(1).numpy() for k in Z},
                "fwd_tied": {k: ((Z[k] == gold[k][:, None]) & before).sum(1).numpy() for k in Z}}

    def _back_counts(self, S, rq, row_key) -> dict:
        """The tgt->src counts of the links whose gold lies here over this block's rows: the target is the
        query, ``(2 cos - r_eval[g]) - r_q[x]``, ties by the rows' ``row_key``."""
        from ..search.csls import csls_from_cos

        Z = {"cos": S[:, self.back_cols]}  # (b, L)
        Z["csls"] = csls_from_cos(Z["cos"], self.radii["eval"][self.back_cols][None, :], rq)
        before = row_key[:, None] < self.back_key[None, :]  # (b, L)
        return {"back_above": {k: (Z[k] > self.back_gold[k][None, :]).sum(0).numpy() for k in Z},
                "back_tied": {k: ((Z[k] == self.back_gold[k][None, :]) & before).sum(0).numpy() for k in Z}}


class ShardedIndex:
    """The driver's handle on one side split across :class:`IndexShard` Ray actors (see the module doc).

    ``base (m, d)``: unit float32 rows; ``shards``: slices (one actor each); ``cpus``: CPUs each actor
    reserves (fractions allowed, so both sides' actors fit a small cluster); the actors are spread over
    the cluster's nodes.  Calls take a list of query blocks and return the per-block results in order.
    """

    def __init__(self, ray, base: np.ndarray, shards: int, *, index: str = "torch", index_options: dict | None = None,
                 cpus: float = 1.0, channels: dict | None = None):
        self.ray, self.m = ray, len(base)
        self.bounds = shard_bounds(len(base), shards)
        a, b = self.bounds[0]  # the options of the first slice (the others', give or take a row)
        self.options = shard_index_options(index, index_options, b - a, self.m)
        actor = ray.remote(IndexShard).options(num_cpus=cpus, scheduling_strategy="SPREAD")
        self.actors = [actor.remote(ray.put(base[a:b]), a, index=index, index_options=index_options,
                                    threads=max(1, int(cpus)), channels=channels, total=self.m)
                       for a, b in self.bounds]

    def each(self, method: str, *args, **kwargs) -> list:
        """Call ``method`` on every shard (same arguments); the results in shard order."""
        return self.ray.get([getattr(a, method).remote(*args, **kwargs) for a in self.actors])

    def set_radius(self, name: str, r: np.ndarray) -> None:
        self.ray.get([a.set_radius.remote(name, r[lo:hi]) for a, (lo, hi) in zip(self.actors, self.bounds)])

    def map_blocks(self, method: str, blocks: list[dict], window: int = 4, desc: str | None = None) -> list[list]:
        """``method(**block)`` on every shard for each block of keyword arguments, at most ``window``
        blocks in flight; ``[[shard results] per block]``.  ``desc``: a progress bar (blocks, with ETA)."""
        from ..progress import progress_bar

        out, pending = [], []
        with progress_bar(total=len(blocks), desc=desc, unit="block", progress=desc is not None) as bar:
            for blk in blocks:
                refs = {k: (self.ray.put(v) if isinstance(v, np.ndarray) and v.size > 4096 else v)
                        for k, v in blk.items()}
                pending.append([getattr(a, method).remote(**refs) for a in self.actors])
                if len(pending) >= window:
                    out.append(self.ray.get(pending.pop(0)))
                    bar.update(1)
            for p in pending:
                out.append(self.ray.get(p))
                bar.update(1)
        return out

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
