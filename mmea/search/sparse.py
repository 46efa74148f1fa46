"""A sparse similarity term next to the dense embeddings: exact sparse top-k and pair scores.

Some of a model's evidence is sparse and exact, not a dense vector: label propagation's one-hop anchor
overlap (:func:`mmea.models.label_propagation_math.anchor_overlap`) is the cosine of two rows of an
``(N, L)`` binary matrix over ``L`` anchor links (hundreds of thousands of columns at 1M entities).  A
random projection to a dense width loses it (the source of the random-label noise the model's dense
blocks carry); a sparse product keeps it exact at a cost that grows with the rows' non-zeros, not with
``L``.  A :class:`SparseBlock` adds it to the dense inner product of the search:

    sim(s, t) = <e_s, e_t> + weight * <u_s, u_t>          e: unit dense rows, u: unit sparse rows

which is the inner product of the concatenations ``[e, sqrt(weight) u]``: the same CSLS, ranks and
assignment downstream, on a similarity up to ``1 + weight``.  The list-based search
(:func:`mmea.search.approx.approx_search`) takes each query's dense top-``K`` and its sparse top-``K``
(:func:`sparse_topk`, exact), scores the union with both terms (:func:`pair_scores`) and keeps the best
``K``: a two-stage retrieval whose second stage is exact.

scipy's sparse product does the work; no library offers a row-wise top-k of a sparse product, so
:func:`row_topk` does it with one ``lexsort`` over a block's non-zeros.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

__all__ = ["SparseBlock", "row_topk", "sparse_topk", "pair_scores", "unit_rows", "products", "lookup", "choice_hits"]

#: query rows per sparse product block (its non-zeros: rows x the mean row fill of the product)
BLOCK = 8192


def unit_rows(m: sp.spmatrix) -> sp.csr_matrix:
    """``m`` as float32 CSR with L2-unit rows (empty rows stay empty), sorted column indices."""
    m = sp.csr_matrix(m, dtype=np.float32)
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1), np.float64).ravel())  # (n,)
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0).astype(np.float32)
    out = sp.csr_matrix(sp.diags(inv) @ m, dtype=np.float32)
    out.sort_indices()
    return out


@dataclass
class SparseBlock:
    """A model's sparse similarity term: ``weight * <src[s], tgt[t]>`` (both CSR with unit rows, same columns).

    Attributes:
        src: ``(N, L)`` float32 CSR, one row per source entity.
        tgt: ``(M, L)`` float32 CSR, one row per target entity.
        weight: the term's weight (> 0).
        name: what it is, for the run's record.
        rounds: sparse rounds of the list-based search (:func:`mmea.search.approx.approx_search`): after each
            scoring, the lists' mutual best pairs ``(q, 2)`` (entity ids) go to ``refine``, which returns the
            term rebuilt with them, and the same dense lists are scored again; 0: none.
        refine: ``pairs -> SparseBlock`` (the model's; ``None``: no rounds).
    """

    src: sp.csr_matrix
    tgt: sp.csr_matrix
    weight: float
    name: str = "sparse"
    rounds: int = 0
    refine: Callable[[np.ndarray], "SparseBlock"] | None = field(default=None, repr=False)

    def side(self, target: bool) -> sp.csr_matrix:
        return self.tgt if target else self.src

    def record(self) -> dict:
        return {"name": self.name, "weight": float(self.weight), "columns": int(self.src.shape[1]),
                "nnz": [int(self.src.nnz), int(self.tgt.nnz)]}


def row_topk(x: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scores (n, k) float32, ids (n, k) int64)``: each row's ``k`` largest stored values, descending, ties by
    lower column; unfilled slots ``-inf`` / ``-1``.  Zero-valued entries count as stored (callers prune)."""
    x = sp.csr_matrix(x)
    n = x.shape[0]
    scores, ids = np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)
    if not x.nnz or k < 1:
        return scores, ids
    row = np.repeat(np.arange(n), np.diff(x.indptr))  # (nnz,)
    order = np.lexsort((x.indices, -x.data, row))  # rows stay contiguous, in indptr order
    pos = np.arange(x.nnz) - x.indptr[row]  # rank of each sorted entry within its row (row[order] == row)
    keep = pos < k
    sel = order[keep]
    scores[row[keep], pos[keep]] = x.data[sel]
    ids[row[keep], pos[keep]] = x.indices[sel]
    return scores, ids


def sparse_topk(queries: sp.csr_matrix, base: sp.csr_matrix, k: int, block: int = BLOCK
                ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` of ``queries (q, L) @ base (m, L)^T`` per query: ``(scores (q, k), ids (q, k))`` (ids are
    rows of ``base``; ``-1`` where a query shares fewer than ``k`` non-zero products), blocks of ``block``
    queries (one sparse ``(block, m)`` product at a time)."""
    k = min(int(k), base.shape[0])
    out_s, out_i = np.full((queries.shape[0], k), -np.inf, np.float32), np.full((queries.shape[0], k), -1, np.int64)
    for a, x in products(queries, base, block):
        out_s[a:a + x.shape[0]], out_i[a:a + x.shape[0]] = row_topk(x, k)
    return out_s, out_i


def lookup(x: sp.csr_matrix, ids: np.ndarray) -> np.ndarray:
    """``(b, c)`` float32 ``x[i, ids[i, j]]`` of a CSR ``(b, m)`` with sorted indices (0 where ``ids`` is ``-1`` or
    the entry is not stored): a sorted search of each wanted ``row * m + col`` key among the stored keys."""
    b, m = x.shape
    ids = np.asarray(ids, np.int64)
    keys = np.repeat(np.arange(b, dtype=np.int64), np.diff(x.indptr)) * m + x.indices  # (nnz,) ascending
    if not len(keys):
        return np.zeros(ids.shape, np.float32)
    want = np.arange(b, dtype=np.int64)[:, None] * m + np.maximum(ids, 0)  # (b, c)
    at = np.minimum(np.searchsorted(keys, want), len(keys) - 1)  # (b, c)
    return np.where((ids >= 0) & (keys[at] == want), x.data[at], 0).astype(np.float32)


def products(queries: sp.csr_matrix, base: sp.csr_matrix, block: int = BLOCK):
    """Yield ``(start, x)``: ``x = queries[start:start + block] @ base^T`` ``(b, m)`` CSR, zeros dropped, indices
    sorted (one block at a time: its non-zeros are the memory)."""
    bt = sp.csr_matrix(base.T)  # (L, m)
    for a in range(0, queries.shape[0], block):
        x = sp.csr_matrix(queries[a:a + block] @ bt)  # (b, m)
        x.eliminate_zeros()
        x.sort_indices()
        yield a, x


def pair_scores(queries: sp.csr_matrix, base: sp.csr_matrix, ids: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """``(q, c)`` float32 ``<queries[i], base[ids[i, j]]>`` (0 where ``ids`` is ``-1`` or the rows share nothing),
    one sparse product block at a time (:func:`products`, :func:`lookup`)."""
    ids = np.asarray(ids, np.int64)
    out = np.zeros(ids.shape, np.float32)
    for a, x in products(queries, base, block):
        out[a:a + x.shape[0]] = lookup(x, ids[a:a + x.shape[0]])
    return out


def choice_hits(S: np.ndarray, T: np.ndarray, us: sp.csr_matrix, ut: sp.csr_matrix, queries: np.ndarray,
                gold: np.ndarray, weights: list[float], csls_k: int = 10, block: int = 2048) -> dict[float, float]:
    """Hits@1 by CSLS of ``sim = S T^T + w us ut^T`` for each ``w`` of ``weights``: ``{w: hits}``.

    ``S (n, d)`` / ``T (m, d)`` dense unit rows, ``us (n, L)`` / ``ut (m, L)`` their sparse rows; ``queries (v,)``
    rows of ``S`` whose gold columns are ``gold (v,)``.  CSLS radii (Conneau et al., ICLR 2018) over all ``n``
    rows and ``m`` columns: a first pass over row blocks keeps each row's and each column's ``csls_k`` best
    similarities for every ``w`` at once, a second scores the query rows (ties: lower column).  Blocks of
    ``block`` rows: one ``(block, m)`` dense similarity at a time, for a weight choice on sampled rows (the
    caller keeps ``n`` and ``m`` in the ten thousands).
    """
    import torch

    k = max(1, min(int(csls_k), len(T), len(S)))
    t = torch.from_numpy(np.ascontiguousarray(T, np.float32))
    utt = sp.csr_matrix(ut.T)
    r_src = {w: np.zeros(len(S), np.float32) for w in weights}
    cols = {w: np.full((k, len(T)), -np.inf, np.float32) for w in weights}

    def sims(a: int, b: int):
        dense = (torch.from_numpy(np.ascontiguousarray(S[a:b], np.float32)) @ t.T).numpy()  # (b, m)
        return dense, (us[a:b] @ utt).toarray()  # (b, m) both

    for a in range(0, len(S), block):
        dense, over = sims(a, a + block)
        for w in weights:
            x = dense + np.float32(w) * over  # (b, m)
            r_src[w][a:a + block] = np.partition(x, -k, axis=1)[:, -k:].mean(1)
            both = np.concatenate([cols[w], np.partition(x, x.shape[0] - k, axis=0)[-k:]
                                   if x.shape[0] >= k else x])
            cols[w] = np.partition(both, both.shape[0] - k, axis=0)[-k:]
    queries, gold = np.asarray(queries, np.int64), np.asarray(gold, np.int64)
    r_tgt = {w: cols[w].mean(0) for w in weights}  # (m,) each column's radius, once
    hits = {w: 0 for w in weights}
    for a in range(0, len(queries), block):
        q = queries[a:a + block]
        dense = (torch.from_numpy(np.ascontiguousarray(S[q], np.float32)) @ t.T).numpy()
        over = (us[q] @ utt).toarray()
        for w in weights:
            x = 2 * (dense + np.float32(w) * over) - r_src[w][q, None] - r_tgt[w][None, :]
            hits[w] += int(np.sum(np.argmax(x, axis=1) == gold[a:a + block]))
    return {w: round(hits[w] / max(len(queries), 1), 4) for w in weights}
