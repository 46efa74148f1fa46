"""Train CLEP on a link-prediction dataset and evaluate link prediction across spaces.

:func:`train_clep` runs: entity texts (description where the dataset has one, else the
name; :func:`entity_texts_for_clep`) -> one frozen encoding of every distinct text
(cached; with ``text_finetune`` none: each step encodes its batch's texts through the
trainable sentence-transformers model, and every evaluation re-encodes all texts with
the current weights) -> epochs of batches of training pairs ``(e_head, r, d_tail)`` with the
symmetric contrastive loss (:mod:`mmea.clep.math`), in-batch duplicates masked ->
every ``eval_every`` epochs the filtered MRR across spaces on a fixed validation
subsample (early stopping; test triples are never read before the end) -> the test
evaluation, the cosine distribution of correct vs incorrect pairs, and the run files.

**Training pairs.**  Each training triple ``(h, r, t)`` gives ``(h, r, d(t))`` and its
inverse ``(t, r^-1, d(h))`` (relation id ``r + R``), so that head prediction
``(?, r, t)`` is the tail prediction ``(t, r^-1, ?)``.  With ``identity_relation``
each entity with a text also gives ``(e, self, d(e))`` (relation id ``2 R``): then
``x~_g(e) = MLP_g(h_e + rho_self)`` is trained to sit next to the entity's own text,
which is the entity's graph embedding :mod:`mmea.clep.mention` links mentions to.

**Link prediction across spaces.**  ``f_s(h, r, t) = cos(MLP_g(h + rho_r), MLP_t(x_t(d(t))))``
ranks every entity as the tail of ``(h, r, ?)`` (and, through ``r^-1``, as the head of
``(?, r, t)``) under the filtered protocol of :mod:`mmea.linkpred.evaluation`
(realistic ties: entities sharing a text tie).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated

import numpy as np
import torch

from pydantic import Field

from ..config import FiniteFloat, NonNegInt, PositiveFloat, PositiveInt, Seed, build_dataclass
from ..errors import MmeaInputError
from ..progress import epoch_postfix
from ..runs import atomic_save_npz
from ..training import EpochOutput, RankingValidationModule, TimeBudget, Trainer, Validation

log = logging.getLogger("mmea.clep")

__all__ = ["ClepConfig", "clep_config_from_dict", "entity_texts_for_clep", "read_entity_text_file",
           "training_pairs", "run_epoch", "train_clep", "ClepTraining", "CrossSpaceScorer", "cross_space_metrics",
           "entity_graph_embeddings", "make_clep_optimizer", "CLEP_FILES"]

#: the files a pretrain-clep run directory holds (a text_finetune run also has the folder ``text_encoder/``)
CLEP_FILES = ("config.toml", "metrics.json", "model.pt", "embeddings.npz", "text_encoder.json",
              "cosine_pairs.npz", "cosine_hist.png")


@dataclass(frozen=True)
class ClepConfig:
    """Everything a CLEP pre-training run needs besides the data.

    Attributes:
        graph_encoder: ``embedding`` or ``rgcn`` (:data:`~mmea.clep.encoders.GRAPH_ENCODERS`).
        text_encoder: ``offline`` (char n-grams) or a sentence-transformers hub name / folder (frozen
            unless ``text_finetune``).
        text_finetune: train the sentence-transformers model too (not ``offline``: it has no weights);
            the fine-tuned model is saved in ``RUN/text_encoder/``.
        text_lr: Adam learning rate of the fine-tuned transformer's parameters (``lr`` for the rest).
        text_max_length: tokens per text when fine-tuning (0: the model's own ``max_seq_length``).
        text_source: ``auto`` (description, else name), ``name`` or ``description``.
        descriptions_file: an ``entity2textlong``-style file (``<entity-id>\\t<text>`` per line) to use as
            the descriptions instead of the dataset's own.
        dim: graph embedding size ``d`` (entity and relation tables).
        proj_dim: size ``p`` of the shared projected space.
        text_dim: output size of the offline text encoder's projection.
        hidden: hidden width of ``MLP_g`` / ``MLP_t`` (0: ``max(dim, proj_dim)``).
        epochs, batch_size, lr: Adam on every parameter, ``tau`` included.
        init_tau: initial ``tau`` (``m_ij = cos * e^tau``); CLIP's ``log(1 / 0.07)``.
        identity_relation: add ``(e, self, d(e))`` pairs (see the module docstring).
        mask_duplicates: mask in-batch duplicates (same tail text, or same ``(h, r)``).
        num_bases, layers: R-GCN basis count and depth; max_neighbors: in-edges sampled per node in a
            training batch (0: all; see :class:`~mmea.clep.encoders.RgcnGraphEncoder`).
        eval_every, valid_subsample, patience: early stopping on the validation MRR across spaces.
        seed, device, num_threads: reproducibility (``num_threads`` torch CPU threads).
        max_minutes: wall-clock budget of the training loop (validation included).
        eval_batch_size: queries per ``(B, E)`` score block.
        cosine_samples: test triples whose correct / incorrect pair cosines are recorded.
    """

    graph_encoder: str = "embedding"
    text_encoder: str = "offline"
    text_finetune: bool = False
    text_lr: PositiveFloat = 2e-5
    text_max_length: NonNegInt = 0
    text_source: str = "auto"
    descriptions_file: str = ""
    dim: PositiveInt = 200
    proj_dim: PositiveInt = 128
    text_dim: PositiveInt = 300
    hidden: NonNegInt = 0
    epochs: PositiveInt = 30
    batch_size: Annotated[int, Field(ge=2)] = 1024
    lr: PositiveFloat = 0.002
    init_tau: FiniteFloat = 2.6592600
    identity_relation: bool = True
    mask_duplicates: bool = True
    num_bases: PositiveInt = 4
    layers: PositiveInt = 1
    max_neighbors: NonNegInt = 32
    eval_every: PositiveInt = 1
    valid_subsample: NonNegInt = 1000
    patience: NonNegInt = 3
    seed: Seed = 0
    device: str = "cpu"
    max_minutes: PositiveFloat = 6.0
    num_threads: NonNegInt = 1
    eval_batch_size: PositiveInt = 256
    cosine_samples: NonNegInt = 5000

    def __post_init__(self) -> None:
        from ..config import require_at_least

        require_at_least(self, ("dim", "proj_dim", "text_dim", "epochs", "batch_size", "eval_every",
                                "eval_batch_size", "num_bases", "layers"), where="clep")
        if self.batch_size < 2:
            raise MmeaInputError("clep: batch_size must be >= 2 (in-batch negatives)")
        if self.lr <= 0 or self.max_minutes <= 0:
            raise MmeaInputError(f"clep: lr and max_minutes must be > 0 (got {self.lr}, {self.max_minutes})")
        if self.patience < 0 or self.valid_subsample < 0 or self.hidden < 0 or self.num_threads < 0 \
                or self.cosine_samples < 0 or self.max_neighbors < 0:
            raise MmeaInputError("clep: patience, valid_subsample, hidden, num_threads, cosine_samples, "
                                 "max_neighbors must be >= 0")
        if self.text_source not in ("auto", "name", "description"):
            raise MmeaInputError(f"clep: text_source must be auto, name or description, got {self.text_source!r}")
        from . import GRAPH_ENCODER_NAMES, OFFLINE_TEXT_ENCODER_NAMES

        if self.graph_encoder.lower() not in GRAPH_ENCODER_NAMES:
            raise MmeaInputError(f"clep: unknown graph encoder {self.graph_encoder!r}; valid choices: "
                                 f"{', '.join(GRAPH_ENCODER_NAMES)}")
        if not isinstance(self.text_finetune, bool):
            raise MmeaInputError(f"clep: text_finetune must be true or false, got {self.text_finetune!r}")
        if self.text_lr <= 0 or self.text_max_length < 0:
            raise MmeaInputError(f"clep: text_lr must be > 0 and text_max_length >= 0 (got {self.text_lr}, "
                                 f"{self.text_max_length})")
        text_key = self.text_encoder.strip().lower().replace("_", "-")
        if self.text_finetune and text_key in OFFLINE_TEXT_ENCODER_NAMES:
            raise MmeaInputError(f"clep: text_finetune needs a sentence-transformers text encoder; the offline "
                                 f"n-gram encoder ({self.text_encoder!r}) has no weights to fine-tune",
                                 hint="pass --text-encoder MODEL (a sentence-transformers hub name or folder on "
                                      "disk), or drop text_finetune")
        if self.text_max_length and not self.text_finetune:
            raise MmeaInputError("clep: text_max_length applies only with text_finetune = true")


def clep_config_from_dict(values: dict, where: str = "clep") -> ClepConfig:
    """A :class:`ClepConfig` from a dict, every key, type and declared range checked (NaN refused);
    an unknown key is an error that lists the valid ones, a bad value names its key (``where.key``)."""
    valid = {f.name for f in fields(ClepConfig)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise MmeaInputError(f"unknown CLEP option(s): {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
    return build_dataclass(ClepConfig, values, where)


# ------------------------------------------------------------------------------------------------ texts
def read_entity_text_file(path: str | Path, ids: list[str]) -> list[str]:
    """Per-entity text from an ``entity2textlong``-style file: ``<entity-id>\\t<text>`` per line.

    A line without a tab or with an empty id is a
    :class:`~mmea.errors.DataFormatError` naming the file, the line number and
    the text; entities the file does not mention get ``""``.
    """
    from ..data.loaders.linkpred import read_text
    from ..errors import DataFormatError

    path = Path(path)
    if not path.is_file():
        raise MmeaInputError(f"{path}: descriptions file not found")
    table: dict[str, str] = {}
    for i, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        parts = line.split("\t", 1)
        if len(parts) != 2 or not parts[0].strip():
            raise DataFormatError(path, i, line, "expected `<entity-id><TAB><text>`")
        table.setdefault(parts[0].strip(), parts[1].strip())
    return [table.get(k, "") for k in ids]


def entity_texts_for_clep(graph, source: str = "auto", descriptions_file: str | Path | None = None
                          ) -> tuple[list[str], dict]:
    """The text of each entity and where it came from: ``(texts, counts)``.

    ``auto``: the description where the entity has a non-empty one, else its
    name, else the URI / id local name; ``name``: the name chain only;
    ``description``: descriptions only (an entity without one is an error).
    """
    from ..encoders.names import entity_texts

    descriptions = read_entity_text_file(descriptions_file, graph.ids) if descriptions_file else graph.descriptions
    names = entity_texts(graph, "name", strict=False)
    if source == "description" and descriptions is None:
        raise MmeaInputError(f"{graph.name}: text_source = description, but the dataset has no descriptions",
                             hint="give descriptions_file = an entity2textlong-style file, or text_source = auto")
    texts, counts = [], {"description": 0, "name": 0, "empty": 0}
    for i in range(graph.num_entities):
        d = (descriptions[i] or "").strip() if descriptions is not None and source != "name" else ""
        if d:
            texts.append(d)
            counts["description"] += 1
        elif source == "description":
            raise MmeaInputError(f"{graph.name}: entity {graph.ids[i]!r} has no description (text_source = "
                                 "description)", hint="use text_source = auto to fall back to names")
        elif names[i]:
            texts.append(names[i])
            counts["name"] += 1
        else:
            texts.append("")
            counts["empty"] += 1
    return texts, counts


def training_pairs(triples: np.ndarray, num_entities: int, num_relations: int, identity_relation: bool = True,
                   has_text: np.ndarray | None = None) -> np.ndarray:
    """``(N, 3)`` ``(head, relation, tail)`` pairs: triples, inverses ``(t, r + R, h)``, identities ``(e, 2R, e)``."""
    from .math import with_inverses

    pairs = [with_inverses(triples, num_relations)]
    if identity_relation:
        ents = np.arange(num_entities, dtype=np.int64)
        if has_text is not None:
            ents = ents[has_text]
        pairs.append(np.stack([ents, np.full_like(ents, 2 * num_relations), ents], 1))
    return np.concatenate(pairs)


# --------------------------------------------------------------------------------------------- training
def _build_model(config: ClepConfig, n_ent: int, n_rel: int, text_dim: int, train: np.ndarray,
                 text_encoder=None):
    from .encoders import GRAPH_ENCODERS, ClepModel
    from .math import with_inverses

    cls = GRAPH_ENCODERS.get(config.graph_encoder)
    n_rel_total = 2 * n_rel + (1 if config.identity_relation else 0)
    kw = {}
    if cls.registry_name == "rgcn":
        kw = dict(triples=with_inverses(train, n_rel), num_bases=config.num_bases, layers=config.layers,
                  edge_relations=2 * n_rel, max_neighbors=config.max_neighbors)
    graph = cls(n_ent, n_rel_total, config.dim, **kw)
    return ClepModel(graph, text_dim, config.proj_dim, config.hidden or None, config.init_tau,
                     text_encoder=text_encoder)


def make_clep_optimizer(model, config: ClepConfig):
    """Adam: every parameter at ``lr``, a fine-tuned text encoder's in a second group at ``text_lr``."""
    from ..linkpred.training import make_optimizer

    if model.text_encoder is None:
        return make_optimizer(list(model.parameters()), config.lr)
    return make_optimizer([{"params": model.head_parameters(), "lr": config.lr},
                           {"params": list(model.text_encoder.parameters()), "lr": config.text_lr}], config.lr)


def run_epoch(model, optimizer, pairs: np.ndarray, x_text, text_ids, batch_size: int, rng,
              mask_duplicates: bool = True, deadline: float | None = None, texts=None) -> tuple[float, int, bool]:
    """One pass over ``pairs (N, 3)`` in random batches: ``(mean loss, batches, out of time)``.

    Each batch: ``tid = text_ids[tails]``, ``M = logits(heads, rels, x_t)``
    ``(B, B)`` with ``x_t = x_text[tid]`` (frozen cache) or, when ``model.text_encoder``
    trains, the batch's distinct ``texts[tid]`` encoded with gradients
    (:meth:`~mmea.clep.encoders.ClepModel.text_inputs`; ``x_text`` may then be None),
    the duplicate mask, the symmetric loss, one Adam step, then CLIP's clamp ``e^tau <= 100``.
    """
    from .math import duplicate_mask, symmetric_contrastive_loss

    device = model.logit_scale.device
    n_rel_total = model.graph.num_relations
    perm = rng.permutation(len(pairs))
    loss_sum, done, out_of_time = 0.0, 0, False
    for i in range(0, len(pairs), batch_size):
        b = torch.as_tensor(pairs[perm[i:i + batch_size]], device=device)  # (B, 3)
        if len(b) < 2:
            continue
        tid = text_ids[b[:, 2]]  # (B,)
        logits = model.logits(b[:, 0], b[:, 1], model.text_inputs(tid, x_text, texts))  # (B, B)
        mask = duplicate_mask(tid, b[:, 0] * n_rel_total + b[:, 1]) if mask_duplicates else None
        loss = symmetric_contrastive_loss(logits, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(max=math.log(100.0))
        loss_sum += float(loss.detach())
        done += 1
        if deadline is not None and time.perf_counter() > deadline:
            out_of_time = True
            break
    return loss_sum / max(done, 1), done, out_of_time


class CrossSpaceScorer:
    """``score_all_tails(h, r)`` / ``score_all_heads(r, t)`` across spaces, the entity states computed once.

    ``texts (E, p)`` are the projected texts of every entity (rows of entities
    sharing a text are equal).  Head prediction uses the inverse relation.
    """

    def __init__(self, model, text_feats, text_ids, num_relations: int):
        f = torch.nn.functional.normalize
        with torch.no_grad():
            self.states = model.graph.entity_states()  # (E, d)
            self.rel = model.graph.relation_emb  # (R', d)
            self.texts = f(model.text_side(text_feats), dim=-1)[text_ids]  # (E, p)
        self.model, self.num_relations = model, num_relations

    def graph_side(self, h, r):
        with torch.no_grad():
            return self.model.mlp_g(self.states[h] + self.rel[r])  # (B, p)

    def score_all_tails(self, h, r):
        from .math import cross_space_scores

        return cross_space_scores(self.graph_side(h, r), self.texts)  # (B, E)

    def score_all_heads(self, r, t):
        return self.score_all_tails(t, r + self.num_relations)


def cross_space_metrics(scorer: CrossSpaceScorer, triples, filters, batch_size: int = 256,
                        device: str = "cpu") -> dict:
    """Filtered MR / MRR / Hits@1/3/10 across spaces (head and tail pooled; breakdowns under ``head`` / ``tail``)."""
    from ..linkpred.evaluation import filtered_ranks, metrics_from_ranks

    hr, tr = filtered_ranks(scorer.score_all_tails, scorer.score_all_heads, triples, filters, batch_size,
                            device=device)
    out = metrics_from_ranks(np.concatenate([hr, tr]))
    out["head"] = metrics_from_ranks(hr)
    out["tail"] = metrics_from_ranks(tr)
    out["tie"] = "realistic"
    return out


def cosine_distribution(scorer: CrossSpaceScorer, triples: np.ndarray, text_ids: np.ndarray, seed: int):
    """Cosines of correct ``(h, r, d(t))`` pairs and of incorrect ones ``(h, r, d(t'))``.

    ``t'`` is a uniformly drawn entity whose text differs from ``d(t)``; a few such
    pairs may be true triples absent from the data.  Returns ``(correct (N,), incorrect (N,))``.
    """
    rng = np.random.default_rng(seed)
    n_ent = len(text_ids)
    h, r, t = (torch.as_tensor(triples[:, j]) for j in range(3))
    wrong = rng.integers(0, n_ent, len(triples))
    clash = text_ids[wrong] == text_ids[triples[:, 2]]
    while clash.any():
        wrong[clash] = rng.integers(0, n_ent, int(clash.sum()))
        clash = text_ids[wrong] == text_ids[triples[:, 2]]
    g = torch.nn.functional.normalize(scorer.graph_side(h, r), dim=-1)  # (N, p)
    correct = (g * scorer.texts[t]).sum(-1).numpy()
    incorrect = (g * scorer.texts[torch.as_tensor(wrong)]).sum(-1).numpy()
    return correct.astype(np.float32), incorrect.astype(np.float32)


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(correct cosine > incorrect cosine) (ties count 1/2): the ROC AUC, by ranks."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _histogram_png(path: Path, correct: np.ndarray, incorrect: np.ndarray, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(-1, 1, 81)
    ax.hist(incorrect, bins=bins, alpha=0.6, density=True, label=f"incorrect (mean {incorrect.mean():.3f})")
    ax.hist(correct, bins=bins, alpha=0.6, density=True, label=f"correct (mean {correct.mean():.3f})")
    ax.set_xlabel("cos(x~_g(h, r), x~_t(d(t)))")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class ClepTraining(RankingValidationModule):
    """CLEP for :class:`~mmea.training.Trainer`: an epoch is :func:`run_epoch` over the training pairs
    (ending early when the time budget is spent), validation the filtered MRR across spaces on the
    fixed validation subsample; the untrained model's validation (``valid_at_init``) is a candidate
    for the kept state, as epoch 0.  The loop state: model, optimizer, batch generator."""

    kind = "clep"

    def __init__(self, model, optimizer, pairs, x_text, uniq_texts, text_ids_t, filters, valid_eval, config, rng,
                 n_rel: int, device: str):
        self.model, self.optimizer, self.pairs, self.x_text = model, optimizer, pairs, x_text
        self.uniq_texts, self.text_ids_t, self.filters, self.valid_eval = uniq_texts, text_ids_t, filters, valid_eval
        self.config, self.rng, self.n_rel, self.device = config, rng, n_rel, device
        self.init_valid, self.best_metrics, self._last_metrics, self.eval_s = None, None, None, 0.0

    def evaluate(self, triples) -> dict:
        self.model.eval()  # the fine-tuned text encoder too: every text re-encoded with the current weights
        scorer = CrossSpaceScorer(self.model, self.model.text_features(self.x_text, self.uniq_texts), self.text_ids_t,
                                  self.n_rel)
        out = cross_space_metrics(scorer, triples, self.filters, self.config.eval_batch_size, self.device)
        self.model.train()
        return out

    def on_fresh_start(self, trainer) -> Validation | None:
        if not len(self.valid_eval):
            return None
        t_eval = time.perf_counter()
        self.init_valid = self._last_metrics = self.evaluate(self.valid_eval)
        self.eval_s += time.perf_counter() - t_eval
        return Validation(self.init_valid["mrr"])

    def train_epoch(self, epoch: int, trainer) -> EpochOutput:
        c, budget = self.config, trainer.budget
        self.model.train()
        loss, batches, out_of_time = run_epoch(self.model, self.optimizer, self.pairs, self.x_text, self.text_ids_t,
                                               c.batch_size, self.rng, c.mask_duplicates,
                                               deadline=budget.start + budget.seconds if budget.seconds else None,
                                               texts=self.uniq_texts)
        return EpochOutput(loss, {"batches": batches, "tau": float(self.model.logit_scale.detach())}, out_of_time)

    def postfix(self, record, trainer) -> dict:
        return epoch_postfix(record.loss, valid_mrr=record.extra.get("valid_mrr"),
                             best_mrr=trainer.best.value if trainer.best.value is not None else -1.0)

    def loop_state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "rng": self.rng.bit_generator.state, "init_valid": self.init_valid, "best_metrics": self.best_metrics,
                "eval_s": self.eval_s}

    def load_loop_state(self, saved: dict) -> None:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.rng.bit_generator.state = saved["rng"]
        self.init_valid, self.best_metrics, self.eval_s = saved["init_valid"], saved["best_metrics"], saved["eval_s"]


def _clep_texts(graph, config: ClepConfig, device: str, notes: list) -> dict:
    """Entity texts, their distinct strings and ids, the text encoder and (frozen) the cached encodings."""
    from .encoders import FineTunedSentenceTransformer, make_text_encoder

    t0 = time.perf_counter()
    texts, text_counts = entity_texts_for_clep(graph, config.text_source, config.descriptions_file or None)
    uniq, text_ids = np.unique(np.asarray(texts, dtype=object).astype(str), return_inverse=True)
    uniq_texts = [str(t) for t in uniq]
    if config.text_finetune:  # no cache: the texts go through the trainable model at every step
        encoder = FineTunedSentenceTransformer(config.text_encoder, config.text_max_length, device=device)
        x_text, text_dim = None, encoder.dim
    else:
        encoder = make_text_encoder(config.text_encoder, dim=config.text_dim, seed=config.seed, device=device)
        x_text = torch.as_tensor(encoder.fit_encode(uniq_texts), device=device)  # (U, d_text), frozen cache
        text_dim = x_text.shape[1]
    encode_s = time.perf_counter() - t0
    log.info("clep: %d entities, %d distinct texts (%s), encoded in %.1f s", graph.num_entities, len(uniq),
             text_counts, encode_s)
    if not text_counts["description"]:
        notes.append(f"{graph.name} has no entity descriptions here: the text of each entity is its name "
                     f"({text_counts['name']} names, {text_counts['empty']} empty)")
    return {"texts": texts, "counts": text_counts, "uniq": uniq_texts, "ids": text_ids.astype(np.int64),
            "encoder": encoder, "x_text": x_text, "dim": text_dim, "encode_s": encode_s}


def train_clep(dataset, config: ClepConfig, run_dir=None, progress: bool = True, *, checkpoint=None,
               source: dict | None = None) -> dict:
    """Pre-train CLEP on ``dataset`` (a :class:`~mmea.data.LinkPredictionDataset`); returns the metrics dict.

    The epochs run in the shared :class:`~mmea.training.Trainer` (:class:`ClepTraining`): validation
    every ``eval_every`` epochs, ``patience`` validations without a better MRR stop it, ``max_minutes``
    of wall clock (validation included) too; the weights of the best validation are kept.
    With ``run_dir`` (a :class:`~mmea.runs.RunDir` or a path) the run files of
    :data:`CLEP_FILES` are written there.  ``checkpoint``: a :class:`~mmea.checkpoint.Checkpointer`
    (resume, interval, Ctrl-C; default none); ``source``: where the dataset came from
    (``{"dataset", "data_dir"}``), written to ``config.toml`` for ``mmea pretrain-clep --resume``.
    """
    from ..config import to_toml
    from ..linkpred.evaluation import FilterIndex
    from ..runs import RunDir, resolve_device, seed_everything

    t_start = time.perf_counter()
    own_run = run_dir is not None and not isinstance(run_dir, RunDir)
    run = RunDir.create(run_dir) if own_run else run_dir
    threads_before = torch.get_num_threads()
    try:
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        device = resolve_device(config.device)
        seed_everything(config.seed)
        torch.manual_seed(config.seed)
        rng = np.random.default_rng(config.seed)
        graph = dataset.graph
        n_ent, n_rel = graph.num_entities, graph.num_relations
        train = np.asarray(dataset.train, dtype=np.int64)
        valid = np.asarray(dataset.valid, dtype=np.int64).reshape(-1, 3)
        test = np.asarray(dataset.test, dtype=np.int64).reshape(-1, 3)
        if len(train) < 2:
            raise MmeaInputError(f"{dataset.name}: CLEP needs at least 2 training triples, got {len(train)}")
        if run is not None:
            run.write_config(to_toml({"task": "clep", "dataset": dataset.name, "clep": dataclasses.asdict(config),
                                      "source": {k: str(v) for k, v in (source or {}).items() if v is not None}}))
        notes = list(dataset.meta.get("notes", []))
        tx = _clep_texts(graph, config, device, notes)

        has_text = np.asarray([bool(t) for t in tx["texts"]])
        pairs = training_pairs(train, n_ent, n_rel, config.identity_relation, has_text)
        model = _build_model(config, n_ent, n_rel, tx["dim"], train,
                             text_encoder=tx["encoder"] if config.text_finetune else None).to(device)
        optimizer = make_clep_optimizer(model, config)
        text_ids_t = torch.as_tensor(tx["ids"], device=device)
        filters = FilterIndex(np.concatenate([train, valid, test]), n_ent, n_rel)
        valid_eval = valid
        if config.valid_subsample and len(valid) > config.valid_subsample:
            valid_eval = valid[np.sort(np.random.default_rng(config.seed + 1).choice(
                len(valid), config.valid_subsample, replace=False))]
        training = ClepTraining(model, optimizer, pairs, tx["x_text"], tx["uniq"], text_ids_t, filters, valid_eval,
                                config, rng, n_rel, device)
        trainer = Trainer(max_epochs=config.epochs, eval_every=config.eval_every, patience=config.patience,
                          budget=TimeBudget(config.max_minutes * 60.0), monitor="valid_mrr", progress=progress,
                          checkpoint=checkpoint, desc=f"clep/{config.graph_encoder}", unit="epoch")
        result = trainer.fit(training)  # the best weights are back in the model
        model.eval()

        # ------------------------------------------------------------- test, cosine distribution
        t_test = time.perf_counter()
        test_metrics = training.evaluate(test) if len(test) else {}
        model.eval()
        test_s = time.perf_counter() - t_test
        scorer = CrossSpaceScorer(model, model.text_features(tx["x_text"], tx["uniq"]), text_ids_t, n_rel)
        cosine, correct, incorrect = _cosine_summary(scorer, test, valid, tx, config)
        metrics = _clep_metrics(dataset, config, model, tx, training, result, test_metrics, cosine, notes,
                                {"split": {"train": len(train), "valid": len(valid), "test": len(test)},
                                 "pairs": int(len(pairs)), "device": device, "test_s": test_s,
                                 "total_s": time.perf_counter() - t_start})
        if run is not None:
            _write_run_files(run.path, model, tx["encoder"], scorer, graph, tx["ids"], n_rel, config, metrics,
                             correct, incorrect)
            metrics["timings"].update({k: v for k, v in run.timings.items() if k not in metrics["timings"]})
            run.write_metrics(metrics)
        return metrics
    finally:
        torch.set_num_threads(threads_before)
        if own_run and run is not None:
            run.close()


def _cosine_summary(scorer, test: np.ndarray, valid: np.ndarray, tx: dict, config: ClepConfig):
    """``(summary, correct cosines, incorrect cosines)`` on up to ``cosine_samples`` test (else valid)
    triples; ``({}, None, None)`` when there is nothing to compare."""
    cos_rows = test if len(test) else valid
    if config.cosine_samples and len(cos_rows) > config.cosine_samples:
        cos_rows = cos_rows[np.sort(np.random.default_rng(config.seed + 2).choice(
            len(cos_rows), config.cosine_samples, replace=False))]
    if not len(cos_rows) or len(tx["uniq"]) <= 1:
        return {}, None, None
    correct, incorrect = cosine_distribution(scorer, cos_rows, tx["ids"], config.seed + 3)
    return ({"split": "test" if len(test) else "valid", "pairs": int(len(correct)),
             "mean_correct": float(correct.mean()), "std_correct": float(correct.std()),
             "mean_incorrect": float(incorrect.mean()), "std_incorrect": float(incorrect.std()),
             "gap": float(correct.mean() - incorrect.mean()), "auc": _auc(correct, incorrect)}, correct, incorrect)


def _clep_metrics(dataset, config: ClepConfig, model, tx: dict, training: ClepTraining, result, test_metrics: dict,
                  cosine: dict, notes: list, run: dict) -> dict:
    """The ``metrics.json`` of a CLEP run (``run``: split sizes, pair count, device, test and total seconds)."""
    epoch_times = [h.time_s for h in result.history]
    steps = sum(h.extra["batches"] for h in result.history)
    encoder = tx["encoder"]
    return {
        "dataset": dataset.name,
        "task": "clep",
        "graph_encoder": model.graph.registry_name,
        "text_encoder": encoder.describe(),
        "text_finetune": bool(config.text_finetune),
        "seed": config.seed,
        "device": run["device"],
        "split": run["split"],
        "texts": {**tx["counts"], "distinct": int(len(tx["uniq"])), "source": config.text_source},
        "training_pairs": run["pairs"],
        "config": dataclasses.asdict(config),
        "test": test_metrics,
        "valid": {"best_epoch": result.best_epoch if result.best_epoch is not None else 0,
                  "subsample": len(training.valid_eval), **(training.best_metrics or {})},
        "valid_at_init": training.init_valid,
        **result.as_dict(),
        "tau": float(model.logit_scale.detach()),
        "cosine": cosine,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "text_encoder_parameters": int(sum(p.numel() for p in encoder.parameters())) if config.text_finetune else 0,
        "timings": {
            "encode_texts_s": tx["encode_s"],
            "train_s": result.train_s,
            "epoch_s_mean": float(np.mean(epoch_times)) if epoch_times else 0.0,
            "epoch_s": epoch_times,
            "step_s_mean": float(sum(epoch_times) / steps) if steps else 0.0,
            "validation_s": training.eval_s,
            "test_s": run["test_s"],
            "total_s": run["total_s"],
            "load_s": dataset.meta.get("timings", {}).get("load_s"),
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
        },
        "notes": notes,
    }


def mention_relation(num_relations: int, identity_relation: bool) -> int | None:
    """The relation whose ``rho`` makes an entity's graph embedding: ``self`` (``2 R``), else None (the mean)."""
    return 2 * num_relations if identity_relation else None


def entity_graph_embeddings(model, num_relations: int, identity_relation: bool):
    """``x~_g(e) (E, p)``: ``MLP_g(h_e + rho_self)``, or ``MLP_g(h_e + mean_r rho_r)`` without the identity relation."""
    with torch.no_grad():
        states = model.graph.entity_states()  # (E, d)
        rel = mention_relation(num_relations, identity_relation)
        rho = model.graph.relation_emb[rel] if rel is not None else model.graph.relation_emb[:2 * num_relations].mean(0)
        return torch.nn.functional.normalize(model.mlp_g(states + rho), dim=-1)  # (E, p)


def _write_run_files(folder: Path, model, encoder, scorer, graph, text_ids, n_rel, config, metrics, correct,
                     incorrect) -> None:
    # a fine-tuned text encoder is saved by encoder.save (RUN/text_encoder/), not duplicated in model.pt
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("text_encoder.")}
    torch.save({"state_dict": state,
                "meta": {"graph_encoder": model.graph.registry_name, "num_entities": model.graph.num_entities,
                         "num_relations": n_rel, "dim": config.dim, "proj_dim": config.proj_dim,
                         "identity_relation": config.identity_relation,
                         "text_finetune": bool(config.text_finetune)}}, folder / "model.pt")
    encoder.save(folder)
    with torch.no_grad():
        states = model.graph.entity_states().detach().cpu().numpy()
        rel = model.graph.relation_emb.detach().cpu().numpy()
        ent_graph = entity_graph_embeddings(model, n_rel, config.identity_relation).cpu().numpy()
    atomic_save_npz(folder / "embeddings.npz", entity=states.astype(np.float32), relation=rel[:n_rel],
             relation_inverse=rel[n_rel:2 * n_rel], relation_self=rel[2 * n_rel:],
             entity_graph=ent_graph.astype(np.float32), entity_text=scorer.texts.cpu().numpy(),
             text_ids=text_ids, entity_ids=np.asarray(graph.ids, dtype=object).astype(str),
             entity_names=np.asarray([n or "" for n in graph.names], dtype=object).astype(str),
             relation_names=np.asarray(graph.relations, dtype=object).astype(str))
    metrics["embeddings"] = str(folder / "embeddings.npz")
    metrics["checkpoint"] = str(folder / "model.pt")
    if correct is not None:
        atomic_save_npz(folder / "cosine_pairs.npz", correct=correct, incorrect=incorrect)
        _histogram_png(folder / "cosine_hist.png", correct, incorrect,
                       f"CLEP {model.graph.registry_name} on {metrics['dataset']}: correct vs incorrect pairs")
        metrics["cosine"]["arrays"] = str(folder / "cosine_pairs.npz")
        metrics["cosine"]["histogram"] = str(folder / "cosine_hist.png")
