"""Line-level readers shared by every loader.

Each reader streams a file, reports malformed lines as
:class:`~mmea.errors.DataFormatError` (file, line number, text) and returns
numpy arrays.  Numeric attribute values (numbers, years, dates, typed RDF
literals) are parsed by :func:`parse_numeric`; the raw strings are kept by the
caller.

Shared rules, applied here once for every reader: a leading UTF-8 byte-order
mark is dropped (:func:`strip_bom`); a directory where a file is expected is an
error, never "missing" (:func:`optional_file`, :func:`read_file_bytes`); ids
must not hold control characters (:func:`check_id`, :func:`find_bad_id_char`).

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
from typing import Any, Iterator, Sequence

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
    "nonblank_line_numbers",
    "required_file",
    "raise_bad_id_char",
    "parse_numeric",
    "BOM",
    "strip_bom",
    "optional_file",
    "read_file_bytes",
    "decode_utf8",
    "check_id",
    "find_bad_id_char",
    "warn_unterminated",
    "require_rows",
    "iter_line_chunks",
    "PY_WHITESPACE",
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


# ---------------------------------------------------------------------------
# shared checks: files, BOM, decoding, ids
# ---------------------------------------------------------------------------

BOM = "\ufeff"
_BOM_BYTES = BOM.encode("utf-8")

#: characters no id (entity, relation, attribute, URI) may hold: C0 and C1 controls
#: (TAB excepted: it separates the fields), DEL and a byte-order mark inside a line
_BAD_ID_RE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\ufeff]")
_CONTROL_NAMES = {"\x00": "NUL", "\n": "line feed", "\r": "carriage return", "\x7f": "DEL", BOM: "byte-order mark"}


def strip_bom(data: bytes) -> bytes:
    """``data`` without a leading UTF-8 byte-order mark (editors on Windows write one)."""
    return data[len(_BOM_BYTES):] if data.startswith(_BOM_BYTES) else data


def optional_file(path: str | Path) -> Path | None:
    """``path`` when it is a file, ``None`` when nothing is there.

    Anything else in its place (a directory, a fifo) is a :class:`DataFormatError`:
    treating ``links.tsv/`` as "no links" would silently change what a run does.
    """
    path = Path(path)
    if path.is_file():
        return path
    if path.exists() or path.is_symlink():
        kind = "a directory" if path.is_dir() else ("a broken link" if not path.exists() else "not a regular file")
        raise DataFormatError(path, None, None, f"is {kind}, expected a file",
                              hint="remove or rename it, or put the file itself in its place")
    return None


def required_file(path: str | Path, what: str = "file") -> Path:
    """``path`` when it is a file; a :class:`DataFormatError` naming it otherwise (missing or a directory)."""
    found = optional_file(path)
    if found is None:
        raise DataFormatError(path, None, None, f"{what} not found")
    return found


def read_file_bytes(path: str | Path) -> bytes:
    """The whole file (which must be a file, see :func:`required_file`), leading BOM dropped;
    the bytes are reported to the active :func:`loading_bar`."""
    path = required_file(path)
    data = path.read_bytes()
    note_read(path, len(data))
    return strip_bom(data)


def decode_utf8(path: str | Path, data: bytes) -> str:
    """``data`` decoded as UTF-8; bytes that are not UTF-8 are a :class:`DataFormatError` naming the line."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line_no = data.count(b"\n", 0, e.start) + 1
        start = data.rfind(b"\n", 0, e.start) + 1
        end = data.find(b"\n", e.start)
        raw = data[start:end if end >= 0 else len(data)]
        raise DataFormatError(path, line_no, raw[:200].decode("utf-8", "backslashreplace"),
                              f"not valid UTF-8 ({e.reason} at byte {e.start - start} of the line)",
                              hint="re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`") from None


def _describe_char(c: str) -> str:
    return f"{_CONTROL_NAMES.get(c, 'control character')} U+{ord(c):04X}"


def check_id(path: str | Path, line_no: int | None, line: str | None, value: str, what: str = "id") -> str:
    """``value`` unchanged, or a :class:`DataFormatError` when it holds a control character.

    A NUL or another control byte inside an id would otherwise make a new,
    invisible entity (``Q0`` and ``Q0\\x00`` look the same when printed).
    """
    m = _BAD_ID_RE.search(value)
    if m is not None:
        raise DataFormatError(path, line_no, line, f"{what} {value!r} contains a {_describe_char(m.group())} "
                                                   f"at character {m.start() + 1}",
                              hint="ids must be printable text; remove the character (a corrupted copy?)")
    return value


def find_bad_id_char(text: str, allowed: str = "\t\n\r") -> int | None:
    """Offset of the first character of ``text`` that no id may hold (``allowed`` excepted), or None.

    Used by the whole-file readers (numeric id files, link-prediction triples) to
    check every field at once; the caller turns the offset into a line.
    """
    for m in _BAD_ID_RE.finditer(text):
        if m.group() not in allowed:
            return m.start()
    return None


def raise_bad_id_char(path: str | Path, text: str, offset: int, what: str = "id", first_line: int = 1) -> None:
    """The :class:`DataFormatError` for the character at ``offset`` of ``text`` (see :func:`find_bad_id_char`);
    ``text`` starts on line ``first_line`` of ``path``."""
    line_no = text.count("\n", 0, offset) + first_line
    start = text.rfind("\n", 0, offset) + 1
    end = text.find("\n", offset)
    line = text[start:end if end >= 0 else len(text)].rstrip("\r")
    raise DataFormatError(path, line_no, line, f"{what} contains a {_describe_char(text[offset])} "
                                               f"at character {offset - start + 1} of the line",
                          hint="ids must be printable text; remove the character (a corrupted copy?)")


def require_rows(path: str | Path, n: int, what: str) -> None:
    """A required file with no row (``n == 0``) is an error: a 0-byte copy would otherwise load as an empty KG."""
    if n == 0:
        raise DataFormatError(path, None, None, f"empty file: no {what}",
                              hint="the file is required and must not be empty; copy it again from the dataset")


def ends_without_newline(path: str | Path) -> bool:
    """Whether a non-empty file's last byte is not a line break (it may have been cut short)."""
    path = Path(path)
    with open(path, "rb") as fh:
        if fh.seek(0, 2) == 0:
            return False
        fh.seek(-1, 2)
        return fh.read(1) != b"\n"


def warn_unterminated(path: str | Path, report: "LoadReport", prefix: str = "") -> None:
    """A counted warning when ``path`` does not end with a line break: a truncated copy
    would otherwise pass with its last id cut short (``Q10`` read as ``Q1``)."""
    if ends_without_newline(path):
        report.count(f"{prefix}files without a final line break", 1)
        report.warn(f"{path}: the last line has no line break; if the file was cut short, its last line "
                    f"is incomplete (check it)")


def iter_lines(path: str | Path, *, skip_first: bool = False) -> Iterator[tuple[int, str]]:
    """Yield ``(line_no, line)`` (1-based, newline stripped) of a UTF-8 text file.

    Blank lines are not yielded.  A leading byte-order mark is dropped.  A byte
    sequence that is not UTF-8 raises a :class:`DataFormatError` naming the line;
    so does a missing file or a directory in its place.
    """
    path = required_file(path)
    bar, pending = note_read(path), 0
    with open(path, "rb") as fh:
        for i, raw in enumerate(fh, start=1):
            if bar is not None:
                pending += len(raw)
                if pending >= _BAR_STEP:
                    bar.update(pending)
                    pending = 0
            if i == 1:
                raw = strip_bom(raw)
                if skip_first:
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


#: every character ``str.strip()`` removes (``str.isspace()``), for the vectorised readers that must strip alike
PY_WHITESPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200b)))
                 + "\u2028\u2029\u202f\u205f\u3000")


def iter_line_chunks(path: str | Path, size: int = 1 << 24) -> Iterator[tuple[int, bytes]]:
    """Yield ``(first_line_no, data)``: the raw bytes of ``path`` in pieces of about ``size`` bytes,
    each cut after a line break (the last piece may lack one), a leading BOM dropped.

    The streaming twin of :func:`iter_lines` for vectorised readers: memory stays at one piece;
    the bytes are reported to the active :func:`loading_bar`.
    """
    path = required_file(path)
    bar = note_read(path)
    line_no, rest, first = 1, b"", True
    with open(path, "rb") as fh:
        while True:
            block = fh.read(max(int(size), 16))  # a regular file: a short read only at its end
            if bar is not None and block:
                bar.update(len(block))
            if first:
                block, first = strip_bom(block), False
            if not block:
                break
            data = rest + block
            cut = data.rfind(b"\n") + 1
            rest = data[cut:]
            if cut:
                yield line_no, data[:cut]
                line_no += data.count(b"\n", 0, cut)
    if rest:
        yield line_no, rest


def read_columns(path: str | Path, ncols: int, *, sep: str | None = "\t", min_cols: int | None = None,
                 skip_first: bool = False, max_split: bool = True, id_cols: int = 0) -> list[tuple[int, list[str]]]:
    """Split every line into exactly ``ncols`` fields (``min_cols`` allows fewer).

    With ``max_split`` the last field takes the rest of the line (a name may
    contain the separator).  ``sep=None`` splits on any whitespace.  The first
    ``id_cols`` fields are ids: a control character in one is an error
    (:func:`check_id`).
    """
    out = []
    lo = ncols if min_cols is None else min_cols
    for i, line in iter_lines(path, skip_first=skip_first):
        parts = line.split(sep, ncols - 1) if max_split else line.split(sep)
        if sep is None:
            parts = [p for p in parts if p != ""] if not max_split else parts
        if not (lo <= len(parts) <= ncols):
            raise DataFormatError(path, i, line, f"expected {ncols} {'tab-' if sep == chr(9) else ''}separated fields, found {len(parts)}")
        for j in range(min(id_cols, len(parts))):
            check_id(path, i, line, parts[j])
        out.append((i, parts))
    return out


_INT_RE = re.compile(r"[+-]?[0-9]+")
_NOT_INT_BYTES_RE = re.compile(rb"[^0-9 \t\r\n+-]|\r(?!\n)")  # anything the fast path must not see


def _to_int(path, i, line, s) -> int:
    """An integer id written in ASCII digits (``int()`` alone would take ``1_0`` as 10 and other scripts' digits)."""
    t = s.strip()
    if not _INT_RE.fullmatch(t):
        raise DataFormatError(path, i, line, f"expected an integer id, found {t!r}")
    return int(t)


def read_id_map(path: str | Path, *, skip_first: bool = False, what: str = "name",
                line_nos: list[int] | None = None) -> tuple[np.ndarray, list[str]]:
    """Read ``id<TAB>string`` lines -> (ids int64 (n,), strings); duplicate ids are an error.

    The string (a URI or a name, called ``what`` in messages) must not be empty
    nor hold a control character.  ``line_nos``, when given, receives the line
    number of every row (for messages that point back into the file).
    """
    ids: list[int] = []
    vals: list[str] = []
    seen: dict[int, int] = {}
    for i, line in iter_lines(path, skip_first=skip_first):
        parts = line.split("\t", 1)
        if len(parts) != 2:
            parts = line.split(None, 1)
        if len(parts) != 2:
            raise DataFormatError(path, i, line, f"expected `id<TAB>{what}`")
        k = _to_int(path, i, line, parts[0])
        if k in seen:
            raise DataFormatError(path, i, line, f"id {k} already defined on line {seen[k]}")
        check_id(path, i, line, parts[1], what)
        val = parts[1].strip()
        if not val:
            raise DataFormatError(path, i, line, f"empty {what}")
        seen[k] = i
        ids.append(k)
        vals.append(val)
        if line_nos is not None:
            line_nos.append(i)
    return np.asarray(ids, dtype=np.int64), vals


def _read_int_rows(path: str | Path, ncols: int) -> np.ndarray:
    data = read_file_bytes(path)
    lines = [ln for ln in data.splitlines() if ln.strip()]
    if not _NOT_INT_BYTES_RE.search(data) and all(len(ln.split()) == ncols for ln in lines):
        try:  # fast path: one vectorised conversion of every token
            return np.array(data.split(), dtype=np.int64).reshape(-1, ncols)
        except (ValueError, OverflowError):
            pass
    # slow path, line by line: names the offending line
    rows = []
    for i, line in iter_lines(path):
        bad = find_bad_id_char(line, allowed="\t")
        if bad is not None:
            raise_bad_id_char(path, line, bad, first_line=i)
        parts = line.split()
        if len(parts) != ncols:
            raise DataFormatError(path, i, line, f"expected {ncols} whitespace-separated integer ids, found {len(parts)} fields")
        rows.append([_to_int(path, i, line, p) for p in parts])
    try:
        return np.asarray(rows, dtype=np.int64).reshape(-1, ncols)
    except OverflowError:
        raise DataFormatError(path, None, None, "an integer id does not fit in 64 bits") from None


def nonblank_line_numbers(path: str | Path) -> np.ndarray:
    """1-based numbers of the non-blank lines of ``path`` (the rows of :func:`read_int_pairs` /
    :func:`read_int_triples`, numbered like :func:`iter_lines`)."""
    lines = read_file_bytes(path).split(b"\n")
    return np.asarray([i for i, ln in enumerate(lines, start=1) if ln.strip()], dtype=np.int64)


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
                notes: list[str] | None = None, ids: tuple[Sequence, Sequence] | None = None) -> np.ndarray:
    """Validate gold links (internal ids, ``(n, 2)``) and return them de-duplicated.

    Exact duplicates are dropped with one counted warning.  A conflict (one
    entity linked to two different entities on the same side) is an error
    naming both lines, unless ``one_to_many="keep"`` (some published
    benchmarks ship such links): then they are kept, counted, warned once and
    described in ``notes``.  ``ids`` (the file ids of the source and the target
    entities, by internal id) lets messages name an entity as the file does.
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
            name = ids[side][int(bad[0])] if ids is not None else int(bad[0])
            others = (f" ({ids[1 - side][int(uniq[rows[0], 1 - side])]!r} and "
                      f"{ids[1 - side][int(uniq[rows[1], 1 - side])]!r})" if ids is not None else "")
            raise DataFormatError(
                path, lines[1], None,
                f"conflicting {what}: entity {name!r} ({'source' if side == 0 else 'target'} side) is linked to "
                f"two different entities{others} (lines {lines[0]} and {lines[1]}); {len(bad)} such entities "
                f"in all", hint="entity alignment expects one-to-one gold links; remove the wrong lines")
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
