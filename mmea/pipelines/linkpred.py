"""The ``mmea linkpred`` job: load a triple dataset -> train a KG embedding model -> filtered evaluation.

Its config is two sections::

    [source]                 where the triples come from
    dataset = "fb15k237"     a catalog name or a folder with train.txt / valid.txt / test.txt
    data_dir = "..."         where catalog datasets are looked for (optional)

    [linkpred]               the main section: every LinkPredConfig field (ranges declared there)
    model = "transe"
    lr = 0.003
    sampler_options = { k = 3 }

``--set lr=0.02`` (no section) is ``--set linkpred.lr=0.02``.  The layouts written before this
one stay readable (:func:`normalise`): flat keys (``dataset`` and ``data_dir`` go to ``[source]``,
the others to ``[linkpred]``), a ``[linkpred]`` table holding ``dataset``, and a run's own
``config.toml`` (``task = "linkpred"``, ``[linkpred]``, a top-level ``[sampler_options]`` table and
``[source]``), which :func:`resume_config` reads.

A run writes ``config.toml``, ``metrics.json``, ``embeddings.npz``, ``checkpoint.pt`` and, last,
``complete.json`` (the SHA-256 of ``embeddings.npz``) into its run directory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..config import build_dataclass, merge_raw, read_toml
from ..errors import MmeaInputError
from ..linkpred.training import LinkPredConfig, config_from_dict
from . import BenchSpec

log = logging.getLogger("mmea.linkpred")

NAME = "linkpred"
#: the section a ``--set`` key without a section goes to
MAIN = "linkpred"
SECTIONS = ("source", "linkpred")
#: the file the run is recorded by in ``complete.json``
MAIN_OUTPUT = "embeddings.npz"
BENCH = BenchSpec(default_metrics=("mrr", "hits@1", "hits@10"), tables=("bench", "budget", "defaults", "rows"),
                  bench_keys=("dataset", "data_dir"))


@dataclass(frozen=True)
class SourceConfig:
    """Where a triple dataset comes from: a catalog name (``fb15k237``) or a folder, and the folder
    catalog datasets are looked for in (None: ``$MMEA_DATA_DIR``, then the cache)."""

    dataset: str = "fb15k237"
    data_dir: str | None = None


@dataclass(frozen=True)
class Config:
    """The ``mmea linkpred`` job's config: ``[source]`` and ``[linkpred]``."""

    source: SourceConfig = field(default_factory=SourceConfig)
    linkpred: LinkPredConfig = field(default_factory=LinkPredConfig)


def normalise(raw: dict, main: str = MAIN, task: str = NAME, extra_tables: tuple[str, ...] = ()) -> dict:
    """Any layout this job ever read or wrote -> ``{"source": {...}, main: {...}}`` (+ ``extra_tables``).

    ``task``: a file that says ``task = "other"`` is another job's and is refused.  Flat keys go
    to ``main``, but ``dataset`` / ``data_dir`` (flat or inside ``[main]``) go to ``[source]``;
    ``[source]`` wins over ``[main]``, which wins over flat keys.  A top-level ``[sampler_options]``
    table (a run's ``config.toml``) is ``main.sampler_options``.
    """
    raw = dict(raw)
    named = raw.pop("task", None)
    if named is not None and named != task:
        raise MmeaInputError(f"the config is for task {named!r}, not {task!r}",
                             hint=f"give an mmea {task} config, or run it with mmea {named}")
    out: dict = {}
    for name in ("source", main, *extra_tables):
        if name in raw:
            table = raw.pop(name)
            if not isinstance(table, dict):
                raise MmeaInputError(f"[{name}] must be a table, got {table!r}")
            out[name] = dict(table)
    section = out.setdefault(main, {})
    opts = raw.pop("sampler_options", None)
    if opts is not None and main == MAIN:
        section.setdefault("sampler_options", opts)
    source = out.setdefault("source", {})
    for key in ("dataset", "data_dir"):
        for table in (section, raw):
            if key in table:
                value = table.pop(key)
                source.setdefault(key, value)
    out[main] = {**raw, **section}
    return {k: v for k, v in out.items() if v or k == main}


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict | None = None) -> Config:
    """Read a TOML file (optional), merge ``base`` and the ``--set`` overrides, validate everything."""
    raw = merge_raw(path, overrides, normalise(base or {}), normalise=normalise, sections=SECTIONS, top_level=(),
                    main=MAIN)
    return resolve_config(raw)


def resolve_config(raw: dict) -> Config:
    """A sectioned raw dict -> :class:`Config`; an unknown section lists the valid ones."""
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise MmeaInputError(f"unknown config section {unknown[0]!r}; valid sections: {', '.join(SECTIONS)}")
    return Config(source=build_dataclass(SourceConfig, raw.get("source", {}), "source"),
                  linkpred=config_from_dict(raw.get(MAIN, {})))


def read_run_config(run_dir: str | Path, task: str) -> Path:
    """``RUN_DIR/config.toml`` of a run to resume, checked: the folder exists, the file exists and is
    ``task``'s (an ``mmea align`` run or another job's says which command resumes it)."""
    path = Path(run_dir)
    if not path.is_dir():
        raise MmeaInputError(f"{path}: run directory not found, so there is nothing to resume")
    cpath = path / "config.toml"
    if not cpath.is_file():
        raise MmeaInputError(f"{cpath}: file not found, so {path} is not an mmea {task} run to resume")
    raw = read_toml(cpath)
    named = raw.get("task") or ("clep" if "clep" in raw else "align" if "linkpred" not in raw else "linkpred")
    if named != task:
        command = {"clep": "pretrain-clep"}.get(named, named)
        raise MmeaInputError(f"{path} is not an mmea {task} run", hint=f"mmea {command} --resume {path}")
    if "dataset" not in (raw.get("source") or {}):
        raise MmeaInputError(f"{cpath}: no [source] dataset (runs made before --resume existed cannot resume)")
    return cpath


def resume_config(run_dir: str | Path) -> Config:
    """The config of an interrupted ``mmea linkpred`` run, from its own ``config.toml``."""
    return load_config(read_run_config(run_dir, NAME))


def default_run_dir(config: Config) -> Path:
    """``runs/linkpred-<dataset>-<model>-<sampler>-<time>``."""
    from ..runs import default_run_dir as stamped

    ds = config.source.dataset
    label = Path(ds).name if Path(ds).is_dir() else ds
    return stamped("linkpred", f"{label}-{config.linkpred.model}-{config.linkpred.sampler}")


def config_record(config: Config) -> dict:
    """The config as ``mmea bench`` records it (``dataset``, ``data_dir``, ``linkpred``)."""
    return {"dataset": config.source.dataset, "data_dir": config.source.data_dir,
            "linkpred": dataclasses.asdict(config.linkpred)}


def load_dataset(run, source: SourceConfig):
    """Load the triples inside the run's ``load`` stage; its notes are logged."""
    import time

    from ..data.catalog import load_linkpred_dataset

    with run.stage("load"):
        t0 = time.perf_counter()
        ds = load_linkpred_dataset(source.dataset, str(source.data_dir) if source.data_dir else None)
        ds.meta.setdefault("timings", {})["load_s"] = time.perf_counter() - t0
    for note in ds.meta.get("notes", []):
        log.warning("note: %s", note)
    return ds


def run(config: Config, run_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
        progress: bool = True, checkpoint_every: int = 1, stop_after_epochs: int = 0) -> dict:
    """Train and evaluate ``config`` in ``run_dir``; returns the metrics.

    ``resume``: continue the interrupted run in ``run_dir`` from its ``checkpoint.pt``;
    ``overwrite``: clear an earlier run there first; ``checkpoint_every``: epochs between
    checkpoints (0: only on Ctrl-C); ``stop_after_epochs``: a test hook, a Ctrl-C after that many
    epochs.  Ctrl-C writes the checkpoint first; ``complete.json`` is written last.
    """
    from ..linkpred.training import train_link_prediction

    def body(run, ckpt):
        ds = load_dataset(run, config.source)
        source = {"dataset": config.source.dataset, "data_dir": config.source.data_dir}
        with ckpt.guard():
            return train_link_prediction(ds, config.linkpred, run_dir=run, progress=progress, checkpoint=ckpt,
                                         source=source)

    return run_in_dir(run_dir, f"mmea {NAME} --resume", body, MAIN_OUTPUT, resume=resume, overwrite=overwrite,
                      checkpoint_every=checkpoint_every, stop_after_epochs=stop_after_epochs,
                      record={"task": NAME, "model": config.linkpred.model})


def run_in_dir(run_dir, resume_command: str, body, output: str, *, resume: bool, overwrite: bool,
               checkpoint_every: int, stop_after_epochs: int = 0, record: dict | None = None) -> dict:
    """The run-directory frame every training job shares: create (or reopen) the folder, the
    checkpointer, ``body(run, ckpt) -> metrics``, then ``complete.json`` last (recording ``output``);
    any failure or interrupt is written to ``run.log`` with its exit code before it propagates."""
    from ..checkpoint import Checkpointer
    from ..runs import RunDir

    run = RunDir.create(run_dir, resume=resume, overwrite=overwrite)
    ckpt = Checkpointer(run.path, every=checkpoint_every, resume_command=f"{resume_command} {run.path}",
                        stop_after_epochs=stop_after_epochs)
    with ckpt.recorded(run):  # a stop is logged with its exit code; Ctrl-C gets the resume hint
        if resume and ckpt.load() is None:
            log.warning("%s: no checkpoint, so training starts from the beginning", run.path)
        metrics = body(run, ckpt)
        run.mark_complete(output=output, **(record or {}))
        return metrics


# ------------------------------------------------------------------------------------ mmea bench
def bench_dataset(entry) -> tuple[str, dict]:
    """A ``datasets`` entry of a pipeline: a name / folder, or ``{dataset, data_dir, label}``."""
    if isinstance(entry, str) and entry:
        return Path(entry).name or entry, {"dataset": entry}
    if isinstance(entry, dict) and isinstance(entry.get("dataset"), str):
        bad = sorted(set(entry) - {"label", "dataset", "data_dir"})
        if bad:
            raise MmeaInputError(f"datasets: unknown key {bad[0]!r}; valid keys: data_dir, dataset, label")
        return str(entry.get("label") or Path(entry["dataset"]).name), {k: v for k, v in entry.items()
                                                                         if k != "label"}
    raise MmeaInputError(f"a datasets entry is a dataset name / folder or {{dataset, data_dir, label}}, "
                         f"got {entry!r}")


def bench_base(bench: dict) -> dict:
    """The ``[bench]`` table's part of every cell's config: device (default auto), dataset, data_dir."""
    return {"device": bench.get("device", "auto"),
            **{k: bench[k] for k in ("dataset", "data_dir") if k in bench}}


def bench_data_dir(data_dir: str) -> dict:
    """``mmea bench --data-dir``: under every value of the pipeline file."""
    return {"data_dir": str(data_dir)}


def bench_row_name(label: str, config: Config) -> str:
    """Labels repeat across models (uniform for TransE and DistMult): the model is part of the name."""
    return f"{label}-{config.linkpred.model}"


def stored_matches(record: dict, run_dir: Path) -> bool | None:
    """None: no finished run in ``run_dir``; else whether its ``metrics.json`` config is ``record``'s.

    None fields (margin, shared_negatives) are resolved at run time from the others; a field the
    stored run does not have is a schema addition, not a changed setting.
    """
    p = Path(run_dir) / "metrics.json"
    if not p.is_file():
        return None
    try:
        stored = json.loads(p.read_text(encoding="utf-8")).get("config") or {}
    except (OSError, ValueError):
        return False
    return all(json.loads(json.dumps(stored[k], default=str)) == v for k, v in record["linkpred"].items()
               if v is not None and k in stored)


def ran_label(m: dict) -> str:
    """What actually ran, from ``metrics.json``: model, sampler, loss, K, d, filtering."""
    c = m.get("config") or {}
    parts = [str(m.get("model", c.get("model", "?"))), f"sampler {m.get('sampler', c.get('sampler'))}",
             f"loss {m.get('loss', c.get('loss'))}"]
    if c:
        parts += [f"K {c.get('num_negatives')}", f"d {c.get('dim')}",
                  "filtered" if c.get("filtered", True) else "unfiltered"]
    return " · ".join(parts)
