"""Search: top-k neighbours, CSLS, matching.

Embeddings -> :func:`knn` / :func:`csls_topk` (ranked candidates) ->
:data:`MATCHERS` (the final one-to-one alignment) -> :mod:`mmea.export`.
Nothing here imports torch, faiss or scipy until a function runs.

* :mod:`.knn`: :func:`l2_normalize`, :func:`knn`, the :data:`INDEXES` registry
  (``torch``, ``flat``, ``ivf``, ``hnsw``).
* :mod:`.csls`: :func:`csls_radius`, :func:`csls_topk` -> :class:`SearchResult`,
  :func:`rank_of_targets`, dense references for tests.
* :mod:`.matching`: :class:`Similarity`, :data:`MATCHERS` (``none``, ``greedy``,
  ``mutual``, ``hungarian``, ``sinkhorn``), :func:`match`, :func:`align` -> :class:`Alignment`.
* :mod:`.onepass`: :func:`~.onepass.search_once` / :func:`~.onepass.align_once`: a run's
  gold ranks, top-k, reverse best and validation top-2 from one blockwise product pass.
* :mod:`.benchmark`: ``python -m mmea.search.benchmark`` (performance figures).
"""

from .csls import SearchResult, csls_dense, csls_from_cos, csls_radius, csls_topk, rank_of_targets
from .knn import INDEXES, knn, l2_normalize
from .matching import MATCHERS, Alignment, Matching, Similarity, align, candidate_rows, match

__all__ = [
    "INDEXES",
    "MATCHERS",
    "Alignment",
    "Matching",
    "SearchResult",
    "Similarity",
    "align",
    "candidate_rows",
    "csls_dense",
    "csls_from_cos",
    "csls_radius",
    "csls_topk",
    "knn",
    "l2_normalize",
    "match",
    "rank_of_targets",
]
