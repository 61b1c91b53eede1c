"""`amigo-burst launch --cloud slurm` end to end through real SkyPilot on a loopback Slurm cluster.

SkyPilot provisions, syncs the train/ bundle, runs stage-2 training of the tiny
model, streams the log back; the adapter comes back (pulled from the machine's own
store without a bucket; through moto's S3 server on 127.0.0.1 in
test_faults_cloud_stream.py, which checks the same with check_run), loads,
the cluster is torn down and the record says SUCCEEDED. Nothing is faked: the one stand-in is the cluster itself (this
machine over ssh on 127.0.0.1:2222, see scripts/slurm-sandbox.sh).

The node is this machine, so the task reuses this venv's python (AMIGO_PYTHON in
the project's copy of sky/slurm.yaml) instead of installing torch into the
system python — the only difference from the shipped YAML.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.helpers import cli, make_project, runs_of

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e
FAKE_TOKEN = "hf_E2E_FAKE_TOKEN_never_leak_4242"


def slurm_project(root: Path, tiny: Path, store_url: str | None = None, endpoint: str | None = None,
                  stage1: bool = True) -> Path:
    """The demo project on the sandbox's slurm target. STAGE1: train stage 1 locally first, so stage 2
    continues from its adapter (~20 CPU-s); a test about a failing, hanging or cut-off job launches
    stage 2 `--from-base` instead (FROM_BASE) and skips it."""
    project = make_project(root, tiny, store_url, endpoint)
    shutil.copytree(REPO / "sky", project / "sky")
    y = project / "sky" / "slurm.yaml"
    y.write_text(y.read_text().replace("AMIGO_PYTHON: python3", f"AMIGO_PYTHON: {sys.executable}"))
    (project / ".env").write_text(f"HF_TOKEN={FAKE_TOKEN}\n")
    if stage1:
        cli(project, "launch", "--stage", "1", "--cloud", "local", check=True)
    return project


FROM_BASE = ("--from-base",)  # stage 2 with no stage-1 run: from the base model (slurm_project(stage1=False))


def assert_no_leak(project: Path, home: Path) -> None:
    for base in (project / ".amigo", home / ".sky", home / "sky_workdir"):
        if not base.exists():
            continue
        for p in base.rglob("*"):
            if p.is_file() and p.stat().st_size < 50_000_000:
                assert FAKE_TOKEN.encode() not in p.read_bytes(), f"secret leaked into {p}"


def check_run(project: Path, home: Path) -> None:
    from amigo_burst.runners.sky import our_clusters

    run = runs_of(project)[-1]
    assert run.stage == 2 and run.status == "SUCCEEDED", (run.status, run.reason)
    d = project / ".amigo" / "runs" / run.id
    assert (d / "adapter" / "adapter_config.json").is_file()
    assert json.loads((d / "metrics.json").read_text())["stage"] == 2
    assert "AMIGO_PROGRESS" in (d / "train.log").read_text(), "the job's log streamed back"
    # the base model is a folder on this laptop (the tiny model): it travelled with the inputs, and the
    # job trained from that copy, not from a laptop path (issue 15, item 13)
    plan = json.loads((d / "launch.json").read_text())
    assert plan["envs"]["AMIGO_BASE_MODEL"] == "inputs/base-model", plan["envs"]["AMIGO_BASE_MODEL"]
    assert run.cluster not in [c["name"] for c in our_clusters("amigo-")], "cluster torn down"
    assert_no_leak(project, home)


def test_launch_on_slurm_rsync_transport(slurm_sky_home, tiny_model, tmp_path):
    project = slurm_project(tmp_path / "p", tiny_model)
    r = cli(project, "launch", "--stage", "2", "--cloud", "slurm", timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    check_run(project, slurm_sky_home)


def test_failing_job_is_failed_with_reason_and_torn_down(slurm_sky_home, tiny_model, tmp_path):
    """A bad dataset row reaches the cluster (appended there by the test's YAML): the entrypoint rejects it."""
    from amigo_burst.runners.sky import our_clusters

    project = slurm_project(tmp_path / "p", tiny_model, stage1=False)
    y = project / "sky" / "slurm.yaml"
    y.write_text(y.read_text().replace(
        "run: |\n  bash train/capped.sh run bash train/run.sh",
        "run: |\n  echo '{\"context\": \"x\", \"request\": \"\", \"code\": \"y\"}' >> inputs/data.jsonl\n"
        "  bash train/capped.sh run bash train/run.sh"))
    r = cli(project, "launch", "--stage", "2", "--cloud", "slurm", *FROM_BASE, timeout=900)
    run = runs_of(project)[-1]
    assert r.returncode == 1 and run.status == "FAILED", (r.stdout[-3000:], run)
    assert "request" in (run.reason or ""), run.reason
    assert run.cluster not in [c["name"] for c in our_clusters("amigo-")]


def test_doctor_lists_clouds_with_fixes(slurm_sky_home, tmp_path):
    """doctor: slurm usable (the sandbox), runpod/vast/lambda not (no credentials here), each with its fix."""
    project = make_project(tmp_path / "p", Path("/nonexistent-model"))
    r = cli(project, "doctor", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr  # the demo project uses no paid cloud: their ✗ are notes
    assert "✓ SkyPilot can use slurm" in r.stdout
    for cloud, fix in (("vast", "vast_api_key"), ("lambda", "lambda_keys"), ("runpod", "runpod")):
        line = next(ln for ln in r.stdout.splitlines() if f"SkyPilot cannot use {cloud}" in ln)
        assert fix in line, line
    assert "✓ python" in r.stdout and "✓ store" in r.stdout
