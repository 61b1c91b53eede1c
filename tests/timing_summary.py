"""pytest plugin: where the suite's time goes, printed at the end of every run (issue 21's tracker).

    test time: 612.4 s wall, 1105.2 s in tests (2 workers); slowest files:
      214.0 s  tests/test_local_launch.py (14 tests)
      ...

`--durations=25` (make test passes it) lists the slowest tests; this adds the wall clock of the whole
session and the per-file sums, which is what decides how the files split over pytest-xdist's workers
(`--dist loadfile`: a file runs whole on one worker, so the longest file bounds the wall time).
Durations are the reports' own (setup + call + teardown), so the sums are the same with or without -n.
"""

from __future__ import annotations

import time
from collections import defaultdict

_FILES: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
_T0: list[float] = []
SHOW = 12


def pytest_sessionstart(session):
    _T0.append(time.monotonic())


def pytest_runtest_logreport(report):
    entry = _FILES[report.nodeid.split("::", 1)[0]]
    entry[0] += report.duration
    if report.when == "call":
        entry[1] += 1


def pytest_terminal_summary(terminalreporter, config):
    if not _FILES or not _T0 or hasattr(config, "workerinput"):  # an xdist worker: the controller prints
        return
    wall = time.monotonic() - _T0[0]
    busy = sum(s for s, _ in _FILES.values())
    workers = getattr(config.option, "numprocesses", None) or 1
    tr = terminalreporter
    tr.write_line(f"test time: {wall:.1f} s wall, {busy:.1f} s in tests ({workers} worker(s)); slowest files:")
    for path, (secs, n) in sorted(_FILES.items(), key=lambda kv: -kv[1][0])[:SHOW]:
        tr.write_line(f"  {secs:7.1f} s  {path} ({n} tests)")
