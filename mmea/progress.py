"""Progress bars: one place that decides when to draw them.

Loading, feature extraction, training epochs and search show a ``tqdm`` bar
when the caller asks for one (``-q`` does not) and stderr is a terminal, so
logs, pipes and CI output stay clean.  Training bars show the current loss
and the validation Hits@1 in the postfix (:func:`epoch_postfix`).
"""

from __future__ import annotations

import sys
from typing import Any, Iterable

__all__ = ["progress_enabled", "progress_bar", "epoch_postfix"]


def progress_enabled(progress: bool = True) -> bool:
    """Show tqdm bars only when asked and stderr is a terminal."""
    return bool(progress) and sys.stderr.isatty()


def progress_bar(iterable: Iterable | None = None, *, progress: bool = True, **kwargs: Any):
    """A ``tqdm`` bar (``tqdm.auto``), disabled unless :func:`progress_enabled`; kwargs go to tqdm."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not progress_enabled(progress), **kwargs)


def epoch_postfix(loss: float | None = None, valid_h1: float | None = None, **more: Any) -> dict:
    """The postfix of a training bar: ``loss`` and ``valid H@1`` (the last known), plus ``more``."""
    out = {}
    if loss is not None:
        out["loss"] = f"{loss:.4f}"
    if valid_h1 is not None:
        out["valid_h1"] = f"{valid_h1:.4f}"
    out.update({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in more.items() if v is not None})
    return out
