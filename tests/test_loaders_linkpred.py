"""The link-prediction loader (FB15k-237 layout): tiny written fixtures, bad input, and the real folder."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from mmea.data import LinkPredictionDataset
from mmea.data.loaders.base import LOADERS
from mmea.data.loaders.linkpred import LinkpredLoader, read_tab_triples
from mmea.errors import DataFormatError

TRAIN = ["/m/a\t/r/x\t/m/b", "/m/b\t/r/y\t/m/c", "/m/a\t/r/x\t/m/c"]
VALID = ["/m/c\t/r/y\t/m/d"]
TEST = ["/m/e\t/r/z\t/m/a", "/m/a\t/r/x\t/m/b"]  # the second one is also in train


def write_folder(root: Path, train=TRAIN, valid=VALID, test=TEST, newline="\n", texts=True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, lines in (("train.txt", train), ("valid.txt", valid), ("test.txt", test)):
        (root / name).write_bytes((newline.join(lines) + newline).encode("utf-8"))
    if texts:
        (root / "entity2text.txt").write_text("/m/a\tAlpha\n/m/b\tBéta\n/m/c\tGamma\n/m/zz\tNot used\n",
                                              encoding="utf-8")
        (root / "entity2textlong.txt").write_text("/m/a\tAlpha is the first letter.\n", encoding="utf-8")
        (root / "relation2text.txt").write_text("/r/x\tex\n/r/y\twhy\n", encoding="utf-8")
    return root


def load(root: Path) -> LinkPredictionDataset:
    return LinkpredLoader().load(root)


def test_registered_and_detect(tmp_path):
    assert LOADERS.get("linkpred") is LinkpredLoader
    assert LinkpredLoader.kind == "linkpred"
    root = write_folder(tmp_path / "lp")
    assert LinkpredLoader.detect(root)
    (root / "valid.txt").unlink()
    assert not LinkpredLoader.detect(root)
    assert not LinkpredLoader.detect(tmp_path / "nothing")


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_loads_in_first_appearance_order(tmp_path, newline):
    ds = load(write_folder(tmp_path / "lp", newline=newline))
    g = ds.graph
    assert g.ids == ["/m/a", "/m/b", "/m/c", "/m/d", "/m/e"]  # train, then valid, then test; head before tail
    assert g.uris == g.ids
    assert g.relations == ["/r/x", "/r/y", "/r/z"]
    np.testing.assert_array_equal(ds.train, [[0, 0, 1], [1, 1, 2], [0, 0, 2]])
    np.testing.assert_array_equal(ds.valid, [[2, 1, 3]])
    np.testing.assert_array_equal(ds.test, [[4, 2, 0], [0, 0, 1]])
    assert g.names == ["Alpha", "Béta", "Gamma", "", ""]
    assert g.descriptions == ["Alpha is the first letter.", "", "", "", ""]
    assert ds.relation_texts == ["ex", "why", ""]
    rep = ds.meta["load_report"]
    assert rep["read"]["entities"] == 5 and rep["read"]["relations"] == 3
    assert rep["read"]["items without entity name"] == 2
    assert rep["read"]["test triples also in train (kept)"] == 1
    assert rep["skipped"]["entity name lines for ids not in the dataset"] == 1
    assert any("2 of 5 have no entity name" in n for n in ds.meta["notes"])
    assert ds.meta["provenance"]["files"]["train"].endswith("train.txt")
    assert ds.summary()["train"] == 3


def test_without_text_files(tmp_path):
    ds = load(write_folder(tmp_path / "lp", texts=False))
    assert ds.graph.names == [""] * 5
    assert ds.graph.descriptions is None and ds.relation_texts is None


def test_malformed_line_names_file_line_and_text(tmp_path):
    root = write_folder(tmp_path / "lp", valid=["/m/c\t/r/y\t/m/d", "/m/c /r/y /m/d"])
    with pytest.raises(DataFormatError) as e:
        load(root)
    assert e.value.line_no == 2 and e.value.path.endswith("valid.txt")
    assert "/m/c /r/y /m/d" in str(e.value) and "3 tab-separated fields" in str(e.value)


def test_empty_field_is_an_error(tmp_path):
    root = write_folder(tmp_path / "lp", train=["/m/a\t/r/x\t/m/b", "/m/a\t\t/m/b"])
    with pytest.raises(DataFormatError, match="empty field") as e:
        load(root)
    assert e.value.line_no == 2


def test_blank_lines_are_counted(tmp_path):
    root = write_folder(tmp_path / "lp", train=["/m/a\t/r/x\t/m/b", "", "/m/b\t/r/y\t/m/c"])
    ds = load(root)
    assert len(ds.train) == 2
    assert ds.meta["load_report"]["skipped"]["blank lines in train.txt"] == 1


def test_non_utf8_is_a_clear_error(tmp_path):
    root = write_folder(tmp_path / "lp")
    (root / "test.txt").write_bytes(b"/m/e\t/r/z\t/m/a\n/m/\xe9\t/r/z\t/m/a\n")
    with pytest.raises(DataFormatError, match="not valid UTF-8") as e:
        load(root)
    assert e.value.line_no == 2 and e.value.path.endswith("test.txt")


def test_missing_split_file(tmp_path):
    root = write_folder(tmp_path / "lp")
    (root / "test.txt").unlink()
    with pytest.raises(DataFormatError, match="file not found"):
        load(root)


def test_read_tab_triples_line_numbers(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("a\tr\tb\n\n c\ts\td\n", encoding="utf-8")
    st = read_tab_triples(p)
    assert st.heads == ["a", " c"] and st.relations == ["r", "s"] and st.tails == ["b", "d"]
    assert st.line_nos.tolist() == [1, 3]


@pytest.mark.data
def test_real_fb15k237(data_dir):
    folder = data_dir / "FB15k-237"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    assert LinkpredLoader.detect(folder)
    t0 = time.perf_counter()
    ds = load(folder)
    elapsed = time.perf_counter() - t0
    print(f"FB15k-237 loaded in {elapsed:.2f} s")
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (272115, 17535, 20466)
    assert ds.graph.num_entities == 14541 and ds.graph.num_relations == 237
    assert ds.graph.ids[0] == "/m/027rn"  # head of the first train line
    assert sum(1 for n in ds.graph.names if n) == 14541
    assert len(ds.relation_texts) == 237 and all(ds.relation_texts)
    for part in (ds.train, ds.valid, ds.test):
        assert part.min() >= 0 and part[:, [0, 2]].max() < 14541 and part[:, 1].max() < 237
    assert elapsed < 3.0


def test_bom_directory_control_character_and_empty_train(tmp_path):
    """The shared input rules (issue 19) hold here too: BOM dropped, a directory or a NUL is an error."""
    root = write_folder(tmp_path / "lp")
    before = load(root)
    (root / "train.txt").write_bytes(b"\xef\xbb\xbf" + (root / "train.txt").read_bytes())
    assert load(root).graph.ids == before.graph.ids
    (root / "train.txt").write_bytes(b"/m/a\t/r/x\t/m/b\n/m/b\x00\t/r/y\t/m/c\n")
    with pytest.raises(DataFormatError, match="NUL") as e:
        load(root)
    assert e.value.line_no == 2
    (root / "train.txt").write_bytes(b"")
    with pytest.raises(DataFormatError, match="empty file"):
        load(root)
    write_folder(root)
    (root / "entity2text.txt").unlink()
    (root / "entity2text.txt").mkdir()
    with pytest.raises(DataFormatError, match="is a directory"):
        load(root)
