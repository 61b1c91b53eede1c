"""`amigo-burst down`: stop runs and tear down the clusters this tool created (name prefix amigo-).

Every call says what it did, including "nothing": a cluster name that does not exist is an error
(a typo must not read as "torn down"), and `--all` with nothing running says so.

Stopping a run keeps its work (DESIGN.md, "stopping"):
    local run    SIGTERM to the training process: it finishes its step and saves a checkpoint
    cloud run    SIGTERM on the machine (train/capped.sh's pid): the trainer saves the step's
                 checkpoint, the worker (the one following, or one started here) brings it back or
                 it is in the bucket, then tears the cluster down; `down` waits for that ending
    spot run     the managed-jobs API cancels it (sky.jobs.cancel): SkyPilot stops it and removes
                 its cluster; checkpoints are in the bucket as they were written
A machine that cannot be reached is torn down without a stop checkpoint, and `down` says so.
"""

from __future__ import annotations

import time

from amigo_burst.errors import UserError
from amigo_burst.lifecycle.handoff import STOP_REASON
from amigo_burst.lifecycle.reconcile import managed_cluster, reconcile_run, spot_job_ids
from amigo_burst.runners.local import stop
from amigo_burst.runners.sky import down as sky_down
from amigo_burst.runners.sky import our_clusters, signal_job
from amigo_burst.runners.sky_jobs import spot_cancel
from amigo_burst.state.ids import CLUSTER_PREFIX, is_ours
from amigo_burst.state.records import ACTIVE, FINAL, open_records

STOP_WAIT_S = 1800  # the step in flight, its checkpoint, bringing it back, the teardown


def down(cfg, run_id: str | None, all_: bool, cluster: str | None):
    """Yields one line per thing done (or one line saying there was nothing to do)."""
    runs = open_records(cfg.root)
    if run_id:
        run = runs.get(run_id)
        said = list(_stop_run(cfg, runs, run))
        yield from said or [f"{run.id} is {run.status}: nothing to stop"]
        return
    sky = uses_sky(cfg, runs)  # an all-local project never starts SkyPilot's API server (it stays running)
    if cluster:
        if not is_ours(cluster):
            raise UserError(f"cluster {cluster} was not started by amigo-burst (no {CLUSTER_PREFIX} prefix): "
                            "use `sky down`")
        if not sky:
            raise UserError(f"cluster {cluster} does not exist: this project has no cloud target and never "
                            "started a cluster (`amigo-burst status` lists its runs)")
        if cluster not in {c["name"] for c in our_clusters(CLUSTER_PREFIX)}:
            raise UserError(f"cluster {cluster} does not exist: nothing to tear down (`amigo-burst status` "
                            "warns about every amigo- cluster still up)")
        yield from _down_cluster(cluster)
        return
    said = []
    every = runs.list()
    spot = spot_job_ids(every)
    for run in every:
        if run.status in ACTIVE:
            for line in _stop_run(cfg, runs, run):
                said.append(line)
                yield line
    for c in our_clusters(CLUSTER_PREFIX) if sky else []:
        if not managed_cluster(c["name"], spot):  # a spot job's cluster went with its cancel
            for line in _down_cluster(c["name"]):
                said.append(line)
                yield line
    if not said:
        yield "nothing to stop: no run is running and no amigo- cluster is up"


def uses_sky(cfg, runs) -> bool:
    """Does this project reach SkyPilot at all: a cloud target in amigo.toml, or a run that had a cluster?"""
    from amigo_burst.lifecycle.handoff import launched_clusters
    from amigo_burst.targets import get_target

    names = {cfg.targets.local, cfg.targets.cloud} | {s.target for s in cfg.stages.values() if s.target}
    for name in names:
        try:
            if not get_target(name, cfg.root).is_local:
                return True
        except UserError:
            return True  # a target it cannot read: do not assume there is no cluster
    return any(r.cluster for r in runs.list()) or launched_clusters(cfg.root)


def _stop_run(cfg, runs, run):
    if run.status not in ACTIVE:  # ended: only a cluster it left up
        if run.cluster and not (run.artifacts or {}).get("spot") and \
                run.cluster in {c["name"] for c in our_clusters(CLUSTER_PREFIX)}:
            yield from _down_cluster(run.cluster)
        return
    if not run.cluster:  # the laptop
        if getattr(run, "child_pid", None) and stop(run.child_pid):
            yield f"{run.id}: sent stop to the training process (it saves a checkpoint)"
        runs.update(run.id, status="STOPPED", reason=STOP_REASON)
        yield f"{run.id}: STOPPED"
        return
    if run.job_id is None:  # still provisioning: nothing runs there to save
        yield from _down_cluster(run.cluster)
        runs.update(run.id, status="STOPPED", reason=STOP_REASON)
        yield f"{run.id}: STOPPED"
        return
    runs.update(run.id, reason=STOP_REASON)  # the worker's ending keeps this word (worker.final_status)
    if (run.artifacts or {}).get("spot"):
        spot_cancel(run.job_id)
        yield f"{run.id}: managed job {run.job_id} cancelled (SkyPilot stops it and removes its cluster)"
    else:
        try:
            sent = signal_job(run.cluster, run.id)
        except UserError as e:
            yield f"{run.id}: {e}: tearing it down without a stop checkpoint"
            yield from _down_cluster(run.cluster)
            runs.update(run.id, status="STOPPED", reason=STOP_REASON)
            yield f"{run.id}: STOPPED"
            return
        yield (f"{run.id}: sent SIGTERM on {run.cluster}: the trainer saves the step's checkpoint" if sent
               else f"{run.id}: its job on {run.cluster} had already ended")
    yield from _wait_ended(cfg, runs, run)


def _wait_ended(cfg, runs, run, timeout_s: float = STOP_WAIT_S):
    """Until the run's worker (the following one, or one reconcile starts) has recorded its end: the
    checkpoint back or in the bucket, the cluster torn down."""
    deadline = time.monotonic() + timeout_s
    yield f"{run.id}: waiting for its checkpoint and the teardown"
    while time.monotonic() < deadline:
        cur = reconcile_run(cfg, runs, runs.get(run.id))
        if cur.status in FINAL:
            yield f"{cur.id}: {cur.status}" + (f" ({cur.reason})" if cur.reason else "")
            return
        time.sleep(2.0)
    yield f"{run.id}: no ending recorded after {timeout_s / 60:.0f} min: tearing its cluster down now"
    if not (run.artifacts or {}).get("spot"):
        yield from _down_cluster(run.cluster)


def _down_cluster(name: str):
    sky_down(name)
    yield f"cluster {name}: torn down"
