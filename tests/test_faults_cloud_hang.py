"""A cloud job that hangs before training with nobody watching: the machine's own cap ends it (real SkyPilot
on the loopback Slurm cluster; tests/test_faults_cloud.py has the other scenarios' context)."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from faults_summary import store_lost

from tests.cloud_faults import Clock, cluster_names, flat, project_store
from tests.helpers import cli, runs_of, wait_for
from tests.test_cloud_e2e import FROM_BASE, slurm_project

pytestmark = [pytest.mark.faults, pytest.mark.e2e]


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
    project = slurm_project(tmp_path / "p", tiny_model, stage1=False)  # it never trains: no adapter needed
    y = project / "sky" / "slurm.yaml"
    assert HANG[0] in y.read_text()
    y.write_text(y.read_text().replace(*HANG))
    toml = project / "amigo.toml"
    toml.write_text(toml.read_text().replace("[stages.2]\n", f"[stages.2]\nmax_hours = {CAP_H}\n", 1))
    r = cli(project, "launch", "--stage", "2", "--cloud", "slurm", "--detach", *FROM_BASE, timeout=300)
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
