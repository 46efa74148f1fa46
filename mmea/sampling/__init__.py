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

Layout: :mod:`~mmea.sampling.index` (indexes over triples), :mod:`~mmea.sampling.base` (the
template, options, statistics, registry), :mod:`~mmea.sampling.samplers` (the registered
samplers), :mod:`~mmea.sampling.links` (negatives of alignment links).  Only numpy is imported
at start-up; torch / faiss inside the functions that use them, so ``mmea ls samplers`` stays instant.
"""


from __future__ import annotations

from .base import (SAMPLERS, FalseNegativeControl, NegativeSample, NegativeSampler, SamplerStats,
                   SharedNegatives, _replace, make_sampler)
from .index import KeyGroups, PartnerIndex, RelationCardinality, TripleSet, TypeConstraints
from .links import LINK_SAMPLERS, sample_link_negatives
from .samplers import (BernoulliNegativeSampler, CacheNegativeSampler, HardNnNegativeSampler,
                       InBatchNegativeSampler, KHopNegativeSampler, RankAboveNegativeSampler,
                       UniformNegativeSampler, nearest_neighbour_table)

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
