"""Fault injection on a cloud target: real SkyPilot on the loopback Slurm cluster (tests/sky_fixtures.py
`slurm_sky_home`, scripts/slurm-sandbox.sh). The laptop only watches (DESIGN.md):

    scancel of the cluster's Slurm job mid-run -> FAILED, torn down; the checkpoint pulled before it went
        (no bucket: file:// store) -> `launch --resume` on a new cluster continues at its step ->
        `down RUN` mid-training -> the stop-step checkpoint on the laptop, STOPPED, torn down
    a job that hangs before training, its worker SIGKILLed and its record lost -> ended on the machine by
        its cap within cap + 2 min; `status` finds the cluster, `down --cluster` leaves nothing up
    the log stream cut while the worker lives, then the worker SIGKILLed -> the job finishes on the
        cluster with nobody watching; a later `status` collects it: SUCCEEDED, adapter verified, torn down

The project's slurm.yaml runs this venv's python (see tests/test_cloud_e2e.py) and sets
AMIGO_FAULT_STEP_DELAY_S in its envs: a job's environment comes from the task, not from ours. Each
scenario chains on one run where it can (a launch on a new cluster costs about a minute) and prints
its phases' times.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from faults_summary import manifest_lost, store_lost

from amigo_burst.lifecycle.handoff import AUTOSTOP_IDLE_MIN
from tests.helpers import cli, runs_of, wait_for
from tests.sky_fixtures import cluster_autostop, stop_api_server
from tests.test_cloud_e2e import assert_no_leak, check_run, slurm_project

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


def launch_until_training(project: Path, env: dict | None = None):
    """`launch --detach` of stage 2 on slurm; returns (run, its train.log) once training has started there."""
    r = cli(project, "launch", "--stage", "2", "--cloud", "slurm", "--detach", env=env, timeout=300)
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


@pytest.mark.timeout(1800)  # two launches on fresh clusters and their training, on a busy machine
def test_scancel_then_resume_on_a_new_cluster_then_down_keeps_every_checkpoint(slurm_sky_home, tiny_model, tmp_path,
                                                                            faults):
    """No bucket (file:// store). `scancel` of the cluster's Slurm job mid-run: FAILED with the reason, torn
    down, and checkpoint-4, pulled while the worker followed, verified on the laptop. `launch --resume` on a
    new cluster continues at step 5 (the trainer's own step lines). `down RUN` mid-training: the stop-step
    checkpoint comes back to the laptop before the teardown; the run is STOPPED at that step."""
    clock = Clock("scancel-resume-down")
    project = slow_slurm_project(tmp_path / "p", tiny_model, 4.0)
    store = project_store(project)
    run, log = launch_until_training(project, env=PULL_FAST)
    name4 = f"runs/{run.id}/checkpoints/checkpoint-4"
    wait_for(lambda: store.read_manifest(name4), "checkpoint-4 pulled to the laptop", 300)
    clock.mark("launch, training to checkpoint-4, pulled")
    jobs = wait_for(lambda: slurm_jobs_of(run.cluster), f"the Slurm job of {run.cluster}", 60)
    faults.inject("scancel of the cluster's Slurm job mid-run")
    subprocess.run(["scancel", *jobs], check=True)

    end = wait_for(lambda: (x := runs_of(project)[-1]).status in ("FAILED", "STOPPED", "SUCCEEDED") and x,
                   "the worker to record the end", 600)
    clock.mark("scancel -> the end recorded")
    assert end.status == "FAILED" and end.reason, (end.status, end.reason)
    assert "stopped by user" not in end.reason and "\x1b" not in end.reason, end.reason
    assert run.cluster in end.reason or "CANCELLED" in end.reason, end.reason  # names what went away
    assert "checkpoint-4 back on this laptop (sha256-verified)" in log.read_text()
    st = cli(project, "status", timeout=300)
    assert st.returncode == 0 and end.id in st.stdout and "FAILED" in st.stdout, st.stdout + st.stderr
    assert f"down --cluster {run.cluster}" not in flat(st.stdout), st.stdout
    assert run.cluster not in cluster_names(), "the cluster is torn down"
    assert not slurm_jobs_of(run.cluster), "nothing left in the Slurm queue"
    faults.lost(manifest_lost(store.read_manifest(name4), _fetched(store, name4, tmp_path / "c4")))

    # --- launch --resume: a new cluster, from the checkpoint this laptop has ---------------------------
    y = project / "sky" / "slurm.yaml"  # steps 5-8 slower: room for `down` to land before the last one
    y.write_text(y.read_text().replace("AMIGO_FAULT_STEP_DELAY_S: 4.0", "AMIGO_FAULT_STEP_DELAY_S: 8.0"))
    mark = len(log.read_text())
    r = cli(project, "launch", "--stage", "2", "--cloud", "slurm", "--resume", "--detach", env=PULL_FAST, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert f"resuming {run.id} (failed" in flat(r.stdout) and "from checkpoint-4" in flat(r.stdout), r.stdout
    wait_for(lambda: progress_steps(log.read_text()[mark:]), "training again on the new cluster", 900)
    clock.mark("launch --resume on a new cluster, first step")
    resumed = log.read_text()[mark:]
    assert "resuming from outputs/checkpoints/checkpoint-4" in resumed, resumed[-3000:]
    assert progress_steps(resumed)[0] == 5, progress_steps(resumed)  # step 5 of 8: not step 1 again

    # --- down RUN mid-training: the stop-step checkpoint comes home, then the teardown -------------------
    faults.inject("`down RUN` of a cloud run mid-training")
    d = cli(project, "down", run.id, timeout=900)
    clock.mark("down RUN -> STOPPED, torn down")
    assert d.returncode == 0 and "sent SIGTERM on" in d.stdout, d.stdout + d.stderr
    stopped = runs_of(project)[-1]
    assert stopped.status == "STOPPED" and "stopped by user (amigo-burst down) at step" in stopped.reason, stopped
    step = int(stopped.reason.split(" at step ")[1].split()[0])
    assert 5 <= step < 8, stopped.reason
    name = f"runs/{run.id}/checkpoints/checkpoint-{step}"
    assert store.read_manifest(name) is not None, f"checkpoint-{step} not on the laptop"
    faults.lost(manifest_lost(store.read_manifest(name), _fetched(store, name, tmp_path / "cs")))
    assert run.cluster not in cluster_names(), "the cluster is torn down"
    have = [int(n.rsplit("-", 1)[1]) for n in store.list_manifests(f"runs/{run.id}/checkpoints/")]
    assert max(have) == step, have  # the newest on the laptop is the stop step: the next --resume's
    faults.lost(store_lost(store))
    assert_no_leak(project, slurm_sky_home)


def _fetched(store, name: str, dest: Path) -> Path:
    """The checkpoint as `launch --resume` would fetch it: every file verified against its sha256."""
    store.get_dir(name, dest)
    return dest


HANG = ("run: |\n  bash train/capped.sh run bash train/run.sh",
        "run: |\n  bash train/capped.sh run bash -c 'echo \"stage 2: fetching inputs\"; sleep 3600; bash train/run.sh'")
CAP_H = 0.05  # 180 s from the launch: provisioning, setup and the stalled fetch all inside it


@pytest.mark.timeout(1200)
def test_a_job_hanging_before_training_with_nobody_watching_is_ended_by_its_cap(slurm_sky_home, tiny_model,
                                                                                tmp_path, faults):
    """A stalled inputs fetch, the worker SIGKILLed right after provisioning and its record lost: the
    machine ends the job itself at the cap (stage max_hours), within cap + 2 min. Then `status` finds the
    amigo- cluster, records it, offers `down`; `down --cluster` leaves nothing up."""
    from amigo_burst.runners import sky as skyr

    clock = Clock("hang-cap")
    project = slurm_project(tmp_path / "p", tiny_model)
    y = project / "sky" / "slurm.yaml"
    assert HANG[0] in y.read_text()
    y.write_text(y.read_text().replace(*HANG))
    toml = project / "amigo.toml"
    toml.write_text(toml.read_text().replace("[stages.2]\n", f"[stages.2]\nmax_hours = {CAP_H}\n", 1))
    r = cli(project, "launch", "--stage", "2", "--cloud", "slurm", "--detach", timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert f"capped on the machine at 3 min (the {CAP_H:g} h deadline), then autodown" in flat(r.stdout), r.stdout
    run = runs_of(project)[-1]
    deadline = int(json.loads((project / ".amigo" / "runs" / run.id / "launch.json").read_text())["envs"]
                   ["AMIGO_DEADLINE"])
    # provisioned, and the job handed to the cluster (so it hangs there, whatever happens to us)
    job = wait_for(lambda: runs_of(project)[-1].job_id, f"cluster {run.cluster} provisioned, its job submitted", 900)
    clock.mark("launch, provisioned, job submitted")
    faults.inject("SIGKILL of the process that provisioned the cluster, and its record lost")
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

    # nobody watches: the machine ends the hanging job itself, at its cap
    faults.inject("a job hanging before training (a stalled inputs fetch) with no worker and no record")
    ended = wait_for(lambda: skyr.job_status(run.cluster, job) in ("FAILED", "FAILED_SETUP") and time.time(),
                     "the cap to end the job on the machine", deadline - time.time() + 240, poll=5)
    clock.mark(f"the job ended by its cap, {ended - deadline:+.0f}s from the deadline")
    assert ended <= deadline + 120, f"ended {ended - deadline:.0f}s after the cap"
    lines: list[str] = []
    skyr.tail(run.cluster, job, follow=False, on_line=lines.append)
    assert any("error: hard cap:" in ln for ln in lines), lines[-20:]
    assert not any("AMIGO_PROGRESS" in ln for ln in lines), "it never trained"

    d = cli(project, "down", "--cluster", run.cluster, timeout=600)
    assert d.returncode == 0 and "torn down" in d.stdout, d.stdout + d.stderr
    assert run.cluster not in cluster_names()
    final = cli(project, "status", timeout=300)
    assert f"down --cluster {run.cluster}" not in flat(final.stdout), final.stdout
    faults.lost(store_lost(project_store(project)))
    clock.mark("status, down --cluster")


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
    project = slow_slurm_project(tmp_path / "p", tiny_model, 6.0, f"s3://{bucket}/runs", moto_server)
    with (project / ".env").open("a") as f:
        f.write("AWS_ACCESS_KEY_ID=testing\nAWS_SECRET_ACCESS_KEY=testing\n")
    run, log = launch_until_training(project)
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
