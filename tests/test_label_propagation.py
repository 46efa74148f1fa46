"""Label propagation (LightEA-style, mmea.models.label_propagation): the maths on graphs with known answers,
the registered model on a synthetic pair, and its bootstrapping rounds (no test link is ever read)."""

from __future__ import annotations

import numpy as np
import pytest

from mmea.config import FeatureConfig
from mmea.data.graph import AlignmentTask, KnowledgeGraph
from mmea.errors import MmeaInputError
from mmea.models import MODELS, RunContext
from mmea.models import label_propagation_math as lpm

from kg_fixtures import PoisonedTask  # noqa: E402


def _kg(name: str, n: int, triples, num_relations: int) -> KnowledgeGraph:
    ids = [f"{name}{i}" for i in range(n)]
    return KnowledgeGraph(name, ids, ids, [""] * n, [f"r{k}" for k in range(num_relations)],
                          np.asarray(triples, dtype=np.int64).reshape(-1, 3))


def _synthetic_pair(n=160, n_triples=480, n_rel=6, seed=0):
    """A random KG and a relabelled copy (entities and relations permuted): ``(source, target, gold (n, 2))``."""
    rng = np.random.default_rng(seed)
    h, t = rng.integers(0, n, n_triples), rng.integers(0, n, n_triples)
    r = rng.integers(0, n_rel, n_triples)
    src = np.stack([h, r, t], 1)  # (T, 3)
    perm, rperm = rng.permutation(n), rng.permutation(n_rel)  # target id of source entity i: perm[i]
    tgt = np.stack([perm[h], rperm[r], perm[t]], 1)  # (T, 3)
    gold = np.stack([np.arange(n), perm], 1)  # (n, 2)
    return _kg("s", n, src, n_rel), _kg("t", n, tgt, n_rel), gold


def _task(seed=0, poisoned=False, train=0.3, valid=0.1):
    s, t, gold = _synthetic_pair(seed=seed)
    perm = np.random.default_rng(seed + 1).permutation(len(gold))
    n_tr, n_va = int(train * len(gold)), int(valid * len(gold))
    parts = gold[perm[:n_tr]], gold[perm[n_tr:n_tr + n_va]], gold[perm[n_tr + n_va:]]
    task = (PoisonedTask if poisoned else AlignmentTask)("syn", s, t, *parts)
    if poisoned:
        task.armed = True
    return task, parts


def _fit(task, **params):
    cls = MODELS.get("label-propagation")
    model = cls(cls.Config(**params), RunContext(seed=0, features=FeatureConfig(name_encoder="char-ngram")))
    model.fit(task)
    return model


def _hits1(model, links) -> float:
    s, t = model.embeddings()
    sim = s[links[:, 0]] @ t[links[:, 1]].T  # (n, n): a tiny test set, dense is fine here
    return float(np.mean(sim.argmax(axis=1) == np.arange(len(links))))


# ---------------------------------------------------------------------------
# the maths
# ---------------------------------------------------------------------------

def test_entity_graph_is_undirected_row_normalised_without_self_loops():
    p = lpm.entity_graph(np.array([[0, 0, 1], [1, 1, 2], [1, 0, 2], [2, 0, 2]]), 4)  # repeat + self loop
    np.testing.assert_allclose(p.toarray(), [[0, 1, 0, 0], [0.5, 0, 0.5, 0], [0, 1, 0, 0], [0, 0, 0, 0]])


def test_relation_incidence_separates_head_and_tail():
    q = lpm.relation_incidence(np.array([[0, 1, 2], [0, 1, 3]]), 4, 2).toarray()  # (4, 2R = 4)
    np.testing.assert_array_equal(q, [[0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1]])


def test_propagation_on_a_path_known_answer():
    """Path 0-1-2-3, one-hot label on 0: a label reaches a node at hop k iff a k-step walk from 0 ends there."""
    triples = np.array([[0, 0, 1], [1, 0, 2], [2, 0, 3]])
    x0, _ = lpm.seed_labels(np.array([[0, 0]]), 4, 1, dim=0, seed=0)  # (4, 1)
    e1, f1, e2, f2, e3, f3 = lpm.propagate(lpm.entity_graph(triples, 4), lpm.relation_incidence(triples, 4, 1), x0, 3)
    np.testing.assert_array_equal(e1[:, 0], [0, 1, 0, 0])
    np.testing.assert_array_equal(e2[:, 0], [1, 0, 1, 0])
    np.testing.assert_array_equal(e3[:, 0], [0, 1, 0, 1])
    # relation view, hop 1: node 0 is a head of relation 0 (never a tail), so the label reaches "head of r0",
    # which nodes 0, 1, 2 are and node 3 (only a tail) is not
    np.testing.assert_array_equal(f1[:, 0], [1, 1, 1, 0])
    # hop 2 reads E^(1) (node 1, head and tail of r0): both relation slots carry it, every node gets it
    np.testing.assert_array_equal(f2[:, 0], [1, 1, 1, 1])


def test_seed_labels_share_one_label_per_link():
    xs, xt = lpm.seed_labels(np.array([[0, 2], [3, 1]]), 4, 3, dim=64, seed=0)  # (4, 64), (3, 64)
    np.testing.assert_array_equal(xs[0], xt[2])
    np.testing.assert_array_equal(xs[3], xt[1])
    assert not xs[1].any() and not xt[0].any()
    np.testing.assert_allclose(np.linalg.norm(xs[[0, 3]], axis=1), 1, rtol=1e-5)


def test_mutual_pairs_one_to_one_and_only_mutual():
    # sources 10, 11, 12 (positions 0..2); targets 20, 21 (positions 0, 1)
    best_tgt = np.array([0, 0, 1])  # 10 -> 20, 11 -> 20, 12 -> 21
    best_src = np.array([1, 2])  # 20 -> 11, 21 -> 12
    np.testing.assert_array_equal(lpm.mutual_pairs(best_tgt, best_src, [10, 11, 12], [20, 21]), [[11, 20], [12, 21]])
    assert lpm.mutual_pairs(np.array([-1, 0, 1]), best_src, [10, 11, 12], [20, 21]).shape == (2, 2)
    with pytest.raises(ValueError, match="distinct"):
        lpm.mutual_pairs(best_tgt, best_src, [10, 10, 12], [20, 21])


# ---------------------------------------------------------------------------
# the registered model
# ---------------------------------------------------------------------------

def test_path_alignment_known_answer():
    """Two copies of a path, numbered in reverse, one seed at an end: hop profiles single out every node."""
    s = _kg("s", 5, [[0, 0, 1], [1, 0, 2], [2, 0, 3], [3, 0, 4]], 1)
    t = _kg("t", 5, [[4, 0, 3], [3, 0, 2], [2, 0, 1], [1, 0, 0]], 1)
    task = AlignmentTask("path", s, t, [[0, 4]], np.zeros((0, 2)), [[1, 3], [2, 2], [3, 1], [4, 0]])
    model = _fit(task, hops=4, anchor_dim=0, relation_weight=0.0)
    src, tgt = model.embeddings()
    np.testing.assert_array_equal((src[[1, 2, 3, 4]] @ tgt.T).argmax(axis=1), [3, 2, 1, 0])
    assert model.info["names_used"] is False and model.info["anchor_dim"] == 1


def test_model_aligns_a_relabelled_copy():
    task, (_, _, test) = _task()
    model = _fit(task, hops=2, anchor_dim=256)
    assert _hits1(model, test) >= 0.8
    s, t = model.embeddings()
    assert s.dtype == np.float32 and s.shape == (160, t.shape[1])
    np.testing.assert_allclose(np.linalg.norm(s, axis=1)[np.linalg.norm(s, axis=1) > 0], 1, rtol=1e-5)
    info = model.info
    assert info["names_used"] is False and info["hops"] == 2 and info["anchor_dim"] == 256
    assert info["seeds"] == {"kind": "train links", "count": 48} and info["iterative"] is False
    assert 0 < info["modalities"]["relations"] <= 320  # entities with a relation triple, both KGs
    assert info["relation_weight_choice"]["chosen_by"].startswith("Hits@1 (CSLS) on 16 valid links")


def test_rounds_add_mutual_pairs_once_and_never_read_test_links():
    task, (train, _, test) = _task(poisoned=True, train=0.1)
    model = _fit(task, hops=2, anchor_dim=256, rounds=3, relation_weight=0.0)
    anchors = model.anchors
    added = anchors[len(train):]
    np.testing.assert_array_equal(anchors[:len(train)], train)
    assert model.info["seeds_added_per_round"][0] > 0 and sum(model.info["seeds_added_per_round"]) == len(added)
    # no entity proposed twice, none already a train entity
    assert len(np.unique(anchors[:, 0])) == len(anchors) and len(np.unique(anchors[:, 1])) == len(anchors)
    task.armed = False
    gold = {tuple(x) for x in test.tolist()} | {tuple(x) for x in task.valid.tolist()}
    assert np.mean([tuple(p) in gold for p in added.tolist()]) > 0.8  # the proposals are mostly right
    plain = _fit(AlignmentTask("syn", task.source, task.target, train, task.valid, test), hops=2, anchor_dim=256,
                 relation_weight=0.0)
    assert _hits1(model, test) > _hits1(plain, test)


def test_same_embeddings_with_true_absent_or_poisoned_test_links():
    task, (train, valid, test) = _task()
    runs = []
    for t in (test, np.zeros((0, 2), np.int64), np.stack([test[:, 0], np.roll(test[:, 1], 3)], 1)):
        m = _fit(AlignmentTask("syn", task.source, task.target, train, valid, t), hops=2, anchor_dim=64, rounds=1)
        runs.append(m.embeddings())
    for s, t in runs[1:]:
        np.testing.assert_array_equal(s, runs[0][0])
        np.testing.assert_array_equal(t, runs[0][1])


def test_bad_settings_and_no_seeds_are_clear_errors():
    cls = MODELS.get("label-propagation")
    with pytest.raises(MmeaInputError, match="hops >= 1"):
        cls.Config(hops=0)
    with pytest.raises(MmeaInputError, match=r"relation weights must lie in \[0, 1\]"):
        cls.Config(relation_weights=(0.5, 2.0))
    task, _ = _task()
    empty = AlignmentTask("syn", task.source, task.target, np.zeros((0, 2)), task.valid, task.test)
    with pytest.raises(MmeaInputError, match="needs seed links"):
        _fit(empty)


def test_bench_ran_label_says_no_names():
    from mmea.pipelines.align_config import ran_label

    task, _ = _task()
    model = _fit(task, hops=2, anchor_dim=64, rounds=1)
    label = ran_label({"model": "label-propagation", "split": task.split_sizes(), "model_info": model.info})
    assert "no names" in label and "iterative" in label and "relations" in label and "not recorded" not in label


# ---------------------------------------------------------------------------
# the relational readout (LightEA's full form)
# ---------------------------------------------------------------------------

def test_relational_graph_views_count_triples_both_ways_with_the_degree_self_weight():
    triples = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 2], [3, 1, 3]])  # two relations between 0 and 1; a self triple
    g = lpm.RelationalGraph(triples, 4, 2)
    step = g.step.toarray()
    np.testing.assert_array_equal(step, step.T)
    assert step[0, 1] == 2 and step[1, 2] == 1 and step[0, 2] == 0  # directed triples i -> j, inverses included
    assert step[0, 0] == 4 and step[1, 1] == 6 and step[2, 2] == 2  # twice the triples touching the entity
    heads = g.rel_heads.toarray()  # (2R, N): relation r (and its inverse R + r) with its heads
    assert heads[0].tolist() == [1, 1, 0, 0] and heads[2].tolist() == [0, 1, 1, 0]  # r0 heads 0, 1; inverse: 1, 2
    tails = g.tail_rels.toarray()  # (N, 2R)
    assert tails[2].tolist() == [1, 0, 0, 0] and tails[0].tolist() == [0, 0, 1, 1]  # 2 <-r0- 1; 0 <-inverses- 1
    assert g.pairs.tolist() == [[0, 1], [1, 0], [1, 2], [2, 1], [3, 3]]
    k = g.pairs.tolist().index([0, 1])
    assert g.pair_rels.toarray()[k].tolist() == [1, 1, 0, 0]  # both relations lead from 0 to 1


def test_relational_readout_equals_the_direct_sum_over_neighbours_and_relations():
    rng = np.random.default_rng(3)
    n, R = 12, 3
    triples = np.stack([rng.integers(0, n, 40), rng.integers(0, R, 40), rng.integers(0, n, 40)], 1)
    g = lpm.RelationalGraph(triples, n, R)
    ent = rng.standard_normal((n, 6)).astype(np.float32)
    rel = rng.standard_normal((2 * R, 6)).astype(np.float32)
    rel_proj, ent_proj = lpm.readout_projections(6, 5, 2, seed=1)  # 5 heads x 2
    out = lpm.relational_readout(g, ent, rel, rel_proj, ent_proj, block_heads=2)
    ref = np.zeros((n, 10), np.float32)
    directed = {(int(h), int(r), int(t)) for h, r, t in triples} | {(int(t), R + int(r), int(h)) for h, r, t in triples}
    for i, r, j in directed:
        for head in range(5):
            cols = slice(2 * head, 2 * head + 2)
            ref[i, cols] += (rel[r] @ rel_proj[:, head]) * (ent[j] @ ent_proj[:, cols])
    np.testing.assert_allclose(out, lpm.l2_rows(ref), rtol=1e-4, atol=1e-5)
    for workers in (1, 3):  # the heads' threads write their own columns: the same bits for any number
        same = lpm.relational_readout(g, ent, rel, rel_proj, ent_proj, block_heads=2, workers=workers)
        assert np.array_equal(same, out)


def test_relational_readout_model_aligns_a_relabelled_copy_and_never_reads_test_links():
    task, (_, _, test) = _task(poisoned=True)
    model = _fit(task, readout="relational", hops=2, anchor_dim=256, heads=32, head_dim=8)
    task.armed = False
    assert _hits1(model, test) >= 0.8
    s, t = model.embeddings()
    assert s.shape == (160, 256) and t.shape == (160, 256) and s.dtype == np.float32
    info = model.info
    assert info["readout"] == {"readout": "relational", "depth": 2, "heads": 32, "head_dim": 8}
    assert "relation_weight_choice" not in info and info["relation_weight"] == 0.0 and info["names_used"] is False
    with pytest.raises(MmeaInputError, match="readout must be one of views, relational"):
        MODELS.get("label-propagation").Config(readout="tensor")


def test_overlap_rounds_refine_adds_only_pairs_of_unanchored_entities_outside_the_valid_links():
    """The search's mutual pairs join the overlap's anchors, except those touching an anchor or a valid link (the
    weight choice and the calibration must not see their own links as anchors); no test link is read."""
    task, (train, valid, test) = _task(poisoned=True)
    model = _fit(task, anchor_dim=16, overlap_weight=-1, overlap_rounds=1)
    block = model.search_sparse()
    assert block.rounds == 1 and block.refine is not None and not model.info["iterative"]
    a0 = len(model.anchors)
    pairs = np.array([[train[0, 0], test[0, 1]],  # source anchored: out
                      [valid[0, 0], test[1, 1]],  # a valid source: out
                      [test[2, 0], valid[0, 1]],  # a valid target: out
                      [test[3, 0], test[3, 1]], [test[4, 0], test[5, 1]]])  # kept
    new = block.refine(pairs)
    assert model.anchors[a0:].tolist() == pairs[3:].tolist() and new.src.shape[1] == a0 + 2
    assert new.weight in (0.1, 0.2, 0.3) and new.rounds == 1 and model.search_sparse() is new
    rec = model.info["overlap_rounds"]
    assert len(rec) == 1 and rec[0]["pairs"] == 5 and rec[0]["anchors_added"] == 2 and rec[0]["valid_hits@1"]
    assert model.info["iterative"] and model.info["anchors_final"] == a0 + 2
    assert model.info["overlap"]["columns"] == a0 + 2
