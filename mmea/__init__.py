"""mmea: multi-modal entity alignment.

Data flows one way: files -> :class:`~mmea.data.KnowledgeGraph` /
:class:`~mmea.data.AlignmentTask` -> features -> model -> embeddings ->
search -> alignment -> CSV / metrics.  Heavy dependencies (torch, faiss,
sentence-transformers) are imported inside the functions that need them so
that ``import mmea`` and ``mmea --help`` stay instant.
"""

__version__ = "0.1.0"
