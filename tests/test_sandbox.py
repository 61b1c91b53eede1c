"""train/sandbox.py: model-written code runs with no network, a timeout, a memory limit, a temp dir and
none of our environment. Each program is a real `python` process; no mocks.

The network tests run twice: in the strongest mode this machine permits (a new network namespace as
root, as here and in CI) and with the fallback forced (AMIGO_SANDBOX_NETWORK=audit-hook), so both
layers are shown to refuse a socket that the test process itself can reach.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from train import sandbox
from train.sandbox import SandboxError, network_mode, run_python


@pytest.fixture
def listener():
    """A TCP server on 127.0.0.1 that this process can reach: the sandbox must not."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    threading.Thread(target=lambda: srv.accept(), daemon=True).start()
    port = srv.getsockname()[1]
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # reachable from here
    yield port
    srv.close()


@pytest.fixture(params=["strongest", "audit-hook"])
def mode(request, monkeypatch):
    network_mode.cache_clear()
    if request.param == "audit-hook":
        monkeypatch.setenv("AMIGO_SANDBOX_NETWORK", "audit-hook")
    else:
        monkeypatch.delenv("AMIGO_SANDBOX_NETWORK", raising=False)
    yield network_mode()
    network_mode.cache_clear()


def connect_program(port: int) -> str:
    return f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=3)\nprint('connected')\n"


def test_refuses_the_network(listener, mode):
    r = run_python(connect_program(listener), timeout_s=10)
    assert r.status == "failed", r
    assert r.network == mode
    assert "PermissionError" in r.stderr_tail or "unreachable" in r.stderr_tail.lower()


def test_the_strongest_isolation_runs_and_has_only_a_loopback():
    """As root (here and in CI) a network namespace of its own; without root, one inside a user namespace
    where the kernel allows it. In a namespace only a loopback exists (/proc/net/dev shows the reading
    process's namespace), while this process sees more interfaces."""
    network_mode.cache_clear()
    mode = network_mode()
    if os.geteuid() == 0:
        assert mode == "netns"
    assert mode in ("netns", "userns+netns", "audit-hook")
    ours = {ln.split(":")[0].strip() for ln in Path("/proc/net/dev").read_text().splitlines()[2:]}
    prog = ("ifaces = {ln.split(':')[0].strip() for ln in open('/proc/net/dev').read().splitlines()[2:]}\n"
            "assert ifaces == {'lo'}, ifaces\n")
    if mode != "audit-hook":
        assert ours != {"lo"}, "the test machine itself should have a non-loopback interface"
        assert run_python(prog).status == "passed"


def test_kills_an_infinite_loop():
    t0 = time.monotonic()
    r = run_python("while True:\n    pass\n", timeout_s=2)
    assert r.status == "timeout" and r.returncode is None
    assert time.monotonic() - t0 < 6


def test_a_memory_hog_gets_memory_error_not_our_ram():
    prog = "chunks = [bytearray(64 * 2**20) for _ in range(32)]\n"  # 2 GiB: bounded, if the limit broke
    r = run_python(prog, timeout_s=20, memory_mb=512)
    assert r.status == "memory", r


def test_clean_environment_and_own_temp_dir(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    prog = ("import os, sys\n"
            "assert 'HF_TOKEN' not in os.environ and 'AWS_SECRET_ACCESS_KEY' not in os.environ, os.environ\n"
            "assert set(os.environ) <= {'PATH', 'LANG', 'HOME', 'TMPDIR', 'PYTHONDONTWRITEBYTECODE', "
            "'PYTHONHASHSEED', 'OMP_NUM_THREADS', 'LC_CTYPE'}, sorted(os.environ)\n"
            "assert os.getcwd().startswith('/tmp/amigo-sandbox-') and os.environ['HOME'] == os.getcwd()\n"
            "open('scratch.txt', 'w').write('ok')\n"
            "print(os.getcwd(), file=sys.stderr)\n")
    r = run_python(prog)
    assert r.status == "passed", r
    assert not Path(r.stderr_tail.strip().splitlines()[-1]).exists(), "the temp dir is removed afterwards"


@pytest.mark.parametrize("prog", [
    "open('/tmp/amigo-sandbox-escape', 'w').write('x')",
    "import os\nos.open('/tmp/amigo-sandbox-escape', os.O_WRONLY | os.O_CREAT)",
    "import subprocess\nsubprocess.run(['true'])",
    "import os\nos.system('true')",
    "import ctypes\nctypes.CDLL(None)",
])
def test_no_writes_outside_no_processes_no_ctypes(prog):
    r = run_python(prog)
    assert r.status == "failed" and "sandbox:" in r.stderr_tail, r
    assert not Path("/tmp/amigo-sandbox-escape").exists()


def test_a_guard_that_cannot_isolate_refuses_to_run(monkeypatch):
    """If the namespace cannot be entered, the program never runs (SandboxError), never unisolated."""
    monkeypatch.setattr(sandbox, "GUARD", sandbox.GUARD.replace('"netns": 0x40000000', '"netns": -1'))
    network_mode.cache_clear()
    monkeypatch.setenv("AMIGO_SANDBOX_NETWORK", "netns")
    try:
        with pytest.raises(SandboxError, match="unshare failed"):
            run_python("print('ran')")
    finally:
        network_mode.cache_clear()
