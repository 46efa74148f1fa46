"""The maths of the relational graph encoder (``relational-gnn``), testable without the network.

Papers: Mao, Wang, Xu, Wu, Lan, "Relational Reflection Entity Alignment" (RREA), CIKM 2020;
Mao, Wang, Xu, Lan, Wu, "Boosting the Speed of Entity Alignment 10x: Dual Attention Matching
Network with Normalized Hard Sample Mining" (Dual-AMN), WWW 2021.

- :func:`union_graph` puts both KGs in one graph: source entities ``0..N-1``, target entities
  ``N..N+M-1``; the relations of the two KGs stay distinct (source ``0..R1-1``, target
  ``R1..R1+R2-1``, ``R = R1 + R2``).  A triple ``(h, r, t)`` gives two directed edges,
  ``t -> h`` with relation ``r`` (an out-relation of ``h``) and ``h -> t`` with ``r + R`` (its
  inverse, an in-relation of ``t``); with ``self_loops``, every entity has a self loop with relation ``2R``.
  Repeated ``(receiver, sender, relation)`` edges are kept once.
- :func:`reflect`: RREA's relational reflection ``M_r h = h - 2 (r^T h) r`` (``r`` unit-norm):
  an orthogonal map, so the norms and relative distances of neighbour features are kept.
- :func:`segment_softmax`: the attention ``alpha_ij = exp(a_ij) / sum_{k in N(i)} exp(a_ik)``
  over each receiver's incoming edges (a scatter over the edge list, no dense ``N x N``).
- :func:`normalized_hard_loss`: Dual-AMN's normalised hard-sample loss, written for one
  direction of a batch of seed pairs: for a pair ``(a, b)`` and candidate negatives ``n``,
  ``x_n = gamma + d(a, b) - d(a, n)`` (``d`` the squared Euclidean distance), standardised over
  the row's negatives with constant (stop-gradient) mean and standard deviation,
  ``z_n = (x_n - mean_n x) / std_n x``, and the row's loss is ``logsumexp_n(lambda * z_n)``.
  The model adds the loss of both directions (anchor ``a`` against target negatives, anchor
  ``b`` against source negatives).  :func:`mined_negatives` finds the hardest negatives and the
  statistics over all of them without gradient, so that the gradient pass can use a few.
- :class:`EdgePattern`, :func:`edge_spmm`, :func:`edge_dot`: the two edge-list products of a layer,
  ``out_i = sum_{e: row_e = i} v_e x_{col_e}`` and ``s_e = a_{row_e}^T b_{col_e}``, as sparse CSR kernels
  with their gradients (each the other one): no ``(E, d)`` tensor of gathered rows is ever made.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

# CSR tensors (EdgePattern) warn once that their support is "beta": their use here is tested against gathered rows
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
# torch 2.11 warns "Sparse invariant checks are implicitly disabled" even when a constructor passes
# check_invariants explicitly, as every one here does (pytorch/pytorch#178274, fixed in later releases);
# seen on the CUDA build of a lent H200 (docs/relational_gnn.md "The GPU path")
warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled", category=UserWarning)

__all__ = ["union_graph", "reflect", "segment_softmax", "EdgePattern", "edge_spmm", "edge_dot", "normalized_hard_loss",
           "row_stats", "mined_negatives", "squared_distances", "hardest_negatives", "scan_stats", "candidate_moments",
           "candidate_stats"]


def union_graph(src_triples: np.ndarray, tgt_triples: np.ndarray, n_src: int, n_tgt: int, r_src: int,
                r_tgt: int, self_loops: bool = True) -> dict:
    """Both KGs as one edge list: ``receivers (E,)``, ``senders (E,)``, ``relations (E,)`` int64,
    ``num_entities = N + M``, ``num_relations = 2R + 1`` (out-relations, in-relations, self loop; without
    ``self_loops`` the loop edges are left out, as in Dual-AMN's attention graph, and relation ``2R`` is unused).

    The arrays are sorted by receiver, then sender, then relation.
    """
    s = np.asarray(src_triples, dtype=np.int64).reshape(-1, 3)
    t = np.asarray(tgt_triples, dtype=np.int64).reshape(-1, 3) + np.array([n_src, r_src, n_src])
    tri = np.concatenate([s, t])  # (T, 3) in the union id space
    n, big_r = n_src + n_tgt, r_src + r_tgt
    loops = np.arange(n if self_loops else 0, dtype=np.int64)
    recv = np.concatenate([tri[:, 0], tri[:, 2], loops])  # (2T + n,)
    send = np.concatenate([tri[:, 2], tri[:, 0], loops])
    rel = np.concatenate([tri[:, 1], tri[:, 1] + big_r, np.full(len(loops), 2 * big_r, dtype=np.int64)])
    edges = np.unique(np.stack([recv, send, rel], 1), axis=0)  # (E, 3) sorted, repeats once
    return {"receivers": edges[:, 0].copy(), "senders": edges[:, 1].copy(), "relations": edges[:, 2].copy(),
            "num_entities": int(n), "num_relations": int(2 * big_r + 1), "num_triples": int(len(tri))}


def receiver_indptr(receivers: np.ndarray, n: int) -> np.ndarray:
    """``(n + 1,)`` CSR offsets of edges sorted by receiver: node ``i``'s in-edges are ``indptr[i]:indptr[i + 1]``."""
    return np.r_[0, np.cumsum(np.bincount(receivers, minlength=n))].astype(np.int64)


def _all_edges(indptr: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Every in-edge id of ``nodes``."""
    start, deg = indptr[nodes], indptr[nodes + 1] - indptr[nodes]
    return np.repeat(start - np.cumsum(deg) + deg, deg) + np.arange(int(deg.sum()))


def sampled_subgraph(indptr: np.ndarray, senders: np.ndarray, seeds: np.ndarray, fanout: int, hops: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour sampling (GraphSAGE, Hamilton et al., NeurIPS 2017): ``(nodes (S,) sorted, edges (K,) sorted)``.

    From ``seeds``, ``hops`` times: each frontier node keeps all its in-edges when it has at most
    ``fanout``, else ``fanout`` drawn uniformly with replacement (repeats merged); the senders not seen
    yet are the next frontier.  A seed's ``hops``-layer output then depends on sampled edges only, and
    the cost of a step is bounded by ``seeds x fanout^hops`` edges whatever the graph's size.
    """
    nodes = np.unique(np.asarray(seeds, np.int64))
    frontier, found = nodes, []
    for _ in range(hops):
        if not len(frontier):
            break
        deg = indptr[frontier + 1] - indptr[frontier]
        small = deg <= fanout
        big = frontier[~small]
        draws = (rng.random((len(big), fanout)) * deg[~small][:, None]).astype(np.int64)  # (b, fanout) offsets
        e = np.unique(np.concatenate([_all_edges(indptr, frontier[small]), (indptr[big][:, None] + draws).ravel()]))
        found.append(e)
        frontier = np.setdiff1d(senders[e], nodes, assume_unique=False)
        nodes = np.union1d(nodes, frontier)
    edges = np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)
    return nodes, edges


def reflect(h: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``h - 2 (r^T h) r`` row by row: ``h (E, d)``, ``r (E, d)`` unit rows -> ``(E, d)``."""
    return h - 2.0 * (h * r).sum(-1, keepdim=True) * r


def segment_softmax(logits: torch.Tensor, segments: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Softmax of ``logits (E,)`` within each segment id of ``segments (E,)`` (the receivers)."""
    top = torch.full((num_segments,), float("-inf"), dtype=logits.dtype, device=logits.device)
    top = top.scatter_reduce(0, segments, logits.detach(), reduce="amax", include_self=True)  # (S,)
    e = torch.exp(logits - top[segments])  # (E,)
    den = torch.zeros(num_segments, dtype=logits.dtype, device=logits.device).index_add_(0, segments, e)
    return e / den.index_select(0, segments)


class EdgePattern:
    """The CSR structure of a sparse ``(rows x cols)`` matrix with one entry per edge ``(row_e, col_e)``, in both
    orientations, for :func:`edge_spmm` / :func:`edge_dot` (repeated ``(row, col)`` entries are allowed: they add).

    Why not a library op: ``torch.sparse.mm`` has no fast gradient for the values of a CSR matrix, and
    gathering ``x[cols]`` as an ``(E, d)`` tensor costs more than the products themselves (on DBP15k's 370K
    edges x 64: 0.45 s a gather-and-dot against 0.01-0.05 s for the CSR kernels on 2 cores).  Edge values
    stay in edge order for the caller; ``order`` / ``t_order`` put them in CSR order.
    """

    def __init__(self, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int], device="cpu"):
        rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
        order = np.lexsort((cols, rows))  # (E,) edge ids in (row, col) order
        t_order = order[np.lexsort((rows[order], cols[order]))]  # (E,) edge ids in (col, row) order
        as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
        self.shape = (int(shape[0]), int(shape[1]))
        self.order, self.t_order = as_t(order), as_t(t_order)
        self.crow = as_t(np.r_[0, np.cumsum(np.bincount(rows, minlength=shape[0]))])  # (rows + 1,)
        self.col = as_t(cols[order])
        self.t_crow = as_t(np.r_[0, np.cumsum(np.bincount(cols, minlength=shape[1]))])  # (cols + 1,)
        self.t_col = as_t(rows[t_order])
        self._zeros = None

    def __len__(self) -> int:
        return len(self.order)

    def matrix(self, values: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """The sparse CSR matrix with ``values (E,)`` (edge order) at the edges: ``(rows, cols)`` or its transpose."""
        if transpose:
            return torch.sparse_csr_tensor(self.t_crow, self.t_col, values[self.t_order], self.shape[::-1],
                                           check_invariants=False)
        return torch.sparse_csr_tensor(self.crow, self.col, values[self.order], self.shape, check_invariants=False)

    def sampled_dot(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``(E,)`` in edge order: ``a_{row_e}^T b_{col_e}`` for ``a (rows, d)``, ``b (cols, d)``; no gradient."""
        if len(self) > self.shape[0] * self.shape[1]:  # more entries than cells (repeats): torch's kernel refuses
            rows = torch.repeat_interleave(torch.arange(self.shape[0], device=a.device), self.crow.diff())
            vals = (a[rows] * b[self.col]).sum(-1)
            return torch.empty_like(vals).index_copy_(0, self.order, vals)
        if self._zeros is None or self._zeros.dtype != a.dtype:
            self._zeros = torch.zeros(len(self), dtype=a.dtype, device=a.device)
        pattern = torch.sparse_csr_tensor(self.crow, self.col, self._zeros, self.shape, check_invariants=False)
        vals = torch.sparse.sampled_addmm(pattern, a.contiguous(), b.T, beta=0.0).values()  # (E,) CSR order
        return torch.empty_like(vals).index_copy_(0, self.order, vals)


class _EdgeSpmm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values, x, pattern):
        ctx.save_for_backward(values, x)
        ctx.pattern = pattern
        return pattern.matrix(values) @ x

    @staticmethod
    def backward(ctx, grad):
        values, x = ctx.saved_tensors
        p = ctx.pattern
        g_values = p.sampled_dot(grad, x) if ctx.needs_input_grad[0] else None  # (E,): g_{row_e}^T x_{col_e}
        g_x = p.matrix(values, transpose=True) @ grad if ctx.needs_input_grad[1] else None  # (cols, d)
        return g_values, g_x, None


class _EdgeDot(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, pattern):
        ctx.save_for_backward(a, b)
        ctx.pattern = pattern
        return pattern.sampled_dot(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        p = ctx.pattern
        g_a = p.matrix(grad) @ b if ctx.needs_input_grad[0] else None  # (rows, d): sum_e g_e b_{col_e}
        g_b = p.matrix(grad, transpose=True) @ a if ctx.needs_input_grad[1] else None  # (cols, d)
        return g_a, g_b, None


def edge_spmm(pattern: EdgePattern, values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``out_i = sum_{e: row_e = i} values_e x_{col_e}``: ``values (E,)``, ``x (cols, d)`` -> ``(rows, d)``,
    differentiable in both (the gradient of ``values`` is :meth:`EdgePattern.sampled_dot` of the output's)."""
    return _EdgeSpmm.apply(values, x, pattern)


def edge_dot(pattern: EdgePattern, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``s_e = a_{row_e}^T b_{col_e}``: ``a (rows, d)``, ``b (cols, d)`` -> ``(E,)``, differentiable in both."""
    return _EdgeDot.apply(a, b, pattern)


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||a_i - b_j||^2``: ``a (B, d)``, ``b (K, d)`` -> ``(B, K)``."""
    return (a * a).sum(-1, keepdim=True) + (b * b).sum(-1)[None, :] - 2.0 * a @ b.T


def normalized_hard_loss(pos: torch.Tensor, neg: torch.Tensor, mask: torch.Tensor | None = None, *,
                         gamma: float = 1.0, lamb: float = 30.0,
                         stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Mean over rows of ``logsumexp_n(lambda * (x_n - mean x) / std x)``, ``x_n = gamma + pos - neg_n``.

    Args:
        pos: ``(B,)`` distances of the seed pairs.
        neg: ``(B, K)`` distances of each row's anchor to its candidate negatives.
        mask: ``(B, K)`` bool, the entries that count (default: all); the mean and the standard
            deviation (population, as Keras' ``K.std``) are over these entries and held constant
            (no gradient), as in Dual-AMN.
        stats: ``(mean (B, 1), std (B, 1))`` to use instead: the statistics of the row's full
            candidate set when ``neg`` holds only its hardest (mined) part, see :func:`row_stats`.
    """
    x = gamma + pos[:, None] - neg  # (B, K)
    if mask is None:
        mask = torch.ones_like(x, dtype=torch.bool)
    if stats is None:
        stats = row_stats(x.detach(), mask)
    mean, std = stats
    z = lamb * (x - mean) / std
    z = z.masked_fill(~mask, float("-inf"))
    return torch.logsumexp(z, dim=-1).mean()


def row_stats(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean (B, 1), std (B, 1))`` of ``x (B, K)`` over the ``mask``ed entries of each row, no gradient
    (population standard deviation, at least ``1e-6``)."""
    x = x.detach()
    w = mask.to(x.dtype)
    cnt = w.sum(-1, keepdim=True).clamp_min(1.0)  # (B, 1)
    mean = (x * w).sum(-1, keepdim=True) / cnt
    std = (((x - mean) ** 2 * w).sum(-1, keepdim=True) / cnt).sqrt().clamp_min(1e-6)
    return mean, std


def hardest_negatives(anchor: torch.Tensor, cands: torch.Tensor, excluded: torch.Tensor, k: int, *,
                      block: int = 8192, sums: bool = False):
    """``(B, k)`` positions in ``cands (K, d)`` of the ``k`` nearest candidates of each ``anchor (B, d)`` row
    (squared Euclidean), leaving out ``excluded (B, P)``; no gradient.

    The nearest are the largest ``2 a^T c_n - ||c_n||^2``.  The candidates are scanned in blocks of
    ``block`` rows with a running top-k (each block's top-k merged into the kept one), so memory is
    ``B x (block + k)``, never ``B x K``.  With ``sums``, also ``(sum_n d_n, sum_n d_n^2)`` (``(B,)`` float64 each)
    over every candidate but the excluded ones, accumulated during the same scan (what :func:`scan_stats` needs).
    """
    with torch.no_grad():
        k = min(int(k), len(cands) - excluded.shape[1])
        best_s = anchor.new_full((len(anchor), 0), float("-inf"))  # (B, <=k)
        best_i = torch.zeros((len(anchor), 0), dtype=torch.long, device=anchor.device)
        aa = (anchor * anchor).sum(-1, keepdim=True)  # (B, 1)
        s1 = torch.zeros(len(anchor), dtype=torch.float64, device=anchor.device)
        s2 = torch.zeros_like(s1)
        for i in range(0, len(cands), block):
            c = cands[i:i + block]  # (b, d)
            s = torch.addmm((c * c).sum(-1)[None, :], anchor, c.T, beta=-1.0, alpha=2.0)  # (B, b)
            if sums:
                d = aa - s  # (B, b) squared distances
                s1 += d.sum(1, dtype=torch.float64)
                s2 += (d * d).sum(1, dtype=torch.float64)
            inside = (excluded >= i) & (excluded < i + len(c))  # (B, P)
            rows = torch.arange(len(anchor), device=anchor.device)[:, None].expand_as(excluded)
            s[rows[inside], excluded[inside] - i] = float("-inf")  # the partner (and the anchor) are no negatives
            top = torch.topk(s, min(k, s.shape[1]), dim=1)
            merged_s = torch.cat([best_s, top.values], 1)  # (B, <=2k)
            merged_i = torch.cat([best_i, top.indices + i], 1)
            keep = torch.topk(merged_s, min(k, merged_s.shape[1]), dim=1).indices
            best_s, best_i = merged_s.gather(1, keep), merged_i.gather(1, keep)
        if not sums:
            return best_i
        d_p = ((anchor[:, None, :] - cands[excluded]) ** 2).sum(-1).double()  # (B, P) the excluded, left out
        return best_i, (s1 - d_p.sum(1), s2 - (d_p ** 2).sum(1))


def scan_stats(sums: tuple[torch.Tensor, torch.Tensor], count: int, pos: torch.Tensor, *,
               gamma: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean (B, 1), std (B, 1))`` of ``x_n = gamma + pos - d_n`` from the row sums ``(sum d, sum d^2)`` of
    :func:`hardest_negatives` over ``count`` candidates (population std, at least ``1e-6``); no gradient."""
    s1, s2 = sums
    mean_d = s1 / count
    var_d = (s2 / count - mean_d ** 2).clamp_min(0.0)
    mean = (gamma + pos.detach().double() - mean_d)[:, None]
    return mean.to(pos.dtype), var_d.sqrt().clamp_min(1e-6)[:, None].to(pos.dtype)


def candidate_moments(cands: torch.Tensor) -> tuple:
    """What :func:`candidate_stats` needs of ``cands (K, d)``, once per step: ``(mu (d,), c^T c (d, d),
    sum C, sum C^2, sum_n C_n c'_n (d,), K)`` of the candidates centred on their mean ``mu`` (``C_n = ||c'_n||^2``);
    no gradient.  Both directions of a step that ranks against the same candidates share it."""
    with torch.no_grad():
        mu = cands.mean(0)  # (d,)
        c = cands - mu  # (K, d)
        cs = (c * c).sum(-1)  # (K,)
        return mu, c.T @ c, cs.sum(), (cs ** 2).sum(), (cs[:, None] * c).sum(0), len(c)


def candidate_stats(anchor: torch.Tensor, cands: torch.Tensor, excluded: torch.Tensor, pos: torch.Tensor, *,
                    gamma: float = 1.0, moments: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean (B, 1), std (B, 1))`` of ``x_n = gamma + pos - d(a, n)`` over every candidate but ``excluded``,
    in closed form (no ``B x K`` pass); no gradient.  ``moments``: :func:`candidate_moments` of ``cands`` if known.

    With the candidates centred (``c'_n = c_n - mu``, ``a' = a - mu``; distances do not change), ``A = ||a'||^2``,
    ``C_n = ||c'_n||^2``, ``g_n = a'^T c'_n`` and ``sum_n c'_n = 0``:
    ``sum_n d_n = K A + sum C`` and
    ``sum_n d_n^2 = K A^2 + sum C^2 + 4 a'^T (c'^T c') a' + 2 A sum C - 4 a'^T sum_n C_n c'_n``,
    less the excluded candidates' terms.  Centring keeps float32 accurate (the uncentred sums cancel).
    """
    with torch.no_grad():
        mu, gram, cs_sum, cs2_sum, ccs, k = moments if moments is not None else candidate_moments(cands)
        a = anchor - mu  # (B, d)
        aa = (a * a).sum(-1)  # (B,)
        s1 = k * aa + cs_sum
        s2 = k * aa ** 2 + cs2_sum + 4.0 * ((a @ gram) * a).sum(-1) + 2.0 * aa * cs_sum - 4.0 * a @ ccs
        d_p = ((anchor[:, None, :] - cands[excluded]) ** 2).sum(-1)  # (B, P) the excluded distances, left out
        n = k - excluded.shape[1]
        mean_d = (s1 - d_p.sum(1)) / n
        var_d = ((s2 - (d_p ** 2).sum(1)) / n - mean_d ** 2).clamp_min(0.0)
        mean = (gamma + pos.detach() - mean_d)[:, None]  # (B, 1)
        std = var_d.sqrt().clamp_min(1e-6)[:, None]  # (B, 1)
    return mean, std


def mined_negatives(anchor: torch.Tensor, cands: torch.Tensor, partner: torch.Tensor, pos: torch.Tensor, k: int,
                    *, gamma: float = 1.0, block: int = 8192
                    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """The ``k`` hardest negatives of each row and the statistics of the row over *all* candidates.

    ``anchor (B, d)``, ``cands (K, d)`` every candidate, ``partner (B,)`` or ``(B, P)`` the
    positions in ``cands`` that are no negatives of the row (its partner; the anchor itself when the
    candidates include its own KG), ``pos (B,)`` the pair distances.
    Returns ``(ids (B, k)`` positions in ``cands`` of the smallest distances (:func:`hardest_negatives`),
    ``(mean, std))`` of ``x_n = gamma + pos - d(a, n)`` over every other candidate, from the sums of the
    same scan (:func:`scan_stats`); no gradient.
    """
    excluded = partner.reshape(len(anchor), -1)  # (B, P)
    ids, sums = hardest_negatives(anchor, cands, excluded, k, block=block, sums=True)
    return ids, scan_stats(sums, len(cands) - excluded.shape[1], pos, gamma=gamma)
