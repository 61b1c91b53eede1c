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


ESCAPE = "/tmp/amigo-sandbox-escape"
HOOK, KERNEL = "sandbox:", "Operation not permitted"  # the audit hook's refusal, seccomp's (EPERM)
# route -> (program, what refused it). Each tries to write ESCAPE or start /bin/sh from the program.
ESCAPES = {
    "open() for writing": (f"open('{ESCAPE}', 'w').write('x')", "sandbox: writing outside"),
    "os.open O_CREAT": (f"import os\nos.open('{ESCAPE}', os.O_WRONLY | os.O_CREAT)", "sandbox: writing outside"),
    "os.open relative to a dir fd": ("import os\nd = os.open('.', os.O_RDONLY)\n"
                                     "os.open('x', os.O_WRONLY | os.O_CREAT, dir_fd=d)", KERNEL),
    "a dir fd outside": ("import os\nos.open(os.path.dirname(os.__file__), os.O_RDONLY)", "sandbox: opening a directory"),
    "subprocess": (f"import subprocess\nsubprocess.run(['sh', '-c', 'touch {ESCAPE}'])", "import of subprocess"),
    "os.system": (f"import os\nos.system('touch {ESCAPE}')", "sandbox: os.system"),
    "os.popen": (f"import os\nos.popen('touch {ESCAPE}').read()", "import of subprocess"),
    "os.posix_spawn": (f"import os\nos.posix_spawn('/bin/sh', ['sh', '-c', 'touch {ESCAPE}'], {{}})",
                       "sandbox: os.posix_spawn"),
    "os.spawnv": (f"import os\nos.spawnv(os.P_WAIT, '/bin/sh', ['sh', '-c', 'touch {ESCAPE}'])", "sandbox: os.fork"),
    "os.fork": ("import os\nos.fork()", "sandbox: os.fork"),
    "os.execv": (f"import os\nos.execv('/bin/sh', ['sh', '-c', 'touch {ESCAPE}'])", "sandbox: os.exec"),
    "posix directly": (f"import posix\nposix.system('touch {ESCAPE}')", "sandbox: os.system"),
    "_posixsubprocess": ("import _posixsubprocess", "import of _posixsubprocess"),
    "_posixsubprocess via sys.modules": ("import sys\nsys.modules['_posixsubprocess']", "KeyError"),
    "ctypes": (f"import ctypes\nctypes.CDLL(None).system(b'touch {ESCAPE}')", "import of ctypes"),
    "_ctypes": ("import _ctypes", "import of _ctypes"),
    "cffi": ("import cffi", "import of cffi"),
    "pty.spawn": ("import pty\npty.spawn('/bin/sh')", "import of pty"),
    "multiprocessing": ("import multiprocessing", "import of multiprocessing"),
    "a sub-interpreter": ("import _xxsubinterpreters", "import of _xxsubinterpreters"),
    "a thread": ("import threading\nthreading.Thread(target=print).start()", "can't start new thread"),
    "os.mkfifo (no audit event)": (f"import os\nos.mkfifo('{ESCAPE}')", KERNEL),
    "os.mknod (no audit event)": (f"import os\nos.mknod('{ESCAPE}')", KERNEL),
    "a symlink out": ("import os\nos.symlink('/tmp', 'link')", "sandbox: os.symlink outside"),
    "a hard link out": ("import os\nos.link('/etc/hostname', 'h')", "sandbox: os.link outside"),
    "os.rename out": (f"import os\nopen('a', 'w').close()\nos.rename('a', '{ESCAPE}')", "sandbox: os.rename outside"),
    "shutil.copy out": (f"import shutil\nopen('a', 'w').close()\nshutil.copy('a', '{ESCAPE}')",
                        "sandbox: shutil.copyfile outside"),
    "a str subclass path": (f"class S(str):\n    pass\nopen(S('{ESCAPE}'), 'w')", "sandbox: writing outside"),
    "a PathLike": (f"class P:\n    def __fspath__(self):\n        return '{ESCAPE}'\nopen(P(), 'w')",
                   "sandbox: writing outside"),
    "os.chdir out": ("import os\nos.chdir('/tmp')", "sandbox: os.chdir"),
    "os.chmod on an fd": ("import os\nos.chmod(os.open('/etc/hostname', os.O_RDONLY), 0o777)", "sandbox: reading outside"),
    "reading a file outside": ("print(open('/etc/hostname').read())", "sandbox: reading outside"),
    "/proc/self/mem": ("open('/proc/self/mem', 'rb')", "sandbox: reading outside"),
    "sqlite3 (writes files in C)": ("import sqlite3", "import of sqlite3"),
    "a code object": ("(lambda: 0).__code__.replace(co_consts=(1,))", "sandbox: code.__new__"),
    "marshal": ("import marshal\nmarshal.loads(marshal.dumps(1))", "sandbox: marshal.loads"),
    "its own shared object": ("import glob, os, importlib.util\nso = glob.glob(os.path.dirname(os.__file__) + "
                              "'/lib-dynload/xxlimited.*')[0]\nopen('evil.so', 'wb').write(open(so, 'rb').read())\n"
                              "importlib.util.module_from_spec(importlib.util.spec_from_file_location('xxlimited', "
                              "'evil.so'))", "failed to map segment"),
    "executable memory": ("import mmap\nmmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_EXEC)", KERNEL),
    "kill another process": ("import os\nos.kill(1, 0)", "sandbox: os.kill"),
    "raise its limits": ("import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))",
                         "sandbox: resource.setrlimit"),
    "gc.get_objects": ("import gc\ngc.get_objects()", "sandbox: gc.get_objects"),
    "sys.settrace": ("import sys\nsys.settrace(lambda *a: None)", "sandbox: sys.settrace"),
    "a socket": ("import socket", "import of socket"),
}


@pytest.fixture
def audit_hook_mode(monkeypatch):
    """The fallback a container without CAP_SYS_ADMIN gets: no namespace, the layers below only."""
    network_mode.cache_clear()
    monkeypatch.setenv("AMIGO_SANDBOX_NETWORK", "audit-hook")
    yield network_mode()
    network_mode.cache_clear()


@pytest.mark.parametrize("route", list(ESCAPES))
def test_every_escape_route_fails_in_the_audit_hook_mode(route, audit_hook_mode):
    """One attempt per route around the audit hook; each is refused by the layer named (so deleting
    that layer's rule fails this test), and nothing appears outside the program's directory."""
    Path(ESCAPE).unlink(missing_ok=True)
    prog, refused_by = ESCAPES[route]
    r = run_python(prog, timeout_s=10)
    assert audit_hook_mode == "audit-hook" and r.network == "audit-hook"
    assert r.status == "failed" and refused_by in r.stderr_tail, r
    assert not Path(ESCAPE).exists()


def test_inside_its_own_directory_a_program_works(audit_hook_mode):
    prog = ("import os, tempfile, math, hashlib, heapq, re, statistics, fractions, random\n"
            "from typing import List, TypeVar\nfrom collections import namedtuple\n"
            "T, P = TypeVar('T'), namedtuple('P', 'x y')\n"
            "open('a.txt', 'w').write('x')\nos.mkdir('d')\nos.rename('a.txt', 'd/b.txt')\ntempfile.mkstemp()\n"
            "assert open('d/b.txt').read() == 'x'\n")
    r = run_python(prog)
    assert r.status == "passed", r
    assert r.isolation == {"network": "audit-hook", "user": "root" if os.geteuid() == 0 else "uid " + str(os.geteuid()),
                           "seccomp": True, "guard": "audit-hook"}


@pytest.mark.skipif(not Path("/usr/bin/python3").is_file() or os.geteuid() != 0,
                    reason="needs root and an interpreter whose files others can read")
def test_as_root_the_program_runs_as_nobody_without_processes(audit_hook_mode):
    """Where the interpreter is readable by others (a rented container's /usr/bin/python3), root drops to
    nobody and RLIMIT_NPROC 0 stops any process or thread even past the other layers."""
    prog = ("import os, resource\nassert os.getuid() == 65534 and os.getgid() == 65534, os.getuid()\n"
            "assert resource.getrlimit(resource.RLIMIT_NPROC) == (0, 0)\n")
    r = run_python(prog, python="/usr/bin/python3")
    assert r.status == "passed", r
    assert r.isolation["user"] == "nobody" and r.isolation["seccomp"] is True


def test_seccomp_filter_compiles_for_both_architectures():
    """Pure: both syscall tables assemble into valid BPF (jumps in range, ends in allow/deny)."""
    from train.sandbox_guard import SYSCALLS, seccomp_program

    for machine in SYSCALLS:
        prog = seccomp_program(machine, 4242)
        assert len(prog) % 8 == 0 and len(prog) // 8 < 4096


def test_a_guard_that_cannot_isolate_refuses_to_run(monkeypatch, tmp_path):
    """If the namespace cannot be entered, the program never runs (SandboxError), never unisolated."""
    broken = tmp_path / "sandbox_guard.py"
    broken.write_text(sandbox.GUARD_PATH.read_text().replace('"netns": 0x40000000', '"netns": -1'))
    monkeypatch.setattr(sandbox, "GUARD_PATH", broken)
    network_mode.cache_clear()
    monkeypatch.setenv("AMIGO_SANDBOX_NETWORK", "netns")
    try:
        with pytest.raises(SandboxError, match="unshare failed"):
            run_python("print('ran')")
    finally:
        network_mode.cache_clear()
