"""A small registry/resolver for pluggable parts (models, losses, samplers, ...).

A class registers under a normalised name: lower case, the family suffix
dropped, CamelCase split by dashes (``HardNnSampler`` in the ``sampler``
family -> ``"hard-nn"``) unless it gives an explicit ``name``.  Strings
resolve to classes, instances pass through, and an unknown name is an error
that lists the valid choices.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Generic, Iterator, TypeVar

from .errors import MmeaInputError

T = TypeVar("T")


def normalize_name(name: str, suffix: str = "") -> str:
    """``"BernoulliNegativeSampler"`` with suffix ``"NegativeSampler"`` -> ``"bernoulli"``."""
    if suffix and name.endswith(suffix) and name != suffix:
        name = name[: -len(suffix)]
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", name)
    return name.replace("_", "-").lower()


class Registry(Generic[T]):
    """Name -> class map for one family of components."""

    def __init__(self, family: str, suffix: str = ""):
        self.family = family
        self.suffix = suffix
        self._entries: dict[str, type[T] | Callable[..., T]] = {}
        self._aliases: dict[str, str] = {}

    def register(self, obj: Any = None, *, name: str | None = None, aliases: tuple[str, ...] = ()):
        """Decorator: ``@REGISTRY.register`` or ``@REGISTRY.register(name="x")``."""

        def deco(o):
            key = name or getattr(o, "__dict__", {}).get("registry_name") or normalize_name(o.__name__, self.suffix)
            if key in self._entries and self._entries[key] is not o:
                raise ValueError(f"{self.family} {key!r} registered twice")
            self._entries[key] = o
            for a in aliases:
                self._aliases[a] = key
            try:
                o.registry_name = key
            except (AttributeError, TypeError):  # pragma: no cover - builtins
                pass
            return o

        return deco(obj) if obj is not None else deco

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return self._key(name) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def _key(self, name: str) -> str:
        k = name.strip().lower().replace("_", "-")
        return self._aliases.get(k, k)

    def get(self, name: str):
        key = self._key(name)
        if key not in self._entries:
            raise MmeaInputError(
                f"unknown {self.family} {name!r}; valid choices: {', '.join(self.names()) or '(none)'}",
                hint=f"`mmea ls {self.family}s` lists them with a one-line description",
            )
        return self._entries[key]

    def make(self, query: Any, **kwargs) -> T:
        """Resolve ``query`` (a name, a class or an instance) and build it with ``kwargs``."""
        if query is None:
            raise MmeaInputError(f"no {self.family} given; valid choices: {', '.join(self.names())}")
        if isinstance(query, str):
            return self.get(query)(**kwargs)
        if isinstance(query, type):
            return query(**kwargs)
        return query

    def describe(self) -> list[tuple[str, str]]:
        """(name, first docstring line) for each entry, for ``mmea ls``."""
        out = []
        for k in self.names():
            doc = (self._entries[k].__doc__ or "").strip().splitlines()
            out.append((k, doc[0] if doc else ""))
        return out
