"""``MMEA_HOME``, resolved in one place: the root of mmea's caches (datasets, the demo pair,
feature store).  Default ``~/.cache/mmea``; set ``MMEA_HOME`` to move every cache at once."""

from __future__ import annotations

import os
from pathlib import Path


def mmea_home() -> Path:
    """``$MMEA_HOME`` (``~`` expanded), or ``~/.cache/mmea`` when unset or empty."""
    return Path(os.environ.get("MMEA_HOME") or Path.home() / ".cache" / "mmea").expanduser()
