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

import logging
from pathlib import Path

log = logging.getLogger("mmea.clep")

__all__ = ["run_pretrain_clep_cli", "GRAPH_ENCODER_NAMES", "ClepConfig", "train_clep", "link_mention"]

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
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_pretrain_clep_cli(dataset: str, data_dir=None, values: dict | None = None, out=None,
                          progress: bool = True, finetune: dict | None = None, overwrite: bool = False) -> dict:
    """Load a dataset, pre-train CLEP, evaluate; returns ``{"metrics", "metrics_path", "run_dir"}``.

    ``values`` are :class:`ClepConfig` fields (an unknown key is an error that
    lists the valid ones).  ``finetune`` (the benchmark's): LinkPredConfig fields
    of a link-prediction model trained twice in ``RUN/finetune-clep`` (``init_from``
    this run) and ``RUN/finetune-random`` with the same budget; the comparison goes
    into ``metrics["finetune"]``.  ``overwrite``: ``out`` may hold an earlier run, cleared first.
    """
    import time

    from ..data.catalog import load_linkpred_dataset
    from ..runs import RunDir, default_run_dir
    from .training import clep_config_from_dict, train_clep

    config = clep_config_from_dict(dict(values or {}))
    label = Path(dataset).name or "dataset"
    run = RunDir.create(out or default_run_dir("clep", f"{label}-{config.graph_encoder}"), overwrite=overwrite)
    try:
        with run.stage("load"):
            t0 = time.perf_counter()
            ds = load_linkpred_dataset(dataset, str(data_dir) if data_dir else None)
            ds.meta.setdefault("timings", {})["load_s"] = time.perf_counter() - t0
        metrics = train_clep(ds, config, run_dir=run, progress=progress)
        if finetune:
            metrics["finetune"] = finetune_comparison(ds, run.path, finetune, config.seed, progress)
            run.write_metrics(metrics)
        return {"metrics": metrics, "metrics_path": run.path / "metrics.json", "run_dir": run.path}
    finally:
        run.close()


def finetune_comparison(ds, clep_dir: Path, values: dict, seed: int, progress: bool = False) -> dict:
    """Train one link-prediction model from the CLEP embeddings and one from random init, same budget."""
    from ..linkpred.training import config_from_dict, train_link_prediction

    out = {}
    for name, init in (("clep", str(clep_dir)), ("random", "")):
        cfg = config_from_dict({"seed": seed, "device": "cpu", **values, "init_from": init})
        m = train_link_prediction(ds, cfg, run_dir=clep_dir / f"finetune-{name}", progress=progress)
        out[name] = {"test": {k: v for k, v in m["test"].items() if not isinstance(v, dict)},
                     "valid_at_init": {k: v for k, v in (m.get("valid_at_init") or {}).items()
                                       if not isinstance(v, dict)},
                     "epochs_run": m["epochs_run"], "train_s": m["timings"]["train_s"],
                     "run_dir": str(clep_dir / f"finetune-{name}")}
    out["config"] = dict(values)
    out["model"] = values.get("model", "transe")
    out["gain_mrr"] = out["clep"]["test"]["mrr"] - out["random"]["test"]["mrr"]
    out["gain_hits@10"] = out["clep"]["test"]["hits@10"] - out["random"]["test"]["hits@10"]
    return out
