"""`amigo-burst probe` and `launch --probe` on the local target: real training of the tiny model for a few
steps, measured, stored as calibration, the stage re-estimated (the Slurm version: test_probe_e2e.py)."""

from __future__ import annotations

import json

import pytest

from amigo_burst import planner
from amigo_burst.config import load_config
from amigo_burst.lifecycle.probe import JSON_KEYS, steady_tokens_per_s
from tests.helpers import cli, make_project, runs_of

pytestmark = pytest.mark.slow


def test_steady_speed_is_tokens_per_step_over_the_median_step():
    m = {"steps_this_run": 4, "tokens_seen": 2048, "median_step_s": 0.5, "tokens_per_s": 700.0}
    assert steady_tokens_per_s(m) == 1024.0  # 512 tokens a step, half a second each (warm-up left out)
    assert steady_tokens_per_s({"tokens_per_s": 700.0}) == 700.0


def test_probe_measures_calibrates_and_reestimates(tiny_model, tmp_path):
    project = make_project(tmp_path / "p", tiny_model)
    r = cli(project, "probe", "--stage", "1", "--cloud", "local", "--steps", "3", "--json", timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    d = json.loads(r.stdout.strip().splitlines()[-1])
    assert tuple(d) == JSON_KEYS
    assert d["target"] == "local-rtx4050" and d["gpu"] == "cpu" and d["gpu_count"] == 1 and d["method"] == "lora"
    assert d["measured_tokens_per_s"] > 0 and d["est_tokens_per_s"] > 0 and d["measured_peak_vram_gib"] is None
    # the record is a finished probe: it calibrates, and it is never the stage's run
    (run,) = runs_of(project)
    assert run.status == "SUCCEEDED" and run.artifacts.get("probe") is True
    assert run.metrics["steps_this_run"] == 3 and run.tokens_per_s == pytest.approx(d["measured_tokens_per_s"], rel=0.01)
    from tests.helpers import records

    assert records(project).latest(1) is None
    cfg = load_config(project / "amigo.toml")
    cell = planner.estimate_for_target(cfg, 1, "local-rtx4050", run.estimate["tokens"])
    assert cell.estimate.calibration == "calibrated from 1 run"
    assert cell.estimate.tokens_per_s == pytest.approx(d["measured_tokens_per_s"], rel=0.01)
    # projected: the stage's tokens at the measured speed, plus the local start-up, at electricity's price
    e = cell.estimate
    assert d["projected_hours"] == pytest.approx(e.tokens / d["measured_tokens_per_s"] / 3600 + e.setup_hours,
                                                 rel=0.02)
    assert d["projected_hours"] == pytest.approx(cell.hours, rel=0.01)
    assert d["projected_usd"] == pytest.approx(cell.hours * cell.usd_per_hour, rel=0.02)


@pytest.mark.badinput
def test_launch_probe_refuses_without_a_terminal_when_over_budget(tiny_model, tmp_path):
    project = make_project(tmp_path / "p", tiny_model)
    r = cli(project, "launch", "--stage", "1", "--cloud", "local", "--probe", "--max-usd", "0.0000001", timeout=600)
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode == 2 and len(err) == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert "re-estimated at" in err[0] and "over the $1e-07 budget: not launched" in err[0]
    runs = runs_of(project)
    assert [x.artifacts.get("probe") for x in runs] == [True]  # the probe ran; the stage did not


def test_launch_probe_goes_on_within_the_budget(tiny_model, tmp_path):
    project = make_project(tmp_path / "p", tiny_model)
    r = cli(project, "launch", "--stage", "1", "--cloud", "local", "--probe", timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "probe:" in r.stdout and "re-estimated at" in r.stdout
    probe_run, real = runs_of(project)
    assert probe_run.artifacts.get("probe") and not real.artifacts.get("probe") and real.status == "SUCCEEDED"
    assert real.estimate["calibration"] == "calibrated from 1 run"  # the run's own estimate used the probe
