"""A cloud job's log stream cut, then its worker killed: the job finishes unwatched and a later `status`
collects it (real SkyPilot on the loopback Slurm cluster, the S3 transport on moto's server;
tests/test_faults_cloud.py has the other scenarios' context)."""

from __future__ import annotations

import os
import signal
import uuid

import pytest
from faults_summary import manifest_lost, store_lost

from tests.cloud_faults import Clock, cluster_names, launch_until_training, progress_steps, slow_slurm_project
from tests.helpers import cli, runs_of, wait_for
from tests.sky_fixtures import stop_api_server
from tests.test_cloud_e2e import FROM_BASE, check_run

pytestmark = [pytest.mark.faults, pytest.mark.e2e]


@pytest.mark.timeout(1200)
def test_a_cut_log_stream_then_a_killed_worker_and_the_job_still_finishes(slurm_sky_home, tiny_model, moto_server,
                                                                          tmp_path, faults):
    """The log stream cut while the worker lives (SkyPilot's API server on this laptop stopped): the worker
    follows the job again, nothing is torn down. Then the worker SIGKILLed (the laptop asleep): the job
    finishes on the cluster with nobody watching, and a later `status` starts a worker that records it
    SUCCEEDED, brings the adapter back verified and tears the cluster down.

    On the S3 transport (moto's server), so what came back is compared with the outputs manifest
    the job wrote to the store."""
    import boto3

    from amigo_burst.runners import sky as skyr
    from amigo_burst.state.records import pid_alive
    from train.storage import open_store

    clock = Clock("stream-cut-worker-killed")
    bucket = f"amigo-faults-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket=bucket)
    project = slow_slurm_project(tmp_path / "p", tiny_model, 6.0, f"s3://{bucket}/runs", moto_server, stage1=False)
    with (project / ".env").open("a") as f:
        f.write("AWS_ACCESS_KEY_ID=testing\nAWS_SECRET_ACCESS_KEY=testing\n")
    run, log = launch_until_training(project, args=FROM_BASE)
    assert run.job_id is not None
    clock.mark("launch, training")

    faults.inject("the log stream cut while the worker lives (the local SkyPilot API server stopped)")
    cut = len(log.read_text())
    stop_api_server(int(os.environ["SKYPILOT_API_SERVER_LOCAL_PORT"]))
    wait_for(lambda: progress_steps(log.read_text()[cut:]), "the worker to follow the job again", 300)
    clock.mark("stream cut -> followed again")
    print(f"\n[stream-cut] the worker said: {[ln for ln in log.read_text()[cut:].splitlines() if 'log stream' in ln]}")
    assert pid_alive(run.pid) and runs_of(project)[-1].status == "RUNNING" and run.cluster in cluster_names()
    assert "torn down" not in log.read_text()

    faults.inject("SIGKILL of the worker following a cloud job")
    os.kill(run.pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(run.pid), "the worker to die", 30)
    wait_for(lambda: skyr.job_status(run.cluster, run.job_id) == "SUCCEEDED", "the job to finish, unwatched", 900,
             poll=5)
    clock.mark("worker killed -> the job finished on the cluster")
    assert runs_of(project)[-1].status == "RUNNING", "nobody recorded its end yet"

    st = cli(project, "status", timeout=300)
    assert st.returncode == 0, st.stdout + st.stderr
    end = wait_for(lambda: (x := runs_of(project)[-1]).status in ("SUCCEEDED", "FAILED", "STOPPED") and x,
                   "the worker `status` started to record the end", 600)
    clock.mark("status -> collected, torn down")
    assert end.status == "SUCCEEDED", (end.status, end.reason)
    assert "reattached to job" in log.read_text()
    assert (project / ".amigo" / "runs" / run.id / "adapter" / "adapter_model.safetensors").is_file()
    assert run.cluster not in cluster_names(), "cluster torn down"
    again = cli(project, "status", timeout=300)
    assert end.id in again.stdout and "SUCCEEDED" in again.stdout, again.stdout
    st = open_store(f"s3://{bucket}/runs", moto_server)
    outputs = st.read_manifest(f"runs/{run.id}/outputs")
    assert "adapter/adapter_model.safetensors" in outputs["files"]
    faults.lost(manifest_lost(outputs, project / ".amigo" / "runs" / run.id, skip=("train.log",)) + store_lost(st))
    check_run(project, slurm_sky_home)  # and all an S3-transport launch promises (test_cloud_e2e.py)
