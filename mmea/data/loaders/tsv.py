"""Plain-TSV layout (``tsv``): users' own knowledge graphs.

One folder per KG (only ``triples.tsv`` is required)::

    my_kg/
      triples.tsv        head<TAB>relation<TAB>tail
      entities.tsv       entity  or  entity<TAB>uri   (fixes the order, adds isolated entities)
      names.tsv          entity<TAB>name
      attributes.tsv     entity<TAB>attribute<TAB>value
      images.tsv         entity<TAB>path              (relative to the KG folder, or absolute)
      descriptions.tsv   entity<TAB>text

A pair folder holds ``kg1/``, ``kg2/``, an optional ``links.tsv``
(``kg1_entity<TAB>kg2_entity``) and optional ``train_links.tsv`` /
``valid_links.tsv`` / ``test_links.tsv``.  Lines starting with ``#`` are
comments.  docs/formats.md is the user-facing description of this layout.

The de-duplication helper shared by the pair loaders
(:func:`drop_duplicate_rows`) also lives here; the split helpers are in
:mod:`mmea.data.splits` (re-exported here for old imports).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DataFormatError, MmeaInputError
from ..graph import AlignmentTask, KnowledgeGraph, local_name
from ..parsing import (PY_WHITESPACE, LoadReport, check_id, check_links, iter_line_chunks, iter_lines, optional_file,
                       parse_numeric, required_file, strip_bom, warn_unterminated)
from ..splits import (DEFAULT_SEED_RATIO, carve_valid, seeded_split, split_from_parts, subtract_links,
                      union_links)
from .base import LOADERS, DatasetLoader, LoadOptions, log

__all__ = ["TsvLoader", "load_tsv_kg", "load_tsv_pair", "seeded_split", "carve_valid", "split_from_parts",
           "subtract_links", "union_links", "drop_duplicate_rows", "DEFAULT_SEED_RATIO"]

#: the optional per-KG files, in the order that fixes the entity order when
#: ``entities.tsv`` is absent
KG_FILES = ("entities.tsv", "triples.tsv", "names.tsv", "attributes.tsv", "images.tsv", "descriptions.tsv")
SPLIT_PARTS = ("train", "valid", "test")
_MAX_LISTED = 10


# ---------------------------------------------------------------------------
# de-duplication shared by the pair loaders
# ---------------------------------------------------------------------------

def _row_keys(rows: np.ndarray) -> np.ndarray:
    """One int64 key per row of a non-negative int array (mixed radix); the rows
    themselves as a fallback when the key would overflow."""
    radix = rows.max(axis=0).astype(object) + 1
    if np.prod(radix) < 2 ** 62:
        keys = np.zeros(len(rows), dtype=np.int64)
        for j in range(rows.shape[1]):
            keys = keys * int(radix[j]) + rows[:, j]
        return keys
    return rows


def drop_duplicate_rows(rows: np.ndarray, path: str | Path, report: LoadReport, what: str) -> np.ndarray:
    """``rows`` without exact repeats (first kept, order kept); the repeats are counted and warned."""
    if len(rows) < 2:
        return rows
    keys = _row_keys(rows)
    _, first = np.unique(keys, axis=0 if keys.ndim > 1 else None, return_index=True)
    ndup = len(rows) - len(first)
    if not ndup:
        return rows
    report.skip(what, ndup)
    report.warn(f"{path}: {ndup} duplicate line(s) ignored")
    return rows[np.sort(first)]


# ---------------------------------------------------------------------------
# reading one KG folder
# ---------------------------------------------------------------------------

def _read_tsv(path: Path, columns: tuple[str, ...], *, min_cols: int | None = None,
              rest_in_last: bool = False, id_cols: int | None = None) -> list[tuple[int, list[str], str]]:
    """``(line_no, fields, line)`` for every non-comment line, fields stripped.

    Exactly ``len(columns)`` tab-separated fields (``min_cols`` allows fewer);
    with ``rest_in_last`` the last field takes the rest of the line.  The
    fields must not be empty, except the last one of a free-text or optional column.
    The first ``id_cols`` fields (default: every field but a free-text last one)
    are ids and must not hold control characters.
    """
    ncols = len(columns)
    lo = ncols if min_cols is None else min_cols
    required = ncols - 1 if (rest_in_last or min_cols is not None) else ncols
    n_ids = (ncols - 1 if rest_in_last else ncols) if id_cols is None else id_cols
    rows = []
    for ln, line in iter_lines(path):
        if line.startswith("#"):
            continue
        parts = line.split("\t", ncols - 1) if rest_in_last else line.split("\t")
        if not lo <= len(parts) <= ncols:
            raise DataFormatError(path, ln, line, f"expected {ncols} tab-separated fields "
                                                  f"({'<TAB>'.join(columns)}), found {len(parts)}",
                                  hint="separate the columns with one TAB; lines starting with # are comments")
        for j in range(min(n_ids, len(parts))):  # before stripping: str.strip() eats some controls
            check_id(path, ln, line, parts[j], f"{columns[j]} field")
        parts = [p.strip() for p in parts]
        for j in range(min(required, len(parts))):
            if not parts[j]:
                raise DataFormatError(path, ln, line, f"empty {columns[j]} field")
        rows.append((ln, parts, line))
    return rows


class _EntityTable:
    """Entities in order of first appearance; frozen when ``entities.tsv`` lists them."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.ids: list[str] = []
        self.uris: list[str] = []
        self.fixed_by: Path | None = None
        self.seen_at: list[tuple[str, int]] = []  # (file name, line) where each entity added by get() appeared

    def add(self, entity: str, uri: str | None = None) -> int:
        i = self.index.get(entity)
        if i is None:
            i = self.index[entity] = len(self.ids)
            self.ids.append(entity)
            self.uris.append(uri or entity)
        return i

    def get(self, entity: str, path: Path, ln: int, line: str) -> int:
        """Internal id of ``entity`` (added on first sight unless the list is fixed)."""
        i = self.index.get(entity)
        if i is not None:
            return i
        if self.fixed_by is not None:
            raise DataFormatError(path, ln, line, f"entity {entity!r} is not listed in {self.fixed_by}",
                                  hint="add it to entities.tsv, or remove entities.tsv to list entities "
                                       "in order of first appearance")
        self.seen_at.append((path.name, ln))
        return self.add(entity)


def _first_per_entity(rows, table: _EntityTable, path: Path, report: LoadReport, prefix: str,
                      what: str) -> dict[int, tuple[str, int, str]]:
    """entity id -> (value, line_no, line) of its first row; later rows are counted and warned."""
    out: dict[int, tuple[str, int, str]] = {}
    repeated = 0
    for ln, parts, line in rows:
        e = table.get(parts[0], path, ln, line)
        if e in out:
            repeated += 1
            continue
        out[e] = (parts[1], ln, line)
    _report_repeated(repeated, path, report, prefix, what)
    return out


def _report_repeated(repeated: int, path: Path, report: LoadReport, prefix: str, what: str) -> None:
    if repeated:
        report.skip(f"{prefix}repeated entities in {path.name}", repeated)
        report.warn(f"{path}: {repeated} line(s) give a second {what} for an entity; the first one is kept")


# ---------------------------------------------------------------------------
# the fast path: clean files read a piece at a time, vectorised
# ---------------------------------------------------------------------------
#
# The line reader above costs a few microseconds a line (decode, split, id checks, strip, dict
# look-ups): minutes for 10M triples.  The fast path reads ``triples.tsv`` and ``names.tsv`` in
# pieces of 16 MiB (:func:`~mmea.data.parsing.iter_line_chunks`), checks each piece with a few numpy
# passes over its bytes (:func:`_has_odd_bytes`), splits it with one ``str.split`` and numbers the ids
# with ``pandas.factorize`` (hash-based, order of first appearance).  It declines (returns None) on
# anything that the line reader would treat specially -- a control character, a BOM inside a line, a
# bare CR, blanks at the edge of a field, an empty field, a blank-only line, a wrong number of TABs,
# bytes that are not UTF-8, an entity missing from ``entities.tsv`` -- and the caller then reads the
# file with the line reader, which gives the same result or the house error naming file, line and
# text.  So both paths give the same task by construction; tests/test_loaders_openea_tsv.py checks it.

_FAST_PIECE = 1 << 24  # bytes per piece
_BAD_BYTE = np.zeros(256, dtype=bool)  # control bytes (TAB and LF excepted: CR is checked apart)
_BAD_BYTE[[*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F]] = True
_EDGE_BYTE = np.zeros(256, dtype=bool)  # at the edge of a field: a blank, or an empty field
_EDGE_BYTE[[0x09, 0x0A, 0x0D, 0x20]] = True
#: the UTF-8 of the non-ASCII characters ``str.strip()`` removes, as integers (2 and 3 bytes)
_WS2 = np.array([int.from_bytes(c.encode(), "big") for c in PY_WHITESPACE if 0x7F < ord(c) < 0x800])
_WS3 = np.array([int.from_bytes(c.encode(), "big") for c in PY_WHITESPACE if ord(c) >= 0x800])


def _utf8_keys(buf: np.ndarray, at: np.ndarray, nbytes: int) -> np.ndarray:
    """The ``nbytes`` bytes of ``buf`` from each position ``at`` as one big-endian integer each."""
    key = np.zeros(len(at), dtype=np.int64)
    for j in range(nbytes):
        key = (key << 8) | buf[np.clip(at + j, 0, len(buf) - 1)]
    return key


def _has_odd_bytes(buf: np.ndarray, ends: np.ndarray, tabs: np.ndarray) -> bool:
    """Whether a piece (bytes ``buf``, LF-terminated lines, no CR) holds what only the line reader
    handles: a control character, a C1 control or BOM (as UTF-8), an empty field, or a field with a
    blank (any character ``str.strip()`` removes) at either edge."""
    if _BAD_BYTE[buf].any():
        return True
    starts = np.concatenate([[0], ends[:-1] + 1, tabs + 1])  # first byte of every field
    stops = np.concatenate([ends, tabs]) - 1  # last byte of every field
    if _EDGE_BYTE[buf[starts]].any() or _EDGE_BYTE[buf[stops]].any():
        return True
    high = buf >= 0x80
    if not high.any():
        return False
    lead = np.flatnonzero(high & ((buf == 0xC2) | (buf == 0xEF)))
    pair = _utf8_keys(buf, lead, 2)
    if (((pair >= 0xC280) & (pair <= 0xC29F)) | (_utf8_keys(buf, lead, 3) == 0xEFBBBF)).any():
        return True
    first, last = starts[high[starts]], stops[high[stops]]
    return bool(np.isin(_utf8_keys(buf, first, 2), _WS2).any() or np.isin(_utf8_keys(buf, first, 3), _WS3).any()
                or np.isin(_utf8_keys(buf, last - 1, 2), _WS2).any()
                or np.isin(_utf8_keys(buf, last - 2, 3), _WS3).any())


def _drop_comments_and_blanks(data: bytes, first_line: int) -> tuple[bytes, np.ndarray] | None:
    """``data`` (whole lines, each ending with ``\n``) without its comment and empty lines, and the
    1-based line number of every line kept; None when a dropped line is not UTF-8 (the line reader
    decodes every line, comments included)."""
    if not (data.startswith((b"#", b"\n", b"\r\n")) or b"\n#" in data or b"\n\n" in data or b"\n\r" in data):
        return data, first_line + np.arange(data.count(b"\n"), dtype=np.int64)
    lines = data.split(b"\n")[:-1]
    keep = [i for i, line in enumerate(lines) if line.rstrip(b"\r") and line[0] != 0x23]  # 0x23: '#'
    try:
        b"".join(line for line in lines if line.startswith(b"#")).decode("utf-8")
    except UnicodeDecodeError:
        return None
    kept = b"".join(lines[i] + b"\n" for i in keep)
    return kept, first_line + np.asarray(keep, dtype=np.int64)


def _split_piece(data: bytes, ncols: int, rest_in_last: bool) -> list[str] | None:
    """The fields of every line of ``data`` (whole lines), row after row, ``ncols`` a line; None when
    a line needs the line reader.  With ``rest_in_last`` the last field keeps the line's other TABs."""
    if b"\r" in data:
        if data.count(b"\r") != data.count(b"\r\n"):  # a CR inside a line
            return None
        data = data.replace(b"\r\n", b"\n")
    buf = np.frombuffer(data, np.uint8)
    ends = np.flatnonzero(buf == 0x0A)  # (lines,)
    tabs = np.flatnonzero(buf == 0x09)  # (tabs,)
    per_line = np.diff(np.searchsorted(tabs, ends), prepend=0)  # (lines,) TABs on each line
    if (per_line < ncols - 1).any() or (not rest_in_last and (per_line > ncols - 1).any()):
        return None
    if _has_odd_bytes(buf, ends, tabs):
        return None
    if len(tabs) > (ncols - 1) * len(ends):  # TABs inside last fields: only the first ncols - 1 separate
        first = np.cumsum(per_line) - per_line  # (lines,) index in ``tabs`` of each line's first TAB
        sep = tabs[(first[:, None] + np.arange(ncols - 1)).ravel()]
        mutable = bytearray(data)
        np.frombuffer(mutable, np.uint8)[sep] = 0x0A
        data = bytes(mutable)
    else:
        data = data.replace(b"\t", b"\n")
    try:
        fields = data.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        return None
    fields.pop()  # after the last line break
    return fields


def _fast_codes(values: np.ndarray, index: dict, grow: bool) -> np.ndarray | None:
    """``index[v]`` for every value (object array), new values numbered in order of first appearance
    when ``grow``; None when a value is unknown and ``index`` may not grow."""
    import pandas as pd

    codes, uniq = pd.factorize(values)  # (n,), first-appearance order
    if grow:
        lut = np.fromiter((index.setdefault(u, len(index)) for u in uniq), np.int64, len(uniq))
    else:
        lut = np.fromiter((index.get(u, -1) for u in uniq), np.int64, len(uniq))
        if (lut < 0).any():
            return None
    return lut[codes]


def _fast_pieces(path: Path, ncols: int, rest_in_last: bool):
    """``(fields (rows, ncols) object array, line numbers (rows,))`` per piece of ``path``, or one
    None when the file needs the line reader."""
    for first_line, data in iter_line_chunks(path, _FAST_PIECE):
        if not data.endswith(b"\n"):
            data += b"\n"
        kept = _drop_comments_and_blanks(data, first_line)
        if kept is not None and not kept[0]:
            continue
        fields = None if kept is None else _split_piece(kept[0], ncols, rest_in_last)
        if fields is None:
            yield None
            return
        yield np.array(fields, dtype=object).reshape(-1, ncols), kept[1]


def _fast_triples(path: Path, table: "_EntityTable") -> tuple[np.ndarray, dict[str, int]] | None:
    """``triples.tsv`` by the fast path: ``(triples (n, 3) int64, relations)``, the table filled as the
    line reader fills it (entities by first appearance, head before tail); None to use the line reader."""
    fixed = table.fixed_by is not None
    if not fixed and table.ids:
        return None
    ents: dict[str, int] = table.index if fixed else {}
    relations: dict[str, int] = {}
    parts = []
    for piece in _fast_pieces(path, 3, False):
        if piece is None:
            return None
        rows = piece[0]  # (b, 3)
        e = _fast_codes(rows[:, [0, 2]].ravel(), ents, grow=not fixed)  # (2b,) h0, t0, h1, t1, ...
        if e is None:
            return None
        r = _fast_codes(rows[:, 1], relations, grow=True)  # (b,)
        parts.append(np.stack([e[0::2], r, e[1::2]], axis=1))
    if not parts:
        return None
    if not fixed:
        table.index, table.ids, table.uris = ents, list(ents), list(ents)
    return np.concatenate(parts), relations


def _fast_first_per_entity(path: Path, table: "_EntityTable", report: LoadReport, prefix: str,
                           what: str) -> dict[int, tuple[str, int, None]] | None:
    """:func:`_first_per_entity` of an ``entity<TAB>text`` file by the fast path (the line text is not
    kept: None); None to use the line reader."""
    fixed = table.fixed_by is not None
    index = table.index if fixed else dict(table.index)
    codes, values, lines = [], [], []
    for piece in _fast_pieces(path, 2, True):
        if piece is None:
            return None
        e = _fast_codes(piece[0][:, 0], index, grow=not fixed)
        if e is None:
            return None
        codes.append(e)
        values.append(piece[0][:, 1])
        lines.append(piece[1])
    if not codes:
        return None
    codes, values, lines = np.concatenate(codes), np.concatenate(values), np.concatenate(lines)
    ents, first = np.unique(codes, return_index=True)
    first_of = np.zeros(len(index), dtype=np.int64)
    first_of[ents] = first
    for e, entity in enumerate(list(index)[len(table.ids):], start=len(table.ids)):  # new, by first appearance
        table.add(entity)
        table.seen_at.append((path.name, int(lines[first_of[e]])))
    _report_repeated(len(codes) - len(first), path, report, prefix, what)
    return {int(e): (values[i], int(lines[i]), None) for e, i in zip(ents.tolist(), first.tolist())}


def _read_triples(path: Path, table: _EntityTable, report: LoadReport, prefix: str,
                  notes: list[str], fast: bool = True) -> tuple[np.ndarray, dict[str, int]]:
    """Relation triples of ``triples.tsv`` (relations numbered in order of first appearance).

    ``fast``: try :func:`_fast_triples` first (the same result; the line reader when it declines).

    An empty file (no byte but blanks: a failed copy, usually) is an error; a
    file with comment lines only is a KG without relation triples, which is
    legal but changes what a model can use: counted, warned and noted.
    """
    fast = _fast_triples(path, table) if fast else None
    if fast is not None:
        triples, relations = fast
        rows: list = [None]  # not empty: the fast path found triples
    else:
        relations = {}
        trip = []
        rows = _read_tsv(path, ("head", "relation", "tail"))
        if not rows and not strip_bom(path.read_bytes()).strip():
            raise DataFormatError(path, None, None, "empty file: triples.tsv is required and holds no line",
                                  hint="if this KG really has no relation triples, write one comment line "
                                       "(`# head<TAB>relation<TAB>tail`) and no triples; see docs/formats.md")
        for ln, (h, r, t), line in rows:
            trip.append((table.get(h, path, ln, line), relations.setdefault(r, len(relations)),
                         table.get(t, path, ln, line)))
        triples = np.asarray(trip, dtype=np.int64).reshape(-1, 3)
    triples = drop_duplicate_rows(triples, path, report, f"{prefix}duplicate triples")
    report.count(f"{prefix}triples", len(triples))
    if not rows:
        report.skip(f"{prefix}KGs without relation triples", 1)
        report.warn(f"{path}: no relation triples (comment lines only): models that use the graph "
                    f"structure have nothing to use on this side")
        notes.append("no relation triples (triples.tsv has comment lines only): structure-based models "
                     "have nothing to use on this side")
    return triples, relations


def _read_entities_file(path: Path, table: _EntityTable, report: LoadReport, prefix: str) -> None:
    """``entities.tsv`` into ``table``, which it then fixes (an exact repeat is counted; another URI is an error)."""
    seen_line: dict[str, int] = {}
    repeated = 0
    for ln, parts, line in _read_tsv(path, ("entity", "uri"), min_cols=1, id_cols=2):
        uri = parts[1] if len(parts) > 1 and parts[1] else parts[0]
        if parts[0] in table.index:
            if table.uris[table.index[parts[0]]] != uri:
                raise DataFormatError(path, ln, line, f"entity {parts[0]!r} is already listed on line "
                                                      f"{seen_line[parts[0]]} with another URI")
            repeated += 1
            continue
        seen_line[parts[0]] = ln
        table.add(parts[0], uri)
    if repeated:
        report.skip(f"{prefix}repeated lines in entities.tsv", repeated)
        report.warn(f"{path}: {repeated} repeated entity line(s) ignored")
    table.fixed_by = path
    report.count(f"{prefix}entities listed", len(table.ids))


def _read_attributes(path: Path, table: _EntityTable, report: LoadReport, prefix: str
                     ) -> tuple[dict[str, int], list[tuple[int, int]], list[str]]:
    """``attributes.tsv`` -> (attribute index, (entity, attribute) rows, raw values); exact repeats counted."""
    attr_index: dict[str, int] = {}
    attr_rows: list[tuple[int, int]] = []
    attr_values: list[str] = []
    seen: set[tuple[int, int, str]] = set()
    repeated = 0
    for ln, (e, a, v), line in _read_tsv(path, ("entity", "attribute", "value"), rest_in_last=True):
        key = (table.get(e, path, ln, line), attr_index.setdefault(a, len(attr_index)), v)
        if key in seen:
            repeated += 1
            continue
        seen.add(key)
        attr_rows.append(key[:2])
        attr_values.append(v)
    if repeated:
        report.skip(f"{prefix}duplicate attribute triples", repeated)
        report.warn(f"{path}: {repeated} duplicate attribute line(s) ignored")
    report.count(f"{prefix}attribute triples", len(attr_rows))
    return attr_index, attr_rows, attr_values


def _report_entities_outside_triples(table: _EntityTable, n_in_triples: int, folder: Path, report: LoadReport,
                                     prefix: str, notes: list[str]) -> None:
    """Without ``entities.tsv``, an entity first named by names / attributes / images / descriptions is in no
    triple: legal (an isolated entity) but often a typo of an id, so counted and warned with where it appeared."""
    extra = len(table.ids) - n_in_triples
    if table.fixed_by is not None or extra <= 0:
        return
    where = table.seen_at[-extra:]
    shown = ", ".join(f"{table.ids[n_in_triples + j]!r} ({f} line {ln})"
                      for j, (f, ln) in enumerate(where[:_MAX_LISTED]))
    report.count(f"{prefix}entities in no triple (isolated)", extra)
    report.warn(f"{folder}: {extra} entities are in no triple of triples.tsv, only in the other files "
                f"(isolated entities; a typo of an id?): {shown}{' ...' if extra > _MAX_LISTED else ''}")
    notes.append(f"{extra} isolated entities (in no triple): {shown}{' ...' if extra > _MAX_LISTED else ''}")


def _image_paths(images_given: dict | None, folder: Path, n: int, path: Path | None, report: LoadReport,
                 prefix: str) -> list[str] | None:
    """Per-entity image paths (``""`` = none); listed files that do not exist are counted and warned."""
    if images_given is None:
        return None
    image_paths = [""] * n
    missing_files = []
    for i, (p, ln, _line) in images_given.items():
        full = Path(p) if Path(p).is_absolute() else folder / p
        if full.is_file():
            image_paths[i] = str(full)
        else:
            missing_files.append(f"{p} (line {ln})")
    report.count(f"{prefix}images", len(images_given) - len(missing_files))
    if missing_files:
        report.skip(f"{prefix}missing image files", len(missing_files))
        shown = ", ".join(missing_files[:_MAX_LISTED]) + (" ..." if len(missing_files) > _MAX_LISTED else "")
        report.warn(f"{path}: {len(missing_files)} image file(s) not found, those entities "
                    f"count as having no image: {shown}")
    return image_paths


def _read_kg_folder(folder: Path, name: str, report: LoadReport, prefix: str = "", fast: bool = True
                    ) -> KnowledgeGraph:
    """Read one TSV KG folder into a :class:`KnowledgeGraph`, filling ``report``; ``fast``: try the
    vectorised reader on ``triples.tsv`` and ``names.tsv`` (same result, see the fast path above)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MmeaInputError(f"{folder}: no such directory")
    if optional_file(folder / "triples.tsv") is None:
        raise MmeaInputError(f"{folder}: no triples.tsv",
                             hint="a TSV knowledge-graph folder needs triples.tsv "
                                  "(head<TAB>relation<TAB>tail); see docs/formats.md")
    files = {f: folder / f for f in KG_FILES if optional_file(folder / f) is not None}
    for path in files.values():
        warn_unterminated(path, report, prefix)
    table = _EntityTable()
    if "entities.tsv" in files:
        _read_entities_file(files["entities.tsv"], table, report, prefix)

    meta_notes: list[str] = []
    triples, relations = _read_triples(files["triples.tsv"], table, report, prefix, meta_notes, fast)
    n_in_triples = len(table.ids)

    names_given = None
    if "names.tsv" in files:
        path = files["names.tsv"]
        names_given = _fast_first_per_entity(path, table, report, prefix, "name") if fast else None
        if names_given is None:
            rows = _read_tsv(path, ("entity", "name"), rest_in_last=True)
            names_given = _first_per_entity(rows, table, path, report, prefix, "name")

    attr_index, attr_rows, attr_values = (_read_attributes(files["attributes.tsv"], table, report, prefix)
                                          if "attributes.tsv" in files else ({}, [], []))

    images_given = None
    if "images.tsv" in files:
        path = files["images.tsv"]
        images_given = _first_per_entity(_read_tsv(path, ("entity", "path"), id_cols=1), table, path, report,
                                         prefix, "image")

    descr_given = None
    if "descriptions.tsv" in files:
        path = files["descriptions.tsv"]
        rows = _read_tsv(path, ("entity", "text"), rest_in_last=True)
        descr_given = _first_per_entity(rows, table, path, report, prefix, "description")

    _report_entities_outside_triples(table, n_in_triples, folder, report, prefix, meta_notes)
    n = len(table.ids)
    report.count(f"{prefix}entities", n)
    report.count(f"{prefix}relations", len(relations))
    meta = {"folder": str(folder), "files": {f: str(p) for f, p in files.items()}, "notes": meta_notes}

    if names_given is None:
        names = [local_name(u) for u in table.uris]
        meta["notes"].append("no names.tsv: display names are the local names of the entity URIs")
    else:  # the user named entities: one without a line has no name ("")
        names = [names_given[i][0] if i in names_given else "" for i in range(n)]
        missing = n - len(names_given)
        report.count(f"{prefix}names", len(names_given))
        if missing:
            report.skip(f"{prefix}entities without a name in names.tsv", missing)
            unnamed = [table.ids[i] for i in range(n) if i not in names_given]
            shown = ", ".join(map(repr, unnamed[:_MAX_LISTED])) + (" ..." if missing > _MAX_LISTED else "")
            report.warn(f"{files['names.tsv']}: {missing} entities have no name (left empty): {shown}")

    image_paths = _image_paths(images_given, folder, n, files.get("images.tsv"), report, prefix)

    descriptions = None
    if descr_given is not None:
        descriptions = [descr_given[i][0] if i in descr_given else "" for i in range(n)]
        report.count(f"{prefix}descriptions", len(descr_given))

    values = np.empty(len(attr_values), dtype=object)
    values[:] = attr_values
    return KnowledgeGraph(
        name=name, ids=list(table.ids), uris=list(table.uris), names=names,
        relations=list(relations), triples=triples,
        attributes=list(attr_index), attr_triples=np.asarray(attr_rows, dtype=np.int64).reshape(-1, 2),
        attr_values=values, attr_numeric=np.array([parse_numeric(v) for v in attr_values], dtype=np.float64),
        image_paths=image_paths, descriptions=descriptions, meta=meta)


def load_tsv_kg(path: str | Path, name: str | None = None, *, fast: bool = True) -> KnowledgeGraph:
    """Read one TSV knowledge-graph folder (see the module docstring).

    The load report is stored in ``kg.meta["load_report"]`` and logged.  ``fast=False`` reads every
    file line by line (the reference the vectorised reader is tested against).
    """
    path = Path(path)
    report = LoadReport()
    kg = _read_kg_folder(path, name or path.name, report, fast=fast)
    kg.meta["load_report"] = report.as_dict()
    report.log(log)
    return kg


# ---------------------------------------------------------------------------
# pairs
# ---------------------------------------------------------------------------

def _entity_lookup(kg: KnowledgeGraph) -> dict[str, int]:
    """Entity id -> internal id, with URIs accepted too (ids win on a clash)."""
    index = dict(kg.uri_index)
    index.update(kg.index)
    return index


def _read_link_file(path: Path, kg1: KnowledgeGraph, kg2: KnowledgeGraph, report: LoadReport,
                    what: str) -> np.ndarray:
    """``kg1_entity<TAB>kg2_entity`` lines -> validated internal links ``(n, 2)``."""
    idx1, idx2 = _entity_lookup(kg1), _entity_lookup(kg2)
    rows, lines = [], []
    warn_unterminated(path, report)
    for ln, (a, b), line in _read_tsv(path, ("kg1_entity", "kg2_entity")):
        i, j = idx1.get(a), idx2.get(b)
        if i is None or j is None:
            side, kg, e = ("first", kg1, a) if i is None else ("second", kg2, b)
            hint = ("the columns look swapped (kg2 entity first)" if i is None and a in idx2 and b in idx1
                    else "links name entities by the ids used in the KG files (or their URIs)")
            raise DataFormatError(path, ln, line, f"{side} column: {e!r} is not an entity of {kg.name} "
                                                  f"({kg.meta.get('folder', '')})", hint=hint)
        rows.append((i, j))
        lines.append(ln)
    return check_links(np.asarray(rows, dtype=np.int64).reshape(-1, 2), path, report,
                       np.asarray(lines, dtype=np.int64), what=what, ids=(kg1.ids, kg2.ids))


def _tsv_split(link_dir: Path, links_path: Path | None, kg1: KnowledgeGraph, kg2: KnowledgeGraph,
               options: LoadOptions, report: LoadReport, notes: list[str]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Gold links and their split for a TSV pair; provenance of both."""
    if links_path is None:
        links_path = optional_file(link_dir / "links.tsv")
    else:
        required_file(links_path, "links file")
    split_files = {p: link_dir / f"{p}_links.tsv" for p in SPLIT_PARTS
                   if optional_file(link_dir / f"{p}_links.tsv") is not None}
    prov: dict = {"links": str(links_path) if links_path else None}
    all_links = _read_link_file(Path(links_path), kg1, kg2, report, "links") if links_path else None

    if options.use_dataset_split or (all_links is None and split_files):
        if not split_files:
            raise MmeaInputError(f"{link_dir}: the dataset split was asked for but there is no "
                                 f"train_links.tsv / valid_links.tsv / test_links.tsv")
        parts = {p: _read_link_file(f, kg1, kg2, report, f"{p} links") for p, f in split_files.items()}
        train, valid, test, extra = split_from_parts(all_links, parts.get("train"), parts.get("valid"),
                                                     parts.get("test"), options, str(link_dir))
        prov["split"] = {"kind": "dataset", **{p: str(f) for p, f in split_files.items()}, **extra}
        return train, valid, test, prov
    if all_links is None:
        empty = np.zeros((0, 2), dtype=np.int64)
        notes.append("no gold links: evaluation will be skipped")
        report.warn(f"{link_dir}: no links.tsv and no split files: no gold links, evaluation will be skipped")
        prov["split"] = {"kind": "none"}
        return empty, empty, empty, prov
    if split_files:
        notes.append(f"{', '.join(f.name for f in split_files.values())} not used: seeded split of "
                     f"{Path(links_path).name} (the dataset split uses them)")
        report.warn(f"{link_dir}: {notes[-1]}")
    ratio = DEFAULT_SEED_RATIO if options.seed_ratio is None else options.seed_ratio
    train, valid, test, prov["split"] = seeded_split(all_links, ratio, options)
    return train, valid, test, prov


def _make_pair_task(name: str, kg1: KnowledgeGraph, kg2: KnowledgeGraph, link_dir: Path,
                    links_path: Path | None, options: LoadOptions, report: LoadReport, prov: dict
                    ) -> AlignmentTask:
    notes: list[str] = []
    train, valid, test, link_prov = _tsv_split(link_dir, links_path, kg1, kg2, options, report, notes)
    prov.update(link_prov)
    for kg in (kg1, kg2):
        notes.extend(f"{kg.name}: {n}" for n in kg.meta.get("notes", []))
    if options.swap:
        kg1, kg2 = kg2, kg1
        train, valid, test = (p[:, ::-1].copy() for p in (train, valid, test))
        prov["source"], prov["target"] = prov["target"], prov["source"]
        prov["swapped"] = True
    task = AlignmentTask(name, kg1, kg2, train, valid, test, provenance=prov,
                         meta={"load_report": report.as_dict(), "notes": notes})
    report.log(log)
    return task


def load_tsv_pair(src_dir: str | Path, tgt_dir: str | Path, links_path: str | Path | None = None,
                  options: LoadOptions | None = None) -> AlignmentTask:
    """Align two TSV KG folders (``--src DIR1 --tgt DIR2``).

    Links default to ``DIR1/links.tsv`` when present (split files
    ``DIR1/{train,valid,test}_links.tsv`` likewise); without any link the task has
    empty splits and the note ``"no gold links: evaluation will be skipped"``.
    """
    options = options or LoadOptions()
    src_dir, tgt_dir = Path(src_dir), Path(tgt_dir)
    report = LoadReport()
    kg1 = _read_kg_folder(src_dir, src_dir.name, report, "kg1 ")
    kg2 = _read_kg_folder(tgt_dir, tgt_dir.name if tgt_dir.name != src_dir.name else f"{tgt_dir.name}_2",
                          report, "kg2 ")
    prov = {"loader": "tsv", "source": str(src_dir), "target": str(tgt_dir)}
    return _make_pair_task(f"{src_dir.name}-{tgt_dir.name}", kg1, kg2, src_dir,
                           Path(links_path) if links_path else None, options, report, prov)


@LOADERS.register
class TsvLoader(DatasetLoader):
    """Plain-TSV pair folder (kg1/, kg2/, links.tsv): users' own KGs."""

    description = "plain TSV: kg1/ and kg2/ folders (triples.tsv, names.tsv, ...) and links.tsv"

    @classmethod
    def detect(cls, path: Path) -> bool:
        path = Path(path)  # exists(), not is_file(): a directory in its place is then an error naming it
        return (path / "kg1" / "triples.tsv").exists() and (path / "kg2" / "triples.tsv").exists()

    def load(self, path: Path, options: LoadOptions | None = None) -> AlignmentTask:
        options = options or LoadOptions()
        path = Path(path)
        if not self.detect(path):
            raise MmeaInputError(f"{path}: not a TSV pair folder (needs kg1/triples.tsv and kg2/triples.tsv)",
                                 hint="see docs/formats.md, 'Plain TSV'")
        report = LoadReport()
        kg1 = _read_kg_folder(path / "kg1", "kg1", report, "kg1 ")
        kg2 = _read_kg_folder(path / "kg2", "kg2", report, "kg2 ")
        from ..synth import synth_record  # lazily: the generator is not needed to read a pair

        prov = {"loader": "tsv", "folder": str(path), "source": str(path / "kg1"), "target": str(path / "kg2"),
                "generator": synth_record(path)}
        return _make_pair_task(path.name, kg1, kg2, path, None, options, report, prov)
