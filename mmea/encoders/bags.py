"""Bag-of-relations and bag-of-attributes vectors (SelfMEA, eqs. 3-4).

For entity ``e`` with ``R`` relations and ``A`` attributes,

    BoR(e)[r]     = |{(e, r, t)}|        outgoing triples with relation r
    BoR(e)[R + r] = |{(h, r, e)}|        incoming triples with relation r      (eq. 3)
    BoA(e)[a]     = 1 if e has attribute a else 0                              (eq. 4)

and each bag feeds a linear layer, ``h_r = W_r BoR(e)``, ``h_a = W_a BoA(e)``
(:class:`~mmea.encoders.bags_nn.SparseLinear`, a ``torch.sparse.mm``).

The two KGs of a task usually have different relation and attribute
vocabularies (``dbo:birthPlace`` vs ``zh-dbp:出生地``).  :func:`shared_vocabulary`
puts both into one column space, merging columns whose names agree after
normalisation (:func:`vocabulary_key`) and keeping the others apart.  Columns
that only one KG uses make the joint matrix block-structured, so one
:class:`~mmea.encoders.bags_nn.SparseLinear` over the joint space is the same as one linear layer per
KG on its own columns plus a shared one on the merged columns.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from ..data.graph import KnowledgeGraph, local_name

__all__ = [
    "vocabulary_key",
    "shared_vocabulary",
    "relation_names",
    "attribute_names",
    "bag_of_relations",
    "bag_of_attributes",
]


def vocabulary_key(name: str) -> str:
    """Normalised relation / attribute name: URI local name, lower case, letters and digits only.

    ``http://dbpedia.org/ontology/birthPlace`` and ``birth_place`` -> ``birthplace``.
    """
    return "".join(ch for ch in local_name(name).lower() if ch.isalnum())


#: names that only restate an id (``rel_12``, ``attr 3``, ``17``): loaders' stand-ins for unknown names
_PLACEHOLDER_RE = re.compile(r"^((rel|relation|attr|attribute)[_ :-]?)?\d+$", re.IGNORECASE)


def _names_or_placeholders(kg_name: str, names: Sequence[str], count: int, what: str) -> list[str]:
    out = []
    for i in range(count):
        name = names[i] if i < len(names) else ""
        out.append(name if name and not _PLACEHOLDER_RE.match(name.strip()) else f"\0{kg_name}:{what}{i}")
    return out


def relation_names(kg: KnowledgeGraph) -> list[str]:
    """One name per relation id; unnamed ids (``""``, ``rel_12``) get a KG-unique placeholder, never merged."""
    n = max(kg.num_relations, int(kg.triples[:, 1].max()) + 1 if len(kg.triples) else 0)
    return _names_or_placeholders(kg.name, kg.relations, n, "rel")


def attribute_names(kg: KnowledgeGraph) -> list[str]:
    """One name per attribute id; unnamed ids (``""``, ``attr_3``) get a KG-unique placeholder, never merged."""
    n = max(kg.num_attributes, int(kg.attr_triples[:, 1].max()) + 1 if len(kg.attr_triples) else 0)
    return _names_or_placeholders(kg.name, kg.attributes, n, "attr")


def shared_vocabulary(names_a: Sequence[str], names_b: Sequence[str], by_name: bool = True
                      ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Joint column space of two vocabularies.

    Returns ``(map_a (len(a),), map_b (len(b),), vocab)`` with ``map_x[i]`` the
    joint column of item ``i``.  With ``by_name`` items whose
    :func:`vocabulary_key` agree share a column (placeholders starting with
    ``\\0`` never do); otherwise the columns of b follow those of a.
    """
    vocab: dict[str, int] = {}
    labels: list[str] = []
    maps = []
    for side, names in enumerate((names_a, names_b)):
        m = np.empty(len(names), dtype=np.int64)
        for i, name in enumerate(names):
            key = vocabulary_key(name) if by_name and not name.startswith("\0") else f"{side}\0{i}\0{name}"
            if key not in vocab:
                vocab[key] = len(vocab)
                labels.append(name.lstrip("\0"))
            m[i] = vocab[key]
        maps.append(m)
    return maps[0], maps[1], labels


def bag_of_relations(kg: KnowledgeGraph, relation_map: np.ndarray | None = None, num_columns: int | None = None):
    """Bag of relations (eq. 3): CSR float32 ``(n, 2R)``, outgoing counts then incoming counts.

    ``relation_map`` (``(R_kg,)``, from :func:`shared_vocabulary`) sends this
    KG's relation ids to ``num_columns`` joint columns; the output is then
    ``(n, 2 * num_columns)``.
    """
    import scipy.sparse as sp

    n = kg.num_entities
    rel = kg.triples[:, 1]
    if relation_map is not None:
        rel = np.asarray(relation_map, dtype=np.int64)[rel]
        r = int(num_columns if num_columns is not None else (relation_map.max() + 1 if len(relation_map) else 0))
    else:
        r = len(relation_names(kg))
    rows = np.concatenate([kg.triples[:, 0], kg.triples[:, 2]])
    cols = np.concatenate([rel, rel + r])
    data = np.ones(len(rows), dtype=np.float32)
    out = sp.csr_matrix((data, (rows, cols)), shape=(n, 2 * r), dtype=np.float32)  # (n, 2R)
    out.sum_duplicates()
    return out


def bag_of_attributes(kg: KnowledgeGraph, attribute_map: np.ndarray | None = None,
                      num_columns: int | None = None):
    """Bag of attributes (eq. 4): multi-hot CSR float32 ``(n, A)`` (1 where the entity has the attribute)."""
    import scipy.sparse as sp

    n = kg.num_entities
    attr = kg.attr_triples[:, 1]
    if attribute_map is not None:
        attr = np.asarray(attribute_map, dtype=np.int64)[attr]
        a = int(num_columns if num_columns is not None else (attribute_map.max() + 1 if len(attribute_map) else 0))
    else:
        a = len(attribute_names(kg))
    out = sp.csr_matrix((np.ones(len(attr), dtype=np.float32), (kg.attr_triples[:, 0], attr)),
                        shape=(n, a), dtype=np.float32)  # (n, A)
    out.sum_duplicates()
    out.data[:] = 1.0
    return out
