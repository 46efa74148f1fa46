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

Names (``name_weight != 0``, off by default): the entity names, encoded by ``name_encoder``
(character n-gram TF-IDF with a ``name_dim`` random projection by default: no weights, linear in
the entities), join as one more block, ``[sqrt(1 - a) H, sqrt(a) N]`` with rows L2-normalised
again, so a source-target inner product is ``(1 - a) cos_structure + a cos_names`` where both
exist; ``a`` is ``name_weight``, or when negative the one of ``name_weights`` with the best valid
Hits@1 (after ``w``).

Name pseudo-seeds (``name_seeds``, off by default; names on only): before the first propagation the
pairs whose normalised names are equal and unique on both sides (:func:`mmea.seeds.equal_name_pairs`,
LargeEA's name-based augmentation; train-link entities excluded) join the train links as anchors with
labels of their own.  A hash join over the names, no search: the structure view gains anchors at
every scale for seconds of work.  ``self.info["pseudo_seeds"]`` counts them; no gold link is read.

Overlap rounds (``overlap_rounds``, 0 by default; needs the overlap term): after the search has scored
its lists, the pairs that are each other's best match (CSLS) become anchors of the overlap term only
(:meth:`LabelPropagationModel.refine_overlap`; entities already anchored or in a valid link are left
out), its weight is chosen again on the valid links, and the search scores the *same* dense lists
again with the rebuilt term (:func:`mmea.search.approx.approx_search`): bootstrapping (BootEA, Sun et
al., IJCAI 2018) at the cost of sparse products, where the dense ``rounds`` above search the whole
space again.  On the 1M synthetic pair (30% seeds, names, name pseudo-seeds) one round's 459,178 mutual
pairs add 299,524 anchors (to 379,800) and test Hits@1 goes from 0.8682 to 0.9433 (docs/scale.md).  The
run is then iterative (``info["iterative"]``, ``info["overlap_rounds"]``).

At scale (issue 18) the weight choices rank a seeded sample: at most ``choice_links`` valid links,
against their targets plus other non-seed targets up to ``choice_sample`` candidates, radii over
as many non-seed sources; below those sizes every valid link, candidate and source is used.
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

READOUTS = ("views", "relational")


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
        name_seeds: bool = False             # equal unique names join the anchors (names on only)
        name_weight: FiniteFloat = 0.0       # 0: no names; (0, 1]: the names block's share; < 0: chosen
        name_weights: tuple = (0.25, 0.5, 0.75)
        name_encoder: str = "char-ngram"     # a names encoder (mmea ls encoders); char n-grams scale linearly
        name_dim: PositiveInt = 128          # projection size of the char n-gram names
        choice_sample: PositiveInt = 20000   # candidates (and radius sources) the weight choices rank, at most
        choice_links: PositiveInt = 5000     # valid links the weight choices score, at most (seeded sample)
        readout: str = "views"               # "views" (per-hop blocks) or "relational" (LightEA's readout)
        heads: PositiveInt = 512             # relational readout: relation-label heads
        head_dim: PositiveInt = 16           # relational readout: neighbour-label width per head
        overlap_weight: FiniteFloat = 0.0    # exact one-hop anchor overlap in the search: 0 off; < 0: chosen
        overlap_weights: tuple = (0.1, 0.2, 0.3)
        overlap_max_degree: NonNegInt = 1000  # links whose entity has more neighbours are left out (0: none)
        overlap_rounds: NonNegInt = 0        # search rounds: the lists' mutual best pairs join the overlap's anchors

        def __post_init__(self):
            if self.readout not in READOUTS:
                raise MmeaInputError(f"label_propagation: readout must be one of {', '.join(READOUTS)}, "
                                     f"got {self.readout!r}")
            if self.hops < 1 or self.anchor_dim < 0 or self.rounds < 0 or self.csls_k < 1:
                raise MmeaInputError("label_propagation: hops >= 1, anchor_dim >= 0, rounds >= 0 and csls_k >= 1 "
                                     f"(got {self.hops}, {self.anchor_dim}, {self.rounds}, {self.csls_k})")
            if self.overlap_rounds and self.overlap_weight == 0:
                raise MmeaInputError("label_propagation: overlap_rounds > 0 needs the anchor overlap term "
                                     f"(overlap_weight != 0; got overlap_rounds = {self.overlap_rounds}, "
                                     "overlap_weight = 0)")
            if self.overlap_weight != 0 and self.readout != "views":
                raise MmeaInputError("label_propagation: overlap_weight needs readout = \"views\" (got "
                                     f"{self.readout!r})")
            bad = [w for w in (self.relation_weight, *self.relation_weights, self.name_weight,
                               *self.name_weights, self.overlap_weight, *self.overlap_weights) if w > 1]
            if bad or not self.relation_weights or not self.name_weights or not self.overlap_weights \
                    or any(w < 0 for w in (*self.relation_weights, *self.name_weights, *self.overlap_weights)):
                raise MmeaInputError("label_propagation: relation weights must lie in [0, 1], and so must the name "
                                     "and overlap weights (relation_weight / name_weight / overlap_weight < 0 means: "
                                     "choose); got "
                                     f"{self.relation_weight}, {list(self.relation_weights)}, {self.name_weight}, "
                                     f"{list(self.name_weights)}, {self.overlap_weight}, "
                                     f"{list(self.overlap_weights)}")

    @classmethod
    def feature_requests(cls, config) -> dict:
        """Names (``name_encoder``, ``name_dim``) when ``name_weight != 0``; else nothing."""
        from ..modalities import FeatureRequest

        if config.name_weight == 0:
            return {}
        return {"names": FeatureRequest({"encoder": config.name_encoder, "dim": config.name_dim})}

    def fit(self, task, features=None) -> None:
        """Propagate the labels of ``task.train`` (features: the names, when ``name_weight != 0``)."""
        if features is None and self.config.name_weight != 0:
            return super().fit(task, features)
        self.learn(task, features)

    def learn(self, task, features=None) -> None:
        """See the module docstring; ``features``: the names (when requested and not switched off)."""
        c = self.config
        t0 = time.perf_counter()
        src, tgt = task.source, task.target
        seeds = np.asarray(task.train, dtype=np.int64).reshape(-1, 2)  # (L, 2)
        if not len(seeds):
            raise MmeaInputError("label_propagation needs seed links (task.train is empty)",
                                 hint="give --seed-ratio > 0, or use a model that builds pseudo-seeds "
                                      "(--model propagation)")
        if c.readout == "relational":
            self._graphs = tuple(lpm.RelationalGraph(kg.triples, kg.num_entities, kg.num_relations)
                                 for kg in (src, tgt))
        else:
            self._graphs = [(lpm.entity_graph(kg.triples, kg.num_entities),  # (N, N)
                             lpm.relation_incidence(kg.triples, kg.num_entities, kg.num_relations))  # (N, 2R)
                            for kg in (src, tgt)]
        valid = np.asarray(task.valid, dtype=np.int64).reshape(-1, 2)
        self._names = self._name_blocks(features)
        anchors = self.anchors_with_name_seeds(task, features, seeds)  # (L + P, 2)
        blocks = self._propagate(anchors)
        choice = self._choice_rows(valid, seeds, src.num_entities, tgt.num_entities)
        if c.readout == "relational":  # one block per side: no view weight to choose
            weight = 0.0
        else:
            weight = c.relation_weight if c.relation_weight >= 0 else self._choose_relation_weight(blocks, choice)
        self._name_weight = self._choose_name_weight(blocks, weight, choice)
        self._src, self._tgt = self._embed(blocks, weight)
        del blocks  # (N, dim) per hop and view: the largest arrays of the fit
        added = []
        for r in range(c.rounds):
            pairs = self._mutual_pairs(anchors, src.num_entities, tgt.num_entities)
            added.append(int(len(pairs)))
            log.info("label propagation: round %d adds %d mutual nearest pairs", r + 1, len(pairs))
            if len(pairs) < c.min_round_pairs:
                break
            anchors = np.concatenate([anchors, pairs])
            self._src, self._tgt = self._embed(self._propagate(anchors), weight)
        self.anchors = anchors  # (L', 2): the train links, the name pseudo-seeds, then each round's proposals
        self._choice, self._valid = choice, valid  # the overlap rounds choose its weight again (refine_overlap)
        self._overlap = self._anchor_overlap(anchors, choice)
        self.info.update({
            "names_used": self._names is not None, "name_weight": self._name_weight,
            "inputs": ["relation triples", "train links"] + (["entity names"] if self._names is not None else [])
            + (["valid links (weights)"] if c.relation_weight < 0 or c.name_weight < 0 else []),
            "hops": c.hops, "rounds": len(added), "rounds_requested": c.rounds,
            "anchor_dim": c.anchor_dim or int(len(anchors)), "anchor_labels": "one-hot" if c.anchor_dim == 0
            else "random Gaussian", "seeds": {"kind": "train links", "count": int(len(seeds))},
            "iterative": c.rounds > 0, "seeds_added_per_round": added,
            "readout": c.readout if c.readout == "views" else {"readout": "relational", "depth": c.hops,
                                                              "heads": c.heads, "head_dim": c.head_dim},
            "modalities": {"relations": self._covered(),
                           **({"names": sum(int(np.count_nonzero(np.any(x != 0, axis=1))) for x in self._names)}
                              if self._names is not None else {})},
            "anchors_final": int(len(anchors)), "relation_weight": weight, "dim": int(self._src.shape[1]),
            "overlap": self._overlap.record() if self._overlap is not None else None,
            "fit_s": round(time.perf_counter() - t0, 3)})

    # -- parts ---------------------------------------------------------------
    def _anchor_overlap(self, anchors: np.ndarray, choice: dict | None):
        """The exact one-hop anchor overlap term of the search (:func:`~mmea.models.label_propagation_math.
        anchor_overlap`) as a :class:`~mmea.search.sparse.SparseBlock`, with ``overlap_weight`` or the one of
        ``overlap_weights`` with the best valid Hits@1 (CSLS on ``cos + weight * overlap``, the choice's sampled
        rows, after the relation and name weights); ``None`` when off or chosen 0."""
        from ..search.sparse import SparseBlock, choice_hits

        c = self.config
        if c.overlap_weight == 0:
            return None
        t0 = time.perf_counter()
        us, ut = lpm.anchor_overlap((self._graphs[0][0], self._graphs[1][0]), anchors, c.overlap_max_degree)
        weight = float(c.overlap_weight)
        if weight < 0 and choice is None:
            self.info["overlap_weight_choice"] = {"chosen_by": "default (no valid links)"}
            weight = float(c.overlap_weights[0])
        elif weight < 0:
            src_rows, cand, valid = choice["src_rows"], choice["cand"], choice["valid"]
            scores = choice_hits(self._src[src_rows], self._tgt[cand], us[src_rows], ut[cand],
                                 np.searchsorted(src_rows, valid[:, 0]), np.searchsorted(cand, valid[:, 1]),
                                 [float(w) for w in c.overlap_weights], c.csls_k)
            weight = max(scores, key=lambda w: (scores[w], -list(scores).index(w)))
            self.info["overlap_weight_choice"] = {"chosen_by": self._chosen_by(choice), "scores": scores}
            log.info("label propagation: anchor overlap weight %s (valid Hits@1 %s)", weight, scores)
        self.info["overlap_s"] = round(time.perf_counter() - t0, 3)
        if weight <= 0:
            return None
        return SparseBlock(us, ut, weight, name="anchor overlap", rounds=c.overlap_rounds,
                           refine=self.refine_overlap if c.overlap_rounds else None)

    def refine_overlap(self, pairs: np.ndarray):
        """One overlap round of the search (``overlap_rounds``; :func:`mmea.search.approx.approx_search` calls it
        with the lists' mutual best pairs ``(q, 2)``, entity ids): the pairs join the anchors of the overlap term
        (those with an entity already anchored, or in a valid link, are left out: the valid links stay unseen by
        the weight choice and the calibration), the term is rebuilt and its weight chosen again on the valid
        sample (``overlap_weight < 0``).  The dense embeddings stay as they are: the search re-scores its lists.
        Returns the new :class:`~mmea.search.sparse.SparseBlock` (the previous one when the choice gives 0)."""
        t0 = time.perf_counter()
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        keep = ~np.isin(pairs[:, 0], np.concatenate([self.anchors[:, 0], self._valid[:, 0]])) \
            & ~np.isin(pairs[:, 1], np.concatenate([self.anchors[:, 1], self._valid[:, 1]]))
        self.anchors = np.concatenate([self.anchors, pairs[keep]])  # (L', 2)
        self._overlap = self._anchor_overlap(self.anchors, self._choice) or self._overlap
        rec = {"pairs": int(len(pairs)), "anchors_added": int(keep.sum()), "weight": float(self._overlap.weight),
               "valid_hits@1": (self.info.get("overlap_weight_choice") or {}).get("scores"),
               "s": round(time.perf_counter() - t0, 3)}
        log.info("label propagation: overlap round %d: %d anchors added, weight %s (valid Hits@1 %s)",
                 len(self.info.get("overlap_rounds", [])) + 1, rec["anchors_added"], rec["weight"],
                 rec["valid_hits@1"])
        self.info.setdefault("overlap_rounds", []).append(rec)
        self.info.update(overlap=self._overlap.record(), iterative=True, anchors_final=int(len(self.anchors)))
        return self._overlap

    def _covered(self) -> int:
        """Entities of both KGs with at least one relation triple."""
        if self.config.readout == "relational":
            return sum(int(np.count_nonzero(np.diff(g.tail_rels.indptr))) for g in self._graphs)
        return sum(int(np.count_nonzero(np.diff(p.indptr))) for p, _ in self._graphs)

    def _propagate(self, anchors: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per-hop blocks ``[E1, F1, ...]`` of both KGs from the labels of ``anchors (L, 2)``; with the relational
        readout one block per KG (:func:`~mmea.models.label_propagation_math.relational_features`)."""
        c = self.config
        if c.readout == "relational":
            s, t = lpm.relational_features(self._graphs, anchors, c.anchor_dim, c.hops, c.heads, c.head_dim,
                                           self.ctx.seed)
            return [s], [t]
        (ps, qs), (pt, qt) = self._graphs
        xs, xt = lpm.seed_labels(anchors, ps.shape[0], pt.shape[0], c.anchor_dim, self.ctx.seed)  # (N, d), (M, d)
        return lpm.propagate(ps, qs, xs, c.hops), lpm.propagate(pt, qt, xt, c.hops)

    def anchors_with_name_seeds(self, task, features, seeds: np.ndarray) -> np.ndarray:
        """``seeds (L, 2)`` followed by the equal-name pseudo-seeds ``(P, 2)`` when ``name_seeds`` is on and
        the names feature was computed (never with names off); records ``info["pseudo_seeds"]``.  The
        partitioned Ray mode (:mod:`mmea.engine.run`) labels its parts with the same anchors."""
        if not self.config.name_seeds:
            return seeds
        if features is None or "names" not in features:
            self.info["pseudo_seeds"] = {"kind": "none: names off", "count": 0}
            return seeds
        from ..seeds import name_pseudo_seeds

        t0 = time.perf_counter()
        pairs = name_pseudo_seeds(task, features["names"], seeds)  # (P, 2)
        self.info["pseudo_seeds"] = {"kind": "equal names, unique on both sides (train-link entities excluded)",
                                     "count": int(len(pairs)),
                                     "s": round(time.perf_counter() - t0, 3)}
        log.info("label propagation: %d name pseudo-seeds", len(pairs))
        return np.concatenate([seeds, pairs])

    def _name_blocks(self, features) -> tuple[np.ndarray, np.ndarray] | None:
        """``(N, d_n)``, ``(M, d_n)`` unit-row name vectors (zero rows: no name), or ``None`` without names."""
        names = features["names"] if features is not None and "names" in features else None
        if names is None:
            if self.config.name_weight != 0:
                self.info["names_note"] = "names were not computed (names off): structure only"
            return None
        self.info["name_encoder"] = {k: names.info.get(k) for k in ("encoder", "requested", "dim")}
        return (lpm.l2_rows(np.asarray(names.source, dtype=np.float32)),
                lpm.l2_rows(np.asarray(names.target, dtype=np.float32)))

    def _embed(self, blocks, weight: float, rows: tuple | None = None, name_weight: float | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Entity-view blocks (weight ``1 - w``), relation-view blocks (``w``) and, with names, the names
        block: ``[sqrt(1 - a) H, sqrt(a) N]``; rows L2-normalised.  ``rows``: ``(source rows, target rows)``
        to embed (default all); each side is written into one ``(n, dims)`` float32 array (no concatenation
        copy)."""
        a = self._name_weight if name_weight is None else name_weight
        a = a if self._names is not None else 0.0
        out = []
        for side, side_blocks in enumerate(blocks):
            idx = slice(None) if rows is None else rows[side]
            parts = [(np.sqrt(1.0 - weight if k % 2 == 0 else weight), b)
                     for k, b in enumerate(side_blocks) if (weight if k % 2 else 1.0 - weight) > 0]
            n = side_blocks[0][idx].shape[0]
            width = sum(b.shape[1] for _, b in parts)
            emb = np.empty((n, width + (self._names[side].shape[1] if a > 0 else 0)), np.float32)  # (n, dims)
            col = 0
            for scale, b in parts:
                np.multiply(b[idx], np.float32(scale), out=emb[:, col:col + b.shape[1]])
                col += b.shape[1]
            if rows is None:  # the embeddings' layout (search_channels)
                self._layout = {"structure": (0, width), "names": (width, emb.shape[1])} if a > 0 else {}
            if a > 0:  # the unit structure part weighs 1 - a, the unit names part a
                struct = emb[:, :width]
                struct *= np.float32(np.sqrt(1.0 - a)) / np.maximum(np.linalg.norm(struct, axis=1, keepdims=True),
                                                                    np.float32(1e-30))
                np.multiply(self._names[side][idx], np.float32(np.sqrt(a)), out=emb[:, width:])
            out.append(lpm.l2_rows(emb))
        return out[0], out[1]

    def _choice_rows(self, valid: np.ndarray, seeds: np.ndarray, n: int, m: int) -> dict | None:
        """What the weight choices rank: ``valid`` links (at most ``choice_links``, a seeded sample), the
        candidate targets (the non-seed targets; above ``choice_sample`` the valid targets plus a seeded
        sample of the others) and the radius sources (likewise).  ``None`` without valid links."""
        c = self.config
        if not len(valid):
            return None
        rng = np.random.default_rng(self.ctx.seed + 7919)
        if len(valid) > c.choice_links:
            valid = valid[np.sort(rng.choice(len(valid), c.choice_links, replace=False))]

        def pool(everyone: np.ndarray, must: np.ndarray) -> np.ndarray:
            if len(everyone) <= c.choice_sample:
                return everyone
            others = np.setdiff1d(everyone, must)
            extra = max(0, c.choice_sample - len(np.unique(must)))
            return np.union1d(must, rng.choice(others, min(extra, len(others)), replace=False))

        src_rows = pool(np.setdiff1d(np.arange(n), seeds[:, 0]), valid[:, 0])  # (n',) holds the valid sources
        cand = pool(np.setdiff1d(np.arange(m), seeds[:, 1]), valid[:, 1])  # (m',) holds the valid targets
        return {"valid": valid, "src_rows": src_rows, "cand": cand,
                "sampled": bool(len(src_rows) < n - len(seeds) or len(cand) < m - len(seeds))}

    def _valid_hits(self, blocks, weight: float, choice: dict, name_weight: float) -> float:
        """Hits@1 (CSLS) of the choice's valid links, ranked against its candidates (blockwise, exact)."""
        from ..search.csls import csls_radius, csls_topk

        c = self.config
        valid, src_rows, cand = choice["valid"], choice["src_rows"], choice["cand"]
        s, t = self._embed(blocks, weight, rows=(src_rows, cand), name_weight=name_weight)
        r_src, r_tgt = csls_radius(s, t, c.csls_k, index="torch", normalize=False)
        pos = np.searchsorted(src_rows, valid[:, 0])  # (V,) positions of the valid sources in src_rows
        res = csls_topk(s[pos], t, 1, csls_k=c.csls_k, index="torch", normalize=False,
                        rerank_k=c.csls_k, radius=(r_src[pos], r_tgt))
        return round(float(np.mean(cand[res.ids[:, 0]] == valid[:, 1])), 4)

    def _choose_relation_weight(self, blocks, choice: dict | None) -> float:
        """The weight of ``relation_weights`` with the best Hits@1 (CSLS) of the valid links.

        Candidates: every target outside the train links; the CSLS radii come from every source and
        target outside the train links (unlabelled entities, no gold link read), blockwise
        (:mod:`mmea.search`), never a dense valid x targets matrix beyond a block; a seeded sample
        of them above ``choice_sample`` (:meth:`_choice_rows`).  Ties go to the first weight listed.
        The names block is left out of this choice.
        """
        c = self.config
        if choice is None:
            self.info["relation_weight_choice"] = {"chosen_by": "default (no valid links)"}
            return float(c.relation_weights[0])
        scores = {float(w): self._valid_hits(blocks, float(w), choice, 0.0) for w in c.relation_weights}
        best = max(scores, key=lambda w: (scores[w], -list(scores).index(w)))
        self.info["relation_weight_choice"] = {"chosen_by": self._chosen_by(choice), "scores": scores}
        log.info("label propagation: relation weight %s (valid Hits@1 %s)", best, scores)
        return best

    def _choose_name_weight(self, blocks, weight: float, choice: dict | None) -> float:
        """``name_weight``, or (negative) the one of ``name_weights`` with the best valid Hits@1 at the
        chosen relation weight; 0 without names."""
        c = self.config
        if self._names is None:
            return 0.0
        if c.name_weight >= 0:
            return float(c.name_weight)
        if choice is None:
            self.info["name_weight_choice"] = {"chosen_by": "default (no valid links)"}
            return float(c.name_weights[0])
        scores = {float(a): self._valid_hits(blocks, weight, choice, float(a)) for a in c.name_weights}
        best = max(scores, key=lambda a: (scores[a], -list(scores).index(a)))
        self.info["name_weight_choice"] = {"chosen_by": self._chosen_by(choice), "scores": scores}
        log.info("label propagation: name weight %s (valid Hits@1 %s)", best, scores)
        return best

    @staticmethod
    def _chosen_by(choice: dict) -> str:
        what = f"Hits@1 (CSLS) on {len(choice['valid'])} valid links"
        if choice["sampled"]:
            what += (f" against {len(choice['cand'])} sampled candidates (radii over {len(choice['src_rows'])} "
                     "sampled sources)")
        return what

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

    def search_channels(self) -> dict[str, tuple[int, int]]:
        """With names: the structure and names blocks, each searched on its own by an approximate pass (on
        the 1M synthetic pair the union finds the gold target for 0.851 of the sources, the whole rows
        alone 0.694); without names ``{}``.  With the anchor overlap term the structure channel is left out:
        the overlap's exact top-50 replaces it (1M pair, 5,000 valid links, exact lists: the gold target is in
        whole rows + names + structure for 0.943, in whole rows + names + overlap for 0.960)."""
        layout = dict(getattr(self, "_layout", {}))
        if self.search_sparse() is not None:
            layout.pop("structure", None)
        return layout

    def search_sparse(self):
        """The anchor overlap term (``overlap_weight != 0``): :class:`~mmea.search.sparse.SparseBlock`; else None."""
        return getattr(self, "_overlap", None)
