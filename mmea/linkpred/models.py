"""Link-prediction scoring models (``LP_MODELS``): TransE, DistMult, RotatE.

Every model scores a triple as ``f(h, r, t) = compare(query, candidate)``
where the query folds the relation into the fixed entity:

* tail prediction ``(h, r, ?)``: ``q = tail_query(h, r)``, candidate ``t``;
* head prediction ``(?, r, t)``: ``q = head_query(r, t)``, candidate ``h``.

So one compare function serves positives, per-positive negatives
(``q (B, 1, d)`` against ``c (B, K, d)``), batch-shared negatives and the
all-entity ranking of evaluation (``q (B, d)`` against ``C (K, d)``, a matrix
product or ``torch.cdist``).  Higher scores mean more plausible triples.

==============  ================================================================  ==========================
model           score                                                             head query
==============  ================================================================  ==========================
``transe``      ``-||h + r - t||_p`` (Bordes et al., 2013, NeurIPS)               ``t - r``
``distmult``    ``<h, r, t> = sum_i h_i r_i t_i`` (Yang et al., 2015, ICLR)       ``r * t``
``rotate``      ``-sum_i |h_i r_i - t_i|``, ``h, t in C^d``, ``|r_i| = 1``        ``t * conj(r)``
                (Sun et al., 2019, ICLR)
==============  ================================================================  ==========================

This module imports torch at the top: only the link-prediction trainer imports it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import MmeaInputError
from ..registry import Registry

__all__ = ["LP_MODELS", "KgeModel", "TransEModel", "DistMultModel", "RotatEModel", "make_lp_model"]

#: elements of one ``(B, chunk, d)`` block when a score cannot be a matrix product
_BLOCK_ELEMENTS = 1 << 23


class KgeModel(nn.Module):
    """Entity and relation embeddings plus the query/compare pair that defines the score."""

    registry_name: str = ""

    def __init__(self, num_entities: int, num_relations: int, dim: int = 200):
        super().__init__()
        if dim < 1 or num_entities < 1 or num_relations < 1:
            raise MmeaInputError(f"model sizes must be positive (entities {num_entities}, relations "
                                 f"{num_relations}, dim {dim})")
        self.num_entities, self.num_relations, self.dim = int(num_entities), int(num_relations), int(dim)

    # -- the model-specific parts ------------------------------------------------
    def tail_query(self, h: torch.Tensor, r: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def head_query(self, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def compare(self, q: torch.Tensor, c: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Scores of broadcastable ``q (..., d)`` and ``c (..., d)`` -> ``(...)``."""
        raise NotImplementedError

    def compare_all(self, q: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``q (B, d)`` against every row of ``c (K, d)`` -> ``(B, K)`` (blockwise broadcast by default)."""
        step = max(1, _BLOCK_ELEMENTS // max(1, q.shape[0] * q.shape[1]))
        return torch.cat([self.compare(q[:, None, :], c[None, j:j + step, :]) for j in range(0, len(c), step)],
                         dim=1)

    # -- embeddings -----------------------------------------------------------------
    def entity(self, idx: torch.Tensor) -> torch.Tensor:
        # F.embedding: its backward is ~2x faster on CPU than advanced indexing's index_put
        return nn.functional.embedding(idx, self.entity_emb)

    def relation(self, idx: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(idx, self.relation_emb)

    def all_entities(self) -> torch.Tensor:
        return self.entity_emb

    def entity_embeddings(self):
        """``(E, d')`` float32 numpy (what is saved and what ``hard-nn`` searches)."""
        return self.all_entities().detach().float().cpu().numpy()

    def relation_embeddings(self):
        return self.relation_emb.detach().float().cpu().numpy()

    # -- scores ---------------------------------------------------------------------
    def score_hrt(self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Scores of index tensors broadcast together, e.g. ``(B, 1)``, ``(B, 1)``, ``(B, K)`` -> ``(B, K)``."""
        return self.compare(self.tail_query(self.entity(h), self.relation(r)), self.entity(t))

    def score_replaced(self, batch: torch.Tensor, sides: torch.Tensor, replacements: torch.Tensor) -> torch.Tensor:
        """Scores ``(B, K)`` of ``batch (B, 3)`` with the head (``sides`` True) or tail set to ``replacements (B, K)``.

        Only the replacement rows are gathered per negative: ``q`` is the
        head or tail query of the positive, chosen per slot.
        """
        h, r, t = batch[:, 0], batch[:, 1], batch[:, 2]
        rel = self.relation(r)
        q_tail = self.tail_query(self.entity(h), rel)  # (B, d)
        q_head = self.head_query(rel, self.entity(t))  # (B, d)
        q = torch.where(sides[..., None], q_head[:, None, :], q_tail[:, None, :])  # (B, K, d)
        return self.compare(q, self.entity(replacements))  # (B, K)

    def score_shared(self, batch: torch.Tensor, sides: torch.Tensor, head_candidates: torch.Tensor,
                     tail_candidates: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``(B, K)``: row ``b`` with its head (``sides[b]``) or tail replaced by each shared candidate.

        ``tail_candidates=None``: the same candidates replace heads and tails
        (one matrix product instead of two).
        """
        h, r, t = batch[:, 0], batch[:, 1], batch[:, 2]
        rel = self.relation(r)
        q_tail = self.tail_query(self.entity(h), rel)  # (B, d)
        q_head = self.head_query(rel, self.entity(t))  # (B, d)
        if tail_candidates is None:
            q = torch.where(sides[:, None], q_head, q_tail)
            return self.compare_all(q, self.entity(head_candidates))  # (B, K)
        s_head = self.compare_all(q_head, self.entity(head_candidates))
        s_tail = self.compare_all(q_tail, self.entity(tail_candidates))
        return torch.where(sides[:, None], s_head, s_tail)

    def score_all_tails(self, h: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """``(B, E)``: ``f(h_b, r_b, e)`` for every entity ``e``."""
        return self.compare_all(self.tail_query(self.entity(h), self.relation(r)), self.all_entities())

    def score_all_heads(self, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``(B, E)``: ``f(e, r_b, t_b)`` for every entity ``e``."""
        return self.compare_all(self.head_query(self.relation(r), self.entity(t)), self.all_entities())

    def regularizer(self, batch: torch.Tensor) -> torch.Tensor:
        """Mean squared L2 norm of the positive triples' embeddings (weighted by the trainer)."""
        h, r, t = self.entity(batch[:, 0]), self.relation(batch[:, 1]), self.entity(batch[:, 2])
        return (h.pow(2).sum(-1) + r.pow(2).sum(-1) + t.pow(2).sum(-1)).mean()

    def post_step(self) -> None:
        """Called after each optimiser step (projections such as TransE's unit entity norms)."""

    def describe(self) -> dict:
        return {"name": self.registry_name, "dim": self.dim}


LP_MODELS: Registry[KgeModel] = Registry("link-prediction model", suffix="Model")


def make_lp_model(name: str, num_entities: int, num_relations: int, dim: int, **kwargs) -> KgeModel:
    """Build a registered model, keeping only the keyword arguments it accepts."""
    import inspect

    cls = LP_MODELS.get(name)
    accepted = inspect.signature(cls.__init__).parameters
    return cls(num_entities, num_relations, dim, **{k: v for k, v in kwargs.items() if k in accepted})


@LP_MODELS.register(name="transe")
class TransEModel(KgeModel):
    """TransE: f = -||h + r - t||_p (Bordes et al., 2013).

    ``normalize_entities`` projects entity rows to unit L2 norm after each
    step (the paper's constraint, for the margin loss): then the init is the
    paper's uniform ``±6 / sqrt(d)`` with unit-norm relations.  Otherwise
    (the default, for the self-adversarial loss) entities and relations are
    uniform in ``±(margin + 2) / d`` for L1 as in the RotatE code
    (``±(margin + 2) / sqrt(d)`` for L2), so initial distances are of the
    order of the margin gamma instead of ``~0.4 d``.
    """

    def __init__(self, num_entities, num_relations, dim=200, p_norm: int = 1, normalize_entities: bool = False,
                 margin: float = 9.0):
        super().__init__(num_entities, num_relations, dim)
        if p_norm not in (1, 2):
            raise MmeaInputError(f"transe: p_norm must be 1 or 2, got {p_norm}")
        self.p_norm = p_norm
        self.normalize_entities = bool(normalize_entities)
        if self.normalize_entities:
            b = 6.0 / math.sqrt(dim)
            self.entity_emb = nn.Parameter(torch.empty(num_entities, dim).uniform_(-b, b))
            rel = torch.empty(num_relations, dim).uniform_(-b, b)
            self.relation_emb = nn.Parameter(nn.functional.normalize(rel, p=2, dim=1))
        else:
            b = (max(float(margin), 0.0) + 2.0) / (dim if p_norm == 1 else math.sqrt(dim))
            self.entity_emb = nn.Parameter(torch.empty(num_entities, dim).uniform_(-b, b))
            self.relation_emb = nn.Parameter(torch.empty(num_relations, dim).uniform_(-b, b))
        self.post_step()

    def tail_query(self, h, r):
        return h + r

    def head_query(self, r, t):
        return t - r

    def compare(self, q, c):
        return -torch.linalg.vector_norm(q - c, ord=self.p_norm, dim=-1)

    def compare_all(self, q, c):
        return -torch.cdist(q, c, p=self.p_norm)

    def regularizer(self, batch):
        return super().regularizer(batch) if not self.normalize_entities else self.entity_emb.new_zeros(())

    @torch.no_grad()
    def post_step(self):
        if self.normalize_entities:  # in place: the optimiser keeps its reference to the tensor
            self.entity_emb.div_(self.entity_emb.norm(p=2, dim=1, keepdim=True).clamp_min(1e-12))

    def describe(self):
        return {**super().describe(), "p_norm": self.p_norm, "normalize_entities": self.normalize_entities}


@LP_MODELS.register(name="distmult")
class DistMultModel(KgeModel):
    """DistMult: f = <h, r, t> = sum_i h_i r_i t_i (Yang et al., 2015). Xavier-normal init."""

    def __init__(self, num_entities, num_relations, dim=200):
        super().__init__(num_entities, num_relations, dim)
        self.entity_emb = nn.Parameter(nn.init.xavier_normal_(torch.empty(num_entities, dim)))
        self.relation_emb = nn.Parameter(nn.init.xavier_normal_(torch.empty(num_relations, dim)))

    def tail_query(self, h, r):
        return h * r

    def head_query(self, r, t):
        return r * t

    def compare(self, q, c):
        return (q * c).sum(-1)

    def compare_all(self, q, c):
        return q @ c.T


@LP_MODELS.register(name="rotate")
class RotatEModel(KgeModel):
    """RotatE: f = -sum_i |h_i r_i - t_i| with h, t complex and r_i = e^{i theta_i} (Sun et al., 2019).

    Entities hold ``[re | im]`` (``2 d`` reals), relations a phase ``theta``
    (``d``).  Entities are initialised uniformly in ``±(margin + 2) / d`` as in
    the paper's code (``margin`` = the loss's gamma).  ``|r_i| = 1``, so the
    head query is the tail rotated back: ``|h r - t| = |h - t conj(r)|``.
    """

    def __init__(self, num_entities, num_relations, dim=200, margin: float = 9.0):
        super().__init__(num_entities, num_relations, dim)
        b = (float(margin) + 2.0) / dim
        self.entity_emb = nn.Parameter(torch.empty(num_entities, 2 * dim).uniform_(-b, b))
        self.relation_emb = nn.Parameter(torch.empty(num_relations, dim).uniform_(-math.pi, math.pi))

    def _rotate(self, x, phase, sign: float):
        re, im = x[..., :self.dim], x[..., self.dim:]
        c, s = torch.cos(phase), sign * torch.sin(phase)
        return torch.cat([re * c - im * s, re * s + im * c], dim=-1)

    def tail_query(self, h, r):
        return self._rotate(h, r, 1.0)

    def head_query(self, r, t):
        return self._rotate(t, r, -1.0)

    def compare(self, q, c):
        d = q - c
        return -torch.sqrt(d[..., :self.dim] ** 2 + d[..., self.dim:] ** 2 + 1e-12).sum(-1)

    def regularizer(self, batch):
        h, t = self.entity(batch[:, 0]), self.entity(batch[:, 2])
        return (h.pow(2).sum(-1) + t.pow(2).sum(-1)).mean()
