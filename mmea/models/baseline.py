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

from ..config import NonNegFloat, PositiveInt
from .base import MODELS, AlignmentModel, load_features

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
        name_weight: NonNegFloat = 1.0
        attribute_weight: NonNegFloat = 0.3
        attribute_dim: PositiveInt = 128
        char_dim: PositiveInt = 512

    def fit(self, task) -> None:
        c = self.config
        mods = ["names"] + (["attributes"] if c.attribute_weight > 0 else [])
        feats = load_features(self.ctx, task, mods, name_dim=c.char_dim)
        names = feats["names"]
        w = np.sqrt(c.name_weight)
        blocks_s = [w * np.asarray(names.source, dtype=np.float32)]  # (N, d_n)
        blocks_t = [w * np.asarray(names.target, dtype=np.float32)]  # (M, d_n)
        self.info["features"] = feats.summary()
        self.info["name_encoder"] = {k: names.info.get(k) for k in ("encoder", "requested", "model", "fallback_reason")}
        if "attributes" in feats and feats["attributes"].dim > 0:
            import scipy.sparse as sp

            a = feats["attributes"]
            both = tfidf_rows(sp.vstack([a.source, a.target]))
            proj = random_projection(both, c.attribute_dim, self.ctx.seed)  # (N + M, d_a)
            n = a.source.shape[0]
            blocks_s.append(np.sqrt(c.attribute_weight) * proj[:n])
            blocks_t.append(np.sqrt(c.attribute_weight) * proj[n:])
        self._src = np.concatenate(blocks_s, axis=1).astype(np.float32)
        self._tgt = np.concatenate(blocks_t, axis=1).astype(np.float32)
        self.info["modalities"] = ["names"] + (["attributes"] if len(blocks_s) > 1 else [])

    def embeddings(self):
        return self._src, self._tgt
