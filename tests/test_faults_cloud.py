"""Fault injection on a cloud target (issue 7, items 6 and 8): real SkyPilot on the loopback Slurm
cluster (tests/sky_fixtures.py `slurm_sky_home`, scripts/slurm-sandbox.sh).

    6. the cluster's Slurm job is cancelled (`scancel`) mid-run -> FAILED with the reason, torn down
    8. the process that provisioned dies before recording -> `status` finds the amigo- cluster,
       records it, and offers `down --cluster`; `down` leaves nothing up

The project's slurm.yaml runs this venv's python (see tests/test_cloud_e2e.py) and sets
AMIGO_FAULT_STEP_DELAY_S in its envs: a job's environment comes from the task, not from ours.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
from faults_summary import manifest_lost, store_lost

from amigo_burst.lifecycle.handoff import AUTOSTOP_IDLE_MIN
from tests.helpers import cli, runs_of, wait_for
from tests.sky_fixtures import cluster_autostop
from tests.test_cloud_e2e import assert_no_leak, slurm_project

pytestmark = [pytest.mark.faults, pytest.mark.e2e]


def slow_slurm_project(root: Path, tiny: Path, delay_s: float, store_url: str | None = None,
                       endpoint: str | None = None) -> Path:
    project = slurm_project(root, tiny, store_url, endpoint)
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


def launch_until_training(project: Path):
    """`launch --detach` of stage 2 on slurm; returns (run, its train.log) once training has started there."""
    r = cli(project, "launch", "--stage", "2", "--cloud", "slurm", "--detach", timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    run = runs_of(project)[-1]
    log = project / ".amigo" / "runs" / run.id / "train.log"
    wait_for(lambda: log.is_file() and "AMIGO_PROGRESS" in log.read_text(), "training on the cluster", 900)
    run = runs_of(project)[-1]
    # what `amigo-burst launch` made SkyPilot record: idle minutes, then tear down (not stop)
    assert cluster_autostop(run.cluster) == (AUTOSTOP_IDLE_MIN, True)
    return run, log


def test_scancel_of_the_cluster_job_fails_the_run_and_tears_down(slurm_sky_home, tiny_model, tmp_path, faults):
    """`scancel` of the cluster's Slurm job mid-run: the run is FAILED with the reason, the cluster torn down, `status` shows no leftover cluster."""
    project = slow_slurm_project(tmp_path / "p", tiny_model, 2.0)
    run, log = launch_until_training(project)
    jobs = wait_for(lambda: slurm_jobs_of(run.cluster), f"the Slurm job of {run.cluster}", 60)
    faults.inject("scancel of the cluster's Slurm job mid-run")
    subprocess.run(["scancel", *jobs], check=True)

    end = wait_for(lambda: (x := runs_of(project)[-1]).status in ("FAILED", "STOPPED", "SUCCEEDED") and x,
                   "the worker to record the end", 600)
    assert end.status == "FAILED" and end.reason, (end.status, end.reason)
    assert "stopped by user" not in end.reason and "\x1b" not in end.reason, end.reason
    assert run.cluster in end.reason or "CANCELLED" in end.reason, end.reason  # names what went away
    st = cli(project, "status", timeout=300)
    assert st.returncode == 0 and end.id in st.stdout and "FAILED" in st.stdout, st.stdout + st.stderr
    assert f"down --cluster {run.cluster}" not in flat(st.stdout), st.stdout
    assert run.cluster not in cluster_names(), "the cluster is torn down"
    assert not slurm_jobs_of(run.cluster), "nothing left in the Slurm queue"
    assert (project / ".amigo" / "runs" / run.id / "train.log").is_file(), "the run's log stays"
    faults.lost(store_lost(project_store(project)))  # what the launch stored, whole after the cancel
    assert_no_leak(project, slurm_sky_home)


def test_controller_killed_after_provisioning_status_finds_and_records_cluster(slurm_sky_home, tiny_model, tmp_path,
                                                                              faults):
    """The provisioning process dies before recording: the next `status` finds the amigo- cluster, records it, offers `down`; `down --cluster` leaves nothing up."""
    project = slow_slurm_project(tmp_path / "p", tiny_model, 2.0)
    r = cli(project, "launch", "--stage", "2", "--cloud", "slurm", "--detach", timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    run = runs_of(project)[-1]
    wait_for(lambda: run.cluster in cluster_names(), f"cluster {run.cluster} to be provisioned", 900)
    faults.inject("SIGKILL of the process that provisioned the cluster, before it recorded the job")
    worker = runs_of(project)[-1].pid
    os.kill(worker, signal.SIGKILL)
    # ... and the record it would have written never made it (a crash before the commit)
    from amigo_burst.state.records import RunStore

    db = RunStore(project / ".amigo" / "state.db")
    import sqlite3

    with sqlite3.connect(db.path) as c:
        c.execute("DELETE FROM runs WHERE id = ?", (run.id,))
    assert run.id not in [x.id for x in db.list()]

    st = cli(project, "status", timeout=300)
    assert st.returncode == 0, st.stdout + st.stderr
    assert f"amigo-burst down --cluster {run.cluster}" in flat(st.stdout), st.stdout
    found = [x for x in db.list() if x.cluster == run.cluster]
    assert len(found) == 1 and found[0].status == "FAILED" and "no record" in found[0].reason, found
    again = cli(project, "status", timeout=300)  # idempotent: recorded once
    assert again.returncode == 0 and len([x for x in db.list() if x.cluster == run.cluster]) == 1

    d = cli(project, "down", "--cluster", run.cluster, timeout=600)
    assert d.returncode == 0 and "torn down" in d.stdout, d.stdout + d.stderr
    assert run.cluster not in cluster_names()
    final = cli(project, "status", timeout=300)
    assert f"down --cluster {run.cluster}" not in flat(final.stdout), final.stdout
    faults.lost(store_lost(project_store(project)))


def test_worker_killed_mid_cloud_run_logs_f_reattaches(slurm_sky_home, tiny_model, moto_server, tmp_path, faults):
    """The worker that follows a cloud job dies (laptop slept): `logs -f` starts a new one that reattaches to the running job, brings the adapter back, tears down.

    On the S3 transport (moto's server), so what came back is compared with the outputs manifest
    the job wrote to the store."""
    import boto3

    from train.storage import open_store

    bucket = f"amigo-faults-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket=bucket)
    project = slow_slurm_project(tmp_path / "p", tiny_model, 1.0, f"s3://{bucket}/runs", moto_server)
    with (project / ".env").open("a") as f:
        f.write("AWS_ACCESS_KEY_ID=testing\nAWS_SECRET_ACCESS_KEY=testing\n")
    run, log = launch_until_training(project)
    assert run.job_id is not None
    faults.inject("SIGKILL of the worker following a cloud job")
    os.kill(run.pid, signal.SIGKILL)
    wait_for(lambda: subprocess.run(["ps", "-p", str(run.pid), "-o", "stat="], capture_output=True,
                                    text=True).stdout.strip() in ("", "Z"), "the worker to die", 30)

    f = cli(project, "logs", run.id, "-f", timeout=900)
    end = runs_of(project)[-1]
    assert f.returncode == 0 and end.status == "SUCCEEDED", (end.status, end.reason, f.stdout[-2000:])
    assert "reattached to job" in log.read_text()
    assert (project / ".amigo" / "runs" / run.id / "adapter" / "adapter_model.safetensors").is_file()
    assert run.cluster not in cluster_names(), "cluster torn down"
    st = open_store(f"s3://{bucket}/runs", moto_server)
    outputs = st.read_manifest(f"runs/{run.id}/outputs")
    assert "adapter/adapter_model.safetensors" in outputs["files"]
    faults.lost(manifest_lost(outputs, project / ".amigo" / "runs" / run.id, skip=("train.log",)) + store_lost(st))
