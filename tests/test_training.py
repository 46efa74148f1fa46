"""The shared training loop (mmea.training) alone, on a toy module: patience, time budget, best state,
checkpoint + resume, the history record; and the one shape of model_info.modalities."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from mmea.checkpoint import CHECKPOINT_FILE, Checkpointer, TrainingInterrupted
from mmea.errors import MmeaInputError
from mmea.training import (STOP_REASONS, EpochOutput, EpochRecord, TimeBudget, Trainer, TrainingModule, Validation,
                           stop_reason)


class Toy(TrainingModule):
    """A scalar pulled towards 3 with noise from its own generator and numpy's global one.

    ``scores``: the validation metric of each epoch (default: minus the loss).
    """

    kind = "toy"

    def __init__(self, scores=None, seed: int = 0, initial: float | None = None, validates: bool = True):
        self.w = np.zeros(1)
        self.rng = np.random.default_rng(seed)
        self.scores, self.initial, self.validates = scores, initial, validates
        self.calls: list[str] = []
        self.restored = None

    def on_fresh_start(self, trainer):
        return None if self.initial is None else Validation(self.initial, extra={"toy_metric": self.initial})

    def train_epoch(self, epoch, trainer):
        self.calls.append(f"train {epoch}")
        self.w += 0.5 * (3.0 - self.w) + 0.1 * self.rng.standard_normal(1) + 0.01 * np.random.rand()
        return EpochOutput(float(((3.0 - self.w) ** 2).sum()), {"w": float(self.w[0])})

    def can_validate(self):
        return self.validates

    def validate(self, epoch, trainer):
        self.calls.append(f"validate {epoch}")
        v = self.scores[epoch - 1] if self.scores is not None else -float(((3.0 - self.w) ** 2).sum())
        return Validation(v, extra={"toy_metric": v})

    def snapshot(self):
        return self.w.copy()

    def restore(self, state):
        self.restored = state.copy()
        self.w = state.copy()

    def loop_state(self):
        return {"w": self.w, "rng": self.rng.bit_generator.state}

    def load_loop_state(self, saved):
        self.w = np.array(saved["w"])
        self.rng.bit_generator.state = saved["rng"]


def without_times(history):
    return [{k: v for k, v in r.as_dict().items() if k != "time_s"} for r in history]


# ------------------------------------------------------------------ stopping
def test_patience_stops_and_the_best_state_is_restored():
    toy = Toy(scores=[0.1, 0.5, 0.4, 0.5, 0.3, 0.9])
    res = Trainer(max_epochs=6, patience=2).fit(toy)
    assert res.stopped == "patience" and res.epochs_run == 4  # 0.4 and 0.5 do not beat 0.5 (ties: the earlier)
    assert res.best_epoch == 2 and res.best_valid == 0.5
    w_after = [r.extra["w"] for r in res.history]
    assert toy.restored[0] == pytest.approx(w_after[1])  # the weights of epoch 2 are back


def test_later_ties_win_when_asked():
    res = Trainer(max_epochs=4, keep_later_ties=True).fit(Toy(scores=[0.5, 0.5, 0.2, 0.1]))
    assert res.stopped == "max_epochs" and res.best_epoch == 2


def test_patience_counts_validations_not_epochs_and_a_module_may_carry_on():
    class TwoPhases(Toy):
        phase = 1

        def on_patience_exhausted(self, epoch, trainer):
            if self.phase == 1:
                self.phase = 2
                return False
            return True

    toy = TwoPhases(scores=[0.5, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4])
    res = Trainer(max_epochs=8, eval_every=2, patience=1).fit(toy)
    # validations at epochs 2, 4, 6: epoch 4 exhausts phase 1 (no stop), epoch 6 exhausts phase 2
    assert [c for c in toy.calls if c.startswith("validate")] == ["validate 2", "validate 4", "validate 6"]
    assert res.stopped == "patience" and res.epochs_run == 6 and toy.phase == 2


def test_the_time_budget_stops_after_a_validated_epoch():
    toy = Toy()
    budget = TimeBudget(1.0, start=time.perf_counter() - 5.0)  # already spent
    res = Trainer(max_epochs=10, eval_every=100, budget=budget).fit(toy)
    assert res.stopped == "time_budget" and res.epochs_run == 1
    assert toy.calls == ["train 1", "validate 1"]  # not due by eval_every, validated because the budget ran out
    assert TimeBudget(0).out_of_time() is False and TimeBudget(None).spent_fraction(0.0) is False


def test_a_held_back_budget_runs_out_that_much_earlier():
    budget = TimeBudget(10.0, start=time.perf_counter() - 6.0)  # 4 s left
    assert not budget.out_of_time()
    budget.hold_back(5.0)  # more than what is left: out of time now
    assert budget.out_of_time() and budget.reserve == 5.0
    budget.hold_back(-1.0)  # a replacing hold; a negative one holds nothing back
    assert not budget.out_of_time() and budget.reserve == 0.0
    unlimited = TimeBudget(None)
    unlimited.hold_back(1e9)
    assert unlimited.out_of_time() is False


def test_work_ahead_counts_against_what_is_left():
    budget = TimeBudget(10.0, start=time.perf_counter() - 6.0)  # 4 s left
    budget.hold_back(2.0)  # 2 s left for the loop
    assert not budget.out_of_time() and not budget.out_of_time(ahead=1.0)
    assert budget.out_of_time(ahead=3.0)  # 3 s of work would run into the held-back 2 s
    assert not budget.out_of_time(ahead=-5.0)  # a negative estimate counts as nothing
    assert TimeBudget(None).out_of_time(ahead=1e9) is False


def test_a_module_may_end_an_epoch_on_the_budget():
    class Early(Toy):
        def train_epoch(self, epoch, trainer):
            out = super().train_epoch(epoch, trainer)
            return EpochOutput(out.loss, out.extra, out_of_time=epoch == 2)

    res = Trainer(max_epochs=5, eval_every=10).fit(Early())
    assert res.epochs_run == 2 and res.history[1].valid is not None  # epoch 2 cut short, validated


def test_without_validation_the_last_state_is_kept_and_max_epochs_is_the_reason():
    toy = Toy(validates=False)
    res = Trainer(max_epochs=3, patience=1).fit(toy)
    assert res.stopped == "max_epochs" and res.best_epoch == 3 and toy.restored is None
    assert all(r.valid is None for r in res.history)
    res0 = Trainer(max_epochs=0).fit(Toy())
    assert res0.stopped == "max_epochs" and res0.history == [] and res0.epochs_run == 0


def test_ctrl_c_inside_an_epoch_is_interrupted():
    class CtrlC(Toy):
        def train_epoch(self, epoch, trainer):
            if epoch == 2:
                raise KeyboardInterrupt
            return super().train_epoch(epoch, trainer)

    trainer = Trainer(max_epochs=5)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(CtrlC())
    assert trainer.stopped == "interrupted" and [r.epoch for r in trainer.history] == [1]


# ------------------------------------------------------------------ the record
def test_history_record_and_result_shape():
    toy = Toy(initial=-100.0)
    res = Trainer(max_epochs=3, eval_every=2, monitor="toy_metric").fit(toy)
    d = res.as_dict()
    assert set(d) == {"monitor", "stopped", "epochs_run", "best_epoch", "best_valid", "history"}
    assert d["monitor"] == "toy_metric" and d["stopped"] in STOP_REASONS and d["epochs_run"] == 3
    rows = d["history"]
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # the initial validation is a candidate, not a record here
    assert all(list(r)[:4] == ["epoch", "loss", "valid", "time_s"] and r["time_s"] >= 0 for r in rows)
    assert rows[0]["valid"] is None and rows[1]["valid"] == rows[1]["toy_metric"] and "w" in rows[2]
    assert EpochRecord.from_dict(rows[1]) == res.history[1]

    class Recorded(Toy):
        record_initial = True

    res = Trainer(max_epochs=2).fit(Recorded(initial=100.0))  # the untrained state stays the best
    assert [r.epoch for r in res.history] == [0, 1, 2] and res.history[0].loss is None and res.epochs_run == 2
    assert res.best_epoch == 0 and res.history[0].extra == {"toy_metric": 100.0}


def test_old_stop_words_map_to_the_vocabulary():
    assert [stop_reason(w) for w in ("epochs", "time", "time budget", "early stopping", "patience", None)] == \
        ["max_epochs", "time_budget", "time_budget", "patience", "patience", None]


# ------------------------------------------------------------------ checkpoints
def run_toy(tmp_path, **ckpt_kw):
    tmp_path.mkdir(exist_ok=True)
    np.random.seed(7)
    toy = Toy(scores=None, seed=1)
    trainer = Trainer(max_epochs=6, eval_every=2, patience=3, checkpoint=Checkpointer(tmp_path, **ckpt_kw))
    with trainer.checkpoint.guard():
        return toy, trainer.fit(toy)


def test_checkpoint_then_resume_equals_the_uninterrupted_run(tmp_path):
    toy_a, whole = run_toy(tmp_path / "a")
    with pytest.raises(TrainingInterrupted):
        run_toy(tmp_path / "b", every=0, stop_after_epochs=3)  # Ctrl-C after epoch 3: only then a file
    saved = torch.load(tmp_path / "b" / CHECKPOINT_FILE, weights_only=True)
    assert saved["epoch"] == 3 and saved["kind"] == "toy" and "loop" in saved["state"]
    np.random.seed(99)  # whatever the global state now: the checkpoint restores it
    ckpt = Checkpointer(tmp_path / "b")
    ckpt.load()
    toy_b = Toy(scores=None, seed=1)
    resumed = Trainer(max_epochs=6, eval_every=2, patience=3, checkpoint=ckpt).fit(toy_b)
    assert resumed.resumed_after == 3 and len(resumed.history) == 6
    assert without_times(resumed.history) == without_times(whole.history)
    assert (resumed.best_epoch, resumed.best_valid, resumed.stopped) == (whole.best_epoch, whole.best_valid,
                                                                         whole.stopped)
    assert np.array_equal(toy_b.w, toy_a.w)


def test_a_resumed_finished_loop_runs_no_epoch(tmp_path):
    _, whole = run_toy(tmp_path)
    ckpt = Checkpointer(tmp_path)
    ckpt.load()
    toy = Toy(seed=1)
    again = Trainer(max_epochs=6, eval_every=2, patience=3, checkpoint=ckpt).fit(toy)
    assert toy.calls == [] and again.stopped == whole.stopped and len(again.history) == len(whole.history)


def test_a_checkpoint_of_an_older_format_is_refused_clearly(tmp_path):
    torch.save({"format": 1, "kind": "toy", "epoch": 2, "state": {}, "rng": {}}, tmp_path / CHECKPOINT_FILE)
    with pytest.raises(MmeaInputError, match="format 1, written by an older mmea"):
        Checkpointer(tmp_path).load()


# ------------------------------------------------------------------ model_info.modalities
def test_modalities_are_one_shape_and_bench_reads_the_older_ones():
    from mmea.bench import modalities_used
    counts = {"names": 10, "structure": 8}
    assert modalities_used({"modalities": counts}) == ["names", "structure"]
    assert modalities_used({"modalities": {"relations": 5, "images": 0, "numeric": 3}}) == ["relations", "numeric"]
    # cells written before: a list (selfmea), counts with an "entities" total (gaussian), nothing
    assert modalities_used({"modalities": ["names", "anchors"]}) == ["names", "anchors"]
    assert modalities_used({"modalities": {"relations": 5, "images": 2, "numeric": 0, "entities": 9}}) == \
        ["relations", "images"]
    assert modalities_used({}) == []
