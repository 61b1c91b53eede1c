"""The handoff between `launch` and its worker: launch.json, and the one way a worker is started.

    write_plan(root, LaunchPlan(...))       .amigo/runs/<id>/launch.json (atomic; no secrets)
    spawn_worker(cfg, run_id)               `python -m amigo_burst.lifecycle.worker CONFIG RUN`
    spawn_worker(cfg, run_id, dead_pid)     the same, taking over from a worker that died (reattach)

The worker runs in its own session: closing the terminal or killing the controller does not
stop training.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from amigo_burst.config import AmigoConfig
from amigo_burst.planning.budget import AUTODOWN_IDLE_MIN
from amigo_burst.state import paths

# a cloud machine idle this long is torn down, even if the laptop is gone (planning/budget.py counts it)
AUTOSTOP_IDLE_MIN = AUTODOWN_IDLE_MIN
STOP_REASON = "stopped by user (amigo-burst down)"  # `down` writes it; the worker's ending keeps it


@dataclass
class LaunchPlan:
    """Everything the worker needs, written to .amigo/runs/<id>/launch.json (no secrets)."""

    run_id: str
    config_path: str
    target: str
    cluster: str | None
    envs: dict[str, str]
    workdir: str
    transport: str  # "store" (outputs mirrored to the store) | "rsync" (pulled from the cluster)
    spot: bool
    keep: bool
    gpu: str | list[str] | None  # --gpu, or the plan's machine and its fallbacks in order


def write_plan(root: Path, plan: LaunchPlan) -> None:
    d = paths.run_dir(root, plan.run_id)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / "launch.json.tmp"
    tmp.write_text(json.dumps(asdict(plan), indent=2))
    os.replace(tmp, d / "launch.json")


def read_plan(root: Path, run_id: str) -> LaunchPlan:
    return LaunchPlan(**json.loads((paths.run_dir(root, run_id) / "launch.json").read_text()))


def launched_clusters(root: Path) -> bool:
    """A launch.json naming a cluster: this project started one, even if its record was lost."""
    for p in paths.runs_dir(root).glob("*/launch.json"):
        try:
            if json.loads(p.read_text()).get("cluster"):
                return True
        except (OSError, ValueError):
            continue
    return False


def spawn_worker(cfg: AmigoConfig, run_id: str, reattach_from_pid: int | None = None) -> int:
    """Start the worker in its own session (it outlives this process); returns its pid.

    reattach_from_pid: the dead worker's pid; the new one takes the record over only if it still
    names that pid (compare-and-set in RunStore.take_over), so two reattaching processes make one.
    """
    argv = [sys.executable, "-m", "amigo_burst.lifecycle.worker", str(cfg.path), run_id]
    if reattach_from_pid is not None:
        argv.append(str(reattach_from_pid))
    with open(paths.run_dir(cfg.root, run_id) / "worker.log", "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=cfg.root)
    return proc.pid
