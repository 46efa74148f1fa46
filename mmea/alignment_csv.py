"""Reading alignment CSV files (a run's ``alignment.csv`` or any tool's pairs) and gold-link files.

:func:`read_alignment_file` returns the rows and an :class:`AlignmentFormat` that says
what was read: header or headerless, the delimiter, the columns used, and every line
that was skipped.  Any other problem is a :class:`~mmea.errors.DataFormatError` naming
the file, the line and its text, so a corrupted file never changes a result silently.

Detection, on the first non-blank line:

* delimiter: a tab when that line has a tab and no comma, else a comma;
* header: the line names a source and a target column (``src_id`` / ``tgt_id`` or an
  alias: ``source``, ``target``, ``left``, ``right``, ``e1``, ``e2``, ...), or one of its
  fields is a column name ``mmea`` writes (``src_id``, ``score``, ``rank``, ``margin``,
  ... see :data:`KNOWN_COLUMNS`), or every field is a known name.  A header without a
  source or a target column is an error (it is not read as a headerless row);
* otherwise headerless: 2 or 3 fields per line, ``src_id, tgt_id[, score]``.

Accepted and reported in :class:`AlignmentFormat`: a UTF-8 byte-order mark, CRLF line
ends, blank lines (counted), rows repeating an earlier ``(src_id, tgt_id)`` pair (the
first is kept; counted, with a warning), and a last line without its newline (a warning
that the file may be truncated; an error for a run's own file, see ``run_file``).

Refused: bytes that are not UTF-8 (a UTF-16 file included), control characters (a tab
too, in a comma-separated file), a quote inside an unquoted field or an unclosed quote,
a line with another number of fields than the header, an empty id, a number column
(``score``, ``csls``, ``margin``) holding text or an infinity, a ``rank`` that is not an
integer >= 1, a boolean column (``matched``, ``gold``, ``mutual``) holding anything but
true/false/1/0/yes/no/empty, a file with no data rows, a directory or an unreadable path.
"""

from __future__ import annotations

import csv
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataFormatError

__all__ = ["AlignmentFormat", "KNOWN_COLUMNS", "read_alignment", "read_alignment_file", "read_gold_links"]

SRC_ALIASES = ("src_id", "source_id", "source", "src", "left", "ent1", "e1", "entity1")
TGT_ALIASES = ("tgt_id", "target_id", "target", "tgt", "right", "ent2", "e2", "entity2")
#: Column names mmea writes (``alignment.csv``, ``mmea export``): a first line holding one is a header.
KNOWN_COLUMNS = ("src_id", "src_uri", "src_name", "tgt_id", "tgt_uri", "tgt_name", "score", "rank", "csls",
                 "margin", "mutual", "gold", "matched", "est_precision", "source_id", "target_id")
#: Columns read as numbers / booleans (lower-cased in the frame).
NUMBER_COLUMNS = ("score", "csls", "margin")
BOOL_COLUMNS = ("matched", "gold", "mutual")
_TRUE = {"true", "1", "yes", "t", "y"}
_FALSE = {"false", "0", "no", "f", "n"}
_MISSING = {"", "nan", "<na>", "na", "none", "null"}
#: a number, NaN, or empty (missing); Python's float() would also take "1_0" and "infinity"
_NUMBER_RE = re.compile(r"(?:[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?i:nan))?")
_INFINITE_RE = re.compile(r"[+-]?(?i:inf|infinity)")
_RANK_RE = re.compile(r"\+?\d+(?:\.0*)?")
#: C0 controls but the tab, DEL and C1 controls (a lone CR included: it is not a line end here)
_CTRL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_CTRL_OR_TAB = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # in a comma-separated file a tab is no delimiter


@dataclass
class AlignmentFormat:
    """What :func:`read_alignment_file` read: layout, columns used, and every skipped line.

    Attributes:
        path: the file.
        header: whether the first non-blank line was a header (``header_line``: its number).
        delimiter: ``","`` or ``"\\t"``.
        columns: the column names (as normalised: ``src_id`` / ``tgt_id`` for the aliases).
        renamed: header names read as ``src_id`` / ``tgt_id`` (``{"source": "src_id"}``).
        rows: data rows kept.
        bom: the file started with a UTF-8 byte-order mark (ignored).
        blank_lines: blank lines skipped.
        duplicate_rows: rows skipped because they repeat an earlier ``(src_id, tgt_id)``.
        unterminated_last_line: the number of a last line without its newline, else ``None``.
        warnings: one sentence per thing the reader accepted but the user should know.
    """

    path: str
    header: bool = False
    header_line: int | None = None
    delimiter: str = ","
    columns: list = field(default_factory=list)
    renamed: dict = field(default_factory=dict)
    rows: int = 0
    bom: bool = False
    blank_lines: int = 0
    duplicate_rows: int = 0
    unterminated_last_line: int | None = None
    warnings: list = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["delimiter"] = "tab" if self.delimiter == "\t" else "comma"
        d["skipped_lines"] = self.blank_lines + self.duplicate_rows
        d["description"] = self.describe()
        return d

    def describe(self) -> str:
        """One line: ``read FILE: header on line 1, comma-separated, columns ...; skipped ...``."""
        sep = "tab" if self.delimiter == "\t" else "comma"
        layout = f"header on line {self.header_line}" if self.header else \
            f"no header ({len(self.columns)} fields per line read as {', '.join(self.columns)})"
        cols = ", ".join(f"{c} (as {self.renamed[c]})" if c in self.renamed else c
                         for c in [self._original(c) for c in self.columns])
        skipped = []
        if self.blank_lines:
            skipped.append(f"{self.blank_lines} blank")
        if self.duplicate_rows:
            skipped.append(f"{self.duplicate_rows} duplicate")
        return (f"read {self.path}: {layout}, {sep}-separated, columns {cols}; {self.rows} rows"
                + (f"; skipped {' and '.join(skipped)} lines" if skipped else "")
                + ("; UTF-8 byte-order mark ignored" if self.bom else ""))

    def _original(self, col: str) -> str:
        back = {v: k for k, v in self.renamed.items()}
        return back.get(col, col)


def _read_text(path: Path) -> tuple[str, bool]:
    """The file's text (UTF-8, a leading BOM removed) and whether it had a BOM."""
    if path.is_dir():
        raise DataFormatError(path, None, None, "is a directory, not a file")
    if not path.exists():
        raise DataFormatError(path, None, None, "file not found")
    try:
        data = path.read_bytes()
    except PermissionError:
        raise DataFormatError(path, None, None, "cannot be read (permission denied)") from None
    except OSError as e:
        raise DataFormatError(path, None, None, f"cannot be read ({e.strerror or e})") from None
    bom = data.startswith(b"\xef\xbb\xbf")
    if bom:
        data = data[3:]
    try:
        return data.decode("utf-8"), bom
    except UnicodeDecodeError as e:
        ln = data.count(b"\n", 0, e.start) + 1
        start = data.rfind(b"\n", 0, e.start) + 1
        end = data.find(b"\n", e.start)
        shown = data[start:end if end >= 0 else len(data)][:120].decode("utf-8", "backslashreplace")
        utf16 = data[:2] in (b"\xff\xfe", b"\xfe\xff")
        raise DataFormatError(path, ln, shown,
                              f"not valid UTF-8 ({e.reason} at byte {e.start + 3 * bom})"
                              + (" -- it looks like UTF-16" if utf16 else ""),
                              hint="re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`") from None


def _stray_quote(body: str, delim: str) -> int | None:
    """Position of a quote inside an unquoted field (``a"b``), which CSV readers keep silently."""
    at_start, quoted, i, n = True, False, 0, len(body)
    while i < n:
        c = body[i]
        if quoted:
            if c == '"':
                if i + 1 < n and body[i + 1] == '"':
                    i += 1
                else:
                    quoted = False
        elif c == delim:
            at_start = True
        elif c == '"':
            if not at_start:
                return i
            quoted, at_start = True, False
        else:
            at_start = False
        i += 1
    return None


def _parse_line(path: Path, ln: int, body: str, delim: str) -> list[str]:
    """The fields of one line (no newline inside); control characters and stray quotes are errors."""
    bad = (_CTRL_OR_TAB if delim == "," else _CTRL).search(body)
    if bad:
        ch = bad.group()
        raise DataFormatError(path, ln, body, f"control character {ch!r} (U+{ord(ch):04X}) at character "
                                              f"{bad.start() + 1}")
    if '"' not in body:
        return body.split(delim)  # what a CSV reader gives for a line without quotes
    pos = _stray_quote(body, delim)
    if pos is not None:
        raise DataFormatError(path, ln, body, f"quote character inside an unquoted field (character {pos + 1})",
                              hint='quote the whole field and double inner quotes: "a""b"')
    try:
        return next(csv.reader((body,), delimiter=delim, strict=True))
    except csv.Error as e:
        reason = "unclosed quote" if "end of data" in str(e) else f"malformed CSV ({e})"
        raise DataFormatError(path, ln, body, reason) from None


def _header(path: Path, ln: int, body: str, fields: list[str], fmt: AlignmentFormat) -> list[str] | None:
    """The normalised header when the first line is one, ``None`` for a headerless file."""
    names = [f.strip().lower() for f in fields]
    src_col = next((a for a in SRC_ALIASES if a in names), None)
    tgt_col = next((a for a in TGT_ALIASES if a in names), None)
    known = set(SRC_ALIASES) | set(TGT_ALIASES) | set(KNOWN_COLUMNS)
    is_header = (src_col and tgt_col) or any(n in KNOWN_COLUMNS for n in names) or all(n in known for n in names)
    if not is_header:
        if len(fields) in (2, 3):
            return None
        raise DataFormatError(path, ln, body, f"no header naming src_id and tgt_id, and {len(fields)} fields "
                                              "is not the headerless form (src_id, tgt_id[, score])",
                              hint="the first line must name the columns, e.g. src_id,tgt_id,score")
    if not (src_col and tgt_col):
        missing = " and ".join(w for w, c in (("source", src_col), ("target", tgt_col)) if not c)
        aliases = SRC_ALIASES if not src_col else TGT_ALIASES
        raise DataFormatError(path, ln, body, f"the header has no {missing} column (columns: "
                                              f"{', '.join(f.strip() for f in fields)})",
                              hint=f"name it {aliases[0]} (or one of {', '.join(aliases[1:])})")
    header = [n if n in known else f.strip() for f, n in zip(fields, names)]
    header[names.index(src_col)], header[names.index(tgt_col)] = "src_id", "tgt_id"
    fmt.renamed = {c: new for c, new in ((src_col, "src_id"), (tgt_col, "tgt_id")) if c != new}
    if len(set(header)) != len(header):
        dup = sorted({h for h in header if header.count(h) > 1})
        raise DataFormatError(path, ln, body, f"duplicate column names in the header ({', '.join(dup)})")
    fmt.header, fmt.header_line = True, ln
    return header


def _split_rows(path: Path, text: str, fmt: AlignmentFormat, run_file: bool):
    """``(header, rows, line_numbers, raw_lines)`` of the data lines (blank ones counted, not kept)."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    elif run_file:
        raise DataFormatError(path, len(lines), lines[-1], "the last line has no newline: the file looks "
                                                           "truncated (an interrupted or partial copy?)",
                              hint="re-run the alignment, or restore the file")
    else:
        fmt.unterminated_last_line = len(lines)
        fmt.warnings.append(f"line {len(lines)} (the last) has no newline: if the file was cut short, "
                            f"that row may be incomplete")
    header, rows, line_nos = None, [], []
    for ln, line in enumerate(lines, start=1):
        body = line[:-1] if line.endswith("\r") else line
        if not body.strip():
            fmt.blank_lines += 1
            continue
        if header is None:
            fmt.delimiter = "\t" if ("\t" in body and "," not in body) else ","
        fields = _parse_line(path, ln, body, fmt.delimiter)
        if header is None:
            header = _header(path, ln, body, fields, fmt)
            if header is not None:
                continue
            header = ["src_id", "tgt_id", "score"][: len(fields)]
        if len(fields) != len(header):
            raise DataFormatError(path, ln, body, f"expected {len(header)} fields"
                                  + ("" if fmt.header else f" (like line {line_nos[0] if line_nos else ln})")
                                  + f", found {len(fields)}")
        rows.append(fields)
        line_nos.append(ln)
    if header is None:
        raise DataFormatError(path, None, None, "empty alignment file")
    if not rows:
        raise DataFormatError(path, None, None, f"no data rows after the header on line {fmt.header_line}")
    return header, rows, line_nos, lines


def _first_bad(path, values: list, ok, line_nos, lines, message) -> None:
    """Raise for the first value for which ``ok(value)`` is false, naming its line."""
    i = next((k for k, v in enumerate(values) if not ok(v)), None)
    if i is not None:
        ln = line_nos[i]
        raise DataFormatError(path, ln, lines[ln - 1].rstrip("\r"), message(values[i]))


def _typed(df, path: Path, line_nos: list[int], lines: list[str], columns) -> None:
    """Parse ``columns`` of ``df`` in place: numbers (NaN when empty), ranks (Int64), booleans (boolean)."""
    import pandas as pd

    for col in columns:
        if col not in df:
            continue
        vals = [str(v).strip() for v in df[col].tolist()]
        if col in NUMBER_COLUMNS:
            _first_bad(path, vals, _NUMBER_RE.fullmatch, line_nos, lines,
                       lambda v: f"{col} {v!r} is " + ("not finite" if _INFINITE_RE.fullmatch(v) else "not a number"))
            num = np.array([v or "nan" for v in vals], dtype=np.float64)
            if np.isinf(num).any():  # 1e999
                _first_bad(path, vals, lambda v: not np.isinf(float(v or "nan")), line_nos, lines,
                           lambda v: f"{col} {v!r} is not finite")
            df[col] = num
        elif col == "rank":
            _first_bad(path, vals, lambda v: v == "" or (_RANK_RE.fullmatch(v) and float(v) >= 1), line_nos, lines,
                       lambda v: f"rank {v!r} is not an integer >= 1")
            df[col] = pd.array([None if v == "" else int(float(v)) for v in vals], dtype="Int64")
        else:
            low = [v.lower() for v in vals]
            _first_bad(path, low, lambda v: v in _TRUE or v in _FALSE or v in _MISSING, line_nos, lines,
                       lambda v: f"column {col!r}: {vals[low.index(v)]!r} is not a boolean (true/false)")
            df[col] = pd.array([True if v in _TRUE else False if v in _FALSE else None for v in low],
                               dtype="boolean")


def _drop_duplicates(df, fmt: AlignmentFormat):
    """Skip rows repeating an earlier ``(src_id, tgt_id)`` (the first is kept), counted with a warning."""
    dup = df.duplicated(["src_id", "tgt_id"]).to_numpy()
    if not dup.any():
        return df
    fmt.duplicate_rows = int(dup.sum())
    first = df.loc[dup].iloc[0]
    orig = df.loc[(df["src_id"] == first["src_id"]) & (df["tgt_id"] == first["tgt_id"]), "_line"].iloc[0]
    fmt.warnings.append(f"skipped {fmt.duplicate_rows} row{'s' if fmt.duplicate_rows > 1 else ''} repeating an "
                        f"earlier (src_id, tgt_id) pair (first: line {first['_line']}, the pair of line {orig})")
    return df.loc[~dup].reset_index(drop=True)


def read_alignment_file(path: str | Path, *, run_file: bool = False, typed: Any = None):
    """Read and validate an alignment CSV: ``(frame, AlignmentFormat)``.

    Args:
        path: comma- or tab-separated; see the module docstring for what is detected.
        run_file: the file is a run's own ``alignment.csv`` (``mmea export``): a last
            line without its newline is an error (mmea always ends the file with one).
        typed: the columns to parse and check (default: ``score``, ``rank``,
            ``matched``; with ``run_file`` also ``csls``, ``margin``, ``gold``, ``mutual``).
            Other columns stay text, unchecked.

    The frame has every column as read (``src_id`` / ``tgt_id`` stripped, aliases
    renamed) plus ``_line``, the line number of each row.
    """
    import pandas as pd

    path = Path(path)
    fmt = AlignmentFormat(str(path))
    text, fmt.bom = _read_text(path)
    header, rows, line_nos, lines = _split_rows(path, text, fmt, run_file)
    fmt.columns = list(header)
    df = pd.DataFrame(rows, columns=header, dtype=object)
    df["_line"] = line_nos
    for col in ("src_id", "tgt_id"):
        ids = [v.strip() for v in df[col].tolist()]
        _first_bad(path, ids, bool, line_nos, lines, lambda v: f"empty {col}")
        df[col] = ids
    if typed is None:
        typed = ("score", "rank", "matched") + (("csls", "margin", "gold", "mutual") if run_file else ())
    _typed(df, path, line_nos, lines, typed)
    df = _drop_duplicates(df, fmt)
    fmt.rows = int(len(df))
    return df, fmt


def read_alignment(path: str | Path, *, run_file: bool = False):
    """The frame of :func:`read_alignment_file` (without the format record)."""
    return read_alignment_file(path, run_file=run_file)[0]


def read_gold_links(path: str | Path) -> list[tuple[int, str, str]]:
    """``(line_no, src_id, tgt_id)`` from a file of ``src_id<whitespace>tgt_id`` lines.

    Tabs or spaces separate the two ids; an optional header ``src_id tgt_id``, a UTF-8
    byte-order mark and ``#`` comment lines are skipped; a line with another number of
    fields, or a control character, is a :class:`DataFormatError`.
    """
    from .data.parsing import iter_lines

    path = Path(path)
    if path.is_dir():
        raise DataFormatError(path, None, None, "is a directory, not a file")
    out = []
    try:
        for ln, line in iter_lines(path):
            line = line.lstrip("\ufeff") if ln == 1 else line
            if line.lstrip().startswith("#"):
                continue
            bad = _CTRL.search(line.rstrip("\r"))
            if bad:
                raise DataFormatError(path, ln, line, f"control character {bad.group()!r} "
                                                      f"(U+{ord(bad.group()):04X})")
            parts = line.split()
            if len(parts) != 2:
                raise DataFormatError(path, ln, line, f"expected 2 fields (src_id tgt_id), found {len(parts)}")
            if not out and [p.lower() for p in parts] == ["src_id", "tgt_id"]:
                continue
            out.append((ln, parts[0], parts[1]))
    except PermissionError:
        raise DataFormatError(path, None, None, "cannot be read (permission denied)") from None
    if not out:
        raise DataFormatError(path, None, None, "no gold links in the file")
    return out
