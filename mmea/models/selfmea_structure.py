"""SelfMEA's structure modality: which encoder builds it, and the relational graph encoder's input.

Two structure encoders (``model.structure``):

``neighbour-names``  the encoder of the SelfMEA paper (Liu et al., IEEE/CAA JAS 2022, sec. III-B): the
                     name embeddings ``x`` of the 1..H-hop neighbours, ``P^h x`` with ``P = D^-1 A``
                     (SGC form), each hop with a learned low-rank residual.  Name-derived: with names off
                     it cannot run.
``relational``       the relational graph encoder of :mod:`mmea.models.relational_gnn` (Dual-AMN / RREA:
                     Mao et al., WWW 2021 / CIKM 2020): learned entity and relation embeddings refined by
                     relation-aware attention over both KGs' union graph, trained with Dual-AMN's
                     normalised hard-sample loss on SelfMEA's initial pool (train links, or pseudo-seeds
                     when names are on and there is no train link), its best epoch chosen by Hits@1 of
                     SelfMEA's selection links.  Its eval-mode output ``G (n, 2 (L + 1) dim)`` is the
                     modality's input: ``F_S = normalize(G + (G U_S) V_S)`` (``V_S = 0`` at start), learned
                     in SelfMEA's loop with the NCA and RSM losses like every other modality.  It reads
                     relation triples and the pool only: no name enters it.
``auto``             ``relational`` when the run has no usable names (``features.names = off``,
                     ``--modalities`` without ``names``, or no entity with a name), else
                     ``neighbour-names``.

With ``structure_lp = a`` the relational modality also holds the pool's relational label propagation ``L``
(nothing trained): ``F_S = normalize([sqrt(1 - a) F_G, sqrt(a) L])``
(:meth:`~mmea.models.selfmea.SelfMEAModel.set_structure_lp`).

With the relational encoder, SelfMEA (:mod:`mmea.models.selfmea`) keeps ``structure_holdout`` (30%) of the
initial pairs out of the pre-training and learns its fusion weights from those pairs only (the encoder fits
its own training pairs almost exactly), and chooses the structure modality's fusion weight on the selection
links (the NCA loss on the fused embedding rewards absolute cosines, not ranking, and left it at 0.03).

Pre-trained then fused, not trained jointly: one step of the relational encoder runs the whole union
graph (forward and backward, about 3 s on DBP15k's 370k edges on 2 CPU cores at ``dim = 64``), and
SelfMEA's loop takes one step per pool batch of 512 (about 8 batches per epoch at 30% seeds, 23 after
the expansions, 16 epochs: some 250 steps).  Joint training would either multiply SelfMEA's time by about
six or, in the same time, give the encoder far fewer updates than its own loop, whose large batches
(2,048 pairs) and hard negatives mined over every entity are what make it learn (Dual-AMN).  Pre-training
keeps that loop and its validation-selected best state; SelfMEA then learns only the residual and the
fusion weight of a strong, fixed structure input.
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import MmeaInputError

log = logging.getLogger("mmea.models")

STRUCTURE_ENCODERS = ("auto", "relational", "neighbour-names")


def check_structure(kind: str) -> str:
    """``kind`` if it names a structure encoder, else an input error listing the valid ones."""
    if kind not in STRUCTURE_ENCODERS:
        raise MmeaInputError(f"selfmea: structure must be one of {', '.join(STRUCTURE_ENCODERS)}, got {kind!r}")
    return kind


def resolve_structure(kind: str, names_usable: bool) -> str:
    """The encoder that runs: ``auto`` -> ``relational`` without usable names, ``neighbour-names`` with them."""
    check_structure(kind)
    if kind != "auto":
        return kind
    return "neighbour-names" if names_usable else "relational"


def relational_structure_input(task, pool: np.ndarray, select: np.ndarray, config, *, seed: int, device: str,
                               progress: bool = False) -> tuple[np.ndarray, np.ndarray, dict]:
    """Pre-train the relational graph encoder on ``pool (P, 2)``; ``(source (N, D), target (M, D), info)``.

    :func:`~mmea.models.relational_gnn.pretrain_relational_gnn` (a copy of ``task`` with ``pool`` as its train
    links, ``select`` as its valid links and no test link; its own forked torch generator state, so that the
    same encoder epoch gives the same SelfMEA run).  ``config`` is SelfMEA's: ``structure_dim``,
    ``structure_layers``, ``structure_epochs``, ``structure_minutes``.  The rows are L2-normalised eval-mode
    outputs (no dropout).
    """
    from .relational_gnn import RelationalGnnModel, pretrain_relational_gnn

    gcfg = RelationalGnnModel.Config(dim=config.structure_dim, layers=config.structure_layers,
                                     epochs=config.structure_epochs, max_minutes=config.structure_minutes,
                                     iterations=0)
    gnn, seconds = pretrain_relational_gnn(task, pool, select, gcfg, seed=seed, device=device, progress=progress,
                                           label="selfmea structure")
    src, tgt = gnn.embeddings()  # (N, D), (M, D) L2-normalised
    gi = gnn.info
    info = {"encoder": "relational", "trained_on": {"pool": int(len(pool)), "selection": int(len(select))},
            "dim": int(src.shape[1]), "layers": config.structure_layers, "epochs_run": gi.get("epochs_run"),
            "best_epoch": gi.get("best_epoch"), "best_valid": gi.get("best_valid"), "stopped": gi.get("stopped"),
            "train_s": round(seconds, 2)}
    log.info("selfmea: relational structure encoder pre-trained in %.1f s (selection Hits@1 %s)",
             info["train_s"], info["best_valid"])
    return np.ascontiguousarray(src, np.float32), np.ascontiguousarray(tgt, np.float32), info
