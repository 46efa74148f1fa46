"""Runnable jobs: ``mmea align``, ``mmea linkpred``, ``mmea pretrain-clep`` and the cells of ``mmea bench``.

Every job is one module with the same shape (:data:`JOBS` maps a job's name to it):

* ``Config``: a frozen, sectioned dataclass tree (``[data]`` / ``[model]`` ... for align,
  ``[source]`` + ``[linkpred]`` for linkpred, ``[source]`` + ``[clep]`` (+ ``finetune``) for clep);
* ``load_config(path, overrides, base) -> Config``: a TOML file (optional), then ``base`` (the
  command-line options), then the ``--set section.key=value`` overrides, every key, type and
  declared range checked once, before any data is read (a key without a section goes to the
  job's ``MAIN`` section);
* ``resume_config(run_dir) -> Config``: the config of an interrupted run, from its ``config.toml``;
* ``run(config, run_dir, *, resume, overwrite, progress, checkpoint_every) -> metrics``: the run,
  into its run directory (``complete.json`` last; a failure recorded in ``run.log``);
* ``default_run_dir(config)`` and ``config_record(config)`` (the JSON-able form ``mmea bench``
  records and compares), plus the hooks ``mmea bench`` needs to read a pipeline file for the job
  (``BENCH``, ``bench_dataset``, ``bench_row_key``, ``stored_matches``, ``ran_label``).

Importing this package imports no job (and so no torch): :data:`JOBS` imports a job's module
the first time it is asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType

__all__ = ["JOBS", "BenchSpec"]

#: job name -> its module under ``mmea.pipelines`` (the ``task`` of a bench pipeline)
_JOB_MODULES = {"align": "align_config", "linkpred": "linkpred", "clep": "clep"}


@dataclass(frozen=True)
class BenchSpec:
    """What a ``mmea bench`` pipeline file may hold for a job.

    ``tables``: the top-level tables besides ``[[compare]]``; ``bench_keys``: the ``[bench]`` keys
    beyond the common ones; ``config_keys``: the keys a ``[defaults]`` / ``[[rows]]`` table may hold
    (None: any, the job's :func:`load_config` names an unknown one); ``default_metrics``: the
    table's columns when ``[bench] metrics`` is not given.
    """

    default_metrics: tuple[str, ...]
    tables: tuple[str, ...] = ("bench", "defaults", "rows")
    bench_keys: tuple[str, ...] = ()
    config_keys: tuple[str, ...] | None = None


class _Jobs(Mapping):
    """``JOBS[name]`` -> the job's module, imported on first use; an unknown name is a KeyError."""

    def __getitem__(self, name: str) -> ModuleType:
        if name not in _JOB_MODULES:
            raise KeyError(name)
        return importlib.import_module(f"{__name__}.{_JOB_MODULES[name]}")

    def __contains__(self, name: object) -> bool:
        return name in _JOB_MODULES

    def __iter__(self):
        return iter(_JOB_MODULES)

    def __len__(self) -> int:
        return len(_JOB_MODULES)


#: the registered jobs, by name: ``JOBS["linkpred"].run(config, run_dir)``
JOBS: Mapping[str, ModuleType] = _Jobs()
