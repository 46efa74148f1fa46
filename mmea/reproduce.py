"""Re-run one committed ``mmea bench`` cell from its recorded config and compare its metrics (``mmea reproduce``).

A results file (``results/<name>.json``, written by ``mmea bench``) records, for every cell, the
resolved config it ran with and the metrics it reached.  :func:`reproduce_cell` runs that config
again through the cell's job (:data:`mmea.pipelines.JOBS`: ``align``, ``linkpred``, ``clep``) into
a fresh run directory and compares every recorded numeric metric, rounded to ``digits`` decimals
(timings, which no two runs share, are left out).  It is how a change of the code is shown to
leave a committed table unchanged, and how a reader checks a number.

Two things a recorded config cannot say are supplied here:

* the data folder (the record keeps the path the bench was given, often relative): ``data_dir``;
* options added to mmea *after* the table was measured.  A record without such a key ran with
  the behaviour from before the option existed, which is not always the option's new default;
  :data:`LEGACY_VALUES` holds, per job, the value that reproduces that behaviour (e.g. the FB15K
  side of FB15K-DB15K read FB15k-237's triples only before ``data.fb15k_triples`` existed).

A cell whose job has a time budget (``max_minutes``) stopped where the budget ran out on the
machine that measured it; to reproduce it, pin the epochs it reached (``--set clep.epochs=10``)
and lift the budget (``--set clep.max_minutes=600``): the overrides are recorded with the result.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import MmeaInputError

__all__ = ["LEGACY_VALUES", "Reproduction", "reproduce_cell"]

#: job -> {(section, key): value}: options added after some tables were measured, with the value
#: that gives the behaviour from before they existed (applied only when the record lacks the key)
LEGACY_VALUES: dict[str, dict[tuple[str, str], Any]] = {
    "align": {("data", "fb15k_triples"): "fb15k237",
              # names were used wherever the model read them (selfmea's structure without its names modality)
              ("features", "names"): "on"},
}

#: words in a metric path's parts that keep it out of the comparison (they measure the machine)
SKIPPED_WORDS = ("timings", "time", "rss")


@dataclass
class Reproduction:
    """The outcome of :func:`reproduce_cell`: ``rows`` of ``(metric, committed, now, equal)``."""

    results: str
    cell: str
    run_dir: Path
    overrides: list[str]
    rows: list[tuple[str, float, float | None, bool]] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def all_equal(self) -> bool:
        return bool(self.rows) and all(r[3] for r in self.rows)

    def lines(self, digits: int = 4) -> list[str]:
        """The comparison as console lines."""
        out = [f"{self.cell} ({self.results}): re-run in {self.run_dir} in {self.wall_s:.0f} s"]
        for k, was, now, same in self.rows:
            out.append(f"  {'equal ' if same else 'DIFFER'} {k}: committed {_fmt(was, digits)}, now "
                       f"{'missing' if now is None else _fmt(now, digits)}")
        out.append("every compared metric is equal" if self.all_equal else "SOME METRICS DIFFER")
        return out

    def markdown(self, commit: str | None, digits: int = 4) -> str:
        """A section for a reproduction log (``--record``)."""
        head = (f"### `{self.cell}` of `{self.results}`\n\n"
                f"Re-run from its recorded config on {time.strftime('%Y-%m-%d', time.gmtime())} with mmea "
                f"commit `{commit or 'unknown'}`" + (f", overrides `{' '.join(self.overrides)}`" if self.overrides
                                                     else "") + f"; {self.wall_s:.0f} s.\n\n")
        rows = [f"| {k} | {_fmt(was, digits)} | {_fmt(now, digits)} | {'yes' if same else '**no**'} |"
                for k, was, now, same in self.rows]
        return head + "| metric | committed | now | equal |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"


def _fmt(v: float | None, digits: int) -> str:
    if v is None:
        return "—"
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:.{digits}f}"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _compared(path: str) -> bool:
    """Timings (``timings.*``, ``*_s``, ``*time*``) and memory figures are not compared."""
    return not any(part.endswith("_s") or any(w in part for w in SKIPPED_WORDS) for part in path.split("."))


def _set(raw: dict, dotted: str, value: Any) -> None:
    *path, last = dotted.split(".")
    node = raw
    for p in path:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise MmeaInputError(f"--set {dotted}: {p} is not a section of the recorded config")
    node[last] = value


def _parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise MmeaInputError(f"--set {text!r}: expected KEY=VALUE (e.g. clep.epochs=10)")
    key, value = text.split("=", 1)
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value  # a bare string


def find_cell(results: str | Path, cell: str) -> tuple[dict, dict]:
    """``(results record, its cell)``; errors name the file and list the cells."""
    path = Path(results)
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise MmeaInputError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise MmeaInputError(f"{path}: not a JSON results file ({e})") from None
    cells = rec.get("cells") if isinstance(rec, dict) else None
    if not isinstance(cells, list) or "task" not in rec:
        raise MmeaInputError(f"{path}: not an mmea bench results file (no task / cells)")
    for c in cells:
        if isinstance(c, dict) and c.get("name") == cell:
            if not isinstance(c.get("config"), dict) or not isinstance(c.get("metrics"), dict):
                raise MmeaInputError(f"{path}: cell {cell!r} has no recorded config and metrics")
            return rec, c
    names = ", ".join(str(c.get("name")) for c in cells[:12] if isinstance(c, dict))
    raise MmeaInputError(f"{path}: no cell {cell!r}", hint=f"cells: {names}{', ...' if len(cells) > 12 else ''}")


def recorded_config(rec: dict, cell: dict, data_dir: str | None, overrides: list[str]):
    """The cell's job module and its validated config: the record, the legacy values of options it
    predates, the data folder and the overrides."""
    from .pipelines import JOBS

    task = rec["task"]
    if task not in JOBS:
        raise MmeaInputError(f"unknown job {task!r} in the results file; known: {', '.join(JOBS)}")
    job = JOBS[task]
    raw = copy.deepcopy(cell["config"])
    raw = job.normalise(raw) if hasattr(job, "normalise") else raw
    data_section = "data" if task == "align" else "source"
    for (section, key), value in LEGACY_VALUES.get(task, {}).items():
        if key not in raw.get(section, {}):
            raw.setdefault(section, {})[key] = value
    if data_dir is not None:
        raw.setdefault(data_section, {})["data_dir"] = str(data_dir)
    for text in overrides:
        _set(raw, *_parse_override(text))
    return job, job.resolve_config(raw)


def reproduce_cell(results: str | Path, cell: str, *, data_dir: str | None = None, out: str | Path | None = None,
                   overrides: list[str] | tuple[str, ...] = (), digits: int = 4,
                   progress: bool = False) -> Reproduction:
    """Run cell ``cell`` of the results file ``results`` again and compare its metrics (module doc)."""
    from .bench import metric_value

    rec, c = find_cell(results, cell)
    job, config = recorded_config(rec, c, data_dir, list(overrides))
    run_dir = Path(out) if out is not None else Path("runs") / "reproduce" / cell
    t0 = time.perf_counter()
    metrics = job.run(config, run_dir, overwrite=True, progress=progress)
    rep = Reproduction(str(results), cell, run_dir, list(overrides), wall_s=time.perf_counter() - t0)
    for key, was in c["metrics"].items():
        if not _is_number(was) or not _compared(key):
            continue
        now = metric_value(metrics, key)
        now = float(now) if _is_number(now) else None
        rep.rows.append((key, float(was), now, now is not None and round(now, digits) == round(float(was), digits)))
    return rep
