"""Checkpoints, Ctrl-C and ``--resume``: an interrupted run, resumed, ends exactly like an uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from mmea.checkpoint import CHECKPOINT_FILE, Checkpointer, TrainingInterrupted
from mmea.cli import main
from mmea.config import to_toml
from mmea.pipelines.align_config import load_config
from mmea.pipelines.align import run_align


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def without_times(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "time_s"} for h in history]


# ------------------------------------------------------------------ the Checkpointer alone
def test_epoch_end_writes_every_n_epochs_and_ctrl_c_writes_the_last_finished_epoch(tmp_path):
    ckpt = Checkpointer(tmp_path, every=2)
    x = torch.zeros(3)
    state = lambda: {"x": x, "pool": np.arange(4) * int(x[0]), "note": ("a", None)}  # noqa: E731
    with pytest.raises(TrainingInterrupted, match=f"interrupted; resume with: mmea align --resume RUN_DIR"):
        with ckpt.guard():
            for epoch in (1, 2, 3):
                x += 1
                ckpt.epoch_end(epoch, "toy", state)
                assert ckpt.saved_epoch == (2 if epoch >= 2 else None)  # epochs 1 and 3 are kept in memory only
            x += 100  # half of epoch 4 ...
            raise KeyboardInterrupt  # ... then Ctrl-C: the end of epoch 3 is written, not this half epoch
    again = Checkpointer(tmp_path)
    assert again.load()["epoch"] == 3
    got = again.resume_state("toy")
    assert got["epoch"] == 3 and got["x"].tolist() == [3.0, 3.0, 3.0]
    assert isinstance(got["pool"], np.ndarray) and got["pool"].tolist() == [0, 3, 6, 9] and got["note"] == ("a", None)


def test_resume_state_restores_the_global_random_states(tmp_path):
    ckpt = Checkpointer(tmp_path)
    torch.manual_seed(1)
    np.random.seed(1)
    ckpt.epoch_end(1, "toy", lambda: {})
    want = (torch.rand(3), np.random.rand(3))
    torch.manual_seed(99)
    np.random.seed(99)
    again = Checkpointer(tmp_path)
    again.load()
    again.resume_state("toy")
    assert torch.equal(torch.rand(3), want[0]) and np.array_equal(np.random.rand(3), want[1])


def test_a_checkpoint_of_another_kind_or_a_corrupt_file_is_an_input_error(tmp_path):
    from mmea.errors import MmeaInputError

    Checkpointer(tmp_path).epoch_end(1, "linkpred", lambda: {})
    ckpt = Checkpointer(tmp_path)
    ckpt.load()
    with pytest.raises(MmeaInputError, match="'linkpred', not of 'selfmea'"):
        ckpt.resume_state("selfmea")
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(MmeaInputError, match="unreadable checkpoint"):
        Checkpointer(tmp_path).load()


# ------------------------------------------------------------------ mmea align (selfmea, demo pair)
SELFMEA = ["model.epochs=4", "model.eval_every=1", "model.expand_every=2", "model.expand_rounds=1"]


def selfmea_config():
    return load_config(None, SELFMEA, {"data": {"src": "demo_src", "tgt": "demo_tgt"}, "model": {"name": "selfmea"},
                                       "features": {"name_encoder": "char-ngram"}, "device": "cpu"})


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resume") / "whole"
    with pytest.MonkeyPatch.context() as mp:  # the same feature cache as conftest's per-test MMEA_HOME
        mp.setenv("MMEA_HOME", str(tmp_path_factory.getbasetemp() / "mmea_home"))
        run_align(selfmea_config(), out=out, quiet=True)
    return out


def test_selfmea_interrupted_by_ctrl_c_then_resumed_equals_the_uninterrupted_run(uninterrupted, tmp_path):
    out = tmp_path / "cut"
    # checkpoint_every=0: nothing is on disk until the interrupt, so the file below is Ctrl-C's own
    with pytest.raises(TrainingInterrupted) as e:
        run_align(selfmea_config(), out=out, quiet=True, checkpoint_every=0, stop_after_epochs=2)
    assert str(e.value) == f"interrupted; resume with: mmea align --resume {out}"
    assert not (out / "metrics.json").exists()
    saved = torch.load(out / CHECKPOINT_FILE, weights_only=True)
    assert saved["kind"] == "selfmea" and saved["epoch"] == 2

    r = run("-q", "align", "--resume", str(out))
    assert r.exit_code == 0, r.output
    a = json.loads((uninterrupted / "metrics.json").read_text())
    b = json.loads((out / "metrics.json").read_text())
    assert b["test"] == a["test"] and b["test_by_method"] == a["test_by_method"] and b["matched"] == a["matched"]
    ia, ib = a["model_info"], b["model_info"]
    assert without_times(ib["history"]) == without_times(ia["history"]) and len(ib["history"]) == 5
    assert ib["expansions"] == ia["expansions"] and ib["fusion_weights"] == ia["fusion_weights"]
    assert b["checkpoint"]["resumed_after_epoch"] == 2 and b["checkpoint"]["last_epoch"] == 4
    pd.testing.assert_frame_equal(pd.read_csv(out / "alignment.csv"), pd.read_csv(uninterrupted / "alignment.csv"))
    assert np.array_equal(np.load(out / "test_ranks.npy"), np.load(uninterrupted / "test_ranks.npy"))
    env = json.loads((out / "env.json").read_text())
    assert len(env["resumed"]) == 1 and "versions" in env["resumed"][0] and "versions" in env


def test_every_run_dir_holds_the_final_checkpoint(uninterrupted):
    a = json.loads((uninterrupted / "metrics.json").read_text())
    assert a["checkpoint"] == {"file": CHECKPOINT_FILE, "every": 1, "last_epoch": 4, "resumed_after_epoch": None}
    assert torch.load(uninterrupted / CHECKPOINT_FILE, weights_only=True)["epoch"] == 4


def test_resume_errors_are_exit_2_with_one_line(tmp_path, uninterrupted):
    r = CliRunner().invoke(main, ["align", "--resume", str(tmp_path / "nope")])
    assert r.exit_code == 2 and r.output.startswith("error: ") and "run directory not found" in r.output
    assert "Traceback" not in r.output
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(main, ["align", "--resume", str(tmp_path / "empty")])
    assert r.exit_code == 2 and "config.toml: file not found" in r.output
    bad = tmp_path / "corrupt"
    bad.mkdir()
    (bad / "config.toml").write_text((uninterrupted / "config.toml").read_text())
    (bad / CHECKPOINT_FILE).write_bytes(b"\x00garbage")
    r = CliRunner().invoke(main, ["align", "--resume", str(bad)])
    assert r.exit_code == 2 and "unreadable checkpoint" in r.output and "Traceback" not in r.output
    assert r.output.splitlines()[0].startswith("error: ") and r.output.splitlines()[1].startswith("hint: ")
    r = CliRunner().invoke(main, ["align", "--resume", str(uninterrupted), "--model", "baseline", "--seed", "3"])
    assert r.exit_code == 2 and "--model, --seed cannot be given with it" in r.output


# ------------------------------------------------------------------ mmea linkpred (a tiny graph)
def write_tiny_graph(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    n = 40
    triples = [(i, r, (i + 1 + r) % n) for i in range(n) for r in range(3)]
    rng.shuffle(triples)
    folder.mkdir()
    for name, part in (("train", triples[:-20]), ("valid", triples[-20:-10]), ("test", triples[-10:])):
        (folder / f"{name}.txt").write_text("".join(f"e{h}\tr{r}\te{t}\n" for h, r, t in part))
    return folder


LP_ARGS = ["--dim", "8", "--epochs", "6", "--num-negatives", "8", "--device", "cpu",
           "--set", "batch_size=32", "--set", "eval_every=1", "--set", "patience=0"]


@pytest.mark.parametrize("sampler,loss,learnable", [("uniform", "self-adversarial", False),
                                                   ("cache", "info-nce", True)])  # sampler caches, a learned tau
def test_linkpred_interrupted_then_resumed_equals_the_uninterrupted_run(tmp_path, sampler, loss, learnable):
    from mmea.linkpred import run_linkpred_cli

    data = write_tiny_graph(tmp_path / "toy")
    r = run("-q", "linkpred", "--dataset", str(data), "--sampler", sampler, "--loss", loss, *LP_ARGS,
            "--set", f"learnable_temperature={str(learnable).lower()}", "--out", str(tmp_path / "a"))
    assert r.exit_code == 0, r.output
    extra = {"batch_size": 32, "eval_every": 1, "patience": 0, "learnable_temperature": learnable}
    with pytest.raises(TrainingInterrupted, match=f"mmea linkpred --resume {tmp_path / 'b'}"):
        run_linkpred_cli(str(data), None, sampler=sampler, loss=loss, dim=8, epochs=6, num_negatives=8, device="cpu",
                         out=tmp_path / "b", extra=extra, progress=False, checkpoint_every=0, stop_after_epochs=3)
    assert torch.load(tmp_path / "b" / CHECKPOINT_FILE, weights_only=True)["epoch"] == 3
    r = run("-q", "linkpred", "--resume", str(tmp_path / "b"))
    assert r.exit_code == 0, r.output
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert b["test"] == a["test"] and b["valid"] == a["valid"] and b["sampler_stats"] == a["sampler_stats"]
    assert without_times(b["history"]) == without_times(a["history"]) and len(b["history"]) == 6
    assert b["checkpoint"]["resumed_after_epoch"] == 3 and b["loss_info"] == a["loss_info"]
    ea, eb = np.load(tmp_path / "a" / "embeddings.npz"), np.load(tmp_path / "b" / "embeddings.npz")
    assert np.array_equal(ea["entity"], eb["entity"])
    # the resume reader gives back the config the run was started with (the same job config)
    from mmea.pipelines import JOBS

    job = JOBS["linkpred"]
    started = job.load_config(None, [f"{k}={str(v).lower()}" for k, v in extra.items()], {
        "source": {"dataset": str(data)}, "linkpred": {"sampler": sampler, "loss": loss, "dim": 8, "epochs": 6,
                                                        "num_negatives": 8, "device": "cpu"}})
    assert job.resume_config(tmp_path / "b") == started == job.resume_config(tmp_path / "a")


def test_linkpred_and_clep_runs_record_completion_last_and_failures_in_the_log(tmp_path):
    from mmea.pipelines import JOBS
    from mmea.runs import file_digest

    data = write_tiny_graph(tmp_path / "toy")
    job = JOBS["linkpred"]
    cfg = job.load_config(None, ["dim=4", "epochs=1", "num_negatives=2", "batch_size=64", "device=cpu"],
                          {"source": {"dataset": str(data)}})
    job.run(cfg, tmp_path / "lp", progress=False)
    rec = json.loads((tmp_path / "lp" / "complete.json").read_text())
    assert rec["output"]["file"] == "embeddings.npz" and rec["task"] == "linkpred"
    assert rec["output"]["sha256"] == file_digest(tmp_path / "lp" / "embeddings.npz")[1]
    bad = job.load_config(None, [], {"source": {"dataset": str(tmp_path / "missing")}})
    with pytest.raises(Exception):
        job.run(bad, tmp_path / "failed", progress=False)
    assert not (tmp_path / "failed" / "complete.json").exists()
    assert "run failed (exit code 2)" in (tmp_path / "failed" / "run.log").read_text()
    clep = JOBS["clep"]
    bad = clep.load_config(None, [], {"source": {"dataset": str(tmp_path / "missing")}})
    with pytest.raises(Exception):
        clep.run(bad, tmp_path / "failed-clep", progress=False)
    assert "run failed (exit code 2)" in (tmp_path / "failed-clep" / "run.log").read_text()


CLEP_SETTINGS = ["dim=8", "proj_dim=8", "text_dim=16", "epochs=4", "batch_size=16", "eval_every=1", "patience=0",
                 "device=cpu"]


def test_clep_interrupted_then_resumed_equals_the_uninterrupted_run(tmp_path):
    from mmea.pipelines import JOBS

    job = JOBS["clep"]
    data = write_tiny_graph(tmp_path / "toy")
    cfg = job.load_config(None, CLEP_SETTINGS, {"source": {"dataset": str(data)}})
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    job.run(cfg, whole, progress=False)
    with pytest.raises(TrainingInterrupted, match=f"mmea pretrain-clep --resume {cut}"):
        job.run(cfg, cut, progress=False, checkpoint_every=0, stop_after_epochs=2)
    assert torch.load(cut / CHECKPOINT_FILE, weights_only=True)["epoch"] == 2
    assert not (cut / "complete.json").exists() and "run interrupted" in (cut / "run.log").read_text()
    assert job.resume_config(cut) == cfg  # the same config, read back from the run's config.toml
    r = CliRunner().invoke(main, ["-q", "pretrain-clep", "--resume", str(cut), "--seed", "1"])
    assert r.exit_code == 2 and "--seed cannot be given with it" in r.output
    r = run("-q", "pretrain-clep", "--resume", str(cut))
    assert r.exit_code == 0, r.output
    a, b = (json.loads((p / "metrics.json").read_text()) for p in (whole, cut))
    assert b["test"] == a["test"] and b["valid"] == a["valid"] and b["tau"] == a["tau"]
    assert without_times(b["history"]) == without_times(a["history"]) and len(b["history"]) == 4
    ea, eb = np.load(whole / "embeddings.npz"), np.load(cut / "embeddings.npz")
    assert np.array_equal(ea["entity"], eb["entity"]) and np.array_equal(ea["entity_graph"], eb["entity_graph"])
    assert json.loads((cut / "complete.json").read_text())["output"]["file"] == "embeddings.npz"


def test_align_resume_reads_the_config_the_run_wrote(tmp_path):
    import dataclasses

    from mmea.pipelines import JOBS

    job = JOBS["align"]
    cfg = job.load_config(None, ["model.epochs=3", "search.topk=2"], {"model": {"name": "gaussian"}, "seed": 4})
    (tmp_path / "config.toml").write_text(to_toml(dataclasses.asdict(cfg)))  # what run_align writes
    assert job.resume_config(tmp_path) == cfg
    (tmp_path / "config.toml").write_text('task = "clep"\n[clep]\ndim = 8\n')
    r = CliRunner().invoke(main, ["align", "--resume", str(tmp_path)])
    assert r.exit_code == 2 and "is an mmea pretrain-clep run" in r.output
    assert f"mmea pretrain-clep --resume {tmp_path}" in r.output


def test_linkpred_resume_of_an_align_run_says_so(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "config.toml").write_text(to_toml({"seed": 0, "model": {"name": "baseline"}}))
    r = CliRunner().invoke(main, ["linkpred", "--resume", str(d)])
    assert r.exit_code == 2 and "not an mmea linkpred run" in r.output and f"mmea align --resume {d}" in r.output


# ------------------------------------------------------------------ mmea align (gaussian, demo pair)
def test_gaussian_interrupted_in_stage_2_then_resumed_equals_the_uninterrupted_run(tmp_path):
    """Stopped after round 3 (stage 2: variances trainable), resumed: the same rounds, variances and ranks."""
    settings = ["model.epochs=4", "model.stage1_epochs=2", "model.stage1_fraction=1.0", "model.dim=16",
                "model.image_source=none", "model.rerank_k=0"]
    cfg = load_config(None, settings, {"data": {"src": "demo_src", "tgt": "demo_tgt"}, "model": {"name": "gaussian"},
                                       "features": {"name_encoder": "char-ngram"}, "device": "cpu"})
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    run_align(cfg, out=whole, quiet=True)
    with pytest.raises(TrainingInterrupted):
        run_align(cfg, out=cut, quiet=True, checkpoint_every=0, stop_after_epochs=3)
    saved = torch.load(cut / CHECKPOINT_FILE, weights_only=True)
    assert saved["kind"] == "gaussian" and saved["epoch"] == 3 and saved["state"]["stage"] == 2
    r = run("-q", "align", "--resume", str(cut))
    assert r.exit_code == 0, r.output
    a = json.loads((whole / "metrics.json").read_text())
    b = json.loads((cut / "metrics.json").read_text())
    assert b["test"] == a["test"] and a["test"]["mrr"] > 0
    ia, ib = a["model_info"], b["model_info"]
    drop = ("time_s", "time_by_loss_s")
    assert [{k: v for k, v in h.items() if k not in drop} for h in ib["history"]] == \
        [{k: v for k, v in h.items() if k not in drop} for h in ia["history"]]
    assert ib["variances"] == ia["variances"] and ia["variances"]["common"]["relations"]["with"] > 0.5
    assert np.array_equal(np.load(cut / "test_ranks.npy"), np.load(whole / "test_ranks.npy"))
