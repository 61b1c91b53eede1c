"""Fault injection on a cloud target: real SkyPilot on the loopback Slurm cluster (tests/sky_fixtures.py
`slurm_sky_home`, scripts/slurm-sandbox.sh). The laptop only watches (DESIGN.md). No bucket:

    scancel of the cluster's Slurm job mid-run -> FAILED, torn down; the checkpoint pulled before it went
        (no bucket: file:// store) -> `launch --resume` on a new cluster continues at its step ->
        `down RUN` mid-training -> the stop-step checkpoint on the laptop, STOPPED, torn down

The other scenarios: test_faults_cloud_hang.py (the cap on the machine), test_faults_cloud_stream.py (a cut
log stream, a killed worker). The project's slurm.yaml runs this venv's python (see tests/test_cloud_e2e.py)
and sets AMIGO_FAULT_STEP_DELAY_S in its envs: a job's environment comes from the task, not from ours. Each
scenario chains on one run where it can (a launch on a new cluster costs about a minute) and prints its
phases' times (tests/cloud_faults.py).
"""

from __future__ import annotations

import subprocess

import pytest
from faults_summary import manifest_lost, store_lost

from tests.cloud_faults import (
    PULL_FAST,
    Clock,
    _fetched,
    cluster_names,
    flat,
    launch_until_training,
    progress_steps,
    project_store,
    slow_slurm_project,
    slurm_jobs_of,
)
from tests.helpers import cli, runs_of, wait_for
from tests.test_cloud_e2e import assert_no_leak

pytestmark = [pytest.mark.faults, pytest.mark.e2e]


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
