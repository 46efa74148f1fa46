"""The second H@1 of ``mmea align``: Hits@1 of a one-to-one assignment of the test sources to the test
targets (``test.hits@1_one_to_one``), next to the ranking Hits@1, and its column in every bench table."""

from __future__ import annotations

import numpy as np
import pytest

from mmea.bench import with_companions
from mmea.evaluation import evaluate_embeddings
from mmea.pipelines.align import one_to_one_hits
from mmea.pipelines.align_config import BENCH, BENCH_COMPANIONS


def _unit(deg) -> np.ndarray:
    a = np.radians(np.asarray(deg, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], 1).astype(np.float32)  # (n, 2)


def _tiny():
    """Targets at 0, 60 and 180 degrees; sources at -20, 25 and 180 degrees; gold: source i -> target i.

    Source 1's nearest target is target 0 (cos 25 deg = 0.906 > cos 35 deg = 0.819), so the ranking
    gets 2 of 3; the assignment's best total puts source 0 on target 0 (0.940 + 0.819 > 0.174 + 0.906)
    and source 1 on target 1: 3 of 3.  The known difference is 1/3.
    """
    src, tgt = _unit([-20, 25, 180]), _unit([0, 60, 180])
    links = np.array([[0, 0], [1, 1], [2, 2]])
    return src, tgt, links


def test_one_to_one_beats_the_ranking_by_the_known_amount():
    src, tgt, links = _tiny()
    ranking = evaluate_embeddings(src, tgt, links, primary=("src->tgt", "cos"))["test"]["hits@1"]
    o = one_to_one_hits(src, tgt, links, links[:, 1], method="cos")
    assert ranking == pytest.approx(2 / 3)
    assert o["hits@1"] == pytest.approx(1.0)
    assert o["hits@1"] - ranking == pytest.approx(1 / 3)
    assert o["pairs"] == 3 and "hungarian" in o["solver"]


def test_one_to_one_can_lose_to_the_ranking():
    """Two sources whose gold target is the same (a one-to-many link) can hit it once only."""
    src, tgt = _unit([0, 5, 90]), _unit([0, 90])
    links = np.array([[0, 0], [1, 0], [2, 1]])
    ranking = evaluate_embeddings(src, tgt, links, primary=("src->tgt", "cos"))["test"]["hits@1"]
    o = one_to_one_hits(src, tgt, links, np.unique(links[:, 1]), method="cos")
    assert ranking == pytest.approx(1.0) and o["hits@1"] == pytest.approx(2 / 3)


def test_sparse_graph_equals_the_dense_optimum_on_a_random_task():
    """The sparse candidate graph (top-k of each side) finds the dense optimum when it holds it."""
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(0)
    src = rng.standard_normal((40, 8)).astype(np.float32)
    tgt = (src + 0.9 * rng.standard_normal((40, 8))).astype(np.float32)
    ids = np.arange(40)
    o = one_to_one_hits(src, tgt, np.stack([ids, ids], 1), ids, method="cos", sparse_k=40)
    s = src / np.linalg.norm(src, axis=1, keepdims=True)
    t = tgt / np.linalg.norm(tgt, axis=1, keepdims=True)
    r, c = linear_sum_assignment(s @ t.T, maximize=True)
    assert o["hits@1"] == pytest.approx(float(np.mean(c[np.argsort(r)] == ids)))


def test_every_align_bench_table_has_the_column():
    assert "test.hits@1_one_to_one" in BENCH.default_metrics
    cols = with_companions(["test.hits@1", "test.mrr"], BENCH_COMPANIONS)
    assert cols == ["test.hits@1", "test.hits@1_one_to_one", "test.mrr"]
    assert with_companions(["test.hits@1_one_to_one", "test.hits@1"], BENCH_COMPANIONS) == \
        ["test.hits@1_one_to_one", "test.hits@1"]  # listed already: not twice


@pytest.mark.parametrize("method", ["csls", "cos"])
def test_two_way_lists_equal_the_searches_of_both_directions(method):
    """The one pass gives each source's and each target's top-k as the two separate searches do."""
    from mmea.search.matching import two_way_topk
    from mmea.search.csls import csls_radius, csls_topk

    rng = np.random.default_rng(1)
    src = rng.standard_normal((70, 6)).astype(np.float32)
    tgt = rng.standard_normal((50, 6)).astype(np.float32)
    src /= np.linalg.norm(src, axis=1, keepdims=True)
    tgt /= np.linalg.norm(tgt, axis=1, keepdims=True)
    rs, rt = csls_radius(src, tgt, 5, normalize=False)
    fwd, bwd = two_way_topk(src, tgt, rs, rt, 7, method=method, csls_k=5)
    ref_f = csls_topk(src, tgt, 7, csls_k=5, method=method, normalize=False, radius=(rs, rt))
    ref_b = csls_topk(tgt, src, 7, csls_k=5, method=method, normalize=False, radius=(rt, rs))
    np.testing.assert_array_equal(fwd.ids, ref_f.ids)
    np.testing.assert_array_equal(bwd.ids, ref_b.ids)
    np.testing.assert_allclose(bwd.scores, ref_b.scores, atol=1e-6)
    np.testing.assert_allclose(fwd.scores, ref_f.scores, atol=1e-6)


def test_one_to_one_equals_the_sparse_hungarian_matcher():
    from mmea.search.matching import match

    rng = np.random.default_rng(1)
    src = rng.standard_normal((300, 16)).astype(np.float32)
    tgt = (src + 1.5 * rng.standard_normal((300, 16))).astype(np.float32)
    ids = np.arange(300)
    o = one_to_one_hits(src, tgt, np.stack([ids, ids], 1), ids, sparse_k=10)
    m = match(src, tgt, "hungarian", max_pairs=0, sparse_k=10)
    assigned = np.full(300, -1)
    assigned[m.src] = m.tgt
    assert o["hits@1"] == pytest.approx(float(np.mean(assigned == ids))) and o["pairs"] == len(m)


def test_align_reuses_the_search_radii_and_gets_the_same_assignment():
    """mmea align hands the one-pass search to the metric: its (the metrics') CSLS radii are reused, the
    result equals the one computed from scratch."""
    from types import SimpleNamespace

    from mmea.config import SearchConfig
    from mmea.evaluation import evaluation_rows
    from mmea.pipelines.align import one_to_one_metrics
    from mmea.search.onepass import search_once

    rng = np.random.default_rng(2)
    src = rng.standard_normal((120, 12)).astype(np.float32)
    tgt = (src + 1.2 * rng.standard_normal((120, 12))).astype(np.float32)
    perm = rng.permutation(120)
    test = np.stack([perm[:80], perm[:80]], 1)  # 80 test links, ids shared by both KGs
    task = SimpleNamespace(test=test)
    src_rows, tgt_rows, _, q_tgt = evaluation_rows(test, 120, 120, "test")
    found = search_once(src, tgt, test[:, 0], tgt_rows, gold=q_tgt, eval_src=src_rows, topk=2)
    from mmea.search.matching import Similarity

    sim = Similarity(src[src_rows], tgt[tgt_rows])  # the radii the metric computes from scratch
    np.testing.assert_allclose(found.r_src, sim.r_src, atol=1e-6)  # the pass's, in eval-source order
    np.testing.assert_allclose(found.r_tgt, sim.r_tgt, atol=1e-6)
    reused = one_to_one_metrics(task, src, tgt, SearchConfig(), "cpu", found)
    direct = one_to_one_metrics(task, src, tgt, SearchConfig(), "cpu")
    assert reused == direct and 0.2 < direct["hits@1_one_to_one"] < 1.0


def _reference_greedy(rows, cols, score):
    """Greedy by hand: best remaining edge first (score desc, row asc, column asc), both ends free."""
    used_r, used_c, out = set(), set(), []
    for i in sorted(range(len(rows)), key=lambda i: (-score[i], rows[i], cols[i])):
        if rows[i] not in used_r and cols[i] not in used_c:
            used_r.add(rows[i]), used_c.add(cols[i]), out.append((int(rows[i]), int(cols[i])))
    return sorted(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_edges_equals_the_sequential_greedy_ties_included(seed):
    from mmea.search.matching import greedy_edges

    rng = np.random.default_rng(seed)
    n, m, e = 60, 45, 400
    key = np.unique(rng.integers(0, n, e) * m + rng.integers(0, m, e))
    rows, cols = key // m, key % m
    score = rng.integers(0, 12, len(rows)).astype(np.float64)  # many ties
    r, c = greedy_edges(rows, cols, score, n, m)
    assert sorted(zip(r.tolist(), c.tolist())) == _reference_greedy(rows, cols, score)
    assert len(np.unique(r)) == len(r) and len(np.unique(c)) == len(c)
    assert greedy_edges(rows[:0], cols[:0], score[:0], n, m)[0].size == 0


def test_sinkhorn_solver_is_one_to_one_and_close_to_the_exact_one():
    """Above the exact size (here forced), Sinkhorn + greedy: every target once, H@1 near the Hungarian's."""
    rng = np.random.default_rng(3)
    src = rng.standard_normal((400, 16)).astype(np.float32)
    tgt = (src + 1.4 * rng.standard_normal((400, 16))).astype(np.float32)
    ids = np.arange(400)
    links = np.stack([ids, ids], 1)
    exact = one_to_one_hits(src, tgt, links, ids, sparse_k=20)
    sk = one_to_one_hits(src, tgt, links, ids, sparse_k=20, solver="sinkhorn")
    assert "hungarian" in exact["solver"] and "sinkhorn" in sk["solver"]
    assert sk["pairs"] <= 400 and abs(sk["hits@1"] - exact["hits@1"]) < 0.05 and sk["hits@1"] > 0.3


def test_auto_switches_to_sinkhorn_above_the_exact_size(monkeypatch):
    import mmea.search.matching as mt

    rng = np.random.default_rng(4)
    src = rng.standard_normal((50, 8)).astype(np.float32)
    ids = np.arange(50)
    monkeypatch.setattr(mt, "ONE_TO_ONE_EXACT_MAX", 49)
    assert "sinkhorn" in one_to_one_hits(src, src, np.stack([ids, ids], 1), ids)["solver"]
    monkeypatch.setattr(mt, "ONE_TO_ONE_EXACT_MAX", 50)
    assert "hungarian" in one_to_one_hits(src, src, np.stack([ids, ids], 1), ids)["solver"]
    with pytest.raises(Exception, match="valid choices"):
        one_to_one_hits(src, src, np.stack([ids, ids], 1), ids, solver="lp")
