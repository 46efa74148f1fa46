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
from ..encoders.tfidf import tfidf_rows
from ..modalities import FeatureRequest
from ..seeds import random_projection
from .base import MODELS, AlignmentModel

log = logging.getLogger("mmea.models")


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

    @classmethod
    def feature_requests(cls, config) -> dict[str, FeatureRequest]:
        """Names (``char_dim``: the char n-gram projection size) and, when weighted, attribute bags."""
        req = {"names": FeatureRequest({"dim": config.char_dim})}
        if config.attribute_weight > 0:
            req["attributes"] = FeatureRequest()
        return req

    def learn(self, task, feats) -> None:
        c = self.config
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
