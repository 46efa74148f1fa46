"""Alignment model base class and registry.

A model reads an :class:`~mmea.data.AlignmentTask` (and the cached
per-modality features) and produces one L2-normalised embedding per entity of
each KG; everything after that — search, CSLS, matching, metrics, export —
is shared (:mod:`mmea.search`, :mod:`mmea.evaluation`).  Each model declares
its parameters as a frozen dataclass ``Config`` (validated from
``[model]`` / ``--set``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..checkpoint import Checkpointer
from ..config import FeatureConfig
from ..registry import Registry

log = logging.getLogger("mmea.models")


@dataclass
class RunContext:
    """What a model gets besides the task: seed, device, features, where to write.

    ``checkpoint``: the run's :class:`~mmea.checkpoint.Checkpointer`.  A model with a
    training loop calls ``ctx.checkpoint.resume_state(name)`` before its first epoch
    and ``ctx.checkpoint.epoch_end(epoch, name, state_fn)`` after each one; the
    pipeline wraps :meth:`AlignmentModel.fit` in ``ctx.checkpoint.guard()`` (Ctrl-C).
    The default is disabled (no run directory): the calls do nothing.
    """

    seed: int = 0
    device: str = "cpu"
    features: FeatureConfig = field(default_factory=FeatureConfig)
    run_dir: Path | None = None
    cache_root: Path | None = None
    progress: bool = False
    notes: list[str] = field(default_factory=list)
    checkpoint: Checkpointer = field(default_factory=Checkpointer)

    def note(self, message: str) -> None:
        """A note for the user, logged and recorded in ``metrics.json``."""
        log.warning("%s", message)
        self.notes.append(message)


class AlignmentModel:
    """Turns an alignment task into entity embeddings of both KGs."""

    @dataclass(frozen=True)
    class Config:
        pass

    uses_gold_for_training: ClassVar[bool] = True

    def __init__(self, config: "AlignmentModel.Config", ctx: RunContext):
        self.config = config
        self.ctx = ctx
        self.info: dict = {}

    def fit(self, task) -> None:  # pragma: no cover - abstract
        """Learn from ``task.train`` (and ``task.valid`` for model selection); never ``task.test``."""
        raise NotImplementedError

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        """``(source (N, d), target (M, d))`` float32, rows L2-normalised (zero rows allowed)."""
        raise NotImplementedError


def load_features(ctx: RunContext, task, modalities, **option_overrides):
    """The task's features from the run's feature store (computed once, cached by fingerprint).

    ``option_overrides`` go to :class:`~mmea.features.FeatureOptions` (e.g. ``name_dim``).
    A fallback of the ``auto`` name encoder is recorded as a run note.
    """
    from ..features import FeatureStore, compute_task_features, feature_options_from_config

    opts = feature_options_from_config(ctx.features, device=ctx.device, seed=ctx.seed, progress=ctx.progress,
                                       **option_overrides)
    store = FeatureStore(ctx.cache_root, enabled=ctx.cache_root is not None)
    feats = compute_task_features(task, list(modalities), opts, store)
    if "names" in feats and feats["names"].info.get("fallback_reason"):
        ctx.note(f"name encoder: {feats['names'].info['fallback_reason']}")
    return feats


MODELS: Registry[AlignmentModel] = Registry("model", suffix="Model")
