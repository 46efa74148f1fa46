"""DBP15k loader: tiny written fixtures (layout, companions, bad input) and the real benchmark copies."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from mmea.data.loaders import LOADERS, LoadOptions, detect_loader
from mmea.data.loaders.dbp15k import Dbp15kLoader
from mmea.errors import DataFormatError, MmeaInputError

ZH = "http://zh.dbpedia.org/resource/"
EN = "http://dbpedia.org/resource/"
ZH_NAMES = ["北京", "上海", "Kim_Dae-jung", "%E5%8C%97", "孤立"]
EN_NAMES = ["Beijing", "Shanghai", "Kim_Dae-jung", "North", "Lonely"]


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def lines(rows) -> str:
    return "".join("\t".join(map(str, r)) + "\n" for r in rows)


def make_dbp15k(root: Path, *, translated=True, mugnn=True, links="ref_ent_ids") -> Path:
    """root/DBP15k/zh_en (+ translated_ent_name, + DBP15k_MuGNN/zh_en).

    KG1 ids 0..4, KG2 ids 10..14 (one global id space); links i <-> 10+i.
    """
    d = root / "DBP15k" / "zh_en"
    write(d / "ent_ids_1", lines((i, ZH + n) for i, n in enumerate(ZH_NAMES)))
    write(d / "ent_ids_2", lines((10 + i, EN + n) for i, n in enumerate(EN_NAMES)))
    write(d / "triples_1", lines([(0, 0, 1), (1, 1, 2), (2, 2, 3), (3, 0, 0)]))
    write(d / "triples_2", lines([(10, 7, 11), (11, 8, 12), (12, 7, 13)]))
    write(d / "cleaned_rel_ids_1", lines([(0, "capital"), (1, "leader")]))  # relation 2 has no name
    write(d / "cleaned_rel_ids_2", lines([(7, "capital"), (8, "leader"), (9, "unused")]))
    if links == "ref_ent_ids":
        write(d / "ref_ent_ids", lines((i, 10 + i) for i in range(5)))
    else:  # JAPE: train / test files only
        write(d / "sup_pairs", lines([(0, 10), (1, 11)]))
        write(d / "ref_pairs", lines((i, 10 + i) for i in range(2, 5)))
    if translated:
        names = [[i, ["tr", n.lower()]] for i, n in enumerate(EN_NAMES)]
        names += [[10 + i, [n.lower()]] for i, n in enumerate(EN_NAMES)]
        write(root / "DBP15k" / "translated_ent_name" / "dbp_zh_en.json", json.dumps(names))
    if mugnn:
        m = root / "DBP15k_MuGNN" / "zh_en"
        # MuGNN numbers entities its own way (reversed) and knows one entity DBP15k lacks
        zh = [ZH + n for n in ZH_NAMES][::-1] + [ZH + "Extra"]
        write(m / "entity2id_zh.txt", f"{len(zh)}\n" + lines((u, i) for i, u in enumerate(zh)))
        write(m / "attr2id_zh.txt", "2\n" + lines([("http://zh.dbpedia.org/property/人口", 0),
                                                    ("http://zh.dbpedia.org/property/面积", 1)]))
        # MuGNN id 4 = DBP15k id 0 (北京): both attributes; id 5 = Extra (not in DBP15k)
        write(m / "entity2att_zh.txt", "4\n4\t0\t1\n3\t1\n0\n5\t0\n")
        en = [EN + n for n in EN_NAMES]
        write(m / "entity2id_en.txt", f"{len(en)}\n" + lines((u, i) for i, u in enumerate(en)))
        write(m / "attr2id_en.txt", "1\n" + lines([("http://dbpedia.org/ontology/populationTotal", 0)]))
        write(m / "entity2att_en.txt", "2\n0\t0\n1\t0\n")
    return d


@pytest.fixture
def dbp(tmp_path) -> Path:
    return make_dbp15k(tmp_path)


def load(path, **kw):
    return LOADERS.make("dbp15k").load(path, LoadOptions(**kw))


# -- layout ---------------------------------------------------------------------

def test_registered_and_detected(dbp, tmp_path):
    assert LOADERS.get("dbp15k") is Dbp15kLoader
    assert Dbp15kLoader.detect(dbp)
    assert Dbp15kLoader.detect(dbp.parent)  # the folder holding the pairs
    assert not Dbp15kLoader.detect(tmp_path / "DBP15k_MuGNN")
    (tmp_path / "empty").mkdir()
    assert not Dbp15kLoader.detect(tmp_path / "empty")
    assert detect_loader(dbp) == "dbp15k"


def test_load_entities_triples_relations(dbp):
    task = load(dbp)
    s, t = task.source, task.target
    assert (s.name, t.name) == ("dbp_zh", "dbp_en")
    assert s.ids == ["0", "1", "2", "3", "4"] and t.ids == ["10", "11", "12", "13", "14"]
    assert s.uris[0] == ZH + "北京"
    assert s.names[2] == "Kim Dae-jung" and s.names[3] == "北"  # decoded local names
    # relation ids: union of triples and name file, renumbered per KG
    assert s.relations == ["capital", "leader", "rel_2"]
    assert t.relations == ["capital", "leader", "unused"]
    np.testing.assert_array_equal(s.triples, [[0, 0, 1], [1, 1, 2], [2, 2, 3], [3, 0, 0]])
    np.testing.assert_array_equal(t.triples, [[0, 0, 1], [1, 1, 2], [2, 0, 3]])
    assert s.meta["relation_source_ids"] == [0, 1, 2] and t.meta["relation_source_ids"] == [7, 8, 9]
    rep = task.meta["load_report"]
    assert rep["read"]["kg1 entities"] == 5 and rep["read"]["kg2 triples"] == 3
    assert rep["skipped"]["kg1 relations without a name (named rel_<id>)"] == 1
    assert any("1 of 3 relations of KG 1 have no name" in w for w in rep["warnings"])


def test_links_and_default_seeded_split(dbp):
    task = load(dbp, seed_ratio=0.4, seed=3, valid_ratio=0.5)
    links = task.all_links
    assert sorted(map(tuple, links.tolist())) == [(i, i) for i in range(5)]
    assert task.split_sizes() == {"train": 1, "valid": 1, "test": 3}
    assert task.provenance["split"] == {"kind": "seeded", "train_ratio": 0.4, "valid_ratio_of_train": 0.5, "seed": 3}
    assert task.provenance["links"].endswith("ref_ent_ids")
    again = load(dbp, seed_ratio=0.4, seed=3, valid_ratio=0.5)
    np.testing.assert_array_equal(again.test, task.test)
    # the default split equals resplit() with the same ratio and seed
    default = load(dbp)
    np.testing.assert_array_equal(default.resplit(0.3, 0).test, default.test)


def test_translated_names_both_sides(dbp):
    task = load(dbp)
    assert task.source.translated_names[0] == "tr beijing"
    assert task.target.translated_names[2] == "kim_dae-jung"
    assert task.provenance["source"]["translated_names"].endswith("dbp_zh_en.json")
    assert task.meta["load_report"]["read"]["kg2 translated names"] == 5


def test_missing_translated_names_is_a_counted_note(tmp_path):
    d = make_dbp15k(tmp_path, translated=False)
    task = load(d)
    assert task.source.translated_names is None and task.target.translated_names is None
    assert task.meta["load_report"]["skipped"]["translated-name file not found"] == 1
    assert any("no translated names" in n for n in task.meta["notes"])


def test_mugnn_attributes_mapped_by_uri(dbp):
    task = load(dbp)
    s = task.source
    assert s.attributes == ["http://zh.dbpedia.org/property/人口", "http://zh.dbpedia.org/property/面积"]
    got = sorted(map(tuple, s.attr_triples.tolist()))
    assert got == [(0, 0), (0, 1), (1, 1)]  # MuGNN 4 -> 北京 (0), MuGNN 3 -> 上海 (1)
    assert all(v == "" for v in s.attr_values) and np.isnan(s.attr_numeric).all()
    rep = task.meta["load_report"]
    assert rep["skipped"]["kg1 attribute entities not in ent_ids_1"] == 1  # "Extra"
    assert rep["read"]["kg2 attribute triples"] == 2
    assert task.provenance["source"]["attributes"]["entity2att"].endswith("entity2att_zh.txt")


def test_attributes_found_under_data_root(tmp_path):
    d = make_dbp15k(tmp_path / "a", mugnn=False)
    make_dbp15k(tmp_path / "b")  # a second copy holding the MuGNN files
    assert load(d).source.num_attributes == 0
    task = load(d, data_root=tmp_path / "b")
    assert task.source.num_attributes == 2


def test_missing_attributes_is_a_counted_note(tmp_path):
    task = load(make_dbp15k(tmp_path, mugnn=False))
    assert len(task.source.attr_triples) == 0
    assert task.meta["load_report"]["skipped"]["attribute folder not found"] == 1


def test_dataset_split_jape_layout(tmp_path):
    d = make_dbp15k(tmp_path, links="jape")
    task = load(d, use_dataset_split=True, valid_ratio=0.5)
    assert task.split_sizes() == {"train": 1, "valid": 1, "test": 3}
    assert sorted(map(tuple, np.concatenate([task.train, task.valid]).tolist())) == [(0, 0), (1, 1)]
    assert sorted(map(tuple, task.test.tolist())) == [(2, 2), (3, 3), (4, 4)]
    split = task.provenance["split"]
    assert split["kind"] == "dataset" and split["train"].endswith("sup_pairs") and split["test"].endswith("ref_pairs")
    # without the flag: a seeded split of all 5 links (sup + ref)
    assert len(load(d).all_links) == 5


def test_dataset_split_needs_a_train_file(dbp):
    with pytest.raises(MmeaInputError, match="sup_pairs"):
        load(dbp, use_dataset_split=True)


def test_swap_exchanges_sides_and_link_columns(dbp):
    a = load(dbp, seed_ratio=0.4)
    b = load(dbp, seed_ratio=0.4, swap=True)
    assert b.source.name == "dbp_en" and b.target.name == "dbp_zh"
    np.testing.assert_array_equal(b.test, a.test[:, ::-1])
    assert b.provenance["swapped"] and b.provenance["source"]["entities"].endswith("ent_ids_2")


def test_parent_folder_with_pair_option(dbp):
    task = load(dbp.parent, pair="zh_en")
    assert task.source.num_entities == 5
    with pytest.raises(MmeaInputError, match="zh_en"):
        load(dbp.parent)


# -- bad input ------------------------------------------------------------------

def test_malformed_triple_line_names_file_line_and_text(dbp):
    write(dbp / "triples_1", "0\t0\t1\n1\t1\n")
    with pytest.raises(DataFormatError) as e:
        load(dbp)
    assert e.value.path.endswith("triples_1") and e.value.line_no == 2 and "1\\t1" in str(e.value)


def test_unknown_entity_in_triples_is_an_error(dbp):
    write(dbp / "triples_1", "0\t0\t1\n\n1\t1\t99\n")
    with pytest.raises(DataFormatError, match="id 99 is not defined in ent_ids_1") as e:
        load(dbp)
    assert e.value.line_no == 3 and e.value.text == "1\t1\t99"


def test_unknown_entity_in_links_is_an_error(dbp):
    write(dbp / "ref_ent_ids", "0\t10\n1\t4\n")  # 4 is a KG1 entity, not a KG2 one
    with pytest.raises(DataFormatError, match="second-column entity id 4") as e:
        load(dbp)
    assert e.value.line_no == 2


def test_duplicate_links_one_counted_warning(dbp):
    write(dbp / "ref_ent_ids", "0\t10\n1\t11\n0\t10\n0\t10\n")
    task = load(dbp)
    rep = task.meta["load_report"]
    assert len(task.all_links) == 2 and rep["skipped"]["duplicate links"] == 2
    assert sum("duplicate link" in w for w in rep["warnings"]) == 1


def test_conflicting_links_are_an_error(dbp):
    write(dbp / "ref_ent_ids", "0\t10\n1\t11\n0\t12\n")
    with pytest.raises(DataFormatError, match="conflicting") as e:
        load(dbp)
    assert e.value.line_no == 3


def test_non_utf8_bytes_are_a_clear_error(dbp):
    write(dbp / "ent_ids_1", f"0\t{ZH}a\n".encode() + b"1\thttp://x/\xff\xfe\n")
    with pytest.raises(DataFormatError, match="not valid UTF-8") as e:
        load(dbp)
    assert e.value.line_no == 2 and e.value.hint


def test_mugnn_header_count_mismatch_is_a_counted_warning(dbp):
    m = dbp.parent.parent / "DBP15k_MuGNN" / "zh_en"
    write(m / "attr2id_en.txt", "7\n" + lines([("http://dbpedia.org/ontology/populationTotal", 0)]))
    task = load(dbp)
    rep = task.meta["load_report"]
    assert rep["read"]["header count mismatches"] == 1
    assert any("declares 7 entries but the file has 1" in w for w in rep["warnings"])


def test_mugnn_bad_lines_are_errors(dbp):
    m = dbp.parent.parent / "DBP15k_MuGNN" / "zh_en"
    write(m / "entity2att_en.txt", "2\n0\t0\n1\tx\n")
    with pytest.raises(DataFormatError, match="'x'") as e:
        load(dbp)
    assert e.value.line_no == 3
    write(m / "entity2att_en.txt", "2\n0\t0\n1\t5\n")
    with pytest.raises(DataFormatError, match="attribute id 5") as e:
        load(dbp)
    assert e.value.line_no == 3
    write(m / "entity2att_en.txt", "many\n0\t0\n")
    with pytest.raises(DataFormatError, match="entry count") as e:
        load(dbp)
    assert e.value.line_no == 1
    write(m / "entity2att_en.txt", "1\n0\t0\n")
    write(m / "entity2id_en.txt", f"2\n{EN}Beijing\t0\n{EN}Shanghai\t0\n")
    with pytest.raises(DataFormatError, match="id 0 already defined on line 2") as e:
        load(dbp)
    assert e.value.line_no == 3
    write(m / "entity2id_en.txt", f"2\n{EN}Beijing\t0\n7\n")
    with pytest.raises(DataFormatError, match="URI<TAB>id") as e:
        load(dbp)
    assert e.value.line_no == 3


def test_bad_translated_json_is_an_error(dbp):
    write(dbp.parent / "translated_ent_name" / "dbp_zh_en.json", '[[0, ["a"]], [1, "b"]]')
    with pytest.raises(DataFormatError, match=r"\[id, \[tokens"):
        load(dbp)
    write(dbp.parent / "translated_ent_name" / "dbp_zh_en.json", '[[0, ["a"]],\n [1, ')
    with pytest.raises(DataFormatError, match="invalid JSON") as e:
        load(dbp)
    assert e.value.line_no == 2


# -- the real benchmark copies ---------------------------------------------------

COUNTS = {
    "zh_en": ((19388, 19572), (70414, 95142)),
    "ja_en": ((19814, 19780), (77214, 93484)),
    "fr_en": ((19661, 19993), (105998, 115722)),
}


def _check_counts(task, pair):
    (e1, e2), (t1, t2) = COUNTS[pair]
    s, t = task.source, task.target
    assert (s.num_entities, t.num_entities) == (e1, e2)
    assert (len(s.triples), len(t.triples)) == (t1, t2)
    assert len(task.all_links) == 15000
    rep = task.meta["load_report"]
    # every entity has an entry in the translated-name file
    assert not any("without a translated name" in k for k in rep["skipped"])
    assert sum(bool(x) for x in s.translated_names) >= e1 - 1 and all(t.translated_names)
    for kg in (s, t):
        with_attrs = len(np.unique(kg.attr_triples[:, 0]))
        assert 14_900 <= with_attrs <= 15_100
        assert kg.num_relations > 800 and not any(r == "" for r in kg.relations)


@pytest.mark.data
@pytest.mark.parametrize("pair", ["zh_en", "ja_en", "fr_en"])
def test_real_dbp15k_counts(data_dir, pair):
    task = load(data_dir / "DBP15k" / pair)
    _check_counts(task, pair)
    assert task.split_sizes() == {"train": 4050, "valid": 450, "test": 10500}
    assert task.source.name == f"dbp_{pair[:2]}"


@pytest.mark.data
def test_real_jape_zh_en_dataset_split(data_dir):
    task = load(data_dir / "DBP15k_JAPE_0_3" / "zh_en", data_root=data_dir, use_dataset_split=True)
    _check_counts(task, "zh_en")
    assert len(task.train) + len(task.valid) == 4500 and len(task.test) == 10500
    assert task.source.relations[0].startswith("http://zh.dbpedia.org/property/")
    # its ids differ from DBP15k/zh_en: translated names are matched by URI
    ref = load(data_dir / "DBP15k" / "zh_en")
    by_uri = dict(zip(ref.source.uris, ref.source.translated_names))
    assert all(by_uri[u] == n for u, n in zip(task.source.uris, task.source.translated_names))


@pytest.mark.data
def test_real_zh_en_loads_fast(data_dir):
    t0 = time.perf_counter()
    task = load(data_dir / "DBP15k" / "zh_en")
    elapsed = time.perf_counter() - t0
    assert elapsed < 10, f"loading DBP15k zh_en took {elapsed:.1f} s"
    assert task.source.translated_names is not None and len(task.source.attr_triples) > 0


# -- issue 19: BOM, id collisions, directories, empty files, control characters, hints --

def test_leading_bom_is_dropped_in_every_file(dbp):
    before = load(dbp)
    for f in ("ent_ids_1", "ent_ids_2", "triples_2", "ref_ent_ids", "cleaned_rel_ids_1"):
        write(dbp / f, b"\xef\xbb\xbf" + (dbp / f).read_bytes())
    tr = dbp.parent / "translated_ent_name" / "dbp_zh_en.json"
    write(tr, b"\xef\xbb\xbf" + tr.read_bytes())
    after = load(dbp)
    assert after.source.ids == before.source.ids and after.source.uris == before.source.uris
    assert after.source.relations == before.source.relations
    assert after.source.translated_names == before.source.translated_names
    np.testing.assert_array_equal(after.all_links, before.all_links)


def test_ent_ids_2_repeating_an_ent_ids_1_id_is_an_error_naming_both_lines(dbp):
    """The entity silently took the other KG's translated name."""
    write(dbp / "ent_ids_2", lines([(10, EN + "Beijing"), (2, EN + "Shanghai")]))
    with pytest.raises(DataFormatError, match="entity id 2 is already defined in ent_ids_1, line 3") as e:
        load(dbp)
    assert e.value.path.endswith("ent_ids_2") and e.value.line_no == 2


def test_empty_uri_is_an_error(dbp):
    write(dbp / "ent_ids_1", f"0\t{ZH}a\n1\t \n")
    with pytest.raises(DataFormatError, match="empty URI") as e:
        load(dbp)
    assert e.value.path.endswith("ent_ids_1") and e.value.line_no == 2


@pytest.mark.parametrize("name", ["ref_ent_ids", "cleaned_rel_ids_1", "triples_2", "ent_ids_1"])
def test_directory_in_place_of_a_file_is_an_error(dbp, name):
    (dbp / name).unlink()
    (dbp / name).mkdir()
    with pytest.raises(DataFormatError, match="is a directory, expected a file") as e:
        LOADERS.make(detect_loader(dbp)).load(dbp, LoadOptions())
    assert e.value.path == str(dbp / name)


def test_directory_in_place_of_a_companion_file_is_an_error(dbp):
    tr = dbp.parent / "translated_ent_name" / "dbp_zh_en.json"
    tr.unlink()
    tr.mkdir()
    with pytest.raises(DataFormatError, match="is a directory"):
        load(dbp)


@pytest.mark.parametrize("name", ["ent_ids_2", "triples_1", "ref_ent_ids"])
def test_empty_required_file_is_an_error(dbp, name):
    write(dbp / name, "")
    with pytest.raises(DataFormatError, match="empty file") as e:
        load(dbp)
    assert e.value.path.endswith(name)


def test_swapped_link_columns_get_a_swap_hint(dbp):
    write(dbp / "ref_ent_ids", "0\t10\n11\t1\n")
    with pytest.raises(DataFormatError, match="first-column entity id 11 is an entity of ent_ids_2") as e:
        load(dbp)
    assert e.value.line_no == 2 and "swapped" in e.value.hint


def test_conflicting_links_name_the_file_ids(dbp):
    write(dbp / "ref_ent_ids", "0\t10\n1\t11\n0\t12\n")
    with pytest.raises(DataFormatError, match=r"entity 0 \(source side\) is linked to two different entities "
                                               r"\(10 and 12\)"):
        load(dbp)
    write(dbp / "ref_ent_ids", "3\t13\n4\t13\n")  # internal ids 3, 4 -> 3; the file's id is 13
    with pytest.raises(DataFormatError, match=r"entity 13 \(target side\)"):
        load(dbp)


@pytest.mark.parametrize("text,line_no", [("0\t10\n1\t1\x001\n", 2), ("0\t1_0\n", 1), ("0\t10\n\x0b1\t11\n", 2)])
def test_control_characters_and_odd_digits_in_integer_ids_are_errors(dbp, text, line_no):
    """``1_0`` is 10 to ``int()``; a NUL or a vertical tab must not split or join ids silently."""
    write(dbp / "ref_ent_ids", text)
    with pytest.raises(DataFormatError) as e:
        load(dbp)
    assert e.value.path.endswith("ref_ent_ids") and e.value.line_no == line_no


def test_control_character_in_a_uri_is_an_error(dbp):
    write(dbp / "ent_ids_1", f"0\t{ZH}a\n1\t{ZH}b\x00\n")
    with pytest.raises(DataFormatError, match="NUL") as e:
        load(dbp)
    assert e.value.line_no == 2


def test_file_without_final_line_break_is_a_counted_warning(dbp):
    write(dbp / "triples_2", (dbp / "triples_2").read_text().rstrip("\n"))
    rep = load(dbp).meta["load_report"]
    assert rep["read"]["kg2 files without a final line break"] == 1


def test_crlf_integer_files_load_like_lf(dbp):
    """CRLF line ends took the integer files off the fast path, then failed (found by the fuzz suite)."""
    before = load(dbp)
    for f in ("triples_1", "ref_ent_ids"):
        write(dbp / f, (dbp / f).read_bytes().replace(b"\n", b"\r\n"))
    after = load(dbp)
    np.testing.assert_array_equal(after.source.triples, before.source.triples)
    np.testing.assert_array_equal(after.all_links, before.all_links)
