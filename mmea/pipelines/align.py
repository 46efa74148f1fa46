"""The ``mmea align`` job: load -> fit -> embed -> search (+ match) -> evaluate -> calibrate -> export.

The output contract (stable for every model): ``RUN_DIR/alignment.csv``,
``RUN_DIR/metrics.json`` with ``dataset``, ``model``, ``split`` (train / valid /
test sizes), ``search_pass`` (the exact or listed search pass's counts: its list size, the rows and columns it
redid against everything), ``test`` (Hits@1/5/10, MR, MRR of the primary direction and
method), ``test_by_method``, ``timings`` (``load_s``, ``total_s`` and each
stage), ``calibration`` and ``notes``; ``RUN_DIR/config.toml``; ``RUN_DIR/run.log``;
``RUN_DIR/calibration.json`` and ``RUN_DIR/valid_scores.npz`` (see :mod:`mmea.calibration`);
``RUN_DIR/test_ranks.npy`` (:data:`TEST_RANKS_FILE`); ``RUN_DIR/checkpoint.pt`` for models
with a training loop (:mod:`mmea.checkpoint`), which ``mmea align --resume RUN_DIR``
(:func:`mmea.pipelines.align_config.resume_config`, then :func:`run_align` with ``resume``) continues from.

Stage timings (``metrics.json`` ``timings``): ``imports_s`` importing the libraries the later stages
need (torch, pandas: several seconds once per process, which would otherwise land in whichever
stage first needs them); ``load_s``, ``train_s``; ``search_s`` the
search (:func:`search_run`: one blockwise product pass gives the gold ranks of both
directions and methods, each query's top-k, the reverse best matches and the validation
sources' top 2, see :mod:`mmea.search.onepass`) and the matcher; ``evaluate_s`` the
metrics from those ranks (+ a model's own re-ranking, whose per-link margins read the pass's top 2:
:func:`pass_top2`); ``one_to_one_s`` the one-to-one
assignment of the test candidates (:func:`one_to_one_hits`, ``test.hits@1_one_to_one``, the second,
labelled H@1 next to the ranking's; with the exact pass its score blocks also rank the reciprocal keys,
:func:`shared_reciprocal`, the search pass having kept their column maxima); ``reciprocal_s`` the reciprocal
ranking where it needs passes of its own; ``calibrate_s`` the isotonic fit;
``export_s`` writing ``alignment.csv``.  With a FAISS index (``search.index`` ``flat``,
``ivf``, ``hnsw``) the search is FAISS's, and ``evaluate_s`` / ``calibrate_s`` include
their own ranking passes.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path

import numpy as np

from ..checkpoint import Checkpointer
from ..config import RunConfig, to_toml
from ..errors import MmeaInputError
from ..runs import RunDir, atomic_save_npy, default_run_dir, resolve_device, seed_everything

log = logging.getLogger("mmea.align")

#: ``(n,)`` int32: the 1-based rank of each test link's gold target (``task.test`` order) in the
#: ranking that ``metrics.json`` reports as ``test`` (``primary``, over ``candidates``).  Exact:
#: every gold target is a candidate.  :data:`RANK_NOT_RANKED` marks a link that was not ranked.
TEST_RANKS_FILE = "test_ranks.npy"
RANK_NOT_RANKED = -1


def dataset_label(cfg: RunConfig) -> str:
    d = cfg.data
    if d.pair:
        return Path(d.pair).name or str(d.pair)
    return f"{Path(d.src).name}-{Path(d.tgt).name}"


def query_rows(task) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Source rows to align, their candidate target rows, and gold target rows (or None).

    With test links: the test sources against the test targets (the benchmark
    protocol; ``candidates="all"`` widens the targets in :func:`run_align`).
    Without gold: every source entity not already linked by train/valid against
    every target entity not already linked.
    """
    if len(task.test):
        # unique candidates: a target linked twice (MMKG has a few one-to-many links) is one candidate
        return task.test[:, 0], np.unique(task.test[:, 1]), task.test[:, 1]
    seeds = np.concatenate([task.train, task.valid])
    src = np.setdiff1d(np.arange(task.source.num_entities), seeds[:, 0])
    tgt = np.setdiff1d(np.arange(task.target.num_entities), seeds[:, 1])
    return src, tgt, None


def search_run(task, src_emb, tgt_emb, rows: np.ndarray, cand: np.ndarray, search, device: str,
               progress: bool = False, keep: dict | None = None, channels: dict | None = None, lists=None,
               sparse=None) -> tuple:
    """The run's search: ``(alignment, ranks | None, validation scores | None)``; ``keep["pass"]``: the
    :class:`~mmea.search.onepass.OnePass` (its candidate lists feed :func:`one_to_one_metrics`), when given.

    With the exact torch engine (``search.index`` ``auto`` below
    :data:`~mmea.search.knn.APPROX_PAIRS` pairs, or ``torch``), one blockwise product pass
    (:func:`mmea.search.onepass.align_once`) gives the :class:`~mmea.search.matching.Alignment`, the gold
    ranks of the test links (``ranks[direction][method]``, over the candidate sets of
    :func:`mmea.evaluation.evaluate_embeddings`) and the validation sources' top 2 (as
    :func:`mmea.calibration.score_valid_sources` ranks them).  A FAISS index searches with
    :func:`mmea.search.matching.align`; the ranks and the validation scores are then ``None``, and
    :func:`evaluate_run` / :func:`calibrate_run` compute them.  ``channels``: the model's embedding
    blocks, which an approximate pass also indexes on their own (``search.channels = "auto"``); ``lists``: who
    computes that pass's lists (``--engine ray``: :class:`mmea.engine.search.RayLists`).  ``sparse``: the
    model's sparse similarity term (:meth:`~mmea.models.base.AlignmentModel.search_sparse`); the search is then
    list-based at every size (:func:`approx_search_run`): exact dense top-50 lists where exact search is
    affordable (torch), IVF / HNSW lists above, each joined by the exact sparse top-50 and re-scored with both
    terms.
    """
    from ..calibration import valid_queries, valid_scores_from_top
    from ..evaluation import evaluation_rows
    from ..search.csls import _resolve_engine
    from ..search.matching import align
    from ..search.onepass import align_once

    opts = dict(topk=max(search.topk, 2), method=search.method, csls_k=search.csls_k, matcher=search.match,
                index=search.index, device=device, candidates=search.candidates, progress=progress)
    engine = _resolve_engine(search.index, len(rows), len(cand), device)
    listed = engine in ("ivf", "hnsw")
    if sparse is not None or (listed and (search.candidates == "test" or not len(task.test))):
        index = engine if listed else "torch"  # exact dense lists: no channel can add to them
        return approx_search_run(task, src_emb, tgt_emb, rows, cand, search, index, device, progress, keep,
                                 channels if search.channels == "auto" and listed else None, lists, sparse)
    if engine != "torch":
        return align(src_emb, tgt_emb, rows, cand, **opts), None, None
    once: dict = {}
    if len(task.test):
        src_rows, tgt_rows, q_src, q_tgt = evaluation_rows(task.test, len(src_emb), len(tgt_emb), search.candidates)
        if np.array_equal(tgt_rows, cand) and np.array_equal(src_rows[q_src], rows):  # always, with test links
            once.update(gold=q_tgt, eval_src=src_rows)
    if len(task.valid):
        vsrc, extra = valid_queries(task.valid, cand)
        once.update(valid_src=vsrc, extra=extra)
    al, found = align_once(src_emb, tgt_emb, rows, cand, **opts, **once)
    if keep is not None:
        keep["pass"] = found
    scores = None
    if found.valid_ids is not None:
        scores = valid_scores_from_top(task.valid, vsrc, np.concatenate([cand, extra]), found.valid_ids,
                                       found.valid_scores, search.method)
    return al, found.ranks, scores


def approx_search_run(task, src_emb, tgt_emb, rows: np.ndarray, cand: np.ndarray, search, engine: str, device: str,
                      progress: bool = False, keep: dict | None = None, channels: dict | None = None,
                      lists=None, sparse=None) -> tuple:
    """:func:`search_run` with an approximate index (IVF / HNSW): :func:`mmea.search.approx.approx_search`'s two
    index searches give the alignment, the gold ranks from its lists (``-1``: not in the list) and the
    validation top 2; ``keep["pass"]`` its lists (the one-to-one graph).  A matcher searches again.
    ``lists``: :func:`~mmea.search.approx.approx_search`'s ``lists`` (Ray shards), default in-process;
    ``sparse``: its sparse term (a matcher other than ``none`` / ``reciprocal`` would rank without it: refused)."""
    from ..calibration import valid_queries, valid_scores_from_top
    from ..search.approx import approx_search
    from ..search.matching import MATCHERS, Alignment, Similarity, listed_reciprocal_matching

    if sparse is not None and search.match not in (None, "none", "reciprocal"):
        raise MmeaInputError(f"search.match = {search.match!r} ranks the dense embeddings only, without the model's "
                             f"sparse term ({sparse.name})",
                             hint="use search.match = none or reciprocal (the one-to-one Hits@1 is reported "
                                  "either way), or switch the term off (model.overlap_weight = 0)")
    once: dict = {}
    if len(task.test):
        once["gold"] = np.searchsorted(cand, task.test[:, 1])  # rows = test sources, cand = unique test targets
    if len(task.valid):
        vsrc, extra = valid_queries(task.valid, cand)
        once.update(valid_src=vsrc, extra=extra)
    found = approx_search(src_emb, tgt_emb, rows, cand, topk=max(search.topk, 2), method=search.method,
                          csls_k=search.csls_k, index=engine, device=device, progress=progress, channels=channels,
                          lists=lists, sparse=sparse, whole_rows=search.whole_rows != "off" or sparse is None,
                          **once, **search.index_options())
    matching = None
    if search.match == "reciprocal":  # from the pass's lists: two dense passes over n x m are out of reach here
        matching = listed_reciprocal_matching(found, np.unique(rows, return_inverse=True)[1], len(cand))
    elif search.match not in (None, "none"):
        sim = Similarity(np.asarray(src_emb)[rows], np.asarray(tgt_emb)[cand], method=search.method,
                         csls_k=search.csls_k, device=device, index=engine,
                         radius=(found.result.r_src, found.result.r_tgt), progress=progress)
        matching = MATCHERS.make(search.match).match(sim, result=found.result)
    if keep is not None:
        keep["pass"] = found
    scores = None
    if found.valid_ids is not None:
        scores = valid_scores_from_top(task.valid, vsrc, np.concatenate([cand, extra]), found.valid_ids,
                                       found.valid_scores, search.method)
    al = Alignment(rows, cand, found.result, found.result.reverse_best, matching, search.candidates)
    return al, found.ranks, scores


def _list_sources(stats: dict) -> str:
    """What proposed a listed pass's candidates, for ``ranks_from``: ``"ivf + names + anchor overlap (exact
    sparse)"``, with ``"; no whole-row index"`` when the channels alone proposed (``search.whole_rows = off``)."""
    chans = stats.get("channels", ["whole rows"])
    return " + ".join([stats["index"], *(c for c in chans if c != "whole rows")]) + (
        "" if "whole rows" in chans else "; no whole-row index")


def evaluate_run(run_dir: Path, task, model, src_emb, tgt_emb, ranks: dict | None, search,
                 progress: bool = False, found=None) -> dict:
    """The ``test`` / ``test_by_method`` part of ``metrics.json`` and :data:`TEST_RANKS_FILE`.

    ``ranks``: the gold ranks of :func:`search_run`'s pass; ``None`` (a FAISS search) ranks
    with :func:`mmea.evaluation.evaluate_embeddings`.  A model's own re-ranked rows
    (``rerank_metrics``, gaussian) are added to ``test_by_method``.
    """
    from ..evaluation import evaluate_embeddings, evaluation_rows, metrics_from_ranks

    primary = ("src->tgt", search.method)
    if found is not None and found.stats.get("listed") and ranks is not None:
        from ..search.approx import metrics_from_lists

        ev = metrics_from_lists(ranks, list_size=found.stats["list_size"],
                                index=_list_sources(found.stats),
                                candidates=search.candidates, csls_k=search.csls_k, primary=primary,
                                approximate=bool(found.stats.get("approximate")),
                                num_candidates={"src->tgt": int(len(found.r_tgt)), "tgt->src": int(len(found.r_src))})
    elif ranks is None:
        ev = evaluate_embeddings(src_emb, tgt_emb, task.test, candidates=search.candidates, csls_k=search.csls_k,
                                 primary=primary, return_ranks=True, progress=progress)
    else:
        src_rows, tgt_rows, _, _ = evaluation_rows(task.test, len(src_emb), len(tgt_emb), search.candidates)
        ev = metrics_from_ranks(ranks, candidates=search.candidates, csls_k=search.csls_k, primary=primary,
                                num_candidates={"src->tgt": int(len(tgt_rows)), "tgt->src": int(len(src_rows))},
                                return_ranks=True)
    write_test_ranks(run_dir, ev.pop("ranks"))
    rerank = getattr(model, "rerank_metrics", None)  # a model's own re-ranked rows (gaussian)
    if rerank is not None:
        ev["test_by_method"].update(rerank(task.test, candidates=search.candidates, csls_k=search.csls_k,
                                           search_top=pass_top2(found, search, len(task.test))))
    return ev


def pass_top2(found, search, num_links: int) -> tuple | None:
    """``(ids (n, 2) positions into the test targets, csls (n, 2))``: the exact search pass's CSLS top 2 of each
    test link's source (``task.test`` order, the pass's query rows), for a model's per-link margins
    (``gaussian-strong``'s ``link_confidence``) without a search of their own; None when the pass did not rank
    them so (a listed or FAISS search, ``search.candidates = "all"``, ``search.method = "cos"``)."""
    res = getattr(found, "result", None)
    if res is None or found.stats.get("listed") or search.candidates != "test" or search.method != "csls" \
            or res.ids.shape != (num_links, res.ids.shape[1]) or res.ids.shape[1] < 2:
        return None
    return res.ids[:, :2], res.csls[:, :2]


#: candidates per side of the one-to-one assignment's sparse graph (:func:`one_to_one_hits`)
ONE_TO_ONE_K = 50
def one_to_one_hits(src_emb, tgt_emb, links: np.ndarray, cand: np.ndarray, *, method: str = "csls",
                    csls_k: int = 10, device: str = "cpu", radius: tuple | None = None,
                    sparse_k: int = ONE_TO_ONE_K, solver: str = "auto", on_block=None) -> dict:
    """Hits@1 of a one-to-one assignment of the links' sources to ``cand``: ``test.hits@1_one_to_one``.

    The assignment maximises the total score (CSLS or cosine, the run's ``search.method``) subject to
    every source and every target being used at most once (Kuhn 1955; the published tables of
    LightEA and SEU report this "H@1 after assignment" next to the ranking one).  It is solved by
    :class:`~mmea.search.matching.HungarianMatcher` in its sparse form, exactly over the union of each
    source's and each target's top-``sparse_k`` candidates by that score
    (:func:`~mmea.search.matching.two_way_topk`, one blockwise pass), by ``scipy``'s
    ``min_weight_full_bipartite_matching`` (LAPJVsp), a dummy edge per
    source keeping a full matching feasible; no dense ``(n, m)`` matrix is ever built; above
    :data:`ONE_TO_ONE_EXACT_MAX` sources, or with ``solver = "sinkhorn"``, by :func:`solve_one_to_one`'s
    Sinkhorn + greedy decode over the same graph instead.  (The search
    pass's cosine lists make a worse graph: on the demo pair, label propagation, 0.8686 against 0.8843
    for this one and 0.8864 for the dense optimum, hub sources filling the targets' cosine lists.)

    ``links (n, 2)``: (source, gold target) ids; ``radius``: ``(r_src (p,), r_tgt (m,))`` CSLS radii of
    the unique sources and of ``cand`` (the search's, reused; else one more pass computes them);
    ``on_block``: fed the pass's score blocks (:func:`~mmea.search.matching.two_way_topk`; rows are positions
    into the unique sources).
    Returns ``{"hits@1", "solver", "pairs"}``: the share of links whose source is assigned its gold
    target (a source linked twice can hit once only).
    """
    from ..search.matching import ListedSimilarity, Similarity, assigned_hits, solve_one_to_one, two_way_topk

    links = np.asarray(links, dtype=np.int64).reshape(-1, 2)
    cand = np.asarray(cand, dtype=np.int64).reshape(-1)
    sources = np.unique(links[:, 0])  # (p,)
    sim = Similarity(np.asarray(src_emb)[sources], np.asarray(tgt_emb)[cand], method=method, csls_k=csls_k,
                     device=device, radius=radius)
    k = int(min(sparse_k, len(cand), len(sources)))
    lists = two_way_topk(sim.src, sim.tgt, sim.r_src, sim.r_tgt, k, method=method, csls_k=csls_k, device=device,
                         on_block=on_block)
    matching, label = solve_one_to_one(ListedSimilarity(len(sources), len(cand), *lists), solver)
    return {"hits@1": assigned_hits(matching, sources, cand, links), "pairs": int(len(matching)),
            "solver": f"{label} over each side's top-{k} by {method})"}


def pass_radius(found, search, num_sources: int, num_candidates: int) -> tuple | None:
    """``(r_src, r_tgt)``: the search pass's CSLS radii (the metrics', test sources in ``eval_src`` order, test
    targets) when they cover these rows (``search.candidates = "test"``), for a later step to reuse; else None."""
    if found is None or search.candidates != "test" or found.r_src is None or found.r_tgt is None \
            or len(found.r_src) != num_sources or len(found.r_tgt) != num_candidates:
        return None
    return np.asarray(found.r_src, np.float32), np.asarray(found.r_tgt, np.float32)


def one_to_one_metrics(task, src_emb, tgt_emb, search, device: str, found=None, on_block=None) -> dict:
    """The one-to-one entries of ``metrics["test"]``: ``hits@1_one_to_one`` and ``one_to_one`` (solver, pairs).

    Always the test sources against the test targets (the benchmark candidates), by ``search.one_to_one``
    (:func:`~mmea.search.matching.solve_one_to_one`).  ``found``: the search
    pass (:class:`~mmea.search.onepass.OnePass`); with ``search.candidates = "test"`` its radii (the
    metrics') are reused, so only :func:`~mmea.search.matching.two_way_topk`'s pass is added; ``on_block``: fed
    that pass's score blocks (:func:`shared_reciprocal`).
    """
    sources, cand = np.unique(task.test[:, 0]), np.unique(task.test[:, 1])
    if found is not None and found.stats.get("listed"):  # the list-based pass's two-way lists
        from ..search.approx import listed_one_to_one

        o = listed_one_to_one(found, task.test, cand, search.one_to_one)
        return {"hits@1_one_to_one": o["hits@1"], "one_to_one": {"solver": o["solver"], "pairs": o["pairs"]}}
    o = one_to_one_hits(src_emb, tgt_emb, task.test, cand, method=search.method, csls_k=search.csls_k,
                        device=device, radius=pass_radius(found, search, len(sources), len(cand)),
                        solver=search.one_to_one, on_block=on_block)
    return {"hits@1_one_to_one": o["hits@1"], "one_to_one": {"solver": o["solver"], "pairs": o["pairs"]}}


def reciprocal_metrics(task, src_emb, tgt_emb, search, device: str, found=None, progress: bool = False,
                       shared=None) -> dict | None:
    """``test_by_method["src->tgt/reciprocal"]``: the test links ranked by both sides' preferences over the
    run's scores (:mod:`mmea.search.reciprocal`), against the same candidates as the primary metric; ``None``
    when ``search.reciprocal = off``.  After an approximate search, and after an exact one above
    :data:`~mmea.search.reciprocal.RECIPROCAL_MAX_SCORES` scores with ``auto``: each test source's top-``K``
    list of the pass re-ranked by the keys (:func:`~mmea.search.reciprocal.listed_reciprocal`; a gold target
    outside its list is a miss, MRR a lower bound, no MR), labelled by ``ranks_from`` (``None`` when the pass
    kept no list of these rows).  ``shared``: a :func:`shared_reciprocal` that another pass has fed (its ranks
    are read, no pass here)."""
    from ..evaluation import evaluation_rows, ranking_metrics
    from ..search.matching import Similarity
    from ..search.reciprocal import RECIPROCAL_MAX_SCORES, reciprocal_ranks

    if search.reciprocal == "off":
        return None
    if shared is not None and shared.done:  # its keys were ranked in the one-to-one pass
        return {**ranking_metrics(shared.ranks), "n": int(len(shared.ranks))}
    src_rows, tgt_rows, q_src, q_tgt = evaluation_rows(task.test, len(src_emb), len(tgt_emb), search.candidates)
    if found is not None and found.stats.get("listed"):
        return listed_reciprocal_metrics(found, q_src, q_tgt, len(tgt_rows))
    if len(src_rows) * len(tgt_rows) > RECIPROCAL_MAX_SCORES and search.reciprocal == "auto":
        if pass_radius(found, search, len(src_rows), len(tgt_rows)) is None or not found.lists:  # no list to re-rank
            return None
        return listed_reciprocal_metrics(found, q_src, q_tgt, len(tgt_rows), search.method)
    sim = Similarity(np.asarray(src_emb)[src_rows], np.asarray(tgt_emb)[tgt_rows], method=search.method,
                     csls_k=search.csls_k, device=device, progress=progress,
                     radius=pass_radius(found, search, len(src_rows), len(tgt_rows)))
    col = pass_column_best(found, search, len(src_rows), len(tgt_rows))  # the search pass's column maxima
    ranks = reciprocal_ranks(sim, q_tgt, q_src, progress=progress, col=col)  # (links,)
    return {**ranking_metrics(ranks), "n": int(len(ranks))}


def pass_column_best(found, search, num_sources: int, num_candidates: int) -> np.ndarray | None:
    """``(m,)`` the search pass's column maxima of the run's score (:attr:`~mmea.search.onepass.OnePass.column_best`)
    when its radii are the ones a later ranking uses (:func:`pass_radius`); else None."""
    if pass_radius(found, search, num_sources, num_candidates) is None or found.column_best is None:
        return None
    return found.column_best[search.method]


def shared_reciprocal(task, src_emb, tgt_emb, search, found=None):
    """A :class:`~mmea.search.reciprocal.ReciprocalRanks` that the one-to-one graph's pass feeds, when both
    rankings are on and read the same scores (exact search pass, ``search.candidates = "test"``, the dense
    reciprocal ranking): :func:`reciprocal_metrics`' ranks at no pass of their own; else None."""
    from ..evaluation import evaluation_rows
    from ..search.reciprocal import RECIPROCAL_MAX_SCORES, ReciprocalRanks

    if search.reciprocal == "off" or search.one_to_one == "off" or found is None or found.stats.get("listed"):
        return None
    src_rows, tgt_rows, q_src, q_tgt = evaluation_rows(task.test, len(src_emb), len(tgt_emb), search.candidates)
    if len(src_rows) * len(tgt_rows) > RECIPROCAL_MAX_SCORES and search.reciprocal == "auto":
        return None  # the listed re-ranking (reciprocal_metrics)
    # a column best only with candidates = "test": src_rows are then the unique test sources, one_to_one_hits' rows
    col = pass_column_best(found, search, len(src_rows), len(tgt_rows))
    return ReciprocalRanks(col, q_tgt, q_src, len(src_rows)) if col is not None else None


def listed_reciprocal_metrics(found, q_src: np.ndarray, q_tgt: np.ndarray, m: int, method: str = "csls") -> dict:
    """:func:`reciprocal_metrics` from a search pass's two-way lists (``found.lists``): the links' ``q_src``
    positions among the pass's sources, ``q_tgt`` among its ``m`` candidates.  An approximate pass's lists are
    already sorted by the run's score; an exact pass keeps each side's top-``K`` *cosines*
    (:class:`~mmea.search.onepass.OnePass`), re-scored here by ``method`` with the pass's radii."""
    from ..search.approx import list_rank_metrics, sorted_lists
    from ..search.reciprocal import listed_reciprocal_ranks

    if "forward" in found.lists:
        kind = "approximate" if found.stats.get("approximate") else "exact"
        fwd, bwd, what = found.lists["forward"], found.lists["reverse"], f"{kind} ({found.stats.get('index')})"
    else:
        L, r_src, r_tgt = found.lists, np.asarray(found.r_src, np.float32), np.asarray(found.r_tgt, np.float32)
        fwd = sorted_lists(L["src_cos"], L["src_ids"], r_src, r_tgt, method)  # (p, K)
        bwd = sorted_lists(L["tgt_cos"], L["tgt_ids"], r_tgt, r_src, method)  # (m, K')
        what = "exact cosine"
    ranks = listed_reciprocal_ranks(fwd, bwd, m, q_src, q_tgt)  # (links,), -1: not in the list
    return {**list_rank_metrics(ranks),
            "ranks_from": f"each source's {what} top-{fwd.ids.shape[1]} list re-ranked by the keys"}


def calibrate_run(run_dir: Path, task, src_emb, tgt_emb, rows: np.ndarray, cand: np.ndarray, al, search,
                  device: str, scores=None, model=None) -> dict:
    """Fit the confidence calibration on the validation links; write ``calibration.json`` (+ ``valid_scores.npz``).

    The validation sources are ranked like the query ``rows`` (see
    :func:`mmea.calibration.score_valid_sources`), or ``scores`` (a
    :class:`~mmea.calibration.ValidScores`) is what :func:`search_run`'s pass found for
    them; returns a summary for ``metrics.json``.  A ``model`` with variances (``uncertainty()``) gives each
    validation pair its uncertainty, and the validation links decide whether the curve reads it
    (:func:`mmea.calibration.choose_variance`).  A model that trained on the validation links (a refit) gives its
    held-out embeddings (:meth:`~mmea.models.base.AlignmentModel.held_out_embeddings`): the curve is fitted on
    those, never on links the scored model learnt.
    """
    from ..calibration import CALIBRATION_FILE, score_valid_sources, write_calibration, write_no_calibration

    if not len(task.valid):
        cal = write_no_calibration(run_dir, "the run has no validation links (no gold seeds: --seed-ratio 0, "
                                            "or no gold links at all)")
        log.info("calibration: none (%s)", cal.reason)
        return {"available": False, "reason": cal.reason}
    held = model.held_out_embeddings() if model is not None else None
    if held is not None:  # the scored model trained on the valid links: score them with the one that did not
        (src_emb, tgt_emb), scores = held, None
    if scores is None:
        scores = score_valid_sources(src_emb, tgt_emb, task.valid, rows, cand, method=search.method,
                                     csls_k=search.csls_k, index=search.index, device=device,
                                     cand_r_tgt=al.result.r_tgt if held is None else None)
    cal = write_calibration(run_dir, with_valid_uncertainty(scores, model))
    log.info("calibration: isotonic on the %s, %d validation sources (H@1 %.3f)%s", cal.feature, cal.n_valid,
             cal.n_correct / max(cal.n_valid, 1), f"; variance: {cal.variance['reason']}" if cal.variance else "")
    out = {"available": cal.available, "feature": cal.feature, "n_valid": cal.n_valid,
           "valid_hits@1": cal.n_correct / max(cal.n_valid, 1), "file": CALIBRATION_FILE,
           "embeddings": "scored" if held is None else "held out (the model before its refit on the valid links)"}
    return {**out, "variance": cal.variance} if cal.variance is not None else out


def with_valid_uncertainty(scores, model):
    """``scores`` (:class:`~mmea.calibration.ValidScores`) with the uncertainty of each validation source's
    top-1 pair (source variance + target variance, as ``alignment.csv``'s column) when ``model`` has variances."""
    from ..export import pair_uncertainty

    unc = pair_uncertainty(model, scores.src, scores.top1)  # (v,) or None
    return scores if unc is None else dataclasses.replace(scores, uncertainty=unc)


def write_test_ranks(run_dir: Path, ranks: np.ndarray) -> Path:
    """Write :data:`TEST_RANKS_FILE` (int32) into ``run_dir``; returns its path."""
    path = Path(run_dir) / TEST_RANKS_FILE
    return atomic_save_npy(path, np.asarray(ranks).astype(np.int32))


def import_libraries() -> None:
    """Import what the search (torch, through :mod:`mmea.search.onepass`) and the export (pandas)
    need, so that their stage timings measure their work and not a first import."""
    import pandas  # noqa: F401

    from ..search import onepass  # noqa: F401  (imports torch)


def run_align(cfg: RunConfig, out: Path | None = None, quiet: bool = False, *, resume: bool = False,
              overwrite: bool = False, checkpoint_every: int = 1, stop_after_epochs: int = 0) -> dict:
    """Run one alignment; returns ``{"metrics", "metrics_path", "alignment", "run_dir"}``.

    ``resume``: ``out`` is an interrupted run of ``cfg``: its ``checkpoint.pt`` (if any) is
    checked before anything runs and training continues after its epoch; the outputs are
    written into the same directory.  ``overwrite``: ``out`` may hold an earlier run, which is
    cleared first (without it a non-empty ``out`` is refused).  ``checkpoint_every``: epochs
    between checkpoints (0: only on Ctrl-C).  ``stop_after_epochs``: a test hook, a Ctrl-C
    after that many epochs.  The run's ``complete.json`` is written last, after every output.
    """
    if resume and out is None:
        raise MmeaInputError("resume needs the run directory")
    resolve_device(cfg.device)  # a device that does not exist fails before anything is written
    run = RunDir.create(out or default_run_dir("align", dataset_label(cfg)), resume=resume, overwrite=overwrite)
    ckpt = Checkpointer(run.path, every=checkpoint_every, resume_command=f"mmea align --resume {run.path}",
                        stop_after_epochs=stop_after_epochs)
    with ckpt.recorded(run):  # a stop is logged with its exit code; Ctrl-C gets the resume hint
        if resume:
            if ckpt.load() is None:
                log.warning("%s: no checkpoint, so training starts from the beginning", run.path)
        else:
            run.write_config(to_toml(dataclasses.asdict(cfg)))
        result = _align_in(run, cfg, ckpt, quiet)
        run.mark_complete(model=result["metrics"].get("model"), dataset=result["metrics"].get("dataset"))
        return result


def _resolve_model(run: RunDir, task, cfg: RunConfig, ctx, notes: list) -> tuple:
    """``(cfg, choice)``: without a model name (``auto``) the default rule's config, printed in one line
    and noted (:func:`mmea.pipelines.default_model.choose_model`); else ``cfg`` as it is and ``None``."""
    from .default_model import AUTO, choose_model

    if cfg.model_name != AUTO:
        return cfg, None
    with run.stage("choose_model"):
        choice = choose_model(task, cfg, ctx)
    ctx.features = choice.config.features
    log.warning("model: %s (default) - %s", choice.config.model_name, choice.reason)
    notes.append(f"default model {choice.config.model_name}: {choice.reason}")
    return choice.config, choice


def model_requests(model, names_off: str | None) -> dict:
    """The model's feature requests; with names off without ``names`` (never computed, so no name-derived
    feature can enter the run: :mod:`mmea.pipelines.names`)."""
    requests = dict(model.feature_requests(model.config))
    if names_off:
        requests.pop("names", None)
    return requests


def test_metrics(run: RunDir, task, model, embeddings: tuple, ranks, al, search, device: str, notes: list,
                 progress: bool = False, found=None) -> dict:
    """``test`` (the ranking metrics, then ``hits@1_one_to_one``), ``test_by_method`` and ``matched`` of
    ``metrics.json``; without test links ``test`` is empty and a note says so."""
    from ..evaluation import alignment_metrics

    src_emb, tgt_emb = embeddings
    out: dict = {}
    if len(task.test):
        with run.stage("evaluate"):
            out.update(evaluate_run(run.path, task, model, src_emb, tgt_emb, ranks, search, progress, found))
        shared = shared_reciprocal(task, src_emb, tgt_emb, search, found)  # fed by the one-to-one pass
        if search.one_to_one == "off":
            notes.append("search.one_to_one = off: the one-to-one H@1 (test.hits@1_one_to_one) was not computed")
        else:
            with run.stage("one_to_one"):  # the second, labelled H@1: one-to-one assignment of the test candidates
                out["test"].update(one_to_one_metrics(task, src_emb, tgt_emb, search, device, found, shared))
        rec = None
        if search.reciprocal != "off":
            with run.stage("reciprocal"):  # a third ranking: both sides' preferences (mmea.search.reciprocal)
                rec = reciprocal_metrics(task, src_emb, tgt_emb, search, device, found, progress, shared)
        if rec is not None:
            out["test_by_method"]["src->tgt/reciprocal"] = rec
    else:
        out["test"] = {}
        (run.path / TEST_RANKS_FILE).unlink(missing_ok=True)  # a stale file of an earlier run in this folder
        notes.append("no gold test links: ranking metrics were not computed")
    if search.match != "none" or len(task.test):
        pred = al.predicted_pairs()
        m = {"method": search.match, "pairs": int(len(pred))}
        if len(task.test):
            m.update(alignment_metrics([tuple(x) for x in pred], [tuple(x) for x in task.test]))
        out["matched"] = m
    return out


def _align_in(run: RunDir, cfg: RunConfig, ckpt: Checkpointer, quiet: bool) -> dict:
    """The body of :func:`run_align` inside its run directory, with its engine (``--engine ray``: :mod:`mmea.engine`)."""
    from ..engine.run import engine_for
    from ..search.benchmark import reset_peak_rss

    run.peak_rss_scope = "this run" if reset_peak_rss() else "the process (cannot reset the peak here)"
    with engine_for(cfg.engine, cfg.model_name) as engine:  # None: in-process
        return _align_body(run, cfg, ckpt, quiet, engine)


def _export(run: RunDir, task, model, al, topk: int, has_gold: bool) -> Path:
    """Write ``alignment.csv`` (with a model's per-pair uncertainty where it has one) and, with test links, the
    gold targets the report shows; returns the CSV's path."""
    from ..export import add_uncertainty, alignment_frame, gold_targets_frame, write_alignment

    df = alignment_frame(task, al, topk=topk, gold=task.test if has_gold else None)
    df = add_uncertainty(df, task, model)  # gaussian-strong: variance-based uncertainty per pair
    csv_path = run.path / "alignment.csv"
    write_alignment(df, csv_path)
    if has_gold:  # what the report shows for a gold target outside the candidates
        run.write_gold_targets(gold_targets_frame(task, task.test))
    return csv_path


def _search_stage(engine, task, model, embeddings: tuple, rows, cand, search, device: str, progress: bool,
                  keep: dict) -> tuple:
    """:func:`search_run` in this process, or on Ray: the exact sharded search, or the approximate pass with
    its lists on the shards (``engine.approx_lists``); ``(alignment, ranks, validation scores)``."""
    src_emb, tgt_emb = embeddings
    sparse = model.search_sparse()
    lists = engine.approx_lists(task, rows, cand, search, progress) if engine is not None else None
    if engine is not None and lists is None and sparse is None:  # exact sharded indexes on Ray (mmea.engine.search)
        return engine.search(task, src_emb, tgt_emb, rows, cand, search, progress)
    try:  # a sparse term: the list-based pass, its exact lists in this process (the sparse products too)
        return search_run(task, src_emb, tgt_emb, rows, cand, search, device, progress, keep,
                          model.search_channels(), lists=lists, sparse=sparse)
    finally:
        if lists is not None:
            lists.close()


def _align_body(run: RunDir, cfg: RunConfig, ckpt: Checkpointer, quiet: bool, engine) -> dict:
    """:func:`_align_in` once the engine is up."""
    from ..data.catalog import load_task_from_config, mmea_home
    from ..features import run_features
    from ..models import MODELS, RunContext
    from .names import names_switch

    with run.stage("imports"):  # once per process; the later stages then time their own work
        import_libraries()
    seed_everything(cfg.seed)
    progress = not quiet and sys.stderr.isatty()  # bars for loading, features, training, evaluation and search
    with run.stage("load"):
        task = load_task_from_config(cfg.data, cfg.seed, progress)
    notes = list(task.meta.get("notes", []))
    for n in notes:
        log.warning("note: %s", n)
    device = resolve_device(cfg.device)
    ctx = RunContext(seed=cfg.seed, device=device, features=cfg.features, run_dir=run.path,
                     cache_root=(mmea_home() / "cache") if cfg.features.cache else None,
                     progress=progress, checkpoint=ckpt)
    cfg, choice = _resolve_model(run, task, cfg, ctx, notes)
    model_cls = MODELS.get(cfg.model_name)
    params = {k: v for k, v in cfg.model.items() if k != "name"}
    model = model_cls(model_cls.Config(**params), ctx)
    names_off = names_switch(cfg)  # checked up front (align_config.check_names): the model runs without names
    with run.stage("features"):  # task -> features: what the model requests, computed once (cached)
        features = run_features(task, model_requests(model, names_off), ctx)
    with run.stage("train"), ckpt.guard():  # Ctrl-C: the checkpoint first
        fitted = engine.fit(model, task, features, cfg.seed) if engine is not None else None  # partitioned mode
        if fitted is None:
            model.fit(task, features)
    src_emb, tgt_emb = fitted or model.embeddings()  # (N, d), (M, d)
    names_used = "names" in features
    del features  # the models keep what they need; at 1M the name vectors alone are about 1 GiB

    metrics: dict = {
        "dataset": task.name,
        "model": model_cls.registry_name,
        "seed": cfg.seed,
        "split": task.split_sizes(),
        "split_provenance": task.provenance.get("split"),
        "data_generator": task.provenance.get("generator"),  # a synthetic pair's generator, version and seed
        "device": device,
        # whether any entity name entered (names, translations, URI local names, neighbour names, CLEP text)
        "names_used": names_used,
        "names_off": names_off,
    }
    if choice is not None:
        metrics["model_choice"] = choice.record()
    s = cfg.search
    rows, cand, gold = query_rows(task)
    if s.candidates == "all":
        cand = np.arange(task.target.num_entities)
    keep: dict = {}
    with run.stage("search"):  # the one pass: ranks, top-k, reverse best, validation top-2
        al, ranks, valid_scores = _search_stage(engine, task, model, (src_emb, tgt_emb), rows, cand, s, device,
                                                progress, keep)
    if keep.get("pass") is not None:  # what the pass redid beyond its lists (its cost beyond one product pass)
        metrics["search_pass"] = {k: v for k, v in keep["pass"].stats.items() if isinstance(v, (bool, int, float, str))}
    metrics.update(test_metrics(run, task, model, (src_emb, tgt_emb), ranks, al, s, device, notes, progress,
                                keep.get("pass")))
    with run.stage("calibrate"):
        metrics["calibration"] = calibrate_run(run.path, task, src_emb, tgt_emb, rows, cand, al, s,
                                               device, scores=valid_scores, model=model)
    with run.stage("export"):
        csv_path = _export(run, task, model, al, s.topk, gold is not None)
    metrics["model_info"] = model.info
    metrics["engine"] = engine.record() if engine is not None else {"name": "local"}
    metrics["checkpoint"] = ckpt.summary()
    metrics["notes"] = notes + ctx.notes
    metrics["load_report"] = {"source": task.meta.get("load_report")}
    metrics["timings"] = {**task.meta.get("timings", {}), **run.timings, "total_s": run.total_s()}
    metrics["timings"]["load_s"] = run.timings.get("load_s", metrics["timings"].get("load_s"))
    from ..search.benchmark import peak_rss_gib  # VmHWM: the peak RSS since _align_in reset it
    metrics["peak_rss_gib"] = round(peak_rss_gib(), 3)
    metrics["peak_rss_scope"] = run.peak_rss_scope  # a bench runs many cells in one process
    mpath = run.write_metrics(metrics)
    log.info("wrote %s and %s", csv_path, mpath)
    return {"metrics": metrics, "metrics_path": mpath, "alignment": csv_path, "run_dir": run.path}
