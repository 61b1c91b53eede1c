"""Making run records tell the truth after something died.

A worker is the only writer of a run's final status. When it is gone (laptop
rebooted, process killed) and the record still says PENDING/RUNNING, the next
`status` or `logs` looks at what is really there and either restarts a worker
that reattaches (cloud job still running), or records the failure.
"""

from __future__ import annotations


def reconcile_run(cfg, runs, run):
    from amigo_burst.runs import pid_alive

    if run.status not in ("PENDING", "RUNNING") or pid_alive(run.pid):
        return run
    if run.status == "PENDING":
        runs.update(run.id, status="FAILED", reason="controller stopped before the run started")
        return runs.get(run.id)
    if pid_alive(getattr(run, "child_pid", None)):
        return run  # the worker died but training goes on (local): it finishes, then we see it
    if run.cluster and run.job_id is not None and _job_alive(run):
        _spawn_reattach(cfg, run)  # the cloud job outlived our worker (laptop slept, reboot): follow it again
        return _wait_taken_over(runs, run)
    runs.update(run.id, status="FAILED", reason="worker process died; `launch --resume` continues from the last checkpoint")
    return runs.get(run.id)


def _job_alive(run) -> bool:
    """Is the run's SkyPilot job still known on its cluster (running, or ended with nobody watching)?

    Either way a new worker follows it to the end, brings the outputs back and tears the cluster
    down; only a cluster that is gone leaves nothing to reattach to."""
    from amigo_burst.runners.sky import job_status

    try:
        return job_status(run.cluster, run.job_id) != "UNKNOWN"
    except Exception:  # noqa: BLE001 - no cluster, no API server answer: nothing to reattach to
        return False


def _spawn_reattach(cfg, run) -> None:
    import subprocess
    import sys

    from amigo_burst.launch import run_dir

    with open(run_dir(cfg, run.id) / "worker.log", "ab") as log:
        subprocess.Popen([sys.executable, "-m", "amigo_burst.worker", str(cfg.path), run.id, str(run.pid)],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                         start_new_session=True, cwd=cfg.root)


def _wait_taken_over(runs, run, timeout_s: float = 60.0):
    """Until the new worker holds the record (else the next poll would start another one)."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        cur = runs.get(run.id)
        if cur.pid != run.pid or cur.status not in ("PENDING", "RUNNING"):
            return cur
        time.sleep(0.3)
    return runs.get(run.id)


def reconcile_all(cfg, runs):
    """All runs, reconciled, and the names of our clusters that are up but belong to no active run."""
    rows = [reconcile_run(cfg, runs, r) for r in runs.list()]
    if not any(r.cluster for r in rows) and not _launched_clusters(cfg):
        return rows, []  # never touched SkyPilot: don't pay its 2.6 s import
    from amigo_burst.runners.sky import our_clusters

    active = {r.cluster for r in rows if r.status in ("PENDING", "RUNNING") and r.cluster}
    orphans = [c["name"] for c in our_clusters("amigo-") if c["name"] not in active]
    known = {r.cluster for r in rows if r.cluster}
    new = [record_orphan(runs, name) for name in orphans if name not in known]
    return rows + [r for r in new if r is not None], orphans


def _launched_clusters(cfg) -> bool:
    """A launch.json naming a cluster: this project started one, even if its record was lost."""
    import json

    from amigo_burst.launch import state_dir

    for p in (state_dir(cfg) / "runs").glob("*/launch.json"):
        try:
            if json.loads(p.read_text()).get("cluster"):
                return True
        except (OSError, ValueError):
            continue
    return False


def record_orphan(runs, cluster: str):
    """A cluster of ours (amigo-<run id>) that no run record names: the controller died between
    provisioning and recording. Record it (FAILED, with the fix), so `status` and `report` show it."""
    import re

    from amigo_burst.errors import UserError
    from amigo_burst.runs import Run

    run_id = cluster[len("amigo-"):]
    m = re.match(r"s([1-5])-([a-z0-9]+)-", run_id)
    run = Run(id=run_id, stage=int(m.group(1)) if m else 0, target=m.group(2) if m else "unknown",
              cluster=cluster, status="FAILED", pid=0,
              reason=f"cluster {cluster} found up with no record (the controller stopped between provisioning "
                     f"and recording): `amigo-burst down --cluster {cluster}`")
    try:
        return runs.create(run)
    except UserError:  # a run id taken meanwhile (another status): it is recorded
        return None
