"""The partitioned mode's pieces (issue 18 part 3), without Ray: the METIS partition keeps every seed pair in
one part and gives every entity of both KGs a part; the part-local label propagation of one part holding
everything equals the in-process model."""

from __future__ import annotations

import numpy as np
import pytest

from mmea.engine.partition import (Partition, align_part, carry_parts, entity_csr, joint_graph, label_matrix,
                                   partition_pair)
from mmea.errors import MmeaInputError


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    from mmea.config import DataConfig
    from mmea.data.catalog import load_task_from_config
    from mmea.data.synth import generate_pair, synth_config

    out = tmp_path_factory.mktemp("part") / "pair"
    generate_pair(synth_config({"entities": 1500, "seed": 2}), out, progress=False)
    return load_task_from_config(DataConfig(src="", tgt="", pair=str(out), seed_ratio=0.3), 0, False)


@pytest.mark.parametrize("parts", [2, 5])
def test_metis_keeps_seed_pairs_together_and_covers_every_entity(task, parts):
    p = partition_pair(task, parts, seed=0)
    assert p.src.shape == (task.source.num_entities,) and p.tgt.shape == (task.target.num_entities,)
    assert p.src.min() >= 0 and p.tgt.min() >= 0 and max(p.src.max(), p.tgt.max()) < parts
    assert p.same_part(task.train).all()
    assert len(np.unique(p.src)) == parts  # METIS used every part
    s = p.summary(task)
    assert s["train_links_same_part"] == 1.0 and sum(s["entities_per_part"]) == \
        task.source.num_entities + task.target.num_entities
    assert partition_pair(task, parts, seed=0).src.tolist() == p.src.tolist()  # deterministic for a seed


def test_partition_errors_name_the_setting(task):
    with pytest.raises(MmeaInputError, match="engine.partitions"):
        partition_pair(task, 1)
    with pytest.raises(MmeaInputError, match="exceeds"):
        partition_pair(task, task.source.num_entities + 1)


def test_carry_parts_follows_the_seed_neighbours():
    # a path 0-1-2-3-4-5; seeds fix 0 -> part 0 and 5 -> part 1; 6 is isolated
    trip = np.array([[0, 0, 1], [1, 0, 2], [2, 0, 3], [3, 0, 4], [4, 0, 5]])
    fixed = np.array([0, -1, -1, -1, -1, 1, -1])
    part = carry_parts(entity_csr(trip, 7), fixed, 2)
    assert part[0] == 0 and part[5] == 1 and part[1] == 0 and part[4] == 1
    assert part[6] == 6 % 2  # round robin for what no part reaches


def test_joint_graph_contracts_each_seed_link():
    trip1 = np.array([[0, 0, 1], [1, 0, 2]])
    trip2 = np.array([[0, 0, 1], [1, 0, 2]])
    xadj, adjncy, w, v_src, v_tgt = joint_graph(trip1, 3, trip2, 3, np.array([[0, 0], [2, 2]]))
    assert v_tgt.tolist() == [0, 3, 2] and len(xadj) == 5 and w.tolist() == [2, 1, 2, 1]
    assert sorted(adjncy[xadj[3]:xadj[4]].tolist()) == [0, 2]  # the target's middle entity joins both seeds


def test_recovery_splits_the_recall_by_part():
    p = Partition(np.array([0, 0, 1]), np.array([0, 1, 1]), 2, 0)
    r = p.recovery(np.array([[0, 0], [1, 1], [2, 2]]), np.array([1, 11, 3]))
    assert r["test_links_split"] == 1
    assert r["global_search"]["hits@1_same_part"] == 0.5 and r["global_search"]["hits@10_split"] == 0.0


def test_one_part_equals_the_in_process_model(task):
    from mmea.models.label_propagation import LabelPropagationModel
    from mmea.models import RunContext

    cfg = LabelPropagationModel.Config(anchor_dim=64, relation_weight=0.25, hops=2)
    model = LabelPropagationModel(cfg, RunContext(seed=3, device="cpu"))
    model.fit(task)
    src, tgt = model.embeddings()
    hs, ht = align_part(task.source.triples, task.source.num_entities, task.source.num_relations,
                        task.target.triples, task.target.num_entities, task.target.num_relations,
                        np.asarray(task.train), label_matrix(len(task.train), 64, 3), 2, 0.25)
    np.testing.assert_allclose(hs, src, atol=1e-6)
    np.testing.assert_allclose(ht, tgt, atol=1e-6)
