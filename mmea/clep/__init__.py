"""CLEP: Contrastive Language-Entity Pre-training (Papaluca et al., "Contrastive Language-Entity
Pre-training for Richer Knowledge Graph Embedding"), as ``mmea pretrain-clep`` and ``mmea link-mention``.

A graph encoder and a text encoder (frozen, or a fine-tuned sentence-transformers model with
``text_finetune``), each followed by a trainable MLP, are trained so that
``x~_g = MLP_g(h + rho)`` of a triple's ``(head, relation)`` lands next to
``x~_t = MLP_t(TextEncoder(d(tail)))`` of its tail's text, with a symmetric in-batch
contrastive loss (docs/clep.md).

* :mod:`.math` -- the logits, the symmetric loss, the duplicate mask, the cross-space score;
* :mod:`.encoders` -- graph encoders (``embedding``, ``rgcn``), frozen and fine-tuned text encoders, :class:`ClepModel`;
* :mod:`.training` -- :class:`ClepConfig`, :func:`train_clep`, link prediction across spaces;
* :mod:`.mention` -- :func:`link_mention` (zero-shot mention linking) and :func:`load_clep_embeddings`
  (the ``init_from`` of link prediction, SelfMEA's ``pretrain = "clep"``).

This package imports no torch until a function runs.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["run_pretrain_clep_cli", "GRAPH_ENCODER_NAMES", "ClepConfig", "train_clep", "link_mention",
           "finetune_comparison"]

#: the registered graph encoder names, without importing torch (checked against the registry in the tests)
GRAPH_ENCODER_NAMES = ("embedding", "r-gcn", "rgcn")
#: the names of the offline n-gram text encoder (no weights, so no ``text_finetune``); checked in the tests
OFFLINE_TEXT_ENCODER_NAMES = ("offline", "char-ngram", "char")


def __getattr__(name):  # lazy re-exports (PEP 562): keep `import mmea.clep` torch-free
    if name in ("ClepConfig", "train_clep", "clep_config_from_dict"):
        from . import training

        return getattr(training, name)
    if name in ("link_mention", "load_clep_embeddings"):
        from . import mention

        return getattr(mention, name)
    if name == "finetune_comparison":  # the job's, kept here for callers of the earlier API
        from ..pipelines import JOBS

        return JOBS["clep"].finetune_comparison
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_pretrain_clep_cli(dataset: str, data_dir=None, values: dict | None = None, out=None,
                          progress: bool = True, finetune: dict | None = None, overwrite: bool = False) -> dict:
    """Load a dataset, pre-train CLEP, evaluate; returns ``{"metrics", "metrics_path", "run_dir"}``.

    The ``mmea pretrain-clep`` job (:mod:`mmea.pipelines.clep`) from keyword arguments.
    ``values`` are :class:`ClepConfig` fields (an unknown key is an error that
    lists the valid ones).  ``finetune`` (the benchmark's): LinkPredConfig fields
    of a link-prediction model trained twice in ``RUN/finetune-clep`` (``init_from``
    this run) and ``RUN/finetune-random`` with the same budget; the comparison goes
    into ``metrics["finetune"]``.  ``overwrite``: ``out`` may hold an earlier run, cleared first.
    """
    from ..pipelines import JOBS

    job = JOBS["clep"]
    source = {"dataset": str(dataset), "data_dir": str(data_dir) if data_dir is not None else None}
    base = {"source": source, "clep": dict(values or {})}
    if finetune:
        base["finetune"] = dict(finetune)
    config = job.load_config(None, None, base)
    out = Path(out or job.default_run_dir(config))
    metrics = job.run(config, out, progress=progress, overwrite=overwrite)
    return {"metrics": metrics, "metrics_path": out / "metrics.json", "run_dir": out}
