"""The synthetic pair generator (`mmea datasets synth`, issue 18 part 1): determinism, the stated
properties (degree tail, edge overlap, dangling share, name noise), loading with the tsv loader, knobs."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from click.testing import CliRunner

from mmea.cli import main
from mmea.data.loaders.tsv import TsvLoader
from mmea.data.synth import GENERATOR_VERSION, generate_pair, synth_config, vocabulary_size

N = 5000


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "p"
    meta = generate_pair(synth_config({"entities": N, "seed": 3}), out, progress=False)
    logging.getLogger("mmea.data").disabled = True  # the loader's missing-name warnings are expected
    try:
        task = TsvLoader().load(out)
    finally:
        logging.getLogger("mmea.data").disabled = False
    return out, meta, task


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    cfg = synth_config({"entities": 1000, "seed": 7})
    a, b, c = (tmp_path / x for x in "abc")
    generate_pair(cfg, a, progress=False)
    generate_pair(cfg, b, progress=False)
    generate_pair(synth_config({"entities": 1000, "seed": 8}), c, progress=False)
    fa, fb, fc = _files(a), _files(b), _files(c)
    assert set(fa) >= {"kg1/triples.tsv", "kg1/entities.tsv", "kg1/names.tsv", "kg1/attributes.tsv",
                       "kg2/triples.tsv", "links.tsv", "meta.json", "README"}
    assert fa == fb
    assert all(fa[k] != fc[k] for k in fa if k.endswith(".tsv"))


def test_meta_records_knobs_seed_and_version(pair):
    out, meta, _ = pair
    on_disk = json.loads((out / "meta.json").read_text())
    assert on_disk == meta
    assert meta["version"] == GENERATOR_VERSION and meta["seed"] == 3
    assert meta["knobs"]["entities"] == N and meta["knobs"]["keep_min"] == 0.5
    assert "mmea datasets synth --entities 5000 --seed 3" in (out / "README").read_text()


def test_loads_with_the_tsv_loader_and_links_are_one_to_one(pair):
    out, meta, task = pair
    c = meta["counts"]
    assert task.source.num_entities == N == c["kg1"]["entities"]
    assert task.target.num_entities == c["kg2"]["entities"]
    assert len(task.source.triples) == c["kg1"]["triples"] and len(task.target.triples) == c["kg2"]["triples"]
    links = task.all_links
    assert len(links) == c["links"]
    assert len(np.unique(links[:, 0])) == len(links) == len(np.unique(links[:, 1]))
    skipped = task.meta["load_report"]["skipped"]
    assert not any("duplicate" in k for k in skipped), skipped  # the generator writes no repeated line
    raw = [line.split("\t") for line in (out / "links.tsv").read_text().splitlines()]
    assert {a for a, _ in raw} <= set(task.source.ids) and {b for _, b in raw} <= set(task.target.ids)
    assert not set(task.source.ids) & set(task.target.ids)  # opaque per-KG ids
    assert task.provenance["generator"] == {"generator": "mmea-synth", "version": GENERATOR_VERSION, "seed": 3,
                                            "name_tokens": meta["name_tokens"]}


def _degrees(kg):
    return np.bincount(kg.triples[:, [0, 2]].ravel(), minlength=kg.num_entities)


def test_degree_distribution_has_a_power_law_tail(pair):
    for kg in (pair[2].source, pair[2].target):
        deg = _degrees(kg)
        assert deg.max() > 20 * deg.mean()
        xs = np.unique(deg[(deg >= max(1, int(deg.mean()))) & (deg <= deg.max() / 2)])
        ccdf = np.array([(deg >= x).mean() for x in xs])
        slope = np.polyfit(np.log(xs), np.log(ccdf), 1)[0]
        assert -2.3 < slope < -1.0, slope  # CCDF slope about -(gamma - 1) = -1.6 at the default gamma 2.6


def test_gamma_sets_the_tail(tmp_path):
    slopes = []
    for gamma in (2.1, 3.5):
        generate_pair(synth_config({"entities": 3000, "gamma": gamma}), tmp_path / str(gamma), progress=False)
        deg = _degrees(TsvLoader().load(tmp_path / str(gamma)).source)
        xs = np.unique(deg[(deg >= max(1, int(deg.mean()))) & (deg <= deg.max() / 2)])
        slopes.append(np.polyfit(np.log(xs), np.log([(deg >= x).mean() for x in xs]), 1)[0])
    assert slopes[1] < slopes[0] - 0.5, slopes  # a larger exponent: a steeper, lighter tail


def test_edge_overlap_and_dangling_share_within_their_bands(pair):
    _, meta, task = pair
    knobs, drawn = meta["knobs"], meta["drawn"]
    links = task.all_links
    to2 = np.full(task.source.num_entities, -1)
    to2[links[:, 0]] = links[:, 1]
    linked2 = np.zeros(task.target.num_entities, dtype=bool)
    linked2[links[:, 1]] = True
    t1, t2 = task.source.triples, task.target.triples
    h, t = to2[t1[:, 0]], to2[t1[:, 2]]
    pairs1 = set(zip(h[(h >= 0) & (t >= 0)].tolist(), t[(h >= 0) & (t >= 0)].tolist()))
    both = linked2[t2[:, 0]] & linked2[t2[:, 2]]
    pairs2 = set(zip(t2[both, 0].tolist(), t2[both, 2].tolist()))
    share = len(pairs1 & pairs2) / len(pairs2)  # KG 2's edges among linked entities that KG 1 also has
    lo = knobs["keep_min"] / (1 + knobs["extra_edges"]) - 0.05
    assert lo < share < knobs["keep_max"] + 0.02, share
    assert abs(share * (1 + knobs["extra_edges"]) - drawn["keep"][0]) < 0.1
    for k, kg in enumerate((task.source, task.target)):
        dangling = 1 - len(links) / kg.num_entities
        assert knobs["dangling_min"] - 0.01 <= dangling <= knobs["dangling_max"] + 0.01
        assert abs(dangling - drawn["dangling"][k]) < 0.01


def _linked_names(task):
    links = task.all_links
    n1 = [task.source.names[i] for i in links[:, 0]]
    n2 = [task.target.names[j] for j in links[:, 1]]
    named = [(a, b) for a, b in zip(n1, n2) if a and b]
    return len(named) / len(links), np.mean([a != b for a, b in named])


def test_name_noise_and_missing_names_near_their_rates(pair, tmp_path):
    knobs = pair[1]["knobs"]
    named_share, differ = _linked_names(pair[2])
    p = knobs["name_noise"]
    assert abs(differ - (1 - (1 - p) ** 2)) < 0.04  # each side perturbs independently
    assert abs(named_share - (1 - knobs["name_missing"]) ** 2) < 0.03
    generate_pair(synth_config({"entities": 1000, "name_noise": 0.0, "name_missing": 0.0}), tmp_path / "q",
                  progress=False)
    assert _linked_names(TsvLoader().load(tmp_path / "q")) == (1.0, 0.0)


def _tokens(folder):
    names = (folder / "kg1" / "names.tsv").read_text().splitlines()
    return {t for line in names for t in line.split("\t", 1)[1].split()}


def test_the_vocabulary_grows_like_heaps_law_and_only_the_names_change(tmp_path):
    size = lambda n, g: vocabulary_size(synth_config({"entities": n, "vocabulary_growth": g}))  # noqa: E731
    assert size(100_000, 0.5) == 20_000 == size(1_000_000, 0.0)  # the reference size; growth 0: version 1
    assert size(1_000_000, 0.5) == 63_246 and size(10_000, 0.5) == 6_325 and size(400, 0.5) == 1_265
    assert size(100, 0.0) == 20_000 and size(100_000, 1.0) == 20_000
    assert synth_config({}).vocabulary_growth == 0.0  # the default: the committed tables' pairs
    fixed, grown = tmp_path / "fixed", tmp_path / "grown"
    generate_pair(synth_config({"entities": 2000, "name_noise": 0.0}), fixed, progress=False)  # default: fixed
    meta = generate_pair(synth_config({"entities": 2000, "vocabulary_growth": 0.5, "name_noise": 0.0}), grown,
                         progress=False)
    assert meta["name_tokens"] == size(2000, 0.5) == 2_828
    a, b = _files(fixed), _files(grown)
    assert all(a[k] == b[k] for k in a if k.endswith(".tsv") and not k.endswith("names.tsv"))  # the rest: same bytes
    assert a["kg1/names.tsv"] != b["kg1/names.tsv"]
    assert len(_tokens(grown)) <= 2_828 and len(_tokens(grown)) < len(_tokens(fixed))  # Zipf: 2,828 vs 20,000
    generate_pair(synth_config({"entities": 2000, "vocabulary": 30, "vocabulary_growth": 0.5, "name_noise": 0.0}),
                  tmp_path / "few", progress=False)
    assert len(_tokens(tmp_path / "few")) <= max(10, round(30 * 0.02 ** 0.5))
    (tmp_path / "few" / "meta.json").write_text('{"generator": "someone-else", "version": 9}')
    assert TsvLoader().load(tmp_path / "few").provenance["generator"] is None  # not ours: nothing claimed
    (tmp_path / "few" / "meta.json").unlink()
    assert TsvLoader().load(tmp_path / "few").provenance["generator"] is None


@pytest.mark.parametrize("knob, message", [
    ("keep_min=1.5", "synth.keep_min"), ("dangling_max=1", "synth.dangling_max"), ("gamma=1", "synth.gamma"),
    ("keep_min=0.9", "keep_min (0.9) must not exceed keep_max"), ("avg_degree=abc", "synth.avg_degree"),
    ("nope=1", "unknown key synth.nope"), ("vocabulary_growth=1.5", "synth.vocabulary_growth"), ("seed=3", "--seed"),
    ("novalue", "KEY=VALUE")])
def test_bad_knobs_exit_2_naming_the_knob(tmp_path, knob, message):
    r = CliRunner().invoke(main, ["datasets", "synth", "--entities", "500", "--out", str(tmp_path / "o"),
                                  "--knob", knob])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()


def test_cli_refuses_a_non_empty_out_unless_overwrite(tmp_path):
    out = tmp_path / "o"
    args = ["-q", "datasets", "synth", "--entities", "500", "--out", str(out)]
    assert CliRunner().invoke(main, args).exit_code == 0
    first = _files(out)
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and "--overwrite" in r.output
    assert CliRunner().invoke(main, args + ["--overwrite"]).exit_code == 0
    assert _files(out) == first
    other = tmp_path / "other"
    other.mkdir()
    (other / "mine.txt").write_text("x")
    r = CliRunner().invoke(main, ["datasets", "synth", "--entities", "500", "--out", str(other), "--overwrite"])
    assert r.exit_code == 2 and "holds no synthetic pair" in r.output
    assert (other / "mine.txt").read_text() == "x"
