"""Run directories: resolved config, log, environment, timings and metrics.

Every run writes into one folder::

    RUN_DIR/config.toml     the resolved configuration (re-runnable with --config)
    RUN_DIR/metrics.json    results, split sizes, timings, notes
    RUN_DIR/alignment.csv   the exported alignment
    RUN_DIR/env.json        versions of Python and the libraries, platform, seed
    RUN_DIR/run.log         the log of the run
    RUN_DIR/checkpoint.pt   the training state (models with a training loop; see mmea.checkpoint)
    RUN_DIR/complete.json   written last: the run finished; the row count and SHA-256 of alignment.csv

This module owns the run directory: the file names are spelled here (``*_FILE``), every
file is written atomically (a temporary file in the same folder, then ``os.replace``), so a
kill at any moment leaves either the old file or the new one, never a truncated one.  A run
records its completion last (:meth:`RunDir.mark_complete`); ``mmea export`` / ``report`` /
``evaluate`` call :func:`check_complete` and refuse a run that was interrupted, failed, or
whose ``alignment.csv`` no longer matches what the run wrote.

A new run refuses a folder that is not empty (``--overwrite`` clears an earlier run's folder
first; ``--resume`` continues it).  ``--resume RUN_DIR`` appends to ``run.log`` and records each
resumed process under ``"resumed"`` in ``env.json``.  A failed run's ``run.log`` ends with the
error and the exit code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import __version__
from .errors import MmeaError, MmeaInputError, interrupt_exit_code

log = logging.getLogger("mmea")

CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.json"
ALIGNMENT_FILE = "alignment.csv"
ENV_FILE = "env.json"
LOG_FILE = "run.log"
COMPLETE_FILE = "complete.json"
#: the test links' gold targets (``src_id, tgt_id, tgt_uri, tgt_name``), written by ``mmea align`` so
#: that ``mmea report`` names a gold target outside alignment.csv's candidates without the dataset
GOLD_FILE = "gold_targets.csv"
#: files whose presence marks a folder as an mmea run (what ``--overwrite`` may clear)
RUN_MARKERS = (CONFIG_FILE, ENV_FILE, LOG_FILE, METRICS_FILE, COMPLETE_FILE)


@contextmanager
def atomic_path(path: str | Path):
    """``with atomic_path(p) as tmp: write(tmp)`` -> ``tmp`` renamed onto ``p`` only when the block
    succeeds; on any exception (Ctrl-C, SIGTERM, a full disk) the temporary file is removed and
    ``p`` keeps its old content.  The temporary file sits in the same folder (same file system)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_save_npz(path: str | Path, compressed: bool = False, **arrays) -> Path:
    """``np.savez`` (``compressed``: ``np.savez_compressed``) of ``arrays`` to ``path``, atomically
    (through an open file, so numpy adds no ``.npz`` to the temporary name)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        (np.savez_compressed if compressed else np.savez)(fh, **arrays)
    return Path(path)


def atomic_save_npy(path: str | Path, array) -> Path:
    """``np.save`` of one array to ``path``, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)
    return Path(path)


def file_digest(path: str | Path) -> tuple[int, str]:
    """``(data rows, sha256 hex)`` of a CSV file with one header line, streamed in 1 MiB chunks."""
    h, lines, last = hashlib.sha256(), 0, b"\n"
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    if last != b"\n":  # a last line without its newline still counts
        lines += 1
    return max(lines - 1, 0), h.hexdigest()


def check_complete(run_dir: str | Path) -> dict:
    """The completion record of a finished run; an input error when the run is not one.

    Refused: a folder that is not a run, a run without ``complete.json`` (interrupted,
    failed or still running), and a run whose ``alignment.csv`` is missing or differs
    (rows or SHA-256) from what the run wrote.
    """
    p = Path(run_dir)
    if not p.is_dir():
        raise MmeaInputError(f"{p}: run directory not found", hint="pass a folder written by mmea align")
    rec_path = p / COMPLETE_FILE
    if not rec_path.is_file():
        why = "it has no metrics.json either" if not (p / METRICS_FILE).is_file() else \
            "metrics.json may be from an earlier attempt"
        raise MmeaInputError(f"{p} is not a finished run: {COMPLETE_FILE} is missing (the run was interrupted, "
                             f"failed or is still running; {why})",
                             hint=f"finish it with: mmea align --resume {p}   (or rerun it with --overwrite)")
    try:
        rec = json.loads(rec_path.read_text(encoding="utf-8"))
        expected = rec["alignment"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MmeaInputError(f"{rec_path}: unreadable completion record ({e})",
                             hint=f"rerun: mmea align --config {p / CONFIG_FILE} --out {p} --overwrite") from None
    csv = p / ALIGNMENT_FILE
    if not csv.is_file():
        raise MmeaInputError(f"{csv}: file not found, although the run finished with {expected['rows']} rows",
                             hint="the file was moved or deleted; rerun the alignment")
    rows, digest = file_digest(csv)
    if (rows, digest) != (expected["rows"], expected["sha256"]):
        raise MmeaInputError(f"{csv}: does not match what the run wrote ({rows} data rows, expected "
                             f"{expected['rows']}; SHA-256 {'differs' if digest != expected['sha256'] else 'equal'}): "
                             f"truncated or edited after the run",
                             hint=f"rerun: mmea align --config {p / CONFIG_FILE} --out {p} --overwrite")
    return rec


def is_run_dir(path: str | Path) -> bool:
    """True when ``path`` is a folder written by an mmea job (it holds ``env.json`` or ``config.toml``
    next to ``run.log``)."""
    p = Path(path)
    return p.is_dir() and (p / LOG_FILE).is_file() and ((p / ENV_FILE).is_file() or (p / CONFIG_FILE).is_file())


def check_run_alignment(csv_path: str | Path) -> None:
    """When ``csv_path`` is the ``alignment.csv`` of a run folder, refuse it unless the run finished
    and the file is what it wrote (:func:`check_complete`); any other CSV passes unchecked."""
    p = Path(csv_path)
    if p.name == ALIGNMENT_FILE and is_run_dir(p.parent):
        check_complete(p.parent)


def prepare_run_dir(path: Path, *, resume: bool, overwrite: bool) -> None:
    """Make ``path`` ready for a run: new (empty or absent), cleared (``overwrite``), or reopened (``resume``).

    A non-empty folder is refused unless ``resume`` or ``overwrite``; ``overwrite`` clears
    only a folder that holds an earlier mmea run (one of :data:`RUN_MARKERS`), never an
    arbitrary folder.  Reopening or clearing removes the completion record first, so the
    folder counts as unfinished until this run writes its own.
    """
    if resume:
        if not path.is_dir():
            raise MmeaInputError(f"{path}: run directory not found, so there is nothing to resume")
        (path / COMPLETE_FILE).unlink(missing_ok=True)
        return
    if path.exists() and not path.is_dir():
        raise MmeaInputError(f"{path}: exists and is not a folder", hint="choose another --out")
    if path.is_dir() and any(path.iterdir()):
        if not any((path / m).exists() for m in RUN_MARKERS):
            raise MmeaInputError(f"{path}: the folder is not empty and holds no mmea run, so it is not used "
                                 f"(nor cleared, even with --overwrite)", hint="choose an empty or new --out")
        if not overwrite:
            raise MmeaInputError(f"{path}: the folder already holds a run; a second run would mix their files",
                                 hint=f"continue it with: mmea align --resume {path}; replace it with --overwrite; "
                                      f"or choose another --out")
        (path / COMPLETE_FILE).unlink(missing_ok=True)  # first: a half-cleared folder is never 'complete'
        for child in path.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        log.info("--overwrite: cleared %s", path)
    path.mkdir(parents=True, exist_ok=True)


def exit_code_of(exc: BaseException) -> int:
    """The CLI exit code an exception ends with (see :mod:`mmea.cli`)."""
    if isinstance(exc, KeyboardInterrupt):
        return interrupt_exit_code(exc)
    if isinstance(exc, MmeaError):
        return exc.exit_code
    return 1


def default_run_dir(kind: str, label: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{kind}-{label}-{stamp}"


def library_versions() -> dict:
    """Versions of the libraries that matter for reproducibility (None when absent)."""
    from importlib import metadata

    out = {"mmea": __version__, "python": sys.version.split()[0]}
    for dist in ("numpy", "scipy", "torch", "torchvision", "faiss-cpu", "faiss-gpu", "sentence-transformers",
                 "pandas", "pillow", "click", "tqdm"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def code_commit() -> str | None:
    """The git commit of the mmea source that runs (``<sha>`` or ``<sha>+dirty`` when files differ from
    it), or None outside a git checkout (an installed wheel) or without git."""
    import subprocess

    here = Path(__file__).resolve().parent.parent
    if not (here / ".git").exists():
        return None
    try:
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no", "mmea"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def environment() -> dict:
    return {"versions": library_versions(), "code_commit": code_commit(), "platform": platform.platform(),
            "machine": platform.machine(), "cpu_count": os.cpu_count(), "argv": sys.argv,
            "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and (when imported) torch; deterministic torch kernels on CPU."""
    import random

    random.seed(seed)
    np.random.seed(seed % (2**32))
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)


def resolve_device(device: str) -> str:
    """The one place a device is resolved: ``cpu`` or ``cuda:N`` (every later stage uses it as is).

    ``auto`` -> ``cuda:0`` when CUDA is available, else ``cpu``; ``cuda`` -> ``cuda:0``;
    ``cuda:N`` is checked against the number of visible GPUs.  Asking for CUDA without a
    GPU, or for a GPU that does not exist, is an input error.
    """
    if device not in ("auto", "cpu", "cuda") and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise MmeaInputError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if device == "cpu":
        return "cpu"
    try:
        import torch

        n_gpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:  # pragma: no cover
        n_gpu = 0
    if device == "auto":
        return "cuda:0" if n_gpu else "cpu"
    if not n_gpu:
        raise MmeaInputError(f"--device {device} asked for, but CUDA is not available here",
                             hint="use --device cpu (or auto)")
    index = int(device[5:]) if ":" in device else 0
    if index >= n_gpu:
        raise MmeaInputError(f"--device {device} asked for, but only {n_gpu} GPU(s) are visible (cuda:0..cuda:{n_gpu - 1})")
    return f"cuda:{index}"


class _JsonEncoder(json.JSONEncoder):
    def default(self, o):
        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, np.floating):
            return float(o)
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, Path):
            return str(o)
        if isinstance(o, tuple):
            return list(o)
        return str(o)


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as indented UTF-8 JSON, atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, cls=_JsonEncoder, ensure_ascii=False) + "\n")


@dataclass
class RunDir:
    """A run's output folder; creates it, attaches a log file, records timings."""

    path: Path
    timings: dict = field(default_factory=dict)
    peak_rss_scope: str = "the process"  # what metrics.json's peak_rss_gib covers (the run, once its start resets it)
    _handler: logging.Handler | None = None
    _t0: float = field(default_factory=time.perf_counter)

    @classmethod
    def create(cls, path: str | Path, resume: bool = False, overwrite: bool = False) -> "RunDir":
        """Create (``overwrite``: clear an earlier run's folder first; ``resume``: reopen) a run
        directory and attach its log file; see :func:`prepare_run_dir` for what is refused."""
        p = Path(path)
        prepare_run_dir(p, resume=resume, overwrite=overwrite)
        rd = cls(p)
        h = logging.FileHandler(p / LOG_FILE, encoding="utf-8")
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        h.setLevel(logging.DEBUG)
        logging.getLogger("mmea").addHandler(h)
        rd._handler = h
        env_path = p / ENV_FILE
        if resume and env_path.is_file():
            try:
                env = json.loads(env_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                env = {}
            env.setdefault("resumed", []).append(environment())
            write_json(env_path, env)
        else:
            write_json(env_path, environment())
        return rd

    @contextmanager
    def stage(self, name: str):
        """Time a stage: ``with run.stage("train"): ...`` -> ``timings["train_s"]``."""
        t = time.perf_counter()
        log.info("stage %s ...", name)
        try:
            yield
        finally:
            dt = time.perf_counter() - t
            self.timings[f"{name}_s"] = self.timings.get(f"{name}_s", 0.0) + dt
            log.info("stage %s done in %.2f s", name, dt)

    def total_s(self) -> float:
        return time.perf_counter() - self._t0

    def write_config(self, text: str) -> None:
        atomic_write_text(self.path / CONFIG_FILE, text)

    def write_gold_targets(self, frame) -> Path:
        """:data:`GOLD_FILE` from a ``pandas.DataFrame`` (``src_id, tgt_id, tgt_uri, tgt_name``), atomically."""
        p = self.path / GOLD_FILE
        with atomic_path(p) as tmp:
            frame.to_csv(tmp, index=False)
        return p

    def write_metrics(self, metrics: dict) -> Path:
        p = self.path / METRICS_FILE
        write_json(p, metrics)
        return p

    def mark_complete(self, output: str = ALIGNMENT_FILE, **extra) -> Path:
        """Record, last, that the run finished: ``complete.json`` with the row count and SHA-256 of
        ``alignment.csv`` (checked by :func:`check_complete`) and ``extra`` fields.  A job without an
        alignment names its main ``output`` file instead (``embeddings.npz``: its size and SHA-256)."""
        rows, digest = file_digest(self.path / output)
        done = {"finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if output == ALIGNMENT_FILE:
            rec = {**done, "alignment": {"file": ALIGNMENT_FILE, "rows": rows, "sha256": digest}, **extra}
        else:
            rec = {**done, "output": {"file": output, "bytes": (self.path / output).stat().st_size,
                                      "sha256": digest}, **extra}
        p = self.path / COMPLETE_FILE
        write_json(p, rec)
        log.info("run complete: %s (%s)", p, f"{rows} alignment rows" if output == ALIGNMENT_FILE else output)
        return p

    def record_failure(self, exc: BaseException) -> None:
        """Log why the run stopped and the exit code it ends with (so ``run.log`` never ends
        on a stage that merely started)."""
        code = exit_code_of(exc)
        msg = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        if isinstance(exc, KeyboardInterrupt):
            log.warning("run interrupted (exit code %d): %s", code, msg)
        else:
            log.error("run failed (exit code %d): %s: %s", code, type(exc).__name__, msg,
                      exc_info=not isinstance(exc, MmeaError))

    def close(self) -> None:
        if self._handler is not None:
            logging.getLogger("mmea").removeHandler(self._handler)
            self._handler.close()
            self._handler = None


def read_gold_targets(run_dir: str | Path) -> dict | None:
    """``{src_id: [(tgt_id, tgt_uri, tgt_name), ...]}`` from a run's :data:`GOLD_FILE`; ``None`` when the
    run has none (no gold test links, or a run written before the file existed)."""
    import pandas as pd

    p = Path(run_dir) / GOLD_FILE
    if not p.is_file():
        return None
    df = pd.read_csv(p, dtype=str, keep_default_na=False)
    missing = {"src_id", "tgt_id", "tgt_uri", "tgt_name"} - set(df.columns)
    if missing:
        raise MmeaInputError(f"{p}: missing column(s) {', '.join(sorted(missing))}")
    out: dict = {}
    for s, t, u, n in zip(df["src_id"], df["tgt_id"], df["tgt_uri"], df["tgt_name"]):
        out.setdefault(s, []).append((t, u, n))
    return out
