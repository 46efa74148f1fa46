"""Matchers on small cases with known answers (scores given directly as ``S @ I``)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mmea.errors import MmeaInputError
from mmea.search.matching import MATCHERS, Similarity, align, match


def on_scores(S: np.ndarray, matcher: str, **kw):
    """Match with cosine scores exactly ``S`` (source rows = S, targets = identity, no normalising)."""
    S = np.asarray(S, np.float32)
    return match(S, np.eye(S.shape[1], dtype=np.float32), matcher, method="cos", normalize=False, **kw)


def pairs(m) -> list[tuple[int, int]]:
    return sorted(map(tuple, m.pairs().tolist()))


def brute_greedy(S):
    order = sorted((-S[i, j], i, j) for i in range(S.shape[0]) for j in range(S.shape[1]))
    us, ut, out = set(), set(), []
    for _, i, j in order:
        if i not in us and j not in ut:
            us.add(i), ut.add(j), out.append((i, j))
    return sorted(out)


def quantized_scores(n, m, seed):
    return (np.random.default_rng(seed).integers(0, 5, (n, m)) / 4).astype(np.float32)


# a case where every matcher differs from plain argmax: both sources prefer target 0
HUB = [[0.9, 0.8], [0.95, 0.1]]


def test_registry_lists_all_matchers():
    assert MATCHERS.names() == ["greedy", "hungarian", "mutual", "none", "reciprocal", "sinkhorn"]
    with pytest.raises(MmeaInputError, match="valid choices"):
        MATCHERS.get("stable")


def test_none_takes_each_best_target():
    assert pairs(on_scores(HUB, "none")) == [(0, 0), (1, 0)]


def test_greedy_known_answer():
    m = on_scores(HUB, "greedy")
    assert pairs(m) == [(0, 1), (1, 0)]  # 0.95 first, then 0.8
    np.testing.assert_allclose(m.score, [0.8, 0.95])


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("k", [1, 3, 50])
def test_greedy_equals_brute_force_with_ties(seed, k):
    rng = np.random.default_rng(seed)
    n, m = rng.integers(2, 25, 2)
    S = quantized_scores(n, m, seed)
    assert pairs(on_scores(S, "greedy", k=k)) == brute_greedy(S)


def test_mutual_semantics():
    assert pairs(on_scores(HUB, "mutual")) == [(1, 0)]
    S = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.7], [0.1, 0.85, 0.3]])
    # 0<->0 mutual; 1 -> 1 but 1's best source is 2; 2 -> 1 and 1 -> 2: mutual
    assert pairs(on_scores(S, "mutual")) == [(0, 0), (2, 1)]


@pytest.mark.parametrize("seed", range(6))
def test_mutual_equals_brute_force(seed):
    S = quantized_scores(12, 9, seed)
    fwd = np.argmax(S, 1)  # numpy argmax: first maximum = lower index
    bwd = np.argmax(S, 0)
    expect = sorted((i, int(fwd[i])) for i in range(len(S)) if bwd[fwd[i]] == i)
    assert pairs(on_scores(S, "mutual")) == expect


def test_hungarian_known_answer():
    m = on_scores(HUB, "hungarian")
    assert pairs(m) == [(0, 1), (1, 0)]
    assert m.info["mode"] == "dense"


@pytest.mark.parametrize("seed", range(5))
def test_hungarian_is_optimal(seed):
    S = np.random.default_rng(seed).random((6, 6)).astype(np.float32)
    best = max(sum(S[i, p[i]] for i in range(6)) for p in itertools.permutations(range(6)))
    m = on_scores(S, "hungarian")
    assert float(m.score.sum()) == pytest.approx(best, abs=1e-5)
    sparse = on_scores(S, "hungarian", max_pairs=0, sparse_k=6)
    assert sparse.info["mode"] == "sparse"
    assert float(sparse.score.sum()) == pytest.approx(best, abs=1e-5)


def test_hungarian_rectangular_and_sparse_feasible():
    S = np.random.default_rng(1).random((5, 8)).astype(np.float32)
    m = on_scores(S, "hungarian")
    assert len(m) == 5 and len(set(m.tgt)) == 5
    sparse = on_scores(S, "hungarian", max_pairs=0, sparse_k=1)  # thin graph: dummy edges keep it feasible
    assert len(set(sparse.tgt.tolist())) == len(sparse)


def test_sinkhorn_resolves_the_hub():
    m = on_scores(HUB, "sinkhorn")
    assert pairs(m) == [(0, 1), (1, 0)]
    assert on_scores(HUB, "sinkhorn", max_pairs=0, sparse_k=2).info["mode"] == "sparse"
    assert pairs(on_scores(HUB, "sinkhorn", max_pairs=0, sparse_k=2)) == [(0, 1), (1, 0)]


def test_sinkhorn_recovers_a_noisy_permutation_dense_and_sparse():
    rng = np.random.default_rng(3)
    n = 60
    perm = rng.permutation(n)
    S = (0.3 * rng.random((n, n))).astype(np.float32)
    S[np.arange(n), perm] += 0.5
    dense = on_scores(S, "sinkhorn")
    sparse = on_scores(S, "sinkhorn", max_pairs=0, sparse_k=10)
    np.testing.assert_array_equal(dense.tgt, perm)
    np.testing.assert_array_equal(sparse.tgt, perm)
    with pytest.raises(MmeaInputError, match="temperature"):
        on_scores(S, "sinkhorn", temperature=0)


def test_dense_limit_is_a_clear_error():
    sim = Similarity(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32), method="cos")
    with pytest.raises(MmeaInputError, match="limit of 4 scores"):
        sim.dense(max_pairs=4)


def test_unknown_matcher_option():
    with pytest.raises(MmeaInputError, match="unknown options"):
        on_scores(HUB, "mutual", bogus=1)


@pytest.mark.parametrize("name", MATCHERS.names())
def test_every_matcher_on_embeddings(name):
    """Shared checks for every registered matcher: in range, one-to-one where promised, near-perfect here."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((80, 16)).astype(np.float32)
    y = x[::-1] + 0.05 * rng.standard_normal((80, 16)).astype(np.float32)
    m = match(x, y, name)
    assert m.matcher == name
    assert ((m.src >= 0) & (m.src < 80) & (m.tgt >= 0) & (m.tgt < 80)).all()
    if name not in ("none", "reciprocal"):  # the two rankings; the others are one-to-one
        assert len(set(m.tgt.tolist())) == len(m)
    assert np.mean(m.tgt == 79 - m.src) > 0.95


def test_align_bundles_search_reverse_and_matching():
    rng = np.random.default_rng(1)
    src = rng.standard_normal((30, 8)).astype(np.float32)
    tgt = np.vstack([src[:20] + 0.01, rng.standard_normal((10, 8))]).astype(np.float32)
    a = align(src, tgt, np.arange(20), np.arange(30), topk=3, matcher="greedy")
    assert a.result.ids.shape == (20, 3) and a.reverse_best.shape == (30,)
    np.testing.assert_array_equal(a.predicted_pairs(), np.stack([np.arange(20), np.arange(20)], 1))
    plain = align(src, tgt, np.arange(20), np.arange(30))
    assert plain.matching is None and plain.result.topk == 2  # at least 2 for the margin
    with pytest.raises(MmeaInputError, match="out of range"):
        align(src, tgt, [0, 99], np.arange(30))


def test_mutual_reads_the_reverse_best_the_search_found(monkeypatch):
    rng = np.random.default_rng(2)
    src, tgt = rng.standard_normal((25, 6)).astype(np.float32), rng.standard_normal((30, 6)).astype(np.float32)
    sim = Similarity(src, tgt)
    res = sim.topk(2)
    ref = MATCHERS.make("mutual").match(sim, result=res)  # no reverse_best: searches the reverse direction
    res.reverse_best = sim.reverse_topk(1).ids[:, 0]

    def no_second_search(self, k):
        raise AssertionError("the reverse direction was searched again")

    monkeypatch.setattr(Similarity, "reverse_topk", no_second_search)
    got = MATCHERS.make("mutual").match(sim, result=res)
    assert pairs(got) == pairs(ref) and len(got) > 0


def test_align_hands_its_search_to_the_matcher(monkeypatch):
    """One reverse search in align(): the mutual matcher gets the result (and its reverse best)."""
    rng = np.random.default_rng(3)
    src, tgt = rng.standard_normal((20, 6)).astype(np.float32), rng.standard_normal((25, 6)).astype(np.float32)
    calls = []
    orig = Similarity.reverse_topk
    monkeypatch.setattr(Similarity, "reverse_topk", lambda self, k: calls.append(k) or orig(self, k))
    a = align(src, tgt, np.arange(20), np.arange(25), matcher="mutual")
    assert calls == [1] and a.matching is not None
