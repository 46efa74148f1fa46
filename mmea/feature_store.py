"""The on-disk feature cache: arrays stored under the SHA-1 fingerprint of what made them.

Split from :mod:`mmea.features` so that a model can cache what it pre-computes (the pre-trained relational GNN
of :func:`mmea.models.relational_gnn.cached_relational_gnn`) without importing the feature computation.
:mod:`mmea.features` re-exports every name here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

log = logging.getLogger("mmea.features")

FEATURE_FORMAT_VERSION = 1


def default_cache_root() -> Path:
    """``$MMEA_HOME/cache`` (``MMEA_HOME`` defaults to ``~/.cache/mmea``)."""
    from .home import mmea_home

    return mmea_home() / "cache"


def _json_default(o):
    """JSON for numpy scalars / arrays, paths and tuples (shared with the run files)."""
    from .runs import _JsonEncoder

    return _JsonEncoder().default(o)


def _is_sparse(a) -> bool:
    return hasattr(a, "tocsr") and hasattr(a, "nnz")


def array_nbytes(a) -> int:
    """Memory of a dense or scipy sparse array in bytes."""
    if _is_sparse(a):
        a = a.tocsr()
        return int(a.data.nbytes + a.indices.nbytes + a.indptr.nbytes)
    return int(np.asarray(a).nbytes)


@dataclass(frozen=True)
class CacheEntry:
    """What :meth:`FeatureStore.get_or_compute` returns.

    ``arrays``: name -> numpy or scipy sparse array; ``info``: JSON dict
    saved with them; ``hit``: loaded from disk; ``key``: the fingerprint.
    """

    arrays: dict
    info: dict
    hit: bool
    key: str
    path: Path | None


class FeatureStore:
    """Arrays cached on disk under the SHA-1 of their key parts.

    ``key_parts`` is any JSON-serialisable dict, e.g. ``{"dataset":
    task.fingerprint(), "modality": "names", "encoder": "char-ngram",
    "model": ..., "options": {...}}``; a change in any part is a new key
    (the old entry stays until :meth:`clear`).  ``enabled=False`` computes
    every time and writes nothing.
    """

    def __init__(self, cache_root: str | Path | None = None, enabled: bool = True):
        self.root = (Path(cache_root).expanduser() if cache_root else default_cache_root()) / "features"
        self.enabled = enabled

    @staticmethod
    def fingerprint(key_parts: dict) -> str:
        """SHA-1 hex digest of the canonical JSON of ``key_parts`` (plus the format version)."""
        blob = json.dumps({"format": FEATURE_FORMAT_VERSION, **key_parts}, sort_keys=True, default=_json_default)
        return hashlib.sha1(blob.encode("utf-8")).hexdigest()

    def path_for(self, key: str, name: str = "features") -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return self.root / f"{safe}-{key[:20]}"

    def get_or_compute(self, key_parts: dict, compute: Callable[[], tuple[dict, dict]],
                       name: str = "features") -> CacheEntry:
        """Load the entry of ``key_parts`` or run ``compute() -> (arrays, info)`` and save it."""
        key = self.fingerprint(key_parts)
        path = self.path_for(key, name)
        if self.enabled:
            entry = self.load(key, name)
            if entry is not None:
                log.info("feature cache hit: %s (%s)", name, path)
                return entry
            log.info("feature cache miss: %s; computing", name)
        arrays, info = compute()
        if self.enabled:
            self.save(key, name, key_parts, arrays, info)
        return CacheEntry(arrays, info, False, key, path if self.enabled else None)

    def load(self, key: str, name: str = "features") -> CacheEntry | None:
        """The stored entry, or ``None`` when absent, for another key, or unreadable (warned)."""
        path = self.path_for(key, name)
        meta_file = path / "meta.json"
        if not meta_file.is_file():
            return None
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            if meta.get("key") != key:
                return None
            arrays: dict[str, Any] = {}
            if (path / "dense.npz").is_file():
                with np.load(path / "dense.npz", allow_pickle=False) as z:
                    arrays.update({k: z[k] for k in z.files})
            import scipy.sparse as sp

            for k, spec in meta["arrays"].items():
                if spec["kind"] == "sparse":
                    arrays[k] = sp.load_npz(path / f"{k}.sparse.npz").tocsr()
            missing = set(meta["arrays"]) - set(arrays)
            if missing:
                raise ValueError(f"missing arrays {sorted(missing)}")
        except Exception as e:  # a half-written or corrupt entry: recompute
            log.warning("feature cache entry %s is unreadable (%s: %s); recomputing", path, type(e).__name__, e)
            return None
        return CacheEntry(arrays, meta.get("info", {}), True, key, path)

    def save(self, key: str, name: str, key_parts: dict, arrays: dict, info: dict) -> Path:
        """Write an entry atomically (temporary folder renamed into place)."""
        path = self.path_for(key, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            import scipy.sparse as sp

            dense = {k: np.asarray(v) for k, v in arrays.items() if not _is_sparse(v)}
            specs = {}
            for k, v in arrays.items():
                if _is_sparse(v):
                    sp.save_npz(tmp / f"{k}.sparse.npz", v.tocsr(), compressed=False)
                    specs[k] = {"kind": "sparse", "shape": list(v.shape), "dtype": str(v.dtype), "nnz": int(v.nnz)}
                else:
                    specs[k] = {"kind": "dense", "shape": list(dense[k].shape), "dtype": str(dense[k].dtype)}
            if dense:
                np.savez(tmp / "dense.npz", **dense)
            meta = {"key": key, "name": name, "key_parts": key_parts, "info": info, "arrays": specs,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=_json_default), encoding="utf-8")
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)
            os.replace(tmp, path)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            log.warning("could not write feature cache %s (%s); continuing without it", path, e)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return path

    def clear(self) -> int:
        """Delete every cached entry; returns how many were removed."""
        if not self.root.is_dir():
            return 0
        n = 0
        for p in self.root.iterdir():
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                n += 1
        return n
