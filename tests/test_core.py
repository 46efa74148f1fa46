"""Registry, config parsing/overrides, numeric parsing, data model and splits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmea.config import apply_overrides, parse_value, to_toml
from mmea.pipelines.align_config import load_config, resolve_config
from mmea.data import KnowledgeGraph, make_split, parse_numeric
from mmea.data.catalog import git_blob_sha1, load_catalog
from mmea.data.parsing import LoadReport, check_links, map_ids, read_id_map, read_int_triples
from mmea.errors import DataFormatError, MmeaInputError
from mmea.registry import Registry, normalize_name


def test_normalize_name():
    assert normalize_name("BernoulliNegativeSampler", "NegativeSampler") == "bernoulli"
    assert normalize_name("HardNnSampler", "Sampler") == "hard-nn"
    assert normalize_name("SelfMEAModel", "Model") == "self-mea"


def test_registry_resolves_and_lists_choices():
    reg = Registry("widget", suffix="Widget")

    @reg.register
    class RoundWidget:
        """Round."""

        def __init__(self, r=1):
            self.r = r

    assert reg.make("round", r=3).r == 3
    assert reg.make(RoundWidget).r == 1
    inst = RoundWidget(5)
    assert reg.make(inst) is inst
    with pytest.raises(MmeaInputError, match="valid choices: round"):
        reg.get("square")
    assert reg.describe() == [("round", "Round.")]


@pytest.mark.parametrize("raw,expected", [
    ("12", 12.0), ("-3.5e2", -350.0), ("1,234,567", 1234567.0), ('"12.5"^^<http://www.w3.org/2001/XMLSchema#double>', 12.5),
    ("1982", 1982.0), ("44 BC", -44.0), ("2000-01-01", 2000.0), ("2001-03-01", 2001 + 59 / 365),
    ("abc", math.nan), ("", math.nan), ("2001-13-01", math.nan), ('"Paris"@fr', math.nan),
])
def test_parse_numeric(raw, expected):
    got = parse_numeric(raw)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected)


def test_split_is_seeded_and_valid_comes_from_train():
    links = np.stack([np.arange(100), np.arange(100) + 1000], 1)
    tr, va, te = make_split(links, 0.3, seed=7)
    assert (len(tr), len(va), len(te)) == (27, 3, 70)
    tr2, va2, te2 = make_split(links, 0.3, seed=7)
    assert np.array_equal(te, te2) and np.array_equal(va, va2)
    _, _, te3 = make_split(links, 0.3, seed=8)
    assert not np.array_equal(te, te3)
    together = np.concatenate([tr, va, te])
    assert len(np.unique(together[:, 0])) == 100
    tr0, va0, te0 = make_split(links, 0.0, seed=0)
    assert len(tr0) == len(va0) == 0 and len(te0) == 100
    with pytest.raises(MmeaInputError):
        make_split(links, 1.5, seed=0)


def test_resplit_keeps_test_disjoint(tiny_task):
    t = tiny_task.resplit(0.5, seed=1)
    assert t.split_sizes()["test"] == 3
    seen = {tuple(x) for x in np.concatenate([t.train, t.valid])}
    assert not seen & {tuple(x) for x in t.test}
    assert t.provenance["split"]["seed"] == 1


def test_kg_validation_and_summary(tiny_task):
    kg = tiny_task.source
    s = kg.summary()
    assert s["entities"] == 6 and s["triples"] == 5 and s["relations"] == 2
    assert kg.lookup("a:Rome") == 4 and kg.lookup("4") == 4
    with pytest.raises(MmeaInputError):
        kg.lookup("nope")
    with pytest.raises(ValueError, match="out of range"):
        KnowledgeGraph("x", ["0"], ["u"], ["n"], ["r"], np.array([[0, 0, 3]]))
    assert kg.fingerprint() == kg.fingerprint()


def test_image_mask_from_paths():
    kg = KnowledgeGraph("x", ["0", "1"], ["u0", "u1"], ["a", "b"], image_paths=["a.png", ""])
    assert kg.image_mask.tolist() == [True, False]


def test_readers_report_file_line_and_text(tmp_path):
    p = tmp_path / "triples"
    p.write_text("1 2 3\n4 5\n")
    with pytest.raises(DataFormatError) as e:
        read_int_triples(p)
    assert "line 2" in str(e.value) and "'4 5'" in str(e.value) and str(p) in str(e.value)
    p.write_text("1 2 3\n4 x 6\n")
    with pytest.raises(DataFormatError, match="line 2.*integer"):
        read_int_triples(p)
    p.write_text("1 2 3\n\n4 5 6\n")
    assert read_int_triples(p).tolist() == [[1, 2, 3], [4, 5, 6]]
    q = tmp_path / "ids"
    q.write_bytes(b"0\tok\n1\t\xff\xfe bad\n")
    with pytest.raises(DataFormatError, match="line 2.*UTF-8"):
        read_id_map(q)
    q.write_text("0\ta\n0\tb\n")
    with pytest.raises(DataFormatError, match="already defined on line 1"):
        read_id_map(q)


def test_map_ids_and_check_links(tmp_path):
    with pytest.raises(DataFormatError, match="line 12.*id 9"):
        map_ids(np.array([[1, 2], [9, 2]]), {1: 0, 2: 1}, "links", line_nos=np.array([11, 12]))
    rep = LoadReport()
    links = check_links(np.array([[0, 1], [0, 1], [2, 3]]), "links", rep, np.array([1, 2, 3]))
    assert links.tolist() == [[0, 1], [2, 3]] and rep.skipped["duplicate links"] == 1 and rep.warnings
    with pytest.raises(DataFormatError, match="conflicting.*lines 1 and 2"):
        check_links(np.array([[0, 1], [0, 2]]), "links", LoadReport(), np.array([1, 2]))


def test_config_overrides_and_errors(tmp_path):
    cfg = load_config(None, ["search.csls_k=5", "seed=3", "data.seed_ratio=0.2"])
    assert cfg.search.csls_k == 5 and cfg.seed == 3 and cfg.data.seed_ratio == 0.2
    with pytest.raises(MmeaInputError, match="unknown key search.cls_k; valid keys: .*csls_k"):
        load_config(None, ["search.cls_k=5"])
    with pytest.raises(MmeaInputError, match="search.csls_k must be int"):
        load_config(None, ["search.csls_k=five"])
    with pytest.raises(MmeaInputError, match="unknown section"):
        load_config(None, ["serch.csls_k=5"])
    with pytest.raises(MmeaInputError, match="key=value"):
        load_config(None, ["seed"])
    assert parse_value("true") is True and parse_value("0.5") == 0.5 and parse_value("abc") == "abc"
    assert apply_overrides({}, ["foo=1"]) == {"model": {"foo": 1}}
    f = tmp_path / "c.toml"
    f.write_text('seed = 4\n[search]\nmatch = "greedy"\n')
    cfg = load_config(f, ["search.topk=3"])
    assert cfg.seed == 4 and cfg.search.match == "greedy" and cfg.search.topk == 3
    f.write_text("seed = \n")
    with pytest.raises(MmeaInputError, match="invalid TOML"):
        load_config(f)


def test_config_round_trips_through_toml(tmp_path):
    import dataclasses

    cfg = load_config(None, ["search.csls_k=7", "data.src=dbp_zh", "data.tgt=dbp_en"])
    d = dataclasses.asdict(cfg)
    f = tmp_path / "config.toml"
    f.write_text(to_toml(d))
    assert load_config(f) == cfg


def test_unknown_model_parameter_is_an_error():
    with pytest.raises(MmeaInputError, match="unknown key model"):
        resolve_config({"model": {"name": "baseline", "not_a_param": 1}})
    with pytest.raises(MmeaInputError, match="unknown model"):
        resolve_config({"model": {"name": "nope"}})


def test_catalog_names_resolve():
    cat = load_catalog()
    e, swap = cat.find_pair("dbp_zh", "dbp_en")
    assert e.name == "dbp15k_zh_en" and not swap and e.loader == "dbp15k"
    e, swap = cat.find_pair("fb15k", "db15k")
    assert e.name == "fb15k_db15k" and swap
    assert cat.find_pair("demo_src", "demo_tgt")[0].generated
    with pytest.raises(MmeaInputError, match="unknown KG"):
        cat.find_pair("dbp_xx", "dbp_en")
    with pytest.raises(MmeaInputError, match="valid pairs"):
        cat.find_pair("dbp_zh", "fb15k")
    assert all(len(f.git_blob) == 40 for e in cat.entries.values() for f in e.files)


def test_git_blob_sha1_matches_git():
    # `printf 'hello\n' | git hash-object --stdin`
    assert git_blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_offline_missing_dataset_error_names_files(tmp_path, monkeypatch):
    from mmea.data.catalog import locate
    from mmea.errors import DatasetNotFoundError

    monkeypatch.delenv("MMEA_DATA_DIR", raising=False)
    entry = load_catalog().get("dbp15k_zh_en")
    with pytest.raises(DatasetNotFoundError) as e:
        locate(entry, tmp_path)
    msg = str(e.value)
    assert "DBP15k/zh_en/ent_ids_1" in msg and str(tmp_path) in msg
    assert "mmea datasets download" in e.value.hint


@pytest.mark.data
def test_catalog_checksums_match_shared_copies(data_dir):
    """Every catalogued file in ../shared/datasets has the checksum the catalog records."""
    bad = []
    for e in load_catalog().entries.values():
        for f in e.files:
            p = data_dir / f.path
            if p.is_file() and git_blob_sha1(p.read_bytes()) != f.git_blob:
                bad.append(f.path)
    assert not bad


def test_check_links_can_keep_one_to_many_links():
    rep, notes = LoadReport(), []
    links = check_links(np.array([[0, 1], [0, 2], [3, 4]]), "links", rep, np.array([1, 2, 3]),
                        one_to_many="keep", notes=notes)
    assert links.tolist() == [[0, 1], [0, 2], [3, 4]]
    assert rep.read["one-to-many links (kept)"] == 2 and "lines 1, 2" in rep.warnings[0] and len(notes) == 1
