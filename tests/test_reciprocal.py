"""The reciprocal preference ranking (``mmea.search.reciprocal``): keys ``2 s(u, v) - max_u' s(u', v)``, the
``reciprocal`` matcher and ``test_by_method["src->tgt/reciprocal"]`` of ``mmea align``."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from mmea.config import SearchConfig
from mmea.errors import MmeaInputError
from mmea.evaluation import evaluate_embeddings
from mmea.pipelines.align import reciprocal_metrics
from mmea.search.csls import csls_dense, dense_ranks
from mmea.search.matching import Similarity, match
from mmea.search.reciprocal import column_best, reciprocal_best, reciprocal_ranks


def _unit(deg) -> np.ndarray:
    a = np.radians(np.asarray(deg, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], 1).astype(np.float32)  # (n, 2)


def _hub():
    """Targets at 0 and 50 degrees, sources at 0 and 22 degrees; gold: source i -> target i.

    By cosine both sources take target 0 (cos 22 = 0.927 > cos 28 = 0.883): the ranking gets 1 of 2.
    Target 0's best source is source 0 (1.0), target 1's is source 1 (0.883), so source 1's keys are
    2 (0.927) - 1 = 0.854 for target 0 and 2 (0.883) - 0.883 = 0.883 for target 1: target 1 wins, 2 of 2.
    """
    return _unit([0, 22]), _unit([0, 50]), np.array([[0, 0], [1, 1]])


def test_keys_fix_the_hub_by_the_known_amount():
    src, tgt, links = _hub()
    cos = evaluate_embeddings(src, tgt, links, primary=("src->tgt", "cos"))["test"]["hits@1"]
    sim = Similarity(src, tgt, method="cos")
    ranks = reciprocal_ranks(sim, links[:, 1])
    assert cos == pytest.approx(0.5)
    np.testing.assert_array_equal(ranks, [1, 1])
    np.testing.assert_allclose(column_best(sim), [1.0, np.cos(np.radians(28))], atol=1e-6)


@pytest.mark.parametrize("method", ["csls", "cos"])
def test_ranks_and_best_equal_the_dense_reference(method):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 8)).astype(np.float32)
    y = rng.standard_normal((40, 8)).astype(np.float32)
    sim = Similarity(x, y, method=method, csls_k=5, block_size=7)  # several blocks of rows
    xs = x / np.linalg.norm(x, axis=1, keepdims=True)
    ys = y / np.linalg.norm(y, axis=1, keepdims=True)
    S = csls_dense(x, y, 5) if method == "csls" else xs @ ys.T
    K = 2 * S - S.max(0)[None, :]
    rows = np.concatenate([np.arange(50), [3, 3, 7]])  # a source linked three times
    gold = rng.integers(0, 40, len(rows))
    np.testing.assert_array_equal(reciprocal_ranks(sim, gold, rows), dense_ranks(K[rows], gold))
    ids, keys, scores = reciprocal_best(sim)
    np.testing.assert_array_equal(ids, K.argmax(1))
    np.testing.assert_allclose(keys, K.max(1), atol=1e-5)
    np.testing.assert_allclose(scores, S[np.arange(50), ids], atol=1e-5)


def test_bad_queries_are_named():
    sim = Similarity(_unit([0, 10]), _unit([0, 50]))
    with pytest.raises(MmeaInputError, match="gold target index out of range"):
        reciprocal_ranks(sim, [0, 2])
    with pytest.raises(MmeaInputError, match="query source row out of range"):
        reciprocal_ranks(sim, [0], [5])
    with pytest.raises(MmeaInputError, match="1 gold targets for 2 queries"):
        reciprocal_ranks(sim, [0])


def test_matcher_takes_each_sources_best_key():
    src, tgt, _ = _hub()
    m = match(src, tgt, "reciprocal", method="cos")
    assert m.matcher == "reciprocal"
    np.testing.assert_array_equal(m.tgt, [0, 1])
    np.testing.assert_allclose(m.score, [1.0, np.cos(np.radians(28))], atol=1e-6)  # the pairs' own scores


def _task():
    rng = np.random.default_rng(2)
    src = rng.standard_normal((120, 12)).astype(np.float32)
    tgt = (src + 1.2 * rng.standard_normal((120, 12))).astype(np.float32)
    perm = rng.permutation(120)
    return SimpleNamespace(test=np.stack([perm[:80], perm[:80]], 1)), src, tgt


def test_align_metric_reuses_the_pass_and_obeys_the_switch():
    from mmea.evaluation import evaluation_rows
    from mmea.search.onepass import search_once

    task, src, tgt = _task()
    src_rows, tgt_rows, _, q_tgt = evaluation_rows(task.test, 120, 120, "test")
    found = search_once(src, tgt, task.test[:, 0], tgt_rows, gold=q_tgt, eval_src=src_rows, topk=2)
    reused = reciprocal_metrics(task, src, tgt, SearchConfig(), "cpu", found)
    direct = reciprocal_metrics(task, src, tgt, SearchConfig(), "cpu")
    assert reused == pytest.approx(direct) and reused["n"] == 80 and 0.0 < reused["hits@1"] <= 1.0
    assert reciprocal_metrics(task, src, tgt, SearchConfig(reciprocal="off"), "cpu", found) is None


def _approx(list_size: int):
    from mmea.search.approx import approx_search

    task, src, tgt = _task()
    cand = np.unique(task.test[:, 1])
    found = approx_search(src, tgt, task.test[:, 0], cand, index="flat", gold=np.searchsorted(cand, task.test[:, 1]),
                          list_size=list_size)
    return task, src, tgt, cand, found


def test_full_lists_give_the_dense_reciprocal_ranking():
    """Every candidate listed (exact ``flat`` lists): the re-ranked lists are the dense ranking, best included."""
    from mmea.evaluation import evaluation_rows
    from mmea.search.reciprocal import listed_reciprocal, listed_reciprocal_ranks

    task, src, tgt, cand, found = _approx(list_size=120)
    src_rows, _, q_src, q_tgt = evaluation_rows(task.test, 120, 120, "test")
    fwd, bwd = found.lists["forward"], found.lists["reverse"]
    assert fwd.ids.shape[1] == len(cand)  # nothing left out
    sim = Similarity(src[src_rows], tgt[cand], method="csls", radius=(found.r_src, found.r_tgt))
    np.testing.assert_array_equal(listed_reciprocal_ranks(fwd, bwd, len(cand), q_src, q_tgt),
                                  reciprocal_ranks(sim, q_tgt, q_src))
    np.testing.assert_array_equal(listed_reciprocal(fwd, bwd, len(cand))[0][:, 0], reciprocal_best(sim)[0])


def test_short_lists_are_re_ranked_against_a_brute_force_reference():
    """Top-5 lists: each list re-sorted by ``2 s - c`` with ``c`` the best listed score of each target (both
    lists), computed here pair by pair; a gold target outside its list is not ranked (-1) and a miss."""
    from mmea.evaluation import evaluation_rows
    from mmea.search.reciprocal import listed_reciprocal_ranks

    task, src, tgt, cand, found = _approx(list_size=5)
    _, _, q_src, q_tgt = evaluation_rows(task.test, 120, 120, "test")
    fwd, bwd = found.lists["forward"], found.lists["reverse"]
    c = {}
    for lists, as_pair in ((fwd, lambda i, j: j), (bwd, lambda i, j: i)):
        for i, (ids, sc) in enumerate(zip(lists.ids, lists.scores)):
            for j, v in zip(ids, sc):
                if j >= 0:
                    t = as_pair(i, int(j))
                    c[t] = max(c.get(t, -np.inf), float(v))
    want = []
    for u, g in zip(q_src, q_tgt):
        keyed = sorted(((-(2 * float(v) - c[int(j)]), int(j)) for j, v in zip(fwd.ids[u], fwd.scores[u]) if j >= 0))
        order = [j for _, j in keyed]
        want.append(order.index(g) + 1 if g in order else -1)
    got = listed_reciprocal_ranks(fwd, bwd, len(cand), q_src, q_tgt)
    np.testing.assert_array_equal(got, want)
    assert (got == -1).any() and (got == 1).any()
    rec = reciprocal_metrics(task, src, tgt, SearchConfig(), "cpu", found)  # a list-based pass: from the lists
    assert rec["hits@1"] == pytest.approx(np.mean(got == 1)) and rec["mr"] is None
    assert "exact (flat) top-5 list re-ranked" in rec["ranks_from"] and rec["ranked"] == pytest.approx(np.mean(got > 0))
    assert reciprocal_metrics(task, src, tgt, SearchConfig(reciprocal="off"), "cpu", found) is None
    with pytest.raises(MmeaInputError, match="3 gold targets for 2 queries"):
        listed_reciprocal_ranks(fwd, bwd, len(cand), [0, 1], [0, 1, 2])


def test_auto_leaves_out_runs_above_the_size(monkeypatch):
    import mmea.search.reciprocal as rec

    task, src, tgt = _task()
    monkeypatch.setattr(rec, "RECIPROCAL_MAX_SCORES", 100)
    assert reciprocal_metrics(task, src, tgt, SearchConfig(), "cpu") is None
    dense = reciprocal_metrics(task, src, tgt, SearchConfig(reciprocal="on"), "cpu")
    assert dense is not None and "ranks_from" not in dense


def test_auto_above_the_size_re_ranks_the_exact_pass_lists(monkeypatch):
    """Above the size with ``auto``, an exact pass's cosine lists are re-ranked: with every target listed
    this is the dense ranking; with short lists a gold outside its list is a miss."""
    import mmea.search.reciprocal as rec
    from mmea.evaluation import evaluation_rows
    from mmea.search.onepass import search_once

    task, src, tgt = _task()
    src_rows, tgt_rows, _, q_tgt = evaluation_rows(task.test, 120, 120, "test")
    dense = reciprocal_metrics(task, src, tgt, SearchConfig(), "cpu")
    monkeypatch.setattr(rec, "RECIPROCAL_MAX_SCORES", 100)
    full = search_once(src, tgt, task.test[:, 0], tgt_rows, gold=q_tgt, eval_src=src_rows, topk=2, list_size=80)
    got = reciprocal_metrics(task, src, tgt, SearchConfig(), "cpu", full)
    assert "exact cosine top-80 list re-ranked" in got["ranks_from"] and got["ranked"] == 1.0
    for k in ("hits@1", "hits@5", "hits@10", "mrr"):
        assert got[k] == pytest.approx(dense[k], abs=1e-12)
    short = search_once(src, tgt, task.test[:, 0], tgt_rows, gold=q_tgt, eval_src=src_rows, topk=2, list_size=10)
    got = reciprocal_metrics(task, src, tgt, SearchConfig(), "cpu", short)
    assert "top-10 list" in got["ranks_from"] and got["ranked"] < 1.0 and got["hits@10"] <= got["ranked"]
    assert got["hits@1"] == pytest.approx(dense["hits@1"], abs=0.05)


@pytest.mark.parametrize("method", ["csls", "cos"])
def test_ranks_fed_block_by_block_equal_the_two_pass_ranks(method):
    """ReciprocalRanks: fed each block of another pass's scores (and the column maxima), the ranks of
    reciprocal_ranks; done only once every block with a query was fed."""
    from mmea.search.reciprocal import ReciprocalRanks

    rng = np.random.default_rng(4)
    x = rng.standard_normal((50, 8)).astype(np.float32)
    y = rng.standard_normal((40, 8)).astype(np.float32)
    sim = Similarity(x, y, method=method, csls_k=5, block_size=7)
    rows = np.concatenate([np.arange(50)[::-1], [3, 3, 7]])  # unordered, a source linked three times
    gold = rng.integers(0, 40, len(rows))
    fed = ReciprocalRanks(column_best(sim), gold, rows, sim.n)
    for a in range(0, 50, 11):  # blocks of another size than the similarity's
        assert not fed.done
        fed(a, min(a + 11, 50), sim.rows(np.arange(a, min(a + 11, 50))))
    assert fed.done
    np.testing.assert_array_equal(fed.ranks, reciprocal_ranks(sim, gold, rows))
    np.testing.assert_array_equal(reciprocal_ranks(sim, gold, rows, col=column_best(sim)), fed.ranks)
    with pytest.raises(MmeaInputError, match="gold target index out of range"):
        ReciprocalRanks(column_best(sim), np.array([40]), np.array([0]), sim.n)


def test_align_ranks_the_keys_in_the_one_to_one_pass(monkeypatch):
    """With the exact search pass, the one-to-one pass feeds the reciprocal ranking (shared_reciprocal) and the
    search pass's column maxima replace its first pass: no pass of its own, the same metrics."""
    import mmea.search.reciprocal as rec
    from mmea.evaluation import evaluation_rows, ranking_metrics
    from mmea.pipelines.align import one_to_one_metrics, shared_reciprocal
    from mmea.search.onepass import search_once

    task, src, tgt = _task()
    src_rows, tgt_rows, _, q_tgt = evaluation_rows(task.test, 120, 120, "test")
    found = search_once(src, tgt, task.test[:, 0], tgt_rows, gold=q_tgt, eval_src=src_rows, topk=2)
    direct = reciprocal_metrics(task, src, tgt, SearchConfig(), "cpu")  # two passes of its own
    monkeypatch.setattr(rec, "column_best", lambda *a, **k: pytest.fail("a column pass"))
    assert reciprocal_metrics(task, src, tgt, SearchConfig(), "cpu", found) == pytest.approx(direct)
    shared = shared_reciprocal(task, src, tgt, SearchConfig(), found)
    plain = one_to_one_metrics(task, src, tgt, SearchConfig(), "cpu", found)
    assert one_to_one_metrics(task, src, tgt, SearchConfig(), "cpu", found, shared) == plain
    assert shared.done and {**ranking_metrics(shared.ranks), "n": 80} == pytest.approx(direct)
    for off in (dict(reciprocal="off"), dict(one_to_one="off"), dict(candidates="all")):
        assert shared_reciprocal(task, src, tgt, SearchConfig(**off), found) is None
    assert shared_reciprocal(task, src, tgt, SearchConfig(), None) is None
