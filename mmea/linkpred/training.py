"""Train a link-prediction model with a negative sampler and a loss; early stopping on validation MRR.

:func:`train_link_prediction` runs: build model / sampler / loss -> epochs of
mini-batches (positives, their negatives, the loss) -> every ``eval_every``
epochs the filtered MRR on a fixed validation subsample (early stopping with
``patience``, the best weights kept) -> the full filtered test evaluation ->
``metrics.json`` and ``embeddings.npz`` in the run folder.

**Two ways of scoring negatives.**  Per-positive negatives (``(B, K)``
entities, each gathered and compared to its positive's query) cost memory
traffic ``B * K * d`` per step: on a 2-core CPU ``B = 1024, K = 64, d = 200``
takes ~0.3 s forward + backward, ~90 s per FB15k-237 epoch.  Batch-shared
negatives (one set of ``K`` candidates for the whole batch, scored with one
``(B, d) x (d, K)`` product or ``torch.cdist``) are about ten times cheaper per
negative, so ``K`` can be several hundred.  ``shared_negatives = None``
(auto) uses them whenever the sampler supports them (``uniform``,
``bernoulli``, ``in-batch``); the model-aware samplers (``hard-nn``,
``rank-above``, ``cache``) pick negatives per positive by construction and
use the per-positive path.

**Where the time goes on a CPU.**  Embedding gradients are dense, so every
step touches the whole ``E x d`` table (gradient fill, Adam): that fixed cost,
not the scoring, dominated a step until Adam was fused (``make_optimizer``,
~9x faster) and lookups went through ``F.embedding`` (~2x faster backward).
It is also why large batches are cheap: on 2 cores a 4096-positive step costs
about what a 1024-positive one does, so ``batch_size = 4096``.

**Defaults, and what reaches MRR >= 0.28 on FB15k-237 in 30 CPU-minutes.**
The literature's strong sampled rows (RotatE's self-adversarial TransE,
MRR 0.33; NSCaching TransE, 0.30) train for 10^5 steps of 1024 x 256
negatives at d = 1000 -- hours on a GPU.  Measured here (2 cores, FB15k-237):
TransE with the L2 distance scores shared negatives through the matrix form
of ``torch.cdist``, ~4 s per epoch at d = 200, K = 256, batch 4096, against
~20 s (idle machine) for L1, whose ``cdist`` has no matrix form.  With the
self-adversarial loss (which concentrates the gradient on the hard negatives,
doing the job of a hard sampler for free) TransE-L2 reached validation MRR
0.27 after 40 epochs / 6 minutes and was still rising, so the defaults are
TransE-L2, uniform batch-shared negatives, self-adversarial loss
(gamma = 9, alpha = 1), d = 200, Adam lr 0.003, up to 300 epochs inside a
25-minute training budget with early stopping on a fixed 1000-triple
validation subsample (an 8-minute smoke run of exactly this reached test
MRR 0.308, H@10 0.491).  DistMult is weaker here: with the softplus loss it
reached validation MRR ~0.20 in 3 minutes; with lr 0.01 and no regulariser
it peaked at 0.14 after 2 epochs and then overfitted, and a regulariser of
1e-2 collapses every score to 0 (the trilinear score's gradient vanishes at
small norms), so the benchmark uses 1e-4.  1-vs-all scoring, the sampler-free limit of
shared negatives, costs ``E / K`` ~ 57 times more per step and is not offered.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field, fields
from typing import Annotated

import numpy as np
import torch

from pydantic import Field

from ..checkpoint import Checkpointer
from ..config import NonNegFloat, NonNegInt, PositiveFloat, PositiveInt, Seed, build_dataclass
from ..errors import MmeaInputError
from ..progress import epoch_postfix
from ..runs import atomic_save_npz
from ..training import EpochOutput, RankingValidationModule, TimeBudget, Trainer
from .evaluation import filtered_metrics

log = logging.getLogger("mmea.linkpred")

__all__ = ["LinkPredConfig", "LinkPredTraining", "train_link_prediction", "resolve_margin", "config_from_dict",
           "make_optimizer", "init_embeddings_from"]


@dataclass(frozen=True)
class LinkPredConfig:
    """Everything a link-prediction run needs besides the data.

    Attributes:
        model: ``transe``, ``distmult`` or ``rotate`` (:data:`~mmea.linkpred.models.LP_MODELS`).
        dim: embedding dimension (complex dimension for RotatE).
        epochs: maximum epochs; ``max_minutes`` may stop earlier.
        batch_size: positives per step.
        lr: Adam learning rate.
        num_negatives: ``K`` negatives per positive (shared: per batch).
        sampler: a :data:`~mmea.sampling.SAMPLERS` name.
        sampler_options: the sampler's own keyword arguments (``k``, ``num_neighbors``, ...).
        shared_negatives: batch-shared candidates; None = when the sampler supports them.
        loss: a :data:`~mmea.losses.LOSSES` name.
        margin: gamma of the margin / self-adversarial losses; None = 1 for
            ``margin-ranking``, 9 for self-adversarial TransE / RotatE, 0 for DistMult.
        adversarial_temperature: alpha of the self-adversarial weights.
        temperature, learnable_temperature: tau of InfoNCE.
        regularization: weight of the squared-norm regulariser of the positives' embeddings.
        p_norm: TransE distance norm (1 or 2).
        normalize_entities: TransE unit-norm entities after each step.
        filtered, type_constraints, cardinality_aware: :class:`~mmea.sampling.FalseNegativeControl`.
        eval_every: epochs between validation evaluations.
        valid_subsample: validation triples used for early stopping (0 = all).
        patience: evaluations without improvement before stopping.
        seed: seed of everything.
        device: ``cpu``, ``cuda`` or ``auto``.
        max_minutes: wall-clock budget of the training loop (validation included, final test excluded).
        num_threads: torch CPU threads (0 = torch's default).
        eval_batch_size: queries per ``(B, E)`` score block in evaluation.
        audit_every: every n-th batch, count sampled negatives that are true triples of
            train + valid + test (the false-negative audit); 0 = never.
        init_from: "" (random init) or a ``mmea pretrain-clep`` run directory / ``.npz`` with
            ``entity (E, dim)`` and ``relation (R, dim)`` arrays copied into the model's tables
            (:func:`init_embeddings_from`); sizes must match the dataset and ``dim``.
    """

    model: str = "transe"
    dim: PositiveInt = 200
    epochs: PositiveInt = 300
    batch_size: PositiveInt = 4096
    lr: PositiveFloat = 0.003
    num_negatives: PositiveInt = 256
    sampler: str = "uniform"
    sampler_options: dict = field(default_factory=dict)
    shared_negatives: bool | None = None
    loss: str = "self-adversarial"
    margin: NonNegFloat | None = None
    adversarial_temperature: NonNegFloat = 1.0
    temperature: PositiveFloat = 0.1
    learnable_temperature: bool = False
    regularization: NonNegFloat = 0.0
    p_norm: Annotated[int, Field(ge=1, le=2)] = 2
    normalize_entities: bool = False
    filtered: bool = True
    type_constraints: bool = False
    cardinality_aware: bool = False
    eval_every: PositiveInt = 2
    valid_subsample: NonNegInt = 1000
    patience: NonNegInt = 5
    seed: Seed = 0
    device: str = "cpu"
    max_minutes: PositiveFloat = 25.0
    num_threads: NonNegInt = 0
    eval_batch_size: PositiveInt = 256
    audit_every: NonNegInt = 10
    init_from: str = ""

    def __post_init__(self) -> None:
        from ..config import require_at_least

        require_at_least(self, ("dim", "epochs", "batch_size", "num_negatives", "eval_every", "eval_batch_size"),
                         where="linkpred")
        if self.lr <= 0 or self.max_minutes <= 0:
            raise MmeaInputError(f"linkpred: lr and max_minutes must be > 0 (got {self.lr}, {self.max_minutes})")
        if self.patience < 0 or self.valid_subsample < 0 or self.audit_every < 0:
            raise MmeaInputError("linkpred: patience, valid_subsample and audit_every must be >= 0")
        if not isinstance(self.sampler_options, dict):
            raise MmeaInputError("linkpred: sampler_options must be a table of the sampler's keyword arguments")


def config_from_dict(values: dict, where: str = "linkpred") -> LinkPredConfig:
    """A :class:`LinkPredConfig` from a dict, every key, type and declared range checked (NaN refused);
    an unknown key is an error that lists the valid ones, a bad value names its key (``where.key``)."""
    valid = {f.name for f in fields(LinkPredConfig)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise MmeaInputError(f"unknown link-prediction option(s): {', '.join(unknown)}; "
                             f"valid: {', '.join(sorted(valid))}")
    return build_dataclass(LinkPredConfig, values, where)


def init_embeddings_from(model, source: str, entity_ids=None) -> dict:
    """Copy pre-trained ``entity`` / ``relation`` tables (a CLEP run or ``.npz``) into ``model``'s embeddings.

    The tables must have the model's shapes (same entities, relations and
    ``dim``; RotatE's complex entities have ``2 dim`` columns), else a clear
    error names both shapes; with ``entity_ids`` saved, they must list the
    dataset's entities in the same order.  TransE's unit-norm projection is
    applied afterwards when the model uses it.
    """
    from ..clep.mention import load_clep_embeddings

    emb = load_clep_embeddings(source)
    for what, table in (("entity", model.entity_emb), ("relation", model.relation_emb)):
        if tuple(emb[what].shape) != tuple(table.shape):
            raise MmeaInputError(f"init_from {emb['source']}: {what} embeddings have shape {tuple(emb[what].shape)}, "
                                 f"the {model.registry_name} model needs {tuple(table.shape)}",
                                 hint="pre-train with the same dataset and --dim as the link-prediction model")
    if entity_ids is not None and emb["entity_ids"] is not None \
            and [str(x) for x in emb["entity_ids"]] != [str(x) for x in entity_ids]:
        raise MmeaInputError(f"init_from {emb['source']}: its entities are not this dataset's (ids differ)")
    with torch.no_grad():
        model.entity_emb.copy_(torch.as_tensor(emb["entity"]))
        model.relation_emb.copy_(torch.as_tensor(emb["relation"]))
    model.post_step()
    log.info("linkpred: entity and relation embeddings initialised from %s", emb["source"])
    return emb


def resolve_margin(config: LinkPredConfig) -> float:
    """The loss margin gamma: the configured one, else a per-loss / per-model default."""
    if config.margin is not None:
        return float(config.margin)
    from ..losses import LOSSES

    loss = LOSSES.get(config.loss).registry_name
    if loss == "margin-ranking":
        return 1.0
    if loss == "self-adversarial":
        return 0.0 if config.model.lower() == "distmult" else 9.0
    return 0.0


def _numpy_score_fn(model, device: str, chunk: int = 1 << 18):
    """``(N, 3)`` int64 numpy -> ``(N,)`` float numpy scores, no gradient (for model-aware samplers)."""
    def score(triples: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for i in range(0, len(triples), chunk):
                t = torch.as_tensor(triples[i:i + chunk], device=device)
                out.append(model.score_hrt(t[:, 0], t[:, 1], t[:, 2]).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    return score


def _numpy_replaced_score_fn(model, device: str, chunk_elements: int = 1 << 24):
    """``(batch (B, 3), sides (B, C), replacements (B, C))`` numpy -> ``(B, C)`` scores, no gradient."""
    def score(batch: np.ndarray, sides: np.ndarray, cand: np.ndarray) -> np.ndarray:
        step = max(1, chunk_elements // max(1, cand.shape[1] * model.dim))
        out = []
        with torch.no_grad():
            for i in range(0, len(batch), step):
                b = torch.as_tensor(batch[i:i + step], device=device)
                s = torch.as_tensor(np.ascontiguousarray(sides[i:i + step]), device=device)
                c = torch.as_tensor(np.ascontiguousarray(cand[i:i + step]), device=device)
                out.append(model.score_replaced(b, s, c).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(cand.shape, dtype=np.float32)

    return score


def make_optimizer(params: list, lr: float):
    """Adam, fused into one kernel where this torch supports it (~9x faster steps on CPU than the loop form).

    Embedding gradients are dense, so every step updates the whole table:
    that fixed cost, not the scoring, dominates a CPU step (see the module doc).
    """
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # pragma: no cover - older torch / unsupported device
        return torch.optim.Adam(params, lr=lr)


class LinkPredTraining(RankingValidationModule):
    """Link prediction for :class:`~mmea.training.Trainer`: everything one run trains and reads.

    An epoch is one pass over the training triples in random batches (each: negatives from the
    sampler, shared per batch or per positive, the loss, one Adam step, the model's projection,
    every ``audit_every``-th batch the false-negative audit), ending early when the time budget is
    spent; validation is the filtered MRR on the fixed validation subsample (the initial one is
    recorded as ``valid_at_init``, not a best-state candidate).  The loop state: model, loss
    parameters, optimizer, sampler, batch generator, audit counts.
    """

    kind = "linkpred"

    def __init__(self, dataset, config: LinkPredConfig, device: str, rng):
        from ..losses import make_loss
        from ..sampling import FalseNegativeControl, TripleSet, make_sampler
        from .evaluation import FilterIndex
        from .models import make_lp_model

        self.config, self.device, self.rng = config, device, rng
        graph = dataset.graph
        n_ent, n_rel = graph.num_entities, max(graph.num_relations, 1)
        self.train = np.asarray(dataset.train, dtype=np.int64)
        self.valid = np.asarray(dataset.valid, dtype=np.int64).reshape(-1, 3)
        self.test = np.asarray(dataset.test, dtype=np.int64).reshape(-1, 3)
        if not len(self.train):
            raise MmeaInputError(f"{dataset.name}: no training triples")
        self.margin = margin = resolve_margin(config)
        self.model = make_lp_model(config.model, n_ent, n_rel, config.dim, p_norm=config.p_norm,
                                   normalize_entities=config.normalize_entities, margin=margin).to(device)
        if config.init_from:
            init_embeddings_from(self.model, config.init_from, graph.ids)
        self.loss_fn = make_loss(config.loss, margin=margin, adversarial_temperature=config.adversarial_temperature,
                                 temperature=config.temperature,
                                 learnable_temperature=config.learnable_temperature).to(device)
        control = FalseNegativeControl(filtered=config.filtered, type_constraints=config.type_constraints,
                                       cardinality_aware=config.cardinality_aware)
        self.sampler = sampler = make_sampler(config.sampler, self.train, n_ent, n_rel, control=control,
                                              seed=config.seed, **config.sampler_options)
        if sampler.needs_model:
            sampler.bind(score_fn=_numpy_score_fn(self.model, device), embedding_fn=self.model.entity_embeddings,
                         replaced_score_fn=_numpy_replaced_score_fn(self.model, device))
        self.shared = sampler.supports_shared if config.shared_negatives is None else bool(config.shared_negatives)
        if self.shared and not sampler.supports_shared:
            raise MmeaInputError(f"sampler {sampler.registry_name!r} has no batch-shared mode",
                                 hint="set shared_negatives = false, or use uniform / bernoulli / in-batch")
        self.optimizer = make_optimizer(list(self.model.parameters()) + list(self.loss_fn.parameters()), config.lr)
        everything = np.concatenate([self.train, self.valid, self.test])
        self.filters = FilterIndex(everything, n_ent, n_rel)
        self.audit = TripleSet(everything, n_ent, n_rel) if config.audit_every else None
        self.audit_counts = [0, 0]  # [true triples among returned negatives, negatives audited]
        self.valid_eval = self.valid
        if config.valid_subsample and len(self.valid) > config.valid_subsample:
            self.valid_eval = self.valid[np.sort(np.random.default_rng(config.seed + 1).choice(
                len(self.valid), config.valid_subsample, replace=False))]
        self.init_valid, self.best_metrics, self._last_metrics, self.eval_s = None, None, None, 0.0

    def evaluate(self, triples) -> dict:
        self.model.eval()
        out = filtered_metrics(self.model, triples, self.filters, self.config.eval_batch_size, device=self.device)
        self.model.train()
        return out

    # -- the hooks -------------------------------------------------------------------
    def on_fresh_start(self, trainer) -> None:
        t_eval = time.perf_counter()
        self.init_valid = self.evaluate(self.valid_eval) if len(self.valid_eval) else None
        self.eval_s = time.perf_counter() - t_eval
        return None  # recorded as valid_at_init, not a candidate for the kept state

    def _negative_scores(self, batch_np, batch):
        """``(negative scores (B, K), valid mask (B, K), the sample)`` of one batch."""
        config, device, model = self.config, self.device, self.model
        if self.shared:
            sh = self.sampler.sample_shared(batch_np, config.num_negatives)
            same = sh.head_candidates is sh.tail_candidates
            neg = model.score_shared(batch, torch.as_tensor(sh.sides, device=device),
                                     torch.as_tensor(sh.head_candidates, device=device),
                                     None if same else torch.as_tensor(sh.tail_candidates, device=device))
            return neg, sh.valid, sh
        ns = self.sampler.sample_with_info(batch_np, config.num_negatives)
        neg = model.score_replaced(batch, torch.as_tensor(ns.sides, device=device),
                                   torch.as_tensor(ns.replacements, device=device))  # (B, K)
        return neg, ns.valid, ns

    def train_epoch(self, epoch: int, trainer) -> EpochOutput:
        config, model, train = self.config, self.model, self.train
        self.sampler.on_epoch_start(epoch - 1)
        perm = self.rng.permutation(len(train))
        loss_sum, out_of_time = 0.0, False
        n_batches = math.ceil(len(train) / config.batch_size)
        for bi in range(n_batches):
            batch_np = train[perm[bi * config.batch_size:(bi + 1) * config.batch_size]]
            batch = torch.as_tensor(batch_np, device=self.device)
            neg, mask, sample = self._negative_scores(batch_np, batch)
            pos = model.score_hrt(batch[:, 0], batch[:, 1], batch[:, 2])  # (B,)
            loss = self.loss_fn(pos, neg, None if mask.all() else torch.as_tensor(mask, device=self.device))
            if config.regularization:
                loss = loss + config.regularization * model.regularizer(batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            model.post_step()
            loss_sum += float(loss.detach())
            if self.audit is not None and bi % config.audit_every == 0:
                negs = sample.as_triples(batch_np) if self.shared else sample.negatives  # (B, K, 3)
                hit = self.audit.contains(negs) & mask
                self.audit_counts[0] += int(hit.sum())
                self.audit_counts[1] += int(mask.sum())
            if trainer.budget.out_of_time():
                out_of_time = True
                break
        return EpochOutput(loss_sum / max(bi + 1, 1), {"batches": bi + 1}, out_of_time)

    def postfix(self, record, trainer) -> dict:
        bm = self.best_metrics or {}
        return epoch_postfix(record.loss, bm.get("hits@1"), valid_mrr=bm.get("mrr"))

    def loop_state(self) -> dict:
        return {"model": self.model.state_dict(), "loss": list(self.loss_fn.parameters()),
                "optimizer": self.optimizer.state_dict(), "sampler": self.sampler.state_dict(),
                "rng": self.rng.bit_generator.state, "init_valid": self.init_valid, "best_metrics": self.best_metrics,
                "audit": self.audit_counts, "eval_s": self.eval_s}

    def load_loop_state(self, saved: dict) -> None:
        self.model.load_state_dict(saved["model"])
        with torch.no_grad():  # a learnable temperature, in place: the optimizer holds these tensors
            for p, v in zip(self.loss_fn.parameters(), saved["loss"]):
                p.copy_(v)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.sampler.load_state_dict(saved["sampler"])
        self.rng.bit_generator.state = saved["rng"]
        self.init_valid, self.best_metrics = saved["init_valid"], saved["best_metrics"]
        self.audit_counts, self.eval_s = list(saved["audit"]), saved["eval_s"]


def train_link_prediction(dataset, config: LinkPredConfig, run_dir=None, progress: bool = True, *,
                          checkpoint=None, source: dict | None = None) -> dict:
    """Train, early-stop on validation MRR, evaluate on test; returns the metrics dict.

    The epochs run in the shared :class:`~mmea.training.Trainer` (:class:`LinkPredTraining`):
    validation every ``eval_every`` epochs, ``patience`` validations without a better MRR stop it,
    ``max_minutes`` of wall clock (validation included, the final test excluded) too; the weights of
    the best validation are kept.

    ``checkpoint``: a :class:`~mmea.checkpoint.Checkpointer` (resume, interval, Ctrl-C);
    by default one bound to the run folder that writes ``checkpoint.pt`` every epoch
    (none without a run folder).  ``source``: where the dataset came from
    (``{"dataset", "data_dir"}``), written to ``config.toml`` for ``mmea linkpred --resume``.

    ``run_dir``: a :class:`~mmea.runs.RunDir`, a folder path, or None (nothing
    written).  Writes ``metrics.json`` (same layout as ``mmea align``:
    ``dataset``, ``model``, ``split``, ``test``, ``timings``, ``notes``, plus
    ``valid``, the training record of :meth:`~mmea.training.TrainingResult.as_dict`
    (``stopped``, ``history``, ...), ``sampler_stats`` and ``false_negatives``) and
    ``embeddings.npz`` (``entity``, ``relation``, ``entity_ids``, ``relation_names``).
    """
    from ..config import to_toml
    from ..runs import RunDir, resolve_device, seed_everything

    t_start = time.perf_counter()
    own_run = run_dir is not None and not isinstance(run_dir, RunDir)
    run = RunDir.create(run_dir) if own_run else run_dir
    try:
        if config.num_threads > 0:
            torch.set_num_threads(config.num_threads)
        seed_everything(config.seed)
        torch.manual_seed(config.seed)
        device = resolve_device(config.device)
        rng = np.random.default_rng(config.seed)
        if run is not None and len(dataset.train):
            run.write_config(to_toml({"task": "linkpred", "dataset": dataset.name,
                                      "linkpred": {k: v for k, v in dataclasses.asdict(config).items()
                                                   if not isinstance(v, dict)},
                                      "sampler_options": dict(config.sampler_options),
                                      "source": {k: str(v) for k, v in (source or {}).items() if v is not None}}))
        training = LinkPredTraining(dataset, config, device, rng)
        ckpt = checkpoint if checkpoint is not None else Checkpointer(run.path if run is not None else None)
        trainer = Trainer(max_epochs=config.epochs, eval_every=config.eval_every, patience=config.patience,
                          budget=TimeBudget(config.max_minutes * 60.0), checkpoint=ckpt, monitor="valid_mrr",
                          progress=progress, desc=f"{config.model}/{config.sampler}", unit="epoch")
        result = trainer.fit(training)  # the best weights are back in training.model
        t_test = time.perf_counter()
        test_metrics = training.evaluate(training.test) if len(training.test) else {}
        metrics = _linkpred_metrics(dataset, config, training, result, test_metrics,
                                    {"train_s": result.train_s, "test_s": time.perf_counter() - t_test,
                                     "total_s": time.perf_counter() - t_start}, device)
        if ckpt.enabled:
            metrics["checkpoint"] = ckpt.summary()
        if run is not None:
            _write_embeddings(run, training.model, dataset.graph, metrics)
            run.write_metrics(metrics)
        return metrics
    finally:
        if own_run and run is not None:
            run.close()


def _linkpred_metrics(dataset, config: LinkPredConfig, training: LinkPredTraining, result, test_metrics: dict,
                      times: dict, device: str) -> dict:
    """The ``metrics.json`` of a link-prediction run."""
    epoch_times = [h.time_s for h in result.history]
    stats = training.sampler.stats.as_dict()
    audit = training.audit_counts
    return {
        "dataset": dataset.name,
        "task": "linkpred",
        "model": config.model,
        "sampler": training.sampler.registry_name,
        "loss": training.loss_fn.registry_name,
        "seed": config.seed,
        "device": device,
        "split": {"train": len(training.train), "valid": len(training.valid), "test": len(training.test)},
        "config": {**dataclasses.asdict(config), "margin": training.margin, "shared_negatives": training.shared},
        "test": test_metrics,
        "valid": {"best_epoch": result.best_epoch if result.best_epoch is not None else -1,
                  "subsample": len(training.valid_eval), **(training.best_metrics or {})},
        "valid_at_init": training.init_valid,
        **result.as_dict(),
        "sampler_info": training.sampler.describe(),
        "loss_info": training.loss_fn.describe(),
        "model_info": training.model.describe(),
        "sampler_stats": stats,
        "false_negatives": {
            "filtered": config.filtered,
            "drawn_true_rate_train": stats["false_negative_rate"],
            "returned_true_rate_train": stats["returned_false_negative_rate"],
            "returned_true_rate_all_splits": (audit[0] / audit[1]) if audit[1] else None,
            "audited_negatives": audit[1],
        },
        "timings": {
            "train_s": times["train_s"],
            "epoch_s_mean": float(np.mean(epoch_times)) if epoch_times else 0.0,
            "epoch_s": epoch_times,
            "validation_s": training.eval_s,
            "test_s": times["test_s"],
            "total_s": times["total_s"],
            "load_s": dataset.meta.get("timings", {}).get("load_s"),
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
        },
        "notes": list(dataset.meta.get("notes", [])),
    }


def _write_embeddings(run, model, graph, metrics: dict) -> None:
    """``embeddings.npz`` in the run folder; its path and the run's timings into ``metrics``."""
    ent = model.entity_embeddings()
    atomic_save_npz(run.path / "embeddings.npz", entity=ent, relation=model.relation_embeddings(),
             entity_ids=np.asarray(graph.ids, dtype=object).astype(str),
             relation_names=np.asarray(graph.relations, dtype=object).astype(str))
    metrics["embeddings"] = str(run.path / "embeddings.npz")
    metrics["timings"].update({k: v for k, v in run.timings.items() if k not in metrics["timings"]})
