"""The ``mmea`` command line.

Start-up stays instant: this module imports only click and the standard
library at top level; each command imports what it needs.  Exit codes: 0
success, 2 bad usage or input, 1 runtime failure.  Errors print one line
plus a hint; ``-v`` adds the traceback.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import click

from . import __version__

log = logging.getLogger("mmea")

EPILOG_ALIGN = """\b
Examples:
  mmea align                                   # the built-in demo pair
  mmea align --src dbp_zh --tgt dbp_en --data-dir ../shared/datasets
  mmea align --pair path/to/openea_or_tsv_pair --seed-ratio 0.2 --match hungarian
  mmea align --src my_kg1/ --tgt my_kg2/ --links known_links.tsv --topk 5
  mmea align --src dbp_zh --tgt dbp_en --data-dir ../shared/datasets --model selfmea --seed-ratio 0
  mmea align --model selfmea --modalities names,structure,anchors --set model.epochs=10
  mmea align --resume runs/align-demo-20250101-120000   # continue an interrupted run (Ctrl-C saves)
"""


def _on_sigterm(signum, frame):  # noqa: ARG001 - the signal handler's signature
    from .errors import Terminated

    raise Terminated("terminated (SIGTERM)")


def _install_signal_handlers() -> None:
    """SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``), so a ``kill`` saves a checkpoint,
    records the stop in ``run.log`` and leaves no half-written file, as Ctrl-C does."""
    import signal

    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (an embedding application): leave its handlers alone
        pass


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    root = logging.getLogger("mmea")
    root.setLevel(logging.DEBUG)
    if not any(getattr(h, "_mmea_console", False) for h in root.handlers):
        h = logging.StreamHandler(sys.stderr)
        h._mmea_console = True  # type: ignore[attr-defined]
        h.setFormatter(logging.Formatter("%(levelname)s %(message)s" if verbose else "%(message)s"))
        root.addHandler(h)
    for h in root.handlers:
        if getattr(h, "_mmea_console", False):
            h.setLevel(level)


class MmeaGroup(click.Group):
    """Click group that turns mmea errors into one line + hint and the right exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.exceptions.Exit:
            raise
        except (click.ClickException, click.exceptions.Abort):
            raise
        except KeyboardInterrupt as e:  # a TrainingInterrupted says how to resume
            from .errors import interrupt_exit_code

            text, code = str(e) or "interrupted", interrupt_exit_code(e)
            if code == 143 and "SIGTERM" not in text:
                text = f"terminated (SIGTERM): {text}"
            click.echo(text, err=True)
            sys.exit(code)
        except BrokenPipeError:  # `mmea ... | head`: the reader stopped early; not an error
            import os

            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            except (OSError, ValueError):  # stdout is not a real file (tests, embedding)
                pass
            sys.exit(0)
        except Exception as e:  # noqa: BLE001 - the top-level handler
            from .errors import MmeaError

            verbose = (ctx.obj or {}).get("verbose", 0)
            if verbose:
                import traceback

                traceback.print_exc()
            if isinstance(e, MmeaError):
                click.echo(f"error: {e.message}", err=True)
                if e.hint:
                    click.echo(f"hint: {e.hint}", err=True)
                sys.exit(e.exit_code)
            click.echo(f"error: {type(e).__name__}: {e}", err=True)
            if not verbose:
                click.echo("hint: run with -v for the traceback", err=True)
            sys.exit(1)


@click.group(cls=MmeaGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mmea")
@click.option("-v", "--verbose", count=True, help="More log output; -v also shows tracebacks.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.pass_context
def main(ctx, verbose, quiet):
    """mmea: multi-modal entity alignment between two knowledge graphs.

    Load two KGs (benchmarks by name or your own folders), encode their
    names, images, attributes and structure, align them, and export the
    alignment with metrics.
    """
    ctx.obj = {"verbose": verbose, "quiet": quiet}
    _setup_logging(verbose, quiet)
    _install_signal_handlers()
    from .allocator import tune_allocator

    tune_allocator()  # large tensor blocks stay in the process (see mmea/allocator.py)


def common_run_options(f):
    """--config/--set/--seed/--device/--out shared by every command that runs something."""
    f = click.option("--out", "out", type=click.Path(file_okay=False), default=None,
                     help="Run directory (default: runs/<command>-<dataset>-<time>); new or empty, "
                          "unless --overwrite.")(f)
    f = click.option("--device", default=None, help="auto | cpu | cuda[:N] (default auto).")(f)
    f = click.option("--seed", type=int, default=None, help="Random seed (default 0).")(f)
    f = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Override a config value, e.g. --set search.csls_k=5 (repeatable).")(f)
    f = click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                     help="A run config TOML file (see pipelines/).")(f)
    return f


def overwrite_option(f):
    """--overwrite of the commands that write a run directory."""
    return click.option("--overwrite", is_flag=True, default=False,
                        help="--out holds an earlier run: clear it first (without this, a non-empty --out is "
                             "refused, so two runs never mix their files).")(f)


def resume_options(f):
    """--resume RUN_DIR and --checkpoint-every N of the commands that train."""
    f = click.option("--checkpoint-every", type=click.IntRange(min=0), default=1, show_default=True, metavar="N",
                     help="Write RUN_DIR/checkpoint.pt every N epochs (0: only on Ctrl-C).")(f)
    f = click.option("--resume", default=None, metavar="RUN_DIR", type=click.Path(),
                     help="Continue an interrupted run with its own config.toml (no other option but "
                          "--checkpoint-every).")(f)
    return f


#: what may be given together with --resume (it does not change the results)
RESUME_COMPATIBLE = ("resume", "checkpoint_every")


def _reject_options_with_resume(ctx: click.Context, command: str) -> None:
    """--resume takes every setting from RUN_DIR/config.toml: any other option is a usage error (exit 2)."""
    from click.core import ParameterSource

    from .errors import MmeaInputError

    given = [p for p in ctx.command.params if p.name not in RESUME_COMPATIBLE
             and ctx.get_parameter_source(p.name) not in (ParameterSource.DEFAULT, None)]
    if given:
        names = ", ".join(p.opts[-1] if p.opts else p.name for p in given)
        raise MmeaInputError(f"--resume continues the run with its own config.toml, so {names} cannot be given "
                             f"with it", hint=f"drop {names}, or start a new run: mmea {command} --config "
                                          f"RUN_DIR/config.toml ...")


def data_options(f):
    f = click.option("--use-dataset-split", is_flag=True, default=None,
                     help="Use the train/test split files the dataset ships instead of a seeded split.")(f)
    f = click.option("--seed-ratio", type=float, default=None,
                     help="Fraction of gold links used as seeds (train+valid); default per dataset.")(f)
    f = click.option("--data-dir", default=None, type=click.Path(file_okay=False),
                     help="Folder with the benchmark datasets (or set MMEA_DATA_DIR).")(f)
    f = click.option("--links", default=None, type=click.Path(dir_okay=False),
                     help="Gold links file for --src DIR1 --tgt DIR2 (TSV: src_entity<TAB>tgt_entity).")(f)
    f = click.option("--pair", default=None, help="A pair folder in any supported layout, or a catalog pair name.")(f)
    f = click.option("--tgt", default=None, help="Target KG: catalog name (dbp_en) or a TSV KG folder.")(f)
    f = click.option("--src", default=None, help="Source KG: catalog name (dbp_zh) or a TSV KG folder.")(f)
    return f


def _base_from_options(seed, device, **sections) -> dict:
    base: dict = {}
    if seed is not None:
        base["seed"] = seed
    if device is not None:
        base["device"] = device
    for section, values in sections.items():
        vals = {k: v for k, v in values.items() if v is not None}
        if vals:
            base[section] = vals
    return base


def _data_section(src, tgt, pair, links, data_dir, seed_ratio, use_dataset_split) -> dict:
    d = {"src": src, "tgt": tgt, "pair": pair, "links": links, "data_dir": data_dir, "seed_ratio": seed_ratio,
         "use_dataset_split": use_dataset_split}
    if pair and not src and not tgt:
        d["src"] = d["tgt"] = ""
    return d


@main.command(epilog=EPILOG_ALIGN)
@data_options
@click.option("--model", default=None, help="Alignment model (mmea ls models). Default: the strongest for the "
              "task (selfmea when names agree on the seed links, its structure from the relational graph "
              "encoder; else relational-gnn with names off; label-propagation above 50,000 entities, with names "
              "when they agree).")
@click.option("--match", default=None, help="Final matching: none | greedy | mutual | reciprocal | hungarian | sinkhorn.")
@click.option("--topk", type=int, default=None, help="Candidates written per source entity (default 1).")
@click.option("--candidates", type=click.Choice(["test", "all"]), default=None,
              help="Rank against the test targets (benchmark protocol) or all target entities.")
@click.option("--name-encoder", default=None, help="auto | char-ngram | sentence-transformers.")
@click.option("--name-model", default=None, help="Sentence-transformers model name or local folder.")
@click.option("--name-source", default=None, help="auto | uri | name | translated.")
@click.option("--modalities", default=None,
              help="Modalities of models that take them (selfmea): structure,names,images,relations,attributes,anchors. "
                   "Without names, no name-derived feature enters the run (--set features.names=off for any model).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default=None,
              help="Where the search (and engine.partitions > 1) runs: local (this process, default) or ray "
                   "(an embedded local Ray cluster, or the one at --ray-address; docs/scale.md).")
@click.option("--ray-address", default=None, metavar="ADDR",
              help="Join the Ray cluster at ADDR (`ray start --head` prints it); implies --engine ray.")
@common_run_options
@overwrite_option
@resume_options
@click.pass_context
def align(ctx, src, tgt, pair, links, data_dir, seed_ratio, use_dataset_split, model, match, topk, candidates,
          name_encoder, name_model, name_source, modalities, engine, ray_address, config_path, overrides, seed, device,
          out, overwrite, resume, checkpoint_every):
    """Align two KGs and write alignment.csv, metrics.json, config.toml, checkpoints and a log.

    --resume RUN_DIR continues an interrupted run from its checkpoint.pt with
    the run's own config.toml, and writes the results into RUN_DIR.
    """
    from .pipelines import JOBS

    job = JOBS["align"]
    if resume:
        _reject_options_with_resume(ctx, "align")
        cfg, run_dir = job.resume_config(resume), Path(resume)
    else:
        base = _base_from_options(
            seed, device,
            data=_data_section(src, tgt, pair, links, data_dir, seed_ratio, use_dataset_split),
            features={"name_encoder": name_encoder, "name_model": name_model, "name_source": name_source},
            model={"name": model, "modalities": modalities},
            search={"match": match, "topk": topk, "candidates": candidates},
            engine={"name": engine or ("ray" if ray_address else None), "address": ray_address},
        )
        cfg = job.load_config(config_path, list(overrides), base)
        run_dir = Path(out) if out else job.default_run_dir(cfg)
    metrics = job.run(cfg, run_dir, resume=bool(resume), overwrite=overwrite, progress=not ctx.obj["quiet"],
                      checkpoint_every=checkpoint_every)
    _print_align_summary({"metrics": metrics, "metrics_path": run_dir / "metrics.json",
                          "alignment": run_dir / "alignment.csv", "run_dir": run_dir})


def _print_align_summary(result: dict) -> None:
    m = result["metrics"]
    t = m.get("test") or {}
    if t:
        click.echo(f"{m['dataset']} / {m['model']}: H@1 {t['hits@1']:.4f}  H@10 {t['hits@10']:.4f}  "
                   f"MRR {t['mrr']:.4f}  ({m.get('primary', '')}, {m['split']['test']} test links)")
        if "hits@1_one_to_one" in t:
            click.echo(f"one-to-one assignment H@1 {t['hits@1_one_to_one']:.4f}  ({t['one_to_one']['solver']})")
        rec = m.get("test_by_method", {}).get("src->tgt/reciprocal")
        if rec is not None:
            click.echo(f"reciprocal ranking H@1 {rec['hits@1']:.4f}  MRR {rec['mrr']:.4f}  (both sides' preferences"
                       + (f"; {rec['ranks_from']})" if rec.get("ranks_from") else ")"))
    else:
        click.echo(f"{m['dataset']} / {m['model']}: no gold test links, evaluation skipped")
    if "matched" in m:
        mm = m["matched"]
        click.echo(f"matching {mm['method']}: {mm['pairs']} pairs, H@1 {mm.get('hits@1', float('nan')):.4f}")
    click.echo(f"alignment: {result['alignment']}")
    click.echo(f"metrics:   {result['metrics_path']}")
    click.echo(f"report:    mmea report {result['run_dir']}   (writes {Path(result['run_dir']) / 'report.html'})")
    click.echo(f"time: {m['timings']['total_s']:.1f} s")


@main.command(epilog="""\b
Examples:
  mmea evaluate --alignment runs/demo/alignment.csv --gold links.tsv
  mmea evaluate --alignment other_tool.csv --gold ref_ent_ids
""")
@click.option("--alignment", "alignment", required=True, type=click.Path(dir_okay=False),
              help="Alignment CSV (needs src_id, tgt_id; optional score, rank).")
@click.option("--gold", required=True, type=click.Path(dir_okay=False),
              help="Gold links: two columns src_id tgt_id (tab or space separated).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def evaluate(alignment, gold, as_json):
    """Score any alignment CSV (also from other tools) against gold links.

    Prints which format was read (header or headerless, columns used, skipped
    lines). With several candidates per source it also reports hits@k, MRR and MR;
    a gold target missing from its source's candidates is a miss at every k (see
    docs/export.md).
    """
    import json

    from .export import evaluate_alignment_file

    res = evaluate_alignment_file(alignment, gold)
    if as_json:
        click.echo(json.dumps(res, indent=2, default=str))
        for w in res["warnings"]:
            click.echo(f"warning: {w}", err=True)
        return
    _print_evaluation(res)


def _print_evaluation(res: dict) -> None:
    """The text form of :func:`mmea.export.evaluate_alignment_file`'s result."""
    click.echo(res["format"]["description"])
    for w in res["warnings"]:
        click.echo(f"warning: {w}", err=True)
    for k, v in res.items():
        if k in ("format", "warnings", "ranking"):
            continue
        click.echo(f"{k:20s} {v:.4f}" if isinstance(v, float) else f"{k:20s} {v}")
    rk = res.get("ranking")
    if rk:
        click.echo(f"ranking over the candidate lists (at most {rk['max_candidates']} per source; "
                   f"{rk['gold_found']} of {rk['num_gold_pairs']} gold targets among them):")
        for k, v in rk.items():
            if k in ("missing_gold", "max_candidates", "num_gold_pairs", "gold_found"):
                continue
            click.echo(f"  {k:18s} {v:.4f}" if isinstance(v, float) else f"  {k:18s} {v}")
        if rk["gold_missing"]:
            click.echo(f"  note: {rk['missing_gold']}")


@main.command("export", epilog="""\b
Examples:
  mmea export runs/demo                          # every predicted pair + est_precision -> runs/demo/export.csv
  mmea export runs/demo --min-precision 0.95     # only pairs estimated >= 95% precise
  mmea export runs/demo --min-precision 0.9 --format jsonl --out pairs.jsonl
  mmea export runs/demo --min-precision 0.95 --format nt --out same_as.nt
  mmea export runs/x --format nt --src-base-iri http://example.org/kg1/ --tgt-base-iri http://example.org/kg2/
""")
@click.argument("run_dir", type=click.Path())
@click.option("--min-precision", type=float, default=None, metavar="P",
              help="Keep the pairs whose estimated precision is >= P, in (0, 1]. Default: keep every pair.")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl", "nt"]), default="csv", show_default=True,
              help="CSV, JSON Lines (one object per pair) or owl:sameAs N-Triples.")
@click.option("--out", default=None, metavar="FILE",
              help="Output file ('-' for stdout). Default: RUN_DIR/export[-pP].csv|jsonl|nt.")
@click.option("--topk", type=int, default=1, show_default=True,
              help="Rows per kept source: its predicted pair plus up to topk-1 alternatives from alignment.csv.")
@click.option("--feature", type=click.Choice(["margin", "score", "margin+uncertainty"]), default=None,
              help="Calibrate on this feature (refitted from valid_scores.npz). Default: the run's (the margin, "
                   "or margin+uncertainty where the run's valid links chose the variance).")
@click.option("--src-base-iri", default=None, metavar="IRI",
              help="N-Triples: mint IRIs for source entities without one as IRI + id (default: skip them).")
@click.option("--tgt-base-iri", default=None, metavar="IRI", help="N-Triples: the same for target entities.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def export_cmd(run_dir, min_precision, fmt, out, topk, feature, src_base_iri, tgt_base_iri, as_json):
    """Export a run's alignment with calibrated precision estimates, optionally only pairs meeting a target.

    Reads RUN_DIR/alignment.csv and RUN_DIR/calibration.json (fitted on the
    validation links by mmea align), adds est_precision to each source's
    predicted pair, keeps those >= --min-precision, and reports how many pairs
    were exported (coverage of the query sources) and, when the run has gold
    test links, the precision measured on them.  See docs/export.md.
    """
    import json

    from .export import export_run

    to_stdout = out == "-"
    echo = (lambda msg: click.echo(msg, err=True)) if to_stdout else click.echo
    summary = export_run(run_dir, min_precision=min_precision, fmt=fmt, out=out, topk=topk, feature=feature,
                         src_base_iri=src_base_iri, tgt_base_iri=tgt_base_iri,
                         stream=click.get_text_stream("stdout") if to_stdout else None)
    if as_json:
        echo(json.dumps(summary, indent=2, default=str))
        for w in summary["warnings"]:
            click.echo(f"warning: {w}", err=True)
        return
    _print_export_summary(summary, echo)


def _print_export_summary(summary: dict, echo) -> None:
    """The text form of :func:`mmea.export.export_run`'s summary."""
    cal, min_precision = summary["calibration"], summary["min_precision"]
    for w in summary["warnings"]:
        echo(f"warning: {w}")
    if cal["available"]:
        echo(f"calibration: isotonic on the {cal['feature']}, {cal['n_valid']} validation links "
             f"(valid H@1 {cal['valid_hits@1']:.3f})")
        if cal.get("variance"):
            echo(f"variance (chosen by the run's validation links): {cal['variance']['reason']}")
        if cal["few_valid"]:
            echo(f"warning: only {cal['n_valid']} validation links, so the precision estimates are coarse "
                 f"(more seeds or --set data.valid_ratio=0.3 give more)")
    else:
        echo(f"warning: no calibration for this run ({cal['reason']}): est_precision is empty")
    if summary.get("nt_skipped"):
        echo(f"warning: skipped {summary['nt_skipped']} pairs whose source or target has no absolute IRI "
             f"(e.g. {', '.join(repr(x) for x in summary['nt_skipped_examples'])}); "
             f"--src-base-iri / --tgt-base-iri mint IRIs for them")
    target = f" with estimated precision >= {min_precision:g}" if min_precision else ""
    mean = summary["mean_est_precision"]
    echo(f"exported {summary['exported_pairs']} of {summary['sources']} sources (coverage "
         f"{summary['coverage']:.3f}){target}" + (f", mean estimate {mean:.3f}" if mean is not None else "")
         + f": {summary['out']}")
    if summary["exported_pairs"] == 0 and min_precision and cal["available"]:
        echo(f"no pair reaches {min_precision:g}: the highest estimate of this calibration is "
             f"{cal['max_estimate']:.3f}")
    elif "test_precision" in summary:
        echo(f"test precision of the exported pairs: {summary['test_precision']:.4f} "
             f"({summary['test_correct']} of {summary['test_judged']} with a gold test link correct)")
    elif summary["exported_pairs"]:
        echo("test precision: not measured (no gold test links in alignment.csv)")


@main.command("report", epilog="""\b
Examples:
  mmea report runs/demo                          # -> runs/demo/report.html
  mmea report runs/demo --out demo-report.html
""")
@click.argument("run_dir", type=click.Path())
@click.option("--out", default=None, metavar="FILE.html", help="Output file. Default: RUN_DIR/report.html.")
def report_cmd(run_dir, out):
    """Write a self-contained HTML report of an mmea align run (figures embedded, no external files).

    Sections: the run (dataset, model, split, name encoder, notes, timings),
    training curves, Hits@k against k, score and margin histograms of correct
    vs incorrect pairs, precision against coverage from the calibration,
    modality weights (selfmea) or variances (gaussian), and the most confident
    errors with names.  A section the run has no data for says why.  See docs/report.md.
    """
    from .report import write_report

    path, sections = write_report(run_dir, out)
    click.echo(f"report: {path}")
    for s in sections:
        if not s.available:
            click.echo(f"  {s.title}: not available: {s.reason}")


@main.command(epilog="""\b
Examples:
  mmea features                                  # the demo pair, every modality
  mmea features --src dbp_zh --tgt dbp_en --data-dir ../shared/datasets --modalities names,relations
""")
@data_options
@click.option("--modalities", default="names,images,numeric,relations,attributes", show_default=True,
              help="Comma-separated modalities to compute.")
@click.option("--name-encoder", default=None, help="auto | char-ngram | sentence-transformers.")
@click.option("--name-model", default=None, help="Sentence-transformers model name or local folder.")
@click.option("--name-source", default=None, help="auto | uri | name | translated.")
@click.option("--image-encoder", default=None, help="resnet152 | vgg16.")
@click.option("--image-weights", default=None, type=click.Path(dir_okay=False), help="Local weights file.")
@click.option("--image-features", default=None, help="Precomputed image features (pickle/npy/npz/h5), comma-separated.")
@click.option("--random-image-weights", is_flag=True, default=None,
              help="Allow random-weight image features when no pretrained weights exist (labelled as such).")
@click.option("--modality-option", "modality_options", multiple=True, metavar="MODALITY.KEY=VALUE",
              help="An option of a modality encoder, e.g. numeric.centres=16 (repeatable; `mmea ls modalities`).")
@common_run_options
@click.pass_context
def features(ctx, src, tgt, pair, links, data_dir, seed_ratio, use_dataset_split, modalities, name_encoder,
             name_model, name_source, image_encoder, image_weights, image_features, random_image_weights,
             modality_options, config_path, overrides, seed, device, out):
    """Precompute and cache the per-modality features of a task; report sizes, coverage and time."""
    import sys as _sys

    from .pipelines.align_config import load_config
    from .data.catalog import load_task_from_config
    from .features import FeatureStore, compute_task_features, feature_options_from_config, parse_modalities
    from .modalities import parse_modality_options
    from .runs import resolve_device

    base = _base_from_options(
        seed, device, data=_data_section(src, tgt, pair, links, data_dir, seed_ratio, use_dataset_split),
        features={"name_encoder": name_encoder, "name_model": name_model, "name_source": name_source,
                  "image_encoder": image_encoder, "image_weights": image_weights, "image_features": image_features,
                  "random_image_weights": random_image_weights})
    cfg = load_config(config_path, list(overrides), base)
    per_modality = parse_modality_options(modality_options)  # checked before any data is read
    progress = not ctx.obj["quiet"] and _sys.stderr.isatty()
    task = load_task_from_config(cfg.data, cfg.seed, progress)
    opts = feature_options_from_config(cfg.features, device=resolve_device(cfg.device), seed=cfg.seed,
                                       progress=progress, modality_options=per_modality)
    store = FeatureStore(Path(out) if out else None, enabled=cfg.features.cache)
    feats = compute_task_features(task, parse_modalities(modalities), opts, store)
    click.echo(feats.format_summary())


@main.command(epilog="""\b
Examples:
  mmea linkpred --dataset fb15k237 --data-dir ../shared/datasets
  mmea linkpred --dataset fb15k237 --model distmult --sampler bernoulli --loss softplus --epochs 50
  mmea linkpred --dataset path/to/folder --set max_minutes=5
  mmea linkpred --resume runs/linkpred-fb15k237-transe-uniform-20250101-120000   # after Ctrl-C
""")
@click.option("--dataset", default="fb15k237", show_default=True, help="Catalog name or a folder with train/valid/test.txt.")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False))
@click.option("--model", default="transe", show_default=True, help="transe | distmult | rotate.")
@click.option("--sampler", default="uniform", show_default=True, help="Negative sampler (mmea ls samplers).")
@click.option("--loss", default="self-adversarial", show_default=True, help="Loss (mmea ls losses).")
@click.option("--dim", type=int, default=200, show_default=True)
@click.option("--epochs", type=int, default=300, show_default=True)
@click.option("--num-negatives", type=int, default=256, show_default=True)
@click.option("--config", "config_file", default=None, type=click.Path(dir_okay=False),
              help="TOML file: [source] (dataset, data_dir) and [linkpred] sections, or flat keys / a [linkpred] "
                   "table; options given on the command line and --set win over it.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Any other training option: KEY (= linkpred.KEY) or section.KEY, e.g. --set lr=0.01 (repeatable).")
@click.option("--seed", type=int, default=0)
@click.option("--device", default="auto")
@click.option("--out", default=None, type=click.Path(file_okay=False))
@overwrite_option
@resume_options
@click.pass_context
def linkpred(ctx, dataset, data_dir, model, sampler, loss, dim, epochs, num_negatives, config_file, overrides, seed,
             device, out, overwrite, resume, checkpoint_every):
    """Train a link-prediction model (early stopping on valid MRR) and report filtered MR, MRR, Hits@1/3/10.

    --resume RUN_DIR continues an interrupted run from its checkpoint.pt with the run's own config.toml.
    """
    cfg, run_dir = _job_config_and_dir(ctx, "linkpred", resume, config_file, overrides, out, {
        "dataset": dataset, "data_dir": data_dir, "model": model, "sampler": sampler, "loss": loss, "dim": dim,
        "epochs": epochs, "num_negatives": num_negatives, "seed": seed, "device": device})
    metrics = _run_job("linkpred", cfg, run_dir, ctx, resume, overwrite, checkpoint_every)
    t = metrics.get("test", {})
    if t:
        click.echo("test (filtered): " + "  ".join(f"{k} {v:.4f}" for k, v in t.items() if isinstance(v, float)))
    click.echo(f"metrics: {run_dir / 'metrics.json'}")


def _job_config_and_dir(ctx, name: str, resume, config_file, overrides, out, options: dict):
    """``(config, run directory)`` of a training job's command: the run's own config with ``--resume``
    (no other option allowed), else :func:`_job_config` and ``--out`` (or the job's default folder)."""
    import dataclasses

    from .pipelines import JOBS
    from .runs import resolve_device

    job = JOBS[name]
    if resume:
        _reject_options_with_resume(ctx, {"clep": "pretrain-clep"}.get(name, name))
        return job.resume_config(resume), Path(resume)
    cfg = _job_config(ctx, job, config_file, overrides, options)
    main = getattr(cfg, job.MAIN)  # the device is resolved once, here (auto -> cpu / cuda:0)
    cfg = dataclasses.replace(cfg, **{job.MAIN: dataclasses.replace(main, device=resolve_device(main.device))})
    return cfg, Path(out) if out else job.default_run_dir(cfg)


def _run_job(name: str, cfg, run_dir: Path, ctx, resume, overwrite: bool, checkpoint_every: int) -> dict:
    from .pipelines import JOBS

    return JOBS[name].run(cfg, run_dir, resume=bool(resume), overwrite=overwrite, progress=not ctx.obj["quiet"],
                          checkpoint_every=checkpoint_every)


#: command-line options whose config key has another name (--finetune-text = --set text_finetune=true)
OPTION_KEYS = {"finetune_text": "text_finetune"}


def _job_config(ctx, job, path, overrides, options: dict):
    """A job's config from its command's options, ``--config FILE.toml`` and ``--set``, checked once.

    Layers, later ones winning: the options left at their defaults, the file (any layout the job
    reads: sections, flat keys, a ``[linkpred]`` / ``[clep]`` table), the options given on the
    command line, then the ``--set`` overrides (``section.key=value``; a key without a section
    goes to the job's main section).  An unknown key lists the valid ones; a missing file or bad
    TOML is an input error naming the file.
    """
    from click.core import ParameterSource

    from .config import read_toml

    given = {k: v for k, v in options.items() if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
    layers = [{k: v for k, v in options.items() if k not in given and v is not None},
              read_toml(path) if path else {}, {k: v for k, v in given.items() if v is not None}]
    for layer in layers:  # option names that are not the config key
        for option, key in OPTION_KEYS.items():
            if option in layer:
                layer[key] = layer.pop(option)
    base: dict = {}
    for layer in layers:
        for k, v in job.normalise(layer).items():
            base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return job.load_config(None, list(overrides), base)


@main.command("pretrain-clep", epilog="""\b
Examples:
  mmea pretrain-clep --dataset fb15k237 --data-dir ../shared/datasets --out runs/clep-fb15k237
  mmea pretrain-clep --dataset fb15k237 --graph-encoder rgcn --epochs 5 --set max_minutes=6
  mmea pretrain-clep --dataset path/to/folder --text-encoder all-MiniLM-L6-v2    # a cached model
  mmea pretrain-clep --dataset path/to/folder --text-encoder DIR --finetune-text --set text_lr=2e-5
  mmea pretrain-clep --dataset fb15k237 --set descriptions_file=entity2textlong.txt
  mmea link-mention --kg runs/clep-fb15k237 "the capital of Germany"
  mmea linkpred --dataset fb15k237 --dim 200 --set init_from=runs/clep-fb15k237   # fine-tune from CLEP
  mmea pretrain-clep --resume runs/clep-fb15k237-embedding-20250101-120000   # after Ctrl-C
""")
@click.option("--dataset", default="fb15k237", show_default=True,
              help="Catalog name or a folder with train/valid/test.txt (+ entity2text.txt, entity2textlong.txt).")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False))
@click.option("--graph-encoder", default=None, help="embedding | rgcn (default embedding).")
@click.option("--text-encoder", default=None,
              help="offline (char n-grams, default) or a sentence-transformers hub name / local folder (frozen).")
@click.option("--finetune-text", is_flag=True, default=False,
              help="Fine-tune the sentence-transformers text encoder too (= --set text_finetune=true; slow on CPU).")
@click.option("--epochs", type=int, default=None, help="Maximum epochs (default 30; early stopping on valid MRR).")
@click.option("--dim", type=int, default=None, help="Graph embedding size (default 200).")
@click.option("--batch-size", type=int, default=None, help="Triples per batch = in-batch negatives + 1 (default 1024).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Any other CLEP option (docs/clep.md), e.g. --set proj_dim=64 (repeatable).")
@click.option("--config", "config_file", default=None, type=click.Path(dir_okay=False),
              help="TOML file: [source] (dataset, data_dir) and [clep] sections, or flat keys / a [clep] table; "
                   "command-line options and --set win over it.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or auto.")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Run directory (default runs/clep-<dataset>-<encoder>-<time>).")
@overwrite_option
@resume_options
@click.pass_context
def pretrain_clep(ctx, dataset, data_dir, graph_encoder, text_encoder, finetune_text, epochs, dim, batch_size,
                  overrides, config_file, seed, device, out, overwrite, resume, checkpoint_every):
    """Pre-train CLEP (graph encoder <-> entity texts, symmetric contrastive loss) and evaluate link prediction
    across spaces (filtered MR, MRR, Hits@1/10).

    Writes config.toml, metrics.json, model.pt, embeddings.npz, text_encoder.json
    (+ text_encoder/, the fine-tuned model, with --finetune-text) and the cosine
    distribution of correct vs incorrect pairs (cosine_pairs.npz, cosine_hist.png).
    See docs/clep.md.
    """
    cfg, run_dir = _job_config_and_dir(ctx, "clep", resume, config_file, overrides, out, {
        "dataset": dataset, "data_dir": data_dir, "graph_encoder": graph_encoder, "text_encoder": text_encoder,
        "finetune_text": True if finetune_text else None, "epochs": epochs, "dim": dim, "batch_size": batch_size,
        "seed": seed, "device": device})
    res = {"metrics": _run_job("clep", cfg, run_dir, ctx, resume, overwrite, checkpoint_every), "run_dir": run_dir}
    m = res["metrics"]
    t = m.get("test", {})
    if t:
        click.echo("test across spaces (filtered): " + "  ".join(f"{k} {t[k]:.4f}" for k in
                                                              ("mr", "mrr", "hits@1", "hits@3", "hits@10")))
    if m.get("cosine"):
        c = m["cosine"]
        click.echo(f"cosine: correct {c['mean_correct']:.3f}, incorrect {c['mean_incorrect']:.3f} (AUC {c['auc']:.3f})")
    click.echo(f"run: {res['run_dir']}   (mmea link-mention --kg {res['run_dir']} \"TEXT\")")


@main.command("link-mention", epilog="""\b
Examples:
  mmea link-mention --kg runs/clep-fb15k237 "Barack Obama"
  mmea link-mention --kg fb15k237 --topk 5 "a city in northern Germany"   # newest runs/clep-fb15k237-*
  mmea link-mention --kg runs/clep-fb15k237 --json "Paris"
""")
@click.option("--kg", "kg", required=True, metavar="NAME_OR_RUN",
              help="A pretrain-clep run directory, or a dataset name (its newest runs/clep-NAME-* run).")
@click.option("--topk", type=int, default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.argument("mention")
def link_mention_cmd(kg, topk, as_json, mention):
    """Link a free-text MENTION to the entities whose CLEP graph embedding is closest (zero-shot).

    score(e) = cos(MLP_g(h_e + rho_self), MLP_t(TextEncoder(MENTION))): the
    entity's graph embedding with the identity relation (docs/clep.md).
    """
    import json

    from .clep.mention import link_mention, resolve_clep_run

    run = resolve_clep_run(kg)
    hits = link_mention(run, mention, topk)
    if as_json:
        click.echo(json.dumps({"run": str(run), "mention": mention, "entities": hits}, indent=2))
        return
    for h in hits:
        click.echo(f"{h['rank']:3d}  {h['score']:.4f}  {h['id']}  {h['name']}")


@main.command(epilog="""\b
Examples:
  mmea bench pipelines/demo.toml                 # 2 models x 2 seeds on the demo pair
  mmea bench pipelines/demo.toml --dry-run       # list the cells and what would run
  mmea bench pipelines/demo.toml --only propagation --force
  mmea bench pipelines/gaussian_fb15k_db15k.toml --seed 0   # one seed of every setting first
  mmea bench pipelines/gaussian_fb15k_db15k.toml --table-only   # rewrite the table, run nothing
  mmea bench pipelines/gaussian_strong_mmkg.toml --only gs-50 --dataset fb15k_db15k --seed 0
  mmea bench pipelines/negative_sampling_fb15k237.toml --data-dir ../shared/datasets
""")
@click.argument("pipeline", type=click.Path(dir_okay=False))
@click.option("--only", multiple=True, metavar="LABEL",
              help="Run only this row (repeatable); the table keeps the others' finished cells.")
@click.option("--seed", "seeds", multiple=True, type=int, metavar="N",
              help="Run only the cells of this seed (repeatable), e.g. one seed of every setting first.")
@click.option("--dataset", "datasets", multiple=True, metavar="LABEL",
              help="Run only the cells of this dataset (repeatable; the labels the table shows).")
@click.option("--force", is_flag=True, help="Rerun finished cells too.")
@click.option("--dry-run", is_flag=True, help="List the cells and what would be done; run nothing.")
@click.option("--table-only", is_flag=True, help="Run nothing: write the table from the finished cells.")
@click.option("--results-dir", default="results", show_default=True, type=click.Path(file_okay=False),
              help="Where <name>.json and <name>.md are written.")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False),
              help="Folder with the benchmark datasets, where the pipeline does not say (or set MMEA_DATA_DIR).")
@click.pass_context
def bench(ctx, pipeline, only, seeds, datasets, force, dry_run, table_only, results_dir, data_dir):
    """Run a pipeline's grid (rows x datasets x seeds), skipping finished cells; write a table of mean ± std.

    Each cell runs into <out>/<row>[-<dataset>]-seed<seed>/; the results go to
    <results-dir>/<name>.json and <name>.md.  The format is in docs/bench.md.
    Exit code 1 when a cell failed (the others still run and are tabulated).
    """
    from .bench import STATUSES, comparison_console_lines, load_pipeline, run_bench
    from .errors import MmeaError

    pipe = load_pipeline(pipeline, data_dir=data_dir)
    report = run_bench(pipe, only=only, seeds=seeds, datasets=datasets, force=force, dry_run=dry_run,
                       table_only=table_only, results_dir=results_dir,
                       quiet=ctx.obj["quiet"], verbose=ctx.obj["verbose"], echo=click.echo,
                       command=f"mmea bench {pipeline}")
    if dry_run:
        return
    counts = {s: sum(r.status == s for r in report.results) for s in STATUSES}
    click.echo(f"{len(report.results)} cells: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
    for line in comparison_console_lines(report):
        click.echo(line)
    click.echo(f"table:   {report.md_path}")
    click.echo(f"results: {report.json_path}")
    if report.failed:
        first = report.failed[0]
        raise MmeaError(f"{len(report.failed)} of {len(report.results)} cells failed; "
                        f"first: {first.cell.name}: {first.error}",
                        hint=f"the errors are in {report.json_path}; each cell's log is in its run.log")


@main.command(epilog="""\b
Examples:
  mmea reproduce results/selfmea_dbp15k.json propagation-seeded-fr_en-seed0 --data-dir ../shared/datasets
  mmea reproduce results/clep_fb15k237.json clep-embedding-seed0 --set clep.epochs=10 --set clep.max_minutes=600
""")
@click.argument("results", type=click.Path(dir_okay=False))
@click.argument("cell")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False),
              help="Folder with the benchmark datasets (the record keeps the path the bench was given).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Change the recorded config (e.g. pin a time-budgeted cell's epochs); recorded with the result.")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Run directory (default runs/reproduce/<cell>; an earlier one there is replaced).")
@click.option("--record", default=None, type=click.Path(dir_okay=False),
              help="Append the comparison as a Markdown section to this file (e.g. results/reproduction.md).")
@click.pass_context
def reproduce(ctx, results, cell, data_dir, overrides, out, record):
    """Re-run one cell of a committed bench results file from its recorded config; compare the metrics.

    Every recorded numeric metric except timings must agree to the 4th decimal; exit code 1 when
    one does not.  See mmea/reproduce.py for what a recorded config cannot say.
    """
    import sys as _sys

    from .errors import MmeaError
    from .reproduce import reproduce_cell
    from .runs import code_commit

    rep = reproduce_cell(results, cell, data_dir=data_dir, out=out, overrides=list(overrides),
                         progress=not ctx.obj["quiet"] and _sys.stderr.isatty())
    for line in rep.lines():
        click.echo(line)
    if record:
        with open(record, "a", encoding="utf-8") as f:
            f.write("\n" + rep.markdown(code_commit()))
        click.echo(f"recorded in {record}")
    if not rep.all_equal:
        raise MmeaError(f"{cell}: the re-run differs from {results}")


# ---------------------------------------------------------------- datasets
@main.group(epilog="""\b
Examples:
  mmea datasets list
  mmea datasets info dbp15k_zh_en --data-dir ../shared/datasets
  mmea datasets download dbp15k_zh_en
  mmea datasets synth --entities 15000 --seed 0 --out /tmp/synth15k
""")
def datasets():
    """List, inspect and download benchmark datasets; generate synthetic pairs."""


@datasets.command("list", epilog="""\b
Examples:
  mmea datasets list
  MMEA_DATA_DIR=../shared/datasets mmea datasets list   # where each one is found
""")
def datasets_list():
    """List the catalogued datasets and where each is found."""
    from .data.catalog import candidate_roots, load_catalog, _missing

    cat = load_catalog()
    click.echo("Benchmark pairs (--src SRC --tgt TGT, or --pair NAME):")
    for e in cat.entries.values():
        if e.generated:
            where = "built in (generated on first use)"
        else:
            where = "not found locally (mmea datasets download %s)" % e.name
            for why, root in candidate_roots(None):
                if not _missing(e, root):
                    where = f"{root} ({why})"
                    break
        sides = f"--src {e.src} --tgt {e.tgt}" if e.kind == "pair" and not e.selectable_only_by_name else \
            f"--pair {e.name}" if e.kind == "pair" else f"mmea linkpred --dataset {e.name}"
        click.echo(f"  {e.name:22s} {sides:32s} {where}")
        click.echo(f"  {'':22s} {e.description}")


@datasets.command("info", epilog="""\b
Examples:
  mmea datasets info fb15k_db15k --data-dir ../shared/datasets
  mmea datasets info demo --json
""")
@click.argument("name")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def datasets_info(name, data_dir, as_json):
    """Counts per side (entities, relations, triples, links, attributes, images) and load time.

    NAME is a catalog pair (dbp15k_zh_en), a KG name (dbp_zh: its first pair), or a folder.
    """
    import json

    from .data.catalog import load_catalog, load_linkpred_dataset, load_pair_task

    t0 = time.perf_counter()
    if not Path(name).exists() and load_catalog().get(name).kind == "linkpred":
        ds = load_linkpred_dataset(name, data_dir)
        info = ds.summary()
    else:
        task = load_pair_task(None, None, pair=name, data_dir=data_dir)
        info = task.summary()
    info["load_s"] = round(time.perf_counter() - t0, 3)
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    click.echo(f"{info['name']}  (loaded in {info['load_s']:.2f} s)")
    if "source" in info:
        keys = list(info["source"].keys())
        click.echo(f"  {'':28s}{'source':>12s}{'target':>12s}")
        for k in keys:
            click.echo(f"  {k:28s}{info['source'][k]:>12,}{info['target'][k]:>12,}")
        click.echo(f"  links {info['links']:,}: train {info['split']['train']:,}, valid {info['split']['valid']:,}, "
                   f"test {info['split']['test']:,}")
    else:
        for k, v in info.items():
            if k not in ("notes", "name"):
                click.echo(f"  {k:28s}{v:>12,}" if isinstance(v, int) else f"  {k:28s}{v}")
    for n in info.get("notes", []):
        click.echo(f"  note: {n}")


@datasets.command("download", epilog="""\b
Examples:
  mmea datasets download dbp15k_zh_en     # into $MMEA_HOME/datasets, checksums verified
""")
@click.argument("name")
def datasets_download(name):
    """Download NAME's files from their public sources into the cache, checking checksums."""
    from .data.catalog import download_entry, load_catalog, mmea_home

    entry = load_catalog().get(name)
    root = mmea_home() / "datasets"
    got = download_entry(entry, root)
    click.echo(f"{entry.name}: {len(got)} file(s) downloaded into {root}; all {len(entry.files)} verified")


@datasets.command("synth", epilog="""\b
Examples:
  mmea datasets synth --entities 15000 --seed 0 --out /tmp/synth15k
  mmea datasets synth --entities 1000000 --out /tmp/synth1m --knob avg_degree=12 --knob name_noise=0.3
""")
@click.option("--entities", type=int, default=15_000, show_default=True, help="Entities of the first KG.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed: same bytes).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="New or empty output folder.")
@click.option("--knob", "knobs", multiple=True, metavar="KEY=VALUE",
              help="Set a generator knob (repeatable); the knobs are listed in docs/scale.md.")
@overwrite_option
@click.pass_context
def datasets_synth(ctx, entities, seed, out, knobs, overwrite):
    """Write a synthetic aligned KG pair (kg1/, kg2/, links.tsv; TSV layout) with known gold links."""
    from .data.synth import generate_pair, synth_options

    meta = generate_pair(synth_options(entities, seed, knobs), out, overwrite=overwrite,
                         progress=not ctx.obj["quiet"])
    c = meta["counts"]
    click.echo(f"{out}: kg1 {c['kg1']['entities']:,} entities / {c['kg1']['triples']:,} triples, kg2 "
               f"{c['kg2']['entities']:,} / {c['kg2']['triples']:,}, {c['links']:,} gold links")


# ---------------------------------------------------------------- ls
@main.command("ls", epilog="""\b
Examples:
  mmea ls models
  mmea ls samplers
  mmea ls losses
""")
@click.argument("family", type=click.Choice(["models", "losses", "samplers", "encoders", "modalities", "matchers",
                                             "loaders"]))
def ls(family):
    """List the registered components of a family with a one-line description."""
    reg = _registry(family)
    for name, doc in reg.describe():
        click.echo(f"{name:24s} {doc}")


def _registry(family: str):
    if family == "models":
        from .models import MODELS as reg
    elif family == "loaders":
        from .data.loaders import LOADERS as reg
    elif family == "encoders":
        from .encoders import ENCODERS as reg
    elif family == "modalities":
        from .modalities import MODALITY_ENCODERS as reg
    elif family == "matchers":
        from .search.matching import MATCHERS as reg
    elif family == "samplers":
        from .sampling import SAMPLERS as reg
    elif family == "losses":
        from .losses import LOSSES as reg
    else:
        from .errors import MmeaError

        raise MmeaError(f"no {family} are registered in this version yet")
    return reg


if __name__ == "__main__":  # pragma: no cover
    main()
