"""Training-free propagation baseline: names, neighbour names and seed anchors, summed cosines.

For each KG with row-normalised adjacency ``P = D^-1 A`` (mean over
neighbours, no self loop), name features ``X`` (character n-gram TF-IDF of
the entity texts, both KGs in one vocabulary, projected to a dense space) and
one-hot seed anchors ``S`` (``S[e, j] = 1`` when ``e`` is the entity of seed
link ``j`` on that side), the entity representation is the concatenation of
the L2-normalised blocks

    X,  P X,  P^2 X,  P S,  P^2 S          (each scaled by sqrt(weight))

so that the inner product of two entities is the weighted *sum of cosines*
of the blocks.  The anchor blocks' weight is chosen from ``anchor_weights`` by
Hits@1 on the validation links (held-out pseudo-seeds without train links),
unless ``anchor_weight`` is set; ranking then uses CSLS (Lample et al. 2018) through
:mod:`mmea.search`.  Neighbour-averaged names carry the structure of the
graph without any training (in the spirit of the simple propagation
baselines for entity alignment, e.g. Mao et al., "LightEA", 2022), and the
propagated anchors say "my neighbours are aligned with your neighbours".

Seeds are ``task.train`` only (never ``valid`` or ``test``).  With no train
link (``--seed-ratio 0``) and ``pseudo_seeds`` on, the anchors come from
*pseudo-seeds*: mutual nearest neighbours over all entities by name cosine
above ``pseudo_threshold`` — no gold link is used at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..config import Cosine, FiniteFloat, Fraction, NonNegFloat, NonNegInt, PositiveInt
from ..modalities import FeatureRequest
from ..seeds import hold_out, projected_anchor_hops, pseudo_seeds, train_seeds
from .base import MODELS, AlignmentModel

log = logging.getLogger("mmea.models")


def _normalize_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


@MODELS.register
class PropagationModel(AlignmentModel):
    """Training-free: names + neighbour-averaged names + propagated seed anchors (summed cosines)."""

    uses_gold_for_training = True

    @dataclass(frozen=True)
    class Config:
        name_dim: PositiveInt = 1024
        anchor_dim: PositiveInt = 1024
        hops: NonNegInt = 2
        name_weight: NonNegFloat = 1.0
        neighbor_weight: NonNegFloat = 1.0
        anchor_weight: FiniteFloat = -1.0   # < 0: chosen from anchor_weights by Hits@1 on the selection links
        anchor_weights: tuple = (0.25, 0.5, 1.0)
        pseudo_seeds: bool = True
        pseudo_threshold: Cosine = 0.8
        pseudo_valid: Fraction = 0.1     # self-supervised: share of pseudo-seeds held out to choose the weight

    @classmethod
    def feature_requests(cls, config) -> dict[str, FeatureRequest]:
        """Names, projected to ``name_dim`` (char n-gram), and each KG's ``P = D^-1 A`` (no self loop)."""
        return {"names": FeatureRequest({"dim": config.name_dim}),
                "adjacency": FeatureRequest({"normalization": "row", "self_loops": False})}

    def learn(self, task, feats) -> None:
        c = self.config
        names = feats["names"]
        self.info["name_encoder"] = {k: names.info.get(k) for k in ("encoder", "requested", "model")}
        xs = _normalize_rows(np.array(names.source, dtype=np.float32))  # (N, d)
        xt = _normalize_rows(np.array(names.target, dtype=np.float32))  # (M, d)
        seeds, select = self._seeds(task, xs, xt)

        ps, pt = feats["adjacency"].source, feats["adjacency"].target  # (N, N), (M, M): mean over neighbours
        blocks_s, blocks_t = [np.sqrt(c.name_weight) * xs], [np.sqrt(c.name_weight) * xt]
        n_fixed = 1 + c.hops
        hs, ht = xs, xt
        for _ in range(c.hops):
            hs, ht = ps @ hs, pt @ ht  # (N, d), (M, d)
            blocks_s.append(np.sqrt(c.neighbor_weight) * _normalize_rows(np.array(hs, dtype=np.float32)))
            blocks_t.append(np.sqrt(c.neighbor_weight) * _normalize_rows(np.array(ht, dtype=np.float32)))
        if len(seeds) and c.anchor_weight != 0:
            # the same projection seeds for both sides keep anchor j on the same axes
            first_seed = self.ctx.seed + 1000 + n_fixed
            blocks_s += projected_anchor_hops(ps, seeds[:, 0], c.hops, c.anchor_dim, first_seed)  # (N, d_a) each
            blocks_t += projected_anchor_hops(pt, seeds[:, 1], c.hops, c.anchor_dim, first_seed)  # (M, d_a) each
            weight = c.anchor_weight if c.anchor_weight >= 0 else \
                self._choose_anchor_weight(blocks_s, blocks_t, n_fixed, select, seeds)
            for k in range(n_fixed, len(blocks_s)):
                blocks_s[k], blocks_t[k] = np.sqrt(weight) * blocks_s[k], np.sqrt(weight) * blocks_t[k]
        self._src = np.concatenate(blocks_s, axis=1).astype(np.float32)
        self._tgt = np.concatenate(blocks_t, axis=1).astype(np.float32)
        self.info["blocks"] = len(blocks_s)

    def _seeds(self, task, xs: np.ndarray, xt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(anchor seeds, selection links)``: train and valid links, else pseudo-seeds from names
        (some held out to choose the anchor weight: no gold link is used)."""
        c = self.config
        seeds, select = train_seeds(task), np.asarray(task.valid).reshape(-1, 2)
        self.info["seeds"] = {"kind": "train links", "count": int(len(seeds))}
        if len(seeds) == 0 and c.pseudo_seeds:
            seeds = pseudo_seeds((xs, xt), c.pseudo_threshold)
            self.info["seeds"] = {"kind": f"pseudo-seeds: mutual nearest names, cosine > {c.pseudo_threshold}",
                                  "count": int(len(seeds))}
            log.info("propagation: %d pseudo-seeds from mutual nearest names", len(seeds))
            if c.anchor_weight < 0 and len(seeds) >= 20:
                select, seeds = hold_out(seeds, c.pseudo_valid, np.random.default_rng(self.ctx.seed))
        return seeds, select

    def _choose_anchor_weight(self, blocks_s, blocks_t, n_fixed, select, seeds) -> float:
        """The anchor weight of ``anchor_weights`` with the best Hits@1 (cosine) of the selection links.

        Selection links are ``task.valid`` (seeded) or held-out pseudo-seeds (self-supervised); the
        candidates are every target outside the anchors.  Ties go to the first (smallest) weight.
        """
        c = self.config
        if not len(select):
            self.info["anchor_weight"] = {"value": 1.0, "chosen_by": "default (no selection links)"}
            return 1.0
        cand = np.setdiff1d(np.arange(len(blocks_t[0])), seeds[:, 1])
        # per-block cosines of the selection sources with every candidate: (V, C) each
        fixed = sum(bs[select[:, 0]] @ bt[cand].T for bs, bt in zip(blocks_s[:n_fixed], blocks_t[:n_fixed]))
        anchors = sum(bs[select[:, 0]] @ bt[cand].T for bs, bt in zip(blocks_s[n_fixed:], blocks_t[n_fixed:]))
        scores = {}
        for w in c.anchor_weights:
            pred = cand[np.argmax(fixed + w * anchors, axis=1)]
            scores[float(w)] = round(float(np.mean(pred == select[:, 1])), 4)
        best = max(scores, key=lambda w: (scores[w], -w))
        self.info["anchor_weight"] = {"value": best, "chosen_by": f"Hits@1 on {len(select)} selection links",
                                      "scores": scores}
        log.info("propagation: anchor weight %s (selection Hits@1 %s)", best, scores)
        return best

    def embeddings(self):
        return self._src, self._tgt
