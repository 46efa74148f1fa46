"""The sparse similarity term of the search (mmea.search.sparse) and label propagation's exact anchor overlap
(issue 18: the structure signal that the 64-d random labels lose at 1M): sparse top-k and pair scores against
dense products, the overlap against the first-hop view with one-hot labels, the list-based pass with the term
against a dense reference, the weight choice, and a run that uses it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from mmea.errors import MmeaInputError
from mmea.models import label_propagation_math as lpm
from mmea.search.approx import approx_search, listed_mutual_pairs
from mmea.search.knn import l2_normalize
from mmea.search.sparse import SparseBlock, choice_hits, pair_scores, row_topk, sparse_topk, unit_rows


def _sparse(n, L, density, seed):
    rng = np.random.default_rng(seed)
    m = sp.random(n, L, density=density, random_state=rng, dtype=np.float32, format="csr")
    m.data[:] = rng.integers(1, 4, m.nnz)  # small integers: ties in the products
    return unit_rows(m)


def test_row_topk_sorts_each_row_by_value_then_column():
    x = sp.csr_matrix(np.array([[0, 3, 1, 3, 0], [0, 0, 0, 0, 0], [2, 0, 0, 0, 5]], np.float32))
    s, i = row_topk(x, 3)
    assert i.tolist() == [[1, 3, 2], [-1, -1, -1], [4, 0, -1]]
    assert s[0].tolist() == [3, 3, 1] and np.isneginf(s[1]).all() and np.isneginf(s[2, 2])


def test_sparse_topk_and_pair_scores_equal_the_dense_product():
    q, b = _sparse(70, 40, 0.1, 0), _sparse(90, 40, 0.1, 1)
    dense = (q @ b.T).toarray()  # (70, 90)
    s, i = sparse_topk(q, b, 5, block=16)  # several blocks
    for r in range(70):
        nz = np.flatnonzero(dense[r])
        want = nz[np.lexsort((nz, -dense[r, nz]))][:5]
        assert i[r, :len(want)].tolist() == want.tolist() and (i[r, len(want):] == -1).all()
        np.testing.assert_allclose(s[r, :len(want)], dense[r, want], rtol=1e-6)
    ids = np.random.default_rng(2).integers(-1, 90, (70, 12))
    got = pair_scores(q, b, ids, block=16)
    np.testing.assert_allclose(got, np.where(ids >= 0, dense[np.arange(70)[:, None], np.maximum(ids, 0)], 0),
                               rtol=1e-6)


def _graph(n, edges, seed):
    rng = np.random.default_rng(seed)
    t = np.stack([rng.integers(0, n, edges), np.zeros(edges, np.int64), rng.integers(0, n, edges)], 1)
    return lpm.entity_graph(t, n), t


def test_anchor_overlap_is_the_first_hop_view_with_one_hot_labels():
    """U_s . U_t = E^(1)_s . E^(1)_t of the propagation with exact one-hot labels (anchor_dim 0), row for row."""
    (ps, ts), (pt, tt) = _graph(60, 150, 0), _graph(50, 120, 1)
    anchors = np.stack([np.random.default_rng(3).permutation(60)[:20],
                        np.random.default_rng(4).permutation(50)[:20]], 1)
    us, ut = lpm.anchor_overlap((ps, pt), anchors)
    xs, xt = lpm.seed_labels(anchors, 60, 50, 0, seed=0)  # one-hot, (N, 20)
    e_s = lpm.propagate(ps, lpm.relation_incidence(ts, 60, 1), xs, 1, relation_view=False)[0]
    e_t = lpm.propagate(pt, lpm.relation_incidence(tt, 50, 1), xt, 1, relation_view=False)[0]
    np.testing.assert_allclose(us.toarray(), e_s, atol=1e-6)
    np.testing.assert_allclose(ut.toarray(), e_t, atol=1e-6)
    # max_degree leaves out the links whose entity is a hub on either side
    deg_s, deg_t = np.diff(ps.indptr), np.diff(pt.indptr)
    cap = int(np.median(deg_s[anchors[:, 0]]))
    hs, _ = lpm.anchor_overlap((ps, pt), anchors, max_degree=cap)
    dropped = (deg_s[anchors[:, 0]] > cap) | (deg_t[anchors[:, 1]] > cap)
    assert dropped.any() and not np.isin(hs.indices, np.flatnonzero(dropped)).any()
    np.testing.assert_allclose(np.asarray(hs.multiply(hs).sum(1)).ravel()[np.diff(hs.indptr) > 0], 1, rtol=1e-5)


def _dense_csls(sim, k=10):
    r_s = np.sort(sim, 1)[:, -k:].mean(1)
    r_t = np.sort(sim, 0)[-k:].mean(0)
    return 2 * sim - r_s[:, None] - r_t[None, :]


def test_listed_pass_with_the_sparse_term_equals_the_dense_reference():
    """With lists as long as the candidate set the list-based pass sees every pair: its radii, top-1 and gold
    ranks are those of the dense ``S T^T + w U V^T`` scored by CSLS."""
    rng = np.random.default_rng(0)
    n, m, w = 40, 45, 0.3
    src = l2_normalize(rng.standard_normal((n, 8)).astype(np.float32))
    tgt = l2_normalize(rng.standard_normal((m, 8)).astype(np.float32))
    block = SparseBlock(_sparse(n, 30, 0.15, 1), _sparse(m, 30, 0.15, 2), w)
    rows, cand = np.arange(n), np.arange(m)
    gold = rng.permutation(m)[:n]
    found = approx_search(src, tgt, rows, cand, index="torch", gold=gold, list_size=50, sparse=block)
    sim = src @ tgt.T + w * (block.src @ block.tgt.T).toarray()  # (n, m)
    np.testing.assert_allclose(found.r_src, np.sort(sim, 1)[:, -10:].mean(1), atol=1e-5)
    np.testing.assert_allclose(found.r_tgt, np.sort(sim, 0)[-10:].mean(0), atol=1e-5)
    csls = _dense_csls(sim)
    assert found.result.ids[:, 0].tolist() == np.argmax(csls, 1).tolist()
    want = 1 + (csls > csls[np.arange(n), gold][:, None]).sum(1)
    assert found.ranks["src->tgt"]["csls"].tolist() == want.tolist()
    assert found.stats["listed"] and not found.stats["approximate"]
    assert found.stats["channels"] == ["whole rows", "sparse (exact sparse)"]
    # without the term the same call is the dense-only pass
    plain = approx_search(src, tgt, rows, cand, index="torch", gold=gold, list_size=50)
    assert plain.result.ids[:, 0].tolist() == np.argmax(_dense_csls(src @ tgt.T), 1).tolist()


def test_listed_mutual_pairs_are_the_mutual_first_entries():
    from mmea.search.csls import SearchResult

    fwd = SearchResult(ids=np.array([[2, 0], [1, 2], [-1, -1], [0, 1]]), cos=None, csls=None, r_src=None, r_tgt=None)
    bwd = SearchResult(ids=np.array([[3, 1], [1, 0], [1, 3]]), cos=None, csls=None, r_src=None, r_tgt=None)
    # source 0 -> target 2 -> source 1: no; source 1 -> 1 -> 1: yes; source 2: none; source 3 -> 0 -> 3: yes
    got = listed_mutual_pairs(fwd, bwd, np.array([10, 11, 12, 13]), np.array([20, 21, 22]))
    assert got.tolist() == [[11, 21], [13, 20]]


def test_sparse_rounds_rescore_the_same_lists_with_the_refined_term():
    """One round: ``refine`` gets the first scoring's mutual best pairs (as a pass without rounds finds them), and
    the result is the pass run directly with the refined term: the dense lists are reused, not searched again."""
    rng = np.random.default_rng(5)
    n, m = 40, 45
    src = l2_normalize(rng.standard_normal((n, 8)).astype(np.float32))
    tgt = l2_normalize(rng.standard_normal((m, 8)).astype(np.float32))
    first = SparseBlock(_sparse(n, 30, 0.15, 1), _sparse(m, 30, 0.15, 2), 0.3)
    second = SparseBlock(_sparse(n, 30, 0.15, 3), _sparse(m, 30, 0.15, 4), 0.5)
    rows, cand, gold = np.arange(n), np.arange(m), rng.permutation(m)[:n]
    seen = []

    def refine(pairs):
        seen.append(pairs)
        return second

    rounds = SparseBlock(first.src, first.tgt, 0.3, rounds=1, refine=refine)
    calls = []

    def lists(base, queries, k, chans):  # counts the dense list searches
        from mmea.search.approx import channel_lists
        calls.append(k)
        return channel_lists("torch", base, queries, k, chans, {})

    got = approx_search(src, tgt, rows, cand, index="torch", gold=gold, list_size=12, sparse=rounds, lists=lists)
    assert len(calls) == 2 and len(seen) == 1 and got.stats["sparse_rounds"] == [{"pairs": len(seen[0])}]
    plain = approx_search(src, tgt, rows, cand, index="torch", gold=gold, list_size=12, sparse=first)
    want_pairs = listed_mutual_pairs(plain.lists["forward"], plain.lists["reverse"], rows, cand)
    assert len(want_pairs) and seen[0].tolist() == want_pairs.tolist()
    direct = approx_search(src, tgt, rows, cand, index="torch", gold=gold, list_size=12, sparse=second)
    assert got.result.ids.tolist() == direct.result.ids.tolist()
    np.testing.assert_array_equal(got.r_tgt, direct.r_tgt)
    for d in ("src->tgt", "tgt->src"):
        assert got.ranks[d]["csls"].tolist() == direct.ranks[d]["csls"].tolist()


def test_channel_index_proposes_from_the_blocks_only():
    """``search.whole_rows = off``: each block's exact top-k, their union re-scored on the whole rows; no whole-row
    index (a target that is near in the whole rows but in no block's top-k is not found)."""
    from mmea.search.approx import ChannelIndex, channel_lists

    rng = np.random.default_rng(7)
    base = l2_normalize(rng.standard_normal((60, 8)).astype(np.float32))
    queries = l2_normalize(rng.standard_normal((25, 8)).astype(np.float32))
    chans, k = {"a": (0, 3), "b": (3, 8)}, 4
    cos, ids, idx = channel_lists("torch", base, queries, k, chans, {}, whole=False)
    assert isinstance(idx, ChannelIndex) and len(idx.parts) == 2
    for r in range(len(queries)):
        found = set()
        for lo, hi in chans.values():
            bn, qn = l2_normalize(base[:, lo:hi]), l2_normalize(queries[r:r + 1, lo:hi])[0]
            found |= set(np.argsort(-(bn @ qn), kind="stable")[:k].tolist())
        c = np.array(sorted(found))
        v = base[c] @ queries[r]
        want = c[np.lexsort((c, -v))][:k]
        assert ids[r].tolist() == want.tolist()
        np.testing.assert_allclose(cos[r], base[want] @ queries[r], rtol=1e-5)
    assert idx.search(queries, k)[1].tolist() == ids.tolist()
    whole = channel_lists("torch", base, queries, k, chans, {})[1]
    exact = np.argsort(-(queries @ base.T), axis=1, kind="stable")[:, :k]
    assert whole.tolist() == exact.tolist()  # with the whole rows: the exact top-k is always found


def test_whole_rows_off_in_an_approximate_pass_with_a_sparse_term():
    """The pass's record says what proposed: the channels and the term, no whole rows (``ranks_from`` too)."""
    from mmea.pipelines.align import _list_sources

    rng = np.random.default_rng(8)
    n, m = 300, 320
    src = l2_normalize(rng.standard_normal((n, 16)).astype(np.float32))
    tgt = l2_normalize(rng.standard_normal((m, 16)).astype(np.float32))
    block = SparseBlock(_sparse(n, 40, 0.1, 1), _sparse(m, 40, 0.1, 2), 0.3, name="anchor overlap")
    kw = dict(index="ivf", list_size=20, sparse=block, channels={"names": (8, 16)}, gold=rng.permutation(m)[:n])
    off = approx_search(src, tgt, np.arange(n), np.arange(m), whole_rows=False, **kw)
    on = approx_search(src, tgt, np.arange(n), np.arange(m), **kw)
    assert off.stats["channels"] == ["names", "anchor overlap (exact sparse)"]
    assert on.stats["channels"] == ["whole rows", "names", "anchor overlap (exact sparse)"]
    assert _list_sources(off.stats) == "ivf + names + anchor overlap (exact sparse); no whole-row index"
    assert _list_sources(on.stats) == "ivf + names + anchor overlap (exact sparse)"
    assert off.result.ids.shape == on.result.ids.shape and (off.result.ids[:, 0] >= 0).all()


def test_choice_hits_scores_each_weight_like_a_dense_csls():
    rng = np.random.default_rng(1)
    S = l2_normalize(rng.standard_normal((60, 8)).astype(np.float32))
    T = l2_normalize(rng.standard_normal((70, 8)).astype(np.float32))
    us, ut = _sparse(60, 25, 0.2, 3), _sparse(70, 25, 0.2, 4)
    queries, gold = np.arange(0, 60, 2), rng.integers(0, 70, 30)
    got = choice_hits(S, T, us, ut, queries, gold, [0.0, 0.5], csls_k=5, block=16)
    for w in (0.0, 0.5):
        csls = _dense_csls(S @ T.T + w * (us @ ut.T).toarray(), k=5)
        assert got[w] == round(float(np.mean(np.argmax(csls[queries], 1) == gold)), 4)


def test_config_rejects_bad_overlap_settings():
    from mmea.models.label_propagation import LabelPropagationModel as LP

    with pytest.raises(MmeaInputError, match="overlap"):
        LP.Config(overlap_weight=1.5)
    with pytest.raises(MmeaInputError, match="overlap"):
        LP.Config(overlap_weights=(0.1, -0.2))
    with pytest.raises(MmeaInputError, match="readout"):
        LP.Config(overlap_weight=0.2, readout="relational")
    with pytest.raises(MmeaInputError, match="overlap_rounds"):
        LP.Config(overlap_rounds=1)


def test_align_with_the_anchor_overlap(tmp_path):
    """A run with the overlap term: the weight chosen on the valid links and recorded, the search list-based
    with exact lists at this size, the structure channel left out, better than the same run without it; a
    dense-only matcher is refused with a hint."""
    from mmea.data.synth import generate_pair, synth_options
    from mmea.pipelines.align import run_align
    from mmea.pipelines.align_config import load_config

    generate_pair(synth_options(2000, 0, []), tmp_path / "pair", progress=False)
    base = [f"data.pair={tmp_path / 'pair'}", "data.seed_ratio=0.3", "device=cpu", "model.name=label-propagation",
            "model.anchor_dim=32", "model.name_weight=0.5", "model.name_dim=32", "features.cache=false"]
    m0 = json.loads(run_align(load_config(None, base), tmp_path / "r0", quiet=True)["metrics_path"].read_text())
    m = json.loads(run_align(load_config(None, base + ["model.overlap_weight=-1"]), tmp_path / "r1",
                             quiet=True)["metrics_path"].read_text())
    info = m["model_info"]
    assert info["overlap"]["weight"] in (0.1, 0.2, 0.3) and info["overlap"]["name"] == "anchor overlap"
    assert "valid links" in info["overlap_weight_choice"]["chosen_by"]
    assert m["ranks_from"].startswith("exact top-50 lists (torch + anchor overlap (exact sparse))")
    assert m["test"]["hits@1"] > m0["test"]["hits@1"]
    assert "exact top-50" in m["test"]["one_to_one"]["solver"] and m["calibration"]["available"]
    from mmea.pipelines.align_config import ran_label

    assert f"anchor overlap {info['overlap']['weight']:g}" in ran_label(m)  # the bench tables' "Ran" column
    m2 = json.loads(run_align(load_config(None, base + ["model.overlap_weight=-1", "model.overlap_rounds=1"]),
                              tmp_path / "r3", quiet=True)["metrics_path"].read_text())
    rounds = m2["model_info"]["overlap_rounds"]  # one round: the first scoring's mutual pairs joined the anchors
    assert len(rounds) == 1 and 0 < rounds[0]["anchors_added"] <= rounds[0]["pairs"] and m2["model_info"]["iterative"]
    assert m2["model_info"]["anchors_final"] == info["anchors_final"] + rounds[0]["anchors_added"]
    assert "sparse round (+" in ran_label(m2) and ran_label(m2).endswith("· iterative")
    assert m2["test"]["hits@1"] > m["test"]["hits@1"]
    with pytest.raises(MmeaInputError, match="sparse term"):
        run_align(load_config(None, base + ["model.overlap_weight=0.2", "search.match=greedy"]), tmp_path / "r2",
                  quiet=True)


def test_the_partitioned_mode_refuses_the_overlap_term():
    """engine.partitions > 1 aligns part pairs on their own: the term would be dropped, so the run stops."""
    from types import SimpleNamespace

    from mmea.engine.run import RayEngine
    from mmea.models.label_propagation import LabelPropagationModel as LP

    engine = RayEngine(SimpleNamespace(config=SimpleNamespace(partitions=4)))
    model = SimpleNamespace(config=LP.Config(overlap_weight=0.2))
    with pytest.raises(MmeaInputError, match="overlap"):
        engine.fit(model, task=None, features=None)
