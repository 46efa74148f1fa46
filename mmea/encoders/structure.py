"""Graph encoders over the relation graph (GCN, GAT) and training-free propagation.

The relation graph of a KG is undirected and unlabelled: entities ``i`` and
``j`` are adjacent when some triple links them in either direction.

- :func:`normalized_adjacency`: ``D^-1/2 (A + I) D^-1/2`` as a torch sparse
  tensor (Kipf & Welling 2017), built from :func:`adjacency_matrix` (scipy).
- :class:`GCNEncoder` (``gcn``): ``H' = act(Â H W)`` per layer (GCN-Align,
  Wang et al. 2018), with an optional highway gate
  ``H' = T * act(Â H W) + (1 - T) * H``, ``T = sigmoid(H W_T + b_T)``
  (RDGCN, Wu et al. 2019) or a residual connection ``H' = act(Â H W) + H``.
- :class:`GATEncoder` (``gat``): graph attention (Velickovic et al. 2018) on
  the edges of the same adjacency,
  ``alpha_ij = softmax_j(LeakyReLU(a_dst . W h_i + a_src . W h_j))``,
  ``h_i' = act(sum_j alpha_ij W h_j)`` (heads averaged), in plain torch: a
  scatter-softmax over edge lists, no torch_geometric.
- :func:`propagate`: training-free ``[X, ÂX, Â²X]`` (concatenated or averaged),
  for training-free baselines.

Both encoders take ``forward(x (n, d), adj) -> (n, d')`` with ``adj`` from
:func:`normalized_adjacency`; they are built through
:data:`~mmea.encoders.GRAPH_ENCODERS` (``GRAPH_ENCODERS.make("gcn", in_dim=..., dims=...)``).
The classes are created on first use, so importing this module does not
import torch.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..data.graph import AlignmentTask
from ..errors import MmeaInputError
from . import GRAPH_ENCODERS

__all__ = [
    "adjacency_matrix",
    "normalized_adjacency",
    "joint_triples",
    "scatter_softmax",
    "propagate",
    "GCNEncoder",
    "GATEncoder",
]

NORMALIZATIONS = ("sym", "row", "none")


def adjacency_matrix(triples: np.ndarray, num_entities: int, self_loops: bool = True,
                     normalization: str = "sym"):
    """Undirected relation-graph adjacency as scipy CSR float32 ``(n, n)``.

    ``triples`` is ``(T, 3)`` ``(head, relation, tail)`` or ``(E, 2)`` edges.
    Edges are binary (repeated triples and both directions count once).
    ``normalization``: ``"sym"`` = ``D^-1/2 (A + I) D^-1/2``, ``"row"`` =
    ``D^-1 (A + I)`` (averaging over neighbours), ``"none"`` = ``A + I``.
    """
    import scipy.sparse as sp

    if normalization not in NORMALIZATIONS:
        raise MmeaInputError(f"unknown adjacency normalisation {normalization!r}; valid: {', '.join(NORMALIZATIONS)}")
    t = np.asarray(triples, dtype=np.int64)
    if t.ndim != 2 or t.shape[1] not in (2, 3):
        raise MmeaInputError(f"expected (T, 3) triples or (E, 2) edges, found shape {t.shape}")
    h, tl = (t[:, 0], t[:, 2]) if t.shape[1] == 3 else (t[:, 0], t[:, 1])
    keep = h != tl
    rows = np.concatenate([h[keep], tl[keep]])
    cols = np.concatenate([tl[keep], h[keep]])
    a = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(num_entities, num_entities))
    a.sum_duplicates()
    a.data[:] = 1.0
    if self_loops:
        a = (a + sp.identity(num_entities, dtype=np.float32, format="csr")).tocsr()
    deg = np.asarray(a.sum(axis=1)).reshape(-1)  # (n,)
    if normalization == "none":
        return a
    with np.errstate(divide="ignore"):
        inv = np.where(deg > 0, deg ** (-0.5 if normalization == "sym" else -1.0), 0.0).astype(np.float32)
    d = sp.diags(inv)
    return (d @ a @ d if normalization == "sym" else d @ a).tocsr().astype(np.float32)


def normalized_adjacency(triples: np.ndarray, num_entities: int, self_loops: bool = True,
                         normalization: str = "sym", device=None):
    """``D^-1/2 (A + I) D^-1/2`` as a coalesced torch sparse COO tensor ``(n, n)`` (see :func:`adjacency_matrix`)."""
    from .bags import to_torch_sparse

    return to_torch_sparse(adjacency_matrix(triples, num_entities, self_loops, normalization), device=device)


def joint_triples(task: AlignmentTask) -> tuple[np.ndarray, int]:
    """Both KGs as one graph: ``(triples (T1 + T2, 3), n1 + n2)``, target ids offset by ``n1``.

    Relation ids of the target are offset by the source's relation count.
    """
    n1 = task.source.num_entities
    r1 = max(task.source.num_relations, int(task.source.triples[:, 1].max()) + 1 if len(task.source.triples) else 0)
    tgt = task.target.triples + np.array([n1, r1, n1], dtype=np.int64)
    return np.concatenate([task.source.triples, tgt], axis=0), n1 + task.target.num_entities


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def propagate(x, adj, hops: int = 2, combine: str = "concat", normalize: bool = True):
    """Training-free neighbourhood features ``[X, ÂX, ..., Â^hops X]``.

    Args:
        x: ``(n, d)`` numpy array or torch tensor.
        adj: ``(n, n)`` scipy sparse (with numpy ``x``) or torch sparse (with
            a tensor), typically :func:`adjacency_matrix` with ``"row"`` (mean
            over neighbours) or ``"sym"`` normalisation.
        hops: number of propagation steps.
        combine: ``"concat"`` -> ``(n, (hops + 1) d)``, ``"mean"`` -> ``(n, d)``
            average of the hop outputs, ``"last"`` -> ``Â^hops X``.
        normalize: L2-normalise the rows of every hop output before combining.
    """
    if combine not in ("concat", "mean", "last"):
        raise MmeaInputError(f"unknown combine {combine!r}; valid: concat, mean, last")
    torch_mode = _is_torch(x)
    if torch_mode:
        import torch

        def step(h):
            return torch.sparse.mm(adj, h)

        def norm(h):
            return torch.nn.functional.normalize(h, dim=1)

        def cat(hs):
            return torch.cat(hs, dim=1)

        def mean(hs):
            return torch.stack(hs).mean(0)
    else:
        x = np.asarray(x, dtype=np.float32)

        def step(h):
            return np.asarray(adj @ h, dtype=np.float32)

        def norm(h):
            nrm = np.linalg.norm(h, axis=1, keepdims=True)
            return np.divide(h, nrm, out=np.zeros_like(h), where=nrm > 0)

        def cat(hs):
            return np.concatenate(hs, axis=1)

        def mean(hs):
            return np.mean(np.stack(hs), axis=0)

    outs = [x]
    h = x
    for _ in range(hops):
        h = step(h)  # (n, d)
        outs.append(h)
    if normalize:
        outs = [norm(o) for o in outs]
    if combine == "last":
        return outs[-1]
    return cat(outs) if combine == "concat" else mean(outs)


def scatter_softmax(src, index, num_segments: int):
    """Softmax of ``src (E, H)`` within groups of equal ``index (E,)`` (plain torch)."""
    import torch

    idx = index.unsqueeze(1).expand_as(src)  # (E, H)
    mx = src.new_full((num_segments, src.shape[1]), float("-inf")).scatter_reduce(
        0, idx, src, reduce="amax", include_self=True)  # (N, H)
    ex = torch.exp(src - mx[index])  # (E, H)
    den = src.new_zeros((num_segments, src.shape[1])).index_add_(0, index, ex)  # (N, H)
    return ex / den[index].clamp_min(1e-16)


_ACTIVATIONS = ("relu", "elu", "tanh", "leaky-relu", "none")


def _activation(name: str):
    from torch import nn

    if name not in _ACTIVATIONS:
        raise MmeaInputError(f"unknown activation {name!r}; valid: {', '.join(_ACTIVATIONS)}")
    return {"relu": nn.ReLU(), "elu": nn.ELU(), "tanh": nn.Tanh(), "leaky-relu": nn.LeakyReLU(0.2),
            "none": nn.Identity()}[name]


def _build_classes() -> dict[str, Any]:
    import torch
    from torch import nn

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

    built = {"GCNEncoder": GCNEncoder, "GATEncoder": GATEncoder, "GCNLayer": GCNLayer, "GATLayer": GATLayer}
    for name, cls in built.items():  # importable (and picklable) as mmea.encoders.structure.<name>
        cls.__module__, cls.__qualname__ = __name__, name
    return built


_BUILT: dict[str, Any] = {}


def _cls(name: str):
    if not _BUILT:
        _BUILT.update(_build_classes())
    return _BUILT[name]


def __getattr__(name: str):
    # torch classes are created on first access so that importing this module stays instant
    if name in ("GCNEncoder", "GATEncoder", "GCNLayer", "GATLayer"):
        return _cls(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@GRAPH_ENCODERS.register(name="gcn")
def make_gcn(**kwargs):
    """Graph convolutional network (GCN-Align), optional highway / residual gates."""
    return _cls("GCNEncoder")(**kwargs)


@GRAPH_ENCODERS.register(name="gat")
def make_gat(**kwargs):
    """Graph attention network (sparse edge-list attention in plain torch)."""
    return _cls("GATEncoder")(**kwargs)
