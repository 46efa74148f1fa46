"""SelfMEA's structure modality from the relational graph encoder (issue 16, item 3): the switch, names-off
invariance, no test link read, and a tiny task that learns from the graph alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmea.data.demo import generate_demo
from mmea.errors import MmeaInputError
from mmea.models import MODELS
from mmea.models.selfmea_structure import relational_structure_input, resolve_structure
from mmea.pipelines.align import run_align
from mmea.pipelines.align_config import load_config
from kg_fixtures import PoisonedTask
from test_names_off import _rewrite
from test_selfmea import _fit, _synthetic_task

#: a quick relational structure encoder for the small tasks
QUICK = {"structure_dim": 16, "structure_epochs": 30}


def test_auto_picks_relational_without_names_and_neighbour_names_with():
    assert resolve_structure("auto", names_usable=False) == "relational"
    assert resolve_structure("auto", names_usable=True) == "neighbour-names"
    assert resolve_structure("relational", names_usable=True) == "relational"
    assert resolve_structure("neighbour-names", names_usable=True) == "neighbour-names"
    with pytest.raises(MmeaInputError, match="structure must be one of auto, relational, neighbour-names"):
        MODELS.get("selfmea").Config(structure="gcn")


def test_names_off_accepts_structure_unless_it_is_built_from_names():
    """Names off: the structure modality runs (auto -> relational); neighbour names or CLEP text are refused."""
    load_config(None, [], {"model": {"name": "selfmea", "modalities": "structure,relations,anchors"}})
    load_config(None, [], {"model": {"name": "selfmea", "modalities": "structure,relations", "structure": "relational"},
                           "features": {"names": "off"}})
    for extra in ({"structure": "neighbour-names"}, {"pretrain": "clep"}):
        with pytest.raises(MmeaInputError, match="structure modality is built from entity names"):
            load_config(None, [], {"model": {"name": "selfmea", "modalities": "structure,relations", **extra}})
    with pytest.raises(MmeaInputError, match="name_seeds builds its pseudo-seeds from entity names"):
        load_config(None, [], {"model": {"name": "selfmea", "modalities": "structure,relations", "name_seeds": True}})


def test_auto_runs_the_relational_encoder_when_names_are_off():
    task = _synthetic_task()
    from mmea.features import FeatureOptions, compute_task_features

    # names off: the pipeline never computes the names modality, so the model gets no names
    feats = compute_task_features(task, {"adjacency": {"normalization": "row", "self_loops": False},
                                         "relations": {}}, FeatureOptions(progress=False))
    m = _fit(task, feats, modalities="structure,relations,anchors", epochs=2, expand_every=0, **QUICK)
    assert m.info["structure_encoder"] == "relational" and m.info["names_used"] is False
    st = m.info["structure"]  # 30% of the 60 train links held out of pre-training for the fusion weights
    assert st["trained_on"] == {"pool": 42, "selection": 15} and st["held_out_for_fusion_weights"] == 18
    assert m.info["fusion_weights_learned"] == "from 18 gold initial pairs held out from the structure encoder"
    # with names the default stays the paper's neighbour-names encoder
    m2 = _fit(task, modalities="structure,names", epochs=1, expand_every=0)
    assert m2.info["structure_encoder"] == "neighbour-names" and "structure" not in m2.info


def test_relational_structure_alone_learns_the_tiny_task():
    """Structure only, from the graph alone: far above chance (1 / 165) on the test links.

    The bar is 0.25 (40 x chance): on this 240-entity task the encoder alone (dim 16, 30 epochs) measured
    0.24-0.58 over two seeds and five settings, the pre-2026-12-04 defaults included (0.53 / 0.24)."""
    task = _synthetic_task()
    m = _fit(task, modalities="structure", structure="relational", epochs=4, expand_every=0, **QUICK)
    s, t = m.embeddings()
    q = task.test
    hits = float((np.argmax(s[q[:, 0]] @ t.T, axis=1) == q[:, 1]).mean())
    assert hits > 0.25, hits
    assert m.info["structure"]["best_valid"] > 0.25


def test_relational_structure_never_reads_test_links():
    # the encoder's pre-training reads the pool, the selection links and the triples: never task.test
    task = _synthetic_task()
    armed = PoisonedTask(task.name, task.source, task.target, task.train, task.valid, task.test)
    armed.armed = True
    src, tgt, info = relational_structure_input(armed, task.train, task.valid, MODELS.get("selfmea").Config(**QUICK),
                                                seed=0, device="cpu")
    assert src.shape[0] == task.source.num_entities and tgt.shape[1] == src.shape[1] == info["dim"]


def test_the_encoder_epochs_leave_selfmeas_random_stream_alone():
    """A time budget ends the encoder's pre-training after a varying number of epochs; what SelfMEA draws after
    it must not depend on that number (same encoder epoch -> same SelfMEA run). Fails on the code before
    2026-12-04, where the encoder's dropout and shuffles advanced the global torch generator."""
    import torch

    task, cfg = _synthetic_task(), MODELS.get("selfmea").Config
    after = []
    for epochs in (2, 5):
        torch.manual_seed(11)
        relational_structure_input(task, task.train, task.valid, cfg(structure_dim=16, structure_epochs=epochs),
                                   seed=0, device="cpu")
        after.append(torch.rand(4))
    torch.manual_seed(11)
    assert torch.equal(after[0], after[1]) and torch.equal(after[0], torch.rand(4))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("selfmea_names_off")
    orig = generate_demo(root / "orig", seed=3, num_shared=300, num_unique=40)
    out = {"orig": orig}
    for how in ("blank", "shuffle"):
        out[how] = Path(shutil.copytree(orig, root / how))
        _rewrite(out[how], how, np.random.default_rng(0))
    return out


def test_names_off_selfmea_with_relational_structure_ignores_every_name(pairs, tmp_path):
    """Blanking or shuffling every name and URI leaves a names-off run with relational structure identical."""
    layer = {"model": {"name": "selfmea", "modalities": "structure,relations,attributes,anchors", "epochs": 2,
                       "eval_every": 1, "structure_dim": 16, "structure_epochs": 6}}
    runs = {}
    for k, folder in pairs.items():
        base = {"data": {"pair": str(folder), "src": "", "tgt": "", "seed_ratio": 0.3},
                "features": {"names": "off", "cache": False, "name_encoder": "char-ngram"}, **layer}
        runs[k] = run_align(load_config(None, [], base), out=tmp_path / k, quiet=True)["metrics"]
    for k, m in runs.items():
        assert m["names_used"] is False and m["names_off"], k
        assert m["model_info"]["structure_encoder"] == "relational", k
        assert "structure" in m["model_info"]["fusion_weights"], k
    assert runs["orig"]["test"]["hits@1"] > 0.3  # it learns (chance: 1 / 100)
    for k in ("blank", "shuffle"):
        assert runs[k]["test"] == runs["orig"]["test"], k
        assert runs[k]["test_by_method"] == runs["orig"]["test_by_method"], k


def test_structure_refresh_retrains_the_encoder_on_the_grown_pool():
    """``structure_refresh``: after the first expansion the encoder trains on the pool (seeds + proposals)
    less the pairs held out for the fusion weights."""
    m = _fit(_synthetic_task(), modalities="structure,names", structure="relational", epochs=4, expand_every=2,
             expand_rounds=1, structure_refresh=True, **QUICK)
    first, again = m.info["structure"], m.info["structure_refresh"]
    held = first["held_out_for_fusion_weights"]
    assert again["trained_on"]["pool"] == len(m.pool) - held > first["trained_on"]["pool"]


@pytest.mark.slow
def test_relational_structure_resume_equals_the_uninterrupted_run(pairs, tmp_path):
    """The pre-trained structure input is part of the loop state: a resumed run uses the saved one."""
    from mmea.checkpoint import TrainingInterrupted
    from test_resume import run, without_times

    base = {"data": {"pair": str(pairs["orig"]), "src": "", "tgt": "", "seed_ratio": 0.3},
            "features": {"names": "off", "cache": False},
            "model": {"name": "selfmea", "modalities": "structure,relations,anchors", "epochs": 4, "eval_every": 1,
                      "expand_every": 2, "expand_rounds": 1, "structure_dim": 16, "structure_epochs": 6}}
    whole = run_align(load_config(None, [], base), out=tmp_path / "whole", quiet=True)["metrics"]
    with pytest.raises(TrainingInterrupted):
        run_align(load_config(None, [], base), out=tmp_path / "cut", quiet=True, checkpoint_every=0,
                  stop_after_epochs=2)
    r = run("-q", "align", "--resume", str(tmp_path / "cut"))
    assert r.exit_code == 0, r.output
    b = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert b["test"] == whole["test"] and b["checkpoint"]["resumed_after_epoch"] == 2
    # the encoder's multi-threaded scatter sums differ between two pre-trainings in the 7th digit, so losses are
    # compared loosely; selection scores and test metrics exactly
    hb, hw = without_times(b["model_info"]["history"]), without_times(whole["model_info"]["history"])
    assert [h["valid"] for h in hb] == [h["valid"] for h in hw]
    assert [h["loss"] or 0.0 for h in hb] == pytest.approx([h["loss"] or 0.0 for h in hw], rel=1e-5)


def test_label_propagation_join_of_the_final_pool_is_chosen_on_the_selection_links_never_the_test_links():
    """``lp_weight < 0``: the final embedding joined by the relational label propagation of the final pool, its
    weight (0, no join, included) chosen on the selection links; the test links are never read."""
    task = _synthetic_task()
    armed = PoisonedTask(task.name, task.source, task.target, task.train, task.valid, task.test)
    armed.armed = True  # reading task.test would raise
    # no expansion: its log-only precision reads the gold links
    kw = dict(modalities="structure,names", structure="relational", epochs=4, expand_every=0, lp_heads=8, **QUICK)
    plain = _fit(task, **kw)
    m = _fit(armed, **kw, lp_weight=-1.0, lp_weights=(0.25, 0.5))
    rec = m.info["lp_fusion"]
    assert rec["anchors"] == len(m.pool)
    assert rec["chosen_by"] == f"Hits@1 (CSLS), then MRR, on {len(task.valid)} selection links"
    assert set(rec["scores"]) == set(rec["mrr"]) == {0.0, 0.25, 0.5}
    # the best Hits@1, then MRR, then the first tried
    assert rec["weight"] == max(rec["scores"], key=lambda w: (rec["scores"][w], rec["mrr"][w], -w))
    s, t = m.embeddings()
    if rec["weight"] == 0.0:  # the selection links refused the join: the plain output
        np.testing.assert_array_equal(s, plain.embeddings()[0])
    else:  # [sqrt(1 - w) e, sqrt(w) l]: the plain output is the first block
        d = plain.embeddings()[0].shape[1]
        assert s.shape[1] == d + 8 * 16
        np.testing.assert_allclose(s[:, :d], np.sqrt(1 - rec["weight"]) * plain.embeddings()[0], atol=1e-5)
    fixed = _fit(task, **kw, lp_weight=0.5)
    assert fixed.info["lp_fusion"]["weight"] == 0.5 and fixed.info["lp_fusion"]["chosen_by"] == "set"
    assert "lp_fusion" not in plain.info
    with pytest.raises(MmeaInputError, match="lp_weight must be <= 1"):
        MODELS.get("selfmea").Config(lp_weight=2.0)


def test_name_seeds_widen_the_seeded_pool_off_train_and_valid_entities_and_never_fit_the_fusion_weights():
    """``name_seeds``: mutual-nearest-name pseudo-seeds that touch no train or valid entity follow the train links
    in the initial pool; the structure encoder may train on them, but the pairs the fusion weights learn from are
    gold train links only; the test links are never read."""
    task = _synthetic_task()
    armed = PoisonedTask(task.name, task.source, task.target, task.train, task.valid, task.test)
    armed.armed = True  # reading task.test would raise
    kw = dict(modalities="structure,names", structure="relational", epochs=2, expand_every=0, pseudo_threshold=0.5,
              **QUICK)
    plain = _fit(task, **kw)
    m = _fit(armed, **kw, name_seeds=True)
    seeds = m.info["seeds"]
    n_gold, n_pseudo = seeds["gold"], seeds["name_pseudo_seeds"]
    assert n_gold == len(task.train) and n_pseudo > 20 and seeds["count"] == n_gold + n_pseudo == len(m.pool)
    assert plain.info["seeds"]["count"] == len(task.train) and "name_pseudo_seeds" not in plain.info["seeds"]
    np.testing.assert_array_equal(m.pool[:n_gold], task.train)
    pseudo = m.pool[n_gold:]
    for col in (0, 1):  # one-to-one, and no train or valid entity on either side
        assert len(np.unique(m.pool[:, col])) == len(m.pool)
        assert not set(pseudo[:, col]) & (set(task.train[:, col]) | set(task.valid[:, col]))
    # the names of this task differ by one typo: the pseudo-seeds are mostly right (checked here, not by the model)
    assert (pseudo[:, 0] == pseudo[:, 1]).mean() > 0.9
    # the pseudo-seeds are part of the method's alignment: they get the pool's identity block (no expansion here)
    assert m.embeddings()[0].shape[1] == plain.embeddings()[0].shape[1] + 64 and not len(m.proposals)
    # fusion weights: from held-out gold pairs only, never from a pseudo-seed
    assert not m.weight_pairs[n_gold:].any() and m.weight_pairs[:n_gold].sum() == round(0.3 * n_gold)
    assert m.info["fusion_weights_learned"].startswith(f"from {round(0.3 * n_gold)} gold initial pairs")
    # the structure encoder trained on the rest of the pool: 70% of the gold links + every pseudo-seed
    assert m.info["structure"]["trained_on"]["pool"] == n_gold - round(0.3 * n_gold) + n_pseudo
    from mmea.features import FeatureOptions, compute_task_features

    nameless = compute_task_features(task, {"adjacency": {"normalization": "row", "self_loops": False}},
                                     FeatureOptions(progress=False))  # names off: no names feature at all
    with pytest.raises(MmeaInputError, match="name_seeds builds pseudo-seeds from entity names"):
        _fit(task, nameless, **{**kw, "modalities": "structure"}, name_seeds=True)


def test_structure_lp_puts_the_pools_label_propagation_inside_the_structure_modality():
    """``structure_lp = a``: ``F_S = normalize([sqrt(1 - a) F_G, sqrt(a) L])`` with ``L`` the relational label
    propagation of the pool less the pairs held out for the fusion weights, recomputed after every expansion and,
    for the final embedding, of the whole final pool; the test links are never read."""
    import torch

    from mmea.models import label_propagation_math as lpm
    from mmea.models.lp_join_math import LP_DEPTH, LP_DIM, LP_HEAD_DIM, relation_graphs
    from mmea.models.selfmea import _build_net

    # the modality by hand: V = 0 at start, so F_G = normalize(G)
    cfg = MODELS.get("selfmea").Config(residual_rank=2, structure_lp=0.25)
    net = _build_net()(["structure"], {"structure": 3}, cfg, relational=True)
    g = torch.tensor([[3.0, 0.0, 4.0], [0.0, 2.0, 0.0]])
    lp = torch.tensor([[0.0, 1.0], [0.0, 0.0]])  # the second entity is reached by no anchor
    side = {"graph": g, "graph_lp": lp, "mask": {"structure": torch.tensor([True, True])}}
    out, _ = net.modality("structure", side, torch.tensor([0, 1]))
    want0 = np.array([np.sqrt(0.75) * 0.6, 0.0, np.sqrt(0.75) * 0.8, 0.0, np.sqrt(0.25)])
    np.testing.assert_allclose(out[0].detach().numpy(), want0 / np.linalg.norm(want0), atol=1e-6)
    np.testing.assert_allclose(out[1].detach().numpy(), [0, 1, 0, 0, 0], atol=1e-6)  # F_G alone, unit

    task = _synthetic_task()
    kw = dict(modalities="structure,names", structure="relational", epochs=4, expand_every=2, expand_rounds=1,
              lp_heads=8, **QUICK)
    m = _fit(task, **kw, structure_lp=0.5)
    rec, held = m.info["structure_lp"], m.info["structure"]["held_out_for_fusion_weights"]
    grown = len(m.pool) - held
    assert m.info["expansions"][0]["added"] > 0
    # the initial pool less the held-out pairs, the grown pool less them, the whole final pool
    assert rec["anchors"] == [len(task.train) - held, grown, len(m.pool)] and rec["weight"] == 0.5
    assert m.info["best_select_hits@1"] > 0.5
    sides = [{}, {}]
    m.set_structure_lp(task, sides, m.pool)  # what the final embedding used
    want = lpm.relational_features(relation_graphs(task), m.pool, LP_DIM, LP_DEPTH, 8, LP_HEAD_DIM, 0)
    np.testing.assert_allclose(sides[0]["graph_lp"].numpy() * np.linalg.norm(want[0], axis=1, keepdims=True),
                               want[0], atol=1e-5)
    # no expansion (its log-only precision reads gold links): a run that reads a test link raises
    armed = PoisonedTask(task.name, task.source, task.target, task.train, task.valid, task.test)
    armed.armed = True
    _fit(armed, **{**kw, "expand_every": 0}, structure_lp=0.5)
    with pytest.raises(MmeaInputError, match="structure_lp = 0.5 joins"):
        _fit(task, **{**kw, "structure": "neighbour-names"}, structure_lp=0.5)
    with pytest.raises(MmeaInputError, match=r"model \(selfmea\).structure_lp: input should be less than or equal to 1, got 1.5"):
        load_config(None, ["model.structure_lp=1.5"], {"model": {"name": "selfmea"}})
