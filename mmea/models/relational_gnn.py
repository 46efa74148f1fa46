"""Relational graph encoder (``relational-gnn``): Dual-AMN / RREA-style alignment from the graph alone, no names.

Mao, Wang, Xu, Wu, Lan, "Relational Reflection Entity Alignment" (RREA), CIKM 2020; Mao, Wang,
Xu, Lan, Wu, "Boosting the Speed of Entity Alignment 10x: Dual Attention Matching Network with
Normalized Hard Sample Mining" (Dual-AMN), WWW 2021.

Both KGs form one graph (disjoint entity ids, distinct relations, inverse edges, no self loops by default;
:func:`~mmea.models.relational_gnn_math.union_graph`).  Learned entity and relation embeddings
are refined by ``layers`` relation-aware attention layers per view (entity view, entity-relation
view): neighbour features are reflected by their edge's unit relation vector
(``h - 2 (r^T h) r``), weighted by a softmax over each entity's edges of ``k_l^T r``, summed and
passed through ``tanh``; every layer (and the input layer) of both views is concatenated
(:class:`~mmea.models.relational_gnn_nn.RelationalGnn`).

Training (Dual-AMN's normalised hard-sample mining, :mod:`mmea.models.relational_gnn_math`): for
each seed pair ``(a, b)`` of a batch, ``x_n = gamma + d(a, b) - d(a, n)`` over the entities
``n`` of the other KG, standardised per row with constant mean and standard deviation, and
``logsumexp_n(lambda z_n)``, in both directions.  With ``negatives = "mined"`` (default) the
row statistics come from every entity of the other KG (a no-gradient pass) and the gradient
flows through the ``hard_negatives`` hardest ones, which carry almost all of the
``logsumexp`` at ``lambda = 30``; ``"all"`` keeps the gradient over every candidate.  RMSprop,
dropout on the concatenated output.  Epochs run in the shared :class:`~mmea.training.Trainer`:
validation Hits@1 (CSLS) on ``task.valid`` after every ``eval_every`` epochs, patience, the
best state kept, a wall-clock budget, checkpoints (first phase) and a progress bar.

Iterative bootstrapping (``iterations`` rounds, default 0): after training, the mutual nearest
CSLS pairs among the entities outside the training pairs (:func:`mmea.seeds.unaligned_rows`,
:func:`mmea.seeds.expand_seeds`) join the training pairs and training continues for
``iteration_epochs`` epochs.  An entity is proposed at most once; ``task.test`` is never read
(``task.valid`` only for model selection).  Only the first phase is checkpointed: a resumed run
replays the rounds from the restored state.

:meth:`RelationalGnnModel.embeddings` returns the eval-mode (no dropout) concatenation,
L2-normalised, for the shared CSLS search.  No name, attribute, number or image is read.

Joined label propagation (``lp_weight != 0``): the final training pairs (train links and the rounds'
proposals) label both KGs, and LightEA's relational readout (Mao et al., EMNLP 2022;
:func:`~mmea.models.label_propagation_math.relational_features`) gives a training-free second representation
``l``; the output is ``[sqrt(1 - w) g, sqrt(w) l]`` (both parts unit rows), so a cosine is
``(1 - w) cos_g + w cos_l``, ``w`` chosen on the valid links when negative.  ``lp_proposals`` makes the rounds
propose from that joined embedding too.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from ..checkpoint import Checkpointer
from ..config import FiniteFloat, Fraction, NonNegFloat, NonNegInt, PositiveFloat, PositiveInt
from ..errors import MmeaInputError
from ..progress import epoch_postfix
from ..seeds import expand_seeds, train_seeds, unaligned_rows
from ..training import EpochOutput, TimeBudget, Trainer, TrainingModule, Validation
from .base import MODELS, AlignmentModel

log = logging.getLogger("mmea.models")

NEGATIVES = ("mined", "all")
NEGATIVES_FROM = ("both", "other")


@MODELS.register
class RelationalGnnModel(AlignmentModel):
    """Relation-aware attention GNN over both KGs (Dual-AMN / RREA family), normalised hard-sample loss; no names."""

    uses_gold_for_training = True

    @dataclass(frozen=True)
    class Config:
        """Parameters (``[model]`` / ``--set``).

        Attributes:
            dim: width of the entity and relation embeddings and of every layer (output
                ``2 (layers + 1) dim``; Dual-AMN's 128).  A step over the DBP15k graph (330K edges) takes
                about 1.8 s at 128 on 2 CPU cores (sparse CSR kernels, ``relational_gnn_math.EdgePattern``).
            layers: attention layers per view.
            dropout: on the concatenated output, in training.
            lr: RMSprop learning rate.
            gamma, lamb: margin and scale of the normalised hard-sample loss (Dual-AMN: 1, 30).
            batch_size: seed pairs per step (every step runs the whole graph, unless ``fanout``).
            fanout: 0 (default): every step runs the whole graph.  > 0: mini-batches with neighbour
                sampling for large graphs: a step runs the batch's entities and ``negative_samples``
                random entities of both KGs over their ``layers``-hop in-neighbourhoods, at most
                ``fanout`` edges sampled per entity and hop
                (:func:`~mmea.models.relational_gnn_math.sampled_subgraph`); the loss's negatives are
                those entities (in-batch and random), every one counted (``negatives`` is not used).
            negative_samples: random entities per sampled step.
            self_loops: a self-loop edge (relation ``2R``) in every entity's attention (default off, as Dual-AMN's
                attention graph; the entity view's input mean counts the entity itself either way).
            init_bound: entity and relation embeddings start uniform on ``[-init_bound, init_bound]`` (Keras'
                Embedding default 0.05, as Dual-AMN); 0: Glorot-uniform.
            negatives: ``mined`` (gradient through the ``hard_negatives`` hardest, statistics over
                all) or ``all`` (gradient through every candidate).
            proxy: Dual-AMN's proxy-matching gate on each view's output
                (:class:`~mmea.models.relational_gnn_nn.ProxyGate`).
                Off by default: on DBP15k zh_en (20 epochs, dim 128, valid-selected) H@1 was 0.710 with it and
                0.714 without, and its ``(n, w) x (w, w)`` products cost 0.7 s of a 2.5 s step.
            pool, refresh_every: a pair's hard-negative pool (its ``pool`` nearest candidates, no
                gradient) is mined from the step's embeddings and kept for ``refresh_every`` epochs; each step
                takes the gradient through the ``hard_negatives`` nearest of the pool by the current
                embeddings (mining scans every candidate; a kept pool saves that scan).
            negatives_from: ``both`` (every entity of both KGs but the pair, as Dual-AMN's code) or
                ``other`` (the entities of the other KG).
            epochs: epochs of the first phase; eval_every, patience: validations (0: never stop).
            iterations: bootstrapping rounds; iteration_epochs: epochs per round;
                min_round_pairs: stop the rounds when one proposes fewer pairs; min_cos: a
                proposal's cosine must exceed it.
            max_minutes: wall-clock budget of the whole training (rounds included).
            budget_counts_output: the final output (the network's embedding, joined by the label propagation
                when ``lp_weight != 0``) must also fit in ``max_minutes``: each bootstrapping round times the same
                work in its proposal (:meth:`propose`) and the training stops that much before the budget, so the
                fit ends inside it (off: the output is computed after the budget, 30-40 s of label-propagation
                join on FB15K-DB15K).  Before the first round nothing has been timed and nothing is held back.
                With ``lp_weight != 0`` it needs ``lp_proposals`` (only then do the rounds time the join).
            first_minutes: wall-clock budget of the first phase (before the rounds; 0: only ``max_minutes``).
            num_threads: torch CPU threads while training (0: leave as is; restored afterwards).
            lp_weight: 0 (default): the GNN's output alone.  In (0, 1]: the trained output is joined by the
                relational label-propagation readout of the final training pairs (train links and the rounds'
                proposals; :func:`~mmea.models.label_propagation_math.relational_features`, LightEA's
                representation, nothing trained), ``[sqrt(1 - w) g, sqrt(w) l]`` with both parts unit rows, so a
                cosine is ``(1 - w) cos_gnn + w cos_lp``.  Negative: ``w`` is the one of ``lp_weights`` with
                the best valid Hits@1 (CSLS among the valid targets; ties to the first listed).
            lp_heads: relation heads of that readout (``16 lp_heads`` columns; ``anchor_dim`` 1024, depth 2).
            lp_proposals: the bootstrapping rounds propose from the joined embedding (the label propagation of
                the pairs so far, the same weight rule) instead of the GNN output alone.
            refit: after the valid links have chosen the epoch count (the first phase's best epoch) and the
                joined weight, train a fresh network (same seed) on the train and valid links for that many epochs,
                replay the rounds, and join the label propagation of those pairs at that weight: the output the
                run scores (scikit-learn's ``refit``).  The first pass's output is kept for the calibration
                (:meth:`held_out_embeddings`).  Up to twice the training time (``max_minutes`` again);
                ``task.test`` is still never read.
            refit_ensemble: with ``refit``: the refit network starts from ``seed + 1`` and the run scores the mean
                of the two networks' cosines, ``[sqrt((1 - w) / 2) g_first, sqrt((1 - w) / 2) g_refit, sqrt(w) l]``
                (``l`` the label propagation of the refit's pairs): a two-member ensemble for the training time
                of the refit alone (no weight is tuned: the members count equally).
            refit_members: with ``refit_ensemble``: how many refit networks (seeds ``+1 .. +k``) join the first
                pass; the output is ``[g_first, g_1, ..., g_k] / sqrt(k + 1)`` (the mean of the ``k + 1`` cosines)
                joined as above, ``l`` the label propagation of the last refit's pairs.  Each refit trains again
                (``max_minutes`` each).
        """

        dim: PositiveInt = 128
        layers: PositiveInt = 2
        dropout: Fraction = 0.3
        lr: PositiveFloat = 0.005
        gamma: NonNegFloat = 1.0
        lamb: PositiveFloat = 30.0
        batch_size: PositiveInt = 1024
        negatives: str = "mined"
        negatives_from: str = "both"
        hard_negatives: PositiveInt = 16
        pool: PositiveInt = 16
        proxy: bool = False
        refresh_every: PositiveInt = 1
        epochs: NonNegInt = 20
        eval_every: PositiveInt = 1
        patience: NonNegInt = 10
        iterations: NonNegInt = 0
        iteration_epochs: PositiveInt = 5
        min_round_pairs: NonNegInt = 1
        min_cos: FiniteFloat = 0.0
        max_minutes: PositiveFloat = 10.0
        budget_counts_output: bool = False
        first_minutes: NonNegFloat = 0.0
        num_threads: NonNegInt = 2
        fanout: NonNegInt = 0
        negative_samples: PositiveInt = 2048
        self_loops: bool = False
        init_bound: NonNegFloat = 0.05
        lp_weight: FiniteFloat = 0.0
        lp_weights: tuple = (0.25, 0.5)
        lp_heads: PositiveInt = 512
        lp_proposals: bool = False
        refit: bool = False
        refit_ensemble: bool = False
        refit_members: PositiveInt = 1

        def __post_init__(self) -> None:
            if self.negatives_from not in NEGATIVES_FROM:
                raise MmeaInputError(f"relational-gnn: negatives_from must be one of {', '.join(NEGATIVES_FROM)}, "
                                     f"got {self.negatives_from!r}")
            from .lp_join_math import check_lp_weights

            check_lp_weights("relational-gnn", self.lp_weight, self.lp_weights)
            if self.refit_ensemble and not self.refit:
                raise MmeaInputError("relational-gnn: refit_ensemble joins the first pass and the refit: it needs "
                                     "refit = true", hint="add --set model.refit=true")
            if self.refit_members > 1 and not self.refit_ensemble:
                raise MmeaInputError(f"relational-gnn: refit_members = {self.refit_members} counts the refit networks "
                                     "of an ensemble: it needs refit_ensemble = true",
                                     hint="add --set model.refit_ensemble=true (and model.refit=true)")
            if self.negatives not in NEGATIVES:
                raise MmeaInputError(f"relational-gnn: negatives must be one of {', '.join(NEGATIVES)}, "
                                     f"got {self.negatives!r}")
            if self.budget_counts_output and self.lp_weight != 0 and not self.lp_proposals:
                raise MmeaInputError("relational-gnn: budget_counts_output times the final join in the rounds' "
                                     "proposals, so with lp_weight != 0 it needs lp_proposals = true",
                                     hint="add --set model.lp_proposals=true, or leave budget_counts_output off")

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self.net = None
        self._emb: tuple[np.ndarray, np.ndarray] | None = None
        self._sampled_sizes: list[tuple[int, int]] = []  # (nodes, edges) of each sampled step
        self._held_out: tuple[np.ndarray, np.ndarray] | None = None  # the first pass's output (refit)
        self._fixed_lp_weight: float | None = None  # the refit's joined weight, chosen by the first pass
        self._output_s = 0.0  # seconds of the last proposal's embedding (+ join): what the final output repeats
        #: set True to keep the final join's label propagation in :attr:`final_propagation` (a caller that joins
        #: the same final pairs again hands it on: :func:`cached_relational_gnn`); off, nothing extra is held
        self.keep_propagation = False
        self.final_propagation = None  # the kept :class:`~mmea.models.lp_join_math.PoolPropagation`, or None

    def fit(self, task, features=None) -> None:
        """Train on ``task.train`` (no features are needed: none are computed, no name is read)."""
        self.learn(task, features)

    def learn(self, task, features=None) -> None:
        """See the module docstring; ``features`` is unused (the model reads triples and links only)."""
        import torch

        threads = torch.get_num_threads()
        try:
            if self.config.num_threads > 0:
                torch.set_num_threads(self.config.num_threads)
            self._train(task)
        finally:
            torch.set_num_threads(threads)

    def _setup(self, task) -> None:
        import torch

        from . import relational_gnn_math as gm

        c, src, tgt = self.config, task.source, task.target
        self.n_src, self.n_tgt = src.num_entities, tgt.num_entities
        self.graph = gm.union_graph(src.triples, tgt.triples, self.n_src, self.n_tgt, src.num_relations,
                                    tgt.num_relations, self_loops=c.self_loops)
        self.device = torch.device(self.ctx.device)
        self._new_network()
        self.valid = np.asarray(task.valid, dtype=np.int64).reshape(-1, 2)
        if c.lp_weight != 0:
            from .lp_join_math import relation_graphs

            self._lp_graphs = relation_graphs(task)
        if c.fanout:
            self._indptr = gm.receiver_indptr(self.graph["receivers"], self.graph["num_entities"])

    def _new_network(self, offset: int = 0) -> None:
        """A freshly initialised network and optimiser (the run's seed ``+ offset``), and the sampling generator."""
        import torch

        from .relational_gnn_nn import RelationalGnn

        c = self.config
        torch.manual_seed(self.ctx.seed + offset)
        self._rng = np.random.default_rng(self.ctx.seed + offset)
        self.net = RelationalGnn(self.graph, c.dim, c.layers, c.dropout, device=str(self.device), proxy=c.proxy,
                                 init_bound=c.init_bound)
        self.optimizer = torch.optim.RMSprop(self.net.parameters(), lr=c.lr, alpha=0.9, eps=1e-7)

    def _train(self, task) -> None:
        c = self.config
        t0 = time.perf_counter()
        seeds = train_seeds(task)  # (L, 2) local ids
        if not len(seeds):
            raise MmeaInputError("relational-gnn needs seed links (task.train is empty)",
                                 hint="give --seed-ratio > 0, or use a model that builds pseudo-seeds "
                                      "(--model propagation)")
        self._budget = TimeBudget(c.max_minutes * 60.0)
        self._setup(task)
        first, pairs, added, rounds = self._fit_pairs(seeds, c.epochs, self.ctx.checkpoint, "relational-gnn")
        t_out = time.perf_counter()
        self._set_output(pairs)
        self.info["budget"] = {"max_s": c.max_minutes * 60.0, "output_s": round(time.perf_counter() - t_out, 2),
                               "counted": c.budget_counts_output, "held_back_s": round(self._budget.reserve, 2)}
        if c.refit:
            self._refit(seeds, first)
        self._record(first, seeds, added, rounds, time.perf_counter() - t0)

    def _set_output(self, pairs: np.ndarray, also: list | None = None) -> None:
        """Keep the final training ``pairs (L', 2)`` (the seeds, then each round's proposals) and the output the run
        scores: the network's embedding (averaged in cosine with ``also``, other networks' ``(source, target)``
        unit rows, when given), joined by the label propagation of ``pairs`` when ``lp_weight != 0``."""
        self.pairs = pairs
        self._emb = self._embed()
        if also:  # [g_1, ..., g_k, g] / sqrt(k + 1): the mean of the k + 1 networks' cosines
            k = len(also) + 1
            self._emb = tuple(np.concatenate([m[side] for m in also] + [g], axis=1) / np.float32(np.sqrt(k))
                              for side, g in enumerate(self._emb))
        if self.config.lp_weight != 0:
            self._emb = self._with_label_propagation(self._emb, pairs)

    def _fit_pairs(self, seeds: np.ndarray, epochs: int, checkpoint, desc: str) -> tuple:
        """The first phase on ``seeds (L, 2)`` for at most ``epochs`` epochs, then the bootstrapping rounds;
        returns ``(first phase's TrainingResult, pairs (L', 2), pairs added per round, round records)``."""
        c = self.config
        first_budget = TimeBudget(min(c.first_minutes, c.max_minutes) * 60.0) if c.first_minutes > 0 else self._budget
        first = self._phase(seeds, epochs, checkpoint, desc, first_budget)
        pairs, added, rounds = seeds, [], []
        for r in range(c.iterations):
            # budget_counts_output: a round starts only if its own proposal (timed like the output) fits before the
            # held-back final output; else the proposal alone would run past the budget, with no epoch to train
            if self._budget.out_of_time(ahead=self._output_s if c.budget_counts_output else 0.0):
                break
            new = self.propose(pairs)
            if c.budget_counts_output:  # the final output repeats the proposal's embedding (+ join): keep its time
                self._budget.hold_back(self._output_s)
            added.append(int(len(new)))
            log.info("%s: round %d adds %d mutual nearest pairs", desc, r + 1, len(new))
            if len(new) < max(c.min_round_pairs, 1):
                break
            pairs = np.concatenate([pairs, new])
            res = self._phase(pairs, c.iteration_epochs, Checkpointer(None), f"{desc} round {r + 1}")
            rounds.append({"round": r + 1, "pairs_added": int(len(new)), "epochs_run": res.epochs_run,
                           "stopped": res.stopped, "best_valid": res.best_valid})
        return first, pairs, added, rounds

    def _refit(self, seeds: np.ndarray, first) -> None:
        """``refit``: the valid links join the training data once they have chosen the epochs and the weight.

        A fresh network trains on ``[seeds; valid]`` for the first phase's best epoch count with no validation
        (nothing is left to select on), the rounds run again, and the label propagation of the final pairs joins
        at the weight the first pass chose.  The first pass's output stays as :meth:`held_out_embeddings`."""
        c, t0, held = self.config, time.perf_counter(), self.valid
        if not len(held):
            self.info["refit"] = {"done": False, "reason": "the run has no valid links: nothing to add"}
            log.info("relational-gnn: no refit (the run has no valid links)")
            return
        epochs = max(int(first.best_epoch or 0), 1)
        self._held_out, self._fixed_lp_weight = self._emb, self.info.get("lp_fusion", {}).get("weight")
        members = [self._embed()] if c.refit_ensemble else []  # the first pass's network, before the join
        k = c.refit_members if c.refit_ensemble else 1
        self.valid = np.zeros((0, 2), np.int64)  # no model selection in the refit
        try:
            for j in range(1, k + 1):
                if j > 1:
                    members.append(self._embed())  # the previous refit's network
                self._budget = TimeBudget(c.max_minutes * 60.0)
                self._new_network(offset=j if c.refit_ensemble else 0)
                res, pairs, added, rounds = self._fit_pairs(np.concatenate([seeds, held]), epochs, Checkpointer(None),
                                                            "relational-gnn refit" + (f" {j}/{k}" if k > 1 else ""))
        finally:
            self.valid = held
        self._set_output(pairs, also=members)
        ensemble = None if not c.refit_ensemble else ("first pass + refit (seed + 1), mean cosine" if k == 1 else
                                                       f"first pass + {k} refits (seeds + 1 .. + {k}), mean cosine")
        self.info["refit"] = {"done": True, "links": int(len(seeds) + len(held)), "epochs": epochs,
                              "ensemble": ensemble,
                              "epochs_run": res.epochs_run, "stopped": res.stopped, "pairs_added_per_round": added,
                              "rounds": rounds, "lp_weight": self._fixed_lp_weight,
                              "s": round(time.perf_counter() - t0, 2)}
        log.info("relational-gnn: refit on %d train + valid links, %d epochs (the first pass's best)%s",
                 len(seeds) + len(held), epochs, f", {len(added)} rounds" if added else "")

    def _phase(self, pairs: np.ndarray, epochs: int, checkpoint, desc: str, budget: TimeBudget | None = None):
        """Train on ``pairs (P, 2)`` local ids for at most ``epochs`` epochs in the shared Trainer (``budget``:
        the phase's wall-clock budget, default the whole training's)."""
        c = self.config
        module = RelationalGnnTraining(self, pairs)
        trainer = Trainer(max_epochs=epochs, eval_every=c.eval_every, patience=c.patience,
                          budget=budget or self._budget,
                          checkpoint=checkpoint, monitor="valid_hits@1", progress=self.ctx.progress, desc=desc)
        return trainer.fit(module)

    def _record(self, first, seeds, added, rounds, train_s: float) -> None:
        c = self.config
        self.info.update(first.as_dict())
        self.info.update({
            "names_used": False, "inputs": ["relation triples", "train links", "valid links (model selection)" + (
                ", then training (refit)" if c.refit and len(self.valid) else "")],
            "seeds": {"kind": "train links", "count": int(len(seeds))},
            "iterative": c.iterations > 0, "iterations_requested": c.iterations, "rounds": rounds,
            "pairs_added_per_round": added, "pairs_final": int(len(self.pairs)),
            "layers": c.layers, "dim": c.dim, "out_dim": int(self.net.out_dim),
            "negatives": c.negatives if not c.fanout else "sampled subgraph (in-batch + random)",
            "negatives_from": c.negatives_from,
            "hard_negatives": c.hard_negatives if c.negatives == "mined" else None,
            "graph": {"entities": self.graph["num_entities"], "relations": self.graph["num_relations"],
                      "edges": int(len(self.graph["receivers"])), "triples": self.graph["num_triples"]},
            "modalities": {"relations": int(np.count_nonzero(np.bincount(
                self.graph["receivers"][self.graph["relations"] != self.graph["num_relations"] - 1],
                minlength=self.graph["num_entities"])))},
            "device": str(self.device), "train_s": round(train_s, 2),
            "sampling": None if not c.fanout else {
                "fanout": c.fanout, "negative_samples": c.negative_samples, "steps": len(self._sampled_sizes),
                "mean_nodes": round(float(np.mean([x[0] for x in self._sampled_sizes] or [0])), 1),
                "mean_edges": round(float(np.mean([x[1] for x in self._sampled_sizes] or [0])), 1)}})

    # -- steps ---------------------------------------------------------------
    def step(self, batch: np.ndarray, pools=None) -> tuple[float, tuple | None]:
        """One optimiser step on ``batch (B, 2)`` local seed pairs; returns ``(loss, pools)``.

        ``pools``: with ``negatives = "mined"``, the two ``(B, pool)`` tensors of candidate positions (source
        anchors, target anchors) that an earlier step mined for these pairs, or None to mine them now from
        this step's embeddings (no gradient; :func:`~mmea.models.relational_gnn_math.hardest_negatives`).
        The gradient goes through the ``hard_negatives`` nearest of the pool, recomputed with the current
        embeddings; the row statistics are over every candidate (closed form).
        """
        import torch

        from . import relational_gnn_math as gm

        c, n1 = self.config, self.n_src
        if c.fanout:
            return self._sampled_step(batch), None
        b = torch.as_tensor(batch, device=self.device)
        out = self.net()  # (n, D)
        # index_select, not out[idx]: its backward (index_add_) sums repeated rows in a fixed order on CPU, where
        # indexing's (index_put_ accumulate) made two same-seed runs differ in the 6th digit with 2 threads
        ea, eb = out.index_select(0, b[:, 0]), out.index_select(0, b[:, 1] + n1)  # (B, D)
        pos = ((ea - eb) ** 2).sum(-1)  # (B,)
        loss = out.new_zeros(())
        if c.negatives_from == "both":  # every entity but the pair itself, as Dual-AMN
            both = torch.stack([b[:, 0], b[:, 1] + n1], 1)  # (B, 2)
            rows = ((ea, out, both), (eb, out, both))
        else:  # the entities of the other KG
            rows = ((ea, out[n1:], b[:, 1][:, None]), (eb, out[:n1], b[:, 0][:, None]))
        mined, moments = [], None
        for side, (anchor, cands, excluded) in enumerate(rows):
            if c.negatives == "all":
                neg = gm.squared_distances(anchor, cands)  # (B, K)
                mask = torch.ones_like(neg, dtype=torch.bool).scatter_(1, excluded, False)
                loss = loss + gm.normalized_hard_loss(pos, neg, mask, gamma=c.gamma, lamb=c.lamb)
                continue
            if pools is None:  # mine now: the scan that finds the pool also gives the row statistics
                pool, stats = gm.mined_negatives(anchor.detach(), cands.detach(), excluded, pos,
                                                 max(c.pool, c.hard_negatives), gamma=c.gamma)
            else:  # a kept pool: the statistics in closed form (both directions of "both" share the moments)
                pool = pools[side]
                if moments is None or c.negatives_from != "both":
                    moments = gm.candidate_moments(cands)
                stats = gm.candidate_stats(anchor, cands, excluded, pos, gamma=c.gamma, moments=moments)
            mined.append(pool)
            loss = loss + self._pool_loss(anchor, cands, pool, pos, stats)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach()), (tuple(mined) if mined else None)

    def _sampled_step(self, batch: np.ndarray) -> float:
        """One step on a sampled subgraph (``fanout`` > 0): the batch's ``(B, 2)`` pairs and ``negative_samples``
        random entities are the seeds; each anchor's negatives are all seeds but its own pair."""
        import torch

        from . import relational_gnn_math as gm

        c, n1 = self.config, self.n_src
        a, t = batch[:, 0], batch[:, 1] + n1  # (B,) union ids
        seeds = np.unique(np.concatenate([a, t, self._rng.integers(0, self.graph["num_entities"],
                                                                   c.negative_samples)]))  # (Q,)
        nodes, edges = gm.sampled_subgraph(self._indptr, self.graph["senders"], seeds, c.fanout, c.layers, self._rng)
        out = self.net(nodes, edges)  # (S, D)
        at = lambda ids: torch.from_numpy(np.searchsorted(nodes, ids)).to(self.device)  # noqa: E731
        ea, eb, cands = (out.index_select(0, at(x)) for x in (a, t, seeds))  # (B, D), (B, D), (Q, D)
        pos = ((ea - eb) ** 2).sum(-1)  # (B,)
        own = torch.from_numpy(np.stack([np.searchsorted(seeds, a), np.searchsorted(seeds, t)], 1)).to(self.device)
        loss = out.new_zeros(())
        for anchor in (ea, eb):
            neg = gm.squared_distances(anchor, cands)  # (B, Q)
            mask = torch.ones_like(neg, dtype=torch.bool).scatter_(1, own, False)
            loss = loss + gm.normalized_hard_loss(pos, neg, mask, gamma=c.gamma, lamb=c.lamb)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self._sampled_sizes.append((len(nodes), len(edges)))
        return float(loss.detach())

    def _pool_loss(self, anchor, cands, pool, pos, stats):
        """The normalised hard loss of one direction through the ``hard_negatives`` nearest of ``pool (B, P)``;
        ``stats``: the rows' ``(mean, std)`` over every candidate."""
        import torch

        from . import relational_gnn_math as gm

        c = self.config
        if pool.shape[1] > c.hard_negatives:  # a wider (kept) pool: its nearest by the current embeddings
            with torch.no_grad():
                d = ((anchor[:, None, :] - cands[pool]) ** 2).sum(-1)  # (B, P) current distances
                pool = pool.gather(1, torch.topk(d, c.hard_negatives, dim=1, largest=False).indices)  # (B, k)
        hard = cands.index_select(0, pool.reshape(-1)).view(*pool.shape, -1)  # (B, k, D)
        neg = ((anchor * anchor).sum(-1, keepdim=True) + (hard * hard).sum(-1)
               - 2.0 * torch.bmm(hard, anchor[:, :, None])[..., 0])  # (B, k) squared distances
        return gm.normalized_hard_loss(pos, neg, gamma=c.gamma, lamb=c.lamb, stats=stats)

    def _embed(self) -> tuple[np.ndarray, np.ndarray]:
        """Eval-mode output of the network, rows L2-normalised: ``(source (N, D), target (M, D))``."""
        import torch

        self.net.eval()
        with torch.no_grad():
            out = self.net().float().cpu().numpy()  # (n, D)
        self.net.train()
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out[:self.n_src], out[self.n_src:]

    def _with_label_propagation(self, emb: tuple, pairs: np.ndarray, final: bool = True
                                ) -> tuple[np.ndarray, np.ndarray]:
        """``[sqrt(1 - w) g, sqrt(w) l]`` rows unit: the GNN output ``emb`` joined by the relational label
        propagation of ``pairs`` (:func:`~mmea.models.lp_join_math.join_label_propagation`; ``lp_weight``, ``w`` chosen
        on the valid links when negative).  ``final``: record ``info["lp_fusion"]`` (the last call, on the final
        pairs)."""
        from .lp_join_math import join_label_propagation

        c = self.config
        if self._fixed_lp_weight is not None:  # the refit: the first pass chose it on the valid links
            w, how = self._fixed_lp_weight, "the first pass, on the valid links (refit)"
        elif c.lp_weight > 0 or not len(self.valid):
            w = float(c.lp_weight) if c.lp_weight > 0 else float(c.lp_weights[0])
            how = "set" if c.lp_weight > 0 else "default (no valid links)"
        else:
            w, how = None, f"Hits@1 (CSLS) on {len(self.valid)} valid links"
        out, record, prop = join_label_propagation(emb, self._lp_graphs, pairs, heads=c.lp_heads, seed=self.ctx.seed,
                                                   weight=w, weights=c.lp_weights, held_out=self.valid)
        if final:
            if self.keep_propagation:
                self.final_propagation = prop
            self.info["lp_fusion"] = {**record, "chosen_by": how, "in_proposals": c.lp_proposals}
            log.info("relational-gnn: joined the relational label propagation at weight %s (%s)", record["weight"],
                     how)
        return out

    def evaluate_valid(self) -> dict:
        """Hits@1 / MRR (CSLS) of the valid links among the valid targets."""
        from ..evaluation import evaluate_embeddings

        s, t = self._embed()
        return evaluate_embeddings(s, t, self.valid, candidates="test", csls_k=10)["test"]

    def propose(self, pairs: np.ndarray) -> np.ndarray:
        """``(p, 2)`` mutual nearest CSLS pairs among the entities outside ``pairs`` (never a gold test link).
        ``_output_s``: the seconds of its embedding (+ join), the work the final output repeats."""
        t0 = time.perf_counter()
        s, t = self._embed()
        if self.config.lp_weight != 0 and self.config.lp_proposals:
            s, t = self._with_label_propagation((s, t), pairs, final=False)
        self._output_s = time.perf_counter() - t0
        free_s, free_t = unaligned_rows(self.n_src, self.n_tgt, pairs, np.zeros((0, 2), np.int64))
        if not len(free_s) or not len(free_t):
            return np.zeros((0, 2), np.int64)
        return expand_seeds(s[free_s], t[free_t], free_s, free_t, self.config.min_cos)

    def held_out_embeddings(self):
        return self._held_out

    def network_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """The trained network's own unit rows ``(source (N, D), target (M, D))``: no label-propagation join,
        no ensemble member (what a model built on the encoder takes as its input)."""
        if self._emb is None:
            raise MmeaInputError("the relational-gnn model has not been fitted")
        return self._embed()

    def embeddings(self):
        if self._emb is None:
            raise MmeaInputError("the relational-gnn model has not been fitted")
        return self._emb


class RelationalGnnTraining(TrainingModule):
    """Epochs of ``relational-gnn`` for :class:`~mmea.training.Trainer`: shuffled batches of ``pairs``, one step
    each (the time budget can end an epoch early); validation Hits@1 (MRR breaks ties) on ``task.valid``;
    the loop state is the weights, the optimiser and the batch generator."""

    kind = "relational-gnn"

    def __init__(self, model: RelationalGnnModel, pairs: np.ndarray):
        import torch

        self.model, self.pairs, self._torch = model, np.asarray(pairs, dtype=np.int64), torch
        # hard-negative pools kept between epochs (mined negatives, ``refresh_every`` > 1): (P, pool) per side
        mined_kept = model.config.negatives == "mined" and model.config.refresh_every > 1
        self._pools = None
        self._pool_epoch = np.full(len(self.pairs), -np.inf) if mined_kept else None

    def train_epoch(self, epoch: int, trainer) -> EpochOutput:
        m, bs = self.model, self.model.config.batch_size
        perm = m._rng.permutation(len(self.pairs))
        losses = []
        for i in range(0, len(perm), bs):
            rows = perm[i:i + bs]
            cached = self._cached_pools(rows, epoch)
            loss, pools = m.step(self.pairs[rows], cached)
            if cached is None and pools is not None and self._pool_epoch is not None:
                self._store_pools(rows, pools, epoch)
            losses.append(loss)
            if trainer.budget.out_of_time():
                return EpochOutput(float(np.mean(losses)), out_of_time=True)
        return EpochOutput(float(np.mean(losses)) if losses else None)

    def _cached_pools(self, rows: np.ndarray, epoch: int):
        """The pools of ``rows`` if every one was mined less than ``refresh_every`` epochs ago, else None."""
        if self._pool_epoch is None or self._pools is None:
            return None
        if np.any(epoch - self._pool_epoch[rows] >= self.model.config.refresh_every):
            return None
        idx = self._torch.as_tensor(rows)
        return tuple(p[idx] for p in self._pools)

    def _store_pools(self, rows: np.ndarray, pools: tuple, epoch: int) -> None:
        if self._pools is None:
            self._pools = tuple(p.new_zeros((len(self.pairs), p.shape[1])) for p in pools)  # (P, pool) per side
        idx = self._torch.as_tensor(rows)
        for kept, new in zip(self._pools, pools):
            kept[idx] = new
        self._pool_epoch[rows] = epoch

    def can_validate(self) -> bool:
        return len(self.model.valid) >= 2  # ranking among one candidate says nothing

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


def pretrain_relational_gnn(task, pool: np.ndarray, select: np.ndarray, config: "RelationalGnnModel.Config", *,
                            seed: int, device: str, progress: bool = False, label: str = "pre-trained",
                            keep_propagation: bool = False):
    """Train ``relational-gnn`` on ``pool (P, 2)`` (``select (S, 2)`` chooses its epoch); ``(model, seconds)``.
    ``keep_propagation``: the model keeps its final join's label propagation (:attr:`~RelationalGnnModel.
    final_propagation`).

    The encoder sees a copy of ``task`` whose train links are ``pool``, whose valid links are ``select`` and
    which has no test link: it reads the relation triples and those links only.  It is the relational input
    of other models (SelfMEA's structure modality, gaussian-strong's ``anchor_source = relational-gnn``).

    Its random draws happen in a forked torch generator state: a time budget ends its training after a varying
    number of epochs, and what the caller draws afterwards (initialisation, dropout, batches) must not depend
    on how many that was; the same encoder epoch then gives the same run of the caller.
    """
    import torch

    from ..data import AlignmentTask
    from .base import RunContext

    t0 = time.perf_counter()
    sub = AlignmentTask(f"{task.name} ({label} relational-gnn)", task.source, task.target,
                        np.asarray(pool, np.int64).reshape(-1, 2), np.asarray(select, np.int64).reshape(-1, 2),
                        np.zeros((0, 2), np.int64))
    gnn = RelationalGnnModel(config, RunContext(seed=seed, device=device, progress=progress))
    gnn.keep_propagation = keep_propagation
    cuda = str(device).startswith("cuda") and torch.cuda.is_available()
    with torch.random.fork_rng(devices=[torch.device(device).index or 0] if cuda else []):
        gnn.fit(sub)
    return gnn, time.perf_counter() - t0


def cached_relational_gnn(task, pool: np.ndarray, select: np.ndarray, config: "RelationalGnnModel.Config", *,
                          seed: int, device: str, cache_root=None, progress: bool = False,
                          label: str = "pre-trained", hand_over=None
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """:func:`pretrain_relational_gnn`'s ``(source (N, D), target (M, D), pairs (P', 2), info)``, cached on disk.

    ``source`` / ``target`` are the network's own output (:meth:`RelationalGnnModel.network_embeddings`: with
    ``lp_weight`` the join steers the rounds' proposals but is not part of it).
    ``pairs`` are ``pool`` followed by the pairs its bootstrapping rounds proposed.  With a ``cache_root`` (the
    run's feature cache; None: no cache) the result is stored in the :class:`~mmea.features.FeatureStore` under
    the fingerprint of the two KGs, ``pool``, ``select``, the encoder's config, the seed and the device type:
    a twin run (the point twin of a Gaussian model, say) then reads the very same encoder output instead of
    training it again under a time budget.  ``info["cached"]`` says which happened.

    ``hand_over``: a callable given the final join's label propagation
    (:class:`~mmea.models.lp_join_math.PoolPropagation`) when the encoder is trained here with ``lp_weight``
    (not on a cache hit): a model that joins the same final pairs skips computing it again.
    """
    import hashlib
    from dataclasses import asdict

    from ..feature_store import FeatureStore

    pool = np.ascontiguousarray(np.asarray(pool, np.int64).reshape(-1, 2))
    select = np.ascontiguousarray(np.asarray(select, np.int64).reshape(-1, 2))

    def compute():
        gnn, seconds = pretrain_relational_gnn(task, pool, select, config, seed=seed, device=device,
                                               progress=progress, label=label, keep_propagation=hand_over is not None)
        if hand_over is not None and gnn.final_propagation is not None:
            hand_over(gnn.final_propagation)
        s, t = gnn.network_embeddings()
        gi = gnn.info
        info = {"epochs_run": gi.get("epochs_run"), "best_valid": gi.get("best_valid"), "rounds": gi.get("rounds"),
                "pairs_added_per_round": gi.get("pairs_added_per_round"), "pairs_final": gi.get("pairs_final"),
                "fit_s": round(seconds, 2), **{k: gi[k] for k in ("lp_fusion", "budget") if k in gi}}
        return {"source": s.astype(np.float32), "target": t.astype(np.float32), "pairs": gnn.pairs}, info

    key = {"kind": "pre-trained relational-gnn", "kgs": task.fingerprint(),
           "pool": hashlib.sha1(pool.tobytes()).hexdigest(), "select": hashlib.sha1(select.tobytes()).hexdigest(),
           "config": asdict(config), "seed": int(seed), "device": str(device).split(":")[0]}
    store = FeatureStore(cache_root, enabled=cache_root is not None)
    entry = store.get_or_compute(key, compute, name="relational-gnn-pretrained")
    a = entry.arrays
    return a["source"], a["target"], np.asarray(a["pairs"], np.int64), {**entry.info, "cached": entry.hit}
