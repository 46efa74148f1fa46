"""Search: knn, CSLS and ranks against dense references; ranking metrics by hand."""

from __future__ import annotations

import numpy as np
import pytest

from mmea.errors import MmeaInputError
from mmea.evaluation import evaluate_embeddings, ranking_metrics
from mmea.search.csls import (csls_dense, csls_radius, csls_topk, dense_ranks, dense_topk, mean_topk_np,
                              rank_of_targets)
from mmea.search.knn import APPROX_PAIRS, INDEXES, TINY_PAIRS, faiss_has_gpu, knn, l2_normalize, resolve_index


def quantized(n: int, d: int, seed: int) -> np.ndarray:
    """Entries in {-2..2}/8: every dot product is exact in float32, so ties are real ties."""
    return (np.random.default_rng(seed).integers(-2, 3, (n, d)) / 8).astype(np.float32)


def gaussian(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


# -- knn ----------------------------------------------------------------------------

def test_l2_normalize():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [-1.0, 0.0]])
    y = l2_normalize(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [[0.6, 0.8], [0, 0], [-1, 0]], rtol=1e-6)
    with pytest.raises(MmeaInputError, match="NaN"):
        l2_normalize(np.array([[1.0, np.nan]]))
    with pytest.raises(MmeaInputError, match="2-d"):
        l2_normalize(np.zeros(3))


@pytest.mark.parametrize("index", ["torch", "flat"])
@pytest.mark.parametrize("n,m,d,k", [(40, 60, 6, 5), (130, 90, 4, 12), (17, 5, 3, 5)])
@pytest.mark.parametrize("block_size", [7, None])
def test_knn_equals_dense_reference_with_ties(index, n, m, d, k, block_size):
    q, b = quantized(n, d, 1), quantized(m, d, 2)
    scores, ids = knn(q, b, k, index=index, normalize=False, block_size=block_size)
    ref_s, ref_i = dense_topk(q @ b.T, k)
    np.testing.assert_array_equal(ids, ref_i)
    np.testing.assert_array_equal(scores, ref_s)


def test_knn_ties_go_to_lower_index():
    q = np.array([[1.0, 0.0]], np.float32)
    b = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], np.float32)
    for index in ("torch", "flat"):
        s, i = knn(q, b, 2, index=index)
        assert i.tolist() == [[1, 2]]
        np.testing.assert_allclose(s, [[1.0, 1.0]])


def test_knn_normalised_random_matches_reference():
    q, b = gaussian(150, 24, 3), gaussian(300, 24, 4)
    s, i = knn(q, b, 10, index="flat")
    ref = l2_normalize(q).astype(np.float64) @ l2_normalize(b).astype(np.float64).T
    rs, ri = dense_topk(ref, 10)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_allclose(s, rs, atol=1e-5)
    s2, i2 = knn(q, b, 10, index="torch", block_size=32)
    np.testing.assert_array_equal(i2, ri)


def test_knn_caps_k_and_checks_dims():
    s, i = knn(gaussian(3, 4, 0), gaussian(2, 4, 1), 5)
    assert s.shape == (3, 2) and i.shape == (3, 2)
    with pytest.raises(MmeaInputError, match="dimension"):
        knn(gaussian(3, 4, 0), gaussian(2, 5, 1), 1)
    with pytest.raises(MmeaInputError, match="valid choices"):
        knn(gaussian(3, 4, 0), gaussian(2, 4, 1), 1, index="nope")


def clustered(n: int, d: int, seed: int, centers: int = 50) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, d)).astype(np.float32)
    a = rng.integers(0, centers, n)
    x = c[a] + 0.3 * rng.standard_normal((n, d)).astype(np.float32)
    y = c[a] + 0.3 * rng.standard_normal((n, d)).astype(np.float32)
    return x, y


@pytest.mark.parametrize("index,params", [("ivf", {"nlist": 32, "nprobe": 8}),
                                          ("hnsw", {"hnsw_m": 16, "ef_search": 64})])
def test_approximate_indexes_recall(index, params):
    x, y = clustered(3000, 32, 5)
    s, i = knn(x[:300], y, 10, index=index, **params)
    _, ref = knn(x[:300], y, 10, index="flat")
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i.tolist(), ref.tolist())])
    assert recall > 0.9
    assert (np.diff(s, axis=1) <= 0).all()  # sorted best first


def test_auto_index_choice():
    assert resolve_index("auto", 10, 10) == "torch"
    assert resolve_index("auto", 10_000, 10_000) == "flat"
    assert resolve_index("auto", 1_000_000, 1_000_000) == "ivf"
    assert TINY_PAIRS < APPROX_PAIRS
    assert {"torch", "flat", "ivf", "hnsw"} <= set(INDEXES.names())


# -- CSLS --------------------------------------------------------------------------

def test_csls_hand_computed():
    # cos = [[1, 0], [0.6, 0.8]] with unit vectors; k = 1
    src = np.array([[1.0, 0.0], [0.6, 0.8]], np.float32)
    tgt = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    D = csls_dense(src, tgt, k=1)
    # r_src = [1, 0.8]; r_tgt = [1, 0.8]; csls = 2 cos - r_src - r_tgt
    np.testing.assert_allclose(D, [[0.0, -1.8], [-0.6, -0.0]], atol=1e-6)
    res = csls_topk(src, tgt, 2, csls_k=1)
    np.testing.assert_allclose(res.r_src, [1.0, 0.8], atol=1e-6)
    np.testing.assert_allclose(res.r_tgt, [1.0, 0.8], atol=1e-6)
    assert res.ids.tolist() == [[0, 1], [1, 0]]


def _reference(src, tgt, k, topk, method):
    S = src @ tgt.T
    C = csls_dense(src, tgt, k, normalize=False)
    key = C if method == "csls" else S
    _, ids = dense_topk(key, topk)
    return ids, np.take_along_axis(C, ids, 1), np.take_along_axis(S, ids, 1), C


@pytest.mark.parametrize("index", ["torch", "flat"])
@pytest.mark.parametrize("n,m,d", [(37, 53, 5), (120, 80, 4), (200, 260, 8)])
@pytest.mark.parametrize("csls_k,topk,rerank_k", [(1, 1, None), (3, 5, 5), (10, 10, None), (10, 4, 4)])
def test_csls_topk_equals_dense_reference(index, n, m, d, csls_k, topk, rerank_k):
    src, tgt = quantized(n, d, n), quantized(m, d, m + 1)
    ref_ids, ref_csls, ref_cos, _ = _reference(src, tgt, csls_k, topk, "csls")
    res = csls_topk(src, tgt, topk, csls_k=csls_k, index=index, normalize=False, block_size=11,
                    rerank_k=rerank_k)
    np.testing.assert_array_equal(res.ids, ref_ids)
    np.testing.assert_array_equal(res.csls, ref_csls)
    np.testing.assert_array_equal(res.cos, ref_cos)
    S = src @ tgt.T
    np.testing.assert_array_equal(res.r_src, mean_topk_np(-np.sort(-S, 1)[:, :csls_k], 1))
    np.testing.assert_array_equal(res.r_tgt, mean_topk_np(-np.sort(-S, 0)[:csls_k], 0))


def test_csls_topk_by_cosine_keeps_csls_alongside():
    src, tgt = quantized(60, 5, 1), quantized(70, 5, 2)
    ref_ids, ref_csls, ref_cos, _ = _reference(src, tgt, 10, 7, "cos")
    res = csls_topk(src, tgt, 7, method="cos", normalize=False)
    np.testing.assert_array_equal(res.ids, ref_ids)
    np.testing.assert_array_equal(res.csls, ref_csls)
    np.testing.assert_array_equal(res.scores, ref_cos)


def test_csls_topk_normalised_random_data():
    src, tgt = gaussian(250, 16, 7), gaussian(180, 16, 8)
    res = csls_topk(src, tgt, 10, block_size=64)
    s, t = l2_normalize(src).astype(np.float64), l2_normalize(tgt).astype(np.float64)
    C = csls_dense(s, t, 10, normalize=False)
    vals, ids = dense_topk(C, 10)
    np.testing.assert_array_equal(res.ids, ids)
    np.testing.assert_allclose(res.csls, vals, atol=1e-5)
    flat = csls_topk(src, tgt, 10, index="flat")
    np.testing.assert_array_equal(flat.ids, ids)


def test_csls_rescoring_finds_hubless_targets():
    # a target far from everything has a tiny r_tgt: CSLS ranks it above closer hubs
    rng = np.random.default_rng(0)
    hub = rng.standard_normal(8)
    src = hub + 0.1 * rng.standard_normal((30, 8))
    tgt = np.vstack([hub + 0.1 * rng.standard_normal((40, 8)), -hub + rng.standard_normal((5, 8))])
    res = csls_topk(src, tgt, 3, csls_k=5, rerank_k=3)
    C = csls_dense(src, tgt, 5)
    _, ids = dense_topk(C, 3)
    np.testing.assert_array_equal(res.ids, ids)


@pytest.mark.parametrize("ascending", [False, True])
def test_column_topk_merge_equals_full_topk(ascending):
    import torch

    from mmea.search.csls import _merge_column_topk

    S = torch.from_numpy(gaussian(300, 40, 11))
    if ascending:  # every block beats the running values: the dense fallback
        S = torch.sort(S, dim=0).values
    col = None
    for a in range(0, 300, 23):
        col = _merge_column_topk(col, S[a:a + 23], 5)
    torch.testing.assert_close(col, torch.topk(S, 5, dim=0).values, rtol=0, atol=0)


def test_csls_radius_matches_both_paths():
    src, tgt = quantized(50, 6, 3), quantized(70, 6, 4)
    a = csls_radius(src, tgt, 4, normalize=False, index="torch", block_size=9)
    b = csls_radius(src, tgt, 4, normalize=False, index="flat")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_csls_approximate_index_runs():
    x, y = clustered(2000, 16, 9)
    res = csls_topk(x, y, 5, index="ivf", nlist=16, nprobe=8)
    assert not res.exact and res.index == "ivf"
    exact = csls_topk(x, y, 5)
    assert np.mean(res.ids[:, 0] == exact.ids[:, 0]) > 0.9


@pytest.mark.parametrize("n,m", [(40, 55), (100, 30)])
def test_rank_of_targets_equals_dense_ranks(n, m):
    src, tgt = quantized(n, 4, 5), quantized(m, 4, 6)
    gold = np.random.default_rng(0).integers(0, m, n)
    r = rank_of_targets(src, tgt, gold, method=("cos", "csls"), csls_k=3, normalize=False, block_size=6)
    np.testing.assert_array_equal(r["cos"], dense_ranks(src @ tgt.T, gold))
    np.testing.assert_array_equal(r["csls"], dense_ranks(csls_dense(src, tgt, 3, normalize=False), gold))
    # agrees with the position in csls_topk's list
    res = csls_topk(src, tgt, m, csls_k=3, normalize=False)
    pos = np.array([list(row).index(g) + 1 for row, g in zip(res.ids, gold)])
    np.testing.assert_array_equal(r["csls"], pos)


def test_rank_tie_rule():
    src = np.array([[1.0, 0.0]], np.float32)
    tgt = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], np.float32)
    ranks = [int(rank_of_targets(src, tgt, [g], method="cos")[0]) for g in range(4)]
    assert ranks == [1, 2, 4, 3]


def test_rank_of_targets_rejects_bad_gold():
    with pytest.raises(MmeaInputError, match="out of range"):
        rank_of_targets(gaussian(2, 3, 0), gaussian(3, 3, 1), [0, 3], method="cos")


# -- metrics ----------------------------------------------------------------------

def test_ranking_metrics_hand_computed():
    m = ranking_metrics([1, 2, 4, 20], ks=(1, 5, 10))
    assert m == {"hits@1": 0.25, "hits@5": 0.75, "hits@10": 0.75, "mr": 6.75, "mrr": pytest.approx(0.45)}
    with pytest.raises(MmeaInputError):
        ranking_metrics([])
    with pytest.raises(MmeaInputError):
        ranking_metrics([0, 1])


def test_evaluate_embeddings_hand_case():
    # 4 test links; source 3 points at target 2's direction: rank 2 for cos, by ties of index
    tgt = np.eye(4, dtype=np.float32)
    src = np.eye(4, dtype=np.float32)
    src[3] = [0, 0, 1, 0.5]
    links = np.array([[0, 0], [1, 1], [2, 2], [3, 3]])
    out = evaluate_embeddings(src, tgt, links, csls_k=1)
    cos = out["test_by_method"]["src->tgt/cos"]
    assert cos["hits@1"] == 0.75 and cos["mr"] == 1.25 and cos["mrr"] == pytest.approx(0.875)
    assert set(out["test_by_method"]) == {"src->tgt/cos", "src->tgt/csls", "tgt->src/cos", "tgt->src/csls"}
    assert out["primary"] == "src->tgt/csls" and out["test"]["method"] == "csls"
    assert out["test"]["hits@1"] == out["test_by_method"]["src->tgt/csls"]["hits@1"]
    # tgt->src: target 2 prefers source 2 (1.0 > 0.894); target 3 has source 3 best
    t2s = out["test_by_method"]["tgt->src/cos"]
    assert t2s["hits@1"] == 1.0
    assert out["candidates"] == "test" and out["num_candidates"] == {"src->tgt": 4, "tgt->src": 4}


def test_evaluate_embeddings_candidate_sets():
    src, tgt = gaussian(50, 8, 1), gaussian(60, 8, 2)
    links = np.stack([np.arange(10), np.arange(10) + 5], 1)
    test = evaluate_embeddings(src, tgt, links, candidates="test", primary="tgt->src/cos")
    allc = evaluate_embeddings(src, tgt, links, candidates="all")
    assert test["num_candidates"] == {"src->tgt": 10, "tgt->src": 10}
    assert allc["num_candidates"] == {"src->tgt": 60, "tgt->src": 50}
    assert test["test"]["direction"] == "tgt->src" and test["test"]["method"] == "cos"
    # more candidates can only push gold cosine ranks down
    assert allc["test_by_method"]["src->tgt/cos"]["mr"] >= test["test_by_method"]["src->tgt/cos"]["mr"]
    with pytest.raises(MmeaInputError, match="candidate"):
        evaluate_embeddings(src, tgt, links, candidates="every")
    with pytest.raises(MmeaInputError, match="out of range"):
        evaluate_embeddings(src, tgt, np.array([[0, 99]]))


# -- GPU ----------------------------------------------------------------------------

def _cuda() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not (_cuda() and faiss_has_gpu()), reason="needs CUDA and faiss-gpu")
def test_gpu_faiss_matches_cpu():
    q, b = gaussian(500, 32, 1), gaussian(800, 32, 2)
    s_gpu, i_gpu = knn(q, b, 10, index="flat", device="cuda")
    s_cpu, i_cpu = knn(q, b, 10, index="flat")
    np.testing.assert_allclose(s_gpu, s_cpu, atol=1e-5)
    assert (i_gpu == i_cpu).mean() > 0.99
    res = csls_topk(q, b, 10, index="flat", device="cuda")
    assert (res.ids == csls_topk(q, b, 10).ids).mean() > 0.99


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs CUDA")
def test_gpu_torch_path_matches_cpu():
    src, tgt = quantized(300, 8, 1), quantized(400, 8, 2)
    gpu = csls_topk(src, tgt, 10, normalize=False, device="cuda", index="torch")
    cpu = csls_topk(src, tgt, 10, normalize=False, index="torch")
    np.testing.assert_array_equal(gpu.ids, cpu.ids)
    np.testing.assert_array_equal(gpu.csls, cpu.csls)


def test_cuda_request_without_cuda_is_a_clear_error():
    if _cuda():
        pytest.skip("CUDA is available here")
    with pytest.raises(MmeaInputError, match="CUDA"):
        knn(gaussian(3, 4, 0), gaussian(3, 4, 1), 1, device="cuda")


def test_ivf_sq8_cells_return_exact_cosines_of_their_candidates():
    """8-bit cells choose the candidates; the scores returned are the exact inner products of those
    candidates (re-scored against the float32 base), sorted; ``flat`` keeps FAISS's own scores; an unknown
    storage is refused by name."""
    pytest.importorskip("faiss")
    from mmea.errors import MmeaInputError
    from mmea.search.knn import IvfIndex

    rng = np.random.default_rng(5)
    base = l2_normalize(rng.normal(size=(2000, 32)).astype(np.float32))
    q = l2_normalize(rng.normal(size=(100, 32)).astype(np.float32))
    scores, ids = IvfIndex(nlist=16, nprobe=16).build(base).search(q, 10)  # every cell scanned
    exact = np.take_along_axis(q @ base.T, ids, 1)
    np.testing.assert_allclose(scores, exact, rtol=0, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()
    ref = np.argsort(-(q @ base.T), axis=1, kind="stable")[:, :10]
    assert np.mean(ids == ref) > 0.95  # all cells scanned: only 8-bit rounding can swap close candidates
    idx = IvfIndex(nlist=16, nprobe=4).build(base)  # candidates(): the same ids as search(), not re-scored
    np.testing.assert_array_equal(np.sort(idx.candidates(q, 10), 1), np.sort(idx.search(q, 10)[1], 1))
    f_scores, f_ids = IvfIndex(nlist=16, nprobe=16, storage="flat").build(base).search(q, 10)
    np.testing.assert_array_equal(f_ids, ref)
    with pytest.raises(MmeaInputError, match="unknown IVF storage 'pq'"):
        IvfIndex(storage="pq")


def test_peak_rss_restarts_at_a_reset():
    """A bench runs its cells in one process: after :func:`reset_peak_rss` the peak is the current RSS again, not
    the largest one seen before (Linux; skipped where ``/proc/self/clear_refs`` cannot be written)."""
    from mmea.search.benchmark import peak_rss_gib, reset_peak_rss

    def current_gib() -> float:
        with open("/proc/self/status") as f:
            return next(int(x.split()[1]) for x in f if x.startswith("VmRSS:")) / 2**20

    big = np.ones(400 * 2**20 // 8)  # 400 MiB, touched
    big[::512] += 1.0
    before = peak_rss_gib()
    assert before >= current_gib() - 1e-3
    del big
    if not reset_peak_rss():
        pytest.skip("this system cannot reset the peak RSS (/proc/self/clear_refs)")
    now = current_gib()
    assert now <= peak_rss_gib() <= now + 0.05
    assert peak_rss_gib() < before - 0.3 or now > before - 0.35  # lower, unless the 400 MiB stayed resident


def test_post_benchmark_case_checks_the_shared_passes_against_one_pass_each():
    """``python -m mmea.search.benchmark --cases post``: the shared passes give the reference's ranks, top 2 and
    one-to-one lists (small sizes here; the figures come from the full case)."""
    from mmea.search.benchmark import case_post

    r = case_post(300, 96)
    assert r["reciprocal_ranks_equal"] and r["top2_ids_equal"] and r["one_to_one_lists_equal"]
    assert r["reference_s"] > 0 and r["ratio"] == pytest.approx(r["shared_s"] / r["reference_s"])
    assert 0.0 < r["reciprocal_hits@1"] <= 1.0
