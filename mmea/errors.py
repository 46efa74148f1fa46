"""User-facing error types.

Everything the CLI reports as "bad input" (exit code 2) derives from
:class:`MmeaInputError`; runtime failures (exit code 1) from :class:`MmeaError`.
"""

from __future__ import annotations

from pathlib import Path


class MmeaError(Exception):
    """A failure the user should see as one readable line plus a hint."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message


class MmeaInputError(MmeaError):
    """Bad usage or bad input data (CLI exit code 2)."""

    exit_code = 2


class DataFormatError(MmeaInputError):
    """A malformed line in an input file: names the file, the line and the text."""

    def __init__(self, path: str | Path, line_no: int | None, text: str | None, reason: str,
                 hint: str | None = None):
        where = f"{path}" + (f", line {line_no}" if line_no is not None else "")
        shown = ""
        if text is not None:
            t = text.rstrip("\n")
            shown = f": {t[:200]!r}" + ("..." if len(t) > 200 else "")
        super().__init__(f"{where}: {reason}{shown}", hint)
        self.path = str(path)
        self.line_no = line_no
        self.text = text
        self.reason = reason


class DatasetNotFoundError(MmeaInputError):
    """A dataset could not be found locally and could not be downloaded."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled exactly like Ctrl-C (a checkpoint first, the resume hint); exit code 143."""


def interrupt_exit_code(exc: BaseException) -> int:
    """143 for a stop caused by SIGTERM (the exception or the one it interrupted), else 130 (Ctrl-C)."""
    return 143 if isinstance(exc, Terminated) or isinstance(exc.__context__, Terminated) else 130
