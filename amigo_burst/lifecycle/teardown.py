"""`amigo-burst down`: stop runs and tear down the clusters this tool created (name prefix amigo-)."""

from __future__ import annotations

from amigo_burst.errors import UserError
from amigo_burst.runners.local import stop
from amigo_burst.runners.sky import down as sky_down
from amigo_burst.runners.sky import our_clusters
from amigo_burst.state.ids import CLUSTER_PREFIX, is_ours
from amigo_burst.state.records import open_records


def down(cfg, run_id: str | None, all_: bool, cluster: str | None):
    """Yields one line per thing done."""
    runs = open_records(cfg.root)
    if run_id:
        run = runs.get(run_id)
        yield from _stop_run(runs, run)
        return
    if cluster:
        if not is_ours(cluster):
            raise UserError(f"cluster {cluster} was not started by amigo-burst (no {CLUSTER_PREFIX} prefix): "
                            "use `sky down`")
        yield from _down_cluster(cluster)
        return
    for run in runs.list():
        if run.status in ("PENDING", "RUNNING"):
            yield from _stop_run(runs, run)
    for c in our_clusters(CLUSTER_PREFIX):
        yield from _down_cluster(c["name"])


def _stop_run(runs, run):
    if run.status in ("PENDING", "RUNNING") and getattr(run, "child_pid", None):
        if stop(run.child_pid):
            yield f"{run.id}: sent stop to the training process (it saves a checkpoint)"
    if run.cluster:
        yield from _down_cluster(run.cluster)
    if run.status in ("PENDING", "RUNNING"):
        runs.update(run.id, status="STOPPED", reason="stopped by user (amigo-burst down)")


def _down_cluster(name: str):
    sky_down(name)
    yield f"cluster {name}: torn down"
