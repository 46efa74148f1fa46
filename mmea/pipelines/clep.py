"""The ``mmea pretrain-clep`` job: load a triple dataset -> pre-train CLEP -> link prediction across spaces.

Its config::

    [source]                 where the triples come from (as for mmea linkpred)
    dataset = "fb15k237"
    data_dir = "..."

    [clep]                   the main section: every ClepConfig field (ranges declared there)
    graph_encoder = "rgcn"
    proj_dim = 64

    [finetune]               optional (mmea bench): LinkPredConfig fields of a link-prediction model
    model = "transe"         trained from the CLEP embeddings and from random init, same budget

``--set proj_dim=64`` (no section) is ``--set clep.proj_dim=64``.  Flat keys and a ``[clep]`` table
(the layouts read before) stay readable; a run's ``config.toml`` (``task = "clep"``, ``[clep]``,
``[source]``) is what :func:`resume_config` reads: an interrupted run continues from its
``checkpoint.pt`` (``mmea pretrain-clep --resume RUN_DIR``).

A run writes the files of :data:`mmea.clep.training.CLEP_FILES`, ``checkpoint.pt`` and, last,
``complete.json`` (the SHA-256 of ``embeddings.npz``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..clep.training import ClepConfig, clep_config_from_dict
from ..config import build_dataclass, merge_raw, same_settings
from ..errors import MmeaInputError
from ..linkpred.training import config_from_dict
from . import BenchSpec
from .linkpred import SourceConfig, load_dataset, normalise as normalise_layout, read_run_config, run_in_dir
from .linkpred import bench_base, bench_data_dir, bench_dataset  # noqa: F401  (the same [bench] dataset keys)

NAME = "clep"
MAIN = "clep"
SECTIONS = ("source", "clep", "finetune")
MAIN_OUTPUT = "embeddings.npz"
BENCH = BenchSpec(default_metrics=("mrr", "hits@1", "hits@10", "mr"), tables=("bench", "budget", "defaults", "rows"),
                  bench_keys=("dataset", "data_dir"))


@dataclass(frozen=True)
class Config:
    """The ``mmea pretrain-clep`` job's config: ``[source]``, ``[clep]`` and the optional
    ``finetune`` table (LinkPredConfig fields, checked; ``seed``, ``device`` and ``init_from`` are
    set per fine-tuning run)."""

    source: SourceConfig = field(default_factory=SourceConfig)
    clep: ClepConfig = field(default_factory=ClepConfig)
    finetune: dict | None = None


def normalise(raw: dict) -> dict:
    """Any layout this job ever read or wrote -> ``{"source", "clep", "finetune"}`` (see
    :func:`mmea.pipelines.linkpred.normalise`)."""
    return normalise_layout(raw, main=MAIN, task=NAME, extra_tables=("finetune",))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict | None = None) -> Config:
    """Read a TOML file (optional), merge ``base`` and the ``--set`` overrides, validate everything."""
    raw = merge_raw(path, overrides, normalise(base or {}), normalise=normalise, sections=SECTIONS, top_level=(),
                    main=MAIN)
    return resolve_config(raw)


def resolve_config(raw: dict) -> Config:
    """A sectioned raw dict -> :class:`Config`; an unknown section lists the valid ones."""
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise MmeaInputError(f"unknown config section {unknown[0]!r}; valid sections: {', '.join(SECTIONS)}")
    finetune = raw.get("finetune")
    if finetune is not None:
        if not isinstance(finetune, dict):
            raise MmeaInputError("finetune must be a table of link-prediction options")
        config_from_dict(dict(finetune), where="finetune")
    return Config(source=build_dataclass(SourceConfig, raw.get("source", {}), "source"),
                  clep=clep_config_from_dict(raw.get(MAIN, {})), finetune=dict(finetune) if finetune else None)


def resume_config(run_dir: str | Path) -> Config:
    """The config of an interrupted ``mmea pretrain-clep`` run, from its own ``config.toml``."""
    return load_config(read_run_config(run_dir, NAME))


def default_run_dir(config: Config) -> Path:
    """``runs/clep-<dataset>-<graph encoder>-<time>``."""
    from ..runs import default_run_dir as stamped

    return stamped("clep", f"{Path(config.source.dataset).name or 'dataset'}-{config.clep.graph_encoder}")


def config_record(config: Config) -> dict:
    """The config as ``mmea bench`` records it (``dataset``, ``data_dir``, ``clep``, ``finetune``)."""
    return {"dataset": config.source.dataset, "data_dir": config.source.data_dir,
            "clep": dataclasses.asdict(config.clep), "finetune": config.finetune}


def run(config: Config, run_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
        progress: bool = True, checkpoint_every: int = 1, stop_after_epochs: int = 0) -> dict:
    """Pre-train CLEP on ``config`` in ``run_dir`` (then the ``finetune`` comparison); returns the metrics.

    The arguments are :func:`mmea.pipelines.linkpred.run`'s; ``complete.json`` is written last.
    """
    from ..clep.training import train_clep

    def body(run, ckpt):
        ds = load_dataset(run, config.source)
        source = {"dataset": config.source.dataset, "data_dir": config.source.data_dir}
        with ckpt.guard():
            metrics = train_clep(ds, config.clep, run_dir=run, progress=progress, checkpoint=ckpt, source=source)
        if config.finetune:
            metrics["finetune"] = finetune_comparison(ds, run.path, config.finetune, config.clep.seed, progress)
            run.write_metrics(metrics)
        return metrics

    return run_in_dir(run_dir, "mmea pretrain-clep --resume", body, MAIN_OUTPUT, resume=resume, overwrite=overwrite,
                      checkpoint_every=checkpoint_every, stop_after_epochs=stop_after_epochs,
                      record={"task": NAME, "model": config.clep.graph_encoder})


def finetune_comparison(ds, clep_dir: Path, values: dict, seed: int, progress: bool = False) -> dict:
    """Train one link-prediction model from the CLEP embeddings and one from random init, same budget."""
    from ..linkpred.training import train_link_prediction

    out = {}
    for name, init in (("clep", str(clep_dir)), ("random", "")):
        cfg = config_from_dict({"seed": seed, "device": "cpu", **values, "init_from": init})
        m = train_link_prediction(ds, cfg, run_dir=clep_dir / f"finetune-{name}", progress=progress)
        out[name] = {"test": {k: v for k, v in m["test"].items() if not isinstance(v, dict)},
                     "valid_at_init": {k: v for k, v in (m.get("valid_at_init") or {}).items()
                                       if not isinstance(v, dict)},
                     "epochs_run": m["epochs_run"], "train_s": m["timings"]["train_s"],
                     "run_dir": str(clep_dir / f"finetune-{name}")}
    out["config"] = dict(values)
    out["model"] = values.get("model", "transe")
    out["gain_mrr"] = out["clep"]["test"]["mrr"] - out["random"]["test"]["mrr"]
    out["gain_hits@10"] = out["clep"]["test"]["hits@10"] - out["random"]["test"]["hits@10"]
    return out


# ------------------------------------------------------------------------------------ mmea bench
def bench_row_name(label: str, config: Config) -> str:
    return label


def stored_matches(record: dict, run_dir: Path) -> bool | None:
    """None: no finished run in ``run_dir``; else whether its ``metrics.json`` config (and the
    fine-tuning table) is ``record``'s; a key on one side only is schema drift, not a change."""
    p = Path(run_dir) / "metrics.json"
    if not p.is_file():
        return None
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    norm = lambda v: json.loads(json.dumps(v, default=str))  # noqa: E731
    if not same_settings(norm(m.get("config") or {}), record["clep"]):
        return False
    want = record.get("finetune")
    have = (m.get("finetune") or {}).get("config")
    return (not want and not m.get("finetune")) or norm(have) == want


def ran_label(m: dict) -> str:
    """What actually ran, from ``metrics.json``: encoders, texts, sizes, epochs, the fine-tuning."""
    c = m.get("config") or {}
    enc = m.get("text_encoder") or {}
    parts = [f"CLEP {m.get('graph_encoder', c.get('graph_encoder', '?'))}",
             f"text {enc.get('encoder', c.get('text_encoder'))}"]
    texts = m.get("texts") or {}
    if texts:
        parts.append("descriptions" if texts.get("description") else "names only")
    if c:
        parts += [f"d {c.get('dim')}", f"p {c.get('proj_dim')}", f"batch {c.get('batch_size')}",
                  f"{m.get('epochs_run', '?')} epochs ({m.get('stopped', '?')})"]
    ft = m.get("finetune")
    if ft:
        parts.append(f"fine-tune {ft.get('model')}")
    return " · ".join(parts)
