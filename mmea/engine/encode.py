"""Encoding in parallel batches on Ray: one encoder actor per GPU where the cluster has GPUs, else one per CPU.

Encoders that load a model (sentence-transformers, an image backbone) load it once per actor (Ray's
actor split: state lives in the actor, the batches are the calls); the batches go round robin and the
rows come back in input order.  :func:`parallel_encode` takes any *batch function factory*: a picklable
callable that builds, inside the actor, a function ``batch -> (b, d)`` array.

* :class:`CharNgramBatches`: the char n-gram TF-IDF encoder (:class:`mmea.encoders.names.CharNgramEncoder`).
  Its vocabulary and IDF come from all texts, so the driver fits them once; the actors transform and
  project their batches (each row depends only on itself given both), so the result equals the in-process
  encoder's row for row.
* :class:`SentenceTransformerBatches`: a sentence-transformers model per actor (on the actor's GPU);
  rows agree with the in-process encoder up to float rounding (batches pad differently).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .ray_engine import cluster_gpus

__all__ = ["EncoderActor", "parallel_encode", "CharNgramBatches", "SentenceTransformerBatches", "batches"]


def batches(n: int, size: int) -> list[tuple[int, int]]:
    """``[(a, b), ...]`` consecutive batches of at most ``size`` rows covering ``0..n``."""
    size = max(1, int(size))
    return [(a, min(a + size, n)) for a in range(0, n, size)]


class EncoderActor:
    """Holds one batch function (built by ``factory()`` in the actor) and encodes batches with it."""

    def __init__(self, factory: Callable[[], Callable[[Sequence], np.ndarray]]):
        self.fn = factory()

    def encode(self, batch: Sequence) -> np.ndarray:
        return np.asarray(self.fn(batch), dtype=np.float32)


def parallel_encode(session, factory: Callable, items: Sequence, batch_size: int = 1024) -> np.ndarray:
    """``(n, d)`` float32: ``factory()``'s batch function over ``items`` in batches, on the Ray cluster of
    ``session`` (a connected :class:`~mmea.engine.ray_engine.RaySession`): one actor per GPU when
    ``ray.cluster_resources()`` has GPUs (each reserving one), else one per CPU (at most one per batch)."""
    ray = session.ray
    spans = batches(len(items), batch_size)
    if not spans:
        return np.zeros((0, 0), np.float32)
    gpus = cluster_gpus(ray)
    count = gpus if gpus else min(session.workers, len(spans))
    actor = ray.remote(EncoderActor).options(num_gpus=1 if gpus else 0, num_cpus=1 if not gpus else 0.5,
                                             scheduling_strategy="SPREAD")
    actors = [actor.remote(factory) for _ in range(count)]
    try:
        refs = [actors[i % count].encode.remote(list(items[a:b])) for i, (a, b) in enumerate(spans)]
        return np.concatenate(session.gather(refs, "encoding"), axis=0)
    finally:
        for a in actors:
            ray.kill(a)


class CharNgramBatches:
    """Batch function factory of the char n-gram encoder: the driver fits the vocabulary and IDF on all
    ``texts`` (``encoder.tfidf``'s vectorizer); an actor transforms a batch and projects it
    (``encoder.project``), which depends on the batch's rows only."""

    def __init__(self, encoder, texts: Sequence[str]):
        from sklearn.feature_extraction.text import TfidfVectorizer

        from ..encoders.names import _clean, to_latin

        self.encoder = encoder
        docs = [_clean(t) for t in texts]
        docs = [to_latin(t) for t in docs] if encoder.transliterate else docs
        self.vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=encoder.ngram_range, lowercase=True,
                                          sublinear_tf=True, norm="l2", min_df=encoder.min_df,
                                          dtype=np.float32).fit(docs)
        self.rank = self._first_seen(docs)

    def _first_seen(self, docs: list[str]) -> np.ndarray:
        """``(F,)`` the order in which fitting met each n-gram.  The in-process encoder's ``fit_transform``
        leaves each row's entries in that order (``transform`` sorts them by column), and the projection sums
        a row's products in its entries' order: the batches put their entries back in it, so every float
        rounds as in-process."""
        analyze, first = self.vectorizer.build_analyzer(), {}
        for d in docs:
            for g in analyze(d):
                first.setdefault(g, len(first))
        rank = np.empty(len(self.vectorizer.vocabulary_), np.int64)
        for g, j in self.vectorizer.vocabulary_.items():
            rank[j] = first[g]
        return rank

    def __call__(self) -> Callable[[Sequence[str]], np.ndarray]:
        from ..encoders.names import _clean, to_latin

        enc, vec, rank = self.encoder, self.vectorizer, self.rank

        def encode(batch):
            docs = [_clean(t) for t in batch]
            docs = [to_latin(t) for t in docs] if enc.transliterate else docs
            X = vec.transform(docs).tocsr()  # (b, F), each row's entries by column
            row = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
            o = np.lexsort((rank[X.indices], row))  # each row's entries in fitting order
            X.indices, X.data = X.indices[o], X.data[o]
            X.has_sorted_indices = False
            return enc.project(X)  # (b, dim)

        return encode


class SentenceTransformerBatches:
    """Batch function factory of a sentence-transformers model (``model``: a name or a local folder),
    loaded once per actor on its GPU (``cuda``) when it has one."""

    def __init__(self, model: str, batch_size: int = 64, normalize: bool = True):
        self.model, self.batch_size, self.normalize = model, int(batch_size), normalize

    def __call__(self) -> Callable[[Sequence[str]], np.ndarray]:
        from ..encoders.names import SentenceTransformerEncoder

        enc = SentenceTransformerEncoder(self.model, batch_size=self.batch_size, device="auto",
                                         normalize=self.normalize, progress=False)
        return lambda batch: enc.encode(list(batch)).matrix


def in_process(factory: Callable, items: Sequence, batch_size: int = 1024) -> np.ndarray:
    """The same batches encoded in this process (the reference :func:`parallel_encode` equals)."""
    fn: Any = factory()
    return np.concatenate([np.asarray(fn(list(items[a:b])), np.float32) for a, b in batches(len(items), batch_size)])
