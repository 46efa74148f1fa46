"""MMKG loaders: the converted id layout and the raw mmkb files (tiny written fixtures, bad input, real data)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from mmea.data.loaders.base import LOADERS, LoadOptions
from mmea.data.loaders.linkpred import LinkpredLoader
from mmea.data.loaders.mmkg import MmkgConvertedLoader, MmkgLoader, parse_attr_value
from mmea.errors import DataFormatError, MmeaInputError

DBR = "http://dbpedia.org/resource/"


# ---------------------------------------------------------------------------
# fixtures written by the tests
# ---------------------------------------------------------------------------

def _write(path: Path, lines, end="\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\n".join(lines) + end).encode("utf-8") if isinstance(lines, list) else lines)
    return path


CONVERTED = {
    "ent_ids_1": [f"0\t<{DBR}Kim_Dae-jung>", f"1\t<{DBR}Caf%C3%A9_Society>", f"2\t<{DBR}Paris>", f"3\t<{DBR}Rome>"],
    "ent_ids_2": ["4\t/m/0a", "5\t/m/0b", "6\t/m/0c", "7\t/m/0d"],
    "rel_ids_1": ["0\t<http://dbpedia.org/ontology/city>", "1\t<http://dbpedia.org/ontology/country>"],
    "rel_ids_2": ["2\t/location/location/contains", "3\t/film/film/genre"],
    "triples_1": ["0\t0\t2", "1\t1\t3", "2\t1\t3"],
    "ref_ent_ids": ["0\t4", "1\t5", "2\t6", "3\t7"],
    "sup_ent_ids": ["0\t4"],
    "dev_ent_ids": ["1\t5", "2\t6", "3\t7"],
    # line i = entity id i; blank = none; FB15K lines have no type
    "attr": ["birthYear|||1982|||gYear^^^birthDate|||1982-05-03|||date", "",
             "wasBornOnDate|||1894.0802|||degrees^^^lat|||48.85|||degrees", "founded|||1974-##-##|||date",
             "height_meters|||1.73^^^date_of_birth|||1955.75", "", "", "founded|||1904.0"],
}
FB237 = {
    "train.txt": ["/m/0a\t/location/location/contains\t/m/0b", "/m/0b\t/film/film/genre\t/m/0c",
                  "/m/0a\t/film/film/genre\t/m/0zz"],  # /m/0zz is no FB15K entity here
    "valid.txt": ["/m/0c\t/location/location/contains\t/m/0d"],
    "test.txt": ["/m/0d\t/people/person/nationality\t/m/0a"],
}
FB_NAMES = ["/m/0a\tSeoul", "/m/0b\tCafé Society", "/m/0c\tParis", "/m/0zz\tUnused"]


def write_companions(root: Path, fb237=True, mmkg=True) -> None:
    if fb237:
        for name, lines in FB237.items():
            _write(root / "FB15k-237" / name, lines, end="\r\n")
    if mmkg:
        _write(root / "MMKG" / "extra" / "FB15K_entity2text.txt", FB_NAMES)
        _write(root / "MMKG" / "DB15K" / "DB15K_ImageIndex.txt", [f"<{DBR}Paris>\tDBIMG00001",
                                                                  f"<{DBR}Rome>\tDBIMG00002"])
        _write(root / "MMKG" / "FB15K" / "FB15K_ImageIndex.txt", ["/m/0c\tFBIMG00001", "/m/0x\tFBIMG00002"])


def write_converted(root: Path, companions=True, **override) -> Path:
    """``root/conv/DB15K-FB15K`` (+ ``root/FB15k-237`` and ``root/MMKG`` beside it, as in shared/datasets)."""
    folder = root / "conv" / "DB15K-FB15K"
    files = dict(CONVERTED, **override)
    for name, lines in files.items():
        if lines is not None:
            _write(folder / name, lines)
    if companions:
        write_companions(root)
    return folder


@pytest.fixture
def converted(tmp_path) -> Path:
    return write_converted(tmp_path)


def load_conv(folder: Path, **opts):
    return MmkgConvertedLoader().load(folder, LoadOptions(**opts))


# ---------------------------------------------------------------------------
# converted layout
# ---------------------------------------------------------------------------

def test_registered_names():
    assert LOADERS.get("mmkg-converted") is MmkgConvertedLoader
    assert LOADERS.get("mmkg") is MmkgLoader


def test_detect(converted, tmp_path):
    assert MmkgConvertedLoader.detect(converted)
    assert not MmkgLoader.detect(converted)
    assert not LinkpredLoader.detect(converted)
    (converted / "attr").unlink()  # the DBP15k GCN-Align layout has no attr file
    assert not MmkgConvertedLoader.detect(converted)
    assert not MmkgConvertedLoader.detect(tmp_path / "nothing")


def test_converted_entities_relations_names(converted):
    task = load_conv(converted)
    s, t = task.source, task.target
    assert (s.name, t.name, task.name) == ("db15k", "fb15k", "DB15K-FB15K")
    assert s.ids == ["0", "1", "2", "3"] and t.ids == ["4", "5", "6", "7"]
    assert s.uris[0] == f"{DBR}Kim_Dae-jung"  # brackets removed
    assert s.names[:2] == ["Kim Dae-jung", "Café Society"]  # decoded local names
    assert t.names == ["Seoul", "Café Society", "Paris", ""]
    assert s.relations == ["http://dbpedia.org/ontology/city", "http://dbpedia.org/ontology/country"]
    np.testing.assert_array_equal(s.triples, [[0, 0, 2], [1, 1, 3], [2, 1, 3]])
    rep = task.meta["load_report"]
    assert rep["read"]["FB15K entities without a name"] == 1
    assert rep["skipped"]["FB15K names of entities not in the KG"] == 1


def test_converted_fb15k237_stands_in_for_missing_triples(converted):
    task = load_conv(converted)
    t = task.target
    # 5 FB15k-237 triples, one with an entity outside FB15K (counted, left out)
    assert t.relations == ["/location/location/contains", "/film/film/genre", "/people/person/nationality"]
    np.testing.assert_array_equal(t.triples, [[0, 0, 1], [1, 1, 2], [2, 0, 3], [3, 2, 0]])
    rep = task.meta["load_report"]
    assert rep["skipped"]["FB15K substitute triples with an entity outside FB15K"] == 1
    note = "FB15K relation triples are missing; FB15k-237 triples (4 of them, 3 relations) stand in for them"
    assert any(n.startswith(note) for n in task.meta["notes"])
    sub = task.meta["substitutions"][0]
    assert sub["part"] == "FB15K relation triples" and sub["triples"] == 4 and sub["dropped"] == 1
    assert task.provenance["substitutions"] == task.meta["substitutions"]
    assert task.provenance["target"]["substituted"] is True
    assert t.meta["relations_file_count"] == 2 and t.meta["relations_file_coverage"] == 2


def test_converted_attributes(converted):
    task = load_conv(converted)
    s, t = task.source, task.target
    assert s.attributes == ["birthYear", "birthDate", "wasBornOnDate", "lat", "founded"]
    np.testing.assert_array_equal(s.attr_triples, [[0, 0], [0, 1], [2, 2], [2, 3], [3, 4]])
    assert list(s.attr_values) == ["1982", "1982-05-03", "1894.0802", "48.85", "1974-##-##"]
    np.testing.assert_allclose(s.attr_numeric, [1982, 1982 + 122 / 365, 1894 + 213 / 365, 48.85, 1974])
    assert s.meta["attribute_types"]["birthDate"] == {"date": 1}
    assert t.attributes == ["height_meters", "date_of_birth", "founded"]
    np.testing.assert_array_equal(t.attr_triples, [[0, 0], [0, 1], [3, 2]])
    np.testing.assert_allclose(t.attr_numeric, [1.73, 1955.75, 1904.0])
    rep = task.meta["load_report"]["read"]
    assert rep["DB15K attribute values decoded as yyyy.mmdd"] == 1
    assert rep["DB15K attribute values decoded as partial date"] == 1


def test_converted_images_are_indexed_not_loaded(converted):
    task = load_conv(converted)
    assert task.source.meta["image_index_count"] == 2 and task.target.meta["image_index_count"] == 1
    assert task.source.image_mask is None and task.target.image_mask is None
    assert task.meta["load_report"]["skipped"]["FB15K image index lines for unknown entities"] == 1
    assert any(n.startswith("images: the MMKG image index lists 2 DB15K, 1 FB15K") for n in task.meta["notes"])


def test_converted_default_split_is_seeded_and_matches_resplit(converted):
    task = load_conv(converted, seed_ratio=0.5, seed=3, valid_ratio=0.5)
    assert task.split_sizes() == {"train": 1, "valid": 1, "test": 2}
    assert task.provenance["split"]["kind"] == "seeded"
    again = task.resplit(0.5, 3, 0.5)
    for part in ("train", "valid", "test"):
        np.testing.assert_array_equal(getattr(task, part), getattr(again, part))
    default = load_conv(converted)
    assert default.provenance["split"]["train_ratio"] == 0.2
    assert len(default.test) == 3  # 80% of 4 links


def test_converted_dataset_split(converted):
    task = load_conv(converted, use_dataset_split=True, valid_ratio=0.0)
    np.testing.assert_array_equal(task.train, [[0, 0]])
    np.testing.assert_array_equal(task.test, [[1, 1], [2, 2], [3, 3]])
    assert task.provenance["split"]["kind"] == "dataset"
    assert task.provenance["split"]["test"].endswith("dev_ent_ids")


def test_converted_swap(converted):
    task = load_conv(converted, swap=True, seed_ratio=0.5)
    plain = load_conv(converted, seed_ratio=0.5)
    assert task.source.name == "fb15k" and task.target.name == "db15k" and task.name == "FB15K-DB15K"
    np.testing.assert_array_equal(task.test, plain.test[:, ::-1])
    assert task.provenance["swapped"] is True and task.provenance["source"]["kg"] == "FB15K"


def test_converted_yago_rel_file_names(tmp_path):
    folder = write_converted(tmp_path, rel_ids_1=None, rel_ids_2=None)
    _write(folder / "rel_ids1", CONVERTED["rel_ids_1"])
    task = load_conv(folder)
    assert task.source.relations[0] == "http://dbpedia.org/ontology/city"


def test_converted_without_companions(tmp_path):
    folder = write_converted(tmp_path, companions=False)
    task = load_conv(folder)
    assert len(task.target.triples) == 0
    assert task.target.names == [""] * 4
    notes = " ".join(task.meta["notes"])
    assert "no FB15k-237 folder was found" in notes and "FB15K entity names are missing" in notes
    assert task.meta["substitutions"] == []


def test_converted_companions_from_options(tmp_path):
    folder = write_converted(tmp_path / "a", companions=False)
    write_companions(tmp_path / "elsewhere")
    task = load_conv(folder, data_root=tmp_path / "elsewhere")
    assert len(task.target.triples) == 4 and task.target.names[0] == "Seoul"
    task = load_conv(folder, fb15k_triples=tmp_path / "elsewhere" / "FB15k-237")
    assert len(task.target.triples) == 4
    with pytest.raises(MmeaInputError, match="fb15k_triples"):
        load_conv(folder, fb15k_triples=tmp_path / "missing")


def test_converted_with_triples_2(tmp_path):
    folder = write_converted(tmp_path, triples_2=["4\t2\t5", "6\t3\t7"])
    task = load_conv(folder)
    assert task.target.relations == ["/location/location/contains", "/film/film/genre"]
    np.testing.assert_array_equal(task.target.triples, [[0, 0, 1], [2, 1, 3]])
    assert task.meta["substitutions"] == []


# -- bad input ---------------------------------------------------------------

def test_malformed_entity_line(tmp_path):
    folder = write_converted(tmp_path, ent_ids_1=[f"0\t<{DBR}A>", f"x1\t<{DBR}B>"], companions=False)
    with pytest.raises(DataFormatError) as e:
        load_conv(folder)
    assert e.value.line_no == 2 and e.value.path.endswith("ent_ids_1") and "x1" in str(e.value)


def test_unknown_id_in_triples(tmp_path):
    folder = write_converted(tmp_path, triples_1=["0\t0\t2", "0\t1\t99"], companions=False)
    with pytest.raises(DataFormatError, match="99") as e:
        load_conv(folder)
    assert e.value.line_no == 2 and e.value.path.endswith("triples_1")


def test_unknown_and_reversed_ids_in_links(tmp_path):
    folder = write_converted(tmp_path, ref_ent_ids=["0\t4", "1\t99"], companions=False)
    with pytest.raises(DataFormatError, match="id 99 in column 2 is not a FB15K entity") as e:
        load_conv(folder)
    assert e.value.line_no == 2
    folder = write_converted(tmp_path / "b", ref_ent_ids=["0\t4", "5\t1"], companions=False)
    with pytest.raises(DataFormatError, match="is a FB15K entity; expected a DB15K entity"):
        load_conv(folder)


def test_duplicate_links_are_one_counted_warning(tmp_path, caplog):
    folder = write_converted(tmp_path, ref_ent_ids=["0\t4", "1\t5", "0\t4", "2\t6", "1\t5", "3\t7"],
                             companions=False)
    with caplog.at_level("WARNING", logger="mmea.data"):
        task = load_conv(folder)
    assert len(task.all_links) == 4
    rep = task.meta["load_report"]
    assert rep["skipped"]["duplicate links"] == 2
    assert sum("duplicate link" in w for w in rep["warnings"]) == 1
    assert sum("2 duplicate link" in r.getMessage() for r in caplog.records) == 1


def test_one_to_many_links_kept_by_default_and_an_error_on_request(tmp_path):
    folder = write_converted(tmp_path, ref_ent_ids=["0\t4", "1\t5", "0\t6", "3\t7"], companions=False)
    task = load_conv(folder)
    assert len(task.all_links) == 4
    assert task.meta["load_report"]["read"]["one-to-many links (kept)"] == 2
    assert any("1 entities are linked to more than one entity" in n for n in task.meta["notes"])
    with pytest.raises(DataFormatError, match="conflicting links") as e:
        load_conv(folder, extra={"one_to_many_links": "error"})
    assert e.value.line_no == 3
    with pytest.raises(MmeaInputError, match="one_to_many_links"):
        load_conv(folder, extra={"one_to_many_links": "maybe"})


def test_train_and_test_files_must_be_disjoint(tmp_path):
    folder = write_converted(tmp_path, sup_ent_ids=["0\t4", "1\t5"], companions=False)
    with pytest.raises(DataFormatError, match="also appear in dev_ent_ids"):
        load_conv(folder, use_dataset_split=True)


def test_non_utf8_bytes(tmp_path):
    folder = write_converted(tmp_path, companions=False)
    (folder / "ent_ids_2").write_bytes(b"4\t/m/0a\n5\t/m/0\xff\n6\t/m/0c\n7\t/m/0d\n")
    with pytest.raises(DataFormatError, match="not valid UTF-8") as e:
        load_conv(folder)
    assert e.value.line_no == 2 and e.value.path.endswith("ent_ids_2")
    folder = write_converted(tmp_path / "b", companions=False)
    (folder / "attr").write_bytes(b"a|||1|||integer\n\nname|||Caf\xe9|||string\n")
    with pytest.raises(DataFormatError, match="not valid UTF-8") as e:
        load_conv(folder)
    assert e.value.line_no == 3 and e.value.path.endswith("attr")


def test_attr_malformed_entry_names_the_line(tmp_path):
    attr = list(CONVERTED["attr"])
    attr[3] = "founded|||1974|||date^^^broken-entry"
    folder = write_converted(tmp_path, attr=attr, companions=False)
    with pytest.raises(DataFormatError, match="broken-entry") as e:
        load_conv(folder)
    assert e.value.line_no == 4 and e.value.path.endswith("attr")


def test_attr_line_for_no_entity(tmp_path):
    folder = write_converted(tmp_path, attr=CONVERTED["attr"] + ["", "x|||1"], companions=False)
    with pytest.raises(DataFormatError, match="entity id 9") as e:
        load_conv(folder)
    assert e.value.line_no == 10


def test_short_attr_file_is_counted(tmp_path):
    folder = write_converted(tmp_path, attr=CONVERTED["attr"][:5], companions=False)
    task = load_conv(folder)
    assert task.meta["load_report"]["read"]["entities beyond the end of attr (no attributes)"] == 3
    assert task.target.attributes == ["height_meters", "date_of_birth"]


@pytest.mark.parametrize("value,type_,name,expected,special", [
    ("1894.0802", "degrees", "wasBornOnDate", 1894 + 213 / 365, "yyyy.mmdd"),
    ("1905.0000", "degrees", "wasCreatedOnDate", 1905.0, "yyyy.mmdd"),
    ("48.8566", "degrees", "hasLatitude", 48.8566, None),
    ("1974-##-##", "date", "diedOnDate", 1974.0, "partial date"),
    ("1974-03-##", "date", "diedOnDate", 1974 + 59 / 365, "partial date"),
    ("15##-##-##", "date", "wasCreatedOnDate", math.nan, None),
    ("1982-05-03", "date", "birthDate", 1982 + 122 / 365, None),
    ("2011.75", "", "initial_release_date", 2011.75, None),
    ("abc", "string", "motto", math.nan, None),
])
def test_parse_attr_value(value, type_, name, expected, special):
    got, kind = parse_attr_value(value, type_, name)
    assert kind == special
    assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)


# ---------------------------------------------------------------------------
# raw mmkb layout
# ---------------------------------------------------------------------------

YAGO = "http://yago-knowledge.org/resource/"


def write_raw(root: Path, fb_triples=True, db_triples=True) -> Path:
    """``root/MMKG`` in the mmkb layout (+ ``root/FB15k-237`` beside it)."""
    mm = root / "MMKG"
    if fb_triples:
        _write(mm / "FB15K" / "FB15K_EntityTriples.txt", [
            "/m/0a <http://rdf.freebase.com/ns/location.location.contains> /m/0b .",
            "/m/0b <http://rdf.freebase.com/ns/film.film.genre> /m/0c .",
            "/m/0c <http://rdf.freebase.com/ns/location.location.contains> /m/0e ."])
    if db_triples:
        _write(mm / "DB15K" / "DB15K_EntityTriples.txt", [
            f"<{DBR}Seoul> <http://dbpedia.org/ontology/country> <{DBR}South_Korea> .",
            f"<{DBR}Paris>\t<http://dbpedia.org/ontology/country>\t<{DBR}France>",
            f'<{DBR}Paris> <http://dbpedia.org/ontology/motto> "Fluctuat nec mergitur"@la .'])
    _write(mm / "DB15K" / "DB15K_SameAsLink.txt", [
        f"/m/0a <SameAs> <{DBR}Seoul> .", f"/m/0c <SameAs> <{DBR}Paris> .", f"/m/0d <SameAs> <{DBR}Rome> ."])
    _write(mm / "YAGO15K" / "YAGO15K_SameAsLink.txt", [f"/m/0a <SameAs> <{YAGO}Seoul> .",
                                                       f"/m/0b <SameAs> <{YAGO}Cafe> ."])
    _write(mm / "YAGO15K" / "YAGO15K_NumericalTriples.txt", ["<Seoul>\t<hasLatitude>\t37.56"])
    _write(mm / "FB15K" / "FB15K_NumericalTriples.txt", [
        "/m/0a\t<http://rdf.freebase.com/ns/location.geocode.latitude>\t37.56",
        "/m/0f\t<http://rdf.freebase.com/ns/people.person.date_of_birth>\t1955.75"])
    _write(mm / "DB15K" / "DB15K_NumericalTriples.txt", [f"<{DBR}Rome>\t<http://dbpedia.org/ontology/founded>\t-753"])
    _write(mm / "DB15K" / "DB15K_ImageIndex.txt", [f"<{DBR}Seoul>\tDBIMG00001"])
    _write(mm / "FB15K" / "FB15K_ImageIndex.txt", ["/m/0a\tFBIMG00001", "/m/0g\tFBIMG00002"])
    _write(mm / "extra" / "FB15K_entity2text.txt", ["/m/0a\tSeoul", "/m/0c\tParis"])
    for name, lines in FB237.items():
        _write(root / "FB15k-237" / name, lines)
    return mm


def load_raw(folder: Path, **opts):
    return MmkgLoader().load(folder, LoadOptions(**opts))


def test_raw_detect(tmp_path):
    mm = write_raw(tmp_path)
    assert MmkgLoader.detect(mm)
    assert not MmkgConvertedLoader.detect(mm)
    assert not MmkgLoader.detect(mm / "DB15K")


def test_raw_entity_triples_links_attributes(tmp_path):
    task = load_raw(write_raw(tmp_path), pair="DB15K", seed_ratio=0.0)
    s, t = task.source, task.target
    assert task.name == "DB15K-FB15K" and (s.name, t.name) == ("db15k", "fb15k")
    # entity order: entity triples, then SameAs, numeric triples, image index
    assert s.ids == [f"{DBR}{x}" for x in ("Seoul", "South_Korea", "Paris", "France", "Rome")]
    assert s.names == ["Seoul", "South Korea", "Paris", "France", "Rome"]
    assert s.relations == ["http://dbpedia.org/ontology/country"]
    np.testing.assert_array_equal(s.triples, [[0, 0, 1], [2, 0, 3]])
    assert task.meta["load_report"]["skipped"]["DB15K triples with a literal object"] == 1
    assert t.ids == ["/m/0a", "/m/0b", "/m/0c", "/m/0e", "/m/0d", "/m/0f", "/m/0g"]
    assert t.relations == ["http://rdf.freebase.com/ns/location.location.contains",
                           "http://rdf.freebase.com/ns/film.film.genre"]
    np.testing.assert_array_equal(t.triples, [[0, 0, 1], [1, 1, 2], [2, 0, 3]])
    assert t.names[:3] == ["Seoul", "", "Paris"]
    assert sorted(map(tuple, task.test.tolist())) == [(0, 0), (2, 2), (4, 4)]
    assert s.attributes == ["http://dbpedia.org/ontology/founded"]
    np.testing.assert_array_equal(s.attr_numeric, [-753.0])
    assert t.attributes[1] == "http://rdf.freebase.com/ns/people.person.date_of_birth"
    np.testing.assert_array_equal(t.attr_triples, [[0, 0], [5, 1]])
    assert s.meta["image_index_count"] == 1 and t.meta["image_index_count"] == 2 and s.image_mask is None
    assert task.meta["substitutions"] == []
    assert task.provenance["loader"] == "mmkg" and task.provenance["split"]["kind"] == "seeded"


def test_raw_missing_entity_triples_use_fb15k237(tmp_path):
    mm = write_raw(tmp_path, fb_triples=False, db_triples=False)
    task = load_raw(mm, pair="DB15K")
    assert len(task.source.triples) == 0
    assert len(task.target.triples) == 5 and task.target.num_relations == 3
    notes = " ".join(task.meta["notes"])
    assert "DB15K relation triples are missing" in notes
    assert "FB15k-237 triples (5 of them, 3 relations) stand in" in notes
    assert task.meta["substitutions"][0]["missing"].endswith("FB15K_EntityTriples.txt")


def test_raw_yago_pair_expands_bare_names_and_swaps(tmp_path):
    mm = write_raw(tmp_path)
    task = load_raw(mm, pair="yago15k", seed_ratio=0.0)
    s = task.source
    assert s.ids == [f"{YAGO}Seoul", f"{YAGO}Cafe"]  # <Seoul> in the numeric file is the same entity
    np.testing.assert_array_equal(s.attr_triples, [[0, 0]])
    assert len(s.triples) == 0 and any("YAGO15K relation triples are missing" in n for n in task.meta["notes"])
    swapped = load_raw(mm, pair="YAGO15K", swap=True, seed_ratio=0.0)
    assert swapped.name == "FB15K-YAGO15K" and swapped.source.name == "fb15k"
    np.testing.assert_array_equal(swapped.test, task.test[:, ::-1])


def test_raw_bad_options_and_lines(tmp_path):
    mm = write_raw(tmp_path)
    with pytest.raises(MmeaInputError, match="valid choices: DB15K, YAGO15K"):
        load_raw(mm, pair="WD15K")
    with pytest.raises(MmeaInputError, match="no train/test split"):
        load_raw(mm, use_dataset_split=True)
    _write(mm / "DB15K" / "DB15K_SameAsLink.txt", [f"/m/0a <SameAs> <{DBR}Seoul> .", f"/m/0c <{DBR}Paris> ."])
    with pytest.raises(DataFormatError, match="<head> <relation> <tail>") as e:
        load_raw(mm, pair="DB15K")
    assert e.value.line_no == 2
    _write(mm / "DB15K" / "DB15K_SameAsLink.txt", [f"/m/0a <seeAlso> <{DBR}Seoul> ."])
    with pytest.raises(DataFormatError, match="expected a SameAs link"):
        load_raw(mm, pair="DB15K")
    _write(mm / "DB15K" / "DB15K_SameAsLink.txt", [f"/m/0a <SameAs> <{DBR}Seoul> .", f"/m/0c <SameAs> <{DBR}Seoul> ."])
    with pytest.raises(DataFormatError, match="conflicting links"):
        load_raw(mm, pair="DB15K", extra={"one_to_many_links": "error"})
    _write(mm / "FB15K" / "FB15K_NumericalTriples.txt", ["/m/0a\t<x>"])
    with pytest.raises(DataFormatError, match="expected 3") as e:
        load_raw(mm, pair="DB15K")
    assert e.value.line_no == 1


# ---------------------------------------------------------------------------
# real benchmark copies
# ---------------------------------------------------------------------------

def _timed(loader, folder, **opts):
    t0 = time.perf_counter()
    task = loader.load(folder, LoadOptions(**opts))
    elapsed = time.perf_counter() - t0
    print(f"{loader.registry_name} {folder.name}: loaded in {elapsed:.2f} s")
    return task, elapsed


@pytest.mark.data
@pytest.mark.parametrize("pair,n1,t1,n_links,n_sup", [
    ("DB15K-FB15K", 12842, 99028, 12846, 2569),
    ("YAGO15K-FB15K", 15404, 122886, 11199, 2239),
])
def test_real_converted(data_dir, pair, n1, t1, n_links, n_sup):
    folder = data_dir / "DH-MEA_converted" / pair
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    assert MmkgConvertedLoader.detect(folder) and not MmkgLoader.detect(folder)
    task, elapsed = _timed(MmkgConvertedLoader(), folder)
    assert task.source.num_entities == n1 and len(task.source.triples) == t1
    assert task.target.num_entities == 14951
    assert len(task.all_links) == n_links
    assert len(task.test) == n_links - round(0.2 * n_links)
    assert all(task.target.names) and all(task.source.names)
    # FB15k-237 ∪ FB15K valid ∪ FB15K test stands in (the default, data.fb15k_triples = "union")
    assert task.target.num_relations == 1056 and len(task.target.triples) == 381_186
    assert any("FB15k-237 ∪ FB15K valid ∪ FB15K test triples" in n for n in task.meta["notes"])
    assert len(task.target.attr_triples) == 29394  # from attr, not doubled by FB15K_NumericalTriples.txt
    assert np.isfinite(task.source.attr_numeric).mean() > 0.99
    assert task.source.meta["image_index_count"] > 11000 and task.source.image_mask is None
    dataset = MmkgConvertedLoader().load(folder, LoadOptions(use_dataset_split=True))
    assert len(dataset.train) + len(dataset.valid) == n_sup and len(dataset.test) == n_links - n_sup
    assert elapsed < 10


@pytest.mark.data
@pytest.mark.parametrize("pair,n_links", [("DB15K", 12846), ("YAGO15K", 11199)])
def test_real_raw_mmkg(data_dir, pair, n_links):
    folder = data_dir / "MMKG"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    assert MmkgLoader.detect(folder)
    task, elapsed = _timed(MmkgLoader(), folder, pair=pair)
    assert len(task.all_links) == n_links
    assert task.source.num_entities >= len(np.unique(task.all_links[:, 0]))
    assert len(task.target.attr_triples) == 29395
    assert elapsed < 10


# ---------------------------------------------------------------------------
# FB15K's own valid / test triples (OpenKE id form) added to FB15k-237
# ---------------------------------------------------------------------------

# entity2id / relation2id: name<TAB>id; valid2id / test2id: head TAIL relation (ids); first line = count
OPENKE = {
    "entity2id.txt": ["4", "/m/0a\t0", "/m/0b\t1", "/m/0c\t2", "/m/0d\t3"],
    "relation2id.txt": ["3", "/location/location/contains\t0", "/film/film/genre\t1", "/award/award/winner\t2"],
    "valid2id.txt": ["2", "2 3 0", "3 1 2"],  # /m/0c contains /m/0d (already in FB15k-237); /m/0d winner /m/0b (new)
    "test2id.txt": ["2", "1 0 2", "3 1 2"],  # /m/0b winner /m/0a (new); a repeat of the valid line (once)
}


def write_openke(root: Path, **override) -> Path:
    folder = root / "MMKG" / "FB15K" / "openke"
    for name, lines in dict(OPENKE, **override).items():
        _write(folder / name, lines)
    return folder


def test_fb15k_union_adds_valid_and_test_triples_once(tmp_path):
    folder = write_converted(tmp_path)
    write_openke(tmp_path)
    task = load_conv(folder)
    t = task.target
    # FB15k-237's 4 kept triples, then the 2 new FB15K ones (head tail relation decoded), each once
    assert t.relations == ["/location/location/contains", "/film/film/genre", "/people/person/nationality",
                           "/award/award/winner"]
    np.testing.assert_array_equal(t.triples, [[0, 0, 1], [1, 1, 2], [2, 0, 3], [3, 2, 0], [3, 3, 1], [1, 3, 0]])
    rep = task.meta["load_report"]["read"]
    assert rep["FB15K valid2id.txt triples not in FB15k-237 (added)"] == 1
    assert rep["FB15K test2id.txt triples not in FB15k-237 (added)"] == 1
    assert any("FB15k-237 ∪ FB15K valid ∪ FB15K test triples (KG triples, not alignment links; 6 of them" in n
               for n in task.meta["notes"])
    assert any(str(tmp_path / "MMKG" / "FB15K" / "openke" / "test2id.txt") in f
               for f in task.provenance["substitutions"][0]["used"])


def test_fb15k_union_is_not_alignment_data(tmp_path):
    """The FB15K valid/test files are KG triples: they change the FB15K graph only, never the links or their split."""
    folder = write_converted(tmp_path)
    old = load_conv(folder, extra={"fb15k_triples": "fb15k237"})
    write_openke(tmp_path)
    new = load_conv(folder)
    for part in ("train", "valid", "test"):
        np.testing.assert_array_equal(getattr(old, part), getattr(new, part))
    np.testing.assert_array_equal(old.source.triples, new.source.triples)
    assert new.target.num_entities == old.target.num_entities  # no new entity on either side
    assert new.target.triples.max() < new.target.num_entities
    assert len(new.target.triples) == len(old.target.triples) + 2


def test_fb15k_triples_fb15k237_keeps_the_old_behaviour(tmp_path):
    folder = write_converted(tmp_path)
    write_openke(tmp_path)
    task = load_conv(folder, extra={"fb15k_triples": "fb15k237"})
    assert len(task.target.triples) == 4 and task.target.num_relations == 3
    assert any("data.fb15k_triples = fb15k237" in n for n in task.meta["notes"])
    with pytest.raises(MmeaInputError, match="fb15k_triples must be one of union, fb15k237"):
        load_conv(folder, extra={"fb15k_triples": "fb15k"})


def test_fb15k_union_without_openke_folder_warns(tmp_path):
    task = load_conv(write_converted(tmp_path))  # no MMKG/FB15K/openke here
    assert len(task.target.triples) == 4
    assert any("FB15K's own valid/test triples" in n and "not found" in n for n in task.meta["notes"])


def test_fb15k_union_raw_layout(tmp_path):
    write_companions(tmp_path)
    write_openke(tmp_path)
    root = tmp_path / "MMKG"
    _write(root / "DB15K" / "DB15K_SameAsLink.txt", [f"/m/0a <SameAs> <{DBR}Seoul> .", f"/m/0c <SameAs> <{DBR}Paris> ."])
    task = MmkgLoader().load(root, LoadOptions(pair="DB15K", seed_ratio=0.5))
    assert len(task.target.triples) == 7  # FB15k-237's 5 (the raw layout keeps /m/0zz) + 2 from FB15K valid/test
    assert "/award/award/winner" in task.target.relations


@pytest.mark.parametrize("name,lines,line_no,what", [
    ("valid2id.txt", ["3", "2 3 0", "3 1 2"], 1, "the count says 3 lines, the file has 2"),
    ("valid2id.txt", ["2", "2 3 0", "3 1 x"], 3, "three integer ids"),
    ("test2id.txt", ["2", "1 0 2", "3 9 2"], 3, "an id outside entity2id"),
    ("entity2id.txt", ["2", "/m/0a\t0", "/m/0b\t0"], 3, "repeated"),
    ("relation2id.txt", ["many", "/x\t0"], 1, "number of lines"),
])
def test_openke_bad_input_names_file_and_line(tmp_path, name, lines, line_no, what):
    folder = write_converted(tmp_path)
    write_openke(tmp_path, **{name: lines})
    with pytest.raises(DataFormatError, match=what) as e:
        load_conv(folder)
    assert Path(e.value.path).name == name and e.value.line_no == line_no


@pytest.mark.data
def test_real_fb15k_union_counts(data_dir):
    folder = data_dir / "DH-MEA_converted" / "DB15K-FB15K"
    if not (data_dir / "MMKG" / "FB15K" / "openke").is_dir() or not folder.is_dir():
        pytest.skip("MMKG/FB15K/openke not found")
    old = MmkgConvertedLoader().load(folder, LoadOptions(extra={"fb15k_triples": "fb15k237"}))
    new = MmkgConvertedLoader().load(folder, LoadOptions())
    assert (len(old.target.triples), old.target.num_relations) == (310_116, 237)
    # 1,056 of FB15K's 1,345 relations occur in FB15k-237 ∪ valid ∪ test (the 289 others only in FB15K train)
    assert (len(new.target.triples), new.target.num_relations) == (381_186, 1056)
    for part in ("train", "valid", "test"):
        np.testing.assert_array_equal(getattr(old, part), getattr(new, part))
