"""Run directories: resolved config, log, environment, timings and metrics.

Every run writes into one folder::

    RUN_DIR/config.toml     the resolved configuration (re-runnable with --config)
    RUN_DIR/metrics.json    results, split sizes, timings, notes
    RUN_DIR/alignment.csv   the exported alignment
    RUN_DIR/env.json        versions of Python and the libraries, platform, seed
    RUN_DIR/run.log         the log of the run
    RUN_DIR/checkpoint.pt   the training state (models with a training loop; see mmea.checkpoint)

``--resume RUN_DIR`` appends to ``run.log`` and records each resumed process
under ``"resumed"`` in ``env.json``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import __version__

log = logging.getLogger("mmea")


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


def environment() -> dict:
    return {"versions": library_versions(), "platform": platform.platform(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "argv": sys.argv,
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
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is an error."""
    from .errors import MmeaInputError

    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise MmeaInputError(f"--device must be auto, cpu or cuda[:N], got {device!r}")
    if device == "cpu":
        return "cpu"
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    if not has_cuda:
        raise MmeaInputError(f"--device {device} asked for, but CUDA is not available here",
                             hint="use --device cpu (or auto)")
    return device


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
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, cls=_JsonEncoder, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


@dataclass
class RunDir:
    """A run's output folder; creates it, attaches a log file, records timings."""

    path: Path
    timings: dict = field(default_factory=dict)
    _handler: logging.Handler | None = None
    _t0: float = field(default_factory=time.perf_counter)

    @classmethod
    def create(cls, path: str | Path, resume: bool = False) -> "RunDir":
        """Create (or, with ``resume``, reopen) a run directory and attach its log file."""
        p = Path(path)
        if resume and not p.is_dir():
            from .errors import MmeaInputError

            raise MmeaInputError(f"{p}: run directory not found, so there is nothing to resume")
        p.mkdir(parents=True, exist_ok=True)
        rd = cls(p)
        h = logging.FileHandler(p / "run.log", encoding="utf-8")
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        h.setLevel(logging.DEBUG)
        logging.getLogger("mmea").addHandler(h)
        rd._handler = h
        env_path = p / "env.json"
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
        (self.path / "config.toml").write_text(text, encoding="utf-8")

    def write_metrics(self, metrics: dict) -> Path:
        p = self.path / "metrics.json"
        write_json(p, metrics)
        return p

    def close(self) -> None:
        if self._handler is not None:
            logging.getLogger("mmea").removeHandler(self._handler)
            self._handler.close()
            self._handler = None
