"""One rehearsal at a time, and none that outlives its command.

    with rehearsal_lock(root):       a second `rehearse` of the project: "already running (pid N)"
    stop_live_runs(project_root)     what a rehearsal left running (Ctrl-C, a killed `rehearse`):
                                     training stopped, its worker waited for, nothing orphaned

Kept apart from rehearse.py (which builds and launches the rehearsal project).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from amigo_burst.errors import UserError
from amigo_burst.state.records import ACTIVE, open_records, pid_alive

STOP_WAIT_S = 30.0  # SIGTERM: the entrypoint saves a checkpoint and exits; then SIGKILL


@contextlib.contextmanager
def rehearsal_lock(rehearsal_dir: Path) -> Iterator[None]:
    """An flock on rehearsal_dir/rehearse.lock for the command's life (the kernel drops it when the
    process dies, however it dies: never a stale lock)."""
    rehearsal_dir.mkdir(parents=True, exist_ok=True)
    path = rehearsal_dir / "rehearse.lock"
    with open(path, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise UserError(f"a rehearsal of this project is already running (pid {holder}): wait for it, "
                            "or stop it with Ctrl-C") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield


def stop_live_runs(project: Path, wait_s: float = STOP_WAIT_S) -> list[str]:
    """Stop every active run of the rehearsal project at PROJECT: SIGTERM its training process group,
    wait for its worker to record the end, SIGKILL what is still there after WAIT_S. Returns the ids."""
    if not (project / "amigo.toml").is_file():
        return []
    runs = open_records(project)
    stopped = []
    for run in runs.active():
        _signal_group(run.child_pid, signal.SIGTERM)
        worker = run.pid if run.pid != os.getpid() else None
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and (pid_alive(worker) or pid_alive(run.child_pid)):
            time.sleep(0.2)
        for pid in (run.child_pid, run.pid):  # still there: not waited for any longer
            if pid != os.getpid():  # a launch interrupted before its worker started names this process
                _signal_group(pid, signal.SIGKILL)
        if runs.get(run.id).status in ACTIVE:  # the worker died before it could record the end
            runs.update(run.id, status="STOPPED", reason="rehearsal interrupted")
        stopped.append(run.id)
    return stopped


def _signal_group(pid: int | None, sig: int) -> None:
    """The training process and its children (it runs in its own session: group id = its pid)."""
    if not pid or not pid_alive(pid):
        return
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
