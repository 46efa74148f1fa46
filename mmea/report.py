"""The ``mmea report`` page: one self-contained HTML file describing an ``mmea align`` run.

:func:`write_report` reads a run directory (``metrics.json``, ``alignment.csv``,
``calibration.json``, ``valid_scores.npz``, ``config.toml``) and writes one HTML
file whose figures are matplotlib PNGs embedded as ``data:`` URIs, with inline
CSS and no script, so the page can be mailed or archived on its own.

Sections (:data:`SECTION_TITLES`), each built by one ``section_*`` function
from a :class:`RunFiles`; a section whose data the run lacks still appears,
with one ``not available for this run: <reason>`` line (:data:`NOT_AVAILABLE`):

* **Run** - dataset, model, seed, split sizes, the name encoder that ran, test
  metrics, notes, timings per stage.
* **Training curves** - ``model_info.history``: every ``*loss*`` and every
  ``*hits*`` / ``*mrr*`` series against the epoch (or round).
* **Hits@k against k** - the gold target's rank per test link from
  ``test_ranks.npy`` (exact for every ``k``; written by ``mmea align``), else
  read from ``alignment.csv`` (exact for ``k`` up to the ranks it holds, see
  ``mmea align --topk``), with the Hits@k points of ``metrics.json``.
* **Score and margin** - histograms of the predicted pairs' score and margin,
  correct vs incorrect (test gold; else the validation scores).
* **Precision against coverage** - the predicted pairs kept from the most
  confident down: the calibration's estimated precision and, with gold test
  links, the measured one; the calibration curve with its reliability table.
* **Modality weights** - SelfMEA's ``fusion_weights`` or the Gaussian
  model's ``variances`` by modality.
* **Most confident errors** - the wrong predicted pairs with the highest
  estimated precision (or margin), with the names of the predicted and gold targets.

The pure steps (:func:`history_series`, :func:`gold_ranks`, :func:`hits_curve`,
:func:`precision_coverage`, :func:`confident_errors`) take arrays or frames and
are testable without a figure.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import MmeaError, MmeaInputError
from .runs import atomic_write_text, check_complete

__all__ = [
    "REPORT_FILE",
    "NOT_AVAILABLE",
    "SECTION_TITLES",
    "RunFiles",
    "Section",
    "load_run",
    "build_sections",
    "render_html",
    "write_report",
    "history_series",
    "gold_ranks",
    "load_test_ranks",
    "hits_curve",
    "precision_coverage",
    "confident_errors",
]

REPORT_FILE = "report.html"
#: The prefix of the line a section shows when the run lacks its data.
NOT_AVAILABLE = "not available for this run"
#: Hits@k is drawn for k = 1 .. HITS_KMAX.
HITS_KMAX = 50
#: Rows of the most-confident-errors table.
TOP_ERRORS = 20
#: Precision targets tabulated under the precision-coverage curve (as ``mmea export --min-precision``).
PRECISION_TARGETS = (0.8, 0.9, 0.95, 0.99)

SECTION_TITLES = {
    "run": "Run",
    "training": "Training curves",
    "hits": "Hits@k against k",
    "scores": "Score and margin of the predicted pairs",
    "coverage": "Precision against coverage",
    "modalities": "Modality weights and variances",
    "errors": "Most confident errors",
}


# -- reading the run -------------------------------------------------------------------

@dataclass
class RunFiles:
    """What a run directory holds, read once; ``*_missing`` says why a part is absent.

    Attributes:
        path: the run directory.
        metrics: ``metrics.json``.
        config_text: ``config.toml`` as text, or ``None``.
        alignment: ``alignment.csv`` with ``est_precision``, ``_predicted`` and ``_pos``
            (:func:`mmea.calibration.calibrated_alignment`), or ``None``.
        calibration: the :class:`~mmea.calibration.Calibration` (possibly unavailable), or ``None``.
        valid_scores: ``valid_scores.npz`` as :class:`~mmea.calibration.ValidScores`, or ``None``.
        test_ranks: ``test_ranks.npy`` as ``(n,)`` float ranks (``inf``: not ranked), or ``None``.
    """

    path: Path
    metrics: dict
    config_text: str | None = None
    alignment: Any = None
    alignment_missing: str | None = None
    calibration: Any = None
    calibration_missing: str | None = None
    valid_scores: Any = None
    test_ranks: np.ndarray | None = None
    _gold_cache: dict | None = field(default=None, repr=False)

    @property
    def model_info(self) -> dict:
        info = self.metrics.get("model_info")
        return info if isinstance(info, dict) else {}

    def predicted(self):
        """The predicted pair of each query source (a frame), or ``None`` without a readable ``alignment.csv``."""
        df = self.alignment
        return df.loc[df["_predicted"].to_numpy()] if df is not None else None

    def has_gold(self) -> bool:
        df = self.alignment
        return df is not None and "gold" in df and bool(df["gold"].notna().any())


def load_run(run_dir: str | Path) -> RunFiles:
    """Read a run directory written by ``mmea align``; a missing directory or ``metrics.json`` is an input error."""
    from .calibration import (CALIBRATION_FILE, VALID_SCORES_FILE, Calibration, ValidScores, calibrated_alignment,
                              load_calibration)

    path = Path(run_dir)
    if not path.is_dir():
        raise MmeaInputError(f"{path}: run directory not found (mmea report reads a directory written by mmea align)")
    check_complete(path)  # an interrupted, failed or edited run is refused, never reported
    mpath = path / "metrics.json"
    if not mpath.is_file():
        raise MmeaInputError(f"{mpath}: file not found, so {path} is not a finished mmea align run")
    try:
        metrics = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MmeaInputError(f"{mpath}: not valid JSON ({e})") from None
    if not isinstance(metrics, dict):
        raise MmeaInputError(f"{mpath}: not a metrics object")
    run = RunFiles(path, metrics)
    cpath = path / "config.toml"
    run.config_text = cpath.read_text(encoding="utf-8") if cpath.is_file() else None

    cal = None
    if not (path / CALIBRATION_FILE).is_file():
        run.calibration_missing = (f"no {CALIBRATION_FILE} in the run directory (runs made before calibration "
                                   f"existed have none; re-run mmea align)")
    else:
        try:
            cal = load_calibration(path)
        except MmeaInputError as e:
            run.calibration_missing = e.message
        else:
            if not cal.available:
                run.calibration_missing = f"no calibration: {cal.reason}"
    run.calibration = cal
    if (path / VALID_SCORES_FILE).is_file():
        try:
            run.valid_scores = ValidScores.load(path / VALID_SCORES_FILE)
        except MmeaInputError:
            run.valid_scores = None

    run.test_ranks = load_test_ranks(path)
    if not (path / "alignment.csv").is_file():
        run.alignment_missing = "no alignment.csv in the run directory"
    else:
        try:
            run.alignment, _ = calibrated_alignment(path, calibration=cal if cal is not None
                                                    else Calibration.unavailable("none"))
        except MmeaInputError as e:
            run.alignment_missing = e.message
    return run


# -- pure steps ------------------------------------------------------------------------

def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def history_series(history: Sequence[dict]) -> tuple[str, np.ndarray, dict[str, np.ndarray]]:
    """``(x label, (n,) x, {series key: (n,) float with NaN})`` from ``model_info.history``.

    Nested dicts are flattened (``losses.rel``, ``valid.hits@1``); ``x`` is the
    ``epoch`` (or ``round``) key, else the position.  Only keys with at least
    one finite number become series; ``epoch`` / ``round`` / ``stage`` do not.
    """
    rows = [_flatten(h) for h in history if isinstance(h, dict)]
    xkey = next((k for k in ("epoch", "round") if rows and all(_is_number(r.get(k)) for r in rows)), None)
    x = np.array([r[xkey] for r in rows], np.float64) if xkey else np.arange(len(rows), dtype=np.float64)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    series = {}
    for k in keys:
        if k in ("epoch", "round", "stage"):
            continue
        vals = np.array([r[k] if _is_number(r.get(k)) else np.nan for r in rows], np.float64)
        if np.isfinite(vals).any():
            series[k] = vals
    return xkey or "position in history", x, series


def gold_ranks(df) -> tuple[np.ndarray, int]:
    """``((s,) rank of the gold target per judged source, inf when not in its list; K = longest ranked list)``.

    ``df``: an alignment frame with ``src_id``, ``rank`` and ``gold`` (one row
    per ranked candidate).  A source is judged when its ``gold`` cells are not
    empty; rows without a rank (a matched target beyond the ranked list) are
    skipped.  Hits@k is exact for ``k <= K``.
    """
    if df is None or not len(df) or "gold" not in df or "rank" not in df:
        return np.zeros(0), 0
    judged = df["gold"].notna().to_numpy()
    rank = df["rank"].to_numpy(dtype=np.float64, na_value=np.nan)
    ok = judged & np.isfinite(rank)
    if not ok.any():
        return np.zeros(0), 0
    sub = df.loc[ok, ["src_id"]].copy()
    sub["r"] = np.where(df.loc[ok, "gold"].to_numpy(dtype=bool), rank[ok], np.inf)
    ranks = sub.groupby("src_id", sort=False)["r"].min().to_numpy(np.float64)
    return ranks, int(np.nanmax(rank[ok]))


def load_test_ranks(run_dir: Path) -> np.ndarray | None:
    """``test_ranks.npy`` as float ranks, ``inf`` where a link was not ranked (``< 1``); ``None``
    when the file is absent or unreadable (runs made before it existed)."""
    from .pipelines.align import TEST_RANKS_FILE

    p = Path(run_dir) / TEST_RANKS_FILE
    if not p.is_file():
        return None
    try:
        r = np.load(p, allow_pickle=False).astype(np.float64).reshape(-1)
    except (OSError, ValueError):
        return None
    r[r < 1] = np.inf
    return r


def hits_curve(ranks: np.ndarray, kmax: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ks = 1..kmax, Hits@k)`` of 1-based ranks (``inf``: not found)."""
    ranks = np.asarray(ranks, np.float64).reshape(-1)
    ks = np.arange(1, int(kmax) + 1)
    if not len(ranks):
        return ks, np.full(len(ks), np.nan)
    return ks, (ranks[None, :] <= ks[:, None]).mean(1)


def precision_coverage(pred, num_sources: int, feature: str = "margin") -> dict[str, np.ndarray]:
    """Keep the predicted pairs from the most confident down: coverage, estimated and measured precision.

    ``pred``: one row per predicted pair with ``est_precision``, the
    calibration ``feature`` (ties of the stepwise estimate broken by it) and
    ``gold`` (optional).  Returns ``(n,)`` arrays ``coverage`` (kept pairs /
    ``num_sources``), ``estimated`` (mean estimate of the kept pairs),
    ``measured`` (correct / judged among the kept pairs, NaN before the first
    judged one), ``est`` (each pair's estimate, in that order).
    """
    est = pred["est_precision"].to_numpy(np.float64)
    feat = pred[feature].to_numpy(np.float64) if feature in pred else np.zeros(len(pred))
    order = np.lexsort((-np.nan_to_num(feat, nan=-np.inf), -np.nan_to_num(est, nan=-np.inf)))
    est = est[order]
    n = np.arange(1, len(est) + 1)
    out = {"coverage": n / max(int(num_sources), 1), "estimated": np.cumsum(np.nan_to_num(est)) / n, "est": est}
    if "gold" in pred:
        judged = pred["gold"].notna().to_numpy()[order]
        correct = pred["gold"].fillna(False).to_numpy(bool)[order]
        cj = np.cumsum(judged)
        out["measured"] = np.where(cj > 0, np.cumsum(correct) / np.maximum(cj, 1), np.nan)
        out["judged"] = cj
    return out


def _isna(v: Any) -> bool:
    import pandas as pd

    return bool(pd.isna(v))


def confident_errors(pred, n: int = TOP_ERRORS):
    """The ``n`` wrong predicted pairs (``gold`` False) by estimated precision, then margin, then score."""
    wrong = pred.loc[~pred["gold"].fillna(True).to_numpy(dtype=bool)]  # judged and wrong
    keys = [c for c in ("est_precision", "margin", "score") if c in wrong]
    return wrong.sort_values(keys, ascending=False, na_position="last", kind="stable").head(n)


# -- HTML helpers ----------------------------------------------------------------------

@dataclass
class Section:
    """One part of the page: an anchor key, a title and its HTML body."""

    key: str
    title: str
    body: str
    available: bool = True
    reason: str | None = None


def _esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _na(reason: str) -> str:
    return f'<p class="na">{NOT_AVAILABLE}: {_esc(reason)}</p>'


def _unavailable(key: str, title: str, why: str) -> "Section":
    """A section that says why it has nothing to show."""
    return Section(key, title, _na(why), False, why)


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "&ndash;"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return _esc(v)


@dataclass
class _Html:
    """Markup that :func:`_table` puts in a cell as is (everything else is escaped)."""

    html: str


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    """An HTML table; cells are formatted by :func:`_fmt` (escaped), :class:`_Html` cells kept as is."""
    def cell(v):
        return v.html if isinstance(v, _Html) else _fmt(v)

    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _figure(draw: Callable[[Any], None], width: float = 6.4, height: float = 3.6, ncols: int = 1,
            alt: str = "figure") -> str:
    """Draw on a fresh Agg figure (``draw(axes)``) and return an ``<img>`` with the PNG inline."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    draw(axes if ncols > 1 else axes[0])
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _entity(name: Any, uri: Any, ident: Any = None) -> _Html:
    name = "" if name is None or _isna(name) else str(name)
    uri = "" if uri is None or _isna(uri) else str(uri)
    shown = name or (str(ident) if ident is not None else "") or uri
    sub = uri if uri and uri != shown else (str(ident) if ident is not None and str(ident) != shown else "")
    return _Html(f"{_esc(shown)}" + (f'<br><span class="uri">{_esc(sub)}</span>' if sub else ""))


# -- sections --------------------------------------------------------------------------

def section_run(run: RunFiles) -> Section:
    """Dataset, model, seed, split, name encoder, test metrics, notes and timings."""
    m, info = run.metrics, run.model_info
    rows: list[list[Any]] = [["run directory", str(run.path)], ["dataset", m.get("dataset")],
                             ["model", m.get("model")], ["seed", m.get("seed")], ["device", m.get("device")]]
    split = m.get("split") or {}
    if split:
        prov = m.get("split_provenance") or {}
        how = f" ({prov.get('kind')})" if isinstance(prov, dict) and prov.get("kind") else ""
        rows.append(["split (links)", ", ".join(f"{k} {v:,}" for k, v in split.items()) + how])
    rows.append(["name encoder", _name_encoder(info)])
    mods = info.get("modalities")  # name -> entities that have it (older selfmea runs: a list of names)
    if isinstance(mods, (list, dict)) and mods:
        rows.append(["modalities", ", ".join(map(str, mods))])
    if info.get("mode"):
        rows.append(["training mode", info["mode"]])
    seeds = info.get("seeds")
    if isinstance(seeds, dict) and seeds.get("kind"):
        rows.append(["seeds", f"{seeds['kind']}" + (f", {seeds['count']:,}" if _is_number(seeds.get("count")) else "")])
    t = m.get("test") or {}
    if t:
        rows.append([f"test ({m.get('primary', '')}, {m.get('candidates', 'test')} candidates)",
                     _Html("  ".join(f"{k.upper() if k in ('mr', 'mrr') else k.replace('hits', 'H')} "
                                     f"{_fmt(v, 4 if k != 'mr' else 2)}" for k, v in t.items()
                                     if k.startswith("hits@") or k in ("mr", "mrr")))])
    else:
        rows.append(["test", "no gold test links: ranking metrics were not computed"])
    rec = (m.get("test_by_method") or {}).get("src->tgt/reciprocal")
    if isinstance(rec, dict):  # the third ranking, both sides' preferences (mmea.search.reciprocal)
        rows.append(["test, reciprocal ranking (both sides' preferences"
                     + (f"; {rec['ranks_from']})" if rec.get("ranks_from") else ")"),
                     "  ".join(f"{k.upper() if k == 'mrr' else k.replace('hits', 'H')} {_fmt(rec[k], 4)}"
                               for k in ("hits@1", "hits@10", "mrr") if _is_number(rec.get(k)))])
    mt = m.get("matched")
    if isinstance(mt, dict) and mt.get("method") not in (None, "none"):
        rows.append(["matching", f"{mt['method']}: {mt.get('pairs', 0):,} pairs"
                     + (f", precision {mt['precision']:.4f}, recall {mt['recall']:.4f}" if "precision" in mt else "")])
    cal = m.get("calibration")
    if isinstance(cal, dict):
        rows.append(["calibration", f"isotonic on the {cal.get('feature')}, {cal.get('n_valid')} validation links"
                     if cal.get("available") else f"none ({cal.get('reason')})"])
    body = "<h3>Summary</h3>" + _table(["", ""], rows, "kv")

    notes = m.get("notes") or []
    body += "<h3>Notes</h3>" + ("<ul>" + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul>" if notes
                                else "<p>none</p>")
    timings = m.get("timings") or {}
    stages = [(k[:-2] if k.endswith("_s") else k, float(v)) for k, v in timings.items() if _is_number(v)]
    if stages:
        total = next((v for k, v in stages if k == "total"), sum(v for _, v in stages))
        body += "<h3>Timings</h3>" + _table(["stage", "seconds", "share of total"],
                                            [[k, f"{v:.2f}", f"{100 * v / total:.1f} %" if total and k != "total"
                                              else ""] for k, v in stages], "num")
    else:
        body += "<h3>Timings</h3>" + _na("metrics.json has no timings")
    return Section("run", SECTION_TITLES["run"], body)


def _name_encoder(info: dict) -> str:
    ne = info.get("name_encoder")
    if isinstance(ne, dict) and ne.get("encoder"):
        s = str(ne["encoder"]) + (f" ({ne['model']})" if ne.get("model") else "")
        if ne.get("requested") and ne["requested"] not in ("auto", ne["encoder"]):
            s += f", requested {ne['requested']}"
        if ne.get("fallback_reason"):
            s += f"; fell back: {ne['fallback_reason']}"
        return s
    names = ((info.get("features") or {}).get("modalities") or {}).get("names")
    if isinstance(names, dict) and names.get("encoder"):
        return str(names["encoder"]) + (f" ({names['model']})" if names.get("model") else "")
    return "none recorded (this model does not encode names, or metrics.json predates the record)"


def section_training(run: RunFiles) -> Section:
    key, title = "training", SECTION_TITLES["training"]
    hist = run.model_info.get("history")
    if not isinstance(hist, list) or not hist:
        why = f"model {run.metrics.get('model', '?')} records no training history in metrics.json " \
              f"(model_info.history; training-free models have none)"
        return _unavailable(key, title, why)
    xlabel, x, series = history_series(hist)
    losses = {k: v for k, v in series.items() if "loss" in k.lower()}
    quality = {k: v for k, v in series.items() if "hits" in k.lower() or "mrr" in k.lower()}
    if not losses and not quality:
        why = "model_info.history has no loss or hits series"
        return _unavailable(key, title, why)
    panels = [(d, lab) for d, lab in ((losses, "loss"), (quality, "hits / MRR")) if d]

    from matplotlib.ticker import MaxNLocator

    def draw(axes):
        for ax, (d, lab) in zip(np.atleast_1d(axes), panels):
            for k, v in d.items():
                ok = np.isfinite(v)
                ax.plot(x[ok], v[ok], marker="o", markersize=3, label=k)
            ax.set_xlabel(xlabel)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(lab)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)

    img = _figure(draw, width=4.2 * len(panels), height=3.4, ncols=len(panels), alt="training curves")
    other = [k for k in series if k not in losses and k not in quality]
    body = img + f"<p>{len(x)} entries of <code>model_info.history</code>."
    if "best_epoch" in run.model_info:
        body += f" Kept state: epoch {_esc(run.model_info['best_epoch'])}."
    elif isinstance(run.model_info.get("best"), dict) and "round" in run.model_info["best"]:
        body += f" Kept state: round {_esc(run.model_info['best']['round'])}."
    if other:
        body += " Other series (not drawn): " + ", ".join(f"<code>{_esc(k)}</code>" for k in other) + "."
    return Section(key, title, body + "</p>")


def section_hits(run: RunFiles) -> Section:
    key, title = "hits", SECTION_TITLES["hits"]
    t = run.metrics.get("test") or {}
    points = sorted((int(mm.group(1)), float(v)) for k, v in t.items()
                    if (mm := re.fullmatch(r"hits@(\d+)", k)) and _is_number(v))
    exact = run.test_ranks is not None and len(run.test_ranks) > 0
    ranks, K = (run.test_ranks, HITS_KMAX) if exact else gold_ranks(run.alignment)
    use_csv = len(ranks) > 0 and (K >= 2 or exact)
    if not points and not use_csv:
        why = "no gold test links: metrics.json has no test Hits@k and the gold column of alignment.csv is empty"
        return _unavailable(key, title, why)
    kmax = min(K, HITS_KMAX) if use_csv else HITS_KMAX

    def draw(ax):
        if use_csv:
            ks, h = hits_curve(ranks, kmax)
            ax.plot(ks, h, drawstyle="steps-post", label=f"test_ranks.npy ({len(ranks):,} test links)" if exact
                    else f"alignment.csv ({len(ranks):,} test sources)")
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], "o", color="C3",
                    label=f"metrics.json ({run.metrics.get('primary', 'test')})")
        ax.set_xlim(0, (kmax if use_csv else max(HITS_KMAX, points[-1][0])) + 1)
        ax.set_xlabel("k")
        ax.set_ylabel("Hits@k")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")

    body = _figure(draw, alt="Hits@k against k")
    if exact:
        src = (f"The curve is computed from <code>test_ranks.npy</code>, the rank of each test link's gold "
               f"target in the {_esc(run.metrics.get('primary', 'primary'))} ranking, so it is exact for every k.")
    elif use_csv:
        src = (f"The curve is computed from the <code>rank</code> and <code>gold</code> columns of "
               f"<code>alignment.csv</code>, which ranks {K} target(s) per source, so it is exact for k = 1..{kmax}")
        src += (f"; beyond k = {K} it is not known (<code>mmea align --topk {HITS_KMAX}</code> writes the "
                f"full curve)." if K < HITS_KMAX else ".")
    else:
        held = "holds only the top-1 target per source" if K == 1 else "does not mark the gold targets"
        src = (f"<code>alignment.csv</code> {held}, so the gold targets' ranks "
               f"are not stored: the points are the Hits@k that <code>metrics.json</code> reports "
               f"(k = {', '.join(str(p[0]) for p in points)}). <code>mmea align --topk {HITS_KMAX}</code> "
               f"writes the candidates needed for the full curve.")
    rows = [[f"Hits@{k}", v] for k, v in points]
    if use_csv:
        _, h = hits_curve(ranks, kmax)
        rows = [[f"Hits@{k}", dict(points).get(k), float(h[k - 1]) if k <= kmax else None]
                for k in sorted({1, 5, 10, 20, 50, *dict(points)}) if k <= kmax or k in dict(points)]
        return Section(key, title, body + f"<p>{src}</p>" +
                       _table(["", "metrics.json", "test_ranks.npy" if exact else "alignment.csv"], rows, "num"))
    return Section(key, title, body + f"<p>{src}</p>" + _table(["", "metrics.json"], rows, "num"))


def _hist_pair(ax, good: np.ndarray, bad: np.ndarray, xlabel: str, labels=("correct", "incorrect")) -> None:
    both = np.concatenate([good, bad])
    both = both[np.isfinite(both)]
    bins = np.histogram_bin_edges(both, bins=40) if len(both) else 10
    for v, lab, c in ((good, labels[0], "C2"), (bad, labels[1], "C3")):
        v = v[np.isfinite(v)]
        if len(v):
            ax.hist(v, bins=bins, alpha=0.55, color=c, label=f"{lab} ({len(v):,})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("pairs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def section_scores(run: RunFiles) -> Section:
    key, title = "scores", SECTION_TITLES["scores"]
    pred = run.predicted()
    if pred is None:
        return _unavailable(key, title, run.alignment_missing or "no alignment.csv")
    score = pred["score"].to_numpy(np.float64) if "score" in pred else np.full(len(pred), np.nan)
    margin = pred["margin"].to_numpy(np.float64) if "margin" in pred else np.full(len(pred), np.nan)
    has_margin = bool(np.isfinite(margin).any())
    if run.has_gold():
        g = pred["gold"]
        good = g.fillna(False).to_numpy(bool)
        bad = (~g.fillna(True)).to_numpy(bool)
        what = (f"the predicted pair of each test source (rank 1, or the matched pair): {int(good.sum()):,} "
                f"correct, {int(bad.sum()):,} incorrect by the gold test links")
        panels = [(score[good], score[bad], "score")]
        if has_margin:
            panels.append((margin[good], margin[bad], "margin (score - runner-up)"))
        body = ""
        if not has_margin:
            vs = run.valid_scores
            if vs is not None and len(vs):
                m = vs.feature("margin")
                panels.append((m[vs.correct], m[~vs.correct], "margin, validation sources"))
                what += "; alignment.csv has no margin, so the margin panel shows the validation sources"
            else:
                body += _na("margin histogram: alignment.csv has no margin and there is no valid_scores.npz")
        labels = ("correct", "incorrect")
    else:
        vs = run.valid_scores
        if vs is None or not len(vs):
            why = "no gold links to tell correct from incorrect pairs: the gold column of alignment.csv is " \
                  "empty and there is no valid_scores.npz"
            s_all = score[np.isfinite(score)]
            if not len(s_all):
                return _unavailable(key, title, why)
            plain = [(score, "score")] + ([(margin, "margin (score - runner-up)")] if has_margin else [])

            def draw_plain(axes):
                for ax, (v, lab) in zip(np.atleast_1d(axes), plain):
                    _hist_pair(ax, v, np.zeros(0), lab, ("predicted pairs", ""))

            img = _figure(draw_plain, width=4.2 * len(plain), height=3.4, ncols=len(plain),
                          alt="score and margin histograms")
            return Section(key, title, _na(f"correct vs incorrect: {why}") + img +
                           "<p>All predicted pairs, unlabelled.</p>", False, why)
        panels = [(vs.score1[vs.correct].astype(np.float64), vs.score1[~vs.correct].astype(np.float64), "score"),
                  (vs.feature("margin")[vs.correct], vs.feature("margin")[~vs.correct], "margin")]
        what = (f"no gold test links, so these are the {len(vs):,} validation sources (valid_scores.npz): "
                f"their top-1 target ranked like the query sources")
        body = _na("correct vs incorrect test pairs: the run has no gold test links")
        labels = ("correct", "incorrect")

    def draw(axes):
        for ax, (a, b, lab) in zip(np.atleast_1d(axes), panels):
            _hist_pair(ax, a, b, lab, labels)

    img = _figure(draw, width=4.2 * len(panels), height=3.4, ncols=len(panels), alt="score and margin histograms")
    return Section(key, title, img + f"<p>Counts of {_esc(what)}.</p>" + body)


def section_coverage(run: RunFiles) -> Section:
    key, title = "coverage", SECTION_TITLES["coverage"]
    cal = run.calibration
    if cal is None or not cal.available:
        why = run.calibration_missing or "no calibration"
        return _unavailable(key, title, why)
    pred = run.predicted()
    if pred is None:
        return _unavailable(key, title, run.alignment_missing or "no alignment.csv")
    n_src = int(run.alignment["src_id"].nunique())
    if cal.feature not in pred and all(c in pred for c in cal.columns()):  # the combined margin + variance input
        pred = pred.assign(**{cal.feature: cal.values(pred)})
    pc = precision_coverage(pred, n_src, cal.feature)
    measured = pc.get("measured")
    has_measured = measured is not None and np.isfinite(measured).any()

    def draw(axes):
        ax, ax2 = axes
        ax.plot(pc["coverage"], pc["estimated"], label="estimated (calibration)")
        if has_measured:
            ax.plot(pc["coverage"], measured, label="measured on the test links")
        for p in (0.9, 0.95):
            ax.axhline(p, color="grey", lw=0.6, ls=":")
        ax.set_xlabel("coverage (pairs kept / query sources)")
        ax.set_ylabel("precision of the kept pairs")
        ax.set_xlim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
        xs = np.linspace(cal.x[0], cal.x[-1], 200) if len(cal.x) > 1 else cal.x
        ax2.plot(xs, cal.predict(xs), color="C0", label="isotonic fit")
        ax2.set_xlabel(cal.feature if cal.weights is None else "w0 + w1 margin + w2 log uncertainty")
        ax2.set_ylabel("estimated precision")
        ax2.set_ylim(-0.02, 1.02)
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=8, loc="lower right")

    img = _figure(draw, width=9.0, height=3.6, ncols=2, alt="precision against coverage")
    rows = []
    est = pc["est"]
    for p in PRECISION_TARGETS:
        kept = int((np.nan_to_num(est, nan=-1) >= p).sum())
        row: list[Any] = [f">= {p:g}", kept, kept / max(n_src, 1), float(np.mean(est[:kept])) if kept else None]
        if has_measured:
            row += [float(measured[kept - 1]) if kept and np.isfinite(measured[kept - 1]) else None,
                    int(pc["judged"][kept - 1]) if kept else 0]
        rows.append(row)
    header = ["--min-precision", "pairs kept", "coverage", "mean estimate"] + \
        (["test precision", "judged by gold"] if has_measured else [])
    body = img + (f"<p>Left: the predicted pairs of the {n_src:,} query sources, kept from the highest estimated "
                  f"precision down (ties by {cal.feature}); the estimate comes from <code>calibration.json</code>, "
                  f"fitted on {cal.n_valid} validation links (valid H@1 {cal.n_correct / max(cal.n_valid, 1):.3f}). "
                  f"Right: the calibration curve.</p>")
    if not has_measured:
        body += _na("measured test precision: no gold test links in alignment.csv")
    body += "<h3>What <code>mmea export --min-precision P</code> keeps</h3>" + _table(header, rows, "num")
    if cal.reliability:
        body += ("<h3>Reliability of the calibration (validation, out-of-fold)</h3>"
                 + _table(["estimate bin", "links", "mean estimate", "observed precision"],
                          [[f"{r['lo']:.1f}-{r['hi']:.1f}", r["n"], r["mean_predicted"], r["observed"]]
                           for r in cal.reliability], "num"))
    return Section(key, title, body)


def section_modalities(run: RunFiles) -> Section:
    key, title = "modalities", SECTION_TITLES["modalities"]
    info = run.model_info
    w = info.get("fusion_weights")
    if isinstance(w, dict) and w and all(_is_number(v) for v in w.values()):
        names, vals = list(w), [float(v) for v in w.values()]

        def draw(ax):
            ax.bar(names, vals, color=[f"C{i}" for i in range(len(names))])
            for i, v in enumerate(vals):
                ax.text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
            ax.set_ylabel("fusion weight")
            ax.grid(alpha=0.3, axis="y")

        img = _figure(draw, width=max(4.0, 1.1 * len(names) + 1.5), height=3.2, alt="modality weights")
        return Section(key, title, img + "<p>Learned modality weights (<code>model_info.fusion_weights</code>): "
                       "the share of each modality in the fused embedding.</p>"
                       + _table(["modality", "weight"], [[n, v] for n, v in zip(names, vals)], "num"))
    var = {k: v for k, v in info.items() if "variance" in k.lower()}
    if var:
        body = ""
        # the variances as training left them (gaussian: variances_last), else the kept state's
        learned = next((var[k] for k in ("variances_last", "variances") if isinstance(var.get(k), dict)), {})
        common = learned.get("common")
        if isinstance(common, dict) and common:
            mods = [m for m, d in common.items() if isinstance(d, dict)]

            def draw(ax):
                xs = np.arange(len(mods))
                for j, (part, c) in enumerate((("with", "C0"), ("without", "C7"))):
                    vals = [common[m].get(part) for m in mods]
                    ax.bar(xs + (j - 0.5) * 0.38, [v if _is_number(v) else 0 for v in vals], 0.38, color=c,
                           label=f"entities {part} the modality")
                ax.set_xticks(xs, mods)
                ax.set_ylabel("mean common-space variance")
                ax.grid(alpha=0.3, axis="y")
                ax.legend(fontsize=8)

            body += _figure(draw, width=6.0, height=3.2, alt="variances by modality")
        by_degree = learned.get("common_by_degree")
        if isinstance(by_degree, dict) and by_degree:
            bins = [b for b, v in by_degree.items() if _is_number(v)]

            def draw_degree(ax):
                ax.bar(bins, [by_degree[b] for b in bins], color="C2")
                ax.set_xlabel("relational degree (triples of the entity)")
                ax.set_ylabel("mean common-space variance")
                ax.grid(alpha=0.3, axis="y")

            body += _figure(draw_degree, width=6.0, height=3.0, alt="variances by relational degree")
        flat = {k: v for name, d in var.items() for k, v in (_flatten(d, f"{name}.") if isinstance(d, dict)
                                                              else {name: d}).items()}
        body += ("<p>Learned variances by modality (<code>model_info</code> keys with &ldquo;variance&rdquo;): "
                 "a larger variance means the model is less sure of the entity's position.</p>"
                 + _table(["key", "value"], [[k, v] for k, v in flat.items()], "num"))
        return Section(key, title, body)
    why = (f"model {run.metrics.get('model', '?')} learns no modality weights or variances "
           f"(selfmea records model_info.fusion_weights, gaussian model_info.variances)")
    return _unavailable(key, title, why)


def _gold_targets(run: RunFiles) -> tuple[dict, str | None]:
    """``{src_id: [(tgt_id, uri, name), ...]}`` of the test links from the run's ``gold_targets.csv``
    (:data:`mmea.runs.GOLD_FILE`, written by ``mmea align``); the dataset is never reloaded."""
    from .runs import GOLD_FILE, read_gold_targets

    if run._gold_cache is None:
        try:
            got = read_gold_targets(run.path)
            why = None if got is not None else (f"the run has no {GOLD_FILE} (older runs did not write it); "
                                                f"re-run the alignment to name them")
        except (MmeaError, OSError, ValueError) as e:
            got, why = None, f"{GOLD_FILE} could not be read ({getattr(e, 'message', None) or e})"
        run._gold_cache = {"map": got or {}, "why": why}
    return run._gold_cache["map"], run._gold_cache["why"]


def section_errors(run: RunFiles) -> Section:
    key, title = "errors", SECTION_TITLES["errors"]
    pred = run.predicted()
    if pred is None:
        return _unavailable(key, title, run.alignment_missing or "no alignment.csv")
    if not run.has_gold():
        why = "no gold test links, so errors are unknown (the gold column of alignment.csv is empty)"
        return _unavailable(key, title, why)
    errs = confident_errors(pred, TOP_ERRORS)
    n_wrong = int((~pred["gold"].fillna(True).to_numpy(dtype=bool)).sum())
    if not len(errs):
        return Section(key, title, "<p>No errors: every judged predicted pair is correct.</p>")
    df = run.alignment
    in_csv = df.loc[df["gold"].fillna(False).to_numpy(bool) & df["src_id"].isin(set(errs["src_id"])).to_numpy()]
    csv_gold = {s: (t, u, n, r) for s, t, u, n, r in zip(in_csv["src_id"], in_csv["tgt_id"], in_csv["tgt_uri"],
                                                         in_csv["tgt_name"], in_csv["rank"])}
    K = gold_ranks(df)[1]
    missing = [s for s in errs["src_id"] if s not in csv_gold]
    reloaded, why = _gold_targets(run) if missing else ({}, None)
    rows = []
    by = "est_precision" if errs["est_precision"].notna().any() else "margin"
    for i, r in enumerate(errs.itertuples(index=False), 1):
        r = r._asdict()
        if r["src_id"] in csv_gold:
            t, u, n, rk = csv_gold[r["src_id"]]
            gold, grank = _entity(n, u, t), ("" if _isna(rk) else int(rk))
        elif r["src_id"] in reloaded:
            gold = _Html("<br>".join(_entity(n, u, t).html for t, u, n in reloaded[r["src_id"]]))
            grank = f"> {K}" if K else ""
        else:
            gold, grank = _Html('<span class="uri">unknown</span>'), ""
        rows.append([i, _entity(r["src_name"], r["src_uri"], r["src_id"]),
                     _entity(r["tgt_name"], r["tgt_uri"], r["tgt_id"]), gold, grank,
                     r.get("score"), r.get("margin"), r.get("est_precision")])
    body = (f"<p>The {len(errs)} wrong predicted pairs (of {n_wrong:,}) with the highest "
            f"{'estimated precision' if by == 'est_precision' else 'margin'}: where the model is confidently wrong. "
            f"Gold targets come from alignment.csv where it lists them, else from the run's gold_targets.csv.</p>")
    if why:
        body += _na(f"gold target names: {why}")
    body += _table(["#", "source", "predicted target", "gold target", "gold rank", "score", "margin",
                    "est. precision"], rows, "errors")
    return Section(key, title, body)


SECTION_BUILDERS: dict[str, Callable[[RunFiles], Section]] = {
    "run": section_run,
    "training": section_training,
    "hits": section_hits,
    "scores": section_scores,
    "coverage": section_coverage,
    "modalities": section_modalities,
    "errors": section_errors,
}


def build_sections(run: RunFiles) -> list[Section]:
    """Every section of :data:`SECTION_TITLES`, in order."""
    return [SECTION_BUILDERS[k](run) for k in SECTION_TITLES]


# -- the page --------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
h3{font-size:1.05em;margin-bottom:.3em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}table.num td{text-align:right}table.num td:first-child{text-align:left}
table.kv td:first-child{font-weight:600;white-space:nowrap}table.kv thead{display:none}
table.errors td:nth-child(n+5){text-align:right;white-space:nowrap}
.uri{color:#777;font-size:.85em;word-break:break-all}
.na{color:#8a5a00;background:#fff6e0;border-left:3px solid #e0a000;padding:4px 8px}
img{max-width:100%;display:block;margin:.5em 0}
nav ul{columns:2;padding-left:1.2em}.meta{color:#666;font-size:.9em}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.85em}
"""


def render_html(run: RunFiles, sections: Sequence[Section]) -> str:
    """The whole page as one string (figures inline, no external reference)."""
    from . import __version__

    m = run.metrics
    title = f"mmea report: {m.get('dataset', '?')} / {m.get('model', '?')} (seed {m.get('seed', '?')})"
    nav = "".join(f'<li><a href="#{s.key}">{_esc(s.title)}</a>'
                  + ("" if s.available else ' <span class="meta">(not available)</span>') + "</li>"
                  for s in sections)
    parts = [f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
             f'<meta name="viewport" content="width=device-width, initial-scale=1">'
             f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{_esc(title)}</h1>",
             f'<p class="meta">Run directory <code>{_esc(run.path)}</code>; report written '
             f"{datetime.now().strftime('%Y-%m-%d %H:%M')} by mmea {_esc(__version__)}.</p>",
             f"<nav><ul>{nav}</ul></nav>"]
    for s in sections:
        parts.append(f'<section id="{s.key}"><h2>{_esc(s.title)}</h2>{s.body}</section>')
    if run.config_text:
        parts.append(f"<section id=\"config\"><h2>Configuration</h2><details><summary>config.toml (re-run with "
                     f"<code>mmea align --config</code>)</summary><pre>{_esc(run.config_text)}</pre></details>"
                     f"</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(run_dir: str | Path, out: str | Path | None = None) -> tuple[Path, list[Section]]:
    """Write the report of ``run_dir`` to ``out`` (default ``RUN_DIR/report.html``); returns the path and sections."""
    run = load_run(run_dir)
    sections = build_sections(run)
    dest = Path(out) if out else run.path / REPORT_FILE
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(dest, render_html(run, sections))
    return dest, sections
