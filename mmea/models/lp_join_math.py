"""A trained model's output joined by the relational label propagation of its training pairs.

The join (used by ``relational-gnn`` and ``selfmea``, their ``lp_weight``): LightEA's relational
representation of the pairs a model trained on (Mao et al., "LightEA: A Scalable, Robust, and
Interpretable Entity Alignment Framework via Three-view Label Propagation", EMNLP 2022;
:func:`~mmea.models.label_propagation_math.relational_features`: the pairs' random one-hot labels
propagated ``LP_DEPTH`` hops over the entity and relation views of each KG, read out by ``heads`` relation
heads of ``LP_HEAD_DIM``), nothing trained, is concatenated with the model's unit rows ``e``:

    ``[sqrt(1 - w) e, sqrt(w) l]``  (both parts unit rows, so a cosine is ``(1 - w) cos_e + w cos_l``)

``w`` is set, or chosen among candidates by Hits@1 (CSLS, ``k = 10``) of held-out links ranked among their
own targets (the valid links; never a test link).  Shared maths of two models, no model or training loop
(hence ``_math``).  The propagation gives what a network trained on few links misses: the exact multi-hop
pattern of anchors around each entity, per relation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from . import label_propagation_math as lpm

#: the joined label propagation's label width, hops and head width (LightEA's)
LP_DIM, LP_DEPTH, LP_HEAD_DIM = 1024, 2, 16


def check_lp_weights(model: str, lp_weight: float, lp_weights) -> None:
    """An input error naming ``model`` unless ``lp_weight <= 1`` (negative: chosen from ``lp_weights``) and every
    ``lp_weights`` entry is in ``(0, 1]``."""
    from ..errors import MmeaInputError

    if lp_weight > 1 or not lp_weights or any(not 0 < w <= 1 for w in lp_weights):
        raise MmeaInputError(f"{model}: lp_weight must be <= 1 (negative: chosen from lp_weights) and every "
                             f"lp_weights entry in (0, 1]; got {lp_weight}, {list(lp_weights)}")


def relation_graphs(task) -> tuple:
    """The two KGs' :class:`~mmea.models.label_propagation_math.RelationalGraph` (built once per model)."""
    return tuple(lpm.RelationalGraph(kg.triples, kg.num_entities, kg.num_relations)
                 for kg in (task.source, task.target))


def pool_propagation(graphs: tuple, pairs: np.ndarray, *, heads: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(source (N, heads * LP_HEAD_DIM), target (M, ...))`` unit (or zero) rows: the relational label propagation of
    ``pairs (P, 2)`` at this module's width, hops and head width (:func:`~mmea.models.label_propagation_math.
    relational_features`); what the join appends, and what SelfMEA's ``structure_lp`` puts in its structure modality."""
    return lpm.relational_features(graphs, pairs, LP_DIM, LP_DEPTH, heads, LP_HEAD_DIM, seed)


@dataclass(frozen=True)
class PoolPropagation:
    """One :func:`pool_propagation` result and what it was computed from: ``pairs (P, 2)``, ``heads``, ``seed`` and
    the ``(source (N, 16 heads), target (M, 16 heads))`` rows.  A pre-trained encoder hands its final join's
    propagation to the model built on it (``gaussian-strong`` on ``relational-gnn`` joins the very same final
    pairs), which then skips recomputing it (about 25 s at FB15K-DB15K, 512 heads); :meth:`matches` guards it."""

    pairs: np.ndarray
    heads: int
    seed: int
    features: tuple

    def matches(self, pairs: np.ndarray, heads: int, seed: int) -> bool:
        """Whether this is the propagation of ``pairs`` at ``heads`` and ``seed`` (the same rows, in order)."""
        return (int(heads) == self.heads and int(seed) == self.seed
                and np.array_equal(np.asarray(pairs).reshape(-1, 2), self.pairs))


def join_label_propagation(emb: tuple, graphs, pairs: np.ndarray, *, heads: int, seed: int,
                           weight: float | None = None, weights=(), held_out: np.ndarray | None = None,
                           keep: tuple = (), mrr_breaks_ties: bool = False, given: PoolPropagation | None = None,
                           ) -> tuple[tuple[np.ndarray, np.ndarray], dict, PoolPropagation]:
    """``((source (N, D + 16 heads), target (M, ...)), record, propagation)``: ``emb`` joined by the propagation of
    ``pairs``.

    ``pairs (P, 2)``: the anchor pairs (source id, target id).  ``graphs``: the two KGs'
    :func:`relation_graphs`, or a callable that builds them (called only when the propagation is computed).
    ``given``: a :class:`PoolPropagation` computed before; used when it :meth:`~PoolPropagation.matches` ``pairs``,
    ``heads`` and ``seed`` (the rows are then the same), else ignored (``record["propagation"]`` says which).

    ``weight``: the join's weight; None: the one of ``weights`` with the best Hits@1 of ``held_out (V, 2)``
    among its targets (ties to the first listed, or with ``mrr_breaks_ties`` to the best MRR, then the first:
    for held-out links that nearly every weight gets right; ``keep`` lists weights tried first whose result is
    ``emb`` itself, e.g. ``(0.0,)`` to let the held-out links refuse the join).  ``record``: anchors, shape, the
    weight, how it was chosen and the scores (Hits@1; ``mrr`` too with ``mrr_breaks_ties``).  ``propagation``: the
    :class:`PoolPropagation` used (to hand on)."""
    from ..evaluation import evaluate_embeddings

    t0 = time.perf_counter()
    if given is not None and given.matches(pairs, heads, seed):
        prop, how = given, "handed over"
    else:
        built = graphs() if callable(graphs) else graphs
        prop = PoolPropagation(np.array(np.asarray(pairs).reshape(-1, 2), np.int64), int(heads), int(seed),
                               pool_propagation(built, pairs, heads=heads, seed=seed))
        how = "computed"
    lp = prop.features

    def fused(w: float) -> tuple[np.ndarray, np.ndarray]:
        if w == 0:
            return tuple(emb)
        return tuple(lpm.concat_views([g, x], w) for g, x in zip(emb, lp))

    record = {"anchors": int(len(pairs)), "depth": LP_DEPTH, "anchor_dim": LP_DIM, "heads": heads,
              "head_dim": LP_HEAD_DIM, "propagation": how}
    if weight is not None:
        w, out = float(weight), fused(float(weight))
    else:  # keep the best joined pair while scoring (ties to the first listed)
        scores, mrrs, w, out = {}, {}, None, None
        key = (lambda x: (scores[x], mrrs[x])) if mrr_breaks_ties else (lambda x: scores[x])
        for cand in list(map(float, keep)) + list(map(float, weights)):
            joined = fused(cand)
            r = evaluate_embeddings(*joined, held_out, candidates="test", csls_k=10)["test"]
            scores[cand], mrrs[cand] = round(float(r["hits@1"]), 4), round(float(r["mrr"]), 6)
            if w is None or key(cand) > key(w):
                w, out = cand, joined
            del joined
        record.update({"chosen_by": f"Hits@1 (CSLS) on {len(held_out)} held-out links", "scores": scores})
        if mrr_breaks_ties:
            record["mrr"] = mrrs
    record.update({"weight": w, "s": round(time.perf_counter() - t0, 2)})
    return out, record, prop


def join_as_configured(emb: tuple, task, pairs: np.ndarray, held_out: np.ndarray, *, lp_weight: float, lp_weights,
                       heads: int, seed: int, held_out_name: str, given: PoolPropagation | None = None
                       ) -> tuple[tuple[np.ndarray, np.ndarray], dict]:
    """:func:`join_label_propagation` of ``emb`` by ``pairs`` over ``task``'s relation triples, at a model's
    ``lp_weight``: in (0, 1] that weight; negative: chosen on ``held_out`` (at least 2 links; ``held_out_name``
    says which, e.g. ``valid links``) among 0 (no join) and ``lp_weights`` by Hits@1, ties broken by MRR (held-out
    links a model with names nearly saturates); negative with fewer held-out links: the first of ``lp_weights``.
    ``record["chosen_by"]`` says which happened.  ``given``: as :func:`join_label_propagation`'s."""
    choose = lp_weight < 0 and len(held_out) >= 2
    w = None if choose else (float(lp_weight) if lp_weight > 0 else float(lp_weights[0]))
    out, rec, _ = join_label_propagation(emb, lambda: relation_graphs(task), pairs, heads=heads, seed=seed, weight=w,
                                         weights=lp_weights, held_out=held_out, keep=(0.0,), mrr_breaks_ties=True,
                                         given=given)
    rec["chosen_by"] = (f"Hits@1 (CSLS), then MRR, on {len(held_out)} {held_out_name}" if choose else
                        "set" if lp_weight > 0 else f"default (fewer than 2 {held_out_name})")
    return out, rec
