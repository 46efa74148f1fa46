"""The torch modules of the graph encoders (:mod:`mmea.encoders.structure` has the maths and the
registry): :class:`GCNEncoder` (GCN-Align, Wang et al. 2018, with an optional RDGCN highway gate
or a residual connection) and :class:`GATEncoder` (Velickovic et al. 2018, sparse edge-list
attention in plain torch).  Both take ``forward(x (n, d), adj) -> (n, d')`` with ``adj`` from
:func:`mmea.encoders.structure.normalized_adjacency`.  Imports torch at module level: import it
only where torch is needed (the registry entries in ``structure`` do so on first use).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import MmeaInputError

__all__ = ["GCNEncoder", "GATEncoder", "GCNLayer", "GATLayer", "scatter_softmax"]


def scatter_softmax(src, index, num_segments: int):
    """Softmax of ``src (E, H)`` within groups of equal ``index (E,)`` (plain torch)."""
    idx = index.unsqueeze(1).expand_as(src)  # (E, H)
    mx = src.new_full((num_segments, src.shape[1]), float("-inf")).scatter_reduce(
        0, idx, src, reduce="amax", include_self=True)  # (N, H)
    ex = torch.exp(src - mx[index])  # (E, H)
    den = src.new_zeros((num_segments, src.shape[1])).index_add_(0, index, ex)  # (N, H)
    return ex / den[index].clamp_min(1e-16)


_ACTIVATIONS = ("relu", "elu", "tanh", "leaky-relu", "none")


def _activation(name: str):
    if name not in _ACTIVATIONS:
        raise MmeaInputError(f"unknown activation {name!r}; valid: {', '.join(_ACTIVATIONS)}")
    return {"relu": nn.ReLU(), "elu": nn.ELU(), "tanh": nn.Tanh(), "leaky-relu": nn.LeakyReLU(0.2),
            "none": nn.Identity()}[name]



class _SkipGate(nn.Module):
    """Highway gate ``T h + (1 - T) x`` or residual ``h + x`` (``x`` projected when sizes differ)."""

    def __init__(self, in_dim: int, out_dim: int, highway: bool):
        super().__init__()
        self.highway = highway
        self.proj = nn.Linear(in_dim, out_dim, bias=False) if in_dim != out_dim else None
        self.gate = nn.Linear(in_dim, out_dim) if highway else None

    def forward(self, x, h):
        skip = self.proj(x) if self.proj is not None else x  # (n, out)
        if self.highway:
            t = torch.sigmoid(self.gate(x))  # (n, out)
            return t * h + (1.0 - t) * skip
        return h + skip

class _GraphEncoderBase(nn.Module):
    def __init__(self, in_dim: int, dims: Sequence[int], dropout: float, activation: str,
                 final_activation: bool, highway: bool, residual: bool):
        super().__init__()
        if highway and residual:
            raise MmeaInputError("choose either a highway gate or a residual connection, not both")
        if not dims:
            raise MmeaInputError("a graph encoder needs at least one layer size")
        self.in_dim, self.dims = int(in_dim), [int(d) for d in dims]
        self.out_dim = self.dims[-1]
        self.dropout = nn.Dropout(dropout)
        self.act = _activation(activation)
        self.final_activation = final_activation
        sizes = [self.in_dim] + self.dims
        self.skips = nn.ModuleList(
            [_SkipGate(a, b, highway) for a, b in zip(sizes[:-1], sizes[1:])] if highway or residual else [])

    def forward(self, x, adj):
        """``x (n, in_dim)``, ``adj`` sparse ``(n, n)`` -> ``(n, out_dim)``."""
        h = x
        for i, layer in enumerate(self.layers):
            z = layer(self.dropout(h), adj)  # (n, d_i)
            if i < len(self.layers) - 1 or self.final_activation:
                z = self.act(z)
            if self.skips:
                z = self.skips[i](h, z)
            h = z
        return h

class GCNLayer(nn.Module):
    """``Â H W`` (``W`` omitted when ``linear=False``: pure propagation)."""

    def __init__(self, in_dim: int, out_dim: int, linear: bool = True, bias: bool = True):
        super().__init__()
        if not linear and in_dim != out_dim:
            raise MmeaInputError(f"a GCN layer without weights keeps the size; got {in_dim} -> {out_dim}")
        self.lin = nn.Linear(in_dim, out_dim, bias=bias) if linear else None
        if self.lin is not None:
            nn.init.xavier_uniform_(self.lin.weight)

    def forward(self, x, adj):
        h = self.lin(x) if self.lin is not None else x  # (n, out)
        return torch.sparse.mm(adj, h)  # (n, out)

class GCNEncoder(_GraphEncoderBase):
    """Graph convolutional network over the relation graph (GCN-Align; RDGCN highway gates).

    Args:
        in_dim: input feature size.
        dims: output size of each layer, e.g. ``(300, 300)``.
        dropout: dropout on each layer's input.
        activation: between layers (``relu``, ``elu``, ``tanh``, ``leaky-relu``, ``none``).
        final_activation: also apply it after the last layer.
        highway: highway gate around each layer.
        residual: residual connection around each layer.
        linear: layers have weight matrices (False: fixed propagation).
    """

    def __init__(self, in_dim: int, dims: Sequence[int] = (300, 300), dropout: float = 0.0,
                 activation: str = "relu", final_activation: bool = False, highway: bool = False,
                 residual: bool = False, linear: bool = True):
        super().__init__(in_dim, dims, dropout, activation, final_activation, highway, residual)
        sizes = [self.in_dim] + self.dims
        self.layers = nn.ModuleList([GCNLayer(a, b, linear) for a, b in zip(sizes[:-1], sizes[1:])])

class GATLayer(nn.Module):
    """One graph-attention layer on the edges (non-zeros) of ``adj``, heads averaged."""

    def __init__(self, in_dim: int, out_dim: int, heads: int = 1, attn_dropout: float = 0.0,
                 negative_slope: float = 0.2):
        super().__init__()
        self.heads, self.out_dim = heads, out_dim
        self.lin = nn.Linear(in_dim, heads * out_dim, bias=False)
        self.att_src = nn.Parameter(torch.empty(heads, out_dim))
        self.att_dst = nn.Parameter(torch.empty(heads, out_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.attn_dropout = nn.Dropout(attn_dropout)
        self.negative_slope = negative_slope
        nn.init.xavier_uniform_(self.lin.weight)
        nn.init.xavier_uniform_(self.att_src)
        nn.init.xavier_uniform_(self.att_dst)

    def forward(self, x, adj):
        n = x.shape[0]
        edges = adj.coalesce().indices() if adj.is_sparse else adj  # (2, E): row = receiver, col = sender
        dst, src = edges[0], edges[1]
        h = self.lin(x).view(n, self.heads, self.out_dim)  # (n, H, d)
        a_src = (h * self.att_src).sum(-1)  # (n, H)
        a_dst = (h * self.att_dst).sum(-1)  # (n, H)
        e = torch.nn.functional.leaky_relu(a_dst[dst] + a_src[src], self.negative_slope)  # (E, H)
        alpha = self.attn_dropout(scatter_softmax(e, dst, n))  # (E, H)
        msg = alpha.unsqueeze(-1) * h[src]  # (E, H, d)
        out = h.new_zeros(n, self.heads, self.out_dim).index_add_(0, dst, msg)  # (n, H, d)
        return out.mean(1) + self.bias  # (n, d)

class GATEncoder(_GraphEncoderBase):
    """Graph attention network over the relation graph (sparse edge-list attention, plain torch).

    Args: as :class:`GCNEncoder`, plus ``heads`` (averaged) and
    ``attn_dropout`` (dropout on attention weights).  Attention runs over
    the non-zeros of ``adj`` (include self-loops to let a node attend to
    itself); the values of ``adj`` are ignored.
    """

    def __init__(self, in_dim: int, dims: Sequence[int] = (300, 300), heads: int = 1, dropout: float = 0.0,
                 attn_dropout: float = 0.0, activation: str = "elu", final_activation: bool = False,
                 highway: bool = False, residual: bool = False, negative_slope: float = 0.2):
        super().__init__(in_dim, dims, dropout, activation, final_activation, highway, residual)
        sizes = [self.in_dim] + self.dims
        self.layers = nn.ModuleList([GATLayer(a, b, heads, attn_dropout, negative_slope)
                                     for a, b in zip(sizes[:-1], sizes[1:])])
