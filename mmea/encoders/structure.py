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
The torch modules live in :mod:`mmea.encoders.structure_nn` (torch imported at its top); the
registry entries import it on first use, so importing this module does not import torch.
"""

from __future__ import annotations

import numpy as np

from ..data.graph import AlignmentTask
from ..errors import MmeaInputError
from . import GRAPH_ENCODERS

__all__ = [
    "adjacency_matrix",
    "normalized_adjacency",
    "joint_triples",
    "propagate",
    "make_gcn",
    "make_gat",
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
    from .bags_nn import to_torch_sparse  # torch on first use

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


@GRAPH_ENCODERS.register(name="gcn")
def make_gcn(**kwargs):
    """Graph convolutional network (GCN-Align), optional highway / residual gates."""
    from .structure_nn import GCNEncoder  # torch on first use: `mmea ls` stays torch-free

    return GCNEncoder(**kwargs)


@GRAPH_ENCODERS.register(name="gat")
def make_gat(**kwargs):
    """Graph attention network (sparse edge-list attention in plain torch)."""
    from .structure_nn import GATEncoder  # torch on first use: `mmea ls` stays torch-free

    return GATEncoder(**kwargs)
