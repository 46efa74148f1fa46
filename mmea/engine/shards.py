"""A sharded search index: one side's unit embeddings split across Ray actors, top-k merged by the driver.

Base rows ``0..m`` are cut into ``K`` contiguous slices; :class:`IndexShard` (one Ray actor per slice)
holds its slice ``T_s (m_s, d)`` and answers a block of queries ``Q (b, d)`` with

* :meth:`IndexShard.cos_topk`: each query's top-k cosines in the slice (the CSLS radius
  ``r(x) = 1/k sum_{y in N_k(x)} cos(x, y)``, Conneau et al., ICLR 2018, eq. 6, is the mean of the merged
  top-k; the ``k`` best of a union are the ``k`` best of the slices' ``k`` best), and the gold cosine of
  each query whose gold row lives in the slice;
* :meth:`IndexShard.scores`: each query's top-k by CSLS ``(2 cos - r_q) - r_y`` (or cosine) and the two
  counts of the rank rule of :mod:`mmea.search.csls`, ``#{y: s_y > s_g}`` and ``#{y: s_y = s_g, key_y <
  key_g}``; a rank is ``1 +`` their sums over the slices, exact.

Every score is the float32 expression of :func:`~mmea.search.csls.csls_from_cos` on cosines from the same
``torch.mm`` blocks as the in-process pass (a product's entries do not depend on how its columns are
sliced; queries of fewer than :data:`MIN_ROWS` rows are padded, since tiny products may take other kernels),
and ties go to the lower base position, so the merged lists equal the in-process exact search id for id.
With ``index = "ivf" | "hnsw"`` a slice searches its own FAISS index (:mod:`mmea.search.knn`) instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["IndexShard", "ShardedIndex", "merge_topk", "shard_bounds", "MIN_ROWS"]

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


class IndexShard:
    """Rows ``offset:offset + m_s`` of one side (unit float32 ``base (m_s, d)``), as a Ray actor or in-process.

    ``tie_key (m_s,)``: the rank rule's key of each row (default: its base position); ``counts (m_s,)``:
    how often each row counts in the *weighted* radius (a source that several query links share);
    ``index``: ``torch`` (exact, the default) or a FAISS kind of :data:`mmea.search.knn.INDEXES`;
    ``threads``: torch threads of this actor.
    """

    def __init__(self, base: np.ndarray, offset: int, *, tie_key: Any = None, counts: Any = None,
                 index: str = "torch", index_options: dict | None = None, threads: int = 1):
        import torch

        torch.set_num_threads(max(1, int(threads)))
        self.base = np.array(base, dtype=np.float32, copy=True)  # (m_s, d); writable (object-store views are not)
        self.T = torch.from_numpy(self.base)
        self.offset, self.m = int(offset), len(self.base)
        pos = np.arange(self.offset, self.offset + self.m, dtype=np.int64)
        self.key = torch.from_numpy(np.asarray(tie_key, np.int64) if tie_key is not None else pos)  # (m_s,)
        self.rep = None if counts is None else torch.repeat_interleave(  # (sum counts,) columns, repeated
            torch.arange(self.m), torch.from_numpy(np.asarray(counts, np.int64)))
        self.radii: dict = {}
        self.approx = None
        if index not in ("torch", "flat"):
            from ..search.knn import make_index

            self.approx = make_index(index, self.base, n_queries=self.m, **(index_options or {}))

    def size(self) -> int:
        return self.m

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

    def _gold(self, S, gold):
        """``(b,)`` float32 cosine of each query with its gold base row when it lies here, else NaN."""
        import torch

        g = torch.from_numpy(np.asarray(gold, np.int64)) - self.offset  # (b,)
        here = (g >= 0) & (g < self.m)
        out = torch.full((len(g),), float("nan"))
        rows = here.nonzero().flatten()
        out[rows] = S[rows, g[rows]]
        return out.numpy()

    def cos_topk(self, Q: np.ndarray, k: int, gold: Any = None, weighted: bool = False) -> dict:
        """Top-``k`` cosines of each query ``Q (b, d)`` here: ``vals (b, k')`` descending, ``ids (b, k')``
        base positions; ``gold``: ``(b,)`` base positions -> ``gold_cos``; ``weighted``: also ``wvals``,
        the top-``k`` over the rows repeated ``counts`` times."""
        import torch

        if self.approx is not None:
            vals, ids = self.approx.search(Q, k)
            return {"vals": vals, "ids": np.where(ids >= 0, ids + self.offset, -1)}
        with torch.no_grad():
            S = self._products(Q)  # (b, m_s)
            v, i = torch.topk(S, min(k, self.m), dim=1)
            out = {"vals": v.numpy(), "ids": i.numpy() + self.offset}
            if gold is not None:
                out["gold_cos"] = self._gold(S, gold)
            if weighted and self.rep is not None:
                W = S[:, self.rep]  # (b, sum counts)
                out["wvals"] = torch.topk(W, min(k, W.shape[1]), dim=1).values.numpy() if W.shape[1] else \
                    np.zeros((len(Q), 0), np.float32)
        return out

    def scores(self, Q: np.ndarray, r_q: np.ndarray, k: int, *, method: str = "csls", top: str = "search",
               rank: str = "eval", gold: dict | None = None, limit: int | None = None) -> dict:
        """Top-``k`` of each query ``Q (b, d)`` (radii ``r_q (b,)``) by ``method`` with this slice's radii
        ``top``: ``ids``, ``cos``, ``csls`` ``(b, k')``.  ``gold``: ``{"cos", "key", "r"}`` ``(b,)`` each query's
        gold cosine, gold tie key and gold radius -> the rank counts ``above`` / ``tied`` per method, with the
        radii ``rank``.  ``limit``: the top-k only among base positions ``< limit``."""
        import torch

        from ..search.csls import csls_from_cos
        from ..search.knn import topk_rows

        with torch.no_grad():
            S = self._products(Q)  # (b, m_s)
            rq = torch.from_numpy(np.asarray(r_q, np.float32))[:, None]  # (b, 1)
            out: dict = {}
            cols = self.m if limit is None else max(0, min(self.m, int(limit) - self.offset))
            if k and cols:
                X = csls_from_cos(S[:, :cols], rq, self.radii[top][None, :cols])  # (b, cols)
                _, i = topk_rows(X if method == "csls" else S[:, :cols], min(k, cols))
                out.update(ids=i.numpy() + self.offset, cos=S.gather(1, i).numpy(), csls=X.gather(1, i).numpy())
            if gold is not None:
                out.update(self._rank_counts(S, rq, gold, rank))
        return out

    def _rank_counts(self, S, rq, gold: dict, rank: str) -> dict:
        """``{"above": {m: (b,)}, "tied": {m: (b,)}}``: the rank rule's counts of the slice's rows against each
        query's gold score (``#{s > s_g}``, ``#{s = s_g, key < key_g}``), by cosine and by CSLS."""
        import torch

        from ..search.csls import csls_from_cos

        gc = torch.from_numpy(np.asarray(gold["cos"], np.float32))  # (b,)
        gkey = torch.from_numpy(np.asarray(gold["key"], np.int64))  # (b,)
        gr = torch.from_numpy(np.asarray(gold["r"], np.float32))  # (b,)
        X = csls_from_cos(S, rq, self.radii[rank][None, :])  # (b, m_s)
        gold_scores = {"cos": gc, "csls": csls_from_cos(gc, rq[:, 0], gr)}
        before = self.key[None, :] < gkey[:, None]  # (b, m_s)
        out: dict = {"above": {}, "tied": {}}
        for name, Z in (("cos", S), ("csls", X)):
            gs = gold_scores[name][:, None]
            out["above"][name] = (Z > gs).sum(1).numpy()
            out["tied"][name] = ((Z == gs) & before).sum(1).numpy()
        return out


class ShardedIndex:
    """The driver's handle on one side split across :class:`IndexShard` Ray actors (see the module doc).

    ``base (m, d)``: unit float32 rows; ``shards``: slices (one actor each); ``cpus``: CPUs each actor
    reserves (fractions allowed, so both sides' actors fit a small cluster); the actors are spread over
    the cluster's nodes.  Calls take a list of query blocks and return the per-block results in order.
    """

    def __init__(self, ray, base: np.ndarray, shards: int, *, tie_key: Any = None, counts: Any = None,
                 index: str = "torch", index_options: dict | None = None, cpus: float = 1.0):
        self.ray, self.m = ray, len(base)
        self.bounds = shard_bounds(len(base), shards)
        actor = ray.remote(IndexShard).options(num_cpus=cpus, scheduling_strategy="SPREAD")
        sl = lambda x, a, b: None if x is None else np.asarray(x)[a:b]  # noqa: E731
        self.actors = [actor.remote(ray.put(base[a:b]), a, tie_key=sl(tie_key, a, b), counts=sl(counts, a, b),
                                    index=index, index_options=index_options, threads=max(1, int(cpus)))
                       for a, b in self.bounds]

    def each(self, method: str, *args, **kwargs) -> list:
        """Call ``method`` on every shard (same arguments); the results in shard order."""
        return self.ray.get([getattr(a, method).remote(*args, **kwargs) for a in self.actors])

    def set_radius(self, name: str, r: np.ndarray) -> None:
        self.ray.get([a.set_radius.remote(name, r[lo:hi]) for a, (lo, hi) in zip(self.actors, self.bounds)])

    def map_blocks(self, method: str, blocks: list[dict], window: int = 4) -> list[list]:
        """``method(**block)`` on every shard for each block of keyword arguments, at most ``window``
        blocks in flight; ``[[shard results] per block]``."""
        out, pending = [], []
        for blk in blocks:
            refs = {k: (self.ray.put(v) if isinstance(v, np.ndarray) and v.size > 4096 else v) for k, v in blk.items()}
            pending.append([getattr(a, method).remote(**refs) for a in self.actors])
            if len(pending) >= window:
                out.append(self.ray.get(pending.pop(0)))
        out.extend(self.ray.get(p) for p in pending)
        return out

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
