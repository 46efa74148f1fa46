"""The `mmea` command line end to end: start-up time, the demo alignment, exit codes, datasets."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tomllib

import pytest
from click.testing import CliRunner

from mmea.cli import main


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_help_is_instant_and_imports_no_torch():
    code = "import sys, mmea.cli; assert 'torch' not in sys.modules and 'faiss' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "mmea.cli", "--help"], capture_output=True, text=True, check=True)
    assert time.perf_counter() - t < 2.0
    assert "align" in out.stdout and "datasets" in out.stdout


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "demo"
    r = run("-q", "align", "--model", "baseline", "--out", str(out), "--topk", "3", "--set", "search.csls_k=5")
    assert r.exit_code == 0, r.output
    return out, r.output


def test_demo_alignment_writes_the_run_contract(demo_run):
    out, stdout = demo_run
    assert "H@1" in stdout and str(out / "alignment.csv") in stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["dataset"] == "demo" and m["model"] == "baseline"
    assert set(m["split"]) == {"train", "valid", "test"} and m["split"]["test"] == 1400
    assert set(m["test"]) >= {"hits@1", "hits@5", "hits@10", "mr", "mrr"}
    assert set(m["test_by_method"]) == {"src->tgt/cos", "src->tgt/csls", "tgt->src/cos", "tgt->src/csls",
                                        "src->tgt/reciprocal"}  # the third ranking (mmea.search.reciprocal)
    assert "reciprocal ranking H@1" in stdout
    assert 0.0 <= m["test"]["hits@1"] <= m["test"]["hits@5"] <= m["test"]["hits@10"] <= 1.0
    # names alone cannot solve the demo, but the baseline must be far above chance (1/1400)
    assert m["test"]["hits@1"] > 0.5
    assert m["timings"]["load_s"] > 0 and m["timings"]["total_s"] >= m["timings"]["load_s"]
    assert 0.05 < m["peak_rss_gib"] < 64  # the peak RSS of the run (VmHWM since the run began), GiB
    assert m["peak_rss_scope"] in ("this run", "the process (cannot reset the peak here)")
    assert isinstance(m["notes"], list)
    assert m["model_info"]["name_encoder"]["encoder"] == "char-ngram"  # LaBSE is not available offline
    cfg = tomllib.loads((out / "config.toml").read_text())
    assert cfg["search"]["csls_k"] == 5 and cfg["model"]["name"] == "baseline"
    assert (out / "run.log").stat().st_size > 0
    env = json.loads((out / "env.json").read_text())
    assert "numpy" in env["versions"]


def test_demo_alignment_csv_and_evaluate_round_trip(demo_run, tmp_path):
    import pandas as pd

    out, _ = demo_run
    df = pd.read_csv(out / "alignment.csv")
    assert list(df.columns[:8]) == ["src_id", "src_uri", "src_name", "tgt_id", "tgt_uri", "tgt_name", "score", "rank"]
    assert len(df) == 3 * 1400 and set(df["rank"]) == {1, 2, 3}
    m = json.loads((out / "metrics.json").read_text())
    top = df[df["rank"] == 1]
    assert top["gold"].mean() == pytest.approx(m["test"]["hits@1"], abs=1e-9)
    gold = tmp_path / "gold.tsv"
    gold.write_text("".join(f"{s}\t{t}\n" for s, t in zip(top["src_id"][top["gold"]], top["tgt_id"][top["gold"]])))
    r = run("evaluate", "--alignment", str(out / "alignment.csv"), "--gold", str(gold), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["hits@1"] == pytest.approx(1.0)


def test_same_seed_reproduces_metrics(demo_run, tmp_path):
    out, _ = demo_run
    r = run("-q", "align", "--config", str(out / "config.toml"), "--out", str(tmp_path / "again"))
    assert r.exit_code == 0, r.output
    a = json.loads((out / "metrics.json").read_text())["test_by_method"]
    b = json.loads((tmp_path / "again" / "metrics.json").read_text())["test_by_method"]
    assert a == b


def test_bad_usage_exits_2_with_one_line_and_hint(tmp_path):
    r = CliRunner().invoke(main, ["align", "--set", "search.cls_k=3", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "unknown key search.cls_k" in r.output and "csls_k" in r.output
    r = CliRunner().invoke(main, ["align", "--src", "dbp_zh", "--tgt", "dbp_en", "--data-dir", str(tmp_path),
                                  "--out", str(tmp_path / "y")])
    assert r.exit_code == 2 and "ent_ids_1" in r.output and "hint:" in r.output
    assert "Traceback" not in r.output
    r = CliRunner().invoke(main, ["align", "--model", "nope", "--out", str(tmp_path / "z")])
    assert r.exit_code == 2 and "valid choices: baseline" in r.output


def test_user_tsv_pair_without_gold_links(tmp_path):
    for kg, names in (("a", ["Paris", "Berlin", "Rome"]), ("b", ["Pariis", "Berlinn", "Roma"])):
        d = tmp_path / kg
        d.mkdir()
        (d / "triples.tsv").write_text(f"{names[0]}\tnear\t{names[1]}\n{names[1]}\tnear\t{names[2]}\n")
        (d / "names.tsv").write_text("".join(f"{n}\t{n}\n" for n in names))
    r = run("-q", "align", "--src", str(tmp_path / "a"), "--tgt", str(tmp_path / "b"), "--out", str(tmp_path / "run"),
            "--match", "hungarian", "--model", "baseline")
    assert r.exit_code == 0, r.output
    import pandas as pd

    df = pd.read_csv(tmp_path / "run" / "alignment.csv")
    assert dict(zip(df["src_id"], df["tgt_id"])) == {"Paris": "Pariis", "Berlin": "Berlinn", "Rome": "Roma"}
    assert "evaluation skipped" in r.output


def test_datasets_list_and_ls():
    r = run("datasets", "list")
    assert r.exit_code == 0 and "dbp15k_zh_en" in r.output and "--src dbp_zh --tgt dbp_en" in r.output
    r = run("ls", "models")
    assert r.exit_code == 0 and "baseline" in r.output
    r = run("ls", "matchers")
    assert "hungarian" in r.output and "sinkhorn" in r.output


@pytest.mark.data
def test_datasets_info_dbp15k_counts_and_load_time(data_dir):
    r = run("datasets", "info", "dbp_zh", "--data-dir", str(data_dir), "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["source"]["entities"] == 19388 and info["target"]["entities"] == 19572
    assert info["source"]["triples"] == 70414 and info["target"]["triples"] == 95142
    assert info["links"] == 15000 and info["split"] == {"train": 4050, "valid": 450, "test": 10500}
    assert info["load_s"] < 10


@pytest.mark.data
def test_datasets_info_mmkg_records_fb15k237_substitution(data_dir):
    r = run("datasets", "info", "fb15k_db15k", "--data-dir", str(data_dir), "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["links"] == 12846
    assert any("FB15k-237" in n for n in info["notes"])


def test_ls_samplers_and_losses_and_linkpred_help():
    r = run("ls", "samplers")
    assert r.exit_code == 0 and "bernoulli" in r.output and "hard-nn" in r.output
    r = run("ls", "losses")
    assert "self-adversarial" in r.output and "info-nce" in r.output
    r = run("linkpred", "--help")
    assert r.exit_code == 0 and "--sampler" in r.output


def test_linkpred_on_a_tiny_folder(tmp_path):
    d = tmp_path / "lp"
    d.mkdir()
    tr = [f"e{i}\tr{i % 2}\te{(i + 1) % 8}\n" for i in range(8)]
    (d / "train.txt").write_text("".join(tr))
    (d / "valid.txt").write_text(tr[0])
    (d / "test.txt").write_text(tr[1])
    r = run("-q", "linkpred", "--dataset", str(d), "--dim", "8", "--epochs", "2", "--num-negatives", "4",
            "--out", str(tmp_path / "run"), "--device", "cpu")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(m["test"]) >= {"mr", "mrr", "hits@1", "hits@3", "hits@10"}


def test_linkpred_and_pretrain_clep_take_a_config_file_under_command_line_options(tmp_path, monkeypatch):
    import dataclasses

    import mmea.pipelines.clep as clep
    import mmea.pipelines.linkpred as linkpred

    calls = {}

    def changed(section, always=()):
        default = type(section)()
        return {f.name: getattr(section, f.name) for f in dataclasses.fields(section)
                if f.name in always or getattr(section, f.name) != getattr(default, f.name)}

    def fake_linkpred(config, run_dir, **kw):  # the job's run: what the command resolved
        lp, named = config.linkpred, ("model", "dim", "epochs", "seed")
        calls["linkpred"] = dict(dataset=config.source.dataset, **{k: getattr(lp, k) for k in named},
                                 extra={k: v for k, v in changed(lp).items() if k not in (*named, "device")})
        return {"test": {"mrr": 0.5}}

    def fake_clep(config, run_dir, **kw):
        calls["clep"] = dict(dataset=config.source.dataset, values=changed(config.clep, ("seed", "device")))
        return {}

    monkeypatch.setattr(linkpred, "run", fake_linkpred)
    monkeypatch.setattr(clep, "run", fake_clep)
    cfg = tmp_path / "lp.toml"
    cfg.write_text('[linkpred]\nmodel = "distmult"\ndim = 32\nepochs = 7\nlr = 0.01\nseed = 3\n')
    r = run("linkpred", "--config", str(cfg), "--dim", "16", "--set", "lr=0.02")
    assert r.exit_code == 0, r.output
    # the file replaces defaults; the command line (--dim) and --set (lr) win over it
    assert calls["linkpred"] == {"dataset": "fb15k237", "model": "distmult", "dim": 16, "epochs": 7, "seed": 3,
                                 "extra": {"lr": 0.02}}
    flat = tmp_path / "clep.toml"
    flat.write_text('graph_encoder = "rgcn"\nproj_dim = 64\ndevice = "cpu"\n')
    r = run("pretrain-clep", "--config", str(flat), "--epochs", "2", "--seed", "5")
    assert r.exit_code == 0, r.output
    assert calls["clep"]["values"] == {"graph_encoder": "rgcn", "proj_dim": 64, "epochs": 2, "seed": 5,
                                       "device": "cpu"}
    r = CliRunner().invoke(main, ["linkpred", "--config", str(tmp_path / "missing.toml")])
    assert r.exit_code == 2 and "missing.toml" in r.output
    (tmp_path / "bad.toml").write_text("dim = = 3\n")
    r = CliRunner().invoke(main, ["pretrain-clep", "--config", str(tmp_path / "bad.toml")])
    assert r.exit_code == 2 and "bad.toml: not valid TOML" in r.output


def test_a_closed_pipe_is_not_an_error(monkeypatch):
    import mmea.cli as cli

    def closed(*a, **k):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli.click, "echo", closed)
    r = CliRunner().invoke(main, ["ls", "models"])
    assert r.exit_code == 0 and "error" not in r.output


# ------------------------------------------------------------------ one job shape: the config of every job
def test_importing_the_job_registry_imports_no_torch():
    code = ("import sys; from mmea.pipelines import JOBS; assert list(JOBS) == ['align', 'linkpred', 'clep']; "
            "assert 'torch' not in sys.modules and 'mmea.pipelines.linkpred' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_job_has_the_same_functions():
    from mmea.pipelines import JOBS

    for name in JOBS:
        job = JOBS[name]
        for fn in ("load_config", "resume_config", "run", "default_run_dir", "config_record", "normalise",
                   "bench_dataset", "bench_base", "bench_data_dir", "bench_row_name", "stored_matches", "ran_label"):
            assert callable(getattr(job, fn)), (name, fn)
        assert job.NAME == name and job.BENCH.default_metrics
        cfg = job.load_config()  # every section has its defaults
        assert getattr(cfg, job.MAIN) is not None and job.load_config(None, [], {}) == cfg
    with pytest.raises(KeyError):
        JOBS["nope"]


@pytest.mark.parametrize("name, overrides, message", [
    ("linkpred", ["lr=nan"], "linkpred.lr must be a finite number, got nan"),
    ("linkpred", ["linkpred.dim=0"], "linkpred.dim: input should be greater than or equal to 1, got 0"),
    ("linkpred", ["patience=-1"], "linkpred.patience: input should be greater than or equal to 0"),
    ("linkpred", ["dim=true"], "linkpred.dim must be int, got True"),
    ("linkpred", ["lrr=0.1"], "unknown link-prediction option(s): lrr; valid: adversarial_temperature"),
    ("linkpred", ["source.datset=x"], "unknown key source.datset; valid keys: data_dir, dataset"),
    ("linkpred", ["model.lr=0.1"], "unknown section 'model' in --set model.lr=0.1; valid sections: linkpred, source"),
    ("linkpred", ["sampler_options=3"], "linkpred.sampler_options must be dict"),
    ("clep", ["init_tau=inf"], "clep.init_tau must be a finite number, got inf"),
    ("clep", ["clep.batch_size=1"], "clep.batch_size: input should be greater than or equal to 2, got 1"),
    ("clep", ["max_minutes=0"], "clep.max_minutes: input should be greater than 0"),
    ("clep", ["proj_dimm=3"], "unknown CLEP option(s): proj_dimm; valid: batch_size"),
    ("clep", ["finetune.lr=nan"], "finetune.lr must be a finite number, got nan"),
    ("clep", ["finetune.modle=x"], "unknown link-prediction option(s): modle"),
    ("align", ["model.lr=nan"], "model (gaussian).lr must be a finite number, got nan"),
    ("align", ["search.cls_k=3"], "unknown key search.cls_k; valid keys: candidates, channels, csls_k"),
])
def test_load_config_names_the_bad_key_of_every_job(name, overrides, message):
    from mmea.errors import MmeaInputError
    from mmea.pipelines import JOBS

    base = {"model": {"name": "gaussian"}} if name == "align" else None
    with pytest.raises(MmeaInputError) as e:
        JOBS[name].load_config(None, overrides, base)
    assert message in e.value.message, e.value.message


def test_linkpred_and_clep_read_every_config_layout(tmp_path):
    """Sections, flat keys, a [linkpred] / [clep] table, and a run's own config.toml read the same."""
    from mmea.pipelines import JOBS

    lp = JOBS["linkpred"]
    layouts = {
        "sections": '[source]\ndataset = "d"\n[linkpred]\nlr = 0.01\nsampler_options = { k = 3 }\n',
        "flat": 'dataset = "d"\nlr = 0.01\nsampler_options = { k = 3 }\n',
        "table": '[linkpred]\ndataset = "d"\nlr = 0.01\nsampler_options = { k = 3 }\n',
        "run": 'task = "linkpred"\ndataset = "name"\n[linkpred]\nlr = 0.01\n[sampler_options]\nk = 3\n'
               '[source]\ndataset = "d"\n',
    }
    want = lp.load_config(None, ["source.dataset=d", "lr=0.01", "sampler_options={ k = 3 }"])
    for name, text in layouts.items():
        (tmp_path / f"{name}.toml").write_text(text)
        assert lp.load_config(tmp_path / f"{name}.toml") == want, name
    assert want.linkpred.lr == 0.01 and want.linkpred.sampler_options == {"k": 3} and want.source.dataset == "d"
    # the options (base) win over the file, --set wins over both
    got = lp.load_config(tmp_path / "flat.toml", ["linkpred.lr=0.5"], {"linkpred": {"lr": 0.2, "dim": 4}})
    assert (got.linkpred.lr, got.linkpred.dim) == (0.5, 4)
    (tmp_path / "clep.toml").write_text('task = "clep"\ndataset = "x"\n[clep]\nproj_dim = 8\n[source]\ndataset = "d"\n')
    cl = JOBS["clep"].load_config(tmp_path / "clep.toml", ["finetune.dim=8"])
    assert cl.clep.proj_dim == 8 and cl.source.dataset == "d" and cl.finetune == {"dim": 8}
    from mmea.errors import MmeaInputError

    with pytest.raises(MmeaInputError, match="the config is for task 'clep', not 'linkpred'"):
        lp.load_config(tmp_path / "clep.toml")


def test_linkpred_command_set_takes_sections_and_names_the_bad_key(tmp_path):
    r = CliRunner().invoke(main, ["linkpred", "--dataset", str(tmp_path), "--set", "linkpred.lr=nan",
                                  "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "linkpred.lr must be a finite number" in r.output and not (tmp_path / "x").exists()
    r = CliRunner().invoke(main, ["pretrain-clep", "--set", "source.data_dirr=x", "--out", str(tmp_path / "y")])
    assert r.exit_code == 2 and "unknown key source.data_dirr; valid keys: data_dir, dataset" in r.output


def test_every_data_option_reaches_the_loader(monkeypatch, tmp_path):
    """`mmea features` once forgot valid_ratio: align and features share load_task_from_config, which
    passes every field of the [data] section on (a new DataConfig field fails here until it does)."""
    import dataclasses

    import mmea.data.catalog as catalog
    from mmea.config import DataConfig

    seen = {}
    monkeypatch.setattr(catalog, "load_pair_task", lambda src, tgt, **kw: seen.update(src=src, tgt=tgt, **kw))
    d = DataConfig(src="a", tgt="b", pair="p", links="l", data_dir="dd", seed_ratio=0.25, valid_ratio=0.2,
                   use_dataset_split=True, fold=3, fb15k_triples="fb15k237")
    catalog.load_task_from_config(d, seed=7)
    for f in dataclasses.fields(DataConfig):
        assert seen.get(f.name) == getattr(d, f.name), f.name
    assert seen["seed"] == 7
    seen.clear()  # and the features command goes through it with the --set values
    r = CliRunner().invoke(main, ["features", "--modalities", "names", "--set", "data.valid_ratio=0.3",
                                  "--set", "data.fb15k_triples=fb15k237", "--out", str(tmp_path)])
    assert seen.get("valid_ratio") == 0.3 and seen.get("fb15k_triples") == "fb15k237", r.output
