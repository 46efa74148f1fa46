"""OpenEA loader (``openea``): the benchmark layout of OpenEA (Sun et al. 2020).

A dataset folder (``EN_FR_15K_V1``)::

    rel_triples_1, rel_triples_2      head<TAB>relation<TAB>tail  (URIs)
    attr_triples_1, attr_triples_2    entity<TAB>attribute<TAB>value  (optional)
    ent_links                         kg1_entity<TAB>kg2_entity   (all gold links)
    721_5fold/N/train_links, valid_links, test_links   (N = 1..5; 20 / 10 / 70 %)

Entities are numbered in order of first appearance in ``rel_triples``, then
``attr_triples``, then ``ent_links``; relations and attributes in order of
first appearance.  Attribute values keep their raw text and get a numeric
value with :func:`~mmea.data.parse_numeric`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import MmeaInputError
from ..graph import AlignmentTask, KnowledgeGraph, local_name
from ..parsing import LoadReport, check_links, map_ids, optional_file, parse_numeric, read_columns, require_rows
from .base import LOADERS, DatasetLoader, LoadOptions, log
from ..splits import DEFAULT_SEED_RATIO, seeded_split, split_from_parts, union_links
from .tsv import drop_duplicate_rows

__all__ = ["OpenEALoader"]

FOLD_DIR = "721_5fold"
SPLIT_PARTS = ("train", "valid", "test")


class _Vocab:
    """Strings numbered in order of first appearance."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def ids(self, keys: list[str]) -> np.ndarray:
        index = self.index
        return np.fromiter((index.setdefault(k, len(index)) for k in keys), dtype=np.int64, count=len(keys))

    @property
    def items(self) -> list[str]:
        return list(self.index)


class _KgBuilder:
    """Entities, relations and attributes of one side while its files are read."""

    def __init__(self, folder: Path, k: int, report: LoadReport):
        self.k = k
        self.prefix = f"kg{k} "
        self.entities, self.relations, self.attributes = _Vocab(), _Vocab(), _Vocab()
        self.rel_path = folder / f"rel_triples_{k}"
        self.attr_path = folder / f"attr_triples_{k}"
        rows = read_columns(self.rel_path, 3, max_split=False, id_cols=3)
        require_rows(self.rel_path, len(rows), "relation triples")
        # heads and tails interleaved, so entities are numbered in line order
        ht = self.entities.ids([p[j].strip() for _, p in rows for j in (0, 2)]).reshape(-1, 2)
        r = self.relations.ids([p[1].strip() for _, p in rows])
        triples = np.stack([ht[:, 0], r, ht[:, 1]], axis=1) if rows else np.zeros((0, 3), dtype=np.int64)
        self.triples = drop_duplicate_rows(triples, self.rel_path, report, f"{self.prefix}duplicate triples")
        report.count(f"{self.prefix}triples", len(self.triples))

        self.attr_triples = np.zeros((0, 2), dtype=np.int64)
        self.values: list[str] = []
        if optional_file(self.attr_path) is not None:
            rows = read_columns(self.attr_path, 3, id_cols=2)
            pairs = np.stack([self.entities.ids([p[0].strip() for _, p in rows]),
                              self.attributes.ids([p[1].strip() for _, p in rows])], axis=1) if rows else \
                np.zeros((0, 2), dtype=np.int64)
            values = [p[2].strip() for _, p in rows]
            keep = _first_of_repeats(pairs, values)
            if len(keep) < len(rows):
                report.skip(f"{self.prefix}duplicate attribute triples", len(rows) - len(keep))
                report.warn(f"{self.attr_path}: {len(rows) - len(keep)} duplicate line(s) ignored")
            self.attr_triples = pairs[keep]
            self.values = [values[i] for i in keep]
            report.count(f"{self.prefix}attribute triples", len(self.values))
        else:
            self.attr_path = None

    def build(self, name: str) -> KnowledgeGraph:
        ids = self.entities.items
        values = np.empty(len(self.values), dtype=object)
        values[:] = self.values
        return KnowledgeGraph(
            name=name, ids=ids, uris=list(ids), names=[local_name(u) for u in ids],
            relations=self.relations.items, triples=self.triples, attributes=self.attributes.items,
            attr_triples=self.attr_triples, attr_values=values,
            attr_numeric=np.array([parse_numeric(v) for v in self.values], dtype=np.float64),
            meta={"source_files": self.provenance()})

    def provenance(self) -> dict:
        return {"rel_triples": str(self.rel_path), "attr_triples": str(self.attr_path) if self.attr_path else None}


def _first_of_repeats(pairs: np.ndarray, values: list[str]) -> list[int]:
    """Row numbers of the first occurrence of every distinct (entity, attribute, value)."""
    seen: set = set()
    keep = []
    for i, key in enumerate(zip(pairs[:, 0].tolist(), pairs[:, 1].tolist(), values)):
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return keep


def _read_links(path: Path, b1: _KgBuilder, b2: _KgBuilder, report: LoadReport, what: str,
                add_entities: bool) -> np.ndarray:
    """``e1<TAB>e2`` lines -> internal links; new entities are added when ``add_entities``,
    otherwise an entity no file defines is an error naming its line."""
    rows = read_columns(path, 2, max_split=False, id_cols=2)
    lines = np.asarray([ln for ln, _ in rows], dtype=np.int64)
    raw = np.asarray([[p[0].strip(), p[1].strip()] for _, p in rows], dtype=object).reshape(-1, 2)
    if add_entities:
        links = np.stack([b1.entities.ids(raw[:, 0].tolist()), b2.entities.ids(raw[:, 1].tolist())], axis=1) \
            if len(raw) else np.zeros((0, 2), dtype=np.int64)
    else:
        links = np.stack([map_ids(raw[:, 0], b1.entities.index, path, lines, what="first-column entity"),
                          map_ids(raw[:, 1], b2.entities.index, path, lines, what="second-column entity")], axis=1)
    return check_links(links.reshape(-1, 2), path, report, lines, what=what,
                       ids=(b1.entities.items, b2.entities.items))


def _fold_folder(folder: Path, fold: int) -> Path | None:
    base = folder / FOLD_DIR
    if not base.is_dir():
        return None
    d = base / str(fold)
    if not d.is_dir():
        have = sorted(p.name for p in base.iterdir() if p.is_dir())
        raise MmeaInputError(f"{base}: no fold {fold}; folds present: {', '.join(have) or 'none'}")
    return d


def _kg_names(folder: Path) -> tuple[str, str]:
    """``EN_FR_15K_V1`` -> ``("en", "fr")``; ``("kg1", "kg2")`` when the name says nothing."""
    parts = folder.name.split("_")
    if len(parts) >= 2 and parts[0].isalpha() and parts[1].isalpha() and parts[0] != parts[1]:
        return parts[0].lower(), parts[1].lower()
    return "kg1", "kg2"


@LOADERS.register(name="openea")
class OpenEALoader(DatasetLoader):
    """OpenEA benchmark layout (rel_triples_1/2, attr_triples_1/2, ent_links, 721_5fold/N)."""

    description = "OpenEA layout: rel_triples_1/2, attr_triples_1/2, ent_links, 721_5fold/N/*_links"

    @classmethod
    def detect(cls, path: Path) -> bool:
        path = Path(path)
        # exists(), not is_file(): a directory in place of a file is then an error naming it
        return all((path / f).exists() for f in ("rel_triples_1", "rel_triples_2", "ent_links"))

    def load(self, path: Path, options: LoadOptions | None = None) -> AlignmentTask:
        options = options or LoadOptions()
        folder = Path(path)
        if not self.detect(folder):
            raise MmeaInputError(f"{folder}: not an OpenEA folder (needs rel_triples_1, rel_triples_2, ent_links)",
                                 hint="see docs/formats.md, 'OpenEA'")
        report = LoadReport()
        notes: list[str] = []
        b1, b2 = _KgBuilder(folder, 1, report), _KgBuilder(folder, 2, report)
        links_path = folder / "ent_links"
        links = _read_links(links_path, b1, b2, report, "links", add_entities=True)
        prov: dict = {"loader": "openea", "folder": str(folder), "source": b1.provenance(),
                      "target": b2.provenance(), "links": str(links_path)}

        fold_dir = None
        if options.use_dataset_split or options.seed_ratio is None:
            fold_dir = _fold_folder(folder, options.fold)
            if fold_dir is None and options.use_dataset_split:
                raise MmeaInputError(f"{folder}: the dataset split was asked for but {FOLD_DIR}/ is missing",
                                     hint="drop --use-dataset-split for a seeded split of ent_links")
        if fold_dir is not None:
            files = {p: fold_dir / f"{p}_links" for p in SPLIT_PARTS}
            parts = {p: _read_links(f, b1, b2, report, f"{p} links", add_entities=False)
                     for p, f in files.items() if optional_file(f) is not None}
            union_links([links, *parts.values()], f"{links_path} + {fold_dir}")
            train, valid, test, extra = split_from_parts(links, parts.get("train"), parts.get("valid"),
                                                         parts.get("test"), options, str(fold_dir))
            prov["split"] = {"kind": "dataset", "fold": options.fold,
                             **{p: str(f) for p, f in files.items() if p in parts}, **extra}
        else:
            ratio = DEFAULT_SEED_RATIO if options.seed_ratio is None else options.seed_ratio
            if options.seed_ratio is None:
                notes.append(f"no {FOLD_DIR}/ folder: seeded split of ent_links (seed ratio {ratio})")
                report.warn(notes[-1])
            train, valid, test, prov["split"] = seeded_split(links, ratio, options)

        names = _kg_names(folder)
        kgs = [b1.build(names[0]), b2.build(names[1])]
        for k, kg in enumerate(kgs, start=1):
            report.count(f"kg{k} entities", kg.num_entities)
            report.count(f"kg{k} relations", kg.num_relations)
            report.count(f"kg{k} attributes", kg.num_attributes)
        if options.swap:
            kgs.reverse()
            train, valid, test = (p[:, ::-1].copy() for p in (train, valid, test))
            prov["source"], prov["target"] = prov["target"], prov["source"]
            prov["swapped"] = True
        task = AlignmentTask(folder.name, kgs[0], kgs[1], train, valid, test, provenance=prov,
                             meta={"load_report": report.as_dict(), "notes": notes})
        report.log(log)
        return task
