"""mmea.seeds alone: where seeds come from, how they grow, what they become (no model involved)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import scipy.sparse as sp

from mmea.search.csls import SearchResult
from mmea.seeds import (anchor_matrix, equal_name_pairs, exchange_triples, expand_seeds, expansion_threshold, hold_out,
                        mutual_nearest_pairs, name_key, normalize_rows, projected_anchor_hops, propagate_anchors,
                        propose_mutual_pairs, pseudo_seeds, random_projection, train_seeds, unaligned_rows)


class _Side:
    def __init__(self, n: int):
        self.num_entities = n


class LinkTask:
    """The parts of an :class:`~mmea.data.AlignmentTask` the seed rules may read, plus test links."""

    def __init__(self, train, valid, test=None, n=40, m=40):
        self.train, self.valid = np.asarray(train), np.asarray(valid)
        self.source, self.target = _Side(n), _Side(m)
        if test is not None:
            self.test = np.asarray(test)


class PoisonedTask(LinkTask):
    """A task whose test links explode when read: a seed rule that reads them fails the test."""

    @property
    def test(self):
        raise AssertionError("a seed rule read task.test")


def _embeddings(n=60, d=16, noise=0.15, seed=0):
    """A source and a noisy permuted copy: target ``perm[i]`` is source ``i``'s twin."""
    rng = np.random.default_rng(seed)
    src = normalize_rows(rng.standard_normal((n, d)))
    perm = rng.permutation(n)
    tgt = np.zeros_like(src)
    tgt[perm] = normalize_rows(src + noise * rng.standard_normal(src.shape))
    return src, tgt, perm


def _one_to_one(pairs: np.ndarray) -> bool:
    return len(np.unique(pairs[:, 0])) == len(pairs) == len(np.unique(pairs[:, 1]))


def _seed_run(task, src, tgt):
    """Every seed rule a model chains, from a task: train seeds, held-out share, free rows, expansion."""
    pool = train_seeds(task)
    select, kept = hold_out(pool, 0.2, np.random.default_rng(0), min_pairs=5)
    free_s, free_t = unaligned_rows(task.source.num_entities, task.target.num_entities, kept, task.valid)
    new = expand_seeds(src[free_s], tgt[free_t], free_s, free_t, min_cos=0.5)
    return pool, select, kept, free_s, free_t, new


def test_mutual_nearest_pairs_semantics_and_one_to_one():
    src = np.array([[1, 0], [0, 1], [0.9, 0.1]], dtype=np.float32)
    tgt = np.array([[1, 0], [0, 1]], dtype=np.float32)
    assert mutual_nearest_pairs(src, tgt, threshold=0.5).tolist() == [[0, 0], [1, 1]]
    assert mutual_nearest_pairs(src, tgt, threshold=1.5).shape == (0, 2)
    s, t, perm = _embeddings()
    pairs = mutual_nearest_pairs(s, t, threshold=0.0)
    assert _one_to_one(pairs) and len(pairs) > 50
    assert (perm[pairs[:, 0]] == pairs[:, 1]).mean() > 0.95


def test_pseudo_seeds_from_names_and_images():
    s, t, perm = _embeddings()
    assert np.array_equal(pseudo_seeds((s, t), 0.5), mutual_nearest_pairs(s, t, 0.5))
    # images where an entity has one: the cosine of [names ; image], names alone elsewhere
    rng = np.random.default_rng(3)
    img_s = normalize_rows(rng.standard_normal((len(s), 4)))
    img_t = np.zeros_like(img_s)
    img_t[perm] = img_s
    ms, mt = rng.random(len(s)) > 0.5, np.ones(len(t), bool)
    got = pseudo_seeds((s, t), 0.5, (img_s, img_t, ms, mt))
    vs = normalize_rows(np.concatenate([s, img_s * ms[:, None]], 1))
    vt = normalize_rows(np.concatenate([t, img_t * mt[:, None]], 1))
    assert np.array_equal(got, mutual_nearest_pairs(vs, vt, 0.5)) and _one_to_one(got)


def test_hold_out_draws_one_permutation_whatever_the_size():
    pairs = np.stack([np.arange(30), np.arange(30)], 1)
    a, b = np.random.default_rng(1), np.random.default_rng(1)
    held, kept = hold_out(pairs, 0.1, a)
    assert len(held) == 3 and len(kept) == 27
    assert sorted(np.concatenate([held, kept])[:, 0].tolist()) == list(range(30))
    b.permutation(30)
    assert a.random() == b.random()  # exactly one permutation was drawn
    few_held, few_kept = hold_out(pairs[:5], 0.5, np.random.default_rng(1))
    assert len(few_held) == 0 and len(few_kept) == 5


def _result(reverse_best=None):
    # sources 0..2 over targets 0..2: 0->1 mutual, 1->1 not mutual (target 1 prefers 0), 2->2 mutual but low
    z = np.zeros(3, np.float32)
    return SearchResult(ids=np.array([[1], [1], [2]]), cos=np.array([[0.9], [0.8], [0.3]], np.float32),
                        csls=np.array([[0.1], [0.2], [0.6]], np.float32), r_src=z, r_tgt=z,
                        reverse_best=reverse_best)


def test_propose_mutual_pairs_by_cosine_or_csls():
    res = _result(np.array([1, 0, 2]))
    src_rows, tgt_rows = np.array([10, 11, 12]), np.array([20, 21, 22])
    assert propose_mutual_pairs(res, src_rows, tgt_rows).tolist() == [[10, 21], [12, 22]]
    assert propose_mutual_pairs(res, src_rows, tgt_rows, min_score=0.5).tolist() == [[10, 21]]
    assert propose_mutual_pairs(res, src_rows, tgt_rows, min_score=0.5, score="csls").tolist() == [[12, 22]]
    with pytest.raises(ValueError, match="reverse=True"):
        propose_mutual_pairs(_result(None), src_rows, tgt_rows)


def test_expansion_never_proposes_an_entity_twice_nor_a_used_one():
    s, t, perm = _embeddings(n=80)
    pool = np.stack([np.arange(20), perm[:20]], 1)
    select = np.stack([np.arange(20, 30), perm[20:30]], 1)
    free_s, free_t = unaligned_rows(80, 80, pool, select)
    assert not set(free_s) & set(range(30)) and not set(free_t) & set(perm[:30])
    new = expand_seeds(s[free_s], t[free_t], free_s, free_t, min_cos=0.0)
    assert len(new) > 30 and _one_to_one(np.concatenate([pool, select, new]))
    assert (perm[new[:, 0]] == new[:, 1]).mean() > 0.9
    assert expand_seeds(s[free_s], t[free_t], free_s, free_t, min_cos=1.01).shape == (0, 2)


@pytest.mark.parametrize("ties", [False, True])
def test_expansion_from_one_pass_equals_the_two_pass_search(monkeypatch, ties):
    """expand_seeds settles the mutual pairs from one pass (search_once); the pairs are those of csls_topk's two
    passes, also with exact ties (quantised rows) and short lists that leave rows and columns to the redo."""
    import mmea.search.onepass as onepass
    from mmea.search.csls import csls_topk

    rng = np.random.default_rng(5)
    if ties:  # cosines that are multiples of 1/4: real ties, broken by the lower index in both searches
        s, t = (np.zeros((n, 6), np.float32) for n in (70, 90))
        for x in (s, t):
            for row in x:
                row[rng.choice(6, 4, replace=False)] = rng.choice([-1.0, 1.0], 4)
    else:  # correlated rows, more targets than sources
        base = rng.standard_normal((90, 12)).astype(np.float32)
        s = base[:70] + 0.5 * rng.standard_normal((70, 12)).astype(np.float32)
        t = base + 0.5 * rng.standard_normal((90, 12)).astype(np.float32)
    free_s, free_t = np.arange(100, 170), np.arange(200, 290)
    ref = propose_mutual_pairs(csls_topk(s, t, topk=1, reverse=True), free_s, free_t, min_score=0.1, score="cos")
    assert len(ref) > 10
    search_once = onepass.search_once
    for size in (3, 64):
        monkeypatch.setattr(onepass, "search_once", functools.partial(search_once, list_size=size))
        assert np.array_equal(expand_seeds(s, t, free_s, free_t, 0.1), ref)


def test_expansion_threshold_is_the_quantile_of_held_out_pairs():
    assert expansion_threshold(np.array([0.2, 0.4, 0.6, 0.8, 1.0]), 0.5) == pytest.approx(0.6)
    assert expansion_threshold(np.zeros(0), 0.5) == 0.0


def test_seed_rules_never_read_test_links():
    """A task whose test links raise when read: every rule runs; absent, true or poisoned test links change nothing."""
    s, t, perm = _embeddings(n=40)
    links = np.stack([np.arange(40), perm], 1)
    trap = _seed_run(PoisonedTask(links[:10], links[10:15]), s, t)
    assert len(trap[-1]) > 0 and _one_to_one(np.concatenate([trap[2], trap[-1]]))
    poisoned = np.stack([links[15:, 0], np.roll(links[15:, 1], 3)], 1)
    for test in (np.zeros((0, 2), np.int64), links[15:], poisoned):
        got = _seed_run(LinkTask(links[:10], links[10:15], test), s, t)
        assert all(np.array_equal(x, y) for x, y in zip(trap, got))


def test_exchange_triples_swaps_one_end_at_a_time():
    # KG1: 0 -r0-> 1, KG2: 3 -r1-> 4; link (0, 3): 3 -r0-> 1 and 0 -r1-> 4 are new
    triples = np.array([[0, 0, 1], [3, 1, 4]])
    extra = exchange_triples(triples, np.array([[0, 3]]))
    assert extra.tolist() == [[0, 1, 4], [3, 0, 1]]
    assert len(exchange_triples(np.concatenate([triples, extra]), np.array([[0, 3]]))) == 0
    assert exchange_triples(triples, np.zeros((0, 2))).shape == (0, 3)


def test_anchor_matrices_one_hot_projected_and_propagated():
    assert anchor_matrix(np.array([2, 0]), 3).toarray().tolist() == [[0, 1], [0, 0], [1, 0]]
    x = sp.random(5, 30, density=0.3, random_state=0, format="csr", dtype=np.float32)
    y = random_projection(x, 8, seed=4)
    assert y.shape == (5, 8) and np.allclose(np.linalg.norm(y[np.diff(x.indptr) > 0], axis=1), 1, atol=1e-5)
    assert np.array_equal(y, random_projection(x, 8, seed=4))
    # the hops equal the explicit loop (P^h S, projected with seed first_seed + h - 1)
    adj = sp.csr_matrix(np.array([[0, 1, 0], [0.5, 0, 0.5], [0, 1, 0]], dtype=np.float32))
    hops = projected_anchor_hops(adj, np.array([0, 2]), 2, 4, first_seed=7)
    a = anchor_matrix(np.array([0, 2]), 3)
    for h in range(2):
        a = (adj @ a).tocsr()
        assert np.array_equal(hops[h], random_projection(a, 4, 7 + h))
    # one-hot anchors through P with a given projection R: entity 1 sees anchors 0 and 2
    R = np.eye(2, dtype=np.float32)
    h1, h2 = propagate_anchors(adj, np.array([0, 2]), R, 2)
    assert np.allclose(h1[1], [2 ** -0.5, 2 ** -0.5]) and np.allclose(h1[0], 0) and np.allclose(h2[0], h1[1])


def test_name_keys_fold_case_accents_punctuation_and_token_order():
    assert name_key("Smith, John") == name_key("john  SMITH") == "john smith"
    assert name_key("Zoë Saldaña") == "saldana zoe"
    assert name_key("北京市") == "北京市" and name_key("") == name_key(None) == ""
    assert name_key("a_b") == "a b"


def test_equal_name_pairs_unique_on_both_sides_excluded_ids_dropped():
    src = ["Anna Berg", "Carl", "carl", "Dora", "", "Emil Frost", "Gus"]
    tgt = ["berg anna", "Carl", "Dora", "Dora", "", "Frost, Emil", "Hal"]
    # Carl twice on the source side, Dora twice on the target side, empty names: nothing proposed for them
    np.testing.assert_array_equal(equal_name_pairs(src, tgt), [[0, 0], [5, 5]])
    np.testing.assert_array_equal(equal_name_pairs(src, tgt, exclude_src=[0]), [[5, 5]])
    np.testing.assert_array_equal(equal_name_pairs(src, tgt, exclude_tgt=[5]), [[0, 0]])
    assert equal_name_pairs([], []).shape == (0, 2)
    pairs = equal_name_pairs([f"n{i}" for i in range(50)], [f"n{49 - i}" for i in range(50)])
    np.testing.assert_array_equal(pairs, np.stack([np.arange(50), 49 - np.arange(50)], 1))  # one-to-one
