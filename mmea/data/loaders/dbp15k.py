"""DBP15k loader (``dbp15k``): the GCN-Align / JAPE id layout and its companion files.

A pair folder (``DBP15k/zh_en``, ``DBP15k_JAPE_0_3/zh_en``)::

    ent_ids_1, ent_ids_2            id<TAB>URI; one global id space over both KGs
    triples_1, triples_2            h r t (global entity ids, relation ids)
    ref_ent_ids | ill_ent_ids       gold links (id1 id2): all of them (GCN-Align)
    sup_pairs | sup_ent_ids         training links (JAPE), optional
    ref_pairs                       test links (JAPE), optional
    rel_ids_1/2 | cleaned_rel_ids_1/2   relation id<TAB>name, optional

Companion files, looked up beside the folder and under ``options.data_root``:

* ``../translated_ent_name/dbp_<pair>.json``: ``[[global_id, [tokens...]], ...]``,
  machine-translated names of the first KG and tokenised names of the second;
* ``../../DBP15k_MuGNN/<pair>/{attr2id,entity2att,entity2id}_<lang>.txt``:
  attribute names per entity in MuGNN's own entity id space, matched by URI.

Everything that can be is vectorised with numpy: loading zh_en with every
companion file takes well under a second.
"""

from __future__ import annotations

import json
from itertools import chain
from pathlib import Path

import numpy as np

from ...errors import DataFormatError, MmeaInputError
from ..graph import AlignmentTask, KnowledgeGraph, local_name
from ..parsing import (LoadReport, check_id, check_links, decode_utf8, iter_lines, nonblank_line_numbers,
                       optional_file, read_file_bytes, read_id_map, read_int_pairs, read_int_triples,
                       require_rows, warn_unterminated)
from .base import LOADERS, DatasetLoader, LoadOptions, log
from ..splits import DEFAULT_SEED_RATIO, seeded_split, split_from_parts, union_links
from .tsv import drop_duplicate_rows

__all__ = ["Dbp15kLoader"]

ALL_LINK_FILES = ("ref_ent_ids", "ill_ent_ids")
TRAIN_LINK_FILES = ("sup_pairs", "sup_ent_ids")
TEST_LINK_FILES = ("ref_pairs",)
RELATION_NAME_FILES = ("rel_ids_{}", "cleaned_rel_ids_{}")  # first found wins
_REQUIRED = ("ent_ids_1", "ent_ids_2", "triples_1", "triples_2")


def _first_existing(folder: Path, names) -> Path | None:
    """The first of ``names`` present in ``folder`` (a directory in its place is an error)."""
    for n in names:
        if optional_file(folder / n) is not None:
            return folder / n
    return None


def _is_pair_folder(path: Path) -> bool:
    """The DBP15k files are there (an ``attr`` file marks the MMKG converted layout instead).

    ``exists()`` rather than ``is_file()``: a directory in place of a file is then
    reported by the loader, naming it, instead of "not in any supported layout".
    """
    return all((path / f).exists() for f in _REQUIRED) and not (path / "attr").exists() and \
        any((path / f).exists() for f in ALL_LINK_FILES + TRAIN_LINK_FILES + TEST_LINK_FILES)


def _row_line(path: Path, row: int) -> tuple[int | None, str | None]:
    """Line number and text of the ``row``-th non-blank line of ``path`` (0-based row)."""
    for k, (ln, line) in enumerate(iter_lines(path)):
        if k == row:
            return ln, line
    return None, None


def _row_line_numbers(path: Path) -> np.ndarray:
    """1-based line numbers of the non-blank lines (the rows of the integer readers)."""
    return nonblank_line_numbers(path)


class _IntIndex:
    """Vectorised map from the integer ids of an id file to their positions 0..n-1."""

    def __init__(self, ids: np.ndarray):
        ids = np.asarray(ids, dtype=np.int64)
        self.order = np.argsort(ids, kind="stable")
        self.sorted = ids[self.order]

    def find(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(positions, found)`` for each value of ``raw``; positions are 0 where not found."""
        raw = np.asarray(raw, dtype=np.int64)
        if not len(self.sorted):
            return np.zeros(raw.shape, dtype=np.int64), np.zeros(raw.shape, dtype=bool)
        pos = np.minimum(np.searchsorted(self.sorted, raw), len(self.sorted) - 1)
        found = self.sorted[pos] == raw
        return np.where(found, self.order[pos], 0), found

    def map_column(self, raw: np.ndarray, path: Path, what: str, defined_in: str) -> np.ndarray:
        """Positions of ``raw`` (one column of rows read from ``path``); an unknown id is an
        error naming the first offending line."""
        out, found = self.find(raw)
        if not found.all():
            row = int(np.argmin(found))
            ln, text = _row_line(path, row)
            raise DataFormatError(path, ln, text, f"{what} id {int(raw[row])} is not defined in {defined_in}",
                                  hint=f"{int((~found).sum())} such id(s) in all; check that the files come from "
                                       "the same dataset copy (ids differ between DBP15k copies)")
        return out


# ---------------------------------------------------------------------------
# one KG side
# ---------------------------------------------------------------------------

class _Side:
    """Entities, triples and relations of one KG, read from ``ent_ids_k`` / ``triples_k``."""

    def __init__(self, folder: Path, k: int, report: LoadReport, prefix: str):
        self.ent_path = folder / f"ent_ids_{k}"
        self.triple_path = folder / f"triples_{k}"
        self.ent_lines: list[int] = []
        self.gids, self.uris = read_id_map(self.ent_path, what="URI", line_nos=self.ent_lines)
        require_rows(self.ent_path, len(self.gids), "entity lines (`id<TAB>URI`)")
        self.index = _IntIndex(self.gids)
        report.count(f"{prefix}entities", len(self.gids))

    def read_triples(self, folder: Path, k: int, report: LoadReport, prefix: str) -> None:
        """Triples and relation names of this side (after both sides' ids are known to be disjoint)."""
        raw = read_int_triples(self.triple_path)
        require_rows(self.triple_path, len(raw), "triples (`head relation tail`)")
        for path in (self.ent_path, self.triple_path):
            warn_unterminated(path, report, prefix)
        heads = self.index.map_column(raw[:, 0], self.triple_path, "head entity", self.ent_path.name)
        tails = self.index.map_column(raw[:, 2], self.triple_path, "tail entity", self.ent_path.name)

        self.rel_path = _first_existing(folder, [f.format(k) for f in RELATION_NAME_FILES])
        name_ids, rel_names = (read_id_map(self.rel_path, what="relation") if self.rel_path
                               else (np.zeros(0, np.int64), []))
        rel_ids = np.unique(np.concatenate([raw[:, 1], name_ids]))  # union, renumbered 0..R-1
        by_id = dict(zip(name_ids.tolist(), rel_names))
        self.relation_ids = rel_ids.tolist()
        self.relations = [by_id.get(r) or f"rel_{r}" for r in self.relation_ids]
        unnamed = sum(1 for r in self.relation_ids if not by_id.get(r))
        report.count(f"{prefix}relations", len(rel_ids))
        if unnamed:
            where = self.rel_path.name if self.rel_path else "no relation-name file"
            report.skip(f"{prefix}relations without a name (named rel_<id>)", unnamed)
            report.warn(f"{folder}: {unnamed} of {len(rel_ids)} relations of KG {k} have no name "
                        f"({where}); they are named rel_<id>")

        triples = np.stack([heads, np.searchsorted(rel_ids, raw[:, 1]), tails], axis=1)
        self.triples = drop_duplicate_rows(triples, self.triple_path, report, f"{prefix}duplicate triples")
        report.count(f"{prefix}triples", len(self.triples))

    @property
    def uri_index(self) -> dict[str, int]:
        return {u: i for i, u in enumerate(self.uris)}


def _check_disjoint_ids(s1: _Side, s2: _Side) -> None:
    """Both KGs share one global id space: an id defined by both ``ent_ids`` files is an error
    naming both lines (the entity would otherwise take the other KG's translated name)."""
    shared = np.intersect1d(s1.gids, s2.gids)
    if not len(shared):
        return
    k = int(shared[0])
    j1, j2 = int(np.flatnonzero(s1.gids == k)[0]), int(np.flatnonzero(s2.gids == k)[0])
    ln2 = s2.ent_lines[j2]
    raise DataFormatError(s2.ent_path, ln2, f"{k}\t{s2.uris[j2]}",
                          f"entity id {k} is already defined in {s1.ent_path.name}, line {s1.ent_lines[j1]} "
                          f"({s1.uris[j1]!r}); {len(shared)} shared id(s) in all",
                          hint="the two ent_ids files share one global id space: every id must be unique "
                               "across both")


# ---------------------------------------------------------------------------
# links and split
# ---------------------------------------------------------------------------

def _check_not_swapped(path: Path, raw: np.ndarray, s1: _Side, s2: _Side) -> None:
    """An error with a hint when a link line names a KG2 entity first and a KG1 entity second."""
    in1_first = s1.index.find(raw[:, 0])[1]
    swapped = ~in1_first & s2.index.find(raw[:, 0])[1] & s1.index.find(raw[:, 1])[1]
    if swapped.any():
        row = int(np.argmax(swapped))
        ln, text = _row_line(path, row)
        raise DataFormatError(path, ln, text, f"first-column entity id {int(raw[row, 0])} is an entity of "
                                              f"{s2.ent_path.name}, not of {s1.ent_path.name}",
                              hint=f"the columns look swapped (KG2 entity first; {int(swapped.sum())} such line(s)); "
                                   f"link lines are `{s1.ent_path.name} id<TAB>{s2.ent_path.name} id`")


def _read_links(path: Path, s1: _Side, s2: _Side, report: LoadReport, what: str) -> np.ndarray:
    raw = read_int_pairs(path)
    require_rows(path, len(raw), "links (`id1 id2`)")
    warn_unterminated(path, report)
    _check_not_swapped(path, raw, s1, s2)
    a = s1.index.map_column(raw[:, 0], path, "first-column entity", s1.ent_path.name)
    b = s2.index.map_column(raw[:, 1], path, "second-column entity", s2.ent_path.name)
    return check_links(np.stack([a, b], axis=1), path, report, _row_line_numbers(path), what=what,
                       ids=(s1.gids.tolist(), s2.gids.tolist()))


def _split(folder: Path, s1: _Side, s2: _Side, options: LoadOptions, report: LoadReport
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Gold links and their train / valid / test split; provenance of both."""
    files = {"all": _first_existing(folder, ALL_LINK_FILES), "train": _first_existing(folder, TRAIN_LINK_FILES),
             "test": _first_existing(folder, TEST_LINK_FILES)}
    read = {k: _read_links(p, s1, s2, report, f"{k} links" if k != "all" else "links")
            for k, p in files.items() if p is not None}
    used = [str(p) for p in files.values() if p is not None]
    links = union_links(list(read.values()), " + ".join(used))
    report.count("gold links (all files)", len(links))
    prov: dict = {"links": used[0] if len(used) == 1 else used}
    if options.use_dataset_split:
        if "train" not in read:
            raise MmeaInputError(f"{folder}: the dataset split was asked for but there is no "
                                 f"{' / '.join(TRAIN_LINK_FILES)} file",
                                 hint="drop --use-dataset-split for a seeded split of the gold links")
        train, valid, test, extra = split_from_parts(links, read["train"], None, read.get("test"), options,
                                                     str(folder))
        prov["split"] = {"kind": "dataset", "train": str(files["train"]),
                         **({"test": str(files["test"])} if files["test"] else {}), **extra}
        return train, valid, test, prov
    ratio = DEFAULT_SEED_RATIO if options.seed_ratio is None else options.seed_ratio
    train, valid, test, prov["split"] = seeded_split(links, ratio, options)
    return train, valid, test, prov


# ---------------------------------------------------------------------------
# translated names
# ---------------------------------------------------------------------------

def _read_translated_json(path: Path) -> list:
    text = decode_utf8(path, read_file_bytes(path))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataFormatError(path, e.lineno, None, f"invalid JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(data, list):
        raise DataFormatError(path, None, None, "expected a JSON list of [id, [tokens...]]")
    for item in data:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], int)
                and isinstance(item[1], list) and all(isinstance(t, str) for t in item[1])):
            raise DataFormatError(path, None, json.dumps(item, ensure_ascii=False)[:200],
                                  "expected entries [id, [tokens...]]")
    return data


def _find_translated(folder: Path, pair: str, options: LoadOptions) -> tuple[Path | None, Path | None]:
    """``(json file, folder whose ent_ids number it)``.

    The folder is ``None`` when the file sits beside ``folder`` (same dataset
    copy, same ids); a file found elsewhere (``../../DBP15k/`` or the data
    root) numbers entities like the ``DBP15k/<pair>`` folder next to it, which
    may be another id space (the JAPE 0_3 copy): it is then matched by URI.
    """
    name = f"dbp_{pair}.json"
    beside = folder.parent / "translated_ent_name" / name
    if optional_file(beside) is not None:
        return beside, None
    roots = [folder.parent.parent] + ([Path(options.data_root)] if options.data_root is not None else [])
    for root in roots:
        cand = root / "DBP15k" / "translated_ent_name" / name
        if optional_file(cand) is not None:
            id_dir = cand.parent.parent / pair
            same = id_dir.is_dir() and id_dir.resolve() == folder.resolve()
            return cand, None if same else id_dir
    return None, None


def _translated_names(folder: Path, pair: str, sides: list[_Side], options: LoadOptions,
                      report: LoadReport, notes: list[str]) -> tuple[list[list[str]] | None, str | None]:
    """Translated names for both sides (``None`` when unavailable) and the file they came from."""
    path, id_dir = _find_translated(folder, pair, options)
    if path is None:
        notes.append(f"no translated names (translated_ent_name/dbp_{pair}.json not found beside {folder}, "
                     "in ../../DBP15k/ or under the data root)")
        report.skip("translated-name file not found", 1)
        report.warn(notes[-1])
        return None, None
    entries = _read_translated_json(path)
    by_id: dict[int, str] = {}
    repeated = 0
    for gid, tokens in entries:
        if gid in by_id:
            repeated += 1
            continue
        by_id[gid] = " ".join(tokens)
    if repeated:
        report.skip("repeated ids in the translated-name file", repeated)
        report.warn(f"{path}: {repeated} repeated id(s); the first entry is kept")

    if id_dir is None:  # same id space as this folder
        keys_per_side = [s.gids.tolist() for s in sides]
        by_key = by_id
    elif all(optional_file(id_dir / f"ent_ids_{k}") is not None for k in (1, 2)):  # another copy: match by URI
        uri_of: dict[int, str] = {}
        for k in (1, 2):
            ids, uris = read_id_map(id_dir / f"ent_ids_{k}")
            uri_of.update(zip(ids.tolist(), uris))
        by_key = {uri_of[g]: t for g, t in by_id.items() if g in uri_of}
        if len(by_key) < len(by_id):
            report.skip("translated names of ids unknown to the matching folder", len(by_id) - len(by_key))
            report.warn(f"{path}: {len(by_id) - len(by_key)} entries name no entity of {id_dir}")
        keys_per_side = [s.uris for s in sides]
        notes.append(f"translated names from {path} matched by URI through {id_dir} (another id space)")
    else:
        notes.append(f"translated names not used: {path} numbers entities as {id_dir}, which is missing")
        report.skip("translated-name file in an unknown id space", 1)
        report.warn(notes[-1])
        return None, None

    out, matched = [], 0
    for k, keys in enumerate(keys_per_side, start=1):
        names = [by_key.get(x) for x in keys]
        missing = sum(1 for x in names if x is None)
        empty = sum(1 for x in names if x == "")
        matched += len(names) - missing
        report.count(f"kg{k} translated names", len(names) - missing - empty)
        if missing:
            report.skip(f"kg{k} entities without a translated name", missing)
            report.warn(f"{path}: {missing} entities of KG {k} have no translated name")
        if empty:
            report.skip(f"kg{k} empty translated names", empty)
            report.warn(f"{path}: {empty} entities of KG {k} have an empty token list")
        out.append([x or "" for x in names])
    unused = len(by_key) - matched
    if unused > 0:
        report.skip("translated names of unknown entities", unused)
        report.warn(f"{path}: {unused} entries name no entity of this pair")
    return out, str(path)


# ---------------------------------------------------------------------------
# MuGNN attributes
# ---------------------------------------------------------------------------

def _mugnn_files(folder: Path, lang: str) -> dict[str, Path]:
    return {k: folder / f"{k}_{lang}.txt" for k in ("attr2id", "entity2att", "entity2id")}


def _find_mugnn(folder: Path, pair: str, langs: tuple[str, str], options: LoadOptions) -> Path | None:
    cands = [folder, folder.parent.parent / "DBP15k_MuGNN" / pair]
    if options.data_root is not None:
        cands.append(Path(options.data_root) / "DBP15k_MuGNN" / pair)
    for c in cands:
        if any(p.exists() for lang in langs for p in _mugnn_files(c, lang).values()):
            return c
    return None


def _header_count(path: Path, first: tuple[int, str] | None) -> int:
    if first is None:
        raise DataFormatError(path, None, None, "empty file (expected the entry count on the first line)")
    ln, text = first
    try:
        return int(text.strip())
    except ValueError:
        raise DataFormatError(path, ln, text, "expected the entry count on the first line") from None


def _check_count(path: Path, declared: int, found: int, report: LoadReport) -> None:
    if declared != found:
        report.count("header count mismatches")
        report.warn(f"{path}: the first line declares {declared} entries but the file has {found}")


def _text_lines(path: Path) -> list[tuple[int, str]]:
    """``(line_no, line)`` of the non-blank lines, decoding the file at once (fast);
    bytes that are not UTF-8 are an error naming their line."""
    text = decode_utf8(path, read_file_bytes(path))
    return [(i, ln.rstrip("\r")) for i, ln in enumerate(text.split("\n"), start=1) if ln.strip()]


def _read_counted_uri_map(path: Path, report: LoadReport) -> tuple[np.ndarray, list[str]]:
    """``URI<TAB>id`` lines after a count line -> (ids, URIs); a repeated id is an error."""
    lines = _text_lines(path)
    declared = _header_count(path, lines[0] if lines else None)
    ids, uris = [], []
    for ln, line in lines[1:]:
        uri, sep, k = line.rpartition("\t")
        if not sep or not uri.strip():
            raise DataFormatError(path, ln, line, "expected `URI<TAB>id`")
        check_id(path, ln, line, uri.strip(), "URI")
        try:
            ids.append(int(k))
        except ValueError:
            raise DataFormatError(path, ln, line, f"expected an integer id, found {k!r}") from None
        uris.append(uri.strip())
    ids_arr = np.asarray(ids, dtype=np.int64)
    uniq, counts = np.unique(ids_arr, return_counts=True)
    if (counts > 1).any():
        k = int(uniq[counts > 1][0])
        again = np.nonzero(ids_arr == k)[0][:2]
        ln, line = lines[1 + int(again[1])]
        raise DataFormatError(path, ln, line, f"id {k} already defined on line {lines[1 + int(again[0])][0]}")
    _check_count(path, declared, len(ids), report)
    return ids_arr, uris


def _read_entity2att(path: Path, report: LoadReport) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``entity_id<TAB>attr_id...`` rows after a count line.

    Returns ``(row_entity (r,), pair_row (m,), pair_attr (m,), row_line_no (r,))``.
    """
    data = read_file_bytes(path)
    raw_lines = data.split(b"\n")
    rows = [(i, ln) for i, ln in enumerate(raw_lines, start=1) if ln.strip()]
    if not rows:
        raise DataFormatError(path, None, None, "empty file (expected the entry count on the first line)")
    body = rows[1:]
    tokens = [ln.split() for _, ln in body]
    try:
        declared = int(rows[0][1])
        flat = np.array(list(chain.from_iterable(tokens)), dtype=np.int64)
    except (ValueError, OverflowError):
        _raise_first_bad_int_line(path)
        raise  # pragma: no cover - the line above always raises
    lens = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
    _check_count(path, declared, len(body), report)
    starts = np.cumsum(lens) - lens
    row_entity = flat[starts]
    pair_attr = np.delete(flat, starts)
    pair_row = np.repeat(np.arange(len(body)), lens - 1)
    return row_entity, pair_row, pair_attr, np.asarray([i for i, _ in body], dtype=np.int64)


def _raise_first_bad_int_line(path: Path) -> None:
    lines = iter_lines(path)  # raises on bytes that are not UTF-8
    _header_count(path, next(lines, None))
    for ln, line in lines:
        for tok in line.split():
            try:
                int(tok)
            except ValueError:
                raise DataFormatError(path, ln, line, f"expected integer ids, found {tok!r}") from None
    raise DataFormatError(path, None, None, "could not parse the integer rows")  # pragma: no cover


def _mugnn_attributes(mdir: Path, lang: str, side: _Side, k: int, report: LoadReport
                      ) -> tuple[list[str], np.ndarray, dict] | None:
    """(attribute URIs, (entity, attribute) pairs in this side's ids, files) or ``None`` if absent."""
    files = _mugnn_files(mdir, lang)
    missing = [p.name for p in files.values() if optional_file(p) is None]
    if missing:
        report.skip(f"kg{k} attribute files missing", len(missing))
        report.warn(f"{mdir}: no attributes for KG {k}: {', '.join(missing)} not found")
        return None
    attr_ids, attributes = _read_counted_uri_map(files["attr2id"], report)
    ent_ids, ent_uris = _read_counted_uri_map(files["entity2id"], report)
    row_entity, pair_row, pair_attr, row_lines = _read_entity2att(files["entity2att"], report)

    path = files["entity2att"]
    ent_pos, found = _IntIndex(ent_ids).find(row_entity)
    if not found.all():
        r = int(np.argmin(found))
        raise DataFormatError(path, int(row_lines[r]), None,
                              f"entity id {int(row_entity[r])} is not defined in {files['entity2id'].name}")
    attr_pos, found = _IntIndex(attr_ids).find(pair_attr)
    if not found.all():
        j = int(np.argmin(found))
        raise DataFormatError(path, int(row_lines[pair_row[j]]), None,
                              f"attribute id {int(pair_attr[j])} is not defined in {files['attr2id'].name}")

    ours_by_uri = side.uri_index
    ours_of_mugnn = np.asarray([ours_by_uri.get(u, -1) for u in ent_uris], dtype=np.int64)
    row_ours = ours_of_mugnn[ent_pos]
    lost = row_ours < 0
    if lost.any():
        report.skip(f"kg{k} attribute entities not in {side.ent_path.name}", int(lost.sum()))
        report.warn(f"{path}: {int(lost.sum())} entities (by URI) are not in {side.ent_path}; "
                    f"their attributes are skipped")
    keep = ~lost[pair_row]
    if (~keep).any():
        report.skip(f"kg{k} attribute triples of unknown entities", int((~keep).sum()))
    pairs = np.stack([row_ours[pair_row[keep]], attr_pos[keep]], axis=1)
    pairs = drop_duplicate_rows(pairs, path, report, f"kg{k} duplicate attribute triples")
    report.count(f"kg{k} attributes", len(attributes))
    report.count(f"kg{k} attribute triples", len(pairs))
    return attributes, pairs, {n: str(p) for n, p in files.items()}


# ---------------------------------------------------------------------------
# the loader
# ---------------------------------------------------------------------------

def _resolve_folder(path: Path, options: LoadOptions) -> Path:
    if _is_pair_folder(path):
        return path
    if options.pair and _is_pair_folder(path / options.pair):
        return path / options.pair
    pairs = sorted(p.name for p in path.iterdir() if p.is_dir() and _is_pair_folder(p)) if path.is_dir() else []
    raise MmeaInputError(
        f"{path}: not a DBP15k pair folder (needs {', '.join(_REQUIRED)} and a link file)"
        + (f"; it holds the pairs {', '.join(pairs)}" if pairs else ""),
        hint="give the pair folder, or the parent folder with --pair zh_en" if pairs else "see docs/formats.md")


@LOADERS.register
class Dbp15kLoader(DatasetLoader):
    """DBP15k (GCN-Align / JAPE ids) with relation names, translated names and MuGNN attributes."""

    description = "DBP15k GCN-Align / JAPE layout: ent_ids_1/2, triples_1/2, ref_ent_ids (+ sup/ref pairs)"

    @classmethod
    def detect(cls, path: Path) -> bool:
        path = Path(path)
        if _is_pair_folder(path):
            return True
        return path.is_dir() and any(p.is_dir() and _is_pair_folder(p) for p in path.iterdir())

    def load(self, path: Path, options: LoadOptions | None = None) -> AlignmentTask:
        options = options or LoadOptions()
        folder = _resolve_folder(Path(path), options)
        pair = options.pair or folder.name
        langs = tuple(pair.split("_")) if pair.count("_") == 1 else None
        report = LoadReport()
        notes: list[str] = []

        sides = [_Side(folder, k, report, f"kg{k} ") for k in (1, 2)]
        _check_disjoint_ids(sides[0], sides[1])
        for k, side in enumerate(sides, start=1):
            side.read_triples(folder, k, report, f"kg{k} ")
        train, valid, test, link_prov = _split(folder, sides[0], sides[1], options, report)
        translated, translated_path = _translated_names(folder, pair, sides, options, report, notes)

        attrs: list = [None, None]
        mdir = _find_mugnn(folder, pair, langs, options) if langs else None
        if mdir is None:
            notes.append("no attributes (DBP15k_MuGNN/<pair> files not found)" if langs else
                         f"no attributes: the pair name {pair!r} does not give the two languages (xx_yy)")
            report.skip("attribute folder not found", 1)
            report.warn(notes[-1])
        else:
            attrs = [_mugnn_attributes(mdir, lang, s, k, report)
                     for k, (lang, s) in enumerate(zip(langs, sides), start=1)]

        kgs, side_prov = [], []
        for k, s in enumerate(sides, start=1):
            a = attrs[k - 1]
            attributes, pairs, attr_files = a if a is not None else ([], np.zeros((0, 2), np.int64), None)
            values = np.empty(len(pairs), dtype=object)
            values[:] = ""
            prov = {"entities": str(s.ent_path), "triples": str(s.triple_path),
                    "relation_names": str(s.rel_path) if s.rel_path else None,
                    "translated_names": translated_path, "attributes": attr_files}
            kgs.append(KnowledgeGraph(
                name=f"dbp_{langs[k - 1]}" if langs else f"{folder.name}_{k}",
                ids=[str(g) for g in s.gids.tolist()], uris=list(s.uris), names=[local_name(u) for u in s.uris],
                relations=s.relations, triples=s.triples, attributes=list(attributes), attr_triples=pairs,
                attr_values=values, attr_numeric=np.full(len(pairs), np.nan),
                translated_names=translated[k - 1] if translated else None,
                meta={"source_files": prov, "relation_source_ids": s.relation_ids}))
            side_prov.append(prov)

        provenance = {"loader": "dbp15k", "folder": str(folder), "pair": pair,
                      "source": side_prov[0], "target": side_prov[1], **link_prov}
        if options.swap:
            kgs.reverse()
            train, valid, test = (p[:, ::-1].copy() for p in (train, valid, test))
            provenance["source"], provenance["target"] = side_prov[1], side_prov[0]
            provenance["swapped"] = True
        task = AlignmentTask(f"{folder.parent.name}/{folder.name}", kgs[0], kgs[1], train, valid, test,
                             provenance=provenance, meta={"load_report": report.as_dict(), "notes": notes})
        report.log(log)
        return task
