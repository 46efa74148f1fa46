"""gaussian-strong (issue 17): distribution scores against closed forms, the point twin, missing modalities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmea.config import FeatureConfig
from mmea.models import MODELS, RunContext
from mmea.search.distributions import distribution_ranks
from mmea.search.distributions_math import (bhattacharyya, expected_likelihood, kl_diagonal, pairwise_score,
                                            wasserstein2)


def _gauss(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.rand(n, d, generator=g, dtype=torch.float64) + 0.1


# ----------------------------------------------------------------------------- closed forms
def test_kl_matches_torch_distributions():
    (m1, v1), (m2, v2) = _gauss(5, 3, 0), _gauss(5, 3, 1)
    p = torch.distributions.Independent(torch.distributions.Normal(m1, v1.sqrt()), 1)
    q = torch.distributions.Independent(torch.distributions.Normal(m2, v2.sqrt()), 1)
    assert torch.allclose(kl_diagonal(m1, v1, m2, v2), torch.distributions.kl_divergence(p, q))


def _grid_1d(m1, v1, m2, v2):
    x = torch.linspace(-30, 30, 200001, dtype=torch.float64)
    p = torch.exp(-(x - m1) ** 2 / (2 * v1)) / math.sqrt(2 * math.pi * v1)
    q = torch.exp(-(x - m2) ** 2 / (2 * v2)) / math.sqrt(2 * math.pi * v2)
    return x, p, q


@pytest.mark.parametrize("m1,v1,m2,v2", [(0.0, 1.0, 0.5, 2.0), (1.0, 0.3, -2.0, 4.0)])
def test_bhattacharyya_and_expected_likelihood_match_numerical_integrals(m1, v1, m2, v2):
    x, p, q = _grid_1d(m1, v1, m2, v2)
    dx = float(x[1] - x[0])
    T = lambda a: torch.tensor([a], dtype=torch.float64)  # noqa: E731
    bc = float((torch.sqrt(p * q)).sum() * dx)  # Bhattacharyya coefficient
    assert float(bhattacharyya(T(m1), T(v1), T(m2), T(v2))) == pytest.approx(-math.log(bc), rel=1e-6)
    assert float(expected_likelihood(T(m1), T(v1), T(m2), T(v2))) == pytest.approx(math.log(float((p * q).sum() * dx)),
                                                                                   rel=1e-6)


def test_wasserstein_matches_the_1d_quantile_formula():
    # in 1-D, W2^2 = int_0^1 (F^-1(u) - G^-1(u))^2 du; for Gaussians the quantiles are mu + sigma z
    u = torch.linspace(1e-6, 1 - 1e-6, 400001, dtype=torch.float64)
    z = torch.distributions.Normal(0.0, 1.0).icdf(u)
    m1, v1, m2, v2 = 0.3, 0.5, -1.0, 2.0
    w2 = float((((m1 + math.sqrt(v1) * z) - (m2 + math.sqrt(v2) * z)) ** 2).mean())
    T = lambda a: torch.tensor([a], dtype=torch.float64)  # noqa: E731
    assert float(wasserstein2(T(m1), T(v1), T(m2), T(v2))) == pytest.approx(w2, rel=1e-3)
    (a, va), (b, vb) = _gauss(4, 6, 2), _gauss(4, 6, 3)  # sums over independent dimensions
    assert torch.allclose(wasserstein2(a, va, b, vb), ((a - b) ** 2 + (va.sqrt() - vb.sqrt()) ** 2).sum(-1))


@pytest.mark.parametrize("name,fn,sign", [("wasserstein", wasserstein2, -1), ("bhattacharyya", bhattacharyya, -1),
                                          ("expected-likelihood", expected_likelihood, 1)])
def test_pairwise_scores_equal_the_broadcast_forms(name, fn, sign):
    (a, va), (b, vb) = _gauss(4, 5, 4), _gauss(7, 5, 5)
    want = sign * fn(a[:, None], va[:, None], b[None], vb[None])  # (4, 7)
    assert torch.allclose(pairwise_score(name, a, va, b, vb), want, atol=1e-9)


def test_blockwise_ranks_do_not_depend_on_the_block():
    (ms, vs), (mt, vt) = _gauss(30, 4, 6), _gauss(30, 4, 7)
    ms, vs, mt, vt = (x.float().numpy() for x in (ms, vs, mt, vt))
    mt[:20] = ms[:20] + 0.01  # 20 near-copies
    links = np.stack([np.arange(25), np.arange(25)], 1)
    for s in ("wasserstein", "bhattacharyya", "expected-likelihood"):
        r1 = distribution_ranks(s, ms, vs, mt, vt, links, block=1)
        r2 = distribution_ranks(s, ms, vs, mt, vt, links, block=1000)
        assert (r1 == r2).all() and r1.min() >= 1 and r1.max() <= 25
    assert (distribution_ranks("wasserstein", ms, vs, mt, vt, links)[:20] == 1).all()


# ----------------------------------------------------------------------------- the model on a tiny task
def _mm_task(n: int = 8, seed: int = 0):
    """Two copies of an 8-entity chain; images missing for entities 1, 5 (source) and 2 (target); numbers on 5."""
    from mmea.data import AlignmentTask, KnowledgeGraph

    rng = np.random.default_rng(seed)
    tr = np.array([[i, i % 2, i + 1] for i in range(n - 1)] + [[0, 1, 4], [2, 0, 6]])
    pix = rng.normal(size=(n, 12)).astype(np.float32)
    kgs = []
    for side in range(2):
        mask = np.ones(n, dtype=bool)
        mask[[1, 5] if side == 0 else [2]] = False
        feats = np.where(mask[:, None], pix + 0.05 * rng.normal(size=pix.shape), 0).astype(np.float32)
        ent = np.array([0, 3, 4, 6, 7])
        values = (ent * 10.0 + side).astype(np.float64)
        kgs.append(KnowledgeGraph(
            f"kg{side}", [str(i) for i in range(n)], [f"u{side}:{i}" for i in range(n)], [""] * n,
            [f"r{side}a", f"r{side}b"], tr, ["population", "area"], np.stack([ent, np.arange(5) % 2], 1),
            values.astype(str).astype(object), values, image_features=feats, image_mask=mask))
    links = np.stack([np.arange(n), np.arange(n)], 1)
    return AlignmentTask("mm", kgs[0], kgs[1], links[:4], links[4:6], links[6:])


def _model(name="gaussian-strong", **params):
    cls = MODELS.get(name)
    # every modality on (the defaults leave the GNN and the numbers off: see the model's docstring)
    params = {"dim": 8, "gnn_dim": 8, "layers": 1, "batch_size": 4, "hard_negatives": 2, "gnn": True,
              "numeric": True, "anchor_hops": 2, "anchor_dim": 4, "lr": 0.005, **params}
    return cls(cls.Config(**params), RunContext(seed=0, features=FeatureConfig(name_encoder="char-ngram"),
                                                cache_root=None))


def _setup(m, task):
    from mmea.features import run_features

    m.setup(task, run_features(task, m.feature_requests(m.config), m.ctx))
    return m


def test_point_twin_equals_the_gaussian_model_with_variances_frozen():
    task = _mm_task()
    batch = np.array([[0, 0], [1, 1], [2, 2], [3, 3]])
    point = _setup(_model("gaussian-strong-point"), task)
    point.step(batch)  # each setup seeds torch; step right after it (dropout draws from the global generator)
    gauss = _setup(_model("gaussian-strong"), task)
    for h in gauss.net.heads.values():
        for p in (h.logvar.weight, h.logvar.bias, h.prior_logvar):
            p.requires_grad_(False)
    gauss.step(batch)
    (mp, vp), (mg, vg) = point.forward_eval(), gauss.forward_eval()
    assert np.allclose(mp, mg, atol=1e-6) and np.allclose(vp, vg)
    # unfrozen, the Gaussian model's variances move and its means differ after the step
    free = _setup(_model("gaussian-strong"), task)
    free.step(batch)
    free.step(batch)
    assert not np.allclose(free.forward_eval()[1], vg)


def test_a_missing_modality_leaves_a_larger_common_variance():
    task = _mm_task()
    m = _model("gaussian-strong", epochs=5, eval_every=1, anchors=False)  # relations, images, numbers
    from mmea.features import run_features

    m.fit(task, run_features(task, m.feature_requests(m.config), m.ctx))
    u_src, u_tgt = m.uncertainty()
    floor = m.config.var_min
    # source entity 1 and 5 have no image; 3, 4, 6 have relations, images and numbers
    assert min(u_src[1], u_src[5]) > floor * 1.5
    assert min(u_src[1], u_src[5]) > max(u_src[3], u_src[4], u_src[6])
    assert u_tgt[2] > max(u_tgt[3], u_tgt[4], u_tgt[6])
    assert m.info["modalities"] == {"relations": 16, "images": 13, "numeric": 10}  # the network's modalities
    cov = m.info["variances"]["by_coverage"]
    assert cov["R--"]["mean_var"] > cov["RIN"]["mean_var"]  # 1, 5: relations only
    assert m.info["names_used"] is False
    common = m.info["variances"]["common"]  # what `mmea report` draws
    assert common["images"]["without"] > common["images"]["with"]


def test_unknown_score_is_a_clear_error():
    from mmea.errors import MmeaInputError

    with pytest.raises(MmeaInputError, match="unknown score 'kl2'"):
        _model(scores="wasserstein,kl2")


# ----------------------------------------------------------------------------- variance as confidence
def test_auroc_counts_ordered_pairs_and_ties_half():
    from mmea.calibration import auroc

    score = np.array([0.1, 0.4, 0.35, 0.8, 0.4])
    pos = np.array([False, False, True, True, True])
    # brute force: P(score_pos > score_neg) + 0.5 P(equal)
    pairs = [(a > b) + 0.5 * (a == b) for a in score[pos] for b in score[~pos]]
    assert auroc(score, pos) == pytest.approx(np.mean(pairs))
    assert auroc(score, np.ones(5, bool)) is None
    sk = pytest.importorskip("sklearn.metrics")
    assert auroc(score, pos) == pytest.approx(sk.roc_auc_score(pos, score))


def test_precision_at_coverage_and_the_valid_fitted_combination():
    from mmea.calibration import precision_at_coverage, variance_confidence_report

    rng = np.random.default_rng(0)
    n = 400
    unc = rng.uniform(0.1, 1.0, n)
    margin = rng.uniform(0, 1, n)
    correct = rng.uniform(size=n) < 0.9 - 0.8 * unc  # wrong when uncertain; the margin says nothing
    assert precision_at_coverage(np.arange(4), [0, 0, 1, 1], 0.5) == 1.0
    half = n // 2
    valid = {"margin": margin[:half], "uncertainty": unc[:half], "correct": correct[:half]}
    test = {"margin": margin[half:], "uncertainty": unc[half:], "correct": correct[half:]}
    rep = variance_confidence_report(valid, test)
    assert rep["auroc_uncertainty"] > 0.7 and abs(rep["auroc_margin"] - 0.5) < 0.1
    assert rep["precision_margin_variance"] > rep["precision_margin"] + 0.03
    assert rep["combined"]["w_log_uncertainty"] < 0 and rep["combined"]["fitted_on"] == "valid links"


def test_fit_reports_uncertainty_and_the_export_column():
    import pandas as pd

    from mmea.export import add_uncertainty

    task = _mm_task()
    m = _model("gaussian-strong", epochs=2, scores="wasserstein")
    from mmea.features import run_features

    m.fit(task, run_features(task, m.feature_requests(m.config), m.ctx))
    rows = m.rerank_metrics(task.test)
    assert rows["src->tgt/wasserstein"]["n"] == len(task.test)
    rep = m.info["uncertainty"]
    assert rep["n_test"] == 2 and rep["n_valid"] == 2
    df = add_uncertainty(pd.DataFrame({"src_id": ["6", "7"], "tgt_id": ["7", "6"]}), task, m)
    u_s, u_t = m.uncertainty()
    assert df["uncertainty"].tolist() == pytest.approx([u_s[6] + u_t[7], u_s[7] + u_t[6]])
    plain = pd.DataFrame({"src_id": ["6"], "tgt_id": ["7"]})
    assert "uncertainty" not in add_uncertainty(plain, task, object()).columns  # no variances: unchanged


def test_the_anchors_modality_carries_the_propagated_seed_labels():
    """Both KGs are the same chain: label propagation gives entity i the same row on both sides, so the anchors
    head maps a gold pair to one Gaussian; an entity no anchor reaches gets the prior; ``anchors=false`` drops it."""
    import torch

    task = _mm_task()
    m = _setup(_model("gaussian-strong"), task)  # _model's anchor_hops 2, anchor_dim 4
    x, mask = m.inputs["anchors"], m.inputs["masks"]["anchors"]
    # 2 hops x 4 labels per view; the relation view only where the valid links chose a weight > 0 for it
    assert x.shape == (16, 2 * 4 * (1 + (m.info["anchors"]["relation_weight"] > 0)))
    assert bool(mask.all())  # the chain reaches every entity in 2 hops
    assert torch.allclose(x[:8], x[8:], atol=1e-6)  # the same labels, the same graph
    assert m.info["anchors"]["anchors_final"] == 4 and m.info["anchors"]["hops"] == 2
    m.net.eval()
    with torch.no_grad():
        mu, lv = m.forward()[1]["anchors"]
    assert torch.allclose(mu[:8], mu[8:], atol=1e-6) and torch.allclose(lv[:8], lv[8:], atol=1e-6)
    off = _setup(_model("gaussian-strong", anchors=False), task)
    assert "anchors" not in off.net.heads and off.inputs["anchors"] is None


def test_unreached_entities_get_the_anchor_prior():
    import dataclasses

    from mmea.data import AlignmentTask

    task = _mm_task()
    tr = task.source.triples
    src = dataclasses.replace(task.source, triples=tr[(tr[:, 0] != 7) & (tr[:, 2] != 7)])  # entity 7 isolated
    t2 = AlignmentTask("mm", src, task.target, task.train, task.valid, task.test)
    m = _setup(_model("gaussian-strong"), t2)
    mask = m.inputs["masks"]["anchors"]
    assert not bool(mask[7]) and bool(mask[:7].all())
    mu, lv = m.forward()[1]["anchors"]
    head = m.net.heads["anchors"]
    assert torch.allclose(mu[7], head.prior_mu) and torch.allclose(lv[7], head.prior_logvar)


def test_no_modality_reading_the_relations_is_a_clear_error():
    from mmea.errors import MmeaInputError

    with pytest.raises(MmeaInputError, match="gnn and anchors are both off"):
        _model(gnn=False, anchors=False)
    m = _setup(_model(gnn=False, numeric=False), _mm_task())  # the defaults' shape: anchors (and images) only
    assert set(m.net.heads) == {"anchors", "images"} and m.net.gnn is None
    m.step(np.array([[0, 0], [1, 1]]))  # the loss without the GNN term


# ----------------------------------------------------------------------------- heads on the relational GNN
_GNN = {"gnn": False, "numeric": False, "anchor_source": "relational-gnn", "anchor_gnn_dim": 4,
        "anchor_gnn_epochs": 2, "anchor_gnn_iterations": 1, "anchor_gnn_iteration_epochs": 1}


def _poisoned(task):
    """``task`` whose test links raise when read (``kg_fixtures.PoisonedTask``)."""
    from kg_fixtures import PoisonedTask

    armed = PoisonedTask(task.name, task.source, task.target, task.train, task.valid, task.test)
    armed.armed = True
    return armed


def test_relational_gnn_anchor_source_feeds_the_heads_and_its_round_pairs():
    from mmea.features import run_features

    task = _poisoned(_mm_task())
    m = _model("gaussian-strong", epochs=2, anchor_pairs=True, **_GNN)
    m.fit(task, run_features(task, m.feature_requests(m.config), m.ctx))
    a = m.info["anchors"]
    assert a["source"] == "relational-gnn" and a["out_dim"] == 2 * (2 + 1) * 4  # (layers + 1) x 2 views x dim
    assert m.inputs["anchors"].shape == (16, 24)
    assert np.allclose(np.linalg.norm(m.inputs["anchors"].numpy(), axis=1), 1, atol=1e-5)  # unit rows
    proposed = a["pairs_final"] - len(task.train)
    assert proposed == sum(a["pairs_added_per_round"]) >= 1  # the chain's mutual nearest pairs
    assert m.info["pairs_trained"] == {"train links": 4, "proposed by the anchor source": proposed}
    assert m.info["iterative"] is True and m.info["names_used"] is False
    plain = _model("gaussian-strong", epochs=1, **_GNN)  # anchor_pairs off: the train links only
    plain.fit(task, run_features(task, plain.feature_requests(plain.config), plain.ctx))
    assert plain.info["pairs_trained"]["proposed by the anchor source"] == 0


def test_the_pretrained_gnn_leaves_the_heads_random_stream_alone():
    """However many epochs the encoder runs (a time budget decides), the common space starts the same."""
    task = _mm_task()
    a = _setup(_model("gaussian-strong", **{**_GNN, "anchor_gnn_epochs": 1, "anchor_gnn_iterations": 0}), task)
    b = _setup(_model("gaussian-strong", **{**_GNN, "anchor_gnn_epochs": 3, "anchor_gnn_iterations": 0}), task)
    assert a.info["anchors"]["epochs_run"] != b.info["anchors"]["epochs_run"]
    for name in ("mu", "logvar"):
        assert torch.equal(getattr(a.net.heads["anchors"], name).weight, getattr(b.net.heads["anchors"], name).weight)


def test_the_pretrained_gnn_is_cached_for_the_point_twin(tmp_path):
    from mmea.models.relational_gnn import RelationalGnnModel, cached_relational_gnn

    task = _mm_task()
    cfg = RelationalGnnModel.Config(dim=4, epochs=2, iterations=1, iteration_epochs=1)
    first = cached_relational_gnn(task, task.train, task.valid, cfg, seed=0, device="cpu", cache_root=tmp_path)
    again = cached_relational_gnn(task, task.train, task.valid, cfg, seed=0, device="cpu", cache_root=tmp_path)
    assert first[3]["cached"] is False and again[3]["cached"] is True
    for x, y in zip(first[:3], again[:3]):
        assert np.array_equal(x, y)
    assert np.array_equal(first[2][:4], task.train)  # the pool first, then the rounds' proposals
    other = cached_relational_gnn(task, task.train[:3], task.valid, cfg, seed=0, device="cpu", cache_root=tmp_path)
    assert other[3]["cached"] is False  # another pool is another key
    entries = sorted((tmp_path / "features").iterdir())
    assert len(entries) == 2
    none = cached_relational_gnn(task, task.train, task.valid, cfg, seed=0, device="cpu", cache_root=None)
    assert none[3]["cached"] is False and sorted((tmp_path / "features").iterdir()) == entries


def test_the_joined_anchor_gnn_and_the_final_join_read_train_valid_and_proposals_only():
    """anchor_gnn_lp: the GNN's rounds propose from it joined by label propagation, the heads still get the
    network's own rows; lp_weight < 0: the means joined at a weight the valid links chose (0 allowed), the
    Gaussians left alone; the test links are never read."""
    from mmea.features import run_features
    from mmea.models.lp_join_math import LP_HEAD_DIM

    task = _poisoned(_mm_task())
    m = _model("gaussian-strong", epochs=2, anchor_gnn_lp=True, lp_weight=-1.0, lp_heads=4, **_GNN)
    m.fit(task, run_features(task, m.feature_requests(m.config), m.ctx))
    a = m.info["anchors"]
    assert a["out_dim"] == 24 and m.inputs["anchors"].shape == (16, 24)  # the network's rows, not the join
    assert a["lp_fusion"]["in_proposals"] is True and "valid links" in a["lp_fusion"]["chosen_by"]
    rec = m.info["lp_fusion"]
    assert rec["anchors"] == len(task.train) + a["pairs_final"] - len(task.train)  # train links + proposals
    assert rec["weight"] in (0.0, 0.25, 0.5) and "on 2 valid links" in rec["chosen_by"]
    assert set(rec["scores"]) == {0.0, 0.25, 0.5}
    s, t = m.embeddings()
    mu_s = m._normed(m._out[0])[0]
    w = rec["weight"]
    if w == 0:
        np.testing.assert_array_equal(s, mu_s)
    else:
        assert s.shape == (8, 8 + 4 * LP_HEAD_DIM)
        np.testing.assert_allclose(s[:, :8], math.sqrt(1 - w) * mu_s, atol=1e-6)  # the means, scaled
    assert np.allclose(np.linalg.norm(t, axis=1)[np.linalg.norm(t, axis=1) > 0], 1, atol=1e-5)
    (ms, _), _ = m.gaussians()
    np.testing.assert_array_equal(ms, m._out[0][:8])  # the distributions stay the common space's
    set_w = _model("gaussian-strong", epochs=1, lp_weight=0.5, lp_heads=4, **_GNN)
    set_w.fit(task, run_features(task, set_w.feature_requests(set_w.config), set_w.ctx))
    assert set_w.info["lp_fusion"]["weight"] == 0.5 and set_w.info["lp_fusion"]["chosen_by"] == "set"
    joined = set_w.embeddings()[0]
    assert joined.shape == (8, 8 + 4 * LP_HEAD_DIM)
    np.testing.assert_allclose(joined[:, :8], math.sqrt(0.5) * set_w._normed(set_w._out[0])[0], atol=1e-6)


def test_the_gnns_final_propagation_is_handed_to_the_final_join_unchanged(monkeypatch):
    """The pre-trained GNN's final join and the model's join propagate the same final pairs: the model reuses
    the GNN's propagation (about 25 s at FB15K-DB15K) and its output is the one it would compute itself."""
    from mmea.features import run_features
    from mmea.models.gaussian_strong import GaussianStrongModel

    def fitted():
        m = _model("gaussian-strong", epochs=1, anchor_gnn_lp=True, lp_weight=0.5, **_GNN)  # lp_heads 512 both
        m.fit(_mm_task(), run_features(_mm_task(), m.feature_requests(m.config), m.ctx))
        return m

    handed = fitted()
    assert handed.info["lp_fusion"]["propagation"] == "handed over"
    assert handed.info["anchors"]["lp_fusion"]["propagation"] == "computed"
    assert handed._gnn_propagation is None  # freed once used
    monkeypatch.setattr(GaussianStrongModel, "_take_propagation", lambda self, prop: None)
    own = fitted()
    assert own.info["lp_fusion"]["propagation"] == "computed"
    for x, y in zip(handed.embeddings(), own.embeddings()):
        np.testing.assert_array_equal(x, y)


def test_a_handed_propagation_is_used_only_for_its_own_pairs_heads_and_seed():
    from mmea.models import lp_join_math as lj

    task = _mm_task()
    graphs = lj.relation_graphs(task)
    emb = tuple(np.eye(8, 5, dtype=np.float32) for _ in range(2))
    pairs = np.asarray(task.train, np.int64)
    out, rec, prop = lj.join_label_propagation(emb, graphs, pairs, heads=2, seed=3, weight=0.5)
    assert rec["propagation"] == "computed" and prop.matches(pairs, 2, 3)

    def no_graphs():
        raise AssertionError("a handed-over propagation builds no graph")

    again, rec2, _ = lj.join_label_propagation(emb, no_graphs, pairs, heads=2, seed=3, weight=0.5, given=prop)
    assert rec2["propagation"] == "handed over"
    for x, y in zip(out, again):
        np.testing.assert_array_equal(x, y)
    for other in ((pairs[:-1], 2, 3), (pairs, 4, 3), (pairs, 2, 4), (pairs[::-1], 2, 3)):
        assert not prop.matches(*other)
        _, r, p = lj.join_label_propagation(emb, lambda: graphs, other[0], heads=other[1], seed=other[2],
                                            weight=0.5, given=prop)
        assert r["propagation"] == "computed" and p.matches(*other)


def test_the_joins_options_are_checked_up_front():
    from mmea.errors import MmeaInputError

    with pytest.raises(MmeaInputError, match="anchor_gnn_lp needs anchor_source = relational-gnn"):
        _model(anchor_gnn_lp=True)
    with pytest.raises(MmeaInputError, match="gaussian-strong: lp_weight must be <= 1"):
        _model(lp_weight=1.5)
    with pytest.raises(MmeaInputError, match="lp_weights entry in"):
        _model(lp_weight=-1.0, lp_weights=(0.5, 0.0))


def test_unknown_anchor_source_is_a_clear_error():
    from mmea.errors import MmeaInputError

    with pytest.raises(MmeaInputError, match="anchor_source must be one of label-propagation, relational-gnn"):
        _model(anchor_source="transe")


def test_a_constant_variance_gets_no_weight_in_the_combination():
    """The point twin's variances are frozen: the valid-fitted combination must not blow up on them."""
    from mmea.calibration import fit_margin_variance, variance_confidence_report

    rng = np.random.default_rng(1)
    margin = rng.uniform(0, 1, 200)
    correct = rng.uniform(size=200) < margin
    w, _ = fit_margin_variance(margin, np.full(200, 0.06), correct)
    assert w[2] == 0.0 and np.isfinite(w).all() and w[1] > 0
    half = {"margin": margin[:100], "uncertainty": np.full(100, 0.06), "correct": correct[:100]}
    rest = {"margin": margin[100:], "uncertainty": np.full(100, 0.06), "correct": correct[100:]}
    rep = variance_confidence_report(half, rest)
    assert rep["precision_margin_variance"] == rep["precision_margin"]


def test_an_orthogonal_anchor_head_starts_with_the_sources_geometry():
    from mmea.features import run_features

    task = _mm_task()
    m = _setup(_model("gaussian-strong", anchor_init="orthogonal", dim=24, **_GNN), task)  # input width 24
    w = m.net.heads["anchors"].mu.weight.detach()
    assert torch.allclose(w @ w.T, torch.eye(24), atol=1e-5)
    x = m.inputs["anchors"].numpy()
    m.net.eval()
    with torch.no_grad():
        mu = m.forward()[1]["anchors"][0].numpy()  # the anchors modality's means (the images have their own)
    mu = mu / np.linalg.norm(mu, axis=1, keepdims=True)
    cos_in, cos_out = x[:8] @ x[8:].T, mu[:8] @ mu[8:].T  # (8, 8) source x target cosines
    assert np.corrcoef(cos_in.ravel(), cos_out.ravel())[0, 1] > 0.95  # tanh bends it a little, no more
    fitted = _model("gaussian-strong", anchor_init="orthogonal", dim=24, epochs=1, **_GNN)
    fitted.fit(task, run_features(task, fitted.feature_requests(fitted.config), fitted.ctx))
    assert [h["epoch"] for h in fitted.info["history"]] == [0, 1]  # the untrained start is a candidate
    plain = _model("gaussian-strong", dim=24, epochs=1, **_GNN)
    plain.fit(task, run_features(task, plain.feature_requests(plain.config), plain.ctx))
    assert [h["epoch"] for h in plain.info["history"]] == [1]
    with pytest.raises(Exception, match="anchor_init must be default or orthogonal"):
        _model(anchor_init="eye")


def test_the_numbers_path_runs_at_numeric_dim_and_its_head_maps_to_dim():
    task = _mm_task()
    m = _setup(_model(numeric_dim=3), task)  # dim 8, the per-triple path 3 wide
    net = m.net
    assert net.rbf_proj.out_features == 3 and net.num_out.in_features == 4 * 3
    assert net.heads["numeric"].mu.in_features == 3 and net.heads["numeric"].mu.out_features == 8
    _, modal, (mu_e, _) = m.forward()
    assert modal["numeric"][0].shape == mu_e.shape == (task.source.num_entities + task.target.num_entities, 8)
    m.step(np.array([[0, 0], [1, 1], [2, 2], [3, 3]]))  # trains through the narrow path
    default = _setup(_model(), task)
    assert default.net.rbf_proj.out_features == 8  # 0: the path runs at dim


def test_demo_run_exports_the_uncertainty_and_lets_the_valid_links_decide_its_calibration(tmp_path):
    """Issue 17, 'variance as confidence' end to end on the demo pair: the uncertainty column, the validation
    evidence in calibration.json, and est_precision read from margin and variance when that is the curve."""
    import json

    import pandas as pd
    from click.testing import CliRunner

    from mmea.calibration import COMBINED, MIN_AUROC_GAIN, calibrated_alignment, load_calibration
    from mmea.cli import main
    from mmea.pipelines.align import run_align
    from mmea.pipelines.align_config import load_config

    cfg = load_config(None, ["model.name=gaussian-strong", "model.epochs=3", "features.names=off"])
    out = tmp_path / "run"
    m = run_align(cfg, out=out, quiet=True)["metrics"]
    assert "uncertainty" in pd.read_csv(out / "alignment.csv").columns
    assert m["search_pass"]["list_size"] == 64 and m["search_pass"]["redone_rows"] >= 0
    d = json.loads((out / "calibration.json").read_text())["variance"]
    assert d["fitted_on"] == "valid links" and d["n"] == m["split"]["valid"] and m["calibration"]["variance"] == d
    assert d["used"] == (d["auroc_combined_oof"] - d["auroc_margin"] >= MIN_AUROC_GAIN)
    assert m["calibration"]["feature"] == (COMBINED if d["used"] else "margin")
    # either curve on request; est_precision is the curve at the predicted pair's margin (and variance)
    for feature in ("margin", COMBINED):
        df, cal = calibrated_alignment(out, feature=feature)
        pred = df[df["_predicted"]]
        np.testing.assert_allclose(pred["est_precision"], cal.predict(cal.values(pred)))
        assert cal.feature == feature and load_calibration(out).feature == m["calibration"]["feature"]
    r = CliRunner().invoke(main, ["export", str(out), "--feature", COMBINED, "--min-precision", "0.5", "--json",
                                  "--out", str(tmp_path / "e.csv")])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["calibration"]["feature"] == COMBINED
    assert {"uncertainty", "est_precision"} <= set(pd.read_csv(tmp_path / "e.csv").columns)
    # a run whose curve reads margin and variance draws its precision-coverage section from both columns
    from mmea.calibration import ValidScores, refit_calibration
    from mmea.runs import write_json

    forced = refit_calibration(ValidScores.load(out / "valid_scores.npz"), COMBINED)
    write_json(out / "calibration.json", forced.to_dict())
    r = CliRunner().invoke(main, ["report", str(out)])
    assert r.exit_code == 0, r.output
    assert "precision against coverage" in (out / "report.html").read_text(encoding="utf-8")


def test_the_anchor_gnn_budget_can_count_its_final_join(monkeypatch):
    import mmea.models.relational_gnn as rg

    seen = []

    def capture(task, seeds, valid, cfg, **kw):
        seen.append(cfg)
        raise RuntimeError("captured")

    monkeypatch.setattr(rg, "cached_relational_gnn", capture)
    for counted in (False, True):
        m = _model(anchor_source="relational-gnn", anchor_gnn_lp=True, anchor_gnn_budget_counts_output=counted)
        with pytest.raises(RuntimeError, match="captured"):
            m._gnn_anchor_features(_mm_task())
    assert [c.budget_counts_output for c in seen] == [False, True]
    assert all(c.lp_proposals and c.lp_weight < 0 for c in seen)


def test_test_link_margins_read_the_search_pass():
    """link_confidence with the search pass's top 2 (pass_top2) equals its own CSLS search on the same rows."""
    from mmea.config import SearchConfig
    from mmea.evaluation import evaluation_rows
    from mmea.features import run_features
    from mmea.pipelines.align import pass_top2
    from mmea.search.onepass import search_once

    task = _mm_task()
    m = _model("gaussian-strong", epochs=2)
    m.fit(task, run_features(task, m.feature_requests(m.config), m.ctx))
    s, t = m.embeddings()
    src_rows, tgt_rows, _, q_tgt = evaluation_rows(task.test, len(s), len(t), "test")
    found = search_once(s, t, task.test[:, 0], tgt_rows, gold=q_tgt, eval_src=src_rows, topk=2)
    top = pass_top2(found, SearchConfig(), len(task.test))
    own, read = m.link_confidence(task.test), m.link_confidence(task.test, top=top)
    np.testing.assert_array_equal(read["correct"], own["correct"])
    np.testing.assert_allclose(read["margin"], own["margin"], atol=1e-6)
    np.testing.assert_allclose(read["uncertainty"], own["uncertainty"])
    assert pass_top2(found, SearchConfig(method="cos"), len(task.test)) is None
    assert pass_top2(None, SearchConfig(), len(task.test)) is None
