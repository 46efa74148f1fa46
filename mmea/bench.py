"""``mmea bench PIPELINE.toml``: run a declared grid and write a table of measured numbers.

A pipeline file declares rows (settings), optionally datasets, and seeds; the
grid is rows x datasets x seeds.  The flow is one-way and each step is a
function::

    load_pipeline(path)          -> Pipeline (every cell's config resolved and validated up front)
    plan_cells(pipeline, ...)    -> what to run, skip (finished) or leave out (--only)
    run_bench(pipeline, ...)     -> runs cells into <out>/<row>[-<dataset>]-seed<seed>/,
                                    writes results/<name>.json and results/<name>.md

``[bench] task`` names a job of :data:`mmea.pipelines.JOBS` (``align``, ``linkpred``, ``clep``);
one :class:`BenchTask` runs the cells of any of them through the job interface every command
uses: a cell's config is the job's ``load_config`` (the path ``mmea align --config`` /
``mmea linkpred --config`` take) and a cell runs with the job's ``run``.  The file format is
described in ``docs/bench.md``.  This module imports no torch: a job imports what it needs
when a cell is resolved or run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import re
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from .config import same_settings  # noqa: F401  (re-exported: a finished cell is stale when a setting changed)
from .errors import MmeaError, MmeaInputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger("mmea.bench")

#: a cell's status in a report, in the order the counts are printed
STATUSES = ("done", "skipped", "recorded", "failed", "not run")

#: keys of a ``[[rows]]`` entry that describe the row rather than configure its runs
ROW_KEYS = ("label", "setting", "anchor", "datasets", "from")
#: ``[bench]`` keys every task accepts
BENCH_KEYS = ("name", "task", "description", "out", "seeds", "metrics", "report", "figures", "datasets", "device",
              "scaling")

_SLUG = re.compile(r"[^A-Za-z0-9_.@+=-]+")


def slug(text: str) -> str:
    """A file-name-safe form of a label (``"zh en/v2"`` -> ``"zh_en_v2"``)."""
    return _SLUG.sub("_", str(text)).strip("_") or "_"


# ---------------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class DatasetSpec:
    """One entry of a ``datasets`` list: a label (None: no suffix in the cell name) and the keys it sets."""

    label: str | None
    values: dict


@dataclass(frozen=True)
class Row:
    index: int                  # 1-based position in the file
    label: str                  # as written
    key: str                    # unique, file-name safe: the cell-name prefix
    setting: str                # the declared setting, shown beside the numbers
    anchor: Any                 # published numbers: a string or a table (or None)
    values: dict                # the row's task keys (config), as written
    source: str | None = None   # ``from``: another bench whose results json holds this row's cells (never run here)


@dataclass
class Cell:
    row: Row
    dataset: str | None
    seed: int
    out: Path
    config: dict                # the resolved configuration, JSON-able (what is recorded and compared)
    params: Any                 # what the runner takes (a RunConfig, or keyword arguments)

    @property
    def name(self) -> str:
        return self.out.name


@dataclass
class CellResult:
    cell: Cell
    status: str                 # done | skipped | recorded | failed | not run
    metrics: dict | None = None
    error: str | None = None
    wall_s: float | None = None
    record: dict | None = None  # "recorded": the cell's entry in the previous results json (no run folder)


@dataclass(frozen=True)
class Comparison:
    """A ``[[compare]]`` entry: row ``a`` against row ``b``, paired by dataset and seed."""

    a: Row
    b: Row
    metrics: tuple[str, ...]     # dotted paths; lower is better for ranks and times (:func:`lower_is_better`)


@dataclass
class Pipeline:
    path: Path
    name: str
    task: "BenchTask"
    out: Path
    seeds: list[int]
    metrics: list[str]          # dotted paths into metrics.json (bare names resolved under "test")
    report: list[str]           # extra dotted paths, shown in a second table
    description: str
    rows: list[Row]
    cells: list[Cell]
    figures: list[str] = field(default_factory=list)  # files of a cell's run folder shown with the table
    comparisons: list[Comparison] = field(default_factory=list)
    scaling: list[str] = field(default_factory=list)  # [size path, time path]: fitted exponent per row


@dataclass
class BenchReport:
    pipeline: Pipeline
    results: list[CellResult] = field(default_factory=list)
    json_path: Path | None = None
    md_path: Path | None = None
    figures: list[Path] = field(default_factory=list)

    @property
    def failed(self) -> list[CellResult]:
        return [r for r in self.results if r.status == "failed"]


# ------------------------------------------------------------------------------------------ helpers
def _err(path: Path, where: str, message: str, hint: str | None = None) -> MmeaInputError:
    return MmeaInputError(f"{path}: {where}: {message}", hint=hint or "the pipeline format is in docs/bench.md")


def _check_keys(table: dict, valid, path: Path, where: str) -> None:
    for k in table:
        if k not in valid:
            raise _err(path, where, f"unknown key {k!r}; valid keys: {', '.join(sorted(valid))}")


def _normalised(value: Any) -> Any:
    """JSON round trip: tuples become lists, so stored and expected configs compare equal."""
    return json.loads(json.dumps(value, default=str))


def metric_value(metrics: dict, path: str) -> Any:
    """The value at a dotted path (``"test.hits@1"``) of a metrics dict, or None."""
    cur: Any = metrics
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# -------------------------------------------------------------------------------------------- tasks
class BenchTask:
    """The cells of a pipeline: one job of :data:`mmea.pipelines.JOBS` (``[bench] task``), run through
    the job interface every command uses (``load_config``, ``run``).

    A cell's config is the job's :func:`load_config` of the pipeline's layers, later ones winning:
    ``mmea bench --data-dir``, the ``[bench]`` table's part (device, dataset), ``[budget]``,
    ``[defaults]``, the dataset entry, the row, the seed; then the ``set`` strings of
    ``[defaults]`` and the row as ``--set`` overrides.  What differs between jobs (the
    ``datasets`` entries, the row names, how a finished run's config is read back, the label of
    what ran) is the job's ``bench_*`` / ``stored_matches`` / ``ran_label`` hooks.
    """

    def __init__(self, name: str, data_dir: str | None = None):
        from .pipelines import JOBS

        self.name = name
        self.job = JOBS[name]
        spec = self.job.BENCH
        self.tables: tuple[str, ...] = spec.tables
        self.bench_keys: tuple[str, ...] = (*BENCH_KEYS, *spec.bench_keys)
        self.default_metrics: tuple[str, ...] = spec.default_metrics
        self.config_keys = spec.config_keys
        self.data_dir_layer = self.job.bench_data_dir(data_dir) if data_dir is not None else {}

    # -- the configs -------------------------------------------------------------------
    def datasets(self, bench: dict, row: dict, path: Path, where: str) -> list[DatasetSpec]:
        entries = row.get("datasets", bench.get("datasets"))
        if "dataset" in self.bench_keys:  # a job with one dataset in [bench] (or a datasets list)
            if entries is not None and "dataset" in bench:
                raise _err(path, "[bench]", "give either dataset or datasets, not both")
            if entries is None and not isinstance(bench.get("dataset"), str):
                raise _err(path, "[bench]", f"a {self.name} pipeline needs dataset = \"NAME\" (or datasets = [...])")
        if entries is None:
            return [DatasetSpec(None, {})]
        if not isinstance(entries, list) or not entries:
            raise _err(path, where, "datasets must be a non-empty list")
        specs = []
        for e in entries:
            try:
                specs.append(DatasetSpec(*self.job.bench_dataset(e)))
            except MmeaInputError as exc:
                raise _err(path, where, exc.message, exc.hint) from None
        labels = [s.label for s in specs]
        if len(set(map(slug, labels))) != len(labels):
            raise _err(path, where, f"dataset labels repeat: {labels}")
        return specs

    def _check_table(self, table: dict, path: Path, where: str) -> None:
        if "seed" in table:
            raise _err(path, where, "seed is not set here: list the seeds in [bench] seeds")
        if self.config_keys is not None:
            _check_keys(table, self.config_keys, path, where)
        sets = table.get("set", [])
        if not isinstance(sets, list) or not all(isinstance(s, str) for s in sets):
            raise _err(path, where, 'set must be a list of "section.key=value" strings')

    def load(self, layers: list[dict], path: Path, where: str):
        """The job's config of ``layers`` (later ones win; their ``set`` strings apply last)."""
        overrides = [s for t in layers for s in t.get("set", [])]
        base: dict = {}
        for layer in layers:
            for k, v in self.job.normalise({k: v for k, v in layer.items() if k != "set"}).items():
                if isinstance(v, dict) and isinstance(base.get(k), dict):
                    base[k] = {**base[k], **v}
                else:
                    base[k] = dict(v) if isinstance(v, dict) else v
        try:
            return self.job.load_config(None, overrides, base)
        except MmeaInputError as e:
            raise _err(path, where, e.message, e.hint) from None

    def _layers(self, raw: dict, upto: str | None = None) -> list[dict]:
        """``--data-dir``, ``[bench]``'s part and the config tables (up to and with ``upto``)."""
        layers = [self.data_dir_layer, self.job.bench_base(raw["bench"])]
        for t in self.tables[1:]:
            if t == "rows":
                break
            layers.append(raw.get(t, {}))
            if t == upto:
                break
        return layers

    def check_defaults(self, raw: dict, path: Path) -> None:
        """Validate ``[budget]`` / ``[defaults]`` alone, so an error there is reported as such."""
        for t in self.tables[1:]:
            if t == "rows":
                continue
            self._check_table(raw.get(t, {}), path, f"[{t}]")
            self.load([self.data_dir_layer, self.job.bench_base(raw["bench"]), raw.get(t, {}), {"seed": 0}],
                      path, f"[{t}]")

    def resolve(self, raw: dict, row: dict, dataset: DatasetSpec, seed: int, path: Path,
                where: str) -> tuple[dict, Any]:
        """``(record, config)`` of one cell; a bad key raises :class:`MmeaInputError` naming ``where``."""
        values = {k: v for k, v in row.items() if k not in ROW_KEYS}
        self._check_table(values, path, where)
        cfg = self.load([*self._layers(raw), dataset.values, values, {"seed": seed}], path, where)
        return self.job.config_record(cfg), cfg

    def row_key(self, label: str, config) -> str:
        """The row's unique, file-name-safe name: the prefix of its cell names."""
        return slug(self.job.bench_row_name(label, config))

    # -- the runs ----------------------------------------------------------------------
    def stored_matches(self, cell: Cell) -> bool | None:
        """None: no finished run in ``cell.out``; True/False: its stored resolved config matches or not."""
        return self.job.stored_matches(cell.config, cell.out)

    def run(self, cell: Cell, quiet: bool) -> dict:
        """Run one cell into ``cell.out`` (an earlier run there is replaced); returns its metrics dict."""
        return self.job.run(cell.params, cell.out, overwrite=True, progress=not quiet)

    def ran_label(self, metrics: dict) -> str:
        """What actually ran, read from metrics.json (not from the declared setting)."""
        return self.job.ran_label(metrics)


def modalities_used(info: dict) -> list[str]:
    """The modalities some entity has, from ``model_info.modalities`` (see
    :func:`mmea.pipelines.align_config.modalities_used`)."""
    from .pipelines.align_config import modalities_used as used

    return used(info)


# ------------------------------------------------------------------------------------------- loading
def with_companions(metrics: list[str], companions: dict) -> list[str]:
    """``metrics`` with each column's companion (``companions[column]``, the job's ``BENCH_COMPANIONS``)
    right after it, unless listed already: the ranking H@1 of an align table always comes with the
    one-to-one H@1."""
    out: list[str] = []
    for m in metrics:
        out.append(m)
        extra = companions.get(m)
        if extra and extra not in metrics:
            out.append(extra)
    return out


def _str_list(bench: dict, key: str, path: Path, default) -> list[str]:
    v = bench.get(key, default)
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) and x for x in v):
        raise _err(path, "[bench]", f"{key} must be a list of strings, got {v!r}")
    return list(v)


#: metrics.json keys outside ``test`` that a pipeline's ``metrics`` may name without a dotted path
#: (any other bare name means ``test.<name>``)
TOP_LEVEL_METRICS = ("peak_rss_gib",)


def _metric_paths(bench: dict, p: Path, task) -> list[str]:
    """``[bench] metrics`` as dotted metrics.json paths (a bare name is ``test.<name>`` unless it is one of
    :data:`TOP_LEVEL_METRICS`), with their companions (the one-to-one H@1 after the ranking's)."""
    names = _str_list(bench, "metrics", p, task.default_metrics)
    return with_companions([m if "." in m or m in TOP_LEVEL_METRICS else f"test.{m}" for m in names],
                           getattr(task.job, "BENCH_COMPANIONS", {}))


def load_pipeline(path: str | Path, data_dir: str | None = None) -> Pipeline:
    """Read and validate a pipeline file; every cell's config is resolved here, before anything runs.

    ``data_dir`` (``mmea bench --data-dir``) is where datasets are looked for
    when the file does not say.
    """
    p = Path(path)
    if not p.is_file():
        raise MmeaInputError(f"pipeline file not found: {p}", hint="the shipped pipelines are in pipelines/")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise MmeaInputError(f"{p}: invalid TOML: {e}") from None
    bench = raw.get("bench")
    if not isinstance(bench, dict):
        raise _err(p, "[bench]", "missing table (name, task, seeds, ...)")
    from .pipelines import JOBS

    if bench.get("task") not in JOBS:
        raise _err(p, "[bench]", f"task must be one of {', '.join(JOBS)}, got {bench.get('task')!r}")
    task = BenchTask(bench["task"], data_dir)
    _check_keys(raw, (*task.tables, "compare"), p, "top level")
    _check_keys(bench, task.bench_keys, p, "[bench]")
    for t in task.tables[1:]:
        if t in raw and not isinstance(raw[t], (list if t == "rows" else dict)):
            raise _err(p, f"[{t}]", "must be a table" + (" array ([[rows]])" if t == "rows" else ""))

    name = bench.get("name", p.stem)
    if not isinstance(name, str) or not name or slug(name) != name:
        raise _err(p, "[bench]", f"name must be a file-name-safe string, got {name!r}")
    seeds = bench.get("seeds", [0])
    if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise _err(p, "[bench]", f"seeds must be a non-empty list of distinct integers, got {seeds!r}")
    metrics = _metric_paths(bench, p, task)
    report = _str_list(bench, "report", p, [])
    figures = _str_list(bench, "figures", p, [])
    bad = [f for f in figures if Path(f).name != f or not f]
    if bad:
        raise _err(p, "[bench]", f"figures must be file names inside a cell's run folder, got {bad[0]!r}")
    out = Path(str(bench.get("out", f"runs/bench-{name}")))
    description = bench.get("description", "")
    if not isinstance(description, str):
        raise _err(p, "[bench]", "description must be a string")
    task.check_defaults(raw, p)
    rows_raw = raw.get("rows") or []
    if not rows_raw:
        raise _err(p, "[[rows]]", "no rows: add at least one [[rows]] table with a label")
    rows: list[Row] = []
    cells: list[Cell] = []
    seen: dict[str, int] = {}
    for i, r in enumerate(rows_raw, 1):
        label = r.get("label") if isinstance(r, dict) else None
        if not isinstance(label, str) or not label:
            raise _err(p, f"[[rows]] #{i}", "every row needs a label = \"...\"")
        where = f"[[rows]] #{i} ({label!r})"
        setting = r.get("setting", "")
        if not isinstance(setting, str):
            raise _err(p, where, "setting must be a string")
        anchor = r.get("anchor")
        if anchor is not None and not isinstance(anchor, (str, dict)):
            raise _err(p, where, "anchor must be a string or a table of published numbers")
        source = _row_source(r, name, p, where)
        resolved = [(ds, seed, *task.resolve(raw, r, ds, seed, p, where))
                    for ds in task.datasets(bench, r, p, where) for seed in seeds]
        key = task.row_key(label, resolved[0][3])
        if key in seen:
            raise _err(p, where, f"row name {key!r} repeats row #{seen[key]}; labels must be distinct")
        seen[key] = i
        row = Row(i, label, key, setting, anchor, {k: v for k, v in r.items() if k not in ROW_KEYS}, source)
        rows.append(row)
        for ds, seed, record, params in resolved:
            cell_name = f"{key}{'-' + slug(ds.label) if ds.label else ''}-seed{seed}"
            cells.append(Cell(row, ds.label, seed, out / cell_name, _normalised(record), params))
    comparisons = _comparisons(raw.get("compare", []), rows, metrics, p)
    scaling = _str_list(bench, "scaling", p, [])
    if scaling and len(scaling) != 2:
        raise _err(p, "[bench]", "scaling is [size metric, time metric], e.g. [\"split.test\", \"timings.total_s\"]")
    return Pipeline(p, name, task, out, list(seeds), metrics, report, description, rows, cells, figures, comparisons,
                    scaling)


def _row_source(r: dict, name: str, path: Path, where: str) -> str | None:
    """A row's ``from``: the name of another bench (its ``results/<from>.json``), or None."""
    source = r.get("from")
    if source is None:
        return None
    if not isinstance(source, str) or not source or slug(source) != source or source == name:
        raise _err(path, where, f"from must name another bench (its results/<name>.json), got {source!r}")
    return source


def load_imports(pipeline: Pipeline, results_dir: str | Path) -> dict[str, dict[str, dict]]:
    """``{bench: records}`` (:func:`load_records`) of every bench a row's ``from`` names; a missing file is an
    error naming the row and the command that writes it."""
    out: dict[str, dict[str, dict]] = {}
    for row in pipeline.rows:
        if row.source is None or row.source in out:
            continue
        path = Path(results_dir) / f"{row.source}.json"
        if not path.is_file():
            raise MmeaInputError(f"{pipeline.path}: row {row.label!r} reads its cells from {path}, which does not exist",
                                 hint=f"run `mmea bench` on the pipeline named {row.source!r} first (its results go to "
                                      f"{path})")
        out[row.source] = load_records(path)
    return out


COMPARE_KEYS = ("a", "b", "metrics")


def _comparisons(raw: Any, rows: list[Row], metrics: list[str], path: Path) -> list[Comparison]:
    """Validate the ``[[compare]]`` entries: two distinct row labels and the metrics (default: the first)."""
    if not isinstance(raw, list):
        raise _err(path, "[[compare]]", "must be a table array ([[compare]])")
    by_label = {r.label: r for r in rows}
    out = []
    for i, c in enumerate(raw, 1):
        where = f"[[compare]] #{i}"
        if not isinstance(c, dict):
            raise _err(path, where, "must be a table with a, b and optionally metrics")
        _check_keys(c, COMPARE_KEYS, path, where)
        pair = []
        for side in ("a", "b"):
            label = c.get(side)
            if label not in by_label:
                raise _err(path, where, f"{side} = {label!r} is not a row label; rows: {', '.join(by_label)}")
            pair.append(by_label[label])
        if pair[0] is pair[1]:
            raise _err(path, where, f"a and b are the same row ({pair[0].label!r})")
        ms = c.get("metrics", metrics[:1])
        if not isinstance(ms, list) or not ms or not all(isinstance(m, str) and m for m in ms):
            raise _err(path, where, f"metrics must be a non-empty list of strings, got {ms!r}")
        out.append(Comparison(pair[0], pair[1], tuple(m if "." in m else f"test.{m}" for m in ms)))
    return out


# ------------------------------------------------------------------------------------------- running
def select_rows(pipeline: Pipeline, only: tuple[str, ...] | list[str] = ()) -> set[str]:
    """Row keys chosen by ``--only`` (a label or a row name; all rows when empty)."""
    if not only:
        return {r.key for r in pipeline.rows}
    chosen = set()
    for name in only:
        hit = {r.key for r in pipeline.rows if name in (r.label, r.key)}
        if not hit:
            names = sorted({r.label for r in pipeline.rows} | {r.key for r in pipeline.rows})
            raise MmeaInputError(f"--only {name}: no such row in {pipeline.path}; rows: {', '.join(names)}")
        chosen |= hit
    return chosen


def plan_cells(pipeline: Pipeline, only=(), force: bool = False, seeds=(),
               records: dict[str, dict] | None = None, datasets=(), imports: dict | None = None
               ) -> list[tuple[Cell, str]]:
    """Each cell with its action.

    ``run`` (no finished run), ``rerun`` (finished with another config, or
    ``--force``), ``skip`` (finished with this config), ``load`` (left out by
    ``--only`` or ``--seed`` but finished: its numbers still go into the table),
    ``recorded`` (no run folder, but ``records`` -- :func:`load_records` of the
    previous results json -- holds the cell finished with this config; ``--force``
    on a chosen cell runs it) or ``leave`` (left out and not finished).
    ``seeds``: only cells of these seeds (all when empty); a seed the pipeline
    does not list is an error.  ``datasets``: likewise, by dataset label (``--dataset``).
    A row with ``from`` is never run: its cells are ``recorded`` from that bench's records (``imports``,
    :func:`load_imports`) when the cell of the same name finished there under this cell's config, else ``leave``.
    """
    chosen = select_rows(pipeline, only)
    unknown = sorted(set(seeds) - set(pipeline.seeds))
    if unknown:
        raise MmeaInputError(f"--seed {unknown[0]}: not among the seeds of {pipeline.path} "
                             f"({', '.join(map(str, pipeline.seeds))})")
    labels = list(dict.fromkeys(c.dataset for c in pipeline.cells))
    missing = [d for d in datasets if d not in labels]
    if missing:
        raise MmeaInputError(f"--dataset {missing[0]}: no cell of {pipeline.path} runs on it; datasets: "
                             f"{', '.join(str(x) for x in labels)}")
    plan = []
    for cell in pipeline.cells:
        if cell.row.source is not None:  # another bench's cell, read from its results json only
            found = record_matches((imports or {}).get(cell.row.source, {}).get(cell.name), cell)
            plan.append((cell, "recorded" if found else "leave"))
            continue
        stored = pipeline.task.stored_matches(cell)
        chosen_cell = (cell.row.key in chosen and not (seeds and cell.seed not in seeds)
                       and not (datasets and cell.dataset not in datasets))
        if stored is None and record_matches((records or {}).get(cell.name), cell) and not (force and chosen_cell):
            plan.append((cell, "recorded"))
            continue
        if not chosen_cell:
            action = "load" if stored else "leave"
        elif stored is None:
            action = "run"
        elif force or not stored:
            action = "rerun"
        else:
            action = "skip"
        plan.append((cell, action))
    return plan


def load_records(path: Path) -> dict[str, dict]:
    """The finished cells of a previous ``results/<name>.json`` (:func:`results_json`), by cell name.

    So that a fresh checkout (or CI) can add seeds or rows to a committed table without rerunning the
    cells whose run folders are gone: a record is used only while its config still matches the cell's
    (:func:`record_matches`), and the table says how many numbers came from records.  A missing or
    unreadable file gives no records.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    cells = data.get("cells") if isinstance(data, dict) else None
    return {c["name"]: c for c in cells or [] if isinstance(c, dict) and c.get("name")
            and c.get("status") in ("done", "skipped", "recorded") and isinstance(c.get("metrics"), dict)}


def _without_location(config: Any) -> Any:
    """``config`` without its sections' ``data_dir`` (``data.data_dir`` of an align cell, ``source.data_dir``
    of a link-prediction one): where this machine keeps the datasets is not a setting."""
    if not isinstance(config, dict):
        return config
    return {k: ({kk: vv for kk, vv in v.items() if kk != "data_dir"} if isinstance(v, dict) else v)
            for k, v in config.items()}


def record_matches(record: dict | None, cell: Cell) -> bool:
    """Whether a results-json record is this cell's finished run under the cell's current config
    (:func:`mmea.config.same_settings`; a ``data_dir`` is a location, not a setting)."""
    from .config import same_settings

    if not record or not isinstance(record.get("config"), dict):
        return False
    return same_settings(_without_location(record["config"]), _without_location(_normalised(cell.config)))


def record_metrics(record: dict) -> dict:
    """A record's dotted ``metrics`` and its ``timings`` as the nested dict a metrics.json would give
    (only the paths the record kept; a path it lacks reads as missing)."""
    out: dict = {}
    for path, value in (record.get("metrics") or {}).items():
        if value is None:
            continue
        cur = out
        *parents, last = path.split(".")
        for part in parents:
            cur = cur.setdefault(part, {})
            if not isinstance(cur, dict):
                break
        else:
            cur[last] = value
    if record.get("timings"):
        out.setdefault("timings", {}).update(record["timings"])
    return out


@contextmanager
def _cell_console(verbose: int):
    """Keep a cell's own log (it is in the cell's run.log) off the console unless -v."""
    if verbose:
        yield
        return
    handlers = [h for h in logging.getLogger("mmea").handlers if getattr(h, "_mmea_console", False)]
    levels = [h.level for h in handlers]
    for h in handlers:
        h.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for h, lv in zip(handlers, levels):
            h.setLevel(lv)


def _error_text(e: BaseException) -> str:
    return e.message if isinstance(e, MmeaError) else f"{type(e).__name__}: {e}"


def _read_metrics(cell: Cell) -> dict | None:
    try:
        return json.loads((cell.out / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def run_bench(pipeline: Pipeline, *, only=(), seeds=(), datasets=(), force: bool = False, dry_run: bool = False,
              table_only: bool = False, results_dir: str | Path = "results", quiet: bool = False, verbose: int = 0,
              echo: Callable[[str], None] = print, command: str | None = None) -> BenchReport:
    """Run (or skip) every cell, then write ``results_dir/<name>.json`` and ``.md``.

    A failing cell is recorded with its error and the bench goes on; the
    caller decides what to do with :attr:`BenchReport.failed`.  ``table_only``:
    run nothing, tabulate the finished cells (a stale one counts as not run).
    """
    records = load_records(Path(results_dir) / f"{pipeline.name}.json")
    imports = load_imports(pipeline, results_dir)
    plan = plan_cells(pipeline, only, force, seeds, records, datasets, imports)
    if table_only:
        plan = [(c, {"skip": "load", "run": "leave", "rerun": "leave"}.get(a, a)) for c, a in plan]
    report = BenchReport(pipeline)
    key_metric = pipeline.metrics[0]
    if dry_run:
        what = {"run": "would run", "rerun": "would rerun (config changed, or --force)",
                "skip": "finished, would skip", "load": "left out (--only / --seed / --dataset), finished",
                "leave": "left out (--only / --seed / --dataset)",
                "recorded": "no run folder; finished with this config per the previous results json, would reuse"}
        for i, (cell, action) in enumerate(plan, 1):
            text = what[action] if cell.row.source is None else (
                f"read from {cell.row.source}.json" if action == "recorded"
                else f"not finished in {cell.row.source}.json with this config (a 'from' row is never run here)")
            echo(f"[{i}/{len(plan)}] {cell.name}  {text}  -> {cell.out}")
        return report
    say = (lambda s: None) if quiet else echo
    active = [cell for cell, action in plan if action in ("run", "rerun", "skip")]
    i = 0
    for cell, action in plan:
        if action == "recorded":
            record = (imports[cell.row.source] if cell.row.source else records)[cell.name]
            report.results.append(CellResult(cell, "recorded", record_metrics(record), record=record))
            continue
        if action in ("load", "leave"):
            metrics = _read_metrics(cell) if action == "load" else None
            report.results.append(CellResult(cell, "skipped" if metrics else "not run", metrics))
            continue
        i += 1
        tag = f"[{i}/{len(active)}] {cell.name}"
        if action == "skip":
            metrics = _read_metrics(cell)
            report.results.append(CellResult(cell, "skipped", metrics))
            say(f"{tag}  skipped (finished)  {_key_text(key_metric, metrics)}")
            continue
        say(f"{tag}  started" + ("  (again: config changed or --force)" if action == "rerun" else ""))
        (cell.out / "metrics.json").unlink(missing_ok=True)  # a failure must not leave an old result behind
        t0 = time.perf_counter()
        try:
            with _cell_console(verbose):
                metrics = pipeline.task.run(cell, quiet)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - a failing cell is recorded and the bench goes on
            dt = time.perf_counter() - t0
            if verbose:
                log.exception("cell %s failed", cell.name)
            report.results.append(CellResult(cell, "failed", None, _error_text(e), dt))
            say(f"{tag}  FAILED after {dt:.1f} s: {_error_text(e)}")
            continue
        dt = time.perf_counter() - t0
        report.results.append(CellResult(cell, "done", metrics, None, dt))
        say(f"{tag}  done  {_key_text(key_metric, metrics)}  ({dt:.1f} s)")

    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    command = command or f"mmea bench {pipeline.path}"
    written = datetime.now(timezone.utc)
    report.json_path = results_dir / f"{pipeline.name}.json"
    report.md_path = results_dir / f"{pipeline.name}.md"
    from .runs import atomic_write_text, write_json

    report.figures = copy_figures(report, results_dir / pipeline.name)
    write_json(report.json_path, results_json(report, command, written))
    atomic_write_text(report.md_path, results_markdown(report, command, written))
    return report


def copy_figures(report: BenchReport, folder: Path) -> list[Path]:
    """Copy each finished cell's ``[bench] figures`` files to ``folder/<cell>-<file>``; returns the copies.

    So that the figures a table talks about (e.g. CLEP's cosine histograms) sit
    beside ``results/<name>.md``, produced by the same command; a figure a
    cell did not write is skipped.
    """
    import shutil

    out = []
    for r in report.results:
        if r.metrics is None:
            continue
        for name in report.pipeline.figures:
            src = r.cell.out / name
            if src.is_file():
                folder.mkdir(parents=True, exist_ok=True)
                dst = folder / f"{r.cell.name}-{name}"
                shutil.copyfile(src, dst)
                out.append(dst)
    return out


def _key_text(path: str, metrics: dict | None) -> str:
    v = metric_value(metrics or {}, path)
    if v is None:
        return ""
    return f"{path.removeprefix('test.')} {format_value(v, path)}"


# ------------------------------------------------------------------------------------------- results
def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1); std is None for a single value."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def _decimals(path: str, values: list[int | float]) -> int:
    """Decimals shown: 1 for seconds (``*_s``), none for counts, else by magnitude (4 for rates)."""
    biggest = max(abs(v) for v in values)
    if path.endswith("_s"):
        return 2 if biggest < 1 else 1
    if all(isinstance(v, int) for v in values):
        return 0 if len(values) == 1 else 1
    if biggest >= 100:
        return 1
    if biggest >= 10:
        return 2
    return 4


def format_value(v: Any, path: str = "") -> str:
    if _is_number(v):
        return f"{v:.{_decimals(path, [v])}f}"
    return str(v).lower() if isinstance(v, bool) else str(v)


def format_mean_std(values: list[Any], path: str = "") -> str:
    """``"0.6000 ± 0.1414"`` over seeds, the plain value for one, ``"—"`` for none.

    Non-numeric values (``stopped``) are listed once each.  When only some of the cells have the value
    (a record kept from before the path was reported, a metric one seed did not produce), the text says
    over how many: ``"0.6000 ± 0.1414 (2 of 3)"``, so a partial mean never reads as the row's.
    """
    vals = [v for v in values if v is not None]
    if not vals:
        return "—"
    part = f" ({len(vals)} of {len(values)})" if len(vals) < len(values) else ""
    if not all(_is_number(v) for v in vals):
        seen = list(dict.fromkeys(format_value(v) for v in vals))
        return " / ".join(seen) + part
    mean, std = mean_std([float(v) for v in vals])
    d = _decimals(path, vals)
    return (f"{mean:.{d}f}" if std is None else f"{mean:.{d}f} ± {std:.{d}f}") + part


def format_anchor(anchor: Any, dataset: str | None) -> str:
    """A row's published numbers as text; a table keyed by dataset label picks that dataset's entry."""
    if anchor is None:
        return ""
    if isinstance(anchor, dict) and dataset is not None and isinstance(anchor.get(dataset), (dict, str)):
        anchor = anchor[dataset]
    if isinstance(anchor, str):
        return anchor
    source = anchor.get("source")
    nums = ", ".join(f"{str(k).removeprefix('test.')} {v}" for k, v in anchor.items()
                     if k != "source" and not isinstance(v, dict))
    return f"{nums} ({source})" if source and nums else str(source or nums)


@dataclass
class RowSummary:
    row: Row
    dataset: str | None
    results: list[CellResult]

    @property
    def finished(self) -> list[CellResult]:
        return [r for r in self.results if r.metrics is not None]

    def values(self, path: str) -> list[Any]:
        return [metric_value(r.metrics, path) for r in self.finished]


def summarise(report: BenchReport) -> list[RowSummary]:
    """One summary per row x dataset, in file order."""
    groups: dict[tuple[str, str | None], RowSummary] = {}
    for r in report.results:
        k = (r.cell.row.key, r.cell.dataset)
        groups.setdefault(k, RowSummary(r.cell.row, r.cell.dataset, [])).results.append(r)
    return list(groups.values())


def lower_is_better(path: str) -> bool:
    """Ranks (``mr``, ``mean_rank``) and times (``*_s``) are better when lower; everything else when higher."""
    last = path.rsplit(".", 1)[-1]
    return last in ("mr", "mean_rank") or last.endswith("_s")


def compare_rows(report: BenchReport) -> list[dict]:
    """Each ``[[compare]]`` entry per dataset, paired by seed (the same split for both rows).

    For every metric, over the seeds where both cells finished with a number:
    the means of ``a`` and ``b``, the mean and sample std of the paired difference
    ``a - b``, and in how many seeds ``a`` was strictly better.  ``a_better``:
    ``a``'s mean strictly better than ``b``'s; ``a_better_all``: so on every
    metric (None when no seed is paired).
    """
    by_key: dict[tuple[str, str | None], dict[int, dict]] = {}
    datasets: dict[str, list[str | None]] = {}
    for r in report.results:
        datasets.setdefault(r.cell.row.key, [])
        if r.cell.dataset not in datasets[r.cell.row.key]:
            datasets[r.cell.row.key].append(r.cell.dataset)
        if r.metrics is not None:
            by_key.setdefault((r.cell.row.key, r.cell.dataset), {})[r.cell.seed] = r.metrics
    out = []
    for c in report.pipeline.comparisons:
        for ds in [d for d in datasets.get(c.a.key, []) if d in datasets.get(c.b.key, [])]:
            ma, mb = by_key.get((c.a.key, ds), {}), by_key.get((c.b.key, ds), {})
            entry: dict = {"a": c.a.label, "b": c.b.label, "dataset": ds, "metrics": {}}
            verdicts = []
            for m in c.metrics:
                pairs = [(metric_value(ma[sd], m), metric_value(mb[sd], m)) for sd in sorted(set(ma) & set(mb))]
                pairs = [(float(x), float(y)) for x, y in pairs if _is_number(x) and _is_number(y)]
                sign = -1.0 if lower_is_better(m) else 1.0
                if not pairs:
                    entry["metrics"][m] = {"n": 0}
                    verdicts.append(None)
                    continue
                diffs = [x - y for x, y in pairs]
                d_mean, d_std = mean_std(diffs)
                better = sign * d_mean > 0
                entry["metrics"][m] = {
                    "n": len(pairs), "a_mean": mean_std([x for x, _ in pairs])[0],
                    "b_mean": mean_std([y for _, y in pairs])[0], "diff_mean": d_mean, "diff_std": d_std,
                    "a_better_seeds": sum(sign * d > 0 for d in diffs), "a_better": better}
                verdicts.append(better)
            entry["a_better_all"] = None if None in verdicts else all(verdicts)
            out.append(entry)
    return out


def comparison_console_lines(report: BenchReport) -> list[str]:
    """One line per comparison for the console: ``compare: A vs B [dataset] (n seeds): metric A-B ... -> verdict``."""
    out = []
    for c in compare_rows(report):
        n = max((v["n"] for v in c["metrics"].values()), default=0)
        diffs = ", ".join(f"{m.removeprefix('test.')} {v['diff_mean']:+.4g}" for m, v in c["metrics"].items()
                          if v["n"])
        verdict = {True: "A better on all", False: "A not better on all", None: "no paired seed"}[c["a_better_all"]]
        ds = f" [{c['dataset']}]" if c["dataset"] else ""
        out.append(f"compare: {c['a']} vs {c['b']}{ds} ({n} seeds): {diffs or '—'} -> {verdict}")
    return out


def _comparison_lines(report: BenchReport) -> list[str]:
    comps = compare_rows(report)
    if not comps:
        return []
    with_dataset = any(c["dataset"] for c in comps)
    metrics = list(dict.fromkeys(m for c in comps for m in c["metrics"]))
    head = ["A", "B"] + (["Dataset"] if with_dataset else []) + ["paired seeds"]
    for m in metrics:
        short = m.removeprefix("test.")
        head += [f"{short}: A − B", f"{short}: A better in"]
    head.append("A better on all (means)")
    lines = ["", "Paired comparisons (A and B on the same dataset and seed share the split; A − B over the seeds "
             "both finished, mean ± sample std; lower is better for MR and times):", "",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for c in comps:
        n = max((v["n"] for v in c["metrics"].values()), default=0)
        cells = [_md(c["a"]), _md(c["b"])] + ([_md(c["dataset"] or "")] if with_dataset else []) + [str(n)]
        for m in metrics:
            v = c["metrics"].get(m)
            if not v or not v["n"]:
                cells += ["—", "—"]
                continue
            d = _decimals(m, [v["a_mean"], v["b_mean"]])
            diff = f"{v['diff_mean']:+.{d}f}" + ("" if v["diff_std"] is None else f" ± {v['diff_std']:.{d}f}")
            cells += [diff, f"{v['a_better_seeds']}/{v['n']} seeds"]
        cells.append({True: "yes", False: "no", None: "—"}[c["a_better_all"]])
        lines.append("| " + " | ".join(cells) + " |")
    decided = [c for c in comps if c["a_better_all"] is not None]
    wins = sum(bool(c["a_better_all"]) for c in decided)
    lines += ["", f"A better than B on every compared metric (by the mean over paired seeds) in {wins} of "
              f"{len(decided)} comparisons" + (f" ({len(comps) - len(decided)} without a paired seed)."
                                                if len(decided) < len(comps) else ".")]
    return lines


def _ran_one(report: BenchReport, r: CellResult) -> str:
    """What ran in one finished cell: from its metrics.json, or as its record says."""
    if r.record is not None:
        return str(r.record.get("ran") or "")
    return report.pipeline.task.ran_label(r.metrics)


def _ran(report: BenchReport, s: RowSummary) -> str:
    labels = dict.fromkeys(x for x in (_ran_one(report, r) for r in s.finished) if x)
    return " | ".join(labels)


def _env(r: CellResult) -> dict:
    """The machine a finished cell ran on: its env.json, or its record's ``machine``."""
    if r.record is not None:
        return dict(r.record.get("machine") or {})
    try:
        return json.loads((r.cell.out / "env.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _measured_on(report: BenchReport) -> tuple[str, str]:
    """(machines, dates) of the finished cells, from their env.json; this machine when none says."""
    machines, dates = {}, []
    for r in report.results:
        if r.metrics is None:
            continue
        env = _env(r)
        if env.get("platform"):
            machines[f"{env['platform']}, {env.get('cpu_count', '?')} CPUs"] = None
        if env.get("started_utc"):
            dates.append(str(env["started_utc"])[:10])
    if not machines:
        machines[f"{platform.platform()}, {os.cpu_count()} CPUs"] = None
    devices = dict.fromkeys(str(r.metrics.get("device") or (r.record or {}).get("config", {}).get("device"))
                            for r in report.results
                            if r.metrics and (r.metrics.get("device") or (r.record or {}).get("config", {}).get("device")))
    text = "; ".join(machines) + (f"; device {', '.join(devices)}" if devices else "")
    span = "" if not dates else (min(dates) if min(dates) == max(dates) else f"{min(dates)} to {max(dates)}")
    return text, span


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _recorded_note(report: BenchReport, name: str) -> str:
    n = sum(r.status == "recorded" and r.cell.row.source is None for r in report.results)
    text = ""
    if n:
        text = (f" ({n} cell{'s' if n > 1 else ''} whose run folder is absent here: from {'their' if n > 1 else 'its'} "
                f"record in the previous {name}.json, written from {'their' if n > 1 else 'its'} metrics.json "
                "when they ran, config unchanged)")
    imported: dict[str, list[str]] = {}
    for r in report.results:
        if r.status == "recorded" and r.cell.row.source is not None:
            imported.setdefault(r.cell.row.source, []).append(r.cell.row.label)
    for source, labels in imported.items():
        rows = ", ".join(dict.fromkeys(labels))
        text += (f" (rows {rows}: {len(labels)} cell{'s' if len(labels) > 1 else ''} not run here but read from "
                 f"results/{source}.json, where {'they' if len(labels) > 1 else 'it'} ran under the same config: "
                 "same split, same settings)")
    return text


def results_markdown(report: BenchReport, command: str, written: datetime) -> str:
    p = report.pipeline
    summaries = summarise(report)
    machine, span = _measured_on(report)
    with_dataset = any(s.dataset for s in summaries)
    lines = [f"# {p.name}", ""]
    if p.description:
        lines += [p.description.strip(), ""]
    lines += [f"Produced by `{command}` on {written:%Y-%m-%d %H:%M} UTC"
              + (f" (cells run {span})" if span else "") + f", on {machine}. "
              "Every number is measured: read from the cells' metrics.json" + _recorded_note(report, p.name)
              + ", not typed; "
              f"mean ± sample standard deviation over seeds ({', '.join(map(str, p.seeds))}).", ""]
    head = ["Row"] + (["Dataset"] if with_dataset else []) + [m.removeprefix("test.") for m in p.metrics] \
        + ["n", "Setting", "Ran (from metrics.json)", "Published"]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for s in summaries:
        n_ok, n_all = len(s.finished), len(s.results)
        cells = [_md(s.row.key if p.task.name == "linkpred" else s.row.label)]
        cells += [_md(s.dataset or "")] if with_dataset else []
        cells += [format_mean_std(s.values(m), m) for m in p.metrics]
        cells += [str(n_ok) if n_ok == n_all else f"{n_ok}/{n_all}", _md(s.row.setting or "—"),
                  _md(_ran(report, s) or "—"), _md(format_anchor(s.row.anchor, s.dataset) or "—")]
        lines.append("| " + " | ".join(cells) + " |")
    if p.report:
        lines += ["", "Details (same cells):", ""]
        head = ["Row"] + (["Dataset"] if with_dataset else []) + list(p.report)
        lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for s in summaries:
            cells = [_md(s.row.key if p.task.name == "linkpred" else s.row.label)]
            cells += [_md(s.dataset or "")] if with_dataset else []
            cells += [_md(format_mean_std(s.values(m), m)) for m in p.report]
            lines.append("| " + " | ".join(cells) + " |")
    lines += _comparison_lines(report)
    lines += _scaling_lines(report, summaries)
    failed = report.failed
    missing = [r for r in report.results if r.status == "not run"]
    if failed:
        lines += ["", "Failed cells:", ""] + [f"- `{r.cell.name}`: {_md(r.error)}" for r in failed]
    if missing:
        lines += ["", f"Not run yet: {', '.join(f'`{r.cell.name}`' for r in missing)}."]
    if report.figures:
        lines += ["", "Figures (copied from the cells' run folders):", ""]
        lines += [f"- `{f.name}`: ![{f.name}]({f.parent.name}/{f.name})" for f in report.figures]
    return "\n".join(lines) + "\n"


def scaling_exponent(sizes: list[float], times: list[float]) -> float | None:
    """The fitted exponent ``b`` of ``time ~ size^b``: least squares of log time on log size (two points:
    ``log(t2 / t1) / log(n2 / n1)``); ``None`` with fewer than two distinct positive sizes."""
    pts = [(math.log(n), math.log(t)) for n, t in zip(sizes, times) if n and t and n > 0 and t > 0]
    if len({x for x, _ in pts}) < 2:
        return None
    mx, my = sum(x for x, _ in pts) / len(pts), sum(y for _, y in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def _scaling_lines(report: BenchReport, summaries: list[RowSummary]) -> list[str]:
    """``[bench] scaling = [size, time]``: per row, the exponent fitted over its datasets' measured cells
    (mean over seeds), and between the two largest sizes."""
    p = report.pipeline
    if not p.scaling:
        return []
    size, time_ = p.scaling
    out = ["", f"Fitted time exponents (`{time_}` ~ `{size}`^b, from the measured cells above):", ""]
    for row in p.rows:
        pts = []  # (mean size, mean time) of the row's datasets with both measured (a record may lack one)
        for s in summaries:
            sizes, times = ([v for v in s.values(k) if _is_number(v)] for k in (size, time_))
            if s.row.key == row.key and sizes and times:
                pts.append((mean_std(sizes)[0], mean_std(times)[0]))
        pts.sort()
        b_all = scaling_exponent([n for n, _ in pts], [t for _, t in pts])
        b_top = scaling_exponent([n for n, _ in pts[-2:]], [t for _, t in pts[-2:]])
        if b_all is None:
            out.append(f"- {_md(row.label)}: fewer than two sizes measured")
            continue
        out.append(f"- {_md(row.label)}: b = {b_all:.2f} over {len(pts)} sizes; between the two largest "
                   f"({pts[-2][0]:,.0f} and {pts[-1][0]:,.0f}): b = {b_top:.2f}")
    return out


def results_json(report: BenchReport, command: str, written: datetime) -> dict:
    p = report.pipeline
    paths = [*p.metrics, *p.report]
    kept = list(dict.fromkeys([*paths, *p.scaling]))  # what a record keeps: the table's columns and the scaling
    cells = []
    for r in report.results:
        if r.record is not None:  # carried over as it was recorded
            cells.append({**r.record, "status": "recorded", "out": str(r.cell.out),
                          "config": _without_location(r.record.get("config")),
                          **({"from": r.cell.row.source} if r.cell.row.source else {})})
            continue
        m = r.metrics or {}
        env = _env(r) if r.metrics else {}
        cells.append({
            "name": r.cell.name, "row": r.cell.row.label, "row_key": r.cell.row.key, "dataset": r.cell.dataset,
            "seed": r.cell.seed, "out": str(r.cell.out), "status": r.status, "error": r.error,
            "wall_s": r.wall_s, "config": _without_location(r.cell.config),  # no machine's data folder
            "metrics": {k: metric_value(m, k) for k in kept} if r.metrics else None,
            "timings": {k: v for k, v in (m.get("timings") or {}).items() if _is_number(v)} or None,
            "ran": _ran_one(report, r) if r.metrics else None,
            "machine": {k: env.get(k) for k in ("platform", "cpu_count", "started_utc")} if env else None,
        })
    rows = []
    for s in summarise(report):
        agg = {}
        for k in paths:
            nums = [float(v) for v in s.values(k) if _is_number(v)]
            if nums:
                mean, std = mean_std(nums)
                agg[k] = {"mean": mean, "std": std, "n": len(nums), "text": format_mean_std(s.values(k), k)}
        rows.append({"row": s.row.label, "row_key": s.row.key, "dataset": s.dataset, "setting": s.row.setting,
                     "ran": _ran(report, s), "anchor": s.row.anchor,
                     "seeds": [r.cell.seed for r in s.finished],
                     "failed_seeds": [r.cell.seed for r in s.results if r.status == "failed"], "metrics": agg})
    machine, span = _measured_on(report)
    return {"name": p.name, "task": p.task.name, "pipeline": str(p.path), "command": command,
            "written_utc": written.isoformat(timespec="seconds"), "measured_on": machine, "cells_run": span,
            "seeds": p.seeds, "metrics": p.metrics, "report": p.report,
            "counts": {s: sum(r.status == s for r in report.results)
                       for s in STATUSES},
            "rows": rows, "comparisons": compare_rows(report), "cells": cells}
