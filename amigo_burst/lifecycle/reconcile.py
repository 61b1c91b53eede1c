"""Making run records tell the truth after something died.

A worker is the only writer of a run's final status. When it is gone (laptop rebooted, process
killed) and the record still says PENDING/RUNNING, the next `status` or `logs` looks at what is
really there and decides (`decide`, a table a test reads):

    worker alive                          -> nothing to do
    PENDING, worker gone                  -> FAILED: the controller stopped before the run started
    training process alive (local)        -> nothing to do: it finishes, then the record says so
    cloud job to follow                   -> reattach: a new worker follows it to the end (spot: the
                                             managed-jobs API; else its cluster, unless SkyPilot says
                                             it is gone: "cannot tell now" is a reattach)
    otherwise                             -> FAILED: worker died; `launch --resume` continues
"""

from __future__ import annotations

import shutil
import time
from enum import Enum

from amigo_burst.errors import UserError, one_line
from amigo_burst.lifecycle.cloud_job import GONE, job_state
from amigo_burst.lifecycle.handoff import launched_clusters, spawn_worker
from amigo_burst.runners.sky import our_clusters
from amigo_burst.runners.sky_jobs import spot_job
from amigo_burst.state import ids, paths
from amigo_burst.state.ledger import Ledger
from amigo_burst.state.records import ACTIVE, LOW_SPACE_BYTES, Run, RunStore, pid_alive

NOT_STARTED = "controller stopped before the run started"
WORKER_DIED = "worker process died; `launch --resume` continues from the last checkpoint"


class Decision(Enum):
    KEEP = "keep"  # the record is right as it is
    FAIL_NOT_STARTED = "fail-not-started"
    FAIL_WORKER_DIED = "fail-worker-died"
    REATTACH = "reattach"


def decide(run: Run, *, worker_alive: bool, child_alive: bool, job_alive: bool) -> Decision:
    """What to do with one run record, given what is alive (pure: the module docstring's table)."""
    if run.status not in ACTIVE or worker_alive:
        return Decision.KEEP
    if run.status == "PENDING":
        return Decision.FAIL_NOT_STARTED
    if child_alive:
        return Decision.KEEP
    if run.cluster and run.job_id is not None and job_alive:
        return Decision.REATTACH
    return Decision.FAIL_WORKER_DIED


def reconcile_run(cfg, runs: RunStore, run: Run) -> Run:
    if run.status not in ACTIVE:
        return run
    worker = pid_alive(run.pid)
    child = not worker and pid_alive(run.child_pid)
    job = not worker and not child and bool(run.cluster) and run.job_id is not None and _job_alive(run)
    decision = decide(run, worker_alive=worker, child_alive=child, job_alive=job)
    if decision is Decision.KEEP:
        return run
    if decision is Decision.REATTACH:  # the cloud job outlived our worker (laptop slept, reboot)
        spawn_worker(cfg, run.id, reattach_from_pid=run.pid)
        return _wait_taken_over(runs, run)
    reason = NOT_STARTED if decision is Decision.FAIL_NOT_STARTED else WORKER_DIED
    cause = death_cause(cfg.root, run.id)
    if cause:
        reason = reason.replace(";", f" ({cause});", 1) if ";" in reason else f"{reason} ({cause})"
    Ledger(runs).close(run.id)
    return runs.update(run.id, status="FAILED", reason=reason)


def death_cause(root, run_id: str) -> str:
    """Why a worker died, from what it left: a full disk under .amigo/ (it could write nothing, not
    even the record), else the last error line of its own log (worker.log: its stderr)."""
    try:
        free = shutil.disk_usage(paths.state_dir(root)).free
    except OSError:
        free = None
    if free is not None and free < LOW_SPACE_BYTES:
        return f"the disk holding .amigo/ is full: {free / 2**20:.1f} MiB free"
    log = paths.run_dir(root, run_id) / "worker.log"
    try:
        lines = [ln for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if ln.startswith("error:") or "Error" in ln.split(":", 1)[0]]
    return one_line(errors[-1].removeprefix("error: "), 200) if errors else ""


def _job_alive(run: Run) -> bool:
    """Is there a cloud job to follow (running, or ended with nobody watching)? A new worker then follows
    it to the end, brings the outputs back and tears the cluster down. A spot run is asked of the
    managed-jobs API (SkyPilot names its cluster); any other of SkyPilot about its cluster. Only a
    cluster SkyPilot says is gone leaves nothing to reattach to: "cannot tell now" (offline) is a
    reattach, and that worker asks again with backoff."""
    if (run.artifacts or {}).get("spot"):
        try:
            return spot_job(run.job_id) is not None
        except Exception:  # noqa: BLE001 - the jobs controller out of reach: the worker will ask again
            return True
    return job_state(run.cluster, run.job_id) != GONE


def _wait_taken_over(runs: RunStore, run: Run, timeout_s: float = 60.0) -> Run:
    """Until the new worker holds the record (else the next poll would start another one)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        cur = runs.get(run.id)
        if cur.pid != run.pid or cur.status not in ACTIVE:
            return cur
        time.sleep(0.3)
    return runs.get(run.id)


def reconcile_all(cfg, runs: RunStore) -> tuple[list[Run], list[str]]:
    """All runs, reconciled, and the names of our clusters that are up but belong to no active run."""
    rows = [reconcile_run(cfg, runs, r) for r in runs.list()]
    if not any(r.cluster for r in rows) and not launched_clusters(cfg.root):
        return rows, []  # never touched SkyPilot: don't pay its 2.6 s import (our_clusters imports sky)
    active = {r.cluster for r in rows if r.status in ACTIVE and r.cluster}
    spot = spot_job_ids(rows)
    orphans = [c["name"] for c in our_clusters(ids.CLUSTER_PREFIX)
               if c["name"] not in active and not managed_cluster(c["name"], spot)]
    known = {r.cluster for r in rows if r.cluster}
    new = [record_orphan(runs, name) for name in orphans if name not in known]
    return rows + [r for r in new if r is not None], orphans


def spot_job_ids(runs: list[Run]) -> set[int]:
    return {r.job_id for r in runs if r.status in ACTIVE and (r.artifacts or {}).get("spot") and r.job_id is not None}


def managed_cluster(name: str, spot_jobs: set[int]) -> bool:
    """A cluster SkyPilot's jobs controller named for one of our running spot jobs (<task name>-<job id>,
    e.g. amigo-vast-41): not an orphan, and not ours to tear down (`down RUN` cancels the job)."""
    tail = name.rsplit("-", 1)[-1]
    return tail.isdigit() and int(tail) in spot_jobs and ids.parse_run_id(ids.run_id_of_cluster(name)) is None


def record_orphan(runs: RunStore, cluster: str) -> Run | None:
    """A cluster of ours (amigo-<run id>) that no run record names: the controller died between
    provisioning and recording. Record it (FAILED, with the fix), so `status` and `report` show it."""
    run_id = ids.run_id_of_cluster(cluster)
    parsed = ids.parse_run_id(run_id)
    run = Run(id=run_id, stage=parsed[0] if parsed else 0, target=parsed[1] if parsed else "unknown",
              cluster=cluster, status="FAILED", pid=0,
              reason=f"cluster {cluster} found up with no record (the controller stopped between provisioning "
                     f"and recording): `amigo-burst down --cluster {cluster}`")
    try:
        return runs.create(run)
    except UserError:  # a run id taken meanwhile (another status): it is recorded
        return None
