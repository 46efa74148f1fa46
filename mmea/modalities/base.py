"""The modality-encoder template: one class per modality owns its options, its cache key and its compute.

A :class:`ModalityEncoder` subclass declares

- ``Options``: a frozen dataclass of everything that changes its output (its *config*;
  :meth:`ModalityEncoder.make_options` validates overrides against it, naming the valid keys);
- :meth:`~ModalityEncoder.job`: ``(key parts, compute)`` for one task, where the key parts are
  the cache fingerprint (the encoder that actually runs, its model files, its options) and
  ``compute() -> (arrays, info)`` returns ``source`` / ``target`` matrices, their
  ``source_mask`` / ``target_mask`` and any extra per-entity arrays;
- optionally :meth:`~ModalityEncoder.legacy_options`: the run-wide ``[features]`` settings it
  still reads from :class:`~mmea.features.FeatureOptions` (names and images only).

Its CLI exposure is its ``Options``: ``mmea ls modalities`` lists every encoder with its
options, and ``mmea features --modality-option NAME.KEY=VALUE`` (or a model's feature
request) sets them.  The feature store (:func:`mmea.features.compute_task_features`) does the
shared work: cache lookup under the fingerprint, timing, masks, the summary.
"""

from __future__ import annotations

import dataclasses
import hashlib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from ..errors import MmeaInputError
from ..registry import Registry

Job = tuple[dict, Callable[[], tuple[dict, dict]]]


class ModalityRegistry(Registry):
    """The registry of modality encoders, with aliases (``image`` -> ``images``) and a fixed order."""

    def canonical(self, name: str) -> str | None:
        """The registered name of ``name`` or of its alias; ``None`` when unknown."""
        key = self._key(name)
        return key if key in self._entries else None

    def in_order(self) -> list[str]:
        """Registered names by the encoders' ``position`` (the order ``mmea features`` computes them)."""
        return sorted(self.names(), key=lambda k: (self.get(k).position, k))

    def describe(self) -> list[tuple[str, str]]:
        """(name, first docstring line and the options with their defaults), in order, for ``mmea ls modalities``."""
        out = []
        for k in self.in_order():
            cls = self.get(k)
            doc = (cls.__doc__ or "").strip().splitlines()
            opts = cls.describe_options()
            out.append((k, (doc[0] if doc else "") + (f"  [options: {opts}]" if opts else "")))
        return out

    def get(self, name: str):
        if self.canonical(name) is None:
            raise MmeaInputError(f"unknown modality {name!r}; valid choices: {', '.join(self.in_order())}",
                                 hint="`mmea ls modalities` lists them with their options")
        return super().get(name)


#: Registered modality encoders (``names``, ``images``, ``numeric``, ``relations``, ``attributes``, ...).
MODALITY_ENCODERS: ModalityRegistry = ModalityRegistry("modality", suffix="Modality")


@dataclass(frozen=True)
class FeatureRequest:
    """What a model asks of one modality.

    ``options``: overrides of the encoder's ``Options`` (e.g. ``{"dim": 512}`` for names).
    ``optional``: when the encoder cannot run on this machine (pretrained weights absent,
    :class:`~mmea.encoders.WeightsNotFoundError`), the modality is left out and the error kept
    in :attr:`mmea.features.TaskFeatures.unavailable` for the model to decide, instead of failing.
    """

    options: dict = field(default_factory=dict)
    optional: bool = False


def as_request(value) -> FeatureRequest:
    """A :class:`FeatureRequest` from a request, an options dict or ``None``."""
    if isinstance(value, FeatureRequest):
        return value
    return FeatureRequest(dict(value or {}))


def file_signature(path: Path) -> str:
    """Name, size and mtime of a file, or of every file under a folder (for cache keys)."""
    path = Path(path)
    if path.is_file():
        st = path.stat()
        return f"{path.name}:{st.st_size}:{st.st_mtime_ns}"
    h = hashlib.sha1()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _coerce(cls, key: str, value, ftype):
    """``value`` converted to the declared type of option ``key`` (text from the command line).

    ``bool``, ``int``, ``float``, ``str``, ``X | None`` (``none`` is ``None``) and tuples
    (comma-separated) are understood; a value that is not text passes as it is.
    """
    if not isinstance(value, str):
        return value
    hint = typing.get_type_hints(cls).get(key, ftype)
    args = typing.get_args(hint)
    if type(None) in args:  # X | None
        if value.strip().lower() in ("none", "null", ""):
            return None
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:
        items = [x for x in value.split(",") if x.strip()]
        types = [args[0]] * len(items) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(types) != len(items):
            raise MmeaInputError(f"option {key!r} takes {len(types)} comma-separated values, got {value!r}")
        return tuple(_scalar(key, x, t) for x, t in zip(items, types))
    return _scalar(key, value, hint)


def _scalar(key: str, value: str, hint):
    text = value.strip()
    if hint is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
    elif hint in (int, float):
        try:
            return hint(text)
        except ValueError:
            pass
    else:
        return text
    raise MmeaInputError(f"option {key!r} must be of type {hint.__name__}, got {value!r}")


class ModalityEncoder:
    """One modality of both KGs of a task: options, cache key and computation (template)."""

    #: where ``mmea features`` puts the modality by default (lower first)
    position: ClassVar[int] = 100

    @dataclass(frozen=True)
    class Options:
        pass

    def __init__(self, options: Any = None, *, device: str = "auto", progress: bool = True, seed: int = 0):
        self.options = options if options is not None else self.Options()
        self.device, self.progress, self.seed = device, progress, seed

    @classmethod
    def legacy_options(cls, feature_options) -> dict:
        """Options taken from the run-wide :class:`~mmea.features.FeatureOptions` (none by default)."""
        return {}

    @classmethod
    def make_options(cls, overrides: dict | None = None):
        """``Options`` with ``overrides`` (values given as text are converted); an unknown key is an error."""
        fields = {f.name: f for f in dataclasses.fields(cls.Options)}
        kw = {}
        for k, v in (overrides or {}).items():
            if k not in fields:
                raise MmeaInputError(f"unknown option {k!r} of modality {cls.registry_name!r}; valid options: "
                                     f"{', '.join(fields) or '(none)'}")
            try:
                kw[k] = _coerce(cls.Options, k, v, fields[k].type)
            except MmeaInputError as e:
                raise MmeaInputError(f"modality {cls.registry_name!r}: {e.message}") from None
        return cls.Options(**kw)

    @classmethod
    def describe_options(cls) -> str:
        """``key=default`` of every option, for ``mmea ls modalities``."""
        return ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls.Options)
                         if f.default is not dataclasses.MISSING)

    def job(self, task) -> Job:  # pragma: no cover - abstract
        """``(key parts, compute)``: the cache fingerprint's parts and ``compute() -> (arrays, info)``."""
        raise NotImplementedError


def parse_modality_options(items) -> dict[str, dict]:
    """``["numeric.centres=16", ...]`` -> ``{"numeric": {"centres": "16"}}`` (checked by the encoder later)."""
    out: dict[str, dict] = {}
    for raw in items or ():
        head, eq, value = str(raw).partition("=")
        name, dot, key = head.strip().partition(".")
        if not eq or not dot or not name or not key.strip():
            raise MmeaInputError(f"--modality-option {raw!r}: expected MODALITY.KEY=VALUE, e.g. numeric.centres=16")
        canonical = MODALITY_ENCODERS.get(name) and MODALITY_ENCODERS.canonical(name)
        opts = out.setdefault(canonical, {})
        opts[key.strip()] = value.strip()
        MODALITY_ENCODERS.get(canonical).make_options(opts)  # an unknown key fails here, naming the flag
    return out
