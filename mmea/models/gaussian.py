"""Gaussian common-space model (``gaussian``) and its point-embedding twin (``mmea-point``).

Hama & Matsubara, "Common Space Learning with Gaussian Embedding for
Multi-Modal Entity Alignment", built on MMEA (Chen et al., "MMEA: Entity
Alignment for Multi-modal Knowledge Graph", KSEM 2020).  Every entity has a
diagonal Gaussian in each modality space and one in the common space; the maths
is in :mod:`mmea.models.gaussian_math` (equation numbers are the paper's):

- **relations** (eqs. 1-2): entities and relations ``N(mu, S)``;
  ``f_rel(h, r, t) = -KL(N(mu_h - mu_t, S_h + S_t) || N(mu_r, S_r))`` and the
  margin loss ``sum_{D+} sum_{D-} [gamma - f_rel(pos) + f_rel(neg)]_+``.  Both
  KGs share one id space; ``D+`` holds the triples of both plus the
  *exchange* triples of the train links (:func:`mmea.seeds.exchange_triples`);
  ``D-`` replaces the head or the tail by a uniformly random entity *of the
  same KG* (:class:`~mmea.sampling.UniformNegativeSampler`, filtered against
  ``D+``: a negative is never in ``D+``);
- **images** (eqs. 3-4): ``mu_i = tanh(M_1 i)``, ``S_i = 0.5 I``,
  ``f_vis = -KL(e_vis || N(mu_i, S_i))``, ``L_vis = log(1 + exp(-f_vis))``;
- **numbers** (eqs. 5-7): each numerical attribute triple ``(e, a, n)`` gives
  ``M_2 = [emb(a); W_rbf phi(n)]`` (``2 x d``; ``phi`` the RBF features of eq. 5,
  learnable centres and widths per attribute, from
  :class:`~mmea.encoders.numeric_nn.NumericRbfEncoder`),
  ``mu_n = tanh(vec(CNN(tanh(M_2))) W)``, ``S_n = 0.5 I``,
  ``f_num = -KL(e_num || N(mu_n, S_n))``, ``L_num = log(1 + exp(-f_num))``;
- **common space** (eq. 8): ``L_csl = KL(e || e_rel) + KL(e || e_vis) + KL(e || e_num)``
  over the modalities the entity has (presence masks);
- **alignment** (eq. 9): ``L_ac = KL(e_1 || e_2)`` over the train links.

As in MMEA, ``e_rel``, ``e_vis`` and ``e_num`` are each entity's own
distributions in the three modality spaces (separate tables), and ``e`` its
distribution in the common space; ``L_csl`` moves both sides.

Training (as MMEA): the five losses are minimised in turn, one epoch of each
per round, each with its own optimiser (lazy Adam on the rows of the tables
a batch touches, Adam on the encoders ``M_1`` and the numerical CNN, with
their own learning rate).  Two stages: (1) means only, every variance fixed
at 0.5; (2) variances trainable, clamped to ``[var_min, var_max]`` (default
[0.5, 50]) after every step.  Stage 2 starts after ``stage1_epochs`` rounds,
after ``stage1_fraction`` of the time budget, or when the validation Hits@1
stalls for ``patience`` evaluations; training stops at ``epochs`` rounds, at
``max_minutes`` or when stage 2 stalls.  The state with the best validation
Hits@1 (then MRR) is kept; the test links are never seen.

:meth:`GaussianModel.embeddings` returns the common-space means, L2-normalised,
so the shared CSLS search ranks them; :meth:`GaussianModel.rerank_metrics`
adds a symmetric-KL re-rank of the CSLS top-k (``rerank_k``), reported as its
own ``test_by_method`` row.  ``model_info["variances"]`` holds the learned
variances by modality coverage (the paper's motivation: entities with
missing or noisy modalities should get larger variances) in the kept (best
validation) state, ``model_info["variances_last"]`` the same after the last
round (the kept state may be a stage-1 one, where every variance is still 0.5).

The **point twin** (``--model mmea-point`` = ``--model gaussian --set point=true``)
keeps every variance at 0.5 (no variance parameters): every KL above becomes
a squared Euclidean distance (``KL(N(a, .5 I) || N(b, .5 I)) = ||a - b||^2``),
i.e. MMEA with TransE; everything else is shared.

Image features come from :mod:`mmea.features` (pretrained or precomputed, see
``[features]``); with ``image_source="auto"`` and no weights on disk the
model falls back to the raw pixels (``pixel_size`` x ``pixel_size`` RGB,
what the offline demo uses), and says so in the run notes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import Fraction, NonNegFloat, NonNegInt, PositiveFloat, PositiveInt
from ..errors import MmeaInputError
from ..progress import epoch_postfix
from ..sampling import UniformNegativeSampler
from ..training import EpochOutput, Trainer, TimeBudget, TrainingModule, Validation
from ..modalities import FeatureRequest
from ..seeds import exchange_triples, train_seeds
from .base import MODELS, AlignmentModel
from .gaussian_math import alignment_loss, common_space_loss, modality_loss, modality_score, symmetric_kl

log = logging.getLogger("mmea.models")

__all__ = ["GaussianModel", "MmeaPointModel", "GaussianTraining", "GaussianData", "SameGraphUniformSampler",
           "relation_positives", "pixel_image_features", "build_network", "kl_rerank_ranks"]

IMAGE_SOURCES = ("auto", "features", "pixels", "none")


# ----------------------------------------------------------------------------- data
class SameGraphUniformSampler(UniformNegativeSampler):
    """Uniform negatives drawn from the KG of the replaced entity (ids ``< num_source`` = source KG).

    Both KGs live in one id space; a corrupted source triple gets a source
    entity and a target triple a target entity (as MMEA does).  Filtering and
    resampling are the base class's: with ``filter_triples = D+`` no negative
    is in ``D+``.
    """

    def __init__(self, triples, num_entities, num_relations, *, num_source: int, **kwargs):
        super().__init__(triples, num_entities, num_relations, **kwargs)
        if not 0 < num_source < num_entities:
            raise MmeaInputError(f"num_source must split the {num_entities} entities, got {num_source}")
        self.num_source = int(num_source)

    def _corrupt(self, batch, sides, num_negatives, rng):
        replaced = np.where(sides, batch[:, None, 0], batch[:, None, 2])  # (B, K)
        in_src = replaced < self.num_source
        lo = np.where(in_src, 0, self.num_source)
        size = np.where(in_src, self.num_source, self.num_entities - self.num_source)
        return lo + np.minimum((rng.random(sides.shape) * size).astype(np.int64), size - 1)

    def _allowed_candidates(self, batch_row, side):
        e = batch_row[0] if side else batch_row[2]
        return np.arange(self.num_source) if e < self.num_source else np.arange(self.num_source, self.num_entities)


def relation_positives(task, links: np.ndarray, exchange: bool = True) -> tuple[np.ndarray, int, int, int]:
    """``D+``: both KGs' triples in one id space plus the exchange triples of ``links``.

    Target entity ``j`` is ``n1 + j`` and target relation ``r`` is ``R1 + r``
    (:func:`mmea.encoders.structure.joint_triples`); ``links`` are ``(L, 2)``
    source / target ids of the task.

    Returns:
        ``(triples (T, 3), num_entities, num_relations, num_exchange)``.
    """
    from ..encoders.structure import joint_triples

    triples, n_ent = joint_triples(task)
    n1 = task.source.num_entities
    r1 = max(task.source.num_relations, int(task.source.triples[:, 1].max()) + 1 if len(task.source.triples) else 0)
    r2 = max(task.target.num_relations, int(task.target.triples[:, 1].max()) + 1 if len(task.target.triples) else 0)
    n_rel = max(r1 + r2, 1)
    triples = np.unique(np.asarray(triples, dtype=np.int64).reshape(-1, 3), axis=0)
    extra = np.zeros((0, 3), dtype=np.int64)
    if exchange and len(links):
        joint_links = np.asarray(links, dtype=np.int64).reshape(-1, 2) + np.array([0, n1])
        extra = exchange_triples(triples, joint_links)
    return np.concatenate([triples, extra]), n_ent, n_rel, int(len(extra))


def pixel_image_features(kg, size: int = 16) -> tuple[np.ndarray, np.ndarray, int]:
    """Raw-pixel image features ``(n, 3 * size * size)`` in [0, 1], presence mask, unreadable count.

    The offline stand-in for a CNN backbone: each image resized to
    ``size x size`` RGB (:func:`mmea.encoders.images.load_image`).  Entities
    without an image, or with an unreadable one, get a zero row and mask False.
    """
    from torchvision import transforms

    from ..encoders.images import load_image

    n = kg.num_entities
    out = np.zeros((n, 3 * size * size), dtype=np.float32)
    mask = np.zeros(n, dtype=bool)
    bad = 0
    paths = kg.image_paths or []
    tf = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor()])
    for i, p in enumerate(paths):
        if not p:
            continue
        x, why = load_image(p, tf)
        if x is None:
            bad += 1
            continue
        out[i] = x.numpy().reshape(-1)
        mask[i] = True
    return out, mask, bad


@dataclass
class GaussianData:
    """What training reads, in the joint id space (source ``0..n1-1``, target ``n1..n1+n2-1``).

    Attributes:
        num_source, num_entities, num_relations: id space sizes.
        triples: ``D+`` ``(T, 3)``; ``num_exchange`` of them from the exchange strategy.
        train_links, valid_links: ``(L, 2)`` joint ids.
        has_relations, has_image, has_numeric: bool ``(N,)`` presence masks.
        images: ``(N, D)`` float32 centred, scaled image features (zero rows without image), or None.
        num_entity, num_attribute, num_value: numerical attribute triples ``(m,)`` (value in [0, 1]).
        num_attributes: size of the shared numerical attribute vocabulary.
        image_info: where the image features came from.
    """

    num_source: int
    num_entities: int
    num_relations: int
    triples: np.ndarray
    num_exchange: int
    train_links: np.ndarray
    valid_links: np.ndarray
    has_relations: np.ndarray
    has_image: np.ndarray
    has_numeric: np.ndarray
    images: np.ndarray | None
    num_entity: np.ndarray
    num_attribute: np.ndarray
    num_value: np.ndarray
    num_attributes: int
    image_info: dict


def _standardize(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Columns centred over the rows that have the modality, then one global scale (unit mean square).

    A global scale, not a per-column one: a near-constant column (a background
    pixel) would otherwise be blown up to unit variance.  Rows without the
    modality stay zero.
    """
    out = np.zeros_like(x, dtype=np.float32)
    if mask.any():
        rows = x[mask].astype(np.float64)
        rows -= rows.mean(0)
        rms = float(np.sqrt((rows ** 2).mean()))
        out[mask] = (rows / (rms if rms > 1e-12 else 1.0)).astype(np.float32)
    return out


# ----------------------------------------------------------------------------- network (torch, in gaussian_nn)
def __getattr__(name: str):
    # the torch classes live in gaussian_nn, imported on first access so that importing this module stays instant
    if name in ("GaussianTable", "SameConv2x4", "GaussianNetwork"):
        from . import gaussian_nn

        return getattr(gaussian_nn, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_network(data: GaussianData, config) -> Any:
    """The :class:`GaussianNetwork` for ``data`` under a model ``Config``."""
    from .gaussian_nn import GaussianNetwork as cls
    return cls(data.num_entities, data.num_relations, config.dim,
               0 if data.images is None else int(data.images.shape[1]), data.num_attributes, config.rbf_centres,
               config.point, var_init=config.var_init, modality_var=config.modality_var)


class _LossOptimizer:
    """The optimiser of one loss: lazy (sparse) Adam for the Gaussian tables, Adam for the encoders.

    Table rows are looked up with sparse gradients, so a step costs the rows
    of the batch, not the whole table (``torch.optim.SparseAdam``: the moments
    of the rows absent from a batch are not decayed).  Means use ``lr``,
    variances ``var_lr``, the encoders (``M_1``, the numerical CNN) ``encoder_lr``.
    """

    def __init__(self, modules, lr: float, var_lr: float, encoder_lr: float, sparse: bool = True):
        import torch

        from .gaussian_nn import GaussianTable as table_cls

        means, variances, dense = [], [], []
        for m in modules:
            if isinstance(m, table_cls):
                means.append(m.mu)
                if m.var is not None:
                    variances.append(m.var)
            else:
                dense.extend(m.parameters())
        self.params = means + variances + dense
        groups = [{"params": means, "lr": lr}] + ([{"params": variances, "lr": var_lr}] if variances else [])
        if not sparse:  # the tables get dense gradients (the caller looks them up with sparse=False)
            if dense and encoder_lr > 0:
                groups.append({"params": dense, "lr": encoder_lr})
            self.sparse, self.dense = None, torch.optim.Adam(groups)
            return
        self.sparse = torch.optim.SparseAdam(groups) if means else None
        self.dense = torch.optim.Adam(dense, lr=encoder_lr) if dense and encoder_lr > 0 else None

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        for o in (self.sparse, self.dense):
            if o is not None:
                o.step()


# ----------------------------------------------------------------------------- evaluation helpers
def kl_rerank_ranks(mu_s, var_s, mu_t, var_t, links: np.ndarray, *, candidates: str = "test", csls_k: int = 10,
                    k: int = 10) -> np.ndarray:
    """1-based ranks of each link's target after re-ranking the CSLS top-``k`` by symmetric KL.

    CSLS runs over the L2-normalised means (radii over the candidate sets, as
    :func:`mmea.evaluation.evaluate_embeddings`); the ``k`` best candidates of
    each source are re-ordered by ``KL(s || t) + KL(t || s)`` of the full
    Gaussians (ascending, CSLS order on ties).  A gold target outside the top
    ``k`` keeps its CSLS rank (``> k``).
    """
    import torch

    from ..search.csls import csls_topk, rank_of_targets
    from ..search.knn import l2_normalize

    links = np.asarray(links, dtype=np.int64).reshape(-1, 2)
    src_n = l2_normalize(np.asarray(mu_s, dtype=np.float32))
    tgt_n = l2_normalize(np.asarray(mu_t, dtype=np.float32))
    if candidates == "test":
        src_rows, q_src = np.unique(links[:, 0], return_inverse=True)
        tgt_rows, q_tgt = np.unique(links[:, 1], return_inverse=True)
    else:
        src_rows, q_src = np.arange(len(src_n)), links[:, 0]
        tgt_rows, q_tgt = np.arange(len(tgt_n)), links[:, 1]
    S, T = src_n[src_rows], tgt_n[tgt_rows]
    k = max(1, min(int(k), len(tgt_rows)))
    res = csls_topk(S, T, topk=k, csls_k=csls_k, normalize=False, index="torch")
    full = rank_of_targets(S[q_src], T, q_tgt, method="csls", r_src=res.r_src[q_src], r_tgt=res.r_tgt,
                           normalize=False)  # (n,)
    top = res.ids[q_src]  # (n, k) positions in tgt_rows
    cand = tgt_rows[np.maximum(top, 0)]  # (n, k) target ids
    t = torch.as_tensor
    skl = symmetric_kl(t(np.asarray(mu_s, np.float32)[links[:, 0]])[:, None], t(np.asarray(var_s, np.float32)[
        links[:, 0]])[:, None], t(np.asarray(mu_t, np.float32)[cand]), t(np.asarray(var_t, np.float32)[cand])).numpy()
    skl = np.where(top >= 0, skl, np.inf)
    order = np.argsort(skl, axis=1, kind="stable")  # (n, k)
    reranked = np.take_along_axis(top, order, 1)
    hit = reranked == q_tgt[:, None]
    in_top = hit.any(1)
    return np.where(in_top, hit.argmax(1) + 1, full).astype(np.int64)


def _mean_var(v: np.ndarray, mask: np.ndarray) -> float | None:
    return round(float(v[mask].mean()), 4) if mask.any() else None


def variance_report(net, data: GaussianData) -> dict:
    """Mean learned variance (mean over dimensions, then entities) by modality coverage.

    ``common``: common-space variance of the entities with / without each
    modality, and by the number of modalities they have; ``modality_space``:
    the variance of each modality's own entity distribution (only entities
    with the modality are trained there); ``relations_by_degree``: common
    variance by relational degree (few triples = weak relational evidence).
    """
    tables = net.tables()
    common = tables["common"].variances().mean(1).cpu().numpy()  # (N,)
    masks = {"relations": data.has_relations, "images": data.has_image, "numeric": data.has_numeric}
    out: dict = {"common": {}, "modality_space": {}}
    for m, mask in masks.items():
        out["common"][m] = {"with": _mean_var(common, mask), "without": _mean_var(common, ~mask),
                            "n_with": int(mask.sum()), "n_without": int((~mask).sum())}
        if m in tables:
            v = tables[m].variances().mean(1).cpu().numpy()
            out["modality_space"][m] = {"with": _mean_var(v, mask), "without": _mean_var(v, ~mask)}
    count = sum(m.astype(int) for m in masks.values())
    out["common_by_modality_count"] = {str(c): _mean_var(common, count == c) for c in range(4) if (count == c).any()}
    deg = np.bincount(np.concatenate([data.triples[:, 0], data.triples[:, 2]]), minlength=data.num_entities)
    bins = [(0, 0), (1, 2), (3, 5), (6, 10), (11, 10 ** 9)]
    out["common_by_degree"] = {(f"{lo}-{hi}" if hi < 10 ** 9 else f"{lo}+"): _mean_var(
        common, (deg >= lo) & (deg <= hi)) for lo, hi in bins if ((deg >= lo) & (deg <= hi)).any()}
    rel = tables["relation_types"].variances().mean(1).cpu().numpy()
    out["relation_types"] = {"mean": round(float(rel.mean()), 4), "max": round(float(rel.max()), 4)}
    return out


# ----------------------------------------------------------------------------- the model
@MODELS.register
class GaussianModel(AlignmentModel):
    """Gaussian common space: KL-divergence embeddings of relations, images and numbers (Hama & Matsubara)."""

    uses_gold_for_training = True

    @dataclass(frozen=True)
    class Config:
        """Parameters (``[model]`` / ``--set``).

        Attributes:
            point: the point-embedding twin (every variance fixed at ``var_init``).
            dim: size of every space.
            margin: ``gamma`` of the relational margin loss (eq. 2).
            num_negatives: negatives per positive triple.
            exchange: extend ``D+`` with the exchange triples of the train links.
            batch_size: triples per relational step; entity_batch_size: entities (or links) per step
                of the visual, common-space and alignment losses; numeric_batch_size: numerical
                attribute triples per step.
            lr: Adam learning rate of the means in the relational loss; entity_lr: of the means in
                the other four losses (there each entity's row is touched about once per epoch,
                against many times in the relational loss); var_lr: of the variances in stage 2.
                Adam moves every parameter by about its learning rate per step whatever the size
                of its gradient, so the variances (noisy, small gradients) need a small one:
                on FB15K-DB15K (50% seeds, seed 0, 65 relational steps per round) var_lr 0.05 made
                the validation Hits@1 fall from 0.162 to 0.12 within five stage-2 rounds while
                the point twin rose to 0.19; with 0.002 it rose as the twin's did (0.254 after
                round 20, twin 0.268), and the variances still moved where the gradient is
                consistent (by coverage and degree, ``variances_last``);
                encoder_lr: of ``M_1`` and the numerical encoder (0: frozen at their random
                initialisation).  The visual and numerical losses have positives only, so a fast
                encoder can collapse its distributions onto one point: measured on the demo pair,
                frozen or slow encoders kept more image signal, while on FB15K-DB15K learning the
                numerical encoder (0.01) beat freezing it.
            vis_weight, num_weight, csl_weight, ac_weight: loss weights (the relational loss has 1).
            epochs: maximum rounds (one epoch of each of the five losses).
            stage1_epochs: rounds of stage 1 at most; stage1_fraction: of ``max_minutes`` at most.
            var_init: initial (and stage-1, and point-twin) variance; var_min, var_max: stage-2 clamp.
            modality_var: the fixed variance of the image and number distributions (``S_i``, ``S_n``).
            max_norm: KG2E's ``||mu|| <= max_norm`` for relational entity and relation means (0: off).
            rbf_centres: RBF centres per numerical attribute (eq. 5).
            image_source: ``auto`` (features from ``[features]``, raw pixels when no weights are on
                disk), ``features``, ``pixels`` or ``none``; pixel_size: side of the pixel grid.
            eval_every: rounds between validation evaluations; patience: evaluations without gain
                that end stage 1, then training.
            max_minutes: wall-clock budget of training (validation included).
            rerank_k: CSLS top-k re-ranked by symmetric KL at evaluation (0: no re-rank).
            num_threads: torch CPU threads during training (0: leave as is; restored afterwards).
                One by default: the batches are small, and on a 2-core machine shared with other
                work two threads were measured 10x slower than one (spin-waiting threads).
        """

        point: bool = False
        dim: PositiveInt = 100
        margin: NonNegFloat = 1.0
        num_negatives: PositiveInt = 2
        exchange: bool = True
        batch_size: PositiveInt = 8192
        entity_batch_size: PositiveInt = 512
        numeric_batch_size: PositiveInt = 2048
        lr: PositiveFloat = 0.02
        entity_lr: PositiveFloat = 0.02
        var_lr: PositiveFloat = 0.002
        encoder_lr: NonNegFloat = 0.01
        vis_weight: NonNegFloat = 1.0
        num_weight: NonNegFloat = 1.0
        csl_weight: NonNegFloat = 1.0
        ac_weight: NonNegFloat = 1.0
        epochs: PositiveInt = 100
        stage1_epochs: NonNegInt = 50
        stage1_fraction: Fraction = 0.5
        var_init: PositiveFloat = 0.5
        var_min: PositiveFloat = 0.5
        var_max: PositiveFloat = 50.0
        modality_var: PositiveFloat = 0.5
        max_norm: PositiveFloat = 1.0
        rbf_centres: PositiveInt = 32
        image_source: str = "auto"
        pixel_size: PositiveInt = 16
        eval_every: PositiveInt = 1
        patience: NonNegInt = 10
        max_minutes: PositiveFloat = 10.0
        rerank_k: NonNegInt = 10
        num_threads: NonNegInt = 1

        def __post_init__(self) -> None:
            if self.image_source not in IMAGE_SOURCES:
                raise MmeaInputError(f"image_source must be one of {', '.join(IMAGE_SOURCES)}, "
                                     f"got {self.image_source!r}")
            if not 0 < self.var_min <= self.var_init <= self.var_max:
                raise MmeaInputError(f"need 0 < var_min <= var_init <= var_max, got {self.var_min}, "
                                     f"{self.var_init}, {self.var_max}")
            from ..config import require_at_least

            require_at_least(self, ("dim", "num_negatives", "batch_size", "entity_batch_size", "numeric_batch_size",
                                    "rbf_centres", "pixel_size", "eval_every"), where="gaussian")
            if min(self.lr, self.entity_lr, self.var_lr, self.max_minutes, self.modality_var) <= 0 \
                    or self.encoder_lr < 0:
                raise MmeaInputError("lr, entity_lr, var_lr, max_minutes and modality_var must be > 0, "
                                     "encoder_lr >= 0")

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self.net = None
        self.data: GaussianData | None = None
        self._best_state: dict | None = None

    # -- data -------------------------------------------------------------------
    @classmethod
    def feature_requests(cls, config) -> dict[str, FeatureRequest]:
        """Numeric triples always; image features unless ``image_source`` is ``pixels`` or ``none``
        (optional with ``auto``: without encoder weights the model falls back to raw pixels)."""
        req = {"numeric": FeatureRequest()}
        if config.image_source in ("auto", "features"):
            req = {"images": FeatureRequest(optional=config.image_source == "auto"), **req}
        return req

    def _image_features(self, task, feats, has_images: bool) -> tuple[np.ndarray | None, np.ndarray, dict]:
        c = self.config
        n1, n2 = task.source.num_entities, task.target.num_entities
        none = (None, np.zeros(n1 + n2, dtype=bool))
        if c.image_source == "none":
            return (*none, {"source": "none", "reason": "image_source=none"})
        if c.image_source in ("auto", "features"):
            if "images" not in feats:
                e = feats.unavailable["images"]
                self.ctx.note(f"gaussian: no image encoder weights ({e.message}); using raw {c.pixel_size}x"
                              f"{c.pixel_size} pixels as image features")
            else:
                im = feats["images"]
                if im.dim == 0:
                    return (*none, {"source": "none", "reason": "neither KG has images or image features"})
                mask = np.concatenate([im.source_mask, im.target_mask])
                x = np.concatenate([np.asarray(im.source, np.float32), np.asarray(im.target, np.float32)])
                return x, mask, {"source": "features", "encoder": im.info.get("encoder"),
                                 "model": im.info.get("model"), "weights": im.info.get("weights"), "dim": im.dim}
        if not has_images:
            return (*none, {"source": "none", "reason": "neither KG has image files"})
        (xs, ms, bs), (xt, mt, bt) = (pixel_image_features(kg, c.pixel_size) for kg in (task.source, task.target))
        return np.concatenate([xs, xt]), np.concatenate([ms, mt]), {
            "source": "pixels", "encoder": f"raw pixels {c.pixel_size}x{c.pixel_size} RGB", "dim": int(xs.shape[1]),
            "unreadable": bs + bt}

    def prepare(self, task, feats) -> GaussianData:
        """Everything training reads (``feats``: the features of :meth:`feature_requests`); never ``task.test``."""
        c = self.config
        n1, n2 = task.source.num_entities, task.target.num_entities
        if n1 < 1 or n2 < 1:
            raise MmeaInputError("the gaussian model needs entities in both KGs")
        train = train_seeds(task)
        valid = np.asarray(task.valid, dtype=np.int64).reshape(-1, 2)
        triples, n_ent, n_rel, n_ex = relation_positives(task, train, c.exchange)
        has_rel = np.zeros(n_ent, dtype=bool)
        has_rel[triples[:, [0, 2]].reshape(-1)] = True

        has_files = any(bool(p) for kg in (task.source, task.target) for p in (kg.image_paths or []))
        has_pre = any(kg.image_features is not None for kg in (task.source, task.target))
        images, has_img, image_info = self._image_features(task, feats, has_files or has_pre)
        if images is not None:
            images = _standardize(images, has_img)
            if not has_img.any():
                images, image_info = None, {"source": "none", "reason": "no entity has a readable image"}

        num = feats["numeric"]
        ex = num.extras
        ent = np.concatenate([ex["source_entity"], ex["target_entity"] + n1]).astype(np.int64)
        attr = np.concatenate([ex["source_attribute"], ex["target_attribute"]]).astype(np.int64)
        val = np.concatenate([ex["source_value"], ex["target_value"]]).astype(np.float32)
        n_attr = int(num.info.get("num_attributes", int(attr.max()) + 1 if len(attr) else 0)) if len(attr) else 0
        has_num = np.zeros(n_ent, dtype=bool)
        has_num[ent] = True
        return GaussianData(n1, n_ent, n_rel, triples, n_ex, train + np.array([0, n1]), valid + np.array([0, n1]),
                            has_rel, has_img, has_num, images, ent, attr, val, n_attr, image_info)

    # -- training ---------------------------------------------------------------
    def learn(self, task, feats) -> None:
        import torch

        threads = torch.get_num_threads()
        try:
            self.setup(task, feats)
            self.train()
        finally:
            torch.set_num_threads(threads)

    def setup(self, task, feats) -> None:
        """Data (:meth:`prepare`), the network in stage 1, the sampler and one Adam per loss."""
        import torch

        c = self.config
        self._budget = TimeBudget(c.max_minutes * 60.0)  # from here: data preparation counts too
        if c.num_threads > 0:
            torch.set_num_threads(c.num_threads)
        torch.manual_seed(self.ctx.seed)
        self._rng = np.random.default_rng(self.ctx.seed)
        data = self.data = self.prepare(task, feats)
        net = self.net = build_network(data, c)
        net.set_stage(1)
        self.sampler = SameGraphUniformSampler(data.triples, data.num_entities, data.num_relations,
                                               num_source=data.num_source, seed=self.ctx.seed)

        def optimizer(*modules, lr, sparse=True):
            return _LossOptimizer([m for m in modules if m is not None], lr, c.var_lr, c.encoder_lr, sparse)

        # each loss steps its own parameters (variances included: frozen ones get no gradient)
        self._optimizers = {
            "rel": optimizer(net.rel_ent, net.relations, lr=c.lr, sparse=False),
            "vis": optimizer(net.vis_ent, net.image_proj, lr=c.entity_lr),
            "num": optimizer(net.num_ent, net.numeric, getattr(net, "rbf_proj", None), getattr(net, "cnn", None),
                             getattr(net, "num_out", None), lr=c.entity_lr),
            "csl": optimizer(net.common, net.rel_ent, net.vis_ent, net.num_ent, lr=c.entity_lr),
            "ac": optimizer(net.common, lr=c.entity_lr)}
        self._clamped = {"rel": ("relations", "relation_types"), "vis": ("images",), "num": ("numeric",),
                         "csl": ("common", "relations", "images", "numeric"), "ac": ("common",)}

    # -- one epoch of each loss -------------------------------------------------
    def _batches(self, n: int, size: int):
        perm = self._rng.permutation(n)
        for i in range(0, n, size):
            yield perm[i:i + size]

    def _step(self, name: str, loss) -> float:
        """Backward, one optimiser step of this loss's parameters, then the projection of the touched rows."""
        o = self._optimizers[name]
        o.zero_grad()
        loss.backward()
        o.step()
        c = self.config
        self.net.clamp_(c.var_min, c.var_max, c.max_norm, self._clamped[name], touched_only=True)
        return float(loss.detach())

    def _out_of_time(self) -> bool:
        return self._budget.out_of_time()

    def epoch_relations(self) -> float:
        """One epoch of the margin loss (eq. 2) over ``D+`` with ``num_negatives`` filtered negatives each."""
        import torch

        from ..losses import margin_ranking_loss

        c, data, net = self.config, self.data, self.net
        total, nb = 0.0, 0
        for idx in self._batches(len(data.triples), c.batch_size):
            batch = data.triples[idx]
            ns = self.sampler.sample_with_info(batch, c.num_negatives)
            pos, neg = net.relation_scores_replaced(torch.as_tensor(batch), torch.as_tensor(ns.sides),
                                                    torch.as_tensor(ns.replacements))  # (B,), (B, K)
            mask = None if ns.valid.all() else torch.as_tensor(ns.valid)
            total += self._step("rel", margin_ranking_loss(pos, neg, c.margin, mask))
            nb += 1
            if self._out_of_time():
                break
        return total / max(nb, 1)

    def epoch_images(self) -> float | None:
        """One epoch of ``L_vis`` (eq. 4) over the entities that have an image."""
        import torch

        c, data, net = self.config, self.data, self.net
        rows = np.flatnonzero(data.has_image)
        if self._optimizers["vis"] is None or not len(rows):
            return None
        images = torch.as_tensor(data.images)  # (N, D), no copy
        total, nb = 0.0, 0
        for idx in self._batches(len(rows), c.entity_batch_size):
            e = torch.as_tensor(rows[idx])
            mu_i = net.image_mean(images[e])  # (B, d)
            f = modality_score(*net.vis_ent(e), mu_i, net.fixed(mu_i))
            total += self._step("vis", c.vis_weight * modality_loss(f))
            nb += 1
        return total / max(nb, 1)

    def epoch_numbers(self) -> float | None:
        """One epoch of ``L_num`` (eq. 7) over the numerical attribute triples."""
        import torch

        c, data, net = self.config, self.data, self.net
        if self._optimizers["num"] is None or not len(data.num_entity):
            return None
        ent, attr, val = (torch.as_tensor(x) for x in (data.num_entity, data.num_attribute, data.num_value))
        total, nb = 0.0, 0
        for idx in self._batches(len(ent), c.numeric_batch_size):
            i = torch.as_tensor(idx)
            mu_n = net.numeric_mean(attr[i], val[i])  # (B, d)
            f = modality_score(*net.num_ent(ent[i]), mu_n, net.fixed(mu_n))
            total += self._step("num", c.num_weight * modality_loss(f))
            nb += 1
        return total / max(nb, 1)

    def epoch_common(self) -> float:
        """One epoch of ``L_csl`` (eq. 8) over all entities, each with the modalities it has."""
        import torch

        c, data, net = self.config, self.data, self.net
        masks = [torch.as_tensor(m) for m in (data.has_relations, data.has_image, data.has_numeric)]
        total, nb = 0.0, 0
        for idx in self._batches(data.num_entities, c.entity_batch_size):
            e = torch.as_tensor(idx)
            mods, ms = [net.rel_ent(e)], [masks[0][e]]
            if net.vis_ent is not None:
                mods.append(net.vis_ent(e))
                ms.append(masks[1][e])
            if net.num_ent is not None:
                mods.append(net.num_ent(e))
                ms.append(masks[2][e])
            total += self._step("csl", c.csl_weight * common_space_loss(net.common(e), mods, ms))
            nb += 1
        return total / max(nb, 1)

    def epoch_alignment(self) -> float | None:
        """One epoch of ``L_ac`` (eq. 9) over the train links."""
        import torch

        c, data, net = self.config, self.data, self.net
        if not len(data.train_links):
            return None
        total, nb = 0.0, 0
        for idx in self._batches(len(data.train_links), c.entity_batch_size):
            ln = torch.as_tensor(data.train_links[idx])
            total += self._step("ac", c.ac_weight * alignment_loss(*net.common(ln[:, 0]), *net.common(ln[:, 1])))
            nb += 1
        return total / max(nb, 1)

    # -- the schedule -----------------------------------------------------------
    def train(self) -> None:
        """Rounds of the five losses in turn, the two stages, early stopping (:class:`GaussianTraining` in
        the shared :class:`~mmea.training.Trainer`); keeps the best state."""
        c, data, net = self.config, self.data, self.net
        training = GaussianTraining(self)
        trainer = Trainer(max_epochs=c.epochs, eval_every=c.eval_every, patience=c.patience, budget=self._budget,
                          checkpoint=self.ctx.checkpoint, monitor="valid_hits@1", progress=self.ctx.progress,
                          desc="mmea-point" if c.point else "gaussian", unit="round")
        result = trainer.fit(training)  # the best state is back in the network
        best = next((r for r in result.history if r.epoch == result.best_epoch), None)
        self.info.update(result.as_dict())
        self.info.update({
            "variant": "point" if c.point else "gaussian",
            "dim": c.dim,
            "triples": {"kg": int(len(data.triples) - data.num_exchange), "exchange": data.num_exchange,
                        "total": int(len(data.triples))},
            "modalities": {"relations": int(data.has_relations.sum()), "images": int(data.has_image.sum()),
                           "numeric": int(data.has_numeric.sum())},
            "entities": data.num_entities,
            "numeric_triples": int(len(data.num_entity)), "numeric_attributes": data.num_attributes,
            "image_features": data.image_info,
            "rounds": result.epochs_run, "stage2_from_round": training.stage2_round,
            "best": {"round": best.epoch if best else 0, "stage": best.extra["stage"] if best else 1,
                     "valid": {"hits@1": best.extra["valid_hits@1"], "mrr": best.extra["valid_mrr"]}
                     if best is not None and "valid_mrr" in best.extra else None},
            "train_s": round(result.train_s, 1),
            "round_s_mean": round(float(np.mean([h.time_s for h in result.history])), 2) if result.history else None,
            "sampler": self.sampler.stats.as_dict(),
            "variances": variance_report(net, data),
            "variances_last": training.variances_last,
        })
        if len(data.valid_links) >= 2:
            self.info["valid_by_space"] = self._valid_by_space()
            if c.rerank_k > 0:
                self.info["valid_kl_rerank"] = self._rerank(data.valid_links - np.array([0, data.num_source]),
                                                            "test", 10)

    def _valid_by_space(self) -> dict:
        """Validation Hits@1 / MRR of each space's means alone, and how spread out the means are.

        ``spread = 1 - ||mean of the means|| / mean ||mu||``: 0 when every
        entity has the same mean (a collapsed space), near 1 when spread out.
        """
        from ..evaluation import evaluate_embeddings
        from ..search.knn import l2_normalize

        n1 = self.data.num_source
        links = self.data.valid_links - np.array([0, n1])
        out = {}
        for name, t in self.net.tables().items():
            if name == "relation_types":
                continue
            mu = t.mu.detach().cpu().numpy().astype(np.float32)
            norms = np.linalg.norm(mu, axis=1)
            spread = 1.0 - float(np.linalg.norm(mu.mean(0)) / max(norms.mean(), 1e-12))
            ok = norms > 0
            mu[ok] = l2_normalize(mu[ok])
            v = evaluate_embeddings(mu[:n1], mu[n1:], links, candidates="test", csls_k=10)["test"]
            out[name] = {"hits@1": round(v["hits@1"], 4), "mrr": round(v["mrr"], 4), "spread": round(spread, 4),
                         "mean_norm": round(float(norms.mean()), 4)}
        return out

    def _snapshot(self) -> None:
        self._best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def _common(self) -> tuple[np.ndarray, np.ndarray]:
        t = self.net.common
        return t.mu.detach().cpu().numpy(), t.variances().cpu().numpy()

    def _evaluate_valid(self) -> dict:
        from ..evaluation import evaluate_embeddings

        s, t = self.embeddings()
        links = self.data.valid_links - np.array([0, self.data.num_source])
        return evaluate_embeddings(s, t, links, candidates="test", csls_k=10)["test"]

    def _rerank(self, links: np.ndarray, candidates: str, csls_k: int) -> dict:
        from ..evaluation import ranking_metrics

        mu, var = self._common()
        n1 = self.data.num_source
        ranks = kl_rerank_ranks(mu[:n1], var[:n1], mu[n1:], var[n1:], links, candidates=candidates, csls_k=csls_k,
                                k=self.config.rerank_k)
        return {**ranking_metrics(ranks), "n": int(len(links)), "rerank_k": int(self.config.rerank_k)}

    # -- outputs ----------------------------------------------------------------
    def embeddings(self):
        """Common-space means of the source and target entities, rows L2-normalised (float32)."""
        if self.net is None:
            raise MmeaInputError("the gaussian model has not been fitted")
        mu = self.net.common.mu.detach().cpu().numpy().astype(np.float32)
        norms = np.linalg.norm(mu, axis=1, keepdims=True)
        np.divide(mu, norms, out=mu, where=norms > 0)
        n1 = self.data.num_source
        return mu[:n1], mu[n1:]

    def rerank_metrics(self, links, *, candidates: str = "test", csls_k: int = 10, search_top=None) -> dict:
        """``{"src->tgt/csls+kl-rerank": metrics}``: the CSLS top-``rerank_k`` re-ranked by symmetric KL.

        Called by :func:`mmea.pipelines.align.run_align` after the standard
        evaluation (the model never sees test links during :meth:`fit`).  ``search_top``: the search pass's
        top 2 (:func:`mmea.pipelines.align.pass_top2`), not needed here.
        """
        if self.config.rerank_k <= 0 or self.net is None:
            return {}
        return {"src->tgt/csls+kl-rerank": self._rerank(np.asarray(links), candidates, csls_k)}


@MODELS.register(name="mmea-point")
class MmeaPointModel(GaussianModel):
    """Point-embedding twin of ``gaussian`` (MMEA): every variance fixed, KLs become squared distances."""

    @dataclass(frozen=True)
    class Config(GaussianModel.Config):
        point: bool = True


class GaussianTraining(TrainingModule):
    """The Gaussian model's rounds for :class:`~mmea.training.Trainer`.

    A round is one epoch of each of the five losses (the later ones skipped once the time budget is
    spent); validation is Hits@1 of the common-space means (MRR breaks ties).  Stage 2 (trainable
    variances) starts at the round after ``stage1_epochs``, after ``stage1_fraction`` of the budget,
    or when stage 1 runs out of patience; patience in stage 2 stops the training.  The loop state:
    network, optimizers, sampler, batch generator, stage.
    """

    record_initial = False

    def __init__(self, model: GaussianModel):
        self.model = model
        self.kind = model.registry_name  # gaussian | mmea-point: a checkpoint of the twin is refused
        self.stage, self.stage2_round = 1, None
        self.variances_last: dict | None = None

    def _to_stage_2(self, first_round: int) -> None:
        self.stage, self.stage2_round = 2, first_round
        self.model.net.set_stage(2)

    def train_epoch(self, rnd: int, trainer) -> EpochOutput:
        m, c = self.model, self.model.config
        if self.stage == 1 and (rnd > c.stage1_epochs or trainer.budget.spent_fraction(c.stage1_fraction)):
            self._to_stage_2(rnd)
            trainer.reset_patience()
        losses, times = {}, {}
        for name, fn in (("rel", m.epoch_relations), ("vis", m.epoch_images), ("num", m.epoch_numbers),
                         ("csl", m.epoch_common), ("ac", m.epoch_alignment)):
            if name != "rel" and m._out_of_time():
                break
            t_loss = time.perf_counter()
            losses[name] = fn()
            times[name] = round(time.perf_counter() - t_loss, 2)
        return EpochOutput(float(sum(v for v in losses.values() if v is not None)),
                           {"stage": self.stage, "losses": {k: (None if v is None else round(v, 5))
                                                            for k, v in losses.items()}, "time_by_loss_s": times})

    def can_validate(self) -> bool:
        return len(self.model.data.valid_links) >= 2  # ranking among one candidate says nothing

    def validate(self, rnd: int, trainer) -> Validation:
        v = self.model._evaluate_valid()
        return Validation(v["hits@1"], key=(v["hits@1"], v["mrr"]),
                          extra={"valid_hits@1": round(v["hits@1"], 4), "valid_mrr": round(v["mrr"], 4)})

    def snapshot(self) -> dict:
        self.model._snapshot()
        return self.model._best_state

    def restore(self, state: dict) -> None:
        self.model.net.load_state_dict(state)

    def on_patience_exhausted(self, rnd: int, trainer) -> bool:
        if self.stage == 1:
            self._to_stage_2(rnd + 1)
            return False
        return True

    def on_fit_end(self, trainer) -> None:
        # the variances as training left them (the coverage analysis), before the kept (best) state is back
        last = trainer.history[-1].epoch if trainer.history else 0
        self.variances_last = {"round": last, **variance_report(self.model.net, self.model.data)}

    def postfix(self, record, trainer) -> dict:
        return epoch_postfix(record.loss, record.extra.get("valid_hits@1"), stage=self.stage)

    def loop_state(self) -> dict:
        m = self.model
        return {"net": m.net.state_dict(), "sampler": m.sampler.state_dict(), "rng": m._rng.bit_generator.state,
                "optimizers": {n: {part: getattr(o, part).state_dict() for part in ("sparse", "dense")
                                   if getattr(o, part) is not None} for n, o in m._optimizers.items()},
                "stage": self.stage, "stage2_round": self.stage2_round}

    def load_loop_state(self, saved: dict) -> None:
        m = self.model
        m.net.set_stage(saved["stage"])
        m.net.load_state_dict(saved["net"])
        for name, o in m._optimizers.items():
            for part, state in saved["optimizers"][name].items():
                getattr(o, part).load_state_dict(state)
        m.sampler.load_state_dict(saved["sampler"])
        m._rng.bit_generator.state = saved["rng"]
        self.stage, self.stage2_round = saved["stage"], saved["stage2_round"]
