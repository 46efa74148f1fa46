"""Partitioned alignment: both KGs cut jointly around the seed links with METIS, each part aligned by a worker.

After LargeEA (Ge, Liu, Chen, Zheng, Gao, "LargeEA: Aligning Entities for Large-scale Knowledge Graphs",
VLDB 2022), which cuts both KGs with METIS so that seed pairs share a part, aligns each part pair
separately and recovers cross-part pairs from a global search.  Here:

1. **METIS** (Karypis & Kumar, "A Fast and High Quality Multilevel Scheme for Partitioning Irregular
   Graphs", SIAM J. Sci. Comput. 1998; through ``pymetis``) cuts the source KG's entity graph into ``P``
   balanced parts with few cut edges.
2. **Carried over the seeds** (LargeEA's counterpart-aware partition): every seed (train) link's target
   takes its source's part, so a seed pair always shares a part, and every other target entity the part
   most of its neighbours hold, repeated until stable (:func:`carry_parts`).  Cutting one joint graph
   with the seed links contracted (:func:`joint_graph`) also keeps seed pairs together, but METIS then cuts
   along the seam between the two KGs (measured in :func:`partition_pair`).
3. **Per part** (one Ray task each): label propagation (:mod:`mmea.models.label_propagation_math`) on the
   part's own sub-graphs with the part's own anchors, whose labels ``z_j`` are the rows of one global
   label matrix (the same seed draws them as in-process), so every part writes into one label space.
4. **Global search**: the search stage then ranks every test source against every test target (sharded
   over Ray), so a pair split across parts is found if its embeddings meet; :meth:`Partition.recovery`
   reports the share of test links whose ends share a part (what a part-local alignment can reach at
   most) and the Hits@1 / Hits@10 of the split links after the global search.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..errors import MmeaInputError

log = logging.getLogger("mmea.engine")

__all__ = ["Partition", "entity_csr", "joint_graph", "metis_parts", "carry_parts", "partition_pair",
           "partitioned_label_propagation", "align_part"]


@dataclass
class Partition:
    """Part of every entity: ``src (N,)``, ``tgt (M,)`` in ``0..parts-1``; ``edge_cut``: METIS's cut."""

    src: np.ndarray
    tgt: np.ndarray
    parts: int
    edge_cut: int

    def same_part(self, links: np.ndarray) -> np.ndarray:
        """``(n,)`` bool: the link's source and target share a part."""
        links = np.asarray(links, np.int64).reshape(-1, 2)
        return self.src[links[:, 0]] == self.tgt[links[:, 1]]

    def summary(self, task) -> dict:
        """``metrics.json`` figures of the cut: sizes, cut edges, and the links that share a part."""
        sizes = np.bincount(self.src, minlength=self.parts) + np.bincount(self.tgt, minlength=self.parts)
        out = {"parts": self.parts, "edge_cut": int(self.edge_cut), "entities_per_part": sizes.tolist()}
        for name in ("train", "valid", "test"):
            links = getattr(task, name)
            if len(links):
                out[f"{name}_links_same_part"] = round(float(self.same_part(links).mean()), 4)
        return out

    def recovery(self, test: np.ndarray, ranks: np.ndarray) -> dict:
        """Recall of the test links after the global search: Hits@1 / @10 of all of them, of those whose
        ends share a part and of those split across parts (``ranks (n,)``: each link's rank)."""
        same = self.same_part(test)
        ranks = np.asarray(ranks)

        def hits(sel, k):
            return round(float(np.mean(ranks[sel] <= k)), 4) if sel.any() else None

        return {"test_links_split": int((~same).sum()),
                "global_search": {"hits@1": hits(np.ones_like(same), 1), "hits@10": hits(np.ones_like(same), 10),
                                  "hits@1_same_part": hits(same, 1), "hits@10_same_part": hits(same, 10),
                                  "hits@1_split": hits(~same, 1), "hits@10_split": hits(~same, 10)}}


def entity_csr(triples: np.ndarray, n: int):
    """The undirected entity graph of ``(T, 3)`` triples as binary CSR ``(n, n)`` (no self loops, repeats once)."""
    import scipy.sparse as sp

    t = np.asarray(triples, np.int64).reshape(-1, 3)
    keep = t[:, 0] != t[:, 2]
    a, b = t[keep, 0], t[keep, 2]
    A = sp.coo_matrix((np.ones(2 * len(a), np.int8), (np.r_[a, b], np.r_[b, a])), shape=(n, n)).tocsr()
    A.sum_duplicates()
    A.data[:] = 1
    return A


def joint_graph(triples_src: np.ndarray, n: int, triples_tgt: np.ndarray, m: int, seeds: np.ndarray) -> tuple:
    """``(xadj, adjncy, vweights, vertex_of_src (n,), vertex_of_tgt (m,))``: both KGs' entity graphs side by
    side with every seed link contracted into one vertex of weight 2 (a seed link's target is its source's
    vertex), in METIS's CSR form.  (Not the default: on random-like graphs METIS cuts it along the seam
    between the two KGs; :func:`partition_pair`.)"""
    import scipy.sparse as sp

    seeds = np.asarray(seeds, np.int64).reshape(-1, 2)
    v_tgt = np.full(m, -1, np.int64)
    v_tgt[seeds[:, 1]] = seeds[:, 0]
    free = np.flatnonzero(v_tgt < 0)
    v_tgt[free] = n + np.arange(len(free))
    V = n + len(free)
    A, B = entity_csr(triples_src, n).tocoo(), entity_csr(triples_tgt, m).tocoo()
    rows, cols = np.r_[A.row, v_tgt[B.row]], np.r_[A.col, v_tgt[B.col]]
    keep = rows != cols
    J = sp.coo_matrix((np.ones(keep.sum(), np.int8), (rows[keep], cols[keep])), shape=(V, V)).tocsr()
    J.sum_duplicates()
    weights = np.ones(V, np.int64)
    weights[np.unique(seeds[:, 0])] = 2
    return J.indptr.astype(np.int64), J.indices.astype(np.int64), weights, np.arange(n, dtype=np.int64), v_tgt


def metis_parts(A, parts: int, seed: int = 0) -> tuple[int, np.ndarray]:
    """``(edge cut, part (n,))`` of the binary CSR graph ``A`` into ``parts`` balanced parts (METIS)."""
    import pymetis

    csr = pymetis.CSRAdjacency(A.indptr.astype(np.int64), A.indices.astype(np.int64))
    cut, member = pymetis.part_graph(int(parts), csr, options=pymetis.Options(seed=int(seed) % (2**31)))
    return int(cut), np.asarray(member, np.int64)


def carry_parts(B, fixed: np.ndarray, parts: int, rounds: int = 50) -> np.ndarray:
    """``(m,)`` parts of the target entities: ``fixed (m,)`` (the seed targets' parts, ``-1`` elsewhere) kept;
    an entity with seed neighbours takes the part most of them hold; then, round by round, an entity still
    without a part takes the one most of its placed neighbours hold (placed entities keep theirs: a free
    majority would snowball into one part).  Ties go to the part ``(id + j) % parts`` first; entities no
    part reaches (isolated) go round robin by id."""
    import scipy.sparse as sp

    m = len(fixed)
    part = fixed.copy()
    ids = np.arange(m)
    for _ in range(rounds):
        known = np.flatnonzero(part >= 0)
        todo = np.flatnonzero(part < 0)
        if not len(todo) or not len(known):
            break
        onehot = sp.csr_matrix((np.ones(len(known), np.float32), (known, part[known])), shape=(m, parts))
        votes = np.asarray((B[todo] @ onehot).todense())  # (t, parts)
        shift = (ids[todo, None] + np.arange(parts)[None, :]) % parts  # (t, parts): the tie order of each row
        best = np.take_along_axis(shift, np.argmax(np.take_along_axis(votes, shift, 1), 1)[:, None], 1)[:, 0]
        got = votes.max(1) > 0
        if not got.any():
            break
        part[todo[got]] = best[got]
    left = np.flatnonzero(part < 0)
    part[left] = left % parts
    return part


def partition_pair(task, parts: int, seed: int = 0) -> Partition:
    """Both KGs of ``task`` cut into ``parts`` parts around its train links (LargeEA's counterpart-aware
    partition, as a documented equivalent of one joint cut): METIS cuts the source KG's entity graph; each
    train link's target takes its source's part, and every other target entity the part most of its
    neighbours hold (:func:`carry_parts`).  Every train pair shares a part and every entity has one.

    (Cutting :func:`joint_graph`, both KGs with the seed links contracted, would keep the seed pairs together
    too, but METIS then cuts along the seam between the KGs, where few seeds hold them together: on a 2.5K
    synthetic pair, 2 parts, only 6.6% of the test links shared a part.)
    """
    if parts < 2:
        raise MmeaInputError(f"engine.partitions must be >= 2 to partition, got {parts}")
    n, m = task.source.num_entities, task.target.num_entities
    if parts > n:
        raise MmeaInputError(f"engine.partitions = {parts} exceeds the {n} source entities")
    cut, src = metis_parts(entity_csr(task.source.triples, n), parts, seed)
    seeds = np.asarray(task.train, np.int64).reshape(-1, 2)
    fixed = np.full(m, -1, np.int64)
    fixed[seeds[:, 1]] = src[seeds[:, 0]]
    tgt = carry_parts(entity_csr(task.target.triples, m), fixed, parts)
    return Partition(src, tgt, int(parts), cut)


def label_matrix(num_anchors: int, dim: int, seed: int) -> np.ndarray:
    """``(L, dim)`` the anchors' labels ``z_j``, drawn as :func:`mmea.models.label_propagation_math.seed_labels`
    draws them (i.i.d. Gaussian rows scaled to unit norm; ``dim = 0``: one-hot, ``(L, L)``)."""
    from ..models import label_propagation_math as lpm

    if dim <= 0:
        return np.eye(num_anchors, dtype=np.float32)
    return lpm.l2_rows(np.random.default_rng(seed).standard_normal((num_anchors, dim)).astype(np.float32))


def align_part(src_triples: np.ndarray, n: int, r_src: int, tgt_triples: np.ndarray, m: int, r_tgt: int,
               anchors: np.ndarray, labels: np.ndarray, hops: int, weight: float) -> tuple:
    """Label propagation of one part pair (a Ray task): ``(H_src (n, D), H_tgt (m, D))``.

    ``*_triples``: the part's own triples in local ids; ``anchors (L_p, 2)`` local seed pairs with
    ``labels (L_p, dim)``; the representation is the model's
    (:func:`~mmea.models.label_propagation_math.concat_views`): the per-hop entity views (weight ``1 - w``) and
    relation views (``w``), rows L2-normalised.
    """
    from ..models import label_propagation_math as lpm

    blocks = []
    for triples, size, rels, side in ((src_triples, n, r_src, 0), (tgt_triples, m, r_tgt, 1)):
        x0 = np.zeros((size, labels.shape[1]), np.float32)  # (size, dim)
        np.add.at(x0, anchors[:, side], labels)
        graph, incidence = lpm.entity_graph(triples, size), lpm.relation_incidence(triples, size, rels)
        blocks.append(lpm.propagate(graph, incidence, x0, hops))
    return tuple(lpm.concat_views(side, weight) for side in blocks)


def _part_inputs(kg, part: np.ndarray, p: int, halo: bool) -> tuple:
    """``(core (c,) entities of part p, entities (s,) it propagates over, local ids (N,), local triples (t, 3))``.

    Without ``halo`` the part's own triples (both ends in it); with ``halo`` also the triples with one end
    in it, so its entities (the first ``c`` local ids) see their neighbours in other parts, as in the
    whole graph (an overlapping partition: those neighbours' rows are written by their own part).
    """
    t = np.asarray(kg.triples, np.int64).reshape(-1, 3)
    core = np.flatnonzero(part == p)
    inside = (part[t[:, 0]] == p) | (part[t[:, 2]] == p) if halo else (part[t[:, 0]] == p) & (part[t[:, 2]] == p)
    t = t[inside]
    ents = np.concatenate([core, np.setdiff1d(np.unique(t[:, [0, 2]]), core)])
    local = np.full(kg.num_entities, -1, np.int64)
    local[ents] = np.arange(len(ents))
    return core, ents, local, np.stack([local[t[:, 0]], t[:, 1], local[t[:, 2]]], 1).reshape(-1, 3)


def _relation_weight(config) -> tuple[float, str]:
    if config.relation_weight >= 0:
        return float(config.relation_weight), "model.relation_weight"
    return float(config.relation_weights[0]), ("the first of model.relation_weights (the partitioned mode does "
                                                "not choose it on the valid links)")


def _name_weight(config) -> tuple[float, str]:
    if config.name_weight >= 0:
        return float(config.name_weight), "model.name_weight"
    return float(config.name_weights[0]), ("the first of model.name_weights (the partitioned mode does not "
                                           "choose it on the valid links)")


def with_names(emb: np.ndarray, names: np.ndarray, a: float) -> np.ndarray:
    """``norm([sqrt(1 - a) emb, sqrt(a) norm(names)])`` ``(n, D + d_n)``: the label propagation model's names
    block (:meth:`mmea.models.label_propagation.LabelPropagationModel._embed`) on unit structure rows ``emb
    (n, D)``; a zero name row (no name) stays zero."""
    from ..models import label_propagation_math as lpm

    names = lpm.l2_rows(np.asarray(names, np.float32))  # (n, d_n)
    out = np.empty((emb.shape[0], emb.shape[1] + names.shape[1]), np.float32)  # (n, D + d_n)
    np.multiply(emb, np.float32(np.sqrt(1.0 - a)), out=out[:, :emb.shape[1]])
    np.multiply(names, np.float32(np.sqrt(a)), out=out[:, emb.shape[1]:])
    return lpm.l2_rows(out)


def partitioned_label_propagation(task, config, parts: int, session, seed: int = 0, halo: bool = True,
                                  names: tuple | None = None, anchors: np.ndarray | None = None) -> tuple:
    """``(src_emb (N, D), tgt_emb (M, D), partition, info)``: :func:`partition_pair`, then :func:`align_part`
    for every part pair as Ray tasks on ``session``; each entity's row comes from its own part.

    ``config``: the label-propagation model's ``Config`` (``hops``, ``anchor_dim``, ``relation_weight``,
    ``name_weight``); iterative rounds are not run part by part (``rounds > 0`` is an input error).
    ``halo``: each part also propagates over its triples into other parts (:func:`_part_inputs`).
    ``names``: ``(N, d_n)``, ``(M, d_n)`` name vectors (the model's names feature), joined to every row
    as the in-process model does (:func:`with_names`; the weight is not chosen here).
    ``anchors``: the labelled pairs ``(L', 2)`` (default the train links; the model's name pseudo-seeds
    join them with ``name_seeds``); the partition itself is cut around the train links only.
    """
    import time

    if config.rounds:
        raise MmeaInputError(f"the partitioned mode (engine.partitions = {parts}) runs label propagation without "
                             f"iterative rounds; got model.rounds = {config.rounds}", hint="--set model.rounds=0")
    t0 = time.perf_counter()
    partition = partition_pair(task, parts, seed)
    cut_s = time.perf_counter() - t0
    seeds = np.asarray(task.train if anchors is None else anchors, np.int64).reshape(-1, 2)  # (L', 2)
    labels = label_matrix(len(seeds), config.anchor_dim, seed)
    weight, why = _relation_weight(config)
    ray = session.ray
    remote = ray.remote(align_part).options(num_cpus=1)
    refs, rows = [], []
    for p in range(parts):
        s_core, s_ents, s_local, s_trip = _part_inputs(task.source, partition.src, p, halo)
        t_core, t_ents, t_local, t_trip = _part_inputs(task.target, partition.tgt, p, halo)
        mine = np.flatnonzero((s_local[seeds[:, 0]] >= 0) & (t_local[seeds[:, 1]] >= 0))  # anchors with both ends here
        anchors = np.stack([s_local[seeds[mine, 0]], t_local[seeds[mine, 1]]], 1)
        refs.append(remote.remote(s_trip, len(s_ents), task.source.num_relations, t_trip, len(t_ents),
                                  task.target.num_relations, anchors, labels[mine], config.hops, weight))
        rows.append((s_core, t_core))
    src_emb = tgt_emb = None
    for (s_core, t_core), (hs, ht) in zip(rows, session.gather(refs, "label propagation of the parts")):
        if src_emb is None:
            src_emb = np.zeros((task.source.num_entities, hs.shape[1]), np.float32)
            tgt_emb = np.zeros((task.target.num_entities, ht.shape[1]), np.float32)
        src_emb[s_core], tgt_emb[t_core] = hs[:len(s_core)], ht[:len(t_core)]  # the core rows come first
    info = {**partition.summary(task), "method": "METIS on the source KG, carried to the target KG over the seeds",
            "halo": halo, "partition_s": round(cut_s, 3), "align_parts_s": round(time.perf_counter() - t0 - cut_s, 3),
            "relation_weight": weight, "relation_weight_from": why, "names_used": False}
    a, a_from = _name_weight(config)
    if names is not None and a > 0:
        src_emb, tgt_emb = with_names(src_emb, names[0], a), with_names(tgt_emb, names[1], a)
        info.update(names_used=True, name_weight=a, name_weight_from=a_from)
    log.info("partitioned label propagation: %s", info)
    return src_emb, tgt_emb, partition, info
