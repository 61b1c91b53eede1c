"""pytest plugin: the one summary line of the fault-injection suite (issue 7).

A test that breaks something on purpose takes the `faults` fixture and says so:

    def test_x(faults):
        faults.inject("SIGKILL the training process")   # one fault injected
        ...
        faults.lost(bytes_missing)                      # artifact bytes that did not survive: > 0 fails the test

A fault counts as survived when its test passes. At the end of the session:

    faults: 9 injected, 9 survived, 0 bytes of artifacts lost
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest


@dataclass
class Ledger:
    nodeid: str
    injected: list[str] = field(default_factory=list)
    lost_bytes: int = 0
    passed: bool = False

    def inject(self, what: str) -> None:
        self.injected.append(what)

    checked: bool = False

    def lost(self, nbytes: int) -> None:
        """Record what the test measured as lost, and fail it if anything was: a loss is never 'survived'."""
        self.checked = True
        self.lost_bytes += int(nbytes)
        assert nbytes == 0, f"{nbytes} bytes of artifacts lost"


_LEDGERS: dict[str, Ledger] = {}


@pytest.fixture
def faults(request):
    """This test's record of the faults it injected and the artifact bytes it saw lost. A test that
    injects a fault and never measures what was lost fails at teardown."""
    ledger = _LEDGERS.setdefault(request.node.nodeid, Ledger(request.node.nodeid))
    yield ledger
    if ledger.injected and not ledger.checked:
        pytest.fail(f"{request.node.nodeid} injected {ledger.injected} but never checked what was lost")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    ledger = _LEDGERS.get(item.nodeid)
    if ledger is not None:
        if report.when == "call":
            ledger.passed = report.passed
        elif report.failed:  # setup or teardown broke: not survived
            ledger.passed = False
    return report


def summary_line() -> str | None:
    if not _LEDGERS:
        return None
    injected = sum(len(x.injected) for x in _LEDGERS.values())
    survived = sum(len(x.injected) for x in _LEDGERS.values() if x.passed)
    lost = sum(x.lost_bytes for x in _LEDGERS.values())
    return f"faults: {injected} injected, {survived} survived, {lost} bytes of artifacts lost"


def pytest_terminal_summary(terminalreporter):
    line = summary_line()
    if line is not None:
        terminalreporter.write_line(line)
