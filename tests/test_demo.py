"""The demo generator: determinism, consistency of the files, and that every modality is noisy but related."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from mmea.data import parse_numeric
from mmea.data.demo import (DEMO_VERSION, DemoSpec, demo_folder_name, ensure_demo, generate_demo, spell_name_b,
                            spell_word_b)
from mmea.errors import MmeaInputError

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(num_shared=150, num_unique=20)
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def rows(path: Path) -> list[list[str]]:
    """Tab-split data lines of a TSV file (comments skipped)."""
    text = path.read_text(encoding="utf-8")
    return [ln.split("\t") for ln in text.splitlines() if ln and not ln.startswith("#")]


def tree(folder: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def trigrams(s: str) -> set[str]:
    s = f"  {s.lower()} "
    return {s[i:i + 3] for i in range(len(s) - 2)}


def jaccard(a: str, b: str) -> float:
    x, y = trigrams(a), trigrams(b)
    return len(x & y) / len(x | y)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """The default-size demo (the built-in one)."""
    return ensure_demo(tmp_path_factory.mktemp("demo_root"), seed=0)


@pytest.fixture(scope="module")
def links(demo) -> list[list[str]]:
    return rows(demo / "links.tsv")


def test_same_seed_is_byte_identical_across_processes(tmp_path):
    a = generate_demo(tmp_path / "a", seed=3, **SMALL)
    code = ("import sys; from mmea.data.demo import generate_demo; "
            f"generate_demo(sys.argv[1], seed=3, **{SMALL!r})")
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "b")], check=True, env=env)
    ta, tb = tree(a), tree(tmp_path / "b")
    assert ta.keys() == tb.keys() and any(k.endswith(".png") for k in ta)
    assert [k for k in ta if ta[k] != tb[k]] == []


def test_other_seed_differs(tmp_path):
    a = tree(generate_demo(tmp_path / "a", seed=0, **SMALL))
    b = tree(generate_demo(tmp_path / "b", seed=1, **SMALL))
    for name in ("kg1/names.tsv", "kg2/triples.tsv", "kg1/attributes.tsv", "links.tsv"):
        assert a[name] != b[name], name


def test_manifest_counts_match_files(demo):
    m = json.loads((demo / "manifest.json").read_text())
    assert m["version"] == DEMO_VERSION and m["seed"] == 0 and m["spec"] == asdict(DemoSpec())
    for side in ("kg1", "kg2"):
        c, d = m["counts"][side], demo / side
        assert c["entities"] == len(rows(d / "entities.tsv")) == DemoSpec().num_shared + DemoSpec().num_unique
        assert c["triples"] == len(rows(d / "triples.tsv"))
        assert c["names"] == len(rows(d / "names.tsv"))
        assert c["attribute_values"] == len(rows(d / "attributes.tsv"))
        assert c["images"] == len(rows(d / "images.tsv")) == len(list((d / "images").glob("*.png")))
    assert m["counts"]["links"] == len(rows(demo / "links.tsv")) == DemoSpec().num_shared
    assert str(DemoSpec().num_shared) in (demo / "README.txt").read_text()


def test_every_line_refers_to_existing_entities(demo, links):
    ents = {s: [r[0] for r in rows(demo / s / "entities.tsv")] for s in ("kg1", "kg2")}
    for s, ids in ents.items():
        known = set(ids)
        assert len(known) == len(ids) and ids == sorted(ids)
        uris = [r[1] for r in rows(demo / s / "entities.tsv")]
        assert len(set(uris)) == len(uris)
        for r in rows(demo / s / "triples.tsv"):
            assert len(r) == 3 and r[0] in known and r[2] in known
        for f in ("names.tsv", "attributes.tsv", "images.tsv"):
            assert all(r[0] in known for r in rows(demo / s / f)), f
        assert all((demo / s / r[1]).is_file() for r in rows(demo / s / "images.tsv"))
    left, right = [a for a, _ in links], [b for _, b in links]
    assert set(left) <= set(ents["kg1"]) and set(right) <= set(ents["kg2"])
    assert len(set(left)) == len(set(right)) == len(links)  # one to one


def test_ids_and_uris_leak_nothing(demo, links):
    pos = {s: {r[0]: i for i, r in enumerate(rows(demo / s / "entities.tsv"))} for s in ("kg1", "kg2")}
    p1 = np.array([pos["kg1"][a] for a, _ in links], float)
    p2 = np.array([pos["kg2"][b] for _, b in links], float)
    assert abs(np.corrcoef(p1, p2)[0, 1]) < 0.1
    assert all(a.startswith("kg1:E") and b.startswith("kg2:Q") for a, b in links)
    hosts = {s: {r[1].split("/resource/")[0] for r in rows(demo / s / "entities.tsv")} for s in ("kg1", "kg2")}
    assert len(hosts["kg1"]) == len(hosts["kg2"]) == 1 and hosts["kg1"] != hosts["kg2"]


def test_relations_differ_between_sides_and_graph_is_dense_enough(demo):
    rels = {s: Counter(r[1] for r in rows(demo / s / "triples.tsv")) for s in ("kg1", "kg2")}
    assert not set(rels["kg1"]) & set(rels["kg2"])
    assert all(20 <= len(r) <= 30 for r in rels.values())
    for s in ("kg1", "kg2"):
        per_entity = sum(rels[s].values()) / len(rows(demo / s / "entities.tsv"))
        assert 3.0 <= per_entity <= 6.0  # a degree of about 8-12


def test_names_differ_but_are_related(demo, links):
    n1 = dict(map(tuple, rows(demo / "kg1/names.tsv")))
    n2 = dict(map(tuple, rows(demo / "kg2/names.tsv")))
    pairs = [(n1[a], n2[b]) for a, b in links if a in n1 and b in n2]
    assert 0.85 * len(links) < len(pairs) < len(links)  # some entities have no name
    assert np.mean([x != y for x, y in pairs]) > 0.8
    rng = np.random.default_rng(0)
    others = list(n2.values())
    linked = np.mean([jaccard(x, y) for x, y in pairs])
    random = np.mean([jaccard(x, others[int(rng.integers(len(others)))]) for x, _ in pairs])
    assert linked > random + 0.2 and linked < 0.8
    dup = Counter(n1.values())
    assert sum(c for c in dup.values() if c > 1) > 50  # names alone cannot tell every entity apart


def test_about_15_percent_of_images_missing_on_each_side(demo, links):
    has = {}
    for s in ("kg1", "kg2"):
        n = len(rows(demo / s / "entities.tsv"))
        has[s] = {r[0] for r in rows(demo / s / "images.tsv")}
        assert 0.12 < 1 - len(has[s]) / n < 0.18
    miss1 = {a for a, _ in links if a not in has["kg1"]}
    miss2 = {a for a, b in links if b not in has["kg2"]}
    assert miss1 and miss2 and len(miss1 & miss2) < 0.5 * min(len(miss1), len(miss2))


def test_images_are_small_rgb_and_similar_across_sides(demo, links):
    from PIL import Image

    paths = {s: dict(map(tuple, rows(demo / s / "images.tsv"))) for s in ("kg1", "kg2")}

    def pixels(s, e):
        with Image.open(demo / s / paths[s][e]) as im:
            assert im.mode == "RGB" and im.size == (32, 32)
            x = np.asarray(im.resize((8, 8)), float).ravel()
        x -= x.mean()
        return x / (np.linalg.norm(x) + 1e-9)

    both = [(a, b) for a, b in links if a in paths["kg1"] and b in paths["kg2"]][:300]
    x1 = np.stack([pixels("kg1", a) for a, _ in both])
    x2 = np.stack([pixels("kg2", b) for _, b in both])
    linked = (x1 * x2).sum(1)
    shuffled = (x1 * np.roll(x2, 1, axis=0)).sum(1)
    assert linked.mean() > shuffled.mean() + 0.3  # related ...
    same = [np.array_equal(np.asarray(Image.open(demo / "kg1" / paths["kg1"][a])),
                           np.asarray(Image.open(demo / "kg2" / paths["kg2"][b]))) for a, b in both]
    assert not any(same)  # ... but not copies


def test_attributes_are_numbers_years_or_dates(demo):
    for s in ("kg1", "kg2"):
        values = rows(demo / s / "attributes.tsv")
        assert all(len(r) == 3 and np.isfinite(parse_numeric(r[2])) for r in values)
        assert sum(bool(DATE.match(r[2])) for r in values) > 500
        per_entity = Counter(r[0] for r in values)
        assert 3.0 < np.mean(list(per_entity.values())) < 8.0
    names = {s: {r[1] for r in rows(demo / s / "attributes.tsv")} for s in ("kg1", "kg2")}
    assert not names["kg1"] & names["kg2"] and "elevation" in names["kg1"] and "elevation_ft" in names["kg2"]


def test_second_language_spelling():
    assert spell_word_b("Phantom") == "Fantom"
    assert spell_word_b("Quelton") == "Kveltun"
    assert spell_word_b("Vestia") == "Vestija"
    assert spell_name_b("The University of Cawville") == "Universitet de Kavvil"


def test_ensure_demo_reuses_and_repairs(tmp_path):
    spec = DemoSpec(**SMALL)
    folder = tmp_path / demo_folder_name(5, spec)
    assert folder.name != demo_folder_name(5) and folder.name.startswith(f"v{DEMO_VERSION}-seed5-")
    folder.mkdir()
    (folder / "junk.txt").write_text("half-written by hand")
    assert ensure_demo(tmp_path, seed=5, spec=spec) == folder
    assert (folder / "manifest.json").is_file() and not (folder / "junk.txt").exists()
    stamp = (folder / "manifest.json").stat().st_mtime_ns
    assert ensure_demo(tmp_path, seed=5, spec=spec) == folder
    assert (folder / "manifest.json").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]


def test_ensure_demo_concurrent_calls_leave_one_complete_copy(tmp_path):
    spec = DemoSpec(**SMALL)
    barrier = threading.Barrier(3)
    got: list[Path] = []

    def call():
        barrier.wait()
        got.append(ensure_demo(tmp_path, seed=2, spec=spec))

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    folder = tmp_path / demo_folder_name(2, spec)
    assert got == [folder] * 3 and (folder / "manifest.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no temporary folder left behind


def test_bad_parameters_and_existing_folder(tmp_path):
    with pytest.raises(MmeaInputError, match="edge_keep"):
        DemoSpec(edge_keep=1.5)
    with pytest.raises(MmeaInputError, match="unknown demo parameter"):
        generate_demo(tmp_path / "x", bogus=1)
    out = generate_demo(tmp_path / "x", **SMALL)
    with pytest.raises(MmeaInputError, match="already exists"):
        generate_demo(out, **SMALL)
    before = (out / "links.tsv").read_bytes()
    generate_demo(out, seed=1, overwrite=True, **SMALL)
    assert (out / "links.tsv").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]
