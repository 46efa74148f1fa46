"""The final alignment: from similarity scores to matched entity pairs.

A :class:`Similarity` is a lazy, blockwise view of the ``(n, m)`` cosine or
CSLS scores between the source rows and the candidate target rows (never
materialised except by the dense matchers, within their size limit).  Matchers
(:data:`MATCHERS`, ``--match``) turn it into a :class:`Matching`:

* ``none``: every source takes its best target (several sources may share one).
* ``greedy``: one-to-one greedy: repeatedly accept the best-scoring pair whose
  source and target are both free, in the order (score desc, source asc,
  target asc).  Exact for any size: each source keeps a sorted candidate list,
  a heap holds every free source's best free target, and a source whose list
  is used up is rescored against the free targets (lazy evaluation).
* ``reciprocal``: each source takes its best target by both sides' preferences (not one-to-one;
  :mod:`mmea.search.reciprocal`).
* ``mutual``: only mutual nearest neighbours: ``y`` is ``x``'s best target and
  ``x`` is ``y``'s best source (one-to-one, usually not every source).
* ``hungarian``: the one-to-one assignment of maximum total score (Kuhn 1955;
  ``scipy.optimize.linear_sum_assignment``, Crouse 2016) on the dense matrix up
  to ``max_pairs`` scores (default 20k x 20k); above it, the optimum over the
  top-``sparse_k`` candidates of each side (``scipy`` LAPJVsp).
* ``sinkhorn``: entropic optimal transport (Cuturi, "Sinkhorn Distances",
  NeurIPS 2013), as used for entity alignment by Mao et al., "From Alignment
  to Assignment: Frustratingly Simple Unsupervised Entity Alignment", EMNLP
  2021: ``P = diag(u) exp(S / temperature) diag(v)`` scaled in the log domain
  for ``iterations`` rounds to rows summing to 1 and columns to ``n / m``; each
  source then takes its argmax of ``P`` (or, ``one_to_one``, the greedy one-to-one matching of
  ``P``, sparse form only).  Dense up to ``max_pairs``, over the top-``sparse_k`` candidates of
  each side above it.

:func:`align` runs search, the reverse best match (for the ``mutual`` flag)
and a matcher in one call and returns an :class:`Alignment` for
:func:`mmea.export.alignment_frame`.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import MmeaInputError
from ..progress import progress_bar
from ..registry import Registry
from .csls import SearchResult, _prepare, csls_from_cos, csls_radius, csls_topk
from .knn import row_block_size, topk_rows

__all__ = [
    "MATCHERS",
    "Matcher",
    "Matching",
    "Similarity",
    "Alignment",
    "listed_reciprocal_matching",
    "two_way_topk",
    "NoneMatcher",
    "GreedyMatcher",
    "MutualMatcher",
    "ReciprocalMatcher",
    "HungarianMatcher",
    "SinkhornMatcher",
    "greedy_edges",
    "solve_one_to_one",
    "ListedSimilarity",
    "assigned_hits",
    "sparse_sinkhorn_plan",
    "match",
    "align",
    "candidate_rows",
    "DEFAULT_MAX_PAIRS",
]

#: Dense matchers (Hungarian, Sinkhorn) work on at most this many scores (20k x 20k).
DEFAULT_MAX_PAIRS = 20_000 * 20_000

MATCHERS: Registry["Matcher"] = Registry("matcher", suffix="Matcher")


@dataclass
class Matching:
    """Matched pairs as row positions: ``src[i]`` (into the source rows) matched to ``tgt[i]``.

    ``score`` is the similarity (cosine or CSLS, as the :class:`Similarity`
    was built) of each pair; pairs are ordered by source row.
    """

    src: np.ndarray  # (p,) int64
    tgt: np.ndarray  # (p,) int64
    score: np.ndarray  # (p,) float32
    matcher: str = "none"
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.src = np.asarray(self.src, dtype=np.int64).reshape(-1)
        self.tgt = np.asarray(self.tgt, dtype=np.int64).reshape(-1)
        self.score = np.asarray(self.score, dtype=np.float32).reshape(-1)
        o = np.argsort(self.src, kind="stable")
        self.src, self.tgt, self.score = self.src[o], self.tgt[o], self.score[o]

    def __len__(self) -> int:
        return len(self.src)

    def __iter__(self):
        """``(source row, target row, score)`` triples."""
        return iter(zip(self.src.tolist(), self.tgt.tolist(), self.score.tolist()))

    def pairs(self) -> np.ndarray:
        """``(p, 2)`` int64 ``(source row, target row)``."""
        return np.stack([self.src, self.tgt], axis=1)


class Similarity:
    """Lazy ``(n, m)`` cosine or CSLS scores between source and target rows, computed by blocks.

    The CSLS radii are computed once (one blockwise pass) over these rows.

    Args:
        src: ``(n, d)``; tgt: ``(m, d)`` embeddings (L2-normalised here unless ``normalize=False``).
        method: ``"csls"`` or ``"cos"``.
        csls_k: CSLS neighbourhood size.
        index: search index for the top-k lists (see :func:`mmea.search.knn.knn`).
        radius: precomputed ``(r_src, r_tgt)``.
        progress: bars over the blockwise passes (radii, top-k, dense) when stderr is a terminal.
    """

    def __init__(self, src: Any, tgt: Any, *, method: str = "csls", csls_k: int = 10, normalize: bool = True,
                 device: str = "cpu", block_size: int | None = None, index: str = "auto",
                 radius: tuple[Any, Any] | None = None, progress: bool = False, **index_params):
        if method not in ("cos", "csls"):
            raise MmeaInputError(f"unknown similarity {method!r}; valid choices: cos, csls")
        self.src, self.tgt = _prepare(src, tgt, normalize)
        self.method, self.csls_k, self.device = method, int(csls_k), device
        self.block_size, self.index, self.index_params = block_size, index, index_params
        self.progress = progress
        if radius is None:
            radius = csls_radius(self.src, self.tgt, self.csls_k, index=index, device=device, normalize=False,
                                 block_size=block_size, progress=progress, **index_params)
        self.r_src = np.asarray(radius[0], np.float32)  # (n,)
        self.r_tgt = np.asarray(radius[1], np.float32)  # (m,)

    @property
    def n(self) -> int:
        return len(self.src)

    @property
    def m(self) -> int:
        return len(self.tgt)

    def rows(self, rows: Any):
        """torch ``(len(rows), m)`` scores of the given source rows against every target."""
        import torch

        rows = np.asarray(rows, dtype=np.int64)
        if getattr(self, "_tgt_t", None) is None:  # targets moved to the device once
            self._tgt_t = torch.from_numpy(self.tgt).to(self.device)
            self._r_tgt_t = torch.from_numpy(self.r_tgt).to(self.device)
        with torch.no_grad():
            S = torch.from_numpy(self.src[rows]).to(self.device) @ self._tgt_t.T
            if self.method == "csls":
                S = csls_from_cos(S, torch.from_numpy(self.r_src[rows]).to(self.device)[:, None],
                                  self._r_tgt_t[None, :])
        return S

    def dense(self, max_pairs: int = DEFAULT_MAX_PAIRS, what: str = "this matcher") -> np.ndarray:
        """The full ``(n, m)`` float32 score matrix; :class:`MmeaInputError` above ``max_pairs``."""
        if self.n * self.m > max_pairs:
            raise MmeaInputError(
                f"{what} needs the dense {self.n} x {self.m} score matrix, above the limit of {max_pairs:,} "
                f"scores", hint="use --match greedy or mutual, or a sparse variant")
        out = np.empty((self.n, self.m), np.float32)
        bs = row_block_size(self.m, self.block_size)
        with progress_bar(total=self.n, progress=self.progress, desc="scores", unit="row", leave=False) as bar:
            for a in range(0, self.n, bs):
                out[a:a + bs] = self.rows(np.arange(a, min(a + bs, self.n))).cpu().numpy()
                bar.update(min(bs, self.n - a))
        return out

    def pair_scores(self, src_idx: Any, tgt_idx: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(cos (p,), csls (p,))`` of given pairs (row-wise dot products)."""
        i = np.asarray(src_idx, np.int64)
        j = np.asarray(tgt_idx, np.int64)
        cos = np.einsum("ij,ij->i", self.src[i], self.tgt[j]).astype(np.float32)
        return cos, csls_from_cos(cos, self.r_src[i], self.r_tgt[j]).astype(np.float32)

    def score_pairs(self, src_idx: Any, tgt_idx: Any) -> np.ndarray:
        cos, csls = self.pair_scores(src_idx, tgt_idx)
        return csls if self.method == "csls" else cos

    def topk(self, k: int) -> SearchResult:
        """Top-``k`` targets of every source by this similarity (blockwise, exact unless IVF/HNSW)."""
        return csls_topk(self.src, self.tgt, k, csls_k=self.csls_k, method=self.method, index=self.index,
                         device=self.device, normalize=False, block_size=self.block_size,
                         radius=(self.r_src, self.r_tgt), progress=self.progress, **self.index_params)

    def reverse_topk(self, k: int) -> SearchResult:
        """Top-``k`` sources of every target (the same scores, transposed)."""
        return csls_topk(self.tgt, self.src, k, csls_k=self.csls_k, method=self.method, index=self.index,
                         device=self.device, normalize=False, block_size=self.block_size,
                         radius=(self.r_tgt, self.r_src), progress=self.progress, **self.index_params)


# -- matchers --------------------------------------------------------------------------

class Matcher:
    """Base of the matchers: :meth:`match` checks the input, subclasses implement :meth:`_match`."""

    def __init__(self, **params):
        if params:
            raise MmeaInputError(f"matcher {type(self).registry_name!r} got unknown options: {sorted(params)}")

    def match(self, sim: Similarity | Any, tgt: Any = None, result: SearchResult | None = None, *,
              method: str | None = None, csls_k: int | None = None, **similarity_options) -> Matching:
        """Match source rows to target rows.

        Either ``match(sim)`` with a :class:`Similarity`, or ``match(src_emb (n, d),
        tgt_emb (m, d), result)``: the similarity is then built with ``result``'s
        method, ``csls_k`` and radii (``method`` / ``csls_k`` override; default CSLS, 10).
        ``result``: a top-k search already run on these rows (reused where it helps).
        """
        if not isinstance(sim, Similarity):
            if tgt is None:
                raise MmeaInputError("match() needs a Similarity, or source and target embeddings")
            method = method or (result.method if result is not None else "csls")
            csls_k = csls_k or (result.csls_k if result is not None else 10)
            radius = None
            if result is not None and len(result.r_src) == len(sim) and len(result.r_tgt) == len(tgt) \
                    and result.csls_k == csls_k:
                radius = (result.r_src, result.r_tgt)
            sim = Similarity(sim, tgt, method=method, csls_k=csls_k, radius=radius, **similarity_options)
        if result is not None and (len(result) != sim.n or result.method != sim.method
                                   or len(result.r_tgt) != sim.m):
            result = None
        m = self._match(sim, result)
        m.matcher = self.registry_name
        return m

    def _match(self, sim: Similarity, result: SearchResult | None) -> Matching:  # pragma: no cover
        raise NotImplementedError


@MATCHERS.register
class NoneMatcher(Matcher):
    """No one-to-one constraint: each source takes its best-scoring target."""

    def _match(self, sim, result):
        res = result if result is not None else sim.topk(1)
        ok = res.ids[:, 0] >= 0
        return Matching(np.flatnonzero(ok), res.ids[ok, 0], res.scores[ok, 0])


@MATCHERS.register
class GreedyMatcher(Matcher):
    """Greedy one-to-one: best remaining pair first (score desc, source asc, target asc).

    ``k``: candidates per source fetched at a time (exactness does not depend on it).
    """

    def __init__(self, k: int = 20, **kw):
        super().__init__(**kw)
        if int(k) < 1:
            raise MmeaInputError(f"greedy candidate count must be >= 1, got {k}")
        self.k = int(k)

    def _match(self, sim, result):
        import torch

        res = result if result is not None and result.topk >= min(self.k, sim.m) else sim.topk(self.k)
        ids = [row for row in res.ids]  # per source: candidate targets, best first
        scores = [row for row in res.scores]
        ptr = np.zeros(sim.n, np.int64)
        taken = np.zeros(sim.m, bool)
        heap = [(-float(scores[i][0]), i, int(ids[i][0])) for i in range(sim.n) if ids[i][0] >= 0]
        heapq.heapify(heap)
        out_s, out_t, out_v = [], [], []
        refills = 0
        limit = min(sim.n, sim.m)
        while heap and len(out_s) < limit:
            neg, i, j = heapq.heappop(heap)
            if not taken[j]:
                taken[j] = True
                out_s.append(i), out_t.append(j), out_v.append(-neg)
                continue
            p = ptr[i] + 1
            while p < len(ids[i]) and (ids[i][p] < 0 or taken[ids[i][p]]):
                p += 1
            if p >= len(ids[i]):  # list used up: rescore against the free targets
                refills += 1
                row = sim.rows([i])  # (1, m)
                row[:, torch.from_numpy(taken).to(row.device)] = -float("inf")
                v, c = topk_rows(row, min(self.k, int((~taken).sum())))
                ids[i], scores[i] = c[0].cpu().numpy(), v[0].cpu().numpy()
                p = 0
            ptr[i] = p
            heapq.heappush(heap, (-float(scores[i][p]), i, int(ids[i][p])))
        return Matching(out_s, out_t, out_v, info={"refills": refills})


@MATCHERS.register
class MutualMatcher(Matcher):
    """Mutual nearest neighbours only: y is x's best target and x is y's best source.

    The best sources come from ``result.reverse_best`` when the search found them already.
    """

    def _match(self, sim, result):
        fwd = (result if result is not None else sim.topk(1)).ids[:, 0]  # (n,)
        known = result.reverse_best if result is not None else None
        bwd = known if known is not None and len(known) == sim.m else sim.reverse_topk(1).ids[:, 0]  # (m,)
        src = np.flatnonzero((fwd >= 0) & (bwd[np.maximum(fwd, 0)] == np.arange(sim.n)))
        return Matching(src, fwd[src], sim.score_pairs(src, fwd[src]))


@MATCHERS.register
class ReciprocalMatcher(Matcher):
    """Each source takes its best target by both sides' preferences, ``2 s(u, v) - max_u' s(u', v)``
    (RInf's preference sum, Zeng et al., VLDB J. 2022; :mod:`mmea.search.reciprocal`): a target another
    source prefers more drops.  Not one-to-one; the pair's score is its own ``s(u, v)``.  Two blockwise passes.
    """

    def _match(self, sim, result):
        from .reciprocal import reciprocal_best

        ids, keys, scores = reciprocal_best(sim, progress=sim.progress)
        ok = np.isfinite(keys)
        return Matching(np.flatnonzero(ok), ids[ok], scores[ok])


def listed_reciprocal_matching(found, q: np.ndarray, m: int):
    """The ``reciprocal`` matcher from a search pass's two-way lists (``found.lists``): query row ``i`` (source
    position ``q[i]`` of the lists) takes the first target of its re-ranked list; a row with an empty list
    takes none.  Returns a :class:`~mmea.search.matching.Matching` over the query rows (score: ``s(u, v)``)."""
    from .reciprocal import listed_reciprocal

    ids, _, scores = listed_reciprocal(found.lists["forward"], found.lists["reverse"], m)  # (p, K)
    q, k = np.asarray(q, np.int64).reshape(-1), ids.shape[1]
    ok = np.flatnonzero(ids[q, 0] >= 0) if k else np.zeros(0, np.int64)
    return Matching(ok, ids[q[ok], 0], scores[q[ok], 0].astype(np.float32), matcher="reciprocal",
                    info={"from": f"each source's top-{k} list of the search pass, re-ranked by the keys"})


def _candidate_edges(sim: Similarity, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Union of each source's and each target's top-``k``: ``(rows, cols, scores)`` sorted by (row, col).

    The scores are the searches' own (no ``(edges, d)`` gather: at 10k x 10k x 50 that was gigabytes).
    """
    fwd = sim.topk(k)
    bwd = sim.reverse_topk(k)
    r1 = np.repeat(np.arange(sim.n), fwd.ids.shape[1])
    c1 = fwd.ids.reshape(-1)
    c2 = np.repeat(np.arange(sim.m), bwd.ids.shape[1])
    r2 = bwd.ids.reshape(-1)
    rows, cols = np.concatenate([r1, r2]), np.concatenate([c1, c2])
    scores = np.concatenate([fwd.scores.reshape(-1), bwd.scores.reshape(-1)]).astype(np.float32)
    ok = (rows >= 0) & (cols >= 0)
    key, first = np.unique(rows[ok] * sim.m + cols[ok], return_index=True)
    return key // sim.m, key % sim.m, scores[ok][first]


@MATCHERS.register
class HungarianMatcher(Matcher):
    """Maximum-total-score one-to-one assignment (dense up to max_pairs, sparse top-k above)."""

    def __init__(self, max_pairs: int = DEFAULT_MAX_PAIRS, sparse_k: int = 50, **kw):
        super().__init__(**kw)
        self.max_pairs, self.sparse_k = int(max_pairs), int(sparse_k)

    def _match(self, sim, result):
        if sim.n * sim.m <= self.max_pairs:
            from scipy.optimize import linear_sum_assignment

            S = sim.dense(self.max_pairs, "hungarian")
            r, c = linear_sum_assignment(S, maximize=True)
            return Matching(r, c, S[r, c], info={"mode": "dense"})
        return self._sparse(sim)

    def _sparse(self, sim):
        """Optimum over the candidate graph; a dummy edge per source keeps a full matching feasible."""
        from scipy.sparse import csr_matrix
        from scipy.sparse.csgraph import min_weight_full_bipartite_matching

        rows, cols, s = _candidate_edges(sim, self.sparse_k)
        s64 = s.astype(np.float64)
        w = (s64.max() - s64) + 1.0  # positive costs, lower = better
        dummy = float(sim.n) * (w.max() + 1.0)  # worse than any real-edge rearrangement
        n = sim.n
        R = np.concatenate([rows, np.arange(n)])
        C = np.concatenate([cols, sim.m + np.arange(n)])
        W = np.concatenate([w, np.full(n, dummy)])
        G = csr_matrix((W, (R, C)), shape=(n, sim.m + n))
        r, c = min_weight_full_bipartite_matching(G)
        real = c < sim.m
        r, c = r[real], c[real]
        return Matching(r, c, sim.score_pairs(r, c), info={"mode": "sparse", "edges": int(len(rows))})


def _segment_lse(x: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """log-sum-exp of each segment of ``x`` (segments contiguous, non-empty)."""
    mx = np.maximum.reduceat(x, starts)
    return mx + np.log(np.add.reduceat(np.exp(x - np.repeat(mx, lengths)), starts))


@MATCHERS.register
class SinkhornMatcher(Matcher):
    """Entropic OT plan (Sinkhorn), then each source's argmax (dense up to max_pairs, sparse above).

    ``temperature`` (default 0.02) divides the scores: lower is closer to a
    hard assignment.  ``iterations`` (default 30) row+column scaling rounds.
    ``one_to_one``: instead of the argmax, the greedy one-to-one matching of the plan
    (:func:`greedy_edges`; always the sparse form): every target used once, a source whose candidates
    are all taken unmatched.
    """

    def __init__(self, temperature: float = 0.02, iterations: int = 30, max_pairs: int = DEFAULT_MAX_PAIRS,
                 sparse_k: int = 50, one_to_one: bool = False, **kw):
        super().__init__(**kw)
        self.one_to_one = bool(one_to_one)
        if float(temperature) <= 0 or int(iterations) < 1:
            raise MmeaInputError(f"sinkhorn needs temperature > 0 and iterations >= 1, got {temperature}, "
                                 f"{iterations}")
        self.temperature, self.iterations = float(temperature), int(iterations)
        self.max_pairs, self.sparse_k = int(max_pairs), int(sparse_k)

    def _match(self, sim, result):
        if sim.n * sim.m <= self.max_pairs and not self.one_to_one:
            return self._dense(sim)
        return self._sparse(sim)

    def _dense(self, sim):
        """Scaling form on the row-stabilised kernel ``K_ij = exp((S_ij - max_j S_ij) / temperature)``.

        ``u = 1 / (K v)``, ``v = (n / m) / (K^T u)`` for ``iterations`` rounds;
        ``P = diag(u) K diag(v)``.  Entries of ``K`` that underflow are far below
        their row's best and do not change the argmax.
        """
        import torch

        S = torch.from_numpy(sim.dense(self.max_pairs, "sinkhorn"))  # (n, m)
        n, m = S.shape
        bs = row_block_size(m)
        for a in range(0, n, bs):  # in place: S becomes K
            blk = S[a:a + bs]
            blk.sub_(blk.max(dim=1, keepdim=True).values).div_(self.temperature).exp_()
        u, v = torch.ones(n), torch.ones(m)
        tiny = 1e-30
        for _ in range(self.iterations):
            u = 1.0 / torch.mv(S, v).clamp_min(tiny)
            v = (n / m) / torch.mv(S.T, u).clamp_min(tiny)
        logv = torch.log(v)
        tgt = torch.empty(n, dtype=torch.int64)
        for a in range(0, n, bs):  # argmax_j K_ij v_j, ties -> lower target
            tgt[a:a + bs] = topk_rows(torch.log(S[a:a + bs]) + logv[None, :], 1)[1][:, 0]
        tgt = tgt.numpy()
        src = np.arange(n)
        return Matching(src, tgt, sim.score_pairs(src, tgt), info={"mode": "dense"})

    def _sparse(self, sim):
        rows, cols, s = _candidate_edges(sim, self.sparse_k)  # sorted by (row, col)
        z = sparse_sinkhorn_plan(rows, cols, s, sim.n, sim.m, self.temperature, self.iterations)  # (E,) log P
        if self.one_to_one:
            src, tgt = greedy_edges(rows, cols, z, sim.n, sim.m)
        else:  # argmax per row, ties -> lower column (edges are sorted by column within a row)
            r_starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
            best = np.maximum.reduceat(z, r_starts)
            hit = np.flatnonzero(z == np.repeat(best, np.diff(np.r_[r_starts, len(rows)])))
            first = hit[np.r_[True, rows[hit][1:] != rows[hit][:-1]]]
            src, tgt = rows[first], cols[first]
        return Matching(src, tgt, sim.score_pairs(src, tgt), info={"mode": "sparse", "edges": int(len(rows)),
                                                                    "one_to_one": self.one_to_one})


def sparse_sinkhorn_plan(rows: np.ndarray, cols: np.ndarray, s: np.ndarray, n: int, m: int, temperature: float,
                         iterations: int) -> np.ndarray:
    """``(E,)`` log of the entropic transport plan on the sparse edges ``(rows, cols)`` (sorted by row, col).

    Log-domain Sinkhorn (Cuturi 2013) on ``x = s / temperature`` restricted to the edges: potentials
    ``f (n,)``, ``g (m,)`` alternate ``f_i = -LSE_j (x_ij + g_j)`` (rows sum to 1) and
    ``g_j = log(n / m) - LSE_i (x_ij + f_i)`` (columns to ``n / m``); returns ``x_ij + f_i + g_j``.
    Each round is two segment reductions over the ``E`` edges (no ``(n, m)`` matrix).
    """
    x = s.astype(np.float64) / temperature
    r_starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    r_len = np.diff(np.r_[r_starts, len(rows)])
    r_ids = rows[r_starts]
    oc = np.lexsort((rows, cols))  # edges by (col, row)
    cs = cols[oc]
    c_starts = np.flatnonzero(np.r_[True, cs[1:] != cs[:-1]])
    c_len = np.diff(np.r_[c_starts, len(cs)])
    c_ids = cs[c_starts]
    f, g = np.zeros(n), np.zeros(m)
    log_col = np.log(n / m)
    for _ in range(iterations):
        f[r_ids] = -_segment_lse(x + g[cols], r_starts, r_len)
        g[c_ids] = log_col - _segment_lse((x + f[rows])[oc], c_starts, c_len)
    return x + f[rows] + g[cols]


def greedy_edges(rows: np.ndarray, cols: np.ndarray, score: np.ndarray, n: int, m: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The greedy one-to-one matching of a sparse bipartite graph: ``(src, tgt)`` row / column ids.

    Greedy takes the best remaining edge (score desc, row asc, column asc) whose row and column are
    both free.  Written here (no library offers it on a sparse graph; ``GreedyMatcher`` works on
    search lists with a Python heap) as rounds of *locally dominant* edges, each the first of its row
    and of its column among the remaining edges in that total order: they are disjoint, greedy takes
    every one of them (Preis 1999: the greedy matching is the locally dominant one), and removing
    their rows and columns leaves the same problem.  Each round is ``O(E)`` numpy; on the 100K
    synthetic pair's 5M edges it finishes in 7-13 rounds (about 2 s).
    """
    order = np.lexsort((cols, rows, -score))  # the total order
    r, c = rows[order], cols[order]
    out_r, out_c = [], []
    while len(r):
        pos = np.arange(len(r))
        first_r, first_c = np.full(n, len(r)), np.full(m, len(r))
        first_r[r[::-1]] = pos[::-1]  # reversed writes: the first position of each row wins
        first_c[c[::-1]] = pos[::-1]
        dom = (first_r[r] == pos) & (first_c[c] == pos)  # never empty: position 0 dominates
        out_r.append(r[dom]), out_c.append(c[dom])
        used_r, used_c = np.zeros(n, bool), np.zeros(m, bool)
        used_r[r[dom]], used_c[c[dom]] = True, True
        keep = ~used_r[r] & ~used_c[c]
        r, c = r[keep], c[keep]
    if not out_r:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_r), np.concatenate(out_c)


#: ``search.one_to_one = "auto"``: the exact sparse Hungarian up to this many test sources, Sinkhorn above
#: (LAPJVsp took 48 s on the 100K synthetic pair's 52,887 sources and did not finish in 29 minutes on
#: the 1M pair's 528,870; the Sinkhorn plan + greedy decode takes 6 s at 100K)
ONE_TO_ONE_EXACT_MAX = 100_000


class ListedSimilarity:
    """What the one-to-one solvers read of a :class:`Similarity`: its two-way top-k lists, already searched
    (``forward``: each source's, ``reverse``: each target's :class:`SearchResult`); the assignment's pair
    scores are not needed (``nan``)."""

    def __init__(self, n: int, m: int, forward, reverse):
        self.n, self.m, self._fwd, self._bwd = n, m, forward, reverse

    def topk(self, k: int):
        return self._fwd

    def reverse_topk(self, k: int):
        return self._bwd

    def score_pairs(self, src_idx, tgt_idx) -> np.ndarray:
        return np.full(len(np.asarray(src_idx)), np.nan, np.float32)


def solve_one_to_one(listed, solver: str = "auto") -> tuple:
    """``(Matching, label)``: the one-to-one assignment over a two-way listed graph (``topk`` / ``reverse_topk``).

    ``solver``: ``hungarian`` (exact over the graph: ``HungarianMatcher._sparse``, LAPJVsp), ``sinkhorn``
    (the log-domain Sinkhorn plan of the graph at temperature 0.02, 30 rounds, decoded one-to-one by
    :func:`greedy_edges`; Mao et al. EMNLP 2021 report H@1 after this
    normalisation), or ``auto`` (hungarian up to :data:`ONE_TO_ONE_EXACT_MAX` sources).  On the 100K
    synthetic pair (label propagation + names, IVF lists) the two give H@1 0.7888 and 0.7916.
    """
    if solver == "auto":
        solver = "hungarian" if listed.n <= ONE_TO_ONE_EXACT_MAX else "sinkhorn"
    if solver == "hungarian":
        return HungarianMatcher(max_pairs=0)._sparse(listed), "hungarian (sparse, exact"
    if solver == "sinkhorn":
        return SinkhornMatcher(max_pairs=0, one_to_one=True)._sparse(listed), "sinkhorn + greedy (sparse"
    raise MmeaInputError(f"unknown one-to-one solver {solver!r}; valid choices: auto, hungarian, sinkhorn")


def assigned_hits(matching, sources: np.ndarray, cand: np.ndarray, links: np.ndarray) -> float:
    """Share of ``links (n, 2)`` whose source (row of ``sources``) is matched to its gold target (of ``cand``);
    a source linked twice can hit once only, an unmatched source misses."""
    assigned = np.full(len(sources), -1, np.int64)  # (p,) target id of each source, -1 unassigned
    assigned[matching.src] = np.asarray(cand)[matching.tgt]
    hit = assigned[np.searchsorted(sources, links[:, 0])] == links[:, 1]  # (n,)
    return float(np.mean(hit)) if len(links) else 0.0


def match(src: Any, tgt: Any, matcher: str = "greedy", *, method: str = "csls", csls_k: int = 10,
          normalize: bool = True, device: str = "cpu", block_size: int | None = None, index: str = "auto",
          progress: bool = False, **matcher_options) -> Matching:
    """Match source rows to target rows with a registered matcher (see the module doc)."""
    sim = Similarity(src, tgt, method=method, csls_k=csls_k, normalize=normalize, device=device,
                     block_size=block_size, index=index, progress=progress)
    return MATCHERS.make(matcher, **matcher_options).match(sim)


# -- the whole step: search + reverse best + matching ------------------------------------

@dataclass
class Alignment:
    """Everything the export needs about one alignment run.

    Attributes:
        src_rows: ``(n,)`` internal source entity ids that were aligned.
        tgt_rows: ``(m,)`` internal target entity ids that were the candidates.
        result: src->tgt top-k; ``result.ids`` index ``tgt_rows``.
        reverse_best: ``(m,)`` best source position (into ``src_rows``) of each
            candidate target under the same score, for the ``mutual`` flag.
        matching: the matched pairs (positions), ``None`` for ``--match none``.
        candidates: ``"test"`` or ``"all"`` (what ``tgt_rows`` holds).
    """

    src_rows: np.ndarray
    tgt_rows: np.ndarray
    result: SearchResult
    reverse_best: np.ndarray
    matching: Matching | None = None
    candidates: str = "test"

    @property
    def method(self) -> str:
        return self.result.method

    def predicted_pairs(self) -> np.ndarray:
        """``(p, 2)`` internal ``(source id, target id)`` of the final alignment (matched, else top-1)."""
        if self.matching is not None:
            return np.stack([self.src_rows[self.matching.src], self.tgt_rows[self.matching.tgt]], axis=1)
        ok = self.result.ids[:, 0] >= 0
        return np.stack([self.src_rows[ok], self.tgt_rows[self.result.ids[ok, 0]]], axis=1)


def candidate_rows(task, candidates: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """``(src_rows, tgt_rows)`` to align for an :class:`~mmea.data.graph.AlignmentTask`.

    ``"test"``: the test links' sources against the test links' targets (the
    usual protocol); ``"all"``: every source entity against every target entity.
    """
    if candidates == "test":
        return np.unique(task.test[:, 0]), np.unique(task.test[:, 1])
    if candidates == "all":
        return np.arange(task.source.num_entities), np.arange(task.target.num_entities)
    raise MmeaInputError(f"unknown candidate set {candidates!r}; valid choices: test, all")


def align(src_emb: Any, tgt_emb: Any, src_rows: Any, tgt_rows: Any, *, topk: int = 1, method: str = "csls",
          csls_k: int = 10, matcher: str = "none", matcher_options: dict | None = None, index: str = "auto",
          device: str = "cpu", block_size: int | None = None, candidates: str = "test", progress: bool = False,
          **index_params) -> Alignment:
    """Rank ``tgt_rows`` for every row of ``src_rows``, find reverse best matches, and match.

    Args:
        src_emb: ``(N, d)`` all source embeddings; tgt_emb: ``(M, d)`` all target embeddings.
        src_rows, tgt_rows: internal ids to align (see :func:`candidate_rows`).
        topk: candidates kept per source (at least 2 are searched, for the margin).
        method: ``"csls"`` or ``"cos"``; matcher: a :data:`MATCHERS` name.
        progress: bars over the blockwise passes ("CSLS radii", "search") when stderr is a terminal.
    """
    src_rows = np.asarray(src_rows, dtype=np.int64).reshape(-1)
    tgt_rows = np.asarray(tgt_rows, dtype=np.int64).reshape(-1)
    src_emb, tgt_emb = np.asarray(src_emb), np.asarray(tgt_emb)
    for what, rows, emb in (("source", src_rows, src_emb), ("target", tgt_rows, tgt_emb)):
        if len(rows) == 0:
            raise MmeaInputError(f"no {what} rows to align")
        if rows.min() < 0 or rows.max() >= len(emb):
            raise MmeaInputError(f"{what} row id out of range for {len(emb)} embeddings")
    sim = Similarity(src_emb[src_rows], tgt_emb[tgt_rows], method=method, csls_k=csls_k, device=device,
                     block_size=block_size, index=index, progress=progress, **index_params)
    result = sim.topk(max(int(topk), 2))
    reverse_best = sim.reverse_topk(1).ids[:, 0]
    result.reverse_best = reverse_best
    matching = None
    if matcher not in (None, "none"):
        matching = MATCHERS.make(matcher, **(matcher_options or {})).match(sim, result=result)
    return Alignment(src_rows, tgt_rows, result, reverse_best, matching, candidates)


def two_way_topk(src: np.ndarray, tgt: np.ndarray, r_src: np.ndarray, r_tgt: np.ndarray, k: int, *,
                 method: str = "csls", csls_k: int = 10, device: str = "cpu", on_block=None) -> tuple:
    """``(forward, reverse)`` :class:`~mmea.search.csls.SearchResult`: each source's and each target's
    top-``k`` by CSLS (or cosine), from **one** blockwise pass over unit rows ``src (n, d)``, ``tgt (m, d)``.

    Per block of source rows the ``(b, m)`` scores ``(2 cos - r_src) - r_tgt`` (the float32 expression
    of :func:`~mmea.search.csls.csls_from_cos`) give the rows' top-``k`` and are merged into the running
    top-``k`` of every column; nothing larger than one block is held.  Ties are broken by ``torch.topk``.
    ``on_block(a, e, S)``: called with each block's scores ``S (e - a, m)`` of source rows ``a:e`` (another
    ranking over the same scores, :class:`~mmea.search.reciprocal.ReciprocalRanks`, without a pass of its own).
    """
    import torch

    n, m = len(src), len(tgt)
    k_f, k_b = min(k, m), min(k, n)
    T = torch.from_numpy(np.ascontiguousarray(tgt)).to(device)  # (m, d)
    rt = torch.from_numpy(np.asarray(r_tgt, np.float32)).to(device)  # (m,)
    fwd = [np.zeros((n, k_f), np.int64), np.zeros((n, k_f), np.float32), np.zeros((n, k_f), np.float32)]
    col_s = col_c = col_i = None  # running (<= k_b, m) scores, cosines and source rows of each column
    bs = row_block_size(m)
    with torch.no_grad():
        for a in range(0, n, bs):
            e = min(a + bs, n)
            C = torch.from_numpy(np.ascontiguousarray(src[a:e])).to(device) @ T.T  # (b, m) cosines
            rs = torch.from_numpy(np.asarray(r_src[a:e], np.float32)).to(device)[:, None]  # (b, 1)
            S = csls_from_cos(C, rs, rt[None, :]) if method == "csls" else C  # (b, m)
            if on_block is not None:
                on_block(a, e, S)
            v, i = torch.topk(S, k_f, dim=1)  # (b, k_f)
            fwd[0][a:e], fwd[1][a:e] = i.cpu().numpy(), torch.gather(C, 1, i).cpu().numpy()
            fwd[2][a:e] = (csls_from_cos(torch.gather(C, 1, i), rs, rt[i]) if method == "csls" else v).cpu().numpy()
            v, i = torch.topk(S, min(k_b, e - a), dim=0)  # (<= k_b, m) this block's best rows per column
            c, i = torch.gather(C, 0, i), i + a
            if col_s is not None:
                v, c, i = torch.cat([col_s, v]), torch.cat([col_c, c]), torch.cat([col_i, i])
            top = torch.topk(v, min(k_b, len(v)), dim=0).indices  # (<= k_b, m)
            col_s, col_c, col_i = torch.gather(v, 0, top), torch.gather(c, 0, top), torch.gather(i, 0, top)
    r_src = np.asarray(r_src, np.float32)
    r_tgt = np.asarray(r_tgt, np.float32)
    bwd_ids = col_i.T.cpu().numpy()  # (m, k_b) source rows of each target, best first
    bwd_cos = col_c.T.cpu().numpy()
    bwd_csls = csls_from_cos(bwd_cos, r_tgt[:, None], r_src[bwd_ids]).astype(np.float32)
    forward = SearchResult(fwd[0], fwd[1], fwd[2], r_src, r_tgt, method=method, csls_k=csls_k)
    reverse = SearchResult(bwd_ids, bwd_cos, bwd_csls, r_tgt, r_src, method=method, csls_k=csls_k)
    return forward, reverse
