"""The torch module of the numeric encoder (:mod:`mmea.encoders.numeric` has the RBF maths, the
profiles and the triples): :class:`NumericRbfEncoder`, learnable RBF features plus attribute-name
embeddings (MMEA / Gaussian common space, eq. 5).  Imports torch at module level."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import MmeaInputError
from .numeric import NumericTriples, default_centres

__all__ = ["NumericRbfEncoder"]


class NumericRbfEncoder(nn.Module):
    """Learnable RBF features of numeric attributes plus attribute-name embeddings (eq. 5).

    For triple ``t = (e, a, n')``: ``h_t = W [phi(n'); emb(a)] + b`` with
    ``phi_i(n') = exp(-(n' - c_i)^2 / sigma_i^2)``, learnable ``c`` and
    ``sigma`` (shared by all attributes, or one set per attribute with
    ``per_attribute``); an entity's vector is the mean of its ``h_t``, and
    entities without numeric triples get zeros.

    Args:
        num_attributes: size of the shared numeric vocabulary.
        num_centres: ``k``, initialised evenly on [0, 1] (values are normalised there).
        name_dim: size of the attribute-name embedding.
        out_dim: output size (``None``: no projection, output ``k + name_dim``).
        per_attribute: one set of centres and widths per attribute.
        name_vectors: optional ``(num_attributes, d)`` initial name embeddings
            (e.g. the attribute names through a name encoder); sets ``name_dim = d``.
        freeze_names: keep the name embeddings fixed.
    """

    def __init__(self, num_attributes: int, num_centres: int = 32, name_dim: int = 32,
                 out_dim: int | None = None, per_attribute: bool = False, name_vectors=None,
                 freeze_names: bool = False):
        super().__init__()
        centres, widths = default_centres(num_centres)
        shape = (max(num_attributes, 1), num_centres) if per_attribute else (num_centres,)
        self.per_attribute = per_attribute
        self.centres = nn.Parameter(torch.tensor(np.broadcast_to(centres, shape).copy(), dtype=torch.float32))
        self.log_widths = nn.Parameter(torch.tensor(np.log(np.broadcast_to(widths, shape)).copy(),
                                                    dtype=torch.float32))
        if name_vectors is not None:
            w = torch.as_tensor(np.asarray(name_vectors), dtype=torch.float32)
            if w.shape[0] != num_attributes:
                raise MmeaInputError(f"name_vectors has {w.shape[0]} rows for {num_attributes} attributes")
            self.names = nn.Embedding.from_pretrained(w, freeze=freeze_names)
            name_dim = int(w.shape[1])
        else:
            self.names = nn.Embedding(max(num_attributes, 1), name_dim)
            nn.init.normal_(self.names.weight, std=name_dim ** -0.5)
        self.in_dim = num_centres + name_dim
        self.proj = nn.Linear(self.in_dim, out_dim) if out_dim else None
        self.out_dim = out_dim or self.in_dim

    @property
    def widths(self):
        return self.log_widths.exp()

    def rbf(self, attribute, value):
        """``(m, k)`` RBF activations of normalised values ``(m,)``."""
        c = self.centres[attribute] if self.per_attribute else self.centres  # (m, k) or (k,)
        s = self.log_widths[attribute].exp() if self.per_attribute else self.widths
        return torch.exp(-((value[:, None] - c) ** 2) / s ** 2)  # (m, k)

    def forward(self, entity, attribute, value, num_entities: int):
        """Entity vectors ``(num_entities, out_dim)`` from triples ``(m,)`` x 3."""
        h = torch.cat([self.rbf(attribute, value), self.names(attribute)], dim=1)  # (m, k + name_dim)
        if self.proj is not None:
            h = self.proj(h)  # (m, out_dim)
        out = h.new_zeros(num_entities, h.shape[1]).index_add_(0, entity, h)  # (n, out_dim)
        cnt = torch.bincount(entity, minlength=num_entities).clamp_min(1).to(h.dtype)  # (n,)
        return out / cnt[:, None]

    def encode(self, triples: NumericTriples):
        """:meth:`forward` on a :class:`NumericTriples` (on this module's device)."""
        dev = self.centres.device
        return self(torch.as_tensor(triples.entity, device=dev), torch.as_tensor(triples.attribute, device=dev),
                    torch.as_tensor(triples.value, device=dev, dtype=torch.float32), triples.num_entities)
