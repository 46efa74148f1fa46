"""Precomputed features of an alignment task, cached on disk.

:func:`compute_task_features` turns an :class:`~mmea.data.AlignmentTask` into
per-side feature matrices and presence masks for each requested modality
(``names``, ``images``, ``numeric``, ``relations``, ``attributes``).  Each
modality is cached separately by a :class:`FeatureStore` under a key that is
the SHA-1 of (task fingerprint, modality, the encoder that actually runs, its
model and weights, and every option that changes the output), so a re-run
loads from disk and changing any of those recomputes only that modality.

Cache layout (root: ``$MMEA_HOME/cache``, ``MMEA_HOME`` defaulting to
``~/.cache/mmea``)::

    <root>/features/<name>-<key[:20]>/
        dense.npz              dense arrays (numpy)
        <array>.sparse.npz     one scipy sparse matrix each
        meta.json              key, key parts, info, array shapes (written last)

What a modality gives (:class:`ModalityFeatures`):

- ``names``: ``(n, d)`` float32 name embeddings (``char-ngram``: the dense
  projection, and the exact TF-IDF in ``extras["source_tfidf"]`` /
  ``extras["target_tfidf"]``);
- ``images``: ``(n, d)`` float32 image features (extracted or imported;
  ``d = 0`` when neither KG has any image);
- ``numeric``: CSR ``(n, A * k)`` fixed-RBF numeric profile
  (:func:`~mmea.encoders.numeric.numeric_profile`), and the normalised
  triples in ``extras`` (``source_entity``, ``source_attribute``,
  ``source_value``, ``source_raw``, same for target) for
  :class:`~mmea.encoders.numeric_nn.NumericRbfEncoder`;
- ``relations``: CSR ``(n, 2R)`` bag of relations over a shared vocabulary;
- ``attributes``: CSR ``(n, A)`` bag of attributes over a shared vocabulary.

Every mask marks the entities that have the modality; their other rows are zero.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .data.graph import AlignmentTask
from .encoders.names import DEFAULT_NAME_MODEL
from .errors import MmeaInputError

__all__ = [
    "MODALITIES",
    "FEATURE_FORMAT_VERSION",
    "default_cache_root",
    "FeatureOptions",
    "CacheEntry",
    "FeatureStore",
    "ModalityFeatures",
    "TaskFeatures",
    "compute_task_features",
    "parse_modalities",
]

log = logging.getLogger("mmea.features")

MODALITIES = ("names", "images", "numeric", "relations", "attributes")
_ALIASES = {"name": "names", "image": "images", "visual": "images", "numbers": "numeric", "numerical": "numeric",
            "relation": "relations", "rel": "relations", "attribute": "attributes", "attr": "attributes"}
#: bump when the stored layout or a computation changes so old caches are not reused
FEATURE_FORMAT_VERSION = 1


def default_cache_root() -> Path:
    """``$MMEA_HOME/cache`` (``MMEA_HOME`` defaults to ``~/.cache/mmea``)."""
    from .home import mmea_home

    return mmea_home() / "cache"


def parse_modalities(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"names,images"`` or a sequence -> canonical modality names (order kept, duplicates dropped)."""
    if spec is None:
        return MODALITIES
    items = [s for s in (spec.split(",") if isinstance(spec, str) else spec)]
    out: list[str] = []
    for raw in items:
        m = raw.strip().lower()
        if not m:
            continue
        if m == "all":
            return MODALITIES
        m = _ALIASES.get(m, m)
        if m not in MODALITIES:
            raise MmeaInputError(f"unknown modality {raw.strip()!r}; valid choices: {', '.join(MODALITIES)}, all")
        if m not in out:
            out.append(m)
    if not out:
        raise MmeaInputError(f"no modality given; valid choices: {', '.join(MODALITIES)}, all")
    return tuple(out)


@dataclass(frozen=True)
class FeatureOptions:
    """Options of every feature encoder (CLI flags in brackets).

    Attributes:
        name_encoder: ``auto`` (default: the transformer when its weights are on
            disk, else ``char-ngram`` with a warning recorded in the run's notes),
            ``sentence-transformers`` (errors offline without weights) or
            ``char-ngram`` (offline) [--name-encoder].
        name_model: sentence-transformers hub name or local directory [--name-model].
        name_source: ``uri`` | ``name`` | ``translated`` | ``auto`` [--name-source].
        name_batch_size: texts per transformer batch.
        name_dim: char n-gram dense projection size (``None``: sparse TF-IDF only).
        name_ngram_range: char n-gram lengths.
        name_projection: ``random`` | ``svd`` (char n-gram projection).
        transliterate: transliterate names to Latin script (char n-gram).
        image_encoder: ``resnet152`` | ``vgg16`` [--image-encoder].
        image_weights: weights file [--image-weights].
        allow_random_image_weights: random-weight features when no weights exist
            (labelled "random weights (NOT pretrained)").
        image_features: precomputed feature files (pickle / npy / npz / h5); each
            side takes the vectors whose keys match its ids or URIs [--image-features].
        image_ids: id list for ``.npy`` feature files [--image-ids].
        image_root: folder that relative image paths are resolved against.
        image_batch_size: images per forward pass.
        numeric_normalization: ``robust`` | ``zscore`` | ``minmax``.
        numeric_centres: RBF centres of the fixed numeric profile.
        share_vocabulary: merge relations / attributes of the two KGs that have the same name.
        device: ``auto`` | ``cpu`` | ``cuda`` ... (not part of the cache key).
        progress: progress bars on a terminal (not part of the cache key).
        seed: seed of random projections / random weights.
    """

    name_encoder: str = "auto"
    name_model: str = DEFAULT_NAME_MODEL
    name_source: str = "auto"
    name_batch_size: int = 64
    name_dim: int | None = 300
    name_ngram_range: tuple[int, int] = (1, 3)
    name_projection: str = "random"
    transliterate: bool = False
    image_encoder: str = "resnet152"
    image_weights: str | None = None
    allow_random_image_weights: bool = False
    image_features: tuple[str, ...] = ()
    image_ids: str | None = None
    image_root: str | None = None
    image_batch_size: int = 32
    numeric_normalization: str = "robust"
    numeric_centres: int = 8
    share_vocabulary: bool = True
    device: str = "auto"
    progress: bool = True
    seed: int = 0


# ---------------------------------------------------------------------------
# the on-disk store
# ---------------------------------------------------------------------------

def _json_default(o):
    """JSON for numpy scalars / arrays, paths and tuples (shared with the run files)."""
    from .runs import _JsonEncoder

    return _JsonEncoder().default(o)


def _is_sparse(a) -> bool:
    return hasattr(a, "tocsr") and hasattr(a, "nnz")


def array_nbytes(a) -> int:
    """Memory of a dense or scipy sparse array in bytes."""
    if _is_sparse(a):
        a = a.tocsr()
        return int(a.data.nbytes + a.indices.nbytes + a.indptr.nbytes)
    return int(np.asarray(a).nbytes)


@dataclass(frozen=True)
class CacheEntry:
    """What :meth:`FeatureStore.get_or_compute` returns.

    ``arrays``: name -> numpy or scipy sparse array; ``info``: JSON dict
    saved with them; ``hit``: loaded from disk; ``key``: the fingerprint.
    """

    arrays: dict
    info: dict
    hit: bool
    key: str
    path: Path | None


class FeatureStore:
    """Arrays cached on disk under the SHA-1 of their key parts.

    ``key_parts`` is any JSON-serialisable dict, e.g. ``{"dataset":
    task.fingerprint(), "modality": "names", "encoder": "char-ngram",
    "model": ..., "options": {...}}``; a change in any part is a new key
    (the old entry stays until :meth:`clear`).  ``enabled=False`` computes
    every time and writes nothing.
    """

    def __init__(self, cache_root: str | Path | None = None, enabled: bool = True):
        self.root = (Path(cache_root).expanduser() if cache_root else default_cache_root()) / "features"
        self.enabled = enabled

    @staticmethod
    def fingerprint(key_parts: dict) -> str:
        """SHA-1 hex digest of the canonical JSON of ``key_parts`` (plus the format version)."""
        blob = json.dumps({"format": FEATURE_FORMAT_VERSION, **key_parts}, sort_keys=True, default=_json_default)
        return hashlib.sha1(blob.encode("utf-8")).hexdigest()

    def path_for(self, key: str, name: str = "features") -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return self.root / f"{safe}-{key[:20]}"

    def get_or_compute(self, key_parts: dict, compute: Callable[[], tuple[dict, dict]],
                       name: str = "features") -> CacheEntry:
        """Load the entry of ``key_parts`` or run ``compute() -> (arrays, info)`` and save it."""
        key = self.fingerprint(key_parts)
        path = self.path_for(key, name)
        if self.enabled:
            entry = self.load(key, name)
            if entry is not None:
                log.info("feature cache hit: %s (%s)", name, path)
                return entry
            log.info("feature cache miss: %s; computing", name)
        arrays, info = compute()
        if self.enabled:
            self.save(key, name, key_parts, arrays, info)
        return CacheEntry(arrays, info, False, key, path if self.enabled else None)

    def load(self, key: str, name: str = "features") -> CacheEntry | None:
        """The stored entry, or ``None`` when absent, for another key, or unreadable (warned)."""
        path = self.path_for(key, name)
        meta_file = path / "meta.json"
        if not meta_file.is_file():
            return None
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            if meta.get("key") != key:
                return None
            arrays: dict[str, Any] = {}
            if (path / "dense.npz").is_file():
                with np.load(path / "dense.npz", allow_pickle=False) as z:
                    arrays.update({k: z[k] for k in z.files})
            import scipy.sparse as sp

            for k, spec in meta["arrays"].items():
                if spec["kind"] == "sparse":
                    arrays[k] = sp.load_npz(path / f"{k}.sparse.npz").tocsr()
            missing = set(meta["arrays"]) - set(arrays)
            if missing:
                raise ValueError(f"missing arrays {sorted(missing)}")
        except Exception as e:  # a half-written or corrupt entry: recompute
            log.warning("feature cache entry %s is unreadable (%s: %s); recomputing", path, type(e).__name__, e)
            return None
        return CacheEntry(arrays, meta.get("info", {}), True, key, path)

    def save(self, key: str, name: str, key_parts: dict, arrays: dict, info: dict) -> Path:
        """Write an entry atomically (temporary folder renamed into place)."""
        path = self.path_for(key, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            import scipy.sparse as sp

            dense = {k: np.asarray(v) for k, v in arrays.items() if not _is_sparse(v)}
            specs = {}
            for k, v in arrays.items():
                if _is_sparse(v):
                    sp.save_npz(tmp / f"{k}.sparse.npz", v.tocsr(), compressed=False)
                    specs[k] = {"kind": "sparse", "shape": list(v.shape), "dtype": str(v.dtype), "nnz": int(v.nnz)}
                else:
                    specs[k] = {"kind": "dense", "shape": list(dense[k].shape), "dtype": str(dense[k].dtype)}
            if dense:
                np.savez(tmp / "dense.npz", **dense)
            meta = {"key": key, "name": name, "key_parts": key_parts, "info": info, "arrays": specs,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=_json_default), encoding="utf-8")
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)
            os.replace(tmp, path)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            log.warning("could not write feature cache %s (%s); continuing without it", path, e)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return path

    def clear(self) -> int:
        """Delete every cached entry; returns how many were removed."""
        if not self.root.is_dir():
            return 0
        n = 0
        for p in self.root.iterdir():
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                n += 1
        return n


# ---------------------------------------------------------------------------
# task features
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ModalityFeatures:
    """One modality of both KGs.

    Attributes:
        name: the modality.
        source: ``(n1, d)`` dense float32 or CSR.
        target: ``(n2, d)``.
        source_mask: bool ``(n1,)``; target_mask: bool ``(n2,)``.
        info: encoder, model, dim, time, counts, ``cached``.
        extras: further arrays (see the module docstring).
    """

    name: str
    source: Any
    target: Any
    source_mask: np.ndarray
    target_mask: np.ndarray
    info: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.source.shape[1])

    @property
    def is_sparse(self) -> bool:
        return _is_sparse(self.source)

    def coverage(self) -> dict:
        """Fraction of entities of each side that have the modality."""
        def frac(m):
            return round(float(m.mean()), 4) if len(m) else 0.0

        return {"source": frac(self.source_mask), "target": frac(self.target_mask)}

    def nbytes(self) -> int:
        return sum(array_nbytes(a) for a in (self.source, self.target, *self.extras.values()))

    def summary(self) -> dict:
        return {"dim": self.dim, "kind": "sparse" if self.is_sparse else "dense",
                "rows": [int(self.source.shape[0]), int(self.target.shape[0])],
                "with_modality": [int(self.source_mask.sum()), int(self.target_mask.sum())],
                "coverage": self.coverage(), "megabytes": round(self.nbytes() / 2 ** 20, 2),
                "encoder": self.info.get("encoder"), "model": self.info.get("model"),
                "time_s": self.info.get("time_s"), "cached": bool(self.info.get("cached"))}


@dataclass(frozen=True)
class TaskFeatures:
    """The features of a task, by modality, with a summary for ``mmea features`` and metrics.json."""

    task_name: str
    fingerprint: str
    modalities: dict
    time_s: float = 0.0

    def __getitem__(self, modality: str) -> ModalityFeatures:
        m = _ALIASES.get(modality, modality)
        if m not in self.modalities:
            raise KeyError(f"modality {modality!r} was not computed; have {', '.join(self.modalities)}")
        return self.modalities[m]

    def __contains__(self, modality: str) -> bool:
        return _ALIASES.get(modality, modality) in self.modalities

    def summary(self) -> dict:
        """Sizes, coverage per modality, encoders that ran and times (JSON-serialisable)."""
        return {"task": self.task_name, "fingerprint": self.fingerprint, "time_s": round(self.time_s, 3),
                "modalities": {k: v.summary() for k, v in self.modalities.items()}}

    def format_summary(self) -> str:
        """A plain-text table of :meth:`summary`."""
        head = f"{'modality':<11} {'encoder':<22} {'dim':>7} {'kind':<6} {'coverage src/tgt':>17} " \
               f"{'MB':>8} {'time s':>8}  cache"
        lines = [f"features of {self.task_name} (fingerprint {self.fingerprint})", head, "-" * len(head)]
        for k, m in self.modalities.items():
            s = m.summary()
            cov = f"{s['coverage']['source']:.1%} / {s['coverage']['target']:.1%}"
            t = s["time_s"] if s["time_s"] is not None else float("nan")
            lines.append(f"{k:<11} {str(s['encoder'])[:22]:<22} {s['dim']:>7} {s['kind']:<6} {cov:>17} "
                         f"{s['megabytes']:>8.2f} {t:>8.2f}  {'hit' if s['cached'] else 'computed'}")
        lines.append(f"total time {self.time_s:.2f} s")
        return "\n".join(lines)


def _file_signature(path: Path) -> str:
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


# -- one function per modality: (key parts, compute) --------------------------------

def _names_job(task: AlignmentTask, o: FeatureOptions):
    from .encoders.names import SentenceTransformerEncoder, resolve_name_encoder, task_texts

    enc = resolve_name_encoder(
        o.name_encoder, model=o.name_model, batch_size=o.name_batch_size, device=o.device,
        progress=o.progress, ngram_range=tuple(o.name_ngram_range), dim=o.name_dim,
        projection=o.name_projection, transliterate=o.transliterate, seed=o.seed)
    model_sig = None
    if isinstance(enc, SentenceTransformerEncoder):
        path = enc.model_path()  # raises the actionable error when absent
        model_sig = {"path": str(path), "files": _file_signature(path)}
    fallback = getattr(enc, "auto_fallback_reason", None)
    parts = {"encoder": enc.registry_name, "requested": o.name_encoder, "model": enc.config().get("model"),
             "model_files": model_sig, "options": {**enc.config(), "name_source": o.name_source}}

    def compute():
        src_t, tgt_t = task_texts(task.source, task.target, o.name_source)
        src, tgt = enc.encode_pair(src_t.texts, tgt_t.texts)
        info = dict(src.info)
        info.update({"requested": o.name_encoder, "name_source": o.name_source,
                     "text_origin": {"source": src_t.counts, "target": tgt_t.counts}})
        if fallback:
            info["fallback_reason"] = fallback
        arrays = {"source": src.matrix, "target": tgt.matrix, "source_mask": src.mask, "target_mask": tgt.mask}
        for k in src.extras:
            arrays[f"source_{k}"], arrays[f"target_{k}"] = src.extras[k], tgt.extras[k]
        return arrays, info

    return parts, compute


def _images_job(task: AlignmentTask, o: FeatureOptions):
    from .encoders import EncodedFeatures
    from .encoders.images import ImageFeatureExtractor, image_features_for_kg, load_precomputed_image_features

    if o.image_features:
        files = [Path(p).expanduser() for p in o.image_features]
        for f in files:
            if not f.is_file():
                raise MmeaInputError(f"image feature file {f} does not exist (--image-features)")
        parts = {"encoder": "precomputed", "model": [str(f) for f in files],
                 "options": {"files": [_file_signature(f) for f in files],
                             "ids": _file_signature(Path(o.image_ids)) if o.image_ids else None}}

        def load_side(kg):
            got: list[EncodedFeatures] = []
            for f in files:
                try:
                    got.append(load_precomputed_image_features(f, kg, o.image_ids))
                except MmeaInputError as e:
                    if "none of its" not in e.message:  # a file for the other KG only is fine
                        raise
            if not got:
                raise MmeaInputError(f"no image feature file has vectors for entities of {task.__class__.__name__} "
                                     f"side {kg.name}", hint="check that the keys are entity ids or URIs")
            dims = {g.dim for g in got}
            if len(dims) > 1:
                raise MmeaInputError(f"image feature files have different dimensions {sorted(dims)}")
            mat, mask = np.zeros_like(got[0].matrix), np.zeros(kg.num_entities, dtype=bool)
            for g in got:  # first file that has an entity wins
                new = g.mask & ~mask
                mat[new], mask[new] = g.matrix[new], True
            return EncodedFeatures(mat, mask, {"encoder": "precomputed", "model": [str(f) for f in files],
                                               "dim": int(mat.shape[1]), "images_encoded": int(mask.sum())})

        def compute_pre():
            t0 = time.perf_counter()
            s, t = load_side(task.source), load_side(task.target)
            info = {**s.info, "time_s": round(time.perf_counter() - t0, 3)}
            return {"source": s.matrix, "target": t.matrix, "source_mask": s.mask, "target_mask": t.mask}, info

        return parts, compute_pre

    ext = ImageFeatureExtractor(o.image_encoder, weights_path=o.image_weights,
                                allow_random_weights=o.allow_random_image_weights, batch_size=o.image_batch_size,
                                device=o.device, seed=o.seed, progress=o.progress)
    parts = {"encoder": ext.arch, "model": ext.arch, "options": ext.config(), "image_root": o.image_root}

    def compute():
        t0 = time.perf_counter()
        s = image_features_for_kg(task.source, ext, o.image_root)
        t = image_features_for_kg(task.target, ext, o.image_root)
        sm, tm = s.matrix, t.matrix
        if sm.shape[1] == 0 and tm.shape[1]:  # a KG without images: zero rows of the other's size
            sm = np.zeros((sm.shape[0], tm.shape[1]), dtype=np.float32)
        elif tm.shape[1] == 0 and sm.shape[1]:
            tm = np.zeros((tm.shape[0], sm.shape[1]), dtype=np.float32)
        if sm.shape[1] != tm.shape[1]:
            raise MmeaInputError(f"image features of the two KGs differ in size ({s.dim} vs {t.dim})",
                                 hint="use the same extractor or precomputed features of one model for both")
        if sm.shape[1] == 0:
            log.warning("images: no entity of %s or %s has an image or image features; the modality is empty "
                        "(import features with --image-features)", task.source.name, task.target.name)
        info = {**(s.info if s.info.get("encoder") != "none" else t.info),
                "source": s.info, "target": t.info, "time_s": round(time.perf_counter() - t0, 3)}
        return {"source": sm, "target": tm, "source_mask": s.mask, "target_mask": t.mask}, info

    return parts, compute


def _numeric_job(task: AlignmentTask, o: FeatureOptions):
    from .encoders.numeric import numeric_features, numeric_profile

    parts = {"encoder": "rbf", "model": None,
             "options": {"normalization": o.numeric_normalization, "centres": o.numeric_centres}}

    def compute():
        t0 = time.perf_counter()
        src, tgt, stats = numeric_features(task.source, task.target, method=o.numeric_normalization)
        a = len(stats.vocab)
        arrays = {"source": numeric_profile(src, a, o.numeric_centres),
                  "target": numeric_profile(tgt, a, o.numeric_centres),
                  "source_mask": src.mask, "target_mask": tgt.mask}
        for side, tr in (("source", src), ("target", tgt)):
            arrays.update({f"{side}_entity": tr.entity, f"{side}_attribute": tr.attribute,
                           f"{side}_value": tr.value, f"{side}_raw": tr.raw})
        info = {"encoder": "rbf", "model": None, "dim": a * o.numeric_centres, "num_attributes": a,
                "centres": o.numeric_centres, "normalization": stats.method,
                "log_scaled_attributes": int(stats.log.sum()), "vocab": stats.vocab,
                "triples": {"source": int(len(src.entity)), "target": int(len(tgt.entity))},
                "shared_attributes": int(np.sum((np.bincount(src.attribute, minlength=a) > 0)
                                                & (np.bincount(tgt.attribute, minlength=a) > 0))),
                "time_s": round(time.perf_counter() - t0, 3)}
        return arrays, info

    return parts, compute


def _bag_job(task: AlignmentTask, o: FeatureOptions, kind: str):
    from .encoders import bags

    names_fn, bag_fn = ((bags.relation_names, bags.bag_of_relations) if kind == "relations"
                        else (bags.attribute_names, bags.bag_of_attributes))
    parts = {"encoder": f"bag-of-{kind}", "model": None, "options": {"share_vocabulary": o.share_vocabulary}}

    def compute():
        t0 = time.perf_counter()
        na, nb = names_fn(task.source), names_fn(task.target)
        ma, mb, vocab = bags.shared_vocabulary(na, nb, by_name=o.share_vocabulary)
        s, t = bag_fn(task.source, ma, len(vocab)), bag_fn(task.target, mb, len(vocab))
        smask = np.diff(s.indptr) > 0
        tmask = np.diff(t.indptr) > 0
        info = {"encoder": f"bag-of-{kind}", "model": None, "dim": int(s.shape[1]),
                "vocabulary": {"source": len(na), "target": len(nb), "joint": len(vocab),
                               "shared": len(na) + len(nb) - len(vocab)},
                "time_s": round(time.perf_counter() - t0, 3)}
        return {"source": s, "target": t, "source_mask": smask, "target_mask": tmask}, info

    return parts, compute


def compute_task_features(task: AlignmentTask, modalities: Sequence[str] | str = MODALITIES,
                          options: FeatureOptions | None = None, store: FeatureStore | None = None
                          ) -> TaskFeatures:
    """Features of ``task`` for each modality, from ``store`` when cached.

    ``store=None`` computes without caching; pass ``FeatureStore()`` for the
    default cache under ``$MMEA_HOME/cache``.  Errors (missing weights,
    unreadable feature files) are :class:`~mmea.errors.MmeaError` with a hint.
    """
    o = options or FeatureOptions()
    store = store or FeatureStore(enabled=False)
    mods = parse_modalities(modalities)
    fp = task.fingerprint()
    out: dict[str, ModalityFeatures] = {}
    t_all = time.perf_counter()
    for m in mods:
        t0 = time.perf_counter()
        if m == "names":
            parts, compute = _names_job(task, o)
        elif m == "images":
            parts, compute = _images_job(task, o)
        elif m == "numeric":
            parts, compute = _numeric_job(task, o)
        else:
            parts, compute = _bag_job(task, o, m)
        key_parts = {"dataset": fp, "modality": m, **parts}
        entry = store.get_or_compute(key_parts, compute, name=f"{task.name}-{m}")
        arrays = dict(entry.arrays)
        info = dict(entry.info)
        info["cached"] = entry.hit
        info["cache_key"] = entry.key
        if entry.hit:
            info["load_s"] = round(time.perf_counter() - t0, 3)
        src, tgt = arrays.pop("source"), arrays.pop("target")
        smask = np.asarray(arrays.pop("source_mask"), dtype=bool)
        tmask = np.asarray(arrays.pop("target_mask"), dtype=bool)
        out[m] = ModalityFeatures(m, src, tgt, smask, tmask, info, arrays)
        cov = out[m].coverage()
        log.info("features %s: %s, dim %d, coverage %.1f%% / %.1f%%%s", m, info.get("encoder"), out[m].dim,
                 100 * cov["source"], 100 * cov["target"], " (cached)" if entry.hit else "")
    return TaskFeatures(task.name, fp, out, time.perf_counter() - t_all)


def options_dict(options: FeatureOptions) -> dict:
    """The options as a JSON-serialisable dict (for metrics.json)."""
    return json.loads(json.dumps(asdict(options), default=_json_default))


def feature_options_from_config(cfg, *, device: str = "auto", seed: int = 0, progress: bool = True,
                                **overrides) -> FeatureOptions:
    """Map a run's :class:`~mmea.config.FeatureConfig` onto :class:`FeatureOptions`."""
    kw = dict(name_encoder=cfg.name_encoder, name_model=cfg.name_model, name_source=cfg.name_source,
              name_batch_size=cfg.batch_size, image_encoder=cfg.image_encoder, image_weights=cfg.image_weights,
              allow_random_image_weights=cfg.random_image_weights,
              image_features=tuple(x for x in (cfg.image_features or "").split(",") if x),
              device=device, progress=progress, seed=seed)
    kw.update(overrides)
    return FeatureOptions(**kw)
