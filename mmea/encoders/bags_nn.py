"""Torch side of the bag encoders (:mod:`mmea.encoders.bags` builds the sparse bags): scipy ->
torch sparse conversion and :class:`SparseLinear`, the linear layer the bags feed.  Imports torch
at module level."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

__all__ = ["to_torch_sparse", "SparseLinear"]


def to_torch_sparse(matrix, device=None):
    """A scipy sparse matrix as a coalesced float32 ``torch.sparse_coo_tensor``."""
    coo = matrix.tocoo()
    idx = torch.as_tensor(np.vstack([coo.row, coo.col]).astype(np.int64))  # (2, nnz)
    val = torch.as_tensor(coo.data.astype(np.float32))  # (nnz,)
    return torch.sparse_coo_tensor(idx, val, coo.shape, device=device, check_invariants=False).coalesce()


class SparseLinear(nn.Module):
    """``y = x W + b`` for a sparse (or dense) input ``x (n, in)`` via ``torch.sparse.mm``.

    The linear layer that bag-of-relations / bag-of-attributes vectors feed
    (SelfMEA eqs. 3-4); ``W`` is ``(in, out)`` with Glorot-uniform init.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = math.sqrt(6.0 / (in_features + out_features))
        self.weight = nn.Parameter(torch.empty(in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x):
        """``(n, in)`` sparse COO / CSR or dense -> ``(n, out)``."""
        y = torch.sparse.mm(x, self.weight) if x.is_sparse or x.layout == torch.sparse_csr \
            else x @ self.weight  # (n, out)
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
