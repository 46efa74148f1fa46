"""Registered alignment models on tiny tasks; every registered model must be tested here."""

from __future__ import annotations

import numpy as np
import pytest

from mmea.config import FeatureConfig
from mmea.models import MODELS, RunContext
from mmea.seeds import anchor_matrix, mutual_nearest_pairs

TESTED = {"baseline", "gaussian", "gaussian-strong", "gaussian-strong-point", "label-propagation", "mmea-point",
          "propagation", "relational-gnn", "selfmea"}


def test_every_registered_model_is_tested():
    assert set(MODELS.names()) <= TESTED


def _ctx():
    return RunContext(seed=0, device="cpu", features=FeatureConfig(name_encoder="char-ngram"), cache_root=None)


def _fit(name, task, **params):
    cls = MODELS.get(name)
    m = cls(cls.Config(**params), _ctx())
    m.fit(task)
    s, t = m.embeddings()
    assert s.shape[0] == task.source.num_entities and t.shape[0] == task.target.num_entities
    assert s.dtype == np.float32 and s.shape[1] == t.shape[1]
    return m, s, t


#: models whose defaults are sized for real KGs: settings for the 6-entity task (1 valid link: no early stop)
TINY_PARAMS = {"gaussian-strong": {"patience": 0, "epochs": 100}}


@pytest.mark.parametrize("name", sorted(TESTED))
def test_model_aligns_the_tiny_task(name, tiny_task):
    _, s, t = _fit(name, tiny_task, **TINY_PARAMS.get(name, {}))
    sim = s @ t.T  # (6, 6): tiny, dense is fine here
    assert (sim.argmax(axis=1) == np.arange(6)).mean() >= 5 / 6


def test_mutual_nearest_pairs_semantics():
    src = np.array([[1, 0], [0, 1], [0.9, 0.1]], dtype=np.float32)
    tgt = np.array([[1, 0], [0, 1]], dtype=np.float32)
    pairs = mutual_nearest_pairs(src, tgt, threshold=0.5)
    # source 2 also prefers target 0 but target 0's best source is 0
    assert pairs.tolist() == [[0, 0], [1, 1]]
    assert mutual_nearest_pairs(src, tgt, threshold=1.5).shape == (0, 2)


def test_anchor_matrix_is_one_hot():
    a = anchor_matrix(np.array([2, 0]), 3).toarray()
    assert a.tolist() == [[0, 1], [0, 0], [1, 0]]


def test_propagation_self_supervised_uses_no_gold(tiny_task):
    """With no train links the anchors are pseudo-seeds; poisoned test links change nothing."""
    from mmea.data import AlignmentTask

    base = AlignmentTask("t", tiny_task.source, tiny_task.target, np.zeros((0, 2)), np.zeros((0, 2)),
                         tiny_task.all_links)
    poisoned = AlignmentTask("t", tiny_task.source, tiny_task.target, np.zeros((0, 2)), np.zeros((0, 2)),
                             np.stack([np.arange(6), (np.arange(6) + 1) % 6], 1))
    m1, s1, t1 = _fit("propagation", base, pseudo_threshold=0.3)
    m2, s2, t2 = _fit("propagation", poisoned, pseudo_threshold=0.3)
    assert m1.info["seeds"]["kind"].startswith("pseudo-seeds")
    assert np.array_equal(s1, s2) and np.array_equal(t1, t2)


def test_propagation_anchors_use_train_links_only(tiny_task):
    from mmea.data import AlignmentTask

    other = AlignmentTask("t", tiny_task.source, tiny_task.target, tiny_task.train, tiny_task.valid,
                          tiny_task.test[::-1] * 0)
    _, s1, _ = _fit("propagation", tiny_task)
    _, s2, _ = _fit("propagation", other)
    assert np.array_equal(s1, s2)


#: the one model used as another's encoder: SelfMEA's relational structure modality is the relational-gnn model
#: pre-trained on SelfMEA's initial pool (issue 16, item 3), not a copy of its training loop
# a model another one runs whole as an encoder: the relational GNN as SelfMEA's structure modality, label
# propagation or the relational GNN as gaussian-strong's anchors modality
ENCODER_MODELS = {"mmea.models.selfmea_structure": {"mmea.models.relational_gnn"},
                  "mmea.models.gaussian_strong": {"mmea.models.label_propagation", "mmea.models.relational_gnn"}}


def test_no_model_module_imports_another_model_or_the_feature_computation():
    """Data flows task -> features -> model: a model module imports the base, its own ``*_math`` / ``*_nn``
    companions, its family's modules (``gaussian_strong`` builds on ``gaussian``, ``selfmea`` on
    ``selfmea_structure``) and any pure ``*_math`` / ``*_nn`` module
    (maths and network layers shared between models, no model or training loop in them), never another model
    nor :mod:`mmea.features` (the pipeline computes the features; ``base`` keeps the one compatibility path for a
    model fitted without them)."""
    from test_architecture import import_graph

    graph = import_graph()
    for mod, deps in graph.items():
        if not mod.startswith("mmea.models.") or mod == "mmea.models.base":
            continue
        family = mod.rsplit(".", 1)[1].removesuffix("_math").removesuffix("_nn")
        parent = family.split("_", 1)[0]  # gaussian_strong -> gaussian
        allowed = {"mmea.models.base", *(f"mmea.models.{f}{s}" for f in (family, parent) for s in ("", "_math", "_nn"))}
        allowed |= ENCODER_MODELS.get(mod, set())
        others = {d for d in deps if d.startswith("mmea.models") and d not in allowed and not d.endswith(("_math", "_nn"))
                  and not d.startswith(f"mmea.models.{parent}_")}  # the family's own modules (selfmea_structure)
        assert not others, f"{mod} imports {sorted(others)}"
        assert "mmea.features" not in deps, f"{mod} imports mmea.features"
