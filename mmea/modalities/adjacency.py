"""The ``adjacency`` modality: the structure input of the graph models, each KG's relation-graph adjacency."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..errors import MmeaInputError
from .base import MODALITY_ENCODERS, ModalityEncoder

NORMALIZATIONS = ("row", "sym", "none")


@MODALITY_ENCODERS.register(name="adjacency", aliases=("graph",))
class AdjacencyModality(ModalityEncoder):
    """Structure input: each KG's undirected relation-graph adjacency, CSR ``(n, n)`` (``D^-1 A`` by default).

    Unlike the other modalities the two sides are not in one space: the source matrix is
    ``(N, N)`` and the target one ``(M, M)`` (``dim`` in the summary is the source's).  The
    mask marks the entities with at least one neighbour.  Propagation and SelfMEA average
    over neighbours with it (``P = D^-1 A``, no self loop).
    """

    position = 5

    @dataclass(frozen=True)
    class Options:
        """``normalization``: row (``D^-1 A``, the mean over neighbours) | sym (``D^-1/2 A D^-1/2``) | none;
        ``self_loops``: add ``I`` before normalising."""

        normalization: str = "row"
        self_loops: bool = False

        def __post_init__(self) -> None:
            if self.normalization not in NORMALIZATIONS:
                raise MmeaInputError(f"adjacency normalization must be one of {', '.join(NORMALIZATIONS)}, "
                                     f"got {self.normalization!r}")

    def job(self, task):
        o = self.options
        parts = {"encoder": "adjacency", "model": None,
                 "options": {"normalization": o.normalization, "self_loops": o.self_loops}}

        def compute():
            from ..encoders.structure import adjacency_matrix

            t0 = time.perf_counter()
            s, t = (adjacency_matrix(kg.triples, kg.num_entities, self_loops=o.self_loops,
                                     normalization=o.normalization) for kg in (task.source, task.target))
            smask, tmask = np.asarray(s.getnnz(axis=1) > 0), np.asarray(t.getnnz(axis=1) > 0)
            info = {"encoder": "adjacency", "model": None, "dim": int(s.shape[1]),
                    "normalization": o.normalization, "self_loops": o.self_loops,
                    "edges": {"source": int(s.nnz), "target": int(t.nnz)}, "time_s": round(time.perf_counter() - t0, 3)}
            return {"source": s, "target": t, "source_mask": smask, "target_mask": tmask}, info

        return parts, compute
