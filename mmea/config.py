"""Run configuration: frozen dataclasses, TOML files and ``--set`` overrides.

A run config has top-level keys (``seed``, ``device``) and sections
(``[data]``, ``[features]``, ``[model]``, ``[search]``).  The ``[model]``
section holds ``name`` plus the parameters of that model, validated against
the model's own frozen ``Config`` dataclass.  Overrides are
``section.key=value`` strings (TOML values: ``true``, ``0.3``, ``"x"``; a bare
word is taken as a string).  An unknown key or a value of the wrong type is an
:class:`~mmea.errors.MmeaInputError` listing the valid keys.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import MmeaInputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


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
    seed_ratio: float | None = None
    valid_ratio: float = 0.1
    use_dataset_split: bool = False
    fold: int = 1


@dataclass(frozen=True)
class FeatureConfig:
    """Per-modality encoders.

    ``name_encoder``: ``auto`` (transformer when its weights are available,
    else ``char-ngram`` with a warning), ``char-ngram`` or ``sentence-transformers``.
    ``name_source``: ``auto`` (translated where the dataset has it, else the
    display name), ``uri``, ``name`` or ``translated``.
    """

    name_encoder: str = "auto"
    name_model: str = "sentence-transformers/LaBSE"
    name_source: str = "auto"
    image_encoder: str = "resnet152"
    image_weights: str | None = None
    image_features: str | None = None
    random_image_weights: bool = False
    batch_size: int = 64
    cache: bool = True


@dataclass(frozen=True)
class SearchConfig:
    """Search, ranking and the final matching (see :mod:`mmea.search`)."""

    method: str = "csls"
    csls_k: int = 10
    candidates: str = "test"
    match: str = "none"
    topk: int = 1
    index: str = "auto"


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: dict = field(default_factory=lambda: {"name": "baseline"})
    search: SearchConfig = field(default_factory=SearchConfig)

    @property
    def model_name(self) -> str:
        return str(self.model.get("name", "baseline"))


SECTIONS = {"data": DataConfig, "features": FeatureConfig, "search": SearchConfig}
TOP_LEVEL = {"seed": int, "device": str}


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
    """Check / coerce ``value`` against a dataclass field type."""
    if isinstance(tp, str):
        tp = eval(tp, {"typing": typing})  # annotations are strings under `from __future__`
    origin = typing.get_origin(tp)
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
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return True, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is str:
        return isinstance(value, str), value
    if tp in (dict, list, tuple):
        return isinstance(value, (dict, list, tuple)), value
    if tp is typing.Any:
        return True, value
    return isinstance(value, tp) if isinstance(tp, type) else True, value


def _type_name(tp: Any) -> str:
    return tp if isinstance(tp, str) else getattr(tp, "__name__", str(tp))


def build_dataclass(cls, values: dict, where: str):
    """``cls(**values)`` with every key and type checked; errors list the valid keys."""
    valid = {f.name: f for f in fields(cls)}
    kwargs = {}
    for k, v in values.items():
        if k not in valid:
            raise MmeaInputError(f"unknown key {where}.{k}; valid keys: {', '.join(sorted(valid))}")
        ok, coerced = _type_ok(v, valid[k].type)
        if not ok:
            raise MmeaInputError(f"{where}.{k} must be {_type_name(valid[k].type)}, got {v!r}")
        kwargs[k] = coerced
    return cls(**kwargs)


def parse_value(text: str) -> Any:
    """A TOML scalar (``true``, ``3``, ``0.5``, ``"x"``, ``[1, 2]``); a bare word is a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``key=value`` / ``section.key=value`` strings to a raw config dict.

    A key without a section is top-level when it is one (``seed``), else a
    model parameter (``--set point=true`` == ``--set model.point=true``).
    """
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for item in overrides:
        if "=" not in item:
            raise MmeaInputError(f"--set expects key=value, got {item!r}", hint="e.g. --set search.csls_k=5")
        key, text = item.split("=", 1)
        key = key.strip()
        value = parse_value(text.strip())
        if "." in key:
            section, sub = key.split(".", 1)
            if section not in SECTIONS and section != "model":
                raise MmeaInputError(
                    f"unknown section {section!r} in --set {item}; valid sections: data, features, model, search")
            out.setdefault(section, {})[sub] = value
        elif key in TOP_LEVEL:
            out[key] = value
        else:
            out.setdefault("model", {})[key] = value
    return out


def resolve_config(raw: dict) -> RunConfig:
    """Validate a raw dict (from TOML + overrides) into a :class:`RunConfig`."""
    kwargs: dict[str, Any] = {}
    for k, v in raw.items():
        if k in TOP_LEVEL:
            if not isinstance(v, TOP_LEVEL[k]) or isinstance(v, bool):
                raise MmeaInputError(f"{k} must be {TOP_LEVEL[k].__name__}, got {v!r}")
            kwargs[k] = v
        elif k in SECTIONS:
            if not isinstance(v, dict):
                raise MmeaInputError(f"[{k}] must be a table")
            kwargs[k] = build_dataclass(SECTIONS[k], v, k)
        elif k == "model":
            if not isinstance(v, dict):
                raise MmeaInputError("[model] must be a table")
            kwargs[k] = validate_model_section(v)
        else:
            valid = sorted([*TOP_LEVEL, *SECTIONS, "model"])
            raise MmeaInputError(f"unknown config key {k!r}; valid keys: {', '.join(valid)}")
    kwargs.setdefault("model", validate_model_section({}))
    return RunConfig(**kwargs)


def validate_model_section(section: dict) -> dict:
    """Check the model's parameters against its registered ``Config`` dataclass."""
    from .models import MODELS

    name = str(section.get("name", "baseline"))
    cls = MODELS.get(name)
    params = {k: v for k, v in section.items() if k != "name"}
    cfg = build_dataclass(cls.Config, params, f"model ({cls.registry_name})")
    return {"name": cls.registry_name, **dataclasses.asdict(cfg)}


def load_config(path: str | Path | None, overrides: list[str] | None = None, base: dict | None = None) -> RunConfig:
    """Read a TOML file (optional), merge ``base`` and the overrides, validate."""
    raw: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise MmeaInputError(f"config file not found: {p}")
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise MmeaInputError(f"{p}: invalid TOML: {e}") from None
    for k, v in (base or {}).items():
        if isinstance(v, dict):
            raw.setdefault(k, {}).update(v)
        else:
            raw[k] = v
    return resolve_config(apply_overrides(raw, overrides or []))


def config_to_dict(cfg: RunConfig) -> dict:
    d = dataclasses.asdict(cfg)
    return d


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
