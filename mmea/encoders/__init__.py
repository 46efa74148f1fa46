"""Feature encoders: one module per modality.

- :mod:`~mmea.encoders.names` — entity texts and the name encoders of the
  :data:`ENCODERS` registry (``char-ngram``, ``sentence-transformers``, ``auto``).
- :mod:`~mmea.encoders.images` — torchvision ResNet-152 / VGG16 feature
  extractors (:data:`IMAGE_ENCODERS`) and import of precomputed image features.
- :mod:`~mmea.encoders.numeric` — RBF features of numeric attributes.
- :mod:`~mmea.encoders.bags` — bag-of-relations / bag-of-attributes vectors and
  a sparse linear layer.
- :mod:`~mmea.encoders.structure` — GCN / GAT graph encoders (:data:`GRAPH_ENCODERS`)
  and training-free propagation.

Every encoder returns an :class:`EncodedFeatures`: a ``(n, d)`` matrix (dense
float32 or scipy CSR), a boolean presence mask ``(n,)`` (rows whose mask is
False are all zero, never random noise) and an ``info`` dict saying what ran
(encoder, model, dim, seconds, counts).  Heavy libraries (torch, torchvision,
sentence-transformers, scikit-learn) are imported inside the functions that
need them, so importing this package is instant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import MmeaInputError
from ..progress import progress_enabled  # re-exported: the encoders' bars follow the shared rule
from ..registry import Registry

__all__ = [
    "ENCODERS",
    "IMAGE_ENCODERS",
    "GRAPH_ENCODERS",
    "EncodedFeatures",
    "WeightsNotFoundError",
    "progress_enabled",
]


class WeightsNotFoundError(MmeaInputError):
    """Pretrained weights are not on this machine (and nothing may be downloaded).

    The message names what was looked for and where; the hint says how to
    provide it (download on a connected machine, pass a local path).
    """


@dataclass(frozen=True)
class EncodedFeatures:
    """Per-entity features of one modality.

    Attributes:
        matrix: ``(n, d)`` float32 array or ``scipy.sparse.csr_matrix``; rows
            whose ``mask`` is False are zero.
        mask: bool ``(n,)``: the entity has this modality.
        info: what produced the matrix: ``encoder`` (the one that actually
            ran), ``model``, ``dim``, ``time_s`` and encoder-specific counts
            (JSON-serialisable).
        extras: further per-entity arrays with ``n`` rows, e.g. the exact
            sparse TF-IDF (``"tfidf"``) behind a dense char n-gram projection.
    """

    matrix: Any
    mask: np.ndarray
    info: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)

    @property
    def num_rows(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def coverage(self) -> float:
        """Fraction of entities that have this modality."""
        return float(self.mask.mean()) if len(self.mask) else 0.0

    def rows(self, start: int, stop: int) -> "EncodedFeatures":
        """Rows ``start:stop`` (used to split a jointly encoded source+target batch)."""
        return EncodedFeatures(self.matrix[start:stop], self.mask[start:stop], dict(self.info),
                               {k: v[start:stop] for k, v in self.extras.items()})




#: Name encoders: ``encode(texts) -> EncodedFeatures`` (see :mod:`mmea.encoders.names`).
ENCODERS: Registry = Registry("encoder", suffix="Encoder")
#: Image backbones: ``resnet152``, ``vgg16`` (see :mod:`mmea.encoders.images`).
IMAGE_ENCODERS: Registry = Registry("image-encoder", suffix="Backbone")
#: Graph encoders over the relation graph: ``gcn``, ``gat`` (see :mod:`mmea.encoders.structure`).
GRAPH_ENCODERS: Registry = Registry("graph-encoder", suffix="Encoder")

# registration (these modules import nothing heavy at import time)
from . import bags, images, names, numeric, structure  # noqa: E402,F401
