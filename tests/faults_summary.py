"""pytest plugin: the fault ledger and the one summary line of the fault-injection suite (issue 7).

A test that breaks something on purpose is marked `faults`, takes the `faults` fixture and says so:

    @pytest.mark.faults
    def test_x(faults):
        faults.inject("SIGKILL the training process")      # one fault injected
        ...
        faults.lost(manifest_lost(manifest, local_dir))     # bytes the manifest names that are not
                                                            # here, whole: > 0 fails the test

What counts as lost is always measured against a manifest (the store's record of what a run
produced: relative path -> sha256 and size): `manifest_lost` for a local copy, `store_lost` for the
objects of every manifest in a store. A test that injects a fault and never measures fails, and so
does a `faults`-marked test that does not take the ledger.

A fault counts as survived when its test passes, and a test with a loss cannot pass, so the line at
the end of the session is computed from those assertions:

    faults: 9 injected, 9 survived, 0 bytes of artifacts lost
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class Ledger:
    nodeid: str
    injected: list[str] = field(default_factory=list)
    lost_bytes: int = 0
    checked: bool = False  # lost() was called at least once

    def inject(self, what: str) -> None:
        self.injected.append(what)

    def lost(self, nbytes: int) -> None:
        """Record what the test measured as lost, and fail it if anything was: a loss is never 'survived'."""
        self.checked = True
        self.lost_bytes += int(nbytes)
        assert nbytes == 0, f"{nbytes} bytes of artifacts lost"


# --- measuring a loss against a manifest ------------------------------------------------------------
def manifest_lost(manifest: dict, local: Path, prefix: str = "", skip: tuple[str, ...] = ()) -> int:
    """Bytes of the files MANIFEST names (only those under PREFIX, taken relative to it; not SKIP)
    that are missing under LOCAL or whose sha256 differs."""
    from train.storage import sha256_file

    assert manifest is not None, "no manifest to compare against"
    lost = 0
    for rel, e in manifest["files"].items():
        if rel in skip or not rel.startswith(prefix):
            continue
        p = Path(local) / rel[len(prefix):]
        if not p.is_file() or sha256_file(p) != e["sha256"]:
            lost += e["size"]
    return lost


class _HashingSink:
    def __init__(self):
        self.h, self.n = hashlib.sha256(), 0

    def write(self, data) -> int:
        self.h.update(data)
        self.n += len(data)
        return len(data)


def store_lost(store) -> int:
    """Bytes of every manifest in STORE whose object is missing, short or does not hash to its name
    (each object read back in full through the backend, counted once per manifest entry)."""
    from train.storage import StoreError

    whole: dict[str, bool] = {}
    lost = 0
    for name in store.list_manifests(""):
        for e in store.read_manifest(name)["files"].values():
            sha = e["sha256"]
            if sha not in whole:
                sink = _HashingSink()
                try:
                    store._read_object(sha, 0, sink, lambda _n: None)  # the backend's raw read: no verify
                    whole[sha] = sink.h.hexdigest() == sha and sink.n == e["size"]
                except StoreError:
                    whole[sha] = False
            lost += 0 if whole[sha] else e["size"]
    return lost


# --- the fixture and the summary ------------------------------------------------------------------
# The ledgers live in the process that runs the test (a pytest-xdist worker, or the one process); what
# they hold travels on each test report (`user_properties`), and the summary is added up where reports
# are logged (xdist's controller, or the one process). So the line is the same with or without -n.
_LEDGERS: dict[str, Ledger] = {}
_PROP = "amigo_faults_ledger"
_SEEN: dict[str, dict] = {}  # nodeid -> {"injected": [...], "lost_bytes": n, "passed": bool}


@pytest.fixture
def faults(request):
    """This test's record of the faults it injected and the artifact bytes it saw lost. A test that
    injects a fault and never measures what was lost fails at teardown."""
    ledger = _LEDGERS.setdefault(request.node.nodeid, Ledger(request.node.nodeid))
    yield ledger
    if ledger.injected and not ledger.checked:
        pytest.fail(f"{request.node.nodeid} injected {ledger.injected} but never checked what was lost")


def pytest_runtest_setup(item):
    if item.get_closest_marker("faults") is not None and "faults" not in getattr(item, "fixturenames", ()):
        pytest.fail(f"{item.nodeid} is marked `faults` but does not take the `faults` ledger "
                    "(inject what it breaks, then faults.lost(...) measured against a manifest)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    ledger = _LEDGERS.get(item.nodeid)
    if ledger is not None:
        report.user_properties.append((_PROP, {"injected": list(ledger.injected),
                                               "lost_bytes": ledger.lost_bytes}))
    return report


def pytest_runtest_logreport(report):
    """Called where reports are logged (xdist's controller included): a test's faults count as
    survived when its call passed and neither setup nor teardown failed."""
    data = next((v for k, v in report.user_properties if k == _PROP), None)
    if data is None:
        return
    seen = _SEEN.setdefault(report.nodeid, {"passed": False})
    seen.update(data)
    if report.when == "call":
        seen["passed"] = report.passed
    elif report.failed:  # setup or teardown broke: not survived
        seen["passed"] = False


def summary_line() -> str | None:
    if not _SEEN:
        return None
    injected = sum(len(x["injected"]) for x in _SEEN.values())
    survived = sum(len(x["injected"]) for x in _SEEN.values() if x["passed"])
    lost = sum(x["lost_bytes"] for x in _SEEN.values())
    return f"faults: {injected} injected, {survived} survived, {lost} bytes of artifacts lost"


def pytest_terminal_summary(terminalreporter):
    line = summary_line()
    if line is not None:
        terminalreporter.write_line(line)
