"""Line-level readers shared by every loader.

Each reader streams a file, reports malformed lines as
:class:`~mmea.errors.DataFormatError` (file, line number, text) and returns
numpy arrays.  Numeric attribute values (numbers, years, dates, typed RDF
literals) are parsed by :func:`parse_numeric`; the raw strings are kept by the
caller.

Progress: inside ``with loading_bar(progress):`` every reader reports the bytes
it reads (and the file name) to one bar, so a loader shows progress without
passing a bar through each helper (:func:`~mmea.data.catalog.load_pair_task`
opens it; streaming readers update it about every MiB, whole-file readers once
per file).  Outside such a block the readers draw nothing.
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import DataFormatError
from ..progress import progress_bar

__all__ = [
    "LoadReport",
    "loading_bar",
    "note_read",
    "iter_lines",
    "read_columns",
    "read_id_map",
    "read_int_pairs",
    "read_int_triples",
    "parse_numeric",
]


@dataclass
class LoadReport:
    """What a loader read and what it skipped, with counts (never silent)."""

    read: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def count(self, what: str, n: int = 1) -> None:
        self.read[what] = self.read.get(what, 0) + n

    def skip(self, why: str, n: int = 1) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + n

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def merge(self, other: "LoadReport", prefix: str = "") -> None:
        for k, v in other.read.items():
            self.count(prefix + k, v)
        for k, v in other.skipped.items():
            self.skip(prefix + k, v)
        self.warnings.extend(other.warnings)

    def as_dict(self) -> dict:
        return {"read": dict(self.read), "skipped": dict(self.skipped), "warnings": list(self.warnings)}

    def log(self, logger) -> None:
        for k, v in sorted(self.read.items()):
            logger.info("read %s: %d", k, v)
        for k, v in sorted(self.skipped.items()):
            logger.warning("skipped %s: %d", k, v)
        for w in self.warnings:
            logger.warning("%s", w)


_LOADING_BAR: ContextVar[Any] = ContextVar("mmea_loading_bar", default=None)
_BAR_STEP = 1 << 20  # bytes between updates of the loading bar by a streaming reader


@contextmanager
def loading_bar(progress: bool = False, desc: str = "loading"):
    """A bar (bytes read, current file) fed by every reader of this module inside the block.

    Drawn only when :func:`~mmea.progress.progress_enabled` (``progress`` and stderr a terminal).
    """
    with progress_bar(progress=progress, desc=desc, unit="B", unit_scale=True) as bar:
        token = _LOADING_BAR.set(None if bar.disable else bar)
        try:
            yield bar
        finally:
            _LOADING_BAR.reset(token)


def note_read(path: str | Path, nbytes: int = 0):
    """Tell the active :func:`loading_bar` (if any) that ``path`` is being read; returns the bar or None."""
    bar = _LOADING_BAR.get()
    if bar is not None:
        bar.set_postfix_str(Path(path).name, refresh=False)
        if nbytes:
            bar.update(nbytes)
    return bar


def iter_lines(path: str | Path, *, skip_first: bool = False) -> Iterator[tuple[int, str]]:
    """Yield ``(line_no, line)`` (1-based, newline stripped) of a UTF-8 text file.

    Blank lines are not yielded.  A byte sequence that is not UTF-8 raises a
    :class:`DataFormatError` naming the line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, None, None, "file not found")
    bar, pending = note_read(path), 0
    with open(path, "rb") as fh:
        for i, raw in enumerate(fh, start=1):
            if bar is not None:
                pending += len(raw)
                if pending >= _BAR_STEP:
                    bar.update(pending)
                    pending = 0
            if skip_first and i == 1:
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataFormatError(
                    path, i, raw[:120].decode("utf-8", "backslashreplace"),
                    f"not valid UTF-8 ({e.reason} at byte {e.start})",
                    hint="re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`",
                ) from None
            line = line.rstrip("\r\n")
            if line.strip():
                yield i, line
    if bar is not None and pending:
        bar.update(pending)


def read_columns(path: str | Path, ncols: int, *, sep: str | None = "\t", min_cols: int | None = None,
                 skip_first: bool = False, max_split: bool = True) -> list[tuple[int, list[str]]]:
    """Split every line into exactly ``ncols`` fields (``min_cols`` allows fewer).

    With ``max_split`` the last field takes the rest of the line (a name may
    contain the separator).  ``sep=None`` splits on any whitespace.
    """
    out = []
    lo = ncols if min_cols is None else min_cols
    for i, line in iter_lines(path, skip_first=skip_first):
        parts = line.split(sep, ncols - 1) if max_split else line.split(sep)
        if sep is None:
            parts = [p for p in parts if p != ""] if not max_split else parts
        if not (lo <= len(parts) <= ncols):
            raise DataFormatError(path, i, line, f"expected {ncols} {'tab-' if sep == chr(9) else ''}separated fields, found {len(parts)}")
        out.append((i, parts))
    return out


def _to_int(path, i, line, s) -> int:
    try:
        return int(s)
    except ValueError:
        raise DataFormatError(path, i, line, f"expected an integer id, found {s.strip()!r}") from None


def read_id_map(path: str | Path, *, skip_first: bool = False) -> tuple[np.ndarray, list[str]]:
    """Read ``id<TAB>string`` lines -> (ids int64 (n,), strings); duplicate ids are an error."""
    ids: list[int] = []
    vals: list[str] = []
    seen: dict[int, int] = {}
    for i, line in iter_lines(path, skip_first=skip_first):
        parts = line.split("\t", 1)
        if len(parts) != 2:
            parts = line.split(None, 1)
        if len(parts) != 2:
            raise DataFormatError(path, i, line, "expected `id<TAB>name`")
        k = _to_int(path, i, line, parts[0])
        if k in seen:
            raise DataFormatError(path, i, line, f"id {k} already defined on line {seen[k]}")
        seen[k] = i
        ids.append(k)
        vals.append(parts[1].strip())
    return np.asarray(ids, dtype=np.int64), vals


def _read_int_rows(path: str | Path, ncols: int) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, None, None, "file not found")
    with open(path, "rb") as fh:
        data = fh.read()
    note_read(path, len(data))
    lines = [ln for ln in data.splitlines() if ln.strip()]
    if all(len(ln.split()) == ncols for ln in lines):
        try:  # fast path: one vectorised conversion of every token
            return np.array(data.split(), dtype=np.int64).reshape(-1, ncols)
        except (ValueError, OverflowError):
            pass
    # slow path, only to name the offending line
    for i, line in iter_lines(path):
        parts = line.split()
        if len(parts) != ncols:
            raise DataFormatError(path, i, line, f"expected {ncols} whitespace-separated integer ids, found {len(parts)} fields")
        for p in parts:
            _to_int(path, i, line, p)
    raise DataFormatError(path, None, None, "could not parse integer rows")  # pragma: no cover


def read_int_pairs(path: str | Path) -> np.ndarray:
    """``a b`` per line -> int64 (n, 2)."""
    return _read_int_rows(path, 2)


def read_int_triples(path: str | Path) -> np.ndarray:
    """``h r t`` per line -> int64 (n, 3)."""
    return _read_int_rows(path, 3)


_NUM_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_DATE_RE = re.compile(r"^([+-]?\d{1,4})-(\d{1,2})(?:-(\d{1,2}))?(?:[T ].*)?$")
_YEAR_RE = re.compile(r"^([+-]?\d{1,4})(?:\s*(BC|BCE|AD|CE))?$", re.I)
_TYPED_RE = re.compile(r'^"(.*)"(?:\^\^<?[^>]*>?|@[a-zA-Z-]+)?$')
_DAYS_BEFORE_MONTH = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)


def parse_numeric(raw: str) -> float:
    """Numeric value of an attribute literal, or NaN when it is not numeric.

    Handles plain numbers (``"12"``, ``"-3.5e4"``, ``"1,234"``), typed or
    quoted RDF literals (``"12.5"^^<xsd:double>``), years (``"1982"``,
    ``"44 BC"``), and dates (``"1982-05-03"`` -> 1982 + day_of_year/365, a
    decimal year, so that dates and years share one scale).
    """
    s = raw.strip()
    m = _TYPED_RE.match(s)
    if m:
        s = m.group(1).strip()
    if not s:
        return math.nan
    t = s.replace(",", "") if re.fullmatch(r"[+-]?\d{1,3}(,\d{3})+(\.\d+)?", s) else s
    if _NUM_RE.match(t):
        v = float(t)
        return v if math.isfinite(v) else math.nan
    m = _DATE_RE.match(s)
    if m:
        y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1)
        if 1 <= mo <= 12 and 1 <= d <= 31:
            return y + (_DAYS_BEFORE_MONTH[mo - 1] + d - 1) / 365.0
        return math.nan
    m = _YEAR_RE.match(s)
    if m:
        y = int(m.group(1))
        era = (m.group(2) or "").upper()
        return float(-y if era in ("BC", "BCE") else y)
    return math.nan


def map_ids(raw: np.ndarray, index: dict, path: str | Path, line_nos: np.ndarray | None = None,
            what: str = "entity") -> np.ndarray:
    """Map source-file ids to internal ids (same shape); an unknown id is an error naming its line.

    ``raw`` holds the ids as written in ``path`` (ints or strings); ``line_nos``
    (same number of rows) gives each row's 1-based line number for the message.
    """
    raw = np.asarray(raw)
    flat = raw.reshape(-1)
    out = np.empty(flat.shape, dtype=np.int64)
    get = index.get
    for j, k in enumerate(flat.tolist()):
        v = get(k)
        if v is None:
            row = j // raw.shape[1] if raw.ndim > 1 else j
            ln = int(line_nos[row]) if line_nos is not None else None
            raise DataFormatError(path, ln, None, f"{what} id {k!r} is not defined by any entity/relation file",
                                  hint="check that the id files and this file come from the same dataset version")
        out[j] = v
    return out.reshape(raw.shape)


def check_links(links: np.ndarray, path: str | Path, report: LoadReport,
                line_nos: np.ndarray | None = None, what: str = "links", one_to_many: str = "error",
                notes: list[str] | None = None) -> np.ndarray:
    """Validate gold links (internal ids, ``(n, 2)``) and return them de-duplicated.

    Exact duplicates are dropped with one counted warning.  A conflict (one
    entity linked to two different entities on the same side) is an error
    naming both lines, unless ``one_to_many="keep"`` (some published
    benchmarks ship such links): then they are kept, counted, warned once and
    described in ``notes``.
    """
    if one_to_many not in ("error", "keep"):
        raise ValueError(f"one_to_many must be 'error' or 'keep', got {one_to_many!r}")
    links = np.asarray(links, dtype=np.int64).reshape(-1, 2)
    if len(links) == 0:
        return links
    _, first = np.unique(links, axis=0, return_index=True)
    first = np.sort(first)
    ndup = len(links) - len(first)
    if ndup:
        report.skip(f"duplicate {what}", ndup)
        report.warn(f"{path}: {ndup} duplicate link line(s) ignored")
    uniq = links[first]
    uniq_lines = line_nos[first] if line_nos is not None else None
    involved = np.zeros(len(uniq), dtype=bool)
    n_hubs = 0
    for side in (0, 1):
        col = uniq[:, side]
        vals, inv, counts = np.unique(col, return_inverse=True, return_counts=True)
        bad = vals[counts > 1]
        if len(bad) and one_to_many == "error":
            rows = np.nonzero(col == bad[0])[0][:2]
            lines = [int(uniq_lines[r]) if uniq_lines is not None else None for r in rows]
            raise DataFormatError(
                path, lines[1], None,
                f"conflicting {what}: entity {int(bad[0])} ({'source' if side == 0 else 'target'} side) is linked to "
                f"two different entities (lines {lines[0]} and {lines[1]}); {len(bad)} such entities in all",
                hint="entity alignment expects one-to-one gold links; remove the wrong lines")
        involved |= counts[inv] > 1
        n_hubs += len(bad)
    n_multi = int(involved.sum())
    if n_multi:
        rows = np.flatnonzero(involved)[:4]
        shown = ", ".join(str(int(uniq_lines[r])) for r in rows) if uniq_lines is not None else "?"
        report.count(f"one-to-many {what} (kept)", n_multi)
        report.warn(f"{path}: {n_hubs} entities are linked to more than one entity ({n_multi} links, "
                    f"lines {shown}{', ...' if n_multi > 4 else ''}); kept as the benchmark ships them")
        if notes is not None:
            notes.append(f"{Path(path).name}: {n_hubs} entities are linked to more than one entity "
                         f"({n_multi} one-to-many gold links), kept as in the published benchmark")
    report.count(what, len(uniq))
    return uniq
