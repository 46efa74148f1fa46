"""One training loop for every model that trains in epochs (SelfMEA, Gaussian / point twin, link
prediction, CLEP).

The split is PyTorch Lightning's (a module owns its epoch and its validation; a trainer owns
everything around them) in PyKEEN's template-method form: :class:`Trainer.fit` runs the epochs and
calls the hooks of a :class:`TrainingModule`, which implements only

* :meth:`~TrainingModule.train_epoch` -- one epoch of training: ``EpochOutput(loss, extra)``;
* :meth:`~TrainingModule.validate` -- the monitored validation metric: ``Validation(value, key)``;
* :meth:`~TrainingModule.snapshot` / :meth:`~TrainingModule.restore` -- a copy of the weights to keep;
* :meth:`~TrainingModule.loop_state` / :meth:`~TrainingModule.load_loop_state` -- everything else its
  epochs change (optimizer, random generators, pools, ...), for exact resumes;

and, where it needs them, :meth:`~TrainingModule.on_fresh_start` (an initial validation),
:meth:`~TrainingModule.after_epoch` (SelfMEA's seed expansion),
:meth:`~TrainingModule.on_patience_exhausted` (the Gaussian model's switch to stage 2) and
:meth:`~TrainingModule.on_fit_end` (a look at the last state before the kept one is restored).

What :meth:`Trainer.fit` guarantees:

* **Epochs** ``1..max_epochs`` (after a resume: from the epoch after the saved one; none when the
  saved loop had already stopped).  Each epoch is ``train_epoch``, then ``validate`` when it is due
  (every ``eval_every`` epochs, at ``max_epochs``, and when the time budget is spent), then
  ``after_epoch``, then the history record, then the stop decision, then the checkpoint.
* **Best state.**  After a validation whose ``key`` beats the best one so far (higher is better;
  ties keep the later epoch when ``keep_later_ties``, else the earlier), ``snapshot()`` is kept;
  at the end ``restore(kept)`` puts it back.  An initial validation returned by
  ``on_fresh_start`` is a candidate too (epoch 0).  Without validation the last state is kept.
* **Patience** (0: off) counts validations in a row without a better key; when it reaches
  ``patience``, ``on_patience_exhausted`` decides: ``True`` stops the loop (``"patience"``),
  ``False`` (the module changed phase) starts the count again.
* **Time budget** (:class:`TimeBudget`): wall-clock seconds from ``budget.start`` plus, after a
  resume, the seconds the interrupted run had already trained.  A module may end an epoch early
  when it is spent (``EpochOutput.out_of_time``); the trainer checks it after every epoch, so the
  loop stops (``"time_budget"``) with that epoch validated.
* **Checkpoints** through a :class:`~mmea.checkpoint.Checkpointer`: after every epoch
  ``epoch_end`` gets the module's ``loop_state()`` plus the loop's own state under ``"loop"``
  (history, best state, patience count, stop reason, seconds trained), with ``last=True`` on the
  epoch the loop stops; Ctrl-C sets ``stopped = "interrupted"`` and propagates, so the job's
  ``Checkpointer.guard()`` writes the last finished epoch.  A resume restores both states and the
  random states the Checkpointer saved, so on CPU it repeats the uninterrupted run exactly.
* **One record**: one :class:`EpochRecord` per epoch (``epoch``, ``loss``, ``valid`` = the
  monitored metric or None, ``time_s`` = seconds of training, then the module's own fields), and
  one :class:`TrainingResult` whose :meth:`~TrainingResult.as_dict` every job writes into its
  ``metrics.json`` (top level for ``mmea linkpred`` / ``pretrain-clep``, ``model_info`` for
  ``mmea align``): ``monitor``, ``stopped`` (one of :data:`STOP_REASONS`), ``epochs_run``,
  ``best_epoch``, ``best_valid``, ``history``.
* A progress bar (:func:`mmea.progress.progress_bar`, off unless asked and on a terminal) with the
  module's postfix.

The loop draws no random numbers and does no arithmetic on the module's tensors, so a model
moved onto it computes exactly what its own loop computed.  This module does not import torch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from .checkpoint import Checkpointer
from .progress import epoch_postfix, progress_bar

log = logging.getLogger("mmea.training")

__all__ = ["STOP_REASONS", "StopReason", "stop_reason", "EpochRecord", "EpochOutput", "Validation", "TimeBudget",
           "TrainingModule", "Trainer", "TrainingResult"]

StopReason = Literal["max_epochs", "patience", "time_budget", "interrupted"]
#: why a loop ended: all its epochs, patience on the validation metric, the wall-clock budget, Ctrl-C
#: (``interrupted`` never reaches a finished ``metrics.json``: the run stops with a checkpoint instead)
STOP_REASONS: tuple[str, ...] = ("max_epochs", "patience", "time_budget", "interrupted")
#: the words the four loops used before they shared this one (``metrics.json`` files written then)
_OLD_STOP_WORDS = {"epochs": "max_epochs", "time": "time_budget", "time budget": "time_budget",
                   "early stopping": "patience"}


def stop_reason(word: Any) -> str | None:
    """``word`` in the :data:`STOP_REASONS` vocabulary: older words (``"time budget"``,
    ``"early stopping"``, ``"epochs"``, ``"time"``) mapped, anything else returned as it is."""
    if word is None:
        return None
    return _OLD_STOP_WORDS.get(str(word), str(word))


@dataclass
class EpochRecord:
    """One epoch of the history: ``epoch``, its mean ``loss``, the monitored ``valid`` metric (None
    when not validated), ``time_s`` (seconds of training, validation excluded), and ``extra``:
    the module's own fields (``pool``, ``stage``, ``valid_mrr``, ...), written beside them."""

    epoch: int
    loss: float | None = None
    valid: float | None = None
    time_s: float = 0.0
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"epoch": self.epoch, "loss": self.loss, "valid": self.valid, "time_s": self.time_s, **self.extra}

    @classmethod
    def from_dict(cls, d: dict) -> "EpochRecord":
        d = dict(d)
        return cls(int(d.pop("epoch")), d.pop("loss", None), d.pop("valid", None), d.pop("time_s", 0.0), d)


@dataclass
class EpochOutput:
    """What :meth:`TrainingModule.train_epoch` returns: the epoch's mean ``loss`` (None: no step),
    ``extra`` fields for its record, and ``out_of_time`` when it stopped early on the time budget."""

    loss: float | None
    extra: dict = field(default_factory=dict)
    out_of_time: bool = False


@dataclass
class Validation:
    """What :meth:`TrainingModule.validate` returns: ``value`` the monitored metric (higher is
    better), ``key`` what decides the best state (default ``value``; a tuple breaks ties, e.g.
    ``(hits@1, mrr)``), ``extra`` more fields for the epoch record."""

    value: float
    key: Any = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.key is None:
            self.key = self.value


class TimeBudget:
    """A wall-clock budget of ``seconds`` (``None`` or ``<= 0``: none) counted from ``start``
    (``time.perf_counter()``; default: now).  :meth:`resume_after` moves the start back by the
    seconds an interrupted run had already used, so a resumed run has the rest."""

    def __init__(self, seconds: float | None = None, start: float | None = None):
        self.seconds = float(seconds) if seconds and seconds > 0 else None
        self.start = time.perf_counter() if start is None else float(start)
        self.reserve = 0.0  # seconds held back for work after the budgeted loop (:meth:`hold_back`)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def out_of_time(self, ahead: float = 0.0) -> bool:
        """The budget (less what is held back) is spent, or would be after ``ahead`` more seconds of work."""
        return self.seconds is not None and self.elapsed() + max(float(ahead), 0.0) > self.seconds - self.reserve

    def hold_back(self, seconds: float) -> None:
        """Keep ``seconds`` of the budget for work that must still fit in it after the budgeted loop stops (a
        model's final output): :meth:`out_of_time` turns true that much earlier.  Replaces an earlier hold."""
        self.reserve = max(float(seconds), 0.0)

    def spent_fraction(self, fraction: float) -> bool:
        """More than ``fraction`` of the budget is used (never without a budget)."""
        return self.seconds is not None and self.elapsed() > fraction * self.seconds

    def resume_after(self, elapsed_before: float) -> None:
        self.start = time.perf_counter() - float(elapsed_before)


class TrainingModule:
    """What a model implements for :class:`Trainer` (see the module docstring for the order of calls).

    ``kind`` names the checkpoint (a resume refuses a checkpoint of another kind);
    ``record_initial``: the validation ``on_fresh_start`` returns is also history record ``epoch 0``.
    """

    kind: str = "training"
    record_initial: bool = False

    def on_fresh_start(self, trainer: "Trainer") -> Validation | None:
        """Before epoch 1 of a run that is not resumed; a returned validation is a best-state candidate."""
        return None

    def train_epoch(self, epoch: int, trainer: "Trainer") -> EpochOutput:
        raise NotImplementedError

    def can_validate(self) -> bool:
        return True

    def validate(self, epoch: int, trainer: "Trainer") -> Validation:
        raise NotImplementedError

    def snapshot(self) -> Any:
        """A copy of the weights to keep (called when a validation is the best so far)."""
        raise NotImplementedError

    def restore(self, state: Any) -> None:
        """Put the kept ``snapshot()`` back (after the last epoch)."""
        raise NotImplementedError

    def after_epoch(self, record: EpochRecord, trainer: "Trainer") -> None:
        """After the epoch's training and validation, before its record is final and its checkpoint."""

    def on_patience_exhausted(self, epoch: int, trainer: "Trainer") -> bool:
        """``patience`` validations without gain: ``True`` stops, ``False`` carries on (count restarts)."""
        return True

    def on_fit_end(self, trainer: "Trainer") -> None:
        """After the last epoch, before the kept state is restored (to record the last state)."""

    def loop_state(self) -> dict:
        """Everything the epochs change besides the trainer's own state: what a checkpoint must hold."""
        return {}

    def load_loop_state(self, state: dict) -> None:
        """Inverse of :meth:`loop_state` (``state`` also holds ``"epoch"`` and ``"loop"``)."""

    def postfix(self, record: EpochRecord, trainer: "Trainer") -> dict:
        """The progress bar's postfix after ``record``."""
        return epoch_postfix(record.loss, None, valid=trainer.last_valid)


class RankingValidationModule(TrainingModule):
    """A :class:`TrainingModule` for a torch ``self.model`` validated by filtered MRR: the shared
    validation and best-state steps of link prediction and CLEP.

    A subclass sets ``self.model``, ``self.valid_eval`` (the validation triples), ``self.eval_s``
    (0.0) and implements ``evaluate(triples) -> {"mrr", "hits@10", ...}``; the kept state is the
    model's ``state_dict`` and ``best_metrics`` the validation metrics of that state.
    """

    _last_metrics: dict | None = None
    best_metrics: dict | None = None

    def can_validate(self) -> bool:
        return len(self.valid_eval) > 0

    def validate(self, epoch: int, trainer) -> Validation:
        t_eval = time.perf_counter()
        vm = self._last_metrics = self.evaluate(self.valid_eval)
        self.eval_s += time.perf_counter() - t_eval
        return Validation(vm["mrr"], extra={"valid_mrr": vm["mrr"], "valid_hits@10": vm["hits@10"]})

    def snapshot(self) -> dict:
        self.best_metrics = self._last_metrics
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def restore(self, state: dict) -> None:
        self.model.load_state_dict(state)


@dataclass
class _Best:
    epoch: int | None = None
    key: Any = None
    value: float | None = None
    state: Any = None


@dataclass
class TrainingResult:
    """How a loop ended; :meth:`as_dict` is what every job writes into ``metrics.json``."""

    monitor: str
    stopped: str
    history: list[EpochRecord]
    best_epoch: int | None
    best_valid: float | None
    train_s: float
    resumed_after: int | None = None

    @property
    def epochs_run(self) -> int:
        """Epochs trained (the initial ``epoch 0`` record is not one)."""
        return sum(1 for r in self.history if r.epoch > 0)

    def as_dict(self) -> dict:
        return {"monitor": self.monitor, "stopped": self.stopped, "epochs_run": self.epochs_run,
                "best_epoch": self.best_epoch, "best_valid": self.best_valid,
                "history": [r.as_dict() for r in self.history]}


class Trainer:
    """Runs a :class:`TrainingModule`: epochs, validation, best state, patience, time budget,
    checkpoints, progress bar, history (the guarantees are in the module docstring).

    Args:
        max_epochs: the last epoch.
        eval_every: epochs between validations (the last epoch is always validated).
        patience: validations in a row without gain before ``on_patience_exhausted`` (0: never).
        budget: the wall-clock budget (default: none).
        checkpoint: the run's :class:`~mmea.checkpoint.Checkpointer` (default: none, no files).
        monitor: the name of the validation metric, for the record (``"valid_mrr"``).
        keep_later_ties: a validation equal to the best replaces it.
        progress, desc, unit: the progress bar.
    """

    def __init__(self, *, max_epochs: int, eval_every: int = 1, patience: int = 0, budget: TimeBudget | None = None,
                 checkpoint: Checkpointer | None = None, monitor: str = "valid", keep_later_ties: bool = False,
                 progress: bool = False, desc: str = "train", unit: str = "epoch"):
        self.max_epochs, self.eval_every, self.patience = int(max_epochs), max(1, int(eval_every)), int(patience)
        self.budget = budget if budget is not None else TimeBudget(None)
        self.checkpoint = checkpoint if checkpoint is not None else Checkpointer(None)
        self.monitor, self.keep_later_ties = monitor, keep_later_ties
        self.progress, self.desc, self.unit = progress, desc, unit
        self.history: list[EpochRecord] = []
        self.best = _Best()
        self.stalled = 0                   # validations in a row without gain
        self.stopped: str | None = None    # None while running
        self.last_valid: float | None = None
        self.resumed_after: int | None = None
        self._timed_out = False            # the last epoch ended on the time budget

    # -- the loop's own state in a checkpoint ------------------------------------------
    def state_dict(self) -> dict:
        return {"history": [r.as_dict() for r in self.history], "stalled": self.stalled, "stopped": self.stopped,
                "best": {"epoch": self.best.epoch, "key": self.best.key, "value": self.best.value,
                         "state": self.best.state},
                "last_valid": self.last_valid, "elapsed_s": self.budget.elapsed()}

    def load_state_dict(self, state: dict) -> None:
        self.history = [EpochRecord.from_dict(r) for r in state["history"]]
        self.stalled, self.stopped, self.last_valid = state["stalled"], state["stopped"], state["last_valid"]
        b = state["best"]
        self.best = _Best(b["epoch"], tuple(b["key"]) if isinstance(b["key"], list) else b["key"], b["value"],
                          b["state"])
        self.budget.resume_after(state["elapsed_s"])

    def reset_patience(self) -> None:
        """Start counting validations without gain again (a module entering a new phase)."""
        self.stalled = 0

    def _improves(self, key: Any) -> bool:
        if self.best.key is None:
            return True
        return key >= self.best.key if self.keep_later_ties else key > self.best.key

    def _keep_if_best(self, epoch: int, v: Validation, module: TrainingModule) -> None:
        self.last_valid = v.value
        if self._improves(v.key):
            self.best = _Best(epoch, v.key, v.value, module.snapshot())
            self.stalled = 0
        else:
            self.stalled += 1

    # -- the loop ----------------------------------------------------------------------
    def _start(self, module: TrainingModule) -> int:
        """Resume from the checkpoint, or run ``on_fresh_start``: the first epoch to train."""
        saved = self.checkpoint.resume_state(module.kind)
        if saved is not None:
            module.load_loop_state(saved)
            self.load_state_dict(saved["loop"])
            self.resumed_after = int(saved["epoch"])
            log.info("%s: resumed after %s %d", self.desc, self.unit, saved["epoch"])
            return saved["epoch"] + 1 if self.stopped is None else self.max_epochs + 1
        t0 = time.perf_counter()
        init = module.on_fresh_start(self)
        if init is not None:
            self._keep_if_best(0, init, module)
            self.stalled = 0
            if module.record_initial:
                self.history.append(EpochRecord(0, None, init.value, round(time.perf_counter() - t0, 3),
                                                dict(init.extra)))
        return 1

    def _epoch(self, epoch: int, module: TrainingModule) -> EpochRecord:
        """Train one epoch, validate it when due, keep the best state, run ``after_epoch``."""
        t0 = time.perf_counter()
        out = module.train_epoch(epoch, self)
        record = EpochRecord(epoch, out.loss, None, round(time.perf_counter() - t0, 3), dict(out.extra))
        timed_out = self._timed_out = out.out_of_time or self.budget.out_of_time()
        if module.can_validate() and (epoch % self.eval_every == 0 or epoch == self.max_epochs or timed_out):
            v = module.validate(epoch, self)
            record.valid = v.value
            record.extra.update(v.extra)
            self._keep_if_best(epoch, v, module)
        elif not module.can_validate():
            self.best = _Best(epoch)  # nothing to compare: the last state is the kept one
        module.after_epoch(record, self)
        return record

    def _stop_reason(self, record: EpochRecord, module: TrainingModule) -> str | None:
        if self._timed_out or self.budget.out_of_time():
            return "time_budget"
        if record.valid is not None and self.patience and self.stalled >= self.patience:
            if module.on_patience_exhausted(record.epoch, self):
                return "patience"
            self.stalled = 0
        return "max_epochs" if record.epoch >= self.max_epochs else None

    def fit(self, module: TrainingModule) -> TrainingResult:
        """Run ``module`` to the end (see the module docstring); the best state is restored."""
        start = self._start(module)
        bar = progress_bar(total=self.max_epochs, initial=min(start - 1, self.max_epochs), progress=self.progress,
                           desc=self.desc, unit=self.unit)
        try:
            for epoch in range(start, self.max_epochs + 1):
                record = self._epoch(epoch, module)
                self.history.append(record)
                log.info("%s %s %d: loss %s, %s %s, %.2f s", self.desc, self.unit, epoch,
                         "-" if record.loss is None else f"{record.loss:.4f}", self.monitor,
                         "-" if record.valid is None else f"{record.valid:.4f}", record.time_s)
                bar.update(1)
                bar.set_postfix(module.postfix(record, self))
                self.stopped = self._stop_reason(record, module)
                self.checkpoint.epoch_end(epoch, module.kind,
                                          lambda: {**module.loop_state(), "loop": self.state_dict()},
                                          last=self.stopped is not None)
                if self.stopped is not None:
                    break
        except KeyboardInterrupt:
            self.stopped = "interrupted"
            raise
        finally:
            bar.close()
        if self.stopped is None:  # no epoch left to run (max_epochs 0, or a resume of a finished loop)
            self.stopped = "max_epochs"
        module.on_fit_end(self)
        if self.best.state is not None:
            module.restore(self.best.state)
        return TrainingResult(self.monitor, self.stopped, list(self.history), self.best.epoch, self.best.value,
                              self.budget.elapsed(), self.resumed_after)
