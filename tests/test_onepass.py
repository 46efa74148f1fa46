"""Search once: the fused passes equal the separate computations they replace (ranks, top-k, calibration)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmea.calibration import score_valid_sources, valid_queries, valid_scores_from_top
from mmea.errors import MmeaInputError
from mmea.evaluation import evaluate_embeddings, evaluation_rows
from mmea.search.csls import csls_radius, rank_of_targets
from mmea.search.knn import l2_normalize
from mmea.search.matching import align
from mmea.search.onepass import align_once, search_once


def quantized(n: int, d: int, seed: int) -> np.ndarray:
    """Rows with four entries of +-1 (norm 2, so +-0.5 once normalised) and a few zero rows: every
    cosine is a multiple of 1/4, exact in float32 whatever the product's blocking, so ties are real ties."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, d), np.float32)
    for i in range(n):
        x[i, rng.choice(d, 4, replace=False)] = rng.choice([-1.0, 1.0], 4)
    x[rng.choice(n, max(1, n // 20), replace=False)] = 0  # zero rows: cosine 0 with everything
    return x


def gaussian(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def separate_ranks(src, tgt, links, candidates, csls_k, block_size=None):
    """The ranks as evaluate_embeddings computed them before the fused pass: radii, then one pass per direction."""
    src, tgt = l2_normalize(src), l2_normalize(tgt)
    src_rows, tgt_rows, q_src, q_tgt = evaluation_rows(links, len(src), len(tgt), candidates)
    S, T = src[src_rows], tgt[tgt_rows]
    r_src, r_tgt = csls_radius(S, T, csls_k, normalize=False, block_size=block_size)
    both = ("cos", "csls")
    return {"src->tgt": rank_of_targets(S[q_src], T, q_tgt, method=both, r_src=r_src[q_src], r_tgt=r_tgt,
                                        normalize=False, block_size=block_size),
            "tgt->src": rank_of_targets(T[q_tgt], S, q_src, method=both, r_src=r_tgt[q_tgt], r_tgt=r_src,
                                        normalize=False, block_size=block_size)}


def task_like(n_src, n_tgt, n_test, n_valid, seed, dup_src=0, dup_tgt=0):
    """Test and validation links over distinct entities; ``dup_*`` test sources / targets get a second link."""
    rng = np.random.default_rng(seed)
    s, t = rng.permutation(n_src), rng.permutation(n_tgt)
    test = np.stack([s[:n_test], t[:n_test]], 1)
    valid = np.stack([s[n_test:n_test + n_valid], t[n_test:n_test + n_valid]], 1)
    extra = [np.stack([test[:dup_src, 0], t[n_test + n_valid:n_test + n_valid + dup_src]], 1),
             np.stack([s[n_test + n_valid:n_test + n_valid + dup_tgt], test[-dup_tgt:, 1] if dup_tgt else
                       np.zeros(0, np.int64)], 1)]
    return np.concatenate([test] + extra), valid


def check_fused(src, tgt, test, valid, candidates, method, csls_k, topk=3, block_size=None, matcher="none",
                list_size=64):
    rows = test[:, 0]
    cand = np.unique(test[:, 1]) if candidates == "test" else np.arange(len(tgt))
    src_rows, tgt_rows, q_src, q_tgt = evaluation_rows(test, len(src), len(tgt), candidates)
    assert np.array_equal(tgt_rows, cand) and np.array_equal(src_rows[q_src], rows)
    vsrc, extra = valid_queries(valid, cand)
    al, found = align_once(src, tgt, rows, cand, topk=topk, method=method, csls_k=csls_k, matcher=matcher,
                           block_size=block_size, gold=q_tgt, eval_src=src_rows, valid_src=vsrc, extra=extra,
                           list_size=list_size)
    # the metrics' ranks
    ref = separate_ranks(src, tgt, test, candidates, csls_k, block_size)
    for d in ref:
        for mth in ref[d]:
            np.testing.assert_array_equal(found.ranks[d][mth], ref[d][mth], err_msg=f"{d}/{mth}")
    # the search: top-k ids and scores, radii, reverse best, matching
    old = align(src, tgt, rows, cand, topk=topk, method=method, csls_k=csls_k, matcher=matcher,
                block_size=block_size)
    new = al.result
    for f in ("ids", "cos", "csls", "r_src", "r_tgt", "reverse_best"):
        np.testing.assert_array_equal(getattr(new, f), getattr(old.result, f), err_msg=f)
    np.testing.assert_array_equal(al.predicted_pairs(), old.predicted_pairs())
    if matcher != "none":
        np.testing.assert_array_equal(al.matching.pairs(), old.matching.pairs())
        np.testing.assert_array_equal(al.matching.score, old.matching.score)
    # the calibration's validation scores
    ref_v = score_valid_sources(src, tgt, valid, rows, cand, method=method, csls_k=csls_k,
                                cand_r_tgt=old.result.r_tgt)
    got_v = valid_scores_from_top(valid, vsrc, np.concatenate([cand, extra]), found.valid_ids, found.valid_scores,
                                  method)
    for f in ("src", "top1", "top2", "score1", "score2", "correct"):
        np.testing.assert_array_equal(getattr(got_v, f), getattr(ref_v, f), err_msg=f)
    assert got_v.num_candidates == ref_v.num_candidates
    return found


@pytest.mark.parametrize("list_size", [1, 6, 64])
@pytest.mark.parametrize("candidates", ["test", "all"])
@pytest.mark.parametrize("method", ["csls", "cos"])
def test_fused_pass_equals_separate_computations_with_ties(candidates, method, list_size):
    """Short lists (1, 6) leave many rows and columns to the exact redo; long ones settle most from the lists."""
    src, tgt = quantized(90, 5, 1), quantized(80, 5, 2)  # few distinct directions: many exact ties
    test, valid = task_like(90, 80, 50, 12, seed=3)
    found = check_fused(src, tgt, test, valid, candidates, method, csls_k=4, block_size=7, list_size=list_size)
    assert found.stats["list_size"] == max(list_size, 4)


@pytest.mark.parametrize("list_size", [2, 64])
@pytest.mark.parametrize("candidates", ["test", "all"])
@pytest.mark.parametrize("method", ["csls", "cos"])
def test_fused_pass_with_duplicate_sources_and_targets(candidates, method, list_size):
    """A source with two gold targets and a target with two gold sources (MMKG has a few one-to-many links)."""
    src, tgt = quantized(70, 4, 4), quantized(75, 4, 5)
    test, valid = task_like(70, 75, 40, 8, seed=6, dup_src=3, dup_tgt=2)
    assert len(np.unique(test[:, 0])) < len(test) and len(np.unique(test[:, 1])) < len(test)
    check_fused(src, tgt, test, valid, candidates, method, csls_k=3, block_size=6, list_size=list_size)


@pytest.mark.parametrize("matcher", ["greedy", "mutual", "hungarian"])
def test_fused_pass_feeds_the_matchers(matcher):
    src, tgt = gaussian(60, 8, 7), gaussian(65, 8, 8)
    test, valid = task_like(60, 65, 45, 10, seed=9)
    check_fused(src, tgt, test, valid, "test", "csls", csls_k=5, matcher=matcher)


def test_fused_pass_random_default_blocks():
    """Random embeddings: the lists settle most ranks and top-k; the rest is redone, with the same result."""
    src, tgt = gaussian(400, 16, 10), gaussian(420, 16, 11)
    test, valid = task_like(400, 420, 300, 40, seed=12)
    for candidates in ("test", "all"):
        for list_size in (12, 64):
            found = check_fused(src, tgt, test, valid, candidates, "csls", csls_k=10, list_size=list_size)
            assert 0 < found.stats["redone_rows"] < 2 * len(test), found.stats


def test_fused_pass_without_gold():
    """Query sources with no gold target (no test links): the search and the calibration only."""
    src, tgt = quantized(50, 5, 13), quantized(45, 5, 14)
    rows, cand = np.arange(5, 50), np.arange(3, 45)
    valid = np.array([[0, 0], [1, 1], [2, 2], [3, 40]])
    vsrc, extra = valid_queries(valid, cand)
    al, found = align_once(src, tgt, rows, cand, topk=2, csls_k=3, block_size=4, valid_src=vsrc, extra=extra)
    assert found.ranks is None
    old = align(src, tgt, rows, cand, topk=2, csls_k=3, block_size=4)
    for f in ("ids", "cos", "csls", "r_src", "r_tgt", "reverse_best"):
        np.testing.assert_array_equal(getattr(al.result, f), getattr(old.result, f), err_msg=f)
    ref_v = score_valid_sources(src, tgt, valid, rows, cand, csls_k=3)
    got_v = valid_scores_from_top(valid, vsrc, np.concatenate([cand, extra]), found.valid_ids, found.valid_scores,
                                  "csls")
    np.testing.assert_array_equal(got_v.top1, ref_v.top1)
    np.testing.assert_array_equal(got_v.score2, ref_v.score2)


def test_evaluate_embeddings_keeps_its_ranks():
    src, tgt = quantized(60, 4, 15), quantized(60, 4, 16)
    test, _ = task_like(60, 60, 40, 0, seed=17, dup_src=2)
    for candidates in ("test", "all"):
        ev = evaluate_embeddings(src, tgt, test, candidates=candidates, csls_k=3, return_ranks=True, block_size=5)
        ref = separate_ranks(src, tgt, test, candidates, 3)
        np.testing.assert_array_equal(ev["ranks"], ref["src->tgt"]["csls"])


def test_search_once_rejects_bad_input():
    src, tgt = gaussian(5, 3, 0), gaussian(6, 3, 1)
    with pytest.raises(MmeaInputError, match="out of range"):
        search_once(src, tgt, [0, 9], [0, 1])
    with pytest.raises(MmeaInputError, match="eval sources"):
        search_once(src, tgt, [0, 1], [0, 1], eval_src=[1, 2])
    with pytest.raises(MmeaInputError, match="unique"):
        search_once(src, tgt, [0, 1], [0, 1], eval_src=[0, 1, 1])
    with pytest.raises(MmeaInputError, match="gold targets"):
        search_once(src, tgt, [0, 1], [0, 1], gold=[0])
    with pytest.raises(MmeaInputError, match="dimension"):
        search_once(src, gaussian(6, 4, 1), [0], [0])


# -- the calibration's isotonic fit, without importing scikit-learn -------------------

@pytest.mark.parametrize("seed", range(6))
def test_isotonic_fit_equals_sklearn(seed):
    from sklearn.isotonic import IsotonicRegression

    from mmea.calibration import _isotonic_fit

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    x = np.round(rng.standard_normal(n), int(rng.integers(1, 4)))  # rounded: many equal features (ties)
    x[: n // 10] = 1e-17 * rng.random(n // 10)  # values within float64 resolution of each other
    y = (rng.random(n) < 1 / (1 + np.exp(-3 * x))).astype(np.float64)
    w = rng.random(n) + 0.5 if seed % 2 else None
    ref = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(x, y, sample_weight=w).predict(x)
    np.testing.assert_array_equal(_isotonic_fit(x, y, w), ref)


def test_fit_calibration_does_not_import_sklearn():
    import subprocess
    import sys

    code = ("import sys, numpy as np; from mmea.calibration import fit_calibration; "
            "x = np.random.default_rng(0).standard_normal(300); "
            "fit_calibration(x, x + np.random.default_rng(1).standard_normal(300) > 0); "
            "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- the align job's stages -----------------------------------------------------------

def toy_task(n=150, d=6, seed=0):
    from mmea.data.graph import AlignmentTask, KnowledgeGraph

    def kg(name):
        ids = [f"{name}{i}" for i in range(n)]
        return KnowledgeGraph(name, ids, [f"http://{name}.example.org/{i}" for i in range(n)], ids)

    rng = np.random.default_rng(seed)
    links = np.stack([rng.permutation(n), rng.permutation(n)], 1)
    task = AlignmentTask("toy", kg("a"), kg("b"), links[:20], links[20:50], links[50:120])
    return task, quantized(n, d, seed + 1), quantized(n, d, seed + 2)


@pytest.mark.parametrize("candidates,match,method", [("test", "none", "csls"), ("all", "greedy", "csls"),
                                                     ("test", "mutual", "cos")])
def test_search_run_equals_the_separate_stages(tmp_path, candidates, match, method):
    """metrics, test ranks, alignment.csv and the calibration of the fused run = the old stage by stage."""
    from mmea.config import SearchConfig
    from mmea.evaluation import metrics_from_ranks
    from mmea.export import alignment_frame
    from mmea.pipelines.align import evaluate_run, query_rows, search_run

    task, src, tgt = toy_task()
    s = SearchConfig(method=method, candidates=candidates, match=match, topk=3)
    rows, cand, _ = query_rows(task)
    if candidates == "all":
        cand = np.arange(task.target.num_entities)
    al, ranks, scores = search_run(task, src, tgt, rows, cand, s, "cpu")
    ev = evaluate_run(tmp_path, task, None, src, tgt, ranks, s)
    src_rows, tgt_rows, _, _ = evaluation_rows(task.test, len(src), len(tgt), candidates)
    ref_ev = metrics_from_ranks(separate_ranks(src, tgt, task.test, candidates, s.csls_k), candidates=candidates,
                                csls_k=s.csls_k, primary=("src->tgt", method), return_ranks=True,
                                num_candidates={"src->tgt": len(tgt_rows), "tgt->src": len(src_rows)})
    np.testing.assert_array_equal(np.load(tmp_path / "test_ranks.npy"), ref_ev.pop("ranks"))
    assert ev == ref_ev
    old = align(src, tgt, rows, cand, topk=3, method=method, matcher=match, candidates=candidates)
    new_df, old_df = (alignment_frame(task, a, topk=s.topk, gold=task.test) for a in (al, old))
    assert new_df.equals(old_df)
    ref_v = score_valid_sources(src, tgt, task.valid, rows, cand, method=method, cand_r_tgt=old.result.r_tgt)
    for f in ("src", "top1", "top2", "score1", "score2", "correct"):
        np.testing.assert_array_equal(getattr(scores, f), getattr(ref_v, f), err_msg=f)


def test_search_run_with_a_faiss_index_keeps_the_separate_search(tmp_path):
    from mmea.config import SearchConfig
    from mmea.pipelines.align import calibrate_run, evaluate_run, query_rows, search_run

    task, src, tgt = toy_task()
    s = SearchConfig(index="flat")
    rows, cand, _ = query_rows(task)
    al, ranks, scores = search_run(task, src, tgt, rows, cand, s, "cpu")
    assert ranks is None and scores is None and al.result.index == "flat"
    fused = search_run(task, src, tgt, rows, cand, SearchConfig(), "cpu")
    np.testing.assert_array_equal(al.result.ids, fused[0].result.ids)
    assert evaluate_run(tmp_path, task, None, src, tgt, None, s) == \
        evaluate_run(tmp_path, task, None, src, tgt, fused[1], SearchConfig())
    out = calibrate_run(tmp_path, task, src, tgt, rows, cand, al, s, "cpu")
    assert out == calibrate_run(tmp_path, task, src, tgt, rows, cand, fused[0], s, "cpu", scores=fused[2])


@pytest.mark.parametrize("matcher", ["greedy", "mutual"])
def test_align_once_matchers_search_nothing_again(monkeypatch, matcher):
    from mmea.search.matching import Similarity

    src, tgt = gaussian(40, 6, 20), gaussian(45, 6, 21)

    def searched(self, k):
        raise AssertionError("the matcher searched again")

    monkeypatch.setattr(Similarity, "topk", searched)
    monkeypatch.setattr(Similarity, "reverse_topk", searched)
    al, _ = align_once(src, tgt, np.arange(40), np.arange(45), topk=1, matcher=matcher)
    assert al.matching is not None and al.result.topk == 2


def test_a_nan_in_a_row_the_pass_reads_is_named_and_others_are_not_read():
    src, tgt = gaussian(30, 4, 1), gaussian(30, 4, 2)
    rows, cand = np.arange(10), np.arange(12)
    tgt[7, 2] = np.nan
    with pytest.raises(MmeaInputError, match=r"target embeddings contain NaN or infinite values \(first at row 7\)"):
        search_once(src, tgt, rows, cand, topk=1)
    tgt[7, 2] = 0.0
    src[25, 0] = np.inf  # a source row no query, eval source or validation source uses
    assert search_once(src, tgt, rows, cand, topk=1).result.ids.shape == (10, 1)


def test_the_pass_hands_out_its_candidate_lists_in_eval_order():
    """OnePass.lists: each eval source's top cosines (positions into cand) and each candidate's top eval
    sources (positions into eval_src), equal to a direct computation."""
    src, tgt = gaussian(60, 8, 3), gaussian(50, 8, 4)
    test, _ = task_like(60, 50, 40, 0, seed=5)
    src_rows, tgt_rows, q_src, q_tgt = evaluation_rows(test, 60, 50, "test")
    found = search_once(src, tgt, test[:, 0], tgt_rows, gold=q_tgt, eval_src=src_rows, topk=1, list_size=7)
    S = l2_normalize(src)[src_rows] @ l2_normalize(tgt)[tgt_rows].T  # (p, m)
    L = found.lists
    assert L["src_ids"].shape == (len(src_rows), 10)  # K = max(list_size, csls_k)
    np.testing.assert_allclose(L["src_cos"], -np.sort(-S, axis=1)[:, :10], rtol=1e-6)
    np.testing.assert_allclose(np.take_along_axis(S, L["src_ids"], 1), L["src_cos"], rtol=1e-6)
    np.testing.assert_allclose(np.take_along_axis(S.T, L["tgt_ids"], 1), L["tgt_cos"], rtol=1e-6)
    np.testing.assert_allclose(L["tgt_cos"], -np.sort(-S.T, axis=1)[:, :10], rtol=1e-6)


@pytest.mark.parametrize("method", ["csls", "cos"])
def test_the_pass_keeps_each_candidates_best_score(method):
    """OnePass.column_best: each candidate's best score over the eval sources with the pass's radii, what the
    reciprocal ranking's first pass (column_best) computes; several blocks, a source linked twice."""
    from mmea.search.matching import Similarity
    from mmea.search.reciprocal import column_best

    src, tgt = gaussian(70, 6, 7), gaussian(55, 6, 8)
    test, _ = task_like(70, 55, 45, 0, seed=9)
    test = np.concatenate([test, test[:1]])  # a source linked twice: the eval sources stay unique
    src_rows, tgt_rows, q_src, q_tgt = evaluation_rows(test, 70, 55, "test")
    found = search_once(src, tgt, test[:, 0], tgt_rows, gold=q_tgt, eval_src=src_rows, topk=2, csls_k=4,
                        block_size=9, method=method)
    sim = Similarity(src[src_rows], tgt[tgt_rows], method=method, csls_k=4, radius=(found.r_src, found.r_tgt))
    assert found.column_best[method].shape == (len(tgt_rows),)
    np.testing.assert_allclose(found.column_best[method], column_best(sim), rtol=0, atol=1e-6)


def test_the_column_keys_settle_the_columns_a_short_list_cannot(monkeypatch):
    """A candidate column whose best source stands out is settled by the pass's column keys (its top sources by
    ``2 cos - r_src``), though its short cosine list, against the smallest radius of all sources (here loners far
    from every target), cannot settle it: far fewer columns are redone, with the reverse best and top-1 of the
    two-pass search (the seed expansion's search), and with every rank of the separate computations."""
    from mmea.search.csls import csls_topk
    from mmea.search.onepass import _Lists

    rng = np.random.default_rng(21)
    base = np.concatenate([gaussian(300, 16, 21), np.zeros((300, 8), np.float32)], 1)
    loners = np.concatenate([np.zeros((10, 16), np.float32), gaussian(10, 8, 25)], 1)  # cosine 0, radius 0
    src = np.concatenate([base + 0.3 * np.pad(gaussian(300, 16, 22), ((0, 0), (0, 8))), loners])
    tgt = np.concatenate([base + 0.3 * np.pad(gaussian(300, 16, 23), ((0, 0), (0, 8))),
                          np.pad(gaussian(120, 16, 24), ((0, 0), (0, 8)))])  # 120 unlinked targets
    ref = csls_topk(src, tgt, topk=1, reverse=True)
    redone = {}
    for how in ("keys", "lists only"):
        if how == "lists only":
            monkeypatch.setattr(_Lists, "column_bound", lambda self, listed, r_col: torch.full_like(r_col, torch.inf))
        found = search_once(src, tgt, np.arange(len(src)), np.arange(len(tgt)), topk=1, reverse=True, list_size=4)
        np.testing.assert_array_equal(found.result.reverse_best, ref.reverse_best)
        np.testing.assert_array_equal(found.result.ids, ref.ids)
        redone[how] = found.stats["redone_columns"]
        ids = rng.permutation(300)  # with gold links (the loners' among them): every rank as computed separately
        test = np.concatenate([np.stack([ids[:240], ids[:240]], 1), np.stack([np.arange(300, 310), ids[260:270]], 1)])
        check_fused(src, tgt, test, np.stack([ids[240:260], ids[240:260]], 1), "all", "csls", csls_k=10, list_size=4)
    assert redone["keys"] * 4 < redone["lists only"], redone
