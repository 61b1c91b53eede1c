"""The one error type for user mistakes, and how any message becomes one clean line.

The CLI renders a UserError as one red line and exits with code 2. Anything else is a bug
and keeps its traceback. `one_line` is how a message from somewhere else (SkyPilot, an OS
error, a log line) is recorded as a run's reason or printed: one line, no colour codes, cut
at the end (never mid-string at the start).
"""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class UserError(Exception):
    """A mistake the user can fix: bad config, unknown stage, missing file..."""

    exit_code = 2


def one_line(text: object, limit: int = 300) -> str:
    """TEXT as one line: ANSI colours removed, its first non-empty line (a traceback's or a chained
    message's continuation stays in the log), whitespace collapsed, cut to LIMIT with an ellipsis."""
    lines = [ln.strip() for ln in _ANSI.sub("", str(text)).splitlines() if ln.strip()]
    first = re.sub(r"\s+", " ", lines[0]) if lines else ""
    return first if len(first) <= limit else first[: limit - 1].rstrip() + "…"
