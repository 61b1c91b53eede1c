"""The local runner: the target YAML's `setup` and `run`, as subprocesses on this machine.

Same file, same envs, same entrypoint a cloud target gets; only the machine
differs. The training process gets its own process group so `amigo-burst down`
can stop it, and its output is handed line by line to `on_line`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path


def _env(envs: dict[str, str], secrets: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update({k: str(v) for k, v in envs.items()})
    env.update(secrets)  # in the child's environment only; never written anywhere
    # On this machine the training stack is the one amigo-burst runs in (the project's .venv),
    # not whatever `python3` the YAML names for a fresh cloud machine; `rehearse --full` names a fresh
    # environment instead (AMIGO_LOCAL_PYTHON), the one the target's setup installs into.
    env["AMIGO_PYTHON"] = os.environ.get("AMIGO_LOCAL_PYTHON") or sys.executable
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_step(script: str, cwd: Path, env: dict[str, str], on_line: Callable[[str], None],
             on_start: Callable[[int], None] | None = None) -> int:
    """Run one bash script, streaming merged stdout/stderr lines. Returns the exit code."""
    proc = subprocess.Popen(
        ["bash", "-c", script], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
        bufsize=1, start_new_session=True,
    )
    if on_start:
        on_start(proc.pid)
    assert proc.stdout is not None
    for line in proc.stdout:
        on_line(line.rstrip("\n"))
    return proc.wait()


def run_task(task: dict, envs: dict[str, str], secrets: dict[str, str], workdir: Path,
             on_line: Callable[[str], None], on_start: Callable[[int], None] | None = None) -> int:
    """setup, then run (if setup succeeded), in `workdir`. Returns run's exit code (or setup's)."""
    env = _env({**{k: str(v) for k, v in (task.get("envs") or {}).items()}, **envs}, secrets)
    rc = run_step(task["setup"], workdir, env, on_line, on_start)
    if rc != 0:
        on_line(f"setup failed with exit code {rc}")
        return rc
    return run_step(task["run"], workdir, env, on_line, on_start)


def stop(pgid: int) -> bool:
    """SIGTERM the training process group (the entrypoint saves and exits)."""
    try:
        os.killpg(pgid, signal.SIGTERM)
        return True
    except ProcessLookupError:
        return False
