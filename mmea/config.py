"""Run configuration: frozen dataclasses, TOML files and ``--set`` overrides.

A run config has top-level keys (``seed``, ``device``) and sections
(``[data]``, ``[features]``, ``[model]``, ``[search]``, ``[engine]``).  The ``[model]``
section holds ``name`` plus the parameters of that model, validated against
the model's own frozen ``Config`` dataclass (by the job that knows the models:
:func:`mmea.pipelines.align_config.load_config`; this module imports no model).
Overrides are ``section.key=value`` strings (TOML values: ``true``, ``0.3``,
``"x"``; a bare word is taken as a string).

The same machinery serves every job of :mod:`mmea.pipelines` (one config dialect):
:func:`merge_raw` (file, then the command-line values, then ``--set``; a job's ``normalise``
rewrites older file layouts first), :func:`apply_overrides` with the job's sections and main
section (``--set lr=0.02`` is ``linkpred.lr`` for ``mmea linkpred``, ``model.lr`` for
``mmea align``), :func:`build_dataclass` per section, :func:`same_settings` to compare a
finished run's stored config with the current one.

Every value is checked up front, before any data is read, and every error names
the key (:class:`~mmea.errors.MmeaInputError`, exit code 2):

* an unknown key lists the valid keys;
* a value of the wrong type says the type (``True`` is not an int, ``"3"`` is not a number);
* every numeric field declares its range with a type alias below (:data:`PositiveInt`,
  :data:`Fraction`, ...): pydantic's constraint validation checks it, and NaN / infinity are
  refused for every float (``tests/test_config.py`` fails on a numeric field without one).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import functools
import math
from typing import Annotated

import pydantic
from pydantic import Field

from .errors import MmeaInputError

import tomllib  # Python >= 3.11 (pyproject.toml requires it)

# ---- declared ranges: every numeric config field uses one of these (or its own Annotated range)
#: an integer >= 1 (sizes, counts, k)
PositiveInt = Annotated[int, Field(ge=1)]
#: an integer >= 0 (0 means "off" where the field says so)
NonNegInt = Annotated[int, Field(ge=0)]
#: a random seed: 0 <= seed < 2**32 (numpy's seeding range)
Seed = Annotated[int, Field(ge=0, lt=2**32)]
#: a finite float > 0 (learning rates, temperatures, scales)
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
#: a finite float >= 0 (weights, margins)
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
#: a finite float in [0, 1] (ratios, quantiles, probabilities)
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
#: a cosine similarity in [-1, 1] (thresholds; a negative value may be a sentinel, as the field says)
Cosine = Annotated[float, Field(ge=-1, le=1, allow_inf_nan=False)]
#: a finite float with a sentinel meaning for negative values (the field's docstring says which)
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, and how its gold links are split.

    ``seed_ratio`` None means the dataset's default (DBP15k 0.3, MMKG 0.2,
    OpenEA its fold files, the demo 0.3).
    """

    src: str = "demo_src"
    tgt: str = "demo_tgt"
    pair: str | None = None
    links: str | None = None
    data_dir: str | None = None
    seed_ratio: Fraction | None = None
    valid_ratio: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.1
    use_dataset_split: bool = False
    fold: PositiveInt = 1
    fb15k_triples: str = "union"  # MMKG's FB15K side: FB15k-237 ∪ FB15K valid/test, or "fb15k237" alone

    #: the closed string choices (mmea.data.loaders.fb15k_triples.FB15K_TRIPLE_SOURCES)
    CHOICES: typing.ClassVar[dict] = {"fb15k_triples": ("union", "fb15k237")}


@dataclass(frozen=True)
class FeatureConfig:
    """Per-modality encoders.

    ``name_encoder``: ``auto`` (transformer when its weights are available,
    else ``char-ngram`` with a warning), ``char-ngram`` or ``sentence-transformers``.
    ``name_source``: ``auto`` (translated where the dataset has it, else the
    display name), ``uri``, ``name`` or ``translated``.
    ``names``: ``off`` guarantees that no name-derived feature enters the run (entity names, their
    translations, URI local names, neighbour names, CLEP text, pseudo-seeds from names): the
    ``names`` modality is never computed, and a model that cannot run without it is refused before
    any data is read; ``on`` keeps names even when the default model rule finds they carry no
    signal; ``auto`` (default): the model decides, and ``mmea align`` without ``--model`` switches
    names off when they do not agree on the train / valid links (:mod:`mmea.pipelines.align_config`).
    """

    name_encoder: str = "auto"
    name_model: str = "sentence-transformers/LaBSE"
    name_source: str = "auto"
    image_encoder: str = "resnet152"
    image_weights: str | None = None
    image_features: str | None = None
    random_image_weights: bool = False
    batch_size: PositiveInt = 64
    cache: bool = True
    names: str = "auto"

    #: the closed string choices
    CHOICES: typing.ClassVar[dict] = {"names": ("auto", "on", "off")}


@dataclass(frozen=True)
class SearchConfig:
    """Search, ranking and the final matching (see :mod:`mmea.search`).

    ``nprobe`` (IVF cells scanned per query) and ``ef_search`` (HNSW candidate list) tune the
    approximate pass of a large run (:mod:`mmea.search.approx`): recall against time; 0 keeps the
    index's default (:mod:`mmea.search.knn`: nprobe 32, ef_search 128); ``ivf_storage``: ``sq8`` (8-bit
    cells, the found candidates re-scored exactly; default) or ``flat`` (float32 cells).  ``one_to_one``: the solver of
    the second metric, ``test.hits@1_one_to_one`` (:func:`mmea.search.matching.solve_one_to_one`):
    ``auto`` (exact sparse Hungarian up to 100K test sources, Sinkhorn + greedy above), ``hungarian``,
    ``sinkhorn``, or ``off`` (not computed: a large run's time saved).  ``channels``: ``auto`` lets an
    approximate pass also index the model's embedding blocks on their own
    (:meth:`~mmea.models.base.AlignmentModel.search_channels`, e.g. structure and names), ``off`` the
    whole rows only.  ``whole_rows``: ``on`` (default) the approximate pass's index over the whole rows
    proposes candidates too; ``off`` only the channels and the model's sparse term do
    (:class:`~mmea.search.approx.ChannelIndex`; in this process, with at least one channel and a sparse
    term; otherwise the whole rows stay on, and the run's ``ranks_from`` names what proposed).
    ``reciprocal``: the test links ranked once more by both sides' preferences (:mod:`mmea.search.reciprocal`),
    ``test_by_method["src->tgt/reciprocal"]``: ``auto`` two dense passes after an exact search up to
    :data:`~mmea.search.reciprocal.RECIPROCAL_MAX_SCORES` scores, above that each source's list of the search
    pass re-ranked (:func:`~mmea.search.reciprocal.listed_reciprocal`); ``on`` the dense passes after any exact
    search; ``off`` never.  After an approximate search (``auto`` or ``on``) the pass's lists are re-ranked.
    """

    method: str = "csls"
    csls_k: PositiveInt = 10
    candidates: str = "test"
    match: str = "none"
    topk: PositiveInt = 1
    index: str = "auto"
    nprobe: NonNegInt = 0
    ef_search: NonNegInt = 0
    ivf_storage: str = "sq8"
    one_to_one: str = "auto"
    channels: str = "auto"
    whole_rows: str = "on"
    reciprocal: str = "auto"

    def index_options(self) -> dict:
        """The approximate indexes' knobs that are set (``make_index`` gives each index only its own)."""
        return {k: v for k, v in (("nprobe", self.nprobe), ("ef_search", self.ef_search),
                                  ("storage", self.ivf_storage)) if v}

    #: the closed string choices (a registry-backed choice, ``match``, is checked by the job)
    CHOICES: typing.ClassVar[dict] = {"method": ("csls", "cos"), "candidates": ("test", "all"),
                                      "index": ("auto", "torch", "flat", "ivf", "hnsw"),
                                      "one_to_one": ("auto", "hungarian", "sinkhorn", "off"),
                                      "channels": ("auto", "off"), "whole_rows": ("on", "off"),
                                      "ivf_storage": ("sq8", "flat"),
                                      "reciprocal": ("auto", "on", "off")}


@dataclass(frozen=True)
class EngineConfig:
    """Where the expensive stages run (:mod:`mmea.engine`): ``local`` (this process) or ``ray``.

    ``address``: a Ray cluster to join (``ray start --head`` prints it); ``None`` starts an embedded local
    cluster for the run and shuts it down after.  ``workers``: CPUs of the embedded cluster (0: all);
    ``shards``: actors the search index is split across (0: one per CPU of the cluster);
    ``partitions``: > 1 aligns METIS partitions of both KGs in parallel, then searches globally;
    ``object_store_mib``: the embedded cluster's object store (0: Ray's default); ``stall_minutes``: a
    parallel stage whose Ray tasks finish none for this long stops with an error naming them (0: wait).
    """

    name: str = "local"
    address: str | None = None
    workers: NonNegInt = 0
    shards: NonNegInt = 0
    partitions: PositiveInt = 1
    object_store_mib: NonNegInt = 0
    stall_minutes: NonNegFloat = 30.0

    #: the closed string choices
    CHOICES: typing.ClassVar[dict] = {"name": ("local", "ray")}


@dataclass(frozen=True)
class RunConfig:
    seed: Seed = 0
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: dict = field(default_factory=lambda: {"name": "auto"})  # auto: mmea.pipelines.default_model
    search: SearchConfig = field(default_factory=SearchConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)

    @property
    def model_name(self) -> str:
        return str(self.model.get("name", "auto"))


SECTIONS = {"data": DataConfig, "features": FeatureConfig, "search": SearchConfig, "engine": EngineConfig}
TOP_LEVEL = {"seed": int, "device": str}
#: the declared range of each numeric top-level key
TOP_LEVEL_RANGES = {"seed": (0, 2**32 - 1)}


def require_at_least(cfg: Any, names, minimum: float = 1, where: str = "") -> None:
    """Raise :class:`MmeaInputError` naming the first field of ``names`` below ``minimum``.

    The shared range check of the frozen config dataclasses (``__post_init__``);
    ``where`` prefixes the message (``"linkpred"`` -> ``"linkpred: dim must be >= 1, got 0"``).
    """
    for name in names:
        value = getattr(cfg, name)
        if value < minimum:
            raise MmeaInputError(f"{where + ': ' if where else ''}{name} must be >= {minimum}, got {value}")


def _type_ok(value: Any, tp: Any) -> tuple[bool, Any]:
    """Check / coerce ``value`` against a resolved dataclass field type (strict: no bool as int,
    no string as number; an int is accepted as a float)."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _type_ok(value, typing.get_args(tp)[0])
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return True, None
        for a in args:
            if a is type(None):
                continue
            ok, v = _type_ok(value, a)
            if ok:
                return True, v
        return False, value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return True, float(value)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is str:
        return isinstance(value, str), value
    if tp in (dict, list, tuple) or origin in (dict, list, tuple):
        return isinstance(value, (dict, list, tuple)), value
    if tp is typing.Any:
        return True, value
    return isinstance(value, tp) if isinstance(tp, type) else True, value


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


@functools.cache
def field_types(cls) -> dict[str, Any]:
    """The resolved annotations of a config dataclass (with their ``Annotated`` ranges)."""
    return typing.get_type_hints(cls, include_extras=True)


@functools.cache
def _adapter(cls) -> pydantic.TypeAdapter:
    return pydantic.TypeAdapter(cls)


def field_range(tp: Any) -> list:
    """The constraint objects (``annotated_types.Ge`` ...) declared on a field type, ``[]`` when none."""
    if typing.get_origin(tp) in (typing.Union,) or str(typing.get_origin(tp)) == "<class 'types.UnionType'>":
        return [c for a in typing.get_args(tp) for c in field_range(a)]
    if typing.get_origin(tp) is not Annotated:
        return []
    out = []
    for meta in typing.get_args(tp)[1:]:
        out.extend(getattr(meta, "metadata", []) or [meta])
    return out


def is_numeric(tp: Any) -> bool:
    """True for an int / float field (optional or annotated), not bool."""
    if typing.get_origin(tp) is Annotated:
        return is_numeric(typing.get_args(tp)[0])
    if typing.get_origin(tp) is typing.Union or str(typing.get_origin(tp)) == "<class 'types.UnionType'>":
        return any(is_numeric(a) for a in typing.get_args(tp) if a is not type(None))
    return tp in (int, float)


def _range_error(exc: pydantic.ValidationError, where: str) -> MmeaInputError:
    """A pydantic constraint error as one line naming the key, the rule and the value."""
    err = exc.errors()[0]
    key = ".".join(str(x) for x in err.get("loc", ()) if not isinstance(x, int)) or "?"
    msg = str(err.get("msg", "invalid value"))
    msg = msg[0].lower() + msg[1:] if msg else msg
    ctx = err.get("ctx") or {}
    if "error" in ctx:  # a ValueError raised by a __post_init__
        msg = str(ctx["error"])
    return MmeaInputError(f"{where}.{key}: {msg}, got {err.get('input')!r}" if "input" in err
                          else f"{where}.{key}: {msg}")


def build_dataclass(cls, values: dict, where: str):
    """``cls(**values)`` with every key, type, range and choice checked; errors name the key.

    Unknown keys list the valid ones; types are checked strictly by :func:`_type_ok`; the
    declared ranges (``Annotated[..., Field(ge=...)]``), finiteness of every float and the
    class's own ``__post_init__`` checks run through pydantic's validation of the dataclass;
    ``cls.CHOICES`` (``{field: (choice, ...)}``) closes string fields to their choices.
    """
    valid = field_types(cls)
    names = {f.name for f in fields(cls)}
    kwargs = {}
    for k, v in values.items():
        if k not in names:
            raise MmeaInputError(f"unknown key {where}.{k}; valid keys: {', '.join(sorted(names))}")
        ok, coerced = _type_ok(v, valid[k])
        if not ok:
            raise MmeaInputError(f"{where}.{k} must be {_type_name(valid[k])}, got {v!r}")
        if isinstance(coerced, float) and not math.isfinite(coerced):
            raise MmeaInputError(f"{where}.{k} must be a finite number, got {coerced!r}")
        kwargs[k] = coerced
    for k, choices in getattr(cls, "CHOICES", {}).items():
        if k in kwargs and kwargs[k] not in choices:
            raise MmeaInputError(f"{where}.{k} must be one of {', '.join(map(str, choices))}, got {kwargs[k]!r}")
    try:
        return _adapter(cls).validate_python(kwargs)
    except pydantic.ValidationError as e:
        raise _range_error(e, where) from None
    except MmeaInputError as e:  # a __post_init__ check (its message may name the section already)
        msg = e.message if e.message.startswith(f"{where}:") else f"{where}: {e.message}"
        raise MmeaInputError(msg, e.hint) from None


def parse_value(text: str) -> Any:
    """A TOML scalar (``true``, ``3``, ``0.5``, ``"x"``, ``[1, 2]``, ``nan``); a bare word is a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict, overrides: list[str], *, sections=None, top_level=None, main: str = "model") -> dict:
    """Apply ``key=value`` / ``section.key=value`` strings to a raw config dict.

    A key without a section is top-level when it is one (``seed``), else a key of the job's
    main section ``main`` (``--set point=true`` == ``--set model.point=true`` for ``mmea align``;
    ``--set lr=0.02`` == ``--set linkpred.lr=0.02`` for ``mmea linkpred``).  ``sections`` and
    ``top_level`` name the job's sections and top-level keys (default: ``mmea align``'s).
    """
    sections = tuple(sections) if sections is not None else (*SECTIONS, "model")
    top_level = tuple(top_level) if top_level is not None else tuple(TOP_LEVEL)
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for item in overrides:
        if "=" not in item:
            raise MmeaInputError(f"--set expects key=value, got {item!r}", hint=f"e.g. --set {main}.KEY=VALUE")
        key, text = item.split("=", 1)
        key = key.strip()
        value = parse_value(text.strip())
        if "." in key:
            section, sub = key.split(".", 1)
            if section not in sections:
                raise MmeaInputError(
                    f"unknown section {section!r} in --set {item}; valid sections: {', '.join(sorted(sections))}")
            if not isinstance(out.get(section, {}), dict):
                raise MmeaInputError(f"--set {item}: {section} is not a table")
            out.setdefault(section, {})[sub] = value
        elif key in top_level:
            out[key] = value
        else:
            out.setdefault(main, {})[key] = value
    return out


def build_sections(cls, raw: dict, where: str = ""):
    """A sectioned job config: ``cls`` is a frozen dataclass whose fields are section dataclasses
    (``[source]``, ``[linkpred]`` ...); each table of ``raw`` is built by :func:`build_dataclass`,
    an unknown section lists the valid ones.  ``where`` prefixes the messages (the job's name)."""
    names = {f.name: f for f in fields(cls)}
    types = field_types(cls)
    kwargs = {}
    for k, v in raw.items():
        if k not in names:
            raise MmeaInputError(f"{where + ': ' if where else ''}unknown config section {k!r}; "
                                 f"valid sections: {', '.join(sorted(names))}")
        if not isinstance(v, dict):
            raise MmeaInputError(f"[{k}] must be a table, got {v!r}")
        kwargs[k] = build_dataclass(types[k], v, k)
    return cls(**kwargs)


def _check_top_level(k: str, v: Any) -> Any:
    if not isinstance(v, TOP_LEVEL[k]) or isinstance(v, bool):
        raise MmeaInputError(f"{k} must be {TOP_LEVEL[k].__name__}, got {v!r}")
    lo_hi = TOP_LEVEL_RANGES.get(k)
    if lo_hi is not None and not lo_hi[0] <= v <= lo_hi[1]:
        raise MmeaInputError(f"{k} must be in [{lo_hi[0]}, {lo_hi[1]}], got {v!r}")
    return v


def resolve_config(raw: dict, validate_model: typing.Callable[[dict], dict]) -> RunConfig:
    """Validate a raw dict (from TOML + overrides) into a :class:`RunConfig`.

    ``validate_model`` checks the ``[model]`` section against the named model's ``Config``
    (the job passes it: :func:`mmea.pipelines.align_config.validate_model_section`).
    """
    kwargs: dict[str, Any] = {}
    for k, v in raw.items():
        if k in TOP_LEVEL:
            kwargs[k] = _check_top_level(k, v)
        elif k in SECTIONS:
            if not isinstance(v, dict):
                raise MmeaInputError(f"[{k}] must be a table")
            kwargs[k] = build_dataclass(SECTIONS[k], v, k)
        elif k == "model":
            if not isinstance(v, dict):
                raise MmeaInputError("[model] must be a table")
            kwargs[k] = validate_model(v)
        else:
            valid = sorted([*TOP_LEVEL, *SECTIONS, "model"])
            raise MmeaInputError(f"unknown config key {k!r}; valid keys: {', '.join(valid)}")
    kwargs.setdefault("model", validate_model({}))
    return RunConfig(**kwargs)


def same_settings(stored: dict, current: dict) -> bool:
    """Whether a finished run's stored config still matches: every key present in both is equal.

    A key present on one side only is a schema change between mmea versions
    (a setting added or retired since the run, at its default), not a
    changed setting, so it does not make finished runs stale (``mmea bench --force`` reruns them).
    """
    for key in stored.keys() & current.keys():
        a, b = stored[key], current[key]
        if isinstance(a, dict) and isinstance(b, dict):
            if not same_settings(a, b):
                return False
        elif a != b:
            return False
    return True


def read_toml(path: str | Path) -> dict:
    """A TOML file as a dict; a missing or invalid file is an input error naming it."""
    p = Path(path)
    if not p.is_file():
        raise MmeaInputError(f"config file not found: {p}")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8-sig"))
    except tomllib.TOMLDecodeError as e:
        raise MmeaInputError(f"{p}: invalid TOML: {e}",
                             hint=f"{p}: not valid TOML; fix the line named above (key = value, strings in quotes)"
                             ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise MmeaInputError(f"{p}: cannot read the config file ({e})") from None


def merge_raw(path: str | Path | None, overrides: list[str] | None = None, base: dict | None = None, *,
              normalise: typing.Callable[[dict], dict] | None = None, **override_options) -> dict:
    """The raw config dict: a TOML file (optional), then ``base``, then the ``--set`` overrides.

    ``normalise`` rewrites the file's dict into the job's sectioned layout first (older flat
    layouts); ``override_options`` (``sections``, ``top_level``, ``main``) go to
    :func:`apply_overrides`.
    """
    raw: dict = read_toml(path) if path is not None else {}
    if normalise is not None:
        raw = normalise(raw)
    for k, v in (base or {}).items():
        if isinstance(v, dict):
            raw.setdefault(k, {}).update(v)
        else:
            raw[k] = v
    return apply_overrides(raw, overrides or [], **override_options)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def to_toml(d: dict) -> str:
    """Write a (two-level) config dict as TOML; ``None`` values are omitted (TOML has no null)."""
    lines = []
    for k, v in d.items():
        if not isinstance(v, dict) and v is not None:
            lines.append(f"{k} = {_toml_value(v)}")
    for k, v in d.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            for kk, vv in v.items():
                if vv is not None and not isinstance(vv, dict):
                    lines.append(f"{kk} = {_toml_value(vv)}")
    return "\n".join(lines) + "\n"
