"""Top-k inner-product search over L2-normalised embeddings (inner product = cosine).

:func:`knn` resolves a search index from :data:`INDEXES` and returns, for each
query, the ``k`` base vectors of highest cosine:

* ``"torch"``: pure-torch exact search, blockwise (one ``(block, m)`` score
  block at a time, never the whole ``n x m`` matrix).  The reference path in
  the tests, the default for tiny inputs and the GPU path when faiss has no GPU
  support.
* ``"flat"``: FAISS ``IndexFlatIP`` exact search (the default), on the GPU
  with faiss-gpu and ``device="cuda"``.
* ``"ivf"``: FAISS ``IndexIVFFlat`` (Jégou et al., "Product quantization for
  nearest neighbor search", TPAMI 2011, §IV.A): k-means with ``nlist`` cells,
  a query scans its ``nprobe`` nearest cells.  Recall grows and speed drops
  with ``nprobe / nlist``.
* ``"hnsw"``: FAISS ``IndexHNSWFlat`` (Malkov & Yashunin, "Efficient and
  robust approximate nearest neighbor search using Hierarchical Navigable
  Small World graphs", TPAMI 2018): graph of degree ``2 * hnsw_m``; recall
  grows with ``ef_search`` (and ``ef_construction`` at build time).

``"auto"`` picks ``torch`` below :data:`TINY_PAIRS` query-base pairs, ``flat``
up to :data:`APPROX_PAIRS` and ``ivf`` above.

**Ties.**  Exact indexes order each result row by score descending, then by
base index ascending, so the k-th slot of a tie goes to the lower base index
and results do not depend on the block size or the library.  Approximate
indexes sort what they found the same way.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import MmeaInputError
from ..progress import progress_bar
from ..registry import Registry

__all__ = [
    "INDEXES",
    "SearchIndex",
    "TorchIndex",
    "FlatIndex",
    "IvfIndex",
    "HnswIndex",
    "knn",
    "l2_normalize",
    "as_float32",
    "resolve_index",
    "make_index",
    "INDEX_OPTIONS",
    "topk_rows",
    "order_by_score_then_index",
    "sort_by_score_then_index",
    "sort_rows_np",
    "row_block_size",
    "faiss_has_gpu",
    "TINY_PAIRS",
    "APPROX_PAIRS",
    "BLOCK_ELEMENTS",
]

#: ``index="auto"`` uses the pure-torch path up to this many (query, base) pairs.
TINY_PAIRS = 1 << 22
#: ``index="auto"`` switches from exact to IVF search above this many pairs (~316k x 316k).
APPROX_PAIRS = 10**11
#: Default size of one score block in float32 elements (128 MiB).
BLOCK_ELEMENTS = 1 << 25
#: Queries per FAISS ``search`` call (and vectors per ``add``): the unit of the progress bar.
FAISS_CHUNK = 1 << 14

INDEXES: Registry["SearchIndex"] = Registry("index", suffix="Index")


# -- inputs -------------------------------------------------------------------

def as_float32(x: Any, what: str = "embeddings", check_finite: bool = True) -> np.ndarray:
    """``x`` (numpy array, torch tensor or nested list) as a C-contiguous float32 ``(n, d)`` array.

    Raises :class:`MmeaInputError` on a wrong rank or (``check_finite``) non-finite values; a caller
    that reads only some rows checks those (:func:`scale_rows` with ``what``).
    """
    if hasattr(x, "detach"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2:
        raise MmeaInputError(f"{what} must be a 2-d array (rows, dim), got shape {x.shape}")
    if check_finite and x.size and not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise MmeaInputError(f"{what} contain NaN or infinite values (first at row {bad})")
    return x


def l2_normalize(x: Any, what: str = "embeddings") -> np.ndarray:
    """Rows scaled to unit L2 norm, float32 ``(n, d)``: ``x_i / ||x_i||``.

    After this, the inner product of two rows is their cosine.  All-zero rows
    stay zero (cosine 0 with everything) instead of becoming NaN.  The quotient is
    computed in float64 a chunk of rows at a time, so no float64 copy of ``x`` is made.
    """
    return scale_rows(as_float32(x, what))


def scale_rows(x: np.ndarray, inplace: bool = False, what: str | None = None, rows: Any = None) -> np.ndarray:
    """:func:`l2_normalize` of a float32 ``(n, d)`` array already checked by :func:`as_float32`
    (``inplace``: into ``x`` itself, for a copy nobody else holds).  One float64 buffer of a chunk
    of rows is reused (fresh temporaries cost page faults on every chunk).  ``what``: check the rows
    here instead (a NaN or infinite value makes a row's norm non-finite), naming the first bad one by
    its number in ``rows`` (the rows of a larger array that ``x`` holds)."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))  # (n,)
    if what is not None and not np.isfinite(norms).all():
        bad = int(np.flatnonzero(~np.isfinite(norms))[0])
        bad = int(rows[bad]) if rows is not None else bad
        raise MmeaInputError(f"{what} contain NaN or infinite values (first at row {bad})")
    norms[norms == 0] = 1.0
    out = x if inplace else np.empty_like(x)  # float32; the float64 quotient only a chunk at a time
    step = max(1, (1 << 22) // max(1, x.shape[1]))
    buf = np.empty((min(step, len(x)), x.shape[1]), np.float64)
    for a in range(0, len(x), step):
        b = min(a + step, len(x))
        np.divide(x[a:b], norms[a:b, None], out=buf[:b - a])
        out[a:b] = buf[:b - a]
    return out


def faiss_has_gpu() -> bool:
    """True when the installed faiss was built with GPU support and sees a GPU."""
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss is a dependency
        return False
    return hasattr(faiss, "StandardGpuResources") and getattr(faiss, "get_num_gpus", lambda: 0)() > 0


def _check_device(device: str) -> str:
    device = str(device)
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise MmeaInputError(f"device {device!r} requested but CUDA is not available",
                                 hint="use --device cpu")
    elif device != "cpu":
        raise MmeaInputError(f"unknown device {device!r}; use 'cpu' or 'cuda'")
    return device


def row_block_size(m: int, block_size: int | None = None, budget: int = BLOCK_ELEMENTS) -> int:
    """Query rows per ``(rows, m)`` score block: ``block_size`` or ``budget // m`` clamped to [16, 8192]."""
    if block_size is not None:
        if int(block_size) < 1:
            raise MmeaInputError(f"block size must be >= 1, got {block_size}")
        return int(block_size)
    return int(min(8192, max(16, budget // max(1, m))))


# -- deterministic top-k on a score block ---------------------------------------

def topk_rows(scores, k: int):
    """Top-``k`` of each row of a torch score block, ordered by (score desc, column asc).

    ``scores``: torch float ``(b, m)``; returns ``(values (b, k), columns (b, k) int64)``
    with ``k <= m``.  ``torch.topk`` leaves the choice among equal values open,
    so rows whose k-th and (k+1)-th values tie are redone exactly: every column
    scoring strictly above the k-th value, then the lowest columns equal to it.
    """
    import torch

    b, m = scores.shape
    k = min(int(k), m)
    if k == 0 or b == 0:
        return scores.new_zeros((b, k)), torch.zeros((b, k), dtype=torch.int64, device=scores.device)
    kk = min(k + 1, m)
    vals, cols = torch.topk(scores, kk, dim=1)  # (b, kk), sorted descending
    tied = (vals[:, k - 1] == vals[:, k]).nonzero().flatten().tolist() if kk > k else []
    vals, cols = vals[:, :k].contiguous(), cols[:, :k].contiguous()
    for r in tied:
        row, thr = scores[r], vals[r, k - 1]
        above = (row > thr).nonzero().flatten()
        equal = (row == thr).nonzero().flatten()[: k - len(above)]
        c = torch.cat([above, equal])
        cols[r] = c
        vals[r] = row[c]
    # topk already sorted by value; only rows with equal values inside need the index order
    fix = (vals[:, 1:] == vals[:, :-1]).any(1) if k > 1 else torch.zeros(b, dtype=torch.bool)
    if tied:
        fix[torch.tensor(tied, device=fix.device)] = True
    rows = fix.nonzero().flatten()
    if len(rows):
        vals[rows], cols[rows] = sort_by_score_then_index(vals[rows], cols[rows])
    return vals, cols


def order_by_score_then_index(vals, cols):
    """Permutation ``(b, k)`` putting each row of torch ``vals`` in (value desc, column asc) order."""
    import torch

    o1 = torch.argsort(cols, dim=1)
    o2 = torch.sort(torch.gather(vals, 1, o1), dim=1, descending=True, stable=True).indices
    return torch.gather(o1, 1, o2)


def sort_by_score_then_index(vals, cols):
    """Reorder each row of torch ``(vals, cols)`` by value descending, then column ascending."""
    import torch

    if vals.shape[1] <= 1:
        return vals, cols
    o = order_by_score_then_index(vals, cols)
    return torch.gather(vals, 1, o), torch.gather(cols, 1, o)


def sort_rows_np(vals: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """numpy twin of :func:`sort_by_score_then_index`; ids of ``-1`` (not found) go last."""
    key_missing = ids < 0
    o = np.lexsort((ids, -vals.astype(np.float64), key_missing), axis=1)
    return np.take_along_axis(vals, o, 1), np.take_along_axis(ids, o, 1)


# -- indexes ------------------------------------------------------------------

class SearchIndex:
    """Base of the search indexes: ``build(base)`` once, then ``search(queries, k)``.

    Template method: :meth:`search` validates and sorts, subclasses implement
    :meth:`_build` and :meth:`_search` on float32 unit vectors.  ``progress``: a
    "search" bar over the query blocks of the blockwise (torch) search.
    """

    exact = True

    def __init__(self, device: str = "cpu", block_size: int | None = None, progress: bool = False, **params):
        self.device = _check_device(device)
        self.block_size = block_size
        self.progress = progress
        if params:
            raise MmeaInputError(f"index {type(self).registry_name!r} got unknown options: {sorted(params)}")
        self.base: np.ndarray | None = None

    def build(self, base: np.ndarray) -> "SearchIndex":
        self.base = as_float32(base, "base vectors")
        self._build(self.base)
        return self

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores (n, k) float32, ids (n, k) int64)``; ``k`` is capped at the base size.

        Approximate indexes mark slots they could not fill with id ``-1`` and score ``-inf``.
        """
        if self.base is None:
            raise RuntimeError("search() before build()")
        queries = as_float32(queries, "queries")
        if queries.shape[1] != self.base.shape[1]:
            raise MmeaInputError(f"queries have dimension {queries.shape[1]}, base vectors {self.base.shape[1]}")
        k = min(int(k), len(self.base))
        if k < 1 or len(queries) == 0:
            return np.zeros((len(queries), max(k, 0)), np.float32), np.zeros((len(queries), max(k, 0)), np.int64)
        scores, ids = self._search(queries, k)
        scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
        return sort_rows_np(scores, ids.astype(np.int64))

    def candidates(self, queries: np.ndarray, k: int) -> np.ndarray:
        """``(n, k)`` int64 ids of each query's top-``k`` (``-1``: unfilled), in no guaranteed order: for a caller
        that re-scores a union of candidates itself (:func:`mmea.search.approx.channel_lists`)."""
        return self.search(queries, k)[1]

    def _build(self, base: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        raise NotImplementedError


@INDEXES.register
class TorchIndex(SearchIndex):
    """Exact blockwise search in pure torch (CPU or CUDA); the reference path."""

    def _build(self, base):
        import torch

        self._base_t = torch.from_numpy(base).to(self.device)

    def _search(self, queries, k):
        import torch

        m = len(self.base)
        bs = row_block_size(m, self.block_size)
        out_v = np.empty((len(queries), k), np.float32)
        out_i = np.empty((len(queries), k), np.int64)
        with torch.no_grad(), progress_bar(total=len(queries), progress=self.progress, desc="search", unit="row",
                                           leave=False) as bar:
            for s in range(0, len(queries), bs):
                q = torch.from_numpy(queries[s:s + bs]).to(self.device)
                v, i = topk_rows(q @ self._base_t.T, k)  # (b, m) -> (b, k)
                out_v[s:s + bs], out_i[s:s + bs] = v.cpu().numpy(), i.cpu().numpy()
                bar.update(len(q))
        return out_v, out_i


class _FaissIndex(SearchIndex):
    """Shared FAISS plumbing: GPU transfer and the inner-product metric."""

    def _make(self, d: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def _build(self, base):
        import faiss

        index = self._make(base.shape[1])
        if self.device.startswith("cuda"):
            if not faiss_has_gpu():
                raise MmeaInputError(
                    f"index {self.registry_name!r} on {self.device} needs faiss with GPU support",
                    hint="install faiss-gpu, or use --index torch for exact GPU search")
            self._res = faiss.StandardGpuResources()
            dev = int(self.device.split(":")[1]) if ":" in self.device else 0
            index = faiss.index_cpu_to_gpu(self._res, dev, index)
        self._train(index, base)
        # added in chunks so that a long build (HNSW over a large base) shows a bar (flat / IVF: the same
        # index as one add; HNSW: a graph as valid, its links depend on the batches as on thread timing)
        with progress_bar(total=len(base), progress=self.progress, desc="index", unit="vec", leave=False) as bar:
            for s in range(0, len(base), FAISS_CHUNK):
                index.add(base[s:s + FAISS_CHUNK])
                bar.update(len(base[s:s + FAISS_CHUNK]))
        self.index = index

    def _train(self, index, base):
        pass

    def _faiss_search(self, queries, k):
        """``self.index.search`` over chunks of queries, with the "search" bar; rows are independent."""
        out_v = np.empty((len(queries), k), np.float32)
        out_i = np.empty((len(queries), k), np.int64)
        with progress_bar(total=len(queries), progress=self.progress, desc="search", unit="row", leave=False) as bar:
            for s in range(0, len(queries), FAISS_CHUNK):
                out_v[s:s + FAISS_CHUNK], out_i[s:s + FAISS_CHUNK] = self.index.search(queries[s:s + FAISS_CHUNK], k)
                bar.update(len(queries[s:s + FAISS_CHUNK]))
        return out_v, out_i

    def _search(self, queries, k):
        return self._faiss_search(queries, k)


@INDEXES.register
class FlatIndex(_FaissIndex):
    """FAISS exact inner-product search (``IndexFlatIP``), with deterministic ties."""

    def _make(self, d):
        import faiss

        return faiss.IndexFlatIP(d)

    def _search(self, queries, k):
        # ask for one more so that a tie across the k-th slot can be detected and redone exactly
        kk = min(k + 1, len(self.base))
        scores, ids = sort_rows_np(*self._faiss_search(queries, kk))
        if kk > k:
            tied = np.flatnonzero(scores[:, k - 1] == scores[:, k])
            if len(tied):
                ref = TorchIndex(block_size=self.block_size).build(self.base)
                scores[tied, :k], ids[tied, :k] = ref._search(queries[tied], k)
        return scores[:, :k], ids[:, :k]


#: IVF cells scanned per query unless ``nprobe`` is given
IVF_NPROBE = 32


def default_nlist(m: int) -> int:
    """IVF cells for ``m`` base rows: ``4 sqrt(m)`` rounded to a power of two, at most ``m / 39`` (FAISS's
    minimum of 39 training points a cell) and at least 1."""
    return int(max(1, min(m // 39 or 1, 2 ** round(math.log2(4 * math.sqrt(max(m, 1)))))))


@INDEXES.register
class IvfIndex(_FaissIndex):
    """FAISS inverted-file index (``IndexIVFScalarQuantizer`` or ``IndexIVFFlat``): approximate, ``nlist`` cells,
    ``nprobe`` scanned.

    ``nlist`` defaults to ``4 * sqrt(m)`` rounded to a power of two (and at most ``m / 39``, so that
    every cell gets 39 training points, FAISS's minimum), trained on at most ``train_per_list *
    nlist`` sampled base vectors (seeded).  ``nprobe`` defaults to 32 (16 with ``storage="flat"``, before
    the 8-bit cells).

    Why these defaults: a query scans ``nprobe / nlist`` of the base, ``nprobe / (4 sqrt(m))``, so the
    cost of a query grows like ``sqrt(m)`` (``m`` for exact search) while the cells stay large
    enough to hold a whole neighbourhood.  On the 20K x 20K clustered 64-d pair of
    tests/test_approx_csls.py (nlist 512, 3% of the base scanned) CSLS top-10 over this index has
    recall@10 0.997 against exact CSLS (0.998 at nprobe 32, 0.999 at 64, for 1.1x and 1.5x the
    time).  On nearly structureless data (member spread 1.5, noise 0.8: clusters drowned) the
    same settings give 0.78 (nprobe 64: 0.91): pass a larger ``nprobe`` to ``knn`` / ``csls_topk``
    when embeddings have little cluster structure, or use ``hnsw``.

    ``storage``: how the cells hold the base vectors.  ``"sq8"`` (default): FAISS's 8-bit scalar
    quantiser (``IndexIVFScalarQuantizer``, one byte a dimension, per-dimension ranges), a quarter of
    the memory traffic of a cell scan; the ``k`` found ids are then **re-scored exactly** against the
    float32 base this index keeps anyway (one ``(k, d)`` gather a query), so the scores it returns are
    exact cosines and only the candidate choice is approximate.  ``"flat"``: float32 cells
    (``IndexIVFFlat``), the scores as FAISS computes them.  Measured on the 1M synthetic pair's
    label-propagation embeddings (529K targets x 512-d, nlist 4096, 20,000 sampled queries, 2 cores):
    flat at nprobe 16 searched in 6.6 s (top-1 equal to the exact top-1 for 0.755, recall@10 0.622), sq8
    at nprobe 32 in 7.2 s (0.805, 0.673), sq8 at 16 in 4.3 s; the cell scan is memory-bound, so a byte a
    dimension buys twice the cells for the same time.
    """

    exact = False
    STORAGE = ("sq8", "flat")

    def __init__(self, nlist: int | None = None, nprobe: int = IVF_NPROBE, train_per_list: int = 40, seed: int = 0,
                 storage: str = "sq8", **kw):
        super().__init__(**kw)
        if storage not in self.STORAGE:
            raise MmeaInputError(f"unknown IVF storage {storage!r}; valid choices: {', '.join(self.STORAGE)}")
        self.nlist, self.nprobe, self.train_per_list, self.seed = nlist, int(nprobe), int(train_per_list), seed
        self.storage = storage

    def _make(self, d):
        import faiss

        m = len(self.base)
        self.nlist = int(min(default_nlist(m) if self.nlist is None else self.nlist, m))
        self._quantizer = faiss.IndexFlatIP(d)
        if self.storage == "sq8":
            return faiss.IndexIVFScalarQuantizer(self._quantizer, d, self.nlist, faiss.ScalarQuantizer.QT_8bit,
                                                 faiss.METRIC_INNER_PRODUCT)
        return faiss.IndexIVFFlat(self._quantizer, d, self.nlist, faiss.METRIC_INNER_PRODUCT)

    def _train(self, index, base):
        n_train = min(len(base), self.train_per_list * self.nlist)
        rng = np.random.default_rng(self.seed)
        sample = base if n_train == len(base) else base[np.sort(rng.choice(len(base), n_train, replace=False))]
        index.train(sample)
        index.nprobe = min(self.nprobe, self.nlist)

    def _search(self, queries, k):
        scores, ids = self._faiss_search(queries, k)  # (n, k); -1: a slot the scanned cells could not fill
        if self.storage == "flat":
            return scores, ids
        return exact_scores(self.base, queries, ids), ids

    def candidates(self, queries, k):
        """The cells' top-``k`` ids as FAISS found them (8-bit order): the caller re-scores them anyway."""
        return self._faiss_search(as_float32(queries, "queries"), min(int(k), len(self.base)))[1].astype(np.int64)


def exact_scores(base: np.ndarray, queries: np.ndarray, ids: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """``(n, k)`` float32 inner products ``queries[i] . base[ids[i, j]]`` (``-inf`` where ``ids`` is ``-1``),
    in chunks of ``chunk`` queries (one ``(chunk, k, d)`` gather at a time)."""
    import torch

    out = np.full(ids.shape, -np.inf, np.float32)
    b = torch.from_numpy(base)
    for s in range(0, len(ids), chunk):
        i = torch.from_numpy(np.ascontiguousarray(ids[s:s + chunk]))  # (c, k)
        q = torch.from_numpy(np.ascontiguousarray(queries[s:s + chunk]))  # (c, d)
        v = torch.bmm(b[i.clamp_min(0)], q[:, :, None])[:, :, 0]  # (c, k)
        out[s:s + chunk] = v.masked_fill(i < 0, -float("inf")).numpy()
    return out


@INDEXES.register
class HnswIndex(_FaissIndex):
    """FAISS HNSW graph (``IndexHNSWFlat``): approximate, ``hnsw_m`` links, ``ef_search`` beam."""

    exact = False

    def __init__(self, hnsw_m: int = 32, ef_search: int = 128, ef_construction: int = 80, **kw):
        super().__init__(**kw)
        self.hnsw_m, self.ef_search, self.ef_construction = int(hnsw_m), int(ef_search), int(ef_construction)

    def _make(self, d):
        import faiss

        index = faiss.IndexHNSWFlat(d, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        return index

    def _build(self, base):
        if self.device.startswith("cuda"):
            raise MmeaInputError("the hnsw index runs on the CPU only; use --index ivf or flat with --device cuda")
        super()._build(base)
        self.index.hnsw.efSearch = self.ef_search

    def _search(self, queries, k):
        self.index.hnsw.efSearch = max(self.ef_search, k)
        return self._faiss_search(queries, k)


def resolve_index(index: str, n: int, m: int, device: str = "cpu") -> str:
    """The index name ``index="auto"`` stands for, given ``n`` queries and ``m`` base vectors."""
    if index != "auto":
        INDEXES.get(index)  # raises with the valid choices
        return INDEXES._key(index)
    pairs = n * m
    if pairs <= TINY_PAIRS:
        return "torch"
    if pairs > APPROX_PAIRS:
        return "ivf"
    if str(device).startswith("cuda") and not faiss_has_gpu():
        return "torch"
    return "flat"


#: Tuning knobs of each index kind; ``make_index`` passes an index only its own.
INDEX_OPTIONS = {
    "ivf": ("nlist", "nprobe", "train_per_list", "seed", "storage"),
    "hnsw": ("hnsw_m", "ef_search", "ef_construction"),
}


def make_index(index: str, base: np.ndarray, *, n_queries: int, device: str = "cpu",
               block_size: int | None = None, progress: bool = False, **options) -> SearchIndex:
    """Resolve ``index`` (``auto`` by size) and build it on ``base``.

    Knobs of other index kinds (and ``None`` values) are ignored, so one option
    set can serve ``auto``; a knob no index knows is an error.
    """
    unknown = set(options) - {o for opts in INDEX_OPTIONS.values() for o in opts}
    if unknown:
        raise MmeaInputError(f"unknown search options: {sorted(unknown)}")
    name = resolve_index(index, n_queries, len(base), device)
    own = {k: v for k, v in options.items() if k in INDEX_OPTIONS.get(name, ()) and v is not None}
    return INDEXES.get(name)(device=device, block_size=block_size, progress=progress, **own).build(base)


def knn(queries: Any, base: Any, k: int, *, index: str = "auto", device: str = "cpu",
        normalize: bool = True, block_size: int | None = None, nlist: int | None = None,
        nprobe: int | None = None, hnsw_m: int | None = None, ef_search: int | None = None,
        ef_construction: int | None = None, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` base rows by cosine for each query.

    Args:
        queries: ``(n, d)``; base: ``(m, d)``.  L2-normalised first unless
            ``normalize=False`` (then scores are raw inner products).
        k: neighbours per query, capped at ``m``.
        index: ``auto``, ``torch``, ``flat``, ``ivf`` or ``hnsw`` (see the module doc).
        device: ``cpu`` or ``cuda`` (faiss-gpu for ``flat``/``ivf``; ``torch`` works on any CUDA build).
        block_size: query rows per score block of the exact paths.
        nlist, nprobe: IVF cells and cells scanned per query.
        hnsw_m, ef_search, ef_construction: HNSW degree and beam widths.
        progress: a "search" bar over the query blocks (``torch`` index) when stderr is a terminal.

    Returns:
        ``scores (n, k)`` float32 and ``ids (n, k)`` int64, each row by score
        descending then id ascending; ``-1`` / ``-inf`` where an approximate
        index found fewer than ``k``.
    """
    prep = l2_normalize if normalize else as_float32
    q, b = prep(queries, "queries"), prep(base, "base vectors")
    idx = make_index(index, b, n_queries=len(q), device=device, block_size=block_size, nlist=nlist,
                     nprobe=nprobe, hnsw_m=hnsw_m, ef_search=ef_search, ef_construction=ef_construction,
                     progress=progress)
    return idx.search(q, k)
