"""SelfMEA: attention-fused multi-modal alignment with NCA loss, contrastive
structure embedding and iterative seed expansion (Liu et al., "Self-Supervised
Entity Alignment Based on Multi-Modal Contrastive Learning", IEEE/CAA JAS 2022).

Per-modality embeddings of every entity, each L2-normalised:

``names``       ``F_N = x + (x U_N) V_N``: the name encoder's output ``x`` (LaBSE, or
                character n-gram TF-IDF offline) plus a learned low-rank residual
                (``V_N = 0`` at start, so training starts from plain name similarity).
``structure``   the graph structure embedding, from one of two encoders (``structure``,
                :mod:`~mmea.models.selfmea_structure`): ``relational`` (the default when
                names are off or absent) pre-trains the relational graph encoder of
                ``relational-gnn`` (Dual-AMN / RREA relation-aware attention, no names) on
                the initial pool and takes its output ``G`` as the input,
                ``F_S = G + (G U_S) V_S``; ``neighbour-names`` (the paper's sec. III-B, the
                default with names) aggregates the name embeddings of the entity's 1..H-hop
                neighbours by a linear graph encoder (``P^h x`` with ``P = D^-1 A``, the SGC
                form of a GCN, Wu et al. 2019, precomputed once), each hop with a learned
                low-rank residual.  Either is trained with the relative similarity metric loss
                ``L_RSM`` of SelfKG against a queue of the other KG's embeddings
                (:func:`~mmea.models.selfmea_math.rsm_loss`), no label needed.
``images``      ``F_I = W_I RES(I) + b_I`` (eq. 2), masked for entities without an image.
``relations``   ``F_R = W_R R + b_R`` over the bag of relations (eq. 3).
``attributes``  ``F_A = W_A A + b_A`` over the bag of attributes (eq. 4).
``anchors``     (mmea extension, not in the paper) seed anchors propagated over 1..H
                hops, ``P^h S`` with ``S`` one-hot over the current training pool,
                randomly projected to ``anchor_dim``; recomputed whenever iterative
                learning adds seeds, so new seeds help their neighbours.

Fusion (eq. 5): ``F_J = concat_i a_i F_i`` with ``a = softmax(w)`` over the modalities
the entity has (:func:`~mmea.models.selfmea_math.fusion_weights`); similarity is the
cosine of ``F_J``; the run pipeline ranks with CSLS through :mod:`mmea.search`.

Loss (eq. 7): the NCA loss (eq. 6) on every modality over batches of the training
pool and on ``F_J`` over the initial seeds of each batch (the fusion weights ``w``
learn from gold seeds only: proposals were chosen because the current fused
similarity likes them, and pseudo-seeds because their names match, so fitting ``w``
to either would feed that bias back; with pseudo-seeds ``w`` stays uniform unless
``learn_weights = "yes"``; with the relational structure encoder, only from the
``structure_holdout`` share of the initial seeds that its pre-training never saw), plus
``rsm_weight * L_RSM`` on the structure embedding over random (unlabelled)
entities of both KGs.  The training steps run on ``train_threads`` torch threads.

Iterative learning (Algorithm 1): every ``expand_every`` epochs (``expand_rounds``
times), mutual nearest neighbours (CSLS) among entities outside the pool and the
selection links join the pool when their cosine exceeds ``expand_min_cos``
(default: the ``expand_quantile`` quantile of the selection links' cosines, so a
proposal must look like a held-out true pair; ``pseudo_expand_quantile`` when the
selection links are held-out pseudo-seeds, which are the easiest pairs by design).  Proposals never read ``task.test``;
where gold links are known their precision is computed afterwards for the log only.
The pool is the method's alignment: the final embedding appends a block in which
both entities of each proposed pair share a random vector (weight ``pool_weight``),
so proposed pairs rank first unless the fused similarity strongly disagrees.
The network of the epoch with the best selection Hits@1 is kept (the untrained
model, epoch 0, is a candidate too), with the final pool.

``structure_lp = a`` (0, off, by default; relational structure only): the structure modality holds the graph's
second signal too, ``F_S = normalize([sqrt(1 - a) F_G, sqrt(a) L])`` with ``L`` the relational label
propagation (LightEA's readout, :meth:`SelfMEAModel.set_structure_lp`) of the pool less the pairs held out for the
fusion weights, recomputed after each expansion; the final embedding uses that of the whole final pool.

``lp_weight`` (0, off, by default): the final embedding joined by the relational label propagation of the
final pool (LightEA's relational readout, :mod:`~mmea.models.lp_join_math`), ``[sqrt(1 - w) e, sqrt(w) l]``;
negative: ``w`` chosen on the selection links among 0 and ``lp_weights``.

``pretrain = "clep"`` (off by default) first pre-trains a small CLEP model on each KG's own
triples and names (:mod:`mmea.clep.alignment`) and propagates its graph embeddings instead
of the names in the structure modality.

Modes: with train links (``--seed-ratio 0.3``) the pool starts from them and
``task.valid`` selects the best epoch; ``name_seeds`` (off by default) appends the name
pseudo-seeds below that touch no train or valid entity (they train the modalities and the
relational structure encoder and share the pool block; the fusion weights still learn from
gold links only).  With none (``--seed-ratio 0``) the pool
starts from pseudo-seeds, mutual nearest neighbours of name (and image)
similarity with cosine above ``pseudo_threshold``; ``pseudo_valid`` of them are
held out for model selection, so no gold link is used for training or selection.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from ..config import Cosine, FiniteFloat, Fraction, NonNegFloat, NonNegInt, PositiveFloat, PositiveInt
from ..errors import MmeaInputError
from ..progress import epoch_postfix
from ..training import EpochOutput, Trainer, TimeBudget, TrainingModule, Validation
from ..encoders.tfidf import paired_tfidf
from ..modalities import FeatureRequest
from ..seeds import (expand_seeds, expansion_threshold, hold_out, propagate_anchors, pseudo_seeds, train_seeds,
                     unaligned_rows)
from .base import MODELS, AlignmentModel
from .selfmea_math import bag_gather, fuse, fused_similarity, fusion_weights, nca_loss, rsm_loss, with_propagation
from .selfmea_structure import check_structure, relational_structure_input, resolve_structure

log = logging.getLogger("mmea.models")

SELFMEA_MODALITIES = ("structure", "names", "images", "relations", "attributes", "anchors")
#: the modalities built from entity names (off when names are off: ``names_conflict``)
NAME_MODALITIES = ("names", "structure")
#: fusion weights of the relational structure modality tried on the selection links (besides the learned one)
STRUCTURE_WEIGHTS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
_FEATURE_OF = {"names": "names", "structure": "names", "images": "images", "relations": "relations",
               "attributes": "attributes"}


def parse_selfmea_modalities(spec: str) -> tuple[str, ...]:
    """``"structure,names"`` -> a tuple of SelfMEA modalities (``all`` for every one)."""
    out: list[str] = []
    for raw in spec.split(","):
        m = raw.strip().lower()
        if not m:
            continue
        if m == "all":
            return SELFMEA_MODALITIES
        m = {"name": "names", "image": "images", "relation": "relations", "attribute": "attributes",
             "anchor": "anchors", "graph": "structure"}.get(m, m)
        if m not in SELFMEA_MODALITIES:
            raise MmeaInputError(f"unknown SelfMEA modality {raw.strip()!r}; valid choices: "
                                 f"{', '.join(SELFMEA_MODALITIES)}, all")
        if m not in out:
            out.append(m)
    if not out:
        raise MmeaInputError(f"no modality given; valid choices: {', '.join(SELFMEA_MODALITIES)}")
    return tuple(out)


def _normalize_rows(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def _build_net():
    import torch
    from torch import nn

    class LowRankResidual(nn.Module):
        """``y = x + (x U) V`` with ``V = 0`` at start (identity)."""

        def __init__(self, dim: int, rank: int):
            super().__init__()
            self.u = nn.Parameter(torch.randn(dim, rank) / math.sqrt(dim))
            self.v = nn.Parameter(torch.zeros(rank, dim))

        def forward(self, x):  # (b, d) -> (b, d)
            return x + (x @ self.u) @ self.v

    class BagLinear(nn.Module):
        """``W X + b`` over a CSR bag of features (eqs. 3-4), via ``EmbeddingBag``."""

        def __init__(self, vocab: int, dim: int):
            super().__init__()
            self.bag = nn.EmbeddingBag(vocab, dim, mode="sum")
            nn.init.normal_(self.bag.weight, std=1.0)
            self.bias = nn.Parameter(torch.zeros(dim))

        def forward(self, csr, rows):  # rows (b,) -> (b, dim)
            idx, off, val = bag_gather(*csr, rows)
            return self.bag(idx, off, per_sample_weights=val) + self.bias

    class SelfMEANet(nn.Module):
        def __init__(self, modalities, dims: dict, cfg, relational: bool = False):
            super().__init__()
            self.modalities, self.relational = tuple(modalities), relational
            self.structure_lp = float(cfg.structure_lp) if relational else 0.0
            self.res, self.lin = nn.ModuleDict(), nn.ModuleDict()
            if "names" in modalities:
                self.res["names"] = LowRankResidual(dims["names"], cfg.residual_rank)
            if "structure" in modalities and relational:  # F_S = G + (G U_S) V_S over the pre-trained encoder
                self.res["structure"] = LowRankResidual(dims["structure"], cfg.residual_rank)
            elif "structure" in modalities:
                self.hops = nn.ModuleList([LowRankResidual(dims.get("structure", dims["names"]), cfg.residual_rank)
                                           for _ in range(cfg.hops)])
            for m in ("relations", "attributes"):
                if m in modalities:
                    self.lin[m] = BagLinear(dims[m], cfg.bag_dim)
            if "images" in modalities:
                self.lin["images"] = nn.Linear(dims["images"], cfg.image_dim)
            self.w = nn.Parameter(torch.zeros(len(modalities)))  # eq. 5 modality logits
            self.register_buffer("offset", torch.zeros(len(modalities)))  # chosen on the selection links, not learned

        def modality(self, m: str, side: dict, rows):
            """``(F_m (b, d) L2-normalised, mask (b,))`` of entities ``rows`` of one side."""
            F = torch.nn.functional.normalize
            if m == "names":
                out = F(self.res["names"](side["names"][rows]), dim=1)
            elif m == "structure" and self.relational:
                out = F(self.res["structure"](side["graph"][rows]), dim=1)
                if self.structure_lp > 0:  # [sqrt(1 - a) F_G, sqrt(a) L]: L fixed unit (or zero) rows
                    out = with_propagation(out, side["graph_lp"][rows], self.structure_lp)
            elif m == "structure":
                hs = [F(layer(side["hops"][h][rows]), dim=1) for h, layer in enumerate(self.hops)]
                out = torch.cat(hs, dim=1) / math.sqrt(len(hs))
            elif m == "anchors":
                out = torch.cat([a[rows] for a in side["anchors"]], dim=1) / math.sqrt(len(side["anchors"]))
            elif m in ("relations", "attributes"):
                out = F(self.lin[m](side[m], rows), dim=1)
            else:  # images
                out = F(self.lin["images"](side["images"][rows]), dim=1)
            return out, side["mask"][m][rows]

        def forward(self, side: dict, rows):
            """``(blocks, mask (b, K))`` of every modality for ``rows``."""
            blocks, masks = zip(*(self.modality(m, side, rows) for m in self.modalities))
            return [f * k.unsqueeze(1).to(f.dtype) for f, k in zip(blocks, masks)], torch.stack(masks, dim=1)

        def joint(self, side: dict, rows):
            blocks, mask = self(side, rows)
            return fuse(blocks, mask, self.w + self.offset)  # (b, D)

    return SelfMEANet


@MODELS.register
class SelfMEAModel(AlignmentModel):
    """SelfMEA (Liu et al. 2022): modality encoders + attention fusion + NCA + RSM + iterative seeds."""

    registry_name = "selfmea"
    uses_gold_for_training = True
    structure: str | None = None  # the structure encoder that ran (set by learn)

    @dataclass(frozen=True)
    class Config:
        modalities: str = "structure,names,images,relations,attributes,anchors"
        name_dim: PositiveInt = 768           # char n-gram projection size (a transformer gives its own size)
        hops: NonNegInt = 2                 # graph encoder depth (1..H-hop neighbours)
        residual_rank: PositiveInt = 64       # rank of the learned residual of names / structure hops
        bag_dim: PositiveInt = 128            # output size of W_R, W_A (eqs. 3-4)
        image_dim: PositiveInt = 128          # output size of W_I (eq. 2)
        anchor_dim: PositiveInt = 384         # random projection size of the propagated seed anchors
        epochs: NonNegInt = 16
        batch_size: PositiveInt = 512         # pool pairs per NCA batch
        lr: PositiveFloat = 1e-3
        weight_lr: NonNegFloat = 0.05       # learning rate of the fusion logits w
        learn_weights: str = "auto"   # yes | no | auto: learned from gold seeds, uniform with pseudo-seeds
        alpha: FiniteFloat = 5.0            # NCA (eq. 6)
        beta: FiniteFloat = 10.0
        tau: PositiveFloat = 0.08             # RSM temperature (SelfKG default)
        rsm_weight: NonNegFloat = 1.0
        rsm_batch: PositiveInt = 128
        queue_size: NonNegInt = 1024        # RSM negatives: past batches of the other KG
        eval_every: PositiveInt = 2
        expand_every: NonNegInt = 5         # epochs between seed expansions (0: never)
        expand_rounds: NonNegInt = 2
        expand_min_cos: Cosine = -1.0  # < 0: the expand_quantile quantile of the selection links' cosines
        expand_quantile: Fraction = 0.5
        pseudo_expand_quantile: Fraction = 0.05  # the same with held-out pseudo-seeds (the easiest pairs by design)
        pseudo_threshold: Cosine = 0.8  # self-supervised: initial pseudo-seeds above this name cosine
        pseudo_valid: Fraction = 0.1     # self-supervised: share of pseudo-seeds held out for selection
        name_seeds: bool = False         # seeded: name pseudo-seeds off the train / valid entities join the pool
        max_minutes: NonNegFloat = 0.0      # wall-clock budget of training (0: none)
        pool_weight: NonNegFloat = 1.0      # weight of the proposed pairs' identity block in the final embedding
        train_threads: NonNegInt = 1        # torch threads of the training steps (0: all)
        pretrain: str = "none"        # none | clep: CLEP pre-training of the structure input (docs/clep.md)
        pretrain_dim: PositiveInt = 64        # CLEP projected size (the structure input's size with pretrain = clep)
        pretrain_epochs: NonNegInt = 3
        pretrain_minutes: NonNegFloat = 2.0
        structure: str = "auto"       # auto | relational | neighbour-names (mmea/models/selfmea_structure.py)
        structure_dim: PositiveInt = 128      # relational structure encoder: width of each layer (Dual-AMN's)
        structure_layers: PositiveInt = 2     # relational structure encoder: attention layers per view
        structure_epochs: NonNegInt = 40      # relational structure encoder: most pre-training epochs
        structure_minutes: PositiveFloat = 2.5  # relational structure encoder: pre-training budget
        structure_holdout: Fraction = 0.3     # relational: share of the initial pairs kept from the encoder,
        #                                       the only ones the fusion weights learn from
        tune_structure_weight: bool = True    # relational: structure's fusion weight chosen on the selection links
        structure_refresh: bool = False       # relational: re-train the encoder on the pool after the 1st expansion
        structure_lp: Fraction = 0.0          # relational: share a of the pool's relational label propagation in
        #                                       the structure modality, [sqrt(1 - a) F_G, sqrt(a) L] (0: off)
        lp_weight: FiniteFloat = 0.0          # join the relational label propagation of the final pool (0: off;
        #                                       < 0: the weight chosen on the selection links among 0 and lp_weights)
        lp_weights: tuple = (0.1, 0.2, 0.3, 0.4, 0.5)
        lp_heads: PositiveInt = 512           # relation heads of that readout (mmea/models/lp_join_math.py)

        def __post_init__(self) -> None:
            from .lp_join_math import check_lp_weights

            check_structure(self.structure)
            check_lp_weights("selfmea", self.lp_weight, self.lp_weights)

    @classmethod
    def feature_requests(cls, config) -> dict[str, FeatureRequest]:
        """Names always (``name_dim``), and the features of the chosen modalities; images are optional
        (skipped with a note when the image encoder cannot run offline)."""
        mods = parse_selfmea_modalities(config.modalities)
        needed = sorted({_FEATURE_OF[m] for m in mods if m in _FEATURE_OF} | {"names"})
        req = {f: FeatureRequest({"dim": config.name_dim} if f == "names" else {}, optional=f == "images")
               for f in needed}
        req["adjacency"] = FeatureRequest({"normalization": "row", "self_loops": False})  # P = D^-1 A
        return req

    @classmethod
    def names_off_by_config(cls, config) -> bool:
        """``--modalities`` without ``names`` switches entity names off for the whole run (issue 16)."""
        return "names" not in parse_selfmea_modalities(config.modalities)

    @classmethod
    def names_conflict(cls, config) -> str | None:
        """With names off: why ``config`` cannot run (a modality built from names), or None.

        The ``names`` modality is names; the ``structure`` modality is name-derived only with
        ``structure = "neighbour-names"`` (it propagates the names of the neighbours, ``P^h x``) or with
        ``pretrain = "clep"`` (names are CLEP's text); ``auto`` runs the relational graph encoder when
        names are off.  Self-supervised pseudo-seeds need names too (refused in :meth:`learn`)."""
        mods = parse_selfmea_modalities(config.modalities)
        named_structure = "structure" in mods and (config.structure == "neighbour-names" or config.pretrain == "clep")
        bad = [m for m in mods if m == "names" or (m == "structure" and named_structure)]
        if not bad:
            return ("name_seeds builds its pseudo-seeds from entity names; drop --set model.name_seeds=true"
                    if config.name_seeds else None)
        why = (" (structure = the names of the neighbours" + (", pre-trained with CLEP on names"
                                                              if config.pretrain == "clep" else "") + ")"
               if "structure" in bad else "")
        return (f"its {' and '.join(bad)} modalit{'ies are' if len(bad) > 1 else 'y is'} built from entity names"
                + why + "; run it with --modalities structure,relations,attributes,anchors (the structure "
                "modality from the relational graph encoder: --set model.structure=relational or auto)")

    def learn(self, task, feats) -> None:
        """Features -> modality inputs -> seed pool -> the shared training loop -> final embeddings."""
        import torch

        c = self.config
        t_start = time.perf_counter()
        mods = list(parse_selfmea_modalities(c.modalities))
        rng = np.random.default_rng(self.ctx.seed)
        torch.manual_seed(self.ctx.seed)
        self._lp_graphs = None  # the relation graphs of structure_lp's propagation, built on first use
        self.structure_held = np.zeros(0, np.int64)  # pool rows kept from the structure input (relational)
        self._usable_features(feats, mods)
        self._resolve_structure(feats, mods)
        adj, xs, sides, dims = self._modality_inputs(task, feats, mods)
        pool, select = self._pool_and_selection(task, feats, xs, rng)
        # the initial pairs the fusion weights learn from: gold train links (all the pool but name pseudo-seeds)
        self.weight_pairs = np.arange(len(pool)) < self._n_gold
        if self.structure == "relational":
            self._relational_inputs(task, sides, dims, pool, select, rng, fused=len(mods) > 1)
        learn_weights = self._learn_weights()
        training = SelfMEATraining(self, task, mods, adj, sides, dims, pool, select, rng, learn_weights)
        trainer = Trainer(max_epochs=c.epochs, eval_every=c.eval_every, keep_later_ties=True,
                          budget=TimeBudget(60 * c.max_minutes, start=t_start), checkpoint=self.ctx.checkpoint,
                          monitor="select_hits@1", progress=self.ctx.progress, desc="selfmea", unit="epoch")
        result = trainer.fit(training)  # the network of the best epoch is back in training.net

        net, pool = training.net, training.pool
        self.pool = pool  # every pair trained on by the end: seeds (or pseudo-seeds) + proposals, in order
        self.proposals = pool[training.gold_pool:]  # the expansions' pairs
        aligned = pool[self._n_gold:]  # ... and the name pseudo-seeds, if any
        # the network of the best epoch; the pool of the last: every proposal passed the selection-calibrated
        # threshold, and selection links (never proposed) cannot show what the pool gained
        training.follow_pool(final=True)
        self._tune_structure_weight(net, sides, select, pool)  # with the final anchors
        net.eval()
        with torch.no_grad():
            self._src = self._embed_all(net, sides[0], task.source.num_entities)
            self._tgt = self._embed_all(net, sides[1], task.target.num_entities)
        if c.pool_weight > 0 and len(aligned):
            self._src, self._tgt = self._with_pool_block(aligned, c.pool_weight)
        if c.lp_weight != 0:
            self._src, self._tgt = self._join_label_propagation(task, pool, select)
        w = torch.softmax(net.w.detach() + net.offset, 0).numpy()  # the weights that fused the embedding
        self.info.update(result.as_dict())
        self.info.update({
            # the one shape of every model: modality -> entities (both KGs) that have it
            "modalities": {m: int(sides[0]["mask"][m].sum()) + int(sides[1]["mask"][m].sum()) for m in mods},
            "fusion_weights": {m: round(float(x), 4) for m, x in zip(mods, w)},
            "expansions": training.expansions,
            "best_select_hits@1": round(result.best_valid, 4) if result.best_valid is not None else None,
            "pool_final": int(len(pool)), "pool_added": int(len(pool) - training.gold_pool),
            "train_s": round(time.perf_counter() - t_start, 2), "dim": int(self._src.shape[1]),
        })

    # ------------------------------------------------------------------- inputs
    def _usable_features(self, feats, mods: list[str]) -> None:
        """Remove from ``mods`` the modalities without features in both KGs (images whose encoder
        cannot run offline with a note of their own)."""
        if "images" in feats.unavailable and "images" in mods:
            self.ctx.note(f"selfmea: images skipped, the image encoder cannot run offline "
                          f"({feats.unavailable['images']}); pass --set features.image_features=FILE or "
                          "features.image_weights=FILE to use them")
            mods.remove("images")
        self.info["features"] = feats.summary()
        if "names" in feats:  # names off (features.names = off, or --modalities without names): not computed
            names = feats["names"]
            self.info["name_encoder"] = {k: names.info.get(k)
                                         for k in ("encoder", "requested", "model", "fallback_reason")}
        self.info["names_used"] = "names" in feats
        dropped = []
        for m in list(mods):
            f = _FEATURE_OF.get(m)
            if f and f != "names" and (f not in feats or feats[f].dim == 0
                                       or not (feats[f].source_mask.any() and feats[f].target_mask.any())):
                mods.remove(m)
                dropped.append(m)
        if dropped:
            self.ctx.note(f"selfmea: no {', '.join(dropped)} features in this task; modalities used: {', '.join(mods)}")
        if not mods:
            raise MmeaInputError("selfmea: none of the requested modalities has features in this task")
        self.info["modalities"] = dict.fromkeys(mods, 0)  # counted once the inputs are built

    def _resolve_structure(self, feats, mods: list[str]) -> None:
        """Which structure encoder runs (:func:`~mmea.models.selfmea_structure.resolve_structure`), in ``info``."""
        c = self.config
        names = feats["names"] if "names" in feats else None
        usable = names is not None and names.dim > 0 and bool(names.source_mask.any() and names.target_mask.any())
        self.structure = resolve_structure(c.structure, usable) if "structure" in mods else None
        if self.structure == "neighbour-names" and names is None:  # names_conflict refuses this before any data
            raise MmeaInputError("selfmea: structure = neighbour-names propagates entity names, and names are off",
                                 hint="use --set model.structure=relational (or auto)")
        if self.structure == "relational" and c.pretrain != "none":
            raise MmeaInputError(f"selfmea: pretrain = {c.pretrain} pre-trains the neighbour-names structure input; "
                                 "it does not apply to structure = relational",
                                 hint="use --set model.structure=neighbour-names, or pretrain=none")
        if c.structure_lp > 0 and self.structure != "relational":
            if self.structure is None:
                self.ctx.note("selfmea: structure_lp joins the label propagation to the structure modality, which "
                              "this run does not have; it changes nothing here")
            else:
                raise MmeaInputError(f"selfmea: structure_lp = {c.structure_lp} joins the pool's label propagation "
                                     f"to the relational structure input; the structure encoder here is "
                                     f"{self.structure}", hint="use --set model.structure=relational, or "
                                     "structure_lp=0")
        self.info["structure_encoder"] = self.structure

    def _relational_inputs(self, task, sides, dims, pool: np.ndarray, select: np.ndarray, rng,
                           fused: bool = True) -> None:
        """The structure input from the relational graph encoder pre-trained on the initial ``pool`` but a
        held-out ``structure_holdout`` share, the only pairs the fusion weights learn from.

        The encoder's free entity embeddings fit its training pairs almost exactly (DBP15k zh_en: fusion
        weight 0.90 on structure after 16 epochs, selection Hits@1 0.85 -> 0.66), so weights fitted on
        those pairs would trust it far more than it deserves on unseen entities; on held-out pairs its
        similarity is what it will be on the test links."""
        import torch

        c = self.config
        n_gold = int(self.weight_pairs.sum())  # name pseudo-seeds (after the gold pairs) are never held out
        hold = rng.permutation(n_gold)[:int(round(c.structure_holdout * n_gold))] \
            if fused and self.learn_weights_mode() else np.zeros(0, np.int64)  # one modality: no weight to learn
        if len(hold) >= 2:
            self.weight_pairs[:] = False
            self.weight_pairs[hold] = True
        else:
            hold = np.zeros(0, np.int64)
        self.structure_held = hold  # pool rows kept from the structure input (encoder and label propagation)
        fit = self.structure_fit_pool(pool)
        src, tgt, info = relational_structure_input(task, fit, select, c, seed=self.ctx.seed,
                                                    device=self.ctx.device, progress=self.ctx.progress)
        info["held_out_for_fusion_weights"] = int(len(hold))
        for side, g in zip(sides, (src, tgt)):
            side["graph"] = torch.from_numpy(g)  # (n, D) fixed input of the structure modality
        dims["structure"] = src.shape[1]
        self.info["structure"] = info
        if c.structure_lp > 0:
            self.set_structure_lp(task, sides, fit)

    def structure_fit_pool(self, pool: np.ndarray) -> np.ndarray:
        """``pool`` less the initial pairs held out for the fusion weights: what the structure input may see."""
        return np.delete(pool, self.structure_held, axis=0)

    def set_structure_lp(self, task, sides, pairs: np.ndarray) -> None:
        """``structure_lp``: the relational label propagation of ``pairs (P, 2)`` (LightEA's relational readout,
        :func:`~mmea.models.label_propagation_math.relational_features`: ``LP_DEPTH`` hops over both KGs' entity and
        relation views, ``lp_heads`` heads; relation triples and pairs only, nothing trained, no name) as the fixed
        second part ``L`` of the structure modality, ``F_S = normalize([sqrt(1 - a) F_G, sqrt(a) L])``.

        Held in the modality rather than joined to the output (``lp_weight``), the graph's two signals, the
        learned encoder and the propagated anchors, are one modality: its fusion weight (learned on held-out gold
        pairs, then chosen on the selection links) weighs them against names, and the expansions see them."""
        import torch

        from .lp_join_math import LP_DEPTH, pool_propagation, relation_graphs

        t0 = time.perf_counter()
        if self._lp_graphs is None:
            self._lp_graphs = relation_graphs(task)
        c = self.config
        lp = pool_propagation(self._lp_graphs, pairs, heads=c.lp_heads, seed=self.ctx.seed)  # unit (or zero) rows
        for side, x in zip(sides, lp):
            side["graph_lp"] = torch.from_numpy(np.ascontiguousarray(x, np.float32))  # (n, heads * 16)
        rec = self.info.setdefault("structure_lp", {"weight": c.structure_lp, "heads": c.lp_heads,
                                                    "depth": LP_DEPTH, "anchors": [], "s": 0.0})
        rec["anchors"].append(int(len(pairs)))
        rec["s"] = round(rec["s"] + time.perf_counter() - t0, 2)
        log.info("selfmea: structure label propagation of %d pairs (%.1f s)", len(pairs), time.perf_counter() - t0)

    def _modality_inputs(self, task, feats, mods: list[str]):
        """``(adjacency per KG, L2-normalised names per KG, per-side input tensors and masks, input sizes)``."""
        import torch

        c = self.config
        adj = [feats["adjacency"].source, feats["adjacency"].target]  # (N, N), (M, M): P = D^-1 A
        if "names" in feats:
            names = feats["names"]
            xs = [_normalize_rows(names.source), _normalize_rows(names.target)]
            name_mask = [names.source_mask.astype(bool), names.target_mask.astype(bool)]
        else:  # names off: (n, 0) placeholders, read by no modality (names_conflict refused those)
            xs = [np.zeros((a.shape[0], 0), np.float32) for a in adj]
            name_mask = [np.zeros(a.shape[0], bool) for a in adj]
        sides: list[dict] = [{"mask": {}}, {"mask": {}}]
        dims = {"names": xs[0].shape[1]}
        struct_x = xs  # what the structure modality propagates: the names, or their CLEP graph embeddings
        if c.pretrain not in ("none", "clep"):
            raise MmeaInputError(f"selfmea: pretrain must be none or clep, got {c.pretrain!r}")
        if c.pretrain == "clep" and self.structure == "neighbour-names":
            from ..clep.alignment import clep_structure_features

            struct_x, self.info["pretrain"] = clep_structure_features(
                task, xs, dim=c.pretrain_dim, epochs=c.pretrain_epochs, max_minutes=c.pretrain_minutes,
                seed=self.ctx.seed)
            dims["structure"] = struct_x[0].shape[1]
        for k, side in enumerate(sides):
            side["names"] = torch.from_numpy(xs[k])
            side["mask"]["names"] = torch.from_numpy(name_mask[k])
            if "structure" in mods:
                side["mask"]["structure"] = torch.from_numpy(np.asarray(adj[k].getnnz(axis=1) > 0))
            if self.structure == "neighbour-names":
                hops, h = [], struct_x[k]
                for _ in range(c.hops):
                    h = np.asarray(adj[k] @ h, dtype=np.float32)  # (n, d): mean over neighbours
                    hops.append(torch.from_numpy(_normalize_rows(h.copy())))
                side["hops"] = hops
        for mname in ("relations", "attributes"):
            if mname in mods:
                bs, bt = paired_tfidf(feats[mname].source, feats[mname].target)
                dims[mname] = bs.shape[1]
                for side, b in zip(sides, (bs, bt)):
                    side[mname] = (torch.from_numpy(b.indptr.astype(np.int64)),
                                   torch.from_numpy(b.indices.astype(np.int64)), torch.from_numpy(b.data))
                    side["mask"][mname] = torch.from_numpy(np.diff(b.indptr) > 0)
        if "images" in mods:
            img = feats["images"]
            dims["images"] = img.dim
            for side, x, mk in ((sides[0], img.source, img.source_mask), (sides[1], img.target, img.target_mask)):
                side["images"] = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
                side["mask"]["images"] = torch.from_numpy(np.asarray(mk, dtype=bool))
        return adj, xs, sides, dims

    def _pool_and_selection(self, task, feats, xs, rng) -> tuple[np.ndarray, np.ndarray]:
        """``(pool, selection links)``: train / valid links, else held-out pseudo-seeds (``rng`` splits them)."""
        c = self.config
        if len(task.train):
            pool = train_seeds(task)
            select = np.asarray(task.valid, dtype=np.int64).reshape(-1, 2)
            self.info["mode"] = "seeded"
            self.info["seeds"] = {"kind": "train links", "count": int(len(pool)),
                                  "selection": f"{len(select)} valid links"}
            if c.name_seeds:
                pool = self._with_name_seeds(feats, xs, pool, select)
        else:
            if "names" not in feats:
                raise MmeaInputError("selfmea without train links builds its pseudo-seeds from entity names, and "
                                     "names are off in this run", hint="give --seed-ratio > 0, or turn names on")
            if c.name_seeds:
                self.ctx.note("selfmea: name_seeds adds name pseudo-seeds to the train links; without train links "
                              "the pool is name pseudo-seeds already, so it changes nothing here")
            pool = self._pseudo_seeds(feats, xs)
            select, pool = hold_out(pool, c.pseudo_valid, rng)
            self.info["mode"] = "self-supervised"
            self.info["seeds"] = {"kind": f"pseudo-seeds: mutual nearest names/images, cosine > {c.pseudo_threshold}",
                                  "count": int(len(pool) + len(select)),
                                  "selection": f"{len(select)} held-out pseudo-seeds (no gold link)"}
            self.info["seeds"]["precision_for_log"] = self._precision(task, np.concatenate([pool, select]))
        if c.learn_weights not in ("yes", "no", "auto"):
            raise MmeaInputError(f"selfmea: learn_weights must be yes, no or auto, got {c.learn_weights!r}")
        if len(pool) < 2:
            raise MmeaInputError("selfmea: fewer than 2 seed pairs to train on; give train links (--seed-ratio) or "
                                 "lower pseudo_threshold")
        log.info("selfmea: %s, %d pool pairs", self.info["mode"], len(pool))
        self._n_gold = int(self.info["seeds"].get("gold", len(pool)))  # the pool's prefix that is not a name pseudo-seed
        return pool, select

    def _with_name_seeds(self, feats, xs, pool: np.ndarray, select: np.ndarray) -> np.ndarray:
        """``name_seeds``: the train links ``pool (L, 2)`` followed by the name pseudo-seeds ``(P, 2)`` (mutual
        nearest names, cosine above ``pseudo_threshold``) that touch no train or valid entity, so the selection
        links stay unseen.  The pseudo-seeds train the modalities and the relational structure encoder; the fusion
        weights keep learning from gold links only (:meth:`learn`).  No test link is read."""
        if "names" not in feats:
            raise MmeaInputError("selfmea: name_seeds builds pseudo-seeds from entity names, and names are off "
                                 "in this run", hint="drop --set model.name_seeds=true, or turn names on")
        pseudo = self._pseudo_seeds(feats, xs)  # (P0, 2)
        known = np.concatenate([pool, select]).reshape(-1, 2)
        keep = ~(np.isin(pseudo[:, 0], known[:, 0]) | np.isin(pseudo[:, 1], known[:, 1]))
        pseudo = pseudo[keep]
        self.info["seeds"].update({
            "kind": f"train links + name pseudo-seeds (mutual nearest names, cosine > {self.config.pseudo_threshold})",
            "count": int(len(pool) + len(pseudo)), "gold": int(len(pool)), "name_pseudo_seeds": int(len(pseudo)),
            "name_pseudo_seeds_dropped": int((~keep).sum())})
        return np.concatenate([pool, pseudo]).astype(np.int64, copy=False)

    def learn_weights_mode(self) -> bool:
        """Whether the fusion weights learn: pseudo-seeds are name-similar pairs by construction, so fitting
        ``w`` to them would put all weight on names."""
        c = self.config
        return c.learn_weights == "yes" or (c.learn_weights == "auto" and self.info["mode"] == "seeded")

    def _learn_weights(self) -> bool:
        learn = self.learn_weights_mode()
        self.info["fusion_weights_learned"] = bool(learn)
        if learn and not self.weight_pairs.all():
            self.info["fusion_weights_learned"] = (f"from {int(self.weight_pairs.sum())} gold initial pairs"
                                                   + (" held out from the structure encoder"
                                                      if self.structure == "relational" else ""))
        return learn

    # ------------------------------------------------------------------- helpers
    def _join_label_propagation(self, task, pool: np.ndarray, select: np.ndarray):
        """``lp_weight``: the final embedding joined by the relational label propagation of the final ``pool``
        (:mod:`~mmea.models.lp_join_math`: relation triples and pool pairs only, nothing trained); a negative weight is
        chosen on the selection links among 0 (no join) and ``lp_weights`` by Hits@1, ties broken by MRR (with names
        the selection links are nearly saturated: 443 of 450 at every weight on DBP15k zh_en), never on a test link."""
        from .lp_join_math import join_as_configured

        c = self.config
        out, rec = join_as_configured((self._src, self._tgt), task, pool, select, lp_weight=c.lp_weight,
                                      lp_weights=c.lp_weights, heads=c.lp_heads, seed=self.ctx.seed,
                                      held_out_name="selection links")
        self.info["lp_fusion"] = rec
        log.info("selfmea: joined the relational label propagation of %d pool pairs at weight %s (%s)", len(pool),
                 rec["weight"], rec["chosen_by"])
        return out

    def _with_pool_block(self, proposals: np.ndarray, weight: float):
        """Append the alignment found by iterative learning: both entities of proposed pair ``j`` get
        row ``j`` of a shared random projection, scaled so that its cosine weighs ``weight`` against the
        fused embedding's ``1``; other entities get zeros there.  Algorithm 1's output alignment is the
        pool, so its pairs are ranked first unless the fused similarity strongly disagrees."""
        rng = np.random.default_rng(self.ctx.seed + 104729)
        d = self.config.anchor_dim
        R = _normalize_rows(rng.standard_normal((len(proposals), d)).astype(np.float32))  # (P, d)
        out = []
        for emb, col in ((self._src, 0), (self._tgt, 1)):
            block = np.zeros((len(emb), d), np.float32)
            block[proposals[:, col]] = np.sqrt(weight) * R
            out.append(_normalize_rows(np.concatenate([emb, block], axis=1)))
        return out[0], out[1]

    def _pseudo_seeds(self, feats, xs) -> np.ndarray:
        """Mutual nearest neighbours of name (and image) similarity with cosine above the threshold."""
        images = None
        if "images" in feats and feats["images"].dim > 0:
            img = feats["images"]
            # normalised in place, as SelfMEA always did: the image inputs share these arrays
            images = (_normalize_rows(img.source), _normalize_rows(img.target), img.source_mask, img.target_mask)
        return pseudo_seeds((xs[0], xs[1]), self.config.pseudo_threshold, images)

    @staticmethod
    def _precision(task, pairs: np.ndarray) -> float | None:
        """Share of ``pairs`` whose source has a gold link (any split) that names their target; log only."""
        gold = np.concatenate([task.train, task.valid, task.test]).reshape(-1, 2)
        if not len(gold) or not len(pairs):
            return None
        known = {}
        for s, t in gold:
            known.setdefault(int(s), set()).add(int(t))
        judged = [(int(s) in known, int(t) in known.get(int(s), ())) for s, t in pairs]
        n = sum(1 for k, _ in judged if k)
        return round(sum(1 for k, ok in judged if k and ok) / n, 4) if n else None

    def _rsm_step(self, net, sides, queues, rng, n, m_):
        """RSM on structure embeddings of random entities of both KGs against the other KG's queue."""
        import torch

        c = self.config
        out = 0.0
        fresh = []
        for k, size in enumerate((n, m_)):
            rows = torch.from_numpy(rng.choice(size, min(c.rsm_batch, size), replace=False))
            f, mask = net.modality("structure", sides[k], rows)
            f = f[mask]
            fresh.append(f)
            other = queues[1 - k]
            if other is not None and len(f):
                out = out + rsm_loss(f, other, c.tau)
        for k in (0, 1):
            q = fresh[k].detach()
            queues[k] = q if queues[k] is None else torch.cat([q, queues[k]])[:min(c.queue_size, (n, m_)[k])]
        return out

    def _tune_structure_weight(self, net, sides, select: np.ndarray, pool: np.ndarray) -> None:
        """Relational structure: the fusion weight of ``structure`` with the best selection Hits@1 among the
        learned one and :data:`STRUCTURE_WEIGHTS` (a logit offset, not learned; ties keep the learned weight).

        The NCA loss on ``F_J`` rewards a modality's absolute cosine on true pairs (``log(1 + beta S_ii)``),
        not how well it ranks, so it leaves the graph encoder's cosines (lower on true pairs, yet
        discriminative) a weight of about 0.03 (DBP15k zh_en), too small to move a ranking.  One scalar is
        chosen on the selection links, as the epoch is; expansions and the final ranking use it."""
        import torch

        if self.structure != "relational" or not self.config.tune_structure_weight or len(select) < 2:
            return
        i = net.modalities.index("structure")
        with torch.no_grad():
            p = torch.softmax(net.w.detach(), 0)
            base = math.log(float(p[i]) / max(1.0 - float(p[i]), 1e-12))
            best, best_delta = -1.0, 0.0
            for a in (None,) + STRUCTURE_WEIGHTS:
                delta = 0.0 if a is None else math.log(a / (1.0 - a)) - base
                net.offset.zero_()
                net.offset[i] = delta
                score = self._select_score(net, sides, select, pool)
                if score > best:
                    best, best_delta = score, delta
            net.offset.zero_()
            net.offset[i] = best_delta
        self.info["structure_weight_chosen"] = round(float(torch.softmax(net.w.detach() + net.offset, 0)[i]), 4)

    def _embed_all(self, net, side, n) -> np.ndarray:
        """``(n, D)`` L2-normalised joint embeddings of every entity of one side."""
        return _normalize_rows(self._embed_rows(net, side, np.arange(n)))

    def _select_score(self, net, sides, select: np.ndarray, pool: np.ndarray) -> float:
        """Hits@1 (cosine) of the selection links against every target not in the pool."""
        import torch

        from ..search.knn import knn

        if not len(select):
            return 0.0
        net.eval()
        with torch.no_grad():
            cand = np.setdiff1d(np.arange(sides[1]["names"].shape[0]), pool[:, 1])
            q = net.joint(sides[0], torch.from_numpy(select[:, 0])).numpy()
            base = self._embed_rows(net, sides[1], cand)
        _, ids = knn(q, base, 1)
        return float(np.mean(cand[ids[:, 0]] == select[:, 1]))

    def _embed_rows(self, net, side, rows: np.ndarray, chunk: int = 8192) -> np.ndarray:
        import torch

        return np.concatenate([net.joint(side, torch.from_numpy(rows[s:s + chunk])).numpy()
                               for s in range(0, len(rows), chunk)]) if len(rows) else np.zeros((0, 1), np.float32)

    def _expand(self, net, sides, pool: np.ndarray, select: np.ndarray, min_cos: float) -> np.ndarray:
        """Algorithm 1: mutual CSLS nearest pairs among entities outside the pool and the selection links
        (:func:`mmea.seeds.expand_seeds`); ``min_cos < 0``: the bar set by the selection links."""
        import torch

        free_s, free_t = unaligned_rows(sides[0]["names"].shape[0], sides[1]["names"].shape[0], pool, select)
        if not len(free_s) or not len(free_t):
            return np.zeros((0, 2), np.int64)
        net.eval()
        with torch.no_grad():
            es, et = self._embed_rows(net, sides[0], free_s), self._embed_rows(net, sides[1], free_t)
            if min_cos < 0:
                # held-out true pairs set the bar: reject proposals less similar than most of them
                cos = np.zeros(0, np.float32)
                if len(select):
                    qs = net.joint(sides[0], torch.from_numpy(select[:, 0])).numpy()
                    qt = net.joint(sides[1], torch.from_numpy(select[:, 1])).numpy()
                    cos = (_normalize_rows(qs) * _normalize_rows(qt)).sum(1)
                q = self.config.expand_quantile if self.info.get("mode") == "seeded" \
                    else self.config.pseudo_expand_quantile
                min_cos = expansion_threshold(cos, q)
        self._last_threshold = min_cos
        return expand_seeds(es, et, free_s, free_t, min_cos)

    def embeddings(self):
        return self._src, self._tgt


class SelfMEATraining(TrainingModule):
    """SelfMEA's epochs for :class:`~mmea.training.Trainer`: NCA + RSM batches over the pool, selection
    Hits@1 (the untrained model is a candidate, as epoch 0), seed expansion after validation.

    The loop state (for exact resumes): network, optimizer, batch generator, anchor projection
    generator, pool, RSM queues and expansions.
    """

    kind = "selfmea"
    record_initial = True

    def __init__(self, model: "SelfMEAModel", task, mods, adj, sides, dims, pool, select, rng, learn_weights: bool):
        import torch

        c = self.c = model.config
        self.model, self.task, self.mods, self.adj, self.sides = model, task, list(mods), adj, sides
        self.pool, self.select, self.rng, self.learn_weights = pool, select, rng, learn_weights
        self.n, self.m_ = task.source.num_entities, task.target.num_entities
        self.queues = [None, None]  # structure embeddings of past RSM batches of each side
        self.expansions: list[dict] = []
        self.rounds_done = 0
        self.gold_pool = len(pool)
        self.last_loss = None
        self.anchor_proj_rng = np.random.default_rng(model.ctx.seed + 7919)
        self.anchor_rng_before = self.anchor_proj_rng.bit_generator.state  # before the last draw: a resume redraws it
        self.set_anchors(pool)
        self.net = _build_net()(mods, dims, c, relational=model.structure == "relational")
        wid = id(self.net.w)
        self.opt = torch.optim.Adam([{"params": [p for p in self.net.parameters() if id(p) != wid], "lr": c.lr},
                                     {"params": [self.net.w], "lr": c.weight_lr}])

    def follow_pool(self, final: bool = False) -> None:
        """The pool-derived inputs after the pool changed: the anchors, and with ``structure_lp`` the structure's
        label propagation (of the pool less the fusion weights' held-out pairs; ``final``: of the whole pool)."""
        self.set_anchors(self.pool)
        if "graph_lp" in self.sides[0]:
            m = self.model
            m.set_structure_lp(self.task, self.sides, self.pool if final else m.structure_fit_pool(self.pool))

    def set_anchors(self, pool_pairs: np.ndarray) -> None:
        """The anchors modality of both sides for ``pool_pairs`` (a fresh random projection)."""
        import torch

        if "anchors" not in self.mods:
            return
        c = self.c
        self.anchor_rng_before = self.anchor_proj_rng.bit_generator.state
        R = (self.anchor_proj_rng.standard_normal((len(pool_pairs), c.anchor_dim)).astype(np.float32)
             / np.sqrt(c.anchor_dim))  # (L, d_a)
        for k, side in enumerate(self.sides):
            a = propagate_anchors(self.adj[k], pool_pairs[:, k], R, c.hops)
            side["anchors"] = [torch.from_numpy(x) for x in a]
            side["mask"]["anchors"] = torch.from_numpy(np.linalg.norm(a[-1], axis=1) > 0) | \
                torch.from_numpy(np.linalg.norm(a[0], axis=1) > 0)

    # -- the hooks -------------------------------------------------------------------
    def on_fresh_start(self, trainer) -> Validation:
        self.model._tune_structure_weight(self.net, self.sides, self.select, self.pool)
        score0 = self.model._select_score(self.net, self.sides, self.select, self.pool)
        log.info("selfmea: before training, selection Hits@1 %.4f", score0)
        return Validation(score0, extra={"pool": int(len(self.pool)), "select_hits@1": score0})

    def train_epoch(self, epoch: int, trainer) -> EpochOutput:
        """One pass over the pool in random batches: NCA per modality and on the fused embedding
        (initial seeds only), RSM on the structure embedding."""
        import torch

        c, net, pool, mods = self.c, self.net, self.pool, self.mods
        net.train()
        perm = self.rng.permutation(len(pool))
        losses = []
        # the training steps are many small ops: one thread avoids OpenMP barriers (10x slower on a busy
        # 2-core machine); the big searches (selection, expansion) run with every thread
        threads = torch.get_num_threads()
        torch.set_num_threads(c.train_threads or threads)
        for b0 in range(0, len(perm), c.batch_size):
            batch = pool[perm[b0:b0 + c.batch_size]]
            if len(batch) < 2:
                continue
            rs, rt = torch.from_numpy(batch[:, 0]), torch.from_numpy(batch[:, 1])
            bs, ms = net(self.sides[0], rs)
            bt, mt = net(self.sides[1], rt)
            loss = 0.0
            sims = [bs[i] @ bt[i].t() for i in range(len(mods))]  # K x (B, B) modality cosines
            for i, s_i in enumerate(sims):  # eq. 7: NCA on each modality ...
                both = ms[:, i] & mt[:, i]
                if int(both.sum()) >= 2:
                    loss = loss + nca_loss(s_i[both][:, both], c.alpha, c.beta)
            # ... and on the joint embedding F_J (eq. 5), its cosine composed from the modality cosines
            # the fusion weights learn from the initial seeds only: proposals were chosen *because* the
            # current fused similarity likes them, and fitting w to them feeds that bias back
            idx = perm[b0:b0 + c.batch_size]
            seed_rows = torch.from_numpy(self.model.weight_pairs[np.minimum(idx, self.gold_pool - 1)]
                                         & (idx < self.gold_pool))
            if self.learn_weights and int(seed_rows.sum()) >= 2:
                s_joint = fused_similarity([x[seed_rows][:, seed_rows] for x in sims],
                                           fusion_weights(net.w, ms[seed_rows]), fusion_weights(net.w, mt[seed_rows]))
                loss = loss + nca_loss(s_joint, c.alpha, c.beta)
            if "structure" in mods and c.rsm_weight > 0:
                loss = loss + c.rsm_weight * self.model._rsm_step(net, self.sides, self.queues, self.rng, self.n,
                                                                  self.m_)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            losses.append(loss.item())
        torch.set_num_threads(threads)
        loss = float(np.mean(losses)) if losses else None
        self.last_loss = loss if loss is not None else self.last_loss
        return EpochOutput(loss, {"pool": int(len(pool))})

    def validate(self, epoch: int, trainer) -> Validation:
        self.model._tune_structure_weight(self.net, self.sides, self.select, self.pool)
        score = self.model._select_score(self.net, self.sides, self.select, self.pool)
        log.info("selfmea: epoch %d, selection Hits@1 %.4f, pool %d", epoch, score, len(self.pool))
        return Validation(score, extra={"select_hits@1": score})

    def snapshot(self) -> dict:
        return {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def restore(self, state: dict) -> None:
        self.net.load_state_dict(state)

    def after_epoch(self, record, trainer) -> None:
        """Algorithm 1: every ``expand_every`` epochs (``expand_rounds`` times, not after the last epoch)
        the mutual nearest pairs above the threshold join the pool, and the anchors follow."""
        c, epoch = self.c, record.epoch
        if not (c.expand_every and epoch % c.expand_every == 0 and self.rounds_done < c.expand_rounds
                and epoch < c.epochs):
            return
        self.model._tune_structure_weight(self.net, self.sides, self.select, self.pool)
        new = self.model._expand(self.net, self.sides, self.pool, self.select, c.expand_min_cos)
        self.rounds_done += 1
        exp = {"epoch": epoch, "added": int(len(new)), "pool": int(len(self.pool) + len(new)),
               "min_cos": round(float(self.model._last_threshold), 4),
               "precision_for_log": self.model._precision(self.task, new)}
        self.expansions.append(exp)
        log.info("selfmea: expansion at epoch %d added %d pairs (precision vs gold, log only: %s)",
                 epoch, len(new), exp["precision_for_log"])
        if len(new):
            self.pool = np.concatenate([self.pool, new])
            self.follow_pool()
            if self.rounds_done == 1 and self.model.structure == "relational" and c.structure_refresh:
                self.refresh_structure()

    def refresh_structure(self) -> None:
        """Re-train the relational structure encoder on the grown pool (less the pairs held out for the fusion
        weights) and start the structure residual and the RSM queues afresh for the new input."""
        import torch

        m = self.model
        fit = m.structure_fit_pool(self.pool)
        src, tgt, info = relational_structure_input(self.task, fit, self.select, self.c, seed=m.ctx.seed + 1,
                                                    device=m.ctx.device, progress=m.ctx.progress)
        for side, g in zip(self.sides, (src, tgt)):
            side["graph"] = torch.from_numpy(g)  # (n, D)
        with torch.no_grad():
            self.net.res["structure"].v.zero_()  # F_S = G at first again
        self.queues = [None, None]
        m.info["structure_refresh"] = info

    def postfix(self, record, trainer) -> dict:
        return epoch_postfix(self.last_loss, trainer.last_valid, pool=int(len(self.pool)))

    def loop_state(self) -> dict:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "rng": self.rng.bit_generator.state,
                "anchor_rng": self.anchor_rng_before, "pool": self.pool, "queues": self.queues,
                "expansions": self.expansions, "rounds_done": self.rounds_done, "last_loss": self.last_loss,
                # the pre-trained relational structure input: a resume uses it, whatever its budget gives again
                "graph": [side["graph"] for side in self.sides] if "graph" in self.sides[0] else None}

    def load_loop_state(self, saved: dict) -> None:
        self.net.load_state_dict(saved["net"])
        self.opt.load_state_dict(saved["opt"])
        self.rng.bit_generator.state = saved["rng"]
        self.pool, self.queues = saved["pool"], list(saved["queues"])
        self.expansions, self.rounds_done = saved["expansions"], saved["rounds_done"]
        self.last_loss = saved["last_loss"]
        if saved.get("graph") is not None:
            for side, g in zip(self.sides, saved["graph"]):
                side["graph"] = g
        self.anchor_proj_rng.bit_generator.state = saved["anchor_rng"]
        self.follow_pool()  # the same anchor projection and propagation as before the interruption
