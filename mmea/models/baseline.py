"""Training-free baseline: entity names plus bags of attribute names, cosine similarity.

Each entity gets ``[sqrt(w_n) * n_e ; sqrt(w_a) * a_e]`` where ``n_e`` is its
L2-normalised name embedding (the configured name encoder: a transformer when
its weights are available, else character n-gram TF-IDF) and ``a_e`` the
L2-normalised TF-IDF of the attribute names it carries, in a vocabulary shared
by both KGs (attributes matched by their local name).  The inner product of
two such vectors is ``w_n cos(n, n') + w_a cos(a, a')``.  It uses no gold link
at all, so it also works on KGs without known links.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .base import MODELS, AlignmentModel

log = logging.getLogger("mmea.models")


def tfidf_rows(counts) -> "scipy.sparse.csr_matrix":  # noqa: F821
    """Row-normalised TF-IDF of a sparse count matrix ``(n, V)``: ``tf * (log((1+n)/(1+df)) + 1)``."""
    import scipy.sparse as sp

    x = sp.csr_matrix(counts, dtype=np.float64)
    n = x.shape[0]
    df = np.bincount(x.indices, minlength=x.shape[1])  # (V,)
    idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
    x = x @ sp.diags(idf)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(sp.diags(inv) @ x)


def random_projection(x, dim: int, seed: int) -> np.ndarray:
    """Dense ``(n, dim)`` float32 Gaussian random projection of sparse ``x``, rows L2-normalised."""
    rng = np.random.default_rng(seed)
    proj = rng.standard_normal((x.shape[1], dim)).astype(np.float32) / np.sqrt(dim)  # (V, dim)
    y = np.asarray(x @ proj, dtype=np.float32)  # (n, dim)
    norms = np.linalg.norm(y, axis=1, keepdims=True)
    np.divide(y, norms, out=y, where=norms > 0)
    return y


@MODELS.register
class BaselineModel(AlignmentModel):
    """Names + attribute-name bags, cosine; training-free, uses no gold link."""

    uses_gold_for_training = False

    @dataclass(frozen=True)
    class Config:
        name_weight: float = 1.0
        attribute_weight: float = 0.3
        attribute_dim: int = 128
        char_dim: int = 512

    def fit(self, task) -> None:
        from ..encoders.bags import attribute_names, bag_of_attributes, shared_vocabulary
        from ..encoders.names import resolve_name_encoder, task_texts

        f = self.ctx.features
        src_texts, tgt_texts = task_texts(task.source, task.target, f.name_source)
        enc = resolve_name_encoder(f.name_encoder, model=f.name_model, batch_size=f.batch_size,
                                   device=self.ctx.device, dim=self.config.char_dim, seed=self.ctx.seed,
                                   progress=self.ctx.progress)
        reason = getattr(enc, "auto_fallback_reason", None)
        if reason:
            self.ctx.note(f"name encoder: {reason}")
        names_s, names_t = enc.encode_pair(src_texts.texts, tgt_texts.texts)
        blocks_s = [np.sqrt(self.config.name_weight) * np.asarray(names_s.matrix, dtype=np.float32)]
        blocks_t = [np.sqrt(self.config.name_weight) * np.asarray(names_t.matrix, dtype=np.float32)]
        self.info["name_encoder"] = names_s.info
        self.info["name_source"] = {"source": src_texts.counts, "target": tgt_texts.counts}

        has_attrs = len(task.source.attr_triples) and len(task.target.attr_triples)
        if self.config.attribute_weight > 0 and has_attrs:
            import scipy.sparse as sp

            map_s, map_t, vocab = shared_vocabulary(attribute_names(task.source), attribute_names(task.target))
            bs = bag_of_attributes(task.source, map_s, len(vocab))
            bt = bag_of_attributes(task.target, map_t, len(vocab))
            both = tfidf_rows(sp.vstack([bs, bt]))
            proj = random_projection(both, self.config.attribute_dim, self.ctx.seed)
            w = np.sqrt(self.config.attribute_weight)
            blocks_s.append(w * proj[: bs.shape[0]])
            blocks_t.append(w * proj[bs.shape[0]:])
            self.info["attribute_vocabulary"] = len(vocab)
        self._src = np.concatenate(blocks_s, axis=1)
        self._tgt = np.concatenate(blocks_t, axis=1)
        self.info["modalities"] = ["names"] + (["attributes"] if len(blocks_s) > 1 else [])

    def embeddings(self):
        return self._src, self._tgt
