"""The ``mmea align`` job (``JOBS["align"]``, see :mod:`mmea.pipelines`): its configuration and the
job functions every job module has; the run itself is :func:`mmea.pipelines.align.run_align`.

The configuration is the schema of :mod:`mmea.config` plus the parts only the job knows — the
registered models' ``Config`` classes and the registry-backed choices (matchers, name encoders).
:func:`load_config` is the one entry point (CLI, ``--resume``, ``mmea bench``, the report):
it reads the TOML file, merges the command-line values and the ``--set`` overrides, and
checks every key, type, range and choice before any data is read, so a bad value fails in
well under a second with the key named, never after training.  A ``--set`` key without a
section is a top-level key (``seed``, ``device``) or a model parameter (``--set point=true``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .. import config as schema
from ..config import RunConfig, build_dataclass, merge_raw, read_toml, same_settings, to_toml
from ..errors import MmeaInputError
from ..models import MODELS
from ..search.matching import MATCHERS
from . import BenchSpec
from .default_model import AUTO
from .names import check_names  # the names-off policy (mmea.pipelines.names)

NAME = "align"
#: the section a ``--set`` key without a section goes to (when it is not a top-level key)
MAIN = "model"
Config = RunConfig
BENCH = BenchSpec(default_metrics=("test.hits@1", "test.hits@1_one_to_one", "test.hits@10", "test.mrr"),
                  config_keys=("device", "data", "features", "model", "search", "engine", "set"))
#: a bench column that always brings its companion right after it (a pipeline's own ``metrics`` list too):
#: the ranking Hits@1 is never shown without the one-to-one assignment's (issue 16, "H@1 both ways")
BENCH_COMPANIONS = {"test.hits@1": "test.hits@1_one_to_one"}


def validate_model_section(section: dict) -> dict:
    """Check ``[model]`` against the named model's ``Config``; returns ``{"name", **params}`` resolved."""
    name = section.get("name", AUTO)
    if not isinstance(name, str):
        raise MmeaInputError(f"model.name must be a string, got {name!r}", hint="mmea ls models")
    if name == AUTO:  # the default rule (mmea.pipelines.default_model) picks the model once the task is loaded
        extra = sorted(k for k in section if k != "name")
        if extra:
            raise MmeaInputError(f"model parameters ({', '.join(extra)}) need a model name; the default model "
                                 "(model.name = auto) is chosen per task and takes none", hint="pass --model NAME")
        return {"name": AUTO}
    cls = MODELS.get(name)
    params = {k: v for k, v in section.items() if k != "name"}
    cfg = build_dataclass(cls.Config, params, f"model ({cls.registry_name})")
    return {"name": cls.registry_name, **dataclasses.asdict(cfg)}


def check_choices(cfg: RunConfig) -> RunConfig:
    """The registry-backed choices: ``search.match`` and ``features.name_encoder``; the device syntax."""
    from ..encoders import ENCODERS

    if cfg.search.match not in MATCHERS:
        raise MmeaInputError(f"search.match must be one of {', '.join(MATCHERS.names())}, got {cfg.search.match!r}",
                             hint="mmea ls matchers")
    if cfg.features.name_encoder not in ENCODERS:
        raise MmeaInputError(f"features.name_encoder must be one of {', '.join(ENCODERS.names())}, "
                             f"got {cfg.features.name_encoder!r}", hint="mmea ls encoders")
    dev = cfg.device
    if dev not in ("auto", "cpu", "cuda") and not (dev.startswith("cuda:") and dev[5:].isdigit()):
        raise MmeaInputError(f"device must be auto, cpu, cuda or cuda:N, got {dev!r}")
    return cfg


def resolve_config(raw: dict) -> RunConfig:
    """Validate a raw config dict (TOML + overrides) into a :class:`~mmea.config.RunConfig`."""
    return check_names(check_choices(schema.resolve_config(raw, validate_model_section)))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict | None = None) -> RunConfig:
    """Read a TOML file (optional), merge ``base`` and the overrides, validate everything."""
    return resolve_config(merge_raw(path, overrides, base))


def normalise(raw: dict) -> dict:
    """The align config has one layout: nothing to rewrite."""
    return raw


def resume_config(run_dir: str | Path) -> RunConfig:
    """The resolved config of an ``mmea align`` run directory, for ``--resume``; input errors say what is wrong
    (a missing folder or ``config.toml``, or the run of another job: which command resumes it)."""
    path = Path(run_dir)
    if not path.is_dir():
        raise MmeaInputError(f"{path}: run directory not found, so there is nothing to resume",
                             hint="pass a directory written by mmea align")
    cpath = path / "config.toml"
    if not cpath.is_file():
        raise MmeaInputError(f"{cpath}: file not found, so {path} is not an mmea align run to resume")
    task = read_toml(cpath).get("task")
    if task is not None and task != NAME:
        command = {"clep": "pretrain-clep"}.get(str(task), str(task))
        raise MmeaInputError(f"{path} is an mmea {command} run", hint=f"mmea {command} --resume {path}")
    return load_config(cpath)


def default_run_dir(cfg: RunConfig) -> Path:
    """``runs/align-<dataset>-<time>``."""
    from ..runs import default_run_dir as stamped
    from .align import dataset_label

    return stamped("align", dataset_label(cfg))


def config_record(cfg: RunConfig) -> dict:
    """The config as ``mmea bench`` records it and the run's ``config.toml`` holds it."""
    return dataclasses.asdict(cfg)


def run(cfg: RunConfig, run_dir: str | Path, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
        checkpoint_every: int = 1, stop_after_epochs: int = 0) -> dict:
    """Run one alignment into ``run_dir`` (:func:`mmea.pipelines.align.run_align`); returns the metrics."""
    from . import align

    return align.run_align(cfg, out=Path(run_dir), quiet=not progress, resume=resume, overwrite=overwrite,
                           checkpoint_every=checkpoint_every, stop_after_epochs=stop_after_epochs)["metrics"]


# ------------------------------------------------------------------------------------ mmea bench
def bench_dataset(entry) -> tuple[str, dict]:
    """A ``datasets`` entry of a pipeline: a pair name / folder (``mmea align --pair``) or a table of
    ``data.*`` keys with an optional label."""
    if isinstance(entry, str) and entry:
        return Path(entry).name or entry, {"data": {"pair": entry, "src": "", "tgt": ""}}
    if isinstance(entry, dict):
        values = {k: v for k, v in entry.items() if k != "label"}
        label = entry.get("label")
        if label is None:
            if values.get("pair"):
                label = Path(str(values["pair"])).name
            elif values.get("src") and values.get("tgt"):
                label = f"{Path(str(values['src'])).name}-{Path(str(values['tgt'])).name}"
            else:
                raise MmeaInputError(f"a datasets table needs a label, a pair or src and tgt: {entry}")
        if values.get("pair") and not (values.get("src") or values.get("tgt")):
            values.update(src="", tgt="")
        return str(label), {"data": values}
    raise MmeaInputError(f"a datasets entry is a pair name / folder or a table of data.* keys, got {entry!r}")


def bench_base(bench: dict) -> dict:
    """The ``[bench]`` table's part of every cell's config: the device, when it says."""
    return {"device": bench["device"]} if "device" in bench else {}


def bench_data_dir(data_dir: str) -> dict:
    """``mmea bench --data-dir``: under every value of the pipeline file."""
    return {"data": {"data_dir": str(data_dir)}}


def bench_row_name(label: str, cfg: RunConfig) -> str:
    return label


def _comparable(config_toml_text: str) -> dict:
    import tomllib

    d = tomllib.loads(config_toml_text)
    d.get("data", {}).pop("data_dir", None)  # a location, not a setting
    return d


def stored_matches(record: dict, run_dir: Path) -> bool | None:
    """None: no finished run in ``run_dir``; else whether its ``config.toml`` still matches ``record``
    (``data.data_dir`` is a location, not a setting; schema drift is no change)."""
    import tomllib

    run_dir = Path(run_dir)
    if not (run_dir / "metrics.json").is_file() or not (run_dir / "config.toml").is_file():
        return None
    try:
        stored = _comparable((run_dir / "config.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return same_settings(stored, _comparable(to_toml(record)))


def modalities_used(info: dict) -> list[str]:
    """The modalities some entity has, from ``model_info.modalities``: a dict modality -> number of
    entities that have it (every model's shape).  Cells written before that hold a list of names
    (selfmea) or the dict with an ``"entities"`` total (gaussian); those are read too."""
    mods = info.get("modalities")
    if isinstance(mods, list):  # an older selfmea cell
        return [str(m) for m in mods]
    if isinstance(mods, dict):
        return [str(k) for k, v in mods.items() if k != "entities" and v]
    return []


def ran_label(m: dict) -> str:
    """What actually ran, from ``metrics.json``: model, seed ratio, seeds used, names, modalities."""
    parts = [str(m.get("model", "?"))]
    split = m.get("split") or {}
    n_links = sum(int(split.get(k, 0)) for k in ("train", "valid", "test"))
    seeds = int(split.get("train", 0)) + int(split.get("valid", 0))
    kind = (m.get("split_provenance") or {}).get("kind")
    if n_links:
        parts.append(f"seed ratio {seeds / n_links:.2f}" + (" (dataset split)" if kind == "dataset" else ""))
    info = m.get("model_info") or {}
    used = info.get("seeds") or {}
    if used.get("kind") and used["kind"] != "train links":
        parts.append(f"{str(used['kind']).split(':')[0]} {used.get('count', '')}".strip())
    enc = info.get("name_encoder")
    if m.get("names_used", info.get("names_used")) is False:  # recorded: no name entered the run
        parts.append("no names")
    elif enc:
        name = str(enc.get("encoder"))
        if enc.get("model") and enc.get("model") != enc.get("encoder"):
            name += f" ({enc['model']})"
        parts.append(f"names {name}")
    elif info.get("variant") in ("gaussian", "point"):  # cells written before names_used was recorded
        parts.append("no names")
    else:
        parts.append("names: not recorded")
    mods = modalities_used(info)
    if mods:
        parts.append("+".join(map(str, mods)))
    if (info.get("pseudo_seeds") or {}).get("count"):
        parts.append(f"name pseudo-seeds {info['pseudo_seeds']['count']}")
    if (info.get("overlap") or {}).get("weight"):
        rounds = info.get("overlap_rounds") or []
        parts.append(f"anchor overlap {info['overlap']['weight']:g}" + (
            f" after {len(rounds)} sparse round{'s' * (len(rounds) > 1)} "
            f"(+{sum(int(r.get('anchors_added', 0)) for r in rounds)} mutual pairs)" if rounds else ""))
    if "iterative" in info:
        parts.append("iterative" if info["iterative"] else "non-iterative")
    return " · ".join(parts)
