"""The registered negative samplers: each implements only :meth:`NegativeSampler._corrupt` (and, for
the model-aware ones, :meth:`~NegativeSampler.on_epoch_start`).  ``mmea ls samplers`` lists them."""

from __future__ import annotations

import numpy as np

from ..errors import MmeaInputError
from .base import SAMPLERS, NegativeSampler, _replace
from .index import _Csr


@SAMPLERS.register
class UniformNegativeSampler(NegativeSampler):
    """Replace the head or the tail (p = 0.5) by a uniformly random entity (Bordes et al., 2013)."""

    supports_shared = True

    def _corrupt(self, batch, sides, num_negatives, rng):
        return rng.integers(0, self.num_entities, size=sides.shape)

    def _corrupt_shared(self, batch, sides, num_negatives, rng):
        c = rng.integers(0, self.num_entities, size=num_negatives)
        return c, c, None


@SAMPLERS.register
class BernoulliNegativeSampler(UniformNegativeSampler):
    """Uniform entity; head replaced with p = tph / (tph + hpt) of the relation (Wang et al., 2014)."""

    def head_probability(self, relations):
        return self.cardinality.head_probability[relations]


@SAMPLERS.register
class InBatchNegativeSampler(NegativeSampler):
    """The head / tail of another positive of the same mini-batch (no extra embeddings to fetch).

    Positive ``b`` takes its ``K`` replacements from rows ``(b + o) mod B``
    with offsets ``o`` drawn from ``1..B-1`` (never itself).  In the shared
    mode every row is paired with every other row of the batch (``K = B``,
    the diagonal masked).
    """

    supports_shared = True

    def _corrupt(self, batch, sides, num_negatives, rng):
        n = len(batch)
        if n < 2:
            return rng.integers(0, self.num_entities, size=sides.shape)
        other = (np.arange(n)[:, None] + rng.integers(1, n, size=sides.shape)) % n  # (B, K)
        return np.where(sides, batch[other, 0], batch[other, 2])

    def _corrupt_shared(self, batch, sides, num_negatives, rng):
        n = len(batch)
        extra = ~np.eye(n, dtype=bool)
        return batch[:, 0], batch[:, 2], extra


@SAMPLERS.register(name="k-hop")
class KHopNegativeSampler(NegativeSampler):
    """An entity within ``k`` hops of the replaced one (undirected training graph), via random walks.

    A walk of length ``L ~ U{1..k}`` starts at the replaced entity; its last
    node other than the start is the candidate (so it is within ``k`` hops
    and never the entity itself).  An entity without other neighbours gets a
    uniform entity, counted in ``stats.fallback``.  Candidates near the
    entity share its context and make harder negatives than uniform ones.
    """

    def __init__(self, triples, num_entities, num_relations, *, k: int = 2, **kwargs):
        super().__init__(triples, num_entities, num_relations, **kwargs)
        if k < 1:
            raise MmeaInputError(f"k-hop sampler: k must be >= 1, got {k}")
        self.k = int(k)
        src = np.concatenate([self.triples[:, 0], self.triples[:, 2]])
        dst = np.concatenate([self.triples[:, 2], self.triples[:, 0]])
        self.adj = _Csr.build(src, dst, self.num_entities)
        self.degree = np.diff(self.adj.indptr)

    def _walk(self, start: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cur = start.copy()
        last_other = np.full(start.shape, -1, dtype=np.int64)
        length = rng.integers(1, self.k + 1, size=start.shape)
        for step in range(self.k):
            active = (length > step) & (self.degree[cur] > 0)
            off = (rng.random(start.shape) * np.maximum(self.degree[cur], 1)).astype(np.int64)
            nxt = self.adj.values[np.minimum(self.adj.indptr[cur] + off, len(self.adj.values) - 1)]
            cur = np.where(active, nxt, cur)
            last_other = np.where(active & (cur != start), cur, last_other)
        return last_other

    def _corrupt(self, batch, sides, num_negatives, rng):
        start = np.where(sides, batch[:, None, 0], batch[:, None, 2])  # (B, K)
        cand = self._walk(start, rng)
        lost = cand < 0
        if lost.any():
            cand[lost] = rng.integers(0, self.num_entities, size=int(lost.sum()))
            self.stats.fallback += int(lost.sum())
        return cand

    def hop_distances(self, source: int, max_hops: int | None = None) -> np.ndarray:
        """BFS distance from ``source`` to every entity (``-1`` beyond ``max_hops`` / unreachable)."""
        max_hops = self.k if max_hops is None else max_hops
        dist = np.full(self.num_entities, -1, dtype=np.int64)
        dist[source] = 0
        frontier = np.array([source])
        for d in range(1, max_hops + 1):
            if not len(frontier):
                break
            nb = np.concatenate([self.adj.members(int(x)) for x in frontier])
            nb = np.unique(nb[dist[nb] < 0])
            dist[nb] = d
            frontier = nb
        return dist

    def _allowed_candidates(self, batch_row, side):
        dist = self.hop_distances(int(batch_row[0] if side else batch_row[2]))
        return np.flatnonzero(dist > 0)


def nearest_neighbour_table(embeddings: np.ndarray, num_neighbors: int) -> np.ndarray:
    """``(E, n)`` int64: each row's ``n`` nearest other rows by cosine (self excluded).

    Uses :func:`mmea.search.knn` (FAISS) when the search layer is present,
    else a blockwise torch top-k.
    """
    x = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32))
    n = min(int(num_neighbors), len(x) - 1)
    try:
        from ..search import knn
    except ImportError:  # pragma: no cover - the search layer ships with mmea
        knn = None
    if knn is not None:
        _, ids = knn(x, x, n + 1)
    else:  # pragma: no cover
        import torch

        t = torch.nn.functional.normalize(torch.from_numpy(x), dim=1)
        ids = np.concatenate([torch.topk(t[i:i + 4096] @ t.T, n + 1, dim=1).indices.numpy()
                              for i in range(0, len(t), 4096)])
    ids = np.asarray(ids, dtype=np.int64)
    own = ids == np.arange(len(x))[:, None]
    # drop self (or, when self is not in the list because of ties, the last column)
    drop = np.where(own.any(1), own.argmax(1), n)
    keep = np.ones(ids.shape, dtype=bool)
    keep[np.arange(len(x)), drop] = False
    out = ids[keep].reshape(len(x), n)
    return np.where(out < 0, np.arange(len(x))[:, None], out)  # approximate indexes may pad with -1


@SAMPLERS.register
class HardNnNegativeSampler(NegativeSampler):
    """One of the replaced entity's nearest neighbours in the current embeddings (BootEA truncated sampling).

    Sun et al. (2018), "Bootstrapping Entity Alignment with Knowledge Graph
    Embedding" (IJCAI), epsilon-truncated uniform negative sampling: the
    candidates of an entity are its ``num_neighbors`` nearest entities by
    cosine of the current embeddings (``embedding_fn``), recomputed every
    ``refresh_every`` epochs through :func:`mmea.search.knn`.  With
    ``num_neighbors=None``, ``epsilon`` sets it as ``ceil((1 - epsilon) * E)``.
    Before the first refresh (no embeddings yet) candidates are uniform.
    """

    needs_model = True
    checkpoint_attrs = ("neighbors", "refreshes")

    def __init__(self, triples, num_entities, num_relations, *, num_neighbors: int | None = 64,
                 epsilon: float = 0.99, refresh_every: int = 5, **kwargs):
        super().__init__(triples, num_entities, num_relations, **kwargs)
        if num_neighbors is None:
            if not 0.0 <= epsilon < 1.0:
                raise MmeaInputError(f"hard-nn: epsilon must be in [0, 1), got {epsilon}")
            num_neighbors = int(np.ceil((1.0 - epsilon) * self.num_entities))
        if num_neighbors < 1:
            raise MmeaInputError(f"hard-nn: num_neighbors must be >= 1, got {num_neighbors}")
        if refresh_every < 1:
            raise MmeaInputError(f"hard-nn: refresh_every must be >= 1, got {refresh_every}")
        self.num_neighbors = min(int(num_neighbors), self.num_entities - 1)
        self.refresh_every = int(refresh_every)
        self.neighbors: np.ndarray | None = None  # (E, n)
        self.refreshes = 0

    def refresh(self) -> None:
        """Recompute the neighbour table from ``embedding_fn()``."""
        emb = np.asarray(self.embedding_fn(), dtype=np.float32)
        self.neighbors = nearest_neighbour_table(emb, self.num_neighbors)
        self.refreshes += 1

    def on_epoch_start(self, epoch):
        super().on_epoch_start(epoch)
        if self.embedding_fn is not None and epoch % self.refresh_every == 0:
            self.refresh()

    def _corrupt(self, batch, sides, num_negatives, rng):
        if self.neighbors is None:
            if self.embedding_fn is None:
                return rng.integers(0, self.num_entities, size=sides.shape)
            self.refresh()
        anchor = np.where(sides, batch[:, None, 0], batch[:, None, 2])  # (B, K)
        col = rng.integers(0, self.neighbors.shape[1], size=sides.shape)
        return self.neighbors[anchor, col]

    def _allowed_candidates(self, batch_row, side):
        if self.neighbors is None:
            return None
        return self.neighbors[int(batch_row[0] if side else batch_row[2])]


@SAMPLERS.register
class RankAboveNegativeSampler(NegativeSampler):
    """A pooled candidate the model scores above the positive (NMiss style: the model's current misses).

    For each positive, ``pool_size`` uniform candidates per replaced side are
    scored with ``score_fn``; the negatives are drawn uniformly from those
    scoring at least the positive's score (the entities ranked above it, the
    ones that cost it rank), topped up by the highest-scoring rest of the pool
    when fewer than ``K`` do.  The pool keeps the cost at ``pool_size`` scores
    per positive instead of a full ranking over all entities.
    """

    needs_model = True
    checkpoint_attrs = ("above_fraction",)

    def __init__(self, triples, num_entities, num_relations, *, pool_size: int = 32, **kwargs):
        super().__init__(triples, num_entities, num_relations, **kwargs)
        if pool_size < 1:
            raise MmeaInputError(f"rank-above: pool_size must be >= 1, got {pool_size}")
        self.pool_size = int(pool_size)
        self.above_fraction = [0, 0]  # [candidates above the positive, candidates scored]

    def _corrupt(self, batch, sides, num_negatives, rng):
        if self.score_fn is None:
            raise MmeaInputError("rank-above needs score_fn (bind(score_fn=...))")
        n, k = sides.shape
        pos = np.asarray(self.score_fn(batch), dtype=np.float64)  # (B,)
        out = np.empty((n, k), dtype=np.int64)
        for side in (True, False):
            need = sides == side  # (B, K)
            rows = np.flatnonzero(need.any(1))
            if not len(rows):
                continue
            pool = rng.integers(0, self.num_entities, size=(len(rows), self.pool_size))  # (b, C)
            s = self._score_replacements(batch[rows], np.full((len(rows), 1), side), pool)  # (b, C)
            above = s >= pos[rows, None]
            self.above_fraction[0] += int(above.sum())
            self.above_fraction[1] += above.size
            # priority: above -> random key in [1, 2); else rank by score in [0, 1)
            order_key = np.where(above, 1.0 + rng.random(s.shape), _rank01(s))
            chosen = np.argsort(-order_key, axis=1)  # (b, C), best first
            reps = -(-k // self.pool_size)
            chosen = np.tile(chosen[:, :k], (1, reps))[:, :k] if self.pool_size < k else chosen[:, :k]
            picked = np.take_along_axis(pool, chosen, 1)  # (b, K)
            out[rows] = np.where(need[rows], picked, out[rows])
        return out

    def describe(self):
        d = super().describe()
        d["pool_size"] = self.pool_size
        a, n = self.above_fraction
        d["fraction_above_positive"] = a / n if n else None
        return d


def _rank01(s: np.ndarray) -> np.ndarray:
    """Per-row rank of ``s`` mapped into ``[0, 1)`` (higher score -> higher value)."""
    r = np.argsort(np.argsort(s, axis=1), axis=1)
    return r / s.shape[1]


@SAMPLERS.register(aliases=("nscaching",))
class CacheNegativeSampler(NegativeSampler):
    """NSCaching: per-(h, r) tail caches and per-(r, t) head caches of high-scoring negatives.

    Zhang et al. (2019), "NSCaching: Simple and Efficient Negative Sampling
    for Knowledge Graph Embedding" (ICDE).  Each ``(h, r)`` seen in training
    keeps ``cache_size`` candidate tails, each ``(r, t)`` candidate heads
    (initialised uniformly).  Negatives are drawn uniformly from the cache of
    the positive's key.  After each batch, each touched cache is refreshed
    from its entries plus ``pool_size`` fresh uniform entities by importance
    sampling without replacement, ``p_i ∝ exp(f_i / temperature)`` (Gumbel
    top-k), ``f`` the model's score; known true triples get ``p = 0`` when
    filtering is on, so caches hold no false negatives.  ``update_every``
    refreshes only every n-th batch (lazy update, as in the paper).
    """

    needs_model = True
    checkpoint_attrs = ("tail_cache", "head_cache", "_batches")

    def __init__(self, triples, num_entities, num_relations, *, cache_size: int = 30, pool_size: int = 30,
                 temperature: float = 1.0, update_every: int = 1, **kwargs):
        super().__init__(triples, num_entities, num_relations, **kwargs)
        if cache_size < 1 or pool_size < 0 or update_every < 1 or temperature <= 0:
            raise MmeaInputError("cache sampler: cache_size >= 1, pool_size >= 0, update_every >= 1 and "
                                 f"temperature > 0 required (got {cache_size}, {pool_size}, {update_every}, "
                                 f"{temperature})")
        self.cache_size, self.pool_size = int(cache_size), int(pool_size)
        self.temperature, self.update_every = float(temperature), int(update_every)
        e, r = self.num_entities, self.num_relations
        self.hr_keys = np.unique(self.triples[:, 0] * r + self.triples[:, 1])  # caches of tails
        self.rt_keys = np.unique(self.triples[:, 1] * e + self.triples[:, 2])  # caches of heads
        self.tail_cache = self.rng.integers(0, e, size=(len(self.hr_keys), self.cache_size))
        self.head_cache = self.rng.integers(0, e, size=(len(self.rt_keys), self.cache_size))
        self._batches = 0

    def _rows(self, batch: np.ndarray, side: bool) -> tuple[np.ndarray, np.ndarray]:
        """Cache rows of each positive for ``side`` and whether the key has a cache."""
        if side:
            keys, table = batch[:, 1] * self.num_entities + batch[:, 2], self.rt_keys
        else:
            keys, table = batch[:, 0] * self.num_relations + batch[:, 1], self.hr_keys
        pos = np.minimum(np.searchsorted(table, keys), len(table) - 1)
        return pos, table[pos] == keys

    def _corrupt(self, batch, sides, num_negatives, rng):
        out = rng.integers(0, self.num_entities, size=sides.shape)  # keys without a cache: uniform
        col = rng.integers(0, self.cache_size, size=sides.shape)
        for side, cache in ((True, self.head_cache), (False, self.tail_cache)):
            rows, found = self._rows(batch, side)
            use = (sides == side) & found[:, None]
            out = np.where(use, cache[rows[:, None], col], out)
        return out

    def _after_sample(self, batch, sample):
        self._batches += 1
        if self._batches % self.update_every or self.score_fn is None:
            return
        rng = self.rng
        for side, cache in ((True, self.head_cache), (False, self.tail_cache)):
            rows, found = self._rows(batch, side)
            uniq, first = np.unique(rows[found], return_index=True)
            if not len(uniq):
                continue
            reps = batch[found][first]  # one positive per touched key (B', 3)
            fresh = rng.integers(0, self.num_entities, size=(len(uniq), self.pool_size))
            pool = np.concatenate([cache[uniq], fresh], axis=1)  # (U, N1 + N2)
            s = self._score_replacements(reps, np.full((len(uniq), 1), side), pool)
            if self.control.filtered:
                s = np.where(self.known.contains(_replace(reps, np.full(pool.shape, side), pool)), -np.inf, s)
            gumbel = -np.log(-np.log(rng.random(s.shape) + 1e-20) + 1e-20)
            keyed = s / self.temperature + gumbel
            top = np.argsort(-keyed, axis=1)[:, :self.cache_size]
            cache[uniq] = np.take_along_axis(pool, top, 1)
