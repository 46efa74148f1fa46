"""Starting, joining and leaving a Ray cluster for one run.

``ray.init()`` without an address starts an *embedded* local cluster (a head node in this process's
session, the default on a laptop); ``ray.init(address=ADDR)`` joins an existing one, started with
``ray start --head`` on one machine and ``ray start --address ADDR`` on the others.  A run that
started its cluster shuts it down at the end; a run that joined one only disconnects (``ray.shutdown``
in a driver that joined leaves the cluster running).  A process that is already connected (a test's
cluster fixture, a notebook) is used as it is and left connected.
"""

from __future__ import annotations

import logging
import os

from ..errors import MmeaError, MmeaInputError

log = logging.getLogger("mmea.engine")

__all__ = ["RaySession", "import_ray", "check_reachable", "cluster_cpus", "cluster_gpus"]


def import_ray():
    """The ``ray`` module, or an input error saying how to install it."""
    os.environ.setdefault("RAY_DISABLE_IMPORT_WARNING", "1")
    try:
        import ray
    except ImportError:
        raise MmeaInputError("--engine ray needs the ray package, which is not installed",
                             hint="pip install ray  (or: pip install -r requirements.txt), or use --engine local"
                             ) from None
    return ray


def cluster_cpus(ray) -> int:
    """Whole CPUs the cluster offers (at least 1)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def cluster_gpus(ray) -> int:
    """Whole GPUs the cluster offers (``ray.cluster_resources()["GPU"]``, 0 without)."""
    return int(ray.cluster_resources().get("GPU", 0))


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """An input error naming ``address`` (``HOST:PORT`` or ``ray://HOST:PORT``) when nothing listens there.

    ``ray.init(address=...)`` retries an unreachable head for minutes; a TCP connect answers in seconds.
    ``auto`` (the cluster this machine's ``ray start`` joined) is left to Ray.
    """
    import socket

    hostport = address.split("://", 1)[-1]
    if address == "auto":
        return
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise MmeaInputError(f"--ray-address {address!r} is not HOST:PORT",
                             hint="pass the address `ray start --head` printed, e.g. 10.0.0.5:6379")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise MmeaInputError(f"cannot connect to the Ray cluster at {address!r}: {e.strerror or e}",
                             hint="start one with `ray start --head` (it prints the address), or drop "
                                  "--ray-address for an embedded local cluster") from None


class RaySession:
    """``with RaySession(engine_config) as s:`` Ray is connected inside; ``s.record()`` for ``metrics.json``.

    ``engine_config``: an :class:`~mmea.config.EngineConfig` (``address``, ``workers``, ``shards``,
    ``object_store_mib``).  Errors (no ``ray``, an address that cannot be reached) are
    :class:`~mmea.errors.MmeaInputError` naming the address.
    """

    def __init__(self, engine_config):
        self.config = engine_config
        self.ray = None
        self.mode = None  # "embedded" (started here), "joined" (ADDR) or "connected" (already, left as it is)

    def __enter__(self) -> "RaySession":
        ray = self.ray = import_ray()
        if ray.is_initialized():
            self.mode = "connected"
            return self
        c = self.config
        opts = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            if c.address:
                check_reachable(c.address)
                ray.init(address=c.address, **opts)
                self.mode = "joined"
            else:
                if c.workers:
                    opts["num_cpus"] = int(c.workers)
                if c.object_store_mib:
                    opts["object_store_memory"] = int(c.object_store_mib) << 20
                ray.init(**opts)
                self.mode = "embedded"
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
            where = f"the Ray cluster at {c.address!r}" if c.address else "an embedded local Ray cluster"
            raise MmeaInputError(f"cannot connect to {where}: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                                 hint="start one with `ray start --head` and pass the address it prints "
                                      "(--ray-address HOST:6379), or drop --ray-address for a local cluster"
                                      if c.address else "check `ray status`, or use --engine local") from None
        log.info("ray %s: %s cluster, %s", ray.__version__, self.mode, ray.cluster_resources())
        return self

    def __exit__(self, *exc) -> None:
        if self.ray is not None and self.mode in ("embedded", "joined"):
            self.ray.shutdown()  # joined: disconnects this driver only; the cluster keeps running

    def gather(self, refs: list, what: str, progress: bool = True) -> list:
        """``ray.get(refs)`` in order, with a progress bar over the tasks as they finish (``ray.wait``).

        When none of the pending tasks finishes for ``engine.stall_minutes`` (0: no limit) the stage
        stops with an error saying how many of ``what`` are left and where Ray's logs are, instead of
        hanging silently (a dead node, a task stuck on memory).
        """
        from ..progress import progress_bar

        stall_s = float(getattr(self.config, "stall_minutes", 0.0)) * 60.0
        pending, done = list(refs), 0
        with progress_bar(total=len(refs), desc=what, unit="task", progress=progress) as bar:
            while pending:
                ready, pending = self.ray.wait(pending, num_returns=1, timeout=stall_s or None)
                if not ready:
                    raise MmeaError(f"{len(pending)} of {len(refs)} {what} tasks finished nothing for "
                                    f"{stall_s / 60:g} minutes ({done} done)",
                                    hint="see `ray status` and the worker logs under /tmp/ray/session_latest/logs; "
                                         "more memory per task: fewer --set engine.workers; wait longer: "
                                         "--set engine.stall_minutes=0")
                done += len(ready)
                bar.update(len(ready))
                log.debug("%s: %d / %d tasks done", what, done, len(refs))
        return self.ray.get(list(refs))

    @property
    def workers(self) -> int:
        """CPUs the cluster offers: the default number of shards and of parallel tasks."""
        return cluster_cpus(self.ray)

    @property
    def shards(self) -> int:
        return int(self.config.shards) or self.workers

    def record(self) -> dict:
        """``metrics.json`` ``engine``: which engine ran, where, with how many workers and shards."""
        res = self.ray.cluster_resources()
        return {"name": "ray", "ray_version": self.ray.__version__, "cluster": self.mode,
                "address": self.config.address, "nodes": len([n for n in self.ray.nodes() if n.get("Alive")]),
                "workers": self.workers, "gpus": int(res.get("GPU", 0)), "shards": self.shards,
                "partitions": int(self.config.partitions)}
