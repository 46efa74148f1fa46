"""The Gaussian common-space model (``gaussian``) and its point twin (``mmea-point``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmea.config import FeatureConfig
from mmea.pipelines.align_config import load_config
from mmea.models import MODELS, RunContext
from mmea.models.gaussian import (GaussianModel, MmeaPointModel, SameGraphUniformSampler, build_network,
                                  kl_rerank_ranks, relation_positives)
from mmea.models.gaussian_math import (alignment_loss, common_space_loss, kl_diagonal, modality_loss,
                                       modality_score, relation_score, symmetric_kl)
from mmea.sampling import TripleSet
from mmea.seeds import exchange_triples

T = torch.tensor


# ----------------------------------------------------------------------------- maths
def test_kl_diagonal_matches_closed_form_and_torch_distributions():
    # KL(N([0, 1], diag[1, 2]) || N([1, 1], diag[2, 2]))
    #   = 0.5 * [(1/2 + 2/2) + (1^2/2 + 0) - 2 + (ln 2 + ln 2) - (ln 1 + ln 2)] = 0.5 ln 2
    got = kl_diagonal(T([0.0, 1.0]), T([1.0, 2.0]), T([1.0, 1.0]), T([2.0, 2.0]))
    assert float(got) == pytest.approx(0.5 * math.log(2.0), abs=1e-6)

    from torch.distributions import Independent, Normal, kl_divergence

    g = torch.Generator().manual_seed(0)
    mu0, mu1 = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    v0, v1 = torch.rand(7, 5, generator=g) + 0.1, torch.rand(7, 5, generator=g) + 0.1
    ref = kl_divergence(Independent(Normal(mu0, v0.sqrt()), 1), Independent(Normal(mu1, v1.sqrt()), 1))
    assert torch.allclose(kl_diagonal(mu0, v0, mu1, v1), ref, atol=1e-5)
    assert torch.allclose(symmetric_kl(mu0, v0, mu1, v1), ref + kl_diagonal(mu1, v1, mu0, v0))
    assert float(kl_diagonal(mu0, v0, mu0, v0).abs().max()) < 1e-6


def test_relation_score_by_hand_uses_the_sum_of_covariances():
    mu_h, var_h = T([1.0, 0.0]), T([0.5, 1.0])
    mu_t, var_t = T([0.0, 1.0]), T([0.5, 1.0])
    # h - t ~ N([1, -1], diag[1, 2]): exactly N(mu_r, S_r) -> KL 0
    assert float(relation_score(mu_h, var_h, T([1.0, -1.0]), T([1.0, 2.0]), mu_t, var_t)) == pytest.approx(0, abs=1e-6)
    # against N(0, I): 0.5 * [(1 + 2) + (1 + 1) - 2 + 0 - ln 2] = 1.5 - 0.5 ln 2
    got = relation_score(mu_h, var_h, T([0.0, 0.0]), T([1.0, 1.0]), mu_t, var_t)
    assert float(got) == pytest.approx(-(1.5 - 0.5 * math.log(2.0)), abs=1e-6)
    # S_h - S_t (the paper's typo) would be 0 here and the score undefined; the sum stays finite
    assert torch.isfinite(relation_score(mu_h, var_h, mu_h, var_h, mu_h, var_h))


def test_losses_on_hand_made_cases():
    # eqs. 4/7: log(1 + exp(-f)); f = 0 -> ln 2; masked rows do not count
    f = modality_score(T([[0.0, 0.0], [1.0, 0.0]]), T(0.5), T([[0.0, 0.0], [0.0, 0.0]]), T(0.5))
    assert f.tolist() == pytest.approx([0.0, -1.0])  # KL(N(a, .5I) || N(b, .5I)) = ||a - b||^2
    assert float(modality_loss(f)) == pytest.approx((math.log(2) + math.log(1 + math.e)) / 2, abs=1e-6)
    assert float(modality_loss(f, T([True, False]))) == pytest.approx(math.log(2), abs=1e-6)
    # eq. 9: KL(e1 || e2) averaged over links
    mu1, mu2 = T([[0.0, 0.0], [2.0, 0.0]]), T([[0.0, 0.0], [0.0, 0.0]])
    assert float(alignment_loss(mu1, T(0.5), mu2, T(0.5))) == pytest.approx(2.0)
    # eq. 8 with masks: entity 0 has no image, so its image term is absent (and gets no gradient)
    e = (torch.zeros(2, 2), T(0.5))
    rel = (T([[1.0, 0.0], [0.0, 0.0]]), T(0.5))
    img_mu = T([[3.0, 0.0], [0.0, 1.0]], requires_grad=True)
    loss = common_space_loss(e, [rel, (img_mu, T(0.5))], [None, T([False, True])])
    assert float(loss.detach()) == pytest.approx((1.0 + 0.0 + 1.0) / 2)
    loss.backward()
    assert img_mu.grad[0].abs().sum() == 0 and img_mu.grad[1].abs().sum() > 0


def test_exchange_strategy_adds_the_swapped_triples():
    # source entities 0..2, target entities 3..5 (one id space); links (0, 3) and (2, 5)
    triples = np.array([[0, 0, 1], [1, 1, 2], [3, 2, 4], [4, 3, 5]])
    extra = exchange_triples(triples, np.array([[0, 3], [2, 5]]))
    assert sorted(map(tuple, extra.tolist())) == [(0, 2, 4), (1, 1, 5), (3, 0, 1), (4, 3, 2)]
    # nothing already present is added again
    assert len(exchange_triples(np.concatenate([triples, extra]), np.array([[0, 3], [2, 5]]))) == 0


def _mm_task(n: int = 8, seed: int = 0):
    """Two copies of an 8-entity chain with images on some entities and numeric attributes on others."""
    from mmea.data import AlignmentTask, KnowledgeGraph

    rng = np.random.default_rng(seed)
    tr = np.array([[i, i % 2, i + 1] for i in range(n - 1)] + [[0, 1, 4], [2, 0, 6]])
    pix = rng.normal(size=(n, 12)).astype(np.float32)
    kgs = []
    for side in range(2):
        mask = np.ones(n, dtype=bool)
        mask[[1, 5] if side == 0 else [2]] = False  # entities without images
        feats = np.where(mask[:, None], pix + 0.05 * rng.normal(size=pix.shape), 0).astype(np.float32)
        ent = np.array([0, 3, 4, 6, 7])
        attr = np.arange(len(ent)) % 2
        values = (ent * 10.0 + side).astype(np.float64)
        kgs.append(KnowledgeGraph(
            f"kg{side}", [str(i) for i in range(n)], [f"u{side}:{i}" for i in range(n)], [""] * n,
            [f"r{side}a", f"r{side}b"], tr, ["population", "area"], np.stack([ent, attr], 1),
            values.astype(str).astype(object), values, image_features=feats, image_mask=mask))
    links = np.stack([np.arange(n), np.arange(n)], 1)
    return AlignmentTask("mm", kgs[0], kgs[1], links[:4], links[4:6], links[6:])


def _model(name="gaussian", **params):
    cls = MODELS.get(name)
    return cls(cls.Config(**params), RunContext(seed=0, features=FeatureConfig(name_encoder="char-ngram"),
                                                cache_root=None))


def _features(m, task):
    """The features the model requests, as the align pipeline computes them before ``fit``."""
    from mmea.features import run_features

    return run_features(task, m.feature_requests(m.config), m.ctx)


def test_negatives_stay_in_their_kg_and_never_hit_d_plus():
    task = _mm_task()
    triples, n_ent, n_rel, n_ex = relation_positives(task, task.train)
    assert n_ex > 0 and n_ent == 16 and n_rel == 4
    sampler = SameGraphUniformSampler(triples, n_ent, n_rel, num_source=8, seed=0)
    ns = sampler.sample_with_info(triples, 20)
    assert ns.valid.all()
    assert not TripleSet(triples, n_ent, n_rel).contains(ns.negatives).any()
    kept = np.where(ns.sides, triples[:, None, 0], triples[:, None, 2])  # (B, K) the replaced entity's KG
    assert ((ns.replacements < 8) == (kept < 8)).all()


# ----------------------------------------------------------------------------- the model
def test_stage_switch_and_variance_clamp():
    m = _model(epochs=1)
    task = _mm_task()
    m.setup(task, _features(m, task))
    net = m.net
    assert net.stage == 1 and not net.common.var.requires_grad
    assert net.common(torch.arange(3))[1].dim() == 0  # frozen variances: the scalar 0.5
    before = net.common.var.detach().clone()
    loss = alignment_loss(*net.common(T([0, 1])), *net.common(T([8, 9])))
    m._step("ac", loss)
    assert torch.equal(net.common.var, before)  # stage 1: variances do not move
    net.set_stage(2)
    assert net.common.var.requires_grad and net.common(torch.arange(3))[1].shape == (3, m.config.dim)
    with torch.no_grad():
        net.common.var[0, 0], net.common.var[1, 0] = 0.01, 1e3
    m._step("ac", alignment_loss(*net.common(T([0, 1])), *net.common(T([8, 9]))))  # step, then clamp
    v = net.common.var.detach()
    assert float(v.min()) >= 0.5 and float(v.max()) <= 50.0 and not torch.equal(v, before)


def test_replaced_scores_equal_the_scores_of_the_explicit_negatives():
    m = _model()
    task = _mm_task()
    m.setup(task, _features(m, task))
    batch = torch.as_tensor(m.data.triples[:5])
    ns = m.sampler.sample_with_info(m.data.triples[:5], 3)
    neg = torch.as_tensor(ns.negatives)  # (5, 3, 3)
    for stage in (1, 2):
        m.net.set_stage(stage)
        if stage == 2:
            with torch.no_grad():  # distinct variances, so a mix-up of rows would show
                m.net.rel_ent.var.uniform_(0.5, 3.0)
                m.net.relations.var.uniform_(0.5, 3.0)
        pos, negs = m.net.relation_scores_replaced(batch, torch.as_tensor(ns.sides), torch.as_tensor(ns.replacements))
        assert torch.allclose(pos, m.net.relation_scores(batch[:, 0], batch[:, 1], batch[:, 2]), atol=1e-5)
        assert torch.allclose(negs, m.net.relation_scores(neg[..., 0], neg[..., 1], neg[..., 2]), atol=1e-5)


def test_fit_runs_both_stages_and_entities_without_images_get_no_visual_term():
    # eval_every > epochs: validation only after the last round, so the kept state is the final one
    m = _model(epochs=6, stage1_epochs=3, lr=0.05, batch_size=16, entity_batch_size=4, numeric_batch_size=4,
               eval_every=100)
    task = _mm_task()
    m.setup(task, _features(m, task))
    vis0, num0 = m.net.vis_ent.mu.detach().clone(), m.net.num_ent.mu.detach().clone()
    m.train()
    assert m.info["stage2_from_round"] == 4 and m.info["rounds"] == 6
    no_img = ~m.data.has_image  # source 1, 5 and target 2 (= joint 10)
    assert np.flatnonzero(no_img).tolist() == [1, 5, 10]
    vis = m.net.vis_ent.mu.detach()
    # neither L_vis nor the image term of L_csl touched the entities without an image; the others moved
    assert torch.equal(vis[no_img], vis0[no_img]) and not torch.equal(vis[~no_img], vis0[~no_img])
    no_num = ~m.data.has_numeric
    assert torch.equal(m.net.num_ent.mu.detach()[no_num], num0[no_num])
    assert m.info["image_features"]["source"] == "features"  # precomputed, through mmea.features
    var = m.net.common.var.detach()
    assert float(var.min()) >= 0.5 and float(var.max()) <= 50.0 and float(var.max()) > 0.5
    rep = m.info["variances"]
    assert rep["common"]["images"]["n_without"] == 3 and rep["modality_space"]["images"]["without"] == 0.5
    last = m.info["variances_last"]  # the final state here is the kept one, so both reports agree
    assert last["round"] == 6 and {k: v for k, v in last.items() if k != "round"} == rep
    s, t = m.embeddings()
    assert s.shape == (8, m.config.dim) and np.allclose(np.linalg.norm(t, axis=1), 1, atol=1e-5)


def test_point_twin_has_no_variances_and_shares_everything_else():
    assert MmeaPointModel.Config().point and not GaussianModel.Config().point
    via_set = load_config(None, ["model.name=gaussian", "point=true"]).model
    via_name = load_config(None, ["model.name=mmea-point"]).model
    assert {k: v for k, v in via_set.items() if k != "name"} == {k: v for k, v in via_name.items() if k != "name"}
    task = _mm_task()
    nets = {}
    for name in ("gaussian", "mmea-point"):
        m = _model(name)
        m.data = m.prepare(task, _features(m, task))
        torch.manual_seed(0)
        nets[name] = build_network(m.data, m.config)
    g, p = (dict(nets[k].named_parameters()) for k in ("gaussian", "mmea-point"))
    assert not any(k.endswith(".var") for k in p)
    assert {k for k in g if not k.endswith(".var")} == set(p)
    assert all(g[k].shape == p[k].shape for k in p)
    p_net = nets["mmea-point"]
    p_net.set_stage(2)  # nothing to unfreeze
    mu, var = p_net.common(torch.arange(4))
    assert var.dim() == 0 and float(var) == 0.5
    # with every variance 0.5 the relational KL is TransE's squared distance plus a constant
    h, r, t = torch.randn(3, 4, 6).unbind(0)
    half = T(0.5)
    d = ((h - t - r) ** 2).sum(-1)
    const = 0.5 * 6 * (1.0 - math.log(2.0))
    assert torch.allclose(-relation_score(h, half, r, half, t, half), d + const, atol=1e-5)


def test_kl_rerank_reorders_only_the_top_k():
    # query 0's gold (target 1) is second by cosine but closest by symmetric KL (variances differ)
    mu_s = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    mu_t = np.array([[1.0, 0.05], [1.0, 0.3], [0.0, 1.0]], np.float32)
    var_s = np.array([[5.0, 5.0], [0.5, 0.5]], np.float32)
    var_t = np.array([[0.5, 0.5], [5.0, 5.0], [0.5, 0.5]], np.float32)
    links = np.array([[0, 1], [1, 2]])
    ranks = kl_rerank_ranks(mu_s, var_s, mu_t, var_t, links, candidates="all", csls_k=1, k=2)
    assert ranks.tolist() == [1, 1]
    assert kl_rerank_ranks(mu_s, var_s, mu_t, var_t, links, candidates="all", csls_k=1, k=1).tolist() == [2, 1]


# ----------------------------------------------------------------------------- the demo pair
# a short budget (about 15 s on 2 cores): 10 rounds, a smaller space, larger steps than the defaults
DEMO_SETTINGS = ["model.epochs=10", "model.stage1_epochs=7", "model.dim=64", "model.lr=0.03", "model.entity_lr=0.03",
                 "model.batch_size=2048", "model.entity_batch_size=256"]


def test_demo_pair_learns_with_all_three_modalities(tmp_path):
    from mmea.pipelines.align import run_align

    cfg = load_config(None, ["data.src=demo_src", "data.tgt=demo_tgt", "features.name_encoder=char-ngram",
                             "model.name=gaussian", *DEMO_SETTINGS])
    m = run_align(cfg, out=tmp_path / "run", quiet=True)["metrics"]
    info = m["model_info"]
    assert info["image_features"]["source"] == "pixels"  # no CNN weights offline: raw pixels, noted
    assert info["modalities"]["images"] > 3000 and info["modalities"]["numeric"] > 3000
    assert all(h["losses"]["vis"] is not None and h["losses"]["num"] is not None for h in info["history"])
    assert info["triples"]["exchange"] > 0
    # measured: H@1 0.087, MRR 0.156 with these settings (mmea-point: 0.079, 0.152); untrained
    # (model.epochs=0) H@1 0.000, MRR 0.004; chance 1 / 1400 = 0.0007
    assert m["test"]["hits@1"] >= 0.03 and m["test"]["mrr"] >= 0.06, m["test"]
    assert "src->tgt/csls+kl-rerank" in m["test_by_method"]
