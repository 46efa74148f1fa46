"""Alignment model base class and registry.

Data flows one way: task -> features -> model -> embeddings.  A model declares the
features it needs from its config (:meth:`AlignmentModel.feature_requests`: modality ->
:class:`~mmea.modalities.FeatureRequest`); the align pipeline computes them once through the
feature store (:func:`mmea.features.run_features`) and calls ``model.fit(task, features)``.
The model then produces one L2-normalised embedding per entity of each KG; everything after
that — search, CSLS, matching, metrics, export — is shared (:mod:`mmea.search`,
:mod:`mmea.evaluation`).  Each model declares its parameters as a frozen dataclass ``Config``
(validated from ``[model]`` / ``--set``).  Seed logic shared by models is in :mod:`mmea.seeds`;
no model module imports another model module.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..checkpoint import Checkpointer
from ..config import FeatureConfig
from ..modalities import FeatureRequest
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
    """Turns an alignment task (and its features) into entity embeddings of both KGs.

    Template: :meth:`fit` takes the features (computing them only on the compatibility path,
    when called without), then runs the subclass's :meth:`learn`.
    """

    @dataclass(frozen=True)
    class Config:
        pass

    uses_gold_for_training: ClassVar[bool] = True

    def __init__(self, config: "AlignmentModel.Config", ctx: RunContext):
        self.config = config
        self.ctx = ctx
        self.info: dict = {}

    @classmethod
    def feature_requests(cls, config) -> dict[str, FeatureRequest]:
        """Modality -> :class:`~mmea.modalities.FeatureRequest` this model needs with ``config`` (none by default)."""
        return {}

    def fit(self, task, features=None) -> None:
        """Learn from ``task.train`` (and ``task.valid`` for model selection); never ``task.test``.

        ``features``: the :class:`~mmea.features.TaskFeatures` of :meth:`feature_requests`, as the
        align pipeline computes them.  ``None`` is the compatibility path for callers that fit a
        model alone (tests, notebooks): the same features are computed here, through the run's
        feature store.
        """
        if features is None:
            from ..features import run_features  # compatibility path only; the pipeline passes them

            features = run_features(task, self.feature_requests(self.config), self.ctx)
        self.learn(task, features)

    def learn(self, task, features) -> None:  # pragma: no cover - abstract
        """The model's own step of :meth:`fit`: everything after the features are there."""
        raise NotImplementedError

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        """``(source (N, d), target (M, d))`` float32, rows L2-normalised (zero rows allowed)."""
        raise NotImplementedError

    def held_out_embeddings(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The embeddings of a model that never trained on ``task.valid``, when :meth:`embeddings` did (a refit on
        the train and valid links): the confidence calibration is fitted on them, never on links the scored model
        learnt.  None (default): :meth:`embeddings` held the valid links out."""
        return None

    def search_channels(self) -> dict[str, tuple[int, int]]:
        """Column blocks ``{name: (start, stop)}`` of :meth:`embeddings` that an approximate search also
        indexes on their own (:func:`mmea.search.approx.channel_lists`); ``{}``: the whole rows only."""
        return {}

    def search_sparse(self):
        """A sparse similarity term added to the embeddings' inner product in the search
        (:class:`mmea.search.sparse.SparseBlock`: its own exact top-k joins every candidate list, and every
        listed pair is scored ``<e_s, e_t> + weight <u_s, u_t>``); ``None`` (default): the embeddings alone."""
        return None


MODELS: Registry[AlignmentModel] = Registry("model", suffix="Model")
"""Registered alignment models; importing this package registers all of them."""
