"""The engine of one ``mmea align`` run: what :mod:`mmea.pipelines.align` calls for training and search.

``with engine_for(cfg.engine, model_name) as engine:`` yields ``None`` for ``engine.name = "local"`` (the
pipeline runs everything in-process) or a :class:`RayEngine` connected to a Ray cluster for ``"ray"``:

* :meth:`RayEngine.fit`: with ``engine.partitions > 1`` the partitioned label propagation
  (:mod:`mmea.engine.partition`, one Ray task per partition pair); otherwise ``None`` and the model
  trains in-process as usual;
* :meth:`RayEngine.search`: the search stage over sharded indexes (:func:`mmea.engine.search.ray_search_run`);
* :meth:`RayEngine.record`: ``metrics.json`` ``engine`` (engine, Ray version, nodes, workers, shards,
  partitions, the partitioned mode's recall).
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np

from ..errors import MmeaInputError
from .ray_engine import RaySession

__all__ = ["engine_for", "RayEngine", "LOCAL_RECORD", "PARTITIONED_MODELS"]

#: ``metrics.json`` ``engine`` of an in-process run
LOCAL_RECORD = {"name": "local"}
#: the models the partitioned mode can align partition by partition
PARTITIONED_MODELS = ("label-propagation",)


@contextmanager
def engine_for(engine_config, model_name: str):
    """``None`` (local) or a connected :class:`RayEngine`; a cluster started here is shut down on exit."""
    if engine_config.name != "ray":
        if engine_config.partitions > 1 or engine_config.address:
            raise MmeaInputError("engine.partitions and engine.address (--ray-address) need --engine ray")
        yield None
        return
    if engine_config.partitions > 1 and model_name not in PARTITIONED_MODELS:
        raise MmeaInputError(f"engine.partitions = {engine_config.partitions} aligns partitions with "
                             f"{', '.join(PARTITIONED_MODELS)} only, not {model_name!r}",
                             hint="pass --model label-propagation, or engine.partitions = 1")
    t0 = time.perf_counter()
    with RaySession(engine_config) as session:
        yield RayEngine(session, start_s=time.perf_counter() - t0)


class RayEngine:
    """A run's Ray engine (module doc); ``session``: a connected :class:`~mmea.engine.ray_engine.RaySession`."""

    def __init__(self, session: RaySession, start_s: float = 0.0):
        self.session = session
        self.start_s = start_s
        self.partition = None  # the partitioned mode's Partition, once fitted
        self.partition_info: dict = {}

    def fit(self, model, task, features, seed: int = 0):
        """``(src_emb, tgt_emb)`` of the partitioned mode (``engine.partitions > 1``), else ``None``."""
        parts = int(self.session.config.partitions)
        if parts <= 1:
            return None
        from .partition import partitioned_label_propagation

        if getattr(model.config, "overlap_weight", 0) != 0:
            raise MmeaInputError("the partitioned mode (engine.partitions > 1) aligns each part pair on its own and "
                                 "has no anchor overlap term (model.overlap_weight)",
                                 hint="set model.overlap_weight = 0, or engine.partitions = 1 (the Ray engine then "
                                      "keeps the term)")
        names = features["names"] if features is not None and "names" in features else None
        anchors = model.anchors_with_name_seeds(task, features, np.asarray(task.train, np.int64).reshape(-1, 2))
        src, tgt, self.partition, self.partition_info = partitioned_label_propagation(
            task, model.config, parts, self.session, seed=seed,
            names=None if names is None else (names.source, names.target), anchors=anchors)
        model.info.update({"partitioned": self.partition_info})
        return src, tgt

    def approx_lists(self, task, rows, cand, search, progress: bool = False):
        """A :class:`~mmea.engine.search.RayLists` when the run's search is approximate and ranked against the
        test targets (the in-process approximate pass then runs with its lists on the shards: the same
        ranks-from-lists, validation top 2 and one-to-one graph as in-process), else ``None`` (the sharded
        :meth:`search`)."""
        from ..search.csls import _resolve_engine
        from .search import RayLists

        index = _resolve_engine(search.index, len(rows), len(cand), "cpu")
        if index not in ("ivf", "hnsw") or (search.candidates != "test" and len(task.test)):
            return None
        return RayLists(self.session, index, search.index_options(), progress)

    def search(self, task, src_emb, tgt_emb, rows, cand, search, progress: bool = False) -> tuple:
        """``(alignment, ranks, validation scores)`` of the sharded search; with partitions, the recall of the
        test links after the global search is added to :meth:`record`."""
        from .search import ray_search_run

        al, ranks, scores = ray_search_run(task, src_emb, tgt_emb, rows, cand, search, self.session, progress)
        if self.partition is not None and ranks is not None and len(task.test):
            self.partition_info.update(self.partition.recovery(task.test, ranks["src->tgt"][search.method]))
        return al, ranks, scores

    def record(self) -> dict:
        out = {**self.session.record(), "start_s": round(self.start_s, 3)}
        if self.partition_info:
            out["partition"] = self.partition_info
        return out


def same_part_share(parts_src: np.ndarray, parts_tgt: np.ndarray, links: np.ndarray) -> float:
    """Share of ``links (n, 2)`` whose source and target fall in the same part."""
    links = np.asarray(links, np.int64).reshape(-1, 2)
    return float(np.mean(parts_src[links[:, 0]] == parts_tgt[links[:, 1]])) if len(links) else 0.0
