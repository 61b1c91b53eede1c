"""Shared fixtures. Keep each one small and generic: several test files use them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout_s: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Poll `url` until it answers (any HTTP status) or fail."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{proc.args} exited with {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout_s} s") from None
            time.sleep(0.1)


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
    """A real S3 HTTP endpoint: `python -m moto.server` on 127.0.0.1:<free port>. Yields its URL.

    One server per session: use a fresh bucket per test (uuid names) to stay independent.
    """
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/moto-api/", proc=proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


pytest_plugins = ["faults_summary"]  # the fault suite's summary line (tests/faults_summary.py)
