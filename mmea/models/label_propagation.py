"""Training-free label propagation (LightEA-style): seed labels spread over the relation graphs, no names.

Mao, Wang, Wu, Lan, "LightEA: A Scalable, Robust, and Interpretable Entity Alignment
Framework via Three-view Label Propagation", EMNLP 2022.  The maths is in
:mod:`mmea.models.label_propagation_math`; in short, each train link ``j`` gives
both of its entities the same random label ``z_j`` (``anchor_dim`` wide), the
labels spread ``hops`` hops over each KG separately, through the entity graph
(entity -> entity) and through the relations (entity -> relation -> entity),
normalised after every hop, and an entity is the concatenation of its per-hop,
per-view label vectors:

    H = [sqrt(1 - w) E^(1), sqrt(w) F^(1), ..., sqrt(1 - w) E^(K), sqrt(w) F^(K)]   (N, 2K * anchor_dim)

rows L2-normalised, so the inner product of two entities is the weighted mean of
the per-view cosines ("my neighbours carry the labels yours carry").  ``w`` is the
relation-view weight ``relation_weight``, or, when negative, the one of
``relation_weights`` with the best Hits@1 (cosine) on the *validation* links.
CSLS ranking is left to :mod:`mmea.search`.

Iterative rounds (``rounds``): after each propagation, the pairs that are each
other's best CSLS match among the entities not yet anchored (neither train link
entities nor earlier proposals; test and valid links are never read) become new
anchors with labels of their own, and the labels are propagated again.  An
entity is proposed at most once.  ``min_round_pairs`` stops the rounds early.

Uses the relation triples and ``task.train`` only (``task.valid`` to choose
``w``): no names, no attributes, no numbers, no images.  ``self.info`` records
what was used, the hops, rounds, anchor width and the seeds added per round.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from ..config import FiniteFloat, NonNegInt, PositiveInt
from ..errors import MmeaInputError
from . import label_propagation_math as lpm
from .base import MODELS, AlignmentModel

log = logging.getLogger("mmea.models")


@MODELS.register
class LabelPropagationModel(AlignmentModel):
    """LightEA-style label propagation of seed anchors over the entity and relation views; training-free, no names."""

    uses_gold_for_training = True

    @dataclass(frozen=True)
    class Config:
        hops: PositiveInt = 3
        anchor_dim: NonNegInt = 1024         # width of the random labels; 0 = exact one-hot (one column per anchor)
        relation_weight: FiniteFloat = -1.0  # < 0: chosen from relation_weights by Hits@1 on the valid links
        relation_weights: tuple = (0.0, 0.25)
        rounds: NonNegInt = 0                # iterative rounds adding mutual nearest pairs as anchors
        csls_k: PositiveInt = 10               # CSLS neighbourhood of the mutual-nearest step
        min_round_pairs: NonNegInt = 1       # stop the rounds when a round proposes fewer pairs

        def __post_init__(self):
            if self.hops < 1 or self.anchor_dim < 0 or self.rounds < 0 or self.csls_k < 1:
                raise MmeaInputError("label_propagation: hops >= 1, anchor_dim >= 0, rounds >= 0 and csls_k >= 1 "
                                     f"(got {self.hops}, {self.anchor_dim}, {self.rounds}, {self.csls_k})")
            bad = [w for w in (self.relation_weight, *self.relation_weights) if w > 1]
            if bad or not self.relation_weights or any(w < 0 for w in self.relation_weights):
                raise MmeaInputError("label_propagation: relation weights must lie in [0, 1] "
                                     f"(relation_weight < 0 means: choose); got {self.relation_weight}, "
                                     f"{list(self.relation_weights)}")

    def fit(self, task, features=None) -> None:
        """Propagate the labels of ``task.train`` (no features are needed: none are computed)."""
        self.learn(task, features)

    def learn(self, task, features=None) -> None:
        """See the module docstring; ``features`` is unused (the model reads triples and links only)."""
        c = self.config
        t0 = time.perf_counter()
        src, tgt = task.source, task.target
        seeds = np.asarray(task.train, dtype=np.int64).reshape(-1, 2)  # (L, 2)
        if not len(seeds):
            raise MmeaInputError("label_propagation needs seed links (task.train is empty)",
                                 hint="give --seed-ratio > 0, or use a model that builds pseudo-seeds "
                                      "(--model propagation)")
        self._graphs = [(lpm.entity_graph(kg.triples, kg.num_entities),  # (N, N)
                         lpm.relation_incidence(kg.triples, kg.num_entities, kg.num_relations))  # (N, 2R)
                        for kg in (src, tgt)]
        valid = np.asarray(task.valid, dtype=np.int64).reshape(-1, 2)
        blocks = self._propagate(seeds)
        weight = c.relation_weight if c.relation_weight >= 0 else self._choose_relation_weight(blocks, valid, seeds)
        self._src, self._tgt = self._embed(blocks, weight)
        anchors, added = seeds, []
        for r in range(c.rounds):
            pairs = self._mutual_pairs(anchors, src.num_entities, tgt.num_entities)
            added.append(int(len(pairs)))
            log.info("label propagation: round %d adds %d mutual nearest pairs", r + 1, len(pairs))
            if len(pairs) < c.min_round_pairs:
                break
            anchors = np.concatenate([anchors, pairs])
            self._src, self._tgt = self._embed(self._propagate(anchors), weight)
        self.anchors = anchors  # (L', 2): the train links, then each round's proposals
        self.info.update({
            "names_used": False, "inputs": ["relation triples", "train links"] + (["valid links (relation weight)"]
                                                                                 if c.relation_weight < 0 else []),
            "hops": c.hops, "rounds": len(added), "rounds_requested": c.rounds,
            "anchor_dim": c.anchor_dim or int(len(anchors)), "anchor_labels": "one-hot" if c.anchor_dim == 0
            else "random Gaussian", "seeds": {"kind": "train links", "count": int(len(seeds))},
            "iterative": c.rounds > 0, "seeds_added_per_round": added,
            "modalities": {"relations": sum(int(np.count_nonzero(np.diff(p.indptr))) for p, _ in self._graphs)},
            "anchors_final": int(len(anchors)), "relation_weight": weight, "dim": int(self._src.shape[1]),
            "fit_s": round(time.perf_counter() - t0, 3)})

    # -- parts ---------------------------------------------------------------
    def _propagate(self, anchors: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per-hop blocks ``[E1, F1, ...]`` of both KGs from the labels of ``anchors (L, 2)``."""
        c = self.config
        (ps, qs), (pt, qt) = self._graphs
        xs, xt = lpm.seed_labels(anchors, ps.shape[0], pt.shape[0], c.anchor_dim, self.ctx.seed)  # (N, d), (M, d)
        return lpm.propagate(ps, qs, xs, c.hops), lpm.propagate(pt, qt, xt, c.hops)

    @staticmethod
    def _embed(blocks, weight: float) -> tuple[np.ndarray, np.ndarray]:
        """Concatenate entity-view blocks (weight ``1 - w``) and relation-view blocks (``w``); rows L2-normalised."""
        out = []
        for side in blocks:
            scaled = [np.sqrt(1.0 - weight if k % 2 == 0 else weight, dtype=np.float32) * b
                      for k, b in enumerate(side) if (weight if k % 2 else 1.0 - weight) > 0]
            out.append(lpm.l2_rows(np.concatenate(scaled, axis=1).astype(np.float32)))  # (n, dims)
        return out[0], out[1]

    def _choose_relation_weight(self, blocks, valid: np.ndarray, seeds: np.ndarray) -> float:
        """The weight of ``relation_weights`` with the best Hits@1 (CSLS) of the valid links.

        Candidates: every target outside the train links; the CSLS radii come from every source and
        target outside the train links (unlabelled entities, no gold link read), blockwise
        (:mod:`mmea.search`), never a dense valid x targets matrix beyond a block.  Ties go to the
        first weight listed.
        """
        from ..search.csls import csls_radius, csls_topk

        c = self.config
        if not len(valid):
            self.info["relation_weight_choice"] = {"chosen_by": "default (no valid links)"}
            return float(c.relation_weights[0])
        src_rows = np.setdiff1d(np.arange(blocks[0][0].shape[0]), seeds[:, 0])  # (n',) holds the valid sources
        cand = np.setdiff1d(np.arange(blocks[1][0].shape[0]), seeds[:, 1])  # (m',)
        pos = np.searchsorted(src_rows, valid[:, 0])  # (V,) positions of the valid sources in src_rows
        scores = {}
        for w in c.relation_weights:
            s, t = self._embed(blocks, float(w))
            r_src, r_tgt = csls_radius(s[src_rows], t[cand], c.csls_k, index="torch", normalize=False)
            res = csls_topk(s[valid[:, 0]], t[cand], 1, csls_k=c.csls_k, index="torch", normalize=False,
                            rerank_k=c.csls_k, radius=(r_src[pos], r_tgt))
            scores[float(w)] = round(float(np.mean(cand[res.ids[:, 0]] == valid[:, 1])), 4)
        best = max(scores, key=lambda w: (scores[w], -list(scores).index(w)))
        self.info["relation_weight_choice"] = {"chosen_by": f"Hits@1 (CSLS) on {len(valid)} valid links",
                                               "scores": scores}
        log.info("label propagation: relation weight %s (valid Hits@1 %s)", best, scores)
        return best

    def _mutual_pairs(self, anchors: np.ndarray, n: int, m: int) -> np.ndarray:
        """``(p, 2)`` mutual best CSLS pairs among the entities not in ``anchors`` (blockwise search)."""
        from ..search.csls import csls_topk

        src_rows = np.setdiff1d(np.arange(n), anchors[:, 0])  # (n',)
        tgt_rows = np.setdiff1d(np.arange(m), anchors[:, 1])  # (m',)
        if not len(src_rows) or not len(tgt_rows):
            return np.zeros((0, 2), np.int64)
        res = csls_topk(self._src[src_rows], self._tgt[tgt_rows], 1, csls_k=self.config.csls_k, method="csls",
                        index="torch", normalize=False, rerank_k=self.config.csls_k, reverse=True)
        best = np.where(res.cos[:, 0] > 0, res.ids[:, 0], -1)  # (n',) an entity with no label proposes nothing
        return lpm.mutual_pairs(best, res.reverse_best, src_rows, tgt_rows)

    def embeddings(self):
        return self._src, self._tgt
