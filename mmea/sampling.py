"""Negative samplers for KG embedding and entity alignment.

A negative of a positive triple ``(h, r, t)`` replaces its head or its tail by
another entity.  Every sampler here follows one template
(:meth:`NegativeSampler.sample`):

1. **side** -- :meth:`NegativeSampler.corrupt_side` picks, per negative, the
   head (``True``) or the tail (``False``) with probability
   :meth:`NegativeSampler.head_probability` (``0.5``; relation cardinality for
   ``bernoulli``); :class:`FalseNegativeControl` ``cardinality_aware``
   overrides it for 1-N and N-1 relations;
2. **corrupt** -- the subclass's :meth:`NegativeSampler._corrupt` proposes the
   replacement entities ``(B, K)``: this is the only step a sampler implements;
3. **control** -- the base class rejects known true triples (``filtered``) and
   entities outside the relation's observed domain / range
   (``type_constraints``), asks the subclass again for the rejected slots a
   bounded number of times, then falls back to an exact draw from the allowed
   candidates; :class:`SamplerStats` counts what was drawn, how many draws
   were true triples before filtering (the false-negative rate), and what was
   left unresolved.

The registered samplers (:data:`SAMPLERS`, ``mmea ls samplers``):

==============  ================================================================
``uniform``     a uniformly random entity (Bordes et al., 2013)
``bernoulli``   uniform entity, head/tail chosen by ``tph / (tph + hpt)`` (Wang et al., 2014)
``in-batch``    the head / tail of another positive of the mini-batch
``k-hop``       an entity within ``k`` hops of the replaced one (random walk)
``hard-nn``     one of the replaced entity's nearest neighbours in the current
                embeddings, refreshed every few epochs (BootEA, Sun et al., 2018)
``rank-above``  a pooled candidate the model scores above the positive (NMiss style)
``cache``       NSCaching (Zhang et al., 2019): per-(h, r) / per-(r, t) caches of
                high-scoring negatives refreshed by importance sampling
==============  ================================================================

Model-aware samplers (``hard-nn``, ``rank-above``, ``cache``) need the model:
the training loop calls :meth:`NegativeSampler.bind` with a ``score_fn``
(``(N, 3) int64 triples -> (N,) float scores``, higher = more plausible) and an
``embedding_fn`` (``() -> (E, d)`` entity embeddings), and calls
:meth:`NegativeSampler.on_epoch_start` every epoch.

**Batch-shared negatives.**  ``uniform``, ``bernoulli`` and ``in-batch`` can
also draw one candidate set for the whole batch
(:meth:`NegativeSampler.sample_shared`): every positive is scored against the
same ``K`` entities with one matrix product, ~10x cheaper per negative on a
CPU than ``K`` gathered rows per positive.  There the false-negative control
*masks* rejected candidates instead of resampling them.

:func:`sample_link_negatives` draws negatives for alignment links ``(e, e')``
from either KG with the ``uniform``, ``in-batch`` or ``hard-nn`` rule.

Only numpy is imported here; torch/faiss are imported inside the functions
that use them, so ``mmea ls samplers`` stays instant.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Callable, NamedTuple

import numpy as np

from .errors import MmeaInputError
from .registry import Registry

log = logging.getLogger("mmea.sampling")

__all__ = [
    "SAMPLERS",
    "FalseNegativeControl",
    "SamplerStats",
    "NegativeSample",
    "SharedNegatives",
    "TripleSet",
    "KeyGroups",
    "PartnerIndex",
    "RelationCardinality",
    "TypeConstraints",
    "NegativeSampler",
    "UniformNegativeSampler",
    "BernoulliNegativeSampler",
    "InBatchNegativeSampler",
    "KHopNegativeSampler",
    "HardNnNegativeSampler",
    "RankAboveNegativeSampler",
    "CacheNegativeSampler",
    "make_sampler",
    "sample_link_negatives",
    "LINK_SAMPLERS",
    "nearest_neighbour_table",
]

ScoreFn = Callable[[np.ndarray], np.ndarray]  # (N, 3) int64 -> (N,) float, higher = more plausible
EmbeddingFn = Callable[[], np.ndarray]  # () -> (E, d)
#: (batch (B, 3), sides (B, C) bool, replacements (B, C)) -> (B, C) scores of the replaced triples
ReplacedScoreFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


# ----------------------------------------------------------------------------- options and stats
@dataclass(frozen=True)
class FalseNegativeControl:
    """Switches against false negatives (negatives that are in fact true).

    Attributes:
        filtered: never return a known true triple (those the sampler was
            given as ``filter_triples``, by default the training triples).
        type_constraints: a replaced head must be in the relation's *domain*
            (entities seen as its head in training), a replaced tail in its
            *range* (seen as its tail).
        cardinality_aware: for a 1-N relation (``tph >= 1.5``, ``hpt < 1.5``)
            replace the head, for an N-1 relation the tail; 1-1 and N-N keep
            the sampler's choice.  In a 1-N relation every tail has a single
            head, so any other head is a true negative, while a replaced tail
            may be one of the head's many unrecorded tails.  This is the
            deterministic limit of Bernoulli sampling (Wang et al., 2014).
        max_resample: rounds of asking the sampler again for rejected slots
            before the exact fallback draw.
    """

    filtered: bool = True
    type_constraints: bool = False
    cardinality_aware: bool = False
    max_resample: int = 10

    def __post_init__(self) -> None:
        if self.max_resample < 0:
            raise MmeaInputError(f"max_resample must be >= 0, got {self.max_resample}")


@dataclass
class SamplerStats:
    """Counters over every call since the last :meth:`reset`.

    ``true_drawn / drawn`` is the false-negative rate of the raw sampler
    (known true triples among the first proposals, whether or not filtering
    is on); ``true_returned / drawn`` the rate among the negatives handed
    back as valid (what a loss uses).  ``unresolved`` slots (no allowed
    candidate existed) and ``masked`` shared pairs are returned invalid.
    """

    drawn: int = 0
    true_drawn: int = 0
    type_violations: int = 0
    resampled: int = 0
    fallback: int = 0
    unresolved: int = 0
    true_returned: int = 0
    masked: int = 0

    def reset(self) -> None:
        for k in asdict(self):
            setattr(self, k, 0)

    @property
    def false_negative_rate(self) -> float:
        return self.true_drawn / self.drawn if self.drawn else 0.0

    @property
    def returned_false_negative_rate(self) -> float:
        return self.true_returned / self.drawn if self.drawn else 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["false_negative_rate"] = self.false_negative_rate
        d["returned_false_negative_rate"] = self.returned_false_negative_rate
        return d


class NegativeSample(NamedTuple):
    """Per-positive negatives with their bookkeeping.

    ``negatives (B, K, 3)``; ``sides (B, K)`` True where the head was replaced;
    ``valid (B, K)`` False only where no allowed candidate existed (the slot
    holds a rejected entity; losses should mask it).
    """

    negatives: np.ndarray
    sides: np.ndarray
    valid: np.ndarray

    @property
    def replacements(self) -> np.ndarray:
        """The entity put in the replaced slot, ``(B, K)``."""
        return np.where(self.sides, self.negatives[..., 0], self.negatives[..., 2])


class SharedNegatives(NamedTuple):
    """One candidate set per batch: row ``b`` replaces its head (``sides[b]``) or tail by each candidate.

    ``head_candidates (K,)`` replace heads, ``tail_candidates (K,)`` replace
    tails (often the same array); ``valid (B, K)`` masks known true triples,
    type violations and self-pairs.
    """

    sides: np.ndarray
    head_candidates: np.ndarray
    tail_candidates: np.ndarray
    valid: np.ndarray

    def candidates_for_rows(self) -> np.ndarray:
        """``(B, K)`` the replacement entity of each (row, candidate)."""
        return np.where(self.sides[:, None], self.head_candidates[None, :], self.tail_candidates[None, :])

    def as_triples(self, batch: np.ndarray) -> np.ndarray:
        """``(B, K, 3)`` explicit negatives (for tests and audits)."""
        return _replace(batch, np.broadcast_to(self.sides[:, None], self.valid.shape), self.candidates_for_rows())


# ----------------------------------------------------------------------------- indexes over triples
def _as_triples(x, what: str = "triples") -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2 or a.shape[1] != 3:
        raise MmeaInputError(f"{what} must be an int array of shape (n, 3) (head, relation, tail); got {a.shape}")
    return a.astype(np.int64, copy=False)


class TripleSet:
    """A hashed set of triples: ``key = (h * R + r) * E + t`` in a sorted int64 array.

    Membership of ``n`` queries costs one ``np.searchsorted`` (``O(n log T)``);
    keys fit int64 while ``E * E * R < 9.2e18``.
    """

    def __init__(self, triples: np.ndarray, num_entities: int, num_relations: int):
        self.num_entities = int(num_entities)
        self.num_relations = int(num_relations)
        if self.num_entities**2 * max(self.num_relations, 1) >= 2**63:
            raise MmeaInputError("graph too large for int64 triple keys (E * E * R >= 2**63)")
        self.keys = np.unique(self.encode(_as_triples(triples)))

    def encode(self, triples: np.ndarray) -> np.ndarray:
        t = np.asarray(triples, dtype=np.int64)
        return (t[..., 0] * self.num_relations + t[..., 1]) * self.num_entities + t[..., 2]

    def contains(self, triples: np.ndarray) -> np.ndarray:
        """Bool mask of the leading shape of ``triples (..., 3)``."""
        k = self.encode(triples)
        if not len(self.keys):
            return np.zeros(k.shape, dtype=bool)
        pos = np.searchsorted(self.keys, k)
        pos = np.minimum(pos, len(self.keys) - 1)
        return self.keys[pos] == k

    def __len__(self) -> int:
        return len(self.keys)


class _Csr(NamedTuple):
    """Group index: ``values[indptr[i]:indptr[i + 1]]`` are the members of group ``i``."""

    indptr: np.ndarray
    values: np.ndarray

    @classmethod
    def build(cls, groups: np.ndarray, values: np.ndarray, num_groups: int) -> "_Csr":
        order = np.lexsort((values, groups))
        counts = np.bincount(groups, minlength=num_groups)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(indptr, np.asarray(values, dtype=np.int64)[order])

    def members(self, group: int) -> np.ndarray:
        return self.values[self.indptr[group]:self.indptr[group + 1]]


class KeyGroups(NamedTuple):
    """Members grouped by an int64 key, compact: ``values[indptr[i]:indptr[i + 1]]`` belong to ``keys[i]``."""

    keys: np.ndarray  # sorted unique group keys (G,)
    indptr: np.ndarray  # (G + 1,)
    values: np.ndarray  # members, grouped, each group sorted

    @classmethod
    def build(cls, keys: np.ndarray, values: np.ndarray) -> "KeyGroups":
        keys, values = np.asarray(keys, dtype=np.int64), np.asarray(values, dtype=np.int64)
        order = np.lexsort((values, keys))
        k, v = keys[order], values[order]
        uniq, start = np.unique(k, return_index=True)
        return cls(uniq, np.append(start, len(k)).astype(np.int64), v)

    def lookup(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat ``(query position, member)`` pairs for every member of each query's group."""
        queries = np.asarray(queries, dtype=np.int64)
        if not len(self.keys) or not len(queries):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.keys, queries), len(self.keys) - 1)
        found = self.keys[pos] == queries
        start = np.where(found, self.indptr[pos], 0)
        count = np.where(found, self.indptr[pos + 1] - self.indptr[pos], 0)
        rows = np.repeat(np.arange(len(queries)), count)
        offsets = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
        return rows, self.values[np.repeat(start, count) + offsets]


class PartnerIndex:
    """Known answers of ``(h, r, ?)`` (tails) and ``(?, r, t)`` (heads) queries, from a set of true triples.

    Used for the filtered evaluation and for the batch-shared false-negative
    mask, where looking up each row's few known partners is far cheaper than
    testing all ``B * K`` (row, candidate) pairs for membership.
    """

    def __init__(self, triples: np.ndarray, num_entities: int, num_relations: int):
        t = _as_triples(triples)
        self.num_entities, self.num_relations = int(num_entities), int(num_relations)
        self.tails = KeyGroups.build(t[:, 0] * self.num_relations + t[:, 1], t[:, 2])
        self.heads = KeyGroups.build(t[:, 1] * self.num_entities + t[:, 2], t[:, 0])

    def known_tails(self, h: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(query position, tail)`` pairs of every known tail of each ``(h, r)``."""
        return self.tails.lookup(np.asarray(h, dtype=np.int64) * self.num_relations + np.asarray(r))

    def known_heads(self, r: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(query position, head)`` pairs of every known head of each ``(r, t)``."""
        return self.heads.lookup(np.asarray(r, dtype=np.int64) * self.num_entities + np.asarray(t))

    def candidate_mask(self, batch: np.ndarray, replace_head: bool, candidates: np.ndarray) -> np.ndarray:
        """``(B, K)`` True where ``batch[b]`` with its head (or tail) set to ``candidates[k]`` is known."""
        batch = _as_triples(batch, "batch")
        candidates = np.asarray(candidates, dtype=np.int64)
        mask = np.zeros((len(batch), len(candidates)), dtype=bool)
        if replace_head:
            rows, partners = self.known_heads(batch[:, 1], batch[:, 2])
        else:
            rows, partners = self.known_tails(batch[:, 0], batch[:, 1])
        if not len(rows) or not len(candidates):
            return mask
        order = np.argsort(candidates, kind="stable")
        sc = candidates[order]
        lo = np.searchsorted(sc, partners, "left")
        cnt = np.searchsorted(sc, partners, "right") - lo  # a candidate may repeat
        rr = np.repeat(rows, cnt)
        offsets = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        mask[rr, order[np.repeat(lo, cnt) + offsets]] = True
        return mask


@dataclass(frozen=True)
class RelationCardinality:
    """Per-relation ``tph`` and ``hpt`` (Wang et al., 2014, "Knowledge Graph Embedding by Translating on Hyperplanes").

    ``tph[r]`` = triples of ``r`` / distinct heads of ``r`` (average tails per
    head), ``hpt[r]`` = triples / distinct tails.  Bernoulli sampling replaces
    the head with ``p = tph / (tph + hpt)``.  Categories follow Bordes et al.
    (2013) with threshold 1.5: ``1-1``, ``1-N`` (``tph >= 1.5 > hpt``),
    ``N-1`` and ``N-N``.  A relation without training triples gets
    ``tph = hpt = 1``.
    """

    tph: np.ndarray
    hpt: np.ndarray

    @classmethod
    def from_triples(cls, triples: np.ndarray, num_relations: int) -> "RelationCardinality":
        t = _as_triples(triples)
        n = np.bincount(t[:, 1], minlength=num_relations).astype(np.float64)
        hr = np.unique(t[:, [1, 0]], axis=0)
        rt = np.unique(t[:, [1, 2]], axis=0)
        n_heads = np.bincount(hr[:, 0], minlength=num_relations).astype(np.float64)
        n_tails = np.bincount(rt[:, 0], minlength=num_relations).astype(np.float64)
        tph = np.divide(n, n_heads, out=np.ones(num_relations), where=n_heads > 0)
        hpt = np.divide(n, n_tails, out=np.ones(num_relations), where=n_tails > 0)
        return cls(tph, hpt)

    @property
    def head_probability(self) -> np.ndarray:
        return self.tph / (self.tph + self.hpt)

    def category(self, threshold: float = 1.5) -> np.ndarray:
        """``(R,)`` of ``"1-1" | "1-N" | "N-1" | "N-N"``."""
        many_t = self.tph >= threshold
        many_h = self.hpt >= threshold
        out = np.full(len(self.tph), "1-1", dtype=object)
        out[many_t & ~many_h] = "1-N"
        out[~many_t & many_h] = "N-1"
        out[many_t & many_h] = "N-N"
        return out


@dataclass(frozen=True)
class TypeConstraints:
    """Domain and range of each relation learned from training triples: bool ``(R, E)`` each."""

    domain: np.ndarray
    range: np.ndarray

    @classmethod
    def from_triples(cls, triples: np.ndarray, num_entities: int, num_relations: int) -> "TypeConstraints":
        t = _as_triples(triples)
        dom = np.zeros((num_relations, num_entities), dtype=bool)
        rng = np.zeros((num_relations, num_entities), dtype=bool)
        dom[t[:, 1], t[:, 0]] = True
        rng[t[:, 1], t[:, 2]] = True
        return cls(dom, rng)

    def allows(self, relations: np.ndarray, entities: np.ndarray, sides: np.ndarray) -> np.ndarray:
        """Whether ``entities`` may fill the head (``sides``) / tail slot of ``relations`` (broadcast)."""
        r, e, s = np.broadcast_arrays(relations, entities, sides)
        return np.where(s, self.domain[r, e], self.range[r, e])


def _replace(batch: np.ndarray, sides: np.ndarray, entities: np.ndarray) -> np.ndarray:
    """``(B, K, 3)``: ``batch`` repeated with the head (``sides``) or the tail set to ``entities``."""
    neg = np.repeat(batch[:, None, :], entities.shape[1], axis=1)
    neg[..., 0] = np.where(sides, entities, neg[..., 0])
    neg[..., 2] = np.where(sides, neg[..., 2], entities)
    return neg


# ----------------------------------------------------------------------------- the template
class NegativeSampler:
    """Base class: :meth:`sample` chooses sides and enforces :class:`FalseNegativeControl`; subclasses corrupt.

    Args:
        triples: training triples ``(T, 3)`` (relation statistics, type
            constraints, graph structure).
        num_entities, num_relations: sizes of the id spaces.
        control: the false-negative switches.
        filter_triples: the known true triples to filter (default: ``triples``).
        seed: seed of the sampler's own ``numpy`` generator.
    """

    registry_name: str = ""
    #: True when the sampler needs :meth:`bind` (a score or embedding callback).
    needs_model: bool = False
    #: True when :meth:`sample_shared` is available.
    supports_shared: bool = False
    #: attributes that training changes, saved by :meth:`state_dict` besides the generator, stats and epoch
    checkpoint_attrs: tuple[str, ...] = ()

    def __init__(self, triples: np.ndarray, num_entities: int, num_relations: int, *,
                 control: FalseNegativeControl | None = None, filter_triples: np.ndarray | None = None,
                 seed: int = 0):
        self.triples = _as_triples(triples)
        self.num_entities = int(num_entities)
        self.num_relations = int(num_relations)
        if self.num_entities < 2:
            raise MmeaInputError("negative sampling needs at least 2 entities")
        self.control = control or FalseNegativeControl()
        self.known = TripleSet(self.triples if filter_triples is None else filter_triples,
                               self.num_entities, self.num_relations)
        self.cardinality = RelationCardinality.from_triples(self.triples, self.num_relations)
        self._categories = self.cardinality.category()  # (R,) "1-1" | "1-N" | "N-1" | "N-N"
        self._types: TypeConstraints | None = None
        self._partners: PartnerIndex | None = None
        self.rng = np.random.default_rng(seed)
        self.stats = SamplerStats()
        self.score_fn: ScoreFn | None = None
        self.embedding_fn: EmbeddingFn | None = None
        self.replaced_score_fn: ReplacedScoreFn | None = None
        self.epoch = 0

    # -- wiring ---------------------------------------------------------------
    @property
    def partners(self) -> PartnerIndex:
        """Known heads / tails per query, from the filter set (built on first use)."""
        if self._partners is None:
            e, r_ = self.num_entities, self.num_relations
            k = self.known.keys
            triples = np.stack([k // (r_ * e), (k // e) % r_, k % e], axis=1)
            self._partners = PartnerIndex(triples, e, r_)
        return self._partners

    @property
    def types(self) -> TypeConstraints:
        if self._types is None:
            self._types = TypeConstraints.from_triples(self.triples, self.num_entities, self.num_relations)
        return self._types

    def bind(self, score_fn: ScoreFn | None = None, embedding_fn: EmbeddingFn | None = None,
             replaced_score_fn: ReplacedScoreFn | None = None) -> "NegativeSampler":
        """Give a model-aware sampler its model callbacks.

        ``replaced_score_fn`` is an optional fast path for scoring candidate
        pools (the model computes one query per positive instead of scoring
        ``B * C`` independent triples); without it ``score_fn`` is used.
        """
        if score_fn is not None:
            self.score_fn = score_fn
        if embedding_fn is not None:
            self.embedding_fn = embedding_fn
        if replaced_score_fn is not None:
            self.replaced_score_fn = replaced_score_fn
        return self

    def _score_replacements(self, batch: np.ndarray, sides: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """Model scores ``(B, C)`` of ``batch`` with the ``sides`` slot replaced by ``cand (B, C)``."""
        sides = np.broadcast_to(sides, cand.shape)
        if self.replaced_score_fn is not None:
            return np.asarray(self.replaced_score_fn(batch, sides, cand), dtype=np.float64).reshape(cand.shape)
        triples = _replace(batch, sides, cand)  # (B, C, 3)
        return np.asarray(self.score_fn(triples.reshape(-1, 3)), dtype=np.float64).reshape(cand.shape)

    def on_epoch_start(self, epoch: int) -> None:
        """Called by the training loop before each epoch (0-based)."""
        self.epoch = epoch

    def state_dict(self) -> dict:
        """What a checkpoint needs to continue sampling exactly: the generator, the counters,
        the epoch and :attr:`checkpoint_attrs`."""
        return {"rng": self.rng.bit_generator.state, "stats": asdict(self.stats), "epoch": self.epoch,
                **{a: getattr(self, a) for a in self.checkpoint_attrs}}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of :meth:`state_dict`."""
        self.rng.bit_generator.state = state["rng"]
        self.stats = SamplerStats(**state["stats"])
        self.epoch = int(state["epoch"])
        for a in self.checkpoint_attrs:
            setattr(self, a, state[a])

    def describe(self) -> dict:
        return {"name": self.registry_name, "control": asdict(self.control)}

    # -- step 1: sides ---------------------------------------------------------
    def head_probability(self, relations: np.ndarray) -> np.ndarray:
        """Probability of replacing the head, per positive ``(B,)``."""
        return np.full(len(relations), 0.5)

    def corrupt_side(self, batch: np.ndarray, num_negatives: int | None,
                     rng: np.random.Generator) -> np.ndarray:
        """``(B, K)`` (or ``(B,)`` when ``num_negatives`` is None): True = replace the head."""
        p = self.head_probability(batch[:, 1])
        shape = (len(batch),) if num_negatives is None else (len(batch), num_negatives)
        u = rng.random(shape)
        sides = u < (p if num_negatives is None else p[:, None])
        if self.control.cardinality_aware:
            cat = self._categories[batch[:, 1]]
            force_head, force_tail = cat == "1-N", cat == "N-1"
            if num_negatives is not None:
                force_head, force_tail = force_head[:, None], force_tail[:, None]
            sides = (sides | force_head) & ~force_tail
        return sides

    # -- step 2: corrupt (the subclass's only job) -------------------------------
    def _corrupt(self, batch: np.ndarray, sides: np.ndarray, num_negatives: int,
                 rng: np.random.Generator) -> np.ndarray:
        """Replacement entities ``(B, K)`` for the slots chosen by ``sides (B, K)``."""
        raise NotImplementedError

    def _corrupt_shared(self, batch: np.ndarray, sides: np.ndarray, num_negatives: int,
                        rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(head_candidates (K,), tail_candidates (K,), extra_valid (B, K) | None)``."""
        raise MmeaInputError(f"sampler {self.registry_name!r} has no batch-shared mode",
                             hint="use shared_negatives=false, or sampler uniform / bernoulli / in-batch")

    def _allowed_candidates(self, batch_row: np.ndarray, side: bool) -> np.ndarray | None:
        """Entities this sampler may propose for one slot (exact fallback); None = any entity."""
        return None

    def _after_sample(self, batch: np.ndarray, sample: NegativeSample) -> None:
        """Hook after a batch was sampled (the cache sampler updates its caches here)."""

    # -- step 3: control ---------------------------------------------------------
    def _check(self, batch: np.ndarray, sides: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(is_true (B, K), type_ok (B, K))`` for replacement entities ``cand``."""
        is_true = self.known.contains(_replace(batch, sides, cand))
        if self.control.type_constraints:
            type_ok = self.types.allows(batch[:, 1:2], cand, sides)
        else:
            type_ok = np.ones(cand.shape, dtype=bool)
        return is_true, type_ok

    def _acceptable(self, is_true: np.ndarray, type_ok: np.ndarray) -> np.ndarray:
        ok = type_ok.copy()
        if self.control.filtered:
            ok &= ~is_true
        return ok

    def _known_partners(self, row: np.ndarray, side: bool) -> np.ndarray:
        """Known heads of ``(r, t)`` (side True) or tails of ``(h, r)``, from the filter set."""
        if side:
            return self.partners.known_heads(row[None, 1], row[None, 2])[1]
        return self.partners.known_tails(row[None, 0], row[None, 1])[1]

    def _exact_fallback(self, batch: np.ndarray, sides: np.ndarray, cand: np.ndarray, ok: np.ndarray,
                        rng: np.random.Generator) -> np.ndarray:
        """Fill still-rejected slots by a uniform draw from the allowed candidates; returns ``valid``."""
        valid = ok.copy()
        for b, k in zip(*np.nonzero(~ok)):
            side = bool(sides[b, k])
            allowed = np.ones(self.num_entities, dtype=bool)
            own = self._allowed_candidates(batch[b], side)
            if own is not None:
                allowed[:] = False
                allowed[own] = True
            if self.control.type_constraints:
                allowed &= (self.types.domain if side else self.types.range)[batch[b, 1]]
            if self.control.filtered:
                allowed[self._known_partners(batch[b], side)] = False
            choices = np.flatnonzero(allowed)
            if len(choices):
                cand[b, k] = choices[rng.integers(len(choices))]
                valid[b, k] = True
                self.stats.fallback += 1
            else:
                self.stats.unresolved += 1
        return valid

    def sample_with_info(self, batch: np.ndarray, num_negatives: int,
                         rng: np.random.Generator | None = None) -> NegativeSample:
        """:meth:`sample` plus the replaced sides and the validity mask."""
        batch = _as_triples(batch, "batch")
        if num_negatives < 1:
            raise MmeaInputError(f"num_negatives must be >= 1, got {num_negatives}")
        if self.needs_model and self.score_fn is None and self.embedding_fn is None:
            raise MmeaInputError(f"sampler {self.registry_name!r} needs the model: call bind(score_fn=..., "
                                 "embedding_fn=...) first (the link-prediction trainer does this)")
        rng = rng or self.rng
        sides = self.corrupt_side(batch, num_negatives, rng)  # (B, K)
        cand = np.asarray(self._corrupt(batch, sides, num_negatives, rng), dtype=np.int64)  # (B, K)
        if cand.shape != sides.shape:
            raise RuntimeError(f"{type(self).__name__}._corrupt returned {cand.shape}, expected {sides.shape}")
        is_true, type_ok = self._check(batch, sides, cand)
        self.stats.drawn += cand.size
        self.stats.true_drawn += int(is_true.sum())
        self.stats.type_violations += int((~type_ok).sum())
        ok = self._acceptable(is_true, type_ok)
        for _ in range(self.control.max_resample):
            if ok.all():
                break
            rows = np.flatnonzero(~ok.all(axis=1))
            new = np.asarray(self._corrupt(batch[rows], sides[rows], num_negatives, rng), dtype=np.int64)
            bad = ~ok[rows]
            self.stats.resampled += int(bad.sum())
            cand[rows] = np.where(bad, new, cand[rows])
            t2, ty2 = self._check(batch[rows], sides[rows], cand[rows])
            ok[rows] = self._acceptable(t2, ty2)
        valid = ok if ok.all() else self._exact_fallback(batch, sides, cand, ok, rng)
        negatives = _replace(batch, sides, cand)  # (B, K, 3)
        self.stats.true_returned += int((self.known.contains(negatives) & valid).sum())
        out = NegativeSample(negatives, sides, valid)
        self._after_sample(batch, out)
        return out

    def sample(self, batch: np.ndarray, num_negatives: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """Negatives ``(B, K, 3)`` for positives ``batch (B, 3)``."""
        return self.sample_with_info(batch, num_negatives, rng).negatives

    def sample_shared(self, batch: np.ndarray, num_negatives: int,
                      rng: np.random.Generator | None = None) -> SharedNegatives:
        """One candidate set for the whole batch; rejected (row, candidate) pairs are masked, not resampled."""
        batch = _as_triples(batch, "batch")
        rng = rng or self.rng
        sides = self.corrupt_side(batch, None, rng)  # (B,)
        hc, tc, extra = self._corrupt_shared(batch, sides, num_negatives, rng)
        hc, tc = np.asarray(hc, dtype=np.int64), np.asarray(tc, dtype=np.int64)
        shape = (len(batch), len(hc))
        is_true = np.zeros(shape, dtype=bool)  # (B, K), from each row's known partners (no B*K key search)
        for side, cands in ((True, hc), (False, tc)):
            rows = np.flatnonzero(sides == side)
            if len(rows):
                is_true[rows] = self.partners.candidate_mask(batch[rows], side, cands)
        shared = SharedNegatives(sides, hc, tc, np.ones(shape, dtype=bool))
        if self.control.type_constraints:
            full_sides = np.broadcast_to(sides[:, None], shape)
            type_ok = self.types.allows(batch[:, 1:2], shared.candidates_for_rows(), full_sides)
        else:
            type_ok = np.ones(shape, dtype=bool)
        self.stats.drawn += is_true.size
        self.stats.true_drawn += int(is_true.sum())
        self.stats.type_violations += int((~type_ok).sum())
        valid = self._acceptable(is_true, type_ok)
        if extra is not None:
            valid &= extra
        self.stats.masked += int((~valid).sum())
        self.stats.true_returned += int((is_true & valid).sum())
        return shared._replace(valid=valid)


SAMPLERS: Registry[NegativeSampler] = Registry("sampler", suffix="NegativeSampler")


def make_sampler(name, triples: np.ndarray, num_entities: int, num_relations: int, **kwargs) -> NegativeSampler:
    """Build a registered sampler by name (``kwargs``: control, filter_triples, seed and its own options)."""
    return SAMPLERS.make(name, triples=triples, num_entities=num_entities, num_relations=num_relations, **kwargs)


# ----------------------------------------------------------------------------- samplers
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
        from .search import knn
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


# ----------------------------------------------------------------------------- alignment negatives
LINK_SAMPLERS = ("uniform", "in-batch", "hard-nn")


def sample_link_negatives(links: np.ndarray, num_entities_src: int, num_entities_tgt: int, num_negatives: int,
                          *, sampler: str = "uniform", side: str = "tgt", known_links: np.ndarray | None = None,
                          embeddings: np.ndarray | None = None, num_neighbors: int = 64,
                          neighbors: np.ndarray | None = None, max_resample: int = 10,
                          rng: np.random.Generator | int | None = None) -> np.ndarray:
    """Negative counterparts ``(B, K)`` for alignment links ``(e, e')``.

    ``side="tgt"``: entities of the target KG to pair with each ``e`` (negative
    links ``(e, n_j)``); ``side="src"``: source entities for each ``e'``.
    Rules (the same as the triple samplers):

    * ``uniform``: a uniformly random entity of that KG;
    * ``in-batch``: the counterpart of another link of the batch;
    * ``hard-nn``: one of the ``num_neighbors`` nearest neighbours (cosine) of
      the replaced entity in its own KG (BootEA); give ``embeddings`` of that
      KG (``(N, d)``) or a precomputed ``neighbors`` table ``(N, n)``.

    Never returns a known link (``known_links``, default the links
    themselves): rejected draws are redrawn up to ``max_resample`` times,
    then replaced by a uniform draw among the allowed entities.
    """
    links = np.asarray(links, dtype=np.int64).reshape(-1, 2)
    if side not in ("src", "tgt"):
        raise MmeaInputError(f"side must be 'src' or 'tgt', got {side!r}")
    if sampler not in LINK_SAMPLERS:
        raise MmeaInputError(f"unknown link sampler {sampler!r}; valid choices: {', '.join(LINK_SAMPLERS)}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    col = 1 if side == "tgt" else 0  # the replaced column
    n_pool = num_entities_tgt if side == "tgt" else num_entities_src
    if n_pool < 2:
        raise MmeaInputError("link negatives need at least 2 entities on the replaced side")
    known = links if known_links is None else np.asarray(known_links, dtype=np.int64).reshape(-1, 2)
    width = max(num_entities_tgt, 1)
    known_keys = np.unique(known[:, 0] * width + known[:, 1])
    if sampler == "hard-nn" and neighbors is None:
        if embeddings is None:
            raise MmeaInputError("hard-nn link negatives need the replaced KG's embeddings (or a neighbors table)")
        neighbors = nearest_neighbour_table(embeddings, num_neighbors)

    def draw(rows: np.ndarray) -> np.ndarray:
        shape = (len(rows), num_negatives)
        if sampler == "uniform":
            return rng.integers(0, n_pool, size=shape)
        if sampler == "in-batch":
            n = len(links)
            if n < 2:
                return rng.integers(0, n_pool, size=shape)
            other = (rows[:, None] + rng.integers(1, n, size=shape)) % n
            return links[other, col]
        return neighbors[links[rows, col][:, None], rng.integers(0, neighbors.shape[1], size=shape)]

    def is_known(rows: np.ndarray, cand: np.ndarray) -> np.ndarray:
        fixed = links[rows, 1 - col][:, None]
        key = fixed * width + cand if side == "tgt" else cand * width + fixed
        if not len(known_keys):
            return np.zeros(cand.shape, dtype=bool)
        pos = np.minimum(np.searchsorted(known_keys, key), len(known_keys) - 1)
        return known_keys[pos] == key

    all_rows = np.arange(len(links))
    out = draw(all_rows)
    bad = is_known(all_rows, out)
    for _ in range(max_resample):
        if not bad.any():
            break
        rows = np.flatnonzero(bad.any(1))
        out[rows] = np.where(bad[rows], draw(rows), out[rows])
        bad[rows] = is_known(rows, out[rows])
    for b, k in zip(*np.nonzero(bad)):
        allowed = np.ones(n_pool, dtype=bool)
        fixed = links[b, 1 - col]
        partners = known[known[:, 1 - col] == fixed, col]
        allowed[partners] = False
        choices = np.flatnonzero(allowed)
        if len(choices):
            out[b, k] = choices[rng.integers(len(choices))]
    return out
