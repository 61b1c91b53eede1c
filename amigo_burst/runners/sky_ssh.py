"""ssh and rsync to a SkyPilot cluster, through the ssh alias SkyPilot writes for it.

    rsync_down(cluster, remote, local)     CLUSTER:REMOTE/ -> LOCAL/ (outputs; the machine's store)
    signal_job(cluster, run_id)            SIGTERM to the job (train/capped.sh's pid file): stop with a checkpoint

No SkyPilot import here: these are plain ssh/rsync subprocesses.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from amigo_burst.errors import UserError

SSH_TIMEOUT_S = 30


def _ssh_config(cluster: str) -> Path:
    # SkyPilot writes one ssh alias per cluster here. OpenSSH reads the passwd home's
    # ~/.ssh/config, not $HOME's, so the file is passed with -F.
    return Path(os.environ.get("HOME", "~")).expanduser() / ".sky" / "generated" / "ssh" / cluster


def _config_or_error(cluster: str) -> Path:
    cfg = _ssh_config(cluster)
    if not cfg.is_file():
        raise UserError(f"{cluster}: no ssh config at {cfg}: is the cluster up? (`amigo-burst status`)")
    return cfg


def rsync_down(cluster: str, remote: str, local: Path, exclude: tuple[str, ...] = (),
               files_from: Path | None = None, missing_ok: bool = False) -> bool:
    """Copy CLUSTER:REMOTE/ (e.g. ~/sky_workdir/outputs) into LOCAL/; FILES_FROM: only the paths it
    lists (relative to REMOTE: then REMOTE must be relative to the remote home, rsync does not expand ~
    there). missing_ok: a REMOTE that does not exist is False, not an error."""
    cfg = _config_or_error(cluster)
    Path(local).mkdir(parents=True, exist_ok=True)
    cmd = ["rsync", "-a", "-e", f"ssh -F {cfg} -o ConnectTimeout={SSH_TIMEOUT_S}",
           *(f"--exclude={x}" for x in exclude), *([f"--files-from={files_from}"] if files_from else []),
           f"{cluster}:{remote.rstrip('/')}/", f"{local}/"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode == 0:
        return True
    lines = [ln for ln in done.stderr.strip().splitlines() if not ln.startswith("Warning: Permanently added")]
    if missing_ok and any("change_dir" in ln and "No such file or directory" in ln for ln in lines):
        return False
    # the line that says why (rsync's own summary lines come after it)
    why = next((ln for ln in lines if not ln.startswith("rsync error:") and "Broken pipe" not in ln), None)
    raise UserError(f"rsync from {cluster}:{remote} failed (exit {done.returncode}): {why or (lines or ['?'])[-1]}")


def signal_job(cluster: str, run_id: str) -> bool:
    """SIGTERM to RUN_ID's job on CLUSTER: train/capped.sh keeps the pid of everything under it in
    ~/.amigo/jobs/<run>.pid, and passes the signal on (the trainer finishes its step and saves).
    False when there was no job to signal (not started yet, or already ended)."""
    cfg = _config_or_error(cluster)
    pidfile = f"~/.amigo/jobs/{run_id}.pid"
    script = f'p=$(cat {pidfile} 2>/dev/null) && [ -n "$p" ] && kill -TERM "$p" && echo signalled'
    done = subprocess.run(["ssh", "-F", str(cfg), "-o", f"ConnectTimeout={SSH_TIMEOUT_S}", cluster, script],
                          capture_output=True, text=True, timeout=SSH_TIMEOUT_S * 3)
    if done.returncode == 255:  # ssh's own failure: the machine could not be reached
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        raise UserError(f"{cluster}: cannot reach the machine to stop its job: {last}")
    return "signalled" in done.stdout
