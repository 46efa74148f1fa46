"""Precomputed features of an alignment task, cached on disk.

:func:`compute_task_features` turns an :class:`~mmea.data.AlignmentTask` into
per-side feature matrices and presence masks for each requested modality
(``names``, ``images``, ``numeric``, ``relations``, ``attributes``, ``adjacency``).  Each
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

Each modality is one registered class of :mod:`mmea.modalities` (``MODALITY_ENCODERS``),
which owns its options, its cache key and its computation; this module runs them through
the store.  What a modality gives (:class:`ModalityFeatures`):

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
- ``attributes``: CSR ``(n, A)`` bag of attributes over a shared vocabulary;
- ``adjacency``: each KG's relation-graph adjacency (CSR ``(n1, n1)`` and ``(n2, n2)``,
  ``D^-1 A`` by default), the structure input of the graph models.

Every mask marks the entities that have the modality; their other rows are zero.

:func:`run_features` is the align pipeline's step between the task and the model: it computes
the features a model requests (``feature_requests(config)``) once, and the model is then
fitted on them (``model.fit(task, features)``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .data.graph import AlignmentTask
from .encoders.names import DEFAULT_NAME_MODEL
from .errors import MmeaInputError
from .feature_store import (FEATURE_FORMAT_VERSION, CacheEntry, FeatureStore, _is_sparse, _json_default,  # noqa: F401
                            array_nbytes, default_cache_root)
from .modalities import MODALITY_ENCODERS, FeatureRequest, as_request

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
    "run_features",
]

log = logging.getLogger("mmea.features")

#: every registered modality, in the order ``mmea features`` computes them
MODALITIES = tuple(MODALITY_ENCODERS.in_order())
#: bump when the stored layout or a computation changes so old caches are not reused


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
        m = MODALITY_ENCODERS.canonical(m) or m
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
        share_vocabulary: merge relations / attributes of the two KGs that have the same name.
        modality_options: per modality, options of its encoder's ``Options`` (``{"numeric":
            {"centres": 16}}``; ``mmea features --modality-option numeric.centres=16``).  A
            modality in the new form (e.g. ``numeric``) takes its options only from here and
            from a model's request; the flat fields above are the run-wide ``[features]``
            settings of names, images and the bags.
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
    share_vocabulary: bool = True
    modality_options: dict = field(default_factory=dict)
    device: str = "auto"
    progress: bool = True
    seed: int = 0


# ---------------------------------------------------------------------------
# the on-disk store
# ---------------------------------------------------------------------------



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
    unavailable: dict = field(default_factory=dict)
    """optional modalities whose encoder cannot run here: modality -> the error (the model decides)"""

    def __getitem__(self, modality: str) -> ModalityFeatures:
        m = MODALITY_ENCODERS.canonical(modality) or modality
        if m not in self.modalities:
            raise KeyError(f"modality {modality!r} was not computed; have {', '.join(self.modalities)}")
        return self.modalities[m]

    def __contains__(self, modality: str) -> bool:
        return (MODALITY_ENCODERS.canonical(modality) or modality) in self.modalities

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


def compute_task_features(task: AlignmentTask, modalities: Sequence[str] | str | dict = MODALITIES,
                          options: FeatureOptions | None = None, store: FeatureStore | None = None
                          ) -> TaskFeatures:
    """Features of ``task`` for each modality, from ``store`` when cached.

    ``modalities``: names (``"names,images"`` or a sequence), or a dict modality ->
    :class:`~mmea.modalities.FeatureRequest` (or an options dict), as a model's
    ``feature_requests`` gives.  Each modality's options are its encoder's defaults, then the
    run-wide ``options`` it reads, then ``options.modality_options[m]``, then the request's.
    ``store=None`` computes without caching; pass ``FeatureStore()`` for the
    default cache under ``$MMEA_HOME/cache``.  Errors (missing weights,
    unreadable feature files) are :class:`~mmea.errors.MmeaError` with a hint; an optional
    request whose encoder has no weights here is left out and its error kept in
    :attr:`TaskFeatures.unavailable`.
    """
    from .encoders import WeightsNotFoundError

    o = options or FeatureOptions()
    store = store or FeatureStore(enabled=False)
    if isinstance(modalities, dict):
        requests = {parse_modalities([m])[0]: as_request(r) for m, r in modalities.items()}
    else:
        requests = {m: FeatureRequest() for m in parse_modalities(modalities)}
    fp = task.fingerprint()
    out: dict[str, ModalityFeatures] = {}
    unavailable: dict[str, Exception] = {}
    t_all = time.perf_counter()
    for m, request in requests.items():
        try:
            out[m] = _compute_modality(task, fp, m, request, o, store)
        except WeightsNotFoundError as e:
            if not request.optional:
                raise
            unavailable[m] = e
    return TaskFeatures(task.name, fp, out, time.perf_counter() - t_all, unavailable)


def modality_encoder(modality: str, request: FeatureRequest | dict | None, options: FeatureOptions):
    """The encoder of ``modality`` with its resolved options (defaults < run-wide < per-modality < request)."""
    cls = MODALITY_ENCODERS.get(modality)
    request = as_request(request)
    merged = {**cls.legacy_options(options), **options.modality_options.get(cls.registry_name, {}),
              **request.options}
    return cls(cls.make_options(merged), device=options.device, progress=options.progress, seed=options.seed)


def _compute_modality(task: AlignmentTask, fp: str, m: str, request: FeatureRequest, o: FeatureOptions,
                      store: FeatureStore) -> ModalityFeatures:
    """One modality through the store: key = (task fingerprint, modality, the encoder's key parts)."""
    t0 = time.perf_counter()
    parts, compute = modality_encoder(m, request, o).job(task)
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
    feats = ModalityFeatures(m, src, tgt, smask, tmask, info, arrays)
    cov = feats.coverage()
    log.info("features %s: %s, dim %d, coverage %.1f%% / %.1f%%%s", m, info.get("encoder"), feats.dim,
             100 * cov["source"], 100 * cov["target"], " (cached)" if entry.hit else "")
    return feats


def run_features(task: AlignmentTask, requests: dict, ctx) -> TaskFeatures:
    """The features a model requests, for a run: computed once through the run's feature store.

    ``requests``: modality -> :class:`~mmea.modalities.FeatureRequest` (a model's
    ``feature_requests(config)``).  ``ctx``: the run's :class:`~mmea.models.base.RunContext`
    (its ``[features]`` settings, device, seed, progress bars and ``cache_root``; ``None``:
    no cache).  A fallback of the ``auto`` name encoder is recorded as a run note.
    """
    opts = feature_options_from_config(ctx.features, device=ctx.device, seed=ctx.seed, progress=ctx.progress)
    store = FeatureStore(ctx.cache_root, enabled=ctx.cache_root is not None)
    feats = compute_task_features(task, dict(requests), opts, store)
    if "names" in feats and feats["names"].info.get("fallback_reason"):
        ctx.note(f"name encoder: {feats['names'].info['fallback_reason']}")
    return feats


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
