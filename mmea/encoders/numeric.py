"""Numeric attributes as radial-basis-function features (Gaussian MMEA paper, eq. 5).

A numeric attribute triple ``(e, a, n)`` (entity, attribute, value; numbers,
years and dates are parsed by :func:`mmea.data.parsing.parse_numeric`, dates
as decimal years) becomes

    phi(n) = [exp(-(n' - c_1)^2 / sigma_1^2), ..., exp(-(n' - c_k)^2 / sigma_k^2)]   (eq. 5)

where ``n'`` is the value normalised *per attribute* (so that populations
and birth years share one scale) and the centres ``c_i`` and widths
``sigma_i`` are learnable.  ``phi`` is concatenated with an embedding of the
attribute name and the triples of an entity are averaged.  This follows the
numeric encoder of MMKG (Liu et al., "MMKG: Multi-Modal Knowledge Graphs",
ESWC 2019), which the Gaussian paper adopts.

Attributes of the two KGs are matched by normalised name (local name, lower
case) into one shared vocabulary, and the normalisation statistics of an
attribute are computed from the values of *both* KGs, so that equal values
normalise equally on both sides.

Normalisation (``method``), always to [0, 1]:

- ``robust`` (default): ``z = (t - median) / (IQR / 1.349)`` clipped to
  ``[-clip, clip]`` and mapped linearly onto [0, 1];
- ``zscore``: the same with mean and standard deviation;
- ``minmax``: ``(t - min) / (max - min)``;

where ``t = sign(v) log(1 + |v|)`` for attributes spanning more than three
orders of magnitude (``log_scale="auto"``) and ``t = v`` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..data.graph import KnowledgeGraph
from ..errors import MmeaInputError

__all__ = [
    "NORMALIZATIONS",
    "NumericTriples",
    "AttributeStats",
    "rbf_features",
    "default_centres",
    "attribute_key",
    "numeric_triples",
    "shared_numeric_vocabulary",
    "fit_attribute_stats",
    "normalize_values",
    "numeric_features",
    "numeric_profile",
]

NORMALIZATIONS = ("robust", "zscore", "minmax")


@dataclass(frozen=True)
class NumericTriples:
    """Numeric attribute triples of one KG, with normalised values.

    Attributes:
        entity: int64 ``(m,)`` internal entity ids.
        attribute: int64 ``(m,)`` ids in the shared numeric vocabulary.
        value: float32 ``(m,)`` normalised values in [0, 1].
        raw: float64 ``(m,)`` parsed values before normalisation.
        num_entities: entities of the KG (for pooling and masks).
    """

    entity: np.ndarray
    attribute: np.ndarray
    value: np.ndarray
    raw: np.ndarray
    num_entities: int

    @property
    def mask(self) -> np.ndarray:
        """bool ``(n,)``: the entity has at least one numeric attribute."""
        m = np.zeros(self.num_entities, dtype=bool)
        m[self.entity] = True
        return m


@dataclass(frozen=True)
class AttributeStats:
    """Per-attribute normalisation statistics (shared vocabulary ids).

    ``value' = (t(v) - shift) / scale`` (then clipped and mapped to [0, 1] for
    ``robust`` / ``zscore``), with ``t`` the signed log where ``log`` is set.
    """

    method: str
    shift: np.ndarray  # (A,)
    scale: np.ndarray  # (A,)
    log: np.ndarray  # (A,) bool
    count: np.ndarray  # (A,) int64
    clip: float = 4.0
    vocab: list = field(default_factory=list)


def rbf_features(values: np.ndarray, centres: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """``phi[j, i] = exp(-(values[j] - centres[i])^2 / widths[i]^2)`` (eq. 5).

    Args:
        values: ``(m,)`` normalised values.
        centres: ``(k,)`` RBF centres ``c_i``.
        widths: ``(k,)`` RBF widths ``sigma_i`` (> 0).

    Returns:
        ``(m, k)`` float array.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1, 1)  # (m, 1)
    c = np.asarray(centres, dtype=np.float64).reshape(1, -1)  # (1, k)
    s = np.asarray(widths, dtype=np.float64).reshape(1, -1)  # (1, k)
    return np.exp(-((v - c) ** 2) / s ** 2)  # (m, k)


def default_centres(num_centres: int) -> tuple[np.ndarray, np.ndarray]:
    """``num_centres`` evenly spaced centres on [0, 1] and widths equal to their spacing."""
    if num_centres < 1:
        raise MmeaInputError(f"number of RBF centres must be positive, got {num_centres}")
    centres = np.linspace(0.0, 1.0, num_centres)  # (k,)
    width = 1.0 / (num_centres - 1) if num_centres > 1 else 1.0
    return centres, np.full(num_centres, width)


def attribute_key(name: str) -> str:
    """Normalised attribute name used to match attributes across KGs.

    ``http://dbpedia.org/ontology/birthDate`` and ``<http://x/y#birth_date>`` -> ``birthdate``
    (:func:`mmea.encoders.bags.vocabulary_key`).
    """
    from .bags import vocabulary_key

    return vocabulary_key(name)


def numeric_triples(kg: KnowledgeGraph) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(entity (m,), attribute (m,) KG attribute ids, value (m,) float64)`` of finite numeric triples."""
    ok = np.isfinite(kg.attr_numeric)  # (A,)
    return (kg.attr_triples[ok, 0].astype(np.int64), kg.attr_triples[ok, 1].astype(np.int64),
            kg.attr_numeric[ok].astype(np.float64))


def _attribute_names(kg: KnowledgeGraph) -> list[str]:
    n_attr = max(kg.num_attributes, int(kg.attr_triples[:, 1].max()) + 1 if len(kg.attr_triples) else 0)
    return [kg.attributes[i] if i < kg.num_attributes and kg.attributes[i] else f"{kg.name}:attr{i}"
            for i in range(n_attr)]


def shared_numeric_vocabulary(source: KnowledgeGraph, target: KnowledgeGraph
                              ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Shared vocabulary of the numeric attributes of two KGs, matched by :func:`attribute_key`.

    Returns ``(vocab, map_source, map_target)``: ``map_x[a]`` is the shared id
    of attribute ``a`` of KG x, or -1 when ``a`` has no numeric value.
    """
    vocab: dict[str, int] = {}
    maps = []
    for kg in (source, target):
        names = _attribute_names(kg)
        m = np.full(len(names), -1, dtype=np.int64)
        _, attrs, _ = numeric_triples(kg)
        for a in np.unique(attrs):
            key = attribute_key(names[a])
            m[a] = vocab.setdefault(key, len(vocab))
        maps.append(m)
    return list(vocab), maps[0], maps[1]


def _signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def fit_attribute_stats(attribute: np.ndarray, values: np.ndarray, num_attributes: int,
                        method: str = "robust", log_scale: bool | str = "auto", clip: float = 4.0
                        ) -> AttributeStats:
    """Normalisation statistics of each attribute from all its values ``(m,)`` (both KGs)."""
    if method not in NORMALIZATIONS:
        raise MmeaInputError(f"unknown numeric normalisation {method!r}; valid choices: {', '.join(NORMALIZATIONS)}")
    shift = np.zeros(num_attributes)
    scale = np.ones(num_attributes)
    use_log = np.zeros(num_attributes, dtype=bool)
    count = np.bincount(attribute, minlength=num_attributes).astype(np.int64)
    order = np.argsort(attribute, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(count)])
    for a in range(num_attributes):
        v = values[order[bounds[a]:bounds[a + 1]]]
        if not len(v):
            continue
        if log_scale == "auto":
            mag = np.abs(v)
            use_log[a] = np.percentile(mag, 99) > 1e3 * max(float(np.median(mag)), 1e-12) and mag.max() > 1e3
        else:
            use_log[a] = bool(log_scale)
        t = _signed_log(v) if use_log[a] else v
        if method == "minmax":
            lo, hi = float(t.min()), float(t.max())
            shift[a], scale[a] = lo, (hi - lo) or 1.0
        elif method == "zscore":
            shift[a], scale[a] = float(t.mean()), float(t.std()) or 1.0
        else:
            q1, med, q3 = np.percentile(t, [25, 50, 75])
            s = (q3 - q1) / 1.349
            shift[a], scale[a] = float(med), float(s) or float(t.std()) or 1.0
    return AttributeStats(method, shift, scale, use_log, count, clip)


def normalize_values(attribute: np.ndarray, values: np.ndarray, stats: AttributeStats) -> np.ndarray:
    """Normalised values in [0, 1] ``(m,)`` of ``values`` of shared attributes ``attribute``."""
    attribute = np.asarray(attribute, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    t = np.where(stats.log[attribute], _signed_log(v), v)
    z = (t - stats.shift[attribute]) / stats.scale[attribute]  # (m,)
    if stats.method == "minmax":
        return np.clip(z, 0.0, 1.0).astype(np.float32)
    c = stats.clip
    return ((np.clip(z, -c, c) + c) / (2 * c)).astype(np.float32)


def numeric_features(source: KnowledgeGraph, target: KnowledgeGraph, method: str = "robust",
                     log_scale: bool | str = "auto", clip: float = 4.0
                     ) -> tuple[NumericTriples, NumericTriples, AttributeStats]:
    """Normalised numeric triples of both KGs over one shared attribute vocabulary.

    Returns ``(source_triples, target_triples, stats)``; ``stats.vocab`` names
    the shared attributes (``len(stats.vocab)`` is the ``num_attributes`` of
    :class:`NumericRbfEncoder`).
    """
    vocab, map_s, map_t = shared_numeric_vocabulary(source, target)
    parts = []
    for kg, m in ((source, map_s), (target, map_t)):
        ent, attr, val = numeric_triples(kg)
        parts.append((ent, m[attr] if len(attr) else attr, val, kg.num_entities))
    all_attr = np.concatenate([p[1] for p in parts])
    all_val = np.concatenate([p[2] for p in parts])
    stats = fit_attribute_stats(all_attr, all_val, len(vocab), method, log_scale, clip)
    stats = AttributeStats(stats.method, stats.shift, stats.scale, stats.log, stats.count, stats.clip, vocab)
    out = [NumericTriples(ent, attr, normalize_values(attr, val, stats), val, n) for ent, attr, val, n in parts]
    return out[0], out[1], stats


def numeric_profile(triples: NumericTriples, num_attributes: int, num_centres: int = 8):
    """Training-free numeric profile: CSR ``(n, A * k)``, the mean of ``onehot(a) (x) phi(n')`` per entity.

    Column ``a * k + i`` holds the mean RBF activation of centre ``i`` (fixed
    :func:`default_centres`) over the entity's values of attribute ``a``.
    """
    import scipy.sparse as sp

    centres, widths = default_centres(num_centres)
    phi = rbf_features(triples.value, centres, widths).astype(np.float32)  # (m, k)
    # weight 1 / (number of values of this attribute on this entity): duplicates are averaged
    _, inverse, counts = np.unique(triples.entity * num_attributes + triples.attribute, return_inverse=True,
                                   return_counts=True)
    phi /= counts[inverse].astype(np.float32)[:, None]
    rows = np.repeat(triples.entity, num_centres)
    cols = (triples.attribute[:, None] * num_centres + np.arange(num_centres)[None, :]).reshape(-1)
    mat = sp.csr_matrix((phi.reshape(-1), (rows, cols)),
                        shape=(triples.num_entities, num_attributes * num_centres), dtype=np.float32)
    mat.sum_duplicates()
    return mat
