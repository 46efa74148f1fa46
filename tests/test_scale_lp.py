"""Label propagation at scale (issue 18): the names block next to the structure, and the weight choices on a
seeded sample above ``choice_sample`` / ``choice_links`` (no test link read)."""

from __future__ import annotations

import numpy as np

from mmea.config import FeatureConfig
from mmea.data.graph import AlignmentTask, KnowledgeGraph
from mmea.models import MODELS, RunContext

from kg_fixtures import PoisonedTask  # noqa: E402

_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "po", "da", "fu"]


def _names(rng, n: int) -> list[str]:
    return [" ".join("".join(rng.choice(_SYLLABLES, 3)) for _ in range(2)) for _ in range(n)]


def _pair(n=200, n_triples=150, n_rel=6, seed=0):
    """A sparse random KG and a relabelled copy with the same names (a few typos): source, target, gold."""
    rng = np.random.default_rng(seed)
    h, t, r = rng.integers(0, n, n_triples), rng.integers(0, n, n_triples), rng.integers(0, n_rel, n_triples)
    perm = rng.permutation(n)  # target id of source entity i
    names = _names(rng, n)
    tnames = [""] * n
    for i, x in enumerate(names):
        tnames[perm[i]] = x if i % 5 else x[::-1]  # every fifth name reversed: names alone are not enough
    ids = [f"s{i}" for i in range(n)]
    tids = [f"t{i}" for i in range(n)]
    rels = [f"r{k}" for k in range(n_rel)]
    src = KnowledgeGraph("s", ids, ids, names, rels, np.stack([h, r, t], 1))
    tgt = KnowledgeGraph("t", tids, tids, tnames, rels, np.stack([perm[h], r, perm[t]], 1))
    return src, tgt, np.stack([np.arange(n), perm], 1)


def _task(poisoned=False):
    s, t, gold = _pair()
    order = np.random.default_rng(1).permutation(len(gold))
    tr, va, te = gold[order[:60]], gold[order[60:100]], gold[order[100:]]
    task = (PoisonedTask if poisoned else AlignmentTask)("syn", s, t, tr, va, te)
    if poisoned:
        task.armed = True
    return task, te


def _fit(task, features=None, **params):
    cls = MODELS.get("label-propagation")
    model = cls(cls.Config(**params), RunContext(seed=0, features=FeatureConfig(name_encoder="char-ngram")))
    model.fit(task, features)
    return model


def _hits1(model, links) -> float:
    s, t = model.embeddings()
    sim = s[links[:, 0]] @ t[links[:, 1]].T  # (n, n): a tiny test set
    return float(np.mean(sim.argmax(axis=1) == np.arange(len(links))))


def test_names_block_weighs_the_cosines():
    """<h_s, h_t> = (1 - a) cos_structure + a cos_names for entities with both parts; names raise H@1."""
    task, test = _task()
    plain = _fit(task, hops=2, anchor_dim=64, relation_weight=0.25)
    a = 0.4
    named = _fit(task, hops=2, anchor_dim=64, relation_weight=0.25, name_weight=a, name_dim=64)
    assert MODELS.get("label-propagation").feature_requests(named.config)["names"].options["dim"] == 64
    assert named.info["names_used"] and named.info["name_weight"] == a and "names" in named.info["modalities"]
    assert not plain.info["names_used"] and "names" not in plain.info["modalities"]
    (ps, pt), (ns, nt), (hs, ht) = plain.embeddings(), named._names, named.embeddings()
    i, j = test[:, 0], test[:, 1]
    both = (np.linalg.norm(ps[i], axis=1) > 0) & (np.linalg.norm(pt[j], axis=1) > 0)
    want = (1 - a) * np.sum(ps[i] * pt[j], 1) + a * np.sum(ns[i] * nt[j], 1)
    np.testing.assert_allclose(np.sum(hs[i] * ht[j], 1)[both], want[both], atol=1e-5)
    assert _hits1(named, test) > _hits1(plain, test) + 0.1


def test_names_off_leaves_the_structure_only():
    """Without the names feature (names switched off) the model runs on the structure and says so."""
    from mmea.features import TaskFeatures

    task, _ = _task()
    model = _fit(task, TaskFeatures("syn", "none", {}), hops=2, anchor_dim=64, relation_weight=0.25, name_weight=0.5)
    plain = _fit(task, hops=2, anchor_dim=64, relation_weight=0.25)
    assert not model.info["names_used"] and "names were not computed" in model.info["names_note"]
    np.testing.assert_array_equal(model.embeddings()[0], plain.embeddings()[0])


def test_weight_choices_on_a_seeded_sample_read_no_test_link():
    """Above choice_sample / choice_links the choices rank a seeded sample (recorded), never a test link."""
    task, _ = _task(poisoned=True)
    kw = dict(hops=2, anchor_dim=64, name_weight=-1.0, name_dim=64, choice_sample=50, choice_links=20)
    model = _fit(task, **kw)
    for key in ("relation_weight_choice", "name_weight_choice"):
        assert "on 20 valid links against 50 sampled candidates" in model.info[key]["chosen_by"]
    again = _fit(task, **kw)
    np.testing.assert_array_equal(model.embeddings()[0], again.embeddings()[0])  # the sample is seeded
    full = _fit(task, hops=2, anchor_dim=64, name_weight=-1.0, name_dim=64)
    assert "sampled" not in full.info["name_weight_choice"]["chosen_by"]  # small: every valid link and target


def test_name_seeds_join_the_anchors_only_with_names_and_read_no_test_link():
    """Equal unique names (4 of 5 names here) become anchors before propagation; the train links' entities
    are not proposed again; with names off nothing is proposed; test links are never read."""
    from mmea.features import TaskFeatures

    task, test = _task(poisoned=True)
    kw = dict(hops=2, anchor_dim=64, relation_weight=0.25, name_weight=0.5, name_dim=64)
    plain, seeded = _fit(task, **kw), _fit(task, name_seeds=True, **kw)
    info = seeded.info["pseudo_seeds"]
    train = np.asarray(task.train)
    extra = seeded.anchors[len(train):]
    assert info["count"] == len(extra) > 0 and "unique on both sides" in info["kind"]
    np.testing.assert_array_equal(seeded.anchors[:len(train)], train)
    assert not np.isin(extra[:, 0], train[:, 0]).any() and not np.isin(extra[:, 1], train[:, 1]).any()
    names_s, names_t = task.source.names, task.target.names
    assert all(names_s[i] == names_t[j] for i, j in extra)  # only equal names: never a reversed one
    assert "pseudo_seeds" not in plain.info and len(plain.anchors) == len(train)
    assert _hits1(seeded, test) >= _hits1(plain, test)
    from mmea.pipelines.align_config import ran_label

    assert f"name pseudo-seeds {info['count']}" in ran_label({"model_info": seeded.info, "names_used": True})
    off = _fit(task, TaskFeatures("syn", "none", {}), name_seeds=True, **kw)
    assert off.info["pseudo_seeds"]["count"] == 0 and len(off.anchors) == len(train)
