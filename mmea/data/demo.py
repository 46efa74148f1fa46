"""The built-in demo: a seeded, synthetic multi-modal KG pair with known alignment.

A *latent world* of typed entities (people, cities, countries, films,
companies, universities, mountains, books) is drawn first: relation triples
with plausible domains and ranges, names, numeric attributes and an image
pattern per entity.  Two knowledge graphs are then *observed* from it, each
with its own entity ids, relation and attribute names, spelling of names
("language B" for the second KG), attribute noise and units, image
perturbations, dropped edges, noise edges and missing values.  The entities
both KGs observe are the gold links.

Every modality carries part of the signal and none carries all of it: names
collide (families share surnames, film titles repeat, universities are named
after their cities), edges are dropped, attributes are missing or noisy and
15% of the entities have no image.

The pair is written in the plain-TSV pair layout::

    OUT/manifest.json        spec, seed, DEMO_VERSION and counts
    OUT/README.txt           the same for people
    OUT/links.tsv            kg1_entity<TAB>kg2_entity (every gold link)
    OUT/kg1/entities.tsv     entity<TAB>uri
    OUT/kg1/triples.tsv      head<TAB>relation<TAB>tail
    OUT/kg1/names.tsv        entity<TAB>name
    OUT/kg1/attributes.tsv   entity<TAB>attribute<TAB>value
    OUT/kg1/images.tsv       entity<TAB>images/e00012.png
    OUT/kg1/images/*.png     32x32 RGB
    OUT/kg2/...              the same

Generation is deterministic: one seed gives byte-identical files.  Every
random draw comes from a generator seeded by ``(seed, purpose)``, so changing
one part of the generator leaves the draws of the others as they were.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import zlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from urllib.parse import quote

import numpy as np

from ..errors import MmeaInputError

__all__ = ["DEMO_VERSION", "DemoSpec", "generate_demo", "ensure_demo", "demo_folder_name"]

DEMO_VERSION = "1.0"
"""Version of the generator's output; bump it whenever the files a seed gives change."""

TYPES = ("person", "city", "country", "film", "company", "university", "mountain", "book")
TYPE_SHARES = (0.36, 0.14, 0.02, 0.15, 0.10, 0.05, 0.05, 0.13)


@dataclass(frozen=True)
class DemoSpec:
    """Parameters of the demo pair (the defaults are the built-in demo).

    Attributes:
        num_shared: latent entities both KGs observe (= number of gold links).
        num_unique: latent entities only one KG observes, per side.
        degree_scale: multiplies the mean number of edges of every relation.
        edge_keep: probability that a KG keeps a latent edge.
        noise_edges: random type-respecting edges each KG adds, as a fraction of its kept edges.
        name_missing: fraction of the entities of each KG without a name.
        name_noise: fraction of the second KG's names with random typos (beyond the
            systematic spelling changes of its "language").
        attr_missing: probability that a KG omits one attribute value of an entity.
        attr_noise: relative (log-normal) noise of each observed measurement.
        image_missing: fraction of the entities of each KG without an image.
        image_noise: standard deviation (0-255 scale) of the pixel noise of the second KG's images.
        image_size: side of the square RGB images, in pixels.
    """

    num_shared: int = 2000
    num_unique: int = 250
    degree_scale: float = 1.0
    edge_keep: float = 0.8
    noise_edges: float = 0.05
    name_missing: float = 0.04
    name_noise: float = 0.35
    attr_missing: float = 0.2
    attr_noise: float = 0.03
    image_missing: float = 0.15
    image_noise: float = 6.0
    image_size: int = 32

    def __post_init__(self) -> None:
        if self.num_shared < 1 or self.num_unique < 0:
            raise MmeaInputError(f"demo needs num_shared >= 1 and num_unique >= 0, got "
                                 f"{self.num_shared} and {self.num_unique}")
        if self.num_entities < 2 * len(TYPES):
            raise MmeaInputError(f"demo needs at least {2 * len(TYPES)} latent entities, got {self.num_entities}")
        for name in ("edge_keep", "name_missing", "name_noise", "attr_missing", "image_missing"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise MmeaInputError(f"demo parameter {name} must be in [0, 1], got {v}")
        for name in ("degree_scale", "noise_edges", "attr_noise", "image_noise"):
            if getattr(self, name) < 0:
                raise MmeaInputError(f"demo parameter {name} must be >= 0, got {getattr(self, name)}")
        if not 8 <= self.image_size <= 256:
            raise MmeaInputError(f"demo image_size must be in [8, 256], got {self.image_size}")

    @property
    def num_entities(self) -> int:
        """Number of latent entities."""
        return self.num_shared + 2 * self.num_unique

    @classmethod
    def from_params(cls, **params) -> "DemoSpec":
        """A spec from keyword parameters; an unknown name is an error listing the valid ones."""
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise MmeaInputError(f"unknown demo parameter(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
        return cls(**params)


def _rng(seed: int, purpose: str) -> np.random.Generator:
    """A generator for one purpose, independent of every other purpose's draws."""
    return np.random.default_rng([int(seed), zlib.crc32(purpose.encode())])


# ---------------------------------------------------------------------------
# latent world: types and relation triples
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class RelationSpec:
    """One latent relation: its name in each KG, domain, range and mean edges per head."""

    kg1: str
    kg2: str
    domain: str
    range: str
    mean: float


RELATIONS = (
    RelationSpec("bornIn", "birth_place", "person", "city", 0.9),
    RelationSpec("diedIn", "death_place", "person", "city", 0.35),
    RelationSpec("citizenOf", "nationality", "person", "country", 0.9),
    RelationSpec("spouse", "married_to", "person", "person", 0.0),      # families
    RelationSpec("childOf", "parent", "person", "person", 0.0),         # families
    RelationSpec("employer", "works_for", "person", "company", 1.2),
    RelationSpec("almaMater", "educated_at", "person", "university", 1.0),
    RelationSpec("influencedBy", "influenced_by", "person", "person", 1.5),
    RelationSpec("locatedIn", "in_country", "city", "country", 1.0),
    RelationSpec("twinTown", "sister_city", "city", "city", 1.5),
    RelationSpec("mayor", "head_of_government", "city", "person", 0.5),
    RelationSpec("directedBy", "director", "film", "person", 1.0),
    RelationSpec("starring", "cast_member", "film", "person", 6.0),
    RelationSpec("writtenBy", "screenwriter", "film", "person", 1.2),
    RelationSpec("musicBy", "composer", "film", "person", 0.5),
    RelationSpec("producedBy", "production_company", "film", "company", 1.2),
    RelationSpec("filmedIn", "filming_location", "film", "city", 1.5),
    RelationSpec("basedOn", "adapted_from", "film", "book", 0.15),
    RelationSpec("sequelOf", "follows", "film", "film", 0.0),           # sequels
    RelationSpec("headquarters", "hq_location", "company", "city", 1.0),
    RelationSpec("foundedBy", "founder", "company", "person", 1.0),
    RelationSpec("parentCompany", "owned_by", "company", "company", 0.3),
    RelationSpec("campus", "located_in", "university", "city", 1.0),
    RelationSpec("inCountry", "country_of", "mountain", "country", 1.0),
    RelationSpec("nearestCity", "near", "mountain", "city", 2.0),
    RelationSpec("author", "written_by", "book", "person", 1.0),
    RelationSpec("publisher", "published_by", "book", "company", 1.0),
    RelationSpec("setIn", "narrative_location", "book", "city", 1.5),
    RelationSpec("borders", "shares_border_with", "country", "country", 4.0),
    RelationSpec("leader", "head_of_state", "country", "person", 1.0),
)
_REL = {r.kg1: i for i, r in enumerate(RELATIONS)}


def assign_types(n: int, rng: np.random.Generator) -> np.ndarray:
    """Type index (into :data:`TYPES`) of each latent entity, in shuffled order, ``(n,)``."""
    counts = np.maximum(1, np.floor(np.asarray(TYPE_SHARES) * n).astype(np.int64))
    counts[0] += n - counts.sum()
    return rng.permutation(np.repeat(np.arange(len(TYPES)), counts))


def popularity(k: int, rng: np.random.Generator, exponent: float = 0.9) -> np.ndarray:
    """Zipf-like weights of ``k`` candidates in random rank order, summing to 1, ``(k,)``."""
    w = 1.0 / (rng.permutation(k) + 2.0) ** exponent
    return w / w.sum()


def sample_edges(heads: np.ndarray, tails: np.ndarray, weights: np.ndarray, mean: float,
                 rng: np.random.Generator) -> np.ndarray:
    """Edges ``(m, 2)`` from each head to tails drawn by ``weights``.

    ``mean <= 1``: a head has one edge with probability ``mean``; above, a
    Poisson number of edges.  Self loops and repeated edges are dropped.
    """
    if mean <= 1.0:
        h = heads[rng.random(len(heads)) < mean]
    else:
        h = np.repeat(heads, rng.poisson(mean, len(heads)))
    t = tails[rng.choice(len(tails), size=len(h), p=weights)] if len(h) else np.zeros(0, np.int64)
    e = np.stack([h, t], 1).astype(np.int64).reshape(-1, 2)
    return np.unique(e[e[:, 0] != e[:, 1]], axis=0)


def make_families(persons: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Partition people into families of 1-5 (two parents first, then children)."""
    sizes = rng.choice([1, 2, 3, 4, 5], size=len(persons), p=[0.35, 0.25, 0.2, 0.12, 0.08])
    order = rng.permutation(persons)
    out, i = [], 0
    for s in sizes:
        if i >= len(order):
            break
        out.append(order[i:i + s])
        i += s
    return out


def family_edges(families: list[np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``spouse`` edges (first two members, 80%) and ``childOf`` edges (the others to both)."""
    spouse, child = [], []
    for f in families:
        if len(f) >= 2 and rng.random() < 0.8:
            spouse.append((f[0], f[1]))
        for c in f[2:]:
            child.extend([(c, f[0]), (c, f[1])])
    return np.asarray(spouse, np.int64).reshape(-1, 2), np.asarray(child, np.int64).reshape(-1, 2)


def pick_sequels(films: np.ndarray, rng: np.random.Generator, rate: float = 0.08) -> np.ndarray:
    """``(sequel, prequel)`` pairs; a prequel is never itself a sequel."""
    is_seq = rng.random(len(films)) < rate
    seq, base = films[is_seq], films[~is_seq]
    if not len(seq) or not len(base):
        return np.zeros((0, 2), np.int64)
    return np.stack([seq, base[rng.integers(0, len(base), len(seq))]], 1).astype(np.int64)


def follow(edges: np.ndarray, n: int) -> np.ndarray:
    """For a many-to-one relation: the (first) tail of each head, -1 where none, ``(n,)``."""
    out = np.full(n, -1, np.int64)
    for h, t in edges[::-1]:
        out[h] = t
    return out


def latent_edges(types: np.ndarray, families: list[np.ndarray], sequels: np.ndarray, scale: float,
                 rng: np.random.Generator) -> np.ndarray:
    """Every latent triple ``(head, relation, tail)``, sorted and unique, ``(T, 3)``.

    Most relations draw tails by popularity; a few are local: people are
    citizens of the country of their birth city (85%), family members share
    a birth city (60%).
    """
    n = len(types)
    by_type = {t: np.flatnonzero(types == i) for i, t in enumerate(TYPES)}
    weights = {t: popularity(len(ids), rng) for t, ids in by_type.items()}
    spouse, child = family_edges(families, rng)
    parts: dict[str, np.ndarray] = {"spouse": spouse, "childOf": child,
                                    "sequelOf": sequels.reshape(-1, 2)}
    for r in RELATIONS:
        if r.kg1 in parts:
            continue
        parts[r.kg1] = sample_edges(by_type[r.domain], by_type[r.range], weights[r.range],
                                    r.mean * scale, rng)
    parts["bornIn"] = shared_birth_places(parts["bornIn"], families, n, rng)
    parts["citizenOf"] = citizenship(parts["bornIn"], parts["locatedIn"], parts["citizenOf"], n, rng)
    rows = [np.column_stack([e[:, 0], np.full(len(e), _REL[k]), e[:, 1]]) for k, e in parts.items() if len(e)]
    return np.unique(np.concatenate(rows).astype(np.int64), axis=0)


def shared_birth_places(born: np.ndarray, families: list[np.ndarray], n: int,
                        rng: np.random.Generator) -> np.ndarray:
    """Move 60% of family members' birth places to the first member's."""
    city = follow(born, n)
    for f in families:
        if city[f[0]] < 0:
            continue
        for m in f[1:]:
            if city[m] >= 0 and rng.random() < 0.6:
                city[m] = city[f[0]]
    heads = np.flatnonzero(city >= 0)
    return np.stack([heads, city[heads]], 1)


def citizenship(born: np.ndarray, located: np.ndarray, drawn: np.ndarray, n: int,
                rng: np.random.Generator) -> np.ndarray:
    """``citizenOf``: the country of the birth city (85%) where known, else the drawn one."""
    country_of_city = follow(located, n)
    home = np.full(n, -1, np.int64)
    home[born[:, 0]] = country_of_city[born[:, 1]]
    out = drawn.copy()
    local = (home[out[:, 0]] >= 0) & (rng.random(len(out)) < 0.85)
    out[local, 1] = home[out[local, 0]]
    return np.unique(out, axis=0)


# ---------------------------------------------------------------------------
# latent names
# ---------------------------------------------------------------------------

_ONSETS = ("b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
           "ch", "ph", "th", "br", "cr", "dr", "gr", "st", "tr", "qu", "sh", "cl", "wr")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ia", "ea", "ou", "y")
_CODAS = ("", "", "", "", "n", "r", "l", "s", "m", "ck", "x", "rt", "nd")
_GIVEN_ENDINGS = ("a", "o", "us", "ia", "el", "in", "an", "ine", "", "")
_SURNAME_ENDINGS = ("son", "sen", "ini", "ova", "er", "ez", "wick", "ford", "ic", "ius", "", "")
_CITY_SUFFIXES = ("", "", "", "burg", "ville", "ton", "stad", "polis", "ia", "ford", "wick")
_CITY_PREFIXES = ("New ", "Port ", "Upper ", "Lower ", "San ", "")
_COUNTRY_SUFFIXES = ("ia", "land", "stan", "ora", "ica", "ey")
_COMPANY_SUFFIXES = ("Corp", "Group", "Industries", "Systems", "Media", "Holdings", "Motors", "Pictures",
                     "Labs", "Works")
_NOUNS = ("Shadow", "Winter", "Crown", "Phantom", "Castle", "Circle", "Wolf", "Crystal", "River", "Storm",
          "Garden", "Mirror", "Echo", "Empire", "Harvest", "Voyage", "Comet", "Citadel", "Whisper", "Orchard",
          "Lantern", "Falcon", "Cipher", "Tower", "Ocean", "Memory", "Frontier", "Canyon", "Carnival",
          "Wanderer", "Prophet", "Harbor", "Sparrow", "Thunder", "Silence", "Compass", "Journey", "Kingdom",
          "Legacy", "Machine", "Night", "Dawn", "Fortune", "Promise", "Secret", "Signal", "Summer", "Valley",
          "Witness", "Clock")
_ADJECTIVES = ("Silent", "Crimson", "Broken", "Golden", "Hidden", "Last", "Lost", "Wild", "Cold", "Dark",
               "Bright", "Quiet", "Electric", "Final", "Wicked", "Frozen", "Burning", "Distant", "Endless",
               "Little", "Northern", "Pale", "Sweet", "Velvet", "White", "Black", "Cruel", "Curious", "Silver")
_SEQUEL_SUFFIXES = (" II", " 2", ": Part Two", " Returns")


def make_root(rng: np.random.Generator, syllables: int) -> str:
    """A capitalised pronounceable root of ``syllables`` syllables (``"Quelton"``)."""
    s = "".join(str(rng.choice(_ONSETS)) + str(rng.choice(_VOWELS)) for _ in range(syllables))
    return (s + str(rng.choice(_CODAS))).capitalize()


def unique_roots(rng: np.random.Generator, k: int, syllables: tuple[int, ...] = (2,)) -> list[str]:
    """``k`` distinct roots (order of first appearance)."""
    out: dict[str, None] = {}
    while len(out) < k:
        out[make_root(rng, int(rng.choice(syllables)))] = None
    return list(out)


def pick(rng: np.random.Generator, options: tuple[str, ...] | list[str], p=None) -> str:
    """One option as a plain ``str``."""
    return str(options[int(rng.choice(len(options), p=p))])


def person_names(families: list[np.ndarray], rng: np.random.Generator) -> dict[int, str]:
    """``Given Surname`` per person; family members share a surname, unrelated families may too.

    Given names come from a small pool with Zipf-like frequencies, so exact
    duplicates and near-duplicates occur.
    """
    n_people = sum(len(f) for f in families)
    given = [r + e for r, e in zip(unique_roots(rng, max(40, n_people // 10), (1, 2)),
                                   rng.choice(_GIVEN_ENDINGS, max(40, n_people // 10)))]
    given_p = popularity(len(given), rng, exponent=0.7)
    surnames = [r + str(e).lower() if e else r
                for r, e in zip(unique_roots(rng, max(20, int(len(families) * 0.7))),
                                rng.choice(_SURNAME_ENDINGS, max(20, int(len(families) * 0.7))))]
    out = {}
    for f in families:
        surname = pick(rng, surnames)
        for m in f:
            out[int(m)] = f"{pick(rng, given, given_p).capitalize()} {surname}"
    return out


def city_names(cities: np.ndarray, rng: np.random.Generator) -> dict[int, str]:
    """City names; one in five reuses an earlier root (``New Quelton``, ``Queltonburg``)."""
    roots = unique_roots(rng, len(cities))
    out, used = {}, []
    for c, root in zip(cities, roots):
        if used and rng.random() < 0.2:
            root = pick(rng, used)
            name = f"{pick(rng, _CITY_PREFIXES)}{root}{pick(rng, _CITY_SUFFIXES)}"
        else:
            name = root + pick(rng, _CITY_SUFFIXES)
        used.append(root)
        out[int(c)] = name
    return out


def title(rng: np.random.Generator) -> str:
    """A film or book title from a small vocabulary (titles repeat, as in life)."""
    a, n, m = pick(rng, _ADJECTIVES), pick(rng, _NOUNS), pick(rng, _NOUNS)
    patterns = (f"The {a} {n}", f"{a} {n}", f"The {n}", f"{n} of the {m}", n, f"The {make_root(rng, 2)} {n}",
                make_root(rng, 3))
    return pick(rng, patterns, p=[0.3, 0.2, 0.1, 0.15, 0.05, 0.1, 0.1])


def latent_names(types: np.ndarray, triples: np.ndarray, families: list[np.ndarray], sequels: np.ndarray,
                 rng: np.random.Generator) -> list[str]:
    """A base name for every latent entity (the first KG's spelling)."""
    n = len(types)
    ids = {t: np.flatnonzero(types == i) for i, t in enumerate(TYPES)}
    names: dict[int, str] = {}
    names.update(person_names(families, rng))
    names.update(city_names(ids["city"], rng))
    for c, root in zip(ids["country"], unique_roots(rng, len(ids["country"]))):
        names[int(c)] = root + pick(rng, _COUNTRY_SUFFIXES)
    city_list = list(ids["city"])
    for c in ids["company"]:
        root = names[int(rng.choice(city_list))].split()[-1] if rng.random() < 0.2 else make_root(rng, 2)
        names[int(c)] = f"{root} {pick(rng, _COMPANY_SUFFIXES)}"
    for m in ids["mountain"]:
        root = make_root(rng, 2)
        names[int(m)] = pick(rng, (f"Mount {root}", f"{root} Peak", f"{root}horn", root), p=[0.4, 0.3, 0.15, 0.15])
    for b in ids["book"]:
        names[int(b)] = title(rng)
    for f in ids["film"]:
        names[int(f)] = title(rng)
    campus = follow(triples[triples[:, 1] == _REL["campus"]][:, [0, 2]], n)
    for u in ids["university"]:
        city = names[int(campus[u])] if campus[u] >= 0 else make_root(rng, 2)
        names[int(u)] = pick(rng, (f"University of {city}", f"{city} Institute of Technology",
                                   f"{city} State University", f"{make_root(rng, 2)} College"),
                             p=[0.4, 0.2, 0.15, 0.25])
    based = triples[triples[:, 1] == _REL["basedOn"]]
    for f, _, b in based:
        if rng.random() < 0.7:
            names[int(f)] = names[int(b)]
    for s, p in sequels:
        names[int(s)] = names[int(p)] + pick(rng, _SEQUEL_SUFFIXES)
    return [names[i] for i in range(n)]


# ---------------------------------------------------------------------------
# the second KG's "language" and name noise
# ---------------------------------------------------------------------------

_WORDS_B = {"the": "", "of": "de", "university": "Universitet", "institute": "Institut",
            "technology": "Teknologi", "college": "Kolegium", "state": "Stat", "mount": "Monte", "peak": "Pik",
            "new": "Nova", "port": "Porto", "upper": "Ober", "lower": "Unter", "san": "Sankt", "group": "Grupo",
            "industries": "Industrie", "systems": "Sistemi", "media": "Medija", "holdings": "Holding",
            "motors": "Motori", "pictures": "Filmi", "labs": "Laboratori", "works": "Verke", "part": "Del",
            "two": "Dva", "returns": "Vozvrat"}
_SUFFIXES_B = (("ville", "vil"), ("burg", "borg"), ("ous", "oz"), ("us", "o"), ("ia", "ija"), ("ton", "tun"),
               ("son", "sen"), ("land", "lund"))
_LETTERS_B = (("ph", "f"), ("ck", "k"), ("qu", "kv"), ("th", "t"), ("ch", "č"), ("sh", "š"), ("w", "v"),
              ("c", "k"), ("x", "ks"), ("ou", "u"), ("y", "i"))


def spell_word_b(word: str) -> str:
    """One word in the second KG's spelling: fixed translations, suffix and letter changes.

    ``"Phantom"`` -> ``"Fantom"``, ``"Quelton"`` -> ``"Kveltun"``, ``"Vestia"`` -> ``"Vestija"``.
    """
    core = word.rstrip(":")
    tail = word[len(core):]
    low = core.lower()
    if low in _WORDS_B:
        return _WORDS_B[low] + tail if _WORDS_B[low] else ""
    for old, new in _SUFFIXES_B:
        if low.endswith(old) and len(low) > len(old) + 1:
            low = low[: -len(old)] + new
            break
    for old, new in _LETTERS_B:
        low = low.replace(old, new)
    return (low[:1].upper() + low[1:] if core[:1].isupper() else low) + tail


def spell_name_b(name: str) -> str:
    """A whole name in the second KG's spelling (dropped words leave no double spaces)."""
    return " ".join(w for w in (spell_word_b(x) for x in name.split()) if w)


def typo(name: str, rng: np.random.Generator) -> str:
    """One random edit: drop, swap, double or change a vowel of one letter (spaces kept)."""
    pos = [i for i, ch in enumerate(name) if ch != " "]
    if len(pos) < 3:
        return name
    i = pos[int(rng.integers(len(pos)))]
    op = int(rng.integers(4))
    if op == 0:
        return name[:i] + name[i + 1:]
    if op == 1 and i + 1 < len(name) and name[i + 1] != " ":
        return name[:i] + name[i + 1] + name[i] + name[i + 2:]
    if op == 2:
        return name[:i] + name[i] + name[i:]
    return name[:i] + pick(rng, "aeiou") + name[i + 1:]


def noisy_name(name: str, rate: float, rng: np.random.Generator) -> str:
    """With probability ``rate``: one or more typos; now and then a dropped or moved word."""
    words = name.split()
    u = rng.random()
    if len(words) >= 2 and u < 0.05:
        words.pop(int(rng.integers(len(words))))
    elif len(words) >= 2 and u < 0.10:
        words = words[1:] + words[:1]
    name = " ".join(words)
    if rng.random() < rate:
        for _ in range(1 + int(rng.poisson(0.5))):
            name = typo(name, rng)
    return name


# ---------------------------------------------------------------------------
# numeric attributes
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class AttributeSpec:
    """How one latent attribute is written in each KG.

    ``kind``: ``"count"`` / ``"float"`` (a number with ``decimals``),
    ``"coord"`` (degrees, additive noise), ``"year"``, ``"date"`` (latent
    value in days since 1970).  ``scale2`` converts the second KG's unit
    (metres -> feet); ``exact`` values (counts of things) get no noise.
    """

    kg1: str
    kg2: str
    kind: str
    decimals: int = 0
    scale2: float = 1.0
    decimals2: int | None = None
    exact: bool = False


ATTRIBUTES = {a.kg1: a for a in (
    AttributeSpec("birthDate", "date_of_birth", "date"),
    AttributeSpec("deathDate", "date_of_death", "date"),
    AttributeSpec("height", "height_cm", "float", 2, scale2=100.0, decimals2=0),
    AttributeSpec("weight", "mass_kg", "count"),
    AttributeSpec("careerStart", "active_since", "year"),
    AttributeSpec("awards", "award_count", "count", exact=True),
    AttributeSpec("netWorth", "net_worth_usd", "count"),
    AttributeSpec("population", "inhabitants", "count"),
    AttributeSpec("area", "area_km2", "float", 1),
    AttributeSpec("elevation", "elevation_ft", "count", scale2=3.28084),
    AttributeSpec("foundingYear", "year_founded", "year"),
    AttributeSpec("latitude", "lat", "coord", 4),
    AttributeSpec("longitude", "lon", "coord", 4),
    AttributeSpec("utcOffset", "timezone", "count", exact=True),
    AttributeSpec("gdp", "gdp_nominal_usd", "count"),
    AttributeSpec("independenceDate", "independence_day", "date"),
    AttributeSpec("hdi", "human_development_index", "float", 3),
    AttributeSpec("releaseDate", "publication_date", "date"),
    AttributeSpec("runtime", "duration_min", "count"),
    AttributeSpec("budget", "cost_usd", "count"),
    AttributeSpec("boxOffice", "box_office_usd", "count"),
    AttributeSpec("rating", "review_score", "float", 1),
    AttributeSpec("foundingDate", "inception", "date"),
    AttributeSpec("employees", "employee_count", "count"),
    AttributeSpec("revenue", "annual_revenue", "count"),
    AttributeSpec("netIncome", "profit", "count"),
    AttributeSpec("marketCap", "market_value", "count"),
    AttributeSpec("subsidiaries", "subsidiary_count", "count", exact=True),
    AttributeSpec("established", "founded_in", "year"),
    AttributeSpec("students", "student_count", "count"),
    AttributeSpec("staff", "academic_staff", "count"),
    AttributeSpec("endowment", "endowment_usd", "count"),
    AttributeSpec("prominence", "prominence_m", "count"),
    AttributeSpec("firstAscent", "first_ascent", "year"),
    AttributeSpec("isolation", "isolation_km", "float", 1),
    AttributeSpec("publicationDate", "published", "date"),
    AttributeSpec("pages", "page_count", "count"),
    AttributeSpec("copiesSold", "sales", "count"),
    AttributeSpec("editions", "edition_count", "count", exact=True),
)}


def days(year: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random day (days since 1970) in each of the given years, float ``(n,)``."""
    y = np.asarray(year, dtype=np.int64)
    start = (y - 1970).astype("datetime64[Y]").astype("datetime64[D]").astype(np.int64)
    return (start + rng.integers(0, 365, len(y))).astype(np.float64)


def lognormal(rng: np.random.Generator, mu: float, sigma: float, n: int) -> np.ndarray:
    """``exp(N(mu, sigma))`` draws, ``(n,)``."""
    return np.exp(rng.normal(mu, sigma, n))


def coords(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Latitude and longitude in degrees."""
    return {"latitude": rng.uniform(-55, 70, n), "longitude": rng.uniform(-180, 180, n)}


def person_attributes(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Birth and death dates (the old are mostly dead), body measures, career, awards, wealth."""
    birth_year = np.clip(rng.normal(1955, 22, n), 1890, 2005).astype(np.int64)
    birth = days(birth_year, rng)
    death = birth + rng.uniform(40, 95, n) * 365.25
    alive = (death > days(np.full(n, 2023), rng)) | (rng.random(n) < np.where(birth_year < 1935, 0.1, 0.75))
    career = (birth_year + rng.integers(16, 35, n)).astype(np.float64)
    return {"birthDate": birth, "deathDate": np.where(alive, np.nan, death),
            "height": np.round(rng.normal(1.74, 0.09, n), 2), "weight": rng.normal(72, 12, n),
            "careerStart": np.where(career > 2023, np.nan, career), "awards": rng.poisson(1.5, n) * 1.0,
            "netWorth": np.where(rng.random(n) < 0.5, lognormal(rng, 13.5, 1.5, n), np.nan)}


def city_attributes(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Population, area, elevation, founding year, position and the time zone it implies."""
    pop = np.maximum(500, lognormal(rng, 10.8, 1.3, n))
    c = coords(rng, n)
    return {"population": pop, "area": pop / lognormal(rng, 7, 0.8, n),
            "elevation": np.abs(rng.normal(0, 400, n)), "foundingYear": rng.integers(700, 1950, n) * 1.0,
            **c, "utcOffset": np.round(c["longitude"] / 15)}


def country_attributes(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Population, area, GDP, independence date, position, HDI."""
    pop = lognormal(rng, 16, 1.2, n)
    return {"population": pop, "area": lognormal(rng, 12, 1.3, n), "gdp": pop * lognormal(rng, 9, 1, n),
            "independenceDate": days(rng.integers(1500, 1995, n), rng), **coords(rng, n),
            "hdi": rng.uniform(0.35, 0.96, n)}


def film_attributes(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Release date, runtime, budget, box office, rating out of 10, awards."""
    budget = lognormal(rng, 16.5, 1.1, n)
    return {"releaseDate": days(rng.integers(1930, 2023, n), rng), "runtime": rng.normal(112, 18, n),
            "budget": budget, "boxOffice": budget * lognormal(rng, 0.7, 1, n),
            "rating": np.clip(rng.normal(6.5, 1.1, n), 1, 10), "awards": rng.poisson(0.8, n) * 1.0}


def company_attributes(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Founding date, employees and the money that scales with them, subsidiaries."""
    emp = np.maximum(3, lognormal(rng, 7, 2, n))
    revenue = emp * lognormal(rng, 12, 0.6, n)
    return {"foundingDate": days(rng.integers(1850, 2020, n), rng), "employees": emp, "revenue": revenue,
            "netIncome": revenue * rng.normal(0.06, 0.1, n), "marketCap": revenue * lognormal(rng, 0.5, 0.7, n),
            "subsidiaries": rng.poisson(3, n) * 1.0}


def university_attributes(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Year established, students, staff, endowment, position."""
    students = lognormal(rng, 9.5, 0.8, n)
    return {"established": rng.integers(1100, 2010, n) * 1.0, "students": students,
            "staff": students * rng.uniform(0.05, 0.15, n), "endowment": lognormal(rng, 19, 1.5, n),
            **coords(rng, n)}


def mountain_attributes(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Elevation, prominence, first ascent (70%), position, isolation."""
    elev = rng.uniform(500, 8000, n)
    return {"elevation": elev, "prominence": elev * rng.uniform(0.05, 0.6, n),
            "firstAscent": np.where(rng.random(n) < 0.7, rng.integers(1780, 2010, n) * 1.0, np.nan),
            **coords(rng, n), "isolation": lognormal(rng, 3, 1, n)}


def book_attributes(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Publication date, pages, copies sold, rating out of 5, awards, editions."""
    return {"publicationDate": days(rng.integers(1800, 2023, n), rng),
            "pages": np.maximum(48, rng.normal(320, 110, n)), "copiesSold": lognormal(rng, 10, 1.8, n),
            "rating": np.clip(rng.normal(3.8, 0.4, n), 1, 5), "awards": rng.poisson(0.5, n) * 1.0,
            "editions": rng.poisson(2, n) + 1.0}


TYPE_ATTRIBUTES = {"person": person_attributes, "city": city_attributes, "country": country_attributes,
                   "film": film_attributes, "company": company_attributes, "university": university_attributes,
                   "mountain": mountain_attributes, "book": book_attributes}
"""Type -> ``draw(rng, n)`` of the latent attribute values of ``n`` entities (NaN = not applicable)."""


def observe_value(spec: AttributeSpec, value: float, side: int, noise: float, rng: np.random.Generator) -> str:
    """One KG's literal for a latent value: noise, the KG's unit, then formatting."""
    if spec.kind == "date":
        d = value + (rng.integers(-20, 21) if rng.random() < 0.15 else 0)
        text = str(np.datetime64(int(d), "D"))
        return text[:4] if side == 2 and rng.random() < 0.1 else text
    if spec.kind == "year":
        return str(int(value) + (int(rng.choice([-1, 1])) if rng.random() < 0.1 else 0))
    if spec.kind == "coord":
        v = value + rng.normal(0, 0.02) * (noise > 0)
        return f"{v:.{spec.decimals}f}"
    v = value if spec.exact else value * float(np.exp(rng.normal(0, noise)))
    decimals = spec.decimals
    if side == 2:
        v *= spec.scale2
        decimals = spec.decimals if spec.decimals2 is None else spec.decimals2
    return f"{v:.{decimals}f}" if decimals else str(int(round(v)))


# ---------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------

TYPE_HUES = np.linspace(0.0, 1.0, len(TYPES), endpoint=False)


@dataclass(frozen=True)
class ImagePattern:
    """The latent picture of an entity: background, stripes and one shape."""

    colors: tuple[tuple[int, int, int], ...]
    stripes: int   # 0 none, 1 horizontal, 2 vertical, 3 diagonal, 4 anti-diagonal
    period: int
    shape: int     # 0 none, 1 ellipse, 2 rectangle, 3 triangle
    center: tuple[float, float]
    radius: float


def hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    """HSV in [0, 1] to 8-bit RGB."""
    import colorsys

    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


def draw_pattern_params(type_index: int, rng: np.random.Generator) -> ImagePattern:
    """Random pattern of one entity; the background hue leans towards its type's hue."""
    hue = TYPE_HUES[type_index] + rng.normal(0, 0.06)
    colors = (hsv_to_rgb(hue, rng.uniform(0.3, 0.8), rng.uniform(0.5, 0.95)),
              hsv_to_rgb(rng.random(), rng.uniform(0.4, 1.0), rng.uniform(0.3, 1.0)),
              hsv_to_rgb(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.4, 1.0)))
    stripes = int(rng.integers(5))
    shape = int(rng.integers(4)) if stripes else int(rng.integers(1, 4))  # never a plain background
    return ImagePattern(colors, stripes, int(rng.choice([4, 6, 8, 12])), shape,
                        (float(rng.uniform(0.25, 0.75)), float(rng.uniform(0.25, 0.75))),
                        float(rng.uniform(0.12, 0.35)))


def render_pattern(p: ImagePattern, size: int) -> np.ndarray:
    """The pattern as uint8 pixels ``(size, size, 3)``."""
    from PIL import Image, ImageDraw

    yy, xx = np.mgrid[0:size, 0:size] * (32.0 / size)
    coord = {1: yy, 2: xx, 3: xx + yy, 4: xx - yy}.get(p.stripes)
    px = np.empty((size, size, 3), np.uint8)
    px[:] = p.colors[0]
    if coord is not None:
        px[(np.floor(coord / (p.period / 2)) % 2) == 1] = p.colors[1]
    img = Image.fromarray(px, "RGB")
    cx, cy, r = p.center[0] * size, p.center[1] * size, p.radius * size
    box = [cx - r, cy - r, cx + r, cy + r]
    draw = ImageDraw.Draw(img)
    if p.shape == 1:
        draw.ellipse(box, fill=p.colors[2])
    elif p.shape == 2:
        draw.rectangle(box, fill=p.colors[2])
    elif p.shape == 3:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=p.colors[2])
    return np.asarray(img, dtype=np.uint8)


def perturb_image(px: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """The second KG's photo of the same thing: brightness, shift, sometimes a flip, pixel noise."""
    out = px.astype(np.float64) * rng.uniform(0.8, 1.2)
    out = np.roll(out, (int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), axis=(0, 1))
    if rng.random() < 0.2:
        out = out[:, ::-1]
    out = out + rng.normal(0, noise, out.shape)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def save_png(px: np.ndarray, path: Path) -> None:
    """Write pixels as a PNG with fixed options (same pixels -> same bytes)."""
    from PIL import Image

    Image.fromarray(px, "RGB").save(path, format="PNG", optimize=False, compress_level=9)


# ---------------------------------------------------------------------------
# the latent world and its two views
# ---------------------------------------------------------------------------

@dataclass
class LatentWorld:
    """Everything both KGs observe a part of."""

    types: np.ndarray                 # (n,) index into TYPES
    triples: np.ndarray               # (T, 3) latent ids, relation index into RELATIONS
    names: list[str]                  # (n,)
    attributes: dict[str, np.ndarray]  # kg1 attribute name -> (n,) float, NaN = none
    patterns: list[ImagePattern]      # (n,)
    members: tuple[np.ndarray, np.ndarray]  # latent ids each KG observes (sorted)


def build_world(spec: DemoSpec, seed: int) -> LatentWorld:
    """Draw the latent world of a spec and seed."""
    n = spec.num_entities
    types = assign_types(n, _rng(seed, "types"))
    persons = np.flatnonzero(types == TYPES.index("person"))
    families = make_families(persons, _rng(seed, "families"))
    sequels = pick_sequels(np.flatnonzero(types == TYPES.index("film")), _rng(seed, "sequels"))
    triples = latent_edges(types, families, sequels, spec.degree_scale, _rng(seed, "edges"))
    names = latent_names(types, triples, families, sequels, _rng(seed, "names"))
    rng = _rng(seed, "attributes")
    attributes: dict[str, np.ndarray] = {}
    for t, kind in enumerate(TYPES):
        ids = np.flatnonzero(types == t)
        for key, vals in TYPE_ATTRIBUTES[kind](rng, len(ids)).items():
            attributes.setdefault(key, np.full(n, np.nan))[ids] = vals
    rng = _rng(seed, "patterns")
    patterns = [draw_pattern_params(int(t), rng) for t in types]
    perm = _rng(seed, "members").permutation(n)
    shared, only1 = perm[:spec.num_shared], perm[spec.num_shared:spec.num_shared + spec.num_unique]
    only2 = perm[spec.num_shared + spec.num_unique:]
    members = (np.sort(np.concatenate([shared, only1])), np.sort(np.concatenate([shared, only2])))
    return LatentWorld(types, triples, names, attributes, patterns, members)


@dataclass
class KGView:
    """One KG as observed from the latent world, ready to write.

    ``latent[i]`` is the latent entity behind row ``i`` of ``entities.tsv``.
    """

    side: int
    latent: np.ndarray
    ids: list[str]
    uris: list[str]
    names: list[str]                       # "" = no name
    triples: list[tuple[str, str, str]]
    attributes: list[tuple[str, str, str]]
    images: list[tuple[str, str, np.ndarray]]  # (entity, relative path, pixels)
    relations: list[str] = field(default_factory=list)


def entity_ids(members: np.ndarray, side: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """Shuffled ids (``kg1:E0042``, ``kg2:Q31337``) and the latent entity of each, in id order."""
    k = len(members)
    if side == 1:
        numbers = np.arange(k)
        ids = [f"kg1:E{i:04d}" for i in numbers]
    else:
        numbers = np.sort(rng.choice(np.arange(10000, 10000 + max(90000, 10 * k)), size=k, replace=False))
        ids = [f"kg2:Q{i}" for i in numbers]
    return rng.permutation(members), ids


def entity_uri(side: int, name: str, entity: str, taken: set[str]) -> str:
    """``http://demo-a.example.org/resource/Quelton_Stad``; the id where there is no name; never twice."""
    base = f"http://demo-{'a' if side == 1 else 'b'}.example.org/resource/"
    local = quote(name.replace(" ", "_"), safe="_-.,()'") if name else entity.split(":", 1)[1]
    uri, k = base + local, 2
    while uri in taken:
        uri, k = f"{base}{local}_{k}", k + 1
    taken.add(uri)
    return uri


def observe_names(world: LatentWorld, latent: np.ndarray, side: int, spec: DemoSpec,
                  rng: np.random.Generator) -> list[str]:
    """Each entity's name in this KG's spelling, with noise; "" for the ``name_missing`` share."""
    out = []
    for e in latent:
        name = world.names[e]
        if side == 2:
            name = noisy_name(spell_name_b(name), spec.name_noise, rng)
        missing = rng.random() < spec.name_missing
        out.append("" if missing or not name.strip() else name)
    return out


def observe_triples(world: LatentWorld, latent: np.ndarray, ids: list[str], side: int, spec: DemoSpec,
                    rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """Kept latent edges among this KG's entities plus type-respecting noise edges, sorted."""
    local = np.full(len(world.types), -1, np.int64)
    local[latent] = np.arange(len(latent))
    t = world.triples
    inside = (local[t[:, 0]] >= 0) & (local[t[:, 2]] >= 0)
    kept = t[inside & (rng.random(len(t)) < spec.edge_keep)]
    rows = np.column_stack([local[kept[:, 0]], kept[:, 1], local[kept[:, 2]]])
    n_noise = int(round(spec.noise_edges * len(rows)))
    local_types = world.types[latent]
    noise = []
    for r in rng.integers(0, len(RELATIONS), n_noise):
        rel = RELATIONS[int(r)]
        heads = np.flatnonzero(local_types == TYPES.index(rel.domain))
        tails = np.flatnonzero(local_types == TYPES.index(rel.range))
        if len(heads) and len(tails):
            noise.append((int(rng.choice(heads)), int(r), int(rng.choice(tails))))
    if noise:
        rows = np.concatenate([rows, np.asarray(noise, np.int64)])
    rows = np.unique(rows[rows[:, 0] != rows[:, 2]], axis=0)
    names = [r.kg1 if side == 1 else r.kg2 for r in RELATIONS]
    return [(ids[h], names[r], ids[tl]) for h, r, tl in rows]


def observe_attributes(world: LatentWorld, latent: np.ndarray, ids: list[str], side: int, spec: DemoSpec,
                       rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """``(entity, attribute, literal)`` for every value this KG keeps, by entity then attribute."""
    out = []
    for i, e in enumerate(latent):
        for key, vals in world.attributes.items():
            v = vals[e]
            if np.isnan(v) or rng.random() < spec.attr_missing:
                continue
            a = ATTRIBUTES[key]
            out.append((ids[i], a.kg1 if side == 1 else a.kg2, observe_value(a, float(v), side, spec.attr_noise, rng)))
    return out


def observe_images(world: LatentWorld, latent: np.ndarray, ids: list[str], side: int, spec: DemoSpec,
                   rng: np.random.Generator) -> list[tuple[str, str, np.ndarray]]:
    """``(entity, images/eNNNNN.png, pixels)`` for all but a random ``image_missing`` share."""
    n = len(latent)
    has = np.zeros(n, bool)
    has[rng.permutation(n)[: n - int(round(spec.image_missing * n))]] = True
    out = []
    for i in np.flatnonzero(has):
        px = render_pattern(world.patterns[latent[i]], spec.image_size)
        if side == 2:
            px = perturb_image(px, spec.image_noise, rng)
        out.append((ids[i], f"images/e{i:05d}.png", px))
    return out


def observe(world: LatentWorld, side: int, spec: DemoSpec, seed: int) -> KGView:
    """One KG of the pair (``side`` 1 or 2)."""
    latent, ids = entity_ids(world.members[side - 1], side, _rng(seed, f"ids{side}"))
    names = observe_names(world, latent, side, spec, _rng(seed, f"names{side}"))
    taken: set[str] = set()
    uris = [entity_uri(side, nm, e, taken) for nm, e in zip(names, ids)]
    return KGView(
        side, latent, ids, uris, names,
        observe_triples(world, latent, ids, side, spec, _rng(seed, f"triples{side}")),
        observe_attributes(world, latent, ids, side, spec, _rng(seed, f"attributes{side}")),
        observe_images(world, latent, ids, side, spec, _rng(seed, f"images{side}")),
        [r.kg1 if side == 1 else r.kg2 for r in RELATIONS],
    )


def gold_links(kg1: KGView, kg2: KGView) -> list[tuple[str, str]]:
    """``(kg1 entity, kg2 entity)`` of every latent entity both observe, in kg1 order."""
    where2 = {int(e): i for i, e in enumerate(kg2.latent)}
    return [(kg1.ids[i], kg2.ids[where2[int(e)]]) for i, e in enumerate(kg1.latent) if int(e) in where2]


# ---------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------

def write_tsv(path: Path, header: str, rows) -> int:
    """Write ``# header`` and tab-joined rows (``\\n`` endings, UTF-8); returns the row count."""
    lines = [f"# {header}"] + ["\t".join(r) for r in rows]
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))
    return len(lines) - 1


def write_kg(view: KGView, folder: Path) -> dict[str, int]:
    """Write one KG folder; returns its counts."""
    (folder / "images").mkdir(parents=True)
    tag = f"mmea demo v{DEMO_VERSION} kg{view.side}"
    counts = {
        "entities": write_tsv(folder / "entities.tsv", f"{tag}: entity<TAB>uri", zip(view.ids, view.uris)),
        "triples": write_tsv(folder / "triples.tsv", f"{tag}: head<TAB>relation<TAB>tail", view.triples),
        "names": write_tsv(folder / "names.tsv", f"{tag}: entity<TAB>name",
                           ((e, nm) for e, nm in zip(view.ids, view.names) if nm)),
        "attribute_values": write_tsv(folder / "attributes.tsv", f"{tag}: entity<TAB>attribute<TAB>value",
                                      view.attributes),
        "images": write_tsv(folder / "images.tsv", f"{tag}: entity<TAB>image path (relative to this folder)",
                            ((e, p) for e, p, _ in view.images)),
    }
    for _, rel, px in view.images:
        save_png(px, folder / rel)
    counts["relations"] = len({r for _, r, _ in view.triples})
    counts["attributes"] = len({a for _, a, _ in view.attributes})
    return counts


def readme_text(manifest: dict) -> str:
    """The pair folder's ``README.txt``."""
    spec = "\n".join(f"  {k} = {v}" for k, v in manifest["spec"].items())
    counts = "\n".join(f"  {side}: " + ", ".join(f"{k} {v}" for k, v in manifest["counts"][side].items())
                       for side in ("kg1", "kg2"))
    return (f"mmea demo pair, generator version {manifest['version']}, seed {manifest['seed']}\n\n"
            "A synthetic multi-modal knowledge-graph pair with known alignment, generated by\n"
            "mmea.data.demo.generate_demo.  Two KGs observe one latent world of typed entities with\n"
            "their own ids, relation and attribute names, name spelling, units, noise and gaps.\n\n"
            f"Parameters:\n{spec}\n\nCounts:\n{counts}\n  gold links: {manifest['counts']['links']}\n\n"
            "Files: links.tsv (kg1_entity<TAB>kg2_entity); per KG entities.tsv, triples.tsv, names.tsv,\n"
            "attributes.tsv, images.tsv and images/*.png.  Lines starting with # are comments.\n")


def write_pair(folder: Path, spec: DemoSpec, seed: int) -> dict:
    """Generate the pair into an empty ``folder``; returns the manifest (written last)."""
    world = build_world(spec, seed)
    kg1, kg2 = observe(world, 1, spec, seed), observe(world, 2, spec, seed)
    counts = {"kg1": write_kg(kg1, folder / "kg1"), "kg2": write_kg(kg2, folder / "kg2")}
    counts["links"] = write_tsv(folder / "links.tsv", f"mmea demo v{DEMO_VERSION}: kg1_entity<TAB>kg2_entity",
                                gold_links(kg1, kg2))
    counts["latent_entities"] = spec.num_entities
    manifest = {"format": "mmea-tsv-pair", "generator": "mmea.data.demo", "version": DEMO_VERSION,
                "seed": int(seed), "spec": asdict(spec), "counts": counts,
                "types": list(TYPES), "relations": [[r.kg1, r.kg2] for r in RELATIONS],
                "attributes": [[a.kg1, a.kg2] for a in ATTRIBUTES.values()]}
    (folder / "README.txt").write_text(readme_text(manifest), encoding="utf-8")
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def _publish(tmp: Path, dest: Path, overwrite: bool) -> bool:
    """Move a finished ``tmp`` folder to ``dest`` by rename.

    Returns False (and removes ``tmp``) when ``dest`` exists and is not to
    be overwritten, including when a concurrent writer got there first.
    """
    if dest.exists() and overwrite:
        trash = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(dest, trash)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.rename(tmp, dest)
        return True
    except OSError:
        if not dest.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        return False


def generate_demo(out_dir: str | Path, seed: int = 0, *, spec: DemoSpec | None = None, overwrite: bool = False,
                  **params) -> Path:
    """Generate the demo pair into ``out_dir`` (created; must not exist unless ``overwrite``).

    ``params`` are :class:`DemoSpec` fields (``num_shared=200``); or pass a
    whole ``spec``.  The folder is written beside ``out_dir`` under a
    temporary name and renamed when complete, so a reader never sees half
    of it.  Returns ``out_dir``.
    """
    if spec is not None and params:
        raise MmeaInputError("give either spec or demo parameters, not both")
    spec = spec or DemoSpec.from_params(**params)
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise MmeaInputError(f"{out_dir} already exists", hint="remove it or pass overwrite=True")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        write_pair(tmp, spec, seed)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not _publish(tmp, out_dir, overwrite):
        raise MmeaInputError(f"{out_dir} already exists", hint="remove it or pass overwrite=True")
    return out_dir


def demo_folder_name(seed: int = 0, spec: DemoSpec | None = None) -> str:
    """Name of the cached demo folder: ``v1.0-seed0``, plus a hash of the spec when it is not the default."""
    name = f"v{DEMO_VERSION}-seed{int(seed)}"
    if spec is not None and spec != DemoSpec():
        digest = zlib.crc32(json.dumps(asdict(spec), sort_keys=True).encode())
        name += f"-{digest:08x}"
    return name


def ensure_demo(root: str | Path | None = None, seed: int = 0, spec: DemoSpec | None = None) -> Path:
    """The folder of the demo pair for this version, seed (and spec), generated on first use.

    ``root`` defaults to ``$MMEA_HOME/demo`` (``~/.cache/mmea/demo``); ``spec``
    to the built-in demo's.  Safe under concurrent calls: each writer
    generates into its own temporary folder and renames it into place; the
    loser of a race discards its copy, so a half-written folder is never
    returned.  A folder without ``manifest.json`` (not written by this
    function) is regenerated.
    """
    if root is None:
        from ..home import mmea_home

        root = mmea_home() / "demo"
    folder = Path(root) / demo_folder_name(seed, spec)
    if (folder / "manifest.json").is_file():
        return folder
    try:
        generate_demo(folder, seed, spec=spec or DemoSpec(), overwrite=folder.exists())
    except MmeaInputError:
        if not (folder / "manifest.json").is_file():
            raise
    return folder
