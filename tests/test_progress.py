"""Progress bars of search, evaluation and loading: drawn only when asked and stderr is a terminal; same results."""

from __future__ import annotations

import importlib
import io
import sys

import numpy as np
import pytest

from mmea.data import parsing
from mmea.data.catalog import load_pair_task
from mmea.evaluation import evaluate_embeddings
from mmea.search.csls import csls_radius, csls_topk, rank_of_targets
from mmea.search.knn import knn
from mmea.search.matching import align
from test_loaders_dbp15k import make_dbp15k


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def stderr(monkeypatch):
    """``stderr(tty)``: replace ``sys.stderr`` (where tqdm draws) by a buffer that is or is not a terminal."""

    def use(tty: bool) -> io.StringIO:
        buf = _Terminal() if tty else io.StringIO()
        monkeypatch.setattr(sys, "stderr", buf)
        return buf

    return use


def embeddings(n: int, m: int, d: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.standard_normal((m, d)).astype(np.float32)


# (progress, stderr is a terminal) -> a bar is drawn
CASES = [(True, True, True), (True, False, False), (False, True, False)]


@pytest.mark.parametrize("progress,tty,drawn", CASES)
def test_csls_topk_bar_only_on_a_terminal(stderr, progress, tty, drawn):
    src, tgt = embeddings(60, 50)
    ref = csls_topk(src, tgt, 5, block_size=16)
    buf = stderr(tty)
    res = csls_topk(src, tgt, 5, block_size=16, progress=progress, reverse=True)
    assert ("search" in buf.getvalue()) is drawn
    assert drawn or buf.getvalue() == ""
    np.testing.assert_array_equal(res.ids, ref.ids)
    np.testing.assert_array_equal(res.csls, ref.csls)
    np.testing.assert_array_equal(res.r_tgt, ref.r_tgt)


@pytest.mark.parametrize("progress,tty,drawn", CASES)
def test_radius_rank_and_knn_bars(stderr, progress, tty, drawn):
    src, tgt = embeddings(40, 30, seed=1)
    gold = np.arange(40) % 30
    ref_r = csls_radius(src, tgt, 5, block_size=8)
    ref_rank = rank_of_targets(src, tgt, gold, method=("cos", "csls"), csls_k=5, block_size=8)
    ref_knn = knn(src, tgt, 4, index="torch", block_size=8)
    buf = stderr(tty)
    r = csls_radius(src, tgt, 5, block_size=8, progress=progress)
    rank = rank_of_targets(src, tgt, gold, method=("cos", "csls"), csls_k=5, block_size=8, progress=progress)
    found = knn(src, tgt, 4, index="torch", block_size=8, progress=progress)
    out = buf.getvalue()
    for desc in ("CSLS radii", "evaluate", "search"):
        assert (desc in out) is drawn
    for a, b in zip(r + ref_knn, ref_r + found):
        np.testing.assert_array_equal(a, b)
    for mth in ("cos", "csls"):
        np.testing.assert_array_equal(rank[mth], ref_rank[mth])


@pytest.mark.parametrize("progress,tty,drawn", CASES)
def test_align_and_evaluate_bars(stderr, progress, tty, drawn):
    src, tgt = embeddings(30, 35, seed=2)
    links = np.stack([np.arange(20), np.arange(20) + 5], 1)
    rows, cand = np.arange(30), np.arange(35)
    ref_al = align(src, tgt, rows, cand, topk=3, matcher="greedy", block_size=7)
    ref_ev = evaluate_embeddings(src, tgt, links, block_size=7, return_ranks=True)
    buf = stderr(tty)
    al = align(src, tgt, rows, cand, topk=3, matcher="greedy", block_size=7, progress=progress)
    ev = evaluate_embeddings(src, tgt, links, block_size=7, return_ranks=True, progress=progress)
    out = buf.getvalue()
    for desc in ("CSLS radii", "search", "evaluate"):
        assert (desc in out) is drawn
    np.testing.assert_array_equal(al.result.ids, ref_al.result.ids)
    np.testing.assert_array_equal(al.reverse_best, ref_al.reverse_best)
    np.testing.assert_array_equal(al.predicted_pairs(), ref_al.predicted_pairs())
    np.testing.assert_array_equal(ev.pop("ranks"), ref_ev.pop("ranks"))
    assert ev == ref_ev


# -- loading ----------------------------------------------------------------------

@pytest.mark.parametrize("progress,tty,drawn", CASES)
def test_load_pair_task_bar_only_on_a_terminal(tmp_path, stderr, progress, tty, drawn):
    folder = make_dbp15k(tmp_path)
    ref = load_pair_task(None, None, pair=str(folder))
    buf = stderr(tty)
    task = load_pair_task(None, None, pair=str(folder), progress=progress)
    assert ("loading" in buf.getvalue()) is drawn
    assert drawn or buf.getvalue() == ""
    for part in ("train", "valid", "test"):
        np.testing.assert_array_equal(getattr(task, part), getattr(ref, part))
    for kg, ref_kg in ((task.source, ref.source), (task.target, ref.target)):
        np.testing.assert_array_equal(kg.triples, ref_kg.triples)
        assert kg.uris == ref_kg.uris and kg.names == ref_kg.names
    assert task.meta["load_report"] == ref.meta["load_report"]


def test_loading_bar_counts_the_bytes_read(tmp_path, stderr, monkeypatch):
    monkeypatch.setattr(parsing, "_BAR_STEP", 64)  # a streaming reader updates the bar every 64 bytes
    text = "".join(f"{i}\tname {i}\n" for i in range(100)) + "\n"
    ids = tmp_path / "ids"
    ids.write_text(text, encoding="utf-8")
    triples = tmp_path / "triples"
    triples.write_text("0 1 2\n3 4 5\n", encoding="utf-8")
    buf = stderr(True)
    with parsing.loading_bar(True) as bar:
        got_ids, names = parsing.read_id_map(ids)  # streamed line by line
        rows = parsing.read_int_triples(triples)  # read whole
        assert bar.n == len(text.encode()) + triples.stat().st_size
    assert names[5] == "name 5" and rows.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert "loading" in buf.getvalue() and "triples" in buf.getvalue()
    assert parsing.note_read(ids, 10) is None  # outside the block the readers report to nothing


@pytest.mark.parametrize("index", ["flat", "ivf", "hnsw"])
@pytest.mark.parametrize("progress,tty,drawn", CASES)
def test_faiss_index_bars_and_chunked_search(stderr, monkeypatch, index, progress, tty, drawn):
    """FAISS indexes add and search in chunks (7 rows here) with "index" / "search" bars; the
    chunked search equals one ``search`` call over all queries on the same index."""
    knn_mod = importlib.import_module("mmea.search.knn")

    pytest.importorskip("faiss")
    src, tgt = embeddings(40, 64, seed=3)
    opts = {"ivf": {"nlist": 4, "nprobe": 4}, "hnsw": {}, "flat": {}}[index]
    monkeypatch.setattr(knn_mod, "FAISS_CHUNK", 7)
    buf = stderr(tty)
    idx = knn_mod.make_index(index, tgt, n_queries=len(src), progress=progress, **opts)
    found = idx.search(src, 5)
    out = buf.getvalue()
    for desc in ("index", "search"):
        assert (desc in out) is drawn
    whole_v, whole_i = idx.index.search(knn_mod.as_float32(src), 5)
    if index == "ivf":  # 8-bit cells: the same ids, ordered by their exact (re-scored) cosines
        np.testing.assert_array_equal(np.sort(found[1], 1), np.sort(whole_i, 1))
    else:
        np.testing.assert_array_equal(found[1], knn_mod.sort_rows_np(whole_v, whole_i)[1])
    if index == "flat":  # exact: the torch reference
        np.testing.assert_array_equal(found[1], knn_mod.make_index("torch", tgt, n_queries=40).search(src, 5)[1])
