"""Losses over positive and negative scores (``LOSSES``, ``mmea ls losses``).

Every loss reads scores where **higher means more plausible**
(``f = -d`` for distance models such as TransE and RotatE):
``pos (B,)`` for the positives and ``neg (B, K)`` for their negatives, plus an
optional bool ``mask (B, K)`` of the negatives to use (rejected or
self-paired candidates are masked out).  Each loss is a pure function
(``*_loss``) testable without a model, wrapped by a small registered class
holding its hyper-parameters; the classes import torch only when called.

==================  =============================================================================
``margin-ranking``  ``mean_{b,j} max(0, gamma - f(pos_b) + f(neg_bj))`` (Bordes et al., 2013)
``softplus``        logistic: ``mean_b [softplus(-f(pos_b)) + mean_j softplus(f(neg_bj))]``
``self-adversarial``  ``-log s(gamma + f(pos)) - sum_j p_j log s(-gamma - f(neg_j))``,
                    ``p = softmax(alpha f(neg))`` detached (Sun et al., 2019, RotatE)
``info-nce``        ``-log exp(f(pos)/tau) / (exp(f(pos)/tau) + sum_j exp(f(neg_j)/tau))``
                    (van den Oord et al., 2018), ``tau`` fixed or learnable
==================  =============================================================================
"""

from __future__ import annotations

import math
from typing import Any

from .errors import MmeaInputError
from .registry import Registry

__all__ = [
    "LOSSES",
    "Loss",
    "MarginRankingLoss",
    "SoftplusLoss",
    "SelfAdversarialLoss",
    "InfoNceLoss",
    "margin_ranking_loss",
    "softplus_loss",
    "self_adversarial_weights",
    "self_adversarial_loss",
    "info_nce_loss",
    "make_loss",
]


def _masked_mean(x, mask, dim=None):
    """Mean of ``x`` over ``mask`` (all when None); 0 where nothing is selected."""
    if mask is None:
        return x.mean() if dim is None else x.mean(dim=dim)
    m = mask.to(x.dtype)
    if dim is None:
        return (x * m).sum() / m.sum().clamp_min(1.0)
    return (x * m).sum(dim=dim) / m.sum(dim=dim).clamp_min(1.0)


def _check_shapes(pos, neg, mask) -> None:
    if pos.dim() != 1 or neg.dim() != 2 or neg.shape[0] != pos.shape[0]:
        raise MmeaInputError(f"scores must be pos (B,) and neg (B, K); got {tuple(pos.shape)} and {tuple(neg.shape)}")
    if mask is not None and tuple(mask.shape) != tuple(neg.shape):
        raise MmeaInputError(f"mask must have the shape of neg {tuple(neg.shape)}, got {tuple(mask.shape)}")


# ----------------------------------------------------------------------------- pure functions
def margin_ranking_loss(pos, neg, margin: float = 1.0, mask=None):
    """``mean over valid (b, j) of max(0, margin - pos_b + neg_bj)`` (Bordes et al., 2013, TransE)."""
    import torch

    _check_shapes(pos, neg, mask)
    return _masked_mean(torch.relu(margin - pos[:, None] + neg), mask)  # (B, K) -> ()


def softplus_loss(pos, neg, mask=None):
    """Logistic loss ``mean_b [softplus(-pos_b) + mean_j softplus(neg_bj)]`` (Trouillon et al., 2016).

    ``softplus(-x) = -log sigma(x)``: positives are pushed to large scores,
    negatives to small ones; each positive weighs as much as its negatives together.
    """
    import torch.nn.functional as F

    _check_shapes(pos, neg, mask)
    return (F.softplus(-pos) + _masked_mean(F.softplus(neg), mask, dim=1)).mean()


def self_adversarial_weights(neg, temperature: float = 1.0, mask=None):
    """``p_bj = exp(alpha f(neg_bj)) / sum_k exp(alpha f(neg_bk))``, detached (no gradient through p).

    Sun et al. (2019), "RotatE: Knowledge Graph Embedding by Relational
    Rotation in Complex Space" (ICLR), eq. 5; ``alpha`` = ``temperature``.
    Masked negatives get ``p = 0``.
    """
    import torch

    logits = temperature * neg.detach()
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    p = torch.softmax(logits, dim=1)  # (B, K)
    return torch.nan_to_num(p, nan=0.0)  # a fully masked row -> zeros


def self_adversarial_loss(pos, neg, margin: float = 9.0, temperature: float = 1.0, mask=None):
    """Self-adversarial negative sampling loss (Sun et al., 2019, eq. 5), averaged over the batch.

    ``L_b = -log sigma(gamma + f(pos_b)) - sum_j p_bj log sigma(-gamma - f(neg_bj))``,
    ``p = softmax(alpha f(neg))`` (:func:`self_adversarial_weights`).  With
    ``f = -d`` this is the paper's ``-log sigma(gamma - d) - sum p log sigma(d' - gamma)``;
    use ``margin = 0`` for similarity models (DistMult) as in the RotatE code.
    """
    import torch.nn.functional as F

    _check_shapes(pos, neg, mask)
    p = self_adversarial_weights(neg, temperature, mask)  # (B, K)
    pos_term = -F.logsigmoid(margin + pos)  # (B,)
    neg_term = -(p * F.logsigmoid(-margin - neg)).sum(dim=1)  # (B,)
    return (pos_term + neg_term).mean()


def info_nce_loss(pos, neg, temperature=0.1, mask=None):
    """InfoNCE / sampled softmax: ``-log softmax([pos, neg_1..K] / tau)[0]``, averaged over the batch.

    van den Oord et al. (2018), "Representation Learning with Contrastive
    Predictive Coding".  ``temperature`` may be a float or a 0-dim tensor
    (learnable).  Masked negatives are left out of the denominator.
    """
    import torch

    _check_shapes(pos, neg, mask)
    logits = torch.cat([pos[:, None], neg], dim=1) / temperature  # (B, 1 + K)
    if mask is not None:
        keep = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        logits = logits.masked_fill(~keep, float("-inf"))
    return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()


# ----------------------------------------------------------------------------- registered classes
class Loss:
    """A loss over ``pos (B,)`` / ``neg (B, K)`` scores; ``parameters()`` lists learnable tensors."""

    registry_name: str = ""

    def __call__(self, pos, neg, mask=None):  # pragma: no cover - abstract
        raise NotImplementedError

    def parameters(self) -> list:
        return []

    def to(self, device) -> "Loss":
        return self

    def describe(self) -> dict:
        return {"name": self.registry_name}


LOSSES: Registry[Loss] = Registry("loss", suffix="Loss")


def make_loss(name: Any, **kwargs) -> Loss:
    """Build a registered loss, keeping only the keyword arguments it accepts."""
    import inspect

    cls = LOSSES.get(name) if isinstance(name, str) else name
    if not isinstance(cls, type):
        return cls
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in kwargs.items() if k in accepted})


@LOSSES.register
class MarginRankingLoss(Loss):
    """Pairwise hinge: max(0, margin - f(pos) + f(neg)) (Bordes et al., 2013)."""

    def __init__(self, margin: float = 1.0):
        self.margin = float(margin)

    def __call__(self, pos, neg, mask=None):
        return margin_ranking_loss(pos, neg, self.margin, mask)

    def describe(self):
        return {"name": self.registry_name, "margin": self.margin}


@LOSSES.register(aliases=("logistic",))
class SoftplusLoss(Loss):
    """Logistic loss: softplus(-f(pos)) + mean softplus(f(neg)) (Trouillon et al., 2016)."""

    def __call__(self, pos, neg, mask=None):
        return softplus_loss(pos, neg, mask)


@LOSSES.register(aliases=("nssa", "self-adv"))
class SelfAdversarialLoss(Loss):
    """Self-adversarial negative sampling, p_j ∝ exp(alpha f(neg_j)) (Sun et al., 2019, RotatE)."""

    def __init__(self, margin: float = 9.0, adversarial_temperature: float = 1.0):
        self.margin = float(margin)
        self.temperature = float(adversarial_temperature)

    def __call__(self, pos, neg, mask=None):
        return self_adversarial_loss(pos, neg, self.margin, self.temperature, mask)

    def describe(self):
        return {"name": self.registry_name, "margin": self.margin, "adversarial_temperature": self.temperature}


@LOSSES.register(aliases=("infonce",))
class InfoNceLoss(Loss):
    """InfoNCE / sampled softmax with temperature tau, fixed or learnable (van den Oord et al., 2018).

    A learnable ``tau`` is parameterised as ``exp(log_tau)`` so it stays
    positive; it is clamped to ``[min_temperature, 10]``.
    """

    def __init__(self, temperature: float = 0.1, learnable_temperature: bool = False,
                 min_temperature: float = 1e-3):
        if temperature <= 0:
            raise MmeaInputError(f"info-nce temperature must be > 0, got {temperature}")
        self.learnable = bool(learnable_temperature)
        self.min_temperature = float(min_temperature)
        self._tau = float(temperature)
        self.log_tau = None
        if self.learnable:
            import torch

            self.log_tau = torch.nn.Parameter(torch.tensor(math.log(temperature)))

    @property
    def temperature(self):
        if self.log_tau is None:
            return self._tau
        return self.log_tau.exp().clamp(self.min_temperature, 10.0)

    def __call__(self, pos, neg, mask=None):
        return info_nce_loss(pos, neg, self.temperature, mask)

    def parameters(self):
        return [self.log_tau] if self.log_tau is not None else []

    def to(self, device):
        if self.log_tau is not None:
            import torch

            self.log_tau = torch.nn.Parameter(self.log_tau.detach().to(device))
        return self

    def describe(self):
        t = self.temperature
        t = float(t.detach()) if hasattr(t, "detach") else float(t)
        return {"name": self.registry_name, "temperature": t, "learnable_temperature": self.learnable}
