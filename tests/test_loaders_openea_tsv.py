"""OpenEA and plain-TSV loaders on tiny written fixtures: layout, splits and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmea.data.loaders import LOADERS, LoadOptions, detect_loader
from mmea.data.loaders.openea import OpenEALoader
from mmea.data.loaders.tsv import TsvLoader, load_tsv_kg, load_tsv_pair
from mmea.errors import DataFormatError, MmeaInputError

DB = "http://dbpedia.org/resource/"
FR = "http://fr.dbpedia.org/resource/"


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def lines(rows) -> str:
    return "".join("\t".join(map(str, r)) + "\n" for r in rows)


def pairs(a: np.ndarray) -> list[tuple[int, int]]:
    return sorted(map(tuple, np.asarray(a).tolist()))


# ===========================================================================
# OpenEA
# ===========================================================================

def make_openea(root: Path, folds=True) -> Path:
    """EN_FR_15K_V1 with 6 linked entities per side (+ one attribute-only entity, one link-only)."""
    d = root / "EN_FR_15K_V1"
    write(d / "rel_triples_1", lines([(DB + "A", DB + "p", DB + "B"), (DB + "B", DB + "q", DB + "C"),
                                      (DB + "C", DB + "p", DB + "D"), (DB + "D", DB + "q", DB + "E")]))
    write(d / "rel_triples_2", lines([(FR + "a", FR + "p", FR + "b"), (FR + "b", FR + "p", FR + "c"),
                                      (FR + "d", FR + "q", FR + "e")]))
    write(d / "attr_triples_1", lines([(DB + "A", DB + "pop", '"12"^^<xsd:int>'), (DB + "X", DB + "born", "1982-05-03"),
                                       (DB + "A", DB + "motto", "Liberté\tégalité")]))
    write(d / "attr_triples_2", lines([(FR + "a", FR + "pop", "12")]))
    links = [(DB + x, FR + x.lower()) for x in "ABCDE"] + [(DB + "F", FR + "f")]
    write(d / "ent_links", lines(links))
    if folds:
        for k in (1, 2):
            f = d / "721_5fold" / str(k)
            write(f / "train_links", lines(links[:2]))
            write(f / "valid_links", lines(links[2:3]))
            write(f / "test_links", lines(links[3:]))
    return d


@pytest.fixture
def openea(tmp_path) -> Path:
    return make_openea(tmp_path)


def load_openea(path, **kw):
    return LOADERS.make("openea").load(path, LoadOptions(**kw))


def test_openea_registered_and_detected(openea, tmp_path):
    assert LOADERS.get("openea") is OpenEALoader
    assert OpenEALoader.detect(openea) and detect_loader(openea) == "openea"
    assert not OpenEALoader.detect(tmp_path)


def test_openea_entities_relations_attributes(openea):
    task = load_openea(openea)
    s, t = task.source, task.target
    assert (s.name, t.name) == ("en", "fr")
    # order: rel_triples, then attr_triples (X), then ent_links (F)
    assert s.ids == [DB + x for x in "ABCDEXF"] and s.uris == s.ids
    assert t.ids == [FR + x for x in "abcdef"]
    assert s.names[0] == "A" and s.relations == [DB + "p", DB + "q"]
    np.testing.assert_array_equal(s.triples, [[0, 0, 1], [1, 1, 2], [2, 0, 3], [3, 1, 4]])
    assert s.attributes == [DB + "pop", DB + "born", DB + "motto"]
    assert list(s.attr_values) == ['"12"^^<xsd:int>', "1982-05-03", "Liberté\tégalité"]
    assert s.attr_numeric[0] == 12.0 and abs(s.attr_numeric[1] - (1982 + 122 / 365)) < 1e-9
    assert np.isnan(s.attr_numeric[2])
    rep = task.meta["load_report"]
    assert rep["read"]["kg1 entities"] == 7 and rep["read"]["links"] == 6


def test_openea_fold_split_is_the_default(openea):
    task = load_openea(openea, fold=2)
    assert task.split_sizes() == {"train": 2, "valid": 1, "test": 3}
    assert pairs(task.train) == [(0, 0), (1, 1)] and pairs(task.valid) == [(2, 2)]
    split = task.provenance["split"]
    assert split["kind"] == "dataset" and split["fold"] == 2 and split["test"].endswith("2/test_links")
    with pytest.raises(MmeaInputError, match="no fold 4; folds present: 1, 2"):
        load_openea(openea, fold=4)


def test_openea_seeded_split_with_a_seed_ratio(openea):
    task = load_openea(openea, seed_ratio=0.5, valid_ratio=0.0)
    assert task.split_sizes() == {"train": 3, "valid": 0, "test": 3}
    assert task.provenance["split"]["kind"] == "seeded"


def test_openea_without_folds(tmp_path):
    d = make_openea(tmp_path, folds=False)
    task = load_openea(d)
    assert task.provenance["split"]["kind"] == "seeded" and len(task.all_links) == 6
    assert any("721_5fold" in n for n in task.meta["notes"])
    with pytest.raises(MmeaInputError, match="721_5fold"):
        load_openea(d, use_dataset_split=True)


def test_openea_swap(openea):
    task = load_openea(openea, swap=True)
    assert task.source.name == "fr" and pairs(task.train) == [(0, 0), (1, 1)]
    assert task.provenance["source"]["rel_triples"].endswith("rel_triples_2")


def test_openea_malformed_line(openea):
    write(openea / "rel_triples_2", f"{FR}a\t{FR}p\t{FR}b\n{FR}b\t{FR}p\n")
    with pytest.raises(DataFormatError, match="expected 3") as e:
        load_openea(openea)
    assert e.value.path.endswith("rel_triples_2") and e.value.line_no == 2 and FR + "b" in str(e.value)


def test_openea_unknown_entity_in_fold_links(openea):
    write(openea / "721_5fold" / "1" / "test_links", f"{DB}D\t{FR}d\n{DB}Nobody\t{FR}e\n")
    with pytest.raises(DataFormatError, match="Nobody") as e:
        load_openea(openea)
    assert e.value.line_no == 2


def test_openea_duplicate_and_conflicting_links(openea):
    text = (openea / "ent_links").read_text()
    write(openea / "ent_links", text + f"{DB}A\t{FR}a\n")
    rep = load_openea(openea, seed_ratio=0.3).meta["load_report"]
    assert rep["skipped"]["duplicate links"] == 1 and sum("duplicate" in w for w in rep["warnings"]) == 1
    write(openea / "ent_links", text + f"{DB}A\t{FR}b\n")
    with pytest.raises(DataFormatError, match="conflicting") as e:
        load_openea(openea, seed_ratio=0.3)
    assert e.value.line_no == 7


def test_openea_overlapping_fold_files(openea):
    write(openea / "721_5fold" / "1" / "test_links", f"{DB}A\t{FR}a\n{DB}D\t{FR}d\n")
    with pytest.raises(MmeaInputError, match="both in train and in test"):
        load_openea(openea)


def test_openea_non_utf8(openea):
    write(openea / "attr_triples_1", f"{DB}A\t{DB}pop\t12\n".encode() + b"x\ty\t\xe9t\xe9\n")
    with pytest.raises(DataFormatError, match="not valid UTF-8") as e:
        load_openea(openea)
    assert e.value.line_no == 2


# ===========================================================================
# plain TSV
# ===========================================================================

def make_kg(d: Path, names: list[str], *, prefix: str, images=True) -> Path:
    """A TSV KG over entities prefix+name, a chain of triples, names, attributes, images."""
    ents = [f"{prefix}{n}" for n in names]
    write(d / "triples.tsv", "# head\trelation\ttail\n" + lines(
        (a, "next" if i % 2 == 0 else "near", b) for i, (a, b) in enumerate(zip(ents, ents[1:]))))
    write(d / "names.tsv", lines((e, n.title()) for e, n in zip(ents, names)))
    write(d / "attributes.tsv", lines([(ents[0], "population", "2,100,000"), (ents[1], "founded", "1850"),
                                       (ents[0], "motto", "fluctuat nec mergitur")]))
    write(d / "descriptions.tsv", lines([(ents[1], "a city on a river")]))
    if images:
        write(d / "img" / "0.jpg", b"\xff\xd8fake")
        write(d / "images.tsv", lines([(ents[0], "img/0.jpg"), (ents[1], "img/missing.jpg")]))
    return d


@pytest.fixture
def tsv_pair(tmp_path) -> Path:
    p = tmp_path / "mypair"
    cities = ["paris", "lyon", "nice", "lille", "nantes", "brest"]
    make_kg(p / "kg1", cities, prefix="a:")
    make_kg(p / "kg2", cities, prefix="b:", images=False)
    write(p / "links.tsv", "# kg1\tkg2\n" + lines((f"a:{c}", f"b:{c}") for c in cities))
    return p


def load_tsv(path, **kw):
    return LOADERS.make("tsv").load(path, LoadOptions(**kw))


def test_tsv_registered_and_detected(tsv_pair, tmp_path):
    assert LOADERS.get("tsv") is TsvLoader
    assert TsvLoader.detect(tsv_pair) and detect_loader(tsv_pair) == "tsv"
    assert not TsvLoader.detect(tsv_pair / "kg1") and not TsvLoader.detect(tmp_path)


def test_tsv_kg_contents(tsv_pair):
    task = load_tsv(tsv_pair)
    s, t = task.source, task.target
    assert s.ids == ["a:paris", "a:lyon", "a:nice", "a:lille", "a:nantes", "a:brest"]
    assert s.names[:2] == ["Paris", "Lyon"] and s.relations == ["next", "near"]
    assert len(s.triples) == 5 and s.attributes == ["population", "founded", "motto"]
    assert s.attr_numeric[0] == 2100000.0 and s.attr_numeric[1] == 1850.0 and np.isnan(s.attr_numeric[2])
    assert s.descriptions[1] == "a city on a river" and s.descriptions[0] == ""
    assert s.image_paths[0] == str(tsv_pair / "kg1" / "img" / "0.jpg") and s.image_paths[1] == ""
    assert s.image_mask.tolist() == [True, False, False, False, False, False]
    assert t.image_paths is None and t.image_mask is None
    rep = task.meta["load_report"]
    assert rep["skipped"]["kg1 missing image files"] == 1
    assert any("img/missing.jpg (line 2)" in w for w in rep["warnings"])
    assert rep["read"]["kg1 triples"] == 5 and rep["read"]["links"] == 6


def test_tsv_default_split_is_seeded(tsv_pair):
    task = load_tsv(tsv_pair, seed_ratio=0.5, valid_ratio=0.34, seed=1)
    assert task.split_sizes() == {"train": 2, "valid": 1, "test": 3}
    assert task.provenance["split"]["kind"] == "seeded" and task.provenance["links"].endswith("links.tsv")
    assert pairs(task.all_links) == [(i, i) for i in range(6)]


def test_tsv_split_files(tsv_pair):
    write(tsv_pair / "train_links.tsv", "a:paris\tb:paris\na:lyon\tb:lyon\n")
    write(tsv_pair / "test_links.tsv", "a:brest\tb:brest\n")
    task = load_tsv(tsv_pair, use_dataset_split=True, valid_ratio=0.5)
    assert task.split_sizes() == {"train": 1, "valid": 1, "test": 1}
    assert task.provenance["split"]["kind"] == "dataset"
    seeded = load_tsv(tsv_pair)  # links.tsv wins by default; the unused files are noted
    assert seeded.provenance["split"]["kind"] == "seeded"
    assert any("train_links.tsv, test_links.tsv not used" in n for n in seeded.meta["notes"])
    # test file absent -> test = links.tsv minus train and valid
    (tsv_pair / "test_links.tsv").unlink()
    task = load_tsv(tsv_pair, use_dataset_split=True, valid_ratio=0.0)
    assert len(task.train) == 2 and len(task.test) == 4
    # without links.tsv the split files are used by default
    (tsv_pair / "links.tsv").unlink()
    write(tsv_pair / "valid_links.tsv", "a:nice\tb:nice\n")
    task = load_tsv(tsv_pair)
    assert task.split_sizes() == {"train": 2, "valid": 1, "test": 0}


def test_tsv_no_links_means_no_evaluation(tsv_pair):
    (tsv_pair / "links.tsv").unlink()
    task = load_tsv(tsv_pair)
    assert task.split_sizes() == {"train": 0, "valid": 0, "test": 0}
    assert "no gold links: evaluation will be skipped" in task.meta["notes"]
    with pytest.raises(MmeaInputError, match="train_links.tsv"):
        load_tsv(tsv_pair, use_dataset_split=True)


def test_tsv_swap(tsv_pair):
    a, b = load_tsv(tsv_pair), load_tsv(tsv_pair, swap=True)
    assert b.source.name == "kg2" and b.source.ids[0] == "b:paris"
    np.testing.assert_array_equal(b.test, a.test[:, ::-1])


def test_entities_file_fixes_order_and_adds_isolated(tmp_path):
    d = tmp_path / "kg"
    write(d / "entities.tsv", "# entity\turi\nz\thttp://x/Zed\ny\nx\nlonely\thttp://x/Lonely_One\n")
    write(d / "triples.tsv", "x\tr\ty\ny\tr\tz\n")
    kg = load_tsv_kg(d, "mine")
    assert kg.name == "mine" and kg.ids == ["z", "y", "x", "lonely"]
    assert kg.uris == ["http://x/Zed", "y", "x", "http://x/Lonely_One"]
    assert kg.names == ["Zed", "y", "x", "Lonely One"]  # local names when there is no names.tsv
    np.testing.assert_array_equal(kg.triples, [[2, 0, 1], [1, 0, 0]])
    assert kg.meta["load_report"]["read"]["entities"] == 4
    write(d / "names.tsv", "x\tEx\nw\tDouble-u\n")
    with pytest.raises(DataFormatError, match="'w' is not listed in") as e:
        load_tsv_kg(d, "mine")
    assert e.value.path.endswith("names.tsv") and e.value.line_no == 2


def test_entity_order_without_entities_file(tmp_path):
    d = tmp_path / "kg"
    write(d / "triples.tsv", "b\tr\tc\n")
    write(d / "names.tsv", "a\tAy\nb\tBee\n")
    write(d / "attributes.tsv", "d\tage\t3\n")
    write(d / "images.tsv", f"e\t{tmp_path / 'nowhere.png'}\n")
    kg = load_tsv_kg(d)
    assert kg.ids == ["b", "c", "a", "d", "e"] and kg.name == "kg"
    assert kg.names == ["Bee", "", "Ay", "", ""]  # names.tsv given: unnamed entities stay unnamed
    assert kg.meta["load_report"]["skipped"]["entities without a name in names.tsv"] == 3


def test_load_tsv_pair_src_tgt(tsv_pair, tmp_path):
    src, tgt = tsv_pair / "kg1", tsv_pair / "kg2"
    task = load_tsv_pair(src, tgt)  # no src/links.tsv -> no gold links
    assert len(task.all_links) == 0 and task.source.name == "kg1"
    write(src / "links.tsv", "a:paris\tb:paris\na:lyon\tb:lyon\n")
    assert len(load_tsv_pair(src, tgt).all_links) == 2
    other = write(tmp_path / "known.tsv", "a:nice\tb:nice\n")
    task = load_tsv_pair(src, tgt, links_path=other, options=LoadOptions(seed_ratio=0.0))
    assert pairs(task.test) == [(2, 2)] and task.provenance["links"] == str(other)


def test_links_may_name_entities_by_uri(tmp_path):
    p = tmp_path / "pair"
    write(p / "kg1" / "entities.tsv", "e1\thttp://a/One\n")
    write(p / "kg1" / "triples.tsv", "e1\tr\te1\n")
    write(p / "kg2" / "triples.tsv", "f1\tr\tf1\n")
    write(p / "links.tsv", "http://a/One\tf1\n")
    assert pairs(load_tsv(p).all_links) == [(0, 0)]


# -- bad input ------------------------------------------------------------------

def test_tsv_malformed_line(tsv_pair):
    write(tsv_pair / "kg2" / "triples.tsv", "# comment\nb:paris\tnext\tb:lyon\nb:lyon next b:nice\n")
    with pytest.raises(DataFormatError, match="expected 3 tab-separated fields") as e:
        load_tsv(tsv_pair)
    assert e.value.path.endswith("kg2/triples.tsv") and e.value.line_no == 3 and "b:lyon next" in str(e.value)


def test_tsv_empty_field(tsv_pair):
    write(tsv_pair / "kg2" / "triples.tsv", "b:paris\t\tb:lyon\n")
    with pytest.raises(DataFormatError, match="empty relation field"):
        load_tsv(tsv_pair)


def test_tsv_unknown_entity_in_links(tsv_pair):
    write(tsv_pair / "links.tsv", "a:paris\tb:paris\na:paris2\tb:lyon\n")
    with pytest.raises(DataFormatError, match="'a:paris2' is not an entity of kg1") as e:
        load_tsv(tsv_pair)
    assert e.value.line_no == 2
    write(tsv_pair / "links.tsv", "b:paris\ta:paris\n")
    with pytest.raises(DataFormatError) as e:
        load_tsv(tsv_pair)
    assert "swapped" in e.value.hint


def test_tsv_duplicate_and_conflicting_links(tsv_pair):
    write(tsv_pair / "links.tsv", "a:paris\tb:paris\na:lyon\tb:lyon\na:paris\tb:paris\n")
    rep = load_tsv(tsv_pair).meta["load_report"]
    assert rep["skipped"]["duplicate links"] == 1 and sum("duplicate link" in w for w in rep["warnings"]) == 1
    write(tsv_pair / "links.tsv", "a:paris\tb:paris\na:lyon\tb:paris\n")
    with pytest.raises(DataFormatError, match="conflicting.*target side") as e:
        load_tsv(tsv_pair)
    assert e.value.line_no == 2


def test_tsv_overlapping_split_files(tsv_pair):
    write(tsv_pair / "train_links.tsv", "a:paris\tb:paris\n")
    write(tsv_pair / "test_links.tsv", "a:paris\tb:paris\n")
    with pytest.raises(MmeaInputError, match="both in train and in test"):
        load_tsv(tsv_pair, use_dataset_split=True)


def test_tsv_non_utf8(tsv_pair):
    write(tsv_pair / "kg1" / "names.tsv", "a:paris\tParis\n".encode() + b"a:lyon\tLy\xf6n\n")
    with pytest.raises(DataFormatError, match="not valid UTF-8") as e:
        load_tsv(tsv_pair)
    assert e.value.line_no == 2 and e.value.path.endswith("names.tsv")


def test_tsv_missing_triples_file(tmp_path):
    write(tmp_path / "kg" / "names.tsv", "a\tA\n")
    with pytest.raises(MmeaInputError, match="no triples.tsv"):
        load_tsv_kg(tmp_path / "kg")
    with pytest.raises(MmeaInputError, match="not a TSV pair folder"):
        load_tsv(tmp_path)


def test_tsv_repeated_names_and_duplicate_triples_are_counted(tsv_pair):
    kg = tsv_pair / "kg2"
    write(kg / "names.tsv", (kg / "names.tsv").read_text() + "b:paris\tParis again\n")
    write(kg / "triples.tsv", (kg / "triples.tsv").read_text() + "b:paris\tnext\tb:lyon\n")
    rep = load_tsv(tsv_pair).meta["load_report"]
    assert rep["skipped"]["kg2 repeated entities in names.tsv"] == 1
    assert rep["skipped"]["kg2 duplicate triples"] == 1


# -- issue 19: BOM, directories, empty files, control characters, messages -----------

BOM = "\ufeff"


def test_tsv_leading_bom_is_dropped_in_every_file(tsv_pair):
    """A BOM at the start of kg2/triples.tsv made an extra entity '\\ufeffb:paris'; in links.tsv it was an error."""
    before = load_tsv(tsv_pair)
    for f in ("kg2/triples.tsv", "kg2/names.tsv", "links.tsv", "kg1/attributes.tsv"):
        write(tsv_pair / f, BOM + (tsv_pair / f).read_text(encoding="utf-8"))
    after = load_tsv(tsv_pair)
    assert after.source.ids == before.source.ids and after.target.ids == before.target.ids
    assert after.target.names == before.target.names
    assert pairs(after.all_links) == pairs(before.all_links)
    kg = load_tsv_kg(tsv_pair / "kg2")
    assert not any(e.startswith(BOM) for e in kg.ids)


def test_bom_inside_a_line_is_an_error(tsv_pair):
    write(tsv_pair / "kg2" / "triples.tsv", "b:paris\tnext\tb:lyon\n" + BOM + "b:lyon\tnear\tb:nice\n")
    with pytest.raises(DataFormatError, match="byte-order mark") as e:
        load_tsv(tsv_pair)
    assert e.value.path.endswith("kg2/triples.tsv") and e.value.line_no == 2


@pytest.mark.parametrize("where", ["links.tsv", "kg1/names.tsv", "kg2/attributes.tsv", "train_links.tsv",
                                   "kg1/triples.tsv"])
def test_tsv_directory_in_place_of_a_file_is_an_error(tsv_pair, where):
    """``links.tsv/`` was read as "no links" (exit 0, evaluation skipped), ``names.tsv/`` as "no names"."""
    target = tsv_pair / where
    if target.exists():
        target.unlink()
    target.mkdir()
    with pytest.raises(DataFormatError, match="is a directory, expected a file") as e:
        LOADERS.make(detect_loader(tsv_pair)).load(tsv_pair, LoadOptions())
    assert e.value.path == str(target)


def test_load_tsv_pair_links_path_that_is_a_directory(tsv_pair):
    (tsv_pair / "elsewhere").mkdir()
    with pytest.raises(DataFormatError, match="is a directory"):
        load_tsv_pair(tsv_pair / "kg1", tsv_pair / "kg2", links_path=tsv_pair / "elsewhere")


def test_tsv_empty_triples_file_is_an_error(tsv_pair):
    write(tsv_pair / "kg2" / "triples.tsv", "")
    with pytest.raises(DataFormatError, match="empty file") as e:
        load_tsv(tsv_pair)
    assert e.value.path.endswith("kg2/triples.tsv") and "comment line" in e.value.hint
    write(tsv_pair / "kg2" / "triples.tsv", "\n  \n")
    with pytest.raises(DataFormatError, match="empty file"):
        load_tsv(tsv_pair)


def test_tsv_comment_only_triples_is_a_counted_warning_and_note(tsv_pair):
    write(tsv_pair / "kg2" / "triples.tsv", "# head\trelation\ttail\n")
    task = load_tsv(tsv_pair)
    rep = task.meta["load_report"]
    assert len(task.target.triples) == 0 and rep["skipped"]["kg2 KGs without relation triples"] == 1
    assert any("no relation triples" in w for w in rep["warnings"])
    assert any(n.startswith("kg2: no relation triples") for n in task.meta["notes"])


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x1b", "\x7f", "\x85", "\r"])
def test_tsv_control_character_in_an_id_is_an_error(tsv_pair, char):
    """A NUL inside an id made a new entity ('b:lyon' and 'b:lyon\\x00' print alike)."""
    write(tsv_pair / "kg2" / "triples.tsv", f"b:paris\tnext\tb:lyon\nb:ly{char}on\tnear\tb:nice\n")
    with pytest.raises(DataFormatError, match="contains a") as e:
        load_tsv(tsv_pair)
    assert e.value.path.endswith("kg2/triples.tsv") and e.value.line_no == 2 and "head field" in str(e.value)
    write(tsv_pair / "kg2" / "triples.tsv", "b:paris\tnext\tb:lyon\n")
    write(tsv_pair / "links.tsv", f"a:paris\tb:pa{char}ris\n")
    with pytest.raises(DataFormatError, match="contains a"):
        load_tsv(tsv_pair)


def test_tsv_control_character_in_a_name_is_kept(tsv_pair):
    write(tsv_pair / "kg2" / "names.tsv", "b:paris\tPa\x07ris\n")
    assert load_tsv(tsv_pair).target.names[0] == "Pa\x07ris"


def test_tsv_conflicting_links_name_the_file_ids(tsv_pair):
    write(tsv_pair / "links.tsv", "a:paris\tb:paris\na:lyon\tb:paris\n")
    with pytest.raises(DataFormatError) as e:
        load_tsv(tsv_pair)
    msg = str(e.value)
    assert "entity 'b:paris' (target side)" in msg and "'a:paris' and 'a:lyon'" in msg and "lines 1 and 2" in msg


def test_tsv_file_without_final_line_break_is_a_counted_warning(tsv_pair):
    """A copy cut inside its last id ('b:brest' -> 'b:bre') cannot be told from a real id: the report says so."""
    text = (tsv_pair / "links.tsv").read_text(encoding="utf-8")
    write(tsv_pair / "links.tsv", text.rstrip("\n"))
    rep = load_tsv(tsv_pair).meta["load_report"]
    assert rep["read"]["files without a final line break"] == 1
    assert any("links.tsv: the last line has no line break" in w for w in rep["warnings"])


def test_openea_directory_control_character_and_empty_file(openea):
    (openea / "attr_triples_2").unlink()
    (openea / "attr_triples_2").mkdir()
    with pytest.raises(DataFormatError, match="is a directory"):
        load_openea(openea)
    (openea / "attr_triples_2").rmdir()
    write(openea / "rel_triples_2", FR + "a\t" + FR + "p\t" + FR + "b\x00\n")
    with pytest.raises(DataFormatError, match="NUL") as e:
        load_openea(openea)
    assert e.value.line_no == 1
    write(openea / "rel_triples_2", "")
    with pytest.raises(DataFormatError, match="empty file"):
        load_openea(openea)


def test_tsv_entities_in_no_triple_and_without_a_name_are_listed(tsv_pair):
    """Without entities.tsv any string is an entity: a typo in names.tsv or triples.tsv makes a new one,
    which the report names (isolated / without a name) instead of passing in silence."""
    kg = tsv_pair / "kg2"
    write(kg / "names.tsv", (kg / "names.tsv").read_text() + "b:pariss\tParis typo\n")
    task = load_tsv(tsv_pair)
    rep = task.meta["load_report"]
    assert rep["read"]["kg2 entities in no triple (isolated)"] == 1
    assert any("'b:pariss' (names.tsv line 7)" in w and "in no triple" in w for w in rep["warnings"])
    assert any("1 isolated entities" in n for n in task.meta["notes"])
    write(kg / "names.tsv", "b:paris\tParis\n")
    rep = load_tsv(tsv_pair).meta["load_report"]
    assert any("5 entities have no name (left empty): 'b:lyon', 'b:nice'" in w for w in rep["warnings"])


# -- issue 18: the vectorised (fast) reader equals the line reader ----------------------------

from mmea.data.loaders import tsv as tsv_module  # noqa: E402


def _messy_kg(d: Path, rng: np.random.Generator, n: int = 3000, *, entities_file: bool = False,
              crlf: bool = False) -> Path:
    """A KG of ``n`` triples whose ids and names hold what a line reader must get right: unicode,
    quotes, TABs inside names, '#' inside ids, comment and blank lines, repeated names and triples."""
    ents = [f"e{i}" for i in range(n // 3)] + ["q#1", 'say "hi"', "São_Paulo", "東京", "x'y"]
    rels = ["r0", "r1", "p\u00e9", "rel with space"]
    nl = "\r\n" if crlf else "\n"
    rows = [(ents[h], rels[r], ents[t]) for h, r, t in zip(rng.integers(0, len(ents), n),
                                                          rng.integers(0, len(rels), n),
                                                          rng.integers(0, len(ents), n))]
    rows += rows[:50]  # exact repeats
    half = len(rows) // 2
    body = [nl.join("\t".join(r) for r in part) for part in (rows[:half], rows[half:])]
    write(d / "triples.tsv", BOM + "# head\trelation\ttail" + nl + body[0] + nl + nl + "# mid" + nl + body[1] + nl)
    names = {e: f'Name "{e}"\twith a tab · ünï' if i % 7 == 0 else f"N {e}" for i, e in enumerate(ents)}
    named = [e for e in ents if rng.random() < 0.8] + ["only_named_1", "only_named_2"]
    lines_ = [f"{e}\t{names.get(e, 'Isolated ' + e)}" for e in named] + [f"{named[0]}\tsecond name"]
    write(d / "names.tsv", nl.join(lines_) + nl)
    if entities_file:
        write(d / "entities.tsv", "".join(f"{e}\thttp://x/{i}\n" for i, e in enumerate(ents + named[-2:][::-1])))
    return d


def _same_kg(a, b) -> None:
    assert a.ids == b.ids and a.uris == b.uris and a.names == b.names and a.relations == b.relations
    np.testing.assert_array_equal(a.triples, b.triples)
    assert a.meta == b.meta  # notes, files and (one KG) the load report


@pytest.mark.parametrize("entities_file,crlf", [(False, False), (True, False), (False, True)])
def test_fast_reader_equals_line_reader(tmp_path, monkeypatch, entities_file, crlf):
    """triples.tsv and names.tsv read in pieces (vectorised) give the same KG as the line reader:
    entity and relation order, names with TABs / quotes / unicode, comments, BOM, CRLF, repeats, isolated."""
    monkeypatch.setattr(tsv_module, "_FAST_PIECE", 4096)  # many pieces, lines cut across them
    d = _messy_kg(tmp_path / "kg", np.random.default_rng(3), entities_file=entities_file, crlf=crlf)
    table = tsv_module._EntityTable()
    if entities_file:
        tsv_module._read_entities_file(d / "entities.tsv", table, tsv_module.LoadReport(), "")
    assert tsv_module._fast_triples(d / "triples.tsv", table) is not None  # the fast path was taken
    assert tsv_module._fast_first_per_entity(d / "names.tsv", table, tsv_module.LoadReport(), "", "name") is not None
    fast, slow = load_tsv_kg(d, "kg"), load_tsv_kg(d, "kg", fast=False)
    _same_kg(fast, slow)
    assert any("\t" in n for n in fast.names) and '"' in fast.names[0] + "".join(fast.names)
    assert fast.meta["load_report"]["skipped"]["repeated entities in names.tsv"] == 1


def test_fast_reader_equals_line_reader_on_a_pair(tmp_path, monkeypatch):
    monkeypatch.setattr(tsv_module, "_FAST_PIECE", 8192)
    rng = np.random.default_rng(5)
    p = tmp_path / "pair"
    _messy_kg(p / "kg1", rng)
    _messy_kg(p / "kg2", rng, crlf=True)
    write(p / "links.tsv", "".join(f"e{i}\te{i}\n" for i in range(0, 900, 3)))
    fast = load_tsv(p, seed=2)
    monkeypatch.setattr(tsv_module, "_fast_triples", lambda *a: None)
    monkeypatch.setattr(tsv_module, "_fast_first_per_entity", lambda *a: None)
    slow = load_tsv(p, seed=2)
    _same_kg(fast.source, slow.source)
    _same_kg(fast.target, slow.target)
    for part in ("train", "valid", "test"):
        np.testing.assert_array_equal(getattr(fast, part), getattr(slow, part))
    assert fast.meta == slow.meta


@pytest.mark.parametrize("bad,match", [("e1\tr0\te\x002", "NUL"), ("e1\tr0", "expected 3 tab-separated fields"),
                                       ("e1\t \tr0", "empty relation field"), ("\ufeffe1\tr0\te2", "byte-order mark")])
def test_fast_reader_leaves_a_bad_line_to_the_line_reader(tmp_path, monkeypatch, bad, match):
    """A bad line deep in a file read in pieces: the same house error (file, line, text) as before."""
    monkeypatch.setattr(tsv_module, "_FAST_PIECE", 1024)
    d = tmp_path / "kg"
    good = [f"e{i}\tr{i % 3}\te{i + 1}" for i in range(2000)]
    write(d / "triples.tsv", "\n".join(good[:1500] + [bad] + good[1500:]) + "\n")
    with pytest.raises(DataFormatError, match=match) as e:
        load_tsv_kg(d)
    assert e.value.path.endswith("triples.tsv") and e.value.line_no == 1501


def test_fast_reader_a_comment_that_is_not_utf8_is_still_an_error(tmp_path):
    d = tmp_path / "kg"
    write(d / "triples.tsv", b"a\tr\tb\n# caf\xe9\nb\tr\tc\n")
    with pytest.raises(DataFormatError, match="not valid UTF-8") as e:
        load_tsv_kg(d)
    assert e.value.line_no == 2


def test_fast_reader_names_entities_missing_from_entities_file(tmp_path):
    d = tmp_path / "kg"
    write(d / "entities.tsv", "a\nb\n")
    write(d / "triples.tsv", "a\tr\tb\nb\tr\tc\n")
    with pytest.raises(DataFormatError, match="'c' is not listed") as e:
        load_tsv_kg(d)
    assert e.value.line_no == 2


def test_python_whitespace_set_is_complete():
    from mmea.data.parsing import PY_WHITESPACE
    assert set(PY_WHITESPACE) == {chr(c) for c in range(0x110000) if chr(c).isspace()}
