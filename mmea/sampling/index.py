"""Indexes over a KG's triples for the samplers: membership (:class:`TripleSet`), partners of a
(head, relation) / (relation, tail) key (:class:`PartnerIndex`, :class:`KeyGroups`), relation
cardinality (``tph`` / ``hpt``) and observed domains / ranges (:class:`TypeConstraints`).
Pure numpy; vectorised lookups by sorted keys (``np.searchsorted``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..errors import MmeaInputError


# ----------------------------------------------------------------------------- indexes over triples
def _as_triples(x, what: str = "triples") -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2 or a.shape[1] != 3:
        raise MmeaInputError(f"{what} must be an int array of shape (n, 3) (head, relation, tail); got {a.shape}")
    return a.astype(np.int64, copy=False)


class TripleSet:
    """A hashed set of triples: ``key = (h * R + r) * E + t`` in a sorted int64 array.

    Membership of ``n`` queries costs one ``np.searchsorted`` (``O(n log T)``);
    keys fit int64 while ``E * E * R < 9.2e18``.
    """

    def __init__(self, triples: np.ndarray, num_entities: int, num_relations: int):
        self.num_entities = int(num_entities)
        self.num_relations = int(num_relations)
        if self.num_entities**2 * max(self.num_relations, 1) >= 2**63:
            raise MmeaInputError("graph too large for int64 triple keys (E * E * R >= 2**63)")
        self.keys = np.unique(self.encode(_as_triples(triples)))

    def encode(self, triples: np.ndarray) -> np.ndarray:
        t = np.asarray(triples, dtype=np.int64)
        return (t[..., 0] * self.num_relations + t[..., 1]) * self.num_entities + t[..., 2]

    def contains(self, triples: np.ndarray) -> np.ndarray:
        """Bool mask of the leading shape of ``triples (..., 3)``."""
        k = self.encode(triples)
        if not len(self.keys):
            return np.zeros(k.shape, dtype=bool)
        pos = np.searchsorted(self.keys, k)
        pos = np.minimum(pos, len(self.keys) - 1)
        return self.keys[pos] == k

    def __len__(self) -> int:
        return len(self.keys)


class _Csr(NamedTuple):
    """Group index: ``values[indptr[i]:indptr[i + 1]]`` are the members of group ``i``."""

    indptr: np.ndarray
    values: np.ndarray

    @classmethod
    def build(cls, groups: np.ndarray, values: np.ndarray, num_groups: int) -> "_Csr":
        order = np.lexsort((values, groups))
        counts = np.bincount(groups, minlength=num_groups)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(indptr, np.asarray(values, dtype=np.int64)[order])

    def members(self, group: int) -> np.ndarray:
        return self.values[self.indptr[group]:self.indptr[group + 1]]


class KeyGroups(NamedTuple):
    """Members grouped by an int64 key, compact: ``values[indptr[i]:indptr[i + 1]]`` belong to ``keys[i]``."""

    keys: np.ndarray  # sorted unique group keys (G,)
    indptr: np.ndarray  # (G + 1,)
    values: np.ndarray  # members, grouped, each group sorted

    @classmethod
    def build(cls, keys: np.ndarray, values: np.ndarray) -> "KeyGroups":
        keys, values = np.asarray(keys, dtype=np.int64), np.asarray(values, dtype=np.int64)
        order = np.lexsort((values, keys))
        k, v = keys[order], values[order]
        uniq, start = np.unique(k, return_index=True)
        return cls(uniq, np.append(start, len(k)).astype(np.int64), v)

    def lookup(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat ``(query position, member)`` pairs for every member of each query's group."""
        queries = np.asarray(queries, dtype=np.int64)
        if not len(self.keys) or not len(queries):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.keys, queries), len(self.keys) - 1)
        found = self.keys[pos] == queries
        start = np.where(found, self.indptr[pos], 0)
        count = np.where(found, self.indptr[pos + 1] - self.indptr[pos], 0)
        rows = np.repeat(np.arange(len(queries)), count)
        offsets = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
        return rows, self.values[np.repeat(start, count) + offsets]


class PartnerIndex:
    """Known answers of ``(h, r, ?)`` (tails) and ``(?, r, t)`` (heads) queries, from a set of true triples.

    Used for the filtered evaluation and for the batch-shared false-negative
    mask, where looking up each row's few known partners is far cheaper than
    testing all ``B * K`` (row, candidate) pairs for membership.
    """

    def __init__(self, triples: np.ndarray, num_entities: int, num_relations: int):
        t = _as_triples(triples)
        self.num_entities, self.num_relations = int(num_entities), int(num_relations)
        self.tails = KeyGroups.build(t[:, 0] * self.num_relations + t[:, 1], t[:, 2])
        self.heads = KeyGroups.build(t[:, 1] * self.num_entities + t[:, 2], t[:, 0])

    def known_tails(self, h: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(query position, tail)`` pairs of every known tail of each ``(h, r)``."""
        return self.tails.lookup(np.asarray(h, dtype=np.int64) * self.num_relations + np.asarray(r))

    def known_heads(self, r: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(query position, head)`` pairs of every known head of each ``(r, t)``."""
        return self.heads.lookup(np.asarray(r, dtype=np.int64) * self.num_entities + np.asarray(t))

    def candidate_mask(self, batch: np.ndarray, replace_head: bool, candidates: np.ndarray) -> np.ndarray:
        """``(B, K)`` True where ``batch[b]`` with its head (or tail) set to ``candidates[k]`` is known."""
        batch = _as_triples(batch, "batch")
        candidates = np.asarray(candidates, dtype=np.int64)
        mask = np.zeros((len(batch), len(candidates)), dtype=bool)
        if replace_head:
            rows, partners = self.known_heads(batch[:, 1], batch[:, 2])
        else:
            rows, partners = self.known_tails(batch[:, 0], batch[:, 1])
        if not len(rows) or not len(candidates):
            return mask
        order = np.argsort(candidates, kind="stable")
        sc = candidates[order]
        lo = np.searchsorted(sc, partners, "left")
        cnt = np.searchsorted(sc, partners, "right") - lo  # a candidate may repeat
        rr = np.repeat(rows, cnt)
        offsets = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        mask[rr, order[np.repeat(lo, cnt) + offsets]] = True
        return mask


@dataclass(frozen=True)
class RelationCardinality:
    """Per-relation ``tph`` and ``hpt`` (Wang et al., 2014, "Knowledge Graph Embedding by Translating on Hyperplanes").

    ``tph[r]`` = triples of ``r`` / distinct heads of ``r`` (average tails per
    head), ``hpt[r]`` = triples / distinct tails.  Bernoulli sampling replaces
    the head with ``p = tph / (tph + hpt)``.  Categories follow Bordes et al.
    (2013) with threshold 1.5: ``1-1``, ``1-N`` (``tph >= 1.5 > hpt``),
    ``N-1`` and ``N-N``.  A relation without training triples gets
    ``tph = hpt = 1``.
    """

    tph: np.ndarray
    hpt: np.ndarray

    @classmethod
    def from_triples(cls, triples: np.ndarray, num_relations: int) -> "RelationCardinality":
        t = _as_triples(triples)
        n = np.bincount(t[:, 1], minlength=num_relations).astype(np.float64)
        hr = np.unique(t[:, [1, 0]], axis=0)
        rt = np.unique(t[:, [1, 2]], axis=0)
        n_heads = np.bincount(hr[:, 0], minlength=num_relations).astype(np.float64)
        n_tails = np.bincount(rt[:, 0], minlength=num_relations).astype(np.float64)
        tph = np.divide(n, n_heads, out=np.ones(num_relations), where=n_heads > 0)
        hpt = np.divide(n, n_tails, out=np.ones(num_relations), where=n_tails > 0)
        return cls(tph, hpt)

    @property
    def head_probability(self) -> np.ndarray:
        return self.tph / (self.tph + self.hpt)

    def category(self, threshold: float = 1.5) -> np.ndarray:
        """``(R,)`` of ``"1-1" | "1-N" | "N-1" | "N-N"``."""
        many_t = self.tph >= threshold
        many_h = self.hpt >= threshold
        out = np.full(len(self.tph), "1-1", dtype=object)
        out[many_t & ~many_h] = "1-N"
        out[~many_t & many_h] = "N-1"
        out[many_t & many_h] = "N-N"
        return out


@dataclass(frozen=True)
class TypeConstraints:
    """Domain and range of each relation learned from training triples: bool ``(R, E)`` each."""

    domain: np.ndarray
    range: np.ndarray

    @classmethod
    def from_triples(cls, triples: np.ndarray, num_entities: int, num_relations: int) -> "TypeConstraints":
        t = _as_triples(triples)
        dom = np.zeros((num_relations, num_entities), dtype=bool)
        rng = np.zeros((num_relations, num_entities), dtype=bool)
        dom[t[:, 1], t[:, 0]] = True
        rng[t[:, 1], t[:, 2]] = True
        return cls(dom, rng)

    def allows(self, relations: np.ndarray, entities: np.ndarray, sides: np.ndarray) -> np.ndarray:
        """Whether ``entities`` may fill the head (``sides``) / tail slot of ``relations`` (broadcast)."""
        r, e, s = np.broadcast_arrays(relations, entities, sides)
        return np.where(s, self.domain[r, e], self.range[r, e])
