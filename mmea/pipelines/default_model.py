"""The default model of ``mmea align`` (no ``--model``, ``model.name = "auto"``): the strongest model for
what the task has, chosen once the task is loaded, printed with its reason in one line and recorded in
``metrics.json`` (``model_choice``) and ``run.log``.

The rule (:func:`choose_model`, the one place the choice is made):

1. **Do the names agree across the two KGs?**  :func:`name_signal` ranks, by the cosine of the names
   alone (the run's name encoder), every train / valid link's source against the targets of the
   train / valid links, and compares the Hits@1 with chance, ``1 / |candidates|``.  The test links
   are never read.  Names *carry signal* when ``H@1 >= max(MIN_HITS, MIN_LIFT x chance)``; names that
   exist but do not match across the KGs (targets named by opaque ids such as Wikidata Q-numbers or
   Freebase mids, or no names at all) do not.  ``features.names = "on"`` / ``"off"`` skips the
   measurement; a task without train / valid links cannot be measured and keeps its names.
2. **Names agree** -> :data:`NAME_MODEL` (``selfmea``), with seed links and KGs of at most
   :data:`STRUCTURE_MAX_ENTITIES` entities with :data:`NAME_SETTINGS` (its structure modality from the
   relational graph encoder: 0.9383 / 0.9705 / 0.9885 H@1 on DBP15k zh / ja / fr at 30% seeds, against
   0.9225 / 0.9531 / 0.9818 with the neighbours' names and 0.9043 / 0.9438 / 0.9773 for ``propagation``,
   ``results/selfmea_dbp15k.md``), up to :data:`JOINED_MAX_ENTITIES` with :data:`NAME_JOINED_SETTINGS` (name
   pseudo-seeds in the pool, the pool's relational label propagation joined: 0.954 / 0.974 / 0.990, 3 seeds);
   without train links it runs self-supervised from pseudo-seeds of mutual
   nearest names (0.9325 / 0.9610 / 0.9857), the neighbour-names structure.  With seed links and a KG of more
   than :data:`STRUCTURE_MAX_ENTITIES` entities: :data:`LARGE_STRUCTURE_MODEL` with names and
   :data:`LARGE_NAME_SETTINGS` (the path measured at 100K-1M entities, docs/scale.md).
3. **No name signal** -> names are switched off (``features.names = "off"``, with a printed note: no
   name-derived feature enters the model) and :data:`STRUCTURE_MODEL` (the iterative relational GNN)
   runs on the relation graph and the seed links: joined by the relational label propagation of its pairs
   (:data:`JOINED_SETTINGS`) while both KGs have at most :data:`JOINED_MAX_ENTITIES` entities, alone
   (:data:`STRUCTURE_SETTINGS`) above that; a KG of more than :data:`STRUCTURE_MAX_ENTITIES` entities gets
   :data:`LARGE_STRUCTURE_MODEL` (label propagation, the path measured at 100K-1M entities).  Without seed links
   either there is nothing to align on: an input error.

The measurement reads the names to decide; a run that then switches them off records
``names_used: false`` (no name entered the model).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np

from ..config import RunConfig
from ..errors import MmeaInputError

log = logging.getLogger("mmea.align")

#: ``model.name`` of the default rule (what ``mmea align`` runs without ``--model``)
AUTO = "auto"
#: the strongest model with names that agree (see the module docstring for the measured table)
NAME_MODEL = "selfmea"
#: its settings with seed links (up to STRUCTURE_MAX_ENTITIES): the relational structure encoder (about 70 s
#: more a DBP15k run: 292 s against 226 s)
NAME_SETTINGS = {"structure": "relational"}
#: ... and up to JOINED_MAX_ENTITIES: the final pool joined by its relational label propagation, the pool widened by
#: name pseudo-seeds (the ``selfmea-seeded-relational-lp-ns`` rows of ``results/selfmea_dbp15k.md``, 3 seeds; 5-6
#: minutes and 8-10 GiB a DBP15k run)
NAME_JOINED_SETTINGS = {**NAME_SETTINGS, "lp_weight": -1.0, "name_seeds": True}
#: THE one place the structure (no-name) model is chosen: the relational GNN beats label propagation on
#: every no-name cell measured (DBP15k 30%: 0.712 / 0.706 / 0.734 against 0.591 / 0.590 / 0.606, iterative 0.795 /
#: 0.787 / 0.828, ``results/noname_dbp15k.md``; FB15K-DB15K at 20 / 50 / 80%: 0.529 / 0.710 / 0.793 against
#: 0.325 / 0.539 / 0.683, iterative 0.639 / 0.751 / 0.815 against 0.528 / 0.655 / 0.723, seed 0,
#: ``results/noname_mmkg.md``, which also has FB15K-YAGO15K).
STRUCTURE_MODEL = "relational-gnn"
#: its settings: the iterative rows of ``pipelines/noname_mmkg.toml`` (up to 60 epochs, valid-selected with
#: patience, in 6 minutes; then 3 rounds of mutual nearest pairs, 3 epochs each; 9 minutes in all)
STRUCTURE_SETTINGS = {"epochs": 60, "first_minutes": 6.0, "max_minutes": 9.0, "iterations": 3,
                      "iteration_epochs": 3}
#: the same joined by the relational label propagation of its pairs (the rounds propose from the joined
#: embedding, its weight chosen on the valid links; 12 minutes in all): the ``gnn-it-lp`` rows, 3 points over
#: the GNN alone on every DBP15k cell (0.824 / 0.823 / 0.859 against 0.795 / 0.787 / 0.828, 3 seeds,
#: ``results/noname_dbp15k.md``) and 4.0 on FB15K-DB15K at 20% (0.679 against 0.639, seed 0,
#: ``results/noname_mmkg.md``)
JOINED_SETTINGS = {**STRUCTURE_SETTINGS, "max_minutes": 12.0, "lp_weight": -1.0, "lp_proposals": True}
#: the joined rows are 8,960 floats wide (768 of the GNN, 8,192 of the propagation): the bench process peaked at
#: 7.7-8.7 GiB on DBP15k (19-20K entities a KG); above this many entities in either KG the GNN runs alone
JOINED_MAX_ENTITIES = 25_000
#: above this many entities in either KG the full-graph GNN is slow (the sampled GNN took 17.5 minutes
#: for H@1 0.51 on the 100K synthetic pair, ``results/scale_gnn.md``): label propagation runs instead
STRUCTURE_MAX_ENTITIES = 50_000
LARGE_STRUCTURE_MODEL = "label-propagation"
#: with names that agree and seed links above STRUCTURE_MAX_ENTITIES: label propagation with its names block, name
#: pseudo-seeds, the exact anchor overlap and one overlap round, and the search without a whole-row index (row
#: ``lp-names-overlap-it`` of ``results/scale.md``, synthetic pairs, 30% seeds, seed 0: H@1 0.9485 at 100K in
#: 4 minutes, 0.9433 at 1M in 17 minutes and 14.1 GiB on 2 cores); SelfMEA was never run at that size
LARGE_NAME_SETTINGS = {"anchor_dim": 64, "name_weight": -1.0, "name_seeds": True, "overlap_weight": -1.0,
                       "overlap_weights": [0.1, 0.2, 0.3, 0.5, 0.8], "overlap_rounds": 1}
LARGE_NAME_SEARCH = {"whole_rows": "off"}
#: without names above STRUCTURE_MAX_ENTITIES: label propagation's 2 views x 3 hops of ``anchor_dim``-wide float32
#: blocks a side are kept under this many bytes (:func:`large_anchor_dim`)
LARGE_BLOCK_BYTES = 4 * 2 ** 30
#: names carry signal when their Hits@1 on the train / valid links reaches both of these
MIN_HITS = 0.05
MIN_LIFT = 10.0


def large_anchor_dim(size: int, default: int = 1024) -> int:
    """Label propagation's ``anchor_dim`` for the no-name default on a KG of ``size`` entities: ``default`` while
    its six ``(size, anchor_dim)`` float32 blocks fit :data:`LARGE_BLOCK_BYTES`, else the largest power of two that
    does (at least 32): 1024 at 100K entities, 128 at 1M, where 1024 would need 24 GiB a side.  A memory rule,
    not an accuracy one (the no-name path was not run above 100K)."""
    fit = LARGE_BLOCK_BYTES // (6 * 4 * max(int(size), 1))
    return default if fit >= default else max(32, 1 << max(int(fit).bit_length() - 1, 0))


@dataclass(frozen=True)
class NameSignal:
    """How well names alone align the train / valid links: ``hits_at_1`` against ``chance``."""

    links: int
    candidates: int
    hits_at_1: float
    encoder: str | None

    @property
    def chance(self) -> float:
        return 1.0 / max(self.candidates, 1)

    @property
    def agrees(self) -> bool:
        return self.hits_at_1 >= max(MIN_HITS, MIN_LIFT * self.chance)

    def text(self) -> str:
        return (f"names alone align {self.hits_at_1:.3f} of the {self.links} train/valid links at H@1 "
                f"(chance {self.chance:.4f}; signal needs >= {max(MIN_HITS, MIN_LIFT * self.chance):.3f})")

    def as_dict(self) -> dict:
        return {"links": self.links, "candidates": self.candidates, "hits@1": round(self.hits_at_1, 4),
                "chance": round(self.chance, 6), "threshold": round(max(MIN_HITS, MIN_LIFT * self.chance), 6),
                "agrees": self.agrees, "encoder": self.encoder}


def name_signal(task, ctx) -> NameSignal | None:
    """Hits@1 of names alone over the train + valid links (sources against those links' targets), or
    ``None`` without such links.  The names are encoded as :data:`NAME_MODEL` requests them (the run's
    name encoder and cache, so the model reuses them); never a test link."""
    from ..features import run_features
    from ..models import MODELS
    from ..search.knn import knn

    links = np.concatenate([np.asarray(task.train).reshape(-1, 2), np.asarray(task.valid).reshape(-1, 2)])
    if not len(links):
        return None
    cls = MODELS.get(NAME_MODEL)
    names = run_features(task, {"names": cls.feature_requests(cls.Config())["names"]}, ctx)["names"]
    cand = np.unique(links[:, 1])  # (c,)

    def unit(x):  # (r, d) float32 unit rows (a row without a name stays zero)
        x = np.array(x, dtype=np.float32)
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)

    _, ids = knn(unit(names.source[links[:, 0]]), unit(names.target[cand]), 1)  # (L, 1) blockwise
    hits = float(np.mean(cand[ids[:, 0]] == links[:, 1]))
    return NameSignal(int(len(links)), int(len(cand)), hits, names.info.get("encoder"))


@dataclass(frozen=True)
class ModelChoice:
    """The default rule's outcome: the config to run, and why (``record`` goes to ``metrics.json``)."""

    config: RunConfig
    reason: str
    signal: NameSignal | None

    def record(self) -> dict:
        settings = {k: v for k, v in self.config.model.items() if k != "name"}
        return {"rule": "default (no --model)", "model": self.config.model_name, "settings": settings,
                "names": self.config.features.names, "reason": self.reason,
                "name_signal": self.signal.as_dict() if self.signal is not None else None}


def choose_model(task, cfg: RunConfig, ctx) -> ModelChoice:
    """The default rule of the module docstring for a loaded ``task``; ``ctx`` encodes the names."""
    has_seeds = len(task.train) > 0
    pref = cfg.features.names
    signal = name_signal(task, ctx) if pref == "auto" else None
    if pref == "off":
        names_ok, why = False, "names are off (features.names = off)"
    elif pref == "on":
        names_ok, why = True, "names on (features.names = on)"
    elif signal is None:
        names_ok, why = True, "no train/valid links to measure name agreement on, names kept"
    else:
        names_ok, why = signal.agrees, signal.text()
    size = max(task.source.num_entities, task.target.num_entities)
    if names_ok and has_seeds and size > STRUCTURE_MAX_ENTITIES:
        return ModelChoice(_with(cfg, LARGE_STRUCTURE_MODEL, pref, LARGE_NAME_SETTINGS, LARGE_NAME_SEARCH),
                           f"{why}: {LARGE_STRUCTURE_MODEL} with names (a KG of {size:,} entities, over the "
                           f"{STRUCTURE_MAX_ENTITIES:,} of the name model's full-graph encoders: names block, name "
                           "pseudo-seeds, exact anchor overlap with one bootstrapping round, search.whole_rows = off)",
                           signal)
    if names_ok:
        mode = "seeded" if has_seeds else "self-supervised (pseudo-seeds from mutual nearest names)"
        relational = has_seeds and size <= STRUCTURE_MAX_ENTITIES
        joined = relational and size <= JOINED_MAX_ENTITIES
        how = ((", structure from the relational graph encoder" if relational else "")
               + (", name pseudo-seeds in the pool, joined by the relational label propagation of the pool"
                  if joined else ""))
        settings = NAME_JOINED_SETTINGS if joined else NAME_SETTINGS if relational else None
        return ModelChoice(_with(cfg, NAME_MODEL, pref, settings),
                           f"{why}: {NAME_MODEL}, the strongest model with names ({mode}{how})", signal)
    if not has_seeds:
        raise MmeaInputError(f"no seed links and no usable names ({why}): nothing to align on",
                             hint="give seed links (--links, --seed-ratio > 0) or names that match across the KGs")
    off = why if pref == "off" else f"{why}: names carry no signal, so they are switched off"
    if size > STRUCTURE_MAX_ENTITIES:
        model, settings = LARGE_STRUCTURE_MODEL, {"anchor_dim": large_anchor_dim(size)}
        how = (f"{model} (a KG of {size:,} entities, over the {STRUCTURE_MAX_ENTITIES:,} of the full-graph GNN; "
               f"anchor_dim {settings['anchor_dim']})")
    else:
        joined = size <= JOINED_MAX_ENTITIES
        model, settings = STRUCTURE_MODEL, JOINED_SETTINGS if joined else STRUCTURE_SETTINGS
        how = (f"{model} (iterative: {settings['iterations']} rounds of mutual nearest pairs"
               + (", joined by the relational label propagation of its pairs" if joined else
                  f", without the label-propagation join above {JOINED_MAX_ENTITIES:,} entities a KG")
               + f", {settings['max_minutes']:g}-minute budget)")
    return ModelChoice(_with(cfg, model, "off", settings),
                       f"{off}; {how} on the relation graph and the {len(task.train)} seed links", signal)


def _with(cfg: RunConfig, model: str, names: str, settings: dict | None = None, search: dict | None = None
          ) -> RunConfig:
    return dataclasses.replace(cfg, model={"name": model, **(settings or {})},
                               features=dataclasses.replace(cfg.features, names=names),
                               search=dataclasses.replace(cfg.search, **(search or {})))
