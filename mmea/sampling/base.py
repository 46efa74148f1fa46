"""The negative-sampler template (:class:`NegativeSampler`), its options and statistics, and the
:data:`SAMPLERS` registry.  See :mod:`mmea.sampling` for the three steps of :meth:`NegativeSampler.sample`."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Callable, NamedTuple

import numpy as np

from ..errors import MmeaInputError
from ..registry import Registry
from .index import PartnerIndex, RelationCardinality, TripleSet, TypeConstraints, _as_triples

log = logging.getLogger("mmea.sampling")


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
