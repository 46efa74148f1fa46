"""Feature store: cache hit / miss / invalidation, and task features per modality."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest
import scipy.sparse as sp

from mmea.data.graph import AlignmentTask, KnowledgeGraph
from mmea.encoders import WeightsNotFoundError
from mmea.errors import MmeaInputError
from mmea.features import (MODALITIES, FeatureOptions, FeatureStore, TaskFeatures, compute_task_features,
                           default_cache_root, parse_modalities)


from kg_fixtures import tiny_kgs  # noqa: E402


def toy_task() -> AlignmentTask:
    src, tgt = tiny_kgs()
    return AlignmentTask("tiny", src, tgt, [[0, 0]], [], [[1, 1], [2, 2]])


CHAR = FeatureOptions(name_encoder="char-ngram", name_dim=16, progress=False)


def test_store_hit_miss_and_invalidation(tmp_path):
    store = FeatureStore(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"dense": np.arange(6, dtype=np.float32).reshape(2, 3),
                "sparse": sp.csr_matrix(np.eye(3, dtype=np.float32)), "mask": np.array([True, False])}, {"n": 2}

    parts = {"dataset": "abc", "encoder": "x", "model": "m", "options": {"dim": 3}}
    first = store.get_or_compute(parts, compute, name="t-names")
    assert not first.hit and len(calls) == 1 and (first.path / "meta.json").is_file()
    second = store.get_or_compute(dict(parts), compute, name="t-names")
    assert second.hit and len(calls) == 1 and second.info == {"n": 2} and second.key == first.key
    np.testing.assert_array_equal(second.arrays["dense"], first.arrays["dense"])
    assert sp.issparse(second.arrays["sparse"]) and (second.arrays["sparse"] != first.arrays["sparse"]).nnz == 0
    assert second.arrays["mask"].dtype == bool
    for change in ({"options": {"dim": 4}}, {"model": "m2"}, {"encoder": "y"}, {"dataset": "abd"}):
        again = store.get_or_compute({**parts, **change}, compute, name="t-names")
        assert not again.hit
    assert len(calls) == 5
    meta = json.loads((first.path / "meta.json").read_text())
    assert meta["key_parts"]["model"] == "m" and meta["arrays"]["sparse"]["kind"] == "sparse"


def test_store_recovers_from_a_corrupt_entry_and_can_be_disabled(tmp_path):
    store = FeatureStore(tmp_path)
    parts = {"dataset": "d"}
    entry = store.get_or_compute(parts, lambda: ({"a": np.ones(2)}, {}))
    (entry.path / "dense.npz").write_bytes(b"garbage")
    again = store.get_or_compute(parts, lambda: ({"a": np.zeros(2)}, {}))
    assert not again.hit and not again.arrays["a"].any()
    assert store.get_or_compute(parts, lambda: ({"a": np.ones(2)}, {})).hit
    off = FeatureStore(tmp_path / "off", enabled=False)
    assert not off.get_or_compute(parts, lambda: ({"a": np.ones(2)}, {})).hit
    assert not (tmp_path / "off").exists()
    assert store.clear() == 1


def test_default_cache_root_follows_mmea_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MMEA_HOME", str(tmp_path))
    assert default_cache_root() == tmp_path / "cache"
    assert FeatureStore().root == tmp_path / "cache" / "features"


def test_parse_modalities():
    assert parse_modalities("names, image,rel") == ("names", "images", "relations")
    assert parse_modalities("all") == MODALITIES
    with pytest.raises(MmeaInputError, match="valid choices"):
        parse_modalities("names,smell")


def test_task_features_cached_and_invalidated(tmp_path, caplog):
    task = toy_task()
    store = FeatureStore(tmp_path)
    mods = ("names", "numeric", "relations", "attributes", "images")
    first = compute_task_features(task, mods, CHAR, store)
    assert isinstance(first, TaskFeatures) and set(first.modalities) == set(mods)
    names = first["names"]
    assert names.source.shape == (3, 16) and names.target.shape == (4, 16)
    assert names.info["encoder"] == "char-ngram" and not names.info["cached"]
    assert names.extras["source_tfidf"].shape[0] == 3
    # the same text on both sides gets the same vector: one shared feature space
    np.testing.assert_allclose(names.source[2], names.target[2], rtol=1e-6)  # "paris" vs "Paris"
    rel = first["relations"]
    assert rel.source.shape[1] == rel.target.shape[1] == 6 and rel.info["vocabulary"]["shared"] == 1
    assert rel.target_mask.tolist() == [True, True, False, True]
    num = first["numeric"]
    assert num.info["num_attributes"] == 2 and num.extras["target_entity"].tolist() == [1, 2, 3]
    img = first["images"]
    assert img.source.shape == (3, 0) and not img.source_mask.any()  # no images anywhere: empty, no model
    summary = first.summary()
    assert summary["modalities"]["relations"]["coverage"] == {"source": 1.0, "target": 0.75}
    assert "coverage" in first.format_summary()

    second = compute_task_features(task, mods, CHAR, store)
    assert all(m.info["cached"] for m in second.modalities.values())
    np.testing.assert_array_equal(second["names"].source, names.source)
    assert (second["relations"].source != rel.source).nnz == 0
    np.testing.assert_array_equal(second["numeric"].extras["source_value"], num.extras["source_value"])

    changed = compute_task_features(task, ("names", "relations"),
                                    FeatureOptions(name_encoder="char-ngram", name_dim=8, progress=False), store)
    assert not changed["names"].info["cached"] and changed["names"].dim == 8
    assert changed["relations"].info["cached"]  # other modalities keep their cache
    src_name = compute_task_features(task, ("names",), FeatureOptions(name_encoder="char-ngram", name_dim=16,
                                                                      name_source="uri", progress=False), store)
    assert not src_name["names"].info["cached"]


def test_task_features_precomputed_images(tmp_path):
    task = toy_task()
    vecs = {0: np.ones(3), 2: np.full(3, 2.0), 11: np.full(3, 3.0), "http://y/Lyon": np.full(3, 4.0)}
    with open(tmp_path / "img.pkl", "wb") as fh:
        pickle.dump(vecs, fh)
    opts = FeatureOptions(image_features=(str(tmp_path / "img.pkl"),), progress=False)
    feats = compute_task_features(task, "images", opts, FeatureStore(tmp_path / "c"))
    img = feats["images"]
    assert img.source_mask.tolist() == [True, False, True] and img.target_mask.tolist() == [False, True, False, True]
    np.testing.assert_array_equal(img.target[3], [4, 4, 4])
    assert img.info["encoder"] == "precomputed"
    with pytest.raises(MmeaInputError, match="does not exist"):
        compute_task_features(task, "images", FeatureOptions(image_features=(str(tmp_path / "no.pkl"),)))


def test_task_features_name_model_missing_is_actionable(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("SENTENCE_TRANSFORMERS_HOME", str(tmp_path / "st"))
    with pytest.raises(WeightsNotFoundError, match="LaBSE"):
        compute_task_features(toy_task(), "names", FeatureOptions(name_encoder="sentence-transformers"), FeatureStore(tmp_path / "c"))
    with pytest.warns(RuntimeWarning, match="char-ngram"):
        feats = compute_task_features(toy_task(), "names", FeatureOptions(name_encoder="auto", name_dim=8),
                                      FeatureStore(tmp_path / "c"))
    info = feats["names"].info
    assert info["encoder"] == "char-ngram" and info["requested"] == "auto" and "LaBSE" in info["fallback_reason"]


def test_images_of_one_side_only_widen_the_other():
    src, tgt = tiny_kgs()
    src.image_features = np.array([[1, 0], [0, 0], [2, 2]], dtype=np.float32)
    src.image_mask = np.array([True, False, True])
    task = AlignmentTask("half", src, tgt, [[0, 0]], [], [[1, 1]])
    img = compute_task_features(task, "images", FeatureOptions(progress=False))["images"]
    assert img.source.shape == (3, 2) and img.target.shape == (4, 2) and not img.target.any()
    assert img.source_mask.tolist() == [True, False, True] and not img.target_mask.any()
