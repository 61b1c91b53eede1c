"""`amigo-burst down`: stop runs and tear down the clusters this tool created (name prefix amigo-).

Every call says what it did, including "nothing": a cluster name that does not exist is an error
(a typo must not read as "torn down"), and `--all` with nothing running says so.
"""

from __future__ import annotations

from amigo_burst.errors import UserError
from amigo_burst.runners.local import stop
from amigo_burst.runners.sky import down as sky_down
from amigo_burst.runners.sky import our_clusters
from amigo_burst.state.ids import CLUSTER_PREFIX, is_ours
from amigo_burst.state.records import ACTIVE, open_records


def down(cfg, run_id: str | None, all_: bool, cluster: str | None):
    """Yields one line per thing done (or one line saying there was nothing to do)."""
    runs = open_records(cfg.root)
    if run_id:
        run = runs.get(run_id)
        said = list(_stop_run(runs, run))
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
    for run in runs.list():
        if run.status in ACTIVE:
            said += list(_stop_run(runs, run))
    for c in our_clusters(CLUSTER_PREFIX) if sky else []:
        said += list(_down_cluster(c["name"]))
    yield from said or ["nothing to stop: no run is running and no amigo- cluster is up"]


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


def _stop_run(runs, run):
    if run.status in ACTIVE and getattr(run, "child_pid", None):
        if stop(run.child_pid):
            yield f"{run.id}: sent stop to the training process (it saves a checkpoint)"
    if run.cluster and (run.status in ACTIVE or run.cluster in {c["name"] for c in our_clusters(CLUSTER_PREFIX)}):
        yield from _down_cluster(run.cluster)
    if run.status in ACTIVE:
        runs.update(run.id, status="STOPPED", reason="stopped by user (amigo-burst down)")
        yield f"{run.id}: STOPPED"


def _down_cluster(name: str):
    sky_down(name)
    yield f"cluster {name}: torn down"
