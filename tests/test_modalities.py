"""Modality encoders (mmea.modalities): the checks every registered encoder passes, then each one's own.

A new modality is one class in a new module of ``mmea/modalities`` plus its entry in ``CASES``
here (the options it is tested with) and a test of its own values: the meta-test fails on an
encoder without one.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from click.testing import CliRunner

from mmea.errors import MmeaInputError
from mmea.features import FeatureOptions, FeatureStore, compute_task_features
from mmea.modalities import MODALITY_ENCODERS, FeatureRequest, parse_modality_options

from kg_fixtures import tiny_kgs  # noqa: E402

#: modality -> the request options of the shared checks (offline: char n-grams, no image weights)
CASES = {"names": {"encoder": "char-ngram", "dim": 8}, "images": {}, "numeric": {}, "relations": {},
         "attributes": {}, "adjacency": {}}
OFFLINE = FeatureOptions(progress=False)


def _task():
    from mmea.data.graph import AlignmentTask

    src, tgt = tiny_kgs()
    return AlignmentTask("tiny", src, tgt, [[0, 0]], [], [[1, 1], [2, 2]])


def _dense(x):
    return x.toarray() if sp.issparse(x) else np.asarray(x)


def test_every_registered_modality_is_tested():
    assert set(MODALITY_ENCODERS.names()) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_shared_checks(name, tmp_path):
    """Rows per entity, masks, zero rows without the modality, a JSON key, a cache hit the second time."""
    cls = MODALITY_ENCODERS.get(name)
    assert cls.__doc__ and cls.make_options() == cls.Options()  # every option has a default
    with pytest.raises(MmeaInputError, match="valid options"):
        cls.make_options({"no_such_option": 1})
    task, store = _task(), FeatureStore(tmp_path)
    first = compute_task_features(task, {name: CASES[name]}, OFFLINE, store)
    f = first[name]
    for mat, mask, kg in ((f.source, f.source_mask, task.source), (f.target, f.target_mask, task.target)):
        assert mat.shape[0] == kg.num_entities and mask.dtype == bool and mask.shape == (kg.num_entities,)
        assert not _dense(mat)[~mask].any()  # no invented rows
    assert f.info["encoder"] and not f.info["cached"]
    meta = json.loads((store.path_for(f.info["cache_key"], f"tiny-{name}") / "meta.json").read_text())
    assert meta["key_parts"]["modality"] == name
    again = compute_task_features(task, {name: CASES[name]}, OFFLINE, store)[name]
    assert again.info["cached"] and np.array_equal(_dense(again.source), _dense(f.source))
    assert json.dumps(first.summary())


def test_aliases_resolve_and_unknown_modalities_fail():
    assert MODALITY_ENCODERS.canonical("visual") == "images" and MODALITY_ENCODERS.canonical("graph") == "adjacency"
    with pytest.raises(MmeaInputError, match="valid choices: names, images") as e:
        MODALITY_ENCODERS.get("smell")
    assert "mmea ls modalities" in e.value.hint


# ----------------------------------------------------------------------------- numeric: the modality in the new form
def test_numeric_options_live_in_its_class_and_change_its_key(tmp_path):
    """``numeric`` has no field in FeatureOptions / FeatureConfig: options come from its class, per run or request."""
    from mmea.encoders.numeric import numeric_features, numeric_profile

    assert not any(f.startswith("numeric") for f in FeatureOptions.__dataclass_fields__)
    task, store = _task(), FeatureStore(tmp_path)
    default = compute_task_features(task, "numeric", OFFLINE, store)["numeric"]
    per_run = FeatureOptions(progress=False, modality_options=parse_modality_options(["numeric.centres=4"]))
    four = compute_task_features(task, "numeric", per_run, store)["numeric"]
    a = four.info["num_attributes"]
    assert default.dim == 8 * a and four.dim == 4 * a and four.info["cache_key"] != default.info["cache_key"]
    src, tgt, _ = numeric_features(task.source, task.target, method="robust")
    assert np.array_equal(four.source.toarray(), numeric_profile(src, a, 4).toarray())
    assert np.array_equal(four.target.toarray(), numeric_profile(tgt, a, 4).toarray())
    # a model's request wins over the run-wide setting
    req = compute_task_features(task, {"numeric": FeatureRequest({"centres": 2})}, per_run, store)["numeric"]
    assert req.dim == 2 * a


def test_numeric_option_errors_name_the_option():
    assert parse_modality_options(["numbers.centres=4", "numeric.normalization=zscore"]) == \
        {"numeric": {"centres": "4", "normalization": "zscore"}}
    for bad, match in ((["numeric.centres=x"], "centres"), (["numeric.center=3"], "valid options: normalization"),
                       (["numeric=3"], "MODALITY.KEY=VALUE"), (["smell.x=1"], "unknown modality")):
        with pytest.raises(MmeaInputError, match=match):
            parse_modality_options(bad)
    with pytest.raises(MmeaInputError, match="robust, zscore, minmax"):
        MODALITY_ENCODERS.get("numeric").make_options({"normalization": "log"})


def test_text_options_are_converted_to_their_types():
    names = MODALITY_ENCODERS.get("names")
    o = names.make_options({"dim": "16", "ngram_range": "2,4", "transliterate": "yes"})
    assert (o.dim, o.ngram_range, o.transliterate) == (16, (2, 4), True)
    assert names.make_options({"dim": "none"}).dim is None
    assert MODALITY_ENCODERS.get("images").make_options({"features": "a.pkl,b.pkl"}).features == ("a.pkl", "b.pkl")


# ----------------------------------------------------------------------------- adjacency: a structure input
def test_adjacency_is_each_kgs_mean_over_neighbours():
    from mmea.encoders.structure import adjacency_matrix

    task = _task()
    f = compute_task_features(task, "adjacency", OFFLINE)["adjacency"]
    assert f.source.shape == (3, 3) and f.target.shape == (4, 4)
    want = adjacency_matrix(task.target.triples, 4, self_loops=False, normalization="row")
    assert np.array_equal(f.target.toarray(), want.toarray())
    assert f.source_mask.tolist() == [True, True, True] and f.target_mask.tolist() == [True, True, False, True]
    sym = compute_task_features(task, {"adjacency": {"normalization": "sym", "self_loops": True}}, OFFLINE)
    assert np.allclose(sym["adjacency"].source.toarray(), sym["adjacency"].source.toarray().T)


# ----------------------------------------------------------------------------- optional requests and the CLI
def test_an_optional_request_without_weights_is_recorded_not_raised(monkeypatch):
    from mmea.encoders import WeightsNotFoundError

    def no_weights(self, task):
        raise WeightsNotFoundError("no weights here")

    monkeypatch.setattr(MODALITY_ENCODERS.get("images"), "job", no_weights)
    feats = compute_task_features(_task(), {"images": FeatureRequest(optional=True), "relations": {}}, OFFLINE)
    assert "images" not in feats and "relations" in feats and "no weights" in str(feats.unavailable["images"])
    with pytest.raises(WeightsNotFoundError):
        compute_task_features(_task(), {"images": FeatureRequest()}, OFFLINE)


def test_cli_lists_modalities_and_sets_their_options(tmp_path):
    from mmea.cli import main

    r = CliRunner().invoke(main, ["ls", "modalities"])
    assert r.exit_code == 0, r.output
    for name in CASES:
        assert name in r.output
    assert "centres=8" in r.output
    bad = CliRunner().invoke(main, ["features", "--modalities", "numeric", "--modality-option", "numeric.centre=4"])
    assert bad.exit_code == 2 and "valid options" in bad.output
