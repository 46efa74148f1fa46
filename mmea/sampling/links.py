"""Negatives for alignment links ``(e, e')`` (uniform, in-batch, hard-nn): the link-level twin of the
triple samplers, for alignment models that mine hard negatives of their seed links."""

from __future__ import annotations

import numpy as np

from ..errors import MmeaInputError
from .samplers import nearest_neighbour_table


LINK_SAMPLERS = ("uniform", "in-batch", "hard-nn")


def sample_link_negatives(links: np.ndarray, num_entities_src: int, num_entities_tgt: int, num_negatives: int,
                          *, sampler: str = "uniform", side: str = "tgt", known_links: np.ndarray | None = None,
                          embeddings: np.ndarray | None = None, num_neighbors: int = 64,
                          neighbors: np.ndarray | None = None, max_resample: int = 10,
                          rng: np.random.Generator | int | None = None) -> np.ndarray:
    """Negative counterparts ``(B, K)`` for alignment links ``(e, e')``.

    ``side="tgt"``: entities of the target KG to pair with each ``e`` (negative
    links ``(e, n_j)``); ``side="src"``: source entities for each ``e'``.
    Rules (the same as the triple samplers):

    * ``uniform``: a uniformly random entity of that KG;
    * ``in-batch``: the counterpart of another link of the batch;
    * ``hard-nn``: one of the ``num_neighbors`` nearest neighbours (cosine) of
      the replaced entity in its own KG (BootEA); give ``embeddings`` of that
      KG (``(N, d)``) or a precomputed ``neighbors`` table ``(N, n)``.

    Never returns a known link (``known_links``, default the links
    themselves): rejected draws are redrawn up to ``max_resample`` times,
    then replaced by a uniform draw among the allowed entities.
    """
    links = np.asarray(links, dtype=np.int64).reshape(-1, 2)
    if side not in ("src", "tgt"):
        raise MmeaInputError(f"side must be 'src' or 'tgt', got {side!r}")
    if sampler not in LINK_SAMPLERS:
        raise MmeaInputError(f"unknown link sampler {sampler!r}; valid choices: {', '.join(LINK_SAMPLERS)}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    col = 1 if side == "tgt" else 0  # the replaced column
    n_pool = num_entities_tgt if side == "tgt" else num_entities_src
    if n_pool < 2:
        raise MmeaInputError("link negatives need at least 2 entities on the replaced side")
    known = links if known_links is None else np.asarray(known_links, dtype=np.int64).reshape(-1, 2)
    width = max(num_entities_tgt, 1)
    known_keys = np.unique(known[:, 0] * width + known[:, 1])
    if sampler == "hard-nn" and neighbors is None:
        if embeddings is None:
            raise MmeaInputError("hard-nn link negatives need the replaced KG's embeddings (or a neighbors table)")
        neighbors = nearest_neighbour_table(embeddings, num_neighbors)

    def draw(rows: np.ndarray) -> np.ndarray:
        shape = (len(rows), num_negatives)
        if sampler == "uniform":
            return rng.integers(0, n_pool, size=shape)
        if sampler == "in-batch":
            n = len(links)
            if n < 2:
                return rng.integers(0, n_pool, size=shape)
            other = (rows[:, None] + rng.integers(1, n, size=shape)) % n
            return links[other, col]
        return neighbors[links[rows, col][:, None], rng.integers(0, neighbors.shape[1], size=shape)]

    def is_known(rows: np.ndarray, cand: np.ndarray) -> np.ndarray:
        fixed = links[rows, 1 - col][:, None]
        key = fixed * width + cand if side == "tgt" else cand * width + fixed
        if not len(known_keys):
            return np.zeros(cand.shape, dtype=bool)
        pos = np.minimum(np.searchsorted(known_keys, key), len(known_keys) - 1)
        return known_keys[pos] == key

    all_rows = np.arange(len(links))
    out = draw(all_rows)
    bad = is_known(all_rows, out)
    for _ in range(max_resample):
        if not bad.any():
            break
        rows = np.flatnonzero(bad.any(1))
        out[rows] = np.where(bad[rows], draw(rows), out[rows])
        bad[rows] = is_known(rows, out[rows])
    for b, k in zip(*np.nonzero(bad)):
        allowed = np.ones(n_pool, dtype=bool)
        fixed = links[b, 1 - col]
        partners = known[known[:, 1 - col] == fixed, col]
        allowed[partners] = False
        choices = np.flatnonzero(allowed)
        if len(choices):
            out[b, k] = choices[rng.integers(len(choices))]
    return out
