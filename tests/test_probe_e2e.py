"""`amigo-burst probe` on the loopback Slurm cluster through real SkyPilot: K steps of stage 2 of the tiny
model on the cluster, measured, recorded as a probe, the stage re-estimated, the cluster torn down.

The node is this machine, so the task reuses this venv's python (AMIGO_PYTHON in the project's copy of
sky/slurm.yaml), as in test_cloud_e2e.py. Run under the shared lock (HELPERS.md):
    flock /tmp/amigo-e2e.lock env PYTHONPATH=$PWD .venv/bin/python -m pytest -p no:cacheprovider -m e2e tests/test_probe_e2e.py
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from amigo_burst.lifecycle.probe import JSON_KEYS
from tests.helpers import cli, make_project, records, runs_of

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]


def test_probe_on_slurm(slurm_sky_home, tiny_model, tmp_path):
    from amigo_burst.runners.sky import our_clusters

    project = make_project(tmp_path / "p", tiny_model)
    shutil.copytree(REPO / "sky", project / "sky")
    y = project / "sky" / "slurm.yaml"
    y.write_text(y.read_text().replace("AMIGO_PYTHON: python3", f"AMIGO_PYTHON: {sys.executable}"))
    r = cli(project, "probe", "--stage", "2", "--cloud", "slurm", "--steps", "3", "--json", timeout=1200)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    d = json.loads(r.stdout.strip().splitlines()[-1])
    assert tuple(d) == JSON_KEYS
    # a CPU-only partition: estimated and calibrated as the "cpu" row; no price (your own cluster)
    assert d["target"] == "slurm" and d["gpu"] == "cpu" and d["measured_tokens_per_s"] > 0
    assert d["est_tokens_per_s"] > 0 and d["projected_hours"] > 0 and d["projected_usd"] is None
    (run,) = runs_of(project)
    assert run.status == "SUCCEEDED" and run.artifacts.get("probe") and run.metrics["steps_this_run"] == 3
    assert run.estimate["gpu"] == "cpu" and run.tokens_per_s == pytest.approx(d["measured_tokens_per_s"], rel=0.01)
    assert records(project).latest(2) is None  # a probe is never the stage's run
    assert run.cluster not in [c["name"] for c in our_clusters("amigo-")], "the probe's cluster is torn down"
