"""relational-gnn (mmea.models.relational_gnn): the union graph, relation-aware attention on a hand-computed
4-node example, the normalised hard-sample loss against a direct reference, learning on the demo pair without
names, bootstrapping (no entity proposed twice, no test link read), resume exactness, the GPU path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmea.checkpoint import Checkpointer, TrainingInterrupted
from mmea.data.graph import AlignmentTask, KnowledgeGraph
from mmea.errors import MmeaInputError
from mmea.models import MODELS, RunContext
from mmea.models import relational_gnn_math as gm
from mmea.models.relational_gnn_nn import EdgeSet, RelationalGnn, byte_dropout

from kg_fixtures import PoisonedTask  # noqa: E402

CLS = MODELS.get("relational-gnn")
SMALL = dict(dim=16, layers=2, epochs=6, batch_size=64, hard_negatives=8, patience=0, num_threads=1)


def _kg(name: str, n: int, triples, num_relations: int) -> KnowledgeGraph:
    ids = [f"{name}{i}" for i in range(n)]
    return KnowledgeGraph(name, ids, ids, [""] * n, [f"r{k}" for k in range(num_relations)],
                          np.asarray(triples, dtype=np.int64).reshape(-1, 3))


def _task(poisoned=False, n=150, n_triples=600, n_rel=5, seed=0):
    """A random KG and a relabelled copy; 30% train, 10% valid, the rest test."""
    rng = np.random.default_rng(seed)
    h, t, r = rng.integers(0, n, n_triples), rng.integers(0, n, n_triples), rng.integers(0, n_rel, n_triples)
    perm = rng.permutation(n)
    src, tgt = _kg("s", n, np.stack([h, r, t], 1), n_rel), _kg("t", n, np.stack([perm[h], r, perm[t]], 1), n_rel)
    gold = np.stack([np.arange(n), perm], 1)[rng.permutation(n)]
    parts = gold[:45], gold[45:60], gold[60:]
    task = (PoisonedTask if poisoned else AlignmentTask)("syn", src, tgt, *parts)
    task.armed = poisoned
    return task


def _fit(task, **params):
    model = CLS(CLS.Config(**{**SMALL, **params}), RunContext(seed=0))
    model.fit(task)
    return model


# ------------------------------------------------------------------ the graph and the attention
def test_union_graph_keeps_relations_apart_with_inverse_edges_and_self_loops():
    g = gm.union_graph(np.array([[0, 0, 1]]), np.array([[0, 0, 1], [0, 0, 1]]), 2, 2, 1, 1)
    edges = set(zip(g["receivers"].tolist(), g["senders"].tolist(), g["relations"].tolist()))
    # R = 2 relations (source 0, target 1); inverses R + r; self loop 2R = 4
    assert edges == {(0, 1, 0), (1, 0, 2), (2, 3, 1), (3, 2, 3), (0, 0, 4), (1, 1, 4), (2, 2, 4), (3, 3, 4)}
    assert (g["num_entities"], g["num_relations"], g["num_triples"]) == (4, 5, 3)


def test_relation_aware_attention_matches_a_hand_computed_4_node_example():
    # one KG, 4 entities, relations a (0) and b (1): 0 -a-> 1, 0 -b-> 2, 3 -a-> 0; d = 2
    g = gm.union_graph(np.array([[0, 0, 1], [0, 1, 2], [3, 0, 0]]), np.zeros((0, 3)), 4, 0, 2, 0)
    net = RelationalGnn(g, dim=2, layers=1, dropout=0.0)
    rel = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0], [1.0, 1.0], [0.0, 1.0]])  # a, b, a^-1, b^-1, self
    kernel = torch.tensor([[1.0, 0.0]])  # logit of an edge = first coordinate of its unit relation
    h0 = torch.tensor([[0.5, 0.0], [0.0, 0.5], [0.2, -0.4], [-0.3, 0.1]])  # tanh(x) of the view
    with torch.no_grad():
        net.relation.copy_(rel)
        h1 = net._view(torch.atanh(h0), kernel, torch.nn.functional.normalize(rel, dim=-1), net.edges)[1]
    # entity 0 receives: from 1 via a (r = (1, 0), logit 1), from 2 via b (r = (0, 1), logit 0),
    # from 3 via a^-1 (r = (.6, .8), logit .6), itself via self (r = (0, 1), logit 0)
    e = np.exp([1.0, 0.0, 0.6, 0.0])
    w = e / e.sum()
    m1 = np.array([0.0, 0.5])                          # (0, .5) reflected on (1, 0): x flips
    m2 = np.array([0.2, 0.4])                          # (.2, -.4) reflected on (0, 1): y flips
    c = -0.3 * 0.6 + 0.1 * 0.8                         # r^T h of (-.3, .1) on (.6, .8) = -0.1
    m3 = np.array([-0.3, 0.1]) - 2 * c * np.array([0.6, 0.8])
    m4 = np.array([0.5, 0.0])                          # (.5, 0) reflected on (0, 1): unchanged
    expected0 = np.tanh(w[0] * m1 + w[1] * m2 + w[2] * m3 + w[3] * m4)
    np.testing.assert_allclose(h1[0].numpy(), expected0, atol=1e-6)
    # entity 1 receives from 0 via a^-1 and itself via self loop
    e1 = np.exp([0.6, 0.0])
    w1 = e1 / e1.sum()
    c1 = 0.5 * 0.6
    expected1 = np.tanh(w1[0] * (np.array([0.5, 0.0]) - 2 * c1 * np.array([0.6, 0.8])) + w1[1] * np.array([0.0, -0.5]))
    np.testing.assert_allclose(h1[1].numpy(), expected1, atol=1e-6)


def _gathered_layer(h, r_hat, kernel, recv, send, rel):
    """The layer written edge by edge over gathered ``(E, d)`` rows: the reference for the sparse kernels."""
    att = gm.segment_softmax(r_hat[rel] @ kernel, recv, len(h))  # (E,)
    msg = att[:, None] * gm.reflect(h[send], r_hat[rel])  # (E, d)
    return torch.tanh(torch.zeros_like(h).index_add(0, recv, msg))


def test_sparse_kernel_layer_equals_the_gathered_layer_with_gradients():
    rng = np.random.default_rng(3)
    n, nr, e, d = 40, 7, 300, 5
    recv, send, rel = rng.integers(0, n, e), rng.integers(0, n, e), rng.integers(0, nr, e)  # repeats included
    recv[:5], send[:5], rel[:5] = 2, 3, np.array([1, 1, 4, 4, 4])
    g = {"receivers": recv, "senders": send, "relations": rel, "num_entities": n, "num_relations": nr}
    net = RelationalGnn(g, dim=d, layers=1, dropout=0.0, proxy=False)
    torch.manual_seed(0)
    x, r, k = (torch.randn(*s, dtype=torch.float64, requires_grad=True) for s in ((n, d), (nr, d), (d,)))
    r_hat = torch.nn.functional.normalize(r, dim=-1)
    ours = net._view(x, k[None], r_hat, EdgeSet(recv, send, rel, n, nr))[1]
    ref = _gathered_layer(torch.tanh(x), r_hat, k, *(torch.from_numpy(a) for a in (recv, send, rel)))
    np.testing.assert_allclose(ours.detach().numpy(), ref.detach().numpy(), atol=1e-12)
    w = torch.randn(n, d, dtype=torch.float64)
    grads = [torch.autograd.grad((out * w).sum(), (x, r, k), retain_graph=True) for out in (ours, ref)]
    for a, b in zip(*grads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-10)


def test_two_runs_with_the_same_seed_give_the_same_embeddings_on_two_threads():
    task = _task()
    a, b = (_fit(task, epochs=3, num_threads=2).embeddings() for _ in range(2))
    junk = torch.empty(12345)  # noqa: F841 - the second run's tensors at other addresses
    c = _fit(task, epochs=3, num_threads=2).embeddings()
    for x, y, z in zip(a, b, c):
        assert np.array_equal(x, y) and np.array_equal(x, z)


def test_segment_softmax_sums_to_one_per_receiver():
    a = gm.segment_softmax(torch.tensor([1.0, 2.0, 3.0, -1.0]), torch.tensor([0, 0, 2, 2]), 3)
    np.testing.assert_allclose([a[:2].sum().item(), a[2:].sum().item()], [1.0, 1.0], atol=1e-6)


# ------------------------------------------------------------------ the loss
def _reference_loss(src, tgt, pairs, gamma=1.0, lamb=30.0):
    """Dual-AMN's loss written directly, one row at a time: negatives = every other entity of the other KG."""
    total = 0.0
    for a, b in pairs:
        pos = ((src[a] - tgt[b]) ** 2).sum()
        for anchor, cands, partner in ((src[a], tgt, b), (tgt[b], src, a)):
            x = torch.stack([gamma + pos - ((anchor - cands[n]) ** 2).sum() for n in range(len(cands)) if n != partner])
            mean, std = x.detach().mean(), x.detach().std(unbiased=False)
            total = total + torch.logsumexp(lamb * (x - mean) / std, 0)
    return total / len(pairs)


def _loss_by_model(src, tgt, pairs, k=None):
    pairs = torch.as_tensor(pairs)
    a, b = src[pairs[:, 0]], tgt[pairs[:, 1]]
    pos = ((a - b) ** 2).sum(-1)
    total = 0.0
    for anchor, cands, partner in ((a, tgt, pairs[:, 1]), (b, src, pairs[:, 0])):
        if k is None:
            mask = torch.ones(len(anchor), len(cands), dtype=torch.bool).scatter_(1, partner[:, None], False)
            total = total + gm.normalized_hard_loss(pos, gm.squared_distances(anchor, cands), mask)
        else:
            ids, stats = gm.mined_negatives(anchor, cands, partner, pos, k, block=2)
            neg = ((anchor[:, None, :] - cands[ids]) ** 2).sum(-1)
            total = total + gm.normalized_hard_loss(pos, neg, stats=stats)
    return total


@pytest.mark.parametrize("k", [None, 4])  # every candidate; the mined form with all 4 other candidates
def test_normalized_hard_loss_and_its_gradient_match_a_direct_reference(k):
    g = torch.Generator().manual_seed(0)
    src0, tgt0 = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    pairs = [[0, 1], [2, 2], [4, 0]]
    grads = []
    for fn in (lambda s, t: _reference_loss(s, t, pairs), lambda s, t: _loss_by_model(s, t, pairs, k)):
        s, t = src0.clone().requires_grad_(), tgt0.clone().requires_grad_()
        loss = fn(s, t)
        loss.backward()
        grads.append((loss.item(), s.grad, t.grad))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads[0][2], grads[1][2], rtol=1e-4, atol=1e-5)


def test_mined_negatives_keep_the_hardest_and_the_full_row_statistics():
    anchor = torch.tensor([[0.0, 0.0]])
    cands = torch.tensor([[0.1, 0.0], [3.0, 0.0], [0.2, 0.0], [1.0, 0.0]])  # partner at 0 (nearest)
    ids, (mean, std) = gm.mined_negatives(anchor, cands, torch.tensor([0]), torch.tensor([0.01]), 2, gamma=1.0)
    assert ids.tolist() == [[2, 3]]  # the partner is never a negative
    x = 1.0 + 0.01 - torch.tensor([0.04, 9.0, 1.0])
    assert mean.item() == pytest.approx(x.mean().item()) and std.item() == pytest.approx(x.std(unbiased=False).item())


def test_scan_statistics_equal_the_closed_form_over_many_blocks():
    g = torch.Generator().manual_seed(4)
    cands = torch.randn(300, 6, generator=g) + 2.0
    anchor = cands[:5] + 0.1 * torch.randn(5, 6, generator=g)
    excluded = torch.stack([torch.arange(5), torch.arange(5) + 100], 1)  # (5, 2)
    pos = torch.rand(5, generator=g)
    _, scanned = gm.mined_negatives(anchor, cands, excluded, pos, 4, block=64)
    closed = gm.candidate_stats(anchor, cands, excluded, pos)
    for a, b in zip(scanned, closed):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_byte_dropout_drops_at_the_rounded_rate_and_keeps_the_mean():
    torch.manual_seed(0)
    y = byte_dropout(torch.ones(400, 500), 0.3)
    assert (y == 0).float().mean().item() == pytest.approx(77 / 256, abs=0.005)
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)
    assert torch.equal(byte_dropout(torch.ones(3, 3), 0.0), torch.ones(3, 3))


def test_without_self_loops_the_entity_mean_still_counts_the_entity():
    g = gm.union_graph(np.array([[0, 0, 1]]), np.zeros((0, 3)), 3, 0, 1, 0, self_loops=False)
    assert set(zip(g["receivers"].tolist(), g["senders"].tolist())) == {(0, 1), (1, 0)}
    net = RelationalGnn(g, dim=2, layers=1, dropout=0.0)
    dense = net.ent_mean.to_dense().numpy()
    np.testing.assert_allclose(dense, [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])  # entity 2: alone


def test_mined_negatives_over_both_kgs_leave_out_the_anchor_and_its_partner():
    g = torch.Generator().manual_seed(1)
    every = torch.randn(7, 3, generator=g)  # both KGs' entities; the pair is (1, 5)
    anchor, pos = every[1:2], ((every[1] - every[5]) ** 2).sum()[None]
    ids, (mean, std) = gm.mined_negatives(anchor, every, torch.tensor([[1, 5]]), pos, 3, gamma=1.0)
    keep = [0, 2, 3, 4, 6]
    d = ((every[keep] - every[1]) ** 2).sum(-1)
    x = 1.0 + pos - d
    assert set(ids[0].tolist()) == {keep[i] for i in torch.argsort(d)[:3].tolist()}
    assert mean.item() == pytest.approx(x.mean().item(), rel=1e-5)
    assert std.item() == pytest.approx(x.std(unbiased=False).item(), rel=1e-5)
    with pytest.raises(MmeaInputError, match="negatives_from must be one of"):
        CLS.Config(negatives_from="same")


# ------------------------------------------------------------------ the model
def test_config_errors_are_clear():
    with pytest.raises(MmeaInputError, match="negatives must be one of"):
        CLS.Config(negatives="some")
    task = _task()
    empty = AlignmentTask("e", task.source, task.target, np.zeros((0, 2), np.int64), task.valid, task.test)
    with pytest.raises(MmeaInputError, match="needs seed links"):
        _fit(empty)


def test_requests_no_feature_and_records_names_off():
    assert CLS.feature_requests(CLS.Config()) == {}
    m = _fit(_task(), epochs=2)
    info = m.info
    assert info["names_used"] is False and info["layers"] == 2 and info["out_dim"] == 2 * 3 * 16
    assert info["epochs_run"] == 2 and info["stopped"] == "max_epochs" and not info["iterative"]
    s, t = m.embeddings()
    assert s.shape == (150, 96) and t.shape == (150, 96) and s.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(s, axis=1), 1.0, atol=1e-5)


def test_bootstrapping_never_proposes_an_entity_twice_and_never_reads_test_links():
    kw = dict(epochs=4, iterations=3, iteration_epochs=2)
    m = _fit(_task(poisoned=True), **kw)  # reading task.test would raise
    pairs = m.pairs
    assert len(np.unique(pairs[:, 0])) == len(pairs) and len(np.unique(pairs[:, 1])) == len(pairs)
    assert sum(m.info["pairs_added_per_round"]) == len(pairs) - 45 > 0
    assert m.info["iterative"] and m.info["rounds"][0]["round"] == 1
    clean = _fit(_task(), **kw)  # the same task, test links readable: the same proposals
    np.testing.assert_array_equal(clean.pairs, pairs)


def test_resumed_training_equals_the_uninterrupted_run(tmp_path):
    task = _task()

    def run(ckpt):
        ckpt.run_dir.mkdir(exist_ok=True)
        model = CLS(CLS.Config(**{**SMALL, "epochs": 4}), RunContext(seed=0, checkpoint=ckpt))
        with ckpt.guard():
            model.fit(task)
        return model

    whole = run(Checkpointer(tmp_path / "a"))
    with pytest.raises(TrainingInterrupted):
        run(Checkpointer(tmp_path / "b", every=0, stop_after_epochs=2))
    ckpt = Checkpointer(tmp_path / "b")
    ckpt.load()
    resumed = run(ckpt)
    assert resumed.info["epochs_run"] == 4 and ckpt.resumed_from == 2
    for a, b in zip(whole.embeddings(), resumed.embeddings()):
        np.testing.assert_array_equal(a, b)


def test_demo_pair_without_names_learns():
    """The demo pair (2,250 entities a side, 30% seeds), no names: H@1 far above chance (1 / 1,400)."""
    from mmea.data.catalog import load_pair_task
    from mmea.evaluation import evaluate_embeddings

    task = load_pair_task("demo_src", "demo_tgt", seed_ratio=0.3, seed=0)
    m = _fit(task, dim=32, epochs=8, batch_size=512, hard_negatives=16, num_threads=2)
    s, t = m.embeddings()
    h1 = evaluate_embeddings(s, t, np.asarray(task.test), candidates="test")["test"]["hits@1"]
    assert h1 >= 0.2, h1  # measured 0.449 with these settings (about 5 s); chance: 1 / 1,400 = 0.0007


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_trains_on_cuda():
    model = CLS(CLS.Config(**SMALL), RunContext(seed=0, device="cuda"))
    model.fit(_task())
    assert model.net.entity.is_cuda and model.info["device"].startswith("cuda")
    s, t = model.embeddings()
    assert np.isfinite(s).all() and np.isfinite(t).all() and model.info["best_valid"] > 0.1


def test_hardest_negatives_blockwise_equal_the_full_top_k_and_skip_the_excluded():
    g = torch.Generator().manual_seed(3)
    anchor, cands = torch.randn(7, 5, generator=g), torch.randn(50, 5, generator=g)
    excluded = torch.randint(0, 50, (7, 2), generator=g)
    d = gm.squared_distances(anchor, cands).scatter_(1, excluded, float("inf"))
    full = torch.topk(d, 6, dim=1, largest=False).indices
    for block in (4, 7, 50, 4096):  # blocks smaller than k, uneven, one block
        ids = gm.hardest_negatives(anchor, cands, excluded, 6, block=block)
        assert [set(r) for r in ids.tolist()] == [set(r) for r in full.tolist()]


def test_candidate_statistics_stay_accurate_in_float32_far_from_the_origin():
    g = torch.Generator().manual_seed(4)
    cands = (torch.randn(2000, 16, generator=g, dtype=torch.float64) * 0.01 + 30.0)  # centred far away
    anchor, excluded, pos = cands[:3] + 0.001, torch.tensor([[0], [1], [2]]), torch.tensor([0.5, 0.2, 0.1],
                                                                                          dtype=torch.float64)
    mean, std = gm.candidate_stats(anchor.float(), cands.float(), excluded, pos.float())
    for i in range(3):
        keep = torch.ones(2000, dtype=torch.bool)
        keep[i] = False
        x = 1.0 + pos[i] - ((cands[keep] - anchor[i]) ** 2).sum(-1)
        assert mean[i, 0].item() == pytest.approx(x.mean().item(), rel=1e-4)
        assert std[i, 0].item() == pytest.approx(x.std(unbiased=False).item(), rel=1e-3)


def test_kept_negative_pools_learn_and_first_minutes_is_validated():
    from mmea.data.catalog import load_pair_task
    from mmea.evaluation import evaluate_embeddings

    task = load_pair_task("demo_src", "demo_tgt", seed_ratio=0.3, seed=0)
    m = _fit(task, dim=32, epochs=8, batch_size=512, hard_negatives=16, pool=48, refresh_every=3, num_threads=2)
    s, t = m.embeddings()
    h1 = evaluate_embeddings(s, t, np.asarray(task.test), candidates="test")["test"]["hits@1"]
    assert h1 >= 0.2, h1  # chance: 1 / 1,400
    from mmea.config import build_dataclass

    with pytest.raises(MmeaInputError, match="first_minutes"):
        build_dataclass(CLS.Config, {"first_minutes": -1.0}, "model")


# ------------------------------------------------------------------ mini-batches with neighbour sampling
def test_sampled_subgraph_is_the_exact_neighbourhood_when_the_fanout_covers_every_degree():
    task = _task()
    g = gm.union_graph(task.source.triples, task.target.triples, 150, 150, 5, 5)
    indptr = gm.receiver_indptr(g["receivers"], g["num_entities"])
    seeds = np.array([3, 160, 42])
    nodes, edges = gm.sampled_subgraph(indptr, g["senders"], seeds, 10**6, 2, np.random.default_rng(0))
    hop1 = np.isin(g["receivers"], seeds)
    n1 = np.union1d(seeds, g["senders"][hop1])
    hop2 = np.isin(g["receivers"], np.setdiff1d(n1, seeds))
    np.testing.assert_array_equal(edges, np.flatnonzero(hop1 | hop2))
    np.testing.assert_array_equal(nodes, np.union1d(n1, g["senders"][hop2]))
    # a small fanout bounds each frontier node's sampled in-edges, deterministically for a seed
    a = gm.sampled_subgraph(indptr, g["senders"], seeds, 2, 2, np.random.default_rng(1))
    b = gm.sampled_subgraph(indptr, g["senders"], seeds, 2, 2, np.random.default_rng(1))
    np.testing.assert_array_equal(a[1], b[1])
    per_seed = np.bincount(g["receivers"][a[1]], minlength=300)[seeds]
    assert (per_seed <= 2).all() and len(a[1]) < len(edges)


def test_subgraph_forward_equals_the_full_forward_on_the_seeds():
    """With every in-edge kept for L hops, the seeds' outputs over the subgraph are the full graph's."""
    task = _task()
    m = _fit(task, epochs=1)
    net = m.net.eval()
    indptr = gm.receiver_indptr(m.graph["receivers"], m.graph["num_entities"])
    seeds = np.array([0, 7, 151, 299])
    nodes, edges = gm.sampled_subgraph(indptr, m.graph["senders"], seeds, 10**6, 2, np.random.default_rng(0))
    with torch.no_grad():
        full, sub = net()[seeds], net(nodes, edges)[np.searchsorted(nodes, seeds)]
    np.testing.assert_allclose(sub.numpy(), full.numpy(), atol=1e-5)


def test_sampled_mini_batches_learn_on_the_demo_pair_and_record_the_sampling():
    from mmea.data.catalog import load_pair_task
    from mmea.evaluation import evaluate_embeddings

    task = load_pair_task("demo_src", "demo_tgt", seed_ratio=0.3, seed=0)
    m = _fit(task, dim=32, epochs=8, batch_size=256, fanout=8, negative_samples=512, num_threads=2)
    s, t = m.embeddings()
    h1 = evaluate_embeddings(s, t, np.asarray(task.test), candidates="test")["test"]["hits@1"]
    info = m.info["sampling"]
    assert h1 >= 0.15, h1  # chance: 1 / 1,400
    assert info["fanout"] == 8 and info["steps"] > 0 and 0 < info["mean_nodes"] < 4500
    assert "sampled" in m.info["negatives"]


def test_joined_label_propagation_weighs_the_cosines_and_is_chosen_on_valid_links():
    task = _task(poisoned=True)  # reading task.test would raise
    plain = _fit(task, epochs=3)
    joined = _fit(task, epochs=3, lp_weight=0.5, lp_heads=8)
    g, lp = plain.embeddings(), joined.embeddings()
    assert lp[0].shape == (150, 96 + 8 * 16) and lp[0].dtype == np.float32
    for side in (0, 1):  # the GNN part: the same output scaled by sqrt(1 - w) where the label part is not empty
        part = lp[side][:, 96:]
        full = np.linalg.norm(part, axis=1) > 0.5
        assert full.mean() > 0.9
        np.testing.assert_allclose(lp[side][full, :96], np.sqrt(0.5) * g[side][full], atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(part[full], axis=1), np.sqrt(0.5), atol=1e-5)
    assert joined.info["lp_fusion"]["weight"] == 0.5 and joined.info["lp_fusion"]["chosen_by"] == "set"
    chosen = _fit(task, epochs=3, lp_weight=-1.0, lp_weights=(0.25, 0.75), lp_heads=8).info["lp_fusion"]
    assert chosen["chosen_by"] == "Hits@1 (CSLS) on 15 valid links" and set(chosen["scores"]) == {0.25, 0.75}
    assert chosen["weight"] == max(chosen["scores"], key=lambda w: (chosen["scores"][w], -w))
    with pytest.raises(MmeaInputError, match="lp_weight must be <= 1"):
        CLS.Config(lp_weight=1.5)
    with pytest.raises(MmeaInputError, match="lp_weights entry in"):
        CLS.Config(lp_weights=(0.0,))


def test_rounds_can_propose_from_the_joined_embedding_without_reading_test_links():
    kw = dict(epochs=3, iterations=2, iteration_epochs=1, lp_weight=0.5, lp_heads=8, lp_proposals=True)
    m = _fit(_task(poisoned=True), **kw)  # reading task.test would raise
    pairs = m.pairs
    assert len(np.unique(pairs[:, 0])) == len(pairs) and len(np.unique(pairs[:, 1])) == len(pairs)
    assert sum(m.info["pairs_added_per_round"]) == len(pairs) - 45 > 0
    assert m.info["lp_fusion"]["anchors"] == len(pairs) and m.info["lp_fusion"]["in_proposals"] is True
    gnn_only = _fit(_task(), **{**kw, "lp_proposals": False})
    assert gnn_only.info["lp_fusion"]["in_proposals"] is False
    assert not np.array_equal(gnn_only.pairs, pairs)  # False on a length mismatch too


def test_a_budget_that_counts_the_output_stops_the_rounds_early_enough_for_the_final_join(monkeypatch):
    kw = dict(epochs=2, iterations=2, iteration_epochs=1, lp_weight=0.5, lp_heads=8, lp_proposals=True)
    free = _fit(_task(), **kw)
    assert len(free.info["pairs_added_per_round"]) == 2 and free.info["budget"]["counted"] is False
    assert free.info["budget"]["held_back_s"] == 0 and free.info["budget"]["output_s"] >= 0
    counted = _fit(_task(), **kw, budget_counts_output=True)
    assert counted._budget.reserve > 0 and counted.info["budget"]["counted"] is True  # the proposal's join, timed
    np.testing.assert_array_equal(counted.pairs, free.pairs)  # an ample budget: nothing else changes
    real = CLS.propose

    def slow(self, pairs):  # a proposal (embedding + join) that took longer than the whole budget
        out = real(self, pairs)
        self._output_s = 1e6
        return out

    monkeypatch.setattr(CLS, "propose", slow)
    stopped = _fit(_task(), **kw, budget_counts_output=True)
    assert len(stopped.info["pairs_added_per_round"]) == 1  # no second round: the final join needs the time left
    assert stopped.info["budget"]["held_back_s"] == 1e6
    assert len(_fit(_task(), **kw).info["pairs_added_per_round"]) == 2  # not counted: the rounds run on
    with pytest.raises(MmeaInputError, match="needs lp_proposals"):
        CLS.Config(budget_counts_output=True, lp_weight=0.5)


def test_a_round_whose_proposal_would_run_into_the_final_output_is_not_started(monkeypatch):
    """With the output counted, a round starts only if its proposal fits before the held-back final output: a
    proposal timed at 60% of the budget leaves room for itself once (the first round, nothing held back yet) but
    not for a second one plus the final output; uncounted, both rounds run."""
    kw = dict(epochs=2, iterations=2, iteration_epochs=1, lp_weight=0.5, lp_heads=8, lp_proposals=True,
              max_minutes=5.0)
    real = CLS.propose

    def timed(self, pairs):  # the proposal "took" 60% of the budget; the clock has not moved
        out = real(self, pairs)
        self._output_s = 0.6 * 300.0
        return out

    monkeypatch.setattr(CLS, "propose", timed)
    counted = _fit(_task(), **kw, budget_counts_output=True)
    assert len(counted.info["pairs_added_per_round"]) == 1  # 180 s ahead + 180 s held back > 300 s
    assert counted.info["budget"]["held_back_s"] == pytest.approx(180.0)
    assert len(_fit(_task(), **kw).info["pairs_added_per_round"]) == 2
    CLS.Config(budget_counts_output=True)  # lp_weight 0: the proposal's embedding is the whole output


def test_refit_retrains_a_fresh_network_on_train_and_valid_links_for_the_selected_epochs():
    task = _task(poisoned=True)  # reading task.test would raise
    kw = dict(epochs=5, patience=3, lp_weight=-1.0, lp_weights=(0.25, 0.75), lp_heads=8)
    first = _fit(task, **kw)
    m = _fit(task, **kw, refit=True)
    r, chosen = m.info["refit"], first.info["lp_fusion"]["weight"]
    assert r["done"] and r["links"] == 60 and r["epochs"] == max(first.info["best_epoch"], 1) == r["epochs_run"]
    assert r["lp_weight"] == chosen and m.info["lp_fusion"]["weight"] == chosen
    assert m.info["lp_fusion"]["chosen_by"] == "the first pass, on the valid links (refit)"
    assert m.info["best_valid"] == first.info["best_valid"]  # the selection pass's record stays
    for a, b in zip(m.held_out_embeddings(), first.embeddings()):  # the calibration's: valid links held out
        np.testing.assert_array_equal(a, b)
    assert first.held_out_embeddings() is None
    np.testing.assert_array_equal(m.pairs, np.concatenate([task.train, task.valid]))
    # the refit equals a run on a task whose train links are the train and valid links, at the chosen epochs
    clean = _task()
    merged = AlignmentTask("syn", clean.source, clean.target, np.concatenate([clean.train, clean.valid]),
                           np.zeros((0, 2), np.int64), clean.test)
    twin = _fit(merged, **{**kw, "epochs": r["epochs"], "lp_weight": chosen})
    for a, b in zip(m.embeddings(), twin.embeddings()):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(m.embeddings()[0], first.embeddings()[0])


def test_refit_ensemble_scores_the_mean_cosine_of_the_first_pass_and_a_seed_plus_one_refit():
    task = _task(poisoned=True)  # reading task.test would raise
    kw = dict(epochs=4, patience=3, refit=True)
    first = _fit(task, **kw)  # lp_weight 0: the output is the network's alone
    ens = _fit(task, **kw, refit_ensemble=True)
    assert ens.info["refit"]["ensemble"].startswith("first pass + refit")
    for held, plain_first in zip(ens.held_out_embeddings(), first.held_out_embeddings()):
        np.testing.assert_array_equal(held, plain_first)  # the same first pass
    d = first.embeddings()[0].shape[1]
    for out, held, refit in zip(ens.embeddings(), ens.held_out_embeddings(), first.embeddings()):
        assert out.shape[1] == 2 * d
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(out[:, :d] * np.sqrt(2), held, atol=1e-5)  # first pass, half the cosine
        member = out[:, d:] * np.sqrt(2)  # the refit member: a unit-row network output from seed + 1
        np.testing.assert_allclose(np.linalg.norm(member, axis=1), 1.0, atol=1e-5)
        assert not np.allclose(member, refit, atol=1e-3)  # not the same-seed refit
    # inner products are the mean of the members' cosines
    s, t = ens.embeddings()
    a, b = ens.held_out_embeddings()
    ms, mt = s[:, d:] * np.sqrt(2), t[:, d:] * np.sqrt(2)
    np.testing.assert_allclose(s[:5] @ t[:5].T, 0.5 * (a[:5] @ b[:5].T + ms[:5] @ mt[:5].T), atol=1e-5)
    with pytest.raises(MmeaInputError, match="needs refit = true"):
        CLS.Config(refit_ensemble=True)
    # refit_members = 2: the first pass and refits from seed + 1 and seed + 2, each a third of the cosine
    three = _fit(task, **kw, refit_ensemble=True, refit_members=2)
    assert three.info["refit"]["ensemble"] == "first pass + 2 refits (seeds + 1 .. + 2), mean cosine"
    for out, held, two in zip(three.embeddings(), three.held_out_embeddings(), ens.embeddings()):
        assert out.shape[1] == 3 * d
        np.testing.assert_allclose(out[:, :d] * np.sqrt(3), held, atol=1e-5)
        np.testing.assert_allclose(out[:, d:2 * d] * np.sqrt(3), two[:, d:] * np.sqrt(2), atol=1e-5)  # seed + 1
        last = out[:, 2 * d:] * np.sqrt(3)  # seed + 2: another unit-row network
        np.testing.assert_allclose(np.linalg.norm(last, axis=1), 1.0, atol=1e-5)
        assert not np.allclose(last, two[:, d:] * np.sqrt(2), atol=1e-3)
    s3, t3 = three.embeddings()
    blocks = [(s3[:5, i * d:(i + 1) * d] * np.sqrt(3), t3[:5, i * d:(i + 1) * d] * np.sqrt(3)) for i in range(3)]
    np.testing.assert_allclose(s3[:5] @ t3[:5].T, sum(x @ y.T for x, y in blocks) / 3, atol=1e-5)
    with pytest.raises(MmeaInputError, match="refit_members = 2 counts the refit networks of an ensemble"):
        CLS.Config(refit=True, refit_members=2)


def test_refit_without_valid_links_keeps_the_first_pass_and_says_why():
    task = _task()
    bare = AlignmentTask("syn", task.source, task.target, np.asarray(task.train), np.zeros((0, 2), np.int64),
                         np.asarray(task.test))
    m = _fit(bare, epochs=2, refit=True)
    assert m.info["refit"] == {"done": False, "reason": "the run has no valid links: nothing to add"}
    assert m.held_out_embeddings() is None


def test_a_refit_run_calibrates_on_the_held_out_embeddings(tmp_path):
    from mmea.pipelines.align import run_align
    from mmea.pipelines.align_config import load_config

    model = {"name": "relational-gnn", "dim": 16, "epochs": 3, "batch_size": 256, "max_minutes": 1.0}

    def run(out, **extra):
        cfg = load_config(None, [], {"device": "cpu", "features": {"names": "off"}, "model": {**model, **extra}})
        return run_align(cfg, out=tmp_path / out, quiet=True)["metrics"]

    plain, refit = run("a"), run("b", refit=True)
    assert plain["calibration"]["embeddings"] == "scored"
    assert refit["calibration"]["embeddings"].startswith("held out")
    # the curve is the selection pass's: the same validation scores as the run without the refit
    assert refit["calibration"]["valid_hits@1"] == plain["calibration"]["valid_hits@1"]
    assert refit["model_info"]["refit"]["links"] == refit["split"]["train"] + refit["split"]["valid"]
    assert refit["model_info"]["inputs"][-1].endswith("then training (refit)")
