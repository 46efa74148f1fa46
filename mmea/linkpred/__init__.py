"""Link prediction (``mmea linkpred``): KG embedding models, negative sampling, filtered evaluation.

* :mod:`.models` -- :data:`LP_MODELS` (``transe``, ``distmult``, ``rotate``), torch modules;
* :mod:`.evaluation` -- the filtered MR / MRR / Hits@k protocol (:func:`filtered_metrics`);
* :mod:`.training` -- :class:`LinkPredConfig`, :func:`train_link_prediction`;
* :func:`run_linkpred_cli` -- what the ``mmea linkpred`` command calls.

Samplers and losses live in :mod:`mmea.sampling` and :mod:`mmea.losses`.
This package imports no torch until a function runs.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("mmea.linkpred")

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

    ``dataset`` is a catalog name (``fb15k237``) or a folder with
    ``train.txt`` / ``valid.txt`` / ``test.txt``.  ``None`` for ``dim``,
    ``epochs`` or ``num_negatives`` keeps the :class:`LinkPredConfig` default;
    ``extra`` holds any other :class:`LinkPredConfig` field (``--set`` style),
    an unknown key being an error that lists the valid ones.  ``checkpoint_every``:
    epochs between checkpoints (0: only on Ctrl-C); ``stop_after_epochs``: a test hook,
    a Ctrl-C after that many epochs.  ``overwrite``: ``out`` may hold an earlier run, cleared first.
    """
    from ..runs import default_run_dir
    from .training import config_from_dict

    values = {"model": model, "sampler": sampler, "loss": loss, "seed": seed, "device": device}
    for k, v in (("dim", dim), ("epochs", epochs), ("num_negatives", num_negatives)):
        if v is not None:
            values[k] = v
    values.update(extra or {})
    config = config_from_dict(values)
    label = Path(dataset).name if Path(dataset).is_dir() else dataset
    out = out or default_run_dir("linkpred", f"{label}-{config.model}-{config.sampler}")
    return _run_linkpred(config, dataset, data_dir, out, progress, resume=False, checkpoint_every=checkpoint_every,
                         stop_after_epochs=stop_after_epochs, overwrite=overwrite)


def resume_linkpred(run_dir, progress: bool = True, checkpoint_every: int = 1) -> dict:
    """Continue an interrupted ``mmea linkpred`` run from its ``config.toml`` and ``checkpoint.pt``."""
    import tomllib

    from ..errors import MmeaInputError
    from .training import config_from_dict

    path = Path(run_dir)
    cpath = path / "config.toml"
    if not path.is_dir():
        raise MmeaInputError(f"{path}: run directory not found, so there is nothing to resume")
    if not cpath.is_file():
        raise MmeaInputError(f"{cpath}: file not found, so {path} is not an mmea linkpred run to resume")
    try:
        raw = tomllib.loads(cpath.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise MmeaInputError(f"{cpath}: invalid TOML: {e}") from None
    if raw.get("task") != "linkpred":
        raise MmeaInputError(f"{path} is not an mmea linkpred run", hint=f"mmea align --resume {path}")
    source = raw.get("source") or {}
    if "dataset" not in source:
        raise MmeaInputError(f"{cpath}: no [source] dataset (runs made before --resume existed cannot resume)")
    config = config_from_dict({**raw.get("linkpred", {}), "sampler_options": raw.get("sampler_options", {})})
    return _run_linkpred(config, source["dataset"], source.get("data_dir"), path, progress, resume=True,
                         checkpoint_every=checkpoint_every)


def _run_linkpred(config, dataset: str, data_dir, out, progress: bool, *, resume: bool, checkpoint_every: int,
                  stop_after_epochs: int = 0, overwrite: bool = False) -> dict:
    """Load ``dataset`` and train ``config`` in the run folder ``out`` (Ctrl-C writes the checkpoint first)."""
    import time

    from ..checkpoint import Checkpointer
    from ..data.catalog import load_linkpred_dataset
    from ..runs import RunDir
    from .training import train_link_prediction

    run = RunDir.create(out, resume=resume, overwrite=overwrite)
    ckpt = Checkpointer(run.path, every=checkpoint_every, resume_command=f"mmea linkpred --resume {run.path}",
                        stop_after_epochs=stop_after_epochs)
    try:
        if resume and ckpt.load() is None:
            log.warning("%s: no checkpoint, so training starts from the beginning", run.path)
        with run.stage("load"):
            t0 = time.perf_counter()
            ds = load_linkpred_dataset(dataset, str(data_dir) if data_dir else None)
            ds.meta.setdefault("timings", {})["load_s"] = time.perf_counter() - t0
        for note in ds.meta.get("notes", []):
            log.warning("note: %s", note)
        with ckpt.guard():
            metrics = train_link_prediction(ds, config, run_dir=run, progress=progress, checkpoint=ckpt,
                                            source={"dataset": dataset, "data_dir": data_dir})
        return {"metrics": metrics, "metrics_path": run.path / "metrics.json",
                "embeddings": run.path / "embeddings.npz", "run_dir": run.path}
    finally:
        run.close()
