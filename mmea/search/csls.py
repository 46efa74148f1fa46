"""Cross-domain similarity local scaling (CSLS) without an ``n x m`` matrix.

CSLS (Conneau, Lample, Ranzato, Denoyer & Jégou, "Word Translation Without
Parallel Data", ICLR 2018, eq. 6) penalises hubs, entities close to
everything::

    csls(x, y) = 2 cos(x, y) - r_T(x) - r_S(y)
    r_T(x) = 1/k  sum_{y' in N_T(x)} cos(x, y')   (mean cosine of x's k nearest targets)
    r_S(y) = 1/k  sum_{x' in N_S(y)} cos(x', y)   (mean cosine of y's k nearest sources)

``r_src`` below is ``r_T`` (one value per source row) and ``r_tgt`` is ``r_S``
(one per target row); both are computed over the rows given, i.e. over the
candidate sets, never over gold labels.  Every path evaluates the score as the
float32 expression ``(2 * cos - r_src) - r_tgt`` (:func:`csls_from_cos`), so
all paths agree bit for bit when their cosines do.

**Exact path** (``index`` ``auto``/``torch``): one blockwise pass, in the
manner of faiss contrib's ``knn_ground_truth`` (a result heap merged block by
block).  Each ``(block, m)`` cosine block gives, at once, the rows' top-K
cosine candidates and ``r_src``, and is merged into a running column top-k
that yields ``r_tgt``.  The candidates are then re-ranked by CSLS.  A target
``y`` outside a row's K candidates has ``cos(x, y) <= c_K(x)`` (the K-th
cosine), hence ``csls(x, y) <= 2 c_K(x) - r_src(x) - r_tgt(y)``; only targets
with ``r_tgt(y) <= tau(x) = 2 c_K(x) - r_src(x) - s_t(x)`` (``s_t`` = the t-th
best candidate CSLS, plus a rounding margin) could enter the top-t, so those
few rows are rescored against exactly those targets.  The result equals the
dense computation (:func:`csls_dense`) while computing each cosine once.

**FAISS paths** (``flat``, ``ivf``, ``hnsw``): top-K of each source in a target
index gives candidates and ``r_src``; top-k of each target in a source index
gives ``r_tgt``; then the same re-ranking (with the exactness check for
``flat``; approximate indexes re-rank what they found).

**Ties** are broken by the lower target index everywhere, so a ranking is the
order (score desc, index asc) and the rank of a gold target is
``1 + #{j: s_j > s_g} + #{j: s_j = s_g, j < g}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..errors import MmeaInputError
from ..progress import progress_bar
from .knn import (BLOCK_ELEMENTS, _check_device, as_float32, l2_normalize, make_index, order_by_score_then_index,
                  resolve_index, row_block_size, topk_rows)

__all__ = [
    "SearchResult",
    "list_positions",
    "csls_from_cos",
    "csls_radius",
    "csls_topk",
    "rank_of_targets",
    "csls_dense",
    "dense_topk",
    "dense_ranks",
    "mean_topk_np",
]

METHODS = ("cos", "csls")


@dataclass
class SearchResult:
    """Ranked target candidates for each source row.

    Attributes:
        ids: ``(n, topk)`` int64 target rows, best first (``-1`` where an
            approximate index found fewer).
        cos: ``(n, topk)`` float32 cosines of those pairs.
        csls: ``(n, topk)`` float32 CSLS scores of those pairs.
        r_src: ``(n,)`` float32 ``r_T``: mean cosine of each source's ``csls_k`` nearest targets.
        r_tgt: ``(m,)`` float32 ``r_S``: mean cosine of each target's ``csls_k`` nearest sources.
        method: ``"csls"`` or ``"cos"``, the score that ordered ``ids``.
        exact: whether the ranking is exact (False for IVF / HNSW).
        index: the index that produced it.
        stats: counters (e.g. rows rescored by the exactness check).
        reverse_best: ``(m,)`` best source row of each target under the same
            score (``csls_topk(..., reverse=True)``), for mutual-NN flags; else ``None``.
    """

    ids: np.ndarray
    cos: np.ndarray
    csls: np.ndarray
    r_src: np.ndarray
    r_tgt: np.ndarray
    method: str = "csls"
    csls_k: int = 10
    exact: bool = True
    index: str = "torch"
    stats: dict = field(default_factory=dict)
    reverse_best: np.ndarray | None = None

    @property
    def scores(self) -> np.ndarray:
        """``(n, topk)``: the ranking score (``csls`` or ``cos``)."""
        return self.csls if self.method == "csls" else self.cos

    @property
    def topk(self) -> int:
        return self.ids.shape[1]

    def __len__(self) -> int:
        return len(self.ids)


def list_positions(ids: np.ndarray, rows: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """``(n,)`` 1-based position of ``gold[i]`` in candidate list ``ids[rows[i]]`` (``ids (p, K)``); ``-1`` when
    it is not in it."""
    hit = np.asarray(ids)[rows] == np.asarray(gold)[:, None]  # (n, K)
    return np.where(hit.any(1), hit.argmax(1) + 1, -1).astype(np.int64)


def csls_from_cos(cos, r_src, r_tgt):
    """``(2 * cos - r_src) - r_tgt`` elementwise (numpy or torch, broadcasting), in float32."""
    return 2 * cos - r_src - r_tgt


def mean_topk_np(vals: np.ndarray, axis: int = 1) -> np.ndarray:
    """Mean of (already selected) top-k values: float64 sum / k, as float32."""
    k = vals.shape[axis]
    return (vals.astype(np.float64).sum(axis=axis) / max(k, 1)).astype(np.float32)


def _mean_topk_t(vals, dim: int = 1):
    k = vals.shape[dim]
    return (vals.double().sum(dim=dim) / max(k, 1)).float()


def _prepare(src, tgt, normalize: bool):
    prep = l2_normalize if normalize else as_float32
    s, t = prep(src, "source embeddings"), prep(tgt, "target embeddings")
    if s.shape[1] != t.shape[1]:
        raise MmeaInputError(f"source embeddings have dimension {s.shape[1]}, target embeddings {t.shape[1]}")
    if len(s) == 0 or len(t) == 0:
        raise MmeaInputError(f"nothing to search: {len(s)} source and {len(t)} target rows")
    return s, t


def _check_radius(r, n: int, what: str) -> np.ndarray:
    r = np.asarray(r, dtype=np.float32).reshape(-1)
    if len(r) != n:
        raise MmeaInputError(f"{what} has {len(r)} values for {n} rows")
    return r


# -- the fused exact pass ----------------------------------------------------------

def _fused_pass(src_t, tgt_t, K: int, csls_k: int, want_r_tgt: bool, bs: int, progress: bool = False,
                desc: str = "search"):
    """One blockwise pass: row top-K candidates, ``r_src`` and (optionally) ``r_tgt``.

    Returns torch ``cand_v (n, K)``, ``cand_i (n, K)``, ``r_src (n,)``, ``r_tgt (m,) | None``.
    ``progress``: a ``desc`` bar over the source rows, updated once per block.
    """
    import torch

    n, m = src_t.shape[0], tgt_t.shape[0]
    kc, ks = min(csls_k, m), min(csls_k, n)
    dev = src_t.device
    cand_v = torch.empty((n, K), dtype=torch.float32, device=dev)
    cand_i = torch.empty((n, K), dtype=torch.int64, device=dev)
    r_src = torch.empty((n,), dtype=torch.float32, device=dev)
    col = None  # (<= ks, m): running top cosines of each target column, merged block by block
    tgt_T = tgt_t.T
    # a short first block seeds the column top-k cheaply; later blocks only merge what beats it
    first = min(bs, max(8 * ks, 512)) if want_r_tgt else bs
    starts = [0] + list(range(first, n, bs))
    buf = torch.empty((min(bs, n), m), dtype=torch.float32, device=dev)  # reused: no page faults per block
    with progress_bar(total=n, progress=progress, desc=desc, unit="row", leave=False) as bar:
        for s, e in zip(starts, starts[1:] + [n]):
            S = torch.mm(src_t[s:e], tgt_T, out=buf[:e - s])  # (b, m)
            v, i = topk_rows(S, K)  # (b, K)
            cand_v[s:e], cand_i[s:e] = v, i
            r_src[s:e] = _mean_topk_t(v[:, :kc])
            if want_r_tgt:
                col = _merge_column_topk(col, S, ks)
            del S
            bar.update(e - s)
    r_tgt = _mean_topk_t(col, dim=0) if want_r_tgt else None
    return cand_v, cand_i, r_src, r_tgt


def _merge_column_topk(col, S, k: int):
    """Running top-``k`` values of each column, ``col (<= k, m)`` sorted descending, merged with block ``S (b, m)``.

    Once ``col`` is full only entries above a column's current k-th value can
    change it (ties leave the multiset of top values unchanged), so a cheap
    comparison finds them; they are stacked into a short ``(most, m)`` block
    (``most`` = the largest number of new entries of one column) and merged.
    A block with many new entries in one column falls back to ``topk`` along
    the columns.
    """
    import torch

    if col is None or col.shape[0] < k:
        cv = torch.topk(S, min(k, S.shape[0]), dim=0).values  # (<= k, m)
        if col is not None:
            cv = torch.topk(torch.cat([col, cv]), min(k, col.shape[0] + cv.shape[0]), dim=0).values
        return cv
    hit_r, hit_c = (S > col[-1][None, :]).nonzero(as_tuple=True)  # (h,) entries entering a column's top-k
    if len(hit_c) == 0:
        return col
    m = S.shape[1]
    counts = torch.bincount(hit_c, minlength=m)  # (m,)
    most = int(counts.max())
    if most > 8 * k:  # many new entries in some column: plain merge
        return torch.topk(torch.cat([col, torch.topk(S, min(k, S.shape[0]), dim=0).values]), k, dim=0).values
    order = _stable_argsort(hit_c)  # group the hits by column
    hit_r, hit_c = hit_r[order], hit_c[order]
    within = torch.arange(len(hit_c), device=S.device) - (torch.cumsum(counts, 0) - counts)[hit_c]
    pad = torch.full((most, m), -float("inf"), dtype=S.dtype, device=S.device)  # (most, m)
    pad[within, hit_c] = S[hit_r, hit_c]
    return torch.topk(torch.cat([col, pad]), k, dim=0).values


def _stable_argsort(x):
    """Stable argsort of a 1-d torch tensor (numpy on the CPU, where it is much faster)."""
    import torch

    if x.device.type == "cpu":
        return torch.from_numpy(np.argsort(x.numpy(), kind="stable"))
    return torch.argsort(x, stable=True)


def _rerank(src_t, tgt_t, cand_v, cand_i, r_src, r_tgt, topk: int, method: str, check: bool,
            budget: int) -> tuple[Any, Any, Any, dict]:
    """Top-``topk`` of each row among its candidates by ``method``; exact when ``check``.

    ``cand_v``/``cand_i`` ``(n, K)`` are each row's K best cosines (ids ``-1``
    for slots an approximate index left empty).  With ``check`` every row whose
    CSLS top-t could be beaten by a non-candidate (see the module doc) is
    rescored against the targets of low ``r_tgt`` that could do it.
    """
    import torch

    n, K = cand_v.shape
    m = tgt_t.shape[0]
    valid = cand_i >= 0
    safe_i = cand_i.clamp(min=0)
    cs = csls_from_cos(cand_v, r_src[:, None], r_tgt[safe_i])  # (n, K)
    cs = torch.where(valid, cs, torch.full_like(cs, -float("inf")))
    cv = torch.where(valid, cand_v, torch.full_like(cand_v, -float("inf")))
    key = cs if method == "csls" else cv
    o = order_by_score_then_index(key, torch.where(valid, cand_i, torch.full_like(cand_i, m)))[:, :topk]
    ids, cosv, cslsv = torch.gather(cand_i, 1, o), torch.gather(cv, 1, o), torch.gather(cs, 1, o)
    stats = {"candidates": K, "rescored_rows": 0, "rescored_pairs": 0}
    if method != "csls" or not check or K >= m:
        return ids, cosv, cslsv, stats

    s_t = cslsv[:, -1].double()  # (n,)
    c_K = cand_v[:, -1].double()
    rs = r_src.double()
    tau = 2 * c_K - rs - s_t
    tau = tau + 1e-5 * (1 + 2 * c_K.abs() + rs.abs() + s_t.abs())  # rounding margin (float32 ulps << 1e-5)
    r_sorted, r_order = torch.sort(r_tgt.double(), stable=True)
    n_danger = torch.searchsorted(r_sorted, tau, right=True)  # (n,) targets with r_tgt <= tau
    n_in = (r_tgt[safe_i].double() <= tau[:, None]).sum(1)
    rows = (n_danger > n_in).nonzero().flatten()
    if len(rows) == 0:
        return ids, cosv, cslsv, stats
    # rescore rows in chunks that share one prefix of the targets sorted by r_tgt
    rows = rows[torch.argsort(n_danger[rows], stable=True)]
    nd = n_danger[rows].tolist()
    pos = torch.full((m,), -1, dtype=torch.int64, device=cand_i.device)
    start = 0
    while start < len(rows):
        stop = start + 1
        while stop < len(rows) and (stop + 1 - start) * nd[stop] <= budget:
            stop += 1
        chunk = rows[start:stop]
        P = nd[stop - 1]
        cols = r_order[:P]  # (P,)
        S = src_t[chunk] @ tgt_t[cols].T  # (f, P)
        C = csls_from_cos(S, r_src[chunk][:, None], r_tgt[cols][None, :])  # (f, P)
        pos[cols] = torch.arange(P, device=pos.device)
        p = pos[cand_i[chunk]]  # (f, K): where each candidate sits in the prefix, -1 if absent
        fr, fc = (p >= 0).nonzero(as_tuple=True)
        C[fr, p[fr, fc]] = -float("inf")  # already among the candidates: keep one copy
        pos[cols] = -1
        all_cs = torch.cat([cs[chunk], C], 1)  # (f, K + P)
        all_i = torch.cat([cand_i[chunk], cols[None, :].expand(len(chunk), P)], 1)
        all_c = torch.cat([cv[chunk], S], 1)
        o = order_by_score_then_index(all_cs, all_i)[:, :topk]
        ids[chunk], cosv[chunk], cslsv[chunk] = (torch.gather(all_i, 1, o), torch.gather(all_c, 1, o),
                                                 torch.gather(all_cs, 1, o))
        stats["rescored_rows"] += len(chunk)
        stats["rescored_pairs"] += len(chunk) * P
        start = stop
    return ids, cosv, cslsv, stats


def _resolve_engine(index: str, n: int, m: int, device: str) -> str:
    """``auto`` -> the fused torch pass while exact search is affordable (it computes each cosine once,
    where FAISS would search both directions), IVF above :data:`~mmea.search.knn.APPROX_PAIRS`."""
    name = resolve_index(index, n, m, device)
    return "torch" if index == "auto" and name == "flat" else name


def _faiss_candidates(src, tgt, K: int, csls_k: int, r_given, index: str, device: str, block_size, params):
    """Candidates and radii from FAISS top-k in both directions (numpy in, numpy out)."""
    idx_t = make_index(index, tgt, n_queries=len(src), device=device, block_size=block_size, **params)
    cand_v, cand_i = idx_t.search(src, max(K, min(csls_k, len(tgt))))
    del idx_t
    if r_given is not None:
        return cand_v[:, :K], cand_i[:, :K], r_given[0], r_given[1]

    def masked_mean(v, i, k):
        v, i = v[:, :k], i[:, :k]
        ok = i >= 0
        return (np.where(ok, v, 0).astype(np.float64).sum(1) / np.maximum(ok.sum(1), 1)).astype(np.float32)

    r_src = masked_mean(cand_v, cand_i, min(csls_k, len(tgt)))
    idx_s = make_index(index, src, n_queries=len(tgt), device=device, block_size=block_size, **params)
    sv, si = idx_s.search(tgt, min(csls_k, len(src)))
    r_tgt = masked_mean(sv, si, min(csls_k, len(src)))
    return cand_v[:, :K], cand_i[:, :K], r_src, r_tgt


def csls_topk(src: Any, tgt: Any, topk: int = 10, *, csls_k: int = 10, method: str = "csls",
              index: str = "auto", device: str = "cpu", normalize: bool = True, block_size: int | None = None,
              rerank_k: int | None = None, radius: tuple[Any, Any] | None = None, reverse: bool = False,
              progress: bool = False, **index_params) -> SearchResult:
    """Top-``topk`` targets of each source by CSLS (or by cosine, with CSLS alongside).

    Args:
        src: ``(n, d)`` source rows; tgt: ``(m, d)`` candidate target rows.
        topk: candidates kept per source (capped at ``m``).
        csls_k: neighbourhood size ``k`` of ``r_T`` / ``r_S`` (default 10, as in the paper).
        method: ``"csls"`` (rank by CSLS) or ``"cos"``.
        index: ``auto``/``torch`` (fused exact pass), ``flat`` (FAISS exact), ``ivf``/``hnsw`` (approximate);
            ``auto`` switches to IVF above :data:`~mmea.search.knn.APPROX_PAIRS` pairs.
        device: ``cpu`` or ``cuda``.
        block_size: source rows per ``(block, m)`` score block (default: 128 MiB blocks).
        rerank_k: cosine candidates re-ranked per source (default ``max(50, 2 * topk)``).
        radius: precomputed ``(r_src, r_tgt)`` to reuse (e.g. the reverse direction).
        reverse: also find each target's best source under the same score
            (one more pass) and store it as ``reverse_best`` (for the ``mutual`` column).
        progress: a "search" bar over the source blocks (exact torch path) when stderr is a terminal.
        **index_params: ``nlist``, ``nprobe``, ``hnsw_m``, ``ef_search``, ``ef_construction``.
    """
    import torch

    if method not in METHODS:
        raise MmeaInputError(f"unknown similarity {method!r}; valid choices: {', '.join(METHODS)}")
    if int(topk) < 1 or int(csls_k) < 1:
        raise MmeaInputError(f"topk and csls_k must be >= 1, got {topk} and {csls_k}")
    device = _check_device(device)
    s, t = _prepare(src, tgt, normalize)
    n, m = len(s), len(t)
    topk = min(int(topk), m)
    K = min(m, max(int(rerank_k) if rerank_k else max(50, 2 * topk), topk, min(csls_k, m)))
    r_given = None
    if radius is not None:
        r_given = (_check_radius(radius[0], n, "r_src"), _check_radius(radius[1], m, "r_tgt"))
    name = _resolve_engine(index, n, m, device)
    bs = row_block_size(m, block_size)
    with torch.no_grad():
        src_t, tgt_t = torch.from_numpy(s).to(device), torch.from_numpy(t).to(device)
        if name == "torch":
            cand_v, cand_i, r_src, r_tgt = _fused_pass(src_t, tgt_t, K, csls_k, r_given is None, bs, progress)
            if r_given is not None:
                r_src, r_tgt = (torch.from_numpy(r).to(device) for r in r_given)
            exact = True
        else:
            cv, ci, rs, rt = _faiss_candidates(s, t, K, csls_k, r_given, name, device, block_size, index_params)
            cand_v, cand_i, r_src, r_tgt = (torch.from_numpy(np.ascontiguousarray(a)).to(device)
                                            for a in (cv, ci, rs, rt))
            exact = name == "flat"
        ids, cosv, cslsv, stats = _rerank(src_t, tgt_t, cand_v, cand_i, r_src, r_tgt, topk, method, exact,
                                          BLOCK_ELEMENTS)
    out = SearchResult(ids=ids.cpu().numpy(), cos=cosv.cpu().numpy(), csls=cslsv.cpu().numpy(),
                       r_src=r_src.cpu().numpy(), r_tgt=r_tgt.cpu().numpy(), method=method, csls_k=int(csls_k),
                       exact=exact, index=name, stats=stats)
    if reverse:
        back = csls_topk(t, s, 1, csls_k=csls_k, method=method, index=index, device=device, normalize=False,
                         block_size=block_size, rerank_k=rerank_k, radius=(out.r_tgt, out.r_src), progress=progress,
                         **index_params)
        out.reverse_best = back.ids[:, 0]
    return out


def csls_radius(src: Any, tgt: Any, k: int = 10, *, index: str = "auto", device: str = "cpu",
                normalize: bool = True, block_size: int | None = None, progress: bool = False,
                **index_params) -> tuple[np.ndarray, np.ndarray]:
    """``(r_src (n,), r_tgt (m,))``: mean cosine of each source's ``k`` nearest targets and vice versa.

    One blockwise pass computes both (exact paths; ``progress``: a "CSLS radii" bar over it);
    FAISS indexes search both directions.
    """
    import torch

    device = _check_device(device)
    s, t = _prepare(src, tgt, normalize)
    name = _resolve_engine(index, len(s), len(t), device)
    kc = min(int(k), len(t))
    if name != "torch":
        _, _, rs, rt = _faiss_candidates(s, t, kc, k, None, name, device, block_size, index_params)
        return rs, rt
    with torch.no_grad():
        src_t, tgt_t = torch.from_numpy(s).to(device), torch.from_numpy(t).to(device)
        _, _, rs, rt = _fused_pass(src_t, tgt_t, kc, int(k), True, row_block_size(len(t), block_size), progress,
                                   "CSLS radii")
    return rs.cpu().numpy(), rt.cpu().numpy()


def rank_of_targets(src: Any, tgt: Any, gold: Any, *, method: str | Sequence[str] = "csls",
                    r_src: Any = None, r_tgt: Any = None, csls_k: int = 10, device: str = "cpu",
                    normalize: bool = True, block_size: int | None = None, progress: bool = False):
    """Rank (1-based) of each source's gold target among all ``tgt`` rows, computed blockwise.

    ``rank_i = 1 + #{j : s_ij > s_ig} + #{j : s_ij = s_ig and j < g}`` with
    ``g = gold[i]``, i.e. the position of ``g`` in the (score desc, index asc)
    order that :func:`csls_topk` returns.

    Args:
        src: ``(n, d)`` query rows (one per gold link); tgt: ``(m, d)`` candidates.
        gold: ``(n,)`` index into ``tgt`` of each query's gold target.
        method: ``"cos"``, ``"csls"`` or a sequence of both (one pass; a dict is returned).
        r_src, r_tgt: CSLS radii of the query rows and of the candidates; computed
            from ``src``/``tgt`` with ``csls_k`` when not given.
        progress: an "evaluate" bar over the query blocks when stderr is a terminal.

    Returns:
        ``ranks (n,)`` int64, or ``{method: ranks}`` for a sequence of methods.
    """
    import torch

    methods = [method] if isinstance(method, str) else list(method)
    for mth in methods:
        if mth not in METHODS:
            raise MmeaInputError(f"unknown similarity {mth!r}; valid choices: {', '.join(METHODS)}")
    device = _check_device(device)
    s, t = _prepare(src, tgt, normalize)
    n, m = len(s), len(t)
    gold = np.asarray(gold, dtype=np.int64).reshape(-1)
    if len(gold) != n:
        raise MmeaInputError(f"{len(gold)} gold targets for {n} queries")
    if n and (gold.min() < 0 or gold.max() >= m):
        raise MmeaInputError(f"gold target index out of range [0, {m})")
    if "csls" in methods:
        if r_src is None or r_tgt is None:
            rs, rt = csls_radius(s, t, csls_k, device=device, normalize=False, block_size=block_size,
                                 progress=progress)
            r_src = rs if r_src is None else r_src
            r_tgt = rt if r_tgt is None else r_tgt
        r_src, r_tgt = _check_radius(r_src, n, "r_src"), _check_radius(r_tgt, m, "r_tgt")
    out = {mth: np.empty(n, np.int64) for mth in methods}
    bs = row_block_size(m, block_size)
    with torch.no_grad():
        tgt_T = torch.from_numpy(t).to(device).T
        col = torch.arange(m, device=device)
        rt_t = torch.from_numpy(r_tgt).to(device) if "csls" in methods else None
        buf = torch.empty((min(bs, n), m), dtype=torch.float32, device=device)
        with progress_bar(total=n, progress=progress, desc="evaluate", unit="row", leave=False) as bar:
            for a in range(0, n, bs):
                q = torch.from_numpy(s[a:a + bs]).to(device)
                S = torch.mm(q, tgt_T, out=buf[:len(q)])  # (b, m)
                g = torch.from_numpy(gold[a:a + bs]).to(device)[:, None]  # (b, 1)
                before = col[None, :] < g  # (b, m)
                for mth in methods:
                    X = S if mth == "cos" else csls_from_cos(S, torch.from_numpy(r_src[a:a + bs]).to(device)[:, None],
                                                             rt_t[None, :])
                    gv = torch.gather(X, 1, g)  # (b, 1)
                    r = 1 + (X > gv).sum(1) + ((X == gv) & before).sum(1)
                    out[mth][a:a + bs] = r.cpu().numpy()
                del S
                bar.update(len(q))
    return out[methods[0]] if isinstance(method, str) else out


# -- dense references (tests, tiny inputs) -----------------------------------------

def csls_dense(src: Any, tgt: Any, k: int = 10, *, normalize: bool = True) -> np.ndarray:
    """Dense ``(n, m)`` CSLS matrix in numpy: the reference the blockwise paths are tested against."""
    s, t = _prepare(src, tgt, normalize)
    S = s @ t.T  # (n, m)
    kc, ks = min(k, S.shape[1]), min(k, S.shape[0])
    r_src = mean_topk_np(-np.sort(-S, axis=1)[:, :kc], axis=1)  # (n,)
    r_tgt = mean_topk_np(-np.sort(-S, axis=0)[:ks, :], axis=0)  # (m,)
    return csls_from_cos(S, r_src[:, None], r_tgt[None, :]).astype(np.float32)


def dense_topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference top-k of a dense score matrix: (score desc, index asc) per row."""
    o = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, o, 1), o.astype(np.int64)


def dense_ranks(scores: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Reference ranks of ``gold`` columns under the tie rule of :func:`rank_of_targets`."""
    g = scores[np.arange(len(scores)), gold][:, None]
    before = np.arange(scores.shape[1])[None, :] < gold[:, None]
    return 1 + (scores > g).sum(1) + ((scores == g) & before).sum(1)
