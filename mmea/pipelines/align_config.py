"""The ``mmea align`` job's configuration: the schema of :mod:`mmea.config` plus the parts
only the job knows — the registered models' ``Config`` classes and the registry-backed
choices (matchers, name encoders).

:func:`load_config` is the one entry point (CLI, ``--resume``, ``mmea bench``, the report):
it reads the TOML file, merges the command-line values and the ``--set`` overrides, and
checks every key, type, range and choice before any data is read, so a bad value fails in
well under a second with the key named, never after training.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .. import config as schema
from ..config import RunConfig, build_dataclass, merge_raw
from ..errors import MmeaInputError
from ..models import MODELS
from ..search.matching import MATCHERS


def validate_model_section(section: dict) -> dict:
    """Check ``[model]`` against the named model's ``Config``; returns ``{"name", **params}`` resolved."""
    name = section.get("name", "baseline")
    if not isinstance(name, str):
        raise MmeaInputError(f"model.name must be a string, got {name!r}", hint="mmea ls models")
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
    return check_choices(schema.resolve_config(raw, validate_model_section))


def load_config(path: str | Path | None, overrides: list[str] | None = None, base: dict | None = None) -> RunConfig:
    """Read a TOML file (optional), merge ``base`` and the overrides, validate everything."""
    return resolve_config(merge_raw(path, overrides, base))
