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

import numpy as np

from ..errors import MmeaInputError
from ..progress import epoch_postfix, progress_bar, progress_enabled

log = logging.getLogger("mmea.linkpred")

__all__ = ["LinkPredConfig", "train_link_prediction", "resolve_margin", "config_from_dict", "make_optimizer",
           "init_embeddings_from"]


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
    dim: int = 200
    epochs: int = 300
    batch_size: int = 4096
    lr: float = 0.003
    num_negatives: int = 256
    sampler: str = "uniform"
    sampler_options: dict = field(default_factory=dict)
    shared_negatives: bool | None = None
    loss: str = "self-adversarial"
    margin: float | None = None
    adversarial_temperature: float = 1.0
    temperature: float = 0.1
    learnable_temperature: bool = False
    regularization: float = 0.0
    p_norm: int = 2
    normalize_entities: bool = False
    filtered: bool = True
    type_constraints: bool = False
    cardinality_aware: bool = False
    eval_every: int = 2
    valid_subsample: int = 1000
    patience: int = 5
    seed: int = 0
    device: str = "cpu"
    max_minutes: float = 25.0
    num_threads: int = 0
    eval_batch_size: int = 256
    audit_every: int = 10
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


def config_from_dict(values: dict) -> LinkPredConfig:
    """A :class:`LinkPredConfig` from a dict; an unknown key is an error that lists the valid ones."""
    valid = {f.name for f in fields(LinkPredConfig)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise MmeaInputError(f"unknown link-prediction option(s): {', '.join(unknown)}; "
                             f"valid: {', '.join(sorted(valid))}")
    return LinkPredConfig(**values)


def init_embeddings_from(model, source: str, entity_ids=None) -> dict:
    """Copy pre-trained ``entity`` / ``relation`` tables (a CLEP run or ``.npz``) into ``model``'s embeddings.

    The tables must have the model's shapes (same entities, relations and
    ``dim``; RotatE's complex entities have ``2 dim`` columns), else a clear
    error names both shapes; with ``entity_ids`` saved, they must list the
    dataset's entities in the same order.  TransE's unit-norm projection is
    applied afterwards when the model uses it.
    """
    import torch

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
    import torch

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
    import torch

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
    import torch

    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # pragma: no cover - older torch / unsupported device
        return torch.optim.Adam(params, lr=lr)


def train_link_prediction(dataset, config: LinkPredConfig, run_dir=None, progress: bool = True, *,
                          checkpoint=None, source: dict | None = None) -> dict:
    """Train, early-stop on validation MRR, evaluate on test; returns the metrics dict.

    ``checkpoint``: a :class:`~mmea.checkpoint.Checkpointer` (resume, interval, Ctrl-C);
    by default one bound to the run folder that writes ``checkpoint.pt`` every epoch
    (none without a run folder).  ``source``: where the dataset came from
    (``{"dataset", "data_dir"}``), written to ``config.toml`` for ``mmea linkpred --resume``.

    ``run_dir``: a :class:`~mmea.runs.RunDir`, a folder path, or None (nothing
    written).  Writes ``metrics.json`` (same layout as ``mmea align``:
    ``dataset``, ``model``, ``split``, ``test``, ``timings``, ``notes``, plus
    ``valid``, ``history``, ``sampler_stats`` and ``false_negatives``) and
    ``embeddings.npz`` (``entity``, ``relation``, ``entity_ids``, ``relation_names``).
    """
    import torch

    from ..checkpoint import Checkpointer
    from ..config import to_toml
    from ..losses import make_loss
    from ..runs import RunDir, resolve_device, seed_everything
    from ..sampling import FalseNegativeControl, TripleSet, make_sampler
    from .evaluation import FilterIndex, filtered_metrics
    from .models import make_lp_model

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
        graph = dataset.graph
        n_ent, n_rel = graph.num_entities, max(graph.num_relations, 1)
        train = np.asarray(dataset.train, dtype=np.int64)
        valid = np.asarray(dataset.valid, dtype=np.int64).reshape(-1, 3)
        test = np.asarray(dataset.test, dtype=np.int64).reshape(-1, 3)
        if not len(train):
            raise MmeaInputError(f"{dataset.name}: no training triples")
        if run is not None:
            run.write_config(to_toml({"task": "linkpred", "dataset": dataset.name,
                                      "linkpred": {k: v for k, v in dataclasses.asdict(config).items()
                                                   if not isinstance(v, dict)},
                                      "sampler_options": dict(config.sampler_options),
                                      "source": {k: str(v) for k, v in (source or {}).items() if v is not None}}))

        margin = resolve_margin(config)
        model = make_lp_model(config.model, n_ent, n_rel, config.dim, p_norm=config.p_norm,
                              normalize_entities=config.normalize_entities, margin=margin).to(device)
        if config.init_from:
            init_embeddings_from(model, config.init_from, graph.ids)
        loss_fn = make_loss(config.loss, margin=margin, adversarial_temperature=config.adversarial_temperature,
                            temperature=config.temperature,
                            learnable_temperature=config.learnable_temperature).to(device)
        control = FalseNegativeControl(filtered=config.filtered, type_constraints=config.type_constraints,
                                       cardinality_aware=config.cardinality_aware)
        sampler = make_sampler(config.sampler, train, n_ent, n_rel, control=control, seed=config.seed,
                               **config.sampler_options)
        if sampler.needs_model:
            sampler.bind(score_fn=_numpy_score_fn(model, device), embedding_fn=model.entity_embeddings,
                         replaced_score_fn=_numpy_replaced_score_fn(model, device))
        shared = sampler.supports_shared if config.shared_negatives is None else bool(config.shared_negatives)
        if shared and not sampler.supports_shared:
            raise MmeaInputError(f"sampler {sampler.registry_name!r} has no batch-shared mode",
                                 hint="set shared_negatives = false, or use uniform / bernoulli / in-batch")
        optimizer = make_optimizer(list(model.parameters()) + list(loss_fn.parameters()), config.lr)

        everything = np.concatenate([train, valid, test])
        filters = FilterIndex(everything, n_ent, n_rel)
        audit = TripleSet(everything, n_ent, n_rel) if config.audit_every else None
        audit_counts = [0, 0]  # [true triples among returned negatives, negatives audited]
        if config.valid_subsample and len(valid) > config.valid_subsample:
            valid_eval = valid[np.sort(np.random.default_rng(config.seed + 1).choice(
                len(valid), config.valid_subsample, replace=False))]
        else:
            valid_eval = valid

        def evaluate(triples):
            model.eval()
            out = filtered_metrics(model, triples, filters, config.eval_batch_size, device=device)
            model.train()
            return out

        budget_s = config.max_minutes * 60.0
        history: list[dict] = []
        best = {"mrr": -1.0, "epoch": -1, "metrics": None, "state": None}
        evals_without_gain, stopped = 0, "epochs"
        ckpt = checkpoint if checkpoint is not None else Checkpointer(run.path if run is not None else None)
        saved = ckpt.resume_state("linkpred")
        t_eval = time.perf_counter()
        if saved is None:
            start, init_valid = 0, evaluate(valid_eval) if len(valid_eval) else None
            eval_s = time.perf_counter() - t_eval
        else:  # continue after the saved epoch
            model.load_state_dict(saved["model"])
            with torch.no_grad():  # a learnable temperature, in place: the optimizer holds these tensors
                for p, v in zip(loss_fn.parameters(), saved["loss"]):
                    p.copy_(v)
            optimizer.load_state_dict(saved["optimizer"])
            sampler.load_state_dict(saved["sampler"])
            rng.bit_generator.state = saved["rng"]
            history, best, init_valid = saved["history"], saved["best"], saved["init_valid"]
            evals_without_gain, stopped, audit_counts = saved["evals_without_gain"], saved["stopped"], saved["audit"]
            eval_s = saved["eval_s"]
            start = saved["epoch"] if stopped == "epochs" else config.epochs
        t_train = time.perf_counter() - (saved["train_s"] if saved is not None else 0.0)

        def loop_state() -> dict:
            """Everything the epochs change: what a checkpoint must hold to continue exactly."""
            return {"model": model.state_dict(), "loss": list(loss_fn.parameters()), "optimizer": optimizer.state_dict(),
                    "sampler": sampler.state_dict(), "rng": rng.bit_generator.state, "history": history,
                    "best": best, "init_valid": init_valid, "evals_without_gain": evals_without_gain,
                    "stopped": stopped, "audit": audit_counts, "eval_s": eval_s,
                    "train_s": time.perf_counter() - t_train}

        bar = None
        if progress_enabled(progress):
            bar = progress_bar(total=config.epochs, initial=start, desc=f"{config.model}/{config.sampler}",
                               unit="epoch")
        n_batches = math.ceil(len(train) / config.batch_size)
        out_of_time = False
        for epoch in range(start, config.epochs):
            t_epoch = time.perf_counter()
            sampler.on_epoch_start(epoch)
            perm = rng.permutation(len(train))
            loss_sum = 0.0
            for bi in range(n_batches):
                batch_np = train[perm[bi * config.batch_size:(bi + 1) * config.batch_size]]
                batch = torch.as_tensor(batch_np, device=device)
                if shared:
                    sh = sampler.sample_shared(batch_np, config.num_negatives)
                    same = sh.head_candidates is sh.tail_candidates
                    neg = model.score_shared(batch, torch.as_tensor(sh.sides, device=device),
                                             torch.as_tensor(sh.head_candidates, device=device),
                                             None if same else torch.as_tensor(sh.tail_candidates, device=device))
                    mask = sh.valid
                else:
                    ns = sampler.sample_with_info(batch_np, config.num_negatives)
                    neg = model.score_replaced(batch, torch.as_tensor(ns.sides, device=device),
                                               torch.as_tensor(ns.replacements, device=device))  # (B, K)
                    mask = ns.valid
                pos = model.score_hrt(batch[:, 0], batch[:, 1], batch[:, 2])  # (B,)
                mask_t = None if mask.all() else torch.as_tensor(mask, device=device)
                loss = loss_fn(pos, neg, mask_t)
                if config.regularization:
                    loss = loss + config.regularization * model.regularizer(batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                model.post_step()
                loss_sum += float(loss.detach())
                if audit is not None and bi % config.audit_every == 0:
                    negs = sh.as_triples(batch_np) if shared else ns.negatives  # (B, K, 3)
                    hit = audit.contains(negs) & mask
                    audit_counts[0] += int(hit.sum())
                    audit_counts[1] += int(mask.sum())
                if time.perf_counter() - t_train > budget_s:
                    out_of_time = True
                    break
            rec = {"epoch": epoch + 1, "loss": loss_sum / max(bi + 1, 1), "time_s": time.perf_counter() - t_epoch,
                   "batches": bi + 1}
            if len(valid_eval) and ((epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs
                                    or out_of_time):
                t_eval = time.perf_counter()
                vm = evaluate(valid_eval)
                eval_s += time.perf_counter() - t_eval
                rec["valid_mrr"] = vm["mrr"]
                rec["valid_hits@10"] = vm["hits@10"]
                if vm["mrr"] > best["mrr"]:
                    best.update(mrr=vm["mrr"], epoch=epoch + 1, metrics=vm,
                                state={k: v.detach().clone() for k, v in model.state_dict().items()})
                    evals_without_gain = 0
                else:
                    evals_without_gain += 1
            history.append(rec)
            log.info("epoch %d: loss %.4f, %.1f s%s", epoch + 1, rec["loss"], rec["time_s"],
                     f", valid MRR {rec['valid_mrr']:.4f}" if "valid_mrr" in rec else "")
            if bar is not None:
                bar.update(1)
                bm = best["metrics"] or {}
                bar.set_postfix(epoch_postfix(rec["loss"], bm.get("hits@1"), valid_mrr=bm.get("mrr")))
            if out_of_time:
                stopped = "time budget"
            elif "valid_mrr" in rec and config.patience and evals_without_gain >= config.patience:
                stopped = "early stopping"
            ckpt.epoch_end(epoch + 1, "linkpred", loop_state, last=stopped != "epochs" or epoch + 1 == config.epochs)
            if stopped != "epochs":
                break
        if bar is not None:
            bar.close()
        train_s = time.perf_counter() - t_train
        if best["state"] is not None:
            model.load_state_dict(best["state"])
        t_test = time.perf_counter()
        test_metrics = evaluate(test) if len(test) else {}
        test_s = time.perf_counter() - t_test

        epoch_times = [h["time_s"] for h in history]
        stats = sampler.stats.as_dict()
        metrics = {
            "dataset": dataset.name,
            "task": "linkpred",
            "model": config.model,
            "sampler": sampler.registry_name,
            "loss": loss_fn.registry_name,
            "seed": config.seed,
            "device": device,
            "split": {"train": len(train), "valid": len(valid), "test": len(test)},
            "config": {**dataclasses.asdict(config), "margin": margin, "shared_negatives": shared},
            "test": test_metrics,
            "valid": {"best_epoch": best["epoch"], "subsample": len(valid_eval), **(best["metrics"] or {})},
            "valid_at_init": init_valid,
            "history": history,
            "epochs_run": len(history),
            "stopped": stopped,
            "sampler_info": sampler.describe(),
            "loss_info": loss_fn.describe(),
            "model_info": model.describe(),
            "sampler_stats": stats,
            "false_negatives": {
                "filtered": config.filtered,
                "drawn_true_rate_train": stats["false_negative_rate"],
                "returned_true_rate_train": stats["returned_false_negative_rate"],
                "returned_true_rate_all_splits": (audit_counts[0] / audit_counts[1]) if audit_counts[1] else None,
                "audited_negatives": audit_counts[1],
            },
            "timings": {
                "train_s": train_s,
                "epoch_s_mean": float(np.mean(epoch_times)) if epoch_times else 0.0,
                "epoch_s": epoch_times,
                "validation_s": eval_s,
                "test_s": test_s,
                "total_s": time.perf_counter() - t_start,
                "load_s": dataset.meta.get("timings", {}).get("load_s"),
                "threads": torch.get_num_threads(),
                "cpu_count": os.cpu_count(),
            },
            "notes": list(dataset.meta.get("notes", [])),
        }
        if ckpt.enabled:
            metrics["checkpoint"] = ckpt.summary()
        if run is not None:
            ent = model.entity_embeddings()
            np.savez(run.path / "embeddings.npz", entity=ent, relation=model.relation_embeddings(),
                     entity_ids=np.asarray(graph.ids, dtype=object).astype(str),
                     relation_names=np.asarray(graph.relations, dtype=object).astype(str))
            metrics["embeddings"] = str(run.path / "embeddings.npz")
            metrics["timings"].update({k: v for k, v in run.timings.items() if k not in metrics["timings"]})
            run.write_metrics(metrics)
        return metrics
    finally:
        if own_run and run is not None:
            run.close()
