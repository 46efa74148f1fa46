"""The ``numeric`` modality: fixed-RBF profiles of numeric attributes (:mod:`mmea.encoders.numeric`).

The whole modality lives in this class: its options, its cache key and its computation; no
other module names them (``mmea features --modality-option numeric.centres=16`` sets one, a
model's feature request another).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..config import PositiveInt
from ..errors import MmeaInputError
from .base import MODALITY_ENCODERS, ModalityEncoder

NORMALIZATIONS = ("robust", "zscore", "minmax")


@MODALITY_ENCODERS.register(name="numeric", aliases=("numbers", "numerical"))
class NumericModality(ModalityEncoder):
    """Numeric attributes: a CSR ``(n, A * centres)`` RBF profile over a shared attribute vocabulary.

    The extras keep the normalised triples (``source_entity``, ``source_attribute``,
    ``source_value``, ``source_raw``, same for target) for the learned RBF encoder of the
    Gaussian model (:class:`~mmea.encoders.numeric_nn.NumericRbfEncoder`).
    """

    position = 2

    @dataclass(frozen=True)
    class Options:
        """``normalization``: robust | zscore | minmax (per attribute, fitted on both KGs);
        ``centres``: RBF centres per attribute of the fixed profile."""

        normalization: str = "robust"
        centres: PositiveInt = 8

        def __post_init__(self) -> None:
            if self.normalization not in NORMALIZATIONS:
                raise MmeaInputError(f"numeric normalization must be one of {', '.join(NORMALIZATIONS)}, "
                                     f"got {self.normalization!r}")
            if int(self.centres) < 1:
                raise MmeaInputError(f"numeric centres must be >= 1, got {self.centres}")

    def job(self, task):
        o = self.options
        parts = {"encoder": "rbf", "model": None, "options": {"normalization": o.normalization, "centres": o.centres}}
        return parts, lambda: numeric_arrays(task, o.normalization, o.centres)


def numeric_arrays(task, normalization: str, centres: int) -> tuple[dict, dict]:
    """``(arrays, info)`` of the numeric modality of ``task`` (see :class:`NumericModality`)."""
    from ..encoders.numeric import numeric_features, numeric_profile

    t0 = time.perf_counter()
    src, tgt, stats = numeric_features(task.source, task.target, method=normalization)
    a = len(stats.vocab)
    arrays = {"source": numeric_profile(src, a, centres), "target": numeric_profile(tgt, a, centres),
              "source_mask": src.mask, "target_mask": tgt.mask}
    for side, tr in (("source", src), ("target", tgt)):
        arrays.update({f"{side}_entity": tr.entity, f"{side}_attribute": tr.attribute,
                       f"{side}_value": tr.value, f"{side}_raw": tr.raw})
    info = {"encoder": "rbf", "model": None, "dim": a * centres, "num_attributes": a,
            "centres": centres, "normalization": stats.method,
            "log_scaled_attributes": int(stats.log.sum()), "vocab": stats.vocab,
            "triples": {"source": int(len(src.entity)), "target": int(len(tgt.entity))},
            "shared_attributes": int(np.sum((np.bincount(src.attribute, minlength=a) > 0)
                                            & (np.bincount(tgt.attribute, minlength=a) > 0))),
            "time_s": round(time.perf_counter() - t0, 3)}
    return arrays, info
