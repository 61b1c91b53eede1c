"""The cloud fault scenarios' shared parts (tests/test_faults_cloud*.py): a project on the Slurm sandbox
whose job steps slowly, its file:// store, the clusters and Slurm jobs there, a launch followed until it
trains, the trainer's step lines, and a clock that prints each phase's time.

The scenarios are three files so pytest-xdist (make test-e2e: --dist loadfile) runs them side by side:
each is minutes of waiting on SkyPilot, ssh and the cluster, not of this machine's CPU.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from amigo_burst.lifecycle.handoff import AUTOSTOP_IDLE_MIN
from tests.helpers import cli, runs_of, wait_for
from tests.sky_fixtures import cluster_autostop
from tests.test_cloud_e2e import slurm_project


def slow_slurm_project(root: Path, tiny: Path, delay_s: float, store_url: str | None = None,
                       endpoint: str | None = None, stage1: bool = True) -> Path:
    project = slurm_project(root, tiny, store_url, endpoint, stage1=stage1)
    y = project / "sky" / "slurm.yaml"
    text = y.read_text()
    assert "envs:\n" in text
    y.write_text(text.replace("envs:\n", f"envs:\n  AMIGO_FAULT_STEP_DELAY_S: {delay_s}\n", 1))
    return project


def project_store(project: Path):
    """The project's file:// store: the inputs/ and code/ manifests of every launch (rsync transport)."""
    from train.storage import open_store

    return open_store(f"file://{project}/.amigo/store")


def flat(text: str) -> str:
    """Terminal output with rich's line wrapping undone."""
    return " ".join(text.split())


def cluster_names() -> list[str]:
    from amigo_burst.runners.sky import our_clusters

    return [c["name"] for c in our_clusters("amigo-")]


def slurm_jobs_of(cluster: str) -> list[str]:
    """Slurm job ids holding CLUSTER (SkyPilot names the allocation after the cluster; the run id's
    time stamp and 4-hex tail make it unique among other tests' clusters on the same sandbox)."""
    out = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, check=True).stdout
    tail = cluster.rsplit("-", 1)[1]
    stamp = cluster.split("-")[3]  # amigo-s2-slurm-<yyyymmdd>-<hhmmss>-<hex>
    return [ln.split()[0] for ln in out.splitlines()
            if len(ln.split()) == 2 and (cluster in ln.split()[1] or (tail in ln.split()[1] and stamp in ln))]


def launch_until_training(project: Path, env: dict | None = None, args: tuple[str, ...] = ()):
    """`launch --detach` of stage 2 on slurm (+ ARGS); returns (run, its train.log) once training has started
    there."""
    r = cli(project, "launch", "--stage", "2", "--cloud", "slurm", "--detach", *args, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    run = runs_of(project)[-1]
    log = project / ".amigo" / "runs" / run.id / "train.log"
    wait_for(lambda: log.is_file() and "AMIGO_PROGRESS" in log.read_text(), "training on the cluster", 900)
    run = runs_of(project)[-1]
    # what `amigo-burst launch` made SkyPilot record: idle minutes, then tear down (not stop)
    assert cluster_autostop(run.cluster) == (AUTOSTOP_IDLE_MIN, True)
    return run, log


def progress_steps(text: str) -> list[int]:
    """The trainer's own step lines (AMIGO_PROGRESS, training steps, not evaluations), in order."""
    out = []
    for ln in text.splitlines():
        if ln.startswith("AMIGO_PROGRESS "):
            p = json.loads(ln[len("AMIGO_PROGRESS "):])
            if "eval_loss" not in p:
                out.append(p["step"])
    return out


class Clock:
    def __init__(self, name: str):
        self.name, self.t0, self.last = name, time.monotonic(), time.monotonic()

    def mark(self, what: str) -> None:
        now = time.monotonic()
        print(f"\n[{self.name}] {what}: +{now - self.last:.0f}s (total {now - self.t0:.0f}s)", flush=True)
        self.last = now


PULL_FAST = {"AMIGO_PULL_EVERY_S": "3"}  # the worker pulls the machine's checkpoints every 3 s (default 60)


def _fetched(store, name: str, dest: Path) -> Path:
    """The checkpoint as `launch --resume` would fetch it: every file verified against its sha256."""
    store.get_dir(name, dest)
    return dest
