"""Link prediction: model scores, the filtered evaluation against a brute-force reference, training, the CLI entry."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mmea.data import KnowledgeGraph, LinkPredictionDataset  # noqa: E402
from mmea.errors import MmeaInputError  # noqa: E402
from mmea.linkpred import LP_MODEL_NAMES, run_linkpred_cli  # noqa: E402
from mmea.linkpred.evaluation import FilterIndex, filtered_metrics, metrics_from_ranks  # noqa: E402
from mmea.linkpred.models import LP_MODELS, make_lp_model  # noqa: E402
from mmea.linkpred.training import LinkPredConfig, config_from_dict, train_link_prediction  # noqa: E402

E, R = 9, 3


def tiny_split():
    rng = np.random.default_rng(0)
    t = np.unique(np.stack([rng.integers(0, E, 40), rng.integers(0, R, 40), rng.integers(0, E, 40)], 1), axis=0)
    rng.shuffle(t)
    return t[:24], t[24:28], t[28:]


# ----------------------------------------------------------------------------- models
@pytest.fixture(params=sorted(LP_MODEL_NAMES))
def model(request):
    torch.manual_seed(0)
    return make_lp_model(request.param, E, R, 6).double()


def test_model_names_match_registry():
    assert sorted(LP_MODELS.names()) == sorted(LP_MODEL_NAMES)


def test_score_hrt_against_formulas():
    torch.manual_seed(0)
    h, r, t = torch.tensor([1, 4]), torch.tensor([0, 2]), torch.tensor([3, 3])
    m = make_lp_model("transe", E, R, 5, p_norm=1)
    ref = -(m.entity_emb[h] + m.relation_emb[r] - m.entity_emb[t]).abs().sum(-1)
    assert torch.allclose(m.score_hrt(h, r, t), ref)
    m = make_lp_model("distmult", E, R, 5)
    ref = (m.entity_emb[h] * m.relation_emb[r] * m.entity_emb[t]).sum(-1)
    assert torch.allclose(m.score_hrt(h, r, t), ref)
    m = make_lp_model("rotate", E, R, 5)
    ce = torch.complex(m.entity_emb[:, :5], m.entity_emb[:, 5:])
    rot = torch.polar(torch.ones(R, 5), m.relation_emb)
    ref = -(ce[h] * rot[r] - ce[t]).abs().sum(-1)
    assert torch.allclose(m.score_hrt(h, r, t), ref, atol=1e-5)


def test_score_all_matches_score_hrt(model):
    h, r, t = torch.tensor([0, 3, 8]), torch.tensor([2, 0, 1]), torch.tensor([5, 5, 0])
    ents = torch.arange(E)
    with torch.no_grad():
        tails = model.score_all_tails(h, r)  # (3, E)
        heads = model.score_all_heads(r, t)
        assert tails.shape == heads.shape == (3, E)
        assert torch.allclose(tails, model.score_hrt(h[:, None], r[:, None], ents[None, :]), atol=1e-8)
        assert torch.allclose(heads, model.score_hrt(ents[None, :], r[:, None], t[:, None]), atol=1e-8)


def test_score_replaced_and_shared_match_score_hrt(model):
    batch = torch.tensor([[0, 1, 2], [3, 2, 4], [5, 0, 6]])
    sides = torch.tensor([[True, False], [False, False], [True, True]])
    repl = torch.tensor([[7, 8], [1, 0], [2, 3]])
    with torch.no_grad():
        got = model.score_replaced(batch, sides, repl)
        h = torch.where(sides, repl, batch[:, :1])
        t = torch.where(sides, batch[:, 2:], repl)
        assert torch.allclose(got, model.score_hrt(h, batch[:, 1:2], t), atol=1e-8)
        cands, row_sides = torch.tensor([4, 1, 8, 0]), torch.tensor([True, False, True])
        got = model.score_shared(batch, row_sides, cands)
        h = torch.where(row_sides[:, None], cands[None, :], batch[:, :1])
        t = torch.where(row_sides[:, None], batch[:, 2:], cands[None, :])
        assert torch.allclose(got, model.score_hrt(h, batch[:, 1:2], t), atol=1e-8)
        tc = torch.tensor([2, 2, 5, 6])
        got = model.score_shared(batch, row_sides, cands, tc)
        t = torch.where(row_sides[:, None], batch[:, 2:], tc[None, :])
        assert torch.allclose(got, model.score_hrt(h, batch[:, 1:2], t), atol=1e-8)


def test_transe_entity_normalisation():
    m = make_lp_model("transe", E, R, 4, normalize_entities=True)
    assert torch.allclose(m.entity_emb.norm(dim=1), torch.ones(E))
    with pytest.raises(MmeaInputError, match="p_norm"):
        make_lp_model("transe", E, R, 4, p_norm=3)


# ----------------------------------------------------------------------------- evaluation
class TableModel:
    """Scores from fixed integer tables, so ties are common (tests the tie rule)."""

    def __init__(self, seed: int):
        rng = np.random.default_rng(seed)
        self.tail = torch.tensor(rng.integers(0, 3, (E, R, E)), dtype=torch.float32)  # [h, r, t]
        self.head = torch.tensor(rng.integers(0, 3, (R, E, E)), dtype=torch.float32)  # [r, t, h]

    def score_all_tails(self, h, r):
        return self.tail[h, r].clone()

    def score_all_heads(self, r, t):
        return self.head[r, t].clone()


def brute_force_ranks(score_tail, score_head, triples, known, tie="realistic"):
    known = {tuple(x) for x in known}
    out = {"head": [], "tail": []}
    for h, r, t in triples:
        for side in ("head", "tail"):
            gold = h if side == "head" else t
            s = [score_head(r, t, e) if side == "head" else score_tail(h, r, e) for e in range(E)]
            greater = equal = 0
            for e in range(E):
                if e == gold or ((e, r, t) if side == "head" else (h, r, e)) in known:
                    continue
                greater += s[e] > s[gold]
                equal += s[e] == s[gold]
            out[side].append(1 + greater + {"realistic": equal / 2, "optimistic": 0, "pessimistic": equal}[tie])
    return np.array(out["head"]), np.array(out["tail"])


@pytest.mark.parametrize("tie", ["realistic", "optimistic", "pessimistic"])
def test_filtered_metrics_against_brute_force_with_ties(tie):
    train, valid, test = tiny_split()
    known = np.concatenate([train, valid, test])
    m = TableModel(1)
    ref_h, ref_t = brute_force_ranks(lambda h, r, e: float(m.tail[h, r, e]), lambda r, t, e: float(m.head[r, t, e]),
                                     test, known, tie)
    got = filtered_metrics(m, test, FilterIndex(known, E, R), batch_size=3, tie=tie)
    ref = metrics_from_ranks(np.concatenate([ref_h, ref_t]))
    for k in ("mr", "mrr", "hits@1", "hits@3", "hits@10"):
        assert got[k] == pytest.approx(ref[k])
    assert got["head"]["mr"] == pytest.approx(ref_h.mean()) and got["tail"]["mr"] == pytest.approx(ref_t.mean())


def test_filtered_metrics_against_brute_force_real_model(model):
    train, valid, test = tiny_split()
    known = np.concatenate([train, valid, test])

    def one(h, r, t):
        with torch.no_grad():
            return float(model.score_hrt(torch.tensor(h), torch.tensor(r), torch.tensor(t)))

    ref_h, ref_t = brute_force_ranks(lambda h, r, e: one(h, r, e), lambda r, t, e: one(e, r, t), test, known)
    got = filtered_metrics(model, test, FilterIndex(known, E, R), batch_size=4)
    assert got["mrr"] == pytest.approx(metrics_from_ranks(np.concatenate([ref_h, ref_t]))["mrr"])
    assert got["count"] == 2 * len(test)


def test_constant_scores_give_the_random_rank():
    class Flat:
        def score_all_tails(self, h, r):
            return torch.zeros(len(h), E)

        def score_all_heads(self, r, t):
            return torch.zeros(len(r), E)

    triples = np.array([[0, 0, 1]])
    got = filtered_metrics(Flat(), triples, FilterIndex(triples, E, 1))
    assert got["mr"] == pytest.approx((E + 1) / 2)


def test_metrics_from_ranks():
    m = metrics_from_ranks(np.array([1, 2, 4, 20]))
    assert m["mr"] == pytest.approx(6.75) and m["mrr"] == pytest.approx((1 + 0.5 + 0.25 + 0.05) / 4)
    assert (m["hits@1"], m["hits@3"], m["hits@10"]) == (0.25, 0.5, 0.75)


# ----------------------------------------------------------------------------- training
def toy_dataset(num_entities: int = 60) -> LinkPredictionDataset:
    """A learnable toy KG: r0 is a successor ring, r1 its reverse, r2 links to the entity 5 ahead."""
    n = num_entities
    t = [(i, 0, (i + 1) % n) for i in range(n)] + [((i + 1) % n, 1, i) for i in range(n)]
    t += [(i, 2, (i + 5) % n) for i in range(n)]
    t = np.array(t, dtype=np.int64)
    np.random.default_rng(0).shuffle(t)
    kg = KnowledgeGraph("toy", [f"e{i}" for i in range(n)], [f"e{i}" for i in range(n)], [""] * n,
                        ["next", "prev", "jump"], t[:-30])
    return LinkPredictionDataset("toy", kg, t[-30:-15], t[-15:])


@pytest.mark.parametrize("model_name,sampler,loss", [
    ("transe", "uniform", "self-adversarial"),
    ("transe", "bernoulli", "margin-ranking"),
    ("distmult", "in-batch", "info-nce"),
    ("rotate", "cache", "softplus"),
    ("transe", "hard-nn", "self-adversarial"),
    ("transe", "rank-above", "self-adversarial"),
    ("transe", "k-hop", "softplus"),
])
def test_training_learns_on_a_toy_graph(model_name, sampler, loss):
    ds = toy_dataset()
    # margin 2: a toy-sized distance scale (TransE-L2 / RotatE initialise in +-(margin + 2) / sqrt(d) resp. / d)
    cfg = LinkPredConfig(model=model_name, sampler=sampler, loss=loss, dim=16, epochs=30, batch_size=64, lr=0.02,
                         margin=2.0, num_negatives=8, eval_every=10, patience=5, max_minutes=1.0, audit_every=1,
                         sampler_options={"refresh_every": 5} if sampler == "hard-nn" else {})
    m = train_link_prediction(ds, cfg, progress=False)
    assert m["valid"]["mrr"] > m["valid_at_init"]["mrr"] + 0.05
    assert m["test"]["count"] == 2 * len(ds.test)
    assert m["false_negatives"]["returned_true_rate_train"] == 0.0
    assert m["epochs_run"] <= 30 and all(h["time_s"] > 0 for h in m["history"])


def test_run_dir_outputs_and_time_budget(tmp_path):
    ds = toy_dataset()
    cfg = LinkPredConfig(model="distmult", sampler="uniform", loss="softplus", dim=8, epochs=3, batch_size=64,
                         num_negatives=4, eval_every=1)
    m = train_link_prediction(ds, cfg, run_dir=tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["test"]["mrr"] == pytest.approx(m["test"]["mrr"])
    assert {"mr", "mrr", "hits@1", "hits@3", "hits@10"} <= set(saved["test"])
    assert {"train_s", "epoch_s_mean", "total_s"} <= set(saved["timings"])
    emb = np.load(tmp_path / "run" / "embeddings.npz")
    assert emb["entity"].shape == (60, 8) and emb["relation"].shape == (3, 8)
    assert emb["entity_ids"][0] == "e0"
    assert (tmp_path / "run" / "config.toml").is_file()


def test_config_errors():
    with pytest.raises(MmeaInputError, match="valid: .*batch_size"):
        config_from_dict({"batchsize": 3})
    with pytest.raises(MmeaInputError, match="dim"):
        LinkPredConfig(dim=0)
    with pytest.raises(MmeaInputError, match="batch-shared"):
        train_link_prediction(toy_dataset(), LinkPredConfig(sampler="k-hop", shared_negatives=True, epochs=1),
                              progress=False)


def test_run_linkpred_cli_on_a_folder(tmp_path):
    ds = toy_dataset(30)
    folder = tmp_path / "toy"
    folder.mkdir()
    for name, arr in (("train", ds.train), ("valid", ds.valid), ("test", ds.test)):
        lines = [f"e{h}\t{ds.graph.relations[r]}\te{t}" for h, r, t in arr]
        (folder / f"{name}.txt").write_text("\n".join(lines) + "\n")
    res = run_linkpred_cli(str(folder), None, model="transe", sampler="bernoulli", loss="margin-ranking", dim=8,
                           epochs=2, num_negatives=4, seed=1, device="cpu", out=tmp_path / "out",
                           extra={"batch_size": 32, "eval_every": 1}, progress=False)
    assert res["metrics_path"].is_file() and res["embeddings"].is_file()
    assert res["metrics"]["config"]["dim"] == 8 and res["metrics"]["sampler"] == "bernoulli"
    with pytest.raises(MmeaInputError, match="unknown link-prediction option"):
        run_linkpred_cli(str(folder), None, extra={"nope": 1}, out=tmp_path / "out2", progress=False)


# ----------------------------------------------------------------------------- real data
@pytest.mark.data
def test_fb15k237_short_run_learns(data_dir):
    from mmea.data.catalog import load_linkpred_dataset

    try:
        ds = load_linkpred_dataset("fb15k237", str(data_dir))
    except MmeaInputError as e:  # pragma: no cover - data folder without FB15k-237
        pytest.skip(str(e))
    small = LinkPredictionDataset(ds.name, ds.graph, ds.valid, ds.test[:500], meta=ds.meta)
    cfg = LinkPredConfig(model="distmult", sampler="uniform", loss="self-adversarial", dim=64, epochs=1,
                         batch_size=2048, lr=0.01, num_negatives=128, valid_subsample=500, eval_every=1,
                         max_minutes=1.5)
    m = train_link_prediction(small, cfg, progress=False)
    assert m["valid"]["mrr"] > 2 * m["valid_at_init"]["mrr"] and m["valid"]["mrr"] > 0.05
    assert m["test"]["count"] == 1000


def test_benchmark_pipeline_rows_are_valid_configs():
    import tomllib
    from pathlib import Path

    from mmea.bench import ROW_KEYS
    from mmea.losses import LOSSES
    from mmea.sampling import SAMPLERS

    path = Path(__file__).resolve().parents[1] / "pipelines" / "negative_sampling_fb15k237.toml"
    spec = tomllib.loads(path.read_text(encoding="utf-8"))
    assert spec["bench"]["task"] == "linkpred" and spec["rows"]
    for row in spec["rows"]:
        values = {**spec["budget"], **spec["defaults"], **{k: v for k, v in row.items() if k not in ROW_KEYS}}
        cfg = config_from_dict(values)
        assert cfg.model in LP_MODEL_NAMES and cfg.sampler in SAMPLERS and cfg.loss in LOSSES
        assert cfg.max_minutes == spec["budget"]["max_minutes"]  # the same budget for every row


def test_every_numeric_field_of_the_config_declares_a_range():
    """The declared ranges (mmea.config aliases) are what load_config checks: a field without one fails here."""
    import dataclasses

    from mmea.config import field_range, field_types, is_numeric

    types = field_types(LinkPredConfig)
    bare = [f.name for f in dataclasses.fields(LinkPredConfig)
            if is_numeric(types[f.name]) and not field_range(types[f.name])]
    assert not bare, bare
    with pytest.raises(MmeaInputError, match=r"linkpred\.adversarial_temperature: input should be greater"):
        config_from_dict({"adversarial_temperature": -1.0})
    with pytest.raises(MmeaInputError, match=r"linkpred\.margin must be a finite number, got nan"):
        config_from_dict({"margin": float("nan")})
    assert config_from_dict({"lr": 1, "margin": None}).lr == 1.0  # an int is a float; None keeps the per-loss margin
