"""Seed links of every model: where they come from, how they grow, what they become.

One module for the seed logic the alignment models share, so that no model imports
another and each rule is tested alone (``tests/test_seeds.py``):

- :func:`train_seeds` — the gold seeds a model may train on (``task.train``, never
  ``valid`` or ``test``);
- :func:`mutual_nearest_pairs` — mutual nearest neighbours by cosine above a threshold
  (exact k-NN), the *pseudo-seeds* of the self-supervised modes;
- :func:`pseudo_seeds` — pseudo-seeds from name embeddings (and image features, where
  an entity has them);
- :func:`equal_name_pairs` — pseudo-seeds from equal names, unique on both sides (no search:
  a hash join, linear in the entities), :func:`name_pseudo_seeds` over a task's names feature;
- :func:`hold_out` — a random share of (pseudo-)seeds held out for model selection;
- :func:`propose_mutual_pairs` — one-to-one proposals from a search result (mutual best
  under the ranking score, above a threshold): SelfMEA's Algorithm 1;
- :func:`unaligned_rows`, :func:`expansion_threshold`, :func:`expand_seeds` — the
  iterative expansion rules (entities outside the pool and the selection links, the bar
  set by held-out pairs, mutual CSLS nearest neighbours);
- :func:`exchange_triples` — the exchange strategy (BootEA / MMEA, eq. 2 of the Gaussian
  model): triples of one entity of a seed copied onto its partner;
- :func:`anchor_matrix`, :func:`random_projection`, :func:`projected_anchor_hops`,
  :func:`propagate_anchors` — one-hot seed anchors, propagated over the graph and randomly
  projected (the same projection on both sides keeps anchor ``j`` on the same axes).

Pure numpy / scipy; a search (:mod:`mmea.search`) is imported inside the two functions
that run one.  Nothing here reads ``task.valid`` or ``task.test``.
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np

__all__ = [
    "train_seeds",
    "mutual_nearest_pairs",
    "pseudo_seeds",
    "name_key",
    "equal_name_pairs",
    "name_pseudo_seeds",
    "hold_out",
    "propose_mutual_pairs",
    "unaligned_rows",
    "expansion_threshold",
    "expand_seeds",
    "exchange_triples",
    "anchor_matrix",
    "random_projection",
    "projected_anchor_hops",
    "propagate_anchors",
    "normalize_rows",
]


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """``x`` as contiguous float32 with L2-normalised rows (zero rows stay zero); a new array."""
    x = np.array(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


# -- where seeds come from --------------------------------------------------------------

def train_seeds(task) -> np.ndarray:
    """``(L, 2)`` int64: the task's train links, the only gold a model may train on."""
    return np.asarray(task.train, dtype=np.int64).reshape(-1, 2)


def mutual_nearest_pairs(src: np.ndarray, tgt: np.ndarray, threshold: float, *, index: str = "auto"
                         ) -> np.ndarray:
    """``(p, 2)`` pairs ``(i, j)`` where ``j`` is ``i``'s best target, ``i`` is ``j``'s best source,
    and their cosine exceeds ``threshold`` (exact k-NN, :func:`mmea.search.knn.knn`).

    Mutual best pairs are one-to-one: no source or target appears twice.
    """
    from .search.knn import knn

    s_val, s_idx = knn(src, tgt, 1, index=index)  # (N, 1)
    _, t_idx = knn(tgt, src, 1, index=index)  # (M, 1)
    i = np.arange(len(src))
    j = s_idx[:, 0]
    ok = (j >= 0) & (s_val[:, 0] > threshold)
    ok[ok] &= t_idx[j[ok], 0] == i[ok]
    return np.stack([i[ok], j[ok]], axis=1).astype(np.int64)


def pseudo_seeds(names: tuple[np.ndarray, np.ndarray], threshold: float, images=None) -> np.ndarray:
    """Pseudo-seeds: :func:`mutual_nearest_pairs` of name embeddings, cosine above ``threshold``.

    ``names``: ``(source (N, d), target (M, d))`` L2-normalised rows.  ``images``: optional
    ``(source (N, d'), target (M, d'), source_mask (N,), target_mask (M,))`` with L2-normalised
    rows; then the cosine is that of ``[names ; image]`` (names and images averaged where an
    entity has an image, names alone where it has none).  No gold link is read.
    """
    vs, vt = names
    if images is not None:
        src, tgt, smask, tmask = images
        vs = normalize_rows(np.concatenate([vs, src * smask[:, None]], 1))
        vt = normalize_rows(np.concatenate([vt, tgt * tmask[:, None]], 1))
    return mutual_nearest_pairs(vs, vt, threshold)


_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def name_key(text: str | None) -> str:
    """The comparison key of a name: NFKD, combining marks dropped, lower case, runs of non-word characters
    as one space, tokens sorted (``"Smith, John"`` and ``"john smith"`` share ``"john smith"``); ``""`` for
    no name.  Scripts are kept (a Chinese name keeps its characters)."""
    if not text:
        return ""
    text = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))
    return " ".join(sorted(_NON_WORD.sub(" ", text.casefold()).split()))


def equal_name_pairs(src_texts, tgt_texts, exclude_src=(), exclude_tgt=()) -> np.ndarray:
    """``(p, 2)`` int64 ``(source id, target id)`` pairs whose :func:`name_key` are equal, non-empty and
    **unique on each side** (counted over every entity of the KG, so a name shared by two entities of
    one KG proposes nothing); pairs touching ``exclude_src`` / ``exclude_tgt`` (e.g. the train links'
    entities) are dropped.  Sorted by source id; one-to-one by construction.

    Pseudo-seeds from names alone, as LargeEA's name-based data augmentation (Ge et al., "LargeEA:
    Aligning Entities for Large-scale Knowledge Graphs", VLDB 2022), which takes entity pairs with equal
    names as extra seeds for its structure channel.  A hash join (pandas), linear in the entities: at
    1M entities a side it costs seconds, where a mutual-nearest search costs a full search pass.  On the
    synthetic pairs (``mmea datasets synth``, seed 0) these pairs cover 0.49 / 0.41 / 0.31 of the gold
    links at 10K / 100K / 1M entities a side, at precision 0.987 / 0.981 / 0.974.  No gold link is read.
    """
    import pandas as pd

    keys = []
    for texts in (src_texts, tgt_texts):
        k = pd.Series([name_key(t) for t in texts], dtype=object)  # (n,)
        mask = ((k.map(k.value_counts()) == 1) & (k != "")).to_numpy()  # (n,) a unique, non-empty key
        keys.append(pd.DataFrame({"key": k.to_numpy()[mask], "id": np.flatnonzero(mask)}))
    both = keys[0].merge(keys[1], on="key", suffixes=("_s", "_t"))  # unique keys: a one-to-one join
    pairs = both[["id_s", "id_t"]].to_numpy(np.int64).reshape(-1, 2)  # (p, 2)
    keep = ~np.isin(pairs[:, 0], np.asarray(exclude_src, np.int64)) & ~np.isin(
        pairs[:, 1], np.asarray(exclude_tgt, np.int64))
    pairs = pairs[keep]
    return pairs[np.argsort(pairs[:, 0], kind="stable")]


def name_pseudo_seeds(task, names, seeds: np.ndarray) -> np.ndarray:
    """:func:`equal_name_pairs` over the texts that the names feature ``names`` encoded (its
    ``name_source``), the entities of ``seeds (L, 2)`` excluded: ``(P, 2)``."""
    from .encoders.names import task_texts

    src_t, tgt_t = task_texts(task.source, task.target, names.info.get("name_source", "auto"))
    return equal_name_pairs(src_t.texts, tgt_t.texts, exclude_src=seeds[:, 0], exclude_tgt=seeds[:, 1])


def hold_out(pairs: np.ndarray, share: float, rng: np.random.Generator, min_pairs: int = 20
             ) -> tuple[np.ndarray, np.ndarray]:
    """``(held_out, kept)``: a random ``share`` of ``pairs`` held out for model selection.

    One permutation is drawn from ``rng`` whatever the size (so the generator's later draws
    do not depend on it); with fewer than ``min_pairs`` pairs nothing is held out.
    """
    perm = rng.permutation(len(pairs))
    k = int(round(share * len(pairs))) if len(pairs) >= min_pairs else 0
    return pairs[perm[:k]], pairs[perm[k:]]


# -- how seeds grow ---------------------------------------------------------------------

def propose_mutual_pairs(result, src_rows: np.ndarray, tgt_rows: np.ndarray, min_score: float = -np.inf,
                         score: str = "cos") -> np.ndarray:
    """One-to-one seed proposals (SelfMEA's Algorithm 1) from a search over unaligned entities.

    ``result`` is a :class:`~mmea.search.csls.SearchResult` of
    ``csls_topk(src[src_rows], tgt[tgt_rows], reverse=True)``; a pair is proposed
    when the source's best target has that source as its best source (mutual
    nearest neighbours under the ranking score) and its ``score`` (``cos`` or
    ``csls``) exceeds ``min_score``.  Mutual best pairs are one-to-one by
    construction.  Returns ``(p, 2)`` int64 global ids.
    """
    if result.reverse_best is None:
        raise ValueError("propose_mutual_pairs needs a search run with reverse=True")
    best = result.ids[:, 0]  # (n,)
    val = (result.cos if score == "cos" else result.csls)[:, 0]
    i = np.arange(len(best))
    ok = best >= 0
    ok[ok] &= result.reverse_best[best[ok]] == i[ok]
    ok &= val > min_score
    return np.stack([np.asarray(src_rows)[i[ok]], np.asarray(tgt_rows)[best[ok]]], axis=1).astype(np.int64)


def unaligned_rows(num_source: int, num_target: int, pool: np.ndarray, select: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``(free sources, free targets)``: entities in neither the pool nor the selection links."""
    pool = np.asarray(pool).reshape(-1, 2)
    select = np.asarray(select).reshape(-1, 2)
    used_s = np.concatenate([pool[:, 0], select[:, 0]]) if len(select) else pool[:, 0]
    used_t = np.concatenate([pool[:, 1], select[:, 1]]) if len(select) else pool[:, 1]
    return np.setdiff1d(np.arange(num_source), used_s), np.setdiff1d(np.arange(num_target), used_t)


def expansion_threshold(select_cosines: np.ndarray, quantile: float) -> float:
    """The cosine a proposal must exceed: the ``quantile`` of held-out true pairs' cosines (0 without any).

    Held-out pairs set the bar, so a proposal must look like a true pair.
    """
    return float(np.quantile(select_cosines, quantile)) if len(select_cosines) else 0.0


def expand_seeds(src_emb: np.ndarray, tgt_emb: np.ndarray, free_src: np.ndarray, free_tgt: np.ndarray,
                 min_cos: float) -> np.ndarray:
    """New one-to-one pairs among free entities: mutual CSLS nearest neighbours with cosine above ``min_cos``.

    ``src_emb (len(free_src), d)`` and ``tgt_emb (len(free_tgt), d)`` are the free entities'
    embeddings; returns ``(p, 2)`` global ids (:func:`propose_mutual_pairs`).

    While an exact search is affordable (``index="auto"`` resolves to an exact one) the cosines are
    computed once: :func:`~mmea.search.onepass.search_once` keeps short lists per row and per column
    and settles each source's CSLS best and each target's CSLS best from them (redoing a row or column
    it cannot settle), where ``csls_topk(..., reverse=True)`` makes two full passes (one per direction).
    Both give the same pairs (the same float32 scores and tie rule; ``tests/test_seeds.py``).  At
    FB15K-DB15K 20%, the first proposal of ``relational-gnn`` joined by label propagation (10,530 x
    12,639 free rows, 8,960 wide, 2 cores): 42 s against 105 s, the same 5,151 pairs.  Above that size,
    ``csls_topk``'s approximate index, both directions.
    """
    from .search.csls import csls_topk
    from .search.knn import resolve_index

    if resolve_index("auto", len(src_emb), len(tgt_emb)) in ("torch", "flat"):
        from .search import onepass

        res = onepass.search_once(src_emb, tgt_emb, np.arange(len(src_emb)), np.arange(len(tgt_emb)), topk=1,
                                  reverse=True, method="csls").result
    else:
        res = csls_topk(src_emb, tgt_emb, topk=1, reverse=True)
    return propose_mutual_pairs(res, free_src, free_tgt, min_score=min_cos, score="cos")


def exchange_triples(triples: np.ndarray, links: np.ndarray) -> np.ndarray:
    """Triples the exchange strategy adds to ``D+`` (eq. 2 of the Gaussian model), new ones only.

    For a seed link ``(e, e')`` every triple ``(e, r, t)`` gives ``(e', r, t)``
    and every ``(h, r, e)`` gives ``(h, r, e')``, and symmetrically from
    ``e'`` to ``e``; one end is swapped at a time (as in BootEA / MMEA).
    Entity ids are those of ``triples`` (both KGs in one id space).

    Args:
        triples: ``(T, 3)`` int ``(head, relation, tail)``.
        links: ``(L, 2)`` int seed links in the same id space (one-to-many allowed).

    Returns:
        ``(T', 3)`` int64 sorted unique triples not already in ``triples``.
    """
    from .sampling import KeyGroups

    t = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
    links = np.asarray(links, dtype=np.int64).reshape(-1, 2)
    if not len(t) or not len(links):
        return np.zeros((0, 3), dtype=np.int64)
    both = np.concatenate([links, links[:, ::-1]])  # (2L, 2): entity -> partner
    partners = KeyGroups.build(both[:, 0], both[:, 1])
    out = []
    for col in (0, 2):
        rows, partner = partners.lookup(t[:, col])
        new = t[rows].copy()
        new[:, col] = partner
        out.append(new)
    extra = np.unique(np.concatenate(out), axis=0)
    if not len(extra):
        return extra.reshape(0, 3)
    n_ent = int(max(t[:, [0, 2]].max(), links.max())) + 1
    n_rel = int(t[:, 1].max()) + 1

    def key(x):
        return (x[:, 0] * n_rel + x[:, 1]) * n_ent + x[:, 2]

    return extra[~np.isin(key(extra), key(t))]


# -- what seeds become: anchors ---------------------------------------------------------

def anchor_matrix(entities: np.ndarray, n: int):
    """One-hot seed anchors: CSR ``(n, L)`` with ``[entities[j], j] = 1``."""
    import scipy.sparse as sp

    L = len(entities)
    return sp.csr_matrix((np.ones(L, dtype=np.float32), (entities, np.arange(L))), shape=(n, L))


def random_projection(x, dim: int, seed: int) -> np.ndarray:
    """Dense ``(n, dim)`` float32 Gaussian random projection of sparse ``x``, rows L2-normalised."""
    rng = np.random.default_rng(seed)
    proj = rng.standard_normal((x.shape[1], dim)).astype(np.float32) / np.sqrt(dim)  # (V, dim)
    y = np.asarray(x @ proj, dtype=np.float32)  # (n, dim)
    norms = np.linalg.norm(y, axis=1, keepdims=True)
    np.divide(y, norms, out=y, where=norms > 0)
    return y


def projected_anchor_hops(adj, entities: np.ndarray, hops: int, dim: int, first_seed: int) -> list[np.ndarray]:
    """``[random_projection(P^h S, dim, first_seed + h - 1) for h in 1..hops]`` of one side.

    ``S``: the one-hot anchors of ``entities`` (:func:`anchor_matrix`), ``P = adj``.  Called on
    both sides with the same ``first_seed``, anchor ``j`` lands on the same axes.
    """
    a = anchor_matrix(entities, adj.shape[0])  # (n, L)
    out = []
    for h in range(hops):
        a = (adj @ a).tocsr()
        out.append(random_projection(a, dim, first_seed + h))
    return out


def propagate_anchors(adj, entities: np.ndarray, projection: np.ndarray, hops: int) -> list[np.ndarray]:
    """``[normalize(P^h S R) for h in 1..hops]``: seed anchors ``S`` (one-hot ``(n, L)``) through ``P``.

    ``S R`` puts row ``j`` of the random projection ``R (L, d)`` on the entity of
    pool pair ``j``; the same ``R`` on both sides keeps anchor ``j`` on the same axes.
    """
    n = adj.shape[0]
    h = np.zeros((n, projection.shape[1]), dtype=np.float32)  # (n, d)
    np.add.at(h, entities, projection)
    out = []
    for _ in range(hops):
        h = np.asarray(adj @ h, dtype=np.float32)  # (n, d)
        out.append(normalize_rows(h))
    return out
