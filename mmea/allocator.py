"""Keep large freed blocks in the process instead of handing them back to the OS (glibc only).

Why: glibc's ``malloc`` serves every block above ``M_MMAP_THRESHOLD`` (128 KiB, adapting up to 32 MiB)
with its own ``mmap`` and gives it back with ``munmap`` when freed, and trims the heap top above
``M_TRIM_THRESHOLD``.  Tensor code allocates and frees blocks of tens to hundreds of MiB every
step (edge messages ``(E, d)``, score blocks ``(B, K)``), so each step faults every page of them in
again: on 2 cores a ``relational-gnn`` step over DBP15k spent more than half its time in the kernel
(48 s wall, 26.6 s system time for 6 steps and a forward/backward), 2.6 s a step instead of 4.9 s
with the blocks kept (system time 2 s).  No library sets this for us: PyTorch's CPU allocator is
glibc's ``posix_memalign``.

:func:`tune_allocator` raises both thresholds (``mallopt``; blocks above 1 GiB are still mapped
apart) at the start of a command.  The cost: freed memory stays in the process, so the resident
size stays near its high-water mark (peak RSS itself barely changes).  ``MMEA_MALLOC_TUNE=0``
turns it off; on a libc without ``mallopt`` (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger("mmea")

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 1 << 30  # blocks above 1 GiB are still mapped on their own
TRIM_THRESHOLD = (1 << 31) - 1  # never trim below 2 GiB of free heap top
TOP_PAD = 256 << 20  # grow the heap 256 MiB at a time

_done: dict = {}


def tune_allocator() -> dict:
    """Set the glibc thresholds once per process; returns ``{"applied": bool, "reason": str}``."""
    if _done:
        return _done
    if os.environ.get("MMEA_MALLOC_TUNE", "1") == "0":
        _done.update(applied=False, reason="MMEA_MALLOC_TUNE=0")
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        _done.update(applied=False, reason="no glibc mallopt")
        return _done
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = all(mallopt(p, v) == 1 for p, v in ((M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                                              (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD)))
    _done.update(applied=ok, reason="mallopt" if ok else "mallopt refused a value")
    log.debug("allocator: %s", _done)
    return _done
