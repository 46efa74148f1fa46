"""Link prediction (``mmea linkpred``): KG embedding models, negative sampling, filtered evaluation.

* :mod:`.models` -- :data:`LP_MODELS` (``transe``, ``distmult``, ``rotate``), torch modules;
* :mod:`.evaluation` -- the filtered MR / MRR / Hits@k protocol (:func:`filtered_metrics`);
* :mod:`.training` -- :class:`LinkPredConfig`, :func:`train_link_prediction`;
* :func:`run_linkpred_cli` / :func:`resume_linkpred` -- the ``mmea linkpred`` job
  (:mod:`mmea.pipelines.linkpred`) called with keyword arguments.

Samplers and losses live in :mod:`mmea.sampling` and :mod:`mmea.losses`.
This package imports no torch until a function runs.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["run_linkpred_cli", "resume_linkpred", "LinkPredConfig", "train_link_prediction", "LP_MODEL_NAMES"]

#: the registered model names, without importing torch (checked against the registry in the tests)
LP_MODEL_NAMES = ("distmult", "rotate", "transe")


def __getattr__(name):  # lazy re-exports (PEP 562): keep `import mmea.linkpred` torch-free
    if name in ("LinkPredConfig", "train_link_prediction", "config_from_dict"):
        from . import training

        return getattr(training, name)
    if name in ("LP_MODELS", "make_lp_model"):
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_linkpred_cli(dataset: str, data_dir=None, model: str = "transe", sampler: str = "uniform",
                     loss: str = "self-adversarial", dim: int | None = None, epochs: int | None = None,
                     num_negatives: int | None = None, seed: int = 0, device: str = "cpu", out=None,
                     extra: dict | None = None, progress: bool = True, *, checkpoint_every: int = 1,
                     stop_after_epochs: int = 0, overwrite: bool = False) -> dict:
    """Load a dataset, train and evaluate; returns ``{"metrics", "metrics_path", "embeddings", "run_dir"}``.

    The ``mmea linkpred`` job (:mod:`mmea.pipelines.linkpred`) from keyword arguments.
    ``dataset`` is a catalog name (``fb15k237``) or a folder with
    ``train.txt`` / ``valid.txt`` / ``test.txt``.  ``None`` for ``dim``,
    ``epochs`` or ``num_negatives`` keeps the :class:`LinkPredConfig` default;
    ``extra`` holds any other :class:`LinkPredConfig` field (``--set`` style),
    an unknown key being an error that lists the valid ones.  ``checkpoint_every``:
    epochs between checkpoints (0: only on Ctrl-C); ``stop_after_epochs``: a test hook,
    a Ctrl-C after that many epochs.  ``overwrite``: ``out`` may hold an earlier run, cleared first.
    """
    from ..pipelines import JOBS

    job = JOBS["linkpred"]
    values = {"model": model, "sampler": sampler, "loss": loss, "seed": seed, "device": device}
    for k, v in (("dim", dim), ("epochs", epochs), ("num_negatives", num_negatives)):
        if v is not None:
            values[k] = v
    values.update(extra or {})
    source = {"dataset": str(dataset), "data_dir": str(data_dir) if data_dir is not None else None}
    config = job.load_config(None, None, {"source": source, "linkpred": values})
    return _run(config, out or job.default_run_dir(config), progress, resume=False, checkpoint_every=checkpoint_every,
                stop_after_epochs=stop_after_epochs, overwrite=overwrite)


def resume_linkpred(run_dir, progress: bool = True, checkpoint_every: int = 1) -> dict:
    """Continue an interrupted ``mmea linkpred`` run from its ``config.toml`` and ``checkpoint.pt``."""
    from ..pipelines import JOBS

    return _run(JOBS["linkpred"].resume_config(run_dir), run_dir, progress, resume=True,
                checkpoint_every=checkpoint_every)


def _run(config, out, progress: bool, **kw) -> dict:
    from ..pipelines import JOBS

    metrics = JOBS["linkpred"].run(config, out, progress=progress, **kw)
    path = Path(out)
    return {"metrics": metrics, "metrics_path": path / "metrics.json", "embeddings": path / "embeddings.npz",
            "run_dir": path}
