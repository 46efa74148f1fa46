"""MMKG benchmark loaders (Liu et al. 2019): FB15K-DB15K and FB15K-YAGO15K.

Two layouts, one registered loader each.  In both, KG1 (the source) is DB15K or
YAGO15K and KG2 (the target) is FB15K.

``mmkg-converted`` -- the id layout of the DH-MEA / MCLEA conversions
(``DH-MEA_converted/DB15K-FB15K``)::

    ent_ids_1, ent_ids_2     id<TAB>uri; one global id space over both KGs
    rel_ids_1, rel_ids_2     id<TAB>relation (YAGO folder: rel_ids1 / rel_ids2)
    triples_1, triples_2     head rel tail (global ids); triples_2 is often absent
    ref_ent_ids              all gold links (KG1 id, KG2 id)
    sup_ent_ids, dev_ent_ids the shipped 20% train / 80% test split
    attr                     line i = attributes of global entity id i ("" = none):
                             name|||value|||type^^^name|||value|||type ...
                             (the FB15K lines have no type: name|||value)

``mmkg`` -- the raw mmkb files (``MMKG/``)::

    FB15K/FB15K_EntityTriples.txt       <h> <r> <t> .   (N-Triples-like)
    DB15K/DB15K_EntityTriples.txt       (YAGO15K alike)
    DB15K/DB15K_SameAsLink.txt          /m/xxx <SameAs> <http://dbpedia.org/resource/X> .
    */*_NumericalTriples.txt            entity<TAB><attribute uri><TAB>value
    */*_ImageIndex.txt                  entity<TAB>IMAGE_ID

Companion data looked for beside the dataset (``<dir>/..``, ``<dir>/../..``)
and under ``options.data_root``:

* FB15K relation triples: when the layout lacks them (``triples_2`` /
  ``FB15K_EntityTriples.txt``), the FB15k-237 triples (``FB15k-237/{train,valid,test}.txt``
  or ``options.fb15k_triples``) stand in -- a warning, a note in
  ``task.meta["notes"]`` and an entry in ``task.meta["substitutions"]``.
* FB15K names: ``MMKG/extra/FB15K_entity2text.txt``; DB15K / YAGO15K names are
  the decoded URI local names.
* Images: the ``*_ImageIndex.txt`` files name images whose features are not
  available; their count is kept in ``kg.meta["image_index_count"]`` and the
  image modality stays empty (``image_mask`` is ``None``).

Numeric attributes: values are parsed with :func:`~mmea.data.parse_numeric`,
helped by the ``type`` column of ``attr``: YAGO15K stores most dates as
``YYYY.MMDD`` typed ``degrees`` (``1894.0802`` = 1894-08-02), decoded to
decimal years like the ``date`` values; ``1974-##-##`` (unknown month/day) is
the year.  The raw strings are kept in ``attr_values``.  In the converted
layout the FB15K attribute lines are the FB15K numerical triples already, so
``FB15K_NumericalTriples.txt`` is only added when ``attr`` has no FB15K lines.

Gold links: the published DB15K links hold 4 DBpedia entities linked to two
FB15K entities each; such one-to-many links are kept (counted, warned, noted)
so that the benchmark keeps its 12,846 links.  ``options.extra["one_to_many_links"]
= "error"`` makes them an error instead.  Exact duplicates are dropped with a
counted warning.

Default split: seeded, ``seed_ratio`` 0.2 (the MMKG protocol: 20/50/80% train,
seeds 0..4), valid carved from train.  ``options.use_dataset_split`` uses
``sup_ent_ids`` (train, valid carved from it) and ``dev_ent_ids`` (test).
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np

from ...errors import DataFormatError, MmeaInputError
from ..graph import AlignmentTask, KnowledgeGraph, local_name
from ..parsing import LoadReport, check_links, find_bad_id_char, map_ids, nonblank_line_numbers, optional_file, \
    parse_numeric, raise_bad_id_char, read_columns, read_id_map, \
    read_int_pairs, read_int_triples
from ..splits import seeded_split
from .base import LOADERS, DatasetLoader, LoadOptions
from .fb15k_triples import union_folder, union_with_openke
from .linkpred import SPLIT_FILES, StringTriples, read_tab_triples, read_text, read_text_map

log = logging.getLogger("mmea.data")

__all__ = ["MmkgConvertedLoader", "MmkgLoader", "KG1_CHOICES", "DEFAULT_SEED_RATIO", "parse_attr_value"]

KG1_CHOICES = ("DB15K", "YAGO15K")
KG2 = "FB15K"
DEFAULT_SEED_RATIO = 0.2
FB15K_NAMES_FILE = "FB15K_entity2text.txt"


# ---------------------------------------------------------------------------
# small pure helpers
# ---------------------------------------------------------------------------

def _unbracket(s: str) -> str:
    """``<http://x/y>`` -> ``http://x/y``; anything else stripped."""
    s = s.strip()
    return s[1:-1] if len(s) >= 2 and s[0] == "<" and s[-1] == ">" else s


_YYYYMMDD_RE = re.compile(r"^([+-]?\d{1,4})\.(\d\d)(\d\d)$")
_PARTIAL_DATE_RE = re.compile(r"^([+-]?\d{1,4})-(\d\d|##)-(\d\d|##)$")


def parse_attr_value(value: str, type_: str = "", name: str = "") -> tuple[float, str | None]:
    """Numeric value of an MMKG attribute, using its type; returns ``(value, special)``.

    ``special`` names a non-standard form that was decoded (``None`` otherwise):

    * ``"yyyy.mmdd"``: YAGO15K dates typed ``degrees`` (``wasBornOnDate|||1894.0802|||degrees``)
      -> decimal year like a ``date`` (``1894 + day_of_year / 365``); ``YYYY.0000`` -> the year;
    * ``"partial date"``: ``1974-##-##`` (unknown month and/or day) -> the year (or its month).

    Everything else goes through :func:`~mmea.data.parse_numeric` (NaN when not numeric).
    """
    v = value.strip()
    if type_ == "degrees" and "date" in name.lower():
        m = _YYYYMMDD_RE.match(v)
        if m:
            year, month, day = int(m.group(1)), int(m.group(2)), int(m.group(3))
            if month == 0:
                return float(year), "yyyy.mmdd"
            got = parse_numeric(f"{m.group(1)}-{month:02d}-{max(day, 1):02d}")
            if not math.isnan(got):
                return got, "yyyy.mmdd"
    m = _PARTIAL_DATE_RE.match(v)
    if m and "#" in v:
        month = m.group(2)
        if month == "##":
            return float(int(m.group(1))), "partial date"
        return parse_numeric(f"{m.group(1)}-{month}-01"), "partial date"
    return parse_numeric(v), None


def _attribute_arrays(ents: list[int], names: list[str], values: list[str], types: list[str],
                      report: LoadReport, label: str) -> dict:
    """KnowledgeGraph attribute fields from parallel lists (attribute ids in first-appearance order)."""
    attr_index: dict[str, int] = {}
    for n in names:
        attr_index.setdefault(n, len(attr_index))
    numeric = np.empty(len(values), dtype=np.float64)
    special: Counter = Counter()
    type_counts: dict[str, Counter] = {}
    for j, (n, v, t) in enumerate(zip(names, values, types)):
        numeric[j], kind = parse_attr_value(v, t, n)
        if kind:
            special[kind] += 1
        if t:
            type_counts.setdefault(n, Counter())[t] += 1
    for kind, c in special.items():
        report.count(f"{label} attribute values decoded as {kind}", c)
    triples = np.array([ents, [attr_index[n] for n in names]], dtype=np.int64).T.reshape(-1, 2)
    report.count(f"{label} attribute values", len(values))
    n_nan = int(np.isnan(numeric).sum())
    if n_nan:
        report.count(f"{label} non-numeric attribute values (kept, NaN)", n_nan)
    return {"attributes": list(attr_index), "attr_triples": triples,
            "attr_values": np.asarray(values, dtype=object), "attr_numeric": numeric,
            "types": {n: dict(c) for n, c in type_counts.items()}}


def _empty_attributes() -> dict:
    return {"attributes": [], "attr_triples": np.zeros((0, 2), np.int64), "attr_values": np.zeros(0, object),
            "attr_numeric": np.zeros(0), "types": {}}


def _nonblank_line_nos(path: Path) -> np.ndarray:
    """1-based numbers of the non-blank lines (the rows of :func:`read_int_pairs` / ``read_int_triples``)."""
    return nonblank_line_numbers(path)


def _first_existing(folder: Path, *names: str) -> Path | None:
    return next((folder / n for n in names if optional_file(folder / n) is not None), None)


def _find_companion(path: Path, options: LoadOptions, name: str) -> Path | None:
    """Folder ``name`` beside the dataset (``<dir>/..``, ``<dir>/../..``) or under ``options.data_root``."""
    path = Path(path).resolve()
    candidates = [path.parent / name, path.parent.parent / name]
    if options.data_root is not None:
        candidates.append(Path(options.data_root) / name)
    return next((c for c in candidates if c.is_dir()), None)


def _fb15k237_folder(path: Path, options: LoadOptions) -> Path | None:
    """The FB15k-237 folder standing in for missing FB15K triples, or None."""
    if options.fb15k_triples is not None:
        folder = Path(options.fb15k_triples)
        if not all((folder / f).is_file() for f in SPLIT_FILES):
            raise MmeaInputError(f"{folder}: expected FB15k-237 files {', '.join(SPLIT_FILES)} (fb15k_triples)")
        return folder
    folder = _find_companion(path, options, "FB15k-237")
    if folder is not None and all((folder / f).is_file() for f in SPLIT_FILES):
        return folder
    return None


def _read_fb15k237(folder: Path, report: LoadReport) -> StringTriples:
    """All FB15k-237 triples (train, valid, test concatenated)."""
    parts = [read_tab_triples(folder / f, report) for f in SPLIT_FILES]
    return StringTriples(sum((p.heads for p in parts), []), sum((p.relations for p in parts), []),
                         sum((p.tails for p in parts), []), np.concatenate([p.line_nos for p in parts]))


def _one_to_many_policy(options: LoadOptions) -> str:
    policy = str(options.extra.get("one_to_many_links", "keep"))
    if policy not in ("keep", "error"):
        raise MmeaInputError(f"one_to_many_links must be 'keep' or 'error', got {policy!r}")
    return policy


def _check_gold_links(links: np.ndarray, path: Path, report: LoadReport, line_nos: np.ndarray | None,
                      policy: str, notes: list[str], what: str = "links", ids=None) -> np.ndarray:
    """De-duplicate gold links; one-to-many links are kept (counted, warned) or an error (``policy``).
    ``ids`` (file ids of both sides) lets an error name entities as the file does."""
    return check_links(links, path, report, line_nos, what, one_to_many=policy, notes=notes, ids=ids)


def _sorted_links(links: np.ndarray) -> np.ndarray:
    return links[np.lexsort((links[:, 1], links[:, 0]))] if len(links) else links


def _seed_ratio(options: LoadOptions) -> float:
    """The seed ratio of a seeded split: the options', else the MMKG default (0.2)."""
    return DEFAULT_SEED_RATIO if options.seed_ratio is None else options.seed_ratio


# not splits.carve_valid: this sorts the links first (that one keeps file order), so a seed picks other valid links
def _carve_valid(train: np.ndarray, valid_ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded ``valid_ratio`` of the (sorted) train links as validation -> (train, valid)."""
    train = _sorted_links(train)
    perm = np.random.default_rng(seed).permutation(len(train))
    n_valid = int(round(valid_ratio * len(train)))
    return train[perm[n_valid:]], train[perm[:n_valid]]


def _swap(task: AlignmentTask) -> AlignmentTask:
    """The same task with source and target exchanged."""
    prov = dict(task.provenance, swapped=True, source=task.provenance.get("target"),
                target=task.provenance.get("source"))
    name = "-".join(reversed(task.name.split("-", 1))) if "-" in task.name else task.name + "-swapped"
    return AlignmentTask(name, task.target, task.source, task.train[:, ::-1].copy(), task.valid[:, ::-1].copy(),
                         task.test[:, ::-1].copy(), prov, task.meta)


def _kg1_label(path: Path, options: LoadOptions, fallback: str | None = None) -> str:
    """``"DB15K"`` or ``"YAGO15K"`` from ``options.pair`` or the folder name."""
    for cand in (options.pair, Path(path).resolve().name, fallback):
        if not cand:
            continue
        key = str(cand).upper().replace("_", "-")
        for label in KG1_CHOICES:
            if key == label or key.startswith(label + "-") or key.endswith("-" + label):
                return label
        if cand is options.pair:
            raise MmeaInputError(f"unknown MMKG pair {cand!r}; valid choices: {', '.join(KG1_CHOICES)} "
                                 f"(the other side is always FB15K)")
    return "KG1"


# ---------------------------------------------------------------------------
# modalities shared by both layouts: names, images, substitute triples
# ---------------------------------------------------------------------------

def _fb15k_names(mmkg_root: Path | None, ids: list[str], report: LoadReport, notes: list[str],
                 sources: dict) -> list[str]:
    """FB15K names from ``MMKG/extra/FB15K_entity2text.txt`` ("" where missing, counted)."""
    path = mmkg_root / "extra" / FB15K_NAMES_FILE if mmkg_root is not None else None
    if path is None or optional_file(path) is None:
        report.warn(f"FB15K names not found (MMKG/extra/{FB15K_NAMES_FILE}); FB15K entities have no names")
        notes.append("FB15K entity names are missing (MMKG/extra/FB15K_entity2text.txt not found)")
        return [""] * len(ids)
    table = read_text_map(path, report, "FB15K name")
    sources["names"] = str(path)
    names = [table.get(k, "") for k in ids]
    n_missing = names.count("")
    if n_missing:
        report.count("FB15K entities without a name", n_missing)
        report.warn(f"{path.name}: {n_missing} of {len(ids)} FB15K entities have no name ('' used)")
    n_unused = len(set(table) - set(ids))
    if n_unused:
        report.skip("FB15K names of entities not in the KG", n_unused)
        report.warn(f"{path.name}: {n_unused} name line(s) for mids that are not FB15K entities here (ignored)")
    return names


def _image_index_file(mmkg_root: Path | None, label: str) -> Path | None:
    if mmkg_root is None:
        return None
    direct = mmkg_root / label / f"{label}_ImageIndex.txt"
    if optional_file(direct) is not None:
        return direct
    return next(iter(sorted(mmkg_root.glob(f"*/{label}_ImageIndex.txt"))), None)


def _read_image_index(path: Path, report: LoadReport, label: str) -> dict[str, str]:
    """Entity key (URI without brackets, or mid) -> image id."""
    table = read_text_map(path, report, f"{label} image index")
    return {_unbracket(k): v for k, v in table.items()}


def _attach_image_index(kg_meta: dict, index: dict[str, str] | None, path: Path | None, uris: list[str],
                        report: LoadReport, label: str) -> None:
    """Record how many entities the image index names (the images themselves are not available)."""
    if index is None:
        kg_meta["image_index_count"] = 0
        return
    known = set(uris)
    hit = sum(1 for k in index if k in known)
    kg_meta["image_index_count"] = hit
    kg_meta["image_index_file"] = str(path)
    if len(index) - hit:
        report.skip(f"{label} image index lines for unknown entities", len(index) - hit)
        report.warn(f"{path}: {len(index) - hit} image index line(s) name entities that are not in {label} (ignored)")


def _image_note(counts: dict[str, int]) -> str:
    listed = ", ".join(f"{n:,} {label}" for label, n in counts.items())
    return (f"images: the MMKG image index lists {listed} entity images, but neither the images nor their "
            f"features are available here; the image modality is empty (image_mask is None)")


def _encode_triples(st: StringTriples, entity_id, relation_name=lambda r: r) -> tuple[np.ndarray, list[str]]:
    """String triples -> ``(int64 (T, 3) triples, relation names)``, vectorised over the distinct strings.

    ``entity_id(raw)`` gives the internal id of an entity string (called once per
    distinct string, in order of first appearance, head before tail), or -1 to
    drop the triples that use it.  Relations are numbered in order of first
    appearance over the kept triples; ``relation_name`` maps a relation string
    to its name.
    """
    n = len(st.heads)
    both: list[str] = [""] * (2 * n)
    both[0::2], both[1::2] = st.heads, st.tails
    ids = {raw: entity_id(raw) for raw in dict.fromkeys(both)}
    h = np.fromiter(map(ids.__getitem__, st.heads), dtype=np.int64, count=n)
    t = np.fromiter(map(ids.__getitem__, st.tails), dtype=np.int64, count=n)
    keep = (h >= 0) & (t >= 0)
    rels = st.relations if keep.all() else [st.relations[i] for i in np.flatnonzero(keep).tolist()]
    rel_index: dict[str, int] = {}
    for raw in dict.fromkeys(rels):
        rel_index.setdefault(relation_name(raw), len(rel_index))
    rel_of = {raw: rel_index[relation_name(raw)] for raw in dict.fromkeys(rels)}
    r = np.fromiter(map(rel_of.__getitem__, rels), dtype=np.int64, count=len(rels))
    return np.stack([h[keep], r, t[keep]], axis=1).reshape(-1, 3), list(rel_index)


def _substitute_fb15k_triples(folder: Path | None, index: dict[str, int], report: LoadReport, notes: list[str],
                              substitutions: list, grow: bool, missing: str, openke: Path | None = None
                              ) -> tuple[np.ndarray, list[str], dict]:
    """FB15k-237 triples (∪ FB15K valid/test from ``openke``) standing in for the missing FB15K triples."""
    if folder is None:
        msg = (f"FB15K relation triples are missing ({missing}) and no FB15k-237 folder was found "
               f"(looked beside the data and in data_root; set fb15k_triples); FB15K has no relation triples")
        report.warn(msg)
        notes.append(msg)
        return np.zeros((0, 3), np.int64), [], {"triples": None}
    st = _read_fb15k237(folder, report)
    union = None
    if openke is not None:  # FB15k-237 ∪ FB15K valid ∪ FB15K test (see fb15k_triples)
        st, union = union_with_openke(st, openke, report)
    if grow:
        triples, relations = _encode_triples(st, lambda k: index.setdefault(k, len(index)))
    else:
        triples, relations = _encode_triples(st, lambda k: index.get(k, -1))
    n_dropped = len(st) - len(triples)
    if n_dropped:
        report.skip(f"{KG2} substitute triples with an entity outside {KG2}", n_dropped)
        report.warn(f"{folder}: {n_dropped} triple(s) name entities that are not {KG2} entities (ignored)")
    report.count("FB15K relation triples (from FB15k-237)", len(triples))
    what = "FB15k-237 ∪ FB15K valid ∪ FB15K test triples (KG triples, not alignment links; " if union else \
        "FB15k-237 triples ("
    msg = (f"FB15K relation triples are missing; {what}{len(triples):,} of them, "
           f"{len(relations)} relations) stand in for them")
    if n_dropped:
        msg += f" ({n_dropped:,} FB15k-237 triples with entities outside FB15K left out)"
    report.warn(msg)  # logged with the report
    notes.append(msg)
    files = [str(folder / f) for f in SPLIT_FILES] + (union["files"] if union else [])
    substitutions.append({"part": "FB15K relation triples", "missing": missing, "used": files,
                          "triples": int(len(triples)), "relations": len(relations), "dropped": n_dropped})
    return triples, relations, {"triples": files, "relations": "FB15k-237 relations (first appearance)",
                                "substituted": True}


def _finish(task: AlignmentTask, options: LoadOptions, report: LoadReport) -> AlignmentTask:
    task.meta["load_report"] = report.as_dict()
    report.log(log)
    return _swap(task) if options.swap else task


# ---------------------------------------------------------------------------
# converted id layout
# ---------------------------------------------------------------------------

def _read_attr_lines(path: Path) -> tuple[list[int], list[str], list[str], list[str], int]:
    """Parse the converted ``attr`` file (line i = global entity id i; blank line = no attributes).

    Returns ``(entity ids, names, values, types, number of lines)``; an entry
    that is not ``name|||value`` or ``name|||value|||type`` is a
    :class:`DataFormatError` naming the line.  (Read here rather than with
    ``iter_lines``, which would skip the meaningful blank lines.)
    """
    text = read_text(path)
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    ents: list[int] = []
    names: list[str] = []
    values: list[str] = []
    types: list[str] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        for entry in line.split("^^^"):
            parts = entry.split("|||")
            if len(parts) not in (2, 3) or not parts[0].strip():
                raise DataFormatError(path, i + 1, line,
                                      f"attribute entry {entry[:80]!r} is not `name|||value|||type` "
                                      f"(entries are separated by ^^^)")
            ents.append(i)
            names.append(parts[0].strip())
            values.append(parts[1].strip())
            types.append(parts[2].strip() if len(parts) == 3 else "")
    return ents, names, values, types, len(lines)


def _converted_files(path: Path) -> dict[str, Path | None]:
    f = {
        "ent_ids_1": _first_existing(path, "ent_ids_1"),
        "ent_ids_2": _first_existing(path, "ent_ids_2"),
        "rel_ids_1": _first_existing(path, "rel_ids_1", "rel_ids1"),
        "rel_ids_2": _first_existing(path, "rel_ids_2", "rel_ids2"),
        "triples_1": _first_existing(path, "triples_1"),
        "triples_2": _first_existing(path, "triples_2"),
        "ref_ent_ids": _first_existing(path, "ref_ent_ids"),
        "sup_ent_ids": _first_existing(path, "sup_ent_ids"),
        "dev_ent_ids": _first_existing(path, "dev_ent_ids"),
        "attr": _first_existing(path, "attr"),
    }
    for need in ("ent_ids_1", "ent_ids_2", "ref_ent_ids"):
        if f[need] is None:
            raise DataFormatError(path / need, None, None, "file not found (required by the MMKG converted layout)")
    return f


def _read_relation_names(path: Path | None, label: str, report: LoadReport) -> tuple[dict[int, int], list[str]]:
    """rel_ids file -> (file id -> internal id, relation URIs)."""
    if path is None:
        return {}, []
    ids, uris = read_id_map(path, what="relation")
    report.count(f"{label} relations", len(ids))
    return {int(k): i for i, k in enumerate(ids.tolist())}, [_unbracket(u) for u in uris]


def _read_id_triples(path: Path, ent_index: dict[int, int], rel_index: dict[int, int], rel_names: list[str],
                     label: str, report: LoadReport) -> tuple[np.ndarray, list[str]]:
    """``head rel tail`` global ids -> internal triples; relation ids without a rel_ids file get named by id."""
    raw = read_int_triples(path)
    line_nos = _nonblank_line_nos(path)
    ents = map_ids(raw[:, [0, 2]], ent_index, path, line_nos, what=f"{label} entity")
    if not rel_index:
        order = dict.fromkeys(raw[:, 1].tolist())
        rel_index = {k: i for i, k in enumerate(order)}
        rel_names = [str(k) for k in order]
        report.warn(f"{path}: no relation id file; relations are named by their ids")
    rels = map_ids(raw[:, 1], rel_index, path, line_nos, what=f"{label} relation")
    report.count(f"{label} relation triples", len(raw))
    return np.stack([ents[:, 0], rels, ents[:, 1]], axis=1).reshape(-1, 3), rel_names


def _map_link_file(path: Path, idx1: dict[int, int], idx2: dict[int, int], label1: str,
                   report: LoadReport, policy: str, notes: list[str], what: str) -> np.ndarray:
    """Read ``KG1-id KG2-id`` pairs -> internal links ``(n, 2)``, validated (see :func:`_check_gold_links`)."""
    raw = read_int_pairs(path)
    line_nos = _nonblank_line_nos(path)
    for col, (idx, other, name, other_name) in enumerate(((idx1, idx2, label1, KG2), (idx2, idx1, KG2, label1))):
        bad = [j for j, k in enumerate(raw[:, col].tolist()) if k not in idx]
        if bad:
            j = bad[0]
            k = int(raw[j, col])
            why = (f"id {k} in column {col + 1} is a {other_name} entity; expected a {name} entity"
                   if k in other else f"id {k} in column {col + 1} is not a {name} entity (not in the ent_ids files)")
            raise DataFormatError(path, int(line_nos[j]), f"{raw[j, 0]}\t{raw[j, 1]}",
                                  f"{why}; {len(bad)} such line(s) in all")
    links = np.stack([map_ids(raw[:, 0], idx1, path, line_nos), map_ids(raw[:, 1], idx2, path, line_nos)], axis=1)
    return _check_gold_links(links.reshape(-1, 2), path, report, line_nos, policy, notes, what,
                             ids=(list(idx1), list(idx2)))


@LOADERS.register
class MmkgConvertedLoader(DatasetLoader):
    """MMKG FB15K-DB15K / FB15K-YAGO15K in the converted id layout (ent_ids_1/2, ref_ent_ids, attr)."""

    description = ("MMKG DB15K/YAGO15K-FB15K, converted ids: ent_ids_1/2, rel_ids_1/2, triples_1, "
                   "ref/sup/dev_ent_ids, attr")

    @classmethod
    def detect(cls, path: Path) -> bool:
        path = Path(path)
        # `attr` (the ^^^ / ||| attribute lines) tells it apart from the DBP15k GCN-Align layout
        # exists(), not is_file(): a directory in place of a file is then an error naming it
        return all((path / f).exists() for f in ("ent_ids_1", "ent_ids_2", "ref_ent_ids", "attr"))

    def load(self, path: Path, options: LoadOptions | None = None) -> AlignmentTask:
        path = Path(path)
        options = options or LoadOptions()
        policy = _one_to_many_policy(options)
        report = LoadReport()
        notes: list[str] = []
        substitutions: list[dict] = []
        label1 = _kg1_label(path, options)
        files = _converted_files(path)

        gids1, uris1, idx1, gids2, uris2, idx2 = _read_entities(files, label1, report)
        src1 = {"kg": label1, "entities": str(files["ent_ids_1"]), "names": "decoded URI local names"}
        src2 = {"kg": KG2, "entities": str(files["ent_ids_2"])}

        # relation triples
        rel_idx1, rels1 = _read_relation_names(files["rel_ids_1"], label1, report)
        rel_idx2, rels2 = _read_relation_names(files["rel_ids_2"], KG2, report)
        if files["triples_1"] is not None:
            triples1, rels1 = _read_id_triples(files["triples_1"], idx1, rel_idx1, rels1, label1, report)
            src1.update(triples=str(files["triples_1"]), relations=str(files["rel_ids_1"]))
        else:
            triples1 = np.zeros((0, 3), np.int64)
            report.warn(f"{path}: triples_1 not found; {label1} has no relation triples")
            notes.append(f"{label1} relation triples are missing (triples_1); {label1} has none")
        kg2_meta: dict = {}
        triples2, rels2 = _kg2_triples(path, options, files, idx2, uris2, rel_idx2, rels2, report, notes,
                                       substitutions, kg2_meta, src2)

        # attributes
        attrs1, attrs2 = _empty_attributes(), _empty_attributes()
        if files["attr"] is not None:
            attrs1, attrs2 = self._attributes(files["attr"], idx1, idx2, label1, report)
            src1["attributes"] = src2["attributes"] = str(files["attr"])
        else:
            report.warn(f"{path}: attr not found; no attributes")
            notes.append("attribute file `attr` not found; no attributes")
        mmkg_root = _find_companion(path, options, "MMKG")
        if len(attrs2["attr_values"]) == 0:
            attrs2 = self._fb15k_numeric_fallback(mmkg_root, uris2, report, notes, src2) or attrs2
        elif mmkg_root is not None and (mmkg_root / KG2 / "FB15K_NumericalTriples.txt").is_file():
            src2["attributes_note"] = ("attr already holds the FB15K numerical triples; "
                                       "FB15K_NumericalTriples.txt not added (no double counting)")

        # names and images
        names1 = [local_name(u) for u in uris1]
        names2 = _fb15k_names(mmkg_root, uris2, report, notes, src2)
        kg1_meta: dict = {}
        _attach_image_indexes(mmkg_root, ((label1, kg1_meta, uris1, src1), (KG2, kg2_meta, uris2, src2)),
                              report, notes)

        kg1 = self._kg(label1, gids1, uris1, names1, rels1, triples1, attrs1, kg1_meta, src1)
        kg2 = self._kg(KG2, gids2, uris2, names2, rels2, triples2, attrs2, kg2_meta, src2)

        # links and split
        links = _map_link_file(files["ref_ent_ids"], idx1, idx2, label1, report, policy, notes, "links")
        train, valid, test, split = self._split(files, links, idx1, idx2, label1, options, report, policy, notes)
        provenance = {"loader": "mmkg-converted", "path": str(path), "source": src1, "target": src2,
                      "links": str(files["ref_ent_ids"]), "split": split}
        if substitutions:
            provenance["substitutions"] = substitutions
        task = AlignmentTask(f"{label1}-{KG2}", kg1, kg2, train, valid, test, provenance,
                             {"notes": notes, "substitutions": substitutions})
        return _finish(task, options, report)

    # -- parts ---------------------------------------------------------------
    @staticmethod
    def _kg(label, gids, uris, names, relations, triples, attrs, meta, src) -> KnowledgeGraph:
        meta = dict(meta, source_files=src, attribute_types=attrs["types"])
        return KnowledgeGraph(label.lower(), [str(int(k)) for k in gids.tolist()], uris, names, relations, triples,
                              attrs["attributes"], attrs["attr_triples"], attrs["attr_values"],
                              attrs["attr_numeric"], meta=meta)

    @staticmethod
    def _attributes(path: Path, idx1: dict[int, int], idx2: dict[int, int], label1: str,
                    report: LoadReport) -> tuple[dict, dict]:
        ents, names, values, types, n_lines = _read_attr_lines(path)
        n_ent = len(idx1) + len(idx2)
        report.count("attr lines", n_lines)
        sides: tuple[tuple[list, list, list, list], ...] = (([], [], [], []), ([], [], [], []))
        for gid, n, v, t in zip(ents, names, values, types):
            if gid in idx1:
                side, local = 0, idx1[gid]
            elif gid in idx2:
                side, local = 1, idx2[gid]
            else:
                raise DataFormatError(path, gid + 1, None,
                                      f"line {gid + 1} holds the attributes of entity id {gid}, "
                                      f"but no entity has that id")
            cols = sides[side]
            cols[0].append(local)
            cols[1].append(n)
            cols[2].append(v)
            cols[3].append(t)
        if n_lines < n_ent:
            report.count("entities beyond the end of attr (no attributes)", n_ent - n_lines)
            report.warn(f"{path}: {n_lines} lines for {n_ent} entities; the last ids have no attributes")
        return (_attribute_arrays(*sides[0], report, label1), _attribute_arrays(*sides[1], report, KG2))

    @staticmethod
    def _fb15k_numeric_fallback(mmkg_root: Path | None, uris2: list[str], report: LoadReport, notes: list[str],
                                src2: dict) -> dict | None:
        """FB15K attributes from MMKG's FB15K_NumericalTriples.txt when ``attr`` has none for FB15K."""
        path = mmkg_root / KG2 / "FB15K_NumericalTriples.txt" if mmkg_root is not None else None
        if path is None or not path.is_file():
            return None
        index = {u: i for i, u in enumerate(uris2)}
        rows = _read_numeric_triples(path, report, KG2)
        kept = [(index[e], a, v) for _, e, a, v in rows if e in index]
        if len(kept) < len(rows):
            report.skip("FB15K numerical triples of unknown entities", len(rows) - len(kept))
            report.warn(f"{path}: {len(rows) - len(kept)} line(s) name entities not in FB15K (ignored)")
        src2["attributes"] = str(path)
        notes.append(f"FB15K attributes come from {path.name} (attr has no FB15K lines)")
        return _attribute_arrays([k[0] for k in kept], [k[1] for k in kept], [k[2] for k in kept],
                                 [""] * len(kept), report, KG2)

    @staticmethod
    def _split(files, links, idx1, idx2, label1, options, report, policy, notes):
        if not options.use_dataset_split:
            train, valid, test, split = seeded_split(links, _seed_ratio(options), options)
            split["links"] = str(files["ref_ent_ids"])
            return train, valid, test, split
        if files["sup_ent_ids"] is None or files["dev_ent_ids"] is None:
            raise MmeaInputError(f"{files['ref_ent_ids'].parent}: use_dataset_split needs sup_ent_ids and dev_ent_ids",
                                 hint="drop use_dataset_split to get a seeded split of ref_ent_ids")
        if options.seed_ratio is not None:
            notes.append(f"seed_ratio {options.seed_ratio} ignored: the shipped split (sup_ent_ids / dev_ent_ids) "
                         f"is used")
        sup = _map_link_file(files["sup_ent_ids"], idx1, idx2, label1, report, policy, notes, "train links")
        dev = _map_link_file(files["dev_ent_ids"], idx1, idx2, label1, report, policy, notes, "test links")
        dev_keys = {(int(a), int(b)) for a, b in dev.tolist()}
        overlap = [j for j, (a, b) in enumerate(sup.tolist()) if (a, b) in dev_keys]
        if overlap:
            raise DataFormatError(files["sup_ent_ids"], None, None,
                                  f"{len(overlap)} train link(s) also appear in dev_ent_ids (test); the split "
                                  f"files must be disjoint")
        ref_keys = {(int(a), int(b)) for a, b in links.tolist()}
        outside = sum(1 for ab in dev_keys | {(int(a), int(b)) for a, b in sup.tolist()} if ab not in ref_keys)
        if outside or len(sup) + len(dev) != len(links):
            report.warn(f"the shipped split ({len(sup)} + {len(dev)} links, {outside} not in ref_ent_ids) does not "
                        f"cover ref_ent_ids exactly ({len(links)} links)")
        train, valid = _carve_valid(sup, options.valid_ratio, options.seed)
        split = {"kind": "dataset", "train": str(files["sup_ent_ids"]), "test": str(files["dev_ent_ids"]),
                 "valid": "carved from sup_ent_ids", "valid_ratio_of_train": options.valid_ratio,
                 "seed": options.seed}
        return train, valid, dev, split


# ---------------------------------------------------------------------------
# raw mmkb layout
# ---------------------------------------------------------------------------

_TERM = r'(<[^>]*>|"(?:[^"\\]|\\.)*"(?:\^\^<[^>]*>|@[A-Za-z-]+)?|\S+)'
_NT_RE = re.compile(rf"^\s*{_TERM}\s+{_TERM}\s+{_TERM}\s*(?:\.\s*)?$")


def _split_nt(line: str) -> tuple[str, str, str] | None:
    """``<h> <r> <t> .`` (or tab-separated) -> the three terms as written, or None."""
    parts = line.split()
    if len(parts) == 4 and parts[3] == "." or len(parts) == 3 and parts[2] != ".":
        return parts[0], parts[1], parts[2]
    m = _NT_RE.match(line)
    return (m.group(1), m.group(2), m.group(3)) if m and m.group(3) != "." else None


def _read_nt_triples(path: Path) -> StringTriples:
    """N-Triples-like ``<h> <r> <t> .`` lines (or three tab-separated terms) -> terms as written.

    Fast path: every line is four whitespace-separated tokens ending in ``.``;
    otherwise line by line, where a line that is not three terms is a
    :class:`DataFormatError` naming it.
    """
    text = read_text(path)
    bad = find_bad_id_char(text, allowed="\t\n")
    if bad is not None:
        raise_bad_id_char(path, text, bad, "term")
    tokens = text.split()
    lines = text.split("\n")
    nonblank = [i for i, ln in enumerate(lines, start=1) if ln.strip()]
    if len(tokens) == 4 * len(nonblank) and all(d == "." for d in tokens[3::4]):
        return StringTriples(tokens[0::4], tokens[1::4], tokens[2::4], np.asarray(nonblank, dtype=np.int64))
    heads, rels, tails, line_nos = [], [], [], []
    for i in nonblank:
        terms = _split_nt(lines[i - 1])
        if terms is None:
            raise DataFormatError(path, i, lines[i - 1], "expected `<head> <relation> <tail> .`")
        heads.append(terms[0])
        rels.append(terms[1])
        tails.append(terms[2])
        line_nos.append(i)
    return StringTriples(heads, rels, tails, np.asarray(line_nos, dtype=np.int64))


def _read_numeric_triples(path: Path, report: LoadReport, label: str) -> list[tuple[int, str, str, str]]:
    """``entity<TAB><attribute uri><TAB>value`` -> ``(line_no, entity, attribute, value)``, brackets removed."""
    rows = read_columns(path, 3, id_cols=2)
    report.count(f"{label} numerical triples", len(rows))
    return [(i, _unbracket(p[0]), _unbracket(p[1]), p[2].strip()) for i, p in rows]


def _uri_prefix(uris: list[str]) -> str | None:
    """Most common ``scheme://host/path/`` prefix of the URIs (to expand bare ``<Name>`` keys), or None."""
    prefixes = Counter(u.rsplit("/", 1)[0] + "/" for u in map(_unbracket, uris) if "://" in u)
    return prefixes.most_common(1)[0][0] if prefixes else None


class _EntityTable:
    """Entities of one raw KG, numbered in order of first appearance over its files."""

    def __init__(self, label: str):
        self.label = label
        self.index: dict[str, int] = {}
        self.prefix: str | None = None
        self.expanded = 0

    def key(self, raw: str) -> str:
        """Bracket-free key; a bare name (``Tisch_School``) gets the KG's URI prefix."""
        k = _unbracket(raw)
        if self.prefix and "://" not in k and not k.startswith("/") and ":" not in k:
            self.expanded += 1
            return self.prefix + k
        return k

    def add(self, key: str) -> int:
        return self.index.setdefault(key, len(self.index))


@LOADERS.register
class MmkgLoader(DatasetLoader):
    """MMKG FB15K-DB15K / FB15K-YAGO15K from the raw mmkb files (*_EntityTriples, *_SameAsLink, ...)."""

    description = ("MMKG raw mmkb folder: FB15K/, DB15K/, YAGO15K/ with *_EntityTriples, *_SameAsLink, "
                   "*_NumericalTriples")

    @classmethod
    def detect(cls, path: Path) -> bool:
        path = Path(path)
        has_fb = (path / KG2).is_dir() and any((path / KG2 / f"{KG2}_{s}.txt").is_file()
                                               for s in ("EntityTriples", "NumericalTriples", "ImageIndex"))
        return has_fb and any((path / k / f"{k}_SameAsLink.txt").is_file() for k in KG1_CHOICES)

    def load(self, path: Path, options: LoadOptions | None = None) -> AlignmentTask:
        path = Path(path)
        options = options or LoadOptions()
        policy = _one_to_many_policy(options)
        if options.use_dataset_split:
            raise MmeaInputError(f"{path}: the raw MMKG files ship no train/test split",
                                 hint="drop use_dataset_split (a seeded split is made), or use the converted "
                                      "layout (DH-MEA_converted) whose sup_ent_ids / dev_ent_ids it uses")
        report = LoadReport()
        notes: list[str] = []
        substitutions: list[dict] = []
        available = [k for k in KG1_CHOICES if (path / k / f"{k}_SameAsLink.txt").is_file()]
        label1 = _kg1_label(path, options, fallback=available[0] if available else None)
        if options.pair is None and len(available) > 1:
            notes.append(f"pair not given; {label1}-{KG2} loaded (choices: {', '.join(available)})")
        sameas_path = path / label1 / f"{label1}_SameAsLink.txt"
        if optional_file(sameas_path) is None:
            raise DataFormatError(sameas_path, None, None, f"file not found (the gold links of {label1}-{KG2})")

        t1, t2 = _EntityTable(label1), _EntityTable(KG2)
        src1: dict = {"kg": label1, "names": "decoded URI local names"}
        src2: dict = {"kg": KG2}
        sameas = self._read_sameas(sameas_path)
        t1.prefix = _uri_prefix([u for _, _, u in sameas])

        # relation triples first (entity order = first appearance in them)
        triples1, rels1 = self._entity_triples(path / label1 / f"{label1}_EntityTriples.txt", t1, report, notes, src1)
        triples2, rels2 = self._entity_triples(path / KG2 / f"{KG2}_EntityTriples.txt", t2, report, notes, src2,
                                               fb15k=(path, options, substitutions))
        # then the gold links, numeric triples and image indexes
        raw_links = np.array([(t1.add(t1.key(u)), t2.add(t2.key(m))) for _, m, u in sameas],
                             dtype=np.int64).reshape(-1, 2)
        report.count(f"{label1} SameAs lines", len(sameas))
        attrs = {}
        for t, src in ((t1, src1), (t2, src2)):
            attrs[t.label] = self._numeric(path / t.label / f"{t.label}_NumericalTriples.txt", t, report, src)
        img_counts = {}
        metas: dict[str, dict] = {label1: {}, KG2: {}}
        for t, src in ((t1, src1), (t2, src2)):
            ipath = _image_index_file(path, t.label)
            if ipath is not None:
                index = _read_image_index(ipath, report, t.label)
                for k in index:
                    t.add(t.key(k))
                metas[t.label].update(image_index_count=len(index), image_index_file=str(ipath))
            else:
                metas[t.label]["image_index_count"] = 0
            src["image_index"] = str(ipath) if ipath else None
            img_counts[t.label] = metas[t.label]["image_index_count"]
        notes.append(_image_note(img_counts) if any(img_counts.values()) else
                     "images: no MMKG image index found; the image modality is empty")
        for t in (t1, t2):
            report.count(f"{t.label} entities", len(t.index))
            if t.expanded:
                report.count(f"{t.label} bare entity names expanded with {t.prefix}", t.expanded)

        uris1, uris2 = list(t1.index), list(t2.index)
        names2 = _fb15k_names(path, uris2, report, notes, src2)
        kg1 = KnowledgeGraph(label1.lower(), uris1, list(uris1), [local_name(u) for u in uris1], rels1, triples1,
                             **self._attr_fields(attrs[label1]),
                             meta=dict(metas[label1], source_files=src1, attribute_types=attrs[label1]["types"]))
        kg2 = KnowledgeGraph(KG2.lower(), uris2, list(uris2), names2, rels2, triples2, **self._attr_fields(attrs[KG2]),
                             meta=dict(metas[KG2], source_files=src2, attribute_types=attrs[KG2]["types"]))

        links = _check_gold_links(raw_links, sameas_path, report, np.array([i for i, _, _ in sameas], np.int64),
                                  policy, notes, ids=(uris1, uris2))
        train, valid, test, split = seeded_split(links, _seed_ratio(options), options)
        split["links"] = str(sameas_path)
        provenance = {"loader": "mmkg", "path": str(path), "source": src1, "target": src2,
                      "links": str(sameas_path), "split": split}
        if substitutions:
            provenance["substitutions"] = substitutions
        task = AlignmentTask(f"{label1}-{KG2}", kg1, kg2, train, valid, test, provenance,
                             {"notes": notes, "substitutions": substitutions})
        return _finish(task, options, report)

    # -- parts ---------------------------------------------------------------
    @staticmethod
    def _attr_fields(a: dict) -> dict:
        return {k: a[k] for k in ("attributes", "attr_triples", "attr_values", "attr_numeric")}

    @staticmethod
    def _read_sameas(path: Path) -> list[tuple[int, str, str]]:
        """``/m/xxx <SameAs> <uri> .`` -> ``(line_no, FB15K mid, KG1 uri)`` (brackets kept for keying)."""
        st = _read_nt_triples(path)
        for i, h, r, t in zip(st.line_nos.tolist(), st.heads, st.relations, st.tails):
            if "sameas" not in _unbracket(r).lower():
                raise DataFormatError(path, i, f"{h} {r} {t} .", f"expected a SameAs link, found relation {r!r}")
        return list(zip(st.line_nos.tolist(), st.heads, st.tails))

    @staticmethod
    def _entity_triples(path: Path, table: _EntityTable, report: LoadReport, notes: list[str], src: dict,
                        fb15k: tuple | None = None) -> tuple[np.ndarray, list[str]]:
        """Relation triples of one KG (entities added to ``table``); FB15K falls back to FB15k-237."""
        label = table.label
        if optional_file(path) is not None:
            st = _read_nt_triples(path)
            literal = [j for j, t in enumerate(st.tails) if t.startswith('"')]
            if literal:
                report.skip(f"{label} triples with a literal object", len(literal))
                report.warn(f"{path}: {len(literal)} triple(s) have a literal object (not an entity; ignored), "
                            f"first on line {st.line_nos[literal[0]]}")
                drop = set(literal)
                st = StringTriples(*([v for j, v in enumerate(col) if j not in drop]
                                     for col in (st.heads, st.relations, st.tails)),
                                   np.delete(st.line_nos, literal))
            triples, relations = _encode_triples(st, lambda k: table.add(table.key(k)), _unbracket)
            report.count(f"{label} relation triples", len(triples))
            src.update(triples=str(path), relations=str(path))
            return triples, relations
        if fb15k is not None:
            root, options, substitutions = fb15k
            triples, rels, info = _substitute_fb15k_triples(_fb15k237_folder(root, options), table.index, report,
                                                            notes, substitutions, grow=True, missing=str(path),
                                                            openke=union_folder(root, options, report, notes))
            src.update(info)
            return triples, rels
        msg = f"{label} relation triples are missing ({path.name} not found); {label} has no relation triples"
        report.warn(msg)
        notes.append(msg)
        src["triples"] = None
        return np.zeros((0, 3), np.int64), []

    @staticmethod
    def _numeric(path: Path, table: _EntityTable, report: LoadReport, src: dict) -> dict:
        if optional_file(path) is None:
            src["attributes"] = None
            return _empty_attributes()
        rows = _read_numeric_triples(path, report, table.label)
        src["attributes"] = str(path)
        ents = [table.add(table.key(e)) for _, e, _, _ in rows]
        return _attribute_arrays(ents, [a for _, _, a, _ in rows], [v for _, _, _, v in rows], [""] * len(rows),
                                 report, table.label)


def _read_entities(files: dict, label1: str, report: LoadReport):
    """``ent_ids_1`` / ``ent_ids_2`` in one global id space: ``(gids, uris, {gid: row})`` of each KG;
    an id defined in both files is an error naming both lines."""
    lines1: list[int] = []
    lines2: list[int] = []
    gids1, uris1 = read_id_map(files["ent_ids_1"], what="URI", line_nos=lines1)
    gids2, uris2 = read_id_map(files["ent_ids_2"], what="URI", line_nos=lines2)
    idx1 = {int(k): i for i, k in enumerate(gids1.tolist())}
    idx2 = {int(k): i for i, k in enumerate(gids2.tolist())}
    both = set(idx1) & set(idx2)
    if both:
        k = min(both)
        raise DataFormatError(files["ent_ids_2"], lines2[idx2[k]], f"{k}\t{uris2[idx2[k]]}",
                              f"entity id {k} is defined in both ent_ids_1 (line {lines1[idx1[k]]}) and "
                              f"ent_ids_2 ({len(both)} shared ids); the layout needs one global id space")
    uris1 = [_unbracket(u) for u in uris1]
    uris2 = [_unbracket(u) for u in uris2]
    report.count(f"{label1} entities", len(uris1))
    report.count(f"{KG2} entities", len(uris2))
    return gids1, uris1, idx1, gids2, uris2, idx2


def _kg2_triples(path: Path, options, files: dict, idx2: dict, uris2: list, rel_idx2, rels2, report: LoadReport,
                 notes: list, substitutions: list, kg2_meta: dict, src2: dict):
    """FB15K's relation triples: ``triples_2`` when the folder has it, else the substitute
    (FB15k-237 ∪ FB15K valid / test, :mod:`~mmea.data.loaders.fb15k_triples`); ``(triples, relations)``."""
    if files["triples_2"] is not None:
        triples2, rels2 = _read_id_triples(files["triples_2"], idx2, rel_idx2, rels2, KG2, report)
        src2.update(triples=str(files["triples_2"]), relations=str(files["rel_ids_2"]))
        return triples2, rels2
    mid_index = {u: i for i, u in enumerate(uris2)}
    triples2, rels2_sub, info = _substitute_fb15k_triples(
        _fb15k237_folder(path, options), mid_index, report, notes, substitutions, grow=False,
        missing=str(path / "triples_2"), openke=union_folder(path, options, report, notes))
    if info["triples"] is not None:
        kg2_meta["relations_file_count"] = len(rels2)
        kg2_meta["relations_file_coverage"] = len(set(rels2_sub) & set(rels2))
    src2.update(info)
    return triples2, rels2_sub


def _attach_image_indexes(mmkg_root, sides, report: LoadReport, notes: list) -> None:
    """Each KG's MMKG image index (``sides``: ``(label, meta, uris, provenance)``) into its meta, and a note."""
    img_counts = {}
    for label, meta, uris, src in sides:
        ipath = _image_index_file(mmkg_root, label)
        index = _read_image_index(ipath, report, label) if ipath is not None else None
        _attach_image_index(meta, index, ipath, uris, report, label)
        src["image_index"] = str(ipath) if ipath else None
        img_counts[label] = meta["image_index_count"]
    notes.append(_image_note(img_counts) if any(img_counts.values()) else
                 "images: no MMKG image index found; the image modality is empty")
