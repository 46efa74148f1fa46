"""Gaussian common space on strong encoders (``gaussian-strong``) and its point twin (``gaussian-strong-point``).

After Hama & Matsubara, "Common Space Learning with Gaussian Embedding for Multi-Modal Entity Alignment"
(eqs. 8-9), with the per-modality tables of :mod:`mmea.models.gaussian` replaced by encoders with a mean
head and a diagonal log-variance head (:mod:`mmea.models.gaussian_strong_nn`):

- relations (``gnn = true``; off by default, see docs/gaussian.md for the measurements): the relational GNN of
  Dual-AMN / RREA (:class:`~mmea.models.relational_gnn_nn.RelationalGnn` over the union graph of
  :func:`~mmea.models.relational_gnn_math.union_graph`);
- numbers (``numeric = true``; off by default): the RBF + CNN encoder of the paper-faithful model, averaged over
  an entity's numerical triples;
- images: a linear projection of the image features, where they exist (masked where missing);
- anchors (``anchors = true``, the default; ``anchor_source = relational-gnn`` puts the heads on a relational GNN
  pre-trained on the train links instead, with its bootstrapping rounds): the training-free label-propagation
  embedding of the train links
  (:class:`~mmea.models.label_propagation.LabelPropagationModel`, LightEA's seed anchors propagated over the
  entity and relation views; ``anchor_hops``, ``anchor_dim``, ``anchor_rounds``), a linear mean head over it.
  With 20% seeds the relational GNN alone learns little on FB15K-DB15K; the propagated anchors give the
  common space the strong mean the paper's TransE backbone lacked.  Entities no anchor reaches get the prior.

Names are never read (``names_used = false``).  An entity without a modality gets that modality's learned
wide prior ``N(mu0_m, var_min + v0_m)`` (``prior_var`` at the start), never a made-up vector.  The common-space
distribution ``N(mu_e, Sigma_e)`` is the precision-weighted product of the modality distributions, so
missing modalities leave a larger common-space variance.  Losses (one optimiser, Adam):

- ``L_csl = sum_{m the entity has} KL(e || e_m)`` (eq. 8), mean over entities, weight ``csl_weight``;
- ``L_ac = KL(e_1 || e_2)`` over the seed links of the batch (eq. 9), weight ``ac_weight``;
- Dual-AMN's normalised hard-sample loss (:func:`~mmea.models.relational_gnn_math.normalized_hard_loss`,
  ``hard_negatives`` mined over the other KG, row statistics over all of it) on the common-space means and,
  with the GNN, on its output.

Training runs in the shared :class:`~mmea.training.Trainer`: validation Hits@1 (CSLS over the common means) on
``task.valid`` for model selection, patience, a wall-clock budget (``max_minutes``), a progress bar.
``task.test`` is never read.  :meth:`embeddings` are the L2-normalised common means (CSLS stays the default
search); ``scores`` adds ranking rows by expected likelihood, Bhattacharyya or 2-Wasserstein between the
common-space Gaussians (:mod:`mmea.search.distributions`).  :meth:`uncertainty` is each entity's mean
common-space variance.

``lp_weight`` (0, off, by default) joins the final means by the relational label propagation of the final pairs
(the train links and the pairs the anchor source proposed; LightEA's relational readout,
:mod:`~mmea.models.lp_join_math`, nothing trained): ``[sqrt(1 - w) mu, sqrt(w) l]``, so the ranking cosine is
``(1 - w) cos_mu + w cos_l``; negative: ``w`` chosen on the valid links among 0 (no join) and ``lp_weights``.
The Gaussians themselves (the distribution scores, the variances) stay those of the common space.
``anchor_gnn_lp`` makes the anchor GNN's bootstrapping rounds propose from its output joined the same way (the
name-free issue's ``gnn-*-it-lp`` rows); the heads still sit on the network's own output.

The point twin (``point = true``) is the same network with every variance frozen (:class:`GaussianHead`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from ..config import FiniteFloat, Fraction, NonNegFloat, NonNegInt, PositiveFloat, PositiveInt
from ..errors import MmeaInputError
from ..progress import epoch_postfix
from ..seeds import train_seeds
from ..training import EpochOutput, TimeBudget, Trainer, TrainingModule, Validation
from .base import MODELS, AlignmentModel
from .gaussian import IMAGE_SOURCES, GaussianModel

log = logging.getLogger("mmea.models")

__all__ = ["ANCHOR_SOURCES", "GaussianStrongModel", "GaussianStrongPointModel", "GaussianStrongTraining"]

#: what builds the anchors modality's input (``anchor_source``)
ANCHOR_SOURCES = ("label-propagation", "relational-gnn")


@MODELS.register(name="gaussian-strong")
class GaussianStrongModel(AlignmentModel):
    """Per-modality Gaussian encoders (relational GNN, numbers, images), product-of-experts common space."""

    uses_gold_for_training = True

    @dataclass(frozen=True)
    class Config:
        """Parameters (``[model]`` / ``--set``).

        Attributes:
            dim: width of every Gaussian; gnn_dim, layers, dropout: the relational GNN's.
            point: freeze every variance (the point twin).
            var_min: variance floor; var_init: a modality head's initial variance; prior_var: the initial
                (excess) variance of a missing modality's prior.
            csl_weight, ac_weight: weights of ``L_csl`` and ``L_ac``; gamma, lamb, hard_negatives: the
                normalised hard loss.
            lr, batch_size, epochs, eval_every, patience, max_minutes, num_threads: training.
            scores: extra test rankings between the common-space Gaussians (comma-separated:
                ``expected-likelihood``, ``bhattacharyya``, ``wasserstein``; empty: none).
            image_source, pixel_size, exchange: as ``gaussian`` (``exchange`` only affects the presence masks).
            anchors: add the propagated-anchors modality; anchor_hops, anchor_dim: its propagation (input width
                ``2 * anchor_hops * anchor_dim``); anchor_rounds: label propagation's iterative rounds (mutual
                nearest pairs become anchors; > 0 makes the model iterative).
            gnn: the relational GNN's relations modality (off: the relations reach the model through the
                propagated anchors only; each step is then a few dense products instead of a full-graph pass).
            numeric: the numbers modality (RBF + CNN over every numerical triple, each step).
            numeric_dim: width of the numbers encoder's per-triple path (0: ``dim``); its Gaussian head maps it to
                ``dim``.  The path's activations and their gradients grow with triples x width: on FB15K-DB15K at
                width 768 the run went over 24 GiB and was killed; at 64 its peak RSS was 8.2 GiB (4.6 GiB without
                the numbers; docs/gaussian.md).
            anchor_source: what builds the anchors modality's input: ``label-propagation`` (the propagated seed
                anchors above) or ``relational-gnn`` (the output of a relational GNN pre-trained on the train
                links before the common space, in its own budget: ``anchor_gnn_dim`` wide, up to
                ``anchor_gnn_epochs`` epochs in ``anchor_gnn_first_minutes``, then ``anchor_gnn_iterations``
                bootstrapping rounds of ``anchor_gnn_iteration_epochs`` epochs, all in ``anchor_gnn_minutes``;
                the Gaussian heads then sit on the name-free issue's strongest encoder).
            anchor_init: ``orthogonal`` starts the anchors mean head with orthonormal weights and no bias, so the
                common space starts with the source's geometry (exactly with ``dim`` equal to the input width)
                instead of PyTorch's random linear map.
            anchor_pairs: the common space also trains on the pairs the anchor source proposed in its iterative
                rounds (mutual nearest pairs of unlabeled entities; never a test link), not only the train links.
            anchor_gnn_lp: the anchor GNN's rounds propose their mutual nearest pairs from its output joined by the
                relational label propagation of its pairs so far (``relational-gnn``'s ``lp_weight = -1`` with
                ``lp_proposals``; its weight chosen on the valid links); the anchors input stays the network's
                output.  Needs ``anchor_source = relational-gnn``.
            anchor_gnn_budget_counts_output: the anchor GNN's final output (its label-propagation join with
                ``anchor_gnn_lp``) fits inside ``anchor_gnn_minutes`` (``relational-gnn``'s
                ``budget_counts_output``) instead of running after it (30-40 s at 20-80% on FB15K-DB15K).
            lp_weight, lp_weights, lp_heads: the final join by the relational label propagation of the final
                pairs (module doc): 0 off; in (0, 1] that weight; negative: chosen on the valid links among 0 and
                ``lp_weights`` by Hits@1 (CSLS), ties broken by MRR.
        """

        dim: PositiveInt = 256
        gnn_dim: PositiveInt = 64
        layers: PositiveInt = 2
        dropout: Fraction = 0.3
        point: bool = False
        var_min: PositiveFloat = 0.01
        var_init: PositiveFloat = 0.05
        prior_var: PositiveFloat = 10.0
        csl_weight: NonNegFloat = 0.01
        ac_weight: NonNegFloat = 0.01
        gamma: NonNegFloat = 1.0
        lamb: PositiveFloat = 30.0
        hard_negatives: PositiveInt = 16
        lr: PositiveFloat = 0.001
        batch_size: PositiveInt = 1024
        epochs: PositiveInt = 40
        eval_every: PositiveInt = 1
        patience: NonNegInt = 10
        max_minutes: PositiveFloat = 5.0
        num_threads: NonNegInt = 2
        scores: str = ""
        image_source: str = "auto"
        pixel_size: PositiveInt = 16
        exchange: bool = False
        anchors: bool = True
        anchor_hops: PositiveInt = 3
        anchor_dim: PositiveInt = 512
        anchor_rounds: NonNegInt = 0
        gnn: bool = False  # relations through the relational GNN too
        numeric: bool = False  # the RBF + CNN numbers modality
        numeric_dim: NonNegInt = 0  # its per-triple width (0: dim)
        anchor_source: str = "label-propagation"
        anchor_gnn_dim: PositiveInt = 128
        anchor_gnn_epochs: PositiveInt = 60
        anchor_gnn_first_minutes: NonNegFloat = 6.0
        anchor_gnn_minutes: PositiveFloat = 9.0
        anchor_gnn_iterations: NonNegInt = 3
        anchor_gnn_iteration_epochs: PositiveInt = 3
        anchor_pairs: bool = False  # train the common space on the source's proposed pairs too
        anchor_init: str = "default"  # the anchors mean head's start: default (PyTorch's) or orthogonal
        anchor_gnn_lp: bool = False  # the anchor GNN's rounds propose from it joined by label propagation
        anchor_gnn_budget_counts_output: bool = False  # the anchor GNN's final join inside anchor_gnn_minutes
        lp_weight: FiniteFloat = 0.0  # the final means joined by label propagation (0 off, < 0 chosen on valid)
        lp_weights: tuple = (0.25, 0.5)
        lp_heads: PositiveInt = 512

        def __post_init__(self) -> None:
            from ..search.distributions_math import SCORES

            if not (self.gnn or self.anchors):
                raise MmeaInputError("gaussian-strong: gnn and anchors are both off, so no modality sees the "
                                     "relations", hint="keep model.gnn=true or model.anchors=true")
            if self.anchor_source not in ANCHOR_SOURCES:
                raise MmeaInputError(f"gaussian-strong: anchor_source must be one of {', '.join(ANCHOR_SOURCES)}, "
                                     f"got {self.anchor_source!r}")
            if self.anchor_init not in ("default", "orthogonal"):
                raise MmeaInputError(f"gaussian-strong: anchor_init must be default or orthogonal, "
                                     f"got {self.anchor_init!r}")
            if self.anchor_gnn_lp and self.anchor_source != "relational-gnn":
                raise MmeaInputError("gaussian-strong: anchor_gnn_lp needs anchor_source = relational-gnn, "
                                     f"got {self.anchor_source!r}")
            from .lp_join_math import check_lp_weights

            check_lp_weights("gaussian-strong", self.lp_weight, self.lp_weights)
            if self.image_source not in IMAGE_SOURCES:
                raise MmeaInputError(f"gaussian-strong: image_source must be one of {', '.join(IMAGE_SOURCES)}, "
                                     f"got {self.image_source!r}")
            for s in self.score_list:
                if s not in SCORES[1:]:
                    raise MmeaInputError(f"gaussian-strong: unknown score {s!r} in scores; "
                                         f"expected {', '.join(SCORES[1:])}")

        @property
        def score_list(self) -> list[str]:
            return [s.strip() for s in self.scores.split(",") if s.strip()]

    feature_requests = classmethod(GaussianModel.feature_requests.__func__)
    _image_features = GaussianModel._image_features
    prepare = GaussianModel.prepare  # GaussianData: masks, images, numerical triples; never task.test

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self.net = None
        self._out = None
        self._joined = None  # lp_weight: the means joined by label propagation (source rows, target rows)
        self._gnn_propagation = None  # the pre-trained GNN's final label propagation, until the join uses it

    # -- setup ---------------------------------------------------------------
    def learn(self, task, feats) -> None:
        import torch

        threads = torch.get_num_threads()
        try:
            if self.config.num_threads > 0:
                torch.set_num_threads(self.config.num_threads)
            self._train(task, feats)
        finally:
            torch.set_num_threads(threads)

    def setup(self, task, feats) -> None:
        """Data, union graph, network, optimiser and the tensors every step reads."""
        import torch

        from . import relational_gnn_math as gm
        from .gaussian_strong_nn import GaussianStrongNet

        c, src, tgt = self.config, task.source, task.target
        torch.manual_seed(self.ctx.seed)
        self._rng = np.random.default_rng(self.ctx.seed)
        data = self.data = self.prepare(task, feats)
        self.n_src, self.n_tgt = src.num_entities, tgt.num_entities
        graph = self.graph = gm.union_graph(src.triples, tgt.triples, self.n_src, self.n_tgt, src.num_relations,
                                            tgt.num_relations)
        has_rel = np.zeros(data.num_entities, dtype=bool)
        has_rel[np.concatenate([src.triples[:, [0, 2]].reshape(-1),
                                tgt.triples[:, [0, 2]].reshape(-1) + self.n_src]).astype(np.int64)] = True
        self.device = torch.device(self.ctx.device)
        anchors = self._anchor_features(task)  # (N + M, D_a) or None
        self.net = GaussianStrongNet(graph, dim=c.dim, gnn_dim=c.gnn_dim, layers=c.layers, dropout=c.dropout,
                                     image_dim=0 if data.images is None else int(data.images.shape[1]),
                                     num_attributes=data.num_attributes if c.numeric else 0, rbf_centres=32,
                                     point=c.point, var_init=c.var_init, prior_var=c.prior_var,
                                     anchor_dim=0 if anchors is None else int(anchors.shape[1]), gnn=c.gnn,
                                     anchor_init=c.anchor_init, numeric_dim=c.numeric_dim,
                                     device=str(self.device))
        self.optimizer = torch.optim.Adam([p for p in self.net.parameters() if p.requires_grad], lr=c.lr)
        d = self.device
        masks = {"relations": has_rel, "images": data.has_image, "numeric": data.has_numeric}
        if anchors is not None:
            masks["anchors"] = np.linalg.norm(anchors, axis=1) > 0  # reached by some anchor
        self.inputs = {"masks": {k: torch.as_tensor(v, device=d) for k, v in masks.items()},
                       "anchors": None if anchors is None else torch.as_tensor(anchors, device=d),
                       "images": None if data.images is None else torch.as_tensor(data.images, device=d),
                       "numeric": (torch.as_tensor(data.num_entity, device=d),
                                   torch.as_tensor(data.num_attribute, device=d),
                                   torch.as_tensor(data.num_value, device=d))}
        self.valid = np.asarray(task.valid, dtype=np.int64).reshape(-1, 2)

    def _anchor_features(self, task) -> np.ndarray | None:
        """``(N + M, D_a)`` unit rows (zero where no anchor reaches) of the anchors modality, or None with ``anchors``
        off; ``self._proposed`` the ``(p, 2)`` pairs the source proposed beyond ``task.train`` (its iterative rounds).

        ``anchor_source = label-propagation``: the label-propagation embedding of ``task.train`` (``task.valid``
        chooses its relation-view weight; ``D_a = 2 * anchor_hops * anchor_dim``).  ``relational-gnn``: the
        eval-mode output of a relational GNN pre-trained on ``task.train`` (``task.valid`` chooses its epochs;
        ``anchor_gnn_iterations`` bootstrapping rounds; ``D_a = 6 * anchor_gnn_dim``), in its own torch generator
        state (:func:`~mmea.models.relational_gnn.pretrain_relational_gnn`).  Neither reads ``task.test``.
        """
        c = self.config
        self._proposed = np.zeros((0, 2), np.int64)
        if not c.anchors:
            return None
        if c.anchor_source == "relational-gnn":
            return self._gnn_anchor_features(task)
        from .label_propagation import LabelPropagationModel

        lp = LabelPropagationModel(LabelPropagationModel.Config(hops=c.anchor_hops, anchor_dim=c.anchor_dim,
                                                                rounds=c.anchor_rounds), self.ctx)
        lp.learn(task)
        s, t = lp.embeddings()
        self._proposed = lp.anchors[len(train_seeds(task)):]
        self.info["anchors"] = {"source": c.anchor_source,
                                **{k: lp.info[k] for k in ("hops", "anchor_dim", "relation_weight", "rounds",
                                                           "seeds_added_per_round", "anchors_final", "fit_s")}}
        return np.concatenate([s, t]).astype(np.float32, copy=False)

    def _gnn_anchor_features(self, task) -> np.ndarray:
        """The ``relational-gnn`` branch of :meth:`_anchor_features` (cached in the run's feature cache, so the
        point twin of a run reads the same encoder output)."""
        from .relational_gnn import RelationalGnnModel, cached_relational_gnn

        c = self.config
        gcfg = RelationalGnnModel.Config(dim=c.anchor_gnn_dim, epochs=c.anchor_gnn_epochs,
                                         first_minutes=c.anchor_gnn_first_minutes, max_minutes=c.anchor_gnn_minutes,
                                         iterations=c.anchor_gnn_iterations,
                                         iteration_epochs=c.anchor_gnn_iteration_epochs, num_threads=c.num_threads,
                                         lp_weight=-1.0 if c.anchor_gnn_lp else 0.0, lp_proposals=c.anchor_gnn_lp,
                                         budget_counts_output=c.anchor_gnn_budget_counts_output)
        seeds = train_seeds(task)
        s, t, pairs, info = cached_relational_gnn(task, seeds, task.valid, gcfg, seed=self.ctx.seed,
                                                  device=self.ctx.device, cache_root=self.ctx.cache_root,
                                                  progress=self.ctx.progress, label="gaussian-strong anchors",
                                                  hand_over=self._take_propagation if c.lp_weight != 0 else None)
        self._proposed = pairs[len(seeds):]
        self.info["anchors"] = {"source": c.anchor_source, "dim": c.anchor_gnn_dim, "out_dim": int(s.shape[1]),
                                **info}
        return np.concatenate([s, t]).astype(np.float32, copy=False)

    def _train(self, task, feats) -> None:
        c = self.config
        t0 = time.perf_counter()
        seeds = train_seeds(task)  # (L, 2) local ids
        if not len(seeds):
            raise MmeaInputError("gaussian-strong needs seed links (task.train is empty)",
                                 hint="give --seed-ratio > 0")
        budget = TimeBudget(c.max_minutes * 60.0)  # label propagation's fit counts in it
        self.setup(task, feats)
        if c.anchor_source == "relational-gnn":
            budget = TimeBudget(c.max_minutes * 60.0)  # the pre-trained GNN had its own (anchor_gnn_minutes)
        pairs = seeds
        if c.anchor_pairs and len(self._proposed):
            pairs = np.concatenate([seeds, self._proposed])  # (L + p, 2): unlabeled pairs the source proposed
        trainer = Trainer(max_epochs=c.epochs, eval_every=c.eval_every, patience=c.patience, budget=budget,
                          checkpoint=self.ctx.checkpoint, monitor="valid_hits@1", progress=self.ctx.progress,
                          desc=self.registry_name)
        res = trainer.fit(GaussianStrongTraining(self, pairs))
        self._out = self.forward_eval()
        if c.lp_weight != 0:
            self._joined = self._join_label_propagation(task, np.concatenate([seeds, self._proposed]))
        self._record(res, seeds, time.perf_counter() - t0)

    def _take_propagation(self, prop) -> None:
        """Keep the pre-trained GNN's final label propagation until :meth:`_join_label_propagation` (it joins the
        same final pairs: the train links, then the GNN's proposals)."""
        self._gnn_propagation = prop

    def _join_label_propagation(self, task, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``lp_weight``: the unit common means joined by the relational label propagation of the final ``pairs
        (P, 2)`` (the train links, then the anchor source's proposals; :mod:`~mmea.models.lp_join_math`); a
        negative weight is chosen on the valid links among 0 (no join) and ``lp_weights``, never on a test link."""
        from .lp_join_math import join_as_configured

        c = self.config
        given, self._gnn_propagation = self._gnn_propagation, None  # used once, then freed
        out, rec = join_as_configured(self._normed(self._out[0]), task, pairs, self.valid, lp_weight=c.lp_weight,
                                      lp_weights=c.lp_weights, heads=c.lp_heads, seed=self.ctx.seed,
                                      held_out_name="valid links", given=given)
        self.info["lp_fusion"] = rec
        log.info("gaussian-strong: joined the relational label propagation of %d pairs at weight %s (%s)",
                 len(pairs), rec["weight"], rec["chosen_by"])
        return out

    def _record(self, res, seeds, train_s: float) -> None:
        c, data = self.config, self.data
        var = self.uncertainty_all()
        cover = self._coverage()
        self.info.update(res.as_dict())
        self.info.update({
            "names_used": False, "point": c.point, "dim": c.dim, "iterative": self._iterative(),
            "inputs": ["relation triples", "numerical attribute triples", "image features (where present)",
                       "train links", "valid links (model selection)"]
            + ([f"anchors: {c.anchor_source} over the train links"] if c.anchors else [])
            + (["pairs the anchor source proposed (unlabeled entities)"] if c.anchor_pairs else [])
            + (["label propagation of the train links and the proposed pairs (the final join)"]
               if c.lp_weight != 0 else []),
            "seeds": {"kind": "train links", "count": int(len(seeds))},
            "pairs_trained": {"train links": int(len(seeds)),
                              "proposed by the anchor source": int(len(self._proposed)) if c.anchor_pairs else 0},
            "modalities": {k: int(v.sum()) for k, v in cover.items()},  # entities each modality the net has covers
            "image_features": data.image_info,
            "variances": variance_by_group(var, cover, self.graph, data.num_entities),
            "train_s": round(train_s, 2)})

    def _iterative(self) -> bool:
        """Whether the anchor source ran bootstrapping rounds (the model is then iterative)."""
        c = self.config
        rounds = c.anchor_gnn_iterations if c.anchor_source == "relational-gnn" else c.anchor_rounds
        return bool(c.anchors and rounds > 0)

    # -- forward / loss ----------------------------------------------------------
    def forward(self):
        return self.net(self.inputs)

    def variance(self, lv):
        """``var_min + exp(log v)``."""
        return self.config.var_min + lv.exp()

    def loss(self, out, b):
        """The training loss of one batch ``b (B, 2)`` local seed pairs (a torch tensor)."""
        import torch

        from .gaussian_math import kl_diagonal

        c, n1 = self.config, self.n_src
        g, modal, (mu_e, lv_e) = out
        var_e = self.variance(lv_e)
        loss = self._hard_loss(mu_e, b) + (self._hard_loss(g, b) if g is not None else 0.0)
        csl = mu_e.new_zeros(())
        for name, (mu_m, lv_m) in modal.items():
            mask = self.inputs["masks"][name].to(mu_e.dtype)  # (n,)
            kl = kl_diagonal(mu_e, var_e, mu_m, self.variance(lv_m))  # (n,)
            csl = csl + (kl * mask).sum() / mask.sum().clamp_min(1.0)
        ia, ib = b[:, 0], b[:, 1] + n1
        ac = kl_diagonal(mu_e[ia], var_e[ia], mu_e[ib], var_e[ib]).mean()
        return loss + c.csl_weight * csl + c.ac_weight * ac, {"csl": float(csl.detach()), "ac": float(ac.detach())}

    def _hard_loss(self, emb, b):
        """Dual-AMN's normalised hard loss of ``emb (n, D)`` over the pairs ``b``, both directions."""
        import torch

        from . import relational_gnn_math as gm

        c, n1 = self.config, self.n_src
        ea, eb = emb[b[:, 0]], emb[b[:, 1] + n1]  # (B, D)
        pos = ((ea - eb) ** 2).sum(-1)  # (B,)
        total = emb.new_zeros(())
        for anchor, cands, partner in ((ea, emb[n1:], b[:, 1]), (eb, emb[:n1], b[:, 0])):
            ids, stats = gm.mined_negatives(anchor.detach(), cands.detach(), partner, pos, c.hard_negatives,
                                            gamma=c.gamma)
            hard = cands[ids]  # (B, k, D)
            neg = ((anchor[:, None, :] - hard) ** 2).sum(-1)  # (B, k)
            total = total + gm.normalized_hard_loss(pos, neg, gamma=c.gamma, lamb=c.lamb, stats=stats)
        return total

    def step(self, batch: np.ndarray) -> tuple[float, dict]:
        import torch

        out = self.forward()
        loss, parts = self.loss(out, torch.as_tensor(batch, device=self.device))
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach()), parts

    # -- outputs -----------------------------------------------------------------
    def forward_eval(self) -> tuple[np.ndarray, np.ndarray]:
        """Eval-mode ``(mu_e (n, d), var_e (n, d))`` numpy."""
        import torch

        self.net.eval()
        with torch.no_grad():
            _, _, (mu, lv) = self.forward()
            var = self.variance(lv)
        self.net.train()
        return mu.float().cpu().numpy(), var.float().cpu().numpy()

    def _normed(self, mu):
        mu = mu.copy()
        norms = np.linalg.norm(mu, axis=1, keepdims=True)
        np.divide(mu, norms, out=mu, where=norms > 0)
        return mu[:self.n_src], mu[self.n_src:]

    def evaluate_valid(self) -> dict:
        from ..evaluation import evaluate_embeddings

        s, t = self._normed(self.forward_eval()[0])
        return evaluate_embeddings(s, t, self.valid, candidates="test", csls_k=10)["test"]

    def embeddings(self):
        if self._out is None:
            raise MmeaInputError("the gaussian-strong model has not been fitted")
        return self._joined if self._joined is not None else self._normed(self._out[0])

    def gaussians(self):
        """``((mu_s, var_s), (mu_t, var_t))`` of the common space, numpy."""
        mu, var = self._out
        return (mu[:self.n_src], var[:self.n_src]), (mu[self.n_src:], var[self.n_src:])

    def uncertainty_all(self) -> np.ndarray:
        """``(n,)`` mean common-space variance of every entity (source rows, then target rows)."""
        return self._out[1].mean(1)

    def uncertainty(self) -> tuple[np.ndarray, np.ndarray]:
        """``(source (N,), target (M,))`` mean common-space variances (the confidence signal)."""
        u = self.uncertainty_all()
        return u[:self.n_src], u[self.n_src:]

    def _coverage(self) -> dict[str, np.ndarray]:
        """{modality the network has: bool (n,) presence}, in the network's order."""
        m = self.inputs["masks"]
        return {k: m[k].cpu().numpy() for k in self.net.heads}

    def link_confidence(self, links, csls_k: int = 10, top=None) -> dict:
        """Per link: CSLS top-1 ``correct``, ``margin`` (top-1 minus top-2 CSLS) and ``uncertainty`` (mean
        common-space variance of the source plus that of its top-1 target); candidates are the links' targets.
        ``top``: ``(ids (L, 2) positions into the links' unique targets, csls (L, 2))`` when the run's search
        pass already ranked these links' sources against them (:func:`mmea.pipelines.align.pass_top2`); else
        one CSLS search here."""
        from ..search.csls import csls_topk

        links = np.asarray(links, dtype=np.int64).reshape(-1, 2)
        cand = np.unique(links[:, 1])
        if top is None:
            s, t = self.embeddings()
            res = csls_topk(s[links[:, 0]], t[cand], topk=min(2, len(cand)), csls_k=csls_k, normalize=False,
                            index="torch")
            top = (res.ids, res.csls)
        ids, csls = top  # (L, <= 2)
        top = cand[ids[:, 0]]  # (L,) predicted target rows
        margin = csls[:, 0] - csls[:, 1] if csls.shape[1] > 1 else np.zeros(len(links))
        u_s, u_t = self.uncertainty()
        return {"correct": top == links[:, 1], "margin": margin, "uncertainty": u_s[links[:, 0]] + u_t[top]}

    def rerank_metrics(self, links, *, candidates: str = "test", csls_k: int = 10, search_top=None) -> dict:
        """``{"src->tgt/<score>": metrics}`` for each score of ``scores`` (:mod:`mmea.search.distributions`).

        Also (called after :meth:`fit`, with the test links) ``model_info["uncertainty"]``: AUROC of the
        variance-based uncertainty and of the margin for a wrong top-1, and precision at 90% coverage with and
        without the variance (:func:`mmea.calibration.variance_confidence_report`, combination fitted on the
        valid links only).  ``search_top``: the search pass's top 2 of the links' sources
        (:func:`mmea.pipelines.align.pass_top2`), which the test links' margins then read instead of a search here.
        """
        from ..calibration import variance_confidence_report
        from ..evaluation import ranking_metrics
        from ..search.distributions import distribution_ranks

        if len(self.valid) >= 2 and len(links) >= 2:
            self.info["uncertainty"] = variance_confidence_report(self.link_confidence(self.valid, csls_k),
                                                                  self.link_confidence(links, csls_k, search_top))
        out = {}
        (ms, vs), (mt, vt) = self.gaussians()
        for s in self.config.score_list:
            ranks = distribution_ranks(s, ms, vs, mt, vt, np.asarray(links), candidates=candidates)
            out[f"src->tgt/{s}"] = {**ranking_metrics(ranks), "n": int(len(ranks))}
        return out


LETTERS = {"relations": "R", "images": "I", "numeric": "N", "anchors": "A"}


def variance_by_group(var: np.ndarray, cover: dict, graph: dict, n: int) -> dict:
    """Mean common-space variance by modality coverage and by degree.

    ``cover``: {modality the network has: bool (n,) presence}; a coverage key has one letter per modality in
    that order (:data:`LETTERS`; ``-`` where the entity lacks it), e.g. ``R-N`` = relations and numbers, no image.
    """
    key = np.full(n, "", dtype=object)
    for m, present in cover.items():
        key = key + np.where(present, LETTERS.get(m, m[0].upper()), "-").astype(object)
    key = key.astype(str)
    by_cov = {k: {"n": int((key == k).sum()), "mean_var": round(float(var[key == k].mean()), 5)}
              for k in np.unique(key)}
    deg = np.bincount(np.asarray(graph["receivers"]), minlength=n)[:n]
    bins = [(0, 1), (1, 3), (3, 10), (10, 30), (30, 10 ** 9)]
    by_deg = {f"{lo}-{hi - 1 if hi < 10 ** 9 else 'inf'}": {"n": int(((deg >= lo) & (deg < hi)).sum()),
              "mean_var": (round(float(var[(deg >= lo) & (deg < hi)].mean()), 5)
                           if ((deg >= lo) & (deg < hi)).any() else None)} for lo, hi in bins}
    mean = lambda sel: round(float(var[sel].mean()), 5) if sel.any() else None  # noqa: E731
    common = {name: {"with": mean(m), "without": mean(~m)} for name, m in cover.items()}
    # the shapes the run report draws (as the paper-faithful model's): by modality, with / without; by degree
    return {"common": common, "common_by_degree": {k: v["mean_var"] for k, v in by_deg.items()},
            "by_coverage": by_cov, "by_degree": by_deg, "mean": round(float(var.mean()), 5)}


@MODELS.register(name="gaussian-strong-point")
class GaussianStrongPointModel(GaussianStrongModel):
    """The point twin of ``gaussian-strong``: the same network with every variance frozen."""

    @dataclass(frozen=True)
    class Config(GaussianStrongModel.Config):
        point: bool = True


class GaussianStrongTraining(TrainingModule):
    """Epochs of ``gaussian-strong`` for :class:`~mmea.training.Trainer`: shuffled seed batches, one step each."""

    record_initial = True  # the epoch-0 validation of an orthogonal start shows in the history

    def __init__(self, model: GaussianStrongModel, pairs: np.ndarray):
        self.model, self.pairs = model, np.asarray(pairs, dtype=np.int64)
        self.kind = model.registry_name

    def train_epoch(self, epoch: int, trainer) -> EpochOutput:
        m, bs = self.model, self.model.config.batch_size
        perm = m._rng.permutation(len(self.pairs))
        losses, parts = [], {}
        for i in range(0, len(perm), bs):
            loss, parts = m.step(self.pairs[perm[i:i + bs]])
            losses.append(loss)
            if trainer.budget.out_of_time():
                return EpochOutput(float(np.mean(losses)), parts, out_of_time=True)
        return EpochOutput(float(np.mean(losses)) if losses else None, parts)

    def can_validate(self) -> bool:
        return len(self.model.valid) >= 2

    def on_fresh_start(self, trainer) -> Validation | None:
        """With ``anchor_init = orthogonal`` the untrained common space already carries the anchor source's
        geometry: validated as epoch 0, a candidate for the kept state (training must beat it on the valid links)."""
        if self.model.config.anchor_init != "orthogonal" or not self.can_validate():
            return None
        return self.validate(0, trainer)

    def validate(self, epoch: int, trainer) -> Validation:
        v = self.model.evaluate_valid()
        return Validation(v["hits@1"], key=(v["hits@1"], v["mrr"]),
                          extra={"valid_hits@1": round(v["hits@1"], 4), "valid_mrr": round(v["mrr"], 4)})

    def snapshot(self) -> dict:
        return {k: v.detach().clone() for k, v in self.model.net.state_dict().items()}

    def restore(self, state: dict) -> None:
        self.model.net.load_state_dict(state)

    def postfix(self, record, trainer) -> dict:
        return epoch_postfix(record.loss, record.extra.get("valid_hits@1"))

    def loop_state(self) -> dict:
        m = self.model
        return {"net": m.net.state_dict(), "optimizer": m.optimizer.state_dict(), "rng": m._rng.bit_generator.state}

    def load_loop_state(self, saved: dict) -> None:
        m = self.model
        m.net.load_state_dict(saved["net"])
        m.optimizer.load_state_dict(saved["optimizer"])
        m._rng.bit_generator.state = saved["rng"]
