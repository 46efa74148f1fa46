"""The approximate search pass of large runs (mmea.search.approx, issue 18): with exact lists (``flat``) it
agrees with the exact pass wherever a list can tell, and an ``mmea align`` run with ``search.index = ivf``
takes every stage from it (ranks from the lists, the one-to-one graph, the validation top 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmea.calibration import score_valid_sources, valid_queries
from mmea.evaluation import evaluate_embeddings
from mmea.search.approx import approx_search, metrics_from_lists
from mmea.search.csls import csls_radius
from mmea.search.knn import l2_normalize


def _pair(n=600, d=16, seed=0):
    """Noisy copies: source i <-> target perm[i] (+ 20 extra targets), unit rows."""
    rng = np.random.default_rng(seed)
    src = rng.standard_normal((n, d)).astype(np.float32)
    perm = rng.permutation(n + 20)[:n]
    tgt = rng.standard_normal((n + 20, d)).astype(np.float32)
    tgt[perm] = src + 1.5 * rng.standard_normal((n, d)).astype(np.float32)
    return l2_normalize(src), l2_normalize(tgt), perm


def test_flat_lists_agree_with_the_exact_pass():
    """Radii exact (csls_k <= K); a cosine rank inside the lists equals the exact rank (a CSLS one never
    exceeds it); a gold beyond the list is 'not ranked' (-1); the validation best equal score_valid_sources'."""
    src, tgt, perm = _pair()
    links = np.stack([np.arange(500), perm[:500]], 1)  # test
    valid = np.stack([np.arange(500, 600), perm[500:]], 1)
    rows, cand = links[:, 0], np.unique(links[:, 1])
    vsrc, extra = valid_queries(valid, cand)
    found = approx_search(src, tgt, rows, cand, index="flat", gold=np.searchsorted(cand, links[:, 1]),
                          valid_src=vsrc, extra=extra, list_size=20)
    r_src, r_tgt = csls_radius(src[rows], tgt[cand], 10, index="torch")
    np.testing.assert_allclose(found.r_src, r_src, atol=1e-6)
    np.testing.assert_allclose(found.r_tgt, r_tgt, atol=1e-6)
    for method in ("cos", "csls"):
        exact = evaluate_embeddings(src, tgt, links, return_ranks=True, primary=("src->tgt", method))["ranks"]
        got = found.ranks["src->tgt"][method]
        inside = got > 0
        assert inside.mean() > 0.5 and (~inside).any()
        assert (exact[~inside] > 5).all()  # what the list misses ranks low
        if method == "cos":  # the lists are the exact cosine top-K: their ranks are exact
            np.testing.assert_array_equal(got[inside], exact[inside])
        else:  # a target outside the cosine list may outscore by CSLS: a list rank is never worse, mostly equal
            assert (got[inside] <= exact[inside]).all() and np.mean(got[inside] == exact[inside]) > 0.9
    ref = score_valid_sources(src, tgt, valid, rows, cand, cand_r_tgt=found.r_tgt, index="torch")
    vcand = np.concatenate([cand, extra])
    np.testing.assert_array_equal(vcand[found.valid_ids[:, 0]], ref.top1)


def test_list_metrics_count_unranked_as_misses():
    ranks = {"src->tgt": {"cos": np.array([1, 3, -1, 12]), "csls": np.array([1, 1, -1, 2])},
             "tgt->src": {"cos": np.array([1, -1, -1, 1]), "csls": np.array([2, 1, -1, 1])}}
    ev = metrics_from_lists(ranks, list_size=50, index="ivf", candidates="test", num_candidates={}, csls_k=10)
    t = ev["test"]
    assert t["hits@1"] == 0.5 and t["hits@5"] == 0.75 and t["mr"] is None and t["ranked"] == 0.75
    assert t["mrr"] == pytest.approx((1 + 1 + 0 + 0.5) / 4)
    assert "MR not computed" in ev["ranks_from"] and ev["ranks"].tolist() == [1, 1, -1, 2]


def test_align_with_ivf_uses_the_approximate_pass(tmp_path):
    """A run whose search is IVF: metrics say where the ranks come from, MR is absent, the one-to-one
    solver names the approximate lists, unranked test links are -1 in test_ranks.npy, calibration works."""
    from mmea.data.synth import generate_pair, synth_options
    from mmea.pipelines.align import run_align
    from mmea.pipelines.align_config import load_config

    generate_pair(synth_options(1500, 0, []), tmp_path / "pair", progress=False)
    cfg = load_config(None, [f"data.pair={tmp_path / 'pair'}", "data.seed_ratio=0.3", "device=cpu",
                                 "model.name=label-propagation", "model.anchor_dim=32", "model.hops=2",
                                 "model.name_weight=0.5", "model.name_dim=32", "features.cache=false",
                                 "search.index=ivf"])
    out = run_align(cfg, tmp_path / "run", quiet=True)
    m = json.loads(out["metrics_path"].read_text())
    # label propagation with names: its structure and names blocks are searched as channels too
    assert "approximate top-50 lists (ivf + structure + names)" in m["ranks_from"] and m["test"]["mr"] is None
    assert m["test"]["hits@1"] > 0.3 and m["names_used"]
    assert "approximate top-50" in m["test"]["one_to_one"]["solver"]
    assert m["calibration"]["available"]
    ranks = np.load(tmp_path / "run" / "test_ranks.npy")
    assert len(ranks) == m["split"]["test"] and set(np.unique(ranks)) <= set(range(-1, 51)) - {0}
    # search.nprobe reaches the index: scanning one IVF cell per query leaves more gold targets unlisted
    cfg1 = load_config(None, [f"data.pair={tmp_path / 'pair'}", "data.seed_ratio=0.3", "device=cpu",
                              "model.name=label-propagation", "model.anchor_dim=32", "model.hops=2",
                              "model.name_weight=0.5", "model.name_dim=32", "features.cache=false",
                              "search.index=ivf", "search.nprobe=1", "search.one_to_one=off",
                              "search.match=reciprocal"])
    m1 = json.loads(run_align(cfg1, tmp_path / "run1", quiet=True)["metrics_path"].read_text())
    ranks1 = np.load(tmp_path / "run1" / "test_ranks.npy")
    assert (ranks1 == -1).sum() > (ranks == -1).sum()
    # search.one_to_one = off: no second H@1, a note says so, no stage time
    assert "hits@1_one_to_one" not in m1["test"] and "one_to_one_s" not in m1["timings"]
    assert any("one_to_one = off" in n for n in m1["notes"])
    # the reciprocal ranking and matcher re-rank the pass's lists (no dense n x m pass)
    rec = m1["test_by_method"]["src->tgt/reciprocal"]
    assert "approximate (ivf) top-50 list re-ranked" in rec["ranks_from"] and 0.0 < rec["hits@1"] <= rec["ranked"]
    assert m1["matched"]["method"] == "reciprocal" and 0 < m1["matched"]["pairs"] <= m1["split"]["test"]
    with pytest.raises(Exception, match="one_to_one"):
        load_config(None, ["search.one_to_one=lp"])


def test_channel_lists_find_what_the_whole_rows_miss_and_rescore_exactly():
    """A structureless block plus a clustered one: IVF over the whole rows (1 cell scanned) misses many gold
    partners, the clustered block's own index finds them; the union is re-scored by exact cosine."""
    from mmea.search.approx import channel_lists
    from mmea.search.knn import scale_rows

    rng = np.random.default_rng(0)
    n = 3000
    noise_t = rng.standard_normal((n, 48)).astype(np.float32)
    noise_s = noise_t + 2.0 * rng.standard_normal((n, 48)).astype(np.float32)  # gold cos ~0.45 there
    centres = rng.standard_normal((60, 16)).astype(np.float32) * 3
    lab = rng.integers(0, 60, n)
    name_t = centres[lab] + 0.3 * rng.standard_normal((n, 16)).astype(np.float32)
    name_s = name_t + 0.05 * rng.standard_normal((n, 16)).astype(np.float32)

    def unit(a):
        return scale_rows(np.ascontiguousarray(a, dtype=np.float32), inplace=True)

    T = unit(np.hstack([unit(noise_t), 0.4 * unit(name_t)]))  # the names block weighs little in the rows
    S = unit(np.hstack([unit(noise_s), 0.4 * unit(name_s)]))
    opts = {"nlist": 64, "nprobe": 1}
    _, ids0, _ = channel_lists("ivf", T, S, 10, None, opts)
    cos1, ids1, _ = channel_lists("ivf", T, S, 10, {"names": (48, 64)}, opts)
    gold = np.arange(n)
    r0, r1 = (ids0 == gold[:, None]).any(1).mean(), (ids1 == gold[:, None]).any(1).mean()
    assert r1 > r0 + 0.2 and r1 > 0.95
    ok = ids1 >= 0
    exact = np.einsum("qd,qkd->qk", S, T[np.maximum(ids1, 0)])
    np.testing.assert_allclose(cos1[ok], exact[ok], atol=1e-5)  # exact cosines of the kept ids
    assert (np.diff(np.where(ok, cos1, -np.inf), axis=1) <= 1e-7).all()  # best first
    assert all(len(set(r[r >= 0])) == (r >= 0).sum() for r in ids1)  # no repeats
    # the same union on one shard (what --engine ray's actors run; mmea.engine.shards.IndexShard), ids shifted
    from mmea.engine.shards import IndexShard

    shard = IndexShard(T, 100, index="ivf", index_options=opts, channels={"names": (48, 64)})
    got = shard.cos_topk(S, 10)
    np.testing.assert_array_equal(got["ids"], np.where(ids1 >= 0, ids1 + 100, -1))
    np.testing.assert_array_equal(got["vals"], cos1)
    whole = shard.cos_topk(S, 10, channels=False)  # the whole-row index alone (the validation sources)
    np.testing.assert_array_equal(whole["ids"], np.where(ids0 >= 0, ids0 + 100, -1))
    shard.drop_channels()  # freed once the lists are made: the whole-row index answers alone
    np.testing.assert_array_equal(shard.cos_topk(S, 10)["ids"], whole["ids"])
