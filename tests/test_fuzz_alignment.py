"""Property-based fuzzing of alignment CSVs read by ``mmea evaluate`` and ``mmea export`` (issue 19).

Each example writes a clean alignment file, applies one random corruption (field
counts, encodings, byte-order marks, control characters, stray quotes, truncation,
non-numeric values, missing columns, blank / duplicate / CRLF lines, a directory in
place of the file, random bytes) and runs the command.  The property:

* the exit code is 0 or 2, and no traceback reaches the user;
* exit 2 names the file, and the corrupted line where the corruption has one;
* exit 0 gives the clean file's result, with every skipped line counted (blank,
  duplicate) or a warning (a last line without its newline); a corruption that must
  be refused (a control character, an invalid byte, text in a number column, ...)
  never ends in exit 0.

Random byte edits can turn one valid id into another, which no reader can notice; for
those only the first two points are checked.  A truncation exactly at a line end leaves
a well-formed shorter file: for a run, the completion record (``mmea.runs.check_complete``)
refuses it (:func:`test_export_refuses_a_run_cut_at_a_line_end`); the export fuzz re-records
completion after each corruption so that the reader behind that check is exercised.

Default: 300 ``evaluate`` and 200 ``export`` examples (3-10 s each, depending on the
machine's load); ``-m slow`` runs 3000 and 1500 (about 100 s in all).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mmea.calibration import CALIBRATION_FILE, fit_calibration  # noqa: E402
from mmea.cli import main  # noqa: E402
from mmea.export import COLUMNS, export_run  # noqa: E402
from mmea.runs import ALIGNMENT_FILE, RunDir, write_json  # noqa: E402

FAST = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
#: control characters a corruption inserts (a tab only into comma-separated files)
CONTROLS = [chr(c) for c in (*range(0, 9), *range(11, 32), 0x7F, 0x85)]
NAMES = ["Paris", "Paris, France", 'The "Best"', "São Paulo", "Zürich", "a b"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_clean_exit(r) -> None:
    """Exit 0 or 2, and no traceback (an unexpected exception would show as r.exception)."""
    assert r.exit_code in (0, 2), r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output and "hint: run with -v" not in r.output, r.output


# -- clean files ---------------------------------------------------------------------------

@dataclass
class Clean:
    lines: list  # without newlines
    layout: str  # header | headerless3 | headerless2 | tsv
    header_lines: int  # 1 with a header line
    gold: str  # the gold-links file's text
    typed: list  # field indices of number / rank / boolean columns
    columns: list  # the header's columns ([] headerless)
    id_cols: tuple = (0, 1)  # field indices of src_id and tgt_id


@st.composite
def candidate_lists(draw, nonascii: bool):
    """``[(src_id, [(tgt_id, score), ...] best first)]`` and a gold target per source."""
    pre_s, pre_t = ("é", "ü") if nonascii else ("s", "t")
    out, gold = [], []
    for i in range(draw(st.integers(1, 5))):
        k = draw(st.integers(1, 4))
        tg = draw(st.lists(st.integers(0, 9), min_size=k, max_size=k, unique=True))
        sc = sorted(draw(st.lists(st.integers(-1000, 1000), min_size=k, max_size=k)), reverse=True)
        out.append((f"{pre_s}{i}", [(f"{pre_t}{j}", s / 1000) for j, s in zip(tg, sc)]))
        gold.append((f"{pre_s}{i}", draw(st.sampled_from([f"{pre_t}{j}" for j in tg] + [f"{pre_t}99"]))))
    return out, gold


def _write(rows: list, delim: str) -> list:
    buf = io.StringIO()
    csv.writer(buf, delimiter=delim, lineterminator="\n").writerows(rows)
    return buf.getvalue().split("\n")[:-1]


@st.composite
def evaluate_files(draw) -> Clean:
    lists, gold = draw(candidate_lists(nonascii=draw(st.booleans())))
    layout = draw(st.sampled_from(["header", "headerless3", "headerless2", "tsv"]))
    body = [[s, t, f"{sc:g}", str(r)] for s, cands in lists for r, (t, sc) in enumerate(cands, 1)]
    if layout == "headerless3":
        rows, cols, typed = [b[:3] for b in body], [], [2]
    elif layout == "headerless2":
        rows, cols, typed = [b[:2] for b in body], [], []
    else:
        cols = ["src_id", "tgt_id", "score", "rank"]
        rows, typed = [cols] + body, [2, 3]
    lines = _write(rows, "\t" if layout == "tsv" else ",")
    gold_text = "".join(f"{s}\t{t}\n" for s, t in gold)
    return Clean(lines, layout, int(bool(cols)), gold_text, typed, cols)


# -- corruptions -----------------------------------------------------------------------------

@dataclass
class Corrupted:
    data: bytes | None  # None: a directory in place of the file
    kind: str
    must_fail: bool = False  # exit 2 is required
    line: int | None = None  # the line the error must name
    same: bool = True  # exit 0 must give the clean result
    counter: str | None = None  # exit 0 must count this in the format record
    warned: bool = False  # exit 0 must carry a warning


def _join(lines: list, end: str = "\n") -> bytes:
    return "".join(ln + end for ln in lines).encode("utf-8")


@st.composite
def corruptions(draw, clean: Clean, run_file: bool = False) -> Corrupted:
    """One corruption of ``clean`` and what the reader must do with it."""
    lines, n = list(clean.lines), len(clean.lines)
    delim = "\t" if clean.layout == "tsv" else ","
    first_data = clean.header_lines  # index of the first data line
    kind = draw(st.sampled_from(["fields", "control", "quote", "value_text", "empty_id", "bom", "utf16", "latin1",
                                 "truncate", "drop_column", "directory", "duplicate", "blank", "crlf",
                                 "random_bytes", "none"]))
    i = draw(st.integers(0, n - 1))
    ln = i + 1
    if kind == "fields":
        f = next(csv.reader([lines[i]], delimiter=delim))
        f = f + ["x"] if draw(st.booleans()) or len(f) < 2 else f[:-1]
        lines[i] = _write([f], delim)[0]
        strict = i >= first_data and (i > 0 or clean.header_lines > 0)  # a headerless first line sets the count
        return Corrupted(_join(lines), kind, must_fail=strict or n > 1, line=ln if strict else None, same=False)
    if kind == "control":
        ch = draw(st.sampled_from(CONTROLS + ([] if delim == "\t" else ["\t"])))
        pos = draw(st.integers(0, len(lines[i])))
        if ch == "\r" and pos == len(lines[i]):
            pos = 0  # a CR at the end is a CRLF line end, not a corruption
        lines[i] = lines[i][:pos] + ch + lines[i][pos:]
        return Corrupted(_join(lines), kind, must_fail=True, line=ln)
    if kind == "quote":
        pos = draw(st.integers(0, len(lines[i])))
        lines[i] = lines[i][:pos] + '"' + lines[i][pos:]
        return Corrupted(_join(lines), kind, must_fail=True, line=ln)
    if kind == "value_text" and clean.typed and i >= first_data:  # not a number, rank or boolean
        f = next(csv.reader([lines[i]], delimiter=delim))
        f[draw(st.sampled_from(clean.typed))] = draw(st.text("bcdxz_-", min_size=1, max_size=5))
        lines[i] = _write([f], delim)[0]
        return Corrupted(_join(lines), kind, must_fail=True, line=ln)
    if kind == "empty_id" and i >= first_data:
        f = next(csv.reader([lines[i]], delimiter=delim))
        f[draw(st.sampled_from(clean.id_cols))] = ""
        lines[i] = _write([f], delim)[0]
        return Corrupted(_join(lines), kind, must_fail=True, line=ln)
    if kind == "bom":
        return Corrupted(b"\xef\xbb\xbf" + _join(lines), kind, counter="bom")
    if kind == "utf16":
        return Corrupted(_join(lines).decode("utf-8").encode("utf-16"), kind, must_fail=True, line=1)
    if kind == "latin1":
        text = _join(lines).decode("utf-8")
        bad = next((k + 1 for k, s in enumerate(lines) if not s.isascii()), None)
        return Corrupted(text.encode("latin-1"), kind, must_fail=bad is not None, line=bad)
    if kind == "truncate":
        data = _join(lines)
        cut = draw(st.integers(1, len(data) - 1))
        if data[cut - 1:cut] == b"\n":
            cut -= 1  # a cut at a line end leaves a well-formed file (see the module docstring)
        last = data[:cut].count(b"\n") + 1
        return Corrupted(data[:cut], kind, must_fail=run_file, line=last, same=False, warned=True)
    if kind == "drop_column" and clean.columns:
        c = draw(st.integers(0, len(clean.columns) - 1))
        name = clean.columns[c]
        rows = [[v for k, v in enumerate(next(csv.reader([s], delimiter=delim))) if k != c] for s in lines]
        needed = name in ("src_id", "tgt_id") or (run_file and name == "margin")
        return Corrupted(_join(_write(rows, delim)), kind, must_fail=needed, line=1 if needed else None)
    if kind == "directory":
        return Corrupted(None, kind, must_fail=True)
    if kind == "duplicate" and i >= first_data:
        lines.insert(i + 1, lines[i])
        return Corrupted(_join(lines), kind, counter="duplicate_rows")
    if kind == "blank":
        lines.insert(i, draw(st.sampled_from(["", "  ", "\r", " \t " if delim == "\t" else "   "])))
        return Corrupted(_join(lines), kind, counter="blank_lines")
    if kind == "crlf":
        return Corrupted(_join(lines, "\r\n"), kind)
    if kind == "random_bytes":
        data = bytearray(_join(lines))
        for _ in range(draw(st.integers(1, 3))):
            data.insert(draw(st.integers(0, len(data))), draw(st.integers(0, 255)))
        return Corrupted(bytes(data), kind, same=False)
    return Corrupted(_join(lines), "none")


def _place(path: Path, c: Corrupted) -> None:
    if c.data is None:
        path.mkdir()
    else:
        path.write_bytes(c.data)


def _check_failure(r, path: Path, c: Corrupted) -> None:
    assert str(path) in r.output, r.output
    if c.line is not None:
        assert f"line {c.line}" in r.output, (c.kind, r.output)


# -- mmea evaluate ---------------------------------------------------------------------------

METRICS = ("hits@1", "precision", "recall", "coverage", "num_rows")


def _key_metrics(res: dict) -> dict:
    out = {k: res[k] for k in METRICS}
    out.update({f"ranking.{k}": v for k, v in (res.get("ranking") or {}).items()
                if k.startswith("hits@") or k in ("mrr", "gold_found")})
    return out


def check_evaluate(clean: Clean, c: Corrupted) -> None:
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        gold = d / "gold.tsv"
        gold.write_text(clean.gold, encoding="utf-8")
        ref_path = d / "clean.csv"
        ref_path.write_bytes(_join(clean.lines))
        ref = cli("evaluate", "--alignment", ref_path, "--gold", gold, "--json")
        assert ref.exit_code == 0, ref.output
        ref_res = json.loads(ref.stdout)
        path = d / "corrupted.csv"
        _place(path, c)
        r = cli("evaluate", "--alignment", path, "--gold", gold, "--json")
        assert_clean_exit(r)
        if r.exit_code == 2:
            _check_failure(r, path, c)
            return
        assert not c.must_fail, (c.kind, r.output)
        res = json.loads(r.stdout)
        if c.kind == "truncate":
            assert res["format"]["unterminated_last_line"] and res["warnings"], r.output
            return
        if c.same:
            assert _key_metrics(res) == _key_metrics(ref_res) or c.kind == "duplicate" and \
                {k: v for k, v in _key_metrics(res).items() if k != "num_rows"} == \
                {k: v for k, v in _key_metrics(ref_res).items() if k != "num_rows"}, (c.kind, res, ref_res)
        if c.counter == "bom":
            assert res["format"]["bom"]
        elif c.counter:
            assert res["format"][c.counter] >= 1 and res["format"]["skipped_lines"] >= 1
            if c.counter == "duplicate_rows":
                assert res["warnings"]


@st.composite
def evaluate_cases(draw):
    clean = draw(evaluate_files())
    return clean, draw(corruptions(clean))


@settings(max_examples=300, **FAST)
@given(case=evaluate_cases())
def test_evaluate_fuzz(case):
    check_evaluate(*case)


@pytest.mark.slow
@settings(max_examples=3000, **FAST)
@given(case=evaluate_cases())
def test_evaluate_fuzz_thorough(case):
    check_evaluate(*case)


# -- mmea export (a run's alignment.csv) -----------------------------------------------------

@pytest.fixture(scope="module")
def calibration_json(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(0.05, 0.05, 300)
    cal = fit_calibration(x, rng.random(300) < 1 / (1 + np.exp(-40 * x)))
    p = tmp_path_factory.mktemp("cal") / CALIBRATION_FILE
    write_json(p, cal.to_dict())
    return p


@st.composite
def run_files(draw) -> Clean:
    """An ``alignment.csv`` as ``mmea align`` writes it (every column, quoted names)."""
    lists, gold = draw(candidate_lists(nonascii=draw(st.booleans())))
    rows = [COLUMNS]
    for s, cands in lists:
        sc = [x for _, x in cands]
        g = draw(st.sampled_from(["True", "False", ""]))
        for r, (t, x) in enumerate(cands, 1):
            others = sc[:r - 1] + sc[r:]
            margin = f"{x - max(others):.4f}" if others else ""
            rows.append([s, f"http://a.org/{s}", draw(st.sampled_from(NAMES)), t, f"http://b.org/{t}",
                         draw(st.sampled_from(NAMES)), f"{x:g}", str(r), f"{x:g}", margin,
                         str(r == 1 and draw(st.booleans())), g if r == 1 else ("False" if g else "")])
    typed = [COLUMNS.index(c) for c in ("score", "rank", "csls", "margin", "mutual", "gold")]
    return Clean(_write(rows, ","), "header", 1, "", typed, list(COLUMNS), (0, COLUMNS.index("tgt_id")))


def _exported(path: Path) -> list:
    df = pd.read_csv(path, keep_default_na=False, dtype=str)
    return sorted(zip(df["src_id"], df["tgt_id"], df["est_precision"]))


def check_export(clean: Clean, c: Corrupted, calibration: Path) -> None:
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        ref_run, run = d / "ref", d / "run"
        for rd in (ref_run, run):
            rd.mkdir()
            shutil.copy(calibration, rd / CALIBRATION_FILE)
        (ref_run / ALIGNMENT_FILE).write_bytes(_join(clean.lines))
        RunDir(ref_run).mark_complete()
        export_run(ref_run, out=d / "ref.csv")
        path = run / ALIGNMENT_FILE
        if c.data is None:  # the run finished, then its file was replaced by a directory
            path.write_bytes(_join(clean.lines))
            RunDir(run).mark_complete()
            path.unlink()
        _place(path, c)
        if c.data is not None:
            RunDir(run).mark_complete()  # the file as the run recorded it: the reader must judge it
        r = cli("export", run, "--out", d / "out.csv", "--json")
        assert_clean_exit(r)
        if r.exit_code == 2:
            _check_failure(r, path, c)
            return
        assert not c.must_fail, (c.kind, r.output)
        if c.same:
            assert _exported(d / "out.csv") == _exported(d / "ref.csv"), c.kind
        summary = json.loads(r.stdout)
        if c.counter == "bom":
            assert summary["read"]["bom"]
        elif c.counter:
            assert summary["read"][c.counter] >= 1
            if c.counter == "duplicate_rows":
                assert summary["warnings"]


@st.composite
def export_cases(draw):
    clean = draw(run_files())
    return clean, draw(corruptions(clean, run_file=True))


@settings(max_examples=200, **FAST)
@given(case=export_cases())
def test_export_fuzz(case, calibration_json):
    check_export(*case, calibration_json)


@pytest.mark.slow
@settings(max_examples=1500, **FAST)
@given(case=export_cases())
def test_export_fuzz_thorough(case, calibration_json):
    check_export(*case, calibration_json)


def test_export_refuses_a_run_cut_at_a_line_end(tmp_path, calibration_json):
    """A truncation at a line end is well-formed CSV: the completion record catches it."""
    lines = _write([COLUMNS] + [[f"s{i}", "", "", f"t{i}", "", "", "0.5", "1", "0.5", "0.1", "True", "True"]
                                for i in range(4)], ",")
    shutil.copy(calibration_json, tmp_path / CALIBRATION_FILE)
    (tmp_path / ALIGNMENT_FILE).write_bytes(_join(lines))
    RunDir(tmp_path).mark_complete()
    assert cli("export", tmp_path, "--out", tmp_path / "a.csv").exit_code == 0
    (tmp_path / ALIGNMENT_FILE).write_bytes(_join(lines[:-1]))
    r = cli("export", tmp_path, "--out", tmp_path / "b.csv")
    assert r.exit_code == 2 and f"{tmp_path / ALIGNMENT_FILE}: does not match what the run wrote" in r.output
