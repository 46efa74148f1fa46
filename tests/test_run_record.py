"""The run directory's owner (mmea.runs) and the up-front config checks: issue 19, items 2, 3, 8,
9, 11, 12 and 13 (csls_k), each with its regression test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmea.cli import main
from mmea.errors import MmeaInputError
from mmea.runs import (ALIGNMENT_FILE, COMPLETE_FILE, LOG_FILE, RunDir, atomic_path, check_complete, file_digest,
                       prepare_run_dir)

REPO = Path(__file__).resolve().parents[1]


def run(*args):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("record") / "run"
    r = CliRunner().invoke(main, ["-q", "align", "--model", "baseline", "--out", str(out), "--topk", "2"])
    assert r.exit_code == 0, r.output
    return out


# ------------------------------------------------------------------ item 2: atomic files, completion last
def test_a_finished_run_records_rows_and_checksum_of_its_alignment_last(finished):
    rec = json.loads((finished / COMPLETE_FILE).read_text())
    rows, digest = file_digest(finished / ALIGNMENT_FILE)
    assert rec["alignment"] == {"file": ALIGNMENT_FILE, "rows": rows, "sha256": digest} and rows > 0
    # written after every other output
    latest = max((p.stat().st_mtime_ns, p.name) for p in finished.iterdir() if p.name != LOG_FILE)
    assert latest[1] == COMPLETE_FILE
    assert check_complete(finished)["alignment"]["rows"] == rows
    assert not [p.name for p in finished.iterdir() if ".tmp" in p.name]  # no temporary file left behind


def test_a_truncated_or_missing_alignment_or_no_completion_record_is_refused(finished, tmp_path):
    import shutil

    cut = tmp_path / "cut"
    shutil.copytree(finished, cut)
    lines = (cut / ALIGNMENT_FILE).read_text().splitlines(keepends=True)
    (cut / ALIGNMENT_FILE).write_text("".join(lines[: len(lines) // 2]))
    with pytest.raises(MmeaInputError, match=r"alignment.csv: does not match what the run wrote .*truncated"):
        check_complete(cut)
    (cut / ALIGNMENT_FILE).unlink()
    with pytest.raises(MmeaInputError, match="alignment.csv: file not found"):
        check_complete(cut)
    (cut / COMPLETE_FILE).unlink()
    with pytest.raises(MmeaInputError, match="not a finished run: complete.json is missing") as e:
        check_complete(cut)
    assert "--resume" in e.value.hint
    r = run("report", str(cut))
    assert r.exit_code == 2 and "not a finished run" in r.output and "Traceback" not in r.output
    r = run("export", str(cut))
    assert r.exit_code == 2 and "not a finished run" in r.output
    (cut / ALIGNMENT_FILE).write_text("".join(lines))  # even an intact file of an unfinished run
    import csv

    first = next(csv.DictReader(lines))
    gold = tmp_path / "gold.tsv"
    gold.write_text(f"{first['src_id']}\t{first['tgt_id']}\n")
    r = run("evaluate", "--alignment", str(cut / ALIGNMENT_FILE), "--gold", str(gold))
    assert r.exit_code == 2 and "not a finished run" in r.output
    plain = tmp_path / "elsewhere.csv"  # the same CSV outside a run folder is just a CSV
    plain.write_text("".join(lines))
    r = run("evaluate", "--alignment", str(plain), "--gold", str(gold))
    assert r.exit_code == 0, r.output


def test_atomic_path_keeps_the_old_file_when_the_writer_is_interrupted(tmp_path):
    p = tmp_path / "alignment.csv"
    p.write_text("old\n")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(p) as tmp:
            tmp.write_text("half of the new rows")
            raise KeyboardInterrupt
    assert p.read_text() == "old\n" and [x.name for x in tmp_path.iterdir()] == ["alignment.csv"]
    with atomic_path(p) as tmp:
        tmp.write_text("new\n")
    assert p.read_text() == "new\n"


def test_array_files_are_written_atomically_under_their_own_name(tmp_path, monkeypatch):
    """test_ranks.npy, valid_scores.npz, embeddings.npz: numpy writes through a file object (no
    ``.npz`` appended to the temporary name) and an interrupted write keeps the old file."""
    import numpy as np

    from mmea.runs import atomic_save_npy, atomic_save_npz

    p, q = tmp_path / "embeddings.npz", tmp_path / "test_ranks.npy"
    atomic_save_npz(p, entity=np.arange(3))
    atomic_save_npy(q, np.arange(4, dtype=np.int32))
    assert sorted(x.name for x in tmp_path.iterdir()) == ["embeddings.npz", "test_ranks.npy"]
    assert np.load(p)["entity"].tolist() == [0, 1, 2] and np.load(q).tolist() == [0, 1, 2, 3]

    def interrupted(fh, **arrays):
        fh.write(b"PK half")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_save_npz(p, compressed=True, entity=np.arange(5))
    assert np.load(p)["entity"].tolist() == [0, 1, 2] and len(list(tmp_path.iterdir())) == 2


def test_an_interrupt_during_the_run_leaves_no_completion_record_and_logs_the_stop(tmp_path, monkeypatch):
    from mmea.pipelines import align as align_job

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(align_job, "_align_in", interrupted)
    out = tmp_path / "r"
    r = run("-q", "align", "--out", str(out))
    assert r.exit_code == 130 and "resume with: mmea align --resume" in r.output
    assert not (out / COMPLETE_FILE).exists()
    assert "run interrupted (exit code 130)" in (out / LOG_FILE).read_text().splitlines()[-1]


# ------------------------------------------------------------------ item 3: one run per folder
def test_a_second_run_into_the_same_folder_is_refused_unless_overwrite(finished, tmp_path):
    import shutil

    out = tmp_path / "again"
    shutil.copytree(finished, out)
    before = (out / "config.toml").read_text()
    r = run("-q", "align", "--out", str(out), "--model", "propagation")
    assert r.exit_code == 2 and "already holds a run" in r.output and "--overwrite" in r.output
    assert (out / "config.toml").read_text() == before  # nothing was touched
    (out / "stale-extra-file.txt").write_text("x")
    r = run("-q", "align", "--out", str(out), "--model", "propagation", "--overwrite")
    assert r.exit_code == 0, r.output
    assert not (out / "stale-extra-file.txt").exists()
    assert json.loads((out / "metrics.json").read_text())["model"] == "propagation"
    check_complete(out)


def test_overwrite_never_clears_a_folder_that_holds_no_run(tmp_path):
    foreign = tmp_path / "my-documents"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(MmeaInputError, match="holds no mmea run"):
        prepare_run_dir(foreign, resume=False, overwrite=True)
    assert (foreign / "thesis.tex").read_text() == "precious"
    r = run("-q", "align", "--out", str(foreign), "--overwrite")
    assert r.exit_code == 2 and (foreign / "thesis.tex").exists()


def test_resume_reopens_the_folder_as_unfinished(finished, tmp_path):
    import shutil

    out = tmp_path / "re"
    shutil.copytree(finished, out)
    rd = RunDir.create(out, resume=True)
    rd.close()
    assert not (out / COMPLETE_FILE).exists()


# ------------------------------------------------------------------ items 8, 9, 13: everything checked up front
@pytest.mark.parametrize("args, key", [
    (["--topk", "0"], "search.topk"),
    (["--match", "nonsense"], "search.match"),
    (["--set", "search.csls_k=-5"], "search.csls_k"),
    (["--set", "search.csls_k=0"], "search.csls_k"),
    (["--seed", "-1"], "seed"),
    (["--set", "model.lr=nan", "--model", "selfmea"], "model"),
    (["--set", "data.seed_ratio=1.5"], "data.seed_ratio"),
    (["--set", "data.valid_ratio=inf"], "data.valid_ratio"),
    (["--set", "search.method=dot"], "search.method"),
    (["--set", "features.name_encoder=bert"], "features.name_encoder"),
    (["--device", "cuda:x"], "device"),
])
def test_bad_values_fail_before_any_data_is_read_naming_the_key(tmp_path, args, key):
    out = tmp_path / "never"
    t = time.perf_counter()
    r = run("align", "--out", str(out), *args)
    assert r.exit_code == 2, r.output
    assert key in r.output and "Traceback" not in r.output
    assert time.perf_counter() - t < 5 and not out.exists()  # nothing loaded, nothing written


def test_the_error_names_the_rule_and_the_value():
    r = run("align", "--set", "search.csls_k=-5")
    assert "search.csls_k: input should be greater than or equal to 1, got -5" in r.output
    r = run("align", "--model", "selfmea", "--set", "model.lr=nan")
    assert "model (selfmea).lr must be a finite number, got nan" in r.output


def test_every_numeric_field_of_the_run_sections_declares_a_range():
    from mmea.config import SECTIONS, field_range, field_types, is_numeric

    missing = [f"{sec}.{k}" for sec, cls in SECTIONS.items() for k, tp in field_types(cls).items()
               if is_numeric(tp) and not field_range(tp)]
    assert missing == []


def test_every_numeric_field_of_every_registered_model_declares_a_range():
    from mmea.config import field_range, field_types, is_numeric
    from mmea.models import MODELS

    missing = [f"{name}.{k}" for name in MODELS.names() for k, tp in field_types(MODELS.get(name).Config).items()
               if is_numeric(tp) and not field_range(tp)]
    assert missing == []


@pytest.mark.parametrize("model, key, value", [("baseline", "name_weight", "-1"), ("selfmea", "tau", "0"),
                                               ("gaussian", "dim", "0"), ("propagation", "pseudo_threshold", "2"),
                                               ("selfmea", "expand_quantile", "1.5"), ("gaussian", "patience", "-3")])
def test_model_values_out_of_their_declared_range_are_refused(model, key, value):
    r = run("align", "--model", model, "--set", f"model.{key}={value}")
    assert r.exit_code == 2 and f"model ({model}).{key}" in r.output, r.output


# ------------------------------------------------------------------ item 11: a failed run's log says why
def test_a_failed_run_logs_the_error_and_its_exit_code(tmp_path):
    out = tmp_path / "fail"
    r = run("-q", "align", "--out", str(out), "--src", str(tmp_path / "nope1"), "--tgt", str(tmp_path / "nope2"))
    assert r.exit_code == 2
    last = (out / LOG_FILE).read_text().strip().splitlines()[-1]
    assert "run failed (exit code 2)" in last and "nope1" in last
    assert not (out / COMPLETE_FILE).exists()


# ------------------------------------------------------------------ item 12: SIGTERM is Ctrl-C
def test_sigterm_during_training_writes_the_checkpoint_and_says_how_to_resume(tmp_path):
    out = tmp_path / "term"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "mmea.cli", "-q", "align", "--out", str(out), "--model", "selfmea",
           "--set", "model.epochs=400", "--set", "features.name_encoder=char-ngram", "--device", "cpu"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (out / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert (out / "checkpoint.pt").exists(), proc.stderr.read() if proc.poll() is not None else "no checkpoint"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "SIGTERM" in err and f"resume with: mmea align --resume {out}" in err and "Traceback" not in err
    assert not (out / COMPLETE_FILE).exists()
    assert "run interrupted (exit code 130)" in (out / LOG_FILE).read_text() or \
        "run interrupted" in (out / LOG_FILE).read_text()
