"""Run untrusted, model-written Python: one process per program, and nothing it can reach.

    result = run_python(program, timeout_s=10, memory_mb=1024)   # -> SandboxResult(status, ...)

What each program gets, and why:
- its own interpreter (`python -I -S`: no user site, no site-packages, no PYTHON* variables) in a new
  session, killed as a group on timeout: an infinite loop, or anything it left behind, dies with it;
- a fresh temporary directory as cwd, HOME and TMPDIR, removed afterwards;
- a clean environment: PATH, LANG and that directory only (no tokens, no AWS keys, nothing of ours);
- rlimits (setrlimit): address space `memory_mb` (a memory hog gets MemoryError, not our RAM), CPU
  seconds, file size 16 MiB, 64 open files, no core dumps;
- no network, in the strongest way this machine allows (`network_mode()` says which one ran):
    "netns"        a new, empty network namespace (unshare CLONE_NEWNET: needs root, as here and in
                   CI): no interface but a downed loopback, so every connect fails (ENETUNREACH);
    "userns+netns" the same inside a new user namespace, where unprivileged namespaces are allowed;
    "audit-hook"   neither permitted (a container without CAP_SYS_ADMIN): the guard alone;
- in every mode, an audit hook (PEP 578: once added it cannot be removed from Python) that refuses
  sockets, subprocesses, exec, fork, kill, ctypes, and writes, renames or deletes outside the
  program's directory. So where namespaces work, the network is refused twice.

The guard sets all of this up inside the fresh interpreter, before the program runs (no preexec_fn:
forking a process that has torch's threads and running Python before exec can deadlock).

Statuses: passed (exit 0), failed (an exception, a failed assert), timeout (killed after timeout_s),
memory (MemoryError under the address-space limit). Standard library only: it runs on the training
machine and in tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

FILE_LIMIT = 16 * 2**20  # a program writing more than this (to its dir or stderr) gets SIGXFSZ
SETUP_FAILED = 125  # the guard could not isolate the program: never run it unisolated

# argv: MODE MEMORY_MB CPU_S. Runs first in the child, then executes program.py.
GUARD = r'''
import ctypes, os, resource, sys
try:
    mode, mem, cpu = sys.argv[1], int(sys.argv[2]) * 2**20, int(sys.argv[3])
    flags = {"netns": 0x40000000, "userns+netns": 0x10000000 | 0x40000000}.get(mode, 0)  # CLONE_NEWNET, CLONE_NEWUSER
    if flags and ctypes.CDLL(None, use_errno=True).unshare(flags) != 0:
        print("sandbox: unshare failed:", os.strerror(ctypes.get_errno()), file=sys.stderr)
        sys.exit(125)
    for lim, val in ((resource.RLIMIT_AS, mem), (resource.RLIMIT_CPU, cpu), (resource.RLIMIT_FSIZE, __FILE_LIMIT__),
                     (resource.RLIMIT_NOFILE, 64), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(lim, (val, val))
    def guard(root, deny, paths, write):  # closures: nothing of it is left in the program's reach by name
        def inside(p):
            if isinstance(p, int):
                return True  # an fd: it was opened under the rules already
            p = os.path.realpath(os.fsdecode(p))
            return p == root or p.startswith(root + os.sep)
        def hook(event, args):
            if event.startswith(deny):
                raise PermissionError(f"sandbox: {event} is not allowed")
            if event in paths and not all(inside(a) for a in args[:2] if isinstance(a, (str, bytes, int, os.PathLike))):
                raise PermissionError(f"sandbox: {event} outside the sandbox directory")
            if event == "open" and (any(c in str(args[1] or "") for c in "wax+") or (args[2] or 0) & write) \
                    and not inside(args[0]):
                raise PermissionError(f"sandbox: writing {args[0]!r} outside the sandbox directory")
        return hook
    hook = guard(os.getcwd(),
                 ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                  "os.forkpty", "os.kill", "os.killpg", "ctypes.", "pty.", "signal.pthread_kill", "webbrowser.",
                  "gc.get_"),  # gc.get_objects/get_referrers would reach the hook's own state
                 ("os.remove", "os.rmdir", "os.rename", "os.mkdir", "os.chmod", "os.chown", "os.truncate",
                  "os.symlink", "os.link", "shutil.rmtree", "shutil.move", "os.utime"),
                 os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
except Exception as e:  # never run the program half-isolated
    print('sandbox: setup failed:', repr(e), file=sys.stderr)
    sys.exit(125)
with open("program.py", encoding="utf-8") as f:
    code = compile(f.read(), "program.py", "exec")
del f
sys.argv = ["program.py"]
sys.addaudithook(hook)
del guard, hook, ctypes, resource
exec(code, {"__name__": "__main__", "__file__": "program.py", "__builtins__": __builtins__})
'''.replace("__FILE_LIMIT__", str(FILE_LIMIT))


@dataclass
class SandboxResult:
    status: str  # passed | failed | timeout | memory
    returncode: int | None
    stderr_tail: str  # the last lines the program wrote to stderr (its traceback)
    network: str  # which isolation ran: netns | userns+netns | audit-hook


class SandboxError(RuntimeError):
    """The sandbox itself could not be set up (the program never ran)."""


def _clean_env(d: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(d), "TMPDIR": str(d),
            "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}


@lru_cache(maxsize=1)
def network_mode() -> str:
    """The strongest network isolation this machine permits (probed once per process).
    AMIGO_SANDBOX_NETWORK=audit-hook forces the fallback (the tests run it both ways)."""
    forced = os.environ.get("AMIGO_SANDBOX_NETWORK")
    if forced:
        if forced not in ("netns", "userns+netns", "audit-hook"):
            raise SandboxError(f"AMIGO_SANDBOX_NETWORK={forced!r}: netns, userns+netns or audit-hook")
        return forced
    for mode in ("netns", "userns+netns"):
        if _execute("pass", mode, 10.0, 256)[0] == 0:
            return mode
    return "audit-hook"


def _execute(program: str, mode: str, timeout_s: float, memory_mb: int) -> tuple[int | None, str]:
    """(exit code or None on timeout, stderr tail) of one guarded run in a fresh temp dir."""
    with tempfile.TemporaryDirectory(prefix="amigo-sandbox-") as tmp:
        d = Path(tmp)
        (d / "program.py").write_text(program, encoding="utf-8")
        (d / "guard.py").write_text(GUARD, encoding="utf-8")
        cpu_s = int(timeout_s) + 2  # a backstop: the wall-clock timeout below normally fires first
        with open(d / ".stderr", "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "guard.py", mode, str(memory_mb), str(cpu_s)], cwd=d,
                env=_clean_env(d), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                close_fds=True, start_new_session=True,
            )
            try:
                rc: int | None = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                rc = None
            finally:
                _kill_group(proc)
        tail = (d / ".stderr").read_bytes()[-2000:].decode("utf-8", "replace")
    return rc, tail


def run_python(program: str, timeout_s: float = 10.0, memory_mb: int = 1024) -> SandboxResult:
    """Execute `program` (Python source) in the sandbox; never raises for what the program does."""
    mode = network_mode()
    rc, tail = _execute(program, mode, timeout_s, memory_mb)
    if rc == SETUP_FAILED and tail.startswith("sandbox:"):
        raise SandboxError(tail.strip())
    if rc is None or rc in (-signal.SIGXCPU, -signal.SIGKILL):
        status = "timeout"
    elif rc == 0:
        status = "passed"
    elif "MemoryError" in tail:
        status = "memory"
    else:
        status = "failed"
    return SandboxResult(status, rc, tail.strip()[-600:], mode)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the program's whole session (anything it started too), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
