"""Confidence calibration (isotonic, validation links only) and `mmea export` in every format."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mmea.calibration import (CALIBRATION_FILE, VALID_SCORES_FILE, Calibration, ValidScores, calibrated_alignment,
                              fit_calibration, load_calibration, score_valid_sources, select_pairs,
                              write_calibration, write_no_calibration)
from mmea.cli import main
from mmea.data.graph import AlignmentTask, KnowledgeGraph
from mmea.errors import MmeaInputError
from mmea.export import OWL_SAME_AS, alignment_frame, nt_iri, write_alignment
from mmea.pipelines.align import calibrate_run
from mmea.runs import RunDir
from mmea.search.matching import align

# an N-Triples line of this export: <IRI> <IRI> <IRI> .  (IRIREF without the forbidden characters)
IRI = r"<([^\x00-\x20<>\"{}|^`\\]+)>"
NT_LINE = re.compile(rf"^{IRI} {IRI} {IRI} \.$")


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def parse_ntriples(text: str) -> list[tuple[str, str, str]]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = NT_LINE.match(line)
        assert m, f"not an N-Triples line: {line!r}"
        out.append(m.groups())
    return out


# -- the isotonic curve ----------------------------------------------------------------

def test_plain_isotonic_matches_sklearn_and_pav_by_hand():
    from sklearn.isotonic import IsotonicRegression

    cal = fit_calibration([1, 2, 3, 4], [0, 1, 0, 1], prior=0)  # PAV pools the middle pair
    np.testing.assert_allclose(cal.predict([1, 2, 3, 4]), [0, 0.5, 0.5, 1])
    np.testing.assert_allclose(cal.predict([0, 9]), [0, 1])  # clipped outside the fitted range
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    c = rng.random(300) < 1 / (1 + np.exp(-2 * x))
    ref = IsotonicRegression(out_of_bounds="clip").fit(x, c.astype(float))
    grid = np.linspace(-4, 4, 501)
    np.testing.assert_allclose(fit_calibration(x, c, prior=0).predict(grid), ref.predict(grid), atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_curve_is_monotone_by_construction(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    x = np.round(rng.normal(size=n), 2)  # ties included
    c = rng.random(n) < rng.random()  # often no relation to x at all
    for prior in (0.0, 1.0, 5.0):
        cal = fit_calibration(x, c, prior=prior)
        assert (np.diff(cal.x) > 0).all() and (np.diff(cal.y) >= 0).all()
        assert 0 <= cal.y.min() and cal.y.max() <= 1
        p = cal.predict(np.sort(rng.normal(scale=3, size=1000)))
        assert (np.diff(p) >= 0).all()


def test_smoothing_keeps_small_perfect_blocks_below_one():
    x = np.arange(200, dtype=float)
    c = x >= 100  # a clean step: 100 wrong, then 100 right
    cal = fit_calibration(x, c)
    np.testing.assert_allclose(cal.predict([0, 99, 100, 199]), [1 / 102, 1 / 102, 101 / 102, 101 / 102])
    assert cal.threshold(0.9) == pytest.approx(99 + (0.9 - 1 / 102) / (100 / 102))
    assert cal.threshold(0.001) == float("-inf") and cal.threshold(0.999) == float("inf")
    assert fit_calibration(x[150:], c[150:]).predict([180]) == pytest.approx(51 / 52)
    assert cal.n_valid == 200 and cal.n_correct == 100
    rel = cal.reliability
    assert rel and rel[0]["predictions"].startswith("out-of-fold") and sum(r["n"] for r in rel) == 200
    assert np.isnan(cal.predict([np.nan]))[0]


def test_calibration_json_round_trip_and_validation(tmp_path):
    cal = fit_calibration(np.arange(50.0), np.arange(50) % 3 != 0, feature_name="score")
    back = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    np.testing.assert_array_equal(back.x, cal.x)
    assert back.feature == "score" and back.n_valid == 50 and back.prior == 1.0
    for bad in ({"x": [0, 1], "y": [0.9, 0.1]}, {"x": [1, 0], "y": [0.1, 0.9]}, {"x": [0, 1], "y": [0.1, 1.5]}):
        with pytest.raises(MmeaInputError, match="increasing"):
            Calibration.from_dict({**cal.to_dict(), **bad})
    with pytest.raises(MmeaInputError, match="malformed"):
        Calibration.from_dict({"available": True, "x": [0]})
    with pytest.raises(MmeaInputError, match="feature"):
        fit_calibration([1.0], [True], feature_name="mutual")
    off = Calibration.from_dict(Calibration.unavailable("no valid").to_dict())
    assert not off.available
    with pytest.raises(MmeaInputError, match="no valid"):
        off.predict([1.0])


# -- ranking the validation sources ---------------------------------------------------------

def kg(name: str, n: int, uris=None) -> KnowledgeGraph:
    ids = [f"{name}{i}" for i in range(n)]
    uris = uris or [f"http://{name}.example.org/e/{i}" for i in range(n)]
    return KnowledgeGraph(name, ids, uris, [f"{name} {i}" for i in range(n)])


def toy(n=120, noise=0.8, seed=0, uris=None):
    rng = np.random.default_rng(seed)
    src = rng.standard_normal((n, 16)).astype(np.float32)
    perm = rng.permutation(n)
    tgt = np.empty_like(src)
    tgt[perm] = src + noise * rng.standard_normal((n, 16)).astype(np.float32)
    links = np.stack([np.arange(n), perm], 1)
    task = AlignmentTask("toy", kg("a", n, uris), kg("b", n), links[:20], links[20:60], links[60:])
    return task, src, tgt


def test_valid_sources_are_ranked_with_their_gold_among_the_candidates():
    task, src, tgt = toy()
    rows, cand = task.test[:, 0], np.unique(task.test[:, 1])
    al = align(src, tgt, rows, cand, topk=2, method="cos")
    vs = score_valid_sources(src, tgt, task.valid, rows, cand, method="cos", cand_r_tgt=al.result.r_tgt)
    assert len(vs) == 40 and vs.num_candidates == len(cand) + 40
    # brute force: cosine of each valid source against test targets + valid targets
    vcand = np.concatenate([cand, task.valid[:, 1]])
    s = src / np.linalg.norm(src, axis=1, keepdims=True)
    t = tgt / np.linalg.norm(tgt, axis=1, keepdims=True)
    S = s[vs.src] @ t[vcand].T
    np.testing.assert_allclose(vs.score1, S.max(1), atol=1e-5)
    np.testing.assert_allclose(vs.score2, np.sort(S, 1)[:, -2], atol=1e-5)
    gold = dict(task.valid.tolist())
    np.testing.assert_array_equal(vs.correct, [gold[a] == b for a, b in zip(vs.src, vs.top1)])
    assert 0.2 < vs.correct.mean() < 1.0  # a real mix to calibrate on
    assert (vs.feature("margin") >= 0).all()
    # CSLS: the candidates keep the radii the test queries gave them
    al_c = align(src, tgt, rows, cand, topk=2)
    a = score_valid_sources(src, tgt, task.valid, rows, cand, cand_r_tgt=al_c.result.r_tgt)
    b = score_valid_sources(src, tgt, task.valid, rows, cand)
    np.testing.assert_allclose(a.score1, b.score1, atol=1e-5)


def test_calibrate_run_without_valid_links_says_so(tmp_path):
    task, src, tgt = toy()
    task = AlignmentTask("toy", task.source, task.target, task.train, task.valid[:0], task.test)
    rows, cand = task.test[:, 0], np.unique(task.test[:, 1])
    al = align(src, tgt, rows, cand, topk=2)
    from mmea.config import SearchConfig

    out = calibrate_run(tmp_path, task, src, tgt, rows, cand, al, SearchConfig(), "cpu")
    assert out["available"] is False and "validation" in out["reason"]
    saved = json.loads((tmp_path / CALIBRATION_FILE).read_text())
    assert saved["available"] is False and "seed" in saved["reason"]


# -- a tiny run directory, exported in every format ----------------------------------------------

def make_run(path, *, topk=3, matcher="none", uris=None, calibrate=True):
    task, src, tgt = toy(uris=uris)
    rows, cand = task.test[:, 0], np.unique(task.test[:, 1])
    al = align(src, tgt, rows, cand, topk=topk, matcher=matcher)
    path.mkdir(parents=True, exist_ok=True)
    write_alignment(alignment_frame(task, al, topk=topk, gold=task.test), path / "alignment.csv")
    if calibrate:
        write_calibration(path, score_valid_sources(src, tgt, task.valid, rows, cand, cand_r_tgt=al.result.r_tgt))
    RunDir(path).mark_complete()  # a finished run: mmea export refuses one without its completion record
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("tiny") / "run")


def test_run_files_and_est_precision_column(run_dir):
    cal = load_calibration(run_dir)
    assert cal.available and cal.feature == "margin" and cal.n_valid == 40
    assert set(ValidScores.load(run_dir / VALID_SCORES_FILE).src.tolist()) == set(range(20, 60))
    df, _ = calibrated_alignment(run_dir)
    first = df[df["_pos"] == 0]
    np.testing.assert_allclose(first["est_precision"], cal.predict(first["margin"]))
    assert df.loc[df["_pos"] > 0, "est_precision"].isna().all()
    # a higher margin never gets a lower estimate
    o = np.argsort(first["margin"].to_numpy())
    assert (np.diff(first["est_precision"].to_numpy()[o]) >= 0).all()


def test_export_csv_filters_by_min_precision(run_dir, tmp_path):
    df, cal = calibrated_alignment(run_dir)
    p = float(np.median(cal.y))
    r = cli("export", run_dir, "--min-precision", p, "--out", tmp_path / "a.csv")
    assert r.exit_code == 0, r.output
    got = pd.read_csv(tmp_path / "a.csv")
    first = df[df["_pos"] == 0]
    assert len(got) == (first["est_precision"] >= p).sum() > 0
    assert (got["est_precision"] >= p).all() and got["src_id"].is_unique
    assert set(got.columns) >= {"src_id", "tgt_id", "tgt_uri", "score", "margin", "gold", "est_precision"}
    assert f"exported {len(got)} of 60 sources" in r.output and "test precision of the exported pairs" in r.output
    m = re.search(r"test precision of the exported pairs: ([0-9.]+) \((\d+) of (\d+)", r.output)
    assert float(m.group(1)) == pytest.approx(got["gold"].mean(), abs=1e-4)
    # no --min-precision: every source's predicted pair; default path in the run directory
    r = cli("export", run_dir)
    assert r.exit_code == 0 and len(pd.read_csv(run_dir / "export.csv")) == 60
    # --topk 2: each kept source brings one alternative, without an estimate
    r = cli("export", run_dir, "--min-precision", p, "--topk", 2, "--out", tmp_path / "b.csv")
    alt = pd.read_csv(tmp_path / "b.csv")
    assert r.exit_code == 0 and len(alt) == 2 * len(got) and alt["est_precision"].isna().sum() == len(got)


def test_export_jsonl_parses_back(run_dir, tmp_path):
    r = cli("export", run_dir, "--min-precision", 0.5, "--format", "jsonl", "--out", tmp_path / "a.jsonl")
    assert r.exit_code == 0, r.output
    recs = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text(encoding="utf-8").splitlines()]
    csv_ = cli("export", run_dir, "--min-precision", 0.5, "--out", tmp_path / "a.csv")
    assert csv_.exit_code == 0
    ref = pd.read_csv(tmp_path / "a.csv")
    assert len(recs) == len(ref) > 0
    assert [r_["src_id"] for r_ in recs] == ref["src_id"].tolist()
    assert all(isinstance(r_["gold"], bool) and isinstance(r_["rank"], int) and r_["est_precision"] >= 0.5
               for r_ in recs)
    np.testing.assert_allclose([r_["score"] for r_ in recs], ref["score"], rtol=1e-6)


def test_export_ntriples_is_valid_and_escapes_iris(tmp_path):
    uris = [f"http://a.example.org/e/{i}" for i in range(120)]
    uris[60] = 'http://a.example.org/e/with space"and{braces}'  # test sources are 60..119
    uris[61] = "Q61"  # no URI: a bare id
    uris[62] = "http://a.example.org/東京"  # non-ASCII is fine in an IRI
    run = make_run(tmp_path / "run", uris=uris)
    r = cli("export", run, "--format", "nt", "--out", tmp_path / "a.nt")
    assert r.exit_code == 0, r.output
    triples = parse_ntriples((tmp_path / "a.nt").read_text(encoding="utf-8"))
    assert len(triples) == 59 and {p for _, p, _ in triples} == {OWL_SAME_AS}
    subjects = {s for s, _, _ in triples}
    assert "http://a.example.org/e/with%20space%22and%7Bbraces%7D" in subjects
    assert "http://a.example.org/東京" in subjects
    assert "skipped 1 pairs" in r.output and "'Q61'" in r.output and "--src-base-iri" in r.output
    assert "exported 59 of 60 sources" in r.output
    r = cli("export", run, "--format", "nt", "--src-base-iri", "http://example.org/kg1/", "--out", tmp_path / "b.nt")
    triples = parse_ntriples((tmp_path / "b.nt").read_text(encoding="utf-8"))
    assert r.exit_code == 0 and len(triples) == 60 and "http://example.org/kg1/Q61" in {s for s, _, _ in triples}
    assert nt_iri("/m/0abc def", "http://rdf.freebase.com/ns") == "http://rdf.freebase.com/ns/m/0abc%20def"
    assert nt_iri("", "http://x/") is None and nt_iri("x", None) is None
    r = cli("export", run, "--format", "nt", "--src-base-iri", "not an iri")
    assert r.exit_code == 2 and "base IRI" in r.output


def test_export_with_a_matcher_uses_the_matched_pairs(tmp_path):
    run = make_run(tmp_path / "run", matcher="mutual")
    df, cal = calibrated_alignment(run)
    n_matched = int(df["matched"].fillna(False).astype(bool).sum())
    assert 0 < n_matched < 60 and int(df["_predicted"].sum()) == n_matched
    r = cli("export", run, "--out", tmp_path / "m.csv")
    got = pd.read_csv(tmp_path / "m.csv")
    assert r.exit_code == 0 and len(got) == n_matched and got["matched"].all()


def test_export_with_another_feature_refits(run_dir, tmp_path):
    cal = load_calibration(run_dir, "score")
    assert cal.feature == "score" and cal.n_valid == 40
    r = cli("export", run_dir, "--feature", "score", "--min-precision", 0.5, "--out", tmp_path / "s.csv")
    got = pd.read_csv(tmp_path / "s.csv")
    assert r.exit_code == 0 and "isotonic on the score" in r.output
    np.testing.assert_allclose(got["est_precision"], cal.predict(got["score"]))


@pytest.mark.parametrize("args, message", [
    (["--min-precision", 0], "--min-precision must be in (0, 1]"),
    (["--min-precision", 1.5], "--min-precision must be in (0, 1]"),
    (["--topk", 0], "--topk must be >= 1"),
    (["--format", "nt", "--topk", 2], "one target per source"),
])
def test_export_bad_options(run_dir, args, message):
    r = cli("export", run_dir, *args)
    assert r.exit_code == 2 and message in r.output


def test_export_bad_run_directories(tmp_path, run_dir):
    r = cli("export", tmp_path / "nope")
    assert r.exit_code == 2 and "nope: run directory not found" in r.output
    r = cli("export", tmp_path)  # no completion record (mmea.runs.check_complete)
    assert r.exit_code == 2 and "is not a finished run" in r.output
    old = make_run(tmp_path / "old", calibrate=False)  # a run from before calibration existed
    r = cli("export", old, "--min-precision", 0.9)
    assert r.exit_code == 2 and "calibration.json: file not found" in r.output
    r = cli("export", old)
    assert r.exit_code == 0 and "no calibration" in r.output
    assert pd.read_csv(old / "export.csv")["est_precision"].isna().all()
    (old / CALIBRATION_FILE).write_text("{not json", encoding="utf-8")
    r = cli("export", old)
    assert r.exit_code == 2 and "calibration.json: not valid JSON" in r.output
    write_no_calibration(old, "the run has no validation links (no gold seeds: --seed-ratio 0)")
    r = cli("export", old, "--min-precision", 0.9)
    assert r.exit_code == 2 and "no calibration" in r.output and "--seed-ratio 0.3" in r.output
    with pytest.raises(MmeaInputError, match="must be in"):
        select_pairs(calibrated_alignment(run_dir)[0], 0.0)


# -- the demo pair end to end ------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    from mmea.config import RunConfig
    from mmea.pipelines.align import run_align

    out = tmp_path_factory.mktemp("demo") / "run"
    res = run_align(RunConfig(device="cpu", model={"name": "baseline"}), out=out, quiet=True)  # demo_src / demo_tgt
    return out, res["metrics"]


def test_demo_run_writes_a_calibration(demo_run):
    out, metrics = demo_run
    cal = json.loads((out / CALIBRATION_FILE).read_text())
    assert cal["available"] and cal["feature"] == "margin" and cal["n_valid"] == metrics["split"]["valid"] == 60
    assert cal["num_candidates"] == 1400 + 60  # the test targets plus the validation targets
    assert metrics["calibration"]["n_valid"] == 60 and "calibrate_s" in metrics["timings"]
    assert (out / VALID_SCORES_FILE).is_file()
    # the validation sources are ranked as hard as the test sources
    assert abs(cal["valid_hits@1"] - metrics["test"]["hits@1"]) < 0.15


def test_demo_export_meets_its_precision_target(demo_run, tmp_path):
    out, metrics = demo_run
    r = cli("export", out, "--min-precision", 0.9, "--json", "--out", tmp_path / "p.csv")
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    # measured (seed 0): coverage 0.445, test precision 0.923 from 60 validation links;
    # the margin tolerates the coarseness of so few links
    assert s["coverage"] > 0.3 and s["test_precision"] >= 0.88
    assert s["test_precision"] > metrics["test"]["hits@1"] + 0.15  # far above the unfiltered precision
    assert s["exported_pairs"] == len(pd.read_csv(tmp_path / "p.csv"))
    assert s["calibration"]["n_valid"] == 60


# -- issue 19, item 10: bad values and unwritable files are named ------------------------------

def _edited_run(src, dest, edit):
    """A copy of run ``src`` whose alignment.csv went through ``edit(lines)``, recorded as finished."""
    import shutil

    from mmea.runs import RunDir

    shutil.copytree(src, dest)
    p = dest / "alignment.csv"
    lines = p.read_text(encoding="utf-8").splitlines(keepends=True)
    p.write_text("".join(edit(lines)), encoding="utf-8")
    RunDir(dest).mark_complete()  # recorded as written, so the reader (not the checksum) must judge it
    return dest


@pytest.mark.parametrize("column, value, reason", [
    ("margin", "abc", "margin 'abc' is not a number"),
    ("csls", "1e999", "csls '1e999' is not finite"),
    ("gold", "maybe", "column 'gold': 'maybe' is not a boolean"),
    ("rank", "first", "rank 'first' is not an integer >= 1"),
])
def test_export_names_the_line_of_a_bad_value(run_dir, tmp_path, column, value, reason):
    def edit(lines):
        header = lines[0].rstrip("\n").split(",")
        row = lines[4].rstrip("\n").split(",")  # the toy run's names hold no comma
        row[header.index(column)] = value
        lines[4] = ",".join(row) + "\n"
        return lines

    run = _edited_run(run_dir, tmp_path / "run", edit)
    r = cli("export", run, "--out", tmp_path / "x.csv")
    assert r.exit_code == 2, r.output  # was: exit 1 with a bare ValueError
    assert f"{run / 'alignment.csv'}, line 5: {reason}" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "x.csv").exists()


def test_export_refuses_a_truncated_last_line(run_dir, tmp_path):
    run = _edited_run(run_dir, tmp_path / "run", lambda lines: lines[:-1] + [lines[-1][:7]])
    r = cli("export", run)
    n = len((run / "alignment.csv").read_text().splitlines())
    assert r.exit_code == 2 and f"line {n}: the last line has no newline" in r.output


def test_export_unwritable_out_names_the_file(run_dir, tmp_path, monkeypatch):
    r = cli("export", run_dir, "--out", tmp_path)
    assert r.exit_code == 2 and f"{tmp_path}: cannot write the export (it is a directory)" in r.output
    (tmp_path / "file").write_text("x")
    r = cli("export", run_dir, "--out", tmp_path / "file" / "a.csv")
    assert r.exit_code == 2 and f"{tmp_path / 'file' / 'a.csv'}: cannot write the export" in r.output
    import errno

    import mmea.export

    def fail(code):
        def write(df, dest):
            with open(dest, "w") as fh:
                fh.write("half")  # a partial file, which must not stay behind
            raise OSError(code, os.strerror(code), str(dest))
        return write

    monkeypatch.setattr(mmea.export, "write_csv", fail(errno.EACCES))
    r = cli("export", run_dir, "--out", tmp_path / "p.csv")
    assert r.exit_code == 2 and f"{tmp_path / 'p.csv'}: cannot write the export (permission denied)" in r.output
    monkeypatch.setattr(mmea.export, "write_csv", fail(errno.ENOSPC))
    r = cli("export", run_dir, "--out", tmp_path / "full.csv")
    assert r.exit_code == 1 and f"{tmp_path / 'full.csv'}: cannot write the export (No space left" in r.output
    assert not list(tmp_path.glob("*.csv")) and not list(tmp_path.glob(".*tmp*"))  # written atomically


def test_export_unreadable_inputs_are_named(run_dir, tmp_path, monkeypatch):
    import shutil
    from pathlib import Path

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    real = Path.read_bytes

    def denied(self):
        if self.name == "alignment.csv" and self.parent == run:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    r = cli("export", run)
    assert r.exit_code == 2 and f"{run / 'alignment.csv'}: cannot be read (permission denied)" in r.output
    monkeypatch.undo()
    (run / CALIBRATION_FILE).unlink()
    (run / CALIBRATION_FILE).mkdir()
    r = cli("export", run)
    assert r.exit_code == 2 and f"{run / CALIBRATION_FILE}: is a directory" in r.output


def test_export_run_is_the_cli_without_printing(run_dir, tmp_path):
    from mmea.export import export_run

    s = export_run(run_dir, out=tmp_path / "a.csv", min_precision=0.5)
    r = cli("export", run_dir, "--out", tmp_path / "b.csv", "--min-precision", 0.5, "--json")
    assert r.exit_code == 0
    cli_s = json.loads(r.stdout)
    assert {k: v for k, v in s.items() if k != "out"} == {k: v for k, v in cli_s.items() if k != "out"}
    assert s["read"]["header"] and s["read"]["rows"] == 180 and s["warnings"] == []
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


# -- the variance in the calibration (issue 17) -----------------------------------------------

def _valid_with_uncertainty(n=400, informative=True, seed=0):
    """Validation scores whose correctness depends on the margin and (if ``informative``) on the uncertainty
    too (low uncertainty: right)."""
    rng = np.random.default_rng(seed)
    margin = rng.uniform(0, 1, n)
    u = np.exp(rng.normal(-3, 1, n))
    logit = 2.0 * (margin - 0.5) - (2.0 * (np.log(u) + 3) if informative else 0.0)
    correct = rng.random(n) < 1 / (1 + np.exp(-logit))
    s1 = margin + 1.0
    return ValidScores(np.arange(n), np.arange(n), np.arange(n) + 1, s1.astype(np.float32),
                       np.ones(n, np.float32), correct, "csls", 1000, u.astype(np.float32))


def test_choose_variance_uses_it_only_when_it_adds_information():
    from mmea.calibration import MIN_AUROC_GAIN, choose_variance

    good = _valid_with_uncertainty()
    d = choose_variance(good.feature("margin"), good.uncertainty, good.correct)
    assert d["used"] and d["auroc_combined_oof"] >= d["auroc_margin"] + MIN_AUROC_GAIN
    assert d["fitted_on"] == "valid links" and d["n"] == 400 and "margin and variance" in d["reason"]
    noise = _valid_with_uncertainty(informative=False)
    d = choose_variance(noise.feature("margin"), noise.uncertainty, noise.correct)
    assert not d["used"] and d["auroc_combined_oof"] < d["auroc_margin"] + MIN_AUROC_GAIN
    # a constant variance (the point twin) never enters; too few links: no test, the margin alone
    d = choose_variance(noise.feature("margin"), np.full(400, 0.05), noise.correct)
    # (out of fold: each fold's own intercept and margin weight, so the pooled ranking is the margin's up to noise)
    assert not d["used"] and d["auroc_combined_oof"] == pytest.approx(d["auroc_margin"], abs=0.02)
    d = choose_variance(good.feature("margin")[:6], good.uncertainty[:6], good.correct[:6])
    assert not d["used"] and d["auroc_combined_oof"] is None and "too few" in d["reason"]


def test_a_calibration_on_margin_and_variance_round_trips_and_reads_both_columns(tmp_path):
    from mmea.calibration import COMBINED, margin_variance_score, refit_calibration

    scores = _valid_with_uncertainty()
    cal = write_calibration(tmp_path, scores)
    assert cal.feature == COMBINED and cal.variance["used"] and cal.weights[2] < 0  # wider: less likely right
    data = json.loads((tmp_path / CALIBRATION_FILE).read_text())
    assert data["feature"] == COMBINED and set(data["weights"]) == {"const", "margin", "log_uncertainty"}
    back = load_calibration(tmp_path)
    np.testing.assert_allclose(back.weights, cal.weights)
    assert back.columns() == ["margin", "uncertainty"] and back.variance == data["variance"]
    frame = {"margin": np.array([0.1, 0.9]), "uncertainty": np.array([0.5, 0.01])}
    np.testing.assert_allclose(back.predict(back.values(frame)),
                               cal.predict(margin_variance_score(cal.weights, frame["margin"], frame["uncertainty"])))
    assert back.predict(back.values(frame))[1] > back.predict(back.values(frame))[0]
    # the margin alone on request (refitted from valid_scores.npz, which kept the uncertainty)
    assert ValidScores.load(tmp_path / VALID_SCORES_FILE).uncertainty is not None
    assert load_calibration(tmp_path, "margin").feature == "margin"
    # uninformative variance: the margin curve, with the evidence recorded
    other = tmp_path / "noise"
    other.mkdir()
    cal = write_calibration(other, _valid_with_uncertainty(informative=False))
    assert cal.feature == "margin" and cal.weights is None and cal.variance["used"] is False
    # a model without variances cannot be calibrated on them
    plain = ValidScores(scores.src, scores.top1, scores.top2, scores.score1, scores.score2, scores.correct)
    with pytest.raises(MmeaInputError, match="no uncertainty"):
        refit_calibration(plain, COMBINED)


def test_calibrated_alignment_names_a_missing_uncertainty_column(run_dir, tmp_path):
    import shutil

    from mmea.calibration import COMBINED

    dest = tmp_path / "run"
    shutil.copytree(run_dir, dest)
    cal = write_calibration(dest, _valid_with_uncertainty())
    assert cal.feature == COMBINED
    with pytest.raises(MmeaInputError, match="no 'uncertainty' column"):
        calibrated_alignment(dest)
