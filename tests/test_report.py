"""``mmea report``: the HTML page of a real demo run, its figures and tables, and the "not available" lines."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mmea.cli import main
from mmea.runs import RunDir
from mmea.report import (NOT_AVAILABLE, SECTION_TITLES, gold_ranks, history_series, hits_curve, precision_coverage,
                         write_report)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """Sections (h2 id -> title), their images, "not available" lines and table rows."""

    def __init__(self, text: str):
        super().__init__()
        self.section: str | None = None
        self.titles: dict[str, str] = {}
        self.images: dict[str, list[str]] = {}
        self.na: dict[str, list[str]] = {}
        self.rows: dict[str, list[list[str]]] = {}  # table class -> body rows (cell texts)
        self.external: list[str] = []
        self._stack: list[tuple[str, dict]] = []
        self._text: list[str] | None = None
        self._table: str | None = None
        self._row: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "link", "iframe") or (tag == "img" and not a.get("src", "").startswith("data:")):
            self.external.append(tag)
        if tag == "section":
            self.section = a.get("id")
        elif tag == "img":
            self.images.setdefault(self.section, []).append(a["src"])
        elif tag == "table":
            self._table = a.get("class", "")
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("h2", "td") or (tag == "p" and a.get("class") == "na"):
            self._text = []
        self._stack.append((tag, a))

    def handle_endtag(self, tag):
        open_tag, a = self._stack.pop() if self._stack else (tag, {})
        text = "".join(self._text).strip() if self._text is not None else ""
        if tag == "h2":
            self.titles[self.section] = text
            self._text = None
        elif tag == "p" and a.get("class") == "na":
            self.na.setdefault(self.section, []).append(text)
            self._text = None
        elif tag == "td" and self._row is not None:
            self._row.append(text)
            self._text = None
        elif tag == "tr" and self._row:
            self.rows.setdefault(self._table, []).append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        self._stack.pop()

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)


def parse(path: Path) -> Page:
    return Page(path.read_text(encoding="utf-8"))


def assert_pngs(srcs: list[str]) -> None:
    from PIL import Image

    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG_MAGIC)
        img = Image.open(io.BytesIO(data))
        img.verify()
        assert img.size[0] > 200 and img.size[1] > 100


# ------------------------------------------------------------------ a real demo run
@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    """SelfMEA, 4 epochs, on the demo pair, writing the top 50 candidates per source (~15 s)."""
    from mmea.pipelines.align_config import load_config
    from mmea.pipelines.align import run_align

    cfg = load_config(None, ["model.epochs=4", "search.topk=50"],
                      {"data": {"src": "demo_src", "tgt": "demo_tgt"}, "model": {"name": "selfmea"},
                       "features": {"name_encoder": "char-ngram"}, "device": "cpu"})
    out = tmp_path_factory.mktemp("report") / "run"
    with pytest.MonkeyPatch.context() as mp:  # the same cache as conftest's per-test MMEA_HOME
        mp.setenv("MMEA_HOME", str(tmp_path_factory.getbasetemp() / "mmea_home"))
        run_align(cfg, out=out, quiet=True)
    return out


def copy_run(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    (dest / "report.html").unlink(missing_ok=True)
    return dest


def test_report_of_a_selfmea_run_has_every_section_with_embedded_figures(demo_run, tmp_path):
    r = CliRunner().invoke(main, ["report", str(demo_run), "--out", str(tmp_path / "r.html")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert r.output.strip() == f"report: {tmp_path / 'r.html'}"  # nothing is unavailable for this run
    page = parse(tmp_path / "r.html")
    assert page.titles == {**SECTION_TITLES, "config": "Configuration"}
    assert not page.na and not page.external
    for key in ("training", "hits", "scores", "coverage", "modalities"):
        assert len(page.images.get(key, [])) == 1, key
    assert_pngs([s for imgs in page.images.values() for s in imgs])
    summary = {row[0]: row[1] for row in page.rows["kv"]}
    assert summary["dataset"] == "demo" and summary["model"] == "selfmea" and summary["seed"] == "0"
    assert summary["name encoder"].startswith("char-ngram") and "train 540" in summary["split (links)"]
    rec = json.loads((demo_run / "metrics.json").read_text())["test_by_method"]["src->tgt/reciprocal"]
    assert summary["test, reciprocal ranking (both sides' preferences)"].startswith(f"H@1 {rec['hits@1']:.4f}")
    errors = page.rows["errors"]
    assert 1 <= len(errors) <= 20 and [row[0] for row in errors] == [str(i) for i in range(1, len(errors) + 1)]
    assert all(row[3] != "unknown" for row in errors)  # the gold target's name, from the top-50 lists
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "computed from <code>test_ranks.npy</code>" in text and "exact for every k" in text


def test_test_ranks_match_the_metrics_and_the_alignment_csv(demo_run):
    from mmea.evaluation import ranking_metrics
    from mmea.report import load_run

    ranks = np.load(demo_run / "test_ranks.npy")
    m = json.loads((demo_run / "metrics.json").read_text())
    assert ranks.dtype == np.int32 and len(ranks) == m["split"]["test"] and ranks.min() >= 1
    got = ranking_metrics(ranks)
    assert all(got[k] == pytest.approx(m["test"][k]) for k in ("hits@1", "hits@5", "hits@10", "mr", "mrr"))
    run = load_run(demo_run)
    csv_ranks, k = gold_ranks(run.alignment)  # the same ranking, cut at the 50 candidates written per source
    assert k == 50 and np.allclose(hits_curve(csv_ranks, 50)[1], hits_curve(run.test_ranks, 50)[1])


def test_hits_curve_falls_back_to_the_csv_without_test_ranks(demo_run, tmp_path):
    run = copy_run(demo_run, tmp_path / "run")
    (run / "test_ranks.npy").unlink()
    path, _ = write_report(run)
    assert "exact for k = 1..50" in path.read_text(encoding="utf-8")


def test_top1_alignment_plots_the_metrics_points_and_names_gold_targets_from_the_run(demo_run, tmp_path,
                                                                                    monkeypatch):
    import mmea.data.catalog

    def no_reload(*a, **k):
        raise AssertionError("mmea report must not reload the dataset")

    monkeypatch.setattr(mmea.data.catalog, "load_pair_task", no_reload)
    run = copy_run(demo_run, tmp_path / "run")
    (run / "test_ranks.npy").unlink()  # as runs made before test_ranks.npy existed
    df = pd.read_csv(run / "alignment.csv", keep_default_na=False, dtype=str)
    df[df["rank"] == "1"].to_csv(run / "alignment.csv", index=False)  # what the default --topk 1 writes
    RunDir(run).mark_complete()  # re-seal the edited run (check_complete refuses an edited alignment.csv)
    path, sections = write_report(run)
    assert path == run / "report.html" and all(s.available for s in sections)
    page = parse(path)
    assert "only the top-1 target per source" in path.read_text(encoding="utf-8")
    assert_pngs(page.images["hits"])
    errors = page.rows["errors"]
    assert errors and all(row[3] != "unknown" and row[4] == "> 1" for row in errors)  # from gold_targets.csv
    (run / "gold_targets.csv").unlink()  # as runs written before the file existed: said, not reloaded
    path, sections = write_report(run)
    assert "the run has no gold_targets.csv" in path.read_text(encoding="utf-8")
    assert all(row[3] == "unknown" for row in parse(path).rows["errors"])


def test_run_without_calibration_gold_or_training_says_not_available(demo_run, tmp_path):
    from mmea.calibration import write_no_calibration

    run = copy_run(demo_run, tmp_path / "run")
    write_no_calibration(run, "the run has no validation links")
    (run / "valid_scores.npz").unlink()
    (run / "test_ranks.npy").unlink()  # a run without gold test links writes none
    df = pd.read_csv(run / "alignment.csv", keep_default_na=False, dtype=str)
    df["gold"] = ""
    df.to_csv(run / "alignment.csv", index=False)
    m = json.loads((run / "metrics.json").read_text())
    m["test"] = {}
    m["model"] = "baseline"
    m["model_info"] = {"name_encoder": m["model_info"]["name_encoder"]}
    (run / "metrics.json").write_text(json.dumps(m))
    RunDir(run).mark_complete()  # re-seal the edited run (check_complete refuses an edited alignment.csv)
    r = CliRunner().invoke(main, ["report", str(run)], catch_exceptions=False)
    assert r.exit_code == 0 and "not available" in r.output
    page = parse(run / "report.html")
    assert page.titles == {**SECTION_TITLES, "config": "Configuration"}  # never silently missing
    for key in ("training", "hits", "scores", "coverage", "modalities", "errors"):
        assert page.na.get(key) and page.na[key][0].startswith(NOT_AVAILABLE + ":"), key
    assert "validation links" in page.na["coverage"][0]
    assert "no gold" in page.na["errors"][0] and "no gold" in page.na["hits"][0]
    assert "baseline" in page.na["training"][0] and "baseline" in page.na["modalities"][0]
    assert_pngs(page.images["scores"])  # the unlabelled score histogram remains
    assert "errors" not in page.rows


def test_gaussian_history_and_variances(demo_run, tmp_path):
    run = copy_run(demo_run, tmp_path / "run")
    m = json.loads((run / "metrics.json").read_text())
    m["model"] = "gaussian"
    m["model_info"] = {
        "history": [{"round": r, "stage": 1 + (r > 2), "losses": {"rel": 1.0 / r, "vis": None if r == 1 else 0.5},
                     "valid": {"hits@1": 0.1 * r, "mrr": 0.15 * r}} for r in (1, 2, 3, 4)],
        "variances": {"common": {"relations": {"with": 0.7, "without": 1.4, "n_with": 10, "n_without": 2},
                                 "images": {"with": 0.6, "without": None, "n_with": 12, "n_without": 0}},
                      "common_by_degree": {"0-0": 1.2, "1-2": 0.8}}}
    (run / "metrics.json").write_text(json.dumps(m))
    path, sections = write_report(run, tmp_path / "g.html")
    page = parse(path)
    assert_pngs(page.images["training"] + page.images["modalities"])
    assert len(page.images["modalities"]) == 2  # by modality coverage and by relational degree
    keys = {row[0]: row[1] for row in page.rows["num"] if len(row) == 2}
    assert keys["variances.common.relations.without"] == "1.4000" and keys["variances.common_by_degree.1-2"] == "0.8000"
    assert "round" in path.read_text(encoding="utf-8")


def test_missing_run_dir_or_metrics_is_exit_2_with_one_line(tmp_path):
    r = CliRunner().invoke(main, ["report", str(tmp_path / "nope")])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and r.output.startswith("error: ")
    assert "run directory not found" in r.output
    (tmp_path / "half").mkdir()
    r = CliRunner().invoke(main, ["report", str(tmp_path / "half")])
    assert r.exit_code == 2 and "metrics.json" in r.output and "Traceback" not in r.output


def test_cli_start_up_does_not_import_matplotlib_or_pandas():
    code = "import sys, mmea.cli; assert not {'matplotlib', 'pandas'} & set(sys.modules), sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------ the pure steps
def test_gold_ranks_and_hits_curve():
    df = pd.DataFrame({"src_id": ["a", "a", "a", "b", "b", "b", "c", "c", "c", "d"],
                       "rank": pd.array([1, 2, 3, 1, 2, 3, 1, 2, 3, 1], dtype="Int64"),
                       "gold": pd.array([False, True, False, True, False, False, False, False, False, None],
                                        dtype="boolean")})
    ranks, k = gold_ranks(df)
    assert k == 3 and ranks.tolist() == [2.0, 1.0, np.inf]  # d has no known gold: not judged
    ks, h = hits_curve(ranks, 3)
    assert ks.tolist() == [1, 2, 3] and np.allclose(h, [1 / 3, 2 / 3, 2 / 3])


def test_precision_coverage_sorts_by_estimate_then_feature():
    pred = pd.DataFrame({"est_precision": [0.5, 0.9, 0.9, np.nan], "margin": [0.1, 0.2, 0.3, 0.0],
                         "gold": pd.array([True, False, True, None], dtype="boolean")})
    pc = precision_coverage(pred, num_sources=5)
    assert np.allclose(pc["coverage"], [0.2, 0.4, 0.6, 0.8])
    assert np.allclose(pc["estimated"][:3], [0.9, 0.9, (0.9 + 0.9 + 0.5) / 3])
    assert np.allclose(pc["measured"], [1.0, 0.5, 2 / 3, 2 / 3])  # order: margin 0.3, 0.2, then 0.5's pair


def test_history_series_flattens_nested_losses():
    hist = [{"epoch": 0, "loss": None, "select_hits@1": 0.5, "pool": 10},
            {"epoch": 1, "loss": 2.0, "select_hits@1": 0.6, "pool": 10, "losses": {"nca": 1.5}}]
    xlabel, x, series = history_series(hist)
    assert xlabel == "epoch" and x.tolist() == [0, 1]
    assert set(series) == {"loss", "select_hits@1", "pool", "losses.nca"}
    assert np.isnan(series["loss"][0]) and series["losses.nca"][1] == 1.5
