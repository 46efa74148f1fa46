"""The torch modules of the Gaussian common-space model (:mod:`mmea.models.gaussian`).

Torch is imported at the top: :mod:`mmea.models.gaussian` imports this module on first use
(:func:`~mmea.models.gaussian.build_network`), so importing the model registry stays instant.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..encoders.numeric_nn import NumericRbfEncoder
from ..errors import MmeaInputError
from .gaussian_math import relation_score

__all__ = ["GaussianTable", "SameConv2x4", "GaussianNetwork"]


class GaussianTable(nn.Module):
    """One diagonal Gaussian ``N(mu_i, diag var_i)`` per row.

    ``var`` is a parameter frozen at ``var_init`` until
    :meth:`set_variance_trainable`, or with ``point=True`` a fixed scalar
    (no variance parameter).  While the variances are all still
    ``var_init``, :meth:`forward` returns that scalar (it broadcasts in
    every KL), which skips gathering and differentiating ``(B, d)`` rows.
    """

    def __init__(self, n: int, dim: int, init_std: float, var_init: float, point: bool):
        super().__init__()
        self.point = point
        self.mu = nn.Parameter(torch.randn(n, dim) * init_std)
        self.register_buffer("fixed_var", torch.tensor(float(var_init)))
        self.register_buffer("uniform", torch.tensor(True))  # every variance still equals fixed_var
        self.var = None if point else nn.Parameter(torch.full((n, dim), float(var_init)), requires_grad=False)

    def forward(self, idx, sparse: bool = True):
        """``(mu (..., d), var (..., d) or a 0-dim tensor)`` of rows ``idx``.

        ``sparse``: sparse gradients (a step costs the batch's rows); dense ones are
        cheaper when a batch touches a large part of the table (the relational loss).
        """
        mu = F.embedding(idx, self.mu, sparse=sparse)
        if self.var is None or bool(self.uniform):
            return mu, self.fixed_var
        return mu, F.embedding(idx, self.var, sparse=sparse)

    def variances(self):
        """``(n, d)`` all variances (detached)."""
        if self.var is not None:
            return self.var.detach()
        return torch.full_like(self.mu.detach(), float(self.fixed_var))

    def set_variance_trainable(self, flag: bool) -> None:
        if self.var is not None:
            self.var.requires_grad_(flag)
            if flag:
                self.uniform.fill_(False)

    @torch.no_grad()
    def clamp_(self, var_min: float, var_max: float, max_norm: float = 0.0, rows=None) -> None:
        """Variances into ``[var_min, var_max]`` and means into the ``max_norm`` ball (0: no limit).

        ``rows``: only these rows (those a step touched); None = all.
        """
        if isinstance(rows, slice):
            rows = None
        if self.var is not None and self.var.requires_grad:
            if rows is None:
                self.var.clamp_(var_min, var_max)
            else:
                self.var[rows] = self.var[rows].clamp(var_min, var_max)
        if max_norm > 0:
            mu = self.mu if rows is None else self.mu[rows]
            norms = mu.norm(dim=1, keepdim=True)  # (n, 1)
            mu = mu * torch.where(norms > max_norm, max_norm / norms.clamp_min(1e-12), 1.0)
            if rows is None:
                self.mu.copy_(mu)
            else:
                self.mu[rows] = mu

    def touched_rows(self):
        """Rows with a gradient from the last backward pass: an index tensor, None (no gradient)
        or ``slice(None)`` (dense gradients: every row)."""
        grads = [p.grad for p in (self.mu, self.var) if p is not None and p.grad is not None]
        if not grads:
            return None
        if any(not g.is_sparse for g in grads):
            return slice(None)
        return torch.unique(torch.cat([g._indices()[0] for g in grads]))

class SameConv2x4(nn.Module):
    """2-D convolution with a 2x4 kernel and "same" zero padding, computed as im2col + matmul.

    The same function as ``nn.Conv2d(in, out, (2, 4), padding="same")``; on
    the ``(B, C, 2, d)`` maps of the numerical branch its backward pass is
    about twice as fast on a CPU.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        ref = nn.Conv2d(in_channels, out_channels, (2, 4))  # PyTorch's default initialisation
        self.weight, self.bias = nn.Parameter(ref.weight.detach()), nn.Parameter(ref.bias.detach())

    def forward(self, x):
        xp = F.pad(x, (1, 2, 0, 1))  # (B, C, 3, d + 3): torch's "same" split of an even kernel
        cols = xp.unfold(2, 2, 1).unfold(3, 4, 1)  # (B, C, 2, d, 2, 4)
        b, c, h, w = cols.shape[:4]
        cols = cols.permute(0, 2, 3, 1, 4, 5).reshape(b, h, w, c * 8)  # (B, 2, d, C * 8)
        out = cols @ self.weight.reshape(self.weight.shape[0], -1).t() + self.bias  # (B, 2, d, O)
        return out.permute(0, 3, 1, 2)  # (B, O, 2, d)

class GaussianNetwork(nn.Module):
    """All distributions and encoders of the model (see the module docstring)."""

    def __init__(self, num_entities: int, num_relations: int, dim: int, image_dim: int, num_attributes: int,
                 rbf_centres: int, point: bool, var_init: float = 0.5, modality_var: float = 0.5,
                 init_std: float | None = None):
        super().__init__()
        std = init_std if init_std is not None else dim ** -0.5
        self.point, self.dim, self.stage = point, dim, 1
        self.modality_var = float(modality_var)
        self.rel_ent = GaussianTable(num_entities, dim, std, var_init, point)
        self.relations = GaussianTable(num_relations, dim, std, var_init, point)
        self.common = GaussianTable(num_entities, dim, std, var_init, point)
        self.vis_ent = self.image_proj = None
        if image_dim:
            self.vis_ent = GaussianTable(num_entities, dim, std, var_init, point)
            self.image_proj = nn.Linear(image_dim, dim)  # M_1
        self.num_ent = self.numeric = None
        if num_attributes:
            self.num_ent = GaussianTable(num_entities, dim, std, var_init, point)
            # eq. 5: RBF centres / widths per attribute, and the attribute-name embeddings
            self.numeric = NumericRbfEncoder(num_attributes, rbf_centres, name_dim=dim, per_attribute=True)
            self.rbf_proj = nn.Linear(rbf_centres, dim)
            # two 2x4 convolutions with 2 feature maps, "same" padding (as MMEA's attribute CNN)
            self.cnn = nn.Sequential(SameConv2x4(1, 2), nn.Tanh(), SameConv2x4(2, 2), nn.Tanh())
            self.num_out = nn.Linear(2 * 2 * dim, dim)  # W

    def tables(self) -> dict:
        out = {"relations": self.rel_ent, "relation_types": self.relations, "common": self.common}
        if self.vis_ent is not None:
            out["images"] = self.vis_ent
        if self.num_ent is not None:
            out["numeric"] = self.num_ent
        return out

    def set_stage(self, stage: int) -> None:
        """Stage 1: every variance fixed; stage 2: variances trainable (none for the point twin)."""
        if stage not in (1, 2):
            raise MmeaInputError(f"stage must be 1 or 2, got {stage}")
        self.stage = stage
        for t in self.tables().values():
            t.set_variance_trainable(stage == 2)

    def clamp_(self, var_min: float, var_max: float, max_norm: float = 0.0, names=None,
               touched_only: bool = False) -> None:
        """Project after a step: variances into ``[var_min, var_max]``, relational means into the ball.

        ``names``: only these tables (:meth:`tables` keys), None = all; ``touched_only``: only
        the rows that have a gradient (call before the gradients are cleared).
        """
        for name, t in self.tables().items():
            if names is None or name in names:
                rows = t.touched_rows() if touched_only else None
                if touched_only and rows is None:
                    continue
                t.clamp_(var_min, var_max, max_norm if name in ("relations", "relation_types") else 0.0, rows)

    def fixed(self, mu):
        """The fixed variance ``0.5`` of an image / number distribution, as a 0-dim tensor."""
        return mu.new_tensor(self.modality_var)

    def image_mean(self, feats):
        """``mu_i = tanh(M_1 i)`` (eq. 3), ``(B, d)``."""
        return torch.tanh(self.image_proj(feats))

    def numeric_mean(self, attribute, value):
        """``mu_n = tanh(vec(CNN(tanh(M_2))) W)`` with ``M_2 = [emb(a); W_rbf phi(n)]`` (eqs. 5-6), ``(B, d)``."""
        rows = torch.stack([self.numeric.names(attribute),
                            self.rbf_proj(self.numeric.rbf(attribute, value))], dim=1)  # (B, 2, d)
        h = self.cnn(torch.tanh(rows).unsqueeze(1))  # (B, 2, 2, d)
        return torch.tanh(self.num_out(h.flatten(1)))  # (B, d)

    def relation_scores(self, h, r, t):
        """``f_rel`` (eq. 1) of index tensors of any (equal or broadcastable) shape."""
        return relation_score(*self.rel_ent(h), *self.relations(r), *self.rel_ent(t))

    def relation_scores_replaced(self, batch, sides, replacements):
        """``(pos (B,), neg (B, K))`` scores: ``batch (B, 3)`` and its copies with the head
        (``sides (B, K)`` True) or the tail replaced by ``replacements (B, K)``.

        Only the replaced entity is gathered per negative; the kept one is the positive's row.
        """
        mu_h, var_h = self.rel_ent(batch[:, 0], sparse=False)  # (B, d)
        mu_t, var_t = self.rel_ent(batch[:, 2], sparse=False)
        mu_r, var_r = self.relations(batch[:, 1], sparse=False)
        pos = relation_score(mu_h, var_h, mu_r, var_r, mu_t, var_t)  # (B,)
        mu_x, var_x = self.rel_ent(replacements, sparse=False)  # (B, K, d)
        side = sides.unsqueeze(-1)  # (B, K, 1)

        def put(rep, keep, replace):  # rep where replaced, else the positive's row; a 0-dim variance is shared
            return rep if rep.dim() == 0 else torch.where(replace, rep, keep.unsqueeze(1))

        mu_hn, var_hn = put(mu_x, mu_h, side), put(var_x, var_h, side)
        mu_tn, var_tn = put(mu_x, mu_t, ~side), put(var_x, var_t, ~side)
        r = (mu_r.unsqueeze(1), var_r.unsqueeze(1) if var_r.dim() else var_r)
        neg = relation_score(mu_hn, var_hn, r[0], r[1], mu_tn, var_tn)  # (B, K)
        return pos, neg
