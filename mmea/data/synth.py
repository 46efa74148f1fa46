"""A realistic synthetic aligned KG pair, written in the plain-TSV layout (``mmea datasets synth``).

No large entity-alignment benchmark can be downloaded here, so the scale work of issue 18 tests
on pairs this module makes.  The pair is cut from one latent *world* graph:

* **Entities and degrees.**  ``W`` world entities carry Chung-Lu weights
  ``w_i = (i + 1)^(-1/(gamma-1))`` (randomly assigned), so that the expected degree of
  ``i`` is proportional to ``w_i`` and the degree distribution has a power-law tail with
  exponent ``gamma`` (Chung & Lu, "Connected components in random graphs with given expected
  degree sequences", Annals of Combinatorics 2002).  ``W * avg_degree / 2`` edges are drawn
  with both ends sampled in proportion to ``w``; self loops and repeated pairs are dropped.
* **Types and relations.**  Every entity has one of ``types`` types (Zipf frequencies).  The
  ``relations`` world relations have Zipf frequencies (exponent ``relation_zipf``) and a
  domain type each; an edge takes, with probability ``type_coherence``, a relation of its
  head's type (Zipf-weighted among those), else any relation (Zipf-weighted).
* **Two KGs.**  A share ``1 - dangling_k`` of each KG's entities is shared with the other
  (the gold links); the rest are its own (dangling, no counterpart).  ``dangling_k`` and the
  edge keep rate ``keep_k`` are drawn per KG, uniformly in ``[dangling_min, dangling_max]``
  and ``[keep_min, keep_max]``.  KG ``k`` keeps each world edge between its entities with
  probability ``keep_k`` and adds ``extra_edges * kept`` edges of its own (same Chung-Lu
  weights and relation model).  KG 1 has exactly ``entities`` entities, KG 2 has
  ``round(shared / (1 - dangling_2))``.
* **Relation schemas differ.**  Per KG, relation names are opaque and permuted; a share
  ``relation_merge`` of world relations is merged pairwise into one relation and a share
  ``relation_split`` is split in two by the parity of the tail's type (``birthPlace`` ->
  ``birthCity`` / ``birthCountry``).
* **Names.**  World names are 1-3 tokens from a syllable-built vocabulary (Zipf token
  frequencies) whose size grows with the pair like Heaps' law (Heaps, *Information Retrieval:
  Computational and Theoretical Aspects*, 1978) when asked: ``V = vocabulary * (entities /
  100,000)^beta`` with ``beta = vocabulary_growth``.  The default ``beta = 0`` keeps ``vocabulary``
  tokens at every size (the committed scale tables' pairs); ``0.5``, the textbook exponent of running
  text, stops a 1M pair from drawing ten times the names from the tokens of a 100K pair
  (docs/scale.md measures both).  Each KG independently drops a name with probability
  ``name_missing`` and perturbs one with probability ``name_noise`` by one of: a typo (1-2
  character edits), token reordering, or a transliteration-like character map (``c->k``, ``ph->f``, ...).
* **Numeric attributes.**  Each world entity has ``Poisson(attribute_mean)`` facts over
  ``attributes`` attribute types (Zipf; half years, half positive magnitudes).  Each KG keeps
  a fact with probability ``attribute_keep``, renames the attributes, multiplies magnitudes
  by ``exp(N(0, attribute_noise))`` and shifts a year by one with probability ``attribute_noise``.
* **Opaque ids.**  Entity ids are random per KG (``a/…``, ``b/…`` hex), entity and triple
  orders are shuffled, so nothing but the content links the two sides.

The output folder holds ``kg1/`` and ``kg2/`` (``entities.tsv``, ``triples.tsv``,
``names.tsv``, ``attributes.tsv``), ``links.tsv`` (one-to-one, shared entities only),
``meta.json`` (generator version, seed, every knob, the drawn per-KG rates, counts) and a
``README``.  Same seed and knobs -> the same bytes.  Lines are written in chunks, so memory
holds the integer arrays (a few hundred MB at 1M entities per side) but never all the text.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Callable, Iterator

import numpy as np
from pydantic import Field

from ..config import Fraction, NonNegFloat, PositiveInt, build_dataclass
from ..errors import MmeaInputError
from ..progress import progress_bar

__all__ = ["SynthConfig", "GENERATOR", "GENERATOR_VERSION", "generate_pair", "synth_config", "synth_record",
           "vocabulary_size"]

log = logging.getLogger("mmea.data")

GENERATOR = "mmea-synth"
#: bumped whenever the same knobs and seed would give other bytes
GENERATOR_VERSION = 2  # 2: the vocabulary_growth knob and meta.json's name_tokens (data files at growth 0: as 1)
#: entity count at which the vocabulary holds exactly ``vocabulary`` tokens
VOCABULARY_AT = 100_000
META_FILE = "meta.json"
CHUNK = 500_000  # lines per written chunk

_ZipfExp = Annotated[float, Field(ge=0, le=4, allow_inf_nan=False)]


@dataclass(frozen=True)
class SynthConfig:
    """Every knob of the generator, with its default (``--knob KEY=VALUE``)."""

    entities: Annotated[int, Field(ge=100, le=50_000_000)] = 15_000  # KG 1's entity count
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 0
    avg_degree: Annotated[float, Field(ge=1, le=200, allow_inf_nan=False)] = 20.0  # world mean degree (2E/W)
    gamma: Annotated[float, Field(gt=1.5, le=5, allow_inf_nan=False)] = 2.6  # power-law exponent of degrees
    types: Annotated[int, Field(ge=1, le=10_000)] = 30
    type_zipf: _ZipfExp = 1.0
    relations: Annotated[int, Field(ge=1, le=100_000)] = 300
    relation_zipf: _ZipfExp = 1.1
    type_coherence: Fraction = 0.8
    keep_min: Fraction = 0.5  # per-KG share of the world edges kept: drawn in [keep_min, keep_max]
    keep_max: Fraction = 0.8
    extra_edges: Annotated[float, Field(ge=0, le=5, allow_inf_nan=False)] = 0.15  # own edges / kept edges
    dangling_min: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.1
    dangling_max: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.3
    relation_merge: Fraction = 0.1
    relation_split: Fraction = 0.1
    vocabulary: Annotated[int, Field(ge=10, le=10_000_000)] = 20_000  # name tokens at VOCABULARY_AT entities
    vocabulary_growth: Fraction = 0.0  # Heaps' exponent: tokens = vocabulary * (entities / VOCABULARY_AT)^growth
    token_zipf: _ZipfExp = 1.0
    name_noise: Fraction = 0.2
    name_missing: Fraction = 0.05
    attributes: Annotated[int, Field(ge=1, le=100_000)] = 20
    attribute_mean: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] = 2.0
    attribute_keep: Fraction = 0.8
    attribute_noise: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.02

    def __post_init__(self):
        for lo, hi in (("keep_min", "keep_max"), ("dangling_min", "dangling_max")):
            if getattr(self, lo) > getattr(self, hi):
                raise MmeaInputError(f"{lo} ({getattr(self, lo)}) must not exceed {hi} ({getattr(self, hi)})")
        if self.keep_max <= 0:
            raise MmeaInputError("keep_max must be > 0: the KGs would have no world edge")


def synth_config(values: dict) -> SynthConfig:
    """A :class:`SynthConfig` from ``values``, every key, type and range checked (errors name the knob)."""
    return build_dataclass(SynthConfig, values, "synth")


# ---------------------------------------------------------------------------
# sampling helpers
# ---------------------------------------------------------------------------

def _zipf(n: int, s: float) -> np.ndarray:
    """Normalised Zipf weights ``p_k ∝ (k+1)^-s``, k = 0..n-1."""
    w = np.arange(1, n + 1, dtype=np.float64) ** -s
    return w / w.sum()


def _draw(cdf: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """``size`` indices drawn from the distribution with cumulative ``cdf`` (last value 1)."""
    return np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), len(cdf) - 1)


def _draw_grouped(cdf2: np.ndarray, group: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One index per row of ``group``, drawn from row ``group[i]`` of the row-cumulative ``cdf2`` (G, K).

    Rows are offset by their index (row g lives in ``[g, g+1]``), so one ``searchsorted``
    over the flattened table serves every group.
    """
    g, k = cdf2.shape
    flat = (cdf2 + np.arange(g)[:, None]).ravel()  # (G*K,) increasing
    idx = np.searchsorted(flat, group + rng.random(len(group)), side="right")
    return np.minimum(idx - group * k, k - 1)


def _chung_lu(weights: np.ndarray, n_edges: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``n_edges`` distinct directed pairs (E, 2) with both ends drawn ∝ ``weights``; no self loops."""
    cdf = np.cumsum(weights / weights.sum())
    cdf[-1] = 1.0
    pairs = np.stack([_draw(cdf, rng, n_edges), _draw(cdf, rng, n_edges)], axis=1)  # (E, 2)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    keys = pairs[:, 0].astype(np.int64) * len(weights) + pairs[:, 1]
    _, first = np.unique(keys, return_index=True)
    return pairs[np.sort(first)]


# ---------------------------------------------------------------------------
# the world
# ---------------------------------------------------------------------------

@dataclass
class _World:
    n: int                      # world entities: shared, then KG-1-only, then KG-2-only
    n_shared: int
    n_own: tuple[int, int]
    weights: np.ndarray         # (W,) Chung-Lu weights
    etype: np.ndarray           # (W,) entity types
    edges: np.ndarray           # (E, 2) world edges
    rel: np.ndarray             # (E,) world relations
    rel_cdf: np.ndarray         # (T, R) per-head-type relation cdf (type coherence mixed in)
    keep: tuple[float, float]
    dangling: tuple[float, float]


def _relation_model(cfg: SynthConfig, type_p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(T, R) cumulative relation distribution per head type: coherence x own-domain Zipf + rest x global Zipf."""
    rel_p = _zipf(cfg.relations, cfg.relation_zipf)
    domain = _draw(np.cumsum(type_p), rng, cfg.relations)  # (R,)
    own = np.zeros((cfg.types, cfg.relations))
    own[domain, np.arange(cfg.relations)] = rel_p
    sums = own.sum(axis=1, keepdims=True)
    own = np.where(sums > 0, own / np.where(sums > 0, sums, 1), rel_p[None, :])  # a type without relations: global
    p = cfg.type_coherence * own + (1 - cfg.type_coherence) * rel_p[None, :]
    cdf = np.cumsum(p, axis=1)
    cdf /= cdf[:, -1:]
    cdf[:, -1] = 1.0
    return cdf


def _make_world(cfg: SynthConfig, rng: np.random.Generator) -> _World:
    keep = tuple(float(x) for x in rng.uniform(cfg.keep_min, cfg.keep_max, 2))
    dangling = tuple(float(x) for x in rng.uniform(cfg.dangling_min, cfg.dangling_max, 2))
    n_shared = max(1, int(round(cfg.entities * (1 - dangling[0]))))
    own1 = cfg.entities - n_shared
    own2 = int(round(n_shared / (1 - dangling[1]))) - n_shared
    n = n_shared + own1 + own2
    weights = rng.permutation((np.arange(1, n + 1, dtype=np.float64)) ** (-1.0 / (cfg.gamma - 1)))
    type_p = _zipf(cfg.types, cfg.type_zipf)
    etype = _draw(np.cumsum(type_p), rng, n).astype(np.int32)
    edges = _chung_lu(weights, int(round(n * cfg.avg_degree / 2)), rng)
    rel_cdf = _relation_model(cfg, type_p, rng)
    rel = _draw_grouped(rel_cdf, etype[edges[:, 0]].astype(np.int64), rng)
    return _World(n, n_shared, (own1, own2), weights, etype, edges, rel, rel_cdf, keep, dangling)


# ---------------------------------------------------------------------------
# one KG's view of the world
# ---------------------------------------------------------------------------

def _relation_schema(cfg: SynthConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-KG relation ids: ``base[r]`` (merged pairs share one), ``second[r]`` (-1 unless split), count."""
    r = cfg.relations
    order = rng.permutation(r)
    n_merge = int(round(cfg.relation_merge * r)) // 2 * 2
    n_split = min(int(round(cfg.relation_split * r)), r - n_merge)
    base = np.empty(r, dtype=np.int64)
    kept = order[n_merge // 2:]  # each merged pair keeps its first relation's id
    base[kept] = np.arange(len(kept))
    base[order[n_merge // 2:n_merge]] = base[order[:n_merge // 2]] = np.arange(n_merge // 2)
    second = np.full(r, -1, dtype=np.int64)
    split = order[n_merge:n_merge + n_split]
    second[split] = len(kept) + np.arange(n_split)
    n_rel = len(kept) + n_split
    relabel = rng.permutation(n_rel)  # opaque: the KG's relation numbering hides the world's
    return relabel[base], np.where(second >= 0, relabel[np.maximum(second, 0)], -1), n_rel


def _kg_triples(cfg: SynthConfig, w: _World, side: int, members: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """(T, 3) world-entity triples ``(head, kg relation, tail)`` of KG ``side``, de-duplicated and shuffled."""
    inside = np.zeros(w.n, dtype=bool)
    inside[members] = True
    e = w.edges
    ok = inside[e[:, 0]] & inside[e[:, 1]] & (rng.random(len(e)) < w.keep[side])
    kept, rel = e[ok], w.rel[ok]
    extra = _chung_lu(w.weights[members], int(round(cfg.extra_edges * len(kept))), rng)
    extra = members[extra]  # (X, 2) world ids
    extra_rel = _draw_grouped(w.rel_cdf, w.etype[extra[:, 0]].astype(np.int64), rng)
    heads = np.concatenate([kept[:, 0], extra[:, 0]])
    tails = np.concatenate([kept[:, 1], extra[:, 1]])
    wrel = np.concatenate([rel, extra_rel])
    base, second, n_rel = _relation_schema(cfg, rng)
    krel = np.where((second[wrel] >= 0) & (w.etype[tails] % 2 == 1), second[wrel], base[wrel])
    keys = (heads.astype(np.int64) * n_rel + krel) * w.n + tails
    _, first = np.unique(keys, return_index=True)
    trip = np.stack([heads, krel, tails], axis=1)[np.sort(first)]
    return trip[rng.permutation(len(trip))], n_rel


# ---------------------------------------------------------------------------
# names
# ---------------------------------------------------------------------------

_CONSONANTS = np.array(list("bcdfghjklmnprstvwz") + ["ch", "sh", "th", "ph", "qu"])
_VOWELS = np.array(list("aeiouy") + ["ou", "ea"])
_TRANSLIT = (("ph", "f"), ("ch", "tch"), ("sh", "sch"), ("th", "t"), ("c", "k"), ("w", "v"), ("y", "i"),
             ("ou", "u"), ("j", "dj"), ("qu", "kw"), ("z", "ts"), ("x", "ks"))
_ALPHABET = "abcdefghijklmnopqrstuvwxyz"


def vocabulary_size(cfg: SynthConfig) -> int:
    """Name tokens of the pair: ``round(vocabulary * (entities / VOCABULARY_AT)^vocabulary_growth)``, at least 10."""
    return max(10, round(cfg.vocabulary * (cfg.entities / VOCABULARY_AT) ** cfg.vocabulary_growth))


def _vocabulary(cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """:func:`vocabulary_size` distinct capitalised tokens of 2-4 consonant-vowel syllables."""
    size = vocabulary_size(cfg)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < size:
        m = 2 * (size - len(out)) + 16
        nsyl = rng.integers(2, 5, m)
        cons = _CONSONANTS[rng.integers(0, len(_CONSONANTS), (m, 4))]
        vows = _VOWELS[rng.integers(0, len(_VOWELS), (m, 4))]
        for i in range(m):
            tok = "".join(cons[i, j] + vows[i, j] for j in range(nsyl[i])).capitalize()
            if tok not in seen:
                seen.add(tok)
                out.append(tok)
                if len(out) == size:
                    break
    return np.array(out, dtype=object)


def _world_names(cfg: SynthConfig, n: int, rng: np.random.Generator) -> list[str]:
    """One name of 1-3 Zipf-drawn tokens per world entity."""
    vocab = _vocabulary(cfg, rng)
    cdf = np.cumsum(_zipf(len(vocab), cfg.token_zipf))
    cdf[-1] = 1.0
    ntok = 1 + rng.binomial(2, 0.5, n)
    tok = vocab[_draw(cdf, rng, 3 * n).reshape(n, 3)]  # (W, 3)
    return [" ".join(tok[i, :ntok[i]]) for i in range(n)]


def _typo(name: str, rng: np.random.Generator) -> str:
    """1-2 character edits (substitute with another letter, delete, insert)."""
    s = list(name)
    for _ in range(int(rng.integers(1, 3))):
        op, pos = int(rng.integers(0, 3)), int(rng.integers(0, len(s)))
        if op == 0 or len(s) < 3:
            old = s[pos].lower()
            s[pos] = _ALPHABET[(_ALPHABET.find(old) + int(rng.integers(1, 26))) % 26] if old in _ALPHABET else "e"
        elif op == 1:
            del s[pos]
        else:
            s.insert(pos, _ALPHABET[int(rng.integers(0, 26))])
    return "".join(s)


def _transliterate(name: str, rng: np.random.Generator) -> str:
    """A transliteration-like map: 3 of the character rules of ``_TRANSLIT`` applied everywhere."""
    out = name.lower()
    for j in rng.choice(len(_TRANSLIT), 3, replace=False):
        a, b = _TRANSLIT[int(j)]
        out = out.replace(a, b)
    return out.title()


def _noisy_name(name: str, rng: np.random.Generator) -> str:
    """``name`` changed by one noise kind: typo, token reordering or transliteration (never unchanged)."""
    kind = int(rng.integers(0, 3))
    tokens = name.split(" ")
    if kind == 1 and len(tokens) > 1:
        k = int(rng.integers(1, len(tokens)))
        return " ".join(tokens[k:] + tokens[:k])
    if kind == 2:
        out = _transliterate(name, rng)
        if out != name:
            return out
    out = _typo(name, rng)
    return out if out != name else name + "e"


def _kg_names(cfg: SynthConfig, world_names: list[str], members: np.ndarray,
              rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """(named member positions, their names) of one KG: missing and noisy names as configured."""
    u = rng.random(len(members))
    named = np.flatnonzero(u >= cfg.name_missing)
    noisy = rng.random(len(named)) < cfg.name_noise
    names = []
    for pos, bad in zip(named.tolist(), noisy.tolist()):
        name = world_names[members[pos]]
        names.append(_noisy_name(name, rng) if bad else name)
    return named, names


# ---------------------------------------------------------------------------
# attributes
# ---------------------------------------------------------------------------

def _world_attributes(cfg: SynthConfig, n: int, rng: np.random.Generator):
    """(entity, attribute) facts (F, 2), their values (F,), and which attributes are years (A,)."""
    counts = rng.poisson(cfg.attribute_mean, n)
    ent = np.repeat(np.arange(n), counts)
    cdf = np.cumsum(_zipf(cfg.attributes, 1.0))
    cdf[-1] = 1.0
    att = _draw(cdf, rng, len(ent))
    keys = ent.astype(np.int64) * cfg.attributes + att
    _, first = np.unique(keys, return_index=True)
    first = np.sort(first)
    ent, att = ent[first], att[first]
    is_year = rng.random(cfg.attributes) < 0.5
    scale = np.exp(rng.uniform(0, 12, cfg.attributes))
    years = rng.integers(1000, 2025, len(ent)).astype(np.float64)
    mags = scale[att] * rng.lognormal(0, 1, len(ent))
    return np.stack([ent, att], axis=1), np.where(is_year[att], years, mags), is_year


def _kg_attributes(cfg: SynthConfig, facts: np.ndarray, values: np.ndarray, is_year: np.ndarray,
                   local: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One KG's facts: (local entity, kg attribute) rows, formatted values; kept and noised as configured."""
    ok = (local[facts[:, 0]] >= 0) & (rng.random(len(facts)) < cfg.attribute_keep)
    f, v = facts[ok], values[ok]
    year = is_year[f[:, 1]]
    shift = np.where(rng.random(len(f)) < cfg.attribute_noise, rng.choice([-1.0, 1.0], len(f)), 0.0)
    v = np.where(year, v + shift, v * np.exp(rng.normal(0, cfg.attribute_noise, len(f))))
    relabel = rng.permutation(cfg.attributes)
    text = [f"{int(x)}" if y else f"{x:.6g}" for x, y in zip(v.tolist(), year.tolist())]
    order = rng.permutation(len(f))
    return local[f[order, 0]], relabel[f[order, 1]], [text[i] for i in order]


# ---------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------

def _write_lines(path: Path, n: int, line_chunk: Callable[[int, int], Iterator[str]], bar) -> None:
    """Write ``n`` lines produced by ``line_chunk(lo, hi)`` in chunks of :data:`CHUNK` lines."""
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for lo in range(0, n, CHUNK):
            hi = min(n, lo + CHUNK)
            fh.write("\n".join(line_chunk(lo, hi)))
            fh.write("\n")
            bar.update(hi - lo)


def _entity_ids(n: int, prefix: str, rng: np.random.Generator) -> np.ndarray:
    """``n`` opaque distinct ids ``prefix/xxxxxxxx`` (random hex), as an object array."""
    codes = _distinct_codes(n, rng)
    return np.array([f"{prefix}/{c:08x}" for c in codes.tolist()], dtype=object)


def _distinct_codes(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct random codes: a random permutation mixed by a bijection of [0, 2^32)."""
    x = rng.permutation(n).astype(np.uint64)
    return (x * np.uint64(2654435761) + np.uint64(rng.integers(0, 2 ** 31))) % np.uint64(2 ** 32)


def _write_kg(folder: Path, ids: np.ndarray, trip_local: np.ndarray, rel_names: np.ndarray,
              named: np.ndarray, names: list[str], attrs, bar) -> None:
    """One KG folder: entities.tsv (fixes the order), triples.tsv, names.tsv, attributes.tsv."""
    folder.mkdir(parents=True)
    _write_lines(folder / "entities.tsv", len(ids), lambda lo, hi: ids[lo:hi].tolist(), bar)

    def triples(lo, hi):
        t = trip_local[lo:hi]
        return map("\t".join, zip(ids[t[:, 0]].tolist(), rel_names[t[:, 1]].tolist(), ids[t[:, 2]].tolist()))
    _write_lines(folder / "triples.tsv", len(trip_local), triples, bar)
    _write_lines(folder / "names.tsv", len(named),
                 lambda lo, hi: map("\t".join, zip(ids[named[lo:hi]].tolist(), names[lo:hi])), bar)
    a_ent, a_att, a_val = attrs
    att_names = np.array([f"{folder.name}:a{j:04d}" for j in range(int(a_att.max(initial=0)) + 1)], dtype=object)
    _write_lines(folder / "attributes.tsv", len(a_ent), lambda lo, hi: map(
        "\t".join, zip(ids[a_ent[lo:hi]].tolist(), att_names[a_att[lo:hi]].tolist(), a_val[lo:hi])), bar)


# ---------------------------------------------------------------------------
# the pair
# ---------------------------------------------------------------------------

def prepare_out_dir(out: Path, overwrite: bool) -> None:
    """``out`` new or empty; a non-empty one only with ``overwrite`` and only when it holds an earlier pair."""
    if out.exists() and not out.is_dir():
        raise MmeaInputError(f"{out}: exists and is not a folder", hint="choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not (out / META_FILE).is_file():
            raise MmeaInputError(f"{out}: the folder is not empty and holds no synthetic pair, so it is not used "
                                 f"(nor cleared, even with --overwrite)", hint="choose an empty or new --out")
        if not overwrite:
            raise MmeaInputError(f"{out}: the folder already holds a synthetic pair; a second one would mix "
                                 f"their files", hint="replace it with --overwrite, or choose another --out")
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        log.info("--overwrite: cleared %s", out)
    out.mkdir(parents=True, exist_ok=True)


def _side(cfg: SynthConfig, w: _World, side: int, world_names: list[str], attr_world, rng) -> dict:
    """Everything of one KG, in its own (shuffled) entity numbering."""
    own_lo = w.n_shared + (0 if side == 0 else w.n_own[0])
    members = np.concatenate([np.arange(w.n_shared), np.arange(own_lo, own_lo + w.n_own[side])])
    members = members[rng.permutation(len(members))]  # KG order: position -> world entity
    local = np.full(w.n, -1, dtype=np.int64)
    local[members] = np.arange(len(members))
    trip, n_rel = _kg_triples(cfg, w, side, members, rng)
    trip_local = np.stack([local[trip[:, 0]], trip[:, 1], local[trip[:, 2]]], axis=1)
    named, names = _kg_names(cfg, world_names, members, rng)
    attrs = _kg_attributes(cfg, *attr_world, local, rng)
    ids = _entity_ids(len(members), "ab"[side], rng)
    return {"members": members, "local": local, "ids": ids, "trip": trip_local, "n_rel": n_rel,
            "named": named, "names": names, "attrs": attrs}


def generate_pair(cfg: SynthConfig, out: str | Path, *, overwrite: bool = False, progress: bool = True) -> dict:
    """Write the synthetic pair of ``cfg`` into ``out`` (see the module docstring); returns the meta record."""
    out = Path(out)
    prepare_out_dir(out, overwrite)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(5)]
    w = _make_world(cfg, streams[0])
    world_names = _world_names(cfg, w.n, streams[1])
    attr_world = _world_attributes(cfg, w.n, streams[2])
    sides = [_side(cfg, w, k, world_names, attr_world, streams[3 + k]) for k in (0, 1)]
    gold = sides[0]["local"][np.arange(w.n_shared)], sides[1]["local"][np.arange(w.n_shared)]
    order = np.argsort(gold[0], kind="stable")
    total = sum(len(s["ids"]) + len(s["trip"]) + len(s["named"]) + len(s["attrs"][0]) for s in sides) + w.n_shared
    with progress_bar(total=total, progress=progress, desc="synth: writing", unit=" lines",
                      unit_scale=True) as bar:
        for k, s in enumerate(sides):
            rel_names = np.array([f"{'pq'[k]}{j:05d}" for j in range(s["n_rel"])], dtype=object)
            _write_kg(out / f"kg{k + 1}", s["ids"], s["trip"], rel_names, s["named"], s["names"], s["attrs"], bar)
        ids1, ids2 = sides[0]["ids"], sides[1]["ids"]
        _write_lines(out / "links.tsv", w.n_shared, lambda lo, hi: map(
            "\t".join, zip(ids1[gold[0][order[lo:hi]]].tolist(), ids2[gold[1][order[lo:hi]]].tolist())), bar)
    meta = _meta(cfg, w, sides)
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    (out / "README").write_text(_readme(meta), encoding="utf-8")
    return meta


def _meta(cfg: SynthConfig, w: _World, sides: list[dict]) -> dict:
    return {
        "generator": GENERATOR, "version": GENERATOR_VERSION, "seed": cfg.seed, "knobs": asdict(cfg),
        "drawn": {"keep": list(w.keep), "dangling": list(w.dangling)}, "name_tokens": vocabulary_size(cfg),
        "counts": {"world_entities": w.n, "world_edges": int(len(w.edges)), "links": w.n_shared,
                   **{f"kg{k + 1}": {"entities": int(len(s["ids"])), "triples": int(len(s["trip"])),
                                     "relations": int(s["n_rel"]), "names": int(len(s["named"])),
                                     "attributes": int(len(s["attrs"][0]))} for k, s in enumerate(sides)}},
    }


def synth_record(path: str | Path) -> dict | None:
    """Generator, version, seed and name tokens of the pair this module wrote into ``path`` (read from its
    ``meta.json``), for a run's metrics; ``None`` when ``path`` holds no such record or another tool's."""
    try:
        meta = json.loads((Path(path) / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("generator") != GENERATOR:
        return None
    return {k: meta.get(k) for k in ("generator", "version", "seed", "name_tokens")}


def _readme(meta: dict) -> str:
    c = meta["counts"]
    knobs = " ".join(f"--knob {k}={v}" for k, v in meta["knobs"].items() if k not in ("entities", "seed"))
    return (f"Synthetic aligned KG pair ({GENERATOR} version {meta['version']}), plain-TSV layout "
            f"(docs/formats.md): kg1/, kg2/, links.tsv.\n"
            f"Made by: mmea datasets synth --entities {meta['knobs']['entities']} --seed {meta['seed']} {knobs}\n"
            f"kg1: {c['kg1']['entities']:,} entities, {c['kg1']['triples']:,} triples; kg2: {c['kg2']['entities']:,} "
            f"entities, {c['kg2']['triples']:,} triples; {c['links']:,} gold links.\n"
            f"Drawn per KG: keep {meta['drawn']['keep']}, dangling {meta['drawn']['dangling']}.\n"
            f"Every knob, the seed and the counts are in meta.json; mmea/data/synth.py explains the model.\n")


def synth_options(entities: int, seed: int, knobs: list[str] | tuple[str, ...]) -> SynthConfig:
    """The CLI's ``--entities``, ``--seed`` and ``--knob KEY=VALUE`` as a checked :class:`SynthConfig`."""
    from ..config import parse_value

    values: dict = {"entities": entities, "seed": seed}
    for item in knobs:
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise MmeaInputError(f"--knob {item!r}: expected KEY=VALUE", hint="e.g. --knob avg_degree=12")
        if key.strip() in ("entities", "seed"):
            raise MmeaInputError(f"--knob {key.strip()}: give it as --{key.strip()}")
        values[key.strip()] = parse_value(text.strip())
    return synth_config(values)
