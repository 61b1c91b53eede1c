"""SkyPilot for real: runners/sky.py launching sky/slurm.yaml on the loopback Slurm cluster.

The workdir is a stand-in bundle whose train/setup.sh and train/run.sh echo lines and write
outputs/hello.txt (the real training e2e through `amigo-burst launch` reuses slurm_sky_home).
A first launch installs SkyPilot's runtime on the cluster: about a minute.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from amigo_burst.lifecycle.handoff import AUTOSTOP_IDLE_MIN
from amigo_burst.runners import sky as sky_runner
from amigo_burst.state.ids import CLUSTER_PREFIX
from tests.sky_fixtures import cluster_autostop

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

SLURM_YAML = Path(__file__).resolve().parents[1] / "sky" / "slurm.yaml"
FAKE_TOKEN = "hf_FAKE_E2E_TOKEN_0123456789"
RUN_OK = """#!/usr/bin/env bash
set -euo pipefail
echo "amigo-e2e: stage $AMIGO_STAGE run $AMIGO_RUN_ID"
[ -n "${HF_TOKEN:-}" ] && echo "amigo-e2e: HF_TOKEN is set (${#HF_TOKEN} chars)"
mkdir -p "$AMIGO_OUTPUT"
for i in 1 2 3; do echo "amigo-e2e: line $i"; done
echo "hello from $(hostname)" > "$AMIGO_OUTPUT/hello.txt"
"""
RUN_FAIL = """#!/usr/bin/env bash
echo "amigo-e2e: about to fail"
exit 1
"""
SETUP = """#!/usr/bin/env bash
echo "amigo-e2e: setup done"
"""


def _bundle(root: Path, run_sh: str) -> Path:
    """train/ with stand-in setup.sh and run.sh, under the real hard-cap wrapper the YAML calls."""
    (root / "train").mkdir(parents=True)
    (root / "train" / "run.sh").write_text(run_sh)
    (root / "train" / "setup.sh").write_text(SETUP)
    shutil.copy2(SLURM_YAML.parents[1] / "train" / "capped.sh", root / "train" / "capped.sh")
    return root


def _launch(cluster: str, workdir: Path, run_id: str) -> tuple[int, list[str], float]:
    task = sky_runner.build_task(
        SLURM_YAML, {"AMIGO_STAGE": "3", "AMIGO_RUN_ID": run_id}, {"HF_TOKEN": FAKE_TOKEN}, workdir=workdir
    )
    lines: list[str] = []
    t0 = time.monotonic()
    job_id = sky_runner.launch(task, cluster, idle_minutes=AUTOSTOP_IDLE_MIN, keep=False, on_line=lines.append)
    return job_id, lines, time.monotonic() - t0


@pytest.fixture(scope="module")
def hello(slurm_sky_home, tmp_path_factory):
    """One cluster for the module's tests, in any order; `down` at the end must remove it (checked
    here, for this cluster only: other sessions' clusters on the machine are none of our business)."""
    cluster = f"{CLUSTER_PREFIX}e2e-{uuid.uuid4().hex[:6]}"
    workdir = _bundle(tmp_path_factory.mktemp("bundle-ok"), RUN_OK)
    try:
        job_id, lines, secs = _launch(cluster, workdir, "e2e-ok")
        print(f"\n[e2e] first launch on {cluster}: {secs:.1f}s")
        yield {"cluster": cluster, "job_id": job_id, "lines": lines}
    finally:
        t0 = time.monotonic()
        sky_runner.down(cluster)
        print(f"\n[e2e] teardown of {cluster}: {time.monotonic() - t0:.1f}s")
    assert cluster not in {c["name"] for c in sky_runner.our_clusters(CLUSTER_PREFIX)}, f"{cluster} still listed"


def test_launch_streams_the_jobs_log_line_by_line(hello):
    lines = hello["lines"]
    ours = [ln for ln in lines if "amigo-e2e:" in ln]
    assert any("setup done" in ln for ln in ours), "\n".join(lines[-60:])
    assert any("stage 3 run e2e-ok" in ln for ln in ours), "env overrides reach the machine"
    assert any(f"HF_TOKEN is set ({len(FAKE_TOKEN)} chars)" in ln for ln in ours), "the secret reaches it"
    assert [ln.split("amigo-e2e: ")[1] for ln in ours if "amigo-e2e: line" in ln] == [
        "line 1",
        "line 2",
        "line 3",
    ]
    assert f"Running on cluster: {hello['cluster']}" in lines, "provisioning output comes through on_line too"
    assert all("\n" not in ln for ln in lines)
    assert not any(FAKE_TOKEN in ln for ln in lines)
    assert sky_runner.job_status(hello["cluster"], hello["job_id"]) == "SUCCEEDED"


def test_tail_replays_the_finished_log(hello):
    lines: list[str] = []
    code = sky_runner.tail(hello["cluster"], hello["job_id"], follow=False, on_line=lines.append)
    assert code == 0
    assert any("amigo-e2e: line 3" in ln for ln in lines)


def test_rsync_down_brings_the_outputs_back(hello, tmp_path):
    sky_runner.rsync_down(hello["cluster"], "~/sky_workdir/outputs", tmp_path / "outputs")
    assert (tmp_path / "outputs" / "hello.txt").read_text().startswith("hello from ")


def test_a_failing_run_is_reported_failed(hello, tmp_path):
    """Second launch on the same cluster (no provisioning): run.sh exits 1."""
    workdir = _bundle(tmp_path / "bundle-fail", RUN_FAIL)
    job_id, lines, secs = _launch(hello["cluster"], workdir, "e2e-fail")
    print(f"\n[e2e] launch on the existing cluster: {secs:.1f}s")
    assert any("amigo-e2e: about to fail" in ln for ln in lines)
    assert sky_runner.job_status(hello["cluster"], job_id) == "FAILED"
    assert sky_runner.tail(hello["cluster"], job_id, follow=False, on_line=lambda _: None) != 0


def test_our_clusters_lists_it(hello):
    names = {c["name"]: c for c in sky_runner.our_clusters(CLUSTER_PREFIX)}
    assert names[hello["cluster"]]["status"] == "UP" and names[hello["cluster"]]["launched_at"] > 0


def test_skypilot_recorded_autostop_with_teardown(hello):
    """What SkyPilot itself recorded for the cluster (sky.status): our idle minutes, and down (not stop)."""
    assert cluster_autostop(hello["cluster"]) == (AUTOSTOP_IDLE_MIN, True)


def test_down_of_a_cluster_that_is_gone_is_fine(slurm_sky_home):
    sky_runner.down(f"{CLUSTER_PREFIX}e2e-never-{uuid.uuid4().hex[:6]}")


def test_doctor_sees_slurm_and_names_the_fix_for_the_rest(slurm_sky_home):
    clouds = sky_runner.enabled_clouds()
    assert set(clouds) == {"runpod", "vast", "lambda", "slurm"}
    assert clouds["slurm"] == (True, "")
    ok, fix = clouds["vast"]
    assert not ok and "~/.config/vastai/vast_api_key" in fix
    # following the fix is enough for Vast (its check reads the key file, no API call)
    key = slurm_sky_home / ".config" / "vastai" / "vast_api_key"
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_text("fake-vast-key\n")
    try:
        assert sky_runner.enabled_clouds()["vast"] == (True, "")
    finally:
        key.unlink()


def test_the_sandbox_node_runs_no_pyenv_init_in_skypilots_shells(slurm_sky_home):
    """SkyPilot runs each remote command in an interactive login shell; on the sandbox the node is this
    machine, whose ~/.bashrc may run `pyenv init` (~0.1 CPU-s, ~100 processes a shell: ~8% of make
    test-e2e on 2 cores). The sandbox's sshd hands its sessions a no-op `pyenv` (scripts/slurm-sandbox.sh
    SetEnv), so `pyenv init -` says nothing there; a shell outside the sandbox is untouched."""
    cmd = 'type -t pyenv; pyenv init - | wc -c'
    # the login node as `slurm-sandbox.sh up` wrote it for SkyPilot (host, port, key)
    r = subprocess.run(["ssh", "-q", "-o", "BatchMode=yes", "-F", str(slurm_sky_home / ".slurm" / "config"), "amigo",
                        f"bash --login -c -i '{cmd}'"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["function", "0"], r.stdout
