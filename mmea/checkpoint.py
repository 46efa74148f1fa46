"""Training checkpoints: ``RUN_DIR/checkpoint.pt``, ``--resume`` and Ctrl-C.

The shared training loop (:class:`mmea.training.Trainer`) talks to the :class:`Checkpointer` of its run
(``ctx.checkpoint`` for alignment models) at two points::

    saved = ckpt.resume_state("selfmea")        # before the first epoch: None, or the state to continue from
    if saved is not None:
        ...restore the loop's variables; start = saved["epoch"] + 1
    for epoch in range(start, epochs + 1):
        ...
        ckpt.epoch_end(epoch, "selfmea", lambda: {"net": net.state_dict(), ...})   # after each finished epoch

and the job that runs the loop wraps it in ``with ckpt.guard():``, so that
Ctrl-C (``KeyboardInterrupt``) first writes the state of the last finished
epoch, then stops with :class:`TrainingInterrupted` ("interrupted; resume
with: mmea align --resume RUN_DIR").

* :meth:`Checkpointer.epoch_end` writes the file every ``every`` epochs
  (``0``: only on Ctrl-C); in between it keeps a copy of the state in memory
  for Ctrl-C.  A KeyboardInterrupt in the middle of an epoch therefore saves
  the *previous* epoch's end, and a resumed run replays the lost epoch with
  the same random numbers.
* The file is written atomically (a temporary file, then ``os.replace``), so
  an interrupt during the write leaves the previous checkpoint intact.
* Besides the loop's own state the file holds the global random states
  (Python, numpy, torch, CUDA), restored by :meth:`Checkpointer.resume_state`,
  so that a resumed run on CPU reproduces the uninterrupted one exactly.
* numpy arrays are stored as tensors and restored as arrays, so the file loads
  with ``torch.load(weights_only=True)`` (no pickled code).

This module imports torch only inside the methods that save and load.
"""

from __future__ import annotations

import logging
import os
import random
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import MmeaInputError

log = logging.getLogger("mmea.checkpoint")

__all__ = ["CHECKPOINT_FILE", "CHECKPOINT_FORMAT", "Checkpointer", "TrainingInterrupted", "global_rng_state",
           "restore_global_rng_state"]

CHECKPOINT_FILE = "checkpoint.pt"
#: version of the file layout; a file of another version is refused with a clear error.
#: 2: the state holds the shared loop's own state under ``"loop"`` (:meth:`mmea.training.Trainer.state_dict`)
CHECKPOINT_FORMAT = 2
_NDARRAY = "__ndarray__"


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C after the checkpoint was written; the message says how to resume.

    A ``KeyboardInterrupt``, so that no ``except Exception`` on the way up (a
    bench cell, a fallback) mistakes it for a failure and carries on.
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# -- random states ---------------------------------------------------------------------

def global_rng_state() -> dict:
    """The global random states: Python, numpy's legacy generator and (when imported) torch / CUDA."""
    out: dict = {"python": random.getstate(), "numpy": np.random.get_state()}
    if "torch" in sys.modules:
        import torch

        out["torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_global_rng_state(state: dict) -> None:
    """Inverse of :func:`global_rng_state` (parts that are absent are left alone)."""
    if "python" in state:
        v, internal, gauss = state["python"]
        random.setstate((v, tuple(internal), gauss))
    if "numpy" in state:
        np.random.set_state(tuple(state["numpy"]))
    if "torch" in state:
        import torch

        torch.set_rng_state(state["torch"].cpu())
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


# -- encoding: numpy arrays <-> tensors, copies for the in-memory snapshot ----------------

def _encode(obj: Any, copy: bool) -> Any:
    """``obj`` with numpy arrays / scalars made torch-loadable; tensors cloned when ``copy``."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().clone() if copy else obj.detach()
    if isinstance(obj, np.ndarray):
        return {_NDARRAY: torch.from_numpy(np.array(obj, copy=True))}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _encode(v, copy) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_encode(v, copy) for v in obj)
    return obj


def _decode(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {_NDARRAY}:
            return obj[_NDARRAY].numpy()
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_decode(v) for v in obj)
    return obj


@dataclass
class Checkpointer:
    """Saves and restores one training loop's state in ``run_dir/checkpoint.pt``.

    Attributes:
        run_dir: the run directory; ``None`` disables checkpoints (the calls do nothing).
        every: write the file every ``every`` epochs (and when the loop ends early);
            ``0``: only on Ctrl-C.  How often does not change the results.
        resume_command: what the interrupt message tells the user to run.
        stop_after_epochs: a test hook: raise ``KeyboardInterrupt`` once this many
            epochs ended in this process, as a Ctrl-C would (0: never).  Not a config key.
    """

    run_dir: Path | None = None
    every: int = 1
    resume_command: str = "mmea align --resume RUN_DIR"
    stop_after_epochs: int = 0
    resumed_from: int | None = None     # the epoch a resumed run continued after
    saved_epoch: int | None = None      # the epoch of the file on disk
    _loaded: dict | None = field(default=None, repr=False)
    _pending: tuple[int, dict] | None = field(default=None, repr=False)
    _epochs_here: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if self.every < 0:
            raise MmeaInputError(f"checkpoint interval must be >= 0 epochs, got {self.every}")
        if self.run_dir is not None:
            self.run_dir = Path(self.run_dir)

    @property
    def enabled(self) -> bool:
        return self.run_dir is not None

    @property
    def path(self) -> Path | None:
        return self.run_dir / CHECKPOINT_FILE if self.run_dir is not None else None

    # -- reading ---------------------------------------------------------------
    def load(self) -> dict | None:
        """Read and check ``checkpoint.pt`` for a resume (``None`` when there is none); kept for
        :meth:`resume_state`.  An unreadable file is an input error (exit code 2)."""
        if self.path is None or not self.path.is_file():
            return None
        import torch

        try:
            raw = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any failure to read means the same to the user
            raise MmeaInputError(f"{self.path}: unreadable checkpoint ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0] if str(e) else 'no detail'})",
                                 hint="delete it to start the training again, or resume another run") from None
        if isinstance(raw, dict) and isinstance(raw.get("format"), int) and raw["format"] < CHECKPOINT_FORMAT:
            raise MmeaInputError(f"{self.path}: a checkpoint of format {raw['format']}, written by an older mmea; "
                                 f"this one resumes format {CHECKPOINT_FORMAT}",
                                 hint="delete it to start the training again, or resume with the mmea that wrote it")
        if not isinstance(raw, dict) or raw.get("format") != CHECKPOINT_FORMAT or "state" not in raw:
            raise MmeaInputError(f"{self.path}: not an mmea checkpoint of format {CHECKPOINT_FORMAT}",
                                 hint="delete it to start the training again")
        self._loaded = raw
        self.saved_epoch = int(raw["epoch"])
        return raw

    def resume_state(self, kind: str) -> dict | None:
        """The loop state to continue from (with ``"epoch"``, the last finished epoch), or ``None``.

        Restores the global random states as they were at that epoch's end.
        ``kind`` names the loop (``"selfmea"``); a checkpoint of another kind is an error.
        """
        raw = self._loaded
        if raw is None:
            return None
        if raw.get("kind") != kind:
            raise MmeaInputError(f"{self.path}: a checkpoint of {raw.get('kind')!r}, not of {kind!r}",
                                 hint="config.toml was edited after the run started; restore it or delete "
                                      "the checkpoint")
        self._loaded = None  # one loop per run
        restore_global_rng_state(_decode(raw["rng"]))
        self.resumed_from = int(raw["epoch"])
        log.info("resuming %s after epoch %d from %s", kind, raw["epoch"], self.path)
        return {**_decode(raw["state"]), "epoch": int(raw["epoch"])}

    # -- writing ---------------------------------------------------------------
    def _write(self, payload: dict) -> None:
        import torch

        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, self.path)
        self.saved_epoch = payload["epoch"]
        self._pending = None
        log.debug("checkpoint: epoch %d -> %s", payload["epoch"], self.path)

    def epoch_end(self, epoch: int, kind: str, state_fn: Callable[[], dict], last: bool = False) -> None:
        """After epoch ``epoch`` (1-based) ended: write the checkpoint when due, else keep a copy for Ctrl-C.

        ``last``: the loop ends after this epoch (early stopping, time budget), so
        the file is written whatever ``every`` says (unless ``every`` is 0).

        ``state_fn()`` returns everything the loop needs to continue after this
        epoch; it is called only when something is saved.
        """
        if not self.enabled:
            return
        payload = {"format": CHECKPOINT_FORMAT, "kind": kind, "epoch": int(epoch)}
        if self.every and (last or epoch % self.every == 0):
            self._write({**payload, "state": _encode(state_fn(), False), "rng": _encode(global_rng_state(), False)})
        else:
            self._pending = {**payload, "state": _encode(state_fn(), True), "rng": _encode(global_rng_state(), True)}
        self._epochs_here += 1
        if self.stop_after_epochs and self._epochs_here >= self.stop_after_epochs:
            raise KeyboardInterrupt  # the test hook: what Ctrl-C would do here

    @contextmanager
    def guard(self):
        """Around a training loop: on Ctrl-C write the last finished epoch's state, then raise
        :class:`TrainingInterrupted` with the resume command."""
        try:
            yield self
        except TrainingInterrupted:
            raise
        except KeyboardInterrupt:
            raise self.interrupted() from None

    @contextmanager
    def recorded(self, run):
        """Around a whole job in its run directory ``run`` (:class:`mmea.runs.RunDir`): any stop is
        logged by ``run.record_failure`` with its exit code; a Ctrl-C outside the training loop
        still writes the pending state and becomes a :class:`TrainingInterrupted` with the resume
        hint; the run's log is closed in every case."""
        try:
            yield self
        except TrainingInterrupted as e:
            run.record_failure(e)
            raise
        except KeyboardInterrupt:  # outside the training loop: nothing new to save, but resumable
            e = self.interrupted()
            run.record_failure(e)
            raise e from None
        except BaseException as e:
            run.record_failure(e)
            raise
        finally:
            run.close()

    def interrupted(self) -> TrainingInterrupted:
        """Write the pending state (if newer than the file) and build the interrupt to raise."""
        if self._pending is not None:
            self._write(self._pending)
        if self.enabled:
            if self.saved_epoch is not None:
                log.warning("checkpoint of epoch %d written to %s", self.saved_epoch, self.path)
            else:
                log.warning("interrupted before the first epoch ended: no checkpoint, a resume starts again")
        return TrainingInterrupted(f"interrupted; resume with: {self.resume_command}")

    def summary(self) -> dict:
        """What ``metrics.json`` records about the checkpoints."""
        return {"file": CHECKPOINT_FILE if self.saved_epoch is not None else None, "every": self.every,
                "last_epoch": self.saved_epoch, "resumed_after_epoch": self.resumed_from}
