"""The data model: :class:`KnowledgeGraph`, :class:`AlignmentTask`, :class:`LinkPredictionDataset`.

Entities, relations and attributes of a KG are numbered ``0..n-1``
internally; the identifiers the source files used are kept in ``ids`` so that
exports can name them.  Links between two KGs are int64 arrays of shape
``(n, 2)`` holding internal ids ``(source entity, target entity)``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ..errors import MmeaInputError

__all__ = [
    "KnowledgeGraph",
    "AlignmentTask",
    "LinkPredictionDataset",
    "make_split",
    "local_name",
]


def local_name(uri: str) -> str:
    """Readable local name of a URI: last path segment, percent-decoded, ``_`` -> space.

    ``http://dbpedia.org/resource/Kim_Dae-jung`` -> ``Kim Dae-jung``;
    ``<http://x/y#Foo_Bar>`` -> ``Foo Bar``; a plain string is returned stripped.
    """
    from urllib.parse import unquote

    s = uri.strip().strip("<>")
    for sep in ("#", "/"):
        if sep in s:
            tail = s.rsplit(sep, 1)[1]
            if tail:
                s = tail
                break
    return unquote(s).replace("_", " ").strip()


@dataclass(eq=False)
class KnowledgeGraph:
    """One knowledge graph with every modality it carries.

    Attributes:
        name: short label (``"dbp_zh"``).
        ids: identifier of each entity in the source files (str), ``(n,)``.
        uris: entity URIs (or the id again where the format has none).
        names: display names ("" where unknown).
        translated_names: machine-translated names, or ``None`` where the dataset has none.
        relations: relation URI / name per relation id.
        triples: int64 ``(T, 3)`` of ``(head, relation, tail)``.
        attributes: attribute name per attribute id.
        attr_triples: int64 ``(A, 2)`` of ``(entity, attribute)``.
        attr_values: raw literal strings ``(A,)`` (object array).
        attr_numeric: float64 ``(A,)``: :func:`~mmea.data.parsing.parse_numeric`, NaN when not numeric.
        image_paths: per-entity image file ("" where none), or ``None``.
        image_features: float32 ``(n, d)`` precomputed image features, or ``None``.
        image_mask: bool ``(n,)``: entity has an image (path or features).
        descriptions: per-entity long text ("" where none), or ``None``.
        meta: provenance and notes (source files, substitutions).
    """

    name: str
    ids: list[str]
    uris: list[str]
    names: list[str]
    relations: list[str] = field(default_factory=list)
    triples: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))
    attributes: list[str] = field(default_factory=list)
    attr_triples: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    attr_values: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=object))
    attr_numeric: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.float64))
    translated_names: list[str] | None = None
    image_paths: list[str] | None = None
    image_features: np.ndarray | None = None
    image_mask: np.ndarray | None = None
    descriptions: list[str] | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.ids)
        if len(self.uris) != n or len(self.names) != n:
            raise ValueError(f"{self.name}: ids/uris/names lengths differ ({n}, {len(self.uris)}, {len(self.names)})")
        self.triples = np.asarray(self.triples, dtype=np.int64).reshape(-1, 3)
        self.attr_triples = np.asarray(self.attr_triples, dtype=np.int64).reshape(-1, 2)
        self.attr_numeric = np.asarray(self.attr_numeric, dtype=np.float64).reshape(-1)
        if not isinstance(self.attr_values, np.ndarray):
            self.attr_values = np.asarray(self.attr_values, dtype=object)
        for what, seq in (("translated_names", self.translated_names), ("image_paths", self.image_paths),
                          ("descriptions", self.descriptions)):
            if seq is not None and len(seq) != n:
                raise ValueError(f"{self.name}: {what} has {len(seq)} entries for {n} entities")
        if self.image_features is not None:
            self.image_features = np.asarray(self.image_features, dtype=np.float32)
            if self.image_features.shape[0] != n:
                raise ValueError(f"{self.name}: image_features has {self.image_features.shape[0]} rows for {n} entities")
        if self.image_mask is None and (self.image_paths is not None or self.image_features is not None):
            if self.image_paths is not None:
                self.image_mask = np.array([bool(p) for p in self.image_paths], dtype=bool)
            else:
                self.image_mask = np.any(self.image_features != 0, axis=1)
        if self.image_mask is not None:
            self.image_mask = np.asarray(self.image_mask, dtype=bool).reshape(-1)
        self.validate()

    # -- sizes ---------------------------------------------------------------
    @property
    def num_entities(self) -> int:
        return len(self.ids)

    @property
    def num_relations(self) -> int:
        return len(self.relations)

    @property
    def num_attributes(self) -> int:
        return len(self.attributes)

    @cached_property
    def index(self) -> dict[str, int]:
        """Source-file id -> internal id."""
        return {k: i for i, k in enumerate(self.ids)}

    @cached_property
    def uri_index(self) -> dict[str, int]:
        """URI -> internal id."""
        return {k: i for i, k in enumerate(self.uris)}

    def lookup(self, key: str) -> int:
        """Internal id of an entity given its source id or URI; clear error when unknown."""
        i = self.index.get(key)
        if i is None:
            i = self.uri_index.get(key)
        if i is None:
            raise MmeaInputError(f"{self.name}: unknown entity {key!r}")
        return i

    def uri_names(self) -> list[str]:
        """Decoded local names of the URIs."""
        return [local_name(u) for u in self.uris]

    def validate(self) -> None:
        """Every id in triples / attributes is in range (loaders report the line first)."""
        n, r, a = self.num_entities, self.num_relations, self.num_attributes
        if self.triples.size:
            if self.triples[:, [0, 2]].min() < 0 or self.triples[:, [0, 2]].max() >= n:
                raise ValueError(f"{self.name}: triple entity id out of range")
            if r and (self.triples[:, 1].min() < 0 or self.triples[:, 1].max() >= r):
                raise ValueError(f"{self.name}: triple relation id out of range")
        if self.attr_triples.size:
            if self.attr_triples[:, 0].max() >= n or self.attr_triples[:, 1].max() >= a:
                raise ValueError(f"{self.name}: attribute triple id out of range")
            if len(self.attr_values) != len(self.attr_triples) or len(self.attr_numeric) != len(self.attr_triples):
                raise ValueError(f"{self.name}: attribute arrays have different lengths")

    def summary(self) -> dict:
        """Counts for ``mmea datasets info``."""
        has_img = int(self.image_mask.sum()) if self.image_mask is not None else 0
        return {
            "entities": self.num_entities,
            "relations": self.num_relations,
            "triples": int(len(self.triples)),
            "attributes": self.num_attributes,
            "attribute_triples": int(len(self.attr_triples)),
            "numeric_attribute_triples": int(np.isfinite(self.attr_numeric).sum()),
            "entities_with_attributes": int(len(np.unique(self.attr_triples[:, 0]))) if len(self.attr_triples) else 0,
            "named_entities": int(sum(1 for x in self.names if x)),
            "translated_names": int(sum(1 for x in self.translated_names if x)) if self.translated_names else 0,
            "images": has_img,
        }

    def fingerprint(self) -> str:
        """Content hash (ids, triples, attributes, names), for feature caches."""
        h = hashlib.sha1()
        h.update(self.name.encode())
        h.update("\n".join(self.ids).encode())
        h.update("\n".join(self.names).encode())
        if self.translated_names:
            h.update("\n".join(self.translated_names).encode())
        h.update(np.ascontiguousarray(self.triples).tobytes())
        h.update(np.ascontiguousarray(self.attr_triples).tobytes())
        h.update("\n".join(map(str, self.attr_values)).encode())
        if self.image_paths is not None:
            h.update("\n".join(self.image_paths).encode())
        if self.image_features is not None:
            h.update(np.ascontiguousarray(self.image_features).tobytes())
        return h.hexdigest()[:16]


def make_split(links: np.ndarray, train_ratio: float, seed: int, valid_ratio: float = 0.1
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded split of gold links into (train, valid, test).

    ``train_ratio`` of the links are seeds; ``valid_ratio`` *of those seeds* is
    carved off as validation (valid never comes from test).  The test part is
    therefore exactly ``1 - train_ratio`` of the links, as in the DBP15k and
    MMKG protocols.  ``train_ratio = 0`` gives an empty train and valid (the
    self-supervised setting).
    """
    links = np.asarray(links, dtype=np.int64).reshape(-1, 2)
    if not 0.0 <= train_ratio < 1.0:
        raise MmeaInputError(f"seed ratio must be in [0, 1), got {train_ratio}")
    if not 0.0 <= valid_ratio < 1.0:
        raise MmeaInputError(f"valid ratio must be in [0, 1), got {valid_ratio}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(links))
    n_seed = int(round(train_ratio * len(links)))
    n_valid = int(round(valid_ratio * n_seed))
    seeds, test = links[perm[:n_seed]], links[perm[n_seed:]]
    valid, train = seeds[:n_valid], seeds[n_valid:]
    return train, valid, test


@dataclass(eq=False)
class AlignmentTask:
    """Two KGs and their gold links split into train / valid / test.

    ``provenance`` says where each split came from (a file of the dataset, or
    a seeded split with its ratio and seed).
    """

    name: str
    source: KnowledgeGraph
    target: KnowledgeGraph
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    provenance: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for part in ("train", "valid", "test"):
            arr = np.asarray(getattr(self, part), dtype=np.int64).reshape(-1, 2)
            setattr(self, part, arr)
            if arr.size and (arr[:, 0].min() < 0 or arr[:, 0].max() >= self.source.num_entities
                             or arr[:, 1].min() < 0 or arr[:, 1].max() >= self.target.num_entities):
                raise ValueError(f"{self.name}: {part} link id out of range")

    @property
    def all_links(self) -> np.ndarray:
        return np.concatenate([self.train, self.valid, self.test], axis=0)

    def split_sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}

    def resplit(self, train_ratio: float, seed: int, valid_ratio: float = 0.1) -> "AlignmentTask":
        """The same task with a new seeded split of all gold links."""
        links = self.all_links
        # sort first so the split depends only on the link set and the seed
        links = links[np.lexsort((links[:, 1], links[:, 0]))]
        train, valid, test = make_split(links, train_ratio, seed, valid_ratio)
        prov = dict(self.provenance)
        prov["split"] = {"kind": "seeded", "train_ratio": train_ratio, "valid_ratio_of_train": valid_ratio,
                         "seed": seed}
        return AlignmentTask(self.name, self.source, self.target, train, valid, test, prov, dict(self.meta))

    def summary(self) -> dict:
        return {"name": self.name, "source": self.source.summary(), "target": self.target.summary(),
                "links": len(self.all_links), "split": self.split_sizes(), "provenance": self.provenance,
                "notes": list(self.meta.get("notes", []))}

    def fingerprint(self) -> str:
        h = hashlib.sha1()
        h.update(self.source.fingerprint().encode())
        h.update(self.target.fingerprint().encode())
        return h.hexdigest()[:16]


@dataclass(eq=False)
class LinkPredictionDataset:
    """One KG with train / valid / test triples (FB15k-237 style)."""

    name: str
    graph: KnowledgeGraph  # its ``triples`` are the training triples
    valid: np.ndarray
    test: np.ndarray
    relation_texts: list[str] | None = None
    meta: dict = field(default_factory=dict)

    @property
    def train(self) -> np.ndarray:
        return self.graph.triples

    def summary(self) -> dict:
        return {"name": self.name, "entities": self.graph.num_entities, "relations": self.graph.num_relations,
                "train": len(self.train), "valid": len(self.valid), "test": len(self.test),
                "named_entities": int(sum(1 for x in self.graph.names if x)),
                "notes": list(self.meta.get("notes", []))}
