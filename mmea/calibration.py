"""Confidence calibration: a pair's score -> the estimated probability that it is correct.

A run predicts one target per query source (its top-1, or its matched pair with
``--match``), with a ranking ``score`` and a ``margin`` (score minus the best
other candidate's score, see :mod:`mmea.export`).  Neither is a probability.
Calibration maps one of them (the *feature*, :data:`FEATURES`) to an estimated
precision with an **isotonic regression** (pool adjacent violators; Zadrozny &
Elkan, "Transforming classifier scores into accurate multiclass probability
estimates", KDD 2002) of "the top-1 target is a gold target" on the feature, fitted on
the **validation** links only, never the test links:

1. :func:`score_valid_sources` ranks every validation source the way the run
   ranked its query sources (same embeddings, similarity, CSLS ``k``, index),
   against the run's candidate targets plus the validation targets, so a
   validation source's gold target is among its candidates.  The CSLS radii
   are the ones the query sources saw: each candidate target keeps its radius
   over the run's query sources, so validation scores are on the test scale.
   Cost: ``|valid| x |candidates|`` scores plus ``|query sources| x |valid
   targets|`` for the new targets' radii (a few % of the run's own search).
2. :func:`fit_calibration` fits ``f`` (nondecreasing by construction, clipped
   outside the fitted range; each isotonic block's precision smoothed with one
   pseudo-count of each outcome, so a small all-correct block does not read 1.0)
   and an out-of-fold reliability table (5-fold: predicted vs observed precision
   by bin) that shows how far to trust it.
3. :func:`write_calibration` saves ``calibration.json`` (the fitted points, the
   feature, the counts, the table) and ``valid_scores.npz`` (the validation
   top-1 / top-2 targets and scores, from which any feature can be refitted).
4. For a model with variances (``gaussian-strong``), :func:`choose_variance` decides on the
   validation links, out of fold, whether the curve reads ``margin`` alone or
   :data:`COMBINED` (a logistic combination of margin and log-uncertainty, fitted on
   the validation links).

:func:`calibrated_alignment` reads a run directory back, adds ``est_precision``
to each source's predicted pair and :func:`select_pairs` keeps those that meet
a target (``mmea export RUN_DIR --min-precision 0.95``).  Because ``f`` is
nondecreasing, the kept pairs are the ones above a feature threshold, and their
expected precision is the mean of their estimates (>= the target).

Caveats: validation links also select epochs / weights in some models
(``propagation``, ``selfmea``), which makes the estimates slightly optimistic;
with a one-to-one matcher the predicted pair is not always the top-1, and its
margin (negative when it is not) is read through the same curve.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MmeaInputError

__all__ = [
    "FEATURES",
    "CALIBRATION_FILE",
    "VALID_SCORES_FILE",
    "ValidScores",
    "Calibration",
    "score_valid_sources",
    "valid_queries",
    "valid_scores_from_top",
    "fit_calibration",
    "refit_calibration",
    "choose_variance",
    "COMBINED",
    "reliability_table",
    "write_calibration",
    "write_no_calibration",
    "load_calibration",
    "calibrated_alignment",
    "select_pairs",
    "export_summary",
]

#: Confidence features a calibration can be fitted on.
FEATURES = ("margin", "score")
#: The combined feature ``w_0 + w_1 margin + w_2 log uncertainty`` (models with variances, issue 17); used
#: instead of the margin when the validation links show that the variance adds information (:func:`choose_variance`).
COMBINED = "margin+uncertainty"
#: How much the out-of-fold AUROC (for a right top-1) of the combination must beat the margin's on the
#: validation links before the variance enters the calibration.
MIN_AUROC_GAIN = 0.01
CALIBRATION_FILE = "calibration.json"
VALID_SCORES_FILE = "valid_scores.npz"
#: Below this many validation links the estimates are coarse (a warning says so).
FEW_VALID = 200


# -- validation scores ---------------------------------------------------------------

@dataclass
class ValidScores:
    """The top-2 candidates of each validation source, ranked as the run ranked its queries.

    Attributes:
        src: ``(v,)`` internal source ids (unique).
        top1, top2: ``(v,)`` internal target ids of the best and second candidates (``-1``: none).
        score1, score2: ``(v,)`` their ranking scores (``NaN``: none).
        correct: ``(v,)`` whether ``top1`` is a gold target of the source.
        method: the ranking score (``csls`` or ``cos``).
        num_candidates: how many targets each validation source was ranked against.
        uncertainty: ``(v,)`` the model's uncertainty of the pair (source, ``top1``) (mean common-space
            variance of both, ``gaussian-strong``), ``NaN`` without a ``top1``; ``None`` for models without one.
    """

    src: np.ndarray
    top1: np.ndarray
    top2: np.ndarray
    score1: np.ndarray
    score2: np.ndarray
    correct: np.ndarray
    method: str = "csls"
    num_candidates: int = 0
    uncertainty: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.src)

    def feature(self, name: str) -> np.ndarray:
        """``(v,)`` float64 values of a confidence feature: ``margin`` (score1 - score2) or ``score``."""
        _check_feature(name)
        s1 = self.score1.astype(np.float64)
        return s1 - self.score2.astype(np.float64) if name == "margin" else s1

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        from .runs import atomic_save_npz

        extra = {} if self.uncertainty is None else {"uncertainty": np.asarray(self.uncertainty, np.float32)}
        atomic_save_npz(path, compressed=True, src=self.src, top1=self.top1, top2=self.top2, score1=self.score1,
                        score2=self.score2, correct=self.correct, method=np.array(self.method),
                        num_candidates=np.array(self.num_candidates), **extra)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ValidScores":
        path = Path(path)
        try:
            z = np.load(path, allow_pickle=False)
            return cls(z["src"], z["top1"], z["top2"], z["score1"], z["score2"], z["correct"].astype(bool),
                       str(z["method"]), int(z["num_candidates"]),
                       z["uncertainty"] if "uncertainty" in z.files else None)
        except (OSError, KeyError, ValueError) as e:
            raise MmeaInputError(f"{path}: not a valid_scores file ({e})") from None


def _check_feature(name: str, combined: bool = False) -> None:
    choices = FEATURES + ((COMBINED,) if combined else ())
    if name not in choices:
        raise MmeaInputError(f"unknown calibration feature {name!r}; valid choices: {', '.join(choices)}")


def score_valid_sources(src_emb: Any, tgt_emb: Any, valid: Any, query_src: Any, cand: Any, *,
                        method: str = "csls", csls_k: int = 10, index: str = "auto", device: str = "cpu",
                        cand_r_tgt: Any = None) -> ValidScores:
    """Rank the validation sources like the run's query sources and keep their top 2.

    Args:
        src_emb: ``(N, d)``; tgt_emb: ``(M, d)`` the run's embeddings (all entities).
        valid: ``(v, 2)`` internal validation links.
        query_src: ``(n,)`` the run's query source rows (the test sources).
        cand: ``(m,)`` the run's candidate target rows; the validation targets are added.
        method, csls_k, index, device: as the run searched.
        cand_r_tgt: ``(m,)`` the CSLS radii of ``cand`` from the run's search
            (``Alignment.result.r_tgt``); computed over ``query_src`` when ``None``.
    """
    from .search.csls import csls_radius
    from .search.matching import Similarity

    valid = _check_valid(valid)
    src_emb, tgt_emb = np.asarray(src_emb), np.asarray(tgt_emb)
    query_src = np.asarray(query_src, dtype=np.int64).reshape(-1)
    cand = np.asarray(cand, dtype=np.int64).reshape(-1)
    vsrc, extra = valid_queries(valid, cand)
    vcand = np.concatenate([cand, extra])  # (m + e,)
    opts = dict(index=index, device=device)
    if cand_r_tgt is None:
        r_cand = csls_radius(src_emb[query_src], tgt_emb[cand], csls_k, **opts)[1]
    else:
        r_cand = np.asarray(cand_r_tgt, np.float32).reshape(-1)
        if len(r_cand) != len(cand):
            raise MmeaInputError(f"{len(r_cand)} candidate radii for {len(cand)} candidates")
    r_extra = csls_radius(src_emb[query_src], tgt_emb[extra], csls_k, **opts)[1] if len(extra) else \
        np.zeros(0, np.float32)
    r_src = csls_radius(src_emb[vsrc], tgt_emb[vcand], csls_k, **opts)[0]  # over the candidates, like a query
    sim = Similarity(src_emb[vsrc], tgt_emb[vcand], method=method, csls_k=csls_k,
                     radius=(r_src, np.concatenate([r_cand, r_extra])), **opts)
    res = sim.topk(2)
    return valid_scores_from_top(valid, vsrc, vcand, res.ids, res.scores, method)


def _check_valid(valid: Any) -> np.ndarray:
    valid = np.asarray(valid, dtype=np.int64).reshape(-1, 2)
    if not len(valid):
        raise MmeaInputError("no validation links to calibrate on")
    return valid


def valid_queries(valid: Any, cand: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(vsrc, extra)``: the unique validation sources, and the validation targets not among ``cand``.

    :func:`score_valid_sources` ranks ``vsrc`` against ``cand`` followed by ``extra``, so a
    validation source's gold target is always a candidate.
    """
    valid = _check_valid(valid)
    cand = np.asarray(cand, dtype=np.int64).reshape(-1)
    return np.unique(valid[:, 0]), np.setdiff1d(np.unique(valid[:, 1]), cand)


def valid_scores_from_top(valid: Any, vsrc: np.ndarray, vcand: np.ndarray, ids: np.ndarray, scores: np.ndarray,
                          method: str) -> ValidScores:
    """:class:`ValidScores` from each validation source's best candidates.

    ``ids (v, k)``: positions into ``vcand`` (``-1``: none), best first; ``scores (v, k)`` their
    ranking scores.  Used by :func:`score_valid_sources` and by an ``mmea align`` run, which
    takes them from its one search pass (:func:`mmea.search.onepass.search_once`).
    """
    valid = _check_valid(valid)
    gold_of: dict[int, set] = {}
    for s, t in valid.tolist():
        gold_of.setdefault(s, set()).add(t)
    ids = np.asarray(ids, dtype=np.int64)
    out_ids = np.where(ids >= 0, vcand[np.maximum(ids, 0)], -1)  # (v, k) internal target ids
    scores = np.where(ids >= 0, scores, np.nan).astype(np.float32)
    if out_ids.shape[1] < 2:  # a single candidate: no runner-up
        out_ids = np.concatenate([out_ids, np.full((len(out_ids), 1), -1)], 1)
        scores = np.concatenate([scores, np.full((len(out_ids), 1), np.nan, np.float32)], 1)
    correct = np.array([t in gold_of[s] for s, t in zip(vsrc.tolist(), out_ids[:, 0].tolist())], dtype=bool)
    return ValidScores(vsrc, out_ids[:, 0], out_ids[:, 1], scores[:, 0], scores[:, 1], correct, method,
                       int(len(vcand)))


# -- the fitted curve ------------------------------------------------------------------

@dataclass
class Calibration:
    """A nondecreasing map from a confidence feature to an estimated precision.

    ``x`` (strictly increasing) and ``y`` (nondecreasing, in [0, 1]) are the
    isotonic fit's breakpoints; :meth:`predict` interpolates linearly between
    them and clips outside (``sklearn``'s ``out_of_bounds="clip"``).  An
    unavailable calibration (no validation links) has ``available=False`` and
    a ``reason``.  With ``feature`` :data:`COMBINED` the curve's input is
    ``w_0 + w_1 margin + w_2 log uncertainty`` (``weights``); ``variance`` records
    the validation evidence for or against using the variance (:func:`choose_variance`).
    """

    feature: str = "margin"
    x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    n_valid: int = 0
    n_correct: int = 0
    reliability: list = field(default_factory=list)
    method: str = "isotonic"
    prior: float = 1.0
    similarity: str | None = None
    num_candidates: int | None = None
    available: bool = True
    reason: str | None = None
    weights: np.ndarray | None = None
    variance: dict | None = None

    def columns(self) -> list[str]:
        """The ``alignment.csv`` columns the curve's input is computed from."""
        return ["margin", "uncertainty"] if self.feature == COMBINED else [self.feature]

    def values(self, frame: Any) -> np.ndarray:
        """``(n,)`` the curve's input for each row of ``frame`` (a DataFrame or a dict of the :meth:`columns`)."""
        if self.feature == COMBINED:
            return margin_variance_score(self.weights, frame["margin"], frame["uncertainty"])
        return np.asarray(frame[self.feature], dtype=np.float64)

    def predict(self, values: Any) -> np.ndarray:
        """``(n,)`` estimated precision of each feature value; ``NaN`` stays ``NaN``."""
        if not self.available:
            raise MmeaInputError(f"no calibration: {self.reason}")
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        out = np.interp(v, self.x, self.y)  # clips to y[0] / y[-1] outside [x[0], x[-1]]
        return np.where(np.isnan(v), np.nan, out)

    def threshold(self, min_precision: float) -> float:
        """The smallest feature value whose estimate reaches ``min_precision`` (``inf`` if none)."""
        if not (self.y >= min_precision).any():
            return float("inf")
        i = int(np.argmax(self.y >= min_precision))
        if i == 0:
            return float("-inf")
        x0, x1, y0, y1 = self.x[i - 1], self.x[i], self.y[i - 1], self.y[i]
        return float(x0 + (min_precision - y0) * (x1 - x0) / (y1 - y0))

    def to_dict(self) -> dict:
        if not self.available:
            return {"available": False, "reason": self.reason, "n_valid": self.n_valid}
        extra = {} if self.weights is None else {"weights": {"const": float(self.weights[0]),
                                                              "margin": float(self.weights[1]),
                                                              "log_uncertainty": float(self.weights[2])}}
        if self.variance is not None:
            extra["variance"] = self.variance
        return {"available": True, "method": self.method, "prior": self.prior, "feature": self.feature, **extra,
                "similarity": self.similarity,
                "n_valid": self.n_valid, "n_correct": self.n_correct,
                "valid_hits@1": self.n_correct / self.n_valid if self.n_valid else None,
                "num_candidates": self.num_candidates,
                "x": [float(a) for a in self.x], "y": [float(a) for a in self.y],
                "reliability": self.reliability}

    @classmethod
    def from_dict(cls, d: dict, path: Any = CALIBRATION_FILE) -> "Calibration":
        if not isinstance(d, dict) or "available" not in d:
            raise MmeaInputError(f"{path}: not a calibration file (no 'available' key)")
        if not d["available"]:
            return cls(available=False, reason=d.get("reason") or "unknown", n_valid=int(d.get("n_valid", 0)))
        try:
            x, y = np.asarray(d["x"], np.float64), np.asarray(d["y"], np.float64)
            cal = cls(feature=d["feature"], x=x, y=y, n_valid=int(d["n_valid"]), n_correct=int(d["n_correct"]),
                      reliability=list(d.get("reliability", [])), method=d.get("method", "isotonic"),
                      prior=float(d.get("prior", 1.0)),
                      similarity=d.get("similarity"), num_candidates=d.get("num_candidates"),
                      variance=d.get("variance"))
            if cal.feature == COMBINED:
                w = d["weights"]
                cal.weights = np.array([w["const"], w["margin"], w["log_uncertainty"]], np.float64)
        except (KeyError, TypeError, ValueError) as e:
            raise MmeaInputError(f"{path}: malformed calibration ({type(e).__name__}: {e})") from None
        _check_feature(cal.feature, combined=True)
        if cal.weights is not None and not np.isfinite(cal.weights).all():
            raise MmeaInputError(f"{path}: the calibration weights are not finite numbers: {cal.weights.tolist()}")
        if len(x) == 0 or len(x) != len(y) or (np.diff(x) <= 0).any() or (np.diff(y) < 0).any() \
                or y.min() < 0 or y.max() > 1:
            raise MmeaInputError(f"{path}: the calibration points are not an increasing curve in [0, 1]")
        return cal

    @classmethod
    def unavailable(cls, reason: str, n_valid: int = 0) -> "Calibration":
        return cls(available=False, reason=reason, n_valid=n_valid)


def _isotonic_fit(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """The isotonic (nondecreasing) fit of ``y`` on ``x`` with weights ``w``, evaluated at ``x``.

    The same float operations as ``sklearn.isotonic.IsotonicRegression(out_of_bounds="clip")
    .fit(x, y, w).predict(x)`` (scikit-learn 1.3-1.9: equal ``x`` averaged, pool adjacent
    violators, linear interpolation between the kept breakpoints), without importing
    scikit-learn, whose import alone took longer than a run's whole calibration.
    """
    x = np.asarray(x, np.float64).reshape(-1)
    y = np.asarray(y, np.float64).reshape(-1)
    w = np.ones(len(x)) if w is None else np.asarray(w, np.float64).reshape(-1)
    o = np.lexsort((y, x))
    ux, uy, uw = _merge_equal_x(x[o], y[o], w[o])
    fy = _pool_adjacent_violators(uy, uw)
    keep = np.ones(len(fy), dtype=bool)  # drop the inner points of a constant run
    keep[1:-1] = (fy[1:-1] != fy[:-2]) | (fy[1:-1] != fy[2:])
    tx, ty = ux[keep], fy[keep]
    if len(ty) == 1:
        return np.repeat(ty, len(x))
    return np.interp(np.clip(x, ux.min(), ux.max()), tx, ty)


def _merge_equal_x(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted ``x`` within float64 resolution of a run's first value become one point: the weighted mean."""
    eps = np.finfo(np.float64).resolution
    xs, ys, ws = [], [], []
    cx, cy, cw = float(x[0]), 0.0, 0.0
    for xj, yj, wj in zip(x.tolist(), y.tolist(), w.tolist()):
        if xj - cx >= eps:
            xs.append(cx), ys.append(cy / cw), ws.append(cw)
            cx, cw, cy = xj, wj, yj * wj
        else:
            cw += wj
            cy += yj * wj
    xs.append(cx), ys.append(cy / cw), ws.append(cw)
    return np.array(xs), np.array(ys), np.array(ws)


def _pool_adjacent_violators(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Nondecreasing least-squares fit of ``y`` (weights ``w``): pool adjacent violators, single pass
    with backtracking (Best & Chakravarti 1990, section 3); a block ``[i..j]`` keeps ``target[i] = j``
    and ``target[j] = i``, its weighted mean in ``y[i]`` and its weight in ``w[i]``."""
    y, w = y.tolist(), w.tolist()
    n = len(y)
    target = list(range(n))
    i = 0
    while i < n:
        k = target[i] + 1
        if k == n:
            break
        if y[i] < y[k]:
            i = k
            continue
        sum_wy, sum_w = w[i] * y[i], w[i]
        while True:  # within a decreasing run
            prev_y = y[k]
            sum_wy += w[k] * y[k]
            sum_w += w[k]
            k = target[k] + 1
            if k == n or prev_y < y[k]:
                y[i], w[i] = sum_wy / sum_w, sum_w
                target[i], target[k - 1] = k - 1, i
                if i > 0:
                    i = target[i - 1]  # backtrack: the pooled block may violate the one before
                break
    i = 0
    while i < n:
        k = target[i] + 1
        y[i + 1:k] = [y[i]] * (k - i - 1)
        i = k
    return np.array(y, dtype=np.float64)


def _isotonic_points(x: np.ndarray, correct: np.ndarray, prior: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Breakpoints ``(x strictly increasing, y nondecreasing in [0, 1])`` of the smoothed isotonic fit.

    1. Pool adjacent violators (:func:`_isotonic_fit`) gives
       blocks of consecutive feature values with increasing precision ``k / n``.
    2. Each block's precision is smoothed to ``(k + prior) / (n + 2 prior)``
       (``prior = 1``: Laplace's rule), so 25 correct out of 25 reads 0.96, not 1.
    3. A weighted isotonic fit over the blocks (weights ``n + 2 prior``) makes
       the smoothed values nondecreasing again.  Each block contributes its first
       and last feature value, like sklearn's thresholds.
    """
    c = correct.astype(np.float64)
    fitted = _isotonic_fit(x, c)
    o = np.lexsort((fitted, x))  # by feature value (ties: one block)
    xs, fs, cs = x[o], fitted[o], c[o]
    start = np.flatnonzero(np.r_[True, np.diff(fs) != 0])  # blocks: runs of one fitted value
    n = np.diff(np.r_[start, len(xs)]).astype(np.float64)
    k = np.add.reduceat(cs, start)
    lo, hi = xs[start], xs[np.r_[start[1:], len(xs)] - 1]
    smooth = (k + prior) / (n + 2 * prior)
    if len(start) > 1:
        smooth = _isotonic_fit(np.arange(len(start)), smooth, n + 2 * prior)
    px = np.ravel(np.column_stack([lo, hi]))
    py = np.repeat(smooth, 2)
    keep = np.r_[True, np.diff(px) > 0]  # a one-value block gives one point
    px, py = px[keep], py[keep]
    return px, np.maximum.accumulate(np.clip(py, 0.0, 1.0))  # exact monotonicity despite float noise


def reliability_table(predicted: Any, correct: Any, bins: int = 10) -> list[dict]:
    """Predicted vs observed precision in ``bins`` equal-width bins of the prediction (empty bins left out)."""
    p = np.asarray(predicted, np.float64).reshape(-1)
    c = np.asarray(correct, bool).reshape(-1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        m = which == b
        if m.any():
            out.append({"lo": round(float(edges[b]), 4), "hi": round(float(edges[b + 1]), 4), "n": int(m.sum()),
                        "mean_predicted": float(p[m].mean()), "observed": float(c[m].mean())})
    return out


def fit_calibration(feature: Any, correct: Any, *, feature_name: str = "margin", prior: float = 1.0,
                    folds: int = 5, seed: int = 0) -> Calibration:
    """Isotonic fit of ``correct`` on ``feature`` (``NaN`` features are left out).

    ``prior``: pseudo-counts of correct and of wrong pairs added to each
    isotonic block (see :func:`_isotonic_points`); ``0`` gives the plain fit.

    The reliability table uses out-of-fold predictions (``folds``-fold, seeded
    permutation) so it shows how the curve does on links it was not fitted on;
    with fewer than ``2 * folds`` links it uses the in-sample fit.
    """
    _check_feature(feature_name, combined=True)
    x = np.asarray(feature, np.float64).reshape(-1)
    c = np.asarray(correct, bool).reshape(-1)
    if len(x) != len(c):
        raise MmeaInputError(f"{len(x)} feature values for {len(c)} correctness labels")
    ok = ~np.isnan(x)
    x, c = x[ok], c[ok]
    if not len(x):
        return Calibration.unavailable("no validation source has a finite " + feature_name)
    if prior < 0:
        raise MmeaInputError(f"calibration prior must be >= 0, got {prior}")
    xs, ys = _isotonic_points(x, c, prior)
    cal = Calibration(feature=feature_name, x=xs, y=ys, n_valid=int(len(x)), n_correct=int(c.sum()),
                      prior=float(prior))
    if len(x) >= 2 * folds:
        pred = np.empty(len(x))
        part = np.random.default_rng(seed).permutation(len(x)) % folds
        for f in range(folds):
            fx, fy = _isotonic_points(x[part != f], c[part != f], prior)
            pred[part == f] = np.interp(x[part == f], fx, fy)
        kind = f"out-of-fold ({folds}-fold)"
    else:
        pred, kind = cal.predict(x), "in-sample"
    cal.reliability = [{"predictions": kind, **row} for row in reliability_table(pred, c)]
    return cal


# -- run directory files ---------------------------------------------------------------

def write_calibration(run_dir: str | Path, scores: ValidScores, feature: str = "margin") -> Calibration:
    """Fit on ``scores`` and write ``calibration.json`` and ``valid_scores.npz`` into ``run_dir``.

    With ``feature`` ``margin`` and a model uncertainty in ``scores``, :func:`choose_variance` decides on the
    validation links whether the curve reads the margin alone or margin and variance (:data:`COMBINED`).
    """
    from .runs import write_json

    run_dir = Path(run_dir)
    scores.save(run_dir / VALID_SCORES_FILE)
    decision = None
    if feature == "margin" and scores.uncertainty is not None:
        decision = choose_variance(scores.feature("margin"), scores.uncertainty, scores.correct)
    cal = refit_calibration(scores, COMBINED if decision and decision["used"] else feature)
    cal.variance = decision
    write_json(run_dir / CALIBRATION_FILE, cal.to_dict())
    return cal


def refit_calibration(scores: ValidScores, feature: str) -> Calibration:
    """The isotonic curve of ``feature`` (one of :data:`FEATURES` or :data:`COMBINED`) on ``scores``."""
    _check_feature(feature, combined=True)
    weights = None
    if feature == COMBINED:
        if scores.uncertainty is None:
            raise MmeaInputError(f"cannot calibrate on {COMBINED!r}: the run's model has no uncertainty "
                                 f"(only gaussian-strong and its point twin have one)")
        fit = fit_margin_variance(scores.feature("margin"), scores.uncertainty, scores.correct)
        if fit is None:
            raise MmeaInputError(f"cannot calibrate on {COMBINED!r}: the validation links are all right or all "
                                 "wrong, so no combination can be fitted")
        weights = fit[0]
        values = margin_variance_score(weights, scores.feature("margin"), scores.uncertainty)
    else:
        values = scores.feature(feature)
    cal = fit_calibration(values, scores.correct, feature_name=feature)
    cal.similarity, cal.num_candidates, cal.weights = scores.method, scores.num_candidates, weights
    return cal


def write_no_calibration(run_dir: str | Path, reason: str) -> Calibration:
    """Write a ``calibration.json`` that says why there is no calibration."""
    from .runs import write_json

    cal = Calibration.unavailable(reason)
    write_json(Path(run_dir) / CALIBRATION_FILE, cal.to_dict())
    return cal


def load_calibration(run_dir: str | Path, feature: str | None = None) -> Calibration:
    """The run's calibration; with another ``feature`` than the stored one, refitted from ``valid_scores.npz``."""
    path = Path(run_dir) / CALIBRATION_FILE
    if path.is_dir():
        raise MmeaInputError(f"{path}: is a directory, not a file")
    if not path.is_file():
        raise MmeaInputError(f"{path}: file not found",
                             hint="runs made before calibration existed have none; re-run mmea align")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MmeaInputError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise MmeaInputError(f"{path}: cannot be read ({e.strerror or e})") from None
    cal = Calibration.from_dict(data, path)
    if feature is None or not cal.available or feature == cal.feature:
        return cal
    _check_feature(feature, combined=True)
    npz = Path(run_dir) / VALID_SCORES_FILE
    if not npz.is_file():
        raise MmeaInputError(f"{npz}: file not found (needed to refit the calibration on {feature!r})")
    return refit_calibration(ValidScores.load(npz), feature)


def calibrated_alignment(run_dir: str | Path, *, feature: str | None = None,
                         calibration: Calibration | None = None):
    """A run's ``alignment.csv`` with ``est_precision`` on each source's predicted pair.

    The predicted pair of a source is its first row (rank 1), or its ``matched``
    row when the run used a matcher (a source without one has no prediction).
    Other rows get an empty ``est_precision``.  Returns ``(frame, calibration or
    None)``; the frame has the file's columns (numbers and booleans parsed, a bad
    value is a :class:`~mmea.errors.DataFormatError` naming the line), ``est_precision``,
    and ``_predicted`` / ``_pos`` (the row's position within its source, 0 first);
    ``frame.attrs["alignment_format"]`` says what was read
    (:class:`~mmea.alignment_csv.AlignmentFormat`).
    """
    from .alignment_csv import read_alignment_file

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MmeaInputError(f"{run_dir}: run directory not found")
    path = run_dir / "alignment.csv"
    if not path.exists():
        raise MmeaInputError(f"{path}: file not found", hint="RUN_DIR must be a directory written by mmea align")
    df, fmt = read_alignment_file(path, run_file=True)
    df = df.drop(columns=["_line"])
    df["_pos"] = df.groupby("src_id", sort=False).cumcount().to_numpy()
    if "matched" in df:
        df["_predicted"] = df["matched"].fillna(False).to_numpy(dtype=bool) & (df["_pos"].to_numpy() == 0)
    else:
        df["_predicted"] = df["_pos"].to_numpy() == 0
    if calibration is None:
        try:
            calibration = load_calibration(run_dir, feature)
        except MmeaInputError:
            if (run_dir / CALIBRATION_FILE).exists():
                raise
            calibration = None
    est = np.full(len(df), np.nan)
    if calibration is not None and calibration.available:
        for col in calibration.columns():
            if col not in df:
                raise MmeaInputError(f"{path}, line {fmt.header_line}: no {col!r} column to calibrate (the "
                                     f"calibration uses the {calibration.feature}; columns: {', '.join(fmt.columns)})")
        pred = df["_predicted"].to_numpy()
        est[pred] = calibration.predict(calibration.values(df.loc[pred]))
    df["est_precision"] = est
    df.attrs["alignment_format"] = fmt
    return df, calibration


def select_pairs(df, min_precision: float | None = None, topk: int = 1):
    """The rows to export: predicted pairs meeting ``min_precision``, plus up to ``topk - 1`` alternatives each.

    ``min_precision`` ``None`` keeps every predicted pair.  Alternatives (rows
    after a source's first) keep an empty ``est_precision``.  The helper
    columns ``_pos`` / ``_predicted`` are dropped.
    """
    if min_precision is not None and not (0.0 < float(min_precision) <= 1.0):
        raise MmeaInputError(f"--min-precision must be in (0, 1], got {min_precision}")
    if int(topk) < 1:
        raise MmeaInputError(f"--topk must be >= 1, got {topk}")
    pred = df["_predicted"].to_numpy()
    keep_pred = pred.copy()
    if min_precision is not None:
        est = df["est_precision"].to_numpy(dtype=np.float64)
        keep_pred &= np.nan_to_num(est, nan=-1.0) >= float(min_precision)
    kept_src = set(df.loc[keep_pred, "src_id"])
    # a predicted pair is its source's first row (a matched pair comes first); alternatives follow it
    rows = keep_pred | (df["src_id"].isin(kept_src).to_numpy() & (df["_pos"].to_numpy() < int(topk)) & ~pred)
    return df.loc[rows].drop(columns=["_pos", "_predicted"]).reset_index(drop=True)


def export_summary(df, selected, calibration: Calibration | None) -> dict:
    """Counts for the export: sources, exported pairs, coverage, estimated and (with gold) test precision."""
    n_sources = int(df["src_id"].nunique())
    chosen = df.loc[df["_predicted"].to_numpy() & df["src_id"].isin(set(selected["src_id"])).to_numpy()]
    out: dict = {"sources": n_sources, "predicted": int(df["_predicted"].sum()), "exported_pairs": int(len(chosen)),
                 "exported_rows": int(len(selected)),
                 "coverage": len(chosen) / n_sources if n_sources else 0.0}
    est = chosen["est_precision"].to_numpy(dtype=np.float64)
    out["mean_est_precision"] = float(np.nanmean(est)) if np.isfinite(est).any() else None
    if "gold" in chosen:
        judged = chosen["gold"].dropna()
        if len(judged):
            out["test_judged"] = int(len(judged))
            out["test_correct"] = int(judged.astype(bool).sum())
            out["test_precision"] = out["test_correct"] / out["test_judged"]
    if calibration is not None and calibration.available:
        out["calibration"] = {"available": True, "feature": calibration.feature, "n_valid": calibration.n_valid,
                              "n_correct": calibration.n_correct,
                              "valid_hits@1": calibration.n_correct / calibration.n_valid,
                              "max_estimate": float(calibration.y.max()), "few_valid": calibration.n_valid < FEW_VALID}
        if calibration.variance is not None:  # the valid links' evidence for or against the variance
            out["calibration"]["variance"] = calibration.variance
    else:
        out["calibration"] = {"available": False,
                              "reason": calibration.reason if calibration is not None else f"no {CALIBRATION_FILE}"}
    return out


# ----------------------------------------------------------------------------- variance as confidence (issue 17)
def auroc(score: Any, positive: Any) -> float | None:
    """Area under the ROC curve of ``score`` for the ``positive`` class (``sklearn.metrics.roc_auc_score``:
    the Mann-Whitney U over all positive / negative pairs, ties count half).  None when one class is empty."""
    from sklearn.metrics import roc_auc_score

    s, y = np.asarray(score, dtype=np.float64), np.asarray(positive, dtype=bool)
    if y.all() or not y.any():
        return None
    return float(roc_auc_score(y, s))


def precision_at_coverage(confidence: Any, correct: Any, coverage: float = 0.9) -> float | None:
    """Precision (share correct) of the ``coverage`` fraction of predictions with the highest ``confidence``."""
    c, y = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=bool)
    k = int(np.ceil(coverage * len(c)))
    if k == 0:
        return None
    keep = np.argsort(-c, kind="stable")[:k]
    return float(y[keep].mean())


def fit_margin_variance(margin: Any, uncertainty: Any, correct: Any) -> tuple[np.ndarray, float] | None:
    """A one-dimensional confidence from the margin and the variance, fitted on VALID links only.

    Logistic regression ``p(correct) = sigmoid(w_0 + w_1 margin + w_2 log u)`` (scikit-learn's
    ``LogisticRegression`` on the standardised features, L2 penalty ``1 / C`` with ``C = 1000``: almost
    unpenalised) over the links whose margin and uncertainty are finite; returns ``(w (3,)`` on the raw
    features, ``1 / C)``, or None when those links hold one class only.  A feature constant over the valid
    links (the point twin's frozen variance) gets weight 0.
    Isotonic regression on this score (:func:`fit_calibration`) then turns it into a calibrated precision.
    """
    from sklearn.linear_model import LogisticRegression

    x = np.stack([np.asarray(margin, np.float64),
                  np.log(np.maximum(np.asarray(uncertainty, np.float64), 1e-12))], 1)  # (n, 2)
    ok = np.isfinite(x).all(1)  # a source without a runner-up (NaN margin) or a top-1 says nothing here
    x, y = x[ok], np.asarray(correct, dtype=bool)[ok]
    if y.all() or not y.any():
        return None
    mu, sd = x.mean(0), x.std(0)
    # a constant feature (the point twin's frozen variances) says nothing: standardised to 0, raw weight 0
    sd = np.where(sd <= 1e-9 * (np.abs(mu) + 1.0), np.inf, sd)
    c = 1000.0
    lr = LogisticRegression(C=c, max_iter=1000).fit((x - mu) / sd, y)
    w = lr.coef_[0]  # (2,) on the standardised features
    # back to the raw features: b + sum_j w_j (x_j - mu_j) / sd_j
    raw = np.concatenate([[lr.intercept_[0] - (w * mu / sd).sum()], w / sd])
    return raw, 1.0 / c


def margin_variance_score(w: np.ndarray, margin: Any, uncertainty: Any) -> np.ndarray:
    """``w_0 + w_1 margin + w_2 log u`` (the log-odds of :func:`fit_margin_variance`)."""
    return w[0] + w[1] * np.asarray(margin, np.float64) + w[2] * np.log(np.maximum(np.asarray(uncertainty,
                                                                                                np.float64), 1e-12))


def variance_confidence_report(valid: dict, test: dict, coverage: float = 0.9) -> dict:
    """AUROC of (uncertainty -> top-1 wrong) and of (-margin -> wrong) on the test links; precision at
    ``coverage`` by the margin alone and by margin + variance (the combination fitted on ``valid`` only).

    ``valid`` / ``test``: ``{"margin": (n,), "uncertainty": (n,), "correct": (n,) bool}``.
    """
    wrong = ~np.asarray(test["correct"], dtype=bool)
    out = {"n_test": int(len(wrong)), "n_valid": int(len(valid["correct"])), "coverage": coverage,
           "auroc_uncertainty": auroc(test["uncertainty"], wrong), "auroc_margin": auroc(-np.asarray(test["margin"]),
                                                                                         wrong),
           "precision_margin": precision_at_coverage(test["margin"], test["correct"], coverage)}
    fit = fit_margin_variance(valid["margin"], valid["uncertainty"], valid["correct"])
    if fit is None:
        out.update({"precision_margin_variance": None, "combined": None,
                    "reason": "the valid links are all right or all wrong: no combination fitted"})
        return out
    w, _ = fit
    score = margin_variance_score(w, test["margin"], test["uncertainty"])
    out.update({"precision_margin_variance": precision_at_coverage(score, test["correct"], coverage),
                "auroc_margin_variance": auroc(-score, wrong),
                "combined": {"w_const": float(w[0]), "w_margin": float(w[1]), "w_log_uncertainty": float(w[2]),
                             "fitted_on": "valid links"}})
    return out


def choose_variance(margin: Any, uncertainty: Any, correct: Any, *, folds: int = 5, seed: int = 0,
                    min_gain: float = MIN_AUROC_GAIN) -> dict:
    """Whether the variance adds information to the margin, judged on the VALIDATION links only.

    The links are split into ``folds`` seeded folds; each fold's combined score ``w_0 + w_1 margin + w_2 log u``
    comes from weights fitted on the other folds (:func:`fit_margin_variance`), so the comparison is out of
    sample.  The variance is used when the AUROC of those out-of-fold scores for a right top-1 beats the
    margin's AUROC by at least ``min_gain`` (the margin needs no fit: AUROC ignores monotone maps).  Returns
    ``{"used", "auroc_margin", "auroc_combined_oof", "n", "folds", "min_gain", "reason"}``.
    """
    m, u = np.asarray(margin, np.float64), np.asarray(uncertainty, np.float64)
    c = np.asarray(correct, bool)
    ok = np.isfinite(m) & np.isfinite(u)
    m, u, c = m[ok], u[ok], c[ok]
    out = {"used": False, "n": int(len(c)), "folds": folds, "min_gain": min_gain, "auroc_margin": auroc(m, c),
           "auroc_combined_oof": None, "fitted_on": "valid links"}
    if out["auroc_margin"] is None or len(c) < 2 * folds:
        out["reason"] = "too few validation links, or all right / all wrong: the margin alone"
        return out
    part = np.random.default_rng(seed).permutation(len(c)) % folds
    oof = np.empty(len(c))
    for f in range(folds):
        fit = fit_margin_variance(m[part != f], u[part != f], c[part != f])
        if fit is None:  # a training part of one class: no evidence either way
            out["reason"] = f"fold {f}: its training part is all right or all wrong: the margin alone"
            return out
        oof[part == f] = margin_variance_score(fit[0], m[part == f], u[part == f])
    out["auroc_combined_oof"] = auroc(oof, c)
    gain = out["auroc_combined_oof"] - out["auroc_margin"]
    out["used"] = bool(gain >= min_gain)
    out["reason"] = (f"out-of-fold AUROC {out['auroc_combined_oof']:.3f} against the margin's "
                     f"{out['auroc_margin']:.3f} ({gain:+.3f}; needs {min_gain:+.3f}): "
                     + ("margin and variance" if out["used"] else "the margin alone"))
    return out
