"""Where the expensive stages run: in this process (``engine.name = "local"``) or on Ray (``"ray"``).

Ray (Moritz et al., "Ray: A Distributed Framework for Emerging AI Applications", OSDI 2018) splits
work into stateless *tasks* and stateful *actors*; ``mmea`` uses both and writes no scheduler:

* :mod:`.ray_engine`: :class:`~.ray_engine.RaySession` starts an embedded local cluster
  (``ray.init()``) or joins one (``ray.init(address=...)``), shuts down only a cluster it started,
  and records the engine in ``metrics.json``.
* :mod:`.shards`: :class:`~.shards.IndexShard` (an actor: a contiguous slice of one side's unit
  embeddings, answering top-k cosine / CSLS queries and counting ranks) and :func:`~.shards.merge_topk`
  (the driver's merge of the shards' top-k).
* :mod:`.search`: :func:`~.search.ray_search_run`, the align pipeline's search stage over sharded
  indexes of both sides: the same alignment, ranks and radii as the in-process exact pass.
* :mod:`.partition`: joint METIS partitioning of both KGs around the seed links (``pymetis``) and
  the partitioned label propagation (one Ray task per partition pair).
* :mod:`.encode`: encoding in parallel batches (Ray tasks, or one actor per GPU).

Nothing here imports ``ray`` (or torch) at import time: ``import mmea`` stays fast, and a missing
``ray`` is a clear input error when ``--engine ray`` is asked for.
"""
