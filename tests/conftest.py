"""Shared fixtures. Keep each one small and generic: several test files use them."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

from tests.helpers import wait_http, wait_port_in_log

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The tiny offline model + tokenizer (train/tiny.py), built once per session."""
    from train.tiny import write_tiny

    return write_tiny(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def workers(monkeypatch) -> list[str]:
    """Run ids a launch started a worker for; no worker process starts (tests/test_budget.py, test_money.py:
    what the launch recorded and handed over, not the training)."""
    from amigo_burst.lifecycle import launch as launch_mod

    started: list[str] = []
    monkeypatch.setattr(launch_mod, "spawn_worker", lambda cfg, run_id, *a: started.append(run_id) or 4242)
    return started


@pytest.fixture(scope="session")
def aws_test_env() -> Iterator[None]:
    """Dummy AWS credentials/region, and no user ~/.aws files: boto3 must never reach a real account."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_ENDPOINT_URL"):
            mp.delenv(name, raising=False)
        yield


@pytest.fixture(scope="session")
def moto_server(aws_test_env, tmp_path_factory) -> Iterator[str]:
    """A real S3 HTTP endpoint: `python -m moto.server` on 127.0.0.1, on a port it binds itself (port
    0, read back from its startup line: no window in which another process can take it). Yields its URL.

    One server per session: use a fresh bucket per test (uuid names) to stay independent.
    """
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
    try:
        port = wait_port_in_log(log, r"Running on http://127\.0\.0\.1:(\d+)", proc)
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/moto-api/", proc=proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# Hypothesis keeps its example database and caches in .hypothesis/ of the working directory: not in
# the repository. No database (every run is fresh) and its home in a temp folder.
settings.register_profile("amigo", database=None)
settings.load_profile("amigo")
set_hypothesis_home_dir(tempfile.mkdtemp(prefix="amigo-hypothesis-"))

# --- nothing written into the repository -------------------------------------------------------------
# Tests write only under temp dirs. The repository's `git status` (ignored files included) is taken
# when the session starts and compared when it ends: a file a test session added or changed there
# fails the run, named. Python's bytecode caches and pytest's own cache are not the tests' doing.
_NOT_TESTS = ("__pycache__/", ".pytest_cache/")


def _repo_status() -> set[str] | None:
    r = subprocess.run(["git", "status", "--porcelain=v1", "--untracked-files=all", "--ignored", "-z"],
                       cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:  # not a git checkout (a mutation copy, an sdist): nothing to compare against
        return None
    entries = r.stdout.split("\0")
    return {e for e in entries if e and not any(x in e for x in _NOT_TESTS) and not e.endswith(".pyc")}


def pytest_sessionstart(session):
    session.config._amigo_repo_status = _repo_status()


def pytest_sessionfinish(session, exitstatus):
    before = getattr(session.config, "_amigo_repo_status", None)
    after = _repo_status() if before is not None else None
    if before is None or after is None or after <= before:
        return
    new = sorted(after - before)
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    msg = f"the test session wrote into the repository ({REPO}): " + ", ".join(new[:10])
    if tr is not None:
        tr.ensure_newline()
        tr.write_line(msg, red=True)
    else:
        print(msg, file=sys.stderr)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


# the fault ledger and summary line; where the time went (timing_summary); SkyPilot homes (catalogs, API server, Slurm); pytester (test_guards
# runs the ledger plugin in a throwaway session)
pytest_plugins = ["faults_summary", "timing_summary", "tests.sky_fixtures", "pytester"]


# What an in-process test can leave behind that changes every later test and the CLI subprocesses they
# start: the hub-offline switch `launch` sets in os.environ when the hub is unreachable (no network
# here), the SIGINT/SIGTERM handlers a training Session installs, the blocked-signal mask (inherited by
# every child process). Put back after each test.
_LEAKY_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


@pytest.fixture(autouse=True)
def _no_leaks_between_tests():
    import os
    import signal

    env = {k: os.environ.get(k) for k in _LEAKY_ENV}
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])  # the blocked set (multiprocess blocks SIGINT a while)
    yield
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    for s, h in handlers.items():
        if h is not None and signal.getsignal(s) is not h:
            signal.signal(s, h)

