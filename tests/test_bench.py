"""`mmea bench`: grid expansion, skipping finished cells, --only, failures, the table, linkpred cells, errors.

The shipped demo pipeline runs for real (4 cells on the demo pair); everything
else uses fake runners that write what the real ones write (config.toml,
metrics.json), so the bench logic is tested without training anything.
"""

from __future__ import annotations

import dataclasses
import json
import re
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmea.bench import format_anchor, format_mean_std, load_pipeline, mean_std, plan_cells
from mmea.cli import main
from mmea.errors import MmeaInputError

REPO = Path(__file__).resolve().parents[1]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ the shipped demo pipeline
@pytest.fixture(scope="module")
def demo_bench(tmp_path_factory):
    """`mmea bench pipelines/demo.toml` once, from a scratch working directory."""
    work = tmp_path_factory.mktemp("bench-demo")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        r = run("bench", REPO / "pipelines" / "demo.toml")
    assert r.exit_code == 0, r.output
    return work, r.output


def test_demo_pipeline_runs_every_cell_and_tabulates_measured_numbers(demo_bench):
    work, out = demo_bench
    names = ["baseline-seed0", "baseline-seed1", "propagation-seed0", "propagation-seed1"]
    for n in names:
        assert (work / "runs" / "bench-demo" / n / "metrics.json").is_file()
        assert re.search(rf"\[\d/4\] {n}  done  hits@1 0\.\d{{4}}  \(\d+\.\d s\)", out), out
    assert "4 cells: 4 done" in out
    res = json.loads((work / "results" / "demo.json").read_text())
    assert res["counts"]["done"] == 4 and [c["name"] for c in res["cells"]] == names
    md = (work / "results" / "demo.md").read_text()
    assert "mmea bench" in md and "demo.toml" in md and "not typed" in md and "CPUs" in md
    # each row's number is the mean ± std of its cells' metrics.json, and the "ran" label comes from there too
    for row in ("baseline", "propagation"):
        h1 = [json.loads((work / "runs" / "bench-demo" / f"{row}-seed{s}" / "metrics.json").read_text())["test"]
              ["hits@1"] for s in (0, 1)]
        mean, std = mean_std(h1)
        line = next(x for x in md.splitlines() if x.startswith(f"| {row} |"))
        assert f"| {mean:.4f} ± {std:.4f} |" in line
        assert f"{row} · seed ratio 0.30 · names char-ngram" in line and "| 2 |" in line
    rows = {r["row"]: r for r in res["rows"]}
    assert rows["propagation"]["metrics"]["test.hits@1"]["mean"] > rows["baseline"]["metrics"]["test.hits@1"]["mean"]


def test_demo_pipeline_second_run_skips_finished_cells(demo_bench, monkeypatch):
    work, _ = demo_bench
    monkeypatch.chdir(work)
    metrics = sorted((work / "runs" / "bench-demo").glob("*/metrics.json"))
    before = [p.stat().st_mtime_ns for p in metrics]
    import mmea.pipelines.align as align_job

    def must_not_run(*a, **k):  # pragma: no cover - would be a failure
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(align_job, "run_align", must_not_run)
    r = run("bench", REPO / "pipelines" / "demo.toml")
    assert r.exit_code == 0, r.output
    assert r.output.count("skipped (finished)") == 4 and "4 cells: 4 skipped" in r.output
    assert [p.stat().st_mtime_ns for p in metrics] == before
    r = run("bench", REPO / "pipelines" / "demo.toml", "--dry-run")
    assert r.output.count("finished, would skip") == 4


# --------------------------------------------------------------------------------- fake runners
class FakeAlign:
    """Stands in for run_align: writes config.toml + metrics.json like the real one; fails on request."""

    def __init__(self, hits=None, fail=lambda cfg: False):
        self.calls: list = []
        self.hits = hits or (lambda cfg: 0.5 + 0.1 * cfg.seed)
        self.fail = fail

    def __call__(self, cfg, out=None, quiet=False, overwrite=False, **kw):
        from mmea.config import to_toml

        self.calls.append(cfg)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.toml").write_text(to_toml(dataclasses.asdict(cfg)))
        if self.fail(cfg):
            raise RuntimeError(f"boom in {out.name}")
        m = {"dataset": cfg.data.pair or "demo", "model": cfg.model_name, "seed": cfg.seed, "device": "cpu",
             "split": {"train": 27, "valid": 3, "test": 70},
             "test": {"hits@1": self.hits(cfg), "hits@1_one_to_one": 0.8, "hits@10": 0.9, "mrr": 0.7},
             "model_info": {"name_encoder": {"encoder": "char-ngram", "model": "tfidf-char-wb"}},
             "timings": {"total_s": 1.0 + cfg.seed}}
        (out / "metrics.json").write_text(json.dumps(m))
        if cfg.seed == 0:
            (out / "hist.png").write_bytes(b"png of " + out.name.encode())
        return {"metrics": m}


@pytest.fixture
def fake_align(monkeypatch):
    import mmea.pipelines.align as align_job

    fake = FakeAlign()
    monkeypatch.setattr(align_job, "run_align", fake)
    return fake


GRID = """\
    [bench]
    name = "grid"
    task = "align"
    out = "{out}"
    seeds = [0, 1, 2]
    datasets = ["dbp15k_zh_en", {{ label = "mine", src = "kg1/", tgt = "kg2/", links = "links.tsv" }}]
    metrics = ["test.hits@1", "mrr"]

    [defaults]
    device = "cpu"
    data.seed_ratio = 0.3
    search.csls_k = 5
    set = ["search.topk=2"]

    [[rows]]
    label = "base"
    setting = "names only"
    anchor = "H@1 0.50 (paper)"
    model.name = "baseline"

    [[rows]]
    label = "prop"
    datasets = ["dbp15k_ja_en"]
    model = {{ name = "propagation", hops = 1 }}
    data.seed_ratio = 0.0
    set = ["search.csls_k=3"]
    [rows.anchor]
    "test.hits@1" = 0.9
    source = "Table 2"
"""


def test_grid_expansion_merges_defaults_datasets_and_rows(tmp_path):
    p = load_pipeline(write(tmp_path / "grid.toml", GRID.format(out=tmp_path / "runs")))
    assert p.name == "grid" and p.task.name == "align" and p.metrics == ["test.hits@1", "test.hits@1_one_to_one", "test.mrr"]
    assert [c.name for c in p.cells] == [
        *(f"base-dbp15k_zh_en-seed{s}" for s in (0, 1, 2)), *(f"base-mine-seed{s}" for s in (0, 1, 2)),
        *(f"prop-dbp15k_ja_en-seed{s}" for s in (0, 1, 2))]
    base_zh, base_mine, prop = p.cells[1], p.cells[3], p.cells[8]
    assert base_zh.out == tmp_path / "runs" / "base-dbp15k_zh_en-seed1"
    assert base_zh.config["seed"] == 1 and base_zh.config["device"] == "cpu"
    assert {"pair": "dbp15k_zh_en", "src": "", "tgt": "", "seed_ratio": 0.3}.items() <= base_zh.config["data"].items()
    assert base_zh.config["search"]["csls_k"] == 5 and base_zh.config["search"]["topk"] == 2
    assert base_mine.config["data"]["src"] == "kg1/" and base_mine.config["data"]["links"] == "links.tsv"
    # the row wins over [defaults]; its `set` strings apply after the tables, as --set does
    assert prop.config["model"]["name"] == "propagation" and prop.config["model"]["hops"] == 1
    assert prop.config["data"]["seed_ratio"] == 0.0 and prop.config["search"]["csls_k"] == 3
    assert prop.params.seed == 2 and prop.params.model_name == "propagation"  # a real RunConfig
    assert format_anchor(p.rows[1].anchor, "dbp15k_ja_en") == "hits@1 0.9 (Table 2)"


def test_skip_force_and_changed_config(tmp_path, fake_align, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pipe = write(tmp_path / "p.toml", GRID.format(out="runs"))
    assert run("bench", pipe).exit_code == 0 and len(fake_align.calls) == 9
    r = run("bench", pipe)
    assert r.exit_code == 0 and len(fake_align.calls) == 9 and r.output.count("skipped (finished)") == 9
    r = run("-q", "bench", pipe, "--force", "--only", "prop")
    assert len(fake_align.calls) == 12 and "started" not in r.output  # -q: no progress lines
    # a changed setting makes the finished cells stale: they run again
    pipe.write_text(pipe.read_text().replace("search.csls_k = 5", "search.csls_k = 6"))
    r = run("bench", pipe)
    assert len(fake_align.calls) == 18 and r.output.count("config changed") == 6
    # --data-dir is a location, not a setting: finished cells stay finished
    assert run("bench", pipe, "--data-dir", tmp_path).exit_code == 0 and len(fake_align.calls) == 18


def test_only_runs_a_subset_and_keeps_the_rest_in_the_table(tmp_path, fake_align, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pipe = write(tmp_path / "p.toml", GRID.format(out="runs"))
    r = run("bench", pipe, "--only", "prop")
    assert r.exit_code == 0 and {c.model_name for c in fake_align.calls} == {"propagation"}
    assert len(fake_align.calls) == 3 and "[3/3] prop-dbp15k_ja_en-seed2  done" in r.output
    res = json.loads((tmp_path / "results" / "grid.json").read_text())
    assert res["counts"] == {"done": 3, "skipped": 0, "recorded": 0, "failed": 0, "not run": 6}
    md = (tmp_path / "results" / "grid.md").read_text()
    assert "| base | dbp15k_zh_en | — | — | — | 0/3 |" in md and "Not run yet:" in md
    r = run("bench", pipe, "--only", "base")
    assert len(fake_align.calls) == 9 and "prop-dbp15k_ja_en" not in r.output  # prop is loaded, not listed
    res = json.loads((tmp_path / "results" / "grid.json").read_text())
    assert res["counts"] == {"done": 6, "skipped": 3, "recorded": 0, "failed": 0, "not run": 0}
    r = run("bench", pipe, "--only", "nope")
    assert r.exit_code == 2 and "--only nope: no such row" in r.output and "base, prop" in r.output


def test_seed_filter_runs_one_seed_of_every_row(tmp_path, fake_align, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pipe = write(tmp_path / "p.toml", GRID.format(out="runs"))
    r = run("bench", pipe, "--seed", "1")
    assert r.exit_code == 0 and sorted(c.seed for c in fake_align.calls) == [1, 1, 1]
    res = json.loads((tmp_path / "results" / "grid.json").read_text())
    assert res["counts"] == {"done": 3, "skipped": 0, "recorded": 0, "failed": 0, "not run": 6}
    r = run("bench", pipe, "--seed", "0", "--seed", "2", "--only", "prop")
    assert sorted((c.model_name, c.seed) for c in fake_align.calls[3:]) == [("propagation", 0), ("propagation", 2)]
    r = run("bench", pipe, "--seed", "7")
    assert r.exit_code == 2 and "--seed 7: not among the seeds" in r.output and "0, 1, 2" in r.output


def test_table_only_runs_nothing_and_tabulates_the_finished_cells(tmp_path, fake_align, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pipe = write(tmp_path / "p.toml", GRID.format(out="runs"))
    assert run("bench", pipe, "--seed", "0").exit_code == 0 and len(fake_align.calls) == 3
    (tmp_path / "results" / "grid.md").unlink()
    r = run("bench", pipe, "--table-only")
    assert r.exit_code == 0 and len(fake_align.calls) == 3 and "started" not in r.output
    res = json.loads((tmp_path / "results" / "grid.json").read_text())
    assert res["counts"] == {"done": 0, "skipped": 3, "recorded": 0, "failed": 0, "not run": 6}
    assert "Not run yet:" in (tmp_path / "results" / "grid.md").read_text()


def test_recorded_cells_of_the_previous_results_json_are_reused_while_their_config_matches(
        tmp_path, fake_align, monkeypatch):
    """A fresh checkout (no runs/) adds a seed to a committed table: seed 0's cells come from their
    records in results/grid.json, seed 1 runs; a changed setting or --force runs them again."""
    import shutil

    monkeypatch.chdir(tmp_path)
    pipe = write(tmp_path / "p.toml", GRID.format(out="runs"))
    (tmp_path / "data").mkdir()  # this machine's data folder: a location, kept out of the results json
    assert run("bench", pipe, "--seed", "0", "--data-dir", str(tmp_path / "data")).exit_code == 0
    assert len(fake_align.calls) == 3
    assert fake_align.calls[0].data.data_dir == str(tmp_path / "data")
    assert str(tmp_path / "data") not in (tmp_path / "results" / "grid.json").read_text()
    shutil.rmtree(tmp_path / "runs")  # what a fresh clone has: the committed results, no run folders
    r = run("bench", pipe, "--seed", "1", "--dry-run")
    assert r.output.count("previous results json, would reuse") == 3
    r = run("bench", pipe, "--seed", "1")
    assert r.exit_code == 0 and sorted(c.seed for c in fake_align.calls[3:]) == [1, 1, 1]
    assert "6 cells: 3 done, 3 recorded" in r.output or "3 done, 3 recorded" in r.output
    res = json.loads((tmp_path / "results" / "grid.json").read_text())
    assert res["counts"] == {"done": 3, "skipped": 0, "recorded": 3, "failed": 0, "not run": 3}
    base = next(x for x in res["rows"] if x["row"] == "base" and x["dataset"] == "mine")
    assert base["seeds"] == [0, 1] and base["metrics"]["test.hits@1"]["mean"] == pytest.approx(0.55)
    assert base["ran"].startswith("baseline · seed ratio 0.30")
    rec = next(c for c in res["cells"] if c["name"] == "base-mine-seed0")
    assert rec["status"] == "recorded" and rec["metrics"]["test.hits@1"] == 0.5 and rec["timings"] == {"total_s": 1.0}
    md = (tmp_path / "results" / "grid.md").read_text()
    assert "(3 cells whose run folder is absent here: from their record in the previous grid.json" in md
    assert "| base | mine | 0.5500 ± 0.0707 |" in md
    # the records survive a second rewrite of the json (they are carried over, not dropped)
    assert run("bench", pipe, "--table-only").exit_code == 0 and len(fake_align.calls) == 6
    assert json.loads((tmp_path / "results" / "grid.json").read_text())["counts"]["recorded"] == 3
    # --force on the chosen cells runs them; a changed setting makes every record stale
    assert run("bench", pipe, "--seed", "0", "--only", "prop", "--force").exit_code == 0
    assert [(c.model_name, c.seed) for c in fake_align.calls[6:]] == [("propagation", 0)]
    pipe.write_text(pipe.read_text().replace("search.csls_k = 5", "search.csls_k = 6"))
    r = run("bench", pipe, "--seed", "0", "--dry-run")
    assert "would reuse" not in r.output and r.output.count("would run") == 2


def test_same_settings_ignores_schema_drift_but_not_changed_values():
    from mmea.bench import same_settings

    stored = {"seed": 0, "model": {"name": "gaussian", "lr": 0.02, "old_key": 1}}
    assert same_settings(stored, {"seed": 0, "model": {"name": "gaussian", "lr": 0.02, "new_key": True}})
    assert not same_settings(stored, {"seed": 0, "model": {"name": "gaussian", "lr": 0.03}})
    assert not same_settings(stored, {"seed": 1, "model": {"name": "gaussian", "lr": 0.02}})


def test_figures_of_finished_cells_are_copied_beside_the_table(tmp_path, fake_align, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = GRID.format(out="runs").replace('metrics = ["test.hits@1", "mrr"]',
                                           'metrics = ["test.hits@1", "mrr"]\n    figures = ["hist.png"]')
    pipe = write(tmp_path / "p.toml", text)
    assert run("bench", pipe, "--seed", "0").exit_code == 0
    copies = sorted(p.name for p in (tmp_path / "results" / "grid").iterdir())
    assert copies == ["base-dbp15k_zh_en-seed0-hist.png", "base-mine-seed0-hist.png", "prop-dbp15k_ja_en-seed0-hist.png"]
    assert (tmp_path / "results" / "grid" / copies[1]).read_bytes() == b"png of base-mine-seed0"
    md = (tmp_path / "results" / "grid.md").read_text()
    assert "![base-mine-seed0-hist.png](grid/base-mine-seed0-hist.png)" in md
    bad = write(tmp_path / "bad.toml", text.replace('figures = ["hist.png"]', 'figures = ["../x.png"]'))
    r = run("bench", bad, "--dry-run")
    assert r.exit_code == 2 and "figures must be file names" in r.output


def test_failed_cell_is_recorded_and_the_bench_goes_on(tmp_path, monkeypatch):
    import mmea.pipelines.align as align_job

    fake = FakeAlign(fail=lambda cfg: cfg.model_name == "propagation" and cfg.seed == 1)
    monkeypatch.setattr(align_job, "run_align", fake)
    monkeypatch.chdir(tmp_path)
    pipe = write(tmp_path / "p.toml", GRID.format(out="runs"))
    r = run("bench", pipe)
    assert r.exit_code == 1 and len(fake.calls) == 9
    assert "prop-dbp15k_ja_en-seed1  FAILED after" in r.output and "boom in prop-dbp15k_ja_en-seed1" in r.output
    assert "prop-dbp15k_ja_en-seed2  done" in r.output  # the cell after the failure still ran
    assert "error: 1 of 9 cells failed" in r.output and "hint:" in r.output
    res = json.loads((tmp_path / "results" / "grid.json").read_text())
    bad = [c for c in res["cells"] if c["status"] == "failed"]
    assert len(bad) == 1 and bad[0]["error"] == "RuntimeError: boom in prop-dbp15k_ja_en-seed1"
    assert not (tmp_path / "runs" / "prop-dbp15k_ja_en-seed1" / "metrics.json").exists()
    md = (tmp_path / "results" / "grid.md").read_text()
    assert "| prop | dbp15k_ja_en | 0.6000 ± 0.1414 |" in md and "| 2/3 |" in md  # seeds 0 and 2
    assert "Failed cells:" in md and "boom" in md
    # the next run retries only the failed cell
    monkeypatch.setattr(align_job, "run_align", FakeAlign())
    r = run("bench", pipe)
    assert r.exit_code == 0 and r.output.count("  done") == 1


# ------------------------------------------------------------------------------------------- the table
def test_mean_std_formatting_against_hand_computed_numbers():
    assert format_mean_std([0.5, 0.7], "test.hits@1") == "0.6000 ± 0.1414"  # sample std: sqrt(0.02 / 1)
    assert format_mean_std([0.5, 0.6, 0.8], "test.mrr") == "0.6333 ± 0.1528"  # sqrt(0.046667 / 2)
    assert format_mean_std([0.25], "test.hits@1") == "0.2500"  # one seed: the plain value
    assert format_mean_std([2.0, 4.0], "timings.total_s") == "3.0 ± 1.4"
    assert format_mean_std([100.0, 110.0], "test.mr") == "105.0 ± 7.1"
    assert format_mean_std([12.5, 13.5], "x") == "13.00 ± 0.71"
    assert format_mean_std([10, 12], "epochs_run") == "11.0 ± 1.4" and format_mean_std([7], "epochs_run") == "7"
    assert format_mean_std([1.0], "test.hits@10") == "1.0000"  # a rate that happens to be 1 is not a count
    assert format_mean_std(["early stopping", "time budget", "early stopping"]) == "early stopping / time budget"
    assert format_mean_std([]) == "—" and format_mean_std([None]) == "—"
    # a value only some cells have says over how many (a partial mean must not pass for the row's)
    assert format_mean_std([0.5, None, 0.7], "test.hits@1") == "0.6000 ± 0.1414 (2 of 3)"
    assert format_mean_std([None, 0.25], "test.hits@1") == "0.2500 (1 of 2)"
    assert format_mean_std([True, None]) == "true (1 of 2)"
    assert format_anchor("H@1 0.72 (SelfMEA)", None) == "H@1 0.72 (SelfMEA)"
    assert format_anchor({"zh_en": {"test.hits@1": 0.72}, "ja_en": "n/a"}, "ja_en") == "n/a"


def test_table_rows_are_mean_std_of_the_cells(tmp_path, monkeypatch):
    import mmea.pipelines.align as align_job

    values = {0: 0.5, 1: 0.6, 2: 0.8}
    monkeypatch.setattr(align_job, "run_align", FakeAlign(hits=lambda cfg: values[cfg.seed]))
    monkeypatch.chdir(tmp_path)
    pipe = write(tmp_path / "p.toml", GRID.format(out="runs"))
    r = run("bench", pipe, "--results-dir", "tables")
    assert r.exit_code == 0 and "table:   tables/grid.md" in r.output
    md = (tmp_path / "tables" / "grid.md").read_text()
    head = next(x for x in md.splitlines() if x.startswith("| Row"))
    assert head == "| Row | Dataset | hits@1 | hits@1_one_to_one | mrr | n | Setting | Ran (from metrics.json) | Published |"
    line = next(x for x in md.splitlines() if x.startswith("| base | mine |"))
    assert line == ("| base | mine | 0.6333 ± 0.1528 | 0.8000 ± 0.0000 | 0.7000 ± 0.0000 | 3 | names only "
                    "| baseline · seed ratio 0.30 · names char-ngram (tfidf-char-wb) | H@1 0.50 (paper) |")
    assert "| prop | dbp15k_ja_en | 0.6333 ± 0.1528 |" in md and "hits@1 0.9 (Table 2) |" in md
    res = json.loads((tmp_path / "tables" / "grid.json").read_text())
    agg = res["rows"][1]["metrics"]["test.hits@1"]
    assert agg["n"] == 3 and agg["mean"] == pytest.approx(0.63333, abs=1e-5) and agg["text"] == "0.6333 ± 0.1528"
    cell = res["cells"][0]
    assert cell["metrics"] == {"test.hits@1": 0.5, "test.hits@1_one_to_one": 0.8, "test.mrr": 0.7} and cell["config"]["search"]["csls_k"] == 5


# ---------------------------------------------------------------------------------------------- linkpred
def non_default(section, always=()) -> dict:
    """The fields of a config section that differ from their defaults (plus ``always``): what a
    pipeline's row, defaults and budget set, as the runners' keyword arguments were before the jobs."""
    default = type(section)()
    return {f.name: getattr(section, f.name) for f in dataclasses.fields(section)
            if f.name in always or getattr(section, f.name) != getattr(default, f.name)}


LP_NAMED = ("model", "sampler", "loss", "dim", "epochs", "num_negatives")


def linkpred_call(config, out=None) -> dict:
    """A linkpred job's config as run_linkpred_cli's keyword arguments (``extra``: the other fields set)."""
    lp = config.linkpred
    return dict(dataset=config.source.dataset, data_dir=config.source.data_dir,
                **{k: getattr(lp, k) for k in LP_NAMED}, seed=lp.seed, device=lp.device, out=out,
                extra={k: v for k, v in non_default(lp).items() if k not in (*LP_NAMED, "seed", "device")})


class FakeLinkpred:
    """Stands in for the linkpred job's run: records its config, writes a metrics.json like the real one."""

    def __init__(self):
        self.calls: list[dict] = []

    def __call__(self, config, run_dir, *, overwrite=False, progress=True, **kw):
        from mmea.linkpred.training import resolve_margin

        out = run_dir
        self.calls.append(linkpred_call(config, out))
        cfg = config.linkpred
        dataset, model, sampler, loss, seed = config.source.dataset, cfg.model, cfg.sampler, cfg.loss, cfg.seed
        m = {"dataset": dataset, "task": "linkpred", "model": model, "sampler": sampler, "loss": loss,
             "seed": seed, "device": "cpu",
             "config": {**dataclasses.asdict(cfg), "margin": resolve_margin(cfg), "shared_negatives": True},
             "test": {"mrr": 0.2 + 0.01 * seed, "hits@1": 0.1, "hits@3": 0.2, "hits@10": 0.4, "mr": 300.0},
             "epochs_run": 3, "stopped": "epochs",
             "false_negatives": {"drawn_true_rate_train": 0.01, "returned_true_rate_all_splits": 0.0},
             "timings": {"train_s": 2.0, "epoch_s_mean": 0.5, "total_s": 3.0}}
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "metrics.json").write_text(json.dumps(m))
        return m


@pytest.fixture
def fake_linkpred(monkeypatch):
    import mmea.pipelines.linkpred as job

    fake = FakeLinkpred()
    monkeypatch.setattr(job, "run", fake)
    return fake


def test_linkpred_pipeline_calls_the_runner_per_row_and_seed(tmp_path, fake_linkpred, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pipe = write(tmp_path / "lp.toml", """\
        [bench]
        name = "lp"
        task = "linkpred"
        dataset = "tiny"
        seeds = [0, 1]
        out = "runs/lp"
        device = "cpu"
        metrics = ["mrr", "hits@10"]
        report = ["epochs_run", "stopped"]

        [budget]
        max_minutes = 1.0
        epochs = 3
        dim = 8

        [defaults]
        lr = 0.01
        num_negatives = 4
        model = "rotate"                # the cell name follows the resolved model

        [[rows]]
        label = "uniform"
        sampler = "uniform"
        loss = "margin-ranking"

        [[rows]]
        label = "uniform"
        model = "distmult"
        num_negatives = 2
        sampler_options = { k = 3 }
        anchor = "MRR 0.2188"
    """)
    r = run("bench", pipe, "--data-dir", tmp_path / "data")
    assert r.exit_code == 0, r.output
    assert [Path(c["out"]).name for c in fake_linkpred.calls] == [
        "uniform-rotate-seed0", "uniform-rotate-seed1", "uniform-distmult-seed0", "uniform-distmult-seed1"]
    c = fake_linkpred.calls[2]
    assert c["dataset"] == "tiny" and c["data_dir"] == str(tmp_path / "data") and c["seed"] == 0
    assert (c["model"], c["sampler"], c["loss"], c["dim"], c["epochs"], c["num_negatives"]) == \
        ("distmult", "uniform", "self-adversarial", 8, 3, 2)
    assert c["extra"] == {"max_minutes": 1.0, "lr": 0.01, "sampler_options": {"k": 3}} and c["device"] == "cpu"
    md = (tmp_path / "results" / "lp.md").read_text()
    assert "| uniform-distmult | 0.2050 ± 0.0071 | 0.4000 ± 0.0000 | 2 |" in md and "MRR 0.2188" in md
    assert "distmult · sampler uniform · loss self-adversarial · K 2 · d 8 · filtered" in md
    assert "| uniform-rotate | 3.0 ± 0.0 | epochs |" in md  # the report table
    r = run("bench", pipe, "--only", "uniform-distmult")
    assert r.exit_code == 0 and len(fake_linkpred.calls) == 4 and r.output.count("skipped (finished)") == 2


def test_shipped_negative_sampling_pipeline_resolves_as_its_header_says(tmp_path, fake_linkpred, monkeypatch):
    p = load_pipeline(REPO / "pipelines" / "negative_sampling_fb15k237.toml")
    assert p.name == "negative_sampling_fb15k237" and len(p.cells) == 11 and len(p.rows) == 11
    assert p.metrics == ["test.mrr", "test.hits@1", "test.hits@3", "test.hits@10", "test.mr"]
    assert "false_negatives.returned_true_rate_all_splits" in p.report
    cells = {c.name: c for c in p.cells}
    hard = linkpred_call(cells["hard-nn-transe-seed0"].params)
    assert (hard["model"], hard["sampler"], hard["num_negatives"], hard["dim"], hard["device"]) == \
        ("transe", "hard-nn", 32, 200, "cpu")
    assert hard["extra"]["sampler_options"] == {"num_neighbors": 64, "refresh_every": 2}
    assert hard["extra"]["max_minutes"] == 9.0 and hard["extra"]["normalize_entities"] is True
    assert hard["extra"]["num_threads"] == 1
    assert linkpred_call(cells["self-adversarial-unfiltered-transe-seed0"].params)["extra"]["filtered"] is False
    assert linkpred_call(cells["uniform-distmult-seed0"].params)["extra"]["regularization"] == 0.0001
    monkeypatch.chdir(tmp_path)
    r = run("-q", "bench", REPO / "pipelines" / "negative_sampling_fb15k237.toml")
    assert r.exit_code == 0 and len(fake_linkpred.calls) == 11 and "11 cells: 11 done" in r.output
    assert (tmp_path / "runs" / "bench-negative-sampling-fb15k237" / "cache-distmult-seed0" / "metrics.json").exists()
    assert len(plan_cells(p)) == 11 and all(a == "skip" for _, a in plan_cells(p))


# ------------------------------------------------------------------------------------------ clep cells
def clep_call(config, out=None) -> dict:
    """A clep job's config as run_pretrain_clep_cli's keyword arguments (``values``: every ClepConfig field)."""
    return {"dataset": config.source.dataset, "data_dir": config.source.data_dir,
            "values": dataclasses.asdict(config.clep), "out": out, "finetune": config.finetune}


class FakeClep:
    """Stands in for the clep job's run: records the config, writes a plausible metrics.json."""

    def __init__(self):
        self.calls, self.configs = [], []

    def __call__(self, config, run_dir, *, overwrite=False, progress=True, **kw):
        out, cfg, finetune = run_dir, config.clep, config.finetune
        self.calls.append(clep_call(config, out))
        self.configs.append(config)
        m = {"dataset": config.source.dataset, "task": "clep", "graph_encoder": cfg.graph_encoder, "seed": cfg.seed,
             "device": "cpu", "text_encoder": {"encoder": "offline"}, "texts": {"description": 0, "name": 5},
             "config": dataclasses.asdict(cfg), "test": {"mr": 400.0 + cfg.seed, "mrr": 0.15, "hits@1": 0.1,
                                                         "hits@10": 0.3},
             "epochs_run": 2, "stopped": "epochs", "cosine": {"mean_correct": 0.5, "mean_incorrect": 0.1},
             "timings": {"train_s": 1.0, "epoch_s_mean": 0.5, "total_s": 2.0}}
        if finetune:
            m["finetune"] = {"config": dict(finetune), "model": finetune.get("model", "transe"), "gain_mrr": 0.02,
                             "clep": {"test": {"mrr": 0.22}}, "random": {"test": {"mrr": 0.20}}}
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "metrics.json").write_text(json.dumps(m))
        return m


@pytest.fixture
def fake_clep(monkeypatch):
    import mmea.pipelines.clep as job

    fake = FakeClep()
    monkeypatch.setattr(job, "run", fake)
    return fake


def test_clep_pipeline_calls_the_runner_per_row_and_seed(tmp_path, fake_clep, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pipe = write(tmp_path / "clep.toml", """\
        [bench]
        name = "cl"
        task = "clep"
        dataset = "tiny"
        seeds = [0, 1]
        out = "runs/cl"
        device = "cpu"
        metrics = ["mr", "mrr"]
        report = ["cosine.mean_correct", "finetune.gain_mrr"]

        [budget]
        max_minutes = 1.0
        num_threads = 1

        [defaults]
        dim = 8

        [[rows]]
        label = "emb"
        graph_encoder = "embedding"
        finetune = { model = "transe", dim = 8, max_minutes = 0.5 }

        [[rows]]
        label = "rgcn"
        graph_encoder = "rgcn"
        anchor = { "test.mrr" = 0.237, source = "paper" }
    """)
    r = run("bench", pipe, "--data-dir", tmp_path / "data")
    assert r.exit_code == 0, r.output
    assert [Path(c["out"]).name for c in fake_clep.calls] == ["emb-seed0", "emb-seed1", "rgcn-seed0", "rgcn-seed1"]
    c = fake_clep.calls[1]
    assert c["dataset"] == "tiny" and c["data_dir"] == str(tmp_path / "data")
    expected = {"device": "cpu", "max_minutes": 1.0, "num_threads": 1, "dim": 8, "graph_encoder": "embedding",
                "seed": 1}
    assert {k: c["values"][k] for k in expected} == expected
    # and nothing else was set: every other field is at its default
    assert non_default(fake_clep.configs[1].clep, ("device", "num_threads", "graph_encoder")) == expected
    assert c["finetune"] == {"model": "transe", "dim": 8, "max_minutes": 0.5}
    assert fake_clep.calls[2]["finetune"] is None
    md = (tmp_path / "results" / "cl.md").read_text()
    assert "| emb | 400.5 ± 0.7 | 0.1500 ± 0.0000 | 2 |" in md and "mrr 0.237 (paper)" in md
    assert "CLEP rgcn · text offline · names only · d 8" in md and "fine-tune transe" in md
    assert "| emb | 0.5000 ± 0.0000 | 0.0200 ± 0.0000 |" in md  # the report table
    r = run("bench", pipe)
    assert r.exit_code == 0 and len(fake_clep.calls) == 4 and r.output.count("skipped (finished)") == 4


def test_clep_pipeline_bad_keys_are_one_line_errors(tmp_path):
    for body, expected in (('graph_encodr = "rgcn"', "unknown CLEP option(s): graph_encodr"),
                           ('finetune = { modle = "transe" }', "unknown link-prediction option(s): modle"),
                           ('graph_encoder = "gat"', "unknown graph encoder 'gat'")):
        p = write(tmp_path / "bad.toml", f'[bench]\ntask = "clep"\ndataset = "d"\n[[rows]]\nlabel = "a"\n{body}\n')
        r = run("bench", p)
        assert r.exit_code == 2 and expected in r.output and "[[rows]] #1 ('a')" in r.output, r.output


def test_shipped_clep_pipeline_resolves_within_budget(tmp_path, fake_clep, monkeypatch):
    p = load_pipeline(REPO / "pipelines" / "clep_fb15k237.toml")
    assert p.name == "clep_fb15k237" and p.task.name == "clep" and [r.key for r in p.rows] == \
        ["clep-embedding", "clep-rgcn"]
    assert p.metrics == ["test.mr", "test.mrr", "test.hits@1", "test.hits@10"]
    cells = {c.name: c for c in p.cells}
    emb = clep_call(cells["clep-embedding-seed0"].params)
    assert emb["values"]["num_threads"] == 1 and emb["values"]["text_encoder"] == "offline"
    # pre-training + two fine-tuning runs fit the ~8-minute cell budget (evaluations aside)
    assert emb["values"]["max_minutes"] + 2 * emb["finetune"]["max_minutes"] <= 6.0
    assert emb["finetune"]["dim"] == emb["values"]["dim"] and emb["finetune"]["num_threads"] == 1
    assert clep_call(cells["clep-rgcn-seed0"].params)["values"]["graph_encoder"] == "rgcn"
    assert clep_call(cells["clep-rgcn-seed0"].params)["values"]["max_minutes"] <= 6.5
    assert cells["clep-embedding-seed0"].row.anchor["test.mrr"] == 0.222
    monkeypatch.chdir(tmp_path)
    r = run("-q", "bench", REPO / "pipelines" / "clep_fb15k237.toml")
    assert r.exit_code == 0 and len(fake_clep.calls) == 2 and "2 cells: 2 done" in r.output


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("text, expected", [
    ('[bench]\nname = "x"\ntask = "align"\nseedz = [0]\n', "[bench]: unknown key 'seedz'"),
    ('[bench]\ntask = "align"\n[defaultz]\n', "top level: unknown key 'defaultz'"),
    ('[bench]\ntask = "nope"\n', "task must be one of align, linkpred"),
    ('[bench]\ntask = "align"\n[defaults]\nmodel.foo = 1\n[[rows]]\nlabel = "a"\n',
     "[defaults]: model parameters (foo) need a model name"),
    ('[bench]\ntask = "align"\n[[rows]]\nlabel = "a"\nmodle.name = "baseline"\n',
     "[[rows]] #1 ('a'): unknown key 'modle'"),
    ('[bench]\ntask = "align"\n[[rows]]\nlabel = "a"\nsearch.cls_k = 3\n',
     "[[rows]] #1 ('a'): unknown key search.cls_k"),
    ('[bench]\ntask = "align"\n[[rows]]\nlabel = "a"\nset = ["search.csls_k=x"]\n', "search.csls_k must be int"),
    ('[bench]\ntask = "align"\n[defaults]\nseed = 3\n[[rows]]\nlabel = "a"\n', "list the seeds in [bench] seeds"),
    ('[bench]\ntask = "align"\n[[rows]]\nlabel = "a"\n[[rows]]\nlabel = "a"\n', "row name 'a' repeats row #1"),
    ('[bench]\ntask = "align"\n[[rows]]\nsetting = "x"\n', "[[rows]] #1: every row needs a label"),
    ('[bench]\ntask = "align"\nseeds = 0\n[[rows]]\nlabel = "a"\n', "seeds must be a non-empty list"),
    ('[bench]\ntask = "align"\n', "[[rows]]: no rows"),
    ('[bench]\ntask = "linkpred"\ndataset = "d"\n[[rows]]\nlabel = "a"\nsamplr = "x"\n',
     "[[rows]] #1 ('a'): unknown link-prediction option(s): samplr"),
    ('[bench]\ntask = "linkpred"\ndataset = "d"\n[budget]\nepochz = 3\n[[rows]]\nlabel = "a"\n',
     "[budget]: unknown link-prediction option(s): epochz"),
    ('[bench]\ntask = "linkpred"\n[[rows]]\nlabel = "a"\n', "needs dataset ="),
    ('[bench\ntask = "align"\n', "invalid TOML"),
])
def test_bad_pipelines_are_one_line_naming_file_and_key(tmp_path, text, expected):
    pipe = tmp_path / "bad.toml"
    pipe.write_text(text)
    with pytest.raises(MmeaInputError) as e:
        load_pipeline(pipe)
    assert str(pipe) in e.value.message and expected in e.value.message, e.value.message
    r = run("bench", pipe)
    assert r.exit_code == 2 and r.output.startswith(f"error: {pipe}") and "Traceback" not in r.output


def test_missing_pipeline_file_exits_2(tmp_path):
    r = run("bench", tmp_path / "nope.toml")
    assert r.exit_code == 2 and f"pipeline file not found: {tmp_path / 'nope.toml'}" in r.output


# ------------------------------------------------------------------------------------- paired comparisons
COMPARE = """\
    [bench]
    name = "cmp"
    task = "align"
    out = "runs"
    seeds = [0, 1, 2]
    metrics = ["test.hits@1", "mrr"]

    [defaults]
    device = "cpu"

    [[rows]]
    label = "base"
    model.name = "baseline"

    [[rows]]
    label = "prop"
    model.name = "propagation"

    [[compare]]
    a = "prop"
    b = "base"

    [[compare]]
    a = "base"
    b = "prop"
    metrics = ["hits@1", "timings.total_s"]
"""


def test_compare_pairs_rows_by_seed_and_counts_wins(tmp_path, monkeypatch):
    import mmea.pipelines.align as align_job

    hits = {("baseline", 0): 0.5, ("baseline", 1): 0.6, ("baseline", 2): 0.8,
            ("propagation", 0): 0.6, ("propagation", 1): 0.55, ("propagation", 2): 0.9}
    fake = FakeAlign(hits=lambda cfg: hits[(cfg.model_name, cfg.seed)],
                     fail=lambda cfg: cfg.model_name == "propagation" and cfg.seed == 2)
    monkeypatch.setattr(align_job, "run_align", fake)
    monkeypatch.chdir(tmp_path)
    r = run("bench", write(tmp_path / "cmp.toml", COMPARE))
    assert r.exit_code == 1  # the failed cell; the comparison pairs the two seeds both rows finished
    assert "compare: prop vs base (2 seeds): hits@1 +0.025 -> A better on all" in r.output
    assert "compare: base vs prop (2 seeds): hits@1 -0.025, timings.total_s +0 -> A not better on all" in r.output
    res = json.loads((tmp_path / "results" / "cmp.json").read_text())
    first, second = res["comparisons"]
    h = first["metrics"]["test.hits@1"]  # seed 0: +0.1, seed 1: -0.05; seed 2 has no prop cell
    assert (first["a"], first["b"], h["n"], h["a_better_seeds"]) == ("prop", "base", 2, 1)
    assert h["diff_mean"] == pytest.approx(0.025) and h["diff_std"] == pytest.approx(0.10607, abs=1e-5)
    assert h["a_mean"] == pytest.approx(0.575) and h["b_mean"] == pytest.approx(0.55)
    assert first["a_better_all"] is True and list(first["metrics"]) == ["test.hits@1"]  # default: first metric
    t = second["metrics"]["timings.total_s"]  # equal times (1 + seed): a tie is not "better"
    assert t["diff_mean"] == 0 and t["a_better_seeds"] == 0 and second["a_better_all"] is False
    md = (tmp_path / "results" / "cmp.md").read_text()
    assert "| prop | base | 2 | +0.0250 ± 0.1061 | 1/2 seeds | — | — | yes |" in md
    assert "| base | prop | 2 | -0.0250 ± 0.1061 | 1/2 seeds | +0.0 ± 0.0 | 0/2 seeds | no |" in md
    assert "A better than B on every compared metric (by the mean over paired seeds) in 1 of 2 comparisons." in md


def test_lower_is_better_for_ranks_and_times():
    from mmea.bench import lower_is_better

    assert lower_is_better("test.mr") and lower_is_better("timings.total_s") and lower_is_better("mean_rank")
    assert not lower_is_better("test.mrr") and not lower_is_better("test.hits@1")


@pytest.mark.parametrize("entry,message", [
    ('a = "prop"\nb = "nope"', "b = 'nope' is not a row label; rows: base, prop"),
    ('a = "prop"\nb = "prop"', "a and b are the same row ('prop')"),
    ('a = "prop"\nb = "base"\nmetrics = []', "metrics must be a non-empty list of strings"),
    ('a = "prop"\nb = "base"\nwhy = 1', "unknown key 'why'; valid keys: a, b, metrics"),
])
def test_compare_entries_are_checked(tmp_path, entry, message):
    text = COMPARE.split("[[compare]]")[0] + "[[compare]]\n" + entry + "\n"
    with pytest.raises(MmeaInputError, match=re.escape(message)) as e:
        load_pipeline(write(tmp_path / "bad.toml", text))
    assert "[[compare]] #1" in str(e.value)


# ------------------------------------------------------------------------------------- shipped pipelines
@pytest.mark.parametrize("path", sorted((REPO / "pipelines").glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_pipeline_loads(path):
    """Every pipeline file resolves (rows, cells, [[compare]] labels) without any data present."""
    p = load_pipeline(path)
    assert p.cells and p.name == path.stem
    labels = {r.label for r in p.rows}
    assert all(c.a.label in labels and c.b.label in labels for c in p.comparisons)


@pytest.mark.parametrize("name", ["gaussian_fb15k_db15k", "gaussian_fb15k_yago15k", "gaussian_long_fb15k_db15k"])
def test_gaussian_pipelines_pair_each_gaussian_row_with_its_point_twin(name):
    """The twins differ in the model only (name, point flag): the issue's comparison; every Gaussian row is compared."""
    p = load_pipeline(REPO / "pipelines" / f"{name}.toml")
    cells = {(c.row.label, c.seed): c.config for c in p.cells}
    assert {c.a.label for c in p.comparisons} == {r.label for r in p.rows if r.label.startswith("gaussian")}
    for comp in p.comparisons:
        assert comp.metrics == ("test.hits@1", "test.mrr")
        for seed in p.seeds:
            a, b = cells[(comp.a.label, seed)], cells[(comp.b.label, seed)]
            assert (a["model"]["name"], b["model"]["name"]) == ("gaussian", "mmea-point")
            assert {**a, "model": None} == {**b, "model": None}
            drop = ("name", "point")
            assert {k: v for k, v in a["model"].items() if k not in drop} == \
                {k: v for k, v in b["model"].items() if k not in drop}


# ------------------------------------------------------------------------------- one task class, any job
def test_one_task_class_runs_fake_jobs_of_each_kind(tmp_path, fake_align, fake_linkpred, fake_clep, monkeypatch):
    """align, linkpred and clep cells all go through BenchTask -> JOBS[task].load_config / run."""
    import mmea.bench as bench
    from mmea.bench import BenchTask, run_bench
    from mmea.pipelines import JOBS

    classes = [v for v in vars(bench).values() if isinstance(v, type) and issubclass(v, BenchTask)]
    assert classes == [BenchTask]
    monkeypatch.chdir(tmp_path)
    one = {"align": 'model.name = "baseline"\nset = ["search.topk=3"]',
           "linkpred": 'dataset = "d"\nmodel = "distmult"\nset = ["linkpred.lr=0.5", "source.data_dir=dd"]',
           "clep": 'dataset = "d"\ngraph_encoder = "rgcn"\nset = ["proj_dim=4"]\nfinetune = { dim = 4 }'}
    for task, row in one.items():
        head = f'[bench]\nname = "{task}"\ntask = "{task}"\nseeds = [3]\nout = "runs/{task}"\n'
        if task != "align":
            head += f'dataset = "{row.split(chr(10))[0].split(" = ")[1].strip(chr(34))}"\n'
            row = row.split("\n", 1)[1]
        p = load_pipeline(write(tmp_path / f"{task}.toml", head + f'[[rows]]\nlabel = "r"\n{row}\n'))
        assert type(p.task) is BenchTask and p.task.job is JOBS[task]
        cfg = p.cells[0].params
        assert type(cfg) is JOBS[task].Config and p.cells[0].config == json.loads(
            json.dumps(JOBS[task].config_record(cfg)))
        report = run_bench(p, echo=lambda s: None)
        assert [r.status for r in report.results] == ["done"]
    assert fake_align.calls[0].search.topk == 3 and fake_align.calls[0].seed == 3
    lp = fake_linkpred.calls[0]
    assert (lp["model"], lp["seed"], lp["extra"]["lr"], lp["data_dir"], Path(lp["out"]).name) == \
        ("distmult", 3, 0.5, "dd", "r-distmult-seed3")
    cl = fake_clep.calls[0]
    assert cl["values"]["proj_dim"] == 4 and cl["values"]["seed"] == 3 and cl["finetune"] == {"dim": 4}


def test_a_bare_top_level_metric_name_is_not_read_under_test(tmp_path):
    """``peak_rss_gib`` lives at the top of metrics.json: naming it bare must not become ``test.peak_rss_gib``."""
    text = GRID.format(out=tmp_path / "runs").replace('metrics = ["test.hits@1", "mrr"]',
                                                      'metrics = ["test.hits@1", "mrr", "peak_rss_gib"]')
    p = load_pipeline(write(tmp_path / "grid.toml", text))
    assert p.metrics == ["test.hits@1", "test.hits@1_one_to_one", "test.mrr", "peak_rss_gib"]


def test_records_keep_the_scaling_paths_so_a_fresh_checkout_can_redraw_the_exponents(
        tmp_path, fake_align, monkeypatch):
    import shutil

    monkeypatch.chdir(tmp_path)
    text = GRID.format(out="runs").replace('metrics = ["test.hits@1", "mrr"]',
                                           'metrics = ["test.hits@1", "mrr"]\n    scaling = ["split.test", "timings.total_s"]')
    pipe = write(tmp_path / "p.toml", text)
    assert run("bench", pipe, "--seed", "0").exit_code == 0
    rec = next(c for c in json.loads((tmp_path / "results" / "grid.json").read_text())["cells"]
               if c["name"] == "base-mine-seed0")
    assert rec["metrics"]["split.test"] == 70  # a scaling path, not a table column: kept for the exponents
    shutil.rmtree(tmp_path / "runs")
    r = run("bench", pipe, "--table-only")
    assert r.exit_code == 0, r.output
    assert "- base: fewer than two sizes measured" in (tmp_path / "results" / "grid.md").read_text()


def test_dataset_filter_runs_only_that_datasets_cells(tmp_path, fake_align, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pipe = write(tmp_path / "p.toml", GRID.format(out="runs"))
    r = run("bench", pipe, "--seed", "0", "--dataset", "mine")
    assert r.exit_code == 0, r.output
    assert [(c.data.src, c.seed) for c in fake_align.calls] == [("kg1/", 0)]  # base on "mine"; prop has no "mine"
    r = run("bench", pipe, "--dataset", "dbp15k_fr_en", "--dry-run")
    assert r.exit_code != 0 and "--dataset dbp15k_fr_en: no cell of" in r.output and "mine" in r.output


def test_from_rows_read_another_benchs_cells_and_never_run_them(tmp_path, fake_align, monkeypatch):
    """A row with ``from = "grid"`` shows grid's finished cells of the same name (same config: same split and
    settings), never runs one, pairs with this bench's rows in [[compare]], and names its source in the table."""
    monkeypatch.chdir(tmp_path)
    grid = write(tmp_path / "grid.toml", GRID.format(out="runs"))
    assert run("bench", grid, "--seed", "0", "--seed", "1").exit_code == 0
    calls = len(fake_align.calls)
    other = GRID.format(out="runs2").replace('name = "grid"', 'name = "other"')
    other = other.replace('[[rows]]\n    label = "prop"', '[[rows]]\n    label = "mine"\n    datasets = ["dbp15k_ja_en"]'
                          '\n    model.name = "propagation"\n\n    [[rows]]\n    label = "prop"\n    from = "grid"', 1)
    other += '\n    [[compare]]\n    a = "mine"\n    b = "prop"\n'
    pipe = write(tmp_path / "other.toml", other)
    r = run("bench", pipe, "--dry-run")
    assert r.output.count("read from grid.json") == 2 and "a 'from' row is never run here" in r.output
    r = run("bench", pipe, "--only", "prop", "--force")  # chosen and forced: still never run
    assert r.exit_code == 0 and len(fake_align.calls) == calls
    res = json.loads((tmp_path / "results" / "other.json").read_text())
    cells = {c["name"]: c for c in res["cells"]}
    assert cells["prop-dbp15k_ja_en-seed1"]["status"] == "recorded" and cells["prop-dbp15k_ja_en-seed1"]["from"] == "grid"
    assert cells["prop-dbp15k_ja_en-seed2"]["status"] == "not run"
    prop = next(x for x in res["rows"] if x["row"] == "prop")
    assert prop["seeds"] == [0, 1] and prop["metrics"]["test.hits@1"]["mean"] == pytest.approx(0.55)
    md = (tmp_path / "results" / "other.md").read_text()
    assert "(rows prop: 2 cells not run here but read from results/grid.json" in md
    assert run("bench", pipe, "--only", "mine", "--seed", "0").exit_code == 0
    comp = json.loads((tmp_path / "results" / "other.json").read_text())["comparisons"]
    assert comp and comp[0]["a"] == "mine" and comp[0]["b"] == "prop"
    # a setting that differs from the source's makes its cells unusable: shown as not run, never run
    pipe.write_text(other.replace('from = "grid"', 'from = "grid"\n    data.valid_ratio = 0.2'))
    r = run("bench", pipe, "--dry-run")
    assert "read from grid.json" not in r.output and r.output.count("not finished in grid.json") == 3
    # errors name the row: a missing source json, a bad name
    pipe.write_text(other.replace('from = "grid"', 'from = "nowhere"'))
    r = run("bench", pipe, "--dry-run")
    assert r.exit_code == 2 and "row 'prop' reads its cells from results/nowhere.json" in r.output
    pipe.write_text(other.replace('from = "grid"', 'from = "other"'))
    r = run("bench", pipe, "--dry-run")
    assert r.exit_code == 2 and "from must name another bench" in r.output
