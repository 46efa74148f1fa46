"""FB15K's own relation triples, as far as they exist here: FB15k-237 ∪ FB15K valid ∪ FB15K test.

The MMKG benchmark's FB15K side (Liu et al. 2019) has FB15K's 592,213 triples
(Bordes et al. 2013), but its ``FB15K_EntityTriples.txt`` is not available here.
What is:

* FB15k-237 (Toutanova & Chen 2015), ``FB15k-237/{train,valid,test}.txt``:
  310,116 triples, 237 relations; a subset of FB15K's triples.
* FB15K's own valid and test triples in OpenKE's id form,
  ``MMKG/FB15K/openke/{entity2id,relation2id,valid2id,test2id}.txt``: the first
  line of each file is a count; ``entity2id`` / ``relation2id`` lines are
  ``name<TAB>id``; ``valid2id`` / ``test2id`` lines are ``head tail relation``
  ids (note the order).

Their union (duplicates once) is 381,186 triples with all 1,345 relations of
FB15K, 64% of the published FB15K side.  It is the default
(``data.fb15k_triples = "union"``); ``"fb15k237"`` keeps FB15k-237 alone.

The FB15K "valid" and "test" files are link-prediction splits of FB15K's *KG
triples* (facts between two FB15K entities).  They are not alignment links and
say nothing about which DB15K / YAGO15K entity is which FB15K entity, so using
them as graph structure leaks nothing from the alignment test split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DataFormatError, MmeaInputError
from ..parsing import LoadReport
from .base import LoadOptions
from .linkpred import StringTriples, read_text

__all__ = ["FB15K_TRIPLE_SOURCES", "OPENKE_FILES", "openke_folder", "triple_source", "union_folder", "read_openke_names", "read_openke_triples",
           "union_with_openke"]

#: the choices of ``data.fb15k_triples``: ``union`` = FB15k-237 ∪ FB15K valid ∪ FB15K test (default)
FB15K_TRIPLE_SOURCES = ("union", "fb15k237")
OPENKE_FILES = ("entity2id.txt", "relation2id.txt", "valid2id.txt", "test2id.txt")
_OPENKE_PATH = ("MMKG", "FB15K", "openke")


def triple_source(options: LoadOptions) -> str:
    """``options.extra["fb15k_triples"]`` (default ``"union"``), checked against :data:`FB15K_TRIPLE_SOURCES`."""
    choice = str(options.extra.get("fb15k_triples", "union"))
    if choice not in FB15K_TRIPLE_SOURCES:
        raise MmeaInputError(f"data.fb15k_triples must be one of {', '.join(FB15K_TRIPLE_SOURCES)}, got {choice!r}")
    return choice


def openke_folder(path: Path, options: LoadOptions) -> Path | None:
    """The ``MMKG/FB15K/openke`` folder holding all of :data:`OPENKE_FILES`, or None.

    Looked for inside the dataset folder (the raw MMKG layout), beside it (``<dir>/..``,
    ``<dir>/../..``) and under ``options.data_root``.
    """
    path = Path(path).resolve()
    roots = [path, path.parent, path.parent.parent] + ([Path(options.data_root)] if options.data_root else [])
    for root in roots:
        for k in range(len(_OPENKE_PATH)):
            cand = root.joinpath(*_OPENKE_PATH[k:])
            if cand.is_dir() and all((cand / f).is_file() for f in OPENKE_FILES):
                return cand
    return None


def union_folder(path: Path, options: LoadOptions, report: LoadReport, notes: list[str]) -> Path | None:
    """The OpenKE folder to add to FB15k-237 under ``data.fb15k_triples = "union"``, else None.

    ``"fb15k237"`` gives None (the old behaviour); ``"union"`` without the folder gives None with a
    warning and a note (FB15k-237 alone then stands in).
    """
    if triple_source(options) == "fb15k237":
        notes.append("data.fb15k_triples = fb15k237: FB15K's own valid/test triples are not added")
        return None
    folder = openke_folder(path, options)
    if folder is None:
        msg = ("FB15K's own valid/test triples (MMKG/FB15K/openke/{valid2id,test2id}.txt) not found beside the "
               "data; FB15k-237 alone stands in for the FB15K triples")
        report.warn(msg)
        notes.append(msg)
    return folder


def _counted_lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, text)`` of the non-blank lines after OpenKE's count line, checked against the count."""
    lines = read_text(path).split("\n")
    head = lines[0].strip() if lines else ""
    if not head.isdigit():
        raise DataFormatError(path, 1, lines[0] if lines else "", "expected the number of lines (OpenKE format)")
    rows = [(i, ln) for i, ln in enumerate(lines[1:], start=2) if ln.strip()]
    if len(rows) != int(head):
        raise DataFormatError(path, 1, head, f"the count says {int(head)} lines, the file has {len(rows)}")
    return rows


def read_openke_names(path: Path) -> list[str]:
    """``entity2id.txt`` / ``relation2id.txt`` -> names by id (ids must be exactly ``0..n-1``)."""
    rows = _counted_lines(path)
    names: list[str | None] = [None] * len(rows)
    for i, line in rows:
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip().isdigit():
            raise DataFormatError(path, i, line, "expected `name<TAB>id`")
        k = int(parts[1])
        if k >= len(names) or names[k] is not None:
            raise DataFormatError(path, i, line, f"id {k} is repeated or outside 0..{len(names) - 1}")
        names[k] = parts[0].strip()
    return names  # type: ignore[return-value]


def read_openke_triples(path: Path, entities: list[str], relations: list[str]) -> StringTriples:
    """``valid2id.txt`` / ``test2id.txt`` (``head tail relation`` ids) -> string triples (mids, relation names)."""
    rows = _counted_lines(path)
    try:
        ids = np.array([[int(x) for x in ln.split()] for _, ln in rows], dtype=np.int64).reshape(-1, 3)
    except ValueError:
        i, ln = next((i, ln) for i, ln in rows if len(ln.split()) != 3 or not all(x.isdigit() for x in ln.split()))
        raise DataFormatError(path, i, ln, "expected `head tail relation` (three integer ids)") from None
    bad = np.flatnonzero((ids[:, [0, 1]] >= len(entities)).any(axis=1) | (ids[:, 2] >= len(relations)))
    if len(bad):
        i, ln = rows[int(bad[0])]
        raise DataFormatError(path, i, ln, f"an id outside entity2id ({len(entities)}) / relation2id "
                                           f"({len(relations)}); {len(bad)} such line(s)")
    ents = np.asarray(entities, dtype=object)
    rels = np.asarray(relations, dtype=object)
    return StringTriples(ents[ids[:, 0]].tolist(), rels[ids[:, 2]].tolist(), ents[ids[:, 1]].tolist(),
                         np.array([i for i, _ in rows], dtype=np.int64))


def union_with_openke(base: StringTriples, folder: Path, report: LoadReport) -> tuple[StringTriples, dict]:
    """``base`` (FB15k-237) ∪ FB15K valid ∪ FB15K test, each distinct triple once, ``base`` order first.

    Returns the union and a summary (``files``, ``added`` per file, ``triples``, ``relations``).
    ``line_nos`` of the added triples are their lines in their own file.
    """
    entities = read_openke_names(folder / "entity2id.txt")
    relations = read_openke_names(folder / "relation2id.txt")
    seen = set(zip(base.heads, base.relations, base.tails))
    cols: tuple[list, list, list] = (list(base.heads), list(base.relations), list(base.tails))
    line_nos = [base.line_nos]
    added = {}
    for name in ("valid2id.txt", "test2id.txt"):
        st = read_openke_triples(folder / name, entities, relations)
        keep = []
        for j, key in enumerate(zip(st.heads, st.relations, st.tails)):
            if key not in seen:
                seen.add(key)
                keep.append(j)
        for col, src in zip(cols, (st.heads, st.relations, st.tails)):
            col.extend(src[j] for j in keep)
        line_nos.append(st.line_nos[keep])
        added[name] = len(keep)
        report.count(f"FB15K {name} triples", len(st))
        report.count(f"FB15K {name} triples not in FB15k-237 (added)", len(keep))
    union = StringTriples(*cols, np.concatenate(line_nos))
    info = {"files": [str(folder / f) for f in OPENKE_FILES], "added": added, "triples": len(union),
            "relations": len(set(union.relations))}
    return union, info
