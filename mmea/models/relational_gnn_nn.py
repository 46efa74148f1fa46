"""The torch network of ``relational-gnn``: relation-aware attention over both KGs' union graph.

Dual-AMN's encoder (Mao et al., WWW 2021; the reflection is RREA's, Mao et al., CIKM 2020).  Two views of every
entity, each with its own attention kernels:

- entity view: ``x_i = mean_{j in N(i) + i} e_j`` (learned entity embeddings ``e``, no names);
- entity-relation view: ``x_i = mean_{edges (i, j, r)} rel_r`` (the relations around ``i``).

From ``h^0 = tanh(x)`` each layer ``l = 1..L`` computes, over the edges ``(i <- j, r)`` of
:func:`~mmea.models.relational_gnn_math.union_graph` (inverse edges and self loops included):

    r_hat = rel_r / ||rel_r||
    m_ij  = h_j - 2 (r_hat^T h_j) r_hat                        (relational reflection)
    a_ij  = softmax_{j in N(i)} (k_l^T r_hat)                   (attention per relation)
    h^l_i = tanh(sum_j a_ij m_ij)

and a view's output is ``o = [h^0 | h^1 | ... | h^L]``.  With ``proxy`` (default, Dual-AMN's proxy matching),
each view then mixes in its difference to ``P = 64`` learned proxy vectors ``p_k``:

    beta  = softmax_k (o_hat^T p_hat_k)                         (o_hat, p_hat: unit vectors)
    o_p   = o - sum_k beta_k p_k
    g     = sigmoid(o_p W + b)                                  (W: (L+1) dim square, b: a bias)
    o'    = g * o + (1 - g) * o_p

The entity is ``o'`` of the entity view, then of the relation view: ``(N + M, 2 (L + 1) dim)``.  Messages are gathered and scattered over the edge list
(``index_add_``); the view inputs are sparse ``(n, n)`` / ``(n, 2R + 1)`` means.  ``forward(nodes, edges)``
runs the same layers on a sampled subgraph (:func:`~mmea.models.relational_gnn_math.sampled_subgraph`): the
view inputs of its nodes from their full mean rows, the attention and messages over its edges only.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .relational_gnn_math import segment_softmax

__all__ = ["RelationalGnn"]


def _mean_matrix(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    """Sparse ``(shape)`` float32 COO: row ``i`` averages its distinct columns (empty rows stay 0)."""
    pairs = np.unique(np.stack([rows, cols], 1), axis=0)  # (P, 2)
    deg = np.bincount(pairs[:, 0], minlength=shape[0]).astype(np.float32)
    vals = 1.0 / deg[pairs[:, 0]]
    return torch.sparse_coo_tensor(torch.from_numpy(pairs.T.copy()), torch.from_numpy(vals), shape,
                                   check_invariants=True).coalesce()


class RelationalGnn(nn.Module):
    """Entity and relation embeddings refined by ``layers`` relation-aware attention layers per view."""

    def __init__(self, graph: dict, dim: int, layers: int, dropout: float = 0.3, device: str = "cpu",
                 proxy: bool = True, proxies: int = 64):
        super().__init__()
        n, nr = graph["num_entities"], graph["num_relations"]
        self.num_entities, self.layers, self.dropout = n, int(layers), float(dropout)
        self.entity = nn.Parameter(torch.empty(n, dim))  # (n, d)
        self.relation = nn.Parameter(torch.empty(nr, dim))  # (2R + 1, d)
        self.attn_entity = nn.Parameter(torch.empty(layers, dim))  # (L, d)
        self.attn_relation = nn.Parameter(torch.empty(layers, dim))  # (L, d)
        for p in (self.entity, self.relation, self.attn_entity, self.attn_relation):
            nn.init.xavier_uniform_(p)
        width = (layers + 1) * dim
        self.proxy = nn.ModuleList([ProxyGate(width, proxies) for _ in range(2)]) if proxy else None
        self.to(device)
        # the graph: constants on the device, not parameters nor buffers (the state_dict holds the weights only)
        recv, send, rel = graph["receivers"], graph["senders"], graph["relations"]
        self.receivers = torch.from_numpy(recv).to(device)  # (E,)
        self.senders = torch.from_numpy(send).to(device)  # (E,)
        self.edge_relations = torch.from_numpy(rel).to(device)  # (E,)
        no_loop = rel != nr - 1
        self.ent_mean = _mean_matrix(recv, send, (n, n)).to(device)  # (n, n) sparse
        self.rel_mean = _mean_matrix(recv[no_loop], rel[no_loop], (n, nr)).to(device)  # (n, 2R+1) sparse
        self._rows = None  # scipy CSR copies of the two means, for subgraph rows (made on first use)

    @property
    def out_dim(self) -> int:
        return 2 * (self.layers + 1) * self.entity.shape[1]

    def _view(self, x: torch.Tensor, kernels: torch.Tensor, r_hat: torch.Tensor, receivers: torch.Tensor,
              senders: torch.Tensor) -> list[torch.Tensor]:
        """``[h^0, ..., h^L]`` of one view from its input ``x (n, d)`` over the edges ``senders -> receivers (E,)``;
        ``r_hat (E, d)`` unit edge relations."""
        h = torch.tanh(x)
        outs = [h]
        for layer in range(self.layers):
            att = segment_softmax(r_hat @ kernels[layer], receivers, len(x))  # (E,)
            hs = h[senders]  # (E, d)
            coef = att * (hs * r_hat).sum(-1)  # (E,): alpha_ij r_hat^T h_j
            msg = hs * att[:, None] - r_hat * (2.0 * coef)[:, None]  # (E, d): alpha_ij (h_j - 2 (r^T h_j) r)
            h = torch.tanh(torch.zeros_like(h).index_add_(0, receivers, msg))  # (n, d)
            outs.append(h)
        return outs

    def _subgraph(self, nodes: np.ndarray, edges: np.ndarray) -> tuple:
        """``(x_ent (S, d), x_rel (S, d), local receivers (K,), local senders (K,), edge relations (K,))``."""
        from scipy.sparse import csr_matrix

        if self._rows is None:
            self._rows = tuple(csr_matrix((m.values().cpu().numpy(), m.indices().cpu().numpy()), shape=m.shape)
                               for m in (self.ent_mean, self.rel_mean))
        dev = self.entity.device
        xs = []
        for mat, table in zip(self._rows, (self.entity, self.relation)):
            sub = mat[nodes].tocoo()  # (S, n) or (S, 2R + 1): the nodes' full mean rows
            t = torch.sparse_coo_tensor(torch.from_numpy(np.stack([sub.row, sub.col]).astype(np.int64)),
                                        torch.from_numpy(sub.data), sub.shape, check_invariants=False).to(dev)
            xs.append(torch.sparse.mm(t, table))  # (S, d)
        idx = torch.from_numpy(edges).to(dev)
        where = torch.from_numpy(nodes).to(dev)
        recv = torch.searchsorted(where, self.receivers[idx])  # (K,) positions in nodes
        send = torch.searchsorted(where, self.senders[idx])
        return xs[0], xs[1], recv, send, self.edge_relations[idx]

    def forward(self, nodes: np.ndarray | None = None, edges: np.ndarray | None = None) -> torch.Tensor:
        """``(n, 2 (L + 1) d)``: both views' layers concatenated (dropout in training mode); with ``nodes (S,)``
        (sorted ids) and ``edges (K,)`` (edge ids among them): ``(S, 2 (L + 1) d)`` over that subgraph."""
        if nodes is None:
            x_ent = torch.sparse.mm(self.ent_mean, self.entity)  # (n, d)
            x_rel = torch.sparse.mm(self.rel_mean, self.relation)  # (n, d)
            recv, send, rel = self.receivers, self.senders, self.edge_relations
        else:
            x_ent, x_rel, recv, send, rel = self._subgraph(nodes, edges)
        r_hat = nn.functional.normalize(self.relation, dim=-1)[rel]  # (E, d)
        views = [torch.cat(self._view(x_ent, self.attn_entity, r_hat, recv, send), -1),
                 torch.cat(self._view(x_rel, self.attn_relation, r_hat, recv, send), -1)]  # 2 x (n, (L + 1) d)
        if self.proxy is not None:
            views = [gate(v) for gate, v in zip(self.proxy, views)]
        out = torch.cat(views, dim=-1)  # (n, 2 (L + 1) d)
        return nn.functional.dropout(out, self.dropout, self.training)


class ProxyGate(nn.Module):
    """Dual-AMN's proxy matching of one view's output ``o (n, w)``: ``g * o + (1 - g) * o_p`` (module docstring)."""

    def __init__(self, width: int, proxies: int):
        super().__init__()
        self.proxy = nn.Parameter(torch.empty(proxies, width))  # (P, w)
        self.gate = nn.Parameter(torch.empty(width, width))  # (w, w)
        self.bias = nn.Parameter(torch.zeros(width))  # (w,)
        nn.init.xavier_uniform_(self.proxy)
        nn.init.xavier_uniform_(self.gate)

    def forward(self, o: torch.Tensor) -> torch.Tensor:
        beta = torch.softmax(nn.functional.normalize(o, dim=-1) @ nn.functional.normalize(self.proxy, dim=-1).T,
                             dim=-1)  # (n, P)
        o_p = o - beta @ self.proxy  # (n, w)
        g = torch.sigmoid(o_p @ self.gate + self.bias)  # (n, w)
        return g * o + (1.0 - g) * o_p
