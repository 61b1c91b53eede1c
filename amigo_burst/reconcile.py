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
    runs.update(run.id, status="FAILED", reason="worker process died; `launch --resume` continues from the last checkpoint")
    return runs.get(run.id)


def reconcile_all(cfg, runs):
    """All runs, reconciled, and the names of our clusters that are up but belong to no active run."""
    rows = [reconcile_run(cfg, runs, r) for r in runs.list()]
    if not any(r.cluster for r in rows):
        return rows, []  # never touched SkyPilot: don't pay its 2.6 s import
    from amigo_burst.runners.sky import our_clusters

    active = {r.cluster for r in rows if r.status in ("PENDING", "RUNNING") and r.cluster}
    orphans = [c["name"] for c in our_clusters("amigo-") if c["name"] not in active]
    return rows, orphans
