"""Torch modules of ``gaussian-strong`` (:mod:`mmea.models.gaussian_strong`).

Each modality ``m`` gives every entity a diagonal Gaussian ``N(mu_m, diag(var_min + v_m))`` from an encoder
with a mean head and a log-variance head (``log v_m``); an entity without the modality gets the modality's
learned wide prior ``N(mu0_m, var_min + v0_m)`` (one vector per modality, not per entity).  The common-space
distribution is the product of the modality experts (precision-weighted):

    1 / v_e = sum_m 1 / v_m,    mu_e = v_e sum_m mu_m / v_m,    Sigma_e = diag(var_min + v_e)

so an entity with fewer modalities has a larger common-space variance.  With ``point=True`` every
log-variance head is frozen at ``log var_init`` (weights 0, bias ``log var_init``) and every prior at
``log prior_var``: the same network with variances frozen.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..encoders.numeric_nn import NumericRbfEncoder
from .gaussian_nn import SameConv2x4
from .relational_gnn_nn import RelationalGnn

__all__ = ["GaussianHead", "GaussianStrongNet"]


class GaussianHead(nn.Module):
    """Mean and log-variance heads ``(h (n, in)) -> (mu (n, d), log v (n, d))`` plus a learned prior."""

    def __init__(self, in_dim: int, dim: int, var_init: float, prior_var: float, point: bool,
                 init: str = "default"):
        super().__init__()
        self.mu = nn.Linear(in_dim, dim)
        if init == "orthogonal":  # W_mu with orthonormal rows (or columns), b_mu = 0: the head starts by keeping
            nn.init.orthogonal_(self.mu.weight)  # the input's geometry (exactly when dim == in_dim)
            nn.init.zeros_(self.mu.bias)
        self.logvar = nn.Linear(in_dim, dim)
        nn.init.zeros_(self.logvar.weight)
        nn.init.constant_(self.logvar.bias, math.log(var_init))
        self.prior_mu = nn.Parameter(torch.zeros(dim))
        self.prior_logvar = nn.Parameter(torch.full((dim,), math.log(prior_var)))
        if point:
            for p in (self.logvar.weight, self.logvar.bias, self.prior_logvar):
                p.requires_grad_(False)

    def forward(self, h, mask):
        """``(mu, log v)`` ``(n, d)``: the heads where ``mask (n,)`` is True, the prior elsewhere."""
        m = mask[:, None]
        mu = torch.where(m, torch.tanh(self.mu(h)), self.prior_mu)
        lv = torch.where(m, self.logvar(h), self.prior_logvar)
        return mu, lv


class GaussianStrongNet(nn.Module):
    """Relations (:class:`RelationalGnn`), numbers (RBF + CNN), images (linear) and propagated seed anchors
    (linear) to diagonal Gaussians."""

    def __init__(self, graph: dict, *, dim: int, gnn_dim: int, layers: int, dropout: float, image_dim: int,
                 num_attributes: int, rbf_centres: int, point: bool, var_init: float, prior_var: float,
                 anchor_dim: int = 0, gnn: bool = True, anchor_init: str = "default", numeric_dim: int = 0,
                 device: str = "cpu"):
        super().__init__()
        self.dim, self.point = dim, point
        self.heads = nn.ModuleDict()
        self.gnn = RelationalGnn(graph, gnn_dim, layers, dropout, device=device) if gnn else None
        if gnn:
            self.heads["relations"] = GaussianHead(self.gnn.out_dim, dim, var_init, prior_var, point)
        if image_dim:
            self.image_in = nn.Linear(image_dim, dim)
            self.heads["images"] = GaussianHead(dim, dim, var_init, prior_var, point)
        if num_attributes:
            # the per-triple RBF + CNN path runs at width k = numeric_dim (0: dim): its activations over every
            # numerical triple are what costs memory (over 24 GiB at k = 768 on FB15K-DB15K)
            k = numeric_dim or dim
            self.numeric = NumericRbfEncoder(num_attributes, rbf_centres, name_dim=k, per_attribute=True)
            self.rbf_proj = nn.Linear(rbf_centres, k)
            self.cnn = nn.Sequential(SameConv2x4(1, 2), nn.Tanh(), SameConv2x4(2, 2), nn.Tanh())
            self.num_out = nn.Linear(2 * 2 * k, k)
            self.heads["numeric"] = GaussianHead(k, dim, var_init, prior_var, point)
        if anchor_dim:
            # propagated seed anchors: unit rows of width D; scaled so a row's entries have RMS 1 / 2, the mean
            # head's input scale of the other modalities
            self.anchor_scale = 0.5 * math.sqrt(anchor_dim)
            self.heads["anchors"] = GaussianHead(anchor_dim, dim, var_init, prior_var, point, init=anchor_init)
        self.to(device)

    def numeric_entities(self, ent, attr, value, n: int):
        """Mean over each entity's numerical triples of ``tanh(vec(CNN(tanh [emb(a); W phi(v)])) W)``: ``(n, k)``."""
        rows = torch.stack([self.numeric.names(attr), self.rbf_proj(self.numeric.rbf(attr, value))], 1)  # (m, 2, k)
        h = torch.tanh(self.num_out(self.cnn(torch.tanh(rows).unsqueeze(1)).flatten(1)))  # (m, k)
        out = h.new_zeros((n, h.shape[1])).index_add_(0, ent, h)
        cnt = torch.bincount(ent, minlength=n).clamp_min(1).to(h.dtype)[:, None]
        return out / cnt

    def forward(self, inputs: dict):
        """``(gnn (n, D) or None without the GNN, {modality: (mu, log v)}, (mu_e (n, d), log v_e (n, d)))``.

        ``inputs``: ``masks`` {modality: bool (n,)}, ``images`` (n, D_i) or None, ``numeric`` (ent, attr, value),
        ``anchors`` (n, D_a) unit rows or None.
        """
        masks = inputs["masks"]
        n = len(masks["relations"])
        g = self.gnn() if self.gnn is not None else None  # (n, D)
        modal = {"relations": self.heads["relations"](g, masks["relations"])} if g is not None else {}
        if "images" in self.heads:
            modal["images"] = self.heads["images"](F.relu(self.image_in(inputs["images"])), masks["images"])
        if "numeric" in self.heads:
            h = self.numeric_entities(*inputs["numeric"], n)
            modal["numeric"] = self.heads["numeric"](h, masks["numeric"])
        if "anchors" in self.heads:
            modal["anchors"] = self.heads["anchors"](inputs["anchors"] * self.anchor_scale, masks["anchors"])
        lv = torch.stack([v for _, v in modal.values()])  # (M, n, d)
        mu = torch.stack([m for m, _ in modal.values()])
        w = torch.softmax(-lv, dim=0)  # precision weights 1 / v_m, normalised over the modalities
        mu_e = (w * mu).sum(0)  # (n, d)
        lv_e = -torch.logsumexp(-lv, dim=0)  # log v_e = -log sum_m 1 / v_m
        return g, modal, (mu_e, lv_e)
