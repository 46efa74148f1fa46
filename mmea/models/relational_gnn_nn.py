"""The torch network of ``relational-gnn``: relation-aware attention over both KGs' union graph.

Dual-AMN's encoder (Mao et al., WWW 2021; the reflection is RREA's, Mao et al., CIKM 2020).  Two views of every
entity, each with its own attention kernels:

- entity view: ``x_i = mean_{j in N(i) + i} e_j`` (learned entity embeddings ``e``, no names);
- entity-relation view: ``x_i = mean_{edges (i, j, r)} rel_r`` (the relations around ``i``).

From ``h^0 = tanh(x)`` each layer ``l = 1..L`` computes, over the edges ``(i <- j, r)`` of
:func:`~mmea.models.relational_gnn_math.union_graph` (inverse edges included; self loops only when asked):

    r_hat = rel_r / ||rel_r||
    m_ij  = h_j - 2 (r_hat^T h_j) r_hat                        (relational reflection)
    a_ij  = softmax_{j in N(i)} (k_l^T r_hat)                   (attention per relation)
    h^l_i = tanh(sum_j a_ij m_ij)

and a view's output is ``o = [h^0 | h^1 | ... | h^L]``.  With ``proxy`` (Dual-AMN's proxy matching; off by default),
each view then mixes in its difference to ``P = 64`` learned proxy vectors ``p_k``:

    beta  = softmax_k (o_hat^T p_hat_k)                         (o_hat, p_hat: unit vectors)
    o_p   = o - sum_k beta_k p_k
    g     = sigmoid(o_p W + b)                                  (W: (L+1) dim square, b: a bias)
    o'    = g * o + (1 - g) * o_p

The entity is ``o'`` (``o`` without the gate) of the entity view, then of the relation view:
``(N + M, 2 (L + 1) dim)``.  A layer is three sparse CSR products (:class:`EdgeSet`):
``sum_j a_ij m_ij = A h - 2 W r_hat`` with ``A_ij = a_ij``, ``W_ir = sum_{j: r_ij = r} a_ij s_ij`` and
``s_ij = r_ij^T h_j``; no ``(E, d)`` tensor of gathered neighbour rows is made.  The view inputs are sparse
``(n, n)`` / ``(n, 2R + 1)`` means.  ``forward(nodes, edges)``
runs the same layers on a sampled subgraph (:func:`~mmea.models.relational_gnn_math.sampled_subgraph`): the
view inputs of its nodes from their full mean rows, the attention and messages over its edges only.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .relational_gnn_math import EdgePattern, edge_dot, edge_spmm, segment_softmax

__all__ = ["RelationalGnn", "EdgeSet"]


class EdgeSet:
    """The edges ``senders -> receivers`` with their ``relations`` (int64 numpy, ``n`` nodes, ``nr`` relations) as
    the three sparse patterns a layer multiplies by: (receiver, sender), (receiver, relation), (sender, relation)."""

    def __init__(self, receivers: np.ndarray, senders: np.ndarray, relations: np.ndarray, n: int, nr: int,
                 device="cpu"):
        self.receivers = torch.from_numpy(np.ascontiguousarray(receivers)).to(device)  # (E,)
        self.relations = torch.from_numpy(np.ascontiguousarray(relations)).to(device)  # (E,)
        self.by_receiver = EdgePattern(receivers, senders, (n, n), device)
        self.by_relation = EdgePattern(receivers, relations, (n, nr), device)
        self.by_sender = EdgePattern(senders, relations, (n, nr), device)


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
                 proxy: bool = False, proxies: int = 64, init_bound: float = 0.05):
        super().__init__()
        n, nr = graph["num_entities"], graph["num_relations"]
        self.num_entities, self.layers, self.dropout = n, int(layers), float(dropout)
        self.entity = nn.Parameter(torch.empty(n, dim))  # (n, d)
        self.relation = nn.Parameter(torch.empty(nr, dim))  # (2R + 1, d)
        self.attn_entity = nn.Parameter(torch.empty(layers, dim))  # (L, d)
        self.attn_relation = nn.Parameter(torch.empty(layers, dim))  # (L, d)
        for p in (self.entity, self.relation):  # Keras' Embedding default, as Dual-AMN (0: Glorot)
            nn.init.uniform_(p, -init_bound, init_bound) if init_bound > 0 else nn.init.xavier_uniform_(p)
        for p in (self.attn_entity, self.attn_relation):
            nn.init.xavier_uniform_(p)
        width = (layers + 1) * dim
        self.proxy = nn.ModuleList([ProxyGate(width, proxies) for _ in range(2)]) if proxy else None
        self.to(device)
        # the graph: constants on the device, not parameters nor buffers (the state_dict holds the weights only)
        recv, send, rel = graph["receivers"], graph["senders"], graph["relations"]
        self.edges = EdgeSet(recv, send, rel, n, nr, device)
        self._graph = (recv, send, rel)  # numpy, for subgraphs
        no_loop = rel != nr - 1
        loops = np.arange(n, dtype=np.int64)  # the entity view's mean always counts the entity itself
        self.ent_mean = _mean_matrix(np.r_[recv, loops], np.r_[send, loops], (n, n)).to(device)  # (n, n) sparse
        self.rel_mean = _mean_matrix(recv[no_loop], rel[no_loop], (n, nr)).to(device)  # (n, 2R+1) sparse
        self._rows = None  # scipy CSR copies of the two means, for subgraph rows (made on first use)

    @property
    def out_dim(self) -> int:
        return 2 * (self.layers + 1) * self.entity.shape[1]

    def _view(self, x: torch.Tensor, kernels: torch.Tensor, r_hat: torch.Tensor,
              edges: EdgeSet) -> list[torch.Tensor]:
        """``[h^0, ..., h^L]`` of one view from its input ``x (n, d)`` over ``edges``; ``r_hat (2R + 1, d)`` the unit
        relation table.

        ``sum_j a_ij (h_j - 2 (r_ij^T h_j) r_ij) = A h - 2 W r_hat`` with ``A_ij = a_ij`` over (receiver, sender)
        and ``W_ir = sum_{j: r_ij = r} a_ij s_ij`` over (receiver, relation), ``s_ij = r_ij^T h_j`` over (sender,
        relation): three sparse kernels (:func:`~mmea.models.relational_gnn_math.edge_spmm`, ``edge_dot``)."""
        h = torch.tanh(x)
        outs = [h]
        for layer in range(self.layers):
            logits = (r_hat @ kernels[layer]).index_select(0, edges.relations)  # (E,)
            att = segment_softmax(logits, edges.receivers, len(x))  # (E,)
            s = edge_dot(edges.by_sender, h, r_hat)  # (E,): r_ij^T h_j
            msg = edge_spmm(edges.by_receiver, att, h) - 2.0 * edge_spmm(edges.by_relation, att * s, r_hat)  # (n, d)
            h = torch.tanh(msg)
            outs.append(h)
        return outs

    def _subgraph(self, nodes: np.ndarray, edges: np.ndarray) -> tuple:
        """``(x_ent (S, d), x_rel (S, d), the subgraph's EdgeSet in local ids)``."""
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
        pos = lambda ids: np.searchsorted(nodes, ids)  # noqa: E731 positions in nodes
        recv, send, rel = (a[edges] for a in self._graph)
        return xs[0], xs[1], EdgeSet(pos(recv), pos(send), rel, len(nodes), self.relation.shape[0], dev)

    def forward(self, nodes: np.ndarray | None = None, edges: np.ndarray | None = None) -> torch.Tensor:
        """``(n, 2 (L + 1) d)``: both views' layers concatenated (dropout in training mode); with ``nodes (S,)``
        (sorted ids) and ``edges (K,)`` (edge ids among them): ``(S, 2 (L + 1) d)`` over that subgraph."""
        if nodes is None:
            x_ent = torch.sparse.mm(self.ent_mean, self.entity)  # (n, d)
            x_rel = torch.sparse.mm(self.rel_mean, self.relation)  # (n, d)
            graph = self.edges
        else:
            x_ent, x_rel, graph = self._subgraph(nodes, edges)
        r_hat = nn.functional.normalize(self.relation, dim=-1)  # (2R + 1, d)
        views = [torch.cat(self._view(x_ent, self.attn_entity, r_hat, graph), -1),
                 torch.cat(self._view(x_rel, self.attn_relation, r_hat, graph), -1)]  # 2 x (n, (L + 1) d)
        if self.proxy is not None:
            views = [gate(v) for gate, v in zip(self.proxy, views)]
        out = torch.cat(views, dim=-1)  # (n, 2 (L + 1) d)
        return byte_dropout(out, self.dropout) if self.training else out


def byte_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout whose keep mask is drawn one byte per entry: ``x * 1[u >= round(256 p)] / keep`` with ``u``
    uniform on ``0..255`` (the drop rate is ``p`` rounded to 1/256: 0.3 -> 0.3008).

    Why not ``nn.functional.dropout``: its float Bernoulli draw cost 0.43 s on a ``(39K, 768)`` output on 2 cores,
    a fifth of a DBP15k step; bytes cost a quarter of that.
    """
    cut = int(round(256 * p))
    if cut <= 0:
        return x
    keep = torch.randint(0, 256, x.shape, dtype=torch.uint8, device=x.device) >= cut  # (..., ) bool
    return torch.where(keep, x, 0.0) * (256.0 / (256 - cut))


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
