"""SkyPilot's own catalog update, on demand (`amigo-burst prices --refresh`).

SkyPilot fetches `~/.sky/catalogs/v8/<cloud>/vms.csv` from its public catalog repository on first
use and refreshes some of them every few hours (`sky.catalog.common.read_catalog`). This asks it to
refresh now (pull_frequency_hours=0) through that same function. Two of its behaviours are handled:
a failed fetch with a cached file only logs a warning (caught here through its logger) and touches
the file's time (put back here, so the age `prices` shows stays true); a file without its
`.meta/<cloud>/vms.csv.md5` counts as written by hand and is never refreshed (said so).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path


class _Failures(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().strip().splitlines()[0])


def refresh(clouds: tuple[str, ...]) -> list[tuple[str, bool, str]]:
    """[(cloud, refreshed?, what happened)] after asking SkyPilot to fetch each cloud's catalog now."""
    from sky.catalog import common

    out = []
    for cloud in clouds:
        name = f"{cloud}/vms.csv"
        path = Path(common.get_catalog_path(name))
        if path.exists() and common.is_catalog_modified(name):
            out.append((cloud, False, f"{path} has no .meta md5 beside it (written by hand or by a test): SkyPilot "
                                      f"never refreshes such a file; delete it to refetch"))
            continue
        before = path.stat().st_mtime if path.exists() else None
        failures = _Failures()
        logger = logging.getLogger(common.__name__)
        propagate, level = logger.propagate, logger.level
        logger.addHandler(failures)  # ours only: SkyPilot's own handler (on "sky") would print the warning
        logger.propagate, logger.level = False, logging.WARNING
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                common.read_catalog(name, pull_frequency_hours=0)._load_df()
        except Exception as e:  # noqa: BLE001 - no cached file and no network: SkyPilot re-raises requests' error
            failures.messages.append((str(e).strip().splitlines() or [e.__class__.__name__])[0])
        finally:
            logger.removeHandler(failures)
            logger.propagate, logger.level = propagate, level
        if failures.messages:
            if before is not None and path.exists():
                os.utime(path, (before, before))  # SkyPilot touched it after the failed fetch: keep its real age
            out.append((cloud, False, failures.messages[0][:160]))
        else:
            out.append((cloud, True, f"{path} fetched"))
    return out
