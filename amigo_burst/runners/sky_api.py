"""SkyPilot's SDK as the CLI uses it: imported with plain log lines off a terminal, and an API server
that is not there said in one line.

    sky = sdk()            `import sky` (~2.6 s: only where a command needs SkyPilot); its log lines
                           ("Failed to connect ... Starting a local server.", "✓ SkyPilot API server
                           started.") keep no colour codes when stdout is a pipe or a file
    @api_errors            ApiServerConnectionError (an API server endpoint that does not answer, a
                           server gone mid-call) -> one-line UserError, not the exception chain
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar

from amigo_burst.errors import UserError, one_line

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
F = TypeVar("F", bound=Callable[..., Any])


class _NoAnsi(logging.Filter):
    """Colour codes out of a record whose handler writes to something that is not a terminal."""

    def __init__(self, handler: logging.Handler):
        super().__init__()
        self.handler = handler

    def filter(self, record: logging.LogRecord) -> bool:
        if not _is_terminal(getattr(self.handler, "stream", None)):
            record.msg, record.args = _ANSI.sub("", record.getMessage()), None
        return True


def _is_terminal(stream) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream (a finished capture)
        return False


def plain_logs(logger: logging.Logger | None = None) -> None:
    """A _NoAnsi filter on each handler of SkyPilot's logger (once per handler)."""
    log = logger or logging.getLogger("sky")
    for h in log.handlers:
        if not any(isinstance(f, _NoAnsi) for f in h.filters):
            h.addFilter(_NoAnsi(h))


def sdk():
    """The `sky` module, its log lines plain where they are not read on a terminal."""
    import sky

    plain_logs()
    return sky


def api_errors(fn: F) -> F:
    """SkyPilot's API server unreachable -> UserError (one line, exit 2) naming it and the fix."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if not _unreachable(e):
                raise
            raise UserError(f"SkyPilot's API server is not answering ({one_line(_ANSI.sub('', str(e)), 200)}): "
                            "`sky api start` starts a local one, `sky api info` shows which one is used") from None
    return wrapper  # type: ignore[return-value]


def _unreachable(e: BaseException) -> bool:
    names = {"ApiServerConnectionError"}  # sky.exceptions; requests' ConnectionError when it dies mid-call
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if type(e).__name__ in names or (type(e).__name__ == "ConnectionError"
                                         and type(e).__module__.startswith("requests")):
            return True
        e = e.__cause__ or e.__context__
    return False
