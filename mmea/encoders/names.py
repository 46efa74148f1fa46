"""Entity names: which text stands for an entity, and the encoders that embed it.

Text per entity (:func:`entity_texts`, ``--name-source``):

- ``uri``: the decoded local name of the URI (``.../Kim_Dae-jung`` -> ``Kim Dae-jung``);
- ``name``: the display name the dataset provides, else the URI local name;
- ``translated``: the machine-translated name (DBP15k ships them), else the
  display name, else the URI local name; every fallback is counted;
- ``auto``: the same chain as ``translated`` but without complaining when the
  dataset has no translations.

Asking for ``translated`` on a task where *neither* KG has translations is an
error (the user asked for something the data does not have); when only one KG
lacks them (typically the English side) that side falls back with a warning.

Name encoders (registry :data:`~mmea.encoders.ENCODERS`):

- ``char-ngram`` (:class:`CharNgramEncoder`): TF-IDF over character n-grams,
  fitted on the texts of *both* KGs at once so that both sides share one
  feature space, plus a dense projection to a fixed dimension.  Needs no
  weights and no network.
- ``sentence-transformers`` (:class:`SentenceTransformerEncoder`): any
  sentence-transformers model by hub name or local directory, default
  ``sentence-transformers/LaBSE`` (multilingual, 768-d, Feng et al. 2022).
  Only local files are used: a model that is not on disk is a
  :class:`~mmea.encoders.WeightsNotFoundError` naming the model, the caches
  searched and how to provide it.
- ``auto`` (:class:`AutoNameEncoder`): the transformer when its weights are on
  disk, else ``char-ngram`` with a warning; ``info["encoder"]`` says which ran.
"""

from __future__ import annotations

import logging
import os
import re
import time
import unicodedata
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from ..data.graph import KnowledgeGraph
from ..errors import MmeaError, MmeaInputError
from . import ENCODERS, EncodedFeatures, WeightsNotFoundError, progress_enabled

__all__ = [
    "DEFAULT_NAME_MODEL",
    "NAME_SOURCES",
    "EntityTexts",
    "entity_texts",
    "resolve_entity_texts",
    "task_texts",
    "to_latin",
    "NameEncoder",
    "CharNgramEncoder",
    "SentenceTransformerEncoder",
    "AutoNameEncoder",
    "find_sentence_transformer",
    "sentence_transformer_cache_dirs",
    "resolve_name_encoder",
]

log = logging.getLogger("mmea.encoders")

DEFAULT_NAME_MODEL = "sentence-transformers/LaBSE"
NAME_SOURCES = ("uri", "name", "translated", "auto")

_WS_RE = re.compile(r"\s+")


# ---------------------------------------------------------------------------
# entity texts
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class EntityTexts:
    """The text of each entity and where it came from.

    Attributes:
        texts: one string per entity ("" when nothing is known).
        source: the requested ``--name-source``.
        counts: how many texts came from ``translated`` / ``name`` / ``uri``,
            and how many are ``empty``.
        fallbacks: entities whose text did not come from the requested source.
    """

    texts: list[str]
    source: str
    counts: dict = field(default_factory=dict)
    fallbacks: int = 0


def _clean(text: str | None) -> str:
    return _WS_RE.sub(" ", text or "").strip()


def resolve_entity_texts(kg: KnowledgeGraph, source: str = "uri", *, strict: bool = True) -> EntityTexts:
    """Text of every entity of ``kg`` for ``source`` in :data:`NAME_SOURCES`, with counts.

    ``strict``: with ``source="translated"`` on a KG that has no translated
    names, raise :class:`MmeaInputError` (else warn and fall back per entity).
    """
    if source not in NAME_SOURCES:
        raise MmeaInputError(f"unknown name source {source!r}; valid choices: {', '.join(NAME_SOURCES)}")
    if source == "translated" and kg.translated_names is None:
        msg = f"{kg.name}: the dataset has no machine-translated names (--name-source translated)"
        if strict:
            raise MmeaInputError(
                msg, hint="DBP15k ships them as translated_ent_name/dbp_<pair>.json beside the dataset folder "
                          "(point --data-dir at the folder holding both); or use --name-source name, uri or auto")
        log.warning("%s; using display names / URI local names instead", msg)
    chain: list[tuple[str, Sequence[str] | None]] = {
        "uri": [("uri", None)],
        "name": [("name", kg.names), ("uri", None)],
        "translated": [("translated", kg.translated_names), ("name", kg.names), ("uri", None)],
        "auto": [("translated", kg.translated_names), ("name", kg.names), ("uri", None)],
    }[source]
    uri_names: list[str] | None = None
    counts = {"translated": 0, "name": 0, "uri": 0, "empty": 0}
    texts: list[str] = []
    for i in range(kg.num_entities):
        text, origin = "", "empty"
        for what, seq in chain:
            if what == "uri":
                if uri_names is None:
                    uri_names = kg.uri_names()
                cand = _clean(uri_names[i])
            else:
                cand = _clean(seq[i]) if seq is not None else ""
            if cand:
                text, origin = cand, what
                break
        counts[origin] += 1
        texts.append(text)
    requested = {"uri": "uri", "name": "name"}.get(source, "translated")
    fallbacks = kg.num_entities - counts[requested]
    if source in ("name", "translated") and fallbacks:
        log.info("%s: %d of %d entities have no %s name; used %s", kg.name, fallbacks, kg.num_entities,
                 requested, ", ".join(f"{k} for {v}" for k, v in counts.items() if v and k != requested))
    return EntityTexts(texts, source, counts, fallbacks)


def entity_texts(kg: KnowledgeGraph, source: str = "uri", *, strict: bool = True) -> list[str]:
    """Text of every entity of ``kg`` (see :func:`resolve_entity_texts`)."""
    return resolve_entity_texts(kg, source, strict=strict).texts


def task_texts(source_kg: KnowledgeGraph, target_kg: KnowledgeGraph, source: str = "auto"
               ) -> tuple[EntityTexts, EntityTexts]:
    """Texts of both KGs of a task.

    ``translated`` is an error only when *neither* KG has translated names; a
    KG without them (typically the English side) falls back with a warning.
    """
    if source == "translated" and source_kg.translated_names is None and target_kg.translated_names is None:
        resolve_entity_texts(source_kg, source, strict=True)  # raises with the actionable message
    return (resolve_entity_texts(source_kg, source, strict=False),
            resolve_entity_texts(target_kg, source, strict=False))


# ---------------------------------------------------------------------------
# transliteration
# ---------------------------------------------------------------------------

_CYRILLIC = dict(zip(
    "абвгдежзийклмнопрстуфхцчшщъыьэюяіїєґў",
    ["a", "b", "v", "g", "d", "e", "zh", "z", "i", "i", "k", "l", "m", "n", "o", "p", "r", "s", "t", "u",
     "f", "kh", "ts", "ch", "sh", "shch", "", "y", "", "e", "yu", "ya", "i", "yi", "ye", "g", "u"]))
_GREEK = dict(zip(
    "αβγδεζηθικλμνξοπρσςτυφχψω",
    ["a", "v", "g", "d", "e", "z", "i", "th", "i", "k", "l", "m", "n", "x", "o", "p", "r", "s", "s", "t",
     "y", "f", "ch", "ps", "o"]))
_LATIN_SPECIAL = {"ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "đ": "d", "ð": "d", "ł": "l", "þ": "th",
                  "ı": "i", "ħ": "h", "ŋ": "ng"}
_TRANSLIT = {**_CYRILLIC, **_GREEK, **_LATIN_SPECIAL}


@lru_cache(maxsize=1)
def _unidecode():
    try:
        from unidecode import unidecode
    except ImportError:
        return None
    return unidecode


def to_latin(text: str) -> str:
    """Transliterate ``text`` to Latin script.

    Uses ``unidecode`` when it is installed (covers CJK, kana, Arabic, ...).
    The built-in fallback strips diacritics (NFKD, drop combining marks) and
    maps Cyrillic, Greek and a few special Latin letters; other scripts (CJK)
    are left as they are.
    """
    uni = _unidecode()
    if uni is not None:
        return uni(text)
    out = []
    for ch in unicodedata.normalize("NFKD", text):
        if unicodedata.combining(ch):
            continue
        lo = ch.lower()
        rep = _TRANSLIT.get(lo)
        if rep is None:
            out.append(ch)
        else:
            out.append(rep.capitalize() if ch != lo else rep)
    return "".join(out)


# ---------------------------------------------------------------------------
# encoders
# ---------------------------------------------------------------------------

class NameEncoder:
    """Base class: ``encode(texts)`` does the shared work, a subclass implements ``_encode``.

    Shared work: whitespace clean-up, the presence mask (non-empty text),
    timing and the ``info`` dict.  Rows of empty texts are zero.
    """

    registry_name: ClassVar[str] = "name"

    def config(self) -> dict:
        """The options that determine the output (for cache keys and metrics)."""
        return {}

    def _encode(self, texts: list[str], mask: np.ndarray) -> tuple[Any, dict, dict]:  # pragma: no cover
        """``texts`` -> (matrix (n, d), info, extras); ``mask[i]`` is ``texts[i] != ""``."""
        raise NotImplementedError

    def encode(self, texts: Sequence[str]) -> EncodedFeatures:
        """Embed ``texts``: ``(n, d)`` matrix, mask, info (encoder, dim, time_s, counts)."""
        t0 = time.perf_counter()
        texts = [_clean(t) for t in texts]
        mask = np.fromiter((bool(t) for t in texts), dtype=bool, count=len(texts))  # (n,)
        matrix, info, extras = self._encode(texts, mask)
        info = {"encoder": self.registry_name, **self.config(), **info,
                "dim": int(matrix.shape[1]), "num_texts": len(texts), "empty_texts": int((~mask).sum()),
                "time_s": round(time.perf_counter() - t0, 3)}
        return EncodedFeatures(matrix, mask, info, extras)

    def encode_pair(self, source_texts: Sequence[str], target_texts: Sequence[str]
                    ) -> tuple[EncodedFeatures, EncodedFeatures]:
        """Encode both sides in one call (one shared vocabulary / feature space) and split."""
        both = self.encode(list(source_texts) + list(target_texts))
        n = len(source_texts)
        return both.rows(0, n), both.rows(n, both.num_rows)


def _l2_normalize_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)  # (n, 1)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


@ENCODERS.register(name="char-ngram", aliases=("char", "tfidf", "char-ngrams"))
class CharNgramEncoder(NameEncoder):
    """TF-IDF over character n-grams (offline, no weights), with a dense projection.

    Each text is lower-cased (optionally transliterated to Latin script first)
    and cut into character n-grams inside word boundaries (scikit-learn's
    ``char_wb``).  With term frequency ``tf`` and document frequency ``df``
    over the ``N`` texts of *both* KGs,

        w(g, x) = (1 + log tf(g, x)) * (log((1 + N) / (1 + df(g))) + 1)

    and every row is L2-normalised, so a dot product is the cosine similarity
    of the two n-gram profiles.  That exact sparse matrix is kept in
    ``extras["tfidf"]`` (CSR).  The main matrix is a dense ``(n, dim)`` float32
    projection, L2-normalised again:

    - ``projection="random"``: a seeded sparse random projection (Achlioptas
      2003; Li et al. 2006), which preserves dot products in expectation
      (error ~ 1/sqrt(dim));
    - ``projection="svd"``: truncated SVD (latent semantic analysis), slower
      but denser in information;
    - ``dim=None``: the sparse TF-IDF itself is the main matrix.

    Args:
        ngram_range: smallest and largest n-gram length.
        dim: size of the dense projection, or ``None`` for sparse output.
        projection: ``"random"`` or ``"svd"``.
        transliterate: map non-Latin scripts to Latin first (:func:`to_latin`).
        min_df: drop n-grams that occur in fewer texts.
        seed: seed of the projection.
    """

    def __init__(self, ngram_range: tuple[int, int] = (1, 3), dim: int | None = 300, projection: str = "random",
                 transliterate: bool = False, min_df: int = 1, seed: int = 0, progress: bool = True):
        lo, hi = (int(v) for v in ngram_range)
        if not 1 <= lo <= hi:
            raise MmeaInputError(f"char n-gram range must satisfy 1 <= min <= max, got {ngram_range}")
        if projection not in ("random", "svd"):
            raise MmeaInputError(f"unknown char n-gram projection {projection!r}; valid choices: random, svd")
        if dim is not None and dim < 1:
            raise MmeaInputError(f"char n-gram dim must be positive or None, got {dim}")
        self.ngram_range = (lo, hi)
        self.dim = dim
        self.projection = projection
        self.transliterate = transliterate
        self.min_df = min_df
        self.seed = seed
        self.progress = progress

    def config(self) -> dict:
        return {"model": "tfidf-char-wb", "ngram_range": list(self.ngram_range), "projection_dim": self.dim,
                "projection": self.projection if self.dim else None, "transliterate": self.transliterate,
                "transliterator": ("unidecode" if _unidecode() else "built-in") if self.transliterate else None,
                "min_df": self.min_df, "seed": self.seed}

    def tfidf(self, texts: Sequence[str]):
        """Exact L2-normalised TF-IDF ``(n, F)`` CSR float32 of ``texts``, fitted on them."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        docs = [to_latin(t) for t in texts] if self.transliterate else list(texts)
        if not any(docs):
            import scipy.sparse as sp

            return sp.csr_matrix((len(docs), 1), dtype=np.float32)
        vec = TfidfVectorizer(analyzer="char_wb", ngram_range=self.ngram_range, lowercase=True,
                              sublinear_tf=True, norm="l2", min_df=self.min_df, dtype=np.float32)
        return vec.fit_transform(docs).tocsr()  # (n, F)

    def project(self, tfidf) -> np.ndarray:
        """Dense ``(n, dim)`` float32 projection of a TF-IDF matrix, rows L2-normalised."""
        n, f = tfidf.shape
        if self.projection == "svd":
            from sklearn.decomposition import TruncatedSVD

            k = min(self.dim, max(1, f - 1))
            dense = TruncatedSVD(n_components=k, random_state=self.seed).fit_transform(tfidf)
            if k < self.dim:
                dense = np.pad(dense, ((0, 0), (0, self.dim - k)))
        else:
            dense = tfidf @ _sparse_random_matrix(f, self.dim, self.seed)  # (n, dim)
            dense = dense.toarray() if hasattr(dense, "toarray") else np.asarray(dense)
        return _l2_normalize_rows(np.ascontiguousarray(dense, dtype=np.float32))

    def _encode(self, texts, mask):
        tfidf = self.tfidf(texts)
        info = {"vocabulary": int(tfidf.shape[1]), "nnz": int(tfidf.nnz)}
        if self.dim is None:
            return tfidf, info, {}
        return self.project(tfidf), info, {"tfidf": tfidf}


def _sparse_random_matrix(n_features: int, dim: int, seed: int):
    """Seeded very sparse random projection ``(F, dim)`` (Li, Hastie & Church 2006).

    Entries are ``+-sqrt(s / dim)`` with probability ``1 / (2 s)`` each and 0
    otherwise, ``s = sqrt(F)``, so ``E[(xR)(yR)] = x . y``.
    """
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    s = max(1.0, float(np.sqrt(n_features)))
    density = 1.0 / s
    nnz = rng.binomial(n_features * dim, density)
    flat = rng.choice(n_features * dim, size=nnz, replace=False)
    rows, cols = np.divmod(flat, dim)
    vals = np.where(rng.random(nnz) < 0.5, -1.0, 1.0).astype(np.float32) * np.float32(np.sqrt(s / dim))
    return sp.csr_matrix((vals, (rows, cols)), shape=(n_features, dim), dtype=np.float32)


# -- sentence-transformers ---------------------------------------------------

def sentence_transformer_cache_dirs(cache_folder: str | Path | None = None) -> list[Path]:
    """Where a sentence-transformers model is looked for, in order.

    ``cache_folder`` if given, ``$SENTENCE_TRANSFORMERS_HOME``, then the
    Hugging Face hub cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
    ``~/.cache/huggingface/hub``).
    """
    dirs: list[Path] = []
    if cache_folder:
        dirs.append(Path(cache_folder).expanduser())
    if os.environ.get("SENTENCE_TRANSFORMERS_HOME"):
        dirs.append(Path(os.environ["SENTENCE_TRANSFORMERS_HOME"]).expanduser())
    if os.environ.get("HF_HUB_CACHE"):
        dirs.append(Path(os.environ["HF_HUB_CACHE"]).expanduser())
    else:
        hf_home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"),
                                                            "huggingface")
        dirs.append(Path(hf_home).expanduser() / "hub")
    seen, out = set(), []
    for d in dirs:
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def _has_weights(folder: Path) -> bool:
    if not folder.is_dir():
        return False
    if not ((folder / "modules.json").is_file() or (folder / "config.json").is_file()):
        return False
    pats = ("*.safetensors", "*.bin", "*.onnx", "*.pt", "*.pth")
    return any(next(folder.rglob(p), None) is not None for p in pats)


def _repo_candidates(model: str) -> list[str]:
    return [model] if "/" in model else [model, f"sentence-transformers/{model}"]


def find_sentence_transformer(model: str, cache_folder: str | Path | None = None) -> Path | None:
    """Local directory holding ``model`` (a path, or a hub name in a cache), or ``None``.

    Never touches the network: hub names are resolved with
    ``local_files_only=True`` in every directory of
    :func:`sentence_transformer_cache_dirs`; the old sentence-transformers
    cache layout (``<cache>/<org>_<name>``) is checked too.
    """
    p = Path(model).expanduser()
    if p.is_dir():
        return p if _has_weights(p) else None
    if model.startswith((".", "/", "~")) or os.sep in model and model.count("/") > 1:
        return None  # looks like a path that does not exist
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - comes with sentence-transformers
        snapshot_download = None
    for cache in sentence_transformer_cache_dirs(cache_folder):
        for repo in _repo_candidates(model):
            legacy = cache / repo.replace("/", "_")
            if _has_weights(legacy):
                return legacy
            if snapshot_download is None or not cache.is_dir():
                continue
            try:
                path = Path(snapshot_download(repo, cache_dir=str(cache), local_files_only=True))
            except Exception:  # LocalEntryNotFoundError, bad repo id, ...
                continue
            if _has_weights(path):
                return path
    return None


def _weights_not_found(model: str, cache_folder) -> WeightsNotFoundError:
    dirs = ", ".join(str(d) for d in sentence_transformer_cache_dirs(cache_folder))
    repos = " or ".join(_repo_candidates(model))
    return WeightsNotFoundError(
        f"sentence-transformers model {model!r} is not available offline: it is not a local model directory "
        f"and no cached copy of {repos} is in {dirs}",
        hint=("on a machine with internet run `python -c \"from sentence_transformers import "
              f"SentenceTransformer; SentenceTransformer('{model}').save('DIR')\"`, copy DIR here and pass "
              "`--name-model DIR`; or point HF_HOME / SENTENCE_TRANSFORMERS_HOME at a cache that holds it; "
              "or use `--name-encoder char-ngram` (offline) or `--name-encoder auto` (falls back to char-ngram "
              "with a warning)"))


def _resolve_device(device: str | None) -> str:
    if device in (None, "", "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@lru_cache(maxsize=2)
def _load_sentence_transformer(path: str, device: str):
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise MmeaInputError(f"the sentence-transformers package is not importable ({e})",
                             hint="pip install sentence-transformers, or use --name-encoder char-ngram") from None
    try:
        return SentenceTransformer(path, device=device, local_files_only=True)
    except Exception as e:  # corrupt or incomplete folder
        raise MmeaError(f"could not load the sentence-transformers model in {path}: {type(e).__name__}: {e}",
                        hint="re-save the model with SentenceTransformer(...).save(DIR) on a connected machine") \
            from None


@ENCODERS.register(name="sentence-transformers", aliases=("st", "sbert", "transformer"))
class SentenceTransformerEncoder(NameEncoder):
    """Sentence-transformers model (default LaBSE, 768-d) from local files only.

    Texts are embedded in batches on ``device`` (``auto``: CUDA when
    available) with a progress bar; with ``normalize`` every row has unit L2
    norm so that dot product = cosine.  ``model`` is a hub name found in the
    local caches (:func:`find_sentence_transformer`) or a directory.
    """

    def __init__(self, model: str = DEFAULT_NAME_MODEL, batch_size: int = 64, device: str | None = "auto",
                 normalize: bool = True, cache_folder: str | None = None, progress: bool = True):
        if batch_size < 1:
            raise MmeaInputError(f"batch size must be positive, got {batch_size}")
        self.model = str(model)
        self.batch_size = batch_size
        self.device = device
        self.normalize = normalize
        self.cache_folder = cache_folder
        self.progress = progress

    def config(self) -> dict:
        return {"model": self.model, "normalize": self.normalize}

    def model_path(self) -> Path:
        """Local directory of the model, or :class:`WeightsNotFoundError`."""
        path = find_sentence_transformer(self.model, self.cache_folder)
        if path is None:
            raise _weights_not_found(self.model, self.cache_folder)
        return path

    def load(self):
        """The loaded ``SentenceTransformer`` (cached per path and device)."""
        return _load_sentence_transformer(str(self.model_path()), _resolve_device(self.device))

    def _encode(self, texts, mask):
        model = self.load()
        dim = int(model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension")
                  else model.get_sentence_embedding_dimension())
        out = np.zeros((len(texts), dim), dtype=np.float32)  # (n, d)
        idx = np.flatnonzero(mask)
        if len(idx):
            emb = model.encode([texts[i] for i in idx], batch_size=self.batch_size,
                               show_progress_bar=progress_enabled(self.progress), convert_to_numpy=True,
                               normalize_embeddings=self.normalize)  # (m, d)
            out[idx] = np.asarray(emb, dtype=np.float32)
        return out, {"model_path": str(self.model_path()), "device": str(model.device),
                     "batch_size": self.batch_size}, {}


@ENCODERS.register(name="auto")
class AutoNameEncoder(NameEncoder):
    """The sentence-transformers model when its weights are on disk, else char n-grams (warns).

    ``info["encoder"]`` names the encoder that actually ran and
    ``info["requested"]`` is ``"auto"``; ``info["fallback_reason"]`` says why
    the transformer was not used.
    """

    def __init__(self, model: str = DEFAULT_NAME_MODEL, batch_size: int = 64, device: str | None = "auto",
                 normalize: bool = True, cache_folder: str | None = None, progress: bool = True,
                 **char_ngram: Any):
        self.transformer = SentenceTransformerEncoder(model, batch_size, device, normalize, cache_folder, progress)
        self.char_ngram = CharNgramEncoder(progress=progress, **char_ngram)
        self.fallback_reason: str | None = None

    def resolve(self) -> NameEncoder:
        """The concrete encoder that :meth:`encode` will run."""
        import importlib.util

        reason = None
        if importlib.util.find_spec("sentence_transformers") is None:
            reason = "the sentence-transformers package is not installed"
        if reason is None and find_sentence_transformer(self.transformer.model, self.transformer.cache_folder) is None:
            reason = str(_weights_not_found(self.transformer.model, self.transformer.cache_folder))
        self.fallback_reason = reason
        if reason is None:
            return self.transformer
        msg = f"name encoder auto: using char-ngram because {reason}"
        log.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        return self.char_ngram

    def encode(self, texts: Sequence[str]) -> EncodedFeatures:
        enc = self.resolve()
        out = enc.encode(texts)
        out.info["requested"] = "auto"
        if self.fallback_reason:
            out.info["fallback_reason"] = self.fallback_reason
        return out


def resolve_name_encoder(name: str, **kwargs: Any) -> NameEncoder:
    """Build the name encoder ``name`` with ``kwargs``; ``auto`` is resolved to the concrete one.

    The returned encoder's ``registry_name`` is what will run (use it in cache
    keys); for ``auto`` the fallback reason is in ``.auto_fallback_reason``.
    """
    cls = ENCODERS.get(name)
    if cls is AutoNameEncoder:
        auto = AutoNameEncoder(**kwargs)
        enc = auto.resolve()
        enc.auto_fallback_reason = auto.fallback_reason
        return enc
    if cls is CharNgramEncoder:
        kwargs = {k: v for k, v in kwargs.items() if k in _CHAR_KWARGS}
    elif cls is SentenceTransformerEncoder:
        kwargs = {k: v for k, v in kwargs.items() if k in _ST_KWARGS}
    return cls(**kwargs)


_CHAR_KWARGS = ("ngram_range", "dim", "projection", "transliterate", "min_df", "seed", "progress")
_ST_KWARGS = ("model", "batch_size", "device", "normalize", "cache_folder", "progress")
