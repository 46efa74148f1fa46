"""`mmea reproduce`: a committed bench cell re-run from its recorded config gives the same metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmea.cli import main
from mmea.reproduce import LEGACY_VALUES, find_cell, recorded_config

REPO = Path(__file__).resolve().parent.parent


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def bench_results(tmp_path_factory):
    """A one-row, one-seed demo bench (propagation, training-free), run from a scratch folder."""
    work = tmp_path_factory.mktemp("repro")
    (work / "p.toml").write_text("""
[bench]
name = "tiny"
task = "align"
out = "runs/bench-tiny"
seeds = [0]
metrics = ["test.hits@1", "test.mrr"]

[defaults]
device = "cpu"
data.src = "demo_src"
data.tgt = "demo_tgt"
features.name_encoder = "char-ngram"

[[rows]]
label = "propagation"
model.name = "propagation"
""", encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        r = run("bench", work / "p.toml")
    assert r.exit_code == 0, r.output
    return work, work / "results" / "tiny.json"


def test_a_cell_reruns_to_the_same_metrics_and_is_recorded(bench_results, monkeypatch):
    work, results = bench_results
    monkeypatch.chdir(work)
    r = run("reproduce", results, "propagation-seed0", "--record", work / "repro.md")
    assert r.exit_code == 0, r.output
    assert "every compared metric is equal" in r.output and "equal  test.hits@1" in r.output
    assert "timings" not in r.output  # machine figures are not compared
    log = (work / "repro.md").read_text(encoding="utf-8")
    assert "`propagation-seed0`" in log and "| test.hits@1 |" in log and "**no**" not in log
    assert (work / "runs" / "reproduce" / "propagation-seed0" / "complete.json").is_file()


def test_a_changed_result_is_reported_and_exits_1(bench_results, monkeypatch, tmp_path):
    work, results = bench_results
    rec = json.loads(results.read_text(encoding="utf-8"))
    rec["cells"][0]["metrics"]["test.hits@1"] += 0.01  # as if the code had changed the number
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(rec), encoding="utf-8")
    monkeypatch.chdir(work)
    r = CliRunner().invoke(main, ["reproduce", str(edited), "propagation-seed0", "--out", str(tmp_path / "r")])
    assert r.exit_code == 1 and "DIFFER test.hits@1" in r.output and "differs from" in r.output


def test_unknown_cell_and_bad_file_are_input_errors(bench_results, tmp_path):
    _, results = bench_results
    r = CliRunner().invoke(main, ["reproduce", str(results), "nope"])
    assert r.exit_code == 2 and "no cell 'nope'" in r.output and "propagation-seed0" in r.output
    bad = tmp_path / "x.json"
    bad.write_text("{}", encoding="utf-8")
    r = CliRunner().invoke(main, ["reproduce", str(bad), "c"])
    assert r.exit_code == 2 and "not an mmea bench results file" in r.output


def test_options_added_after_a_table_take_their_old_behaviour_and_overrides_apply(bench_results):
    _, results = bench_results
    rec, cell = find_cell(results, "propagation-seed0")
    cell["config"]["data"].pop("fb15k_triples", None)  # a record from before the option existed
    _, cfg = recorded_config(rec, cell, "/data", ["seed=3", "search.csls_k=5"])
    assert cfg.data.fb15k_triples == LEGACY_VALUES["align"][("data", "fb15k_triples")] == "fb15k237"
    assert cfg.data.data_dir == "/data" and cfg.seed == 3 and cfg.search.csls_k == 5
    cell["config"]["data"]["fb15k_triples"] = "union"  # recorded: kept as recorded
    assert recorded_config(rec, cell, None, [])[1].data.fb15k_triples == "union"
